//! [`ShellRuntime`] (lab_type `shell`): each job is a local process.
//!
//! - generate: renders the job's template (by default a shell script that calls
//!   `kci job run`, see `config/runtime/base/shell.jinja2`);
//! - submit: writes the script (mode 0775) into a fresh per-job work directory below the
//!   output directory and starts it in its own process group, with stdout and stderr captured
//!   to `job.log` in that directory; the job id is the pid;
//! - wait: past the timeout, the whole process group is killed and the job is reported
//!   [`JobStatus::Incomplete`] with `node_timeout`;
//! - cancel: SIGTERM to the group, SIGKILL two seconds later; when the script exits, anything
//!   it left behind in its group is killed too, so nothing keeps running.
//!
//! Settings (all optional; upstream's shell entry has no keys): `env`, a map of extra
//! environment variables for every job.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;

use super::registry::{RuntimeContext, RuntimeCredentials, RuntimeEntry};
use super::template::TemplateEngine;
use super::{
    JobDefinition, JobHandle, JobParams, JobSpec, JobStatus, Runtime, RuntimeError,
    RuntimeErrorKind, async_trait, job_file_name, job_metadata, job_name,
};
use crate::models::ErrorCode;

/// The name of the captured output file in each job's work directory.
pub const LOG_FILE: &str = "job.log";

/// How long a canceled job gets between SIGTERM and SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// How long we wait for a killed process to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellSettings {
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy)]
enum EndedBy {
    Timeout(Duration),
    Cancel,
}

#[derive(Debug)]
struct ShellJob {
    pid: u32,
    workdir: PathBuf,
    exit: watch::Receiver<Option<ExitStatus>>,
    ended_by: Mutex<Option<EndedBy>>,
}

impl ShellJob {
    fn final_status(&self) -> Option<JobStatus> {
        let status = (*self.exit.borrow())?;
        let ended_by = self.ended_by.lock().ok().and_then(|g| *g);
        Some(match ended_by {
            Some(EndedBy::Timeout(t)) => JobStatus::Incomplete {
                error_code: ErrorCode::NodeTimeout,
                message: format!(
                    "job {} ran past its timeout of {} s and was killed",
                    self.pid,
                    t.as_secs()
                ),
            },
            Some(EndedBy::Cancel) => JobStatus::Canceled,
            None => JobStatus::Finished {
                exit_code: status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(-1),
            },
        })
    }

    fn mark(&self, by: EndedBy) {
        if let Ok(mut guard) = self.ended_by.lock()
            && guard.is_none()
            && self.exit.borrow().is_none()
        {
            *guard = Some(by);
        }
    }

    async fn reaped(&self, within: Duration) -> bool {
        let mut rx = self.exit.clone();
        tokio::time::timeout(within, rx.wait_for(Option::is_some))
            .await
            .is_ok()
    }
}

/// A runtime that runs each job as a local process. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ShellRuntime {
    name: String,
    templates: Arc<TemplateEngine>,
    output_dir: PathBuf,
    env: BTreeMap<String, String>,
    jobs: Arc<Mutex<HashMap<String, Arc<ShellJob>>>>,
}

/// The registry factory of lab_type `shell`.
pub fn factory(
    entry: &RuntimeEntry,
    _credentials: &RuntimeCredentials,
    context: &RuntimeContext,
) -> Result<Arc<dyn Runtime>, RuntimeError> {
    let settings: ShellSettings = entry.parse_settings()?;
    let mut env = context.job_env.clone();
    env.extend(settings.env);
    Ok(Arc::new(
        ShellRuntime::new(
            &entry.name,
            context.templates.clone(),
            context.output_dir.clone(),
        )
        .with_env(env),
    ))
}

impl ShellRuntime {
    /// A shell runtime named `name`, rendering with `templates` and running jobs below
    /// `output_dir`.
    pub fn new(
        name: &str,
        templates: Arc<TemplateEngine>,
        output_dir: impl Into<PathBuf>,
    ) -> ShellRuntime {
        ShellRuntime {
            name: name.to_owned(),
            templates,
            output_dir: output_dir.into(),
            env: BTreeMap::new(),
            jobs: Arc::default(),
        }
    }

    /// Sets the extra environment of every job.
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> ShellRuntime {
        self.env = env;
        self
    }

    /// The work directory of a job this runtime started (it holds the script and `job.log`).
    pub fn workdir(&self, handle: &JobHandle) -> Option<PathBuf> {
        self.job(handle).map(|j| j.workdir.clone())
    }

    /// The captured output of a job this runtime started, so far.
    pub fn log(&self, handle: &JobHandle) -> Option<String> {
        let dir = self.workdir(handle)?;
        std::fs::read(dir.join(LOG_FILE))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn job(&self, handle: &JobHandle) -> Option<Arc<ShellJob>> {
        self.jobs.lock().ok()?.get(&handle.id).cloned()
    }

    fn pid_of(handle: &JobHandle) -> Result<rustix::process::Pid, RuntimeError> {
        handle
            .id
            .parse::<i32>()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| {
                RuntimeError::new(
                    RuntimeErrorKind::NotFound,
                    format!("shell job id {:?} is not a pid", handle.id),
                )
            })
    }
}

fn signal_group(pid: u32, signal: rustix::process::Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH (the group is gone) is what we want anyway.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

fn io_error(context: String, e: std::io::Error) -> RuntimeError {
    RuntimeError::with_source(RuntimeErrorKind::Unavailable, format!("{context}: {e}"), e)
}

async fn make_workdir(output_dir: &Path, stem: &str) -> Result<PathBuf, RuntimeError> {
    tokio::fs::create_dir_all(output_dir)
        .await
        .map_err(|e| io_error(format!("creating {}", output_dir.display()), e))?;
    for _ in 0..16 {
        let dir = output_dir.join(format!("{stem}-{}", crate::storage::local::random_suffix()));
        match tokio::fs::create_dir(&dir).await {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(format!("creating {}", dir.display()), e)),
        }
    }
    Err(RuntimeError::new(
        RuntimeErrorKind::Unavailable,
        format!("no free work directory name in {}", output_dir.display()),
    ))
}

#[async_trait]
impl Runtime for ShellRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn lab_type(&self) -> &str {
        "shell"
    }

    fn generate(&self, job: &JobSpec, params: &JobParams) -> Result<JobDefinition, RuntimeError> {
        Ok(JobDefinition {
            file_name: job_file_name(job_name(job, params)),
            content: self.templates.render_job(job, params)?,
            metadata: Value::Object(job_metadata(&self.name, "shell", job)),
        })
    }

    async fn submit(&self, definition: &JobDefinition) -> Result<Option<JobHandle>, RuntimeError> {
        let file_name = job_file_name(&definition.file_name);
        let workdir = make_workdir(&self.output_dir, &file_name).await?;
        let script = workdir.join(&file_name);
        tokio::fs::write(&script, definition.content.as_bytes())
            .await
            .map_err(|e| io_error(format!("writing {}", script.display()), e))?;
        tokio::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o775))
            .await
            .map_err(|e| io_error(format!("chmod {}", script.display()), e))?;
        let meta = serde_json::to_vec_pretty(&definition.metadata).unwrap_or_default();
        let meta_path = workdir.join(format!("{file_name}.meta"));
        tokio::fs::write(&meta_path, meta)
            .await
            .map_err(|e| io_error(format!("writing {}", meta_path.display()), e))?;
        let log_path = workdir.join(LOG_FILE);
        let log = std::fs::File::create(&log_path)
            .map_err(|e| io_error(format!("creating {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| io_error(format!("opening {}", log_path.display()), e))?;
        let mut command = if definition.content.starts_with("#!") {
            tokio::process::Command::new(&script)
        } else {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg(&script);
            c
        };
        command
            .current_dir(&workdir)
            .envs(&self.env)
            .env("KCI_JOB_DIR", &workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        // A script we just wrote can be briefly "busy" (ETXTBSY) when another thread of this
        // process forked while our write descriptor was open; the child closes it at exec, so
        // a short wait is enough.
        let mut attempt = 0;
        let mut child = loop {
            match command.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
                }
                other => {
                    break other
                        .map_err(|e| io_error(format!("starting {}", script.display()), e))?;
                }
            }
        };
        let pid = child.id().ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::Internal,
                format!("{} exited before it got a pid", script.display()),
            )
        })?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(pid, "waiting for shell job: {e}");
                    ExitStatus::from_raw(255 << 8)
                }
            };
            // Whatever the script left in its process group goes with it.
            signal_group(pid, rustix::process::Signal::KILL);
            let _ = tx.send(Some(status));
        });
        let job = Arc::new(ShellJob {
            pid,
            workdir,
            exit: rx,
            ended_by: Mutex::new(None),
        });
        let id = pid.to_string();
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id.clone(), job);
        }
        tracing::info!(runtime = %self.name, pid, script = %script.display(), "shell job started");
        Ok(Some(JobHandle { id, context: None }))
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, RuntimeError> {
        if let Some(job) = self.job(handle) {
            return Ok(job.final_status().unwrap_or(JobStatus::Running));
        }
        let pid = Self::pid_of(handle)?;
        match rustix::process::test_kill_process_group(pid) {
            Ok(()) => Ok(JobStatus::Running),
            Err(_) => Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!("no shell job {}", handle.id),
            )),
        }
    }

    async fn wait(&self, handle: &JobHandle, timeout: Duration) -> Result<JobStatus, RuntimeError> {
        let job = self.job(handle).ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!(
                    "shell job {} was not started by runtime {}",
                    handle.id, self.name
                ),
            )
        })?;
        if !job.reaped(timeout).await {
            job.mark(EndedBy::Timeout(timeout));
            signal_group(job.pid, rustix::process::Signal::KILL);
            if !job.reaped(REAP_TIMEOUT).await {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Internal,
                    format!("shell job {} did not die after SIGKILL", job.pid),
                ));
            }
        }
        job.final_status().ok_or_else(|| {
            RuntimeError::new(RuntimeErrorKind::Internal, "job ended without a status")
        })
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), RuntimeError> {
        let Some(job) = self.job(handle) else {
            let pid = Self::pid_of(handle)?;
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            return Ok(());
        };
        if job.exit.borrow().is_some() {
            return Ok(());
        }
        job.mark(EndedBy::Cancel);
        signal_group(job.pid, rustix::process::Signal::TERM);
        if !job.reaped(CANCEL_GRACE).await {
            signal_group(job.pid, rustix::process::Signal::KILL);
        }
        if job.reaped(REAP_TIMEOUT).await {
            Ok(())
        } else {
            Err(RuntimeError::new(
                RuntimeErrorKind::Internal,
                format!("shell job {} did not die after SIGKILL", job.pid),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(job_file_name("kbuild-gcc-14-x86"), "kbuild-gcc-14-x86");
        assert_eq!(job_file_name("../a b/c"), "_a_b_c");
        assert_eq!(job_file_name(""), "job");
    }

    #[test]
    fn settings_reject_unknown_keys() {
        let entry = RuntimeEntry::new(
            "sh",
            "shell",
            serde_json::json!({"volumes": []})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let ctx = RuntimeContext::new(std::env::temp_dir());
        let err = factory(&entry, &RuntimeCredentials::default(), &ctx).expect_err("unknown key");
        assert!(err.message.contains("runtime sh"), "{}", err.message);
        assert!(err.message.contains("volumes"), "{}", err.message);
    }
}
