//! The string formats KCIDB's schema checks with `jsonschema`'s format checker: `date-time`
//! (`rfc3339-validator`) and `uri` (`rfc3987`, rule `URI`), written in Rust to accept exactly
//! what they accept (`tests/kcidb_mapping.rs` compares both on tricky values).

/// RFC 3339 `date-time`, as `rfc3339-validator` (used by jsonschema) checks it: `T` and `Z`
/// upper case, seconds required, an offset required, no leap second, a real calendar day.
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|d| d.iter().fold(0u32, |acc, x| acc * 10 + u32::from(x - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return false;
    }
    if b[16] != b':' {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    if year == 0 || !(1..=12).contains(&month) || hour > 23 || min > 59 || sec > 59 {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let max_day = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=max_day).contains(&day) {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    if rest == "Z" {
        return true;
    }
    let r = rest.as_bytes();
    if r.len() != 6 || !matches!(r[0], b'+' | b'-') || r[3] != b':' {
        return false;
    }
    let two = |i: usize| {
        r.get(i..i + 2)
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|d| u32::from(d[0] - b'0') * 10 + u32::from(d[1] - b'0'))
    };
    matches!((two(1), two(4)), (Some(h), Some(m)) if h <= 23 && m <= 59)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(c: u8) -> bool {
    matches!(
        c,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Whether `s` is made of unreserved, sub-delims, `extra` characters and `%XX` escapes.
fn uri_chars(s: &str, extra: &[u8]) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
            {
                i += 3;
                continue;
            }
            return false;
        }
        if !(is_unreserved(c) || is_sub_delim(c) || extra.contains(&c)) {
            return false;
        }
        i += 1;
    }
    true
}

fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return false;
        };
        if let Some(future) = inner.strip_prefix(['v', 'V']) {
            // IPvFuture: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
            return match future.split_once('.') {
                Some((ver, rest)) => {
                    !ver.is_empty()
                        && ver.bytes().all(|c| c.is_ascii_hexdigit())
                        && !rest.is_empty()
                        && rest
                            .bytes()
                            .all(|c| is_unreserved(c) || is_sub_delim(c) || c == b':')
                }
                None => false,
            };
        }
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    uri_chars(host, &[])
}

/// An absolute URI per RFC 3986 (`scheme ":" hier-part [ "?" query ] [ "#" fragment ]`), as
/// `rfc3987.parse(s, rule="URI")` (used by jsonschema's `uri` format) checks it: ASCII only,
/// no spaces, escapes well formed, a valid authority when `//` follows the scheme.
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let sb = scheme.as_bytes();
    if sb.is_empty()
        || !sb[0].is_ascii_alphabetic()
        || !sb
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        return false;
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (hier, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    if let Some(f) = fragment
        && !uri_chars(f, b":@/?")
    {
        return false;
    }
    if let Some(q) = query
        && !uri_chars(q, b":@/?")
    {
        return false;
    }
    let path = if let Some(after) = hier.strip_prefix("//") {
        let (authority, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        let host_port = match authority.rsplit_once('@') {
            Some((userinfo, hp)) => {
                if !uri_chars(userinfo, b":") {
                    return false;
                }
                hp
            }
            None => authority,
        };
        let (host, port) = if host_port.starts_with('[') {
            match host_port.find(']') {
                Some(i) => {
                    let (h, p) = host_port.split_at(i + 1);
                    match p.strip_prefix(':') {
                        Some(port) => (h, Some(port)),
                        None if p.is_empty() => (h, None),
                        None => return false,
                    }
                }
                None => return false,
            }
        } else {
            match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        if !is_host(host) || port.is_some_and(|p| !p.bytes().all(|c| c.is_ascii_digit())) {
            return false;
        }
        path
    } else {
        if hier.starts_with("//") {
            return false;
        }
        hier
    };
    path.split('/').all(|segment| uri_chars(segment, b":@"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_need_an_offset_and_a_real_day() {
        for ok in [
            "2026-01-02T03:04:05+00:00",
            "2026-01-02T03:04:05.123000+00:00",
            "2024-02-29T23:59:59Z",
            "2026-12-31T00:00:00-11:30",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in [
            "2026-01-02T03:04:05.123456",
            "2026-01-02 03:04:05+00:00",
            "2026-01-02t03:04:05Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-02T24:00:00Z",
            "2026-01-02T03:04:60Z",
            "2026-01-02T03:04:05.+00:00",
            "2026-01-02T03:04:05+0000",
            "0000-01-01T00:00:00Z",
            "2026-01-02T03:04:05+00:00\n",
            "",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
    }

    #[test]
    fn uris_follow_rfc_3986() {
        for ok in [
            "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
            "http://127.0.0.1:8001/storage/kbuild-x86/build.log?x=1#end",
            "file:///tmp/linux",
            "mailto:a@b.c",
            "https://[::1]:80/a%20b",
            "urn:isbn:0451450523",
        ] {
            assert!(is_uri(ok), "{ok}");
        }
        for bad in [
            "not a url",
            "/relative/path",
            "https://host/a b",
            "https://host:80x/",
            "https://ho st/",
            "https://host/%zz",
            "1http://host/",
            "https://[::zz]/",
            "https://host/é",
            "",
        ] {
            assert!(!is_uri(bad), "{bad}");
        }
    }
}
