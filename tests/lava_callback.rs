//! The LAVA callback receiver against a real API server: the three real LAVA 2023.01
//! callbacks are posted over HTTP, and the job nodes, their result hierarchies and the
//! uploaded logs are checked through the API and the storage directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use kernelci::client::ApiClient;
use kernelci::models::{Node, NodeKind, ResultValue, State};
use kernelci::pipeline::lava_callback::{LabTokens, LavaCallbackConfig, LavaCallbackService};
use kernelci::storage::{LocalStorage, Storage};
use serde_json::{Value, json};
use support::{ADMIN_PASSWORD, TestServer};

const CALLBACK_SECRET: &str = "callback-secret-123";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("kernelci/tests/fixtures/lava")
            .join(name),
    )
    .unwrap()
}

struct Setup {
    _server: TestServer,
    api: ApiClient,
    service: Arc<LavaCallbackService>,
    url: String,
    storage_dir: tempfile::TempDir,
    _db: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn setup() -> Setup {
    let db = tempfile::tempdir().unwrap();
    let server = TestServer::start(&db.path().join("db"), "127.0.0.1:0".parse().unwrap(), 1).await;
    let anon = ApiClient::new(&server.url()).unwrap();
    let api = anon
        .clone()
        .with_token(anon.login("admin", ADMIN_PASSWORD).await.unwrap());
    let storage_dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> =
        Arc::new(LocalStorage::new(storage_dir.path(), "http://storage.test/").unwrap());
    let mut labs = BTreeMap::new();
    labs.insert(
        "lava-local".to_owned(),
        LabTokens {
            runtime_token: Some("rest-token".into()),
            callback_token: Some(CALLBACK_SECRET.into()),
        },
    );
    let service = LavaCallbackService::new(LavaCallbackConfig {
        labs,
        apis: BTreeMap::from([("local".to_owned(), api.clone().into())]),
        default_api: Some("local".into()),
        storages: BTreeMap::from([("local".to_owned(), storage)]),
        default_storage: Some("local".into()),
        workers: 4,
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let svc = service.clone();
    let task = tokio::spawn(async move {
        svc.serve(
            "127.0.0.1:0".parse().unwrap(),
            move |addr| {
                let _ = addr_tx.send(addr);
            },
            async {
                let _ = rx.await;
            },
        )
        .await
    });
    let addr = addr_rx.await.unwrap();
    Setup {
        _server: server,
        api,
        service,
        url: format!("http://{addr}"),
        storage_dir,
        _db: db,
        stop: Some(tx),
        task,
    }
}

async fn job_node(api: &ApiClient, name: &str) -> Node {
    let mut checkout = Node::new(NodeKind::Checkout, "checkout");
    checkout.data.as_mut().unwrap().insert(
        "kernel_revision".into(),
        json!({"tree": "mainline", "branch": "master", "commit": "a".repeat(40),
               "url": "https://git.example/linux.git"}),
    );
    let checkout = api.create_node(&checkout).await.unwrap();
    let mut node = Node::new(NodeKind::Job, name);
    node.parent = checkout.id;
    node.path = vec!["checkout".into(), name.into()];
    let data = node.data.as_mut().unwrap();
    data.insert(
        "kernel_revision".into(),
        checkout.data.as_ref().unwrap()["kernel_revision"].clone(),
    );
    data.insert("platform".into(), json!("qemu"));
    data.insert("runtime".into(), json!("lava-local"));
    api.create_node(&node).await.unwrap()
}

async fn post(url: &str, id: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/node/{id}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.header("authorization", token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn gunzip(path: &std::path::Path) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn complete_callback_becomes_a_result_hierarchy_with_logs() {
    let mut s = setup().await;
    let node = job_node(&s.api, "baseline-x86").await;
    let id = node.id.unwrap().to_string();

    // Wrong and missing tokens are refused before anything is processed.
    let (status, body) = post(&s.url, &id, Some("nope"), fixture("callback-complete.json")).await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "Unauthorized");
    assert_eq!(post(&s.url, &id, None, b"{}".to_vec()).await.0, 401);

    let (status, body) = post(
        &s.url,
        &id,
        Some(CALLBACK_SECRET),
        fixture("callback-complete.json"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["message"], "OK");
    s.service.wait_idle().await;

    let done = s.api.get_node(node.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(done.state, State::Done);
    // The smoke suite has a failing case.
    assert_eq!(done.result, Some(ResultValue::Fail));
    assert_eq!(done.data_str("device"), Some("qemu01"));
    let artifacts = done.artifacts.clone().unwrap();
    let dir = s.storage_dir.path().join(format!("baseline-x86-{id}"));
    assert_eq!(
        artifacts["lava_log"],
        json!(format!("http://storage.test/baseline-x86-{id}/log.txt.gz"))
    );
    assert!(artifacts.contains_key("lava_logs"));
    assert!(artifacts.contains_key("callback_data"));
    let log = gunzip(&dir.join("log.txt.gz"));
    assert!(
        log.contains("Linux version"),
        "{}",
        &log[..300.min(log.len())]
    );
    let stored = gunzip(&dir.join("lava_callback.json.gz"));
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["id"], 1);
    assert!(
        stored.get("token").is_none(),
        "the lab secret is not stored"
    );
    assert!(dir.join("lava-logs.yaml").is_file());

    let children = s
        .api
        .find_all_nodes(&[("parent", id.as_str())])
        .await
        .unwrap();
    let mut names: Vec<&str> = children.iter().map(|n| n.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["setup", "smoke"]);
    let smoke = children.iter().find(|n| n.name == "smoke").unwrap();
    assert_eq!(smoke.result, Some(ResultValue::Fail));
    assert_eq!(smoke.kind, "job");
    let smoke_id = smoke.id.unwrap().to_string();
    let cases = s
        .api
        .find_all_nodes(&[("parent", smoke_id.as_str())])
        .await
        .unwrap();
    assert_eq!(cases.len(), 4);
    let failed = cases.iter().find(|n| n.name == "expected-fail").unwrap();
    assert_eq!(failed.result, Some(ResultValue::Fail));
    assert_eq!(failed.kind, "test");
    assert_eq!(
        failed.path,
        ["checkout", "baseline-x86", "smoke", "expected-fail"]
    );
    assert_eq!(failed.group.as_deref(), Some("baseline-x86"));
    assert_eq!(failed.data_str("kernel_revision.tree"), Some("mainline"));
    assert_eq!(failed.data_str("platform"), Some("qemu"));

    let metrics = reqwest::get(format!("{}/api/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("lava_callback_requests_authfail_total{kind=\"pipeline_callback\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("lava_callback_processed_total{kind=\"pipeline_callback\"} 1"));
    let _ = s.stop.take().unwrap().send(());
    s.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn incomplete_and_canceled_callbacks_carry_their_error_codes() {
    let mut s = setup().await;
    let bad_url = job_node(&s.api, "baseline-x86").await;
    let canceled = job_node(&s.api, "kunit-x86").await;
    for (node, file) in [
        (&bad_url, "callback-incomplete.json"),
        (&canceled, "callback-canceled.json"),
    ] {
        let id = node.id.unwrap().to_string();
        // The REST token is accepted too, as upstream.
        let (status, body) = post(&s.url, &id, Some("rest-token"), fixture(file)).await;
        assert_eq!(status, 202, "{body}");
    }
    // A body that is not a callback is refused at once.
    let id = bad_url.id.unwrap().to_string();
    assert_eq!(
        post(&s.url, &id, Some(CALLBACK_SECRET), b"[1]".to_vec())
            .await
            .0,
        400
    );
    s.service.wait_idle().await;

    let node = s.api.get_node(bad_url.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(node.state, State::Done);
    assert_eq!(node.result, Some(ResultValue::Incomplete));
    assert_eq!(node.data_str("error_code"), Some("Job"));
    assert!(
        node.data_str("error_msg")
            .unwrap()
            .contains("missing-vmlinuz"),
    );

    let node = s.api.get_node(canceled.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(node.state, State::Done);
    assert_eq!(node.result, Some(ResultValue::Incomplete));
    assert_eq!(node.data_str("error_code"), Some("Infrastructure"));
    assert_eq!(
        node.data_str("error_msg"),
        Some("Unknown infrastructure error")
    );
    // No log: no lava_log artifact, but the callback itself is kept.
    let artifacts = node.artifacts.unwrap();
    assert!(!artifacts.contains_key("lava_log"));
    assert!(artifacts.contains_key("callback_data"));
    let _ = s.stop.take().unwrap().send(());
    s.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn no_configured_labs_is_a_server_error() {
    support::init_tls();
    let service = LavaCallbackService::new(LavaCallbackConfig::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let svc = service.clone();
    let task = tokio::spawn(async move {
        svc.serve(
            "127.0.0.1:0".parse().unwrap(),
            move |addr| {
                let _ = addr_tx.send(addr);
            },
            async {
                let _ = rx.await;
            },
        )
        .await
    });
    let url = format!("http://{}", addr_rx.await.unwrap());
    let (status, body) = post(&url, "65a1b2c3d4e5f60718293a4b", Some("x"), b"{}".to_vec()).await;
    assert_eq!(status, 500);
    assert_eq!(body["message"], "No tokens configured");
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(page.contains("KernelCI Pipeline Callback"));
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
