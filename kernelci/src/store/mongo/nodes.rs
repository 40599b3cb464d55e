//! [`NodeStore`] on MongoDB: collection `node`, queries translated by [`convert`] (residual
//! conditions evaluated in memory), node events appended in the write's transaction
//! ([`events`](super::events)).

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use async_trait::async_trait;

use super::convert::{self, NODE};
use super::{MongoStore, Tx, corrupt, mongo_err, tx_fn};
use crate::models::{Node, NodePatch, ObjectId, Timestamp};
use crate::query::{Condition, Filter};
use crate::store::common::{apply_update_rule, check_settable_field};
use crate::store::{
    Conflict, Cursor, Entity, EventMode, FindOptions, NewEvent, NodePage, NodeStore, NodeUpdate,
    NodeWrite, StoreError, StoreResult, UpdateRule, node_created_event, node_updated_event,
};

/// A node with its timestamps truncated to what MongoDB keeps (milliseconds).
fn stored_node(mut node: Node) -> Node {
    node.created = convert::millis(node.created);
    node.updated = convert::millis(node.updated);
    node.timeout = convert::millis(node.timeout);
    node.holdoff = node.holdoff.map(convert::millis);
    node
}

fn node_doc(node: &Node) -> Document {
    convert::to_document(&NODE, &node.to_value())
}

fn decode_node(d: &Document) -> StoreResult<Node> {
    Node::from_value(convert::from_document(d)).map_err(|e| corrupt("node", e))
}

impl Tx {
    async fn load_node(&mut self, id: ObjectId) -> StoreResult<Option<(Node, Bson)>> {
        let nodes = self.inner.nodes.clone();
        let d = self
            .find_one(&nodes, doc! { "_id": convert::oid(id) })
            .await?;
        d.map(|d| {
            let updated = d.get("updated").cloned().unwrap_or(Bson::Null);
            decode_node(&d).map(|n| (n, updated))
        })
        .transpose()
    }

    async fn insert_nodes(&mut self, docs: Vec<Document>) -> StoreResult<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let ids: Vec<Bson> = docs.iter().filter_map(|d| d.get("_id").cloned()).collect();
        let nodes = self.inner.nodes.clone();
        let r = match self.session.as_mut() {
            Some(s) => nodes.insert_many(docs).session(s).await.map(|_| ()),
            None => {
                // Without a transaction, refuse a batch with a taken id before writing.
                let taken = nodes
                    .find_one(doc! { "_id": { "$in": ids.clone() } })
                    .await
                    .map_err(|e| mongo_err("insert nodes", e))?;
                if let Some(t) = taken {
                    let id = t
                        .get_object_id("_id")
                        .ok()
                        .and_then(|o| convert::from_oid(&o));
                    return Err(StoreError::Conflict(Conflict::NodeId(id)));
                }
                let r = nodes.insert_many(docs).await.map(|_| ());
                if r.is_ok() {
                    self.inserted.extend(ids.iter().cloned());
                }
                r
            }
        };
        r.map_err(|e| {
            let taken = duplicate_index(&e)
                .and_then(|i| ids.get(i))
                .and_then(|b| b.as_object_id())
                .and_then(|o| convert::from_oid(&o));
            match self.fail("insert nodes", e) {
                StoreError::Conflict(_) => StoreError::Conflict(Conflict::NodeId(taken)),
                other => other,
            }
        })
    }

    /// Replaces a node; `guard` is the stored `updated` value the replacement expects
    /// (checked without transactions, where it stands in for isolation).
    async fn replace_node(&mut self, node: &Node, guard: &Bson) -> StoreResult<()> {
        let id = node
            .id
            .ok_or_else(|| StoreError::Internal("node without id".into()))?;
        let nodes = self.inner.nodes.clone();
        let doc = node_doc(node);
        let r = match self.session.as_mut() {
            Some(s) => {
                nodes
                    .replace_one(doc! { "_id": convert::oid(id) }, doc)
                    .session(s)
                    .await
            }
            None => {
                nodes
                    .replace_one(
                        doc! { "_id": convert::oid(id), "updated": guard.clone() },
                        doc,
                    )
                    .await
            }
        };
        let r = r.map_err(|e| self.fail("replace node", e))?;
        if r.matched_count == 0 {
            return Err(StoreError::Conflict(Conflict::ConcurrentWrite(id)));
        }
        Ok(())
    }

    /// Replaces a node and, with [`EventMode::Publish`], appends its `updated` event.
    async fn write_update(
        &mut self,
        node: Node,
        previous: Node,
        guard: &Bson,
        mode: EventMode,
    ) -> StoreResult<NodeUpdate> {
        self.replace_node(&node, guard).await?;
        let event = match mode {
            EventMode::Publish => self
                .append(vec![node_updated_event(&node, &previous, false)])
                .await?
                .pop(),
            EventMode::Silent => None,
        };
        Ok(NodeUpdate {
            node,
            previous,
            event,
        })
    }
}

impl MongoStore {
    /// Finds nodes matching a translated filter (in `sort` order), applying the residual
    /// conditions in memory; `skip`/`limit` apply to the final answer.
    async fn find_docs(
        &self,
        t: &convert::Translated,
        sort: Document,
        skip: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<Document>> {
        let mut action = self
            .inner
            .nodes
            .find(t.doc.clone())
            .sort(sort)
            .max_time(self.inner.query_timeout);
        if t.residual.is_empty() {
            action = action.skip(skip);
            if let Some(l) = limit {
                action = action.limit(i64::try_from(l).unwrap_or(i64::MAX));
            }
            let cursor = action.await.map_err(|e| mongo_err("find nodes", e))?;
            return cursor
                .try_collect()
                .await
                .map_err(|e| mongo_err("find nodes", e));
        }
        let mut cursor = action.await.map_err(|e| mongo_err("find nodes", e))?;
        let mut out = Vec::new();
        let mut skipped = 0u64;
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| mongo_err("find nodes", e))?
        {
            if limit.is_some_and(|l| out.len() as u64 >= l) {
                break;
            }
            if !residual_matches(&t.residual, &d)? {
                continue;
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            out.push(d);
        }
        Ok(out)
    }
}

impl MongoStore {
    /// Visits the `_id` of every node `t` matches, reading only the top-level fields its
    /// residual conditions look at. A node whose stored document lacks one of them, or holds
    /// another BSON type than the node model writes there, is read whole and decoded, so the
    /// answer is the one [`MongoStore::find_docs`] gives.
    async fn residual_ids(
        &self,
        t: &convert::Translated,
        mut visit: impl FnMut(Bson),
    ) -> StoreResult<()> {
        let mut fields: Vec<&str> = t
            .residual
            .iter()
            .filter_map(|c| c.field.split('.').next())
            .filter(|f| !matches!(*f, "id" | "_id"))
            .collect();
        fields.sort_unstable();
        fields.dedup();
        let mut projection = doc! { "_id": 1 };
        for f in &fields {
            projection.insert(*f, 1);
        }
        let mut cursor = self
            .inner
            .nodes
            .find(t.doc.clone())
            .projection(projection)
            .max_time(self.inner.query_timeout)
            .await
            .map_err(|e| mongo_err("count nodes", e))?;
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| mongo_err("count nodes", e))?
        {
            let Some(id) = d.get("_id").cloned() else {
                continue;
            };
            let as_written = fields.iter().all(|f| match (NODE.class(f), d.get(*f)) {
                (_, None) => false,
                (_, Some(Bson::Null)) | (convert::FieldClass::Plain, _) => true,
                (convert::FieldClass::ObjectId, Some(b)) => matches!(b, Bson::ObjectId(_)),
                (convert::FieldClass::DateTime, Some(b)) => matches!(b, Bson::DateTime(_)),
            });
            let matched = if as_written {
                let value = convert::from_document(&d);
                t.residual.iter().all(|c| c.matches(&value))
            } else {
                let full = self
                    .inner
                    .nodes
                    .find_one(doc! { "_id": id.clone() })
                    .await
                    .map_err(|e| mongo_err("count nodes", e))?;
                match full {
                    Some(full) => residual_matches(&t.residual, &full)?,
                    None => false,
                }
            };
            if matched {
                visit(id);
            }
        }
        Ok(())
    }
}

fn residual_matches(residual: &[Condition], d: &Document) -> StoreResult<bool> {
    if residual.is_empty() {
        return Ok(true);
    }
    let value = decode_node(d)?.to_value();
    Ok(residual.iter().all(|c| c.matches(&value)))
}

/// The position in its batch of the document an `insert_many` refused as a duplicate.
fn duplicate_index(e: &mongodb::error::Error) -> Option<usize> {
    match &*e.kind {
        mongodb::error::ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()?
            .iter()
            .find(|w| matches!(w.code, 11000 | 11001))
            .map(|w| w.index),
        _ => None,
    }
}

fn sort_field(field: &str) -> StoreResult<&str> {
    if field.is_empty() || field.split('.').any(|s| s.is_empty() || s.starts_with('$')) {
        return Err(StoreError::Invalid(format!("bad sort field '{field}'")));
    }
    Ok(if field == "id" { "_id" } else { field })
}

fn not_found(id: ObjectId) -> StoreError {
    StoreError::not_found(Entity::Node, id.to_hex())
}

#[async_trait]
impl NodeStore for MongoStore {
    async fn insert_nodes(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<NodeWrite> {
        let nodes: Vec<Node> = nodes
            .into_iter()
            .map(|mut n| {
                n.id.get_or_insert_with(ObjectId::new);
                stored_node(n)
            })
            .collect();
        let docs: Vec<Document> = nodes.iter().map(node_doc).collect();
        let events: Vec<NewEvent> = match event {
            EventMode::Publish => nodes.iter().map(node_created_event).collect(),
            EventMode::Silent => Vec::new(),
        };
        let events = self
            .write(tx_fn(move |tx| {
                let (docs, events) = (docs.clone(), events.clone());
                Box::pin(async move {
                    tx.insert_nodes(docs).await?;
                    tx.append(events).await
                })
            }))
            .await?;
        Ok(NodeWrite { nodes, events })
    }

    async fn get_node(&self, id: ObjectId) -> StoreResult<Option<Node>> {
        self.read(async {
            let d = self
                .inner
                .nodes
                .find_one(doc! { "_id": convert::oid(id) })
                .max_time(self.inner.query_timeout)
                .await
                .map_err(|e| mongo_err("get node", e))?;
            d.as_ref().map(decode_node).transpose()
        })
        .await
    }

    async fn update_node(&self, node: Node, rule: UpdateRule) -> StoreResult<NodeUpdate> {
        let id = node
            .id
            .ok_or_else(|| StoreError::Invalid("node has no id".into()))?;
        self.write(tx_fn(move |tx| {
            let mut node = node.clone();
            Box::pin(async move {
                let (previous, guard) = tx.load_node(id).await?.ok_or_else(|| not_found(id))?;
                apply_update_rule(&mut node, &previous, rule)?;
                let node = stored_node(node);
                tx.write_update(node, previous, &guard, rule.event).await
            })
        }))
        .await
    }

    async fn patch_node(
        &self,
        id: ObjectId,
        patch: &NodePatch,
        event: EventMode,
    ) -> StoreResult<NodeUpdate> {
        let patch = patch.clone();
        self.write(tx_fn(move |tx| {
            let patch = patch.clone();
            Box::pin(async move {
                let (previous, guard) = tx.load_node(id).await?.ok_or_else(|| not_found(id))?;
                let mut node = previous.clone();
                patch.apply(&mut node)?;
                let node = stored_node(node);
                tx.write_update(node, previous, &guard, event).await
            })
        }))
        .await
    }

    async fn write_hierarchy(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<NodeWrite> {
        self.write(tx_fn(move |tx| {
            let nodes = nodes.clone();
            Box::pin(async move {
                let mut out = Vec::with_capacity(nodes.len());
                let mut root_previous = None;
                for (i, mut node) in nodes.into_iter().enumerate() {
                    let stored = match node.id {
                        Some(id) => tx.load_node(id).await?,
                        None => None,
                    };
                    let node = match &stored {
                        Some((_, guard)) => {
                            node.updated = Timestamp::now();
                            let node = stored_node(node);
                            tx.replace_node(&node, guard).await?;
                            node
                        }
                        None => {
                            node.id.get_or_insert_with(ObjectId::new);
                            let node = stored_node(node);
                            tx.insert_nodes(vec![node_doc(&node)]).await?;
                            node
                        }
                    };
                    if i == 0 {
                        root_previous = stored.map(|(n, _)| n);
                    }
                    out.push(node);
                }
                let mut events = Vec::new();
                if event == EventMode::Publish
                    && let Some(root) = out.first()
                {
                    let prev = root_previous.as_ref().unwrap_or(root);
                    events = tx
                        .append(vec![node_updated_event(root, prev, true)])
                        .await?;
                }
                Ok(NodeWrite { nodes: out, events })
            })
        }))
        .await
    }

    async fn set_field(&self, ids: &[ObjectId], field: &str, value: Value) -> StoreResult<u64> {
        check_settable_field(field)?;
        // The value must fit the node model, as a full write would check.
        let mut probe = Node::new(crate::models::NodeKind::Checkout, "probe").to_value();
        if let Some(obj) = probe.as_object_mut() {
            obj.insert(field.to_owned(), value.clone());
        }
        Node::from_value(probe)?;
        let now = convert::datetime(Timestamp::now());
        let ids: Vec<Bson> = ids
            .iter()
            .map(|i| Bson::ObjectId(convert::oid(*i)))
            .collect();
        let class = NODE.class(field);
        let r = self
            .inner
            .nodes
            .update_many(
                doc! { "_id": { "$in": ids } },
                doc! { "$set": { field: convert::typed_bson(class, &value), "updated": now } },
            )
            .await
            .map_err(|e| mongo_err("set field", e))?;
        Ok(r.matched_count)
    }

    async fn find_nodes(&self, filter: &Filter, options: &FindOptions) -> StoreResult<NodePage> {
        let mut t = convert::translate(&NODE, filter);
        let (sort_on, desc) = match &options.sort {
            Some(s) => (Some(sort_field(&s.field)?.to_owned()), s.descending),
            None => (None, false),
        };
        let dir = if desc { -1 } else { 1 };
        let sort = match &sort_on {
            Some(f) if f != "_id" => doc! { f.clone(): dir, "_id": dir },
            _ => doc! { "_id": dir },
        };
        if let Some(after) = &options.after {
            let clause = match &sort_on {
                Some(f) if f != "_id" => {
                    let key = convert::typed_bson(NODE.class(f), &after.key);
                    convert::keyset_after(f, &key, after.id, desc)
                }
                _ => {
                    let op = if desc { "$lt" } else { "$gt" };
                    doc! { "_id": { op: convert::oid(after.id) } }
                }
            };
            t.doc = if t.doc.is_empty() {
                clause
            } else {
                doc! { "$and": [t.doc.clone(), clause] }
            };
        }
        let docs = self
            .read(self.find_docs(&t, sort, options.offset, options.limit))
            .await?;
        let mut items = Vec::with_capacity(docs.len());
        for d in &docs {
            items.push(decode_node(d)?);
        }
        let next = match (options.limit, docs.last(), items.last()) {
            (Some(l), Some(d), Some(last)) if items.len() as u64 == l => {
                let key = match &sort_on {
                    Some(f) if f != "_id" => convert::get_path(d, f)
                        .map(convert::bson_to_json)
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                last.id.map(|id| Cursor { key, id })
            }
            _ => None,
        };
        Ok(NodePage { items, next })
    }

    async fn count_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let t = convert::translate(&NODE, filter);
        self.read(async {
            if t.residual.is_empty() {
                self.inner
                    .nodes
                    .count_documents(t.doc.clone())
                    .max_time(self.inner.query_timeout)
                    .await
                    .map_err(|e| mongo_err("count nodes", e))
            } else {
                let mut n = 0u64;
                self.residual_ids(&t, |_| n += 1).await?;
                Ok(n)
            }
        })
        .await
    }

    async fn delete_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let t = convert::translate(&NODE, filter);
        let target = if t.residual.is_empty() {
            t.doc.clone()
        } else {
            let mut ids = Vec::new();
            self.read(self.residual_ids(&t, |id| ids.push(id))).await?;
            doc! { "_id": { "$in": ids } }
        };
        let r = self
            .inner
            .nodes
            .delete_many(target)
            .await
            .map_err(|e| mongo_err("delete nodes", e))?;
        Ok(r.deleted_count)
    }
}
