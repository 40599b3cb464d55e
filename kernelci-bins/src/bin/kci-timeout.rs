//! `kci-timeout`: moves nodes past their timeout to `done`, and `available` nodes past their
//! holdoff to `closing`/`done` once their children finish (upstream `timeout.py --mode`;
//! settings section `[timeout]`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kernelci::pipeline::service::{ServiceError, ServiceSetup, run_service};
use kernelci::pipeline::timeout::{TimeoutMode, TimeoutService};

/// Timeout, holdoff and closing transitions.
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
    /// `timeout`, `holdoff` or `closing`.
    #[arg(long)]
    mode: Option<String>,
    /// Seconds between passes (0: one pass).
    #[arg(long)]
    poll_period: Option<u64>,
    /// Serve GET /health on this port.
    #[arg(long)]
    health_port: Option<u16>,
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let setup = ServiceSetup::load("timeout", a.settings.as_deref(), &a.yaml_config)?;
    let mode: TimeoutMode = setup
        .get(a.mode, "mode")
        .unwrap_or_else(|| "timeout".into())
        .parse()
        .map_err(ServiceError::Config)?;
    let period = setup
        .get_parsed(a.poll_period, "poll_period")?
        .unwrap_or(60);
    let service = TimeoutService::new(mode, Duration::from_secs(period));
    let name = setup
        .get(a.name, "name")
        .unwrap_or_else(|| format!("timeout-{mode}"));
    let ctx = setup.context(Some(name), a.api_url.as_deref())?;
    let port = setup.get_parsed(a.health_port, "health_port")?;
    Ok(run_service(&ctx, port, || service.run(&ctx)).await)
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
        tracing::error!(error = %e, "kci-timeout cannot start");
        2
    });
    std::process::exit(code);
}
