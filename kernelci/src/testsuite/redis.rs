//! A real `redis-server` for tests, on a free loopback port, that can be killed and restarted
//! on the same port.

use std::process::Command;

use super::peers::{PeerProcess, find_program, free_port, missing_peer};

/// How to install the peer, for the skip notice.
pub const INSTALL_HINT: &str = "apt-get install -y redis-server";

/// A `redis-server` started with `--save '' --appendonly no` (nothing on disk) on 127.0.0.1.
/// Dropping it kills the process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    process: Option<PeerProcess>,
}

impl RedisServer {
    /// Starts a server on a free port, or reports the peer missing (see [`missing_peer`]:
    /// a failure under CI, a loud skip elsewhere) and returns `None`. Panics if the server is
    /// installed but fails to start.
    pub fn start() -> Option<RedisServer> {
        if find_program("redis-server").is_none() {
            return missing_peer("redis-server", INSTALL_HINT);
        }
        let mut server = RedisServer {
            port: free_port(),
            process: None,
        };
        if let Err(err) = server.restart() {
            panic!("redis-server did not start: {err}");
        }
        Some(server)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL, so clients see the connection drop as in a crash).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the server again on the same port (killing it first if it runs). The data is
    /// gone: nothing is saved.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let dir = tempfile::Builder::new().prefix("redis-peer").tempdir()?;
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        self.process = Some(PeerProcess::spawn("redis-server", command, self.port, dir)?);
        Ok(())
    }

    /// Whether the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(PeerProcess::is_running)
    }
}
