//! The node query language: `field__op=value` pairs, parsed once into a typed [`Filter`].
//!
//! The same [`Filter`] is evaluated in memory ([`Filter::matches`]), translated to SQL by the
//! SQLite store and to a filter document by the MongoDB store, so every backend answers a query
//! the same way.
//!
//! # Syntax (upstream api spec §3.3, with its bugs fixed)
//!
//! - `field=value` is equality; `field__op=value` applies `op`, one of `eq ne lt lte gt gte re
//!   in nin`, plus the pseudo-operator `int` (`retry_counter__int=2` is an integer equality).
//!   An unknown operator is an error ([`QueryError::UnknownOperator`]), not a literal.
//!   A key with more than one `__` is a literal field name, as upstream.
//! - Dotted fields (`data.kernel_revision.tree`) reach into sub-documents.
//! - `null` is null for every operator: `result=null` matches a null or missing field,
//!   `result__ne=null` a present, non-null one.
//! - Values are typed by field, for every operator: `parent` (and `id`) are object ids — so
//!   `parent=null` finds root nodes —, `created`, `updated`, `timeout`, `holdoff` are
//!   timestamps, `retry_counter` is an integer, `processed_by_kcidb_bridge` a boolean.
//! - For other fields: `true`/`false` (any case) are booleans for `eq`/`ne`; for the ordering
//!   operators and `ne`, a value of only decimal digits is an integer (as upstream); `in`/`nin`
//!   split on `,` into strings; `re` is an unanchored, case-sensitive regular expression.
//! - `limit` and `offset` are pagination, kept apart from the filter in [`Query`].
//!
//! Matching follows MongoDB: a field holding a list matches when any element matches (or the
//! whole list equals the value); values of different types never compare as ordered.

mod eval;
mod parse;

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use parse::FieldType;

use crate::ErrorKind;
use crate::models::{ObjectId, Timestamp};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal (or, for a list field, containing).
    Eq,
    /// Not equal (true when the field is missing).
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Regular expression match (strings only).
    Re,
    /// Equal to one of a list.
    In,
    /// Equal to none of a list (true when the field is missing).
    Nin,
}

impl Op {
    /// Every operator.
    pub const ALL: [Op; 9] = [
        Op::Eq,
        Op::Ne,
        Op::Lt,
        Op::Lte,
        Op::Gt,
        Op::Gte,
        Op::Re,
        Op::In,
        Op::Nin,
    ];

    /// The suffix used after `__`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Re => "re",
            Op::In => "in",
            Op::Nin => "nin",
        }
    }

    /// The operator for a suffix.
    pub fn from_suffix(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == s)
    }

    /// Whether this is one of `lt lte gt gte`.
    pub fn is_ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Lte | Op::Gt | Op::Gte)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed query value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "lowercase")]
pub enum Scalar {
    /// `null`: matches null or missing.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// A timestamp; stored values are compared as timestamps.
    Time(Timestamp),
    /// An object id; stored values are compared as ids.
    Oid(ObjectId),
}

impl Scalar {
    /// The value as JSON, as it appears in stored node documents.
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Time(t) => Value::String(t.to_string()),
            Scalar::Oid(o) => Value::String(o.to_hex()),
        }
    }
}

/// The right-hand side of a condition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "OperandRepr", into = "OperandRepr")]
pub enum Operand {
    /// One value (`eq ne lt lte gt gte`).
    One(Scalar),
    /// A list of values (`in nin`).
    List(Vec<Scalar>),
    /// A compiled regular expression (`re`).
    Regex(Regex),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OperandRepr {
    One(Scalar),
    List(Vec<Scalar>),
    Regex(String),
}

impl From<Operand> for OperandRepr {
    fn from(o: Operand) -> Self {
        match o {
            Operand::One(s) => OperandRepr::One(s),
            Operand::List(l) => OperandRepr::List(l),
            Operand::Regex(r) => OperandRepr::Regex(r.as_str().to_owned()),
        }
    }
}

impl TryFrom<OperandRepr> for Operand {
    type Error = regex::Error;
    fn try_from(o: OperandRepr) -> Result<Self, Self::Error> {
        Ok(match o {
            OperandRepr::One(s) => Operand::One(s),
            OperandRepr::List(l) => Operand::List(l),
            OperandRepr::Regex(r) => Operand::Regex(Regex::new(&r)?),
        })
    }
}

impl PartialEq for Operand {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Operand::One(a), Operand::One(b)) => a == b,
            (Operand::List(a), Operand::List(b)) => a == b,
            (Operand::Regex(a), Operand::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// One `field op value` test. Serialises to a compact JSON form that stores use to hand a
/// condition to code running inside the database (e.g. SQLite's `kci_match` function).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Dotted field path, e.g. `data.kernel_revision.tree`.
    pub field: String,
    /// The operator.
    pub op: Op,
    /// The typed value.
    pub operand: Operand,
}

impl Condition {
    /// The path split on dots.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.field.split('.')
    }

    /// Whether `doc` satisfies this condition.
    pub fn matches(&self, doc: &Value) -> bool {
        eval::condition_matches(self, doc)
    }
}

/// A conjunction of conditions: a document matches when every condition holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// The conditions, all of which must hold.
    pub conditions: Vec<Condition>,
}

/// A parsed query string: the filter plus pagination.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// What to match.
    pub filter: Filter,
    /// `limit`, when given.
    pub limit: Option<u64>,
    /// `offset`, when given.
    pub offset: Option<u64>,
}

/// Errors from parsing a query. All are the caller's fault ([`ErrorKind::Invalid`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `field__op` with an operator that does not exist.
    #[error(
        "Unknown operator '{op}' in query parameter '{key}'; use one of eq, ne, lt, lte, gt, gte, re, in, nin, int"
    )]
    UnknownOperator {
        /// The whole key.
        key: String,
        /// The operator part.
        op: String,
    },
    /// A value that does not fit the field's type (a bad object id, timestamp, integer...).
    #[error("{message}")]
    InvalidValue {
        /// The whole key.
        key: String,
        /// What is wrong, e.g. upstream's `Invalid isoformat string: 'bad'`.
        message: String,
    },
    /// `limit` or `offset` is not a non-negative integer (or `limit` is 0).
    #[error("Invalid value for '{key}': '{value}' ({reason})")]
    InvalidPagination {
        /// `limit` or `offset`.
        key: String,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// An empty field name (`__eq=x`, `=x`).
    #[error("Empty field name in query parameter '{0}'")]
    EmptyField(String),
}

impl QueryError {
    /// Always [`ErrorKind::Invalid`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
}

impl Filter {
    /// A filter that matches everything.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Adds an equality condition, typing the value by field as the parser does.
    pub fn and_eq(mut self, field: &str, value: &str) -> Result<Filter, QueryError> {
        self.conditions.push(parse::condition(field, value)?);
        Ok(self)
    }

    /// Adds a condition with an already-typed value.
    pub fn and(mut self, field: impl Into<String>, op: Op, operand: Operand) -> Filter {
        self.conditions.push(Condition {
            field: field.into(),
            op,
            operand,
        });
        self
    }

    /// Whether a JSON document (a node, an event, a user) matches.
    pub fn matches(&self, doc: &Value) -> bool {
        self.conditions
            .iter()
            .all(|c| eval::condition_matches(c, doc))
    }

    /// Whether a node matches.
    pub fn matches_node(&self, node: &crate::models::Node) -> bool {
        self.matches(&node.to_value())
    }
}

impl Query {
    /// Parses query pairs (as decoded from a URL query string). `limit` and `offset` are taken
    /// out as pagination; every other pair becomes a condition.
    pub fn parse<I, K, V>(pairs: I) -> Result<Query, QueryError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        parse::query(pairs, true)
    }

    /// Like [`Query::parse`], but `limit`/`offset` are plain conditions too (no pagination).
    pub fn parse_filter<I, K, V>(pairs: I) -> Result<Filter, QueryError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        parse::query(pairs, false).map(|q| q.filter)
    }
}
