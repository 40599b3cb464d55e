//! Errors of the models, with field paths, and strict decoding.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::State;
use crate::ErrorKind;

/// One problem found in an input, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted field path, e.g. `data.kernel_revision.url`; empty for the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when empty, else the errors as a [`ModelError::Validation`].
    pub fn into_result(self) -> Result<(), ModelError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Validation(self))
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} validation error{}", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            let path = if e.path.is_empty() {
                "(document)"
            } else {
                &e.path
            };
            write!(f, "\n{path}\n  {}", e.message)?;
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
    /// A single validation problem.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> ModelError {
        let mut e = ValidationErrors::default();
        e.push(path, message);
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

    /// The problems as (path, message) pairs, for error bodies.
    pub fn problems(&self) -> Vec<ValidationError> {
        match self {
            ModelError::Decode { path, message, .. } => {
                vec![ValidationError {
                    path: path.clone(),
                    message: message.clone(),
                }]
            }
            ModelError::Validation(v) => v.0.clone(),
            ModelError::UnsupportedKind(_) => {
                vec![ValidationError {
                    path: "kind".into(),
                    message: self.to_string(),
                }]
            }
            ModelError::Transition { .. } => {
                vec![ValidationError {
                    path: "state".into(),
                    message: self.to_string(),
                }]
            }
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
