//! [`RestSubmitter`]: `POST /submit` to a kcidb-ng REST server (`spec/kcidb.md` §4).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{KcidbError, KcidbResult, KcidbSubmitter, RetryPolicy, SubmitReceipt, async_trait};

/// Where a REST submitter sends: parsed from `KCIDB_REST`
/// (`[http|https://]<token>@<host>[:<port>][/anything]`; the scheme defaults to https, any
/// path is ignored, the host must match `[a-zA-Z0-9.-]+`).
#[derive(Clone, PartialEq, Eq)]
pub struct RestEndpoint {
    /// `https` or `http`.
    pub scheme: String,
    /// The host.
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
    token: String,
}

impl std::fmt::Debug for RestEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestEndpoint")
            .field("url", &self.submit_url())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl RestEndpoint {
    /// Parses a `KCIDB_REST` value. Errors never repeat the token.
    pub fn parse(value: &str) -> KcidbResult<RestEndpoint> {
        let bad = |why: &str| {
            KcidbError::Config(format!(
                "KCIDB_REST must look like https://<token>@<host>[:<port>]/: {why}"
            ))
        };
        let value = value.trim();
        let (scheme, rest) = if let Some(r) = value.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = value.strip_prefix("http://") {
            ("http", r)
        } else if value.contains("://") {
            return Err(bad("the scheme must be http or https"));
        } else {
            ("https", value)
        };
        let (token, after) = rest
            .rsplit_once('@')
            .ok_or_else(|| bad("no <token>@ before the host"))?;
        if token.is_empty() {
            return Err(bad("the token is empty"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the token holds spaces or control characters"));
        }
        let authority = after.split('/').next().unwrap_or("");
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
                (h, Some(port))
            }
            None => (authority, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(bad("the host must match [a-zA-Z0-9.-]+"));
        }
        Ok(RestEndpoint {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
            token: token.to_owned(),
        })
    }

    /// `<scheme>://<host>[:<port>]/submit`.
    pub fn submit_url(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}/submit", self.scheme, self.host),
            None => format!("{}://{}/submit", self.scheme, self.host),
        }
    }
}

/// Submits documents with `POST <endpoint>/submit`, `Authorization: Bearer <token>`.
///
/// HTTP 200 with a non-empty `id` is success. 5xx, 408, 429, connection errors, timeouts and
/// answers without an `id` are retried with backoff and jitter ([`RetryPolicy`]); 401/403 give
/// [`KcidbError::Unauthorized`] and other 4xx [`KcidbError::Rejected`] at once.
#[derive(Debug, Clone)]
pub struct RestSubmitter {
    endpoint: RestEndpoint,
    http: reqwest::Client,
    policy: RetryPolicy,
}

fn shorten(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_owned(),
    }
}

enum Attempt {
    Done(SubmitReceipt),
    Fatal(KcidbError),
    Retry(KcidbError),
}

impl RestSubmitter {
    /// A submitter for `endpoint`; each request may take `timeout` (upstream: 60 s).
    pub fn new(
        endpoint: RestEndpoint,
        timeout: Duration,
        policy: RetryPolicy,
    ) -> KcidbResult<RestSubmitter> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("kernelci-rs-kcidb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| KcidbError::Config(format!("HTTP client: {e}")))?;
        Ok(RestSubmitter {
            endpoint,
            http,
            policy,
        })
    }

    /// From a `KCIDB_REST` value, with upstream's 60 s timeout and the default policy.
    pub fn from_env_value(value: &str) -> KcidbResult<RestSubmitter> {
        RestSubmitter::new(
            RestEndpoint::parse(value)?,
            Duration::from_secs(60),
            RetryPolicy::default(),
        )
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &RestEndpoint {
        &self.endpoint
    }

    async fn attempt(&self, body: &[u8]) -> Attempt {
        let url = self.endpoint.submit_url();
        let sent = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .bearer_auth(&self.endpoint.token)
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry(KcidbError::Timeout(format!("POST {url}: {e}")));
            }
            Err(e) => return Attempt::Retry(KcidbError::Unavailable(format!("POST {url}: {e}"))),
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry(KcidbError::Timeout(format!("reading {url}: {e}")));
            }
            Err(e) => {
                return Attempt::Retry(KcidbError::Unavailable(format!("reading {url}: {e}")));
            }
        };
        match status {
            200 => {
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
                    .filter(|id| !id.is_empty() && id != "0");
                match id {
                    Some(id) => Attempt::Done(SubmitReceipt { id }),
                    None => Attempt::Retry(KcidbError::Unavailable(format!(
                        "HTTP 200 without a submission id: {}",
                        shorten(&text)
                    ))),
                }
            }
            401 | 403 => Attempt::Fatal(KcidbError::Unauthorized {
                status,
                body: shorten(&text),
            }),
            408 | 429 | 500..=599 => Attempt::Retry(KcidbError::Unavailable(format!(
                "HTTP {status}: {}",
                shorten(&text)
            ))),
            _ => Attempt::Fatal(KcidbError::Rejected {
                status,
                body: shorten(&text),
            }),
        }
    }
}

#[async_trait]
impl KcidbSubmitter for RestSubmitter {
    async fn submit(&self, document: &Value) -> KcidbResult<SubmitReceipt> {
        let body = serde_json::to_vec(document)
            .map_err(|e| KcidbError::Config(format!("document does not serialise: {e}")))?;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            match self.attempt(&body).await {
                Attempt::Done(receipt) => {
                    tracing::info!(url = %self.endpoint.submit_url(), id = %receipt.id,
                        bytes = body.len(), ms = started.elapsed().as_millis() as u64,
                        "submitted to KCIDB");
                    return Ok(receipt);
                }
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry(e) if attempt >= self.policy.max_attempts.max(1) => return Err(e),
                Attempt::Retry(e) => {
                    let delay = self.policy.delay(attempt);
                    tracing::warn!(error = %e, attempt, "KCIDB submission failed; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("KCIDB REST {}", self.endpoint.submit_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcidb_rest_values_parse_like_upstream() {
        let e = RestEndpoint::parse("https://eyJ.a-b_c@db.kernelci.org/").unwrap();
        assert_eq!(e.submit_url(), "https://db.kernelci.org/submit");
        assert_eq!(e.token, "eyJ.a-b_c");
        let e = RestEndpoint::parse("tok@127.0.0.1:8080/ignored/path").unwrap();
        assert_eq!(e.submit_url(), "https://127.0.0.1:8080/submit");
        let e = RestEndpoint::parse("http://tok@localhost:9").unwrap();
        assert_eq!(e.submit_url(), "http://localhost:9/submit");
        for bad in [
            "https://db.kernelci.org/",
            "https://@db.kernelci.org/",
            "ftp://t@host/",
            "https://t@ho_st/",
            "https://t@host:99999/",
            "https://t k@host/",
        ] {
            let err = RestEndpoint::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("t k"), "the token is not repeated: {err}");
        }
        let debug = format!("{:?}", RestEndpoint::parse("https://secret@h/").unwrap());
        assert!(!debug.contains("secret"), "{debug}");
    }
}
