//! Submitting a job: rendering it through its runtime, starting it, and recording the
//! submission on the job node.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Scheduler, SchedulerError};
use crate::config::resolve_rootfs_params;
use crate::models::{ErrorCode, Node, ResultValue, State};
use crate::pipeline::rules::Candidate;
use crate::runtime::{JobParams, JobSpec, Runtime, RuntimeError, RuntimeErrorKind};

impl Scheduler {
    /// Writes what the submission set on `submitted` (`data.job_id`, `data.job_context`,
    /// `artifacts.job_definition`, a pull lab's `available`) onto the node as it is now: a fast
    /// job may already have reported its results, and the copy made before the submission
    /// must not overwrite them (or be refused as a move back to `running`).
    pub(super) async fn record_submission(&self, submitted: &Node) -> Result<(), SchedulerError> {
        let Some(id) = submitted.id else {
            return Ok(());
        };
        let Some(mut current) = self.api.get_node(id).await? else {
            self.api.update_node(submitted, false).await?;
            return Ok(());
        };
        if let Some(from) = submitted.data.as_ref() {
            let data = current.data.get_or_insert_with(Map::new);
            for key in ["job_id", "job_context"] {
                if let Some(v) = from.get(key) {
                    data.insert(key.into(), v.clone());
                }
            }
        }
        if let Some(url) = submitted
            .artifacts
            .as_ref()
            .and_then(|a| a.get("job_definition"))
        {
            current
                .artifacts
                .get_or_insert_with(Map::new)
                .insert("job_definition".into(), url.clone());
        }
        if current.state.can_transition_to(submitted.state) {
            current.state = submitted.state;
        }
        self.api.update_node(&current, false).await?;
        Ok(())
    }

    /// Renders and submits the job of `node`; on success fills `data.job_id` (and
    /// `job_context`) or `artifacts.job_definition`, and returns the job id.
    pub(super) async fn submit(
        &self,
        c: &Candidate<'_>,
        runtime: &Arc<dyn Runtime>,
        input: &Node,
        node: &mut Node,
    ) -> Result<Option<String>, (ResultValue, ErrorCode, String)> {
        let invalid = |e: String| (ResultValue::Incomplete, ErrorCode::InvalidJobParams, e);
        // The job view: the node with the parent's artifacts merged in.
        let mut view = node.clone();
        let mut artifacts = input.artifacts.clone().unwrap_or_default();
        artifacts.extend(node.artifacts.clone().unwrap_or_default());
        view.artifacts = Some(artifacts);
        let image = c.job.image.as_ref().map(|i| {
            let mut m = Map::new();
            m.insert(
                "image_prefix".into(),
                Value::String(self.options.image_prefix.clone()),
            );
            crate::config::format_string(i, &m).unwrap_or_else(|| i.clone())
        });
        let storage = self
            .options
            .storage_config
            .as_ref()
            .and_then(|n| self.config.storage.get(n).map(|s| (n.clone(), s)));
        let mut api_config = self
            .options
            .api_config
            .as_ref()
            .and_then(|n| self.config.api.get(n))
            .and_then(|a| serde_json::to_value(a).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        if api_config.is_empty() {
            api_config.insert("url".into(), Value::String(self.api.url("")));
        }
        let spec = JobSpec {
            node: view,
            name: c.job.name.clone(),
            template: c.job.template.clone(),
            kind: c.job.kind.clone(),
            image,
            params: c.job.params.clone(),
            platform: c.platform.name.clone(),
            platform_config: c.platform.to_map(),
            storage_config_name: storage.as_ref().map(|(n, _)| n.clone()),
            storage_config: storage
                .as_ref()
                .and_then(|(_, s)| serde_json::to_value(s).ok())
                .and_then(|v| v.as_object().cloned()),
            api_config,
        };
        let mut params: JobParams = runtime.params(&spec).map_err(|e| invalid(e.message))?;
        resolve_rootfs_params(&mut params, &self.config.rootfs)
            .map_err(|e| invalid(e.to_string()))?;
        let mut extra = c.job.params.clone();
        if let Some(v) = input.data_path("kernel_revision.version")
            && let (Some(ver), Some(pl)) = (v.get("version"), v.get("patchlevel"))
        {
            extra.insert("krev".into(), Value::String(format!("{ver}.{pl}")));
        }
        if let Value::Object(p) = c.platform.format_params(&Value::Object(params), &extra) {
            params = p;
        } else {
            return Err(invalid("params did not format into a mapping".into()));
        }
        if let Some(fragments) = params.get("fragments").cloned() {
            let names: Vec<String> = match fragments {
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Value::String(s) => vec![s],
                _ => Vec::new(),
            };
            let mut configs = Map::new();
            for name in names {
                let entry = match self.config.fragments.get(&name) {
                    Some(f) => serde_json::to_value(f).unwrap_or(Value::Null),
                    None if name.starts_with("CONFIG_") => {
                        serde_json::json!({ "configs": [name.clone()] })
                    }
                    // Fetched by the job itself (upstream's kbuild), not defined here: passed
                    // on in `fragments` only, as upstream's scheduler does.
                    None if crate::config::CipFragment::parse(&name).is_some() => continue,
                    None => return Err(invalid(format!("unknown fragment {name:?}"))),
                };
                configs.insert(name, entry);
            }
            params.insert("fragment_configs".into(), Value::Object(configs));
        }
        let definition = runtime.generate(&spec, &params).map_err(|e| {
            let code = match e.kind {
                RuntimeErrorKind::InvalidParams | RuntimeErrorKind::Config => {
                    ErrorCode::InvalidJobParams
                }
                _ => ErrorCode::JobGenerationError,
            };
            (ResultValue::Incomplete, code, e.message)
        })?;
        if definition.content.trim().is_empty() {
            return Err((
                ResultValue::Fail,
                ErrorCode::JobGenerationError,
                "the job definition is empty".into(),
            ));
        }
        if let (Some(dir), Some(id)) = (&self.options.output, node.id) {
            let dir = dir.join(id.to_string());
            let name = std::path::Path::new(&definition.file_name)
                .file_name()
                .map_or_else(|| "job".into(), |n| n.to_os_string());
            if let Err(e) = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(name), &definition.content))
            {
                tracing::warn!(error = %e, "cannot keep a copy of the job definition");
            }
        }
        let handle = runtime
            .submit(&definition)
            .await
            .map_err(|e: RuntimeError| {
                (ResultValue::Incomplete, ErrorCode::SubmitError, e.message)
            })?;
        let data = node.data.get_or_insert_with(Map::new);
        match handle {
            Some(h) => {
                data.insert("job_id".into(), Value::String(h.id.clone()));
                if let Some(ctx) = &h.context {
                    data.insert("job_context".into(), Value::String(ctx.clone()));
                }
                Ok(Some(h.id))
            }
            None => {
                if let Some(url) = runtime.job_definition_url(&definition) {
                    node.artifacts
                        .get_or_insert_with(Map::new)
                        .insert("job_definition".into(), Value::String(url));
                }
                if c.runtime.lab_type == "pull_labs" {
                    node.state = State::Available;
                }
                Ok(None)
            }
        }
    }
}
