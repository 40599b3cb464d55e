//! [`LavaRuntime`] (lab_type `lava`, feature `lava`): jobs run in a LAVA lab, through its REST
//! API v0.2 (`spec/kernelci-pipeline.md` §4.7.4, observed behaviour in
//! `recipes/lava/REST-NOTES.md`).
//!
//! - params: upstream's base parameters plus `notify` (the entry's `notify` map, whose
//!   `callback.token` is the *name* of the lab token LAVA sends back) and `priority`
//!   ([`LavaRuntime::priority`]);
//! - generate: renders the job template (normally one extending `base/lava.jinja2`), then a
//!   YAML round trip to normalise it; the file name is `<name>.yaml`;
//! - submit: `POST <url>/api/v0.2/jobs/` with `{"definition": <yaml>}` and
//!   `Authorization: Token <runtime_token>`; the job id is `job_ids[0]`. Without a `url` the
//!   lab pulls its jobs: the definition is uploaded to the default storage at
//!   `jobs/YYYYMMDD/<uuid>.yaml`, submit returns `None` and
//!   [`Runtime::job_definition_url`] gives the URL;
//! - status / wait: `GET jobs/<id>/`; `Finished` + `Complete` is exit code 0, `Incomplete` is
//!   [`JobStatus::Incomplete`] (`Infrastructure`), `Canceled` is [`JobStatus::Canceled`];
//!   wait polls every `poll_interval` seconds (3) and cancels the job at its timeout;
//! - cancel: `GET jobs/<id>/cancel/` (LAVA's cancel is a GET), skipped for finished jobs;
//! - queue gate: [`Runtime::queue_depth`] counts `Submitted` jobs of a device type,
//!   [`Runtime::online_devices`] lists the device hostnames whose health is `Good` (or absent),
//!   following `next` pages.
//!
//! Any transport error, 5xx, or refusal of a submit is [`RuntimeErrorKind::Unavailable`], which
//! the scheduler records as `submit_error`.
//!
//! Settings (the runtime YAML entry): `url`, `priority`, `priority_min`, `priority_max`
//! (`low`=0, `medium`=50, `high`=100 or a number, clamped to 0..100), `queue_timeout`
//! (`{days, hours}`), `notify`, `max_queue_depth` (50), `disable_queue_limit` (false),
//! `max_queue_depth_priority_factor` (2.0, at least 1); ours: `timeout` (REST timeout, 30 s)
//! and `poll_interval` (3 s).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::registry::{RuntimeContext, RuntimeCredentials, RuntimeEntry};
use super::template::TemplateEngine;
use super::{
    JobDefinition, JobHandle, JobParams, JobSpec, JobStatus, Runtime, RuntimeError,
    RuntimeErrorKind, async_trait, default_params, file_stem, job_metadata, job_name,
    poll_until_final,
};
use crate::models::ErrorCode;
use crate::storage::{Storage, UploadFile};

mod config;

pub use config::{
    LavaConfig, PRIORITY_HIGH, PRIORITY_HIGHEST, PRIORITY_LOW, PRIORITY_MEDIUM, SERVICE_PIPELINE,
    resolve_priority,
};

/// The LAVA runtime. See the [module docs](self).
#[derive(Debug)]
pub struct LavaRuntime {
    name: String,
    config: LavaConfig,
    token: Option<String>,
    templates: Arc<TemplateEngine>,
    storage: Option<Arc<dyn Storage>>,
    http: OnceLock<reqwest::Client>,
    pulled: Mutex<HashMap<u64, String>>,
}

/// The registry factory of lab_type `lava`.
pub fn factory(
    entry: &RuntimeEntry,
    credentials: &RuntimeCredentials,
    context: &RuntimeContext,
) -> Result<Arc<dyn Runtime>, RuntimeError> {
    let config = LavaConfig::from_entry(entry)?;
    let mut runtime = LavaRuntime::new(
        &entry.name,
        config,
        credentials.token().map(str::to_owned),
        context.templates.clone(),
    )?;
    if let Some(storage) = &context.storage {
        runtime = runtime.with_storage(storage.clone());
    }
    Ok(Arc::new(runtime))
}

fn definition_key(definition: &JobDefinition) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    definition.file_name.hash(&mut h);
    definition.content.hash(&mut h);
    h.finish()
}

impl LavaRuntime {
    /// A LAVA runtime named `name` with `config`, the lab's REST `token`, rendering with
    /// `templates`.
    pub fn new(
        name: &str,
        config: LavaConfig,
        token: Option<String>,
        templates: Arc<TemplateEngine>,
    ) -> Result<LavaRuntime, RuntimeError> {
        Ok(LavaRuntime {
            name: name.to_owned(),
            config,
            token,
            templates,
            storage: None,
            http: OnceLock::new(),
            pulled: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP client, built at the first REST call (programs must have installed a rustls
    /// crypto provider by then, as for every reqwest client of this crate).
    fn http(&self) -> Result<&reqwest::Client, RuntimeError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .timeout(self.config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RuntimeError::with_source(RuntimeErrorKind::Config, "HTTP client", e))?;
        Ok(self.http.get_or_init(|| client))
    }

    /// Uses `storage` for pull-lab job definitions.
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> LavaRuntime {
        self.storage = Some(storage);
        self
    }

    /// The settings.
    pub fn config(&self) -> &LavaConfig {
        &self.config
    }

    /// The priority of a job (upstream `_get_priority`): a person's job (submitter other than
    /// `service:pipeline`) uses `node.data.priority` (default 80); a pipeline job uses
    /// `node.data.tree_priority`, else the job's `priority` parameter (default 20). Then the
    /// lab's scale: `p × priority / 100` when the lab sets `priority`, else
    /// `p × (max − min) / 100 + min` when it sets both bounds.
    pub fn priority(&self, job: &JobSpec) -> i64 {
        let node = &job.node;
        let data = |key: &str| node.data.as_ref().and_then(|d| d.get(key));
        let mut p = match node.submitter.as_deref() {
            Some(s) if s != SERVICE_PIPELINE => {
                resolve_priority(data("priority"), PRIORITY_HIGHEST)
            }
            _ => match data("tree_priority").filter(|v| !v.is_null()) {
                Some(tree) => resolve_priority(Some(tree), PRIORITY_LOW),
                None => resolve_priority(job.params.get("priority"), PRIORITY_LOW),
            },
        };
        if let Some(scale) = self.config.priority.filter(|p| *p != 0) {
            p = (p as f64 * scale as f64 / 100.0) as i64;
        } else if let (Some(min), Some(max)) = (self.config.priority_min, self.config.priority_max)
        {
            p = (p as f64 * (max - min) as f64 / 100.0 + min as f64) as i64;
        }
        p
    }

    /// The queue limit of the scheduler's LAVA queue gate for `online` devices and a base
    /// priority (0..100): `int(max_queue_depth × online × factor)` with
    /// `factor = 1 + priority/100 × (max_queue_depth_priority_factor − 1)`.
    pub fn queue_limit(&self, online: usize, base_priority: i64) -> u64 {
        let fraction = base_priority as f64 / 100.0;
        let factor = 1.0 + fraction * (self.config.max_queue_depth_priority_factor - 1.0);
        (self.config.max_queue_depth as f64 * online as f64 * factor) as u64
    }

    fn api_url(&self, path: &str) -> Option<String> {
        self.config
            .url
            .as_ref()
            .map(|u| format!("{u}/api/v0.2/{path}"))
    }

    fn unavailable(&self, what: String, e: impl Into<super::BoxError>) -> RuntimeError {
        RuntimeError::with_source(
            RuntimeErrorKind::Unavailable,
            format!("LAVA runtime {}: {what}", self.name),
            e,
        )
    }

    /// One REST call; returns the status and the JSON body (`null` when not JSON).
    async fn call(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), RuntimeError> {
        let mut req = self
            .http()?
            .request(method.clone(), url)
            .query(&[("format", "json"), ("limit", "256")])
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            req = req.header(reqwest::header::AUTHORIZATION, format!("Token {token}"));
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.unavailable(format!("{method} {url}"), e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| self.unavailable(format!("{method} {url}: reading the answer"), e))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_server_error() {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Unavailable,
                format!(
                    "LAVA runtime {}: {method} {url}: {status}: {}",
                    self.name,
                    lava_message(&value)
                ),
            ));
        }
        Ok((status, value))
    }

    async fn get_json(&self, url: &str, query: &[(&str, &str)]) -> Result<Value, RuntimeError> {
        let (status, value) = self.call(Method::GET, url, query, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!("LAVA runtime {}: {url}: not found", self.name),
            ));
        }
        if !status.is_success() {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Unavailable,
                format!(
                    "LAVA runtime {}: GET {url}: {status}: {}",
                    self.name,
                    lava_message(&value)
                ),
            ));
        }
        Ok(value)
    }

    fn require_url(&self, path: &str) -> Result<String, RuntimeError> {
        self.api_url(path).ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::Config,
                format!(
                    "LAVA runtime {} has no url (a pull lab): it cannot follow jobs",
                    self.name
                ),
            )
        })
    }

    fn job_id(handle: &JobHandle) -> Result<u64, RuntimeError> {
        handle.id.trim().parse().map_err(|_| {
            RuntimeError::new(
                RuntimeErrorKind::InvalidParams,
                format!("{:?} is not a LAVA job id", handle.id),
            )
        })
    }

    async fn upload_definition(&self, definition: &JobDefinition) -> Result<String, RuntimeError> {
        let storage = self.storage.as_ref().ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::Config,
                format!(
                    "LAVA runtime {} has no url and no storage for pulled job definitions",
                    self.name
                ),
            )
        })?;
        // The name is the only secret of a pulled definition: really random, or no upload.
        let id = crate::random::hex(16).map_err(|e| {
            RuntimeError::new(RuntimeErrorKind::Internal, format!("random id: {e}"))
        })?;
        let dest = format!("jobs/{}", chrono::Utc::now().format("%Y%m%d"));
        let file = format!("{id}.yaml");
        let url = storage
            .upload_single(
                UploadFile::from_bytes(definition.content.clone().into_bytes(), file),
                &dest,
            )
            .await
            .map_err(|e| self.unavailable("uploading the job definition".into(), e))?;
        if let Ok(mut pulled) = self.pulled.lock() {
            pulled.insert(definition_key(definition), url.clone());
        }
        Ok(url)
    }
}

fn lava_message(value: &Value) -> String {
    match value {
        Value::Object(map) => map
            .get("message")
            .or_else(|| map.get("detail"))
            .map_or_else(
                || value.to_string(),
                |m| m.as_str().map_or_else(|| m.to_string(), str::to_owned),
            ),
        Value::String(s) => s.chars().take(300).collect(),
        other => other.to_string(),
    }
}

fn status_of(id: &str, job: &Value) -> JobStatus {
    let state = job.get("state").and_then(Value::as_str).unwrap_or("");
    let health = job.get("health").and_then(Value::as_str).unwrap_or("");
    match state {
        "Finished" => match health {
            "Complete" => JobStatus::Finished { exit_code: 0 },
            "Canceled" => JobStatus::Canceled,
            other => JobStatus::Incomplete {
                error_code: ErrorCode::Infrastructure,
                message: match job.get("failure_comment").and_then(Value::as_str) {
                    Some(comment) if !comment.is_empty() => {
                        format!("LAVA job {id}: health {other}: {comment}")
                    }
                    _ => format!("LAVA job {id}: health {other}"),
                },
            },
        },
        "Running" | "Canceling" => JobStatus::Running,
        _ => JobStatus::Queued,
    }
}

#[async_trait]
impl Runtime for LavaRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn lab_type(&self) -> &str {
        "lava"
    }

    fn params(&self, job: &JobSpec) -> Result<JobParams, RuntimeError> {
        let mut params = default_params(job, self.lab_type());
        params.insert("notify".into(), self.config.notify.clone());
        params.insert("priority".into(), json!(self.priority(job)));
        // The callback receiver finds the storage for the logs by this name.
        if let Some(storage) = &job.storage_config_name {
            params
                .entry("storage_config_name")
                .or_insert_with(|| Value::String(storage.clone()));
        }
        if let Some(q) = &self.config.queue_timeout {
            params.insert("queue_timeout".into(), q.clone());
        }
        Ok(params)
    }

    fn generate(&self, job: &JobSpec, params: &JobParams) -> Result<JobDefinition, RuntimeError> {
        let rendered = self.templates.render_job(job, params)?;
        let yaml: serde_norway::Value = serde_norway::from_str(&rendered).map_err(|e| {
            RuntimeError::with_source(
                RuntimeErrorKind::Generation,
                format!("template {} did not render valid YAML: {e}", job.template),
                e,
            )
        })?;
        let content = serde_norway::to_string(&yaml)
            .map_err(|e| RuntimeError::with_source(RuntimeErrorKind::Generation, "YAML dump", e))?;
        Ok(JobDefinition {
            file_name: format!("{}.yaml", file_stem(job_name(job, params))),
            content,
            metadata: Value::Object(job_metadata(&self.name, "lava", job)),
        })
    }

    async fn submit(&self, definition: &JobDefinition) -> Result<Option<JobHandle>, RuntimeError> {
        let Some(url) = self.api_url("jobs/") else {
            self.upload_definition(definition).await?;
            return Ok(None);
        };
        let body = json!({ "definition": definition.content });
        let (status, value) = self.call(Method::POST, &url, &[], Some(&body)).await?;
        if !status.is_success() {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Unavailable,
                format!(
                    "LAVA runtime {}: the lab refused the job ({status}): {}",
                    self.name,
                    lava_message(&value)
                ),
            ));
        }
        let id = value
            .get("job_ids")
            .and_then(Value::as_array)
            .and_then(|ids| ids.first())
            .and_then(|id| {
                id.as_u64()
                    .map(|n| n.to_string())
                    .or_else(|| id.as_str().map(str::to_owned))
            })
            .ok_or_else(|| {
                RuntimeError::new(
                    RuntimeErrorKind::Internal,
                    format!(
                        "LAVA runtime {}: no job_ids in the submit answer {value}",
                        self.name
                    ),
                )
            })?;
        Ok(Some(JobHandle { id, context: None }))
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, RuntimeError> {
        let id = Self::job_id(handle)?;
        let url = self.require_url(&format!("jobs/{id}/"))?;
        let job = self.get_json(&url, &[]).await?;
        Ok(status_of(&handle.id, &job))
    }

    async fn wait(&self, handle: &JobHandle, timeout: Duration) -> Result<JobStatus, RuntimeError> {
        if let Some(status) =
            poll_until_final(self, handle, timeout, self.config.poll_interval).await?
        {
            return Ok(status);
        }
        self.cancel(handle).await?;
        Ok(JobStatus::Incomplete {
            error_code: ErrorCode::NodeTimeout,
            message: format!(
                "LAVA job {} did not finish within {} s and was canceled",
                handle.id,
                timeout.as_secs()
            ),
        })
    }

    async fn cancel(&self, handle: &JobHandle) -> Result<(), RuntimeError> {
        if self.status(handle).await?.is_final() {
            return Ok(());
        }
        let id = Self::job_id(handle)?;
        let url = self.require_url(&format!("jobs/{id}/cancel/"))?;
        self.get_json(&url, &[]).await.map(|_| ())
    }

    fn job_definition_url(&self, definition: &JobDefinition) -> Option<String> {
        self.pulled
            .lock()
            .ok()
            .and_then(|p| p.get(&definition_key(definition)).cloned())
    }

    async fn queue_depth(&self, device_type: &str) -> Result<Option<u64>, RuntimeError> {
        let Some(url) = self.api_url("jobs/") else {
            return Ok(None);
        };
        let value = self
            .get_json(
                &url,
                &[
                    ("state", "Submitted"),
                    ("requested_device_type", device_type),
                ],
            )
            .await?;
        Ok(value.get("count").and_then(Value::as_u64))
    }

    async fn online_devices(&self, device_type: &str) -> Result<Option<Vec<String>>, RuntimeError> {
        let Some(url) = self.api_url("devices/") else {
            return Ok(None);
        };
        let mut names = Vec::new();
        let mut page = self.get_json(&url, &[("device_type", device_type)]).await?;
        // A bound on pages keeps a misbehaving lab from looping us forever.
        for _ in 0..1000 {
            for device in page
                .get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let health = device.get("health").and_then(Value::as_str);
                if matches!(health, None | Some("Good"))
                    && let Some(host) = device.get("hostname").and_then(Value::as_str)
                {
                    names.push(host.to_owned());
                }
            }
            match page.get("next").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => {
                    page = self.get_json(next, &[]).await?;
                }
                _ => break,
            }
        }
        Ok(Some(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(settings: Value) -> LavaRuntime {
        let entry = RuntimeEntry::from_value("lava-test", &settings).unwrap();
        LavaRuntime::new(
            "lava-test",
            LavaConfig::from_entry(&entry).unwrap(),
            None,
            Arc::new(TemplateEngine::new(vec![])),
        )
        .unwrap()
    }

    fn job(submitter: &str, data: Value, params: Value) -> JobSpec {
        let mut node = crate::models::Node::new(crate::models::NodeKind::Job, "baseline");
        node.submitter = Some(submitter.into());
        node.data = data.as_object().cloned();
        JobSpec {
            node,
            name: "baseline".into(),
            template: "baseline.jinja2".into(),
            kind: "job".into(),
            image: None,
            params: params.as_object().cloned().unwrap_or_default(),
            platform: "qemu".into(),
            platform_config: JobParams::new(),
            storage_config_name: None,
            storage_config: None,
            api_config: JobParams::new(),
        }
    }

    #[test]
    fn priority_follows_upstream_rules() {
        // Upstream's test: a pipeline job of priority high on a lab ranging 12..40.
        let rt = runtime(json!({"lab_type": "lava", "priority_min": 12, "priority_max": 40}));
        let j = job(SERVICE_PIPELINE, json!({}), json!({"priority": "high"}));
        assert_eq!(rt.priority(&j), (12.0 + 28.0 * 60.0 / 100.0) as i64);
        assert_eq!(rt.priority(&j), 28);
        // Tree priority wins over the job's.
        let j = job(
            SERVICE_PIPELINE,
            json!({"tree_priority": "low"}),
            json!({"priority": "high"}),
        );
        assert_eq!(rt.priority(&j), (20.0 * 28.0 / 100.0 + 12.0) as i64);
        // A person's job: data.priority, default 80.
        let j = job("user:alice@example.org", json!({}), json!({}));
        assert_eq!(rt.priority(&j), (80.0 * 28.0 / 100.0 + 12.0) as i64);
        // A lab priority scales instead; names map to 0/50/100 there.
        let rt = runtime(json!({"lab_type": "lava", "priority": "medium"}));
        let j = job(SERVICE_PIPELINE, json!({}), json!({"priority": 90}));
        assert_eq!(rt.priority(&j), 45);
        assert_eq!(rt.config().priority_min, Some(50));
        // No scale: the resolved priority as is; numbers are clamped.
        let rt = runtime(json!({"lab_type": "lava"}));
        let j = job("user:bob", json!({"priority": 250}), json!({}));
        assert_eq!(rt.priority(&j), 100);
        let j = job(SERVICE_PIPELINE, json!({}), json!({}));
        assert_eq!(rt.priority(&j), PRIORITY_LOW);
    }

    #[test]
    fn settings_defaults_and_queue_limit() {
        let rt = runtime(json!({"lab_type": "lava", "url": "http://lava.test/",
            "max_queue_depth_priority_factor": 0.5}));
        let c = rt.config();
        assert_eq!(c.url.as_deref(), Some("http://lava.test"));
        assert_eq!(c.max_queue_depth, 50);
        assert!(!c.disable_queue_limit);
        assert_eq!(c.max_queue_depth_priority_factor, 1.0, "clamped to >= 1");
        let rt = runtime(json!({"lab_type": "lava"}));
        // 50 × 2 devices × (1 + 0.6 × 1)
        assert_eq!(rt.queue_limit(2, 60), 160);
        assert_eq!(rt.queue_limit(0, 60), 0);
        let entry =
            RuntimeEntry::from_value("x", &json!({"lab_type": "lava", "priority": "urgent"}))
                .unwrap();
        let err = LavaConfig::from_entry(&entry).unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Config);
        assert!(err.message.contains("urgent"), "{}", err.message);
    }

    #[test]
    fn lava_job_states_map_to_job_status() {
        let s =
            |state: &str, health: &str| status_of("7", &json!({"state": state, "health": health}));
        assert_eq!(s("Submitted", "Unknown"), JobStatus::Queued);
        assert_eq!(s("Scheduled", "Unknown"), JobStatus::Queued);
        assert_eq!(s("Running", "Unknown"), JobStatus::Running);
        assert_eq!(
            s("Finished", "Complete"),
            JobStatus::Finished { exit_code: 0 }
        );
        assert_eq!(s("Finished", "Canceled"), JobStatus::Canceled);
        assert!(matches!(
            s("Finished", "Incomplete"),
            JobStatus::Incomplete {
                error_code: ErrorCode::Infrastructure,
                ..
            }
        ));
    }
}
