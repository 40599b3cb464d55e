//! `kci-report`: the result report of each finished checkout, printed and mailed (upstream's
//! removed `test_report.py`; settings section `[test_report]`: `smtp_host`, `smtp_port`,
//! `email_sender`, `email_recipient`; `EMAIL_USER`/`EMAIL_PASSWORD` for the login).
//!
//! - `kci-report loop`: follows checkouts reaching `done`;
//! - `kci-report run --node-id X [--dump] [--send]`: one report.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kernelci::models::ObjectId;
use kernelci::pipeline::reporter::Reporter;
use kernelci::pipeline::service::{ServiceError, ServiceSetup, run_service};
use kernelci::report::SmtpConfig;

/// Result reports.
#[derive(Debug, Parser)]
struct Args {
    /// The settings file (default: $KCI_SETTINGS, ./kernelci.toml, ...).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// YAML configuration directories or files (default: ./config when present).
    #[arg(long = "yaml-config")]
    yaml_config: Vec<PathBuf>,
    /// The API URL (instead of the api_config entry).
    #[arg(long)]
    api_url: Option<String>,
    /// The service name (durable subscriber id `<name>:node`).
    #[arg(long)]
    name: Option<String>,
    /// Serve GET /health on this port.
    #[arg(long)]
    health_port: Option<u16>,
    /// SMTP host (without one, reports are only printed).
    #[arg(long)]
    smtp_host: Option<String>,
    /// SMTP port (465: implicit TLS; otherwise STARTTLS when offered).
    #[arg(long)]
    smtp_port: Option<u16>,
    /// The From address.
    #[arg(long)]
    email_sender: Option<String>,
    /// The To addresses, comma-separated.
    #[arg(long)]
    email_recipient: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report every checkout that reaches `done`.
    Loop,
    /// Report one checkout.
    Run {
        /// The checkout node id.
        #[arg(long)]
        node_id: String,
        /// Print the report.
        #[arg(long)]
        dump: bool,
        /// Send the report.
        #[arg(long)]
        send: bool,
    },
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let setup = ServiceSetup::load("test_report", a.settings.as_deref(), &a.yaml_config)?;
    let host = setup
        .get(a.smtp_host, "smtp_host")
        .filter(|h| !h.is_empty());
    let port = setup.get_parsed(a.smtp_port, "smtp_port")?;
    let smtp = match (host, port) {
        (Some(host), Some(port)) => {
            let sender = setup
                .get(a.email_sender, "email_sender")
                .ok_or_else(|| ServiceError::Config("email_sender is not set".into()))?;
            let to = setup
                .get(a.email_recipient, "email_recipient")
                .ok_or_else(|| ServiceError::Config("email_recipient is not set".into()))?;
            Some(SmtpConfig::from_env(&host, port, &sender, vec![to]))
        }
        _ => None,
    };
    let ctx = setup.context(a.name, a.api_url.as_deref())?;
    match a.command {
        Command::Loop => {
            let reporter = Reporter::new(smtp, true);
            let port = setup.get_parsed(a.health_port, "health_port")?;
            Ok(run_service(&ctx, port, || reporter.run(&ctx)).await)
        }
        Command::Run {
            node_id,
            dump,
            send,
        } => {
            let id: ObjectId = node_id
                .parse()
                .map_err(|e| ServiceError::Invalid(format!("--node-id {node_id}: {e}")))?;
            Reporter::new(smtp, dump)
                .report(ctx.api(), id, send)
                .await?;
            Ok(0)
        }
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = main_().await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "kci-report cannot start");
        2
    });
    std::process::exit(code);
}
