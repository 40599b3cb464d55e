//! The scheduler service: matching events to jobs and submitting them to runtimes.
//!
//! [`Scheduler`] runs on the shared service skeleton ([`super::service`]): two durable
//! subscriptions, `node` (`<name>:node`) and `retry` (`<name>:retry`), each event acknowledged
//! only after it was handled. It matches each event against the `scheduler:` entries
//! ([`super::rules::get_schedule`], edge-triggered), runs upstream's per-candidate checks
//! (frequency, architecture filter, entry rules, LAVA queue gate, duplicate guard), creates the
//! job node, renders the job through its [`Runtime`] and submits it. A failure marks the node
//! `done` with `invalid_job_params`, `job_generation_error` or `submit_error`
//! (`spec/kernelci-pipeline.md` §1.3, §4.3–§4.5).
//!
//! Crash safety: an event handled again (the scheduler died before the acknowledgement) never
//! makes a second job node — an existing child with the same parent, name, platform and retry
//! counter is reused. When that node was created but its job never submitted (a death between
//! the two), the job is submitted then for the existing node; a death between the submission
//! and the node update can run the job twice (at-least-once), still on one node.
//!
//! The scheduler never waits for jobs: the job itself, the LAVA callback or the timeout
//! service finishes the node.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::rules::{self, Candidate, DuplicateGuard, NodeLookup};
use super::service::{
    EventHandler, EventSubscription, ServiceContext, ServiceError, ServiceResult, async_trait,
};
use crate::client::{Api, ClientError, ReceivedEvent};
use crate::config::{PipelineConfig, RuntimeConfig};
use crate::models::{ErrorCode, Node, ObjectId, State, Timestamp};
use crate::runtime::Runtime;

mod options;
mod submit;
pub use options::SchedulerOptions;

/// What went wrong in the scheduler itself (not in one job: a job's failure is recorded on
/// its node).
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The API answered with an error or could not be reached.
    #[error("API: {0}")]
    Api(#[from] ClientError),
    /// The configuration does not fit (a loaded runtime missing from `runtimes:`, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// The health endpoint could not be served.
    #[error("health endpoint: {0}")]
    Health(#[source] std::io::Error),
}

impl SchedulerError {
    /// The cross-module kind of this error.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            SchedulerError::Api(e) => e.kind(),
            SchedulerError::Config(_) => crate::ErrorKind::Invalid,
            SchedulerError::Health(_) => crate::ErrorKind::Unavailable,
        }
    }
}

/// What happened to one candidate job of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job node was created and the job submitted.
    Submitted {
        /// The job node.
        node: ObjectId,
        /// The runtime's job id (`None` for pull-based labs).
        job_id: Option<String>,
    },
    /// The job node was created but the job failed before running; the node is `done` with
    /// this error code.
    Failed {
        /// The job node.
        node: ObjectId,
        /// The recorded error code.
        error_code: ErrorCode,
        /// The recorded error message.
        message: String,
    },
    /// The job was not created: why.
    Skipped(String),
}

/// One candidate's result, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// The job name.
    pub job: String,
    /// The runtime name.
    pub runtime: String,
    /// The platform name.
    pub platform: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Whether an existing job node was created but its job never submitted (a crash between the
/// two): still `running`, no job id, no job definition URL and no recorded error. Such a node
/// is reused and submitted when its event comes again.
fn never_submitted(node: &Node) -> bool {
    node.state == State::Running
        && node.data_path("job_id").is_none_or(Value::is_null)
        && node.data_path("error_code").is_none_or(Value::is_null)
        && node
            .artifacts
            .as_ref()
            .is_none_or(|a| !a.contains_key("job_definition"))
}

/// The telemetry event of one candidate (upstream `job_submission`, `runtime_error`,
/// `job_skip`); skips by rules send nothing.
fn telemetry_event(
    c: &Candidate<'_>,
    input: &Node,
    retry_counter: i64,
    outcome: &Outcome,
) -> Option<Value> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let mut e = serde_json::json!({
        "runtime": c.runtime.name,
        "device_type": c.platform.device_type(),
        "job_name": c.job.name,
        "tree": s(input.data_path("kernel_revision.tree")),
        "branch": s(input.data_path("kernel_revision.branch")),
        "arch": s(c.job.params.get("arch")).or_else(|| s(input.data_path("arch"))),
        "retry": retry_counter,
    });
    let obj = e.as_object_mut()?;
    let mut set = |k: &str, v: Value| {
        obj.insert(k.to_owned(), v);
    };
    match outcome {
        Outcome::Submitted { node, job_id } => {
            set("kind", "job_submission".into());
            set("node_id", node.to_string().into());
            set("job_id", job_id.clone().map_or(Value::Null, Value::String));
        }
        Outcome::Failed {
            node,
            error_code,
            message,
        } => {
            set("kind", "runtime_error".into());
            set("node_id", node.to_string().into());
            set(
                "error_type",
                serde_json::to_value(error_code).unwrap_or(Value::Null),
            );
            set("error_msg", message.clone().into());
            set(
                "is_infra_error",
                (*error_code == ErrorCode::SubmitError).into(),
            );
        }
        Outcome::Skipped(why) if why.contains("rules") => return None,
        Outcome::Skipped(why) => {
            set("kind", "job_skip".into());
            set("node_id", input.id.map(|i| i.to_string()).into());
            set("extra", serde_json::json!({ "reason": why }));
        }
    }
    Some(e)
}

/// The scheduler service. Share it as `Arc<Scheduler>`; [`Scheduler::handle_event`] is safe
/// to call from several tasks.
#[derive(Debug)]
pub struct Scheduler {
    config: Arc<PipelineConfig>,
    api: Arc<dyn Api>,
    runtimes: BTreeMap<String, Arc<dyn Runtime>>,
    options: SchedulerOptions,
    guard: Mutex<DuplicateGuard>,
}

impl Scheduler {
    /// A scheduler for `config`, talking to `api` (with a token), running jobs on `runtimes`
    /// (each must be an entry of the `runtimes:` section, by [`Runtime::name`]).
    pub fn new(
        config: Arc<PipelineConfig>,
        api: impl Into<Arc<dyn Api>>,
        runtimes: Vec<Arc<dyn Runtime>>,
        options: SchedulerOptions,
    ) -> Result<Scheduler, SchedulerError> {
        let mut map = BTreeMap::new();
        for r in runtimes {
            if !config.runtimes.contains_key(r.name()) {
                return Err(SchedulerError::Config(format!(
                    "runtime {:?} is not in the runtimes configuration",
                    r.name()
                )));
            }
            map.insert(r.name().to_owned(), r);
        }
        if map.is_empty() {
            return Err(SchedulerError::Config("no runtime to schedule on".into()));
        }
        Ok(Scheduler {
            config,
            api: api.into(),
            runtimes: map,
            options,
            guard: Mutex::new(DuplicateGuard::default()),
        })
    }

    /// The options.
    pub fn options(&self) -> &SchedulerOptions {
        &self.options
    }

    fn loaded(&self) -> Vec<&RuntimeConfig> {
        self.config
            .runtimes
            .values()
            .filter(|r| self.runtimes.contains_key(&r.name))
            .collect()
    }

    /// Handles one event received on `channel` (`node` or `retry`): every matching job is
    /// created and submitted. Errors are returned only for failures that a later redelivery
    /// may fix (the API unreachable); a job's own failure is recorded on its node.
    pub async fn handle_event(
        &self,
        event: &Map<String, Value>,
        channel: &str,
    ) -> Result<Vec<Scheduled>, SchedulerError> {
        if channel == "node" && !self.accepts_owner(event) {
            return Ok(Vec::new());
        }
        // Retry events are matched against the `channel: node` entries (upstream quirk).
        let candidates = rules::get_schedule(
            &self.config,
            event,
            "node",
            &self.loaded(),
            rules::random_pick,
        );
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let Some(id) = event
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<ObjectId>().ok())
        else {
            tracing::warn!(?event, "event without a node id; skipped");
            return Ok(Vec::new());
        };
        let retry_counter = event
            .get("retry_counter")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut telemetry = Vec::new();
        for c in candidates {
            // Upstream fetches the input node again for every candidate.
            let Some(mut input) = self.api.get_node(id).await? else {
                tracing::warn!(node = %id, "input node not found; event skipped");
                return Ok(out);
            };
            for key in ["jobfilter", "platform_filter"] {
                if let Some(Value::Array(items)) = event.get(key) {
                    let list: Vec<String> = items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                    if key == "jobfilter" {
                        input.jobfilter = Some(list);
                    } else {
                        input.platform_filter = Some(list);
                    }
                }
            }
            let outcome = self.candidate(&c, &input, retry_counter).await?;
            match &outcome {
                Outcome::Skipped(why) => {
                    tracing::debug!(job = %c.job.name, platform = %c.platform.name, %why, "job skipped")
                }
                other => {
                    tracing::info!(job = %c.job.name, runtime = %c.runtime.name, platform = %c.platform.name, outcome = ?other, "job scheduled")
                }
            }
            if let Some(t) = telemetry_event(&c, &input, retry_counter, &outcome) {
                telemetry.push(t);
            }
            out.push(Scheduled {
                job: c.job.name.clone(),
                runtime: c.runtime.name.clone(),
                platform: c.platform.name.clone(),
                outcome,
            });
        }
        if !telemetry.is_empty()
            && let Err(e) = self.api.add_telemetry(&telemetry).await
        {
            tracing::warn!(error = %e, "cannot send telemetry");
        }
        Ok(out)
    }

    fn accepts_owner(&self, event: &Map<String, Value>) -> bool {
        let check = |key: &str, want: &Option<String>| match want {
            Some(w) => event.get(key).and_then(Value::as_str) == Some(w.as_str()),
            None => true,
        };
        check("owner", &self.options.event_owner)
            && check("submitter", &self.options.event_submitter)
    }

    async fn candidate(
        &self,
        c: &Candidate<'_>,
        input: &Node,
        retry_counter: i64,
    ) -> Result<Outcome, SchedulerError> {
        let skip = |why: &str| Ok(Outcome::Skipped(why.to_owned()));
        let Some(runtime) = self.runtimes.get(&c.runtime.name) else {
            return skip("runtime not loaded");
        };
        let Some(input_id) = input.id else {
            return skip("input node has no id");
        };
        // 2. Job frequency.
        if let Some(freq) = rules::job_frequency(c.job) {
            let since = chrono::Utc::now().naive_utc()
                - chrono::Duration::seconds(i64::try_from(freq.as_secs()).unwrap_or(i64::MAX));
            let since = since.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
            let tree = input
                .data_path("kernel_revision.tree")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let branch = input
                .data_path("kernel_revision.branch")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let recent = self
                .api
                .find_nodes(&[
                    ("name", c.job.name.as_str()),
                    ("data.kernel_revision.tree", &tree),
                    ("data.kernel_revision.branch", &branch),
                    ("data.platform", c.platform.name.as_str()),
                    ("created__gte", &since),
                    ("offset", "0"),
                    ("limit", "1"),
                ])
                .await?;
            if !recent.items.is_empty() {
                return skip("ran within its frequency");
            }
        }
        // 3. Architecture filter.
        if c.job.kind == "kbuild"
            && let Some(Value::Array(archs)) = input.data_path("architecture_filter")
            && !archs.is_empty()
        {
            let arch = c.job.params.get("arch");
            if !arch.is_some_and(|a| archs.contains(a)) {
                return skip("architecture filter");
            }
        }
        // 4. Scheduler-entry rules.
        if !rules::should_create_node(c.rules(), input, &self.api).await {
            return skip("entry rules");
        }
        // 5. LAVA queue gate (fails open).
        if c.runtime.lab_type == "lava" {
            let q = rules::QueueSettings::from_runtime(c.runtime);
            if !q.disabled {
                let device_type = c
                    .job
                    .params
                    .get("device_type")
                    .and_then(Value::as_str)
                    .unwrap_or(&c.platform.name)
                    .to_owned();
                match runtime.online_devices(&device_type).await {
                    Ok(Some(online)) if online.is_empty() => {
                        if !self.options.disable_device_health_check {
                            return skip("no online device");
                        }
                        tracing::warn!(%device_type, "no online device; scheduling anyway");
                    }
                    Ok(Some(online)) => {
                        if let Ok(Some(queued)) = runtime.queue_depth(&device_type).await {
                            let base = rules::base_priority(&self.config, input, c.job);
                            let limit = rules::queue_limit(
                                q.max_queue_depth,
                                online.len(),
                                base,
                                q.priority_factor,
                            );
                            if queued >= limit {
                                return skip("LAVA queue full");
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "queue gate check failed; not skipping"),
                }
            }
        }
        // 6. Duplicate guard (in memory), then the durable check on the API.
        let key = (
            input_id.to_string(),
            c.job.name.clone(),
            c.runtime.name.clone(),
            c.platform.name.clone(),
            retry_counter,
        );
        let duplicate = self
            .guard
            .lock()
            .map(|mut g| g.check(key.clone(), Instant::now()))
            .unwrap_or(false);
        if duplicate {
            return skip("duplicate within 600 s");
        }
        let result = self
            .run_job(c, runtime, input, input_id, retry_counter)
            .await;
        if result.is_err() {
            // Let a redelivery of the event try again.
            if let Ok(mut g) = self.guard.lock() {
                g.forget(&key);
            }
        }
        result
    }

    async fn existing_child(
        &self,
        parent: ObjectId,
        job: &str,
        platform: &str,
        retry_counter: i64,
    ) -> Result<Option<Node>, SchedulerError> {
        let parent = parent.to_string();
        let retry = retry_counter.to_string();
        let page = self
            .api
            .find_nodes(&[
                ("parent", parent.as_str()),
                ("name", job),
                ("data.platform", platform),
                ("retry_counter", retry.as_str()),
                ("limit", "1"),
            ])
            .await?;
        Ok(page.items.into_iter().next())
    }

    async fn run_job(
        &self,
        c: &Candidate<'_>,
        runtime: &Arc<dyn Runtime>,
        input: &Node,
        input_id: ObjectId,
        retry_counter: i64,
    ) -> Result<Outcome, SchedulerError> {
        let Some(mut node) = rules::job_node(
            input,
            c.job,
            c.runtime,
            c.platform,
            retry_counter,
            &self.api as &dyn NodeLookup,
        )
        .await
        else {
            return Ok(Outcome::Skipped("job, runtime or platform rules".into()));
        };
        let existing = self
            .existing_child(input_id, &c.job.name, &c.platform.name, retry_counter)
            .await?;
        let resumed = match existing {
            Some(e) if !never_submitted(&e) => {
                tracing::info!(node = ?e.id, job = %c.job.name, "job node exists already; not creating another");
                return Ok(Outcome::Skipped("job node exists already".into()));
            }
            Some(e) => {
                // A redelivered event after a crash between the creation and the submission:
                // the node is reused and the job submitted now.
                tracing::warn!(node = ?e.id, job = %c.job.name, "job node exists but its job was never submitted; submitting it");
                Some(e)
            }
            None => None,
        };
        if let Some(bc) = input
            .data_path("kernel_revision.tree")
            .and_then(Value::as_str)
            .zip(
                input
                    .data_path("kernel_revision.branch")
                    .and_then(Value::as_str),
            )
            .and_then(|(t, b)| self.config.build_config_for(t, b))
            && let Some(p) = bc.priority
            && let Some(data) = node.data.as_mut()
        {
            data.insert(
                "tree_priority".into(),
                serde_json::to_value(p).unwrap_or(Value::Null),
            );
        }
        let mut node = match resumed {
            Some(existing) => existing,
            None => {
                node.timeout = Timestamp::now().plus_secs(crate::models::DEFAULT_TIMEOUT_SECS);
                let created = self.api.create_node(&node).await?;
                super::service::crash_point("job-node-created").await;
                created
            }
        };
        let Some(node_id) = node.id else {
            return Err(SchedulerError::Config(
                "the API returned a node without id".into(),
            ));
        };
        match self.submit(c, runtime, input, &mut node).await {
            Ok(job_id) => {
                super::service::crash_point("job-submitted").await;
                self.record_submission(&node).await?;
                Ok(Outcome::Submitted {
                    node: node_id,
                    job_id,
                })
            }
            Err((result, code, message)) => {
                tracing::warn!(node = %node_id, job = %c.job.name, error_code = ?code, %message, "job failed before running");
                node.state = State::Done;
                node.result = Some(result);
                if let Some(data) = node.data.as_mut() {
                    data.insert(
                        "error_code".into(),
                        serde_json::to_value(code).unwrap_or(Value::Null),
                    );
                    data.insert("error_msg".into(), Value::String(message.clone()));
                }
                self.api.update_node(&node, false).await?;
                Ok(Outcome::Failed {
                    node: node_id,
                    error_code: code,
                    message,
                })
            }
        }
    }

    /// What the scheduler subscribes to on `channel` (`node` or `retry`): every event of the
    /// channel (the matching is [`Scheduler::handle_event`]'s), promiscuous for `retry` or
    /// when asked. A failing event (the API unreachable) is retried with backoff (up to one
    /// minute apart) until it succeeds: the scheduler never skips an event.
    pub fn subscription(&self, channel: &str) -> EventSubscription {
        let mut sub = EventSubscription::new(channel)
            .promiscuous(self.options.promiscuous || channel == "retry");
        sub.max_attempts = u32::MAX;
        sub.retry_delay = Duration::from_secs(2);
        sub
    }

    /// Runs the service on the shared skeleton until `ctx`'s shutdown: two durable
    /// subscriptions, `<ctx name>:node` and `<ctx name>:retry`, each event acknowledged after
    /// it was handled; `/health` is the context's ([`ServiceContext::serve_health`]). Returns
    /// early with an error only when a listener fails for good (e.g. the token is refused).
    pub async fn run(self: Arc<Self>, ctx: &ServiceContext) -> ServiceResult<()> {
        let mut node = ChannelHandler {
            scheduler: self.clone(),
            channel: "node",
        };
        let mut retry = ChannelHandler {
            scheduler: self.clone(),
            channel: "retry",
        };
        let (node_sub, retry_sub) = (self.subscription("node"), self.subscription("retry"));
        tokio::try_join!(
            ctx.run_events(node_sub, &mut node),
            ctx.run_events(retry_sub, &mut retry),
        )
        .map(|_| ())
    }
}

/// The event handler of one of the scheduler's channels.
struct ChannelHandler {
    scheduler: Arc<Scheduler>,
    channel: &'static str,
}

#[async_trait]
impl EventHandler for ChannelHandler {
    async fn handle(&mut self, _ctx: &ServiceContext, event: &ReceivedEvent) -> ServiceResult<()> {
        let Value::Object(data) = &event.event.data else {
            return Ok(());
        };
        self.scheduler
            .handle_event(data, self.channel)
            .await
            .map(|_| ())
            .map_err(ServiceError::from)
    }
}

impl From<SchedulerError> for ServiceError {
    fn from(e: SchedulerError) -> ServiceError {
        match e {
            SchedulerError::Api(e) => ServiceError::Client(e),
            SchedulerError::Config(m) => ServiceError::Config(m),
            SchedulerError::Health(e) => ServiceError::io("health endpoint", e),
        }
    }
}
