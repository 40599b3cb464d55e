//! Sample data: a deterministic, varied set of nodes for demos (`kci local demo`),
//! benchmarks and the store conformance suite. Production code, not test code: it needs no
//! test peer and no `testsuite` feature.
//!
//! ```
//! let nodes = kernelci::models::sample::sample_nodes(50);
//! assert_eq!(nodes.len(), 50);
//! assert!(nodes.iter().all(|n| n.id.is_some()));
//! ```

use serde_json::{Value, json};

use crate::models::{Node, NodeKind, ObjectId, ResultValue, State, Timestamp};

/// The `kernel_revision` object of a sample node: a `git.example.org` URL, a describe made
/// from the commit length and a fixed 6.1.0-rc1 version.
pub fn sample_revision(tree: &str, branch: &str, commit: &str) -> Value {
    json!({"tree": tree, "url": format!("https://git.example.org/{tree}.git"), "branch": branch,
           "commit": commit, "describe": format!("v6.{}", commit.len()),
           "version": {"version": 6, "patchlevel": 1, "sublevel": 0, "extra": "-rc1", "name": "Baby Opossum"}})
}

/// A varied, deterministic set of nodes, including odd values (lists and numbers where text is
/// usual, missing fields), for comparing backends with the reference evaluator.
pub fn sample_nodes(count: usize) -> Vec<Node> {
    let trees = ["mainline", "next", "stable", "kernelci"];
    let kinds = [
        NodeKind::Checkout,
        NodeKind::Kbuild,
        NodeKind::Test,
        NodeKind::Job,
        NodeKind::Process,
    ];
    let base = Timestamp::parse("2024-01-01T00:00:00").unwrap_or_else(|_| Timestamp::now());
    (0..count)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let mut n = Node::new(kind, format!("node-{}", i % 17));
            n.id = Some(ObjectId::from_parts(1_700_000_000 + i as u32, i as u32));
            n.path = vec!["checkout".into(), format!("p{}", i % 3), n.name.clone()];
            n.state = State::ALL[i % 4];
            n.result = match i % 5 {
                0 => None,
                k => Some(ResultValue::ALL[k - 1]),
            };
            n.group = if i % 4 == 0 { None } else { Some(format!("g{}", i % 4)) };
            n.owner = Some(["alice", "bob", "admin"][i % 3].into());
            n.created = base.plus_secs((i as i64 * 7919) % 100_000);
            n.timeout = n.created.plus_secs(3600);
            n.retry_counter = (i % 4) as i64;
            n.processed_by_kcidb_bridge = i % 6 == 0;
            if i % 9 == 0 {
                n.parent = Some(ObjectId::from_parts(1_700_000_000, 0));
            }
            let tree = trees[i % trees.len()];
            let arch = ["x86_64", "arm64", "riscv"][i % 3];
            let mut data = json!({"kernel_revision": sample_revision(tree, if i % 2 == 0 { "master" } else { "main" }, &format!("{:040x}", i % 23)),
                                  "arch": arch, "runtime": "shell"});
            if kind == NodeKind::Process {
                // Free-form data: odd shapes that text columns cannot hold.
                data["kernel_revision"]["tree"] = match i % 3 {
                    0 => json!(["mainline", "next"]),
                    1 => json!(42),
                    _ => Value::Null,
                };
                data["misc"] = json!({"count": i % 10, "flag": i % 2 == 0});
            }
            if i % 11 == 0 {
                data.as_object_mut().map(|d| d.remove("arch"));
            }
            n.data = data.as_object().cloned();
            n
        })
        .collect()
}
