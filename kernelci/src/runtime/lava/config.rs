//! The LAVA runtime entry's settings ([`LavaConfig`]) and upstream's priority rules.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::runtime::registry::RuntimeEntry;
use crate::runtime::{RuntimeError, RuntimeErrorKind};

/// The submitter of jobs the pipeline creates (others are people, whose own priority counts).
pub const SERVICE_PIPELINE: &str = "service:pipeline";
/// Priority of a person's job without a `data.priority`.
pub const PRIORITY_HIGHEST: i64 = 80;
/// `high` in node and job priorities.
pub const PRIORITY_HIGH: i64 = 60;
/// `medium` in node and job priorities.
pub const PRIORITY_MEDIUM: i64 = 40;
/// `low` in node and job priorities, and the default.
pub const PRIORITY_LOW: i64 = 20;

/// A priority as written in the runtime entry: `low`/`medium`/`high` or a number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum ConfigPriority {
    Number(f64),
    Name(String),
}

impl ConfigPriority {
    /// LAVA's scale: low=0, medium=50, high=100; numbers clamped to 0..100.
    fn value(&self) -> Result<i64, String> {
        match self {
            ConfigPriority::Number(n) => Ok((*n as i64).clamp(0, 100)),
            ConfigPriority::Name(s) => match s.to_ascii_lowercase().as_str() {
                "low" => Ok(0),
                "medium" => Ok(50),
                "high" => Ok(100),
                other => other
                    .parse::<i64>()
                    .map(|n| n.clamp(0, 100))
                    .map_err(|_| format!("priority {other:?} is not low, medium, high or 0..100")),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct QueueTimeout {
    #[serde(default)]
    days: Option<u64>,
    #[serde(default)]
    hours: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct LavaSettings {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    priority: Option<ConfigPriority>,
    #[serde(default)]
    priority_min: Option<ConfigPriority>,
    #[serde(default)]
    priority_max: Option<ConfigPriority>,
    #[serde(default)]
    queue_timeout: Option<QueueTimeout>,
    #[serde(default)]
    notify: Option<Value>,
    #[serde(default = "default_max_queue_depth")]
    max_queue_depth: u64,
    #[serde(default)]
    disable_queue_limit: bool,
    #[serde(default = "default_priority_factor")]
    max_queue_depth_priority_factor: f64,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    poll_interval: Option<f64>,
}

fn default_max_queue_depth() -> u64 {
    50
}

fn default_priority_factor() -> f64 {
    2.0
}

/// The typed settings of a LAVA runtime entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LavaConfig {
    /// The lab URL (`https://lava.example.org`); `None` for a pull lab.
    pub url: Option<String>,
    /// The lab's priority scale factor (0..100), when set.
    pub priority: Option<i64>,
    /// The lowest priority the lab gives (defaults to `priority`).
    pub priority_min: Option<i64>,
    /// The highest priority the lab gives (defaults to `priority`).
    pub priority_max: Option<i64>,
    /// The queue timeout as `{days, hours}`, passed to templates as `queue_timeout`.
    pub queue_timeout: Option<Value>,
    /// The `notify` map for the job definitions.
    pub notify: Value,
    /// Queue gate: jobs per online device (50).
    pub max_queue_depth: u64,
    /// Queue gate off.
    pub disable_queue_limit: bool,
    /// Queue gate: how much more a priority-100 job may queue (2.0, at least 1).
    pub max_queue_depth_priority_factor: f64,
    /// REST request timeout.
    pub timeout: Duration,
    /// How often [`Runtime::wait`](crate::runtime::Runtime::wait) polls.
    pub poll_interval: Duration,
}

impl LavaConfig {
    /// Parses the settings of a runtime entry.
    pub fn from_entry(entry: &RuntimeEntry) -> Result<LavaConfig, RuntimeError> {
        let s: LavaSettings = entry.parse_settings()?;
        let config_err = |m: String| {
            RuntimeError::new(
                RuntimeErrorKind::Config,
                format!("runtime {}: {m}", entry.name),
            )
        };
        let prio = |p: &Option<ConfigPriority>| p.as_ref().map(ConfigPriority::value).transpose();
        let priority = prio(&s.priority).map_err(config_err)?;
        let priority_min = prio(&s.priority_min).map_err(config_err)?.or(priority);
        let priority_max = prio(&s.priority_max).map_err(config_err)?.or(priority);
        let seconds = |v: Option<f64>, default: f64| {
            Duration::from_secs_f64(v.filter(|v| v.is_finite() && *v > 0.0).unwrap_or(default))
        };
        Ok(LavaConfig {
            url: s
                .url
                .filter(|u| !u.trim().is_empty())
                .map(|u| u.trim_end_matches('/').to_owned()),
            priority,
            priority_min,
            priority_max,
            queue_timeout: s
                .queue_timeout
                .map(|q| json!({"days": q.days, "hours": q.hours})),
            notify: s.notify.unwrap_or(Value::Null),
            max_queue_depth: s.max_queue_depth,
            disable_queue_limit: s.disable_queue_limit,
            max_queue_depth_priority_factor: s.max_queue_depth_priority_factor.max(1.0),
            timeout: seconds(s.timeout, 30.0),
            poll_interval: seconds(s.poll_interval, 3.0),
        })
    }
}

/// Resolves a node or job priority: `high`=60, `medium`=40, `low`=20, numbers clamped to
/// 0..100, anything else (or nothing) `default`.
pub fn resolve_priority(value: Option<&Value>, default: i64) -> i64 {
    match value {
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "high" => PRIORITY_HIGH,
            "medium" => PRIORITY_MEDIUM,
            "low" => PRIORITY_LOW,
            _ => default,
        },
        Some(Value::Number(n)) => n
            .as_f64()
            .map_or(default, |f| (f.trunc() as i64).clamp(0, 100)),
        _ => default,
    }
}
