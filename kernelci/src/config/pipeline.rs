//! The typed pipeline configuration (upstream `config/*.yaml`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::source::{self, KeyPath, KeySeg, Sources};
use super::{ConfigError, ConfigErrorKind, ConfigErrors, Origin, validate};
use crate::storage::StorageConfig;

/// One API instance (`api:` map entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiConfig {
    /// The entry name (the key in the `api:` map).
    #[serde(default, skip_deserializing)]
    pub name: String,
    /// Base URL, e.g. `http://172.17.0.1:8001`.
    pub url: String,
    /// API version path (`latest`).
    #[serde(default = "default_api_version")]
    pub version: String,
    /// Request timeout in seconds (60).
    #[serde(default = "default_api_timeout")]
    pub timeout: f64,
}

fn default_api_version() -> String {
    "latest".into()
}
fn default_api_timeout() -> f64 {
    60.0
}

/// A kernel git tree (`trees:` map entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// The tree name (the key).
    #[serde(default, skip_deserializing)]
    pub name: String,
    /// The git URL.
    pub url: String,
}

/// A tree and branch a build config refers to (`reference:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceBranch {
    /// Tree name.
    pub tree: String,
    /// Branch name.
    pub branch: String,
}

/// A tree/branch to follow (`build_configs:` map entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildConfig {
    /// The build config id (the key), e.g. `next_pending-fixes`.
    #[serde(default, skip_deserializing)]
    pub name: String,
    /// The tree name (a key of `trees`).
    pub tree: String,
    /// The branch (or a NIPA JSON URL).
    pub branch: String,
    /// Architectures to build (empty: all).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// How often at most to test it (`[Nd][Nh][Nm]`).
    #[serde(default)]
    pub frequency: Option<String>,
    /// The tree priority (LAVA queue priority and queue gate).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Legacy build variants (parsed, unused by the modern pipeline).
    #[serde(default)]
    pub variants: Map<String, Value>,
    /// The reference tree/branch for comparisons.
    #[serde(default)]
    pub reference: Option<ReferenceBranch>,
}

/// A kernel config fragment (`fragments:` map entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fragment {
    /// The fragment name (the key).
    #[serde(default, skip_deserializing)]
    pub name: String,
    /// The fragment file path in the kernel tree.
    pub path: String,
    /// `CONFIG_X=y` lines written into the fragment file.
    #[serde(default)]
    pub configs: Vec<String>,
    /// A defconfig target this fragment needs.
    #[serde(default)]
    pub defconfig: Option<String>,
}

/// A job or tree priority: `low`, `medium`, `high` or a number from 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// A number from 0 to 100.
    Value(u8),
}

impl Priority {
    /// The scheduler's base priority (queue gate and LAVA priority of pipeline jobs):
    /// high = 60, medium = 40, low = 20, numbers as they are.
    pub fn base(self) -> u8 {
        match self {
            Priority::Low => 20,
            Priority::Medium => 40,
            Priority::High => 60,
            Priority::Value(v) => v,
        }
    }

    /// Parses `low`, `medium`, `high` or a number from 0 to 100.
    pub fn parse(value: &Value) -> Result<Priority, String> {
        match value {
            Value::String(s) => match s.as_str() {
                "low" => Ok(Priority::Low),
                "medium" => Ok(Priority::Medium),
                "high" => Ok(Priority::High),
                other => other
                    .parse::<i64>()
                    .map_err(|_| {
                        format!("invalid priority {other:?}: expected low, medium, high or 0..100")
                    })
                    .and_then(|n| Priority::parse(&Value::from(n))),
            },
            Value::Number(n) => match n.as_i64() {
                Some(v @ 0..=100) => Ok(Priority::Value(v as u8)),
                _ => Err(format!(
                    "invalid priority {n}: a number must be from 0 to 100"
                )),
            },
            other => Err(format!(
                "invalid priority {other}: expected low, medium, high or 0..100"
            )),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priority::Low => f.write_str("low"),
            Priority::Medium => f.write_str("medium"),
            Priority::High => f.write_str("high"),
            Priority::Value(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Priority::Value(v) => s.serialize_u8(*v),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Priority::parse(&v).map_err(de::Error::custom)
    }
}

/// A `min_version`/`max_version` rule: `{version, patchlevel}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRule {
    /// The major version (6 in 6.7).
    pub version: u32,
    /// The patch level (7 in 6.7).
    pub patchlevel: u32,
}

/// One rule of a [`Rules`] map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RuleEntry {
    /// `min_version`/`max_version` (any key ending in `_version`).
    Version(VersionRule),
    /// Allowed values, and denied ones prefixed with `!` (`tree:branch` combos for `tree` and
    /// `branch`).
    Values(Vec<String>),
}

/// Rules on a scheduler entry, job, runtime or platform: `field → [values]` (see
/// `spec/kernelci-pipeline.md` §4.1 and §4.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Rules(pub BTreeMap<String, RuleEntry>);

impl Rules {
    /// The values of a value rule (empty when absent or a version rule).
    pub fn values(&self, key: &str) -> &[String] {
        match self.0.get(key) {
            Some(RuleEntry::Values(v)) => v,
            _ => &[],
        }
    }

    /// The version of a version rule.
    pub fn version(&self, key: &str) -> Option<VersionRule> {
        match self.0.get(key) {
            Some(RuleEntry::Version(v)) => Some(*v),
            _ => None,
        }
    }

    /// Parses a rules mapping, with a message naming the bad key.
    pub fn parse(value: &Value) -> Result<Rules, String> {
        let map = match value {
            Value::Null => return Ok(Rules::default()),
            Value::Object(m) => m,
            other => return Err(format!("rules must be a mapping, not {}", kind_of(other))),
        };
        let mut rules = BTreeMap::new();
        for (key, v) in map {
            let entry = if key.ends_with("_version") {
                let rule = serde_json::from_value::<VersionRule>(v.clone()).map_err(|e| {
                    format!("{key}: expected {{version: <int>, patchlevel: <int>}}, got {v} ({e})")
                })?;
                RuleEntry::Version(rule)
            } else {
                let items: Vec<&Value> = match v {
                    Value::Array(items) => items.iter().collect(),
                    Value::Null => Vec::new(),
                    scalar => vec![scalar],
                };
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => values.push(s.clone()),
                        Value::Number(n) => values.push(n.to_string()),
                        Value::Bool(b) => values.push(if *b { "True" } else { "False" }.into()),
                        other => {
                            return Err(format!(
                                "{key}: rule values must be strings, not {}",
                                kind_of(other)
                            ));
                        }
                    }
                }
                RuleEntry::Values(values)
            };
            rules.insert(key.clone(), entry);
        }
        Ok(Rules(rules))
    }
}

impl<'de> Deserialize<'de> for Rules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Rules::parse(&v).map_err(de::Error::custom)
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A job (`jobs:` map entry). Unknown keys are rejected, as upstream does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The job name (the key).
    #[serde(default, skip_deserializing)]
    pub name: String,
    /// The template file (`kbuild.jinja2`, `generic.jinja2`, ...).
    pub template: String,
    /// The node kind the job creates: `kbuild`, `job`, `test`, `process` (`node` by default).
    #[serde(default = "default_job_kind")]
    pub kind: String,
    /// The base job name (for variants).
    #[serde(default)]
    pub base_name: Option<String>,
    /// The container image; may hold `{image_prefix}`.
    #[serde(default)]
    pub image: Option<String>,
    /// Template parameters; their strings are formatted with the job's own attributes and
    /// params once at load time.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Rules checked on the job node.
    #[serde(default)]
    pub rules: Option<Rules>,
    /// The KCIDB test suite name.
    #[serde(default)]
    pub kcidb_test_suite: Option<String>,
    /// The job priority.
    #[serde(default)]
    pub priority: Option<Priority>,
}

fn default_job_kind() -> String {
    "node".into()
}

impl JobConfig {
    /// `params.frequency` as a duration, when set and valid.
    pub fn frequency(&self) -> Option<std::time::Duration> {
        self.params
            .get("frequency")
            .and_then(Value::as_str)
            .and_then(|f| super::parse_frequency(f).ok())
    }
}

/// A platform (`platforms:` map entry): where test jobs run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformConfig {
    /// The platform name (the key).
    #[serde(default, skip_deserializing)]
    pub name: String,
    /// The architecture (`x86_64`).
    #[serde(default = "default_arch")]
    pub arch: String,
    /// The base name; the device type is this, or the name.
    #[serde(default)]
    pub base_name: Option<String>,
    /// The boot method (`grub`, `u-boot`, `depthcharge`, ...).
    #[serde(default = "default_boot_method")]
    pub boot_method: String,
    /// Extra LAVA job context.
    #[serde(default)]
    pub context: Option<Value>,
    /// Device tree compatibles.
    #[serde(default)]
    pub compatible: Option<Vec<String>>,
    /// Device tree blob path(s), relative to the build's `dtbs/`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub dtb: Option<Vec<String>>,
    /// Flash image.
    #[serde(default)]
    pub flash_image: Option<String>,
    /// The machine family (`x86`).
    #[serde(default = "default_mach")]
    pub mach: String,
    /// Template parameters of this platform.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Rules checked on the job node.
    #[serde(default)]
    pub rules: Option<Rules>,
    /// Any other keys, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_arch() -> String {
    "x86_64".into()
}
fn default_boot_method() -> String {
    "grub".into()
}
fn default_mach() -> String {
    "x86".into()
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(vec![s])),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(de::Error::custom(format!(
                    "expected a string or a list of strings, found {}",
                    kind_of(&other)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(de::Error::custom(format!(
            "expected a string or a list of strings, found {}",
            kind_of(&other)
        ))),
    }
}

impl PlatformConfig {
    /// A platform with every attribute at its default (what the bare `docker:` entries give).
    pub fn bare(name: &str) -> PlatformConfig {
        PlatformConfig {
            name: name.to_owned(),
            arch: default_arch(),
            base_name: None,
            boot_method: default_boot_method(),
            context: None,
            compatible: None,
            dtb: None,
            flash_image: None,
            mach: default_mach(),
            params: Map::new(),
            rules: None,
            extra: Map::new(),
        }
    }

    /// The device type: `base_name`, or the name.
    pub fn device_type(&self) -> &str {
        self.base_name.as_deref().unwrap_or(&self.name)
    }

    /// The platform's attributes as a JSON object (the runtime's `platform_config`), with
    /// `name` included.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// Upstream `Platform.format_params`: formats every string of `params` with the
    /// platform's attributes (not `params` or `rules`), `brarch`/`crosarch`/`debarch`/`karch`
    /// derived from its arch, and `extra`.
    pub fn format_params(&self, params: &Value, extra: &Map<String, Value>) -> Value {
        let mut map = self.to_map();
        map.remove("params");
        map.remove("rules");
        for (k, v) in crate::runtime::arch_names(&self.arch) {
            map.insert(k.to_owned(), Value::String(v));
        }
        map.extend(extra.clone());
        super::format_params(params, &map)
    }
}

/// A runtime (`runtimes:` map entry). Each runtime implementation parses its own keys from
/// [`RuntimeConfig::settings`] (see `kernelci::runtime`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeConfig {
    /// The runtime name (the key).
    pub name: String,
    /// `shell`, `docker`, `kubernetes`, `lava`, `pull_labs`, or a custom type.
    pub lab_type: String,
    /// Rules checked on the job node.
    pub rules: Option<Rules>,
    /// Every other key of the entry (`url`, `context`, `priority_min`, ...), as written.
    pub settings: Map<String, Value>,
}

impl<'de> Deserialize<'de> for RuntimeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let lab_type = match map.remove("lab_type") {
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "lab_type must be a string, not {}",
                    kind_of(&other)
                )));
            }
            None => return Err(de::Error::missing_field("lab_type")),
        };
        let rules = match map.remove("rules") {
            None | Some(Value::Null) => None,
            Some(v) => {
                Some(Rules::parse(&v).map_err(|e| de::Error::custom(format!("rules: {e}")))?)
            }
        };
        Ok(RuntimeConfig {
            name: String::new(),
            lab_type,
            rules,
            settings: map,
        })
    }
}

impl RuntimeConfig {
    /// The entry as upstream's runtime config dict: `name`, `lab_type`, `rules` and the
    /// type-specific keys, for runtimes that parse it with serde.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = self.settings.clone();
        m.insert("name".into(), Value::String(self.name.clone()));
        m.insert("lab_type".into(), Value::String(self.lab_type.clone()));
        if let Some(rules) = &self.rules {
            m.insert(
                "rules".into(),
                serde_json::to_value(rules).unwrap_or(Value::Null),
            );
        }
        m
    }
}

/// Which runtime a scheduler entry uses: a runtime by name, or any loaded runtime of a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSelector {
    /// A runtime name (a key of `runtimes`).
    #[serde(default)]
    pub name: Option<String>,
    /// A `lab_type`.
    #[serde(default, rename = "type")]
    pub lab_type: Option<String>,
}

/// One `scheduler:` entry: run `job` on `runtime` (and `platforms`) when an event matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerEntry {
    /// The job name (a key of `jobs`).
    pub job: String,
    /// The event to match: `channel` plus top-level event fields compared by equality.
    pub event: Map<String, Value>,
    /// The runtime to use.
    pub runtime: RuntimeSelector,
    /// The platforms (keys of `platforms`); empty means the runtime's `lab_type`.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Extra rules checked on the input node.
    #[serde(default)]
    pub rules: Option<Rules>,
}

impl SchedulerEntry {
    /// The entry's event channel (`node` when not given... upstream requires it; we default
    /// to nothing, so an entry without `channel` never matches).
    pub fn channel(&self) -> Option<&str> {
        self.event.get("channel").and_then(Value::as_str)
    }
}

/// The whole pipeline configuration, typed.
///
/// Sections only used to hold anchors (`_anchors`), the legacy `build_environments`,
/// `build_variants` and `build_configs_defaults`, and any other top-level key are kept in
/// [`PipelineConfig::raw`] and otherwise ignored.
#[derive(Debug, Default)]
pub struct PipelineConfig {
    /// API instances by name.
    pub api: BTreeMap<String, ApiConfig>,
    /// Kernel trees by name.
    pub trees: BTreeMap<String, Tree>,
    /// Config fragments by name.
    pub fragments: BTreeMap<String, Fragment>,
    /// Build configs (tree/branch pairs to follow) by id.
    pub build_configs: BTreeMap<String, BuildConfig>,
    /// Jobs by name.
    pub jobs: BTreeMap<String, JobConfig>,
    /// Platforms by name.
    pub platforms: BTreeMap<String, PlatformConfig>,
    /// Runtimes by name.
    pub runtimes: BTreeMap<String, RuntimeConfig>,
    /// Scheduler entries, in file order.
    pub scheduler: Vec<SchedulerEntry>,
    /// Storage configs by name (`storage:` and the deprecated `storage_configs:`).
    pub storage: BTreeMap<String, StorageConfig>,
    /// The raw `rootfs:` map (`params.rootfs_ref` points into it).
    pub rootfs: Map<String, Value>,
    /// The merged document every section was read from.
    pub raw: Map<String, Value>,
    sources: Sources,
}

impl PipelineConfig {
    /// Loads every `*.yaml` under each path (a directory, recursively, or a single file), with
    /// upstream's merge rules, and validates it. All errors are returned together.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<PipelineConfig, ConfigErrors> {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let (doc, sources, mut errors) = source::load_paths(&paths);
        let config = PipelineConfig::build(doc, sources, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Loads one YAML document given as text (`name` is used in error messages).
    pub fn from_yaml_str(name: &str, text: &str) -> Result<PipelineConfig, ConfigErrors> {
        let mut data = Map::new();
        let mut sources = Sources::default();
        let mut errors = Vec::new();
        source::add_document(&mut data, &mut sources, &mut errors, Path::new(name), text);
        let config = PipelineConfig::build(data, sources, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Like [`PipelineConfig::load`], but returns the configuration with whatever could be
    /// typed, plus every error (for `kci config validate`).
    pub fn load_lenient<P: AsRef<Path>>(paths: &[P]) -> (PipelineConfig, Vec<ConfigError>) {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let (doc, sources, mut errors) = source::load_paths(&paths);
        let config = PipelineConfig::build(doc, sources, &mut errors);
        (config, errors)
    }

    fn build(
        raw: Map<String, Value>,
        sources: Sources,
        errors: &mut Vec<ConfigError>,
    ) -> PipelineConfig {
        let mut c = PipelineConfig {
            sources,
            ..PipelineConfig::default()
        };
        c.api = typed_map(&raw, "api", &c.sources, errors);
        c.trees = typed_map(&raw, "trees", &c.sources, errors);
        c.fragments = typed_map(&raw, "fragments", &c.sources, errors);
        c.build_configs = typed_map(&raw, "build_configs", &c.sources, errors);
        c.jobs = typed_map(&raw, "jobs", &c.sources, errors);
        c.platforms = typed_map(&raw, "platforms", &c.sources, errors);
        c.runtimes = typed_map(&raw, "runtimes", &c.sources, errors);
        c.storage = typed_map(&raw, "storage_configs", &c.sources, errors);
        c.storage.extend(typed_map::<StorageConfig>(
            &raw, "storage", &c.sources, errors,
        ));
        for (name, v) in c.api.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.trees.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.fragments.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.build_configs.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.platforms.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.runtimes.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.jobs.iter_mut() {
            v.name = name.clone();
            self_format_job(v);
        }
        match raw.get("scheduler") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = KeyPath::keys(["scheduler"]).index(i);
                    if let Some(entry) =
                        typed_value::<SchedulerEntry>(item, &path, &c.sources, errors)
                    {
                        c.scheduler.push(entry);
                    }
                }
            }
            Some(other) => errors.push(c.sources.error(
                ConfigErrorKind::Schema,
                &KeyPath::keys(["scheduler"]),
                format!("expected a list of entries, found {}", kind_of(other)),
            )),
        }
        match raw.get("rootfs") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => c.rootfs = m.clone(),
            Some(other) => errors.push(c.sources.error(
                ConfigErrorKind::Schema,
                &KeyPath::keys(["rootfs"]),
                format!("expected a mapping, found {}", kind_of(other)),
            )),
        }
        c.raw = raw;
        validate::cross_check(&c, errors);
        // Errors in file order, then line order.
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        c
    }

    /// Where the entry at `path` (e.g. `jobs.kbuild-gcc-14-x86` or `scheduler[3]`) was
    /// defined.
    pub fn origin(&self, path: &KeyPath) -> Option<Origin> {
        self.sources.origin(path)
    }

    /// An error about `path`, located in its file.
    pub fn error_at(
        &self,
        kind: ConfigErrorKind,
        path: &KeyPath,
        message: impl Into<String>,
    ) -> ConfigError {
        self.sources.error(kind, path, message)
    }

    /// The files that were read, in merge order.
    pub fn files(&self) -> Vec<&Path> {
        self.sources
            .files
            .iter()
            .map(|f| f.path.as_path())
            .collect()
    }

    /// The number of entries per section, for summaries.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("api", self.api.len()),
            ("trees", self.trees.len()),
            ("fragments", self.fragments.len()),
            ("build_configs", self.build_configs.len()),
            ("jobs", self.jobs.len()),
            ("platforms", self.platforms.len()),
            ("runtimes", self.runtimes.len()),
            ("scheduler", self.scheduler.len()),
            ("storage", self.storage.len()),
            ("rootfs", self.rootfs.len()),
        ])
    }

    /// The build config following `tree`/`branch`, if any.
    pub fn build_config_for(&self, tree: &str, branch: &str) -> Option<&BuildConfig> {
        self.build_configs
            .values()
            .find(|b| b.tree == tree && b.branch == branch)
    }

    /// The platform called `name`; the bare names `shell`, `docker`, `kubernetes` and `lava`
    /// are only found when defined (as upstream's `platforms.yaml` does).
    pub fn platform(&self, name: &str) -> Option<&PlatformConfig> {
        self.platforms.get(name)
    }
}

fn self_format_job(job: &mut JobConfig) {
    let mut map = Map::new();
    map.insert("name".into(), Value::String(job.name.clone()));
    map.insert("template".into(), Value::String(job.template.clone()));
    map.insert("kind".into(), Value::String(job.kind.clone()));
    if let Some(b) = &job.base_name {
        map.insert("base_name".into(), Value::String(b.clone()));
    }
    if let Some(i) = &job.image {
        map.insert("image".into(), Value::String(i.clone()));
    }
    for (k, v) in &job.params {
        map.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Value::Object(p) = super::format_params(&Value::Object(job.params.clone()), &map) {
        job.params = p;
    }
}

fn typed_map<T: DeserializeOwned>(
    raw: &Map<String, Value>,
    section: &str,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    match raw.get(section) {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (name, value) in entries {
                let path = KeyPath::keys([section, name.as_str()]);
                if let Some(v) = typed_value::<T>(value, &path, sources, errors) {
                    out.insert(name.clone(), v);
                }
            }
        }
        Some(other) => errors.push(sources.error(
            ConfigErrorKind::Schema,
            &KeyPath::keys([section]),
            format!("expected a mapping of entries, found {}", kind_of(other)),
        )),
    }
    out
}

fn typed_value<T: DeserializeOwned>(
    value: &Value,
    path: &KeyPath,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    // A bare `name:` entry (e.g. `docker:` in platforms.yaml) is an empty mapping.
    let value = if value.is_null() {
        Value::Object(Map::new())
    } else {
        value.clone()
    };
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut at = path.join(&KeyPath::from_serde(e.path()));
            let msg = e.inner().to_string();
            // `unknown field `parms`, expected ...`: point at the unknown key itself.
            if let Some(field) = msg
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                && at.0.last() != Some(&KeySeg::Key(field.to_owned()))
            {
                at = at.key(field);
            }
            errors.push(sources.error(ConfigErrorKind::Schema, &at, msg));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/config")
            .join(name)
    }

    #[test]
    fn upstream_like_fixture_loads() {
        let c = match PipelineConfig::load(&[fixture("upstream-like")]) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let x86 = &c.jobs["kbuild-gcc-14-x86"];
        assert_eq!(x86.kind, "kbuild");
        assert_eq!(x86.params["arch"], "x86_64");
        assert_eq!(x86.rules.as_ref().map(|r| r.values("tree").len()), Some(3));
        let dbg = &c.jobs["kbuild-gcc-14-x86-kcidebug"];
        assert_eq!(dbg.priority, Some(Priority::Low));
        assert_eq!(
            dbg.params["compiler"], "gcc-14",
            "merged from the params anchor"
        );
        assert_eq!(
            dbg.rules.as_ref().and_then(|r| r.version("min_version")),
            Some(VersionRule {
                version: 6,
                patchlevel: 1
            })
        );
        assert_eq!(
            c.jobs["kunit-x86_64"].frequency(),
            Some(std::time::Duration::from_secs(43_200))
        );
        assert_eq!(c.platforms["docker"], PlatformConfig::bare("docker"));
        assert_eq!(c.platforms["qemu-arm64"].device_type(), "qemu");
        assert_eq!(c.platforms["qemu-arm64"].boot_method, "qemu");
        assert_eq!(
            c.platforms["imx8mp-evk"].dtb.as_ref().map(Vec::len),
            Some(2)
        );
        assert_eq!(c.runtimes["lava-collabora"].lab_type, "lava");
        assert_eq!(c.runtimes["lava-collabora"].settings["priority_min"], 40);
        assert_eq!(c.runtimes["k8s-all"].name, "k8s-all");
        assert_eq!(c.scheduler.len(), 11);
        assert_eq!(c.scheduler[0].channel(), Some("node"));
        assert_eq!(c.storage.len(), 3, "storage and storage_configs");
        assert_eq!(c.storage["docker-host"].port, 8022);
        assert_eq!(c.build_configs["next_master"].variants.len(), 1);
        assert_eq!(
            c.build_config_for("stable", "linux-6.6.y")
                .and_then(|b| b.priority),
            Some(Priority::Value(60))
        );
        assert!(
            c.files()
                .iter()
                .all(|f| !f.to_string_lossy().contains("debos"))
        );
        let origin = c
            .origin(&KeyPath::keys(["jobs", "kselftest-dt"]))
            .expect("known origin");
        assert!(origin.file.ends_with("jobs-tests.yaml"));
        assert_eq!(origin.line, Some(30));
        let origin = c
            .origin(&KeyPath::keys(["scheduler"]).index(8))
            .expect("known origin");
        assert!(origin.file.ends_with("scheduler.yaml"), "{origin:?}");
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn same_path_updates_and_cross_path_deep_merge() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        // Within one path: `jobs` entries are replaced whole (dict update), lists extended.
        write(
            &a,
            "1-jobs.yaml",
            "jobs:\n  j1:\n    template: one.jinja2\n    params: {x: 1, y: 1}\n  j2:\n    template: two.jinja2\nscheduler:\n- job: j1\n  event: {channel: node}\n  runtime: {name: shell}\n",
        );
        write(
            &a,
            "sub/2-jobs.yaml",
            "jobs:\n  j1:\n    template: one-bis.jinja2\n    params: {x: 2}\nruntimes:\n  shell: {lab_type: shell}\nplatforms:\n  shell:\n",
        );
        write(&a, "debos/skip.yaml", "jobs: [not, a, mapping\n");
        // Across paths: deep merge (j2 gains params, lists concatenate, scalars replaced).
        write(
            &b,
            "jobs.yaml",
            "jobs:\n  j2:\n    params: {z: 3}\n    kind: test\nscheduler:\n- job: j2\n  event: {channel: node}\n  runtime: {name: shell}\n",
        );
        let c = match PipelineConfig::load(&[&a, &b]) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.jobs["j1"].template, "one-bis.jinja2");
        assert_eq!(
            Value::Object(c.jobs["j1"].params.clone()),
            serde_json::json!({"x": 2}),
            "same-path update replaces the entry"
        );
        assert_eq!(c.jobs["j2"].template, "two.jinja2");
        assert_eq!(c.jobs["j2"].kind, "test");
        assert_eq!(c.jobs["j2"].params["z"], 3);
        assert_eq!(
            c.scheduler
                .iter()
                .map(|s| s.job.as_str())
                .collect::<Vec<_>>(),
            ["j1", "j2"]
        );
        let o = c
            .origin(&KeyPath::keys(["scheduler"]).index(1))
            .expect("origin");
        assert_eq!((o.file, o.line), (b.join("jobs.yaml"), Some(6)));
        let o = c.origin(&KeyPath::keys(["jobs", "j1"])).expect("origin");
        assert_eq!((o.file, o.line), (a.join("sub/2-jobs.yaml"), Some(2)));
        assert_eq!(c.files().len(), 3, "debos/ is skipped");
        // A missing path is an error, and loading goes on with the others.
        let (c, errors) = PipelineConfig::load_lenient(&[tmp.path().join("nope"), b.clone()]);
        assert_eq!(
            errors.len(),
            3,
            "not found, j2 without template, no runtime: {errors:?}"
        );
        assert!(errors.iter().any(|e| e.kind == ConfigErrorKind::NotFound));
        assert!(
            errors
                .iter()
                .any(|e| e.key.as_deref() == Some("jobs.j2") && e.message.contains("template"))
        );
        assert!(errors.iter().any(|e| e.line == Some(8)
            && e.key.as_deref() == Some("scheduler[0].runtime.name")));
        assert!(c.jobs.is_empty());
    }
}
