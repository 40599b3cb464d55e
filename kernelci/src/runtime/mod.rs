//! Runtimes: where a job runs.
//!
//! The [`Runtime`] trait turns a job (a job node plus its job and platform configuration) into
//! a job definition, submits it, and follows it: status, wait, cancel. The flow is upstream's
//! (`kernelci/runtime/__init__.py`, see `spec/kernelci-pipeline.md` §4.5–4.8):
//!
//! 1. [`Runtime::params`] builds the template parameters of the job;
//! 2. [`Runtime::generate`] renders the job's template into a [`JobDefinition`];
//! 3. [`Runtime::submit`] starts it and returns a [`JobHandle`] (or `None` for pull-based labs
//!    that fetch the definition themselves);
//! 4. [`Runtime::status`], [`Runtime::wait`] and [`Runtime::cancel`] follow it.
//!
//! The runtime does not depend on the YAML configuration types: the scheduler fills a
//! [`JobSpec`] from the job, platform and storage entries, and each runtime parses its own
//! typed settings from its runtime YAML entry when the registry builds it.
//!
//! Implementations (closed set plus an escape hatch, like bollard's transports):
//!
//! | `lab_type` | type | feature |
//! |---|---|---|
//! | `shell` | `ShellRuntime`: a local process per job | always |
//! | `docker` | `DockerRuntime`: a container per job (bollard) | `docker` |
//! | `kubernetes` | `KubernetesRuntime`: a `batch/v1` Job per job (kube) | `kubernetes` |
//! | `lava` | `LavaRuntime`: LAVA REST API | `lava` |
//! | anything else | registered by the application as a custom factory | always |
//!
//! [`RuntimeRegistry`] builds any of them from a runtime YAML entry ([`RuntimeEntry`]: name,
//! `lab_type`, the other keys), the `[runtime.<name>]` credentials ([`RuntimeCredentials`]) and
//! a [`RuntimeContext`] (templates, output directory, storage, job environment); a lab owner
//! adds a runtime with [`RuntimeRegistry::register`] (see `examples/custom_runtime.rs`).
//! [`TemplateEngine`] renders the Jinja2 job templates (`config/runtime/`), and every template
//! shipped here ends in `kci job run`, the job runner (`kernelci::pipeline::jobrunner`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
#[cfg(feature = "lava")]
pub mod lava;
pub mod registry;
#[cfg(unix)]
pub mod shell;
pub mod template;

#[cfg(feature = "docker")]
pub use docker::DockerRuntime;
#[cfg(feature = "kubernetes")]
pub use kubernetes::KubernetesRuntime;
#[cfg(feature = "lava")]
pub use lava::LavaRuntime;
pub use registry::{
    LabType, RuntimeContext, RuntimeCredentials, RuntimeEntry, RuntimeFactory, RuntimeRegistry,
};
#[cfg(unix)]
pub use shell::ShellRuntime;
pub use template::TemplateEngine;

/// The attribute implementations of [`Runtime`] use (re-exported, so implementers need no
/// direct `async-trait` dependency).
pub use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ErrorKind;
use crate::models::{ErrorCode, Node};

/// A boxed error source kept inside a [`RuntimeError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The template parameters of one job (upstream `get_params`): a JSON object whose keys the
/// job templates read (`name`, `node`, `runtime`, `platform_config`, the job params, ...).
pub type JobParams = Map<String, Value>;

/// Everything a runtime needs to know about one job, filled by the scheduler (or `kci job`)
/// from the job node and the job, platform and storage configuration entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job node (kind `kbuild`, `job`, ...), with its parent's artifacts merged into
    /// `artifacts` (upstream's "job view").
    pub node: Node,
    /// The job name (the key in `jobs.yaml`).
    pub name: String,
    /// The template file name (`jobs.<name>.template`, e.g. `kbuild.jinja2`).
    pub template: String,
    /// The job kind from `jobs.yaml` (`kbuild`, `job`, `test`, `process`, `node`).
    pub kind: String,
    /// The container image, with `{image_prefix}` already substituted.
    pub image: Option<String>,
    /// The job's `params` from `jobs.yaml`.
    pub params: JobParams,
    /// The platform name (the key in `platforms.yaml`).
    pub platform: String,
    /// The platform entry's attributes (`arch`, `boot_method`, `mach`, `dtb`, `params`, ...).
    pub platform_config: JobParams,
    /// The name of the storage config jobs upload to, when one is configured.
    pub storage_config_name: Option<String>,
    /// The storage config entry (`storage_type`, `base_url`, ...), when one is configured.
    pub storage_config: Option<JobParams>,
    /// The API config entry (`url`, `version`, `timeout`) jobs talk to, plus its `name`.
    pub api_config: JobParams,
}

/// A rendered job: what [`Runtime::submit`] starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDefinition {
    /// The file name the definition is saved under (upstream `_get_job_file_name`).
    pub file_name: String,
    /// The rendered text: a script (shell, docker), a Job manifest (kubernetes), a LAVA job.
    pub content: String,
    /// Runtime-specific metadata saved next to the definition (e.g. the docker image).
    pub metadata: Value,
}

/// A submitted job: how to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobHandle {
    /// The runtime's job id as stored in the node's `data.job_id` (a pid, a container id, a
    /// Kubernetes Job name, a LAVA job number).
    pub id: String,
    /// The runtime context the job was sent to (the Kubernetes context), stored in
    /// `data.job_context`.
    pub context: Option<String>,
}

impl fmt::Display for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.context {
            Some(context) => write!(f, "{}@{}", self.id, context),
            None => f.write_str(&self.id),
        }
    }
}

/// Where a submitted job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted, not started (a queued LAVA job, a pending pod).
    Queued,
    /// Running.
    Running,
    /// Finished on its own; `exit_code` 0 means the job itself worked (the job reports its
    /// results to the API; this is only the process outcome).
    Finished {
        /// The exit code of the job process (LAVA: 0 when health is Complete).
        exit_code: i32,
    },
    /// Ended without finishing: killed at its timeout, lost, an infrastructure error.
    Incomplete {
        /// The upstream error code for the node (`node_timeout`, `Infrastructure`, ...).
        error_code: ErrorCode,
        /// What happened, for `data.error_msg`.
        message: String,
    },
    /// Canceled through [`Runtime::cancel`] or by the lab.
    Canceled,
}

impl JobStatus {
    /// Whether the job has ended (finished, incomplete or canceled).
    pub fn is_final(&self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// A runtime: builds job definitions and runs them somewhere.
///
/// Implementations must be cheap to share (`Arc<dyn Runtime>`), must never panic on input
/// from the network or the configuration, and must map "the runtime is down" to
/// [`RuntimeErrorKind::Unavailable`], which the scheduler records as `submit_error`.
///
/// With the `mock` feature, `MockRuntime` (mockall) stands in for a runtime in users' unit
/// tests (e.g. of code that drives a custom runtime through the trait).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Runtime: Send + Sync + fmt::Debug {
    /// The runtime name (the key in the runtimes YAML).
    fn name(&self) -> &str;

    /// The `lab_type` (`shell`, `docker`, `kubernetes`, `lava`, or a custom one).
    fn lab_type(&self) -> &str;

    /// The template parameters of a job (upstream `get_params`). The default builds the
    /// upstream set with [`default_params`]; runtimes add their own keys.
    fn params(&self, job: &JobSpec) -> Result<JobParams, RuntimeError> {
        Ok(default_params(job, self.lab_type()))
    }

    /// Renders the job into a definition. An empty rendering is an error of kind
    /// [`RuntimeErrorKind::Generation`].
    fn generate(&self, job: &JobSpec, params: &JobParams) -> Result<JobDefinition, RuntimeError>;

    /// Starts the job. `Ok(None)` means a pull-based lab will fetch the definition itself
    /// (see [`Runtime::job_definition_url`]).
    async fn submit(&self, definition: &JobDefinition) -> Result<Option<JobHandle>, RuntimeError>;

    /// Where the job is now.
    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, RuntimeError>;

    /// Waits until the job ends, or `timeout` passes (then the job is canceled and reported
    /// [`JobStatus::Incomplete`] with `node_timeout`).
    async fn wait(&self, handle: &JobHandle, timeout: Duration) -> Result<JobStatus, RuntimeError>;

    /// Stops the job and releases what it used (process, container, Job, LAVA job). Canceling
    /// a job that already ended is not an error.
    async fn cancel(&self, handle: &JobHandle) -> Result<(), RuntimeError>;

    /// For pull-based submits: the URL of the uploaded definition (`artifacts.job_definition`).
    fn job_definition_url(&self, _definition: &JobDefinition) -> Option<String> {
        None
    }

    /// How many jobs are queued for a device type (LAVA queue gate); `None` when the runtime
    /// has no queue.
    async fn queue_depth(&self, _device_type: &str) -> Result<Option<u64>, RuntimeError> {
        Ok(None)
    }

    /// The online devices of a type (LAVA queue gate); `None` when the runtime has no devices.
    async fn online_devices(
        &self,
        _device_type: &str,
    ) -> Result<Option<Vec<String>>, RuntimeError> {
        Ok(None)
    }
}

/// Upstream's base parameters (`Runtime.get_params`): `name`, `node`, `runtime`,
/// `runtime_image`, `device_type`, `api_config`, `storage_config`, `platform_config`,
/// `instanceid`/`instance_callback` (from `KCI_INSTANCE`/`KCI_INSTANCE_CALLBACK`), then the
/// platform params, then the job params (later keys win), then `brarch`, `crosarch`, `debarch`
/// and `karch` derived from the job's or the platform's `arch`.
pub fn default_params(job: &JobSpec, lab_type: &str) -> JobParams {
    let mut params = JobParams::new();
    params.insert("api_config".into(), Value::Object(job.api_config.clone()));
    params.insert(
        "storage_config".into(),
        job.storage_config
            .clone()
            .map(Value::Object)
            .unwrap_or(Value::Null),
    );
    params.insert(
        "platform_config".into(),
        Value::Object(job.platform_config.clone()),
    );
    let env = |key: &str| std::env::var(key).map(Value::String).unwrap_or(Value::Null);
    params.insert("instanceid".into(), env("KCI_INSTANCE"));
    params.insert("instance_callback".into(), env("KCI_INSTANCE_CALLBACK"));
    params.insert("name".into(), Value::String(job.name.clone()));
    params.insert(
        "node".into(),
        serde_json::to_value(&job.node).unwrap_or(Value::Null),
    );
    params.insert("runtime".into(), Value::String(lab_type.to_owned()));
    params.insert(
        "runtime_image".into(),
        job.image.clone().map(Value::String).unwrap_or(Value::Null),
    );
    let device_type = job
        .platform_config
        .get("base_name")
        .and_then(Value::as_str)
        .unwrap_or(&job.platform)
        .to_owned();
    params.insert("device_type".into(), Value::String(device_type));
    if let Some(Value::Object(platform_params)) = job.platform_config.get("params") {
        params.extend(platform_params.clone());
    }
    params.extend(job.params.clone());
    let arch = job
        .params
        .get("arch")
        .or_else(|| job.platform_config.get("arch"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(arch) = arch {
        for (key, value) in arch_names(&arch) {
            params.insert(key.into(), Value::String(value));
        }
    }
    params
}

/// The architecture spellings upstream derives from `arch` (`brarch`, `crosarch`, `debarch`,
/// `karch`), each the arch unchanged unless mapped.
pub fn arch_names(arch: &str) -> BTreeMap<&'static str, String> {
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .find(|(from, _)| *from == arch)
            .map_or_else(|| arch.to_owned(), |(_, to)| (*to).to_owned())
    };
    BTreeMap::from([
        (
            "brarch",
            map(&[("arm", "armel"), ("x86_64", "x86"), ("riscv64", "riscv")]),
        ),
        ("crosarch", map(&[("arm", "armel")])),
        (
            "debarch",
            map(&[("arm", "armhf"), ("riscv", "riscv64"), ("x86_64", "amd64")]),
        ),
        ("karch", map(&[("armel", "arm"), ("x86_64", "x86")])),
    ])
}

/// What went wrong in a runtime, as a kind the scheduler can map to a node result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeErrorKind {
    /// The job's parameters are wrong (`invalid_job_params`).
    InvalidParams,
    /// The template failed to render or rendered nothing (`job_generation_error`).
    Generation,
    /// The runtime is down or refused the job (`submit_error`).
    Unavailable,
    /// No such job.
    NotFound,
    /// The runtime configuration is wrong.
    Config,
    /// Ran out of time.
    Timeout,
    /// A bug or an unexpected answer.
    Internal,
}

/// The name a job's files are named after: the `name` parameter, else the job name.
pub(crate) fn job_name<'a>(job: &'a JobSpec, params: &'a JobParams) -> &'a str {
    params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&job.name)
}

/// `name` as a file name stem: every character but ASCII letters, digits, `.`, `_` and `-`
/// becomes `_`, and leading dots are dropped (so no hidden files, no `..`). May be empty.
pub(crate) fn file_stem(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned.trim_start_matches('.').to_owned()
}

/// [`file_stem`], or `job` when that is empty: the file name of a script-like definition.
pub(crate) fn job_file_name(name: &str) -> String {
    let stem = file_stem(name);
    if stem.is_empty() {
        "job".to_owned()
    } else {
        stem
    }
}

/// The metadata saved next to a job definition: the runtime's name, its lab type, the job
/// name and the job node's id (a runtime may add its own keys).
pub(crate) fn job_metadata(runtime: &str, lab_type: &str, job: &JobSpec) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("runtime".into(), Value::String(runtime.to_owned()));
    m.insert("lab_type".into(), Value::String(lab_type.to_owned()));
    m.insert("job".into(), Value::String(job.name.clone()));
    m.insert(
        "node_id".into(),
        serde_json::to_value(job.node.id).unwrap_or(Value::Null),
    );
    m
}

/// Polls `runtime`'s [`Runtime::status`] every `poll_interval` until the job ends (`Some`)
/// or `timeout` passes (`None`: the caller stops the job and reports the timeout).
#[cfg(any(feature = "kubernetes", feature = "lava"))]
pub(crate) async fn poll_until_final<R: Runtime + ?Sized>(
    runtime: &R,
    handle: &JobHandle,
    timeout: Duration,
    poll_interval: Duration,
) -> Result<Option<JobStatus>, RuntimeError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let status = runtime.status(handle).await?;
        if status.is_final() {
            return Ok(Some(status));
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(poll_interval.min(deadline - now)).await;
    }
}

/// A runtime error: a kind, a message and the source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    /// What kind of failure this is.
    pub kind: RuntimeErrorKind,
    /// What happened, for logs and `data.error_msg`.
    pub message: String,
    /// The underlying error, when there is one.
    #[source]
    pub source: Option<BoxError>,
}

impl RuntimeError {
    /// An error of `kind` with a message.
    pub fn new(kind: RuntimeErrorKind, message: impl Into<String>) -> Self {
        RuntimeError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` with a message and a source.
    pub fn with_source(
        kind: RuntimeErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        RuntimeError {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The cross-module kind of this error.
    pub fn error_kind(&self) -> ErrorKind {
        match self.kind {
            RuntimeErrorKind::InvalidParams
            | RuntimeErrorKind::Generation
            | RuntimeErrorKind::Config => ErrorKind::Invalid,
            RuntimeErrorKind::Unavailable => ErrorKind::Unavailable,
            RuntimeErrorKind::NotFound => ErrorKind::NotFound,
            RuntimeErrorKind::Timeout => ErrorKind::Timeout,
            RuntimeErrorKind::Internal => ErrorKind::Internal,
        }
    }

    /// The upstream node error code the scheduler records when this error stops a job.
    pub fn error_code(&self) -> ErrorCode {
        match self.kind {
            RuntimeErrorKind::InvalidParams | RuntimeErrorKind::Config => {
                ErrorCode::InvalidJobParams
            }
            RuntimeErrorKind::Generation => ErrorCode::JobGenerationError,
            RuntimeErrorKind::Unavailable
            | RuntimeErrorKind::NotFound
            | RuntimeErrorKind::Timeout
            | RuntimeErrorKind::Internal => ErrorCode::SubmitError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_follow_upstream_maps() {
        let x86 = arch_names("x86_64");
        assert_eq!(x86["brarch"], "x86");
        assert_eq!(x86["debarch"], "amd64");
        assert_eq!(x86["karch"], "x86");
        assert_eq!(x86["crosarch"], "x86_64");
        let arm = arch_names("arm");
        assert_eq!(arm["debarch"], "armhf");
        assert_eq!(arm["brarch"], "armel");
        assert_eq!(arch_names("arm64")["karch"], "arm64");
    }

    #[test]
    fn error_codes_follow_the_scheduler_rules() {
        let e = RuntimeError::new(RuntimeErrorKind::Unavailable, "dockerd is down");
        assert_eq!(e.error_code(), ErrorCode::SubmitError);
        assert!(e.error_kind().is_transient());
        let e = RuntimeError::new(RuntimeErrorKind::Generation, "empty");
        assert_eq!(e.error_code(), ErrorCode::JobGenerationError);
    }
}
