//! Batched catch-up (our extension): `GET /listen/{id}?max=N` answers a JSON array of up to N
//! events in log order, recorded as one delivery; without `max` the answer is upstream's one
//! message object.

mod common;

use common::{TestApp, app_with, node};
use serde_json::{Value, json};

/// The sequence ids and node names of a batched answer.
fn batch(t_reply: &common::Reply) -> Vec<(u64, String)> {
    assert_eq!(t_reply.status, 200, "listen: {}", t_reply.text());
    let msgs = t_reply.json();
    let msgs = msgs.as_array().expect("a batched listen answers an array");
    msgs.iter()
        .map(|m| {
            assert_eq!(m["type"], "message");
            assert_eq!(m["channel"], "node");
            let ev: Value = serde_json::from_str(m["data"].as_str().expect("data")).expect("event");
            (
                ev["sequenceid"].as_u64().expect("sequenceid"),
                ev["data"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn make_nodes(t: &TestApp, token: &str, n: usize) {
    for i in 0..n {
        t.create_node(token, node("checkout", &format!("n-{i}")))
            .await;
    }
}

#[tokio::test]
async fn batches_in_order_with_explicit_and_implicit_acks() {
    let t = app_with(|c| c.keep_alive_period = 1).await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "node", "").await;
    make_nodes(&t, &alice, 25).await;

    // Explicit acknowledgement: 10, 10, then the 5 left.
    let first = batch(
        &t.get_as(&alice, &format!("/listen/{sub}?max=10&acknowledge=0"))
            .await,
    );
    assert_eq!(first.len(), 10);
    let names: Vec<&str> = first.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names[..3], ["n-0", "n-1", "n-2"]);
    assert!(
        first.windows(2).all(|w| w[0].0 < w[1].0),
        "log order: {first:?}"
    );
    // Acknowledging only the first 4: the batch starts again after the 4th.
    let ack = first[3].0;
    let again = batch(
        &t.get_as(&alice, &format!("/listen/{sub}?max=10&acknowledge={ack}"))
            .await,
    );
    assert_eq!(again[0], first[4], "after the acknowledged event");
    assert_eq!(again.len(), 10);
    // Implicit acknowledgement (upstream's rule): the whole previous batch.
    let rest = batch(&t.get_as(&alice, &format!("/listen/{sub}?max=1000")).await);
    assert_eq!(
        rest.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
        [
            "n-14", "n-15", "n-16", "n-17", "n-18", "n-19", "n-20", "n-21", "n-22", "n-23", "n-24"
        ]
    );
    // Nothing left: the keep-alive comes as a one-message array.
    let r = t.get_as(&alice, &format!("/listen/{sub}?max=5")).await;
    let msgs = r.json();
    assert_eq!(msgs.as_array().map(Vec::len), Some(1), "{msgs}");
    let beep: Value =
        serde_json::from_str(msgs[0]["data"].as_str().unwrap_or("{}")).unwrap_or_default();
    assert_eq!(beep["data"], json!("BEEP"), "{beep}");

    // Without `max`, upstream's single object.
    t.create_node(&alice, node("checkout", "single")).await;
    let r = t.get_as(&alice, &format!("/listen/{sub}")).await;
    assert_eq!(r.status, 200);
    assert!(r.json().is_object(), "{}", r.text());
}

#[tokio::test]
async fn max_out_of_range_is_422() {
    let t = app_with(|_| {}).await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "node", "").await;
    for (max, ty) in [
        ("0", "greater_than_equal"),
        ("-3", "greater_than_equal"),
        ("1001", "less_than_equal"),
        ("99999999999999999999", "int_parsing"),
        ("ten", "int_parsing"),
    ] {
        t.get_as(&alice, &format!("/listen/{sub}?max={max}"))
            .await
            .assert_422(ty, json!(["query", "max"]));
    }
}
