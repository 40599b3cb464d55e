//! `kci-regression`: compares each finished test with the previous run of the same job and
//! records regressions (upstream's removed `regression_tracker.py`; settings section
//! `[regression_tracker]`).

use std::path::PathBuf;

use clap::Parser;
use kernelci::pipeline::regression::RegressionTracker;
use kernelci::pipeline::service::{ServiceSetup, run_service};

/// Regression tracking.
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
    /// The service name (durable subscriber id `<name>:node`).
    #[arg(long)]
    name: Option<String>,
    /// Serve GET /health on this port.
    #[arg(long)]
    health_port: Option<u16>,
    /// Follow every owner's nodes, not only this user's.
    #[arg(long)]
    promisc: bool,
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let setup = ServiceSetup::load("regression_tracker", a.settings.as_deref(), &a.yaml_config)?;
    let tracker = RegressionTracker::new(setup.flag(a.promisc, "promisc")?);
    let ctx = setup.context(a.name, a.api_url.as_deref())?;
    let port = setup.get_parsed(a.health_port, "health_port")?;
    Ok(run_service(&ctx, port, || tracker.run(&ctx)).await)
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
        tracing::error!(error = %e, "kci-regression cannot start");
        2
    });
    std::process::exit(code);
}
