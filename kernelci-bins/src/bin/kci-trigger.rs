//! `kci-trigger`: polls the configured trees and creates a checkout node for each new revision
//! (upstream `trigger.py`; settings section `[trigger]`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kernelci::pipeline::service::{ServiceSetup, run_service};
use kernelci::pipeline::trigger::{BuildTarget, TreeSelection, Trigger, TriggerOptions};

/// Poll kernel trees and create checkout nodes.
#[derive(Debug, Parser)]
struct Args {
    /// The settings file (default: $KCI_SETTINGS, ./kernelci.toml, ...).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// YAML configuration directories or files (default: ./config when present).
    #[arg(long = "yaml-config")]
    yaml_config: Vec<PathBuf>,
    /// The API URL (instead of the api_config entry).
    #[arg(long)]
    api_url: Option<String>,
    /// The service name.
    #[arg(long)]
    name: Option<String>,
    /// Trees to poll: `a,b`, or `!a,b` for all but those.
    #[arg(long)]
    trees: Option<String>,
    /// Create checkouts even when they exist or are too recent.
    #[arg(long)]
    force: bool,
    /// Seconds between passes (0: one pass).
    #[arg(long)]
    poll_period: Option<u64>,
    /// Seconds to wait before the first pass.
    #[arg(long)]
    startup_delay: Option<u64>,
    /// The checkout timeout in minutes.
    #[arg(long)]
    timeout: Option<f64>,
    /// Serve GET /health on this port.
    #[arg(long)]
    health_port: Option<u16>,
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let setup = ServiceSetup::load("trigger", a.settings.as_deref(), &a.yaml_config)?;
    let options = TriggerOptions {
        trees: TreeSelection::parse(setup.get(a.trees, "trees").as_deref()),
        force: setup.flag(a.force, "force")?,
        timeout: Duration::from_secs_f64(
            setup
                .get_parsed(a.timeout, "timeout")?
                .unwrap_or(180.0)
                .max(0.0)
                * 60.0,
        ),
        poll_period: Duration::from_secs(
            setup.get_parsed(a.poll_period, "poll_period")?.unwrap_or(0),
        ),
        startup_delay: Duration::from_secs(
            setup
                .get_parsed(a.startup_delay, "startup_delay")?
                .unwrap_or(0),
        ),
    };
    let trigger = Trigger::new(BuildTarget::from_config(&setup.config), options);
    let ctx = setup.context(a.name, a.api_url.as_deref())?;
    let port = setup.get_parsed(a.health_port, "health_port")?;
    Ok(run_service(&ctx, port, || trigger.run(&ctx)).await)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = main_().await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "kci-trigger cannot start");
        2
    });
    std::process::exit(code);
}
