//! Shared helpers of the server tests: an app over a fresh SQLite store, requests through the
//! router without a socket, users made the upstream way (invite + accept-invite).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kernelci::events::LocalBus;
use kernelci::store::SqliteStore;
use kernelci::testsuite::smtp::{ReceivedMail, SmtpServer};
use kernelci_server::App;
use kernelci_server::config::ServerConfig;
use serde_json::{Value, json};
use warp::http::Response;

pub const ADMIN_PASSWORD: &str = "admin-pass";

/// An app and the things behind it.
pub struct TestApp {
    pub app: Arc<App>,
    pub store: SqliteStore,
    pub dir: Arc<tempfile::TempDir>,
    pub admin: String,
}

/// The test configuration: an admin password, and whatever `tweak` changes.
pub fn config(tweak: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut c = ServerConfig {
        initial_password: Some(ADMIN_PASSWORD.into()),
        ..ServerConfig::for_tests()
    };
    tweak(&mut c);
    c
}

/// The database file of a test directory.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("kernelci.sqlite3")
}

/// Builds an app over the SQLite file in `dir` (created when missing) and bootstraps it.
pub async fn app_in(dir: Arc<tempfile::TempDir>, config: ServerConfig) -> TestApp {
    let store = SqliteStore::open(db_path(dir.path())).expect("open sqlite");
    let app = App::new(
        config,
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Arc::new(LocalBus::new()),
    )
    .expect("app");
    app.bootstrap().await.expect("bootstrap");
    let mut t = TestApp {
        app,
        store,
        dir,
        admin: String::new(),
    };
    t.admin = t.login("admin", ADMIN_PASSWORD).await;
    t
}

/// A fresh app with the default test configuration.
pub async fn app() -> TestApp {
    app_with(|_| {}).await
}

/// A fresh app with a tweaked configuration.
pub async fn app_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    app_in(dir, config(tweak)).await
}

/// A reply, with the body parsed when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: warp::http::HeaderMap,
    pub bytes: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} (status {})",
                String::from_utf8_lossy(&self.bytes),
                self.status
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The `detail` of an error body.
    pub fn detail(&self) -> Value {
        self.json()["detail"].clone()
    }
    /// Asserts the status and the `{"detail": <text>}` body.
    #[track_caller]
    pub fn assert_detail(&self, status: u16, detail: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.json(), json!({ "detail": detail }));
    }
    /// Asserts a 422 whose first error has this type and location.
    #[track_caller]
    pub fn assert_422(&self, ty: &str, loc: Value) {
        assert_eq!(self.status, 422, "body: {}", self.text());
        let d = self.detail();
        let first = &d.as_array().expect("a list of errors")[0];
        assert_eq!(first["type"], ty, "{d}");
        assert_eq!(first["loc"], loc, "{d}");
    }
}

fn from_response(r: Response<Bytes>) -> Reply {
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        bytes: r.into_body(),
    }
}

/// A request builder bound to an app.
pub struct Req<'a> {
    app: &'a TestApp,
    inner: warp::test::RequestBuilder,
}

impl Req<'_> {
    pub fn token(mut self, token: &str) -> Self {
        self.inner = self
            .inner
            .header("authorization", format!("Bearer {token}"));
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.inner = self.inner.header(k, v);
        self
    }
    pub fn json(mut self, body: &Value) -> Self {
        self.inner = self
            .inner
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).expect("json"));
        self
    }
    pub fn raw(mut self, body: impl AsRef<[u8]>) -> Self {
        self.inner = self
            .inner
            .header("content-type", "application/json")
            .body(body.as_ref());
        self
    }
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.inner = self
            .inner
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self
    }
    pub async fn send(self) -> Reply {
        let filter = kernelci_server::routes(self.app.app.clone());
        from_response(self.inner.reply(&filter).await)
    }
}

impl TestApp {
    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            app: self,
            inner: warp::test::request().method(method).path(path),
        }
    }
    pub async fn get(&self, path: &str) -> Reply {
        self.req("GET", path).send().await
    }
    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        self.req("GET", path).token(token).send().await
    }
    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> Reply {
        self.req("POST", path).token(token).json(body).send().await
    }
    pub async fn put_as(&self, token: &str, path: &str, body: &Value) -> Reply {
        self.req("PUT", path).token(token).json(body).send().await
    }
    pub async fn patch_as(&self, token: &str, path: &str, body: &Value) -> Reply {
        self.req("PATCH", path).token(token).json(body).send().await
    }
    pub async fn delete_as(&self, token: &str, path: &str) -> Reply {
        self.req("DELETE", path).token(token).send().await
    }

    /// Logs in with the form; panics unless it works.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .req("POST", "/latest/user/login")
            .form(&[("username", username), ("password", password)])
            .send()
            .await;
        assert_eq!(r.status, 200, "login {username}: {}", r.text());
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Invites a user (admin) and accepts the invite; returns the user's id. Password is
    /// `<username>-pass`.
    pub async fn create_user(&self, username: &str, groups: &[&str]) -> String {
        let r = self
            .post_as(
                &self.admin,
                "/latest/user/invite",
                &json!({"username": username, "email": format!("{username}@example.org"),
                        "groups": groups, "send_email": false, "return_token": true}),
            )
            .await;
        assert_eq!(r.status, 200, "invite: {}", r.text());
        let invite = r.json();
        let token = invite["token"].as_str().expect("token").to_owned();
        let r = self
            .req("POST", "/latest/user/accept-invite")
            .json(&json!({"token": token, "password": format!("{username}-pass")}))
            .send()
            .await;
        assert_eq!(r.status, 200, "accept: {}", r.text());
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// Creates a user and logs them in; returns the token.
    pub async fn user_token(&self, username: &str, groups: &[&str]) -> String {
        self.create_user(username, groups).await;
        self.login(username, &format!("{username}-pass")).await
    }

    /// Creates a group (admin).
    pub async fn create_group(&self, name: &str) -> String {
        let r = self
            .post_as(&self.admin, "/latest/user-groups", &json!({ "name": name }))
            .await;
        assert_eq!(r.status, 200, "group: {}", r.text());
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// Creates a node; returns it.
    pub async fn create_node(&self, token: &str, node: Value) -> Value {
        let r = self.post_as(token, "/latest/node", &node).await;
        assert_eq!(r.status, 200, "create node: {}", r.text());
        r.json()
    }

    /// Subscribes; returns the subscription id.
    pub async fn subscribe(&self, token: &str, channel: &str, query: &str) -> u64 {
        let r = self
            .req("POST", &format!("/latest/subscribe/{channel}{query}"))
            .token(token)
            .send()
            .await;
        assert_eq!(r.status, 200, "subscribe: {}", r.text());
        r.json()["id"].as_u64().expect("id")
    }

    /// One `/listen`, parsed: the message and its CloudEvent.
    pub async fn listen(&self, token: &str, sub: u64, query: &str) -> (Value, Value) {
        let r = self
            .get_as(token, &format!("/latest/listen/{sub}{query}"))
            .await;
        assert_eq!(r.status, 200, "listen: {}", r.text());
        let msg = r.json();
        let ev: Value =
            serde_json::from_str(msg["data"].as_str().expect("data string")).expect("event");
        (msg, ev)
    }

    /// A `/listen` with a time limit: `None` when nothing came.
    pub async fn listen_within(
        &self,
        token: &str,
        sub: u64,
        query: &str,
        ms: u64,
    ) -> Option<(Value, Value)> {
        tokio::time::timeout(
            std::time::Duration::from_millis(ms),
            self.listen(token, sub, query),
        )
        .await
        .ok()
    }
}

/// A minimal valid node of `kind`.
pub fn node(kind: &str, name: &str) -> Value {
    json!({"kind": kind, "name": name, "path": ["checkout", name], "data": {}})
}

/// Waits (off the async threads, up to 15 s) until the SMTP server holds `n` messages;
/// asserts there are exactly `n`.
pub async fn mails(smtp: &SmtpServer, n: usize) -> Vec<ReceivedMail> {
    let got = tokio::task::block_in_place(|| {
        smtp.wait_for_messages(n, std::time::Duration::from_secs(15))
    });
    assert_eq!(got.len(), n, "messages: {got:#?}\nlog:\n{}", smtp.log());
    got
}

/// The text after `prefix` up to the next white space.
pub fn word_after(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {text:?}"))
        + prefix.len();
    text[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
