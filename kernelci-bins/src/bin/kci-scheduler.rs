//! `kci-scheduler`: matches node and retry events to the `scheduler:` entries of the pipeline
//! YAML config and submits the jobs to runtimes (upstream `src/scheduler.py loop`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use kernelci::client::ApiClient;
use kernelci::config::{PipelineConfig, Settings};
use kernelci::pipeline::scheduler::{Scheduler, SchedulerOptions};
use kernelci::runtime::registry::{
    RuntimeContext, RuntimeCredentials, RuntimeEntry, RuntimeRegistry,
};

/// The scheduler service.
#[derive(Debug, Parser)]
#[command(name = "kci-scheduler", version)]
struct Args {
    /// kernelci.toml (default: $KCI_SETTINGS, ./kernelci.toml, ~/.config/kernelci/, /etc/kernelci/).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// Pipeline YAML config directories (repeatable).
    #[arg(short = 'c', long = "yaml-config", default_values = ["config"])]
    yaml_config: Vec<PathBuf>,
    /// Service name; subscriber ids are `<name>:node` and `<name>:retry`.
    #[arg(long, default_value = "scheduler")]
    name: String,
    /// Runtimes to load, by name (wins over --runtime-type).
    #[arg(long, num_args = 1..)]
    runtimes: Vec<String>,
    /// Load every runtime of these lab types.
    #[arg(long = "runtime-type", num_args = 1..)]
    runtime_type: Vec<String>,
    /// Receive every user's events.
    #[arg(long)]
    promisc: bool,
    /// Only node events owned by this user.
    #[arg(long)]
    event_owner: Option<String>,
    /// Only node events submitted by this submitter.
    #[arg(long)]
    event_submitter: Option<String>,
    /// Schedule LAVA jobs even when no device is online.
    #[arg(long)]
    disable_device_health_check: bool,
    /// Liveness endpoint address (GET /health).
    #[arg(long, default_value = "0.0.0.0:8080")]
    health: SocketAddr,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("kci-scheduler: {msg}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let settings = Settings::load(args.settings.as_deref()).unwrap_or_else(|e| fail(e));
    let config = Arc::new(PipelineConfig::load(&args.yaml_config).unwrap_or_else(|e| fail(e)));
    let get = |key: &str| settings.get_str("scheduler", key);
    let api_name = get("api_config").unwrap_or_else(|| fail("[scheduler] api_config is not set"));
    let api_url = config.api.get(&api_name).map(|a| a.url.clone());
    let token = settings
        .api_token()
        .unwrap_or_else(|| fail("KCI_API_TOKEN is not set"));
    let api = ApiClient::new(
        &api_url.unwrap_or_else(|| fail(format!("unknown api config {api_name:?}"))),
    )
    .unwrap_or_else(|e| fail(e))
    .with_token(token.expose());
    let output = PathBuf::from(get("output").unwrap_or_else(|| "/tmp/kci/scheduler".into()));
    let storage_name = get("storage_config");
    let mut context = RuntimeContext::new(&output).with_job_env("KCI_API_TOKEN", token.expose());
    if let Some(cred) = storage_name
        .as_deref()
        .and_then(|s| settings.storage_cred(s))
    {
        context = context.with_job_env("KCI_STORAGE_CREDENTIALS", cred.expose());
    }
    let registry = RuntimeRegistry::new();
    let mut runtimes = Vec::new();
    for r in config.runtimes.values().filter(|r| {
        if args.runtimes.is_empty() {
            args.runtime_type.contains(&r.lab_type)
        } else {
            args.runtimes.contains(&r.name)
        }
    }) {
        let entry = RuntimeEntry::new(&r.name, &r.lab_type, r.settings.clone());
        let creds = RuntimeCredentials::from_settings(&r.name, |s, k| settings.get_str(s, k));
        runtimes.push(
            registry
                .build(&entry, &creds, &context)
                .unwrap_or_else(|e| fail(e)),
        );
    }
    let options = SchedulerOptions {
        name: args.name,
        output: Some(output),
        image_prefix: get("image_prefix").unwrap_or_default(),
        storage_config: storage_name,
        api_config: Some(api_name),
        promiscuous: args.promisc,
        event_owner: args.event_owner,
        event_submitter: args.event_submitter,
        disable_device_health_check: args.disable_device_health_check,
        health_addr: Some(args.health),
        ..SchedulerOptions::default()
    };
    let scheduler = Scheduler::new(config, api, runtimes, options).unwrap_or_else(|e| fail(e));
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = Arc::new(scheduler).run(stop).await {
        fail(e);
    }
}
