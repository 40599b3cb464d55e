//! `kci kcidb ...`: KCIDB documents from the command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use kernelci::config::{PipelineConfig, Settings};
use kernelci::kcidb::excerpt::{LogExcerpts, storage_hosts};
use kernelci::kcidb::fetch::export_checkout;
use kernelci::kcidb::mapping::{DEFAULT_ORIGIN, Mapper, MappingConfig};
use kernelci::kcidb::{RetryPolicy, submitter_from};
use kernelci::models::ObjectId;
use kernelci::pipeline::kcidb_bridge::{BridgeOptions, KcidbBridge};

use super::api::ApiArgs;

/// `kci kcidb ...`.
#[derive(Debug, Subcommand)]
pub enum KcidbCommand {
    /// Print one checkout's tree as a KCIDB v5.3 document (what the bridge sends: finished
    /// nodes, final retries only, each object checked against the schema). Invalid objects
    /// are left out and listed on standard error (exit status 1).
    Export {
        /// The checkout node id.
        #[arg(long)]
        checkout: String,
        /// The KCIDB origin (default: `[send_kcidb] origin`, else maestro).
        #[arg(long)]
        origin: Option<String>,
        /// Pipeline YAML config (jobs give test paths; default: ./config when present).
        #[arg(short = 'c', long = "yaml-config")]
        yaml_config: Vec<PathBuf>,
        /// Do not download logs for `log_excerpt`.
        #[arg(long)]
        no_log_excerpts: bool,
    },
}

/// The bridge `kci up` runs: to `KCIDB_REST` when it is set, else into the spool `spool`
/// (`<data>/kcidb/`); origin from `[send_kcidb] origin`. Returns it with where it sends.
pub fn up_bridge(
    config: &PipelineConfig,
    settings: &Settings,
    api_url: &str,
    spool: &std::path::Path,
) -> Result<(KcidbBridge, String), String> {
    let origin = settings
        .get_str("send_kcidb", "origin")
        .unwrap_or_else(|| DEFAULT_ORIGIN.into());
    let mapping = MappingConfig::new(&origin)
        .map_err(|e| e.to_string())?
        .with_pipeline(config)
        .with_api_url(api_url);
    let rest = std::env::var("KCIDB_REST").ok();
    let submitter = submitter_from(
        rest.as_deref(),
        Some(spool),
        Duration::from_secs(60),
        RetryPolicy::default(),
    )
    .map_err(|e| e.to_string())?;
    let to = submitter.describe();
    let options = BridgeOptions {
        excerpt_hosts: storage_hosts(config),
        ..BridgeOptions::default()
    };
    let bridge = KcidbBridge::new(Mapper::new(mapping), submitter, options);
    Ok((bridge, to))
}

/// Runs a `kci kcidb` command.
pub async fn run(api: &ApiArgs, cmd: KcidbCommand) -> Result<(), String> {
    match cmd {
        KcidbCommand::Export {
            checkout,
            origin,
            yaml_config,
            no_log_excerpts,
        } => {
            let id: ObjectId = checkout
                .parse()
                .map_err(|e| format!("--checkout {checkout:?}: {e}"))?;
            let settings = Settings::load(api.settings.as_deref()).map_err(|e| e.to_string())?;
            let origin = origin
                .or_else(|| settings.get_str("send_kcidb", "origin"))
                .unwrap_or_else(|| DEFAULT_ORIGIN.into());
            let yaml = if yaml_config.is_empty() && PathBuf::from("config").is_dir() {
                vec![PathBuf::from("config")]
            } else {
                yaml_config
            };
            let config = if yaml.is_empty() {
                PipelineConfig::default()
            } else {
                PipelineConfig::load(&yaml).map_err(|e| e.to_string())?
            };
            let client = api.client()?;
            let mapping = MappingConfig::new(&origin)
                .map_err(|e| e.to_string())?
                .with_pipeline(&config)
                .with_api_url(&client.url(""));
            let excerpts = (!no_log_excerpts).then(|| {
                LogExcerpts::new(Duration::from_secs(60)).with_allowed_hosts(storage_hosts(&config))
            });
            let (prepared, skipped) =
                export_checkout(&client, &Mapper::new(mapping), id, excerpts.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
            let text = serde_json::to_string_pretty(&prepared.document.to_value())
                .map_err(|e| e.to_string())?;
            println!("{text}");
            for (node, why) in &skipped {
                eprintln!("kci: node {node}: not sent: {why}");
            }
            if prepared.invalid.is_empty() {
                return Ok(());
            }
            for bad in &prepared.invalid {
                let nodes: Vec<String> = bad.nodes.iter().map(ToString::to_string).collect();
                for e in &bad.errors {
                    eprintln!(
                        "kci: node {}: {} {}: invalid {e}",
                        nodes.join(","),
                        bad.list,
                        bad.id
                    );
                }
            }
            Err(format!(
                "{} invalid object(s) left out of the document",
                prepared.invalid.len()
            ))
        }
    }
}
