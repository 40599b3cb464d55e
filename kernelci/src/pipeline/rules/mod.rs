//! Scheduler rules: event matching, `should_create_node`, job filters and job node creation.
//!
//! Pure functions (plus an async ancestor lookup) with upstream's semantics
//! (`spec/kernelci-pipeline.md` §4.2–§4.4, §4.7.4):
//!
//! - [`entry_matches`] / [`get_configs`] / [`get_schedule`]: which scheduler entries an event
//!   triggers, with the edge trigger on updates;
//! - [`should_create_node`]: the rules of entries, jobs, runtimes and platforms;
//! - [`jobfilter_allows`], [`platform_filter_allows`]: retry filters;
//! - [`job_node`]: the job node the scheduler creates (or `None` when filtered);
//! - [`lava_priority`], [`queue_limit`], [`base_priority`]: LAVA priority and queue gate math;
//! - [`DuplicateGuard`]: the "same job for the same input within 10 minutes" guard.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::config::{
    JobConfig, PipelineConfig, PlatformConfig, Priority, RuleEntry, Rules, RuntimeConfig,
    SchedulerEntry,
};
use crate::models::{Node, ObjectId, State};

pub use crate::config::parse_frequency;

mod filters;
pub use filters::*;

mod lava;
pub use lava::*;

mod guard;
pub use guard::*;

#[cfg(test)]
mod tests;

/// The submitter of nodes the pipeline creates (upstream `SERVICE_PIPELINE`).
pub const SERVICE_PIPELINE: &str = "service:pipeline";

/// Whether every key of `entry_event` (except `channel`) is in `event` with an equal value.
pub fn event_subset(entry_event: &Map<String, Value>, event: &Map<String, Value>) -> bool {
    entry_event
        .iter()
        .filter(|(k, _)| k.as_str() != "channel")
        .all(|(k, v)| event.get(k) == Some(v))
}

/// Whether a scheduler entry fires for `event` received on `channel` (upstream
/// `Scheduler.get_configs`): the entry's channel must be `channel`, its event must be a subset
/// of the event, and an `updated` event that carries `previous_state` fires only on the rising
/// edge (the previous state and result did not already match). Creation events, retry events
/// (no `op`) and events without previous information are level-triggered.
pub fn entry_matches(entry: &SchedulerEntry, event: &Map<String, Value>, channel: &str) -> bool {
    if entry.channel() != Some(channel) || !event_subset(&entry.event, event) {
        return false;
    }
    let updated = event.get("op").and_then(Value::as_str) == Some("updated");
    match event.get("previous_state") {
        Some(prev_state) if updated && !prev_state.is_null() => {
            let mut previous = event.clone();
            previous.insert("state".into(), prev_state.clone());
            previous.insert(
                "result".into(),
                event.get("previous_result").cloned().unwrap_or(Value::Null),
            );
            !event_subset(&entry.event, &previous)
        }
        _ => true,
    }
}

/// The scheduler entries `event` triggers on `channel`, in configuration order.
pub fn get_configs<'a>(
    config: &'a PipelineConfig,
    event: &Map<String, Value>,
    channel: &str,
) -> Vec<&'a SchedulerEntry> {
    config
        .scheduler
        .iter()
        .filter(|e| entry_matches(e, event, channel))
        .collect()
}

/// One job to consider: the job, the runtime it would run on, the platform, and the entry.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The scheduler entry that matched.
    pub entry: &'a SchedulerEntry,
    /// The job.
    pub job: &'a JobConfig,
    /// The runtime (one the scheduler has loaded).
    pub runtime: &'a RuntimeConfig,
    /// The platform.
    pub platform: &'a PlatformConfig,
}

impl Candidate<'_> {
    /// The entry's rules, if any.
    pub fn rules(&self) -> Option<&Rules> {
        self.entry.rules.as_ref()
    }
}

/// Upstream `Scheduler.get_schedule`: for each entry `event` triggers, the job, the runtime
/// and each platform. `loaded` are the runtimes this scheduler runs: `runtime.name` must be one
/// of them (otherwise the entry is skipped); `runtime.type` picks one of that `lab_type` with
/// `pick` (upstream: at random). An empty `platforms` list means the platform named like the
/// runtime's `lab_type`. Unknown jobs and platforms are skipped silently.
pub fn get_schedule<'a>(
    config: &'a PipelineConfig,
    event: &Map<String, Value>,
    channel: &str,
    loaded: &[&'a RuntimeConfig],
    mut pick: impl FnMut(usize) -> usize,
) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for entry in get_configs(config, event, channel) {
        let Some(job) = config.jobs.get(&entry.job) else {
            continue;
        };
        let runtime = match (&entry.runtime.name, &entry.runtime.lab_type) {
            (Some(name), _) => loaded.iter().copied().find(|r| &r.name == name),
            (None, Some(lab_type)) => {
                let of_type: Vec<&RuntimeConfig> = loaded
                    .iter()
                    .copied()
                    .filter(|r| &r.lab_type == lab_type)
                    .collect();
                match of_type.len() {
                    0 => None,
                    n => of_type.get(pick(n) % n).copied(),
                }
            }
            (None, None) => None,
        };
        let Some(runtime) = runtime else { continue };
        let default_platform = [runtime.lab_type.clone()];
        let names: &[String] = if entry.platforms.is_empty() {
            &default_platform
        } else {
            &entry.platforms
        };
        for name in names {
            if let Some(platform) = config.platforms.get(name) {
                out.push(Candidate {
                    entry,
                    job,
                    runtime,
                    platform,
                });
            }
        }
    }
    out
}

/// A random index below `n` (the default `pick` of [`get_schedule`]); 0 without an entropy
/// source.
pub fn random_pick(n: usize) -> usize {
    crate::random::below(n as u64).map_or(0, |i| i as usize)
}

/// Finds nodes by id, for rules that look at ancestors (a node's `tree` lives on the checkout).
#[async_trait]
pub trait NodeLookup: Send + Sync {
    /// The node with this id, or `None` when it does not exist or cannot be fetched.
    async fn node(&self, id: &ObjectId) -> Option<Node>;
}

#[async_trait]
impl NodeLookup for HashMap<ObjectId, Node> {
    async fn node(&self, id: &ObjectId) -> Option<Node> {
        self.get(id).cloned()
    }
}

#[async_trait]
impl NodeLookup for BTreeMap<ObjectId, Node> {
    async fn node(&self, id: &ObjectId) -> Option<Node> {
        self.get(id).cloned()
    }
}

#[async_trait]
impl<A: crate::client::Api + ?Sized> NodeLookup for A {
    async fn node(&self, id: &ObjectId) -> Option<Node> {
        match self.get_node(*id).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(node = %id, error = %e, "cannot fetch an ancestor for the rules");
                None
            }
        }
    }
}

/// The first object containing `key` in `value`, searching depth-first in key order
/// (upstream `_find_container`).
fn find_container<'a>(key: &str, value: &'a Value) -> Option<&'a Map<String, Value>> {
    let obj = value.as_object()?;
    if obj.contains_key(key) {
        return Some(obj);
    }
    obj.values()
        .filter(|v| v.is_object())
        .find_map(|v| find_container(key, v))
}

/// The container of `key` in `node` or, failing that, in its ancestors (fetched with `lookup`).
pub async fn find_container_up(
    key: &str,
    node: &Node,
    lookup: &dyn NodeLookup,
) -> Option<Map<String, Value>> {
    let mut current = node.clone();
    // A bound on the walk, in case of a parent loop.
    for _ in 0..64 {
        let value = current.to_value();
        if let Some(c) = find_container(key, &value) {
            return Some(c.clone());
        }
        let parent = current.parent?;
        current = lookup.node(&parent).await?;
    }
    None
}
