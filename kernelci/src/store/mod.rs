//! Node stores: where nodes, users, groups, key/values and the event log live.
//!
//! [`NodeStore`] is the one trait every backend implements; [`SqliteStore`] (feature `sqlite`,
//! on by default) is the embedded default, `MongoStore` (feature `mongodb`) the production one.
//! Every implementation runs the same conformance suite (`testsuite::store::run_all`).
//!
//! # Promises
//!
//! - Node writes that ask for an event append it to the event log **in the same transaction**
//!   as the write, with a per-store sequence number that only grows.
//! - `update_node` and `patch_node` check the state machine against the stored node inside the
//!   transaction, so two concurrent writers cannot both move a node backwards.
//! - `find_nodes` returns nodes in id order (creation order) unless a sort is given, and the
//!   `after` cursor pages through large results without skipping or repeating.

#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// A store shared between tasks.
pub type SharedStore = std::sync::Arc<dyn NodeStore>;
#[cfg(feature = "mongodb")]
mod mongo;

#[cfg(feature = "mongodb")]
pub use mongo::{MongoConfig, MongoStore};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ErrorKind;
use crate::models::{ModelError, Node, NodePatch, ObjectId, Timestamp, User, UserGroup};
use crate::query::{Filter, QueryError};

/// Errors of node stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{what} not found with id: {id}")]
    NotFound {
        /// What was looked for (`Node`, `User`, `Parent`...).
        what: &'static str,
        /// The id or name looked for.
        id: String,
    },
    /// The write conflicts with what is stored (a duplicate unique key).
    #[error("{0}")]
    Conflict(String),
    /// The input breaks a model rule (including a forbidden state transition).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The query cannot be run.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Other invalid input (a bad cursor, a bad sort field).
    #[error("{0}")]
    Invalid(String),
    /// A durable subscriber is behind the event log's retention.
    #[error(
        "events after sequence {requested} were purged (oldest kept: {oldest}); the subscriber must resynchronise"
    )]
    EventsPurged {
        /// The position asked for.
        requested: u64,
        /// The oldest sequence number still kept.
        oldest: u64,
    },
    /// The backend could not be reached or failed; retrying later may work.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The operation ran past its time budget.
    #[error("store operation timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A bug or corrupt data.
    #[error("store internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Conflict(_) => ErrorKind::Conflict,
            StoreError::Model(e) => e.kind(),
            StoreError::Query(_) | StoreError::Invalid(_) => ErrorKind::Invalid,
            StoreError::EventsPurged { .. } => ErrorKind::Conflict,
            StoreError::Unavailable { .. } => ErrorKind::Unavailable,
            StoreError::Timeout(_) => ErrorKind::Timeout,
            StoreError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An `Unavailable` error wrapping a source.
    pub fn unavailable<E: std::error::Error + Send + Sync + 'static>(
        message: impl Into<String>,
        source: E,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// How to order `find_nodes` results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    /// A dotted field (`created`, `data.kernel_revision.commit`...). Ties are broken by id.
    pub field: String,
    /// Largest first.
    pub descending: bool,
}

/// Paging and ordering for `find_nodes`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindOptions {
    /// At most this many nodes (`None`: all).
    pub limit: Option<u64>,
    /// Skip this many matching nodes first.
    pub offset: u64,
    /// Order; `None` is id order (creation order).
    pub sort: Option<Sort>,
    /// Keyset cursor: continue strictly after this position (from [`NodePage::next`]).
    pub after: Option<Cursor>,
}

/// A position in a sorted result: the sort key and id of the last node seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort field's value at the last node (null when unsorted or missing).
    pub key: Value,
    /// The last node's id.
    pub id: ObjectId,
}

impl Cursor {
    /// The cursor as an opaque URL-safe token.
    pub fn encode(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        hex::encode(json)
    }

    /// Reads a token made by [`Cursor::encode`].
    pub fn decode(token: &str) -> StoreResult<Cursor> {
        let bytes =
            hex::decode(token).map_err(|_| StoreError::Invalid(format!("bad cursor '{token}'")))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::Invalid(format!("bad cursor '{token}'")))
    }
}

/// One page of `find_nodes`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePage {
    /// The nodes.
    pub items: Vec<Node>,
    /// Where the next page starts, when this one was full (`limit` reached).
    pub next: Option<Cursor>,
}

/// Whether a node write appends an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventMode {
    /// Append the node event (on channel `node`) in the same transaction.
    Publish,
    /// Write silently (upstream's `noevent=true`).
    Silent,
}

/// The result of an update: the node as stored now, and as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUpdate {
    /// The node after the write.
    pub node: Node,
    /// The node before the write.
    pub previous: Node,
    /// The event appended, if any.
    pub event: Option<StoredEvent>,
}

/// How `update_node` treats the stored node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateRule {
    /// Refuse state moves the state machine forbids (PUT, PATCH); off for hierarchies.
    pub check_transition: bool,
    /// Keep `owner`, `submitter`, `user_groups` of the stored node (PUT does).
    pub keep_identity: bool,
    /// Append an `updated` event.
    pub event: EventMode,
}

impl UpdateRule {
    /// Upstream's `PUT /node/{id}`: transition checked, identity kept, event published.
    pub const PUT: UpdateRule = UpdateRule {
        check_transition: true,
        keep_identity: true,
        event: EventMode::Publish,
    };
}

/// An event as kept in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The log's sequence number: unique, only grows.
    pub sequence_id: u64,
    /// The event document's id (kept across replays).
    pub id: ObjectId,
    /// When it was appended.
    pub timestamp: Timestamp,
    /// The channel (`node`, or any name used with publish).
    pub channel: String,
    /// The owner (for node events, the node's owner).
    pub owner: Option<String>,
    /// The payload.
    pub data: Value,
    /// Extra CloudEvent attributes given at publish time (`type`, `source`, extensions).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, Value>,
}

impl StoredEvent {
    /// The document shape upstream's `GET /events` returns
    /// (`timestamp, sequence_id, channel, owner, data, id`).
    pub fn to_document(&self) -> Value {
        serde_json::json!({
            "timestamp": self.timestamp,
            "sequence_id": self.sequence_id,
            "channel": self.channel,
            "owner": self.owner,
            "data": self.data,
            "id": self.id,
        })
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The channel.
    pub channel: String,
    /// The owner.
    pub owner: Option<String>,
    /// The payload.
    pub data: Value,
    /// Extra CloudEvent attributes.
    pub attributes: serde_json::Map<String, Value>,
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only this channel (`None`: every channel).
    pub channel: Option<String>,
    /// Only events owned by this user, or with no owner (`None`: every owner, "promiscuous").
    pub owner: Option<String>,
}

/// A durable subscriber's stored position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriberState {
    /// The subscriber's chosen id (e.g. `scheduler:node`).
    pub subscriber_id: String,
    /// The channel it follows.
    pub channel: String,
    /// The user it belongs to.
    pub user: String,
    /// Whether it sees every owner's events.
    pub promiscuous: bool,
    /// The last sequence number it acknowledged.
    pub last_event_id: u64,
    /// When it was first created.
    pub created_at: Timestamp,
    /// When it last polled.
    pub last_poll: Option<Timestamp>,
}

/// A node's wire form as JSON text.
pub fn node_json(node: &Node) -> StoreResult<String> {
    serde_json::to_string(&node.to_value())
        .map_err(|e| StoreError::Internal(format!("cannot encode node: {e}")))
}

/// The storage behind a KernelCI API: nodes, users, groups, key/values and the event log.
///
/// Implementations must be safe to share between tasks (`Arc<dyn NodeStore>`), and must keep
/// the promises in the [module documentation](self).
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    // ----- nodes -----

    /// Inserts new nodes in one transaction. Ids are assigned where missing (an id already in
    /// the store is a `Conflict`). With [`EventMode::Publish`], a `created` event per node is
    /// appended in the same transaction. Returns the nodes as stored.
    async fn insert_nodes(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<Vec<Node>>;

    /// Inserts one node; see [`NodeStore::insert_nodes`].
    async fn insert_node(&self, node: Node, event: EventMode) -> StoreResult<Node> {
        let mut v = self.insert_nodes(vec![node], event).await?;
        v.pop()
            .ok_or_else(|| StoreError::Internal("insert returned no node".into()))
    }

    /// The node with this id, if any.
    async fn get_node(&self, id: ObjectId) -> StoreResult<Option<Node>>;

    /// Replaces the stored node with `node` (matched by `node.id`) under `rule`, and sets
    /// `updated`. `NotFound` when there is no such node.
    async fn update_node(&self, node: Node, rule: UpdateRule) -> StoreResult<NodeUpdate>;

    /// Applies a PATCH to the stored node (transition checked, validated) atomically.
    async fn patch_node(
        &self,
        id: ObjectId,
        patch: &NodePatch,
        event: EventMode,
    ) -> StoreResult<NodeUpdate>;

    /// Writes a submitted hierarchy in one transaction: each node with an id replaces the
    /// stored one (no transition check), each without is inserted; `nodes[0]` is the root.
    /// With [`EventMode::Publish`], one `updated` event with `is_hierarchy: true` is appended for
    /// the root, carrying the stored root's previous state and result.
    async fn write_hierarchy(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<Vec<Node>>;

    /// Sets `processed_by_kcidb_bridge` (or another top-level field) on nodes without events,
    /// bumping `updated`. Returns how many were changed.
    async fn set_field(&self, ids: &[ObjectId], field: &str, value: Value) -> StoreResult<u64>;

    /// Nodes matching `filter`, with paging and ordering.
    async fn find_nodes(&self, filter: &Filter, options: &FindOptions) -> StoreResult<NodePage>;

    /// How many nodes match `filter`.
    async fn count_nodes(&self, filter: &Filter) -> StoreResult<u64>;

    /// The node with this id as JSON text: exactly `serde_json::to_string(&node.to_value())`.
    /// For handlers that pass a node on unchanged; a store that keeps the wire form can answer
    /// without decoding and re-encoding it. The default goes through [`NodeStore::get_node`].
    async fn get_node_json(&self, id: ObjectId) -> StoreResult<Option<String>> {
        self.get_node(id).await?.map(|n| node_json(&n)).transpose()
    }

    /// [`NodeStore::find_nodes`] with each node as JSON text (see
    /// [`NodeStore::get_node_json`]), in the same order.
    async fn find_nodes_json(
        &self,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<String>> {
        let page = self.find_nodes(filter, options).await?;
        page.items.iter().map(node_json).collect()
    }

    /// Deletes nodes matching `filter` (maintenance: purge). Returns how many.
    async fn delete_nodes(&self, filter: &Filter) -> StoreResult<u64>;

    // ----- users and groups -----

    /// Inserts a user; a taken username or e-mail (case-insensitive) is a `Conflict`.
    async fn insert_user(&self, user: User) -> StoreResult<User>;
    /// The user with this id.
    async fn get_user(&self, id: ObjectId) -> StoreResult<Option<User>>;
    /// The user with this username.
    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// The user with this e-mail (case-insensitive).
    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// Replaces a user (matched by id); uniqueness as for insert.
    async fn update_user(&self, user: User) -> StoreResult<User>;
    /// Deletes a user; false when there was none.
    async fn delete_user(&self, id: ObjectId) -> StoreResult<bool>;
    /// Users matching `filter` (evaluated on the user document without the password hash),
    /// in id order, with offset and limit; and the total count.
    async fn find_users(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<User>, u64)>;

    /// Inserts a group; a taken name is a `Conflict`.
    async fn insert_group(&self, group: UserGroup) -> StoreResult<UserGroup>;
    /// The group with this id.
    async fn get_group(&self, id: ObjectId) -> StoreResult<Option<UserGroup>>;
    /// The group with this name.
    async fn get_group_by_name(&self, name: &str) -> StoreResult<Option<UserGroup>>;
    /// Groups matching `filter`, in id order, with offset and limit; and the total count.
    async fn find_groups(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<UserGroup>, u64)>;
    /// Deletes a group; false when there was none.
    async fn delete_group(&self, id: ObjectId) -> StoreResult<bool>;

    // ----- key/value -----

    /// The value under `namespace`/`key`.
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>>;
    /// Sets the value under `namespace`/`key`.
    async fn kv_set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()>;
    /// Deletes the value; false when there was none.
    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<bool>;

    // ----- event log -----

    /// Appends events (e.g. from `/publish`) with the next sequence numbers, in order.
    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<StoredEvent>>;

    /// Events with `sequence_id > after` that pass `filter`, in sequence order, at most `limit`.
    /// `EventsPurged` when events after `after` were already removed by retention.
    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;

    /// Events whose document (`StoredEvent::to_document`) matches `filter`, in sequence order.
    async fn find_events(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<StoredEvent>>;

    /// The highest sequence number appended so far (0 when none).
    async fn last_event_sequence(&self) -> StoreResult<u64>;

    /// Removes events appended before `before`; returns how many. Later reads that need them
    /// fail with `EventsPurged`.
    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64>;

    /// A durable subscriber's state.
    async fn get_subscriber(&self, subscriber_id: &str) -> StoreResult<Option<SubscriberState>>;

    /// Creates or replaces a durable subscriber's state.
    async fn put_subscriber(&self, state: SubscriberState) -> StoreResult<()>;

    /// Adds one to the counter `name` (created at 0) and returns the new value. Counters are
    /// shared by every process using the store (subscription ids, for instance).
    async fn increment_counter(&self, name: &str) -> StoreResult<u64>;

    /// Moves a subscriber's acknowledged position forward to `sequence_id` (never backwards)
    /// and stamps `last_poll`. `NotFound` when the subscriber does not exist.
    async fn ack_subscriber(&self, subscriber_id: &str, sequence_id: u64) -> StoreResult<()>;
}

/// Telemetry events (upstream collection `telemetry`): runtime errors, job and test results,
/// kept for statistics and anomaly detection.
#[async_trait]
pub trait TelemetryStore: Send + Sync + 'static {
    /// Inserts telemetry documents (JSON objects with at least `ts`); returns how many.
    async fn insert_telemetry(&self, events: Vec<Value>) -> StoreResult<u64>;

    /// Telemetry documents matching `filter` with `ts` in `[since, until]`, oldest first,
    /// with offset and limit; and the total count.
    async fn find_telemetry(
        &self,
        filter: &Filter,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<Value>, u64)>;
}
