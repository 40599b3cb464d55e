//! The node routes of [`ApiClient`]: read, find, count, create, update, submit results.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{ApiClient, ClientError, ClientResult, Hierarchy, Page};
use crate::models::{Node, NodePatch, ObjectId, State};
use crate::retry::Backoff;

impl ApiClient {
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
}
