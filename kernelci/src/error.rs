//! The error kinds shared by every module.
//!
//! Each module has its own `thiserror` enum; every one of them can say which [`ErrorKind`] it
//! is, so a caller (the API server, a pipeline service) can map any error to a response or a
//! retry decision without knowing the module it came from.

/// What kind of failure an error is, independent of the module that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object asked for does not exist.
    NotFound,
    /// The request conflicts with the stored state (a duplicate, a forbidden transition).
    Conflict,
    /// The input is malformed or breaks a rule; retrying the same input fails again.
    Invalid,
    /// The caller is not allowed to do this.
    Unauthorized,
    /// A backend (database, Redis, remote host) could not be reached; retrying may work.
    Unavailable,
    /// The operation ran out of its time budget.
    Timeout,
    /// A bug or an unexpected state on our side.
    Internal,
}

impl ErrorKind {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}
