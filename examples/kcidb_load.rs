//! Load run of the KCIDB bridge: can it keep up with `--rate` finished tests per second?
//!
//! Starts the API server in-process (embedded default: SQLite in a temp dir, in-process bus),
//! a local KCIDB REST receiver (`kernelci::kcidb::testsuite::KcidbReceiver`: a real HTTP
//! server answering 200 with an id) and the bridge ([`KcidbBridge`] with a
//! [`RestSubmitter`], no log excerpts). A generator then submits, for `--seconds`, one test
//! job every `per-job / rate` seconds the way the job runner does (a `running` job node, then
//! a result hierarchy with `--per-job` finished leaf tests: `PUT /nodes/{id}`). It prints the
//! tests/s generated and delivered, the delay from a job's results being written to their
//! tests being taken by KCIDB (p50/p99/max), and how long the bridge needed after the
//! generator stopped. The bridge keeps up when delivered ≈ generated and the delays stay
//! flat.
//!
//! `cargo run --release --example kcidb_load -- --rate 1000 --per-job 100 --seconds 60`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kernelci::client::ApiClient;
use kernelci::events::LocalBus;
use kernelci::kcidb::mapping::{Mapper, MappingConfig};
use kernelci::kcidb::testsuite::{
    KcidbReceiver, finished_checkout, finished_kbuild, finished_test_job,
};
use kernelci::kcidb::{RestEndpoint, RestSubmitter, RetryPolicy};
use kernelci::pipeline::kcidb_bridge::{BridgeOptions, KcidbBridge};
use kernelci::pipeline::service::ServiceContext;
use kernelci::store::SqliteStore;
use kernelci_server::App;
use kernelci_server::config::ServerConfig;
use serde_json::Value;

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

/// The API server on its own runtime thread; returns its URL.
fn start_server(db: &std::path::Path) -> String {
    let store = SqliteStore::open(db).expect("open store");
    let config = ServerConfig {
        initial_password: Some("load-password".into()),
        ..ServerConfig::for_tests()
    };
    let app = App::new(
        config,
        Arc::new(store.clone()),
        Arc::new(store),
        Arc::new(LocalBus::new()),
    )
    .expect("app");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            app.bootstrap().await.expect("bootstrap");
            let (addr, server) = kernelci_server::bind(
                app,
                SocketAddr::from(([127, 0, 0, 1], 0)),
                std::future::pending(),
            )
            .expect("bind");
            let _ = tx.send(addr);
            server.await;
        });
    });
    let addr = rx.recv().expect("server address");
    format!("http://{addr}")
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warp::server=off".into()),
        )
        .init();
    let rate = arg("--rate", 1000).max(1);
    let per_job = arg("--per-job", 100).max(1) as usize;
    let seconds = arg("--seconds", 60);
    let linger = arg("--linger-ms", 1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = start_server(&dir.path().join("load.sqlite"));
    let api = ApiClient::new(&url).expect("client");
    let token = api.login("admin", "load-password").await.expect("login");
    let api = api.with_token(token);

    let receiver = KcidbReceiver::start("load-token");
    let submitter = RestSubmitter::new(
        RestEndpoint::parse(&receiver.kcidb_rest()).expect("endpoint"),
        Duration::from_secs(60),
        RetryPolicy::default(),
    )
    .expect("submitter");
    let mut mapping = MappingConfig::new("maestro")
        .expect("origin")
        .with_api_url(&url);
    mapping
        .jobs
        .insert("kbuild-load".into(), ("kbuild".into(), None));
    mapping.jobs.insert(
        "kselftest-load".into(),
        ("job".into(), Some("kselftest.load".into())),
    );
    let options = BridgeOptions {
        linger: Duration::from_millis(linger),
        log_excerpts: None,
        ..BridgeOptions::default()
    };
    let bridge = KcidbBridge::new(Mapper::new(mapping), Arc::new(submitter), options);
    let ctx = ServiceContext::new("kcidb-load", api.clone());
    let bridge_ctx = ctx.clone();
    let bridge_task = tokio::spawn(async move { bridge.run(&bridge_ctx).await });

    let checkout = finished_checkout(&api, "48c0ea45d4431a2ce6e782b89e0fcc8d08d426d5").await;
    let kbuild = finished_kbuild(&api, &checkout, "kbuild-load", "x86_64", &url).await;

    // The generator.
    let interval = Duration::from_secs_f64(per_job as f64 / rate as f64);
    let started = Instant::now();
    let mut written: HashMap<String, Instant> = HashMap::new();
    let mut next = tokio::time::Instant::now();
    let mut jobs = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep_until(next).await;
        next += interval;
        let out = finished_test_job(&api, &kbuild, "kselftest-load", None, per_job).await;
        let at = Instant::now();
        for n in out.iter().filter(|n| n.kind == "test") {
            if let Some(id) = n.id {
                written.insert(format!("maestro:{id}"), at);
            }
        }
        jobs += 1;
    }
    let gen_secs = started.elapsed().as_secs_f64();
    let generated = written.len();
    let gen_done = Instant::now();

    // Wait until KCIDB has every test (or two minutes more).
    let delivered_at = loop {
        let mut got: HashMap<String, Instant> = HashMap::new();
        for r in receiver.requests().iter().filter(|r| r.status == 200) {
            for t in r
                .body
                .get("tests")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = t.get("id").and_then(Value::as_str) {
                    got.entry(id.to_owned()).or_insert(r.at);
                }
            }
        }
        let done = written.keys().filter(|k| got.contains_key(*k)).count();
        if done == generated || gen_done.elapsed() > Duration::from_secs(120) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drain = gen_done.elapsed().as_secs_f64();
    let mut lags: Vec<f64> = written
        .iter()
        .filter_map(|(id, at)| {
            delivered_at
                .get(id)
                .map(|d| d.saturating_duration_since(*at).as_secs_f64())
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let delivered = lags.len();
    let last = delivered_at.values().max().copied().unwrap_or(started);
    let requests = receiver.requests().len();
    let duplicates = receiver.accepted_ids().values().filter(|n| **n > 1).count();
    println!(
        "generated {generated} tests in {jobs} jobs over {gen_secs:.1} s ({:.0} tests/s)",
        generated as f64 / gen_secs
    );
    println!(
        "delivered {delivered} tests ({:.0} tests/s over the run), {requests} submissions, {duplicates} ids sent twice",
        delivered as f64 / last.duration_since(started).as_secs_f64().max(0.001)
    );
    println!(
        "delay written → taken by KCIDB: p50 {:.2} s, p99 {:.2} s, max {:.2} s; all delivered {drain:.2} s after the generator stopped",
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        pct(&lags, 1.0)
    );
    ctx.shutdown().trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), bridge_task).await;
}
