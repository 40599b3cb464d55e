//! The KCIDB I/O v5 objects (schema v5.3): a [`Document`] of checkouts, builds, tests, issues
//! and incidents. Every optional field is left out of the JSON when unset (the schema forbids
//! `null`); [`remove_nulls`] strips the `null`s that free-form `misc` objects may hold.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The schema version the bridge writes: v5.3.
pub const SCHEMA_VERSION: Version = Version { major: 5, minor: 3 };

/// A document's schema version (`{"major": 5, "minor": 3}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Major version: 5.
    pub major: u32,
    /// Minor version: 0..=3.
    pub minor: u32,
}

/// One KCIDB I/O document: what one submission carries. All five lists are always written,
/// possibly empty, as upstream's bridge does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The schema version.
    pub version: Version,
    /// Checkouts (revisions).
    #[serde(default)]
    pub checkouts: Vec<Checkout>,
    /// Builds.
    #[serde(default)]
    pub builds: Vec<Build>,
    /// Tests.
    #[serde(default)]
    pub tests: Vec<Test>,
    /// Issues.
    #[serde(default)]
    pub issues: Vec<Issue>,
    /// Incidents.
    #[serde(default)]
    pub incidents: Vec<Incident>,
}

impl Default for Document {
    fn default() -> Self {
        Document {
            version: SCHEMA_VERSION,
            checkouts: Vec::new(),
            builds: Vec::new(),
            tests: Vec::new(),
            issues: Vec::new(),
            incidents: Vec::new(),
        }
    }
}

impl Document {
    /// How many objects the document holds.
    pub fn len(&self) -> usize {
        self.checkouts.len()
            + self.builds.len()
            + self.tests.len()
            + self.issues.len()
            + self.incidents.len()
    }

    /// Whether it holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an object to its list.
    pub fn push(&mut self, object: Object) {
        match object {
            Object::Checkout(o) => self.checkouts.push(o),
            Object::Build(o) => self.builds.push(o),
            Object::Test(o) => self.tests.push(o),
            Object::Issue(o) => self.issues.push(o),
            Object::Incident(o) => self.incidents.push(o),
        }
    }

    /// The document as JSON, without any `null`.
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        remove_nulls(&mut v);
        v
    }

    /// The document as compact JSON bytes, without any `null`.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }
}

/// Which list an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    /// `checkouts`.
    Checkout,
    /// `builds`.
    Build,
    /// `tests`.
    Test,
    /// `issues`.
    Issue,
    /// `incidents`.
    Incident,
}

impl ObjectType {
    /// The document list name (`checkouts`, `builds`, ...).
    pub fn list_name(self) -> &'static str {
        match self {
            ObjectType::Checkout => "checkouts",
            ObjectType::Build => "builds",
            ObjectType::Test => "tests",
            ObjectType::Issue => "issues",
            ObjectType::Incident => "incidents",
        }
    }

    /// Every type, in document order.
    pub const ALL: [ObjectType; 5] = [
        ObjectType::Checkout,
        ObjectType::Build,
        ObjectType::Test,
        ObjectType::Issue,
        ObjectType::Incident,
    ];
}

/// Any KCIDB object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A checkout.
    Checkout(Checkout),
    /// A build.
    Build(Build),
    /// A test.
    Test(Test),
    /// An issue.
    Issue(Issue),
    /// An incident.
    Incident(Incident),
}

impl Object {
    /// Its type.
    pub fn object_type(&self) -> ObjectType {
        match self {
            Object::Checkout(_) => ObjectType::Checkout,
            Object::Build(_) => ObjectType::Build,
            Object::Test(_) => ObjectType::Test,
            Object::Issue(_) => ObjectType::Issue,
            Object::Incident(_) => ObjectType::Incident,
        }
    }

    /// Its id (`<origin>:<...>`).
    pub fn id(&self) -> &str {
        match self {
            Object::Checkout(o) => &o.id,
            Object::Build(o) => &o.id,
            Object::Test(o) => &o.id,
            Object::Issue(o) => &o.id,
            Object::Incident(o) => &o.id,
        }
    }

    /// The object as JSON, without any `null`.
    pub fn to_value(&self) -> Value {
        let mut v = match self {
            Object::Checkout(o) => serde_json::to_value(o),
            Object::Build(o) => serde_json::to_value(o),
            Object::Test(o) => serde_json::to_value(o),
            Object::Issue(o) => serde_json::to_value(o),
            Object::Incident(o) => serde_json::to_value(o),
        }
        .unwrap_or(Value::Null);
        remove_nulls(&mut v);
        v
    }
}

/// A file (`input_files`, `output_files`, `patchset_files` entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// The file name (no `/`, no NUL).
    pub name: String,
    /// Where it is (a URI).
    pub url: String,
}

/// A build or test status, from the highest priority to the lowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// The code under test failed.
    Fail,
    /// The test or build could not run to completion.
    Error,
    /// Not run (the infrastructure or a prerequisite failed).
    Miss,
    /// Passed.
    Pass,
    /// Finished without a verdict.
    Done,
    /// Skipped.
    Skip,
}

impl Status {
    /// The wire name (`FAIL`, `PASS`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
            Status::Miss => "MISS",
            Status::Pass => "PASS",
            Status::Done => "DONE",
            Status::Skip => "SKIP",
        }
    }
}

/// A checkout: one revision of one tree.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkout {
    /// `<origin>:<node id>`.
    pub id: String,
    /// The submitting system (`maestro`).
    pub origin: String,
    /// The tree name.
    pub tree_name: Option<String>,
    /// The repository URL (https only).
    pub git_repository_url: Option<String>,
    /// The commit (40 lowercase hex digits).
    pub git_commit_hash: Option<String>,
    /// `git describe`.
    pub git_commit_name: Option<String>,
    /// The branch.
    pub git_repository_branch: Option<String>,
    /// Whether the commit was the branch's tip when checked out.
    pub git_repository_branch_tip: Option<bool>,
    /// Tags on the commit.
    pub git_commit_tags: Option<Vec<String>>,
    /// The commit message.
    pub git_commit_message: Option<String>,
    /// The patchset hash (empty: no patches).
    pub patchset_hash: Option<String>,
    /// Patch files applied on top.
    pub patchset_files: Option<Vec<Resource>>,
    /// The patch mail's Message-ID.
    pub message_id: Option<String>,
    /// A human-readable comment.
    pub comment: Option<String>,
    /// When the checkout started (RFC 3339 with offset).
    pub start_time: Option<String>,
    /// The checkout log.
    pub log_url: Option<String>,
    /// The end of the checkout log.
    pub log_excerpt: Option<String>,
    /// Whether the checkout succeeded.
    pub valid: Option<bool>,
    /// When the origin finished building it.
    pub origin_builds_finish_time: Option<String>,
    /// When the origin finished testing it.
    pub origin_tests_finish_time: Option<String>,
    /// Free-form extra data.
    pub misc: Option<Map<String, Value>>,
}

/// A build of a checkout.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// `<origin>:<node id>` (or `<origin>:dummy_<checkout>[_<arch>]`).
    pub id: String,
    /// The checkout built.
    pub checkout_id: String,
    /// The submitting system.
    pub origin: String,
    /// A human-readable comment.
    pub comment: Option<String>,
    /// When the build started.
    pub start_time: Option<String>,
    /// How long it took, in seconds.
    pub duration: Option<f64>,
    /// The target architecture (`^[a-z0-9_]*$`).
    pub architecture: Option<String>,
    /// The build command.
    pub command: Option<String>,
    /// The compiler.
    pub compiler: Option<String>,
    /// Input files.
    pub input_files: Option<Vec<Resource>>,
    /// Output files.
    pub output_files: Option<Vec<Resource>>,
    /// The configuration name.
    pub config_name: Option<String>,
    /// The configuration file.
    pub config_url: Option<String>,
    /// The build log.
    pub log_url: Option<String>,
    /// The end of the build log.
    pub log_excerpt: Option<String>,
    /// The outcome.
    pub status: Option<Status>,
    /// Free-form extra data.
    pub misc: Option<Map<String, Value>>,
}

/// Where a test ran.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestEnvironment {
    /// A human-readable comment.
    pub comment: Option<String>,
    /// The device-tree compatible strings of the platform.
    pub compatible: Option<Vec<String>>,
    /// Free-form extra data.
    pub misc: Option<Map<String, Value>>,
}

/// A test's numeric result.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestNumber {
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: Option<String>,
    /// `metric` or `binary` prefixes.
    pub prefix: Option<String>,
}

/// A test run on a build.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Test {
    /// `<origin>:<node id>`.
    pub id: String,
    /// The build tested.
    pub build_id: String,
    /// The submitting system.
    pub origin: String,
    /// The dotted test path (`kselftest.demo.demo_math`).
    pub path: Option<String>,
    /// A human-readable comment.
    pub comment: Option<String>,
    /// Where it ran.
    pub environment: Option<TestEnvironment>,
    /// The test log.
    pub log_url: Option<String>,
    /// The end of the test log.
    pub log_excerpt: Option<String>,
    /// The outcome.
    pub status: Option<Status>,
    /// A numeric result.
    pub number: Option<TestNumber>,
    /// When it started.
    pub start_time: Option<String>,
    /// How long it took, in seconds.
    pub duration: Option<f64>,
    /// Input files.
    pub input_files: Option<Vec<Resource>>,
    /// Output files.
    pub output_files: Option<Vec<Resource>>,
    /// Free-form extra data.
    pub misc: Option<Map<String, Value>>,
}

/// Who is to blame for an issue.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Culprit {
    /// The code under test.
    pub code: Option<bool>,
    /// The tool (compiler, ...).
    pub tool: Option<bool>,
    /// The test harness.
    pub harness: Option<bool>,
}

/// A known problem (versioned; the highest version wins).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// `<origin>:<...>`.
    pub id: String,
    /// The version (≥ 0).
    pub version: u64,
    /// The submitting system.
    pub origin: String,
    /// Where it was reported.
    pub report_url: Option<String>,
    /// The report's subject.
    pub report_subject: Option<String>,
    /// Who is to blame.
    pub culprit: Option<Culprit>,
    /// A human-readable comment.
    pub comment: Option<String>,
    /// Dotted categories.
    pub categories: Option<Vec<String>>,
    /// Free-form extra data.
    pub misc: Option<Map<String, Value>>,
}

/// An issue seen in a build or test.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `<origin>:<...>`.
    pub id: String,
    /// The submitting system.
    pub origin: String,
    /// The issue.
    pub issue_id: String,
    /// The issue's version.
    pub issue_version: u64,
    /// The build it was seen in.
    pub build_id: Option<String>,
    /// The test it was seen in.
    pub test_id: Option<String>,
    /// Whether the issue is present (false: known absent).
    pub present: Option<bool>,
    /// A human-readable comment.
    pub comment: Option<String>,
    /// Free-form extra data.
    pub misc: Option<Map<String, Value>>,
}

/// Removes every `null`-valued key from objects, recursively (inside `misc` and lists too),
/// and every `null` item from lists: KCIDB never accepts `null`.
pub fn remove_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for v in map.values_mut() {
                remove_nulls(v);
            }
        }
        Value::Array(items) => {
            items.retain(|v| !v.is_null());
            for v in items.iter_mut() {
                remove_nulls(v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nulls_are_removed_everywhere_and_unset_fields_are_left_out() {
        let mut v = json!({"a": null, "b": {"c": null, "d": [1, null, {"e": null}]}});
        remove_nulls(&mut v);
        assert_eq!(v, json!({"b": {"d": [1, {}]}}));
        let mut doc = Document::default();
        doc.push(Object::Build(Build {
            id: "maestro:1".into(),
            checkout_id: "maestro:0".into(),
            origin: "maestro".into(),
            misc: json!({"platform": null, "runtime": "shell"})
                .as_object()
                .cloned(),
            ..Build::default()
        }));
        assert_eq!(
            doc.to_value(),
            json!({"version": {"major": 5, "minor": 3}, "checkouts": [],
                "builds": [{"id": "maestro:1", "checkout_id": "maestro:0", "origin": "maestro",
                    "misc": {"runtime": "shell"}}],
                "tests": [], "issues": [], "incidents": []})
        );
        assert_eq!(doc.len(), 1);
    }
}
