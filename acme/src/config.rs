//! What an embedder configures: the certificates, the CA directory, contacts, the challenge,
//! the policy, and what can go wrong at launch.

use std::fmt;
use std::path::{Path, PathBuf};

use certloop_core::{CertConfig, Policy, UnixTime};
use rustls_pki_types::CertificateDer;

use crate::dns_wire::TsigKey;
use crate::dns01::{Rfc2136Settings, in_zone};
use crate::fleet::RedisSettings;
use crate::key_type::KeyType;
use crate::order::{ChallengeKind, ExternalAccount};
use crate::store::StoreError;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Which ACME directory to use.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Directory {
    /// Let's Encrypt production.
    Production,
    /// Let's Encrypt staging.
    Staging,
    /// Any directory URL (https).
    Url(String),
}

impl Directory {
    /// `production`, `staging`, or an `https://` URL.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "production" => Ok(Self::Production),
            "staging" => Ok(Self::Staging),
            url if url.starts_with("https://") && url.len() > "https://".len() => {
                Ok(Self::Url(url.to_owned()))
            }
            other => Err(format!(
                "ACME directory {other:?} is not \"production\", \"staging\" or an https:// URL"
            )),
        }
    }

    /// The directory URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Production => LETS_ENCRYPT_PRODUCTION,
            Self::Staging => LETS_ENCRYPT_STAGING,
            Self::Url(url) => url,
        }
    }
}

/// A fallback CA (see [`AcmeConfig::fallback_issuer`]): its directory, account contacts,
/// External Account Binding and profile, as [`AcmeConfig`] has them for the preferred CA.
/// `Debug` never prints the EAB key.
#[derive(Clone, PartialEq, Eq)]
pub struct Issuer {
    pub(crate) directory: Directory,
    pub(crate) contacts: Vec<String>,
    pub(crate) eab: Option<(String, String)>,
    pub(crate) profile: Option<String>,
}

impl Issuer {
    /// The CA at `directory`, with no contact, EAB or profile.
    pub fn new(directory: Directory) -> Self {
        Self {
            directory,
            contacts: Vec::new(),
            eab: None,
            profile: None,
        }
    }

    /// Adds an account contact, e.g. `mailto:ops@example.com`.
    pub fn contact(mut self, contact: impl Into<String>) -> Self {
        self.contacts.push(contact.into());
        self
    }

    /// Uses External Account Binding with this CA (as [`AcmeConfig::eab`]).
    pub fn eab(mut self, kid: impl Into<String>, hmac_key_base64url: impl Into<String>) -> Self {
        self.eab = Some((kid.into(), hmac_key_base64url.into()));
        self
    }

    /// Orders with this ACME profile from this CA (as [`AcmeConfig::profile`]).
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The directory URL.
    pub fn directory_url(&self) -> &str {
        self.directory.url()
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("directory", &self.directory)
            .field("contacts", &self.contacts)
            .field("eab_kid", &self.eab.as_ref().map(|(kid, _)| kid))
            .field("profile", &self.profile)
            .finish()
    }
}

/// What to manage: built with [`AcmeConfig::new`] and the methods that follow it, checked as a
/// whole by [`AcmeConfig::check`] (and again by `launch`). Nothing fails in the middle of the
/// chain: files are read and keys decoded when the configuration is checked, and each error
/// names the method whose input is wrong.
/// Two configurations are equal when they manage the same certificates the same way (a
/// proxy compares them to decide whether a reload needs a new launch). `Debug` never prints
/// the EAB key.
#[derive(Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    pub(crate) certs: Vec<Vec<String>>,
    /// The CA asked first: directory, contacts, EAB, profile.
    pub(crate) preferred: Issuer,
    pub(crate) cache_dir: PathBuf,
    pub(crate) challenge: ChallengeKind,
    pub(crate) extra_roots_files: Vec<PathBuf>,
    pub(crate) fallbacks: Vec<Issuer>,
    pub(crate) dns01: Option<Rfc2136Settings>,
    pub(crate) fleet: Option<RedisSettings>,
    pub(crate) key_type: KeyType,
    pub(crate) policy: Policy,
    pub(crate) retry_now: bool,
    pub(crate) max_concurrent_orders: usize,
}

impl fmt::Debug for AcmeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeConfig")
            .field("certs", &self.certs)
            .field("preferred", &self.preferred)
            .field("cache_dir", &self.cache_dir)
            .field("challenge", &self.challenge)
            .field("extra_roots_files", &self.extra_roots_files)
            .field("fallbacks", &self.fallbacks)
            .field("dns01", &self.dns01)
            .field("fleet", &self.fleet)
            .field("key_type", &self.key_type)
            .field("policy", &self.policy)
            .field("retry_now", &self.retry_now)
            .field("max_concurrent_orders", &self.max_concurrent_orders)
            .finish()
    }
}

/// What checking a configuration builds and reads from outside it.
pub(crate) struct Resolved {
    /// The core's configuration of each certificate, in configuration order.
    pub(crate) certs: Vec<CertConfig>,
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    /// Each issuer's EAB, in [`AcmeConfig::issuers`] order.
    pub(crate) eabs: Vec<Option<ExternalAccount>>,
    /// The TSIG key DNS-01 signs its updates with.
    pub(crate) dns_key: Option<TsigKey>,
}

/// How many orders talk to the CA at once unless [`AcmeConfig::max_concurrent_orders`] says.
pub const DEFAULT_MAX_CONCURRENT_ORDERS: usize = 16;

/// The most CAs a certificate can be ordered from.
const MAX_ISSUERS: usize = 8;

impl AcmeConfig {
    /// One certificate covering `domains` (more with [`AcmeConfig::certificate`]), cached in
    /// `cache_dir` (one directory per configuration; it is created 0700 if missing). Defaults:
    /// Let's Encrypt production, TLS-ALPN-01, no contact, [`Policy::default`].
    pub fn new(
        domains: impl IntoIterator<Item = impl Into<String>>,
        cache_dir: impl AsRef<Path>,
    ) -> Self {
        Self {
            certs: vec![domains.into_iter().map(Into::into).collect()],
            preferred: Issuer::new(Directory::Production),
            cache_dir: cache_dir.as_ref().to_owned(),
            challenge: ChallengeKind::TlsAlpn01,
            extra_roots_files: Vec::new(),
            fallbacks: Vec::new(),
            dns01: None,
            fleet: None,
            key_type: KeyType::EcdsaP256,
            policy: Policy::default(),
            retry_now: false,
            max_concurrent_orders: DEFAULT_MAX_CONCURRENT_ORDERS,
        }
    }

    /// Also manages a certificate for these names (served by SNI; the first certificate is
    /// what clients without SNI get).
    pub fn certificate(mut self, domains: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.certs
            .push(domains.into_iter().map(Into::into).collect());
        self
    }

    /// Uses this ACME directory (default: Let's Encrypt production).
    pub fn directory(mut self, directory: Directory) -> Self {
        self.preferred.directory = directory;
        self
    }

    /// Uses the ACME directory at this `https://` URL.
    pub fn directory_url(self, url: impl Into<String>) -> Self {
        self.directory(Directory::Url(url.into()))
    }

    /// Adds an account contact, e.g. `mailto:ops@example.com`.
    pub fn contact(mut self, contact: impl Into<String>) -> Self {
        self.preferred = self.preferred.contact(contact);
        self
    }

    /// Uses this challenge type (default: TLS-ALPN-01).
    pub fn challenge(mut self, challenge: ChallengeKind) -> Self {
        self.challenge = challenge;
        self
    }

    /// Also trusts every certificate in this PEM file for the directory's HTTPS (e.g. Pebble's
    /// test CA). The file is read when the configuration is checked.
    pub fn extra_roots_pem(mut self, path: impl AsRef<Path>) -> Self {
        self.extra_roots_files.push(path.as_ref().to_owned());
        self
    }

    /// The challenge that proves control of the names.
    pub fn challenge_kind(&self) -> ChallengeKind {
        self.challenge
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Uses External Account Binding with the CA's key id and its base64url HMAC key. The key
    /// is decoded when the configuration is checked, and never printed.
    pub fn eab(mut self, kid: impl Into<String>, hmac_key_base64url: impl Into<String>) -> Self {
        self.preferred = self.preferred.eab(kid, hmac_key_base64url);
        self
    }

    /// Orders with this ACME profile (e.g. Let's Encrypt's `shortlived` for six-day
    /// certificates, `tlsserver` for 45-day ones; default: none, the CA's default). Launch checks
    /// it against the directory's `meta.profiles` when the CA answers, and fails with
    /// [`StartError::Config`] (field `profile`, naming what the CA offers) when it is missing.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.preferred = self.preferred.profile(profile);
        self
    }

    /// Proves control of the names with DNS-01, publishing the TXT records by RFC 2136 dynamic
    /// updates signed with TSIG (and so can obtain wildcard names such as `*.example.com`).
    /// Every name must be inside `settings.zone`; the secret file is read when the
    /// configuration is checked, and never printed.
    pub fn dns01_rfc2136(mut self, settings: Rfc2136Settings) -> Self {
        self.challenge = ChallengeKind::Dns01;
        self.dns01 = Some(settings);
        self
    }

    /// Fleet mode: shares certificates, the ACME account and challenge answers with the other
    /// instances using the same Redis (and key prefix), and orders each renewal once, under a
    /// fenced lease (`docs/fleet.md`). The cache directory stays this instance's local copy,
    /// which it starts from and serves when Redis is down.
    pub fn fleet_redis(mut self, settings: RedisSettings) -> Self {
        self.fleet = Some(settings);
        self
    }

    /// Orders from this CA first: its directory, contacts, EAB and profile replace what
    /// [`AcmeConfig::directory`], [`AcmeConfig::contact`], [`AcmeConfig::eab`] and
    /// [`AcmeConfig::profile`] set.
    pub fn preferred_issuer(mut self, issuer: Issuer) -> Self {
        self.preferred = issuer;
        self
    }

    /// Falls back to this CA when the ones before it fail an order for a reason that is not the
    /// request's fault (unreachable, a server error, a rate limit); call it again for more, in
    /// order of preference. Each certificate is then cached under the directory of the CA that
    /// issued it (a launch serves the newest), and every renewal asks the preferred CA first.
    pub fn fallback_issuer(mut self, issuer: Issuer) -> Self {
        self.fallbacks.push(issuer);
        self
    }

    /// Every CA in order of preference: the one [`AcmeConfig::directory`] and its neighbours
    /// configure, then the fallbacks.
    pub fn issuers(&self) -> Vec<Issuer> {
        std::iter::once(&self.preferred)
            .chain(&self.fallbacks)
            .cloned()
            .collect()
    }

    /// Generates certificate keys of this type (default: ECDSA P-256, which rustls-acme can
    /// read back; RSA cannot be). A change applies from the next order: the cached certificate
    /// is served until its renewal.
    pub fn key_type(mut self, key_type: KeyType) -> Self {
        self.key_type = key_type;
        self
    }

    /// Uses this renewal and retry policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Talks to the CA about at most this many orders at a time (default
    /// [`DEFAULT_MAX_CONCURRENT_ORDERS`]); the others wait their turn. A first start with
    /// thousands of certificates then does not send the CA thousands of orders at once (CAs
    /// rate-limit new orders per account, and a test CA can stall under them). The wait counts
    /// toward the policy's order timeout and, at a first start, toward its startup timeout:
    /// that must cover about `certificates / limit` orders one after the other. At least 1.
    pub fn max_concurrent_orders(mut self, limit: usize) -> Self {
        self.max_concurrent_orders = limit;
        self
    }

    /// Orders at once even if an earlier run's orders were answered with errors and their
    /// persisted backoff forbids ordering yet. For an operator who fixed the cause (a name
    /// that did not resolve here, a firewall); set it for one start, never on every start:
    /// the backoff is what keeps a restart loop from burning the CA's rate limits. A wait the
    /// CA imposed itself (a rate limit with Retry-After) is kept.
    pub fn retry_now(mut self) -> Self {
        self.retry_now = true;
        self
    }

    /// Checks the whole configuration without contacting the CA or opening the cache
    /// directory: the names (no wildcards, no name in two certificates), the directory URL
    /// (`https://`), the contacts (`mailto:`), the policy, the extra roots file and the EAB
    /// key.
    pub fn check(&self) -> Result<(), StartError> {
        self.resolve().map(|_| ())
    }

    pub(crate) fn resolve(&self) -> Result<Resolved, StartError> {
        let issuers = self.issuers();
        if issuers.len() > MAX_ISSUERS {
            let problem = format!("{} issuers; at most {MAX_ISSUERS}", issuers.len());
            return Err(invalid("fallback_issuer", problem));
        }
        let dns_key = match (self.challenge, &self.dns01) {
            (ChallengeKind::Dns01, Some(settings)) => {
                let key = settings
                    .read_key()
                    .map_err(|e| invalid("dns01_rfc2136", e))?;
                let outside = self
                    .certs
                    .iter()
                    .flatten()
                    .find(|n| !in_zone(n, &settings.zone));
                if let Some(name) = outside {
                    let problem = format!(
                        "{name:?} is not in the zone {:?} that DNS-01 updates",
                        settings.zone
                    );
                    return Err(invalid("domains", problem));
                }
                Some(key)
            }
            (ChallengeKind::Dns01, None) => {
                let problem = "dns-01 needs the DNS server to update: call dns01_rfc2136";
                return Err(invalid("challenge", problem));
            }
            _ => None,
        };
        let certs = cert_configs(&self.certs, self.challenge)
            .map_err(|p| invalid("domains", p))?
            .into_iter()
            .map(|cert| cert.with_issuers(issuers.len()))
            .collect();
        self.policy
            .validate()
            .map_err(|e| invalid("policy", e.to_string()))?;
        if self.max_concurrent_orders == 0 {
            return Err(invalid("max_concurrent_orders", "must be at least 1"));
        }
        let mut extra_roots = Vec::new();
        for path in &self.extra_roots_files {
            extra_roots.extend(read_roots(path).map_err(|e| invalid("extra_roots_pem", e))?);
        }
        if let Some(fleet) = &self.fleet {
            fleet.check().map_err(|e| invalid("fleet_redis", e))?;
        }
        let mut eabs = Vec::new();
        for (i, issuer) in issuers.iter().enumerate() {
            // The preferred CA's errors name its own methods; a fallback's, the fallback.
            let field = |own: &'static str| if i == 0 { own } else { "fallback_issuer" };
            let which = if i == 0 {
                String::new()
            } else {
                format!("issuer {} ({}): ", i + 1, issuer.directory.url())
            };
            if let Directory::Url(url) = &issuer.directory {
                Directory::parse(url)
                    .map_err(|problem| invalid(field("directory"), format!("{which}{problem}")))?;
            }
            if let Some(bad) = issuer.contacts.iter().find(|c| !c.starts_with("mailto:")) {
                let problem =
                    format!("{which}{bad:?} is not a mailto: URI (e.g. mailto:ops@example.com)");
                return Err(invalid(field("contact"), problem));
            }
            if let Some(profile) = &issuer.profile {
                let printable = |b: u8| b.is_ascii_graphic() && b != b'"';
                if profile.is_empty() || profile.len() > 64 || !profile.bytes().all(printable) {
                    let problem = format!(
                        "{which}{profile:?} is not a profile name (1 to 64 visible characters)"
                    );
                    return Err(invalid(field("profile"), problem));
                }
            }
            eabs.push(match &issuer.eab {
                Some((kid, key)) => Some(ExternalAccount {
                    kid: kid.clone(),
                    hmac_key: decode_hmac_key(key)
                        .map_err(|e| invalid(field("eab"), format!("{which}{e}")))?,
                }),
                None => None,
            });
        }
        Ok(Resolved {
            certs,
            extra_roots,
            eabs,
            dns_key,
        })
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> StartError {
    StartError::Config {
        field,
        problem: problem.into(),
    }
}

/// The core's configuration of each certificate, each with a jitter seed derived from its
/// names (stable across restarts). Refused: names that the challenges certloop can answer will
/// never obtain, names a certificate lists twice or that are not DNS names, and names that two
/// certificates share (their challenge answers and SNI would collide).
fn cert_configs(
    certs: &[Vec<String>],
    challenge: ChallengeKind,
) -> Result<Vec<CertConfig>, String> {
    if certs.iter().any(Vec::is_empty) {
        return Err("a certificate needs at least one name".into());
    }
    for name in certs.iter().flatten() {
        if challenge == ChallengeKind::Dns01 && certloop_core::is_ip_address(name) {
            return Err(format!(
                "{name:?}: an IP address cannot be validated with DNS-01; use tls-alpn-01 or \
                 http-01"
            ));
        }
        if name.starts_with("*.") && challenge != ChallengeKind::Dns01 {
            return Err(format!(
                "{name:?}: a wildcard name can only be validated with DNS-01, and {} cannot \
                 obtain it; list the names you serve instead",
                challenge.name()
            ));
        }
    }
    let configs = (certs.iter())
        .map(|names| CertConfig::new(names.iter().cloned(), seed_of(names)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    // Each name to the first certificate naming it (and how it spelt it): linear, for ten
    // thousand certificates.
    let mut owner: std::collections::HashMap<String, (usize, &str)> =
        std::collections::HashMap::new();
    for (i, names) in certs.iter().enumerate() {
        for name in names {
            match owner.get(&name.to_ascii_lowercase()) {
                Some(&(first, spelt)) if first != i => {
                    return Err(format!(
                        "{spelt:?} is in two certificates ({} and {}); give each name to one \
                         certificate",
                        certs[first].join(", "),
                        names.join(", ")
                    ));
                }
                Some(_) => {}
                None => {
                    owner.insert(name.to_ascii_lowercase(), (i, name));
                }
            }
        }
    }
    Ok(configs)
}

/// FNV-1a over the names: the same certificate gets the same renewal jitter on every start.
fn seed_of(names: &[String]) -> u64 {
    (names.iter().flat_map(|n| n.bytes())).fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificates in it", path.display()));
    }
    Ok(certs)
}

fn decode_hmac_key(key: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key.trim_end_matches('='))
        // The decoder's error quotes a byte of the key: say where, not what.
        .map_err(|_| "the HMAC key is not base64url (the key itself is not shown)".to_owned())
}

/// Why certificate management could not start.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid: `field` is the [`AcmeConfig`] method whose input is wrong
    /// (`domains` for [`AcmeConfig::new`] and [`AcmeConfig::certificate`]).
    Config {
        /// The method, e.g. `extra_roots_pem`.
        field: &'static str,
        /// What is wrong, naming the file where one was read.
        problem: String,
    },
    /// The cache directory is unusable.
    Store(StoreError),
    /// No valid certificate could be had (the failure table says: do not start).
    NoCertificate {
        /// The certificate's names.
        domains: Vec<String>,
        /// The directory URL.
        directory: String,
        /// The core's account of what happened.
        reason: String,
        /// Set when the CA answered earlier orders with errors and their backoff, persisted
        /// in the cache directory, forbids ordering before this time.
        /// [`AcmeConfig::retry_now`] orders at once once the cause is fixed.
        blocked_until: Option<UnixTime>,
    },
    /// The driver stopped before it reached a verdict (its runtime is shutting down).
    Stopped,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { field, problem } => {
                write!(f, "invalid ACME configuration: {field}: {problem}")
            }
            Self::Store(e) => write!(f, "{e}"),
            Self::NoCertificate {
                domains,
                directory,
                reason,
                ..
            } => {
                write!(f, "{} via {directory}: {reason}", domains.join(", "))
            }
            Self::Stopped => {
                f.write_str("the certificate driver stopped before a certificate was served")
            }
        }
    }
}

impl std::error::Error for StartError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: &AcmeConfig) -> (&'static str, String) {
        match config.check() {
            Err(StartError::Config { field, problem }) => (field, problem),
            other => panic!("accepted or not a configuration error: {other:?}"),
        }
    }

    #[test]
    fn wildcards_and_names_shared_between_certificates_are_refused() {
        let wildcard = AcmeConfig::new(["*.a.example"], "/tmp/c").challenge(ChallengeKind::Http01);
        let (field, problem) = refused(&wildcard);
        assert_eq!(field, "domains");
        assert!(
            problem.contains("DNS-01") && problem.contains("http-01"),
            "{problem}"
        );
        let shared = AcmeConfig::new(["a.example", "b.example"], "/tmp/c")
            .certificate(["c.example", "B.example"]);
        let (_, problem) = refused(&shared);
        assert!(
            problem.contains("\"b.example\" is in two certificates"),
            "{problem}"
        );
        let (_, problem) = refused(&AcmeConfig::new(Vec::<String>::new(), "/tmp/c"));
        assert!(problem.contains("at least one name"), "{problem}");
        let fine = AcmeConfig::new(["a.example"], "/tmp/c").certificate(["b.example"]);
        assert!(fine.check().is_ok());
    }

    #[test]
    fn directory_urls_and_contacts_are_checked() {
        let http = AcmeConfig::new(["a.example"], "/tmp/c").directory_url("http://ca.test/dir");
        assert_eq!(refused(&http).0, "directory");
        let contact = AcmeConfig::new(["a.example"], "/tmp/c").contact("ops@example.com");
        let (field, problem) = refused(&contact);
        assert!(
            field == "contact" && problem.contains("mailto:"),
            "{problem}"
        );
        let fine = AcmeConfig::new(["a.example"], "/tmp/c")
            .directory_url("https://ca.test/dir")
            .contact("mailto:ops@example.com");
        assert!(fine.check().is_ok());
    }

    #[test]
    fn files_and_keys_are_checked_with_the_method_and_path_named() {
        let missing =
            AcmeConfig::new(["a.example"], "/tmp/c").extra_roots_pem("/nonexistent/ca.pem");
        let (field, problem) = refused(&missing);
        assert_eq!(field, "extra_roots_pem");
        assert!(problem.contains("/nonexistent/ca.pem"), "{problem}");
        let eab = AcmeConfig::new(["a.example"], "/tmp/c").eab("kid-1", "not base64!");
        let (field, problem) = refused(&eab);
        assert_eq!(field, "eab");
        assert!(
            !problem.contains("not base64!"),
            "the key is never printed: {problem}"
        );
        let policy = Policy {
            startup_timeout: std::time::Duration::ZERO,
            ..Policy::default()
        };
        let (field, _) = refused(&AcmeConfig::new(["a.example"], "/tmp/c").policy(policy));
        assert_eq!(field, "policy");
    }

    #[test]
    fn directory_selection() {
        assert_eq!(
            Directory::parse("production").unwrap().url(),
            LETS_ENCRYPT_PRODUCTION
        );
        assert_eq!(
            Directory::parse("staging").unwrap().url(),
            LETS_ENCRYPT_STAGING
        );
        assert_eq!(
            Directory::parse("https://127.0.0.1:14000/dir")
                .unwrap()
                .url(),
            "https://127.0.0.1:14000/dir"
        );
        let err = Directory::parse("http://insecure.test/dir").unwrap_err();
        assert!(err.contains("https://"), "{err}");
        assert!(Directory::parse("Production").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_eab_key() {
        let config = AcmeConfig::new(["a.test"], "/tmp/x").eab("kid-1", "c2VjcmV0LWhtYWMta2V5");
        let printed = format!("{config:?}");
        assert!(printed.contains("kid-1"), "{printed}");
        assert!(!printed.contains("c2VjcmV0LWhtYWMta2V5"), "{printed}");
        assert_eq!(config.clone(), config);
        assert_ne!(config.clone().retry_now(), config);
    }
}
