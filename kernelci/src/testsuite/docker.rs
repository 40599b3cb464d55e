//! A real Docker Engine for tests (`recipes/docker-engine.sh`): `dockerd` with its own data
//! and exec roots and a unix socket in a temporary directory, the `vfs` storage driver, no
//! iptables and no bridge, so it runs on a bare root machine without systemd or a registry.
//!
//! Images are built locally with `docker import` from a root filesystem the test makes
//! ([`busybox_rootfs`], [`add_binary_with_libs`]). Containers reach loopback services with
//! `network_mode: host` (there is no bridge).
//!
//! A missing `dockerd`, `docker` or `busybox` fails the test, or, when `KCI_ALLOW_MISSING`
//! names `docker`, is recorded as a skip ([`super::peers::Peer::missing`]); `scripts/test`
//! installs them (`docker.io`, `busybox-static`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::peers::{DOCKER, find_program};

/// A running `dockerd`; dropping it stops it (SIGTERM by pid, then waits; dockerd stops its
/// own containerd).
#[derive(Debug)]
pub struct DockerEngine {
    /// The scratch directory (data, exec root, socket, log).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl DockerEngine {
    /// Starts a private `dockerd` and waits until it answers (up to 60 s). `None` when the
    /// peer is missing and `KCI_ALLOW_MISSING` names `docker` (see
    /// [`Peer::missing`](super::peers::Peer::missing)); a failure otherwise.
    pub fn start() -> Option<DockerEngine> {
        DOCKER.require(
            ["dockerd", "docker", "busybox"]
                .iter()
                .all(|p| find_program(p).is_some()),
        )?;
        // Unix socket paths are limited to 108 bytes: keep the directory short.
        let dir = tempfile::Builder::new()
            .prefix("kci-d")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        for sub in ["data", "exec"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dockerd directories");
        }
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("dockerd log");
        let socket = dir.path().join("docker.sock");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let mut engine = DockerEngine {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if engine
                .cli()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Some(engine);
            }
            if Instant::now() > deadline || !engine.is_running() {
                let log = engine.log();
                engine.stop();
                panic!("dockerd did not start; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// The endpoint for clients: `unix://<socket>`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// A `docker` command talking to this engine.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(self.host());
        cmd
    }

    /// What dockerd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Builds image `tag` from the directory `rootfs` with `docker import` (`PATH=/bin:/usr/bin`).
    pub fn import_rootfs(&self, rootfs: &Path, tag: &str) -> std::io::Result<()> {
        let tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = tar
            .stdout
            .ok_or_else(|| std::io::Error::other("tar has no stdout"))?;
        let out = self
            .cli()
            .args([
                "import",
                "-c",
                "ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin",
                "-c",
                "CMD [\"/bin/sh\"]",
                "-",
                tag,
            ])
            .stdin(stdout)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "docker import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// The ids of every container (running or not).
    pub fn containers(&self) -> Vec<String> {
        self.cli()
            .args(["ps", "-aq", "--no-trunc"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether dockerd still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops dockerd: SIGTERM, then waits (SIGKILL after 30 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes a minimal root filesystem in `dir`: static busybox with its applet links in `/bin`,
/// plus `/tmp`, `/etc/passwd` and `/home/kernelci`.
pub fn busybox_rootfs(dir: &Path) -> std::io::Result<()> {
    let busybox = find_program("busybox").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, DOCKER.missing_message())
    })?;
    for sub in ["bin", "tmp", "etc", "home/kernelci", "usr/bin"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy(&busybox, dir.join("bin/busybox"))?;
    // The host's busybox lists the applets: running the copy we just wrote can fail with
    // ETXTBSY when another test thread forked while the copy was open for writing.
    let list = Command::new(&busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let link = dir.join("bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link)?;
            }
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nkernelci:x:1000:1000::/home/kernelci:/bin/sh\n",
    )?;
    Ok(())
}

/// Copies a dynamically linked program into `rootfs` at the same path, with the libraries
/// `ldd` lists (and the dynamic loader), so it runs in a container built from `rootfs`.
pub fn add_binary_with_libs(rootfs: &Path, binary: &Path) -> std::io::Result<()> {
    let copy_into = |file: &Path| -> std::io::Result<()> {
        let rel = file.strip_prefix("/").unwrap_or(file);
        let dest = rootfs.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(file, &dest).map(|_| ())
    };
    copy_into(binary)?;
    let out = Command::new("ldd").arg(binary).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = line
            .split("=>")
            .nth(1)
            .unwrap_or(line)
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            copy_into(Path::new(path))?;
        }
    }
    Ok(())
}
