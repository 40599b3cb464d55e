//! Subscriptions over the durable event log, served by any replica.
//!
//! Every event is in the store's log with a sequence number before anyone is told about it; the
//! bus only wakes listeners. A subscription is a record in the store
//! ([`SubscriptionRecord`]), the one source of truth every replica reads and changes by
//! compare-and-set; no replica keeps a copy between requests, so a load balancer may send each
//! request to another replica.
//!
//! - Fire-and-forget subscriptions (upstream's default) start at the end of the log when made;
//!   durable ones (`subscriber_id`) after the subscriber's acknowledged position, kept in the
//!   store across restarts and replicas.
//! - `/listen` first acknowledges: exactly `acknowledge=N` when the client says so, else
//!   (upstream's implicit acknowledgement) the event the previous `/listen` sent — but only a
//!   **confirmed** one, whose response was handed whole to the connection (see
//!   [`crate::serve::SendReceipt`]). A delivery whose replica died, or whose client went away,
//!   before that is not acknowledged: the event is sent again (at least once, never skipped).
//!   When the previous delivery is still being confirmed (the client was quicker than the
//!   confirmation's write), the next `/listen` waits for it, up to [`CONFIRM_WAIT`].
//! - Then it returns the next matching event after the acknowledged position, recording it as
//!   sent in the same compare-and-set, or waits: woken by the bus, by the log watcher (which
//!   polls the log's last sequence number, quickly when the bus does not reach other
//!   replicas), by an unsubscribe notice, or at the keep-alive deadline (BEEP). A waiting
//!   `/listen` renews the record's `last_poll` every [`LEASE_RENEW`].
//! - `/unsubscribe` removes the record: no replica delivers on it afterwards (a delivery is a
//!   compare-and-set on the record, which fails once it is gone), and waiting `/listen`s are
//!   told through the bus. The stale sweep removes records idle for [`STALE_AFTER`] with a
//!   delete-if-unchanged, so it never removes one another replica has touched since.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kernelci::events::{CloudEvent, DEFAULT_TYPE, EventBus, Wakeup, legacy_event_uuid};
use kernelci::models::Timestamp;
use kernelci::store::{
    Delivery, EventFilter, SharedStore, StoreError, StoredEvent, SubscriberState,
    SubscriptionRecord,
};
use serde_json::{Value, json};
use tokio::sync::watch;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::{ApiError, ok};
use crate::serve::SendReceipt;

/// Subscriptions not polled for this long are removed.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// How often a waiting `/listen` stamps its subscription's `last_poll` (its lease against the
/// stale sweep); far below [`STALE_AFTER`].
pub const LEASE_RENEW: Duration = Duration::from_secs(60);
/// How many subscription ids a `/subscribe` tries when the one it drew is taken.
pub const SUBSCRIBE_ATTEMPTS: usize = 8;
/// How long an implicit acknowledgement waits for the confirmation of the previous delivery.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(2);
/// The log watcher's quickest poll, after the log moved.
pub const LOG_POLL_MIN: Duration = Duration::from_millis(20);
/// The log watcher's slowest poll when the bus does not reach the other replicas (it doubles
/// from [`LOG_POLL_MIN`] while the log stands still).
pub const LOG_POLL_MAX: Duration = Duration::from_millis(200);
/// The log watcher's poll while the bus wakes every replica (a safety net only).
pub const LOG_POLL_WITH_BUS: Duration = Duration::from_secs(1);
/// The bus channel on which unsubscribes are announced (the subscription id as payload).
pub const SUBSCRIPTIONS_CHANNEL: &str = "kernelci-rs:subscriptions";

/// A subscription as `/subscribe` made it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubState(pub SubscriptionRecord);

impl SubState {
    /// The upstream `Subscription` shape.
    pub fn subscription(&self) -> Value {
        let s = &self.0;
        json!({"id": s.id, "channel": s.channel, "user": s.user, "promiscuous": s.promiscuous})
    }
}

/// The most events one batched `/listen` (`?max=N`) answers.
pub const MAX_BATCH: usize = 1000;

/// What `/listen` answers: the messages, and for events, the receipt that confirms their
/// delivery once the connection took the whole response.
#[derive(Debug)]
pub struct Listened {
    /// The upstream messages (`{"type": "message", "channel", "data": "<CloudEvent>"}`): one
    /// event or keep-alive, or (batched) up to the asked number of events in log order.
    pub messages: Vec<Value>,
    /// Whether the caller asked for a batch (`?max=N`): the answer is then a JSON array, else
    /// upstream's single message.
    pub batched: bool,
    receipt: Option<SendReceipt>,
}

impl Listened {
    /// The 200 response, carrying the receipt for the connection loop.
    pub fn into_response(self) -> Result<Response, ApiError> {
        let body = if self.batched {
            Value::Array(self.messages)
        } else {
            self.messages.into_iter().next().unwrap_or(Value::Null)
        };
        let mut response = ok(body)?;
        if let Some(r) = self.receipt {
            response.extensions_mut().insert(r);
        }
        Ok(response)
    }
}

/// The subscription manager.
pub struct PubSub {
    store: SharedStore,
    bus: Arc<dyn EventBus>,
    keep_alive: Option<Duration>,
    source: String,
    /// Deliveries are confirmed by the connection loop ([`PubSub::confirm_deliveries_on_send`]);
    /// otherwise (a server without it, e.g. warp's test harness) when the response is made.
    confirm_on_send: AtomicBool,
    watcher: Arc<LogWatcher>,
    /// Subscriptions in the store as last counted (`/metrics`).
    known: AtomicUsize,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

fn not_found(id: u64) -> ApiError {
    ApiError::not_found(format!(
        "Subscription id not found: 'Subscription {id} not found'"
    ))
}

/// Polls the log's last sequence number while `/listen`s wait, and tells them when it moved:
/// how replicas that share a store see each other's events without a bus between them.
#[derive(Debug)]
struct LogWatcher {
    last: watch::Sender<u64>,
    started: AtomicBool,
}

impl LogWatcher {
    /// A receiver that changes when the log grows; starts the polling task on first use. The
    /// task polls only while receivers exist, and ends with the manager.
    fn subscribe(
        self: &Arc<Self>,
        store: &SharedStore,
        bus: &Arc<dyn EventBus>,
    ) -> watch::Receiver<u64> {
        let rx = self.last.subscribe();
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(watch_log(Arc::downgrade(self), store.clone(), bus.clone()));
        }
        rx
    }
}

async fn watch_log(watcher: Weak<LogWatcher>, store: SharedStore, bus: Arc<dyn EventBus>) {
    let mut interval = LOG_POLL_MIN;
    loop {
        let Some(w) = watcher.upgrade() else { return };
        if w.last.receiver_count() == 0 {
            drop(w);
            interval = LOG_POLL_MIN;
            tokio::time::sleep(LOG_POLL_MAX).await;
            continue;
        }
        match store.last_event_sequence().await {
            Ok(seq) if seq != *w.last.borrow() => {
                w.last.send_replace(seq);
                interval = LOG_POLL_MIN;
            }
            Ok(_) => interval = (interval * 2).min(LOG_POLL_MAX),
            Err(e) => {
                tracing::debug!(error = %e, "log watcher: cannot read the last sequence");
                interval = LOG_POLL_MAX;
            }
        }
        let pause = if bus.wakes_other_processes() {
            LOG_POLL_WITH_BUS
        } else {
            interval
        };
        drop(w);
        tokio::time::sleep(pause).await;
    }
}

impl PubSub {
    /// A manager over `store`'s log and subscriptions, woken by `bus`.
    pub fn new(
        store: SharedStore,
        bus: Arc<dyn EventBus>,
        keep_alive: Option<Duration>,
        source: String,
    ) -> PubSub {
        PubSub {
            store,
            bus,
            keep_alive,
            source,
            confirm_on_send: AtomicBool::new(false),
            watcher: Arc::new(LogWatcher {
                last: watch::channel(0).0,
                started: AtomicBool::new(false),
            }),
            known: AtomicUsize::new(0),
        }
    }

    /// Deliveries are confirmed when the connection took the whole response
    /// ([`crate::serve::serve`] tells): called by [`crate::bind`].
    pub fn confirm_deliveries_on_send(&self) {
        self.confirm_on_send.store(true, Ordering::Relaxed);
    }

    fn confirming(&self) -> bool {
        self.confirm_on_send.load(Ordering::Relaxed)
    }

    /// The record `id` of `user`; 404 when there is none, 403 when it is another user's
    /// (upstream answered 500 for this client's mistake).
    async fn owned(&self, id: u64, user: &str) -> Result<SubscriptionRecord, ApiError> {
        let rec = self
            .store
            .get_subscription(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if rec.user != user {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("Subscription {id} not owned by {user}"),
            ));
        }
        Ok(rec)
    }

    /// The record `id` again (after a compare-and-set lost, or a wait); 404 when it is gone.
    async fn reread(&self, id: u64) -> Result<SubscriptionRecord, ApiError> {
        self.store
            .get_subscription(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// `POST /subscribe/{channel}`.
    pub async fn subscribe(
        &self,
        channel: &str,
        user: &str,
        promiscuous: bool,
        subscriber_id: Option<&str>,
    ) -> Result<SubState, ApiError> {
        let position = match subscriber_id {
            Some(sid) => {
                self.durable_position(sid, channel, user, promiscuous)
                    .await?
            }
            None => self.store.last_event_sequence().await?,
        };
        let mut record = SubscriptionRecord {
            id: 0,
            channel: channel.to_owned(),
            user: user.to_owned(),
            promiscuous,
            durable: subscriber_id.map(str::to_owned),
            position,
            sent: None,
            created: Timestamp::now(),
            last_poll: None,
            version: 0,
        };
        // The counter hands out each id once on MongoDB; a wire-compatible server that loses
        // concurrent increments (jongodb, two replicas subscribing at once) can repeat one,
        // which the insert refuses: take the next.
        let mut attempts = 0;
        let stored = loop {
            attempts += 1;
            record.id = self
                .store
                .increment_counter("kernelci-api-pubsub-id")
                .await?;
            match self.store.insert_subscription(record.clone()).await {
                Err(StoreError::Conflict(_)) if attempts < SUBSCRIBE_ATTEMPTS => {
                    tracing::debug!(id = record.id, "subscription id taken: the next one");
                }
                r => break r?,
            }
        };
        self.known.fetch_add(1, Ordering::Relaxed);
        Ok(SubState(stored))
    }

    /// Where the durable subscriber `sid` continues (created at the end of the log when new).
    async fn durable_position(
        &self,
        sid: &str,
        channel: &str,
        user: &str,
        promiscuous: bool,
    ) -> Result<u64, ApiError> {
        if let Some(mut state) = self.store.get_subscriber(sid).await? {
            if state.user != user {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("Subscriber id '{sid}' belongs to another user"),
                ));
            }
            if state.channel != channel || state.promiscuous != promiscuous {
                state.channel = channel.to_owned();
                state.promiscuous = promiscuous;
                self.store.put_subscriber(state.clone()).await?;
            }
            return Ok(state.last_event_id);
        }
        let last = self.store.last_event_sequence().await?;
        let state = SubscriberState {
            subscriber_id: sid.to_owned(),
            channel: channel.to_owned(),
            user: user.to_owned(),
            promiscuous,
            last_event_id: last,
            created_at: Timestamp::now(),
            last_poll: None,
        };
        self.store.put_subscriber(state).await?;
        Ok(last)
    }

    /// `POST /unsubscribe/{id}`: removes the subscription for every replica. Durable positions
    /// are kept.
    pub async fn unsubscribe(&self, id: u64, user: &str) -> Result<(), ApiError> {
        self.owned(id, user).await?;
        if !self.store.delete_subscription(id, None).await? {
            return Err(not_found(id));
        }
        let _ = self
            .known
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        // Wake waiting `/listen`s on it (on every replica, with Redis): they answer 404.
        if let Err(e) = self
            .bus
            .publish(SUBSCRIPTIONS_CHANNEL, &id.to_string())
            .await
        {
            tracing::debug!(error = %e, id, "unsubscribe notice not sent");
        }
        Ok(())
    }

    /// Moves the durable subscriber of `rec` (if any) to `position` (forward only).
    async fn ack_durable(&self, rec: &SubscriptionRecord, before: u64) -> Result<(), ApiError> {
        if let Some(d) = &rec.durable
            && rec.position > before
        {
            self.store.ack_subscriber(d, rec.position).await?;
        }
        Ok(())
    }

    /// `POST /ack/{id}` (our extension): acknowledges up to `sequence_id`.
    pub async fn ack(&self, id: u64, user: &str, sequence_id: u64) -> Result<(), ApiError> {
        let mut rec = self.owned(id, user).await?;
        loop {
            let before = rec.position;
            let mut next = rec.clone();
            next.position = next.position.max(sequence_id);
            if next.sent.is_some_and(|s| s.sequence_id <= next.position) {
                next.sent = None;
            }
            if next == rec {
                return Ok(());
            }
            match self.store.update_subscription(next).await? {
                Some(stored) => return self.ack_durable(&stored, before).await,
                None => rec = self.reread(id).await?,
            }
        }
    }

    /// The CloudEvent of a logged event. Its `id` is the UUID v4 logged with the event (or the
    /// one the publisher gave), its `time` the log entry's (or the publisher's), so every
    /// delivery of one event, live or replayed, carries the same id and time.
    pub fn cloud_event(&self, e: &StoredEvent) -> CloudEvent {
        let mut ev = CloudEvent::new(e.data.clone());
        let given = |k: &str| e.attributes.get(k).and_then(Value::as_str);
        ev.id = match given("id") {
            Some(id) => id.to_owned(),
            None => legacy_event_uuid(e.id.bytes()),
        };
        ev.time = Some(
            given("time")
                .and_then(|t| Timestamp::parse(t).ok())
                .unwrap_or(e.timestamp),
        );
        if let Some(v) = given("specversion") {
            v.clone_into(&mut ev.specversion);
        }
        ev.source = e
            .attributes
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or(&self.source)
            .to_owned();
        ev.ty = e
            .attributes
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_TYPE)
            .to_owned();
        for (k, v) in &e.attributes {
            if !matches!(
                k.as_str(),
                "source" | "type" | "id" | "time" | "specversion" | "owner" | "data"
            ) {
                ev.extensions.insert(k.clone(), v.clone());
            }
        }
        if let Some(owner) = &e.owner {
            ev = ev.with_owner(owner.clone());
        }
        ev.with_sequence_id(i64::try_from(e.sequence_id).unwrap_or(i64::MAX))
    }

    fn message(channel: &str, event: &CloudEvent) -> Value {
        json!({"type": "message", "pattern": null, "channel": channel, "data": event.to_json()})
    }

    /// What an implicit acknowledgement covers: the previous delivery once it is confirmed.
    /// An unconfirmed one is waited for (up to [`CONFIRM_WAIT`]: its replica may still be
    /// writing the confirmation); still unconfirmed, it is not acknowledged and will be sent
    /// again. `rec` is refreshed while waiting.
    async fn implicit_ack(&self, rec: &mut SubscriptionRecord) -> Result<Option<u64>, ApiError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match rec.sent {
                None => return Ok(None),
                Some(Delivery {
                    sequence_id,
                    confirmed: true,
                }) => return Ok(Some(sequence_id)),
                Some(Delivery { sequence_id, .. }) => {
                    if started.elapsed() >= CONFIRM_WAIT {
                        tracing::debug!(
                            id = rec.id,
                            sequence_id,
                            "the previous delivery was never confirmed: sending it again"
                        );
                        return Ok(None);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                    *rec = self.reread(rec.id).await?;
                }
            }
        }
    }

    /// `GET /listen/{id}`: acknowledges (see the module documentation), then returns the next
    /// event, or a BEEP after the keep-alive period. With `batch = Some(n)` (`?max=n`, our
    /// extension for catching up) it returns up to `n` events at once (at least one, as soon as
    /// one is there), recorded as one delivery: acknowledging the last acknowledges them all.
    pub async fn listen(
        &self,
        id: u64,
        user: &str,
        acknowledge: Option<u64>,
        batch: Option<usize>,
    ) -> Result<Listened, ApiError> {
        let max = batch.unwrap_or(1).clamp(1, MAX_BATCH);
        let mut rec = self.owned(id, user).await?;
        let acked = match acknowledge {
            Some(n) => n,
            None => self.implicit_ack(&mut rec).await?.unwrap_or(0),
        };
        let channel = rec.channel.clone();
        let filter = EventFilter {
            channel: Some(rec.channel.clone()),
            owner: (!rec.promiscuous).then(|| rec.user.clone()),
        };
        // Listen for wake-ups before reading the log, so nothing slips in between.
        let mut wakeups = self
            .bus
            .subscribe(&[channel.as_str(), SUBSCRIPTIONS_CHANNEL])
            .await
            .ok();
        let mut log = self.watcher.subscribe(&self.store, &self.bus);
        let deadline = self.keep_alive.map(|k| Instant::now() + k);
        let mut settled = false;
        let mut lease = Instant::now();
        loop {
            let before = rec.position;
            let position = before.max(acked);
            let next = self.store.events_after(position, &filter, max).await?;
            if let Some(last) = next.last() {
                let mut sending = rec.clone();
                sending.position = position;
                sending.sent = Some(Delivery {
                    sequence_id: last.sequence_id,
                    confirmed: !self.confirming(),
                });
                sending.last_poll = Some(Timestamp::now());
                match self.store.update_subscription(sending).await? {
                    Some(stored) => {
                        self.ack_durable(&stored, before).await?;
                        let receipt = self.confirming().then(|| self.confirm_later(stored));
                        return Ok(Listened {
                            messages: next
                                .iter()
                                .map(|e| PubSub::message(&channel, &self.cloud_event(e)))
                                .collect(),
                            batched: batch.is_some(),
                            receipt,
                        });
                    }
                    // Changed meanwhile (an ack, another replica): decide again.
                    None => {
                        rec = self.reread(id).await?;
                        continue;
                    }
                }
            }
            if !settled || lease.elapsed() >= LEASE_RENEW {
                // Nothing to send yet: store the acknowledgement and the poll time (the lease).
                let mut waiting = rec.clone();
                waiting.position = position;
                waiting.sent = None;
                waiting.last_poll = Some(Timestamp::now());
                match self.store.update_subscription(waiting).await? {
                    Some(stored) => {
                        // (`rec` is read again after the wait.)
                        self.ack_durable(&stored, before).await?;
                        settled = true;
                        lease = Instant::now();
                    }
                    None => {
                        rec = self.reread(id).await?;
                        continue;
                    }
                }
            }
            let mut wait = LEASE_RENEW.saturating_sub(lease.elapsed());
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    let beep = CloudEvent::beep().with_source(self.source.clone());
                    return Ok(Listened {
                        messages: vec![PubSub::message(&channel, &beep)],
                        batched: batch.is_some(),
                        receipt: None,
                    });
                }
                wait = wait.min(d - now);
            }
            // After an event wake-up the record is not read again: the compare-and-set of a
            // delivery fails if it changed (or went away), and then it is.
            if self.wait(&mut wakeups, &mut log, &channel, id, wait).await {
                rec = self.reread(id).await?;
            }
        }
    }

    /// Waits up to `wait` for a wake-up from the bus or the log watcher. Returns whether the
    /// subscription record should be read again (an unsubscribe notice for it, missed
    /// wake-ups, or the time is up).
    async fn wait(
        &self,
        wakeups: &mut Option<kernelci::events::Wakeups>,
        log: &mut watch::Receiver<u64>,
        channel: &str,
        id: u64,
        wait: Duration,
    ) -> bool {
        let bus = async {
            match wakeups.as_mut() {
                Some(w) => match w.recv_timeout(wait).await {
                    // An unsubscribe notice: the id, which the bus reads as a number.
                    Ok(Some(Wakeup::Event {
                        channel,
                        sequence_id,
                    })) if &*channel == SUBSCRIPTIONS_CHANNEL => {
                        u64::try_from(sequence_id).ok() == Some(id)
                    }
                    Ok(Some(Wakeup::Message { channel, payload }))
                        if &*channel == SUBSCRIPTIONS_CHANNEL =>
                    {
                        payload.parse::<u64>().ok() == Some(id)
                    }
                    Ok(Some(Wakeup::Missed)) | Ok(None) => true,
                    Ok(Some(_)) => false,
                    Err(_) => {
                        // The bus failed: the log watcher (and the timeout) still wake us.
                        *wakeups = None;
                        std::future::pending::<bool>().await
                    }
                },
                None => std::future::pending::<bool>().await,
            }
        };
        let reread = tokio::select! {
            reread = bus => reread,
            _ = log.changed() => false,
            () = tokio::time::sleep(wait) => true,
        };
        if wakeups.is_none() {
            *wakeups = self
                .bus
                .subscribe(&[channel, SUBSCRIPTIONS_CHANNEL])
                .await
                .ok();
        }
        reread
    }

    /// A receipt for the delivery recorded in `sent`: once the connection took the whole
    /// response, the delivery is marked confirmed; if the response never left whole, the
    /// delivery is withdrawn (the next `/listen` sends the event again without waiting).
    fn confirm_later(&self, sent: SubscriptionRecord) -> SendReceipt {
        let (receipt, answer) = SendReceipt::new();
        let store = self.store.clone();
        tokio::spawn(async move {
            let delivered = answer.await.unwrap_or(false);
            let Some(Delivery { sequence_id, .. }) = sent.sent else {
                return;
            };
            let mut rec = sent;
            // A few rounds: only a concurrent change of the same record makes one lose.
            for _ in 0..8 {
                if rec.sent.map(|s| s.sequence_id) != Some(sequence_id)
                    || rec.sent.is_some_and(|s| s.confirmed)
                {
                    return;
                }
                let mut next = rec.clone();
                next.sent = delivered.then_some(Delivery {
                    sequence_id,
                    confirmed: true,
                });
                match store.update_subscription(next).await {
                    Ok(Some(_)) => return,
                    Ok(None) => match store.get_subscription(rec.id).await {
                        Ok(Some(r)) => rec = r,
                        _ => return,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, id = rec.id, "cannot confirm a delivery; it will be sent again");
                        return;
                    }
                }
            }
        });
        receipt
    }

    /// Every stored subscription, every replica's (`/stats/subscriptions`).
    pub async fn stats(&self) -> Result<Vec<Value>, ApiError> {
        let all = self.store.list_subscriptions().await?;
        self.known.store(all.len(), Ordering::Relaxed);
        Ok(all
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "channel": s.channel, "user": s.user, "promiscuous": s.promiscuous,
                    "created": s.created, "last_poll": s.last_poll,
                })
            })
            .collect())
    }

    /// Removes subscriptions not polled (or, never polled, not used since creation) for
    /// `max_idle`, each only if unchanged since it was read (a replica serving it renews
    /// `last_poll`). Returns how many were removed.
    pub async fn cleanup_stale(&self, max_idle: Duration) -> usize {
        let all = match self.store.list_subscriptions().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "stale subscription sweep: cannot list subscriptions");
                return 0;
            }
        };
        let now = Timestamp::now().micros();
        let limit = i64::try_from(max_idle.as_micros()).unwrap_or(i64::MAX);
        let mut removed = 0;
        for s in &all {
            let last = s.last_poll.unwrap_or(s.created);
            if now.saturating_sub(last.micros()) > limit
                && let Ok(true) = self.store.delete_subscription(s.id, Some(s.version)).await
            {
                removed += 1;
            }
        }
        self.known.store(all.len() - removed, Ordering::Relaxed);
        removed
    }

    /// Wakes the listeners of `channel` after events were logged (`sequence_id` is a hint; 0
    /// when unknown). Bus errors are logged: listeners fall back to polling the log.
    pub async fn wake(&self, channel: &str, sequence_id: u64) {
        let seq = i64::try_from(sequence_id).unwrap_or(i64::MAX);
        if let Err(e) = self.bus.notify(channel, seq).await {
            tracing::warn!(error = %e, %channel, "event bus unavailable; listeners will poll the log");
        }
    }

    /// How many subscriptions the store held when last counted (the sweep counts every
    /// minute; this process's subscribes and unsubscribes count at once).
    pub fn len(&self) -> usize {
        self.known.load(Ordering::Relaxed)
    }

    /// Whether [`PubSub::len`] is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
