//! Fault injection for crash-safety tests (cargo feature `fault-injection`).
//!
//! The services call [`crash_point`] at the steps where a crash matters. Built with the
//! `fault-injection` feature, a step named by `$KCI_TEST_CRASH_AT` freezes the task there so a
//! test can `kill -9` the process at exactly that point (`tests/reliability_services.rs`).
//! Without the feature (every release build) [`crash_point`] is an empty inline function: the
//! binary reads no test variable and carries none of this code.

/// Names the step at which a service stops dead, for crash-safety tests: `$KCI_TEST_CRASH_AT`
/// (see [`crash_point`]). Read only by builds with the `fault-injection` feature.
pub const CRASH_AT_ENV: &str = "KCI_TEST_CRASH_AT";

/// A file [`crash_point`] appends the step name to when it is reached, so a test knows when to
/// `kill -9` the service.
pub const CRASH_MARKER_ENV: &str = "KCI_TEST_CRASH_MARKER";

/// The steps a service can be stopped at by [`CRASH_AT_ENV`]:
///
/// - `event-received`: the event loop took an accepted event, before its handler ran;
/// - `event-handled`: the handler succeeded, before the acknowledgement;
/// - `job-node-created` (scheduler): the job node exists, the job is not submitted yet;
/// - `job-submitted` (scheduler): the job is submitted, the node does not say so yet;
/// - `regression-created` (regression): the regression node exists, the failing node does
///   not point at it yet;
/// - `checkout-created` (trigger): a checkout node was created, the pass is not over;
/// - `node-updated` (timeout): the first node of a pass was moved, the pass is not over.
pub const CRASH_STEPS: [&str; 7] = [
    "event-received",
    "event-handled",
    "job-node-created",
    "job-submitted",
    "regression-created",
    "checkout-created",
    "node-updated",
];

/// Whether this build carries the fault-injection points (the `fault-injection` feature).
pub const ENABLED: bool = cfg!(feature = "fault-injection");

#[cfg(feature = "fault-injection")]
fn crash_step() -> Option<&'static str> {
    static STEP: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    STEP.get_or_init(|| std::env::var(CRASH_AT_ENV).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// The crash-test hook. With the `fault-injection` feature, when `$KCI_TEST_CRASH_AT` names
/// `step` (one of [`CRASH_STEPS`]), logs `crash point reached`, appends `step` to the file
/// `$KCI_TEST_CRASH_MARKER` (when set) and never returns, so the calling task stays frozen at
/// that exact point until the test kills the process with SIGKILL. Otherwise it returns at
/// once.
#[cfg(feature = "fault-injection")]
pub async fn crash_point(step: &str) {
    if crash_step() != Some(step) {
        return;
    }
    tracing::error!(step, "crash point reached; waiting to be killed");
    if let Some(path) = std::env::var_os(CRASH_MARKER_ENV) {
        let line = format!("{step}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write the crash marker");
        }
    }
    std::future::pending::<()>().await;
}

/// The crash-test hook of release builds: does nothing (the `fault-injection` feature is off).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub async fn crash_point(_step: &str) {}
