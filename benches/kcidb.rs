//! KCIDB mapping and validation: a 10,000-node tree (1 checkout, 10 builds, 100 test jobs,
//! 9,889 tests) mapped to KCIDB objects, each object checked against schema v5.3 with
//! format checks, and the document serialised — what the bridge does per batch, minus I/O.
//! Target (issue 20): under 1 s.
//!
//! `cargo bench --bench kcidb`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kernelci::kcidb::mapping::{Decision, Mapper, MappingConfig, NodeIndex, ObjectSet};
use kernelci::kcidb::prepare;
use kernelci::kcidb::validate::validate_document;
use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, State};
use serde_json::json;

/// The tree: returns every node (the index holds them all).
fn tree(total: usize) -> (Vec<Node>, NodeIndex) {
    let mut nodes = Vec::with_capacity(total);
    let mut checkout = Node::new(NodeKind::Checkout, "checkout");
    checkout.id = Some(ObjectId::new());
    checkout.state = State::Done;
    checkout.data = json!({"kernel_revision": {"tree": "mainline", "branch": "master",
        "commit": "48c0ea45d4431a2ce6e782b89e0fcc8d08d426d5", "describe": "v6.18-rc1-42-g48c0ea45d443",
        "url": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"}})
    .as_object()
    .cloned();
    nodes.push(checkout.clone());
    let builds = 10;
    let jobs_per_build = 10;
    let tests_per_job = (total - 1 - builds - builds * jobs_per_build) / (builds * jobs_per_build);
    for b in 0..builds {
        let mut kbuild = Node::new(NodeKind::Kbuild, format!("kbuild-gcc-14-x86-{b}"));
        kbuild.id = Some(ObjectId::new());
        kbuild.parent = checkout.id;
        kbuild.path = vec!["checkout".into(), kbuild.name.clone()];
        kbuild.state = State::Done;
        kbuild.result = Some(ResultValue::Pass);
        let mut data = checkout.data.clone().unwrap_or_default();
        data.insert("arch".into(), json!("x86_64"));
        data.insert("compiler".into(), json!("gcc-14"));
        data.insert("config_full".into(), json!("x86_64_defconfig+kselftest"));
        data.insert("runtime".into(), json!("k8s-all"));
        kbuild.data = Some(data.clone());
        kbuild.artifacts =
            json!({"build_log": format!("https://storage.kernelci.org/b{b}/build.log"),
            "_config": format!("https://storage.kernelci.org/b{b}/.config"),
            "kernel": format!("https://storage.kernelci.org/b{b}/bzImage")})
            .as_object()
            .cloned();
        nodes.push(kbuild.clone());
        for j in 0..jobs_per_build {
            let mut job = Node::new(NodeKind::Job, format!("kselftest-{j}"));
            job.id = Some(ObjectId::new());
            job.parent = kbuild.id;
            job.path = vec!["checkout".into(), kbuild.name.clone(), job.name.clone()];
            job.state = State::Done;
            job.result = Some(ResultValue::Fail);
            let mut jdata = data.clone();
            jdata.insert("platform".into(), json!("qemu-x86"));
            jdata.insert("job_id".into(), json!(format!("{b}-{j}")));
            job.data = Some(jdata.clone());
            job.artifacts =
                json!({"log": format!("https://storage.kernelci.org/b{b}/j{j}/log.txt")})
                    .as_object()
                    .cloned();
            nodes.push(job.clone());
            for t in 0..tests_per_job {
                let mut test = Node::new(NodeKind::Test, format!("case_{t}"));
                test.id = Some(ObjectId::new());
                test.parent = job.id;
                test.path = job.path.clone();
                test.path.push(test.name.clone());
                test.state = State::Done;
                test.result = Some(if t % 7 == 0 {
                    ResultValue::Fail
                } else {
                    ResultValue::Pass
                });
                test.data = Some(jdata.clone());
                nodes.push(test);
            }
        }
    }
    let mut index = NodeIndex::new();
    for n in &nodes {
        index.insert(n.clone());
    }
    (nodes, index)
}

fn mapper() -> Mapper {
    let mut config = MappingConfig::new("maestro")
        .expect("origin")
        .with_api_url("https://api.kernelci.org");
    for b in 0..10 {
        config
            .jobs
            .insert(format!("kbuild-gcc-14-x86-{b}"), ("kbuild".into(), None));
    }
    for j in 0..10 {
        config.jobs.insert(
            format!("kselftest-{j}"),
            ("job".into(), Some(format!("kselftest.s{j}"))),
        );
    }
    config
        .platforms
        .insert("qemu-x86".into(), Some(vec!["qemu,x86".into()]));
    Mapper::new(config)
}

fn map_validate(nodes: &[Node], index: &NodeIndex, mapper: &Mapper) -> usize {
    let mut set = ObjectSet::new();
    for n in nodes {
        if let (Some(id), Decision::Send(objects)) = (n.id, mapper.map(n, index)) {
            for o in objects {
                set.add(o, id);
            }
        }
    }
    let prepared = prepare(set.into_inner());
    assert!(prepared.invalid.is_empty());
    prepared.document.to_json_bytes().len()
}

fn bench(c: &mut Criterion) {
    let (nodes, index) = tree(10_000);
    let mapper = mapper();
    let mut group = c.benchmark_group("kcidb");
    group.sample_size(20);
    group.throughput(Throughput::Elements(nodes.len() as u64));
    group.bench_function("map_validate_serialise_10k_nodes", |b| {
        b.iter(|| black_box(map_validate(&nodes, &index, &mapper)))
    });
    // A whole-document check, as a receiver would run it.
    let mut set = ObjectSet::new();
    for n in &nodes {
        if let (Some(id), Decision::Send(objects)) = (n.id, mapper.map(n, &index)) {
            for o in objects {
                set.add(o, id);
            }
        }
    }
    let doc = prepare(set.into_inner()).document.to_value();
    group.bench_function("validate_document_10k_nodes", |b| {
        b.iter(|| black_box(validate_document(&doc).len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
