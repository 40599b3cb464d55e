//! Crash safety of the pipeline services (issue 11, second half) — THE HOOK.
//!
//! The pipeline service binaries (`kernelci-bins`: trigger, tarball, scheduler, timeout, ...)
//! are being written in parallel; when they land, each gets a test here built the same way as
//! `reliability_crash.rs`:
//!
//! 1. start the real API server ([`reliability_support::ServerProc`], embedded default) and
//!    the service binary as a child process ([`reliability_support::ChildProc`]), pointed at
//!    the server with an admin token and a durable subscriber id;
//! 2. create the nodes whose events the service handles (e.g. `checkout` nodes for tarball,
//!    `available` checkouts for the scheduler) while `kill -9`-ing the service mid-event
//!    (right after it took the event: poll `/stats/subscriptions` or its log);
//! 3. restart it and wait until it caught up (its subscriber position reaches the log end);
//! 4. assert at-least-once processing (every event handled: the expected child nodes or
//!    state changes exist) and idempotency (no duplicate child nodes: one per
//!    parent+job+platform+retry key, DESIGN §2).
//!
//! Not built yet: no such test exists for any service. This file only checks that the
//! child-process helper those tests will use kills and restarts a process by pid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reliability_support;

use reliability_support::ChildProc;

#[test]
fn child_process_helper_kills_and_restarts() {
    let mut p = ChildProc::start("sleep", &["30"], &[]);
    let first = p.pid().unwrap();
    assert!(p.is_running());
    p.kill9();
    assert!(!p.is_running());
    p.restart();
    let second = p.pid().unwrap();
    assert_ne!(first, second);
    assert!(p.is_running());
}
