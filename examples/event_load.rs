//! Event delivery under load, against a running API server (ours or upstream's): fan-out to
//! many live listeners, and catch-up of a subscriber far behind.
//!
//! - **fanout**: for each listener count L of `--listeners` (default `1,10,100,1000`), L
//!   subscriptions on channel `node`, each followed by its own long-poll loop; the publisher
//!   creates nodes at `--rate` per second for `--seconds`. A delivery's latency is the time from
//!   the `POST /node` response to the listener holding the event (0 when the event came
//!   first). Lost = events × L − distinct deliveries, after a drain of `--drain` seconds.
//! - **catchup**: one subscription, `--catchup N` events published behind it (32 concurrent
//!   publishers), then read back: with `GET /listen/{id}?max=--batch` (our extension; an
//!   upstream server ignores `max` and answers one event per request) and, for comparison, one
//!   event per request (the first `--single` events).
//!
//! Listeners acknowledge explicitly (`acknowledge=N`, ignored by upstream) and ask for batches
//! of `--batch` (default 100, as `kernelci::client::Listener` does; `0`: upstream's one event
//! per `/listen`). The server's memory is sampled every 100 ms from `/proc/<pid>/status` for
//! each of `--server-pids` (summed: an API server plus its database and Redis), reported as the
//! maximum `VmRSS`, `RssAnon` and `RssFile`.
//!
//! ```sh
//! event_load --url http://127.0.0.1:18731 --password pw --server-pids $PID \
//!   --scenarios fanout,catchup --listeners 1,10,100,1000 --rate 10 --seconds 10 \
//!   --label ours --csv bench.csv
//! ```
//!
//! Each result is printed and, with `--csv PATH`, appended as a row (`label,scenario,nodes,
//! listeners,rate,events,deliveries,lost,p50_ms,p99_ms,max_ms,per_second,rss_mib,anon_mib,
//! file_mib`) that `examples/bench_plot.rs` draws.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod bench_support;
use bench_support::{CsvRow, MemoryPeak, arg, arg_str, loadavg, pct, sort_ms};

/// What one run measured.
struct Row {
    scenario: String,
    listeners: usize,
    events: u64,
    deliveries: u64,
    lost: u64,
    latencies_ms: Vec<f64>,
    per_second: f64,
    memory: (f64, f64, f64),
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    token: String,
    batch: u64,
    label: String,
    nodes: u64,
    rate: u64,
    csv: Option<String>,
    /// The server's peak memory (reset at the start of each measurement).
    memory: MemoryPeak,
}

impl Ctx {
    fn report(&self, mut row: Row) {
        sort_ms(&mut row.latencies_ms);
        let (p50, p99) = (pct(&row.latencies_ms, 0.5), pct(&row.latencies_ms, 0.99));
        let max = row.latencies_ms.last().copied().unwrap_or(0.0);
        println!(
            "{:<8} {:<8} listeners {:>5}  events {:>7}  deliveries {:>8}  lost {:>6}  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  {:>9.0}/s  RSS {:.0} MiB (anon {:.0}, file {:.0})  load {}",
            self.label,
            row.scenario,
            row.listeners,
            row.events,
            row.deliveries,
            row.lost,
            p50,
            p99,
            max,
            row.per_second,
            row.memory.0,
            row.memory.1,
            row.memory.2,
            loadavg()
        );
        if let Some(path) = &self.csv {
            CsvRow {
                label: &self.label,
                scenario: &row.scenario,
                nodes: self.nodes,
                listeners: row.listeners,
                rate: self.rate,
                events: row.events,
                deliveries: row.deliveries,
                lost: row.lost,
                latencies_ms: &row.latencies_ms,
                per_second: row.per_second,
                memory: row.memory,
            }
            .append(path);
        }
    }

    async fn subscribe(&self, channel: &str) -> Result<u64, String> {
        let r = self
            .http
            .post(format!("{}/subscribe/{channel}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        v["id"].as_u64().ok_or_else(|| format!("subscribe: {v}"))
    }

    async fn unsubscribe(&self, id: u64) {
        let _ = self
            .http
            .post(format!("{}/unsubscribe/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await;
    }

    /// One `/listen`: the CloudEvents it carried (keep-alives left out) as (sequence id, data).
    async fn listen(
        &self,
        id: u64,
        acknowledge: u64,
        batch: u64,
    ) -> Result<Vec<(u64, Value)>, String> {
        let mut url = format!("{}/listen/{id}?acknowledge={acknowledge}", self.base);
        if batch > 0 {
            url.push_str(&format!("&max={batch}"));
        }
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("listen: {}", r.status()));
        }
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        let messages = match v {
            Value::Array(a) => a,
            one => vec![one],
        };
        Ok(messages
            .iter()
            .filter_map(|m| serde_json::from_str::<Value>(m["data"].as_str()?).ok())
            .filter(|ev| ev["data"] != "BEEP")
            .map(|ev| {
                let seq = ev["sequenceid"]
                    .as_u64()
                    .or_else(|| ev["_sequence_id"].as_u64())
                    .unwrap_or(0);
                (seq, ev["data"].clone())
            })
            .collect())
    }
}

/// Fan-out: `listeners` live listeners, nodes created at `rate`/s for `secs`.
async fn fanout(ctx: Arc<Ctx>, listeners: usize, secs: u64, drain: u64) {
    let run_id = format!("{:x}", rand_id());
    let mut subs = Vec::with_capacity(listeners);
    for _ in 0..listeners {
        match ctx.subscribe("node").await {
            Ok(id) => subs.push(id),
            Err(e) => {
                eprintln!("fanout {listeners}: {e}");
                return;
            }
        }
    }
    let received: Arc<Mutex<Vec<(usize, String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (n, id) in subs.iter().copied().enumerate() {
        let (ctx, received, stop, errors, prefix) = (
            ctx.clone(),
            received.clone(),
            stop.clone(),
            errors.clone(),
            format!("fan-{run_id}-"),
        );
        tasks.push(tokio::spawn(async move {
            let mut acked = 0;
            while !stop.load(Ordering::Relaxed) {
                match ctx.listen(id, acked, ctx.batch).await {
                    Ok(events) => {
                        let now = Instant::now();
                        let mut got = Vec::new();
                        for (seq, data) in events {
                            acked = acked.max(seq);
                            if let Some(name) = data["name"].as_str()
                                && name.starts_with(&prefix)
                            {
                                got.push((n, name.to_owned(), now));
                            }
                        }
                        if let Ok(mut r) = received.lock() {
                            r.extend(got);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    // Let every listener reach its first long poll.
    tokio::time::sleep(Duration::from_millis(500 + listeners as u64)).await;
    ctx.memory.take();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let period = Duration::from_secs_f64(1.0 / ctx.rate.max(1) as f64);
    let total = ctx.rate * secs;
    let mut tick = tokio::time::interval(period);
    let mut creates = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let (ctx, sent) = (ctx.clone(), sent.clone());
        let name = format!("fan-{run_id}-{i}");
        creates.push(tokio::spawn(async move {
            let body = serde_json::json!({"kind": "test", "name": name, "path": ["fanout"]});
            let r = ctx
                .http
                .post(format!("{}/node", ctx.base))
                .bearer_auth(&ctx.token)
                .json(&body)
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success())
                && let Ok(mut s) = sent.lock()
            {
                s.insert(name, Instant::now());
            }
        }));
    }
    for c in creates {
        let _ = c.await;
    }
    let expected = sent.lock().map(|s| s.len()).unwrap_or(0) as u64 * listeners as u64;
    let drain_until = Instant::now() + Duration::from_secs(drain);
    while Instant::now() < drain_until {
        if received.lock().map(|r| r.len() as u64).unwrap_or(0) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let memory = ctx.memory.take();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    for id in subs {
        ctx.unsubscribe(id).await;
    }
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let received = received.lock().map(|r| r.clone()).unwrap_or_default();
    let mut seen = HashSet::new();
    let mut latencies = Vec::new();
    for (n, name, at) in received {
        if let Some(t) = sent.get(&name)
            && seen.insert((n, name.clone()))
        {
            latencies.push(at.saturating_duration_since(*t).as_secs_f64() * 1e3);
        }
    }
    let deliveries = latencies.len() as u64;
    ctx.report(Row {
        scenario: "fanout".into(),
        listeners,
        events: sent.len() as u64,
        deliveries,
        lost: expected.saturating_sub(deliveries),
        latencies_ms: latencies,
        per_second: deliveries as f64 / secs as f64,
        memory,
    });
    let e = errors.load(Ordering::Relaxed);
    if e > 0 {
        println!("  ({e} failed /listen calls, retried)");
    }
}

/// Catch-up: `n` events behind one subscription, read back in batches, then one at a time.
async fn catchup(ctx: Arc<Ctx>, n: u64, single: u64, batch: u64) {
    let channel = format!("catchup-{:x}", rand_id());
    let Ok(id) = ctx.subscribe(&channel).await else {
        eprintln!("catchup: cannot subscribe");
        return;
    };
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for _ in 0..32 {
        let (ctx, next, channel) = (ctx.clone(), next.clone(), channel.clone());
        publishers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let _ = ctx
                    .http
                    .post(format!("{}/publish/{channel}", ctx.base))
                    .bearer_auth(&ctx.token)
                    .json(&serde_json::json!({"data": {"n": 1}}))
                    .send()
                    .await;
            }
        }));
    }
    for p in publishers {
        let _ = p.await;
    }
    println!(
        "  published {n} events behind subscription {id} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // One event per request for the first `single`, then batches for the rest.
    let single = single.min(n);
    let mut acked = 0u64;
    for (label, batch, want) in [("catchup1", 0, single), ("catchup", batch, n - single)] {
        ctx.memory.take();
        let t = Instant::now();
        let (mut got, mut calls, mut lat, mut empty) = (0u64, 0u64, Vec::new(), 0);
        while got < want {
            let c = Instant::now();
            match ctx.listen(id, acked, batch).await {
                Ok(events) if !events.is_empty() => {
                    got += events.len() as u64;
                    acked = events.iter().map(|(s, _)| *s).max().unwrap_or(acked);
                    calls += 1;
                    lat.push(c.elapsed().as_secs_f64() * 1e3);
                }
                // A message that is no event (upstream's first answer can be Redis's
                // subscribe confirmation) or a keep-alive: a few are fine.
                Ok(_) if empty < 3 => empty += 1,
                Ok(_) => break,
                Err(e) => {
                    eprintln!("catchup: {e}");
                    break;
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        ctx.report(Row {
            scenario: label.into(),
            listeners: 1,
            events: got,
            deliveries: calls,
            lost: want.saturating_sub(got),
            latencies_ms: lat,
            per_second: got as f64 / secs.max(1e-9),
            memory: ctx.memory.take(),
        });
    }
    ctx.unsubscribe(id).await;
}

fn rand_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(url) = arg_str("--url") else {
        eprintln!(
            "usage: event_load --url http://HOST:PORT [--user admin] --password PW [--scenarios fanout,catchup] [--listeners 1,10,100,1000] [--rate 10] [--seconds 10] [--drain 5] [--batch 100] [--catchup 100000] [--single 5000] [--catchup-batch 1000] [--server-pids P1,P2] [--label L] [--csv PATH]"
        );
        std::process::exit(2);
    };
    let base = format!("{}/latest", url.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap_or_default();
    let user = arg_str("--user").unwrap_or_else(|| "admin".into());
    let password = arg_str("--password").unwrap_or_else(|| "pw".into());
    let login = http
        .post(format!("{base}/user/login"))
        .form(&[("username", user.as_str()), ("password", password.as_str())])
        .send()
        .await;
    let token = match login {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_owned)),
        Err(e) => {
            eprintln!("cannot reach {url}: {e}");
            std::process::exit(1);
        }
    };
    let Some(token) = token else {
        eprintln!("login as {user} failed: check --user and --password");
        std::process::exit(1);
    };
    let nodes = match http.get(format!("{base}/count")).send().await {
        Ok(r) => r.json::<u64>().await.unwrap_or(0),
        Err(_) => 0,
    };
    let pids: Vec<u32> = arg_str("--server-pids")
        .map(|s| s.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default();
    let ctx = Arc::new(Ctx {
        http,
        base,
        token,
        batch: arg("--batch", 100),
        label: arg_str("--label").unwrap_or_else(|| "server".into()),
        nodes,
        rate: arg("--rate", 10),
        csv: arg_str("--csv"),
        memory: MemoryPeak::start(pids),
    });
    println!(
        "{}: {nodes} nodes stored; batch {}; load average {}",
        ctx.label,
        ctx.batch,
        loadavg()
    );
    let scenarios = arg_str("--scenarios").unwrap_or_else(|| "fanout,catchup".into());
    let on = |s: &str| scenarios.split(',').any(|x| x == s);
    if on("fanout") {
        let counts = arg_str("--listeners").unwrap_or_else(|| "1,10,100,1000".into());
        for l in counts
            .split(',')
            .filter_map(|c| c.trim().parse::<usize>().ok())
        {
            fanout(ctx.clone(), l, arg("--seconds", 10), arg("--drain", 5)).await;
        }
    }
    if on("catchup") {
        catchup(
            ctx.clone(),
            arg("--catchup", 100_000),
            arg("--single", 5000),
            arg("--catchup-batch", 1000),
        )
        .await;
    }
}
