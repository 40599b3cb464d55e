//! [`NodeStore`] on SQLite: node rows (the document plus indexed "hot" columns, see [`sql`]),
//! queries translated to SQL, cached counts ([`counts`]), node events appended in the write's
//! transaction ([`events`](super::events)).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::counts::{self, CountCache};
use super::events::append_event;
use super::writer::{self, Tx};
use super::{Inner, SqliteStore, corrupt, db_err, sql};
use crate::models::{Node, NodePatch, ObjectId, Timestamp};
use crate::query::Filter;
use crate::store::common::{apply_update_rule, check_settable_field};
use crate::store::{
    Conflict, Cursor, Entity, EventMode, FindOptions, NodePage, NodeStore, NodeUpdate, NodeWrite,
    StoreError, StoreResult, UpdateRule, node_created_event, node_json, node_updated_event,
};

/// The column of a field, if it has one (for sorting).
fn hot_column(field: &str) -> Option<&'static str> {
    if field == "id" {
        return Some("id");
    }
    sql::HOT_COLUMNS
        .iter()
        .find(|(f, _, _)| *f == field)
        .map(|(_, c, _)| *c)
}

impl Inner {
    /// The hot column of a field for a query, knowing which columns hold sentinels.
    pub(super) fn hot(&self, field: &str) -> Option<sql::HotColumn> {
        if field == "id" {
            return Some(sql::HotColumn {
                name: "id",
                index: usize::MAX,
                may_hold_sentinel: false,
            });
        }
        let i = sql::HOT_COLUMNS.iter().position(|(f, _, _)| *f == field)?;
        let bits = self.sentinels.load(Ordering::Acquire);
        Some(sql::HotColumn {
            name: sql::HOT_COLUMNS[i].1,
            index: i,
            may_hold_sentinel: bits & (1 << i) != 0,
        })
    }
}

fn hot_column_list() -> &'static str {
    static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        sql::HOT_COLUMNS
            .iter()
            .map(|(_, c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn node_row_sql(insert: bool) -> &'static str {
    static INSERT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static UPDATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let n = sql::HOT_COLUMNS.len();
    if insert {
        INSERT.get_or_init(|| {
            let params: Vec<String> = (3..n + 3).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT INTO node (id, doc, {}) VALUES (?1, ?2, {})",
                hot_column_list(),
                params.join(", ")
            )
        })
    } else {
        UPDATE.get_or_init(|| {
            let sets: Vec<String> = sql::HOT_COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (_, c, _))| format!("{c} = ?{}", i + 3))
                .collect();
            format!(
                "UPDATE node SET doc = ?2, {} WHERE id = ?1",
                sets.join(", ")
            )
        })
    }
}

/// The row values of a node (id, document, then the hot columns), and the bits of the hot
/// columns that got the sentinel.
fn node_row(node: &Node) -> StoreResult<(Vec<SqlValue>, u32, Value)> {
    let id = node
        .id
        .ok_or_else(|| StoreError::Internal("node without id".into()))?;
    let value = node.to_value();
    let doc = serde_json::to_string(&value)
        .map_err(|e| StoreError::Internal(format!("cannot encode node: {e}")))?;
    let mut row = Vec::with_capacity(sql::HOT_COLUMNS.len() + 2);
    row.push(SqlValue::Text(id.to_hex()));
    row.push(SqlValue::Text(doc));
    let mut bits = 0u32;
    for (i, (field, _, _)) in sql::HOT_COLUMNS.iter().enumerate() {
        let v = sql::hot_text_value(&value, field);
        if v.as_deref() == Some(sql::SENTINEL) {
            bits |= 1 << i;
        }
        row.push(v.map(SqlValue::Text).unwrap_or(SqlValue::Null));
    }
    Ok((row, bits, value))
}

fn decode_node(doc: &str) -> StoreResult<Node> {
    serde_json::from_str(doc).map_err(|e| corrupt("node", e))
}

fn load_doc(tx: &Connection, id: ObjectId) -> StoreResult<Option<String>> {
    tx.prepare_cached("SELECT doc FROM node WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.to_hex()], |r| r.get(0)).optional())
        .map_err(db_err)
}

fn load_node(tx: &Connection, id: ObjectId) -> StoreResult<Option<Node>> {
    load_doc(tx, id)?.map(|d| decode_node(&d)).transpose()
}

fn insert_node_row(tx: &Tx<'_>, node: &Node, sentinels: &AtomicU32) -> StoreResult<()> {
    let (row, bits, value) = node_row(node)?;
    // Marked before the commit, so no reader sees the row without the mark.
    sentinels.fetch_or(bits, Ordering::AcqRel);
    let mut stmt = tx.prepare_cached(node_row_sql(true)).map_err(db_err)?;
    stmt.execute(params_from_iter(row.iter()))
        .map_err(|e| match db_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(Conflict::NodeId(node.id)),
            other => other,
        })?;
    if bits >> sql::TYPED_COLUMNS != 0 {
        insert_node_values(tx, &row[0], &value, bits)?;
    }
    tx.node_changed(None, Some(value));
    Ok(())
}

/// Writes the `node_value` rows of a node whose hot columns `bits` hold the sentinel.
fn insert_node_values(tx: &Connection, id: &SqlValue, doc: &Value, bits: u32) -> StoreResult<()> {
    let mut stmt = tx
        .prepare_cached("INSERT INTO node_value (col, value, id) VALUES (?1, ?2, ?3)")
        .map_err(db_err)?;
    for (i, (field, _, _)) in sql::HOT_COLUMNS.iter().enumerate() {
        if bits & (1 << i) == 0 {
            continue;
        }
        for v in sql::reached_strings(doc, field) {
            stmt.execute(params![i as i64, v, id]).map_err(db_err)?;
        }
    }
    Ok(())
}

/// Builds `node_value` for a store written before it existed (schema version 1).
pub(super) fn fill_node_values(conn: &Connection) -> StoreResult<()> {
    let cols: Vec<String> = sql::HOT_COLUMNS
        .iter()
        .skip(sql::TYPED_COLUMNS)
        .map(|(_, c, _)| format!("{c} = char(1)"))
        .collect();
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    tx.execute("DELETE FROM node_value", []).map_err(db_err)?;
    let rows: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT id, doc FROM node WHERE {}",
                cols.join(" OR ")
            ))
            .map_err(db_err)?;
        let it = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?;
        it.collect::<Result<_, _>>().map_err(db_err)?
    };
    for (id, doc) in rows {
        let node = decode_node(&doc)?;
        let (_, bits, value) = node_row(&node)?;
        insert_node_values(&tx, &SqlValue::Text(id), &value, bits)?;
    }
    tx.commit().map_err(db_err)
}

/// Replaces the stored row of `node`, whose stored version is `previous`.
fn replace_node_row(
    tx: &Tx<'_>,
    node: &Node,
    previous: &Node,
    sentinels: &AtomicU32,
) -> StoreResult<()> {
    let (row, bits, value) = node_row(node)?;
    sentinels.fetch_or(bits, Ordering::AcqRel);
    let mut stmt = tx.prepare_cached(node_row_sql(false)).map_err(db_err)?;
    stmt.execute(params_from_iter(row.iter())).map_err(db_err)?;
    // Some row may have `node_value` rows: this one's are rewritten.
    if sentinels.load(Ordering::Acquire) >> sql::TYPED_COLUMNS != 0 {
        tx.prepare_cached("DELETE FROM node_value WHERE id = ?1")
            .map_err(db_err)?
            .execute([&row[0]])
            .map_err(db_err)?;
    }
    if bits >> sql::TYPED_COLUMNS != 0 {
        insert_node_values(tx, &row[0], &value, bits)?;
    }
    let old = tx.tracking().then(|| previous.to_value());
    tx.node_changed(old, Some(value));
    Ok(())
}

/// Replaces a node and, with [`EventMode::Publish`], appends its `updated` event.
fn write_update(
    tx: &Tx<'_>,
    node: Node,
    previous: Node,
    mode: EventMode,
    sentinels: &AtomicU32,
) -> StoreResult<NodeUpdate> {
    replace_node_row(tx, &node, &previous, sentinels)?;
    let event = match mode {
        EventMode::Publish => Some(append_event(
            tx,
            node_updated_event(&node, &previous, false),
        )?),
        EventMode::Silent => None,
    };
    Ok(NodeUpdate {
        node,
        previous,
        event,
    })
}

fn json_to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(SqlValue::Integer)
            .unwrap_or_else(|| SqlValue::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn sql_to_json(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::from(i),
        SqlValue::Real(f) => Value::from(f),
        SqlValue::Text(s) => Value::String(s),
        SqlValue::Blob(b) => Value::String(hex::encode(b)),
    }
}

fn node_not_found(id: ObjectId) -> StoreError {
    StoreError::not_found(Entity::Node, id.to_hex())
}

fn is_valid_field(field: &str) -> bool {
    !field.is_empty() && field.split('.').all(|s| !s.is_empty())
}

enum Counted {
    Cached(u64),
    Counted {
        n: u64,
        generation: u64,
        took: Duration,
    },
}

/// In one read transaction (left open): the node generation, then the cached count or a
/// fresh one.
fn count_in_snapshot(
    conn: &Connection,
    key: Option<&str>,
    counts: &CountCache,
    w: &sql::Where,
) -> StoreResult<Counted> {
    conn.execute_batch("BEGIN").map_err(db_err)?;
    let generation = writer::read_gen(conn)?;
    if let Some(n) = key.and_then(|k| counts.lookup(k, generation)) {
        return Ok(Counted::Cached(n));
    }
    let t = Instant::now();
    let n: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM node WHERE {}", w.sql))
        .map_err(db_err)?
        .query_row(params_from_iter(w.params.iter()), |r| r.get(0))
        .map_err(db_err)?;
    Ok(Counted::Counted {
        n: n.max(0) as u64,
        generation,
        took: t.elapsed(),
    })
}

fn find_nodes_sync(
    conn: &Connection,
    inner: &Inner,
    filter: &Filter,
    options: &FindOptions,
) -> StoreResult<NodePage> {
    let (docs, last_key) = find_docs_sync(conn, inner, filter, options)?;
    let items = docs
        .iter()
        .map(|d| decode_node(d))
        .collect::<StoreResult<Vec<Node>>>()?;
    let next = match (options.limit, items.last()) {
        (Some(l), Some(last)) if items.len() as u64 == l => {
            last.id.map(|id| Cursor { key: last_key, id })
        }
        _ => None,
    };
    Ok(NodePage { items, next })
}

/// The stored documents of the nodes [`find_nodes_sync`] returns, and the sort key of the last.
fn find_docs_sync(
    conn: &Connection,
    inner: &Inner,
    filter: &Filter,
    options: &FindOptions,
) -> StoreResult<(Vec<String>, Value)> {
    let mut w = sql::where_clause(filter, "doc", &|f| inner.hot(f)).map_err(StoreError::Invalid)?;
    let (key_expr, desc) = match &options.sort {
        Some(sort) => {
            if !is_valid_field(&sort.field) {
                return Err(StoreError::Invalid(format!(
                    "bad sort field '{}'",
                    sort.field
                )));
            }
            let expr = match hot_column(&sort.field) {
                Some(c) => c.to_owned(),
                None => {
                    w.params.push(SqlValue::Text(sql::json_path(&sort.field)));
                    format!("json_extract(doc, ?{})", w.params.len())
                }
            };
            (Some(expr), sort.descending)
        }
        None => (None, false),
    };
    let mut sql_text = format!(
        "SELECT id, doc{} FROM node WHERE {}",
        if key_expr.is_some() { ", __key" } else { "" },
        w.sql
    );
    if let Some(k) = &key_expr {
        sql_text = sql_text.replacen(", __key", &format!(", {k}"), 1);
    }
    if let Some(after) = &options.after {
        w.params.push(SqlValue::Text(after.id.to_hex()));
        let idp = format!("?{}", w.params.len());
        let clause = match &key_expr {
            None => format!("id > {idp}"),
            Some(k) => {
                if after.key.is_null() {
                    if desc {
                        format!("({k} IS NULL AND id < {idp})")
                    } else {
                        format!("(({k} IS NULL AND id > {idp}) OR {k} IS NOT NULL)")
                    }
                } else {
                    w.params.push(json_to_sql(&after.key));
                    let kp = format!("?{}", w.params.len());
                    if desc {
                        format!("({k} < {kp} OR ({k} = {kp} AND id < {idp}) OR {k} IS NULL)")
                    } else {
                        format!("({k} > {kp} OR ({k} = {kp} AND id > {idp}))")
                    }
                }
            }
        };
        sql_text.push_str(&format!(" AND {clause}"));
    }
    match &key_expr {
        None => sql_text.push_str(" ORDER BY id"),
        Some(k) if desc => sql_text.push_str(&format!(" ORDER BY {k} DESC, id DESC")),
        Some(k) => sql_text.push_str(&format!(" ORDER BY {k}, id")),
    }
    let limit = options
        .limit
        .map(|l| l.min(i64::MAX as u64) as i64)
        .unwrap_or(-1);
    sql_text.push_str(&format!(
        " LIMIT {limit} OFFSET {}",
        options.offset.min(i64::MAX as u64)
    ));
    let mut stmt = conn.prepare_cached(&sql_text).map_err(db_err)?;
    let mut rows = stmt
        .query(params_from_iter(w.params.iter()))
        .map_err(db_err)?;
    let mut docs = Vec::new();
    let mut last_key = Value::Null;
    while let Some(row) = rows.next().map_err(db_err)? {
        docs.push(row.get::<_, String>(1).map_err(db_err)?);
        if key_expr.is_some() {
            last_key = sql_to_json(row.get(2).map_err(db_err)?);
        }
    }
    Ok((docs, last_key))
}

#[async_trait]
impl NodeStore for SqliteStore {
    async fn insert_nodes(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<NodeWrite> {
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let mut out = Vec::with_capacity(nodes.len());
            let mut events = Vec::new();
            for mut node in nodes {
                if node.id.is_none() {
                    node.id = Some(ObjectId::new());
                }
                insert_node_row(tx, &node, &sentinels)?;
                if event == EventMode::Publish {
                    events.push(append_event(tx, node_created_event(&node))?);
                }
                out.push(node);
            }
            Ok(NodeWrite { nodes: out, events })
        })
        .await
    }

    async fn get_node(&self, id: ObjectId) -> StoreResult<Option<Node>> {
        self.read_point(move |conn| load_node(conn, id)).await
    }

    async fn get_node_json(&self, id: ObjectId) -> StoreResult<Option<String>> {
        if !self.inner.docs_as_stored {
            return self.get_node(id).await?.map(|n| node_json(&n)).transpose();
        }
        self.read_point(move |conn| load_doc(conn, id)).await
    }

    async fn find_nodes_json(
        &self,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<String>> {
        if !self.inner.docs_as_stored {
            let page = self.find_nodes(filter, options).await?;
            return page.items.iter().map(node_json).collect();
        }
        let (filter, options) = (filter.clone(), options.clone());
        let inner = self.inner.clone();
        self.read(move |conn| find_docs_sync(conn, &inner, &filter, &options).map(|(d, _)| d))
            .await
    }

    async fn update_node(&self, mut node: Node, rule: UpdateRule) -> StoreResult<NodeUpdate> {
        let id = node
            .id
            .ok_or_else(|| StoreError::Invalid("node has no id".into()))?;
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let previous = load_node(tx, id)?.ok_or_else(|| node_not_found(id))?;
            apply_update_rule(&mut node, &previous, rule)?;
            write_update(tx, node, previous, rule.event, &sentinels)
        })
        .await
    }

    async fn patch_node(
        &self,
        id: ObjectId,
        patch: &NodePatch,
        event: EventMode,
    ) -> StoreResult<NodeUpdate> {
        let patch = patch.clone();
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let previous = load_node(tx, id)?.ok_or_else(|| node_not_found(id))?;
            let mut node = previous.clone();
            patch.apply(&mut node)?;
            write_update(tx, node, previous, event, &sentinels)
        })
        .await
    }

    async fn write_hierarchy(&self, nodes: Vec<Node>, event: EventMode) -> StoreResult<NodeWrite> {
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let mut out = Vec::with_capacity(nodes.len());
            let mut root_previous = None;
            for (i, mut node) in nodes.into_iter().enumerate() {
                let stored = match node.id {
                    Some(id) => load_node(tx, id)?,
                    None => None,
                };
                if let Some(previous) = &stored {
                    node.updated = Timestamp::now();
                    replace_node_row(tx, &node, previous, &sentinels)?;
                } else {
                    if node.id.is_none() {
                        node.id = Some(ObjectId::new());
                    }
                    insert_node_row(tx, &node, &sentinels)?;
                }
                if i == 0 {
                    root_previous = stored;
                }
                out.push(node);
            }
            let mut events = Vec::new();
            if event == EventMode::Publish
                && let Some(root) = out.first()
            {
                let prev = root_previous.as_ref().unwrap_or(root);
                events.push(append_event(tx, node_updated_event(root, prev, true))?);
            }
            Ok(NodeWrite { nodes: out, events })
        })
        .await
    }

    async fn set_field(&self, ids: &[ObjectId], field: &str, value: Value) -> StoreResult<u64> {
        check_settable_field(field)?;
        let ids = ids.to_vec();
        let field = field.to_owned();
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            let now = Timestamp::now();
            let mut n = 0u64;
            for id in ids {
                let Some(previous) = load_node(tx, id)? else {
                    continue;
                };
                let mut doc = previous.to_value();
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert(field.clone(), value.clone());
                    obj.insert("updated".into(), Value::String(now.to_string()));
                }
                let node = Node::from_value(doc)?;
                replace_node_row(tx, &node, &previous, &sentinels)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn find_nodes(&self, filter: &Filter, options: &FindOptions) -> StoreResult<NodePage> {
        let (filter, options) = (filter.clone(), options.clone());
        let inner = self.inner.clone();
        self.read(move |conn| find_nodes_sync(conn, &inner, &filter, &options))
            .await
    }

    async fn count_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let w = sql::where_clause(filter, "doc", &|f| self.inner.hot(f))
            .map_err(StoreError::Invalid)?;
        let key = counts::key(filter);
        let gate = key.as_deref().and_then(|k| self.inner.counts.gate(k));
        let turn = match &gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        };
        let (counts, filter) = (self.inner.counts.clone(), filter.clone());
        let gate_key = key.clone();
        let out = self
            .read(move |conn| {
                // Registered before the snapshot, so the writer records what commits after it.
                let slot = key.as_deref().and_then(|k| counts.register(k, &filter));
                let counted = count_in_snapshot(conn, key.as_deref(), &counts, &w);
                let _ = conn.execute_batch("COMMIT");
                match (counted, key) {
                    (Ok(Counted::Cached(n)), _) => {
                        counts.release(slot);
                        Ok(n)
                    }
                    (
                        Ok(Counted::Counted {
                            n,
                            generation,
                            took,
                        }),
                        Some(key),
                    ) => {
                        counts.finish(key, slot, generation, n, took);
                        Ok(n)
                    }
                    (Ok(Counted::Counted { n, .. }), None) => Ok(n),
                    (Err(e), _) => {
                        counts.release(slot);
                        Err(e)
                    }
                }
            })
            .await;
        drop(turn);
        if let (Some(g), Some(k)) = (gate, gate_key) {
            self.inner.counts.ungate(&k, g);
        }
        out
    }

    async fn delete_nodes(&self, filter: &Filter) -> StoreResult<u64> {
        let w = sql::where_clause(filter, "doc", &|f| self.inner.hot(f))
            .map_err(StoreError::Invalid)?;
        let sentinels = self.inner.sentinels.clone();
        self.write(move |tx| {
            if sentinels.load(Ordering::Acquire) >> sql::TYPED_COLUMNS != 0 {
                tx.execute(
                    &format!(
                        "DELETE FROM node_value WHERE id IN (SELECT id FROM node WHERE {})",
                        w.sql
                    ),
                    params_from_iter(w.params.iter()),
                )
                .map_err(db_err)?;
            }
            let n = tx
                .execute(
                    &format!("DELETE FROM node WHERE {}", w.sql),
                    params_from_iter(w.params.iter()),
                )
                .map_err(db_err)?;
            if n > 0 {
                tx.nodes_changed_unknown();
            }
            Ok(n as u64)
        })
        .await
    }
}
