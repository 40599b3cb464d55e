//! Stores: where nodes, users, groups, key/values, the event log and telemetry live.
//!
//! One trait per concern:
//!
//! | trait | holds |
//! |---|---|
//! | [`NodeStore`] | nodes: writes (which may publish node events), lookups, queries, counts |
//! | [`UserStore`] | user accounts and user groups |
//! | [`KvStore`] | small values under a namespace and key (tokens, subscriptions) |
//! | [`EventLog`] | the sequenced event log, its retention, counters, durable subscriber cursors |
//! | [`TelemetryStore`] | telemetry documents and their aggregates |
//! | [`ResultsStore`] | builds, boots and tests counted in the database (the web views, `/metrics`) |
//!
//! [`Store`] is all six together (implemented for every type that implements them), and
//! [`SharedStore`] the form the API server shares between requests. [`SqliteStore`] (feature
//! `sqlite`, on by default) is the embedded store, `MongoStore` (feature `mongodb`) the
//! production one; each implements every trait, one file per concern. A third party may
//! implement only the traits it needs: a node store alone runs the `NodeStore` suite
//! (`testsuite::store`, `node_store_suite!`); the example `memory_node_store` shows one.
//! With the `mock` feature, `mockall` mocks of each trait (`MockNodeStore`, ...) are exported.
//!
//! # Promises
//!
//! - Node writes that ask for an event ([`EventMode::Publish`]) append it **in the same
//!   transaction** as the write, with a per-store sequence number that only grows, and return
//!   it. A store that also implements [`EventLog`] serves those events from its log.
//! - `update_node` and `patch_node` check the state machine against the stored node inside the
//!   transaction, so two concurrent writers cannot both move a node backwards.
//! - `find_nodes` returns nodes in id order (creation order) unless a sort is given, and the
//!   `after` cursor pages through large results without skipping or repeating.
//! - Errors are typed ([`StoreError`], [`Conflict`] names the unique key that clashed); the API
//!   server words them.

mod common;
mod error;
pub mod results;
mod types;

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteTuning};

#[cfg(feature = "mongodb")]
mod mongo;
#[cfg(feature = "mongodb")]
pub use mongo::{MongoConfig, MongoStore};

pub use common::{TelemetryGrouper, apply_update_rule, node_created_event, node_updated_event};
pub use error::{Conflict, Entity, StoreError, StoreResult};
pub use results::{
    NodeGroup, ResultCategory, ResultCounts, ResultGroup, ResultsWindow, StatusCounts, StatusGroup,
};
pub use types::{
    Cursor, Delivery, EventFilter, EventMode, FindOptions, NewEvent, NodePage, NodeUpdate,
    NodeWrite, Sort, StoredEvent, SubscriberState, SubscriptionRecord, TelemetryGroup,
    TelemetryQuery, UpdateRule, node_json,
};

use async_trait::async_trait;
use serde_json::Value;

use crate::models::{Node, NodePatch, ObjectId, Timestamp, User, UserGroup};
use crate::query::Filter;

/// Nodes: the tree of checkouts, builds, tests and regressions.
///
/// Writes with [`EventMode::Publish`] append their node events (made by
/// [`node_created_event`] and [`node_updated_event`]) in the same transaction and return them
/// with their sequence numbers; the `NodeStore` suite checks the returned events, the
/// `node_event_suite` that a store which is also an [`EventLog`] serves them from its log.
/// Implementations must be safe to share between tasks.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Inserts new nodes in one transaction. Ids are assigned where missing (an id already in
    /// the store is a [`Conflict::NodeId`]). With [`EventMode::Publish`], a `created` event per
    /// node is appended in the same transaction. Returns the nodes as stored and the events.
    async fn insert_nodes(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<NodeWrite>;

    /// Inserts one node; see [`NodeStore::insert_nodes`]. Returns the node as stored.
    async fn insert_node(&self, node: Node, event: EventMode) -> StoreResult<Node> {
        let mut written = self.insert_nodes(vec![node], event).await?;
        written
            .nodes
            .pop()
            .ok_or_else(|| StoreError::Internal("insert returned no node".into()))
    }

    /// The node with this id, if any.
    async fn get_node(&self, id: ObjectId) -> StoreResult<Option<Node>>;

    /// The node with this id as JSON text: exactly `serde_json::to_string(&node.to_value())`.
    /// For handlers that pass a node on unchanged; a store that keeps the wire form can answer
    /// without decoding and re-encoding it. The default goes through [`NodeStore::get_node`].
    async fn get_node_json(&self, id: ObjectId) -> StoreResult<Option<String>> {
        self.get_node(id).await?.map(|n| node_json(&n)).transpose()
    }

    /// Replaces the stored node with `node` (matched by `node.id`) under `rule` (see
    /// [`apply_update_rule`]), and sets `updated`. `NotFound` when there is no such node.
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
    async fn write_hierarchy(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<NodeWrite>;

    /// Sets `processed_by_kcidb_bridge` (or another top-level field) on nodes without events,
    /// bumping `updated`. Returns how many were changed.
    async fn set_field(&self, ids: &[ObjectId], field: &str, value: Value) -> StoreResult<u64>;

    /// Nodes matching `filter`, with paging and ordering.
    async fn find_nodes(&self, filter: &Filter, options: &FindOptions) -> StoreResult<NodePage>;

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

    /// How many nodes match `filter`.
    async fn count_nodes(&self, filter: &Filter) -> StoreResult<u64>;

    /// Deletes nodes matching `filter` (maintenance: purge). Returns how many.
    async fn delete_nodes(&self, filter: &Filter) -> StoreResult<u64>;
}

/// User accounts and user groups.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Inserts a user; a taken username or e-mail (case-insensitive) is a
    /// [`Conflict::Username`] or [`Conflict::Email`].
    async fn insert_user(&self, user: User) -> StoreResult<User>;
    /// The user with this id.
    async fn get_user(&self, id: ObjectId) -> StoreResult<Option<User>>;
    /// The user with this username.
    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// The user with this e-mail (case-insensitive).
    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// Replaces a user (matched by id); uniqueness as for insert. `NotFound` when there is
    /// no such user.
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

    /// Inserts a group; a taken name is a [`Conflict::GroupName`].
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
}

/// Small string values under a namespace and a key (the server keeps API tokens, revocations
/// and subscriptions here; upstream keeps them in Redis).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The value under `namespace`/`key`.
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>>;
    /// Sets the value under `namespace`/`key`.
    async fn kv_set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()>;
    /// Deletes the value; false when there was none.
    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<bool>;
}

/// The event log: events with a per-store sequence number that only grows, read after a
/// position, removed by retention; shared counters; the positions of durable subscribers; and
/// the subscriptions every server replica serves.
///
/// Node writes append their events through [`NodeStore`], in the node write's transaction;
/// [`EventLog::append_events`] appends other events (`/publish`).
///
/// Subscriptions are the one source of truth for `/listen` on any replica: each change is a
/// compare-and-set on the record's version, a delete can be made conditional on it (the
/// stale sweep), and every replica sees the same records.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    // ----- appending and reading -----

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

    // ----- retention -----

    /// Removes events appended before `before`; returns how many. Later reads that need them
    /// fail with `EventsPurged`.
    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64>;

    // ----- counters -----

    /// Adds one to the counter `name` (created at 0) and returns the new value. Counters are
    /// shared by every process using the store (subscription ids, for instance).
    async fn increment_counter(&self, name: &str) -> StoreResult<u64>;

    // ----- durable subscriber cursors -----

    /// A durable subscriber's state.
    async fn get_subscriber(&self, subscriber_id: &str) -> StoreResult<Option<SubscriberState>>;

    /// Creates or replaces a durable subscriber's state.
    async fn put_subscriber(&self, state: SubscriberState) -> StoreResult<()>;

    /// Moves a subscriber's acknowledged position forward to `sequence_id` (never backwards)
    /// and stamps `last_poll`. `NotFound` when the subscriber does not exist.
    async fn ack_subscriber(&self, subscriber_id: &str, sequence_id: u64) -> StoreResult<()>;

    // ----- subscriptions (shared by every replica, compare-and-set) -----

    /// Stores a new subscription with version 1 (whatever `record.version` says) and returns
    /// it as stored. An id already stored is a `Conflict`.
    async fn insert_subscription(
        &self,
        record: SubscriptionRecord,
    ) -> StoreResult<SubscriptionRecord>;

    /// The subscription with this id.
    async fn get_subscription(&self, id: u64) -> StoreResult<Option<SubscriptionRecord>>;

    /// Compare-and-set: replaces the stored subscription `record.id` by `record`, with the
    /// version one above `record.version`, only if the stored version is still
    /// `record.version`. Returns the record as stored, or `None` when another writer changed
    /// or removed it in between (read it again and decide again).
    async fn update_subscription(
        &self,
        record: SubscriptionRecord,
    ) -> StoreResult<Option<SubscriptionRecord>>;

    /// Removes the subscription `id`; with `version`, only if it still has that version
    /// (delete-if-unchanged). Returns whether it was removed.
    async fn delete_subscription(&self, id: u64, version: Option<u64>) -> StoreResult<bool>;

    /// Every stored subscription, by id.
    async fn list_subscriptions(&self) -> StoreResult<Vec<SubscriptionRecord>>;
}

/// Telemetry events (upstream collection `telemetry`): runtime errors, job and test results,
/// kept for statistics and anomaly detection.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait TelemetryStore: Send + Sync + 'static {
    /// Inserts telemetry documents (JSON objects with at least `ts`); returns how many.
    async fn insert_telemetry(&self, events: Vec<Value>) -> StoreResult<u64>;

    /// The documents `query` selects, oldest first, with offset and limit; and how many it
    /// selects in all.
    async fn find_telemetry(
        &self,
        query: &TelemetryQuery,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<Value>, u64)>;

    /// The documents `query` selects, grouped by the top-level fields `group_by` (in order;
    /// a name of letters, digits and `_`, else `Invalid`) and counted (total and by result,
    /// see [`TelemetryGroup::add`]) in the database: memory grows with the number of groups,
    /// not of documents. Groups in any order.
    async fn telemetry_stats(
        &self,
        query: &TelemetryQuery,
        group_by: &[String],
    ) -> StoreResult<Vec<TelemetryGroup>>;
}

/// Results counted in the database: the builds, boots and tests of the definition in
/// [`results`] (one definition for the web views, `/metrics` and the e-mail report), and node
/// counts by result. Every method takes a `scope`, the nodes it looks at (any [`Filter`]);
/// whether a node is a leaf is judged against every node of the store, in or out of scope.
/// Memory grows with the number of groups or the page asked for, not with the nodes counted.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ResultsStore: Send + Sync + 'static {
    /// The builds, boots and tests among the nodes `scope` selects, grouped by the values of
    /// the dotted fields `group_by` (none: one group) and counted by result. Groups without a
    /// counted item are left out; groups come in any order. A `group_by` field that is not a
    /// dotted name ([`results::check_group_fields`]) is `Invalid`.
    async fn count_results(
        &self,
        scope: &Filter,
        group_by: &[String],
    ) -> StoreResult<Vec<ResultGroup>>;

    /// The items of the window's category among the nodes `scope` selects, in
    /// [`results::result_order`] (failures first), the window's part of them; and how many
    /// there are in all.
    async fn find_results(
        &self,
        scope: &Filter,
        window: ResultsWindow,
    ) -> StoreResult<(Vec<Node>, u64)>;

    /// Every node `scope` selects (counted or not), grouped by `group_by` and counted by result
    /// (infrastructure errors apart): the health page's node statistics. Groups in any order.
    async fn count_node_results(
        &self,
        scope: &Filter,
        group_by: &[String],
    ) -> StoreResult<Vec<NodeGroup>>;

    /// The newest checkout (by `created`, then id) of each tree and branch
    /// (`data.kernel_revision.{tree,branch}`) among the `checkout` nodes `scope` selects, newest
    /// first, at most `limit`.
    async fn latest_checkouts(&self, scope: &Filter, limit: u64) -> StoreResult<Vec<Node>>;
}

/// Everything a KernelCI API keeps: every store trait at once. Implemented for every type
/// that implements the six.
pub trait Store:
    NodeStore + UserStore + KvStore + EventLog + TelemetryStore + ResultsStore
{
}

impl<T: NodeStore + UserStore + KvStore + EventLog + TelemetryStore + ResultsStore + ?Sized> Store
    for T
{
}

/// A store shared between tasks (the API server's).
pub type SharedStore = std::sync::Arc<dyn Store>;
