//! `kci up`: the all-in-one mode. One process runs the API server on the embedded default
//! (SQLite file, in-process event bus), the artifact storage served over HTTP by the same
//! server (`/storage/`), and every pipeline service — trigger, tarball, scheduler (shell
//! runtime), timeout/holdoff/closing, regression tracker, report, job retry — from a config
//! folder in upstream's format.
//!
//! `--demo` first creates a small kernel-style git tree ([`crate::demo`]) and a config folder
//! that follows it, so one revision goes trigger → tarball → kbuild → tests → report in about a
//! minute, offline. Progress is printed one line per node event, then the report and the URL
//! where the nodes can be browsed.
//!
//! Everything lives under the data directory (`--data`, default `./kci-data`):
//!
//! | path | what |
//! |---|---|
//! | `kernelci.sqlite` | the node store, users, event log |
//! | `storage/` | artifacts (tarballs, logs, kernels), served at `<url>/storage/` |
//! | `secret-key`, `admin-password`, `storage-token` | generated on first start (from the operating system's randomness, mode 0600) unless `SECRET_KEY` / `KCI_INITIAL_PASSWORD` / `KCI_STORAGE_TOKEN` are set |
//! | `src/` | the tarball service's git work trees |
//! | `jobs/` | generated job definitions and job work directories |
//! | `demo/` | with `--demo`: the demo tree (`demo/linux`) and its config (`demo/config`) |
//! | `kcidb/` | KCIDB documents the bridge wrote (when `KCIDB_REST` is not set) |

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kernelci::client::{ApiClient, Listener, ListenerConfig};
use kernelci::config::{ConfigErrors, PipelineConfig, Settings};
use kernelci::pipeline::job_retry::JobRetry;
use kernelci::pipeline::regression::RegressionTracker;
use kernelci::pipeline::reporter::Reporter;
use kernelci::pipeline::scheduler::{Scheduler, SchedulerOptions};
use kernelci::pipeline::service::{
    ServiceContext, ServiceError, ServiceResult, ServiceSetup, Shutdown,
};
use kernelci::pipeline::setup::RuntimeSelection;
use kernelci::pipeline::tarball::{Tarball, TarballOptions};
use kernelci::pipeline::timeout::{TimeoutMode, TimeoutService};
use kernelci::pipeline::trigger::{BuildTarget, Trigger, TriggerOptions};
use kernelci::report::SmtpConfig;
use kernelci::runtime::registry::RuntimeContext;
use kernelci::runtime::template::TemplateEngine;
use kernelci::storage::Storage;
use serde_json::Value;

mod secrets;
use secrets::{persistent_secret, random_hex, signing_secret};

/// The job templates shipped with the binary, written into the demo config so `kci up --demo`
/// works from any directory.
const SHIPPED_TEMPLATES: &[(&str, &str)] = &[
    (
        "runtime/base/shell.jinja2",
        include_str!("../../config/runtime/base/shell.jinja2"),
    ),
    (
        "runtime/kbuild.jinja2",
        include_str!("../../config/runtime/kbuild.jinja2"),
    ),
    (
        "runtime/ktap-test.jinja2",
        include_str!("../../config/runtime/ktap-test.jinja2"),
    ),
];

/// What `kci up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Config folders in upstream's layout (`*.yaml`, `runtime/*.jinja2`); ignored by `--demo`,
    /// which writes its own.
    pub config: Vec<PathBuf>,
    /// The data directory.
    pub data: PathBuf,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Create the demo tree and config and follow them.
    pub demo: bool,
    /// Stop once the first checkout is reported (for scripts and tests).
    pub exit_after_report: bool,
    /// The `kernelci.toml` settings file, if any (`[trigger]`, `[runtime.<name>]`, ...).
    pub settings: Option<PathBuf>,
    /// How often the trigger polls the trees (overrides `[trigger] poll_period`; unset: 10 s in
    /// the demo, else one pass as upstream).
    pub poll_period: Option<Duration>,
    /// How often the timeout/holdoff/closing passes run (overrides `[timeout] poll_period`;
    /// unset: 2 s in the demo, else 60 s).
    pub timeout_period: Option<Duration>,
    /// How long checkouts (and builds) stay `available` for more jobs (upstream: 10 minutes;
    /// the demo uses 5 seconds).
    pub holdoff: Option<Duration>,
    /// Where reports are mailed; `None` prints them only.
    pub smtp: Option<SmtpConfig>,
    /// Only these runtimes of the config are started (default: every runtime this build
    /// supports; runtimes that cannot start are reported and skipped).
    pub runtimes: Vec<String>,
    /// Print one line per node event.
    pub progress: bool,
    /// The `kci` binary jobs run (`kci job run`); default: this program when it is `kci`,
    /// else `$KCI_BIN`, else `kci` on `PATH`.
    pub kci_bin: Option<PathBuf>,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            config: vec![PathBuf::from("config")],
            data: PathBuf::from("kci-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            demo: false,
            exit_after_report: false,
            settings: None,
            poll_period: None,
            timeout_period: None,
            holdoff: None,
            smtp: None,
            runtimes: Vec::new(),
            progress: true,
            kci_bin: None,
        }
    }
}

/// Why `kci up` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// A file or directory could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The config folder has errors (each names its file, line and key).
    #[error("configuration errors:\n{0}")]
    Config(ConfigErrors),
    /// The settings file is wrong.
    #[error("settings: {0}")]
    Settings(String),
    /// The API server could not start.
    #[error("API server: {0}")]
    Server(String),
    /// A service could not be set up.
    #[error("{0}")]
    Service(String),
    /// The demo tree could not be made.
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    /// A secret could not be made or is too weak.
    #[error("{0}")]
    Secret(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UpError + '_ {
    move |source| UpError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a finished `kci up --exit-after-report` run saw. Its `Debug` output hides the token.
#[derive(Clone)]
pub struct UpSummary {
    /// The API URL.
    pub url: String,
    /// The reported checkout, if one was reported.
    pub checkout: Option<String>,
    /// The admin token the services used.
    pub token: String,
}

impl std::fmt::Debug for UpSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpSummary")
            .field("url", &self.url)
            .field("checkout", &self.checkout)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The YAML config the demo follows: one tree (the demo tree over `file://`), a kbuild job on
/// checkouts and a KTAP test job on the build, both on the shell runtime; artifacts go to the
/// server's `/storage/` over HTTP.
pub fn demo_config(tree_url: &str, api_url: &str) -> String {
    format!(
        r#"# The demo configuration written by `kci up --demo` (upstream's config format).
api:
  local:
    url: {api_url}

storage:
  local:
    storage_type: backend
    base_url: {api_url}/storage/
    api_url: {api_url}/storage/

trees:
  demo:
    url: "{tree_url}"

build_configs:
  demo:
    tree: demo
    branch: master

runtimes:
  shell:
    lab_type: shell

platforms:
  shell: {{}}

jobs:
  kbuild-demo-x86:
    template: kbuild.jinja2
    kind: kbuild
    params:
      arch: x86_64
      compiler: gcc
      defconfig: x86_64_defconfig
  kselftest-demo:
    template: ktap-test.jinja2
    kind: job
    params:
      command: sh tools/testing/selftests/demo/run.sh
    kcidb_test_suite: kselftest.demo

scheduler:
  - job: kbuild-demo-x86
    event:
      channel: node
      kind: checkout
      state: available
    runtime:
      name: shell
  - job: kselftest-demo
    event:
      channel: node
      kind: kbuild
      name: kbuild-demo-x86
      state: available
    runtime:
      name: shell
"#
    )
}

/// Writes the demo tree (once) and its config; returns the config folder.
fn prepare_demo(data: &Path, api_url: &str, out: &mut dyn Write) -> Result<PathBuf, UpError> {
    let demo = data.join("demo");
    let tree = demo.join("linux");
    if !tree.join(".git").exists() {
        let sha = crate::demo::create_tree(&tree)?;
        let _ = writeln!(
            out,
            "demo: created the kernel tree {} at {}",
            tree.display(),
            &sha[..12]
        );
    }
    let tree = tree.canonicalize().map_err(io(&tree))?;
    let config = demo.join("config");
    std::fs::create_dir_all(&config).map_err(io(&config))?;
    let yaml = config.join("pipeline.yaml");
    let tree_url = format!("file://{}", tree.display());
    std::fs::write(&yaml, demo_config(&tree_url, api_url)).map_err(io(&yaml))?;
    for (rel, text) in SHIPPED_TEMPLATES {
        let path = config.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(config)
}

/// One progress line per node event (like upstream's `monitor`).
fn progress_line(data: &Value) -> String {
    let s = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("");
    let commit = data
        .pointer("/data/kernel_revision/commit")
        .and_then(Value::as_str)
        .unwrap_or("");
    let result = data.get("result").and_then(Value::as_str).unwrap_or("-");
    let path = data
        .get("path")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default();
    format!(
        "{:<8} {:<10} {:<12} {:<9} {:<10} {}",
        s("op"),
        s("kind"),
        commit.get(..12).unwrap_or(commit),
        s("state"),
        result,
        path
    )
}

/// The options of every service `kci up` runs, read by the same `from_settings` as the
/// `kci-*` binaries (so the same settings give the same options), over `kci up`'s own
/// defaults and under its command-line options.
#[derive(Debug)]
pub struct UpServices {
    /// `[trigger]`.
    pub trigger: TriggerOptions,
    /// `[tarball]`.
    pub tarball: TarballOptions,
    /// `[scheduler]`.
    pub scheduler: SchedulerOptions,
    /// `[timeout]`, once per mode: timeout, holdoff, closing.
    pub timeout: Vec<TimeoutService>,
    /// `[regression_tracker]`.
    pub regression: RegressionTracker,
    /// `[job_retry]`.
    pub job_retry: JobRetry,
    /// `[test_report]` (or `--smtp-host`).
    pub reporter: Reporter,
}

/// Reads every service's options from `setup` (settings and YAML configuration), as the
/// `kci-*` binaries do. `kci up`'s defaults, which the settings file overrides: work
/// directories under `data` (`[tarball] kdir`, `output`, `[scheduler] output`), no mainline
/// tag fetch (`tags_from = none`), promiscuous regression tracker and job retry, the first
/// `storage:` and `api:` entries; with `--demo` also a 10 s trigger period, a 2 s timeout
/// period and a 5 s holdoff. Its command-line options (`--poll-period`, `--timeout-period`,
/// `--holdoff`, `--smtp-host`) override the settings.
pub fn service_options(
    opts: &UpOptions,
    setup: &mut ServiceSetup,
    data: &Path,
) -> ServiceResult<UpServices> {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let first_storage = setup.config.storage.keys().next().cloned();
    let first_api = setup.config.api.keys().next().cloned();

    setup
        .select("trigger")
        .set("poll_period", secs(opts.poll_period))
        .set_default_when(opts.demo, "poll_period", 10);
    let trigger = TriggerOptions::from_settings(setup)?;

    setup
        .select("tarball")
        .set_default("kdir", data.join("src").display())
        .set_default("output", data.join("tarballs").display())
        .set_default("tags_from", "none")
        .set("holdoff", secs(opts.holdoff))
        .set_default_when(opts.demo, "holdoff", 5);
    let tarball = TarballOptions::from_settings(setup)?;

    setup
        .select("scheduler")
        .set_default("output", data.join("jobs").display());
    if let Some(name) = first_storage {
        setup.set_default("storage_config", name);
    }
    if let Some(name) = first_api {
        setup.set_default("api_config", name);
    }
    let scheduler = SchedulerOptions::from_settings(setup)?;

    let mut timeout = Vec::new();
    for mode in [
        TimeoutMode::Timeout,
        TimeoutMode::Holdoff,
        TimeoutMode::Closing,
    ] {
        setup
            .select("timeout")
            .set("mode", Some(mode))
            .set("poll_period", secs(opts.timeout_period))
            .set_default_when(opts.demo, "poll_period", 2);
        timeout.push(TimeoutService::from_settings(setup)?);
    }

    setup
        .select("regression_tracker")
        .set_default("promisc", true);
    let regression = RegressionTracker::from_settings(setup)?;
    setup.select("job_retry").set_default("promisc", true);
    let job_retry = JobRetry::from_settings(setup)?;
    let reporter = match &opts.smtp {
        Some(smtp) => Reporter::new(Some(smtp.clone()), true),
        None => Reporter::from_settings(setup.select("test_report"), true)?,
    };
    Ok(UpServices {
        trigger,
        tarball,
        scheduler,
        timeout,
        regression,
        job_retry,
        reporter,
    })
}

fn service_error(e: ServiceError) -> UpError {
    match e {
        ServiceError::Config(m) => UpError::Settings(m),
        other => UpError::Service(other.to_string()),
    }
}

/// Runs the all-in-one mode until `shutdown` is triggered (or, with `exit_after_report`, the
/// first checkout is reported). Progress goes to `out`.
pub async fn run(
    opts: UpOptions,
    shutdown: Shutdown,
    out: &mut (dyn Write + Send),
) -> Result<UpSummary, UpError> {
    let data = opts.data.clone();
    std::fs::create_dir_all(&data).map_err(io(&data))?;
    let data = data.canonicalize().map_err(io(&data))?;
    let settings = match Settings::load(opts.settings.as_deref()) {
        Ok(s) => s,
        Err(e) => return Err(UpError::Settings(e.to_string())),
    };

    // --- the API server, embedded default ---
    let mut server_config =
        <kernelci_server::config::ServerConfig as clap::Parser>::try_parse_from([
            "kernelci-server",
        ])
        .map_err(|e| UpError::Server(format!("server settings from the environment: {e}")))?;
    let secret = signing_secret(
        std::env::var("SECRET_KEY").ok(),
        &data.join("secret-key"),
        server_config.allow_weak_secret,
    )?;
    let password = match std::env::var("KCI_INITIAL_PASSWORD") {
        Ok(s) if !s.is_empty() => s,
        _ => persistent_secret(&data.join("admin-password"), || random_hex(16))?,
    };
    server_config.listen = opts.listen;
    // Links in the server's e-mails: PUBLIC_BASE_URL, else the address given to listen on
    // (configured, never taken from a request) when it names one host and port.
    if server_config.public_base_url.is_none()
        && !opts.listen.ip().is_unspecified()
        && opts.listen.port() != 0
    {
        server_config.public_base_url = Some(format!("http://{}", opts.listen));
    }
    server_config.database = Some(format!(
        "sqlite://{}",
        data.join("kernelci.sqlite").display()
    ));
    server_config.redis = None;
    server_config.secret_key = Some(secret);
    server_config.initial_password = Some(password.clone());
    let storage_dir = data.join("storage");
    std::fs::create_dir_all(&storage_dir).map_err(io(&storage_dir))?;
    server_config.storage_dir = Some(storage_dir);
    // The upload endpoint's token: what services and jobs present to store artifacts.
    let storage_token = match std::env::var("KCI_STORAGE_TOKEN") {
        Ok(s) if !s.trim().is_empty() => s,
        _ => persistent_secret(&data.join("storage-token"), || random_hex(24))?,
    };
    server_config.storage_token = Some(storage_token.clone());
    let app = kernelci_server::App::open(server_config)
        .await
        .map_err(|e| UpError::Server(e.to_string()))?;
    // The server stops last: after every service has finished its event and unsubscribed.
    let server_stop = Shutdown::new();
    let server_signal = server_stop.clone();
    let (addr, server) = kernelci_server::bind(app, opts.listen, async move {
        server_signal.wait().await;
    })
    .map_err(|e| UpError::Server(format!("cannot listen on {}: {e}", opts.listen)))?;
    let server = tokio::spawn(server);
    let url = format!("http://{addr}");
    let _ = writeln!(out, "API server: {url} (viewer: {url}/viewer)");

    let api = ApiClient::new(&url).map_err(|e| UpError::Service(e.to_string()))?;
    let admin = std::env::var("KCI_INITIAL_ADMIN_USERNAME").unwrap_or_else(|_| "admin".into());
    let token = api
        .login(&admin, &password)
        .await
        .map_err(|e| UpError::Service(format!("login as {admin}: {e}")))?;
    let api = api.with_token(token.clone());
    let _ = writeln!(
        out,
        "admin user: {admin} (password in {}; or set KCI_INITIAL_PASSWORD)",
        data.join("admin-password").display()
    );

    // --- configuration ---
    let config_dirs = if opts.demo {
        vec![prepare_demo(&data, &url, out)?]
    } else {
        opts.config.clone()
    };
    let config = PipelineConfig::load(&config_dirs).map_err(UpError::Config)?;
    for w in config.warnings() {
        let _ = writeln!(out, "config warning: {w}");
    }
    let counts = config.counts();
    let _ = writeln!(
        out,
        "config: {} ({} trees, {} jobs, {} runtimes, {} scheduler entries)",
        config_dirs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        counts.get("trees").copied().unwrap_or(0),
        counts.get("jobs").copied().unwrap_or(0),
        counts.get("runtimes").copied().unwrap_or(0),
        counts.get("scheduler").copied().unwrap_or(0),
    );
    let mut setup = ServiceSetup::new(settings, config, "DEFAULT");
    let services = service_options(&opts, &mut setup, &data).map_err(service_error)?;

    // --- storage (services and jobs) ---
    let storage_name = services.scheduler.storage_config.clone();
    let storage: Arc<dyn Storage> = match storage_name
        .as_ref()
        .and_then(|n| setup.config.storage.get(n))
    {
        Some(sc) => {
            let cred = storage_name
                .as_deref()
                .and_then(|n| setup.settings.storage_cred(n))
                .map(|s| s.expose().to_owned())
                .unwrap_or_else(|| storage_token.clone());
            kernelci::storage::from_config(sc, Some(&cred))
                .map_err(|e| UpError::Service(format!("storage {storage_name:?}: {e}")))?
        }
        None => {
            let dir = data.join("storage");
            Arc::new(
                kernelci::storage::LocalStorage::new(&dir, &format!("{url}/storage/"))
                    .map_err(|e| UpError::Service(format!("storage: {e}")))?,
            )
        }
    };

    // --- runtimes ---
    let jobs_dir = data.join("jobs");
    std::fs::create_dir_all(&jobs_dir).map_err(io(&jobs_dir))?;
    let kci_bin = opts
        .kci_bin
        .clone()
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .filter(|p| p.file_name().is_some_and(|n| n == "kci"))
        })
        .map(|p| p.display().to_string())
        .or_else(|| std::env::var("KCI_BIN").ok())
        .unwrap_or_else(|| "kci".into());
    let mut context = RuntimeContext::new(&jobs_dir)
        .with_templates(TemplateEngine::with_default_path(
            config_dirs.first().map(PathBuf::as_path),
        ))
        .with_storage(storage.clone())
        .with_job_env("KCI_API_TOKEN", token.clone())
        .with_job_env("KCI_STORAGE_CREDENTIALS", storage_token.clone())
        .with_job_env("KCI_BIN", kci_bin);
    if opts.holdoff.is_some() || opts.demo {
        let holdoff = services.tarball.holdoff.as_secs().to_string();
        context = context.with_job_env("KCI_KBUILD_HOLDOFF", holdoff);
    }
    let selection = if opts.runtimes.is_empty() {
        RuntimeSelection::All
    } else {
        RuntimeSelection::Names(opts.runtimes.clone())
    };
    let built = setup.build_runtimes(&selection, &context);
    for (name, e) in &built.failed {
        let _ = writeln!(out, "runtime {name}: not started: {e}");
    }
    let runtimes = built.runtimes;

    // --- services ---
    let setup = setup;
    let mut tasks: ServiceTasks = Vec::new();
    // Services stop on their own signal, given once the progress loop ends.
    let services_stop = Shutdown::new();
    let ctx = |name: &str| {
        ServiceContext::new(format!("kci-up-{name}"), api.clone())
            .with_shutdown(services_stop.clone())
    };
    let config = Arc::new(setup.config);
    let poll = services.trigger.poll_period;
    let trigger = Trigger::new(BuildTarget::from_config(&config), services.trigger);
    spawn_service(&mut tasks, &ctx, "trigger", move |c| async move {
        trigger.run(&c).await
    });

    let tarball = Tarball::new(
        BuildTarget::from_config(&config),
        storage.clone(),
        services.tarball,
    );
    spawn_service(&mut tasks, &ctx, "tarball", move |c| async move {
        tarball.run(&c).await
    });

    if runtimes.is_empty() {
        let _ = writeln!(out, "scheduler: no runtime could start; no job will run");
    } else {
        let names: Vec<String> = runtimes.iter().map(|r| r.name().to_owned()).collect();
        let scheduler = Scheduler::new(config.clone(), api.clone(), runtimes, services.scheduler)
            .map_err(|e| UpError::Service(format!("scheduler: {e}")))?;
        let _ = writeln!(out, "scheduler: runtimes {}", names.join(", "));
        spawn_service(&mut tasks, &ctx, "scheduler", move |c| async move {
            Arc::new(scheduler).run(&c).await
        });
    }

    for service in services.timeout {
        let mode = service.mode().to_string();
        spawn_service(&mut tasks, &ctx, &mode, move |c| async move {
            service.run(&c).await
        });
    }

    let tracker = services.regression;
    spawn_service(&mut tasks, &ctx, "regression", move |c| async move {
        tracker.run(&c).await
    });

    let retry = services.job_retry;
    spawn_service(&mut tasks, &ctx, "job-retry", move |c| async move {
        retry.run(&c).await
    });

    let reporter = services.reporter;
    spawn_service(&mut tasks, &ctx, "report", move |c| async move {
        reporter.run(&c).await
    });
    // The KCIDB bridge: to KCIDB_REST when set, else documents in <data>/kcidb/.
    let (kcidb, kcidb_to) =
        crate::cli::kcidb::up_bridge(&config, &setup.settings, &url, &data.join("kcidb"))
            .map_err(|e| UpError::Service(format!("kcidb bridge: {e}")))?;
    spawn_service(&mut tasks, &ctx, "kcidb", move |c| async move {
        kcidb.run(&c).await
    });
    let trigger_line = if poll.is_zero() {
        "trigger (one pass: set [trigger] poll_period or --poll-period to keep polling)".into()
    } else {
        format!("trigger (every {}s)", poll.as_secs())
    };
    let _ = writeln!(
        out,
        "services: {trigger_line}, tarball, scheduler, timeout/holdoff/closing, regression, job-retry, report, kcidb ({kcidb_to})"
    );

    // --- progress, until shutdown (or the first report) ---
    let mut checkout = None;
    let mut listener = Listener::new(api.clone(), ListenerConfig::new("node").promiscuous());
    if let Err(e) = listener.start().await {
        let _ = writeln!(out, "progress: cannot subscribe: {e}");
    }
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            ev = listener.next() => {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        let _ = writeln!(out, "progress: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let data = ev.event.data.clone();
                listener.ack(&ev);
                if opts.progress {
                    let _ = writeln!(out, "{}", progress_line(&data));
                }
                for (name, task) in &tasks {
                    if task.is_finished() && !failed.contains_key(name) {
                        failed.insert(name.clone(), "stopped".into());
                        if name == "trigger" && poll.is_zero() {
                            let _ = writeln!(out, "trigger: pass done (poll_period 0: one pass)");
                        } else {
                            let _ = writeln!(out, "service {name} stopped");
                        }
                    }
                }
                let kind = data.get("kind").and_then(Value::as_str);
                let state = data.get("state").and_then(Value::as_str);
                if kind == Some("checkout") && state == Some("done") {
                    let id = data.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                    // Let the reporter print first.
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    let _ = writeln!(out, "\nBrowse the results: {url}/viewer?node_id={id}");
                    checkout = Some(id);
                    if opts.exit_after_report {
                        shutdown.trigger();
                    }
                }
            }
        }
    }
    let _ = listener.close().await;
    services_stop.trigger();
    for (name, task) in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                let _ = writeln!(out, "service {name}: {e}");
            }
            Ok(Err(e)) => {
                let _ = writeln!(out, "service {name}: {e}");
            }
            Err(_) => {
                let _ = writeln!(out, "service {name}: did not stop within 10 s");
            }
        }
    }
    server_stop.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(UpSummary {
        url,
        checkout,
        token,
    })
}

/// The services `kci up` runs: each one's task under its name.
type ServiceTasks = Vec<(String, tokio::task::JoinHandle<Result<(), String>>)>;

/// Starts the service `name` as a task: `run` gets the service's context (from `ctx`) and
/// returns what the service does; its error becomes the task's message.
fn spawn_service<F, Fut, E>(
    tasks: &mut ServiceTasks,
    ctx: &impl Fn(&str) -> ServiceContext,
    name: &str,
    run: F,
) where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let service = run(ctx(name));
    let task = tokio::spawn(async move { service.await.map_err(|e| e.to_string()) });
    tasks.push((name.to_owned(), task));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_folder_and_the_demo_config_validate() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let config = PipelineConfig::load(&[&shipped]).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.jobs.contains_key("kbuild-gcc-x86_64"));
        assert_eq!(config.scheduler.len(), 1);
        let demo = PipelineConfig::from_yaml_str(
            "demo.yaml",
            &demo_config("file:///tmp/linux", "http://127.0.0.1:8001"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(demo.trees["demo"].url, "file:///tmp/linux");
        assert_eq!(demo.jobs.len(), 2);
        assert_eq!(demo.scheduler.len(), 2);
    }

    #[test]
    fn progress_lines_name_kind_commit_state_result_and_path() {
        let line = progress_line(&serde_json::json!({
            "op": "updated", "kind": "kbuild", "state": "available", "result": "pass",
            "path": ["checkout", "kbuild-demo-x86"],
            "data": {"kernel_revision": {"commit": "48c0ea45d4431a2ce6e782b89e0fcc8d08d426d5"}}
        }));
        assert!(line.starts_with("updated  kbuild     48c0ea45d443 available pass"));
        assert!(line.ends_with("checkout/kbuild-demo-x86"));
    }
}
