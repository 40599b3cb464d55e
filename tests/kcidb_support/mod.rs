//! What the KCIDB tests share: the `kci-kcidb` binary as a child process, and result trees
//! written through the API the way jobs write them.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kernelci::client::{ApiClient, Hierarchy};
use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, State};
use kernelci::pipeline::service::{CRASH_AT_ENV, CRASH_MARKER_ENV};
use serde_json::{Value, json};

/// The directory of the workspace binaries (next to the test executable), built when missing
/// or older than the sources.
pub fn bins_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KCI_BINS_DIR") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = profile.join("kci-kcidb");
    let stale = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .map(|built| {
            newest(&root.join("kernelci/src")).max(newest(&root.join("kernelci-bins/src"))) > built
        })
        .unwrap_or(true);
    if stale {
        let target = profile.parent().unwrap();
        let st = Command::new(env!("CARGO"))
            .current_dir(root)
            .args([
                "build",
                "-p",
                "kernelci-bins",
                "--bin",
                "kci-kcidb",
                "--bin",
                "kci",
            ])
            .env("CARGO_TARGET_DIR", target)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "cargo build -p kernelci-bins --bin kci-kcidb failed"
        );
    }
    profile
}

fn newest(dir: &Path) -> std::time::SystemTime {
    let mut best = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            entry.metadata().and_then(|m| m.modified()).unwrap_or(best)
        };
        best = best.max(t);
    }
    best
}

/// `kci-kcidb` as a child process; every start logs to its own file.
pub struct BridgeProc {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl BridgeProc {
    pub fn new(dir: &Path, args: Vec<String>, env: Vec<(String, String)>) -> BridgeProc {
        BridgeProc {
            args,
            env,
            dir: dir.to_path_buf(),
            child: None,
            starts: 0,
        }
    }

    /// Starts it; `crash` = the crash step (its marker is `<dir>/crash-marker`).
    pub fn start(&mut self, crash: Option<&str>) {
        assert!(self.child.is_none());
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("bridge-{}.log", self.starts))).unwrap();
        let mut cmd = Command::new(bins_dir().join("kci-kcidb"));
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                "info,kernelci::kcidb=debug,kernelci::pipeline::kcidb_bridge=debug",
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(step) = crash {
            cmd.env(CRASH_AT_ENV, step)
                .env(CRASH_MARKER_ENV, self.dir.join("crash-marker"));
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Every log so far.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                let text = std::fs::read_to_string(self.dir.join(format!("bridge-{i}.log")))
                    .unwrap_or_default();
                format!("--- start {i} ---\n{text}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the crash marker names `step`.
    pub fn wait_crash(&mut self, step: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let marker = std::fs::read_to_string(self.dir.join("crash-marker")).unwrap_or_default();
            if marker.lines().any(|l| l == step) {
                let _ = std::fs::remove_file(self.dir.join("crash-marker"));
                return;
            }
            assert!(self.running(), "the bridge exited:\n{}", self.logs());
            assert!(
                Instant::now() < deadline,
                "crash point {step} not reached:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BridgeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The pipeline YAML the trees below follow (jobs with KCIDB test suites).
pub const JOBS_YAML: &str = r#"
jobs:
  kbuild-gcc-x86:
    template: kbuild.jinja2
    kind: kbuild
  kselftest-a:
    template: ktap-test.jinja2
    kind: job
    kcidb_test_suite: kselftest.a
"#;

/// A checkout, as the tarball service leaves it (`done` here).
pub async fn checkout(api: &ApiClient, commit: &str) -> Node {
    let mut n = Node::new(NodeKind::Checkout, "checkout");
    n.state = State::Done;
    n.result = Some(ResultValue::Pass);
    n.data = json!({"kernel_revision": {
        "tree": "mainline", "branch": "master", "commit": commit, "describe": "v6.18",
        "url": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
    }})
    .as_object()
    .cloned();
    api.create_node(&n).await.unwrap()
}

/// A finished kbuild under `parent` with `arch`.
pub async fn kbuild(api: &ApiClient, parent: &Node, arch: &str, log_base: &str) -> Node {
    let mut n = Node::new(NodeKind::Kbuild, "kbuild-gcc-x86");
    n.parent = parent.id;
    n.path = vec!["checkout".into(), "kbuild-gcc-x86".into()];
    n.state = State::Done;
    n.result = Some(ResultValue::Pass);
    let mut data = parent.data.clone().unwrap_or_default();
    data.insert("arch".into(), json!(arch));
    data.insert("compiler".into(), json!("gcc"));
    data.insert("config_full".into(), json!("x86_64_defconfig"));
    data.insert("runtime".into(), json!("shell"));
    n.data = Some(data);
    n.artifacts = json!({"build_log": format!("{log_base}/build.log"), "kernel": format!("{log_base}/bzImage")})
        .as_object()
        .cloned();
    api.create_node(&n).await.unwrap()
}

/// A test job under `kbuild` whose results arrive in one hierarchy: `cases` leaves under a
/// suite, one failing (`name` is the case name prefix). Returns the job and its children.
pub async fn test_job(api: &ApiClient, kbuild: &Node, suite: &str, cases: usize) -> Vec<Node> {
    let mut job = Node::new(NodeKind::Job, "kselftest-a");
    job.parent = kbuild.id;
    job.path = vec![
        "checkout".into(),
        "kbuild-gcc-x86".into(),
        "kselftest-a".into(),
    ];
    job.state = State::Running;
    let mut data = kbuild.data.clone().unwrap_or_default();
    data.insert("platform".into(), json!("qemu-x86"));
    data.insert("job_id".into(), json!("job-1"));
    job.data = Some(data.clone());
    let mut job = api.create_node(&job).await.unwrap();
    job.state = State::Done;
    job.result = Some(ResultValue::Fail);
    let mut suite_node = Node::new(NodeKind::Test, suite);
    suite_node.path = job.path.clone();
    suite_node.path.push(suite.into());
    suite_node.state = State::Done;
    suite_node.result = Some(ResultValue::Fail);
    suite_node.data = Some(data.clone());
    let leaves = (0..cases)
        .map(|i| {
            let name = format!("{suite}_case_{i}");
            let mut t = Node::new(NodeKind::Test, &name);
            t.path = suite_node.path.clone();
            t.path.push(name);
            t.state = State::Done;
            t.result = Some(if i == 0 {
                ResultValue::Fail
            } else {
                ResultValue::Pass
            });
            t.data = Some(data.clone());
            Hierarchy {
                node: t,
                child_nodes: vec![],
            }
        })
        .collect();
    api.submit_results(&Hierarchy {
        node: job,
        child_nodes: vec![Hierarchy {
            node: suite_node,
            child_nodes: leaves,
        }],
    })
    .await
    .unwrap()
}

/// Every node of the database.
pub async fn all_nodes(api: &ApiClient) -> Vec<Node> {
    api.find_all_nodes(&[]).await.unwrap()
}

/// Waits until every node in `ids` is flagged processed.
pub async fn wait_flagged(
    api: &ApiClient,
    ids: &[ObjectId],
    timeout: Duration,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let nodes = all_nodes(api).await;
        let pending: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.id.is_some_and(|i| ids.contains(&i)) && !n.processed_by_kcidb_bridge)
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} nodes never flagged: {:?}\n{}",
            pending.len(),
            pending.iter().map(|n| (&n.name, n.id)).collect::<Vec<_>>(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The KCIDB ids of nodes (`maestro:<id>`).
pub fn kcidb_ids(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| n.id)
        .map(|i| format!("maestro:{i}"))
        .collect()
}

/// A metric's value from a Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// `GET http://127.0.0.1:<port>/metrics`.
pub async fn metrics(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Which ids an accepted document list holds.
pub fn ids_in(doc: &Value, list: &str) -> Vec<String> {
    doc.get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect()
}
