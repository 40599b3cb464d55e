//! DESIGN §6 on the wire: two server processes on one database with a durable subscriber
//! moving between them; every event arrives, in order, at least once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use kernelci::client::{ApiClient, Listener, ListenerConfig};
use kernelci::models::{Node, NodeKind};
use support::{ADMIN_PASSWORD, TestServer};

async fn api(server: &TestServer) -> ApiClient {
    let api = ApiClient::new(&server.url())
        .unwrap()
        .with_retries(2, Duration::from_millis(50));
    let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    api.with_token(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscriber_moves_between_two_servers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.sqlite3");
    let a = TestServer::start(&db, "127.0.0.1:0".parse().unwrap(), 1).await;
    let b = TestServer::start(&db, "127.0.0.1:0".parse().unwrap(), 1).await;
    let (api_a, api_b) = (api(&a).await, api(&b).await);

    let config = ListenerConfig::new("node")
        .durable("mover:node")
        .promiscuous();
    let mut on_a = Listener::new(api_a.clone(), config.clone());
    on_a.start().await.unwrap();
    // Writes go to both servers, interleaved.
    for i in 0..10 {
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        api.create_node(&Node::new(NodeKind::Test, format!("n-{i}")))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = on_a.next().await.unwrap();
        seen.push(ev.node_event().unwrap().name);
        on_a.ack(&ev);
    }
    // Hand over the position explicitly, then continue on the other server.
    on_a.close().await.unwrap();
    let mut on_b = Listener::new(api_b.clone(), config);
    for _ in 0..6 {
        let ev = on_b.next().await.unwrap();
        seen.push(ev.node_event().unwrap().name);
        on_b.ack(&ev);
    }
    let want: Vec<String> = (0..10).map(|i| format!("n-{i}")).collect();
    assert_eq!(seen, want, "every event once, in order, across the move");
    // Sequence numbers are global: both servers' events share one order.
    let events = api_b.events(&[("channel", "node")]).await.unwrap();
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_id"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    a.stop().await;
    b.stop().await;
}
