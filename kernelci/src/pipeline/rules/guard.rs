//! The duplicate guard: the same job for the same input is scheduled once within a window
//! ([`DuplicateGuard`]), and the job frequency ([`job_frequency`]).

use super::*;

/// The key of the duplicate guard: input node, job, runtime, platform, retry counter.
pub type DuplicateKey = (String, String, String, String, i64);

/// Skips a job that was already scheduled for the same input, job, runtime, platform and retry
/// counter within a window (600 s), remembering at most `capacity` keys (50 000, least
/// recently used evicted first).
#[derive(Debug)]
pub struct DuplicateGuard {
    window: Duration,
    capacity: usize,
    seen: HashMap<DuplicateKey, (Instant, u64)>,
    order: BTreeMap<u64, DuplicateKey>,
    next: u64,
}

impl Default for DuplicateGuard {
    fn default() -> Self {
        DuplicateGuard::new(Duration::from_secs(600), 50_000)
    }
}

impl DuplicateGuard {
    /// A guard with this window and capacity.
    pub fn new(window: Duration, capacity: usize) -> DuplicateGuard {
        DuplicateGuard {
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    /// Whether `key` was seen within the window before `now`; otherwise records it at `now`
    /// and returns false.
    pub fn check(&mut self, key: DuplicateKey, now: Instant) -> bool {
        if let Some((at, seq)) = self.seen.get(&key).copied() {
            self.order.remove(&seq);
            let seq = self.bump();
            self.order.insert(seq, key.clone());
            if now.saturating_duration_since(at) < self.window {
                self.seen.insert(key, (at, seq));
                return true;
            }
            self.seen.insert(key, (now, seq));
            return false;
        }
        let seq = self.bump();
        self.order.insert(seq, key.clone());
        self.seen.insert(key, (now, seq));
        while self.seen.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.seen.remove(&oldest);
        }
        false
    }

    /// Forgets `key` (when the job it guarded was not created after all).
    pub fn forget(&mut self, key: &DuplicateKey) {
        if let Some((_, seq)) = self.seen.remove(key) {
            self.order.remove(&seq);
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn bump(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// The job frequency that applies: `params.frequency` when it parses to at least 60 s.
pub fn job_frequency(job: &JobConfig) -> Option<Duration> {
    job.frequency().filter(|d| d.as_secs() >= 60)
}
