//! Per-client rate limits for the routes a guesser or a mail bomber would hammer: failed
//! logins (and failed `update-password` checks) and `forgot-password`.
//!
//! A token bucket per client address ([`crate::proxy::client_ip`]: the socket peer unless it
//! is a trusted proxy; IPv6 clients by their /64, the block one host usually has): `count`
//! tokens that refill evenly over `period`. An attempt takes a token; an empty bucket is a
//! 429 with `Retry-After`. The buckets live in this process (each replica counts its own).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many clients are tracked at most; beyond, idle (full) buckets are dropped first, and
/// when every bucket is busy the table starts over (logged).
pub const MAX_CLIENTS: usize = 100_000;

/// A rate: `count` attempts per `period`, in bursts of up to `count`; `count` 0 is no limit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Attempts per period (the bucket size); 0 turns the limit off.
    pub count: u32,
    /// The period over which `count` tokens come back.
    pub period: Duration,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        count: 0,
        period: Duration::from_secs(60),
    };
}

impl FromStr for Rate {
    type Err = String;

    /// `N/UNIT` with UNIT one of `s`, `min`, `hour`, `day` (`10/min`, `20/hour`); `0` or
    /// `off`: no limit.
    fn from_str(s: &str) -> Result<Rate, String> {
        let s = s.trim();
        if s == "0" || s.eq_ignore_ascii_case("off") {
            return Ok(Rate::UNLIMITED);
        }
        let bad = || format!("'{s}' is not a rate such as 10/min, 20/hour or off");
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        Ok(Rate {
            count,
            period: Duration::from_secs(secs),
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("off");
        }
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "hour",
            86_400 => "day",
            other => return write!(f, "{}/{other}s", self.count),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by client address.
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// The bucket key of a client: IPv6 addresses by their /64; unknown clients (no socket) share
/// one bucket.
fn key(ip: Option<IpAddr>) -> IpAddr {
    match ip.map(|i| i.to_canonical()) {
        Some(IpAddr::V6(v6)) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        Some(v4) => v4,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

impl RateLimiter {
    /// A limiter allowing `rate` per client.
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let per_sec = f64::from(self.rate.count) / self.rate.period.as_secs_f64().max(1e-3);
        let gained = now.saturating_duration_since(b.at).as_secs_f64() * per_sec;
        b.tokens = (b.tokens + gained).min(f64::from(self.rate.count));
        b.at = now;
    }

    /// Takes one attempt for client `ip`: `Err(wait)` when its bucket is empty, with how long
    /// until the next attempt is allowed.
    pub fn take(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        if self.rate.count == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let full = f64::from(self.rate.count);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&key(ip)) {
            buckets.retain(|_, b| {
                self.refill(b, now);
                b.tokens < full
            });
            if buckets.len() >= MAX_CLIENTS {
                tracing::warn!(
                    clients = buckets.len(),
                    "rate limiter: every tracked client is busy; starting over"
                );
                buckets.clear();
            }
        }
        let b = buckets.entry(key(ip)).or_insert(Bucket {
            tokens: full,
            at: now,
        });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let per_sec = full / self.rate.period.as_secs_f64().max(1e-3);
        Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
    }

    /// Gives back an attempt taken with [`RateLimiter::take`] that turned out not to count
    /// (a successful login).
    pub fn give_back(&self, ip: Option<IpAddr>) {
        if self.rate.count == 0 {
            return;
        }
        if let Ok(mut buckets) = self.buckets.lock()
            && let Some(b) = buckets.get_mut(&key(ip))
        {
            b.tokens = (b.tokens + 1.0).min(f64::from(self.rate.count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "10/min".parse().expect("rate");
        assert_eq!((r.count, r.period), (10, Duration::from_secs(60)));
        assert_eq!(r.to_string(), "10/min");
        assert_eq!(
            "20/hour".parse::<Rate>().map(|r| r.to_string()),
            Ok("20/hour".into())
        );
        assert_eq!("off".parse::<Rate>(), Ok(Rate::UNLIMITED));
        assert_eq!("0".parse::<Rate>().map(|r| r.count), Ok(0));
        for bad in ["10", "x/min", "10/fortnight", "-1/min", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_empties_refuses_and_gives_back() {
        let limiter = RateLimiter::new("3/hour".parse().expect("rate"));
        let a = Some("203.0.113.1".parse().expect("ip"));
        let b = Some("203.0.113.2".parse().expect("ip"));
        for _ in 0..3 {
            assert!(limiter.take(a).is_ok());
        }
        let wait = limiter.take(a).expect_err("the fourth attempt");
        // One token comes back every 20 minutes.
        assert!(
            wait > Duration::from_secs(1100) && wait <= Duration::from_secs(1200),
            "{wait:?}"
        );
        assert!(limiter.take(b).is_ok(), "another client has its own bucket");
        limiter.give_back(a);
        assert!(
            limiter.take(a).is_ok(),
            "a given-back attempt can be used again"
        );
        // IPv6 clients count by /64.
        let v6a = Some("2001:db8::1".parse().expect("ip"));
        let v6b = Some("2001:db8::ffff:1".parse().expect("ip"));
        for _ in 0..3 {
            assert!(limiter.take(v6a).is_ok());
        }
        assert!(limiter.take(v6b).is_err(), "same /64");
        let unlimited = RateLimiter::new(Rate::UNLIMITED);
        for _ in 0..1000 {
            assert!(unlimited.take(a).is_ok());
        }
    }
}
