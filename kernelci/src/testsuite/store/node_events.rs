//! The suite of node writes and the event log together, for stores that implement both
//! [`NodeStore`] and [`EventLog`]: the events a node write returns are in the log, in the same
//! transaction (a failed write appends nothing), numbered in the log's one sequence.

use std::collections::BTreeSet;

use serde_json::json;

use super::{assert_created_event, checkout, insert, must, sample_nodes};
use crate::models::{Node, NodeKind, NodePatch, ObjectId, State};
use crate::query::Filter;
use crate::store::{EventFilter, EventLog, EventMode, NodeStore, StoreError, UpdateRule};

/// Every published node write (insert, update, patch, hierarchy) returns events that the log
/// then serves unchanged, in order; silent writes append nothing.
pub async fn node_writes_are_in_the_log<S: NodeStore + EventLog>(store: &S) {
    let written = insert(
        store,
        vec![checkout("mainline", "master", "abc")],
        EventMode::Publish,
    )
    .await;
    let node = written.nodes[0].clone();
    let events = must(
        "events",
        store.events_after(0, &EventFilter::default(), 10).await,
    )
    .await;
    assert_eq!(events, written.events, "the log holds the returned event");
    assert_created_event(&events, node.id.expect("id"));
    let mut all = events;

    let mut done = node.clone();
    done.state = State::Available;
    let upd = must("update", store.update_node(done, UpdateRule::PUT).await).await;
    all.push(upd.event.clone().expect("update event"));
    let patch: NodePatch = serde_json::from_value(json!({"state": "done"})).expect("patch");
    let upd = must(
        "patch",
        store
            .patch_node(node.id.expect("id"), &patch, EventMode::Publish)
            .await,
    )
    .await;
    all.push(upd.event.clone().expect("patch event"));
    must(
        "silent patch",
        store
            .patch_node(node.id.expect("id"), &patch, EventMode::Silent)
            .await,
    )
    .await;
    let mut child = Node::new(NodeKind::Test, "login");
    child.parent = node.id;
    let tree = must(
        "hierarchy",
        store
            .write_hierarchy(vec![upd.node.clone(), child], EventMode::Publish)
            .await,
    )
    .await;
    all.extend(tree.events.clone());
    let logged = must(
        "events",
        store.events_after(0, &EventFilter::default(), 100).await,
    )
    .await;
    assert_eq!(
        logged, all,
        "every returned event, in order, and nothing else"
    );
    assert_eq!(logged[1].data["previous_state"], "running");
    assert_eq!(logged[2].data["previous_state"], "available");
    assert_eq!(logged[3].data["is_hierarchy"], true);
    assert_eq!(
        must("last", store.last_event_sequence().await).await,
        logged[3].sequence_id
    );
}

/// Failed node writes (a duplicate id in a batch, a refused transition, an invalid or missing
/// patch target) append no event; `set_field` and `delete_nodes` never do.
pub async fn failed_writes_append_nothing<S: NodeStore + EventLog>(store: &S) {
    let n = insert(store, vec![checkout("a", "b", "c")], EventMode::Silent)
        .await
        .nodes
        .remove(0);
    assert_eq!(must("seq", store.last_event_sequence().await).await, 0);
    store
        .insert_nodes(vec![checkout("a", "b", "d"), n.clone()], EventMode::Publish)
        .await
        .expect_err("duplicate refused");
    assert_eq!(
        must("seq", store.last_event_sequence().await).await,
        0,
        "no event from a failed batch"
    );
    let mut done = n.clone();
    done.state = State::Done;
    let upd = must("update", store.update_node(done, UpdateRule::PUT).await).await;
    let seq = upd.event.expect("event").sequence_id;
    let mut back = upd.node.clone();
    back.state = State::Running;
    store
        .update_node(back, UpdateRule::PUT)
        .await
        .expect_err("done -> running refused");
    let id = n.id.expect("id");
    for body in [
        json!({"artifacts": {"log": "not a url"}}),
        json!({"state": "running"}),
    ] {
        let patch: NodePatch = serde_json::from_value(body).expect("patch");
        assert!(
            store
                .patch_node(id, &patch, EventMode::Publish)
                .await
                .is_err()
        );
    }
    let patch: NodePatch = serde_json::from_value(json!({"state": "done"})).expect("patch");
    store
        .patch_node(ObjectId::new(), &patch, EventMode::Publish)
        .await
        .expect_err("missing node");
    assert_eq!(
        must("seq", store.last_event_sequence().await).await,
        seq,
        "failed updates and patches append nothing"
    );
    let nodes = insert(store, sample_nodes(10), EventMode::Silent)
        .await
        .nodes;
    let ids: Vec<ObjectId> = nodes.iter().filter_map(|n| n.id).collect();
    must(
        "set",
        store
            .set_field(&ids, "processed_by_kcidb_bridge", json!(true))
            .await,
    )
    .await;
    must("delete", store.delete_nodes(&Filter::all()).await).await;
    assert_eq!(
        must("seq", store.last_event_sequence().await).await,
        seq,
        "set_field and delete_nodes append nothing"
    );
}

/// Concurrent writers get unique, increasing sequence numbers and lose no write.
pub async fn concurrent_writers_are_sequenced<S: NodeStore + EventLog>(store: &S) {
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
