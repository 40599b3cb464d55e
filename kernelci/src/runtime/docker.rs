//! [`DockerRuntime`] (lab_type `docker`, feature `docker`): each job is a container, through
//! the Docker Engine API (crate `bollard`; `spec/kernelci-pipeline.md` §4.7.2).
//!
//! - generate: renders the job's template into a script (like the shell runtime); the
//!   definition's metadata holds the runtime name and the job's `image`;
//! - submit: writes the script (mode 0775) into a fresh per-job directory below the output
//!   directory, bind-mounted at `/home/kernelci` in the container, and starts
//!   `/home/kernelci/<script>` in the image (pulled first when `pull` is on and
//!   `NO_DOCKER_PULL` is not `1`, else it must exist locally), with the `env_file` lines
//!   (blank lines and `#` comments left out) plus the context's job environment, the
//!   `volumes`, `user`, resource limits and `host.docker.internal:host-gateway`; the job id is
//!   the container id;
//! - a monitor task per job streams the container's output to `job.log` in the job directory,
//!   records the exit code (bollard reports a non-zero exit as `DockerContainerWaitError
//!   { code }`, which is mapped back to the code) and removes the container, so nothing is
//!   left behind even if nobody waits;
//! - wait: past the timeout the container is killed and removed and the job is
//!   [`JobStatus::Incomplete`] with `node_timeout`; cancel kills and removes it;
//! - dockerd down (no socket, connection refused, 5xx) is [`RuntimeErrorKind::Unavailable`]
//!   (the scheduler's `submit_error`).
//!
//! Settings: upstream's `env_file`, `volumes` (`host:container[:ro]`), `user`, `timeout`
//! (Docker API timeout in seconds, 120); ours: `docker_host` (`unix:///path`, a socket path
//! or `tcp://host:port`; default `$DOCKER_HOST`, then `/var/run/docker.sock`), `network_mode`
//! (e.g. `host`), `memory` (bytes), `cpus` (a fraction of CPUs), `pids_limit`, `pull`
//! (default false: most labs build their images locally).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, LogsOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, watch};

use super::registry::{RuntimeContext, RuntimeCredentials, RuntimeEntry};
use super::template::TemplateEngine;
use super::{
    JobDefinition, JobHandle, JobParams, JobSpec, JobStatus, Runtime, RuntimeError,
    RuntimeErrorKind, async_trait, job_file_name, job_metadata, job_name,
};
use crate::models::ErrorCode;

/// Where each job's directory is mounted in its container.
pub const JOB_MOUNT: &str = "/home/kernelci";
/// The captured output file in each job's directory.
pub const LOG_FILE: &str = "job.log";
/// The label carrying the runtime name on every container this runtime creates.
pub const LABEL_RUNTIME: &str = "org.kernelci.runtime";

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DockerSettings {
    #[serde(default)]
    env_file: Option<PathBuf>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    docker_host: Option<String>,
    #[serde(default)]
    network_mode: Option<String>,
    #[serde(default)]
    memory: Option<i64>,
    #[serde(default)]
    cpus: Option<f64>,
    #[serde(default)]
    pids_limit: Option<i64>,
    #[serde(default)]
    pull: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// The typed settings of a Docker runtime entry (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DockerConfig {
    /// Environment file: `KEY=value` lines given to every container.
    pub env_file: Option<PathBuf>,
    /// Extra bind mounts, `host:container[:options]`.
    pub volumes: Vec<String>,
    /// The user the job runs as.
    pub user: Option<String>,
    /// Docker API timeout.
    pub timeout: Duration,
    /// The Docker endpoint (`unix:///path`, a socket path, `tcp://host:port`).
    pub docker_host: Option<String>,
    /// The container network mode (`host`, `none`, a network name).
    pub network_mode: Option<String>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPU limit (2.5 = two and a half CPUs).
    pub cpus: Option<f64>,
    /// Process limit.
    pub pids_limit: Option<i64>,
    /// Pull the image before each job.
    pub pull: bool,
    /// Extra environment of every job (on top of the context's and the env file's).
    pub env: BTreeMap<String, String>,
}

impl DockerConfig {
    /// Parses the settings of a runtime entry.
    pub fn from_entry(entry: &RuntimeEntry) -> Result<DockerConfig, RuntimeError> {
        let s: DockerSettings = entry.parse_settings()?;
        if let Some(c) = s.cpus
            && !(c.is_finite() && c > 0.0 && c <= 1e6)
        {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Config,
                format!(
                    "runtime '{}': cpus must be a positive number of CPUs, not {c}",
                    entry.name
                ),
            ));
        }
        Ok(DockerConfig {
            env_file: s.env_file,
            volumes: s.volumes,
            user: s.user,
            timeout: Duration::from_secs(s.timeout.unwrap_or(120).max(1)),
            docker_host: s.docker_host,
            network_mode: s.network_mode,
            memory: s.memory,
            cpus: s.cpus,
            pids_limit: s.pids_limit,
            pull: s.pull,
            env: s.env,
        })
    }
}

/// The lines of an env file that set variables: blank lines and `#` comments left out
/// (upstream keeps every other line as given, `KEY=value`).
pub fn env_file_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum EndedBy {
    Timeout(Duration),
    Cancel,
}

#[derive(Debug)]
struct DockerJob {
    workdir: PathBuf,
    /// The exit code once the container ended (or `None` if waiting failed).
    exit: watch::Receiver<Option<Option<i64>>>,
    ended_by: Mutex<Option<EndedBy>>,
}

impl DockerJob {
    fn final_status(&self, id: &str) -> Option<JobStatus> {
        let exit = (*self.exit.borrow())?;
        let ended_by = self.ended_by.lock().ok().and_then(|g| *g);
        Some(match (ended_by, exit) {
            (Some(EndedBy::Timeout(t)), _) => JobStatus::Incomplete {
                error_code: ErrorCode::NodeTimeout,
                message: format!(
                    "container {} ran past its timeout of {} s and was killed",
                    short(id),
                    t.as_secs()
                ),
            },
            (Some(EndedBy::Cancel), _) => JobStatus::Canceled,
            (None, Some(code)) => JobStatus::Finished {
                exit_code: i32::try_from(code).unwrap_or(-1),
            },
            (None, None) => JobStatus::Incomplete {
                error_code: ErrorCode::Infrastructure,
                message: format!("lost track of container {}", short(id)),
            },
        })
    }

    fn mark(&self, by: EndedBy) {
        if let Ok(mut g) = self.ended_by.lock()
            && g.is_none()
            && self.exit.borrow().is_none()
        {
            *g = Some(by);
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The Docker runtime. See the [module docs](self).
#[derive(Debug)]
pub struct DockerRuntime {
    name: String,
    config: DockerConfig,
    templates: Arc<TemplateEngine>,
    output_dir: PathBuf,
    job_env: BTreeMap<String, String>,
    docker: OnceCell<Docker>,
    jobs: Arc<Mutex<HashMap<String, Arc<DockerJob>>>>,
}

/// The registry factory of lab_type `docker`.
pub fn factory(
    entry: &RuntimeEntry,
    _credentials: &RuntimeCredentials,
    context: &RuntimeContext,
) -> Result<Arc<dyn super::Runtime>, RuntimeError> {
    let config = DockerConfig::from_entry(entry)?;
    Ok(Arc::new(
        DockerRuntime::new(
            &entry.name,
            config,
            context.templates.clone(),
            context.output_dir.clone(),
        )
        .with_job_env(context.job_env.clone()),
    ))
}

fn docker_error(kind_hint: &str, e: DockerError) -> RuntimeError {
    let kind = match &e {
        DockerError::DockerResponseServerError { status_code, .. } => match *status_code {
            404 => RuntimeErrorKind::NotFound,
            400 | 409 => RuntimeErrorKind::InvalidParams,
            _ => RuntimeErrorKind::Unavailable,
        },
        DockerError::JsonDataError { .. }
        | DockerError::JsonSerdeError { .. }
        | DockerError::StrParseError { .. } => RuntimeErrorKind::Internal,
        // Socket missing, connection refused, timeouts, version negotiation...
        _ => RuntimeErrorKind::Unavailable,
    };
    RuntimeError::with_source(kind, format!("docker: {kind_hint}: {e}"), e)
}

fn io_error(what: String, e: std::io::Error) -> RuntimeError {
    RuntimeError::with_source(RuntimeErrorKind::Internal, what, e)
}

impl DockerRuntime {
    /// A Docker runtime named `name` with `config`, rendering with `templates` and keeping
    /// job directories below `output_dir`.
    pub fn new(
        name: &str,
        config: DockerConfig,
        templates: Arc<TemplateEngine>,
        output_dir: impl Into<PathBuf>,
    ) -> DockerRuntime {
        DockerRuntime {
            name: name.to_owned(),
            config,
            templates,
            output_dir: output_dir.into(),
            job_env: BTreeMap::new(),
            docker: OnceCell::new(),
            jobs: Arc::default(),
        }
    }

    /// Adds environment variables for every job (`KCI_API_TOKEN`, ...).
    pub fn with_job_env(mut self, env: BTreeMap<String, String>) -> DockerRuntime {
        self.job_env.extend(env);
        self
    }

    /// The settings.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The job directory of a job this runtime started (script and `job.log`).
    pub fn workdir(&self, handle: &JobHandle) -> Option<PathBuf> {
        self.job(&handle.id).map(|j| j.workdir.clone())
    }

    /// The output of a job this runtime started, so far.
    pub fn log(&self, handle: &JobHandle) -> Option<String> {
        let dir = self.workdir(handle)?;
        std::fs::read_to_string(dir.join(LOG_FILE)).ok()
    }

    fn job(&self, id: &str) -> Option<Arc<DockerJob>> {
        self.jobs.lock().ok()?.get(id).cloned()
    }

    /// The Docker client, connected (and the API version negotiated) at first use; a failed
    /// connection is retried at the next call.
    pub async fn docker(&self) -> Result<&Docker, RuntimeError> {
        self.docker
            .get_or_try_init(|| async {
                let timeout = self.config.timeout.as_secs();
                let host = self
                    .config
                    .docker_host
                    .clone()
                    .or_else(|| std::env::var("DOCKER_HOST").ok())
                    .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
                let docker = if let Some(addr) = host
                    .strip_prefix("tcp://")
                    .or_else(|| host.strip_prefix("http://"))
                {
                    Docker::connect_with_http(addr, timeout, bollard::API_DEFAULT_VERSION)
                } else {
                    Docker::connect_with_unix(&host, timeout, bollard::API_DEFAULT_VERSION)
                }
                .map_err(|e| docker_error(&format!("connecting to {host}"), e))?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| docker_error(&format!("connecting to {host}"), e))
            })
            .await
    }

    fn environment(&self) -> Result<Vec<String>, RuntimeError> {
        let mut env: Vec<String> = Vec::new();
        if let Some(file) = &self.config.env_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                RuntimeError::with_source(
                    RuntimeErrorKind::Config,
                    format!("runtime {}: env_file {}: {e}", self.name, file.display()),
                    e,
                )
            })?;
            env.extend(env_file_lines(&text));
        }
        for (k, v) in self.job_env.iter().chain(&self.config.env) {
            env.push(format!("{k}={v}"));
        }
        env.push(format!("KCI_JOB_DIR={JOB_MOUNT}"));
        Ok(env)
    }

    async fn ensure_image(&self, docker: &Docker, image: &str) -> Result<(), RuntimeError> {
        let no_pull = std::env::var("NO_DOCKER_PULL").is_ok_and(|v| v == "1");
        if self.config.pull && !no_pull {
            let (repo, tag) = match image.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (image, "latest"),
            };
            let options = CreateImageOptions {
                from_image: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
                ..Default::default()
            };
            let mut pull = docker.create_image(Some(options), None, None);
            while let Some(item) = pull.next().await {
                if let Err(e) = item {
                    // Upstream falls back to a local image when the pull fails.
                    tracing::warn!(runtime = %self.name, image, "pull failed, using the local image: {e}");
                    break;
                }
            }
        }
        docker
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                DockerError::DockerResponseServerError {
                    status_code: 404, ..
                } => RuntimeError::with_source(
                    RuntimeErrorKind::Unavailable,
                    format!("docker: image {image} is not available locally"),
                    e,
                ),
                e => docker_error(&format!("inspecting image {image}"), e),
            })
    }

    async fn make_workdir(&self, file_name: &str) -> Result<PathBuf, RuntimeError> {
        tokio::fs::create_dir_all(&self.output_dir)
            .await
            .map_err(|e| io_error(format!("creating {}", self.output_dir.display()), e))?;
        let suffix = crate::random::unique_hex(4);
        let dir = self.output_dir.join(format!("{file_name}-{suffix}"));
        tokio::fs::create_dir(&dir)
            .await
            .map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        // The container user may not be the runtime's user.
        tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .await
            .map_err(|e| io_error(format!("chmod {}", dir.display()), e))?;
        Ok(dir)
    }

    /// Streams the logs to the job's log file, waits for the exit, records it and removes the
    /// container.
    fn monitor(
        docker: Docker,
        id: String,
        log_path: PathBuf,
        exit_tx: watch::Sender<Option<Option<i64>>>,
    ) {
        tokio::spawn(async move {
            let logs = {
                let docker = docker.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let Ok(mut file) = tokio::fs::File::create(&log_path).await else {
                        return;
                    };
                    let options = LogsOptions {
                        follow: true,
                        stdout: true,
                        stderr: true,
                        ..Default::default()
                    };
                    let mut stream = docker.logs(&id, Some(options));
                    while let Some(Ok(chunk)) = stream.next().await {
                        if file.write_all(&chunk.into_bytes()).await.is_err() {
                            break;
                        }
                    }
                    let _ = file.flush().await;
                })
            };
            let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
            let code = match wait.next().await {
                Some(Ok(resp)) => Some(resp.status_code),
                // bollard turns a non-zero exit into an error carrying the code.
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Some(code),
                Some(Err(e)) => {
                    tracing::warn!(container = short(&id), "waiting for the container: {e}");
                    None
                }
                None => None,
            };
            // The log stream ends with the container; do not hang on a stuck one.
            let _ = tokio::time::timeout(Duration::from_secs(10), logs).await;
            let _ = exit_tx.send(Some(code));
            let remove = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            if let Err(e) = docker.remove_container(&id, Some(remove)).await {
                tracing::debug!(container = short(&id), "removing the container: {e}");
            }
        });
    }

    async fn kill_and_remove(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        match docker
            .kill_container(
                id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await
        {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => {}
            Err(e) => return Err(docker_error(&format!("killing {}", short(id)), e)),
        }
        match self.job(id) {
            // The monitor removes it once it saw the exit.
            Some(job) => {
                let mut rx = job.exit.clone();
                let _ = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(Option::is_some))
                    .await;
            }
            None => {
                let remove = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                match docker.remove_container(id, Some(remove)).await {
                    Ok(())
                    | Err(DockerError::DockerResponseServerError {
                        status_code: 404 | 409,
                        ..
                    }) => {}
                    Err(e) => return Err(docker_error(&format!("removing {}", short(id)), e)),
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn lab_type(&self) -> &str {
        "docker"
    }

    fn generate(&self, job: &JobSpec, params: &JobParams) -> Result<JobDefinition, RuntimeError> {
        let image = job.image.clone().ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::InvalidParams,
                format!("job {}: a docker job needs an image", job.name),
            )
        })?;
        let mut metadata = job_metadata(&self.name, "docker", job);
        metadata.shift_insert(2, "image".into(), Value::String(image));
        Ok(JobDefinition {
            file_name: job_file_name(job_name(job, params)),
            content: self.templates.render_job(job, params)?,
            metadata: Value::Object(metadata),
        })
    }

    async fn submit(&self, definition: &JobDefinition) -> Result<Option<JobHandle>, RuntimeError> {
        let image = definition
            .metadata
            .get("image")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                RuntimeError::new(
                    RuntimeErrorKind::InvalidParams,
                    "the job definition has no image in its metadata",
                )
            })?
            .to_owned();
        let env = self.environment()?;
        let docker = self.docker().await?;
        self.ensure_image(docker, &image).await?;

        let file_name = Path::new(&definition.file_name)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("job")
            .to_owned();
        let workdir = self.make_workdir(&file_name).await?;
        let script = workdir.join(&file_name);
        tokio::fs::write(&script, definition.content.as_bytes())
            .await
            .map_err(|e| io_error(format!("writing {}", script.display()), e))?;
        tokio::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o775))
            .await
            .map_err(|e| io_error(format!("chmod {}", script.display()), e))?;
        let meta = serde_json::to_vec_pretty(&definition.metadata).unwrap_or_default();
        tokio::fs::write(workdir.join(format!("{file_name}.meta")), meta)
            .await
            .map_err(|e| io_error("writing the job metadata".into(), e))?;

        let mut binds = vec![format!("{}:{JOB_MOUNT}", workdir.display())];
        binds.extend(self.config.volumes.iter().cloned());
        let host_config = HostConfig {
            binds: Some(binds),
            extra_hosts: Some(vec!["host.docker.internal:host-gateway".into()]),
            network_mode: self.config.network_mode.clone(),
            memory: self.config.memory,
            nano_cpus: self.config.cpus.map(|c| (c * 1e9) as i64),
            pids_limit: self.config.pids_limit,
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(vec![format!("{JOB_MOUNT}/{file_name}")]),
            env: Some(env),
            user: self.config.user.clone(),
            working_dir: Some(JOB_MOUNT.into()),
            labels: Some(HashMap::from([
                (LABEL_RUNTIME.to_owned(), self.name.clone()),
                ("org.kernelci.job".to_owned(), file_name.clone()),
            ])),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| docker_error(&format!("creating a container of {image}"), e))?;
        let id = created.id;
        if let Err(e) = docker.start_container(&id, None).await {
            let remove = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            let _ = docker.remove_container(&id, Some(remove)).await;
            return Err(docker_error(
                &format!("starting container {}", short(&id)),
                e,
            ));
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let job = Arc::new(DockerJob {
            workdir: workdir.clone(),
            exit: exit_rx,
            ended_by: Mutex::new(None),
        });
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id.clone(), job);
        }
        Self::monitor(docker.clone(), id.clone(), workdir.join(LOG_FILE), exit_tx);
        tracing::info!(runtime = %self.name, container = short(&id), image, "job started");
        Ok(Some(JobHandle { id, context: None }))
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, RuntimeError> {
        if let Some(job) = self.job(&handle.id) {
            if let Some(status) = job.final_status(&handle.id) {
                return Ok(status);
            }
            return Ok(JobStatus::Running);
        }
        // A container started by another process (or before a restart).
        let docker = self.docker().await?;
        let info = docker
            .inspect_container(&handle.id, None)
            .await
            .map_err(|e| docker_error(&format!("inspecting {}", short(&handle.id)), e))?;
        let state = info.state.unwrap_or_default();
        use bollard::models::ContainerStateStatusEnum as S;
        Ok(match state.status {
            Some(S::CREATED) => JobStatus::Queued,
            Some(S::EXITED | S::DEAD) => JobStatus::Finished {
                exit_code: state
                    .exit_code
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(-1),
            },
            _ => JobStatus::Running,
        })
    }

    async fn wait(&self, handle: &JobHandle, timeout: Duration) -> Result<JobStatus, RuntimeError> {
        let Some(job) = self.job(&handle.id) else {
            // Not ours: poll.
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let status = self.status(handle).await?;
                if status.is_final() {
                    return Ok(status);
                }
                if tokio::time::Instant::now() >= deadline {
                    self.kill_and_remove(&handle.id).await?;
                    return Ok(JobStatus::Incomplete {
                        error_code: ErrorCode::NodeTimeout,
                        message: format!(
                            "container {} ran past its timeout of {} s and was killed",
                            short(&handle.id),
                            timeout.as_secs()
                        ),
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let mut rx = job.exit.clone();
        if tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
            .await
            .is_err()
        {
            job.mark(EndedBy::Timeout(timeout));
            self.kill_and_remove(&handle.id).await?;
        }
        Ok(job
            .final_status(&handle.id)
            .unwrap_or(JobStatus::Incomplete {
                error_code: ErrorCode::NodeTimeout,
                message: format!(
                    "container {} ran past its timeout of {} s",
                    short(&handle.id),
                    timeout.as_secs()
                ),
            }))
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), RuntimeError> {
        if let Some(job) = self.job(&handle.id) {
            if job.final_status(&handle.id).is_some() {
                return Ok(());
            }
            job.mark(EndedBy::Cancel);
        }
        self.kill_and_remove(&handle.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_file_lines_skip_blanks_and_comments() {
        let text = "# a comment\nKCI_API_TOKEN=abc\n\n  \nFOO=bar baz\n   # indented comment\n";
        assert_eq!(env_file_lines(text), ["KCI_API_TOKEN=abc", "FOO=bar baz"]);
    }

    #[test]
    fn settings_parse_with_defaults_and_refuse_unknown_keys() {
        let entry = RuntimeEntry::from_value(
            "docker",
            &json!({"lab_type": "docker", "volumes": ["/data:/data:ro"], "user": "1000",
                    "network_mode": "host", "cpus": 1.5}),
        )
        .unwrap();
        let c = DockerConfig::from_entry(&entry).unwrap();
        assert_eq!(c.volumes, ["/data:/data:ro"]);
        assert_eq!(c.timeout, Duration::from_secs(120));
        assert_eq!(c.cpus, Some(1.5));
        assert!(!c.pull);
        let entry =
            RuntimeEntry::from_value("d", &json!({"lab_type": "docker", "volume": []})).unwrap();
        let err = DockerConfig::from_entry(&entry).unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Config);
        assert!(err.message.contains("volume"), "{}", err.message);
        for bad in [json!(-1), json!(0), json!(1e300)] {
            let entry =
                RuntimeEntry::from_value("d", &json!({"lab_type": "docker", "cpus": bad})).unwrap();
            let err = DockerConfig::from_entry(&entry).unwrap_err();
            assert_eq!(err.kind, RuntimeErrorKind::Config);
            assert!(
                err.message.contains("runtime 'd': cpus must be"),
                "{}",
                err.message
            );
        }
    }
}
