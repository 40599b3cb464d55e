//! [`ResultsStore`] on MongoDB.
//!
//! Which test cases are leaves is asked of the server: `$match` on `parent` among the
//! candidates and `$group` on the `parent` field path (both servers understand it). The counts
//! themselves are taken while the cursor over the scope streams, with the reference definition
//! ([`crate::store::results`]), reading only the fields they need: memory grows with the number
//! of groups (and, for test cases, with the candidates' ids), not with documents. Genuine
//! MongoDB could count in one `$group` on a document key with `$cond` sums; the test peer
//! (jongodb) groups only on a field path and evaluates no expression (README, "Gaps of the wire
//! server"), so the grouping is done here.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use super::convert::{self, NODE};
use super::{MongoStore, corrupt, mongo_err};
use crate::models::{Node, ObjectId};
use crate::query::Filter;
use crate::store::results::{
    check_group_fields, classify, field_value, is_case_kind, is_infra_error, result_order,
};
use crate::store::{
    NodeGroup, ResultCategory, ResultGroup, ResultsStore, ResultsWindow, StatusCounts, StoreError,
    StoreResult,
};

/// Ids sent in one `$in` when asking which candidates have children.
const CHUNK: usize = 5000;

fn decode(d: &Document) -> StoreResult<Node> {
    Node::from_value(convert::from_document(d)).map_err(|e| corrupt("node", e))
}

/// A projection of the fields a count reads (the residual's too).
fn projection(t: &convert::Translated, group_by: &[String]) -> Document {
    let mut p = doc! {};
    for f in [
        "_id",
        "kind",
        "name",
        "path",
        "group",
        "parent",
        "result",
        "state",
        "created",
        "updated",
        "timeout",
        "data.error_code",
    ] {
        p.insert(f, 1);
    }
    for f in group_by
        .iter()
        .map(String::as_str)
        .chain(t.residual.iter().map(|c| c.field.as_str()))
    {
        let top = f.split('.').next().unwrap_or(f);
        if top != "data" && !p.contains_key(top) {
            p.insert(top, 1);
        }
        if top == "data" && !p.contains_key(f) {
            p.insert(f, 1);
        }
    }
    p
}

impl MongoStore {
    /// Streams the nodes `scope` selects (residual conditions checked here), handing each to
    /// `each`.
    async fn stream_scope(
        &self,
        scope: &Filter,
        group_by: &[String],
        full: bool,
        mut each: impl FnMut(Node) -> StoreResult<()> + Send,
    ) -> StoreResult<()> {
        let t = convert::translate(&NODE, scope);
        let mut find = self
            .inner
            .nodes
            .find(t.doc.clone())
            .max_time(self.inner.query_timeout);
        if !full {
            find = find.projection(projection(&t, group_by));
        }
        let mut cursor = find.await.map_err(|e| mongo_err("count results", e))?;
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| mongo_err("count results", e))?
        {
            let value = convert::from_document(&d);
            if !t.residual.iter().all(|c| c.matches(&value)) {
                continue;
            }
            each(Node::from_value(value).map_err(|e| corrupt("node", e))?)?;
        }
        Ok(())
    }

    /// Which of `ids` some node has as parent: `$group` on `parent` by the server.
    async fn with_children(&self, ids: &[ObjectId]) -> StoreResult<HashSet<ObjectId>> {
        let mut out = HashSet::new();
        for chunk in ids.chunks(CHUNK) {
            let list: Vec<Bson> = chunk
                .iter()
                .map(|i| Bson::ObjectId(convert::oid(*i)))
                .collect();
            let pipeline = [
                doc! { "$match": { "parent": { "$in": list } } },
                doc! { "$group": { "_id": "$parent" } },
            ];
            let cursor = self
                .inner
                .nodes
                .aggregate(pipeline)
                .max_time(self.inner.query_timeout)
                .await
                .map_err(|e| mongo_err("find parents", e))?;
            let groups: Vec<Document> = cursor
                .try_collect()
                .await
                .map_err(|e| mongo_err("find parents", e))?;
            for g in groups {
                if let Some(id) = g
                    .get_object_id("_id")
                    .ok()
                    .and_then(|o| convert::from_oid(&o))
                {
                    out.insert(id);
                }
            }
        }
        Ok(out)
    }
}

fn group_key(node: &Node, group_by: &[String]) -> (String, Vec<Value>) {
    let doc = node.to_value();
    let keys: Vec<Value> = group_by.iter().map(|f| field_value(&doc, f)).collect();
    (serde_json::to_string(&keys).unwrap_or_default(), keys)
}

#[async_trait]
impl ResultsStore for MongoStore {
    async fn count_results(
        &self,
        scope: &Filter,
        group_by: &[String],
    ) -> StoreResult<Vec<ResultGroup>> {
        check_group_fields(group_by).map_err(StoreError::Invalid)?;
        let mut groups: BTreeMap<String, ResultGroup> = BTreeMap::new();
        // Test cases wait for their leaf check: (id, category, group key, node).
        let mut cases: Vec<(ObjectId, ResultCategory, String, Node)> = Vec::new();
        self.read(self.stream_scope(scope, group_by, false, |node| {
            let (key, keys) = group_key(&node, group_by);
            groups.entry(key.clone()).or_insert_with(|| ResultGroup {
                keys,
                ..ResultGroup::default()
            });
            match classify(&node, false) {
                Some(ResultCategory::Build) => {
                    let infra = is_infra_error(&node);
                    if let Some(g) = groups.get_mut(&key) {
                        g.counts.builds.add(node.result, infra);
                    }
                }
                Some(category) => {
                    if let Some(id) = node.id {
                        cases.push((id, category, key, node));
                    }
                }
                None => {}
            }
            Ok(())
        }))
        .await?;
        let ids: Vec<ObjectId> = cases.iter().map(|c| c.0).collect();
        let parents = self.read(self.with_children(&ids)).await?;
        for (id, category, key, node) in cases {
            if parents.contains(&id) {
                continue;
            }
            if let Some(g) = groups.get_mut(&key) {
                g.counts
                    .get_mut(category)
                    .add(node.result, is_infra_error(&node));
            }
        }
        Ok(groups
            .into_values()
            .filter(|g| !g.counts.is_empty())
            .collect())
    }

    async fn find_results(
        &self,
        scope: &Filter,
        window: ResultsWindow,
    ) -> StoreResult<(Vec<Node>, u64)> {
        let category = window.category;
        let mut found: Vec<Node> = Vec::new();
        self.read(self.stream_scope(scope, &[], true, |node| {
            let candidate = match category {
                ResultCategory::Build => node.kind == "kbuild",
                _ => is_case_kind(&node.kind) && classify(&node, false) == Some(category),
            };
            if candidate {
                found.push(node);
            }
            Ok(())
        }))
        .await?;
        if category != ResultCategory::Build {
            let ids: Vec<ObjectId> = found.iter().filter_map(|n| n.id).collect();
            let parents = self.read(self.with_children(&ids)).await?;
            found.retain(|n| n.id.is_none_or(|id| !parents.contains(&id)));
        }
        found.sort_by(result_order);
        let total = found.len() as u64;
        Ok((window.page(found), total))
    }

    async fn count_node_results(
        &self,
        scope: &Filter,
        group_by: &[String],
    ) -> StoreResult<Vec<NodeGroup>> {
        check_group_fields(group_by).map_err(StoreError::Invalid)?;
        let mut groups: BTreeMap<String, NodeGroup> = BTreeMap::new();
        self.read(self.stream_scope(scope, group_by, false, |node| {
            let (key, keys) = group_key(&node, group_by);
            groups
                .entry(key)
                .or_insert_with(|| NodeGroup {
                    keys,
                    counts: StatusCounts::default(),
                })
                .counts
                .add(node.result, is_infra_error(&node));
            Ok(())
        }))
        .await?;
        Ok(groups.into_values().collect())
    }

    async fn latest_checkouts(&self, scope: &Filter, limit: u64) -> StoreResult<Vec<Node>> {
        let scope = scope
            .clone()
            .and_eq("kind", "checkout")
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let t = convert::translate(&NODE, &scope);
        let nodes = self.inner.nodes.clone();
        let timeout = self.inner.query_timeout;
        self.read(async move {
            let mut cursor = nodes
                .find(t.doc.clone())
                .sort(doc! { "created": -1, "_id": -1 })
                .max_time(timeout)
                .await
                .map_err(|e| mongo_err("latest checkouts", e))?;
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            while let Some(d) = cursor
                .try_next()
                .await
                .map_err(|e| mongo_err("latest checkouts", e))?
            {
                if out.len() as u64 >= limit {
                    break;
                }
                let value = convert::from_document(&d);
                if !t.residual.iter().all(|c| c.matches(&value)) {
                    continue;
                }
                let key = serde_json::to_string(&[
                    field_value(&value, "data.kernel_revision.tree"),
                    field_value(&value, "data.kernel_revision.branch"),
                ])
                .unwrap_or_default();
                if seen.insert(key) {
                    out.push(decode(&d)?);
                }
            }
            Ok(out)
        })
        .await
    }
}
