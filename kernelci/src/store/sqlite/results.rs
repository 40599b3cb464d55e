//! [`ResultsStore`] on SQLite: the definition of [`crate::store::results`] as SQL, counted
//! with `GROUP BY` on the node table.
//!
//! - The scope is the node query translated as for `find_nodes` (hot columns and their
//!   indexes: a revision's nodes come from the `data.kernel_revision.commit` index).
//! - A case is a leaf: `NOT EXISTS` a node with it as `parent` (the `parent` index).
//! - A boot is read from the document only for rows whose text holds `"boot"` at all
//!   (`instr` first), so most rows are counted from their columns without parsing JSON.
//! - Group keys are the fields' JSON text: a hot column's text when it holds one (no JSON
//!   parsing), else `doc -> path`.

use async_trait::async_trait;
use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::{SqliteStore, corrupt, db_err, sql};
use crate::models::{Node, ResultValue};
use crate::query::Filter;
use crate::store::results::{INFRA_ERROR_CODES, check_group_fields};
use crate::store::{
    NodeGroup, ResultCategory, ResultGroup, ResultsStore, ResultsWindow, StatusCounts, StoreError,
    StoreResult,
};

/// SQL of a row's category: 0 build, 1 boot, 2 test (for rows already known to be counted).
const CATEGORY_SQL: &str = "CASE WHEN kind = 'kbuild' THEN 0 \
     WHEN instr(doc, '\"boot\"') > 0 AND (doc ->> '$.path[1]' = 'boot' OR doc ->> '$.path[2]' = 'boot') THEN 1 \
     ELSE 2 END";

/// SQL of "this row is counted": a build, or a test/job no node has as parent.
const COUNTED_SQL: &str = "kind IN ('kbuild', 'test', 'job') AND (kind = 'kbuild' OR NOT EXISTS \
     (SELECT 1 FROM node AS child WHERE child.parent = node.id))";

/// Order of results: failures first (see `results::result_order`).
const ORDER_SQL: &str = "CASE result WHEN 'fail' THEN 0 WHEN 'incomplete' THEN 1 WHEN 'skip' THEN 3 \
     WHEN 'pass' THEN 4 ELSE 2 END, doc -> '$.path', id";

fn infra_sql() -> String {
    let codes: Vec<String> = INFRA_ERROR_CODES
        .iter()
        .map(|c| format!("'{}'", c.replace('\'', "''")))
        .collect();
    format!(
        "(result = 'incomplete' AND doc ->> '$.data.error_code' IN ({}))",
        codes.join(", ")
    )
}

fn category_sql(category: ResultCategory) -> &'static str {
    match category {
        ResultCategory::Build => "kind = 'kbuild'",
        ResultCategory::Boot => {
            "kind IN ('test', 'job') AND NOT EXISTS (SELECT 1 FROM node AS child WHERE child.parent = node.id) \
             AND instr(doc, '\"boot\"') > 0 AND (doc ->> '$.path[1]' = 'boot' OR doc ->> '$.path[2]' = 'boot')"
        }
        ResultCategory::Test => {
            "kind IN ('test', 'job') AND NOT EXISTS (SELECT 1 FROM node AS child WHERE child.parent = node.id) \
             AND NOT (instr(doc, '\"boot\"') > 0 AND (doc ->> '$.path[1]' IS 'boot' OR doc ->> '$.path[2]' IS 'boot'))"
        }
    }
}

fn result_of(text: Option<String>) -> StoreResult<Option<ResultValue>> {
    match text {
        None => Ok(None),
        Some(t) => t
            .parse::<ResultValue>()
            .map(Some)
            .map_err(|e| corrupt("node result", e)),
    }
}

fn count_of(row: &rusqlite::Row<'_>, i: usize) -> StoreResult<u64> {
    let v: i64 = row.get(i).map_err(db_err)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

impl SqliteStore {
    /// The JSON text of each `group_by` field, as SQL expressions.
    fn group_keys(&self, group_by: &[String]) -> StoreResult<Vec<String>> {
        check_group_fields(group_by).map_err(StoreError::Invalid)?;
        Ok(group_by
            .iter()
            .map(|f| {
                let path = sql::json_path(f).replace('\'', "''");
                match self.inner.hot(f) {
                    Some(col) => format!(
                        "CASE WHEN {c} IS NULL THEN 'null' WHEN {c} = char(1) THEN coalesce(doc -> '{path}', 'null') \
                         ELSE json_quote({c}) END",
                        c = col.name
                    ),
                    None => format!("coalesce(doc -> '{path}', 'null')"),
                }
            })
            .collect())
    }

    fn scope(&self, scope: &Filter) -> StoreResult<sql::Where> {
        sql::where_clause(scope, "doc", &|f| self.inner.hot(f)).map_err(StoreError::Invalid)
    }
}

/// `GROUP BY 1, 2, ..., n` (and `extra` more columns).
fn group_by_sql(n: usize, extra: usize) -> String {
    let cols: Vec<String> = (1..=n + extra).map(|i| i.to_string()).collect();
    if cols.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", cols.join(", "))
    }
}

fn read_keys(row: &rusqlite::Row<'_>, n: usize) -> StoreResult<Vec<Value>> {
    (0..n)
        .map(|i| {
            let text: String = row.get(i).map_err(db_err)?;
            serde_json::from_str(&text).map_err(|e| corrupt("node", e))
        })
        .collect()
}

fn decode(doc: &str) -> StoreResult<Node> {
    let value: Value = serde_json::from_str(doc).map_err(|e| corrupt("node", e))?;
    Node::from_value(value).map_err(|e| corrupt("node", e))
}

/// The nodes whose documents `text` (a `SELECT doc ...`) returns with `params`.
fn query_nodes(
    c: &rusqlite::Connection,
    text: &str,
    params: &[SqlValue],
) -> StoreResult<Vec<Node>> {
    let mut stmt = c.prepare_cached(text).map_err(db_err)?;
    let mut rows = stmt
        .query(params_from_iter(params.iter()))
        .map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let doc: String = row.get(0).map_err(db_err)?;
        out.push(decode(&doc)?);
    }
    Ok(out)
}

/// One row of a grouped count ([`SqliteStore::count_rows`]).
struct CountRow {
    /// The values of the `group_by` fields.
    keys: Vec<Value>,
    /// The category (build, boot, test), when counted by category.
    category: Option<ResultCategory>,
    /// The result.
    result: Option<ResultValue>,
    /// Whether these are infrastructure errors.
    infra: bool,
    /// How many nodes.
    count: u64,
}

impl SqliteStore {
    /// Counts the nodes `scope` selects by the values of the `group_by` fields, result and
    /// infrastructure error; with `by_category`, only the counted builds, boots and tests, and
    /// by category too.
    async fn count_rows(
        &self,
        scope: &Filter,
        group_by: &[String],
        by_category: bool,
    ) -> StoreResult<Vec<CountRow>> {
        let keys = self.group_keys(group_by)?;
        let w = self.scope(scope)?;
        let n = keys.len();
        let mut select: Vec<String> = keys;
        let mut counted = String::new();
        if by_category {
            select.push(CATEGORY_SQL.to_owned());
            counted = format!(" AND {COUNTED_SQL}");
        }
        // The column of the result: after the keys and the category.
        let r = select.len();
        select.push("result".into());
        select.push(infra_sql());
        select.push("count(*)".into());
        let text = format!(
            "SELECT {} FROM node WHERE ({}){counted}{}",
            select.join(", "),
            w.sql,
            group_by_sql(n, r - n + 2)
        );
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&text).map_err(db_err)?;
            let mut rows = stmt
                .query(params_from_iter(w.params.iter()))
                .map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db_err)? {
                let category = if by_category {
                    Some(match row.get::<_, i64>(n).map_err(db_err)? {
                        0 => ResultCategory::Build,
                        1 => ResultCategory::Boot,
                        _ => ResultCategory::Test,
                    })
                } else {
                    None
                };
                out.push(CountRow {
                    keys: read_keys(row, n)?,
                    category,
                    result: result_of(row.get(r).map_err(db_err)?)?,
                    infra: row
                        .get::<_, Option<bool>>(r + 1)
                        .map_err(db_err)?
                        .unwrap_or(false),
                    count: count_of(row, r + 2)?,
                });
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl ResultsStore for SqliteStore {
    async fn count_results(
        &self,
        scope: &Filter,
        group_by: &[String],
    ) -> StoreResult<Vec<ResultGroup>> {
        let mut out: Vec<ResultGroup> = Vec::new();
        for row in self.count_rows(scope, group_by, true).await? {
            let Some(category) = row.category else {
                continue;
            };
            let group = match out.iter_mut().position(|g| g.keys == row.keys) {
                Some(i) => &mut out[i],
                None => {
                    out.push(ResultGroup {
                        keys: row.keys,
                        ..ResultGroup::default()
                    });
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            group
                .counts
                .get_mut(category)
                .add_n(row.result, row.infra, row.count);
        }
        Ok(out)
    }

    async fn find_results(
        &self,
        scope: &Filter,
        window: ResultsWindow,
    ) -> StoreResult<(Vec<Node>, u64)> {
        let mut w = self.scope(scope)?;
        let cond = category_sql(window.category);
        let count_text = format!("SELECT count(*) FROM node WHERE ({}) AND {cond}", w.sql);
        let count_params = w.params.clone();
        let lim = w.param(SqlValue::Integer(
            i64::try_from(window.limit).unwrap_or(i64::MAX),
        ));
        let off = w.param(SqlValue::Integer(
            i64::try_from(window.offset).unwrap_or(i64::MAX),
        ));
        let page_text = format!(
            "SELECT doc FROM node WHERE ({}) AND {cond} ORDER BY {ORDER_SQL} LIMIT {lim} OFFSET {off}",
            w.sql
        );
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached(&count_text)
                .map_err(db_err)?
                .query_row(params_from_iter(count_params.iter()), |r| r.get(0))
                .map_err(db_err)?;
            let out = query_nodes(c, &page_text, &w.params)?;
            Ok((out, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    async fn count_node_results(
        &self,
        scope: &Filter,
        group_by: &[String],
    ) -> StoreResult<Vec<NodeGroup>> {
        let mut out: Vec<NodeGroup> = Vec::new();
        for row in self.count_rows(scope, group_by, false).await? {
            if row.count == 0 {
                continue;
            }
            let i = match out.iter().position(|g| g.keys == row.keys) {
                Some(i) => i,
                None => {
                    out.push(NodeGroup {
                        keys: row.keys,
                        counts: StatusCounts::default(),
                    });
                    out.len() - 1
                }
            };
            out[i].counts.add_n(row.result, row.infra, row.count);
        }
        Ok(out)
    }

    async fn latest_checkouts(&self, scope: &Filter, limit: u64) -> StoreResult<Vec<Node>> {
        let mut w = self.scope(scope)?;
        let lim = w.param(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let text = format!(
            "SELECT doc FROM (SELECT doc, created, id, row_number() OVER (PARTITION BY \
             coalesce(doc -> '$.data.kernel_revision.tree', 'null'), \
             coalesce(doc -> '$.data.kernel_revision.branch', 'null') \
             ORDER BY created DESC, id DESC) AS rank FROM node WHERE ({}) AND kind = 'checkout') \
             WHERE rank = 1 ORDER BY created DESC, id DESC LIMIT {lim}",
            w.sql
        );
        self.read(move |c| query_nodes(c, &text, &w.params)).await
    }
}
