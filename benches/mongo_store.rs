//! `MongoStore` (on a MongoDB-wire test server) side by side with `SqliteStore`: insert
//! throughput and filtered finds on the same data.
//!
//! Sizes come from `KCI_BENCH_SIZES` (default `100000`). The wire server is the test
//! harness's (`KCI_MONGO_WIRE`, or `KCI_MONGO_URI` for an existing server such as a genuine
//! `mongod`). Run: `cargo bench --bench mongo_store --features mongodb`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kernelci::models::ObjectId;
use kernelci::query::Query;
use kernelci::store::{EventMode, FindOptions, NodeStore, SqliteStore};
use kernelci::testsuite::mongo::MongoPeer;
use kernelci::testsuite::store::sample_nodes;

fn fresh_batch(n: usize) -> Vec<kernelci::models::Node> {
    sample_nodes(n)
        .into_iter()
        .map(|mut node| {
            node.id = Some(ObjectId::new());
            node
        })
        .collect()
}

const QUERIES: &[(&str, &[(&str, &str)])] = &[
    ("find50_kind_state", &[("kind", "test"), ("state", "done")]),
    (
        "find50_tree_branch",
        &[
            ("data.kernel_revision.tree", "mainline"),
            ("data.kernel_revision.branch", "master"),
        ],
    ),
    (
        "find50_created_range",
        &[
            ("created__gt", "2024-01-01T10:00:00"),
            ("created__lt", "2024-01-01T12:00:00"),
        ],
    ),
    ("find50_name_in", &[("name__in", "node-3,node-4")]),
    ("find50_unindexed_arch", &[("data.arch", "riscv")]),
];

fn bench_store<S: NodeStore>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    label: &str,
    store: &S,
    size: usize,
) {
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..size.div_ceil(5000) {
            store
                .insert_nodes(fresh_batch(5000), EventMode::Silent)
                .await
                .expect("fill");
        }
    });
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{label}: filled {size} nodes in {secs:.1} s ({:.0} nodes/s, batches of 5000)",
        size as f64 / secs
    );
    let mut g = c.benchmark_group(format!("{label}_{size}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("insert_batch_1000", |b| {
        b.iter_batched(
            || fresh_batch(1000),
            |batch| {
                rt.block_on(store.insert_nodes(batch, EventMode::Silent))
                    .expect("insert")
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("insert_batch_1000_with_events", |b| {
        b.iter_batched(
            || fresh_batch(1000),
            |batch| {
                rt.block_on(store.insert_nodes(batch, EventMode::Publish))
                    .expect("insert")
            },
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    for (name, pairs) in QUERIES {
        let q = Query::parse(pairs.iter().copied()).expect("query");
        let opts = FindOptions {
            limit: Some(50),
            ..Default::default()
        };
        g.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(store.find_nodes(&q.filter, &opts))
                        .expect("find")
                        .items
                        .len(),
                )
            })
        });
    }
    let count = Query::parse([("kind", "test")]).expect("query");
    g.bench_function("count_kind", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(store.count_nodes(&count.filter))
                    .expect("count"),
            )
        })
    });
    g.finish();
}

fn store_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sizes: Vec<usize> = std::env::var("KCI_BENCH_SIZES")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let Some(peer) = MongoPeer::start() else {
        eprintln!("no MongoDB-wire server: nothing to compare");
        return;
    };
    for size in sizes {
        let mongo = rt.block_on(peer.store());
        bench_store(c, &rt, "mongo", &mongo, size);
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = SqliteStore::open(dir.path().join("bench.sqlite3")).expect("open");
        bench_store(c, &rt, "sqlite", &sqlite, size);
    }
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
