//! The API client and the `Listener` against a real server on a loopback port: every client
//! call, the listener across a server restart, and across a network cut (a TCP proxy that
//! drops connections).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kernelci::client::{ApiClient, Hierarchy, Listener, ListenerConfig, NodeEventFilter};
use kernelci::models::{Node, NodeKind, NodePatch, ObjectId, ResultValue, State};
use serde_json::json;
use support::{ADMIN_PASSWORD, TestServer};
use tokio::net::{TcpListener, TcpStream};

async fn admin(server: &TestServer) -> ApiClient {
    let api = ApiClient::new(&server.url())
        .unwrap()
        .with_retries(3, Duration::from_millis(50));
    let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    api.with_token(token)
}

fn checkout(commit: &str) -> Node {
    let mut n = Node::new(NodeKind::Checkout, "checkout");
    n.data =
        json!({"kernel_revision": {"tree": "mainline", "url": "https://git.example.org/linux.git",
        "branch": "master", "commit": commit}})
        .as_object()
        .cloned();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("db.sqlite3"),
        "127.0.0.1:0".parse().unwrap(),
        45,
    )
    .await;
    let api = admin(&server).await;

    // Users, groups, invites, tokens.
    let me = api.whoami().await.unwrap();
    assert!(me.is_superuser);
    assert_eq!(api.get_user(me.id).await.unwrap().username, "admin");
    let group = api.create_group("testers").await.unwrap();
    assert_eq!(
        api.find_groups(&[("name", "testers")]).await.unwrap().total,
        1
    );
    let invite = api
        .invite("alice", "alice@example.org", &["testers"], false, true)
        .await
        .unwrap();
    let invite_token = invite["token"].as_str().unwrap();
    let alice = api.accept_invite(invite_token, "alice-pw").await.unwrap();
    assert!(alice.is_verified);
    assert_eq!(alice.groups[0].name, "testers");
    let anon = ApiClient::new(&server.url()).unwrap();
    let alice_api = anon
        .clone()
        .with_token(anon.login("alice", "alice-pw").await.unwrap());
    assert_eq!(alice_api.whoami().await.unwrap().username, "alice");
    alice_api
        .update_password("alice", "alice-pw", "alice-pw2")
        .await
        .unwrap();
    let err = anon.login("alice", "alice-pw").await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("LOGIN_BAD_CREDENTIALS"), "{err}");
    assert_eq!(
        api.find_users(&[("username", "alice")])
            .await
            .unwrap()
            .total,
        1
    );
    let updated = api
        .update_user(
            alice.id,
            &json!({"is_superuser": false, "username": "alice2"}),
        )
        .await
        .unwrap();
    assert_eq!(updated.username, "alice2");
    let me2 = alice_api
        .update_me(&json!({"username": "alice"}))
        .await
        .unwrap();
    assert_eq!(me2.username, "alice");
    let tok = api.create_token("ci-bot", Some(3600)).await.unwrap();
    let bot = anon
        .clone()
        .with_token(tok["access_token"].as_str().unwrap());
    assert_eq!(bot.whoami().await.unwrap().username, "admin");
    api.revoke_token(tok["jti"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        bot.whoami().await.unwrap_err().status(),
        Some(401),
        "revoked token refused"
    );

    // Nodes.
    let root = api.create_node(&checkout("c1")).await.unwrap();
    let root_id = root.id.unwrap();
    assert_eq!(
        api.get_node(root_id).await.unwrap().unwrap().name,
        "checkout"
    );
    assert!(api.get_node(ObjectId::new()).await.unwrap().is_none());
    for i in 0..130 {
        let mut n = Node::new(NodeKind::Kbuild, format!("kbuild-{i}"));
        n.parent = Some(root_id);
        api.create_node(&n).await.unwrap();
    }
    let all = api.find_all_nodes(&[("kind", "kbuild")]).await.unwrap();
    assert_eq!(all.len(), 130, "paging follows every page");
    assert_eq!(
        api.count_nodes(&[("parent", &root_id.to_hex())])
            .await
            .unwrap(),
        130
    );
    assert_eq!(
        api.find_nodes_fast(&[("kind", "kbuild"), ("limit", "7")])
            .await
            .unwrap()
            .len(),
        7
    );
    assert_eq!(
        api.find_nodes(&[("parent", "null")]).await.unwrap().total,
        1
    );
    let patched = api
        .patch_node(
            root_id,
            &serde_json::from_value::<NodePatch>(json!({"state": "available"})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(patched.state, State::Available);
    let done = api
        .set_state(root_id, State::Done, Some(ResultValue::Pass))
        .await
        .unwrap();
    assert_eq!(done.result, Some(ResultValue::Pass));
    let back = api
        .set_state(root_id, State::Running, None)
        .await
        .unwrap_err();
    assert_eq!(back.status(), Some(400));
    assert!(
        back.to_string()
            .contains("Transition not allowed with state: running"),
        "{back}"
    );
    assert_eq!(
        api.wait_for_state(root_id, State::Done, Duration::from_secs(2))
            .await
            .unwrap()
            .state,
        State::Done
    );
    assert_eq!(
        api.bulk_set(&[root_id], "processed_by_kcidb_bridge", "True")
            .await
            .unwrap(),
        1
    );

    // A result hierarchy.
    let job = api
        .create_node(&Node::new(NodeKind::Job, "baseline"))
        .await
        .unwrap();
    let mut job_done = job.clone();
    job_done.state = State::Done;
    job_done.result = Some(ResultValue::Fail);
    let mut case = Node::new(NodeKind::Test, "login");
    case.result = Some(ResultValue::Fail);
    let written = api
        .submit_results(&Hierarchy {
            node: job_done,
            child_nodes: vec![Hierarchy {
                node: case,
                child_nodes: vec![],
            }],
        })
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    assert_eq!(written[1].parent, job.id);

    // Events, pub/sub, lists, key/value, telemetry, metrics.
    let events = api
        .events(&[("kind", "job"), ("limit", "10")])
        .await
        .unwrap();
    assert!(events.iter().any(|e| e["data"]["is_hierarchy"] == true));
    let sub = api.subscribe("test_channel", false, None).await.unwrap();
    api.publish("test_channel", &json!({"hello": "world"}), None)
        .await
        .unwrap();
    let msg = api
        .listen_raw(sub.id, None, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        msg["data"]
            .as_str()
            .unwrap()
            .contains("\"hello\": \"world\"")
    );
    api.unsubscribe(sub.id).await.unwrap();
    api.push("jobs", &json!({"n": 1})).await.unwrap();
    let item = api.pop("jobs", Duration::from_secs(5)).await.unwrap();
    assert_eq!(item["data"]["n"], 1);
    assert!(api.subscription_stats().await.unwrap().is_empty());
    api.set_kv("ns", "k", "v").await.unwrap();
    assert_eq!(api.get_kv("ns", "k").await.unwrap().as_deref(), Some("v"));
    api.delete_kv("ns", "k").await.unwrap();
    assert_eq!(api.get_kv("ns", "k").await.unwrap(), None);
    let n = api
        .add_telemetry(&[json!({"kind": "job_result", "runtime": "lava-x", "device_type": "qemu", "result": "fail"})])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        api.find_telemetry(&[("runtime", "lava-x")])
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(
        api.telemetry_stats(&[("group_by", "runtime")])
            .await
            .unwrap()[0]["fail"],
        1
    );
    assert!(
        api.telemetry_anomalies(&[("min_total", "1")])
            .await
            .unwrap()["result_anomalies"]
            .is_array()
    );
    assert!(api.metrics().await.unwrap().contains("http_requests_total"));
    api.delete_group(group.id)
        .await
        .expect_err("assigned group cannot be deleted");
    api.delete_user(alice.id).await.unwrap();
    api.delete_group(group.id).await.unwrap();
    api.logout().await.unwrap();
    assert_eq!(
        api.whoami().await.unwrap_err().status(),
        Some(401),
        "logout revokes the token"
    );
    server.stop().await;
}

/// Creates `n` nodes named `prefix-i`.
async fn create_nodes(api: &ApiClient, prefix: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        api.create_node(&Node::new(NodeKind::Test, &name))
            .await
            .unwrap();
        names.push(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let server = TestServer::start(&db, "127.0.0.1:0".parse().unwrap(), 1).await;
    let addr = server.addr;
    let api = admin(&server)
        .await
        .with_retries(0, Duration::from_millis(10));
    let config = ListenerConfig::new("node")
        .durable("test:node")
        .promiscuous();
    let mut listener = Listener::new(api.clone(), config);
    // Subscribe (and so fix the position) before anything happens.
    listener.start().await.unwrap();
    let first = create_nodes(&api, "before", 1).await;
    let ev = listener.next().await.unwrap();
    assert_eq!(ev.node_event().unwrap().name, first[0]);
    listener.ack(&ev);
    let mut seen = vec![ev.node_event().unwrap().name];
    let mut seqs = BTreeSet::from([ev.sequence_id().unwrap()]);

    create_nodes(&api, "a", 3).await;
    for _ in 0..2 {
        let ev = listener.next().await.unwrap();
        assert!(
            seqs.insert(ev.sequence_id().unwrap()),
            "no duplicate after ack"
        );
        seen.push(ev.node_event().unwrap().name);
        listener.ack(&ev);
    }
    // One event was delivered but its handler "failed": not acknowledged.
    let unacked = listener.next().await.unwrap();
    assert_eq!(unacked.node_event().unwrap().name, "a-2");

    // Restart the server on the same port and database while the listener is waiting in a
    // long poll, then write new events.
    let restarter = async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let server = TestServer::start(&db, addr, 1).await;
        let api2 = admin(&server).await;
        create_nodes(&api2, "b", 3).await;
        server
    };
    let reader = async {
        let mut after = Vec::new();
        while after.len() < 4 {
            let ev = listener.next().await.unwrap();
            after.push(ev.node_event().unwrap().name);
            listener.ack(&ev);
        }
        after
    };
    let (server, after) = tokio::join!(restarter, reader);
    assert_eq!(
        after,
        vec!["a-2", "b-0", "b-1", "b-2"],
        "the unacknowledged event comes again, then the rest, in order"
    );
    let health = listener.health();
    assert!(health.reconnects >= 1, "{health:?}");
    assert!(health.connected);
    assert_eq!(seen, vec!["before-0", "a-0", "a-1"]);
    listener.close().await.unwrap();
    server.stop().await;
}

/// A TCP proxy that can cut every connection, and refuse new ones while cut.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (cut2, gen2) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if cut2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut rx = gen2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            generation,
        }
    }

    fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
        if on {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_survives_a_network_cut() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("db.sqlite3"),
        "127.0.0.1:0".parse().unwrap(),
        1,
    )
    .await;
    let direct = admin(&server).await;
    let proxy = Proxy::start(server.addr).await;
    let via_proxy = ApiClient::new(&format!("http://{}", proxy.addr))
        .unwrap()
        .with_token(direct.token().unwrap())
        .with_retries(0, Duration::from_millis(10));
    let filter = NodeEventFilter {
        kind: vec!["test".into()],
        ..Default::default()
    };
    let mut listener = Listener::new(
        via_proxy,
        ListenerConfig::new("node")
            .durable("cut:node")
            .filter(filter),
    );
    listener.start().await.unwrap();
    let mut got = Vec::new();
    create_nodes(&direct, "x", 1).await;
    let ev = listener.next().await.unwrap();
    got.push(ev.node_event().unwrap().name);
    listener.ack(&ev);

    // Cut the network while a long poll is pending, write events, then restore it.
    let cutter = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut(true);
        direct
            .create_node(&Node::new(NodeKind::Kbuild, "filtered-out"))
            .await
            .unwrap();
        create_nodes(&direct, "y", 3).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.cut(false);
    };
    let reader = async {
        let mut names = Vec::new();
        while names.len() < 3 {
            let ev = listener.next().await.unwrap();
            names.push(ev.node_event().unwrap().name);
            listener.ack(&ev);
        }
        names
    };
    let ((), names) = tokio::join!(cutter, reader);
    got.extend(names);
    assert_eq!(
        got,
        vec!["x-0", "y-0", "y-1", "y-2"],
        "every event once, in order, filter applied"
    );
    assert!(listener.health().reconnects >= 1);
    server.stop().await;
}

/// How many `/listen` calls the server answered with 200 (from its `/metrics`).
async fn listens_answered(server: &TestServer) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("kernelci_http_requests_total{method=\"GET\",route=\"/listen/"))
        .filter(|l| l.contains("status=\"200\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_catches_up_in_batches_and_redelivers_what_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("db.sqlite3"),
        "127.0.0.1:0".parse().unwrap(),
        1,
    )
    .await;
    let api = admin(&server).await;
    let mut listener = Listener::new(
        api.clone(),
        ListenerConfig::new("node").durable("batch:node").batch(50),
    );
    listener.start().await.unwrap();
    let written = create_nodes(&api, "b", 120).await;
    let before = listens_answered(&server).await;
    let mut got = Vec::new();
    while got.len() < 60 {
        let ev = listener.next().await.unwrap();
        got.push(ev.node_event().unwrap().name);
        listener.ack(&ev);
    }
    // The 61st is handed over and not acknowledged (its handler "failed"): asking again gives
    // it again, then the rest in order, although the batch held the ones after it.
    let failed = listener.next().await.unwrap();
    assert_eq!(failed.node_event().unwrap().name, "b-60");
    while got.len() < 120 {
        let ev = listener.next().await.unwrap();
        got.push(ev.node_event().unwrap().name);
        listener.ack(&ev);
    }
    assert_eq!(got, written, "every event once, in order");
    let polls = listens_answered(&server).await - before;
    assert!(
        (3..=5).contains(&polls),
        "120 events in batches of 50 (plus one re-fetch) took {polls} polls"
    );

    // The same listener polling one event at a time takes one poll per event.
    let mut single = Listener::new(
        api.clone(),
        ListenerConfig::new("node").durable("single:node").batch(1),
    );
    single.start().await.unwrap();
    create_nodes(&api, "s", 5).await;
    let before = listens_answered(&server).await;
    for i in 0..5 {
        let ev = single.next().await.unwrap();
        assert_eq!(ev.node_event().unwrap().name, format!("s-{i}"));
        single.ack(&ev);
    }
    assert_eq!(listens_answered(&server).await - before, 5);
    server.stop().await;
}
