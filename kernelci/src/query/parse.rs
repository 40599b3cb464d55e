//! Parsing `field__op=value` pairs into typed conditions.

use regex::Regex;

use super::{Condition, Filter, Op, Operand, Query, QueryError, Scalar};
use crate::models::{ObjectId, Timestamp};

/// How a field's query values are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// `id`, `_id`, `parent`: object ids.
    ObjectId,
    /// `created`, `updated`, `timeout`, `holdoff`: timestamps.
    Timestamp,
    /// `retry_counter`: integers.
    Int,
    /// `processed_by_kcidb_bridge`: booleans.
    Bool,
    /// Everything else: typed by the value and operator.
    Auto,
}

impl FieldType {
    /// The type of a node field.
    pub fn of(field: &str) -> FieldType {
        match field {
            "id" | "_id" | "parent" => FieldType::ObjectId,
            "created" | "updated" | "timeout" | "holdoff" => FieldType::Timestamp,
            "retry_counter" => FieldType::Int,
            "processed_by_kcidb_bridge" => FieldType::Bool,
            _ => FieldType::Auto,
        }
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn invalid(key: &str, message: impl Into<String>) -> QueryError {
    QueryError::InvalidValue {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Types one raw value for `field` and `op`.
fn scalar(key: &str, field: &str, op: Op, raw: &str) -> Result<Scalar, QueryError> {
    if raw == "null" {
        return Ok(Scalar::Null);
    }
    Ok(match FieldType::of(field) {
        FieldType::ObjectId => {
            Scalar::Oid(ObjectId::parse_str(raw).map_err(|e| invalid(key, e.to_string()))?)
        }
        FieldType::Timestamp => {
            Scalar::Time(Timestamp::parse(raw).map_err(|e| invalid(key, e.to_string()))?)
        }
        FieldType::Int => Scalar::Int(raw.trim().parse().map_err(|_| {
            invalid(
                key,
                format!("invalid literal for int() with base 10: '{raw}'"),
            )
        })?),
        FieldType::Bool => {
            Scalar::Bool(parse_bool(raw).ok_or_else(|| {
                invalid(key, format!("'{raw}' is not a boolean; use true or false"))
            })?)
        }
        FieldType::Auto => match op {
            Op::Eq => parse_bool(raw)
                .map(Scalar::Bool)
                .unwrap_or_else(|| Scalar::Str(raw.to_owned())),
            Op::Ne => match parse_bool(raw) {
                Some(b) => Scalar::Bool(b),
                None if is_digits(raw) => int_or_str(raw),
                None => Scalar::Str(raw.to_owned()),
            },
            Op::Lt | Op::Lte | Op::Gt | Op::Gte if is_digits(raw) => int_or_str(raw),
            _ => Scalar::Str(raw.to_owned()),
        },
    })
}

fn int_or_str(raw: &str) -> Scalar {
    raw.parse()
        .map(Scalar::Int)
        .unwrap_or_else(|_| Scalar::Str(raw.to_owned()))
}

/// Parses one `key=value` pair into a condition.
pub(crate) fn condition(key: &str, value: &str) -> Result<Condition, QueryError> {
    let parts: Vec<&str> = key.split("__").collect();
    let (field, op, int_eq) = match parts.as_slice() {
        [field, "int"] => (*field, Op::Eq, true),
        [field, op] => {
            let op = Op::from_suffix(op).ok_or_else(|| QueryError::UnknownOperator {
                key: key.to_owned(),
                op: (*op).to_owned(),
            })?;
            (*field, op, false)
        }
        // One part, or three and more: the whole key is the field name (as upstream).
        _ => (key, Op::Eq, false),
    };
    if field.is_empty() {
        return Err(QueryError::EmptyField(key.to_owned()));
    }
    let operand = if int_eq {
        Operand::One(Scalar::Int(value.trim().parse().map_err(|_| {
            invalid(
                key,
                format!("invalid literal for int() with base 10: '{value}'"),
            )
        })?))
    } else {
        match op {
            Op::In | Op::Nin => Operand::List(
                value
                    .split(',')
                    .map(|v| list_item(key, field, v))
                    .collect::<Result<_, _>>()?,
            ),
            Op::Re => Operand::Regex(
                Regex::new(value)
                    .map_err(|e| invalid(key, format!("Invalid regular expression: {e}")))?,
            ),
            _ => Operand::One(scalar(key, field, op, value)?),
        }
    };
    Ok(Condition {
        field: field.to_owned(),
        op,
        operand,
    })
}

fn list_item(key: &str, field: &str, raw: &str) -> Result<Scalar, QueryError> {
    match FieldType::of(field) {
        // Strings stay strings in lists, as upstream.
        FieldType::Auto if raw != "null" => Ok(Scalar::Str(raw.to_owned())),
        _ => scalar(key, field, Op::In, raw),
    }
}

fn pagination(key: &str, value: &str, min: u64) -> Result<u64, QueryError> {
    let err = |reason: &str| QueryError::InvalidPagination {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| err("not a non-negative integer"))?;
    if n < min {
        return Err(err(&format!("must be at least {min}")));
    }
    Ok(n)
}

pub(crate) fn query<I, K, V>(pairs: I, paginate: bool) -> Result<Query, QueryError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut q = Query::default();
    let mut filter = Filter::default();
    for (k, v) in pairs {
        let (k, v) = (k.as_ref(), v.as_ref());
        match k {
            "limit" if paginate => q.limit = Some(pagination(k, v, 1)?),
            "offset" if paginate => q.offset = Some(pagination(k, v, 0)?),
            _ => filter.conditions.push(condition(k, v)?),
        }
    }
    q.filter = filter;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, value: &str) -> Condition {
        condition(key, value).unwrap()
    }

    #[test]
    fn operators_and_typing() {
        let c = one("state__in", "running,done");
        assert_eq!(c.op, Op::In);
        assert_eq!(
            c.operand,
            Operand::List(vec![
                Scalar::Str("running".into()),
                Scalar::Str("done".into())
            ])
        );
        let c = one("data.kernel_revision.version.version__gte", "6");
        assert_eq!(
            (c.field.as_str(), c.op, c.operand),
            (
                "data.kernel_revision.version.version",
                Op::Gte,
                Operand::One(Scalar::Int(6))
            )
        );
        assert_eq!(
            one("name", "123").operand,
            Operand::One(Scalar::Str("123".into()))
        );
        assert_eq!(
            one("name__ne", "123").operand,
            Operand::One(Scalar::Int(123))
        );
        assert_eq!(one("field__int", "6").operand, Operand::One(Scalar::Int(6)));
        assert_eq!(
            one("is_x", "TRUE").operand,
            Operand::One(Scalar::Bool(true))
        );
        assert_eq!(one("result", "null").operand, Operand::One(Scalar::Null));
        assert_eq!(one("a__b__c", "x").field, "a__b__c");
    }

    #[test]
    fn upstream_bugs_fixed() {
        // parent=null finds roots; operators on parent and retry_counter work.
        assert_eq!(one("parent", "null").operand, Operand::One(Scalar::Null));
        let id = "65bb6a0a8e0f0d7d0c1b2a3f";
        let c = one("parent__in", &format!("{id},null"));
        assert_eq!(
            c.operand,
            Operand::List(vec![
                Scalar::Oid(ObjectId::parse_str(id).unwrap()),
                Scalar::Null
            ])
        );
        assert_eq!(
            one("retry_counter__gt", "1").operand,
            Operand::One(Scalar::Int(1))
        );
        assert!(matches!(
            one("created__lt", "2024-11-01").operand,
            Operand::One(Scalar::Time(_))
        ));
    }

    #[test]
    fn errors_are_clear() {
        let e = condition("name__foo", "x").unwrap_err();
        assert!(matches!(e, QueryError::UnknownOperator { ref op, .. } if op == "foo"));
        assert!(e.to_string().contains("Unknown operator 'foo'"));
        assert_eq!(
            condition("parent", "zz").unwrap_err().to_string(),
            "'zz' is not a valid ObjectId, it must be a 12-byte input or a 24-character hex string"
        );
        assert_eq!(
            condition("created__gt", "bad").unwrap_err().to_string(),
            "Invalid isoformat string: 'bad'"
        );
        assert!(condition("retry_counter", "x").is_err());
        assert!(condition("name__re", "(").is_err());
        assert!(matches!(
            condition("__eq", "x"),
            Err(QueryError::EmptyField(_))
        ));
        assert!(Query::parse([("limit", "0")]).is_err());
        assert!(Query::parse([("offset", "-1")]).is_err());
        let q = Query::parse([("limit", "5"), ("offset", "10"), ("kind", "test")]).unwrap();
        assert_eq!(
            (q.limit, q.offset, q.filter.conditions.len()),
            (Some(5), Some(10), 1)
        );
    }
}
