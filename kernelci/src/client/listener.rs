//! [`Listener`]: follows a channel through server restarts and network loss, delivering every
//! event at least once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{Api, ClientError, ClientResult, Subscription};
use crate::events::{CloudEvent, NodeEvent};
use crate::models::Timestamp;
use crate::retry::Backoff;

/// Which node events a [`Listener`] hands over; an empty field accepts anything. Events that do
/// not pass are acknowledged and skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeEventFilter {
    /// Accepted kinds.
    pub kind: Vec<String>,
    /// Accepted states.
    pub state: Vec<String>,
    /// Accepted results.
    pub result: Vec<String>,
    /// Accepted names.
    pub name: Vec<String>,
}

impl NodeEventFilter {
    /// Whether an event's data passes.
    pub fn accepts(&self, data: &Value) -> bool {
        let check = |field: &str, allowed: &[String]| {
            allowed.is_empty()
                || data
                    .get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|v| allowed.iter().any(|a| a == v))
        };
        check("kind", &self.kind)
            && check("state", &self.state)
            && check("result", &self.result)
            && check("name", &self.name)
    }
}

/// How a [`Listener`] subscribes.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The channel (`node`, ...).
    pub channel: String,
    /// A durable subscriber id (e.g. `scheduler:node`): the server keeps the position across
    /// restarts of either side.
    pub subscriber_id: Option<String>,
    /// Receive every owner's events.
    pub promiscuous: bool,
    /// Which events to hand over.
    pub filter: NodeEventFilter,
    /// How long one long-poll may take before it is retried (longer than the server's
    /// keep-alive period).
    pub poll_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// How many events one poll may fetch from a server that offers batched catch-up
    /// (`/listen/{id}?max=N`, ours); `1` polls one event at a time. Servers without it
    /// (upstream's) answer one event whatever this is. Default 100.
    pub batch: usize,
}

impl ListenerConfig {
    /// Listens to `channel`, fire-and-forget, own events only.
    pub fn new(channel: impl Into<String>) -> ListenerConfig {
        ListenerConfig {
            channel: channel.into(),
            subscriber_id: None,
            promiscuous: false,
            filter: NodeEventFilter::default(),
            poll_timeout: Duration::from_secs(120),
            max_backoff: Duration::from_secs(30),
            batch: 100,
        }
    }

    /// Fetching up to `n` events per poll (at least 1; see [`ListenerConfig::batch`]).
    pub fn batch(mut self, n: usize) -> ListenerConfig {
        self.batch = n.max(1);
        self
    }

    /// With a durable subscriber id.
    pub fn durable(mut self, subscriber_id: impl Into<String>) -> ListenerConfig {
        self.subscriber_id = Some(subscriber_id.into());
        self
    }

    /// Receiving every owner's events.
    pub fn promiscuous(mut self) -> ListenerConfig {
        self.promiscuous = true;
        self
    }

    /// With a filter.
    pub fn filter(mut self, filter: NodeEventFilter) -> ListenerConfig {
        self.filter = filter;
        self
    }
}

/// An event handed over by a [`Listener`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The channel.
    pub channel: String,
    /// The CloudEvent.
    pub event: CloudEvent,
}

impl ReceivedEvent {
    /// The event log position (servers that send `sequenceid`, or `_sequence_id` before it).
    pub fn sequence_id(&self) -> Option<u64> {
        self.event.sequence_id.and_then(|s| u64::try_from(s).ok())
    }

    /// The node event, when this is one.
    pub fn node_event(&self) -> Option<NodeEvent> {
        NodeEvent::from_value(&self.event.data).ok()
    }
}

/// What a [`Listener`] has been doing, for liveness checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenerHealth {
    /// When the server last answered (an event or a keep-alive).
    pub last_contact: Option<Timestamp>,
    /// When the last event was handed over.
    pub last_event: Option<Timestamp>,
    /// Events handed over.
    pub delivered: u64,
    /// Times the listener had to re-subscribe or retry after an error.
    pub reconnects: u64,
    /// Whether the last call reached the server.
    pub connected: bool,
    /// The last error, if the last call failed.
    pub last_error: Option<String>,
}

/// Follows a channel: subscribes, long-polls, hides keep-alives, re-subscribes after server
/// restarts and network loss (with backoff), and acknowledges an event only when told to
/// ([`Listener::ack`]) — an event not acknowledged is delivered again (when the next event is
/// asked for without acknowledging the last one handed over, it comes again, also from a
/// batch: the rest of the batch is dropped and fetched anew). Every `/listen` carries
/// an explicit `acknowledge=N` (the highest acknowledged sequence id, `0` before any), so a
/// server never applies upstream's implicit "the previous delivery was handled"; servers
/// without the parameter (upstream's) ignore it and keep their implicit acknowledgement.
#[derive(Debug)]
pub struct Listener {
    api: Arc<dyn Api>,
    config: ListenerConfig,
    sub: Option<Subscription>,
    acked: Option<u64>,
    /// Events fetched by a batched poll and not yet handed over, in log order.
    pending: VecDeque<ReceivedEvent>,
    /// The sequence id of the event handed over last.
    handed: Option<u64>,
    health: Arc<Mutex<ListenerHealth>>,
}

impl Listener {
    /// A listener using `api` (an [`super::ApiClient`] carrying a token, or any [`Api`]).
    pub fn new(api: impl Into<Arc<dyn Api>>, config: ListenerConfig) -> Listener {
        Listener {
            api: api.into(),
            config,
            sub: None,
            acked: None,
            pending: VecDeque::new(),
            handed: None,
            health: Arc::default(),
        }
    }

    /// A snapshot of the listener's health.
    pub fn health(&self) -> ListenerHealth {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// A handle to read the health from elsewhere (a liveness endpoint).
    pub fn health_handle(&self) -> Arc<Mutex<ListenerHealth>> {
        self.health.clone()
    }

    /// The current subscription, if subscribed.
    pub fn subscription(&self) -> Option<&Subscription> {
        self.sub.as_ref()
    }

    fn note(&self, f: impl FnOnce(&mut ListenerHealth)) {
        if let Ok(mut h) = self.health.lock() {
            f(&mut h);
        }
    }

    /// Subscribes now (otherwise the first [`Listener::next`] does): events from this point on
    /// are owed to the listener.
    pub async fn start(&mut self) -> ClientResult<()> {
        self.subscribe().await.map(|_| ())
    }

    async fn subscribe(&mut self) -> ClientResult<u64> {
        if let Some(s) = &self.sub {
            return Ok(s.id);
        }
        let sub = self
            .api
            .subscribe(
                &self.config.channel,
                self.config.promiscuous,
                self.config.subscriber_id.as_deref(),
            )
            .await?;
        tracing::debug!(id = sub.id, channel = %sub.channel, "subscribed");
        let id = sub.id;
        self.sub = Some(sub);
        Ok(id)
    }

    fn retryable(e: &ClientError) -> bool {
        matches!(e, ClientError::Transport { .. })
            || matches!(e.status(), Some(s) if s >= 500 || s == 404 || s == 408 || s == 429)
    }

    /// Waits for the next event that passes the filter. Errors only for problems retrying cannot
    /// fix (a bad token, a refused subscription).
    pub async fn next(&mut self) -> ClientResult<ReceivedEvent> {
        // The last event handed over was not acknowledged: it must come again, so what was
        // fetched after it is fetched again too (after it, in order).
        if let Some(h) = self.handed
            && self.acked.is_none_or(|a| a < h)
        {
            self.pending.clear();
        }
        loop {
            while let Some(received) = self.pending.pop_front() {
                if !self.config.filter.accepts(&received.event.data) {
                    self.ack(&received);
                    continue;
                }
                self.handed = received.sequence_id();
                self.note(|h| {
                    h.delivered += 1;
                    h.last_event = Some(Timestamp::now());
                });
                return Ok(received);
            }
            let messages = self.poll().await?;
            for msg in messages {
                if let Some(received) = self.received(&msg) {
                    self.pending.push_back(received);
                }
            }
        }
    }

    /// One `/listen` (retried through transport errors and lost subscriptions): the messages
    /// it answered, one or (batched) several.
    async fn poll(&mut self) -> ClientResult<Vec<Value>> {
        let policy = Backoff::new(Duration::from_millis(200), self.config.max_backoff);
        let mut delays = policy.delays();
        loop {
            // Always say what is acknowledged: without `acknowledge`, the server would take
            // the event it delivered last as handled (upstream's implicit ack), losing an
            // event whose handler failed before anything was acknowledged. `0` acknowledges
            // nothing new.
            let ack = Some(self.acked.unwrap_or(0));
            let batch = self.config.batch;
            let attempt = async {
                let id = self.subscribe().await?;
                if batch > 1 {
                    self.api
                        .listen_batch(id, ack, batch, self.config.poll_timeout)
                        .await
                } else {
                    self.api.listen_raw(id, ack, self.config.poll_timeout).await
                }
            }
            .await;
            let answer = match attempt {
                Ok(m) => m,
                Err(e) if Listener::retryable(&e) => {
                    if e.status() == Some(404) {
                        // The subscription is gone (stale cleanup, or an upstream server that
                        // restarted): subscribe again; durable ids resume where they were.
                        self.sub = None;
                    }
                    let msg = e.to_string();
                    let backoff = delays.next().unwrap_or(self.config.max_backoff);
                    tracing::warn!(error = %msg, "listener lost the server; retrying in {backoff:?}");
                    self.note(|h| {
                        h.connected = false;
                        h.reconnects += 1;
                        h.last_error = Some(msg);
                    });
                    tokio::time::sleep(backoff).await;
                    // Servers that lose in-memory subscriptions on restart answer 404 later.
                    continue;
                }
                Err(e) => {
                    self.note(|h| {
                        h.connected = false;
                        h.last_error = Some(e.to_string());
                    });
                    return Err(e);
                }
            };
            self.note(|h| {
                h.connected = true;
                h.last_contact = Some(Timestamp::now());
                h.last_error = None;
            });
            return Ok(match answer {
                Value::Array(messages) => messages,
                one => vec![one],
            });
        }
    }

    /// The event a message carries (`None`: a keep-alive or not a CloudEvent).
    fn received(&self, msg: &Value) -> Option<ReceivedEvent> {
        let text = msg
            .get("data")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())?;
        let event = match CloudEvent::from_json(text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a message that is not a CloudEvent");
                return None;
            }
        };
        if event.is_beep() {
            return None;
        }
        Some(ReceivedEvent {
            channel: msg
                .get("channel")
                .and_then(Value::as_str)
                .unwrap_or(&self.config.channel)
                .to_owned(),
            event,
        })
    }

    /// Marks `event` as handled: the next poll acknowledges it to the server.
    pub fn ack(&mut self, event: &ReceivedEvent) {
        if let Some(s) = event.sequence_id() {
            self.acked = Some(self.acked.map_or(s, |a| a.max(s)));
        }
    }

    /// Runs `handler` on every event, acknowledging each one only after the handler succeeded;
    /// a failed event is delivered again (after `retry_delay`). Returns only on a fatal error.
    pub async fn run<F, Fut, E>(
        &mut self,
        retry_delay: Duration,
        mut handler: F,
    ) -> ClientResult<()>
    where
        F: FnMut(ReceivedEvent) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        loop {
            let ev = self.next().await?;
            match handler(ev.clone()).await {
                Ok(()) => self.ack(&ev),
                Err(e) => {
                    tracing::warn!(error = %e, seq = ?ev.sequence_id(), "event handler failed; the event will come again");
                    tokio::time::sleep(retry_delay).await;
                }
            }
        }
    }

    /// Acknowledges what was handled and drops the subscription (a durable position stays on
    /// the server).
    pub async fn close(mut self) -> ClientResult<()> {
        if let Some(sub) = self.sub.take() {
            if let Some(a) = self.acked {
                // Servers without /ack (upstream) only acknowledge on the next poll.
                let _ = self.api.ack(sub.id, a).await;
            }
            self.api.unsubscribe(sub.id).await?;
        }
        Ok(())
    }

    /// The events as a stream; each item is acknowledged when the next one is requested
    /// (upstream's implicit acknowledgement).
    pub fn into_stream(self) -> impl futures::Stream<Item = ClientResult<ReceivedEvent>> {
        futures::stream::unfold((self, None::<ReceivedEvent>), |(mut l, last)| async move {
            if let Some(prev) = last {
                l.ack(&prev);
            }
            let item = l.next().await;
            let keep = item.as_ref().ok().cloned();
            Some((item, (l, keep)))
        })
    }
}
