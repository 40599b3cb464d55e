//! Conformance suites and test peers (feature `testsuite`).
//!
//! - [`peers`]: start real services (Redis, sshd, an SMTP server, ...) on free loopback ports
//!   for tests, and stop them by pid when dropped.
//! - [`redis`]: a real `redis-server` that tests can kill and restart.
//! - [`bus`]: the conformance suite of [`crate::events::EventBus`].
//! - The conformance suites, one per trait, that every implementation runs (`store_suite`, ...).
//!
//! Third-party implementations of the traits can run the same suites from their own tests.

pub mod bus;
pub mod peers;
pub mod redis;
