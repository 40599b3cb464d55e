//! One revision through the pipeline services, against the real API server, a git repository
//! made by the test (a kernel-style Makefile, no tags: the version comes from the Makefile),
//! local storage and a real SMTP server:
//!
//! trigger → checkout node → tarball service (uploaded, checkout `available` with
//! describe/version) → results (no scheduler here: a kbuild, a job still running, then the
//! job's result hierarchy with one failing test, posted through the API) → timeout holdoff
//! (checkout `closing` while the job runs) and closing (checkout `done`) → the report arrives
//! at the SMTP server in the exact format. Then a second commit where a test flips from pass
//! to fail → a regression node, and a second report.
//!
//! The services run as they do in their binaries: durable event loops (`<name>:node`) and
//! poll loops, sharing one shutdown signal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kernelci::client::{ApiClient, Hierarchy};
use kernelci::git::UpdateOptions;
use kernelci::models::{Node, NodeKind, ResultValue, State, Timestamp};
use kernelci::pipeline::regression::RegressionTracker;
use kernelci::pipeline::reporter::Reporter;
use kernelci::pipeline::service::{ServiceContext, Shutdown};
use kernelci::pipeline::tarball::{Tarball, TarballOptions};
use kernelci::pipeline::timeout::{TimeoutMode, TimeoutService};
use kernelci::pipeline::trigger::{BuildTarget, Trigger, TriggerOptions, TriggerOutcome};
use kernelci::report::SmtpConfig;
use kernelci::storage::LocalStorage;
use kernelci::testsuite::smtp::SmtpServer;
use serde_json::{Value, json};
use support::{ADMIN_PASSWORD, TestServer};
use tokio::task::JoinHandle;

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

const MAKEFILE: &str = "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 10\nSUBLEVEL = 0\nEXTRAVERSION = -rc1\nNAME = Baby Opossum Posse\n\nall:\n\t@echo \"  LD      vmlinux\"\n";

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn state_of(api: &ApiClient, node: &Node) -> State {
    api.get_node(node.id.unwrap()).await.unwrap().unwrap().state
}

/// The simulated results of one revision: a kbuild, a job still running, then the job's
/// hierarchy with tests `flip` (given result) and `broken` (always failing).
struct Results {
    kbuild: Node,
    job: Node,
}

async fn start_results(api: &ApiClient, checkout: &Node) -> Results {
    let rev = checkout.data_path("kernel_revision").unwrap().clone();
    let data = json!({"kernel_revision": rev, "arch": "x86_64", "defconfig": "defconfig",
        "compiler": "gcc-12", "platform": "qemu-x86"});
    let mut kbuild = Node::new(NodeKind::Kbuild, "kbuild-gcc-12-x86");
    kbuild.parent = checkout.id;
    kbuild.path = vec!["checkout".into(), "kbuild-gcc-12-x86".into()];
    kbuild.group = Some("kbuild-gcc-12-x86".into());
    kbuild.data = data.as_object().cloned();
    kbuild.state = State::Available;
    kbuild.result = Some(ResultValue::Pass);
    kbuild.holdoff = Some(Timestamp::now().plus_secs(-1));
    let kbuild = api.create_node(&kbuild).await.unwrap();
    let mut job = Node::new(NodeKind::Job, "kselftest-exec");
    job.parent = kbuild.id;
    job.path = vec![
        "checkout".into(),
        "kbuild-gcc-12-x86".into(),
        "kselftest-exec".into(),
    ];
    job.group = Some("kselftest-exec".into());
    job.data = data.as_object().cloned();
    let job = api.create_node(&job).await.unwrap();
    Results { kbuild, job }
}

async fn finish_results(api: &ApiClient, r: &Results, flip: ResultValue) -> Vec<Node> {
    let mut job = r.job.clone();
    job.state = State::Done;
    job.result = Some(ResultValue::Pass);
    let test = |name: &str, result: ResultValue| {
        let mut t = Node::new(NodeKind::Test, name);
        t.path = job.path.iter().cloned().chain([name.to_owned()]).collect();
        t.group = job.group.clone();
        t.data = job.data.clone();
        t.state = State::Done;
        t.result = Some(result);
        Hierarchy {
            node: t,
            child_nodes: vec![],
        }
    };
    let tree = Hierarchy {
        node: job.clone(),
        child_nodes: vec![test("flip", flip), test("broken", ResultValue::Fail)],
    };
    let written = api.submit_results(&tree).await.unwrap();
    let _ = &r.kbuild;
    written
}

/// The timeout service's holdoff and closing loops, until `stop`.
fn timeout_loops(api: &ApiClient, stop: &Shutdown) -> Vec<JoinHandle<()>> {
    [TimeoutMode::Holdoff, TimeoutMode::Closing]
        .into_iter()
        .map(|mode| {
            let ctx = ServiceContext::new(format!("timeout-{mode}"), api.clone())
                .with_shutdown(stop.clone());
            tokio::spawn(async move {
                TimeoutService::new(mode, Duration::from_millis(200))
                    .run(&ctx)
                    .await
                    .unwrap();
            })
        })
        .collect()
}

fn expected_report(checkout: &Node, url: &str, commit: &str, failing: &[&str]) -> String {
    let describe = checkout.data_str("kernel_revision.describe").unwrap();
    let mut s = format!(
        "[STAGING] mainline/master {describe}: 2 runs 0 failures

Summary
=======

Tree:     mainline
Branch:   master
Describe: {describe}
URL:      {url}
SHA1:     {commit}

Name              | Result   | Total    | Failures
------------------+----------+----------+---------
kbuild-gcc-12-x86 | pass     |        1 |        0
kselftest-exec    | pass     |        2 | {:>8}


Failing tests
=============

kselftest-exec
--------------

",
        failing.len()
    );
    for f in failing {
        s.push_str(&format!("* {f}\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_revision_through_the_services_then_a_regression() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
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
    let api = api.with_token(token);
    let me = api.whoami().await.unwrap();

    // The kernel tree.
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "master"]);
    std::fs::write(repo.path().join("Makefile"), MAKEFILE).unwrap();
    std::fs::create_dir_all(repo.path().join("kernel")).unwrap();
    std::fs::write(
        repo.path().join("kernel/fork.c"),
        "int fork(void) { return 0; }\n",
    )
    .unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "Initial commit"]);
    let commit1 = git(repo.path(), &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.path().display());
    let targets = vec![BuildTarget {
        build_config: "mainline".into(),
        tree: "mainline".into(),
        url: url.clone(),
        branch: "master".into(),
        architectures: None,
        frequency: None,
    }];

    // The services: durable positions registered first, as a deployed service would have.
    for sub in ["tarball:node", "reporter:node", "regression:node"] {
        let s = api.subscribe("node", false, Some(sub)).await.unwrap();
        api.unsubscribe(s.id).await.unwrap();
    }
    let stop = Shutdown::new();
    let storage_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(storage_dir.path(), "http://files.example.org/").unwrap();
    let tarball = Tarball::new(
        targets.clone(),
        Arc::new(storage),
        TarballOptions {
            kdir: work.path().join("linux"),
            output: work.path().join("output"),
            update: UpdateOptions::default(),
            holdoff: Duration::from_secs(1),
        },
    );
    let smtp_config = SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port(),
        user: None,
        password: None,
        sender: "bot@kernelci.org".into(),
        recipients: vec!["kernel@example.org".into()],
        timeout: Duration::from_secs(20),
    };
    let ctx = |name: &str| ServiceContext::new(name, api.clone()).with_shutdown(stop.clone());
    let mut tasks = Vec::new();
    {
        let c = ctx("tarball");
        tasks.push(tokio::spawn(async move { tarball.run(&c).await.unwrap() }));
        let c = ctx("reporter");
        let reporter = Reporter::new(Some(smtp_config), false);
        tasks.push(tokio::spawn(async move { reporter.run(&c).await.unwrap() }));
        let c = ctx("regression");
        tasks.push(tokio::spawn(async move {
            RegressionTracker::new(false).run(&c).await.unwrap()
        }));
    }
    let trigger = Trigger::new(targets.clone(), TriggerOptions::default());

    // ---- Revision 1.
    let out = trigger.pass(&api, &me).await.unwrap();
    let TriggerOutcome::Created(checkout) = &out[0].1 else {
        panic!("{out:?}")
    };
    let checkout = *checkout.clone();
    wait_until("the checkout to be available", || async {
        state_of(&api, &checkout).await == State::Available
    })
    .await;
    let checkout = api.get_node(checkout.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(checkout.result, Some(ResultValue::Pass));
    let describe = checkout
        .data_str("kernel_revision.describe")
        .unwrap()
        .to_owned();
    assert_eq!(
        describe,
        git(repo.path(), &["describe", "--always", &commit1])
    );
    assert_eq!(
        checkout.data_path("kernel_revision.version"),
        Some(
            &json!({"version": 6, "patchlevel": 10, "sublevel": 0, "extra": "-rc1",
            "name": "Baby Opossum Posse"})
        )
    );
    let name = format!("linux-mainline-master-{describe}");
    assert_eq!(
        checkout.artifacts.as_ref().unwrap()["tarball"],
        Value::String(format!("http://files.example.org/{name}.tar.gz"))
    );
    let tarball_path = storage_dir.path().join(format!("{name}.tar.gz"));
    assert!(tarball_path.is_file());
    let listing = Command::new("tar")
        .args(["-tzf", tarball_path.to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains(&format!("{name}/Makefile")), "{listing}");
    assert!(
        listing.contains(&format!("{name}/kernel/fork.c")),
        "{listing}"
    );

    // Results arrive; the job still runs when the holdoff is over.
    let results = start_results(&api, &checkout).await;
    let timeouts = Shutdown::new();
    let loops = timeout_loops(&api, &timeouts);
    wait_until("the checkout to be closing", || async {
        state_of(&api, &checkout).await == State::Closing
    })
    .await;
    assert_ne!(state_of(&api, &results.kbuild).await, State::Done);
    let written = finish_results(&api, &results, ResultValue::Pass).await;
    let flip1 = written.iter().find(|n| n.name == "flip").unwrap().clone();
    wait_until("the checkout to be done", || async {
        state_of(&api, &checkout).await == State::Done
    })
    .await;
    assert_eq!(state_of(&api, &results.kbuild).await, State::Done);
    timeouts.trigger();
    for l in loops {
        l.await.unwrap();
    }

    // The report.
    let mails = smtp.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(mails.len(), 1, "{}", smtp.log());
    let expected = expected_report(&checkout, &url, &commit1, &["broken"]);
    assert_eq!(
        mails[0].header("Subject"),
        Some(expected.lines().next().unwrap())
    );
    assert_eq!(mails[0].header("To"), Some("kernel@example.org"));
    assert_eq!(mails[0].header("From"), Some("bot@kernelci.org"));
    assert_eq!(mails[0].text.replace("\r\n", "\n"), expected);

    // ---- Revision 2: the test `flip` fails now.
    std::fs::write(
        repo.path().join("kernel/fork.c"),
        "int fork(void) { return -1; }\n",
    )
    .unwrap();
    git(repo.path(), &["commit", "-q", "-am", "Break fork"]);
    let commit2 = git(repo.path(), &["rev-parse", "HEAD"]);
    let out = trigger.pass(&api, &me).await.unwrap();
    let TriggerOutcome::Created(checkout2) = &out[0].1 else {
        panic!("{out:?}")
    };
    let checkout2 = *checkout2.clone();
    assert_eq!(
        checkout2.data_str("kernel_revision.commit"),
        Some(commit2.as_str())
    );
    wait_until("the second checkout to be available", || async {
        state_of(&api, &checkout2).await == State::Available
    })
    .await;
    let checkout2 = api.get_node(checkout2.id.unwrap()).await.unwrap().unwrap();
    let results = start_results(&api, &checkout2).await;
    let written = finish_results(&api, &results, ResultValue::Fail).await;
    let flip2 = written.iter().find(|n| n.name == "flip").unwrap().clone();
    let timeouts = Shutdown::new();
    let loops = timeout_loops(&api, &timeouts);
    wait_until("the second checkout to be done", || async {
        state_of(&api, &checkout2).await == State::Done
    })
    .await;
    timeouts.trigger();
    for l in loops {
        l.await.unwrap();
    }

    wait_until("a regression", || async {
        api.count_nodes(&[("kind", "regression")]).await.unwrap() >= 1
    })
    .await;
    let regs = api.find_all_nodes(&[("kind", "regression")]).await.unwrap();
    assert_eq!(regs.len(), 1, "only `flip` regressed: {regs:?}");
    let reg = &regs[0];
    assert_eq!(reg.name, "flip");
    assert_eq!(reg.result, Some(ResultValue::Fail));
    assert_eq!(reg.data_path("fail_node"), Some(&json!(flip2.id)));
    assert_eq!(reg.data_path("pass_node"), Some(&json!(flip1.id)));
    assert_eq!(
        reg.data_str("failed_kernel_revision.commit"),
        Some(commit2.as_str())
    );
    let flip2 = api.get_node(flip2.id.unwrap()).await.unwrap().unwrap();
    assert_eq!(flip2.data_path("regression"), Some(&json!(reg.id)));

    let mails = smtp.wait_for_messages(2, Duration::from_secs(30));
    assert_eq!(mails.len(), 2, "{}", smtp.log());
    let expected = expected_report(&checkout2, &url, &commit2, &["flip", "broken"]);
    assert_eq!(mails[1].text.replace("\r\n", "\n"), expected);

    stop.trigger();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("services stop")
            .unwrap();
    }
}
