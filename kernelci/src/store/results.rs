//! What is counted: the one definition of builds, boots and tests shared by the web views,
//! `/metrics` and the e-mail report, and the values [`ResultsStore`](super::ResultsStore)
//! returns.
//!
//! # The definition
//!
//! - A **build** is a `kbuild` node.
//! - A **test case** is a `test` or `job` node that no node has as its parent (a leaf): a job
//!   with results below it is not a case, its results are; a job that never produced results
//!   (incomplete, still running) is one. Groups of tests (`demo_math` above
//!   `demo_math.demo_math_overflow`) are not cases either.
//! - A **boot** is a test case whose path below its build is `boot` or starts with `boot.`
//!   (`path[2] == "boot"` below a kbuild; `path[1] == "boot"` for tests hanging from the
//!   checkout); every other test case is a **test**. A kbuild named `boot` would make its
//!   tests boots: don't name builds so.
//! - A case's **status** is its `result`: `pass`, `fail`, or **inconclusive** (`skip`,
//!   `incomplete`, or none yet). An **infrastructure error** is an `incomplete` result whose
//!   `data.error_code` is one of [`INFRA_ERROR_CODES`] (every known code but `Test`, which is
//!   the test's own error): the health page keeps them apart from test failures.
//!
//! [`ResultTally`] counts nodes by this definition in memory: it is the reference every store
//! implementation is checked against (`testsuite::store::results`) and what the report uses.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::kinds::ERROR_CODE_NAMES;
use crate::models::{Node, ObjectId, ResultValue};

/// Which result items [`super::ResultsStore::find_results`] returns: the items of `category`,
/// skipping `offset` of them, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultsWindow {
    /// The kind of items.
    pub category: ResultCategory,
    /// How many to skip.
    pub offset: u64,
    /// The most to return.
    pub limit: u64,
}

impl ResultsWindow {
    /// The items of `category` from `offset`, at most `limit`.
    pub const fn new(category: ResultCategory, offset: u64, limit: u64) -> ResultsWindow {
        ResultsWindow {
            category,
            offset,
            limit,
        }
    }

    /// The window's part of `items` (already in result order): for stores that sort in memory.
    pub fn page<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(self.limit).unwrap_or(usize::MAX))
            .collect()
    }
}

/// The kinds of counted items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultCategory {
    /// A `kbuild` node.
    Build,
    /// A test case whose path below its build starts with `boot`.
    Boot,
    /// Every other test case.
    Test,
}

impl ResultCategory {
    /// Every category, in display order.
    pub const ALL: [ResultCategory; 3] = [
        ResultCategory::Build,
        ResultCategory::Boot,
        ResultCategory::Test,
    ];

    /// The wire name (`build`, `boot`, `test`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResultCategory::Build => "build",
            ResultCategory::Boot => "boot",
            ResultCategory::Test => "test",
        }
    }

    /// Reads a wire name; the plural (`builds`) is accepted too.
    pub fn parse(s: &str) -> Option<ResultCategory> {
        match s {
            "build" | "builds" => Some(ResultCategory::Build),
            "boot" | "boots" => Some(ResultCategory::Boot),
            "test" | "tests" => Some(ResultCategory::Test),
            _ => None,
        }
    }
}

/// The three status groups every count is shown in.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusGroup {
    /// `pass`.
    Pass,
    /// `fail`.
    Fail,
    /// `skip`, `incomplete` or no result yet (the default: nothing known).
    #[default]
    Inconclusive,
}

impl StatusGroup {
    /// Every group, in display order.
    pub const ALL: [StatusGroup; 3] = [
        StatusGroup::Pass,
        StatusGroup::Fail,
        StatusGroup::Inconclusive,
    ];

    /// The group of a result.
    pub fn of(result: Option<ResultValue>) -> StatusGroup {
        match result {
            Some(ResultValue::Pass) => StatusGroup::Pass,
            Some(ResultValue::Fail) => StatusGroup::Fail,
            _ => StatusGroup::Inconclusive,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusGroup::Pass => "pass",
            StatusGroup::Fail => "fail",
            StatusGroup::Inconclusive => "inconclusive",
        }
    }

    /// Reads a wire name.
    pub fn parse(s: &str) -> Option<StatusGroup> {
        match s {
            "pass" => Some(StatusGroup::Pass),
            "fail" => Some(StatusGroup::Fail),
            "inconclusive" => Some(StatusGroup::Inconclusive),
            _ => None,
        }
    }

    /// The `result` values of the group (`None` is "no result").
    pub fn results(self) -> &'static [Option<ResultValue>] {
        match self {
            StatusGroup::Pass => &[Some(ResultValue::Pass)],
            StatusGroup::Fail => &[Some(ResultValue::Fail)],
            StatusGroup::Inconclusive => {
                &[Some(ResultValue::Skip), Some(ResultValue::Incomplete), None]
            }
        }
    }
}

/// `data.error_code` values that make an `incomplete` result an infrastructure error: every
/// known error code but `Test`.
pub const INFRA_ERROR_CODES: [&str; 14] = all_but(&ERROR_CODE_NAMES, "Test");

/// `names` without `dropped` (which must stand in it once), in their order.
const fn all_but<const N: usize, const M: usize>(
    names: &[&'static str; N],
    dropped: &str,
) -> [&'static str; M] {
    let mut out = [""; M];
    let (mut i, mut o) = (0, 0);
    while i < N {
        if !str_eq(names[i], dropped) {
            out[o] = names[i];
            o += 1;
        }
        i += 1;
    }
    assert!(o == M, "the dropped name must stand once in the list");
    out
}

/// `a == b`, in a const context.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The path segment that makes a test case a boot.
pub const BOOT_SEGMENT: &str = "boot";

/// Counts by result.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// `pass`.
    pub pass: u64,
    /// `fail`.
    pub fail: u64,
    /// `skip`.
    pub skip: u64,
    /// `incomplete` (infrastructure errors included).
    pub incomplete: u64,
    /// No result yet.
    pub null: u64,
    /// The `incomplete` ones that are infrastructure errors.
    pub infra: u64,
}

impl StatusCounts {
    /// Counts one item.
    pub fn add(&mut self, result: Option<ResultValue>, infra: bool) {
        self.add_n(result, infra, 1);
    }

    /// Counts `n` items with the same result.
    pub fn add_n(&mut self, result: Option<ResultValue>, infra: bool, n: u64) {
        match result {
            Some(ResultValue::Pass) => self.pass += n,
            Some(ResultValue::Fail) => self.fail += n,
            Some(ResultValue::Skip) => self.skip += n,
            Some(ResultValue::Incomplete) => {
                self.incomplete += n;
                if infra {
                    self.infra += n;
                }
            }
            None => self.null += n,
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &StatusCounts) {
        self.pass += other.pass;
        self.fail += other.fail;
        self.skip += other.skip;
        self.incomplete += other.incomplete;
        self.null += other.null;
        self.infra += other.infra;
    }

    /// `skip + incomplete + null`.
    pub fn inconclusive(&self) -> u64 {
        self.skip + self.incomplete + self.null
    }

    /// Every item.
    pub fn total(&self) -> u64 {
        self.pass + self.fail + self.inconclusive()
    }

    /// The count of a status group.
    pub fn group(&self, group: StatusGroup) -> u64 {
        match group {
            StatusGroup::Pass => self.pass,
            StatusGroup::Fail => self.fail,
            StatusGroup::Inconclusive => self.inconclusive(),
        }
    }
}

/// Counts of builds, boots and tests.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultCounts {
    /// Builds.
    pub builds: StatusCounts,
    /// Boots.
    pub boots: StatusCounts,
    /// Tests.
    pub tests: StatusCounts,
}

impl ResultCounts {
    /// The counts of one category.
    pub fn get(&self, category: ResultCategory) -> &StatusCounts {
        match category {
            ResultCategory::Build => &self.builds,
            ResultCategory::Boot => &self.boots,
            ResultCategory::Test => &self.tests,
        }
    }

    /// The counts of one category, to change.
    pub fn get_mut(&mut self, category: ResultCategory) -> &mut StatusCounts {
        match category {
            ResultCategory::Build => &mut self.builds,
            ResultCategory::Boot => &mut self.boots,
            ResultCategory::Test => &mut self.tests,
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ResultCounts) {
        for c in ResultCategory::ALL {
            self.get_mut(c).merge(other.get(c));
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        ResultCategory::ALL
            .iter()
            .all(|c| self.get(*c).total() == 0)
    }
}

/// One group of a result count: the values of the `group_by` fields and the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultGroup {
    /// The group's values of the `group_by` fields, in order (null for missing).
    pub keys: Vec<Value>,
    /// The counts.
    pub counts: ResultCounts,
}

/// One group of a node count: the values of the `group_by` fields and the counts by result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeGroup {
    /// The group's values of the `group_by` fields, in order (null for missing).
    pub keys: Vec<Value>,
    /// The counts by result.
    pub counts: StatusCounts,
}

/// Whether a kind may be a test case (`test`, `job`).
pub fn is_case_kind(kind: &str) -> bool {
    matches!(kind, "test" | "job")
}

/// Whether `path` (a node's full path, from the checkout) is a boot's.
pub fn is_boot_path(path: &[String]) -> bool {
    path.get(1).is_some_and(|s| s == BOOT_SEGMENT) || path.get(2).is_some_and(|s| s == BOOT_SEGMENT)
}

/// Whether `node` is an infrastructure error (`incomplete` with an infrastructure code).
pub fn is_infra_error(node: &Node) -> bool {
    node.result == Some(ResultValue::Incomplete)
        && node
            .data_str("error_code")
            .is_some_and(|c| INFRA_ERROR_CODES.contains(&c))
}

/// The category of `node`, given whether any node has it as parent; `None`: not counted.
pub fn classify(node: &Node, has_children: bool) -> Option<ResultCategory> {
    if node.kind == "kbuild" {
        return Some(ResultCategory::Build);
    }
    if !is_case_kind(&node.kind) || has_children {
        return None;
    }
    Some(if is_boot_path(&node.path) {
        ResultCategory::Boot
    } else {
        ResultCategory::Test
    })
}

/// The path a case is shown with: its path below its job (the node named like its `group`,
/// found in the path), dot-joined; the job itself (or a node without a job in its path) shows
/// its path below the checkout.
pub fn display_path(node: &Node) -> String {
    let below = node
        .group
        .as_deref()
        .and_then(|g| node.path.iter().position(|s| s == g))
        .filter(|i| i + 1 < node.path.len());
    let from = match below {
        Some(i) => i + 1,
        None => 1.min(node.path.len()),
    };
    node.path[from..].join(".")
}

/// Checks the `group_by` fields of a count: dotted names of letters, digits, `_` and `-`.
pub fn check_group_fields(group_by: &[String]) -> Result<(), String> {
    for f in group_by {
        let ok = !f.is_empty()
            && f.split('.').all(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if !ok {
            return Err(format!("cannot group by '{f}'"));
        }
    }
    Ok(())
}

/// The value of a dotted field in a node document (null when missing).
pub fn field_value(doc: &Value, field: &str) -> Value {
    let mut cur = doc;
    for seg in field.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return Value::Null,
        }
    }
    cur.clone()
}

/// Counts nodes by the definition, in memory: the reference the stores are checked against,
/// and the report's counter. Give it every node that may be a parent of a counted one
/// ([`ResultTally::parents`]), then the nodes to count.
#[derive(Debug, Default)]
pub struct ResultTally {
    parents: HashSet<ObjectId>,
    groups: BTreeMap<String, ResultGroup>,
    nodes: BTreeMap<String, NodeGroup>,
}

impl ResultTally {
    /// A tally that judges leaves against `nodes` (every node with a parent marks it).
    pub fn new<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> ResultTally {
        ResultTally {
            parents: Self::parents(nodes),
            ..ResultTally::default()
        }
    }

    /// The ids that some node of `nodes` has as parent.
    pub fn parents<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> HashSet<ObjectId> {
        nodes.into_iter().filter_map(|n| n.parent).collect()
    }

    /// Whether some node has `node` as parent.
    pub fn has_children(&self, node: &Node) -> bool {
        node.id.is_some_and(|id| self.parents.contains(&id))
    }

    /// The category of `node` (see [`classify`]).
    pub fn category(&self, node: &Node) -> Option<ResultCategory> {
        classify(node, self.has_children(node))
    }

    /// Counts `node` into its group of `group_by` (as a result, when it is counted; as a
    /// node, always).
    pub fn add(&mut self, node: &Node, group_by: &[String]) {
        let doc = node.to_value();
        let keys: Vec<Value> = group_by.iter().map(|f| field_value(&doc, f)).collect();
        let key = serde_json::to_string(&keys).unwrap_or_default();
        let infra = is_infra_error(node);
        self.nodes
            .entry(key.clone())
            .or_insert_with(|| NodeGroup {
                keys: keys.clone(),
                ..NodeGroup::default()
            })
            .counts
            .add(node.result, infra);
        if let Some(category) = self.category(node) {
            self.groups
                .entry(key)
                .or_insert_with(|| ResultGroup {
                    keys,
                    ..ResultGroup::default()
                })
                .counts
                .get_mut(category)
                .add(node.result, infra);
        }
    }

    /// The result groups, in key order (groups with no counted item left out).
    pub fn result_groups(&self) -> Vec<ResultGroup> {
        self.groups.values().cloned().collect()
    }

    /// The node groups, in key order.
    pub fn node_groups(&self) -> Vec<NodeGroup> {
        self.nodes.values().cloned().collect()
    }
}

/// Sorts groups by their keys' JSON text (stores return groups in any order).
pub fn sort_groups<T>(groups: &mut [T], keys: impl Fn(&T) -> &Vec<Value>) {
    groups.sort_by_key(|g| serde_json::to_string(keys(g)).unwrap_or_default());
}

/// The order [`ResultsStore::find_results`](super::ResultsStore::find_results) returns rows
/// in: failures first, then incomplete, no result, skipped, passes; within a status, by the
/// JSON text of the path (`["checkout","kbuild",...]`, compared byte by byte), then id.
pub fn result_order(a: &Node, b: &Node) -> std::cmp::Ordering {
    fn rank(r: Option<ResultValue>) -> u8 {
        match r {
            Some(ResultValue::Fail) => 0,
            Some(ResultValue::Incomplete) => 1,
            None => 2,
            Some(ResultValue::Skip) => 3,
            Some(ResultValue::Pass) => 4,
        }
    }
    fn path_key(n: &Node) -> String {
        serde_json::to_string(&n.path).unwrap_or_default()
    }
    rank(a.result)
        .cmp(&rank(b.result))
        .then_with(|| path_key(a).cmp(&path_key(b)))
        .then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::NodeKind;

    #[test]
    fn infra_error_codes_are_every_error_code_but_test() {
        assert!(!INFRA_ERROR_CODES.contains(&"Test"));
        let others: Vec<&str> = ERROR_CODE_NAMES
            .into_iter()
            .filter(|c| *c != "Test")
            .collect();
        assert_eq!(INFRA_ERROR_CODES.to_vec(), others);
    }

    fn node(kind: NodeKind, path: &[&str], result: Option<ResultValue>) -> Node {
        let mut n = Node::new(kind, *path.last().unwrap_or(&"x"));
        n.id = Some(ObjectId::new());
        n.path = path.iter().map(|s| (*s).to_owned()).collect();
        n.result = result;
        n
    }

    #[test]
    fn demo_revision_counts_the_one_failing_case_once() {
        let checkout = node(NodeKind::Checkout, &["checkout"], Some(ResultValue::Pass));
        let mut build = node(
            NodeKind::Kbuild,
            &["checkout", "kbuild-demo-x86"],
            Some(ResultValue::Pass),
        );
        build.parent = checkout.id;
        let mut job = node(
            NodeKind::Job,
            &["checkout", "kbuild-demo-x86", "kselftest-demo"],
            Some(ResultValue::Fail),
        );
        job.parent = build.id;
        job.group = Some("kselftest-demo".into());
        let leaf = |parent: &Node, name: &str, r| {
            let mut path: Vec<&str> = parent.path.iter().map(String::as_str).collect();
            path.push(name);
            let mut n = node(NodeKind::Test, &path, Some(r));
            n.parent = parent.id;
            n.group = Some("kselftest-demo".into());
            n
        };
        let group = leaf(&job, "demo_math", ResultValue::Fail);
        let nodes = vec![
            leaf(&job, "demo_boot", ResultValue::Pass),
            leaf(&group, "demo_math_add", ResultValue::Pass),
            leaf(&group, "demo_math_overflow", ResultValue::Fail),
            leaf(&job, "demo_optional", ResultValue::Skip),
            group.clone(),
            job.clone(),
            build.clone(),
            checkout,
        ];
        let mut tally = ResultTally::new(&nodes);
        for n in &nodes {
            tally.add(n, &[]);
        }
        let groups = tally.result_groups();
        assert_eq!(groups.len(), 1);
        let c = groups[0].counts;
        assert_eq!((c.builds.pass, c.builds.total()), (1, 1));
        assert_eq!(
            (c.tests.pass, c.tests.fail, c.tests.inconclusive()),
            (2, 1, 1)
        );
        assert_eq!(c.boots.total(), 0);
        assert_eq!(display_path(&nodes[2]), "demo_math.demo_math_overflow");
        assert_eq!(display_path(&job), "kbuild-demo-x86.kselftest-demo");
    }

    #[test]
    fn boots_infra_errors_and_groups() {
        let mut boot = node(
            NodeKind::Job,
            &["checkout", "kbuild", "boot"],
            Some(ResultValue::Incomplete),
        );
        boot.data = serde_json::json!({"error_code": "Infrastructure"})
            .as_object()
            .cloned();
        assert_eq!(classify(&boot, false), Some(ResultCategory::Boot));
        assert!(is_infra_error(&boot));
        let login = node(
            NodeKind::Test,
            &["checkout", "kbuild", "boot", "login"],
            None,
        );
        assert_eq!(classify(&login, false), Some(ResultCategory::Boot));
        let direct = node(
            NodeKind::Test,
            &["checkout", "boot"],
            Some(ResultValue::Pass),
        );
        assert_eq!(classify(&direct, false), Some(ResultCategory::Boot));
        let deep = node(
            NodeKind::Test,
            &["checkout", "kbuild", "baseline", "boot"],
            None,
        );
        assert_eq!(classify(&deep, false), Some(ResultCategory::Test));
        let mut own = boot.clone();
        own.data = serde_json::json!({"error_code": "Test"})
            .as_object()
            .cloned();
        assert!(!is_infra_error(&own));
        assert_eq!(classify(&boot, true), None);
        let mut counts = StatusCounts::default();
        counts.add(Some(ResultValue::Incomplete), true);
        counts.add(None, false);
        counts.add(Some(ResultValue::Skip), false);
        assert_eq!(
            (counts.inconclusive(), counts.infra, counts.total()),
            (3, 1, 3)
        );
        assert!(check_group_fields(&["data.kernel_revision.tree".into()]).is_ok());
        assert!(check_group_fields(&["data..x".into()]).is_err());
        assert!(check_group_fields(&["a'b".into()]).is_err());
    }
}
