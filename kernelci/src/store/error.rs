//! [`StoreError`]: what every store trait returns when it fails.
//!
//! The errors are typed, not worded for an API: a [`Conflict`] says *which* unique key clashed,
//! a `NotFound` says which [`Entity`] and id. The API server turns them into upstream's texts
//! (`kernelci-server`'s `http.rs`); other callers match on the variants or on
//! [`StoreError::kind`].

use crate::ErrorKind;
use crate::models::{ModelError, ObjectId};
use crate::query::QueryError;

/// What kind of stored object an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    /// A node.
    Node,
    /// A user account.
    User,
    /// A user group.
    UserGroup,
    /// A durable subscriber's stored position.
    Subscriber,
}

impl Entity {
    /// The entity's name in messages (`node`, `user`, `user group`, `subscriber`).
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Node => "node",
            Entity::User => "user",
            Entity::UserGroup => "user group",
            Entity::Subscriber => "subscriber",
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which unique key a write clashed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A node id that is already stored (`None`: one id of a batch, the backend did not say
    /// which).
    NodeId(Option<ObjectId>),
    /// A username that another user has.
    Username(String),
    /// An e-mail address that another user has (compared case-insensitively).
    Email(String),
    /// A group name that another group has.
    GroupName(String),
    /// The node changed between the read and the write of an update (a backend without
    /// transactions guards its updates this way); running the write again may succeed.
    ConcurrentWrite(ObjectId),
    /// Another unique key of the backend, in the backend's words.
    Other(String),
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::NodeId(Some(id)) => write!(f, "node id {id} is already stored"),
            Conflict::NodeId(None) => f.write_str("a node id of the batch is already stored"),
            Conflict::Username(u) => write!(f, "username '{u}' is taken"),
            Conflict::Email(e) => write!(f, "e-mail '{e}' is taken"),
            Conflict::GroupName(g) => write!(f, "group name '{g}' is taken"),
            Conflict::ConcurrentWrite(id) => {
                write!(f, "node {id} was changed concurrently; retry")
            }
            Conflict::Other(what) => f.write_str(what),
        }
    }
}

/// Errors of the store traits.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked for.
        what: Entity,
        /// The id or name looked for.
        id: String,
    },
    /// The write clashes with a stored unique key.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The input breaks a model rule (including a forbidden state transition).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The query cannot be run.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Other invalid input (a bad cursor, a bad sort field).
    #[error("{0}")]
    Invalid(String),
    /// A durable subscriber is behind the event log's retention.
    #[error(
        "events after sequence {requested} were purged (oldest kept: {oldest}); the subscriber must resynchronise"
    )]
    EventsPurged {
        /// The position asked for.
        requested: u64,
        /// The oldest sequence number still kept.
        oldest: u64,
    },
    /// The backend could not be reached or failed; retrying later may work.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The operation ran past its time budget.
    #[error("store operation timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A bug or corrupt data.
    #[error("store internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Conflict(_) => ErrorKind::Conflict,
            StoreError::Model(e) => e.kind(),
            StoreError::Query(_) | StoreError::Invalid(_) => ErrorKind::Invalid,
            StoreError::EventsPurged { .. } => ErrorKind::Conflict,
            StoreError::Unavailable { .. } => ErrorKind::Unavailable,
            StoreError::Timeout(_) => ErrorKind::Timeout,
            StoreError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// An `Unavailable` error wrapping a source.
    pub fn unavailable<E: std::error::Error + Send + Sync + 'static>(
        message: impl Into<String>,
        source: E,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A `NotFound` error for `what` with `id`.
    pub fn not_found(what: Entity, id: impl std::fmt::Display) -> Self {
        StoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// A copy of this error for another caller (the source of `Unavailable` is dropped, and
    /// errors that cannot be copied become `Internal` with their text). Used by backends that
    /// answer several writes with the failure of the batch they shared.
    pub fn copied(&self) -> StoreError {
        match self {
            StoreError::Unavailable { message, .. } => StoreError::Unavailable {
                message: message.clone(),
                source: None,
            },
            StoreError::Timeout(d) => StoreError::Timeout(*d),
            StoreError::Conflict(c) => StoreError::Conflict(c.clone()),
            StoreError::NotFound { what, id } => StoreError::NotFound {
                what: *what,
                id: id.clone(),
            },
            StoreError::Invalid(m) => StoreError::Invalid(m.clone()),
            StoreError::EventsPurged { requested, oldest } => StoreError::EventsPurged {
                requested: *requested,
                oldest: *oldest,
            },
            other => StoreError::Internal(other.to_string()),
        }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_name_their_key_and_keep_their_kind() {
        let e = StoreError::Conflict(Conflict::Username("alice".into()));
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(e.to_string(), "conflict: username 'alice' is taken");
        assert!(matches!(e.copied(), StoreError::Conflict(Conflict::Username(u)) if u == "alice"));
        let e = StoreError::not_found(Entity::UserGroup, "x");
        assert_eq!(e.to_string(), "user group x not found");
        assert_eq!(e.copied().kind(), ErrorKind::NotFound);
    }
}
