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

/// Implements [`Api`] for `$for` by calling the same-named function of `$target` on
/// `$this` (an expression of `self`): an `ApiClient`'s own methods, or the pointee's `Api`.
macro_rules! forward_api {
    ([$($generics:tt)*] $for:ty => $target:ty, |$self_:ident| $this:expr) => {
        #[async_trait]
        impl<$($generics)*> Api for $for {
            fn url(&self, path: &str) -> String {
                let $self_ = self;
                <$target>::url($this, path)
            }

            async fn whoami(&self) -> ClientResult<UserRead> {
                let $self_ = self;
                <$target>::whoami($this).await
            }

            async fn get_node(&self, id: ObjectId) -> ClientResult<Option<Node>> {
                let $self_ = self;
                <$target>::get_node($this, id).await
            }

            async fn find_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<Page<Node>> {
                let $self_ = self;
                <$target>::find_nodes($this, query).await
            }

            async fn find_all_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<Vec<Node>> {
                let $self_ = self;
                <$target>::find_all_nodes($this, query).await
            }

            async fn count_nodes<'q>(&self, query: &'q [(&'q str, &'q str)]) -> ClientResult<u64> {
                let $self_ = self;
                <$target>::count_nodes($this, query).await
            }

            async fn create_node(&self, node: &Node) -> ClientResult<Node> {
                let $self_ = self;
                <$target>::create_node($this, node).await
            }

            async fn update_node(&self, node: &Node, noevent: bool) -> ClientResult<Node> {
                let $self_ = self;
                <$target>::update_node($this, node, noevent).await
            }

            async fn submit_results(&self, root: &Hierarchy) -> ClientResult<Vec<Node>> {
                let $self_ = self;
                <$target>::submit_results($this, root).await
            }

            async fn publish<'a>(
                &self,
                channel: &str,
                data: &Value,
                attributes: Option<&'a Value>,
            ) -> ClientResult<()> {
                let $self_ = self;
                <$target>::publish($this, channel, data, attributes).await
            }

            async fn add_telemetry(&self, events: &[Value]) -> ClientResult<u64> {
                let $self_ = self;
                <$target>::add_telemetry($this, events).await
            }

            async fn subscribe<'a>(
                &self,
                channel: &str,
                promiscuous: bool,
                subscriber_id: Option<&'a str>,
            ) -> ClientResult<Subscription> {
                let $self_ = self;
                <$target>::subscribe($this, channel, promiscuous, subscriber_id)
                    .await
            }

            async fn unsubscribe(&self, id: u64) -> ClientResult<()> {
                let $self_ = self;
                <$target>::unsubscribe($this, id).await
            }

            async fn listen_raw(
                &self,
                id: u64,
                acknowledge: Option<u64>,
                timeout: Duration,
            ) -> ClientResult<Value> {
                let $self_ = self;
                <$target>::listen_raw($this, id, acknowledge, timeout).await
            }

            async fn listen_batch(
                &self,
                id: u64,
                acknowledge: Option<u64>,
                max: usize,
                timeout: Duration,
            ) -> ClientResult<Value> {
                let $self_ = self;
                <$target>::listen_batch($this, id, acknowledge, max, timeout).await
            }

            async fn ack(&self, id: u64, sequence_id: u64) -> ClientResult<()> {
                let $self_ = self;
                <$target>::ack($this, id, sequence_id).await
            }

            async fn find_nodes_fast<'q>(
                &self,
                query: &'q [(&'q str, &'q str)],
            ) -> ClientResult<Vec<Node>> {
                let $self_ = self;
                <$target>::find_nodes_fast($this, query).await
            }

            async fn bulk_set(&self, ids: &[ObjectId], field: &str, value: &str) -> ClientResult<u64> {
                let $self_ = self;
                <$target>::bulk_set($this, ids, field, value).await
            }

            async fn get_kv(&self, namespace: &str, key: &str) -> ClientResult<Option<String>> {
                let $self_ = self;
                <$target>::get_kv($this, namespace, key).await
            }

            async fn set_kv(&self, namespace: &str, key: &str, value: &str) -> ClientResult<()> {
                let $self_ = self;
                <$target>::set_kv($this, namespace, key, value).await
            }

            async fn delete_kv(&self, namespace: &str, key: &str) -> ClientResult<()> {
                let $self_ = self;
                <$target>::delete_kv($this, namespace, key).await
            }
        }
    };
}

forward_api!([] ApiClient => ApiClient, |client| client);

// A shared API is an API: `Arc<dyn Api>` (what services hold) goes wherever `&dyn Api` does.
forward_api!([T: Api + ?Sized] Arc<T> => T, |shared| &**shared);

impl From<ApiClient> for Arc<dyn Api> {
    fn from(client: ApiClient) -> Arc<dyn Api> {
        Arc::new(client)
    }
}
