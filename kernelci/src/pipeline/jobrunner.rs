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

    async fn kbuild(
        &self,
        src: &Path,
        dest: &str,
        storage: &dyn Storage,
    ) -> Result<StepOutcome, Infra> {
        let p = &self.params;
        let arch = str_param(p, "arch");
        let karch = str_param(p, "karch").or(arch);
        let compiler = str_param(p, "compiler");
        let defconfigs = list_param(p, "defconfig");
        let fragments = list_param(p, "fragments");
        let mut make = vec!["make".to_owned()];
        if let Some(karch) = karch {
            make.push(format!("ARCH={karch}"));
        }
        if let Some(cross) = str_param(p, "cross_compile") {
            make.push(format!("CROSS_COMPILE={cross}"));
        }
        if let Some(cc) = str_param(p, "cc") {
            make.push(format!("CC={cc}"));
        }
        make.extend(list_param(p, "make_args"));
        let make = make.iter().map(|a| shell_quote(a)).collect::<Vec<_>>();
        let make = make.join(" ");
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut script =
            String::from("#!/bin/sh\n# Generated by the KernelCI job runner.\nset -e\n");
        script.push_str(&format!(
            "cd {} || exit 2\n",
            shell_quote(&src.to_string_lossy())
        ));
        if !defconfigs.is_empty() {
            let targets: Vec<String> = defconfigs.iter().map(|d| shell_quote(d)).collect();
            script.push_str(&format!("{make} {} || exit 1\n", targets.join(" ")));
        }
        for fragment in &fragments {
            let target = if fragment.ends_with(".config") {
                fragment.clone()
            } else {
                format!("{fragment}.config")
            };
            script.push_str(&format!("{make} {} || exit 1\n", shell_quote(&target)));
        }
        let targets = list_param(p, "kbuild_targets")
            .iter()
            .map(|t| shell_quote(t))
            .collect::<Vec<_>>()
            .join(" ");
        script.push_str(&format!("{make} -j{jobs} {targets} || exit 1\n"));
        let out = self.workspace.join("artifacts");
        let infra = |m: String| Infra::new(ErrorCode::Infrastructure, m);
        tokio::fs::create_dir_all(&out)
            .await
            .map_err(|e| infra(format!("creating {}: {e}", out.display())))?;
        let build_sh = out.join("build.sh");
        tokio::fs::write(&build_sh, &script)
            .await
            .map_err(|e| infra(format!("writing {}: {e}", build_sh.display())))?;
        let build_log = out.join("build.log");
        let started = Instant::now();
        let code = run_logged(
            tokio::process::Command::new("/bin/sh").arg(&build_sh),
            &build_log,
            src,
        )
        .await;
        let duration = started.elapsed().as_secs_f64();
        let mut outcome = StepOutcome::default();
        let (mut result, mut error) = match code {
            Ok(0) => (ResultValue::Pass, None),
            Ok(1) => (ResultValue::Fail, None),
            Ok(code) => (
                ResultValue::Incomplete,
                Some(Infra::new(
                    ErrorCode::KbuildInternalError,
                    format!("build.sh exited with {code}"),
                )),
            ),
            Err(e) => (
                ResultValue::Incomplete,
                Some(Infra::new(
                    ErrorCode::KbuildInternalError,
                    format!("cannot run build.sh: {e}"),
                )),
            ),
        };
        // Collect artifacts: (key, local path, remote name).
        let mut files = vec![
            (
                "build_log".to_owned(),
                build_log.clone(),
                "build.log".to_owned(),
            ),
            (
                "build_sh".to_owned(),
                build_sh.clone(),
                "build.sh".to_owned(),
            ),
        ];
        let config = src.join(".config");
        if config.is_file() {
            files.push(("_config".to_owned(), config, ".config".to_owned()));
        }
        let kernel = kernel_image(src, karch, str_param(p, "kernel_image"));
        if let Some((path, name)) = &kernel {
            files.push(("kernel".to_owned(), path.clone(), name.clone()));
            outcome
                .data
                .insert("kernel_type".into(), Value::String(name.to_lowercase()));
        } else if result == ResultValue::Pass
            && karch != Some("um")
            && !defconfigs.iter().any(|d| d.contains("dtbs_check"))
        {
            result = ResultValue::Incomplete;
            error = Some(Infra::new(
                ErrorCode::KbuildInternalError,
                "the build passed but produced no kernel image",
            ));
        }
        let metadata = json!({
            "build": {
                "arch": arch,
                "compiler": compiler,
                "defconfig": defconfigs,
                "fragments": fragments,
                "status": result.as_str(),
                "duration": duration,
                "command": script,
            },
            "artifacts": files.iter().map(|(k, _, r)| (k.clone(), Value::String(r.clone()))).collect::<Map<_, _>>(),
        });
        let metadata_path = out.join("metadata.json");
        tokio::fs::write(
            &metadata_path,
            serde_json::to_vec_pretty(&metadata).unwrap_or_default(),
        )
        .await
        .map_err(|e| infra(format!("writing {}: {e}", metadata_path.display())))?;
        files.push((
            "metadata".to_owned(),
            metadata_path,
            "metadata.json".to_owned(),
        ));
        outcome.artifacts = self.upload(storage, dest, files).await?;

        if let Some(arch) = arch {
            outcome.data.insert("arch".into(), json!(arch));
        }
        if let Some(compiler) = compiler {
            outcome.data.insert("compiler".into(), json!(compiler));
        }
        if !defconfigs.is_empty() {
            outcome
                .data
                .insert("defconfig".into(), json!(defconfigs.join("+")));
            let mut full = defconfigs.clone();
            full.extend(fragments.iter().cloned());
            outcome
                .data
                .insert("config_full".into(), json!(full.join("+")));
        }
        if !fragments.is_empty() {
            outcome.data.insert("fragments".into(), json!(fragments));
        }
        outcome.result = Some(result);
        if let Some(e) = error {
            outcome.error_code = Some(e.code);
            outcome.error_msg = Some(e.message);
        }
        Ok(outcome)
    }

    async fn test(
        &self,
        node: &Node,
        src: Option<&Path>,
        artifacts: &Map<String, Value>,
        dest: &str,
        storage: &dyn Storage,
    ) -> Result<StepOutcome, Infra> {
        let command = str_param(&self.params, "command")
            .or_else(|| str_param(&self.params, "test_command"))
            .ok_or_else(|| {
                Infra::new(
                    ErrorCode::InvalidJobParams,
                    "the job has no `command` parameter to run",
                )
            })?;
        let log = self.workspace.join("log.txt");
        let cwd = src.unwrap_or(&self.workspace);
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(command);
        cmd.env("KCI_WORKSPACE", &self.workspace);
        if let Some(id) = node.id {
            cmd.env("KCI_NODE_ID", id.to_hex());
        }
        if let Some(src) = src {
            cmd.env("KCI_SRC", src);
        }
        for (key, url) in artifacts {
            if let Some(url) = url.as_str() {
                let var: String = key
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                cmd.env(format!("KCI_ARTIFACT_{var}"), url);
            }
        }
        let code = run_logged(&mut cmd, &log, cwd).await;
        let mut outcome = StepOutcome::default();
        let text = tokio::fs::read(&log)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let report = ktap::parse(&text);
        outcome.artifacts = self
            .upload(storage, dest, vec![("log".into(), log, "log.txt".into())])
            .await?;
        let code = code.map_err(|e| {
            Infra::new(
                ErrorCode::Infrastructure,
                format!("cannot run the job command: {e}"),
            )
        })?;
        let result = match report.result() {
            Some(r) => r,
            None if code == 0 => ResultValue::Pass,
            None => ResultValue::Fail,
        };
        if code != 0 && result != ResultValue::Fail {
            outcome.error_msg = Some(format!("the job command exited with {code}"));
        }
        let (pass, fail, skip, incomplete) = report.counts();
        tracing::info!(pass, fail, skip, incomplete, code, "tests parsed");
        outcome.result = Some(result);
        outcome.tests = report.tests;
        Ok(outcome)
    }
}

/// Runs `cmd` in `cwd` with stdout and stderr appended to `log`; returns the exit code
/// (128 + signal when killed).
async fn run_logged(
    cmd: &mut tokio::process::Command,
    log: &Path,
    cwd: &Path,
) -> std::io::Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    let file = std::fs::File::create(log)?;
    let err = file.try_clone()?;
    let status = cmd
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .status()
        .await?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1))
}

/// The kernel image of a build: `kernel_image` when given (relative to the tree), else the
/// first of `arch/<karch>/boot/{bzImage,Image.gz,Image,zImage,uImage,vmlinuz}`, `linux` (um),
/// `vmlinux`.
fn kernel_image(
    src: &Path,
    karch: Option<&str>,
    explicit: Option<&str>,
) -> Option<(PathBuf, String)> {
    let named = |path: PathBuf| {
        let name = path.file_name()?.to_string_lossy().into_owned();
        path.is_file().then_some((path, name))
    };
    if let Some(rel) = explicit {
        return named(src.join(rel));
    }
    let mut candidates = Vec::new();
    if let Some(karch) = karch {
        for image in [
            "bzImage", "Image.gz", "Image", "zImage", "uImage", "vmlinuz",
        ] {
            candidates.push(src.join("arch").join(karch).join("boot").join(image));
        }
    }
    if karch == Some("um") {
        candidates.push(src.join("linux"));
    }
    candidates.push(src.join("vmlinux"));
    candidates.into_iter().find_map(named)
}

/// Upstream's `submit_results`: the job node with the outcome merged in, and one child node
/// per parsed test (recursively), each inheriting [`INHERITED_DATA`] from the root, with
/// `group` = the root's name, `path` = the parent's path + its name, state `done`.
pub fn build_hierarchy(root: &Node, outcome: &StepOutcome) -> Hierarchy {
    let mut node = root.clone();
    node.result = outcome.result;
    node.state = outcome.state.unwrap_or(State::Done);
    node.processed_by_kcidb_bridge = false;
    if outcome.holdoff.is_some() {
        node.holdoff = outcome.holdoff;
    }
    let artifacts = node.artifacts.get_or_insert_with(Map::new);
    artifacts.extend(outcome.artifacts.clone());
    let data = node.data.get_or_insert_with(Map::new);
    data.extend(outcome.data.clone());
    match outcome.error_code {
        Some(code) => {
            data.insert("error_code".into(), json!(code.as_str()));
            data.insert("error_msg".into(), json!(outcome.error_msg));
        }
        None => {
            if data.get("error_code").and_then(Value::as_str) == Some("node_timeout")
                && node.result != Some(ResultValue::Incomplete)
            {
                data.insert("error_code".into(), Value::Null);
                data.insert("error_msg".into(), Value::Null);
            }
            if let Some(msg) = &outcome.error_msg {
                data.insert("error_msg".into(), json!(msg));
            }
        }
    }
    let inherited: Map<String, Value> = INHERITED_DATA
        .iter()
        .filter_map(|k| data.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .filter(|(_, v)| !v.is_null())
        .collect();
    let children = outcome
        .tests
        .iter()
        .map(|t| test_hierarchy(t, &node.path, &node.name, &inherited))
        .collect();
    Hierarchy {
        node,
        child_nodes: children,
    }
}

fn test_hierarchy(
    test: &TestCase,
    parent_path: &[String],
    group: &str,
    inherited: &Map<String, Value>,
) -> Hierarchy {
    let name = if test.name.trim().is_empty() {
        test.number
            .map_or_else(|| "test".to_owned(), |n| n.to_string())
    } else {
        test.name.trim().to_owned()
    };
    let mut node = Node::new(NodeKind::Test, name.clone());
    node.path = parent_path.to_vec();
    node.path.push(name);
    node.group = Some(group.to_owned());
    node.state = State::Done;
    node.result = Some(test.result);
    let mut data = inherited.clone();
    if let Some(reason) = &test.reason
        && test.result != ResultValue::Pass
    {
        data.insert("error_msg".into(), json!(reason));
    }
    if !test.diagnostics.is_empty() || test.missing > 0 {
        let mut misc = Map::new();
        if !test.diagnostics.is_empty() {
            misc.insert("diagnostics".into(), json!(test.diagnostics));
        }
        if test.missing > 0 {
            misc.insert("missing_subtests".into(), json!(test.missing));
        }
        data.insert("misc".into(), Value::Object(misc));
    }
    node.data = Some(data);
    let children = test
        .children
        .iter()
        .map(|c| test_hierarchy(c, &node.path, group, inherited))
        .collect();
    Hierarchy {
        node,
        child_nodes: children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_inherits_data_and_nests_paths() {
        let mut root = Node::new(NodeKind::Job, "kunit-x86");
        root.id = Some(ObjectId::new());
        root.path = vec!["checkout".into(), "kbuild".into(), "kunit-x86".into()];
        root.data = json!({"arch": "x86_64", "kernel_revision": {"tree": "t"}, "runtime": "shell", "error_code": "node_timeout", "error_msg": "late"})
            .as_object()
            .cloned();
        let report =
            ktap::parse("1..1\n    1..2\n    ok 1 a\n    not ok 2 b # SKIP why\nok 1 suite\n");
        let outcome = StepOutcome {
            result: report.result(),
            tests: report.tests,
            ..StepOutcome::default()
        };
        let h = build_hierarchy(&root, &outcome);
        assert_eq!(h.node.result, Some(ResultValue::Pass));
        assert_eq!(h.node.state, State::Done);
        assert_eq!(h.node.data_str("error_code"), None, "node_timeout cleared");
        let suite = &h.child_nodes[0];
        assert_eq!(suite.node.path.last().map(String::as_str), Some("suite"));
        let b = &suite.child_nodes[1].node;
        assert_eq!(b.path, ["checkout", "kbuild", "kunit-x86", "suite", "b"]);
        assert_eq!(b.group.as_deref(), Some("kunit-x86"));
        assert_eq!(b.result, Some(ResultValue::Skip));
        assert_eq!(b.data_str("arch"), Some("x86_64"));
        assert_eq!(b.data_str("kernel_revision.tree"), Some("t"));
        assert_eq!(b.data_str("error_msg"), Some("why"));
        assert_eq!(b.kind, "test");
    }

    #[test]
    fn quoting_and_kernel_images() {
        assert_eq!(shell_quote("ARCH=x86"), "ARCH=x86");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
        let dir = tempfile::tempdir().expect("tmp");
        let boot = dir.path().join("arch/x86/boot");
        std::fs::create_dir_all(&boot).expect("mkdir");
        assert!(kernel_image(dir.path(), Some("x86"), None).is_none());
        std::fs::write(boot.join("bzImage"), b"k").expect("write");
        let (_, name) = kernel_image(dir.path(), Some("x86"), None).expect("image");
        assert_eq!(name, "bzImage");
    }
}
