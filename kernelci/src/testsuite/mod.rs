//! Conformance suites and test peers (feature `testsuite`).
//!
//! - [`peers`]: the table of test peers ([`peers::PEERS`]: what fails a test when missing,
//!   how to install it, `KCI_ALLOW_MISSING`), and real services (Redis, sshd, an SMTP server,
//!   ...) started on free loopback ports for tests and stopped by pid when dropped.
//! - [`sshd`] (feature `ssh`): a real OpenSSH daemon with generated keys.
//! - [`redis`]: a real `redis-server` that tests can kill and restart.
//! - [`haproxy`]: a real HAProxy balancing every request round robin over server replicas.
//! - [`smtp`]: a real SMTP server (aiosmtpd) whose received messages tests can read.
//! - [`s3`] (feature `s3`): moto, an S3-compatible server; [`azure`] (feature `azure`):
//!   Azurite, the Azure Blob emulator; [`cloud`]: what their tests share and a fault-injecting
//!   proxy; [`relay`]: a TCP relay that can cut an existing server off (`KCI_MONGO_URI`).
//! - The conformance suites, one per trait, that every implementation runs:
//!   [`store`] (`NodeStore`, `UserStore`, `KvStore`, `EventLog`, `TelemetryStore`),
//!   [`bus`] (`EventBus`), [`storage`] (`Storage`).
//!
//! Third-party implementations of the traits can run the same suites from their own tests.

#[cfg(feature = "azure")]
pub mod azure;
pub mod bus;
#[cfg(any(feature = "s3", feature = "azure"))]
pub mod cloud;
pub mod docker;
pub mod haproxy;
#[cfg(feature = "mongodb")]
pub mod mongo;
pub mod peers;
pub mod redis;
pub mod relay;
#[cfg(feature = "s3")]
pub mod s3;
pub mod smtp;
#[cfg(feature = "ssh")]
pub mod sshd;
pub mod storage;
pub mod store;
