//! The writer thread: one connection that owns every write, with group commit.
//!
//! Write requests queue up as jobs; the thread takes every job waiting (up to [`MAX_BATCH`])
//! and runs them in **one** transaction, each job inside its own savepoint so a failing job
//! rolls back alone. After the commit the thread updates the cached counts ([`CountCache`])
//! with the batch's node changes, then answers every job. So a write's event is in the log
//! (committed) before its caller gets an answer, and concurrent writers share one commit.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use super::counts::{CountCache, NodeChange};
use super::db_err;
use super::tail::EventTail;
use crate::store::{StoreError, StoreResult, StoredEvent};

/// Most jobs in one transaction.
const MAX_BATCH: usize = 512;

/// The `meta` key of the node write generation: +1 for every committed batch that changed
/// nodes, by every process that writes the file with this code.
pub(super) const NODE_GEN_KEY: &str = "node_gen";

/// Called once the batch's fate is known: `None` when it committed, else why it did not.
pub(super) type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A write: runs on the writer's connection inside the batch transaction (or gets `None` when
/// no transaction could be opened); says whether it succeeded (else its savepoint is rolled
/// back) and how to answer once the batch's fate is known.
pub(super) type Job = Box<dyn FnOnce(Option<&Tx<'_>>) -> (bool, Completion) + Send>;

/// What a job sees: the connection (inside a transaction) and the change log of the batch.
pub(super) struct Tx<'a> {
    conn: &'a Connection,
    changes: &'a RefCell<Changes>,
}

/// Node changes of a batch, for the count cache.
#[derive(Default)]
pub(super) struct Changes {
    /// Whether changes are recorded (only while the count cache has entries).
    pub track: bool,
    /// Some node changed (the generation is bumped).
    pub nodes_changed: bool,
    /// A change the log cannot describe (e.g. a filtered delete): drop every cached count.
    pub invalidate: bool,
    /// The recorded changes.
    pub list: Vec<NodeChange>,
    /// The events appended, in order (for the [`EventTail`] once committed).
    pub events: Vec<StoredEvent>,
    /// Events were purged: the tail is dropped.
    pub purged: bool,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Tx<'_> {
    /// Whether the caller should describe its node changes (costs a `to_value` per node).
    pub fn tracking(&self) -> bool {
        self.changes.borrow().track
    }

    /// Records a node change: `old` and `new` documents (`None`: absent).
    pub fn node_changed(&self, old: Option<Value>, new: Option<Value>) {
        let mut c = self.changes.borrow_mut();
        c.nodes_changed = true;
        if c.track {
            c.list.push(NodeChange { old, new });
        }
    }

    /// Records an event appended in this transaction.
    pub fn event_appended(&self, event: &StoredEvent) {
        self.changes.borrow_mut().events.push(event.clone());
    }

    /// Records a purge of the event log.
    pub fn events_purged(&self) {
        self.changes.borrow_mut().purged = true;
    }

    /// Records node changes the log cannot describe.
    pub fn nodes_changed_unknown(&self) {
        let mut c = self.changes.borrow_mut();
        c.nodes_changed = true;
        c.invalidate = true;
    }
}

/// Starts the writer thread on `conn`; it stops when every sender is dropped.
pub(super) fn spawn(
    conn: Connection,
    counts: Arc<CountCache>,
    tail: Arc<EventTail>,
) -> StoreResult<(Sender<Job>, std::thread::JoinHandle<()>)> {
    let gen_now = read_gen(&conn)?;
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let handle = std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || run(conn, rx, counts, tail, gen_now))
        .map_err(|e| StoreError::Internal(format!("cannot start the SQLite writer: {e}")))?;
    Ok((tx, handle))
}

/// The node write generation stored in the file.
pub(super) fn read_gen(conn: &Connection) -> StoreResult<u64> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [NODE_GEN_KEY],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
}

fn run(
    conn: Connection,
    rx: Receiver<Job>,
    counts: Arc<CountCache>,
    tail: Arc<EventTail>,
    mut gen_now: u64,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch, &counts, &tail, &mut gen_now);
    }
}

fn run_batch(
    conn: &Connection,
    batch: Vec<Job>,
    counts: &CountCache,
    tail: &EventTail,
    gen_now: &mut u64,
) {
    let changes = RefCell::new(Changes {
        track: counts.is_active(),
        ..Default::default()
    });
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = db_err(e);
        tracing::warn!(error = %e, "SQLite writer: cannot begin a transaction");
        for job in batch {
            let (_, done) = job(None);
            done(Some(&e));
        }
        return;
    }
    let tx = Tx {
        conn,
        changes: &changes,
    };
    let mut completions = Vec::with_capacity(batch.len());
    for job in batch {
        let (mark, events_mark) = {
            let c = changes.borrow();
            (c.list.len(), c.events.len())
        };
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            let (_, done) = job(None);
            done(Some(&db_err(e)));
            continue;
        }
        // A panicking job loses its answer (its caller sees the task fail), not the batch.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(Some(&tx))));
        let (ok, done) = match outcome {
            Ok(r) => r,
            Err(_) => {
                let done: Completion = Box::new(|_| {});
                (false, done)
            }
        };
        if ok {
            let _ = conn.execute_batch("RELEASE job");
        } else {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            let mut c = changes.borrow_mut();
            c.list.truncate(mark);
            c.events.truncate(events_mark);
        }
        completions.push(done);
    }
    let mut result: Result<(), StoreError> = Ok(());
    let mut new_gen = *gen_now;
    if changes.borrow().nodes_changed {
        match bump_gen(conn) {
            Ok(g) => new_gen = g,
            Err(e) => result = Err(e),
        }
    }
    if result.is_ok()
        && let Err(e) = conn.execute_batch("COMMIT")
    {
        result = Err(db_err(e));
    }
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    } else {
        let mut c = changes.into_inner();
        if c.purged {
            tail.clear();
        } else {
            tail.push_committed(std::mem::take(&mut c.events));
        }
        if new_gen != *gen_now {
            if new_gen != *gen_now + 1 {
                // Another connection changed nodes since our last batch.
                counts.invalidate_all();
            } else if c.invalidate || !c.track {
                counts.invalidate_all();
            } else {
                counts.apply(new_gen, &c.list);
            }
            *gen_now = new_gen;
        }
    }
    for done in completions {
        done(result.as_ref().err());
    }
}

fn bump_gen(conn: &Connection) -> StoreResult<u64> {
    let v: String = conn
        .query_row(
            "INSERT INTO meta (key, value) VALUES (?1, '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value",
            [NODE_GEN_KEY],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    v.parse()
        .map_err(|_| StoreError::Internal(format!("bad node generation '{v}'")))
}
