//! The API documentation page (`/latest/docs`) in a real headless Chromium against a real
//! server: operations grouped by tag with their parameters and schemas, and its "try it" forms
//! driven like a user would (token, path parameter, body).
//!
//! Needs Debian's `chromium` (installed by `scripts/test`); a missing one fails naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use kernelci::client::ApiClient;
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

/// A server over a database in `dir`, a client of it, and an admin token.
async fn start(dir: &Path) -> (TestServer, ApiClient, String) {
    let server = TestServer::start(
        &dir.join("db.sqlite"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        45,
    )
    .await;
    let api = ApiClient::new(&server.url()).unwrap();
    let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    (server, api, token)
}

/// Unescapes the text of an element as `--dump-dom` writes it.
fn dom_text(dom: &str, id: &str) -> String {
    let start = format!("<pre id=\"{id}\">");
    let from = dom
        .find(&start)
        .map(|i| i + start.len())
        .unwrap_or_else(|| {
            panic!("no #{id} in the page:\n{dom}");
        });
    let end = dom[from..].find("</pre>").expect("end of pre") + from;
    dom[from..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// A page of our own (a `data:` URL) that loads `/latest/docs` in a frame and uses it as a
/// user would: it waits for the operations, opens some, types into the "try it" forms and
/// presses Send, then writes what the page showed into `#report` as JSON.
const DOCS_HARNESS: &str = r#"<!doctype html><html><body>
<iframe id="f" src="BASE/latest/docs#op-get_whoami" width="1200" height="900"></iframe>
<pre id="report">waiting</pre>
<script>
const token = 'TOKEN';
const out = {};
const report = () => { document.getElementById('report').textContent = JSON.stringify(out); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, f) {
  out.step = what;
  report();
  for (let i = 0; i < 200; i++) { const v = f(); if (v) return v; await sleep(50); }
  throw new Error('timed out waiting for ' + what);
}
function op(d, id) { return d.getElementById(id); }
async function send(d, id, fill) {
  const details = op(d, id);
  if (!details.open) details.querySelector('summary').click();
  const form = await until(id + ' form', () => details.querySelector('form.try'));
  const before = form.querySelector('.response-status');
  if (before) before.remove();
  fill(form);
  form.querySelector('button.send').click();
  const status = await until(id + ' answer', () => form.querySelector('.response-status'));
  return { status: status.textContent, body: form.querySelector('pre.response').textContent };
}
(async () => {
  try {
    // The frame's document is replaced when the page loads: read it afresh until it renders.
    const frame = () => document.getElementById('f').contentDocument;
    const d = await until('operations', () => {
      const doc = frame();
      return doc && doc.querySelectorAll('details.op').length > 0 && doc;
    });
    out.tags = [...d.querySelectorAll('section.tag')].map((s) => s.dataset.tag);
    out.operations = d.querySelectorAll('details.op').length;
    out.whoami_open = op(d, 'op-get_whoami').open;
    const create = op(d, 'op-post_node');
    create.querySelector('summary').click();
    await until('post /node body', () => create.querySelector('pre.schema'));
    out.node_schema = create.querySelector('pre.schema').textContent;
    out.node_params = create.querySelector('table').textContent;
    const getNode = op(d, 'op-get_node__node_id');
    getNode.querySelector('summary').click();
    await until('get /node params', () => getNode.querySelector('table'));
    out.get_node_params = getNode.querySelector('table').textContent;
    out.no_token = await send(d, 'op-get_whoami', () => {});
    d.getElementById('token').value = token;
    d.querySelector('#auth button[type=submit]').click();
    out.auth_state = d.getElementById('auth-state').textContent;
    out.whoami = await send(d, 'op-get_whoami', () => {});
    out.created = await send(d, 'op-post_node', (form) => {
      form.querySelector('textarea').value = JSON.stringify({ kind: 'checkout', name: 'made-in-the-docs', path: ['made-in-the-docs'], data: {} });
    });
    const id = JSON.parse(out.created.body).id;
    out.fetched = await send(d, 'op-get_node__node_id', (form) => { form.querySelector('input[name=node_id]').value = id; });
    out.bad_json = await (async () => {
      const form = op(d, 'op-post_node').querySelector('form.try');
      form.querySelector('textarea').value = '{not json';
      form.querySelector('button.send').click();
      return form.querySelector('.result').textContent;
    })();
    d.getElementById('filter').value = 'telemetry';
    d.getElementById('filter').dispatchEvent(new Event('input'));
    out.filtered = [...d.querySelectorAll('details.op:not(.hidden)')].map((e) => e.querySelector('.path').textContent);
  } catch (e) {
    out.error = String(e);
  }
  report();
})();
</script></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_renders_the_api_and_tries_requests_in_chromium() {
    let Some(chromium) = chromium().or_else(|| CHROMIUM.missing()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, api, token) = start(dir.path()).await;

    // The page alone: it renders the document (no network beyond this server).
    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(
        &chromium,
        profile.path(),
        &format!("{}/latest/docs", server.url()),
        &["--dump-dom".into()],
    );
    for text in [
        "KernelCI API",
        "/node/{node_id}",
        "/listen/{sub_id}",
        "Submit a result hierarchy",
    ] {
        assert!(
            dom.contains(text),
            "{text:?} missing from the docs page:\n{dom}"
        );
    }
    assert!(!dom.contains("Cannot load"), "{dom}");

    // Used like a user would, from a page that frames it (the frame is another origin, so
    // Chromium's same-origin rule is relaxed for this browser profile only).
    let harness = DOCS_HARNESS
        .replace("BASE", &server.url())
        .replace("TOKEN", &token);
    let url: String = harness
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let url = format!("data:text/html,{url}");
    let dom = run_chromium(
        &chromium,
        profile.path(),
        &url,
        &[
            "--dump-dom".into(),
            "--virtual-time-budget=30000".into(),
            "--disable-web-security".into(),
            "--disable-site-isolation-trials".into(),
            "--disable-features=IsolateOrigins,site-per-process".into(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&dom_text(&dom, "report"))
        .unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{dom}"));
    assert!(report.get("error").is_none(), "{report:#}");
    assert_eq!(
        report["tags"],
        json!([
            "users",
            "nodes",
            "events",
            "pubsub",
            "kv",
            "telemetry",
            "viewer",
            "pages"
        ]),
        "{report:#}"
    );
    assert!(report["operations"].as_u64().unwrap() >= 60, "{report:#}");
    assert_eq!(report["whoami_open"], true, "#op-... opens the operation");
    let schema = report["node_schema"].as_str().unwrap();
    assert!(
        schema.contains("kind*:") && schema.contains("\"checkout\""),
        "{schema}"
    );
    assert!(schema.contains("path*: array of string"), "{schema}");
    let params = report["get_node_params"].as_str().unwrap();
    assert!(
        params.contains("node_id") && params.contains("pattern ^[0-9a-f]{24}$"),
        "{params}"
    );
    assert_eq!(
        report["no_token"]["status"], "401 Unauthorized",
        "{report:#}"
    );
    assert!(
        report["auth_state"]
            .as_str()
            .unwrap()
            .starts_with("Token set")
    );
    assert_eq!(report["whoami"]["status"], "200 OK", "{report:#}");
    let me: serde_json::Value =
        serde_json::from_str(report["whoami"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(me["username"], "admin");
    assert_eq!(report["created"]["status"], "200 OK", "{report:#}");
    assert_eq!(report["fetched"]["status"], "200 OK", "{report:#}");
    let fetched: serde_json::Value =
        serde_json::from_str(report["fetched"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(fetched["name"], "made-in-the-docs");
    assert_eq!(fetched["owner"], "admin");
    assert!(
        report["bad_json"]
            .as_str()
            .unwrap()
            .starts_with("The body is not valid JSON"),
        "{report:#}"
    );
    let filtered: Vec<&str> = report["filtered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!filtered.is_empty());
    assert!(
        filtered.iter().all(|p| p.starts_with("/telemetry")),
        "{filtered:?}"
    );
    // The node really exists on the server.
    let api = api.with_token(token);
    assert_eq!(
        api.count_nodes(&[("name", "made-in-the-docs")])
            .await
            .unwrap(),
        1
    );

    server.stop().await;
}
