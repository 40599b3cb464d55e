//! `kci-kcidb`: sends every finished checkout, build and test to KCIDB (upstream
//! `send_kcidb.py`; settings section `[send_kcidb]`; durable subscriber `<name>:node`, name
//! `pipeline_kcidb` by default). Where to: `KCIDB_REST=https://<token>@<host>/` (kcidb-ng's
//! REST API), else the spool directory `--spool`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kernelci::kcidb::excerpt::storage_hosts;
use kernelci::kcidb::mapping::{DEFAULT_ORIGIN, Mapper, MappingConfig};
use kernelci::kcidb::{RetryPolicy, submitter_from};
use kernelci::pipeline::kcidb_bridge::{BridgeOptions, KcidbBridge};
use kernelci::pipeline::service::{ServiceError, run_service};
use kernelci_bins::service::{ServiceArgs, service_main};

/// The KCIDB bridge.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// The KCIDB origin of every object (`^[a-z0-9_]+$`; default: the `origin` setting, else
    /// maestro).
    #[arg(long)]
    origin: Option<String>,
    /// Write documents into this directory instead of sending them (used when KCIDB_REST is
    /// not set; default: the `spool_dir` setting).
    #[arg(long)]
    spool: Option<PathBuf>,
    /// Most nodes per batch (default 500).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Milliseconds to wait for more events before a batch is sent (default 1000).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Seconds one submission may take (default 60).
    #[arg(long)]
    submit_timeout: Option<f64>,
    /// Seconds before the first retry of a failed submission; doubles each time, with jitter
    /// (default 2).
    #[arg(long)]
    retry_delay: Option<f64>,
    /// Attempts per submission before the batch is put back for later (default 6).
    #[arg(long)]
    retry_attempts: Option<u32>,
    /// Seconds between catch-ups of unflagged nodes (default 300).
    #[arg(long)]
    catchup_period: Option<u64>,
    /// Do not download logs for `log_excerpt`.
    #[arg(long)]
    no_log_excerpts: bool,
}

fn secs(v: f64, what: &str) -> Result<Duration, ServiceError> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| ServiceError::Config(format!("{what}: {v} is not a number of seconds")))
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let setup = a.service.setup("send_kcidb")?;
    let origin = setup
        .get(a.origin.clone(), "origin")
        .unwrap_or_else(|| DEFAULT_ORIGIN.into());
    let ctx = a.service.context(&setup, Some("pipeline_kcidb"))?;
    let mapping = MappingConfig::new(&origin)
        .map_err(|e| ServiceError::Config(e.to_string()))?
        .with_pipeline(&setup.config)
        .with_api_url(&ctx.api().url(""));
    let timeout = secs(
        setup
            .get_parsed(a.submit_timeout, "submit_timeout")?
            .unwrap_or(60.0),
        "submit_timeout",
    )?;
    let policy = RetryPolicy {
        max_attempts: setup
            .get_parsed(a.retry_attempts, "retry_attempts")?
            .unwrap_or(6),
        base_delay: secs(
            setup
                .get_parsed(a.retry_delay, "retry_delay")?
                .unwrap_or(2.0),
            "retry_delay",
        )?,
        ..RetryPolicy::default()
    };
    let spool = a
        .spool
        .clone()
        .or_else(|| setup.get(None, "spool_dir").map(PathBuf::from));
    let rest = std::env::var("KCIDB_REST").ok();
    let submitter = submitter_from(rest.as_deref(), spool.as_deref(), timeout, policy)
        .map_err(|e| ServiceError::Config(e.to_string()))?;
    let mut options = BridgeOptions::default();
    if let Some(n) = setup.get_parsed(a.batch_size, "batch_size")? {
        options.batch_size = n.max(1);
    }
    if let Some(ms) = setup.get_parsed(a.linger_ms, "linger_ms")? {
        options.linger = Duration::from_millis(ms);
    }
    if let Some(s) = setup.get_parsed(a.catchup_period, "catchup_period")? {
        options.catchup_period = Duration::from_secs(s);
    }
    options.batch_retry.base_delay = policy.base_delay.max(Duration::from_millis(100));
    options.excerpt_hosts = storage_hosts(&setup.config);
    if setup.flag(a.no_log_excerpts, "no_log_excerpts")? {
        options.log_excerpts = None;
    }
    let bridge = KcidbBridge::new(Mapper::new(mapping), submitter, options);
    let port = a.service.health_port(&setup)?;
    Ok(run_service(&ctx, port, || bridge.run(&ctx)).await)
}

fn main() {
    service_main("kci-kcidb", main_)
}
