//! `SqliteStore` insert throughput and filtered finds at 100k and 1M nodes.
//!
//! Sizes come from `KCI_BENCH_SIZES` (default `100000,1000000`).

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kernelci::models::ObjectId;
use kernelci::query::Query;
use kernelci::store::{EventMode, FindOptions, NodeStore, SqliteStore};
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

fn store_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sizes: Vec<usize> = std::env::var("KCI_BENCH_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for size in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("bench.sqlite3")).expect("open");
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..size / 5000 {
                store
                    .insert_nodes(fresh_batch(5000), EventMode::Silent)
                    .await
                    .expect("fill");
            }
        });
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "filled {size} nodes in {secs:.1} s ({:.0} nodes/s, batches of 5000)",
            size as f64 / secs
        );

        let mut g = c.benchmark_group(format!("sqlite_{size}"));
        g.sample_size(20);
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
        let queries: &[(&str, &[(&str, &str)])] = &[
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
        for (name, pairs) in queries {
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
        let by_id = Query::parse([("kind", "job")]).expect("query");
        let id = rt
            .block_on(store.find_nodes(
                &by_id.filter,
                &FindOptions {
                    limit: Some(1),
                    ..Default::default()
                },
            ))
            .expect("find")
            .items[0]
            .id
            .expect("id");
        g.bench_function("get_by_id", |b| {
            b.iter(|| black_box(rt.block_on(store.get_node(id)).expect("get")))
        });
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
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
