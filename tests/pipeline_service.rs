//! The shared service skeleton against a real API server: the durable subscription
//! `<name>:<channel>` resumes after a restart of the service without losing or repeating
//! events, a failing handler is retried before the acknowledgement, the filter (ops and kinds)
//! applies, shutdown finishes the event in hand, and `/health` answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kernelci::client::{ApiClient, ReceivedEvent};
use kernelci::models::{Node, NodeKind};
use kernelci::pipeline::service::{
    EventHandler, EventSubscription, ServiceContext, ServiceError, ServiceResult, async_trait,
};
use support::{ADMIN_PASSWORD, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn admin(server: &TestServer) -> ApiClient {
    let api = ApiClient::new(&server.url())
        .unwrap()
        .with_retries(3, Duration::from_millis(50));
    let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    api.with_token(token)
}

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    failures_left: Arc<Mutex<u32>>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&mut self, ctx: &ServiceContext, event: &ReceivedEvent) -> ServiceResult<()> {
        let node = ctx.event_node(event).await?.unwrap();
        if node.name == "flaky" {
            let mut left = self.failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(ServiceError::Invalid("not yet".into()));
            }
        }
        self.seen.lock().unwrap().push(node.name.clone());
        Ok(())
    }
}

async fn wait_for(rec: &Recorder, n: usize) {
    for _ in 0..200 {
        if rec.seen.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {:?} seen", rec.seen.lock().unwrap());
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscription_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("db.sqlite3"),
        "127.0.0.1:0".parse().unwrap(),
        2,
    )
    .await;
    let api = admin(&server).await;
    // Register the durable position before anything happens.
    let sub = api
        .subscribe("node", false, Some("svc:node"))
        .await
        .unwrap();
    api.unsubscribe(sub.id).await.unwrap();

    let subscription = || {
        let mut s = EventSubscription::node()
            .ops(&["created"])
            .kinds(&["checkout"]);
        s.retry_delay = Duration::from_millis(20);
        s
    };
    for name in ["a", "flaky", "b"] {
        api.create_node(&Node::new(NodeKind::Checkout, name))
            .await
            .unwrap();
    }
    // Not accepted: another kind.
    api.create_node(&Node::new(NodeKind::Kbuild, "kbuild"))
        .await
        .unwrap();

    let rec = Recorder::default();
    *rec.failures_left.lock().unwrap() = 2;
    let ctx = ServiceContext::new("svc", api.clone());
    let health = ctx
        .serve_health_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (ctx2, mut rec2) = (ctx.clone(), rec.clone());
    let task = tokio::spawn(async move { ctx2.run_events(subscription(), &mut rec2).await });
    wait_for(&rec, 3).await;
    assert_eq!(*rec.seen.lock().unwrap(), ["a", "flaky", "b"]);
    assert_eq!(*rec.failures_left.lock().unwrap(), 0, "retried twice");
    let reply = http_get(health, "/health").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("OK"), "{reply}");

    // An update (op=updated) is not accepted.
    let mut a = api
        .find_nodes(&[("name", "a")])
        .await
        .unwrap()
        .items
        .remove(0);
    a.state = kernelci::models::State::Available;
    api.update_node(&a, false).await.unwrap();
    ctx.shutdown().trigger();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();

    // While the service is down.
    api.create_node(&Node::new(NodeKind::Checkout, "c"))
        .await
        .unwrap();

    let rec3 = Recorder::default();
    let ctx3 = ServiceContext::new("svc", api.clone());
    let (ctx4, mut rec4) = (ctx3.clone(), rec3.clone());
    let task = tokio::spawn(async move { ctx4.run_events(subscription(), &mut rec4).await });
    wait_for(&rec3, 1).await;
    api.create_node(&Node::new(NodeKind::Checkout, "d"))
        .await
        .unwrap();
    wait_for(&rec3, 2).await;
    ctx3.shutdown().trigger();
    task.await.unwrap().unwrap();
    assert_eq!(
        *rec3.seen.lock().unwrap(),
        ["c", "d"],
        "resumes after the acknowledged position: nothing lost, nothing repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_keeps_failing_skips_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("db.sqlite3"),
        "127.0.0.1:0".parse().unwrap(),
        2,
    )
    .await;
    let api = admin(&server).await;
    let sub = api.subscribe("node", false, Some("p:node")).await.unwrap();
    api.unsubscribe(sub.id).await.unwrap();
    api.create_node(&Node::new(NodeKind::Checkout, "flaky"))
        .await
        .unwrap();
    api.create_node(&Node::new(NodeKind::Checkout, "after"))
        .await
        .unwrap();
    let rec = Recorder::default();
    *rec.failures_left.lock().unwrap() = 100;
    let ctx = ServiceContext::new("p", api.clone());
    let mut s = EventSubscription::node();
    s.retry_delay = Duration::from_millis(10);
    s.max_attempts = 3;
    let (ctx2, mut rec2) = (ctx.clone(), rec.clone());
    let task = tokio::spawn(async move { ctx2.run_events(s, &mut rec2).await });
    wait_for(&rec, 1).await;
    ctx.shutdown().trigger();
    task.await.unwrap().unwrap();
    assert_eq!(*rec.seen.lock().unwrap(), ["after"]);
    assert_eq!(*rec.failures_left.lock().unwrap(), 97, "three attempts");
}

fn offline_api() -> ApiClient {
    support::init_tls();
    ApiClient::new("http://127.0.0.1:9").unwrap()
}

#[tokio::test]
async fn health_endpoint_reports_stuck_loops() {
    use kernelci::pipeline::service::Liveness;
    let ctx = ServiceContext::new("t", offline_api())
        .with_liveness(Liveness::new(Duration::from_millis(40)));
    let addr = ctx
        .serve_health_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    ctx.liveness().register("loop");
    let ok = http_get(addr, "/health").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nOK"), "{ok}");
    assert!(http_get(addr, "/other").await.starts_with("HTTP/1.1 404"));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let stuck = http_get(addr, "/health").await;
    assert!(stuck.starts_with("HTTP/1.1 503"), "{stuck}");
    assert!(stuck.contains("loop stuck"), "{stuck}");
    ctx.liveness().beat("loop");
    assert!(http_get(addr, "/health").await.starts_with("HTTP/1.1 200"));
    ctx.shutdown().trigger();
}

#[tokio::test]
async fn periodic_runs_once_with_zero_period_and_stops_on_shutdown() {
    let ctx = ServiceContext::new("t", offline_api());
    assert_eq!(ctx.subscriber_id("node"), "t:node");
    let mut n = 0;
    ctx.run_periodic("once", Duration::ZERO, || {
        n += 1;
        async { Ok(()) }
    })
    .await
    .unwrap();
    assert_eq!(n, 1);
    let err = ctx
        .run_periodic("once", Duration::ZERO, || async {
            Err(ServiceError::Invalid("boom".into()))
        })
        .await;
    assert!(matches!(err, Err(ServiceError::Invalid(_))));

    let count = Arc::new(Mutex::new(0));
    let c2 = count.clone();
    let ctx2 = ctx.clone();
    let task = tokio::spawn(async move {
        ctx2.run_periodic("loop", Duration::from_millis(10), || {
            let c = c2.clone();
            async move {
                *c.lock().unwrap() += 1;
                Ok(())
            }
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    ctx.shutdown().trigger();
    task.await.unwrap().unwrap();
    assert!(*count.lock().unwrap() >= 2);
    assert!(ctx.liveness().ages().is_empty());
}

/// `Listener::run` with a handler that fails the very first event: the next `/listen` must not
/// acknowledge it (the server's implicit acknowledgement of the last delivery), so it comes
/// again and is handled before the second event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_run_redelivers_a_failed_first_event() {
    use kernelci::client::{Listener, ListenerConfig};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("db.sqlite3"),
        "127.0.0.1:0".parse().unwrap(),
        2,
    )
    .await;
    let api = admin(&server).await;
    let mut listener = Listener::new(
        api.clone(),
        ListenerConfig::new("node").durable("first-fails:node"),
    );
    listener.start().await.unwrap();
    for name in ["first", "second"] {
        api.create_node(&Node::new(NodeKind::Checkout, name))
            .await
            .unwrap();
    }
    let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        listener
            .run(Duration::from_millis(50), move |ev| {
                let seen = seen2.clone();
                async move {
                    let name = ev.event.data["name"].as_str().unwrap_or("").to_owned();
                    let mut s = seen.lock().unwrap();
                    let ok = !s.is_empty();
                    s.push((name, ok));
                    if ok {
                        Ok(())
                    } else {
                        Err("the first attempt fails")
                    }
                }
            })
            .await
    });
    for _ in 0..200 {
        if seen.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    let seen = seen.lock().unwrap().clone();
    let expected =
        [("first", false), ("first", true), ("second", true)].map(|(n, ok)| (n.to_owned(), ok));
    assert_eq!(
        seen, expected,
        "the failed first event must be delivered again (not acknowledged implicitly)"
    );
}
