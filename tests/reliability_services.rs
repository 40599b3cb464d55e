//! Crash safety of the pipeline services (issue 11): each service binary is `kill -9`-ed while
//! it handles an event (or, for the polling services, in the middle of a pass), restarted, and
//! must then finish the work (at-least-once) without making any child node twice.
//!
//! One table ([`CASES`]) drives one loop. For each row:
//!
//! 1. a real API server ([`support::TestServer`], embedded SQLite) and a config folder (a demo
//!    kernel tree over `file://`, a `shell` runtime with a one-line job, a `local` storage);
//! 2. the service's durable subscriber position is registered, then the real binary
//!    (`target/<profile>/kci-<service>`) starts with `KCI_TEST_CRASH_AT=<step>`: the service
//!    skeleton's hook [`kernelci::pipeline::service::crash_point`] freezes the task at exactly
//!    that step and writes the step to `$KCI_TEST_CRASH_MARKER` — so the kill lands mid-event
//!    every time, not by timing luck;
//! 3. the test produces the triggering event, waits for the marker, checks the state at the
//!    kill (e.g. the job node exists but is not submitted) and sends SIGKILL;
//! 4. the binary restarts without the hook, and the test waits until the event was processed
//!    (its expected outcome exists and, for event-driven services, the durable subscriber
//!    acknowledged it) and checks that no child node exists twice.
//!
//! A summary table (service, step, time from the restart to the outcome, what was checked) is
//! printed with `--nocapture`. `KCI_CRASH_CASES=scheduler,tarball@event-handled` runs only the
//! rows whose `<binary>@<step>` contains one of the words; `KCI_CRASH_ROUNDS=N` runs the
//! table N times.
//!
//! What the table proves, service by service:
//!
//! - `kci-tarball`: the checkout ends `available` with its tarball (a replay of an already
//!   handled checkout is skipped: it is no longer `running`);
//! - `kci-scheduler`: exactly one job node per (checkout, job, platform, retry counter), and
//!   it is submitted — also when the kill fell between the node's creation and the submission
//!   (the existing node is submitted on the replay) or between the submission and the node
//!   update (the job is submitted again: at-least-once, still one node);
//! - `kci-regression`: exactly one regression node, and the failing node points at it also
//!   when the kill fell between the two writes;
//! - `kci-job-retry`: the retry is published (twice when the kill fell after the publication:
//!   the scheduler's one-node-per-retry-counter rule makes the duplicate harmless);
//! - `kci-report`: the report is printed again by the restarted process (a mail can be sent
//!   twice: at-least-once);
//! - `kci-timeout` (polling): every node past its timeout ends `done`, the first before the
//!   kill and the others after the restart;
//! - `kci-trigger` (polling): one checkout for the new commit, the restarted pass sees it.
//!
//! The last test stops `dockerd` under a running scheduler with the Docker runtime (see
//! [`scheduler_degrades_while_dockerd_is_down_and_recovers_without_a_restart`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reliability_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use kernelci::client::ApiClient;
use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, State, Timestamp};
use kernelci::pipeline::service::{CRASH_AT_ENV, CRASH_MARKER_ENV};
use kernelci::store::EventFilter;
use reliability_support::ChildProc;
use serde_json::{Value, json};
use support::{ADMIN_PASSWORD, TestServer};

#[test]
fn child_process_helper_kills_and_restarts() {
    let mut p = ChildProc::start("sleep", &["30"], &[]);
    let first = p.pid().unwrap();
    assert!(p.is_running());
    p.kill9();
    assert!(!p.is_running());
    p.restart();
    let second = p.pid().unwrap();
    assert_ne!(first, second);
    assert!(p.is_running());
}

// ------------------------------------------------------------------------------------------
// The service binaries

fn newest_mtime(dir: &Path, newest: &mut SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            newest_mtime(&p, newest);
        } else if let Ok(m) = e.metadata().and_then(|m| m.modified())
            && m > *newest
        {
            *newest = m;
        }
    }
}

/// Whether `bin` was built with the crash points (`kernelci-bins/fault-injection`): only
/// then does it contain the name of the variable that sets them.
fn has_crash_points(bin: &Path) -> bool {
    Command::new("grep")
        .args(["-qaF", CRASH_AT_ENV])
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success())
}

/// The directory holding the `kci-*` binaries: `$KCI_BINS_DIR`, else this test's profile
/// directory, where `cargo build -p kernelci-bins --bins --features fault-injection` runs
/// first when a binary is missing, older than the sources, or built without the crash points
/// (a release build, or a build without the feature). The workspace test run
/// (`cargo test --workspace --all-features`) builds them with the feature already.
fn bins_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(p) = std::env::var_os("KCI_BINS_DIR") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test exe");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf();
        let target = profile.parent().expect("target dir").to_path_buf();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut newest = SystemTime::UNIX_EPOCH;
        for d in ["kernelci/src", "kernelci-bins/src"] {
            newest_mtime(&root.join(d), &mut newest);
        }
        let fresh = Service::ALL.iter().all(|s| {
            let bin = profile.join(s.binary());
            std::fs::metadata(&bin)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= newest)
                && has_crash_points(&bin)
        });
        if !fresh {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(root)
                .args(["build", "-p", "kernelci-bins", "--bins"])
                .args(["--features", "fault-injection"])
                .env("CARGO_TARGET_DIR", &target);
            if profile.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(
                st.success(),
                "cargo build -p kernelci-bins --bins --features fault-injection failed"
            );
        }
        profile
    })
    .clone()
}

/// A service binary as a child process; each start logs to its own files.
struct ServiceProc {
    bin: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    logs: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl ServiceProc {
    fn new(bin: PathBuf, args: Vec<String>, cwd: &Path, env: Vec<(String, String)>) -> Self {
        let logs = cwd.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        ServiceProc {
            bin,
            args,
            cwd: cwd.to_path_buf(),
            env,
            logs,
            child: None,
            starts: 0,
        }
    }

    /// Starts it; `crash` is `(step, marker file)`.
    fn start(&mut self, crash: Option<(&str, &Path)>) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let out = std::fs::File::create(self.logs.join(format!("{}.out", self.starts))).unwrap();
        let err = std::fs::File::create(self.logs.join(format!("{}.err", self.starts))).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.cwd)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some((step, marker)) = crash {
            cmd.env(CRASH_AT_ENV, step).env(CRASH_MARKER_ENV, marker);
        }
        self.child = Some(cmd.spawn().expect("spawn service"));
    }

    /// The exit status, once it exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// `kill -9` and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The standard output of start `n`.
    fn stdout_of(&self, n: u32) -> String {
        std::fs::read_to_string(self.logs.join(format!("{n}.out"))).unwrap_or_default()
    }

    /// Every start's standard error, for failure messages.
    fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let err =
                    std::fs::read_to_string(self.logs.join(format!("{n}.err"))).unwrap_or_default();
                format!("--- start {n} ---\n{err}")
            })
            .collect()
    }
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ------------------------------------------------------------------------------------------
// The fixture: a server, a kernel tree, a config folder

struct Fixture {
    dir: tempfile::TempDir,
    server: TestServer,
    api: ApiClient,
    token: String,
    commit: String,
    tree_url: String,
}

const JOB: &str = "crash-job";

/// The pipeline config of the tests: one tree, one job on checkouts reaching `available`, on
/// the `shell` runtime, or on a `docker` runtime at `docker_host` (image `kci-crash:latest`).
fn pipeline_yaml(api: &str, storage: &Path, tree_url: &str, docker_host: Option<&str>) -> String {
    let (runtime, image) = match docker_host {
        Some(host) => (
            format!(
                "docker:\n    lab_type: docker\n    docker_host: \"{host}\"\n    network_mode: host"
            ),
            "\n    image: kci-crash:latest",
        ),
        None => ("shell:\n    lab_type: shell".to_owned(), ""),
    };
    let name = if docker_host.is_some() {
        "docker"
    } else {
        "shell"
    };
    format!(
        r#"api:
  local:
    url: {api}
storage:
  files:
    storage_type: local
    path: {storage}
    base_url: http://files.invalid/
trees:
  demo:
    url: "{tree_url}"
build_configs:
  demo:
    tree: demo
    branch: master
runtimes:
  {runtime}
platforms:
  {name}: {{}}
jobs:
  {JOB}:
    template: crash.jinja2
    kind: job{image}
scheduler:
  - job: {JOB}
    event:
      channel: node
      kind: checkout
      state: available
    runtime:
      name: {name}
"#,
        storage = storage.display(),
    )
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(
            &dir.path().join("db.sqlite3"),
            "127.0.0.1:0".parse().unwrap(),
            2,
        )
        .await;
        let api = ApiClient::new(&server.url())
            .unwrap()
            .with_retries(3, Duration::from_millis(50));
        let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
        let api = api.with_token(token.clone());
        let tree = dir.path().join("tree");
        let commit = kernelci_bins::demo::create_tree(&tree).unwrap();
        let tree_url = format!("file://{}", tree.canonicalize().unwrap().display());
        let cfg = dir.path().join("config");
        std::fs::create_dir_all(cfg.join("runtime")).unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let yaml = pipeline_yaml(&server.url(), &storage, &tree_url, None);
        std::fs::write(cfg.join("pipeline.yaml"), yaml).unwrap();
        std::fs::write(
            cfg.join("runtime/crash.jinja2"),
            "#!/bin/sh\necho crash-test job\n",
        )
        .unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("kernelci.toml"),
            format!(
                "[DEFAULT]\napi_config = \"local\"\nstorage_config = \"files\"\n\n\
                 [scheduler]\napi_config = \"local\"\nstorage_config = \"files\"\noutput = \"{d}/scheduler\"\n"
            ),
        )
        .unwrap();
        Fixture {
            dir,
            server,
            api,
            token,
            commit,
            tree_url,
        }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// The last sequence id of the event log.
    async fn log_end(&self) -> u64 {
        let events = self
            .server
            .app
            .store
            .events_after(0, &EventFilter::default(), 1_000_000)
            .await
            .unwrap();
        events.last().map_or(0, |e| e.sequence_id)
    }

    /// A durable subscriber's acknowledged position.
    async fn position(&self, subscriber: &str) -> u64 {
        self.server
            .app
            .store
            .get_subscriber(subscriber)
            .await
            .unwrap()
            .map_or(0, |s| s.last_event_id)
    }

    /// The data of a checkout of the demo tree's head.
    fn checkout_data(&self) -> Option<serde_json::Map<String, Value>> {
        json!({"kernel_revision": self.revision(&self.commit)})
            .as_object()
            .cloned()
    }

    fn revision(&self, commit: &str) -> Value {
        json!({"tree": "demo", "branch": "master", "url": self.tree_url, "commit": commit})
    }

    async fn find(&self, query: &[(&str, &str)]) -> Vec<Node> {
        let mut q = query.to_vec();
        q.push(("limit", "1000"));
        self.api.find_nodes(&q).await.unwrap().items
    }

    async fn node(&self, id: ObjectId) -> Node {
        self.api.get_node(id).await.unwrap().unwrap()
    }
}

// ------------------------------------------------------------------------------------------
// The services

#[derive(Debug, Clone, Copy, PartialEq)]
enum Service {
    Tarball,
    Scheduler,
    Regression,
    JobRetry,
    Report,
    Timeout,
    Trigger,
}

impl Service {
    const ALL: [Service; 7] = [
        Service::Tarball,
        Service::Scheduler,
        Service::Regression,
        Service::JobRetry,
        Service::Report,
        Service::Timeout,
        Service::Trigger,
    ];

    fn binary(self) -> &'static str {
        match self {
            Service::Tarball => "kci-tarball",
            Service::Scheduler => "kci-scheduler",
            Service::Regression => "kci-regression",
            Service::JobRetry => "kci-job-retry",
            Service::Report => "kci-report",
            Service::Timeout => "kci-timeout",
            Service::Trigger => "kci-trigger",
        }
    }

    /// The durable subscriptions it follows (channel, promiscuous, subscriber id).
    fn subscriptions(self) -> Vec<(&'static str, bool, &'static str)> {
        match self {
            Service::Tarball => vec![("node", false, "tarball:node")],
            Service::Scheduler => vec![
                ("node", false, "scheduler:node"),
                ("retry", true, "scheduler:retry"),
            ],
            Service::Regression => vec![("node", false, "regression:node")],
            Service::JobRetry => vec![("node", false, "job-retry:node")],
            Service::Report => vec![("node", false, "report:node")],
            Service::Timeout | Service::Trigger => Vec::new(),
        }
    }

    fn args(self, fx: &Fixture) -> Vec<String> {
        let settings = fx.path("kernelci.toml");
        let cfg = fx.path("config");
        let url = fx.server.url();
        let common = |name: &str| {
            vec![
                "--settings".to_owned(),
                settings.clone(),
                "--yaml-config".to_owned(),
                cfg.clone(),
                "--api-url".to_owned(),
                url.clone(),
                "--name".to_owned(),
                name.to_owned(),
            ]
        };
        match self {
            Service::Tarball => {
                let mut a = common("tarball");
                a.extend(
                    [
                        "--kdir",
                        &fx.path("kdir"),
                        "--output",
                        &fx.path("tarball-out"),
                        "--storage-config",
                        "files",
                        "--tags-from",
                        "none",
                    ]
                    .map(str::to_owned),
                );
                a
            }
            Service::Scheduler => {
                let port = kernelci::testsuite::peers::free_port().to_string();
                let mut a = common("scheduler");
                a.extend(["--runtimes", "shell", "--health-port", &port].map(str::to_owned));
                a
            }
            Service::Regression => common("regression"),
            Service::JobRetry => common("job-retry"),
            Service::Report => {
                let mut a = common("report");
                a.push("loop".into());
                a
            }
            Service::Timeout => {
                let mut a = common("timeout");
                a.extend(["--mode", "timeout", "--poll-period", "1"].map(str::to_owned));
                a
            }
            Service::Trigger => {
                let mut a = common("trigger");
                a.extend(["--poll-period", "0"].map(str::to_owned));
                a
            }
        }
    }

    /// Work done before the service's position is registered (history it must not handle).
    async fn prepare(self, fx: &Fixture) {
        if self == Service::Regression {
            // The last passing run of the job, before the failing one.
            run_of(fx, "0000000000000000000000000000000000000001", true).await;
        }
    }

    /// Produces the event (or the state) the service reacts to; returns the nodes to check.
    async fn provoke(self, fx: &Fixture) -> Vec<ObjectId> {
        match self {
            Service::Tarball => {
                let mut co = Node::new(NodeKind::Checkout, "checkout");
                co.data = fx.checkout_data();
                vec![fx.api.create_node(&co).await.unwrap().id.unwrap()]
            }
            Service::Scheduler => {
                let mut co = Node::new(NodeKind::Checkout, "checkout");
                co.data = fx.checkout_data();
                let mut co = fx.api.create_node(&co).await.unwrap();
                co.state = State::Available;
                co.result = Some(ResultValue::Pass);
                let co = fx.api.update_node(&co, false).await.unwrap();
                vec![co.id.unwrap()]
            }
            Service::Regression => {
                let (_, test) = run_of(fx, "0000000000000000000000000000000000000002", false).await;
                vec![test.id.unwrap()]
            }
            Service::JobRetry => {
                let mut co = Node::new(NodeKind::Checkout, "checkout");
                co.data = fx.checkout_data();
                co.state = State::Available;
                let co = fx.api.create_node(&co).await.unwrap();
                let mut kbuild = Node::new(NodeKind::Kbuild, "kbuild-demo");
                kbuild.parent = co.id;
                kbuild.path = vec!["checkout".into(), "kbuild-demo".into()];
                kbuild.state = State::Done;
                kbuild.result = Some(ResultValue::Pass);
                let kbuild = fx.api.create_node(&kbuild).await.unwrap();
                let mut job = Node::new(NodeKind::Job, "baseline-demo");
                job.parent = kbuild.id;
                job.path = vec![
                    "checkout".into(),
                    "kbuild-demo".into(),
                    "baseline-demo".into(),
                ];
                job.data = json!({"platform": "shell"}).as_object().cloned();
                job.state = State::Done;
                job.result = Some(ResultValue::Incomplete);
                let job = fx.api.create_node(&job).await.unwrap();
                vec![job.id.unwrap(), kbuild.id.unwrap()]
            }
            Service::Report => {
                let mut co = Node::new(NodeKind::Checkout, "checkout");
                co.data = fx.checkout_data();
                co.state = State::Done;
                co.result = Some(ResultValue::Pass);
                vec![fx.api.create_node(&co).await.unwrap().id.unwrap()]
            }
            Service::Timeout => {
                let mut ids = Vec::new();
                for name in ["late-1", "late-2", "late-3"] {
                    let mut n = Node::new(NodeKind::Job, name);
                    n.timeout = Timestamp::now().plus_secs(-60);
                    ids.push(fx.api.create_node(&n).await.unwrap().id.unwrap());
                }
                ids
            }
            // The new commit is the demo tree's head, there from the start.
            Service::Trigger => Vec::new(),
        }
    }

    /// What must hold at the kill (the hook froze the service after these side effects).
    async fn at_kill(self, step: &str, fx: &Fixture, ids: &[ObjectId]) -> Result<String, String> {
        match (self, step) {
            (Service::Scheduler, "job-node-created") => {
                let jobs = children(fx, ids[0]).await;
                if jobs.len() == 1 && jobs[0].data_path("job_id").is_none() {
                    Ok("job node created, not submitted".into())
                } else {
                    Err(format!("job nodes at the kill: {jobs:?}"))
                }
            }
            (Service::Scheduler, "job-submitted") => {
                let jobs = children(fx, ids[0]).await;
                if jobs.len() == 1 && jobs[0].data_path("job_id").is_none() {
                    Ok("job submitted, node not updated".into())
                } else {
                    Err(format!("job nodes at the kill: {jobs:?}"))
                }
            }
            (Service::Regression, "regression-created") => {
                let regs = regressions(fx, ids[0]).await;
                let test = fx.node(ids[0]).await;
                if regs.len() == 1 && test.data_path("regression").is_none() {
                    Ok("regression created, failing node not marked".into())
                } else {
                    Err(format!("regressions at the kill: {regs:?}"))
                }
            }
            (Service::Timeout, "node-updated") => {
                let done = timed_out(fx, ids).await;
                if done == 1 {
                    Ok("1 of 3 nodes timed out".into())
                } else {
                    Err(format!("{done} nodes timed out at the kill"))
                }
            }
            (Service::Trigger, "checkout-created") => {
                let n = checkouts(fx).await;
                if n == 1 {
                    Ok("checkout created, pass not over".into())
                } else {
                    Err(format!("{n} checkouts at the kill"))
                }
            }
            _ => Ok(String::new()),
        }
    }

    /// Whether the work is done after the restart, and nothing was made twice. `Err` while it
    /// is not (yet) so.
    async fn check(
        self,
        fx: &Fixture,
        ids: &[ObjectId],
        proc: &ServiceProc,
    ) -> Result<String, String> {
        match self {
            Service::Tarball => {
                let co = fx.node(ids[0]).await;
                let tarball = co.artifacts.as_ref().and_then(|a| a.get("tarball"));
                if co.state != State::Available || tarball.is_none() {
                    return Err(format!("checkout {} {:?}", co.state, co.artifacts));
                }
                let n = fx.find(&[("kind", "checkout")]).await.len();
                if n != 1 {
                    return Err(format!("{n} checkouts"));
                }
                Ok("checkout available with its tarball".into())
            }
            Service::Scheduler => {
                let jobs = children(fx, ids[0]).await;
                if jobs.len() != 1 {
                    return Err(format!("{} job nodes: {jobs:?}", jobs.len()));
                }
                if jobs[0].data_path("job_id").is_none() {
                    return Err(format!("the job is not submitted: {:?}", jobs[0]));
                }
                Ok("1 job node, submitted".into())
            }
            Service::Regression => {
                let regs = regressions(fx, ids[0]).await;
                if regs.len() != 1 {
                    return Err(format!("{} regressions", regs.len()));
                }
                let all = fx.find(&[("kind", "regression")]).await.len();
                if all != 1 {
                    return Err(format!("{all} regression nodes in all"));
                }
                let test = fx.node(ids[0]).await;
                let reg_id = regs[0].id.unwrap().to_string();
                if test.data_str("regression") != Some(reg_id.as_str()) {
                    return Err(format!("failing node not marked: {:?}", test.data));
                }
                Ok("1 regression node, the failing node points at it".into())
            }
            Service::JobRetry => {
                let events = fx.api.events(&[("channel", "retry")]).await.unwrap();
                let job = ids[0].to_string();
                let n = events
                    .iter()
                    .filter(|e| {
                        e.pointer("/data/debug/retry_by").and_then(Value::as_str) == Some(&job)
                    })
                    .count();
                if n == 0 {
                    return Err("no retry published".into());
                }
                let kbuild = ids[1].to_string();
                let ok = events.iter().all(|e| {
                    e.pointer("/data/id").and_then(Value::as_str) == Some(&kbuild)
                        && e.pointer("/data/retry_counter").and_then(Value::as_i64) == Some(1)
                });
                if !ok {
                    return Err(format!("unexpected retry events: {events:?}"));
                }
                Ok(format!(
                    "{n} retry event(s) for the kbuild, retry_counter 1"
                ))
            }
            Service::Report => {
                let out = proc.stdout_of(proc.starts);
                if !out.contains("demo/master") {
                    return Err("no report printed after the restart".into());
                }
                Ok("report printed after the restart".into())
            }
            Service::Timeout => {
                let done = timed_out(fx, ids).await;
                if done != ids.len() {
                    return Err(format!("{done} of {} timed out", ids.len()));
                }
                Ok(format!("{done} of {} nodes timed out", ids.len()))
            }
            Service::Trigger => {
                let n = checkouts(fx).await;
                if n != 1 {
                    return Err(format!("{n} checkouts"));
                }
                Ok("1 checkout for the new commit".into())
            }
        }
    }
}

async fn children(fx: &Fixture, parent: ObjectId) -> Vec<Node> {
    fx.find(&[("parent", &parent.to_string()), ("name", JOB)])
        .await
}

async fn regressions(fx: &Fixture, fail: ObjectId) -> Vec<Node> {
    fx.find(&[
        ("kind", "regression"),
        ("data.fail_node", &fail.to_string()),
    ])
    .await
}

async fn checkouts(fx: &Fixture) -> usize {
    fx.find(&[
        ("kind", "checkout"),
        ("data.kernel_revision.commit", &fx.commit),
    ])
    .await
    .len()
}

async fn timed_out(fx: &Fixture, ids: &[ObjectId]) -> usize {
    let mut n = 0;
    for id in ids {
        let node = fx.node(*id).await;
        if node.state == State::Done && node.data_str("error_code") == Some("node_timeout") {
            n += 1;
        }
    }
    n
}

/// A checkout with a job and a test below it, the test passing or failing.
async fn run_of(fx: &Fixture, commit: &str, pass: bool) -> (Node, Node) {
    let rev = fx.revision(commit);
    let mut co = Node::new(NodeKind::Checkout, "checkout");
    co.data = json!({"kernel_revision": rev}).as_object().cloned();
    co.state = State::Available;
    let co = fx.api.create_node(&co).await.unwrap();
    let data = json!({"kernel_revision": rev, "arch": "x86_64", "platform": "shell",
        "defconfig": "defconfig", "compiler": "gcc"});
    let mut job = Node::new(NodeKind::Job, "kselftest");
    job.parent = co.id;
    job.path = vec!["checkout".into(), "kselftest".into()];
    job.group = Some("kselftest".into());
    job.data = data.as_object().cloned();
    job.state = State::Done;
    job.result = Some(ResultValue::Pass);
    let job = fx.api.create_node(&job).await.unwrap();
    let mut test = Node::new(NodeKind::Test, "exec");
    test.parent = job.id;
    test.path = vec!["checkout".into(), "kselftest".into(), "exec".into()];
    test.group = Some("kselftest".into());
    test.data = data.as_object().cloned();
    test.state = State::Done;
    test.result = Some(if pass {
        ResultValue::Pass
    } else {
        ResultValue::Fail
    });
    let test = fx.api.create_node(&test).await.unwrap();
    (job, test)
}

/// The table: every service, killed at each step where a crash could lose or repeat work.
const CASES: &[(Service, &str)] = &[
    (Service::Tarball, "event-received"),
    (Service::Tarball, "event-handled"),
    (Service::Scheduler, "event-received"),
    (Service::Scheduler, "job-node-created"),
    (Service::Scheduler, "job-submitted"),
    (Service::Scheduler, "event-handled"),
    (Service::Regression, "regression-created"),
    (Service::Regression, "event-handled"),
    (Service::JobRetry, "event-received"),
    (Service::JobRetry, "event-handled"),
    (Service::Report, "event-received"),
    (Service::Report, "event-handled"),
    (Service::Timeout, "node-updated"),
    (Service::Trigger, "checkout-created"),
];

const WAIT: Duration = Duration::from_secs(60);

/// One row: returns (time to the kill point, time from the restart to the outcome, what was
/// checked).
async fn crash_case(service: Service, step: &str) -> (Duration, Duration, String) {
    let fx = Fixture::new().await;
    service.prepare(&fx).await;
    for (channel, promisc, id) in service.subscriptions() {
        let sub = fx.api.subscribe(channel, promisc, Some(id)).await.unwrap();
        fx.api.unsubscribe(sub.id).await.unwrap();
    }
    let bin = bins_dir().join(service.binary());
    let env = vec![("KCI_API_TOKEN".to_owned(), fx.token.clone())];
    let mut proc = ServiceProc::new(bin, service.args(&fx), fx.dir.path(), env);
    let marker = fx.dir.path().join("crash-marker");
    let started = Instant::now();
    proc.start(Some((step, &marker)));
    let ids = service.provoke(&fx).await;
    let end = fx.log_end().await;
    // Wait for the hook: the service is frozen at `step`.
    loop {
        if std::fs::read_to_string(&marker).is_ok_and(|m| m.lines().any(|l| l == step)) {
            break;
        }
        if let Some(st) = proc.exited() {
            panic!("{service:?} exited ({st}) before {step}:\n{}", proc.log());
        }
        assert!(
            started.elapsed() < WAIT,
            "{service:?} never reached {step}:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to_kill = started.elapsed();
    let at_kill = service
        .at_kill(step, &fx, &ids)
        .await
        .unwrap_or_else(|e| panic!("{service:?} at {step}: {e}\n{}", proc.log()));
    proc.kill9();
    // Events it follows are not acknowledged past the one in hand.
    for (_, _, sub) in service.subscriptions().iter().take(1) {
        let pos = fx.position(sub).await;
        assert!(
            pos < end,
            "{service:?} at {step}: {sub} acknowledged {pos} >= {end} before the kill"
        );
    }

    let restarted = Instant::now();
    proc.start(None);
    let outcome = loop {
        let result = service.check(&fx, &ids, &proc).await;
        let mut acked = true;
        for (_, _, sub) in service.subscriptions().iter().take(1) {
            acked &= fx.position(sub).await >= end;
        }
        match result {
            Ok(what) if acked => break what,
            other => {
                if restarted.elapsed() > WAIT {
                    panic!(
                        "{service:?} killed at {step}: not processed after the restart \
                         ({other:?}, acknowledged: {acked}):\n{}",
                        proc.log()
                    );
                }
            }
        }
        if let Some(st) = proc.exited()
            && service != Service::Trigger
        {
            panic!(
                "{service:?} exited ({st}) after the restart:\n{}",
                proc.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = restarted.elapsed();
    // Let it run a little longer: a late duplicate would show now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    service
        .check(&fx, &ids, &proc)
        .await
        .unwrap_or_else(|e| panic!("{service:?} at {step}, later: {e}\n{}", proc.log()));
    if service == Service::Trigger {
        let st = proc.exited();
        assert!(
            st.is_some_and(|s| s.success()),
            "the one-pass trigger ends with 0: {st:?}\n{}",
            proc.log()
        );
    }
    proc.kill9();
    let what = if at_kill.is_empty() {
        outcome
    } else {
        format!("at the kill: {at_kill}; after: {outcome}")
    };
    (to_kill, took, what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_service_killed_mid_event_finishes_the_work_once_after_a_restart() {
    support::init_tls();
    let only = std::env::var("KCI_CRASH_CASES").ok();
    let rounds = reliability_support::env_num("KCI_CRASH_ROUNDS", 1);
    let mut rows = Vec::new();
    for (service, step) in (0..rounds).flat_map(|_| CASES) {
        let name = format!("{}@{step}", service.binary());
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|c| name.contains(c)))
        {
            continue;
        }
        let (to_kill, took, what) = crash_case(*service, step).await;
        println!(
            "{name:40} kill after {:>6} ms, processed {:>6} ms after the restart: {what}",
            to_kill.as_millis(),
            took.as_millis()
        );
        rows.push(name);
    }
    assert!(!rows.is_empty(), "no case ran");
    println!(
        "{} kills, every one processed after the restart",
        rows.len()
    );
}

// ------------------------------------------------------------------------------------------
// dockerd down during a submit

/// A `dockerd` the test restarted itself, on the data and socket of a
/// [`kernelci::testsuite::docker::DockerEngine`]; dropping it stops it (SIGTERM by pid, then
/// SIGKILL after 30 s).
struct Dockerd(Option<Child>);

impl Dockerd {
    /// Starts dockerd again with the engine's directories (same images, same socket).
    fn restart(dir: &Path) -> Dockerd {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart dockerd");
        Dockerd(Some(child))
    }

    fn stop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `cmd` (a `docker` command) succeeds; returns its standard output.
fn docker_ok(engine: &kernelci::testsuite::docker::DockerEngine, args: &[&str]) -> Option<String> {
    let out = engine.cli().args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The job node of `checkout` once the scheduler finished with it (submitted or failed).
async fn scheduled_job(
    fx: &Fixture,
    checkout: ObjectId,
    proc: &mut ServiceProc,
) -> (Node, Duration) {
    let started = Instant::now();
    loop {
        let jobs = children(fx, checkout).await;
        assert!(jobs.len() <= 1, "duplicate job nodes: {jobs:?}");
        if let Some(job) = jobs.into_iter().next()
            && (job.data_path("job_id").is_some() || job.state == State::Done)
        {
            return (job, started.elapsed());
        }
        if let Some(st) = proc.exited() {
            panic!("the scheduler exited ({st}):\n{}", proc.log());
        }
        assert!(
            started.elapsed() < WAIT,
            "no job for {checkout} after {WAIT:?}:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `n` containers ran the job script: the runtime streams each container's output
/// to `job.log` in its job directory (under the scheduler's `output`), then removes the
/// container.
fn containers_ran(fx: &Fixture, engine: &kernelci::testsuite::docker::DockerEngine, n: usize) {
    let output = fx.dir.path().join("scheduler");
    let deadline = Instant::now() + WAIT;
    loop {
        let ran = std::fs::read_dir(&output)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_to_string(e.path().join("job.log"))
                            .is_ok_and(|l| l.contains("crash-test job"))
                    })
                    .count()
            })
            .unwrap_or(0);
        if ran >= n {
            assert_eq!(ran, n, "containers that ran the job");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ran} of {n} containers ran the job\n{}",
            engine.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The scheduler with the Docker runtime: a job runs; dockerd stops; the next job's submit
/// fails fast and is recorded on its node (`done`/`incomplete`, `submit_error`, a message
/// naming the Docker endpoint), the scheduler keeps running; dockerd comes back and the
/// following job runs in a container — same scheduler process, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_degrades_while_dockerd_is_down_and_recovers_without_a_restart() {
    use kernelci::testsuite::docker::{DockerEngine, busybox_rootfs};
    support::init_tls();
    let Some(mut engine) = DockerEngine::start() else {
        return;
    };
    let fx = Fixture::new().await;
    let rootfs = fx.dir.path().join("rootfs");
    busybox_rootfs(&rootfs).unwrap();
    engine.import_rootfs(&rootfs, "kci-crash:latest").unwrap();
    let storage = fx.dir.path().join("storage");
    std::fs::write(
        fx.dir.path().join("config/pipeline.yaml"),
        pipeline_yaml(
            &fx.server.url(),
            &storage,
            &fx.tree_url,
            Some(&engine.host()),
        ),
    )
    .unwrap();
    for (channel, promisc, id) in Service::Scheduler.subscriptions() {
        let sub = fx.api.subscribe(channel, promisc, Some(id)).await.unwrap();
        fx.api.unsubscribe(sub.id).await.unwrap();
    }
    let args = Service::Scheduler
        .args(&fx)
        .into_iter()
        .map(|a| if a == "shell" { "docker".to_owned() } else { a })
        .collect();
    let env = vec![
        ("KCI_API_TOKEN".to_owned(), fx.token.clone()),
        ("NO_DOCKER_PULL".to_owned(), "1".to_owned()),
    ];
    let mut proc = ServiceProc::new(bins_dir().join("kci-scheduler"), args, fx.dir.path(), env);
    proc.start(None);
    let pid = proc.child.as_ref().map(Child::id);

    // 1. dockerd up: the job runs (the runtime's client is connected from now on).
    let co = Service::Scheduler.provoke(&fx).await[0];
    let (job, t_first) = scheduled_job(&fx, co, &mut proc).await;
    assert!(
        job.data_path("job_id").is_some(),
        "first job: {job:?}\n{}",
        proc.log()
    );
    containers_ran(&fx, &engine, 1);

    // 2. dockerd down: the submit fails with a clear error on the node; the service lives.
    let stop_started = Instant::now();
    engine.stop();
    let t_stop = stop_started.elapsed();
    let co = Service::Scheduler.provoke(&fx).await[0];
    let (job, t_fail) = scheduled_job(&fx, co, &mut proc).await;
    assert_eq!(job.state, State::Done, "{job:?}\n{}", proc.log());
    assert_eq!(job.result, Some(ResultValue::Incomplete), "{job:?}");
    assert_eq!(job.data_str("error_code"), Some("submit_error"), "{job:?}");
    let msg = job.data_str("error_msg").unwrap_or("").to_owned();
    assert!(
        msg.contains("docker") || msg.contains("Docker") || msg.contains(&engine.host()),
        "the error names Docker: {msg}"
    );
    assert!(
        t_fail < Duration::from_secs(30),
        "the failure took {t_fail:?}"
    );
    assert!(
        proc.exited().is_none(),
        "the scheduler died:\n{}",
        proc.log()
    );

    // 3. dockerd back: the next event's job runs, same scheduler process.
    let restart_started = Instant::now();
    let _dockerd = Dockerd::restart(engine.dir.path());
    while docker_ok(&engine, &["version"]).is_none() {
        assert!(
            restart_started.elapsed() < WAIT,
            "dockerd did not come back:\n{}",
            engine.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let t_restart = restart_started.elapsed();
    let co = Service::Scheduler.provoke(&fx).await[0];
    let (job, t_back) = scheduled_job(&fx, co, &mut proc).await;
    assert!(
        job.data_path("job_id").is_some(),
        "after dockerd came back: {job:?}\n{}",
        proc.log()
    );
    containers_ran(&fx, &engine, 2);
    assert_eq!(
        proc.child.as_ref().map(Child::id),
        pid,
        "same scheduler process"
    );
    assert!(
        proc.exited().is_none(),
        "the scheduler died:\n{}",
        proc.log()
    );
    println!(
        "docker: first job scheduled in {} ms; dockerd stopped in {} ms; the submit failed \
         after {} ms with: {msg}; dockerd back in {} ms; next job submitted in {} ms",
        t_first.as_millis(),
        t_stop.as_millis(),
        t_fail.as_millis(),
        t_restart.as_millis(),
        t_back.as_millis()
    );
    proc.kill9();
}
