//! JSON text exactly as Python's `json.dumps(value)` writes it with the default arguments:
//! separators `", "` and `": "`, `ensure_ascii=True` (every character outside printable ASCII
//! as a lowercase `\uXXXX` escape, astral characters as surrogate pairs), and floats as
//! Python's `repr` writes them (`1.0`, `1e-05`, `1.5e+16`).

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// `value` as Python's `json.dumps(value)` text.
pub fn to_string(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value);
    out
}

/// Writes `value` as Python's `json.dumps` would, appending to `out`.
pub fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map.iter()),
    }
}

/// Writes an object from `(key, value)` pairs in the given order.
pub fn write_object<'a>(out: &mut String, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push('{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, key);
        out.push_str(": ");
        write_value(out, value);
    }
    out.push('}');
}

/// Writes a JSON string literal with Python's `ensure_ascii` escaping.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    } else {
        out.push_str(&n.to_string());
    }
}

/// Python's `float.__repr__`: the shortest round-tripping digits, in positional notation when
/// the decimal exponent is in `-4..16`, else as `d.ddde±XX`.
fn write_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        // serde_json never holds these; Python would write NaN/Infinity.
        out.push_str(if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        return;
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let plain = format!("{f}");
        out.push_str(&plain);
        if !plain.contains('.') {
            out.push_str(".0");
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        // Expected strings produced by CPython 3.11 `json.dumps`.
        let cases = [
            (
                json!({"a": 1, "b": [1, 2], "c": {}}),
                r#"{"a": 1, "b": [1, 2], "c": {}}"#,
            ),
            (json!([]), "[]"),
            (
                json!("é\u{1F600}\u{7f}\u{1}"),
                r#""\u00e9\ud83d\ude00\u007f\u0001""#,
            ),
            (json!("a\"b\\c\n\t\r\u{8}\u{c}/"), r#""a\"b\\c\n\t\r\b\f/""#),
            (json!(1.0), "1.0"),
            (json!(-0.0), "-0.0"),
            (json!(0.1), "0.1"),
            (json!(1e-5), "1e-05"),
            (json!(0.0001), "0.0001"),
            (json!(1e16), "1e+16"),
            (json!(1.5e16), "1.5e+16"),
            (json!(123456789012345.6), "123456789012345.6"),
            (json!(1e300), "1e+300"),
            (json!(-2.5e-7), "-2.5e-07"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(-3), "-3"),
            (json!(null), "null"),
            (json!(true), "true"),
        ];
        for (value, expected) in cases {
            assert_eq!(to_string(&value), expected, "{value:?}");
        }
    }
}
