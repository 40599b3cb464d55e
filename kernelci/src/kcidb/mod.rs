//! KCIDB: the database behind dashboard.kernelci.org (feature `kcidb`).
//!
//! - [`objects`]: the KCIDB I/O v5 objects and the document that carries them;
//! - [`validate`]: the v5.3 schema checks, with format checks, per object or per document;
//! - [`mapping`]: which nodes are sent, and the node → KCIDB object mapping ([`index`]: the
//!   nodes it looks at);
//! - [`formats`]: the `uri` and `date-time` formats of the schema;
//! - [`excerpt`]: the `log_excerpt` of builds and tests (the end of their log);
//! - [`fetch`]: node trees from the API for the mapping, and [`fetch::export_checkout`];
//! - the [`KcidbSubmitter`] trait and its implementations: [`RestSubmitter`] (`POST /submit`
//!   to a kcidb-ng REST server, `KCIDB_REST`) and [`SpoolSubmitter`] (one JSON file per
//!   document in a directory, for offline deployments and `kci up`).
//!
//! The bridge service that follows the API and submits is
//! `kernelci::pipeline::kcidb_bridge` (features `pipeline` and `kcidb`).
//!
//! ```
//! use kernelci::kcidb::mapping::{Decision, Mapper, MappingConfig, NodeIndex};
//! use kernelci::kcidb::{prepare, validate::validate_document};
//! use kernelci::models::{Node, NodeKind, ObjectId, State};
//!
//! let mut checkout = Node::new(NodeKind::Checkout, "checkout");
//! checkout.id = Some(ObjectId::new());
//! checkout.state = State::Available;
//! let mapper = Mapper::new(MappingConfig::new("maestro").unwrap());
//! let Decision::Send(objects) = mapper.map(&checkout, &NodeIndex::new()) else { panic!() };
//! let prepared = prepare(objects.into_iter().map(|o| (o, vec![checkout.id.unwrap()])));
//! assert!(prepared.invalid.is_empty());
//! assert!(validate_document(&prepared.document.to_value()).is_empty());
//! ```

pub mod excerpt;
pub mod fetch;
pub mod formats;
pub mod index;
pub mod mapping;
pub mod objects;
mod rest;
mod spool;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod validate;

use std::time::Duration;

pub use async_trait::async_trait;
pub use rest::{RestEndpoint, RestSubmitter};
pub use spool::SpoolSubmitter;

use crate::ErrorKind;
use crate::models::ObjectId;
use objects::{Document, Object};
use validate::{FieldError, validate_object};

/// Errors of the KCIDB module.
#[derive(Debug, thiserror::Error)]
pub enum KcidbError {
    /// A configuration value is wrong (a bad `KCIDB_REST`, a bad origin).
    #[error("KCIDB configuration: {0}")]
    Config(String),
    /// KCIDB refused the token (HTTP 401 or 403).
    #[error("KCIDB refused the credentials: HTTP {status}: {body}")]
    Unauthorized {
        /// The HTTP status.
        status: u16,
        /// The answer (shortened).
        body: String,
    },
    /// KCIDB rejected the document (another 4xx): sending it again will not help.
    #[error("KCIDB rejected the submission: HTTP {status}: {body}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The answer (shortened).
        body: String,
    },
    /// KCIDB could not take it now (5xx, 429, a connection error, a bad answer), after the
    /// retries of the submitter's policy.
    #[error("KCIDB unavailable: {0}")]
    Unavailable(String),
    /// No answer within the timeout, after the retries.
    #[error("KCIDB did not answer in time: {0}")]
    Timeout(String),
    /// An API call failed (reading nodes, marking them).
    #[error("API: {0}")]
    Api(#[from] crate::client::ClientError),
    /// A local file operation failed (the spool directory).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl KcidbError {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            KcidbError::Config(_) | KcidbError::Rejected { .. } => ErrorKind::Invalid,
            KcidbError::Unauthorized { .. } => ErrorKind::Unauthorized,
            KcidbError::Unavailable(_) | KcidbError::Io { .. } => ErrorKind::Unavailable,
            KcidbError::Timeout(_) => ErrorKind::Timeout,
            KcidbError::Api(e) => e.kind(),
        }
    }
}

/// Result of KCIDB operations.
pub type KcidbResult<T> = Result<T, KcidbError>;

/// What KCIDB said when it took a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitReceipt {
    /// The submission id (REST: the server's `id`; spool: the file's id).
    pub id: String,
}

/// Where documents go. Implementations: [`RestSubmitter`], [`SpoolSubmitter`].
///
/// `submit` returns `Ok` only once the document is safely taken (HTTP 200 with an `id`; the
/// file renamed into place); transient failures are retried inside, following the
/// implementation's [`RetryPolicy`], before an error is returned.
#[async_trait]
pub trait KcidbSubmitter: Send + Sync + std::fmt::Debug {
    /// Submits one document (already validated, without `null`s).
    async fn submit(&self, document: &serde_json::Value) -> KcidbResult<SubmitReceipt>;

    /// Where documents go, for logs (never the token).
    fn describe(&self) -> String;
}

/// Retries with exponential backoff and jitter: attempt `n` (from 1) waits a random time in
/// `[d/2, d]` where `d = base_delay · 2^(n-1)`, capped at `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub max_attempts: u32,
    /// The first wait.
    pub base_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1: after the first failure), with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let mut bytes = [0u8; 4];
        let _ = getrandom::fill(&mut bytes);
        let fraction = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX);
        full / 2 + full.mul_f64(fraction / 2.0)
    }
}

/// The submitter a deployment asked for: REST when `kcidb_rest` (the `KCIDB_REST` value) is
/// given, else the spool directory `spool`; neither is a configuration error.
pub fn submitter_from(
    kcidb_rest: Option<&str>,
    spool: Option<&std::path::Path>,
    timeout: Duration,
    policy: RetryPolicy,
) -> KcidbResult<std::sync::Arc<dyn KcidbSubmitter>> {
    match (kcidb_rest.filter(|v| !v.trim().is_empty()), spool) {
        (Some(rest), _) => Ok(std::sync::Arc::new(RestSubmitter::new(
            RestEndpoint::parse(rest)?,
            timeout,
            policy,
        )?)),
        (None, Some(dir)) => Ok(std::sync::Arc::new(SpoolSubmitter::new(dir)?)),
        (None, None) => Err(KcidbError::Config(
            "nowhere to send: set KCIDB_REST=https://<token>@<host>/ or give a spool directory"
                .into(),
        )),
    }
}

/// One object that failed validation: which node it came from, and why.
#[derive(Debug, Clone)]
pub struct InvalidObject {
    /// The object's KCIDB id.
    pub id: String,
    /// The document list it belongs to (`builds`, ...).
    pub list: &'static str,
    /// The nodes it was made from.
    pub nodes: Vec<ObjectId>,
    /// What is wrong.
    pub errors: Vec<FieldError>,
}

/// A document of the valid objects, and the invalid ones left out.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The valid objects.
    pub document: Document,
    /// For each object in the document (in list order: checkouts, builds, tests, ...), the
    /// nodes it came from.
    pub sources: Vec<Vec<ObjectId>>,
    /// The objects left out.
    pub invalid: Vec<InvalidObject>,
}

/// Validates each object (null-free JSON against schema v5.3) and puts the valid ones into one
/// document; an invalid object is set aside with its errors, so it never fails the others.
pub fn prepare(objects: impl IntoIterator<Item = (Object, Vec<ObjectId>)>) -> Prepared {
    let mut out = Prepared::default();
    let mut valid: Vec<(Object, Vec<ObjectId>)> = Vec::new();
    for (object, nodes) in objects {
        let errors = validate_object(object.object_type(), &object.to_value());
        if errors.is_empty() {
            valid.push((object, nodes));
        } else {
            out.invalid.push(InvalidObject {
                id: object.id().to_owned(),
                list: object.object_type().list_name(),
                nodes,
                errors,
            });
        }
    }
    valid.sort_by_key(|(o, _)| o.object_type());
    for (object, nodes) in valid {
        out.document.push(object);
        out.sources.push(nodes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for _ in 0..50 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d2 = p.delay(2);
            assert!(d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200));
            let d4 = p.delay(4);
            assert!(d4 >= Duration::from_millis(175) && d4 <= Duration::from_millis(350));
        }
        assert!(p.delay(1000) <= Duration::from_millis(350));
    }

    #[test]
    fn invalid_objects_are_set_aside() {
        use objects::{Build, Checkout};
        let id = ObjectId::new();
        let prepared = prepare([
            (
                Object::Build(Build {
                    id: "maestro:b".into(),
                    checkout_id: "maestro:c".into(),
                    origin: "maestro".into(),
                    architecture: Some("X86-64".into()),
                    ..Build::default()
                }),
                vec![id],
            ),
            (
                Object::Checkout(Checkout {
                    id: "maestro:c".into(),
                    origin: "maestro".into(),
                    ..Checkout::default()
                }),
                vec![id],
            ),
        ]);
        assert_eq!(prepared.document.checkouts.len(), 1);
        assert!(prepared.document.builds.is_empty());
        assert_eq!(prepared.invalid.len(), 1);
        assert_eq!(prepared.invalid[0].errors[0].field, "architecture");
        assert_eq!(prepared.sources, vec![vec![id]]);
    }
}
