//! [`Api`]: the calls the pipeline services and the [`super::Listener`] make, as a trait.
//! [`ApiClient`] implements it over HTTP; with the `mock` feature, `MockApi` (mockall) lets
//! a service, a handler or a custom runtime's glue be unit-tested without a server.
//!
//! ```
//! # #[cfg(feature = "mock")]
//! # async fn demo() {
//! use kernelci::client::{Api, MockApi};
//! use kernelci::models::{Node, NodeKind};
//!
//! let mut api = MockApi::new();
//! api.expect_count_nodes().returning(|_| Ok(3));
//! assert_eq!(api.count_nodes(&[("kind", "test")]).await.ok(), Some(3));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{ApiClient, ClientResult, Hierarchy, Page, Subscription};
use crate::models::{Node, ObjectId, UserRead};

/// The API calls of the pipeline: nodes, results, events and telemetry. Services hold an
/// `Arc<dyn Api>`; an [`ApiClient`] converts into one (`ApiClient::into`).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Api: Send + Sync + fmt::Debug {
    /// The URL of an API path (`""`: the API's base URL, as jobs are told).
    fn url(&self, path: &str) -> String;

    /// `GET /whoami`.
    async fn whoami(&self) -> ClientResult<UserRead>;

    /// `GET /node/{id}`; `None` when it does not exist.
    async fn get_node(&self, id: ObjectId) -> ClientResult<Option<Node>>;

    /// `GET /nodes` (one page).
    async fn find_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<Page<Node>>;

    /// Every node matching `query`, following pages.
    async fn find_all_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<Vec<Node>>;

    /// `GET /count`.
    async fn count_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<u64>;

    /// `POST /node`.
    async fn create_node(&self, node: &Node) -> ClientResult<Node>;

    /// `PUT /node/{id}` (the whole node); `noevent` writes without an event.
    async fn update_node(&self, node: &Node, noevent: bool) -> ClientResult<Node>;

    /// `PUT /nodes/{root}`: a result hierarchy; returns every written node.
    async fn submit_results(&self, root: &Hierarchy) -> ClientResult<Vec<Node>>;

    /// `POST /publish/{channel}`.
    async fn publish<'a>(
        &self,
        channel: &str,
        data: &Value,
        attributes: Option<&'a Value>,
    ) -> ClientResult<()>;

    /// `POST /telemetry`: returns how many were inserted.
    async fn add_telemetry(&self, events: &[Value]) -> ClientResult<u64>;

    /// `POST /subscribe/{channel}`.
    async fn subscribe<'a>(
        &self,
        channel: &str,
        promiscuous: bool,
        subscriber_id: Option<&'a str>,
    ) -> ClientResult<Subscription>;

    /// `POST /unsubscribe/{id}`.
    async fn unsubscribe(&self, id: u64) -> ClientResult<()>;

    /// `GET /listen/{id}` once, acknowledging `acknowledge` first; waits up to `timeout`.
    async fn listen_raw(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        timeout: Duration,
    ) -> ClientResult<Value>;

    /// `GET /listen/{id}?max=N` once (our server's batched catch-up): a JSON array of up to
    /// `max` messages, or — from a server without batching (upstream's), or one that
    /// implements only [`Api::listen_raw`] — one message object. Callers handle both.
    async fn listen_batch(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        max: usize,
        timeout: Duration,
    ) -> ClientResult<Value> {
        let _ = max;
        self.listen_raw(id, acknowledge, timeout).await
    }

    /// `POST /ack/{id}`.
    async fn ack(&self, id: u64, sequence_id: u64) -> ClientResult<()>;

    /// `GET /nodes/fast`: every matching node, unpaged (upstream's fast listing).
    async fn find_nodes_fast<'q>(&self, query: &'q [(&'q str, &'q str)])
    -> ClientResult<Vec<Node>>;

    /// `PUT /batch/nodeset`: sets `field` to `value` on the nodes `ids`; returns how many.
    async fn bulk_set(&self, ids: &[ObjectId], field: &str, value: &str) -> ClientResult<u64>;

    /// `GET /kv/{namespace}/{key}`: a stored value (`None` when absent).
    async fn get_kv(&self, namespace: &str, key: &str) -> ClientResult<Option<String>>;

    /// `POST /kv/{namespace}/{key}`: stores a value.
    async fn set_kv(&self, namespace: &str, key: &str, value: &str) -> ClientResult<()>;

    /// `DELETE /kv/{namespace}/{key}`: removes a value.
    async fn delete_kv(&self, namespace: &str, key: &str) -> ClientResult<()>;
}

#[async_trait]
impl Api for ApiClient {
    fn url(&self, path: &str) -> String {
        ApiClient::url(self, path)
    }

    async fn whoami(&self) -> ClientResult<UserRead> {
        ApiClient::whoami(self).await
    }

    async fn get_node(&self, id: ObjectId) -> ClientResult<Option<Node>> {
        ApiClient::get_node(self, id).await
    }

    async fn find_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<Page<Node>> {
        ApiClient::find_nodes(self, query).await
    }

    async fn find_all_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<Vec<Node>> {
        ApiClient::find_all_nodes(self, query).await
    }

    async fn count_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<u64> {
        ApiClient::count_nodes(self, query).await
    }

    async fn create_node(&self, node: &Node) -> ClientResult<Node> {
        ApiClient::create_node(self, node).await
    }

    async fn update_node(&self, node: &Node, noevent: bool) -> ClientResult<Node> {
        ApiClient::update_node(self, node, noevent).await
    }

    async fn submit_results(&self, root: &Hierarchy) -> ClientResult<Vec<Node>> {
        ApiClient::submit_results(self, root).await
    }

    async fn publish<'a>(
        &self,
        channel: &str,
        data: &Value,
        attributes: Option<&'a Value>,
    ) -> ClientResult<()> {
        ApiClient::publish(self, channel, data, attributes).await
    }

    async fn add_telemetry(&self, events: &[Value]) -> ClientResult<u64> {
        ApiClient::add_telemetry(self, events).await
    }

    async fn subscribe<'a>(
        &self,
        channel: &str,
        promiscuous: bool,
        subscriber_id: Option<&'a str>,
    ) -> ClientResult<Subscription> {
        ApiClient::subscribe(self, channel, promiscuous, subscriber_id).await
    }

    async fn unsubscribe(&self, id: u64) -> ClientResult<()> {
        ApiClient::unsubscribe(self, id).await
    }

    async fn listen_raw(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        timeout: Duration,
    ) -> ClientResult<Value> {
        ApiClient::listen_raw(self, id, acknowledge, timeout).await
    }

    async fn listen_batch(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        max: usize,
        timeout: Duration,
    ) -> ClientResult<Value> {
        ApiClient::listen_batch(self, id, acknowledge, max, timeout).await
    }

    async fn ack(&self, id: u64, sequence_id: u64) -> ClientResult<()> {
        ApiClient::ack(self, id, sequence_id).await
    }

    async fn find_nodes_fast<'q>(
        &self,
        query: &'q [(&'q str, &'q str)],
    ) -> ClientResult<Vec<Node>> {
        ApiClient::find_nodes_fast(self, query).await
    }

    async fn bulk_set(&self, ids: &[ObjectId], field: &str, value: &str) -> ClientResult<u64> {
        ApiClient::bulk_set(self, ids, field, value).await
    }

    async fn get_kv(&self, namespace: &str, key: &str) -> ClientResult<Option<String>> {
        ApiClient::get_kv(self, namespace, key).await
    }

    async fn set_kv(&self, namespace: &str, key: &str, value: &str) -> ClientResult<()> {
        ApiClient::set_kv(self, namespace, key, value).await
    }

    async fn delete_kv(&self, namespace: &str, key: &str) -> ClientResult<()> {
        ApiClient::delete_kv(self, namespace, key).await
    }
}

/// A shared API is an API: `Arc<dyn Api>` (what services hold) goes wherever `&dyn Api` does.
#[async_trait]
impl<T: Api + ?Sized> Api for Arc<T> {
    fn url(&self, path: &str) -> String {
        (**self).url(path)
    }

    async fn whoami(&self) -> ClientResult<UserRead> {
        (**self).whoami().await
    }

    async fn get_node(&self, id: ObjectId) -> ClientResult<Option<Node>> {
        (**self).get_node(id).await
    }

    async fn find_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<Page<Node>> {
        (**self).find_nodes(query).await
    }

    async fn find_all_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<Vec<Node>> {
        (**self).find_all_nodes(query).await
    }

    async fn count_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<u64> {
        (**self).count_nodes(query).await
    }

    async fn create_node(&self, node: &Node) -> ClientResult<Node> {
        (**self).create_node(node).await
    }

    async fn update_node(&self, node: &Node, noevent: bool) -> ClientResult<Node> {
        (**self).update_node(node, noevent).await
    }

    async fn submit_results(&self, root: &Hierarchy) -> ClientResult<Vec<Node>> {
        (**self).submit_results(root).await
    }

    async fn publish<'a>(
        &self,
        channel: &str,
        data: &Value,
        attributes: Option<&'a Value>,
    ) -> ClientResult<()> {
        (**self).publish(channel, data, attributes).await
    }

    async fn add_telemetry(&self, events: &[Value]) -> ClientResult<u64> {
        (**self).add_telemetry(events).await
    }

    async fn subscribe<'a>(
        &self,
        channel: &str,
        promiscuous: bool,
        subscriber_id: Option<&'a str>,
    ) -> ClientResult<Subscription> {
        (**self)
            .subscribe(channel, promiscuous, subscriber_id)
            .await
    }

    async fn unsubscribe(&self, id: u64) -> ClientResult<()> {
        (**self).unsubscribe(id).await
    }

    async fn listen_raw(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        timeout: Duration,
    ) -> ClientResult<Value> {
        (**self).listen_raw(id, acknowledge, timeout).await
    }

    async fn listen_batch(
        &self,
        id: u64,
        acknowledge: Option<u64>,
        max: usize,
        timeout: Duration,
    ) -> ClientResult<Value> {
        (**self).listen_batch(id, acknowledge, max, timeout).await
    }

    async fn ack(&self, id: u64, sequence_id: u64) -> ClientResult<()> {
        (**self).ack(id, sequence_id).await
    }

    async fn find_nodes_fast<'q>(
        &self,
        query: &'q [(&'q str, &'q str)],
    ) -> ClientResult<Vec<Node>> {
        (**self).find_nodes_fast(query).await
    }

    async fn bulk_set(&self, ids: &[ObjectId], field: &str, value: &str) -> ClientResult<u64> {
        (**self).bulk_set(ids, field, value).await
    }

    async fn get_kv(&self, namespace: &str, key: &str) -> ClientResult<Option<String>> {
        (**self).get_kv(namespace, key).await
    }

    async fn set_kv(&self, namespace: &str, key: &str, value: &str) -> ClientResult<()> {
        (**self).set_kv(namespace, key, value).await
    }

    async fn delete_kv(&self, namespace: &str, key: &str) -> ClientResult<()> {
        (**self).delete_kv(namespace, key).await
    }
}

impl From<ApiClient> for Arc<dyn Api> {
    fn from(client: ApiClient) -> Arc<dyn Api> {
        Arc::new(client)
    }
}
