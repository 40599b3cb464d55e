//! What every pipeline service binary (`kci-trigger`, `kci-tarball`, `kci-scheduler`, ...)
//! shares: the common options ([`ServiceArgs`], flattened into each binary's clap parser) and
//! the process entry point ([`service_main`]: TLS provider, logs, runtime, exit code).

use std::future::Future;
use std::path::PathBuf;

use kernelci::pipeline::service::{ServiceContext, ServiceResult, ServiceSetup, run_service};

/// The options every service takes. Each binary flattens it:
///
/// ```
/// use clap::Parser;
/// use kernelci_bins::service::ServiceArgs;
///
/// #[derive(Parser)]
/// struct Args {
///     #[command(flatten)]
///     service: ServiceArgs,
///     /// A service-specific option.
///     #[arg(long)]
///     promisc: bool,
/// }
///
/// let a = Args::parse_from(["kci-x", "--api-url", "http://localhost:8001", "--promisc"]);
/// assert_eq!(a.service.api_url.as_deref(), Some("http://localhost:8001"));
/// ```
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceArgs {
    /// The settings file (default: $KCI_SETTINGS, ./kernelci.toml, ...).
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// YAML configuration directories or files (repeatable; default: ./config when present).
    #[arg(short = 'c', long = "yaml-config")]
    pub yaml_config: Vec<PathBuf>,
    /// The API URL (instead of the api_config entry).
    #[arg(long)]
    pub api_url: Option<String>,
    /// The service name: durable subscriber ids are `<name>:<channel>` (default: the `name`
    /// setting, else the service's own default).
    #[arg(long)]
    pub name: Option<String>,
    /// Serve GET /health on this port (default: the `health_port` setting).
    #[arg(long)]
    pub health_port: Option<u16>,
}

impl ServiceArgs {
    /// Loads the settings (section `section`) and the YAML configuration.
    pub fn setup(&self, section: &str) -> ServiceResult<ServiceSetup> {
        ServiceSetup::load(section, self.settings.as_deref(), &self.yaml_config)
    }

    /// The service context: `--name`, else the `name` setting, else `default_name`, else the
    /// settings section.
    pub fn context(
        &self,
        setup: &ServiceSetup,
        default_name: Option<&str>,
    ) -> ServiceResult<ServiceContext> {
        let name = setup
            .get(self.name.clone(), "name")
            .or_else(|| default_name.map(str::to_owned));
        setup.context(name, self.api_url.as_deref())
    }

    /// The health port: `--health-port`, else the `health_port` setting.
    pub fn health_port(&self, setup: &ServiceSetup) -> ServiceResult<Option<u16>> {
        setup.get_parsed(self.health_port, "health_port")
    }

    /// What a service starts with: its [`Self::context`] and its [`Self::health_port`].
    pub fn start(
        &self,
        setup: &ServiceSetup,
        default_name: Option<&str>,
    ) -> ServiceResult<(ServiceContext, Option<u16>)> {
        let ctx = self.context(setup, default_name)?;
        Ok((ctx, self.health_port(setup)?))
    }
}

/// The command line of a service that follows other owners' nodes on request: [`ServiceArgs`]
/// and `--promisc` (`kci-job-retry`, `kci-regression`).
#[derive(Debug, Clone, Default, clap::Parser)]
pub struct FollowArgs {
    /// The common options.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Follow every owner's nodes, not only this user's.
    #[arg(long)]
    pub promisc: bool,
}

impl FollowArgs {
    /// Parses the process's command line; `about` is the binary's one-line description
    /// (`--help`). Bad arguments print the usage and exit with status 2.
    pub fn parse_with_about(about: &'static str) -> FollowArgs {
        use clap::{CommandFactory, FromArgMatches};
        let matches = FollowArgs::command()
            .about(about)
            .long_about(None)
            .get_matches();
        FollowArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// Loads the settings (section `section`) and the YAML configuration, with the `promisc`
    /// flag set from `--promisc`.
    pub fn setup(&self, section: &str) -> ServiceResult<ServiceSetup> {
        let mut setup = self.service.setup(section)?;
        setup.set_flag("promisc", self.promisc);
        Ok(setup)
    }

    /// Runs a follow service: loads settings section `section`, builds the service with
    /// `build`, and runs it with `run` (given the service and its context) under
    /// [`run_service`] until it stops; returns the exit code.
    pub async fn run<S, Fut>(
        &self,
        section: &str,
        build: impl FnOnce(&ServiceSetup) -> ServiceResult<S>,
        run: impl FnOnce(S, ServiceContext) -> Fut,
    ) -> ServiceResult<i32>
    where
        Fut: Future<Output = ServiceResult<()>>,
    {
        let setup = self.setup(section)?;
        let service = build(&setup)?;
        let (ctx, port) = self.service.start(&setup, None)?;
        Ok(run_service(&ctx, port, || run(service, ctx.clone())).await)
    }
}

/// Prepares a binary's process: installs the TLS provider (ring) and logs to standard error
/// with the `RUST_LOG` filter, else `default_filter`.
pub fn init_process(default_filter: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a service binary: installs the TLS provider, logs to standard error (`RUST_LOG`,
/// default `info`), runs `body` on a multi-threaded runtime and exits with its code (2 when it
/// could not start: the error is logged).
pub fn service_main<Fut>(binary: &str, body: impl FnOnce() -> Fut) -> !
where
    Fut: Future<Output = ServiceResult<i32>>,
{
    init_process("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "{binary}: cannot start the async runtime");
            std::process::exit(2)
        }
    };
    let code = runtime.block_on(body()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "{binary} cannot start");
        2
    });
    // Background tasks (a long-poll in flight) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code)
}
