//! The log viewer's reads: a log from storage, never from anywhere else.
//!
//! A URL is read only when it is
//! - in this server's own storage (`--storage-dir`, served at `/storage/`): its path below
//!   `/storage/` is checked segment by segment (no `..`, no encoded separators) and the file,
//!   once its real path is known, must still be inside the storage directory; it is read from
//!   disk, not over HTTP; or
//! - below one of the storage URLs configured with `KCI_VIEWER_STORAGE_URLS` (comma-separated
//!   `http(s)://host[:port]/path/` prefixes): fetched without following redirects, with a
//!   timeout.
//!
//! Anything else is refused with 403: the viewer is not an open proxy. At most
//! [`LOG_CAP`] bytes are read; a longer log is shown up to the cap and marked truncated.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use regex::Regex;
use url::Url;
use warp::http::StatusCode;

use super::model::LogLine;
use crate::app::App;
use crate::http::ApiError;

/// Most bytes of a log read and shown.
pub const LOG_CAP: u64 = 2 * 1024 * 1024;
/// How long a remote storage may take to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// A log read from storage.
#[derive(Debug, Clone)]
pub struct LogText {
    /// The bytes read (at most [`LOG_CAP`]).
    pub bytes: Vec<u8>,
    /// Whether there was more.
    pub truncated: bool,
}

fn refused(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, detail)
}

/// Storage URL prefixes from `KCI_VIEWER_STORAGE_URLS` (bad entries are logged and skipped).
pub fn configured_storage_urls(value: Option<&str>) -> Vec<Url> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|s| match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                let mut u = u;
                if !u.path().ends_with('/') {
                    let p = format!("{}/", u.path());
                    u.set_path(&p);
                }
                Some(u)
            }
            _ => {
                tracing::warn!(url = %s, "KCI_VIEWER_STORAGE_URLS: not an http(s) URL prefix, ignored");
                None
            }
        })
        .collect()
}

/// The decoded segments of a URL path below `prefix`, refusing anything that could leave it.
fn safe_segments(path: &str, prefix: &str) -> Result<Vec<String>, ApiError> {
    let rest = path
        .strip_prefix(prefix)
        .ok_or_else(|| refused("URL is outside the storage"))?;
    let mut out = Vec::new();
    for raw in rest.split('/') {
        let lower = raw.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
            return Err(refused("URL path holds an encoded separator"));
        }
        let seg = percent_decode(raw)?;
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains(['\\', '\0']) {
            return Err(refused("URL path leaves the storage"));
        }
        out.push(seg);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes: Vec<u8> = form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes).map_err(|_| refused("URL path is not UTF-8"))
}

/// Whether `url` names this server (its listen address, loopback on its port, the public base
/// URL, or the host the request came to).
fn is_own_host(app: &App, url: &Url, host_header: Option<&str>) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default().unwrap_or(0);
    let listen = app.config.listen;
    let authority = format!("{host}:{port}");
    if port == listen.port()
        && (matches!(host, "127.0.0.1" | "localhost" | "[::1]") || host == listen.ip().to_string())
    {
        return true;
    }
    if let Some(h) = host_header {
        let h = if h.contains(':') {
            h.to_owned()
        } else {
            format!("{h}:80")
        };
        if h.eq_ignore_ascii_case(&authority) {
            return true;
        }
    }
    app.config
        .public_base_url
        .as_deref()
        .and_then(|b| Url::parse(b).ok())
        .is_some_and(|b| b.host_str() == Some(host) && b.port_or_known_default() == Some(port))
}

fn read_capped(mut r: impl Read) -> Result<LogText, ApiError> {
    let mut bytes = Vec::new();
    r.by_ref()
        .take(LOG_CAP)
        .read_to_end(&mut bytes)
        .map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))?;
    let mut probe = [0u8; 1];
    let truncated = matches!(r.read(&mut probe), Ok(n) if n > 0);
    Ok(LogText { bytes, truncated })
}

fn read_own(dir: &Path, segments: &[String]) -> Result<LogText, ApiError> {
    let root = dir
        .canonicalize()
        .map_err(|e| ApiError::internal(format!("storage directory: {e}")))?;
    let mut path: PathBuf = root.clone();
    path.extend(segments);
    let real = path
        .canonicalize()
        .map_err(|_| ApiError::not_found("Log not found in storage"))?;
    if !real.starts_with(&root) || !real.is_file() {
        return Err(refused("URL leaves the storage"));
    }
    let file =
        std::fs::File::open(&real).map_err(|_| ApiError::not_found("Log not found in storage"))?;
    read_capped(file)
}

async fn fetch_remote(url: &Url) -> Result<LogText, ApiError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| ApiError::internal(format!("HTTP client: {e}")))?;
    let resp = client
        .get(url.as_str())
        .send()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("storage: {e}")))?;
    if !resp.status().is_success() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("storage answered {}", resp.status()),
        ));
    }
    let mut stream = resp.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("storage: {e}")))?;
        let room = usize::try_from(LOG_CAP).unwrap_or(usize::MAX) - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(LogText {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(LogText {
        bytes,
        truncated: false,
    })
}

/// Reads the log at `url` from storage, or refuses (403) a URL outside it.
pub async fn read(app: &App, url: &str, host_header: Option<&str>) -> Result<LogText, ApiError> {
    let parsed = Url::parse(url).map_err(|_| ApiError::bad_request("Invalid log URL"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(refused(
            "Only http(s) storage URLs without credentials are read",
        ));
    }
    if let Some(dir) = &app.config.storage_dir
        && parsed.path().starts_with("/storage/")
        && is_own_host(app, &parsed, host_header)
    {
        let segments = safe_segments(parsed.path(), "/storage/")?;
        let dir = dir.clone();
        return tokio::task::spawn_blocking(move || read_own(&dir, &segments))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    for prefix in &app.viewer.storage_urls {
        if parsed.scheme() == prefix.scheme()
            && parsed.host_str() == prefix.host_str()
            && parsed.port_or_known_default() == prefix.port_or_known_default()
            && parsed.path().starts_with(prefix.path())
        {
            safe_segments(parsed.path(), prefix.path())?;
            return fetch_remote(&parsed).await;
        }
    }
    Err(refused(
        "URL is not in this server's storage nor in a configured storage (KCI_VIEWER_STORAGE_URLS)",
    ))
}

fn patterns() -> &'static (Option<Regex>, Option<Regex>) {
    static P: std::sync::OnceLock<(Option<Regex>, Option<Regex>)> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let error = Regex::new(
            r"(?i)(\berror\b|\berrors? ?:|\bfail(ed|ure|s)?\b|^\s*not ok\b|\bpanic|\boops\b|\bbug:|\bsegfault|\bfatal\b|\bcall trace\b)",
        )
        .ok();
        let warning = Regex::new(r"(?i)(\bwarn(ing)?s?\b)").ok();
        (error, warning)
    })
}

/// The log's lines, each marked `error` or `warning` when it looks like one.
pub fn highlight(text: &str) -> Vec<LogLine> {
    let (error, warning) = patterns();
    text.lines()
        .enumerate()
        .map(|(i, line)| LogLine {
            number: i + 1,
            text: line.to_owned(),
            level: if error.as_ref().is_some_and(|r| r.is_match(line)) {
                Some("error".into())
            } else if warning.as_ref().is_some_and(|r| r.is_match(line)) {
                Some("warning".into())
            } else {
                None
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_that_leave_the_storage_are_refused() {
        assert_eq!(
            safe_segments("/storage/job-1/log.txt", "/storage/").unwrap_or_default(),
            vec!["job-1".to_owned(), "log.txt".to_owned()]
        );
        for bad in [
            "/storage/../etc/passwd",
            "/storage/a/%2e%2e/%2e%2e/etc/passwd",
            "/storage/a%2f..%2fb",
            "/storage/a//b",
            "/storage/a\\..\\b",
            "/elsewhere/x",
        ] {
            assert!(safe_segments(bad, "/storage/").is_err(), "{bad}");
        }
    }

    #[test]
    fn error_and_warning_lines_are_marked() {
        let lines =
            highlight("ok 1 a\nnot ok 2 demo_math_overflow\nWARNING: deprecated\nBUG: oops\n");
        let levels: Vec<Option<&str>> = lines.iter().map(|l| l.level.as_deref()).collect();
        assert_eq!(
            levels,
            vec![None, Some("error"), Some("warning"), Some("error")]
        );
        assert_eq!(lines[1].number, 2);
    }

    #[test]
    fn configured_prefixes_are_http_only() {
        let urls = configured_storage_urls(Some("https://files.example/kci, ftp://x/, nonsense"));
        assert_eq!(urls.len(), 1);
        assert_eq!(urls[0].as_str(), "https://files.example/kci/");
    }
}
