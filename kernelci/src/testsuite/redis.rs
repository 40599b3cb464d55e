//! A real `redis-server` for tests, on a free loopback port, that can be killed and restarted
//! on the same port.

use std::process::Command;

use super::peers::{PeerProcess, REDIS, free_port};

/// A `redis-server` started with `--save '' --appendonly no` (nothing on disk) on 127.0.0.1.
/// Dropping it kills the process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    process: Option<PeerProcess>,
}

impl RedisServer {
    /// Starts a server on a free port. A missing `redis-server` fails the test, or, when
    /// `KCI_ALLOW_MISSING` names `redis`, is recorded as a skip and gives `None` (see
    /// [`Peer::missing`](super::peers::Peer::missing)). Panics if the server is installed but
    /// fails to start.
    pub fn start() -> Option<RedisServer> {
        REDIS.find("redis-server")?;
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
