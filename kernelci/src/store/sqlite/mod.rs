//! [`SqliteStore`]: the embedded node store (one SQLite file, WAL).
//!
//! Nodes are stored once, as their JSON document; the hot fields (`kind`, `state`, `parent`,
//! `name`, `created`, `owner`, `group`, `data.kernel_revision.{commit,tree,branch}`, ...) are
//! generated columns with indexes. Filters are translated to SQL ([`sql`]) with an in-database
//! call of the shared evaluator for the rare non-text values, so the answers are exactly those
//! of [`Filter::matches`]. `__re` uses a `regexp()` function backed by the `regex` crate.

mod counts;
mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::{
    Cursor, EventFilter, EventMode, FindOptions, NewEvent, NodePage, NodeStore, NodeUpdate,
    StoreError, StoreResult, StoredEvent, SubscriberState, TelemetryStore, UpdateRule, node_json,
};
use crate::events::{NODE_CHANNEL, NodeEvent};
use crate::models::{Node, NodePatch, ObjectId, Timestamp, User, UserGroup};
use crate::query::{Condition, Filter};
use counts::CountCache;
use writer::Tx;

/// 1: the first layout; 2: adds `node_value` (strings under sentinel hot columns).
const SCHEMA_VERSION: i64 = 2;
/// Read connections kept open, and at most this many reads run at once: more waiters queue
/// on [`Inner::read_slots`] instead of each opening a connection on its own blocking thread
/// (1,000 listeners woken by one publish used to start ~370 threads).
const READERS: usize = 8;
/// The shape of the stored node documents (`meta.node_doc_format`): the text of
/// `Node::to_value` of this program. Bump it when `Node`'s wire form changes; files written
/// with another format are still read, but every node is decoded and re-encoded on the way out
/// instead of being relayed as stored.
const NODE_DOC_FORMAT: &str = "1";

/// The embedded [`NodeStore`]: a single SQLite file in WAL mode.
///
/// Cheap to clone; clones share the connections. Blocking SQLite work runs on tokio's blocking
/// pool, so the store is safe to use from async code.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Jobs for the writer thread (see [`writer`]).
    writer: std::sync::mpsc::Sender<writer::Job>,
    /// Cached counts of expensive filters (see [`counts`]).
    counts: Arc<CountCache>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per concurrent read (see [`READERS`]).
    read_slots: tokio::sync::Semaphore,
    /// The stored documents are in [`NODE_DOC_FORMAT`]: `*_json` reads relay them as stored.
    docs_as_stored: bool,
    query_timeout_ms: std::sync::atomic::AtomicU64,
    /// Bit i set: column `HOT_COLUMNS[i]` may hold the sentinel in some row.
    sentinels: Arc<AtomicU32>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(code, _)
            if code.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            StoreError::Timeout(Duration::ZERO)
        }
        rusqlite::Error::SqliteFailure(code, msg)
            if code.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(msg.clone().unwrap_or_else(|| "constraint violation".into()))
        }
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::unavailable("SQLite database", e)
        }
        _ => StoreError::Internal(format!("SQLite: {e}")),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored {what} cannot be read: {e}"))
}

/// The column of a field, if it has one (for sorting).
fn hot_column(field: &str) -> Option<&'static str> {
    if field == "id" {
        return Some("id");
    }
    sql::HOT_COLUMNS
        .iter()
        .find(|(f, _, _)| *f == field)
        .map(|(_, c, _)| *c)
}

impl Inner {
    /// The hot column of a field for a query, knowing which columns hold sentinels.
    fn hot(&self, field: &str) -> Option<sql::HotColumn> {
        if field == "id" {
            return Some(sql::HotColumn {
                name: "id",
                index: usize::MAX,
                may_hold_sentinel: false,
            });
        }
        let i = sql::HOT_COLUMNS.iter().position(|(f, _, _)| *f == field)?;
        let bits = self.sentinels.load(Ordering::Acquire);
        Some(sql::HotColumn {
            name: sql::HOT_COLUMNS[i].1,
            index: i,
            may_hold_sentinel: bits & (1 << i) != 0,
        })
    }
}

fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("regexp", 2, flags, |ctx| {
        let re = ctx.get_or_create_aux(
            0,
            |vr| -> Result<regex::Regex, Box<dyn std::error::Error + Send + Sync>> {
                Ok(regex::Regex::new(vr.as_str()?)?)
            },
        )?;
        let text = ctx.get_raw(1);
        Ok(match text {
            rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|s| re.is_match(s))
                .unwrap_or(false),
            _ => false,
        })
    })?;
    conn.create_scalar_function("kci_match", 2, flags, |ctx| {
        let cond = ctx.get_or_create_aux(
            1,
            |vr| -> Result<Condition, Box<dyn std::error::Error + Send + Sync>> {
                Ok(serde_json::from_str(vr.as_str()?)?)
            },
        )?;
        let doc: Value = match ctx.get_raw(0) {
            rusqlite::types::ValueRef::Text(t) => serde_json::from_slice(t).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        Ok(cond.matches(&doc))
    })?;
    Ok(())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 64 MiB of page cache for the writer (the readers keep SQLite's 2 MiB and map the file):
    // it holds the pages written since the last checkpoint and the hot index pages, and it is
    // the largest part of the server's heap once full.
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.pragma_update(None, "mmap_size", 268_435_456i64)?;
    // Checkpoint the WAL every ~32 MiB instead of every 4 MiB: an index page changed by many
    // commits is copied to the database file once per checkpoint, and at 1 M nodes each batch
    // of node writes dirties hundreds of index pages.
    conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
    register_functions(conn)
}

fn schema() -> String {
    let mut cols = String::new();
    let mut indexes = String::new();
    for (_, col, indexed) in sql::HOT_COLUMNS {
        cols.push_str(&format!(
            ",
  {col} TEXT"
        ));
        if *indexed {
            indexes.push_str(&format!(
                "CREATE INDEX IF NOT EXISTS node_{col} ON node({col}, id);
"
            ));
        }
    }
    format!(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS node (
  id TEXT NOT NULL UNIQUE,
  doc TEXT NOT NULL{cols}
);
{indexes}CREATE INDEX IF NOT EXISTS node_state_timeout ON node(state, timeout);
CREATE TABLE IF NOT EXISTS node_value (
  col INTEGER NOT NULL,
  value TEXT NOT NULL,
  id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS node_value_lookup ON node_value(col, value, id);
CREATE INDEX IF NOT EXISTS node_value_id ON node_value(id);
CREATE TABLE IF NOT EXISTS user (
  id TEXT PRIMARY KEY,
  username TEXT NOT NULL UNIQUE,
  email TEXT NOT NULL UNIQUE COLLATE NOCASE,
  doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usergroup (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
  namespace TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS event (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL,
  ts TEXT NOT NULL,
  channel TEXT NOT NULL,
  owner TEXT,
  attrs TEXT,
  doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_channel ON event(channel, seq);
CREATE INDEX IF NOT EXISTS event_ts ON event(ts);
CREATE TABLE IF NOT EXISTS counter (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  ts TEXT NOT NULL,
  doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_ts ON telemetry(ts);
CREATE TABLE IF NOT EXISTS subscriber (
  subscriber_id TEXT PRIMARY KEY,
  doc TEXT NOT NULL
);
"
    )
}

fn hot_column_list() -> &'static str {
    static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        sql::HOT_COLUMNS
            .iter()
            .map(|(_, c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn node_row_sql(insert: bool) -> &'static str {
    static INSERT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static UPDATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let n = sql::HOT_COLUMNS.len();
    if insert {
        INSERT.get_or_init(|| {
            let params: Vec<String> = (3..n + 3).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT INTO node (id, doc, {}) VALUES (?1, ?2, {})",
                hot_column_list(),
                params.join(", ")
            )
        })
    } else {
        UPDATE.get_or_init(|| {
            let sets: Vec<String> = sql::HOT_COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (_, c, _))| format!("{c} = ?{}", i + 3))
                .collect();
            format!(
                "UPDATE node SET doc = ?2, {} WHERE id = ?1",
                sets.join(", ")
            )
        })
    }
}

/// The row values of a node: id, document, then the hot columns.
/// The row values of a node (id, document, then the hot columns), and the bits of the hot
/// columns that got the sentinel.
fn node_row(node: &Node) -> StoreResult<(Vec<SqlValue>, u32, Value)> {
    let id = node
        .id
        .ok_or_else(|| StoreError::Internal("node without id".into()))?;
    let value = node.to_value();
    let doc = serde_json::to_string(&value)
        .map_err(|e| StoreError::Internal(format!("cannot encode node: {e}")))?;
    let mut row = Vec::with_capacity(sql::HOT_COLUMNS.len() + 2);
    row.push(SqlValue::Text(id.to_hex()));
    row.push(SqlValue::Text(doc));
    let mut bits = 0u32;
    for (i, (field, _, _)) in sql::HOT_COLUMNS.iter().enumerate() {
        let v = sql::hot_text_value(&value, field);
        if v.as_deref() == Some(sql::SENTINEL) {
            bits |= 1 << i;
        }
        row.push(v.map(SqlValue::Text).unwrap_or(SqlValue::Null));
    }
    Ok((row, bits, value))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, and creates or reconciles its tables
    /// and indexes.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable(format!("cannot create directory {}", dir.display()), e)
            })?;
        }
        let writer = Connection::open(&path).map_err(|e| {
            StoreError::unavailable(format!("cannot open SQLite database {}", path.display()), e)
        })?;
        configure(&writer).map_err(db_err)?;
        let version: i64 = writer
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Invalid(format!(
                "{} has schema version {version}, newer than this program's {SCHEMA_VERSION}",
                path.display()
            )));
        }
        writer.execute_batch(&schema()).map_err(db_err)?;
        if version < 2 {
            fill_node_values(&writer)?;
        }
        writer
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db_err)?;
        // Refresh the planner's statistics where SQLite thinks they are stale.
        writer
            .execute_batch("PRAGMA optimize=0x10002;")
            .map_err(db_err)?;
        // Which columns hold the sentinel (non-text values) in some row: those need the
        // evaluator for such rows; the others are answered by plain SQL.
        let mut sentinels = 0u32;
        for (i, (_, col, _)) in sql::HOT_COLUMNS.iter().enumerate().skip(sql::TYPED_COLUMNS) {
            let found: Option<i64> = writer
                .query_row(
                    &format!("SELECT 1 FROM node WHERE {col} = char(1) LIMIT 1"),
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if found.is_some() {
                sentinels |= 1 << i;
            }
        }
        // Files from before the format mark were written by the same wire form: adopt them.
        writer
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('node_doc_format', ?1)",
                [NODE_DOC_FORMAT],
            )
            .map_err(db_err)?;
        let doc_format: String = writer
            .query_row(
                "SELECT value FROM meta WHERE key = 'node_doc_format'",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        let counts = Arc::new(CountCache::default());
        let (jobs, _thread) = writer::spawn(writer, counts.clone())?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: jobs,
                counts,
                readers: Mutex::new(Vec::new()),
                read_slots: tokio::sync::Semaphore::new(READERS),
                docs_as_stored: doc_format == NODE_DOC_FORMAT,
                query_timeout_ms: std::sync::atomic::AtomicU64::new(30_000),
                sentinels: Arc::new(AtomicU32::new(sentinels)),
            }),
        })
    }

    /// Sets the time budget of one read query (default 30 s). A query past it fails with
    /// [`StoreError::Timeout`].
    pub fn set_query_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .query_timeout_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Which node counts are cached (default: those that took at least 1 ms, from their second
    /// use on); `None` turns the cache off. Cached counts stay exact: every node write through
    /// this store adjusts them, and a write by another process to the same file (seen through
    /// the node generation in `meta`) makes them miss. A process that writes the file with an
    /// older version of this code, which does not move that generation, is not noticed.
    pub fn set_count_cache(&self, min_duration: Option<Duration>) {
        self.inner.counts.configure(min_duration);
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<StoreResult<T>>();
        let job: writer::Job = Box::new(move |tx| {
            let out = match tx {
                Some(tx) => f(tx),
                None => Err(StoreError::Internal("no write transaction".into())),
            };
            let ok = out.is_ok();
            let done: writer::Completion = Box::new(move |failed| {
                let answer = match failed {
                    None => out,
                    Some(e) => Err(writer::batch_error(e)),
                };
                let _ = reply.send(answer);
            });
            (ok, done)
        });
        self.inner
            .writer
            .send(job)
            .map_err(|_| StoreError::Internal("the SQLite writer thread stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the write was lost (writer task failed)".into()))?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let _slot = self
            .inner
            .read_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Internal("reader slots closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let conn = match inner.pooled_reader() {
                Some(c) => c,
                None => inner.open_reader()?,
            };
            inner.run_read(conn, f)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// A read by primary key (a node, a user, a key): tens of microseconds from the page cache,
    /// less than handing it to a blocking thread and back. It runs in place when a read slot
    /// and an open connection are free at once, else like any other read.
    async fn read_point<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if let Ok(_slot) = self.inner.read_slots.try_acquire()
            && let Some(conn) = self.inner.pooled_reader()
        {
            return self.inner.run_read(conn, f);
        }
        self.read(f).await
    }
}

impl Inner {
    fn pooled_reader(&self) -> Option<Connection> {
        self.readers.lock().ok()?.pop()
    }

    fn open_reader(&self) -> StoreResult<Connection> {
        let c = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::unavailable("cannot open SQLite reader", e))?;
        c.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
        register_functions(&c).map_err(db_err)?;
        c.pragma_update(None, "mmap_size", 268_435_456i64)
            .map_err(db_err)?;
        // Finds build one SQL text per filter shape; keep more of them prepared.
        c.set_prepared_statement_cache_capacity(64);
        Ok(c)
    }

    /// Runs `f` on `conn` within the query budget, then returns `conn` to the pool.
    fn run_read<T, F>(&self, mut conn: Connection, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T>,
    {
        let budget = Duration::from_millis(
            self.query_timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let deadline = Instant::now() + budget;
        conn.progress_handler(10_000, Some(move || Instant::now() > deadline))
            .map_err(db_err)?;
        let out = f(&conn).map_err(|e| match e {
            StoreError::Timeout(_) => StoreError::Timeout(budget),
            other => other,
        });
        let _ = conn.progress_handler(0, None::<fn() -> bool>);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < READERS
        {
            pool.push(conn);
        }
        out
    }
}

fn decode_node(doc: &str) -> StoreResult<Node> {
    serde_json::from_str(doc).map_err(|e| corrupt("node", e))
}

fn load_doc(tx: &Connection, id: ObjectId) -> StoreResult<Option<String>> {
    tx.prepare_cached("SELECT doc FROM node WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.to_hex()], |r| r.get(0)).optional())
        .map_err(db_err)
}

fn load_node(tx: &Connection, id: ObjectId) -> StoreResult<Option<Node>> {
    load_doc(tx, id)?.map(|d| decode_node(&d)).transpose()
}

fn insert_node_row(tx: &Tx<'_>, node: &Node, sentinels: &AtomicU32) -> StoreResult<()> {
    let (row, bits, value) = node_row(node)?;
    // Marked before the commit, so no reader sees the row without the mark.
    sentinels.fetch_or(bits, Ordering::AcqRel);
    let mut stmt = tx.prepare_cached(node_row_sql(true)).map_err(db_err)?;
    stmt.execute(params_from_iter(row.iter()))
        .map_err(|e| match db_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "Object cannot be created with id: {}",
                node.id.map(|i| i.to_hex()).unwrap_or_default()
            )),
            other => other,
        })?;
    if bits >> sql::TYPED_COLUMNS != 0 {
        insert_node_values(tx, &row[0], &value, bits)?;
    }
    tx.node_changed(None, Some(value));
    Ok(())
}

/// Writes the `node_value` rows of a node whose hot columns `bits` hold the sentinel.
fn insert_node_values(tx: &Connection, id: &SqlValue, doc: &Value, bits: u32) -> StoreResult<()> {
    let mut stmt = tx
        .prepare_cached("INSERT INTO node_value (col, value, id) VALUES (?1, ?2, ?3)")
        .map_err(db_err)?;
    for (i, (field, _, _)) in sql::HOT_COLUMNS.iter().enumerate() {
        if bits & (1 << i) == 0 {
            continue;
        }
        for v in sql::reached_strings(doc, field) {
            stmt.execute(params![i as i64, v, id]).map_err(db_err)?;
        }
    }
    Ok(())
}

/// Builds `node_value` for a store written before it existed (schema version 1).
fn fill_node_values(conn: &Connection) -> StoreResult<()> {
    let cols: Vec<String> = sql::HOT_COLUMNS
        .iter()
        .skip(sql::TYPED_COLUMNS)
        .map(|(_, c, _)| format!("{c} = char(1)"))
        .collect();
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    tx.execute("DELETE FROM node_value", []).map_err(db_err)?;
    let rows: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT id, doc FROM node WHERE {}",
                cols.join(" OR ")
            ))
            .map_err(db_err)?;
        let it = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?;
        it.collect::<Result<_, _>>().map_err(db_err)?
    };
    for (id, doc) in rows {
        let node = decode_node(&doc)?;
        let (_, bits, value) = node_row(&node)?;
        insert_node_values(&tx, &SqlValue::Text(id), &value, bits)?;
    }
    tx.commit().map_err(db_err)
}

/// Replaces the stored row of `node`, whose stored version is `previous`.
fn replace_node_row(
    tx: &Tx<'_>,
    node: &Node,
    previous: &Node,
    sentinels: &AtomicU32,
) -> StoreResult<()> {
    let (row, bits, value) = node_row(node)?;
    sentinels.fetch_or(bits, Ordering::AcqRel);
    let mut stmt = tx.prepare_cached(node_row_sql(false)).map_err(db_err)?;
    stmt.execute(params_from_iter(row.iter())).map_err(db_err)?;
    // Some row may have `node_value` rows: this one's are rewritten.
    if sentinels.load(Ordering::Acquire) >> sql::TYPED_COLUMNS != 0 {
        tx.prepare_cached("DELETE FROM node_value WHERE id = ?1")
            .map_err(db_err)?
            .execute([&row[0]])
            .map_err(db_err)?;
    }
    if bits >> sql::TYPED_COLUMNS != 0 {
        insert_node_values(tx, &row[0], &value, bits)?;
    }
    let old = tx.tracking().then(|| previous.to_value());
    tx.node_changed(old, Some(value));
    Ok(())
}

/// Replaces a node and, with [`EventMode::Publish`], appends its `updated` event.
fn write_update(
    tx: &Tx<'_>,
    node: Node,
    previous: Node,
    mode: EventMode,
    sentinels: &AtomicU32,
) -> StoreResult<NodeUpdate> {
    replace_node_row(tx, &node, &previous, sentinels)?;
    let event = match mode {
        EventMode::Publish => Some(append_event(
            tx,
            node_event("updated", &node, Some(&previous), false),
        )?),
        EventMode::Silent => None,
    };
    Ok(NodeUpdate {
        node,
        previous,
        event,
    })
}

fn append_event(tx: &Connection, ev: NewEvent) -> StoreResult<StoredEvent> {
    let mut stored = StoredEvent {
        sequence_id: 0,
        id: ObjectId::new(),
        timestamp: Timestamp::now(),
        channel: ev.channel,
        owner: ev.owner,
        data: ev.data,
        attributes: ev.attributes,
    };
    let attrs = if stored.attributes.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&stored.attributes)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        )
    };
    // The document is written with sequence 0 and fixed up after the insert assigns `seq`.
    let mut stmt = tx
        .prepare_cached("INSERT INTO event (id, ts, channel, owner, attrs, doc) VALUES (?1, ?2, ?3, ?4, ?5, '{}')")
        .map_err(db_err)?;
    stmt.execute(params![
        stored.id.to_hex(),
        stored.timestamp.to_string(),
        stored.channel,
        stored.owner,
        attrs
    ])
    .map_err(db_err)?;
    let seq = tx.last_insert_rowid();
    stored.sequence_id =
        u64::try_from(seq).map_err(|_| StoreError::Internal("negative sequence".into()))?;
    let doc = serde_json::to_string(&stored.to_document())
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    tx.prepare_cached("UPDATE event SET doc = ?2 WHERE seq = ?1")
        .map_err(db_err)?
        .execute(params![seq, doc])
        .map_err(db_err)?;
    Ok(stored)
}

fn node_event(op: &str, node: &Node, previous: Option<&Node>, is_hierarchy: bool) -> NewEvent {
    let event = match (op, previous) {
        ("updated", Some(prev)) => NodeEvent::updated(node, prev.state, prev.result, is_hierarchy),
        _ => NodeEvent::created(node),
    };
    NewEvent {
        channel: NODE_CHANNEL.into(),
        owner: node.owner.clone().filter(|o| !o.is_empty()),
        data: event.to_value(),
        attributes: crate::events::logged_event_attributes(),
    }
}

fn row_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, Option<String>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn decode_event(seq: i64, doc: &str, attrs: Option<String>) -> StoreResult<StoredEvent> {
    #[derive(serde::Deserialize)]
    struct Doc {
        id: ObjectId,
        timestamp: Timestamp,
        channel: String,
        owner: Option<String>,
        data: Value,
    }
    let d: Doc = serde_json::from_str(doc).map_err(|e| corrupt("event", e))?;
    let attributes = match attrs {
        Some(a) => serde_json::from_str(&a).map_err(|e| corrupt("event attributes", e))?,
        None => serde_json::Map::new(),
    };
    Ok(StoredEvent {
        sequence_id: u64::try_from(seq).map_err(|_| corrupt("event", "negative sequence"))?,
        id: d.id,
        timestamp: d.timestamp,
        channel: d.channel,
        owner: d.owner,
        data: d.data,
        attributes,
    })
}

fn json_to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(SqlValue::Integer)
            .unwrap_or_else(|| SqlValue::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn sql_to_json(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::from(i),
        SqlValue::Real(f) => Value::from(f),
        SqlValue::Text(s) => Value::String(s),
        SqlValue::Blob(b) => Value::String(hex::encode(b)),
    }
}

fn is_valid_field(field: &str) -> bool {
    !field.is_empty() && field.split('.').all(|s| !s.is_empty())
}

enum Counted {
    Cached(u64),
    Counted {
        n: u64,
        generation: u64,
        took: Duration,
    },
}

/// In one read transaction (left open): the node generation, then the cached count or a
/// fresh one.
fn count_in_snapshot(
    conn: &Connection,
    key: Option<&str>,
    counts: &CountCache,
    w: &sql::Where,
) -> StoreResult<Counted> {
    conn.execute_batch("BEGIN").map_err(db_err)?;
    let generation = writer::read_gen(conn)?;
    if let Some(n) = key.and_then(|k| counts.lookup(k, generation)) {
        return Ok(Counted::Cached(n));
    }
    let t = Instant::now();
    let n: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM node WHERE {}", w.sql))
        .map_err(db_err)?
        .query_row(params_from_iter(w.params.iter()), |r| r.get(0))
        .map_err(db_err)?;
    Ok(Counted::Counted {
        n: n.max(0) as u64,
        generation,
        took: t.elapsed(),
    })
}

fn find_nodes_sync(
    conn: &Connection,
    inner: &Inner,
    filter: &Filter,
    options: &FindOptions,
) -> StoreResult<NodePage> {
    let (docs, last_key) = find_docs_sync(conn, inner, filter, options)?;
    let items = docs
        .iter()
        .map(|d| decode_node(d))
        .collect::<StoreResult<Vec<Node>>>()?;
    let next = match (options.limit, items.last()) {
        (Some(l), Some(last)) if items.len() as u64 == l => {
            last.id.map(|id| Cursor { key: last_key, id })
        }
        _ => None,
    };
    Ok(NodePage { items, next })
}

/// The stored documents of the nodes [`find_nodes_sync`] returns, and the sort key of the last.
fn find_docs_sync(
    conn: &Connection,
    inner: &Inner,
    filter: &Filter,
    options: &FindOptions,
) -> StoreResult<(Vec<String>, Value)> {
    let mut w = sql::where_clause(filter, "doc", &|f| inner.hot(f)).map_err(StoreError::Invalid)?;
    let (key_expr, desc) = match &options.sort {
        Some(sort) => {
            if !is_valid_field(&sort.field) {
                return Err(StoreError::Invalid(format!(
                    "bad sort field '{}'",
                    sort.field
                )));
            }
            let expr = match hot_column(&sort.field) {
                Some(c) => c.to_owned(),
                None => {
                    w.params.push(SqlValue::Text(sql::json_path(&sort.field)));
                    format!("json_extract(doc, ?{})", w.params.len())
                }
            };
            (Some(expr), sort.descending)
        }
        None => (None, false),
    };
    let mut sql_text = format!(
        "SELECT id, doc{} FROM node WHERE {}",
        if key_expr.is_some() { ", __key" } else { "" },
        w.sql
    );
    if let Some(k) = &key_expr {
        sql_text = sql_text.replacen(", __key", &format!(", {k}"), 1);
    }
    if let Some(after) = &options.after {
        w.params.push(SqlValue::Text(after.id.to_hex()));
        let idp = format!("?{}", w.params.len());
        let clause = match &key_expr {
            None => format!("id > {idp}"),
            Some(k) => {
                if after.key.is_null() {
                    if desc {
                        format!("({k} IS NULL AND id < {idp})")
                    } else {
                        format!("(({k} IS NULL AND id > {idp}) OR {k} IS NOT NULL)")
                    }
                } else {
                    w.params.push(json_to_sql(&after.key));
                    let kp = format!("?{}", w.params.len());
                    if desc {
                        format!("({k} < {kp} OR ({k} = {kp} AND id < {idp}) OR {k} IS NULL)")
                    } else {
                        format!("({k} > {kp} OR ({k} = {kp} AND id > {idp}))")
                    }
                }
            }
        };
        sql_text.push_str(&format!(" AND {clause}"));
    }
    match &key_expr {
        None => sql_text.push_str(" ORDER BY id"),
        Some(k) if desc => sql_text.push_str(&format!(" ORDER BY {k} DESC, id DESC")),
        Some(k) => sql_text.push_str(&format!(" ORDER BY {k}, id")),
    }
    let limit = options
        .limit
        .map(|l| l.min(i64::MAX as u64) as i64)
        .unwrap_or(-1);
    sql_text.push_str(&format!(
        " LIMIT {limit} OFFSET {}",
        options.offset.min(i64::MAX as u64)
    ));
    let mut stmt = conn.prepare_cached(&sql_text).map_err(db_err)?;
    let mut rows = stmt
        .query(params_from_iter(w.params.iter()))
        .map_err(db_err)?;
    let mut docs = Vec::new();
    let mut last_key = Value::Null;
    while let Some(row) = rows.next().map_err(db_err)? {
        docs.push(row.get::<_, String>(1).map_err(db_err)?);
        if key_expr.is_some() {
            last_key = sql_to_json(row.get(2).map_err(db_err)?);
        }
    }
    Ok((docs, last_key))
}

#[async_trait]
impl NodeStore for SqliteStore {
    async fn insert_nodes(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<Vec<Node>> {
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let mut out = Vec::with_capacity(nodes.len());
            for mut node in nodes {
                if node.id.is_none() {
                    node.id = Some(ObjectId::new());
                }
                insert_node_row(tx, &node, &sentinels)?;
                if event == EventMode::Publish {
                    append_event(tx, node_event("created", &node, None, false))?;
                }
                out.push(node);
            }
            Ok(out)
        })
        .await
    }

    async fn get_node(&self, id: ObjectId) -> StoreResult<Option<Node>> {
        self.read_point(move |conn| load_node(conn, id)).await
    }

    async fn get_node_json(&self, id: ObjectId) -> StoreResult<Option<String>> {
        if !self.inner.docs_as_stored {
            return self.get_node(id).await?.map(|n| node_json(&n)).transpose();
        }
        self.read_point(move |conn| load_doc(conn, id)).await
    }

    async fn find_nodes_json(
        &self,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<String>> {
        if !self.inner.docs_as_stored {
            let page = self.find_nodes(filter, options).await?;
            return page.items.iter().map(node_json).collect();
        }
        let (filter, options) = (filter.clone(), options.clone());
        let inner = self.inner.clone();
        self.read(move |conn| find_docs_sync(conn, &inner, &filter, &options).map(|(d, _)| d))
            .await
    }

    async fn update_node(&self, mut node: Node, rule: UpdateRule) -> StoreResult<NodeUpdate> {
        let id = node
            .id
            .ok_or_else(|| StoreError::Invalid("node has no id".into()))?;
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let previous = load_node(tx, id)?.ok_or(StoreError::NotFound {
                what: "Node",
                id: id.to_hex(),
            })?;
            if rule.check_transition {
                previous.state.check_transition(node.state)?;
            }
            if rule.keep_identity {
                node.owner.clone_from(&previous.owner);
                node.submitter.clone_from(&previous.submitter);
                node.user_groups.clone_from(&previous.user_groups);
            }
            node.updated = Timestamp::now();
            write_update(tx, node, previous, rule.event, &sentinels)
        })
        .await
    }

    async fn patch_node(
        &self,
        id: ObjectId,
        patch: &NodePatch,
        event: EventMode,
    ) -> StoreResult<NodeUpdate> {
        let patch = patch.clone();
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let previous = load_node(tx, id)?.ok_or(StoreError::NotFound {
                what: "Node",
                id: id.to_hex(),
            })?;
            let mut node = previous.clone();
            patch.apply(&mut node)?;
            write_update(tx, node, previous, event, &sentinels)
        })
        .await
    }

    async fn write_hierarchy(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<Vec<Node>> {
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let mut out = Vec::with_capacity(nodes.len());
            let mut root_previous = None;
            for (i, mut node) in nodes.into_iter().enumerate() {
                let stored = match node.id {
                    Some(id) => load_node(tx, id)?,
                    None => None,
                };
                if let Some(previous) = &stored {
                    node.updated = Timestamp::now();
                    replace_node_row(tx, &node, previous, &sentinels)?;
                } else {
                    if node.id.is_none() {
                        node.id = Some(ObjectId::new());
                    }
                    insert_node_row(tx, &node, &sentinels)?;
                }
                if i == 0 {
                    root_previous = stored;
                }
                out.push(node);
            }
            if event == EventMode::Publish
                && let Some(root) = out.first()
            {
                let prev = root_previous.as_ref().unwrap_or(root);
                append_event(tx, node_event("updated", root, Some(prev), true))?;
            }
            Ok(out)
        })
        .await
    }

    async fn set_field(&self, ids: &[ObjectId], field: &str, value: Value) -> StoreResult<u64> {
        if !is_valid_field(field) || field.contains('.') || matches!(field, "id" | "_id") {
            return Err(StoreError::Invalid(format!(
                "field '{field}' cannot be set"
            )));
        }
        let ids = ids.to_vec();
        let field = field.to_owned();
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let now = Timestamp::now();
            let mut n = 0u64;
            for id in ids {
                let Some(previous) = load_node(tx, id)? else {
                    continue;
                };
                let mut doc = previous.to_value();
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert(field.clone(), value.clone());
                    obj.insert("updated".into(), Value::String(now.to_string()));
                }
                let node = Node::from_value(doc)?;
                replace_node_row(tx, &node, &previous, &sentinels)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn find_nodes(&self, filter: &Filter, options: &FindOptions) -> StoreResult<NodePage> {
        let (filter, options) = (filter.clone(), options.clone());
        let inner = self.inner.clone();
        self.read(move |conn| find_nodes_sync(conn, &inner, &filter, &options))
            .await
    }

    async fn count_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let w = sql::where_clause(filter, "doc", &|f| self.inner.hot(f))
            .map_err(StoreError::Invalid)?;
        let key = counts::key(filter);
        let gate = key.as_deref().and_then(|k| self.inner.counts.gate(k));
        let turn = match &gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        };
        let (counts, filter) = (self.inner.counts.clone(), filter.clone());
        let gate_key = key.clone();
        let out = self
            .read(move |conn| {
                // Registered before the snapshot, so the writer records what commits after it.
                let slot = key.as_deref().and_then(|k| counts.register(k, &filter));
                let counted = count_in_snapshot(conn, key.as_deref(), &counts, &w);
                let _ = conn.execute_batch("COMMIT");
                match (counted, key) {
                    (Ok(Counted::Cached(n)), _) => {
                        counts.release(slot);
                        Ok(n)
                    }
                    (
                        Ok(Counted::Counted {
                            n,
                            generation,
                            took,
                        }),
                        Some(key),
                    ) => {
                        counts.finish(key, slot, generation, n, took);
                        Ok(n)
                    }
                    (Ok(Counted::Counted { n, .. }), None) => Ok(n),
                    (Err(e), _) => {
                        counts.release(slot);
                        Err(e)
                    }
                }
            })
            .await;
        drop(turn);
        if let (Some(g), Some(k)) = (gate, gate_key) {
            self.inner.counts.ungate(&k, g);
        }
        out
    }

    async fn delete_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let w = sql::where_clause(filter, "doc", &|f| self.inner.hot(f))
            .map_err(StoreError::Invalid)?;
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            if sentinels.load(Ordering::Acquire) >> sql::TYPED_COLUMNS != 0 {
                tx.execute(
                    &format!(
                        "DELETE FROM node_value WHERE id IN (SELECT id FROM node WHERE {})",
                        w.sql
                    ),
                    params_from_iter(w.params.iter()),
                )
                .map_err(db_err)?;
            }
            let n = tx
                .execute(
                    &format!("DELETE FROM node WHERE {}", w.sql),
                    params_from_iter(w.params.iter()),
                )
                .map_err(db_err)?;
            if n > 0 {
                tx.nodes_changed_unknown();
            }
            Ok(n as u64)
        })
        .await
    }

    async fn insert_user(&self, user: User) -> StoreResult<User> {
        self.write(move |tx| {
            let doc =
                serde_json::to_string(&user).map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "INSERT INTO user (id, username, email, doc) VALUES (?1, ?2, ?3, ?4)",
                params![user.id.to_hex(), user.username, user.email, doc],
            )
            .map_err(|e| user_conflict(e, &user))?;
            Ok(user)
        })
        .await
    }

    async fn get_user(&self, id: ObjectId) -> StoreResult<Option<User>> {
        self.read_point(move |c| user_where(c, "id = ?1", &id.to_hex()))
            .await
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let u = username.to_owned();
        self.read_point(move |c| user_where(c, "username = ?1", &u))
            .await
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let e = email.to_owned();
        self.read(move |c| user_where(c, "email = ?1 COLLATE NOCASE", &e))
            .await
    }

    async fn update_user(&self, user: User) -> StoreResult<User> {
        self.write(move |tx| {
            let doc =
                serde_json::to_string(&user).map_err(|e| StoreError::Internal(e.to_string()))?;
            let n = tx
                .execute(
                    "UPDATE user SET username = ?2, email = ?3, doc = ?4 WHERE id = ?1",
                    params![user.id.to_hex(), user.username, user.email, doc],
                )
                .map_err(|e| user_conflict(e, &user))?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "User",
                    id: user.id.to_hex(),
                });
            }
            Ok(user)
        })
        .await
    }

    async fn delete_user(&self, id: ObjectId) -> StoreResult<bool> {
        self.write(move |tx| {
            Ok(tx
                .execute("DELETE FROM user WHERE id = ?1", [id.to_hex()])
                .map_err(db_err)?
                > 0)
        })
        .await
    }

    async fn find_users(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<User>, u64)> {
        let filter = filter.clone();
        self.read(move |c| {
            let all: Vec<User> = load_all(c, "SELECT doc FROM user ORDER BY id", "user")?;
            let matching: Vec<User> = all
                .into_iter()
                .filter(|u| filter.matches(&serde_json::to_value(u.read()).unwrap_or(Value::Null)))
                .collect();
            Ok(page(matching, offset, limit))
        })
        .await
    }

    async fn insert_group(&self, group: UserGroup) -> StoreResult<UserGroup> {
        self.write(move |tx| {
            let doc =
                serde_json::to_string(&group).map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "INSERT INTO usergroup (id, name, doc) VALUES (?1, ?2, ?3)",
                params![group.id.to_hex(), group.name, doc],
            )
            .map_err(|e| match db_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "User group already exists with name: {}",
                    group.name
                )),
                other => other,
            })?;
            Ok(group)
        })
        .await
    }

    async fn get_group(&self, id: ObjectId) -> StoreResult<Option<UserGroup>> {
        self.read(move |c| {
            one_doc(
                c,
                "SELECT doc FROM usergroup WHERE id = ?1",
                &id.to_hex(),
                "group",
            )
        })
        .await
    }

    async fn get_group_by_name(&self, name: &str) -> StoreResult<Option<UserGroup>> {
        let n = name.to_owned();
        self.read_point(move |c| {
            one_doc(c, "SELECT doc FROM usergroup WHERE name = ?1", &n, "group")
        })
        .await
    }

    async fn find_groups(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<UserGroup>, u64)> {
        let filter = filter.clone();
        self.read(move |c| {
            let all: Vec<UserGroup> =
                load_all(c, "SELECT doc FROM usergroup ORDER BY id", "group")?;
            let matching = all
                .into_iter()
                .filter(|g| filter.matches(&serde_json::to_value(g).unwrap_or(Value::Null)))
                .collect();
            Ok(page(matching, offset, limit))
        })
        .await
    }

    async fn delete_group(&self, id: ObjectId) -> StoreResult<bool> {
        self.write(move |tx| {
            Ok(tx
                .execute("DELETE FROM usergroup WHERE id = ?1", [id.to_hex()])
                .map_err(db_err)?
                > 0)
        })
        .await
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.read_point(move |c| {
            c.prepare_cached("SELECT value FROM kv WHERE namespace = ?1 AND key = ?2")
                .and_then(|mut s| s.query_row([ns, k], |r| r.get(0)).optional())
                .map_err(db_err)
        })
        .await
    }

    async fn kv_set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO kv (namespace, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                [ns, k, v],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.write(move |tx| {
            Ok(tx
                .execute("DELETE FROM kv WHERE namespace = ?1 AND key = ?2", [ns, k])
                .map_err(db_err)?
                > 0)
        })
        .await
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<StoredEvent>> {
        self.write(move |tx| events.into_iter().map(|e| append_event(tx, e)).collect())
            .await
    }

    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let filter = filter.clone();
        self.read(move |c| {
            let purged: i64 = c
                .query_row(
                    "SELECT value FROM meta WHERE key = 'purged_through'",
                    [],
                    |r| r.get::<_, String>(0).map(|s| s.parse().unwrap_or(0)),
                )
                .optional()
                .map_err(db_err)?
                .unwrap_or(0);
            let after_i = i64::try_from(after).unwrap_or(i64::MAX);
            if after_i < purged {
                return Err(StoreError::EventsPurged {
                    requested: after,
                    oldest: purged as u64 + 1,
                });
            }
            let mut sql_text = String::from("SELECT seq, doc, attrs FROM event WHERE seq > ?1");
            let mut params: Vec<SqlValue> = vec![SqlValue::Integer(after_i)];
            if let Some(ch) = &filter.channel {
                params.push(SqlValue::Text(ch.clone()));
                sql_text.push_str(&format!(" AND channel = ?{}", params.len()));
            }
            if let Some(owner) = &filter.owner {
                params.push(SqlValue::Text(owner.clone()));
                sql_text.push_str(&format!(
                    " AND (owner IS NULL OR owner = ?{})",
                    params.len()
                ));
            }
            sql_text.push_str(&format!(
                " ORDER BY seq LIMIT {}",
                limit.min(i64::MAX as usize)
            ));
            let mut stmt = c.prepare_cached(&sql_text).map_err(db_err)?;
            let rows = stmt
                .query_map(params_from_iter(params.iter()), row_event)
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, doc, attrs) = row.map_err(db_err)?;
                out.push(decode_event(seq, &doc, attrs)?);
            }
            Ok(out)
        })
        .await
    }

    async fn find_events(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let w = sql::where_clause(filter, "doc", &|_| None).map_err(StoreError::Invalid)?;
        self.read(move |c| {
            let limit = limit.map(|l| l.min(i64::MAX as u64) as i64).unwrap_or(-1);
            let sql_text = format!(
                "SELECT seq, doc, attrs FROM event WHERE {} ORDER BY seq LIMIT {limit} OFFSET {}",
                w.sql,
                offset.min(i64::MAX as u64)
            );
            let mut stmt = c.prepare_cached(&sql_text).map_err(db_err)?;
            let rows = stmt
                .query_map(params_from_iter(w.params.iter()), row_event)
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, doc, attrs) = row.map_err(db_err)?;
                out.push(decode_event(seq, &doc, attrs)?);
            }
            Ok(out)
        })
        .await
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        self.read(|c| {
            // sqlite_sequence keeps the highest seq ever assigned, even after a purge.
            let seq: Option<i64> = c
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'event'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            Ok(seq.unwrap_or(0).max(0) as u64)
        })
        .await
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |tx| {
            let ts = before.to_string();
            let max_seq: Option<i64> =
                tx.query_row("SELECT max(seq) FROM event WHERE ts < ?1", [&ts], |r| r.get(0)).map_err(db_err)?;
            let Some(max_seq) = max_seq else { return Ok(0) };
            let n = tx.execute("DELETE FROM event WHERE seq <= ?1", [max_seq]).map_err(db_err)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('purged_through', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                [max_seq.to_string()],
            )
            .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn get_subscriber(&self, subscriber_id: &str) -> StoreResult<Option<SubscriberState>> {
        let id = subscriber_id.to_owned();
        self.read(move |c| {
            one_doc(
                c,
                "SELECT doc FROM subscriber WHERE subscriber_id = ?1",
                &id,
                "subscriber",
            )
        })
        .await
    }

    async fn put_subscriber(&self, state: SubscriberState) -> StoreResult<()> {
        self.write(move |tx| {
            let doc =
                serde_json::to_string(&state).map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "INSERT INTO subscriber (subscriber_id, doc) VALUES (?1, ?2)
                 ON CONFLICT (subscriber_id) DO UPDATE SET doc = excluded.doc",
                params![state.subscriber_id, doc],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn increment_counter(&self, name: &str) -> StoreResult<u64> {
        let name = name.to_owned();
        self.write(move |tx| {
            let v: i64 = tx
                .query_row(
                    "INSERT INTO counter (name, value) VALUES (?1, 1)
                     ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                    [name],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            Ok(v.max(0) as u64)
        })
        .await
    }

    async fn ack_subscriber(&self, subscriber_id: &str, sequence_id: u64) -> StoreResult<()> {
        let id = subscriber_id.to_owned();
        self.write(move |tx| {
            let doc: Option<String> = tx
                .query_row(
                    "SELECT doc FROM subscriber WHERE subscriber_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            let Some(doc) = doc else {
                return Err(StoreError::NotFound {
                    what: "Subscriber",
                    id,
                });
            };
            let mut state: SubscriberState =
                serde_json::from_str(&doc).map_err(|e| corrupt("subscriber", e))?;
            state.last_event_id = state.last_event_id.max(sequence_id);
            state.last_poll = Some(Timestamp::now());
            let doc =
                serde_json::to_string(&state).map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "UPDATE subscriber SET doc = ?2 WHERE subscriber_id = ?1",
                params![id, doc],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl TelemetryStore for SqliteStore {
    async fn insert_telemetry(&self, events: Vec<Value>) -> StoreResult<u64> {
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached("INSERT INTO telemetry (ts, doc) VALUES (?1, ?2)")
                .map_err(db_err)?;
            let mut n = 0u64;
            for mut e in events {
                let ts = e
                    .get("ts")
                    .and_then(Value::as_str)
                    .and_then(|s| Timestamp::parse(s).ok())
                    .unwrap_or_else(Timestamp::now);
                if let Some(obj) = e.as_object_mut() {
                    obj.insert("ts".into(), Value::String(ts.to_string()));
                    obj.entry("id")
                        .or_insert_with(|| Value::String(ObjectId::new().to_hex()));
                }
                let doc =
                    serde_json::to_string(&e).map_err(|e| StoreError::Internal(e.to_string()))?;
                stmt.execute(params![ts.to_string(), doc]).map_err(db_err)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn find_telemetry(
        &self,
        filter: &Filter,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<Value>, u64)> {
        let mut w = sql::where_clause(filter, "doc", &|_| None).map_err(StoreError::Invalid)?;
        if let Some(s) = since {
            let p = w.param(SqlValue::Text(s.to_string()));
            w.sql.push_str(&format!(" AND ts >= {p}"));
        }
        if let Some(u) = until {
            let p = w.param(SqlValue::Text(u.to_string()));
            w.sql.push_str(&format!(" AND ts <= {p}"));
        }
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached(&format!("SELECT count(*) FROM telemetry WHERE {}", w.sql))
                .map_err(db_err)?
                .query_row(params_from_iter(w.params.iter()), |r| r.get(0))
                .map_err(db_err)?;
            let limit = limit.map(|l| l.min(i64::MAX as u64) as i64).unwrap_or(-1);
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT doc FROM telemetry WHERE {} ORDER BY ts, seq LIMIT {limit} OFFSET {}",
                    w.sql,
                    offset.min(i64::MAX as u64)
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params_from_iter(w.params.iter()), |r| r.get::<_, String>(0))
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(
                    serde_json::from_str(&row.map_err(db_err)?)
                        .map_err(|e| corrupt("telemetry", e))?,
                );
            }
            Ok((out, total.max(0) as u64))
        })
        .await
    }
}

fn user_conflict(e: rusqlite::Error, user: &User) -> StoreError {
    match db_err(e) {
        StoreError::Conflict(msg) if msg.contains("username") => {
            StoreError::Conflict(format!("Username already exists: {}", user.username))
        }
        StoreError::Conflict(_) => StoreError::Conflict("REGISTER_USER_ALREADY_EXISTS".into()),
        other => other,
    }
}

fn user_where(c: &Connection, clause: &str, value: &str) -> StoreResult<Option<User>> {
    one_doc(
        c,
        &format!("SELECT doc FROM user WHERE {clause}"),
        value,
        "user",
    )
}

fn one_doc<T: serde::de::DeserializeOwned>(
    c: &Connection,
    sql_text: &str,
    value: &str,
    what: &str,
) -> StoreResult<Option<T>> {
    let doc: Option<String> = c
        .prepare_cached(sql_text)
        .and_then(|mut s| s.query_row([value], |r| r.get(0)).optional())
        .map_err(db_err)?;
    doc.map(|d| serde_json::from_str(&d).map_err(|e| corrupt(what, e)))
        .transpose()
}

fn load_all<T: serde::de::DeserializeOwned>(
    c: &Connection,
    sql_text: &str,
    what: &str,
) -> StoreResult<Vec<T>> {
    let mut stmt = c.prepare_cached(sql_text).map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row.map_err(db_err)?).map_err(|e| corrupt(what, e))?);
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Query;

    fn plan(store: &SqliteStore, pairs: &[(&str, &str)]) -> String {
        let q = Query::parse(pairs.iter().copied()).expect("query");
        let w = sql::where_clause(&q.filter, "doc", &|f| store.inner.hot(f)).expect("sql");
        let conn = Connection::open(store.path()).expect("open");
        let mut stmt = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT doc FROM node WHERE {} ORDER BY id LIMIT 50",
                w.sql
            ))
            .expect("prepare");
        let rows = stmt
            .query_map(params_from_iter(w.params.iter()), |r| r.get::<_, String>(3))
            .expect("plan");
        rows.map(|r| r.expect("row"))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    #[test]
    fn hot_fields_use_their_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.sqlite3")).expect("open");
        for (pairs, index) in [
            (&[("kind", "test")][..], "node_kind"),
            (&[("parent", "null")][..], "node_parent"),
            (
                &[("data.kernel_revision.tree", "mainline")][..],
                "node_kr_tree",
            ),
            (&[("name__in", "a,b")][..], "node_name"),
            (
                &[("state", "done"), ("timeout__lt", "2024-01-01")][..],
                "node_",
            ),
        ] {
            let p = plan(&store, pairs);
            assert!(p.contains(index), "{pairs:?}: {p}");
        }
    }
    /// Every count, cached or not, equals the reference evaluator's over all nodes, through
    /// every kind of node write and a write by another connection.
    #[cfg(feature = "testsuite")]
    #[tokio::test]
    async fn cached_counts_follow_writes() {
        use crate::store::UpdateRule;
        fn sample_nodes(n: usize) -> Vec<Node> {
            crate::testsuite::store::sample_nodes(n)
                .into_iter()
                .map(|mut x| {
                    x.id = Some(ObjectId::new());
                    x
                })
                .collect()
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.sqlite3");
        let store = SqliteStore::open(&path).expect("open");
        store.set_count_cache(Some(Duration::ZERO));
        store
            .insert_nodes(sample_nodes(300), EventMode::Silent)
            .await
            .expect("fill");
        let queries: &[&[(&str, &str)]] = &[
            &[("kind", "test")],
            &[("kind", "test"), ("state", "done")],
            &[("data.kernel_revision.tree", "mainline")],
            &[("data.kernel_revision.tree__in", "next,stable")],
            &[("state__ne", "done"), ("name__re", "node-1")],
        ];
        let filters: Vec<Filter> = queries
            .iter()
            .map(|q| Query::parse(q.iter().copied()).expect("query").filter)
            .collect();
        async fn check(store: &SqliteStore, filters: &[Filter], step: &str) {
            let all = store
                .find_nodes(&Filter::all(), &FindOptions::default())
                .await
                .expect("all")
                .items;
            for f in filters {
                let want = all.iter().filter(|n| f.matches_node(n)).count() as u64;
                for _ in 0..2 {
                    let got = store.count_nodes(f).await.expect("count");
                    assert_eq!(got, want, "{step}: {f:?}");
                }
            }
        }
        check(&store, &filters, "filled").await;
        let hits = store.inner.counts.hits.load(Ordering::Relaxed);
        assert!(hits > 0, "the second counts came from the cache");
        store
            .insert_nodes(sample_nodes(40), EventMode::Publish)
            .await
            .expect("insert");
        check(&store, &filters, "inserted").await;
        let page = store
            .find_nodes(&filters[0], &FindOptions::default())
            .await
            .expect("find");
        let mut n = page.items[0].clone();
        n.kind = "kbuild".into();
        store
            .update_node(
                n,
                UpdateRule {
                    check_transition: false,
                    ..UpdateRule::PUT
                },
            )
            .await
            .expect("update");
        check(&store, &filters, "updated").await;
        let ids: Vec<ObjectId> = page
            .items
            .iter()
            .skip(1)
            .take(5)
            .filter_map(|n| n.id)
            .collect();
        store
            .set_field(&ids, "state", Value::String("done".into()))
            .await
            .expect("set_field");
        check(&store, &filters, "set_field").await;
        let mut tree = sample_nodes(3);
        tree[0].id = page.items.get(7).and_then(|n| n.id);
        store
            .write_hierarchy(tree, EventMode::Silent)
            .await
            .expect("hierarchy");
        check(&store, &filters, "hierarchy").await;
        let gone = Query::parse([("name", "node-3")]).expect("q").filter;
        assert!(store.delete_nodes(&gone).await.expect("delete") > 0);
        check(&store, &filters, "deleted").await;
        // Another connection (as another process would) writes the same file.
        let other = SqliteStore::open(&path).expect("second open");
        other
            .insert_nodes(sample_nodes(25), EventMode::Silent)
            .await
            .expect("other insert");
        check(&store, &filters, "written by another connection").await;
        store
            .insert_nodes(sample_nodes(5), EventMode::Silent)
            .await
            .expect("insert after");
        check(&store, &filters, "after the other writer").await;
    }
}
