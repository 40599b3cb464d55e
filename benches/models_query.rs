//! Node JSON decode/encode and query parse + evaluate.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kernelci::models::Node;
use kernelci::query::Query;
use kernelci::testsuite::store::sample_nodes;

fn models(c: &mut Criterion) {
    let nodes = sample_nodes(1000);
    let texts: Vec<String> = nodes
        .iter()
        .map(|n| serde_json::to_string(n).expect("encode"))
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut g = c.benchmark_group("node_json");
    g.throughput(Throughput::Elements(nodes.len() as u64));
    g.bench_function(format!("decode_1000_nodes_{}KiB", bytes / 1024), |b| {
        b.iter(|| {
            for t in &texts {
                black_box(Node::from_json(t.as_bytes()).expect("decode"));
            }
        })
    });
    g.bench_function("encode_1000_nodes", |b| {
        b.iter(|| {
            for n in &nodes {
                black_box(serde_json::to_string(n).expect("encode"));
            }
        })
    });
    g.bench_function("validate_1000_nodes", |b| {
        b.iter(|| {
            for n in &nodes {
                let mut n = n.clone();
                black_box(n.validate().is_ok());
            }
        })
    });
    g.finish();

    let pairs = [
        ("kind__in", "test,job"),
        ("state__ne", "done"),
        ("data.kernel_revision.tree", "mainline"),
        ("created__gt", "2024-01-01T10:00:00"),
        ("name__re", "^node-1"),
        ("limit", "50"),
    ];
    let mut g = c.benchmark_group("query");
    g.bench_function("parse_6_pairs", |b| {
        b.iter(|| black_box(Query::parse(pairs).expect("parse")))
    });
    let q = Query::parse(pairs).expect("parse");
    let docs: Vec<serde_json::Value> = nodes.iter().map(Node::to_value).collect();
    g.throughput(Throughput::Elements(docs.len() as u64));
    g.bench_function("evaluate_on_1000_docs", |b| {
        b.iter(|| docs.iter().filter(|d| q.filter.matches(d)).count())
    });
    g.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);
