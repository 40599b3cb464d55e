//! The `NodeStore` conformance suite.
//!
//! Every implementation runs it with [`node_store_suite!`](crate::node_store_suite), giving an
//! async expression that makes a fresh, empty store and a guard that keeps its resources alive:
//!
//! ```text
//! kernelci::node_store_suite!(async {
//!     let dir = tempfile::tempdir().expect("valid query");
//!     let store = kernelci::store::SqliteStore::open(dir.path().join("db.sqlite3")).expect("valid query");
//!     (store, dir)
//! });
//! ```
//!
//! The query test compares the store's answers with the in-memory evaluator
//! ([`Filter::matches`]) on the same documents, so every backend answers every query the same.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::ErrorKind;
use crate::models::sample::sample_revision;
use crate::models::{
    Node, NodeKind, NodePatch, ObjectId, ResultValue, State, Timestamp, User, UserGroup,
};
use crate::query::{Filter, Query};
use crate::store::{
    Cursor, EventFilter, EventMode, FindOptions, NewEvent, NodeStore, Sort, StoreError,
    SubscriberState, UpdateRule,
};

/// Runs the suite's tests, one `#[tokio::test]` each, against the store made by `$make`
/// (an async expression returning `(store, guard)`). With `option $make`, the expression
/// returns `Option<(store, guard)>` and a `None` (a test peer missing, already reported) skips.
#[macro_export]
macro_rules! node_store_suite {
    (option $make:expr) => {
        $crate::node_store_suite!(@tests_opt $make;
            node_round_trip, duplicate_id_conflicts, queries_match_reference, plain_queries_match_reference,
            pagination_and_cursors,
            update_rules_and_events, patch_rules, hierarchy_writes_one_event, set_field_and_delete,
            users_and_groups, key_values, event_log, subscribers, concurrent_writers);
    };
    (@tests_opt $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::testsuite::store::$name(&store).await;
            }
        )*
    };
    ($make:expr) => {
        $crate::node_store_suite!(@tests $make;
            node_round_trip, duplicate_id_conflicts, queries_match_reference, plain_queries_match_reference,
            pagination_and_cursors,
            update_rules_and_events, patch_rules, hierarchy_writes_one_event, set_field_and_delete,
            users_and_groups, key_values, event_log, subscribers, concurrent_writers);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::testsuite::store::$name(&store).await;
            }
        )*
    };
}

/// A checkout node as the trigger makes it.
pub fn checkout(tree: &str, branch: &str, commit: &str) -> Node {
    let mut n = Node::new(NodeKind::Checkout, "checkout");
    n.owner = Some("admin".into());
    n.data = json!({"kernel_revision": sample_revision(tree, branch, commit)})
        .as_object()
        .cloned();
    n
}

pub use crate::models::sample::sample_nodes;

/// Query strings the query test runs; each is compared with the reference evaluator.
pub const SAMPLE_QUERIES: &[&[(&str, &str)]] = &[
    &[],
    &[("kind", "test")],
    &[("kind__ne", "test")],
    &[("kind__in", "checkout,kbuild")],
    &[("kind__nin", "checkout,kbuild")],
    &[("state", "done"), ("result", "fail")],
    &[("result", "null")],
    &[("result__ne", "null")],
    &[("parent", "null")],
    &[("parent__ne", "null")],
    &[("group", "g1")],
    &[("group__in", "g1,null")],
    &[("name__re", "node-1[0-3]")],
    &[("name__gt", "node-5")],
    &[("name__lte", "node-12")],
    &[("owner", "alice"), ("state__ne", "done")],
    &[
        ("created__gt", "2024-01-01T12:00:00"),
        ("created__lt", "2024-01-02"),
    ],
    &[("timeout__lte", "2024-01-01T05:00:00Z")],
    &[("retry_counter__gt", "1")],
    &[("retry_counter", "0")],
    &[("retry_counter__in", "1,3")],
    &[("processed_by_kcidb_bridge", "true")],
    &[("data.kernel_revision.tree", "mainline")],
    &[("data.kernel_revision.tree__ne", "mainline")],
    &[("data.kernel_revision.tree__in", "next,stable")],
    &[("data.kernel_revision.tree__nin", "next,stable")],
    &[("data.kernel_revision.tree", "null")],
    &[("data.kernel_revision.tree__re", "^main")],
    &[("data.kernel_revision.tree__int", "42")],
    &[("data.kernel_revision.tree__gt", "m")],
    &[("data.kernel_revision.branch", "main"), ("kind", "kbuild")],
    &[(
        "data.kernel_revision.commit",
        "0000000000000000000000000000000000000005",
    )],
    &[("data.kernel_revision.version.version__gte", "6")],
    &[("data.arch", "null")],
    &[("data.arch__in", "arm64,riscv")],
    &[("data.misc.count__lt", "5")],
    &[("data.misc.flag", "true")],
    &[("data.misc.flag__ne", "true")],
    &[("path", "p1")],
    &[("path__ne", "p1")],
    &[("path__in", "p0,p2")],
    &[("path__re", "^p[12]$")],
    &[("missing.field", "null")],
    &[("missing.field__ne", "x")],
];

fn filter<const N: usize>(pairs: [(&str, &str); N]) -> Filter {
    match Query::parse(pairs) {
        Ok(q) => q.filter,
        Err(e) => panic!("bad test query {pairs:?}: {e}"),
    }
}

async fn must<T>(what: &str, r: Result<T, StoreError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// A node survives insert and get unchanged, with an id assigned and a `created` event.
pub async fn node_round_trip<S: NodeStore>(store: &S) {
    let mut node = checkout("mainline", "master", "abc");
    // Stores may keep milliseconds only (MongoDB's datetimes); compare at that precision.
    node.created = node.created.truncate_to_millis();
    node.updated = node.updated.truncate_to_millis();
    node.timeout = node.timeout.truncate_to_millis();
    let stored = must(
        "insert",
        store.insert_node(node.clone(), EventMode::Publish).await,
    )
    .await;
    let id = stored.id.expect("id assigned");
    let got = must("get", store.get_node(id).await)
        .await
        .expect("node found");
    let mut want = node.clone();
    want.id = Some(id);
    assert_eq!(got, want);
    assert_eq!(got.to_value(), want.to_value(), "JSON identical");
    let text = must("get_node_json", store.get_node_json(id).await)
        .await
        .expect("node found as JSON");
    assert_eq!(
        text,
        must("encode", crate::store::node_json(&got)).await,
        "get_node_json is the node's wire form"
    );
    assert!(
        must(
            "get json missing",
            store.get_node_json(ObjectId::new()).await
        )
        .await
        .is_none()
    );
    assert!(
        must("get missing", store.get_node(ObjectId::new()).await)
            .await
            .is_none()
    );
    let events = must(
        "events",
        store.events_after(0, &EventFilter::default(), 10).await,
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].channel, "node");
    assert_eq!(events[0].owner.as_deref(), Some("admin"));
    assert_eq!(events[0].data["op"], "created");
    assert_eq!(events[0].data["id"], id.to_hex());
    assert_eq!(events[0].data.as_object().map(|m| m.len()), Some(11));
}

/// Inserting an id twice is a conflict, and the batch is not half-written.
pub async fn duplicate_id_conflicts<S: NodeStore>(store: &S) {
    let n = must(
        "insert",
        store
            .insert_node(checkout("a", "b", "c"), EventMode::Silent)
            .await,
    )
    .await;
    let fresh = checkout("a", "b", "d");
    let err = store
        .insert_nodes(vec![fresh, n.clone()], EventMode::Publish)
        .await
        .expect_err("duplicate refused");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        must("count", store.count_nodes(&Filter::all()).await).await,
        1,
        "batch rolled back"
    );
    assert_eq!(
        must("seq", store.last_event_sequence().await).await,
        0,
        "no event from a failed batch"
    );
}

/// Runs each query on the store and asserts it returns what the evaluator returns on `nodes`,
/// in id order, and that `count_nodes` agrees.
async fn compare_with_reference<S: NodeStore>(
    store: &S,
    nodes: &[Node],
    queries: &[&[(&str, &str)]],
) {
    for pairs in queries {
        let q = Query::parse(pairs.iter().copied()).unwrap_or_else(|e| panic!("{pairs:?}: {e}"));
        let mut want: Vec<ObjectId> = nodes
            .iter()
            .filter(|n| q.filter.matches_node(n))
            .filter_map(|n| n.id)
            .collect();
        want.sort();
        let page = must(
            "find",
            store.find_nodes(&q.filter, &FindOptions::default()).await,
        )
        .await;
        let got: Vec<ObjectId> = page.items.iter().filter_map(|n| n.id).collect();
        if got != want {
            let extra: Vec<_> = got.iter().filter(|i| !want.contains(i)).collect();
            let missing: Vec<_> = want.iter().filter(|i| !got.contains(i)).collect();
            panic!(
                "query {pairs:?}: store returned {} extra {extra:?} and missed {missing:?}",
                extra.len()
            );
        }
        let count = must("count", store.count_nodes(&q.filter).await).await;
        assert_eq!(count as usize, want.len(), "count {pairs:?}");
        let texts = must(
            "find_nodes_json",
            store
                .find_nodes_json(&q.filter, &FindOptions::default())
                .await,
        )
        .await;
        let want_texts: Vec<String> = page
            .items
            .iter()
            .map(|n| crate::store::node_json(n).expect("encode"))
            .collect();
        assert_eq!(
            texts, want_texts,
            "find_nodes_json {pairs:?} is find_nodes in wire form"
        );
    }
}

/// Every sample query returns exactly what the reference evaluator returns, in id order,
/// and `count_nodes` agrees.
pub async fn queries_match_reference<S: NodeStore>(store: &S) {
    let nodes = sample_nodes(240);
    must(
        "insert",
        store.insert_nodes(nodes.clone(), EventMode::Silent).await,
    )
    .await;
    let parent = ObjectId::from_parts(1_700_000_000, 0).to_hex();
    let parent_in = format!("{parent},null");
    let some_id = nodes[42].id.map(|i| i.to_hex()).unwrap_or_default();
    let mut all_queries: Vec<Vec<(&str, &str)>> =
        SAMPLE_QUERIES.iter().map(|q| q.to_vec()).collect();
    all_queries.extend([
        vec![("parent", parent.as_str())],
        vec![("parent__in", parent_in.as_str())],
        vec![("id", some_id.as_str())],
        vec![("_id__ne", some_id.as_str()), ("kind", "job")],
        vec![("id__gt", some_id.as_str())],
    ]);
    let queries: Vec<&[(&str, &str)]> = all_queries.iter().map(Vec::as_slice).collect();
    compare_with_reference(store, &nodes, &queries).await;
    // Sanity: the sample queries exercise both empty and non-empty answers.
    let kinds = must(
        "count",
        store.count_nodes(&filter([("kind", "test")])).await,
    )
    .await;
    assert_eq!(kinds, 48);
}

/// The same comparison on data without odd values (no lists or numbers where text is usual),
/// where stores may answer from their indexes alone.
pub async fn plain_queries_match_reference<S: NodeStore>(store: &S) {
    let nodes: Vec<Node> = sample_nodes(200)
        .into_iter()
        .filter(|n| n.kind != "process")
        .collect();
    must(
        "insert",
        store.insert_nodes(nodes.clone(), EventMode::Silent).await,
    )
    .await;
    compare_with_reference(store, &nodes, SAMPLE_QUERIES).await;
}

/// Limit/offset and keyset cursors page through sorted results without gaps or repeats.
pub async fn pagination_and_cursors<S: NodeStore>(store: &S) {
    let nodes = sample_nodes(100);
    must(
        "insert",
        store.insert_nodes(nodes.clone(), EventMode::Silent).await,
    )
    .await;
    let all = must(
        "find",
        store
            .find_nodes(&Filter::all(), &FindOptions::default())
            .await,
    )
    .await
    .items;
    let first = must(
        "page",
        store
            .find_nodes(
                &Filter::all(),
                &FindOptions {
                    limit: Some(10),
                    offset: 20,
                    ..Default::default()
                },
            )
            .await,
    )
    .await;
    assert_eq!(first.items, all[20..30].to_vec());
    for (field, descending) in [
        ("created", true),
        ("name", false),
        ("data.arch", false),
        ("result", true),
    ] {
        let sort = Some(Sort {
            field: field.into(),
            descending,
        });
        let full = must(
            "sorted",
            store
                .find_nodes(
                    &Filter::all(),
                    &FindOptions {
                        sort: sort.clone(),
                        ..Default::default()
                    },
                )
                .await,
        )
        .await
        .items;
        assert_eq!(full.len(), 100);
        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let opts = FindOptions {
                limit: Some(7),
                sort: sort.clone(),
                after: after.clone(),
                ..Default::default()
            };
            let page = must("keyset page", store.find_nodes(&Filter::all(), &opts).await).await;
            seen.extend(page.items.iter().filter_map(|n| n.id));
            match page.next {
                Some(c) => {
                    let token = c.encode();
                    after = Some(Cursor::decode(&token).expect("cursor decodes"));
                }
                None => break,
            }
            assert!(seen.len() <= 100, "cursor loops");
        }
        let want: Vec<ObjectId> = full.iter().filter_map(|n| n.id).collect();
        assert_eq!(seen, want, "keyset over {field}");
    }
    let created: Vec<Timestamp> = must(
        "sorted",
        store
            .find_nodes(
                &Filter::all(),
                &FindOptions {
                    sort: Some(Sort {
                        field: "created".into(),
                        descending: true,
                    }),
                    ..Default::default()
                },
            )
            .await,
    )
    .await
    .items
    .iter()
    .map(|n| n.created)
    .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "descending order");
}

/// PUT rules: transitions checked, identity kept, `updated` event with previous values.
pub async fn update_rules_and_events<S: NodeStore>(store: &S) {
    let mut n = must(
        "insert",
        store
            .insert_node(checkout("t", "b", "c"), EventMode::Silent)
            .await,
    )
    .await;
    let before = n.updated;
    n.state = State::Done;
    n.result = Some(ResultValue::Pass);
    n.owner = Some("mallory".into());
    let upd = must(
        "update",
        store.update_node(n.clone(), UpdateRule::PUT).await,
    )
    .await;
    assert_eq!(upd.previous.state, State::Running);
    assert_eq!(upd.node.owner.as_deref(), Some("admin"), "owner kept");
    assert!(upd.node.updated >= before);
    let ev = upd.event.expect("event");
    assert_eq!(ev.data["op"], "updated");
    assert_eq!(ev.data["previous_state"], "running");
    assert_eq!(ev.data["previous_result"], Value::Null);
    assert_eq!(ev.data["state"], "done");
    let mut back = upd.node.clone();
    back.state = State::Running;
    let err = store
        .update_node(back, UpdateRule::PUT)
        .await
        .expect_err("done -> running refused");
    assert_eq!(
        err.to_string(),
        "Transition not allowed with state: running"
    );
    let stored = must("get", store.get_node(n.id.expect("id")).await)
        .await
        .expect("exists");
    assert_eq!(stored.state, State::Done, "refused update wrote nothing");
    let mut ghost = n.clone();
    ghost.id = Some(ObjectId::new());
    let err = store
        .update_node(ghost, UpdateRule::PUT)
        .await
        .expect_err("missing node");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(must("seq", store.last_event_sequence().await).await, 1);
}

/// PATCH applies only the fields sent, checks the transition, validates, appends an event.
pub async fn patch_rules<S: NodeStore>(store: &S) {
    let n = must(
        "insert",
        store
            .insert_node(checkout("t", "b", "c"), EventMode::Silent)
            .await,
    )
    .await;
    let id = n.id.expect("id");
    let patch: NodePatch = serde_json::from_value(
        json!({"state": "available", "artifacts": {"tarball": "https://x.org/a.tar.gz"}}),
    )
    .expect("patch");
    let upd = must(
        "patch",
        store.patch_node(id, &patch, EventMode::Publish).await,
    )
    .await;
    assert_eq!(upd.node.state, State::Available);
    assert_eq!(upd.node.data, n.data, "data untouched");
    assert_eq!(upd.event.expect("event").data["previous_state"], "running");
    let bad: NodePatch =
        serde_json::from_value(json!({"artifacts": {"log": "not a url"}})).expect("patch");
    let err = store
        .patch_node(id, &bad, EventMode::Publish)
        .await
        .expect_err("bad URL refused");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let back: NodePatch = serde_json::from_value(json!({"state": "running"})).expect("patch");
    assert!(
        store
            .patch_node(id, &back, EventMode::Publish)
            .await
            .is_err()
    );
    let err = store
        .patch_node(ObjectId::new(), &patch, EventMode::Publish)
        .await
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        must("seq", store.last_event_sequence().await).await,
        1,
        "failed patches append nothing"
    );
}

/// A hierarchy is written in one go with exactly one root event.
pub async fn hierarchy_writes_one_event<S: NodeStore>(store: &S) {
    let root = must(
        "insert",
        store
            .insert_node(Node::new(NodeKind::Job, "baseline"), EventMode::Silent)
            .await,
    )
    .await;
    let mut new_root = root.clone();
    new_root.state = State::Done;
    new_root.result = Some(ResultValue::Fail);
    let mut child = Node::new(NodeKind::Test, "login");
    child.id = Some(ObjectId::new());
    child.parent = root.id;
    let mut grandchild = Node::new(NodeKind::Test, "case");
    grandchild.id = Some(ObjectId::new());
    grandchild.parent = child.id;
    let written = must(
        "hierarchy",
        store
            .write_hierarchy(vec![new_root, child, grandchild], EventMode::Publish)
            .await,
    )
    .await;
    assert_eq!(written.len(), 3);
    let children = filter([("parent", root.id.expect("id").to_hex().as_str())]);
    assert_eq!(must("count", store.count_nodes(&children).await).await, 1);
    let events = must(
        "events",
        store.events_after(0, &EventFilter::default(), 10).await,
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data["is_hierarchy"], true);
    assert_eq!(events[0].data["previous_state"], "running");
    assert_eq!(events[0].data["state"], "done");
}

/// `set_field` updates without events; `delete_nodes` removes what matches.
pub async fn set_field_and_delete<S: NodeStore>(store: &S) {
    let nodes = must(
        "insert",
        store
            .insert_nodes(sample_nodes(30), EventMode::Silent)
            .await,
    )
    .await;
    let ids: Vec<ObjectId> = nodes.iter().take(5).filter_map(|n| n.id).collect();
    let n = must(
        "set",
        store
            .set_field(&ids, "processed_by_kcidb_bridge", json!(true))
            .await,
    )
    .await;
    assert_eq!(n, 5);
    let flagged = filter([("processed_by_kcidb_bridge", "true")]);
    let want = nodes
        .iter()
        .skip(5)
        .filter(|n| n.processed_by_kcidb_bridge)
        .count()
        + 5;
    assert_eq!(
        must("count", store.count_nodes(&flagged).await).await as usize,
        want
    );
    assert!(
        store.set_field(&ids, "data.x", json!(1)).await.is_err(),
        "dotted field refused"
    );
    let tests = filter([("kind", "test")]);
    let n_tests = must("count", store.count_nodes(&tests).await).await;
    assert_eq!(
        must("delete", store.delete_nodes(&tests).await).await,
        n_tests
    );
    assert_eq!(must("count", store.count_nodes(&tests).await).await, 0);
    assert_eq!(
        must("count", store.count_nodes(&Filter::all()).await).await,
        30 - n_tests
    );
    assert_eq!(must("seq", store.last_event_sequence().await).await, 0);
}

fn user(name: &str, email: &str) -> User {
    User {
        id: ObjectId::new(),
        email: email.into(),
        hashed_password: "$argon2id$v=19$m=65536,t=3,p=4$x$y".into(),
        is_active: true,
        is_superuser: false,
        is_verified: true,
        username: name.into(),
        groups: vec![],
    }
}

/// Users and groups: unique names and e-mails (case-insensitive), lookups, filters, deletes.
pub async fn users_and_groups<S: NodeStore>(store: &S) {
    let admins = must("group", store.insert_group(UserGroup::new("admins")).await).await;
    let err = store
        .insert_group(UserGroup::new("admins"))
        .await
        .expect_err("duplicate group");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        must("group by name", store.get_group_by_name("admins").await).await,
        Some(admins.clone())
    );
    assert_eq!(
        must("group", store.get_group(admins.id).await).await,
        Some(admins.clone())
    );
    let mut alice = user("alice", "Alice@Example.org");
    alice.groups.push(admins.clone());
    alice.is_superuser = true;
    must("user", store.insert_user(alice.clone()).await).await;
    let bob = must(
        "user",
        store.insert_user(user("bob", "bob@example.org")).await,
    )
    .await;
    let err = store
        .insert_user(user("alice", "other@example.org"))
        .await
        .expect_err("username taken");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = store
        .insert_user(user("carol", "alice@EXAMPLE.org"))
        .await
        .expect_err("email taken");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        must(
            "by email",
            store.get_user_by_email("ALICE@example.ORG").await
        )
        .await
        .map(|u| u.id),
        Some(alice.id)
    );
    assert_eq!(
        must("by name", store.get_user_by_username("bob").await).await,
        Some(bob.clone())
    );
    let (admins_users, total) = must(
        "find",
        store
            .find_users(&filter([("groups.name", "admins")]), 0, None)
            .await,
    )
    .await;
    assert_eq!((admins_users.len(), total), (1, 1));
    let (supers, _) = must(
        "find",
        store
            .find_users(&filter([("is_superuser", "true")]), 0, None)
            .await,
    )
    .await;
    assert_eq!(
        supers
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        vec!["alice"]
    );
    let (page, total) = must("find", store.find_users(&Filter::all(), 1, Some(5)).await).await;
    assert_eq!((page.len(), total), (1, 2));
    let mut bob2 = bob.clone();
    bob2.email = "bobby@example.org".into();
    must("update", store.update_user(bob2.clone()).await).await;
    assert_eq!(must("get", store.get_user(bob.id).await).await, Some(bob2));
    let mut clash = bob.clone();
    clash.username = "alice".into();
    assert!(store.update_user(clash).await.is_err());
    assert!(must("delete", store.delete_user(bob.id).await).await);
    assert!(!must("delete", store.delete_user(bob.id).await).await);
    let (groups, total) = must(
        "groups",
        store
            .find_groups(&filter([("name", "admins")]), 0, None)
            .await,
    )
    .await;
    assert_eq!((groups.len(), total), (1, 1));
    assert!(must("delete group", store.delete_group(admins.id).await).await);
    assert!(
        must("get group", store.get_group(admins.id).await)
            .await
            .is_none()
    );
}

/// Key/value: set, overwrite, get, delete, namespaces apart.
pub async fn key_values<S: NodeStore>(store: &S) {
    assert_eq!(must("get", store.kv_get("ns", "k").await).await, None);
    must("set", store.kv_set("ns", "k", "v1").await).await;
    must("set", store.kv_set("ns", "k", "v2").await).await;
    must("set", store.kv_set("other", "k", "x").await).await;
    assert_eq!(
        must("get", store.kv_get("ns", "k").await).await.as_deref(),
        Some("v2")
    );
    assert!(must("delete", store.kv_delete("ns", "k").await).await);
    assert!(!must("delete", store.kv_delete("ns", "k").await).await);
    assert_eq!(
        must("get", store.kv_get("other", "k").await)
            .await
            .as_deref(),
        Some("x")
    );
}

fn new_event(channel: &str, owner: Option<&str>, n: u64) -> NewEvent {
    NewEvent {
        channel: channel.into(),
        owner: owner.map(Into::into),
        data: json!({"n": n, "kind": "test"}),
        attributes: Default::default(),
    }
}

/// The event log: growing sequence numbers, channel and owner filters, retention.
pub async fn event_log<S: NodeStore>(store: &S) {
    let mut all = Vec::new();
    for i in 0..30u64 {
        let (ch, owner) = match i % 3 {
            0 => ("node", Some("alice")),
            1 => ("node", Some("bob")),
            _ => ("retry", None),
        };
        all.extend(
            must(
                "append",
                store.append_events(vec![new_event(ch, owner, i)]).await,
            )
            .await,
        );
    }
    let seqs: Vec<u64> = all.iter().map(|e| e.sequence_id).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence grows: {seqs:?}"
    );
    assert_eq!(
        must("last", store.last_event_sequence().await).await,
        *seqs.last().expect("events")
    );
    let node_alice = EventFilter {
        channel: Some("node".into()),
        owner: Some("alice".into()),
    };
    let got = must("after", store.events_after(0, &node_alice, 100).await).await;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|e| e.owner.as_deref() == Some("alice")));
    let retry_as_bob = EventFilter {
        channel: Some("retry".into()),
        owner: Some("bob".into()),
    };
    assert_eq!(
        must("after", store.events_after(0, &retry_as_bob, 100).await)
            .await
            .len(),
        10,
        "ownerless events reach everyone"
    );
    let tail = must(
        "after",
        store
            .events_after(seqs[25], &EventFilter::default(), 3)
            .await,
    )
    .await;
    assert_eq!(
        tail.iter().map(|e| e.sequence_id).collect::<Vec<_>>(),
        seqs[26..29].to_vec()
    );
    assert_eq!(tail[0], all[26], "events read back unchanged");
    let found = must(
        "find",
        store
            .find_events(
                &filter([("data.n__gte", "27"), ("channel", "node")]),
                0,
                None,
            )
            .await,
    )
    .await;
    assert_eq!(
        found
            .iter()
            .map(|e| e.data["n"].as_u64().unwrap_or(99))
            .collect::<Vec<_>>(),
        vec![27, 28]
    );
    // Retention: purge everything so far; readers behind it get an explicit error.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let purged = must("purge", store.purge_events(Timestamp::now()).await).await;
    assert_eq!(purged, 30);
    let err = store
        .events_after(seqs[3], &EventFilter::default(), 10)
        .await
        .expect_err("behind retention");
    assert!(matches!(err, StoreError::EventsPurged { .. }), "{err}");
    assert_eq!(
        must("last", store.last_event_sequence().await).await,
        seqs[29],
        "sequence survives purge"
    );
    let fresh = must(
        "append",
        store.append_events(vec![new_event("node", None, 99)]).await,
    )
    .await;
    assert!(fresh[0].sequence_id > seqs[29], "numbers are never reused");
    let after_last = must(
        "after",
        store
            .events_after(seqs[29], &EventFilter::default(), 10)
            .await,
    )
    .await;
    assert_eq!(
        after_last.len(),
        1,
        "a reader at the purge point is not behind"
    );
}

/// Durable subscriber positions: stored, acknowledged forward only.
pub async fn subscribers<S: NodeStore>(store: &S) {
    assert!(
        must("get", store.get_subscriber("scheduler:node").await)
            .await
            .is_none()
    );
    let state = SubscriberState {
        subscriber_id: "scheduler:node".into(),
        channel: "node".into(),
        user: "admin".into(),
        promiscuous: true,
        last_event_id: 5,
        created_at: Timestamp::now(),
        last_poll: None,
    };
    must("put", store.put_subscriber(state.clone()).await).await;
    must("ack", store.ack_subscriber("scheduler:node", 9).await).await;
    must("ack", store.ack_subscriber("scheduler:node", 7).await).await;
    let got = must("get", store.get_subscriber("scheduler:node").await)
        .await
        .expect("exists");
    assert_eq!(got.last_event_id, 9, "never moves backwards");
    assert!(got.last_poll.is_some());
    let err = store
        .ack_subscriber("nobody", 1)
        .await
        .expect_err("unknown subscriber");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Concurrent writers get unique, increasing sequence numbers and lose no write.
pub async fn concurrent_writers<S: NodeStore>(store: &S) {
    let mut seqs = BTreeSet::new();
    let results = futures::future::join_all((0..8).map(|t| async move {
        let mut ids = Vec::new();
        for i in 0..25 {
            let node = checkout("t", "b", &format!("{t}-{i}"));
            let n = store.insert_node(node, EventMode::Publish).await?;
            ids.push(n.id);
        }
        Ok::<_, StoreError>(ids)
    }))
    .await;
    for r in results {
        assert_eq!(r.expect("writer").len(), 25);
    }
    assert_eq!(
        must("count", store.count_nodes(&Filter::all()).await).await,
        200
    );
    let events = must(
        "events",
        store.events_after(0, &EventFilter::default(), 1000).await,
    )
    .await;
    assert_eq!(events.len(), 200);
    for e in &events {
        assert!(seqs.insert(e.sequence_id), "duplicate sequence");
    }
    let ordered: Vec<u64> = events.iter().map(|e| e.sequence_id).collect();
    assert!(ordered.windows(2).all(|w| w[0] < w[1]));
}
