//! The storage upload endpoint: the server side of the kernelci-storage protocol that
//! [`kernelci::storage::HttpStorage`] (upstream's `backend` storage type) speaks.
//!
//! - `POST /upload`, multipart: a text field `path` (the destination directory), then one or
//!   more file parts (`file0..fileN`) whose filename is the remote name. Each part streams to a
//!   temporary file next to its final name and is renamed into place only once the whole
//!   request was received, so a dropped connection leaves nothing behind.
//! - `POST /v1/archive`, multipart: `path`, then the file `archive` (a `.tar.gz`), unpacked
//!   below `path`; the reply is `{"failed": n, "failures": [...], "files": [...]}`.
//! - `GET`/`HEAD /<path>`: the stored files.
//!
//! Uploads need `Authorization: Bearer <token>` (a bare `<token>` is accepted too), where the
//! token is the server's storage token (`--storage-token`): a shared secret of its own, not an
//! API token. With an empty token the endpoint is read-only: every upload is a 401 that says
//! so. Paths follow
//! [`kernelci::storage::RelPath`]'s rules; a bad one is a `400` with `{"detail": ...}`.

use std::sync::Arc;

use bytes::Buf;
use futures::{Stream, TryStreamExt};
use kernelci::ErrorKind;
use kernelci::storage::archive::unpack_tar_gz_file;
use kernelci::storage::local::PartFile;
use kernelci::storage::{LocalStorage, RelPath, StorageError};
use tokio::io::AsyncWriteExt;
use warp::http::StatusCode;
use warp::multipart::{FormData, Part};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

/// Longest accepted `path` text field.
const MAX_FIELD: usize = 4096;

/// The upload endpoint over `storage`'s directory, accepting uploads bearing `token` (an empty
/// `token` accepts none).
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// let storage = kernelci::storage::LocalStorage::new("/srv/kernelci", "http://files/").unwrap();
/// let routes = kernelci_server::storage_upload::routes(Arc::new(storage), "secret");
/// warp::serve(routes).run(([127, 0, 0, 1], 8002)).await;
/// # }
/// ```
pub fn routes(
    storage: Arc<LocalStorage>,
    token: impl Into<String>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let token = Arc::new(token.into());
    let with_storage = {
        let storage = storage.clone();
        warp::any().map(move || storage.clone())
    };
    let authorized = warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let token = token.clone();
            async move {
                if token.trim().is_empty() {
                    Err(warp::reject::custom(UploadsDisabled))
                } else if token_matches(header.as_deref(), &token) {
                    Ok::<(), Rejection>(())
                } else {
                    Err(warp::reject::custom(Unauthorized))
                }
            }
        })
        .untuple_one();
    let form = warp::multipart::form().max_length(None);
    let upload = warp::post()
        .and(warp::path!("upload"))
        .and(authorized.clone())
        .and(with_storage.clone())
        .and(form.clone())
        .then(handle_upload);
    let archive = warp::post()
        .and(warp::path!("v1" / "archive"))
        .and(authorized)
        .and(with_storage)
        .and(form)
        .then(handle_archive);
    // A missing file is a plain 404 (not the 405 of the POST routes it would merge with).
    let files = warp::get().or(warp::head()).unify().and(
        warp::fs::dir(storage.root().to_path_buf())
            .map(Reply::into_response)
            .recover(|rejection: Rejection| async move {
                if rejection.is_not_found() {
                    Ok(detail(StatusCode::NOT_FOUND, "Not Found"))
                } else {
                    Err(rejection)
                }
            })
            .unify(),
    );
    upload
        .or(archive)
        .unify()
        .or(files)
        .unify()
        .recover(recover)
        .unify()
}

#[derive(Debug)]
struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

#[derive(Debug)]
struct UploadsDisabled;
impl warp::reject::Reject for UploadsDisabled {}

/// Constant-time comparison of the presented credential with the token.
fn token_matches(header: Option<&str>, token: &str) -> bool {
    let Some(header) = header else { return false };
    let presented = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or(header)
        .trim();
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    if a.len() != b.len() || token.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn recover(rejection: Rejection) -> Result<Response, Rejection> {
    if rejection.find::<Unauthorized>().is_some() {
        return Ok(detail(StatusCode::UNAUTHORIZED, "missing or invalid token"));
    }
    if rejection.find::<UploadsDisabled>().is_some() {
        return Ok(detail(
            StatusCode::UNAUTHORIZED,
            "uploads are disabled: the server has no storage token (--storage-token, KCI_STORAGE_TOKEN)",
        ));
    }
    Err(rejection)
}

fn detail(status: StatusCode, message: &str) -> Response {
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "detail": message })),
        status,
    )
    .into_response()
}

fn error_reply(error: &StorageError) -> Response {
    let status = match error.kind() {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Unauthorized => StatusCode::FORBIDDEN,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(%error, "storage upload failed");
    }
    detail(status, &error.to_string())
}

fn bad_form(e: warp::Error) -> StorageError {
    StorageError::io(
        "reading the multipart body",
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    )
}

async fn read_text(part: Part) -> Result<String, StorageError> {
    let mut text = Vec::new();
    let mut stream = std::pin::pin!(part.stream());
    while let Some(mut chunk) = stream.try_next().await.map_err(bad_form)? {
        while chunk.has_remaining() {
            let bytes = chunk.chunk();
            if text.len() + bytes.len() > MAX_FIELD {
                return Err(StorageError::InvalidPath {
                    path: String::from_utf8_lossy(&text).into_owned(),
                    reason: "path field too long",
                });
            }
            text.extend_from_slice(bytes);
            let n = bytes.len();
            chunk.advance(n);
        }
    }
    String::from_utf8(text).map_err(|_| StorageError::InvalidPath {
        path: String::new(),
        reason: "path field is not UTF-8",
    })
}

/// Streams a part into a temporary file next to `target`; the caller commits it.
async fn stream_part(part: Part, target: &std::path::Path) -> Result<PartFile, StorageError> {
    let (temp, mut file) = PartFile::create(target).await?;
    let write_err = |e| StorageError::io(format!("writing {}", target.display()), e);
    let mut stream = std::pin::pin!(part.stream());
    while let Some(mut chunk) = stream.try_next().await.map_err(bad_form)? {
        while chunk.has_remaining() {
            let bytes = chunk.chunk();
            file.write_all(bytes).await.map_err(write_err)?;
            let n = bytes.len();
            chunk.advance(n);
        }
    }
    file.flush().await.map_err(write_err)?;
    file.sync_all().await.map_err(write_err)?;
    Ok(temp)
}

async fn next_part(
    form: &mut (impl Stream<Item = Result<Part, warp::Error>> + Unpin),
) -> Result<Option<Part>, StorageError> {
    form.try_next().await.map_err(bad_form)
}

async fn handle_upload(storage: Arc<LocalStorage>, form: FormData) -> Response {
    match upload(&storage, form).await {
        Ok(files) => warp::reply::json(&serde_json::json!({ "files": files })).into_response(),
        Err(e) => error_reply(&e),
    }
}

async fn upload(storage: &LocalStorage, mut form: FormData) -> Result<Vec<String>, StorageError> {
    let mut dest: Option<RelPath> = None;
    let mut staged = Vec::new();
    while let Some(part) = next_part(&mut form).await? {
        if part.name() == "path" {
            dest = Some(RelPath::parse(&read_text(part).await?)?);
            continue;
        }
        let Some(filename) = part.filename().map(str::to_owned) else {
            continue; // an unknown text field
        };
        let remote = RelPath::parse_file(&filename)?;
        let dest = dest.as_ref().ok_or_else(|| {
            StorageError::Config("the `path` field must come before the files".into())
        })?;
        let rel = dest.join(&remote);
        let temp = stream_part(part, &storage.local_path(&rel)).await?;
        staged.push((rel, temp));
    }
    if staged.is_empty() {
        return Err(StorageError::Config("no file in the upload".into()));
    }
    // Everything arrived: move the files into place.
    let mut names = Vec::with_capacity(staged.len());
    for (rel, temp) in staged {
        temp.commit()?;
        names.push(rel.to_string());
    }
    Ok(names)
}

async fn handle_archive(storage: Arc<LocalStorage>, form: FormData) -> Response {
    match archive(storage, form).await {
        Ok(report) => warp::reply::json(&report).into_response(),
        Err(e) => error_reply(&e),
    }
}

async fn archive(
    storage: Arc<LocalStorage>,
    mut form: FormData,
) -> Result<kernelci::storage::archive::ArchiveReport, StorageError> {
    let mut dest: Option<RelPath> = None;
    let mut received: Option<PartFile> = None;
    while let Some(part) = next_part(&mut form).await? {
        match part.name() {
            "path" => dest = Some(RelPath::parse(&read_text(part).await?)?),
            "archive" => {
                // Spooled under a hidden name in the root; removed when `received` drops.
                let spool = storage.root().join(".incoming-archive");
                received = Some(stream_part(part, &spool).await?);
            }
            _ => {}
        }
    }
    let (Some(dest), Some(received)) = (dest, received) else {
        return Err(StorageError::Config(
            "an archive upload needs the `path` field and the `archive` file".into(),
        ));
    };
    let target = storage.local_path(&dest);
    tokio::task::spawn_blocking(move || {
        let report = unpack_tar_gz_file(received.temp_path(), &target);
        drop(received);
        report
    })
    .await
    .map_err(|e| StorageError::backend("unpack task", ErrorKind::Internal, e))?
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_with_or_without_bearer() {
        assert!(token_matches(Some("Bearer abc"), "abc"));
        assert!(token_matches(Some("abc"), "abc"));
        assert!(!token_matches(Some("Bearer abd"), "abc"));
        assert!(!token_matches(Some("Bearer ab"), "abc"));
        assert!(!token_matches(None, "abc"));
        assert!(
            !token_matches(Some(""), ""),
            "an empty configured token accepts nothing"
        );
    }
}
