//! The values the store traits take and return: paging and ordering of nodes, node write
//! results, events and subscriber positions, telemetry aggregates.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{StoreError, StoreResult};
use crate::models::{Node, ObjectId, Timestamp};
use crate::query::Filter;

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

/// The result of an insert or a hierarchy write: the nodes as stored, and the events appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeWrite {
    /// The nodes as stored, in the order given (ids assigned).
    pub nodes: Vec<Node>,
    /// The events appended with the write, in sequence order (none with [`EventMode::Silent`]).
    pub events: Vec<StoredEvent>,
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

impl NewEvent {
    /// The event as stored with `sequence_id` at `timestamp`, under a new document id.
    pub fn stored(self, sequence_id: u64, timestamp: Timestamp) -> StoredEvent {
        StoredEvent {
            sequence_id,
            id: ObjectId::new(),
            timestamp,
            channel: self.channel,
            owner: self.owner,
            data: self.data,
            attributes: self.attributes,
        }
    }
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

/// A subscription (`/subscribe`) as the store keeps it, shared by every server replica: who
/// listens to what, how far the listener acknowledged, and what was last sent to it.
///
/// Every change is a compare-and-set on [`SubscriptionRecord::version`]
/// ([`EventLog::update_subscription`](super::EventLog::update_subscription)), so two replicas
/// serving the same subscription never overwrite each other's changes, and a removed
/// subscription stays removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The subscription id (`/listen/{id}`), from the counter `kernelci-api-pubsub-id`.
    pub id: u64,
    /// The channel.
    pub channel: String,
    /// The owner's username.
    pub user: String,
    /// Receives every owner's events.
    pub promiscuous: bool,
    /// The durable subscriber id, if any (its position is also kept as a
    /// [`SubscriberState`]).
    pub durable: Option<String>,
    /// The last sequence number the listener acknowledged.
    pub position: u64,
    /// The event last sent to the listener and not acknowledged yet.
    pub sent: Option<Delivery>,
    /// When it was made.
    pub created: Timestamp,
    /// When a replica last served it (a `/listen` began, or a waiting `/listen` renewed its
    /// lease): the stale-subscription sweep goes by this.
    pub last_poll: Option<Timestamp>,
    /// Grows by one with every stored change; the compare-and-set token. A new record is
    /// stored with version 1.
    pub version: u64,
}

/// An event sent to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event's sequence number.
    pub sequence_id: u64,
    /// Whether the whole response was handed to the connection. Only a confirmed delivery is
    /// acknowledged implicitly (by the next `/listen` without `acknowledge`); an unconfirmed
    /// one (the replica died, or the client went away, while sending) is sent again.
    pub confirmed: bool,
}

/// Which telemetry documents a read selects: those `filter` matches (evaluated on the stored
/// document) with `ts` in `[since, until]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryQuery {
    /// The conditions on the document.
    pub filter: Filter,
    /// Only documents with `ts` at or after this.
    pub since: Option<Timestamp>,
    /// Only documents with `ts` at or before this.
    pub until: Option<Timestamp>,
}

/// One group of a telemetry aggregate: the group's values and its counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryGroup {
    /// The group's values of the `group_by` fields, in order (null for a missing or null field).
    pub keys: Vec<Value>,
    /// Documents in the group.
    pub total: u64,
    /// Documents with `result` `pass`.
    pub pass: u64,
    /// Documents with `result` `fail`.
    pub fail: u64,
    /// Documents with `result` `incomplete`.
    pub incomplete: u64,
    /// Documents with `result` `skip`.
    pub skip: u64,
    /// Documents with `is_infra_error` `true`.
    pub infra_error: u64,
}

impl TelemetryGroup {
    /// Counts one document into the group (the reference the database aggregates follow).
    pub fn add(&mut self, doc: &Value) {
        self.total += 1;
        match doc.get("result").and_then(Value::as_str) {
            Some("pass") => self.pass += 1,
            Some("fail") => self.fail += 1,
            Some("incomplete") => self.incomplete += 1,
            Some("skip") => self.skip += 1,
            _ => {}
        }
        if doc.get("is_infra_error").and_then(Value::as_bool) == Some(true) {
            self.infra_error += 1;
        }
    }

    /// The group's values of `fields` in `doc` (null where missing).
    pub fn keys_of(doc: &Value, fields: &[String]) -> Vec<Value> {
        fields
            .iter()
            .map(|f| doc.get(f).cloned().unwrap_or(Value::Null))
            .collect()
    }
}

/// A node's wire form as JSON text.
pub fn node_json(node: &Node) -> StoreResult<String> {
    serde_json::to_string(&node.to_value())
        .map_err(|e| StoreError::Internal(format!("cannot encode node: {e}")))
}
