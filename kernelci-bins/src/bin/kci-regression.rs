//! `kci-regression`: compares each finished test with the previous run of the same job and
//! records regressions (upstream's removed `regression_tracker.py`; settings section
//! `[regression_tracker]`).

use clap::Parser;
use kernelci::pipeline::regression::RegressionTracker;
use kernelci::pipeline::service::run_service;
use kernelci_bins::service::{ServiceArgs, service_main};

/// Regression tracking.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// Follow every owner's nodes, not only this user's.
    #[arg(long)]
    promisc: bool,
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let mut setup = a.service.setup("regression_tracker")?;
    setup.set_flag("promisc", a.promisc);
    let tracker = RegressionTracker::from_settings(&setup)?;
    let ctx = a.service.context(&setup, None)?;
    let port = a.service.health_port(&setup)?;
    Ok(run_service(&ctx, port, || tracker.run(&ctx)).await)
}

fn main() {
    service_main("kci-regression", main_)
}
