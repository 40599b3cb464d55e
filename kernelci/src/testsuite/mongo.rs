//! A MongoDB-wire test peer (features `testsuite` and `mongodb`).
//!
//! No genuine `mongod` can be installed on the project's machines; two wire-compatible servers
//! can: **jongodb** (npm `@jongodb/memory-server-bin-linux-x64-gnu`, one native binary, started
//! as a single-node replica set so transactions work) and **nx-27017** (PyPI). The harness
//! uses jongodb unless `KCI_MONGO_WIRE=nx-27017`. `scripts/test` installs them into the peer
//! directory ([`peers_dir`]); the harness only starts them.
//!
//! `KCI_MONGO_URI=mongodb://host:port/...` runs the same tests against an existing server (a
//! genuine MongoDB; a replica set, for the transaction tests): the harness reaches its first
//! host through a loopback [`TcpRelay`] (`directConnection=true`), so the tests that take the
//! server down ([`MongoPeer::stop`], [`MongoPeer::restart`]) cut and restore the relay instead,
//! and the test databases (`kci_test_*`) are dropped when the peer is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

#[cfg(doc)]
use super::peers::peers_dir;
use super::peers::{JONGODB, NX_27017, PeerProcess, free_port, installed_peer};
use super::relay::TcpRelay;
use crate::store::{MongoConfig, MongoStore};

pub use super::peers::{JONGODB_PACKAGE, NX_PACKAGE};
/// The environment variable naming an existing server to test against.
pub const MONGO_URI_VAR: &str = "KCI_MONGO_URI";

/// Which wire server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireServer {
    /// jongodb, as a single-node replica set.
    Jongodb,
    /// nx-27017 (standalone).
    Nx27017,
}

impl WireServer {
    /// From `KCI_MONGO_WIRE` (`jongodb`, the default, or `nx-27017`).
    pub fn from_env() -> WireServer {
        match std::env::var("KCI_MONGO_WIRE").as_deref() {
            Ok("nx-27017") | Ok("nx") => WireServer::Nx27017,
            _ => WireServer::Jongodb,
        }
    }

    /// The server's program under the peer directory, when installed.
    pub fn locate(self) -> Option<PathBuf> {
        installed_peer(match self {
            WireServer::Jongodb => {
                "jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb"
            }
            WireServer::Nx27017 => "nx-27017/bin/nx-27017",
        })
    }
}

/// An existing server named by `KCI_MONGO_URI`, reached through a relay.
#[derive(Debug)]
struct External {
    /// The URI as given (for clean-up, not through the relay).
    uri: String,
    /// The same URI with its first host replaced by the relay.
    relayed: String,
    relay: TcpRelay,
    /// The databases handed out by [`MongoPeer::config`], dropped with the peer.
    databases: Mutex<Vec<String>>,
}

/// Splits `mongodb://[user@]hosts[/db][?options]` and rewrites it to reach the first host
/// through `127.0.0.1:<relay_port>` directly. `Err` names what cannot be relayed.
fn relayed_uri(uri: &str, relay_port: u16) -> Result<(String, String), String> {
    let rest = uri.strip_prefix("mongodb://").ok_or_else(|| {
        format!(
            "{MONGO_URI_VAR} must be a mongodb://host:port/... URI (SRV records cannot be relayed)"
        )
    })?;
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let first = hosts.split(',').next().unwrap_or_default();
    if first.is_empty() {
        return Err(format!("{MONGO_URI_VAR} names no host"));
    }
    let has_port = match first.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => first.contains(':'),
    };
    let target = if has_port {
        first.to_owned()
    } else {
        format!("{first}:27017")
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, q),
        None => (tail, ""),
    };
    let mut options: Vec<&str> = query
        .split('&')
        .filter(|o| !o.is_empty())
        .filter(|o| {
            let key = o.split('=').next().unwrap_or_default().to_ascii_lowercase();
            key != "replicaset" && key != "directconnection"
        })
        .collect();
    if options.iter().any(|o| {
        let o = o.to_ascii_lowercase();
        o == "tls=true" || o == "ssl=true"
    }) {
        return Err(format!(
            "{MONGO_URI_VAR} with TLS cannot go through the harness's loopback relay (the \
             certificate names {first}, not 127.0.0.1)"
        ));
    }
    options.push("directConnection=true");
    let path = if path.is_empty() { "/" } else { path };
    let relayed = format!(
        "mongodb://{userinfo}127.0.0.1:{relay_port}{path}?{}",
        options.join("&")
    );
    Ok((target, relayed))
}

/// A running wire server on a loopback port.
#[derive(Debug)]
pub struct MongoPeer {
    /// Which server.
    pub server: WireServer,
    program: PathBuf,
    /// The process (`None` when `KCI_MONGO_URI` names an existing server).
    pub process: Option<PeerProcess>,
    /// The port it listens on (the relay's, for an existing server).
    pub port: u16,
    external: Option<External>,
}

fn command(server: WireServer, program: &Path, port: u16) -> Command {
    let mut cmd = Command::new(program);
    match server {
        WireServer::Jongodb => {
            cmd.arg("--host=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg("--topology-profile=singleNodeReplicaSet")
                .arg("--replica-set-name=rs0");
        }
        WireServer::Nx27017 => {
            cmd.args(["--db", "memory", "--host", "127.0.0.1", "-p"])
                .arg(port.to_string());
        }
    }
    cmd
}

impl MongoPeer {
    /// Starts the configured wire server on a free port, or relays to the server that
    /// `KCI_MONGO_URI` names. `None` when the wire server is missing and `KCI_ALLOW_MISSING`
    /// names `mongo` (see [`Peer::missing`](super::peers::Peer::missing)); a failure otherwise.
    pub fn start() -> Option<MongoPeer> {
        if let Ok(uri) = std::env::var(MONGO_URI_VAR) {
            return Some(MongoPeer::external(uri));
        }
        let server = WireServer::from_env();
        let Some(program) = server.locate() else {
            return match server {
                WireServer::Jongodb => JONGODB.missing(),
                WireServer::Nx27017 => NX_27017.missing(),
            };
        };
        let port = free_port();
        let mut peer = MongoPeer {
            server,
            program,
            process: None,
            port,
            external: None,
        };
        match peer.spawn() {
            Ok(()) => Some(peer),
            Err(e) => panic!("cannot start the MongoDB-wire server: {e}"),
        }
    }

    fn external(uri: String) -> MongoPeer {
        // The relay's port is chosen first, then the URI rewritten to it.
        let port = free_port();
        let (target, relayed) = relayed_uri(&uri, port).unwrap_or_else(|e| panic!("{e}"));
        let relay = TcpRelay::start_on(port, &target)
            .unwrap_or_else(|e| panic!("relay to {target} ({MONGO_URI_VAR}): {e}"));
        MongoPeer {
            server: WireServer::Jongodb,
            program: PathBuf::new(),
            process: None,
            port,
            external: Some(External {
                uri,
                relayed,
                relay,
                databases: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Whether this is an existing server named by `KCI_MONGO_URI`.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let cmd = command(self.server, &self.program, self.port);
        self.process = Some(PeerProcess::spawn("mongo-wire", cmd, self.port, dir)?);
        Ok(())
    }

    /// The connection string.
    pub fn uri(&self) -> String {
        if let Some(e) = &self.external {
            return e.relayed.clone();
        }
        match self.server {
            WireServer::Jongodb => format!("mongodb://127.0.0.1:{}/?replicaSet=rs0", self.port),
            WireServer::Nx27017 => format!("mongodb://127.0.0.1:{}/", self.port),
        }
    }

    /// Kills the server (by pid); for an existing server, cuts the relay.
    pub fn stop(&mut self) {
        if let Some(e) = &mut self.external {
            e.relay.stop();
        }
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// Starts it again on the same port (an in-memory server comes back empty; an existing
    /// server keeps its data).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        if let Some(e) = &mut self.external {
            return e.relay.restart();
        }
        self.spawn()
    }

    /// A configuration for a fresh database on this server, with short budgets for tests.
    pub fn config(&self) -> MongoConfig {
        let mut bytes = [0u8; 6];
        let _ = getrandom::fill(&mut bytes);
        let database = format!("kci_test_{}", hex::encode(bytes));
        if let Some(e) = &self.external
            && let Ok(mut list) = e.databases.lock()
        {
            list.push(database.clone());
        }
        let mut c = MongoConfig::new(self.uri(), database);
        c.server_selection_timeout = std::time::Duration::from_secs(3);
        c
    }

    /// A store on a fresh database of this server.
    pub async fn store(&self) -> MongoStore {
        match MongoStore::connect_with(self.config()).await {
            Ok(s) => s,
            Err(e) => panic!("cannot open a MongoStore on {}: {e}", self.uri()),
        }
    }
}

impl Drop for MongoPeer {
    /// For an existing server, drops the test databases handed out (from a thread of its own:
    /// the caller may be inside an async runtime).
    fn drop(&mut self) {
        let Some(external) = self.external.take() else {
            return;
        };
        let databases = external
            .databases
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        if databases.is_empty() {
            return;
        }
        let uri = external.uri.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(client) = mongodb::Client::with_uri_str(&uri).await else {
                    return;
                };
                for name in databases {
                    if let Err(e) = client.database(&name).drop().await {
                        eprintln!("could not drop the test database {name}: {e}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A fresh store on its own wire server, for `store_suite!(option ...)`: `None` when the
/// wire server is missing and allowed to be (see [`MongoPeer::start`]).
pub async fn fresh_store() -> Option<(MongoStore, MongoPeer)> {
    let peer = MongoPeer::start()?;
    let store = peer.store().await;
    Some((store, peer))
}
