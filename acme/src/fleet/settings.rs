//! How an instance reaches the fleet's Redis: the settings an embedder gives, and the URL rule.

use std::fmt;
use std::time::Duration;

/// Fleet mode: certificates, the account and challenge answers shared through Redis with the
/// other instances serving the same names ([`crate::AcmeConfig::fleet_redis`]).
///
/// The cache directory stays: it is each instance's local copy of what it serves, which it
/// starts from when Redis is down.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user@]host[:port][/db]` or `rediss://…` (TLS, verified against the Web PKI
    /// roots and the configuration's extra roots). A password in the URL is refused: give it
    /// with [`RedisSettings::password`], so it never appears where the URL is printed.
    pub url: String,
    /// `AUTH` password, if the server asks for one.
    pub password: Option<String>,
    /// Prepended to every key and the notification channel, so that several fleets (or other
    /// users) can share one Redis. Default `certloop:`.
    pub key_prefix: String,
    /// How long a lease on a certificate lasts unless its holder extends it (it does, every
    /// third of it, while its order runs). A holder that dies or pauses loses it after this
    /// long, and another instance may take over. Default 30 s.
    pub lease: Duration,
    /// How often every certificate's record is compared with what is served, in case a
    /// notification was lost. Default 10 s.
    pub check_interval: Duration,
}

impl RedisSettings {
    /// Settings for the Redis at `url`, with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            key_prefix: "certloop:".into(),
            lease: Duration::from_secs(30),
            check_interval: Duration::from_secs(10),
        }
    }

    /// The `AUTH` password (read it from a file; it is never logged).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Prepended to every key (default `certloop:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long a lease lasts without being extended (default 30 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often records are compared with what is served (default 10 s).
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Every setting checked (as [`crate::AcmeConfig::check`] does); the error says which and
    /// why, and never holds the password.
    pub fn validate(&self) -> Result<(), String> {
        self.check().map(|_| ())
    }

    /// [`RedisSettings::validate`], and where the URL points.
    pub(crate) fn check(&self) -> Result<RedisAddress, String> {
        if self.lease < Duration::from_secs(3) {
            return Err(format!(
                "the lease must be at least 3 s (it is extended every third of it), not {:?}",
                self.lease
            ));
        }
        if self.check_interval < Duration::from_millis(100) {
            return Err("the check interval must be at least 100 ms".into());
        }
        parse_redis_url(&self.url)
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("key_prefix", &self.key_prefix)
            .field("lease", &self.lease)
            .field("check_interval", &self.check_interval)
            .finish()
    }
}

/// Where a Redis URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedisAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub db: i64,
}

/// `url` without its user information (`user:password@`), for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, after)) => format!("{scheme}://…@{after}"),
            None => url.to_owned(),
        },
        None => url
            .rsplit_once('@')
            .map_or_else(|| url.to_owned(), |(_, after)| format!("…@{after}")),
    }
}

/// Reads `redis://[user@]host[:port][/db]` (or `rediss://`). IPv6 hosts are bracketed. Errors
/// never repeat the user information (a password may hide there).
pub(crate) fn parse_redis_url(url: &str) -> Result<RedisAddress, String> {
    let shown = redact_url(url);
    let (tls, rest) = if let Some(rest) = url.strip_prefix("rediss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("redis://") {
        (false, rest)
    } else {
        return Err(format!(
            "{shown:?} is not a Redis URL: it must start with redis:// or rediss://"
        ));
    };
    // The user information ends at the last '@' (a password may hold '/' or '@').
    let (username, rest) = match rest.rsplit_once('@') {
        Some((user, _)) if user.contains(':') => {
            return Err(
                "the Redis URL holds a password: give it separately (a password file), so it \
                 is never printed with the URL"
                    .into(),
            );
        }
        Some((user, rest)) => (Some(user.to_owned()).filter(|u| !u.is_empty()), rest),
        None => (None, rest),
    };
    let url = shown.as_str();
    let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: an IPv6 host lacks its closing ]"))?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let port = match port {
        None => 6379,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{url:?}: {port:?} is not a port"))?,
    };
    let db = match path {
        "" => 0,
        db => db
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("{url:?}: {db:?} is not a database number"))?,
    };
    Ok(RedisAddress {
        host: host.to_owned(),
        port,
        tls,
        username,
        db,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_are_read_and_passwords_in_them_refused() {
        let plain = parse_redis_url("redis://127.0.0.1").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.tls, plain.db),
            ("127.0.0.1", 6379, false, 0)
        );
        let full = parse_redis_url("rediss://certloop@redis.example:6380/2").unwrap();
        assert_eq!(full.username.as_deref(), Some("certloop"));
        assert_eq!(
            (full.host.as_str(), full.port, full.tls, full.db),
            ("redis.example", 6380, true, 2)
        );
        let v6 = parse_redis_url("redis://[::1]:7000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 7000));
        for leaky in [
            "redis://user:secret@host",
            "redis://u:se/cret@host:6379/0",
            "rediss://:s@c:ret@host",
        ] {
            let refused = parse_redis_url(leaky).unwrap_err();
            assert!(
                refused.contains("password") && !refused.contains("cret"),
                "{refused}"
            );
            let printed = format!("{:?}", RedisSettings::new(leaky));
            assert!(!printed.contains("cret"), "{printed}");
        }
        let bad_port = parse_redis_url("redis://user@host:x").unwrap_err();
        assert!(!bad_port.contains("user"), "{bad_port}");
        for bad in [
            "http://host",
            "redis://",
            "redis://host:0",
            "redis://host:x",
            "redis://host/-1",
            "redis://[::1",
        ] {
            assert!(parse_redis_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_checked_and_the_password_is_not_printed() {
        let settings = RedisSettings::new("redis://127.0.0.1:6379").password("hunter2");
        assert!(settings.check().is_ok());
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(
            settings
                .clone()
                .lease(Duration::from_secs(1))
                .check()
                .unwrap_err()
                .contains("lease")
        );
    }
}
