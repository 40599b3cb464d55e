//! A custom runtime written only against the public `Runtime` trait: it runs each job on a
//! remote host over SSH (the OpenSSH `ssh` command), and is registered with the runtime
//! registry as the custom lab_type `ssh-host`.
//!
//! A runtimes YAML entry for it:
//!
//! ```yaml
//! runtimes:
//!   build-box:
//!     lab_type: ssh-host
//!     host: build-box.example.org
//!     user: kernelci          # optional
//!     port: 22                # optional
//!     identity: ~/.ssh/id_ed25519   # optional
//!     remote_dir: /tmp/kci-jobs     # optional
//! ```
//!
//! Run it: `cargo run --example custom_runtime` prints the job script it would send. With
//! `KCI_SSH_HOST=user@host` (and optionally `KCI_SSH_PORT`) it also submits a small job
//! there and waits for it.

use std::sync::Arc;
use std::time::Duration;

use kernelci::models::{ErrorCode, Node, NodeKind, ObjectId};
use kernelci::runtime::{
    JobDefinition, JobHandle, JobParams, JobSpec, JobStatus, Runtime, RuntimeContext,
    RuntimeCredentials, RuntimeEntry, RuntimeError, RuntimeErrorKind, RuntimeRegistry,
    TemplateEngine, async_trait,
};
use serde::Deserialize;
use serde_json::{Map, json};

/// The keys of an `ssh-host` runtime entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshSettings {
    host: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default = "default_remote_dir")]
    remote_dir: String,
}

fn default_remote_dir() -> String {
    "/tmp/kci-jobs".to_owned()
}

/// Runs jobs on a remote host: the script goes to `<remote_dir>/<job>-<n>/`, runs detached in
/// its own session (so its process group id is its pid), and writes its exit code next to it.
/// The job id is `<dir>:<pid>`, so any process can follow the job.
#[derive(Debug)]
struct SshRuntime {
    name: String,
    settings: SshSettings,
    templates: Arc<TemplateEngine>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl SshRuntime {
    fn factory(
        entry: &RuntimeEntry,
        credentials: &RuntimeCredentials,
        context: &RuntimeContext,
    ) -> Result<Arc<dyn Runtime>, RuntimeError> {
        let mut settings: SshSettings = entry.parse_settings()?;
        // `[runtime.<name>] user` in kernelci.toml wins over the YAML.
        if let Some(user) = &credentials.user {
            settings.user = Some(user.clone());
        }
        Ok(Arc::new(SshRuntime {
            name: entry.name.clone(),
            settings,
            templates: context.templates.clone(),
        }))
    }

    /// Runs `remote_command` on the host, feeding `stdin`; returns (exit code, stdout).
    async fn ssh(&self, remote_command: &str, stdin: &[u8]) -> Result<(i32, String), RuntimeError> {
        use tokio::io::AsyncWriteExt;
        let s = &self.settings;
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]);
        if let Some(port) = s.port {
            cmd.args(["-p", &port.to_string()]);
        }
        if let Some(identity) = &s.identity {
            cmd.args(["-i", identity]);
        }
        let target = match &s.user {
            Some(user) => format!("{user}@{}", s.host),
            None => s.host.clone(),
        };
        cmd.arg(target).arg(remote_command);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let unavailable = |e: std::io::Error| {
            RuntimeError::with_source(
                RuntimeErrorKind::Unavailable,
                format!("runtime {}: ssh to {}: {e}", self.name, s.host),
                e,
            )
        };
        let mut child = cmd.spawn().map_err(unavailable)?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin).await.map_err(unavailable)?;
        }
        let out = child.wait_with_output().await.map_err(unavailable)?;
        let code = out.status.code().unwrap_or(-1);
        // ssh itself exits 255 when it cannot connect or authenticate.
        if code == 255 {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Unavailable,
                format!(
                    "runtime {}: ssh to {} failed: {}",
                    self.name,
                    s.host,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    fn parse_id(handle: &JobHandle) -> Result<(String, u32), RuntimeError> {
        handle
            .id
            .rsplit_once(':')
            .and_then(|(dir, pid)| Some((dir.to_owned(), pid.parse().ok()?)))
            .ok_or_else(|| {
                RuntimeError::new(
                    RuntimeErrorKind::NotFound,
                    format!("{:?} is not an ssh-host job id", handle.id),
                )
            })
    }
}

#[async_trait]
impl Runtime for SshRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn lab_type(&self) -> &str {
        "ssh-host"
    }

    fn generate(&self, job: &JobSpec, params: &JobParams) -> Result<JobDefinition, RuntimeError> {
        let content = self.templates.render(&job.template, params)?;
        if content.trim().is_empty() {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Generation,
                format!("template {} rendered nothing", job.template),
            ));
        }
        Ok(JobDefinition {
            file_name: job.name.clone(),
            content,
            metadata: json!({"runtime": self.name, "host": self.settings.host}),
        })
    }

    async fn submit(&self, definition: &JobDefinition) -> Result<Option<JobHandle>, RuntimeError> {
        let dir = format!(
            "{}/{}-{}",
            self.settings.remote_dir,
            definition.file_name,
            ObjectId::new()
        );
        let d = quote(&dir);
        let script = format!(
            "mkdir -p {d} && cat > {d}/job.sh && chmod 775 {d}/job.sh && cd {d} && \
             setsid sh -c './job.sh > job.log 2>&1; echo $? > exit' < /dev/null > /dev/null 2>&1 & echo $!"
        );
        let (code, out) = self.ssh(&script, definition.content.as_bytes()).await?;
        let pid: u32 = out.trim().parse().map_err(|_| {
            RuntimeError::new(
                RuntimeErrorKind::Unavailable,
                format!(
                    "runtime {}: the remote start failed ({code}): {out}",
                    self.name
                ),
            )
        })?;
        Ok(Some(JobHandle {
            id: format!("{dir}:{pid}"),
            context: Some(self.settings.host.clone()),
        }))
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, RuntimeError> {
        let (dir, pid) = Self::parse_id(handle)?;
        let d = quote(&dir);
        let (_, out) = self
            .ssh(
                &format!("cat {d}/exit 2>/dev/null || (kill -0 {pid} 2>/dev/null && echo running) || echo lost"),
                b"",
            )
            .await?;
        Ok(match out.trim() {
            "running" => JobStatus::Running,
            "lost" => JobStatus::Incomplete {
                error_code: ErrorCode::Infrastructure,
                message: format!("job {pid} on {} vanished", self.settings.host),
            },
            code => JobStatus::Finished {
                exit_code: code.parse().unwrap_or(-1),
            },
        })
    }

    async fn wait(&self, handle: &JobHandle, timeout: Duration) -> Result<JobStatus, RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status(handle).await?;
            if status.is_final() {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                self.cancel(handle).await?;
                return Ok(JobStatus::Incomplete {
                    error_code: ErrorCode::NodeTimeout,
                    message: format!("killed after {} s", timeout.as_secs()),
                });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), RuntimeError> {
        let (_, pid) = Self::parse_id(handle)?;
        // setsid made the job a session and process group leader: kill the whole group.
        self.ssh(&format!("kill -KILL -- -{pid} 2>/dev/null; true"), b"")
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The registry knows shell (and docker/kubernetes/lava with their features); add ours.
    let mut registry = RuntimeRegistry::new();
    registry.register("ssh-host", SshRuntime::factory);

    let templates = std::env::temp_dir().join("kci-custom-runtime-example");
    std::fs::create_dir_all(&templates)?;
    std::fs::write(
        templates.join("hello.jinja2"),
        "#!/bin/sh\necho 'KTAP version 1'\necho '1..1'\necho 'ok 1 hello from {{ name }} on '\"$(hostname)\"\n",
    )?;
    let context = RuntimeContext::new(std::env::temp_dir().join("kci-jobs"))
        .with_templates(TemplateEngine::new(vec![templates]));

    let host = std::env::var("KCI_SSH_HOST").ok();
    let mut entry =
        json!({"lab_type": "ssh-host", "host": host.clone().unwrap_or_else(|| "localhost".into())});
    if let Ok(port) = std::env::var("KCI_SSH_PORT") {
        entry["port"] = json!(port.parse::<u16>()?);
    }
    let entry = RuntimeEntry::from_value("build-box", &entry)?;
    let runtime = registry.build(&entry, &RuntimeCredentials::default(), &context)?;
    println!(
        "built runtime {} (lab_type {})",
        runtime.name(),
        runtime.lab_type()
    );

    let mut node = Node::new(NodeKind::Job, "hello");
    node.id = Some(ObjectId::new());
    let job = JobSpec {
        node,
        name: "hello".into(),
        template: "hello.jinja2".into(),
        kind: "job".into(),
        image: None,
        params: Map::new(),
        platform: "build-box".into(),
        platform_config: Map::new(),
        storage_config_name: None,
        storage_config: None,
        api_config: Map::new(),
    };
    let params = runtime.params(&job)?;
    let definition = runtime.generate(&job, &params)?;
    println!("--- {} ---\n{}", definition.file_name, definition.content);

    if host.is_some() {
        match runtime.submit(&definition).await? {
            Some(handle) => {
                println!("submitted as {handle}");
                let status = runtime.wait(&handle, Duration::from_secs(60)).await?;
                println!("status: {}", serde_json::to_string(&status)?);
            }
            None => println!("submitted (no job id)"),
        }
    } else {
        println!("set KCI_SSH_HOST=user@host to run it remotely");
    }
    Ok(())
}
