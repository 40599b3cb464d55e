//! Parameter formatting (Python `str.format_map`), rootfs references and frequencies.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{ConfigError, ConfigErrorKind};

/// Upstream `format_params`: every string inside `params` (recursively through mappings and
/// lists) is formatted with Python `str.format_map(map)` semantics. A string that names a key
/// missing from `map` (or that is not a valid format string) is left unchanged, as a whole.
pub fn format_params(params: &Value, map: &Map<String, Value>) -> Value {
    match params {
        Value::String(s) => Value::String(format_string(s, map).unwrap_or_else(|| s.clone())),
        Value::Array(items) => Value::Array(items.iter().map(|i| format_params(i, map)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), format_params(v, map)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Formats one string like Python `s.format_map(map)`: `{key}` is replaced by the value's
/// Python `str()`, `{key[sub]}` indexes a mapping, `{{` and `}}` are literal braces, and a
/// conversion or format spec (`{key!r}`, `{key:>4}`) is accepted and ignored. `None` when a key
/// is missing or the string is not a valid format string (upstream then keeps it unchanged).
pub fn format_string(s: &str, map: &Map<String, Value>) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '}' => return None,
            '{' => {
                let mut field = String::new();
                let mut depth = 0usize;
                loop {
                    let c = chars.next()?;
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    field.push(c);
                }
                // Strip a conversion (`!r`) and a format spec (`:x`).
                let name_end = field.find(['!', ':']).unwrap_or(field.len());
                let expr = &field[..name_end];
                out.push_str(&py_str(lookup(expr, map)?));
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fn lookup<'a>(expr: &str, map: &'a Map<String, Value>) -> Option<&'a Value> {
    let first_end = expr.find(['[', '.']).unwrap_or(expr.len());
    let (first, mut rest) = expr.split_at(first_end);
    if first.is_empty() {
        return None;
    }
    let mut value = map.get(first)?;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        let key = &inner[..close];
        value = match value {
            Value::Object(m) => m.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
        rest = &inner[close + 1..];
    }
    Some(value)
}

/// Python `str()` of a JSON value (`True`, `None`, `['a', 'b']`, `{'k': 1}`).
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e16 {
                    format!("{f:.1}")
                } else {
                    f.to_string()
                }
            } else {
                n.to_string()
            }
        }
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Upstream `resolve_rootfs_params`: removes `rootfs_ref` from `params` and adds that
/// `rootfs:` entry's keys that `params` does not already have. An unknown reference is an
/// error.
pub fn resolve_rootfs_params(
    params: &mut Map<String, Value>,
    rootfs: &Map<String, Value>,
) -> Result<(), ConfigError> {
    let Some(reference) = params.remove("rootfs_ref") else {
        return Ok(());
    };
    let name = match &reference {
        Value::String(s) => s.as_str(),
        Value::Null => return Ok(()),
        other => {
            return Err(ConfigError::new(
                ConfigErrorKind::Schema,
                format!("rootfs_ref must be a string, not {other}"),
            )
            .with_key("rootfs_ref"));
        }
    };
    let Some(entry) = rootfs.get(name) else {
        return Err(ConfigError::new(
            ConfigErrorKind::Reference,
            format!("unknown rootfs {name:?}"),
        )
        .with_key("rootfs_ref"));
    };
    if let Value::Object(entry) = entry {
        for (k, v) in entry {
            params.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(())
}

/// Parses a frequency `[Nd][Nh][Nm]` (e.g. `1d`, `12h`, `1d6h30m`) into a duration.
pub fn parse_frequency(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid frequency {s:?}: expected [Nd][Nh][Nm], e.g. 1d, 12h, 1d6h30m");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    let mut last_rank = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = rest[digits..].chars().next().ok_or_else(bad)?;
        let (rank, secs) = match unit {
            'd' => (1, 86_400),
            'h' => (2, 3_600),
            'm' => (3, 60),
            _ => return Err(bad()),
        };
        if rank <= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn format_like_python() {
        let m = map(json!({"arch": "arm64", "n": 6, "ok": true, "l": ["a", "b"], "d": {"k": "v"}}));
        assert_eq!(format_string("{arch}-{n}", &m).as_deref(), Some("arm64-6"));
        assert_eq!(format_string("{{x}} {ok}", &m).as_deref(), Some("{x} True"));
        assert_eq!(format_string("{l}", &m).as_deref(), Some("['a', 'b']"));
        assert_eq!(
            format_string("{d[k]}/{arch:>3}", &m).as_deref(),
            Some("v/arm64")
        );
        assert_eq!(format_string("{missing}-{arch}", &m), None);
        assert_eq!(format_string("a } b", &m), None);
        let params =
            json!({"url": "http://x/{arch}/{missing}", "list": ["{arch}", 3], "img": "{arch}"});
        assert_eq!(
            format_params(&params, &m),
            json!({"url": "http://x/{arch}/{missing}", "list": ["arm64", 3], "img": "arm64"})
        );
    }

    #[test]
    fn rootfs_ref_merges_without_overwriting() {
        let rootfs = map(json!({"debian": {"nfsroot": "http://r/{debarch}/", "ramdisk": "r.gz"}}));
        let mut p = map(json!({"rootfs_ref": "debian", "ramdisk": "mine.gz"}));
        resolve_rootfs_params(&mut p, &rootfs).expect("known");
        assert_eq!(
            Value::Object(p),
            json!({"ramdisk": "mine.gz", "nfsroot": "http://r/{debarch}/"})
        );
        let mut p = map(json!({"rootfs_ref": "nope"}));
        let e = resolve_rootfs_params(&mut p, &rootfs).expect_err("unknown");
        assert_eq!(e.kind, ConfigErrorKind::Reference);
    }

    #[test]
    fn frequencies() {
        assert_eq!(parse_frequency("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_frequency("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(
            parse_frequency("1d6h30m"),
            Ok(Duration::from_secs(86_400 + 6 * 3_600 + 1_800))
        );
        assert_eq!(parse_frequency("0m"), Ok(Duration::ZERO));
        for bad in ["", "1", "d", "1h1d", "1x", "1d1d", "-1h", "1 d"] {
            assert!(parse_frequency(bad).is_err(), "{bad}");
        }
    }
}
