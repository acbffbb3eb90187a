//! Forwarding headers. certloop is the edge: a client's own `X-Forwarded-*`, `X-Real-IP` and
//! `Forwarded` headers are lies until proven otherwise, so they are replaced unless the peer
//! is a configured trusted proxy, in which case the peer's address is appended to the chain.

use std::net::IpAddr;

use certloop_acme::adapter::canonical_ip;
use hyper::header::HeaderName;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// An address range in CIDR form (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `addr` or `addr/prefix`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or a range like 10.0.0.0/8"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        // Peers are compared as IPv4 when they are IPv4-mapped, so ranges must be too.
        if let IpAddr::V6(v6) = network
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return match prefix.checked_sub(96) {
                Some(prefix) => Ok(Self {
                    network: IpAddr::V4(v4),
                    prefix,
                }),
                None => Err(format!(
                    "{text:?}: an IPv4-mapped range needs a prefix of at least 96"
                )),
            };
        }
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let (whole, bits) = (usize::from(prefix / 8), prefix % 8);
    net[..whole] == ip[..whole]
        && (bits == 0 || (net[whole] ^ ip[whole]) & (0xff << (8 - bits)) == 0)
}

/// The forwarding headers every request carries upstream.
pub(crate) const FORWARDING_NAMES: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REAL_IP,
    FORWARDED,
];

/// The forwarding headers a request from `peer` (as [`canonical_ip`] gives it) carries to the
/// upstream: each name with the one value that replaces the request's own lines of it. `host`
/// is the request's host (the `Host` header or the HTTP/2 authority); `present(name)` gives
/// the request's lines of `name`. A forwarding header the plan does not name is removed when
/// the peer is not trusted, and kept as it came when it is.
pub(crate) fn forwarding_plan<'a>(
    peer: IpAddr,
    peer_is_trusted: bool,
    host: Option<&str>,
    present: impl Fn(&HeaderName) -> Vec<&'a str>,
) -> Vec<(HeaderName, String)> {
    let peer_text = peer.to_string();
    let forwarded_for = if peer.is_ipv6() {
        format!("for=\"[{peer_text}]\"")
    } else {
        format!("for={peer_text}")
    };
    let forwarded_element = match host {
        Some(host) if is_forwarded_token_safe(host) => {
            format!("{forwarded_for};host=\"{host}\";proto=https")
        }
        _ => format!("{forwarded_for};proto=https"),
    };
    let mut plan = Vec::with_capacity(5);
    if peer_is_trusted {
        plan.push((
            X_FORWARDED_FOR,
            appended(present(&X_FORWARDED_FOR), &peer_text),
        ));
        plan.push((FORWARDED, appended(present(&FORWARDED), &forwarded_element)));
    } else {
        plan.push((X_FORWARDED_FOR, peer_text.clone()));
        plan.push((FORWARDED, forwarded_element));
    }
    // What a trusted proxy said about the original request stands; otherwise ours.
    let kept = |name: &HeaderName| peer_is_trusted && !present(name).is_empty();
    if !kept(&X_REAL_IP) {
        plan.push((X_REAL_IP, peer_text));
    }
    if !kept(&X_FORWARDED_PROTO) {
        plan.push((X_FORWARDED_PROTO, "https".to_owned()));
    }
    if let Some(host) = host
        && !kept(&X_FORWARDED_HOST)
    {
        plan.push((X_FORWARDED_HOST, host.to_owned()));
    }
    plan
}

/// `existing, value`: every existing line of a list header joined into one, then `value`.
fn appended(existing: Vec<&str>, value: &str) -> String {
    let mut joined: Vec<&str> = existing
        .into_iter()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    joined.push(value);
    joined.join(", ")
}

/// A host that can be written inside a quoted `Forwarded` parameter as it is.
fn is_forwarded_token_safe(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan for a request carrying a client's own forwarding headers.
    fn plan(peer: &str, trusted: bool, host: Option<&str>, hostile: bool) -> Vec<(String, String)> {
        let lines: Vec<(HeaderName, &str)> = if hostile {
            vec![
                (X_FORWARDED_FOR, "6.6.6.6"),
                (X_FORWARDED_FOR, "7.7.7.7"),
                (X_FORWARDED_PROTO, "http"),
                (X_FORWARDED_HOST, "evil.test"),
                (X_REAL_IP, "6.6.6.6"),
                (FORWARDED, "for=6.6.6.6"),
            ]
        } else {
            Vec::new()
        };
        forwarding_plan(peer.parse().unwrap(), trusted, host, |name| {
            lines
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect()
        })
        .into_iter()
        .map(|(name, value)| (name.as_str().to_owned(), value))
        .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_any_forwarding_header() {
        assert_eq!(
            plan("203.0.113.9", false, Some("a.test"), true),
            pairs(&[
                ("x-forwarded-for", "203.0.113.9"),
                ("forwarded", "for=203.0.113.9;host=\"a.test\";proto=https"),
                ("x-real-ip", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "a.test"),
            ])
        );
    }

    #[test]
    fn a_trusted_peer_has_its_address_appended_and_its_claims_kept() {
        // X-Real-IP, X-Forwarded-Proto and X-Forwarded-Host are not in the plan: kept.
        assert_eq!(
            plan("10.1.2.3", true, Some("a.test"), true),
            pairs(&[
                ("x-forwarded-for", "6.6.6.6, 7.7.7.7, 10.1.2.3"),
                (
                    "forwarded",
                    "for=6.6.6.6, for=10.1.2.3;host=\"a.test\";proto=https"
                ),
            ])
        );
    }

    #[test]
    fn a_trusted_peer_without_headers_gets_ours() {
        assert_eq!(
            plan("::1", true, None, false),
            pairs(&[
                ("x-forwarded-for", "::1"),
                ("forwarded", "for=\"[::1]\";proto=https"),
                ("x-real-ip", "::1"),
                ("x-forwarded-proto", "https"),
            ])
        );
    }

    #[test]
    fn a_host_that_would_break_the_forwarded_syntax_is_left_out() {
        let plan = plan("192.0.2.1", false, Some("a.test\";for=1.2.3.4"), false);
        assert_eq!(
            plan[1],
            pairs(&[("forwarded", "for=192.0.2.1;proto=https")])[0]
        );
    }

    #[test]
    fn ranges_match_by_prefix() {
        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains("10.255.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        let r = IpRange::parse("192.168.1.128/25").unwrap();
        assert!(r.contains("192.168.1.200".parse().unwrap()));
        assert!(!r.contains("192.168.1.127".parse().unwrap()));
        let r = IpRange::parse("2001:db8::/32").unwrap();
        assert!(r.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!r.contains("2001:db9::1".parse().unwrap()));
        assert!(!r.contains("10.0.0.1".parse().unwrap()));
        let mapped = IpRange::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains("10.1.2.3".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!mapped.contains("11.0.0.1".parse().unwrap()));
        assert!(IpRange::parse("::ffff:0:0/90").is_err());
        let one = IpRange::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            IpRange::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "example.com",
            "::/129",
            "10.0.0.0/x",
        ] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
    }
}
