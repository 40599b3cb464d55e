//! [`EventTail`]: the most recent events this store's writer committed, in memory, so that a
//! listener waiting at the end of the log reads the event it was woken for without a query.
//!
//! The tail is filled by the writer thread right after the commit that appended the events, and
//! only ever holds a run of consecutive sequence numbers: when a number is skipped (another
//! process appended to the same file in between) the tail starts again from there. So the
//! events after a position that the tail holds are exactly the log's, up to the tail's end;
//! anything it cannot answer (a position before its start, or no matching event in it, as
//! another process may have appended more) is read from the database as before.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use crate::store::{EventFilter, StoredEvent};

/// How many events the tail keeps.
pub(super) const TAIL_EVENTS: usize = 4096;

/// The recent committed events (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct EventTail {
    events: RwLock<VecDeque<Arc<StoredEvent>>>,
}

/// Whether `e` passes `filter`, as the log query does (`channel = ? AND (owner IS NULL OR
/// owner = ?)`).
fn passes(e: &StoredEvent, filter: &EventFilter) -> bool {
    filter.channel.as_ref().is_none_or(|c| *c == e.channel)
        && filter
            .owner
            .as_ref()
            .is_none_or(|o| e.owner.as_ref().is_none_or(|eo| eo == o))
}

impl EventTail {
    /// Adds events just committed, in sequence order.
    pub fn push_committed(&self, committed: Vec<StoredEvent>) {
        if committed.is_empty() {
            return;
        }
        let Ok(mut events) = self.events.write() else {
            return;
        };
        for e in committed {
            if events
                .back()
                .is_some_and(|last| last.sequence_id + 1 != e.sequence_id)
            {
                events.clear();
            }
            events.push_back(Arc::new(e));
            if events.len() > TAIL_EVENTS {
                events.pop_front();
            }
        }
    }

    /// Forgets every event (after a purge).
    pub fn clear(&self) {
        if let Ok(mut events) = self.events.write() {
            events.clear();
        }
    }

    /// The first `limit` events after `after` that pass `filter`, when the tail can say: it
    /// holds the event right after `after` and at least one of them passes. `None`: ask the
    /// database.
    pub fn after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> Option<Vec<StoredEvent>> {
        let events = self.events.read().ok()?;
        let first = events.front()?.sequence_id;
        let start = usize::try_from(after.checked_add(1)?.checked_sub(first)?).ok()?;
        let found: Vec<StoredEvent> = events
            .range(start.min(events.len())..)
            .filter(|e| passes(e, filter))
            .take(limit)
            .map(|e| (**e).clone())
            .collect();
        (!found.is_empty()).then_some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ObjectId, Timestamp};

    fn ev(seq: u64, channel: &str, owner: Option<&str>) -> StoredEvent {
        StoredEvent {
            sequence_id: seq,
            id: ObjectId::new(),
            timestamp: Timestamp::now(),
            channel: channel.into(),
            owner: owner.map(str::to_owned),
            data: serde_json::Value::Null,
            attributes: serde_json::Map::new(),
        }
    }

    fn seqs(v: Option<Vec<StoredEvent>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.sequence_id).collect())
    }

    #[test]
    fn answers_only_what_it_holds_without_gaps() {
        let tail = EventTail::default();
        let all = EventFilter::default();
        assert_eq!(seqs(tail.after(0, &all, 10)), None, "empty");
        tail.push_committed(vec![ev(5, "node", None), ev(6, "node", Some("bob"))]);
        tail.push_committed(vec![ev(7, "other", None)]);
        assert_eq!(seqs(tail.after(4, &all, 10)), Some(vec![5, 6, 7]));
        assert_eq!(seqs(tail.after(5, &all, 1)), Some(vec![6]));
        assert_eq!(seqs(tail.after(3, &all, 10)), None, "event 4 is not held");
        assert_eq!(
            seqs(tail.after(7, &all, 10)),
            None,
            "nothing after: ask the database"
        );
        let alice_node = EventFilter {
            channel: Some("node".into()),
            owner: Some("alice".into()),
        };
        assert_eq!(
            seqs(tail.after(4, &alice_node, 10)),
            Some(vec![5]),
            "bob's left out"
        );
        assert_eq!(seqs(tail.after(5, &alice_node, 10)), None);
        // Another process appended 8: the tail starts again at 9.
        tail.push_committed(vec![ev(9, "node", None)]);
        assert_eq!(seqs(tail.after(7, &all, 10)), None);
        assert_eq!(seqs(tail.after(8, &all, 10)), Some(vec![9]));
        tail.clear();
        assert_eq!(seqs(tail.after(8, &all, 10)), None);
    }

    #[test]
    fn keeps_a_bounded_window() {
        let tail = EventTail::default();
        let n = TAIL_EVENTS as u64 + 10;
        tail.push_committed((1..=n).map(|s| ev(s, "node", None)).collect());
        let all = EventFilter::default();
        assert_eq!(seqs(tail.after(5, &all, 1)), None, "the oldest are dropped");
        assert_eq!(seqs(tail.after(n - 1, &all, 5)), Some(vec![n]));
    }
}
