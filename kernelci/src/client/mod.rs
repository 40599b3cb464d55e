//! A typed client for the KernelCI API (feature `client`), and a [`Listener`] that follows
//! events reliably.
//!
//! [`ApiClient`] covers every route the server serves. It retries idempotent calls (GET, PUT,
//! DELETE) with backoff on connection errors and 5xx answers, never retries a POST that might
//! have been applied, and keeps the server's `detail` in its errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kernelci::client::ClientError> {
//! use kernelci::client::ApiClient;
//! let api = ApiClient::new("http://localhost:8001")?.with_token("eyJ...");
//! let failures = api.find_all_nodes(&[("kind", "test"), ("result", "fail")]).await?;
//! println!("{} failing tests", failures.len());
//! # Ok(()) }
//! ```

mod api;
mod listener;
mod nodes;
mod pubsub;
mod users;

pub use api::Api;
#[cfg(feature = "mock")]
pub use api::MockApi;

pub use listener::{Listener, ListenerConfig, ListenerHealth, NodeEventFilter, ReceivedEvent};

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ErrorKind;
use crate::models::Node;
use crate::retry::Backoff;

/// Errors of the API client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{method} {url}: HTTP {status}: {detail}")]
    Http {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The server's `detail` (or `message`, or the body).
        detail: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("{method} {url}: {source}")]
    Transport {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the route returns.
    #[error("{url}: unexpected answer: {message}")]
    Decode {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A bad argument (base URL, ...).
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Http { status, .. } => match *status {
                404 => ErrorKind::NotFound,
                401 | 403 => ErrorKind::Unauthorized,
                409 => ErrorKind::Conflict,
                408 | 504 => ErrorKind::Timeout,
                s if s >= 500 => ErrorKind::Unavailable,
                _ => ErrorKind::Invalid,
            },
            ClientError::Transport { source, .. } if source.is_timeout() => ErrorKind::Timeout,
            ClientError::Transport { .. } => ErrorKind::Unavailable,
            ClientError::Decode { .. } => ErrorKind::Internal,
            ClientError::Invalid(_) => ErrorKind::Invalid,
        }
    }

    /// Whether an idempotent call that failed this way is worth sending again: the server
    /// could not be reached, or answered with a 5xx other than 501.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Http { status, .. } => *status >= 500 && *status != 501,
            ClientError::Transport { .. } => true,
            ClientError::Decode { .. } | ClientError::Invalid(_) => false,
        }
    }

    /// The HTTP status, for `Http` errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of client calls.
pub type ClientResult<T> = Result<T, ClientError>;

/// A page of a paginated route.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// How many match in all.
    pub total: u64,
    /// The limit used.
    pub limit: u64,
    /// The offset used.
    pub offset: u64,
}

/// A subscription, as `/subscribe` returns it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
pub struct Subscription {
    /// Its id, for `/listen`.
    pub id: u64,
    /// The channel.
    pub channel: String,
    /// The owner.
    pub user: String,
    /// Whether it receives every owner's events.
    #[serde(default)]
    pub promiscuous: bool,
}

/// A result hierarchy for `PUT /nodes/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct Hierarchy {
    /// The node.
    pub node: Node,
    /// Its children.
    pub child_nodes: Vec<Hierarchy>,
}

/// The typed KernelCI API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    retries: u32,
    backoff: Duration,
}

fn detail_of(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match v
            .get("detail")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
        {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => body.chars().take(512).collect(),
        },
        Err(_) => body.chars().take(512).collect(),
    }
}

impl ApiClient {
    /// A client for the API at `base_url` (e.g. `http://localhost:8001`); requests go to
    /// `<base_url>/latest/...`, as upstream's client does. 60 s timeout, 5 retries.
    pub fn new(base_url: &str) -> ClientResult<ApiClient> {
        Self::with_timeout(base_url, Duration::from_secs(60))
    }

    /// Like [`ApiClient::new`] with another per-request timeout.
    pub fn with_timeout(base_url: &str, timeout: Duration) -> ClientResult<ApiClient> {
        let url = url::Url::parse(base_url)
            .map_err(|e| ClientError::Invalid(format!("bad API URL '{base_url}': {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientError::Invalid(format!(
                "bad API URL '{base_url}': use http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Invalid(format!("cannot build HTTP client: {e}")))?;
        Ok(ApiClient {
            http,
            base: format!("{}/latest/", base_url.trim_end_matches('/')),
            token: None,
            retries: 5,
            backoff: Duration::from_millis(500),
        })
    }

    /// Uses `token` as the bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> ApiClient {
        self.token = Some(token.into());
        self
    }

    /// Sets how many times idempotent calls are retried, and the first backoff delay (doubled
    /// each time).
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> ApiClient {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// The bearer token in use.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    /// Sends a request; returns the body text. Idempotent methods are retried on transport
    /// errors and 5xx answers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> ClientResult<String> {
        let url = self.url(path);
        let idempotent = matches!(
            method,
            Method::GET | Method::PUT | Method::DELETE | Method::HEAD
        );
        let attempts = if idempotent { self.retries + 1 } else { 1 };
        let policy = Backoff::new(self.backoff, Duration::from_secs(30)).attempts(attempts);
        let transport = |source| ClientError::Transport {
            method: method.to_string(),
            url: url.clone(),
            source,
        };
        policy
            .retry(
                || async {
                    let mut rb = self.http.request(method.clone(), &url).query(query);
                    if let Some(t) = &self.token {
                        rb = rb.bearer_auth(t);
                    }
                    if let Some(b) = body {
                        rb = rb.json(b);
                    }
                    if let Some(t) = timeout {
                        rb = rb.timeout(t);
                    }
                    let resp = rb.send().await.map_err(transport)?;
                    let status = resp.status();
                    let text = resp.text().await.map_err(transport)?;
                    if status.is_success() {
                        return Ok(text);
                    }
                    Err(ClientError::Http {
                        method: method.to_string(),
                        url: url.clone(),
                        status: status.as_u16(),
                        detail: detail_of(&text),
                    })
                },
                ClientError::is_retryable,
                |err, delay| tracing::debug!(%err, ?delay, "retrying API call"),
            )
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> ClientResult<T> {
        let text = self.send(method, path, query, body, None).await?;
        let text = if text.is_empty() {
            "null"
        } else {
            text.as_str()
        };
        serde_json::from_str(text).map_err(|e| ClientError::Decode {
            url: self.url(path),
            message: e.to_string(),
        })
    }

    async fn form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> ClientResult<T> {
        let url = self.url(path);
        let resp =
            self.http
                .post(&url)
                .form(form)
                .send()
                .await
                .map_err(|e| ClientError::Transport {
                    method: "POST".into(),
                    url: url.clone(),
                    source: e,
                })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Transport {
            method: "POST".into(),
            url: url.clone(),
            source: e,
        })?;
        if !status.is_success() {
            return Err(ClientError::Http {
                method: "POST".into(),
                url,
                status: status.as_u16(),
                detail: detail_of(&text),
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            url,
            message: e.to_string(),
        })
    }

    fn to_json<T: Serialize>(v: &T) -> ClientResult<Value> {
        serde_json::to_value(v)
            .map_err(|e| ClientError::Invalid(format!("cannot encode request: {e}")))
    }
}
