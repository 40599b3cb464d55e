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
use super::shape::{self, Field, Shape};
use super::validate::{ModelError, ValidationErrors};

/// The kinds a node can be written as.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
        // The variants are declared in the order of the names.
        ERROR_CODE_NAMES[self as usize]
    }
}

impl FromStr for ErrorCode {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ModelError::not_one_of("error_code", &ERROR_CODE_NAMES, s))
    }
}

/// A kernel version, as read from the top-level Makefile.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckoutData {
    /// The revision.
    pub kernel_revision: Option<Revision>,
    /// `node_timeout`, `git_checkout_failure` or `git_commit_error`.
    pub error_code: Option<String>,
    /// Error text.
    pub error_msg: Option<String>,
    /// Architectures to build.
    pub architecture_filter: Option<Vec<String>>,
    /// Keys beyond the model, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of a `kbuild` node.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KbuildData {
    /// The revision.
    pub kernel_revision: Option<Revision>,
    /// Architecture.
    pub arch: Option<String>,
    /// Defconfig.
    pub defconfig: Option<String>,
    /// Compiler, e.g. `gcc-12`.
    pub compiler: Option<String>,
    /// Error code.
    pub error_code: Option<ErrorCode>,
    /// Error text.
    pub error_msg: Option<String>,
    /// Config fragments.
    pub fragments: Option<Vec<String>>,
    /// Full config name.
    pub config_full: Option<String>,
    /// Platform.
    pub platform: Option<String>,
    /// Runtime name.
    pub runtime: Option<String>,
    /// Runtime job id.
    pub job_id: Option<String>,
    /// Runtime job context.
    pub job_context: Option<String>,
    /// Kernel image type.
    pub kernel_type: Option<String>,
    /// Regression node.
    pub regression: Option<ObjectId>,
    /// Keys beyond the model, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of `test` and `job` nodes.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TestData {
    /// Error code.
    pub error_code: Option<ErrorCode>,
    /// Error text.
    pub error_msg: Option<String>,
    /// Test source URL.
    pub test_source: Option<String>,
    /// Test source revision.
    pub test_revision: Option<Revision>,
    /// Platform.
    pub platform: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// Runtime name.
    pub runtime: Option<String>,
    /// Runtime job id.
    pub job_id: Option<String>,
    /// Runtime job context.
    pub job_context: Option<String>,
    /// Regression node.
    pub regression: Option<ObjectId>,
    /// The kernel revision under test.
    pub kernel_revision: Option<Revision>,
    /// Architecture.
    pub arch: Option<String>,
    /// Defconfig.
    pub defconfig: Option<String>,
    /// Full config name.
    pub config_full: Option<String>,
    /// Compiler.
    pub compiler: Option<String>,
    /// Kernel image type.
    pub kernel_type: Option<String>,
    /// Anything else.
    pub misc: Map<String, Value>,
    /// Keys beyond the model, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of a `regression` node.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegressionData {
    /// The first failing node.
    pub fail_node: Option<ObjectId>,
    /// The last passing node.
    pub pass_node: Option<ObjectId>,
    /// Nodes that kept failing since.
    pub node_sequence: Vec<ObjectId>,
    /// Error code.
    pub error_code: Option<ErrorCode>,
    /// Error text.
    pub error_msg: Option<String>,
    /// The revision where it started failing.
    pub failed_kernel_revision: Option<Revision>,
    /// Architecture.
    pub arch: Option<String>,
    /// Defconfig.
    pub defconfig: Option<String>,
    /// Full config name.
    pub config_full: Option<String>,
    /// Compiler.
    pub compiler: Option<String>,
    /// Platform.
    pub platform: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// Keys beyond the model, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Every error code's wire string (pydantic's enum text lists them in this order).
pub const ERROR_CODE_NAMES: [&str; 15] = [
    "invalid_job_params",
    "submit_error",
    "node_timeout",
    "Infrastructure",
    "Canceled",
    "Job",
    "Bug",
    "Test",
    "Configuration",
    "LAVATimeout",
    "MultinodeTimeout",
    "ObjectNotPersisted",
    "Unexisting permission codename.",
    "job_generation_error",
    "kbuild_internal_error",
];

/// A checkout's error codes: upstream's two, and `git_commit_error`, which upstream's own
/// tarball service sets (upstream's API refused it).
pub const CHECKOUT_ERROR_CODE_NAMES: [&str; 3] =
    ["node_timeout", "git_checkout_failure", "git_commit_error"];

const KERNEL_VERSION_MODEL: &[Field] = &[
    Field::required("version", Shape::Int),
    Field::required("patchlevel", Shape::Int),
    Field::opt("sublevel", Shape::Int),
    Field::opt("extra", Shape::Str),
    Field::opt("name", Shape::Str),
];

const REVISION_MODEL: &[Field] = &[
    Field::required("tree", Shape::Str),
    Field::required("url", Shape::Url),
    Field::required("branch", Shape::Str),
    Field::required("commit", Shape::Str),
    Field::opt("describe", Shape::Str),
    Field::opt(
        "version",
        Shape::Model("KernelVersion", KERNEL_VERSION_MODEL),
    ),
    Field::opt("patchset", Shape::Str),
    Field::non_null("commit_tags", Shape::StrList),
    Field::opt("commit_message", Shape::Str),
    Field::opt("tip_of_branch", Shape::Bool),
];

const REVISION: Shape = Shape::Model("Revision", REVISION_MODEL);
const ERROR_CODE: Shape = Shape::Enum(&ERROR_CODE_NAMES);

const CHECKOUT_MODEL: &[Field] = &[
    Field::opt("kernel_revision", REVISION),
    Field::opt("error_code", Shape::Enum(&CHECKOUT_ERROR_CODE_NAMES)),
    Field::opt("error_msg", Shape::Str),
    Field::opt("architecture_filter", Shape::StrList),
];

const KBUILD_MODEL: &[Field] = &[
    Field::opt("kernel_revision", REVISION),
    Field::opt("arch", Shape::Str),
    Field::opt("defconfig", Shape::Str),
    Field::opt("compiler", Shape::Str),
    Field::opt("error_code", ERROR_CODE),
    Field::opt("error_msg", Shape::Str),
    Field::opt("fragments", Shape::StrList),
    Field::opt("config_full", Shape::Str),
    Field::opt("platform", Shape::Str),
    Field::opt("runtime", Shape::Str),
    Field::opt("job_id", Shape::Str),
    Field::opt("job_context", Shape::Str),
    Field::opt("kernel_type", Shape::Str),
    Field::opt("regression", Shape::Oid),
];

const TEST_MODEL: &[Field] = &[
    Field::opt("error_code", ERROR_CODE),
    Field::opt("error_msg", Shape::Str),
    Field::opt("test_source", Shape::Url),
    Field::opt("test_revision", REVISION),
    Field::opt("platform", Shape::Str),
    Field::opt("device", Shape::Str),
    Field::opt("runtime", Shape::Str),
    Field::opt("job_id", Shape::Str),
    Field::opt("job_context", Shape::Str),
    Field::opt("regression", Shape::Oid),
    Field::opt("kernel_revision", REVISION),
    Field::opt("arch", Shape::Str),
    Field::opt("defconfig", Shape::Str),
    Field::opt("config_full", Shape::Str),
    Field::opt("compiler", Shape::Str),
    Field::opt("kernel_type", Shape::Str),
    Field::opt("misc", Shape::Dict),
];

const REGRESSION_MODEL: &[Field] = &[
    Field::opt("fail_node", Shape::Oid),
    Field::opt("pass_node", Shape::Oid),
    Field::opt("node_sequence", Shape::OidList),
    Field::opt("error_code", ERROR_CODE),
    Field::opt("error_msg", Shape::Str),
    Field::opt("failed_kernel_revision", REVISION),
    Field::opt("arch", Shape::Str),
    Field::opt("defconfig", Shape::Str),
    Field::opt("config_full", Shape::Str),
    Field::opt("compiler", Shape::Str),
    Field::opt("platform", Shape::Str),
    Field::opt("device", Shape::Str),
];

impl NodeKind {
    /// The name of upstream's pydantic model for nodes of this kind (`Checkout`, `Kbuild`,
    /// ...), as its validation errors name it.
    pub fn model_name(self) -> &'static str {
        match self {
            NodeKind::Checkout => "Checkout",
            NodeKind::Kbuild => "Kbuild",
            NodeKind::Test => "Test",
            NodeKind::Job => "Job",
            NodeKind::Process => "Process",
            NodeKind::Regression => "Regression",
        }
    }

    /// The model of `data` for this kind and its class name; `None` for `process`, whose
    /// `data` is free-form.
    fn data_model(self) -> Option<(&'static str, &'static [Field])> {
        match self {
            NodeKind::Checkout => Some(("CheckoutData", CHECKOUT_MODEL)),
            NodeKind::Kbuild => Some(("KbuildData", KBUILD_MODEL)),
            NodeKind::Test | NodeKind::Job => Some(("TestData", TEST_MODEL)),
            NodeKind::Regression => Some(("RegressionData", REGRESSION_MODEL)),
            NodeKind::Process => None,
        }
    }
}

/// Checks a node's `data` against the model of `kind`, recording every problem under `data.*`.
/// `data` must be an object for every kind but `process` (upstream's sub-models refuse `null`).
pub fn validate_data(
    kind: NodeKind,
    data: Option<&Map<String, Value>>,
    errors: &mut ValidationErrors,
) {
    let Some((class_name, fields)) = kind.data_model() else {
        return;
    };
    let loc = [Value::from("data")];
    match data {
        Some(obj) => {
            // The checks only read: normalised forms are not written back into `data`.
            let mut copy = obj.clone();
            shape::check_object(fields, &loc, &mut copy, errors);
        }
        None => shape::check_value(
            Shape::Model(class_name, fields),
            &loc,
            &mut Value::Null,
            errors,
        ),
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
            .problems
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
            vec!["data.node_sequence.0: Value error, Invalid ObjectId: zz".to_owned()]
        );
        assert!(problems(NodeKind::Process, json!({"anything": [1, 2]})).is_empty());
        let mut errors = ValidationErrors::default();
        validate_data(NodeKind::Checkout, None, &mut errors);
        assert_eq!(errors.problems.len(), 1);
        assert_eq!(errors.problems[0].kind, "model_type");
        let mut errors = ValidationErrors::default();
        validate_data(NodeKind::Process, None, &mut errors);
        assert!(errors.is_empty());
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
