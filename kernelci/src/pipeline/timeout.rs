//! The timeout service: timeout, holdoff and closing modes (`spec/kernelci-pipeline.md` §1.4,
//! `spec/kernelci-api.md` §4.5). One type, three modes, each a poll loop:
//!
//! - [`TimeoutMode::Timeout`]: every own node still pending (`running`, `available`,
//!   `closing`) past its `timeout` becomes `done`; without a result it also gets
//!   `incomplete` with `data.error_code = node_timeout`, `error_msg = "Node timed-out"`.
//!   Children are not touched: each has its own timeout (as upstream's code).
//! - [`TimeoutMode::Holdoff`]: every `available` node past its `holdoff` becomes `closing`
//!   when any descendant is still pending, `done` otherwise.
//! - [`TimeoutMode::Closing`]: every `closing` node without pending descendants becomes
//!   `done`.
//!
//! "Pending descendants" are searched level by level through the whole subtree (a finished
//! job can hold a test still running), with batched `parent__in` queries — our server's
//! extension; upstream's API has no `__in` operator.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use super::service::{ServiceContext, ServiceError, ServiceResult};
use super::setup::ServiceSetup;
use crate::client::Api;
use crate::models::{Node, ObjectId, ResultValue, State, Timestamp};

/// Which transitions a [`TimeoutService`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutMode {
    /// Pending nodes past `timeout` → `done` (own nodes only).
    Timeout,
    /// `available` nodes past `holdoff` → `closing` or `done`.
    Holdoff,
    /// `closing` nodes without pending descendants → `done`.
    Closing,
}

impl FromStr for TimeoutMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "timeout" => Ok(TimeoutMode::Timeout),
            "holdoff" => Ok(TimeoutMode::Holdoff),
            "closing" => Ok(TimeoutMode::Closing),
            other => Err(format!(
                "unknown mode '{other}': expected timeout, holdoff or closing"
            )),
        }
    }
}

impl fmt::Display for TimeoutMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutMode::Timeout => "timeout",
            TimeoutMode::Holdoff => "holdoff",
            TimeoutMode::Closing => "closing",
        })
    }
}

/// The states that are not final.
pub const PENDING_STATES: [State; 3] = [State::Running, State::Available, State::Closing];

/// How many parent ids go into one `parent__in` query.
const BATCH: usize = 50;

/// The timeout service in one mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutService {
    mode: TimeoutMode,
    poll_period: Duration,
}

impl TimeoutService {
    /// A service in `mode`, polling every `poll_period` (zero: one pass).
    pub fn new(mode: TimeoutMode, poll_period: Duration) -> TimeoutService {
        TimeoutService { mode, poll_period }
    }

    /// Reads the service from `setup` (section `timeout`): `mode` (`timeout`, `holdoff` or
    /// `closing`; default `timeout`) and `poll_period` (seconds between passes, default 60 as
    /// upstream; 0 runs one pass).
    pub fn from_settings(setup: &ServiceSetup) -> ServiceResult<TimeoutService> {
        let mode = setup
            .get(None, "mode")
            .unwrap_or_else(|| "timeout".into())
            .parse()
            .map_err(|e| ServiceError::Config(format!("[{}] mode: {e}", setup.section)))?;
        Ok(TimeoutService::new(
            mode,
            setup.seconds("poll_period", 60.0)?,
        ))
    }

    /// The time between passes.
    pub fn poll_period(&self) -> Duration {
        self.poll_period
    }

    /// The mode.
    pub fn mode(&self) -> TimeoutMode {
        self.mode
    }

    /// Runs until shutdown.
    pub async fn run(&self, ctx: &ServiceContext) -> ServiceResult<()> {
        let me = ctx.api().whoami().await?;
        tracing::info!(mode = %self.mode, user = %me.username, "timeout service starting");
        ctx.run_periodic(&self.mode.to_string(), self.poll_period, || async {
            let changed = self.pass(ctx.api(), &me.username).await?;
            if !changed.is_empty() {
                tracing::info!(mode = %self.mode, nodes = changed.len(), "nodes moved");
            }
            Ok(())
        })
        .await
    }

    /// One pass at the current time; returns the nodes it updated, as written.
    pub async fn pass(&self, api: &dyn Api, me: &str) -> ServiceResult<Vec<Node>> {
        self.pass_at(api, me, Timestamp::now()).await
    }

    /// One pass as if it were `now`.
    pub async fn pass_at(
        &self,
        api: &dyn Api,
        me: &str,
        now: Timestamp,
    ) -> ServiceResult<Vec<Node>> {
        let now_s = now.to_string();
        let mut changed = Vec::new();
        match self.mode {
            TimeoutMode::Timeout => {
                for state in PENDING_STATES {
                    let nodes = api
                        .find_all_nodes(&[("state", state.as_str()), ("timeout__lt", &now_s)])
                        .await?;
                    for mut node in nodes.into_iter().filter(|n| n.owner.as_deref() == Some(me)) {
                        node.state = State::Done;
                        if node.result.is_none() {
                            node.result = Some(ResultValue::Incomplete);
                            let data = node.data.get_or_insert_with(Default::default);
                            data.insert("error_code".into(), Value::String("node_timeout".into()));
                            data.insert("error_msg".into(), Value::String("Node timed-out".into()));
                        }
                        if let Some(n) = update(api, &node, "timed out").await? {
                            changed.push(n);
                        }
                    }
                }
            }
            TimeoutMode::Holdoff => {
                let nodes = api
                    .find_all_nodes(&[("state", "available"), ("holdoff__lt", &now_s)])
                    .await?;
                for mut node in nodes {
                    let Some(id) = node.id else { continue };
                    node.state = if has_pending_descendants(api, id).await? {
                        State::Closing
                    } else {
                        State::Done
                    };
                    if let Some(n) = update(api, &node, "holdoff over").await? {
                        changed.push(n);
                    }
                }
            }
            TimeoutMode::Closing => {
                let nodes = api.find_all_nodes(&[("state", "closing")]).await?;
                for mut node in nodes {
                    let Some(id) = node.id else { continue };
                    if has_pending_descendants(api, id).await? {
                        continue;
                    }
                    node.state = State::Done;
                    if let Some(n) = update(api, &node, "closed").await? {
                        changed.push(n);
                    }
                }
            }
        }
        Ok(changed)
    }
}

/// PUTs `node`; a node that moved on meanwhile (the state machine refuses, or it is gone) is
/// logged and skipped.
async fn update(api: &dyn Api, node: &Node, why: &str) -> ServiceResult<Option<Node>> {
    match api.update_node(node, false).await {
        Ok(n) => {
            tracing::info!(node = ?n.id, kind = %n.kind, name = %n.name, state = %n.state,
                result = ?n.result, "{why}");
            super::service::crash_point("node-updated").await;
            Ok(Some(n))
        }
        Err(e) if matches!(e.status(), Some(400 | 404 | 422)) => {
            tracing::warn!(node = ?node.id, error = %e, "node not updated");
            Ok(None)
        }
        Err(e) => Err(ServiceError::from(e)),
    }
}

/// Whether any node below `root`, at any depth, is still pending.
pub async fn has_pending_descendants(api: &dyn Api, root: ObjectId) -> ServiceResult<bool> {
    let mut level = vec![root];
    while !level.is_empty() {
        let mut next = Vec::new();
        for chunk in level.chunks(BATCH) {
            let ids = chunk
                .iter()
                .map(ObjectId::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let pending = api
                .count_nodes(&[("parent__in", &ids), ("state__ne", "done")])
                .await?;
            if pending > 0 {
                return Ok(true);
            }
            let children = api.find_all_nodes(&[("parent__in", &ids)]).await?;
            next.extend(children.into_iter().filter_map(|c| c.id));
        }
        level = next;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in ["timeout", "holdoff", "closing"] {
            assert_eq!(m.parse::<TimeoutMode>().unwrap().to_string(), m);
        }
        assert!("other".parse::<TimeoutMode>().is_err());
    }
}
