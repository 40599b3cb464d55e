//! [`SshStorage`]: uploads over SSH (libssh2 via `ssh2`, feature `ssh`), as upstream's `ssh`
//! storage type.
//!
//! - Key-based authentication; the credential is the path of the private key.
//! - The server's host key is checked against a known-hosts file (config key `known_hosts`,
//!   default `~/.ssh/known_hosts`); an unknown or mismatched key is refused with
//!   [`StorageError::HostKey`]. `known_hosts: none` opts out explicitly. (Upstream's paramiko
//!   code auto-adds unknown keys; we do not.)
//! - Upload by SFTP (default) or scp (`method: scp`, needs a shell and `scp` on the server).
//!   Remote directories are created as needed. Each file is written to a temporary name and
//!   renamed into place, so an interrupted upload never leaves a truncated file at the final
//!   name.
//! - ssh2 is blocking: every operation runs in `tokio::task::spawn_blocking`, one session per
//!   call.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ssh2::{ErrorCode, KnownHostFileKind, RenameFlags, Session, Sftp};

use super::{RelPath, Storage, StorageError, UploadFile, UploadSource, UrlMap, plan_upload};
use crate::ErrorKind;

const CHUNK: usize = 256 * 1024;
/// libssh2's `LIBSSH2_FX_NO_SUCH_FILE`.
const FX_NO_SUCH_FILE: i32 = 2;
/// libssh2's `LIBSSH2_ERROR_TIMEOUT`.
const ERROR_TIMEOUT: i32 = -9;

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// The key must be listed for `host`/`[host]:port` in this OpenSSH known-hosts file.
    KnownHosts(PathBuf),
    /// No check at all (explicit opt-out; vulnerable to man-in-the-middle).
    Insecure,
}

/// How files are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshMethod {
    /// The SFTP subsystem (default).
    Sftp,
    /// Legacy scp (`scp -t`), plus `mkdir -p` / `mv -f` through the remote shell.
    Scp,
}

#[derive(Debug, Clone)]
struct Inner {
    host: String,
    port: u16,
    user: String,
    key: PathBuf,
    root: String,
    host_keys: HostKeyPolicy,
    method: SshMethod,
    timeout: Duration,
}

/// Artifact storage on a remote host reached over SSH.
#[derive(Debug, Clone)]
pub struct SshStorage {
    inner: Arc<Inner>,
    base_url: String,
}

impl SshStorage {
    /// A store on `user@host:port` below `root` (`~/` means the user's home), authenticated by
    /// the private key at `key`, with host keys checked by `host_keys`.
    pub fn new(
        host: &str,
        port: u16,
        user: &str,
        key: impl Into<PathBuf>,
        root: &str,
        base_url: &str,
        host_keys: HostKeyPolicy,
    ) -> Result<SshStorage, StorageError> {
        url::Url::parse(base_url)
            .map_err(|e| StorageError::Config(format!("base_url {base_url:?}: {e}")))?;
        let root = match root {
            "~" | "~/" => ".".to_owned(),
            r => r
                .strip_prefix("~/")
                .unwrap_or(r)
                .trim_end_matches('/')
                .to_owned(),
        };
        Ok(SshStorage {
            inner: Arc::new(Inner {
                host: host.to_owned(),
                port,
                user: user.to_owned(),
                key: key.into(),
                root: if root.is_empty() { "/".into() } else { root },
                host_keys,
                method: SshMethod::Sftp,
                timeout: Duration::from_secs(60),
            }),
            base_url: base_url.to_owned(),
        })
    }

    /// Uses `method` to copy files.
    pub fn with_method(mut self, method: SshMethod) -> SshStorage {
        Arc::make_mut(&mut self.inner).method = method;
        self
    }

    /// Builds the store from an upstream `ssh` config entry; `credential` is the private key
    /// path.
    pub fn from_config(
        config: &super::StorageConfig,
        credential: Option<&str>,
    ) -> Result<SshStorage, StorageError> {
        let host = config
            .host
            .as_deref()
            .ok_or_else(|| StorageError::Config("ssh storage needs `host`".into()))?;
        let key = credential.ok_or_else(|| {
            StorageError::Config("ssh storage needs a credential (storage_cred: key path)".into())
        })?;
        let host_keys = match config.known_hosts.as_deref() {
            Some("none") | Some("insecure") => HostKeyPolicy::Insecure,
            Some(path) => HostKeyPolicy::KnownHosts(expand_home(path)),
            None => HostKeyPolicy::KnownHosts(expand_home("~/.ssh/known_hosts")),
        };
        let method = match config.method.as_deref() {
            None | Some("sftp") => SshMethod::Sftp,
            Some("scp") => SshMethod::Scp,
            Some(other) => {
                return Err(StorageError::Config(format!(
                    "ssh method {other:?}: expected sftp or scp"
                )));
            }
        };
        let storage = SshStorage::new(
            host,
            config.port,
            &config.user,
            expand_home(key),
            &config.path,
            &config.base_url,
            host_keys,
        )?
        .with_method(method);
        Ok(match config.timeout {
            Some(secs) => storage.with_timeout(Duration::from_secs(secs)),
            None => storage,
        })
    }

    /// Sets the connect and per-operation timeout (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> SshStorage {
        Arc::make_mut(&mut self.inner).timeout = timeout;
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::backend("ssh task", ErrorKind::Internal, e))?
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

fn ssh_err(context: impl Into<String>, e: ssh2::Error) -> StorageError {
    let kind = match e.code() {
        ErrorCode::Session(ERROR_TIMEOUT) => ErrorKind::Timeout,
        ErrorCode::SFTP(FX_NO_SUCH_FILE) => ErrorKind::NotFound,
        ErrorCode::SFTP(3) => ErrorKind::Unauthorized, // permission denied
        _ => ErrorKind::Unavailable,
    };
    StorageError::backend(context, kind, e)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A blocking reader plus its size when known (scp needs it up front).
struct BlockingSource {
    reader: Box<dyn Read + Send>,
    size: Option<u64>,
}

impl BlockingSource {
    /// Must run inside the runtime (the reader bridge needs its handle).
    fn from_source(source: UploadSource) -> Result<BlockingSource, StorageError> {
        Ok(match source {
            UploadSource::File(path) => {
                let file = std::fs::File::open(&path)
                    .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
                let size = file
                    .metadata()
                    .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?
                    .len();
                BlockingSource {
                    reader: Box::new(file),
                    size: Some(size),
                }
            }
            UploadSource::Bytes(bytes) => BlockingSource {
                size: Some(bytes.len() as u64),
                reader: Box::new(std::io::Cursor::new(bytes)),
            },
            UploadSource::Reader(reader) => BlockingSource {
                reader: Box::new(tokio_util::io::SyncIoBridge::new(reader)),
                size: None,
            },
        })
    }
}

fn copy_chunked(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    what: &str,
) -> Result<u64, StorageError> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StorageError::io(format!("reading the source of {what}"), e)),
        };
        writer
            .write_all(&buf[..n])
            .map_err(|e| StorageError::io(format!("writing {what}"), e))?;
        total += n as u64;
    }
}

impl Inner {
    fn remote_path(&self, rel: &RelPath) -> String {
        if rel.is_root() {
            return self.root.clone();
        }
        let sep = if self.root.ends_with('/') { "" } else { "/" };
        format!("{}{sep}{rel}", self.root)
    }

    fn connect(&self) -> Result<Session, StorageError> {
        let target = format!("{}:{}", self.host, self.port);
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| StorageError::io(format!("resolving {target}"), e))?
            .next()
            .ok_or_else(|| StorageError::Config(format!("{target} resolves to nothing")))?;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| StorageError::io(format!("connecting to {target}"), e))?;
        let mut session = Session::new().map_err(|e| ssh_err("creating an ssh session", e))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX));
        session
            .handshake()
            .map_err(|e| ssh_err(format!("ssh handshake with {target}"), e))?;
        self.check_host_key(&session, &target)?;
        session
            .userauth_pubkey_file(&self.user, None, &self.key, None)
            .map_err(|e| StorageError::Auth {
                context: format!("ssh key {} for {}@{target}", self.key.display(), self.user),
                source: Some(Box::new(e)),
            })?;
        if !session.authenticated() {
            return Err(StorageError::Auth {
                context: format!("ssh login as {}@{target}", self.user),
                source: None,
            });
        }
        Ok(session)
    }

    fn check_host_key(&self, session: &Session, target: &str) -> Result<(), StorageError> {
        let file = match &self.host_keys {
            HostKeyPolicy::Insecure => return Ok(()),
            HostKeyPolicy::KnownHosts(file) => file,
        };
        let refuse = |reason: String| StorageError::HostKey {
            host: target.to_owned(),
            reason,
        };
        let (key, _) = session
            .host_key()
            .ok_or_else(|| refuse("the server sent no host key".into()))?;
        let mut known = session
            .known_hosts()
            .map_err(|e| ssh_err("reading known hosts", e))?;
        known
            .read_file(file, KnownHostFileKind::OpenSSH)
            .map_err(|e| {
                refuse(format!(
                    "cannot read known-hosts file {}: {e}",
                    file.display()
                ))
            })?;
        match known.check_port(&self.host, self.port, key) {
            ssh2::CheckResult::Match => Ok(()),
            ssh2::CheckResult::NotFound => Err(refuse(format!(
                "no key for this host in {} (add it, or set known_hosts: none to opt out)",
                file.display()
            ))),
            ssh2::CheckResult::Mismatch => Err(refuse(format!(
                "the key DOES NOT MATCH the one in {}: possible man-in-the-middle",
                file.display()
            ))),
            ssh2::CheckResult::Failure => Err(refuse("the key check failed".into())),
        }
    }

    fn exec(&self, session: &Session, command: &str) -> Result<(i32, String), StorageError> {
        let mut channel = session
            .channel_session()
            .map_err(|e| ssh_err("opening an ssh channel", e))?;
        channel
            .exec(command)
            .map_err(|e| ssh_err(format!("running {command}"), e))?;
        let mut out = String::new();
        let _ = channel.read_to_string(&mut out);
        let _ = channel.stderr().read_to_string(&mut out);
        channel
            .wait_close()
            .map_err(|e| ssh_err(format!("running {command}"), e))?;
        let status = channel
            .exit_status()
            .map_err(|e| ssh_err(format!("running {command}"), e))?;
        Ok((status, out))
    }

    fn exec_ok(&self, session: &Session, command: &str) -> Result<(), StorageError> {
        match self.exec(session, command)? {
            (0, _) => Ok(()),
            (status, out) => Err(StorageError::Rejected {
                context: format!("remote command {command}"),
                status: 500,
                body: format!("exit status {status}: {}", out.trim()),
            }),
        }
    }

    fn sftp_mkdir_p(&self, sftp: &Sftp, dir: &str) -> Result<(), StorageError> {
        let mut prefix = String::new();
        for (i, part) in dir.split('/').enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(part);
            if part.is_empty() || part == "." || sftp.stat(Path::new(&prefix)).is_ok() {
                continue;
            }
            if let Err(e) = sftp.mkdir(Path::new(&prefix), 0o755)
                && sftp.stat(Path::new(&prefix)).is_err()
            {
                return Err(ssh_err(format!("creating remote directory {prefix}"), e));
            }
        }
        Ok(())
    }

    fn upload_sftp(
        &self,
        session: &Session,
        files: Vec<(RelPath, BlockingSource)>,
    ) -> Result<(), StorageError> {
        let sftp = session.sftp().map_err(|e| ssh_err("starting sftp", e))?;
        for (rel, mut source) in files {
            let target = self.remote_path(&rel);
            self.sftp_mkdir_p(&sftp, &self.remote_path(&rel.parent()))?;
            let temp = part_name(&target);
            let written = sftp
                .create(Path::new(&temp))
                .map_err(|e| ssh_err(format!("creating {temp}"), e))
                .and_then(|mut file| {
                    copy_chunked(&mut source.reader, &mut file, &target)?;
                    file.close()
                        .map_err(|e| ssh_err(format!("closing {temp}"), e))
                });
            let renamed = written.and_then(|()| self.sftp_rename(session, &sftp, &temp, &target));
            if let Err(e) = renamed {
                let _ = sftp.unlink(Path::new(&temp));
                return Err(e);
            }
        }
        Ok(())
    }

    /// SFTP v3 (OpenSSH) refuses to rename over an existing file: fall back to `mv -f` through
    /// the shell (atomic), then to unlink + rename.
    fn sftp_rename(
        &self,
        session: &Session,
        sftp: &Sftp,
        temp: &str,
        target: &str,
    ) -> Result<(), StorageError> {
        let flags = RenameFlags::OVERWRITE | RenameFlags::ATOMIC | RenameFlags::NATIVE;
        let Err(first) = sftp.rename(Path::new(temp), Path::new(target), Some(flags)) else {
            return Ok(());
        };
        if sftp.stat(Path::new(target)).is_err() {
            return Err(ssh_err(format!("renaming {temp} to {target}"), first));
        }
        let mv = format!("mv -f -- {} {}", shell_quote(temp), shell_quote(target));
        if self.exec_ok(session, &mv).is_ok() {
            return Ok(());
        }
        let _ = sftp.unlink(Path::new(target));
        sftp.rename(Path::new(temp), Path::new(target), None)
            .map_err(|e| ssh_err(format!("renaming {temp} to {target}"), e))
    }

    fn upload_scp(
        &self,
        session: &Session,
        files: Vec<(RelPath, BlockingSource)>,
    ) -> Result<(), StorageError> {
        for (rel, source) in files {
            let target = self.remote_path(&rel);
            let dir = self.remote_path(&rel.parent());
            self.exec_ok(session, &format!("mkdir -p -- {}", shell_quote(&dir)))?;
            let temp = part_name(&target);
            let sent = self.scp_one(session, &temp, source).and_then(|()| {
                let mv = format!("mv -f -- {} {}", shell_quote(&temp), shell_quote(&target));
                self.exec_ok(session, &mv)
            });
            if let Err(e) = sent {
                let _ = self.exec(session, &format!("rm -f -- {}", shell_quote(&temp)));
                return Err(e);
            }
        }
        Ok(())
    }

    fn scp_one(
        &self,
        session: &Session,
        temp: &str,
        mut source: BlockingSource,
    ) -> Result<(), StorageError> {
        // scp needs the size first: spool a reader of unknown length to a local temp file.
        let mut spooled;
        let (reader, size): (&mut dyn Read, u64) = match source.size {
            Some(size) => (&mut source.reader, size),
            None => {
                spooled = tempfile::tempfile()
                    .map_err(|e| StorageError::io("creating a spool file", e))?;
                let size = copy_chunked(&mut source.reader, &mut spooled, "the spool file")?;
                std::io::Seek::rewind(&mut spooled)
                    .map_err(|e| StorageError::io("rewinding the spool file", e))?;
                (&mut spooled, size)
            }
        };
        let mut channel = session
            .scp_send(Path::new(temp), 0o644, size, None)
            .map_err(|e| ssh_err(format!("scp to {temp}"), e))?;
        let copied = copy_chunked(&mut reader.take(size), &mut channel, temp)?;
        if copied != size {
            return Err(StorageError::io(
                format!("scp to {temp}"),
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "source shrank"),
            ));
        }
        let done = channel
            .send_eof()
            .and_then(|()| channel.wait_eof())
            .and_then(|()| channel.close())
            .and_then(|()| channel.wait_close());
        done.map_err(|e| ssh_err(format!("finishing scp to {temp}"), e))
    }

    fn exists(&self, rel: &RelPath) -> Result<bool, StorageError> {
        let session = self.connect()?;
        let path = self.remote_path(rel);
        match self.method {
            SshMethod::Sftp => {
                let sftp = session.sftp().map_err(|e| ssh_err("starting sftp", e))?;
                match sftp.stat(Path::new(&path)) {
                    Ok(_) => Ok(true),
                    Err(e) if e.code() == ErrorCode::SFTP(FX_NO_SUCH_FILE) => Ok(false),
                    Err(e) => Err(ssh_err(format!("checking {path}"), e)),
                }
            }
            SshMethod::Scp => {
                let (status, _) =
                    self.exec(&session, &format!("test -e {}", shell_quote(&path)))?;
                Ok(status == 0)
            }
        }
    }
}

fn part_name(target: &str) -> String {
    let (dir, name) = match target.rsplit_once('/') {
        Some((dir, name)) => (format!("{dir}/"), name),
        None => (String::new(), target),
    };
    format!("{dir}.{name}.part-{}", super::local::random_suffix())
}

#[async_trait]
impl Storage for SshStorage {
    fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn upload(
        &self,
        files: Vec<UploadFile>,
        dest_path: &str,
    ) -> Result<Option<UrlMap>, StorageError> {
        let (_, items) = plan_upload(files, dest_path)?;
        let mut prepared = Vec::with_capacity(items.len());
        for item in items {
            prepared.push((item.path, BlockingSource::from_source(item.source)?));
        }
        self.blocking(move |inner| {
            let session = inner.connect()?;
            match inner.method {
                SshMethod::Sftp => inner.upload_sftp(&session, prepared),
                SshMethod::Scp => inner.upload_scp(&session, prepared),
            }
        })
        .await?;
        Ok(None)
    }

    async fn exists(&self, dest_path: &str, remote: &str) -> Result<bool, StorageError> {
        let rel = RelPath::parse(dest_path)?.join(&RelPath::parse_file(remote)?);
        self.blocking(move |inner| inner.exists(&rel)).await
    }
}
