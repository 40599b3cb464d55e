//! Who is asking: the client's address and the URL it used, believing `Forwarded` and
//! `X-Forwarded-*` only from the reverse proxies the operator named (`--trusted-proxy`).
//!
//! Without trusted proxies (the default) the client is the socket peer and forwarded headers
//! are ignored, whoever sends them: any client can write them. With trusted proxies, the
//! `for=` chain is read from the right (the hop nearest to us) and the first address that is
//! not a trusted proxy is the client.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use warp::http::HeaderMap;

/// An address block, `10.0.0.0/8` or `fd00::/8`; a bare address is a block of one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = IpAddr::from_str(addr)
            .map_err(|_| format!("'{s}' is not an address block such as 10.0.0.0/8 or ::1"))?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn trusted(proxies: &[Cidr], ip: IpAddr) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The elements of every `Forwarded` header, in order (RFC 7239: comma-separated elements of
/// `;`-separated `key=value` pairs), each as its pairs with lower-case keys and unquoted
/// values.
fn forwarded_elements(headers: &HeaderMap) -> Vec<Vec<(String, String)>> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| {
                    (
                        k.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').into(),
                    )
                })
                .collect()
        })
        .collect()
}

/// A `for=` value as an address (`192.0.2.1`, `192.0.2.1:4711`, `"[2001:db8::1]:4711"`);
/// `None` for obfuscated or unknown nodes.
fn node_address(v: &str) -> Option<IpAddr> {
    let v = v.trim();
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']').and_then(|(a, _)| a.parse().ok());
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

/// The `for=` chain: from `Forwarded` when present, else `X-Forwarded-For`, oldest hop first.
fn for_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded = forwarded_elements(headers);
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .map(|e| {
                e.iter()
                    .find(|(k, _)| k == "for")
                    .and_then(|(_, v)| node_address(v))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(node_address)
        .collect()
}

/// The client's address: the socket `peer`, or, when the peer is a trusted proxy, the nearest
/// untrusted hop of the forwarded chain (the last trusted one when the chain ends or names an
/// unknown node). `None` when the peer is unknown (requests that did not come over a socket).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, proxies: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    if !trusted(proxies, peer) {
        return Some(peer);
    }
    let mut client = peer;
    for hop in for_chain(headers).into_iter().rev() {
        let Some(ip) = hop.map(|ip| ip.to_canonical()) else {
            break;
        };
        client = ip;
        if !trusted(proxies, ip) {
            break;
        }
    }
    Some(client)
}

/// Whether `host` can be a URL authority: a name, an IPv4 address or a bracketed IPv6
/// address, with an optional port; nothing that could end the authority.
fn is_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// The base URL the client used (`scheme://host`), for answers to that client only (never
/// for e-mails): the `Host` header, or, from a trusted proxy, the host and scheme the proxy
/// nearest to us recorded (`Forwarded` `host=`/`proto=`, else `X-Forwarded-Host`/`-Proto`).
pub fn request_base_url(peer: Option<IpAddr>, headers: &HeaderMap, proxies: &[Cidr]) -> String {
    let header = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .next_back()
            .map(str::to_owned)
    };
    let proto_ok = |p: &String| p == "http" || p == "https";
    if peer.is_some_and(|p| trusted(proxies, p.to_canonical())) {
        if let Some(last) = forwarded_elements(headers).pop() {
            let get = |k: &str| last.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if let Some(host) = get("host").filter(|h| is_authority(h)) {
                let proto = get("proto")
                    .filter(proto_ok)
                    .unwrap_or_else(|| "http".into());
                return format!("{proto}://{host}");
            }
        }
        if let Some(host) = header("x-forwarded-host").filter(|h| is_authority(h)) {
            let proto = header("x-forwarded-proto")
                .filter(proto_ok)
                .unwrap_or_else(|| "http".into());
            return format!("{proto}://{host}");
        }
    }
    let host = header("host")
        .filter(|h| is_authority(h))
        .unwrap_or_else(|| "localhost".into());
    format!("http://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn blocks_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains(ip("10.200.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped");
        let one: Cidr = "127.0.0.1".parse().expect("cidr");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        assert_eq!(v6.to_string(), "fd00::/8");
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "host.example",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let forged = headers(&[
            (
                "forwarded",
                "for=198.51.100.7;host=attacker.example;proto=https",
            ),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-host", "attacker.example"),
            ("host", "api.example.org"),
        ]);
        let peer = Some(ip("127.0.0.1"));
        // No trusted proxy: the peer, and its Host.
        assert_eq!(client_ip(peer, &forged, &[]), peer);
        assert_eq!(
            request_base_url(peer, &forged, &[]),
            "http://api.example.org"
        );
        // The peer is a trusted proxy: the chain is believed.
        let proxies = ["127.0.0.0/8".parse().expect("cidr")];
        assert_eq!(client_ip(peer, &forged, &proxies), Some(ip("198.51.100.7")));
        assert_eq!(
            request_base_url(peer, &forged, &proxies),
            "https://attacker.example"
        );
        // Unknown peer (no socket): no address.
        assert_eq!(client_ip(None, &forged, &proxies), None);
    }

    #[test]
    fn the_chain_is_read_from_the_nearest_hop() {
        let proxies: Vec<Cidr> = ["10.0.0.0/8".parse().expect("cidr")].into();
        let peer = Some(ip("10.0.0.2"));
        // A client-written first hop is not believed: the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.0.0.9")]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("203.0.113.5")));
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.9",
        )]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("2001:db8::7")));
        // An obfuscated hop stops the walk at the last trusted proxy.
        let h = headers(&[("forwarded", "for=203.0.113.5, for=_hidden, for=10.0.0.9")]);
        assert_eq!(client_ip(peer, &h, &proxies), Some(ip("10.0.0.9")));
        // No header: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &proxies), peer);
        // A host that could break out of the URL authority is ignored.
        let h = headers(&[("x-forwarded-host", "evil.example/x?"), ("host", "h:8001")]);
        assert_eq!(request_base_url(peer, &h, &proxies), "http://h:8001");
    }
}
