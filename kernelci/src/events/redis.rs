//! [`RedisBus`]: the event bus over Redis (feature `redis`), for deployments with several
//! server replicas or pipeline services on other machines.
//!
//! - Wake-ups travel with `PUBLISH <prefix><channel> <message>`: [`EventBus::notify`] sends
//!   the sequence id as a bare decimal, [`EventBus::publish`] the payload as given.
//! - One dedicated pub/sub connection per bus receives them for every [`Wakeups`]. When Redis
//!   goes away it reconnects with exponential backoff, subscribes again to every channel, and
//!   sends [`Wakeup::Missed`] so listeners re-read the log.
//! - Commands go through a [`ConnectionManager`]; lists use `RPUSH` and `BLPOP` (each
//!   blocking pop on its own pooled connection, so pops never block other commands).
//! - Every operation is bounded by [`RedisBusConfig::op_timeout`]: with Redis down, calls fail
//!   with [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) instead of hanging.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{EventBus, EventError, Wakeup, Wakeups};
use crate::retry::Backoff;

/// Settings of a [`RedisBus`].
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Longest time any command (and any connection attempt) may take before it fails with
    /// `Unavailable`. Default 2 s.
    pub op_timeout: Duration,
    /// First delay before reconnecting the pub/sub connection. Default 50 ms.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts. Default 2 s.
    pub reconnect_max: Duration,
    /// How many wake-ups a slow receiver may fall behind before it gets [`Wakeup::Missed`].
    /// Default 4096.
    pub capacity: usize,
    /// Prepended to channel names on Redis (e.g. `kernelci-rs:` to share a Redis with other
    /// software). Default empty. List names are not prefixed (they are upstream's names).
    pub channel_prefix: String,
}

impl RedisBusConfig {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> RedisBusConfig {
        RedisBusConfig {
            url: url.into(),
            op_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            capacity: super::local::DEFAULT_CAPACITY,
            channel_prefix: String::new(),
        }
    }
}

/// The Redis event bus. Cheap to clone (clones share connections). See the module docs.
#[derive(Debug, Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisBusConfig,
    client: Client,
    commands: ConnectionManager,
    pop_pool: Arc<Mutex<Vec<MultiplexedConnection>>>,
    wakeups: broadcast::Sender<Wakeup>,
    control: mpsc::UnboundedSender<Subscribe>,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("config", &self.config)
            .field("connected", &*self.connected.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Subscribe {
    channels: Vec<String>,
    done: oneshot::Sender<()>,
}

const MAX_IDLE_POP_CONNECTIONS: usize = 16;

fn map_redis(err: RedisError) -> EventError {
    if err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_unrecoverable_error()
    {
        EventError::unavailable("cannot reach Redis", err)
    } else {
        EventError::Redis(err)
    }
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, EventError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(map_redis),
        Err(_) => Err(EventError::Unavailable {
            message: format!("Redis did not answer {what} within {limit:?}"),
            source: None,
        }),
    }
}

impl RedisBus {
    /// A bus on the Redis at `url` with default settings. Does not wait for Redis: the bus
    /// connects in the background and works as soon as Redis answers.
    pub fn new(url: &str) -> Result<RedisBus, EventError> {
        RedisBus::with_config(RedisBusConfig::new(url))
    }

    /// A bus with explicit settings. Fails only on a malformed URL. Must be called inside a
    /// tokio runtime.
    pub fn with_config(config: RedisBusConfig) -> Result<RedisBus, EventError> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| EventError::Invalid(format!("Redis URL '{}': {e}", config.url)))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.op_timeout))
            .set_response_timeout(Some(config.op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(config.reconnect_min)
            .set_max_delay(config.reconnect_max);
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| EventError::Invalid(format!("Redis connection settings: {e}")))?;
        let (wakeups, _) = broadcast::channel(config.capacity.max(1));
        let (control, control_rx) = mpsc::unbounded_channel();
        let (connected_tx, connected) = watch::channel(false);
        let task = tokio::spawn(pubsub_task(
            client.clone(),
            config.clone(),
            wakeups.clone(),
            control_rx,
            connected_tx,
        ));
        Ok(RedisBus {
            inner: Arc::new(Inner {
                config,
                client,
                commands,
                pop_pool: Arc::default(),
                wakeups,
                control,
                connected,
                task,
            }),
        })
    }

    /// A bus that has checked Redis answers (a `PING`), for start-up.
    pub async fn connect(url: &str) -> Result<RedisBus, EventError> {
        let bus = RedisBus::new(url)?;
        bus.ping().await?;
        Ok(bus)
    }

    /// Whether the pub/sub connection is up right now.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits up to `timeout` until the pub/sub connection is up; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut connected = self.inner.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The settings.
    pub fn config(&self) -> &RedisBusConfig {
        &self.inner.config
    }

    fn channel_key(&self, channel: &str) -> String {
        format!("{}{channel}", self.inner.config.channel_prefix)
    }

    async fn publish_raw(&self, channel: &str, message: &str) -> Result<(), EventError> {
        let mut conn = self.inner.commands.clone();
        let cmd = redis::cmd("PUBLISH")
            .arg(self.channel_key(channel))
            .arg(message)
            .clone();
        bounded(
            self.inner.config.op_timeout,
            "PUBLISH",
            cmd.query_async::<i64>(&mut conn),
        )
        .await
        .map(drop)
    }

    /// An idle pooled connection for a blocking pop (`true`), or a new one (`false`).
    async fn pop_connection(&self) -> Result<(MultiplexedConnection, bool), EventError> {
        let idle = self
            .inner
            .pop_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        match idle {
            Some(conn) => Ok((conn, true)),
            None => Ok((
                fresh_connection(&self.inner.client, self.inner.config.op_timeout).await?,
                false,
            )),
        }
    }
}

/// A new multiplexed connection without a response timeout (for blocking commands).
async fn fresh_connection(
    client: &Client,
    limit: Duration,
) -> Result<MultiplexedConnection, EventError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(None);
    bounded(
        limit,
        "a connection",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
}

/// Receives wake-ups for the bus: connect, subscribe to every wanted channel, forward
/// messages, and start over with backoff when the connection breaks.
async fn pubsub_task(
    client: Client,
    config: RedisBusConfig,
    wakeups: broadcast::Sender<Wakeup>,
    mut control: mpsc::UnboundedReceiver<Subscribe>,
    connected: watch::Sender<bool>,
) {
    let prefix = config.channel_prefix.clone();
    let mut channels: HashSet<String> = HashSet::new();
    let policy = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut delays = policy.delays();
    let mut was_connected = false;
    loop {
        let attempt = async {
            let pubsub = bounded(config.op_timeout, "a pub/sub connection", async {
                client.get_async_pubsub().await
            })
            .await?;
            let (mut sink, stream) = pubsub.split();
            if !channels.is_empty() {
                let keys: Vec<String> = channels.iter().map(|c| format!("{prefix}{c}")).collect();
                bounded(config.op_timeout, "SUBSCRIBE", sink.subscribe(keys)).await?;
            }
            Ok::<_, EventError>((sink, stream))
        };
        let (mut sink, mut stream) = match attempt.await {
            Ok(pair) => pair,
            Err(err) => {
                let backoff = delays.next().unwrap_or(config.reconnect_max);
                tracing::debug!(error = %err, "Redis pub/sub connection failed; retrying in {backoff:?}");
                // While down, accept subscriptions: they are subscribed on reconnection.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        request = control.recv() => match request {
                            Some(request) => {
                                channels.extend(request.channels);
                                let _ = request.done.send(());
                            }
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        delays = policy.delays();
        let _ = connected.send(true);
        if was_connected {
            tracing::info!("Redis pub/sub connection restored");
        }
        // Anything published while we were away (or before this connection) may be missed.
        let _ = wakeups.send(Wakeup::Missed);
        was_connected = true;
        let mut keepalive = tokio::time::interval(Duration::from_secs(5));
        keepalive.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(channel) = message.get_channel_name().strip_prefix(prefix.as_str()) else {
                        continue;
                    };
                    let payload = String::from_utf8_lossy(message.get_payload_bytes());
                    let _ = wakeups.send(Wakeup::decode(channel.into(), &payload));
                }
                request = control.recv() => {
                    let Some(request) = request else { return };
                    let new: Vec<String> = request
                        .channels
                        .into_iter()
                        .filter(|c| !channels.contains(c))
                        .collect();
                    if new.is_empty() {
                        let _ = request.done.send(());
                        continue;
                    }
                    let keys: Vec<String> = new.iter().map(|c| format!("{prefix}{c}")).collect();
                    let result = bounded(config.op_timeout, "SUBSCRIBE", sink.subscribe(keys)).await;
                    channels.extend(new);
                    let _ = request.done.send(());
                    if result.is_err() {
                        break;
                    }
                }
                _ = keepalive.tick() => {
                    // Subscribed, Redis answers PING with `["pong", ""]`, not `PONG`: any
                    // answer will do (reading it as a string failed and dropped the
                    // connection every 5 s).
                    if bounded(config.op_timeout, "PING", sink.ping::<redis::Value>()).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = connected.send(false);
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn notify(&self, channel: &str, sequence_id: i64) -> Result<(), EventError> {
        self.publish_raw(channel, &sequence_id.to_string()).await
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<(), EventError> {
        self.publish_raw(channel, payload).await
    }

    async fn subscribe<'c>(&self, channels: &'c [&'c str]) -> Result<Wakeups, EventError> {
        // The receiver exists before SUBSCRIBE is confirmed, so nothing falls in between.
        let wakeups = Wakeups::new(self.inner.wakeups.subscribe(), channels);
        let (done, confirmed) = oneshot::channel();
        let request = Subscribe {
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            done,
        };
        self.inner
            .control
            .send(request)
            .map_err(|_| EventError::Closed)?;
        // The task answers within one op_timeout (it bounds SUBSCRIBE) unless it is gone.
        confirmed.await.map_err(|_| EventError::Closed)?;
        Ok(wakeups)
    }

    async fn push(&self, list: &str, message: &str) -> Result<(), EventError> {
        let mut conn = self.inner.commands.clone();
        let cmd = redis::cmd("RPUSH").arg(list).arg(message).clone();
        bounded(
            self.inner.config.op_timeout,
            "RPUSH",
            cmd.query_async::<i64>(&mut conn),
        )
        .await
        .map(drop)
    }

    async fn pop(&self, list: &str, timeout: Duration) -> Result<Option<String>, EventError> {
        let limit = self.inner.config.op_timeout;
        if timeout < Duration::from_millis(1) {
            let mut conn = self.inner.commands.clone();
            let cmd = redis::cmd("LPOP").arg(list).clone();
            return bounded(limit, "LPOP", cmd.query_async::<Option<String>>(&mut conn)).await;
        }
        let (mut conn, pooled) = self.pop_connection().await?;
        let pool = self.inner.pop_pool.clone();
        let client = self.inner.client.clone();
        let list = list.to_owned();
        let (tx, rx) = oneshot::channel();
        // The BLPOP runs in its own task: if our caller goes away while Redis hands over an
        // item, the task puts the item back at the head of the list instead of losing it.
        tokio::spawn(async move {
            let cmd = redis::cmd("BLPOP")
                .arg(&list)
                .arg(format!("{:.3}", timeout.as_secs_f64()))
                .clone();
            let blpop = |conn: &mut MultiplexedConnection| {
                let mut conn = conn.clone();
                let cmd = cmd.clone();
                async move {
                    bounded(
                        timeout + limit,
                        "BLPOP",
                        cmd.query_async::<Option<(String, String)>>(&mut conn),
                    )
                    .await
                    .map(|item| item.map(|(_, value)| value))
                }
            };
            let mut result = blpop(&mut conn).await;
            // A pooled connection may predate a Redis restart: retry once on a new one.
            if pooled
                && result.is_err()
                && let Ok(fresh) = fresh_connection(&client, limit).await
            {
                conn = fresh;
                result = blpop(&mut conn).await;
            }
            let healthy = result.is_ok();
            if let Err(Ok(Some(item))) = tx.send(result) {
                let back = redis::cmd("LPUSH").arg(&list).arg(&item).clone();
                if let Err(err) = bounded(limit, "LPUSH", back.query_async::<i64>(&mut conn)).await
                {
                    tracing::error!(list, error = %err, "could not return a popped item to its list");
                }
            }
            if healthy {
                let mut idle = pool.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE_POP_CONNECTIONS {
                    idle.push(conn);
                }
            }
        });
        rx.await.map_err(|_| EventError::Closed)?
    }

    /// While the pub/sub connection is up: every replica on this Redis hears every wake-up.
    fn wakes_other_processes(&self) -> bool {
        self.is_connected()
    }

    async fn ping(&self) -> Result<(), EventError> {
        let mut conn = self.inner.commands.clone();
        bounded(
            self.inner.config.op_timeout,
            "PING",
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map(drop)
    }
}
