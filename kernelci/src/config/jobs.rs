//! What runs where: jobs, platforms, runtimes and the scheduler entries that tie them together.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::entries::Priority;
use super::rules::{Rules, kind_of};

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
