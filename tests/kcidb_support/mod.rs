//! What the KCIDB tests share: the `kci-kcidb` binary as a child process, and result trees
//! written through the API the way jobs write them.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kernelci::client::ApiClient;
use kernelci::models::{Node, ObjectId};
use kernelci::pipeline::service::{CRASH_AT_ENV, CRASH_MARKER_ENV};
use serde_json::Value;

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

/// A finished checkout.
pub async fn checkout(api: &ApiClient, commit: &str) -> Node {
    kernelci::kcidb::testsuite::finished_checkout(api, commit).await
}

/// A finished kbuild `kbuild-gcc-x86` under `parent` with `arch`.
pub async fn kbuild(api: &ApiClient, parent: &Node, arch: &str, log_base: &str) -> Node {
    kernelci::kcidb::testsuite::finished_kbuild(api, parent, "kbuild-gcc-x86", arch, log_base).await
}

/// A `kselftest-a` job under `kbuild` with `cases` leaves under the suite `suite`.
pub async fn test_job(api: &ApiClient, kbuild: &Node, suite: &str, cases: usize) -> Vec<Node> {
    kernelci::kcidb::testsuite::finished_test_job(api, kbuild, "kselftest-a", Some(suite), cases)
        .await
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
