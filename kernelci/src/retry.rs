//! One retry policy for the whole library: exponential backoff with jitter, on the `backon`
//! crate. The API client, the HTTP storage, the Redis bus, the event listener and the service
//! event loop all retry through it, so every retry loop spreads out its attempts (no
//! thundering herd of clients reconnecting in step after a server restart).
//!
//! Each delay is the exponential value (`first`, doubled after each failure, capped at `max`)
//! plus a random jitter of up to the same amount, so a delay lies in `[d, 2d)`.
//!
//! - [`Backoff::retry`] runs an async operation until it succeeds, fails with an error that is
//!   not worth retrying, or runs out of attempts;
//! - [`Backoff::delays`] gives the delays one by one, for loops that wait in their own way
//!   (interruptible by a shutdown signal, reset after a success).
//!
//! ```
//! # async fn demo() {
//! use std::time::Duration;
//! use kernelci::retry::Backoff;
//!
//! let policy = Backoff::new(Duration::from_millis(1), Duration::from_millis(4)).attempts(3);
//! let mut calls = 0;
//! let out: Result<u32, &str> = policy
//!     .retry(|| { calls += 1; let n = calls; async move { if n < 3 { Err("busy") } else { Ok(n) } } },
//!            |_e| true, |_e, _delay| {})
//!     .await;
//! assert_eq!(out, Ok(3));
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

/// A retry policy: the first delay, the largest delay and how many attempts in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure (before jitter).
    pub first: Duration,
    /// The largest delay (before jitter).
    pub max: Duration,
    /// How many attempts in all, the first included; `None` retries forever.
    pub attempts: Option<u32>,
}

impl Backoff {
    /// Retries forever, waiting `first`, then twice as long each time up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            attempts: None,
        }
    }

    /// At most `attempts` attempts in all (the first included; 0 counts as 1).
    pub const fn attempts(mut self, attempts: u32) -> Backoff {
        self.attempts = Some(attempts);
        self
    }

    fn builder(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(self.first)
            .with_max_delay(self.max.max(self.first));
        match self.attempts {
            Some(n) => b.with_max_times(n.saturating_sub(1) as usize),
            None => b.without_max_times(),
        }
    }

    /// The delays between attempts, jittered; ends after `attempts - 1` delays (never, when
    /// retrying forever). Start a new iterator to begin again from `first`.
    pub fn delays(&self) -> Delays {
        Delays(self.builder().build())
    }

    /// Runs `op` until it succeeds; an error for which `retryable` says `false` is returned at
    /// once, and the last error when the attempts are used up. `notify` sees each error that
    /// will be retried and the delay before the next attempt (for logs).
    pub async fn retry<T, E, F, Fut>(
        &self,
        op: F,
        retryable: impl FnMut(&E) -> bool,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        op.retry(self.builder())
            .sleep(tokio::time::sleep)
            .when(retryable)
            .notify(notify)
            .await
    }
}

/// The delays of a [`Backoff`], one per failed attempt.
#[derive(Debug)]
pub struct Delays(<ExponentialBuilder as BackoffBuilder>::Backoff);

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.0.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_below_twice_the_value() {
        let policy = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = policy.delays().take(6).collect();
        let base = [100u64, 200, 400, 400, 400, 400];
        for (d, b) in delays.iter().zip(base) {
            let b = Duration::from_millis(b);
            assert!(*d >= b && *d < b * 2, "{d:?} not in [{b:?}, {:?})", b * 2);
        }
        // Jitter: twenty waits of a forever policy are not all the bare exponential values.
        let jittered = policy
            .delays()
            .take(20)
            .filter(|d| d.subsec_millis() % 100 != 0 || d.as_nanos() % 1_000_000 != 0)
            .count();
        assert!(jittered > 0);
    }

    #[test]
    fn attempts_bound_the_delays() {
        let policy = Backoff::new(Duration::from_millis(1), Duration::from_millis(2)).attempts(4);
        assert_eq!(policy.delays().count(), 3);
        assert_eq!(policy.attempts(1).delays().count(), 0);
        assert_eq!(policy.attempts(0).delays().count(), 0);
    }

    #[tokio::test]
    async fn retry_stops_on_success_on_a_fatal_error_and_after_the_attempts() {
        let policy = Backoff::new(Duration::from_millis(1), Duration::from_millis(2)).attempts(3);
        let mut calls = 0;
        let mut notified = 0;
        let r: Result<(), &str> = policy
            .retry(
                || {
                    calls += 1;
                    async { Err("down") }
                },
                |_| true,
                |_, _| notified += 1,
            )
            .await;
        assert_eq!((r, calls, notified), (Err("down"), 3, 2));
        let mut calls = 0;
        let r: Result<(), &str> = policy
            .retry(
                || {
                    calls += 1;
                    async { Err("bad request") }
                },
                |e| *e != "bad request",
                |_, _| {},
            )
            .await;
        assert_eq!((r, calls), (Err("bad request"), 1));
    }
}
