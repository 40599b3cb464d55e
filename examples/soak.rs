//! A bounded soak run against a running API server over loopback (issue 11): a steady,
//! rate-limited mix of node writes (POST, PATCH), queries (GET /node/{id}, GET /nodes with an
//! indexed filter, GET /count, GET /events) and durable listeners, for `--seconds`.
//!
//! It records latency percentiles per request kind, event delivery latency, and the server's
//! RSS over time (`--pid`, read from `/proc/<pid>/status` every 5 s), and fails (exit 1) on any
//! 5xx or transport error, on a listener that misses or repeats an event, or when the RSS of
//! the last minute exceeds the minute at the middle of the run by more than
//! `--rss-growth-pct` percent plus 16 MiB (memory flat in the second half: the first half lets
//! the server's bounded caches fill, e.g. SQLite's page cache of the writer, 64 MiB). The
//! summary goes to stdout; `--csv FILE` writes the RSS samples.
//!
//! ```text
//! kernelci-server --database sqlite:///tmp/soak.sqlite3 &   # KCI_INITIAL_PASSWORD=secret
//! cargo run --release --example soak -- --url http://127.0.0.1:8001 --password secret \
//!     --pid $! --seconds 600
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_mib(pid: u32) -> Option<f64> {
    kernelci::testsuite::peers::proc_status(Some(pid), "VmRSS").map(|kib| kib as f64 / 1024.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Per request kind: latencies (ms), 5xx, transport errors, other statuses.
#[derive(Default)]
struct Stats {
    lat: BTreeMap<&'static str, Vec<f64>>,
    server_errors: BTreeMap<String, u64>,
    transport_errors: BTreeMap<String, u64>,
    unexpected: BTreeMap<String, u64>,
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    token: String,
    stats: Mutex<Stats>,
    ids: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Ctx {
    async fn call(
        &self,
        kind: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let t = Instant::now();
        let r = rb.send().await;
        let res = match r {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(b) => Ok((status, b)),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let mut st = self.stats.lock().await;
        match res {
            Ok((200, b)) => {
                st.lat.entry(kind).or_default().push(ms);
                serde_json::from_slice(&b).ok()
            }
            Ok((s, b)) if s >= 500 => {
                *st.server_errors
                    .entry(format!("{kind} {s} {}", String::from_utf8_lossy(&b)))
                    .or_default() += 1;
                None
            }
            Ok((s, _)) => {
                *st.unexpected.entry(format!("{kind} {s}")).or_default() += 1;
                None
            }
            Err(e) => {
                *st.transport_errors
                    .entry(format!("{kind}: {e}"))
                    .or_default() += 1;
                None
            }
        }
    }
}

/// Runs `f` at `rate` per second until stopped.
async fn paced<F, Fut>(ctx: Arc<Ctx>, rate: f64, f: F)
where
    F: Fn(Arc<Ctx>, u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if rate <= 0.0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0;
    while !ctx.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        f(ctx.clone(), i).await;
        i += 1;
    }
}

async fn write(ctx: Arc<Ctx>, i: u64) {
    use reqwest::Method;
    if i % 4 == 3 {
        let id = { ctx.ids.lock().await.last().cloned() };
        if let Some(id) = id {
            ctx.call(
                "PATCH /node",
                Method::PATCH,
                &format!("/latest/node/{id}"),
                Some(json!({"result": "pass"})),
            )
            .await;
            return;
        }
    }
    let name = format!("soak-{i}-{}", kernelci::models::ObjectId::new().to_hex());
    let body = json!({"kind": "test", "name": name, "path": ["checkout", "soak", name],
        "group": "soak", "data": {"arch": "x86_64"}});
    if let Some(v) = ctx
        .call("POST /node", Method::POST, "/latest/node", Some(body))
        .await
        && let Some(id) = v["id"].as_str()
    {
        let mut ids = ctx.ids.lock().await;
        if ids.len() > 10_000 {
            ids.remove(0);
        }
        ids.push(id.to_owned());
    }
}

async fn read(ctx: Arc<Ctx>, i: u64) {
    use reqwest::Method;
    match i % 8 {
        0..=3 => {
            let id = {
                let ids = ctx.ids.lock().await;
                if ids.is_empty() {
                    None
                } else {
                    Some(ids[(i as usize * 7919) % ids.len()].clone())
                }
            };
            if let Some(id) = id {
                ctx.call(
                    "GET /node/{id}",
                    Method::GET,
                    &format!("/latest/node/{id}"),
                    None,
                )
                .await;
            }
        }
        4 | 5 => {
            ctx.call(
                "GET /nodes?group=soak&limit=50",
                Method::GET,
                "/latest/nodes?group=soak&limit=50",
                None,
            )
            .await;
        }
        6 => {
            ctx.call(
                "GET /count?kind=test",
                Method::GET,
                "/latest/count?kind=test",
                None,
            )
            .await;
        }
        _ => {
            ctx.call(
                "GET /events?limit=50",
                Method::GET,
                "/latest/events?kind=test&limit=50&offset=0",
                None,
            )
            .await;
        }
    }
}

/// A durable listener: returns (events, delivery latencies ms, order violations).
async fn listener(ctx: Arc<Ctx>, n: u64) -> (u64, Vec<f64>, u64) {
    use reqwest::Method;
    let sid = format!(
        "soak-listener-{n}-{}",
        kernelci::models::ObjectId::new().to_hex()
    );
    let Some(sub) = ctx
        .call(
            "POST /subscribe",
            Method::POST,
            &format!("/latest/subscribe/node?promisc=true&subscriber_id={sid}"),
            None,
        )
        .await
    else {
        return (0, Vec::new(), 1);
    };
    let sub = sub["id"].as_u64().unwrap_or(0);
    let (mut last, mut count, mut lat, mut bad) = (0u64, 0u64, Vec::new(), 0u64);
    while !ctx.stop.load(Ordering::Relaxed) {
        let Some(msg) = ctx
            .call(
                "GET /listen",
                Method::GET,
                &format!("/latest/listen/{sub}?acknowledge={last}"),
                None,
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(ev) = msg["data"]
            .as_str()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
        else {
            bad += 1;
            continue;
        };
        if ev["data"] == "BEEP" {
            continue;
        }
        let seq = ev["sequenceid"].as_u64().unwrap_or(0);
        if last != 0 && seq <= last {
            bad += 1;
        }
        if let Some(t) = ev["time"]
            .as_str()
            .and_then(|t| kernelci::models::Timestamp::parse(t).ok())
        {
            let now = kernelci::models::Timestamp::now();
            lat.push((now.micros() - t.micros()) as f64 / 1e3);
        }
        last = seq;
        count += 1;
    }
    ctx.call(
        "POST /unsubscribe",
        Method::POST,
        &format!("/latest/unsubscribe/{sub}"),
        None,
    )
    .await;
    (count, lat, bad)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = arg("--url").unwrap_or_else(|| "http://127.0.0.1:8001".into());
    let password = arg("--password").unwrap_or_else(|| "admin".into());
    let secs = num("--seconds", 60);
    let write_rate = num("--write-rate", 200) as f64;
    let read_rate = num("--read-rate", 400) as f64;
    let workers = num("--workers", 8).max(1);
    let listeners = num("--listeners", 4);
    let growth_pct = num("--rss-growth-pct", 25) as f64;
    let pid = arg("--pid").and_then(|p| p.parse::<u32>().ok());
    let csv = arg("--csv");

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .expect("http client");
    let login = http
        .post(format!("{base}/latest/user/login"))
        .form(&[("username", "admin"), ("password", password.as_str())])
        .send()
        .await
        .expect("login request");
    let token = login.json::<Value>().await.expect("login reply")["access_token"]
        .as_str()
        .expect("login failed: wrong --password?")
        .to_owned();
    let ctx = Arc::new(Ctx {
        http,
        base: base.clone(),
        token,
        stats: Mutex::new(Stats::default()),
        ids: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    println!(
        "soak: {secs}s against {base}: {write_rate} writes/s, {read_rate} reads/s over {workers} workers each, {listeners} durable listeners"
    );
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(tokio::spawn(paced(
            ctx.clone(),
            write_rate / workers as f64,
            write,
        )));
        tasks.push(tokio::spawn(paced(
            ctx.clone(),
            read_rate / workers as f64,
            read,
        )));
    }
    let ltasks: Vec<_> = (0..listeners)
        .map(|n| tokio::spawn(listener(ctx.clone(), n)))
        .collect();
    // RSS samples.
    let started = Instant::now();
    let samples: Arc<Mutex<Vec<(f64, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (samples, ctx) = (samples.clone(), ctx.clone());
        tokio::spawn(async move {
            let Some(pid) = pid else { return };
            while !ctx.stop.load(Ordering::Relaxed) {
                if let Some(r) = rss_mib(pid) {
                    samples
                        .lock()
                        .await
                        .push((started.elapsed().as_secs_f64(), r));
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };
    let progress = AtomicU64::new(0);
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let e = started.elapsed().as_secs();
        if e / 60 > progress.load(Ordering::Relaxed) {
            progress.store(e / 60, Ordering::Relaxed);
            let st = ctx.stats.lock().await;
            let n: usize = st.lat.values().map(Vec::len).sum();
            println!(
                "  {e:>5}s: {n} requests ok, {} 5xx",
                st.server_errors.values().sum::<u64>()
            );
        }
    }
    ctx.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut events = 0;
    let mut delivery = Vec::new();
    let mut order_bad = 0;
    for t in ltasks {
        if let Ok((c, l, b)) = t.await {
            events += c;
            delivery.extend(l);
            order_bad += b;
        }
    }
    let _ = sampler.await;
    if let Some(pid) = pid
        && let Some(r) = rss_mib(pid)
    {
        samples
            .lock()
            .await
            .push((started.elapsed().as_secs_f64(), r));
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Report.
    let st = ctx.stats.lock().await;
    let mut total = 0usize;
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "request", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for (kind, lat) in &st.lat {
        let mut l = lat.clone();
        l.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        total += l.len();
        println!(
            "{kind:<32} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            l.len(),
            pct(&l, 0.5),
            pct(&l, 0.95),
            pct(&l, 0.99),
            l.last().copied().unwrap_or(0.0)
        );
    }
    delivery.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "{:<32} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        "event delivery (log -> listener)",
        delivery.len(),
        pct(&delivery, 0.5),
        pct(&delivery, 0.95),
        pct(&delivery, 0.99),
        delivery.last().copied().unwrap_or(0.0)
    );
    println!(
        "total: {total} requests in {elapsed:.0}s ({:.0}/s); {events} events delivered to {listeners} listeners",
        total as f64 / elapsed
    );
    let five: u64 = st.server_errors.values().sum();
    let transport: u64 = st.transport_errors.values().sum();
    let unexpected: u64 = st.unexpected.values().sum();
    println!(
        "5xx: {five}; transport errors: {transport}; other non-200: {unexpected}; listener order violations: {order_bad}"
    );
    for (k, v) in st
        .server_errors
        .iter()
        .chain(&st.transport_errors)
        .chain(&st.unexpected)
    {
        println!("  {v:>6} x {k}");
    }
    let mut ok = five == 0 && transport == 0 && unexpected == 0 && order_bad == 0;
    let samples = samples.lock().await.clone();
    if let Some(path) = &csv {
        let mut out = String::from("seconds,rss_mib\n");
        for (t, r) in &samples {
            out.push_str(&format!("{t:.1},{r:.1}\n"));
        }
        let _ = std::fs::write(path, out);
    }
    if samples.len() >= 2 {
        // The minute at the middle of the run and the last minute (or a fifth of the run, when
        // shorter than five minutes): bounded caches fill during the first half.
        let window = (elapsed / 5.0).min(60.0);
        let avg = |from: f64, to: f64| {
            let v: Vec<f64> = samples
                .iter()
                .filter(|(t, _)| *t >= from && *t <= to)
                .map(|s| s.1)
                .collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let first = avg(0.0, window);
        let mid = avg(elapsed / 2.0 - window, elapsed / 2.0);
        let last = avg(elapsed - window, elapsed + 1.0);
        let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
        let limit = mid * (1.0 + growth_pct / 100.0) + 16.0;
        let flat = last <= limit;
        println!(
            "server RSS: first {window:.0}s avg {first:.1} MiB, middle {window:.0}s avg {mid:.1} MiB, last {window:.0}s avg {last:.1} MiB, peak {peak:.1} MiB ({} samples): {}",
            samples.len(),
            if flat { "flat" } else { "GROWING" }
        );
        ok &= flat;
    }
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
}
