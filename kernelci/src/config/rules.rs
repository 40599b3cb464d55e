//! Rules (`rules:` on scheduler entries, jobs, runtimes and platforms): allowed and denied
//! values per field, and `min_version`/`max_version`.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
