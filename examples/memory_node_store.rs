//! A third-party node store: nodes in memory, implementing `kernelci::store::NodeStore` and
//! nothing else, checked by the library's `NodeStore` conformance suite.
//!
//! `cargo run --example memory_node_store` runs every check of the suite on it and prints
//! each result; `cargo test --example memory_node_store` runs the same checks as tests (the
//! `node_store_suite!` macro), and the workspace's `cargo test` runs them too.
//!
//! What it shows: a store only has to implement the trait of the concern it keeps. Node writes
//! with `EventMode::Publish` return their events (built by `node_created_event` and
//! `node_updated_event`, numbered by the store); a store that also keeps an `EventLog` would
//! append them there in the same transaction (the `node_event_suite!` checks that).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use kernelci::models::{Node, NodePatch, ObjectId, Timestamp};
use kernelci::query::Filter;
use kernelci::store::{
    Conflict, Cursor, Entity, EventMode, FindOptions, NewEvent, NodePage, NodeStore, NodeUpdate,
    NodeWrite, StoreError, StoreResult, StoredEvent, UpdateRule, apply_update_rule,
    node_created_event, node_updated_event,
};
use serde_json::Value;

/// Nodes in a map by id, and the number of the last event handed out.
#[derive(Debug, Default)]
pub struct MemoryNodeStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<ObjectId, Node>,
    last_event: u64,
}

impl State {
    /// Numbers an event.
    fn event(&mut self, event: NewEvent) -> StoredEvent {
        self.last_event += 1;
        event.stored(self.last_event, Timestamp::now())
    }

    /// Replaces the stored node `id` by what `change` makes of it; with
    /// [`EventMode::Publish`], numbers its `updated` event.
    fn update(
        &mut self,
        id: ObjectId,
        mode: EventMode,
        change: impl FnOnce(&Node) -> StoreResult<Node>,
    ) -> StoreResult<NodeUpdate> {
        let previous = self
            .nodes
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::not_found(Entity::Node, id))?;
        let node = change(&previous)?;
        self.nodes.insert(id, node.clone());
        let event = (mode == EventMode::Publish)
            .then(|| self.event(node_updated_event(&node, &previous, false)));
        Ok(NodeUpdate {
            node,
            previous,
            event,
        })
    }
}

impl MemoryNodeStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-made write: writes are applied
        // after every check passed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The value at a dotted path of a node's JSON form (null when missing).
fn value_at(doc: &Value, field: &str) -> Value {
    let mut cur = doc;
    for seg in field.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return Value::Null,
        }
    }
    cur.clone()
}

/// A total order on JSON values: by type (null, booleans, numbers, strings, lists, objects),
/// then by value.
fn compare(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ if rank(a) == rank(b) => a.to_string().cmp(&b.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[async_trait]
impl NodeStore for MemoryNodeStore {
    async fn insert_nodes(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<NodeWrite> {
        let mut state = self.lock();
        let mut nodes = nodes;
        for node in &mut nodes {
            let id = *node.id.get_or_insert_with(ObjectId::new);
            if state.nodes.contains_key(&id) {
                return Err(StoreError::Conflict(Conflict::NodeId(Some(id))));
            }
        }
        let mut events = Vec::new();
        for node in &nodes {
            if let Some(id) = node.id {
                state.nodes.insert(id, node.clone());
            }
            if event == EventMode::Publish {
                let e = state.event(node_created_event(node));
                events.push(e);
            }
        }
        Ok(NodeWrite { nodes, events })
    }

    async fn get_node(&self, id: ObjectId) -> StoreResult<Option<Node>> {
        Ok(self.lock().nodes.get(&id).cloned())
    }

    async fn update_node(&self, mut node: Node, rule: UpdateRule) -> StoreResult<NodeUpdate> {
        let id = node
            .id
            .ok_or_else(|| StoreError::Invalid("node has no id".into()))?;
        self.lock().update(id, rule.event, |previous| {
            apply_update_rule(&mut node, previous, rule)?;
            Ok(node)
        })
    }

    async fn patch_node(
        &self,
        id: ObjectId,
        patch: &NodePatch,
        event: EventMode,
    ) -> StoreResult<NodeUpdate> {
        self.lock().update(id, event, |previous| {
            let mut node = previous.clone();
            patch.apply(&mut node)?;
            Ok(node)
        })
    }

    async fn write_hierarchy(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<NodeWrite> {
        let mut state = self.lock();
        let mut out = Vec::with_capacity(nodes.len());
        let mut root_previous = None;
        for (i, mut node) in nodes.into_iter().enumerate() {
            let id = *node.id.get_or_insert_with(ObjectId::new);
            let stored = state.nodes.get(&id).cloned();
            if stored.is_some() {
                node.updated = Timestamp::now();
            }
            if i == 0 {
                root_previous = stored;
            }
            out.push(node);
        }
        for node in &out {
            if let Some(id) = node.id {
                state.nodes.insert(id, node.clone());
            }
        }
        let mut events = Vec::new();
        if event == EventMode::Publish
            && let Some(root) = out.first()
        {
            let previous = root_previous.as_ref().unwrap_or(root);
            events.push(state.event(node_updated_event(root, previous, true)));
        }
        Ok(NodeWrite { nodes: out, events })
    }

    async fn set_field(&self, ids: &[ObjectId], field: &str, value: Value) -> StoreResult<u64> {
        if field.is_empty() || field.contains('.') || field.starts_with('$') {
            return Err(StoreError::Invalid(format!(
                "field '{field}' cannot be set"
            )));
        }
        if matches!(field, "id" | "_id") {
            return Err(StoreError::Invalid(format!(
                "field '{field}' cannot be set"
            )));
        }
        let mut state = self.lock();
        let now = Timestamp::now();
        let mut changed = Vec::new();
        for id in ids {
            let Some(node) = state.nodes.get(id) else {
                continue;
            };
            let mut doc = node.to_value();
            if let Some(obj) = doc.as_object_mut() {
                obj.insert(field.to_owned(), value.clone());
                obj.insert("updated".into(), Value::String(now.to_string()));
            }
            changed.push((*id, Node::from_value(doc)?));
        }
        let n = changed.len() as u64;
        state.nodes.extend(changed);
        Ok(n)
    }

    async fn find_nodes(&self, filter: &Filter, options: &FindOptions) -> StoreResult<NodePage> {
        let state = self.lock();
        let sort = options.sort.clone();
        // (sort key, node) in the requested order; ties by id, in the same direction.
        let mut found: Vec<(Value, &Node)> = state
            .nodes
            .values()
            .filter(|n| filter.matches_node(n))
            .map(|n| {
                let key = match &sort {
                    Some(s) => value_at(&n.to_value(), &s.field),
                    None => Value::Null,
                };
                (key, n)
            })
            .collect();
        let descending = sort.as_ref().is_some_and(|s| s.descending);
        let order = |a: &(Value, &Node), b: &(Value, &Node)| {
            let o = compare(&a.0, &b.0).then(a.1.id.cmp(&b.1.id));
            if descending { o.reverse() } else { o }
        };
        found.sort_by(order);
        if let Some(after) = &options.after {
            let mark = Node {
                id: Some(after.id),
                ..Node::new(kernelci::models::NodeKind::Checkout, "cursor")
            };
            let cursor = (after.key.clone(), &mark);
            found.retain(|item| order(item, &cursor) == Ordering::Greater);
        }
        let limit = options
            .limit
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let page: Vec<(Value, &Node)> = found
            .into_iter()
            .skip(usize::try_from(options.offset).unwrap_or(usize::MAX))
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        let next = match (limit, page.last()) {
            (Some(l), Some((key, last))) if page.len() == l => last.id.map(|id| Cursor {
                key: key.clone(),
                id,
            }),
            _ => None,
        };
        Ok(NodePage {
            items: page.into_iter().map(|(_, n)| n.clone()).collect(),
            next,
        })
    }

    async fn count_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let state = self.lock();
        Ok(state
            .nodes
            .values()
            .filter(|n| filter.matches_node(n))
            .count() as u64)
    }

    async fn delete_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let mut state = self.lock();
        let before = state.nodes.len();
        state.nodes.retain(|_, n| !filter.matches_node(n));
        Ok((before - state.nodes.len()) as u64)
    }
}

/// Runs each check of the `NodeStore` suite on a fresh store, in order; the process fails on
/// the first check that does not hold.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    use kernelci::testsuite::store::nodes;
    macro_rules! check {
        ($($name:ident),* $(,)?) => {
            $(
                nodes::$name(&MemoryNodeStore::default()).await;
                println!("ok   {}", stringify!($name));
            )*
        };
    }
    check!(
        node_round_trip,
        duplicate_id_conflicts,
        queries_match_reference,
        plain_queries_match_reference,
        pagination_and_cursors,
        update_rules_and_events,
        patch_rules,
        hierarchy_writes_one_event,
        set_field_and_delete,
        concurrent_writers,
    );
    println!("MemoryNodeStore passes the NodeStore suite");
}

#[cfg(test)]
kernelci::node_store_suite!(async { (MemoryNodeStore::default(), ()) });
