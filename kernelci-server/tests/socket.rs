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
    if kernelci::testsuite::peers::PYTHON3
        .find("python3")
        .is_none()
    {
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

/// A multipart upload of `name` (content `data`) into `dir`, as `kernelci::storage::HttpStorage`
/// sends it.
async fn upload(base: &str, auth: Option<&str>, dir: &str, name: &str, data: &str) -> (u16, Value) {
    let body = format!(
        "--XkciB\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n{dir}\r\n\
         --XkciB\r\nContent-Disposition: form-data; name=\"file0\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{data}\r\n--XkciB--\r\n"
    );
    let mut req = client()
        .post(format!("{base}/storage/upload"))
        .header("content-type", "multipart/form-data; boundary=XkciB")
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.expect("upload");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_uploads_need_the_storage_token_and_nothing_else() {
    // Without --storage-token: read-only. Files are served; no upload is accepted, not even
    // with a valid API token (the token is a secret of its own, as `kci up` hands it to jobs).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.txt"), "hi").expect("write");
    let root = dir.path().to_path_buf();
    let (t, _s, base) = started(move |c| c.storage_dir = Some(root)).await;
    let r = client()
        .get(format!("{base}/storage/hello.txt"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("text"), "hi");
    let api = format!("Bearer {}", t.admin);
    for auth in [None, Some(api.as_str()), Some("Bearer "), Some("")] {
        let (status, body) = upload(&base, auth, "logs", "a.txt", "x").await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert_eq!(
            body["detail"],
            "uploads are disabled: the server has no storage token (--storage-token, KCI_STORAGE_TOKEN)"
        );
    }
    assert!(!dir.path().join("logs/a.txt").exists());

    // With a storage token: that token, and only it.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let (t, _s, base) = started(move |c| {
        c.storage_dir = Some(root);
        c.storage_token = Some("st-secret".into());
    })
    .await;
    let api = format!("Bearer {}", t.admin);
    for auth in [None, Some(api.as_str()), Some("Bearer st-secreT")] {
        let (status, body) = upload(&base, auth, "logs", "a.txt", "x").await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert_eq!(body["detail"], "missing or invalid token");
    }
    let (status, body) = upload(&base, Some("Bearer st-secret"), "logs", "a.txt", "data").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("logs/a.txt")).expect("uploaded"),
        "data"
    );
}
