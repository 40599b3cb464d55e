//! [`TelemetryStore`] on MongoDB: collection `telemetry` (upstream's shape, `ts` a BSON
//! datetime). Pages are read with `skip`/`limit` and counted with `count_documents`;
//! statistics are one `$group` aggregation. Conditions MongoDB would answer differently
//! (residuals, see [`convert`]) are evaluated while the cursor streams, reading only the
//! fields they need for counts, so no request holds more than a page in memory.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use super::convert::{self, TELEMETRY};
use super::{MongoStore, mongo_err};
use crate::models::Timestamp;
use crate::store::common::{TelemetryGrouper, check_group_by};
use crate::store::{StoreResult, TelemetryGroup, TelemetryQuery, TelemetryStore};

/// The counts of [`TelemetryGroup`], each the documents of a `$match` (none: all).
const COUNTS: [&str; 6] = ["total", "pass", "fail", "incomplete", "skip", "infra_error"];

fn count_filter(name: &str) -> Option<Document> {
    match name {
        "total" => None,
        "infra_error" => Some(doc! { "is_infra_error": true }),
        result => Some(doc! { "result": result }),
    }
}

fn as_count(d: &Document) -> u64 {
    match d.get("n") {
        Some(Bson::Int32(i)) => u64::try_from(*i).unwrap_or(0),
        Some(Bson::Int64(i)) => u64::try_from(*i).unwrap_or(0),
        Some(Bson::Double(f)) if *f > 0.0 => *f as u64,
        _ => 0,
    }
}

fn set_count(g: &mut TelemetryGroup, name: &str, n: u64) {
    match name {
        "total" => g.total = n,
        "pass" => g.pass = n,
        "fail" => g.fail = n,
        "incomplete" => g.incomplete = n,
        "skip" => g.skip = n,
        _ => g.infra_error = n,
    }
}

/// `$match` of `base` and the group values found so far (`fields[i] == values[i]`; a null
/// matches a missing field too, as `$group` puts both under null).
fn match_prefix(base: &Document, fields: &[String], values: &[Bson]) -> Document {
    let mut all = vec![base.clone()];
    for (f, v) in fields.iter().zip(values) {
        all.push(doc! { f.as_str(): { "$eq": v.clone() } });
    }
    doc! { "$and": all }
}

impl MongoStore {
    fn telemetry(&self) -> Collection<Document> {
        self.inner.db.collection::<Document>("telemetry")
    }

    /// The MongoDB filter of `query`, and the residual.
    fn telemetry_query(query: &TelemetryQuery) -> convert::Translated {
        let mut t = convert::translate(&TELEMETRY, &query.filter);
        let mut range = Document::new();
        if let Some(s) = query.since {
            range.insert("$gte", convert::datetime(s));
        }
        if let Some(u) = query.until {
            range.insert("$lte", convert::datetime(u));
        }
        if !range.is_empty() {
            t.doc = doc! { "$and": [t.doc.clone(), { "ts": range }] };
        }
        t
    }

    /// The groups of `group_by` among the documents `base` matches, counted by the server:
    /// one `$group` on a field path per group value found at each level but the last, and
    /// at the last one `$facet` of the six counts (`$match` + `$group` each). The one-pass
    /// `$group` on a document key with `$cond` sums is what genuine MongoDB runs best, but the
    /// test peer (jongodb) groups only by a field path and evaluates no expression; these
    /// stages both servers understand. Round trips grow with the number of groups, memory
    /// with the number of groups; a group value that is a list or a document (which `$match`
    /// compares otherwise than `$group`) sends the query to [`Self::group_telemetry_streaming`].
    async fn group_telemetry(
        &self,
        base: &Document,
        group_by: &[String],
    ) -> StoreResult<Vec<TelemetryGroup>> {
        let Some((last, outer)) = group_by.split_last() else {
            return Ok(Vec::new());
        };
        let mut prefixes: Vec<Vec<Bson>> = vec![Vec::new()];
        for field in outer {
            let mut next = Vec::new();
            for prefix in &prefixes {
                let pipeline = [
                    doc! { "$match": match_prefix(base, group_by, prefix) },
                    doc! { "$group": { "_id": format!("${field}"), "n": { "$sum": 1 } } },
                ];
                for d in self.aggregate(pipeline).await? {
                    let value = d.get("_id").cloned().unwrap_or(Bson::Null);
                    if matches!(value, Bson::Array(_) | Bson::Document(_)) {
                        let t = convert::Translated {
                            doc: base.clone(),
                            residual: Vec::new(),
                        };
                        return self.group_telemetry_streaming(&t, group_by).await;
                    }
                    let mut p = prefix.clone();
                    p.push(value);
                    next.push(p);
                }
            }
            prefixes = next;
        }
        let mut out = Vec::new();
        for prefix in prefixes {
            let by_last = doc! { "$group": { "_id": format!("${last}"), "n": { "$sum": 1 } } };
            let mut facets = Document::new();
            for name in COUNTS {
                let mut stages: Vec<Document> = count_filter(name)
                    .map(|m| vec![doc! { "$match": m }])
                    .unwrap_or_default();
                stages.push(by_last.clone());
                facets.insert(name, stages);
            }
            let pipeline = [
                doc! { "$match": match_prefix(base, group_by, &prefix) },
                doc! { "$facet": facets },
            ];
            let mut groups: Vec<TelemetryGroup> = Vec::new();
            let keys_of = |value: Option<&Bson>| -> Vec<Value> {
                prefix
                    .iter()
                    .chain(std::iter::once(value.unwrap_or(&Bson::Null)))
                    .map(convert::bson_to_json)
                    .collect()
            };
            for facet in self.aggregate(pipeline).await? {
                for name in COUNTS {
                    let Ok(rows) = facet.get_array(name) else {
                        continue;
                    };
                    for row in rows.iter().filter_map(Bson::as_document) {
                        if matches!(row.get("_id"), Some(Bson::Array(_) | Bson::Document(_))) {
                            let t = convert::Translated {
                                doc: base.clone(),
                                residual: Vec::new(),
                            };
                            return self.group_telemetry_streaming(&t, group_by).await;
                        }
                        let keys = keys_of(row.get("_id"));
                        let group = match groups.iter_mut().position(|g| g.keys == keys) {
                            Some(i) => &mut groups[i],
                            None => {
                                groups.push(TelemetryGroup {
                                    keys,
                                    ..TelemetryGroup::default()
                                });
                                let last = groups.len() - 1;
                                &mut groups[last]
                            }
                        };
                        set_count(group, name, as_count(row));
                    }
                }
            }
            out.extend(groups.into_iter().filter(|g| g.total > 0));
        }
        Ok(out)
    }

    /// Runs an aggregation on `telemetry` and collects its (few) result documents.
    async fn aggregate(
        &self,
        pipeline: impl IntoIterator<Item = Document>,
    ) -> StoreResult<Vec<Document>> {
        let cursor = self
            .telemetry()
            .aggregate(pipeline)
            .max_time(self.inner.query_timeout)
            .await
            .map_err(|e| mongo_err("telemetry statistics", e))?;
        cursor
            .try_collect()
            .await
            .map_err(|e| mongo_err("telemetry statistics", e))
    }

    /// How many documents `t` matches, reading only the fields its residual looks at.
    async fn count_telemetry(&self, t: &convert::Translated) -> StoreResult<u64> {
        if t.residual.is_empty() {
            return self
                .telemetry()
                .count_documents(t.doc.clone())
                .max_time(self.inner.query_timeout)
                .await
                .map_err(|e| mongo_err("count telemetry", e));
        }
        let mut cursor = self
            .telemetry()
            .find(t.doc.clone())
            .projection(residual_projection(&t.residual, &[]))
            .max_time(self.inner.query_timeout)
            .await
            .map_err(|e| mongo_err("count telemetry", e))?;
        let mut n = 0u64;
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| mongo_err("count telemetry", e))?
        {
            let v = convert::from_document(&d);
            if t.residual.iter().all(|c| c.matches(&v)) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The groups of `query` counted while the cursor streams (for filters with a residual).
    async fn group_telemetry_streaming(
        &self,
        t: &convert::Translated,
        group_by: &[String],
    ) -> StoreResult<Vec<TelemetryGroup>> {
        let mut needed: Vec<&str> = group_by.iter().map(String::as_str).collect();
        needed.extend(["result", "is_infra_error"]);
        let mut cursor = self
            .telemetry()
            .find(t.doc.clone())
            .projection(residual_projection(&t.residual, &needed))
            .max_time(self.inner.query_timeout)
            .await
            .map_err(|e| mongo_err("telemetry statistics", e))?;
        let mut groups = TelemetryGrouper::default();
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| mongo_err("telemetry statistics", e))?
        {
            let v = convert::from_document(&d);
            if t.residual.iter().all(|c| c.matches(&v)) {
                groups.add(&v, group_by);
            }
        }
        Ok(groups.finish())
    }
}

/// A projection of the top-level fields the residual conditions and `more` read.
fn residual_projection(residual: &[crate::query::Condition], more: &[&str]) -> Document {
    let mut p = doc! { "_id": 1 };
    for f in residual
        .iter()
        .filter_map(|c| c.field.split('.').next())
        .chain(more.iter().copied())
        .filter(|f| !matches!(*f, "id" | "_id"))
    {
        p.insert(f, 1);
    }
    p
}

#[async_trait]
impl TelemetryStore for MongoStore {
    async fn insert_telemetry(&self, events: Vec<Value>) -> StoreResult<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let docs: Vec<Document> = events
            .into_iter()
            .map(|mut e| {
                if let Some(o) = e.as_object_mut() {
                    o.remove("id");
                    o.remove("_id");
                    if o.get("ts")
                        .and_then(Value::as_str)
                        .is_none_or(|t| Timestamp::parse(t).is_err())
                    {
                        o.insert("ts".into(), Value::String(Timestamp::now().to_string()));
                    }
                }
                convert::to_document(&convert::TELEMETRY, &e)
            })
            .collect();
        let n = docs.len() as u64;
        self.telemetry()
            .insert_many(docs)
            .await
            .map_err(|e| mongo_err("insert telemetry", e))?;
        Ok(n)
    }

    async fn find_telemetry(
        &self,
        query: &TelemetryQuery,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<Value>, u64)> {
        let t = MongoStore::telemetry_query(query);
        self.read(async {
            let total = self.count_telemetry(&t).await?;
            let coll = self.telemetry();
            let mut action = coll
                .find(t.doc.clone())
                .sort(doc! { "ts": 1, "_id": 1 })
                .max_time(self.inner.query_timeout);
            if t.residual.is_empty() {
                action = action.skip(offset);
                if let Some(l) = limit {
                    action = action.limit(i64::try_from(l).unwrap_or(i64::MAX));
                }
            }
            let mut cursor = action.await.map_err(|e| mongo_err("find telemetry", e))?;
            let mut items = Vec::new();
            let mut skipped = 0u64;
            while let Some(d) = cursor
                .try_next()
                .await
                .map_err(|e| mongo_err("find telemetry", e))?
            {
                if limit.is_some_and(|l| items.len() as u64 >= l) {
                    break;
                }
                let v = convert::from_document(&d);
                if !t.residual.is_empty() {
                    if !t.residual.iter().all(|c| c.matches(&v)) {
                        continue;
                    }
                    if skipped < offset {
                        skipped += 1;
                        continue;
                    }
                }
                items.push(v);
            }
            Ok((items, total))
        })
        .await
    }

    async fn telemetry_stats(
        &self,
        query: &TelemetryQuery,
        group_by: &[String],
    ) -> StoreResult<Vec<TelemetryGroup>> {
        check_group_by(group_by)?;
        let t = MongoStore::telemetry_query(query);
        if !t.residual.is_empty() {
            return self
                .read(self.group_telemetry_streaming(&t, group_by))
                .await;
        }
        self.read(self.group_telemetry(&t.doc, group_by)).await
    }
}
