//! The node → KCIDB mapping on node trees made by the real pipeline (`kci up`: trigger,
//! tarball, shell-runtime kbuild and KTAP test jobs, timeout, job retry, and the bridge
//! writing to `<data>/kcidb/`), every document validated by kcidb-io (KCIDB's own schema
//! library, format checks on) — and by our validator, which must agree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kcidb_support;

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kernelci::client::ApiClient;
use kernelci::kcidb::testsuite::KcidbIo;
use kernelci::kcidb::validate::{is_date_time, is_uri, validate_document};
use kernelci::models::{Node, State};
use kernelci::pipeline::service::Shutdown;
use kernelci::testsuite::peers::free_port;
use kernelci_bins::up::{UpOptions, demo_config, run};
use serde_json::Value;
use support::CapturedOutput;

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warp::server=off".into()),
        )
        .with_test_writer()
        .try_init();
}

fn opts(data: &Path, listen: SocketAddr) -> UpOptions {
    UpOptions {
        data: data.to_path_buf(),
        listen,
        poll_period: Some(Duration::from_secs(2)),
        timeout_period: Some(Duration::from_secs(1)),
        holdoff: Some(Duration::from_secs(3)),
        kci_bin: Some(kcidb_support::bins_dir().join("kci")),
        progress: false,
        ..UpOptions::default()
    }
}

/// Every object of every spooled document, by `(list, id)`; the last one written wins.
fn objects(dir: &Path) -> BTreeMap<(String, String), Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    for f in files {
        let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let errors = validate_document(&doc);
        assert!(
            errors.is_empty(),
            "{}: our validator: {errors:?}",
            f.display()
        );
        for list in ["checkouts", "builds", "tests"] {
            for o in doc[list].as_array().unwrap() {
                out.insert(
                    (list.to_owned(), o["id"].as_str().unwrap().to_owned()),
                    o.clone(),
                );
            }
        }
    }
    out
}

async fn admin(data: &Path, url: &str) -> ApiClient {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(password) = std::fs::read_to_string(data.join("admin-password")) {
            let api = ApiClient::new(url).unwrap();
            if let Ok(token) = api.login("admin", password.trim()).await {
                return api.with_token(token);
            }
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kci_up_demo_leaves_valid_kcidb_documents() {
    init();
    let Some(kcidb_io) = KcidbIo::locate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kci-data");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let options = UpOptions {
        demo: true,
        exit_after_report: true,
        ..opts(&data, listen)
    };
    let out = CapturedOutput::default();
    let mut o = out.clone();
    let summary = tokio::time::timeout(
        Duration::from_secs(300),
        run(options, Shutdown::new(), &mut o),
    )
    .await
    .expect("kci up --demo finished")
    .unwrap();
    let checkout = summary.checkout.expect("a checkout was reported");
    assert!(out.text().contains("kcidb (KCIDB spool"), "{}", out.text());
    let spool = data.join("kcidb");
    let n = kcidb_io.assert_dir_valid(&spool);
    assert!(n >= 2, "{n} documents");
    let objects = objects(&spool);
    let c = &objects[&("checkouts".into(), format!("maestro:{checkout}"))];
    assert_eq!(c["tree_name"], "demo");
    assert_eq!(c["git_repository_branch"], "master");
    assert!(c.get("git_repository_url").is_none(), "file:// is not sent");
    assert!(c["start_time"].as_str().unwrap().ends_with("+00:00"));
    let paths: BTreeMap<&str, &str> = objects
        .iter()
        .filter(|((l, _), _)| l == "tests")
        .map(|(_, t)| {
            (
                t["path"].as_str().unwrap(),
                t["status"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(paths.get("kselftest.demo"), Some(&"FAIL"), "{paths:?}");
    assert_eq!(
        paths.get("kselftest.demo.demo_math.demo_math_overflow"),
        Some(&"FAIL")
    );
    assert_eq!(paths.get("kselftest.demo.demo_optional"), Some(&"SKIP"));
    assert_eq!(paths.get("kselftest.demo.demo_boot"), Some(&"PASS"));
    assert!(
        !paths.contains_key("kselftest.demo.demo_math"),
        "suites are not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_incomplete_jobs_and_retries_map_like_upstream() {
    init();
    let Some(kcidb_io) = KcidbIo::locate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kci-data");
    let tree = dir.path().join("linux");
    let sha = kernelci_bins::demo::create_tree(&tree).unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let url = format!("http://{listen}");
    // The demo, plus a kbuild that produces no kernel (incomplete) and a test job whose
    // template cannot render (no command: incomplete, invalid_job_params or
    // job_generation_error): job-retry runs each three more times.
    let yaml = demo_config(&format!("file://{}", tree.display()), &url)
        .replace(
            "\n  kselftest-demo:\n",
            "
  kbuild-demo-noimage:
    template: kbuild.jinja2
    kind: kbuild
    params:
      arch: x86_64
      compiler: gcc
      defconfig: x86_64_defconfig
      kernel_image: arch/x86/boot/missing
  kselftest-broken:
    template: ktap-test.jinja2
    kind: job
    params:
      note: no command
    kcidb_test_suite: kselftest.broken
  kselftest-demo:\n",
        )
        .replace(
            "\nscheduler:\n",
            "
scheduler:
  - job: kbuild-demo-noimage
    event:
      channel: node
      kind: checkout
      state: available
    runtime:
      name: shell
  - job: kselftest-broken
    event:
      channel: node
      kind: kbuild
      name: kbuild-demo-x86
      state: available
    runtime:
      name: shell
",
        );
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("pipeline.yaml"), &yaml).unwrap();
    for (rel, src) in [
        (
            "runtime/base/shell.jinja2",
            "config/runtime/base/shell.jinja2",
        ),
        ("runtime/kbuild.jinja2", "config/runtime/kbuild.jinja2"),
        (
            "runtime/ktap-test.jinja2",
            "config/runtime/ktap-test.jinja2",
        ),
    ] {
        let to = config.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(src), &to).unwrap();
    }
    let options = UpOptions {
        config: vec![config.clone()],
        ..opts(&data, listen)
    };
    let shutdown = Shutdown::new();
    let out = CapturedOutput::default();
    let task = {
        let (shutdown, mut out) = (shutdown.clone(), out.clone());
        tokio::spawn(async move { run(options, shutdown, &mut out).await })
    };
    let api = admin(&data, &url).await;

    // Until every attempt ran, the checkout is done and the bridge handled every done node.
    let deadline = Instant::now() + Duration::from_secs(300);
    let nodes: Vec<Node> = loop {
        let nodes = api.find_all_nodes(&[]).await.unwrap();
        let attempts = |name: &str| {
            nodes
                .iter()
                .filter(|n| n.name == name && n.state == State::Done)
                .count()
        };
        let checkout_done = nodes
            .iter()
            .any(|n| n.kind == "checkout" && n.state == State::Done);
        let all_handled = nodes
            .iter()
            .filter(|n| n.state == State::Done)
            .all(|n| n.processed_by_kcidb_bridge);
        if checkout_done
            && attempts("kbuild-demo-noimage") == 4
            && attempts("kselftest-broken") == 4
            && all_handled
        {
            break nodes;
        }
        if task.is_finished() {
            panic!("kci up stopped: {:?}\n{}", task.await, out.text());
        }
        assert!(
            Instant::now() < deadline,
            "pipeline not finished: {:?}\n{}",
            nodes
                .iter()
                .map(|n| (
                    &n.name,
                    n.state,
                    n.result,
                    n.retry_counter,
                    n.processed_by_kcidb_bridge
                ))
                .collect::<Vec<_>>(),
            out.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let checkout = nodes.iter().find(|n| n.kind == "checkout").unwrap().clone();
    let cid = checkout.id.unwrap();

    // `kci kcidb export` of the same checkout, through the real binary.
    let exported = std::process::Command::new(kcidb_support::bins_dir().join("kci"))
        .args([
            "--api",
            &url,
            "kcidb",
            "export",
            "--checkout",
            &cid.to_string(),
            "-c",
        ])
        .arg(&config)
        .env("KCI_API_TOKEN", api.token().unwrap())
        .env_remove("KCI_SETTINGS")
        .output()
        .unwrap();
    shutdown.trigger();
    task.await.unwrap().unwrap();
    assert!(
        exported.status.success(),
        "kci kcidb export: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let export_dir = dir.path().join("export");
    std::fs::create_dir_all(&export_dir).unwrap();
    std::fs::write(export_dir.join("export.json"), &exported.stdout).unwrap();
    assert_eq!(kcidb_io.assert_dir_valid(&export_dir), 1);

    let spool = data.join("kcidb");
    kcidb_io.assert_dir_valid(&spool);
    let objects = objects(&spool);
    let kid = |n: &Node| format!("maestro:{}", n.id.unwrap());
    let by_name = |name: &str| -> Vec<&Node> {
        let mut v: Vec<&Node> = nodes.iter().filter(|n| n.name == name).collect();
        v.sort_by_key(|n| n.retry_counter);
        v
    };

    // The checkout.
    let c = &objects[&("checkouts".into(), kid(&checkout))];
    assert_eq!(c["git_commit_hash"], sha.as_str());
    assert_eq!(c["git_commit_name"], "v6.18");
    assert_eq!(c["patchset_hash"], "");
    assert_eq!(c["misc"]["submitted_by"], "kernelci-pipeline");

    // The passing build.
    let kbuild = by_name("kbuild-demo-x86")[0];
    let b = &objects[&("builds".into(), kid(kbuild))];
    assert_eq!(b["checkout_id"], kid(&checkout).as_str());
    assert_eq!(b["status"], "PASS");
    assert_eq!(b["architecture"], "x86_64");
    assert_eq!(b["compiler"], "gcc");
    assert!(b["log_url"].as_str().unwrap().ends_with("build.log"));
    assert!(b["config_url"].as_str().unwrap().ends_with(".config"));
    assert!(
        b["output_files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "kernel")
    );
    assert!(
        b["log_excerpt"].as_str().unwrap().contains("Kernel:"),
        "{b}"
    );
    assert_eq!(
        b["misc"]["maestro_viewer"],
        format!("{url}/viewer?node_id={}", kbuild.id.unwrap()).as_str()
    );

    // The build without a kernel: only the final attempt, as ERROR.
    let noimage = by_name("kbuild-demo-noimage");
    assert_eq!(
        noimage.iter().map(|n| n.retry_counter).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    for early in &noimage[..3] {
        assert!(
            !objects.contains_key(&("builds".into(), kid(early))),
            "attempt {}",
            early.retry_counter
        );
    }
    let last = &objects[&("builds".into(), kid(noimage[3]))];
    assert_eq!(last["status"], "ERROR");
    assert_eq!(last["misc"]["error_code"], "kbuild_internal_error");

    // The broken test job: only the final attempt, as MISS.
    let broken = by_name("kselftest-broken");
    assert_eq!(broken.len(), 4);
    for early in &broken[..3] {
        assert!(!objects.contains_key(&("tests".into(), kid(early))));
    }
    let t = &objects[&("tests".into(), kid(broken[3]))];
    assert_eq!(t["status"], "MISS");
    assert_eq!(t["path"], "kselftest.broken");
    let code = t["misc"]["error_code"].as_str().unwrap();
    assert!(
        ["invalid_job_params", "job_generation_error"].contains(&code),
        "{t}"
    );

    // The KTAP job with a failure and its leaves.
    let job = by_name("kselftest-demo")[0];
    let t = &objects[&("tests".into(), kid(job))];
    assert_eq!(t["status"], "FAIL");
    assert_eq!(t["path"], "kselftest.demo");
    assert_eq!(t["build_id"], kid(kbuild).as_str());
    assert_eq!(t["comment"], "kselftest-demo on shell in shell");
    assert_eq!(t["environment"]["comment"], "Runtime: shell");
    assert!(t["log_url"].as_str().unwrap().ends_with("log.txt"));
    assert!(t["log_excerpt"].as_str().unwrap().contains("demo_optional"));
    let leaf = by_name("demo_math_overflow")[0];
    let l = &objects[&("tests".into(), kid(leaf))];
    assert_eq!(l["path"], "kselftest.demo.demo_math.demo_math_overflow");
    assert_eq!(l["status"], "FAIL");
    assert_eq!(l["build_id"], kid(kbuild).as_str());
    let skip = &objects[&("tests".into(), kid(by_name("demo_optional")[0]))];
    assert_eq!(skip["status"], "SKIP");
    assert!(
        skip.get("log_url").is_none(),
        "SKIP carries no job data: {skip}"
    );
    let suite = by_name("demo_math")[0];
    assert!(
        !objects.contains_key(&("tests".into(), kid(suite))),
        "suites are not sent"
    );

    // The export holds the same objects as the spool for this checkout.
    let doc: Value = serde_json::from_slice(&exported.stdout).unwrap();
    for list in ["checkouts", "builds", "tests"] {
        let mut exported: Vec<String> = doc[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect();
        exported.sort();
        let spooled: Vec<String> = objects
            .keys()
            .filter(|(l, _)| l == list)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(exported, spooled, "{list}");
    }
}

#[test]
fn our_format_checks_agree_with_kcidb_io() {
    let Some(kcidb_io) = KcidbIo::locate() else {
        return;
    };
    let uris = [
        "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
        "http://127.0.0.1:8001/storage/x/log.txt",
        "https://storage.kernelci.org/a%20b/c?d=e&f#g",
        "file:///tmp/linux",
        "mailto:a@b.c",
        "urn:isbn:0451450523",
        "https://[::1]:8080/x",
        "https://user:pw@host:1/x",
        "not a url",
        "/relative/path",
        "https://host/a b",
        "https://host:80x/",
        "https://host/%zz",
        "1http://host/",
        "https://host/é",
        "https://ho st/",
        "",
    ];
    let theirs = kcidb_io.conforms("uri", &uris);
    for (u, t) in uris.iter().zip(theirs) {
        assert_eq!(is_uri(u), t, "uri {u:?}: kcidb-io says {t}");
    }
    let times = [
        "2026-01-02T03:04:05+00:00",
        "2026-01-02T03:04:05.123000+00:00",
        "2024-02-29T23:59:59Z",
        "2026-12-31T00:00:00-11:30",
        "2026-01-02T03:04:05.123456",
        "2026-01-02 03:04:05+00:00",
        "2025-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-02T24:00:00Z",
        "2026-01-02T03:04:60Z",
        "2026-01-02T03:04:05+0000",
        "2026-01-02",
    ];
    let theirs = kcidb_io.conforms("date-time", &times);
    for (d, t) in times.iter().zip(theirs) {
        assert_eq!(is_date_time(d), t, "date-time {d:?}: kcidb-io says {t}");
    }
    // Whole documents with every kind of error: both validators find the same fields.
    let bad = serde_json::json!({"version": {"major": 5, "minor": 3},
        "checkouts": [{"id": "maestro:c", "origin": "Maestro", "git_commit_hash": "abc",
            "git_repository_url": "git://x/y", "start_time": "2026-01-02T03:04:05.123456"}],
        "builds": [{"id": "maestro:b", "origin": "maestro", "checkout_id": "maestro:c",
            "valid": true, "architecture": "x86-64", "log_url": "not a url",
            "output_files": [{"name": "a/b", "url": "https://x/"}]}],
        "tests": [{"id": "maestro:t", "origin": "maestro", "build_id": "maestro:b",
            "path": "kselftest.capabilities.", "status": "INCOMPLETE"}]});
    let ours: Vec<String> = validate_document(&bad)
        .iter()
        .map(|e| e.field.clone())
        .collect();
    let theirs = kcidb_io.validate(&bad);
    let their_fields: Vec<String> = theirs
        .iter()
        .filter(|e| !e.starts_with("LATEST"))
        .map(|e| e.split(": ").next().unwrap_or("").to_owned())
        .collect();
    let mut a = ours.clone();
    a.sort();
    let mut b = their_fields.clone();
    b.sort();
    assert_eq!(a, b, "ours: {ours:?}\nkcidb-io: {theirs:?}");
}
