//! `kci-regression`: compares each finished test with the previous run of the same job and
//! records regressions (upstream's removed `regression_tracker.py`; settings section
//! `[regression_tracker]`).

use kernelci::pipeline::regression::RegressionTracker;
use kernelci_bins::service::{FollowArgs, service_main};

fn main() {
    let args = FollowArgs::parse_with_about("Regression tracking.");
    service_main("kci-regression", || {
        args.run(
            "regression_tracker",
            RegressionTracker::from_settings,
            |tracker, ctx| async move { tracker.run(&ctx).await },
        )
    })
}
