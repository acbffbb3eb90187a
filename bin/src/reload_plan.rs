//! What a configuration reload does to each listener, decided by comparing the running
//! configuration with the new one: a pure function, so every rule has a test.

use crate::config::{Listener, TlsMode};

/// What happens to a listener present in both configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing: its connections and certificate carry on untouched.
    Unchanged,
    /// Only where and how requests are forwarded changed (upstream, its timeout, trusted
    /// proxies): the next request on any connection, open or new, uses the new settings.
    Proxy,
    /// Its socket, limits or certificate changed: the accept loop restarts (open connections
    /// finish their requests and close), on the same socket unless the address changed.
    Restart {
        /// The certificate's source changed: a new ACME launch (which reads the cache, so a
        /// certificate for the same names is not ordered again) or new files.
        new_certificate: bool,
    },
}

/// Compares one listener's running and new settings.
pub(crate) fn change(old: &Listener, new: &Listener) -> Change {
    let new_certificate = !same_certificate_source(&old.tls, &new.tls);
    if old.bind != new.bind || new_certificate || old.limits != new.limits {
        return Change::Restart { new_certificate };
    }
    if old.upstream != new.upstream
        || old.upstream_timeout != new.upstream_timeout
        || old.trusted_proxies != new.trusted_proxies
    {
        return Change::Proxy;
    }
    Change::Unchanged
}

/// The same certificate files, or the same ACME configuration.
fn same_certificate_source(old: &TlsMode, new: &TlsMode) -> bool {
    match (old, new) {
        (
            TlsMode::Manual { cert, key, .. },
            TlsMode::Manual {
                cert: new_cert,
                key: new_key,
                ..
            },
        ) => cert == new_cert && key == new_key,
        (TlsMode::Acme(old), TlsMode::Acme(new)) => old == new,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::parse;

    const WEB: &str = "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8443\"\n\
                       upstream = \"http://127.0.0.1:8080\"\ntls_mode = \"acme\"\n\
                       acme_domains = [\"example.com\"]\nacme_cache_dir = \"/var/lib/c/web\"\n";

    fn listener(text: &str) -> Listener {
        let config = parse(Path::new("/etc/certloop.toml"), text).expect("valid");
        config.listeners.into_iter().next().expect("one listener")
    }

    #[test]
    fn the_same_settings_change_nothing() {
        assert_eq!(change(&listener(WEB), &listener(WEB)), Change::Unchanged);
    }

    #[test]
    fn an_upstream_change_swaps_the_proxy_only() {
        let moved = WEB.replace("8080", "9090");
        assert_eq!(change(&listener(WEB), &listener(&moved)), Change::Proxy);
        let slower = format!("{WEB}upstream_timeout = \"5s\"\n");
        assert_eq!(change(&listener(WEB), &listener(&slower)), Change::Proxy);
        let mut new = listener(WEB);
        new.upstream_timeout = Duration::from_secs(1);
        assert_eq!(change(&listener(WEB), &new), Change::Proxy);
    }

    #[test]
    fn names_a_bind_or_limits_restart_the_listener() {
        let restart = |new_certificate| Change::Restart { new_certificate };
        let names = WEB.replace("\"example.com\"", "\"example.com\", \"www.example.com\"");
        assert_eq!(change(&listener(WEB), &listener(&names)), restart(true));
        let contact = format!("{WEB}acme_contact = [\"mailto:ops@example.com\"]\n");
        assert_eq!(change(&listener(WEB), &listener(&contact)), restart(true));
        let bind = WEB.replace("8443", "9443");
        assert_eq!(change(&listener(WEB), &listener(&bind)), restart(false));
        let limits = format!("{WEB}[listeners.limits]\nidle_timeout = \"5s\"\n");
        assert_eq!(change(&listener(WEB), &listener(&limits)), restart(false));
    }
}
