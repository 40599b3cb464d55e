//! `kci-trigger`: polls the configured trees and creates a checkout node for each new revision
//! (upstream `trigger.py`; settings section `[trigger]`).

use clap::Parser;
use kernelci::pipeline::service::run_service;
use kernelci::pipeline::trigger::{BuildTarget, Trigger, TriggerOptions};
use kernelci_bins::service::{ServiceArgs, service_main};

/// Poll kernel trees and create checkout nodes.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// Trees to poll: `a,b`, or `!a,b` for all but those.
    #[arg(long)]
    trees: Option<String>,
    /// Create checkouts even when they exist or are too recent.
    #[arg(long)]
    force: bool,
    /// Seconds between passes (default: `[trigger] poll_period`; unset or 0: one pass, as
    /// upstream).
    #[arg(long)]
    poll_period: Option<u64>,
    /// Seconds to wait before the first pass.
    #[arg(long)]
    startup_delay: Option<u64>,
    /// The checkout timeout in minutes.
    #[arg(long)]
    timeout: Option<f64>,
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let mut setup = a.service.setup("trigger")?;
    setup
        .set("trees", a.trees)
        .set_flag("force", a.force)
        .set("poll_period", a.poll_period)
        .set("startup_delay", a.startup_delay)
        .set("timeout", a.timeout);
    let options = TriggerOptions::from_settings(&setup)?;
    let trigger = Trigger::new(BuildTarget::from_config(&setup.config), options);
    let (ctx, port) = a.service.start(&setup, None)?;
    Ok(run_service(&ctx, port, || trigger.run(&ctx)).await)
}

fn main() {
    service_main("kci-trigger", main_)
}
