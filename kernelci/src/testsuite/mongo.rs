//! A MongoDB-wire test peer (features `testsuite` and `mongodb`).
//!
//! No genuine `mongod` can be installed on the project's machines; two wire-compatible servers
//! can: **jongodb** (npm `@jongodb/memory-server-bin-linux-x64-gnu`, one native binary, started
//! as a single-node replica set so transactions work) and **nx-27017** (PyPI). The harness
//! uses jongodb unless `KCI_MONGO_WIRE=nx-27017`.
//!
//! Installation happens on first use when missing (`npm install` / `python3 -m venv` + `pip
//! install`) into the peer cache: `$KCI_PEERS_DIR`, else `/var/cache/kernelci-rs/peers`.
//! Set `KCI_MONGO_URI` to run against an existing server (genuine MongoDB) instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::peers::{PeerProcess, free_port, missing_peer};
use crate::store::{MongoConfig, MongoStore};

/// The jongodb npm package and version the harness installs.
pub const JONGODB_PACKAGE: &str = "@jongodb/memory-server-bin-linux-x64-gnu@0.1.6";
/// The nx-27017 PyPI requirement the harness installs.
pub const NX_PACKAGE: &str = "nx-27017==0.8.1";

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
}

/// The directory wire servers are installed in.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("KCI_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kernelci-rs/peers"))
}

static INSTALL: Mutex<()> = Mutex::new(());

fn jongodb_bin(dir: &Path) -> PathBuf {
    dir.join("jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb")
}

fn nx_bin(dir: &Path) -> PathBuf {
    dir.join("nx-27017/bin/nx-27017")
}

fn run(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The wire server's program, installed into [`peers_dir`] when missing (npm or pip).
pub fn locate_or_install(server: WireServer) -> Option<PathBuf> {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = peers_dir();
    match server {
        WireServer::Jongodb => {
            let bin = jongodb_bin(&dir);
            if !bin.is_file() {
                let target = dir.join("jongodb");
                std::fs::create_dir_all(&target).ok()?;
                run(Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", JONGODB_PACKAGE])
                    .current_dir(&target));
            }
            bin.is_file().then_some(bin)
        }
        WireServer::Nx27017 => {
            let bin = nx_bin(&dir);
            if !bin.is_file() {
                std::fs::create_dir_all(&dir).ok()?;
                let venv = dir.join("nx-27017");
                if run(Command::new("python3").arg("-m").arg("venv").arg(&venv)) {
                    run(Command::new(venv.join("bin/pip")).args(["install", "-q", NX_PACKAGE]));
                }
            }
            bin.is_file().then_some(bin)
        }
    }
}

/// A running wire server on a loopback port.
#[derive(Debug)]
pub struct MongoPeer {
    /// Which server.
    pub server: WireServer,
    program: PathBuf,
    /// The process (or `None` when `KCI_MONGO_URI` names an external server).
    pub process: Option<PeerProcess>,
    /// The port it listens on.
    pub port: u16,
    external_uri: Option<String>,
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
    /// Starts the configured wire server on a free port (installing it when missing). `None`
    /// (after a loud notice, or a panic under CI) when it cannot be installed.
    pub fn start() -> Option<MongoPeer> {
        if let Ok(uri) = std::env::var("KCI_MONGO_URI") {
            return Some(MongoPeer {
                server: WireServer::Jongodb,
                program: PathBuf::new(),
                process: None,
                port: 0,
                external_uri: Some(uri),
            });
        }
        let server = WireServer::from_env();
        let Some(program) = locate_or_install(server) else {
            return missing_peer(
                "MongoDB-wire server",
                &format!(
                    "npm install {JONGODB_PACKAGE} (in {})",
                    peers_dir().display()
                ),
            );
        };
        let port = free_port();
        let mut peer = MongoPeer {
            server,
            program,
            process: None,
            port,
            external_uri: None,
        };
        match peer.spawn() {
            Ok(()) => Some(peer),
            Err(e) => panic!("cannot start the MongoDB-wire server: {e}"),
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let cmd = command(self.server, &self.program, self.port);
        self.process = Some(PeerProcess::spawn("mongo-wire", cmd, self.port, dir)?);
        Ok(())
    }

    /// The connection string.
    pub fn uri(&self) -> String {
        if let Some(u) = &self.external_uri {
            return u.clone();
        }
        match self.server {
            WireServer::Jongodb => format!("mongodb://127.0.0.1:{}/?replicaSet=rs0", self.port),
            WireServer::Nx27017 => format!("mongodb://127.0.0.1:{}/", self.port),
        }
    }

    /// Kills the server (by pid).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// Starts it again on the same port (an in-memory server comes back empty).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// A configuration for a fresh database on this server, with short budgets for tests.
    pub fn config(&self) -> MongoConfig {
        let mut bytes = [0u8; 6];
        let _ = getrandom::fill(&mut bytes);
        let mut c = MongoConfig::new(self.uri(), format!("kci_test_{}", hex::encode(bytes)));
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

/// A fresh store on its own wire server, for `store_suite!(option ...)`: `None` when no
/// wire server can be installed here.
pub async fn fresh_store() -> Option<(MongoStore, MongoPeer)> {
    let peer = MongoPeer::start()?;
    let store = peer.store().await;
    Some((store, peer))
}
