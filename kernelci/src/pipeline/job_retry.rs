//! Job retry: re-scheduling failed or incomplete jobs (upstream `job_retry`,
//! `spec/kernelci-pipeline.md` §1.5).
//!
//! For each `kbuild` or `job` node that ends `done` with `incomplete` (any name) or `fail`
//! (boot tests only: names starting with `baseline`), and `retry_counter < 3`, [`JobRetry`]
//! finds the ancestor the job was scheduled from (the nearest `kbuild` for a job, the nearest
//! `checkout` for a kbuild) and publishes it on the `retry` channel as if it had just become
//! `available`, restricted to the failed job: `jobfilter` (`<kbuild>+` for a kbuild, `<job>`
//! for a job), `platform_filter` (the job's platform), `retry_counter + 1` and
//! `debug.retry_by`. The ancestor in the database is not modified; the scheduler's `retry`
//! listener re-creates the job.

use serde_json::{Value, json};

use super::service::{EventHandler, EventSubscription, ServiceContext, ServiceResult, async_trait};
use super::setup::ServiceSetup;
use crate::client::{Api, ReceivedEvent};
use crate::models::{Node, ResultValue, State};

/// The channel retries are published on.
pub const RETRY_CHANNEL: &str = "retry";

/// The most retries of one job.
pub const MAX_RETRIES: i64 = 3;

/// The job retry service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRetry {
    promiscuous: bool,
}

impl JobRetry {
    /// A retry service; `promiscuous` follows every owner's nodes.
    pub fn new(promiscuous: bool) -> JobRetry {
        JobRetry { promiscuous }
    }

    /// Reads the service from `setup` (section `job_retry`): the `promisc` flag.
    pub fn from_settings(setup: &ServiceSetup) -> ServiceResult<JobRetry> {
        Ok(JobRetry::new(setup.flag(false, "promisc")?))
    }

    /// The events it handles.
    pub fn subscription(&self) -> EventSubscription {
        EventSubscription::node()
            .states(&["done"])
            .results(&["incomplete", "fail"])
            .kinds(&["kbuild", "job"])
            .promiscuous(self.promiscuous)
    }

    /// Runs until shutdown.
    pub async fn run(&self, ctx: &ServiceContext) -> ServiceResult<()> {
        let mut handler = self.clone();
        ctx.run_events(self.subscription(), &mut handler).await
    }

    /// The retry event for `node`, when it should be retried: the ancestor node, ready to
    /// publish. Does not publish.
    pub async fn retry_for(&self, api: &dyn Api, node: &Node) -> ServiceResult<Option<Node>> {
        if node.state != State::Done {
            return Ok(None);
        }
        match node.result {
            Some(ResultValue::Incomplete) => {}
            Some(ResultValue::Fail) if node.name.starts_with("baseline") => {}
            _ => return Ok(None),
        }
        if node.retry_counter >= MAX_RETRIES {
            tracing::info!(node = ?node.id, name = %node.name, "retried too often; not again");
            return Ok(None);
        }
        let wanted = match node.kind.as_str() {
            "job" => "kbuild",
            "kbuild" => "checkout",
            _ => return Ok(None),
        };
        let mut parent = node.parent;
        let mut ancestor = None;
        let mut hops = 0;
        while let Some(pid) = parent {
            hops += 1;
            if hops > 64 {
                break;
            }
            let Some(p) = api.get_node(pid).await? else {
                break;
            };
            if p.kind == wanted {
                ancestor = Some(p);
                break;
            }
            parent = p.parent;
        }
        let Some(mut ancestor) = ancestor else {
            tracing::warn!(node = ?node.id, "no {wanted} ancestor; cannot retry");
            return Ok(None);
        };
        ancestor.jobfilter = Some(vec![if node.kind == "kbuild" {
            format!("{}+", node.name)
        } else {
            node.name.clone()
        }]);
        ancestor.state = State::Available;
        if node.kind == "job"
            && let Some(platform) = node.data_str("platform")
        {
            ancestor.platform_filter = Some(vec![platform.to_owned()]);
        }
        ancestor.retry_counter = node.retry_counter + 1;
        ancestor.debug = json!({"retry_by": node.id}).as_object().cloned();
        Ok(Some(ancestor))
    }

    /// Retries `node` when it should be: publishes the ancestor on `retry`. Returns it.
    pub async fn process(&self, api: &dyn Api, node: &Node) -> ServiceResult<Option<Node>> {
        let Some(ancestor) = self.retry_for(api, node).await? else {
            return Ok(None);
        };
        api.publish(RETRY_CHANNEL, &ancestor.to_value(), None)
            .await?;
        tracing::info!(node = ?node.id, name = %node.name, ancestor = ?ancestor.id,
            retry = ancestor.retry_counter, "retry requested");
        Ok(Some(ancestor))
    }
}

#[async_trait]
impl EventHandler for JobRetry {
    async fn handle(&mut self, ctx: &ServiceContext, event: &ReceivedEvent) -> ServiceResult<()> {
        let Some(node) = ctx.event_node(event).await? else {
            return Ok(());
        };
        // The node as it is now must still be the failure the event was about.
        if event.event.data.get("result").and_then(Value::as_str)
            != node.result.map(ResultValue::as_str)
        {
            return Ok(());
        }
        self.process(ctx.api(), &node).await.map(|_| ())
    }
}
