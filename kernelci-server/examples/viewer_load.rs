//! The viewer's data endpoints under a realistic database: many trees and branches, revisions
//! over 30 days, each with builds, boot jobs and test suites (about 2,200 nodes a revision).
//!
//! Fill a SQLite file (once; a later run tops it up to `--nodes`):
//! `cargo build --release -p kernelci-server --bin kernelci-server --example viewer_load`
//! `target/release/examples/viewer_load --db /var/tmp/viewer.sqlite3 --nodes 1000000 --fill-only`
//!
//! Then run a release server on it, the cache off to measure the store's work
//! (`KCI_VIEWER_CACHE_SECS=0 kernelci-server --database sqlite:///var/tmp/viewer.sqlite3`), and:
//! `viewer_load --url http://127.0.0.1:8001 --requests 50`
//! which prints p50/p99/max latency of each endpoint, one request at a time.
//!
//! Options: `--branches N` (default 40 tree/branch pairs), `--builds N` per revision (default
//! 20), `--days N` the fill spans (default 30).

use std::time::{Duration, Instant};

use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, State, Timestamp};
use kernelci::query::Filter;
use kernelci::store::{EventMode, NodeStore, SqliteStore};
use serde_json::{Value, json};

fn arg(name: &str, default: u64) -> u64 {
    arg_str(name)
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

/// A tiny deterministic random number generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const TREES: [&str; 10] = [
    "mainline",
    "next",
    "stable",
    "stable-rc",
    "kernelci",
    "android",
    "chromiumos",
    "arm64",
    "broonie-sound",
    "netdev",
];
const ARCHES: [(&str, &str); 5] = [
    ("x86_64", "qemu-x86"),
    ("arm64", "rk3399-rock-pi-4b"),
    ("arm", "bcm2836-rpi-2-b"),
    ("riscv", "sun20i-d1-nezha"),
    ("i386", "qemu-x86"),
];

struct Fill {
    rng: Rng,
    nodes: Vec<Node>,
    seq: u32,
}

impl Fill {
    /// A node below `parent` inheriting its path, group and data; a job or build starts its
    /// own group.
    fn node(
        &mut self,
        kind: NodeKind,
        name: &str,
        parent: Option<&Node>,
        created: Timestamp,
        data: Value,
    ) -> Node {
        self.seq += 1;
        let mut n = Node::new(kind, name);
        n.id = Some(ObjectId::from_parts(
            u32::try_from(created.micros() / 1_000_000).unwrap_or(0),
            self.seq,
        ));
        n.created = created;
        n.updated = created;
        n.state = State::Done;
        let r = self.rng.next() % 1000;
        n.result = Some(match r {
            0..=19 => ResultValue::Fail,
            20..=49 => ResultValue::Skip,
            50..=54 => ResultValue::Incomplete,
            _ => ResultValue::Pass,
        });
        if let Some(p) = parent {
            n.parent = p.id;
            n.path = p.path.clone();
            n.path.push(name.to_owned());
            n.group = p.group.clone();
            n.data = p.data.clone();
        }
        if let (Some(d), Value::Object(extra)) = (n.data.as_mut(), data) {
            d.extend(extra);
        }
        if matches!(kind, NodeKind::Kbuild | NodeKind::Job) {
            n.group = Some(name.to_owned());
        }
        if n.result == Some(ResultValue::Incomplete)
            && let Some(d) = n.data.as_mut()
        {
            d.insert("error_code".into(), json!("Infrastructure"));
        }
        self.nodes.push(n.clone());
        n
    }

    /// One revision: a checkout and its builds, boots and tests.
    fn revision(&mut self, tree: &str, branch: &str, rev: u64, created: Timestamp, builds: u64) {
        let commit = format!("{:040x}", self.rng.next() as u128 * 31 + u128::from(rev));
        let mut checkout = Node::new(NodeKind::Checkout, "checkout");
        self.seq += 1;
        checkout.id = Some(ObjectId::from_parts(
            u32::try_from(created.micros() / 1_000_000).unwrap_or(0),
            self.seq,
        ));
        checkout.created = created;
        checkout.state = State::Done;
        checkout.result = Some(ResultValue::Pass);
        checkout.data = json!({"kernel_revision": {"tree": tree, "branch": branch,
            "url": format!("https://git.kernel.org/pub/scm/linux/kernel/git/{tree}.git"),
            "commit": commit, "describe": format!("v6.{}-rc{}-{rev}", rev % 20, rev % 8)}})
        .as_object()
        .cloned();
        self.nodes.push(checkout.clone());
        for b in 0..builds {
            let (arch, platform) = ARCHES[(b % ARCHES.len() as u64) as usize];
            let config = [
                "defconfig",
                "allmodconfig",
                "tinyconfig",
                "defconfig+kselftest",
            ][(b / 5 % 4) as usize];
            let compiler = if b % 2 == 0 { "gcc-12" } else { "clang-17" };
            let name = format!("kbuild-{compiler}-{arch}-{b}");
            let at = created.plus_secs(60 + b as i64);
            let build = self.node(NodeKind::Kbuild, &name, Some(&checkout), at,
                json!({"arch": arch, "compiler": compiler, "defconfig": config, "config_full": config,
                       "runtime": "k8s-gke-eu-west4", "platform": "kubernetes"}));
            if build.result != Some(ResultValue::Pass) {
                continue;
            }
            let lab = json!({"platform": platform, "runtime": format!("lava-{}", ["collabora", "baylibre", "broonie"][(b % 3) as usize])});
            let boot = self.node(
                NodeKind::Job,
                "boot",
                Some(&build),
                at.plus_secs(600),
                lab.clone(),
            );
            self.node(
                NodeKind::Test,
                "login",
                Some(&boot),
                at.plus_secs(700),
                json!({}),
            );
            let suite = self.node(
                NodeKind::Job,
                "kselftest",
                Some(&build),
                at.plus_secs(900),
                lab,
            );
            for g in 0..5 {
                let group = self.node(
                    NodeKind::Test,
                    &format!("suite{g}"),
                    Some(&suite),
                    at.plus_secs(1000),
                    json!({}),
                );
                for t in 0..20 {
                    self.node(
                        NodeKind::Test,
                        &format!("case{t}"),
                        Some(&group),
                        at.plus_secs(1100),
                        json!({}),
                    );
                }
            }
        }
    }
}

async fn fill(db: &str, target: u64, branches: u64, builds: u64, days: u64) {
    let store = SqliteStore::open(db).expect("open the database");
    let have = store.count_nodes(&Filter::all()).await.expect("count");
    let per_rev = 1 + builds * 110;
    let revisions = target.saturating_sub(have) / per_rev;
    eprintln!("{have} nodes stored; adding {revisions} revisions of ~{per_rev} nodes");
    let now = Timestamp::now();
    let span = i64::try_from(days * 86_400).unwrap_or(i64::MAX);
    let mut f = Fill {
        rng: Rng(0x9e37_79b9_7f4a_7c15 ^ have),
        nodes: Vec::new(),
        seq: u32::try_from(have % u64::from(u32::MAX)).unwrap_or(0),
    };
    let t = Instant::now();
    for r in 0..revisions {
        let b = r % branches;
        let tree = TREES[(b % TREES.len() as u64) as usize];
        let branch = if b < TREES.len() as u64 {
            "master".to_owned()
        } else {
            format!("linux-6.{}.y", b)
        };
        let age = span
            - span * i64::try_from(r).unwrap_or(0) / i64::try_from(revisions.max(1)).unwrap_or(1);
        f.revision(tree, &branch, r, now.plus_secs(-age), builds);
        if f.nodes.len() >= 5000 || r + 1 == revisions {
            let batch = std::mem::take(&mut f.nodes);
            store
                .insert_nodes(batch, EventMode::Silent)
                .await
                .expect("insert");
        }
        if r % 50 == 0 {
            eprintln!(
                "  {r}/{revisions} revisions, {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    let total = store.count_nodes(&Filter::all()).await.expect("count");
    eprintln!("{total} nodes in {:.1} s", t.elapsed().as_secs_f64());
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn measure(url: &str, requests: u64) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{url}{path}");
        async move {
            let t = Instant::now();
            let r = http.get(&url).send().await.expect("request");
            let status = r.status();
            let body = r.bytes().await.expect("body");
            assert!(
                status.is_success(),
                "{url}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            (t.elapsed().as_secs_f64() * 1e3, body)
        }
    };
    let (_, trees) = get("/viewer/api/trees?days=7".into()).await;
    let trees: Value = serde_json::from_slice(&trees).expect("trees JSON");
    let items = trees["items"].as_array().cloned().unwrap_or_default();
    let counted: u64 = items
        .iter()
        .map(|i| {
            ["builds", "boots", "tests"]
                .iter()
                .map(|c| {
                    ["pass", "fail", "skip", "incomplete", "null"]
                        .iter()
                        .map(|s| i["counts"][c][s].as_u64().unwrap_or(0))
                        .sum::<u64>()
                })
                .sum::<u64>()
        })
        .sum();
    println!(
        "trees page: {} tree/branch rows, {counted} builds/boots/tests counted",
        items.len()
    );
    let checkout = items
        .first()
        .and_then(|i| i["revision"]["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let endpoints = [
        "/viewer/api/trees?days=7".to_owned(),
        "/viewer/api/trees?days=30".to_owned(),
        format!("/viewer/api/checkout/{checkout}"),
        format!("/viewer/api/checkout/{checkout}/results?category=test&status=fail"),
        format!("/viewer/api/checkout/{checkout}/history"),
        "/viewer/api/health?hours=24".to_owned(),
        "/viewer/trees".to_owned(),
    ];
    for path in endpoints {
        let mut lat = Vec::new();
        for _ in 0..requests {
            lat.push(get(path.clone()).await.0);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        println!(
            "{path:<70} p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(0.0)
        );
    }
}

#[tokio::main]
async fn main() {
    if let Some(url) = arg_str("--url") {
        measure(&url, arg("--requests", 20)).await;
        return;
    }
    let db = arg_str("--db").unwrap_or_else(|| "viewer.sqlite3".into());
    fill(
        &db,
        arg("--nodes", 1_000_000),
        arg("--branches", 40),
        arg("--builds", 20),
        arg("--days", 30),
    )
    .await;
    if std::env::args().all(|a| a != "--fill-only") {
        eprintln!("filled; start the server on it and run with --url");
    }
}
