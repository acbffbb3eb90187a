//! rustls plumbing shared by every listener: the one crypto provider, the server settings, the
//! certificate resolver (SNI and TLS-ALPN-01) and certificate building.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::cache::decode_cert_file;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// aws-lc-rs, restricted to AEAD suites with forward secrecy (all TLS 1.3 suites; ECDHE with
/// AES-GCM or ChaCha20-Poly1305 for TLS 1.2). The only provider in the build.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// Whether a server offers `acme-tls/1`, the ALPN protocol of TLS-ALPN-01 validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsAlpn01 {
    /// Offered: the resolver answers validations (certloop's [`CertResolver`] does).
    Answer,
    /// Not offered: certificates that do not come from a TLS-ALPN-01 order.
    Ignore,
}

/// Server settings used by every listener, manual or ACME: TLS 1.2 and 1.3 only, the suites of
/// [`provider`], ALPN `h2` and `http/1.1`, plus `acme-tls/1` for [`TlsAlpn01::Answer`].
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>, alpn01: TlsAlpn01) -> ServerConfig {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless, rotating session tickets (as nginx does by default) instead of a
    // server-side session cache: resumption without per-session state or a shared lock.
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        config.ticketer = ticketer;
    }
    if alpn01 == TlsAlpn01::Answer {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    config
}

/// A certificate ready to serve: the chain (leaf first) and the key, from a cache bundle
/// (key PEM then chain PEM), checked so that serving it cannot fail: the key loads and matches
/// the leaf's public key. Whatever reaches the core as usable has passed this check (the cache
/// on load, an order on completion); the error names the problem, never the key.
pub fn certified_key_from_bundle(bundle: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let file = decode_cert_file(bundle).map_err(|e| e.to_string())?;
    matching(certified_key(file.chain, file.key)?)
}

/// `key` when its private key matches its leaf's public key; the error never shows the key.
pub(crate) fn matching(key: Arc<CertifiedKey>) -> Result<Arc<CertifiedKey>, String> {
    match key.keys_match() {
        Ok(()) => Ok(key),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("the private key does not match the certificate".into())
        }
        Err(e) => Err(format!(
            "the private key cannot be checked against the certificate: {e}"
        )),
    }
}

/// Builds a `CertifiedKey` without webpki's end-entity parsing (which refuses the critical
/// acmeIdentifier extension of TLS-ALPN-01 certificates).
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

/// A self-signed TLS-ALPN-01 certificate for `name` (a DNS name, or an IP address, which rcgen
/// writes as an iPAddress entry as RFC 8738 asks) carrying the SHA-256 digest of the key
/// authorization in the critical acmeIdentifier extension (RFC 8737).
pub(crate) fn alpn_challenge_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    certified_key(vec![cert.der().clone()], key_der)
}

/// Chooses the certificate for each handshake: the TLS-ALPN-01 challenge certificate when the
/// client offers exactly `acme-tls/1` for a name under validation, otherwise the certificate
/// whose names cover the SNI name. Without SNI (clients connecting to an IP address send none),
/// the first configured certificate naming an IP address that is served, else the first
/// configured certificate that is served.
///
/// Locks are held only to clone an `Arc`; swaps are atomic from a handshake's point of view.
/// A lookup costs the same with one certificate or ten thousand: names are indexed.
#[derive(Default)]
pub struct CertResolver {
    /// Every managed certificate, in configuration order, indexed by name.
    certs: RwLock<Served>,
    /// Pending TLS-ALPN-01 challenges by lower-cased domain, with the order that owns each.
    challenges: RwLock<BTreeMap<String, (ChallengeOwner, Arc<CertifiedKey>)>>,
}

/// One managed certificate's names, and its certificate once there is one.
type ServedSlot = (Vec<String>, Option<Arc<CertifiedKey>>);

/// The managed certificates and their names' index.
#[derive(Default)]
struct Served {
    /// In configuration order.
    slots: Vec<ServedSlot>,
    /// Lower-cased names to their slot (the first configured, should two share one).
    by_name: HashMap<String, usize>,
    /// For `*.example.com`, `example.com` to its slot.
    wildcards: HashMap<String, usize>,
    /// The first slot in configuration order that has a certificate.
    first_served: Option<usize>,
    /// The first slot in configuration order that names an IP address and has a certificate:
    /// what a client without SNI gets, if there is one.
    first_ip_served: Option<usize>,
}

impl Served {
    fn push(&mut self, names: Vec<String>) -> usize {
        let at = self.slots.len();
        for name in &names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcards.entry(parent.to_owned()).or_insert(at),
                None => self.by_name.entry(name).or_insert(at),
            };
        }
        self.slots.push((names, None));
        at
    }

    fn slot_of(&self, names: &[String]) -> Option<usize> {
        let first = names.first()?.to_ascii_lowercase();
        let at = match first.strip_prefix("*.") {
            Some(parent) => self.wildcards.get(parent),
            None => self.by_name.get(&first),
        };
        at.copied()
            .filter(|at| self.slots[*at].0.as_slice() == names)
    }

    fn key(&self, at: Option<&usize>) -> Option<&Arc<CertifiedKey>> {
        self.slots.get(*at?)?.1.as_ref()
    }

    /// The certificate for `server_name`: the one naming it, else the wildcard covering it.
    fn lookup(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let lower;
        let name = if server_name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = server_name.to_ascii_lowercase();
            lower.as_str()
        } else {
            server_name
        };
        if let Some(key) = self.key(self.by_name.get(name)) {
            return Some(key);
        }
        let (label, parent) = name.split_once('.')?;
        if label.is_empty() || label == "*" {
            return None;
        }
        self.key(self.wildcards.get(parent))
    }
}

/// Identifies the order task that published a challenge answer, so that it removes only its
/// own answers (another order for the same name may have replaced them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeOwner(pub u64);

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<Vec<String>> = self
            .certs
            .read()
            .map(|c| c.slots.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        f.debug_struct("CertResolver")
            .field("certs", &names)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// A resolver for these certificates (each a list of names), in configuration order:
    /// that order decides which one a client without SNI gets.
    pub(crate) fn for_certificates(certificates: &[Vec<String>]) -> Self {
        let mut served = Served::default();
        for names in certificates {
            served.push(names.clone());
        }
        Self {
            certs: RwLock::new(served),
            challenges: RwLock::default(),
        }
    }

    /// Serves `key` for `names` from now on (replacing the certificate for the same names).
    pub(crate) fn install(&self, names: &[String], key: Arc<CertifiedKey>) {
        let mut certs = self.certs.write().unwrap_or_else(|e| e.into_inner());
        let at = match certs.slot_of(names) {
            Some(at) => at,
            None => certs.push(names.to_vec()),
        };
        certs.slots[at].1 = Some(key);
        certs.first_served = Some(certs.first_served.map_or(at, |first| first.min(at)));
        if names.iter().any(|n| certloop_core::is_ip_address(n)) {
            certs.first_ip_served = Some(certs.first_ip_served.map_or(at, |first| first.min(at)));
        }
    }

    /// The certificate served for exactly these names (the certificate configured with them).
    pub(crate) fn served(&self, names: &[String]) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
        certs.key(certs.slot_of(names).as_ref()).cloned()
    }

    /// Answers TLS-ALPN-01 validation for `domain` with `key`, on behalf of `owner`, until
    /// `owner`'s answers are removed or another owner's replaces it.
    pub(crate) fn add_challenge(
        &self,
        owner: ChallengeOwner,
        domain: &str,
        key: Arc<CertifiedKey>,
    ) {
        let mut challenges = self.challenges.write().unwrap_or_else(|e| e.into_inner());
        challenges.insert(domain.to_ascii_lowercase(), (owner, key));
    }

    /// Stops answering the TLS-ALPN-01 validations `owner` published.
    pub(crate) fn remove_challenges(&self, owner: ChallengeOwner) {
        let mut challenges = self.challenges.write().unwrap_or_else(|e| e.into_inner());
        challenges.retain(|_, (published_by, _)| *published_by != owner);
    }

    /// The TLS-ALPN-01 answer published for `domain`, if one is.
    pub fn challenge(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let challenges = self.challenges.read().unwrap_or_else(|e| e.into_inner());
        challenges
            .get(&domain.to_ascii_lowercase())
            .map(|(_, key)| key.clone())
    }

    /// The order tasks whose TLS-ALPN-01 answers are published.
    #[doc(hidden)]
    pub fn challenge_owners(&self) -> Vec<ChallengeOwner> {
        let challenges = self.challenges.read().unwrap_or_else(|e| e.into_inner());
        challenges.values().map(|(owner, _)| *owner).collect()
    }

    /// The certificate that would be served for `server_name` (for tests and status).
    pub fn current(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
        match server_name {
            Some(name) => certs.lookup(name),
            None => (certs.key(certs.first_ip_served.as_ref()))
                .or_else(|| certs.key(certs.first_served.as_ref())),
        }
        .cloned()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let server_name = hello.server_name();
        let mut alpn = hello.alpn().into_iter().flatten();
        let acme_only = alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none();
        if acme_only {
            let name = server_name?.to_ascii_lowercase();
            let challenges = self.challenges.read().unwrap_or_else(|e| e.into_inner());
            return challenges.get(&name).map(|(_, key)| key.clone());
        }
        self.current(server_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_has_only_aead_forward_secret_suites() {
        let p = provider();
        assert!(!p.cipher_suites.is_empty());
        for suite in &p.cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
            assert!(!name.contains("CBC"), "{name}");
        }
    }

    #[test]
    fn without_sni_the_first_configured_certificate_is_served_whatever_the_install_order() {
        let a = vec!["a.example".to_owned()];
        let b = vec!["b.example".to_owned()];
        let resolver = CertResolver::for_certificates(&[a.clone(), b.clone()]);
        assert!(resolver.current(None).is_none());
        let key_b = alpn_challenge_cert("b.example", &[1; 32]).unwrap();
        let key_a = alpn_challenge_cert("a.example", &[2; 32]).unwrap();
        resolver.install(&b, key_b.clone());
        assert!(
            Arc::ptr_eq(&resolver.current(None).unwrap(), &key_b),
            "the only one served"
        );
        resolver.install(&a, key_a.clone());
        assert!(
            Arc::ptr_eq(&resolver.current(None).unwrap(), &key_a),
            "first configured"
        );
        assert!(Arc::ptr_eq(
            &resolver.current(Some("b.example")).unwrap(),
            &key_b
        ));
    }

    #[test]
    fn without_sni_a_certificate_naming_an_ip_address_comes_first() {
        let names = vec!["a.example".to_owned()];
        let ip = vec!["192.0.2.7".to_owned()];
        let resolver = CertResolver::for_certificates(&[names.clone(), ip.clone()]);
        let key_a = alpn_challenge_cert("a.example", &[1; 32]).unwrap();
        let key_ip = alpn_challenge_cert("192.0.2.7", &[2; 32]).unwrap();
        resolver.install(&names, key_a.clone());
        assert!(Arc::ptr_eq(&resolver.current(None).unwrap(), &key_a));
        resolver.install(&ip, key_ip.clone());
        assert!(
            Arc::ptr_eq(&resolver.current(None).unwrap(), &key_ip),
            "clients of an address send no SNI"
        );
        assert!(Arc::ptr_eq(
            &resolver.current(Some("a.example")).unwrap(),
            &key_a
        ));
        // The challenge certificate names the address as an iPAddress entry.
        let (_, leaf) = x509_parser::parse_x509_certificate(key_ip.cert[0].as_ref()).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            crate::cache::san_names(&leaf),
            ["192.0.2.7"],
            "{:?}",
            san.value
        );
    }

    #[test]
    fn names_are_looked_up_exactly_then_by_wildcard_whatever_the_case() {
        let exact = vec!["a.example".to_owned(), "www.a.example".to_owned()];
        let wildcard = vec!["*.b.example".to_owned()];
        let resolver = CertResolver::for_certificates(&[exact.clone(), wildcard.clone()]);
        let key_exact = alpn_challenge_cert("a.example", &[1; 32]).unwrap();
        let key_wild = alpn_challenge_cert("x.b.example", &[2; 32]).unwrap();
        resolver.install(&exact, key_exact.clone());
        resolver.install(&wildcard, key_wild.clone());
        let served = |name| resolver.current(Some(name));
        assert!(Arc::ptr_eq(&served("WWW.A.example").unwrap(), &key_exact));
        assert!(Arc::ptr_eq(&served("x.b.example").unwrap(), &key_wild));
        assert!(
            served("b.example").is_none(),
            "a wildcard covers one more label only"
        );
        assert!(served("y.x.b.example").is_none());
        assert!(served("c.example").is_none());
        assert!(served(".b.example").is_none());
        // Ten thousand certificates: the last one is found like the first.
        let many: Vec<Vec<String>> = (0..10_000)
            .map(|i| vec![format!("site{i}.example")])
            .collect();
        let resolver = CertResolver::for_certificates(&many);
        resolver.install(&many[9_999], key_exact.clone());
        assert!(Arc::ptr_eq(
            &resolver.current(Some("site9999.example")).unwrap(),
            &key_exact
        ));
        assert!(
            Arc::ptr_eq(&resolver.current(None).unwrap(), &key_exact),
            "the only one served"
        );
        assert!(
            resolver.current(Some("site0.example")).is_none(),
            "not served yet"
        );
    }

    #[test]
    fn an_order_removes_only_its_own_challenge_answers() {
        let resolver = CertResolver::default();
        let (old, new) = (ChallengeOwner(1), ChallengeOwner(2));
        let old_key = alpn_challenge_cert("a.example", &[1; 32]).unwrap();
        let new_key = alpn_challenge_cert("a.example", &[2; 32]).unwrap();
        resolver.add_challenge(old, "a.example", old_key);
        resolver.add_challenge(new, "A.example", new_key.clone());
        resolver.remove_challenges(old);
        let challenges = resolver.challenges.read().unwrap();
        let (owner, key) = challenges.get("a.example").expect("the newer answer stays");
        assert_eq!(*owner, new);
        assert!(Arc::ptr_eq(key, &new_key));
    }

    #[test]
    fn challenge_certificates_are_buildable() {
        let key = alpn_challenge_cert("a.example", &[7u8; 32]).unwrap();
        assert_eq!(key.cert.len(), 1);
        let resolver = CertResolver::default();
        resolver.add_challenge(ChallengeOwner(7), "A.example", key);
        assert!(
            resolver
                .challenges
                .read()
                .unwrap()
                .contains_key("a.example")
        );
        resolver.remove_challenges(ChallengeOwner(7));
        assert!(resolver.challenges.read().unwrap().is_empty());
    }
}
