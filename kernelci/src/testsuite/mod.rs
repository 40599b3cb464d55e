//! Conformance suites and test peers (feature `testsuite`).
//!
//! - [`peers`]: start real services (Redis, sshd, an SMTP server, ...) on free loopback ports
//!   for tests, and stop them by pid when dropped.
//! - The conformance suites, one per trait, that every implementation runs (`store_suite`, ...).
//!
//! Third-party implementations of the traits can run the same suites from their own tests.

#[cfg(feature = "mongodb")]
pub mod mongo;
pub mod peers;
pub mod store;
