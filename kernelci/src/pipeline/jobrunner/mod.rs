//! The job runner: what a job does once started, in any runtime (`kci job run --node-id ID`).
//!
//! Shell, Docker and Kubernetes jobs all run it (their template calls `kci job run`), so a job
//! behaves the same everywhere (`spec/kernelci-pipeline.md` §4.8):
//!
//! 1. fetch the job node; if `debug.dry_run` is set, submit `debug.result` (default `pass`)
//!    without running anything;
//! 2. find `artifacts.tarball` up the ancestor chain, download it and extract it into the
//!    workspace (required for `kbuild`; used when present by tests);
//! 3. run the job's steps:
//!    - `kbuild`: a `build.sh` with `make [ARCH= CROSS_COMPILE= CC=] <defconfig> [<fragment>.config…]`
//!      then `make -jN [targets]`; exit code 0 → pass, 1 → fail, anything else → incomplete
//!      with `kbuild_internal_error`; a pass without a kernel image is incomplete too;
//!    - anything else: the `command` (or `test_command`) job parameter run with `sh -c`; its
//!      output is parsed as KTAP / kselftest / KUnit ([`super::ktap`]) into `test` child
//!      nodes (nested subtests become nested nodes);
//! 4. upload the logs and artifacts through [`Storage`] to `<jobname>-<nodeid>/…`, with
//!    upstream's artifact keys (`build_log`, `_config`, `kernel`, `metadata`, `build_sh`, `log`);
//! 5. submit the result hierarchy with `PUT /nodes/{id}` ([`build_hierarchy`] follows
//!    upstream's `submit_results`): a passing kbuild becomes `available` with a holdoff of
//!    now + 10 minutes, everything else `done`.
//!
//! Infrastructure errors (no tarball, a failed download, storage down, the command cannot
//! start) end the node `done`/`incomplete` with `data.error_code` and `data.error_msg`;
//! nothing panics. Only an unreachable API (the result cannot be reported) is an `Err`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

use super::ktap::{self, TestCase};
use crate::ErrorKind;
use crate::client::{Api, ClientError, Hierarchy};
use crate::models::{ErrorCode, Node, NodeKind, ObjectId, ResultValue, State, Timestamp};
use crate::runtime::JobParams;
use crate::storage::{self, Storage, StorageConfig, UploadFile};

mod hierarchy;
mod steps;
#[cfg(test)]
mod tests;

pub use hierarchy::build_hierarchy;

/// How long a passing kbuild stays `available` before the timeout service may close it.
pub const KBUILD_HOLDOFF_SECS: i64 = 600;

/// The kbuild holdoff: the `kbuild_holdoff` job parameter (seconds), else the
/// `KCI_KBUILD_HOLDOFF` environment variable (set by `kci up --holdoff`), else
/// [`KBUILD_HOLDOFF_SECS`].
pub fn kbuild_holdoff_secs(params: &JobParams) -> i64 {
    params
        .get("kbuild_holdoff")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .or_else(|| {
            std::env::var("KCI_KBUILD_HOLDOFF")
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .filter(|s| *s >= 0)
        .unwrap_or(KBUILD_HOLDOFF_SECS)
}

/// The `data` fields every child node inherits from the root (upstream `submit_results`).
pub const INHERITED_DATA: [&str; 8] = [
    "kernel_revision",
    "kernel_type",
    "arch",
    "defconfig",
    "config_full",
    "compiler",
    "platform",
    "runtime",
];

/// Why the runner could not report a result at all.
#[derive(Debug, thiserror::Error)]
pub enum JobRunnerError {
    /// The job node does not exist.
    #[error("node {0} not found")]
    NodeNotFound(ObjectId),
    /// The API refused or could not be reached.
    #[error("API: {0}")]
    Api(#[from] ClientError),
    /// The runner's own configuration is wrong (storage config, ...).
    #[error("{0}")]
    Config(String),
}

impl JobRunnerError {
    /// The cross-module kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            JobRunnerError::NodeNotFound(_) => ErrorKind::NotFound,
            JobRunnerError::Api(e) => e.kind(),
            JobRunnerError::Config(_) => ErrorKind::Invalid,
        }
    }
}

/// An infrastructure failure inside a job: becomes `incomplete` with this code and message.
#[derive(Debug, Clone)]
struct Infra {
    code: ErrorCode,
    message: String,
}

impl Infra {
    fn new(code: ErrorCode, message: impl Into<String>) -> Infra {
        Infra {
            code,
            message: message.into(),
        }
    }
}

/// What a job's steps produced.
#[derive(Debug, Clone, Default)]
pub struct StepOutcome {
    /// The job result.
    pub result: Option<ResultValue>,
    /// `available` for a passing kbuild, else `done`.
    pub state: Option<State>,
    /// `data.error_code`.
    pub error_code: Option<ErrorCode>,
    /// `data.error_msg`.
    pub error_msg: Option<String>,
    /// Artifact key → URL.
    pub artifacts: Map<String, Value>,
    /// `data` fields to merge into the node.
    pub data: Map<String, Value>,
    /// Parsed tests, made into child nodes.
    pub tests: Vec<TestCase>,
    /// A holdoff for the node.
    pub holdoff: Option<Timestamp>,
}

impl StepOutcome {
    fn incomplete(infra: Infra) -> StepOutcome {
        StepOutcome {
            result: Some(ResultValue::Incomplete),
            state: Some(State::Done),
            error_code: Some(infra.code),
            error_msg: Some(infra.message),
            ..StepOutcome::default()
        }
    }
}

/// What a run reported.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The job node as written.
    pub node: Node,
    /// How many child nodes were written.
    pub children: usize,
}

/// Runs one job. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct JobRunner {
    api: Arc<dyn Api>,
    storage: Option<Arc<dyn Storage>>,
    workspace: PathBuf,
    params: JobParams,
    http: reqwest::Client,
}

/// Builds the storage a job uploads to from a storage config entry (JSON) and the credential
/// in `KCI_STORAGE_CREDENTIALS`.
pub fn storage_from_config(
    config: &Value,
    credential: Option<&str>,
) -> Result<Arc<dyn Storage>, JobRunnerError> {
    let config = StorageConfig::from_value(config.clone())
        .map_err(|e| JobRunnerError::Config(format!("storage config: {e}")))?;
    storage::from_config(&config, credential)
        .map_err(|e| JobRunnerError::Config(format!("storage config: {e}")))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn str_param<'a>(params: &'a JobParams, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn list_param(params: &JobParams, key: &str) -> Vec<String> {
    match params.get(key) {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// `cip://` fragments are downloaded from the CIP kernel-config repository by upstream's
/// kbuild (a runtime using upstream's templates builds them); this runner does not fetch
/// them, so such a job ends `invalid_job_params` saying so, before any work is done.
fn refuse_remote_fragments(params: &JobParams) -> Result<(), Infra> {
    for name in list_param(params, "fragments") {
        if let Some(parsed) = crate::config::CipFragment::parse(&name) {
            let why = match parsed {
                Ok(f) => format!(
                    "fragment {name:?}: CIP kernel-config fragments are fetched from {} by \
                     upstream's kbuild; this job runner does not fetch them",
                    f.url()
                ),
                Err(e) => e,
            };
            return Err(Infra::new(ErrorCode::InvalidJobParams, why));
        }
    }
    Ok(())
}

impl JobRunner {
    /// A runner talking to `api`, uploading to `storage`, working in `workspace`, with the
    /// job parameters the template passed (`params`, may be empty).
    pub fn new(
        api: impl Into<Arc<dyn Api>>,
        storage: Option<Arc<dyn Storage>>,
        workspace: impl Into<PathBuf>,
        params: JobParams,
    ) -> JobRunner {
        JobRunner {
            api: api.into(),
            storage,
            workspace: workspace.into(),
            params,
            http: reqwest::Client::new(),
        }
    }

    /// Runs the job of node `id` and submits its results.
    pub async fn run(&self, id: ObjectId) -> Result<JobReport, JobRunnerError> {
        let node = self
            .api
            .get_node(id)
            .await?
            .ok_or(JobRunnerError::NodeNotFound(id))?;
        let job_name = str_param(&self.params, "name")
            .unwrap_or(&node.name)
            .to_owned();
        let dest = format!("{job_name}-{id}");
        let is_kbuild = node.kind == NodeKind::Kbuild.as_str();

        let dry_run = node
            .debug
            .as_ref()
            .and_then(|d| d.get("dry_run"))
            .is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false)));
        let mut outcome = if dry_run {
            let result = node
                .debug
                .as_ref()
                .and_then(|d| d.get("result"))
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(ResultValue::Pass);
            tracing::info!(%id, %result, "dry run: nothing is run");
            StepOutcome {
                result: Some(result),
                ..StepOutcome::default()
            }
        } else {
            match self.steps(&node, &dest, is_kbuild).await {
                Ok(outcome) => outcome,
                Err(infra) => StepOutcome::incomplete(infra),
            }
        };
        if outcome.state.is_none() {
            outcome.state = Some(if is_kbuild && outcome.result == Some(ResultValue::Pass) {
                State::Available
            } else {
                State::Done
            });
        }
        if is_kbuild && outcome.holdoff.is_none() {
            outcome.holdoff = Some(Timestamp::now().plus_secs(kbuild_holdoff_secs(&self.params)));
        }
        let hierarchy = build_hierarchy(&node, &outcome);
        let written = self.api.submit_results(&hierarchy).await?;
        let root = written
            .iter()
            .find(|n| n.id == Some(id))
            .cloned()
            .unwrap_or(hierarchy.node);
        tracing::info!(%id, result = ?root.result, state = %root.state, "job submitted");
        Ok(JobReport {
            node: root,
            children: written.len().saturating_sub(1),
        })
    }

    async fn steps(&self, node: &Node, dest: &str, is_kbuild: bool) -> Result<StepOutcome, Infra> {
        if is_kbuild {
            refuse_remote_fragments(&self.params)?;
        }
        let storage = self.storage.clone().ok_or_else(|| {
            Infra::new(
                ErrorCode::Infrastructure,
                "no storage configured for the job's uploads",
            )
        })?;
        tokio::fs::create_dir_all(&self.workspace)
            .await
            .map_err(|e| {
                Infra::new(
                    ErrorCode::Infrastructure,
                    format!("creating workspace {}: {e}", self.workspace.display()),
                )
            })?;
        let (tarball, inherited) = self.ancestry(node).await?;
        let src = match &tarball {
            Some(url) => Some(self.fetch_source(url).await?),
            None if is_kbuild => {
                return Err(Infra::new(
                    ErrorCode::Infrastructure,
                    "no artifacts.tarball on the node or any of its ancestors",
                ));
            }
            None => None,
        };
        if is_kbuild {
            let src = src.unwrap_or_else(|| self.workspace.clone());
            self.kbuild(&src, dest, storage.as_ref()).await
        } else {
            self.test(node, src.as_deref(), &inherited, dest, storage.as_ref())
                .await
        }
    }

    /// The nearest `artifacts.tarball` up the ancestor chain, and every ancestor artifact
    /// (the nearest wins).
    async fn ancestry(&self, node: &Node) -> Result<(Option<String>, Map<String, Value>), Infra> {
        let mut artifacts = Map::new();
        let mut current = node.clone();
        for _ in 0..64 {
            for (k, v) in current.artifacts.iter().flatten() {
                artifacts.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let Some(parent) = current.parent else {
                break;
            };
            current = match self.api.get_node(parent).await {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    return Err(Infra::new(
                        ErrorCode::Infrastructure,
                        format!("fetching ancestor {parent}: {e}"),
                    ));
                }
            };
        }
        let tarball = artifacts
            .get("tarball")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok((tarball, artifacts))
    }

    async fn fetch_source(&self, url: &str) -> Result<PathBuf, Infra> {
        let infra = |m: String| Infra::new(ErrorCode::Infrastructure, m);
        let archive = self.workspace.join("source.tar.gz");
        let started = Instant::now();
        let response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| infra(format!("downloading tarball {url}: {e}")))?;
        let mut file = tokio::fs::File::create(&archive)
            .await
            .map_err(|e| infra(format!("creating {}: {e}", archive.display())))?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| infra(format!("downloading tarball {url}: {e}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| infra(format!("writing {}: {e}", archive.display())))?;
        }
        file.flush()
            .await
            .map_err(|e| infra(format!("writing {}: {e}", archive.display())))?;
        drop(file);
        let src = self.workspace.join("src");
        let (archive2, src2) = (archive.clone(), src.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&src2)?;
            let file = std::fs::File::open(&archive2)?;
            let mut tar =
                tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
            tar.set_preserve_mtime(true);
            tar.unpack(&src2)
        })
        .await
        .map_err(|e| infra(format!("extracting tarball: {e}")))?
        .map_err(|e| infra(format!("extracting tarball {url}: {e}")))?;
        let _ = tokio::fs::remove_file(&archive).await;
        tracing::info!(
            url,
            secs = started.elapsed().as_secs_f64(),
            "source extracted"
        );
        // `git archive --prefix=<name>/` tarballs hold one top-level directory.
        let mut entries = tokio::fs::read_dir(&src)
            .await
            .map_err(|e| infra(format!("reading {}: {e}", src.display())))?;
        let mut only_dir = None;
        let mut count = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            count += 1;
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                only_dir = Some(entry.path());
            }
        }
        Ok(match only_dir {
            Some(dir) if count == 1 => dir,
            _ => src,
        })
    }

    async fn upload(
        &self,
        storage: &dyn Storage,
        dest: &str,
        files: Vec<(String, PathBuf, String)>,
    ) -> Result<Map<String, Value>, Infra> {
        let keys: Vec<String> = files.iter().map(|(k, _, _)| k.clone()).collect();
        let uploads = files
            .into_iter()
            .map(|(_, path, remote)| UploadFile::from_path(path, remote))
            .collect();
        let urls = storage.upload_multiple(uploads, dest).await.map_err(|e| {
            Infra::new(
                ErrorCode::Infrastructure,
                format!("uploading to storage at {dest}: {e}"),
            )
        })?;
        Ok(keys
            .into_iter()
            .zip(urls)
            .map(|(k, u)| (k, Value::String(u)))
            .collect())
    }
}
