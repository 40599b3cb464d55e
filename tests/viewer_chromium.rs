//! The read-only web viewer, loaded in a real headless Chromium against a real server: the
//! node list with filters, a node with its children and artifacts, and the event feed are
//! rendered from the API by the page's own JavaScript; a screenshot shows them.
//!
//! Needs Debian's `chromium` (installed by `scripts/test` in CI); skipped loudly elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use kernelci::client::{ApiClient, Hierarchy};
use kernelci::models::{Node, NodeKind, ResultValue, State};
use kernelci::testsuite::peers::{CHROMIUM, find_program};
use serde_json::json;
use support::{ADMIN_PASSWORD, TestServer};

fn chromium() -> Option<PathBuf> {
    find_program("chromium").or_else(|| find_program("chromium-browser"))
}

/// Runs headless Chromium on `url` with the flags this machine needs (no sandbox as root, no
/// background networking: the network is closed), returning its stdout.
fn run_chromium(chromium: &Path, profile: &Path, url: &str, extra: &[String]) -> String {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,900",
        "--virtual-time-budget=6000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    let out = cmd.output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node(kind: NodeKind, name: &str, parent: Option<&Node>) -> Node {
    let mut path = parent.map(|p| p.path.clone()).unwrap_or_default();
    path.push(name.to_owned());
    let mut value = json!({
        "kind": kind,
        "name": name,
        "path": path,
        "data": {"kernel_revision": {"tree": "mainline", "branch": "master",
            "url": "https://git.example/linux.git", "commit": "708283abf896dd4853e673cc8cba70acaf9bf4ea",
            "describe": "v6.5-11329-g708283abf896"}},
    });
    if let Some(p) = parent {
        value["parent"] = json!(p.id.unwrap().to_string());
    }
    serde_json::from_value(value).unwrap()
}

/// Decodes a PNG and returns (width, height, RGB pixels).
fn decode_png(bytes: Vec<u8>) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("png header");
    let (width, height) = (reader.info().width, reader.info().height);
    let mut buf = vec![0u8; width as usize * height as usize * 8];
    let frame = reader.next_frame(&mut buf).expect("png frame");
    let channels = match frame.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected colour type {other:?}"),
    };
    assert_eq!(frame.bit_depth, png::BitDepth::Eight);
    let pixels = buf[..frame.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (width, height, pixels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_renders_nodes_children_artifacts_and_events_in_chromium() {
    let Some(chromium) = chromium().or_else(|| CHROMIUM.missing()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("db.sqlite"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        45,
    )
    .await;
    let api = ApiClient::new(&server.url()).unwrap();
    let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    let api = api.with_token(token);

    // A checkout with a job whose hierarchy holds one passing and one failing test.
    let mut checkout = node(NodeKind::Checkout, "checkout", None);
    checkout.artifacts = Some(
        serde_json::from_value(json!({"tarball": "http://files.example/linux-mainline.tar.gz"}))
            .unwrap(),
    );
    let checkout = api.create_node(&checkout).await.unwrap();
    let job = api
        .create_node(&node(NodeKind::Job, "kunit-x86_64", Some(&checkout)))
        .await
        .unwrap();
    let mut root = job.clone();
    root.state = State::Done;
    root.result = Some(ResultValue::Fail);
    root.artifacts = Some(
        serde_json::from_value(json!({"test_log": "http://files.example/kunit-x86_64/log.txt"}))
            .unwrap(),
    );
    let leaf = |name: &str, result| {
        let mut n = node(NodeKind::Test, name, Some(&job));
        n.parent = job.id;
        n.state = State::Done;
        n.result = Some(result);
        Hierarchy {
            node: n,
            child_nodes: vec![],
        }
    };
    api.submit_results(&Hierarchy {
        node: root,
        child_nodes: vec![
            leaf("example_pass_test", ResultValue::Pass),
            leaf("exec_example_fail_test", ResultValue::Fail),
        ],
    })
    .await
    .unwrap();

    let profile = tempfile::tempdir().unwrap();
    let base = format!("{}/viewer", server.url());

    // The node list, filtered from the URL (kind=test, result=fail): only the failing leaf.
    let dom = run_chromium(
        &chromium,
        profile.path(),
        &format!("{base}?kind=test&result=fail"),
        &["--dump-dom".into()],
    );
    assert!(
        dom.contains("exec_example_fail_test"),
        "filtered list misses the failure:\n{dom}"
    );
    assert!(
        !dom.contains("<td>example_pass_test</td>"),
        "filter not applied:\n{dom}"
    );
    assert!(dom.contains("1 shown of 1"), "status line missing:\n{dom}");

    // A node page: the job with its two children, its artifact link and the event feed.
    let url = format!("{base}?node_id={}", job.id.unwrap());
    let dom = run_chromium(&chromium, profile.path(), &url, &["--dump-dom".into()]);
    assert!(
        dom.contains("job: kunit-x86_64"),
        "node header missing:\n{dom}"
    );
    assert!(dom.contains("Children (2)"), "children missing:\n{dom}");
    assert!(
        dom.contains("http://files.example/kunit-x86_64/log.txt"),
        "artifact link missing"
    );
    assert!(dom.contains("example_pass_test") && dom.contains("exec_example_fail_test"));
    assert!(
        dom.contains("v6.5-11329-g708283abf896"),
        "node data missing"
    );
    // The event feed lists the creations and the hierarchy update.
    assert!(
        dom.contains("created") && dom.contains("updated"),
        "event feed empty:\n{dom}"
    );

    // The screenshot: a real rendering (not blank), with the failure colour of the page's CSS
    // (#c62828) and the dark header (#1d2330) present.
    let shot = std::env::var_os("KCI_VIEWER_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("viewer.png"));
    run_chromium(
        &chromium,
        profile.path(),
        &url,
        &[format!("--screenshot={}", shot.display())],
    );
    let (width, height, pixels) = decode_png(std::fs::read(&shot).expect("screenshot written"));
    assert_eq!((width, height), (1280, 900));
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 24);
    let header = pixels
        .iter()
        .filter(|p| near(p, [0x1d, 0x23, 0x30]))
        .count();
    let failure = pixels
        .iter()
        .filter(|p| near(p, [0xc6, 0x28, 0x28]))
        .count();
    let white = pixels
        .iter()
        .filter(|p| near(p, [0xff, 0xff, 0xff]))
        .count();
    assert!(header > 1280 * 20, "header band not rendered ({header} px)");
    assert!(
        failure > 20,
        "no failure-coloured text rendered ({failure} px)"
    );
    assert!(
        white > pixels.len() / 10,
        "page sections not rendered ({white} px)"
    );
    let distinct: std::collections::HashSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(
        distinct.len() > 50,
        "screenshot looks blank ({} colours)",
        distinct.len()
    );

    server.stop().await;
}
