//! `kci-scheduler`: matches node and retry events to the `scheduler:` entries of the pipeline
//! YAML config and submits the jobs to runtimes (upstream `src/scheduler.py loop`; settings
//! section `[scheduler]`). Runs on the shared service skeleton: durable subscriptions
//! `<name>:node` and `<name>:retry`, `/health` (port 8080 unless `--health-port` or the
//! `health_port` setting say otherwise), SIGTERM finishes the event in hand.

use std::sync::Arc;

use clap::Parser;
use kernelci::pipeline::scheduler::{Scheduler, SchedulerOptions};
use kernelci::pipeline::service::{ServiceError, ServiceResult, run_service};
use kernelci::pipeline::setup::RuntimeSelection;
use kernelci::runtime::registry::RuntimeContext;
use kernelci_bins::service::{ServiceArgs, service_main};

/// The health port when neither `--health-port` nor the settings give one (upstream's).
const DEFAULT_HEALTH_PORT: u16 = 8080;

/// The scheduler service.
#[derive(Debug, Parser)]
#[command(name = "kci-scheduler", version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// Runtimes to load, by name (wins over --runtime-type).
    #[arg(long, num_args = 1..)]
    runtimes: Vec<String>,
    /// Load every runtime of these lab types.
    #[arg(long = "runtime-type", num_args = 1..)]
    runtime_type: Vec<String>,
    /// Receive every user's events.
    #[arg(long)]
    promisc: bool,
    /// Only node events owned by this user.
    #[arg(long)]
    event_owner: Option<String>,
    /// Only node events submitted by this submitter.
    #[arg(long)]
    event_submitter: Option<String>,
    /// Schedule LAVA jobs even when no device is online.
    #[arg(long)]
    disable_device_health_check: bool,
}

async fn main_() -> ServiceResult<i32> {
    let args = Args::parse();
    let mut setup = args.service.setup("scheduler")?;
    setup
        .set_flag("promisc", args.promisc)
        .set("event_owner", args.event_owner.clone())
        .set("event_submitter", args.event_submitter.clone())
        .set_flag(
            "disable_device_health_check",
            args.disable_device_health_check,
        );
    let options = SchedulerOptions::from_settings(&setup)?;
    let token = setup
        .settings
        .api_token()
        .ok_or_else(|| ServiceError::Config("no API token: set KCI_API_TOKEN".into()))?;
    let output = options
        .output
        .clone()
        .unwrap_or_else(|| SchedulerOptions::DEFAULT_OUTPUT.into());
    let mut context = RuntimeContext::new(&output).with_job_env("KCI_API_TOKEN", token.expose());
    if let Some(cred) = setup.storage_credential() {
        context = context.with_job_env("KCI_STORAGE_CREDENTIALS", cred.expose());
    }
    let selection = RuntimeSelection::from_args(&args.runtimes, &args.runtime_type);
    let runtimes = setup.build_runtimes(&selection, &context).all_or_error()?;
    let ctx = args.service.context(&setup, Some("scheduler"))?;
    let port = args
        .service
        .health_port(&setup)?
        .unwrap_or(DEFAULT_HEALTH_PORT);
    let config = Arc::new(setup.config);
    let scheduler =
        Scheduler::new(config, ctx.api().clone(), runtimes, options).map_err(ServiceError::from)?;
    Ok(run_service(&ctx, Some(port), || Arc::new(scheduler).run(&ctx)).await)
}

fn main() {
    service_main("kci-scheduler", main_)
}
