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

mod listener;

pub use listener::{Listener, ListenerConfig, ListenerHealth, NodeEventFilter, ReceivedEvent};

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::ErrorKind;
use crate::models::{Node, NodePatch, ObjectId, State, UserGroup, UserRead};
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

    // ----- users and auth -----

    /// `POST /user/login`: returns a token (not stored in this client; see [`ApiClient::with_token`]).
    pub async fn login(&self, username: &str, password: &str) -> ClientResult<String> {
        let v: Value = self
            .form(
                "user/login",
                &[("username", username), ("password", password)],
            )
            .await?;
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Decode {
                url: self.url("user/login"),
                message: "no access_token".into(),
            })
    }

    /// `POST /user/logout` (revokes the token on our server).
    pub async fn logout(&self) -> ClientResult<()> {
        self.send(Method::POST, "user/logout", &[], None, None)
            .await
            .map(|_| ())
    }

    /// `GET /whoami`.
    pub async fn whoami(&self) -> ClientResult<UserRead> {
        self.call(Method::GET, "whoami", &[], None).await
    }

    /// `GET /user/{id}`.
    pub async fn get_user(&self, id: ObjectId) -> ClientResult<UserRead> {
        self.call(Method::GET, &format!("user/{id}"), &[], None)
            .await
    }

    /// `GET /users` (one page).
    pub async fn find_users(&self, query: &[(&str, &str)]) -> ClientResult<Page<UserRead>> {
        self.call(Method::GET, "users", query, None).await
    }

    /// `PATCH /user/me`.
    pub async fn update_me(&self, fields: &Value) -> ClientResult<UserRead> {
        self.call(Method::PATCH, "user/me", &[], Some(fields)).await
    }

    /// `PATCH /user/{id}` (admin).
    pub async fn update_user(&self, id: ObjectId, fields: &Value) -> ClientResult<UserRead> {
        self.call(Method::PATCH, &format!("user/{id}"), &[], Some(fields))
            .await
    }

    /// `DELETE /user/{id}` (admin).
    pub async fn delete_user(&self, id: ObjectId) -> ClientResult<()> {
        self.send(Method::DELETE, &format!("user/{id}"), &[], None, None)
            .await
            .map(|_| ())
    }

    /// `POST /user/invite` (admin): returns the whole invite response.
    pub async fn invite(
        &self,
        username: &str,
        email: &str,
        groups: &[&str],
        superuser: bool,
        return_token: bool,
    ) -> ClientResult<Value> {
        let body = json!({"username": username, "email": email, "groups": groups, "is_superuser": superuser,
                          "send_email": false, "return_token": return_token});
        self.call(Method::POST, "user/invite", &[], Some(&body))
            .await
    }

    /// `POST /user/accept-invite`.
    pub async fn accept_invite(&self, token: &str, password: &str) -> ClientResult<UserRead> {
        self.call(
            Method::POST,
            "user/accept-invite",
            &[],
            Some(&json!({"token": token, "password": password})),
        )
        .await
    }

    /// `POST /user/update-password`.
    pub async fn update_password(
        &self,
        username: &str,
        password: &str,
        new_password: &str,
    ) -> ClientResult<()> {
        let _: Value = self
            .form(
                "user/update-password",
                &[
                    ("username", username),
                    ("password", password),
                    ("new_password", new_password),
                ],
            )
            .await?;
        Ok(())
    }

    /// `GET /user-groups` (admin; one page).
    pub async fn find_groups(&self, query: &[(&str, &str)]) -> ClientResult<Page<UserGroup>> {
        self.call(Method::GET, "user-groups", query, None).await
    }

    /// `POST /user-groups` (admin).
    pub async fn create_group(&self, name: &str) -> ClientResult<UserGroup> {
        self.call(
            Method::POST,
            "user-groups",
            &[],
            Some(&json!({"name": name})),
        )
        .await
    }

    /// `DELETE /user-groups/{id}` (admin).
    pub async fn delete_group(&self, id: ObjectId) -> ClientResult<()> {
        self.send(
            Method::DELETE,
            &format!("user-groups/{id}"),
            &[],
            None,
            None,
        )
        .await
        .map(|_| ())
    }

    /// `POST /user/tokens`: a named, revocable API token (our server only).
    pub async fn create_token(&self, name: &str, expires_in: Option<u64>) -> ClientResult<Value> {
        self.call(
            Method::POST,
            "user/tokens",
            &[],
            Some(&json!({"name": name, "expires_in": expires_in})),
        )
        .await
    }

    /// `DELETE /user/tokens/{jti}` (our server only).
    pub async fn revoke_token(&self, jti: &str) -> ClientResult<()> {
        self.send(
            Method::DELETE,
            &format!("user/tokens/{jti}"),
            &[],
            None,
            None,
        )
        .await
        .map(|_| ())
    }

    // ----- nodes -----

    /// `GET /node/{id}`.
    pub async fn get_node(&self, id: ObjectId) -> ClientResult<Option<Node>> {
        self.call(Method::GET, &format!("node/{id}"), &[], None)
            .await
    }

    /// `GET /nodes` (one page).
    pub async fn find_nodes(&self, query: &[(&str, &str)]) -> ClientResult<Page<Node>> {
        self.call(Method::GET, "nodes", query, None).await
    }

    /// Every node matching `query`, following pages of 100 (as upstream's client does).
    pub async fn find_all_nodes(&self, query: &[(&str, &str)]) -> ClientResult<Vec<Node>> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            let off = offset.to_string();
            let mut q: Vec<(&str, &str)> = query
                .iter()
                .filter(|(k, _)| *k != "limit" && *k != "offset")
                .copied()
                .collect();
            q.push(("limit", "100"));
            q.push(("offset", &off));
            let page = self.find_nodes(&q).await?;
            let n = page.items.len();
            out.extend(page.items);
            if n < 100 {
                return Ok(out);
            }
            offset += n;
        }
    }

    /// `GET /nodes/fast`.
    pub async fn find_nodes_fast(&self, query: &[(&str, &str)]) -> ClientResult<Vec<Node>> {
        self.call(Method::GET, "nodes/fast", query, None).await
    }

    /// `GET /count`.
    pub async fn count_nodes(&self, query: &[(&str, &str)]) -> ClientResult<u64> {
        self.call(Method::GET, "count", query, None).await
    }

    /// `POST /node`.
    pub async fn create_node(&self, node: &Node) -> ClientResult<Node> {
        self.call(Method::POST, "node", &[], Some(&Self::to_json(node)?))
            .await
    }

    /// `PUT /node/{id}`: the whole node. Like upstream's client, a `node_timeout` error code is
    /// cleared when the result is no longer `incomplete`.
    pub async fn update_node(&self, node: &Node, noevent: bool) -> ClientResult<Node> {
        let id = node
            .id
            .ok_or_else(|| ClientError::Invalid("node has no id".into()))?;
        let mut node = node.clone();
        if node.result != Some(crate::models::ResultValue::Incomplete)
            && node.data_str("error_code") == Some("node_timeout")
            && let Some(d) = node.data.as_mut()
        {
            d.insert("error_code".into(), Value::Null);
            d.insert("error_msg".into(), Value::Null);
        }
        let q: &[(&str, &str)] = if noevent { &[("noevent", "true")] } else { &[] };
        self.call(
            Method::PUT,
            &format!("node/{id}"),
            q,
            Some(&Self::to_json(&node)?),
        )
        .await
    }

    /// `PATCH /node/{id}`.
    pub async fn patch_node(&self, id: ObjectId, patch: &NodePatch) -> ClientResult<Node> {
        self.call(
            Method::PATCH,
            &format!("node/{id}"),
            &[],
            Some(&Self::to_json(patch)?),
        )
        .await
    }

    /// `PUT /batch/nodeset`.
    pub async fn bulk_set(&self, ids: &[ObjectId], field: &str, value: &str) -> ClientResult<u64> {
        let body = json!({"nodes": ids, "field": field, "value": value});
        self.call(Method::PUT, "batch/nodeset", &[], Some(&body))
            .await
    }

    /// `PUT /nodes/{root}`: submits a result hierarchy; returns every written node.
    pub async fn submit_results(&self, root: &Hierarchy) -> ClientResult<Vec<Node>> {
        let id = root
            .node
            .id
            .ok_or_else(|| ClientError::Invalid("the root node has no id".into()))?;
        self.call(
            Method::PUT,
            &format!("nodes/{id}"),
            &[],
            Some(&Self::to_json(root)?),
        )
        .await
    }

    /// Moves a node to `state` (and `result`), re-reading it first; the server checks the
    /// state machine.
    pub async fn set_state(
        &self,
        id: ObjectId,
        state: State,
        result: Option<crate::models::ResultValue>,
    ) -> ClientResult<Node> {
        let mut node = self.get_node(id).await?.ok_or_else(|| ClientError::Http {
            method: "GET".into(),
            url: self.url(&format!("node/{id}")),
            status: 404,
            detail: format!("Node not found with id: {id}"),
        })?;
        node.state = state;
        if result.is_some() {
            node.result = result;
        }
        self.update_node(&node, false).await
    }

    /// Polls a node until it reaches `state` (or a later one), up to `timeout`.
    pub async fn wait_for_state(
        &self,
        id: ObjectId,
        state: State,
        timeout: Duration,
    ) -> ClientResult<Node> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).delays();
        loop {
            if let Some(n) = self.get_node(id).await?
                && n.state >= state
            {
                return Ok(n);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Http {
                    method: "GET".into(),
                    url: self.url(&format!("node/{id}")),
                    status: 408,
                    detail: format!("node {id} did not reach '{state}' within {timeout:?}"),
                });
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(delay.min(left)).await;
        }
    }

    // ----- events and pub/sub -----

    /// `GET /events`.
    pub async fn events(&self, query: &[(&str, &str)]) -> ClientResult<Vec<Value>> {
        self.call(Method::GET, "events", query, None).await
    }

    /// `POST /subscribe/{channel}`.
    pub async fn subscribe(
        &self,
        channel: &str,
        promiscuous: bool,
        subscriber_id: Option<&str>,
    ) -> ClientResult<Subscription> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        if promiscuous {
            q.push(("promisc", "true"));
        }
        if let Some(s) = subscriber_id {
            q.push(("subscriber_id", s));
        }
        let text = self
            .send(
                Method::POST,
                &format!("subscribe/{channel}"),
                &q,
                None,
                None,
            )
            .await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            url: self.url("subscribe"),
            message: e.to_string(),
        })
    }

    /// `POST /unsubscribe/{id}`.
    pub async fn unsubscribe(&self, id: u64) -> ClientResult<()> {
        self.send(Method::POST, &format!("unsubscribe/{id}"), &[], None, None)
            .await
            .map(|_| ())
    }

    /// `GET /listen/{id}` once: the raw message (`{"type", "channel", "data": "<CloudEvent>"}`),
    /// acknowledging `acknowledge` first when given. Waits up to `timeout`.
    pub async fn listen_raw(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        timeout: Duration,
    ) -> ClientResult<Value> {
        let ack = acknowledge.map(|a| a.to_string());
        let q: Vec<(&str, &str)> = ack
            .as_deref()
            .map(|a| vec![("acknowledge", a)])
            .unwrap_or_default();
        let text = self
            .send(
                Method::GET,
                &format!("listen/{id}"),
                &q,
                None,
                Some(timeout),
            )
            .await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            url: self.url("listen"),
            message: e.to_string(),
        })
    }

    /// `POST /ack/{id}` (our server only).
    pub async fn ack(&self, id: u64, sequence_id: u64) -> ClientResult<()> {
        self.send(
            Method::POST,
            &format!("ack/{id}"),
            &[],
            Some(&json!({"sequence_id": sequence_id})),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `POST /publish/{channel}`.
    pub async fn publish(
        &self,
        channel: &str,
        data: &Value,
        attributes: Option<&Value>,
    ) -> ClientResult<()> {
        let mut body = json!({"data": data});
        if let Some(a) = attributes {
            body["attributes"] = a.clone();
        }
        self.send(
            Method::POST,
            &format!("publish/{channel}"),
            &[],
            Some(&body),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `POST /push/{list}`.
    pub async fn push(&self, list: &str, data: &Value) -> ClientResult<()> {
        self.send(
            Method::POST,
            &format!("push/{list}"),
            &[],
            Some(&json!({"data": data})),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `GET /pop/{list}`: blocks up to `timeout` for an item; returns the CloudEvent.
    pub async fn pop(&self, list: &str, timeout: Duration) -> ClientResult<Value> {
        let text = self
            .send(
                Method::GET,
                &format!("pop/{list}"),
                &[],
                None,
                Some(timeout),
            )
            .await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            url: self.url("pop"),
            message: e.to_string(),
        })
    }

    /// `GET /stats/subscriptions` (admin).
    pub async fn subscription_stats(&self) -> ClientResult<Vec<Value>> {
        self.call(Method::GET, "stats/subscriptions", &[], None)
            .await
    }

    // ----- key/value and telemetry -----

    /// `GET /kv/{ns}/{key}`.
    pub async fn get_kv(&self, namespace: &str, key: &str) -> ClientResult<Option<String>> {
        self.call(Method::GET, &format!("kv/{namespace}/{key}"), &[], None)
            .await
    }

    /// `POST /kv/{ns}/{key}` (the value is sent as a JSON string; empty deletes).
    pub async fn set_kv(&self, namespace: &str, key: &str, value: &str) -> ClientResult<()> {
        self.send(
            Method::POST,
            &format!("kv/{namespace}/{key}"),
            &[],
            Some(&Value::from(value)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /kv/{ns}/{key}`.
    pub async fn delete_kv(&self, namespace: &str, key: &str) -> ClientResult<()> {
        self.send(
            Method::DELETE,
            &format!("kv/{namespace}/{key}"),
            &[],
            None,
            None,
        )
        .await
        .map(|_| ())
    }

    /// `POST /telemetry`: returns how many were inserted.
    pub async fn add_telemetry(&self, events: &[Value]) -> ClientResult<u64> {
        let v: Value = self
            .call(
                Method::POST,
                "telemetry",
                &[],
                Some(&Value::from(events.to_vec())),
            )
            .await?;
        Ok(v.get("inserted").and_then(Value::as_u64).unwrap_or(0))
    }

    /// `GET /telemetry` (one page).
    pub async fn find_telemetry(&self, query: &[(&str, &str)]) -> ClientResult<Page<Value>> {
        self.call(Method::GET, "telemetry", query, None).await
    }

    /// `GET /telemetry/stats`.
    pub async fn telemetry_stats(&self, query: &[(&str, &str)]) -> ClientResult<Vec<Value>> {
        self.call(Method::GET, "telemetry/stats", query, None).await
    }

    /// `GET /telemetry/anomalies`.
    pub async fn telemetry_anomalies(&self, query: &[(&str, &str)]) -> ClientResult<Value> {
        self.call(Method::GET, "telemetry/anomalies", query, None)
            .await
    }

    /// `GET /metrics` (text).
    pub async fn metrics(&self) -> ClientResult<String> {
        self.send(Method::GET, "metrics", &[], None, None).await
    }
}
