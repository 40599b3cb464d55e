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

/// Python `str()` of a scalar, for comparing rule values.
fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Null => None,
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[derive(Default)]
struct Split<'a> {
    allow: Vec<&'a str>,
    deny: Vec<&'a str>,
    allow_combo: Vec<(&'a str, &'a str)>,
    deny_combo: Vec<(&'a str, &'a str)>,
}

fn split_values(values: &[String], combos: bool) -> Split<'_> {
    let mut s = Split::default();
    for v in values {
        let (denied, v) = match v.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, v.as_str()),
        };
        match v.split_once(':').filter(|_| combos) {
            Some(pair) if denied => s.deny_combo.push(pair),
            Some(pair) => s.allow_combo.push(pair),
            None if denied => s.deny.push(v),
            None => s.allow.push(v),
        }
    }
    s
}

fn kernel_version(node: &Node) -> Option<(i64, i64)> {
    let v = node.data_path("kernel_revision.version")?;
    let num = |k: &str| match v.get(k)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    Some((num("version")?, num("patchlevel")?))
}

/// Upstream `should_create_node(rules, node)`: whether `node` passes `rules`.
///
/// - `tree` and `branch` (read from the container of `tree`, normally
///   `data.kernel_revision`, in the node or its ancestors): an allowed `tree:branch` combo
///   accepts both at once; a denied combo, a denied value, only combos without plain allows,
///   or a value missing from the plain allows rejects.
/// - `*_version`: `min_*` rejects older kernels, `max_*` newer ones (`(version, patchlevel)`
///   of `data.kernel_revision.version`; a node without a version is rejected).
/// - any other key, read from its container in the node or its ancestors: a missing key is
///   rejected when there are allowed values; a list (e.g. `fragments`) is rejected when any
///   element is denied or, with allowed values, when no element is allowed; a scalar is
///   rejected when denied or not allowed.
pub async fn should_create_node(
    rules: Option<&Rules>,
    node: &Node,
    lookup: &dyn NodeLookup,
) -> bool {
    let Some(rules) = rules else { return true };
    if rules.0.is_empty() {
        return true;
    }
    if rules.0.contains_key("tree") || rules.0.contains_key("branch") {
        let container = find_container_up("tree", node, lookup).await;
        let get = |k: &str| {
            container
                .as_ref()
                .and_then(|c| c.get(k))
                .and_then(value_str)
        };
        let tree = get("tree");
        let branch = get("branch");
        for key in ["tree", "branch"] {
            let values = rules.values(key);
            if !rules.0.contains_key(key) {
                continue;
            }
            let s = split_values(values, true);
            let matches_combo = |(t, b): &(&str, &str)| {
                tree.as_deref() == Some(*t) && branch.as_deref() == Some(*b)
            };
            if s.allow_combo.iter().any(matches_combo) {
                break;
            }
            if s.deny_combo.iter().any(matches_combo) {
                return false;
            }
            let value = if key == "tree" { &tree } else { &branch };
            let value = value.as_deref();
            if value.is_some_and(|v| s.deny.contains(&v)) {
                return false;
            }
            if !s.allow_combo.is_empty() && s.allow.is_empty() {
                return false;
            }
            if !s.allow.is_empty() && !value.is_some_and(|v| s.allow.contains(&v)) {
                return false;
            }
        }
    }
    for (key, entry) in &rules.0 {
        if key == "tree" || key == "branch" {
            continue;
        }
        match entry {
            RuleEntry::Version(rule) => {
                let Some(kver) = kernel_version(node) else {
                    return false;
                };
                let limit = (i64::from(rule.version), i64::from(rule.patchlevel));
                if key.starts_with("min_") && kver < limit {
                    return false;
                }
                if key.starts_with("max_") && kver > limit {
                    return false;
                }
            }
            RuleEntry::Values(values) => {
                let s = split_values(values, false);
                let container = find_container_up(key, node, lookup).await;
                let Some(value) = container.as_ref().and_then(|c| c.get(key)) else {
                    if s.allow.is_empty() {
                        continue;
                    }
                    return false;
                };
                match value {
                    Value::Array(items) => {
                        let items: Vec<String> = items.iter().filter_map(value_str).collect();
                        if items.iter().any(|i| s.deny.contains(&i.as_str())) {
                            return false;
                        }
                        if !s.allow.is_empty()
                            && !items.iter().any(|i| s.allow.contains(&i.as_str()))
                        {
                            return false;
                        }
                    }
                    scalar => {
                        let v = value_str(scalar);
                        let v = v.as_deref();
                        if v.is_some_and(|v| s.deny.contains(&v)) {
                            return false;
                        }
                        if !s.allow.is_empty() && !v.is_some_and(|v| s.allow.contains(&v)) {
                            return false;
                        }
                    }
                }
            }
        }
    }
    true
}

/// The retry job filter: with a non-empty `jobfilter` that does not name `job`, the job is
/// allowed only when an entry `X+` has `X` equal to the job name or to an element of `path`
/// (the new node's path: everything below `X` is allowed).
pub fn jobfilter_allows(jobfilter: Option<&[String]>, job: &str, path: &[String]) -> bool {
    let Some(filter) = jobfilter.filter(|f| !f.is_empty()) else {
        return true;
    };
    if filter.iter().any(|f| f == job) {
        return true;
    }
    filter.iter().any(|f| {
        f.strip_suffix('+')
            .is_some_and(|x| x == job || path.iter().any(|p| p == x))
    })
}

/// The retry platform filter: a non-empty filter must include the platform.
pub fn platform_filter_allows(platform_filter: Option<&[String]>, platform: &str) -> bool {
    match platform_filter {
        Some(f) if !f.is_empty() => f.iter().any(|p| p == platform),
        _ => true,
    }
}

fn escape_commit_messages(value: &mut Value) {
    match value {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "commit_message" {
                    if let Value::String(s) = v {
                        *s = s.replace('{', "{{").replace('}', "}}");
                    }
                } else {
                    escape_commit_messages(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(escape_commit_messages),
        _ => {}
    }
}

/// Upstream `APIHelper.create_job_node`, without the POST: the job node for `job` below
/// `input` on `runtime` and `platform`, or `None` when the retry filters or the job, runtime or
/// platform rules reject it.
///
/// The node is `running` with the API default timeout, `submitter` and `treeid` copied from
/// the input, `data.kernel_revision` from the input (plus `kernel_type`, `arch`, `defconfig`,
/// `config_full`, `compiler` for kind `job`), `data.runtime`, `data.platform`, and every
/// string of `data` formatted with the platform attributes, `krev` and the job params.
pub async fn job_node(
    input: &Node,
    job: &JobConfig,
    runtime: &RuntimeConfig,
    platform: &PlatformConfig,
    retry_counter: i64,
    lookup: &dyn NodeLookup,
) -> Option<Node> {
    let mut path = input.path.clone();
    path.push(job.name.clone());
    if !jobfilter_allows(input.jobfilter.as_deref(), &job.name, &path) {
        return None;
    }
    let mut node = Node::new(crate::models::NodeKind::Job, job.name.clone());
    node.kind = job.kind.clone();
    node.parent = input.id;
    node.path = path;
    node.group = Some(job.name.clone());
    node.artifacts = Some(Map::new());
    node.treeid = input.treeid.clone();
    node.submitter = input.submitter.clone();
    node.retry_counter = retry_counter;
    node.state = State::Running;
    node.jobfilter = input.jobfilter.clone();
    node.platform_filter = input.platform_filter.clone().or_else(|| Some(Vec::new()));
    let mut data = Map::new();
    if let Some(krev) = input.data_path("kernel_revision") {
        data.insert("kernel_revision".into(), krev.clone());
    }
    node.data = Some(data.clone());
    if !should_create_node(job.rules.as_ref(), &node, lookup).await {
        return None;
    }
    if job.kind == "job" {
        for key in [
            "kernel_type",
            "arch",
            "defconfig",
            "config_full",
            "compiler",
        ] {
            if let Some(v) = input.data_path(key) {
                data.insert(key.into(), v.clone());
            }
        }
    }
    data.insert("runtime".into(), Value::String(runtime.name.clone()));
    node.data = Some(data.clone());
    if !should_create_node(runtime.rules.as_ref(), &node, lookup).await {
        return None;
    }
    if job.kind == "job"
        && !platform_filter_allows(input.platform_filter.as_deref(), &platform.name)
    {
        return None;
    }
    data.insert("platform".into(), Value::String(platform.name.clone()));
    node.data = Some(data.clone());
    if !should_create_node(platform.rules.as_ref(), &node, lookup).await {
        return None;
    }
    let mut data = Value::Object(data);
    escape_commit_messages(&mut data);
    let mut extra = job.params.clone();
    if let Some((v, p)) = kernel_version(input) {
        extra.insert("krev".into(), Value::String(format!("{v}.{p}")));
    }
    if let Value::Object(formatted) = platform.format_params(&data, &extra) {
        node.data = Some(formatted);
    }
    Some(node)
}

/// A priority value as the scheduler maps it: `high` = 60, `medium` = 40, `low` = 20, a number
/// clamped to 0..100; anything else is `None`.
pub fn priority_value(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => match s.as_str() {
            "high" => Some(60),
            "medium" => Some(40),
            "low" => Some(20),
            other => other.parse::<i64>().ok().map(|n| n.clamp(0, 100)),
        },
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(|n| n.clamp(0, 100)),
        _ => None,
    }
}

/// A LAVA runtime's priority settings (`priority`, `priority_min`, `priority_max`), each
/// clamped to 0..100; `priority` accepts `low` = 0, `medium` = 50, `high` = 100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabPriority {
    /// `priority`.
    pub priority: Option<i64>,
    /// `priority_min` (defaults to `priority`).
    pub min: Option<i64>,
    /// `priority_max` (defaults to `priority`).
    pub max: Option<i64>,
}

impl LabPriority {
    /// Reads the settings of a LAVA runtime entry.
    pub fn from_runtime(runtime: &RuntimeConfig) -> LabPriority {
        let lab = |v: &Value| {
            match v {
                Value::String(s) => match s.as_str() {
                    "low" => Some(0),
                    "medium" => Some(50),
                    "high" => Some(100),
                    other => other.parse::<i64>().ok(),
                },
                Value::Number(n) => n.as_i64(),
                _ => None,
            }
            .map(|n| n.clamp(0, 100))
        };
        let priority = runtime.settings.get("priority").and_then(lab);
        LabPriority {
            priority,
            min: runtime
                .settings
                .get("priority_min")
                .and_then(lab)
                .or(priority),
            max: runtime
                .settings
                .get("priority_max")
                .and_then(lab)
                .or(priority),
        }
    }
}

/// Upstream LAVA `_get_priority`: a job a person submitted (`submitter` is not
/// `service:pipeline`) uses `data.priority` (default 80); a pipeline job uses
/// `data.tree_priority`, else the job's priority (default 20). Then, when the lab sets
/// `priority`, `p × priority / 100`; else, when it sets both bounds,
/// `p × (max − min) / 100 + min` (truncated).
pub fn lava_priority(
    submitter: Option<&str>,
    node_priority: Option<&Value>,
    tree_priority: Option<&Value>,
    job_priority: Option<Priority>,
    lab: LabPriority,
) -> i64 {
    let p = if submitter != Some(SERVICE_PIPELINE) {
        node_priority.and_then(priority_value).unwrap_or(80)
    } else {
        tree_priority
            .and_then(priority_value)
            .or_else(|| job_priority.map(|p| i64::from(p.base())))
            .unwrap_or(20)
    };
    if let Some(scale) = lab.priority.filter(|p| *p != 0) {
        (p * scale) / 100
    } else if let (Some(min), Some(max)) = (lab.min, lab.max) {
        ((p as f64) * ((max - min) as f64) / 100.0 + min as f64) as i64
    } else {
        p
    }
}

/// The base priority of the queue gate: the priority of the build config following the input's
/// tree and branch, else the job's, else 20.
pub fn base_priority(config: &PipelineConfig, input: &Node, job: &JobConfig) -> u8 {
    let tree = input
        .data_path("kernel_revision.tree")
        .and_then(Value::as_str);
    let branch = input
        .data_path("kernel_revision.branch")
        .and_then(Value::as_str);
    let tree_priority = match (tree, branch) {
        (Some(t), Some(b)) => config.build_config_for(t, b).and_then(|bc| bc.priority),
        _ => None,
    };
    tree_priority.or(job.priority).map_or(20, Priority::base)
}

/// The LAVA queue limit: `int(max_queue_depth × online × factor)` with
/// `factor = 1 + base_priority/100 × (priority_factor − 1)` (`priority_factor` clamped to ≥ 1).
pub fn queue_limit(
    max_queue_depth: u64,
    online: usize,
    base_priority: u8,
    priority_factor: f64,
) -> u64 {
    let factor = 1.0 + f64::from(base_priority) / 100.0 * (priority_factor.max(1.0) - 1.0);
    (max_queue_depth as f64 * online as f64 * factor) as u64
}

/// The queue gate settings of a LAVA runtime entry: `max_queue_depth` (50),
/// `disable_queue_limit` (false), `max_queue_depth_priority_factor` (2.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSettings {
    /// `max_queue_depth`.
    pub max_queue_depth: u64,
    /// `disable_queue_limit`.
    pub disabled: bool,
    /// `max_queue_depth_priority_factor`, at least 1.
    pub priority_factor: f64,
}

impl QueueSettings {
    /// Reads the settings of a runtime entry.
    pub fn from_runtime(runtime: &RuntimeConfig) -> QueueSettings {
        let s = &runtime.settings;
        QueueSettings {
            max_queue_depth: s
                .get("max_queue_depth")
                .and_then(Value::as_u64)
                .unwrap_or(50),
            disabled: s
                .get("disable_queue_limit")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            priority_factor: s
                .get("max_queue_depth_priority_factor")
                .and_then(Value::as_f64)
                .unwrap_or(2.0)
                .max(1.0),
        }
    }
}

/// The key of the duplicate guard: input node, job, runtime, platform, retry counter.
pub type DuplicateKey = (String, String, String, String, i64);

/// Skips a job that was already scheduled for the same input, job, runtime, platform and retry
/// counter within a window (600 s), remembering at most `capacity` keys (50 000, least
/// recently used evicted first).
#[derive(Debug)]
pub struct DuplicateGuard {
    window: Duration,
    capacity: usize,
    seen: HashMap<DuplicateKey, (Instant, u64)>,
    order: BTreeMap<u64, DuplicateKey>,
    next: u64,
}

impl Default for DuplicateGuard {
    fn default() -> Self {
        DuplicateGuard::new(Duration::from_secs(600), 50_000)
    }
}

impl DuplicateGuard {
    /// A guard with this window and capacity.
    pub fn new(window: Duration, capacity: usize) -> DuplicateGuard {
        DuplicateGuard {
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    /// Whether `key` was seen within the window before `now`; otherwise records it at `now`
    /// and returns false.
    pub fn check(&mut self, key: DuplicateKey, now: Instant) -> bool {
        if let Some((at, seq)) = self.seen.get(&key).copied() {
            self.order.remove(&seq);
            let seq = self.bump();
            self.order.insert(seq, key.clone());
            if now.saturating_duration_since(at) < self.window {
                self.seen.insert(key, (at, seq));
                return true;
            }
            self.seen.insert(key, (now, seq));
            return false;
        }
        let seq = self.bump();
        self.order.insert(seq, key.clone());
        self.seen.insert(key, (now, seq));
        while self.seen.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.seen.remove(&oldest);
        }
        false
    }

    /// Forgets `key` (when the job it guarded was not created after all).
    pub fn forget(&mut self, key: &DuplicateKey) {
        if let Some((_, seq)) = self.seen.remove(key) {
            self.order.remove(&seq);
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn bump(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// The job frequency that applies: `params.frequency` when it parses to at least 60 s.
pub fn job_frequency(job: &JobConfig) -> Option<Duration> {
    job.frequency().filter(|d| d.as_secs() >= 60)
}

#[cfg(test)]
mod tests {
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
            job_node(
                &x86,
                job,
                &c.runtimes["lava-lab"],
                &c.platforms["qemu"],
                0,
                &map
            )
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
            job_node(
                &kb_next,
                job,
                &c.runtimes["lava-lab"],
                &c.platforms["qemu"],
                0,
                &map
            )
            .await
            .is_none()
        );
        // Retry filters.
        let mut filtered = kbuild.clone();
        filtered.jobfilter = Some(vec!["kunit".into()]);
        assert!(
            job_node(
                &filtered,
                job,
                &c.runtimes["shell"],
                &c.platforms["qemu"],
                0,
                &map
            )
            .await
            .is_none()
        );
        filtered.jobfilter = Some(vec!["baseline".into()]);
        filtered.platform_filter = Some(vec!["rpi".into()]);
        assert!(
            job_node(
                &filtered,
                job,
                &c.runtimes["shell"],
                &c.platforms["qemu"],
                0,
                &map
            )
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
}
