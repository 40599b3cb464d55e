//! Naive-UTC timestamps, written the way upstream's Python writes them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, in UTC, without a zone on the wire.
///
/// Written like Python's `datetime.isoformat()` on a naive value: `2024-02-01T09:58:28.479000`,
/// or `2024-02-01T09:58:28` when the microseconds are zero. Read like Python 3.11's
/// `datetime.fromisoformat`: a date alone, `T` or a space between date and time, 1 to 6 (or
/// more, truncated) fraction digits, and an optional `Z` or `±HH:MM` offset, which is converted
/// to UTC. Precision is microseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(NaiveDateTime);

/// Why a string is not a timestamp. The text matches Python's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid isoformat string: '{0}'")]
pub struct InvalidTimestamp(pub String);

impl Timestamp {
    /// The current time, truncated to microseconds.
    pub fn now() -> Self {
        Self::from_naive(Utc::now().naive_utc())
    }

    /// From a naive UTC date-time (truncated to microseconds).
    pub fn from_naive(dt: NaiveDateTime) -> Self {
        let micros = dt.and_utc().timestamp_subsec_micros();
        let trunc = dt.with_nanosecond_micros(micros);
        Timestamp(trunc)
    }

    /// From microseconds since the Unix epoch.
    pub fn from_micros(micros: i64) -> Option<Self> {
        DateTime::from_timestamp_micros(micros).map(|d| Timestamp(d.naive_utc()))
    }

    /// Microseconds since the Unix epoch.
    pub fn micros(&self) -> i64 {
        self.0.and_utc().timestamp_micros()
    }

    /// This time without its sub-millisecond digits (what a BSON datetime keeps).
    pub fn truncate_to_millis(&self) -> Self {
        Self::from_micros(self.micros().div_euclid(1000) * 1000).unwrap_or(*self)
    }

    /// The naive UTC value.
    pub fn naive(&self) -> NaiveDateTime {
        self.0
    }

    /// This time plus a number of seconds (saturating at the representable range).
    pub fn plus_secs(&self, secs: i64) -> Self {
        let delta = TimeDelta::try_seconds(secs).unwrap_or(TimeDelta::MAX);
        Timestamp(self.0.checked_add_signed(delta).unwrap_or(self.0))
    }

    /// Parses like Python's `datetime.fromisoformat` (see the type's documentation).
    pub fn parse(s: &str) -> Result<Self, InvalidTimestamp> {
        parse_iso(s).ok_or_else(|| InvalidTimestamp(s.to_owned()))
    }
}

trait MicrosTrunc {
    fn with_nanosecond_micros(self, micros: u32) -> Self;
}

impl MicrosTrunc for NaiveDateTime {
    fn with_nanosecond_micros(self, micros: u32) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(micros * 1000).unwrap_or(self)
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_iso(s: &str) -> Option<Timestamp> {
    let s = s.trim_end();
    if s.len() < 10 || !s.is_char_boundary(10) {
        return None;
    }
    let (date_part, rest) = s.split_at(10);
    let b = date_part.as_bytes();
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        digits(&date_part[..4])? as i32,
        digits(&date_part[5..7])?,
        digits(&date_part[8..10])?,
    )?;
    if rest.is_empty() {
        return Some(Timestamp(date.and_hms_opt(0, 0, 0)?));
    }
    let mut chars = rest.chars();
    let sep = chars.next()?;
    if sep != 'T' && sep != ' ' {
        return None;
    }
    let rest = chars.as_str();
    // Split off the offset: 'Z', '+HH:MM[:SS]' or '-HH:MM[:SS]'.
    let (time_part, offset_secs) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0i64)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let off = &off[1..];
        let parts: Vec<&str> = off.split(':').collect();
        let (h, m, sec) = match parts.as_slice() {
            // `get`: a multi-byte character across the middle is no offset (not a panic).
            [hm] if hm.len() == 4 => (digits(hm.get(..2)?)?, digits(hm.get(2..)?)?, 0),
            [h] if h.len() == 2 => (digits(h)?, 0, 0),
            [h, m] => (digits(h)?, digits(m)?, 0),
            [h, m, sec] => (digits(h)?, digits(m)?, digits(sec.split('.').next()?)?),
            _ => return None,
        };
        if h > 23 || m > 59 || sec > 59 {
            return None;
        }
        (t, sign * i64::from(h * 3600 + m * 60 + sec))
    } else {
        (rest, 0)
    };
    let (hms, frac) = match time_part.split_once(['.', ',']) {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (time_part, None),
    };
    let hms_parts: Vec<&str> = hms.split(':').collect();
    let (h, m, sec) = match hms_parts.as_slice() {
        [h] if h.len() == 2 => (digits(h)?, 0, 0),
        [h, m] if h.len() == 2 && m.len() == 2 => (digits(h)?, digits(m)?, 0),
        [h, m, sec] if h.len() == 2 && m.len() == 2 && sec.len() == 2 => {
            (digits(h)?, digits(m)?, digits(sec)?)
        }
        _ => return None,
    };
    let micros = match frac {
        None => 0,
        Some(f) => {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) || hms_parts.len() != 3 {
                return None;
            }
            let mut padded: String = f.chars().take(6).collect();
            while padded.len() < 6 {
                padded.push('0');
            }
            padded.parse::<u32>().ok()?
        }
    };
    let naive = date.and_hms_micro_opt(h, m, sec, micros)?;
    let utc = naive.checked_sub_signed(TimeDelta::try_seconds(offset_secs)?)?;
    Some(Timestamp(utc))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::Timelike;
        let micros = self.0.nanosecond() / 1000;
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S"))?;
        if micros != 0 {
            write!(f, ".{micros:06}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = InvalidTimestamp;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 8601 date-time string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An ISO 8601 time in UTC (upstream writes it without an offset)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multibyte_offset_is_an_error_not_a_panic() {
        assert!(Timestamp::parse("2024-01-01T00:00:00+1\u{e9}1").is_err());
        assert!(Timestamp::parse("2024-01-01T00:00:00-\u{e9}\u{e9}").is_err());
        assert!(Timestamp::parse("2024-01-01T00:00:00+0130").is_ok());
    }

    #[test]
    fn writes_like_python_isoformat() {
        let t = Timestamp::parse("2024-02-01T09:58:28.479000").unwrap();
        assert_eq!(t.to_string(), "2024-02-01T09:58:28.479000");
        let t = Timestamp::parse("2024-02-01T09:58:28").unwrap();
        assert_eq!(t.to_string(), "2024-02-01T09:58:28");
        let t = Timestamp::parse("2024-02-01T09:58:28.000001").unwrap();
        assert_eq!(t.to_string(), "2024-02-01T09:58:28.000001");
    }

    #[test]
    fn reads_like_python_fromisoformat() {
        let cases = [
            ("2024-11-01", "2024-11-01T00:00:00"),
            ("2024-11-01T10:00:00", "2024-11-01T10:00:00"),
            ("2024-11-01 10:00", "2024-11-01T10:00:00"),
            ("2024-11-01T10:00:00Z", "2024-11-01T10:00:00"),
            ("2024-11-01T10:00:00+00:00", "2024-11-01T10:00:00"),
            ("2024-11-01T10:00:00+02:00", "2024-11-01T08:00:00"),
            ("2024-11-01T23:30:00-01:00", "2024-11-02T00:30:00"),
            ("2024-11-01T10:00:00.5", "2024-11-01T10:00:00.500000"),
            ("2024-11-01T10:00:00.1234567", "2024-11-01T10:00:00.123456"),
        ];
        for (input, want) in cases {
            assert_eq!(
                Timestamp::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_values_with_python_message() {
        for bad in [
            "bad",
            "",
            "1700000000",
            "2024-13-01",
            "2024-11-01T25:00:00",
            "2024-11-01X10",
        ] {
            let err = Timestamp::parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("Invalid isoformat string: '{bad}'")
            );
        }
    }

    #[test]
    fn order_matches_time_order() {
        let a = Timestamp::parse("2024-01-01T00:00:00").unwrap();
        let b = Timestamp::parse("2024-01-01T00:00:00.5").unwrap();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(Timestamp::from_micros(a.micros()).unwrap(), a);
        assert_eq!(a.plus_secs(3600).to_string(), "2024-01-01T01:00:00");
    }
}
