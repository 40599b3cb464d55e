//! The viewer's data: each view's answer built from the store's aggregates
//! ([`ResultsStore`](kernelci::store::ResultsStore)), the aggregates cached briefly.

use std::collections::{BTreeMap, HashMap};

use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, Timestamp};
use kernelci::query::{Filter, Op, Operand, Scalar};
use kernelci::store::results::{ResultCategory, StatusGroup, classify};
use kernelci::store::{FindOptions, ResultCounts, ResultsWindow, Sort};

use super::model::{
    ArtifactLink, BreakdownRow, Change, CheckoutSummary, CompareResponse, FACETS, HistoryResponse,
    RegressionRef, ResultDetail, ResultFilters, ResultRow, ResultsResponse, RevisionInfo, RunEntry,
    TreeRow, TreesResponse, opt_str,
};
use crate::app::App;
use crate::http::ApiError;
use crate::routes::object_id;

pub use super::health::{ANOMALY_THRESHOLD, health, metrics_counts};

/// Most revisions on the landing page.
const MAX_TREES: u64 = 500;
/// Most items compared per category and side.
const MAX_COMPARED: u64 = 20_000;

pub(super) fn str_list(values: impl IntoIterator<Item = String>) -> Operand {
    Operand::List(values.into_iter().map(Scalar::Str).collect())
}

pub(super) fn eq(filter: Filter, field: &str, value: &str) -> Filter {
    filter.and(field, Op::Eq, Operand::One(Scalar::Str(value.to_owned())))
}

/// The nodes of a revision: same commit, tree and branch.
pub fn revision_scope(rev: &RevisionInfo) -> Filter {
    let f = eq(Filter::all(), "data.kernel_revision.commit", &rev.commit);
    let f = eq(f, "data.kernel_revision.tree", &rev.tree);
    eq(f, "data.kernel_revision.branch", &rev.branch)
}

pub(super) fn since(secs: i64) -> Timestamp {
    Timestamp::now().plus_secs(-secs)
}

/// The node `id` or a 404.
pub async fn node(app: &App, id: &str) -> Result<Node, ApiError> {
    let oid = object_id(id)?;
    app.store
        .get_node(oid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Node not found with id: {id}")))
}

/// The checkout `id` or a 404 (400 when the node is not a checkout).
pub async fn checkout(app: &App, id: &str) -> Result<Node, ApiError> {
    let n = node(app, id).await?;
    if n.kind != NodeKind::Checkout.as_str() {
        return Err(ApiError::bad_request(format!(
            "Node {id} is a {}, not a checkout",
            n.kind
        )));
    }
    Ok(n)
}

fn group_counts(groups: Vec<kernelci::store::ResultGroup>) -> HashMap<String, ResultCounts> {
    groups
        .into_iter()
        .map(|g| (serde_json::to_string(&g.keys).unwrap_or_default(), g.counts))
        .collect()
}

fn rev_key(rev: &RevisionInfo) -> String {
    serde_json::to_string(&[&rev.tree, &rev.branch, &rev.commit]).unwrap_or_default()
}

/// Counts of several revisions at once, under `filters`: one store aggregate grouped by tree,
/// branch and commit.
async fn revision_counts(
    app: &App,
    revs: &[RevisionInfo],
    filters: &ResultFilters,
) -> Result<HashMap<String, ResultCounts>, ApiError> {
    if revs.is_empty() {
        return Ok(HashMap::new());
    }
    let mut commits: Vec<String> = revs.iter().map(|r| r.commit.clone()).collect();
    commits.sort();
    commits.dedup();
    let scope =
        filters.apply(Filter::all().and("data.kernel_revision.commit", Op::In, str_list(commits)));
    let group_by: Vec<String> = ["tree", "branch", "commit"]
        .iter()
        .map(|f| format!("data.kernel_revision.{f}"))
        .collect();
    Ok(group_counts(
        app.store.count_results(&scope, &group_by).await?,
    ))
}

/// The landing page: the latest revision of each tree/branch created in the last `days`, with
/// its counts. `tree` narrows to trees whose name contains it.
pub async fn trees(app: &App, days: u32, tree: Option<&str>) -> Result<TreesResponse, ApiError> {
    let key = format!("trees:{days}:{}", tree.unwrap_or_default());
    app.viewer
        .cache
        .get_or_try(key, async {
            let from = since(i64::from(days) * 86_400);
            let mut scope = Filter::all().and("created", Op::Gte, Operand::One(Scalar::Time(from)));
            if let Some(t) = tree.filter(|t| !t.is_empty()) {
                let re = regex::Regex::new(&regex::escape(t))
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                scope = scope.and("data.kernel_revision.tree", Op::Re, Operand::Regex(re));
            }
            let heads = app.store.latest_checkouts(&scope, MAX_TREES).await?;
            let revs: Vec<RevisionInfo> = heads.iter().map(RevisionInfo::of).collect();
            let counts = revision_counts(app, &revs, &ResultFilters::default()).await?;
            let items = revs
                .into_iter()
                .map(|r| TreeRow {
                    counts: counts.get(&rev_key(&r)).copied().unwrap_or_default(),
                    revision: r,
                })
                .collect();
            Ok(TreesResponse {
                days,
                since: from.to_string(),
                items,
            })
        })
        .await
}

/// The latest checkout of a tree and branch (any age).
pub async fn latest(app: &App, tree: &str, branch: &str) -> Result<Option<Node>, ApiError> {
    let scope = eq(
        eq(Filter::all(), "data.kernel_revision.tree", tree),
        "data.kernel_revision.branch",
        branch,
    );
    Ok(app
        .store
        .latest_checkouts(&scope, 1)
        .await?
        .into_iter()
        .next())
}

/// A revision's summary under `filters`.
pub async fn summary(
    app: &App,
    checkout: &Node,
    filters: &ResultFilters,
) -> Result<CheckoutSummary, ApiError> {
    let rev = RevisionInfo::of(checkout);
    let key = format!("summary:{}:{}", rev.id, filters.key());
    app.viewer
        .cache
        .get_or_try(key, async {
            let scope = revision_scope(&rev);
            let filtered = filters.apply(scope.clone());
            let counts = app
                .store
                .count_results(&filtered, &[])
                .await?
                .into_iter()
                .next()
                .map(|g| g.counts)
                .unwrap_or_default();
            let mut breakdowns = BTreeMap::new();
            let mut facets = BTreeMap::new();
            for (name, field) in FACETS {
                let by = [field.to_owned()];
                let mut rows: Vec<BreakdownRow> = app
                    .store
                    .count_results(&filtered, &by)
                    .await?
                    .into_iter()
                    .map(|g| BreakdownRow {
                        value: g.keys.first().and_then(opt_str),
                        counts: g.counts,
                    })
                    .collect();
                rows.sort_by(|a, b| a.value.cmp(&b.value));
                let values: Vec<String> = if filters.is_empty() {
                    rows.iter().filter_map(|r| r.value.clone()).collect()
                } else {
                    let mut v: Vec<String> = app
                        .store
                        .count_results(&scope, &by)
                        .await?
                        .into_iter()
                        .filter_map(|g| g.keys.first().and_then(opt_str))
                        .collect();
                    v.sort();
                    v
                };
                breakdowns.insert(name.to_owned(), rows);
                facets.insert(name.to_owned(), values);
            }
            Ok(CheckoutSummary {
                checkout: rev.clone(),
                filters: filters.clone(),
                counts,
                breakdowns,
                facets,
            })
        })
        .await
}

/// One page of a revision's builds, boots or tests under `filters`, failures first.
pub async fn results(
    app: &App,
    checkout: &Node,
    category: ResultCategory,
    filters: &ResultFilters,
    offset: u64,
    limit: u64,
) -> Result<ResultsResponse, ApiError> {
    let rev = RevisionInfo::of(checkout);
    let scope = filters.apply(revision_scope(&rev));
    let (nodes, total) = app
        .store
        .find_results(&scope, ResultsWindow::new(category, offset, limit))
        .await?;
    Ok(ResultsResponse {
        category: category.as_str().to_owned(),
        total,
        offset,
        limit,
        items: nodes
            .iter()
            .map(|n| ResultRow::of(n, Some(category)))
            .collect(),
    })
}

/// The revision and the `limit - 1` before it on its tree and branch, with their counts under
/// `filters`, newest first.
pub async fn history(
    app: &App,
    checkout: &Node,
    filters: &ResultFilters,
    limit: u64,
) -> Result<HistoryResponse, ApiError> {
    let rev = RevisionInfo::of(checkout);
    let key = format!("history:{}:{limit}:{}", rev.id, filters.key());
    app.viewer
        .cache
        .get_or_try(key, async {
            let scope = eq(
                eq(Filter::all(), "kind", "checkout"),
                "data.kernel_revision.tree",
                &rev.tree,
            );
            let scope = eq(scope, "data.kernel_revision.branch", &rev.branch).and(
                "created",
                Op::Lte,
                Operand::One(Scalar::Time(checkout.created)),
            );
            let page = app
                .store
                .find_nodes(
                    &scope,
                    &FindOptions {
                        limit: Some(limit),
                        sort: Some(Sort {
                            field: "created".into(),
                            descending: true,
                        }),
                        ..FindOptions::default()
                    },
                )
                .await?;
            let revs: Vec<RevisionInfo> = page.items.iter().map(RevisionInfo::of).collect();
            let counts = revision_counts(app, &revs, filters).await?;
            Ok(HistoryResponse {
                filters: filters.clone(),
                items: revs
                    .into_iter()
                    .map(|r| TreeRow {
                        counts: counts.get(&rev_key(&r)).copied().unwrap_or_default(),
                        revision: r,
                    })
                    .collect(),
            })
        })
        .await
}

/// Whether an artifact key names a log.
pub fn is_log_key(key: &str) -> bool {
    key == "log" || key.ends_with("_log") || key.ends_with(".log") || key.contains("log.txt")
}

/// The node's artifacts and those of its ancestors (nearest first; a key once).
pub async fn artifacts(app: &App, node: &Node) -> Result<Vec<ArtifactLink>, ApiError> {
    let mut out: Vec<ArtifactLink> = Vec::new();
    let mut current = Some(node.clone());
    let mut depth = 0;
    while let Some(n) = current {
        for (k, v) in n.artifacts.iter().flatten() {
            if let Some(url) = v.as_str()
                && !out.iter().any(|a| a.key == *k)
            {
                out.push(ArtifactLink {
                    key: k.clone(),
                    url: url.to_owned(),
                    node: n.id.map(|i| i.to_hex()).unwrap_or_default(),
                    is_log: is_log_key(k),
                });
            }
        }
        depth += 1;
        current = match n.parent {
            Some(p) if depth < 16 && n.kind != "checkout" => app.store.get_node(p).await?,
            _ => None,
        };
    }
    Ok(out)
}

/// The node's ancestors, nearest first.
async fn ancestors(app: &App, node: &Node) -> Result<Vec<Node>, ApiError> {
    let mut out = Vec::new();
    let mut parent = node.parent;
    while let Some(p) = parent {
        if out.len() >= 32 {
            break;
        }
        let Some(n) = app.store.get_node(p).await? else {
            break;
        };
        parent = n.parent;
        out.push(n);
    }
    Ok(out)
}

/// The history label of a strip of results, newest first: `pass`/`fail` when steady,
/// `regression` (newest fails after passes), `fixed` (newest passes after failures),
/// `unstable` (flipped more than once); results other than pass and fail are ignored.
pub fn history_label(newest_first: &[Option<ResultValue>]) -> &'static str {
    let seq: Vec<bool> = newest_first
        .iter()
        .filter_map(|r| match r {
            Some(ResultValue::Pass) => Some(true),
            Some(ResultValue::Fail) => Some(false),
            _ => None,
        })
        .collect();
    let Some(newest) = seq.first() else {
        return "inconclusive";
    };
    let flips = seq.windows(2).filter(|w| w[0] != w[1]).count();
    match (flips, newest) {
        (0, true) => "pass",
        (0, false) => "fail",
        (1, false) => "regression",
        (1, true) => "fixed",
        _ => "unstable",
    }
}

fn data_or_null(node: &Node, field: &str) -> Option<String> {
    node.data_str(field).map(str::to_owned)
}

/// A build or test with its context, its last `limit` runs and their label.
pub async fn result_detail(app: &App, id: &str, limit: u64) -> Result<ResultDetail, ApiError> {
    let node = node(app, id).await?;
    let chain = ancestors(app, &node).await?;
    let has_children = app
        .store
        .count_nodes(&Filter::all().and_eq("parent", id)?)
        .await?
        > 0;
    let checkout = chain
        .iter()
        .chain(std::iter::once(&node))
        .find(|n| n.kind == "checkout")
        .map(RevisionInfo::of);
    let build = chain
        .iter()
        .find(|n| n.kind == "kbuild")
        .map(|b| ResultRow::of(b, Some(ResultCategory::Build)));
    // The same test: kind, name, group, tree, branch, config, platform; the same path.
    let mut scope = eq(Filter::all(), "kind", &node.kind);
    scope = eq(scope, "name", &node.name);
    for (field, value) in [
        (
            "data.kernel_revision.tree",
            data_or_null(&node, "kernel_revision.tree"),
        ),
        (
            "data.kernel_revision.branch",
            data_or_null(&node, "kernel_revision.branch"),
        ),
        ("data.config_full", data_or_null(&node, "config_full")),
        ("data.platform", data_or_null(&node, "platform")),
    ] {
        let operand = match value {
            Some(v) => Scalar::Str(v),
            None => Scalar::Null,
        };
        scope = scope.and(field, Op::Eq, Operand::One(operand));
    }
    scope = scope.and("created", Op::Lte, Operand::One(Scalar::Time(node.created)));
    let runs = app
        .store
        .find_nodes(
            &scope,
            &FindOptions {
                limit: Some(limit.saturating_mul(4).max(limit)),
                sort: Some(Sort {
                    field: "created".into(),
                    descending: true,
                }),
                ..FindOptions::default()
            },
        )
        .await?;
    let runs: Vec<&Node> = runs
        .items
        .iter()
        .filter(|n| n.path == node.path && n.group == node.group)
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    let history: Vec<RunEntry> = runs
        .iter()
        .map(|n| RunEntry {
            id: n.id.map(|i| i.to_hex()).unwrap_or_default(),
            result: n.result,
            state: n.state.as_str().to_owned(),
            created: n.created.to_string(),
            commit: n
                .data_str("kernel_revision.commit")
                .unwrap_or_default()
                .to_owned(),
            describe: data_or_null(n, "kernel_revision.describe"),
        })
        .collect();
    let results: Vec<Option<ResultValue>> = history.iter().map(|r| r.result).collect();
    let label = history_label(&results).to_owned();
    let last_pass_at = history
        .iter()
        .position(|r| r.result == Some(ResultValue::Pass));
    let last_pass = last_pass_at.map(|i| history[i].id.clone());
    let first_failure = if node.result == Some(ResultValue::Fail) {
        let end = last_pass_at.unwrap_or(history.len());
        history[..end]
            .iter()
            .rev()
            .find(|r| r.result == Some(ResultValue::Fail))
            .map(|r| r.id.clone())
    } else {
        None
    };
    let regression = regression_of(app, &node).await?;
    Ok(ResultDetail {
        node: ResultRow::of(&node, classify(&node, has_children)),
        checkout,
        build,
        artifacts: artifacts(app, &node).await?,
        history,
        label,
        first_failure,
        last_pass,
        regression,
    })
}

/// The regression the tracker made for `node` (marked on it, or naming it as its failure).
async fn regression_of(app: &App, node: &Node) -> Result<Option<RegressionRef>, ApiError> {
    let marked = match node.data_str("regression").map(ObjectId::parse_str) {
        Some(Ok(rid)) => app.store.get_node(rid).await?,
        _ => None,
    };
    let reg = match marked {
        Some(r) => Some(r),
        None => match node.id {
            Some(id) => app
                .store
                .find_nodes(
                    &eq(
                        eq(Filter::all(), "kind", "regression"),
                        "data.fail_node",
                        &id.to_hex(),
                    ),
                    &FindOptions {
                        limit: Some(1),
                        ..FindOptions::default()
                    },
                )
                .await?
                .items
                .into_iter()
                .next(),
            None => None,
        },
    };
    Ok(reg.map(|r| RegressionRef {
        id: r.id.map(|i| i.to_hex()).unwrap_or_default(),
        result: r.result,
        fail_node: data_or_null(&r, "fail_node"),
        pass_node: data_or_null(&r, "pass_node"),
    }))
}

/// Identity of an item across revisions: builds by name, config, arch and compiler; boots and
/// tests by path, config, arch and platform.
fn identity(row: &ResultRow) -> String {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    if row.category == "build" {
        format!(
            "{} {} {} {}",
            row.name,
            o(&row.config),
            o(&row.arch),
            o(&row.compiler)
        )
    } else {
        format!(
            "{} {} {} {} {}",
            o(&row.group),
            row.path,
            o(&row.config),
            o(&row.arch),
            o(&row.platform)
        )
    }
}

/// What changed for one identity between two revisions.
fn change_kind(base: Option<&ResultRow>, target: Option<&ResultRow>) -> &'static str {
    let s = |r: Option<&ResultRow>| r.map(|r| r.status);
    match (s(base), s(target)) {
        (Some(StatusGroup::Pass), Some(StatusGroup::Fail)) => "regression",
        (Some(StatusGroup::Fail), Some(StatusGroup::Fail)) => "still_failing",
        (_, Some(StatusGroup::Fail)) => "new_failure",
        (Some(StatusGroup::Fail), Some(StatusGroup::Pass)) => "fixed",
        (Some(_), Some(StatusGroup::Pass)) => "new_pass",
        (None, Some(_)) => "appeared",
        (Some(_), None) => "disappeared",
        _ => "unchanged",
    }
}

async fn all_rows(
    app: &App,
    scope: &Filter,
    category: ResultCategory,
) -> Result<Vec<ResultRow>, ApiError> {
    let (nodes, _) = app
        .store
        .find_results(scope, ResultsWindow::new(category, 0, MAX_COMPARED))
        .await?;
    Ok(nodes
        .iter()
        .map(|n| ResultRow::of(n, Some(category)))
        .collect())
}

/// Two revisions compared, items paired by identity.
pub async fn compare(
    app: &App,
    base: &Node,
    target: &Node,
    filters: &ResultFilters,
) -> Result<CompareResponse, ApiError> {
    let (b, t) = (RevisionInfo::of(base), RevisionInfo::of(target));
    let key = format!("compare:{}:{}:{}", b.id, t.id, filters.key());
    app.viewer
        .cache
        .get_or_try(key, async {
            let (bs, ts) = (
                filters.apply(revision_scope(&b)),
                filters.apply(revision_scope(&t)),
            );
            let mut summary: BTreeMap<String, u64> = BTreeMap::new();
            let mut changes = Vec::new();
            let mut base_counts = ResultCounts::default();
            let mut target_counts = ResultCounts::default();
            for category in ResultCategory::ALL {
                let before = all_rows(app, &bs, category).await?;
                let after = all_rows(app, &ts, category).await?;
                for r in &before {
                    base_counts.get_mut(category).add(r.result, r.infra_error);
                }
                for r in &after {
                    target_counts.get_mut(category).add(r.result, r.infra_error);
                }
                let old: HashMap<String, &ResultRow> =
                    before.iter().map(|r| (identity(r), r)).collect();
                let mut seen = std::collections::HashSet::new();
                for r in &after {
                    let id = identity(r);
                    let prev = old.get(&id).copied();
                    seen.insert(id.clone());
                    let kind = change_kind(prev, Some(r));
                    *summary.entry(kind.to_owned()).or_default() += 1;
                    if matches!(
                        kind,
                        "regression" | "new_failure" | "fixed" | "still_failing"
                    ) {
                        changes.push(Change {
                            category: category.as_str().to_owned(),
                            change: kind.to_owned(),
                            identity: id,
                            base: prev.cloned(),
                            target: Some(r.clone()),
                        });
                    }
                }
                for (id, r) in &old {
                    if !seen.contains(id) {
                        *summary
                            .entry(change_kind(Some(r), None).to_owned())
                            .or_default() += 1;
                    }
                }
            }
            let rank = |c: &Change| match c.change.as_str() {
                "regression" => 0,
                "new_failure" => 1,
                "still_failing" => 2,
                _ => 3,
            };
            changes.sort_by(|x, y| {
                rank(x)
                    .cmp(&rank(y))
                    .then_with(|| x.identity.cmp(&y.identity))
            });
            Ok(CompareResponse {
                base: b.clone(),
                target: t.clone(),
                filters: filters.clone(),
                base_counts,
                target_counts,
                summary,
                changes,
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_status_strips() {
        use ResultValue::{Fail, Pass, Skip};
        assert_eq!(history_label(&[Some(Pass), Some(Pass)]), "pass");
        assert_eq!(history_label(&[Some(Fail)]), "fail");
        assert_eq!(
            history_label(&[Some(Fail), Some(Pass), Some(Pass)]),
            "regression"
        );
        assert_eq!(
            history_label(&[Some(Pass), Some(Skip), Some(Fail)]),
            "fixed"
        );
        assert_eq!(
            history_label(&[Some(Fail), Some(Pass), Some(Fail)]),
            "unstable"
        );
        assert_eq!(history_label(&[None, Some(Skip)]), "inconclusive");
    }
}
