//! `kci` against a real server on a loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use kernelci::events::LocalBus;
use kernelci::store::SqliteStore;
use kernelci_server::App;
use kernelci_server::config::ServerConfig;

fn start_server(dir: &std::path::Path) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(async {
        let store = SqliteStore::open(dir.join("db.sqlite3")).unwrap();
        let config = ServerConfig {
            initial_password: Some("pw".into()),
            ..ServerConfig::for_tests()
        };
        let app = App::new(
            config,
            Arc::new(store.clone()),
            Arc::new(store),
            Arc::new(LocalBus::new()),
        )
        .unwrap();
        app.bootstrap().await.unwrap();
        let (addr, server) =
            kernelci_server::bind(app, ([127, 0, 0, 1], 0).into(), std::future::pending()).unwrap();
        tokio::spawn(server);
        format!("http://{addr}")
    });
    (url, rt)
}

fn kci(url: &str, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kci"));
    cmd.args(args)
        .env("KCI_API_URL", url)
        .env_remove("KCI_API_TOKEN");
    cmd.env_remove("KCI_SETTINGS");
    cmd.current_dir(std::env::temp_dir());
    if let Some(t) = token {
        cmd.env("KCI_API_TOKEN", t);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kci failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn kci_talks_to_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _rt) = start_server(dir.path());
    let token = out(&kci(&url, None, &["user", "login", "admin"], Some("pw\n")));
    assert!(token.starts_with("eyJ"), "{token}");
    let who = out(&kci(&url, Some(&token), &["user", "whoami"], None));
    assert!(who.contains("\"username\": \"admin\""), "{who}");

    let node = r#"{"kind": "checkout", "name": "checkout", "path": ["checkout"], "data": {"kernel_revision":
        {"tree": "mainline", "url": "https://x.org/l.git", "branch": "master", "commit": "abc"}}}"#;
    let created = out(&kci(
        &url,
        Some(&token),
        &["--json", "node", "create", "-"],
        Some(node),
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let found = out(&kci(
        &url,
        Some(&token),
        &["--json", "node", "find", "parent=null", "kind=checkout"],
        None,
    ));
    assert_eq!(found.lines().count(), 1);
    assert!(found.contains(&id));
    assert_eq!(
        out(&kci(
            &url,
            Some(&token),
            &["node", "count", "data.kernel_revision.tree=mainline"],
            None
        )),
        "1"
    );
    let got = out(&kci(&url, Some(&token), &["node", "get", &id], None));
    assert!(got.contains("\"commit\": \"abc\""));

    // A listener waits for the next event while another command writes one.
    let listen = Command::new(env!("CARGO_BIN_EXE_kci"))
        .args([
            "events",
            "listen",
            "--promisc",
            "--count",
            "1",
            "--filter",
            "kind=kbuild",
        ])
        .env("KCI_API_URL", &url)
        .env("KCI_API_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    out(&kci(
        &url,
        Some(&token),
        &["node", "create", "-"],
        Some(r#"{"kind": "kbuild", "name": "kb", "path": ["checkout", "kb"]}"#),
    ));
    let listened = listen.wait_with_output().unwrap();
    let line = out(&listened);
    let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["data"]["kind"], "kbuild");
    assert_eq!(ev["data"]["op"], "created");

    // Tokens.
    let created = out(&kci(
        &url,
        Some(&token),
        &["--json", "token", "create", "ci"],
        None,
    ));
    let t: serde_json::Value = serde_json::from_str(&created).unwrap();
    let api_token = t["access_token"].as_str().unwrap();
    out(&kci(&url, Some(api_token), &["user", "whoami"], None));
    out(&kci(
        &url,
        Some(&token),
        &["token", "revoke", t["jti"].as_str().unwrap()],
        None,
    ));
    let refused = kci(&url, Some(api_token), &["user", "whoami"], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    // Clear errors.
    let bad = kci(&url, Some(&token), &["node", "find", "name__foo=1"], None);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Unknown operator 'foo'"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let f = dir.path().join("bad.json");
    std::fs::write(&f, "{\n  \"kind\": \"test\",\n  \"name\": 5\n}\n").unwrap();
    let bad = kci(
        &url,
        Some(&token),
        &["node", "create", f.to_str().unwrap()],
        None,
    );
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(!bad.status.success());
    assert!(err.contains("bad.json") && err.contains("name"), "{err}");
    let bad = kci(
        &url,
        Some(&token),
        &["node", "create", "/nonexistent.json"],
        None,
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.json"));
}
