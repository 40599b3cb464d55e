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

mod callback;
pub use callback::*;

mod receiver;
pub use receiver::*;

#[cfg(test)]
mod tests;

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

// The data keys a child node inherits from the job node (upstream `submit_results`), as
// for the job runner's results.
use super::jobrunner::INHERITED_DATA;

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
