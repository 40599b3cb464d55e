//! Over a real socket (`kernelci_server::bind` on 127.0.0.1:0 with reqwest): long-poll wake-up
//! across clients, the body limit, graceful shutdown, and upstream's Python client protocol.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, app_with};
use kernelci_server::config::ServerConfig;
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn serve(t: &TestApp) -> Server {
    let (tx, rx) = oneshot::channel::<()>();
    let (addr, fut) = kernelci_server::bind(t.app.clone(), ([127, 0, 0, 1], 0).into(), async {
        let _ = rx.await;
    })
    .expect("bind");
    Server {
        addr,
        stop: Some(tx),
        done: tokio::spawn(fut),
    }
}

fn client() -> reqwest::Client {
    crypto();
    reqwest::Client::builder().build().expect("client")
}

async fn started(tweak: impl FnOnce(&mut ServerConfig)) -> (TestApp, Server, String) {
    let t = app_with(tweak).await;
    let s = serve(&t);
    let base = format!("http://{}", s.addr);
    (t, s, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_woken_by_another_client() {
    let (t, _s, base) = started(|_| {}).await;
    let token = t.user_token("alice", &[]).await;
    let a = client();
    let b = client();
    let sub: Value = a
        .post(format!("{base}/latest/subscribe/node"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sub["id"].as_u64().unwrap();
    let listen = tokio::spawn({
        let a = a.clone();
        let token = token.clone();
        let base = base.clone();
        async move {
            a.get(format!("{base}/latest/listen/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!listen.is_finished(), "listen waits");
    let created: Value = b
        .post(format!("{base}/latest/node"))
        .bearer_auth(&token)
        .json(&json!({"kind": "checkout", "name": "wake", "path": ["wake"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), listen)
        .await
        .expect("woken")
        .unwrap();
    let ev: Value = serde_json::from_str(msg["data"].as_str().unwrap()).unwrap();
    assert_eq!(ev["data"]["id"], created["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let (t, _s, base) = started(|c| c.body_limit = 1024).await;
    let token = t.user_token("alice", &[]).await;
    let c = client();
    let big = json!({"kind": "checkout", "name": "x".repeat(4096), "path": []});
    let r = c
        .post(format!("{base}/latest/node"))
        .bearer_auth(&token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].is_string());
    let r = c
        .post(format!("{base}/latest/node"))
        .bearer_auth(&token)
        .json(&json!({"kind": "checkout", "name": "small", "path": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_requests() {
    let (t, mut s, base) = started(|c| c.keep_alive_period = 2).await;
    let token = t.user_token("alice", &[]).await;
    let c = client();
    let sub: Value = c
        .post(format!("{base}/latest/subscribe/node"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sub["id"].as_u64().unwrap();
    let in_flight = tokio::spawn({
        let c = c.clone();
        let base = base.clone();
        async move {
            c.get(format!("{base}/latest/listen/{id}"))
                .bearer_auth(&token)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.stop.take().unwrap().send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request finished")
        .unwrap()
        .expect("answered, not cut");
    assert_eq!(r.status().as_u16(), 200);
    let msg: Value = r.json().await.unwrap();
    assert!(msg["data"].as_str().unwrap().contains("BEEP"));
    tokio::time::timeout(Duration::from_secs(10), &mut s.done)
        .await
        .expect("server stopped")
        .unwrap();
    // New connections are refused now.
    assert!(
        client()
            .get(format!("{base}/latest/"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_python_client_protocol() {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    if python.is_err() {
        eprintln!(
            "SKIPPED: python3 is not installed; the upstream client compatibility script did not run"
        );
        return;
    }
    let (t, _s, base) = started(|c| c.keep_alive_period = 1).await;
    let token = t.user_token("pyuser", &[]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/upstream_client.py"
    );
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&base)
        .arg(&token)
        .arg("pyuser")
        .arg("pyuser-pass")
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "upstream_client.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ALL OK"), "{stdout}");
    let _ = Arc::clone(&t.app);
}
