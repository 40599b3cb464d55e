//! What the cloud backends (`S3Storage`, feature `s3`, and `AzureBlobStorage`, feature
//! `azure`) share: their config keys, transfer settings and the upload engine over the
//! `object_store` crate.
//!
//! Uploads stream: a file is read in parts of [`TransferOptions::part_size`] bytes. A file
//! that fits in one part is sent with a single PUT; a larger one becomes a multipart upload
//! (S3 multipart upload, Azure block list) with at most [`TransferOptions::concurrency`] parts
//! in flight, so peak memory is about `concurrency × part_size` whatever the file size. Both
//! services only make an object visible when the upload completes, and a failed multipart
//! upload is aborted, so an interrupted upload never leaves a truncated object behind.
//!
//! Every HTTP request is retried by `object_store` on 5xx answers, timeouts and connection
//! errors, with exponential backoff ([`TransferOptions::retries`],
//! [`TransferOptions::retry_delay`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{StorageConfig, StorageError};

/// The keys of a `[storage.<name>]` / `storage:` entry that only the cloud backends read
/// (flattened into [`StorageConfig`]).
///
/// | key | `s3` | `azure_blob` | `azure` (upstream shape) |
/// |---|---|---|---|
/// | `bucket` | the bucket (required) | | |
/// | `container` | | the container (required) | the container (default: `share`) |
/// | `share` | | | upstream's Azure Files share name, used as the container |
/// | `account` | | storage account (or `AZURE_STORAGE_ACCOUNT_NAME`) | (default: from `base_url`) |
/// | `region` | region (or `AWS_REGION`; default `us-east-1`) | | |
/// | `endpoint` | S3-compatible endpoint (path-style requests) | blob endpoint (emulators) | blob endpoint |
/// | `prefix` | key prefix inside the bucket | name prefix inside the container | same |
/// | `read_token` | query string appended to every returned URL | same | same |
/// | `sas_public_token` | alias of `read_token` (upstream's name) | same | same |
/// | `part_size` | bytes per part, 5 MiB to 4000 MiB (default 8 MiB) | same | same |
/// | `concurrency` | parts in flight per file (default 2) | same | same |
///
/// The generic keys `timeout` (seconds per request, default 300), `retries` (default 5) and
/// `retry_delay` (first backoff in seconds, default 0.5, doubled up to 15 s) apply too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CloudConfig {
    /// S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Azure Blob container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Upstream `azure` (Azure Files) share name; the blob container for `azure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Azure storage account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// S3 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Service endpoint (S3-compatible server, Azure emulator or private endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Key prefix below which everything is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A query string (e.g. a read-only SAS token) appended to the returned URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token: Option<String>,
    /// Upstream's name for [`CloudConfig::read_token`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_public_token: Option<String>,
    /// Part size in bytes for multipart uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    /// Parts uploaded at once per file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
}

impl CloudConfig {
    /// The read token (`read_token`, else `sas_public_token`), if any.
    pub fn token(&self) -> Option<&str> {
        self.read_token
            .as_deref()
            .or(self.sas_public_token.as_deref())
            .filter(|t| !t.trim_start_matches(['?', '&']).is_empty())
    }
}

/// The smallest part S3 accepts (every part but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// The largest part size accepted here (Azure's block limit is 4000 MiB).
pub const MAX_PART_SIZE: usize = 4000 * 1024 * 1024;

/// How files are transferred: part size, parallelism, retries and timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferOptions {
    /// Bytes per part; a file of at most this size is sent with one PUT.
    pub part_size: usize,
    /// Parts in flight per file.
    pub concurrency: usize,
    /// Retries per HTTP request (on 5xx, timeouts and connection errors).
    pub retries: usize,
    /// The first backoff delay; doubled after each retry, up to 15 s.
    pub retry_delay: Duration,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
}

impl Default for TransferOptions {
    fn default() -> TransferOptions {
        TransferOptions {
            part_size: 8 * 1024 * 1024,
            concurrency: 2,
            retries: 5,
            retry_delay: Duration::from_millis(500),
            timeout: Duration::from_secs(300),
        }
    }
}

impl TransferOptions {
    /// The transfer settings of a config entry (`part_size`, `concurrency`, `retries`,
    /// `retry_delay`, `timeout`), validated.
    pub fn from_config(config: &StorageConfig) -> Result<TransferOptions, StorageError> {
        let mut t = TransferOptions::default();
        if let Some(size) = config.cloud.part_size {
            t.part_size = usize::try_from(size).unwrap_or(usize::MAX);
        }
        if let Some(c) = config.cloud.concurrency {
            t.concurrency = c;
        }
        if let Some(r) = config.retries {
            t.retries = usize::try_from(r).unwrap_or(usize::MAX);
        }
        if let Some(d) = config.retry_delay {
            // `try_from`: NaN, negative and too large values are errors, not panics.
            t.retry_delay = Duration::try_from_secs_f64(d).map_err(|_| {
                StorageError::Config(format!(
                    "retry_delay must be a non-negative number of seconds, got {d}"
                ))
            })?;
        }
        if let Some(s) = config.timeout {
            t.timeout = Duration::from_secs(s);
        }
        t.validate()?;
        Ok(t)
    }

    /// Checks the ranges: `part_size` within 5 MiB..=4000 MiB, `concurrency` at least 1,
    /// a non-zero timeout.
    pub fn validate(&self) -> Result<(), StorageError> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(StorageError::Config(format!(
                "part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, got {}",
                self.part_size
            )));
        }
        if self.concurrency == 0 {
            return Err(StorageError::Config(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(StorageError::Config("timeout must be at least 1 s".into()));
        }
        Ok(())
    }
}

/// Counts of what a cloud backend sent, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Files sent with one PUT.
    pub single_puts: u64,
    /// Files sent as multipart uploads (completed).
    pub multipart_uploads: u64,
    /// Parts sent by completed multipart uploads.
    pub parts: u64,
    /// Multipart uploads aborted after a failure.
    pub aborted: u64,
}

/// Appends a query-string token (`sig=...&se=...`, with or without a leading `?`) to a URL.
pub fn append_token(url: &str, token: Option<&str>) -> String {
    let Some(token) = token.map(|t| t.trim_start_matches(['?', '&'])) else {
        return url.to_owned();
    };
    if token.is_empty() {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{token}")
}

/// The content type an object gets from its name (upstream's Azure backend sets
/// `application/gzip` for `.gz` and `application/octet-stream` otherwise; logs and text get a
/// text type here so browsers show them).
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("gz" | "tgz") => "application/gzip",
        Some("xz") => "application/x-xz",
        Some("bz2") => "application/x-bzip2",
        Some("zst") => "application/zstd",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt" | "log" | "yaml" | "yml" | "patch" | "diff" | "config" | "csv") => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

#[cfg(any(feature = "s3", feature = "azure"))]
pub(crate) use engine::{ObjectStorage, client_options, retry_config};

/// What the cloud backends (`S3Storage`, `AzureBlobStorage`) offer beyond [`Storage`]: their
/// transfer counters and settings, the underlying `object_store` client, and reads.
///
/// [`Storage`]: super::Storage
#[cfg(any(feature = "s3", feature = "azure"))]
#[async_trait::async_trait]
pub trait CloudStorage: super::Storage {
    /// What this storage sent so far (single PUTs, multipart uploads and their parts).
    fn stats(&self) -> UploadStats;

    /// The transfer settings in use.
    fn transfer(&self) -> &TransferOptions;

    /// The underlying `object_store` client (for reads, listings, metadata).
    fn object_store(&self) -> std::sync::Arc<dyn object_store::ObjectStore>;

    /// The object key of a path relative to the storage root (the prefix prepended).
    fn key(&self, path: &str) -> Result<object_store::path::Path, StorageError>;

    /// The bytes stored at `path` (relative to the storage root), `None` when absent.
    async fn read(&self, path: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Checks that the bucket/container exists (done once, before the first upload or
    /// lookup; a failed check is not remembered).
    async fn check(&self) -> Result<(), StorageError>;
}

/// Implements [`CloudStorage`] and [`Storage`](super::Storage) for a cloud backend whose
/// field `inner` is the shared [`ObjectStorage`] engine.
#[cfg(any(feature = "s3", feature = "azure"))]
macro_rules! cloud_storage_impls {
    ($backend:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::cloud::CloudStorage for $backend {
            fn stats(&self) -> $crate::storage::cloud::UploadStats {
                self.inner.stats()
            }

            fn transfer(&self) -> &$crate::storage::cloud::TransferOptions {
                self.inner.transfer()
            }

            fn object_store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
                self.inner.store().clone()
            }

            fn key(
                &self,
                path: &str,
            ) -> Result<object_store::path::Path, $crate::storage::StorageError> {
                Ok(self.inner.key(&$crate::storage::RelPath::parse(path)?))
            }

            async fn read(
                &self,
                path: &str,
            ) -> Result<Option<Vec<u8>>, $crate::storage::StorageError> {
                self.inner.read(path).await
            }

            async fn check(&self) -> Result<(), $crate::storage::StorageError> {
                self.inner.ensure_ready().await
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::Storage for $backend {
            fn base_url(&self) -> &str {
                self.inner.base_url()
            }

            async fn upload(
                &self,
                files: Vec<$crate::storage::UploadFile>,
                dest_path: &str,
            ) -> Result<Option<$crate::storage::UrlMap>, $crate::storage::StorageError> {
                self.inner.upload(files, dest_path).await.map(Some)
            }

            async fn exists(
                &self,
                dest_path: &str,
                remote: &str,
            ) -> Result<bool, $crate::storage::StorageError> {
                self.inner.exists(dest_path, remote).await
            }

            /// Object stores cannot unpack: the caller uploads the files one by one.
            async fn unpack_archive(
                &self,
                _archive: &std::path::Path,
                _dest_path: &str,
            ) -> Result<bool, $crate::storage::StorageError> {
                Ok(false)
            }

            fn url_for(
                &self,
                dest_path: &str,
                remote: &str,
            ) -> Result<String, $crate::storage::StorageError> {
                self.inner.url_for(dest_path, remote)
            }
        }
    };
}
#[cfg(any(feature = "s3", feature = "azure"))]
pub(crate) use cloud_storage_impls;

#[cfg(any(feature = "s3", feature = "azure"))]
mod engine {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use futures::StreamExt;
    use object_store::path::Path as ObjectPath;
    use std::time::Duration;

    use object_store::{
        Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
        PutPayload, WriteMultipart,
    };
    use object_store::{BackoffConfig, ClientOptions, RetryConfig};
    use tokio::io::{AsyncRead, AsyncReadExt};

    use super::{TransferOptions, UploadStats, append_token, content_type};
    use crate::ErrorKind;
    use crate::storage::{RelPath, StorageError, UploadFile, UrlMap, plan_upload, public_url};

    pub(crate) fn retry_config(t: &TransferOptions) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: t.retry_delay,
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: t.retries,
            // Saturating: huge `timeout`/`retries` values must not overflow (a panic).
            retry_timeout: t.timeout.saturating_mul(
                u32::try_from(t.retries)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1),
            ),
        }
    }

    pub(crate) fn client_options(t: &TransferOptions, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(t.timeout)
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(allow_http)
    }

    #[derive(Debug, Default)]
    struct Counters {
        single_puts: AtomicU64,
        multipart_uploads: AtomicU64,
        parts: AtomicU64,
        aborted: AtomicU64,
    }

    /// The engine both cloud backends wrap: an `ObjectStore`, where in it we write, and how
    /// URLs are made.
    #[derive(Debug)]
    pub(crate) struct ObjectStorage {
        store: Arc<dyn ObjectStore>,
        /// `S3 bucket "x"`, `Azure container "x" (account "a")`: for messages.
        what: String,
        prefix: RelPath,
        public_base: String,
        read_token: Option<String>,
        transfer: TransferOptions,
        checked: tokio::sync::OnceCell<()>,
        counters: Counters,
    }

    /// The HTTP status inside an `object_store` error, when it carries one (its request
    /// error is not a public type, so the status is read from the message it prints).
    fn status_of(err: &(dyn std::error::Error + 'static)) -> Option<u16> {
        let mut current = Some(err);
        while let Some(e) = current {
            let text = e.to_string();
            if let Some(rest) = text.split("status code: ").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(code) = digits.parse::<u16>()
                    && (100..600).contains(&code)
                {
                    return Some(code);
                }
            }
            current = e.source();
        }
        None
    }

    /// Whether the error chain holds a transport failure (connection refused, timeout).
    fn transport_kind(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
        let mut current = Some(err);
        while let Some(e) = current {
            if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
                return Some(match http.kind() {
                    object_store::client::HttpErrorKind::Timeout => ErrorKind::Timeout,
                    _ => ErrorKind::Unavailable,
                });
            }
            current = e.source();
        }
        None
    }

    /// Reads up to `limit` bytes (less only at the end of the source), in a buffer that
    /// starts at `initial` bytes and never grows past `limit` (so a part costs its size).
    async fn read_chunk(
        reader: &mut (dyn AsyncRead + Send + Unpin),
        limit: usize,
        initial: usize,
    ) -> std::io::Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::with_capacity(initial.clamp(1, limit));
        while buf.len() < limit {
            if buf.len() == buf.capacity() {
                let target = (buf.capacity() * 2).min(limit);
                buf.reserve_exact(target - buf.len());
            }
            // Reads into the spare capacity only (it is non-empty here).
            if reader.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        Ok(buf)
    }

    impl ObjectStorage {
        pub(crate) fn new(
            store: Arc<dyn ObjectStore>,
            what: String,
            prefix: &str,
            public_base: String,
            read_token: Option<String>,
            transfer: TransferOptions,
        ) -> Result<ObjectStorage, StorageError> {
            transfer.validate()?;
            let prefix = RelPath::parse(prefix)?;
            url::Url::parse(&public_base)
                .map_err(|e| StorageError::Config(format!("base_url {public_base:?}: {e}")))?;
            Ok(ObjectStorage {
                store,
                what,
                prefix,
                public_base,
                read_token,
                transfer,
                checked: tokio::sync::OnceCell::new(),
                counters: Counters::default(),
            })
        }

        pub(crate) fn base_url(&self) -> &str {
            &self.public_base
        }

        pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
            &self.store
        }

        pub(crate) fn transfer(&self) -> &TransferOptions {
            &self.transfer
        }

        pub(crate) fn stats(&self) -> UploadStats {
            UploadStats {
                single_puts: self.counters.single_puts.load(Ordering::Relaxed),
                multipart_uploads: self.counters.multipart_uploads.load(Ordering::Relaxed),
                parts: self.counters.parts.load(Ordering::Relaxed),
                aborted: self.counters.aborted.load(Ordering::Relaxed),
            }
        }

        /// The object key of a path relative to the storage root.
        pub(crate) fn key(&self, path: &RelPath) -> ObjectPath {
            ObjectPath::from_iter(self.prefix.join(path).segments().iter().map(String::as_str))
        }

        pub(crate) fn url_for(
            &self,
            dest_path: &str,
            remote: &str,
        ) -> Result<String, StorageError> {
            let url = public_url(&self.public_base, dest_path, remote)?;
            Ok(append_token(&url, self.read_token.as_deref()))
        }

        /// A `StorageError` for a failed operation, naming the bucket/container.
        pub(crate) fn error(&self, doing: &str, err: object_store::Error) -> StorageError {
            let status = status_of(&err);
            let context = format!("{doing} in {}", self.what);
            match (&err, status) {
                (object_store::Error::PermissionDenied { .. }, _)
                | (object_store::Error::Unauthenticated { .. }, _)
                | (_, Some(401 | 403)) => StorageError::Auth {
                    context: format!("{} refused the credentials ({doing}): {err}", self.what),
                    source: Some(Box::new(err)),
                },
                (object_store::Error::NotFound { .. }, _) | (_, Some(404)) => {
                    StorageError::backend(
                        format!("{context}: {} does not exist", self.what),
                        ErrorKind::NotFound,
                        err,
                    )
                }
                (_, Some(code)) => {
                    let kind = match code {
                        408 => ErrorKind::Timeout,
                        409 | 412 => ErrorKind::Conflict,
                        400..=499 => ErrorKind::Invalid,
                        _ => ErrorKind::Unavailable,
                    };
                    StorageError::backend(context, kind, err)
                }
                (_, None) => {
                    let kind = transport_kind(&err).unwrap_or(ErrorKind::Unavailable);
                    StorageError::backend(context, kind, err)
                }
            }
        }

        /// Checks once that the bucket/container exists (listing one page below the prefix).
        /// A missing bucket is an error; a credential that may not list (write-only SAS) is
        /// let through, and a bad credential fails on the first write with an `Auth` error.
        pub(crate) async fn ensure_ready(&self) -> Result<(), StorageError> {
            self.checked
                .get_or_try_init(|| async {
                    let probe = self.key(&RelPath::default());
                    let mut listing = self.store.list(Some(&probe));
                    match listing.next().await {
                        None | Some(Ok(_)) => Ok(()),
                        Some(Err(err)) => match self.error("checking the store", err) {
                            StorageError::Auth { .. } => {
                                tracing::debug!(
                                    "{}: listing refused; going on (write-only credential?)",
                                    self.what
                                );
                                Ok(())
                            }
                            other => Err(other),
                        },
                    }
                })
                .await
                .map(|_| ())
        }

        pub(crate) async fn upload(
            &self,
            files: Vec<UploadFile>,
            dest_path: &str,
        ) -> Result<UrlMap, StorageError> {
            let (_, items) = plan_upload(files, dest_path)?;
            self.ensure_ready().await?;
            let mut urls = UrlMap::new();
            for item in items {
                let key = self.key(&item.path);
                self.put_one(item.source, &key, &item.path).await?;
                let url = self.url_for(dest_path, &item.name)?;
                urls.insert(item.name, url);
            }
            Ok(urls)
        }

        async fn put_one(
            &self,
            source: crate::storage::UploadSource,
            key: &ObjectPath,
            path: &RelPath,
        ) -> Result<(), StorageError> {
            let part_size = self.transfer.part_size;
            let ctype = content_type(path.file_name().unwrap_or_default());
            let attributes: Attributes = [(Attribute::ContentType, ctype)].into_iter().collect();
            let read_err = |e| StorageError::io(format!("reading the source of {path}"), e);
            let mut reader = source.open().await?;
            let first = read_chunk(&mut *reader, part_size, 64 * 1024)
                .await
                .map_err(read_err)?;
            if first.len() < part_size {
                let opts = PutOptions::from(attributes);
                self.store
                    .put_opts(key, PutPayload::from(first), opts)
                    .await
                    .map_err(|e| self.error(&format!("uploading {path}"), e))?;
                self.counters.single_puts.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let upload = self
                .store
                .put_multipart_opts(key, PutMultipartOptions::from(attributes))
                .await
                .map_err(|e| self.error(&format!("starting the multipart upload of {path}"), e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
            writer.put(Bytes::from(first));
            let mut parts = 1u64;
            loop {
                if let Err(e) = writer.wait_for_capacity(self.transfer.concurrency).await {
                    self.abort(writer, path).await;
                    return Err(self.error(&format!("uploading a part of {path}"), e));
                }
                match read_chunk(&mut *reader, part_size, part_size).await {
                    Ok(chunk) if chunk.is_empty() => break,
                    Ok(chunk) => {
                        writer.put(Bytes::from(chunk));
                        parts += 1;
                    }
                    Err(e) => {
                        self.abort(writer, path).await;
                        return Err(read_err(e));
                    }
                }
            }
            // `finish` aborts the upload itself when a part or the completion fails.
            if let Err(e) = writer.finish().await {
                self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                return Err(self.error(&format!("completing the multipart upload of {path}"), e));
            }
            self.counters
                .multipart_uploads
                .fetch_add(1, Ordering::Relaxed);
            self.counters.parts.fetch_add(parts, Ordering::Relaxed);
            Ok(())
        }

        async fn abort(&self, writer: WriteMultipart, path: &RelPath) {
            self.counters.aborted.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = writer.abort().await {
                tracing::warn!(
                    "aborting the multipart upload of {path} in {}: {e}",
                    self.what
                );
            }
        }

        pub(crate) async fn exists(
            &self,
            dest_path: &str,
            remote: &str,
        ) -> Result<bool, StorageError> {
            let path = RelPath::parse(dest_path)?.join(&RelPath::parse_file(remote)?);
            self.ensure_ready().await?;
            match self.store.head(&self.key(&path)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.error(&format!("looking up {path}"), e)),
            }
        }

        /// The bytes stored at `path` (relative to the storage root), `None` when absent.
        pub(crate) async fn read(&self, path: &str) -> Result<Option<Vec<u8>>, StorageError> {
            let path = RelPath::parse_file(path)?;
            let got = match self.store.get(&self.key(&path)).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error(&format!("reading {path}"), e)),
            };
            let bytes = got
                .bytes()
                .await
                .map_err(|e| self.error(&format!("reading {path}"), e))?;
            Ok(Some(bytes.to_vec()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_appended_once() {
        assert_eq!(append_token("http://h/a", None), "http://h/a");
        assert_eq!(
            append_token("http://h/a", Some("?sv=1&sig=x")),
            "http://h/a?sv=1&sig=x"
        );
        assert_eq!(
            append_token("http://h/a?x=1", Some("sig=y")),
            "http://h/a?x=1&sig=y"
        );
        assert_eq!(append_token("http://h/a", Some("?")), "http://h/a");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("linux.tar.gz"), "application/gzip");
        assert_eq!(content_type("log.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type("bzImage"), "application/octet-stream");
    }

    #[test]
    fn transfer_options_are_validated() {
        let mut cfg = StorageConfig::new("s3", "http://x/");
        assert_eq!(
            TransferOptions::from_config(&cfg).ok(),
            Some(TransferOptions::default())
        );
        cfg.cloud.part_size = Some(1024);
        let err = TransferOptions::from_config(&cfg).expect_err("too small");
        assert!(err.to_string().contains("part_size"), "{err}");
        cfg.cloud.part_size = None;
        cfg.cloud.concurrency = Some(0);
        assert!(TransferOptions::from_config(&cfg).is_err());
        cfg.cloud.concurrency = Some(4);
        cfg.retry_delay = Some(-1.0);
        assert!(TransferOptions::from_config(&cfg).is_err());
        cfg.retry_delay = Some(1e300);
        assert!(TransferOptions::from_config(&cfg).is_err());
        cfg.retry_delay = Some(f64::NAN);
        assert!(TransferOptions::from_config(&cfg).is_err());
    }

    #[cfg(any(feature = "s3", feature = "azure"))]
    #[test]
    fn huge_timeouts_and_retries_saturate() {
        let t = TransferOptions {
            timeout: Duration::from_secs(u64::MAX),
            retries: usize::MAX,
            ..TransferOptions::default()
        };
        assert_eq!(retry_config(&t).retry_timeout, Duration::MAX);
    }

    #[test]
    fn cloud_keys_parse_from_an_entry() {
        let cfg = StorageConfig::from_value(serde_json::json!({
            "storage_type": "s3", "base_url": "https://cdn.example/", "bucket": "kci",
            "region": "eu-west-1", "part_size": 16777216, "read_token": "?sig=1"
        }))
        .expect("valid");
        assert_eq!(cfg.cloud.bucket.as_deref(), Some("kci"));
        assert_eq!(cfg.cloud.region.as_deref(), Some("eu-west-1"));
        assert_eq!(cfg.cloud.part_size, Some(16 * 1024 * 1024));
        assert_eq!(cfg.cloud.token(), Some("?sig=1"));
        let back = serde_json::to_value(&cfg).expect("serialize");
        assert!(back.get("container").is_none(), "{back}");
    }
}
