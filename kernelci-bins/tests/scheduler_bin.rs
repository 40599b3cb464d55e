//! `kci-scheduler` as a process against a real API server on a loopback port, with the shell
//! runtime built by the registry from the YAML config: a checkout becoming available gets its
//! job node, the job is rendered from a template and started, `/health` answers, and SIGINT
//! stops the service cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kernelci::client::ApiClient;
use kernelci::events::LocalBus;
use kernelci::models::{Node, NodeKind, ResultValue, State};
use kernelci::store::SqliteStore;
use kernelci_server::App;
use kernelci_server::config::ServerConfig;
use serde_json::json;

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_server(dir: &std::path::Path) -> String {
    let store = SqliteStore::open(dir.join("db.sqlite3")).unwrap();
    let config = ServerConfig {
        initial_password: Some("pw".into()),
        keep_alive_period: 1,
        ..ServerConfig::for_tests()
    };
    let app = App::new(
        config,
        Arc::new(store.clone()),
        Arc::new(store),
        Arc::new(LocalBus::new()),
    )
    .unwrap();
    app.bootstrap().await.unwrap();
    let (addr, server) =
        kernelci_server::bind(app, ([127, 0, 0, 1], 0).into(), std::future::pending()).unwrap();
    tokio::spawn(server);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_binary_schedules_a_shell_job() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let url = start_server(dir.path()).await;
    let api = ApiClient::new(&url).unwrap();
    let token = api.login("admin", "pw").await.unwrap();
    let api = api.with_token(token.clone());

    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("config/runtime")).unwrap();
    std::fs::create_dir_all(work.join("pipeline")).unwrap();
    std::fs::write(
        work.join("config/runtime/hello.jinja2"),
        "#!/bin/sh\necho \"hello from {{ name }} on {{ platform_config.name }}\"\n",
    )
    .unwrap();
    std::fs::write(
        work.join("pipeline/pipeline.yaml"),
        format!(
            "api:\n  local:\n    url: {url}\n\
             trees:\n  mainline:\n    url: https://git.example.org/linux.git\n\
             jobs:\n  hello:\n    template: hello.jinja2\n    kind: job\n\
             platforms:\n  shell:\n\
             runtimes:\n  shell:\n    lab_type: shell\n\
             scheduler:\n  - job: hello\n    event: {{channel: node, kind: checkout, state: available}}\n    runtime: {{name: shell}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        work.join("kernelci.toml"),
        format!(
            "[DEFAULT]\napi_config = \"local\"\n\n[scheduler]\noutput = \"{}\"\n",
            work.join("out").display()
        ),
    )
    .unwrap();
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut service = Service(
        Command::new(env!("CARGO_BIN_EXE_kci-scheduler"))
            .args([
                "-c",
                "pipeline",
                "--runtimes",
                "shell",
                "--name",
                "sched-bin",
            ])
            .args(["--health-port", &health.port().to_string()])
            .current_dir(&work)
            .env("KCI_API_TOKEN", &token)
            .env_remove("KCI_SETTINGS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // Wait until the service is up (its /health answers), then make a checkout available.
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("http://{health}/health")).await
            && r.status() == 200
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "/health never answered 200");
    let mut co = Node::new(NodeKind::Checkout, "checkout");
    co.data = json!({"kernel_revision": {"tree": "mainline", "branch": "master",
        "url": "https://git.example.org/linux.git", "commit": "abc"}})
    .as_object()
    .cloned();
    let mut co = api.create_node(&co).await.unwrap();
    co.state = State::Available;
    co.result = Some(ResultValue::Pass);
    api.update_node(&co, false).await.unwrap();

    let parent = co.id.unwrap().to_string();
    let mut job = None;
    for _ in 0..100 {
        let kids = api
            .find_all_nodes(&[("parent", parent.as_str())])
            .await
            .unwrap();
        if let Some(n) = kids
            .into_iter()
            .find(|n| n.data.as_ref().is_some_and(|d| d.contains_key("job_id")))
        {
            job = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = job.expect("the scheduler created and submitted the job");
    let data = job.data.as_ref().unwrap();
    assert_eq!(job.name, "hello");
    assert_eq!(data["runtime"], "shell");
    assert_eq!(data["platform"], "shell");
    assert!(
        data["job_id"].as_str().unwrap().parse::<u32>().is_ok(),
        "the shell job id is a pid: {data:?}"
    );
    // The definition copy kept under [scheduler] output.
    let copy = work
        .join("out")
        .join(job.id.unwrap().to_string())
        .join("hello");
    let copy = std::fs::read_to_string(&copy)
        .or_else(|_| std::fs::read_to_string(copy.with_extension("sh")))
        .unwrap_or_default();
    assert!(copy.contains("hello from hello on shell"), "{copy:?}");

    // SIGINT stops it cleanly.
    let pid = service.0.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = service.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.expect("kci-scheduler stopped after SIGINT");
    assert!(status.success(), "{status:?}");
}
