//! Start-up, shared by every service binary and by `kci up`: the settings and the YAML
//! configuration ([`ServiceSetup`]), from which each service's options are read
//! (`TriggerOptions::from_settings`, `SchedulerOptions::from_settings`, ...), the runtimes
//! ([`ServiceSetup::build_runtimes`]) and the process body ([`run_service`]). Both the
//! `kci-*` binaries and the all-in-one mode go through these, so their defaults cannot drift.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::service::{ServiceContext, ServiceError, ServiceResult};
use crate::client::ApiClient;
use crate::config::{PipelineConfig, Secret, Settings};
use crate::runtime::registry::{RuntimeContext, RuntimeCredentials, RuntimeEntry, RuntimeRegistry};
use crate::runtime::{Runtime, RuntimeError};
use crate::storage::Storage;

/// What a service reads at start-up (upstream `Service.__init__`): `kernelci.toml`
/// ([`Settings`], looked up in the service's section then `[DEFAULT]`) and the pipeline YAML
/// configuration (trees, build configs, API and storage entries), plus two layers of values
/// that are not in the file:
///
/// - overrides ([`ServiceSetup::set`]): command-line options; they win over the file;
/// - defaults ([`ServiceSetup::set_default`]): a deployment's own defaults (`kci up` puts its
///   work directories under its data directory); the file wins over them.
///
/// The options of each service are read from it by `from_settings`
/// (`TriggerOptions::from_settings(&setup)`), so a value means the same everywhere. One
/// setup serves several services: [`ServiceSetup::select`] switches the section.
#[derive(Debug)]
pub struct ServiceSetup {
    /// The settings.
    pub settings: Settings,
    /// The YAML configuration (empty when no directory was given).
    pub config: PipelineConfig,
    /// The service's settings section (`trigger`, `tarball`, `timeout`, ...).
    pub section: String,
    overrides: BTreeMap<(String, String), String>,
    defaults: BTreeMap<(String, String), String>,
}

impl ServiceSetup {
    /// A setup over loaded settings and configuration, for `section`.
    pub fn new(settings: Settings, config: PipelineConfig, section: &str) -> ServiceSetup {
        ServiceSetup {
            settings,
            config,
            section: section.to_owned(),
            overrides: BTreeMap::new(),
            defaults: BTreeMap::new(),
        }
    }

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
        for w in config.warnings() {
            tracing::warn!(warning = %w, "configuration");
        }
        Ok(ServiceSetup::new(settings, config, section))
    }

    /// Switches to another settings section (the overrides and defaults of each section stay).
    pub fn select(&mut self, section: &str) -> &mut ServiceSetup {
        section.clone_into(&mut self.section);
        self
    }

    /// Sets `key` of the current section to `value`, above the settings file (a command-line
    /// option). `None` leaves the key alone.
    pub fn set(&mut self, key: &str, value: Option<impl ToString>) -> &mut ServiceSetup {
        if let Some(v) = value {
            let k = (self.section.clone(), key.to_owned());
            self.overrides.insert(k, v.to_string());
        }
        self
    }

    /// Sets a flag of the current section when `on` (a command-line switch: off leaves the
    /// settings' value).
    pub fn set_flag(&mut self, key: &str, on: bool) -> &mut ServiceSetup {
        self.set(key, on.then_some("true"))
    }

    /// Gives `key` of the current section the value `value` when neither an override nor the
    /// settings file has one (a deployment's default).
    pub fn set_default(&mut self, key: &str, value: impl ToString) -> &mut ServiceSetup {
        let k = (self.section.clone(), key.to_owned());
        self.defaults.insert(k, value.to_string());
        self
    }

    /// [`Self::set_default`] when `on` (e.g. the defaults of a demo deployment); off leaves the
    /// key alone.
    pub fn set_default_when(
        &mut self,
        on: bool,
        key: &str,
        value: impl ToString,
    ) -> &mut ServiceSetup {
        if on {
            self.set_default(key, value);
        }
        self
    }

    fn layer(&self, layer: &BTreeMap<(String, String), String>, key: &str) -> Option<String> {
        layer.get(&(self.section.clone(), key.to_owned())).cloned()
    }

    /// A value: `cli` when given, else an override, else `[<section>] key`, else `[DEFAULT]
    /// key`, else a default.
    pub fn get(&self, cli: Option<String>, key: &str) -> Option<String> {
        cli.or_else(|| self.layer(&self.overrides, key))
            .or_else(|| self.settings.get_str(&self.section, key))
            .or_else(|| self.layer(&self.defaults, key))
    }

    /// Like [`ServiceSetup::get`], parsed; an error names the section and key.
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
        let parse = |v: String| {
            v.trim()
                .parse::<T>()
                .map(Some)
                .map_err(|e| ServiceError::Config(format!("[{}] {key} = {v:?}: {e}", self.section)))
        };
        if let Some(v) = self.layer(&self.overrides, key) {
            return parse(v);
        }
        match self
            .settings
            .get_parsed(&self.section, key)
            .map_err(|e| ServiceError::Config(e.to_string()))?
        {
            Some(v) => Ok(Some(v)),
            None => self.layer(&self.defaults, key).map_or(Ok(None), parse),
        }
    }

    /// A flag: set on the command line, or true in an override, the settings or a default.
    pub fn flag(&self, cli: bool, key: &str) -> ServiceResult<bool> {
        if cli {
            return Ok(true);
        }
        let parse = |v: String| match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            other => Err(ServiceError::Config(format!(
                "[{}] {key} = {other:?}: not a boolean",
                self.section
            ))),
        };
        if let Some(v) = self.layer(&self.overrides, key) {
            return parse(v);
        }
        match self
            .settings
            .get_bool(&self.section, key)
            .map_err(|e| ServiceError::Config(e.to_string()))?
        {
            Some(v) => Ok(v),
            None => self.layer(&self.defaults, key).map_or(Ok(false), parse),
        }
    }

    /// A duration in seconds (`key`, else `default`); negative or non-finite values are a
    /// configuration error naming the key.
    pub fn seconds(&self, key: &str, default: f64) -> ServiceResult<Duration> {
        let secs = self.get_parsed::<f64>(None, key)?.unwrap_or(default);
        Duration::try_from_secs_f64(secs).map_err(|_| {
            ServiceError::Config(format!(
                "[{}] {key} = {secs}: not a number of seconds",
                self.section
            ))
        })
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

/// Which runtimes of the `runtimes:` section a scheduler starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeSelection {
    /// Every runtime of the configuration (`kci up` without `--runtime`).
    All,
    /// These runtimes, by name (`--runtimes`).
    Names(Vec<String>),
    /// Every runtime of these lab types (`--runtime-type`).
    LabTypes(Vec<String>),
}

impl RuntimeSelection {
    /// Upstream's scheduler options: `--runtimes` wins over `--runtime-type`; neither given
    /// selects nothing.
    pub fn from_args(names: &[String], lab_types: &[String]) -> RuntimeSelection {
        if names.is_empty() && !lab_types.is_empty() {
            RuntimeSelection::LabTypes(lab_types.to_vec())
        } else {
            RuntimeSelection::Names(names.to_vec())
        }
    }

    /// Whether the runtime `name` of type `lab_type` is selected.
    pub fn selects(&self, name: &str, lab_type: &str) -> bool {
        match self {
            RuntimeSelection::All => true,
            RuntimeSelection::Names(names) => names.iter().any(|n| n == name),
            RuntimeSelection::LabTypes(types) => types.iter().any(|t| t == lab_type),
        }
    }
}

/// The runtimes [`ServiceSetup::build_runtimes`] built, and the ones it could not.
#[derive(Debug, Default)]
pub struct BuiltRuntimes {
    /// The runtimes, in the order of the `runtimes:` section.
    pub runtimes: Vec<Arc<dyn Runtime>>,
    /// The selected runtimes that could not be built, with why.
    pub failed: Vec<(String, RuntimeError)>,
}

impl BuiltRuntimes {
    /// The runtimes, or a configuration error naming the first that failed (a service binary
    /// does not start half-configured).
    pub fn all_or_error(self) -> ServiceResult<Vec<Arc<dyn Runtime>>> {
        match self.failed.into_iter().next() {
            Some((name, e)) => Err(ServiceError::Config(format!("runtime {name}: {e}"))),
            None => Ok(self.runtimes),
        }
    }
}

impl ServiceSetup {
    /// The credential of the storage named by the `storage_config` setting
    /// (`[storage.<name>] storage_cred`), which jobs get as `KCI_STORAGE_CREDENTIALS`.
    pub fn storage_credential(&self) -> Option<Secret> {
        self.get(None, "storage_config")
            .and_then(|name| self.settings.storage_cred(&name))
    }

    /// Builds the selected runtimes of the YAML `runtimes:` section with `context`, each with
    /// its `[runtime.<name>]` credentials, through the built-in [`RuntimeRegistry`].
    pub fn build_runtimes(
        &self,
        selection: &RuntimeSelection,
        context: &RuntimeContext,
    ) -> BuiltRuntimes {
        self.build_runtimes_with(&RuntimeRegistry::new(), selection, context)
    }

    /// Like [`ServiceSetup::build_runtimes`] with a registry that knows custom lab types.
    pub fn build_runtimes_with(
        &self,
        registry: &RuntimeRegistry,
        selection: &RuntimeSelection,
        context: &RuntimeContext,
    ) -> BuiltRuntimes {
        let mut built = BuiltRuntimes::default();
        for (name, rc) in &self.config.runtimes {
            if !selection.selects(name, &rc.lab_type) {
                continue;
            }
            // The runtime parses its own keys: the scheduler's (`name`, `rules`) are not its.
            let entry = RuntimeEntry::new(name, &rc.lab_type, rc.settings.clone());
            let credentials =
                RuntimeCredentials::from_settings(name, |s, k| self.settings.get_str(s, k));
            match registry.build(&entry, &credentials, context) {
                Ok(r) => built.runtimes.push(r),
                Err(e) => built.failed.push((name.clone(), e)),
            }
        }
        built
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
