//! Subscriptions over the durable event log.
//!
//! Every event is in the store's log with a sequence number before anyone is told about it; the
//! bus only wakes listeners (and when it is down, listeners poll the log every second). A
//! subscription is a position in the log:
//!
//! - fire-and-forget (upstream's default) starts at the end of the log when it is made;
//! - durable (`subscriber_id`) starts after the subscriber's acknowledged position, stored in
//!   the store, so it survives restarts and can move between server processes;
//! - `/listen` acknowledges what the previous `/listen` delivered (upstream's implicit ack), or
//!   exactly `acknowledge=N` when the client says so, and returns the next matching event; an
//!   event never acknowledged is delivered again after a re-subscribe;
//! - subscription records live in the store too, so `/listen/{id}` works on any replica and
//!   after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kernelci::events::{CloudEvent, DEFAULT_TYPE, EventBus, Wakeup, legacy_event_uuid};
use kernelci::models::Timestamp;
use kernelci::store::{EventFilter, SharedStore, StoreError, StoredEvent, SubscriberState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use warp::http::StatusCode;

use crate::http::ApiError;

const SUBS_NS: &str = "kci:subscriptions";
/// How often a waiting listener re-reads the log when no wake-up comes (bus down).
const POLL: Duration = Duration::from_secs(1);
/// Subscriptions not polled for this long are removed.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// A subscription's state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubState {
    /// Subscription id.
    pub id: u64,
    /// Channel.
    pub channel: String,
    /// Owner's username.
    pub user: String,
    /// Receives every owner's events.
    pub promiscuous: bool,
    /// Durable subscriber id, if any.
    pub durable: Option<String>,
    /// Acknowledged position in the log.
    pub position: u64,
    /// Delivered by the last `/listen`, not yet acknowledged.
    pub delivered: Option<u64>,
    /// Creation time.
    pub created: Timestamp,
    /// Last `/listen`.
    pub last_poll: Option<Timestamp>,
}

impl SubState {
    /// The upstream `Subscription` shape.
    pub fn subscription(&self) -> Value {
        json!({"id": self.id, "channel": self.channel, "user": self.user, "promiscuous": self.promiscuous})
    }
}

type Handle = Arc<tokio::sync::Mutex<SubState>>;

/// The subscription manager.
pub struct PubSub {
    store: SharedStore,
    bus: Arc<dyn EventBus>,
    keep_alive: Option<Duration>,
    source: String,
    subs: Mutex<HashMap<u64, Handle>>,
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::from(e)
}

impl PubSub {
    /// A manager over `store`'s log, woken by `bus`.
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
            subs: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn save(&self, s: &SubState) -> Result<(), ApiError> {
        let doc = serde_json::to_string(s).map_err(ApiError::internal)?;
        self.store
            .kv_set(SUBS_NS, &s.id.to_string(), &doc)
            .await
            .map_err(store_err)
    }

    async fn handle(&self, id: u64) -> Result<Option<Handle>, ApiError> {
        if let Some(h) = self.cache().get(&id).cloned() {
            return Ok(Some(h));
        }
        let Some(doc) = self
            .store
            .kv_get(SUBS_NS, &id.to_string())
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let state: SubState = serde_json::from_str(&doc).map_err(ApiError::internal)?;
        let h = Arc::new(tokio::sync::Mutex::new(state));
        Ok(Some(self.cache().entry(id).or_insert(h).clone()))
    }

    /// Another user's subscription: 403 (upstream answered 500 for a client's mistake).
    fn not_owned(id: u64, user: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Subscription {id} not owned by {user}"),
        )
    }

    fn not_found(id: u64) -> ApiError {
        ApiError::not_found(format!(
            "Subscription id not found: 'Subscription {id} not found'"
        ))
    }

    /// `POST /subscribe/{channel}`.
    pub async fn subscribe(
        &self,
        channel: &str,
        user: &str,
        promiscuous: bool,
        subscriber_id: Option<&str>,
    ) -> Result<SubState, ApiError> {
        let id = self
            .store
            .increment_counter("kernelci-api-pubsub-id")
            .await
            .map_err(store_err)?;
        let position = match subscriber_id {
            Some(sid) => match self.store.get_subscriber(sid).await.map_err(store_err)? {
                Some(mut state) => {
                    if state.user != user {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            format!("Subscriber id '{sid}' belongs to another user"),
                        ));
                    }
                    if state.channel != channel || state.promiscuous != promiscuous {
                        state.channel = channel.to_owned();
                        state.promiscuous = promiscuous;
                        self.store
                            .put_subscriber(state.clone())
                            .await
                            .map_err(store_err)?;
                    }
                    state.last_event_id
                }
                None => {
                    let last = self.store.last_event_sequence().await.map_err(store_err)?;
                    let state = SubscriberState {
                        subscriber_id: sid.to_owned(),
                        channel: channel.to_owned(),
                        user: user.to_owned(),
                        promiscuous,
                        last_event_id: last,
                        created_at: Timestamp::now(),
                        last_poll: None,
                    };
                    self.store.put_subscriber(state).await.map_err(store_err)?;
                    last
                }
            },
            None => self.store.last_event_sequence().await.map_err(store_err)?,
        };
        let state = SubState {
            id,
            channel: channel.to_owned(),
            user: user.to_owned(),
            promiscuous,
            durable: subscriber_id.map(str::to_owned),
            position,
            delivered: None,
            created: Timestamp::now(),
            last_poll: None,
        };
        self.save(&state).await?;
        self.cache()
            .insert(id, Arc::new(tokio::sync::Mutex::new(state.clone())));
        Ok(state)
    }

    /// `POST /unsubscribe/{id}`. Durable positions are kept.
    pub async fn unsubscribe(&self, id: u64, user: &str) -> Result<(), ApiError> {
        let h = self
            .handle(id)
            .await?
            .ok_or_else(|| PubSub::not_found(id))?;
        let s = h.lock().await;
        if s.user != user {
            return Err(PubSub::not_owned(id, user));
        }
        self.store
            .kv_delete(SUBS_NS, &id.to_string())
            .await
            .map_err(store_err)?;
        drop(s);
        self.cache().remove(&id);
        Ok(())
    }

    async fn acknowledge(&self, s: &mut SubState, upto: u64) -> Result<(), ApiError> {
        if upto > s.position {
            s.position = upto;
        }
        if let Some(d) = &s.durable {
            self.store
                .ack_subscriber(d, s.position)
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }

    /// `POST /ack/{id}` (our extension): acknowledges up to `sequence_id`.
    pub async fn ack(&self, id: u64, user: &str, sequence_id: u64) -> Result<(), ApiError> {
        let h = self
            .handle(id)
            .await?
            .ok_or_else(|| PubSub::not_found(id))?;
        let mut s = h.lock().await;
        if s.user != user {
            return Err(PubSub::not_owned(id, user));
        }
        self.acknowledge(&mut s, sequence_id).await?;
        if s.delivered.is_some_and(|d| d <= s.position) {
            s.delivered = None;
        }
        self.save(&s).await
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

    /// `GET /listen/{id}`: acknowledges, then waits for the next event (or a BEEP after the
    /// keep-alive period).
    pub async fn listen(
        &self,
        id: u64,
        user: &str,
        acknowledge: Option<u64>,
    ) -> Result<Value, ApiError> {
        let h = self
            .handle(id)
            .await?
            .ok_or_else(|| PubSub::not_found(id))?;
        // The subscription is locked only to read or move its position, never while waiting:
        // `/unsubscribe`, `/ack` and `/stats/subscriptions` must not wait for a long-poll.
        let (channel, filter) = {
            let mut s = h.lock().await;
            if s.user != user {
                return Err(PubSub::not_owned(id, user));
            }
            match acknowledge {
                Some(n) => self.acknowledge(&mut s, n).await?,
                None => {
                    if let Some(d) = s.delivered {
                        self.acknowledge(&mut s, d).await?;
                    }
                }
            }
            s.delivered = None;
            s.last_poll = Some(Timestamp::now());
            let filter = EventFilter {
                channel: Some(s.channel.clone()),
                owner: if s.promiscuous {
                    None
                } else {
                    Some(s.user.clone())
                },
            };
            (s.channel.clone(), filter)
        };
        // Subscribe to wake-ups before reading the log, so nothing slips in between.
        let mut wakeups = self.bus.subscribe(&[channel.as_str()]).await.ok();
        let deadline = self.keep_alive.map(|k| Instant::now() + k);
        loop {
            let wait = {
                let mut s = h.lock().await;
                if !self.cache().contains_key(&id) {
                    // Unsubscribed (or cleaned up) while we waited.
                    return Err(PubSub::not_found(id));
                }
                s.last_poll = Some(Timestamp::now());
                let next = self
                    .store
                    .events_after(s.position, &filter, 1)
                    .await
                    .map_err(store_err)?;
                if let Some(e) = next.into_iter().next() {
                    s.delivered = Some(e.sequence_id);
                    self.save(&s).await?;
                    return Ok(PubSub::message(&channel, &self.cloud_event(&e)));
                }
                match deadline {
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            self.save(&s).await?;
                            let beep = CloudEvent::beep().with_source(self.source.clone());
                            return Ok(PubSub::message(&channel, &beep));
                        }
                        POLL.min(d - now)
                    }
                    None => POLL,
                }
            };
            match wakeups.as_mut() {
                Some(w) => match w.recv_timeout(wait).await {
                    Ok(Some(Wakeup::Message { .. })) | Ok(Some(_)) | Ok(None) => {}
                    Err(_) => {
                        wakeups = None;
                        tokio::time::sleep(wait).await;
                    }
                },
                None => {
                    tokio::time::sleep(wait).await;
                    wakeups = self.bus.subscribe(&[channel.as_str()]).await.ok();
                }
            }
        }
    }

    /// The subscriptions this process serves (`/stats/subscriptions`).
    pub async fn stats(&self) -> Vec<Value> {
        let handles: Vec<Handle> = self.cache().values().cloned().collect();
        let mut out = Vec::new();
        for h in handles {
            let s = h.lock().await;
            out.push(json!({
                "id": s.id, "channel": s.channel, "user": s.user, "promiscuous": s.promiscuous,
                "created": s.created, "last_poll": s.last_poll,
            }));
        }
        out.sort_by_key(|v| v["id"].as_u64());
        out
    }

    /// Removes subscriptions not polled (or, never polled, not used since creation) for
    /// [`STALE_AFTER`]. Returns how many were removed.
    pub async fn cleanup_stale(&self, max_idle: Duration) -> usize {
        let handles: Vec<(u64, Handle)> =
            self.cache().iter().map(|(k, v)| (*k, v.clone())).collect();
        let now = Timestamp::now();
        let mut removed = 0;
        for (id, h) in handles {
            let Ok(s) = h.try_lock() else { continue };
            let last = s.last_poll.unwrap_or(s.created);
            let idle = now.micros().saturating_sub(last.micros());
            if idle > i64::try_from(max_idle.as_micros()).unwrap_or(i64::MAX) {
                drop(s);
                if self.store.kv_delete(SUBS_NS, &id.to_string()).await.is_ok() {
                    self.cache().remove(&id);
                    removed += 1;
                }
            }
        }
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

    /// How many subscriptions this process holds.
    pub fn len(&self) -> usize {
        self.cache().len()
    }

    /// Whether this process holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
