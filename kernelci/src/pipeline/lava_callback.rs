//! The LAVA callback receiver: callback bodies into node result hierarchies.
//!
//! A LAVA lab sends a "notify callback" when a job finishes (`notify.callback` in the job
//! definition, see `spec/kernelci-pipeline.md` §4.7.4 and §1.6). This module has two layers:
//!
//! - [`Callback`]: a parsed callback body, pure and synchronous. It turns LAVA's results
//!   (`{suite: YAML list of test cases}`) into the upstream result tree — the `lava` suite
//!   becomes a `setup` node with `login` and `kernelmsg` cases, every other suite
//!   `<n>_<name>` becomes a node `<name>` whose tests are grouped by `metadata.set` — and
//!   computes the job result and error code with upstream's rules
//!   ([`Callback::hierarchy`]). It also extracts the serial console log
//!   ([`Callback::log_text`]).
//! - [`LavaCallbackService`]: the receiver. `POST /node/<id>` checks the `Authorization`
//!   header against the labs' `callback_token`/`runtime_token` values, replies `202` at once
//!   and processes the callback in the background, one callback at a time per node: it uploads
//!   the log (`<job>-<id>/log.txt.gz`), the structured log (`lava-logs.yaml`) and the callback
//!   itself (`lava_callback.json.gz`, without the token) through [`Storage`], then sends the
//!   result hierarchy with `PUT /nodes/<id>`.
//!
//! Deliberate differences from upstream, each tested:
//! - a test result LAVA reports as `unknown` becomes a node without a result (upstream sends
//!   the string and the API refuses the whole hierarchy);
//! - an `error_type` that is not one of the API's error codes is recorded as
//!   `Infrastructure`, with the LAVA type kept at the start of `error_msg` (upstream's PUT
//!   would be refused);
//! - a callback without a `lava` suite does not crash the stage-result lookup.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use warp::Filter;
use warp::http::StatusCode;

use crate::ErrorKind;
use crate::client::{Api, ClientError, Hierarchy};
use crate::models::{ErrorCode, Node, NodeKind, ObjectId, ResultValue, State};
use crate::storage::{Storage, StorageError, UploadFile};

/// LAVA's legacy job status numbers (`lava_scheduler_app/models.py`).
pub mod status {
    /// Submitted, not started.
    pub const SUBMITTED: i64 = 0;
    /// Running.
    pub const RUNNING: i64 = 1;
    /// Finished, health Complete.
    pub const COMPLETE: i64 = 2;
    /// Finished, health Incomplete.
    pub const INCOMPLETE: i64 = 3;
    /// Finished, health Canceled.
    pub const CANCELED: i64 = 4;
    /// Being canceled.
    pub const CANCELING: i64 = 5;
}

/// The data keys a child node inherits from the job node (upstream `submit_results`).
const INHERITED_DATA: [&str; 8] = [
    "kernel_revision",
    "kernel_type",
    "arch",
    "defconfig",
    "config_full",
    "compiler",
    "platform",
    "runtime",
];

/// What went wrong while handling a callback.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The body is not a LAVA callback (not JSON, a field of the wrong type, bad YAML).
    #[error("invalid LAVA callback: {0}")]
    Invalid(String),
    /// The `Authorization` header matched no lab token.
    #[error("unauthorized")]
    Unauthorized,
    /// The callback names an API or storage configuration the receiver does not have.
    #[error("unknown {what} configuration {name:?}")]
    UnknownConfig {
        /// `api` or `storage`.
        what: &'static str,
        /// The name from the job definition's metadata.
        name: String,
    },
    /// The job node does not exist.
    #[error("node {0} not found")]
    NodeNotFound(String),
    /// An API call failed.
    #[error("API: {0}")]
    Api(#[from] ClientError),
    /// A storage upload failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl CallbackError {
    /// The cross-module kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CallbackError::Invalid(_) | CallbackError::UnknownConfig { .. } => ErrorKind::Invalid,
            CallbackError::Unauthorized => ErrorKind::Unauthorized,
            CallbackError::NodeNotFound(_) => ErrorKind::NotFound,
            CallbackError::Api(e) => e.kind(),
            CallbackError::Storage(e) => e.kind(),
        }
    }
}

fn yaml_error(what: &str, e: impl std::fmt::Display) -> CallbackError {
    CallbackError::Invalid(format!("{what}: {e}"))
}

/// One test case of a LAVA results suite (the YAML list items of `results.<suite>`).
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// The case name (`login-action`, `kernel-is-linux`, ...).
    pub name: String,
    /// LAVA's result string (`pass`, `fail`, `skip`, `unknown`).
    pub result: String,
    /// `metadata.set`, when the case belongs to a test set.
    pub set: Option<String>,
    /// The measurement as a number, when LAVA recorded one.
    pub measurement: Option<f64>,
    /// `metadata.error_type` (on the `lava` suite's `job` case).
    pub error_type: Option<String>,
    /// `metadata.error_msg` (on the `lava` suite's `job` case).
    pub error_msg: Option<String>,
}

fn yaml_str(value: Option<&serde_norway::Value>) -> Option<String> {
    match value? {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn yaml_measurement(value: Option<&serde_norway::Value>) -> Option<f64> {
    match value? {
        serde_norway::Value::Number(n) => n.as_f64(),
        serde_norway::Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Parses one suite's YAML text into its test cases.
pub fn parse_suite(yaml: &str) -> Result<Vec<TestCase>, CallbackError> {
    let items: Vec<serde_norway::Value> =
        serde_norway::from_str(yaml).map_err(|e| yaml_error("results", e))?;
    let mut cases = Vec::with_capacity(items.len());
    for item in items {
        let get = |key: &str| item.get(key);
        let metadata = get("metadata");
        let meta = |key: &str| metadata.and_then(|m| m.get(key));
        cases.push(TestCase {
            name: yaml_str(get("name")).unwrap_or_default(),
            result: yaml_str(get("result")).unwrap_or_default(),
            set: yaml_str(meta("set")).filter(|s| !s.is_empty()),
            measurement: yaml_measurement(get("measurement")),
            error_type: yaml_str(meta("error_type")),
            error_msg: yaml_str(meta("error_msg")),
        });
    }
    Ok(cases)
}

/// The plain result tree of a callback (upstream `get_results`): suites and sets are groups,
/// test cases are leaves holding LAVA's result string. Entries keep upstream's order.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultTree {
    /// A suite or a test set: named entries.
    Group(Vec<(String, ResultTree)>),
    /// A test case: LAVA's result string.
    Case(String),
}

impl ResultTree {
    /// Inserts or replaces `name` keeping the position of the first insertion (a Python dict).
    fn set(entries: &mut Vec<(String, ResultTree)>, name: &str, value: ResultTree) {
        match entries.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => entries.push((name.to_owned(), value)),
        }
    }

    /// The entry `name` of a group.
    pub fn get(&self, name: &str) -> Option<&ResultTree> {
        match self {
            ResultTree::Group(entries) => entries.iter().find(|(n, _)| n == name).map(|e| &e.1),
            ResultTree::Case(_) => None,
        }
    }
}

/// One node of the result hierarchy built from a callback, before it is attached to the job
/// node (see [`Callback::hierarchy`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultNode {
    /// The node name.
    pub name: String,
    /// `job` for suites and sets, `test` for cases.
    pub kind: NodeKind,
    /// The result (`None` for a case LAVA reported as `unknown`, or an empty group).
    pub result: Option<ResultValue>,
    /// Extra data (`misc.measurement` for `os-release`).
    pub data: Option<Map<String, Value>>,
    /// Child nodes.
    pub children: Vec<ResultNode>,
}

impl ResultNode {
    /// The child named `name`.
    pub fn child(&self, name: &str) -> Option<&ResultNode> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// The job-level outcome of a callback.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    /// The job node's result.
    pub result: Option<ResultValue>,
    /// `data.error_code` (set when the job is incomplete).
    pub error_code: Option<String>,
    /// `data.error_msg` (set when the job is incomplete).
    pub error_msg: Option<String>,
    /// The suite nodes.
    pub children: Vec<ResultNode>,
}

/// One line of the structured LAVA log (`{dt, lvl, msg}`), text messages only.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// The timestamp as LAVA wrote it.
    pub dt: Option<String>,
    /// The level (`target`, `info`, `debug`, `results`, ...).
    pub lvl: Option<String>,
    /// The message, stripped, with ESC written as `^[`.
    pub msg: String,
}

/// Maps a LAVA result string to a node result; `unknown` and anything else gives `None`.
pub fn result_value(lava: &str) -> Option<ResultValue> {
    match lava {
        "pass" => Some(ResultValue::Pass),
        "fail" => Some(ResultValue::Fail),
        "skip" => Some(ResultValue::Skip),
        "incomplete" => Some(ResultValue::Incomplete),
        _ => None,
    }
}

/// Upstream `evaluate_test_suite_result`: any fail → fail, else any pass → pass, else any
/// skip → skip, else none.
pub fn evaluate_suite(children: &[ResultNode]) -> Option<ResultValue> {
    let has = |r: ResultValue| children.iter().any(|c| c.result == Some(r));
    [ResultValue::Fail, ResultValue::Pass, ResultValue::Skip]
        .into_iter()
        .find(|r| has(*r))
}

/// A parsed LAVA notify callback body.
#[derive(Debug, Clone)]
pub struct Callback {
    body: Map<String, Value>,
    meta: Map<String, Value>,
    suites: Vec<(String, Vec<TestCase>)>,
}

impl Callback {
    /// Parses a callback body (JSON). The definition's `metadata` and every results suite are
    /// parsed here, so later steps cannot fail on them.
    pub fn parse(body: &[u8]) -> Result<Callback, CallbackError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Invalid(format!("body is not JSON: {e}")))?;
        Callback::from_value(value)
    }

    /// Like [`Callback::parse`], from a JSON value.
    pub fn from_value(value: Value) -> Result<Callback, CallbackError> {
        let Value::Object(body) = value else {
            return Err(CallbackError::Invalid("body is not a JSON object".into()));
        };
        let meta = match body.get("definition") {
            Some(Value::String(def)) => {
                let def: serde_norway::Value =
                    serde_norway::from_str(def).map_err(|e| yaml_error("definition", e))?;
                match def.get("metadata") {
                    Some(m @ serde_norway::Value::Mapping(_)) => {
                        let mut out = Map::new();
                        if let serde_norway::Value::Mapping(map) = m {
                            for (k, v) in map {
                                if let (Some(k), Ok(v)) =
                                    (yaml_str(Some(k)), serde_json::to_value(v))
                                {
                                    out.insert(k, v);
                                }
                            }
                        }
                        out
                    }
                    _ => Map::new(),
                }
            }
            Some(Value::Null) | None => Map::new(),
            Some(_) => return Err(CallbackError::Invalid("definition is not a string".into())),
        };
        let mut suites = Vec::new();
        match body.get("results") {
            Some(Value::Object(results)) => {
                for (name, yaml) in results {
                    let cases = match yaml {
                        Value::String(text) => parse_suite(text)
                            .map_err(|e| CallbackError::Invalid(format!("results.{name}: {e}")))?,
                        Value::Null => Vec::new(),
                        _ => {
                            return Err(CallbackError::Invalid(format!(
                                "results.{name} is not a YAML string"
                            )));
                        }
                    };
                    suites.push((name.clone(), cases));
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => return Err(CallbackError::Invalid("results is not an object".into())),
        }
        if let Some(v) = body.get("status")
            && !v.is_i64()
        {
            return Err(CallbackError::Invalid("status is not an integer".into()));
        }
        Ok(Callback { body, meta, suites })
    }

    /// The raw body.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The LAVA job id (`id`).
    pub fn job_id(&self) -> Option<i64> {
        self.body.get("id").and_then(Value::as_i64)
    }

    /// LAVA's legacy status number (see [`status`]).
    pub fn status(&self) -> Option<i64> {
        self.body.get("status").and_then(Value::as_i64)
    }

    /// The job result from the status: complete → pass; incomplete, canceled, canceling →
    /// incomplete; anything else → none.
    pub fn job_status(&self) -> Option<ResultValue> {
        match self.status()? {
            status::COMPLETE => Some(ResultValue::Pass),
            status::INCOMPLETE | status::CANCELED | status::CANCELING => {
                Some(ResultValue::Incomplete)
            }
            _ => None,
        }
    }

    /// The device the job ran on (`actual_device_id`).
    pub fn device_id(&self) -> Option<&str> {
        self.body
            .get("actual_device_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A key of the job definition's `metadata` (`node_id`, `api_config_name`,
    /// `storage_config_name`, ...).
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.meta.get(key)
    }

    /// A metadata key as a string.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta(key).and_then(Value::as_str)
    }

    /// The results suites in callback order, each with its parsed cases.
    pub fn suites(&self) -> &[(String, Vec<TestCase>)] {
        &self.suites
    }

    fn lava_suite(&self) -> Option<&[TestCase]> {
        self.suites
            .iter()
            .find(|(n, _)| n == "lava")
            .map(|(_, c)| c.as_slice())
    }

    /// The `lava` suite's `job` case (it carries `error_type`/`error_msg`).
    pub fn job_case(&self) -> Option<&TestCase> {
        // Upstream indexes the stages by name, so the last `job` case wins.
        self.lava_suite()?.iter().rev().find(|c| c.name == "job")
    }

    fn login_case(cases: &[TestCase]) -> Option<&'static str> {
        let mut logins = cases
            .iter()
            .filter(|c| c.name == "auto-login-action" || c.name == "login-action")
            .peekable();
        logins.peek()?;
        Some(if logins.any(|c| c.result == "pass") {
            "pass"
        } else {
            "fail"
        })
    }

    fn kernelmsg_case(cases: &[TestCase]) -> Option<&'static str> {
        let mut msgs = cases
            .iter()
            .filter(|c| c.name == "kernel-messages")
            .peekable();
        msgs.peek()?;
        Some(if msgs.any(|c| c.result == "fail") {
            "fail"
        } else {
            "pass"
        })
    }

    fn suite_tree(cases: &[TestCase]) -> ResultTree {
        let mut entries: Vec<(String, ResultTree)> = Vec::new();
        for case in cases.iter().rev() {
            let leaf = ResultTree::Case(case.result.clone());
            match &case.set {
                Some(set) => {
                    let pos = match entries.iter().position(|(n, _)| n == set) {
                        Some(pos) => pos,
                        None => {
                            entries.push((set.clone(), ResultTree::Group(Vec::new())));
                            entries.len() - 1
                        }
                    };
                    if !matches!(entries[pos].1, ResultTree::Group(_)) {
                        entries[pos].1 = ResultTree::Group(Vec::new());
                    }
                    if let ResultTree::Group(group) = &mut entries[pos].1 {
                        ResultTree::set(group, &case.name, leaf);
                    }
                }
                None => ResultTree::set(&mut entries, &case.name, leaf),
            }
        }
        ResultTree::Group(entries)
    }

    /// The plain result tree (upstream `get_results`): `setup` from the `lava` suite (only
    /// when it has login or kernel-messages cases), then one group per other suite, named
    /// after the part following the first `_` of the suite name.
    pub fn results(&self) -> ResultTree {
        let mut top: Vec<(String, ResultTree)> = Vec::new();
        for (suite, cases) in &self.suites {
            if suite == "lava" {
                let mut setup = Vec::new();
                if let Some(login) = Self::login_case(cases) {
                    setup.push(("login".to_owned(), ResultTree::Case(login.into())));
                }
                if let Some(msg) = Self::kernelmsg_case(cases) {
                    setup.push(("kernelmsg".to_owned(), ResultTree::Case(msg.into())));
                }
                if !setup.is_empty() {
                    ResultTree::set(&mut top, "setup", ResultTree::Group(setup));
                }
            } else {
                let name = suite.split_once('_').map_or("", |(_, rest)| rest);
                ResultTree::set(&mut top, name, Self::suite_tree(cases));
            }
        }
        ResultTree::Group(top)
    }

    /// The `lava` suite's stage result for a suite name (stages `<n>_<name>`; the last match
    /// wins, as upstream's dict walk).
    fn stage_result(&self, suite: &str) -> Option<&str> {
        let cases = self.lava_suite()?;
        // Upstream builds {name: case} (later duplicates win) and walks it in order.
        let mut stages: Vec<(&str, &str)> = Vec::new();
        for case in cases {
            match stages.iter_mut().find(|(n, _)| *n == case.name) {
                Some(entry) => entry.1 = &case.result,
                None => stages.push((&case.name, &case.result)),
            }
        }
        stages
            .iter()
            .filter(|(name, _)| name.split_once('_').map_or("", |(_, rest)| rest) == suite)
            .map(|(_, result)| *result)
            .next_back()
    }

    fn os_release_measurement(&self) -> Option<f64> {
        self.suites
            .iter()
            .find(|(n, _)| n == "0_tast")
            .and_then(|(_, cases)| {
                // Upstream maps by name: the last `os-release` case wins.
                cases.iter().rev().find(|c| c.name == "os-release")
            })
            .and_then(|c| c.measurement)
    }

    fn result_nodes(&self, tree: &[(String, ResultTree)]) -> Vec<ResultNode> {
        tree.iter()
            .map(|(name, value)| match value {
                ResultTree::Group(entries) => {
                    let children = self.result_nodes(entries);
                    let stage = self.stage_result(name).and_then(result_value);
                    let result = match stage {
                        None | Some(ResultValue::Pass) => evaluate_suite(&children),
                        other => other,
                    };
                    ResultNode {
                        name: name.clone(),
                        kind: NodeKind::Job,
                        result,
                        data: None,
                        children,
                    }
                }
                ResultTree::Case(result) => {
                    let data = (name == "os-release").then(|| {
                        let measurement = self
                            .os_release_measurement()
                            .and_then(serde_json::Number::from_f64)
                            .map_or(Value::Null, Value::Number);
                        let mut data = Map::new();
                        data.insert("misc".into(), json!({ "measurement": measurement }));
                        data
                    });
                    ResultNode {
                        name: name.clone(),
                        kind: NodeKind::Test,
                        result: result_value(result),
                        data,
                        children: Vec::new(),
                    }
                }
            })
            .collect()
    }

    /// The job outcome for a job node named `job_name` whose result so far is
    /// `job_result` (normally [`Callback::job_status`], forced to incomplete when the callback
    /// has no log). Upstream `get_hierarchy` rules:
    ///
    /// - incomplete: `error_code`/`error_msg` from the `lava` suite's `job` case metadata
    ///   (`error_type`/`error_msg`), or `Infrastructure`/"Unknown infrastructure error" when
    ///   there is none; a `baseline*` job whose `setup` failed becomes `fail`;
    /// - pass: any failed suite makes it `fail`, but a failed `setup` makes it `incomplete`.
    pub fn outcome(&self, job_name: &str, job_result: Option<ResultValue>) -> JobOutcome {
        let mut error_code = None;
        let mut error_msg = None;
        if job_result == Some(ResultValue::Incomplete) {
            match self.job_case() {
                Some(job) => {
                    error_code.clone_from(&job.error_type);
                    error_msg.clone_from(&job.error_msg);
                }
                None => {
                    error_code = Some("Infrastructure".to_owned());
                    error_msg = Some("Unknown infrastructure error".to_owned());
                }
            }
            // Keep the PUT valid: the API only takes its own error codes.
            if let Some(code) = &error_code
                && code.parse::<ErrorCode>().is_err()
            {
                error_msg = Some(match &error_msg {
                    Some(msg) => format!("{code}: {msg}"),
                    None => code.clone(),
                });
                error_code = Some("Infrastructure".to_owned());
            }
        }
        let children = match self.results() {
            ResultTree::Group(entries) => self.result_nodes(&entries),
            ResultTree::Case(_) => Vec::new(),
        };
        let setup_failed = children
            .iter()
            .any(|c| c.name == "setup" && c.result == Some(ResultValue::Fail));
        let mut result = job_result;
        if result == Some(ResultValue::Incomplete) && job_name.contains("baseline") && setup_failed
        {
            result = Some(ResultValue::Fail);
        }
        if result == Some(ResultValue::Pass) {
            for suite in &children {
                if suite.result == Some(ResultValue::Fail) {
                    if suite.name == "setup" {
                        result = Some(ResultValue::Incomplete);
                        break;
                    }
                    result = Some(ResultValue::Fail);
                }
            }
        }
        JobOutcome {
            result,
            error_code,
            error_msg,
            children,
        }
    }

    /// The hierarchy to `PUT /nodes/<id>` for `job_node` (as fetched from the API, with any
    /// artifacts already added): the node becomes `done` with the outcome's result,
    /// `data.device`, `data.error_code`/`error_msg`; a `node_timeout` error is cleared unless
    /// the result is incomplete; children follow upstream's `submit_results` (inherited
    /// `data` keys, `group` = job name, `path` = parent path + name, state `done`).
    ///
    /// The result starts from [`Callback::job_status`], forced to incomplete when the callback
    /// carries no log (upstream's rule for jobs that never ran).
    pub fn hierarchy(&self, mut job_node: Node) -> Hierarchy {
        let mut job_result = self.job_status();
        if !self.has_log() {
            job_result = Some(ResultValue::Incomplete);
        }
        let outcome = self.outcome(&job_node.name, job_result);
        let data = job_node.data.get_or_insert_with(Map::new);
        if let Some(device) = self.device_id() {
            data.insert("device".into(), Value::String(device.to_owned()));
        }
        if outcome.result == Some(ResultValue::Incomplete) {
            data.insert(
                "error_code".into(),
                outcome
                    .error_code
                    .clone()
                    .map_or(Value::Null, Value::String),
            );
            data.insert(
                "error_msg".into(),
                outcome.error_msg.clone().map_or(Value::Null, Value::String),
            );
        } else if data.get("error_code").and_then(Value::as_str) == Some("node_timeout") {
            data.insert("error_code".into(), Value::Null);
            data.insert("error_msg".into(), Value::Null);
        }
        job_node.result = outcome.result;
        job_node.state = State::Done;
        job_node.processed_by_kcidb_bridge = false;
        job_node.artifacts.get_or_insert_with(Map::new);
        let inherited: Map<String, Value> = job_node
            .data
            .iter()
            .flatten()
            .filter(|(k, _)| INHERITED_DATA.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let child_nodes = outcome
            .children
            .iter()
            .map(|c| child_hierarchy(c, &job_node.path, &job_node.name, &inherited))
            .collect();
        Hierarchy {
            node: job_node,
            child_nodes,
        }
    }

    /// Whether the callback carries a log (`dataset: logs` or `all`).
    pub fn has_log(&self) -> bool {
        matches!(self.body.get("log"), Some(Value::String(s)) if !s.trim().is_empty())
    }

    /// The structured log: every line whose message is text, stripped, ESC as `^[`, empty
    /// lines left out (upstream `LogParser`).
    pub fn log_lines(&self) -> Result<Vec<LogLine>, CallbackError> {
        let Some(Value::String(text)) = self.body.get("log") else {
            return Ok(Vec::new());
        };
        let items: Vec<serde_norway::Value> =
            serde_norway::from_str(text).map_err(|e| yaml_error("log", e))?;
        let mut lines = Vec::with_capacity(items.len());
        for item in items {
            let Some(serde_norway::Value::String(msg)) = item.get("msg") else {
                continue;
            };
            let msg = msg.trim().replace('\x1b', "^[");
            if msg.is_empty() {
                continue;
            }
            lines.push(LogLine {
                dt: yaml_str(item.get("dt")),
                lvl: yaml_str(item.get("lvl")),
                msg,
            });
        }
        Ok(lines)
    }

    /// The serial console output (`target` lines, one per line), with NUL removed and other
    /// non-printable characters but newlines replaced by `?`; `None` when there is none.
    pub fn log_text(&self) -> Result<Option<String>, CallbackError> {
        let mut out = String::new();
        for line in self.log_lines()? {
            if line.lvl.as_deref() == Some("target") {
                out.push_str(&line.msg);
                out.push('\n');
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            out.chars()
                .filter(|c| *c != '\0')
                .map(|c| {
                    if c == '\n' || !(c.is_control() || (c.is_whitespace() && c != ' ')) {
                        c
                    } else {
                        '?'
                    }
                })
                .collect(),
        ))
    }

    /// The body without its `token` (the lab's secret), as stored next to the results.
    pub fn body_without_token(&self) -> Value {
        let mut body = self.body.clone();
        body.remove("token");
        Value::Object(body)
    }
}

fn child_hierarchy(
    node: &ResultNode,
    parent_path: &[String],
    group: &str,
    inherited: &Map<String, Value>,
) -> Hierarchy {
    let mut child = Node::new(node.kind, node.name.clone());
    child.path = parent_path.to_vec();
    child.path.push(node.name.clone());
    child.group = Some(group.to_owned());
    child.state = State::Done;
    child.result = node.result;
    let mut data = inherited.clone();
    if let Some(extra) = &node.data {
        data.extend(extra.clone());
    }
    child.data = Some(data);
    let child_nodes = node
        .children
        .iter()
        .map(|c| child_hierarchy(c, &child.path, group, inherited))
        .collect();
    Hierarchy {
        node: child,
        child_nodes,
    }
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, CallbackError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)
        .and_then(|()| enc.finish())
        .map_err(|e| CallbackError::Storage(StorageError::io("gzip", e)))
}

/// The tokens of one lab, from its `[runtime.<name>]` settings table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabTokens {
    /// `runtime_token`: the REST token, also accepted on callbacks (as upstream).
    pub runtime_token: Option<String>,
    /// `callback_token`: the value LAVA sends for the job's `notify.callback.token` name.
    pub callback_token: Option<String>,
}

/// Counters of the receiver (`GET /api/metrics`, Prometheus text).
#[derive(Debug, Default)]
pub struct CallbackMetrics {
    /// Every HTTP request.
    pub http_requests_total: AtomicU64,
    /// Callbacks received.
    pub lava_callback_requests_total: AtomicU64,
    /// Callbacks refused for their token.
    pub lava_callback_requests_authfail_total: AtomicU64,
    /// Callbacks whose background processing failed (or uploaded no log).
    pub lava_callback_late_fail_total: AtomicU64,
    /// Callbacks processed to the end.
    pub lava_callback_processed_total: AtomicU64,
}

impl CallbackMetrics {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Prometheus text format, labelled `kind="pipeline_callback"`.
    pub fn export(&self) -> String {
        let mut out = String::new();
        for (name, counter) in [
            ("http_requests_total", &self.http_requests_total),
            (
                "lava_callback_requests_total",
                &self.lava_callback_requests_total,
            ),
            (
                "lava_callback_requests_authfail_total",
                &self.lava_callback_requests_authfail_total,
            ),
            (
                "lava_callback_late_fail_total",
                &self.lava_callback_late_fail_total,
            ),
            (
                "lava_callback_processed_total",
                &self.lava_callback_processed_total,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {name}\n# TYPE {name} counter\n{name}{{kind=\"pipeline_callback\"}} {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// What the receiver needs: lab tokens, API clients and storages by config name.
#[derive(Debug, Default)]
pub struct LavaCallbackConfig {
    /// Tokens by lab name (`[runtime.<lab>]`).
    pub labs: BTreeMap<String, LabTokens>,
    /// API clients (with their token, `KCI_API_TOKEN` upstream) by API config name.
    pub apis: BTreeMap<String, Arc<dyn Api>>,
    /// The API used when the job metadata names none (`[DEFAULT].api_config`).
    pub default_api: Option<String>,
    /// Storages by storage config name.
    pub storages: BTreeMap<String, Arc<dyn Storage>>,
    /// The storage used when the job metadata names none (`[DEFAULT].storage_config`).
    pub default_storage: Option<String>,
    /// How many callbacks are processed at once (upstream: 16 threads).
    pub workers: usize,
}

/// The LAVA callback receiver (upstream's `lava-callback` service, callback part).
#[derive(Debug)]
pub struct LavaCallbackService {
    config: LavaCallbackConfig,
    node_locks: Mutex<HashMap<ObjectId, Arc<tokio::sync::Mutex<()>>>>,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    /// The service counters.
    pub metrics: CallbackMetrics,
}

impl LavaCallbackService {
    /// A receiver with `config`.
    pub fn new(config: LavaCallbackConfig) -> Arc<LavaCallbackService> {
        let workers = config.workers.max(1);
        Arc::new(LavaCallbackService {
            config,
            node_locks: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(workers)),
            tasks: TaskTracker::new(),
            metrics: CallbackMetrics::default(),
        })
    }

    /// The lab whose `callback_token` or `runtime_token` equals the `Authorization` header.
    pub fn authorize(&self, header: Option<&str>) -> Result<&str, CallbackError> {
        let header = header.filter(|h| !h.is_empty());
        let Some(header) = header else {
            return Err(CallbackError::Unauthorized);
        };
        self.config
            .labs
            .iter()
            .find(|(_, t)| {
                t.runtime_token.as_deref() == Some(header)
                    || t.callback_token.as_deref() == Some(header)
            })
            .map(|(lab, _)| lab.as_str())
            .ok_or(CallbackError::Unauthorized)
    }

    fn api_for(&self, callback: &Callback) -> Result<&dyn Api, CallbackError> {
        let name = callback
            .meta_str("api_config_name")
            .or(self.config.default_api.as_deref())
            .or_else(|| {
                (self.config.apis.len() == 1)
                    .then(|| self.config.apis.keys().next().map(String::as_str))
                    .flatten()
            })
            .unwrap_or("");
        self.config
            .apis
            .get(name)
            .map(|api| &**api)
            .ok_or_else(|| CallbackError::UnknownConfig {
                what: "api",
                name: name.to_owned(),
            })
    }

    fn storage_for(&self, callback: &Callback) -> Result<Arc<dyn Storage>, CallbackError> {
        let name = callback
            .meta_str("storage_config_name")
            .or(self.config.default_storage.as_deref())
            .or_else(|| {
                (self.config.storages.len() == 1)
                    .then(|| self.config.storages.keys().next().map(String::as_str))
                    .flatten()
            })
            .unwrap_or("");
        self.config
            .storages
            .get(name)
            .cloned()
            .ok_or_else(|| CallbackError::UnknownConfig {
                what: "storage",
                name: name.to_owned(),
            })
    }

    /// Processes one callback for `node_id` now (what the background task does): uploads the
    /// logs and the callback, then `PUT /nodes/<id>`. Returns the written nodes.
    pub async fn process(
        &self,
        node_id: ObjectId,
        callback: &Callback,
    ) -> Result<Vec<Node>, CallbackError> {
        let api = self.api_for(callback)?;
        let mut node = api
            .get_node(node_id)
            .await?
            .ok_or_else(|| CallbackError::NodeNotFound(node_id.to_string()))?;
        let storage = self.storage_for(callback)?;
        let dir = format!("{}-{}", node.name, node_id);
        let artifacts = node.artifacts.get_or_insert_with(Map::new);
        match callback.log_text()? {
            Some(text) => {
                let url = storage
                    .upload_single(
                        UploadFile::from_bytes(gzip(text.as_bytes())?, "log.txt.gz"),
                        &dir,
                    )
                    .await?;
                artifacts.insert("lava_log".into(), Value::String(url));
            }
            None => CallbackMetrics::add(&self.metrics.lava_callback_late_fail_total),
        }
        let lines = callback.log_lines()?;
        if !lines.is_empty() {
            let yaml = serde_norway::to_string(&lines).map_err(|e| yaml_error("log", e))?;
            let url = storage
                .upload_single(
                    UploadFile::from_bytes(yaml.into_bytes(), "lava-logs.yaml"),
                    &dir,
                )
                .await?;
            artifacts.insert("lava_logs".into(), Value::String(url));
        }
        let body = serde_json::to_vec_pretty(&callback.body_without_token())
            .map_err(|e| CallbackError::Invalid(e.to_string()))?;
        let url = storage
            .upload_single(
                UploadFile::from_bytes(gzip(&body)?, "lava_callback.json.gz"),
                &dir,
            )
            .await?;
        artifacts.insert("callback_data".into(), Value::String(url));
        // Upstream: a passing upload-suite case `artifact-upload:<name>:<url>` is an artifact.
        for (suite, cases) in callback.suites() {
            if suite.split_once('_').map_or("", |(_, s)| s) != "upload" {
                continue;
            }
            for case in cases.iter().filter(|c| c.result == "pass") {
                if let Some(rest) = case.name.strip_prefix("artifact-upload:")
                    && let Some((name, url)) = rest.split_once(':')
                {
                    artifacts.insert(name.to_owned(), Value::String(url.to_owned()));
                }
            }
        }
        let hierarchy = callback.hierarchy(node);
        Ok(api.submit_results(&hierarchy).await?)
    }

    /// Accepts a callback: checks the token, parses the body, picks the API, and starts the
    /// background processing (serialised per node). What `POST /node/<id>` does before its
    /// `202`.
    pub fn accept(
        self: &Arc<Self>,
        node_id: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(), CallbackError> {
        CallbackMetrics::add(&self.metrics.lava_callback_requests_total);
        if let Err(e) = self.authorize(authorization) {
            CallbackMetrics::add(&self.metrics.lava_callback_requests_authfail_total);
            return Err(e);
        }
        let node_id: ObjectId = node_id
            .parse()
            .map_err(|_| CallbackError::Invalid(format!("{node_id:?} is not a node id")))?;
        let callback = Callback::parse(body)?;
        self.api_for(&callback)?;
        let lock = {
            let mut locks = self
                .node_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(node_id).or_default().clone()
        };
        let this = self.clone();
        self.tasks.spawn(async move {
            let _node = lock.lock().await;
            let Ok(_permit) = this.permits.clone().acquire_owned().await else {
                return;
            };
            match this.process(node_id, &callback).await {
                Ok(_) => {
                    CallbackMetrics::add(&this.metrics.lava_callback_processed_total);
                    tracing::info!(node = %node_id, job = ?callback.job_id(), "LAVA callback processed");
                }
                Err(e) => {
                    CallbackMetrics::add(&this.metrics.lava_callback_late_fail_total);
                    tracing::error!(node = %node_id, job = ?callback.job_id(), "LAVA callback failed: {e}");
                }
            }
        });
        Ok(())
    }

    /// Waits until every accepted callback has been processed (for shutdown and tests); new
    /// callbacks can still be accepted afterwards.
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// The HTTP routes: `GET /`, `POST /node/<id>` and `GET /api/metrics`.
    pub fn routes(
        self: &Arc<Self>,
    ) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone + use<>
    {
        let this = self.clone();
        let callback = warp::post()
            .and(warp::path("node"))
            .and(warp::path::param::<String>())
            .and(warp::path::end())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::content_length_limit(256 * 1024 * 1024))
            .and(warp::body::bytes())
            .map(
                move |id: String, auth: Option<String>, body: bytes::Bytes| {
                    CallbackMetrics::add(&this.metrics.http_requests_total);
                    let (status, message) = if this.config.labs.is_empty() {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "No tokens configured".to_owned(),
                        )
                    } else {
                        match this.accept(&id, auth.as_deref(), &body) {
                            Ok(()) => (StatusCode::ACCEPTED, "OK".to_owned()),
                            Err(CallbackError::Unauthorized) => {
                                (StatusCode::UNAUTHORIZED, "Unauthorized".to_owned())
                            }
                            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                        }
                    };
                    json_reply(status, &json!({ "message": message }))
                },
            );
        let this = self.clone();
        let metrics = warp::get()
            .and(warp::path!("api" / "metrics"))
            .map(move || {
                CallbackMetrics::add(&this.metrics.http_requests_total);
                let mut resp = warp::reply::Response::new(this.metrics.export().into());
                resp.headers_mut().insert(
                    warp::http::header::CONTENT_TYPE,
                    warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                resp
            });
        let root = warp::get().and(warp::path::end()).map(|| {
            let mut resp = warp::reply::Response::new(
                "<html><head><title>KernelCI Pipeline Callback</title></head><body>\
                 <h1>KernelCI Pipeline Callback</h1>\
                 <p>This is a callback endpoint for the KernelCI pipeline.</p></body></html>"
                    .into(),
            );
            resp.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            resp
        });
        callback.or(metrics).unify().or(root).unify()
    }

    /// Serves the routes on `addr` until `shutdown` resolves, then waits for the callbacks in
    /// progress. Returns the bound address through `bound` as soon as it listens.
    pub async fn serve(
        self: &Arc<Self>,
        addr: SocketAddr,
        bound: impl FnOnce(SocketAddr),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        bound(listener.local_addr()?);
        warp::serve(self.routes())
            .incoming(listener)
            .graceful(shutdown)
            .run()
            .await;
        self.wait_idle().await;
        Ok(())
    }
}

fn json_reply(status: StatusCode, body: &Value) -> warp::reply::Response {
    let mut resp = warp::reply::Response::new(body.to_string().into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real callbacks from a LAVA 2023.01 server (copied from `shared/fixtures/lava`).
    fn fixture(name: &str) -> Option<Callback> {
        let bytes: &[u8] = match name {
            "callback-complete.json" => {
                include_bytes!("../../tests/fixtures/lava/callback-complete.json")
            }
            "callback-incomplete.json" => {
                include_bytes!("../../tests/fixtures/lava/callback-incomplete.json")
            }
            "callback-canceled.json" => {
                include_bytes!("../../tests/fixtures/lava/callback-canceled.json")
            }
            _ => return None,
        };
        Some(Callback::parse(bytes).expect("fixture parses"))
    }

    fn job_node(name: &str) -> Node {
        let mut node = Node::new(NodeKind::Job, name);
        node.id = Some(ObjectId::new());
        node.path = vec!["checkout".into(), "kbuild-gcc-12-x86".into(), name.into()];
        let data = node.data.get_or_insert_with(Map::new);
        data.insert("platform".into(), json!("qemu"));
        data.insert("runtime".into(), json!("lava-local"));
        data.insert(
            "kernel_revision".into(),
            json!({"tree": "mainline", "branch": "master"}),
        );
        data.insert("job_id".into(), json!("7"));
        data.insert("error_code".into(), json!("node_timeout"));
        node
    }

    #[test]
    fn complete_callback_gives_setup_and_smoke_nodes_and_fails_on_the_failed_case() {
        let cb = fixture("callback-complete.json").unwrap();
        assert_eq!(cb.job_status(), Some(ResultValue::Pass));
        assert_eq!(cb.device_id(), Some("qemu01"));
        assert_eq!(cb.meta_str("source"), Some("rust-lava-client-trial"));
        let tree = cb.results();
        let setup = tree.get("setup").expect("setup");
        assert_eq!(setup.get("login"), Some(&ResultTree::Case("pass".into())));
        assert_eq!(
            setup.get("kernelmsg"),
            Some(&ResultTree::Case("pass".into()))
        );
        let ResultTree::Group(smoke) = tree.get("smoke").expect("smoke") else {
            panic!("smoke is a group")
        };
        // Upstream walks the cases in reverse.
        let names: Vec<&str> = smoke.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "measured",
                "expected-fail",
                "proc-mounted",
                "kernel-is-linux"
            ]
        );

        let h = cb.hierarchy(job_node("baseline-x86"));
        // The smoke suite has a failed case, so the job fails (it is not setup).
        assert_eq!(h.node.result, Some(ResultValue::Fail));
        assert_eq!(h.node.state, State::Done);
        assert_eq!(h.node.data_str("device"), Some("qemu01"));
        // node_timeout is cleared once the job has a non-incomplete result.
        assert_eq!(h.node.data_path("error_code"), Some(&Value::Null));
        let names: Vec<&str> = h.child_nodes.iter().map(|c| c.node.name.as_str()).collect();
        assert_eq!(names, ["setup", "smoke"]);
        let setup = &h.child_nodes[0];
        assert_eq!(setup.node.kind, "job");
        assert_eq!(setup.node.result, Some(ResultValue::Pass));
        assert_eq!(setup.child_nodes.len(), 2);
        assert_eq!(setup.child_nodes[0].node.name, "login");
        assert_eq!(setup.child_nodes[0].node.kind, "test");
        assert_eq!(
            setup.child_nodes[0].node.path,
            [
                "checkout",
                "kbuild-gcc-12-x86",
                "baseline-x86",
                "setup",
                "login"
            ]
        );
        let smoke = &h.child_nodes[1];
        // LAVA's stage `0_smoke` says pass, but a case failed: the evaluation wins.
        assert_eq!(smoke.node.result, Some(ResultValue::Fail));
        let failed = smoke
            .child_nodes
            .iter()
            .find(|c| c.node.name == "expected-fail")
            .expect("expected-fail");
        assert_eq!(failed.node.result, Some(ResultValue::Fail));
        assert_eq!(failed.node.group.as_deref(), Some("baseline-x86"));
        assert_eq!(failed.node.data_str("platform"), Some("qemu"));
        assert_eq!(
            failed.node.data_str("kernel_revision.tree"),
            Some("mainline")
        );
        assert_eq!(
            failed.node.data_path("job_id"),
            None,
            "job_id is not inherited"
        );
        let log = cb.log_text().unwrap().expect("target lines");
        assert!(
            log.contains("Linux version"),
            "{}",
            &log[..200.min(log.len())]
        );
        assert!(!log.contains('\x1b'));
        assert!(cb.log_lines().unwrap().len() > 100);
    }

    #[test]
    fn incomplete_callback_takes_the_error_from_the_job_stage() {
        let cb = fixture("callback-incomplete.json").unwrap();
        assert_eq!(cb.job_status(), Some(ResultValue::Incomplete));
        // No login or kernel-messages cases: no setup node at all.
        assert_eq!(cb.results(), ResultTree::Group(Vec::new()));
        let h = cb.hierarchy(job_node("baseline-x86"));
        assert_eq!(h.node.result, Some(ResultValue::Incomplete));
        assert_eq!(h.node.data_str("error_code"), Some("Job"));
        let msg = h.node.data_str("error_msg").expect("error_msg");
        assert!(
            msg.starts_with(
                "Invalid job data: [\"Image file '/tmp/lava-ci/images/missing-vmlinuz'"
            ),
            "{msg}"
        );
        assert!(h.child_nodes.is_empty());
        assert!(cb.has_log());
    }

    #[test]
    fn canceled_callback_without_log_or_results_is_an_infrastructure_error() {
        let cb = fixture("callback-canceled.json").unwrap();
        assert_eq!(cb.status(), Some(status::CANCELED));
        assert!(!cb.has_log());
        assert_eq!(cb.log_text().unwrap(), None);
        let h = cb.hierarchy(job_node("kunit"));
        assert_eq!(h.node.result, Some(ResultValue::Incomplete));
        assert_eq!(h.node.data_str("error_code"), Some("Infrastructure"));
        assert_eq!(
            h.node.data_str("error_msg"),
            Some("Unknown infrastructure error")
        );
        assert!(h.child_nodes.is_empty());
        assert!(cb.body_without_token().get("token").is_none());
        assert!(cb.body().contains_key("token"));
    }

    fn synthetic(results: Value, status: i64) -> Callback {
        Callback::from_value(json!({
            "id": 9, "status": status, "log": "- {dt: x, lvl: target, msg: hi}\n",
            "definition": "metadata:\n  node_id: abc\n  api_config_name: local\n",
            "results": results,
        }))
        .unwrap()
    }

    #[test]
    fn sets_group_cases_and_setup_failure_makes_a_pass_incomplete() {
        let lava = "- {name: login-action, result: fail, metadata: {}}\n\
                    - {name: auto-login-action, result: fail, metadata: {}}\n\
                    - {name: kernel-messages, result: pass, metadata: {}}\n\
                    - {name: job, result: pass, metadata: {}}\n";
        let suite = "- {name: a, result: pass, metadata: {set: s1}}\n\
                     - {name: b, result: skip, metadata: {set: s1}}\n\
                     - {name: os-release, result: unknown, metadata: {}}\n";
        let tast = "- {name: os-release, result: pass, measurement: '42.5', metadata: {}}\n";
        let cb = synthetic(
            json!({"lava": lava, "1_kselftest-foo": suite, "0_tast": tast}),
            2,
        );
        assert_eq!(cb.meta_str("api_config_name"), Some("local"));
        let out = cb.outcome("baseline-x86", Some(ResultValue::Pass));
        assert_eq!(out.result, Some(ResultValue::Incomplete));
        let names: Vec<&str> = out.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["setup", "kselftest-foo", "tast"]);
        assert_eq!(out.children[0].result, Some(ResultValue::Fail));
        let ks = &out.children[1];
        let s1 = ks.child("s1").expect("set s1");
        assert_eq!(s1.kind, NodeKind::Job);
        assert_eq!(s1.result, Some(ResultValue::Pass));
        assert_eq!(s1.children.len(), 2);
        let unknown = ks.child("os-release").expect("os-release");
        assert_eq!(unknown.result, None);
        assert_eq!(
            unknown.data.as_ref().unwrap()["misc"]["measurement"],
            json!(42.5)
        );
        // Incomplete baseline job with failed setup becomes fail.
        let out = cb.outcome("baseline-x86", Some(ResultValue::Incomplete));
        assert_eq!(out.result, Some(ResultValue::Fail));
        let out = cb.outcome("kunit", Some(ResultValue::Incomplete));
        assert_eq!(out.result, Some(ResultValue::Incomplete));
        assert_eq!(out.error_code, None, "the job case has no error_type");
    }

    #[test]
    fn unknown_error_types_stay_valid_error_codes_and_bad_bodies_are_errors() {
        let lava = "- {name: job, result: fail, metadata: {error_type: Weird, error_msg: boom}}\n";
        let cb = synthetic(json!({ "lava": lava }), 3);
        let out = cb.outcome("x", cb.job_status());
        assert_eq!(out.error_code.as_deref(), Some("Infrastructure"));
        assert_eq!(out.error_msg.as_deref(), Some("Weird: boom"));
        assert!(matches!(
            Callback::parse(b"not json"),
            Err(CallbackError::Invalid(_))
        ));
        assert!(Callback::from_value(json!({"results": {"lava": "- [unclosed"}})).is_err());
        assert!(Callback::from_value(json!({"status": "two"})).is_err());
        assert!(Callback::from_value(json!([1])).is_err());
    }
}
