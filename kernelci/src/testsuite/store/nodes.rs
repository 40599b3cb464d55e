//! The [`NodeStore`] suite: node behaviour only (writes, lookups, queries, counts, paging), and
//! the events node writes return. That those events are in an event log is checked by
//! [`node_events`](super::node_events), for stores that are also an `EventLog`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{SAMPLE_QUERIES, assert_created_event, checkout, filter, insert, must, sample_nodes};
use crate::ErrorKind;
use crate::models::{Node, NodeKind, NodePatch, ObjectId, ResultValue, State, Timestamp};
use crate::query::{Filter, Query};
use crate::store::{
    Conflict, Cursor, EventMode, FindOptions, NodeStore, Sort, StoreError, UpdateRule,
};

/// A node survives insert and get unchanged, with an id assigned; a published insert returns
/// its `created` event, a silent one none.
pub async fn node_round_trip<S: NodeStore>(store: &S) {
    let mut node = checkout("mainline", "master", "abc");
    // Stores may keep milliseconds only (MongoDB's datetimes); compare at that precision.
    node.created = node.created.truncate_to_millis();
    node.updated = node.updated.truncate_to_millis();
    node.timeout = node.timeout.truncate_to_millis();
    let written = insert(store, vec![node.clone()], EventMode::Publish).await;
    assert_eq!(written.nodes.len(), 1);
    let id = written.nodes[0].id.expect("id assigned");
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
    assert_created_event(&written.events, id);
    let silent = insert(
        store,
        vec![checkout("mainline", "master", "def")],
        EventMode::Silent,
    )
    .await;
    assert!(silent.events.is_empty(), "a silent write returns no event");
}

/// Inserting an id twice is a conflict, and the batch is not half-written.
pub async fn duplicate_id_conflicts<S: NodeStore>(store: &S) {
    let n = insert(store, vec![checkout("a", "b", "c")], EventMode::Silent)
        .await
        .nodes
        .remove(0);
    let fresh = checkout("a", "b", "d");
    let err = store
        .insert_nodes(vec![fresh, n.clone()], EventMode::Publish)
        .await
        .expect_err("duplicate refused");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        matches!(&err, StoreError::Conflict(Conflict::NodeId(id)) if id.is_none() || *id == n.id),
        "the conflict names the node id: {err:?}"
    );
    assert_eq!(
        must("count", store.count_nodes(&Filter::all()).await).await,
        1,
        "batch rolled back"
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
    insert(store, nodes.clone(), EventMode::Silent).await;
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
    insert(store, nodes.clone(), EventMode::Silent).await;
    compare_with_reference(store, &nodes, SAMPLE_QUERIES).await;
}

/// Limit/offset and keyset cursors page through sorted results without gaps or repeats.
pub async fn pagination_and_cursors<S: NodeStore>(store: &S) {
    let nodes = sample_nodes(100);
    insert(store, nodes.clone(), EventMode::Silent).await;
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
    let mut n = insert(store, vec![checkout("t", "b", "c")], EventMode::Silent)
        .await
        .nodes
        .remove(0);
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
    let silent = must(
        "silent update",
        store
            .update_node(
                stored.clone(),
                UpdateRule {
                    event: EventMode::Silent,
                    ..UpdateRule::PUT
                },
            )
            .await,
    )
    .await;
    assert!(silent.event.is_none(), "a silent update returns no event");
}

/// PATCH applies only the fields sent, checks the transition, validates, appends an event.
pub async fn patch_rules<S: NodeStore>(store: &S) {
    let n = insert(store, vec![checkout("t", "b", "c")], EventMode::Silent)
        .await
        .nodes
        .remove(0);
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
    let stored = must("get", store.get_node(id).await).await.expect("exists");
    assert_eq!(stored, upd.node, "failed patches wrote nothing");
}

/// A hierarchy is written in one go with exactly one root event.
pub async fn hierarchy_writes_one_event<S: NodeStore>(store: &S) {
    let root = insert(
        store,
        vec![Node::new(NodeKind::Job, "baseline")],
        EventMode::Silent,
    )
    .await
    .nodes
    .remove(0);
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
    assert_eq!(written.nodes.len(), 3);
    let children = filter([("parent", root.id.expect("id").to_hex().as_str())]);
    assert_eq!(must("count", store.count_nodes(&children).await).await, 1);
    let events = written.events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data["is_hierarchy"], true);
    assert_eq!(events[0].data["previous_state"], "running");
    assert_eq!(events[0].data["state"], "done");
}

/// `set_field` updates without events; `delete_nodes` removes what matches.
pub async fn set_field_and_delete<S: NodeStore>(store: &S) {
    let nodes = insert(store, sample_nodes(30), EventMode::Silent)
        .await
        .nodes;
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
}

/// Concurrent writers lose no write, and the events their writes return have unique numbers.
pub async fn concurrent_writers<S: NodeStore>(store: &S) {
    let results = futures::future::join_all((0..8).map(|t| async move {
        let mut seqs = Vec::new();
        for i in 0..25 {
            let node = checkout("t", "b", &format!("{t}-{i}"));
            let w = store.insert_nodes(vec![node], EventMode::Publish).await?;
            assert_eq!(w.nodes.len(), 1);
            seqs.extend(w.events.iter().map(|e| e.sequence_id));
        }
        Ok::<_, StoreError>(seqs)
    }))
    .await;
    let mut seqs = BTreeSet::new();
    for r in results {
        let mine = r.expect("writer");
        assert_eq!(mine.len(), 25, "one event per write");
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "a writer's events grow"
        );
        for s in mine {
            assert!(seqs.insert(s), "duplicate sequence {s}");
        }
    }
    assert_eq!(
        must("count", store.count_nodes(&Filter::all()).await).await,
        200
    );
}
