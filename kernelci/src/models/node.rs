//! The node: one result (a checkout, a build, a test, ...) in the tree KernelCI keeps.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::kinds::{self, NodeKind};
use super::shape;
use super::validate::{ModelError, ValidationErrors};
use super::{ObjectId, Timestamp};

/// How long a node may take to reach `done` when its creator does not say: 6 hours.
pub const DEFAULT_TIMEOUT_SECS: i64 = 6 * 3600;

/// Where a node is in its life. See [`State::can_transition_to`].
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Work is going on (the default).
    #[default]
    Running,
    /// The node's own work is done and its artifacts can be used; children may still attach.
    Available,
    /// Waiting for children to finish.
    Closing,
    /// Final.
    Done,
}

impl State {
    /// Every state, in life order.
    pub const ALL: [State; 4] = [
        State::Running,
        State::Available,
        State::Closing,
        State::Done,
    ];

    /// Every state's wire string, in life order.
    pub const NAMES: [&'static str; 4] = ["running", "available", "closing", "done"];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        // The variants are declared in the order of the names.
        Self::NAMES[self as usize]
    }

    /// The upstream state machine (api spec §4.4): a node only moves forward
    /// (running → available → closing → done, any step may be skipped), and staying in the
    /// same state is always allowed.
    pub fn can_transition_to(self, to: State) -> bool {
        self <= to
    }

    /// [`State::can_transition_to`] as a `Result` with upstream's error text.
    pub fn check_transition(self, to: State) -> Result<(), ModelError> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(ModelError::Transition { from: self, to })
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ModelError::not_one_of("state", &State::NAMES, s))
    }
}

/// The outcome of a node.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultValue {
    /// It worked.
    Pass,
    /// It ran and failed.
    Fail,
    /// It was not run.
    Skip,
    /// It could not finish (infrastructure error, timeout, ...).
    Incomplete,
}

impl ResultValue {
    /// Every result value.
    pub const ALL: [ResultValue; 4] = [
        ResultValue::Pass,
        ResultValue::Fail,
        ResultValue::Skip,
        ResultValue::Incomplete,
    ];

    /// Every result's wire string.
    pub const NAMES: [&'static str; 4] = ["pass", "fail", "skip", "incomplete"];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        // The variants are declared in the order of the names.
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for ResultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResultValue {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResultValue::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ModelError::not_one_of("result", &ResultValue::NAMES, s))
    }
}

fn default_kind() -> String {
    "node".to_owned()
}
fn default_object() -> Option<Map<String, Value>> {
    Some(Map::new())
}
fn default_artifacts() -> Option<Map<String, Value>> {
    Some(Map::new())
}
fn default_platform_filter() -> Option<Vec<String>> {
    Some(Vec::new())
}
fn default_timeout() -> Timestamp {
    Timestamp::now().plus_secs(DEFAULT_TIMEOUT_SECS)
}

/// A node, with the 23 fields upstream always sends, in upstream's order.
///
/// Decoding fills upstream's defaults (`kind: "node"`, `state: "running"`, `created`/`updated`
/// now, `timeout` now + 6 h, empty `artifacts`/`data`/`debug`/`platform_filter`/`user_groups`),
/// accepts `_id` for `id`, and ignores unknown top-level keys. `data` is kept exactly as sent
/// (extra keys included); [`Node::validate`] checks it against the kind's model.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The node's id; absent before the store assigns one.
    #[serde(alias = "_id", default)]
    pub id: Option<ObjectId>,
    /// One of `checkout`, `kbuild`, `test`, `job`, `process`, `regression` for any write;
    /// `node` (the default) is readable but never writable.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Name (for tests, the test case name).
    pub name: String,
    /// Names from the root down to this node.
    pub path: Vec<String>,
    /// Group name (for test cases, the job name).
    #[serde(default)]
    pub group: Option<String>,
    /// The parent node.
    #[serde(default)]
    pub parent: Option<ObjectId>,
    /// Life-cycle state.
    #[serde(default = "State::default_state")]
    pub state: State,
    /// Outcome, once known.
    #[serde(default)]
    pub result: Option<ResultValue>,
    /// Artifact name → absolute http(s) URL.
    #[serde(default = "default_artifacts")]
    pub artifacts: Option<Map<String, Value>>,
    /// Kind-specific data (see [`super::kinds`]).
    #[serde(default = "default_object")]
    pub data: Option<Map<String, Value>>,
    /// Free-form debugging data.
    #[serde(default = "default_object")]
    pub debug: Option<Map<String, Value>>,
    /// Only these jobs may run below this node, when set.
    #[serde(default)]
    pub jobfilter: Option<Vec<String>>,
    /// Only these platforms may run below this node, when non-empty.
    #[serde(default = "default_platform_filter")]
    pub platform_filter: Option<Vec<String>>,
    /// Creation time.
    #[serde(default = "Timestamp::now")]
    pub created: Timestamp,
    /// Last update time.
    #[serde(default = "Timestamp::now")]
    pub updated: Timestamp,
    /// Deadline for reaching `done`.
    #[serde(default = "default_timeout")]
    pub timeout: Timestamp,
    /// Minimum time to stay `available`.
    #[serde(default)]
    pub holdoff: Option<Timestamp>,
    /// The user that created the node.
    #[serde(default)]
    pub owner: Option<String>,
    /// Who submitted it (upstream: a token hash).
    #[serde(default)]
    pub submitter: Option<String>,
    /// Tree id, shared by a whole node tree.
    #[serde(default)]
    pub treeid: Option<String>,
    /// Groups whose members may edit the node.
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Whether the KCIDB bridge has sent this node.
    #[serde(default)]
    pub processed_by_kcidb_bridge: bool,
    /// How many times the job was retried.
    #[serde(default)]
    pub retry_counter: i64,
}

impl State {
    fn default_state() -> State {
        State::Running
    }
}

impl Node {
    /// A new node of `kind` with upstream's defaults and `path = [name]`.
    pub fn new(kind: NodeKind, name: impl Into<String>) -> Node {
        let name = name.into();
        let now = Timestamp::now();
        Node {
            id: None,
            kind: kind.as_str().to_owned(),
            path: vec![name.clone()],
            name,
            group: None,
            parent: None,
            state: State::Running,
            result: None,
            artifacts: Some(Map::new()),
            data: Some(Map::new()),
            debug: Some(Map::new()),
            jobfilter: None,
            platform_filter: Some(Vec::new()),
            created: now,
            updated: now,
            timeout: now.plus_secs(DEFAULT_TIMEOUT_SECS),
            holdoff: None,
            owner: None,
            submitter: None,
            treeid: None,
            user_groups: Vec::new(),
            processed_by_kcidb_bridge: false,
            retry_counter: 0,
        }
    }

    /// Decodes a node from JSON bytes. Errors name the field (`data.kernel_revision`,
    /// `retry_counter`, ...) and say what was wrong; they never panic.
    pub fn from_json(bytes: &[u8]) -> Result<Node, ModelError> {
        super::validate::decode(bytes)
    }

    /// Decodes a node from a JSON value, with the same errors as [`Node::from_json`].
    pub fn from_value(value: Value) -> Result<Node, ModelError> {
        super::validate::decode_value(value)
    }

    /// The node as a JSON value with all 23 keys.
    pub fn to_value(&self) -> Value {
        // Serialising plain data into a `Value` cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The kind, when it is one of the six writable kinds.
    pub fn node_kind(&self) -> Option<NodeKind> {
        self.kind.parse().ok()
    }

    /// A value inside `data`, by dotted path (`kernel_revision.tree`).
    pub fn data_path(&self, dotted: &str) -> Option<&Value> {
        let mut parts = dotted.split('.');
        let first = parts.next()?;
        let mut cur = self.data.as_ref()?.get(first)?;
        for part in parts {
            cur = cur.as_object()?.get(part)?;
        }
        Some(cur)
    }

    /// A string inside `data`, by dotted path.
    pub fn data_str(&self, dotted: &str) -> Option<&str> {
        self.data_path(dotted).and_then(Value::as_str)
    }

    /// Checks the node for a write (create or update) against upstream's model for its kind
    /// (`Checkout`, `Kbuild`, ...): the kind must be one of the six kinds, `artifacts` absolute
    /// http(s) URLs, `data` must match the kind's model and `user_groups` be unique. Every
    /// problem is reported, with pydantic's types and texts, under the model's name.
    ///
    /// On success, artifact URLs are normalised (`https://x.org` → `https://x.org/`).
    pub fn validate(&mut self) -> Result<(), ModelError> {
        let kind: NodeKind = self.kind.parse()?;
        if self.parent.is_some() && self.parent == self.id {
            return Err(ModelError::SelfParent);
        }
        let mut errors = ValidationErrors::for_model(kind.model_name());
        if let Some(artifacts) = self.artifacts.as_mut() {
            let mut value = Value::Object(std::mem::take(artifacts));
            shape::check_value(
                shape::Shape::HttpUrlMap,
                &[Value::from("artifacts")],
                &mut value,
                &mut errors,
            );
            if let Value::Object(map) = value {
                *artifacts = map;
            }
        }
        kinds::validate_data(kind, self.data.as_ref(), &mut errors);
        super::input::check_unique_groups(&self.user_groups, &mut errors);
        errors.into_result()
    }

    /// Upstream's POST/PUT convenience: `data.kernel_revision.version.{version,patchlevel,
    /// sublevel}` given as decimal strings become integers.
    pub fn coerce_version_numbers(&mut self) {
        let Some(version) = self
            .data
            .as_mut()
            .and_then(|d| d.get_mut("kernel_revision"))
            .and_then(Value::as_object_mut)
            .and_then(|r| r.get_mut("version"))
            .and_then(Value::as_object_mut)
        else {
            return;
        };
        for key in ["version", "patchlevel", "sublevel"] {
            if let Some(Value::String(s)) = version.get(key)
                && let Ok(n) = s.trim().parse::<i64>()
            {
                version.insert(key.to_owned(), Value::from(n));
            }
        }
    }
}

/// Checks that `input` is an absolute http or https URL and returns its normalised form.
pub fn normalise_http_url(input: &str) -> Result<String, String> {
    let url =
        url::Url::parse(input.trim()).map_err(|e| format!("Input should be a valid URL, {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url.to_string()),
        "http" | "https" => Err("URL host is required".to_owned()),
        other => Err(format!(
            "URL scheme should be 'http' or 'https', not '{other}'"
        )),
    }
}

/// The body of `PATCH /node/{id}`: each field that is present replaces the stored one.
///
/// A field set to `Some(None)` was sent as `null`; `None` means it was not sent.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct NodePatch {
    /// New state (its transition is checked).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<Option<State>>,
    /// New result.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Option<ResultValue>>,
    /// New artifacts (replaces all).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub artifacts: Option<Option<Map<String, Value>>>,
    /// New data (replaces all; not deep-merged).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Option<Map<String, Value>>>,
    /// New debug data.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug: Option<Option<Map<String, Value>>>,
    /// New job filter.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub jobfilter: Option<Option<Vec<String>>>,
    /// New platform filter.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub platform_filter: Option<Option<Vec<String>>>,
    /// New timeout.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Option<Timestamp>>,
    /// New holdoff.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub holdoff: Option<Option<Timestamp>>,
    /// New KCIDB flag.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub processed_by_kcidb_bridge: Option<Option<bool>>,
}

fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl NodePatch {
    /// Whether no known field was sent (upstream answers 400 "No fields to update").
    pub fn is_empty(&self) -> bool {
        self == &NodePatch::default()
    }

    /// Applies the patch to `node`: checks the state transition, replaces the fields that were
    /// sent, applies the KCIDB flag rule, sets `updated`, and validates the result.
    pub fn apply(&self, node: &mut Node) -> Result<(), ModelError> {
        let old_state = node.state;
        if let Some(Some(state)) = self.state {
            old_state.check_transition(state)?;
            node.state = state;
        }
        if let Some(result) = self.result {
            node.result = result;
        }
        if let Some(artifacts) = &self.artifacts {
            node.artifacts = artifacts.clone();
        }
        if let Some(data) = &self.data {
            node.data = data.clone();
        }
        if let Some(debug) = &self.debug {
            node.debug = debug.clone();
        }
        if let Some(jobfilter) = &self.jobfilter {
            node.jobfilter = jobfilter.clone();
        }
        if let Some(platform_filter) = &self.platform_filter {
            node.platform_filter = platform_filter.clone();
        }
        if let Some(Some(timeout)) = self.timeout {
            node.timeout = timeout;
        }
        if let Some(holdoff) = self.holdoff {
            node.holdoff = holdoff;
        }
        node.processed_by_kcidb_bridge = match self.processed_by_kcidb_bridge {
            Some(flag) if node.state == old_state => flag.unwrap_or(false),
            _ => false,
        };
        node.updated = Timestamp::now();
        node.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_matches_upstream_table() {
        use State::*;
        let allowed = [
            (Running, [true, true, true, true]),
            (Available, [false, true, true, true]),
            (Closing, [false, false, true, true]),
            (Done, [false, false, false, true]),
        ];
        for (from, row) in allowed {
            for (to, ok) in State::ALL.into_iter().zip(row) {
                assert_eq!(from.can_transition_to(to), ok, "{from} -> {to}");
            }
        }
        let err = Done.check_transition(Running).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Transition not allowed with state: running"
        );
    }

    #[test]
    fn wire_names_match_serde() {
        for st in State::ALL {
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        for r in ResultValue::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(
            "finished".parse::<State>().unwrap_err().to_string(),
            "1 validation error\nstate\n  Input should be 'running', 'available', 'closing' or \
             'done' [type=enum, input_value='finished', input_type=str]"
        );
    }

    #[test]
    fn artifacts_are_normalised_and_checked() {
        assert_eq!(
            normalise_http_url("https://x.org").unwrap(),
            "https://x.org/"
        );
        assert_eq!(
            normalise_http_url("http://x.org/a b").unwrap(),
            "http://x.org/a%20b"
        );
        assert!(normalise_http_url("ftp://x.org/a").is_err());
        assert!(normalise_http_url("/relative").is_err());
    }

    #[test]
    fn patch_rules() {
        let mut node = Node::new(NodeKind::Test, "t");
        node.processed_by_kcidb_bridge = true;
        let patch: NodePatch =
            serde_json::from_str(r#"{"state": "done", "result": "pass"}"#).unwrap();
        patch.apply(&mut node).unwrap();
        assert_eq!(node.state, State::Done);
        assert_eq!(node.result, Some(ResultValue::Pass));
        assert!(!node.processed_by_kcidb_bridge);

        let back: NodePatch = serde_json::from_str(r#"{"state": "running"}"#).unwrap();
        assert!(back.apply(&mut node).is_err());

        let flag: NodePatch =
            serde_json::from_str(r#"{"processed_by_kcidb_bridge": true}"#).unwrap();
        flag.apply(&mut node).unwrap();
        assert!(node.processed_by_kcidb_bridge);

        let unknown: NodePatch = serde_json::from_str(r#"{"name": "x"}"#).unwrap();
        assert!(unknown.is_empty());
        let null_state: NodePatch = serde_json::from_str(r#"{"state": null}"#).unwrap();
        assert!(!null_state.is_empty());
    }
}
