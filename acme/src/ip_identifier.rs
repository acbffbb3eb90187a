//! IP address identifiers (RFC 8738): a configured name that is an IP address is ordered as an
//! `ip` identifier, and its TLS-ALPN-01 validation arrives with the address's reverse-DNS name
//! as SNI, since SNI cannot carry an address.

use std::net::IpAddr;

use instant_acme::Identifier;

/// The ACME identifier for a configured name (already validated: a DNS name or a canonical IP
/// address).
pub(crate) fn identifier_of(name: &str) -> Identifier {
    match name.parse::<IpAddr>() {
        Ok(ip) => Identifier::Ip(ip),
        Err(_) => Identifier::Dns(name.to_owned()),
    }
}

/// The reverse-DNS name of `ip` (RFC 8738 §6): `4.3.2.1.in-addr.arpa` for `1.2.3.4`, and one
/// label per nibble under `ip6.arpa` for IPv6.
pub(crate) fn reverse_dns_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_follow_rfc_8738() {
        assert_eq!(
            reverse_dns_name("192.0.2.1".parse().unwrap()),
            "1.2.0.192.in-addr.arpa"
        );
        // RFC 3596's example.
        assert_eq!(
            reverse_dns_name("4321:0:1:2:3:4:567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa"
        );
    }

    #[test]
    fn addresses_become_ip_identifiers() {
        assert_eq!(
            identifier_of("127.0.0.1"),
            Identifier::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(identifier_of("::1"), Identifier::Ip("::1".parse().unwrap()));
        assert_eq!(
            identifier_of("example.com"),
            Identifier::Dns("example.com".into())
        );
    }
}
