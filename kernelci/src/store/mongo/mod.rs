//! [`MongoStore`]: the production store on MongoDB (feature `mongodb`), implementing every
//! store trait.
//!
//! This file holds the connection, the error mapping and the write plumbing (one writer task,
//! transactions with retries, group commit); each trait's implementation is in its own file:
//! [`nodes`], [`users`], [`kv`], [`events`], [`telemetry`].
//!
//! # Collections (compatible with a database written by upstream's Python API)
//!
//! | collection | documents |
//! |---|---|
//! | `node` | the node JSON with `_id` and `parent` as ObjectIds and `created`, `updated`, `timeout`, `holdoff` as BSON datetimes |
//! | `user`, `usergroup` | upstream's shapes (`_id` ObjectId; a Beanie `revision_id` is ignored) |
//! | `eventhistory` | `{_id, timestamp, sequence_id, channel, owner, data}` (+ `attributes` when given) |
//! | `telemetry` | upstream's telemetry events (`ts` a BSON datetime) |
//! | `subscriber_state` | `{subscriber_id, channel, user, promiscuous, last_event_id, created_at, last_poll}` |
//! | `subscription` | `{_id: id, version, channel, user, promiscuous, durable, position, sent: {sequence_id, confirmed}, created, last_poll}` (the subscriptions every replica serves; upstream keeps them in each process's memory) |
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
//! - **Queries** are translated to MongoDB filters with exactly the semantics of
//!   [`Filter::matches`](crate::query::Filter::matches) ([`convert`]); the rare conditions
//!   MongoDB would answer differently are evaluated in memory on the candidates, reading only
//!   the fields they need when counting.
//! - **Telemetry statistics** are counted by the server with stages jongodb understands too
//!   (see [`telemetry`]).

mod convert;
mod events;
mod indexes;
mod kv;
mod lock;
mod nodes;
mod results;
mod telemetry;
mod users;

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, ClientSession, Collection, Database};

use self::convert::Schema;
use super::{Conflict, StoreError, StoreResult};

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

/// The MongoDB store: implements every store trait ([`Store`](super::Store)). Cheap to clone;
/// clones share the connection pool.
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
    subscriptions: Collection<Document>,
    kv: Collection<Document>,
    counters: Collection<Document>,
    /// Serialises this process's counter increments. A genuine MongoDB applies each `$inc`
    /// atomically anyway; the wire emulators (jongodb) can hand two concurrent callers the same
    /// value, so one caller at a time here keeps a process's values distinct on them too.
    counter_lock: tokio::sync::Mutex<()>,
    transactions: bool,
    query_timeout: Duration,
    /// This store's name in the append lease (see [`lock`]).
    holder: String,
}

impl Inner {
    /// The collections of `config.database` through `client`; transactions off until probed.
    fn new(client: Client, config: &MongoConfig) -> Inner {
        let db = client.database(&config.database);
        Inner {
            nodes: db.collection("node"),
            users: db.collection("user"),
            groups: db.collection("usergroup"),
            events: db.collection("eventhistory"),
            subscribers: db.collection("subscriber_state"),
            subscriptions: db.collection("subscription"),
            kv: db.collection("kv"),
            counters: db.collection("counters"),
            counter_lock: tokio::sync::Mutex::new(()),
            transactions: false,
            query_timeout: config.query_timeout,
            holder: lock::holder_name(),
            client,
            db,
        }
    }
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
    tracing::debug!(what, error = %e, "MongoDB error");
    match (&*e.kind, code) {
        (_, Some(11000 | 11001)) => {
            StoreError::Conflict(Conflict::Other(format!("{what}: duplicate key")))
        }
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

/// Whether `e` says the server could not be reached (rather than that it refused something).
fn is_network(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    matches!(
        &*e.kind,
        ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Shutdown
    )
}

/// Whether a transaction failing with `e` may be retried as a whole. Genuine MongoDB labels
/// write conflicts `TransientTransactionError`; some wire-compatible servers only give the code
/// (112, WriteConflict).
/// A lost connection is not retried here: it surfaces as `Unavailable` at once (a commit whose
/// outcome it left unknown is resolved in [`run_transaction`]).
fn is_transient(e: &mongodb::error::Error) -> bool {
    !is_network(e)
        && (e.contains_label("TransientTransactionError") || write_error_code(e) == Some(112))
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

/// A stored document that does not decode.
fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored {what} cannot be read: {e}"))
}

fn decode_json<T: serde::de::DeserializeOwned>(d: &Document, what: &str) -> StoreResult<T> {
    serde_json::from_value(convert::from_document(d)).map_err(|e| corrupt(what, e))
}

fn encode<T: serde::Serialize>(schema: &Schema, v: &T) -> StoreResult<Document> {
    let value = serde_json::to_value(v).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(convert::to_document(schema, &value))
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
    /// A driver error carried a `TransientTransactionError` label (or was another conflict
    /// with a concurrent transaction): the whole write may be retried.
    transient: bool,
    /// The last driver error said the server could not be reached.
    network: bool,
    /// Node ids inserted so far (undone on failure without transactions).
    inserted: Vec<Bson>,
    /// The `_id` of the first event document this write appended: present after a commit
    /// exactly when the transaction committed (see [`commit_outcome`]).
    witness: Option<Bson>,
}

impl Tx {
    fn fail(&mut self, what: &str, e: mongodb::error::Error) -> StoreError {
        if self.session.is_some() && is_transient(&e) {
            self.transient = true;
        }
        self.network = is_network(&e);
        mongo_err(what, e)
    }

    /// Like [`Tx::fail`], for the writes of the event sequence: inside a transaction a
    /// duplicate key there (a `sequence_id`, or the counter's upsert) means a concurrent
    /// transaction took the same number. Genuine MongoDB reports that race as a write
    /// conflict on the counter; jongodb lets both increments through and only the unique index
    /// catches it. Either way the whole write is run again.
    fn fail_sequence(&mut self, what: &str, e: mongodb::error::Error) -> StoreError {
        if self.session.is_some() && matches!(write_error_code(&e), Some(11000 | 11001)) {
            self.transient = true;
        }
        self.fail(what, e)
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

/// Why [`run_transaction`] failed.
struct TxFailure {
    error: StoreError,
    /// The database could not be reached (rather than refusing this write): the other writes
    /// waiting would fail alike.
    database_away: bool,
}

impl TxFailure {
    fn away(error: StoreError) -> TxFailure {
        TxFailure {
            error,
            database_away: true,
        }
    }
}

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
/// gets its own result; a conflict with another process's transactions (another server
/// replica on the same database) is retried inside [`run_transaction`], group or not, and
/// never fails the group. Only when the database cannot be reached do all the writes of a
/// group get that error at once. Runs until every clone of the store is dropped; a write whose
/// caller went away still completes.
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
                Err(TxFailure {
                    error,
                    database_away: true,
                }) => {
                    for p in group {
                        let _ = p.done.send(Err(error.copied()));
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
                .map_err(|f| f.error)
                .and_then(|mut v| {
                    v.pop()
                        .ok_or_else(|| StoreError::Internal("write without a result".into()))
                });
            let _ = p.done.send(r);
        }
    }
}

/// Runs `ops` in order in one transaction (retried as a whole on transient errors), or
/// directly without transactions; their results in the same order. A transaction runs under
/// the append lease (see [`lock`]).
async fn run_transaction(
    inner: &Arc<Inner>,
    ops: &mut [&mut TxFn<'static, AnyValue>],
) -> Result<Vec<AnyValue>, TxFailure> {
    if !inner.transactions {
        return run_attempts(inner, ops).await;
    }
    lock::acquire(inner).await;
    let r = run_attempts(inner, ops).await;
    lock::release(inner).await;
    r
}

/// [`run_transaction`]'s attempts.
async fn run_attempts(
    inner: &Arc<Inner>,
    ops: &mut [&mut TxFn<'static, AnyValue>],
) -> Result<Vec<AnyValue>, TxFailure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let session = if inner.transactions {
            let mut s = inner
                .client
                .start_session()
                .await
                .map_err(|e| TxFailure::away(mongo_err("start session", e)))?;
            s.start_transaction()
                .await
                .map_err(|e| TxFailure::away(mongo_err("start transaction", e)))?;
            Some(s)
        } else {
            None
        };
        let mut tx = Tx {
            inner: inner.clone(),
            session,
            transient: false,
            network: false,
            inserted: Vec::new(),
            witness: None,
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
                            tracing::debug!(attempt, error = %e, "commit conflict: the write runs again");
                            break;
                        }
                        Err(e) if e.contains_label("UnknownTransactionCommitResult") => {
                            // Retrying the commit did not tell (jongodb drops the connection
                            // when a commit hits a unique index). The write's first event says.
                            match commit_outcome(inner, tx.witness.as_ref()).await {
                                Some(true) => return Ok(values),
                                Some(false) if attempt < TX_ATTEMPTS => {
                                    tracing::debug!(attempt, error = %e, "commit did not happen: the write runs again");
                                    break;
                                }
                                outcome => {
                                    return Err(TxFailure {
                                        error: mongo_err("commit", e),
                                        database_away: outcome.is_none() && tx.witness.is_some(),
                                    });
                                }
                            }
                        }
                        Err(e) => {
                            return Err(TxFailure {
                                database_away: is_network(&e),
                                error: mongo_err("commit", e),
                            });
                        }
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
                        && matches!(&err, StoreError::Conflict(Conflict::ConcurrentWrite(_)))))
                    && attempt < TX_ATTEMPTS;
                tracing::debug!(attempt, retry, error = %err, "write failed");
                if !retry {
                    return Err(TxFailure {
                        error: err,
                        database_away: tx.network,
                    });
                }
            }
        }
        let backoff = 2u64.saturating_pow(u32::try_from(attempt.min(6)).unwrap_or(6));
        tokio::time::sleep(Duration::from_millis(backoff + fastrand_ms())).await;
    }
}

/// Whether a transaction whose commit outcome is unknown committed: its first event document
/// (`witness`) is stored exactly when it did. `None` when that cannot be told (no event was
/// appended, or the database does not answer).
async fn commit_outcome(inner: &Inner, witness: Option<&Bson>) -> Option<bool> {
    let id = witness?;
    match inner.events.find_one(doc! { "_id": id.clone() }).await {
        Ok(found) => Some(found.is_some()),
        Err(_) => None,
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
        let client =
            Client::with_options(options.clone()).map_err(|e| mongo_err("create client", e))?;
        let db = client.database(&config.database);
        let hello = db
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| mongo_err("hello", e))?;
        let replicated = hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid");
        let mut inner = Inner::new(client, &config);
        let transactions = config.transactions && replicated && probe_transactions(&inner).await;
        if transactions {
            inner.transactions = true;
        } else {
            tracing::warn!(
                database = %config.database,
                "MongoDB without transactions: node writes and their events are written one after another"
            );
        }
        // The writer task has a client (a connection pool) of its own: a failed commit may
        // cost its connection (jongodb drops it when a commit meets the unique index of a
        // sequence number another replica took), and the driver then clears every connection
        // of that pool; reads and subscription updates must not fail with it.
        let mut writer = Inner::new(
            Client::with_options(options).map_err(|e| mongo_err("create client", e))?,
            &config,
        );
        writer.transactions = inner.transactions;
        let inner = Arc::new(inner);
        let (writes, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(writer_task(Arc::new(writer), queue));
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
}

fn fastrand_ms() -> u64 {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    u64::from(b[0] % 8)
}

fn tx_fn<'f, T, F>(f: F) -> TxFn<'f, T>
where
    F: for<'t> FnMut(&'t mut Tx) -> BoxFuture<'t, StoreResult<T>> + Send + 'f,
{
    Box::new(f)
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
}
