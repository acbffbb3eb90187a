//! What the lifecycle is told up front: the renewal and retry policy, and the names to certify.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::time::Human;

/// A fraction `num / den`, used for the parts of a certificate's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio {
    /// Numerator.
    pub num: u32,
    /// Denominator; never zero in a validated policy.
    pub den: u32,
}

impl Ratio {
    /// `num / den`.
    pub const fn new(num: u32, den: u32) -> Self {
        Self { num, den }
    }

    /// `d * num / den`, computed in milliseconds without overflow.
    pub fn of(self, d: Duration) -> Duration {
        let ms = u128::from(crate::time::duration_millis(d));
        let part = ms * u128::from(self.num) / u128::from(self.den.max(1));
        Duration::from_millis(u64::try_from(part).unwrap_or(u64::MAX))
    }
}

/// Renewal and retry policy. One `Policy` is usually shared (`Arc`) by many certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Renew when this fraction of the certificate's lifetime remains (default 1/3: 30 days of a
    /// 90-day certificate, 15 days of a 45-day one). Short-lived certificates use
    /// `short_lived_renew_when_remaining` instead.
    pub renew_when_remaining: Ratio,
    /// Certificates that live this long or less are short-lived (default 10 days: Let's
    /// Encrypt's six-day `shortlived` profile, not its 45-day `tlsserver`).
    pub short_lived_up_to: Duration,
    /// Renew a short-lived certificate when this fraction of its lifetime remains (default 1/2:
    /// 3 days of a 6-day certificate, so a CA outage of two days still leaves a day to renew).
    pub short_lived_renew_when_remaining: Ratio,
    /// Renewal moves earlier by a seeded random part of the lifetime up to this fraction
    /// (default 1/60: up to 1.5 days for 90 days), so a fleet does not renew in the same second.
    pub renewal_spread: Ratio,
    /// How long a first start may take to obtain a certificate before it fails (default 30 s).
    pub startup_timeout: Duration,
    /// First retry delay while starting without a usable certificate (default 1 s).
    pub startup_retry_min: Duration,
    /// Largest retry delay while starting (default 8 s).
    pub startup_retry_max: Duration,
    /// First retry delay once serving (default 60 s); doubles per consecutive failure.
    pub retry_min: Duration,
    /// Largest retry delay once serving (default 4 h). Short-lived certificates use less: a 36th
    /// of their lifetime but at least a 16th of this, so a 6-day certificate gets a dozen
    /// attempts before it expires and a one-hour certificate cannot cause an order storm.
    pub retry_max: Duration,
    /// An order still unanswered after this long counts as failed (default 10 min). Adapters
    /// must bound each order by the same timeout.
    pub order_timeout: Duration,
    /// A CA's Retry-After longer than this is capped to it (default 24 h).
    pub retry_after_max: Duration,
    /// How often the CA's renewal information (ARI) is checked when it gives no Retry-After
    /// (default 6 h).
    pub renewal_info_interval: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            renew_when_remaining: Ratio::new(1, 3),
            short_lived_up_to: Duration::from_secs(10 * 86_400),
            short_lived_renew_when_remaining: Ratio::new(1, 2),
            renewal_spread: Ratio::new(1, 60),
            startup_timeout: Duration::from_secs(30),
            startup_retry_min: Duration::from_secs(1),
            startup_retry_max: Duration::from_secs(8),
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(4 * 3600),
            order_timeout: Duration::from_secs(600),
            retry_after_max: Duration::from_secs(24 * 3600),
            renewal_info_interval: Duration::from_secs(6 * 3600),
        }
    }
}

impl Policy {
    /// The part of a certificate living `lifetime` that is left when it is renewed (before the
    /// spread): `short_lived_renew_when_remaining` up to `short_lived_up_to`,
    /// `renew_when_remaining` beyond.
    pub fn renewal_threshold(&self, lifetime: Duration) -> Duration {
        let fraction = if lifetime <= self.short_lived_up_to {
            self.short_lived_renew_when_remaining
        } else {
            self.renew_when_remaining
        };
        fraction.of(lifetime)
    }

    /// Checks that the policy cannot produce a tight loop or a renewal that never happens.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ratio_ok = |r: Ratio| r.den != 0 && r.num < r.den;
        let renewal_ok = |r: Ratio| ratio_ok(r) && r.num != 0;
        if !renewal_ok(self.renew_when_remaining)
            || !renewal_ok(self.short_lived_renew_when_remaining)
        {
            return Err(ConfigError::Policy(
                "renew_when_remaining and short_lived_renew_when_remaining must be fractions \
                 strictly between 0 and 1",
            ));
        }
        if !ratio_ok(self.renewal_spread) {
            return Err(ConfigError::Policy(
                "renewal_spread must be a fraction below 1",
            ));
        }
        if self.startup_retry_min < Duration::from_millis(100)
            || self.retry_min < Duration::from_secs(1)
        {
            return Err(ConfigError::Policy(
                "retry delays below 100 ms (startup) or 1 s (running) would hammer the CA",
            ));
        }
        if self.startup_retry_max < self.startup_retry_min || self.retry_max < self.retry_min {
            return Err(ConfigError::Policy(
                "a maximum retry delay is below its minimum",
            ));
        }
        if self.startup_timeout.is_zero()
            || self.order_timeout < Duration::from_secs(1)
            || self.renewal_info_interval < Duration::from_secs(60)
        {
            return Err(ConfigError::Policy(
                "startup_timeout must be positive, order_timeout at least 1 s and \
                 renewal_info_interval at least 60 s",
            ));
        }
        Ok(())
    }
}

/// One certificate to keep: the names it must cover and the seed for its jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertConfig {
    domains: Arc<[String]>,
    seed: u64,
    issuers: usize,
}

impl CertConfig {
    /// Validates the names (DNS names, optionally one leading `*.` wildcard label, or IP
    /// addresses in their canonical form) and keeps them in the configured order, which is also
    /// the order cache keys are derived from.
    pub fn new(
        domains: impl IntoIterator<Item = impl Into<String>>,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        let domains: Vec<String> = domains.into_iter().map(Into::into).collect();
        if domains.is_empty() {
            return Err(ConfigError::NoDomains);
        }
        for (i, d) in domains.iter().enumerate() {
            validate_name(d).map_err(|problem| ConfigError::InvalidDomain {
                domain: d.clone(),
                problem,
            })?;
            if domains[..i]
                .iter()
                .any(|earlier| earlier.eq_ignore_ascii_case(d))
            {
                return Err(ConfigError::DuplicateDomain(d.clone()));
            }
        }
        Ok(Self {
            domains: domains.into(),
            seed,
            issuers: 1,
        })
    }

    /// Orders from `issuers` CAs in order of preference (at least one; default 1): when one
    /// fails an order for a reason that is not the request's fault, the next is asked at once;
    /// every new streak of orders starts with the first.
    pub fn with_issuers(mut self, issuers: usize) -> Self {
        self.issuers = issuers.max(1);
        self
    }

    /// How many issuers the certificate is ordered from.
    pub fn issuers(&self) -> usize {
        self.issuers
    }

    /// The names, in configured order.
    pub fn domains(&self) -> &Arc<[String]> {
        &self.domains
    }

    /// The jitter seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// Why a name is neither a DNS name nor an IP address a public CA could certify. IP addresses
/// (RFC 8738) must be written in their canonical form (`192.0.2.1`, `2001:db8::1`): that is
/// how certificates and clients spell them.
pub fn validate_name(name: &str) -> Result<(), String> {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.to_string() == name => Ok(()),
        Ok(ip) => Err(format!("write this IP address as {ip}")),
        Err(_) => validate_dns_name(name).map_err(str::to_owned),
    }
}

/// Whether `name` is an IP address rather than a DNS name.
pub fn is_ip_address(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
}

/// Why a name is not a DNS name a public CA could certify.
fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if bare.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    if bare.ends_with('.') {
        return Err("must not end with a dot");
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, '-' and a leading '*.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not start or end with '-'");
        }
    }
    if bare.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("is neither a DNS name nor an IP address");
    }
    Ok(())
}

/// Whether a certificate name (possibly a `*.` wildcard) covers a domain or SNI name.
pub fn name_covers(cert_name: &str, domain: &str) -> bool {
    if cert_name.eq_ignore_ascii_case(domain) {
        return true;
    }
    // `*.example.com` covers exactly one extra label: `a.example.com`, not `a.b.example.com`.
    match (cert_name.strip_prefix("*."), domain.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// No names were given.
    NoDomains,
    /// A name is neither a valid DNS name nor an IP address.
    InvalidDomain {
        /// The name as configured.
        domain: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A name appears twice (case-insensitively).
    DuplicateDomain(String),
    /// A policy value is out of range.
    Policy(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDomains => f.write_str("no domains configured"),
            Self::InvalidDomain { domain, problem } => {
                write!(f, "invalid domain {domain:?}: {problem}")
            }
            Self::DuplicateDomain(d) => write!(f, "domain {d:?} is listed twice"),
            Self::Policy(p) => write!(f, "invalid renewal policy: {p}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The retry delay cap for a certificate of this lifetime: a 36th of the lifetime, within
/// `[retry_max / 16, retry_max]`.
pub(crate) fn retry_cap(policy: &Policy, lifetime: Duration) -> Duration {
    // Never below a 16th of `retry_max` (15 min by default): even a certificate that lives an
    // hour must not make the CA see more than a handful of orders an hour.
    let floor = (policy.retry_max / 16).max(policy.retry_min);
    (lifetime / 36).clamp(floor, policy.retry_max)
}

/// Human-readable summary of the policy, for the simulator's header and docs.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "renew at {}/{} remaining ({}/{} up to {}; spread {}/{}), startup {} (retry {}..{}), \
             retry {}..{}",
            self.renew_when_remaining.num,
            self.renew_when_remaining.den,
            self.short_lived_renew_when_remaining.num,
            self.short_lived_renew_when_remaining.den,
            Human(self.short_lived_up_to),
            self.renewal_spread.num,
            self.renewal_spread.den,
            Human(self.startup_timeout),
            Human(self.startup_retry_min),
            Human(self.startup_retry_max),
            Human(self.retry_min),
            Human(self.retry_max),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lived_certificates_renew_at_half_their_lifetime_longer_ones_at_a_third() {
        let policy = Policy::default();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(policy.renewal_threshold(hours(160)), hours(80));
        assert_eq!(
            policy.renewal_threshold(hours(240)),
            hours(120),
            "ten days is short"
        );
        assert_eq!(policy.renewal_threshold(hours(45 * 24)), hours(15 * 24));
        assert_eq!(policy.renewal_threshold(hours(90 * 24)), hours(30 * 24));
        let just_over = hours(240) + Duration::from_millis(3);
        assert_eq!(policy.renewal_threshold(just_over), just_over / 3);
        let bad = Policy {
            short_lived_renew_when_remaining: Ratio::new(1, 1),
            ..Policy::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn validates_names() {
        assert!(CertConfig::new(["example.com", "*.example.com"], 0).is_ok());
        assert_eq!(
            CertConfig::new(Vec::<String>::new(), 0),
            Err(ConfigError::NoDomains)
        );
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a_b.com",
            "a.com.",
            "127.0.0.01",
            "1.2.3",
            "2001:DB8::1",
            "*.127.0.0.1",
            "*.",
            "a.*.com",
        ] {
            assert!(CertConfig::new([bad], 0).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            CertConfig::new(["a.com", "A.com"], 0),
            Err(ConfigError::DuplicateDomain("A.com".into()))
        );
        // IP addresses (RFC 8738), in the form certificates and clients use.
        assert!(CertConfig::new(["192.0.2.1", "2001:db8::1", "example.com"], 0).is_ok());
        assert_eq!(
            validate_name("2001:DB8:0::1"),
            Err("write this IP address as 2001:db8::1".into())
        );
        assert!(is_ip_address("::1") && !is_ip_address("example.com"));
    }

    #[test]
    fn wildcard_covers_one_label() {
        assert!(name_covers("*.example.com", "www.example.com"));
        assert!(name_covers("Example.COM", "example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("www.example.com", "*.example.com"));
        assert!(name_covers("*.example.com", "*.example.com"));
    }

    #[test]
    fn default_policy_is_valid_and_caps_scale() {
        let p = Policy::default();
        p.validate().unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(retry_cap(&p, 90 * day), Duration::from_secs(4 * 3600));
        assert_eq!(retry_cap(&p, 6 * day), Duration::from_secs(4 * 3600));
        assert_eq!(retry_cap(&p, day), Duration::from_secs(2400));
        assert_eq!(retry_cap(&p, day / 24), Duration::from_secs(900));
        assert_eq!(Ratio::new(1, 3).of(90 * day), 30 * day);
    }
}
