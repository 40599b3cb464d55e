//! Helpers of the reliability tests: the real `kernelci-server` binary as a child process (so
//! it can be killed with SIGKILL and restarted on the same port), and a small HTTP client.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use kernelci::testsuite::peers::{free_port, wait_for_port};
use serde_json::Value;

/// The admin password of servers started here.
pub const ADMIN_PASSWORD: &str = "reliability-admin";
/// The token signing secret of servers started here: the test suite's publicly known one
/// (feature `testsuite` of kernelci-server).
pub const SECRET: &str = kernelci_server::config::TEST_SECRET_KEY;

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

/// The `kernelci-server` binary: `$KCI_SERVER_BIN`, else the one next to this test's target
/// directory, built with cargo first when missing or older than the sources.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("KCI_SERVER_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test exe");
        // <target>/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let bin = profile_dir.join("kernelci-server");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut newest = SystemTime::UNIX_EPOCH;
        for d in [
            "kernelci/src",
            "kernelci-server/src",
            "kernelci-server/assets",
        ] {
            newest_mtime(&root.join(d), &mut newest);
        }
        let fresh = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m >= newest);
        if !fresh {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(root)
                .args(["build", "-p", "kernelci-server", "--bin", "kernelci-server"])
                .env("CARGO_TARGET_DIR", &target_dir);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(st.success(), "cargo build -p kernelci-server failed");
        }
        bin
    })
    .clone()
}

/// How to start a server process.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// `--database` value.
    pub database: String,
    /// `--redis` value.
    pub redis: Option<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl ServerSpec {
    /// The embedded default: a SQLite file.
    pub fn sqlite(path: &Path) -> ServerSpec {
        ServerSpec {
            database: format!("sqlite://{}", path.display()),
            redis: None,
            env: Vec::new(),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> ServerSpec {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// The real server binary as a child process on a fixed loopback port. Dropping it kills it.
pub struct ServerProc {
    /// The port (kept across restarts).
    pub port: u16,
    /// How it was started.
    pub spec: ServerSpec,
    child: Option<Child>,
    /// Where its output goes (appended across restarts).
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
    /// How many times it was started.
    pub starts: u32,
}

impl ServerProc {
    /// Starts the server and waits until it accepts connections.
    pub fn start(spec: ServerSpec) -> ServerProc {
        let logdir = tempfile::tempdir().expect("tempdir");
        let mut s = ServerProc {
            port: free_port(),
            spec,
            child: None,
            log: logdir.path().join("server.log"),
            _logdir: logdir,
            starts: 0,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(server_bin());
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--database")
            .arg(&self.spec.database)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SECRET_KEY", SECRET)
            .env("KCI_INITIAL_PASSWORD", ADMIN_PASSWORD)
            .env("KEEP_ALIVE_PERIOD", "2")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(r) = &self.spec.redis {
            cmd.arg("--redis").arg(r);
        }
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn kernelci-server");
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "kernelci-server exited at start ({st}); log:\n{}",
                    self.log_text()
                );
            }
            if wait_for_port(self.port, Duration::from_millis(200)) {
                self.child = Some(child);
                return;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("kernelci-server did not listen; log:\n{}", self.log_text());
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` (SIGKILL: no shutdown, no flush) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same settings.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// A small HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Http {
    /// Base URL.
    pub base: String,
    /// The client.
    pub client: reqwest::Client,
}

/// What a request carries as its body.
#[derive(Debug, Clone)]
pub enum Body {
    /// Nothing.
    None,
    /// JSON.
    Json(Value),
    /// An urlencoded form.
    Form(Vec<(String, String)>),
}

impl Http {
    /// A client with a request timeout of `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http {
            base: base.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
        }
    }

    /// Sends one request.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Body,
    ) -> Result<Reply, reqwest::Error> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.client.request(m, format!("{}{}", self.base, path));
        if let Some(t) = token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        rb = match body {
            Body::None => rb,
            Body::Json(v) => rb.json(v),
            Body::Form(f) => rb.form(f),
        };
        let r = rb.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok(Reply { status, text })
    }

    /// Sends one request; panics on transport errors.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> Reply {
        self.send(method, path, token, &body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Logs in; returns the token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .call(
                "POST",
                "/latest/user/login",
                None,
                Body::Form(vec![
                    ("username".into(), username.into()),
                    ("password".into(), password.into()),
                ]),
            )
            .await;
        assert_eq!(r.status, 200, "login {username}: {}", r.text);
        r.json()["access_token"].as_str().expect("token").to_owned()
    }

    /// Invites and accepts a user with `groups`; returns its id. Password `<name>-pass`.
    pub async fn create_user(&self, admin: &str, username: &str, groups: &[&str]) -> String {
        let r = self
            .call(
                "POST",
                "/latest/user/invite",
                Some(admin),
                Body::Json(serde_json::json!({
                    "username": username, "email": format!("{username}@example.org"),
                    "groups": groups, "send_email": false, "return_token": true})),
            )
            .await;
        assert_eq!(r.status, 200, "invite {username}: {}", r.text);
        let token = r.json()["token"].as_str().expect("invite token").to_owned();
        let r = self
            .call(
                "POST",
                "/latest/user/accept-invite",
                None,
                Body::Json(
                    serde_json::json!({"token": token, "password": format!("{username}-pass")}),
                ),
            )
            .await;
        assert_eq!(r.status, 200, "accept {username}: {}", r.text);
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// A fresh API token of the user behind `token` (`expires_in` seconds, if given); returns
    /// the token and its id.
    pub async fn api_token(&self, token: &str, expires_in: Option<u64>) -> (String, String) {
        let body = match expires_in {
            Some(s) => serde_json::json!({"name": "t", "expires_in": s}),
            None => serde_json::json!({"name": "t"}),
        };
        let r = self
            .call("POST", "/latest/user/tokens", Some(token), Body::Json(body))
            .await;
        assert_eq!(r.status, 200, "token: {}", r.text);
        let v = r.json();
        (
            v["access_token"].as_str().expect("token").to_owned(),
            v["jti"].as_str().expect("jti").to_owned(),
        )
    }
}

/// A node body of kind `test`.
pub fn node(name: &str) -> Value {
    serde_json::json!({"kind": "test", "name": name, "path": ["checkout", name], "data": {}})
}

/// Every event of the log (`GET /events`, all channels), in sequence order.
pub async fn all_events(http: &Http) -> Vec<Value> {
    let r = http.call("GET", "/latest/events", None, Body::None).await;
    assert_eq!(r.status, 200, "events: {}", r.text);
    match r.json() {
        Value::Array(a) => a,
        other => panic!("events: {other}"),
    }
}

/// Reads an environment variable as a number, with a default.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Any program as a child process (a pipeline service, say), killed with SIGKILL and
/// restarted with the same arguments. Dropping it kills it.
pub struct ChildProc {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl ChildProc {
    /// Starts `program args...` with extra `env`; output is discarded.
    pub fn start(program: &str, args: &[&str], env: &[(&str, &str)]) -> ChildProc {
        let mut p = ChildProc {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        };
        p.restart();
        p
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts it.
    pub fn restart(&mut self) {
        self.kill9();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn child process"));
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
