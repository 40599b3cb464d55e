//! The typed requests and answers of the viewer's data endpoints (`/viewer/api/...`), shared by
//! the JSON endpoints and the HTML pages.

use std::collections::BTreeMap;

use kernelci::models::{Node, ResultValue};
use kernelci::query::{Filter, Op, Operand, Scalar};
use kernelci::store::results::{ResultCategory, StatusGroup, display_path, is_infra_error};
use kernelci::store::{ResultCounts, StatusCounts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{ApiError, Request};

/// The facets a revision's results can be filtered by: (query parameter, node field).
pub const FACETS: [(&str, &str); 5] = [
    ("arch", "data.arch"),
    ("config", "data.config_full"),
    ("compiler", "data.compiler"),
    ("platform", "data.platform"),
    ("runtime", "data.runtime"),
];

/// Most values accepted for one facet (a longer list is a 400).
const MAX_FACET_VALUES: usize = 50;

/// Result filters, kept in the URL: each parameter may repeat; values of one facet are ORed,
/// facets are ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResultFilters {
    /// `status`: `pass`, `fail`, `inconclusive`.
    pub status: Vec<StatusGroup>,
    /// The facet values by parameter name (`arch` → [`x86_64`], ...).
    pub facets: BTreeMap<String, Vec<String>>,
}

impl ResultFilters {
    /// Reads the filters from a request's query (unknown parameters are ignored).
    pub fn from_request(req: &Request) -> Result<ResultFilters, ApiError> {
        let mut f = ResultFilters::default();
        for (k, v) in &req.query {
            if v.is_empty() {
                continue;
            }
            if k == "status" {
                let s = StatusGroup::parse(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Invalid status '{v}'; use pass, fail or inconclusive"
                    ))
                })?;
                if !f.status.contains(&s) {
                    f.status.push(s);
                }
            } else if FACETS.iter().any(|(name, _)| name == k) {
                let list = f.facets.entry(k.clone()).or_default();
                if list.len() >= MAX_FACET_VALUES {
                    return Err(ApiError::bad_request(format!("Too many values for '{k}'")));
                }
                if !list.contains(v) {
                    list.push(v.clone());
                }
            }
        }
        Ok(f)
    }

    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.status.is_empty() && self.facets.values().all(Vec::is_empty)
    }

    /// `filter` narrowed by these filters.
    pub fn apply(&self, mut filter: Filter) -> Filter {
        for (name, field) in FACETS {
            if let Some(values) = self.facets.get(name).filter(|v| !v.is_empty()) {
                let list = values.iter().map(|v| Scalar::Str(v.clone())).collect();
                filter = filter.and(field, Op::In, Operand::List(list));
            }
        }
        if !self.status.is_empty() {
            let list = self
                .status
                .iter()
                .flat_map(|s| s.results())
                .map(|r| match r {
                    Some(r) => Scalar::Str(r.as_str().to_owned()),
                    None => Scalar::Null,
                })
                .collect();
            filter = filter.and("result", Op::In, Operand::List(list));
        }
        filter
    }

    /// The filters as query pairs (for links that keep them).
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .status
            .iter()
            .map(|s| ("status".to_owned(), s.as_str().to_owned()))
            .collect();
        for (name, values) in &self.facets {
            out.extend(values.iter().map(|v| (name.clone(), v.clone())));
        }
        out
    }

    /// The filters as a query string (without `?`; empty when none).
    pub fn query_string(&self) -> String {
        encode_pairs(&self.pairs())
    }

    /// A stable text of the filters, for cache keys.
    pub fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Encodes query pairs (`a=1&b=x%20y`).
pub fn encode_pairs(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A revision: its checkout node and kernel revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RevisionInfo {
    /// The checkout node id.
    pub id: String,
    /// Tree name.
    pub tree: String,
    /// Branch.
    pub branch: String,
    /// Repository URL.
    pub url: String,
    /// Commit.
    pub commit: String,
    /// `git describe`.
    pub describe: Option<String>,
    /// When the checkout was created.
    pub created: String,
    /// The checkout's state.
    pub state: String,
    /// The checkout's result.
    pub result: Option<ResultValue>,
}

impl RevisionInfo {
    /// The revision of a checkout node.
    pub fn of(node: &Node) -> RevisionInfo {
        let s = |f: &str| {
            node.data_str(&format!("kernel_revision.{f}"))
                .unwrap_or_default()
                .to_owned()
        };
        RevisionInfo {
            id: node.id.map(|i| i.to_hex()).unwrap_or_default(),
            tree: s("tree"),
            branch: s("branch"),
            url: s("url"),
            commit: s("commit"),
            describe: node.data_str("kernel_revision.describe").map(str::to_owned),
            created: node.created.to_string(),
            state: node.state.as_str().to_owned(),
            result: node.result,
        }
    }

    /// The commit shortened to 12 characters.
    pub fn short_commit(&self) -> &str {
        self.commit.get(..12).unwrap_or(&self.commit)
    }
}

/// `GET /viewer/api/trees`: the landing page's data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TreesResponse {
    /// The time window, in days.
    pub days: u32,
    /// Checkouts created since this time are considered.
    pub since: String,
    /// One row per tree and branch: its latest revision in the window and its counts.
    pub items: Vec<TreeRow>,
}

/// One tree/branch of the landing page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TreeRow {
    /// The latest revision.
    pub revision: RevisionInfo,
    /// Its builds, boots and tests.
    pub counts: ResultCounts,
}

/// One value of a breakdown and its counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BreakdownRow {
    /// The facet value (null: not set on the nodes).
    pub value: Option<String>,
    /// The counts.
    pub counts: ResultCounts,
}

/// `GET /viewer/api/checkout/{id}`: a revision's summary under the filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckoutSummary {
    /// The revision.
    pub checkout: RevisionInfo,
    /// The filters applied.
    pub filters: ResultFilters,
    /// Builds, boots and tests under the filters.
    pub counts: ResultCounts,
    /// Per facet (`arch`, `config`, ...), the counts by value, under the filters.
    pub breakdowns: BTreeMap<String, Vec<BreakdownRow>>,
    /// Per facet, every value present in the revision (for the filter menus).
    pub facets: BTreeMap<String, Vec<String>>,
}

/// One build, boot or test in a list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResultRow {
    /// Node id.
    pub id: String,
    /// `build`, `boot`, `test` (or the node kind when not counted).
    pub category: String,
    /// Node kind.
    pub kind: String,
    /// Node name.
    pub name: String,
    /// Path below the job (see `display_path`).
    pub path: String,
    /// Node state.
    pub state: String,
    /// Result.
    pub result: Option<ResultValue>,
    /// `pass`, `fail` or `inconclusive`.
    pub status: StatusGroup,
    /// Incomplete with an infrastructure error code.
    pub infra_error: bool,
    /// The job (group) name.
    pub group: Option<String>,
    /// `data.arch`.
    pub arch: Option<String>,
    /// `data.config_full` (else `data.defconfig`).
    pub config: Option<String>,
    /// `data.compiler`.
    pub compiler: Option<String>,
    /// `data.platform`.
    pub platform: Option<String>,
    /// `data.runtime`.
    pub runtime: Option<String>,
    /// `data.error_code`.
    pub error_code: Option<String>,
    /// `data.error_msg`.
    pub error_msg: Option<String>,
    /// Created.
    pub created: String,
    /// Last updated.
    pub updated: String,
}

impl ResultRow {
    /// The row of a node in `category` (`None`: not a counted item).
    pub fn of(node: &Node, category: Option<ResultCategory>) -> ResultRow {
        let s = |f: &str| node.data_str(f).map(str::to_owned);
        ResultRow {
            id: node.id.map(|i| i.to_hex()).unwrap_or_default(),
            category: category
                .map(|c| c.as_str().to_owned())
                .unwrap_or_else(|| node.kind.clone()),
            kind: node.kind.clone(),
            name: node.name.clone(),
            path: display_path(node),
            state: node.state.as_str().to_owned(),
            result: node.result,
            status: StatusGroup::of(node.result),
            infra_error: is_infra_error(node),
            group: node.group.clone(),
            arch: s("arch"),
            config: s("config_full").or_else(|| s("defconfig")),
            compiler: s("compiler"),
            platform: s("platform"),
            runtime: s("runtime"),
            error_code: s("error_code"),
            error_msg: s("error_msg"),
            created: node.created.to_string(),
            updated: node.updated.to_string(),
        }
    }
}

/// `GET /viewer/api/checkout/{id}/results`: one page of a category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResultsResponse {
    /// `build`, `boot` or `test`.
    pub category: String,
    /// How many in all.
    pub total: u64,
    /// First row's position.
    pub offset: u64,
    /// Page size.
    pub limit: u64,
    /// The rows, failures first.
    pub items: Vec<ResultRow>,
}

/// `GET /viewer/api/checkout/{id}/history`: the revision and those before it on its branch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HistoryResponse {
    /// The filters applied to every entry.
    pub filters: ResultFilters,
    /// Newest first, the revision asked for included.
    pub items: Vec<TreeRow>,
}

/// One earlier run of the same test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunEntry {
    /// Node id.
    pub id: String,
    /// Result.
    pub result: Option<ResultValue>,
    /// State.
    pub state: String,
    /// Created.
    pub created: String,
    /// The run's commit.
    pub commit: String,
    /// The run's `git describe`.
    pub describe: Option<String>,
}

/// The regression node the tracker made for a failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegressionRef {
    /// The regression node id.
    pub id: String,
    /// Still failing (`fail`) or fixed (`pass`).
    pub result: Option<ResultValue>,
    /// The first failing run.
    pub fail_node: Option<String>,
    /// The last passing run before it.
    pub pass_node: Option<String>,
}

/// An artifact of a node (or of its nearest ancestor that has it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArtifactLink {
    /// The artifact key (`log`, `build_log`, ...).
    pub key: String,
    /// Its URL.
    pub url: String,
    /// The node that holds it.
    pub node: String,
    /// Whether it looks like a log the log viewer shows.
    pub is_log: bool,
}

/// `GET /viewer/api/result/{id}`: a build or test with its context and status history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResultDetail {
    /// The build or test.
    pub node: ResultRow,
    /// Its revision.
    pub checkout: Option<RevisionInfo>,
    /// Its build.
    pub build: Option<ResultRow>,
    /// Artifacts, its own and inherited.
    pub artifacts: Vec<ArtifactLink>,
    /// Its last runs (same path, tree, branch, config, platform), newest first, itself first.
    pub history: Vec<RunEntry>,
    /// `pass`, `fail`, `regression`, `fixed`, `unstable` (from the history).
    pub label: String,
    /// The first failure of the current failing streak.
    pub first_failure: Option<String>,
    /// The last pass.
    pub last_pass: Option<String>,
    /// The regression node, when the tracker made one.
    pub regression: Option<RegressionRef>,
}

/// One highlighted line of a log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogLine {
    /// 1-based line number.
    pub number: usize,
    /// The text.
    pub text: String,
    /// `error`, `warning` or none.
    pub level: Option<String>,
}

/// `GET /viewer/api/log/{id}`: a log from storage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogResponse {
    /// The node it belongs to (when asked by node).
    pub node: Option<String>,
    /// The artifact key.
    pub artifact: Option<String>,
    /// Where it was read.
    pub url: String,
    /// Bytes read.
    pub size: u64,
    /// Whether the log was longer than the cap (only its end is shown).
    pub truncated: bool,
    /// Lines with an error.
    pub errors: usize,
    /// Lines with a warning.
    pub warnings: usize,
    /// The lines.
    pub lines: Vec<LogLine>,
    /// The node's other artifacts.
    pub artifacts: Vec<ArtifactLink>,
}

/// A change between two revisions of one build or test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Change {
    /// `build`, `boot`, `test`.
    pub category: String,
    /// `regression`, `new_failure`, `fixed`, `still_failing`.
    pub change: String,
    /// The identity (path, config, arch, platform or compiler) as text.
    pub identity: String,
    /// In the base revision.
    pub base: Option<ResultRow>,
    /// In the target revision.
    pub target: Option<ResultRow>,
}

/// `GET /viewer/api/compare/{base}/{target}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompareResponse {
    /// The base (older) revision.
    pub base: RevisionInfo,
    /// The target revision.
    pub target: RevisionInfo,
    /// The filters applied to both.
    pub filters: ResultFilters,
    /// Counts of the base.
    pub base_counts: ResultCounts,
    /// Counts of the target.
    pub target_counts: ResultCounts,
    /// How many changes of each kind (`regression`, `new_failure`, `fixed`,
    /// `still_failing`, `new_pass`, `appeared`, `disappeared`, `unchanged`).
    pub summary: BTreeMap<String, u64>,
    /// The changed items (regressions, new failures, fixes, still failing), failures first.
    pub changes: Vec<Change>,
}

/// Counts of a group of nodes on the health page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthRow {
    /// The group's values (kind and state; or runtime; or platform).
    pub keys: Vec<Option<String>>,
    /// Counts by result, infrastructure errors apart.
    pub counts: StatusCounts,
    /// `pass / total` (0 when empty).
    pub pass_rate: f64,
    /// `fail / total`: test failures.
    pub fail_rate: f64,
    /// `infra / total`: infrastructure errors.
    pub infra_rate: f64,
    /// Whether the failure or infrastructure rate is at least the anomaly threshold.
    pub anomaly: bool,
}

/// A node that has waited long in a non-final state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StuckNode {
    /// The state.
    pub state: String,
    /// The node.
    pub node: ResultRow,
    /// Seconds since it was created.
    pub age_secs: i64,
}

/// A telemetry group over the anomaly threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TelemetryAnomaly {
    /// Runtime (lab).
    pub runtime: Option<String>,
    /// Device type.
    pub device_type: Option<String>,
    /// Events.
    pub total: u64,
    /// `fail + incomplete` over total.
    pub fail_rate: f64,
    /// Infrastructure errors over total.
    pub infra_rate: f64,
}

/// `GET /viewer/api/health`: is the pipeline healthy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthResponse {
    /// The window, in hours.
    pub hours: u32,
    /// Nodes created since this time are counted.
    pub since: String,
    /// Nodes per kind and state, by result.
    pub by_kind: Vec<HealthRow>,
    /// Builds and jobs per runtime (lab): pass, failure and infrastructure-error rates.
    pub runtimes: Vec<HealthRow>,
    /// Builds and jobs per platform.
    pub platforms: Vec<HealthRow>,
    /// Queue depth: nodes not `done`, per kind and state, whenever created.
    pub queue: Vec<HealthRow>,
    /// The oldest `running`, `available` and `closing` nodes.
    pub oldest: Vec<StuckNode>,
    /// Telemetry groups (runtime, device type) failing unusually in the window.
    pub anomalies: Vec<TelemetryAnomaly>,
    /// The rate at which a group is flagged.
    pub threshold: f64,
}

/// An optional string of a JSON value (`null` → `None`).
pub fn opt_str(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
