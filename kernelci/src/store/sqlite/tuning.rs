//! [`SqliteTuning`]: the memory and checkpoint settings of a [`super::SqliteStore`], and the
//! background checkpointer that keeps WAL checkpoints off the writer thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Memory and checkpoint settings. The defaults bound the store's memory: at most
/// `writer_cache_kib + READERS × reader_cache_kib` of page cache (64 MiB) and no memory-mapped
/// file pages, whatever the file's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteTuning {
    /// Bytes of the database file each connection may memory-map (SQLite `mmap_size`); `0`
    /// reads through SQLite's page cache. Mapped pages count in the process's `VmRSS`
    /// (`RssFile`) once per connection that touched them. Default 0.
    pub mmap_bytes: u64,
    /// Page cache of the writer connection, KiB. Default 32 MiB.
    pub writer_cache_kib: u64,
    /// Page cache of each reader connection, KiB. Default 4 MiB.
    pub reader_cache_kib: u64,
    /// The background checkpointer copies the WAL into the database file once it holds this
    /// many bytes, or after [`SqliteTuning::checkpoint_every`] when it holds any; `0` leaves
    /// checkpoints to the writer (SQLite's automatic checkpoint, which stalls the writes that
    /// trigger it). Default 16 MiB.
    pub checkpoint_bytes: u64,
    /// The longest time a written WAL waits for its checkpoint. Default 2 s.
    pub checkpoint_every: Duration,
}

impl Default for SqliteTuning {
    fn default() -> SqliteTuning {
        SqliteTuning {
            mmap_bytes: 0,
            writer_cache_kib: 32 * 1024,
            reader_cache_kib: 4 * 1024,
            checkpoint_bytes: 16 * 1024 * 1024,
            checkpoint_every: Duration::from_secs(2),
        }
    }
}

impl SqliteTuning {
    /// The tuning for a total page-cache budget of `cache_mib` MiB (half for the writer, the
    /// rest shared by the readers, at least 1 MiB each) and `mmap_mib` MiB of mapping per
    /// connection.
    pub fn with_budget(cache_mib: u64, mmap_mib: u64) -> SqliteTuning {
        let cache_kib = cache_mib.saturating_mul(1024);
        let readers = u64::try_from(super::READERS).unwrap_or(8);
        SqliteTuning {
            mmap_bytes: mmap_mib.saturating_mul(1024 * 1024),
            writer_cache_kib: (cache_kib / 2).max(1024),
            reader_cache_kib: (cache_kib / 2 / readers).max(1024),
            ..SqliteTuning::default()
        }
    }

    /// Sets a connection's page cache (`kib`) and mapping.
    pub(super) fn apply(&self, conn: &Connection, cache_kib: u64) -> rusqlite::Result<()> {
        let kib = i64::try_from(cache_kib).unwrap_or(i64::MAX);
        conn.pragma_update(None, "cache_size", -kib)?;
        conn.pragma_update(
            None,
            "mmap_size",
            i64::try_from(self.mmap_bytes).unwrap_or(i64::MAX),
        )
    }

    /// The writer's automatic checkpoint threshold in pages: a safety net far above the
    /// background checkpointer's (so it only runs if that one cannot keep up), or SQLite's
    /// checkpoint every ~32 MiB when there is no background checkpointer.
    pub(super) fn writer_autocheckpoint_pages(&self) -> i64 {
        if self.checkpoint_bytes == 0 {
            8192
        } else {
            // 256 MiB of 4 KiB pages.
            65_536
        }
    }
}

/// Stops the checkpointer thread when dropped (with the store).
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How often the checkpointer looks at the WAL's size.
const LOOK_EVERY: Duration = Duration::from_millis(50);

impl Checkpointer {
    /// Starts the background checkpointer for the database at `path` (`None` when the tuning
    /// turns it off).
    pub(super) fn start(path: &Path, tuning: &SqliteTuning) -> Option<Checkpointer> {
        if tuning.checkpoint_bytes == 0 {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let path = path.to_path_buf();
        let (limit, every) = (tuning.checkpoint_bytes, tuning.checkpoint_every);
        let spawned = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&path, &flag, limit, every));
        match spawned {
            Ok(_) => Some(Checkpointer { stop }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the SQLite checkpointer; the writer checkpoints");
                None
            }
        }
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn run(db: &Path, stop: &AtomicBool, limit: u64, every: Duration) {
    let conn = match Connection::open(db).and_then(|c| {
        c.busy_timeout(Duration::from_secs(5))?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "SQLite checkpointer: cannot open the database");
            return;
        }
    };
    let wal = wal_path(db);
    // The WAL's size and backfill after the last checkpoint: only what was written since
    // then counts.
    let mut checkpointed_at: u64 = 0;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(LOOK_EVERY);
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        // The writer restarted the WAL from its beginning: measure from there.
        if size < checkpointed_at {
            checkpointed_at = 0;
        }
        let pending = size.saturating_sub(checkpointed_at);
        if pending == 0 || (pending < limit && last.elapsed() < every) {
            continue;
        }
        // PASSIVE never waits for the writer; it answers one row (busy, log, checkpointed).
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => {
                checkpointed_at = size;
                last = Instant::now();
            }
            Err(e) => {
                tracing::debug!(error = %e, "SQLite checkpointer: checkpoint failed; retrying");
            }
        }
    }
}
