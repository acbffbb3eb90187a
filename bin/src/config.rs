//! The configuration file: TOML parsed into a checked `Config`. Every error names the file,
//! the line and the key.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certloop_tokio::{
    AcmeConfig, ChallengeKind, Directory, Issuer, KeyType, Policy, RedisSettings, Rfc2136Settings,
    StartError,
};
use hyper::Uri;
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use toml::Spanned;

use crate::access_log::{AccessLogConfig, Format};
use crate::forwarding::IpRange;
use crate::limits::{Limits, MAX_REQUEST_HEADER_BYTES, MIN_REQUEST_HEADER_BYTES};
use crate::manual::load_certified_key;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<PathBuf>>,
    shutdown_grace: Option<Spanned<String>>,
    limits: Option<Spanned<RawLimits>>,
    http: Option<Spanned<RawHttp>>,
    admin: Option<Spanned<RawAdmin>>,
    access_log: Option<Spanned<RawAccessLog>>,
    storage: Option<Spanned<RawStorage>>,
    #[serde(default)]
    listeners: Vec<Spanned<RawListener>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    tls_handshake_timeout: Option<Spanned<String>>,
    request_header_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_ip: Option<Spanned<i64>>,
    max_request_header_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    bind: Spanned<String>,
    https_port: Option<Spanned<u16>>,
}

/// One `[[listeners.certificates]]` entry: the names of one certificate.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    domains: Spanned<Vec<Spanned<String>>>,
}

/// One CA of `[[listeners.acme_issuers]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    directory: Spanned<String>,
    contact: Option<Vec<String>>,
    profile: Option<String>,
    directory_ca: Option<Spanned<PathBuf>>,
    eab_kid: Option<String>,
    eab_hmac_key_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    path: Option<Spanned<PathBuf>>,
    format: Option<Spanned<String>>,
}

/// `[storage]`: where ACME listeners keep their certificates.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    backend: Spanned<String>,
    url: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    key_prefix: Option<String>,
    lease: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    bind: Spanned<String>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Spanned<String>,
    bind: Spanned<String>,
    upstream: Spanned<String>,
    tls_mode: Spanned<String>,
    upstream_timeout: Option<Spanned<String>>,
    trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    limits: Option<Spanned<RawLimits>>,
    acme_domains: Option<Spanned<Vec<Spanned<String>>>>,
    certificates: Option<Spanned<Vec<Spanned<RawCertificate>>>>,
    acme_directory: Option<Spanned<String>>,
    acme_contact: Option<Spanned<Vec<String>>>,
    acme_cache_dir: Option<Spanned<PathBuf>>,
    acme_challenge: Option<Spanned<String>>,
    acme_directory_ca: Option<Spanned<PathBuf>>,
    acme_startup_timeout: Option<Spanned<String>>,
    acme_max_concurrent_orders: Option<Spanned<i64>>,
    acme_profile: Option<Spanned<String>>,
    acme_key_type: Option<Spanned<String>>,
    acme_issuers: Option<Spanned<Vec<Spanned<RawIssuer>>>>,
    acme_dns_server: Option<Spanned<String>>,
    acme_dns_zone: Option<Spanned<String>>,
    acme_dns_key_name: Option<Spanned<String>>,
    acme_dns_key_file: Option<Spanned<PathBuf>>,
    acme_dns_propagation_timeout: Option<Spanned<String>>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
}

/// A checked configuration.
#[derive(Clone)]
pub(crate) struct Config {
    /// Where certloop keeps its state: ACME cache directories by default, the pid file.
    pub(crate) state_dir: PathBuf,
    /// How long in-flight requests may take to finish after SIGTERM or SIGINT.
    pub(crate) shutdown_grace: Duration,
    /// The plain-HTTP listener, if any.
    pub(crate) http: Option<HttpListener>,
    /// The admin listener (metrics, health, status), if any.
    pub(crate) admin: Option<AdminListener>,
    /// One line per proxied request, if configured.
    pub(crate) access_log: Option<AccessLogConfig>,
    /// The TLS listeners.
    pub(crate) listeners: Vec<Listener>,
}

impl Config {
    /// The first setting outside `[[listeners]]` that differs in `new`: a reload applies the
    /// listeners only, these take a restart.
    pub(crate) fn needs_restart_for(&self, new: &Self) -> Option<&'static str> {
        let http = |c: &Self| {
            c.http
                .as_ref()
                .map(|h| (h.bind, h.https_port, h.limits.clone()))
        };
        let admin = |c: &Self| c.admin.as_ref().map(|a| (a.bind, a.limits.clone()));
        if http(self) != http(new) {
            Some("[http]")
        } else if admin(self) != admin(new) {
            Some("[admin]")
        } else if self.access_log != new.access_log {
            Some("[access_log]")
        } else if self.shutdown_grace != new.shutdown_grace {
            Some("shutdown_grace")
        } else {
            None
        }
    }
}

/// `[http]`: answers HTTP-01 and redirects everything else to HTTPS.
#[derive(Clone)]
pub(crate) struct HttpListener {
    /// Where it listens.
    pub(crate) bind: SocketAddr,
    /// The port written into redirects.
    pub(crate) https_port: u16,
    /// The `[limits]` table.
    pub(crate) limits: Limits,
}

/// `[admin]`: metrics, health checks and the status page.
#[derive(Clone)]
pub(crate) struct AdminListener {
    /// Where it listens (loopback unless `allow_remote`).
    pub(crate) bind: SocketAddr,
    /// The `[limits]` table.
    pub(crate) limits: Limits,
}

/// One `[[listeners]]` entry.
#[derive(Clone)]
pub(crate) struct Listener {
    /// Unique name, used in logs.
    pub(crate) name: String,
    /// Where it listens.
    pub(crate) bind: SocketAddr,
    /// Where requests go (`http://host:port`, optionally with a path prefix).
    pub(crate) upstream: Uri,
    /// How long the upstream may take to answer.
    pub(crate) upstream_timeout: Duration,
    /// Peers whose forwarding headers are believed and extended.
    pub(crate) trusted_proxies: Vec<IpRange>,
    /// `[limits]`, overridden by `[listeners.limits]`.
    pub(crate) limits: Limits,
    /// Where the certificate comes from.
    pub(crate) tls: TlsMode,
}

/// `tls_mode`.
#[derive(Clone)]
pub(crate) enum TlsMode {
    /// Certificate and key files, reloaded on SIGHUP and when they change.
    Manual {
        /// Chain, leaf first.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
        /// The pair as loaded at startup.
        loaded: Arc<CertifiedKey>,
    },
    /// An ACME CA.
    Acme(Box<AcmeConfig>),
}

/// A configuration error: file, line, key and what is wrong.
#[derive(Debug)]
pub(crate) struct ConfigError {
    path: PathBuf,
    line: Option<usize>,
    key: String,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            line: span.map(|s| self.line(&s)),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads and checks the configuration file.
pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: None,
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and checks configuration text (`path` is for messages and relative paths).
pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let src = Source { path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_owned();
        src.error(e.span(), "", message)
    })?;
    let state_dir = raw.state_dir.as_ref().map_or_else(
        || PathBuf::from("/var/lib/certloop"),
        |s| relative(&src, s.get_ref()),
    );
    let global_limits = match &raw.limits {
        Some(l) => limits(&src, l.get_ref(), Limits::default(), "limits")?,
        None => Limits::default(),
    };
    let http = match &raw.http {
        None => None,
        Some(h) => {
            let h = h.get_ref();
            Some(HttpListener {
                bind: socket_addr(&src, &h.bind, "http.bind")?,
                https_port: h.https_port.as_ref().map_or(443, |p| *p.get_ref()),
                limits: global_limits.clone(),
            })
        }
    };
    if raw.listeners.is_empty() {
        return Err(src.error(None, "listeners", "no [[listeners]] configured"));
    }
    let admin = match &raw.admin {
        None => None,
        Some(a) => Some(AdminListener {
            bind: admin(&src, a.get_ref(), http.as_ref().map(|h| h.bind))?,
            limits: global_limits.clone(),
        }),
    };
    let access_log = match &raw.access_log {
        None => None,
        Some(a) => Some(access_log(&src, a.get_ref())?),
    };
    let fleet = match &raw.storage {
        None => None,
        Some(s) => storage(&src, s.get_ref())?,
    };
    let mut listeners: Vec<Listener> = Vec::new();
    let mut seen_binds: Vec<SocketAddr> = (http.iter().map(|h| h.bind))
        .chain(admin.iter().map(|a| a.bind))
        .collect();
    // Each ACME listener's cache directory and name: one directory serves one listener.
    let mut cache_dirs: Vec<(PathBuf, String)> = Vec::new();
    for (i, spanned) in raw.listeners.iter().enumerate() {
        let l = spanned.get_ref();
        let key = |k: &str| format!("listeners[{i}].{k}");
        let name = l.name.get_ref().trim().to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(src.error(
                Some(l.name.span()),
                key("name"),
                "use letters, digits, '-' and '_'",
            ));
        }
        if listeners.iter().any(|other| other.name == name) {
            return Err(src.error(
                Some(l.name.span()),
                key("name"),
                format!("duplicate listener name {name:?}"),
            ));
        }
        let bind = socket_addr(&src, &l.bind, &key("bind"))?;
        if seen_binds.contains(&bind) {
            return Err(src.error(
                Some(l.bind.span()),
                key("bind"),
                format!("{bind} is used twice"),
            ));
        }
        seen_binds.push(bind);
        let upstream = upstream(&src, &l.upstream, &key("upstream"))?;
        let upstream_timeout = match &l.upstream_timeout {
            Some(t) => duration(&src, t, &key("upstream_timeout"))?,
            None => Duration::from_secs(60),
        };
        let mut trusted_proxies = Vec::new();
        for range in l.trusted_proxies.iter().flat_map(|t| t.get_ref()) {
            trusted_proxies.push(
                IpRange::parse(range.get_ref())
                    .map_err(|m| src.error(Some(range.span()), key("trusted_proxies"), m))?,
            );
        }
        let limits = match &l.limits {
            Some(own) => limits(&src, own.get_ref(), global_limits.clone(), &key("limits"))?,
            None => global_limits.clone(),
        };
        let tls = match l.tls_mode.get_ref().as_str() {
            "manual" => manual(&src, l, &key)?,
            "acme" => {
                let (mut config, cache_dir) =
                    acme(&src, l, &key, &state_dir, &name, http.is_some())?;
                if let Some(fleet) = &fleet {
                    config = config.fleet_redis(fleet.clone());
                }
                if let Some((_, other)) = cache_dirs.iter().find(|(dir, _)| *dir == cache_dir) {
                    let span = l
                        .acme_cache_dir
                        .as_ref()
                        .map_or(l.name.span(), |d| d.span());
                    return Err(src.error(
                        Some(span),
                        key("acme_cache_dir"),
                        format!(
                            "{} is also the cache directory of listener {other:?}; each ACME \
                             listener needs its own (its lock admits one user)",
                            cache_dir.display()
                        ),
                    ));
                }
                cache_dirs.push((cache_dir, name.clone()));
                TlsMode::Acme(Box::new(config))
            }
            other => {
                return Err(src.error(
                    Some(l.tls_mode.span()),
                    key("tls_mode"),
                    format!("{other:?} is not \"acme\" or \"manual\""),
                ));
            }
        };
        listeners.push(Listener {
            name,
            bind,
            upstream,
            upstream_timeout,
            trusted_proxies,
            limits,
            tls,
        });
    }
    let shutdown_grace = match &raw.shutdown_grace {
        Some(g) => duration(&src, g, "shutdown_grace")?,
        None => Duration::from_secs(30),
    };
    Ok(Config {
        state_dir,
        shutdown_grace,
        http,
        admin,
        access_log,
        listeners,
    })
}

/// `[access_log]`: stdout unless `path` names a file; JSON unless `format = "common"`.
fn access_log(src: &Source<'_>, raw: &RawAccessLog) -> Result<AccessLogConfig, ConfigError> {
    let format = match &raw.format {
        None => Format::Json,
        Some(f) => match f.get_ref().as_str() {
            "json" => Format::Json,
            "common" => Format::Common,
            other => {
                return Err(src.error(
                    Some(f.span()),
                    "access_log.format",
                    format!("{other:?} is not \"json\" or \"common\""),
                ));
            }
        },
    };
    Ok(AccessLogConfig {
        path: raw.path.as_ref().map(|p| relative(src, p.get_ref())),
        format,
    })
}

/// `[storage]`: `backend = "directory"` (each listener's cache directory, the default) or
/// `"redis"` (fleet mode: shared through Redis, the cache directory kept as the local copy).
fn storage(src: &Source<'_>, raw: &RawStorage) -> Result<Option<RedisSettings>, ConfigError> {
    let redis_only = [
        (raw.url.as_ref().map(|u| u.span()), "storage.url"),
        (
            raw.password_file.as_ref().map(|p| p.span()),
            "storage.password_file",
        ),
        (raw.lease.as_ref().map(|l| l.span()), "storage.lease"),
    ];
    match raw.backend.get_ref().as_str() {
        "directory" => {
            if let Some((span, key)) = redis_only.into_iter().find(|(span, _)| span.is_some()) {
                return Err(src.error(span, key, "only for backend = \"redis\""));
            }
            Ok(None)
        }
        "redis" => {
            let url = raw.url.as_ref().ok_or_else(|| {
                src.error(
                    Some(raw.backend.span()),
                    "storage.url",
                    "backend = \"redis\" needs url = \"redis://host:6379\"",
                )
            })?;
            let mut settings = RedisSettings::new(url.get_ref().clone());
            if let Some(prefix) = &raw.key_prefix {
                settings = settings.key_prefix(prefix.clone());
            }
            if let Some(lease) = &raw.lease {
                settings = settings.lease(duration(src, lease, "storage.lease")?);
            }
            if let Some(file) = &raw.password_file {
                let path = relative(src, file.get_ref());
                let password = std::fs::read_to_string(&path).map_err(|e| {
                    src.error(
                        Some(file.span()),
                        "storage.password_file",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                settings = settings.password(password.trim_end_matches(['\r', '\n']));
            }
            settings
                .validate()
                .map_err(|problem| match problem.contains("lease") {
                    true => src.error(
                        raw.lease.as_ref().map(|l| l.span()),
                        "storage.lease",
                        problem,
                    ),
                    false => src.error(Some(url.span()), "storage.url", problem),
                })?;
            Ok(Some(settings))
        }
        other => Err(src.error(
            Some(raw.backend.span()),
            "storage.backend",
            format!("{other:?} is not \"directory\" or \"redis\""),
        )),
    }
}

/// `[admin]`: a loopback address unless `allow_remote` says otherwise.
fn admin(
    src: &Source<'_>,
    raw: &RawAdmin,
    http: Option<SocketAddr>,
) -> Result<SocketAddr, ConfigError> {
    let bind = socket_addr(src, &raw.bind, "admin.bind")?;
    if !bind.ip().is_loopback() && raw.allow_remote != Some(true) {
        return Err(src.error(
            Some(raw.bind.span()),
            "admin.bind",
            format!(
                "{bind} is not a loopback address; the admin endpoints show every certificate's \
                 state to whoever reaches them: bind 127.0.0.1, or set allow_remote = true"
            ),
        ));
    }
    if http == Some(bind) {
        return Err(src.error(
            Some(raw.bind.span()),
            "admin.bind",
            format!("{bind} is used twice"),
        ));
    }
    Ok(bind)
}

fn socket_addr(
    src: &Source<'_>,
    value: &Spanned<String>,
    key: &str,
) -> Result<SocketAddr, ConfigError> {
    value.get_ref().parse().map_err(|_| {
        src.error(
            Some(value.span()),
            key,
            format!("{:?} is not an address like 0.0.0.0:443", value.get_ref()),
        )
    })
}

fn upstream(src: &Source<'_>, value: &Spanned<String>, key: &str) -> Result<Uri, ConfigError> {
    let bad = |m: &str| {
        src.error(
            Some(value.span()),
            key,
            format!("{:?}: {m}", value.get_ref()),
        )
    };
    let uri: Uri = value.get_ref().parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(bad(
            "use http://host:port (the upstream speaks plain HTTP/1.1)",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("an upstream URL cannot have a query"));
    }
    Ok(uri)
}

/// `500ms`, `30s`, `5m`, `1h`.
fn duration(src: &Source<'_>, value: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
    let text = value.get_ref().trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        src.error(
            Some(value.span()),
            key,
            format!("{text:?} is not a duration like 60s"),
        )
    })?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => {
            return Err(src.error(
                Some(value.span()),
                key,
                format!("{text:?}: use ms, s, m or h"),
            ));
        }
    };
    let d = match millis {
        Some(ms) if ms <= MAX_DURATION.as_millis() as u64 => Duration::from_millis(ms),
        _ => return Err(src.error(Some(value.span()), key, "must be at most 24h")),
    };
    if d.is_zero() {
        return Err(src.error(Some(value.span()), key, "must be more than zero"));
    }
    Ok(d)
}

/// The longest duration any setting accepts: longer ones are mistakes, and keep time
/// arithmetic far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The largest connection caps accepted.
const MAX_CONNECTION_CAP: usize = 1_000_000;

/// `base` with the values `raw` sets (`table` names it in errors).
fn limits(
    src: &Source<'_>,
    raw: &RawLimits,
    base: Limits,
    table: &str,
) -> Result<Limits, ConfigError> {
    let key = |k: &str| format!("{table}.{k}");
    let mut limits = base;
    let durations = [
        (
            &raw.tls_handshake_timeout,
            "tls_handshake_timeout",
            &mut limits.tls_handshake_timeout,
        ),
        (
            &raw.request_header_timeout,
            "request_header_timeout",
            &mut limits.request_header_timeout,
        ),
        (&raw.idle_timeout, "idle_timeout", &mut limits.idle_timeout),
    ];
    for (value, name, slot) in durations {
        if let Some(value) = value {
            *slot = duration(src, value, &key(name))?;
        }
    }
    let counts = [
        (
            &raw.max_connections,
            "max_connections",
            1,
            MAX_CONNECTION_CAP,
            &mut limits.max_connections,
        ),
        (
            &raw.max_connections_per_ip,
            "max_connections_per_ip",
            0,
            MAX_CONNECTION_CAP,
            &mut limits.max_connections_per_ip,
        ),
        (
            &raw.max_request_header_bytes,
            "max_request_header_bytes",
            MIN_REQUEST_HEADER_BYTES,
            MAX_REQUEST_HEADER_BYTES,
            &mut limits.max_request_header_bytes,
        ),
    ];
    for (value, name, min, max, slot) in counts {
        if let Some(value) = value {
            *slot = usize::try_from(*value.get_ref())
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    let range = format!("from {min} to {max}");
                    src.error(
                        Some(value.span()),
                        key(name),
                        format!("{} is out of range: use {range}", value.get_ref()),
                    )
                })?;
        }
    }
    Ok(limits)
}

fn relative(src: &Source<'_>, path: &Path) -> PathBuf {
    match src.path.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// The DNS-01 keys: all four with `acme_challenge = "dns-01"`, none without it.
fn dns01(
    src: &Source<'_>,
    l: &RawListener,
    key: &dyn Fn(&str) -> String,
    challenge: ChallengeKind,
) -> Result<Option<Rfc2136Settings>, ConfigError> {
    let keys = [
        (
            l.acme_dns_server.as_ref().map(Spanned::span),
            "acme_dns_server",
        ),
        (l.acme_dns_zone.as_ref().map(Spanned::span), "acme_dns_zone"),
        (
            l.acme_dns_key_name.as_ref().map(Spanned::span),
            "acme_dns_key_name",
        ),
        (
            l.acme_dns_key_file.as_ref().map(Spanned::span),
            "acme_dns_key_file",
        ),
        (
            l.acme_dns_propagation_timeout.as_ref().map(Spanned::span),
            "acme_dns_propagation_timeout",
        ),
    ];
    if challenge != ChallengeKind::Dns01 {
        if let Some((span, name)) = keys.iter().find(|(span, _)| span.is_some()) {
            return Err(src.error(
                span.clone(),
                key(name),
                "only used with acme_challenge = \"dns-01\"",
            ));
        }
        return Ok(None);
    }
    let (Some(server), Some(zone), Some(key_name), Some(key_file)) = (
        &l.acme_dns_server,
        &l.acme_dns_zone,
        &l.acme_dns_key_name,
        &l.acme_dns_key_file,
    ) else {
        let missing = keys[..4]
            .iter()
            .find(|(span, _)| span.is_none())
            .map_or("", |k| k.1);
        return Err(src.error(
            l.acme_challenge.as_ref().map(Spanned::span),
            key("acme_challenge"),
            format!(
                "dns-01 needs acme_dns_server, acme_dns_zone, acme_dns_key_name and \
                 acme_dns_key_file (the TSIG secret); {missing} is missing"
            ),
        ));
    };
    let address = server.get_ref().parse().map_err(|_| {
        src.error(
            Some(server.span()),
            key("acme_dns_server"),
            format!(
                "{:?} is not an address:port such as 192.0.2.53:53",
                server.get_ref()
            ),
        )
    })?;
    let mut settings = Rfc2136Settings::new(
        address,
        zone.get_ref().clone(),
        key_name.get_ref().clone(),
        relative(src, key_file.get_ref()),
    );
    if let Some(t) = &l.acme_dns_propagation_timeout {
        settings.propagation_timeout = duration(src, t, &key("acme_dns_propagation_timeout"))?;
    }
    Ok(Some(settings))
}

/// `[[listeners.acme_issuers]]`: every CA in order of preference (the first one in place of
/// `acme_directory`, `acme_contact` and `acme_profile`, which are its short form and cannot be
/// mixed with it), each with its own EAB, whose HMAC key is read from a file here and never
/// shown.
fn with_issuers(
    src: &Source<'_>,
    l: &RawListener,
    key: &dyn Fn(&str) -> String,
    issuers: &Spanned<Vec<Spanned<RawIssuer>>>,
    mut config: AcmeConfig,
) -> Result<AcmeConfig, ConfigError> {
    let short_form = [
        (l.acme_directory.is_some(), "acme_directory"),
        (l.acme_contact.is_some(), "acme_contact"),
        (l.acme_profile.is_some(), "acme_profile"),
    ];
    if let Some((_, name)) = short_form.iter().find(|(set, _)| *set) {
        return Err(src.error(
            Some(issuers.span()),
            key("acme_issuers"),
            format!(
                "acme_issuers lists every CA, the preferred one first; move {name} into its first \
                 entry"
            ),
        ));
    }
    if issuers.get_ref().is_empty() {
        return Err(src.error(
            Some(issuers.span()),
            key("acme_issuers"),
            "must list at least one CA",
        ));
    }
    for (i, raw) in issuers.get_ref().iter().enumerate() {
        let at = |field: &str| key(&format!("acme_issuers[{i}].{field}"));
        let raw = raw.get_ref();
        let directory = Directory::parse(raw.directory.get_ref())
            .map_err(|m| src.error(Some(raw.directory.span()), at("directory"), m))?;
        let mut issuer = Issuer::new(directory);
        for contact in raw.contact.iter().flatten() {
            issuer = issuer.contact(contact.clone());
        }
        if let Some(profile) = &raw.profile {
            issuer = issuer.profile(profile.clone());
        }
        match (&raw.eab_kid, &raw.eab_hmac_key_file) {
            (Some(kid), Some(file)) => {
                let path = relative(src, file.get_ref());
                // The error names the file, never its content.
                let hmac_key = std::fs::read_to_string(&path).map_err(|e| {
                    let problem = format!("cannot read {}: {e}", path.display());
                    src.error(Some(file.span()), at("eab_hmac_key_file"), problem)
                })?;
                issuer = issuer.eab(kid.clone(), hmac_key.trim().to_owned());
            }
            (None, None) => {}
            _ => {
                return Err(src.error(
                    Some(issuers.span()),
                    at("eab_kid"),
                    "eab_kid and eab_hmac_key_file go together",
                ));
            }
        }
        if let Some(ca) = &raw.directory_ca {
            config = config.extra_roots_pem(relative(src, ca.get_ref()));
        }
        config = if i == 0 {
            config.preferred_issuer(issuer)
        } else {
            config.fallback_issuer(issuer)
        };
    }
    Ok(config)
}

/// Rejects keys that belong to the other `tls_mode`, naming the first one present.
fn only_for_mode(
    src: &Source<'_>,
    l: &RawListener,
    key: &dyn Fn(&str) -> String,
    mode: &str,
    present: &[(bool, &str)],
) -> Result<(), ConfigError> {
    match present.iter().find(|(is_set, _)| *is_set) {
        Some((_, name)) => Err(src.error(
            Some(l.tls_mode.span()),
            key(name),
            format!("only for tls_mode = \"{mode}\""),
        )),
        None => Ok(()),
    }
}

fn manual(
    src: &Source<'_>,
    l: &RawListener,
    key: &dyn Fn(&str) -> String,
) -> Result<TlsMode, ConfigError> {
    only_for_mode(
        src,
        l,
        key,
        "acme",
        &[
            (l.acme_domains.is_some(), "acme_domains"),
            (l.certificates.is_some(), "certificates"),
            (l.acme_directory.is_some(), "acme_directory"),
            (l.acme_profile.is_some(), "acme_profile"),
            (l.acme_key_type.is_some(), "acme_key_type"),
            (l.acme_issuers.is_some(), "acme_issuers"),
            (l.acme_dns_server.is_some(), "acme_dns_server"),
            (l.acme_dns_zone.is_some(), "acme_dns_zone"),
            (l.acme_dns_key_name.is_some(), "acme_dns_key_name"),
            (l.acme_dns_key_file.is_some(), "acme_dns_key_file"),
        ],
    )?;
    let (Some(cert), Some(private_key)) = (&l.tls_cert, &l.tls_key) else {
        return Err(src.error(
            Some(l.tls_mode.span()),
            key("tls_cert"),
            "manual mode needs tls_cert and tls_key",
        ));
    };
    let cert_path = relative(src, cert.get_ref());
    let key_path = relative(src, private_key.get_ref());
    let loaded = load_certified_key(&cert_path, &key_path).map_err(|e| {
        let span = if e.about_key {
            private_key.span()
        } else {
            cert.span()
        };
        src.error(
            Some(span),
            key(if e.about_key { "tls_key" } else { "tls_cert" }),
            e.message,
        )
    })?;
    Ok(TlsMode::Manual {
        cert: cert_path,
        key: key_path,
        loaded,
    })
}

fn acme(
    src: &Source<'_>,
    l: &RawListener,
    key: &dyn Fn(&str) -> String,
    state_dir: &Path,
    name: &str,
    has_http: bool,
) -> Result<(AcmeConfig, PathBuf), ConfigError> {
    only_for_mode(
        src,
        l,
        key,
        "manual",
        &[
            (l.tls_cert.is_some(), "tls_cert"),
            (l.tls_key.is_some(), "tls_key"),
        ],
    )?;
    // One certificate per group of names: `acme_domains` (the short form), then each
    // `[[listeners.certificates]]`.
    let mut groups: Vec<(&Spanned<Vec<Spanned<String>>>, String)> = Vec::new();
    if let Some(domains) = &l.acme_domains {
        groups.push((domains, key("acme_domains")));
    }
    for (j, certificate) in l.certificates.iter().flat_map(|c| c.get_ref()).enumerate() {
        groups.push((
            &certificate.get_ref().domains,
            key(&format!("certificates[{j}].domains")),
        ));
    }
    let Some((domains, domains_key)) = groups.first().cloned() else {
        return Err(src.error(
            Some(l.tls_mode.span()),
            key("acme_domains"),
            "an ACME listener needs acme_domains or [[listeners.certificates]] entries",
        ));
    };
    let mut certificates: Vec<Vec<String>> = Vec::new();
    for (group, group_key) in &groups {
        if group.get_ref().is_empty() {
            return Err(src.error(
                Some(group.span()),
                group_key.clone(),
                "must list at least one domain",
            ));
        }
        let mut names = Vec::new();
        for d in group.get_ref() {
            if let Err(problem) = certloop_core::validate_name(d.get_ref()) {
                return Err(src.error(
                    Some(d.span()),
                    group_key.clone(),
                    format!("{:?}: {problem}", d.get_ref()),
                ));
            }
            names.push(d.get_ref().clone());
        }
        certificates.push(names);
    }
    let mut certificates = certificates.into_iter();
    let names = certificates.next().unwrap_or_default();
    // Wildcards, a name listed twice: `AcmeConfig::check` below, reported at acme_domains.
    let directory = match &l.acme_directory {
        Some(d) => Directory::parse(d.get_ref())
            .map_err(|m| src.error(Some(d.span()), key("acme_directory"), m))?,
        None => Directory::Production,
    };
    let challenge = match &l.acme_challenge {
        None => ChallengeKind::TlsAlpn01,
        Some(c) => match c.get_ref().as_str() {
            "tls-alpn-01" => ChallengeKind::TlsAlpn01,
            "http-01" if has_http => ChallengeKind::Http01,
            "http-01" => {
                return Err(src.error(
                    Some(c.span()),
                    key("acme_challenge"),
                    "http-01 needs an [http] listener on port 80",
                ));
            }
            "dns-01" => ChallengeKind::Dns01,
            other => {
                return Err(src.error(
                    Some(c.span()),
                    key("acme_challenge"),
                    format!("{other:?} is not \"tls-alpn-01\", \"http-01\" or \"dns-01\""),
                ));
            }
        },
    };
    let cache_dir = l
        .acme_cache_dir
        .as_ref()
        .map_or_else(|| state_dir.join(name), |d| relative(src, d.get_ref()));
    let mut policy = Policy::default();
    if let Some(t) = &l.acme_startup_timeout {
        policy.startup_timeout = duration(src, t, &key("acme_startup_timeout"))?;
    }
    let key_type = match &l.acme_key_type {
        None => KeyType::default(),
        Some(k) => KeyType::parse(k.get_ref())
            .map_err(|m| src.error(Some(k.span()), key("acme_key_type"), m))?,
    };
    let mut config = AcmeConfig::new(names, &cache_dir)
        .directory(directory)
        .challenge(challenge)
        .key_type(key_type)
        .policy(policy);
    if let Some(profile) = &l.acme_profile {
        config = config.profile(profile.get_ref().clone());
    }
    if let Some(limit) = &l.acme_max_concurrent_orders {
        let limit = usize::try_from(*limit.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                src.error(
                    Some(limit.span()),
                    key("acme_max_concurrent_orders"),
                    "must be a whole number of at least 1",
                )
            })?;
        config = config.max_concurrent_orders(limit);
    }
    for names in certificates {
        config = config.certificate(names);
    }
    for contact in l
        .acme_contact
        .as_ref()
        .map(|c| c.get_ref().as_slice())
        .unwrap_or_default()
    {
        config = config.contact(contact.clone());
    }
    if let Some(ca) = &l.acme_directory_ca {
        config = config.extra_roots_pem(relative(src, ca.get_ref()));
    }
    if let Some(issuers) = &l.acme_issuers {
        config = with_issuers(src, l, key, issuers, config)?;
    }
    if let Some(settings) = dns01(src, l, key, challenge)? {
        config = config.dns01_rfc2136(settings);
    }
    // The library's own check (it reads the CA file), reported at the key that set the input.
    if let Err(StartError::Config { field, problem }) = config.check() {
        let (span, name) = match field {
            "extra_roots_pem" => (
                l.acme_directory_ca.as_ref().map(|c| c.span()),
                "acme_directory_ca",
            ),
            "policy" => (
                l.acme_startup_timeout.as_ref().map(|t| t.span()),
                "acme_startup_timeout",
            ),
            "contact" => (l.acme_contact.as_ref().map(|c| c.span()), "acme_contact"),
            "dns01_rfc2136" => (
                l.acme_dns_key_file.as_ref().map(|k| k.span()),
                "acme_dns_key_file",
            ),
            "profile" | "fallback_issuer" | "eab" if l.acme_issuers.is_some() => {
                (l.acme_issuers.as_ref().map(|i| i.span()), "acme_issuers")
            }
            "profile" => (l.acme_profile.as_ref().map(|p| p.span()), "acme_profile"),
            "directory" => (
                l.acme_directory.as_ref().map(|d| d.span()),
                "acme_directory",
            ),
            "domains" => return Err(src.error(Some(domains.span()), domains_key, problem)),
            other => (None, other),
        };
        return Err(src.error(span, key(name), problem));
    }
    Ok((config, cache_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(Path::new("/etc/certloop.toml"), text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const ACME: &str = "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:8443\"\nupstream = \"http://127.0.0.1:8080\"\ntls_mode = \"acme\"\nacme_domains = [\"example.com\"]\n";

    #[test]
    fn accepts_an_acme_listener() {
        let config = parse(Path::new("/etc/certloop.toml"), ACME).unwrap();
        assert_eq!(config.listeners[0].name, "web");
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
        let config = parse(
            Path::new("/etc/certloop.toml"),
            &format!("shutdown_grace = \"5s\"\n{ACME}"),
        )
        .unwrap();
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
        assert!(matches!(config.listeners[0].tls, TlsMode::Acme(_)));
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_rejected() {
        let dir = std::env::temp_dir().join(format!("certloop-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), other_key.serialize_pem()).unwrap();
        let text = ACME.replace("\"acme\"", "\"manual\"").replace(
            "acme_domains = [\"example.com\"]\n",
            "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        );
        let error = match parse(&dir.join("certloop.toml"), &text) {
            Ok(_) => panic!("mismatched pair accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains(":7: listeners[0].tls_key") && error.contains("does not match"),
            "{error}"
        );
        assert!(!error.contains("PRIVATE KEY"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limits_default_and_are_overridden_globally_then_per_listener() {
        let config = parse(Path::new("/etc/certloop.toml"), ACME).unwrap();
        assert_eq!(config.listeners[0].limits, Limits::default());
        assert!(config.listeners[0].trusted_proxies.is_empty());
        let text = format!(
            "[limits]\nidle_timeout = \"5s\"\nmax_connections = 50\n\
             [http]\nbind = \"127.0.0.1:8080\"\n{ACME}\
             trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
             [listeners.limits]\nmax_connections = 7\nmax_connections_per_ip = 0\n"
        );
        let config = parse(Path::new("/etc/certloop.toml"), &text).unwrap();
        let http = config.http.unwrap().limits;
        assert_eq!(http.idle_timeout, Duration::from_secs(5));
        assert_eq!(http.max_connections, 50);
        let listener = &config.listeners[0];
        assert_eq!(listener.limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(listener.limits.max_connections, 7);
        assert_eq!(listener.limits.max_connections_per_ip, 0);
        assert_eq!(
            listener.limits.tls_handshake_timeout,
            Limits::default().tls_handshake_timeout
        );
        assert_eq!(listener.trusted_proxies.len(), 2);
    }

    #[test]
    fn bad_limits_name_file_line_and_key() {
        let zero = err(&format!("[limits]\nidle_timeout = \"0s\"\n{ACME}"));
        assert!(
            zero.contains(":2: limits.idle_timeout: must be more than zero"),
            "{zero}"
        );
        let small = err(&format!(
            "[limits]\nmax_request_header_bytes = 1000\n{ACME}"
        ));
        assert!(
            small.contains(
                ":2: limits.max_request_header_bytes: 1000 is out of range: use from 8192"
            ),
            "{small}"
        );
        let negative = err(&format!(
            "{ACME}[listeners.limits]\nmax_connections_per_ip = -1\n"
        ));
        assert!(
            negative.contains(":8: listeners[0].limits.max_connections_per_ip"),
            "{negative}"
        );
        let no_connections = err(&format!("{ACME}[listeners.limits]\nmax_connections = 0\n"));
        assert!(
            no_connections.contains("use from 1 to 1000000"),
            "{no_connections}"
        );
        let huge = err(&format!(
            "[limits]\nidle_timeout = \"18446744073709551615s\"\n{ACME}"
        ));
        assert!(
            huge.contains(":2: limits.idle_timeout: must be at most 24h"),
            "{huge}"
        );
        let many = err(&format!("[limits]\nmax_connections = 99999999999\n{ACME}"));
        assert!(many.contains("out of range"), "{many}");
        let unknown = err(&format!("[limits]\nmax_conns = 5\n{ACME}"));
        assert!(
            unknown.contains(":2") && unknown.contains("max_conns"),
            "{unknown}"
        );
        let range = err(&format!("{ACME}trusted_proxies = [\"10.0.0.0/33\"]\n"));
        assert!(
            range.contains(":7: listeners[0].trusted_proxies: \"10.0.0.0/33\": the prefix length"),
            "{range}"
        );
    }

    #[test]
    fn the_production_example_is_valid() {
        let text = include_str!("../../examples/production.toml");
        // The manual listener's files exist only on a real server.
        let acme_part = &text[..text.find("# An internal service").expect("manual part")];
        let config = parse(Path::new("/etc/certloop/certloop.toml"), acme_part)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.admin.is_some() && config.access_log.is_some() && config.http.is_some());
    }

    #[test]
    fn a_listener_lists_several_certificates() {
        let text = format!(
            "{ACME}[[listeners.certificates]]\ndomains = [\"shop.example.com\"]\n\
             [[listeners.certificates]]\ndomains = [\"blog.example.com\", \"www.blog.example.com\"]\n"
        );
        let config = parse(Path::new("/etc/certloop.toml"), &text).unwrap();
        let TlsMode::Acme(acme) = &config.listeners[0].tls else {
            panic!("acme")
        };
        let printed = format!("{acme:?}");
        assert!(
            printed.contains("[[\"example.com\"], [\"shop.example.com\"], [\"blog.example.com\", \"www.blog.example.com\"]]"),
            "{printed}"
        );
        let only_groups = text.replace("acme_domains = [\"example.com\"]\n", "");
        assert!(parse(Path::new("/etc/certloop.toml"), &only_groups).is_ok());
        let shared = err(&text.replace("shop.example.com", "example.com"));
        assert!(shared.contains("listeners[0].acme_domains"), "{shared}");
        let bad = err(&text.replace("\"blog.example.com\",", "\"bl og.example.com\","));
        assert!(
            bad.contains(":10: listeners[0].certificates[1].domains"),
            "{bad}"
        );
        let empty = err(&format!("{ACME}[[listeners.certificates]]\ndomains = []\n"));
        assert!(
            empty.contains(":8: listeners[0].certificates[0].domains: must list"),
            "{empty}"
        );
        let manual = err(&format!(
            "{}[[listeners.certificates]]\ndomains = [\"a.example.com\"]\n",
            ACME.replace("\"acme\"", "\"manual\"")
                .replace("acme_domains = [\"example.com\"]\n", "")
        ));
        assert!(
            manual.contains("certificates: only for tls_mode = \"acme\""),
            "{manual}"
        );
    }

    #[test]
    fn redis_storage_is_shared_by_acme_listeners_and_its_password_read_from_a_file() {
        let dir = std::env::temp_dir().join(format!("certloop-storage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("redis.pw");
        std::fs::write(&password, "s3cret\n").unwrap();
        let text = format!(
            "[storage]\nbackend = \"redis\"\nurl = \"rediss://redis.internal:6380/1\"\n\
             password_file = \"{}\"\nkey_prefix = \"edge:\"\nlease = \"20s\"\n{ACME}",
            password.display()
        );
        let config = parse(Path::new("/etc/certloop.toml"), &text).expect("valid");
        let TlsMode::Acme(acme) = &config.listeners[0].tls else {
            panic!("an ACME listener");
        };
        let printed = format!("{acme:?}");
        assert!(
            printed.contains("rediss://redis.internal:6380/1") && printed.contains("edge:"),
            "{printed}"
        );
        assert!(
            !printed.contains("s3cret"),
            "the password is never printed: {printed}"
        );
        let in_url = err(&format!(
            "[storage]\nbackend = \"redis\"\nurl = \"redis://u:pw@host\"\n{ACME}"
        ));
        assert!(
            in_url.contains(":3: storage.url")
                && in_url.contains("password")
                && !in_url.contains("pw@"),
            "{in_url}"
        );
        let missing = err(&format!(
            "[storage]\nbackend = \"redis\"\npassword_file = \"/nonexistent/pw\"\nurl = \"redis://h\"\n{ACME}"
        ));
        assert!(
            missing.contains(":3: storage.password_file") && missing.contains("/nonexistent/pw"),
            "{missing}"
        );
        let backend = err(&format!("[storage]\nbackend = \"etcd\"\n{ACME}"));
        assert!(
            backend.contains("storage.backend") && backend.contains("\"etcd\""),
            "{backend}"
        );
        let no_url = err(&format!("[storage]\nbackend = \"redis\"\n{ACME}"));
        assert!(no_url.contains("storage.url"), "{no_url}");
        let stray = err(&format!(
            "[storage]\nbackend = \"directory\"\nlease = \"5s\"\n{ACME}"
        ));
        assert!(
            stray.contains(":3: storage.lease: only for backend = \"redis\""),
            "{stray}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_acme_listeners_cannot_share_a_cache_directory() {
        let second = ACME
            .replace("\"web\"", "\"api\"")
            .replace("8443", "9443")
            .replace("example.com", "api.example.com");
        let shared = err(&format!(
            "{ACME}acme_cache_dir = \"/var/cache/certloop\"\n{second}acme_cache_dir = \"/var/cache/certloop/\"\n"
        ));
        assert!(
            shared.contains(":14: listeners[1].acme_cache_dir")
                && shared.contains("/var/cache/certloop")
                && shared.contains("listener \"web\""),
            "{shared}"
        );
        // By default each listener has its own directory under state_dir.
        let text = format!("state_dir = \"/var/lib/x\"\n{ACME}{second}");
        assert!(parse(Path::new("/etc/certloop.toml"), &text).is_ok());
        let named = err(&format!(
            "state_dir = \"/var/lib/x\"\n{ACME}{second}acme_cache_dir = \"/var/lib/x/web\"\n"
        ));
        assert!(
            named.contains(":14: listeners[1].acme_cache_dir"),
            "{named}"
        );
    }

    #[test]
    fn the_access_log_goes_to_stdout_or_a_file_as_json_or_common() {
        let parsed = |table: &str| {
            let text = format!("{table}{ACME}");
            parse(Path::new("/etc/certloop/certloop.toml"), &text)
                .unwrap()
                .access_log
        };
        assert_eq!(parsed(""), None);
        let stdout = parsed("[access_log]\n").expect("on");
        assert_eq!((stdout.path, stdout.format), (None, Format::Json));
        let file =
            parsed("[access_log]\npath = \"access.log\"\nformat = \"common\"\n").expect("on");
        assert_eq!(file.path, Some(PathBuf::from("/etc/certloop/access.log")));
        assert_eq!(file.format, Format::Common);
        let bad = err(&format!("[access_log]\nformat = \"xml\"\n{ACME}"));
        assert!(bad.contains(":2: access_log.format: \"xml\""), "{bad}");
    }

    #[test]
    fn the_admin_listener_is_loopback_unless_allowed() {
        let config = parse(
            Path::new("/etc/certloop.toml"),
            &format!("[admin]\nbind = \"127.0.0.1:9090\"\n{ACME}"),
        )
        .unwrap();
        let admin = config.admin.expect("[admin] is on").bind;
        assert_eq!(admin, "127.0.0.1:9090".parse().unwrap());
        let remote = err(&format!("[admin]\nbind = \"0.0.0.0:9090\"\n{ACME}"));
        assert!(
            remote.contains(":2: admin.bind") && remote.contains("allow_remote"),
            "{remote}"
        );
        let allowed = format!("[admin]\nbind = \"0.0.0.0:9090\"\nallow_remote = true\n{ACME}");
        assert!(parse(Path::new("/etc/certloop.toml"), &allowed).is_ok());
        let clash = err(&format!("[admin]\nbind = \"127.0.0.1:8443\"\n{ACME}"));
        assert!(
            clash.contains("listeners[0].bind: 127.0.0.1:8443 is used twice"),
            "{clash}"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let unknown = err(&format!("{ACME}colour = \"blue\"\n"));
        assert!(
            unknown.starts_with("/etc/certloop.toml:7") && unknown.contains("colour"),
            "{unknown}"
        );
        let wrong_type = err(&ACME.replace("\"127.0.0.1:8443\"", "8443"));
        assert!(wrong_type.contains(":3"), "{wrong_type}");
        let missing = err(&ACME.replace("upstream = \"http://127.0.0.1:8080\"\n", ""));
        assert!(missing.contains("upstream"), "{missing}");
        let duplicate = err(&format!("{ACME}{}", ACME.replace("8443", "9443")));
        assert!(
            duplicate.contains(":8: listeners[1].name: duplicate"),
            "{duplicate}"
        );
        let bind_twice = err(&format!("{ACME}{}", ACME.replace("\"web\"", "\"api\"")));
        assert!(bind_twice.contains(":9: listeners[1].bind"), "{bind_twice}");
        let no_domains = err(&ACME.replace("acme_domains = [\"example.com\"]\n", ""));
        assert!(
            no_domains.contains("listeners[0].acme_domains"),
            "{no_domains}"
        );
        let wildcard = err(&ACME.replace("example.com", "*.example.com"));
        assert!(
            wildcard.contains(":6: listeners[0].acme_domains") && wildcard.contains("DNS-01"),
            "{wildcard}"
        );
        let bad_domain = err(&ACME.replace("example.com", "exa mple.com"));
        assert!(
            bad_domain.contains(":6: listeners[0].acme_domains"),
            "{bad_domain}"
        );
        let other_mode = err(&format!("{ACME}tls_cert = \"c.pem\"\n"));
        assert!(
            other_mode.contains(":5: listeners[0].tls_cert: only for tls_mode = \"manual\""),
            "{other_mode}"
        );
        let no_ca_file = err(&format!(
            "{ACME}acme_directory_ca = \"/nonexistent/ca.pem\"\n"
        ));
        assert!(
            no_ca_file.contains(":7: listeners[0].acme_directory_ca")
                && no_ca_file.contains("/nonexistent/ca.pem"),
            "{no_ca_file}"
        );
        let no_orders = err(&format!("{ACME}acme_max_concurrent_orders = 0\n"));
        assert!(
            no_orders.contains(":7: listeners[0].acme_max_concurrent_orders: must be"),
            "{no_orders}"
        );
        let http01 = err(&format!("{ACME}acme_challenge = \"http-01\"\n"));
        assert!(
            http01.contains(":7") && http01.contains("[http]"),
            "{http01}"
        );
        let manual = err(&ACME.replace("\"acme\"", "\"manual\"").replace(
            "acme_domains = [\"example.com\"]\n",
            "tls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"\n",
        ));
        assert!(
            manual.contains(":6: listeners[0].tls_cert") && manual.contains("/nonexistent.pem"),
            "{manual}"
        );
        let key_type = err(&format!("{ACME}acme_key_type = \"ed25519\"\n"));
        assert!(
            key_type.contains(":7: listeners[0].acme_key_type")
                && key_type.contains("ecdsa-p256, ecdsa-p384, rsa-2048, rsa-4096"),
            "{key_type}"
        );
        let profile = err(&format!("{ACME}acme_profile = \"\"\n"));
        assert!(
            profile.contains(":7: listeners[0].acme_profile"),
            "{profile}"
        );
        let parsed = parse(
            Path::new("/etc/certloop.toml"),
            &format!("{ACME}acme_key_type = \"rsa-2048\"\nacme_profile = \"shortlived\"\n"),
        )
        .expect("valid");
        let TlsMode::Acme(acme) = &parsed.listeners[0].tls else {
            panic!("not ACME")
        };
        let mixed = err(&format!(
            "{ACME}acme_directory = \"staging\"\n[[listeners.acme_issuers]]\ndirectory = \"production\"\n"
        ));
        assert!(
            mixed.contains("listeners[0].acme_issuers") && mixed.contains("move acme_directory"),
            "{mixed}"
        );
        let half_eab = err(&format!(
            "{ACME}[[listeners.acme_issuers]]\ndirectory = \"production\"\neab_kid = \"k\"\n"
        ));
        assert!(
            half_eab.contains("acme_issuers[0].eab_kid") && half_eab.contains("go together"),
            "{half_eab}"
        );
        let no_key_file = err(&format!(
            "{ACME}[[listeners.acme_issuers]]\ndirectory = \"production\"\neab_kid = \"k\"\n\
             eab_hmac_key_file = \"/nonexistent/hmac\"\n"
        ));
        assert!(
            no_key_file.contains("acme_issuers[0].eab_hmac_key_file")
                && no_key_file.contains("/nonexistent/hmac"),
            "{no_key_file}"
        );
        let two = parse(
            Path::new("/etc/certloop.toml"),
            &format!(
                "{ACME}[[listeners.acme_issuers]]\ndirectory = \"staging\"\nprofile = \"shortlived\"\n\
                 [[listeners.acme_issuers]]\ndirectory = \"https://acme.zerossl.com/v2/DV90\"\n"
            ),
        )
        .expect("valid");
        let TlsMode::Acme(two) = &two.listeners[0].tls else {
            panic!("not ACME")
        };
        let issuers = two.issuers();
        assert_eq!(issuers.len(), 2);
        assert_eq!(
            issuers[0].directory_url(),
            certloop_tokio::LETS_ENCRYPT_STAGING
        );
        assert_eq!(
            issuers[1].directory_url(),
            "https://acme.zerossl.com/v2/DV90"
        );
        let dns_without_keys = err(&format!("{ACME}acme_challenge = \"dns-01\"\n"));
        assert!(
            dns_without_keys.contains(":7: listeners[0].acme_challenge")
                && dns_without_keys.contains("acme_dns_server is missing"),
            "{dns_without_keys}"
        );
        let dns_keys_alone = err(&format!("{ACME}acme_dns_zone = \"example.com\"\n"));
        assert!(
            dns_keys_alone.contains("acme_dns_zone") && dns_keys_alone.contains("only used with"),
            "{dns_keys_alone}"
        );
        let no_secret = err(&format!(
            "{ACME}acme_challenge = \"dns-01\"\nacme_dns_server = \"127.0.0.1:53\"\n\
             acme_dns_zone = \"example.com\"\nacme_dns_key_name = \"k\"\n\
             acme_dns_key_file = \"/nonexistent/tsig.key\"\n"
        ));
        assert!(
            no_secret.contains(":11: listeners[0].acme_dns_key_file")
                && no_secret.contains("/nonexistent/tsig.key"),
            "{no_secret}"
        );
        let wildcard_http = err(&ACME.replace("\"example.com\"", "\"*.example.com\""));
        assert!(wildcard_http.contains("DNS-01"), "{wildcard_http}");
        let printed = format!("{:?}", acme.as_ref());
        assert!(
            printed.contains("key_type: Rsa2048") && printed.contains("Some(\"shortlived\")"),
            "{printed}"
        );
    }
}
