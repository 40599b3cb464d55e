//! The named entries of the pipeline configuration that are plain data: API instances, trees,
//! build configs (tree/branch pairs to follow), config fragments, and priorities.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

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

/// Where kernelci-core fetches `cip://` fragments from (`{branch}`, then the path).
pub const CIP_CONFIG_URL: &str =
    "https://gitlab.com/cip-project/cip-kernel/cip-kernel-config/-/raw/master";

/// A `cip://<branch>/<arch>/<file>` fragment, e.g.
/// `cip://6.12.y-cip/arm64/cip_merged_defconfig`: a kernel config kept in the CIP project's
/// kernel-config repository, which upstream's kbuild downloads and merges like a fragment.
///
/// ```
/// use kernelci::config::CipFragment;
///
/// let f = CipFragment::parse("cip://6.1.y-cip/x86/cip_merged_defconfig").unwrap().unwrap();
/// assert_eq!(f.branch, "6.1.y-cip");
/// assert_eq!(f.path, "x86/cip_merged_defconfig");
/// assert!(f.url().ends_with("/raw/master/6.1.y-cip/x86/cip_merged_defconfig"));
/// assert!(CipFragment::parse("kselftest").is_none());
/// assert!(CipFragment::parse("cip://6.1.y-cip").unwrap().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CipFragment {
    /// The CIP branch (a directory of the repository), e.g. `6.12.y-cip`.
    pub branch: String,
    /// The config file below the branch, e.g. `arm64/cip_merged_defconfig`.
    pub path: String,
}

impl CipFragment {
    /// `None` when `name` is not a `cip://` fragment; otherwise the fragment, or why it is
    /// malformed (kernelci-core's pattern: `cip://([\w.-]+)/(.+)`, here without empty or
    /// `..` path segments, since the path becomes part of a URL).
    pub fn parse(name: &str) -> Option<Result<CipFragment, String>> {
        let rest = name.strip_prefix("cip://")?;
        let bad = |why: &str| {
            Some(Err(format!(
                "invalid CIP fragment {name:?}: {why} (expected cip://<branch>/<arch>/<file>)"
            )))
        };
        let Some((branch, path)) = rest.split_once('/') else {
            return bad("no path after the branch");
        };
        if branch.is_empty()
            || !branch
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return bad("the branch may only hold letters, digits, '_', '-' and '.'");
        }
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return bad("empty, '.' or '..' path segment");
        }
        if path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
        {
            return bad("spaces, control characters, '?' and '#' are not allowed");
        }
        Some(Ok(CipFragment {
            branch: branch.to_owned(),
            path: path.to_owned(),
        }))
    }

    /// The URL kernelci-core downloads the fragment from.
    pub fn url(&self) -> String {
        format!("{CIP_CONFIG_URL}/{}/{}", self.branch, self.path)
    }
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
