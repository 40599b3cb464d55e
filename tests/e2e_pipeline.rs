//! End to end: a kernel-style git tree made by the test, the API server on the embedded default,
//! every pipeline service running (`kci up`'s composition), shell jobs.
//!
//! One commit goes trigger → tarball → scheduler → kbuild job → KTAP test job (one failing
//! case) → holdoff/closing → checkout done → the report arrives at a real SMTP server with
//! upstream's exact format. A second commit makes a passing test fail → a second report and a
//! `regression` node naming the failing and the last passing run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kernelci::client::ApiClient;
use kernelci::models::{Node, ResultValue, State};
use kernelci::pipeline::service::Shutdown;
use kernelci::report::SmtpConfig;
use kernelci::testsuite::peers::{KCI, free_port};
use kernelci::testsuite::smtp::{ReceivedMail, SmtpServer};
use kernelci_bins::up::{UpOptions, run};
use support::{CapturedOutput, kci_binary};

fn head_commit(repo: &Path) -> String {
    let repo = git2::Repository::open(repo).unwrap();
    repo.head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string()
}

async fn find(api: &ApiClient, pairs: &[(&str, &str)]) -> Vec<Node> {
    let mut query = pairs.to_vec();
    query.push(("limit", "500"));
    api.find_nodes(&query).await.unwrap().items
}

fn wait_mail(smtp: &SmtpServer, n: usize, out: &CapturedOutput) -> Vec<ReceivedMail> {
    let mails = smtp.wait_for_messages(n, Duration::from_secs(150));
    assert!(
        mails.len() >= n,
        "expected {n} report(s), got {}; kci up said:\n{}",
        mails.len(),
        out.text()
    );
    mails
}

fn expected_first_report(tree_url: &str, sha: &str) -> String {
    format!(
        "[STAGING] demo/master v6.18: 2 runs 1 failures

Summary
=======

Tree:     demo
Branch:   master
Describe: v6.18
URL:      {tree_url}
SHA1:     {sha}

Name              | Result   | Total    | Failures
------------------+----------+----------+---------
kbuild-demo-x86   | pass     |        1 |        0
kselftest-demo    | fail     |        5 |        1


Failing tests
=============

kselftest-demo
--------------

* demo_math.demo_math_overflow"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_commit_goes_through_every_service_to_a_mailed_report_and_a_regression() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warp::server=off".into()),
        )
        .with_test_writer()
        .try_init();
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    // Jobs run `kci job run`: the binary cargo built next to this test (`cargo test
    // --workspace` builds it), or $KCI_BIN.
    let Some(kci_bin) = kci_binary().or_else(|| KCI.missing()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let opts = UpOptions {
        data: data.clone(),
        listen,
        demo: true,
        poll_period: Some(Duration::from_secs(2)),
        timeout_period: Some(Duration::from_secs(1)),
        holdoff: Some(Duration::from_secs(3)),
        smtp: Some(SmtpConfig {
            host: "127.0.0.1".into(),
            port: smtp.port(),
            user: None,
            password: None,
            sender: "bot@kernelci.invalid".into(),
            recipients: vec!["kernel@lists.invalid".into(), "ci@lists.invalid".into()],
            timeout: Duration::from_secs(20),
        }),
        kci_bin: Some(kci_bin),
        ..UpOptions::default()
    };
    let shutdown = Shutdown::new();
    let out = CapturedOutput::default();
    let task = {
        let (shutdown, mut out) = (shutdown.clone(), out.clone());
        tokio::spawn(async move { run(opts, shutdown, &mut out).await })
    };

    // The first revision: one report with upstream's exact subject and body.
    let mails = tokio::task::block_in_place(|| wait_mail(&smtp, 1, &out));
    let tree = data.join("demo/linux").canonicalize().unwrap();
    let first = head_commit(&tree);
    let tree_url = format!("file://{}", tree.display());
    let mail = &mails[0];
    assert_eq!(
        mail.header("Subject"),
        Some("[STAGING] demo/master v6.18: 2 runs 1 failures")
    );
    assert_eq!(mail.header("From"), Some("bot@kernelci.invalid"));
    assert_eq!(
        mail.header("To"),
        Some("kernel@lists.invalid, ci@lists.invalid")
    );
    assert_eq!(
        mail.text.trim_end(),
        expected_first_report(&tree_url, &first),
        "report body differs; kci up said:\n{}",
        out.text()
    );

    // The nodes behind it, through the API.
    let password = std::fs::read_to_string(data.join("admin-password")).unwrap();
    let api = ApiClient::new(&format!("http://{listen}")).unwrap();
    let token = api.login("admin", password.trim()).await.unwrap();
    let api = api.with_token(token);
    let checkouts = find(
        &api,
        &[
            ("kind", "checkout"),
            ("data.kernel_revision.commit", &first),
        ],
    )
    .await;
    assert_eq!(checkouts.len(), 1, "one checkout per commit");
    let checkout = &checkouts[0];
    assert_eq!(checkout.state, State::Done);
    let tarball = checkout
        .artifacts
        .as_ref()
        .and_then(|a| a.get("tarball"))
        .and_then(|v| v.as_str())
        .expect("tarball artifact")
        .to_owned();
    assert!(
        tarball.ends_with("/linux-demo-master-v6.18.tar.gz"),
        "{tarball}"
    );
    let body = reqwest::get(&tarball).await.unwrap();
    assert!(
        body.status().is_success(),
        "tarball not served: {}",
        body.status()
    );
    let kbuild = find(
        &api,
        &[
            ("kind", "kbuild"),
            ("parent", &checkout.id.unwrap().to_string()),
        ],
    )
    .await;
    assert_eq!(kbuild.len(), 1, "exactly one build (no duplicate jobs)");
    assert_eq!(kbuild[0].result, Some(ResultValue::Pass));
    let artifacts = kbuild[0].artifacts.clone().unwrap_or_default();
    assert!(
        artifacts.contains_key("kernel"),
        "kbuild artifacts: {artifacts:?}"
    );
    let flaky = find(
        &api,
        &[
            ("name", "demo_flaky"),
            ("data.kernel_revision.commit", &first),
        ],
    )
    .await;
    assert_eq!(flaky.len(), 1);
    assert_eq!(flaky[0].result, Some(ResultValue::Pass));

    // The second revision: demo_flaky now fails — a second report and a regression.
    let second = kernelci_bins::demo::add_regression_commit(&tree).unwrap();
    let mails = tokio::task::block_in_place(|| wait_mail(&smtp, 2, &out));
    let subject = mails[1].header("Subject").unwrap_or_default().to_owned();
    assert!(
        subject.starts_with("[STAGING] demo/master v6.18-1-g")
            && subject.ends_with(": 2 runs 1 failures"),
        "{subject}"
    );
    assert!(mails[1].text.contains("* demo_flaky"), "{}", mails[1].text);
    let deadline = Instant::now() + Duration::from_secs(60);
    let regression = loop {
        let found = find(&api, &[("kind", "regression"), ("name", "demo_flaky")]).await;
        if let Some(r) = found.into_iter().next() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no regression node; kci up said:\n{}",
            out.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let failing = find(
        &api,
        &[
            ("name", "demo_flaky"),
            ("data.kernel_revision.commit", &second),
        ],
    )
    .await;
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].result, Some(ResultValue::Fail));
    let rdata = regression.data.clone().unwrap_or_default();
    assert_eq!(
        rdata.get("fail_node").and_then(|v| v.as_str()),
        Some(failing[0].id.unwrap().to_string().as_str())
    );
    assert_eq!(
        rdata.get("pass_node").and_then(|v| v.as_str()),
        Some(flaky[0].id.unwrap().to_string().as_str())
    );
    assert_eq!(
        regression.result,
        Some(ResultValue::Fail),
        "an active regression"
    );

    shutdown.trigger();
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.url, format!("http://{listen}"));
    let text = out.text();
    assert!(text.contains("Browse the results: http://"), "{text}");
}

/// The same flow with the Docker runtime: a real dockerd started by the harness, an image
/// imported from a busybox root filesystem holding `kci`, `make` and their libraries; the
/// kbuild and test jobs run in containers on the host network and report to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_commit_builds_and_tests_in_docker_containers() {
    use kernelci::testsuite::docker::{DockerEngine, add_binary_with_libs, busybox_rootfs};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(kci_bin) = kci_binary().or_else(|| KCI.missing()) else {
        return;
    };
    let Some(engine) = DockerEngine::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs).unwrap();
    add_binary_with_libs(&rootfs, &kci_bin).unwrap();
    add_binary_with_libs(&rootfs, Path::new("/usr/bin/make")).unwrap();
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.is_file() {
        std::fs::create_dir_all(rootfs.join("etc/ssl/certs")).unwrap();
        std::fs::copy(certs, rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    }
    engine.import_rootfs(&rootfs, "kci-e2e:latest").unwrap();

    let data = dir.path().join("data");
    let tree = dir.path().join("linux");
    let sha = kernelci_bins::demo::create_tree(&tree).unwrap();
    let port = free_port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let api_url = format!("http://{listen}");
    let yaml = kernelci_bins::up::demo_config(&format!("file://{}", tree.display()), &api_url)
        .replace(
            "runtimes:\n  shell:\n    lab_type: shell\n",
            &format!(
                "runtimes:\n  docker:\n    lab_type: docker\n    docker_host: \"{}\"\n    network_mode: host\n",
                engine.host()
            ),
        )
        .replace("platforms:\n  shell: {}\n", "platforms:\n  docker: {}\n")
        .replace(
            "\n    kind: kbuild\n    params:",
            "\n    kind: kbuild\n    image: kci-e2e:latest\n    params:",
        )
        .replace(
            "\n    kind: job\n    params:",
            "\n    kind: job\n    image: kci-e2e:latest\n    params:",
        )
        .replace("      name: shell\n", "      name: docker\n");
    assert!(
        yaml.contains("lab_type: docker") && !yaml.contains("shell"),
        "{yaml}"
    );
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("pipeline.yaml"), yaml).unwrap();

    let opts = UpOptions {
        config: vec![config],
        data: data.clone(),
        listen,
        poll_period: Some(Duration::from_secs(2)),
        timeout_period: Some(Duration::from_secs(1)),
        holdoff: Some(Duration::from_secs(3)),
        kci_bin: Some(kci_bin),
        ..UpOptions::default()
    };
    let shutdown = Shutdown::new();
    let out = CapturedOutput::default();
    let task = {
        let (shutdown, mut out) = (shutdown.clone(), out.clone());
        tokio::spawn(async move { run(opts, shutdown, &mut out).await })
    };

    // Wait for the checkout of the commit to be done (containers on the vfs driver are slow
    // on a loaded 2-core machine: 180 s was once not enough).
    let deadline = Instant::now() + Duration::from_secs(300);
    let api = loop {
        if let Ok(password) = std::fs::read_to_string(data.join("admin-password")) {
            let api = ApiClient::new(&api_url).unwrap();
            if let Ok(token) = api.login("admin", password.trim()).await {
                break api.with_token(token);
            }
        }
        if task.is_finished() {
            panic!("kci up stopped: {:?}\n{}", task.await, out.text());
        }
        assert!(Instant::now() < deadline, "server not up:\n{}", out.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let checkout = loop {
        let found = find(
            &api,
            &[("kind", "checkout"), ("data.kernel_revision.commit", &sha)],
        )
        .await;
        if let Some(c) = found.into_iter().find(|c| c.state == State::Done) {
            break c;
        }
        if task.is_finished() {
            panic!("kci up stopped: {:?}\n{}", task.await, out.text());
        }
        assert!(
            Instant::now() < deadline,
            "checkout not done; kci up said:\n{}\ndockerd (tail):\n{}",
            out.text(),
            engine
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let parent = checkout.id.unwrap().to_string();
    let kbuild = find(&api, &[("kind", "kbuild"), ("parent", &parent)]).await;
    assert_eq!(kbuild.len(), 1, "{}", out.text());
    assert_eq!(
        kbuild[0].result,
        Some(ResultValue::Pass),
        "{:?}",
        kbuild[0].data
    );
    let job_id = kbuild[0]
        .data
        .as_ref()
        .and_then(|d| d.get("job_id"))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(job_id.len() >= 12, "a container id as job_id: {job_id:?}");
    let tests = find(
        &api,
        &[
            ("name", "demo_math_overflow"),
            ("data.kernel_revision.commit", &sha),
        ],
    )
    .await;
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].result, Some(ResultValue::Fail));
    assert_eq!(
        tests[0]
            .data
            .as_ref()
            .and_then(|d| d.get("runtime"))
            .and_then(|v| v.as_str()),
        Some("docker")
    );
    // Every container was removed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine.containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "containers left: {:?}",
            engine.containers()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.trigger();
    task.await.unwrap().unwrap();
}
