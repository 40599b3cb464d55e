//! Conformance suites and test peers (feature `testsuite`).
//!
//! - [`peers`]: start real services (Redis, sshd, an SMTP server, ...) on free loopback ports
//!   for tests, and stop them by pid when dropped.
//! - [`sshd`] (feature `ssh`): a real OpenSSH daemon with generated keys.
//! - [`redis`]: a real `redis-server` that tests can kill and restart.
//! - The conformance suites, one per trait, that every implementation runs:
//!   [`store`] (`NodeStore`), [`bus`] (`EventBus`), [`storage`] (`Storage`).
//!
//! Third-party implementations of the traits can run the same suites from their own tests.

pub mod bus;
pub mod docker;
#[cfg(feature = "mongodb")]
pub mod mongo;
pub mod peers;
pub mod redis;
#[cfg(feature = "ssh")]
pub mod sshd;
pub mod storage;
pub mod store;
