//! The report service: a report for each finished checkout (upstream's removed
//! `test_report`, `spec/kernelci-pipeline.md` §6).
//!
//! [`Reporter`] follows checkouts reaching `done` (only the transition: a checkout updated
//! while already `done` is not reported twice), gathers the report
//! ([`crate::report::gather`]), prints it, and sends it when an SMTP host is configured.
//! [`Reporter::report`] does the same for one checkout (`run --node-id X`).

use serde_json::Value;

use super::service::{EventHandler, EventSubscription, ServiceContext, ServiceResult, async_trait};
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
