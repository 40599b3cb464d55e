//! [`MongoStore`]: the production node store on MongoDB (feature `mongodb`).
//!
//! # Collections (compatible with a database written by upstream's Python API)
//!
//! | collection | documents |
//! |---|---|
//! | `node` | the node JSON with `_id` and `parent` as ObjectIds and `created`, `updated`, `timeout`, `holdoff` as BSON datetimes |
//! | `user`, `usergroup` | upstream's shapes (`_id` ObjectId; a Beanie `revision_id` is ignored) |
//! | `eventhistory` | `{_id, timestamp, sequence_id, channel, owner, data}` (+ `attributes` when given) |
//! | `subscriber_state` | `{subscriber_id, channel, user, promiscuous, last_event_id, created_at, last_poll}` |
//! | `kv` | `{namespace, key, value}` (upstream keeps these in Redis) |
//! | `counters` | `{_id: "event_seq", seq}` the event sequence, `{_id: "event_purged_through", seq}` the retention point (upstream keeps the sequence in Redis; at start-up the counter is raised to the highest `sequence_id` already stored) |
//!
//! Upstream documents are read as they are: a redundant `id` field is ignored, missing fields
//! take the model's defaults.
//!
//! # Guarantees
//!
//! - **Timestamps keep milliseconds**: BSON datetimes have millisecond precision, so the
//!   microseconds of a node's timestamps are truncated on write; the nodes returned by writes
//!   are the stored (truncated) values. Queries with sub-millisecond timestamps are still
//!   answered exactly against the stored values.
//! - **Transactions**: on a replica set (or sharded cluster) every node write and its event,
//!   and every multi-document write, commit in one transaction, retried on transient errors.
//!   On a standalone server (detected once at start-up) writes run one after another: a failed
//!   batch insert is undone by deleting what it inserted, updates are guarded by the stored
//!   `updated` value, but a crash between a node write and its event can lose the event, and
//!   concurrent writers may make an event with a higher sequence visible before a lower one.
//!   Use a replica set (a single-node one is enough) in production.
//! - **Group commit**: the writes of one process run on one writer task, one after another;
//!   with transactions, the writes waiting when one starts are committed together (at most
//!   32; a group in which a write fails is rolled back and its writes run again one by one,
//!   except when the database is unavailable: then every write of the group gets that error).
//!   A write whose caller went away (a dropped request) still completes.
//! - **Monitoring**: the driver polls the server every heartbeat (10 s) instead of streaming
//!   (`serverMonitoringMode=stream` in the URI restores streaming); jongodb answers an
//!   awaitable `hello` at once, which made streaming a busy loop.
//! - **jongodb** (the test peer) copies its whole in-memory store for each transaction, so
//!   there a write costs time in proportion to everything stored; group commit keeps the
//!   crash test (2000 writes) to minutes. Genuine MongoDB has no such cost.
//! - **Time budget**: reads carry `maxTimeMS` ([`MongoConfig::query_timeout`]) and a client-side
//!   deadline; either gives [`StoreError::Timeout`]. A server that cannot be reached gives
//!   [`StoreError::Unavailable`] after [`MongoConfig::server_selection_timeout`]; the driver
//!   reconnects by itself once the server is back.
//! - **Queries** are translated to MongoDB filters with exactly [`Filter::matches`]'s
//!   semantics ([`convert`]); the rare conditions MongoDB would answer differently are
//!   evaluated in memory on the candidates.

mod convert;
mod indexes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, ClientSession, Collection, Database};
use serde_json::Value;

use self::convert::{EVENT, NODE, PLAIN, SUBSCRIBER, Schema};
use super::{
    Cursor, EventFilter, EventMode, FindOptions, NewEvent, NodePage, NodeStore, NodeUpdate,
    StoreError, StoreResult, StoredEvent, SubscriberState, UpdateRule,
};
use crate::models::{Node, NodePatch, ObjectId, Timestamp, User, UserGroup};
use crate::query::{Condition, Filter};

const SEQ_ID: &str = "event_seq";
const PURGED_ID: &str = "event_purged_through";
const TX_ATTEMPTS: usize = 50;

/// How to reach the database, and the store's budgets.
#[derive(Debug, Clone)]
pub struct MongoConfig {
    /// A MongoDB connection string (`mongodb://host:27017/?replicaSet=rs0`).
    pub uri: String,
    /// The database name (upstream: `kernelci`).
    pub database: String,
    /// Time budget of one read query (`maxTimeMS`); default 30 s.
    pub query_timeout: Duration,
    /// How long an operation waits for a reachable server before failing with
    /// [`StoreError::Unavailable`]; default 10 s.
    pub server_selection_timeout: Duration,
    /// Event history retention (the TTL index on `eventhistory.timestamp`); default 7 days,
    /// as upstream's `EVENT_HISTORY_TTL_SECONDS`.
    pub event_ttl: Duration,
    /// Use transactions when the server supports them (default); `false` forces the standalone
    /// behaviour.
    pub transactions: bool,
}

impl MongoConfig {
    /// A configuration with the default budgets.
    pub fn new(uri: impl Into<String>, database: impl Into<String>) -> MongoConfig {
        MongoConfig {
            uri: uri.into(),
            database: database.into(),
            query_timeout: Duration::from_secs(30),
            server_selection_timeout: Duration::from_secs(10),
            event_ttl: Duration::from_secs(604_800),
            transactions: true,
        }
    }
}

/// The MongoDB [`NodeStore`]. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct MongoStore {
    inner: Arc<Inner>,
    /// The queue of the writer task (see [`MongoStore::write`]).
    writes: tokio::sync::mpsc::UnboundedSender<PendingWrite>,
}

struct Inner {
    client: Client,
    db: Database,
    nodes: Collection<Document>,
    users: Collection<Document>,
    groups: Collection<Document>,
    events: Collection<Document>,
    subscribers: Collection<Document>,
    kv: Collection<Document>,
    counters: Collection<Document>,
    transactions: bool,
    query_timeout: Duration,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.inner.db.name())
            .field("transactions", &self.inner.transactions)
            .finish()
    }
}

fn write_error_code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|v| v.first())
            .map(|w| w.code),
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// Maps a driver error to a store error (`what` says what was being done).
pub(crate) fn mongo_err(what: &str, e: mongodb::error::Error) -> StoreError {
    use mongodb::error::ErrorKind;
    let code = write_error_code(&e);
    match (&*e.kind, code) {
        (_, Some(11000 | 11001)) => StoreError::Conflict(format!("{what}: duplicate key")),
        (_, Some(50)) => StoreError::Timeout(Duration::ZERO),
        (
            ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Shutdown
            | ErrorKind::Authentication { .. },
            _,
        )
        | (_, Some(6 | 7 | 89 | 91 | 189 | 262 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436)) => {
            StoreError::unavailable(format!("MongoDB: {what}"), e)
        }
        _ if e.contains_label("TransientTransactionError") => {
            StoreError::unavailable(format!("MongoDB: {what}"), e)
        }
        _ => StoreError::Internal(format!("MongoDB: {what}: {e}")),
    }
}

/// Whether a transaction failing with `e` may be retried as a whole. Genuine MongoDB labels
/// write conflicts `TransientTransactionError`; some wire-compatible servers only give the code
/// (112, WriteConflict).
/// A lost connection is not retried here: it surfaces as `Unavailable` at once.
fn is_transient(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    let network = matches!(
        &*e.kind,
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Shutdown
    );
    !network && (e.contains_label("TransientTransactionError") || write_error_code(e) == Some(112))
}

/// Raises the counter `id` to at least `value` (`$max` without `$max`, which some
/// wire-compatible servers lack: a guarded `$set`, upserting when the counter is missing).
async fn raise_to(counters: &Collection<Document>, id: &str, value: i64) -> StoreResult<()> {
    let r = counters
        .update_one(
            doc! { "_id": id, "seq": { "$lt": value } },
            doc! { "$set": { "seq": value } },
        )
        .upsert(true)
        .await;
    match r {
        Ok(_) => Ok(()),
        // The counter exists and is already higher: the upsert's insert hit its `_id`.
        Err(e) if matches!(write_error_code(&e), Some(11000 | 11001)) => Ok(()),
        Err(e) => Err(mongo_err("raise counter", e)),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored {what} cannot be read: {e}"))
}

/// A node with its timestamps truncated to what MongoDB keeps (milliseconds).
fn stored_node(mut node: Node) -> Node {
    node.created = convert::millis(node.created);
    node.updated = convert::millis(node.updated);
    node.timeout = convert::millis(node.timeout);
    node.holdoff = node.holdoff.map(convert::millis);
    node
}

fn node_doc(node: &Node) -> Document {
    convert::to_document(&NODE, &node.to_value())
}

fn decode_node(d: &Document) -> StoreResult<Node> {
    Node::from_value(convert::from_document(d)).map_err(|e| corrupt("node", e))
}

fn decode_json<T: serde::de::DeserializeOwned>(d: &Document, what: &str) -> StoreResult<T> {
    serde_json::from_value(convert::from_document(d)).map_err(|e| corrupt(what, e))
}

fn encode<T: serde::Serialize>(schema: &Schema, v: &T) -> StoreResult<Document> {
    let value = serde_json::to_value(v).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(convert::to_document(schema, &value))
}

fn node_event(op: &str, node: &Node, previous: Option<&Node>, is_hierarchy: bool) -> NewEvent {
    let event = match (op, previous) {
        ("updated", Some(prev)) => {
            crate::events::NodeEvent::updated(node, prev.state, prev.result, is_hierarchy)
        }
        _ => crate::events::NodeEvent::created(node),
    };
    NewEvent {
        channel: crate::events::NODE_CHANNEL.into(),
        owner: node.owner.clone().filter(|o| !o.is_empty()),
        data: event.to_value(),
        attributes: crate::events::logged_event_attributes(),
    }
}

fn event_doc(e: &StoredEvent) -> Document {
    let mut d = doc! {
        "_id": convert::oid(e.id),
        "timestamp": convert::datetime(e.timestamp),
        "sequence_id": i64::try_from(e.sequence_id).unwrap_or(i64::MAX),
        "channel": e.channel.clone(),
        "owner": e.owner.clone().map(Bson::String).unwrap_or(Bson::Null),
        "data": convert::json_to_bson(&e.data),
    };
    if !e.attributes.is_empty() {
        d.insert(
            "attributes",
            convert::json_to_bson(&Value::Object(e.attributes.clone())),
        );
    }
    d
}

fn decode_event(d: &Document) -> StoreResult<StoredEvent> {
    let id = match d.get("_id") {
        Some(Bson::ObjectId(o)) => convert::from_oid(o),
        _ => None,
    }
    .ok_or_else(|| corrupt("event", "bad _id"))?;
    let timestamp = match d.get("timestamp") {
        Some(Bson::DateTime(t)) => convert::from_datetime(*t),
        Some(Bson::String(s)) => Timestamp::parse(s).ok(),
        _ => None,
    }
    .ok_or_else(|| corrupt("event", "bad timestamp"))?;
    let sequence_id = match d.get("sequence_id") {
        Some(Bson::Int32(i)) => u64::try_from(*i).ok(),
        Some(Bson::Int64(i)) => u64::try_from(*i).ok(),
        Some(Bson::Double(f)) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
    .ok_or_else(|| corrupt("event", "bad sequence_id"))?;
    let attributes = match d.get("attributes") {
        Some(Bson::Document(a)) => match convert::bson_to_json(&Bson::Document(a.clone())) {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
        _ => serde_json::Map::new(),
    };
    Ok(StoredEvent {
        sequence_id,
        id,
        timestamp,
        channel: d.get_str("channel").unwrap_or_default().to_owned(),
        owner: d.get_str("owner").ok().map(str::to_owned),
        data: d
            .get("data")
            .map(convert::bson_to_json)
            .unwrap_or(Value::Null),
        attributes,
    })
}

fn as_u64(b: Option<&Bson>) -> u64 {
    match b {
        Some(Bson::Int32(i)) => u64::try_from(*i).unwrap_or(0),
        Some(Bson::Int64(i)) => u64::try_from(*i).unwrap_or(0),
        Some(Bson::Double(f)) if *f > 0.0 => *f as u64,
        _ => 0,
    }
}

/// The operations of one write, inside a transaction when the server has them.
struct Tx {
    inner: Arc<Inner>,
    session: Option<ClientSession>,
    /// A driver error carried a `TransientTransactionError` label: the whole write may be
    /// retried.
    transient: bool,
    /// Node ids inserted so far (undone on failure without transactions).
    inserted: Vec<Bson>,
}

impl Tx {
    fn fail(&mut self, what: &str, e: mongodb::error::Error) -> StoreError {
        if self.session.is_some() && is_transient(&e) {
            self.transient = true;
        }
        mongo_err(what, e)
    }

    async fn find_one(
        &mut self,
        coll: &Collection<Document>,
        filter: Document,
    ) -> StoreResult<Option<Document>> {
        let r = match self.session.as_mut() {
            Some(s) => coll.find_one(filter).session(s).await,
            None => coll.find_one(filter).await,
        };
        r.map_err(|e| self.fail("find", e))
    }

    async fn load_node(&mut self, id: ObjectId) -> StoreResult<Option<(Node, Bson)>> {
        let nodes = self.inner.nodes.clone();
        let d = self
            .find_one(&nodes, doc! { "_id": convert::oid(id) })
            .await?;
        d.map(|d| {
            let updated = d.get("updated").cloned().unwrap_or(Bson::Null);
            decode_node(&d).map(|n| (n, updated))
        })
        .transpose()
    }

    async fn insert_nodes(&mut self, docs: Vec<Document>) -> StoreResult<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let ids: Vec<Bson> = docs.iter().filter_map(|d| d.get("_id").cloned()).collect();
        let nodes = self.inner.nodes.clone();
        let r = match self.session.as_mut() {
            Some(s) => nodes.insert_many(docs).session(s).await.map(|_| ()),
            None => {
                // Without a transaction, refuse a batch with a taken id before writing.
                let taken = nodes
                    .find_one(doc! { "_id": { "$in": ids.clone() } })
                    .await
                    .map_err(|e| mongo_err("insert nodes", e))?;
                if let Some(t) = taken {
                    let id = t
                        .get_object_id("_id")
                        .map(|o| o.to_hex())
                        .unwrap_or_default();
                    return Err(StoreError::Conflict(format!(
                        "Object cannot be created with id: {id}"
                    )));
                }
                let r = nodes.insert_many(docs).await.map(|_| ());
                if r.is_ok() {
                    self.inserted.extend(ids);
                }
                r
            }
        };
        r.map_err(|e| match self.fail("insert nodes", e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict("Object cannot be created: an id is already taken".into())
            }
            other => other,
        })
    }

    /// Replaces a node; `guard` is the stored `updated` value the replacement expects
    /// (checked without transactions, where it stands in for isolation).
    async fn replace_node(&mut self, node: &Node, guard: &Bson) -> StoreResult<()> {
        let id = node
            .id
            .ok_or_else(|| StoreError::Internal("node without id".into()))?;
        let nodes = self.inner.nodes.clone();
        let doc = node_doc(node);
        let r = match self.session.as_mut() {
            Some(s) => {
                nodes
                    .replace_one(doc! { "_id": convert::oid(id) }, doc)
                    .session(s)
                    .await
            }
            None => {
                nodes
                    .replace_one(
                        doc! { "_id": convert::oid(id), "updated": guard.clone() },
                        doc,
                    )
                    .await
            }
        };
        let r = r.map_err(|e| self.fail("replace node", e))?;
        if r.matched_count == 0 {
            return Err(StoreError::Conflict(format!(
                "node {} was changed concurrently; retry",
                id.to_hex()
            )));
        }
        Ok(())
    }

    /// Appends events with the next sequence numbers.
    /// Replaces a node and, with [`EventMode::Publish`], appends its `updated` event.
    async fn write_update(
        &mut self,
        node: Node,
        previous: Node,
        guard: &Bson,
        mode: EventMode,
    ) -> StoreResult<NodeUpdate> {
        self.replace_node(&node, guard).await?;
        let event = match mode {
            EventMode::Publish => self
                .append(vec![node_event("updated", &node, Some(&previous), false)])
                .await?
                .pop(),
            EventMode::Silent => None,
        };
        Ok(NodeUpdate {
            node,
            previous,
            event,
        })
    }

    async fn append(&mut self, events: Vec<NewEvent>) -> StoreResult<Vec<StoredEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let counters = self.inner.counters.clone();
        let action = counters
            .find_one_and_update(doc! { "_id": SEQ_ID }, doc! { "$inc": { "seq": n } })
            .upsert(true)
            .return_document(ReturnDocument::After);
        let r = match self.session.as_mut() {
            Some(s) => action.session(s).await,
            None => action.await,
        };
        let last = as_u64(
            r.map_err(|e| self.fail("next event sequence", e))?
                .as_ref()
                .and_then(|d| d.get("seq")),
        );
        let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
        // A counter document someone else changed (a missing or non-numeric `seq`) must not
        // wrap the arithmetic.
        let first = last.checked_add(1).and_then(|n| n.checked_sub(count));
        let first = first.filter(|f| *f > 0).ok_or_else(|| {
            StoreError::Internal(format!(
                "the event counter {SEQ_ID:?} reads {last} after adding {count}: corrupt"
            ))
        })?;
        let now = convert::millis(Timestamp::now());
        let stored: Vec<StoredEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| StoredEvent {
                sequence_id: first + u64::try_from(i).unwrap_or(u64::MAX),
                id: ObjectId::new(),
                timestamp: now,
                channel: e.channel,
                owner: e.owner,
                data: e.data,
                attributes: e.attributes,
            })
            .collect();
        let docs: Vec<Document> = stored.iter().map(event_doc).collect();
        let evs = self.inner.events.clone();
        let r = match self.session.as_mut() {
            Some(s) => evs.insert_many(docs).session(s).await,
            None => evs.insert_many(docs).await,
        };
        r.map_err(|e| self.fail("append events", e))?;
        Ok(stored)
    }
}

/// Whether the server runs a transaction (some wire-compatible servers announce a replica
/// set without supporting them).
async fn probe_transactions(inner: &Inner) -> bool {
    let Ok(mut s) = inner.client.start_session().await else {
        return false;
    };
    if s.start_transaction().await.is_err() {
        return false;
    }
    let read = inner
        .counters
        .find_one(doc! { "_id": SEQ_ID })
        .session(&mut s)
        .await;
    read.is_ok() && s.commit_transaction().await.is_ok()
}

type TxFn<'f, T> = Box<dyn for<'t> FnMut(&'t mut Tx) -> BoxFuture<'t, StoreResult<T>> + Send + 'f>;

/// A write's result, before the writer task hands it back.
type AnyValue = Box<dyn std::any::Any + Send>;

/// The most writes committed together in one transaction.
const MAX_GROUP: usize = 32;

/// A write waiting for the writer task.
struct PendingWrite {
    op: TxFn<'static, AnyValue>,
    done: tokio::sync::oneshot::Sender<StoreResult<AnyValue>>,
}

/// The writer task: runs the queued writes one after another (they all meet on the event
/// counter document, so running them together only buys write conflicts and retries). With
/// transactions, the writes waiting when a transaction starts are committed together in it
/// (group commit, at most [`MAX_GROUP`]): one commit instead of one per write. A group in
/// which a write fails is rolled back and its writes run again one by one, so each write
/// gets its own result. Runs until every clone of the store is dropped; a write whose caller
/// went away still completes.
async fn writer_task(
    inner: Arc<Inner>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<PendingWrite>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while inner.transactions && group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        if group.len() > 1 {
            let mut ops: Vec<_> = group.iter_mut().map(|p| &mut p.op).collect();
            match run_transaction(&inner, &mut ops).await {
                Ok(values) => {
                    for (p, v) in group.into_iter().zip(values) {
                        let _ = p.done.send(Ok(v));
                    }
                    continue;
                }
                // The database is away: every write of the group fails alike (running them
                // one by one would wait out the server selection timeout once per write).
                Err(StoreError::Unavailable { message, .. }) => {
                    for p in group {
                        let _ = p.done.send(Err(StoreError::Unavailable {
                            message: message.clone(),
                            source: None,
                        }));
                    }
                    continue;
                }
                Err(StoreError::Timeout(t)) => {
                    for p in group {
                        let _ = p.done.send(Err(StoreError::Timeout(t)));
                    }
                    continue;
                }
                // A write of the group failed: run them one by one, each to its own result.
                Err(_) => {}
            }
        }
        for mut p in group {
            let r = run_transaction(&inner, &mut [&mut p.op])
                .await
                .and_then(|mut v| {
                    v.pop()
                        .ok_or_else(|| StoreError::Internal("write without a result".into()))
                });
            let _ = p.done.send(r);
        }
    }
}

/// Runs `ops` in order in one transaction (retried as a whole on transient errors), or
/// directly without transactions; their results in the same order.
async fn run_transaction(
    inner: &Arc<Inner>,
    ops: &mut [&mut TxFn<'static, AnyValue>],
) -> StoreResult<Vec<AnyValue>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let session = if inner.transactions {
            let mut s = inner
                .client
                .start_session()
                .await
                .map_err(|e| mongo_err("start session", e))?;
            s.start_transaction()
                .await
                .map_err(|e| mongo_err("start transaction", e))?;
            Some(s)
        } else {
            None
        };
        let mut tx = Tx {
            inner: inner.clone(),
            session,
            transient: false,
            inserted: Vec::new(),
        };
        let mut out = Ok(Vec::with_capacity(ops.len()));
        for op in ops.iter_mut() {
            match op(&mut tx).await {
                Ok(v) => {
                    if let Ok(values) = &mut out {
                        values.push(v);
                    }
                }
                Err(e) => {
                    out = Err(e);
                    break;
                }
            }
        }
        match out {
            Ok(values) => {
                let Some(mut s) = tx.session.take() else {
                    return Ok(values);
                };
                let mut commit_attempts = 0;
                loop {
                    match s.commit_transaction().await {
                        Ok(()) => return Ok(values),
                        Err(e)
                            if e.contains_label("UnknownTransactionCommitResult")
                                && commit_attempts < 3 =>
                        {
                            commit_attempts += 1;
                        }
                        Err(e) if is_transient(&e) && attempt < TX_ATTEMPTS => {
                            break;
                        }
                        Err(e) => return Err(mongo_err("commit", e)),
                    }
                }
            }
            Err(err) => {
                if let Some(mut s) = tx.session.take() {
                    let _ = s.abort_transaction().await;
                } else if !tx.inserted.is_empty() {
                    // Undo a partial write without transactions.
                    let _ = inner
                        .nodes
                        .delete_many(doc! { "_id": { "$in": tx.inserted.clone() } })
                        .await;
                }
                let retry = (tx.transient
                    || (!inner.transactions
                        && matches!(&err, StoreError::Conflict(m) if m.ends_with("; retry"))))
                    && attempt < TX_ATTEMPTS;
                if !retry {
                    return Err(err);
                }
            }
        }
        let backoff = 2u64.saturating_pow(u32::try_from(attempt.min(6)).unwrap_or(6));
        tokio::time::sleep(Duration::from_millis(backoff + fastrand_ms())).await;
    }
}

impl MongoStore {
    /// Connects to `uri`, database `database`, with the default budgets.
    pub async fn connect(uri: &str, database: &str) -> StoreResult<MongoStore> {
        MongoStore::connect_with(MongoConfig::new(uri, database)).await
    }

    /// Connects, detects transaction support, raises the event counter to the stored events,
    /// and reconciles the indexes (see [`MongoStore::reconcile_indexes`]).
    pub async fn connect_with(config: MongoConfig) -> StoreResult<MongoStore> {
        let mut options = ClientOptions::parse(&config.uri).await.map_err(|e| {
            match mongo_err("parse connection string", e) {
                StoreError::Internal(m) => StoreError::Invalid(m),
                other => other,
            }
        })?;
        options.server_selection_timeout = Some(config.server_selection_timeout);
        // Poll the server (a `hello` every heartbeat, 10 s by default) rather than stream:
        // wire-compatible servers that answer an awaitable `hello` at once (jongodb) turn the
        // streaming protocol into a busy loop of thousands of `hello`s a second, which took a
        // core from the server and the database alike. `serverMonitoringMode=stream` in the
        // URI still chooses streaming.
        options
            .server_monitoring_mode
            .get_or_insert(mongodb::options::ServerMonitoringMode::Poll);
        options.connect_timeout = Some(config.server_selection_timeout);
        options.app_name.get_or_insert_with(|| "kernelci-rs".into());
        let client = Client::with_options(options).map_err(|e| mongo_err("create client", e))?;
        let db = client.database(&config.database);
        let hello = db
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| mongo_err("hello", e))?;
        let replicated = hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid");
        let mut inner = Arc::new(Inner {
            nodes: db.collection("node"),
            users: db.collection("user"),
            groups: db.collection("usergroup"),
            events: db.collection("eventhistory"),
            subscribers: db.collection("subscriber_state"),
            kv: db.collection("kv"),
            counters: db.collection("counters"),
            transactions: false,
            query_timeout: config.query_timeout,
            client,
            db,
        });
        let transactions = config.transactions && replicated && probe_transactions(&inner).await;
        if transactions {
            if let Some(inner) = Arc::get_mut(&mut inner) {
                inner.transactions = true;
            }
        } else {
            tracing::warn!(
                database = %config.database,
                "MongoDB without transactions: node writes and their events are written one after another"
            );
        }
        let (writes, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(writer_task(inner.clone(), queue));
        let store = MongoStore { inner, writes };
        store.raise_counter().await?;
        let ttl = i64::try_from(config.event_ttl.as_secs()).unwrap_or(i64::MAX);
        store.reconcile_indexes(ttl).await?;
        Ok(store)
    }

    /// Upstream kept the sequence in Redis: make sure ours starts above every stored event.
    async fn raise_counter(&self) -> StoreResult<()> {
        let top = self
            .inner
            .events
            .find_one(doc! {})
            .sort(doc! { "sequence_id": -1 })
            .await
            .map_err(|e| mongo_err("read event sequence", e))?;
        let top = as_u64(top.as_ref().and_then(|d| d.get("sequence_id")));
        if top > 0 {
            raise_to(
                &self.inner.counters,
                SEQ_ID,
                i64::try_from(top).unwrap_or(i64::MAX),
            )
            .await?;
        }
        Ok(())
    }

    /// Creates the declared indexes that have no equivalent yet (api spec §7.1); returns the
    /// names created. Called by [`MongoStore::connect_with`]; safe to call again.
    pub async fn reconcile_indexes(&self, event_ttl_secs: i64) -> StoreResult<Vec<String>> {
        indexes::reconcile(&self.inner.db, &indexes::declared(event_ttl_secs)).await
    }

    /// Whether writes run in transactions (the server is a replica set or sharded cluster).
    pub fn uses_transactions(&self) -> bool {
        self.inner.transactions
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// Runs `f` in a transaction (retried on transient errors), or directly without one, on
    /// the writer task (see [`writer_task`]): writes of this process are serialised there and,
    /// with transactions, committed in groups.
    async fn write<T: Send + 'static>(&self, mut f: TxFn<'static, T>) -> StoreResult<T> {
        let op: TxFn<'static, AnyValue> = Box::new(move |tx| {
            let fut = f(tx);
            Box::pin(async move { fut.await.map(|v| Box::new(v) as AnyValue) })
        });
        let (done, result) = tokio::sync::oneshot::channel();
        self.writes
            .send(PendingWrite { op, done })
            .map_err(|_| StoreError::Internal("the MongoDB writer task stopped".into()))?;
        let value = result
            .await
            .map_err(|_| StoreError::Internal("the MongoDB writer task stopped".into()))??;
        value
            .downcast::<T>()
            .map(|v| *v)
            .map_err(|_| StoreError::Internal("unexpected write result type".into()))
    }

    /// Runs a read with the client-side deadline.
    async fn read<T>(
        &self,
        fut: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let budget = self.inner.query_timeout;
        match tokio::time::timeout(budget + Duration::from_secs(1), fut).await {
            Ok(Err(StoreError::Timeout(_))) | Err(_) => Err(StoreError::Timeout(budget)),
            Ok(r) => r,
        }
    }

    /// Finds nodes matching a translated filter (in `sort` order), applying the residual
    /// conditions in memory; `skip`/`limit` apply to the final answer.
    async fn find_docs(
        &self,
        t: &convert::Translated,
        sort: Document,
        skip: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<Document>> {
        let mut action = self
            .inner
            .nodes
            .find(t.doc.clone())
            .sort(sort)
            .max_time(self.inner.query_timeout);
        if t.residual.is_empty() {
            action = action.skip(skip);
            if let Some(l) = limit {
                action = action.limit(i64::try_from(l).unwrap_or(i64::MAX));
            }
            let cursor = action.await.map_err(|e| mongo_err("find nodes", e))?;
            return cursor
                .try_collect()
                .await
                .map_err(|e| mongo_err("find nodes", e));
        }
        let mut cursor = action.await.map_err(|e| mongo_err("find nodes", e))?;
        let mut out = Vec::new();
        let mut skipped = 0u64;
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| mongo_err("find nodes", e))?
        {
            if limit.is_some_and(|l| out.len() as u64 >= l) {
                break;
            }
            if !residual_matches(&t.residual, &d)? {
                continue;
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            out.push(d);
        }
        Ok(out)
    }
}

fn residual_matches(residual: &[Condition], d: &Document) -> StoreResult<bool> {
    if residual.is_empty() {
        return Ok(true);
    }
    let value = decode_node(d)?.to_value();
    Ok(residual.iter().all(|c| c.matches(&value)))
}

fn fastrand_ms() -> u64 {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    u64::from(b[0] % 8)
}

fn sort_field(field: &str) -> StoreResult<&str> {
    if field.is_empty() || field.split('.').any(|s| s.is_empty() || s.starts_with('$')) {
        return Err(StoreError::Invalid(format!("bad sort field '{field}'")));
    }
    Ok(if field == "id" { "_id" } else { field })
}

fn not_found(id: ObjectId) -> StoreError {
    StoreError::NotFound {
        what: "Node",
        id: id.to_hex(),
    }
}

fn tx_fn<'f, T, F>(f: F) -> TxFn<'f, T>
where
    F: for<'t> FnMut(&'t mut Tx) -> BoxFuture<'t, StoreResult<T>> + Send + 'f,
{
    Box::new(f)
}

fn escape_regex(s: &str) -> String {
    regex::escape(s)
}

#[async_trait]
impl NodeStore for MongoStore {
    async fn insert_nodes(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<Vec<Node>> {
        let nodes: Vec<Node> = nodes
            .into_iter()
            .map(|mut n| {
                n.id.get_or_insert_with(ObjectId::new);
                stored_node(n)
            })
            .collect();
        let docs: Vec<Document> = nodes.iter().map(node_doc).collect();
        let events: Vec<NewEvent> = match event {
            EventMode::Publish => nodes
                .iter()
                .map(|n| node_event("created", n, None, false))
                .collect(),
            EventMode::Silent => Vec::new(),
        };
        self.write(tx_fn(move |tx| {
            let (docs, events) = (docs.clone(), events.clone());
            Box::pin(async move {
                tx.insert_nodes(docs).await?;
                tx.append(events).await?;
                Ok(())
            })
        }))
        .await?;
        Ok(nodes)
    }

    async fn get_node(&self, id: ObjectId) -> StoreResult<Option<Node>> {
        self.read(async {
            let d = self
                .inner
                .nodes
                .find_one(doc! { "_id": convert::oid(id) })
                .max_time(self.inner.query_timeout)
                .await
                .map_err(|e| mongo_err("get node", e))?;
            d.as_ref().map(decode_node).transpose()
        })
        .await
    }

    async fn update_node(&self, node: Node, rule: UpdateRule) -> StoreResult<NodeUpdate> {
        let id = node
            .id
            .ok_or_else(|| StoreError::Invalid("node has no id".into()))?;
        self.write(tx_fn(move |tx| {
            let mut node = node.clone();
            Box::pin(async move {
                let (previous, guard) = tx.load_node(id).await?.ok_or_else(|| not_found(id))?;
                if rule.check_transition {
                    previous.state.check_transition(node.state)?;
                }
                if rule.keep_identity {
                    node.owner.clone_from(&previous.owner);
                    node.submitter.clone_from(&previous.submitter);
                    node.user_groups.clone_from(&previous.user_groups);
                }
                node.updated = Timestamp::now();
                let node = stored_node(node);
                tx.write_update(node, previous, &guard, rule.event).await
            })
        }))
        .await
    }

    async fn patch_node(
        &self,
        id: ObjectId,
        patch: &NodePatch,
        event: EventMode,
    ) -> StoreResult<NodeUpdate> {
        let patch = patch.clone();
        self.write(tx_fn(move |tx| {
            let patch = patch.clone();
            Box::pin(async move {
                let (previous, guard) = tx.load_node(id).await?.ok_or_else(|| not_found(id))?;
                let mut node = previous.clone();
                patch.apply(&mut node)?;
                let node = stored_node(node);
                tx.write_update(node, previous, &guard, event).await
            })
        }))
        .await
    }

    async fn write_hierarchy(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<Vec<Node>> {
        self.write(tx_fn(move |tx| {
            let nodes = nodes.clone();
            Box::pin(async move {
                let mut out = Vec::with_capacity(nodes.len());
                let mut root_previous = None;
                for (i, mut node) in nodes.into_iter().enumerate() {
                    let stored = match node.id {
                        Some(id) => tx.load_node(id).await?,
                        None => None,
                    };
                    let node = match &stored {
                        Some((_, guard)) => {
                            node.updated = Timestamp::now();
                            let node = stored_node(node);
                            tx.replace_node(&node, guard).await?;
                            node
                        }
                        None => {
                            node.id.get_or_insert_with(ObjectId::new);
                            let node = stored_node(node);
                            tx.insert_nodes(vec![node_doc(&node)]).await?;
                            node
                        }
                    };
                    if i == 0 {
                        root_previous = stored.map(|(n, _)| n);
                    }
                    out.push(node);
                }
                if event == EventMode::Publish
                    && let Some(root) = out.first()
                {
                    let prev = root_previous.as_ref().unwrap_or(root);
                    tx.append(vec![node_event("updated", root, Some(prev), true)])
                        .await?;
                }
                Ok(out)
            })
        }))
        .await
    }

    async fn set_field(&self, ids: &[ObjectId], field: &str, value: Value) -> StoreResult<u64> {
        if field.is_empty() || field.contains('.') || field.starts_with('$') || field == "id" {
            return Err(StoreError::Invalid(format!(
                "field '{field}' cannot be set"
            )));
        }
        if field == "_id" {
            return Err(StoreError::Invalid(format!(
                "field '{field}' cannot be set"
            )));
        }
        // The value must fit the node model, as a full write would check.
        let mut probe = Node::new(crate::models::NodeKind::Checkout, "probe").to_value();
        if let Some(obj) = probe.as_object_mut() {
            obj.insert(field.to_owned(), value.clone());
        }
        Node::from_value(probe)?;
        let now = convert::datetime(Timestamp::now());
        let ids: Vec<Bson> = ids
            .iter()
            .map(|i| Bson::ObjectId(convert::oid(*i)))
            .collect();
        let class = NODE.class(field);
        let r = self
            .inner
            .nodes
            .update_many(
                doc! { "_id": { "$in": ids } },
                doc! { "$set": { field: convert::typed_bson(class, &value), "updated": now } },
            )
            .await
            .map_err(|e| mongo_err("set field", e))?;
        Ok(r.matched_count)
    }

    async fn find_nodes(&self, filter: &Filter, options: &FindOptions) -> StoreResult<NodePage> {
        let mut t = convert::translate(&NODE, filter);
        let (sort_on, desc) = match &options.sort {
            Some(s) => (Some(sort_field(&s.field)?.to_owned()), s.descending),
            None => (None, false),
        };
        let dir = if desc { -1 } else { 1 };
        let sort = match &sort_on {
            Some(f) if f != "_id" => doc! { f.clone(): dir, "_id": dir },
            _ => doc! { "_id": dir },
        };
        if let Some(after) = &options.after {
            let clause = match &sort_on {
                Some(f) if f != "_id" => {
                    let key = convert::typed_bson(NODE.class(f), &after.key);
                    convert::keyset_after(f, &key, after.id, desc)
                }
                _ => {
                    let op = if desc { "$lt" } else { "$gt" };
                    doc! { "_id": { op: convert::oid(after.id) } }
                }
            };
            t.doc = if t.doc.is_empty() {
                clause
            } else {
                doc! { "$and": [t.doc.clone(), clause] }
            };
        }
        let docs = self
            .read(self.find_docs(&t, sort, options.offset, options.limit))
            .await?;
        let mut items = Vec::with_capacity(docs.len());
        for d in &docs {
            items.push(decode_node(d)?);
        }
        let next = match (options.limit, docs.last(), items.last()) {
            (Some(l), Some(d), Some(last)) if items.len() as u64 == l => {
                let key = match &sort_on {
                    Some(f) if f != "_id" => convert::get_path(d, f)
                        .map(convert::bson_to_json)
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                last.id.map(|id| Cursor { key, id })
            }
            _ => None,
        };
        Ok(NodePage { items, next })
    }

    async fn count_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let t = convert::translate(&NODE, filter);
        self.read(async {
            if t.residual.is_empty() {
                self.inner
                    .nodes
                    .count_documents(t.doc.clone())
                    .max_time(self.inner.query_timeout)
                    .await
                    .map_err(|e| mongo_err("count nodes", e))
            } else {
                Ok(self.find_docs(&t, doc! { "_id": 1 }, 0, None).await?.len() as u64)
            }
        })
        .await
    }

    async fn delete_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let t = convert::translate(&NODE, filter);
        let target = if t.residual.is_empty() {
            t.doc.clone()
        } else {
            let ids: Vec<Bson> = self
                .find_docs(&t, doc! { "_id": 1 }, 0, None)
                .await?
                .iter()
                .filter_map(|d| d.get("_id").cloned())
                .collect();
            doc! { "_id": { "$in": ids } }
        };
        let r = self
            .inner
            .nodes
            .delete_many(target)
            .await
            .map_err(|e| mongo_err("delete nodes", e))?;
        Ok(r.deleted_count)
    }

    async fn insert_user(&self, user: User) -> StoreResult<User> {
        self.check_user_unique(&user).await?;
        let d = encode(&PLAIN, &user)?;
        self.inner
            .users
            .insert_one(d)
            .await
            .map_err(|e| user_conflict(mongo_err("insert user", e), &user))?;
        Ok(user)
    }

    async fn get_user(&self, id: ObjectId) -> StoreResult<Option<User>> {
        self.user_where(doc! { "_id": convert::oid(id) }).await
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        self.user_where(doc! { "username": username }).await
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.user_where(email_filter(email)).await
    }

    async fn update_user(&self, user: User) -> StoreResult<User> {
        self.check_user_unique(&user).await?;
        let d = encode(&PLAIN, &user)?;
        let r = self
            .inner
            .users
            .replace_one(doc! { "_id": convert::oid(user.id) }, d)
            .await
            .map_err(|e| user_conflict(mongo_err("update user", e), &user))?;
        if r.matched_count == 0 {
            return Err(StoreError::NotFound {
                what: "User",
                id: user.id.to_hex(),
            });
        }
        Ok(user)
    }

    async fn delete_user(&self, id: ObjectId) -> StoreResult<bool> {
        let r = self
            .inner
            .users
            .delete_one(doc! { "_id": convert::oid(id) })
            .await
            .map_err(|e| mongo_err("delete user", e))?;
        Ok(r.deleted_count > 0)
    }

    async fn find_users(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<User>, u64)> {
        // Users are few; the filter runs on the public shape, as the reference store does.
        let all: Vec<User> = self.load_all(&self.inner.users, "user").await?;
        let matching = all
            .into_iter()
            .filter(|u| filter.matches(&serde_json::to_value(u.read()).unwrap_or(Value::Null)))
            .collect();
        Ok(page(matching, offset, limit))
    }

    async fn insert_group(&self, group: UserGroup) -> StoreResult<UserGroup> {
        let d = encode(&PLAIN, &group)?;
        self.inner
            .groups
            .insert_one(d)
            .await
            .map_err(|e| match mongo_err("insert group", e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "User group already exists with name: {}",
                    group.name
                )),
                other => other,
            })?;
        Ok(group)
    }

    async fn get_group(&self, id: ObjectId) -> StoreResult<Option<UserGroup>> {
        self.one(
            &self.inner.groups,
            doc! { "_id": convert::oid(id) },
            "group",
        )
        .await
    }

    async fn get_group_by_name(&self, name: &str) -> StoreResult<Option<UserGroup>> {
        self.one(&self.inner.groups, doc! { "name": name }, "group")
            .await
    }

    async fn find_groups(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<UserGroup>, u64)> {
        let all: Vec<UserGroup> = self.load_all(&self.inner.groups, "group").await?;
        let matching = all
            .into_iter()
            .filter(|g| filter.matches(&serde_json::to_value(g).unwrap_or(Value::Null)))
            .collect();
        Ok(page(matching, offset, limit))
    }

    async fn delete_group(&self, id: ObjectId) -> StoreResult<bool> {
        let r = self
            .inner
            .groups
            .delete_one(doc! { "_id": convert::oid(id) })
            .await
            .map_err(|e| mongo_err("delete group", e))?;
        Ok(r.deleted_count > 0)
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>> {
        let d = self
            .read(async {
                self.inner
                    .kv
                    .find_one(doc! { "namespace": namespace, "key": key })
                    .await
                    .map_err(|e| mongo_err("kv get", e))
            })
            .await?;
        Ok(d.and_then(|d| d.get_str("value").ok().map(str::to_owned)))
    }

    async fn kv_set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()> {
        self.inner
            .kv
            .update_one(
                doc! { "namespace": namespace, "key": key },
                doc! { "$set": { "value": value } },
            )
            .upsert(true)
            .await
            .map_err(|e| mongo_err("kv set", e))?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        let r = self
            .inner
            .kv
            .delete_one(doc! { "namespace": namespace, "key": key })
            .await
            .map_err(|e| mongo_err("kv delete", e))?;
        Ok(r.deleted_count > 0)
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<StoredEvent>> {
        self.write(tx_fn(move |tx| {
            let events = events.clone();
            Box::pin(async move { tx.append(events).await })
        }))
        .await
    }

    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.read(async {
            let purged = self.counter(PURGED_ID).await?;
            // Retention by the TTL index leaves no mark: the oldest event kept tells.
            let oldest = self
                .inner
                .events
                .find_one(doc! {})
                .sort(doc! { "sequence_id": 1 })
                .await
                .map_err(|e| mongo_err("read events", e))?
                .map(|d| as_u64(d.get("sequence_id")));
            let below_oldest = match oldest {
                Some(o) => o.saturating_sub(1),
                None => self.counter(SEQ_ID).await?,
            };
            let boundary = purged.max(below_oldest);
            if after < boundary {
                return Err(StoreError::EventsPurged {
                    requested: after,
                    oldest: boundary + 1,
                });
            }
            let mut f = doc! { "sequence_id": { "$gt": i64::try_from(after).unwrap_or(i64::MAX) } };
            if let Some(ch) = &filter.channel {
                f.insert("channel", ch.clone());
            }
            if let Some(owner) = &filter.owner {
                f.insert("owner", doc! { "$in": [owner.clone(), Bson::Null] });
            }
            let cursor = self
                .inner
                .events
                .find(f)
                .sort(doc! { "sequence_id": 1 })
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .max_time(self.inner.query_timeout)
                .await
                .map_err(|e| mongo_err("read events", e))?;
            let docs: Vec<Document> = cursor
                .try_collect()
                .await
                .map_err(|e| mongo_err("read events", e))?;
            docs.iter().map(decode_event).collect()
        })
        .await
    }

    async fn find_events(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let t = convert::translate(&EVENT, filter);
        self.read(async {
            let mut action = self
                .inner
                .events
                .find(t.doc.clone())
                .sort(doc! { "sequence_id": 1 })
                .max_time(self.inner.query_timeout);
            if t.residual.is_empty() {
                action = action.skip(offset);
                if let Some(l) = limit {
                    action = action.limit(i64::try_from(l).unwrap_or(i64::MAX));
                }
            }
            let mut cursor = action.await.map_err(|e| mongo_err("find events", e))?;
            let mut out = Vec::new();
            let mut skipped = 0;
            while let Some(d) = cursor
                .try_next()
                .await
                .map_err(|e| mongo_err("find events", e))?
            {
                let ev = decode_event(&d)?;
                if !t.residual.is_empty() {
                    if limit.is_some_and(|l| out.len() as u64 >= l) {
                        break;
                    }
                    let doc = ev.to_document();
                    if !t.residual.iter().all(|c| c.matches(&doc)) {
                        continue;
                    }
                    if skipped < offset {
                        skipped += 1;
                        continue;
                    }
                }
                out.push(ev);
            }
            Ok(out)
        })
        .await
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        self.read(self.counter(SEQ_ID)).await
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        let before = convert::datetime(before);
        let top = self
            .inner
            .events
            .find_one(doc! { "timestamp": { "$lt": before } })
            .sort(doc! { "sequence_id": -1 })
            .await
            .map_err(|e| mongo_err("purge events", e))?;
        let Some(top) = top else { return Ok(0) };
        let top = i64::try_from(as_u64(top.get("sequence_id"))).unwrap_or(i64::MAX);
        // Record the retention point first: a reader never sees a silent gap.
        raise_to(&self.inner.counters, PURGED_ID, top).await?;
        let r = self
            .inner
            .events
            .delete_many(doc! { "sequence_id": { "$lte": top } })
            .await
            .map_err(|e| mongo_err("purge events", e))?;
        Ok(r.deleted_count)
    }

    async fn get_subscriber(&self, subscriber_id: &str) -> StoreResult<Option<SubscriberState>> {
        let d = self
            .read(async {
                self.inner
                    .subscribers
                    .find_one(doc! { "subscriber_id": subscriber_id })
                    .await
                    .map_err(|e| mongo_err("get subscriber", e))
            })
            .await?;
        d.map(|mut d| {
            d.remove("_id");
            decode_json(&d, "subscriber")
        })
        .transpose()
    }

    async fn put_subscriber(&self, state: SubscriberState) -> StoreResult<()> {
        let d = encode(&SUBSCRIBER, &state)?;
        self.inner
            .subscribers
            .replace_one(doc! { "subscriber_id": state.subscriber_id.clone() }, d)
            .upsert(true)
            .await
            .map_err(|e| mongo_err("put subscriber", e))?;
        Ok(())
    }

    async fn increment_counter(&self, name: &str) -> StoreResult<u64> {
        let id = format!("counter:{name}");
        let r = self
            .inner
            .counters
            .find_one_and_update(doc! { "_id": &id }, doc! { "$inc": { "seq": 1i64 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| mongo_err("increment a counter", e))?;
        Ok(as_u64(r.as_ref().and_then(|d| d.get("seq"))))
    }

    async fn ack_subscriber(&self, subscriber_id: &str, sequence_id: u64) -> StoreResult<()> {
        let seq = i64::try_from(sequence_id).unwrap_or(i64::MAX);
        let now = convert::datetime(Timestamp::now());
        // Forward only: a guarded `$set` (atomic per document), then stamp `last_poll`.
        self.inner
            .subscribers
            .update_one(
                doc! { "subscriber_id": subscriber_id, "last_event_id": { "$lt": seq } },
                doc! { "$set": { "last_event_id": seq, "last_poll": now } },
            )
            .await
            .map_err(|e| mongo_err("ack subscriber", e))?;
        let r = self
            .inner
            .subscribers
            .update_one(
                doc! { "subscriber_id": subscriber_id },
                doc! { "$set": { "last_poll": now } },
            )
            .await
            .map_err(|e| mongo_err("ack subscriber", e))?;
        if r.matched_count == 0 {
            return Err(StoreError::NotFound {
                what: "Subscriber",
                id: subscriber_id.to_owned(),
            });
        }
        Ok(())
    }
}

fn email_filter(email: &str) -> Document {
    // Case-insensitive without relying on collation support in `find` (wire-compatible
    // servers lack it); the unique index has the collation.
    doc! { "email": { "$regex": format!("^{}$", escape_regex(email)), "$options": "i" } }
}

fn user_conflict(e: StoreError, user: &User) -> StoreError {
    match e {
        StoreError::Conflict(msg) if msg.contains("username") => {
            StoreError::Conflict(format!("Username already exists: {}", user.username))
        }
        StoreError::Conflict(_) => StoreError::Conflict("REGISTER_USER_ALREADY_EXISTS".into()),
        other => other,
    }
}

fn page<T>(items: Vec<T>, offset: u64, limit: Option<u64>) -> (Vec<T>, u64) {
    let total = items.len() as u64;
    let it = items
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX));
    let out = match limit {
        Some(l) => it.take(usize::try_from(l).unwrap_or(usize::MAX)).collect(),
        None => it.collect(),
    };
    (out, total)
}

impl MongoStore {
    async fn counter(&self, id: &str) -> StoreResult<u64> {
        let d = self
            .inner
            .counters
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| mongo_err("read counter", e))?;
        Ok(as_u64(d.as_ref().and_then(|d| d.get("seq"))))
    }

    async fn one<T: serde::de::DeserializeOwned>(
        &self,
        coll: &Collection<Document>,
        filter: Document,
        what: &str,
    ) -> StoreResult<Option<T>> {
        let d = self
            .read(async {
                coll.find_one(filter)
                    .max_time(self.inner.query_timeout)
                    .await
                    .map_err(|e| mongo_err(what, e))
            })
            .await?;
        d.map(|d| decode_json(&d, what)).transpose()
    }

    async fn user_where(&self, filter: Document) -> StoreResult<Option<User>> {
        self.one(&self.inner.users, filter, "user").await
    }

    async fn load_all<T: serde::de::DeserializeOwned>(
        &self,
        coll: &Collection<Document>,
        what: &str,
    ) -> StoreResult<Vec<T>> {
        let docs: Vec<Document> = self
            .read(async {
                let c = coll
                    .find(doc! {})
                    .sort(doc! { "_id": 1 })
                    .max_time(self.inner.query_timeout)
                    .await
                    .map_err(|e| mongo_err(what, e))?;
                c.try_collect().await.map_err(|e| mongo_err(what, e))
            })
            .await?;
        docs.iter().map(|d| decode_json(d, what)).collect()
    }

    /// Checks username and case-insensitive e-mail uniqueness before a user write (the unique
    /// indexes enforce it on genuine MongoDB; this gives the same answer where a
    /// wire-compatible server ignores the index collation).
    async fn check_user_unique(&self, user: &User) -> StoreResult<()> {
        let me = convert::oid(user.id);
        let clash = doc! {
            "_id": { "$ne": me },
            "$or": [ { "username": user.username.clone() }, email_filter(&user.email) ],
        };
        let other: Option<User> = self.user_where(clash).await?;
        match other {
            Some(o) if o.username == user.username => Err(StoreError::Conflict(format!(
                "Username already exists: {}",
                user.username
            ))),
            Some(_) => Err(StoreError::Conflict("REGISTER_USER_ALREADY_EXISTS".into())),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl crate::store::TelemetryStore for MongoStore {
    async fn insert_telemetry(&self, events: Vec<Value>) -> StoreResult<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let docs: Vec<Document> = events
            .into_iter()
            .map(|mut e| {
                if let Some(o) = e.as_object_mut() {
                    o.remove("id");
                    o.remove("_id");
                    if o.get("ts")
                        .and_then(Value::as_str)
                        .is_none_or(|t| Timestamp::parse(t).is_err())
                    {
                        o.insert("ts".into(), Value::String(Timestamp::now().to_string()));
                    }
                }
                convert::to_document(&convert::TELEMETRY, &e)
            })
            .collect();
        let n = docs.len() as u64;
        self.inner
            .db
            .collection::<Document>("telemetry")
            .insert_many(docs)
            .await
            .map_err(|e| mongo_err("insert telemetry", e))?;
        Ok(n)
    }

    async fn find_telemetry(
        &self,
        filter: &Filter,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<Value>, u64)> {
        let t = convert::translate(&convert::TELEMETRY, filter);
        let mut query = t.doc.clone();
        let mut range = Document::new();
        if let Some(s) = since {
            range.insert("$gte", convert::datetime(s));
        }
        if let Some(u) = until {
            range.insert("$lte", convert::datetime(u));
        }
        if !range.is_empty() {
            query = doc! { "$and": [query, { "ts": range }] };
        }
        let coll = self.inner.db.collection::<Document>("telemetry");
        let mut cursor = coll
            .find(query)
            .sort(doc! { "ts": 1 })
            .max_time(self.inner.query_timeout)
            .await
            .map_err(|e| mongo_err("find telemetry", e))?;
        let mut all = Vec::new();
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| mongo_err("find telemetry", e))?
        {
            let v = convert::from_document(&d);
            if t.residual.iter().all(|c| c.matches(&v)) {
                all.push(v);
            }
        }
        let total = all.len() as u64;
        let it = all
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX));
        let items = match limit {
            Some(l) => it.take(usize::try_from(l).unwrap_or(usize::MAX)).collect(),
            None => it.collect(),
        };
        Ok((items, total))
    }
}
