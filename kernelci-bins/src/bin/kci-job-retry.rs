//! `kci-job-retry`: asks the scheduler to run failed or incomplete jobs again (upstream
//! `job_retry.py`; settings section `[job_retry]`).

use clap::Parser;
use kernelci::pipeline::job_retry::JobRetry;
use kernelci::pipeline::service::run_service;
use kernelci_bins::service::{ServiceArgs, service_main};

/// Job retries.
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
    let mut setup = a.service.setup("job_retry")?;
    setup.set_flag("promisc", a.promisc);
    let retry = JobRetry::from_settings(&setup)?;
    let ctx = a.service.context(&setup, None)?;
    let port = a.service.health_port(&setup)?;
    Ok(run_service(&ctx, port, || retry.run(&ctx)).await)
}

fn main() {
    service_main("kci-job-retry", main_)
}
