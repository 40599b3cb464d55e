//! Node writes and the event history.

use kernelci::models::{ObjectId, ResultValue, State, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `data` of a node: the model of its kind (extra keys are kept).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum KindData {
    /// `checkout`.
    Checkout(Box<kernelci::models::CheckoutData>),
    /// `kbuild`.
    Kbuild(Box<kernelci::models::KbuildData>),
    /// `test`, `job`.
    Test(Box<kernelci::models::TestData>),
    /// `regression`.
    Regression(Box<kernelci::models::RegressionData>),
}

/// `POST /node`, `PUT /node/{id}`: a node as written (the store fills the rest; see
/// `Node` for every field and its default).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct NodeRequest {
    /// The kind (`node`, the default of a stored node, is not writable).
    pub kind: kernelci::models::NodeKind,
    /// Name.
    pub name: String,
    /// Names from the root down to this node.
    pub path: Vec<String>,
    /// The parent node.
    #[serde(default)]
    pub parent: Option<ObjectId>,
    /// Group name.
    #[serde(default)]
    pub group: Option<String>,
    /// Life-cycle state (default `running`).
    #[serde(default)]
    pub state: State,
    /// Outcome.
    #[serde(default)]
    pub result: Option<ResultValue>,
    /// The kind's data (see the kind models).
    #[serde(default)]
    pub data: Option<KindData>,
    /// Artifact name → absolute http(s) URL.
    #[serde(default)]
    pub artifacts: Map<String, Value>,
    /// Groups whose members may edit the node.
    #[serde(default)]
    pub user_groups: Vec<String>,
}

/// `PUT /nodes/{id}`: a node and its children, recursively.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct NodeTree {
    /// The node.
    pub node: NodeRequest,
    /// Its children.
    #[serde(default)]
    pub child_nodes: Vec<NodeTree>,
}

/// `PUT /batch/nodeset`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct BatchNodeset {
    /// Node ids.
    pub nodes: Vec<String>,
    /// `processed_by_kcidb_bridge`.
    pub field: String,
    /// The value to set.
    pub value: Value,
}

/// One event of the history (`GET /events`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventRecord {
    /// When it happened.
    pub timestamp: Timestamp,
    /// Its position in the log.
    pub sequence_id: u64,
    /// The channel.
    pub channel: String,
    /// Who caused it.
    pub owner: Option<String>,
    /// The payload (for node events: `op`, `id`, `kind`, `name`, `path`, `state`, ...; with
    /// `recursive`, the node).
    pub data: Value,
    /// The event's id.
    pub id: ObjectId,
}
