//! Exact counts of recent expensive filters, kept current by the writer.
//!
//! `GET /nodes` answers with the number of matching nodes (`total`), and counting tens of
//! thousands of matches costs milliseconds even through an index. A count that took longer
//! than [`SLOW_COUNT`] is kept (and concurrent counts of the same filter then wait for one
//! another instead of all counting). From then on, the writer thread evaluates every cached filter on each
//! node it changes (old and new document, with [`Filter::matches`], the same rules the SQL
//! follows) and adjusts the count after each commit, so a cached count is always the exact
//! count of the committed data, not an estimate.
//!
//! Bookkeeping against races: every node-changing batch bumps a generation stored in the file
//! (`meta.node_gen`). A count being computed first registers a *pending* slot (before its read
//! snapshot is taken), reads the generation `g` in its snapshot, counts, and then adds the
//! changes the writer recorded in the slot with a generation above `g`. A cached entry is only
//! used when its generation is at least the one the reader sees, so a write by another process
//! (which bumps the generation without touching this cache) makes the entry miss, and the
//! writer drops the whole cache when it sees the generation moved by someone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::query::Filter;

/// Counts slower than this are cached from their second use on (default).
pub(super) const SLOW_COUNT: Duration = Duration::from_millis(1);
const DISABLED: u64 = u64::MAX;
/// Most cached counts (least recently used go first).
const CAPACITY: usize = 64;
/// Most remembered slow filters.
const SLOW_KEYS: usize = 1024;

/// One node change of a committed batch.
pub(super) struct NodeChange {
    /// The document before (`None`: the node was created).
    pub old: Option<Value>,
    /// The document after (`None`: deleted).
    pub new: Option<Value>,
}

struct Entry {
    filter: Filter,
    count: i64,
    generation: u64,
    used: u64,
}

struct Pending {
    filter: Filter,
    /// (generation, delta) of every batch committed since the slot was registered.
    deltas: Vec<(u64, i64)>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    pending: HashMap<u64, Pending>,
    slow: std::collections::HashSet<String>,
    gates: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    next_slot: u64,
    tick: u64,
}

/// The cache; shared by the readers and the writer thread.
pub(super) struct CountCache {
    state: Mutex<State>,
    /// Whether entries or pending slots exist (the writer then records node changes).
    active: AtomicBool,
    /// Counts at least this slow (µs) are cached; [`DISABLED`]: none.
    min_micros: AtomicU64,
    /// Counts answered from the cache (for tests and diagnostics).
    pub hits: AtomicU64,
}

impl Default for CountCache {
    fn default() -> Self {
        CountCache {
            state: Mutex::default(),
            active: AtomicBool::new(false),
            min_micros: AtomicU64::new(SLOW_COUNT.as_micros() as u64),
            hits: AtomicU64::new(0),
        }
    }
}

/// The cache key of a filter.
pub(super) fn key(filter: &Filter) -> Option<String> {
    serde_json::to_string(&filter.conditions).ok()
}

fn delta(filter: &Filter, change: &NodeChange) -> i64 {
    let was = change.old.as_ref().is_some_and(|d| filter.matches(d));
    let is = change.new.as_ref().is_some_and(|d| filter.matches(d));
    i64::from(is) - i64::from(was)
}

impl CountCache {
    /// Caches counts that take at least `min` (`None`: caches nothing and forgets all).
    pub fn configure(&self, min: Option<Duration>) {
        let v = min.map_or(DISABLED, |d| {
            u64::try_from(d.as_micros()).unwrap_or(DISABLED - 1)
        });
        self.min_micros.store(v, Ordering::Release);
        let mut s = self.lock();
        s.slow.clear();
        if v == DISABLED {
            s.entries.clear();
            s.pending.clear();
        }
        self.set_active(&s);
    }

    /// Whether the writer must record node changes.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that may be wrong: start over.
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut s = poisoned.into_inner();
            s.entries.clear();
            s.pending.clear();
            s
        })
    }

    fn set_active(&self, s: &State) {
        self.active.store(
            !s.entries.is_empty() || !s.pending.is_empty(),
            Ordering::Release,
        );
    }

    /// A gate for counts of `key` when it is known to be slow: concurrent counts of the same
    /// slow filter then run one after the other, and all but the first find it cached.
    pub fn gate(&self, key: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let mut s = self.lock();
        if !s.entries.contains_key(key) && !s.slow.contains(key) {
            return None;
        }
        Some(s.gates.entry(key.to_owned()).or_default().clone())
    }

    /// Gives a gate back (dropped when nobody else holds it).
    pub fn ungate(&self, key: &str, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut s = self.lock();
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&gate) <= 2 {
            s.gates.remove(key);
        }
    }

    /// Registers a pending count of `filter`; returns the slot. Call before the read snapshot
    /// is taken.
    pub fn register(&self, _key: &str, filter: &Filter) -> Option<u64> {
        if self.min_micros.load(Ordering::Acquire) == DISABLED {
            return None;
        }
        let mut s = self.lock();
        s.next_slot += 1;
        let slot = s.next_slot;
        s.pending.insert(
            slot,
            Pending {
                filter: filter.clone(),
                deltas: Vec::new(),
            },
        );
        // Before the snapshot: the writer must record every change from now on.
        self.active.store(true, Ordering::Release);
        Some(slot)
    }

    /// The cached count, when it is at least as new as the reader's snapshot `generation`.
    pub fn lookup(&self, key: &str, generation: u64) -> Option<u64> {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        let e = s.entries.get_mut(key)?;
        if e.generation < generation {
            return None;
        }
        e.used = tick;
        self.hits.fetch_add(1, Ordering::Relaxed);
        u64::try_from(e.count).ok()
    }

    /// Drops a pending slot without using it.
    pub fn release(&self, slot: Option<u64>) {
        if let Some(slot) = slot {
            let mut s = self.lock();
            s.pending.remove(&slot);
            self.set_active(&s);
        }
    }

    /// A count of `key` computed in a snapshot at `generation` took `took`: keeps it (with
    /// the changes committed since, from the slot) or remembers the filter as slow.
    pub fn finish(
        &self,
        key: String,
        slot: Option<u64>,
        generation: u64,
        count: u64,
        took: Duration,
    ) {
        let mut s = self.lock();
        let slow = u64::try_from(took.as_micros()).unwrap_or(u64::MAX)
            >= self.min_micros.load(Ordering::Acquire);
        if slow {
            if s.slow.len() >= SLOW_KEYS {
                s.slow.clear();
            }
            s.slow.insert(key.clone());
        }
        let pending = slot.and_then(|slot| s.pending.remove(&slot));
        match pending {
            Some(p) if slow || s.entries.contains_key(&key) => {
                let mut count = i64::try_from(count).unwrap_or(i64::MAX);
                let mut generation = generation;
                for (g, d) in p.deltas {
                    if g > generation {
                        count += d;
                        generation = g;
                    }
                }
                s.tick += 1;
                let used = s.tick;
                if s.entries.len() >= CAPACITY && !s.entries.contains_key(&key) {
                    let oldest = s
                        .entries
                        .iter()
                        .min_by_key(|(_, e)| e.used)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        s.entries.remove(&k);
                    }
                }
                s.entries.insert(
                    key,
                    Entry {
                        filter: p.filter,
                        count,
                        generation,
                        used,
                    },
                );
            }
            _ => {}
        }
        self.set_active(&s);
    }

    /// Applies a committed batch (generation `generation`) to every entry and pending slot.
    pub fn apply(&self, generation: u64, changes: &[NodeChange]) {
        let mut s = self.lock();
        for e in s.entries.values_mut() {
            if generation > e.generation {
                e.count += changes.iter().map(|c| delta(&e.filter, c)).sum::<i64>();
                e.generation = generation;
            }
        }
        for p in s.pending.values_mut() {
            let d = changes.iter().map(|c| delta(&p.filter, c)).sum::<i64>();
            p.deltas.push((generation, d));
        }
    }

    /// Forgets every count (pending ones are answered but not kept).
    pub fn invalidate_all(&self) {
        let mut s = self.lock();
        s.entries.clear();
        s.pending.clear();
        self.set_active(&s);
    }
}
