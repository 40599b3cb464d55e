//! A real OpenSSH `sshd` on a free loopback port, for the SSH storage tests.
//!
//! Keys come from `ssh-keygen` (ed25519), the client key is the only authorized key, and a
//! known-hosts file listing the server's host key is written next to them. The daemon runs
//! with `-f /dev/null` (no system config), internal SFTP and legacy scp both available.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::peers::{PeerProcess, SSHD as SSHD_PEER, find_program, free_port};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd plus the files a client needs.
#[derive(Debug)]
pub struct SshdPeer {
    /// The daemon (killed on drop); its scratch dir holds keys and logs.
    pub process: PeerProcess,
    /// The user to log in as (the user running the tests).
    pub user: String,
    /// The client's private key (authorized on the server).
    pub client_key: PathBuf,
    /// A known-hosts file that lists the server's real host key for `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    /// A known-hosts file that lists a *different* key for the same host (a mismatch).
    pub wrong_known_hosts: PathBuf,
    /// An empty known-hosts file (the host is unknown).
    pub empty_known_hosts: PathBuf,
    /// A scratch directory to use as the storage root (absolute path).
    pub data_dir: PathBuf,
}

impl SshdPeer {
    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.process.port
    }
}

fn keygen(path: &Path) -> std::io::Result<String> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", "kernelci-test", "-f"])
        .arg(path)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "ssh-keygen failed: {status}"
        )));
    }
    let public = std::fs::read_to_string(path.with_extension("pub"))?;
    Ok(public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

fn current_user() -> std::io::Result<String> {
    let out = Command::new("id").arg("-un").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Starts sshd. A missing sshd fails the test, or, when `KCI_ALLOW_MISSING` names `sshd`,
/// is recorded as a skip and gives `None` (see [`Peer::missing`](super::peers::Peer::missing)).
/// Panics when sshd is installed but does not start.
pub fn start_sshd() -> Option<SshdPeer> {
    SSHD_PEER.require(find_program(SSHD).is_some() && find_program("ssh-keygen").is_some())?;
    match try_start() {
        Ok(peer) => Some(peer),
        Err(e) => panic!("sshd is installed but did not start: {e}"),
    }
}

fn try_start() -> std::io::Result<SshdPeer> {
    // Privilege separation directory, needed when sshd runs as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    let host_key = root.join("host_key");
    let host_pub = keygen(&host_key)?;
    let other_pub = keygen(&root.join("other_host_key"))?;
    let client_key = root.join("client_key");
    let client_pub = keygen(&client_key)?;
    let authorized = root.join("authorized_keys");
    std::fs::write(&authorized, format!("{client_pub}\n"))?;

    let port = free_port();
    let known_hosts = root.join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n"))?;
    let wrong_known_hosts = root.join("known_hosts_wrong");
    std::fs::write(
        &wrong_known_hosts,
        format!("[127.0.0.1]:{port} {other_pub}\n"),
    )?;
    let empty_known_hosts = root.join("known_hosts_empty");
    std::fs::write(&empty_known_hosts, "")?;
    let data_dir = root.join("data");
    std::fs::create_dir_all(&data_dir)?;

    let mut command = Command::new(SSHD);
    command
        .args(["-D", "-e", "-f", "/dev/null", "-p"])
        .arg(port.to_string())
        .arg("-h")
        .arg(&host_key)
        .args(["-o", "ListenAddress=127.0.0.1", "-o"])
        .arg(format!("PidFile={}", root.join("sshd.pid").display()))
        .arg("-o")
        .arg(format!("AuthorizedKeysFile={}", authorized.display()))
        .args(["-o", "StrictModes=no", "-o", "Subsystem=sftp internal-sftp"]);
    let process = PeerProcess::spawn("sshd", command, port, dir)?;
    Ok(SshdPeer {
        process,
        user: current_user()?,
        client_key,
        known_hosts,
        wrong_known_hosts,
        empty_known_hosts,
        data_dir,
    })
}
