//! The event, pub/sub, key/value and telemetry routes of [`ApiClient`].

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{ApiClient, ClientError, ClientResult, Page, Subscription};

impl ApiClient {
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
        self.listen_query(id, acknowledge, None, timeout).await
    }

    /// `GET /listen/{id}?max=N` once: our server answers a JSON array of up to `max` messages
    /// (all the events waiting, up to `max`, or one keep-alive); a server without the extension
    /// (upstream's) ignores `max` and answers one message object.
    pub async fn listen_batch(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        max: usize,
        timeout: Duration,
    ) -> ClientResult<Value> {
        self.listen_query(id, acknowledge, Some(max), timeout).await
    }

    async fn listen_query(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        max: Option<usize>,
        timeout: Duration,
    ) -> ClientResult<Value> {
        let ack = acknowledge.map(|a| a.to_string());
        let max = max.map(|m| m.to_string());
        let mut q: Vec<(&str, &str)> = Vec::with_capacity(2);
        if let Some(a) = ack.as_deref() {
            q.push(("acknowledge", a));
        }
        if let Some(m) = max.as_deref() {
            q.push(("max", m));
        }
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
