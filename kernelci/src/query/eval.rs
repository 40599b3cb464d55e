//! In-memory evaluation of conditions on JSON documents, with MongoDB's matching rules.

use std::cmp::Ordering;

use serde_json::Value;

use super::{Condition, Op, Operand, Scalar};
use crate::models::{ObjectId, Timestamp};

/// Collects the values a dotted path reaches, descending through lists like MongoDB does.
/// A list at the end of the path contributes itself and each element.
fn collect<'a>(value: &'a Value, segments: &[&str], out: &mut Vec<&'a Value>) {
    match segments.split_first() {
        None => {
            out.push(value);
            if let Value::Array(items) = value {
                out.extend(items.iter());
            }
        }
        Some((first, rest)) => match value {
            Value::Object(map) => {
                if let Some(v) = map.get(*first) {
                    collect(v, rest, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    if item.is_object() {
                        collect(item, segments, out);
                    }
                }
            }
            _ => {}
        },
    }
}

/// The values at `field` in `doc`; empty when the field is missing.
pub(crate) fn resolve<'a>(doc: &'a Value, field: &str) -> Vec<&'a Value> {
    let segments: Vec<&str> = field.split('.').collect();
    let mut out = Vec::new();
    // `_id` is spelled `id` in our documents.
    let first = if segments.first() == Some(&"_id") {
        vec!["id"]
    } else {
        vec![]
    };
    if first.is_empty() {
        collect(doc, &segments, &mut out);
    } else {
        collect(doc, &first, &mut out);
    }
    out
}

/// Compares a stored value with a query value when they are of the same type class.
pub(crate) fn compare(stored: &Value, q: &Scalar) -> Option<Ordering> {
    match (q, stored) {
        (Scalar::Null, Value::Null) => Some(Ordering::Equal),
        (Scalar::Bool(b), Value::Bool(s)) => Some(s.cmp(b)),
        (Scalar::Int(i), Value::Number(n)) => {
            if let Some(s) = n.as_i64() {
                Some(s.cmp(i))
            } else {
                n.as_f64().and_then(|s| s.partial_cmp(&(*i as f64)))
            }
        }
        (Scalar::Str(q), Value::String(s)) => Some(s.as_str().cmp(q.as_str())),
        (Scalar::Time(t), Value::String(s)) => Timestamp::parse(s).ok().map(|s| s.cmp(t)),
        (Scalar::Oid(o), Value::String(s)) => ObjectId::parse_str(s).ok().map(|s| s.cmp(o)),
        _ => None,
    }
}

fn equals(values: &[&Value], q: &Scalar) -> bool {
    match q {
        Scalar::Null => values.is_empty() || values.iter().any(|v| v.is_null()),
        _ => values
            .iter()
            .any(|v| compare(v, q) == Some(Ordering::Equal)),
    }
}

/// Whether `doc` satisfies the condition.
pub(crate) fn condition_matches(c: &Condition, doc: &Value) -> bool {
    let values = resolve(doc, &c.field);
    match (&c.operand, c.op) {
        (Operand::One(q), Op::Eq) => equals(&values, q),
        (Operand::One(q), Op::Ne) => !equals(&values, q),
        (Operand::One(Scalar::Null), Op::Lte | Op::Gte) => equals(&values, &Scalar::Null),
        (Operand::One(Scalar::Null), _) => false,
        (Operand::One(q), op) => values.iter().any(|v| match compare(v, q) {
            Some(ord) => match op {
                Op::Lt => ord == Ordering::Less,
                Op::Lte => ord != Ordering::Greater,
                Op::Gt => ord == Ordering::Greater,
                Op::Gte => ord != Ordering::Less,
                _ => false,
            },
            None => false,
        }),
        (Operand::List(items), Op::Nin) => !items.iter().any(|q| equals(&values, q)),
        (Operand::List(items), _) => items.iter().any(|q| equals(&values, q)),
        (Operand::Regex(re), _) => values
            .iter()
            .any(|v| v.as_str().is_some_and(|s| re.is_match(s))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::query::Query;

    fn m(pairs: &[(&str, &str)], doc: &serde_json::Value) -> bool {
        Query::parse(pairs.iter().copied())
            .unwrap()
            .filter
            .matches(doc)
    }

    #[test]
    fn mongo_matching_rules() {
        let doc = json!({"name": "baseline", "path": ["checkout", "kbuild", "baseline"], "parent": null,
            "result": null, "retry_counter": 2, "created": "2024-01-02T00:00:00",
            "data": {"kernel_revision": {"tree": "mainline", "version": {"version": 6}}},
            "groups": [{"name": "a"}, {"name": "b"}]});
        assert!(m(&[("path", "kbuild")], &doc));
        assert!(m(&[("parent", "null")], &doc));
        assert!(m(&[("missing", "null")], &doc));
        assert!(!m(&[("missing__ne", "null")], &doc));
        assert!(m(&[("missing__ne", "x")], &doc));
        assert!(m(&[("missing__nin", "x,y")], &doc));
        assert!(m(&[("retry_counter__gt", "1")], &doc));
        assert!(!m(&[("retry_counter__gt", "2")], &doc));
        assert!(m(
            &[("data.kernel_revision.version.version__gte", "6")],
            &doc
        ));
        assert!(!m(&[("data.kernel_revision.version.version", "6")], &doc));
        assert!(m(
            &[("data.kernel_revision.version.version__int", "6")],
            &doc
        ));
        assert!(m(
            &[
                ("created__gt", "2024-01-01"),
                ("created__lt", "2024-01-03T00:00:00Z")
            ],
            &doc
        ));
        assert!(m(&[("name__re", "^base")], &doc));
        assert!(!m(&[("name__re", "Base")], &doc));
        assert!(m(&[("groups.name", "b")], &doc));
        assert!(
            !m(&[("name__gt", "5")], &doc),
            "strings and numbers never compare"
        );
        assert!(m(
            &[("data.kernel_revision.tree__in", "stable,mainline")],
            &doc
        ));
    }
}
