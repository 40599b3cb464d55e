//! A small time-bounded cache of aggregate answers: the views' counts are computed in the
//! store, and a page reloaded within a few seconds (or a dashboard polled by many people) reuses
//! them instead of counting again.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most entries kept (the oldest go first).
const CAPACITY: usize = 512;

type Entry = (Instant, Arc<dyn Any + Send + Sync>);

/// Answers by key, each kept for the cache's time to live.
#[derive(Default)]
pub struct TtlCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for TtlCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache").field("ttl", &self.ttl).finish()
    }
}

impl TtlCache {
    /// A cache keeping answers for `ttl` (zero: nothing is kept).
    pub fn new(ttl: Duration) -> TtlCache {
        TtlCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The answer under `key` when still fresh, else `make`'s (kept when it succeeds).
    pub async fn get_or_try<T, E, F>(&self, key: String, make: F) -> Result<T, E>
    where
        T: Clone + Send + Sync + 'static,
        F: Future<Output = Result<T, E>>,
    {
        if self.ttl.is_zero() {
            return make.await;
        }
        if let Some(v) = self.lookup::<T>(&key) {
            return Ok(v);
        }
        let v = make.await?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        if entries.len() >= CAPACITY
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(key, (now, Arc::new(v.clone())));
        Ok(v)
    }

    fn lookup<T: Clone + 'static>(&self, key: &str) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (at, v) = entries.get(key)?;
        if at.elapsed() >= self.ttl {
            return None;
        }
        v.downcast_ref::<T>().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_answers_for_the_ttl_only() {
        let cache = TtlCache::new(Duration::from_millis(200));
        let a: Result<u32, ()> = cache.get_or_try("k".into(), async { Ok(1) }).await;
        let b: Result<u32, ()> = cache.get_or_try("k".into(), async { Ok(2) }).await;
        assert_eq!((a, b), (Ok(1), Ok(1)));
        let e: Result<u32, &str> = cache.get_or_try("e".into(), async { Err("no") }).await;
        assert_eq!(e, Err("no"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let c: Result<u32, ()> = cache.get_or_try("k".into(), async { Ok(3) }).await;
        assert_eq!(c, Ok(3));
        let off = TtlCache::new(Duration::ZERO);
        let d: Result<u32, ()> = off.get_or_try("k".into(), async { Ok(4) }).await;
        let f: Result<u32, ()> = off.get_or_try("k".into(), async { Ok(5) }).await;
        assert_eq!((d, f), (Ok(4), Ok(5)));
    }
}
