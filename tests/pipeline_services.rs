//! Each pipeline service against the real API server (and git repositories, local storage and
//! a real SMTP server made by the test): trigger, tarball, timeout in its three modes, the
//! regression tracker, job retry, and the reporter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kernelci::client::{ApiClient, Listener, ListenerConfig};
use kernelci::git::UpdateOptions;
use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, State, Timestamp};
use kernelci::pipeline::job_retry::JobRetry;
use kernelci::pipeline::regression::{RegressionOutcome, RegressionTracker};
use kernelci::pipeline::reporter::Reporter;
use kernelci::pipeline::tarball::{Tarball, TarballOptions};
use kernelci::pipeline::timeout::{TimeoutMode, TimeoutService};
use kernelci::pipeline::trigger::{
    BuildTarget, TreeSelection, Trigger, TriggerOptions, TriggerOutcome,
};
use kernelci::report::SmtpConfig;
use kernelci::storage::LocalStorage;
use kernelci::testsuite::smtp::SmtpServer;
use serde_json::json;
use support::{ADMIN_PASSWORD, TestServer};

async fn server() -> (tempfile::TempDir, TestServer, ApiClient) {
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
    (dir, server, api.with_token(token))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(kernelci::testsuite::peers::GIT.expect_program("git"))
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A kernel-like repository with one tagged commit; returns its URL and head.
fn kernel_repo(dir: &Path) -> (String, String) {
    git(dir, &["init", "-q", "-b", "master"]);
    std::fs::write(
        dir.join("Makefile"),
        "VERSION = 6\nPATCHLEVEL = 9\nSUBLEVEL = 0\nEXTRAVERSION = -rc2\n",
    )
    .unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "Linux 6.9-rc2"]);
    git(dir, &["tag", "-a", "v6.9-rc2", "-m", "v6.9-rc2"]);
    (
        format!("file://{}", dir.display()),
        git(dir, &["rev-parse", "HEAD"]),
    )
}

fn target(url: &str, tree: &str) -> BuildTarget {
    BuildTarget {
        build_config: format!("{tree}-master"),
        tree: tree.into(),
        url: url.into(),
        branch: "master".into(),
        architectures: Some(vec!["x86_64".into(), "arm64".into()]),
        frequency: None,
    }
}

fn created(outcome: &TriggerOutcome) -> &Node {
    match outcome {
        TriggerOutcome::Created(n) => n,
        other => panic!("expected a checkout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_creates_checkouts_once() {
    let (_d, _s, api) = server().await;
    let me = api.whoami().await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    let (url, head) = kernel_repo(repo.path());
    let mut missing = target(&url, "next");
    missing.branch = "nope".into();
    let targets = vec![target(&url, "mainline"), missing];
    let trigger = Trigger::new(targets.clone(), TriggerOptions::default());

    let before = Timestamp::now();
    let out = trigger.pass(&api, &me).await.unwrap();
    assert_eq!(out[1].1, TriggerOutcome::NoHead);
    let node = created(&out[0].1);
    assert_eq!(node.kind, "checkout");
    assert_eq!(node.name, "checkout");
    assert_eq!(node.path, ["checkout"]);
    assert_eq!(node.state, State::Running);
    assert_eq!(node.result, None);
    assert_eq!(node.data_str("kernel_revision.commit"), Some(head.as_str()));
    assert_eq!(node.data_str("kernel_revision.tree"), Some("mainline"));
    assert_eq!(node.data_str("kernel_revision.url"), Some(url.as_str()));
    assert_eq!(
        node.data_path("architecture_filter"),
        Some(&json!(["x86_64", "arm64"]))
    );
    assert_eq!(
        node.submitter.clone().unwrap(),
        format!("user:{}", me.email)
    );
    let treeid = node.treeid.clone().unwrap();
    assert_eq!(treeid.len(), 64);
    assert!(treeid.chars().all(|c| c.is_ascii_hexdigit()));
    let timeout_secs = (node.timeout.micros() - before.micros()) / 1_000_000;
    assert!(
        (180 * 60 - 5..=180 * 60 + 5).contains(&timeout_secs),
        "{timeout_secs}"
    );

    // Again: it exists.
    let out = trigger.pass(&api, &me).await.unwrap();
    assert_eq!(out[0].1, TriggerOutcome::Exists(head.clone()));
    // Forced: a second checkout.
    let forced = Trigger::new(
        targets.clone(),
        TriggerOptions {
            force: true,
            ..TriggerOptions::default()
        },
    );
    let out = forced.pass(&api, &me).await.unwrap();
    created(&out[0].1);
    assert_eq!(api.count_nodes(&[("kind", "checkout")]).await.unwrap(), 2);

    // Excluded tree.
    let excluded = Trigger::new(
        targets.clone(),
        TriggerOptions {
            trees: TreeSelection::parse(Some("!mainline")),
            force: true,
            ..TriggerOptions::default()
        },
    );
    let out = excluded.pass(&api, &me).await.unwrap();
    assert_eq!(out[0].1, TriggerOutcome::NotSelected);

    // Frequency: one checkout per day at most.
    let mut daily = target(&url, "mainline");
    daily.frequency = Some("1d".into());
    let t = Trigger::new(vec![daily], TriggerOptions::default());
    assert_eq!(
        t.pass(&api, &me).await.unwrap()[0].1,
        TriggerOutcome::TooRecent
    );

    // Three incomplete attempts: no more.
    for n in api.find_all_nodes(&[("kind", "checkout")]).await.unwrap() {
        let mut n = n;
        n.state = State::Done;
        n.result = Some(ResultValue::Incomplete);
        api.update_node(&n, false).await.unwrap();
    }
    // Two incomplete, none complete: a new attempt is made.
    let out = trigger.pass(&api, &me).await.unwrap();
    let third = created(&out[0].1).clone();
    let mut third = third;
    third.state = State::Done;
    third.result = Some(ResultValue::Incomplete);
    api.update_node(&third, false).await.unwrap();
    let out = forced.pass(&api, &me).await.unwrap();
    assert_eq!(out[0].1, TriggerOutcome::TooManyIncomplete(head));
}

fn tarball_service(url: &str, work: &Path, storage_dir: &Path) -> Tarball {
    let storage = LocalStorage::new(storage_dir, "http://storage.example.org/files/").unwrap();
    Tarball::new(
        vec![target(url, "mainline")],
        Arc::new(storage),
        TarballOptions {
            kdir: work.join("linux"),
            output: work.join("out"),
            update: UpdateOptions::default(),
            holdoff: Duration::from_secs(600),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarball_makes_uploads_and_updates_the_checkout() {
    let (_d, _s, api) = server().await;
    let me = api.whoami().await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    let (url, head) = kernel_repo(repo.path());
    let work = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let tarball = tarball_service(&url, work.path(), store.path());
    let trigger = Trigger::new(vec![target(&url, "mainline")], TriggerOptions::default());
    let node = created(&trigger.pass(&api, &me).await.unwrap()[0].1).clone();

    let before = Timestamp::now();
    let updated = tarball.process(&api, node.clone()).await.unwrap().unwrap();
    assert_eq!(updated.state, State::Available);
    assert_eq!(updated.result, Some(ResultValue::Pass));
    let name = "linux-mainline-master-v6.9-rc2";
    assert_eq!(
        updated.artifacts.as_ref().unwrap()["tarball"],
        json!(format!("http://storage.example.org/files/{name}.tar.gz"))
    );
    assert!(store.path().join(format!("{name}.tar.gz")).is_file());
    assert_eq!(
        std::fs::read_dir(work.path().join("out")).unwrap().count(),
        0,
        "local tarball removed after the upload"
    );
    let rev = updated.data_path("kernel_revision").unwrap();
    assert_eq!(rev["describe"], "v6.9-rc2");
    assert_eq!(rev["version"]["version"], 6);
    assert_eq!(rev["version"]["patchlevel"], 9);
    assert_eq!(rev["version"]["extra"], "-rc2");
    assert_eq!(rev["commit_tags"], json!(["v6.9-rc2"]));
    assert_eq!(rev["commit_message"], "Linux 6.9-rc2");
    assert_eq!(rev["tip_of_branch"], true);
    assert_eq!(rev["commit"], json!(head));
    let holdoff = updated.holdoff.unwrap();
    let secs = (holdoff.micros() - before.micros()) / 1_000_000;
    assert!((595..=605).contains(&secs), "{secs}");
    let stored = api.get_node(updated.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.state, State::Available);

    // A replayed event for a node already handled does nothing.
    assert!(tarball.process(&api, stored).await.unwrap().is_none());

    // A commit that is not in the repository: done/fail, git_checkout_failure.
    let mut bogus = Node::new(NodeKind::Checkout, "checkout");
    bogus.data = json!({"kernel_revision": {"tree": "mainline", "url": url, "branch": "master",
        "commit": "0123456789abcdef0123456789abcdef01234567"}})
    .as_object()
    .cloned();
    let bogus = api.create_node(&bogus).await.unwrap();
    let failed = tarball.process(&api, bogus).await.unwrap().unwrap();
    assert_eq!(failed.state, State::Done);
    assert_eq!(failed.result, Some(ResultValue::Fail));
    assert_eq!(failed.data_str("error_code"), Some("git_checkout_failure"));
    assert!(
        failed
            .data_str("error_msg")
            .unwrap()
            .starts_with("Failed to checkout commit"),
        "{:?}",
        failed.data_str("error_msg")
    );

    // A tree without a build config is ignored.
    let mut other = Node::new(NodeKind::Checkout, "checkout");
    other.data = json!({"kernel_revision": {"tree": "other", "url": url, "branch": "master",
        "commit": head}})
    .as_object()
    .cloned();
    let other = api.create_node(&other).await.unwrap();
    assert!(tarball.process(&api, other).await.unwrap().is_none());
}

async fn child(api: &ApiClient, parent: &Node, kind: NodeKind, name: &str, state: State) -> Node {
    let mut n = Node::new(kind, name);
    n.parent = parent.id;
    n.path = parent
        .path
        .iter()
        .cloned()
        .chain([name.to_owned()])
        .collect();
    n.state = state;
    n.group = Some(name.into());
    api.create_node(&n).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_holdoff_and_closing() {
    let (_d, _s, api) = server().await;
    let me = api.whoami().await.unwrap().username;
    let now = Timestamp::now();

    // timeout: a running node past its timeout, one with a result, one not yet due.
    let mut late = Node::new(NodeKind::Checkout, "checkout");
    late.timeout = now.plus_secs(-10);
    let late = api.create_node(&late).await.unwrap();
    let mut late_pass = Node::new(NodeKind::Checkout, "checkout");
    late_pass.timeout = now.plus_secs(-10);
    late_pass.state = State::Available;
    late_pass.result = Some(ResultValue::Pass);
    let late_pass = api.create_node(&late_pass).await.unwrap();
    let fresh = api
        .create_node(&Node::new(NodeKind::Checkout, "checkout"))
        .await
        .unwrap();
    let timeout = TimeoutService::new(TimeoutMode::Timeout, Duration::ZERO);
    assert!(
        timeout
            .pass(&api, "somebody-else")
            .await
            .unwrap()
            .is_empty(),
        "only own nodes"
    );
    let changed = timeout.pass(&api, &me).await.unwrap();
    assert_eq!(changed.len(), 2);
    let late = api.get_node(late.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(late.state, State::Done);
    assert_eq!(late.result, Some(ResultValue::Incomplete));
    assert_eq!(late.data_str("error_code"), Some("node_timeout"));
    assert_eq!(late.data_str("error_msg"), Some("Node timed-out"));
    let late_pass = api.get_node(late_pass.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(late_pass.state, State::Done);
    assert_eq!(late_pass.result, Some(ResultValue::Pass));
    assert_eq!(late_pass.data_str("error_code"), None);
    let fresh = api.get_node(fresh.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(fresh.state, State::Running);

    // holdoff: a checkout whose only pending node is a grandchild below a finished job.
    let mut co = Node::new(NodeKind::Checkout, "checkout");
    co.state = State::Available;
    co.result = Some(ResultValue::Pass);
    co.holdoff = Some(now.plus_secs(-5));
    let co = api.create_node(&co).await.unwrap();
    let job = child(&api, &co, NodeKind::Job, "kunit", State::Done).await;
    let test = child(&api, &job, NodeKind::Test, "suite", State::Running).await;
    // And a checkout without pending children, and one whose holdoff is still ahead.
    let mut lone = Node::new(NodeKind::Checkout, "checkout");
    lone.state = State::Available;
    lone.holdoff = Some(now.plus_secs(-5));
    let lone = api.create_node(&lone).await.unwrap();
    child(&api, &lone, NodeKind::Job, "done-job", State::Done).await;
    let mut early = Node::new(NodeKind::Checkout, "checkout");
    early.state = State::Available;
    early.holdoff = Some(now.plus_secs(600));
    let early = api.create_node(&early).await.unwrap();

    let holdoff = TimeoutService::new(TimeoutMode::Holdoff, Duration::ZERO);
    holdoff.pass(&api, &me).await.unwrap();
    let get = |id: Option<ObjectId>| {
        let api = api.clone();
        async move { api.get_node(id.unwrap()).await.unwrap().unwrap() }
    };
    assert_eq!(get(co.id).await.state, State::Closing, "grandchild pending");
    assert_eq!(get(lone.id).await.state, State::Done);
    assert_eq!(get(early.id).await.state, State::Available);

    // closing: stays while the grandchild runs, done once it finished.
    let closing = TimeoutService::new(TimeoutMode::Closing, Duration::ZERO);
    assert!(closing.pass(&api, &me).await.unwrap().is_empty());
    assert_eq!(get(co.id).await.state, State::Closing);
    let mut t = get(test.id).await;
    t.state = State::Done;
    t.result = Some(ResultValue::Pass);
    api.update_node(&t, false).await.unwrap();
    let changed = closing.pass(&api, &me).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(get(co.id).await.state, State::Done);
    assert_eq!(get(co.id).await.result, Some(ResultValue::Pass));
}

/// A checkout of `commit` with a kbuild and a test below it; returns the test.
async fn run_of(api: &ApiClient, commit: &str, result: ResultValue) -> (Node, Node) {
    let rev = json!({"tree": "mainline", "branch": "master",
        "url": "https://git.example.org/linux.git", "commit": commit});
    let mut co = Node::new(NodeKind::Checkout, "checkout");
    co.data = json!({"kernel_revision": rev}).as_object().cloned();
    co.state = State::Available;
    let co = api.create_node(&co).await.unwrap();
    let mut job = Node::new(NodeKind::Job, "kselftest");
    job.parent = co.id;
    job.path = vec!["checkout".into(), "kselftest".into()];
    job.group = Some("kselftest".into());
    job.data = json!({"kernel_revision": rev, "arch": "x86_64", "platform": "qemu",
        "defconfig": "defconfig", "compiler": "gcc-12"})
    .as_object()
    .cloned();
    job.artifacts =
        json!({"lava_log": "http://logs.example.org/log.txt", "other": "http://x.example.org/y"})
            .as_object()
            .cloned();
    job.state = State::Done;
    job.result = Some(ResultValue::Pass);
    let job = api.create_node(&job).await.unwrap();
    let mut test = Node::new(NodeKind::Test, "exec");
    test.parent = job.id;
    test.path = vec!["checkout".into(), "kselftest".into(), "exec".into()];
    test.group = Some("kselftest".into());
    test.data = job.data.clone();
    test.state = State::Done;
    test.result = Some(result);
    let test = api.create_node(&test).await.unwrap();
    (job, test)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regressions_are_found_tracked_and_closed() {
    let (_d, _s, api) = server().await;
    let tracker = RegressionTracker::new(false);
    let (_, t1) = run_of(&api, "aaaa", ResultValue::Pass).await;
    assert_eq!(
        tracker.track(&api, &t1).await.unwrap(),
        RegressionOutcome::Unchanged
    );
    let (job2, t2) = run_of(&api, "bbbb", ResultValue::Fail).await;
    // Tracking the job walks down to the failing test.
    let outcomes = tracker.track_tree(&api, job2.clone()).await.unwrap();
    let reg = outcomes
        .iter()
        .find_map(|(_, o)| match o {
            RegressionOutcome::Created(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a regression");
    assert_eq!(reg.kind, "regression");
    assert_eq!(reg.name, "exec");
    assert_eq!(reg.path, t2.path);
    assert_eq!(reg.group.as_deref(), Some("kselftest"));
    assert_eq!(reg.state, State::Done);
    assert_eq!(reg.result, Some(ResultValue::Fail));
    let data = reg.data.as_ref().unwrap();
    assert_eq!(data["fail_node"], json!(t2.id));
    assert_eq!(data["pass_node"], json!(t1.id));
    assert_eq!(data["failed_kernel_revision"]["commit"], "bbbb");
    assert_eq!(data["platform"], "qemu");
    assert_eq!(data["node_sequence"], json!([]));
    assert_eq!(
        reg.artifacts.clone().unwrap(),
        *json!({"lava_log": "http://logs.example.org/log.txt"})
            .as_object()
            .unwrap()
    );
    let t2_now = api.get_node(t2.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(t2_now.data_path("regression"), Some(&json!(reg.id)));

    // Replayed: nothing new.
    assert_eq!(
        tracker.track(&api, &t2).await.unwrap(),
        RegressionOutcome::AlreadyTracked(reg.id.unwrap())
    );
    assert_eq!(api.count_nodes(&[("kind", "regression")]).await.unwrap(), 1);

    // Still failing: appended once.
    let (_, t3) = run_of(&api, "cccc", ResultValue::Fail).await;
    assert_eq!(
        tracker.track(&api, &t3).await.unwrap(),
        RegressionOutcome::StillFailing(reg.id.unwrap())
    );
    assert_eq!(
        tracker.track(&api, &t3).await.unwrap(),
        RegressionOutcome::Unchanged
    );
    // Fixed.
    let (_, t4) = run_of(&api, "dddd", ResultValue::Pass).await;
    assert_eq!(
        tracker.track(&api, &t4).await.unwrap(),
        RegressionOutcome::Fixed(reg.id.unwrap())
    );
    let reg = api.get_node(reg.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(reg.result, Some(ResultValue::Pass));
    assert_eq!(reg.data_path("node_sequence"), Some(&json!([t3.id, t4.id])));
    assert_eq!(api.count_nodes(&[("kind", "regression")]).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_retry_publishes_the_ancestor() {
    let (_d, _s, api) = server().await;
    let co = api
        .create_node(&Node::new(NodeKind::Checkout, "checkout"))
        .await
        .unwrap();
    let kbuild = child(
        &api,
        &co,
        NodeKind::Kbuild,
        "kbuild-gcc-12-x86",
        State::Available,
    )
    .await;
    let mut job = Node::new(NodeKind::Job, "baseline-x86");
    job.parent = kbuild.id;
    job.path = vec![
        "checkout".into(),
        "kbuild-gcc-12-x86".into(),
        "baseline-x86".into(),
    ];
    job.state = State::Done;
    job.result = Some(ResultValue::Fail);
    job.data = json!({"platform": "qemu-x86"}).as_object().cloned();
    let job = api.create_node(&job).await.unwrap();

    let mut listener = Listener::new(api.clone(), ListenerConfig::new("retry"));
    listener.start().await.unwrap();
    let retry = JobRetry::new(false);
    let sent = retry.process(&api, &job).await.unwrap().unwrap();
    assert_eq!(sent.id, kbuild.id);
    assert_eq!(sent.kind, "kbuild");
    assert_eq!(sent.state, State::Available);
    assert_eq!(sent.jobfilter, Some(vec!["baseline-x86".into()]));
    assert_eq!(sent.platform_filter, Some(vec!["qemu-x86".into()]));
    assert_eq!(sent.retry_counter, 1);
    let ev = tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.event.data["id"], json!(kbuild.id));
    assert_eq!(ev.event.data["jobfilter"], json!(["baseline-x86"]));
    assert_eq!(ev.event.data["debug"]["retry_by"], json!(job.id));
    // The stored kbuild is unchanged.
    let stored = api.get_node(kbuild.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.retry_counter, 0);
    assert_eq!(stored.jobfilter, None);

    // An incomplete kbuild: the checkout, with "<kbuild>+".
    let mut kb = kbuild.clone();
    kb.state = State::Done;
    kb.result = Some(ResultValue::Incomplete);
    kb.retry_counter = 2;
    let up = retry.retry_for(&api, &kb).await.unwrap().unwrap();
    assert_eq!(up.id, co.id);
    assert_eq!(up.jobfilter, Some(vec!["kbuild-gcc-12-x86+".into()]));
    assert_eq!(up.retry_counter, 3);
    // Retried three times already; a failing non-boot job; a passing one: no retry.
    kb.retry_counter = 3;
    assert!(retry.retry_for(&api, &kb).await.unwrap().is_none());
    let mut other = job.clone();
    other.name = "kselftest".into();
    assert!(retry.retry_for(&api, &other).await.unwrap().is_none());
    other.result = Some(ResultValue::Pass);
    assert!(retry.retry_for(&api, &other).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_gathered_and_sent_over_smtp() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let (_d, _s, api) = server().await;
    let rev = json!({"tree": "mainline", "branch": "master", "describe": "v6.9-rc2",
        "url": "https://git.example.org/linux.git", "commit": "abcdef0123456789"});
    let mut co = Node::new(NodeKind::Checkout, "checkout");
    co.data = json!({"kernel_revision": rev}).as_object().cloned();
    co.state = State::Done;
    co.result = Some(ResultValue::Pass);
    let co = api.create_node(&co).await.unwrap();
    let mk = |name: &str, parent: &Node, group: &str, result: Option<ResultValue>| {
        let mut n = Node::new(NodeKind::Test, name);
        n.parent = parent.id;
        n.path = parent
            .path
            .iter()
            .cloned()
            .chain([name.to_owned()])
            .collect();
        n.group = Some(group.into());
        n.data = json!({"kernel_revision": rev}).as_object().cloned();
        n.state = State::Done;
        n.result = result;
        n
    };
    let mut kb = mk(
        "kbuild-gcc-12-x86",
        &co,
        "kbuild-gcc-12-x86",
        Some(ResultValue::Pass),
    );
    kb.kind = "kbuild".into();
    let kb = api.create_node(&kb).await.unwrap();
    let mut job = mk("kunit-x86_64", &kb, "kunit-x86_64", Some(ResultValue::Fail));
    job.kind = "job".into();
    let job = api.create_node(&job).await.unwrap();
    let suite = api
        .create_node(&mk("exec", &job, "kunit-x86_64", Some(ResultValue::Fail)))
        .await
        .unwrap();
    api.create_node(&mk(
        "ok_case",
        &suite,
        "kunit-x86_64",
        Some(ResultValue::Pass),
    ))
    .await
    .unwrap();
    api.create_node(&mk(
        "bad_case",
        &suite,
        "kunit-x86_64",
        Some(ResultValue::Fail),
    ))
    .await
    .unwrap();

    let config = SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port(),
        user: None,
        password: None,
        sender: "bot@kernelci.org".into(),
        recipients: vec!["a@example.org,b@example.org".into()],
        timeout: Duration::from_secs(20),
    };
    let reporter = Reporter::new(Some(config), false);
    let report = reporter.report(&api, co.id.unwrap(), true).await.unwrap();
    let expected = "\
[STAGING] mainline/master v6.9-rc2: 2 runs 1 failures

Summary
=======

Tree:     mainline
Branch:   master
Describe: v6.9-rc2
URL:      https://git.example.org/linux.git
SHA1:     abcdef0123456789

Name              | Result   | Total    | Failures
------------------+----------+----------+---------
kbuild-gcc-12-x86 | pass     |        1 |        0
kunit-x86_64      | fail     |        2 |        1


Failing tests
=============

kunit-x86_64
------------

* exec.bad_case
";
    assert_eq!(report.body(), expected);
    let mails = smtp.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(mails.len(), 1, "{}", smtp.log());
    let m = &mails[0];
    assert_eq!(
        m.header("Subject"),
        Some("[STAGING] mainline/master v6.9-rc2: 2 runs 1 failures")
    );
    assert_eq!(m.header("From"), Some("bot@kernelci.org"));
    assert_eq!(m.header("To"), Some("a@example.org, b@example.org"));
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/mixed"),
        "{:?}",
        m.headers
    );
    assert_eq!(
        m.part_header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        m.part_header("Content-Transfer-Encoding"),
        Some("quoted-printable")
    );
    assert_eq!(m.text.replace("\r\n", "\n"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_sent_with_smtp_login() {
    let Some(smtp) = SmtpServer::start_with_auth("reporter", "s3cret") else {
        return;
    };
    let mut config = SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port(),
        user: Some("reporter".into()),
        password: Some("s3cret".into()),
        sender: "bot@kernelci.org".into(),
        recipients: vec!["dev@example.org".into()],
        timeout: Duration::from_secs(20),
    };
    kernelci::report::send(&config, "hello", "body é\n")
        .await
        .unwrap();
    let mails = smtp.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(mails.len(), 1, "{}", smtp.log());
    assert_eq!(mails[0].header("Subject"), Some("hello"));
    assert_eq!(mails[0].text.replace("\r\n", "\n"), "body é\n");
    assert!(smtp.log().contains(" ok"), "{}", smtp.log());

    // A wrong password is an error, and nothing is delivered.
    config.password = Some("wrong".into());
    config.timeout = Duration::from_secs(3);
    let err = kernelci::report::send(&config, "again", "x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), kernelci::ErrorKind::Unavailable);
    assert!(smtp.log().contains("refused"), "{}", smtp.log());
    // Without a login the server refuses the message.
    config.user = None;
    let refused = kernelci::report::send(&config, "again", "x")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("530"), "{refused}");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_loop_mode_picks_up_new_commits_until_stopped() {
    use kernelci::pipeline::service::ServiceContext;
    let (_d, _s, api) = server().await;
    let repo = tempfile::tempdir().unwrap();
    let (url, _) = kernel_repo(repo.path());
    let trigger = Trigger::new(
        vec![target(&url, "mainline")],
        TriggerOptions {
            poll_period: Duration::from_millis(200),
            ..TriggerOptions::default()
        },
    );
    let ctx = ServiceContext::new("trigger", api.clone());
    let c2 = ctx.clone();
    let task = tokio::spawn(async move { trigger.run(&c2).await });
    let count = || async { api.count_nodes(&[("kind", "checkout")]).await.unwrap() };
    for _ in 0..100 {
        if count().await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count().await, 1);
    std::fs::write(repo.path().join("NEW"), "x\n").unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "new"]);
    for _ in 0..100 {
        if count().await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count().await, 2, "one checkout per commit");
    ctx.shutdown().trigger();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
