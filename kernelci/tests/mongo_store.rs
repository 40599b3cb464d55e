//! The store conformance suites (every store trait) on `MongoStore` against a MongoDB-wire
//! server, plus MongoDB-specific checks (connection loss, upstream documents, index
//! reconciliation).
#![cfg(all(feature = "mongodb", feature = "testsuite"))]

use kernelci::testsuite::mongo::fresh_store;

kernelci::store_suite!(option fresh_store());

use std::time::{Duration, Instant};

use kernelci::ErrorKind;
use kernelci::models::{NodeKind, ObjectId};
use kernelci::query::Query;
use kernelci::store::{
    EventFilter, EventLog, EventMode, MongoStore, NodeStore, StoreError, UserStore,
};
use kernelci::testsuite::mongo::MongoPeer;
use kernelci::testsuite::store as suite;
use mongodb::bson::{DateTime, doc, oid};

/// Without transactions (a standalone server, or forced off) the suite's write tests still
/// pass: batches are undone, updates guarded, sequences unique.
mod standalone {
    use super::*;

    async fn store() -> Option<(MongoStore, MongoPeer)> {
        let peer = MongoPeer::start()?;
        let mut config = peer.config();
        config.transactions = false;
        let store = MongoStore::connect_with(config).await.expect("connect");
        assert!(!store.uses_transactions());
        Some((store, peer))
    }

    kernelci::store_suite!(option store());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detects_transactions_on_a_replica_set() {
    let Some((store, _peer)) = fresh_store().await else {
        return;
    };
    assert!(
        store.uses_transactions(),
        "jongodb runs as a single-node replica set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_loss_gives_unavailable_then_recovers() {
    let Some(mut peer) = MongoPeer::start() else {
        return;
    };
    let store = peer.store().await;
    let n = store
        .insert_node(suite::checkout("t", "b", "c"), EventMode::Publish)
        .await
        .expect("insert");
    peer.stop();
    let start = Instant::now();
    let err = store
        .insert_node(suite::checkout("t", "b", "d"), EventMode::Publish)
        .await
        .expect_err("server down");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    eprintln!("insert failed after {:?}: {err}", start.elapsed());
    assert!(matches!(err, StoreError::Unavailable { .. }));
    let err = store
        .get_node(n.id.expect("id"))
        .await
        .expect_err("server down");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    eprintln!("get failed after {:?}: {err}", start.elapsed());
    let err = store
        .events_after(0, &EventFilter::default(), 10)
        .await
        .expect_err("server down");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(start.elapsed() < Duration::from_secs(30), "fails fast");

    peer.restart().expect("restart on the same port");
    // The same store recovers by itself once the server answers again (the in-memory server
    // comes back empty).
    let deadline = Instant::now() + Duration::from_secs(30);
    let again = loop {
        match store
            .insert_node(suite::checkout("t", "b", "e"), EventMode::Publish)
            .await
        {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    let got = store.get_node(again.id.expect("id")).await.expect("get");
    assert_eq!(got, Some(again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_upstream_documents() {
    let Some(peer) = MongoPeer::start() else {
        return;
    };
    let config = peer.config();
    // A database as upstream's Python API leaves it: a redundant `id`, missing fields,
    // datetimes, an ObjectId parent, events numbered by Redis.
    let client = mongodb::Client::with_uri_str(&config.uri)
        .await
        .expect("client");
    let db = client.database(&config.database);
    let root = oid::ObjectId::new();
    let child = oid::ObjectId::new();
    let created = DateTime::from_millis(1_706_781_508_479);
    db.collection("node")
        .insert_many([
            doc! {"_id": root, "kind": "checkout", "name": "checkout", "path": ["checkout"],
            "parent": null, "state": "available", "result": null,
            "data": {"kernel_revision": {"tree": "mainline", "branch": "master",
                     "commit": "abc", "url": "https://git.kernel.org/x.git"}},
            "created": created, "updated": created, "timeout": created,
            "holdoff": null, "owner": "admin", "retry_counter": 0},
            doc! {"_id": child, "id": child, "kind": "kbuild", "name": "kbuild-gcc-12-x86",
            "path": ["checkout", "kbuild-gcc-12-x86"], "parent": root, "state": "done",
            "result": "pass", "created": created, "updated": created, "timeout": created,
            "data": {"regression": oid::ObjectId::new(), "arch": "x86_64"}},
        ])
        .await
        .expect("seed nodes");
    db.collection("eventhistory")
        .insert_one(doc! {"_id": oid::ObjectId::new(), "timestamp": created,
        "sequence_id": 41_i64, "channel": "node", "owner": "admin",
        "data": {"op": "created", "id": root.to_hex()}})
        .await
        .expect("seed event");
    db.collection("user")
        .insert_one(
            doc! {"_id": oid::ObjectId::new(), "email": "Admin@Example.org",
            "hashed_password": "$2b$12$x", "is_active": true, "is_superuser": true,
            "is_verified": true, "username": "admin", "revision_id": null,
            "groups": [{"_id": oid::ObjectId::new(), "name": "node:edit:any"}]},
        )
        .await
        .expect("seed user");

    let store = MongoStore::connect_with(config).await.expect("connect");
    let root_id = ObjectId::parse_str(&root.to_hex()).expect("id");
    let child_id = ObjectId::parse_str(&child.to_hex()).expect("id");
    let got = store.get_node(child_id).await.expect("get").expect("found");
    assert_eq!(got.parent, Some(root_id));
    assert_eq!(got.created.to_string(), "2024-02-01T09:58:28.479000");
    assert_eq!(got.owner, None);
    assert!(
        got.data_str("regression").is_some(),
        "ObjectIds in data read as strings"
    );
    let children = Query::parse([("parent", root.to_hex().as_str())]).expect("query");
    assert_eq!(store.count_nodes(&children.filter).await.expect("count"), 1);
    let roots = Query::parse([
        ("parent", "null"),
        ("created__lte", "2024-02-01T09:58:28.479"),
    ])
    .expect("query");
    assert_eq!(store.count_nodes(&roots.filter).await.expect("count"), 1);
    // The sequence continues after upstream's.
    assert_eq!(store.last_event_sequence().await.expect("seq"), 41);
    let ev = store
        .append_events(vec![kernelci::store::NewEvent {
            channel: "node".into(),
            owner: None,
            data: serde_json::json!({"x": 1}),
            attributes: Default::default(),
        }])
        .await
        .expect("append");
    assert_eq!(ev[0].sequence_id, 42);
    let events = store
        .events_after(40, &EventFilter::default(), 10)
        .await
        .expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].data["op"], "created");
    let admin = store
        .get_user_by_email("admin@example.ORG")
        .await
        .expect("user")
        .expect("found");
    assert!(admin.in_group("node:edit:any"));
    // An update writes our shape back, readable again.
    let mut upd = got.clone();
    upd.kind = NodeKind::Kbuild.as_str().into();
    store
        .update_node(upd, kernelci::store::UpdateRule::PUT)
        .await
        .expect("update upstream node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_reconciled() {
    let Some(peer) = MongoPeer::start() else {
        return;
    };
    let config = peer.config();
    let client = mongodb::Client::with_uri_str(&config.uri)
        .await
        .expect("client");
    let db = client.database(&config.database);
    // An equivalent index under another name is reused.
    db.run_command(doc! {"createIndexes": "node", "indexes": [
    {"key": {"kind": 1}, "name": "upstream_kind"}]})
        .await
        .expect("seed index");
    let store = MongoStore::connect_with(config.clone())
        .await
        .expect("connect");
    let names: Vec<String> = store
        .database()
        .collection::<mongodb::bson::Document>("node")
        .list_index_names()
        .await
        .expect("list");
    assert!(names.iter().any(|n| n == "upstream_kind"));
    assert!(!names.iter().any(|n| n == "kind_1"), "{names:?}");
    assert!(names.iter().any(|n| n == "data.kernel_revision.tree_1"));
    assert_eq!(
        store.reconcile_indexes(604_800).await.expect("again"),
        Vec::<String>::new(),
        "nothing left to create"
    );
    // A TTL of other options is a conflict that stops start-up.
    let mut other = config.clone();
    other.event_ttl = Duration::from_secs(86_400);
    let err = MongoStore::connect_with(other)
        .await
        .expect_err("TTL conflict");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}

/// Concurrent writes are committed in groups; a write that fails in a group (a patch of a
/// node that does not exist) gets its own error and the others of the group still commit,
/// each with its own event, in sequence order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_isolates_a_failing_write() {
    use kernelci::models::{NodePatch, ResultValue};
    let Some((store, _peer)) = fresh_store().await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..8 {
        let n = store
            .insert_node(
                suite::checkout("t", "b", &format!("c{i}")),
                EventMode::Publish,
            )
            .await
            .expect("insert");
        ids.push(n.id.expect("id"));
    }
    let patch = NodePatch {
        result: Some(Some(ResultValue::Pass)),
        ..NodePatch::default()
    };
    let missing = ObjectId::new();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for target in [*id, missing] {
            let (store, patch) = (store.clone(), patch.clone());
            tasks.push(tokio::spawn(async move {
                (
                    target,
                    store.patch_node(target, &patch, EventMode::Publish).await,
                    i,
                )
            }));
        }
    }
    let mut seqs = Vec::new();
    for t in tasks {
        let (target, r, _) = t.await.expect("task");
        if target == missing {
            assert_eq!(r.expect_err("missing node").kind(), ErrorKind::NotFound);
        } else {
            let update = r.expect("patch of an existing node");
            assert_eq!(update.node.result, Some(ResultValue::Pass));
            seqs.push(update.event.expect("event").sequence_id);
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), ids.len(), "one event per patch: {seqs:?}");
    for id in &ids {
        let n = store.get_node(*id).await.expect("get").expect("stored");
        assert_eq!(n.result, Some(ResultValue::Pass));
    }
    let events = store
        .events_after(0, &EventFilter::default(), 1000)
        .await
        .expect("events");
    assert_eq!(events.len(), 2 * ids.len(), "8 created + 8 updated");
}

/// Two stores on one database (two server replicas, each with its own group-commit writer)
/// appending at once: the append lease keeps their transactions apart, a conflict that still
/// happens is retried per write — no append fails, no read meanwhile fails, and the sequence
/// numbers are distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_database_retry_their_conflicts() {
    use kernelci::store::NewEvent;
    let Some(peer) = MongoPeer::start() else {
        return;
    };
    let config = peer.config();
    let a = MongoStore::connect_with(config.clone())
        .await
        .expect("connect a");
    let b = MongoStore::connect_with(config).await.expect("connect b");
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for k in 0..10u64 {
                let ev = NewEvent {
                    channel: "bench".into(),
                    owner: None,
                    data: serde_json::json!({"w": w, "k": k}),
                    attributes: Default::default(),
                };
                out.push(store.append_events(vec![ev]).await);
            }
            out
        }));
    }
    // Reads meanwhile, on both stores: a commit that costs the writer its connection must not
    // fail them (the writer has a connection pool of its own).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let mut failed = Vec::new();
                let filter = kernelci::store::EventFilter::default();
                while !*stopped.borrow() {
                    if let Err(e) = store.events_after(0, &filter, 5).await {
                        failed.push(format!("{e:?}"));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                failed
            })
        })
        .collect();
    let mut seqs = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        for r in t.await.expect("task") {
            match r {
                Ok(evs) => seqs.extend(evs.iter().map(|e| e.sequence_id)),
                Err(e) => failures.push(format!("{e:?}")),
            }
        }
    }
    let _ = stop.send(true);
    for r in readers {
        failures.extend(r.await.expect("reader"));
    }
    assert!(
        failures.is_empty(),
        "{} appends or reads failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 160, "distinct sequence numbers");
}
