//! Server memory with many idle subscribers: starts the `kernelci-server` binary in its own
//! process (embedded default: SQLite file in a temp dir, in-process bus), opens `--idle N`
//! subscriptions, each with a pending `/listen` long poll on its own connection, and prints the
//! server's resident memory (`VmRSS`, and the peak `VmHWM`) before and while they wait.
//!
//! Build the server first, then run:
//!
//! ```text
//! cargo build --release -p kernelci-server
//! cargo run --release --example idle_subscribers -- --idle 1000 [--server PATH] [--hold 10]
//! ```
//!
//! `--server` defaults to `kernelci-server` next to this example's own target directory
//! (`target/release/kernelci-server`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn status_kib(pid: u32, field: &str) -> f64 {
    kernelci::testsuite::peers::proc_status(Some(pid), field).unwrap_or(0) as f64
}

fn memory(pid: u32) -> String {
    format!(
        "VmRSS {:.1} MiB, VmHWM {:.1} MiB, threads {}",
        status_kib(pid, "VmRSS") / 1024.0,
        status_kib(pid, "VmHWM") / 1024.0,
        status_kib(pid, "Threads")
    )
}

/// Kills the server when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn default_server() -> std::path::PathBuf {
    // target/release/examples/idle_subscribers -> target/release/kernelci-server
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.parent())
                .map(|d| d.join("kernelci-server"))
        })
        .unwrap_or_else(|| "kernelci-server".into())
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let idle: usize = arg("--idle").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let hold: u64 = arg("--hold").and_then(|v| v.parse().ok()).unwrap_or(10);
    let program = arg("--server")
        .map(Into::into)
        .unwrap_or_else(default_server);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = kernelci::testsuite::peers::free_port();
    let child = Command::new(&program)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("kci.sqlite3").display()
        ))
        .env("KCI_INITIAL_PASSWORD", "pw")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let server = Server(child);
    let pid = server.0.id();
    assert!(
        kernelci::testsuite::peers::wait_for_port(port, Duration::from_secs(30)),
        "the server did not listen on {port}"
    );
    let base = format!("http://127.0.0.1:{port}/latest");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(idle + 16)
        .build()
        .expect("client");
    let token: serde_json::Value = http
        .post(format!("{base}/user/login"))
        .form(&[("username", "admin"), ("password", "pw")])
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("token");
    let token = token["access_token"].as_str().expect("token").to_owned();
    println!("server pid {pid}, started: {}", memory(pid));

    let t = Instant::now();
    let mut polls = Vec::with_capacity(idle);
    for _ in 0..idle {
        let s: serde_json::Value = http
            .post(format!("{base}/subscribe/idle"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("subscribe")
            .json()
            .await
            .expect("subscription");
        let id = s["id"].as_u64().expect("subscription id");
        let (h, b, tok) = (http.clone(), base.clone(), token.clone());
        polls.push(tokio::spawn(async move {
            h.get(format!("{b}/listen/{id}"))
                .bearer_auth(&tok)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    println!(
        "{idle} subscriptions with a pending /listen each, opened in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for s in 1..=hold {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if s == 1 || s == hold || s % 5 == 0 {
            println!("after {s:>2} s: {}", memory(pid));
        }
    }
    let pending = polls.iter().filter(|p| !p.is_finished()).count();
    println!("{pending} of {idle} polls still pending (the rest ended early)");
    // One event wakes them all: each poll answers.
    let t = Instant::now();
    let _ = http
        .post(format!("{base}/publish/idle"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"data": {"wake": true}}))
        .send()
        .await;
    let mut ok = 0;
    for p in polls {
        if matches!(p.await, Ok(Ok(200))) {
            ok += 1;
        }
    }
    println!(
        "one publish answered {ok} of {idle} polls in {:.0} ms; then: {}",
        t.elapsed().as_secs_f64() * 1e3,
        memory(pid)
    );
    drop(server);
}
