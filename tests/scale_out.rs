//! Scale-out (issue 25, DESIGN §6 and §7): two replicas of the real `kernelci-server` binary
//! on one MongoDB-wire database (jongodb as a single-node replica set), with and without
//! Redis, behind a real HAProxy that sends every request to the next replica (round robin, no
//! stickiness). Every request of these tests goes through the balancer unless it says
//! otherwise.
//!
//! - `round_robin_with_redis`: 10 listeners (8 with upstream's implicit acknowledgement, 2 with
//!   the library's `Listener` and explicit acknowledgements) get the 500 events 4 writers
//!   publish through the balancer (so both replicas write at once: no 5xx) exactly once each,
//!   in log order; both replicas answered a share of the requests; an unsubscribe through the
//!   balancer ends the subscription on both (a `/listen` waiting on the other replica answers
//!   404); a client that hangs up mid-request is logged at debug, not as an error.
//! - `kill9_of_a_replica_loses_nothing`: the same stream while one replica is killed with
//!   SIGKILL and started again: every listener gets every event of the log, in order; the only
//!   duplicates are a repeat of the event in flight at the kill (counted, at most one per
//!   listener).
//! - `round_robin_without_redis`: no bus between the replicas; nothing lost, and the
//!   append-to-delivery latency is printed (with `--nocapture`) next to the one with Redis.
//!
//! Sizes: `KCI_SCALE_EVENTS` (default 500 for the first test, 200 for the others),
//! `KCI_SCALE_LISTENERS` (default 10); `KCI_SCALE_PACE_MS` makes each writer wait that long
//! before each write (latency without a backlog); `KCI_SCALE_LOG_DIR` keeps the replicas' logs
//! and `KCI_SCALE_RUST_LOG` sets their `RUST_LOG`. `scripts/reliability` runs long variants.

#![cfg(feature = "mongodb")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reliability_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kernelci::client::{ApiClient, Listener, ListenerConfig};
use kernelci::models::Timestamp;
use kernelci::testsuite::haproxy::Haproxy;
use kernelci::testsuite::mongo::MongoPeer;
use kernelci::testsuite::redis::RedisServer;
use reliability_support::{ADMIN_PASSWORD, Body, Http, ServerProc, ServerSpec, env_num};
use serde_json::{Value, json};
use tokio::sync::watch;

const CHANNEL: &str = "scale";

/// One scale-out deployment at a time: each is two servers, a database and a balancer.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two replicas on one database (and one Redis, when given) behind HAProxy.
struct Cluster {
    replicas: Vec<ServerProc>,
    balancer: Haproxy,
    /// Through the balancer.
    http: Http,
    admin: String,
    _redis: Option<RedisServer>,
    _mongo: MongoPeer,
}

impl Cluster {
    /// `None` when a peer is missing and allowed to be (already reported).
    async fn start(with_redis: bool) -> Option<Cluster> {
        let redis = if with_redis {
            Some(RedisServer::start()?)
        } else {
            None
        };
        let mongo = MongoPeer::start()?;
        let database = format!(
            "kci_scale_{}",
            &kernelci::models::ObjectId::new().to_hex()[12..]
        );
        let spec = ServerSpec {
            database: mongo.uri(),
            redis: redis.as_ref().map(RedisServer::url),
            env: vec![
                ("KCI_MONGO_DATABASE".into(), database),
                (
                    "RUST_LOG".into(),
                    std::env::var("KCI_SCALE_RUST_LOG")
                        .unwrap_or_else(|_| "warn,kernelci_server=debug".into()),
                ),
            ],
        };
        // One after the other: the first creates the admin, the second finds it.
        let replicas = vec![ServerProc::start(spec.clone()), ServerProc::start(spec)];
        let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
        let balancer = Haproxy::start(&ports)?;
        let http = Http::new(&balancer.url(), Duration::from_secs(30));
        // The balancer's health checks see both replicas up within a second.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = http.send("GET", "/latest/", None, &Body::None).await;
            if r.as_ref().is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the balancer never answered: {:?}",
                r.err()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let admin = http.login("admin", ADMIN_PASSWORD).await;
        Some(Cluster {
            replicas,
            balancer,
            http,
            admin,
            _redis: redis,
            _mongo: mongo,
        })
    }

    /// The replicas' logs, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.replicas.iter().enumerate() {
            let log = r.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!("\n--- replica {i} (last 40 lines) ---\n"));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Copies the replicas' whole logs to `$KCI_SCALE_LOG_DIR/replica<i>.log` when it is set.
    fn keep_logs(&self) {
        if let Some(dir) = std::env::var_os("KCI_SCALE_LOG_DIR") {
            for (i, r) in self.replicas.iter().enumerate() {
                let _ = std::fs::write(
                    std::path::Path::new(&dir).join(format!("replica{i}.log")),
                    r.log_text(),
                );
            }
        }
    }

    /// A client of one replica, bypassing the balancer.
    fn direct(&self, i: usize) -> Http {
        Http::new(&self.replicas[i].url(), Duration::from_secs(30))
    }

    async fn subscribe(&self) -> u64 {
        let r = self
            .http
            .call(
                "POST",
                &format!("/latest/subscribe/{CHANNEL}"),
                Some(&self.admin),
                Body::None,
            )
            .await;
        assert_eq!(r.status, 200, "subscribe: {}", r.text);
        r.json()["id"].as_u64().expect("subscription id")
    }

    /// The sequence ids of the channel's events in the log, in order.
    async fn log(&self) -> Vec<u64> {
        let r = self
            .http
            .call(
                "GET",
                &format!("/latest/events?channel={CHANNEL}"),
                None,
                Body::None,
            )
            .await;
        assert_eq!(r.status, 200, "events: {}", r.text);
        r.json()
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["sequence_id"].as_u64().expect("sequence_id"))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.keep_logs();
    }
}

/// What one listener got.
#[derive(Debug, Default)]
struct Got {
    /// Sequence ids in the order received.
    seqs: Vec<u64>,
    /// Append-to-receipt latency of each, in milliseconds.
    latency_ms: Vec<f64>,
    /// `/listen` calls that failed (transport error, 5xx) and were retried.
    retried: u64,
}

/// Milliseconds from the event's append (its `time`) to now.
fn latency_ms(appended: Option<Timestamp>) -> Option<f64> {
    Some((Timestamp::now().micros() - appended?.micros()) as f64 / 1e3)
}

/// A listener as upstream's client is one: `GET /listen/{id}` again and again, each call
/// acknowledging what the previous one delivered; transport errors and 5xx retried. Stops
/// once it has the sequence id `until` says.
async fn implicit_listener(
    http: Http,
    token: String,
    id: u64,
    mut until: watch::Receiver<Option<u64>>,
) -> Got {
    let mut got = Got::default();
    loop {
        let until_seq = *until.borrow_and_update();
        if let Some(last) = until_seq
            && got.seqs.last().is_some_and(|s| *s >= last)
        {
            return got;
        }
        let r = http
            .send(
                "GET",
                &format!("/latest/listen/{id}"),
                Some(&token),
                &Body::None,
            )
            .await;
        let msg = match r {
            Ok(r) if r.status == 200 => r.json(),
            Ok(r) if r.status < 500 => panic!("listen {id}: {} {}", r.status, r.text),
            _ => {
                got.retried += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ev: Value = serde_json::from_str(msg["data"].as_str().expect("data")).expect("event");
        if ev["data"] == "BEEP" {
            continue;
        }
        got.seqs
            .push(ev["sequenceid"].as_u64().expect("sequenceid"));
        let appended = ev["time"].as_str().and_then(|t| Timestamp::parse(t).ok());
        got.latency_ms.extend(latency_ms(appended));
    }
}

/// A listener made with the library: explicit acknowledgements, retries and re-subscribes
/// of its own.
async fn library_listener(
    url: String,
    token: String,
    mut until: watch::Receiver<Option<u64>>,
) -> Got {
    let api = ApiClient::new(&url).expect("client").with_token(token);
    let mut listener = Listener::new(api, ListenerConfig::new(CHANNEL));
    listener.start().await.expect("subscribe");
    let mut got = Got::default();
    loop {
        let until_seq = *until.borrow_and_update();
        if let Some(last) = until_seq
            && got.seqs.last().is_some_and(|s| *s >= last)
        {
            got.retried = listener.health().reconnects;
            let _ = listener.close().await;
            return got;
        }
        tokio::select! {
            ev = listener.next() => {
                let ev = ev.expect("listener");
                got.seqs.push(ev.sequence_id().expect("sequence id"));
                got.latency_ms.extend(latency_ms(ev.event.time));
                listener.ack(&ev);
            }
            _ = until.changed() => {}
        }
    }
}

/// Publishes events `k` (`k % writers == w`) through the balancer, retrying a failed write
/// (its outcome is unknown: it may be in the log twice, which the checks allow). Returns the
/// statuses of failed attempts.
async fn writer(
    http: Http,
    token: String,
    w: u64,
    writers: u64,
    events: u64,
    written: Arc<AtomicU64>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let pace = Duration::from_millis(env_num("KCI_SCALE_PACE_MS", 0));
    let mut k = w;
    while k < events {
        tokio::time::sleep(pace).await;
        let r = http
            .send(
                "POST",
                &format!("/latest/publish/{CHANNEL}"),
                Some(&token),
                &Body::Json(json!({"data": {"k": k}})),
            )
            .await;
        match r {
            Ok(r) if r.status == 200 => {
                written.fetch_add(1, Ordering::Relaxed);
                k += writers;
            }
            Ok(r) if r.status < 500 => {
                // Refused: a bug, not a transient failure; reported with the servers' logs.
                failures.push(format!("publish {k}: {} {}", r.status, r.text));
                return failures;
            }
            Ok(r) => {
                failures.push(format!("{} {}", r.status, r.text));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                failures.push(format!("transport: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    failures
}

/// How a stream runs.
struct Stream {
    events: u64,
    writers: u64,
    listeners: usize,
    /// Of the listeners, how many use the library's `Listener` (the rest: implicit acks).
    library_listeners: usize,
    /// Kill replica 0 after a third of the writes, start it again after two thirds.
    kill: bool,
}

/// What a stream gave.
struct Outcome {
    log: Vec<u64>,
    got: Vec<Got>,
    write_failures: Vec<String>,
    took: Duration,
}

async fn stream(cluster: &mut Cluster, s: &Stream) -> Outcome {
    let (until_tx, until) = watch::channel(None);
    let mut listeners = Vec::new();
    for i in 0..s.listeners {
        if i < s.library_listeners {
            listeners.push(tokio::spawn(library_listener(
                cluster.balancer.url(),
                cluster.admin.clone(),
                until.clone(),
            )));
        } else {
            let id = cluster.subscribe().await;
            listeners.push(tokio::spawn(implicit_listener(
                cluster.http.clone(),
                cluster.admin.clone(),
                id,
                until.clone(),
            )));
        }
    }
    // Let every listener be waiting before the first write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..s.writers)
        .map(|w| {
            tokio::spawn(writer(
                cluster.http.clone(),
                cluster.admin.clone(),
                w,
                s.writers,
                s.events,
                written.clone(),
            ))
        })
        .collect();
    if s.kill {
        let mut killed = false;
        loop {
            let n = written.load(Ordering::Relaxed);
            if !killed && n >= s.events / 3 {
                cluster.replicas[0].kill9();
                killed = true;
                eprintln!("killed replica 0 (kill -9) after {n} writes");
            }
            if n >= 2 * s.events / 3 {
                cluster.replicas[0].restart();
                eprintln!(
                    "restarted replica 0 after {} writes",
                    written.load(Ordering::Relaxed)
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut write_failures = Vec::new();
    for w in writers {
        write_failures.extend(w.await.expect("writer"));
    }
    let log = cluster.log().await;
    let _ = until_tx.send(log.last().copied());
    let mut got = Vec::new();
    for l in listeners {
        got.push(
            tokio::time::timeout(Duration::from_secs(300), l)
                .await
                .expect("a listener did not get every event within 300 s")
                .expect("listener"),
        );
    }
    Outcome {
        log,
        got,
        write_failures,
        took: started.elapsed(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Prints and returns the latency summary of a stream.
fn report(label: &str, o: &Outcome) {
    let mut all: Vec<f64> = o
        .got
        .iter()
        .flat_map(|g| g.latency_ms.iter().copied())
        .collect();
    all.sort_by(f64::total_cmp);
    let retried: u64 = o.got.iter().map(|g| g.retried).sum();
    eprintln!(
        "{label}: {} events to {} listeners in {:.1} s ({:.1} events/s written); append-to-delivery \
         latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} write attempts failed, \
         {} listen calls retried",
        o.log.len(),
        o.got.len(),
        o.took.as_secs_f64(),
        o.log.len() as f64 / o.took.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
        o.write_failures.len(),
        retried,
    );
}

/// Every listener got exactly the log, once each, in order.
fn assert_exactly_once(label: &str, o: &Outcome, events: u64) {
    assert!(
        o.log.len() as u64 >= events,
        "{label}: {} events in the log, {events} written",
        o.log.len()
    );
    for (i, g) in o.got.iter().enumerate() {
        assert_eq!(
            g.seqs, o.log,
            "{label}: listener {i} did not get every event exactly once, in order"
        );
    }
}

/// Starts a deployment (with or without Redis) and runs a stream of `KCI_SCALE_EVENTS`
/// (default `default_events`) to `KCI_SCALE_LISTENERS` (default 10) listeners; prints its
/// report under `label`. `None` when a peer is missing and allowed to be.
async fn start_and_stream(
    label: &str,
    with_redis: bool,
    default_events: u64,
    shape: Stream,
) -> Option<(Cluster, Outcome, u64)> {
    let mut cluster = Cluster::start(with_redis).await?;
    let events = env_num("KCI_SCALE_EVENTS", default_events);
    let s = Stream {
        events,
        listeners: env_num("KCI_SCALE_LISTENERS", 10) as usize,
        ..shape
    };
    let o = stream(&mut cluster, &s).await;
    report(label, &o);
    Some((cluster, o, events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_with_redis() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some((cluster, o, events)) = start_and_stream(
        "with Redis",
        true,
        500,
        Stream {
            events: 0,
            writers: 4,
            listeners: 0,
            library_listeners: 2,
            kill: false,
        },
    )
    .await
    else {
        return;
    };
    assert!(
        o.write_failures.is_empty(),
        "both replicas writing at once: no 5xx, got {:?}; {}",
        &o.write_failures[..o.write_failures.len().min(5)],
        cluster.logs()
    );
    assert_eq!(o.log.len() as u64, events, "one event per write");
    assert_exactly_once("with Redis", &o, events);
    // Round robin really spread the requests.
    let per_replica = cluster
        .balancer
        .requests_per_replica()
        .expect("haproxy statistics");
    let total: u64 = per_replica.iter().map(|(_, n)| n).sum();
    eprintln!("requests per replica: {per_replica:?}");
    assert_eq!(per_replica.len(), 2, "{per_replica:?}");
    for (name, n) in &per_replica {
        assert!(
            *n * 3 >= total,
            "{name} answered {n} of {total} requests: not round robin"
        );
    }

    // An unsubscribe through the balancer ends the subscription on both replicas, including
    // a /listen waiting on one of them.
    let id = cluster.subscribe().await;
    let (a, b) = (cluster.direct(0), cluster.direct(1));
    let token = cluster.admin.clone();
    let pending = {
        let a = a.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            // KEEP_ALIVE_PERIOD is 2 s: loop over BEEPs until the subscription is gone.
            loop {
                let r = a
                    .call(
                        "GET",
                        &format!("/latest/listen/{id}"),
                        Some(&token),
                        Body::None,
                    )
                    .await;
                if r.status != 200 {
                    return (r.status, started.elapsed());
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = cluster
        .http
        .call(
            "POST",
            &format!("/latest/unsubscribe/{id}"),
            Some(&token),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200, "unsubscribe: {}", r.text);
    let (status, after) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the waiting /listen ended")
        .unwrap();
    assert_eq!(
        status, 404,
        "the waiting /listen on replica 0 ends with 404"
    );
    eprintln!("a /listen waiting on the other replica ended {after:?} after it began");
    // Unsubscribed 0.3 s in: woken by the notice through Redis, not by the 2 s keep-alive.
    assert!(
        after < Duration::from_millis(1900),
        "the waiting /listen was not woken by the unsubscribe ({after:?})"
    );
    for (name, replica) in [("replica 0", &a), ("replica 1", &b)] {
        let r = replica
            .call(
                "GET",
                &format!("/latest/listen/{id}"),
                Some(&token),
                Body::None,
            )
            .await;
        assert_eq!(
            r.status, 404,
            "{name} still serves subscription {id}: {}",
            r.text
        );
        let stats = replica
            .call(
                "GET",
                "/latest/stats/subscriptions",
                Some(&token),
                Body::None,
            )
            .await;
        assert!(
            !stats
                .json()
                .as_array()
                .expect("stats")
                .iter()
                .any(|s| s["id"] == id),
            "{name} still lists subscription {id}"
        );
    }

    // A client that hangs up mid-request: a debug line, no error.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", cluster.replicas[0].port)).unwrap();
        s.write_all(
            b"POST /latest/publish/scale HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"da",
        )
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, r) in cluster.replicas.iter().enumerate() {
        let log = r.log_text();
        assert!(
            !log.contains("ERROR") && !log.contains("server connection error"),
            "replica {i} logged an error:\n{log}"
        );
    }
    let log = cluster.replicas[0].log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG")
                && l.contains("client went away (or broke its request body)")),
        "the hang-up is logged at debug:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_a_replica_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some((_cluster, o, events)) = start_and_stream(
        "kill -9 of a replica",
        true,
        200,
        Stream {
            events: 0,
            writers: 2,
            listeners: 0,
            library_listeners: 0,
            kill: true,
        },
    )
    .await
    else {
        return;
    };
    assert!(o.log.len() as u64 >= events);
    let mut duplicates = 0;
    for (i, g) in o.got.iter().enumerate() {
        let mut unique = g.seqs.clone();
        unique.dedup();
        assert_eq!(
            unique, o.log,
            "listener {i}: every event of the log, in order"
        );
        let repeats = g.seqs.len() - unique.len();
        // A repeat can only be the event in flight at the kill, sent again right after.
        assert!(
            repeats <= 1,
            "listener {i}: {repeats} duplicates: {:?}",
            g.seqs
        );
        duplicates += repeats;
    }
    eprintln!(
        "kill -9: {duplicates} of {} listeners got the event in flight twice; 0 lost",
        o.got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_without_redis() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some((_cluster, o, events)) = start_and_stream(
        "without Redis",
        false,
        200,
        Stream {
            events: 0,
            writers: 2,
            listeners: 0,
            library_listeners: 1,
            kill: false,
        },
    )
    .await
    else {
        return;
    };
    assert!(
        o.write_failures.is_empty(),
        "no 5xx: {:?}",
        o.write_failures
    );
    assert_exactly_once("without Redis", &o, events);
}
