//! Test peers for KCIDB (features `kcidb` and `testsuite`):
//!
//! - [`KcidbIo`]: kcidb-io, KCIDB's own schema library (PyPI `kcidb-io`), in a venv under the
//!   peer cache that `scripts/test` installs; validates documents with format checks on,
//!   exactly as KCIDB does before it takes a submission;
//! - [`KcidbReceiver`]: a real HTTP server on a loopback port that answers `POST /submit` like
//!   kcidb-ng's REST server (200 with an `id`, 400, 401, 502, or no answer at all), and
//!   records every request;
//! - result trees written through the API the way the pipeline writes them
//!   ([`finished_checkout`], [`finished_kbuild`], [`finished_test_job`]).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{ApiClient, Hierarchy};
use crate::models::{Node, NodeKind, ResultValue, State};
pub use crate::testsuite::peers::KCIDB_IO_REQUIREMENT;
use crate::testsuite::peers::{KCIDB_IO, peers_dir};

/// The venv directory: `$KCI_PEERS_DIR/kcidb-io`, else `/var/cache/kernelci-rs/peers/kcidb-io`.
pub fn kcidb_io_venv() -> PathBuf {
    peers_dir().join("kcidb-io")
}

/// The command that installs kcidb-io where the harness looks for it.
pub fn kcidb_io_install_command() -> String {
    KCIDB_IO.install_command()
}

/// Validates each file: the schema version the document declares (kcidb-io's
/// `get_exactly_compatible`, else the latest), Draft 7 with the format checker; then
/// kcidb-io's own strict `LATEST.validate`. Prints `{"<file>": [errors...]}`.
const VALIDATE_PY: &str = r#"
import json, sys
import jsonschema
from kcidb_io import schema
out = {}
for path in sys.argv[1:]:
    errors = []
    try:
        doc = json.load(open(path))
    except Exception as e:
        out[path] = ["not JSON: %s" % e]
        continue
    v = schema.LATEST.get_exactly_compatible(doc) or schema.LATEST
    validator = jsonschema.Draft7Validator(v.json, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    for e in validator.iter_errors(doc):
        errors.append("/".join(str(p) for p in e.absolute_path) + ": " + e.message)
    try:
        schema.LATEST.validate(doc)
    except Exception as e:
        errors.append("LATEST.validate: " + str(e).splitlines()[0])
    if not schema.LATEST.is_valid(doc):
        errors.append("LATEST.is_valid is False")
    out[path] = errors
print(json.dumps(out))
"#;

/// Checks strings against a jsonschema format: prints a list of booleans.
const FORMATS_PY: &str = r#"
import json, sys
import jsonschema
fmt = sys.argv[1]
values = json.load(sys.stdin)
checker = jsonschema.Draft7Validator.FORMAT_CHECKER
print(json.dumps([checker.conforms(v, fmt) for v in values]))
"#;

/// kcidb-io, installed in its venv.
#[derive(Debug, Clone)]
pub struct KcidbIo {
    python: PathBuf,
}

impl KcidbIo {
    /// kcidb-io when it is installed; otherwise [`KCIDB_IO`]`.missing()` (a failure naming
    /// the install command, or a recorded skip when `KCI_ALLOW_MISSING` names `kcidb-io`).
    pub fn locate() -> Option<KcidbIo> {
        let python = kcidb_io_venv().join("bin/python");
        let works = python.is_file()
            && Command::new(&python)
                .args([
                    "-c",
                    "import kcidb_io, jsonschema, rfc3987, rfc3339_validator",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
        if works {
            Some(KcidbIo { python })
        } else {
            KCIDB_IO.missing()
        }
    }

    /// The schema errors of each file (empty lists when valid).
    pub fn validate_files(&self, files: &[PathBuf]) -> Vec<(PathBuf, Vec<String>)> {
        if files.is_empty() {
            return Vec::new();
        }
        let output = Command::new(&self.python)
            .arg("-c")
            .arg(VALIDATE_PY)
            .args(files)
            .output()
            .unwrap_or_else(|e| panic!("running kcidb-io: {e}"));
        assert!(
            output.status.success(),
            "kcidb-io validator failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let map: serde_json::Map<String, Value> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("kcidb-io validator output: {e}"));
        files
            .iter()
            .map(|f| {
                let errors = map
                    .get(&f.display().to_string())
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_else(|| vec!["not checked".to_owned()]);
                (f.clone(), errors)
            })
            .collect()
    }

    /// The schema errors of one document.
    pub fn validate(&self, document: &Value) -> Vec<String> {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(document.to_string().as_bytes())
            .expect("write document");
        let path = file.path().to_path_buf();
        self.validate_files(&[path])
            .into_iter()
            .next()
            .map(|(_, e)| e)
            .unwrap_or_default()
    }

    /// Whether each value conforms to the jsonschema `format` (`uri`, `date-time`, `email`)
    /// as kcidb-io's checker sees it.
    pub fn conforms(&self, format: &str, values: &[&str]) -> Vec<bool> {
        let mut child = Command::new(&self.python)
            .arg("-c")
            .arg(FORMATS_PY)
            .arg(format)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running kcidb-io: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(json!(values).to_string().as_bytes())
                .expect("write values");
        }
        let output = child.wait_with_output().expect("kcidb-io format check");
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "format check output: {e}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Validates every `*.json` in `dir`; returns how many there were, panicking with the
    /// errors when one is invalid.
    pub fn assert_dir_valid(&self, dir: &Path) -> usize {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let bad: Vec<String> = self
            .validate_files(&files)
            .into_iter()
            .filter(|(_, e)| !e.is_empty())
            .map(|(f, e)| format!("{}:\n  {}", f.display(), e.join("\n  ")))
            .collect();
        assert!(
            bad.is_empty(),
            "invalid KCIDB documents:\n{}",
            bad.join("\n")
        );
        files.len()
    }
}

/// How the receiver answers a `POST /submit` (after checking the token and the JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 `{"id": ..., "status": "ok", ...}`: taken.
    Accept,
    /// This status with kcidb-ng's error body (`{"id":"0","status":"error",...}`).
    Status(u16),
    /// No answer at all: the connection is held open until the client gives up.
    Hang,
    /// 400 when the body contains this text, else 200.
    RejectIfContains(String),
}

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// When it arrived (the whole body read).
    pub at: Instant,
    /// The status answered (0: no answer).
    pub status: u16,
    /// The submission id answered with 200.
    pub id: Option<String>,
    /// Whether the bearer token was right.
    pub authorized: bool,
    /// The body (JSON; `Null` when it was not JSON).
    pub body: Value,
}

#[derive(Debug, Default)]
struct ReceiverState {
    script: VecDeque<Answer>,
    default: Option<Answer>,
    requests: Vec<ReceivedRequest>,
}

/// A KCIDB REST receiver on 127.0.0.1, on its own thread; stopped when dropped.
#[derive(Debug)]
pub struct KcidbReceiver {
    /// The port.
    pub port: u16,
    token: String,
    state: Arc<Mutex<ReceiverState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

async fn read_request(stream: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.lines().next().unwrap_or("").to_owned();
    Some((request_line, head, body))
}

async fn serve(mut stream: TcpStream, token: String, state: Arc<Mutex<ReceiverState>>) {
    let Some((request_line, head, body)) = read_request(&mut stream).await else {
        return;
    };
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reply = |status: u16, reason: &str, body: String| {
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if method == "GET" && path == "/health" {
        let _ = stream
            .write_all(reply(200, "OK", "OK".into()).as_bytes())
            .await;
        return;
    }
    if method != "POST" || path != "/submit" {
        let _ = stream
            .write_all(reply(404, "Not Found", "{}".into()).as_bytes())
            .await;
        return;
    }
    let authorized = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("authorization")
                && v.split_whitespace().nth(1) == Some(token.as_str())
        })
    });
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let answer = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        if !authorized || parsed.is_none() {
            None
        } else {
            Some(
                s.script
                    .pop_front()
                    .or_else(|| s.default.clone())
                    .unwrap_or(Answer::Accept),
            )
        }
    };
    let error =
        |message: &str| json!({"id": "0", "status": "error", "message": message}).to_string();
    let (status, id, text) = match (&answer, authorized) {
        (_, false) => (401, None, error("Unauthorized")),
        (None, true) => (400, None, error("Invalid JSON")),
        (Some(Answer::Hang), _) => (0, None, String::new()),
        (Some(Answer::Status(code)), _) => (*code, None, error("scripted error")),
        (Some(Answer::RejectIfContains(text)), _)
            if String::from_utf8_lossy(&body).contains(text.as_str()) =>
        {
            (400, None, error("rejected"))
        }
        (Some(Answer::Accept | Answer::RejectIfContains(_)), _) => {
            let id = random_id();
            let msg = format!("Received submission {id} with size {} bytes", body.len());
            (
                200,
                Some(id.clone()),
                json!({"id": id, "status": "ok", "message": msg}).to_string(),
            )
        }
    };
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(ReceivedRequest {
            at: Instant::now(),
            status,
            id,
            authorized,
            body: parsed.unwrap_or(Value::Null),
        });
    if status == 0 {
        // Hold the connection until the client gives up.
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        502 => "Bad Gateway",
        _ => "Error",
    };
    let _ = stream
        .write_all(reply(status, reason, text).as_bytes())
        .await;
    let _ = stream.shutdown().await;
}

impl KcidbReceiver {
    /// Starts a receiver that accepts `Bearer <token>`.
    pub fn start(token: &str) -> KcidbReceiver {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (st, tok) = (state.clone(), token.to_owned());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(serve(stream, tok.clone(), st.clone()));
                            }
                        }
                    }
                }
            });
            rt.shutdown_background();
        });
        KcidbReceiver {
            port,
            token: token.to_owned(),
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// A `KCIDB_REST` value for this receiver (`http://<token>@127.0.0.1:<port>/`).
    pub fn kcidb_rest(&self) -> String {
        format!("http://{}@127.0.0.1:{}/", self.token, self.port)
    }

    /// The next requests get these answers, in order (then the default).
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.with(|s| s.script.extend(answers));
    }

    /// The answer once the script is used up (default: [`Answer::Accept`]).
    pub fn set_default(&self, answer: Answer) {
        self.with(|s| s.default = Some(answer));
    }

    fn with<R>(&self, f: impl FnOnce(&mut ReceiverState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.with(|s| s.requests.clone())
    }

    /// The documents answered with 200.
    pub fn accepted(&self) -> Vec<Value> {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.status == 200)
                .map(|r| r.body.clone())
                .collect()
        })
    }

    /// How many objects of each id the accepted documents held, per list:
    /// `(list, id) → count`.
    pub fn accepted_ids(&self) -> std::collections::BTreeMap<(String, String), usize> {
        let mut out = std::collections::BTreeMap::new();
        for doc in self.accepted() {
            for list in ["checkouts", "builds", "tests", "issues", "incidents"] {
                for o in doc
                    .get(list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let id = o.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                    *out.entry((list.to_owned(), id)).or_insert(0) += 1;
                }
            }
        }
        out
    }
}

impl Drop for KcidbReceiver {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `done` checkout of `commit` on an https mainline tree.
pub async fn finished_checkout(api: &ApiClient, commit: &str) -> Node {
    let mut n = Node::new(NodeKind::Checkout, "checkout");
    n.state = State::Done;
    n.result = Some(ResultValue::Pass);
    n.data = json!({"kernel_revision": {
        "tree": "mainline", "branch": "master", "commit": commit, "describe": "v6.18",
        "url": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
    }})
    .as_object()
    .cloned();
    api.create_node(&n).await.expect("create checkout")
}

/// A passing `done` kbuild `name` under `checkout` for `arch`, its build log and kernel
/// below `artifacts`.
pub async fn finished_kbuild(
    api: &ApiClient,
    checkout: &Node,
    name: &str,
    arch: &str,
    artifacts: &str,
) -> Node {
    let mut n = Node::new(NodeKind::Kbuild, name);
    n.parent = checkout.id;
    n.path = vec!["checkout".into(), name.into()];
    n.state = State::Done;
    n.result = Some(ResultValue::Pass);
    let mut data = checkout.data.clone().unwrap_or_default();
    data.insert("arch".into(), json!(arch));
    data.insert("compiler".into(), json!("gcc"));
    data.insert("config_full".into(), json!("x86_64_defconfig"));
    data.insert("runtime".into(), json!("shell"));
    n.data = Some(data);
    n.artifacts = json!({"build_log": format!("{artifacts}/build.log"),
        "kernel": format!("{artifacts}/bzImage")})
    .as_object()
    .cloned();
    api.create_node(&n).await.expect("create kbuild")
}

/// A test job `name` under `kbuild`, written like the job runner does: a `running` node, then
/// one result hierarchy (`PUT /nodes/{id}`) with `cases` finished leaves — under a suite node
/// named `suite` when given (leaves `<suite>_case_<i>`), else directly (`case_<i>`). Case 0
/// and every tenth fail. Returns every written node.
pub async fn finished_test_job(
    api: &ApiClient,
    kbuild: &Node,
    name: &str,
    suite: Option<&str>,
    cases: usize,
) -> Vec<Node> {
    let mut job = Node::new(NodeKind::Job, name);
    job.parent = kbuild.id;
    job.path = kbuild.path.clone();
    job.path.push(name.into());
    let mut data = kbuild.data.clone().unwrap_or_default();
    data.insert("platform".into(), json!("qemu-x86"));
    data.insert("job_id".into(), json!("job-1"));
    job.data = Some(data.clone());
    let mut job = api.create_node(&job).await.expect("create job");
    job.state = State::Done;
    job.result = Some(ResultValue::Fail);
    let node = |name: String, parent_path: &[String], result| {
        let mut t = Node::new(NodeKind::Test, &name);
        t.path = parent_path.to_vec();
        t.path.push(name);
        t.state = State::Done;
        t.result = Some(result);
        t.data = Some(data.clone());
        t
    };
    let parent_path = match suite {
        Some(s) => {
            let mut p = job.path.clone();
            p.push(s.into());
            p
        }
        None => job.path.clone(),
    };
    let leaves: Vec<Hierarchy> = (0..cases)
        .map(|i| {
            let leaf = match suite {
                Some(s) => format!("{s}_case_{i}"),
                None => format!("case_{i}"),
            };
            let result = if i % 10 == 0 {
                ResultValue::Fail
            } else {
                ResultValue::Pass
            };
            Hierarchy {
                node: node(leaf, &parent_path, result),
                child_nodes: vec![],
            }
        })
        .collect();
    let children = match suite {
        Some(s) => vec![Hierarchy {
            node: node(s.into(), &job.path, ResultValue::Fail),
            child_nodes: leaves,
        }],
        None => leaves,
    };
    api.submit_results(&Hierarchy {
        node: job,
        child_nodes: children,
    })
    .await
    .expect("submit results")
}
