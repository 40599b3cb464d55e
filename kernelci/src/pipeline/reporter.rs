//! The report service: a report for each finished checkout (upstream's removed
//! `test_report`, `spec/kernelci-pipeline.md` §6).
//!
//! [`Reporter`] follows checkouts reaching `done` (only the transition: a checkout updated
//! while already `done` is not reported twice), gathers the report
//! ([`crate::report::gather`]), prints it, and sends it when an SMTP host is configured.
//! [`Reporter::report`] does the same for one checkout (`run --node-id X`).

use serde_json::Value;

use super::service::{
    EventHandler, EventSubscription, ServiceContext, ServiceError, ServiceResult, async_trait,
};
use super::setup::ServiceSetup;
use crate::client::{Api, ReceivedEvent};
use crate::models::ObjectId;
use crate::report::{Report, SmtpConfig, gather, send};

/// The report service.
#[derive(Debug, Clone, Default)]
pub struct Reporter {
    smtp: Option<SmtpConfig>,
    print: bool,
}

impl Reporter {
    /// A reporter sending with `smtp` (or only printing when `None`); `print` also writes
    /// each report to standard output.
    pub fn new(smtp: Option<SmtpConfig>, print: bool) -> Reporter {
        Reporter { smtp, print }
    }

    /// Reads the SMTP settings from `setup` (section `test_report`): `smtp_host` and
    /// `smtp_port` (both, or reports are only printed), `email_sender` and `email_recipient`
    /// (comma-separated; both required with a host), `smtp_timeout` (seconds, default 60);
    /// the login from `EMAIL_USER`/`EMAIL_PASSWORD`. `print` also prints every report.
    pub fn from_settings(setup: &ServiceSetup, print: bool) -> ServiceResult<Reporter> {
        Ok(Reporter::new(smtp_from_settings(setup)?, print))
    }

    /// The SMTP configuration, when one is set.
    pub fn smtp(&self) -> Option<&SmtpConfig> {
        self.smtp.as_ref()
    }

    /// The events it handles: checkouts reaching `done`.
    pub fn subscription() -> EventSubscription {
        EventSubscription::node()
            .kinds(&["checkout"])
            .states(&["done"])
    }

    /// Runs until shutdown.
    pub async fn run(&self, ctx: &ServiceContext) -> ServiceResult<()> {
        let mut handler = self.clone();
        ctx.run_events(Reporter::subscription(), &mut handler).await
    }

    /// Gathers the report of `checkout`, prints it (when printing or when there is no SMTP
    /// host) and sends it when `send_it` and an SMTP host is configured.
    pub async fn report(
        &self,
        api: &dyn Api,
        checkout: ObjectId,
        send_it: bool,
    ) -> ServiceResult<Report> {
        let report = gather(api, checkout).await?;
        let (subject, body) = (report.subject(), report.body());
        if self.print || self.smtp.is_none() {
            println!("{body}");
        }
        match &self.smtp {
            Some(smtp) if send_it => send(smtp, &subject, &body).await?,
            _ => tracing::info!(%subject, "report not sent (no SMTP host, or not asked to)"),
        }
        Ok(report)
    }
}

fn smtp_from_settings(setup: &ServiceSetup) -> ServiceResult<Option<SmtpConfig>> {
    let host = setup.get(None, "smtp_host").filter(|h| !h.is_empty());
    let port = setup.get_parsed::<u16>(None, "smtp_port")?;
    let (Some(host), Some(port)) = (host, port) else {
        return Ok(None);
    };
    let missing = |key: &str| {
        ServiceError::Config(format!(
            "[{}] {key} is not set (smtp_host is)",
            setup.section
        ))
    };
    let sender = setup
        .get(None, "email_sender")
        .ok_or_else(|| missing("email_sender"))?;
    let recipients: Vec<String> = setup
        .get(None, "email_recipient")
        .ok_or_else(|| missing("email_recipient"))?
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    let mut smtp = SmtpConfig::from_env(&host, port, &sender, recipients);
    smtp.timeout = setup.seconds("smtp_timeout", smtp.timeout.as_secs_f64())?;
    Ok(Some(smtp))
}

#[async_trait]
impl EventHandler for Reporter {
    async fn handle(&mut self, ctx: &ServiceContext, event: &ReceivedEvent) -> ServiceResult<()> {
        let data = &event.event.data;
        if data.get("previous_state").and_then(Value::as_str) == Some("done") {
            return Ok(());
        }
        let Some(id) = data
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<ObjectId>().ok())
        else {
            return Ok(());
        };
        self.report(ctx.api(), id, true).await.map(|_| ())
    }
}
