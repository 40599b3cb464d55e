use super::*;
use crate::models::NodeKind;
use serde_json::json;

const CONFIG: &str = r#"
trees:
  mainline: {url: "https://git.kernel.org/torvalds/linux.git"}
  next: {url: "https://git.kernel.org/next/linux-next.git"}
build_configs:
  mainline: {tree: mainline, branch: master, priority: high}
  next_master: {tree: next, branch: master}
jobs:
  kbuild-x86: {template: kbuild.jinja2, kind: kbuild, params: {arch: x86_64}, priority: medium}
  baseline: {template: baseline.jinja2, kind: job, params: {url: "{krev}/{arch}/{debarch}"}}
runtimes:
  shell: {lab_type: shell}
  k8s-a: {lab_type: kubernetes}
  k8s-b: {lab_type: kubernetes}
  lava-lab: {lab_type: lava, priority_min: 12, priority_max: 40, rules: {tree: ['!next']}}
platforms:
  shell:
  kubernetes:
  qemu: {arch: arm64, rules: {arch: [arm64]}}
scheduler:
  - job: kbuild-x86
    event: {channel: node, kind: checkout, state: available}
    runtime: {type: kubernetes}
  - job: kbuild-x86
    event: {channel: node, kind: checkout, state: available}
    runtime: {name: shell}
  - job: baseline
    event: {channel: node, kind: kbuild, state: done, result: pass}
    runtime: {name: lava-lab}
    platforms: [qemu]
  - job: baseline
    event: {channel: retry, kind: kbuild}
    runtime: {name: shell}
"#;

fn config() -> PipelineConfig {
    match PipelineConfig::from_yaml_str("test.yaml", CONFIG) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn rules(v: Value) -> Rules {
    Rules::parse(&v).expect("valid rules")
}

fn checkout(tree: &str, branch: &str, version: (i64, i64)) -> Node {
    let mut n = Node::new(NodeKind::Checkout, "checkout");
    n.id = Some(ObjectId::new());
    n.data = Some(obj(json!({"kernel_revision": {
        "tree": tree, "branch": branch, "url": "u", "commit": "c",
        "version": {"version": version.0, "patchlevel": version.1},
        "commit_message": "fix {braces}"
    }})));
    n.treeid = Some("tree-1".into());
    n.submitter = Some(SERVICE_PIPELINE.into());
    n
}

fn child(parent: &Node, kind: NodeKind, name: &str, data: Value) -> Node {
    let mut n = Node::new(kind, name);
    n.id = Some(ObjectId::new());
    n.parent = parent.id;
    n.path = parent
        .path
        .iter()
        .cloned()
        .chain([name.to_owned()])
        .collect();
    n.data = Some(obj(data));
    n
}

fn lookup(nodes: &[&Node]) -> HashMap<ObjectId, Node> {
    nodes
        .iter()
        .filter_map(|n| n.id.map(|id| (id, (*n).clone())))
        .collect()
}

#[test]
fn edge_trigger_fires_once_per_transition() {
    let c = config();
    let created = obj(json!({"op": "created", "kind": "checkout", "state": "available"}));
    assert_eq!(
        get_configs(&c, &created, "node").len(),
        2,
        "creation is level-triggered"
    );
    let rising = obj(
        json!({"op": "updated", "kind": "checkout", "state": "available",
            "result": "pass", "previous_state": "running", "previous_result": null}),
    );
    assert_eq!(get_configs(&c, &rising, "node").len(), 2);
    let again = obj(
        json!({"op": "updated", "kind": "checkout", "state": "available",
            "result": "pass", "previous_state": "available", "previous_result": "pass"}),
    );
    assert!(
        get_configs(&c, &again, "node").is_empty(),
        "already available: no edge"
    );
    let legacy = obj(json!({"op": "updated", "kind": "checkout", "state": "available"}));
    assert_eq!(
        get_configs(&c, &legacy, "node").len(),
        2,
        "no previous info: level"
    );
    // The result is part of the edge: done/fail -> done/pass is a new match.
    let result_edge = obj(json!({"op": "updated", "kind": "kbuild", "state": "done",
            "result": "pass", "previous_state": "done", "previous_result": "fail"}));
    assert_eq!(get_configs(&c, &result_edge, "node").len(), 1);
    // Retry events (no op) match the node-channel entries on the node channel.
    let retry = obj(json!({"kind": "checkout", "state": "available", "retry_counter": 1}));
    assert_eq!(get_configs(&c, &retry, "node").len(), 2);
    assert_eq!(
        get_configs(&c, &obj(json!({"kind": "kbuild"})), "retry").len(),
        1
    );
    let other = obj(json!({"op": "created", "kind": "checkout", "state": "running"}));
    assert!(get_configs(&c, &other, "node").is_empty());
}

#[test]
fn schedule_picks_runtimes_and_platforms() {
    let c = config();
    let loaded: Vec<&RuntimeConfig> = c.runtimes.values().collect();
    let ev = obj(json!({"op": "created", "kind": "checkout", "state": "available"}));
    let s = get_schedule(&c, &ev, "node", &loaded, |_| 1);
    let got: Vec<_> = s
        .iter()
        .map(|c| {
            (
                c.job.name.as_str(),
                c.runtime.name.as_str(),
                c.platform.name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("kbuild-x86", "k8s-b", "kubernetes"),
            ("kbuild-x86", "shell", "shell")
        ]
    );
    // Only the shell runtime loaded: the kubernetes entry is skipped.
    let only_shell = [&c.runtimes["shell"]];
    assert_eq!(
        get_schedule(&c, &ev, "node", &only_shell, random_pick).len(),
        1
    );
    let ev = obj(json!({"op": "created", "kind": "kbuild", "state": "done", "result": "pass"}));
    let s = get_schedule(&c, &ev, "node", &loaded, random_pick);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].platform.name, "qemu");
}

#[tokio::test]
async fn tree_branch_rules() {
    let none = HashMap::new();
    let next = checkout("next", "master", (6, 8));
    let next_pending = checkout("next", "pending-fixes", (6, 8));
    let sashal = checkout("sashal-next", "master", (6, 8));
    let android = checkout("android", "android-mainline", (6, 8));
    let r = rules(json!({"tree": ["next:master", "sashal-next"]}));
    assert!(should_create_node(Some(&r), &next, &none).await);
    assert!(should_create_node(Some(&r), &sashal, &none).await);
    assert!(!should_create_node(Some(&r), &next_pending, &none).await);
    let r = rules(json!({"tree": ["!android"]}));
    assert!(!should_create_node(Some(&r), &android, &none).await);
    assert!(should_create_node(Some(&r), &next, &none).await);
    let r = rules(json!({"tree": ["!next:pending-fixes"]}));
    assert!(!should_create_node(Some(&r), &next_pending, &none).await);
    assert!(should_create_node(Some(&r), &next, &none).await);
    // Only combos, no plain allow: anything that is not the combo is rejected.
    let r = rules(json!({"tree": ["next:master"]}));
    assert!(!should_create_node(Some(&r), &sashal, &none).await);
    // A combo in `tree` accepts the branch too, even if `branch` would reject it.
    let r = rules(json!({"tree": ["next:pending-fixes"], "branch": ["master"]}));
    assert!(should_create_node(Some(&r), &next_pending, &none).await);
    let r = rules(json!({"branch": ["master", "!linux-6.1.y"]}));
    assert!(should_create_node(Some(&r), &sashal, &none).await);
    assert!(!should_create_node(Some(&r), &next_pending, &none).await);
    assert!(should_create_node(None, &android, &none).await);
    assert!(should_create_node(Some(&Rules::default()), &android, &none).await);
}

#[tokio::test]
async fn versions_lists_and_ancestors() {
    let co = checkout("mainline", "master", (6, 7));
    let kbuild = child(
        &co,
        NodeKind::Kbuild,
        "kbuild-x86",
        json!({"arch": "x86_64", "fragments": ["kselftest", "kcidebug"], "kernel_revision": co.data_path("kernel_revision")}),
    );
    let test = child(&kbuild, NodeKind::Job, "baseline", json!({}));
    let map = lookup(&[&co, &kbuild]);
    let min = |v, p| rules(json!({"min_version": {"version": v, "patchlevel": p}}));
    let max = |v, p| rules(json!({"max_version": {"version": v, "patchlevel": p}}));
    assert!(should_create_node(Some(&min(6, 7)), &co, &map).await);
    assert!(!should_create_node(Some(&min(6, 8)), &co, &map).await);
    assert!(should_create_node(Some(&min(5, 19)), &co, &map).await);
    assert!(should_create_node(Some(&max(6, 7)), &co, &map).await);
    assert!(!should_create_node(Some(&max(6, 6)), &co, &map).await);
    assert!(!should_create_node(Some(&max(5, 99)), &co, &map).await);
    // A list value: any denied element rejects; an allow list needs one element.
    let r = rules(json!({"fragments": ["!kcidebug"]}));
    assert!(!should_create_node(Some(&r), &kbuild, &map).await);
    let r = rules(json!({"fragments": ["kselftest"]}));
    assert!(should_create_node(Some(&r), &kbuild, &map).await);
    let r = rules(json!({"fragments": ["lab-setup"]}));
    assert!(!should_create_node(Some(&r), &kbuild, &map).await);
    // Ancestor lookup: the test node has no arch nor tree, its parent has them.
    let r = rules(json!({"arch": ["x86_64"], "tree": ["mainline"]}));
    assert!(should_create_node(Some(&r), &test, &map).await);
    let r = rules(json!({"arch": ["!x86_64"]}));
    assert!(!should_create_node(Some(&r), &test, &map).await);
    // Missing key: rejected with allowed values, accepted with only denied values.
    let r = rules(json!({"board": ["rpi"]}));
    assert!(!should_create_node(Some(&r), &test, &map).await);
    let r = rules(json!({"board": ["!rpi"]}));
    assert!(should_create_node(Some(&r), &test, &map).await);
    // Without the ancestors the tree is unknown: an allow rule rejects.
    let r = rules(json!({"tree": ["mainline"]}));
    assert!(!should_create_node(Some(&r), &test, &HashMap::new()).await);
}

#[test]
fn jobfilter_and_platform_filter() {
    let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let p = path(&["checkout", "kbuild-x86", "baseline"]);
    assert!(jobfilter_allows(None, "baseline", &p));
    assert!(jobfilter_allows(Some(&[]), "baseline", &p));
    assert!(jobfilter_allows(Some(&f(&["baseline"])), "baseline", &p));
    assert!(!jobfilter_allows(Some(&f(&["kunit"])), "baseline", &p));
    assert!(jobfilter_allows(Some(&f(&["kbuild-x86+"])), "baseline", &p));
    assert!(jobfilter_allows(Some(&f(&["baseline+"])), "baseline", &p));
    assert!(!jobfilter_allows(
        Some(&f(&["kbuild-arm64+"])),
        "baseline",
        &p
    ));
    assert!(!jobfilter_allows(Some(&f(&["kbuild-x86"])), "baseline", &p));
    assert!(platform_filter_allows(None, "qemu"));
    assert!(platform_filter_allows(Some(&[]), "qemu"));
    assert!(platform_filter_allows(Some(&f(&["qemu"])), "qemu"));
    assert!(!platform_filter_allows(Some(&f(&["rpi"])), "qemu"));
}

/// `job_node` for `input`, a first try (retry counter 0) on the platform `qemu` with the
/// runtime `runtime`.
async fn first_qemu_job(
    c: &PipelineConfig,
    input: &Node,
    job: &JobConfig,
    runtime: &str,
    lookup: &dyn NodeLookup,
) -> Option<Node> {
    job_node(
        input,
        job,
        &c.runtimes[runtime],
        &c.platforms["qemu"],
        0,
        lookup,
    )
    .await
}

#[tokio::test]
async fn job_nodes_follow_create_job_node() {
    let c = config();
    let co = checkout("mainline", "master", (6, 7));
    let kbuild = child(
        &co,
        NodeKind::Kbuild,
        "kbuild-x86",
        json!({"arch": "arm64", "defconfig": "defconfig", "compiler": "gcc-14",
                   "kernel_revision": co.data_path("kernel_revision")}),
    );
    let map = lookup(&[&co, &kbuild]);
    let job = &c.jobs["baseline"];
    let node = job_node(
        &kbuild,
        job,
        &c.runtimes["lava-lab"],
        &c.platforms["qemu"],
        2,
        &map,
    )
    .await
    .expect("created");
    assert_eq!(node.kind, "job");
    assert_eq!(node.parent, kbuild.id);
    assert_eq!(node.path, ["checkout", "kbuild-x86", "baseline"]);
    assert_eq!(node.group.as_deref(), Some("baseline"));
    assert_eq!(node.retry_counter, 2);
    assert_eq!(
        node.treeid, None,
        "copied from the input (the kbuild has none here)"
    );
    let data = node.data.clone().unwrap_or_default();
    assert_eq!(data["runtime"], "lava-lab");
    assert_eq!(data["platform"], "qemu");
    assert_eq!(data["arch"], "arm64");
    assert_eq!(data["compiler"], "gcc-14");
    assert_eq!(
        data["kernel_revision"]["commit_message"], "fix {braces}",
        "braces in commit messages survive formatting"
    );
    // Platform rules (arch: [arm64]) reject an x86 kbuild; runtime rules reject next.
    let mut x86 = kbuild.clone();
    x86.data = Some(obj(
        json!({"arch": "x86_64", "kernel_revision": co.data_path("kernel_revision")}),
    ));
    assert!(
        first_qemu_job(&c, &x86, job, "lava-lab", &map)
            .await
            .is_none()
    );
    let next = checkout("next", "master", (6, 7));
    let kb_next = child(
        &next,
        NodeKind::Kbuild,
        "kbuild-x86",
        json!({"arch": "arm64", "kernel_revision": next.data_path("kernel_revision")}),
    );
    assert!(
        first_qemu_job(&c, &kb_next, job, "lava-lab", &map)
            .await
            .is_none()
    );
    // Retry filters.
    let mut filtered = kbuild.clone();
    filtered.jobfilter = Some(vec!["kunit".into()]);
    assert!(
        first_qemu_job(&c, &filtered, job, "shell", &map)
            .await
            .is_none()
    );
    filtered.jobfilter = Some(vec!["baseline".into()]);
    filtered.platform_filter = Some(vec!["rpi".into()]);
    assert!(
        first_qemu_job(&c, &filtered, job, "shell", &map)
            .await
            .is_none()
    );
    filtered.platform_filter = Some(vec!["qemu".into()]);
    let n = job_node(
        &filtered,
        job,
        &c.runtimes["shell"],
        &c.platforms["qemu"],
        1,
        &map,
    )
    .await;
    assert_eq!(n.map(|n| n.jobfilter), Some(Some(vec!["baseline".into()])));
}

#[test]
fn lava_priority_math() {
    let lab = LabPriority {
        priority: None,
        min: Some(12),
        max: Some(40),
    };
    let high = json!("high");
    // Upstream test: a pipeline job of a high-priority tree on a 12..40 lab.
    assert_eq!(
        lava_priority(Some(SERVICE_PIPELINE), None, Some(&high), None, lab),
        (12.0 + 28.0 * 60.0 / 100.0) as i64
    );
    assert_eq!(
        lava_priority(Some(SERVICE_PIPELINE), None, Some(&high), None, lab),
        28
    );
    // Job priority when no tree priority; default 20.
    assert_eq!(
        lava_priority(
            Some(SERVICE_PIPELINE),
            None,
            None,
            Some(Priority::Medium),
            lab
        ),
        (40.0 * 28.0 / 100.0 + 12.0) as i64
    );
    assert_eq!(
        lava_priority(
            Some(SERVICE_PIPELINE),
            None,
            None,
            None,
            LabPriority::default()
        ),
        20
    );
    // A person's job: data.priority, default 80, numbers clamped.
    assert_eq!(
        lava_priority(Some("alice"), None, None, None, LabPriority::default()),
        80
    );
    assert_eq!(
        lava_priority(None, Some(&json!(150)), None, None, LabPriority::default()),
        100
    );
    assert_eq!(
        lava_priority(
            Some("alice"),
            Some(&json!("low")),
            None,
            None,
            LabPriority::default()
        ),
        20
    );
    // A lab `priority` scales instead of the range.
    let lab = LabPriority {
        priority: Some(50),
        min: Some(50),
        max: Some(50),
    };
    assert_eq!(
        lava_priority(Some(SERVICE_PIPELINE), None, Some(&high), None, lab),
        30
    );
    let c = config();
    let broonie = LabPriority::from_runtime(&c.runtimes["lava-lab"]);
    assert_eq!(
        broonie,
        LabPriority {
            priority: None,
            min: Some(12),
            max: Some(40)
        }
    );
}

#[test]
fn queue_gate_math() {
    let c = config();
    let job = &c.jobs["kbuild-x86"];
    assert_eq!(
        base_priority(&c, &checkout("mainline", "master", (6, 7)), job),
        60
    );
    assert_eq!(
        base_priority(&c, &checkout("next", "master", (6, 7)), job),
        40,
        "job priority"
    );
    let mut j = job.clone();
    j.priority = None;
    assert_eq!(
        base_priority(&c, &checkout("next", "master", (6, 7)), &j),
        20
    );
    // 50 deep × 2 devices × (1 + 0.6 × (2 − 1)) = 160.
    assert_eq!(queue_limit(50, 2, 60, 2.0), 160);
    assert_eq!(queue_limit(50, 2, 20, 0.5), 100, "factor clamped to 1");
    assert_eq!(queue_limit(10, 0, 60, 2.0), 0);
    let q = QueueSettings::from_runtime(&c.runtimes["lava-lab"]);
    assert_eq!(
        q,
        QueueSettings {
            max_queue_depth: 50,
            disabled: false,
            priority_factor: 2.0
        }
    );
}

#[test]
fn duplicate_guard_window_and_lru() {
    let key = |i: i64| {
        (
            "n".to_owned(),
            "j".to_owned(),
            "r".to_owned(),
            "p".to_owned(),
            i,
        )
    };
    let mut g = DuplicateGuard::new(Duration::from_secs(600), 3);
    let t0 = Instant::now();
    assert!(!g.check(key(0), t0));
    assert!(g.check(key(0), t0 + Duration::from_secs(599)));
    assert!(
        !g.check(key(0), t0 + Duration::from_secs(600)),
        "window passed"
    );
    assert!(!g.check(key(1), t0));
    assert!(!g.check(key(2), t0));
    assert!(
        g.check(key(0), t0 + Duration::from_secs(601)),
        "0 used again: most recent"
    );
    assert!(!g.check(key(3), t0), "evicts the least recently used (1)");
    assert_eq!(g.len(), 3);
    assert!(
        !g.check(key(1), t0 + Duration::from_secs(1)),
        "1 was evicted"
    );
    g.forget(&key(1));
    assert!(!g.check(key(1), t0 + Duration::from_secs(2)));
    let big = DuplicateGuard::default();
    assert!(big.is_empty());
}

#[test]
fn frequency_threshold() {
    let c = config();
    let mut job = c.jobs["baseline"].clone();
    assert_eq!(job_frequency(&job), None);
    job.params.insert("frequency".into(), json!("1h"));
    assert_eq!(job_frequency(&job), Some(Duration::from_secs(3600)));
    job.params.insert("frequency".into(), json!("0m"));
    assert_eq!(job_frequency(&job), None, "under 60 s does not apply");
}
