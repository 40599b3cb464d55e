//! The job runner against the real API server (`TestServer`) and `LocalStorage` served over
//! HTTP: a kbuild of a tiny kernel-style tree (pass, fail), a KTAP test job with one failure,
//! infrastructure errors, dry runs, and the whole path through `ShellRuntime` and the `kci`
//! binary (`kci job run` called by the shipped templates).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kernelci::client::ApiClient;
use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, State, Timestamp};
use kernelci::pipeline::jobrunner::JobRunner;
use kernelci::runtime::{
    JobSpec, JobStatus, RuntimeContext, RuntimeCredentials, RuntimeEntry, RuntimeRegistry,
    TemplateEngine,
};
use kernelci::storage::{LocalStorage, Storage, UploadFile};
use kernelci::testsuite::peers::KCI;
use serde_json::{Map, Value, json};
use support::{ADMIN_PASSWORD, TestServer};

const MAKEFILE: &str = "\
VERSION = 6
PATCHLEVEL = 9
SUBLEVEL = 0
EXTRAVERSION = -rc1
NAME = Tiny Tree

ARCH ?= x86

all: .config
\t@echo \"  CC      init/main.o\"
\t@if grep -q CONFIG_BROKEN=y .config; then echo 'init/main.c:1: error: broken' >&2; exit 2; fi
\tmkdir -p arch/$(ARCH)/boot
\tprintf 'kernel %s.%s.%s%s\\n' $(VERSION) $(PATCHLEVEL) $(SUBLEVEL) '$(EXTRAVERSION)' > arch/$(ARCH)/boot/bzImage

%_defconfig:
\t@test -f arch/$(ARCH)/configs/$@ || { echo \"no defconfig $@\"; exit 2; }
\tcp arch/$(ARCH)/configs/$@ .config

.PHONY: all
";

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    server: TestServer,
    api: ApiClient,
    token: String,
    storage: Arc<LocalStorage>,
    storage_config: Value,
    files: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.files.abort();
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let server =
        TestServer::start(&root.join("db.sqlite3"), "127.0.0.1:0".parse().unwrap(), 45).await;
    let api = ApiClient::new(&server.url())
        .unwrap()
        .with_retries(2, Duration::from_millis(50));
    let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    let api = api.with_token(token.clone());
    // Storage: a local directory, served read-only over HTTP like a file server.
    let store = root.join("storage");
    std::fs::create_dir_all(&store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let files = tokio::spawn(
        warp::serve(warp::fs::dir(store.clone()))
            .incoming(listener)
            .run(),
    );
    let base_url = format!("http://{addr}/");
    let storage = Arc::new(LocalStorage::new(&store, &base_url).unwrap());
    let storage_config =
        json!({"storage_type": "local", "base_url": base_url, "path": store.display().to_string()});
    Env {
        _dir: dir,
        root,
        server,
        api,
        token,
        storage,
        storage_config,
        files,
    }
}

/// A tiny kernel-style tree as `linux-tiny/` in a `.tar.gz`, uploaded; returns its URL.
async fn tarball(env: &Env) -> String {
    let tree = env.root.join("tree/linux-tiny");
    std::fs::create_dir_all(tree.join("arch/x86/configs")).unwrap();
    std::fs::write(tree.join("Makefile"), MAKEFILE).unwrap();
    std::fs::write(
        tree.join("arch/x86/configs/tiny_defconfig"),
        "CONFIG_TINY=y\n",
    )
    .unwrap();
    std::fs::write(
        tree.join("arch/x86/configs/broken_defconfig"),
        "CONFIG_BROKEN=y\n",
    )
    .unwrap();
    let archive = env.root.join("linux-tiny.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(env.root.join("tree"))
        .arg("linux-tiny")
        .status()
        .unwrap();
    assert!(status.success());
    env.storage
        .upload_single(UploadFile::from_path(&archive, "linux-tiny.tar.gz"), "")
        .await
        .unwrap()
}

fn revision() -> Value {
    json!({"kernel_revision": {"tree": "tiny", "url": "https://git.example.org/tiny.git",
        "branch": "master", "commit": "0123456789abcdef0123456789abcdef01234567",
        "describe": "v6.9-rc1"}})
}

async fn checkout(env: &Env, tarball: Option<&str>) -> Node {
    let mut node = Node::new(NodeKind::Checkout, "checkout");
    node.data = revision().as_object().cloned();
    let mut node = env.api.create_node(&node).await.unwrap();
    node.state = State::Available;
    if let Some(url) = tarball {
        node.artifacts
            .get_or_insert_with(Map::new)
            .insert("tarball".into(), json!(url));
    }
    env.api.update_node(&node, false).await.unwrap()
}

async fn child(env: &Env, parent: &Node, kind: NodeKind, name: &str, debug: Value) -> Node {
    let mut node = Node::new(kind, name);
    node.parent = parent.id;
    node.path = parent.path.clone();
    node.path.push(name.to_owned());
    node.group = Some(name.to_owned());
    node.data = revision().as_object().cloned();
    node.debug = debug.as_object().cloned();
    env.api.create_node(&node).await.unwrap()
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn runner(env: &Env, p: Value) -> JobRunner {
    JobRunner::new(
        env.api.clone(),
        Some(env.storage.clone() as Arc<dyn Storage>),
        env.root.join(format!("ws-{}", ObjectId::new())),
        params(p),
    )
}

fn kbuild_params() -> Value {
    json!({"name": "kbuild-gcc-x86", "arch": "x86_64", "karch": "x86",
           "compiler": "gcc", "defconfig": "tiny_defconfig"})
}

async fn fetch(url: &str) -> String {
    reqwest::get(url)
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap()
}

const KTAP: &str = "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: math\n    1..3\n    ok 1 add\n    not ok 2 div_by_zero\n    ok 3 big # SKIP no bignum\nnot ok 1 math\nok 2 strings\n";

async fn check_ktap_results(env: &Env, job: &Node) {
    let job_id = job.id.unwrap();
    let done = env.api.get_node(job_id).await.unwrap().unwrap();
    assert_eq!(done.state, State::Done);
    assert_eq!(done.result, Some(ResultValue::Fail));
    assert!(done.artifacts.as_ref().unwrap().contains_key("log"));
    let top = env
        .api
        .find_all_nodes(&[("parent", &job_id.to_hex())])
        .await
        .unwrap();
    let mut got: Vec<_> = top
        .iter()
        .map(|n| (n.name.clone(), n.result, n.kind.clone()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("math".into(), Some(ResultValue::Fail), "test".into()),
            ("strings".into(), Some(ResultValue::Pass), "test".into())
        ]
    );
    let math = top.iter().find(|n| n.name == "math").unwrap();
    let cases = env
        .api
        .find_all_nodes(&[("parent", &math.id.unwrap().to_hex())])
        .await
        .unwrap();
    let mut got: Vec<_> = cases.iter().map(|n| (n.name.clone(), n.result)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("add".into(), Some(ResultValue::Pass)),
            ("big".into(), Some(ResultValue::Skip)),
            ("div_by_zero".into(), Some(ResultValue::Fail)),
        ]
    );
    let div = cases.iter().find(|n| n.name == "div_by_zero").unwrap();
    assert_eq!(div.group.as_deref(), Some(job.name.as_str()));
    assert_eq!(div.path.last().map(String::as_str), Some("div_by_zero"));
    assert_eq!(div.path[div.path.len() - 2], "math");
    assert_eq!(div.data_str("kernel_revision.tree"), Some("tiny"));
    assert_eq!(div.state, State::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kbuild_passes_and_fails_on_a_tiny_tree() {
    let env = env().await;
    let url = tarball(&env).await;
    let co = checkout(&env, Some(&url)).await;

    let kb = child(&env, &co, NodeKind::Kbuild, "kbuild-gcc-x86", json!({})).await;
    let report = runner(&env, kbuild_params())
        .run(kb.id.unwrap())
        .await
        .unwrap();
    let node = env.api.get_node(kb.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(report.node.id, node.id);
    assert_eq!(node.result, Some(ResultValue::Pass), "{:?}", node.data);
    assert_eq!(node.state, State::Available);
    let holdoff = node.holdoff.unwrap().micros() - Timestamp::now().micros();
    assert!((500_000_000..=600_000_000).contains(&holdoff), "{holdoff}");
    let artifacts = node.artifacts.clone().unwrap();
    for key in ["kernel", "build_log", "_config", "metadata", "build_sh"] {
        assert!(artifacts.contains_key(key), "{key} missing: {artifacts:?}");
    }
    let dest = format!("kbuild-gcc-x86-{}", kb.id.unwrap());
    let kernel = artifacts["kernel"].as_str().unwrap();
    assert!(kernel.ends_with(&format!("{dest}/bzImage")), "{kernel}");
    assert_eq!(fetch(kernel).await, "kernel 6.9.0-rc1\n");
    assert_eq!(
        fetch(artifacts["_config"].as_str().unwrap()).await,
        "CONFIG_TINY=y\n"
    );
    assert!(
        fetch(artifacts["build_log"].as_str().unwrap())
            .await
            .contains("CC      init/main.o")
    );
    let meta: Value =
        serde_json::from_str(&fetch(artifacts["metadata"].as_str().unwrap()).await).unwrap();
    assert_eq!(meta["build"]["status"], "pass");
    assert_eq!(node.data_str("defconfig"), Some("tiny_defconfig"));
    assert_eq!(node.data_str("arch"), Some("x86_64"));
    assert_eq!(node.data_str("compiler"), Some("gcc"));
    assert_eq!(node.data_str("kernel_type"), Some("bzimage"));

    let broken = child(&env, &co, NodeKind::Kbuild, "kbuild-broken", json!({})).await;
    let mut p = kbuild_params();
    p["defconfig"] = json!("broken_defconfig");
    p["name"] = json!("kbuild-broken");
    runner(&env, p).run(broken.id.unwrap()).await.unwrap();
    let node = env.api.get_node(broken.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (node.state, node.result),
        (State::Done, Some(ResultValue::Fail))
    );
    let log = fetch(
        node.artifacts.as_ref().unwrap()["build_log"]
            .as_str()
            .unwrap(),
    )
    .await;
    assert!(log.contains("error: broken"), "{log}");
    assert!(!node.artifacts.as_ref().unwrap().contains_key("kernel"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ktap_test_job_becomes_test_nodes() {
    let env = env().await;
    let url = tarball(&env).await;
    let co = checkout(&env, Some(&url)).await;
    let job = child(&env, &co, NodeKind::Job, "ktap-math", json!({})).await;
    // The command runs in the extracted tree and sees the node's artifacts.
    let cmd = format!(
        "test -f Makefile && test -n \"$KCI_ARTIFACT_TARBALL\" && printf '{}'",
        KTAP.replace('\n', "\\n")
    );
    runner(&env, json!({"name": "ktap-math", "command": cmd}))
        .run(job.id.unwrap())
        .await
        .unwrap();
    check_ktap_results(&env, &job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cip_fragment_ends_the_job_invalid_job_params() {
    let env = env().await;
    // No tarball either: the fragments are checked before any work is done.
    let co = checkout(&env, None).await;
    let kb = child(&env, &co, NodeKind::Kbuild, "kbuild-cip", json!({})).await;
    let mut p = kbuild_params();
    p["fragments"] = json!(["CONFIG_X=y", "cip://6.1.y-cip/x86/cip_merged_defconfig"]);
    runner(&env, p).run(kb.id.unwrap()).await.unwrap();
    let node = env.api.get_node(kb.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (node.state, node.result),
        (State::Done, Some(ResultValue::Incomplete))
    );
    assert_eq!(node.data_str("error_code"), Some("invalid_job_params"));
    let msg = node.data_str("error_msg").unwrap();
    assert!(
        msg.contains("\"cip://6.1.y-cip/x86/cip_merged_defconfig\"")
            && msg.contains(
                "https://gitlab.com/cip-project/cip-kernel/cip-kernel-config/-/raw/master/6.1.y-cip/x86/cip_merged_defconfig"
            ),
        "{msg}"
    );
    // A malformed one says what is wrong with it.
    let kb = child(&env, &co, NodeKind::Kbuild, "kbuild-cip-bad", json!({})).await;
    let mut p = kbuild_params();
    p["fragments"] = json!("cip://6.1.y-cip/../secret");
    runner(&env, p).run(kb.id.unwrap()).await.unwrap();
    let node = env.api.get_node(kb.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(node.data_str("error_code"), Some("invalid_job_params"));
    assert!(
        node.data_str("error_msg")
            .unwrap()
            .starts_with("invalid CIP fragment"),
        "{:?}",
        node.data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_errors_end_incomplete_and_dry_runs_run_nothing() {
    let env = env().await;
    // No tarball anywhere up the chain.
    let co = checkout(&env, None).await;
    let kb = child(&env, &co, NodeKind::Kbuild, "kbuild-x", json!({})).await;
    runner(&env, kbuild_params())
        .run(kb.id.unwrap())
        .await
        .unwrap();
    let node = env.api.get_node(kb.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (node.state, node.result),
        (State::Done, Some(ResultValue::Incomplete))
    );
    assert_eq!(node.data_str("error_code"), Some("Infrastructure"));
    assert!(node.data_str("error_msg").unwrap().contains("tarball"));

    // The tarball cannot be downloaded.
    let dead = format!(
        "http://127.0.0.1:{}/linux.tar.gz",
        kernelci::testsuite::peers::free_port()
    );
    let co = checkout(&env, Some(&dead)).await;
    let kb = child(&env, &co, NodeKind::Kbuild, "kbuild-y", json!({})).await;
    runner(&env, kbuild_params())
        .run(kb.id.unwrap())
        .await
        .unwrap();
    let node = env.api.get_node(kb.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(node.result, Some(ResultValue::Incomplete));
    assert!(
        node.data_str("error_msg").unwrap().contains("downloading"),
        "{:?}",
        node.data
    );

    // No storage to upload to.
    let job = child(&env, &co, NodeKind::Job, "no-storage", json!({})).await;
    JobRunner::new(
        env.api.clone(),
        None,
        env.root.join("ws-x"),
        params(json!({"command": "true"})),
    )
    .run(job.id.unwrap())
    .await
    .unwrap();
    let node = env.api.get_node(job.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(node.result, Some(ResultValue::Incomplete));
    assert!(node.data_str("error_msg").unwrap().contains("storage"));

    // Storage is down: the uploads fail after the command ran.
    let down = format!(
        "http://127.0.0.1:{}/",
        kernelci::testsuite::peers::free_port()
    );
    let storage = kernelci::pipeline::jobrunner::storage_from_config(
        &json!({"storage_type": "backend", "base_url": down, "api_url": down,
                "retries": 1, "retry_delay": 0.01}),
        Some("token"),
    )
    .unwrap();
    let bare = checkout(&env, None).await;
    let job = child(&env, &bare, NodeKind::Job, "storage-down", json!({})).await;
    JobRunner::new(
        env.api.clone(),
        Some(storage),
        env.root.join("ws-y"),
        params(json!({"command": "echo 'ok 1 x'"})),
    )
    .run(job.id.unwrap())
    .await
    .unwrap();
    let node = env.api.get_node(job.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (node.state, node.result),
        (State::Done, Some(ResultValue::Incomplete))
    );
    assert_eq!(node.data_str("error_code"), Some("Infrastructure"));
    assert!(
        node.data_str("error_msg").unwrap().contains("uploading"),
        "{:?}",
        node.data
    );

    // A dry run reports debug.result without running the (failing) command.
    let job = child(
        &env,
        &co,
        NodeKind::Job,
        "dry",
        json!({"dry_run": true, "result": "skip"}),
    )
    .await;
    runner(&env, json!({"command": "exit 1"}))
        .run(job.id.unwrap())
        .await
        .unwrap();
    let node = env.api.get_node(job.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (node.state, node.result),
        (State::Done, Some(ResultValue::Skip))
    );

    // A node that does not exist is an error for the caller (nothing to report on).
    assert!(runner(&env, json!({})).run(ObjectId::new()).await.is_err());
}

/// The `kci` binary next to this test's executable (built by `cargo test --workspace`), or
/// `$KCI_BIN`.
fn kci_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KCI_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("kci");
    candidate.is_file().then_some(candidate)
}

fn spec(env: &Env, node: &Node, name: &str, template: &str, p: Value) -> JobSpec {
    JobSpec {
        node: node.clone(),
        name: name.into(),
        template: template.into(),
        kind: node.kind.clone(),
        image: None,
        params: params(p),
        platform: "shell".into(),
        platform_config: Map::new(),
        storage_config_name: Some("local".into()),
        storage_config: env.storage_config.as_object().cloned(),
        api_config: params(json!({"name": "test", "url": env.server.url()})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_runtime_runs_kci_job_run_end_to_end() {
    let Some(kci) = kci_bin().or_else(|| KCI.missing()) else {
        return;
    };
    let env = env().await;
    let url = tarball(&env).await;
    let co = checkout(&env, Some(&url)).await;
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/runtime");
    let ctx = RuntimeContext::new(env.root.join("jobs"))
        .with_templates(TemplateEngine::new(vec![templates]))
        .with_job_env("KCI_BIN", kci.display().to_string())
        .with_job_env("KCI_API_TOKEN", env.token.clone());
    let entry = RuntimeEntry::from_value("shell", &json!({"lab_type": "shell"})).unwrap();
    let rt = RuntimeRegistry::new()
        .build(&entry, &RuntimeCredentials::default(), &ctx)
        .unwrap();

    // A kbuild.
    let kb = child(&env, &co, NodeKind::Kbuild, "kbuild-gcc-x86", json!({})).await;
    let job = spec(
        &env,
        &kb,
        "kbuild-gcc-x86",
        "kbuild.jinja2",
        json!({"arch": "x86_64", "compiler": "gcc", "defconfig": "tiny_defconfig"}),
    );
    let p = rt.params(&job).unwrap();
    assert_eq!(p["karch"], "x86");
    let def = rt.generate(&job, &p).unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    let status = rt.wait(&handle, Duration::from_secs(120)).await.unwrap();
    let log = std::fs::read_dir(env.root.join("jobs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path().join("job.log")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(status, JobStatus::Finished { exit_code: 0 }, "{log}");
    let node = env.api.get_node(kb.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(
        (node.state, node.result),
        (State::Available, Some(ResultValue::Pass)),
        "{log}"
    );
    let kernel = node.artifacts.as_ref().unwrap()["kernel"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fetch(&kernel).await, "kernel 6.9.0-rc1\n");

    // A KTAP test job below the build.
    let test = child(&env, &node, NodeKind::Job, "ktap-math", json!({})).await;
    let cmd = format!("printf '{}'", KTAP.replace('\n', "\\n"));
    let job = spec(
        &env,
        &test,
        "ktap-math",
        "ktap-test.jinja2",
        json!({"command": cmd}),
    );
    let def = rt.generate(&job, &rt.params(&job).unwrap()).unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    let status = rt.wait(&handle, Duration::from_secs(120)).await.unwrap();
    assert_eq!(status, JobStatus::Finished { exit_code: 0 });
    check_ktap_results(&env, &test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kci_job_generate_renders_the_shipped_templates() {
    let Some(kci) = kci_bin().or_else(|| KCI.missing()) else {
        return;
    };
    let env = env().await;
    let url = tarball(&env).await;
    let co = checkout(&env, Some(&url)).await;
    let kb = child(&env, &co, NodeKind::Kbuild, "kbuild-gcc-x86", json!({})).await;
    let id = kb.id.unwrap().to_hex();
    let run = |args: Vec<String>| {
        let kci = kci.clone();
        let url = env.server.url();
        let token = env.token.clone();
        async move {
            tokio::process::Command::new(kci)
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("KCI_API_URL", url)
                .env("KCI_API_TOKEN", token)
                .env_remove("KCI_SETTINGS")
                .output()
                .await
                .unwrap()
        }
    };
    let args = |template: &str, extra: &[&str]| {
        let mut v: Vec<String> = ["job", "generate", "--node-id", &id, "--template", template]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let out = run(args(
        "kbuild.jinja2",
        &[
            "--param",
            "arch=x86_64",
            "--param",
            "defconfig=tiny_defconfig",
        ],
    ))
    .await;
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    assert!(script.contains(&format!("--node-id '{id}'")), "{script}");
    assert!(script.contains("# kbuild: arch=\"x86_64\""), "{script}");
    // The job view carries the parent's tarball into the params the runner reads.
    assert!(script.contains(&url), "{script}");

    let out = run(args("kbuild.jinja2", &["--param", "arch=x86_64"])).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kbuild needs a defconfig"), "{err}");
    assert!(err.contains("kbuild.jinja2"), "{err}");
}
