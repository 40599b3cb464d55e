//! `kci-lava-callback`: the LAVA callback receiver (`POST /node/<id>`), a thin layer over
//! `kernelci::pipeline::lava_callback`.
//!
//! Settings (`kernelci.toml`, as upstream): every `[runtime.<lab>]` table's `callback_token`
//! and `runtime_token` are accepted as the callback `Authorization` value;
//! `[storage.<name>] storage_cred` is the credential of each storage. The API token comes
//! from `$KCI_API_TOKEN`. Storage entries come from the `storage:` map of a pipeline YAML file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use kernelci::client::ApiClient;
use kernelci::config::Settings;
use kernelci::pipeline::lava_callback::{LabTokens, LavaCallbackConfig, LavaCallbackService};
use kernelci::storage::{self, Storage, StorageConfig};

/// The LAVA callback receiver.
#[derive(Debug, Parser)]
#[command(name = "kci-lava-callback", version)]
struct Args {
    /// The settings file (default: `./kernelci.toml`, then the user and system locations).
    #[arg(long, env = "KCI_SETTINGS")]
    settings: Option<PathBuf>,
    /// Where to listen.
    #[arg(long, default_value = "0.0.0.0:8000")]
    listen: SocketAddr,
    /// The API base URL (default: `[DEFAULT] api_url`, then http://localhost:8001).
    #[arg(long)]
    api_url: Option<String>,
    /// The API config name jobs put in their metadata (default: `[DEFAULT] api_config`, then
    /// `local`).
    #[arg(long)]
    api_config: Option<String>,
    /// The API token.
    #[arg(long, env = "KCI_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// A pipeline YAML file whose `storage:` map names the storages logs go to.
    #[arg(long)]
    storage_yaml: Option<PathBuf>,
    /// The storage used when a job names none (default: `[DEFAULT] storage_config`).
    #[arg(long)]
    default_storage: Option<String>,
    /// Callbacks processed at once.
    #[arg(long, default_value_t = 16)]
    workers: usize,
}

fn storages(
    args: &Args,
    settings: &Settings,
) -> Result<BTreeMap<String, Arc<dyn Storage>>, String> {
    let mut out = BTreeMap::new();
    let Some(path) = &args.storage_yaml else {
        return Ok(out);
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let yaml: serde_json::Value =
        serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let map = yaml
        .get("storage")
        .or_else(|| yaml.get("storage_configs"))
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| format!("{}: no `storage:` map", path.display()))?;
    for (name, entry) in map {
        let config = StorageConfig::from_value(entry.clone())
            .map_err(|e| format!("{}: storage.{name}: {e}", path.display()))?;
        let cred = settings.storage_cred(name).map(|s| s.expose().to_owned());
        let storage = storage::from_config(&config, cred.as_deref())
            .map_err(|e| format!("{}: storage.{name}: {e}", path.display()))?;
        out.insert(name.clone(), storage);
    }
    Ok(out)
}

async fn run(args: Args) -> Result<(), String> {
    let settings = Settings::load(args.settings.as_deref()).map_err(|e| e.to_string())?;
    let mut labs = BTreeMap::new();
    for section in settings.section_names() {
        if let Some(lab) = section.strip_prefix("runtime.") {
            labs.insert(
                lab.to_owned(),
                LabTokens {
                    runtime_token: settings.get_str(&section, "runtime_token"),
                    callback_token: settings.get_str(&section, "callback_token"),
                },
            );
        }
    }
    let api_url = args
        .api_url
        .clone()
        .or(settings.get_str("DEFAULT", "api_url"))
        .unwrap_or_else(|| "http://localhost:8001".into());
    let mut api = ApiClient::new(&api_url).map_err(|e| e.to_string())?;
    if let Some(token) = &args.api_token {
        api = api.with_token(token.clone());
    }
    let api_name = args
        .api_config
        .clone()
        .or(settings.get_str("DEFAULT", "api_config"))
        .unwrap_or_else(|| "local".into());
    let config = LavaCallbackConfig {
        labs,
        apis: BTreeMap::from([(api_name.clone(), api.into())]),
        default_api: Some(api_name),
        storages: storages(&args, &settings)?,
        default_storage: args
            .default_storage
            .clone()
            .or(settings.get_str("DEFAULT", "storage_config")),
        workers: args.workers,
    };
    if config.labs.is_empty() {
        tracing::warn!("no [runtime.<lab>] tables: every callback gets 500");
    }
    let service = LavaCallbackService::new(config);
    service
        .serve(
            args.listen,
            |addr| tracing::info!("listening on {addr}"),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await
        .map_err(|e| format!("{}: {e}", args.listen))
}

#[tokio::main]
async fn main() {
    kernelci_bins::service::init_process("info");
    if let Err(e) = run(Args::parse()).await {
        eprintln!("kci-lava-callback: {e}");
        std::process::exit(1);
    }
}
