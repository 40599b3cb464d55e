//! The web viewer in a real headless Chromium, on data made by the real pipeline: `kci up
//! --demo`'s composition (server, trigger, tarball, scheduler, shell jobs, timeout, regression
//! tracker, report) runs two revisions of the demo tree, the second breaking `demo_flaky`.
//! Each view is loaded by Chromium; the test reads the DOM for the counts, the regression
//! label and the log line, and takes screenshots that must not be blank.
//!
//! With `KCI_VIEWER_SCREENSHOTS=DIR`, the trees, revision and health screenshots are kept in
//! `DIR` (the README's images: `KCI_VIEWER_SCREENSHOTS=docs cargo test --test
//! viewer_chromium`). Needs Debian's `chromium` (installed by `scripts/test`) and the `kci`
//! binary (`cargo build -p kernelci-bins --bin kci`, or `$KCI_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kernelci::client::ApiClient;
use kernelci::models::{Node, State};
use kernelci::pipeline::service::Shutdown;
use kernelci::testsuite::peers::{CHROMIUM, KCI, find_program, free_port};
use kernelci_bins::up::{UpOptions, run};
use support::{CapturedOutput, kci_binary};

fn chromium() -> Option<PathBuf> {
    find_program("chromium").or_else(|| find_program("chromium-browser"))
}

/// Headless Chromium with the flags this machine needs (no sandbox as root, no background
/// networking: the network is closed).
struct Browser {
    binary: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    fn run(&self, url: &str, extra: &[String]) -> String {
        let out = Command::new(&self.binary)
            .args([
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
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium failed on {url}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The DOM of `url` after its load.
    fn dom(&self, url: &str) -> String {
        self.run(url, &["--dump-dom".into()])
    }

    /// A screenshot of `url` into `path`, checked to be a real rendering: the header band,
    /// white sections, many colours, and `marks` (colour, minimum pixels) present.
    fn screenshot(&self, url: &str, path: &Path, marks: &[([u8; 3], usize, &str)]) {
        self.run(url, &[format!("--screenshot={}", path.display())]);
        let (width, height, pixels) = decode_png(std::fs::read(path).expect("screenshot written"));
        assert_eq!((width, height), (1280, 900));
        let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 24);
        let count = |c: [u8; 3]| pixels.iter().filter(|p| near(p, c)).count();
        assert!(
            count([0x1d, 0x23, 0x30]) > 1280 * 20,
            "{url}: header band not rendered"
        );
        assert!(
            count([0xff, 0xff, 0xff]) > pixels.len() / 10,
            "{url}: sections not rendered"
        );
        for (colour, min, what) in marks {
            let n = count(*colour);
            assert!(n >= *min, "{url}: {what} not rendered ({n} px)");
        }
        let distinct: std::collections::HashSet<[u8; 3]> = pixels.iter().copied().collect();
        assert!(
            distinct.len() > 50,
            "{url}: screenshot looks blank ({} colours)",
            distinct.len()
        );
    }
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
    let pixels = buf[..frame.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (width, height, pixels)
}

/// The text of the first element `<tag ... id="id" ...>...</tag>` (or with that class) of a
/// DOM, tags removed.
fn text_of(dom: &str, marker: &str) -> String {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the page:\n{dom}"));
    let open = dom[..start].rfind('<').unwrap_or(start);
    let tag: String = dom[open + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let rest = &dom[open..];
    let end = rest.find(&format!("</{tag}>")).unwrap_or(rest.len());
    strip_tags(&rest[..end])
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn find(api: &ApiClient, pairs: &[(&str, &str)]) -> Vec<Node> {
    let mut q = pairs.to_vec();
    q.push(("limit", "500"));
    api.find_nodes(&q).await.unwrap().items
}

/// Waits until `check` finds something, or fails with `what` and `kci up`'s output.
async fn wait_for<T, F, Fut>(what: &str, out: &CapturedOutput, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; kci up said:\n{}",
            out.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn id(n: &Node) -> String {
    n.id.unwrap().to_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_view_in_chromium_on_two_demo_revisions() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error,warp::server=off".into()),
        )
        .with_test_writer()
        .try_init();
    let Some(binary) = chromium() else {
        return CHROMIUM.missing().unwrap_or(());
    };
    let Some(kci_bin) = kci_binary() else {
        return KCI.missing().unwrap_or(());
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let base = format!("http://{listen}");
    let opts = UpOptions {
        data: data.clone(),
        listen,
        demo: true,
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

    // Two revisions through the whole pipeline: the second makes demo_flaky fail.
    let api = wait_for("server up", &out, 120, || async {
        let password = std::fs::read_to_string(data.join("admin-password")).ok()?;
        let api = ApiClient::new(&base).ok()?;
        let token = api.login("admin", password.trim()).await.ok()?;
        Some((api.with_token(token.clone()), token))
    })
    .await;
    let (api, token) = api;
    let done_checkout = |commit: String| {
        let api = api.clone();
        async move {
            find(
                &api,
                &[
                    ("kind", "checkout"),
                    ("data.kernel_revision.commit", &commit),
                ],
            )
            .await
            .into_iter()
            .find(|c| c.state == State::Done)
        }
    };
    let (tree, first_sha) = wait_for("demo tree", &out, 60, || async {
        let tree = data.join("demo/linux").canonicalize().ok()?;
        let repo = git2::Repository::open(&tree).ok()?;
        let sha = repo.head().ok()?.peel_to_commit().ok()?.id().to_string();
        Some((tree, sha))
    })
    .await;
    let first = wait_for("first checkout done", &out, 180, || {
        done_checkout(first_sha.clone())
    })
    .await;
    let second_sha = kernelci_bins::demo::add_regression_commit(&tree).unwrap();
    let second = wait_for("second checkout done", &out, 180, || {
        done_checkout(second_sha.clone())
    })
    .await;
    let regression = wait_for("regression node", &out, 60, || async {
        find(&api, &[("kind", "regression"), ("name", "demo_flaky")])
            .await
            .into_iter()
            .next()
    })
    .await;
    let flaky = |sha: &str| {
        let api = api.clone();
        let sha = sha.to_owned();
        async move {
            find(
                &api,
                &[
                    ("name", "demo_flaky"),
                    ("data.kernel_revision.commit", &sha),
                ],
            )
            .await
            .remove(0)
        }
    };
    let (flaky_pass, flaky_fail) = (flaky(&first_sha).await, flaky(&second_sha).await);
    let job = find(
        &api,
        &[
            ("kind", "job"),
            ("data.kernel_revision.commit", &second_sha),
        ],
    )
    .await
    .remove(0);

    let browser = Browser {
        binary,
        profile: tempfile::tempdir().unwrap(),
    };
    let shots = std::env::var_os("KCI_VIEWER_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().to_owned());
    std::fs::create_dir_all(&shots).unwrap();
    let fail_red = ([0xc6, 0x28, 0x28], 20, "failure-coloured counts");
    let pass_green = ([0x1e, 0x7d, 0x32], 20, "pass-coloured counts");

    // 1. Trees: demo/master at its second revision; 1 build passing; 2 tests passing, 2
    //    failing, 1 inconclusive (skip); no boot. Each count links to the revision page.
    let dom = browser.dom(&format!("{base}/viewer/trees"));
    let row = text_of(&dom, "data-tree=\"demo\"");
    assert!(
        row.contains("v6.18-1-g"),
        "latest revision is the second: {row}"
    );
    assert_eq!(text_of(&dom, "class=\"builds\""), "1 0 0", "builds");
    assert_eq!(text_of(&dom, "class=\"boots\""), "0 0 0", "boots");
    assert_eq!(text_of(&dom, "class=\"tests\""), "2 2 1", "tests");
    let fail_link = format!("/viewer/checkout/{}?tab=test&amp;status=fail", id(&second));
    assert!(dom.contains(&fail_link), "fail count links to {fail_link}");
    browser.screenshot(
        &format!("{base}/viewer/trees"),
        &shots.join("viewer-trees.png"),
        &[fail_red, pass_green],
    );

    // 2. The revision page with the failing tests: failures only, both listed; tabs and the
    //    history strip (2 revisions, the first with 1 failing test).
    let page = format!(
        "{base}/viewer/checkout/{}?tab=test&status=fail",
        id(&second)
    );
    let dom = browser.dom(&page);
    assert_eq!(
        text_of(&dom, "id=\"results-total\""),
        "2 tests, failures first"
    );
    let results = text_of(&dom, "id=\"results\"");
    assert!(
        results.contains("demo_math.demo_math_overflow") && results.contains("demo_flaky"),
        "{results}"
    );
    assert!(
        !results.contains("demo_math_add"),
        "the status filter applies: {results}"
    );
    assert_eq!(
        text_of(&dom, "id=\"tab-test\""),
        "Tests 0 2 0",
        "tab counts under the filter"
    );
    let strip = text_of(&dom, "id=\"history\"");
    assert_eq!(
        strip,
        "v6.18 0 1 0 v6.18-1-g".to_owned() + &second_sha[..7] + " 0 2 0",
        "history strip"
    );
    assert!(
        dom.contains(&format!("/viewer/compare/{}/{}", id(&first), id(&second))),
        "compare link"
    );
    browser.screenshot(
        &format!("{base}/viewer/checkout/{}?tab=test", id(&second)),
        &shots.join("viewer-revision.png"),
        &[fail_red, pass_green],
    );

    // 3. Result detail: demo_flaky failing after a pass is a regression; links to the last
    //    pass, the first failure and the tracker's regression node.
    let dom = browser.dom(&format!("{base}/viewer/result/{}", id(&flaky_fail)));
    assert_eq!(text_of(&dom, "id=\"label\""), "regression");
    assert!(dom.contains(&format!(
        "id=\"last-pass\" href=\"/viewer/result/{}\"",
        id(&flaky_pass)
    )));
    assert!(dom.contains(&format!(
        "id=\"first-failure\" href=\"/viewer/result/{}\"",
        id(&flaky_fail)
    )));
    assert!(dom.contains(&format!(
        "id=\"regression\" href=\"/viewer/node/{}\"",
        id(&regression)
    )));
    browser.screenshot(
        &format!("{base}/viewer/result/{}", id(&flaky_fail)),
        &dir.path().join("result.png"),
        &[fail_red],
    );

    // 4. Log viewer: the job's log (inherited by the test), the failing line marked.
    let dom = browser.dom(&format!("{base}/viewer/log/{}", id(&flaky_fail)));
    let marked = dom.split("<span class=\"line error\"").skip(1).any(|l| {
        strip_tags(l.split("</span>").next().unwrap_or_default()).contains("not ok 3 demo_flaky")
    });
    assert!(marked, "the failing KTAP line is highlighted:\n{dom}");
    assert!(
        !text_of(&dom, "id=\"error-count\"").starts_with("0 "),
        "error lines counted"
    );
    browser.screenshot(
        &format!("{base}/viewer/log/{}", id(&flaky_fail)),
        &dir.path().join("log.png"),
        &[],
    );

    // 5. Compare previous → this: demo_flaky a regression, the overflow still failing.
    let dom = browser.dom(&format!(
        "{base}/viewer/compare/{}/{}",
        id(&first),
        id(&second)
    ));
    let summary = text_of(&dom, "id=\"summary\"");
    assert!(
        summary.contains("regression: 1") && summary.contains("still failing: 1"),
        "{summary}"
    );
    let changes = text_of(&dom, "id=\"changes\"");
    assert!(
        changes.contains("regression test kselftest-demo · demo_flaky"),
        "{changes}"
    );
    browser.screenshot(
        &format!("{base}/viewer/compare/{}/{}", id(&first), id(&second)),
        &dir.path().join("compare.png"),
        &[fail_red],
    );

    // 6. Pipeline health: the shell runtime ran 4 builds/jobs (2 builds pass, 2 jobs fail),
    //    no infrastructure error; nothing left waiting once both revisions are done.
    let dom = browser.dom(&format!("{base}/viewer/health"));
    assert_eq!(
        text_of(&dom, "id=\"runtimes\""),
        "Runtime Total Pass Fail Infra errors Other inc. Pass rate Infra rate shell 4 2 2 0 0 50.0% 0.0%"
    );
    let kinds = text_of(&dom, "id=\"kinds\"");
    assert!(
        kinds.contains("kbuild done 2 0 0 0 (0) 0") && kinds.contains("job done 0 2 0 0 (0) 0"),
        "{kinds}"
    );
    browser.screenshot(
        &format!("{base}/viewer/health"),
        &shots.join("viewer-health.png"),
        &[fail_red, pass_green],
    );
    // Upstream's /stats and /analytics are this page.
    assert!(
        browser
            .dom(&format!("{base}/stats"))
            .contains("id=\"runtimes\"")
    );

    // 7. Node browser: a node's JSON, children and artifacts; a field/operator search.
    let dom = browser.dom(&format!("{base}/viewer/node/{}", id(&job)));
    assert!(text_of(&dom, "id=\"json\"").contains("\"name\": \"kselftest-demo\""));
    assert!(text_of(&dom, "id=\"children\"").contains("demo_flaky"));
    assert!(text_of(&dom, "id=\"artifacts\"").contains("log:"));
    let dom = browser.dom(&format!(
        "{base}/viewer/nodes?q=kind%3Dtest%0Aresult%3Dfail%0Aname~overflow"
    ));
    assert_eq!(
        text_of(&dom, "id=\"status\"").split(" · ").next(),
        Some("2 shown of 2")
    );
    assert!(
        browser
            .dom(&format!("{base}/viewer?node_id={}", id(&job)))
            .contains("kselftest-demo")
    );

    // 8. Manage: a form posted with the admin token creates a custom checkout with a job
    //    filter (as upstream's /manage does); a bad token is refused.
    let form = dir.path().join("manage.html");
    let url = first.data_str("kernel_revision.url").unwrap();
    let write_form = |token: &str| {
        std::fs::write(
            &form,
            format!(
                "<form id=f method=post action=\"{base}/viewer/manage\"><input name=token value=\"{token}\">\
                 <input name=tree value=demo><input name=branch value=master><input name=url value=\"{url}\">\
                 <input name=commit value={first_sha}><input name=jobfilter value=kbuild-demo-x86>\
                 <input name=action value=submit></form><script>document.getElementById('f').submit()</script>"
            ),
        )
        .unwrap();
    };
    write_form("not-a-token");
    let dom = browser.dom(&format!("file://{}", form.display()));
    assert!(
        text_of(&dom, "id=\"message\"").starts_with("The token was refused"),
        "{dom}"
    );
    write_form(&token);
    let dom = browser.dom(&format!("file://{}", form.display()));
    assert!(
        text_of(&dom, "id=\"message\"").starts_with("Checkout created by admin"),
        "{dom}"
    );
    let created = text_of(&dom, "id=\"created\"");
    let node = api
        .get_node(created.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node.kind, "checkout");
    assert_eq!(node.jobfilter, Some(vec!["kbuild-demo-x86".to_owned()]));

    // The log reader is no open proxy: a foreign URL and path escapes are refused.
    let http = reqwest::Client::new();
    for bad in [
        "http://example.com/log.txt".to_owned(),
        format!("{base}/storage/../../../../etc/passwd"),
        format!("{base}/storage/%2e%2e/%2e%2e/etc/passwd"),
        format!("{base}/storage/x%2f..%2f..%2fetc%2fpasswd"),
        format!("{base}/elsewhere/log.txt"),
        "file:///etc/passwd".to_owned(),
    ] {
        let r = http
            .get(format!("{base}/viewer/api/log"))
            .query(&[("url", &bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{bad} must be refused");
        assert!(r.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    }
    let ok = http
        .get(format!("{base}/viewer/api/log/{}", id(&job)))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let log: serde_json::Value = ok.json().await.unwrap();
    assert!(log["errors"].as_u64().unwrap() >= 2, "{log}");

    shutdown.trigger();
    task.await.unwrap().unwrap();
}
