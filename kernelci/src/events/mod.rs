//! Events: the CloudEvent envelope, node event payloads and the [`EventBus`].
//!
//! The event log in the node store is the source of truth for events; an [`EventBus`] only
//! **wakes** listeners ("event 42 was appended on channel `node`, read the log") and carries
//! fire-and-forget messages and the upstream list operations (`/push`, `/pop`). A lost
//! wake-up can delay an event, never lose it: listeners wait with a timeout
//! ([`Wakeups::recv_timeout`]) and re-read the log after each wake-up *or* timeout, and every
//! bus reports a possible gap (a lagging receiver, a reconnection) as [`Wakeup::Missed`].
//!
//! A listener combines a store and a bus like this (the store side is sketched):
//!
//! ```no_run
//! # use std::time::Duration;
//! # use kernelci::events::{EventBus, LocalBus, EventError};
//! # async fn events_after(_seq: i64) -> Vec<(i64, String)> { vec![] }
//! # async fn listen(bus: &LocalBus) -> Result<(), EventError> {
//! let mut wakeups = bus.subscribe(&["node"]).await?; // subscribe first ...
//! let mut position = 0;
//! loop {
//!     for (seq, _event) in events_after(position).await { // ... then read the log
//!         position = seq;
//!     }
//!     // Wake up early when something is appended; poll the log anyway every 5 s.
//!     wakeups.recv_timeout(Duration::from_secs(5)).await?;
//! }
//! # }
//! ```
//!
//! Implementations: [`LocalBus`] (in-process, always available) and `RedisBus` (feature
//! `redis`). Every implementation passes the conformance suite in
//! `kernelci::testsuite::bus` (feature `testsuite`).

mod envelope;
pub mod local;
mod node_event;
pub mod pyjson;
#[cfg(feature = "redis")]
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

#[cfg(feature = "redis")]
pub use self::redis::{RedisBus, RedisBusConfig};
pub use envelope::{
    BEEP, CloudEvent, DEFAULT_SOURCE, DEFAULT_TYPE, LEGACY_SEQUENCE_ID_KEY, SEQUENCE_ID_KEY,
    legacy_event_uuid, logged_event_attributes, uuid4,
};
pub use local::LocalBus;
pub use node_event::{NODE_CHANNEL, NodeEvent, NodeOp, Previous};

use crate::ErrorKind;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an event or event-bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The bus backend cannot be reached (Redis is down, the connection dropped).
    #[error("event bus unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend did not answer in time.
    #[error("event bus operation timed out after {0:?}")]
    Timeout(Duration),
    /// A message or payload is malformed.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// The bus was shut down; no more wake-ups will come.
    #[error("event bus closed")]
    Closed,
    /// An error Redis reported that is not a connection failure.
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[source] ::redis::RedisError),
}

impl EventError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EventError::Unavailable { .. } | EventError::Closed => ErrorKind::Unavailable,
            EventError::Timeout(_) => ErrorKind::Timeout,
            EventError::Invalid(_) => ErrorKind::Invalid,
            #[cfg(feature = "redis")]
            EventError::Redis(_) => ErrorKind::Internal,
        }
    }

    /// An [`EventError::Unavailable`] with a source.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> EventError {
        EventError::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// One wake-up delivered to a [`Wakeups`] receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// The event with this sequence id was appended to the log on `channel`.
    Event {
        /// The channel.
        channel: Arc<str>,
        /// The event's sequence id in the log.
        sequence_id: i64,
    },
    /// A message published on `channel` (e.g. a CloudEvent JSON, or a BEEP).
    Message {
        /// The channel.
        channel: Arc<str>,
        /// The message, as published.
        payload: Arc<str>,
    },
    /// Wake-ups may have been missed (the receiver lagged behind, or the bus reconnected to
    /// its backend): re-read the log for every subscribed channel.
    Missed,
}

impl Wakeup {
    /// The channel, unless this is [`Wakeup::Missed`].
    pub fn channel(&self) -> Option<&str> {
        match self {
            Wakeup::Event { channel, .. } | Wakeup::Message { channel, .. } => Some(channel),
            Wakeup::Missed => None,
        }
    }

    /// Decodes a message as it travels on a bus backend: a bare decimal integer is an
    /// [`Wakeup::Event`], anything else a [`Wakeup::Message`].
    pub fn decode(channel: Arc<str>, message: &str) -> Wakeup {
        match message.parse::<i64>() {
            Ok(sequence_id) if !message.starts_with('+') => Wakeup::Event {
                channel,
                sequence_id,
            },
            _ => Wakeup::Message {
                channel,
                payload: message.into(),
            },
        }
    }
}

/// A receiver of wake-ups for a set of channels, made by [`EventBus::subscribe`].
///
/// Wake-ups for other channels are skipped. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Wakeups {
    receiver: broadcast::Receiver<Wakeup>,
    channels: Vec<Arc<str>>,
}

impl Wakeups {
    /// A receiver over a bus's broadcast of every wake-up, keeping those for `channels`.
    /// For implementers of [`EventBus`].
    pub fn new(receiver: broadcast::Receiver<Wakeup>, channels: &[&str]) -> Wakeups {
        Wakeups {
            receiver,
            channels: channels.iter().map(|c| Arc::from(*c)).collect(),
        }
    }

    /// The channels this receiver listens to.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|c| &**c)
    }

    fn wanted(&self, wakeup: &Wakeup) -> bool {
        wakeup
            .channel()
            .is_none_or(|c| self.channels.iter().any(|mine| &**mine == c))
    }

    /// The next wake-up, waiting as long as it takes. Fails with [`EventError::Closed`] when
    /// the bus is gone.
    pub async fn recv(&mut self) -> Result<Wakeup, EventError> {
        loop {
            match self.receiver.recv().await {
                Ok(wakeup) if self.wanted(&wakeup) => return Ok(wakeup),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(Wakeup::Missed),
                Err(broadcast::error::RecvError::Closed) => return Err(EventError::Closed),
            }
        }
    }

    /// The next wake-up, or `None` after `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Wakeup>, EventError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// A wake-up that already arrived, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Wakeup>, EventError> {
        loop {
            match self.receiver.try_recv() {
                Ok(wakeup) if self.wanted(&wakeup) => return Ok(Some(wakeup)),
                Ok(_) => continue,
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(_)) => return Ok(Some(Wakeup::Missed)),
                Err(broadcast::error::TryRecvError::Closed) => return Err(EventError::Closed),
            }
        }
    }

    /// The wake-ups as a stream, ending when the bus is gone.
    pub fn into_stream(self) -> impl futures::Stream<Item = Wakeup> + Send {
        futures::stream::unfold(self, |mut me| async move {
            me.recv().await.ok().map(|w| (w, me))
        })
    }
}

/// Wakes listeners and carries the upstream list operations.
///
/// Promises every implementation keeps (checked by `testsuite::bus::run`):
/// - a wake-up sent after [`EventBus::subscribe`] returned reaches that receiver, unless the
///   receiver gets [`Wakeup::Missed`] instead (lag, reconnection);
/// - wake-ups from one sender on one channel arrive in the order they were sent;
/// - each pushed item is popped by exactly one [`EventBus::pop`], in push order per list;
/// - when the backend is unreachable, operations fail with an error of kind
///   [`ErrorKind::Unavailable`] within a bounded time instead of hanging, and the bus
///   (including existing [`Wakeups`]) works again once the backend is back.
///
/// With the `mock` feature, `MockEventBus` (mockall) stands in for a bus in users' unit tests.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Wakes the listeners of `channel`: the event `sequence_id` was appended to the log.
    async fn notify(&self, channel: &str, sequence_id: i64) -> Result<(), EventError>;

    /// Sends `payload` to the current listeners of `channel` (fire and forget: nobody
    /// listening means nobody gets it). On buses that carry text (Redis), a payload that is a
    /// bare decimal integer arrives as [`Wakeup::Event`]; send CloudEvent JSON, not numbers.
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), EventError>;

    /// Starts receiving wake-ups for `channels`. Wake-ups sent after this returns are received.
    async fn subscribe<'c>(&self, channels: &'c [&'c str]) -> Result<Wakeups, EventError>;

    /// Appends `message` to the list `list` (upstream `/push`, Redis `RPUSH`).
    async fn push(&self, list: &str, message: &str) -> Result<(), EventError>;

    /// Takes the first item of `list`, waiting up to `timeout` for one (upstream `/pop`, Redis
    /// `BLPOP`); `None` when the time is up. Each item goes to exactly one caller; a call
    /// cancelled while it waits does not lose an item.
    async fn pop(&self, list: &str, timeout: Duration) -> Result<Option<String>, EventError>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), EventError> {
        Ok(())
    }

    /// Whether wake-ups reach other processes right now (a shared backend, connected): then
    /// a server replica learns of events appended by other replicas from the bus, and its
    /// listeners need to poll the log only as a safety net. `false` (the default, and
    /// [`LocalBus`]) means wake-ups stay in this process: replicas sharing a store must poll
    /// its log to see each other's events.
    fn wakes_other_processes(&self) -> bool {
        false
    }
}

#[async_trait]
impl<B: EventBus + ?Sized> EventBus for Arc<B> {
    async fn notify(&self, channel: &str, sequence_id: i64) -> Result<(), EventError> {
        (**self).notify(channel, sequence_id).await
    }
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), EventError> {
        (**self).publish(channel, payload).await
    }
    async fn subscribe<'c>(&self, channels: &'c [&'c str]) -> Result<Wakeups, EventError> {
        (**self).subscribe(channels).await
    }
    async fn push(&self, list: &str, message: &str) -> Result<(), EventError> {
        (**self).push(list, message).await
    }
    async fn pop(&self, list: &str, timeout: Duration) -> Result<Option<String>, EventError> {
        (**self).pop(list, timeout).await
    }
    async fn ping(&self) -> Result<(), EventError> {
        (**self).ping().await
    }
    fn wakes_other_processes(&self) -> bool {
        (**self).wakes_other_processes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_wire_messages() {
        let ch: Arc<str> = Arc::from("node");
        assert_eq!(
            Wakeup::decode(ch.clone(), "42"),
            Wakeup::Event {
                channel: ch.clone(),
                sequence_id: 42
            }
        );
        assert!(matches!(
            Wakeup::decode(ch.clone(), "+42"),
            Wakeup::Message { .. }
        ));
        assert!(matches!(
            Wakeup::decode(ch, "{\"data\": 1}"),
            Wakeup::Message { .. }
        ));
    }

    #[test]
    fn error_kinds() {
        assert_eq!(EventError::Closed.kind(), ErrorKind::Unavailable);
        assert_eq!(
            EventError::Timeout(Duration::from_secs(1)).kind(),
            ErrorKind::Timeout
        );
        let err = EventError::unavailable("redis down", std::io::Error::other("refused"));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(std::error::Error::source(&err).is_some());
    }
}
