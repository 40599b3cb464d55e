//! Field-by-field checks of JSON input against a model, reporting pydantic v2's error types,
//! messages and locations (upstream's models are pydantic models; their clients read these).
//!
//! A model is a list of [`Field`]s; [`check_object`] walks an input object against it and
//! records every problem in a [`ValidationErrors`], in the model's field order, as pydantic
//! does. Lax conversions pydantic makes (a boolean sent as `"yes"`, a datetime sent as an epoch
//! number) are applied to the input in place, so the typed decoding that follows sees one form.

use serde_json::{Map, Value, json};

use super::validate::ValidationErrors;
use super::{ObjectId, Timestamp};

/// What a field must hold.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// A string (no number → string conversion, as pydantic v2).
    Str,
    /// A JSON integer (pydantic's `StrictInt`: no `"1"`, no `1.0`, no `true`).
    Int,
    /// A boolean, or one of pydantic's boolean strings and numbers (converted in place).
    Bool,
    /// An object with any values.
    Dict,
    /// A list of strings.
    StrList,
    /// A 24-hex ObjectId string.
    Oid,
    /// A list of ObjectId strings.
    OidList,
    /// Any absolute URL (pydantic's `AnyUrl`).
    Url,
    /// An object whose values are absolute http(s) URLs (normalised in place).
    HttpUrlMap,
    /// An object whose values are strings.
    StrMap,
    /// A datetime: an ISO 8601 string, or an epoch number (converted in place).
    Datetime,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// A nested model (`class_name`, its fields).
    Model(&'static str, &'static [Field]),
}

/// One field of a model.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The key.
    pub name: &'static str,
    /// What it must hold.
    pub shape: Shape,
    /// Whether it must be present (pydantic's "Field required").
    pub required: bool,
    /// Whether `null` is accepted (`Optional[...]`).
    pub nullable: bool,
}

impl Field {
    /// An optional field that may be absent or `null`.
    pub const fn opt(name: &'static str, shape: Shape) -> Field {
        Field {
            name,
            shape,
            required: false,
            nullable: true,
        }
    }

    /// A field that may be absent (it has a default) but not `null`.
    pub const fn non_null(name: &'static str, shape: Shape) -> Field {
        Field {
            name,
            shape,
            required: false,
            nullable: false,
        }
    }

    /// A required field that may not be `null`.
    pub const fn required(name: &'static str, shape: Shape) -> Field {
        Field {
            name,
            shape,
            required: true,
            nullable: false,
        }
    }
}

/// A location: the keys and list indexes from the checked document down to a value.
pub type Loc = Vec<Value>;

fn at(loc: &[Value], key: impl Into<Value>) -> Loc {
    let mut l = loc.to_vec();
    l.push(key.into());
    l
}

/// Checks `obj` against `fields`, recording problems under `loc`.
pub fn check_object(
    fields: &[Field],
    loc: &[Value],
    obj: &mut Map<String, Value>,
    errors: &mut ValidationErrors,
) {
    // pydantic shows the whole object as the input of a missing field; copied only then.
    let whole = if fields
        .iter()
        .any(|f| f.required && !obj.contains_key(f.name))
    {
        Value::Object(obj.clone())
    } else {
        Value::Null
    };
    for f in fields {
        match obj.get_mut(f.name) {
            None if f.required => errors.add(at(loc, f.name), "missing", "Field required", &whole),
            None => {}
            Some(Value::Null) if f.nullable => {}
            Some(v) => check_value(f.shape, &at(loc, f.name), v, errors),
        }
    }
}

/// The text pydantic uses for "one of these values": `'a', 'b' or 'c'`.
pub fn expected_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Records pydantic's `enum` error for `input` at `loc`.
pub fn enum_error(values: &[&str], loc: Loc, input: &Value, errors: &mut ValidationErrors) {
    let expected = expected_list(values);
    errors.add_ctx(
        loc,
        "enum",
        format!("Input should be {expected}"),
        input,
        json!({ "expected": expected }),
    );
}

/// pydantic's lax boolean: `true`/`false`, 0/1, and the strings it knows.
fn lax_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
            "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An epoch number as a timestamp: seconds, or milliseconds above 2e10 (pydantic's rule).
fn epoch_timestamp(x: f64) -> Option<Timestamp> {
    let secs = if x.abs() > 2e10 { x / 1000.0 } else { x };
    let micros = (secs * 1e6).round();
    if micros.is_finite() && micros.abs() < 9.0e18 {
        Timestamp::from_micros(micros as i64)
    } else {
        None
    }
}

/// Why `s` is no absolute URL, in the words pydantic (which uses the same `url` crate) uses.
fn url_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("input is empty".into());
    }
    url::Url::parse(s).err().map(|e| e.to_string())
}

fn url_parsing(loc: Loc, input: &Value, reason: String, errors: &mut ValidationErrors) {
    errors.add_ctx(
        loc,
        "url_parsing",
        format!("Input should be a valid URL, {reason}"),
        input,
        json!({ "error": reason }),
    );
}

/// Checks one http(s) URL; on success the value is replaced by its normalised form.
fn check_http_url(loc: Loc, v: &mut Value, errors: &mut ValidationErrors) {
    let Some(s) = v.as_str() else {
        errors.add(loc, "url_type", "URL input should be a string or URL", v);
        return;
    };
    if let Some(reason) = url_problem(s) {
        return url_parsing(loc, v, reason, errors);
    }
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            if u.host().is_none() {
                url_parsing(loc, v, "empty host".into(), errors);
            } else {
                *v = Value::String(u.to_string());
            }
        }
        _ => errors.add_ctx(
            loc,
            "url_scheme",
            "URL scheme should be 'http' or 'https'",
            v,
            json!({ "expected_schemes": "'http' or 'https'" }),
        ),
    }
}

fn check_str_list(loc: &[Value], v: &Value, errors: &mut ValidationErrors) {
    match v.as_array() {
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    errors.add(
                        at(loc, i),
                        "string_type",
                        "Input should be a valid string",
                        item,
                    );
                }
            }
        }
        None => errors.add(loc.to_vec(), "list_type", "Input should be a valid list", v),
    }
}

fn check_oid(loc: Loc, v: &Value, errors: &mut ValidationErrors) {
    match v.as_str() {
        Some(s) if ObjectId::parse_str(s).is_ok() => {}
        Some(s) => errors.add_ctx(
            loc,
            "value_error",
            format!("Value error, Invalid ObjectId: {s}"),
            v,
            json!({ "error": format!("Invalid ObjectId: {s}") }),
        ),
        None => errors.add(loc, "string_type", "Input should be a valid string", v),
    }
}

/// Checks `v` (present, and not an accepted `null`) against `shape`.
pub fn check_value(shape: Shape, loc: &[Value], v: &mut Value, errors: &mut ValidationErrors) {
    let here = || loc.to_vec();
    match shape {
        Shape::Str => {
            if !v.is_string() {
                errors.add(here(), "string_type", "Input should be a valid string", v)
            }
        }
        Shape::Int => {
            if !v.is_i64() {
                errors.add(here(), "int_type", "Input should be a valid integer", v)
            }
        }
        Shape::Bool => match lax_bool(v) {
            Some(b) => *v = Value::Bool(b),
            None if v.is_string() || v.is_number() => errors.add(
                here(),
                "bool_parsing",
                "Input should be a valid boolean, unable to interpret input",
                v,
            ),
            None => errors.add(here(), "bool_type", "Input should be a valid boolean", v),
        },
        Shape::Dict => {
            if !v.is_object() {
                errors.add(here(), "dict_type", "Input should be a valid dictionary", v)
            }
        }
        Shape::StrList => check_str_list(loc, v, errors),
        Shape::Oid => check_oid(here(), v, errors),
        Shape::OidList => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_oid(at(loc, i), item, errors);
                }
            }
            None => errors.add(here(), "list_type", "Input should be a valid list", v),
        },
        Shape::Url => match v.as_str() {
            Some(s) => {
                if let Some(reason) = url_problem(s) {
                    url_parsing(here(), v, reason, errors)
                }
            }
            None => errors.add(here(), "url_type", "URL input should be a string or URL", v),
        },
        Shape::HttpUrlMap | Shape::StrMap => match v.as_object_mut() {
            Some(map) => {
                for (key, value) in map.iter_mut() {
                    let loc = at(loc, key.as_str());
                    if matches!(shape, Shape::HttpUrlMap) {
                        check_http_url(loc, value, errors);
                    } else if !value.is_string() {
                        errors.add(loc, "string_type", "Input should be a valid string", value);
                    }
                }
            }
            None => errors.add(here(), "dict_type", "Input should be a valid dictionary", v),
        },
        Shape::Datetime => check_datetime(loc, v, errors),
        Shape::Enum(values) => {
            if !v.as_str().is_some_and(|s| values.contains(&s)) {
                enum_error(values, here(), v, errors)
            }
        }
        Shape::Model(class_name, fields) => match v.as_object_mut() {
            Some(obj) => check_object(fields, loc, obj, errors),
            None => errors.add_ctx(
                here(),
                "model_type",
                format!("Input should be a valid dictionary or instance of {class_name}"),
                v,
                json!({ "class_name": class_name }),
            ),
        },
    }
}

fn check_datetime(loc: &[Value], v: &mut Value, errors: &mut ValidationErrors) {
    match v {
        Value::String(s) => {
            if Timestamp::parse(s).is_err() {
                let reason = if s.len() < 10 {
                    "input is too short"
                } else {
                    "invalid datetime format"
                };
                errors.add_ctx(
                    loc.to_vec(),
                    "datetime_from_date_parsing",
                    format!("Input should be a valid datetime or date, {reason}"),
                    v,
                    json!({ "error": reason }),
                );
            }
        }
        Value::Number(n) => match n.as_f64().and_then(epoch_timestamp) {
            Some(ts) => *v = Value::String(ts.to_string()),
            None => errors.add(
                loc.to_vec(),
                "datetime_parsing",
                "Input should be a valid datetime, dates after 9999 are not supported as unix timestamps",
                v,
            ),
        },
        _ => errors.add(
            loc.to_vec(),
            "datetime_type",
            "Input should be a valid datetime",
            v,
        ),
    }
}

/// Python's `repr` of a JSON value, as pydantic shows an input (`'text'`, `None`, `{'a': 1}`).
pub fn python_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => python_str_repr(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", python_str_repr(k), python_repr(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's type name of a JSON value (`str`, `int`, `NoneType`, ...).
pub fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `input_value` as pydantic prints it: the repr, cut to 25 + `...` + 24 characters when long.
pub fn shown_input(v: &Value) -> String {
    let repr = python_repr(v);
    let n = repr.chars().count();
    if n <= 50 {
        return repr;
    }
    let head: String = repr.chars().take(25).collect();
    let tail: String = repr.chars().skip(n - 24).collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs_match_python() {
        assert_eq!(python_repr(&json!({"tree": "t"})), "{'tree': 't'}");
        assert_eq!(python_repr(&json!([1, null, true])), "[1, None, True]");
        assert_eq!(python_repr(&json!("it's")), "\"it's\"");
        assert_eq!(python_repr(&json!("a\nb")), "'a\\nb'");
        assert_eq!(python_type(&json!(1.5)), "float");
        assert_eq!(
            shown_input(&json!("x".repeat(80))),
            format!("'{}...{}'", "x".repeat(24), "x".repeat(23))
        );
        assert_eq!(
            expected_list(&["a", "b", "c"]),
            "'a', 'b' or 'c'".to_owned()
        );
    }

    #[test]
    fn lax_values_are_converted_in_place() {
        let fields = [
            Field::non_null("flag", Shape::Bool),
            Field::opt("when", Shape::Datetime),
            Field::required("n", Shape::Int),
        ];
        let mut obj = json!({"flag": "yes", "when": 0})
            .as_object()
            .cloned()
            .unwrap();
        let mut errors = ValidationErrors::default();
        check_object(&fields, &[], &mut obj, &mut errors);
        assert_eq!(obj["flag"], json!(true));
        assert_eq!(obj["when"], json!("1970-01-01T00:00:00"));
        assert_eq!(errors.problems.len(), 1);
        assert_eq!(errors.problems[0].kind, "missing");
        assert_eq!(errors.problems[0].loc, vec![json!("n")]);
    }
}
