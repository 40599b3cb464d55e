//! `kci-timeout`: moves nodes past their timeout to `done`, and `available` nodes past their
//! holdoff to `closing`/`done` once their children finish (upstream `timeout.py --mode`;
//! settings section `[timeout]`).

use std::time::Duration;

use clap::Parser;
use kernelci::pipeline::service::{ServiceError, run_service};
use kernelci::pipeline::timeout::{TimeoutMode, TimeoutService};
use kernelci_bins::service::{ServiceArgs, service_main};

/// Timeout, holdoff and closing transitions.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// `timeout`, `holdoff` or `closing`.
    #[arg(long)]
    mode: Option<String>,
    /// Seconds between passes (0: one pass).
    #[arg(long)]
    poll_period: Option<u64>,
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let setup = a.service.setup("timeout")?;
    let mode: TimeoutMode = setup
        .get(a.mode, "mode")
        .unwrap_or_else(|| "timeout".into())
        .parse()
        .map_err(ServiceError::Config)?;
    let period = setup
        .get_parsed(a.poll_period, "poll_period")?
        .unwrap_or(60);
    let service = TimeoutService::new(mode, Duration::from_secs(period));
    let ctx = a
        .service
        .context(&setup, Some(&format!("timeout-{mode}")))?;
    let port = a.service.health_port(&setup)?;
    Ok(run_service(&ctx, port, || service.run(&ctx)).await)
}

fn main() {
    service_main("kci-timeout", main_)
}
