//! Helpers shared by the cross-crate tests: a real API server on a loopback port.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kernelci::events::LocalBus;
use kernelci::store::SqliteStore;
use kernelci_server::App;
use kernelci_server::config::ServerConfig;
use tokio::sync::oneshot;

/// The admin password of test servers.
pub const ADMIN_PASSWORD: &str = "admin-password";

/// Installs the TLS provider reqwest needs (idempotent).
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running API server on its own runtime and thread (like a separate process: stopping it
/// cuts every connection); dropping it stops it.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database file.
    pub db: PathBuf,
    /// The application.
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server over the SQLite file `db`, on `addr` (port 0 for any).
    pub async fn start(db: &Path, addr: SocketAddr, keep_alive: u64) -> TestServer {
        init_tls();
        let store = SqliteStore::open(db).expect("open store");
        let config = ServerConfig {
            initial_password: Some(ADMIN_PASSWORD.into()),
            keep_alive_period: keep_alive,
            ..ServerConfig::for_tests()
        };
        let app = App::new(
            config,
            Arc::new(store.clone()),
            Arc::new(store),
            Arc::new(LocalBus::new()),
        )
        .expect("app");
        app.bootstrap().await.expect("bootstrap");
        let (tx, rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let app2 = app.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let bound = kernelci_server::bind(app2, addr, async {
                    let _ = rx.await;
                });
                match bound {
                    Ok((bound, server)) => {
                        let _ = ready_tx.send(Ok(bound));
                        let _ = server.await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
            // Dropping the runtime ends every connection task, as a process exit would.
            rt.shutdown_background();
        });
        let bound = ready_rx.recv().expect("server thread").expect("bind");
        TestServer {
            addr: bound,
            db: db.to_path_buf(),
            app,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits until it stopped serving.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A `Write` a test can read while `kci up` (or anything else) writes to it; clones share the
/// buffer.
#[derive(Clone, Default)]
pub struct CapturedOutput(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedOutput {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The `kci` binary: `$KCI_BIN`, else the one cargo built next to the test binaries.
pub fn kci_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("KCI_BIN") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("kci");
    candidate.is_file().then_some(candidate)
}
