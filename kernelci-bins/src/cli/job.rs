//! `kci job run|generate|submit`: run a job (inside any runtime), render a job definition,
//! submit one to a runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use kernelci::client::ApiClient;
use kernelci::models::{Node, ObjectId};
use kernelci::pipeline::jobrunner::{JobRunner, storage_from_config};
use kernelci::runtime::{
    JobDefinition, JobHandle, JobParams, JobSpec, Runtime, RuntimeContext, RuntimeCredentials,
    RuntimeEntry, RuntimeRegistry, TemplateEngine,
};
use serde_json::{Map, Value, json};

use super::api::ApiArgs;
use super::settings::Settings;

/// `kci job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run the job of a node here and submit its results (what a job's script calls).
    Run(RunArgs),
    /// Render a job definition for a node from a template.
    Generate(GenerateArgs),
    /// Submit a rendered job definition to a runtime; prints the job id.
    Submit(SubmitArgs),
}

/// `kci job run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job node.
    #[arg(long)]
    pub node_id: String,
    /// The job parameters as JSON (written by the job template), a file path.
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// The storage config entry as JSON, inline or a file path (default: the params'
    /// `storage_config`). The credential comes from `$KCI_STORAGE_CREDENTIALS`.
    #[arg(long)]
    pub storage: Option<String>,
    /// The working directory (default: `$KCI_JOB_DIR/workspace`, else `/tmp/kci/<node id>`).
    #[arg(long)]
    pub workspace: Option<PathBuf>,
}

/// Where runtimes come from, shared by `generate` and `submit`.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// A YAML file with a `runtimes:` map (upstream `pipeline.yaml`); default: a `shell`
    /// runtime.
    #[arg(long)]
    pub runtime_config: Option<PathBuf>,
    /// The runtime name in that map.
    #[arg(long, default_value = "shell")]
    pub runtime: String,
    /// An extra template directory (searched after config/runtime and /etc/kernelci/runtime).
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Where job files go.
    #[arg(long, default_value = "/tmp/kci-jobs")]
    pub output: PathBuf,
}

/// `kci job generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The job node.
    #[arg(long)]
    pub node_id: String,
    /// The template (`kbuild.jinja2`, `ktap-test.jinja2`, ...).
    #[arg(long)]
    pub template: String,
    /// The job name (default: the node name).
    #[arg(long)]
    pub job_name: Option<String>,
    /// The platform name.
    #[arg(long, default_value = "shell")]
    pub platform: String,
    /// Job parameters `key=value` (repeatable; a JSON value is parsed as JSON).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// The storage config entry as JSON, inline or a file path.
    #[arg(long)]
    pub storage: Option<String>,
    /// Save the definition under `--output` instead of printing it.
    #[arg(long)]
    pub save: bool,
    /// Runtime selection.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `kci job submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job definition file.
    pub file: PathBuf,
    /// Wait for the job to end, at most this many seconds, and print its status.
    #[arg(long)]
    pub wait: Option<u64>,
    /// Runtime selection.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

fn api_client(args: &ApiArgs, fallback_url: Option<&str>) -> Result<ApiClient, String> {
    let settings = Settings::load(args.settings.as_deref())?;
    let url = args
        .api
        .clone()
        .or_else(|| fallback_url.map(str::to_owned))
        .or(settings.get("DEFAULT", "api_url"))
        .unwrap_or_else(|| "http://localhost:8001".into());
    let api = ApiClient::new(&url).map_err(|e| e.to_string())?;
    Ok(
        match args.token.clone().or(settings.get("DEFAULT", "api_token")) {
            Some(t) => api.with_token(t),
            None => api,
        },
    )
}

fn json_arg(value: &str) -> Result<Value, String> {
    let text = if value.trim_start().starts_with('{') {
        value.to_owned()
    } else {
        std::fs::read_to_string(value).map_err(|e| format!("{value}: {e}"))?
    };
    serde_json::from_str(&text).map_err(|e| format!("{value}:{}:{}: {e}", e.line(), e.column()))
}

fn parse_id(id: &str) -> Result<ObjectId, String> {
    ObjectId::parse_str(id).map_err(|e| format!("--node-id: {e}"))
}

/// Runs `kci job ...`.
pub async fn run(args: &ApiArgs, cmd: JobCommand) -> Result<(), String> {
    match cmd {
        JobCommand::Run(a) => run_job(args, a).await,
        JobCommand::Generate(a) => generate(args, a).await,
        JobCommand::Submit(a) => submit(a).await,
    }
}

async fn run_job(args: &ApiArgs, a: RunArgs) -> Result<(), String> {
    let id = parse_id(&a.node_id)?;
    let params: JobParams = match &a.params {
        Some(path) => match json_arg(&path.to_string_lossy())? {
            Value::Object(map) => map,
            _ => {
                return Err(format!(
                    "{}: the params must be a JSON object",
                    path.display()
                ));
            }
        },
        None => JobParams::new(),
    };
    let api_url = params
        .get("api_config")
        .and_then(|c| c.get("url"))
        .and_then(Value::as_str);
    let api = api_client(args, api_url)?;
    let storage_config = match &a.storage {
        Some(s) => Some(json_arg(s)?),
        None => params
            .get("storage_config")
            .filter(|v| v.is_object())
            .cloned(),
    };
    let credential = std::env::var("KCI_STORAGE_CREDENTIALS").ok();
    // A broken storage config is reported on the node (incomplete), not as a crash.
    let storage = match storage_config {
        Some(config) => match storage_from_config(&config, credential.as_deref()) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("kci: warning: {e}");
                None
            }
        },
        None => None,
    };
    let workspace = a.workspace.unwrap_or_else(|| {
        std::env::var_os("KCI_JOB_DIR").map_or_else(
            || PathBuf::from("/tmp/kci").join(id.to_hex()),
            |d| PathBuf::from(d).join("workspace"),
        )
    });
    let runner = JobRunner::new(api, storage, workspace, params);
    let report = runner.run(id).await.map_err(|e| e.to_string())?;
    let node = &report.node;
    println!(
        "{} {} {} {} ({} child nodes)",
        id,
        node.state,
        node.result.map_or("-", |r| r.as_str()),
        node.data_str("error_msg").unwrap_or(""),
        report.children
    );
    Ok(())
}

fn runtime_from(a: &RuntimeArgs) -> Result<Arc<dyn Runtime>, String> {
    let entry = match &a.runtime_config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let yaml: Value = serde_norway::from_str(&text).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!(":{}:{}", l.line(), l.column()))
                    .unwrap_or_default();
                format!("{}{at}: {e}", path.display())
            })?;
            let value = yaml
                .get("runtimes")
                .and_then(|r| r.get(&a.runtime))
                .ok_or_else(|| format!("{}: no runtimes.{} entry", path.display(), a.runtime))?;
            RuntimeEntry::from_value(&a.runtime, value).map_err(|e| e.to_string())?
        }
        None => RuntimeEntry::new(&a.runtime, "shell", Map::new()),
    };
    let settings = Settings::load(None).unwrap_or_default();
    let credentials = RuntimeCredentials::from_settings(&a.runtime, |s, k| settings.get(s, k));
    let context = RuntimeContext::new(&a.output)
        .with_templates(TemplateEngine::with_default_path(a.templates.as_deref()));
    RuntimeRegistry::new()
        .build(&entry, &credentials, &context)
        .map_err(|e| e.to_string())
}

async fn generate(args: &ApiArgs, a: GenerateArgs) -> Result<(), String> {
    let id = parse_id(&a.node_id)?;
    let api = api_client(args, None)?;
    let mut node = api
        .get_node(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no node with id {id}"))?;
    // The job view: the parent's artifacts merged under the node's own.
    if let Some(parent) = node.parent
        && let Some(parent) = api.get_node(parent).await.map_err(|e| e.to_string())?
    {
        let mut artifacts = parent.artifacts.unwrap_or_default();
        artifacts.extend(node.artifacts.take().unwrap_or_default());
        node.artifacts = Some(artifacts);
    }
    let mut params = JobParams::new();
    for p in &a.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("--param {p}: write key=value"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        params.insert(k.to_owned(), value);
    }
    let storage_config = match &a.storage {
        Some(s) => match json_arg(s)? {
            Value::Object(m) => Some(m),
            _ => return Err("--storage: a JSON object is expected".into()),
        },
        None => None,
    };
    let api_url = args
        .api
        .clone()
        .unwrap_or_else(|| "http://localhost:8001".into());
    let spec = JobSpec {
        name: a.job_name.clone().unwrap_or_else(|| node.name.clone()),
        kind: node.kind.clone(),
        node: Node::clone(&node),
        template: a.template.clone(),
        image: None,
        params,
        platform: a.platform.clone(),
        platform_config: json!({"name": a.platform})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        storage_config_name: None,
        storage_config,
        api_config: json!({"name": "cli", "url": api_url, "version": "latest"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let runtime = runtime_from(&a.runtime)?;
    let params = runtime.params(&spec).map_err(|e| e.to_string())?;
    let definition = runtime
        .generate(&spec, &params)
        .map_err(|e| e.to_string())?;
    if a.save {
        std::fs::create_dir_all(&a.runtime.output)
            .map_err(|e| format!("{}: {e}", a.runtime.output.display()))?;
        let path = a.runtime.output.join(&definition.file_name);
        std::fs::write(&path, &definition.content)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{}", path.display());
    } else {
        print!("{}", definition.content);
    }
    Ok(())
}

async fn submit(a: SubmitArgs) -> Result<(), String> {
    let runtime = runtime_from(&a.runtime)?;
    let content =
        std::fs::read_to_string(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
    let file_name = Path::new(&a.file)
        .file_name()
        .map_or_else(|| "job".to_owned(), |n| n.to_string_lossy().into_owned());
    let definition = JobDefinition {
        file_name,
        content,
        metadata: json!({"runtime": runtime.name()}),
    };
    let handle: Option<JobHandle> = runtime
        .submit(&definition)
        .await
        .map_err(|e| e.to_string())?;
    let Some(handle) = handle else {
        println!("submitted (pull-based: no job id)");
        return Ok(());
    };
    println!("{handle}");
    if let Some(secs) = a.wait {
        let status = runtime
            .wait(&handle, Duration::from_secs(secs))
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{}",
            serde_json::to_string(&status).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}
