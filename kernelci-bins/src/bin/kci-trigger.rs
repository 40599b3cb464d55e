//! `kci-trigger`: polls the configured trees and creates a checkout node for each new revision
//! (upstream `trigger.py`; settings section `[trigger]`).

use std::time::Duration;

use clap::Parser;
use kernelci::pipeline::service::run_service;
use kernelci::pipeline::trigger::{BuildTarget, TreeSelection, Trigger, TriggerOptions};
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
    /// Seconds between passes (0: one pass).
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
    let setup = a.service.setup("trigger")?;
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
    let ctx = a.service.context(&setup, None)?;
    let port = a.service.health_port(&setup)?;
    Ok(run_service(&ctx, port, || trigger.run(&ctx)).await)
}

fn main() {
    service_main("kci-trigger", main_)
}
