//! JSON ⇄ BSON conversion with typed fields, and [`Filter`] → MongoDB filter translation.
//!
//! Documents are stored as upstream's Python API stores them: `_id` and `parent` are
//! ObjectIds, the node timestamps are BSON datetimes (naive UTC, **millisecond** precision:
//! microseconds are truncated on write), everything else is the JSON value as BSON.
//!
//! The translation answers every condition exactly as [`Filter::matches`] does on the node's
//! JSON form. A condition whose MongoDB spelling would answer differently (a regular
//! expression on an ObjectId or datetime field, a string compared with a datetime field, a
//! numeric path segment, which MongoDB reads as an array index, ...) is not sent to the server:
//! it becomes a *residual*, evaluated in memory on the candidates the rest of the filter finds.

use mongodb::bson::{self, Bson, Document, doc, oid};
use serde_json::{Map, Number, Value};

use crate::models::{ObjectId, Timestamp};
use crate::query::{Condition, Filter, Op, Operand, Scalar};

/// How a top-level field is typed in the stored documents of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldClass {
    /// An ObjectId (`_id`, `parent`).
    ObjectId,
    /// A BSON datetime.
    DateTime,
    /// Anything else: the JSON value as BSON.
    Plain,
}

/// The typed fields of one collection's documents (JSON names; `id` is stored as `_id`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schema {
    /// Top-level fields holding ObjectIds (besides `id`).
    pub oids: &'static [&'static str],
    /// Top-level fields holding datetimes.
    pub dates: &'static [&'static str],
}

/// Nodes: `parent` ObjectId, four datetimes.
pub(crate) const NODE: Schema = Schema {
    oids: &["parent"],
    dates: &["created", "updated", "timeout", "holdoff"],
};
/// Events (`eventhistory`): `timestamp` datetime.
pub(crate) const EVENT: Schema = Schema {
    oids: &[],
    dates: &["timestamp"],
};
/// Telemetry: `ts` datetime.
pub(crate) const TELEMETRY: Schema = Schema {
    oids: &[],
    dates: &["ts"],
};
/// Durable subscriber states.
pub(crate) const SUBSCRIBER: Schema = Schema {
    oids: &[],
    dates: &["created_at", "last_poll"],
};
/// Users and groups (ids only).
pub(crate) const PLAIN: Schema = Schema {
    oids: &[],
    dates: &[],
};

impl Schema {
    /// The class of a JSON field name (`id`/`_id` are ObjectIds).
    pub fn class(&self, field: &str) -> FieldClass {
        if field == "id" || field == "_id" || self.oids.contains(&field) {
            FieldClass::ObjectId
        } else if self.dates.contains(&field) {
            FieldClass::DateTime
        } else {
            FieldClass::Plain
        }
    }
}

/// Our id as a driver ObjectId.
pub(crate) fn oid(id: ObjectId) -> oid::ObjectId {
    let mut bytes = [0u8; 12];
    if let Ok(b) = hex::decode(id.to_hex())
        && b.len() == 12
    {
        bytes.copy_from_slice(&b);
    }
    oid::ObjectId::from_bytes(bytes)
}

/// A driver ObjectId as ours.
pub(crate) fn from_oid(id: &oid::ObjectId) -> Option<ObjectId> {
    ObjectId::parse_str(&id.to_hex()).ok()
}

/// A timestamp truncated to whole milliseconds (what a BSON datetime keeps).
pub(crate) fn millis(t: Timestamp) -> Timestamp {
    Timestamp::from_micros(t.micros().div_euclid(1000) * 1000).unwrap_or(t)
}

/// A timestamp as a BSON datetime (microseconds truncated).
pub(crate) fn datetime(t: Timestamp) -> bson::DateTime {
    bson::DateTime::from_millis(t.micros().div_euclid(1000))
}

/// A BSON datetime as a timestamp.
pub(crate) fn from_datetime(d: bson::DateTime) -> Option<Timestamp> {
    d.timestamp_millis()
        .checked_mul(1000)
        .and_then(Timestamp::from_micros)
}

/// Any JSON value as BSON (integers as Int32 when they fit, as pymongo writes them; integers
/// beyond `i64` as doubles).
pub(crate) fn json_to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => match i32::try_from(i) {
                Ok(small) => Bson::Int32(small),
                Err(_) => Bson::Int64(i),
            },
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(map) => Bson::Document(map_to_document(map)),
    }
}

fn map_to_document(map: &Map<String, Value>) -> Document {
    let mut d = Document::new();
    for (k, v) in map {
        d.insert(k.clone(), json_to_bson(v));
    }
    d
}

/// A JSON value of a typed field as BSON: ObjectId and datetime fields are converted when the
/// value parses, other values are kept as they are.
pub(crate) fn typed_bson(class: FieldClass, v: &Value) -> Bson {
    match (class, v) {
        (FieldClass::ObjectId, Value::String(s)) => match ObjectId::parse_str(s) {
            Ok(id) => Bson::ObjectId(oid(id)),
            Err(_) => json_to_bson(v),
        },
        (FieldClass::DateTime, Value::String(s)) => match Timestamp::parse(s) {
            Ok(t) => Bson::DateTime(datetime(t)),
            Err(_) => json_to_bson(v),
        },
        _ => json_to_bson(v),
    }
}

/// A JSON object (a node, an event, a user...) as the stored document of `schema`:
/// `id` becomes `_id`, typed fields are converted.
pub(crate) fn to_document(schema: &Schema, value: &Value) -> Document {
    let mut d = Document::new();
    let Some(map) = value.as_object() else {
        return d;
    };
    if let Some(id) = map.get("id") {
        d.insert("_id", typed_bson(FieldClass::ObjectId, id));
    }
    for (k, v) in map {
        if k == "id" {
            continue;
        }
        d.insert(k.clone(), typed_bson(schema.class(k), v));
    }
    d
}

/// Any BSON value as JSON: ObjectIds as 24-hex strings, datetimes as naive-UTC ISO strings,
/// other exotic types in MongoDB's relaxed extended JSON.
pub(crate) fn bson_to_json(b: &Bson) -> Value {
    match b {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(v) => Value::Bool(*v),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) => Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Bson::String(s) | Bson::Symbol(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(bson_to_json).collect()),
        Bson::Document(d) => Value::Object(document_to_map(d)),
        Bson::ObjectId(o) => Value::String(o.to_hex()),
        Bson::DateTime(d) => match from_datetime(*d) {
            Some(t) => Value::String(t.to_string()),
            None => Value::Null,
        },
        other => other.clone().into_relaxed_extjson(),
    }
}

fn document_to_map(d: &Document) -> Map<String, Value> {
    d.iter()
        .map(|(k, v)| (k.clone(), bson_to_json(v)))
        .collect()
}

/// A stored document as our JSON shape: `_id` becomes `id` (a redundant stored `id`, as
/// upstream's updates leave, is dropped).
pub(crate) fn from_document(d: &Document) -> Value {
    let mut map = Map::new();
    if let Some(id) = d.get("_id") {
        map.insert("id".into(), bson_to_json(id));
    }
    for (k, v) in d {
        if k == "_id" || k == "id" {
            continue;
        }
        map.insert(k.clone(), bson_to_json(v));
    }
    Value::Object(map)
}

/// A translated filter: the document MongoDB runs, and the conditions left to evaluate in
/// memory (see the module documentation).
#[derive(Debug, Clone, Default)]
pub(crate) struct Translated {
    /// The MongoDB filter.
    pub doc: Document,
    /// Conditions MongoDB would answer differently; evaluated on the JSON form.
    pub residual: Vec<Condition>,
}

/// A filter that matches no document.
fn nothing() -> Document {
    doc! { "_id": { "$exists": false } }
}

/// The query value of a scalar for a field of `class`, or `None` when MongoDB cannot compare it
/// the evaluator's way (the condition then goes to the residual). `Some(None)`: a timestamp
/// with sub-millisecond digits, which no stored (millisecond) datetime equals.
fn query_value(class: FieldClass, s: &Scalar) -> Option<Option<Bson>> {
    Some(Some(match (class, s) {
        (_, Scalar::Null) => Bson::Null,
        (FieldClass::ObjectId, Scalar::Oid(o)) => Bson::ObjectId(oid(*o)),
        (FieldClass::DateTime, Scalar::Time(t)) => {
            if t.micros().rem_euclid(1000) != 0 {
                return Some(None);
            }
            Bson::DateTime(datetime(*t))
        }
        (FieldClass::Plain, Scalar::Bool(b)) => Bson::Boolean(*b),
        // Int32 when it fits, as integers are stored (some wire servers compare numbers of
        // different BSON types as unequal).
        (FieldClass::Plain, Scalar::Int(i)) => match i32::try_from(*i) {
            Ok(small) => Bson::Int32(small),
            Err(_) => Bson::Int64(*i),
        },
        (FieldClass::Plain, Scalar::Str(v)) => Bson::String(v.clone()),
        _ => return None,
    }))
}

fn mongo_op(op: Op) -> &'static str {
    match op {
        Op::Lt => "$lt",
        Op::Lte => "$lte",
        Op::Gt => "$gt",
        _ => "$gte",
    }
}

/// Whether MongoDB reads the dotted path the way the evaluator does.
fn plain_path(field: &str) -> bool {
    field.split('.').enumerate().all(|(i, seg)| {
        let index = i > 0 && seg.bytes().all(|b| b.is_ascii_digit());
        !(seg.is_empty() || seg.starts_with('$') || index)
    })
}

/// Translates one condition; `None` sends it to the residual.
fn condition(schema: &Schema, c: &Condition) -> Option<Document> {
    if !plain_path(&c.field) {
        return None;
    }
    let field = match c.field.as_str() {
        "id" | "_id" => "_id",
        f => f,
    };
    let class = schema.class(field);
    Some(match (&c.operand, c.op) {
        (Operand::Regex(re), _) => {
            if class != FieldClass::Plain {
                return None;
            }
            doc! { field: { "$regex": re.as_str() } }
        }
        (Operand::One(s), Op::Eq) => match query_value(class, s)? {
            Some(v) => doc! { field: { "$eq": v } },
            None => nothing(),
        },
        (Operand::One(s), Op::Ne) => match query_value(class, s)? {
            Some(v) => doc! { field: { "$ne": v } },
            None => Document::new(),
        },
        (Operand::One(Scalar::Null), Op::Lte | Op::Gte) => doc! { field: { "$eq": Bson::Null } },
        (Operand::One(Scalar::Null), _) => nothing(),
        (Operand::One(s), op) => match query_value(class, s)? {
            Some(v) => doc! { field: { mongo_op(op): v } },
            None => {
                // A timestamp between two milliseconds: stored datetimes are whole
                // milliseconds, so compare with the millisecond below it.
                let Scalar::Time(t) = s else { return None };
                let floor = Bson::DateTime(datetime(*t));
                match op {
                    Op::Lt | Op::Lte => doc! { field: { "$lte": floor } },
                    _ => doc! { field: { "$gt": floor } },
                }
            }
        },
        (Operand::List(items), op) => {
            let mut values = Vec::with_capacity(items.len());
            for s in items {
                if let Some(v) = query_value(class, s)? {
                    values.push(v);
                }
            }
            if op == Op::Nin {
                doc! { field: { "$nin": values } }
            } else {
                doc! { field: { "$in": values } }
            }
        }
    })
}

/// Translates a filter for a collection of `schema`.
pub(crate) fn translate(schema: &Schema, filter: &Filter) -> Translated {
    let mut parts = Vec::new();
    let mut residual = Vec::new();
    for c in &filter.conditions {
        match condition(schema, c) {
            Some(d) if d.is_empty() => {}
            Some(d) => parts.push(d),
            None => residual.push(c.clone()),
        }
    }
    let doc = match parts.len() {
        0 => Document::new(),
        1 => parts.pop().unwrap_or_default(),
        _ => doc! { "$and": parts },
    };
    Translated { doc, residual }
}

/// MongoDB's sort order of the BSON types stored documents hold (JSON values, ObjectIds,
/// datetimes), as `$type` aliases per rank (null and missing first). Exotic types (binary,
/// decimal, BSON timestamps, regular expressions) never come from our writes; a sort key of
/// such a type pages as the last rank.
const TYPE_RANKS: &[&[&str]] = &[
    &["null"],
    &["double", "int", "long"],
    &["string"],
    &["object"],
    &["array"],
    &["objectId"],
    &["bool"],
    &["date"],
];

fn type_rank(b: &Bson) -> usize {
    match b {
        Bson::Null | Bson::Undefined => 0,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 1,
        Bson::String(_) | Bson::Symbol(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::ObjectId(_) => 5,
        Bson::Boolean(_) => 6,
        _ => 7,
    }
}

fn types_where(field: &str, ranks: impl Iterator<Item = usize>) -> Vec<Document> {
    // One `$type` per alias: some wire-compatible servers refuse a list of aliases.
    ranks
        .flat_map(|r| TYPE_RANKS.get(r).copied().unwrap_or(&[]).iter())
        .map(|a| doc! { field: { "$type": *a } })
        .collect()
}

/// The keyset condition "strictly after (key, id)" in the order `{field: dir, _id: dir}`.
/// Exact for scalar sort keys; a list-valued sort field sorts by its smallest (largest) element
/// in MongoDB and is not supported by keyset paging.
pub(crate) fn keyset_after(field: &str, key: &Bson, id: ObjectId, descending: bool) -> Document {
    let id = Bson::ObjectId(oid(id));
    let rank = type_rank(key);
    let (cmp, id_cmp) = if descending {
        ("$lt", "$lt")
    } else {
        ("$gt", "$gt")
    };
    let mut any = Vec::new();
    if rank == 0 {
        any.push(doc! { field: { "$eq": Bson::Null }, "_id": { id_cmp: id } });
        if !descending {
            any.push(doc! { field: { "$ne": Bson::Null } });
        }
    } else {
        any.push(doc! { field: { cmp: key.clone() } });
        any.push(doc! { field: { "$eq": key.clone() }, "_id": { id_cmp: id } });
        if descending {
            any.push(doc! { field: { "$eq": Bson::Null } });
            any.extend(types_where(field, 1..rank));
        } else {
            any.extend(types_where(field, rank + 1..TYPE_RANKS.len()));
        }
    }
    doc! { "$or": any }
}

/// The value at a dotted path of a stored document (the list itself when a path meets one).
pub(crate) fn get_path<'a>(d: &'a Document, field: &str) -> Option<&'a Bson> {
    let mut parts = field.split('.');
    let mut cur = d.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(inner) => inner.get(p)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Query;
    use serde_json::json;

    fn tr(pairs: &[(&str, &str)]) -> Translated {
        translate(
            &NODE,
            &Query::parse(pairs.iter().copied()).expect("query").filter,
        )
    }

    #[test]
    fn typed_values_and_residuals() {
        let t = tr(&[("parent", "65f0c0ffee0000000000abcd")]);
        assert!(matches!(
            t.doc.get_document("parent").ok().and_then(|d| d.get("$eq")),
            Some(Bson::ObjectId(_))
        ));
        let t = tr(&[("created__gt", "2024-01-01")]);
        assert!(matches!(
            t.doc
                .get_document("created")
                .ok()
                .and_then(|d| d.get("$gt")),
            Some(Bson::DateTime(_))
        ));
        assert_eq!(tr(&[("created__re", "2024")]).residual.len(), 1);
        assert_eq!(tr(&[("path.0", "x")]).residual.len(), 1);
        assert!(
            tr(&[("id", "65f0c0ffee0000000000abcd")])
                .doc
                .contains_key("_id")
        );
        // A sub-millisecond timestamp equals no stored datetime.
        let t = tr(&[("created", "2024-01-01T00:00:00.000500")]);
        assert!(t.doc.contains_key("_id"));
    }

    #[test]
    fn documents_round_trip() {
        let v = json!({"id": "65f0c0ffee0000000000abcd", "parent": null,
                       "created": "2024-01-02T03:04:05.678000", "data": {"n": 5, "big": 1e300, "l": [1, "a"]}});
        let d = to_document(&NODE, &v);
        assert!(matches!(d.get("_id"), Some(Bson::ObjectId(_))));
        assert!(matches!(d.get("created"), Some(Bson::DateTime(_))));
        assert_eq!(from_document(&d), v);
    }
}
