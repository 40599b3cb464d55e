//! Errors of the models, with field paths, and strict decoding.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::State;
use crate::ErrorKind;

/// One problem found in an input, in pydantic v2's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted field path, e.g. `data.kernel_revision.url`; empty for the whole document.
    pub path: String,
    /// The same location as keys and list indexes (pydantic's `loc`).
    pub loc: Vec<Value>,
    /// pydantic's error type, e.g. `missing`, `enum`, `int_type`.
    pub kind: String,
    /// What is wrong, in pydantic's words (`Field required`, ...).
    pub message: String,
    /// The offending input (for `missing`, the object the field is missing from).
    pub input: Value,
    /// pydantic's `ctx` (e.g. `{"expected": ...}` for `enum`), when it has one.
    pub ctx: Option<Value>,
}

impl ValidationError {
    /// The problem as one entry of a 422 `detail` list, its location under `prefix`
    /// (`["body"]` for a request body).
    pub fn to_detail(&self, prefix: &[Value]) -> Value {
        let mut loc = prefix.to_vec();
        loc.extend(self.loc.iter().cloned());
        let mut entry = serde_json::json!({
            "type": self.kind,
            "loc": loc,
            "msg": self.message,
            "input": self.input,
        });
        if let Some(ctx) = &self.ctx {
            entry["ctx"] = ctx.clone();
        }
        entry
    }
}

fn dotted(loc: &[Value]) -> String {
    loc.iter()
        .map(|p| match p {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Every problem found in one input, and the name of the model it was checked against
/// (`Checkout`, `Kbuild`, ...; empty when none applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    /// The model's class name, as pydantic names it in `N validation errors for <Model>`.
    pub model: String,
    /// The problems, in the model's field order; at most [`ValidationErrors::MAX_KEPT`].
    pub problems: Vec<ValidationError>,
    /// Problems found beyond [`ValidationErrors::MAX_KEPT`]: counted, not kept.
    pub omitted: usize,
}

impl ValidationErrors {
    /// How many problems are kept: a hostile body (a list of a million wrong items) must not
    /// turn into an answer or a text many times its size.
    pub const MAX_KEPT: usize = 1000;

    /// No problems yet, for `model`.
    pub fn for_model(model: impl Into<String>) -> ValidationErrors {
        ValidationErrors {
            model: model.into(),
            ..ValidationErrors::default()
        }
    }

    /// Records a problem of pydantic type `kind` at `loc`.
    pub fn add(&mut self, loc: Vec<Value>, kind: &str, message: impl Into<String>, input: &Value) {
        if self.problems.len() >= Self::MAX_KEPT {
            self.omitted += 1;
            return;
        }
        self.problems.push(ValidationError {
            path: dotted(&loc),
            loc,
            kind: kind.to_owned(),
            message: message.into(),
            input: input.clone(),
            ctx: None,
        });
    }

    /// Records a problem with pydantic's `ctx` object.
    pub fn add_ctx(
        &mut self,
        loc: Vec<Value>,
        kind: &str,
        message: impl Into<String>,
        input: &Value,
        ctx: Value,
    ) {
        let kept = self.problems.len();
        self.add(loc, kind, message, input);
        if self.problems.len() > kept
            && let Some(last) = self.problems.last_mut()
        {
            last.ctx = Some(ctx);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty() && self.omitted == 0
    }

    /// How many problems were found, kept or not.
    pub fn count(&self) -> usize {
        self.problems.len() + self.omitted
    }

    /// `Ok` when empty, else the errors as a [`ModelError::Validation`].
    pub fn into_result(self) -> Result<(), ModelError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Validation(self))
        }
    }

    /// The problems as a 422 `detail` list, each location under `prefix`.
    pub fn to_detail(&self, prefix: &[Value]) -> Value {
        Value::Array(self.problems.iter().map(|p| p.to_detail(prefix)).collect())
    }
}

/// pydantic's text: `N validation error(s) for <Model>`, then per problem its dotted location
/// and `  <msg> [type=<type>, input_value=<repr>, input_type=<type>]`.
impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.count();
        write!(f, "{n} validation error{}", if n == 1 { "" } else { "s" })?;
        if !self.model.is_empty() {
            write!(f, " for {}", self.model)?;
        }
        for e in &self.problems {
            if !e.path.is_empty() {
                write!(f, "\n{}", e.path)?;
            }
            write!(
                f,
                "\n  {} [type={}, input_value={}, input_type={}]",
                e.message,
                e.kind,
                super::shape::shown_input(&e.input),
                super::shape::python_type(&e.input)
            )?;
        }
        if self.omitted > 0 {
            write!(f, "\n({} more not shown)", self.omitted)?;
        }
        Ok(())
    }
}

/// Errors of the models module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The input is not valid JSON, or a field has the wrong type.
    #[error("{}: {message}", if path.is_empty() { "body" } else { path.as_str() })]
    Decode {
        /// Dotted path of the field that failed (empty when the JSON itself is broken).
        path: String,
        /// What is wrong, from the decoder.
        message: String,
        /// Whether the JSON syntax itself is broken (as opposed to a wrong value).
        syntax: bool,
    },
    /// The document decoded, but breaks the model's rules.
    #[error("{0}")]
    Validation(ValidationErrors),
    /// `kind` is not one of the six writable kinds.
    #[error("Unsupported node kind: {0}")]
    UnsupportedKind(String),
    /// A node names itself as its parent.
    #[error("Parent cannot be the same as the object")]
    SelfParent,
    /// A state change the state machine forbids.
    #[error("Transition not allowed with state: {to}")]
    Transition {
        /// The stored state.
        from: State,
        /// The requested state.
        to: State,
    },
}

impl ModelError {
    /// A single validation problem at the dotted `path` (pydantic type `value_error`).
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> ModelError {
        let mut e = ValidationErrors::default();
        let loc = path
            .into()
            .split('.')
            .filter(|s| !s.is_empty())
            .map(|s| Value::from(s.to_owned()))
            .collect();
        e.add(loc, "value_error", message, &Value::Null);
        ModelError::Validation(e)
    }

    /// `input` at `field` is not one of `values` (pydantic's `enum` error).
    pub fn not_one_of(field: &str, values: &[&str], input: &str) -> ModelError {
        let mut e = ValidationErrors::default();
        super::shape::enum_error(
            values,
            vec![Value::from(field)],
            &Value::from(input),
            &mut e,
        );
        ModelError::Validation(e)
    }

    /// The kind of error: always [`ErrorKind::Invalid`], except a forbidden transition, which is
    /// a [`ErrorKind::Conflict`] with the stored state.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModelError::Transition { .. } => ErrorKind::Conflict,
            _ => ErrorKind::Invalid,
        }
    }

    /// The problems, with their locations, for error bodies.
    pub fn problems(&self) -> Vec<ValidationError> {
        let single = |field: &str, kind: &str, message: String| {
            let mut e = ValidationErrors::default();
            let loc = if field.is_empty() {
                Vec::new()
            } else {
                field
                    .split('.')
                    .map(|s| Value::from(s.to_owned()))
                    .collect()
            };
            e.add(loc, kind, message, &Value::Null);
            e.problems
        };
        match self {
            ModelError::Decode { path, message, .. } => {
                single(path, "value_error", message.clone())
            }
            ModelError::Validation(v) => v.problems.clone(),
            ModelError::UnsupportedKind(_) => single("kind", "value_error", self.to_string()),
            ModelError::SelfParent => single("parent", "value_error", self.to_string()),
            ModelError::Transition { .. } => single("state", "value_error", self.to_string()),
        }
    }
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        let part = match seg {
            Segment::Seq { index } => index.to_string(),
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => continue,
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&part);
    }
    out
}

/// serde reports a missing field at its parent; name the field itself.
fn with_missing_field(mut path: String, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(end) = rest.find('`')
    {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&rest[..end]);
    }
    path
}

fn strip_position(msg: String) -> String {
    // serde_json appends " at line L column C"; the field path says more.
    match msg.rfind(" at line ") {
        Some(pos) => msg[..pos].to_owned(),
        None => msg,
    }
}

/// Decodes JSON bytes into `T`, naming the failing field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ModelError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(de) {
        Ok(v) => Ok(v),
        Err(err) => {
            let path = path_string(err.path());
            let inner = err.into_inner();
            let syntax = inner.is_syntax() || inner.is_eof();
            let message = if syntax {
                inner.to_string()
            } else {
                strip_position(inner.to_string())
            };
            Err(ModelError::Decode {
                path: if syntax {
                    String::new()
                } else {
                    with_missing_field(path, &message)
                },
                message,
                syntax,
            })
        }
    }
}

/// Decodes a JSON value into `T`, naming the failing field.
pub fn decode_value<T: DeserializeOwned>(value: Value) -> Result<T, ModelError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let message = err.inner().to_string();
        let path = with_missing_field(path_string(err.path()), &message);
        ModelError::Decode {
            path,
            message,
            syntax: false,
        }
    })
}
