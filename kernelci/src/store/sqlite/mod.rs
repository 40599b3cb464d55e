//! [`SqliteStore`]: the embedded store (one SQLite file, WAL), implementing every store trait.
//!
//! This file holds the connections (one writer thread with group commit, [`writer`]; a pool of
//! readers with a time budget), the schema and its migrations; each trait's implementation is
//! in its own file: [`nodes`], [`users`], [`kv`], [`events`], [`telemetry`], [`results`].
//!
//! Nodes are stored once, as their JSON document; the hot fields (`kind`, `state`, `parent`,
//! `name`, `created`, `owner`, `group`, `data.kernel_revision.{commit,tree,branch}`, ...) are
//! generated columns with indexes. Filters are translated to SQL ([`sql`]) with an in-database
//! call of the shared evaluator for the rare non-text values, so the answers are exactly those
//! of [`Filter::matches`](crate::query::Filter::matches). `__re` uses a `regexp()` function
//! backed by the `regex` crate.

mod counts;
mod events;
mod kv;
mod nodes;
mod results;
mod sql;
mod tail;
mod telemetry;
#[cfg(test)]
mod tests;
mod tuning;
mod users;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use super::{Conflict, StoreError, StoreResult};
use crate::query::Condition;
use counts::CountCache;
pub use tuning::SqliteTuning;
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

/// The embedded store: a single SQLite file in WAL mode. Implements every store trait
/// ([`Store`](super::Store)).
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
    /// The recent committed events (see [`tail`]).
    tail: Arc<tail::EventTail>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per concurrent read (see [`READERS`]).
    read_slots: tokio::sync::Semaphore,
    /// The stored documents are in [`NODE_DOC_FORMAT`]: `*_json` reads relay them as stored.
    docs_as_stored: bool,
    query_timeout_ms: std::sync::atomic::AtomicU64,
    /// Bit i set: column `HOT_COLUMNS[i]` may hold the sentinel in some row.
    sentinels: Arc<AtomicU32>,
    /// Memory and checkpoint settings (the readers' page cache and mapping).
    tuning: SqliteTuning,
    /// The background checkpointer; stops with the store.
    _checkpointer: Option<tuning::Checkpointer>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// A SQLite error as a store error.
pub(super) fn db_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(code, _)
            if code.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            StoreError::Timeout(Duration::ZERO)
        }
        rusqlite::Error::SqliteFailure(code, msg)
            if code.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(Conflict::Other(
                msg.clone().unwrap_or_else(|| "constraint violation".into()),
            ))
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

/// A stored value that does not decode.
pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored {what} cannot be read: {e}"))
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

fn configure(conn: &Connection, tuning: &SqliteTuning) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The writer's page cache holds the pages written since the last checkpoint and the hot
    // index pages; it is the largest part of the server's heap once full.
    tuning.apply(conn, tuning.writer_cache_kib)?;
    // With the background checkpointer, the writer's automatic checkpoint is only a safety net
    // (a checkpoint on the writer stalls every write queued behind it). Without it, checkpoint
    // every ~32 MiB instead of every 4 MiB: an index page changed by many commits is copied
    // to the database file once per checkpoint.
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        tuning.writer_autocheckpoint_pages(),
    )?;
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
CREATE TABLE IF NOT EXISTS subscription (
  id INTEGER PRIMARY KEY,
  version INTEGER NOT NULL,
  doc TEXT NOT NULL
);
"
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, and creates or reconciles its tables
    /// and indexes.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        SqliteStore::open_tuned(path, SqliteTuning::default())
    }

    /// [`SqliteStore::open`] with memory and checkpoint settings other than the defaults.
    pub fn open_tuned(path: impl AsRef<Path>, tuning: SqliteTuning) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable(format!("cannot create directory {}", dir.display()), e)
            })?;
        }
        let writer = Connection::open(&path).map_err(|e| {
            StoreError::unavailable(format!("cannot open SQLite database {}", path.display()), e)
        })?;
        configure(&writer, &tuning).map_err(db_err)?;
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
            nodes::fill_node_values(&writer)?;
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
        let tail = Arc::new(tail::EventTail::default());
        let (jobs, _thread) = writer::spawn(writer, counts.clone(), tail.clone())?;
        let checkpointer = tuning::Checkpointer::start(&path, &tuning);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                tuning,
                tail,
                _checkpointer: checkpointer,
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
                    Some(e) => Err(e.copied()),
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
        self.tuning
            .apply(&c, self.tuning.reader_cache_kib)
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

/// The document of the one row `sql_text` selects with `value`, decoded.
pub(super) fn one_doc<T: serde::de::DeserializeOwned>(
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

/// The documents of every row `sql_text` selects, decoded.
pub(super) fn load_all<T: serde::de::DeserializeOwned>(
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
