//! LAVA priority and queue gate math ([`lava_priority`], [`base_priority`], [`queue_limit`]).

use super::*;

/// A priority value as the scheduler maps it: `high` = 60, `medium` = 40, `low` = 20, a number
/// clamped to 0..100; anything else is `None`.
pub fn priority_value(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => match s.as_str() {
            "high" => Some(60),
            "medium" => Some(40),
            "low" => Some(20),
            other => other.parse::<i64>().ok().map(|n| n.clamp(0, 100)),
        },
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(|n| n.clamp(0, 100)),
        _ => None,
    }
}

/// A LAVA runtime's priority settings (`priority`, `priority_min`, `priority_max`), each
/// clamped to 0..100; `priority` accepts `low` = 0, `medium` = 50, `high` = 100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabPriority {
    /// `priority`.
    pub priority: Option<i64>,
    /// `priority_min` (defaults to `priority`).
    pub min: Option<i64>,
    /// `priority_max` (defaults to `priority`).
    pub max: Option<i64>,
}

impl LabPriority {
    /// Reads the settings of a LAVA runtime entry.
    pub fn from_runtime(runtime: &RuntimeConfig) -> LabPriority {
        let lab = |v: &Value| {
            match v {
                Value::String(s) => match s.as_str() {
                    "low" => Some(0),
                    "medium" => Some(50),
                    "high" => Some(100),
                    other => other.parse::<i64>().ok(),
                },
                Value::Number(n) => n.as_i64(),
                _ => None,
            }
            .map(|n| n.clamp(0, 100))
        };
        let priority = runtime.settings.get("priority").and_then(lab);
        LabPriority {
            priority,
            min: runtime
                .settings
                .get("priority_min")
                .and_then(lab)
                .or(priority),
            max: runtime
                .settings
                .get("priority_max")
                .and_then(lab)
                .or(priority),
        }
    }
}

/// Upstream LAVA `_get_priority`: a job a person submitted (`submitter` is not
/// `service:pipeline`) uses `data.priority` (default 80); a pipeline job uses
/// `data.tree_priority`, else the job's priority (default 20). Then, when the lab sets
/// `priority`, `p × priority / 100`; else, when it sets both bounds,
/// `p × (max − min) / 100 + min` (truncated).
pub fn lava_priority(
    submitter: Option<&str>,
    node_priority: Option<&Value>,
    tree_priority: Option<&Value>,
    job_priority: Option<Priority>,
    lab: LabPriority,
) -> i64 {
    let p = if submitter != Some(SERVICE_PIPELINE) {
        node_priority.and_then(priority_value).unwrap_or(80)
    } else {
        tree_priority
            .and_then(priority_value)
            .or_else(|| job_priority.map(|p| i64::from(p.base())))
            .unwrap_or(20)
    };
    if let Some(scale) = lab.priority.filter(|p| *p != 0) {
        (p * scale) / 100
    } else if let (Some(min), Some(max)) = (lab.min, lab.max) {
        ((p as f64) * ((max - min) as f64) / 100.0 + min as f64) as i64
    } else {
        p
    }
}

/// The base priority of the queue gate: the priority of the build config following the input's
/// tree and branch, else the job's, else 20.
pub fn base_priority(config: &PipelineConfig, input: &Node, job: &JobConfig) -> u8 {
    let tree = input
        .data_path("kernel_revision.tree")
        .and_then(Value::as_str);
    let branch = input
        .data_path("kernel_revision.branch")
        .and_then(Value::as_str);
    let tree_priority = match (tree, branch) {
        (Some(t), Some(b)) => config.build_config_for(t, b).and_then(|bc| bc.priority),
        _ => None,
    };
    tree_priority.or(job.priority).map_or(20, Priority::base)
}

/// The LAVA queue limit: `int(max_queue_depth × online × factor)` with
/// `factor = 1 + base_priority/100 × (priority_factor − 1)` (`priority_factor` clamped to ≥ 1).
pub fn queue_limit(
    max_queue_depth: u64,
    online: usize,
    base_priority: u8,
    priority_factor: f64,
) -> u64 {
    let factor = 1.0 + f64::from(base_priority) / 100.0 * (priority_factor.max(1.0) - 1.0);
    (max_queue_depth as f64 * online as f64 * factor) as u64
}

/// The queue gate settings of a LAVA runtime entry: `max_queue_depth` (50),
/// `disable_queue_limit` (false), `max_queue_depth_priority_factor` (2.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSettings {
    /// `max_queue_depth`.
    pub max_queue_depth: u64,
    /// `disable_queue_limit`.
    pub disabled: bool,
    /// `max_queue_depth_priority_factor`, at least 1.
    pub priority_factor: f64,
}

impl QueueSettings {
    /// Reads the settings of a runtime entry.
    pub fn from_runtime(runtime: &RuntimeConfig) -> QueueSettings {
        let s = &runtime.settings;
        QueueSettings {
            max_queue_depth: s
                .get("max_queue_depth")
                .and_then(Value::as_u64)
                .unwrap_or(50),
            disabled: s
                .get("disable_queue_limit")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            priority_factor: s
                .get("max_queue_depth_priority_factor")
                .and_then(Value::as_f64)
                .unwrap_or(2.0)
                .max(1.0),
        }
    }
}
