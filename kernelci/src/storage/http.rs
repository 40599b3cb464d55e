//! [`HttpStorage`]: upstream's `backend` storage type, the kernelci-storage HTTP protocol
//! (reqwest, feature `client`).
//!
//! - `POST <api_url>/upload`, multipart: text field `path=<dest_path>`, then files
//!   `file0..fileN` whose filename is the remote name.
//! - `POST <api_url>/v1/archive`, multipart: `path` and the file `archive`; the JSON reply
//!   `{failed, failures[]}` must say `failed == 0`.
//! - The credential is sent as-is in the `Authorization` header (`Bearer <token>` or a bare
//!   token, as configured).
//! - Up to 5 attempts (config `retries`) with doubling delays on timeouts, connection errors
//!   and 5xx answers; a 4xx fails at once. A [`UploadSource::Reader`] can only be sent once,
//!   so a request holding one is not retried.
//! - Files stream from disk; nothing is buffered whole.
//! - [`Storage::exists`] asks `HEAD <public URL>` (the protocol has no existence call), so it
//!   needs `base_url` to serve the stored files, as the server's endpoint does.
//! - Upstream waits a fixed 10 s between attempts; the default here is 2 s, doubled after each
//!   failure (2, 4, 8, 16 s), configurable with `retry_delay`.
//!
//! Binaries using this must install a rustls crypto provider first
//! (`rustls::crypto::ring::default_provider().install_default()`).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::multipart::{Form, Part};
use reqwest::{Body, StatusCode};
use tokio_util::io::ReaderStream;

use super::archive::ArchiveReport;
use super::{RelPath, Storage, StorageError, UploadFile, UploadSource, UrlMap, plan_upload};
use crate::ErrorKind;
use crate::retry::Backoff;

const STREAM_CHUNK: usize = 256 * 1024;

/// Artifact storage behind a kernelci-storage compatible HTTP API.
#[derive(Debug, Clone)]
pub struct HttpStorage {
    client: reqwest::Client,
    api_url: String,
    base_url: String,
    credential: Option<String>,
    attempts: u32,
    retry_delay: Duration,
    timeout: Duration,
}

/// One file of a request, re-openable for retries when it is a file or bytes.
enum Pending {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
    Reader(Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>),
}

impl Pending {
    async fn part(&mut self, name: &str) -> Result<Part, StorageError> {
        let part = match self {
            Pending::File(path) => {
                let file = tokio::fs::File::open(&*path)
                    .await
                    .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
                let len = file
                    .metadata()
                    .await
                    .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?
                    .len();
                let stream = ReaderStream::with_capacity(file, STREAM_CHUNK);
                Part::stream_with_length(Body::wrap_stream(stream), len)
            }
            Pending::Bytes(bytes) => Part::bytes(bytes.clone()),
            Pending::Reader(reader) => {
                let reader = reader.take().ok_or_else(|| {
                    StorageError::backend(
                        "retrying an upload",
                        ErrorKind::Internal,
                        "a reader source can only be sent once",
                    )
                })?;
                Part::stream(Body::wrap_stream(ReaderStream::with_capacity(
                    reader,
                    STREAM_CHUNK,
                )))
            }
        };
        part.file_name(name.to_owned())
            .mime_str("application/octet-stream")
            .map_err(|e| StorageError::backend("building a multipart part", ErrorKind::Internal, e))
    }
}

impl HttpStorage {
    /// A client of the storage API at `api_url`, whose files are public under `base_url`.
    pub fn new(
        api_url: &str,
        base_url: &str,
        credential: Option<&str>,
    ) -> Result<HttpStorage, StorageError> {
        for (key, value) in [("api_url", api_url), ("base_url", base_url)] {
            url::Url::parse(value)
                .map_err(|e| StorageError::Config(format!("{key} {value:?}: {e}")))?;
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| {
                StorageError::backend("building the HTTP client", ErrorKind::Internal, e)
            })?;
        Ok(HttpStorage {
            client,
            api_url: api_url.trim_end_matches('/').to_owned(),
            base_url: base_url.to_owned(),
            credential: credential.map(str::to_owned),
            attempts: 5,
            retry_delay: Duration::from_secs(2),
            timeout: Duration::from_secs(300),
        })
    }

    /// Builds the client from an upstream `backend` config entry; `credential` is the token.
    pub fn from_config(
        config: &super::StorageConfig,
        credential: Option<&str>,
    ) -> Result<HttpStorage, StorageError> {
        let api_url = config
            .api_url
            .as_deref()
            .ok_or_else(|| StorageError::Config("backend storage needs `api_url`".into()))?;
        let mut storage = HttpStorage::new(api_url, &config.base_url, credential)?;
        if let Some(attempts) = config.retries {
            storage.attempts = attempts.max(1);
        }
        if let Some(delay) = config.retry_delay {
            storage.retry_delay = Duration::try_from_secs_f64(delay)
                .map_err(|e| StorageError::Config(format!("retry_delay {delay}: {e}")))?;
        }
        if let Some(secs) = config.timeout {
            storage.timeout = Duration::from_secs(secs);
        }
        Ok(storage)
    }

    /// Sets the number of attempts and the first delay between them (doubled each time).
    pub fn with_retries(mut self, attempts: u32, first_delay: Duration) -> HttpStorage {
        self.attempts = attempts.max(1);
        self.retry_delay = first_delay;
        self
    }

    /// Sets the request timeout of uploads (archives get three times as long).
    pub fn with_timeout(mut self, timeout: Duration) -> HttpStorage {
        self.timeout = timeout;
        self
    }

    /// Sends a multipart POST to `<api_url><route>` with retries; returns the reply body.
    async fn post(
        &self,
        route: &str,
        dest: &RelPath,
        parts: &mut [(String, String, Pending)],
        timeout: Duration,
    ) -> Result<String, StorageError> {
        let url = format!("{}{route}", self.api_url);
        let retryable = !parts
            .iter()
            .any(|(_, _, p)| matches!(p, Pending::Reader(_)));
        let attempts = if retryable { self.attempts } else { 1 };
        let mut delays = Backoff::new(self.retry_delay, Duration::from_secs(60))
            .attempts(attempts)
            .delays();
        let mut attempt = 1;
        loop {
            let (error, transient) = match self.post_once(&url, dest, parts, timeout).await {
                Ok(body) => return Ok(body),
                Err(failure) => failure,
            };
            let delay = match delays.next() {
                Some(delay) if transient => delay,
                _ => return Err(error),
            };
            tracing::warn!(attempt, %error, "storage upload failed, retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One multipart POST; an error says whether it is worth another attempt.
    async fn post_once(
        &self,
        url: &str,
        dest: &RelPath,
        parts: &mut [(String, String, Pending)],
        timeout: Duration,
    ) -> Result<String, (StorageError, bool)> {
        let mut form = Form::new()
            .percent_encode_noop()
            .text("path", dest.to_string());
        for (field, name, pending) in parts.iter_mut() {
            form = form.part(
                field.clone(),
                pending.part(name).await.map_err(|e| (e, false))?,
            );
        }
        let mut request = self.client.post(url).multipart(form).timeout(timeout);
        if let Some(credential) = &self.credential {
            request = request.header(reqwest::header::AUTHORIZATION, credential);
        }
        let context = format!("POST {url}");
        match request.send().await {
            Ok(response) if response.status().is_success() => response
                .text()
                .await
                .map_err(|e| (transport(&context, e), false)),
            Ok(response) => {
                let status = response.status();
                let body: String = response
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(500)
                    .collect();
                let error = StorageError::Rejected {
                    context,
                    status: status.as_u16(),
                    body,
                };
                Err((error, status.is_server_error()))
            }
            Err(e) => {
                // Uploads are idempotent: a connection dropped mid-request is retried too.
                let transient = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body();
                Err((transport(&context, e), transient))
            }
        }
    }
}

fn transport(context: &str, e: reqwest::Error) -> StorageError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    StorageError::backend(context, kind, e)
}

/// Refuses names that cannot travel unescaped in a multipart `filename="..."`.
fn check_multipart_name(name: &str) -> Result<(), StorageError> {
    if name.contains('"') {
        return Err(StorageError::InvalidPath {
            path: name.to_owned(),
            reason: "contains a double quote (not allowed by the HTTP backend)",
        });
    }
    Ok(())
}

#[async_trait]
impl Storage for HttpStorage {
    fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn upload(
        &self,
        files: Vec<UploadFile>,
        dest_path: &str,
    ) -> Result<Option<UrlMap>, StorageError> {
        let (dest, items) = plan_upload(files, dest_path)?;
        let mut parts = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let remote = item.remote.to_string();
            check_multipart_name(&remote)?;
            let pending = match item.source {
                UploadSource::File(path) => Pending::File(path),
                UploadSource::Bytes(bytes) => Pending::Bytes(bytes),
                UploadSource::Reader(reader) => Pending::Reader(Some(reader)),
            };
            parts.push((format!("file{i}"), remote, pending));
        }
        self.post("/upload", &dest, &mut parts, self.timeout)
            .await?;
        Ok(None)
    }

    async fn exists(&self, dest_path: &str, remote: &str) -> Result<bool, StorageError> {
        let url = self.url_for(dest_path, remote)?;
        let response = self
            .client
            .head(&url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| transport(&format!("HEAD {url}"), e))?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(StorageError::Rejected {
                context: format!("HEAD {url}"),
                status: s.as_u16(),
                body: String::new(),
            }),
        }
    }

    async fn unpack_archive(&self, archive: &Path, dest_path: &str) -> Result<bool, StorageError> {
        let dest = RelPath::parse(dest_path)?;
        let name = archive
            .file_name()
            .map(|n| n.to_string_lossy().replace('"', "_"))
            .unwrap_or_else(|| "archive.tar.gz".into());
        let mut parts = vec![(
            "archive".to_owned(),
            name,
            Pending::File(archive.to_path_buf()),
        )];
        let body = self
            .post(
                "/v1/archive",
                &dest,
                &mut parts,
                self.timeout.saturating_mul(3),
            )
            .await?;
        let report: ArchiveReport = serde_json::from_str(&body).map_err(|e| {
            StorageError::backend(
                format!(
                    "archive reply {:?}",
                    body.chars().take(200).collect::<String>()
                ),
                ErrorKind::Unavailable,
                e,
            )
        })?;
        report.into_result()?;
        Ok(true)
    }
}
