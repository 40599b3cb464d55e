//! What every service shares: a durable event subscription, a poll loop, a liveness endpoint,
//! graceful shutdown and structured logs (upstream `src/base.py`, spec §0.4).
//!
//! A service is a [`ServiceContext`] (its name, an [`ApiClient`], a [`Shutdown`] signal and a
//! [`Liveness`] register) plus either
//!
//! - an [`EventHandler`] run by [`ServiceContext::run_events`]: a [`Listener`] with the stable
//!   subscriber id `<name>:<channel>`, so a restarted service resumes right after the last
//!   event it acknowledged; an event is acknowledged only after the handler returned `Ok`
//!   (a failing handler is retried in place, with backoff, up to
//!   [`EventSubscription::max_attempts`] times), or
//! - a periodic job run by [`ServiceContext::run_periodic`] (trigger, timeout).
//!
//! Start-up (settings, each service's options, runtimes) lives in [`super::setup`], the
//! shutdown signal and the liveness register in [`super::lifecycle`], the crash points of the
//! crash-safety tests in [`super::fault`]; their public items are re-exported here.
//!
//! [`ServiceContext::serve_health`] answers `GET /metrics` with the service's [`Metrics`]
//! (Prometheus text) and `GET /health` with `200 OK` while every loop is alive, and `503`
//! once one of them has made no progress (no event, no keep-alive from the server, no poll pass) for [`Liveness::stuck_after`]. On SIGINT or SIGTERM
//! ([`Shutdown::on_signals`]) the current event is finished and acknowledged, then the loops
//! return.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kernelci::pipeline::service::ServiceError> {
//! use kernelci::client::{ApiClient, ReceivedEvent};
//! use kernelci::pipeline::service::{
//!     EventHandler, EventSubscription, ServiceContext, ServiceError, async_trait,
//! };
//!
//! struct Printer;
//!
//! #[async_trait]
//! impl EventHandler for Printer {
//!     async fn handle(&mut self, _ctx: &ServiceContext, ev: &ReceivedEvent)
//!         -> Result<(), ServiceError> {
//!         println!("{:?}", ev.node_event());
//!         Ok(())
//!     }
//! }
//!
//! let api = ApiClient::new("http://localhost:8001")?.with_token("eyJ...");
//! let ctx = ServiceContext::new("printer", api);
//! ctx.shutdown().on_signals();
//! ctx.serve_health(Some(8080)).await?;
//! ctx.run_events(EventSubscription::node().kinds(&["checkout"]), &mut Printer).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use async_trait::async_trait;
use tokio::net::TcpListener;

use super::metrics::Metrics;
use crate::ErrorKind;
use crate::client::{Api, ClientError, Listener, ListenerConfig, NodeEventFilter, ReceivedEvent};
use crate::models::{Node, ObjectId};
use crate::retry::Backoff;
use crate::storage::StorageError;

pub use super::fault::{CRASH_AT_ENV, CRASH_MARKER_ENV, CRASH_STEPS, crash_point};
pub use super::lifecycle::{Liveness, Shutdown, serve_health};
pub use super::setup::{ServiceSetup, run_service};

/// The submitter value of nodes the pipeline creates (upstream `SERVICE_PIPELINE`).
pub const SERVICE_PIPELINE: &str = "service:pipeline";

/// Errors of the pipeline services.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An API call failed.
    #[error("API: {0}")]
    Client(#[from] ClientError),
    /// A storage upload failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A git operation failed.
    #[error("git: {0}")]
    Git(#[from] crate::git::GitError),
    /// Rendering or sending a report failed.
    #[error("report: {0}")]
    Report(#[from] crate::report::ReportError),
    /// The liveness endpoint could not listen.
    #[error("health endpoint on {addr}: {source}")]
    Health {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The settings or the YAML configuration are wrong (each error names the file, line
    /// and key).
    #[error("configuration: {0}")]
    Config(String),
    /// Bad input (a node without the data a service needs, a bad option).
    #[error("{0}")]
    Invalid(String),
}

impl ServiceError {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Client(e) => e.kind(),
            ServiceError::Storage(e) => e.kind(),
            ServiceError::Git(e) => e.kind(),
            ServiceError::Report(e) => e.kind(),
            ServiceError::Health { .. } | ServiceError::Io { .. } => ErrorKind::Unavailable,
            ServiceError::Config(_) | ServiceError::Invalid(_) => ErrorKind::Invalid,
        }
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> ServiceError {
        ServiceError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result of service operations.
pub type ServiceResult<T> = Result<T, ServiceError>;

// ------------------------------------------------------------------------------------------
// Events

/// What a service subscribes to.
#[derive(Debug, Clone)]
pub struct EventSubscription {
    /// The channel (`node`, `retry`).
    pub channel: String,
    /// Which node events to hand over (kind, state, result, name).
    pub filter: NodeEventFilter,
    /// Accepted `op` values (`created`, `updated`); empty accepts any.
    pub ops: Vec<String>,
    /// Receive every owner's events (upstream `promisc`).
    pub promiscuous: bool,
    /// How many times a failing handler runs for one event before the event is skipped
    /// (logged as an error and acknowledged).
    pub max_attempts: u32,
    /// First wait before retrying a failed handler (doubles each time, up to 60 s, with
    /// jitter: see [`crate::retry`]).
    pub retry_delay: Duration,
    /// How long one long-poll may take before it is retried.
    pub poll_timeout: Duration,
}

impl EventSubscription {
    /// All events of `channel`, own events only.
    pub fn new(channel: impl Into<String>) -> EventSubscription {
        EventSubscription {
            channel: channel.into(),
            filter: NodeEventFilter::default(),
            ops: Vec::new(),
            promiscuous: false,
            max_attempts: 5,
            retry_delay: Duration::from_secs(2),
            poll_timeout: Duration::from_secs(120),
        }
    }

    /// All events of the `node` channel.
    pub fn node() -> EventSubscription {
        EventSubscription::new(crate::events::NODE_CHANNEL)
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Only these operations (`created`, `updated`).
    pub fn ops(mut self, ops: &[&str]) -> Self {
        self.ops = Self::strings(ops);
        self
    }

    /// Only these kinds.
    pub fn kinds(mut self, kinds: &[&str]) -> Self {
        self.filter.kind = Self::strings(kinds);
        self
    }

    /// Only these states.
    pub fn states(mut self, states: &[&str]) -> Self {
        self.filter.state = Self::strings(states);
        self
    }

    /// Only these results.
    pub fn results(mut self, results: &[&str]) -> Self {
        self.filter.result = Self::strings(results);
        self
    }

    /// Only these names.
    pub fn names(mut self, names: &[&str]) -> Self {
        self.filter.name = Self::strings(names);
        self
    }

    /// Every owner's events.
    pub fn promiscuous(mut self, on: bool) -> Self {
        self.promiscuous = on;
        self
    }

    /// Whether an event passes the filter and the operation list.
    pub fn accepts(&self, event: &ReceivedEvent) -> bool {
        let data = &event.event.data;
        let op_ok = self.ops.is_empty()
            || data
                .get("op")
                .and_then(|v| v.as_str())
                .is_some_and(|op| self.ops.iter().any(|o| o == op));
        op_ok && self.filter.accepts(data)
    }
}

/// What a service does with each event it subscribed to. Handlers must be idempotent: an
/// event can come again (after a crash before the acknowledgement).
#[async_trait]
pub trait EventHandler: Send {
    /// Handles one event. `Err` retries it (see [`EventSubscription::max_attempts`]); a
    /// problem with the node itself (bad data, a failed git checkout recorded on the node)
    /// should be `Ok`.
    async fn handle(&mut self, ctx: &ServiceContext, event: &ReceivedEvent) -> ServiceResult<()>;
}

// ------------------------------------------------------------------------------------------
// The context

/// What a running service holds: its name, the API client, the shutdown signal and the
/// liveness register. Cloning shares the signal and the register.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    name: String,
    api: Arc<dyn Api>,
    shutdown: Shutdown,
    liveness: Liveness,
    metrics: Metrics,
}

impl ServiceContext {
    /// A context for the service `name` (upstream `--name`), talking to the API with `api`
    /// (an [`ApiClient`] carrying the service's token, or any other [`Api`], such as a mock).
    pub fn new(name: impl Into<String>, api: impl Into<Arc<dyn Api>>) -> ServiceContext {
        ServiceContext {
            name: name.into(),
            api: api.into(),
            shutdown: Shutdown::new(),
            liveness: Liveness::default(),
            metrics: Metrics::default(),
        }
    }

    /// With another liveness register (e.g. a shorter stuck period).
    pub fn with_liveness(mut self, liveness: Liveness) -> ServiceContext {
        self.liveness = liveness;
        self
    }

    /// With a shutdown signal shared with other services.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> ServiceContext {
        self.shutdown = shutdown;
        self
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API.
    pub fn api(&self) -> &Arc<dyn Api> {
        &self.api
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The liveness register.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// The metrics served at `GET /metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The durable subscriber id for `channel`: `<name>:<channel>`, as upstream.
    pub fn subscriber_id(&self, channel: &str) -> String {
        format!("{}:{channel}", self.name)
    }

    /// The liveness component name of the event loop on `channel`: long handler steps beat
    /// it (`ctx.liveness().beat(&ctx.events_component("node"))`) to stay alive.
    pub fn events_component(&self, channel: &str) -> String {
        format!("events:{}", self.subscriber_id(channel))
    }

    /// Sleeps `duration`, or less when a stop is asked for; `false` means "stop".
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.wait() => false,
            _ = tokio::time::sleep(duration) => !self.shutdown.is_triggered(),
        }
    }

    /// Serves `GET /health` on `0.0.0.0:<port>` (port 0: any free port) until shutdown;
    /// `None` serves nothing. Returns the bound address.
    pub async fn serve_health(&self, port: Option<u16>) -> ServiceResult<Option<SocketAddr>> {
        let Some(port) = port else {
            return Ok(None);
        };
        self.serve_health_on(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .map(Some)
    }

    /// Serves `GET /health` on `addr` until shutdown. Returns the bound address.
    pub async fn serve_health_on(&self, addr: SocketAddr) -> ServiceResult<SocketAddr> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Health { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServiceError::Health { addr, source })?;
        tracing::info!(service = %self.name, %bound, "health endpoint at /health");
        tokio::spawn(serve_health(
            listener,
            self.liveness.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
        Ok(bound)
    }

    /// The node an event is about, as it is now (it may have moved on since the event).
    pub async fn event_node(&self, event: &ReceivedEvent) -> ServiceResult<Option<Node>> {
        let Some(id) = event
            .event
            .data
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<ObjectId>().ok())
        else {
            return Ok(None);
        };
        Ok(self.api.get_node(id).await?)
    }

    /// Follows `subscription` with the durable id `<name>:<channel>` and runs `handler` on
    /// every accepted event, acknowledging each one after the handler succeeded. A failing
    /// handler is retried in place with backoff; after
    /// [`EventSubscription::max_attempts`] failures the event is logged and skipped. Returns
    /// `Ok` after a stop was asked for (the event in hand is finished first), or the error
    /// the listener cannot recover from (a bad token).
    pub async fn run_events<H: EventHandler + ?Sized>(
        &self,
        subscription: EventSubscription,
        handler: &mut H,
    ) -> ServiceResult<()> {
        let sub_id = self.subscriber_id(&subscription.channel);
        let mut config = ListenerConfig::new(subscription.channel.clone())
            .durable(sub_id.clone())
            .filter(subscription.filter.clone());
        config.promiscuous = subscription.promiscuous;
        config.poll_timeout = subscription.poll_timeout;
        let mut listener = Listener::new(self.api.clone(), config);
        let component = self.events_component(&subscription.channel);
        self.liveness
            .register_listener(&component, listener.health_handle());
        tracing::info!(service = %self.name, subscriber = %sub_id, "listening");
        let outcome = self
            .event_loop(&subscription, &mut listener, handler, &component)
            .await;
        self.liveness.deregister(&component);
        // Acknowledges what was handled; the durable position stays on the server.
        if let Err(e) = listener.close().await {
            tracing::warn!(service = %self.name, error = %e, "closing the subscription");
        }
        tracing::info!(service = %self.name, subscriber = %sub_id, "stopped listening");
        outcome
    }

    async fn event_loop<H: EventHandler + ?Sized>(
        &self,
        subscription: &EventSubscription,
        listener: &mut Listener,
        handler: &mut H,
        component: &str,
    ) -> ServiceResult<()> {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.wait() => return Ok(()),
                n = listener.next() => n,
            };
            // An event taken but not acknowledged comes again after the restart.
            let event = next?;
            self.liveness.beat(component);
            if !subscription.accepts(&event) {
                listener.ack(&event);
                continue;
            }
            let seq = event.sequence_id();
            let node_id = event
                .event
                .data
                .get("id")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            let mut delays = Backoff::new(subscription.retry_delay, Duration::from_secs(60))
                .attempts(subscription.max_attempts.max(1))
                .delays();
            let mut attempt = 1u32;
            crash_point("event-received").await;
            loop {
                let started = Instant::now();
                match handler.handle(self, &event).await {
                    Ok(()) => {
                        tracing::debug!(service = %self.name, ?seq, node = %node_id,
                            ms = started.elapsed().as_millis() as u64, "event handled");
                        crash_point("event-handled").await;
                        listener.ack(&event);
                        break;
                    }
                    Err(e) => {
                        let Some(delay) = delays.next() else {
                            tracing::error!(service = %self.name, ?seq, node = %node_id, attempt,
                                error = %e, "event handler keeps failing; skipping the event");
                            listener.ack(&event);
                            break;
                        };
                        tracing::warn!(service = %self.name, ?seq, node = %node_id, attempt,
                            error = %e, "event handler failed; retrying in {delay:?}");
                        if !self.sleep(delay).await {
                            // Not acknowledged: the event comes again after the restart.
                            return Ok(());
                        }
                        self.liveness.beat(component);
                        attempt += 1;
                    }
                }
            }
            self.liveness.beat(component);
            if self.shutdown.is_triggered() {
                return Ok(());
            }
        }
    }

    /// Runs `pass` every `period` until shutdown; a zero period runs it once (upstream's
    /// `poll_period = 0`). A failing pass is logged and the loop goes on; in one-shot mode
    /// its error is returned.
    pub async fn run_periodic<F, Fut>(
        &self,
        component: &str,
        period: Duration,
        mut pass: F,
    ) -> ServiceResult<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ServiceResult<()>>,
    {
        let component = format!("poll:{}:{component}", self.name);
        self.liveness.register(&component);
        let outcome = loop {
            let started = Instant::now();
            let result = pass().await;
            self.liveness.beat(&component);
            match result {
                Ok(()) => tracing::debug!(service = %self.name,
                    ms = started.elapsed().as_millis() as u64, "pass done"),
                Err(e) if period.is_zero() => break Err(e),
                Err(e) => tracing::warn!(service = %self.name, error = %e, "pass failed"),
            }
            if period.is_zero() || !self.sleep(period).await {
                break Ok(());
            }
        };
        self.liveness.deregister(&component);
        outcome
    }
}
