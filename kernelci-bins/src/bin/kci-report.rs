//! `kci-report`: the result report of each finished checkout, printed and mailed (upstream's
//! removed `test_report.py`; settings section `[test_report]`: `smtp_host`, `smtp_port`,
//! `email_sender`, `email_recipient`; `EMAIL_USER`/`EMAIL_PASSWORD` for the login).
//!
//! - `kci-report loop`: follows checkouts reaching `done`;
//! - `kci-report run --node-id X [--dump] [--send]`: one report.

use clap::{Parser, Subcommand};
use kernelci::models::ObjectId;
use kernelci::pipeline::reporter::Reporter;
use kernelci::pipeline::service::{ServiceError, run_service};
use kernelci_bins::service::{ServiceArgs, service_main};

/// Result reports.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
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
    let mut setup = a.service.setup("test_report")?;
    setup
        .set("smtp_host", a.smtp_host)
        .set("smtp_port", a.smtp_port)
        .set("email_sender", a.email_sender)
        .set("email_recipient", a.email_recipient);
    let ctx = a.service.context(&setup, None)?;
    match a.command {
        Command::Loop => {
            let reporter = Reporter::from_settings(&setup, true)?;
            let port = a.service.health_port(&setup)?;
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
            Reporter::from_settings(&setup, dump)?
                .report(ctx.api(), id, send)
                .await?;
            Ok(0)
        }
    }
}

fn main() {
    service_main("kci-report", main_)
}
