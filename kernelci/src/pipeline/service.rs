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
//! [`ServiceContext::serve_health`] answers `GET /metrics` with the service's
//! [`Metrics`] (Prometheus text) and `GET /health` with `200 OK` while every loop is alive, and `503` once one of them has made no progress (no event, no keep-alive from the
//! server, no poll pass) for [`Liveness::stuck_after`]. On SIGINT or SIGTERM
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

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::ErrorKind;
use crate::client::{
    ApiClient, ClientError, Listener, ListenerConfig, ListenerHealth, NodeEventFilter,
    ReceivedEvent,
};
use crate::config::{PipelineConfig, Settings};
use crate::models::{Node, ObjectId, Timestamp};
use crate::storage::{Storage, StorageError};

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
// Start-up

/// What a service binary reads at start-up (upstream `Service.__init__`): `kernelci.toml`
/// ([`Settings`], looked up in the service's section then `[DEFAULT]`) and the pipeline YAML
/// configuration (trees, build configs, API and storage entries).
#[derive(Debug)]
pub struct ServiceSetup {
    /// The settings.
    pub settings: Settings,
    /// The YAML configuration (empty when no directory was given).
    pub config: PipelineConfig,
    /// The service's settings section (`trigger`, `tarball`, `timeout`, ...).
    pub section: String,
}

impl ServiceSetup {
    /// Loads the settings (`settings`: the `--settings` path, else upstream's search) and the
    /// YAML files under `yaml` (none given: `./config` when it is a directory, as upstream's
    /// default, else an empty configuration).
    pub fn load(section: &str, settings: Option<&Path>, yaml: &[PathBuf]) -> ServiceResult<Self> {
        let settings = Settings::load(settings).map_err(|e| ServiceError::Config(e.to_string()))?;
        let default = [PathBuf::from("config")];
        let yaml = if yaml.is_empty() && default[0].is_dir() {
            &default[..]
        } else {
            yaml
        };
        let config = if yaml.is_empty() {
            PipelineConfig::default()
        } else {
            PipelineConfig::load(yaml).map_err(|e| ServiceError::Config(e.to_string()))?
        };
        Ok(ServiceSetup {
            settings,
            config,
            section: section.to_owned(),
        })
    }

    /// A value: `cli` when given, else `[<section>] key`, else `[DEFAULT] key`.
    pub fn get(&self, cli: Option<String>, key: &str) -> Option<String> {
        cli.or_else(|| self.settings.get_str(&self.section, key))
    }

    /// Like [`ServiceSetup::get`], parsed; an error names the key.
    pub fn get_parsed<T: std::str::FromStr>(
        &self,
        cli: Option<T>,
        key: &str,
    ) -> ServiceResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        if cli.is_some() {
            return Ok(cli);
        }
        self.settings
            .get_parsed(&self.section, key)
            .map_err(|e| ServiceError::Config(e.to_string()))
    }

    /// A flag: set on the command line, or true in the settings.
    pub fn flag(&self, cli: bool, key: &str) -> ServiceResult<bool> {
        if cli {
            return Ok(true);
        }
        Ok(self
            .settings
            .get_bool(&self.section, key)
            .map_err(|e| ServiceError::Config(e.to_string()))?
            .unwrap_or(false))
    }

    /// The API client: `api_url` when given, else the URL of the `api_config` entry of the
    /// YAML `api:` section; the token from `$KCI_API_TOKEN` (or `[DEFAULT] api_token`).
    pub fn api(&self, api_url: Option<&str>) -> ServiceResult<ApiClient> {
        let (url, timeout) = match api_url {
            Some(u) => (u.to_owned(), 60.0),
            None => {
                let name = self.get(None, "api_config").ok_or_else(|| {
                    ServiceError::Config(format!(
                        "no API: give --api-url, or api_config in [{}] or [DEFAULT]",
                        self.section
                    ))
                })?;
                let api = self.config.api.get(&name).ok_or_else(|| {
                    ServiceError::Config(format!(
                        "api_config '{name}' is not in the YAML api: section"
                    ))
                })?;
                (api.url.clone(), api.timeout)
            }
        };
        let token = self
            .settings
            .api_token()
            .ok_or_else(|| ServiceError::Config("no API token: set KCI_API_TOKEN".into()))?;
        let timeout = Duration::from_secs_f64(if timeout > 0.0 { timeout } else { 60.0 });
        Ok(ApiClient::with_timeout(&url, timeout)?.with_token(token.expose()))
    }

    /// The service context: named `cli_name`, else the `name` setting, else the section.
    pub fn context(
        &self,
        cli_name: Option<String>,
        api_url: Option<&str>,
    ) -> ServiceResult<ServiceContext> {
        let name = self
            .get(cli_name, "name")
            .unwrap_or_else(|| self.section.clone());
        Ok(ServiceContext::new(name, self.api(api_url)?))
    }

    /// The storage named `cli` or by the `storage_config` setting, with its `storage_cred`.
    pub fn storage(&self, cli: Option<String>) -> ServiceResult<Arc<dyn Storage>> {
        let name = self.get(cli, "storage_config").ok_or_else(|| {
            ServiceError::Config(format!(
                "no storage: give --storage-config, or storage_config in [{}] or [DEFAULT]",
                self.section
            ))
        })?;
        let entry = self.config.storage.get(&name).ok_or_else(|| {
            ServiceError::Config(format!(
                "storage '{name}' is not in the YAML storage: section"
            ))
        })?;
        let cred = self.settings.storage_cred(&name);
        Ok(crate::storage::from_config(
            entry,
            cred.as_ref().map(|c| c.expose()),
        )?)
    }
}

/// Runs a service body the way every binary does: SIGINT/SIGTERM stop it, `/health` is served
/// on `health_port` when given, and the outcome is logged. Returns the process exit code.
pub async fn run_service<F, Fut>(ctx: &ServiceContext, health_port: Option<u16>, body: F) -> i32
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ServiceResult<()>>,
{
    ctx.shutdown().on_signals();
    if let Err(e) = ctx.serve_health(health_port).await {
        tracing::error!(service = %ctx.name(), error = %e, "cannot serve /health");
        return 1;
    }
    tracing::info!(service = %ctx.name(), "started");
    let outcome = body().await;
    ctx.shutdown().trigger();
    match outcome {
        Ok(()) => {
            tracing::info!(service = %ctx.name(), "stopped");
            0
        }
        Err(e) => {
            tracing::error!(service = %ctx.name(), error = %e, kind = ?e.kind(), "failed");
            1
        }
    }
}

// ------------------------------------------------------------------------------------------
// Crash-test hook

/// Names the step at which a service stops dead, for crash-safety tests: `$KCI_TEST_CRASH_AT`
/// (see [`crash_point`]). Unset in production.
pub const CRASH_AT_ENV: &str = "KCI_TEST_CRASH_AT";

/// A file [`crash_point`] appends the step name to when it is reached, so a test knows when to
/// `kill -9` the service.
pub const CRASH_MARKER_ENV: &str = "KCI_TEST_CRASH_MARKER";

/// The steps a service can be stopped at by [`CRASH_AT_ENV`]:
///
/// - `event-received`: the event loop took an accepted event, before its handler ran;
/// - `event-handled`: the handler succeeded, before the acknowledgement;
/// - `job-node-created` (scheduler): the job node exists, the job is not submitted yet;
/// - `job-submitted` (scheduler): the job is submitted, the node does not say so yet;
/// - `regression-created` (regression): the regression node exists, the failing node does
///   not point at it yet;
/// - `checkout-created` (trigger): a checkout node was created, the pass is not over;
/// - `node-updated` (timeout): the first node of a pass was moved, the pass is not over.
pub const CRASH_STEPS: [&str; 7] = [
    "event-received",
    "event-handled",
    "job-node-created",
    "job-submitted",
    "regression-created",
    "checkout-created",
    "node-updated",
];

fn crash_step() -> Option<&'static str> {
    static STEP: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    STEP.get_or_init(|| std::env::var(CRASH_AT_ENV).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// The crash-test hook, read only here: when `$KCI_TEST_CRASH_AT` names `step` (one of
/// [`CRASH_STEPS`]), logs `crash point reached`, appends `step` to the file
/// `$KCI_TEST_CRASH_MARKER` (when set) and never returns, so the calling task stays frozen at
/// that exact point until the test kills the process with SIGKILL. Without the variable (every
/// real deployment) it returns at once.
pub async fn crash_point(step: &str) {
    if crash_step() != Some(step) {
        return;
    }
    tracing::error!(step, "crash point reached; waiting to be killed");
    if let Some(path) = std::env::var_os(CRASH_MARKER_ENV) {
        let line = format!("{step}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write the crash marker");
        }
    }
    std::future::pending::<()>().await;
}

// ------------------------------------------------------------------------------------------
// Shutdown

/// A shutdown signal shared by every loop of a service. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Asks every loop to stop after its current step.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until a stop is asked for.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // The sender lives as long as `self`, so this only ends on `true`.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Triggers on SIGINT (Ctrl-C) or SIGTERM. Needs a tokio runtime.
    pub fn on_signals(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let name = wait_for_signal().await;
            tracing::info!(signal = name, "stopping after the current step");
            me.trigger();
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the service");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

// ------------------------------------------------------------------------------------------
// Liveness

#[derive(Debug)]
struct Component {
    last_beat: Instant,
    listener: Option<Arc<Mutex<ListenerHealth>>>,
}

/// The liveness register: each loop of a service registers a component and beats; the service
/// is alive while every component made progress within [`Liveness::stuck_after`]. A listener's
/// contacts with the server (events and keep-alives) count as progress.
#[derive(Debug, Clone)]
pub struct Liveness {
    components: Arc<Mutex<BTreeMap<String, Component>>>,
    stuck_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new(Duration::from_secs(600))
    }
}

impl Liveness {
    /// A register that calls a component stuck after `stuck_after` without progress
    /// (upstream's watchdog uses 600 s).
    pub fn new(stuck_after: Duration) -> Liveness {
        Liveness {
            components: Arc::default(),
            stuck_after,
        }
    }

    /// How long a component may go without progress.
    pub fn stuck_after(&self) -> Duration {
        self.stuck_after
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Component>) -> R) -> Option<R> {
        self.components.lock().ok().map(|mut c| f(&mut c))
    }

    /// Registers (or resets) a component.
    pub fn register(&self, name: &str) {
        self.with(|c| {
            c.insert(
                name.to_owned(),
                Component {
                    last_beat: Instant::now(),
                    listener: None,
                },
            )
        });
    }

    /// Registers a component whose listener's server contacts count as progress.
    pub fn register_listener(&self, name: &str, health: Arc<Mutex<ListenerHealth>>) {
        self.with(|c| {
            c.insert(
                name.to_owned(),
                Component {
                    last_beat: Instant::now(),
                    listener: Some(health),
                },
            )
        });
    }

    /// Removes a component (its loop ended cleanly).
    pub fn deregister(&self, name: &str) {
        self.with(|c| c.remove(name));
    }

    /// Notes progress of a component (long steps call this from their progress callbacks).
    pub fn beat(&self, name: &str) {
        self.with(|c| {
            if let Some(comp) = c.get_mut(name) {
                comp.last_beat = Instant::now();
            }
        });
    }

    /// How long ago each component last made progress.
    pub fn ages(&self) -> BTreeMap<String, Duration> {
        let now_wall = Timestamp::now();
        self.with(|c| {
            c.iter()
                .map(|(name, comp)| {
                    let mut age = comp.last_beat.elapsed();
                    let contact = comp
                        .listener
                        .as_ref()
                        .and_then(|h| h.lock().ok().and_then(|h| h.last_contact));
                    if let Some(contact) = contact {
                        let micros = (now_wall.micros() - contact.micros()).max(0);
                        age = age.min(Duration::from_micros(micros.unsigned_abs()));
                    }
                    (name.clone(), age)
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// `Ok` when every component is alive; otherwise the stuck ones, with their ages.
    pub fn check(&self) -> Result<(), String> {
        let stuck: Vec<String> = self
            .ages()
            .into_iter()
            .filter(|(_, age)| *age > self.stuck_after)
            .map(|(name, age)| format!("{name} stuck for {}s", age.as_secs()))
            .collect();
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(stuck.join(", "))
        }
    }
}

/// Serves `GET /health` on `listener` until `shutdown`: `200 OK` while `liveness` is alive,
/// `503` with the stuck components otherwise; `GET /metrics`: `metrics` in the Prometheus
/// text format; `404` for other paths.
pub async fn serve_health(
    listener: TcpListener,
    liveness: Liveness,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let (liveness, metrics) = (liveness.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(512);
            let mut chunk = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, body) = match (method, path) {
                ("GET" | "HEAD", "/health") => match liveness.check() {
                    Ok(()) => ("200 OK", "OK".to_owned()),
                    Err(stuck) => ("503 Service Unavailable", stuck),
                },
                ("GET" | "HEAD", "/metrics") => ("200 OK", metrics.render()),
                _ => ("404 Not Found", "Not Found".to_owned()),
            };
            let body = if method == "HEAD" { "" } else { body.as_str() };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

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
    /// First wait before retrying a failed handler (doubles each time, up to 60 s).
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
    api: ApiClient,
    shutdown: Shutdown,
    liveness: Liveness,
    metrics: Metrics,
}

impl ServiceContext {
    /// A context for the service `name` (upstream `--name`), talking to the API with `api`
    /// (which must carry the service's token).
    pub fn new(name: impl Into<String>, api: ApiClient) -> ServiceContext {
        ServiceContext {
            name: name.into(),
            api,
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

    /// The API client.
    pub fn api(&self) -> &ApiClient {
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
            let mut delay = subscription.retry_delay;
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
                    Err(e) if attempt >= subscription.max_attempts.max(1) => {
                        tracing::error!(service = %self.name, ?seq, node = %node_id, attempt,
                            error = %e, "event handler keeps failing; skipping the event");
                        listener.ack(&event);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(service = %self.name, ?seq, node = %node_id, attempt,
                            error = %e, "event handler failed; retrying in {delay:?}");
                        if !self.sleep(delay).await {
                            // Not acknowledged: the event comes again after the restart.
                            return Ok(());
                        }
                        self.liveness.beat(component);
                        delay = (delay * 2).min(Duration::from_secs(60));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_reports_stuck_components() {
        let l = Liveness::new(Duration::from_millis(30));
        assert!(l.check().is_ok(), "empty register is alive");
        l.register("a");
        assert!(l.check().is_ok());
        std::thread::sleep(Duration::from_millis(50));
        let err = l.check().unwrap_err();
        assert!(err.contains("a stuck"), "{err}");
        l.beat("a");
        assert!(l.check().is_ok());
        // A listener's last contact with the server counts as progress.
        let health = Arc::new(Mutex::new(ListenerHealth::default()));
        l.register_listener("b", health.clone());
        std::thread::sleep(Duration::from_millis(50));
        health.lock().unwrap().last_contact = Some(Timestamp::now());
        l.beat("a");
        assert!(l.check().is_ok(), "{:?}", l.ages());
        l.deregister("a");
        l.deregister("b");
        assert!(l.ages().is_empty());
    }
}
