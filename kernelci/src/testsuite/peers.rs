//! Real test peers: processes started on free loopback ports and stopped by pid.
//!
//! A peer whose program is missing makes the test fail when the `CI` environment variable is
//! set (CI installs every peer), and is reported as skipped, loudly, elsewhere: see
//! [`missing_peer`].

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Whether a program is on `PATH` or at the given path.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let candidate = Path::new(name);
    if candidate.is_absolute() {
        return candidate.exists().then(|| candidate.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Reports a missing peer: panics under CI (`CI` set and not `false`), prints a loud skip
/// notice otherwise. Returns `None` so callers can write `let Some(p) = ... else { return };`.
pub fn missing_peer<T>(what: &str, install_hint: &str) -> Option<T> {
    let ci = std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false")
        .unwrap_or(false);
    if ci {
        panic!("test peer {what} is missing under CI; install it with: {install_hint}");
    }
    eprintln!("\n*** SKIPPED: test peer {what} is not installed ({install_hint}) ***\n");
    None
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A running peer process. Dropping it kills the process (by pid) and waits for it.
#[derive(Debug)]
pub struct PeerProcess {
    /// What it is, for messages.
    pub name: String,
    /// The loopback port it listens on.
    pub port: u16,
    child: Option<Child>,
    /// A scratch directory owned by the peer (data files, keys, logs), removed on drop.
    pub dir: tempfile::TempDir,
}

impl PeerProcess {
    /// Starts `command` (which must listen on `port`) and waits up to 20 s for the port to open.
    /// The process's stdout and stderr go to `<dir>/log`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        port: u16,
        dir: tempfile::TempDir,
    ) -> std::io::Result<PeerProcess> {
        let log = std::fs::File::create(dir.path().join("log"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut peer = PeerProcess {
            name: name.to_owned(),
            port,
            child: Some(child),
            dir,
        };
        if !wait_for_port(port, Duration::from_secs(20)) {
            let log = peer.log();
            peer.stop();
            return Err(std::io::Error::other(format!(
                "{name} did not open port {port}; its log:\n{log}"
            )));
        }
        Ok(peer)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A numeric field of `/proc/<pid>/status` (`None`: this process), e.g. `VmRSS`, `VmHWM`,
/// `RssAnon` (in kB) or `Threads`; `None` when the file or the field cannot be read. Used by
/// the memory measurements of the examples and benchmarks.
pub fn proc_status(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod proc_status_tests {
    use super::proc_status;

    #[test]
    fn reads_whole_field_names_only() {
        assert!(proc_status(None, "VmRSS").is_some_and(|kib| kib > 0));
        assert!(proc_status(None, "Threads").is_some_and(|n| n >= 1));
        assert_eq!(proc_status(None, "Vm"), None, "a prefix is not a field");
        assert_eq!(proc_status(None, "NoSuchField"), None);
        assert_eq!(proc_status(Some(u32::MAX), "VmRSS"), None);
    }
}
