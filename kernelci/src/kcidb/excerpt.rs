//! `log_excerpt`: the last 16,384 characters of a build's or test's log
//! (`spec/kcidb.md` §2.1). Logs are downloaded once per URL per batch, gunzipped when they
//! are gzip, decoded as UTF-8 (bad bytes replaced), stripped of NUL characters, and cut to
//! the last 16,384 characters (code points, the schema's `maxLength`). Only the tail is kept
//! in memory while downloading; a log that cannot be fetched (an error status, a timeout,
//! more than [`LogExcerpts::max_bytes`]) gives no excerpt and never fails the batch.
//!
//! Log URLs come from node artifacts, which API users write: with
//! [`LogExcerpts::with_allowed_hosts`] (the bridge passes the hosts of the configured
//! storages, [`storage_hosts`]) logs elsewhere are not fetched, so a node cannot make the
//! bridge read an internal address and forward it to KCIDB.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;

use super::objects::Object;

/// The longest excerpt KCIDB accepts, in characters.
pub const MAX_EXCERPT_CHARS: usize = 16384;

/// How many bytes of decoded log are kept to cut the excerpt from (4 bytes per character at
/// most, plus room for NULs and a split character).
const TAIL_BYTES: usize = 4 * MAX_EXCERPT_CHARS + 4096;

/// A sink that keeps only the last `TAIL_BYTES` bytes written to it.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Write for Tail {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        if self.0.len() > 2 * TAIL_BYTES {
            let cut = self.0.len() - TAIL_BYTES;
            self.0.drain(..cut);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The excerpt of a log's decoded tail bytes.
pub fn excerpt_of(tail: &[u8]) -> String {
    let start = tail.len().saturating_sub(TAIL_BYTES);
    let text = String::from_utf8_lossy(&tail[start..]);
    let text: String = text.chars().filter(|c| *c != '\0').collect();
    let count = text.chars().count();
    if count <= MAX_EXCERPT_CHARS {
        return text;
    }
    text.chars().skip(count - MAX_EXCERPT_CHARS).collect()
}

/// The excerpt of a whole log file's bytes (gzip or plain).
pub fn excerpt_of_log(bytes: &[u8]) -> String {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = flate2::write::MultiGzDecoder::new(Tail::default());
        if decoder.write_all(bytes).is_ok()
            && let Ok(tail) = decoder.finish()
        {
            return excerpt_of(&tail.0);
        }
    }
    excerpt_of(bytes)
}

/// Downloads logs and fills the `log_excerpt` of builds and tests.
#[derive(Debug, Clone)]
pub struct LogExcerpts {
    http: reqwest::Client,
    /// Logs larger than this (compressed size) give no excerpt.
    pub max_bytes: u64,
    /// Downloads at the same time.
    pub concurrency: usize,
    /// Only logs on these hosts are fetched (`None`: any host).
    pub allowed_hosts: Option<Vec<String>>,
}

/// The hosts of the `base_url` of every storage entry of a pipeline configuration (where the
/// pipeline's logs are).
pub fn storage_hosts(config: &crate::config::PipelineConfig) -> Vec<String> {
    let mut hosts: Vec<String> = config
        .storage
        .values()
        .filter_map(|s| url::Url::parse(&s.base_url).ok())
        .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

impl LogExcerpts {
    /// A fetcher whose downloads may take `timeout` each (upstream: 60 s).
    pub fn new(timeout: Duration) -> LogExcerpts {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        LogExcerpts {
            http,
            max_bytes: 512 << 20,
            concurrency: 8,
            allowed_hosts: None,
        }
    }

    /// Only fetch logs on these hosts; an empty list allows any host.
    pub fn with_allowed_hosts(mut self, hosts: Vec<String>) -> LogExcerpts {
        self.allowed_hosts = (!hosts.is_empty()).then_some(hosts);
        self
    }

    /// The excerpt of the log at `url`; `None` when it cannot be had.
    pub async fn fetch(&self, url: &str) -> Option<String> {
        let parsed = url::Url::parse(url).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return None;
        }
        if let Some(allowed) = &self.allowed_hosts {
            let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
            if !allowed.contains(&host) {
                tracing::debug!(url, "log host is not a configured storage; no excerpt");
                return None;
            }
        }
        let response = match self.http.get(url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::debug!(url, status = r.status().as_u16(), "no log excerpt");
                return None;
            }
            Err(e) => {
                tracing::warn!(url, error = %e, "cannot download the log for its excerpt");
                return None;
            }
        };
        let mut stream = response.bytes_stream();
        // The first two bytes say whether the log is gzip.
        let mut head: Option<Vec<u8>> = Some(Vec::new());
        let mut gzip: Option<flate2::write::MultiGzDecoder<Tail>> = None;
        let mut plain = Tail::default();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(url, error = %e, "log download failed; no excerpt");
                    return None;
                }
            };
            total += chunk.len() as u64;
            if total > self.max_bytes {
                tracing::warn!(url, max = self.max_bytes, "log too large; no excerpt");
                return None;
            }
            let data = match head.as_mut() {
                Some(h) => {
                    h.extend_from_slice(&chunk);
                    if h.len() < 2 {
                        continue;
                    }
                    if h.starts_with(&[0x1f, 0x8b]) {
                        gzip = Some(flate2::write::MultiGzDecoder::new(Tail::default()));
                    }
                    head.take().unwrap_or_default()
                }
                None => chunk.to_vec(),
            };
            match gzip.as_mut() {
                Some(d) => {
                    if let Err(e) = d.write_all(&data) {
                        tracing::warn!(url, error = %e, "corrupt gzip log; no excerpt");
                        return None;
                    }
                }
                None => {
                    let _ = plain.write_all(&data);
                }
            }
        }
        if let Some(h) = head {
            let _ = plain.write_all(&h);
        }
        match gzip {
            Some(d) => d.finish().ok().map(|tail| excerpt_of(&tail.0)),
            None => Some(excerpt_of(&plain.0)),
        }
    }

    /// Fills `log_excerpt` on every build and test of `objects` that has a `log_url`, each URL
    /// downloaded once.
    pub async fn fill<'a>(&self, objects: impl IntoIterator<Item = &'a mut Object>) {
        let mut wanted: Vec<(&'a mut Object, String)> = Vec::new();
        for o in objects {
            let url = match &*o {
                Object::Build(b) => b.log_url.clone(),
                Object::Test(t) => t.log_url.clone(),
                _ => None,
            };
            if let Some(url) = url {
                wanted.push((o, url));
            }
        }
        let mut urls: Vec<String> = wanted.iter().map(|(_, u)| u.clone()).collect();
        urls.sort();
        urls.dedup();
        let fetched: HashMap<String, Option<String>> = futures::stream::iter(urls)
            .map(|url| async move {
                let excerpt = self.fetch(&url).await;
                (url, excerpt)
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        for (object, url) in wanted {
            let excerpt = fetched.get(&url).cloned().flatten();
            match object {
                Object::Build(b) => b.log_excerpt = excerpt,
                Object::Test(t) => t.log_excerpt = excerpt,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn logs_on_other_hosts_are_not_fetched() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ex = LogExcerpts::new(Duration::from_secs(1))
            .with_allowed_hosts(vec!["storage.kernelci.org".into()]);
        // Refused before any connection: the port is closed anyway.
        assert_eq!(
            ex.fetch("http://169.254.169.254/latest/meta-data").await,
            None
        );
        assert_eq!(ex.fetch("file:///etc/passwd").await, None);
        assert!(
            LogExcerpts::new(Duration::from_secs(1))
                .with_allowed_hosts(vec![])
                .allowed_hosts
                .is_none()
        );
    }

    #[test]
    fn excerpts_keep_the_last_characters_without_nul() {
        let text = format!("{}é\0end", "x".repeat(40_000));
        let e = excerpt_of_log(text.as_bytes());
        assert_eq!(e.chars().count(), MAX_EXCERPT_CHARS);
        assert!(e.ends_with("éend"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all("log line\n".repeat(10_000).as_bytes())
            .unwrap();
        let bytes = gz.finish().unwrap();
        let e = excerpt_of_log(&bytes);
        assert_eq!(e.chars().count(), MAX_EXCERPT_CHARS);
        assert!(e.ends_with("log line\n"));
        assert_eq!(
            excerpt_of_log(b"\x1f\x8bnot gzip"),
            "\u{1f}\u{fffd}not gzip"
        );
    }
}
