//! Translation of a [`Filter`] into an SQLite `WHERE` clause with bound parameters.
//!
//! Every condition is answered exactly as [`Filter::matches`] answers it:
//!
//! - Indexed ("hot") fields are plain columns holding the field's **text value**: the string,
//!   NULL for null or missing, or the sentinel `char(1)` for anything else (a number, a list, a
//!   value under a list). They are computed in Rust on every write ([`hot_text_value`]). The SQL
//!   test on the column is exact for text and NULL rows and uses the index; sentinel rows are
//!   answered by `kci_match(doc, condition)`, the in-memory evaluator run inside SQLite.
//! - Other fields are read with `json_type`/`json_extract`; the SQL test is exact for scalars,
//!   and rows where the path meets a list go to `kci_match`.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use crate::query::{Condition, Filter, Op, Operand, Scalar};

/// Fields kept in their own column: (dotted field, column name, indexed). The first twelve are
/// top-level fields the node model types as text (or null), so they never hold the sentinel.
pub(super) const HOT_COLUMNS: &[(&str, &str, bool)] = &[
    ("kind", "kind", true),
    ("state", "state", true),
    ("result", "result", false),
    ("parent", "parent", true),
    ("name", "name", true),
    ("group", "grp", true),
    ("owner", "owner", true),
    ("created", "created", true),
    ("updated", "updated", false),
    ("timeout", "timeout", false),
    ("holdoff", "holdoff", false),
    ("treeid", "treeid", false),
    ("data.kernel_revision.commit", "kr_commit", true),
    ("data.kernel_revision.tree", "kr_tree", true),
    ("data.kernel_revision.branch", "kr_branch", true),
];

/// How many leading [`HOT_COLUMNS`] are typed text by the node model.
pub(super) const TYPED_COLUMNS: usize = 12;

/// A hot column for a query: its name, and whether it may hold the sentinel (then rows with
/// it are answered by the evaluator, or by the `node_value` table for text equality).
#[derive(Debug, Clone, Copy)]
pub(super) struct HotColumn {
    /// Column name.
    pub name: &'static str,
    /// Position in [`HOT_COLUMNS`] (the `col` of `node_value`).
    pub index: usize,
    /// Whether some row may hold the sentinel.
    pub may_hold_sentinel: bool,
}

/// The sentinel text value of non-text fields.
pub(super) const SENTINEL: &str = "\u{1}";

/// The text value of `field` in `doc` for a hot column (see the module documentation).
pub(super) fn hot_text_value(doc: &Value, field: &str) -> Option<String> {
    let mut cur = doc;
    for seg in field.split('.') {
        match cur {
            Value::Object(map) => match map.get(seg) {
                Some(v) => cur = v,
                None => return None,
            },
            Value::Array(_) => return Some(SENTINEL.to_owned()),
            _ => return None,
        }
    }
    match cur {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => Some(SENTINEL.to_owned()),
    }
}

/// The distinct strings a dotted path reaches in `doc`, descending through lists the way the
/// query evaluator does (a list at the end contributes its elements). Stored in `node_value`
/// for rows whose hot column holds the sentinel, so text equality on them needs no evaluator:
/// such a row equals a string exactly when one of these strings is that string.
pub(super) fn reached_strings(doc: &Value, field: &str) -> Vec<String> {
    fn collect<'a>(value: &'a Value, segments: &[&str], out: &mut Vec<&'a str>) {
        match segments.split_first() {
            None => match value {
                Value::String(s) => out.push(s),
                Value::Array(items) => out.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            },
            Some((first, rest)) => match value {
                Value::Object(map) => {
                    if let Some(v) = map.get(*first) {
                        collect(v, rest, out);
                    }
                }
                Value::Array(items) => {
                    for item in items.iter().filter(|i| i.is_object()) {
                        collect(item, segments, out);
                    }
                }
                _ => {}
            },
        }
    }
    let segments: Vec<&str> = field.split('.').collect();
    let mut out = Vec::new();
    collect(doc, &segments, &mut out);
    out.sort_unstable();
    out.dedup();
    out.into_iter().map(str::to_owned).collect()
}

/// JSON path of a dotted field, with every segment quoted.
pub(super) fn json_path(field: &str) -> String {
    let mut path = String::from("$");
    for seg in field.split('.') {
        path.push_str(".\"");
        path.push_str(&seg.replace('\\', "\\\\").replace('"', "\\\""));
        path.push('"');
    }
    path
}

/// A WHERE clause under construction.
#[derive(Default)]
pub(super) struct Where {
    /// SQL text.
    pub sql: String,
    /// Bound parameters, in order.
    pub params: Vec<SqlValue>,
}

impl Where {
    /// Binds a parameter and returns its placeholder.
    pub fn param(&mut self, v: SqlValue) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }
}

fn text_param(s: &Scalar) -> Option<SqlValue> {
    match s {
        Scalar::Str(v) => Some(SqlValue::Text(v.clone())),
        Scalar::Time(t) => Some(SqlValue::Text(t.to_string())),
        Scalar::Oid(o) => Some(SqlValue::Text(o.to_hex())),
        _ => None,
    }
}

fn sym(op: Op) -> &'static str {
    match op {
        Op::Lt => "<",
        Op::Lte => "<=",
        Op::Gt => ">",
        _ => ">=",
    }
}

/// Builds the clause for `filter` on the document column `doc`; `hot` maps a field to its
/// text-value column.
pub(super) fn where_clause(
    filter: &Filter,
    doc: &str,
    hot: &dyn Fn(&str) -> Option<HotColumn>,
) -> Result<Where, String> {
    let mut w = Where::default();
    let mut parts = Vec::new();
    for cond in &filter.conditions {
        let field = if cond.field == "_id" {
            "id"
        } else {
            cond.field.as_str()
        };
        let hot = hot(field);
        if let Some(col) = hot.filter(|c| !c.may_hold_sentinel) {
            parts.push(text_sql(&mut w, cond, col.name));
            continue;
        }
        if let Some(part) = hot.and_then(|col| by_value_sql(&mut w, cond, col)) {
            parts.push(part);
            continue;
        }
        let cond_json = serde_json::to_string(cond).map_err(|e| e.to_string())?;
        let residual = format!("kci_match({doc}, {})", w.param(SqlValue::Text(cond_json)));
        let part = match hot {
            Some(col) => hot_sql(&mut w, cond, col.name, &residual),
            None => json_sql(&mut w, cond, doc, field, &residual),
        };
        parts.push(part);
    }
    w.sql = if parts.is_empty() {
        "1".to_owned()
    } else {
        parts.join(" AND ")
    };
    Ok(w)
}

/// `parts` joined with `OR`: false (`0`) when there are none.
fn any_sql(parts: &[String]) -> String {
    if parts.is_empty() {
        "0".to_owned()
    } else {
        parts.join(" OR ")
    }
}

/// The parameter holding a regular expression operand's pattern.
fn regex_param(w: &mut Where, re: &regex::Regex) -> String {
    w.param(SqlValue::Text(re.as_str().to_owned()))
}

/// `col <op> value` for a scalar compared as text (`op` is `=` or `IS`): `col IS NULL` for
/// null, and false (`0`) for a scalar that is not text.
fn text_eq_sql(w: &mut Where, s: &Scalar, col: &str, op: &str) -> String {
    match s {
        Scalar::Null => format!("{col} IS NULL"),
        other => match text_param(other) {
            Some(p) => format!("{col} {op} {}", w.param(p)),
            None => "0".to_owned(),
        },
    }
}

/// Exact SQL on a column that only holds text or NULL: plain comparisons the index serves.
fn text_sql(w: &mut Where, cond: &Condition, col: &str) -> String {
    match (&cond.operand, cond.op) {
        (Operand::One(s), Op::Eq) => text_eq_sql(w, s, col, "="),
        (Operand::One(Scalar::Null), Op::Ne) => format!("{col} IS NOT NULL"),
        (Operand::One(s), Op::Ne) => match text_param(s) {
            Some(p) => format!("{col} IS NOT {}", w.param(p)),
            None => "1".to_owned(),
        },
        (Operand::One(Scalar::Null), Op::Lte | Op::Gte) => format!("{col} IS NULL"),
        (Operand::One(Scalar::Null), _) => "0".to_owned(),
        (Operand::One(s), op) => match text_param(s) {
            Some(p) => format!("{col} {} {}", sym(op), w.param(p)),
            None => "0".to_owned(),
        },
        (Operand::List(items), op) => {
            let texts: Vec<String> = items
                .iter()
                .filter_map(text_param)
                .map(|p| w.param(p))
                .collect();
            let mut any = Vec::new();
            if !texts.is_empty() {
                any.push(format!("COALESCE({col} IN ({}), 0)", texts.join(", ")));
            }
            if items.contains(&Scalar::Null) {
                any.push(format!("{col} IS NULL"));
            }
            let any = any_sql(&any);
            match op {
                Op::Nin => format!("NOT ({any})"),
                // A plain IN list keeps the index usable.
                _ if !items.contains(&Scalar::Null) && !texts.is_empty() => {
                    format!("{col} IN ({})", texts.join(", "))
                }
                _ => format!("({any})"),
            }
        }
        (Operand::Regex(re), _) => {
            let p = regex_param(w, re);
            format!("({col} IS NOT NULL AND regexp({p}, {col}))")
        }
    }
}

/// The strings of a list operand, when every item is a plain string.
fn all_strings(items: &[Scalar]) -> Option<Vec<String>> {
    items
        .iter()
        .map(|s| match s {
            Scalar::Str(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// String equality (`=`, `__in` with strings) on a hot column that may hold the sentinel:
/// text rows through the column's index, sentinel rows through `node_value`. `None` for
/// other conditions.
fn by_value_sql(w: &mut Where, cond: &Condition, hot: HotColumn) -> Option<String> {
    let col = hot.name;
    // Sentinel rows whose reached strings include one of `params` (exact for string
    // equality; see `reached_strings`).
    let by_value = |w: &mut Where, params: &[String]| -> String {
        let i = w.param(SqlValue::Integer(hot.index as i64));
        // A probe per sentinel row (not a materialised list of every such row's id, which
        // costs as much as the rows holding the value).
        format!(
            "EXISTS (SELECT 1 FROM node_value WHERE col = {i} AND value IN ({}) AND id = node.id)",
            params.join(", ")
        )
    };
    if let (Operand::One(Scalar::Str(v)), Op::Eq) = (&cond.operand, cond.op) {
        let p = w.param(SqlValue::Text(v.clone()));
        let sentinel = by_value(w, std::slice::from_ref(&p));
        return Some(format!(
            "({col} IN ({p}, char(1)) AND ({col} IS {p} OR {sentinel}))"
        ));
    }
    if let (Operand::List(items), Op::In) = (&cond.operand, cond.op)
        && let Some(strings) = all_strings(items).filter(|s| !s.is_empty())
    {
        let ps: Vec<String> = strings
            .into_iter()
            .map(|v| w.param(SqlValue::Text(v)))
            .collect();
        let sentinel = by_value(w, &ps);
        return Some(format!(
            "({col} IN ({}) OR ({col} IS char(1) AND {sentinel}))",
            ps.join(", ")
        ));
    }
    None
}

/// SQL on a hot text-value column that may hold the sentinel.
fn hot_sql(w: &mut Where, cond: &Condition, col: &str, residual: &str) -> String {
    let sentinel_rows = format!("({col} IS char(1) AND {residual})");
    match (&cond.operand, cond.op) {
        // A text equality: one IN over the value and the sentinel gives the planner a single
        // index lookup; the evaluator then only runs on sentinel rows.
        (Operand::One(s), Op::Eq) if text_param(s).is_some() => {
            let p = text_param(s).map(|v| w.param(v)).unwrap_or_default();
            format!("({col} IN ({p}, char(1)) AND ({col} IS {p} OR {residual}))")
        }
        (Operand::One(s), Op::Eq) => {
            format!("({} OR {sentinel_rows})", text_eq_sql(w, s, col, "IS"))
        }
        (Operand::One(s), Op::Ne) => {
            format!(
                "(({col} IS NOT char(1) AND NOT ({})) OR {sentinel_rows})",
                text_eq_sql(w, s, col, "IS")
            )
        }
        (Operand::One(Scalar::Null), Op::Lte | Op::Gte) => {
            format!("({col} IS NULL OR {sentinel_rows})")
        }
        (Operand::One(Scalar::Null), _) => "0".to_owned(),
        (Operand::One(s), op) => match text_param(s) {
            Some(p) => {
                let p = w.param(p);
                format!(
                    "(({col} {} {p} AND {col} IS NOT char(1)) OR {sentinel_rows})",
                    sym(op)
                )
            }
            None => sentinel_rows,
        },
        (Operand::List(items), op) => {
            let texts: Vec<String> = items
                .iter()
                .filter_map(text_param)
                .map(|p| w.param(p))
                .collect();
            let has_null = items.contains(&Scalar::Null);
            let mut any = Vec::new();
            if !texts.is_empty() {
                let test = format!("{col} IN ({})", texts.join(", "));
                // NOT needs a non-NULL operand; IN alone keeps the index usable.
                any.push(if op == Op::Nin {
                    format!("COALESCE({test}, 0)")
                } else {
                    test
                });
            }
            if has_null {
                any.push(format!("{col} IS NULL"));
            }
            let any = any_sql(&any);
            if op == Op::Nin {
                format!("(({col} IS NOT char(1) AND NOT ({any})) OR {sentinel_rows})")
            } else {
                format!("({any} OR {sentinel_rows})")
            }
        }
        (Operand::Regex(re), _) => {
            let p = regex_param(w, re);
            format!(
                "(({col} IS NOT NULL AND {col} IS NOT char(1) AND regexp({p}, {col})) OR {sentinel_rows})"
            )
        }
    }
}

/// SQL on a field read from the document with `json_type`/`json_extract`.
fn json_sql(w: &mut Where, cond: &Condition, doc: &str, field: &str, residual: &str) -> String {
    let segments: Vec<&str> = field.split('.').collect();
    let mut list_checks = Vec::new();
    for i in 1..segments.len() {
        let p = w.param(SqlValue::Text(json_path(&segments[..i].join("."))));
        list_checks.push(format!("json_type({doc}, {p}) = 'array'"));
    }
    let p = w.param(SqlValue::Text(json_path(field)));
    let t = format!("json_type({doc}, {p})");
    let v = format!("json_extract({doc}, {p})");
    list_checks.push(format!("{t} = 'array'"));
    let needs_residual = list_checks.join(" OR ");
    // `eq_exact` is never NULL, so it can be negated.
    let eq_exact = |w: &mut Where, s: &Scalar| -> String {
        match s {
            Scalar::Null => format!("({t} IS NULL OR {t} = 'null')"),
            Scalar::Bool(b) => format!("({t} IS '{}')", if *b { "true" } else { "false" }),
            Scalar::Int(i) => format!(
                "COALESCE({t} IN ('integer', 'real') AND {v} = {}, 0)",
                w.param(SqlValue::Integer(*i))
            ),
            other => match text_param(other) {
                Some(param) => format!("COALESCE({t} = 'text' AND {v} = {}, 0)", w.param(param)),
                None => "0".to_owned(),
            },
        }
    };
    let exact = match (&cond.operand, cond.op) {
        (Operand::One(s), Op::Eq) => eq_exact(w, s),
        (Operand::One(s), Op::Ne) => format!("NOT {}", eq_exact(w, s)),
        (Operand::One(Scalar::Null), Op::Lte | Op::Gte) => eq_exact(w, &Scalar::Null),
        (Operand::One(Scalar::Null), _) => "0".to_owned(),
        (Operand::One(s), op) => match s {
            Scalar::Int(i) => format!(
                "({t} IN ('integer', 'real') AND {v} {} {})",
                sym(op),
                w.param(SqlValue::Integer(*i))
            ),
            Scalar::Bool(b) => format!(
                "((CASE {t} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END) {} {})",
                sym(op),
                w.param(SqlValue::Integer(i64::from(*b)))
            ),
            other => match text_param(other) {
                Some(param) => format!("({t} = 'text' AND {v} {} {})", sym(op), w.param(param)),
                None => "0".to_owned(),
            },
        },
        (Operand::List(items), op) => {
            let any: Vec<String> = items.iter().map(|s| eq_exact(w, s)).collect();
            let any = any_sql(&any);
            if op == Op::Nin {
                format!("NOT ({any})")
            } else {
                format!("({any})")
            }
        }
        (Operand::Regex(re), _) => {
            let p = regex_param(w, re);
            format!("({t} = 'text' AND regexp({p}, {v}))")
        }
    };
    format!("(CASE WHEN {needs_residual} THEN {residual} ELSE COALESCE({exact}, 0) END)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hot_text_values() {
        let doc = json!({"name": "n", "data": {"kernel_revision": {"tree": ["a"], "commit": 5, "branch": null}},
                         "path": [{"x": 1}]});
        assert_eq!(hot_text_value(&doc, "name").as_deref(), Some("n"));
        assert_eq!(
            hot_text_value(&doc, "data.kernel_revision.tree").as_deref(),
            Some(SENTINEL)
        );
        assert_eq!(
            hot_text_value(&doc, "data.kernel_revision.commit").as_deref(),
            Some(SENTINEL)
        );
        assert_eq!(hot_text_value(&doc, "data.kernel_revision.branch"), None);
        assert_eq!(hot_text_value(&doc, "data.missing.x"), None);
        assert_eq!(hot_text_value(&doc, "path.x").as_deref(), Some(SENTINEL));
        assert_eq!(json_path("data.a\"b"), "$.\"data\".\"a\\\"b\"");
    }
}
