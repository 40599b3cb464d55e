//! The six node kinds and the models of their `data`.
//!
//! `data` stays a JSON object on the [`super::Node`] (extra keys are kept, as upstream does);
//! [`validate_data`] checks it against the kind's model and reports every problem, and the typed
//! structs here ([`Revision`], [`CheckoutData`], ...) give typed access where a program wants it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ObjectId;
use super::validate::{ModelError, ValidationErrors};

/// The kinds a node can be written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A kernel revision: the root of a tree.
    Checkout,
    /// A kernel build.
    Kbuild,
    /// A test case.
    Test,
    /// A test job (a suite).
    Job,
    /// Post-processing.
    Process,
    /// A regression found by the tracker.
    Regression,
}

impl NodeKind {
    /// Every kind.
    pub const ALL: [NodeKind; 6] = [
        NodeKind::Checkout,
        NodeKind::Kbuild,
        NodeKind::Test,
        NodeKind::Job,
        NodeKind::Process,
        NodeKind::Regression,
    ];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Checkout => "checkout",
            NodeKind::Kbuild => "kbuild",
            NodeKind::Test => "test",
            NodeKind::Job => "job",
            NodeKind::Process => "process",
            NodeKind::Regression => "regression",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ModelError::UnsupportedKind(s.to_owned()))
    }
}

/// Error codes a node's `data.error_code` may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The job parameters were wrong.
    #[serde(rename = "invalid_job_params")]
    InvalidJobParams,
    /// The runtime refused the job or could not be reached.
    #[serde(rename = "submit_error")]
    SubmitError,
    /// The node ran past its timeout.
    #[serde(rename = "node_timeout")]
    NodeTimeout,
    /// LAVA: infrastructure error.
    Infrastructure,
    /// LAVA: the job was canceled.
    Canceled,
    /// LAVA: job error.
    Job,
    /// LAVA: a bug.
    Bug,
    /// LAVA: test error.
    Test,
    /// LAVA: configuration error.
    Configuration,
    /// LAVA: timeout.
    #[serde(rename = "LAVATimeout")]
    LavaTimeout,
    /// LAVA: multinode timeout.
    MultinodeTimeout,
    /// LAVA: object not persisted.
    ObjectNotPersisted,
    /// LAVA: unknown permission.
    #[serde(rename = "Unexisting permission codename.")]
    UnexistingPermissionCodename,
    /// The job definition could not be generated.
    #[serde(rename = "job_generation_error")]
    JobGenerationError,
    /// The kernel build failed for internal reasons.
    #[serde(rename = "kbuild_internal_error")]
    KbuildInternalError,
}

impl ErrorCode {
    /// Every error code.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidJobParams,
        ErrorCode::SubmitError,
        ErrorCode::NodeTimeout,
        ErrorCode::Infrastructure,
        ErrorCode::Canceled,
        ErrorCode::Job,
        ErrorCode::Bug,
        ErrorCode::Test,
        ErrorCode::Configuration,
        ErrorCode::LavaTimeout,
        ErrorCode::MultinodeTimeout,
        ErrorCode::ObjectNotPersisted,
        ErrorCode::UnexistingPermissionCodename,
        ErrorCode::JobGenerationError,
        ErrorCode::KbuildInternalError,
    ];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJobParams => "invalid_job_params",
            ErrorCode::SubmitError => "submit_error",
            ErrorCode::NodeTimeout => "node_timeout",
            ErrorCode::Infrastructure => "Infrastructure",
            ErrorCode::Canceled => "Canceled",
            ErrorCode::Job => "Job",
            ErrorCode::Bug => "Bug",
            ErrorCode::Test => "Test",
            ErrorCode::Configuration => "Configuration",
            ErrorCode::LavaTimeout => "LAVATimeout",
            ErrorCode::MultinodeTimeout => "MultinodeTimeout",
            ErrorCode::ObjectNotPersisted => "ObjectNotPersisted",
            ErrorCode::UnexistingPermissionCodename => "Unexisting permission codename.",
            ErrorCode::JobGenerationError => "job_generation_error",
            ErrorCode::KbuildInternalError => "kbuild_internal_error",
        }
    }
}

impl FromStr for ErrorCode {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                ModelError::invalid("error_code", format!("'{s}' is not a valid error code"))
            })
    }
}

/// A kernel version, as read from the top-level Makefile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelVersion {
    /// `VERSION`.
    pub version: i64,
    /// `PATCHLEVEL`.
    pub patchlevel: i64,
    /// `SUBLEVEL`.
    #[serde(default)]
    pub sublevel: Option<i64>,
    /// `EXTRAVERSION`, e.g. `-rc3`.
    #[serde(default)]
    pub extra: Option<String>,
    /// `NAME`.
    #[serde(default)]
    pub name: Option<String>,
}

/// A kernel source revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Tree name, e.g. `mainline`.
    pub tree: String,
    /// Repository URL (any scheme).
    pub url: String,
    /// Branch name.
    pub branch: String,
    /// Full commit hash.
    pub commit: String,
    /// `git describe` output.
    #[serde(default)]
    pub describe: Option<String>,
    /// Kernel version.
    #[serde(default)]
    pub version: Option<KernelVersion>,
    /// Patchset hash, when patches were applied.
    #[serde(default)]
    pub patchset: Option<String>,
    /// Tags on the commit.
    #[serde(default)]
    pub commit_tags: Vec<String>,
    /// Commit message.
    #[serde(default)]
    pub commit_message: Option<String>,
    /// Whether the commit was the branch tip when checked out.
    #[serde(default)]
    pub tip_of_branch: Option<bool>,
}

/// `data` of a `checkout` node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckoutData {
    /// The revision.
    #[serde(default)]
    pub kernel_revision: Option<Revision>,
    /// `node_timeout`, `git_checkout_failure` or `git_commit_error`.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Error text.
    #[serde(default)]
    pub error_msg: Option<String>,
    /// Architectures to build.
    #[serde(default)]
    pub architecture_filter: Option<Vec<String>>,
    /// Keys beyond the model, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of a `kbuild` node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KbuildData {
    /// The revision.
    #[serde(default)]
    pub kernel_revision: Option<Revision>,
    /// Architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Defconfig.
    #[serde(default)]
    pub defconfig: Option<String>,
    /// Compiler, e.g. `gcc-12`.
    #[serde(default)]
    pub compiler: Option<String>,
    /// Error code.
    #[serde(default)]
    pub error_code: Option<ErrorCode>,
    /// Error text.
    #[serde(default)]
    pub error_msg: Option<String>,
    /// Config fragments.
    #[serde(default)]
    pub fragments: Option<Vec<String>>,
    /// Full config name.
    #[serde(default)]
    pub config_full: Option<String>,
    /// Platform.
    #[serde(default)]
    pub platform: Option<String>,
    /// Runtime name.
    #[serde(default)]
    pub runtime: Option<String>,
    /// Runtime job id.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Runtime job context.
    #[serde(default)]
    pub job_context: Option<String>,
    /// Kernel image type.
    #[serde(default)]
    pub kernel_type: Option<String>,
    /// Regression node.
    #[serde(default)]
    pub regression: Option<ObjectId>,
    /// Keys beyond the model, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of `test` and `job` nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestData {
    /// Error code.
    #[serde(default)]
    pub error_code: Option<ErrorCode>,
    /// Error text.
    #[serde(default)]
    pub error_msg: Option<String>,
    /// Test source URL.
    #[serde(default)]
    pub test_source: Option<String>,
    /// Test source revision.
    #[serde(default)]
    pub test_revision: Option<Revision>,
    /// Platform.
    #[serde(default)]
    pub platform: Option<String>,
    /// Device.
    #[serde(default)]
    pub device: Option<String>,
    /// Runtime name.
    #[serde(default)]
    pub runtime: Option<String>,
    /// Runtime job id.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Runtime job context.
    #[serde(default)]
    pub job_context: Option<String>,
    /// Regression node.
    #[serde(default)]
    pub regression: Option<ObjectId>,
    /// The kernel revision under test.
    #[serde(default)]
    pub kernel_revision: Option<Revision>,
    /// Architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Defconfig.
    #[serde(default)]
    pub defconfig: Option<String>,
    /// Full config name.
    #[serde(default)]
    pub config_full: Option<String>,
    /// Compiler.
    #[serde(default)]
    pub compiler: Option<String>,
    /// Kernel image type.
    #[serde(default)]
    pub kernel_type: Option<String>,
    /// Anything else.
    #[serde(default)]
    pub misc: Map<String, Value>,
    /// Keys beyond the model, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of a `regression` node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegressionData {
    /// The first failing node.
    #[serde(default)]
    pub fail_node: Option<ObjectId>,
    /// The last passing node.
    #[serde(default)]
    pub pass_node: Option<ObjectId>,
    /// Nodes that kept failing since.
    #[serde(default)]
    pub node_sequence: Vec<ObjectId>,
    /// Error code.
    #[serde(default)]
    pub error_code: Option<ErrorCode>,
    /// Error text.
    #[serde(default)]
    pub error_msg: Option<String>,
    /// The revision where it started failing.
    #[serde(default)]
    pub failed_kernel_revision: Option<Revision>,
    /// Architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Defconfig.
    #[serde(default)]
    pub defconfig: Option<String>,
    /// Full config name.
    #[serde(default)]
    pub config_full: Option<String>,
    /// Compiler.
    #[serde(default)]
    pub compiler: Option<String>,
    /// Platform.
    #[serde(default)]
    pub platform: Option<String>,
    /// Device.
    #[serde(default)]
    pub device: Option<String>,
    /// Keys beyond the model, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The shape a field must have.
#[derive(Clone, Copy)]
enum Shape {
    Str,
    Int,
    Bool,
    StrList,
    Object,
    Oid,
    OidList,
    Url,
    Revision,
    ErrorCode,
    CheckoutErrorCode,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn check(shape: Shape, path: &str, v: &Value, errors: &mut ValidationErrors) {
    // Every field of every data model is optional: null is fine.
    if v.is_null() {
        return;
    }
    let expect = |want: &str, errors: &mut ValidationErrors| {
        errors.push(
            path,
            format!("Input should be {want}, got {}", type_name(v)),
        );
    };
    match shape {
        Shape::Str => {
            if !v.is_string() {
                expect("a valid string", errors)
            }
        }
        Shape::Int => {
            if !(v.is_i64() || v.is_u64()) {
                expect("a valid integer", errors)
            }
        }
        Shape::Bool => {
            if !v.is_boolean() {
                expect("a valid boolean", errors)
            }
        }
        Shape::Object => {
            if !v.is_object() {
                expect("a valid object", errors)
            }
        }
        Shape::StrList => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        errors.push(format!("{path}.{i}"), "Input should be a valid string");
                    }
                }
            }
            None => expect("a valid list", errors),
        },
        Shape::Oid => match v.as_str() {
            Some(s) if ObjectId::parse_str(s).is_ok() => {}
            Some(s) => errors.push(path, format!("'{s}' is not a valid ObjectId")),
            None => expect("an ObjectId string", errors),
        },
        Shape::OidList => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(Shape::Oid, &format!("{path}.{i}"), item, errors);
                    if item.is_null() {
                        errors.push(format!("{path}.{i}"), "Input should be an ObjectId string");
                    }
                }
            }
            None => expect("a valid list", errors),
        },
        Shape::Url => match v.as_str() {
            Some(s) if url::Url::parse(s).is_ok() => {}
            Some(_) => errors.push(path, "Input should be a valid URL"),
            None => expect("a valid URL string", errors),
        },
        Shape::ErrorCode => match v.as_str() {
            Some(s) if s.parse::<ErrorCode>().is_ok() => {}
            _ => errors.push(
                path,
                format!(
                    "Input should be one of {}",
                    ErrorCode::ALL
                        .iter()
                        .map(|c| format!("'{}'", c.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        },
        Shape::CheckoutErrorCode => match v.as_str() {
            Some("node_timeout" | "git_checkout_failure" | "git_commit_error") => {}
            _ => errors.push(
                path,
                "Input should be 'node_timeout', 'git_checkout_failure' or 'git_commit_error'",
            ),
        },
        Shape::Revision => check_revision(path, v, errors),
    }
}

fn check_fields(
    fields: &[(&str, Shape)],
    prefix: &str,
    obj: &Map<String, Value>,
    errors: &mut ValidationErrors,
) {
    for (name, shape) in fields {
        if let Some(v) = obj.get(*name) {
            check(*shape, &format!("{prefix}.{name}"), v, errors);
        }
    }
}

fn check_revision(path: &str, v: &Value, errors: &mut ValidationErrors) {
    let Some(obj) = v.as_object() else {
        errors.push(
            path,
            format!("Input should be a valid object, got {}", type_name(v)),
        );
        return;
    };
    for required in ["tree", "url", "branch", "commit"] {
        match obj.get(required) {
            None | Some(Value::Null) => errors.push(format!("{path}.{required}"), "Field required"),
            Some(_) => {}
        }
    }
    check_fields(
        &[
            ("tree", Shape::Str),
            ("url", Shape::Url),
            ("branch", Shape::Str),
            ("commit", Shape::Str),
            ("describe", Shape::Str),
            ("patchset", Shape::Str),
            ("commit_tags", Shape::StrList),
            ("commit_message", Shape::Str),
            ("tip_of_branch", Shape::Bool),
        ],
        path,
        obj,
        errors,
    );
    if let Some(version) = obj.get("version").filter(|v| !v.is_null()) {
        let vpath = format!("{path}.version");
        match version.as_object() {
            None => errors.push(
                &vpath,
                format!("Input should be a valid object, got {}", type_name(version)),
            ),
            Some(vobj) => {
                for required in ["version", "patchlevel"] {
                    if vobj.get(required).is_none_or(Value::is_null) {
                        errors.push(format!("{vpath}.{required}"), "Field required");
                    }
                }
                check_fields(
                    &[
                        ("version", Shape::Int),
                        ("patchlevel", Shape::Int),
                        ("sublevel", Shape::Int),
                        ("extra", Shape::Str),
                        ("name", Shape::Str),
                    ],
                    &vpath,
                    vobj,
                    errors,
                );
            }
        }
    }
}

const KBUILD_FIELDS: &[(&str, Shape)] = &[
    ("kernel_revision", Shape::Revision),
    ("arch", Shape::Str),
    ("defconfig", Shape::Str),
    ("compiler", Shape::Str),
    ("error_code", Shape::ErrorCode),
    ("error_msg", Shape::Str),
    ("fragments", Shape::StrList),
    ("config_full", Shape::Str),
    ("platform", Shape::Str),
    ("runtime", Shape::Str),
    ("job_id", Shape::Str),
    ("job_context", Shape::Str),
    ("kernel_type", Shape::Str),
    ("regression", Shape::Oid),
];

const TEST_FIELDS: &[(&str, Shape)] = &[
    ("error_code", Shape::ErrorCode),
    ("error_msg", Shape::Str),
    ("test_source", Shape::Url),
    ("test_revision", Shape::Revision),
    ("platform", Shape::Str),
    ("device", Shape::Str),
    ("runtime", Shape::Str),
    ("job_id", Shape::Str),
    ("job_context", Shape::Str),
    ("regression", Shape::Oid),
    ("kernel_revision", Shape::Revision),
    ("arch", Shape::Str),
    ("defconfig", Shape::Str),
    ("config_full", Shape::Str),
    ("compiler", Shape::Str),
    ("kernel_type", Shape::Str),
    ("misc", Shape::Object),
];

const CHECKOUT_FIELDS: &[(&str, Shape)] = &[
    ("kernel_revision", Shape::Revision),
    ("error_code", Shape::CheckoutErrorCode),
    ("error_msg", Shape::Str),
    ("architecture_filter", Shape::StrList),
];

const REGRESSION_FIELDS: &[(&str, Shape)] = &[
    ("fail_node", Shape::Oid),
    ("pass_node", Shape::Oid),
    ("node_sequence", Shape::OidList),
    ("error_code", Shape::ErrorCode),
    ("error_msg", Shape::Str),
    ("failed_kernel_revision", Shape::Revision),
    ("arch", Shape::Str),
    ("defconfig", Shape::Str),
    ("config_full", Shape::Str),
    ("compiler", Shape::Str),
    ("platform", Shape::Str),
    ("device", Shape::Str),
];

/// Checks a node's `data` against the model of `kind`, recording every problem under `data.*`.
pub fn validate_data(
    kind: NodeKind,
    data: Option<&Map<String, Value>>,
    errors: &mut ValidationErrors,
) {
    let fields = match kind {
        NodeKind::Checkout => CHECKOUT_FIELDS,
        NodeKind::Kbuild => KBUILD_FIELDS,
        NodeKind::Test | NodeKind::Job => TEST_FIELDS,
        NodeKind::Regression => REGRESSION_FIELDS,
        NodeKind::Process => return,
    };
    match data {
        Some(obj) => check_fields(fields, "data", obj, errors),
        None if kind == NodeKind::Checkout => errors.push("data", "Input should be a valid object"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(kind: NodeKind, data: Value) -> Vec<String> {
        let mut errors = ValidationErrors::default();
        validate_data(kind, data.as_object(), &mut errors);
        errors
            .0
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn checkout_revision_requires_fields_and_reports_all() {
        let p = problems(
            NodeKind::Checkout,
            json!({"kernel_revision": {"tree": "mainline", "version": {"version": "6"}}}),
        );
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(
            p.iter()
                .any(|s| s.starts_with("data.kernel_revision.url: Field required"))
        );
        assert!(
            p.iter()
                .any(|s| s.starts_with("data.kernel_revision.version.patchlevel: Field required"))
        );
        assert!(p.iter().any(|s| {
            s.starts_with("data.kernel_revision.version.version: Input should be a valid integer")
        }));
    }

    #[test]
    fn error_codes_and_ids_are_checked() {
        assert!(
            problems(
                NodeKind::Test,
                json!({"error_code": "Infrastructure", "misc": {}})
            )
            .is_empty()
        );
        assert_eq!(
            problems(NodeKind::Test, json!({"error_code": "nope"})).len(),
            1
        );
        assert_eq!(
            problems(NodeKind::Checkout, json!({"error_code": "submit_error"})).len(),
            1
        );
        let p = problems(
            NodeKind::Regression,
            json!({"node_sequence": ["zz", "65bb6a0a8e0f0d7d0c1b2a3f"]}),
        );
        assert_eq!(
            p,
            vec!["data.node_sequence.0: 'zz' is not a valid ObjectId".to_owned()]
        );
        assert!(problems(NodeKind::Process, json!({"anything": [1, 2]})).is_empty());
        let mut errors = ValidationErrors::default();
        validate_data(NodeKind::Checkout, None, &mut errors);
        assert_eq!(errors.0.len(), 1);
    }

    #[test]
    fn typed_views_round_trip_with_extra_keys() {
        let data = json!({"arch": "x86_64", "defconfig": "defconfig", "custom": {"a": 1}});
        let kb: KbuildData = serde_json::from_value(data.clone()).unwrap();
        assert_eq!(kb.arch.as_deref(), Some("x86_64"));
        assert_eq!(kb.extra.get("custom"), Some(&json!({"a": 1})));
        let back = serde_json::to_value(&kb).unwrap();
        assert_eq!(back["custom"], data["custom"]);
        assert_eq!(
            "Unexisting permission codename."
                .parse::<ErrorCode>()
                .unwrap(),
            ErrorCode::UnexistingPermissionCodename
        );
        for code in ErrorCode::ALL {
            let s = serde_json::to_string(&code).unwrap();
            assert_eq!(s, format!("\"{}\"", code.as_str()));
        }
    }
}
