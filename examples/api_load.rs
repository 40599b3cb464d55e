//! A bounded load generator for the API server over real loopback sockets.
//!
//! Starts a server in-process on the embedded default (SQLite in a temp dir, in-process bus),
//! pre-fills `--nodes` nodes through the store, then runs each scenario for `--seconds` with
//! `--clients` concurrent HTTP clients and prints requests/s and latency percentiles:
//! POST /node, GET /node/{id}, GET /nodes (indexed filter, limit 50), and event delivery
//! (publish → a long-polling listener).
//!
//! `cargo run --release --example api_load -- --nodes 100000 --clients 32 --seconds 10`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kernelci::events::LocalBus;
use kernelci::store::{EventMode, NodeStore, SqliteStore};
use kernelci_server::App;
use kernelci_server::config::ServerConfig;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut lat: Vec<f64>, errors: u64, secs: f64) {
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "{name:<34} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  errors {errors}",
        lat.len() as f64 / secs,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
}

async fn run<F, Fut>(clients: u64, secs: u64, make: F) -> (Vec<f64>, u64)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (stop, make) = (stop.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if make(c * 1_000_000 + i).await {
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    (all, errors)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_owned())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (nodes, clients, secs) = (
        arg("--nodes", 100_000),
        arg("--clients", 32),
        arg("--seconds", 10),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("load.sqlite3")).expect("store");
    let t = Instant::now();
    let mut done = 0;
    while done < nodes {
        let n = (nodes - done).min(5000) as usize;
        let batch = kernelci::testsuite::store::sample_nodes(n)
            .into_iter()
            .map(|mut x| {
                x.id = Some(kernelci::models::ObjectId::new());
                x
            })
            .collect();
        store
            .insert_nodes(batch, EventMode::Silent)
            .await
            .expect("fill");
        done += n as u64;
    }
    eprintln!(
        "pre-filled {nodes} nodes in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let config = ServerConfig {
        initial_password: Some("pw".into()),
        keep_alive_period: 0,
        ..ServerConfig::for_tests()
    };
    let app = App::new(
        config,
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Arc::new(LocalBus::new()),
    );
    app.bootstrap().await.expect("bootstrap");
    let (addr, server) =
        kernelci_server::bind(app, ([127, 0, 0, 1], 0).into(), std::future::pending())
            .expect("bind");
    tokio::spawn(server);
    let base = format!("http://{addr}/latest");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
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
    println!(
        "server RSS after fill: {:.0} MiB; {clients} clients, {secs} s per scenario",
        rss_mib()
    );

    let (h, b, tok) = (http.clone(), base.clone(), token.clone());
    let (lat, err) = run(clients, secs, move |i| {
        let (h, b, tok) = (h.clone(), b.clone(), tok.clone());
        async move {
            let body =
                serde_json::json!({"kind": "test", "name": format!("load-{i}"), "path": ["load"]});
            h.post(format!("{b}/node"))
                .bearer_auth(&tok)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    report("POST /node", lat, err, secs as f64);

    let ids: Vec<String> = http
        .get(format!("{base}/nodes?kind=job&limit=1000"))
        .send()
        .await
        .expect("ids")
        .json::<serde_json::Value>()
        .await
        .expect("ids")["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let ids = Arc::new(ids);
    let (h, b) = (http.clone(), base.clone());
    let (lat, err) = run(clients, secs, move |i| {
        let (h, b, ids) = (h.clone(), b.clone(), ids.clone());
        async move {
            let id = &ids[(i as usize) % ids.len().max(1)];
            h.get(format!("{b}/node/{id}"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    report("GET /node/{id}", lat, err, secs as f64);

    let (h, b) = (http.clone(), base.clone());
    let (lat, err) = run(clients, secs, move |i| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let q = if i % 2 == 0 {
                "kind=test&state=done&limit=50"
            } else {
                "data.kernel_revision.tree=mainline&limit=50"
            };
            h.get(format!("{b}/nodes?{q}"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    report("GET /nodes (indexed, limit 50)", lat, err, secs as f64);

    // Event delivery: one listener long-polls; the main task publishes and measures the time to
    // delivery of each event.
    let sub: serde_json::Value = http
        .post(format!("{base}/subscribe/load"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("subscribe")
        .json()
        .await
        .expect("sub");
    let sub_id = sub["id"].as_u64().expect("id");
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let listen = {
            let (h, b, tok) = (http.clone(), base.clone(), token.clone());
            tokio::spawn(async move {
                h.get(format!("{b}/listen/{sub_id}"))
                    .bearer_auth(&tok)
                    .send()
                    .await
                    .is_ok()
            })
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t = Instant::now();
        let _ = http
            .post(format!("{base}/publish/load"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"data": {"n": 1}}))
            .send()
            .await;
        if listen.await.unwrap_or(false) {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    report("event delivery (publish -> listen)", lat, 0, secs as f64);

    // Idle subscribers: 1,000 subscriptions, each with a pending long poll.
    let mut polls = Vec::new();
    for _ in 0..1000 {
        let s: serde_json::Value = http
            .post(format!("{base}/subscribe/idle"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sub")
            .json()
            .await
            .expect("sub");
        let id = s["id"].as_u64().unwrap_or(0);
        let (h, b, tok) = (http.clone(), base.clone(), token.clone());
        polls.push(tokio::spawn(async move {
            h.get(format!("{b}/listen/{id}"))
                .bearer_auth(&tok)
                .send()
                .await
                .is_ok()
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "process RSS (server and 1,000 pending client polls): {:.0} MiB",
        rss_mib()
    );
    for p in polls {
        p.abort();
    }
}
