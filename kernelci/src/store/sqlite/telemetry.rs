//! [`TelemetryStore`] on SQLite: table `telemetry` (the document and its `ts`, indexed);
//! statistics are one `GROUP BY` query.

use async_trait::async_trait;
use rusqlite::params;
use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::{SqliteStore, corrupt, db_err, sql};
use crate::models::{ObjectId, Timestamp};
use crate::store::common::check_group_by;
use crate::store::{StoreError, StoreResult, TelemetryGroup, TelemetryQuery, TelemetryStore};

#[async_trait]
impl TelemetryStore for SqliteStore {
    async fn insert_telemetry(&self, events: Vec<Value>) -> StoreResult<u64> {
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached("INSERT INTO telemetry (ts, doc) VALUES (?1, ?2)")
                .map_err(db_err)?;
            let mut n = 0u64;
            for mut e in events {
                let ts = e
                    .get("ts")
                    .and_then(Value::as_str)
                    .and_then(|s| Timestamp::parse(s).ok())
                    .unwrap_or_else(Timestamp::now);
                if let Some(obj) = e.as_object_mut() {
                    obj.insert("ts".into(), Value::String(ts.to_string()));
                    obj.entry("id")
                        .or_insert_with(|| Value::String(ObjectId::new().to_hex()));
                }
                let doc =
                    serde_json::to_string(&e).map_err(|e| StoreError::Internal(e.to_string()))?;
                stmt.execute(params![ts.to_string(), doc]).map_err(db_err)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn find_telemetry(
        &self,
        query: &TelemetryQuery,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<Value>, u64)> {
        let w = telemetry_where(query)?;
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached(&format!("SELECT count(*) FROM telemetry WHERE {}", w.sql))
                .map_err(db_err)?
                .query_row(params_from_iter(w.params.iter()), |r| r.get(0))
                .map_err(db_err)?;
            let limit = limit.map(|l| l.min(i64::MAX as u64) as i64).unwrap_or(-1);
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT doc FROM telemetry WHERE {} ORDER BY ts, seq LIMIT {limit} OFFSET {}",
                    w.sql,
                    offset.min(i64::MAX as u64)
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params_from_iter(w.params.iter()), |r| r.get::<_, String>(0))
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(
                    serde_json::from_str(&row.map_err(db_err)?)
                        .map_err(|e| corrupt("telemetry", e))?,
                );
            }
            Ok((out, total.max(0) as u64))
        })
        .await
    }

    async fn telemetry_stats(
        &self,
        query: &TelemetryQuery,
        group_by: &[String],
    ) -> StoreResult<Vec<TelemetryGroup>> {
        check_group_by(group_by)?;
        let w = telemetry_where(query)?;
        // Each key is the field's JSON text (`->`), so values group as the JSON values do
        // (the string "1" apart from the number 1); a missing field groups with null.
        let keys: Vec<String> = group_by
            .iter()
            .map(|f| format!("coalesce(doc -> '{}', 'null')", sql::json_path(f)))
            .collect();
        let n = keys.len();
        let sql_text = format!(
            "SELECT {}, count(*),
                    sum(json_extract(doc, '$.result') IS 'pass'),
                    sum(json_extract(doc, '$.result') IS 'fail'),
                    sum(json_extract(doc, '$.result') IS 'incomplete'),
                    sum(json_extract(doc, '$.result') IS 'skip'),
                    sum(json_type(doc, '$.is_infra_error') IS 'true')
             FROM telemetry WHERE {} GROUP BY {}",
            keys.join(", "),
            w.sql,
            (1..=n)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&sql_text).map_err(db_err)?;
            let mut rows = stmt
                .query(params_from_iter(w.params.iter()))
                .map_err(db_err)?;
            let count = |row: &rusqlite::Row<'_>, i: usize| -> StoreResult<u64> {
                let v: i64 = row.get(i).map_err(db_err)?;
                Ok(u64::try_from(v).unwrap_or(0))
            };
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db_err)? {
                let mut group = TelemetryGroup::default();
                for i in 0..n {
                    let text: String = row.get(i).map_err(db_err)?;
                    group
                        .keys
                        .push(serde_json::from_str(&text).map_err(|e| corrupt("telemetry", e))?);
                }
                group.total = count(row, n)?;
                group.pass = count(row, n + 1)?;
                group.fail = count(row, n + 2)?;
                group.incomplete = count(row, n + 3)?;
                group.skip = count(row, n + 4)?;
                group.infra_error = count(row, n + 5)?;
                out.push(group);
            }
            Ok(out)
        })
        .await
    }
}

/// The WHERE clause of the telemetry documents `query` selects.
fn telemetry_where(query: &TelemetryQuery) -> StoreResult<sql::Where> {
    let mut w = sql::where_clause(&query.filter, "doc", &|_| None).map_err(StoreError::Invalid)?;
    if let Some(s) = query.since {
        let p = w.param(SqlValue::Text(s.to_string()));
        w.sql.push_str(&format!(" AND ts >= {p}"));
    }
    if let Some(u) = query.until {
        let p = w.param(SqlValue::Text(u.to_string()));
        w.sql.push_str(&format!(" AND ts <= {p}"));
    }
    Ok(w)
}
