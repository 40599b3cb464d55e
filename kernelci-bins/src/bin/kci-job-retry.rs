//! `kci-job-retry`: asks the scheduler to run failed or incomplete jobs again (upstream
//! `job_retry.py`; settings section `[job_retry]`).

use kernelci::pipeline::job_retry::JobRetry;
use kernelci_bins::service::{FollowArgs, service_main};

fn main() {
    let args = FollowArgs::parse_with_about("Job retries.");
    service_main("kci-job-retry", || {
        args.run(
            "job_retry",
            JobRetry::from_settings,
            |retry, ctx| async move { retry.run(&ctx).await },
        )
    })
}
