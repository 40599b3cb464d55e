//! [`LocalBus`]: the in-process event bus of the all-in-one mode.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};

use super::{EventBus, EventError, Wakeup, Wakeups};

/// How many wake-ups a slow receiver may fall behind before it gets [`Wakeup::Missed`].
pub const DEFAULT_CAPACITY: usize = 4096;

/// An in-process bus: a tokio broadcast channel for wake-ups and a queue per list.
/// Cheap to clone (clones share the bus). It never fails while it exists.
#[derive(Debug, Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    wakeups: broadcast::Sender<Wakeup>,
    lists: Mutex<HashMap<String, List>>,
}

#[derive(Debug, Default)]
struct List {
    items: VecDeque<String>,
    ready: Arc<Notify>,
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus::new()
    }
}

impl LocalBus {
    /// A new bus with room for [`DEFAULT_CAPACITY`] pending wake-ups per receiver.
    pub fn new() -> LocalBus {
        LocalBus::with_capacity(DEFAULT_CAPACITY)
    }

    /// A new bus with room for `capacity` pending wake-ups per receiver (at least 1).
    pub fn with_capacity(capacity: usize) -> LocalBus {
        let (wakeups, _) = broadcast::channel(capacity.max(1));
        LocalBus {
            inner: Arc::new(Inner {
                wakeups,
                lists: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lists(&self) -> MutexGuard<'_, HashMap<String, List>> {
        // A panic while holding the lock cannot leave the queues half-updated.
        self.inner
            .lists
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, wakeup: Wakeup) {
        // An error only means nobody listens right now.
        let _ = self.inner.wakeups.send(wakeup);
    }

    /// Takes the first item of `list`, or the list's notifier to wait on.
    fn take(&self, list: &str) -> Result<String, Arc<Notify>> {
        let mut lists = self.lists();
        let entry = lists.entry(list.to_owned()).or_default();
        match entry.items.pop_front() {
            Some(item) => {
                if !entry.items.is_empty() {
                    entry.ready.notify_one();
                }
                Ok(item)
            }
            None => Err(entry.ready.clone()),
        }
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn notify(&self, channel: &str, sequence_id: i64) -> Result<(), EventError> {
        self.send(Wakeup::Event {
            channel: channel.into(),
            sequence_id,
        });
        Ok(())
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<(), EventError> {
        self.send(Wakeup::Message {
            channel: channel.into(),
            payload: payload.into(),
        });
        Ok(())
    }

    async fn subscribe<'c>(&self, channels: &'c [&'c str]) -> Result<Wakeups, EventError> {
        Ok(Wakeups::new(self.inner.wakeups.subscribe(), channels))
    }

    async fn push(&self, list: &str, message: &str) -> Result<(), EventError> {
        let mut lists = self.lists();
        let entry = lists.entry(list.to_owned()).or_default();
        entry.items.push_back(message.to_owned());
        entry.ready.notify_one();
        Ok(())
    }

    async fn pop(&self, list: &str, timeout: Duration) -> Result<Option<String>, EventError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ready = match self.take(list) {
                Ok(item) => return Ok(Some(item)),
                Err(ready) => ready,
            };
            let notified = ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // An item may have arrived between `take` and `enable`.
            if let Ok(item) = self.take(list) {
                return Ok(Some(item));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // Our permit may have been given just as we timed out: look once more, and
                // pass the wake-up on when we leave an item behind.
                return match self.take(list) {
                    Ok(item) => Ok(Some(item)),
                    Err(_) => Ok(None),
                };
            }
        }
    }
}
