//! `kci-timeout`: moves nodes past their timeout to `done`, and `available` nodes past their
//! holdoff to `closing`/`done` once their children finish (upstream `timeout.py --mode`;
//! settings section `[timeout]`).

use clap::Parser;
use kernelci::pipeline::service::run_service;
use kernelci::pipeline::timeout::TimeoutService;
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
    let mut setup = a.service.setup("timeout")?;
    setup.set("mode", a.mode).set("poll_period", a.poll_period);
    let service = TimeoutService::from_settings(&setup)?;
    let (ctx, port) = a
        .service
        .start(&setup, Some(&format!("timeout-{}", service.mode())))?;
    Ok(run_service(&ctx, port, || service.run(&ctx)).await)
}

fn main() {
    service_main("kci-timeout", main_)
}
