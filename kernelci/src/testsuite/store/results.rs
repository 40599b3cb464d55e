//! The [`ResultsStore`] suite: counts, result pages, node counts and latest checkouts,
//! compared with the reference definition ([`ResultTally`], [`result_order`]) over the same
//! nodes.

use serde_json::{Value, json};

use super::{filter, insert, must};
use crate::models::{Node, NodeKind, ObjectId, ResultValue, State, Timestamp};
use crate::query::Filter;
use crate::store::results::{ResultTally, result_order, sort_groups};
use crate::store::{
    EventMode, NodeGroup, NodeStore, ResultCategory, ResultGroup, ResultsStore, ResultsWindow,
    StoreError,
};

/// The trees of [`results_fixture`]: (tree, branch).
pub const FIXTURE_TREES: [(&str, &str); 3] = [
    ("mainline", "master"),
    ("next", "master"),
    ("stable", "linux-6.6.y"),
];

struct Maker {
    nodes: Vec<Node>,
    base: Timestamp,
    tick: i64,
}

impl Maker {
    fn add(
        &mut self,
        kind: NodeKind,
        name: &str,
        parent: Option<&Node>,
        result: Option<ResultValue>,
        data: Value,
    ) -> Node {
        self.tick += 1;
        let mut n = Node::new(kind, name);
        n.id = Some(ObjectId::from_parts(
            1_710_000_000 + self.tick as u32,
            self.tick as u32,
        ));
        n.created = self.base.plus_secs(self.tick);
        n.state = if result.is_some() {
            State::Done
        } else {
            State::Running
        };
        n.result = result;
        if let Some(p) = parent {
            n.parent = p.id;
            n.path = p.path.clone();
            n.path.push(name.to_owned());
            n.group = p.group.clone();
            let mut d = p.data.clone().unwrap_or_default();
            d.remove("error_code");
            n.data = Some(d);
        }
        if let (Some(d), Value::Object(extra)) = (n.data.as_mut(), data) {
            d.extend(extra);
        }
        if kind == NodeKind::Job || kind == NodeKind::Kbuild {
            n.group = Some(name.to_owned());
        }
        self.nodes.push(n.clone());
        n
    }
}

/// Two revisions of each of [`FIXTURE_TREES`], made like the pipeline makes them: a checkout,
/// two builds (x86_64/gcc passing, arm64/clang failing on the second revision), a boot job with
/// a `login` case, a leaf `boot` job (an infrastructure error on arm64), a kselftest job with a
/// group of cases (one failing, one skipped; `demo_flaky` fails on the second revision), a job
/// still running, and a test hanging from the checkout. Plus a stray `process` node.
pub fn results_fixture() -> Vec<Node> {
    use ResultValue::{Fail, Incomplete, Pass, Skip};
    let base = Timestamp::parse("2024-03-01T00:00:00").unwrap_or_else(|_| Timestamp::now());
    let mut m = Maker {
        nodes: Vec::new(),
        base,
        tick: 0,
    };
    for (t, (tree, branch)) in FIXTURE_TREES.iter().enumerate() {
        for rev in 0..2 {
            let commit = format!("{:040x}", 0xabc0 + t * 16 + rev);
            let mut checkout = Node::new(NodeKind::Checkout, "checkout");
            m.tick += 100;
            checkout.id = Some(ObjectId::from_parts(
                1_710_000_000 + m.tick as u32,
                m.tick as u32,
            ));
            checkout.created = m.base.plus_secs(m.tick);
            checkout.state = State::Done;
            checkout.result = Some(Pass);
            checkout.data = json!({"kernel_revision": {"tree": tree, "branch": branch,
                "url": format!("https://git.example.org/{tree}.git"), "commit": commit,
                "describe": format!("v6.{t}-{rev}")}})
            .as_object()
            .cloned();
            m.nodes.push(checkout.clone());
            for (arch, compiler, ok) in
                [("x86_64", "gcc-12", true), ("arm64", "clang-17", rev == 0)]
            {
                let build = m.add(
                    NodeKind::Kbuild,
                    &format!("kbuild-{compiler}-{arch}"),
                    Some(&checkout),
                    Some(if ok { Pass } else { Fail }),
                    json!({"arch": arch, "compiler": compiler, "defconfig": "defconfig",
                           "config_full": "defconfig", "runtime": "k8s", "platform": "kubernetes"}),
                );
                if !ok {
                    continue;
                }
                let platform = if arch == "x86_64" {
                    "qemu-x86"
                } else {
                    "rk3399"
                };
                let lab = json!({"platform": platform, "runtime": format!("lava-{arch}")});
                let boot = m.add(NodeKind::Job, "boot", Some(&build), Some(Pass), lab.clone());
                m.add(NodeKind::Test, "login", Some(&boot), Some(Pass), json!({}));
                let mut leaf_data = lab.clone();
                if arch == "arm64" {
                    leaf_data["error_code"] = json!("Infrastructure");
                    leaf_data["error_msg"] = json!("device lost");
                }
                m.add(
                    NodeKind::Job,
                    "boot",
                    Some(&build),
                    Some(if arch == "arm64" { Incomplete } else { Pass }),
                    leaf_data,
                );
                let job = m.add(
                    NodeKind::Job,
                    "kselftest-demo",
                    Some(&build),
                    Some(Fail),
                    lab.clone(),
                );
                let group = m.add(
                    NodeKind::Test,
                    "demo_math",
                    Some(&job),
                    Some(Fail),
                    json!({}),
                );
                m.add(
                    NodeKind::Test,
                    "demo_math_add",
                    Some(&group),
                    Some(Pass),
                    json!({}),
                );
                m.add(
                    NodeKind::Test,
                    "demo_math_overflow",
                    Some(&group),
                    Some(Fail),
                    json!({"error_msg": "overflow"}),
                );
                m.add(
                    NodeKind::Test,
                    "demo_flaky",
                    Some(&job),
                    Some(if rev == 0 { Pass } else { Fail }),
                    json!({}),
                );
                m.add(
                    NodeKind::Test,
                    "demo_optional",
                    Some(&job),
                    Some(Skip),
                    json!({}),
                );
                m.add(NodeKind::Job, "ltp", Some(&build), None, lab);
            }
            m.add(
                NodeKind::Test,
                "boot",
                Some(&checkout),
                Some(Pass),
                json!({"platform": "qemu-x86"}),
            );
        }
    }
    m.add(NodeKind::Process, "cleanup", None, None, json!({"arch": 7}));
    m.nodes
}

fn reference(
    nodes: &[Node],
    scope: &Filter,
    group_by: &[String],
) -> (Vec<ResultGroup>, Vec<NodeGroup>) {
    let mut tally = ResultTally::new(nodes);
    for n in nodes.iter().filter(|n| scope.matches_node(n)) {
        tally.add(n, group_by);
    }
    (tally.result_groups(), tally.node_groups())
}

fn fields(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

const SCOPES: &[&[(&str, &str)]] = &[
    &[],
    &[
        ("data.kernel_revision.tree", "mainline"),
        ("data.kernel_revision.branch", "master"),
    ],
    &[("data.arch", "arm64")],
    &[
        ("data.arch__in", "x86_64,arm64"),
        ("result__in", "fail,skip"),
    ],
    &[("data.platform", "qemu-x86"), ("result", "null")],
    &[("kind", "kbuild")],
    &[("name__re", "^demo_")],
];

const GROUPINGS: &[&[&str]] = &[
    &[],
    &[
        "data.kernel_revision.tree",
        "data.kernel_revision.branch",
        "data.kernel_revision.commit",
    ],
    &["data.arch"],
    &["data.platform", "kind"],
    &["data.error_code"],
];

/// The results fixture, inserted into `store` without events.
async fn insert_results_fixture<S: NodeStore>(store: &S) -> Vec<Node> {
    let nodes = results_fixture();
    insert(store, nodes.clone(), EventMode::Silent).await;
    nodes
}

/// The filter of one of the [`SCOPES`].
fn scope_filter(pairs: &[(&str, &str)]) -> Filter {
    crate::query::Query::parse(pairs.iter().copied())
        .map(|q| q.filter)
        .unwrap_or_else(|e| panic!("bad scope {pairs:?}: {e}"))
}

/// Builds, boots and tests counted by the store equal the reference, for every scope and
/// grouping, and one revision's counts are those the definition promises.
pub async fn counts_match_reference<S: ResultsStore + NodeStore>(store: &S) {
    let nodes = insert_results_fixture(store).await;
    for pairs in SCOPES {
        let scope = scope_filter(pairs);
        for group in GROUPINGS {
            let group_by = fields(group);
            let mut got = must(
                "count results",
                store.count_results(&scope, &group_by).await,
            )
            .await;
            let (mut want, _) = reference(&nodes, &scope, &group_by);
            sort_groups(&mut got, |g| &g.keys);
            sort_groups(&mut want, |g| &g.keys);
            assert_eq!(got, want, "count_results for {pairs:?} by {group:?}");
        }
    }
    // The first mainline revision, spelled out.
    let rev = filter([(
        "data.kernel_revision.commit",
        "000000000000000000000000000000000000abc0",
    )]);
    let got = must("one revision", store.count_results(&rev, &[]).await).await;
    assert_eq!(got.len(), 1, "one group without group_by");
    let c = got[0].counts;
    assert_eq!((c.builds.pass, c.builds.fail), (2, 0));
    // Per build: boot/login, the leaf boot job; plus the boot under the checkout.
    assert_eq!((c.boots.pass, c.boots.incomplete, c.boots.infra), (4, 1, 1));
    // Per build: add, overflow, flaky, optional, ltp (running: no result).
    assert_eq!(
        (c.tests.pass, c.tests.fail, c.tests.skip, c.tests.null),
        (4, 2, 2, 2)
    );
    let bad = store.count_results(&rev, &fields(&["data.x'y"])).await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
}

/// Result pages: failures first in the reference order, the total of the category, paging by
/// offset and limit, each category apart.
pub async fn find_results_failures_first<S: ResultsStore + NodeStore>(store: &S) {
    let nodes = insert_results_fixture(store).await;
    let tally = ResultTally::new(&nodes);
    for pairs in [SCOPES[0], SCOPES[1], SCOPES[2]] {
        let scope = scope_filter(pairs);
        for category in ResultCategory::ALL {
            let mut want: Vec<&Node> = nodes
                .iter()
                .filter(|n| scope.matches_node(n) && tally.category(n) == Some(category))
                .collect();
            want.sort_by(|a, b| result_order(a, b));
            let ids = |v: &[&Node]| v.iter().map(|n| n.id).collect::<Vec<_>>();
            let (all, total) = must(
                "find results",
                store
                    .find_results(&scope, ResultsWindow::new(category, 0, 1000))
                    .await,
            )
            .await;
            assert_eq!(total, want.len() as u64, "{category:?} total for {pairs:?}");
            let got: Vec<&Node> = all.iter().collect();
            assert_eq!(ids(&got), ids(&want), "{category:?} order for {pairs:?}");
            let (page, total2) = must(
                "find results page",
                store
                    .find_results(&scope, ResultsWindow::new(category, 2, 3))
                    .await,
            )
            .await;
            assert_eq!(total2, total);
            let page: Vec<&Node> = page.iter().collect();
            let want_page: Vec<&Node> = want.iter().skip(2).take(3).copied().collect();
            assert_eq!(
                ids(&page),
                ids(&want_page),
                "{category:?} page for {pairs:?}"
            );
        }
    }
    let (fails, _) = must(
        "tests",
        store
            .find_results(
                &Filter::all(),
                ResultsWindow::new(ResultCategory::Test, 0, 1),
            )
            .await,
    )
    .await;
    assert_eq!(
        fails[0].result,
        Some(ResultValue::Fail),
        "a failure comes first"
    );
}

/// Node counts by result (every node, counted or not) equal the reference.
pub async fn node_results_match_reference<S: ResultsStore + NodeStore>(store: &S) {
    let nodes = insert_results_fixture(store).await;
    for pairs in SCOPES {
        let scope = scope_filter(pairs);
        for group in [&["kind", "state"][..], &["data.runtime"], &[]] {
            let group_by = fields(group);
            let mut got = must(
                "count node results",
                store.count_node_results(&scope, &group_by).await,
            )
            .await;
            let (_, mut want) = reference(&nodes, &scope, &group_by);
            sort_groups(&mut got, |g| &g.keys);
            sort_groups(&mut want, |g| &g.keys);
            assert_eq!(got, want, "count_node_results for {pairs:?} by {group:?}");
        }
    }
}

/// The newest checkout per tree and branch, newest first, limited; the scope narrows it.
pub async fn latest_checkouts_per_branch<S: ResultsStore + NodeStore>(store: &S) {
    let nodes = insert_results_fixture(store).await;
    let latest = must(
        "latest checkouts",
        store.latest_checkouts(&Filter::all(), 10).await,
    )
    .await;
    let names: Vec<(String, String)> = latest
        .iter()
        .map(|n| {
            (
                n.data_str("kernel_revision.tree")
                    .unwrap_or_default()
                    .to_owned(),
                n.data_str("kernel_revision.describe")
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("stable".to_owned(), "v6.2-1".to_owned()),
            ("next".to_owned(), "v6.1-1".to_owned()),
            ("mainline".to_owned(), "v6.0-1".to_owned()),
        ]
    );
    assert!(latest.iter().all(|n| n.kind == "checkout"));
    let one = must("limit", store.latest_checkouts(&Filter::all(), 1).await).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, latest[0].id);
    // Only checkouts created before the second revisions: the first ones.
    let cutoff = nodes
        .iter()
        .filter(|n| n.kind == "checkout")
        .map(|n| n.created)
        .nth(1)
        .unwrap_or_else(Timestamp::now);
    let before = must(
        "scoped",
        store
            .latest_checkouts(
                &filter([
                    ("created__lt", cutoff.to_string().as_str()),
                    ("data.kernel_revision.tree", "mainline"),
                ]),
                10,
            )
            .await,
    )
    .await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0].data_str("kernel_revision.describe"),
        Some("v6.0-0")
    );
}
