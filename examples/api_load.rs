//! A bounded load generator for the API server over real loopback sockets.
//!
//! Starts a server in-process on the embedded default (SQLite in a temp dir, in-process bus),
//! pre-fills `--nodes` nodes through the store, then runs each scenario for `--seconds` with
//! `--clients` concurrent HTTP clients and prints requests/s and latency percentiles:
//! POST /node, GET /node/{id}, GET /nodes (indexed filter, limit 50), and event delivery
//! (publish → a long-polling listener).
//!
//! Options: `--nodes N` (pre-fill), `--clients C`, `--seconds S` (per scenario),
//! `--csv PATH --label L` (append one row per scenario, with the server's peak memory when
//! `--server-pid` is given, for `examples/bench_plot.rs`),
//! `--db PATH` (keep the SQLite file: a later run with the same path reuses the nodes already
//! there and only tops them up to N), `--backend sqlite|mongo-redis` (`mongo-redis` starts the
//! test harness's MongoDB-wire server and a `redis-server`; needs `--features mongodb,redis`),
//! `--scenarios post,get,find,count,events,idle` (default: all), `--idle N` (idle listeners).
//! `--scenarios big` (not in the default set) asks for everything at once —
//! `/nodes?limit=10000000`, `/nodes/fast`, `/events?limit=10000000` — reads each answer as it
//! streams (counting, not keeping it) and prints the server's peak memory growth, sampled every
//! 5 ms (use `--server-pid` with a server in its own process).
//!
//! `cargo run --release --example api_load -- --nodes 100000 --clients 32 --seconds 10`
//!
//! Against a server in its own process (so its CPU and memory are its own):
//! `api_load --db PATH --nodes 1000000 --fill-only` fills the SQLite file, then start
//! `kernelci-server --database sqlite://PATH` with `KCI_INITIAL_PASSWORD=pw` and run
//! `api_load --url http://127.0.0.1:PORT --password pw --scenarios ...`.
//!
//! The throughput scenarios (post, get, find, count) use a minimal HTTP/1.1 client (one
//! keep-alive connection per client, requests written as prepared bytes, responses read by
//! `Content-Length`), so the load generator costs little CPU on the machine it shares with the
//! server; `--client reqwest` uses reqwest instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kernelci::events::{EventBus, LocalBus};
use kernelci::query::Filter;
use kernelci::store::{EventMode, NodeStore, SharedStore, SqliteStore, TelemetryStore};
use kernelci_server::App;
use kernelci_server::config::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod bench_support;
use bench_support::{CsvRow, MemoryPeak, arg, arg_str, loadavg, pct, sort_ms};

/// `--csv PATH` and `--label L`, and the nodes stored at the start: where [`report`] appends
/// its row (for `examples/bench_plot.rs`).
static CSV: std::sync::OnceLock<(String, String, u64)> = std::sync::OnceLock::new();
/// The server's peak memory since the last [`report`] (with `--server-pid`).
static PEAK: std::sync::OnceLock<MemoryPeak> = std::sync::OnceLock::new();

fn report(name: &str, mut lat: Vec<f64>, errors: u64, secs: f64) {
    sort_ms(&mut lat);
    let (rate, p50, p99) = (lat.len() as f64 / secs, pct(&lat, 0.5), pct(&lat, 0.99));
    let max = lat.last().copied().unwrap_or(0.0);
    println!(
        "{name:<34} {rate:>9.0} req/s  p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  max {max:>7.2} ms  errors {errors}"
    );
    let memory = PEAK.get().map(MemoryPeak::take).unwrap_or_default();
    if let Some((path, label, nodes)) = CSV.get() {
        CsvRow {
            label,
            scenario: name,
            nodes: *nodes,
            listeners: 0,
            rate: 0,
            events: lat.len() as u64,
            deliveries: lat.len() as u64,
            lost: errors,
            latencies_ms: &lat,
            per_second: rate,
            memory,
        }
        .append(path);
    }
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
    finish(secs, &stop, tasks).await
}

type ClientTask = tokio::task::JoinHandle<(Vec<f64>, u64)>;

/// Lets the client tasks run for `secs`, stops them, and gathers their latencies and errors.
async fn finish(secs: u64, stop: &AtomicBool, tasks: Vec<ClientTask>) -> (Vec<f64>, u64) {
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

/// One keep-alive HTTP/1.1 connection: writes a prepared request, reads the status line, the
/// headers and a `Content-Length` or chunked body. Just enough for the load scenarios.
struct RawConn {
    addr: String,
    io: Option<BufReader<TcpStream>>,
}

impl RawConn {
    fn new(addr: &str) -> RawConn {
        RawConn {
            addr: addr.to_owned(),
            io: None,
        }
    }

    /// Sends `req` and returns the response status (reconnecting once if the connection was
    /// closed by the server).
    async fn send(&mut self, req: &[u8]) -> std::io::Result<u16> {
        for attempt in 0..2 {
            if self.io.is_none() {
                let s = TcpStream::connect(&self.addr).await?;
                s.set_nodelay(true)?;
                self.io = Some(BufReader::new(s));
            }
            match self.exchange(req).await {
                Ok(status) => return Ok(status),
                Err(e) => {
                    self.io = None;
                    if attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        Err(std::io::Error::other("unreachable"))
    }

    async fn exchange(&mut self, req: &[u8]) -> std::io::Result<u16> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
        let io = self.io.as_mut().ok_or_else(|| bad("not connected"))?;
        io.get_mut().write_all(req).await?;
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        loop {
            line.clear();
            io.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().map_err(|_| bad("bad content-length"))?;
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        let mut sink = vec![0u8; 0];
        if chunked {
            loop {
                line.clear();
                io.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("bad chunk"))?;
                sink.resize(n + 2, 0);
                io.read_exact(&mut sink).await?;
                if n == 0 {
                    break;
                }
            }
        } else {
            sink.resize(length, 0);
            io.read_exact(&mut sink).await?;
        }
        if close {
            self.io = None;
        }
        Ok(status)
    }
}

/// A prepared request: `method path` with the bearer token and an optional JSON body.
fn raw_request(method: &str, host: &str, path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(t) = token {
        r.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// Runs `clients` raw connections for `secs`, each sending the requests `make(i)` builds.
async fn run_raw<F>(clients: u64, secs: u64, addr: &str, make: F) -> (Vec<f64>, u64)
where
    F: Fn(u64) -> Vec<u8> + Clone + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (stop, make, mut conn) = (stop.clone(), make.clone(), RawConn::new(addr));
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let req = make(c * 1_000_000 + i);
                let t = Instant::now();
                match conn.send(&req).await {
                    Ok(s) if (200..300).contains(&s) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    _ => errors += 1,
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    finish(secs, &stop, tasks).await
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
    SharedStore,
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

const FIND_QUERIES: [&str; 4] = [
    "kind=test&state=done&limit=50",
    "data.kernel_revision.tree=mainline&limit=50",
    "data.kernel_revision.tree=mainline&data.kernel_revision.branch=master&limit=50",
    "kind=kbuild&owner=alice&limit=50",
];

/// Ids read by the `get` scenario.
static IDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// One huge answer, read as it arrives: items counted by `marker` (split across chunks too),
/// bytes, time, and the server's peak `VmRSS`/`RssAnon` growth over the request.
async fn big_answer(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    marker: &str,
    server_pid: Option<u32>,
) {
    use futures::StreamExt;
    let kib = move |name| kernelci::testsuite::peers::proc_status(server_pid, name).unwrap_or(0);
    let (rss0, anon0) = (kib("VmRSS"), kib("RssAnon"));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut rss, mut anon) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                rss = rss.max(kib("VmRSS"));
                anon = anon.max(kib("RssAnon"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (rss, anon)
        })
    };
    let t = Instant::now();
    let resp = http.get(format!("{base}{path}")).send().await.expect(path);
    let status = resp.status().as_u16();
    let streamed = resp.headers().get("content-length").is_none();
    let (mut bytes, mut items, mut carry, mut failed) = (0u64, 0u64, String::new(), None);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                bytes += c.len() as u64;
                carry.push_str(&String::from_utf8_lossy(&c));
                items += carry.matches(marker).count() as u64;
                // Keep a tail that could start a marker cut by the chunk boundary.
                let keep = carry.len().saturating_sub(marker.len() - 1);
                let keep = (keep..carry.len())
                    .find(|i| carry.is_char_boundary(*i))
                    .unwrap_or(carry.len());
                carry.drain(..keep);
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let (rss, anon) = sampler.await.unwrap_or((0, 0));
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "GET {path}: {status}{}, {items} items, {:.1} MiB in {secs:.1} s{}; server VmRSS {:.0} -> peak {:.0} MiB (+{:.0}), RssAnon {:.0} -> peak {:.0} MiB (+{:.0})",
        if streamed { " streamed" } else { "" },
        mib(bytes / 1024),
        failed
            .map(|e| format!(" (cut short: {e})"))
            .unwrap_or_default(),
        mib(rss0),
        mib(rss),
        mib(rss.saturating_sub(rss0)),
        mib(anon0),
        mib(anon),
        mib(anon.saturating_sub(anon0)),
    );
}

/// The server's memory when it runs in another process (`--server-pid`), else this process's:
/// `VmRSS` and, in brackets, `RssAnon` (RSS counts the SQLite file pages mapped by the readers'
/// `mmap`; the anonymous part is the heap).
fn server_rss_mib(pid: Option<u32>) -> String {
    let mib =
        |name| kernelci::testsuite::peers::proc_status(pid, name).unwrap_or(0) as f64 / 1024.0;
    format!("{:.0} MiB (anon {:.0} MiB)", mib("VmRSS"), mib("RssAnon"))
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
    let flag = |f: &str| std::env::args().any(|a| a == f);
    let raw_client = arg_str("--client").is_none_or(|c| c != "reqwest");
    let server_pid = arg_str("--server-pid").and_then(|p| p.parse().ok());
    let password = arg_str("--password").unwrap_or_else(|| "pw".into());
    let backend_name = arg_str("--backend").unwrap_or_else(|| "sqlite".into());

    // Either an external server (`--url`) or one started here over the chosen backend.
    let (base, _keep): (String, Option<Box<dyn std::any::Any>>) = match arg_str("--url") {
        Some(url) => (format!("{}/latest", url.trim_end_matches('/')), None),
        None => {
            let (store, telemetry, bus, keep) = backend(&backend_name, arg_str("--db")).await;
            fill(store.as_ref(), nodes).await;
            if flag("--fill-only") {
                return;
            }
            let config = ServerConfig {
                initial_password: Some(password.clone()),
                keep_alive_period: 0,
                ..ServerConfig::for_tests()
            };
            let app = App::new(config, store.clone(), telemetry, bus).expect("app");
            app.bootstrap().await.expect("bootstrap");
            let (addr, server) =
                kernelci_server::bind(app, ([127, 0, 0, 1], 0).into(), std::future::pending())
                    .expect("bind");
            tokio::spawn(server);
            (
                format!("http://{addr}/latest"),
                Some(Box::new((store, keep))),
            )
        }
    };
    let host = base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let token: serde_json::Value = http
        .post(format!("{base}/user/login"))
        .form(&[("username", "admin"), ("password", password.as_str())])
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("token");
    let token = token["access_token"]
        .as_str()
        .expect("login failed: check --password")
        .to_owned();
    let stored: u64 = http
        .get(format!("{base}/count"))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .unwrap_or(0);
    if let Some(path) = arg_str("--csv") {
        let label = arg_str("--label").unwrap_or_else(|| "server".into());
        let _ = CSV.set((path, label, stored));
    }
    let _ = PEAK.set(MemoryPeak::start(server_pid.into_iter().collect()));
    println!(
        "backend {}, {stored} nodes stored; server RSS {}; {clients} clients ({} client), {secs} s per scenario; load average {}",
        if arg_str("--url").is_some() {
            "external"
        } else {
            backend_name.as_str()
        },
        server_rss_mib(server_pid),
        if raw_client {
            "raw HTTP/1.1"
        } else {
            "reqwest"
        },
        loadavg()
    );

    // A throughput scenario: `build(i)` gives (method, path below /latest, body).
    let scenario = |name: &'static str, build: fn(u64) -> (&'static str, String, String)| {
        let (h, b, tok, host) = (http.clone(), base.clone(), token.clone(), host.clone());
        async move {
            let (lat, err) = if raw_client {
                let prefix = b
                    .trim_start_matches("http://")
                    .trim_start_matches(&host)
                    .to_owned();
                let (tok2, host2) = (tok.clone(), host.clone());
                run_raw(clients, secs, &host, move |i| {
                    let (m, path, body) = build(i);
                    raw_request(m, &host2, &format!("{prefix}{path}"), Some(&tok2), &body)
                })
                .await
            } else {
                run(clients, secs, move |i| {
                    let (h, b, tok) = (h.clone(), b.clone(), tok.clone());
                    async move {
                        let (m, path, body) = build(i);
                        let req = match m {
                            "POST" => h.post(format!("{b}{path}")).body(body),
                            _ => h.get(format!("{b}{path}")),
                        };
                        req.bearer_auth(&tok)
                            .header("content-type", "application/json")
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success())
                    }
                })
                .await
            };
            report(name, lat, err, secs as f64);
            println!(
                "  load average {}, server RSS {}",
                loadavg(),
                server_rss_mib(server_pid)
            );
        }
    };

    if on("post") {
        scenario("POST /node", |i| {
            let body = format!(r#"{{"kind":"test","name":"load-{i}","path":["load"]}}"#);
            ("POST", "/node".into(), body)
        })
        .await;
    }

    if on("get") {
        // Job nodes when the store was filled here, else any (a server filled elsewhere, e.g.
        // upstream's after the `post` scenario).
        let mut ids: Vec<String> = Vec::new();
        for q in ["kind=job&limit=1000", "limit=1000"] {
            if !ids.is_empty() {
                break;
            }
            ids = http
                .get(format!("{base}/nodes?{q}"))
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
        }
        assert!(
            !ids.is_empty(),
            "no job nodes to read: fill some with --nodes"
        );
        IDS.set(ids).expect("ids set once");
        scenario("GET /node/{id}", |i| {
            let ids = IDS.get().map(Vec::as_slice).unwrap_or_default();
            let id = &ids[(i as usize) % ids.len().max(1)];
            ("GET", format!("/node/{id}"), String::new())
        })
        .await;
    }

    if on("find") {
        // First use of each filter: its count is computed (and kept, see the SQLite store's
        // count cache); the timed run then measures the steady state.
        for q in FIND_QUERIES {
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
        scenario("GET /nodes (indexed, limit 50)", |i| {
            let q = FIND_QUERIES[(i % 4) as usize];
            ("GET", format!("/nodes?{q}"), String::new())
        })
        .await;
    }

    if on("count") {
        // Every request a filter not seen before (a fresh `name`), so no count is cached.
        scenario("GET /nodes (uncached count)", |i| {
            let q = format!("kind=test&state=done&name__ne=x{i}&limit=50");
            ("GET", format!("/nodes?{q}"), String::new())
        })
        .await;
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
        println!("  load average {}", loadavg());
    }

    if on("big") {
        for (path, marker) in [
            ("/nodes?limit=10000000", "{\"id\":\""),
            ("/nodes/fast", "{\"id\":\""),
            ("/events?limit=10000000", "\"sequence_id\":"),
        ] {
            big_answer(&http, &base, path, marker, server_pid).await;
        }
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
            "server RSS with {idle} pending polls: {}",
            server_rss_mib(server_pid)
        );
        for p in polls {
            p.abort();
        }
    }
}
