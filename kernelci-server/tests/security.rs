//! The server read as an attacker would (issue 19): password-reset poisoning through forged
//! `Host`/`Forwarded` headers, weak or missing secrets, unbounded responses, login floods and
//! slow-loris clients. Real sockets, a real SMTP server (aiosmtpd).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestApp, app_with, mails, word_after};
use kernelci::store::{EventMode, NodeStore};
use kernelci::testsuite::smtp::SmtpServer;
use kernelci_server::App;
use kernelci_server::app::StartError;
use kernelci_server::config::ServerConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const SENDER: &str = "kernelci@example.org";
const VICTIM: &str = "victim@example.org";
const PUBLIC_URL: &str = "https://api.example.org";

/// Sends `request` as is over a new connection and reads the answer until the server closes.
async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("the server did not answer within 30 s")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// The attacker's request: a password reset for the victim, with `Host` and every forwarding
/// header pointing at the attacker.
fn forged_forgot_password() -> String {
    let body = format!("{{\"email\": \"{VICTIM}\"}}");
    format!(
        "POST /latest/user/forgot-password HTTP/1.1\r\n\
         Host: attacker.example\r\n\
         Forwarded: for=203.0.113.9;host=attacker.example;proto=https\r\n\
         X-Forwarded-Host: attacker.example\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-For: 203.0.113.9\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Starts a server as an operator would (`App::open` over a SQLite file, a real socket) with
/// SMTP pointing at `smtp` and `public_url`, sends the forged reset request, and returns the
/// reset link of the mail the victim receives; or why the server refused to start.
async fn reset_link_after_forged_request(
    smtp: &SmtpServer,
    public_url: Option<&str>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> Result<String, StartError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::config(|c| {
        c.database = Some(format!(
            "sqlite://{}",
            common::db_path(dir.path()).display()
        ));
        c.public_base_url = public_url.map(str::to_owned);
        c.smtp_host = Some("127.0.0.1".into());
        c.smtp_port = Some(smtp.port());
        c.email_sender = Some(SENDER.into());
        c.initial_admin_email = Some(VICTIM.into());
        tweak(c);
    });
    let app = App::open(config).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = kernelci_server::bind(app, ([127, 0, 0, 1], 0).into(), async {
        let _ = stopped.await;
    })
    .expect("bind");
    let server = tokio::spawn(server);
    let before = smtp.messages().len();
    let answer = raw_http(addr, &forged_forgot_password()).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let mail = mails(smtp, before + 1).await.remove(before);
    assert_eq!(mail.header("To"), Some(VICTIM));
    let _ = stop.send(());
    let _ = server.await;
    Ok(word_after(&mail.text, "curl -X POST "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_host_and_forwarded_headers_never_reach_the_reset_mail() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    // SMTP without a public URL: the link could only come from the request, so the server
    // must refuse to start (it used to mail `https://attacker.example/user/reset-password`).
    let refused = reset_link_after_forged_request(&smtp, None, |_| {}).await;
    match &refused {
        Err(StartError::Config(m)) => assert!(
            m.contains("--public-url") && m.contains("PUBLIC_BASE_URL"),
            "the refusal does not say what to set: {m}"
        ),
        other => panic!("a server with SMTP and no public URL answered: {other:?}"),
    }
    // With a public URL, the link is that URL whatever the headers say.
    let link = reset_link_after_forged_request(&smtp, Some(PUBLIC_URL), |_| {})
        .await
        .expect("start");
    assert_eq!(link, format!("{PUBLIC_URL}/user/reset-password"));
    // Even when the peer is a trusted proxy (whose forwarded headers are believed for the
    // client's address), links come from the configuration only.
    let link = reset_link_after_forged_request(&smtp, Some(PUBLIC_URL), |c| {
        c.trusted_proxy = vec!["127.0.0.1".parse().unwrap()];
    })
    .await
    .expect("start");
    assert_eq!(link, format!("{PUBLIC_URL}/user/reset-password"));
}

/// A server for `t` on a loopback port; dropping it stops the server.
struct Served {
    addr: SocketAddr,
    base: String,
    _stop: oneshot::Sender<()>,
}

fn serve(t: &TestApp) -> Served {
    let (stop, stopped) = oneshot::channel::<()>();
    let (addr, server) = kernelci_server::bind(t.app.clone(), ([127, 0, 0, 1], 0).into(), async {
        let _ = stopped.await;
    })
    .expect("bind");
    tokio::spawn(server);
    Served {
        addr,
        base: format!("http://{addr}/latest"),
        _stop: stop,
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invite_url_believes_forwarded_headers_only_from_trusted_proxies() {
    for (trusted, expected) in [
        (vec![], "http://api.internal:8001"),
        (
            vec!["127.0.0.0/8".parse().unwrap()],
            "https://kernelci.example.org",
        ),
    ] {
        let t = app_with(|c| c.trusted_proxy = trusted).await;
        let s = serve(&t);
        let request = format!(
            "GET /latest/user/invite/url HTTP/1.1\r\nHost: api.internal:8001\r\n\
             Authorization: Bearer {}\r\n\
             Forwarded: for=203.0.113.9;host=kernelci.example.org;proto=https\r\n\
             Connection: close\r\n\r\n",
            t.admin
        );
        let answer = raw_http(s.addr, &request).await;
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
        assert_eq!(v["public_base_url"], expected, "{answer}");
    }
}

/// Starts the server binary with `env` (and nothing else from this environment); returns its
/// exit status and output when it stops by itself within 30 s.
fn refused_start(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kernelci-server"));
    cmd.args(["--listen", "127.0.0.1:0", "--database"])
        .arg(format!(
            "sqlite://{}",
            dir.path().join("db.sqlite3").display()
        ))
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kernelci-server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (out.status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "kernelci-server did not refuse to start with {env:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn start_up_refuses_weak_secrets_and_mail_without_a_public_url() {
    let strong = "0123456789abcdef0123456789abcdef";
    let (code, out) = refused_start(&[("SECRET_KEY", "changeme")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("SECRET_KEY (--secret-key) is 8 bytes long; at least 32")
            && out.contains("--allow-weak-secret"),
        "{out}"
    );
    assert!(!out.contains("changeme"), "the secret was printed: {out}");
    let (code, out) = refused_start(&[("SECRET_KEY", strong), ("UNIFIED_SECRET", "old")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("UNIFIED_SECRET (--unified-secret) is 3 bytes long"),
        "{out}"
    );
    let (code, out) = refused_start(&[
        ("SECRET_KEY", strong),
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", "25"),
        ("EMAIL_SENDER", "kernelci@example.org"),
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("SMTP is configured") && out.contains("--public-url (PUBLIC_BASE_URL)"),
        "{out}"
    );
    let (code, out) = refused_start(&[
        ("SECRET_KEY", strong),
        ("PUBLIC_BASE_URL", "api.example.org"),
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("'api.example.org': not a URL"), "{out}");
    let (code, out) = refused_start(&[
        ("SECRET_KEY", strong),
        ("KCI_TRUSTED_PROXIES", "10.0.0.0/40"),
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("the prefix length must be 0 to 32"), "{out}");
}

#[tokio::test]
async fn a_weak_secret_is_accepted_only_when_allowed_and_then_signs() {
    let weak = |allow: bool| {
        common::config(move |c| {
            c.secret_key = Some("upstream-secret".into());
            c.allow_weak_secret = allow;
        })
    };
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let store = kernelci::store::SqliteStore::open(common::db_path(dir.path())).unwrap();
    let bus = std::sync::Arc::new(kernelci::events::LocalBus::new());
    let refused = App::new(
        weak(false),
        std::sync::Arc::new(store.clone()),
        std::sync::Arc::new(store.clone()),
        bus,
    );
    assert!(
        matches!(&refused, Err(StartError::Config(m)) if m.contains("15 bytes")),
        "{refused:?}"
    );
    // Allowed: the operator's upstream secret keeps signing and verifying.
    let t = common::app_in(dir, weak(true)).await;
    let admin = t.get_as(&t.admin, "/latest/whoami").await.json();
    let forged_by_the_operator = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": admin["id"], "aud": ["fastapi-users:auth"]}),
        &jsonwebtoken::EncodingKey::from_secret(b"upstream-secret"),
    )
    .unwrap();
    let r = t.get_as(&forged_by_the_operator, "/latest/whoami").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn debug_output_shows_no_secret() {
    let secrets = [
        "secret-key-secret-key-secret-key-0001",
        "unified-unified-unified-unified-0002",
        "initial-admin-password-0003",
        "storage-token-0004",
        "smtp-password-0005",
        "mongo-password-0006",
        "redis-password-0007",
    ];
    let config = ServerConfig {
        database: Some(format!(
            "mongodb://kci:{}@db:27017/?replicaSet=rs0",
            secrets[5]
        )),
        redis: Some(format!("redis://:{}@redis:6379/1", secrets[6])),
        secret_key: Some(secrets[0].into()),
        unified_secret: Some(secrets[1].into()),
        initial_password: Some(secrets[2].into()),
        storage_token: Some(secrets[3].into()),
        email_password: Some(secrets[4].into()),
        smtp_host: Some("mail.example.org".into()),
        ..ServerConfig::for_tests()
    };
    let mailer = kernelci_server::mail::Mailer::from_config(&config);
    let mut headers = warp::http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", secrets[0]).parse().unwrap(),
    );
    let request = kernelci_server::http::Request {
        method: warp::http::Method::POST,
        path: "/user/login".into(),
        version: "latest",
        query: vec![],
        headers,
        body: format!("username=admin&password={}", secrets[2]).into(),
        remote: None,
    };
    for text in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{mailer:?}"),
        format!("{request:?}"),
    ] {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in:\n{text}");
        }
        assert!(text.len() > 40, "{text}");
    }
    // What is not secret is still there, for whoever reads a log.
    let text = format!("{config:?}");
    assert!(
        text.contains("mail.example.org") && text.contains("db:27017"),
        "{text}"
    );
    assert!(text.contains("secret_key: Some(\"<redacted>\")"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    // The binary at debug level: settings, a login, an authenticated request, a failed login.
    let (secret, password) = (
        "log-secret-log-secret-log-secret-0123",
        "log-admin-password-4567",
    );
    let dir = tempfile::tempdir().unwrap();
    let port = kernelci::testsuite::peers::free_port();
    let log = dir.path().join("server.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kernelci-server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--database"])
        .arg(format!(
            "sqlite://{}",
            dir.path().join("db.sqlite3").display()
        ))
        .env_clear()
        .env("SECRET_KEY", secret)
        .env("KCI_INITIAL_PASSWORD", password)
        .env("RUST_LOG", "trace")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("spawn kernelci-server");
    assert!(
        kernelci::testsuite::peers::wait_for_port(port, Duration::from_secs(30)),
        "no server"
    );
    let base = format!("http://127.0.0.1:{port}/latest");
    let c = client();
    let login: Value = c
        .post(format!("{base}/user/login"))
        .form(&[("username", "admin"), ("password", password)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let r = c
        .get(format!("{base}/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{base}/user/login"))
        .form(&[("username", "admin"), ("password", "wrong-password-89")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("failed login"),
        "the log is not at debug level:\n{text}"
    );
    for s in [secret, password, token.as_str(), "wrong-password-89"] {
        assert!(!text.contains(s), "{s} in the log:\n{text}");
    }
}

/// Inserts `n` sample nodes (each with its `created` event); returns their ids in order.
async fn fill(t: &TestApp, n: usize) -> Vec<String> {
    let nodes = kernelci::testsuite::store::sample_nodes(n);
    let ids = nodes.iter().map(|x| x.id.unwrap().to_hex()).collect();
    t.store
        .insert_nodes(nodes, EventMode::Publish)
        .await
        .unwrap();
    ids
}

fn ids_of(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {items}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_node_lists_stream_complete_and_in_order() {
    let t = app_with(|_| {}).await;
    let ids = fill(&t, 5_200).await;
    let s = serve(&t);
    let c = client();
    let get = |q: &str| {
        let url = format!("{}/{q}", s.base);
        let (c, q) = (c.clone(), q.to_owned());
        async move {
            let r = c.get(&url).send().await.unwrap();
            let status = r.status().as_u16();
            let chunked = r.headers().get("content-length").is_none();
            let body = r.text().await.unwrap();
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: {e}"));
            (status, chunked, v)
        }
    };
    // Far more than stored: everything, streamed, with upstream's page fields.
    let (status, chunked, v) = get("nodes?limit=10000000").await;
    assert_eq!(status, 200);
    assert!(chunked, "a long answer is streamed");
    assert_eq!(ids_of(&v["items"]), ids);
    assert_eq!(
        (v["total"].clone(), v["limit"].clone(), v["offset"].clone()),
        (json!(5200), json!(10_000_000), json!(0))
    );
    // A window across page boundaries.
    let (_, _, v) = get("nodes?limit=1500&offset=700").await;
    assert_eq!(ids_of(&v["items"]), ids[700..2200]);
    // With a filter: the keyset pages keep it.
    let (_, _, v) = get("nodes?kind=checkout&limit=5000&offset=3").await;
    let mut expected = Vec::new();
    let mut offset = 3;
    loop {
        let (_, _, page) = get(&format!("nodes?kind=checkout&limit=100&offset={offset}")).await;
        let got = ids_of(&page["items"]);
        offset += got.len();
        expected.extend(got);
        if offset as u64 >= page["total"].as_u64().unwrap() {
            break;
        }
    }
    assert_eq!(ids_of(&v["items"]), expected);
    assert_eq!(v["total"], json!(1040));
    // /nodes/fast: no default limit, everything; and windows.
    let (_, chunked, v) = get("nodes/fast").await;
    assert!(chunked);
    assert_eq!(ids_of(&v), ids);
    let (_, _, v) = get("nodes/fast?limit=1200&offset=1000").await;
    assert_eq!(ids_of(&v), ids[1000..2200]);
    let (_, chunked, v) = get("nodes/fast?limit=10").await;
    assert!(!chunked, "a short answer is one piece");
    assert_eq!(ids_of(&v), ids[..10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_limit_stream_every_match() {
    let t = app_with(|_| {}).await;
    let ids = fill(&t, 5_200).await;
    let events = |q: String| {
        let t = &t;
        async move {
            let r = t.get(&format!("/latest/events{q}")).await;
            assert_eq!(r.status, 200, "{q}: {}", r.text());
            r.json().as_array().unwrap().clone()
        }
    };
    let all = events(String::new()).await;
    let node_ids: Vec<&str> = all
        .iter()
        .map(|e| e["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(node_ids, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let seqs: Vec<u64> = all
        .iter()
        .map(|e| e["sequence_id"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence order");
    // The streamed pages filter exactly as one query does (in SQL): compare with small pages.
    let from = "2000-01-01T00:00:00";
    for filter in [
        // Each has more than one page of matches (the later pages are filtered here).
        "kind=test".to_owned(),
        format!("kind=kbuild&from={from}"),
        "channel=node&owner=bob".to_owned(),
        "state=done".to_owned(),
        "path=p1".to_owned(),
    ] {
        let streamed = events(format!("?{filter}&offset=5")).await;
        let mut paged = Vec::new();
        loop {
            let page = events(format!("?{filter}&offset={}&limit=300", 5 + paged.len())).await;
            let n = page.len();
            paged.extend(page);
            if n < 300 {
                break;
            }
        }
        assert!(paged.len() > 1000, "{filter}: {} matches", paged.len());
        assert_eq!(streamed, paged, "{filter}");
    }
    let some = events("?limit=1500&offset=100".into()).await;
    assert_eq!(some, all[100..1600]);
}

#[tokio::test]
async fn list_routes_that_build_pages_in_memory_cap_the_limit() {
    let t = app_with(|_| {}).await;
    for route in ["users", "user-groups", "telemetry"] {
        let r = t
            .get_as(&t.admin, &format!("/latest/{route}?limit=1001"))
            .await;
        r.assert_422("less_than_equal", json!(["query", "limit"]));
        assert_eq!(r.detail()[0]["ctx"], json!({"le": 1000}), "{route}");
        assert_eq!(
            r.detail()[0]["msg"],
            "Input should be less than or equal to 1000",
            "{route}"
        );
        let r = t
            .get_as(&t.admin, &format!("/latest/{route}?limit=1000"))
            .await;
        assert_eq!(r.status, 200, "{route}: {}", r.text());
    }
}

/// POSTs the login form from `client` (an `X-Forwarded-For` address) to `base`.
async fn login_from(
    c: &reqwest::Client,
    base: &str,
    client: &str,
    password: &str,
) -> reqwest::Response {
    c.post(format!("{base}/user/login"))
        .header("x-forwarded-for", client)
        .form(&[("username", "admin"), ("password", password)])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_client_address() {
    // The proxy in front (127.0.0.1) is trusted: the client is the forwarded address.
    let t = app_with(|c| {
        c.login_rate = "3/min".parse().unwrap();
        c.trusted_proxy = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let s = serve(&t);
    let c = client();
    // Successful logins never count.
    for _ in 0..6 {
        let r = login_from(&c, &s.base, "203.0.113.1", common::ADMIN_PASSWORD).await;
        assert_eq!(r.status(), 200);
    }
    for _ in 0..3 {
        let r = login_from(&c, &s.base, "203.0.113.1", "guess").await;
        assert_eq!(r.status(), 400);
    }
    // The budget is spent: even the right password waits.
    for password in ["guess", common::ADMIN_PASSWORD] {
        let r = login_from(&c, &s.base, "203.0.113.1", password).await;
        assert_eq!(r.status(), 429);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&wait), "Retry-After {wait}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with("Too many failed logins"),
            "{body}"
        );
    }
    // update-password is the same guess, from the same budget.
    let r = c
        .post(format!("{}/user/update-password", s.base))
        .header("x-forwarded-for", "203.0.113.1")
        .form(&[
            ("username", "admin"),
            ("password", "guess"),
            ("new_password", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Another client is not affected.
    let r = login_from(&c, &s.base, "203.0.113.2", common::ADMIN_PASSWORD).await;
    assert_eq!(r.status(), 200);

    // Without trusted proxies the forwarded address is ignored: the peer is the client.
    let t = app_with(|c| c.login_rate = "2/hour".parse().unwrap()).await;
    let s = serve(&t);
    for client in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(login_from(&c, &s.base, client, "guess").await.status(), 400);
    }
    let r = login_from(&c, &s.base, "198.51.100.3", "guess").await;
    assert_eq!(
        r.status(),
        429,
        "a forged X-Forwarded-For got a fresh budget"
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1800).contains(&wait), "Retry-After {wait}");
}

#[tokio::test]
async fn forgot_password_is_limited_per_client_address() {
    let t = app_with(|c| c.forgot_password_rate = "2/hour".parse().unwrap()).await;
    let ask = |email: &'static str| {
        t.req("POST", "/latest/user/forgot-password")
            .json(&json!({ "email": email }))
            .send()
    };
    // Unknown addresses count too: a 429 must not tell which addresses exist.
    assert_eq!(ask("nobody@example.org").await.status, 202);
    assert_eq!(ask("nobody2@example.org").await.status, 202);
    let r = ask("admin@kernelci.org").await;
    r.assert_detail(
        429,
        "Too many password-reset requests from this address; try again in 1800 s",
    );
    assert_eq!(r.header("retry-after"), Some("1800"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_headers_is_disconnected() {
    let t = app_with(|c| {
        c.header_timeout = 1;
        c.body_timeout = 1;
    })
    .await;
    let s = serve(&t);
    // Control: a prompt request is answered.
    let answer = raw_http(
        s.addr,
        "GET /latest/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Slow-loris: one header byte every 100 ms, never the blank line. Without a header
    // timeout this goes on for as long as the client likes (here: up to 60 s of bytes).
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(b"GET /latest/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    let mut answer = Vec::new();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sock.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "the connection was still open after {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "an answer to half a request: {answer}"
    );
    // A body that never arrives is a 408.
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(
        b"POST /latest/user/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\
          Content-Type: application/x-www-form-urlencoded\r\n\r\nusername=",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), sock.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
}
