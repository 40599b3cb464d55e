//! A bounded load generator for the API server over real loopback sockets.
//!
//! Starts a server in-process on the embedded default (SQLite in a temp dir, in-process bus),
//! pre-fills `--nodes` nodes through the store, then runs each scenario for `--seconds` with
//! `--clients` concurrent HTTP clients and prints requests/s and latency percentiles:
//! POST /node, GET /node/{id}, GET /nodes (indexed filter, limit 50), and event delivery
//! (publish → a long-polling listener).
//!
//! Options: `--nodes N` (pre-fill), `--clients C`, `--seconds S` (per scenario),
//! `--db PATH` (keep the SQLite file: a later run with the same path reuses the nodes already
//! there and only tops them up to N), `--backend sqlite|mongo-redis` (`mongo-redis` starts the
//! test harness's MongoDB-wire server and a `redis-server`; needs `--features mongodb,redis`),
//! `--scenarios post,get,find,count,events,idle` (default: all), `--idle N` (idle listeners).
//!
//! `cargo run --release --example api_load -- --nodes 100000 --clients 32 --seconds 10`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kernelci::events::{EventBus, LocalBus};
use kernelci::query::Filter;
use kernelci::store::{EventMode, NodeStore, SqliteStore, TelemetryStore};
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

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
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

/// Tops `store` up to `nodes` sample nodes, in batches of 5,000, without events.
async fn fill(store: &dyn NodeStore, nodes: u64) {
    let have = store.count_nodes(&Filter::all()).await.expect("count");
    let t = Instant::now();
    let mut done = have;
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
        if done % 100_000 < 5000 {
            eprintln!("  {done} nodes, {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    eprintln!(
        "{have} nodes were stored; filled to {done} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

type Backend = (
    Arc<dyn NodeStore>,
    Arc<dyn TelemetryStore>,
    Arc<dyn EventBus>,
    Box<dyn std::any::Any>,
);

async fn backend(name: &str, db: Option<String>) -> Backend {
    match name {
        "sqlite" => {
            let (path, keep): (std::path::PathBuf, Box<dyn std::any::Any>) = match db {
                Some(p) => (p.into(), Box::new(())),
                None => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    (dir.path().join("load.sqlite3"), Box::new(dir))
                }
            };
            let store = SqliteStore::open(&path).expect("store");
            (
                Arc::new(store.clone()),
                Arc::new(store),
                Arc::new(LocalBus::new()),
                keep,
            )
        }
        #[cfg(all(feature = "mongodb", feature = "redis"))]
        "mongo-redis" => {
            let mongo =
                kernelci::testsuite::mongo::MongoPeer::start().expect("MongoDB-wire server");
            let redis = kernelci::testsuite::redis::RedisServer::start().expect("redis-server");
            let store = mongo.store().await;
            let bus = kernelci::events::RedisBus::new(&redis.url()).expect("redis bus");
            eprintln!(
                "MongoDB-wire server at {}, redis at {}",
                mongo.uri(),
                redis.url()
            );
            (
                Arc::new(store.clone()),
                Arc::new(store),
                Arc::new(bus),
                Box::new((mongo, redis)),
            )
        }
        other => {
            panic!("unknown backend {other} (sqlite, or mongo-redis with --features mongodb,redis)")
        }
    }
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (nodes, clients, secs, idle) = (
        arg("--nodes", 100_000),
        arg("--clients", 32),
        arg("--seconds", 10),
        arg("--idle", 1000),
    );
    let scenarios =
        arg_str("--scenarios").unwrap_or_else(|| "post,get,find,count,events,idle".into());
    let on = |s: &str| scenarios.split(',').any(|x| x == s);
    let backend_name = arg_str("--backend").unwrap_or_else(|| "sqlite".into());
    let (store, telemetry, bus, _keep) = backend(&backend_name, arg_str("--db")).await;
    fill(store.as_ref(), nodes).await;
    let config = ServerConfig {
        initial_password: Some("pw".into()),
        keep_alive_period: 0,
        ..ServerConfig::for_tests()
    };
    let app = App::new(config, store.clone(), telemetry, bus);
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
        "backend {backend_name}, {} nodes stored; process RSS {:.0} MiB; {clients} clients, {secs} s per scenario; load average {}",
        store.count_nodes(&Filter::all()).await.unwrap_or(0),
        rss_mib(),
        uptime()
    );

    if on("post") {
        let (h, b, tok) = (http.clone(), base.clone(), token.clone());
        let (lat, err) = run(clients, secs, move |i| {
            let (h, b, tok) = (h.clone(), b.clone(), tok.clone());
            async move {
                let body = serde_json::json!({"kind": "test", "name": format!("load-{i}"), "path": ["load"]});
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
        println!("  load average {}", uptime());
    }

    if on("get") {
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
        println!("  load average {}", uptime());
    }

    if on("find") {
        const QUERIES: [&str; 4] = [
            "kind=test&state=done&limit=50",
            "data.kernel_revision.tree=mainline&limit=50",
            "data.kernel_revision.tree=mainline&data.kernel_revision.branch=master&limit=50",
            "kind=kbuild&owner=alice&limit=50",
        ];
        // First use of each filter: its count is computed (and kept, see the SQLite store's
        // count cache); the timed run then measures the steady state.
        for q in QUERIES {
            let t = Instant::now();
            let total = http
                .get(format!("{base}/nodes?{q}"))
                .send()
                .await
                .expect("find")
                .json::<serde_json::Value>()
                .await
                .map(|v| v["total"].as_u64().unwrap_or(0))
                .unwrap_or(0);
            println!(
                "  first GET /nodes?{q}: {:.1} ms (total {total})",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        let (h, b) = (http.clone(), base.clone());
        let (lat, err) = run(clients, secs, move |i| {
            let (h, b) = (h.clone(), b.clone());
            async move {
                let q = QUERIES[(i % 4) as usize];
                h.get(format!("{b}/nodes?{q}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        report("GET /nodes (indexed, limit 50)", lat, err, secs as f64);
        println!("  load average {}", uptime());
    }

    if on("count") {
        // Every request a filter not seen before (a fresh `name`), so no count is cached.
        let (h, b) = (http.clone(), base.clone());
        let (lat, err) = run(clients, secs, move |i| {
            let (h, b) = (h.clone(), b.clone());
            async move {
                let q = format!("kind=test&state=done&name__ne=x{i}&limit=50");
                h.get(format!("{b}/nodes?{q}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        report("GET /nodes (uncached count)", lat, err, secs as f64);
        println!("  load average {}", uptime());
    }

    if on("events") {
        // Event delivery: one listener long-polls; the main task publishes and measures the
        // time to delivery of each event.
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
        println!("  load average {}", uptime());
    }

    if on("idle") {
        // Idle subscribers: each with a pending long poll. (The server's own RSS is measured
        // by `examples/idle_subscribers.rs`, with the server in its own process.)
        let mut polls = Vec::new();
        for _ in 0..idle {
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
            "process RSS (server and {idle} pending client polls): {:.0} MiB",
            rss_mib()
        );
        for p in polls {
            p.abort();
        }
    }
}
