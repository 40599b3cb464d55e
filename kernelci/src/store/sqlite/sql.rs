//! Translation of a [`Filter`] into an SQLite `WHERE` clause with bound parameters.
//!
//! Each condition becomes an exact SQL test on the text value of its field, plus a residual
//! call of `kci_match(doc, condition)` (the in-memory evaluator, run inside SQLite) for the rare
//! rows where the field is not text or null (a number, a boolean, a list...). The text value of
//! a field is `char(1)` (the "sentinel") for those rows. Indexed ("hot") fields are generated
//! columns with exactly that definition, so the SQL test uses the index.

use rusqlite::types::Value as SqlValue;

use crate::query::{Condition, Filter, Op, Operand, Scalar};

/// Fields with an indexed generated column: (dotted field, column name).
pub(super) const HOT_COLUMNS: &[(&str, &str)] = &[
    ("kind", "kind"),
    ("state", "state"),
    ("result", "result"),
    ("parent", "parent"),
    ("name", "name"),
    ("group", "grp"),
    ("owner", "owner"),
    ("created", "created"),
    ("updated", "updated"),
    ("timeout", "timeout"),
    ("holdoff", "holdoff"),
    ("treeid", "treeid"),
    ("data.kernel_revision.commit", "kr_commit"),
    ("data.kernel_revision.tree", "kr_tree"),
    ("data.kernel_revision.branch", "kr_branch"),
];

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

/// SQL for the text value of a field (text, NULL, or the sentinel `char(1)`), with the JSON
/// paths as literals (for generated columns) or parameters (for queries).
pub(super) fn text_value_expr(
    doc: &str,
    field: &str,
    mut path_ref: impl FnMut(String) -> String,
) -> String {
    let segments: Vec<&str> = field.split('.').collect();
    let mut prefix_checks = Vec::new();
    for i in 1..segments.len() {
        let p = path_ref(json_path(&segments[..i].join(".")));
        prefix_checks.push(format!("json_type({doc}, {p}) = 'array'"));
    }
    let p = path_ref(json_path(field));
    let base = format!(
        "CASE json_type({doc}, {p}) WHEN 'text' THEN json_extract({doc}, {p}) WHEN 'null' THEN NULL \
         ELSE CASE WHEN json_type({doc}, {p}) IS NULL THEN NULL ELSE char(1) END END"
    );
    if prefix_checks.is_empty() {
        base
    } else {
        format!(
            "CASE WHEN {} THEN char(1) ELSE {base} END",
            prefix_checks.join(" OR ")
        )
    }
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
    fn param(&mut self, v: SqlValue) -> String {
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

/// Builds the clause for `filter` on the document column `doc`; `hot` maps a field to an
/// indexed column of the same definition as [`text_value_expr`].
pub(super) fn where_clause(
    filter: &Filter,
    doc: &str,
    hot: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<Where, String> {
    let mut w = Where::default();
    let mut parts = Vec::new();
    for cond in &filter.conditions {
        let part = condition_sql(&mut w, cond, doc, hot)?;
        parts.push(part);
    }
    w.sql = if parts.is_empty() {
        "1".to_owned()
    } else {
        parts.join(" AND ")
    };
    Ok(w)
}

fn condition_sql(
    w: &mut Where,
    cond: &Condition,
    doc: &str,
    hot: &dyn Fn(&str) -> Option<&'static str>,
) -> Result<String, String> {
    // `_id` is stored as `id`.
    let field = if cond.field == "_id" {
        "id"
    } else {
        cond.field.as_str()
    };
    let col = match hot(field) {
        Some(c) => c.to_owned(),
        None => {
            let expr = text_value_expr(doc, field, |p| w.param(SqlValue::Text(p)));
            format!("({expr})")
        }
    };
    let cond_json = serde_json::to_string(cond).map_err(|e| e.to_string())?;
    let residual = format!(
        "({col} IS char(1) AND kci_match({doc}, {}))",
        w.param(SqlValue::Text(cond_json))
    );
    let eq_exact = |w: &mut Where, s: &Scalar| -> String {
        match s {
            Scalar::Null => format!("{col} IS NULL"),
            other => match text_param(other) {
                Some(p) => format!("{col} IS {}", w.param(p)),
                None => "0".to_owned(),
            },
        }
    };
    Ok(match (&cond.operand, cond.op) {
        (Operand::One(s), Op::Eq) => format!("({} OR {residual})", eq_exact(w, s)),
        (Operand::One(s), Op::Ne) => format!(
            "(({col} IS NOT char(1) AND NOT ({})) OR {residual})",
            eq_exact(w, s)
        ),
        (Operand::One(Scalar::Null), Op::Lte | Op::Gte) => format!("({col} IS NULL OR {residual})"),
        (Operand::One(Scalar::Null), _) => "0".to_owned(),
        (Operand::One(s), op) => {
            let sym = match op {
                Op::Lt => "<",
                Op::Lte => "<=",
                Op::Gt => ">",
                _ => ">=",
            };
            match text_param(s) {
                Some(p) => {
                    let p = w.param(p);
                    format!("(({col} {sym} {p} AND {col} IS NOT char(1)) OR {residual})")
                }
                None => residual,
            }
        }
        (Operand::List(items), op) => {
            let mut texts = Vec::new();
            let mut has_null = false;
            for item in items {
                match item {
                    Scalar::Null => has_null = true,
                    other => {
                        if let Some(p) = text_param(other) {
                            texts.push(w.param(p));
                        }
                    }
                }
            }
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
            if any.is_empty() {
                any.push("0".to_owned());
            }
            let any = any.join(" OR ");
            if op == Op::Nin {
                format!("(({col} IS NOT char(1) AND NOT ({any})) OR {residual})")
            } else {
                format!("({any} OR {residual})")
            }
        }
        (Operand::Regex(re), _) => {
            let p = w.param(SqlValue::Text(re.as_str().to_owned()));
            format!(
                "(({col} IS NOT NULL AND {col} IS NOT char(1) AND regexp({p}, {col})) OR {residual})"
            )
        }
    })
}
