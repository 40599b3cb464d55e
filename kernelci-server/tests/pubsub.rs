//! Pub/sub (api spec §3.8, §6; DESIGN §2, §6): subscriptions, owner filter, BEEP, durable
//! subscribers across re-subscribes and restarts, explicit acks, stable replay ids,
//! previous_state, and the explicit error past retention.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, app, app_in, app_with, config, node};
use kernelci::models::Timestamp;
use kernelci::store::EventLog;
use serde_json::{Value, json};

#[tokio::test]
async fn subscribe_listen_unsubscribe_errors() {
    let t = app().await;
    let alice = t.user_token("alice", &[]).await;
    let bob = t.user_token("bob", &[]).await;
    assert_eq!(t.req("POST", "/subscribe/node").send().await.status, 401);
    let r = t.req("POST", "/subscribe/node").token(&alice).send().await;
    assert_eq!(r.status, 200);
    let sub = r.json();
    assert_eq!(sub["channel"], "node");
    assert_eq!(sub["user"], "alice");
    assert_eq!(sub["promiscuous"], false);
    let id = sub["id"].as_u64().unwrap();
    let keys: Vec<&String> = sub.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "channel", "user", "promiscuous"]);
    let id2 = t.subscribe(&alice, "node", "?promisc=true").await;
    assert!(id2 > id, "ids grow");
    assert_eq!(
        t.req("POST", "/subscribe/node?promisc=maybe")
            .token(&alice)
            .send()
            .await
            .status,
        422
    );

    t.get_as(&alice, "/listen/999999").await.assert_detail(
        404,
        "Subscription id not found: 'Subscription 999999 not found'",
    );
    t.get_as(&alice, "/listen/abc")
        .await
        .assert_422("int_parsing", json!(["path", "sub_id"]));
    assert_eq!(t.get(&format!("/listen/{id}")).await.status, 401);
    // Deliberately better: another user's subscription is 403 with a clear message (upstream
    // answered 500).
    t.get_as(&bob, &format!("/listen/{id}"))
        .await
        .assert_detail(403, &format!("Subscription {id} not owned by bob"));
    t.req("POST", &format!("/unsubscribe/{id}"))
        .token(&bob)
        .send()
        .await
        .assert_detail(403, &format!("Subscription {id} not owned by bob"));
    t.post_as(&bob, &format!("/ack/{id}"), &json!({"sequence_id": 1}))
        .await
        .assert_detail(403, &format!("Subscription {id} not owned by bob"));
    // Admins too: a subscription is its owner's alone.
    t.get_as(&t.admin, &format!("/listen/{id}"))
        .await
        .assert_detail(403, &format!("Subscription {id} not owned by admin"));
    assert_eq!(
        t.req("POST", "/unsubscribe/x")
            .token(&alice)
            .send()
            .await
            .status,
        422
    );
    let r = t
        .req("POST", &format!("/unsubscribe/{id}"))
        .token(&alice)
        .send()
        .await;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    t.req("POST", &format!("/unsubscribe/{id}"))
        .token(&alice)
        .send()
        .await
        .assert_detail(
            404,
            &format!("Subscription id not found: 'Subscription {id} not found'"),
        );

    // Stats: superuser only.
    assert_eq!(t.get_as(&alice, "/stats/subscriptions").await.status, 403);
    let s = t.get_as(&t.admin, "/stats/subscriptions").await.json();
    let s = s.as_array().unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["id"], id2);
    // Deliberately better: the real flag (upstream always said false).
    assert_eq!(s[0]["promiscuous"], true);
    assert!(s[0]["created"].is_string());
    assert_eq!(s[0]["last_poll"], Value::Null);
}

#[tokio::test]
async fn message_shape_owner_filter_and_promiscuous() {
    let t = app().await;
    let alice = t.user_token("alice", &[]).await;
    let bob = t.user_token("bob", &[]).await;
    let bob_sub = t.subscribe(&bob, "node", "").await;
    let bob_all = t.subscribe(&bob, "node", "?promisc=true").await;
    let a = t.create_node(&alice, node("checkout", "alice-node")).await;
    let b = t.create_node(&bob, node("checkout", "bob-node")).await;

    let (msg, ev) = t.listen(&bob, bob_sub, "").await;
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["pattern"], Value::Null);
    assert_eq!(msg["channel"], "node");
    let keys: Vec<&String> = ev.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "data",
            "owner",
            "sequenceid"
        ]
    );
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["source"], "https://api.kernelci.org/");
    assert_eq!(ev["type"], "api.kernelci.org");
    assert_eq!(ev["owner"], "bob");
    assert_eq!(
        ev["data"]["id"], b["id"],
        "the non-promiscuous subscriber skips alice's node"
    );
    assert_eq!(ev["data"]["op"], "created");
    // The data string is written like Python's json.dumps.
    assert!(
        msg["data"]
            .as_str()
            .unwrap()
            .starts_with("{\"specversion\": \"1.0\", \"id\": ")
    );

    let (_, e1) = t.listen(&bob, bob_all, "").await;
    let (_, e2) = t.listen(&bob, bob_all, "").await;
    assert_eq!(e1["data"]["id"], a["id"]);
    assert_eq!(e2["data"]["id"], b["id"]);
    assert!(e1["sequenceid"].as_u64() < e2["sequenceid"].as_u64());
    // Nothing more for bob's filtered subscription within a short wait.
    assert!(t.listen_within(&bob, bob_sub, "", 300).await.is_none());
}

#[tokio::test]
async fn beep_after_keep_alive() {
    let t = app_with(|c| c.keep_alive_period = 1).await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "node", "").await;
    let started = std::time::Instant::now();
    let (msg, ev) = t.listen(&alice, sub, "").await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(msg["channel"], "node");
    assert_eq!(ev["data"], "BEEP");
    assert!(ev.get("owner").is_none());
    assert!(ev.get("sequenceid").is_none());
    // last_poll is stamped.
    let s = t.get_as(&t.admin, "/stats/subscriptions").await.json();
    assert!(s[0]["last_poll"].is_string());
}

#[tokio::test]
async fn listen_is_woken_by_a_write() {
    let t = app().await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "node", "").await;
    let listen = t.listen(&alice, sub, "");
    let write = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        t.create_node(&alice, node("checkout", "wake")).await
    };
    let ((_, ev), n) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(listen, write)
    })
    .await
    .expect("listen woke up");
    assert_eq!(ev["data"]["id"], n["id"]);
}

#[tokio::test]
async fn publish_and_lists() {
    let t = app().await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "test_channel", "").await;
    for bad in [
        json!({"data": null}),
        json!({"data": {}}),
        json!({"data": ""}),
        json!({"data": 0}),
        json!({"data": false}),
    ] {
        let r = t.post_as(&alice, "/publish/test_channel", &bad).await;
        assert_eq!(r.status, 422, "{bad}");
        assert_eq!(
            r.detail()[0]["msg"],
            "Value error, None is not allowed as event payload"
        );
    }
    assert_eq!(
        t.req("POST", "/publish/test_channel")
            .json(&json!({"data": 1}))
            .send()
            .await
            .status,
        401
    );
    let r = t
        .post_as(
            &alice,
            "/publish/test_channel",
            &json!({"data": {"msg": "hi"}, "type": "my.type", "source": "https://me/",
                    "attributes": {"kind": "x", "owner": "mallory", "type": "ignored"}}),
        )
        .await;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    let (msg, ev) = t.listen(&alice, sub, "").await;
    assert_eq!(msg["channel"], "test_channel");
    assert_eq!(ev["data"], json!({"msg": "hi"}));
    assert_eq!(ev["type"], "my.type");
    assert_eq!(ev["source"], "https://me/");
    assert_eq!(ev["kind"], "x");
    assert_eq!(ev["owner"], "alice", "attributes never overwrite owner");
    // No data at all: published as null.
    assert_eq!(
        t.post_as(&alice, "/publish/test_channel", &json!({}))
            .await
            .status,
        200
    );
    let (_, ev) = t.listen(&alice, sub, "").await;
    assert_eq!(ev["data"], Value::Null);

    // Push / pop.
    assert_eq!(
        t.req("POST", "/push/q")
            .json(&json!({"data": 1}))
            .send()
            .await
            .status,
        401
    );
    assert_eq!(t.get("/pop/q").await.status, 401);
    // Upstream answered 500 (KeyError) without data; we say what is missing.
    t.post_as(&alice, "/push/q", &json!({"x": 1}))
        .await
        .assert_422("missing", json!(["body", "data"]));
    assert_eq!(
        t.post_as(&alice, "/push/q", &json!({"data": {"n": 1}}))
            .await
            .json(),
        Value::Null
    );
    t.post_as(
        &alice,
        "/push/q",
        &json!({"data": {"n": 2}, "type": "t2", "extra": "e"}),
    )
    .await;
    let p1 = t.get_as(&alice, "/pop/q").await.json();
    assert_eq!(p1["data"], json!({"n": 1}));
    assert_eq!(p1["type"], "api.kernelci.org");
    assert_eq!(p1["source"], "https://api.kernelci.org/");
    assert!(p1.get("sequenceid").is_none());
    let p2 = t.get_as(&alice, "/pop/q").await.json();
    assert_eq!(
        (
            p2["data"]["n"].as_u64(),
            p2["type"].as_str(),
            p2["extra"].as_str()
        ),
        (Some(2), Some("t2"), Some("e"))
    );
    // Pop blocks until an item arrives.
    let (popped, _) = tokio::join!(t.get_as(&alice, "/pop/q"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.post_as(&alice, "/push/q", &json!({"data": "late"})).await
    });
    assert_eq!(popped.json()["data"], "late");
}

async fn make_events(t: &TestApp, token: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            t.create_node(token, node("checkout", &format!("ev-{i}")))
                .await,
        );
    }
    out
}

#[tokio::test]
async fn durable_subscriber_resumes_after_resubscribe_with_stable_ids() {
    let t = app().await;
    let svc = t.user_token("svc", &[]).await;
    let sub = t.subscribe(&svc, "node", "?subscriber_id=svc:node").await;
    let nodes = make_events(&t, &svc, 3).await;
    let (_, e0) = t.listen(&svc, sub, "").await;
    let (_, e1) = t.listen(&svc, sub, "").await; // acks e0
    assert_eq!(e0["data"]["id"], nodes[0]["id"]);
    assert_eq!(e1["data"]["id"], nodes[1]["id"]);
    t.req("POST", &format!("/unsubscribe/{sub}"))
        .token(&svc)
        .send()
        .await;
    // Events while away.
    let more = make_events(&t, &svc, 1).await;
    let sub2 = t.subscribe(&svc, "node", "?subscriber_id=svc:node").await;
    assert_ne!(sub, sub2);
    // e1 was delivered but never acknowledged: redelivered, with its original id.
    let (_, again) = t.listen(&svc, sub2, "").await;
    assert_eq!(again["data"]["id"], nodes[1]["id"]);
    assert_eq!(again["id"], e1["id"], "a replay keeps the CloudEvent id");
    assert_eq!(again["time"], e1["time"]);
    assert_eq!(again["sequenceid"], e1["sequenceid"]);
    let (_, e2) = t.listen(&svc, sub2, "").await;
    let (_, e3) = t.listen(&svc, sub2, "").await;
    assert_eq!(e2["data"]["id"], nodes[2]["id"]);
    assert_eq!(e3["data"]["id"], more[0]["id"]);
    // Another user cannot take the subscriber id.
    let other = t.user_token("other", &[]).await;
    let r = t
        .req("POST", "/subscribe/node?subscriber_id=svc:node")
        .token(&other)
        .send()
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    // A new durable id starts at the end of the log.
    let fresh = t.subscribe(&svc, "node", "?subscriber_id=svc:fresh").await;
    assert!(t.listen_within(&svc, fresh, "", 300).await.is_none());
}

#[tokio::test]
async fn explicit_acknowledge_and_ack_route() {
    let t = app().await;
    let svc = t.user_token("svc", &[]).await;
    let sub = t.subscribe(&svc, "node", "?subscriber_id=svc:ack").await;
    let nodes = make_events(&t, &svc, 3).await;
    let (_, e0) = t.listen(&svc, sub, "").await;
    let s0 = e0["sequenceid"].as_u64().unwrap();
    // acknowledge=<before e0>: e0 was not acked, so it comes again.
    let (_, again) = t
        .listen(&svc, sub, &format!("?acknowledge={}", s0 - 1))
        .await;
    assert_eq!(again["id"], e0["id"]);
    // acknowledge=s0: next is e1.
    let (_, e1) = t.listen(&svc, sub, &format!("?acknowledge={s0}")).await;
    assert_eq!(e1["data"]["id"], nodes[1]["id"]);
    assert_eq!(
        t.get_as(&svc, &format!("/listen/{sub}?acknowledge=x"))
            .await
            .status,
        422
    );
    // POST /ack moves the durable position; a re-subscribe starts after it.
    let s1 = e1["sequenceid"].as_u64().unwrap();
    let r = t
        .post_as(&svc, &format!("/ack/{sub}"), &json!({"sequence_id": s1}))
        .await;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    t.post_as(&svc, &format!("/ack/{sub}"), &json!({}))
        .await
        .assert_422("missing", json!(["body", "sequence_id"]));
    assert_eq!(
        t.post_as(&svc, "/ack/424242", &json!({"sequence_id": 1}))
            .await
            .status,
        404
    );
    let sub2 = t.subscribe(&svc, "node", "?subscriber_id=svc:ack").await;
    let (_, e2) = t.listen(&svc, sub2, "").await;
    assert_eq!(e2["data"]["id"], nodes[2]["id"]);
}

#[tokio::test]
async fn durable_subscriber_survives_a_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (token, e0, nodes) = {
        let t = app_in(dir.clone(), config(|_| {})).await;
        let svc = t.user_token("svc", &[]).await;
        let sub = t
            .subscribe(&svc, "node", "?subscriber_id=svc:restart")
            .await;
        let nodes = make_events(&t, &svc, 2).await;
        let (_, e0) = t.listen(&svc, sub, "").await;
        let (_, _e1) = t.listen(&svc, sub, "").await; // acks e0; e1 delivered, not acked
        (svc, e0, nodes)
    };
    // A new app over the same SQLite file.
    let t = app_in(dir.clone(), config(|_| {})).await;
    let late = t
        .create_node(&token, node("checkout", "after-restart"))
        .await;
    let sub = t
        .subscribe(&token, "node", "?subscriber_id=svc:restart")
        .await;
    let (_, e1) = t.listen(&token, sub, "").await;
    assert_eq!(
        e1["data"]["id"], nodes[1]["id"],
        "resumes strictly after the last ack"
    );
    assert!(e1["sequenceid"].as_u64() > e0["sequenceid"].as_u64());
    let (_, e2) = t.listen(&token, sub, "").await;
    assert_eq!(e2["data"]["id"], late["id"]);
}

#[tokio::test]
async fn update_events_carry_previous_state() {
    let t = app().await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "node", "").await;
    let n = t.create_node(&alice, node("test", "transitions")).await;
    let id = n["id"].as_str().unwrap();
    t.patch_as(
        &alice,
        &format!("/node/{id}"),
        &json!({"state": "available", "result": "pass"}),
    )
    .await;
    t.put_as(&alice, &format!("/node/{id}"), &json!({"kind": "test", "name": "transitions", "path": [], "state": "done", "result": "fail"})).await;
    let (_, c) = t.listen(&alice, sub, "").await;
    assert_eq!(c["data"]["op"], "created");
    assert!(c["data"].get("previous_state").is_none());
    let (_, p) = t.listen(&alice, sub, "").await;
    assert_eq!(
        (p["data"]["op"].as_str(), p["data"]["state"].as_str()),
        (Some("updated"), Some("available"))
    );
    assert_eq!(p["data"]["previous_state"], "running");
    assert_eq!(p["data"]["previous_result"], Value::Null);
    let (_, u) = t.listen(&alice, sub, "").await;
    assert_eq!(u["data"]["state"], "done");
    assert_eq!(u["data"]["previous_state"], "available");
    assert_eq!(u["data"]["previous_result"], "pass");
}

#[tokio::test]
async fn behind_retention_is_an_explicit_error() {
    let t = app().await;
    let svc = t.user_token("svc", &[]).await;
    let sub = t.subscribe(&svc, "node", "?subscriber_id=svc:slow").await;
    make_events(&t, &svc, 3).await;
    let (_, _e0) = t.listen(&svc, sub, "").await;
    t.req("POST", &format!("/unsubscribe/{sub}"))
        .token(&svc)
        .send()
        .await;
    let purged = t
        .store
        .purge_events(Timestamp::now().plus_secs(60))
        .await
        .unwrap();
    assert!(purged >= 3, "{purged}");
    let sub2 = t.subscribe(&svc, "node", "?subscriber_id=svc:slow").await;
    let r = t.get_as(&svc, &format!("/listen/{sub2}")).await;
    assert_eq!(r.status, 410, "{}", r.text());
    assert!(r.detail().is_string(), "{}", r.text());
    // A fresh subscription starts at the end of the log and works.
    let fresh = t.subscribe(&svc, "node", "").await;
    let n = t.create_node(&svc, node("checkout", "after-purge")).await;
    let (_, e) = t.listen(&svc, fresh, "").await;
    assert_eq!(e["data"]["id"], n["id"]);
}

#[tokio::test]
async fn a_pending_listen_does_not_block_other_calls() {
    let t = app_with(|c| c.cloud_events_source = "https://ci.example.org/".into()).await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "node", "").await;
    let listen_path = format!("/listen/{sub}");
    let pending = t.get_as(&alice, &listen_path);
    let others = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stats = tokio::time::timeout(
            Duration::from_secs(3),
            t.get_as(&t.admin, "/stats/subscriptions"),
        )
        .await
        .expect("stats answers while a listen waits");
        assert_eq!(stats.status, 200);
        let ack = tokio::time::timeout(
            Duration::from_secs(3),
            t.post_as(&alice, &format!("/ack/{sub}"), &json!({"sequence_id": 0})),
        )
        .await
        .expect("ack answers while a listen waits");
        assert_eq!(ack.status, 200);
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            t.req("POST", &format!("/unsubscribe/{sub}"))
                .token(&alice)
                .send(),
        )
        .await
        .expect("unsubscribe answers while a listen waits");
        assert_eq!(r.status, 200);
    };
    let (listened, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(pending, others)
    })
    .await
    .expect("the pending listen ends once its subscription is gone");
    // The subscription went away under the listen: it is not found any more.
    assert_eq!(listened.status, 404, "{}", listened.text());
}

#[tokio::test]
async fn beep_uses_the_configured_source() {
    let t = app_with(|c| {
        c.keep_alive_period = 1;
        c.cloud_events_source = "https://ci.example.org/".into();
    })
    .await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "node", "").await;
    let (_, ev) = t.listen(&alice, sub, "").await;
    assert_eq!(ev["data"], "BEEP");
    assert_eq!(ev["source"], "https://ci.example.org/");
    let n = t.create_node(&alice, node("checkout", "src")).await;
    let (_, ev) = t.listen(&alice, sub, "").await;
    assert_eq!(ev["data"]["id"], n["id"]);
    assert_eq!(ev["source"], "https://ci.example.org/");
}

/// Whether `id` is a hyphenated UUID of version 4 (RFC 9562 variant).
fn is_uuid_v4(id: &Value) -> bool {
    id.as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .is_some_and(|u| {
            u.get_version_num() == 4
                && u.get_variant() == uuid::Variant::RFC4122
                && u.hyphenated().to_string() == id.as_str().unwrap_or_default()
        })
}

#[tokio::test]
async fn live_event_ids_are_uuid4_and_replays_keep_them() {
    let t = app().await;
    let svc = t.user_token("svc", &[]).await;
    let sub = t.subscribe(&svc, "node", "?subscriber_id=svc:ids").await;
    let nodes = make_events(&t, &svc, 2).await;
    let (_, e0) = t.listen(&svc, sub, "").await;
    let (_, e1) = t.listen(&svc, sub, "").await; // acks e0
    assert!(is_uuid_v4(&e0["id"]), "live id {} is a uuid4", e0["id"]);
    assert!(is_uuid_v4(&e1["id"]), "live id {} is a uuid4", e1["id"]);
    assert_ne!(e0["id"], e1["id"]);
    // The sequence number is a CloudEvents-named extension attribute.
    assert!(e0["sequenceid"].as_u64().is_some(), "{e0}");
    assert!(e0.get("_sequence_id").is_none(), "{e0}");
    // A replay (re-subscribe with the unacknowledged e1 pending) keeps the same uuid.
    t.req("POST", &format!("/unsubscribe/{sub}"))
        .token(&svc)
        .send()
        .await;
    let sub2 = t.subscribe(&svc, "node", "?subscriber_id=svc:ids").await;
    let (_, again) = t.listen(&svc, sub2, "").await;
    assert_eq!(again["data"]["id"], nodes[1]["id"]);
    assert_eq!(again["id"], e1["id"]);
    // A promiscuous fire-and-forget subscriber sees the same id for the same event.
    let other = t.user_token("other", &[]).await;
    let psub = t.subscribe(&other, "node", "?promisc=true").await;
    let n = t.create_node(&svc, node("checkout", "third")).await;
    let (_, live) = t.listen(&svc, sub2, "").await;
    let (_, seen) = t.listen(&other, psub, "").await;
    assert_eq!(live["data"]["id"], n["id"]);
    assert_eq!(seen["id"], live["id"]);
    assert!(is_uuid_v4(&seen["id"]));
}

#[tokio::test]
async fn publish_keeps_the_given_id_time_and_specversion() {
    let t = app().await;
    let alice = t.user_token("alice", &[]).await;
    let sub = t.subscribe(&alice, "test_channel", "").await;
    let r = t
        .post_as(
            &alice,
            "/publish/test_channel",
            &json!({"data": {"n": 1}, "attributes": {
                "id": "my-event-1", "time": "2024-01-04T10:48:39.974782+00:00",
                "specversion": "1.0", "kind": "x"}}),
        )
        .await;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    let (msg, ev) = t.listen(&alice, sub, "").await;
    assert_eq!(ev["id"], "my-event-1");
    assert_eq!(ev["time"], "2024-01-04T10:48:39.974782+00:00");
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["kind"], "x");
    assert_eq!(ev["owner"], "alice");
    assert!(ev["sequenceid"].as_u64().is_some());
    // Upstream's key order: the given attributes do not move the core ones.
    assert!(
        msg["data"]
            .as_str()
            .unwrap()
            .starts_with("{\"specversion\": \"1.0\", \"id\": \"my-event-1\", \"source\": "),
        "{}",
        msg["data"]
    );
    // Without attributes: a fresh uuid4 and the current time.
    t.post_as(&alice, "/publish/test_channel", &json!({"data": {"n": 2}}))
        .await;
    let (_, ev) = t.listen(&alice, sub, "").await;
    assert!(is_uuid_v4(&ev["id"]), "{}", ev["id"]);
    assert!(ev["time"].as_str().unwrap().ends_with("+00:00"));
    // Attributes that no CloudEvent client could read are refused, naming the field.
    for (key, bad) in [
        ("id", json!(5)),
        ("time", json!("yesterday")),
        ("specversion", json!(1)),
    ] {
        let r = t
            .post_as(
                &alice,
                "/publish/test_channel",
                &json!({"data": {"n": 3}, "attributes": {key: bad}}),
            )
            .await;
        assert_eq!(r.status, 422, "{key}: {}", r.text());
        assert_eq!(
            r.detail()[0]["loc"],
            json!(["body", "attributes", key]),
            "{}",
            r.text()
        );
    }
}
