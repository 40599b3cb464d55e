//! Validation against the KCIDB I/O schema v5 (up to v5.3) **with format checks**, written in
//! Rust from the schema's facts (kcidb-io `schema/v05_03.py`): required fields, JSON types,
//! `additionalProperties: false` everywhere but `misc`, the id/origin/path/hash patterns, the
//! status enum, `maxLength` of log excerpts, and the `uri`, `date-time` (RFC 3339, offset
//! required) and `email` formats that kcidb-io checks with `jsonschema`'s format checker.
//!
//! Where Python's `re.search` is laxer than the schema's intent (`$` also matches before a
//! final newline), these checks are stricter: a value that passes here passes kcidb-io.
//!
//! [`validate_object`] checks one object (what the bridge does before sending, so one bad
//! object never fails its batch); [`validate_document`] checks a whole document.

use serde_json::{Map, Value};

pub use super::formats::{is_date_time, is_uri};
use super::objects::ObjectType;

/// One schema violation: where (`builds/0/architecture`, or `architecture` within an object)
/// and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON path of the offending value, `/`-separated.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A string pattern of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// `^[^\0]*$`: any text without NUL.
    Text,
    /// `^[a-z0-9_]+:[^\0]*$`: an object id.
    Id,
    /// `^[a-z0-9_]+$`: an origin.
    Origin,
    /// `^[a-z0-9_]*$`: a build architecture.
    Arch,
    /// `^[0-9a-f]{40}$`.
    CommitHash,
    /// `^$|^[0-9a-f]{64}$`.
    PatchsetHash,
    /// `^https://[^\0]*$`.
    Https,
    /// `^([a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*)?$`: a test path or issue category.
    Path,
    /// `^[^/\0]+$`: a file name.
    FileName,
    /// `^[^ \0]+(,[^ \0]+)*$`: a compatible string.
    Compatible,
    /// No pattern.
    Any,
}

impl Pattern {
    fn text(self) -> &'static str {
        match self {
            Pattern::Text => "^[^\\0]*$",
            Pattern::Id => "^[a-z0-9_]+:[^\\0]*$",
            Pattern::Origin => "^[a-z0-9_]+$",
            Pattern::Arch => "^[a-z0-9_]*$",
            Pattern::CommitHash => "^[0-9a-f]{40}$",
            Pattern::PatchsetHash => "^$|^[0-9a-f]{64}$",
            Pattern::Https => "^https://[^\\0]*$",
            Pattern::Path => "^([a-zA-Z0-9_-]+(\\.[a-zA-Z0-9_-]+)*)?$",
            Pattern::FileName => "^[^/\\0]+$",
            Pattern::Compatible => "^[^ \\0]+(,[^ \\0]+)*$",
            Pattern::Any => "",
        }
    }

    fn matches(self, s: &str) -> bool {
        let origin_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        match self {
            Pattern::Any => true,
            Pattern::Text => !s.contains('\0'),
            Pattern::Id => match s.split_once(':') {
                Some((origin, rest)) => {
                    !origin.is_empty() && origin.chars().all(origin_char) && !rest.contains('\0')
                }
                None => false,
            },
            Pattern::Origin => !s.is_empty() && s.chars().all(origin_char),
            Pattern::Arch => s.chars().all(origin_char),
            Pattern::CommitHash => hex(s, 40),
            Pattern::PatchsetHash => s.is_empty() || hex(s, 64),
            Pattern::Https => s.starts_with("https://") && !s.contains('\0'),
            Pattern::Path => {
                s.is_empty()
                    || s.split('.').all(|part| {
                        !part.is_empty()
                            && part
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    })
            }
            Pattern::FileName => !s.is_empty() && !s.contains(['/', '\0']),
            Pattern::Compatible => {
                !s.is_empty()
                    && s.split(',')
                        .all(|part| !part.is_empty() && !part.contains([' ', '\0']))
            }
        }
    }
}

/// A string format of the schema (checked like `jsonschema`'s format checker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Uri,
    DateTime,
    Email,
}

/// What a property must be.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Str(Pattern, Option<Format>, Option<usize>),
    StrList(Pattern),
    Bool,
    Number,
    /// An integer with a minimum.
    Integer(i64),
    /// Free-form object (`misc`).
    Object,
    Status,
    Resources,
    Environment,
    TestNumber,
    Culprit,
}

const TEXT: Rule = Rule::Str(Pattern::Text, None, None);
const ID: Rule = Rule::Str(Pattern::Id, None, None);
const ORIGIN: Rule = Rule::Str(Pattern::Origin, None, None);
const URI: Rule = Rule::Str(Pattern::Any, Some(Format::Uri), None);
const TIME: Rule = Rule::Str(Pattern::Any, Some(Format::DateTime), None);
const EXCERPT: Rule = Rule::Str(Pattern::Text, None, Some(16384));

/// The schema minor version a property appeared in (5.0 unless listed).
fn since_minor(ty: ObjectType, name: &str) -> u32 {
    match (ty, name) {
        (ObjectType::Checkout, "origin_builds_finish_time" | "origin_tests_finish_time") => 1,
        (ObjectType::Issue, "categories") => 2,
        (ObjectType::Test, "input_files") => 3,
        _ => 0,
    }
}

fn properties(ty: ObjectType) -> &'static [(&'static str, Rule)] {
    match ty {
        ObjectType::Checkout => &[
            ("_timestamp", TIME),
            ("id", ID),
            ("origin", ORIGIN),
            ("tree_name", TEXT),
            (
                "git_repository_url",
                Rule::Str(Pattern::Https, Some(Format::Uri), None),
            ),
            (
                "git_commit_hash",
                Rule::Str(Pattern::CommitHash, None, None),
            ),
            ("git_commit_name", TEXT),
            ("git_repository_branch", TEXT),
            ("git_repository_branch_tip", Rule::Bool),
            ("git_commit_tags", Rule::StrList(Pattern::Text)),
            ("git_commit_message", TEXT),
            ("patchset_files", Rule::Resources),
            (
                "patchset_hash",
                Rule::Str(Pattern::PatchsetHash, None, None),
            ),
            (
                "message_id",
                Rule::Str(Pattern::Any, Some(Format::Email), None),
            ),
            ("comment", TEXT),
            ("start_time", TIME),
            ("log_url", URI),
            ("log_excerpt", EXCERPT),
            ("valid", Rule::Bool),
            ("origin_builds_finish_time", TIME),
            ("origin_tests_finish_time", TIME),
            ("misc", Rule::Object),
        ],
        ObjectType::Build => &[
            ("_timestamp", TIME),
            ("id", ID),
            ("checkout_id", ID),
            ("origin", ORIGIN),
            ("comment", TEXT),
            ("start_time", TIME),
            ("duration", Rule::Number),
            ("architecture", Rule::Str(Pattern::Arch, None, None)),
            ("command", TEXT),
            ("compiler", TEXT),
            ("input_files", Rule::Resources),
            ("output_files", Rule::Resources),
            ("config_name", TEXT),
            ("config_url", URI),
            ("log_url", URI),
            ("log_excerpt", EXCERPT),
            ("status", Rule::Status),
            ("misc", Rule::Object),
        ],
        ObjectType::Test => &[
            ("_timestamp", TIME),
            ("id", ID),
            ("build_id", ID),
            ("origin", ORIGIN),
            ("path", Rule::Str(Pattern::Path, None, None)),
            ("comment", TEXT),
            ("environment", Rule::Environment),
            ("log_url", URI),
            ("log_excerpt", EXCERPT),
            ("status", Rule::Status),
            ("number", Rule::TestNumber),
            ("start_time", TIME),
            ("duration", Rule::Number),
            ("input_files", Rule::Resources),
            ("output_files", Rule::Resources),
            ("misc", Rule::Object),
        ],
        ObjectType::Issue => &[
            ("_timestamp", TIME),
            ("id", ID),
            ("version", Rule::Integer(0)),
            ("origin", ORIGIN),
            ("report_url", URI),
            ("report_subject", TEXT),
            ("culprit", Rule::Culprit),
            ("comment", TEXT),
            ("categories", Rule::StrList(Pattern::Path)),
            ("misc", Rule::Object),
        ],
        ObjectType::Incident => &[
            ("_timestamp", TIME),
            ("id", ID),
            ("origin", ORIGIN),
            ("issue_id", ID),
            ("issue_version", Rule::Integer(0)),
            ("build_id", ID),
            ("test_id", ID),
            ("present", Rule::Bool),
            ("comment", TEXT),
            ("misc", Rule::Object),
        ],
    }
}

fn required(ty: ObjectType) -> &'static [&'static str] {
    match ty {
        ObjectType::Checkout => &["id", "origin"],
        ObjectType::Build => &["id", "origin", "checkout_id"],
        ObjectType::Test => &["id", "origin", "build_id"],
        ObjectType::Issue => &["id", "origin", "version"],
        ObjectType::Incident => &["id", "origin", "issue_id", "issue_version"],
    }
}

struct Checker {
    errors: Vec<FieldError>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}/{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

impl Checker {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: path.to_owned(),
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, path: &str, v: &Value, want: &str) {
        self.err(
            path,
            format!(
                "{} is not of type '{want}' (got {})",
                short(v),
                type_name(v)
            ),
        );
    }

    fn object<'a>(&mut self, path: &str, v: &'a Value) -> Option<&'a Map<String, Value>> {
        let o = v.as_object();
        if o.is_none() {
            self.wrong_type(path, v, "object");
        }
        o
    }

    /// Checks `additionalProperties: false` and the required keys of `obj`.
    fn keys(&mut self, path: &str, obj: &Map<String, Value>, allowed: &[&str], req: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.err(
                    path,
                    format!("Additional properties are not allowed ('{key}' was unexpected)"),
                );
            }
        }
        for key in req {
            if !obj.contains_key(*key) {
                self.err(path, format!("'{key}' is a required property"));
            }
        }
    }

    fn string(&mut self, path: &str, v: &Value, pattern: Pattern, format: Option<Format>) {
        let Some(s) = v.as_str() else {
            return self.wrong_type(path, v, "string");
        };
        if !pattern.matches(s) {
            self.err(
                path,
                format!("{} does not match '{}'", short(v), pattern.text()),
            );
        }
        let ok = match format {
            None => true,
            Some(Format::Uri) => is_uri(s),
            Some(Format::DateTime) => is_date_time(s),
            Some(Format::Email) => s.contains('@'),
        };
        if !ok {
            let name = match format {
                Some(Format::Uri) => "uri",
                Some(Format::DateTime) => "date-time",
                _ => "email",
            };
            self.err(path, format!("{} is not a '{name}'", short(v)));
        }
    }

    fn rule(&mut self, path: &str, v: &Value, rule: Rule) {
        match rule {
            Rule::Str(pattern, format, max) => {
                self.string(path, v, pattern, format);
                if let (Some(max), Some(s)) = (max, v.as_str())
                    && s.chars().count() > max
                {
                    self.err(path, format!("is longer than {max} characters"));
                }
            }
            Rule::StrList(pattern) => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.string(&join(path, &i.to_string()), item, pattern, None);
                    }
                }
                None => self.wrong_type(path, v, "array"),
            },
            Rule::Bool => {
                if !v.is_boolean() {
                    self.wrong_type(path, v, "boolean");
                }
            }
            Rule::Number => {
                if !v.is_number() {
                    self.wrong_type(path, v, "number");
                }
            }
            Rule::Integer(min) => {
                let int = v.as_i64().or_else(|| {
                    v.as_u64()
                        .map(|_| i64::MAX)
                        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                });
                match int {
                    Some(i) if i < min => self.err(
                        path,
                        format!("{} is less than the minimum of {min}", short(v)),
                    ),
                    Some(_) => {}
                    None => self.wrong_type(path, v, "integer"),
                }
            }
            Rule::Object => {
                self.object(path, v);
            }
            Rule::Status => match v.as_str() {
                Some("FAIL" | "ERROR" | "MISS" | "PASS" | "DONE" | "SKIP") => {}
                _ => self.err(
                    path,
                    format!(
                        "{} is not one of ['FAIL', 'ERROR', 'MISS', 'PASS', 'DONE', 'SKIP']",
                        short(v)
                    ),
                ),
            },
            Rule::Resources => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let p = join(path, &i.to_string());
                        let Some(o) = self.object(&p, item) else {
                            continue;
                        };
                        self.keys(&p, o, &["name", "url"], &["name", "url"]);
                        if let Some(name) = o.get("name") {
                            self.string(&join(&p, "name"), name, Pattern::FileName, None);
                        }
                        if let Some(url) = o.get("url") {
                            self.string(&join(&p, "url"), url, Pattern::Any, Some(Format::Uri));
                        }
                    }
                }
                None => self.wrong_type(path, v, "array"),
            },
            Rule::Environment => {
                let Some(o) = self.object(path, v) else {
                    return;
                };
                self.keys(path, o, &["comment", "compatible", "misc"], &[]);
                for (key, value) in o {
                    let rule = match key.as_str() {
                        "comment" => TEXT,
                        "compatible" => Rule::StrList(Pattern::Compatible),
                        "misc" => Rule::Object,
                        _ => continue,
                    };
                    self.rule(&join(path, key), value, rule);
                }
            }
            Rule::TestNumber => {
                let Some(o) = self.object(path, v) else {
                    return;
                };
                self.keys(path, o, &["value", "unit", "prefix"], &["value"]);
                for (key, value) in o {
                    let p = join(path, key);
                    match key.as_str() {
                        "value" => self.rule(&p, value, Rule::Number),
                        "unit" => self.rule(&p, value, TEXT),
                        "prefix" if !matches!(value.as_str(), Some("metric" | "binary")) => {
                            self.err(
                                &p,
                                format!("{} is not one of ['metric', 'binary']", short(value)),
                            );
                        }
                        _ => {}
                    }
                }
            }
            Rule::Culprit => {
                let Some(o) = self.object(path, v) else {
                    return;
                };
                self.keys(path, o, &["code", "tool", "harness"], &[]);
                for (key, value) in o {
                    if matches!(key.as_str(), "code" | "tool" | "harness") {
                        self.rule(&join(path, key), value, Rule::Bool);
                    }
                }
            }
        }
    }

    fn kcidb_object(&mut self, path: &str, ty: ObjectType, v: &Value, minor: u32) {
        let Some(obj) = self.object(path, v) else {
            return;
        };
        let props = properties(ty);
        let allowed: Vec<&str> = props
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| since_minor(ty, name) <= minor)
            .collect();
        self.keys(path, obj, &allowed, required(ty));
        for (key, value) in obj {
            if let Some((_, rule)) = props.iter().find(|(name, _)| name == key) {
                self.rule(&join(path, key), value, *rule);
            }
        }
    }
}

/// Checks one object of type `ty` against schema v5.3. Field paths are relative to the object
/// (`architecture`, `environment/compatible/0`). Empty when valid.
pub fn validate_object(ty: ObjectType, object: &Value) -> Vec<FieldError> {
    let mut c = Checker { errors: Vec::new() };
    c.kcidb_object("", ty, object, 3);
    c.errors
}

/// Checks a whole document against the schema version it declares (5.0 to 5.3; a document
/// must declare major version 5). Field paths start at the list (`builds/0/architecture`).
/// Empty when valid.
pub fn validate_document(doc: &Value) -> Vec<FieldError> {
    let mut c = Checker { errors: Vec::new() };
    let Some(obj) = c.object("", doc) else {
        return c.errors;
    };
    c.keys(
        "",
        obj,
        &[
            "version",
            "checkouts",
            "builds",
            "tests",
            "issues",
            "incidents",
        ],
        &["version"],
    );
    let mut minor = 0;
    if let Some(version) = obj.get("version")
        && let Some(v) = c.object("version", version)
    {
        c.keys("version", v, &["major", "minor"], &["major"]);
        match v.get("major") {
            Some(m) if m.as_u64() == Some(5) || m.as_f64() == Some(5.0) => {}
            Some(m) => c.err(
                "version/major",
                format!("5 was expected (got {})", short(m)),
            ),
            None => {}
        }
        if let Some(m) = v.get("minor") {
            match m.as_u64() {
                Some(n) if n <= 3 => minor = n as u32,
                Some(n) => c.err(
                    "version/minor",
                    format!("{n} is greater than the maximum of 3"),
                ),
                None => c.wrong_type("version/minor", m, "integer"),
            }
        }
    }
    for ty in ObjectType::ALL {
        let name = ty.list_name();
        let Some(list) = obj.get(name) else {
            continue;
        };
        match list.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    c.kcidb_object(&format!("{name}/{i}"), ty, item, minor);
                }
            }
            None => c.wrong_type(name, list, "array"),
        }
    }
    c.errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_checked_field_by_field() {
        let build = json!({"id": "maestro:1", "origin": "maestro", "checkout_id": "maestro:0",
            "architecture": "x86-64", "status": "INCOMPLETE", "valid": true,
            "output_files": [{"name": "a/b", "url": "not a url"}], "log_excerpt": "x\u{0}"});
        let errors = validate_object(ObjectType::Build, &build);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "",
                "architecture",
                "status",
                "output_files/0/name",
                "output_files/0/url",
                "log_excerpt"
            ],
            "{errors:?}"
        );
        assert!(errors[0].message.contains("'valid' was unexpected"));
        let test =
            json!({"id": "Maestro:1", "origin": "maestro", "path": "kselftest.capabilities."});
        let errors = validate_object(ObjectType::Test, &test);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["", "id", "path"], "{errors:?}");
        assert!(errors[0].message.contains("'build_id' is a required"));
    }

    #[test]
    fn documents_declare_version_5() {
        assert!(validate_document(&json!({"version": {"major": 5}})).is_empty());
        let e = validate_document(&json!({"version": {"major": 6, "minor": 0}}));
        assert_eq!(e[0].field, "version/major");
        let e = validate_document(
            &json!({"version": {"major": 5, "minor": 2}, "tests": [{"id": "a:1", "origin": "a",
                "build_id": "a:2", "input_files": []}]}),
        );
        assert_eq!(e.len(), 1, "input_files is new in 5.3: {e:?}");
        assert!(
            validate_document(&json!({"version": {"major": 5}, "x": []}))[0]
                .message
                .contains("'x' was unexpected")
        );
    }
}
