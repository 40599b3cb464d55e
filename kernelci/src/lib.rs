//! # kernelci
//!
//! KernelCI in Rust, as a library. KernelCI tests the Linux kernel continuously: it notices new
//! revisions on kernel git trees, builds and tests them on runtimes, and keeps every result as a
//! tree of [`models::Node`]s behind a REST API with a pub/sub event feed.
//!
//! This crate holds the parts every KernelCI program shares:
//!
//! - [`models`]: the node, user and group models, with exactly the upstream JSON shapes;
//! - [`query`]: the `field__op=value` query language, parsed once into a typed [`query::Filter`]
//!   and evaluated the same way by every store;
//! - [`store`]: one trait per concern ([`store::NodeStore`], [`store::UserStore`],
//!   [`store::KvStore`], [`store::EventLog`], [`store::TelemetryStore`]; all five as
//!   [`store::Store`]) and their implementations ([`store::SqliteStore`] behind the default
//!   `sqlite` feature, `MongoStore` behind `mongodb`; `mockall` mocks behind `mock`);
//! - [`events`]: the CloudEvent envelope, node event payloads and the [`events::EventBus`]
//!   that wakes listeners ([`events::LocalBus`]; `RedisBus` behind the `redis` feature);
//! - [`storage`]: the [`storage::Storage`] trait for artifacts (tarballs, logs) and its
//!   backends: local directory, SSH (feature `ssh`), kernelci-storage HTTP (feature `client`);
//! - `client` (feature `client`): the typed API client and a reliable event `Listener`;
//! - [`config`]: `kernelci.toml` settings and the pipeline YAML configs, validated;
//! - [`runtime`]: the [`runtime::Runtime`] trait (shell; Docker, Kubernetes, LAVA behind
//!   features) and job templates;
//! - `git` (feature `git`): ls-remote, mirror, describe, kernel version, tarball;
//! - `pipeline` (feature `pipeline`): the services (trigger, tarball, scheduler, timeout,
//!   regressions, report, LAVA callback, job retry) and the job runner;
//! - [`random`]: every random value (tokens, names, picks) from one helper;
//! - [`retry`]: one retry policy with jittered exponential backoff (on `backon`);
//! - `kcidb` (feature `kcidb`): KCIDB objects, the node → KCIDB mapping, schema validation,
//!   the REST and spool submitters (the bridge service is in `pipeline`);
//! - [`report`]: the result report, rendered as upstream and sent over SMTP (feature `email`);
//! - [`testsuite`] (feature `testsuite`): the conformance suites third-party implementations run.
//!
//! Heavy backends sit behind cargo features, so the default build stays small.
//!
//! ```
//! use kernelci::models::Node;
//! use kernelci::query::Query;
//!
//! let node: Node = serde_json::from_str(r#"{"kind": "checkout", "name": "checkout",
//!     "path": ["checkout"], "state": "available"}"#).unwrap();
//! let query = Query::parse([("state", "available"), ("kind__in", "checkout,kbuild")]).unwrap();
//! assert!(query.filter.matches_node(&node));
//! ```

#![warn(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod error;
pub mod events;
#[cfg(feature = "git")]
pub mod git;
#[cfg(feature = "kcidb")]
pub mod kcidb;
pub mod models;
#[cfg(feature = "pipeline")]
pub mod pipeline;
pub mod query;
pub mod random;
pub mod report;
pub mod retry;
pub mod runtime;
pub mod storage;
pub mod store;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use error::ErrorKind;
