//! Artifact storage: where tarballs, kernels and logs go; nodes only keep their URLs.
//!
//! The [`Storage`] trait uploads one file, many files or an archive to a destination path and
//! returns the public URLs. Backends:
//!
//! | `storage_type` | type | feature |
//! |---|---|---|
//! | `local` | [`LocalStorage`]: a directory plus a base URL | always |
//! | `ssh` | `SshStorage`: SFTP (or scp) over SSH with a key, host key verified | `ssh` |
//! | `backend` | `HttpStorage`: the kernelci-storage HTTP protocol | `client` |
//! | `s3` | `S3Storage`: AWS S3 or an S3-compatible server | `s3` |
//! | `azure_blob` | `AzureBlobStorage`: an Azure Blob container | `azure` |
//! | `azure` | `AzureBlobStorage` from upstream's Azure Files entry (`share` → container) | `azure` |
//!
//! [`from_config`] builds any of them from an upstream storage config entry plus its
//! credential (`[storage.<name>] storage_cred` in the TOML settings).
//!
//! Every backend validates destination paths with the same rules ([`RelPath`]): no `..`, no
//! absolute paths, no backslashes, no NUL. Every backend writes to a temporary name first and
//! renames into place, so an interrupted upload never leaves a truncated file at the final name.
//!
//! ```
//! # async fn demo() -> Result<(), kernelci::storage::StorageError> {
//! use kernelci::storage::{LocalStorage, Storage, UploadFile};
//!
//! let dir = std::env::temp_dir().join("kernelci-doc-storage");
//! let storage = LocalStorage::new(&dir, "http://files.example/")?;
//! let url = storage
//!     .upload_single(UploadFile::from_bytes(b"hello".to_vec(), "hello.txt"), "logs")
//!     .await?;
//! assert_eq!(url, "http://files.example/logs/hello.txt");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The attribute implementations of [`Storage`] use (re-exported, so implementers need no
/// direct `async-trait` dependency).
pub use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::ErrorKind;

pub mod archive;
#[cfg(feature = "azure")]
pub mod azure;
pub mod cloud;
#[cfg(feature = "client")]
pub mod http;
pub mod local;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "ssh")]
pub mod ssh;

#[cfg(feature = "azure")]
pub use azure::AzureBlobStorage;
pub use cloud::CloudConfig;
#[cfg(feature = "client")]
pub use http::HttpStorage;
pub use local::LocalStorage;
#[cfg(feature = "s3")]
pub use s3::S3Storage;
#[cfg(feature = "ssh")]
pub use ssh::SshStorage;

/// A boxed error source kept inside a [`StorageError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while storing artifacts.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A destination path or remote name breaks the path rules (`..`, absolute, `\`, NUL).
    #[error("invalid storage path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path, as given.
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The storage configuration entry is incomplete or malformed.
    #[error("invalid storage config: {0}")]
    Config(String),
    /// The `storage_type` of a config entry names no known backend.
    #[error("unknown storage_type {0:?} (known: local, ssh, backend, s3, azure_blob, azure)")]
    UnknownType(String),
    /// The backend exists but this build of the crate does not include it.
    #[error("storage_type {storage_type:?} needs the kernelci cargo feature {feature:?}")]
    FeatureDisabled {
        /// The configured storage type.
        storage_type: String,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// A local file (a source file, or a file of a local store) could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The remote host key is unknown or does not match the known-hosts file.
    #[error("host key of {host} refused: {reason}")]
    HostKey {
        /// `host:port`.
        host: String,
        /// Why it was refused.
        reason: String,
    },
    /// The credential was refused (SSH key, HTTP token).
    #[error("authentication failed: {context}")]
    Auth {
        /// What was refused.
        context: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The remote server answered with an error status (HTTP) or refused the operation.
    #[error("{context}: server answered {status}: {body}")]
    Rejected {
        /// What we were doing.
        context: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// A server-side archive unpack reported failures.
    #[error("archive unpack failed for {failed} entries: {failures:?}")]
    Archive {
        /// How many entries failed.
        failed: u64,
        /// What the server said about each failure.
        failures: Vec<String>,
    },
    /// Any other backend failure (SSH session, HTTP transport), with its kind.
    #[error("{context}: {source}")]
    Backend {
        /// What we were doing.
        context: String,
        /// How the caller should treat it.
        kind: ErrorKind,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl StorageError {
    /// The kind of failure, for retry decisions and HTTP status mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::InvalidPath { .. }
            | StorageError::Config(_)
            | StorageError::UnknownType(_)
            | StorageError::FeatureDisabled { .. } => ErrorKind::Invalid,
            StorageError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::Unauthorized,
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                    ErrorKind::Invalid
                }
                std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
                _ => ErrorKind::Unavailable,
            },
            StorageError::HostKey { .. } | StorageError::Auth { .. } => ErrorKind::Unauthorized,
            StorageError::Rejected { status, .. } => match status {
                401 | 403 => ErrorKind::Unauthorized,
                404 => ErrorKind::NotFound,
                408 => ErrorKind::Timeout,
                409 => ErrorKind::Conflict,
                400..=499 => ErrorKind::Invalid,
                _ => ErrorKind::Unavailable,
            },
            StorageError::Archive { .. } => ErrorKind::Invalid,
            StorageError::Backend { kind, .. } => *kind,
        }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a backend error with what we were doing and its kind.
    pub fn backend(
        context: impl Into<String>,
        kind: ErrorKind,
        source: impl Into<BoxError>,
    ) -> StorageError {
        StorageError::Backend {
            context: context.into(),
            kind,
            source: source.into(),
        }
    }
}

/// A validated relative storage path: zero or more `/`-separated segments, none of them `..`.
///
/// The rules, shared by every backend and by the server's upload endpoint:
/// - no absolute paths (a leading `/`), no `..` segment, no backslash, no NUL, no `:` in the
///   first segment (Windows drives);
/// - empty and `.` segments are dropped, so `"a//b/./c"` is `a/b/c` and `""` is the root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath {
    segments: Vec<String>,
}

impl RelPath {
    /// Parses and validates `path`.
    pub fn parse(path: &str) -> Result<RelPath, StorageError> {
        let invalid = |reason| StorageError::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        if path.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        if path.contains('\\') {
            return Err(invalid("contains a backslash"));
        }
        if path.starts_with('/') {
            return Err(invalid("is absolute"));
        }
        if path.chars().any(char::is_control) {
            return Err(invalid("contains a control character"));
        }
        let mut segments = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => return Err(invalid("contains a `..` segment")),
                s => {
                    if segments.is_empty() && s.contains(':') {
                        return Err(invalid("starts with a drive-like `x:` segment"));
                    }
                    segments.push(s.to_owned());
                }
            }
        }
        Ok(RelPath { segments })
    }

    /// Parses a file name (the remote name of an upload): like [`RelPath::parse`], but it must
    /// name something (not the root).
    pub fn parse_file(path: &str) -> Result<RelPath, StorageError> {
        let parsed = RelPath::parse(path)?;
        if parsed.segments.is_empty() {
            return Err(StorageError::InvalidPath {
                path: path.to_owned(),
                reason: "names no file",
            });
        }
        Ok(parsed)
    }

    /// Whether this is the root (no segments).
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The last segment (the file name), if any.
    pub fn file_name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// This path with `other` appended.
    pub fn join(&self, other: &RelPath) -> RelPath {
        let mut segments = self.segments.clone();
        segments.extend(other.segments.iter().cloned());
        RelPath { segments }
    }

    /// Everything but the last segment.
    pub fn parent(&self) -> RelPath {
        let mut segments = self.segments.clone();
        segments.pop();
        RelPath { segments }
    }

    /// The path below a local directory.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.segments);
        path
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("/"))
    }
}

/// The public URL of `dest_path/remote` below `base_url`, as upstream computes it:
/// `urljoin(base_url, "./" + dest_path + "/" + remote)` (empty segments dropped).
pub fn public_url(base_url: &str, dest_path: &str, remote: &str) -> Result<String, StorageError> {
    let path = RelPath::parse(dest_path)?.join(&RelPath::parse_file(remote)?);
    let base = url::Url::parse(base_url)
        .map_err(|e| StorageError::Config(format!("base_url {base_url:?}: {e}")))?;
    let joined = base
        .join(&format!("./{path}"))
        .map_err(|e| StorageError::Config(format!("joining {path} to {base_url:?}: {e}")))?;
    Ok(joined.into())
}

/// Where the bytes of an upload come from.
pub enum UploadSource {
    /// A local file, opened when the upload starts (and again for each retry).
    File(PathBuf),
    /// Bytes in memory (small files, tests).
    Bytes(Vec<u8>),
    /// Any async reader, read once and streamed (no retry is possible after it started).
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

impl fmt::Debug for UploadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadSource::File(p) => f.debug_tuple("File").field(p).finish(),
            UploadSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            UploadSource::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

impl UploadSource {
    /// Opens the source as an async reader.
    pub async fn open(self) -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError> {
        Ok(match self {
            UploadSource::File(path) => {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
                Box::new(file)
            }
            UploadSource::Bytes(bytes) => Box::new(std::io::Cursor::new(bytes)),
            UploadSource::Reader(reader) => reader,
        })
    }
}

/// One file to upload: where its bytes come from and its name below the destination path.
#[derive(Debug)]
pub struct UploadFile {
    /// The bytes.
    pub source: UploadSource,
    /// The remote name, relative to the destination path (may contain `/`).
    pub remote: String,
}

impl UploadFile {
    /// A local file uploaded as `remote`.
    pub fn from_path(local: impl Into<PathBuf>, remote: impl Into<String>) -> UploadFile {
        UploadFile {
            source: UploadSource::File(local.into()),
            remote: remote.into(),
        }
    }

    /// In-memory bytes uploaded as `remote`.
    pub fn from_bytes(bytes: Vec<u8>, remote: impl Into<String>) -> UploadFile {
        UploadFile {
            source: UploadSource::Bytes(bytes),
            remote: remote.into(),
        }
    }

    /// An async reader streamed as `remote`.
    pub fn from_reader(
        reader: impl AsyncRead + Send + Unpin + 'static,
        remote: impl Into<String>,
    ) -> UploadFile {
        UploadFile {
            source: UploadSource::Reader(Box::new(reader)),
            remote: remote.into(),
        }
    }
}

/// Remote name → public URL.
pub type UrlMap = BTreeMap<String, String>;

/// Validates every remote name of `files` and `dest_path` before anything is written.
pub fn validate_upload(files: &[UploadFile], dest_path: &str) -> Result<RelPath, StorageError> {
    let dest = RelPath::parse(dest_path)?;
    for file in files {
        RelPath::parse_file(&file.remote)?;
    }
    Ok(dest)
}

/// One file of an upload with its names checked (see [`plan_upload`]).
pub struct UploadItem {
    /// The remote name as the caller gave it (the key of a returned [`UrlMap`]).
    pub name: String,
    /// The checked remote name, relative to the destination.
    pub remote: RelPath,
    /// Where the file goes below the storage root: the destination joined with `remote`.
    pub path: RelPath,
    /// Where the bytes come from.
    pub source: UploadSource,
}

/// Checks `dest_path` and every remote name of `files` before anything is written (as
/// [`validate_upload`] does) and returns the destination and each file with its checked paths.
pub fn plan_upload(
    files: Vec<UploadFile>,
    dest_path: &str,
) -> Result<(RelPath, Vec<UploadItem>), StorageError> {
    let dest = RelPath::parse(dest_path)?;
    let items = files
        .into_iter()
        .map(|file| {
            let remote = RelPath::parse_file(&file.remote)?;
            Ok(UploadItem {
                name: file.remote,
                path: dest.join(&remote),
                remote,
                source: file.source,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok((dest, items))
}

/// An artifact store. Implement [`Storage::upload`], [`Storage::exists`] and
/// [`Storage::base_url`]; the rest is provided, with the upstream URL rules.
///
/// With the `mock` feature, `MockStorage` (mockall) stands in for a storage in users' unit
/// tests.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// The public base URL that stored paths are served under.
    fn base_url(&self) -> &str;

    /// Uploads `files` below `dest_path`. Returns the URLs when the backend knows them, or
    /// `None` to let callers derive them from [`Storage::base_url`].
    ///
    /// Implementations must refuse invalid paths (see [`RelPath`]) with
    /// [`StorageError::InvalidPath`] before writing anything, and must never leave a truncated
    /// file at a final name.
    async fn upload(
        &self,
        files: Vec<UploadFile>,
        dest_path: &str,
    ) -> Result<Option<UrlMap>, StorageError>;

    /// Whether `dest_path/remote` exists in the store.
    async fn exists(&self, dest_path: &str, remote: &str) -> Result<bool, StorageError>;

    /// Unpacks a `.tar.gz` archive below `dest_path` on the storage side, if the backend can.
    /// Returns `false` when it cannot (the default), and [`Storage::upload_archive`] falls back
    /// to uploading the individual files.
    async fn unpack_archive(
        &self,
        _archive: &Path,
        _dest_path: &str,
    ) -> Result<bool, StorageError> {
        Ok(false)
    }

    /// The public URL of `dest_path/remote` (upstream's `urljoin` rule).
    fn url_for(&self, dest_path: &str, remote: &str) -> Result<String, StorageError> {
        public_url(self.base_url(), dest_path, remote)
    }

    /// Uploads one file and returns its URL.
    async fn upload_single(
        &self,
        file: UploadFile,
        dest_path: &str,
    ) -> Result<String, StorageError> {
        let remote = file.remote.clone();
        let urls = self.upload(vec![file], dest_path).await?;
        match urls.and_then(|mut urls| urls.remove(&remote)) {
            Some(url) => Ok(url),
            None => self.url_for(dest_path, &remote),
        }
    }

    /// Uploads several files and returns their URLs in the order of `files`.
    async fn upload_multiple(
        &self,
        files: Vec<UploadFile>,
        dest_path: &str,
    ) -> Result<Vec<String>, StorageError> {
        let remotes: Vec<String> = files.iter().map(|f| f.remote.clone()).collect();
        let urls = self.upload(files, dest_path).await?.unwrap_or_default();
        remotes
            .iter()
            .map(|remote| match urls.get(remote) {
                Some(url) => Ok(url.clone()),
                None => self.url_for(dest_path, remote),
            })
            .collect()
    }

    /// Uploads a `.tar.gz` archive unpacked below `dest_path`: unpacked by the backend when it
    /// can ([`Storage::unpack_archive`]), otherwise by uploading `files` (the archive's members,
    /// already on the caller's side) one by one. Returns the URL of every file in `files`.
    async fn upload_archive(
        &self,
        archive: &Path,
        files: Vec<UploadFile>,
        dest_path: &str,
    ) -> Result<UrlMap, StorageError> {
        validate_upload(&files, dest_path)?;
        let remotes: Vec<String> = files.iter().map(|f| f.remote.clone()).collect();
        let mut urls = if self.unpack_archive(archive, dest_path).await? {
            UrlMap::new()
        } else {
            self.upload(files, dest_path).await?.unwrap_or_default()
        };
        for remote in remotes {
            if let std::collections::btree_map::Entry::Vacant(entry) = urls.entry(remote) {
                let url = self.url_for(dest_path, entry.key())?;
                entry.insert(url);
            }
        }
        Ok(urls)
    }
}

/// `Storage` for a smart pointer to a storage: every method forwards to the pointee.
macro_rules! forward_storage {
    ($pointer:ident) => {
        #[async_trait]
        impl<S: Storage + ?Sized> Storage for $pointer<S> {
            fn base_url(&self) -> &str {
                (**self).base_url()
            }
            fn url_for(&self, dest_path: &str, remote: &str) -> Result<String, StorageError> {
                (**self).url_for(dest_path, remote)
            }
            async fn upload(
                &self,
                files: Vec<UploadFile>,
                dest_path: &str,
            ) -> Result<Option<UrlMap>, StorageError> {
                (**self).upload(files, dest_path).await
            }
            async fn exists(&self, dest_path: &str, remote: &str) -> Result<bool, StorageError> {
                (**self).exists(dest_path, remote).await
            }
            async fn unpack_archive(
                &self,
                archive: &Path,
                dest_path: &str,
            ) -> Result<bool, StorageError> {
                (**self).unpack_archive(archive, dest_path).await
            }
        }
    };
}

forward_storage!(Arc);
forward_storage!(Box);

fn default_port() -> u16 {
    22
}
fn default_user() -> String {
    "kernelci".to_owned()
}
fn default_path() -> String {
    "~/data".to_owned()
}

/// One entry of the upstream `storage:` (or legacy `storage_configs:`) YAML map.
///
/// Keys beyond upstream's: `method` (`sftp`, the default, or `scp`) and `known_hosts` (a
/// known-hosts file; `"none"` opts out of host key checking) for `ssh`; `timeout` (seconds),
/// `retries` and `retry_delay` (seconds) for `backend`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StorageConfig {
    /// `local`, `ssh`, `backend`, `s3`, `azure_blob` or `azure` (upstream's module names, plus
    /// `s3` and `azure_blob`).
    pub storage_type: String,
    /// The public URL stored files are served under.
    pub base_url: String,
    /// SSH host.
    #[serde(default)]
    pub host: Option<String>,
    /// SSH port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// SSH user.
    #[serde(default = "default_user")]
    pub user: String,
    /// The storage root: a remote directory for `ssh` (`~/` is the user's home), a local
    /// directory for `local`.
    #[serde(default = "default_path")]
    pub path: String,
    /// The kernelci-storage API URL for `backend`.
    #[serde(default)]
    pub api_url: Option<String>,
    /// SSH upload method: `sftp` (default) or `scp`.
    #[serde(default)]
    pub method: Option<String>,
    /// SSH known-hosts file (OpenSSH format), or `"none"` to skip host key checking.
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// Request timeout in seconds (`backend`; the archive call gets three times as long).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Attempts per request (`backend`, default 5).
    #[serde(default)]
    pub retries: Option<u32>,
    /// First delay between attempts in seconds, doubled after each failure (`backend`).
    #[serde(default)]
    pub retry_delay: Option<f64>,
    /// The keys of the cloud backends (`s3`, `azure_blob`, `azure`): see [`CloudConfig`].
    #[serde(flatten)]
    pub cloud: CloudConfig,
}

impl StorageConfig {
    /// A config entry of `storage_type` with every other key at its default.
    pub fn new(storage_type: &str, base_url: &str) -> StorageConfig {
        StorageConfig {
            storage_type: storage_type.to_owned(),
            base_url: base_url.to_owned(),
            host: None,
            port: default_port(),
            user: default_user(),
            path: default_path(),
            api_url: None,
            method: None,
            known_hosts: None,
            timeout: None,
            retries: None,
            retry_delay: None,
            cloud: CloudConfig::default(),
        }
    }

    /// Parses an entry from any serde value (a YAML or JSON map), with a clear error.
    pub fn from_value(value: serde_json::Value) -> Result<StorageConfig, StorageError> {
        serde_path_to_error::deserialize(value).map_err(|e| StorageError::Config(e.to_string()))
    }
}

/// Builds the storage a config entry describes. `credential` is the entry's
/// `storage_cred` (an SSH private key path for `ssh`, a token for `backend`,
/// `KEY_ID:SECRET` for `s3`, an account key or SAS token for `azure_blob`/`azure`; unused by
/// `local`).
pub fn from_config(
    config: &StorageConfig,
    credential: Option<&str>,
) -> Result<Arc<dyn Storage>, StorageError> {
    let _ = credential;
    match config.storage_type.as_str() {
        "local" => Ok(Arc::new(LocalStorage::new(
            Path::new(&config.path),
            &config.base_url,
        )?)),
        #[cfg(feature = "ssh")]
        "ssh" => Ok(Arc::new(SshStorage::from_config(config, credential)?)),
        #[cfg(not(feature = "ssh"))]
        "ssh" => Err(StorageError::FeatureDisabled {
            storage_type: "ssh".into(),
            feature: "ssh",
        }),
        #[cfg(feature = "client")]
        "backend" => Ok(Arc::new(HttpStorage::from_config(config, credential)?)),
        #[cfg(not(feature = "client"))]
        "backend" => Err(StorageError::FeatureDisabled {
            storage_type: "backend".into(),
            feature: "client",
        }),
        #[cfg(feature = "s3")]
        "s3" => Ok(Arc::new(S3Storage::from_config(config, credential)?)),
        #[cfg(feature = "azure")]
        "azure_blob" | "azure" => Ok(Arc::new(AzureBlobStorage::from_config(config, credential)?)),
        #[cfg(not(feature = "s3"))]
        "s3" => Err(StorageError::FeatureDisabled {
            storage_type: "s3".into(),
            feature: "s3",
        }),
        #[cfg(not(feature = "azure"))]
        t @ ("azure_blob" | "azure") => Err(StorageError::FeatureDisabled {
            storage_type: t.into(),
            feature: "azure",
        }),
        other => Err(StorageError::UnknownType(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_path_rules() {
        for bad in [
            "../x", "a/../b", "..", "/abs", "a\\b", "a\0b", "c:/x", "a/\n", "/",
        ] {
            let err = RelPath::parse(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Invalid, "{bad}");
        }
        assert_eq!(
            RelPath::parse("a//b/./c/").map(|p| p.to_string()).ok(),
            Some("a/b/c".into())
        );
        assert!(RelPath::parse("").map(|p| p.is_root()).unwrap_or(false));
        assert!(RelPath::parse_file("").is_err());
        assert!(RelPath::parse_file("./").is_err());
        assert!(RelPath::parse("a/b:c/..d").is_ok());
    }

    #[test]
    fn urls_follow_upstream_urljoin() {
        let u = |b, d, r| public_url(b, d, r).ok();
        assert_eq!(u("http://h/", "", "x.tgz"), Some("http://h/x.tgz".into()));
        assert_eq!(
            u("http://h/base/", "job-1", "log.txt"),
            Some("http://h/base/job-1/log.txt".into())
        );
        assert_eq!(u("http://h/base", "d", "f"), Some("http://h/d/f".into()));
        assert_eq!(
            u("http://h/", "a/b/", "c/d"),
            Some("http://h/a/b/c/d".into())
        );
        assert!(public_url("http://h/", "../x", "f").is_err());
        assert!(public_url("not a url", "", "f").is_err());
    }

    #[test]
    fn config_defaults_and_factory() {
        let cfg = StorageConfig::from_value(serde_json::json!({
            "storage_type": "ssh", "host": "172.17.0.1", "base_url": "http://172.17.0.1:8002/"
        }))
        .expect("valid");
        assert_eq!(
            (cfg.port, cfg.user.as_str(), cfg.path.as_str()),
            (22, "kernelci", "~/data")
        );
        let err =
            from_config(&StorageConfig::new("azure-blob", "http://x/"), None).expect_err("unknown");
        assert!(matches!(err, StorageError::UnknownType(_)));
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(StorageConfig::from_value(serde_json::json!({"base_url": "x"})).is_err());
    }
}
