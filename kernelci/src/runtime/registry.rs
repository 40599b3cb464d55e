//! The runtime registry: builds an `Arc<dyn Runtime>` from a runtime YAML entry.
//!
//! Like bollard's transports, the set of built-in runtimes is closed ([`LabType`]: shell,
//! docker, kubernetes, lava) and there is one escape hatch: an application registers a
//! factory for its own `lab_type` with [`RuntimeRegistry::register`] (see
//! `examples/custom_runtime.rs`).
//!
//! ```
//! use kernelci::runtime::registry::{RuntimeContext, RuntimeCredentials, RuntimeEntry, RuntimeRegistry};
//! let entry = RuntimeEntry::from_value("shell", &serde_json::json!({"lab_type": "shell"})).unwrap();
//! let ctx = RuntimeContext::new(std::env::temp_dir().join("kci-doc-output"));
//! let registry = RuntimeRegistry::new();
//! let runtime = registry.build(&entry, &RuntimeCredentials::default(), &ctx).unwrap();
//! assert_eq!(runtime.lab_type(), "shell");
//! let entry = RuntimeEntry::from_value("lab-x", &serde_json::json!({"lab_type": "pigeon"})).unwrap();
//! let err = registry.build(&entry, &RuntimeCredentials::default(), &ctx).unwrap_err();
//! assert!(err.message.contains("lab-x"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::template::TemplateEngine;
use super::{Runtime, RuntimeError, RuntimeErrorKind};
/// The secrets of one runtime (`[runtime.<name>]`): one type shared with the settings
/// ([`crate::config::Settings::runtime_credentials`]).
pub use crate::config::RuntimeCredentials;
use crate::storage::Storage;

/// The built-in lab types, plus any other name (a custom runtime).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabType {
    /// A local process per job (`ShellRuntime`).
    Shell,
    /// A container per job (feature `docker`).
    Docker,
    /// A `batch/v1` Job per job (feature `kubernetes`).
    Kubernetes,
    /// A LAVA lab (feature `lava`).
    Lava,
    /// Anything else: a factory registered by the application.
    Custom(String),
}

impl LabType {
    /// Parses a `lab_type` value.
    pub fn parse(s: &str) -> LabType {
        match s {
            "shell" => LabType::Shell,
            "docker" => LabType::Docker,
            "kubernetes" => LabType::Kubernetes,
            "lava" | "legacy.lava_rest" | "legacy.lava_xmlrpc" => LabType::Lava,
            other => LabType::Custom(other.to_owned()),
        }
    }

    /// The canonical name.
    pub fn as_str(&self) -> &str {
        match self {
            LabType::Shell => "shell",
            LabType::Docker => "docker",
            LabType::Kubernetes => "kubernetes",
            LabType::Lava => "lava",
            LabType::Custom(s) => s,
        }
    }

    /// The cargo feature of `kernelci` that builds this lab type in, for built-ins.
    pub fn feature(&self) -> Option<&'static str> {
        match self {
            LabType::Docker => Some("docker"),
            LabType::Kubernetes => Some("kubernetes"),
            LabType::Lava => Some("lava"),
            LabType::Shell | LabType::Custom(_) => None,
        }
    }
}

impl fmt::Display for LabType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the runtimes YAML (`runtimes: {<name>: {lab_type, rules?, ...}}`).
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeEntry {
    /// The runtime name (the YAML key).
    pub name: String,
    /// The `lab_type` as written.
    pub lab_type: String,
    /// Every other key of the entry (`rules` and `filters` removed: the scheduler owns them).
    /// Each runtime parses its own keys from here.
    pub settings: Map<String, Value>,
}

impl RuntimeEntry {
    /// An entry from its parts.
    pub fn new(name: &str, lab_type: &str, settings: Map<String, Value>) -> RuntimeEntry {
        RuntimeEntry {
            name: name.to_owned(),
            lab_type: lab_type.to_owned(),
            settings,
        }
    }

    /// Parses an entry from its YAML/JSON value; errors name the runtime.
    pub fn from_value(name: &str, value: &Value) -> Result<RuntimeEntry, RuntimeError> {
        let map = value.as_object().ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::Config,
                format!("runtime {name}: the entry must be a map"),
            )
        })?;
        let lab_type = match map.get("lab_type") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Config,
                    format!("runtime {name}: lab_type must be a string, not {other}"),
                ));
            }
            None => {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Config,
                    format!("runtime {name}: missing lab_type"),
                ));
            }
        };
        let settings = map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "lab_type" | "rules" | "filters"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(RuntimeEntry {
            name: name.to_owned(),
            lab_type,
            settings,
        })
    }

    /// Parses the settings into a runtime's typed config, with errors naming the runtime and
    /// the key.
    pub fn parse_settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, RuntimeError> {
        serde_path_to_error::deserialize(Value::Object(self.settings.clone())).map_err(|e| {
            RuntimeError::new(
                RuntimeErrorKind::Config,
                format!("runtime {} (lab_type {}): {e}", self.name, self.lab_type),
            )
        })
    }
}

/// What every runtime may need besides its own entry.
#[derive(Clone)]
pub struct RuntimeContext {
    /// The job templates.
    pub templates: Arc<TemplateEngine>,
    /// Where job definitions and per-job work directories go (`[scheduler] output`).
    pub output_dir: PathBuf,
    /// The default storage (pull-based labs upload definitions there).
    pub storage: Option<Arc<dyn Storage>>,
    /// Environment variables given to every job the runtime starts (`KCI_API_TOKEN`,
    /// `KCI_STORAGE_CREDENTIALS`, `KCI_BIN`, ...), on top of the inherited environment.
    pub job_env: BTreeMap<String, String>,
}

impl fmt::Debug for RuntimeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeContext")
            .field("templates", &self.templates.search_path())
            .field("output_dir", &self.output_dir)
            .field("storage", &self.storage)
            .field("job_env", &self.job_env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RuntimeContext {
    /// A context with upstream's template search path, `output_dir`, no storage and no extra
    /// job environment.
    pub fn new(output_dir: impl Into<PathBuf>) -> RuntimeContext {
        RuntimeContext {
            templates: Arc::new(TemplateEngine::with_default_path(None)),
            output_dir: output_dir.into(),
            storage: None,
            job_env: BTreeMap::new(),
        }
    }

    /// Uses these templates.
    pub fn with_templates(mut self, templates: TemplateEngine) -> RuntimeContext {
        self.templates = Arc::new(templates);
        self
    }

    /// Uses this storage.
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> RuntimeContext {
        self.storage = Some(storage);
        self
    }

    /// Adds an environment variable for every job.
    pub fn with_job_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.job_env.insert(key.into(), value.into());
        self
    }
}

/// Builds a runtime from its entry, credentials and context.
pub type RuntimeFactory = Arc<
    dyn Fn(
            &RuntimeEntry,
            &RuntimeCredentials,
            &RuntimeContext,
        ) -> Result<Arc<dyn Runtime>, RuntimeError>
        + Send
        + Sync,
>;

/// `lab_type` → factory.
#[derive(Clone)]
pub struct RuntimeRegistry {
    factories: BTreeMap<String, RuntimeFactory>,
}

impl fmt::Debug for RuntimeRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeRegistry")
            .field("lab_types", &self.lab_types())
            .finish()
    }
}

impl Default for RuntimeRegistry {
    fn default() -> Self {
        RuntimeRegistry::new()
    }
}

impl RuntimeRegistry {
    /// A registry with every built-in runtime of this build ([`register_builtins`]).
    pub fn new() -> RuntimeRegistry {
        let mut registry = RuntimeRegistry::empty();
        register_builtins(&mut registry);
        registry
    }

    /// A registry without any runtime.
    pub fn empty() -> RuntimeRegistry {
        RuntimeRegistry {
            factories: BTreeMap::new(),
        }
    }

    /// Registers (or replaces) the factory of `lab_type`.
    pub fn register<F>(&mut self, lab_type: &str, factory: F) -> &mut Self
    where
        F: Fn(
                &RuntimeEntry,
                &RuntimeCredentials,
                &RuntimeContext,
            ) -> Result<Arc<dyn Runtime>, RuntimeError>
            + Send
            + Sync
            + 'static,
    {
        self.factories
            .insert(lab_type.to_owned(), Arc::new(factory) as RuntimeFactory);
        self
    }

    /// The registered lab types.
    pub fn lab_types(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Builds the runtime of `entry`. An unknown `lab_type` is a [`RuntimeErrorKind::Config`]
    /// error naming the runtime, the lab type and what is known (or the cargo feature a
    /// built-in needs).
    pub fn build(
        &self,
        entry: &RuntimeEntry,
        credentials: &RuntimeCredentials,
        context: &RuntimeContext,
    ) -> Result<Arc<dyn Runtime>, RuntimeError> {
        let lab_type = LabType::parse(&entry.lab_type);
        let factory = self
            .factories
            .get(&entry.lab_type)
            .or_else(|| self.factories.get(lab_type.as_str()));
        match factory {
            Some(factory) => factory(entry, credentials, context),
            None => {
                let hint = match lab_type.feature() {
                    Some(feature) => format!(
                        "this build of kernelci lacks the cargo feature {feature:?} that provides it"
                    ),
                    None => format!(
                        "known lab types: {}; register a custom one with RuntimeRegistry::register",
                        self.lab_types().join(", ")
                    ),
                };
                Err(RuntimeError::new(
                    RuntimeErrorKind::Config,
                    format!(
                        "runtime {}: unknown lab_type {:?} ({hint})",
                        entry.name, entry.lab_type
                    ),
                ))
            }
        }
    }

    /// Builds every entry of a runtimes map (`name → entry value`), with credentials from
    /// `credentials(name)`. Stops at the first error.
    pub fn build_all(
        &self,
        entries: &Map<String, Value>,
        credentials: impl Fn(&str) -> RuntimeCredentials,
        context: &RuntimeContext,
    ) -> Result<BTreeMap<String, Arc<dyn Runtime>>, RuntimeError> {
        let mut out = BTreeMap::new();
        for (name, value) in entries {
            let entry = RuntimeEntry::from_value(name, value)?;
            let runtime = self.build(&entry, &credentials(name), context)?;
            out.insert(name.clone(), runtime);
        }
        Ok(out)
    }
}

/// Registers the built-in runtimes compiled into this build.
///
/// Hook point: each feature-gated runtime adds one line here, e.g.
/// `#[cfg(feature = "docker")] registry.register("docker", super::docker::factory);`.
pub fn register_builtins(registry: &mut RuntimeRegistry) {
    #[cfg(unix)]
    registry.register("shell", super::shell::factory);
    // --- feature-gated built-ins (docker, kubernetes, lava) register below this line ---
    #[cfg(feature = "lava")]
    registry.register("lava", super::lava::factory);
    #[cfg(feature = "docker")]
    registry.register("docker", super::docker::factory);
    #[cfg(feature = "kubernetes")]
    registry.register("kubernetes", super::kubernetes::factory);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_keep_type_keys_and_drop_rules() {
        let entry = RuntimeEntry::from_value(
            "lava-x",
            &json!({"lab_type": "lava", "url": "https://lava/", "rules": {"tree": ["!android"]}}),
        )
        .expect("entry");
        assert_eq!(entry.lab_type, "lava");
        assert_eq!(entry.settings.get("url"), Some(&json!("https://lava/")));
        assert!(!entry.settings.contains_key("rules"));
        let err = RuntimeEntry::from_value("x", &json!({"url": 1})).expect_err("no lab_type");
        assert!(err.message.contains("runtime x: missing lab_type"));
        assert_eq!(err.kind, RuntimeErrorKind::Config);
    }

    #[test]
    fn unknown_and_feature_gated_lab_types_are_clear_errors() {
        let registry = RuntimeRegistry::new();
        assert!(registry.lab_types().contains(&"shell"));
        let ctx = RuntimeContext::new(std::env::temp_dir());
        let creds = RuntimeCredentials::default();
        let err = registry
            .build(
                &RuntimeEntry::new("my-lab", "pigeon", Map::new()),
                &creds,
                &ctx,
            )
            .expect_err("unknown");
        assert!(err.message.contains("my-lab") && err.message.contains("pigeon"));
        if !registry.lab_types().contains(&"docker") {
            let err = registry
                .build(&RuntimeEntry::new("d", "docker", Map::new()), &creds, &ctx)
                .expect_err("gated");
            assert!(
                err.message.contains("feature \"docker\""),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn credentials_come_from_the_runtime_section() {
        let creds = RuntimeCredentials::from_settings("lava-x", |section, key| {
            (section == "runtime.lava-x" && key == "runtime_token").then(|| "t0k".to_owned())
        });
        assert_eq!(creds.token(), Some("t0k"));
        assert!(!format!("{creds:?}").contains("t0k"));
    }
}
