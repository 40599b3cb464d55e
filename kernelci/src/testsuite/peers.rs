//! Real test peers: processes started on free loopback ports and stopped by pid.
//!
//! Every peer a test needs is listed once, in [`PEERS`]: the name `KCI_ALLOW_MISSING` takes,
//! the program, and the command that installs it (`scripts/test` installs every one; tests and
//! this harness only start them). A missing peer **fails** the test with one line naming the
//! program and its install command ([`Peer::missing`]). Only a peer named in
//! `KCI_ALLOW_MISSING` (comma-separated names, or `all`) lets the test pass without running:
//! the skip is printed on stderr (past libtest's capture) and appended to the skip log
//! ([`skip_log`]), which `scripts/test` prints at the end of the run.

use std::io::Write;
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

/// The directory `scripts/test` installs the npm and PyPI peers in (jongodb, nx-27017, moto,
/// Azurite): `$KCI_PEERS_DIR`, else `/var/cache/kernelci-rs/peers`.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("KCI_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PEERS_DIR))
}

const DEFAULT_PEERS_DIR: &str = "/var/cache/kernelci-rs/peers";

/// `<peers_dir>/<relative>` when that file exists (a peer `scripts/test` installed there).
pub fn installed_peer(relative: &str) -> Option<PathBuf> {
    let path = peers_dir().join(relative);
    path.is_file().then_some(path)
}

/// How a peer is installed (by `scripts/test`, or by hand with the command it renders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Debian packages.
    Apt(&'static str),
    /// An npm package into `<peers_dir>/<dir>`.
    Npm {
        /// The directory under [`peers_dir`].
        dir: &'static str,
        /// The package and version.
        package: &'static str,
    },
    /// A PyPI requirement into a venv at `<peers_dir>/<venv>`.
    Pip {
        /// The venv directory under [`peers_dir`].
        venv: &'static str,
        /// The requirement.
        requirement: &'static str,
    },
    /// A command of this repository (run from its root).
    Command(&'static str),
}

impl Install {
    /// The shell command that installs it.
    pub fn command(&self) -> String {
        let peers = peers_dir().display().to_string();
        // The failure message names the command; only scripts/test runs it.
        match self {
            Install::Apt(packages) => format!("apt-get install -y {packages}"),
            Install::Npm { dir, package } => {
                format!("mkdir -p {peers}/{dir} && cd {peers}/{dir} && npm install {package}")
            }
            Install::Pip { venv, requirement } => format!(
                "python3 -m venv {peers}/{venv} && {peers}/{venv}/bin/pip install '{requirement}'"
            ),
            Install::Command(command) => (*command).to_owned(),
        }
    }
}

/// One kind of test peer: what is missing, how to install it, and the name that allows it to
/// be missing (`KCI_ALLOW_MISSING=<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The name `KCI_ALLOW_MISSING` takes (`redis`, `docker`, ...).
    pub name: &'static str,
    /// What is missing, as the failure says it (`redis-server`).
    pub program: &'static str,
    /// How it is installed.
    pub install: Install,
    /// Whether `scripts/test` installs it (every peer but a LAVA lab, which `scripts/lava-up`
    /// brings up).
    pub installed_by_scripts_test: bool,
}

/// The jongodb npm package and version `scripts/test` installs.
pub const JONGODB_PACKAGE: &str = "@jongodb/memory-server-bin-linux-x64-gnu@0.1.6";
/// The nx-27017 PyPI requirement `scripts/test` installs.
pub const NX_PACKAGE: &str = "nx-27017==0.8.1";
/// The moto PyPI requirement `scripts/test` installs.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";
/// The Azurite npm package `scripts/test` installs.
pub const AZURITE_PACKAGE: &str = "azurite@3.37.0";

/// `redis-server` (the Redis event bus tests).
pub const REDIS: Peer = Peer {
    name: "redis",
    program: "redis-server",
    install: Install::Apt("redis-server"),
    installed_by_scripts_test: true,
};
/// OpenSSH's `sshd` and `ssh-keygen` (SSH storage, the SSH custom runtime).
pub const SSHD: Peer = Peer {
    name: "sshd",
    program: "/usr/sbin/sshd (with ssh-keygen)",
    install: Install::Apt("openssh-server"),
    installed_by_scripts_test: true,
};
/// `dockerd`, `docker` and a static `busybox` for the images (the Docker runtime).
pub const DOCKER: Peer = Peer {
    name: "docker",
    program: "dockerd (with docker and busybox)",
    install: Install::Apt("docker.io busybox-static"),
    installed_by_scripts_test: true,
};
/// jongodb, the default MongoDB-wire server (the MongoDB store).
pub const JONGODB: Peer = Peer {
    name: "mongo",
    program: "jongodb (MongoDB-wire server)",
    install: Install::Npm {
        dir: "jongodb",
        package: JONGODB_PACKAGE,
    },
    installed_by_scripts_test: true,
};
/// nx-27017, the other MongoDB-wire server (`KCI_MONGO_WIRE=nx-27017`).
pub const NX_27017: Peer = Peer {
    name: "mongo",
    program: "nx-27017 (MongoDB-wire server)",
    install: Install::Pip {
        venv: "nx-27017",
        requirement: NX_PACKAGE,
    },
    installed_by_scripts_test: true,
};
/// moto's standalone server (S3 storage).
pub const MOTO: Peer = Peer {
    name: "moto",
    program: "moto_server (S3-compatible server)",
    install: Install::Pip {
        venv: "moto",
        requirement: MOTO_REQUIREMENT,
    },
    installed_by_scripts_test: true,
};
/// Azurite's blob service (Azure Blob storage).
pub const AZURITE: Peer = Peer {
    name: "azurite",
    program: "azurite-blob (Azure Storage emulator)",
    install: Install::Npm {
        dir: "azurite",
        package: AZURITE_PACKAGE,
    },
    installed_by_scripts_test: true,
};
/// Debian's Python with aiosmtpd (the SMTP server of the mail tests).
pub const SMTP: Peer = Peer {
    name: "smtp",
    program: "aiosmtpd (python3 -m aiosmtpd, in /usr/bin/python3)",
    install: Install::Apt("python3-aiosmtpd"),
    installed_by_scripts_test: true,
};
/// The kcidb-io PyPI requirement `scripts/test` installs.
pub const KCIDB_IO_REQUIREMENT: &str = "kcidb-io==141";
/// kcidb-io, KCIDB's own schema library (the KCIDB tests validate every document with it).
pub const KCIDB_IO: Peer = Peer {
    name: "kcidb",
    program: "kcidb-io (KCIDB schema validator, in a venv)",
    install: Install::Pip {
        venv: "kcidb-io",
        requirement: KCIDB_IO_REQUIREMENT,
    },
    installed_by_scripts_test: true,
};
/// Headless Chromium (the viewer test).
pub const CHROMIUM: Peer = Peer {
    name: "chromium",
    program: "chromium",
    install: Install::Apt("chromium"),
    installed_by_scripts_test: true,
};
/// `python3` (upstream's client protocol script).
pub const PYTHON3: Peer = Peer {
    name: "python3",
    program: "python3",
    install: Install::Apt("python3"),
    installed_by_scripts_test: true,
};
/// The `git` command (kernel trees made by the tests).
pub const GIT: Peer = Peer {
    name: "git",
    program: "git",
    install: Install::Apt("git"),
    installed_by_scripts_test: true,
};
/// GNU `make` (the demo tree's Makefile).
pub const MAKE: Peer = Peer {
    name: "make",
    program: "make",
    install: Install::Apt("make"),
    installed_by_scripts_test: true,
};
/// The `kci` binary, built next to the test binaries (the job runner tests).
pub const KCI: Peer = Peer {
    name: "kci",
    program: "the kci binary (target/<profile>/kci, or $KCI_BIN)",
    install: Install::Command("cargo build -p kernelci-bins --bin kci"),
    installed_by_scripts_test: true,
};
/// HAProxy, the load balancer in front of the server replicas (the scale-out tests).
pub const HAPROXY: Peer = Peer {
    name: "haproxy",
    program: "haproxy",
    install: Install::Apt("haproxy"),
    installed_by_scripts_test: true,
};
/// A real LAVA lab (the opt-in real-LAVA tests, run by `scripts/reliability`).
pub const LAVA: Peer = Peer {
    name: "lava",
    program: "a LAVA server at $LAVA_URL (default http://127.0.0.1:8000)",
    install: Install::Command("./scripts/lava-up"),
    installed_by_scripts_test: false,
};

/// Every test peer, once: the names `KCI_ALLOW_MISSING` accepts come from here.
pub const PEERS: &[Peer] = &[
    REDIS, SSHD, DOCKER, JONGODB, NX_27017, MOTO, AZURITE, KCIDB_IO, SMTP, CHROMIUM, PYTHON3, GIT,
    MAKE, KCI, HAPROXY, LAVA,
];

/// The environment variable that lets listed peers be missing.
pub const ALLOW_MISSING_VAR: &str = "KCI_ALLOW_MISSING";
/// The environment variable naming the skip log.
pub const SKIP_LOG_VAR: &str = "KCI_SKIP_LOG";

/// The names in `KCI_ALLOW_MISSING` (empty when unset). Panics, naming the valid names, on a
/// name that is not in [`PEERS`] (a typo must not silently skip nothing or everything).
pub fn allowed_missing() -> Vec<String> {
    let raw = std::env::var(ALLOW_MISSING_VAR).unwrap_or_default();
    let names: Vec<String> = raw
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in &names {
        if name != "all" && !PEERS.iter().any(|p| p.name == name) {
            let mut valid: Vec<&str> = PEERS.iter().map(|p| p.name).collect();
            valid.dedup();
            panic!(
                "{ALLOW_MISSING_VAR}={raw}: unknown peer {name:?}; the names are {} or all",
                valid.join(", ")
            );
        }
    }
    names
}

/// Where skipped tests are recorded: `$KCI_SKIP_LOG`, else `kci-skipped-peers.log` in the
/// target profile directory of the running test binary (`target/debug/`).
pub fn skip_log() -> PathBuf {
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test>-<hash> (tests, benches) or target/<profile>/examples/<x>
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("."))
        .join("kci-skipped-peers.log")
}

/// `<binary>::<test>` for the running test (libtest names each test's thread after it).
fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|e| e.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_else(|| "?".to_owned());
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => binary,
    }
}

impl Peer {
    /// The install command, with the peer directory filled in.
    pub fn install_command(&self) -> String {
        self.install.command()
    }

    /// The one line a missing peer fails with: the program and the command that installs it.
    pub fn missing_message(&self) -> String {
        self.not_found(&format!(
            "{ALLOW_MISSING_VAR}={} lets the test pass without running",
            self.name
        ))
    }

    /// `<program> not found: <install> (<where else>; <note>)`.
    fn not_found(&self, note: &str) -> String {
        let also = if self.installed_by_scripts_test {
            "or run ./scripts/test, which installs every test peer"
        } else {
            "scripts/test does not install it"
        };
        format!(
            "{} not found: {} ({also}; {note})",
            self.program,
            self.install_command()
        )
    }

    /// Whether `KCI_ALLOW_MISSING` names this peer (or `all`).
    pub fn allowed_missing(&self) -> bool {
        allowed_missing()
            .iter()
            .any(|n| n == "all" || n == self.name)
    }

    /// The peer is missing: panics with [`Peer::missing_message`], unless `KCI_ALLOW_MISSING`
    /// names it; then records the skip (a line on stderr that libtest does not capture, and a
    /// line in [`skip_log`]) and returns `None`, so the caller returns without running:
    /// `let Some(x) = find() else { return REDIS.missing() };`.
    pub fn missing<T>(&self) -> Option<T> {
        if !self.allowed_missing() {
            panic!("{}", self.missing_message());
        }
        let line = format!(
            "{}: did not run, {} missing (peer {} allowed by {ALLOW_MISSING_VAR}; install: {})\n",
            current_test(),
            self.program,
            self.name,
            self.install_command()
        );
        // Straight to the stderr handle: `eprintln!` would be captured by libtest.
        let _ = write!(std::io::stderr(), "SKIPPED {line}");
        let log = skip_log();
        if let Some(dir) = log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            // One write per line, so parallel tests' lines do not interleave.
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(
                std::io::stderr(),
                "cannot record the skip in {}: {e}",
                log.display()
            );
        }
        None
    }

    /// `Some(())` when `present`, else [`Peer::missing`].
    pub fn require(&self, present: bool) -> Option<()> {
        if present { Some(()) } else { self.missing() }
    }

    /// The program `name` on `PATH` (or at that absolute path), else [`Peer::missing`].
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        match find_program(name) {
            Some(path) => Some(path),
            None => self.missing(),
        }
    }

    /// The program `name`, for helpers that cannot skip their test: panics with
    /// [`Peer::missing_message`] when it is missing, whatever `KCI_ALLOW_MISSING` says.
    pub fn expect_program(&self, name: &str) -> PathBuf {
        find_program(name)
            .unwrap_or_else(|| panic!("{}", self.not_found("needed by a helper that cannot skip")))
    }
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

#[cfg(test)]
mod peer_table_tests {
    use super::*;

    #[test]
    fn every_name_is_short_and_every_install_is_named() {
        for peer in PEERS {
            assert!(
                !peer.name.is_empty()
                    && peer
                        .name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{peer:?}"
            );
            assert!(!peer.install_command().is_empty(), "{peer:?}");
        }
    }

    #[test]
    fn the_failure_names_the_program_and_its_install_command() {
        let line = REDIS.missing_message();
        assert!(
            line.starts_with(
                "redis-server not found: apt-get install -y redis-server (or run ./scripts/test"
            ),
            "{line}"
        );
        assert!(line.contains("KCI_ALLOW_MISSING=redis"), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
        assert!(
            LAVA.missing_message()
                .contains("./scripts/lava-up (scripts/test does not install it"),
            "{}",
            LAVA.missing_message()
        );
    }
}
