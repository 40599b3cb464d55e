//! `kci up`: the all-in-one mode (API server, storage, every pipeline service) — see
//! [`crate::up`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kernelci::pipeline::service::Shutdown;
use kernelci::report::SmtpConfig;

use crate::up::{UpOptions, run};

/// `kci up` options.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Create a demo kernel tree and a config following it: a revision goes through trigger,
    /// tarball, build, tests and report in about a minute, offline.
    #[arg(long)]
    pub demo: bool,
    /// Config folder(s) in upstream's layout (`*.yaml` plus `runtime/*.jinja2` templates).
    #[arg(long = "config", short = 'c', default_value = "config")]
    pub config: Vec<PathBuf>,
    /// Data directory: database, artifacts, git trees, job work directories.
    #[arg(long, env = "KCI_DATA", default_value = "kci-data")]
    pub data: PathBuf,
    /// Where the API (and the viewer at /viewer, the artifacts at /storage/) listens.
    #[arg(long, env = "KCI_LISTEN", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,
    /// Stop after the first checkout's report (for scripts).
    #[arg(long)]
    pub exit_after_report: bool,
    /// Seconds between trigger polls (default: `[trigger] poll_period`; unset: 10 with --demo,
    /// else one pass, as upstream).
    #[arg(long)]
    pub poll_period: Option<u64>,
    /// Seconds between timeout/holdoff/closing passes (default: `[timeout] poll_period`; unset:
    /// 2 with --demo, else 60).
    #[arg(long)]
    pub timeout_period: Option<u64>,
    /// Seconds checkouts and builds stay `available` (default: `[tarball] holdoff`; unset: 5
    /// with --demo, else 600).
    #[arg(long)]
    pub holdoff: Option<u64>,
    /// Only start these runtimes of the config (repeatable; default: all this build has).
    #[arg(long = "runtime")]
    pub runtimes: Vec<String>,
    /// Mail reports through this SMTP host (port 465: implicit TLS; else STARTTLS when
    /// offered; login with EMAIL_USER / EMAIL_PASSWORD).
    #[arg(long, env = "SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port.
    #[arg(long, env = "SMTP_PORT", default_value_t = 25)]
    pub smtp_port: u16,
    /// Report sender.
    #[arg(long, env = "EMAIL_SENDER", default_value = "bot@kernelci.invalid")]
    pub email_sender: String,
    /// Report recipients (repeatable or comma-separated).
    #[arg(long, env = "EMAIL_RECIPIENT", value_delimiter = ',')]
    pub email_recipient: Vec<String>,
    /// Do not print a line per node event.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `kci up`; returns the exit code.
pub async fn up(settings: Option<PathBuf>, args: UpArgs) -> i32 {
    let smtp = args.smtp_host.clone().map(|host| SmtpConfig {
        host,
        port: args.smtp_port,
        user: std::env::var("EMAIL_USER").ok(),
        password: std::env::var("EMAIL_PASSWORD").ok(),
        sender: args.email_sender.clone(),
        recipients: args.email_recipient.clone(),
        timeout: Duration::from_secs(30),
    });
    let opts = UpOptions {
        config: args.config,
        data: args.data,
        listen: args.listen,
        demo: args.demo,
        exit_after_report: args.exit_after_report,
        settings,
        poll_period: args.poll_period.map(Duration::from_secs),
        timeout_period: args.timeout_period.map(Duration::from_secs),
        holdoff: args.holdoff.map(Duration::from_secs),
        smtp,
        runtimes: args.runtimes,
        progress: !args.quiet,
        kci_bin: None,
    };
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let mut out = std::io::stdout();
    match run(opts, shutdown, &mut out).await {
        Ok(summary) => {
            if summary.checkout.is_none() {
                println!("stopped");
            }
            0
        }
        Err(e) => {
            eprintln!("kci up: {e}");
            2
        }
    }
}
