//! Randomness, in one place: every random value of the library comes from here (the
//! operating system's generator, through `getrandom`).
//!
//! - [`bytes`], [`fill`], [`hex`]: fallible — use them for anything secret (tokens, keys,
//!   passwords): when the system has no entropy source they fail instead of weakening.
//! - [`below`]: a uniform index (scheduler's random runtime pick).
//! - [`unique_bytes`], [`unique_hex`]: infallible ids and names that only need to be unique (temporary files, work
//!   directories); without an entropy source it mixes the time, the process id and a counter.
//!   Never for secrets.
//!
//! ```
//! let token = kernelci::random::hex(16).expect("entropy");
//! assert_eq!(token.len(), 32);
//! assert!(kernelci::random::below(6).expect("entropy") < 6);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ErrorKind;

/// The system has no usable entropy source.
#[derive(Debug, thiserror::Error)]
#[error("no random numbers: {0}")]
pub struct RandomError(getrandom::Error);

impl RandomError {
    /// The kind of error ([`ErrorKind::Unavailable`]).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

/// Fills `buf` with random bytes from the operating system.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(RandomError)
}

/// `n` random bytes.
pub fn bytes(n: usize) -> Result<Vec<u8>, RandomError> {
    let mut buf = vec![0u8; n];
    fill(&mut buf)?;
    Ok(buf)
}

/// `n` random bytes as `2 * n` lowercase hex digits.
pub fn hex(n: usize) -> Result<String, RandomError> {
    bytes(n).map(hex::encode)
}

/// A uniform random number in `0..n` (`0` when `n` is 0 or 1).
pub fn below(n: u64) -> Result<u64, RandomError> {
    if n <= 1 {
        return Ok(0);
    }
    // Rejection sampling: values in the last partial block would favour small numbers.
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let mut b = [0u8; 8];
        fill(&mut b)?;
        let v = u64::from_le_bytes(b);
        if v < zone {
            return Ok(v % n);
        }
    }
}

/// `n` bytes for an id that must be unique, not secret: random when the system can give
/// randomness, else made of the time, the process id and a process-wide counter.
pub fn unique_bytes(n: usize) -> Vec<u8> {
    if let Ok(b) = bytes(n) {
        return b;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mixed = [
        nanos,
        u64::from(std::process::id()),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    ];
    let seed: Vec<u8> = mixed.iter().flat_map(|v| v.to_le_bytes()).collect();
    (0..n)
        .map(|i| seed[i % seed.len()] ^ (i / seed.len()) as u8)
        .collect()
}

/// [`unique_bytes`] as `2 * n` hex digits, for temporary names and work directories.
pub fn unique_hex(n: usize) -> String {
    hex::encode(unique_bytes(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_has_the_asked_length_and_differs() {
        let a = hex(12).expect("entropy");
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, hex(12).expect("entropy"));
        assert_eq!(bytes(5).expect("entropy").len(), 5);
        assert_eq!(unique_hex(8).len(), 16);
    }

    #[test]
    fn below_stays_in_range_and_reaches_every_value() {
        assert_eq!(below(0).expect("entropy"), 0);
        assert_eq!(below(1).expect("entropy"), 0);
        let mut seen = [false; 3];
        for _ in 0..300 {
            let v = below(3).expect("entropy");
            assert!(v < 3);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }
}
