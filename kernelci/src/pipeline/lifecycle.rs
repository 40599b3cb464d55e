//! The life cycle of a service process: the [`Shutdown`] signal (SIGINT/SIGTERM) shared by
//! its loops, the [`Liveness`] register those loops beat, and the `GET /health` endpoint
//! ([`serve_health`]) that reports it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::client::ListenerHealth;
use crate::models::Timestamp;

/// A shutdown signal shared by every loop of a service. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Asks every loop to stop after its current step.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until a stop is asked for.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // The sender lives as long as `self`, so this only ends on `true`.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Triggers on SIGINT (Ctrl-C) or SIGTERM. Needs a tokio runtime.
    pub fn on_signals(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let name = wait_for_signal().await;
            tracing::info!(signal = name, "stopping after the current step");
            me.trigger();
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the service");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

#[derive(Debug)]
struct Component {
    last_beat: Instant,
    listener: Option<Arc<Mutex<ListenerHealth>>>,
}

/// The liveness register: each loop of a service registers a component and beats; the service
/// is alive while every component made progress within [`Liveness::stuck_after`]. A listener's
/// contacts with the server (events and keep-alives) count as progress.
#[derive(Debug, Clone)]
pub struct Liveness {
    components: Arc<Mutex<BTreeMap<String, Component>>>,
    stuck_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new(Duration::from_secs(600))
    }
}

impl Liveness {
    /// A register that calls a component stuck after `stuck_after` without progress
    /// (upstream's watchdog uses 600 s).
    pub fn new(stuck_after: Duration) -> Liveness {
        Liveness {
            components: Arc::default(),
            stuck_after,
        }
    }

    /// How long a component may go without progress.
    pub fn stuck_after(&self) -> Duration {
        self.stuck_after
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Component>) -> R) -> Option<R> {
        self.components.lock().ok().map(|mut c| f(&mut c))
    }

    /// Registers (or resets) a component.
    pub fn register(&self, name: &str) {
        self.with(|c| {
            c.insert(
                name.to_owned(),
                Component {
                    last_beat: Instant::now(),
                    listener: None,
                },
            )
        });
    }

    /// Registers a component whose listener's server contacts count as progress.
    pub fn register_listener(&self, name: &str, health: Arc<Mutex<ListenerHealth>>) {
        self.with(|c| {
            c.insert(
                name.to_owned(),
                Component {
                    last_beat: Instant::now(),
                    listener: Some(health),
                },
            )
        });
    }

    /// Removes a component (its loop ended cleanly).
    pub fn deregister(&self, name: &str) {
        self.with(|c| c.remove(name));
    }

    /// Notes progress of a component (long steps call this from their progress callbacks).
    pub fn beat(&self, name: &str) {
        self.with(|c| {
            if let Some(comp) = c.get_mut(name) {
                comp.last_beat = Instant::now();
            }
        });
    }

    /// How long ago each component last made progress.
    pub fn ages(&self) -> BTreeMap<String, Duration> {
        let now_wall = Timestamp::now();
        self.with(|c| {
            c.iter()
                .map(|(name, comp)| {
                    let mut age = comp.last_beat.elapsed();
                    let contact = comp
                        .listener
                        .as_ref()
                        .and_then(|h| h.lock().ok().and_then(|h| h.last_contact));
                    if let Some(contact) = contact {
                        let micros = (now_wall.micros() - contact.micros()).max(0);
                        age = age.min(Duration::from_micros(micros.unsigned_abs()));
                    }
                    (name.clone(), age)
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// `Ok` when every component is alive; otherwise the stuck ones, with their ages.
    pub fn check(&self) -> Result<(), String> {
        let stuck: Vec<String> = self
            .ages()
            .into_iter()
            .filter(|(_, age)| *age > self.stuck_after)
            .map(|(name, age)| format!("{name} stuck for {}s", age.as_secs()))
            .collect();
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(stuck.join(", "))
        }
    }
}

/// Serves `GET /health` on `listener` until `shutdown`: `200 OK` while `liveness` is alive,
/// `503` with the stuck components otherwise; `GET /metrics`: `metrics` in the Prometheus
/// text format; `404` for other paths.
pub async fn serve_health(
    listener: TcpListener,
    liveness: Liveness,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let (liveness, metrics) = (liveness.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(512);
            let mut chunk = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, body) = match (method, path) {
                ("GET" | "HEAD", "/health") => match liveness.check() {
                    Ok(()) => ("200 OK", "OK".to_owned()),
                    Err(stuck) => ("503 Service Unavailable", stuck),
                },
                ("GET" | "HEAD", "/metrics") => ("200 OK", metrics.render()),
                _ => ("404 Not Found", "Not Found".to_owned()),
            };
            let body = if method == "HEAD" { "" } else { body.as_str() };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_reports_stuck_components() {
        let l = Liveness::new(Duration::from_millis(30));
        assert!(l.check().is_ok(), "empty register is alive");
        l.register("a");
        assert!(l.check().is_ok());
        std::thread::sleep(Duration::from_millis(50));
        let err = l.check().unwrap_err();
        assert!(err.contains("a stuck"), "{err}");
        l.beat("a");
        assert!(l.check().is_ok());
        // A listener's last contact with the server counts as progress.
        let health = Arc::new(Mutex::new(ListenerHealth::default()));
        l.register_listener("b", health.clone());
        std::thread::sleep(Duration::from_millis(50));
        health.lock().unwrap().last_contact = Some(Timestamp::now());
        l.beat("a");
        assert!(l.check().is_ok(), "{:?}", l.ages());
        l.deregister("a");
        l.deregister("b");
        assert!(l.ages().is_empty());
    }
}
