//! [`KubernetesRuntime`] (lab_type `kubernetes`, feature `kubernetes`): each job is a
//! `batch/v1` Job, through the Kubernetes API (crates `kube` and `k8s-openapi`;
//! `spec/kernelci-pipeline.md` §4.7.3).
//!
//! - generate: picks the Kubernetes Job name ([`k8s_job_name`]: `kci-<node id>-<job[:24]>`,
//!   `:/_+=` mapped to `-`, lowercased, cut to 54 characters, plus `-` and 8 random
//!   `[a-z0-9]`), the API and storage secret names for the instance (`KCI_INSTANCE`: `prod`,
//!   the default, uses `kci-api-jwt-early-access` and `production`, anything else
//!   `kci-api-jwt-staging` and `staging`), renders the job's template into the job script,
//!   then renders `base/kubernetes.jinja2` (a `batch/v1` Job running the script, with the
//!   script in `script`) into the manifest, checked by parsing it as a Job; the file name is
//!   `<k8s_job_name>.yaml`;
//! - submit: with several contexts, counts the `Pending` pods of the namespace in each (3
//!   attempts; an unreachable cluster counts 1000), stops at the first with none and
//!   otherwise takes the least busy; creates the Job there. The handle is the Job name (its
//!   `job-name` label when the server sets one) and the chosen context;
//! - status: from the Job (`Complete` → exit 0, `Failed` → the container's exit code, else 1)
//!   and its Pod (`Pending` → queued);
//! - wait: polls; at the timeout the Job is deleted and the job is
//!   [`JobStatus::Incomplete`] with `node_timeout`;
//! - cancel: deletes the Job with foreground propagation, so its Pods go too;
//!   [`KubernetesRuntime::logs`] reads the Pod's log.
//!
//! Settings: `context` (a kubeconfig context name, or a list of them; default the current
//! context); ours: `kubeconfig` (a file; default `$KUBECONFIG`, then `~/.kube/config`),
//! `namespace` (`default`), `timeout` (API timeout, 30 s), `poll_interval` (5 s).
//!
//! No cluster can run where this crate is developed: the tests run against a scripted API
//! server that answers the routes used here (`tests/runtime_kubernetes.rs`), not a real
//! Kubernetes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;
use serde_json::{Value, json};

use super::registry::{RuntimeContext, RuntimeCredentials, RuntimeEntry};
use super::template::TemplateEngine;
use super::{
    JobDefinition, JobHandle, JobParams, JobSpec, JobStatus, Runtime, RuntimeError,
    RuntimeErrorKind, async_trait, default_params, poll_until_final,
};
use crate::models::ErrorCode;

/// The manifest template every Kubernetes job is wrapped in.
pub const MANIFEST_TEMPLATE: &str = "base/kubernetes.jinja2";
/// The Pending-pod count given to a cluster that cannot be reached.
pub const UNREACHABLE_PENDING: usize = 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Contexts {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct K8sSettings {
    #[serde(default)]
    context: Option<Contexts>,
    #[serde(default)]
    kubeconfig: Option<PathBuf>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    poll_interval: Option<f64>,
}

/// The typed settings of a Kubernetes runtime entry.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    /// The kubeconfig contexts to choose from (empty: the current context).
    pub contexts: Vec<String>,
    /// The kubeconfig file (default `$KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of Jobs and Pods.
    pub namespace: String,
    /// API request timeout.
    pub timeout: Duration,
    /// How often [`Runtime::wait`] polls.
    pub poll_interval: Duration,
}

impl KubernetesConfig {
    /// Parses the settings of a runtime entry.
    pub fn from_entry(entry: &RuntimeEntry) -> Result<KubernetesConfig, RuntimeError> {
        let s: K8sSettings = entry.parse_settings()?;
        let secs = |v: Option<f64>, d: f64| {
            Duration::from_secs_f64(v.filter(|v| v.is_finite() && *v > 0.0).unwrap_or(d))
        };
        Ok(KubernetesConfig {
            contexts: match s.context {
                None => Vec::new(),
                Some(Contexts::One(c)) => vec![c],
                Some(Contexts::Many(cs)) => cs,
            },
            kubeconfig: s.kubeconfig,
            namespace: s.namespace.unwrap_or_else(|| "default".into()),
            timeout: secs(s.timeout, 30.0),
            poll_interval: secs(s.poll_interval, 5.0),
        })
    }
}

/// The Kubernetes Job name of a job (upstream's rule): `kci-<node_id>-<job_name[:24]>` with
/// `:/_+=` as `-`, lowercased, cut to 54 characters, then `-<suffix>` (8 random `[a-z0-9]`
/// in [`Runtime::generate`]).
pub fn k8s_job_name(node_id: &str, job_name: &str, suffix: &str) -> String {
    let short: String = job_name.chars().take(24).collect();
    let name: String = format!("kci-{node_id}-{short}")
        .chars()
        .map(|c| if ":/_+=".contains(c) { '-' } else { c })
        .flat_map(char::to_lowercase)
        .take(54)
        .collect();
    format!("{name}-{suffix}")
}

fn random_suffix() -> Result<String, RuntimeError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = crate::random::bytes(8)
        .map_err(|e| RuntimeError::new(RuntimeErrorKind::Internal, format!("random: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

fn kube_error(what: String, e: kube::Error) -> RuntimeError {
    let kind = match &e {
        kube::Error::Api(status) if status.code == 404 => RuntimeErrorKind::NotFound,
        kube::Error::Api(status) if (400..500).contains(&status.code) => {
            RuntimeErrorKind::InvalidParams
        }
        _ => RuntimeErrorKind::Unavailable,
    };
    RuntimeError::with_source(kind, format!("kubernetes: {what}: {e}"), e)
}

/// The Kubernetes runtime. See the [module docs](self).
pub struct KubernetesRuntime {
    name: String,
    config: KubernetesConfig,
    templates: Arc<TemplateEngine>,
    clients: tokio::sync::Mutex<HashMap<String, kube::Client>>,
    canceled: Mutex<Vec<String>>,
}

impl std::fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The registry factory of lab_type `kubernetes`.
pub fn factory(
    entry: &RuntimeEntry,
    _credentials: &RuntimeCredentials,
    context: &RuntimeContext,
) -> Result<Arc<dyn Runtime>, RuntimeError> {
    let config = KubernetesConfig::from_entry(entry)?;
    Ok(Arc::new(KubernetesRuntime::new(
        &entry.name,
        config,
        context.templates.clone(),
    )))
}

impl KubernetesRuntime {
    /// A Kubernetes runtime named `name` with `config`, rendering with `templates`.
    pub fn new(
        name: &str,
        config: KubernetesConfig,
        templates: Arc<TemplateEngine>,
    ) -> KubernetesRuntime {
        KubernetesRuntime {
            name: name.to_owned(),
            config,
            templates,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            canceled: Mutex::new(Vec::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    fn kubeconfig(&self) -> Result<Kubeconfig, RuntimeError> {
        let read = |p: &std::path::Path| {
            Kubeconfig::read_from(p).map_err(|e| {
                RuntimeError::with_source(
                    RuntimeErrorKind::Config,
                    format!("runtime {}: kubeconfig {}: {e}", self.name, p.display()),
                    e,
                )
            })
        };
        match &self.config.kubeconfig {
            Some(path) => read(path),
            None => Kubeconfig::read().map_err(|e| {
                RuntimeError::with_source(
                    RuntimeErrorKind::Config,
                    format!("runtime {}: no kubeconfig: {e}", self.name),
                    e,
                )
            }),
        }
    }

    /// The client of a context (`""` is the kubeconfig's current context), made once.
    async fn client(&self, context: &str) -> Result<kube::Client, RuntimeError> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(context) {
            return Ok(c.clone());
        }
        let options = KubeConfigOptions {
            context: (!context.is_empty()).then(|| context.to_owned()),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(self.kubeconfig()?, &options)
            .await
            .map_err(|e| {
                RuntimeError::with_source(
                    RuntimeErrorKind::Config,
                    format!("runtime {}: context {context:?}: {e}", self.name),
                    e,
                )
            })?;
        config.connect_timeout = Some(self.config.timeout);
        config.read_timeout = Some(self.config.timeout);
        config.write_timeout = Some(self.config.timeout);
        let client = kube::Client::try_from(config).map_err(|e| {
            RuntimeError::with_source(
                RuntimeErrorKind::Config,
                format!("runtime {}: context {context:?}: {e}", self.name),
                e,
            )
        })?;
        clients.insert(context.to_owned(), client.clone());
        Ok(client)
    }

    fn jobs(&self, client: kube::Client) -> Api<Job> {
        Api::namespaced(client, &self.config.namespace)
    }

    fn pods(&self, client: kube::Client) -> Api<Pod> {
        Api::namespaced(client, &self.config.namespace)
    }

    /// How many Pods are `Pending` in the namespace of `context` (3 attempts; an unreachable
    /// cluster counts [`UNREACHABLE_PENDING`]).
    pub async fn pending_pods(&self, context: &str) -> usize {
        let Ok(client) = self.client(context).await else {
            return UNREACHABLE_PENDING;
        };
        let pods = self.pods(client);
        let lp = ListParams::default().fields("status.phase=Pending");
        for attempt in 0..3 {
            match pods.list(&lp).await {
                Ok(list) => return list.items.len(),
                Err(e) => {
                    tracing::warn!(runtime = %self.name, context, attempt, "counting pending pods: {e}");
                }
            }
        }
        UNREACHABLE_PENDING
    }

    /// The context a new job goes to: the only one, or the first without Pending pods, else
    /// the least busy (`""` for the kubeconfig's current context).
    pub async fn choose_context(&self) -> String {
        match self.config.contexts.as_slice() {
            [] => String::new(),
            [one] => one.clone(),
            many => {
                let mut best: Option<(usize, &String)> = None;
                for context in many {
                    let pending = self.pending_pods(context).await;
                    if pending == 0 {
                        return context.clone();
                    }
                    if best.is_none_or(|(n, _)| pending < n) {
                        best = Some((pending, context));
                    }
                }
                best.map(|(_, c)| c.clone()).unwrap_or_default()
            }
        }
    }

    async fn client_for(&self, handle: &JobHandle) -> Result<kube::Client, RuntimeError> {
        self.client(handle.context.as_deref().unwrap_or("")).await
    }

    async fn job_pod(&self, handle: &JobHandle) -> Result<Option<Pod>, RuntimeError> {
        let pods = self.pods(self.client_for(handle).await?);
        let lp = ListParams::default().labels(&format!("job-name={}", handle.id));
        let list = pods
            .list(&lp)
            .await
            .map_err(|e| kube_error(format!("pods of job {}", handle.id), e))?;
        Ok(list.items.into_iter().next())
    }

    /// The log of the job's Pod (empty when it has no Pod yet).
    pub async fn logs(&self, handle: &JobHandle) -> Result<String, RuntimeError> {
        let Some(pod) = self.job_pod(handle).await? else {
            return Ok(String::new());
        };
        let name = pod.metadata.name.unwrap_or_default();
        self.pods(self.client_for(handle).await?)
            .logs(&name, &LogParams::default())
            .await
            .map_err(|e| kube_error(format!("logs of pod {name}"), e))
    }

    async fn delete(&self, handle: &JobHandle) -> Result<(), RuntimeError> {
        let jobs = self.jobs(self.client_for(handle).await?);
        match jobs.delete(&handle.id, &DeleteParams::foreground()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(kube_error(format!("deleting job {}", handle.id), e)),
        }
    }

    fn was_canceled(&self, id: &str) -> bool {
        self.canceled
            .lock()
            .is_ok_and(|c| c.iter().any(|x| x == id))
    }
}

fn container_exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn lab_type(&self) -> &str {
        "kubernetes"
    }

    fn params(&self, job: &JobSpec) -> Result<JobParams, RuntimeError> {
        let mut params = default_params(job, self.lab_type());
        let node_id = job.node.id.map(|id| id.to_string()).unwrap_or_default();
        params.insert(
            "k8s_job_name".into(),
            json!(k8s_job_name(&node_id, &job.name, &random_suffix()?)),
        );
        let prod = std::env::var("KCI_INSTANCE").map_or(true, |i| i.is_empty() || i == "prod");
        let (api_key, storage) = if prod {
            ("kci-api-jwt-early-access", "production")
        } else {
            ("kci-api-jwt-staging", "staging")
        };
        params.insert("k8s_api_key".into(), json!(api_key));
        params.insert("k8s_storage_token_name".into(), json!(storage));
        Ok(params)
    }

    fn generate(&self, job: &JobSpec, params: &JobParams) -> Result<JobDefinition, RuntimeError> {
        let script = self.templates.render_job(job, params)?;
        let name = params
            .get("k8s_job_name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                RuntimeError::new(RuntimeErrorKind::InvalidParams, "no k8s_job_name parameter")
            })?
            .to_owned();
        let mut manifest_params = params.clone();
        manifest_params.insert("script".into(), Value::String(script));
        let content = self.templates.render(MANIFEST_TEMPLATE, &manifest_params)?;
        let parsed: Job = serde_norway::from_str(&content).map_err(|e| {
            RuntimeError::with_source(
                RuntimeErrorKind::Generation,
                format!("{MANIFEST_TEMPLATE} did not render a batch/v1 Job: {e}"),
                e,
            )
        })?;
        if parsed.metadata.name.as_deref() != Some(name.as_str()) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Generation,
                format!("{MANIFEST_TEMPLATE}: the Job must be named {name}"),
            ));
        }
        Ok(JobDefinition {
            file_name: format!("{name}.yaml"),
            content,
            metadata: json!({
                "runtime": self.name,
                "lab_type": "kubernetes",
                "job": job.name,
                "k8s_job_name": name,
                "node_id": job.node.id,
            }),
        })
    }

    async fn submit(&self, definition: &JobDefinition) -> Result<Option<JobHandle>, RuntimeError> {
        let job: Job = serde_norway::from_str(&definition.content).map_err(|e| {
            RuntimeError::with_source(
                RuntimeErrorKind::InvalidParams,
                format!("{}: not a batch/v1 Job: {e}", definition.file_name),
                e,
            )
        })?;
        let context = self.choose_context().await;
        let jobs = self.jobs(self.client(&context).await.map_err(|mut e| {
            e.kind = RuntimeErrorKind::Unavailable;
            e
        })?);
        let created = jobs
            .create(&PostParams::default(), &job)
            .await
            .map_err(|e| {
                let mut err = kube_error(format!("creating job in context {context:?}"), e);
                // Whatever the cluster says, the scheduler records a submit error.
                err.kind = RuntimeErrorKind::Unavailable;
                err
            })?;
        let id = created
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("job-name").cloned())
            .or(created.metadata.name)
            .ok_or_else(|| {
                RuntimeError::new(RuntimeErrorKind::Internal, "the created Job has no name")
            })?;
        tracing::info!(runtime = %self.name, job = %id, context, "Kubernetes job created");
        Ok(Some(JobHandle {
            id,
            context: (!context.is_empty()).then_some(context),
        }))
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, RuntimeError> {
        let jobs = self.jobs(self.client_for(handle).await?);
        let job = match jobs.get(&handle.id).await {
            Ok(job) => job,
            Err(kube::Error::Api(s)) if s.code == 404 && self.was_canceled(&handle.id) => {
                return Ok(JobStatus::Canceled);
            }
            Err(e) => return Err(kube_error(format!("job {}", handle.id), e)),
        };
        if self.was_canceled(&handle.id) {
            return Ok(JobStatus::Canceled);
        }
        let status = job.status.unwrap_or_default();
        let condition = |kind: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == kind && c.status == "True")
        };
        if condition("Complete") || status.succeeded.unwrap_or(0) > 0 {
            return Ok(JobStatus::Finished { exit_code: 0 });
        }
        if condition("Failed") {
            let code = self
                .job_pod(handle)
                .await
                .ok()
                .flatten()
                .as_ref()
                .and_then(container_exit_code)
                .filter(|c| *c != 0)
                .unwrap_or(1);
            return Ok(JobStatus::Finished { exit_code: code });
        }
        let phase = self
            .job_pod(handle)
            .await?
            .and_then(|p| p.status.and_then(|s| s.phase));
        Ok(match phase.as_deref() {
            None | Some("Pending") => JobStatus::Queued,
            _ => JobStatus::Running,
        })
    }

    async fn wait(&self, handle: &JobHandle, timeout: Duration) -> Result<JobStatus, RuntimeError> {
        if let Some(status) =
            poll_until_final(self, handle, timeout, self.config.poll_interval).await?
        {
            return Ok(status);
        }
        self.delete(handle).await?;
        Ok(JobStatus::Incomplete {
            error_code: ErrorCode::NodeTimeout,
            message: format!(
                "Kubernetes job {} did not finish within {} s and was deleted",
                handle.id,
                timeout.as_secs()
            ),
        })
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), RuntimeError> {
        match self.status(handle).await {
            Ok(s) if s.is_final() => return Ok(()),
            Err(e) if e.kind == RuntimeErrorKind::NotFound => return Ok(()),
            _ => {}
        }
        self.delete(handle).await?;
        if let Ok(mut c) = self.canceled.lock() {
            c.push(handle.id.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_follow_upstream_rules() {
        let name = k8s_job_name(
            "65a1b2c3d4e5f60718293a4b",
            "kbuild-gcc-12-x86_64+kselftest:foo/bar=baz",
            "abcd1234",
        );
        // 4 + 24 + 1 + 24 = 53 characters before the suffix.
        assert_eq!(
            name,
            "kci-65a1b2c3d4e5f60718293a4b-kbuild-gcc-12-x86-64-kse-abcd1234"
        );
        let long = k8s_job_name(&"A".repeat(60), "Job", "x");
        assert_eq!(long.len(), 54 + 2);
        assert!(long.starts_with("kci-aaaa"));
        let s = random_suffix().unwrap();
        assert_eq!(s.len(), 8);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn contexts_are_a_string_or_a_list() {
        let entry = RuntimeEntry::from_value(
            "k8s",
            &json!({"lab_type": "kubernetes", "context": ["a", "b"]}),
        )
        .unwrap();
        let c = KubernetesConfig::from_entry(&entry).unwrap();
        assert_eq!(c.contexts, ["a", "b"]);
        assert_eq!(c.namespace, "default");
        let entry =
            RuntimeEntry::from_value("k8s", &json!({"lab_type": "kubernetes", "context": "a"}))
                .unwrap();
        assert_eq!(
            KubernetesConfig::from_entry(&entry).unwrap().contexts,
            ["a"]
        );
    }
}
