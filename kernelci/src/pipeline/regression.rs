//! The regression tracker: comparing finished tests with their previous run
//! (`spec/kernelci-pipeline.md` §7, upstream's removed `regression_tracker`).
//!
//! For each node that reaches `done` (and, recursively, each of its children — a result
//! hierarchy sends one event for its root), except checkouts and regressions:
//!
//! - **pass**: the active regression of the same job (if any) gets the node appended to
//!   `data.node_sequence` and becomes inactive (`result = pass`);
//! - **fail** after a **pass** of the same job: a `regression` node is created (`state: done`,
//!   `result: fail`, `data.fail_node`, `data.pass_node`, ...), unless one with the same
//!   `fail_node` and `pass_node` exists — so replayed events create nothing twice — and the
//!   failing node gets `data.regression = <id>`;
//! - **fail** after a **fail**: the active regression, when there is one, gets the node
//!   appended to `data.node_sequence` (once).
//!
//! "The same job" is the same `kind`, `name`, `group`, `path`, tree/branch/url and
//! `data.{arch, defconfig, config_full, compiler, platform}`, created earlier; the latest one
//! wins.
//!
//! Field name: the regression's revision is `data.failed_kernel_revision` (the current node
//! model's name). Upstream's tracker wrote `failed_kernel_version`, which the model does not
//! have; we use `failed_kernel_revision` throughout, for writing and for searching.

use serde_json::{Map, Value, json};

use super::service::{EventHandler, EventSubscription, ServiceContext, ServiceResult, async_trait};
use super::setup::ServiceSetup;
use crate::client::{Api, ReceivedEvent};
use crate::models::{ErrorCode, Node, NodeKind, ObjectId, ResultValue, State};

/// The `data` fields that identify a job configuration.
pub const JOB_DATA_FIELDS: [&str; 5] = ["arch", "defconfig", "config_full", "compiler", "platform"];

/// What tracking one node did.
#[derive(Debug, Clone, PartialEq)]
pub enum RegressionOutcome {
    /// Not a candidate (kind, state or result).
    Ignored,
    /// Failing, but no earlier run of the same job.
    NoPrevious,
    /// A new regression node.
    Created(Box<Node>),
    /// The regression for this fail/pass pair already existed.
    AlreadyTracked(ObjectId),
    /// An active regression got this node in its sequence (still failing).
    StillFailing(ObjectId),
    /// An active regression was closed by this passing node.
    Fixed(ObjectId),
    /// Nothing to do (a pass without an active regression, a fail already in the sequence).
    Unchanged,
}

/// The regression tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegressionTracker {
    promiscuous: bool,
}

impl RegressionTracker {
    /// A tracker; `promiscuous` follows every owner's nodes (upstream follows its own only).
    pub fn new(promiscuous: bool) -> RegressionTracker {
        RegressionTracker { promiscuous }
    }

    /// Reads the tracker from `setup` (section `regression_tracker`): the `promisc` flag.
    pub fn from_settings(setup: &ServiceSetup) -> ServiceResult<RegressionTracker> {
        Ok(RegressionTracker::new(setup.flag(false, "promisc")?))
    }

    /// The events it handles: nodes reaching `done`.
    pub fn subscription(&self) -> EventSubscription {
        EventSubscription::node()
            .states(&["done"])
            .promiscuous(self.promiscuous)
    }

    /// Runs until shutdown.
    pub async fn run(&self, ctx: &ServiceContext) -> ServiceResult<()> {
        let mut handler = self.clone();
        ctx.run_events(self.subscription(), &mut handler).await
    }

    /// Tracks `node` and then, depth first, every node below it. Returns each outcome with
    /// the node id.
    pub async fn track_tree(
        &self,
        api: &dyn Api,
        node: Node,
    ) -> ServiceResult<Vec<(ObjectId, RegressionOutcome)>> {
        let mut out = Vec::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            let Some(id) = n.id else { continue };
            let outcome = self.track(api, &n).await?;
            if !matches!(outcome, RegressionOutcome::Ignored) {
                tracing::debug!(node = %id, ?outcome, "tracked");
            }
            out.push((id, outcome));
            if n.kind == "checkout" {
                // Checkouts are not tracked, and their subtrees get their own events.
                continue;
            }
            let children = api.find_all_nodes(&[("parent", &id.to_string())]).await?;
            stack.extend(children.into_iter().rev());
        }
        Ok(out)
    }

    /// Tracks one node.
    pub async fn track(&self, api: &dyn Api, node: &Node) -> ServiceResult<RegressionOutcome> {
        if node.state != State::Done
            || node.kind == NodeKind::Checkout.as_str()
            || node.kind == NodeKind::Regression.as_str()
        {
            return Ok(RegressionOutcome::Ignored);
        }
        let Some(id) = node.id else {
            return Ok(RegressionOutcome::Ignored);
        };
        match node.result {
            Some(ResultValue::Pass) => {
                let Some(mut reg) = active_regression(api, node).await? else {
                    return Ok(RegressionOutcome::Unchanged);
                };
                let reg_id = reg.id.unwrap_or(id);
                push_sequence(&mut reg, id);
                reg.result = Some(ResultValue::Pass);
                api.update_node(&reg, false).await?;
                tracing::info!(regression = %reg_id, node = %id, name = %node.name, "regression fixed");
                Ok(RegressionOutcome::Fixed(reg_id))
            }
            Some(ResultValue::Fail) => {
                let Some(prev) = previous_run(api, node).await? else {
                    return Ok(RegressionOutcome::NoPrevious);
                };
                match prev.result {
                    Some(ResultValue::Pass) => {
                        let prev_id = prev.id.map(|i| i.to_string()).unwrap_or_default();
                        let existing = api
                            .find_nodes(&[
                                ("kind", "regression"),
                                ("result", "fail"),
                                ("data.fail_node", &id.to_string()),
                                ("data.pass_node", &prev_id),
                            ])
                            .await?;
                        if let Some(r) = existing.items.into_iter().next().and_then(|r| r.id) {
                            // A replayed event after a crash between the creation and the
                            // marking: finish the marking, create nothing.
                            if node.data_str("regression") != Some(r.to_string().as_str()) {
                                mark_node(api, node, r).await?;
                            }
                            return Ok(RegressionOutcome::AlreadyTracked(r));
                        }
                        let reg = new_regression(api, node, &prev).await?;
                        let created = api.create_node(&reg).await?;
                        let reg_id = created.id;
                        if let Some(rid) = reg_id {
                            super::service::crash_point("regression-created").await;
                            mark_node(api, node, rid).await?;
                        }
                        tracing::info!(regression = ?reg_id, node = %id, name = %node.name,
                            "new regression");
                        Ok(RegressionOutcome::Created(Box::new(created)))
                    }
                    Some(ResultValue::Fail) => {
                        let Some(mut reg) = active_regression(api, node).await? else {
                            return Ok(RegressionOutcome::Unchanged);
                        };
                        let Some(reg_id) = reg.id else {
                            return Ok(RegressionOutcome::Unchanged);
                        };
                        if !push_sequence(&mut reg, id) {
                            return Ok(RegressionOutcome::Unchanged);
                        }
                        api.update_node(&reg, false).await?;
                        mark_node(api, node, reg_id).await?;
                        Ok(RegressionOutcome::StillFailing(reg_id))
                    }
                    _ => Ok(RegressionOutcome::Unchanged),
                }
            }
            _ => Ok(RegressionOutcome::Ignored),
        }
    }
}

/// Appends `id` to `data.node_sequence` unless present; `false` when it was.
fn push_sequence(reg: &mut Node, id: ObjectId) -> bool {
    let data = reg.data.get_or_insert_with(Default::default);
    let seq = data
        .entry("node_sequence")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !seq.is_array() {
        *seq = Value::Array(Vec::new());
    }
    let id = Value::String(id.to_string());
    match seq.as_array_mut() {
        Some(a) if a.contains(&id) => false,
        Some(a) => {
            a.push(id);
            true
        }
        None => false,
    }
}

/// Records the regression on the failing node (without an event: nothing waits for it).
async fn mark_node(api: &dyn Api, node: &Node, reg_id: ObjectId) -> ServiceResult<()> {
    let mut n = match node.id {
        Some(id) => api.get_node(id).await?.unwrap_or_else(|| node.clone()),
        None => return Ok(()),
    };
    n.data
        .get_or_insert_with(Default::default)
        .insert("regression".into(), Value::String(reg_id.to_string()));
    api.update_node(&n, true).await?;
    Ok(())
}

fn str_field(node: &Node, dotted: &str) -> String {
    node.data_str(dotted).unwrap_or("null").to_owned()
}

/// The query shared by "same job" searches: `data.<rev_field>.{tree,branch,url}` and the job
/// data fields (a missing value searches `null`), created before `node`.
fn same_job_query(node: &Node, rev_field: &str) -> Vec<(String, String)> {
    let mut q = vec![
        ("name".to_owned(), node.name.clone()),
        (
            "group".to_owned(),
            node.group.clone().unwrap_or_else(|| "null".into()),
        ),
    ];
    for k in ["tree", "branch", "url"] {
        q.push((
            format!("data.{rev_field}.{k}"),
            str_field(node, &format!("kernel_revision.{k}")),
        ));
    }
    for k in JOB_DATA_FIELDS {
        q.push((format!("data.{k}"), str_field(node, k)));
    }
    q.push(("created__lt".to_owned(), node.created.to_string()));
    q
}

fn refs(q: &[(String, String)]) -> Vec<(&str, &str)> {
    q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn latest(nodes: Vec<Node>, path: &[String]) -> Option<Node> {
    nodes
        .into_iter()
        .filter(|n| n.path == path)
        .max_by_key(|n| n.created)
}

/// The latest earlier `done` run of the same job.
async fn previous_run(api: &dyn Api, node: &Node) -> ServiceResult<Option<Node>> {
    let mut q = same_job_query(node, "kernel_revision");
    q.push(("kind".into(), node.kind.clone()));
    q.push(("state".into(), "done".into()));
    let found = api.find_all_nodes(&refs(&q)).await?;
    Ok(latest(found, &node.path))
}

/// The latest active regression of the same job.
async fn active_regression(api: &dyn Api, node: &Node) -> ServiceResult<Option<Node>> {
    let mut q = same_job_query(node, "failed_kernel_revision");
    q.push(("kind".into(), "regression".into()));
    q.push(("result".into(), "fail".into()));
    let found = api.find_all_nodes(&refs(&q)).await?;
    Ok(latest(found, &node.path))
}

/// The ancestors of `node`, nearest first (not including it).
async fn ancestors(api: &dyn Api, node: &Node) -> ServiceResult<Vec<Node>> {
    let mut out = Vec::new();
    let mut parent = node.parent;
    while let Some(pid) = parent {
        if out.len() > 64 {
            break;
        }
        let Some(p) = api.get_node(pid).await? else {
            break;
        };
        parent = p.parent;
        out.push(p);
    }
    Ok(out)
}

/// The regression node for `fail` after `pass`.
async fn new_regression(api: &dyn Api, fail: &Node, pass: &Node) -> ServiceResult<Node> {
    let chain = ancestors(api, fail).await?;
    let lineage = || std::iter::once(fail).chain(chain.iter());
    let mut data = Map::new();
    data.insert("fail_node".into(), json!(fail.id));
    data.insert("pass_node".into(), json!(pass.id));
    for k in JOB_DATA_FIELDS.iter().chain(&["device"]) {
        if let Some(v) = fail.data_path(k) {
            data.insert((*k).into(), v.clone());
        }
    }
    if let Some(rev) = fail.data_path("kernel_revision") {
        data.insert("failed_kernel_revision".into(), rev.clone());
    }
    // The first error up the ancestors, when it is a known error code.
    if let Some(n) = lineage().find(|n| {
        n.data_str("error_code")
            .is_some_and(|c| !c.is_empty() && c.parse::<ErrorCode>().is_ok())
    }) {
        data.insert("error_code".into(), json!(n.data_str("error_code")));
        data.insert("error_msg".into(), json!(n.data_str("error_msg")));
    }
    data.insert("node_sequence".into(), json!([]));
    let mut reg = Node::new(NodeKind::Regression, fail.name.clone());
    reg.path = fail.path.clone();
    reg.group = fail.group.clone();
    reg.state = State::Done;
    reg.result = Some(ResultValue::Fail);
    reg.data = Some(data);
    // The log artifacts of the node, or of its nearest ancestor that has artifacts.
    if let Some(arts) = lineage()
        .filter_map(|n| n.artifacts.as_ref())
        .find(|a| !a.is_empty())
    {
        let logs: Map<String, Value> = arts
            .iter()
            .filter(|(k, _)| *k == "log" || k.contains("_log"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        reg.artifacts = Some(logs);
    }
    Ok(reg)
}

#[async_trait]
impl EventHandler for RegressionTracker {
    async fn handle(&mut self, ctx: &ServiceContext, event: &ReceivedEvent) -> ServiceResult<()> {
        let kind = event.event.data.get("kind").and_then(Value::as_str);
        if matches!(kind, Some("checkout" | "regression")) {
            return Ok(());
        }
        let Some(node) = ctx.event_node(event).await? else {
            return Ok(());
        };
        self.track_tree(ctx.api(), node).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_sequence_appends_once() {
        let mut reg = Node::new(NodeKind::Regression, "t");
        let id: ObjectId = "65265305c74695807499037f".parse().unwrap();
        assert!(push_sequence(&mut reg, id));
        assert!(!push_sequence(&mut reg, id));
        assert_eq!(
            reg.data_path("node_sequence"),
            Some(&json!(["65265305c74695807499037f"]))
        );
    }
}
