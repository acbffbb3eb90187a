//! What an operator (or an embedder's metrics) can read about each managed certificate at any
//! time through [`crate::AcmeHandle::status`], and how long the CA's requests take
//! ([`crate::AcmeHandle::acme_request_durations`]).

use std::sync::Mutex;
use std::time::Duration;

use certloop_core::{FailureKind, LifecycleStatus, UnixTime};
use rustls_pki_types::CertificateDer;

use crate::cache::san_names;

/// One managed certificate: what is served, when it renews, and how its orders went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertStatus {
    /// The configured names; the first one names the certificate.
    pub domains: Vec<String>,
    /// The served certificate, once one is served.
    pub served: Option<ServedCert>,
    /// The directory URL of the CA that issued the served certificate (one of the configured
    /// issuers: the preferred one unless it failed and a fallback issued).
    pub issued_by: Option<String>,
    /// When the served certificate is renewed, absent failures.
    pub renew_at: Option<UnixTime>,
    /// The CA's suggested renewal window (ARI), once it gave one.
    pub ari_window: Option<(UnixTime, UnixTime)>,
    /// When the next order starts (a retry after failures, or the renewal), unless one is in
    /// flight.
    pub next_order_at: Option<UnixTime>,
    /// An order is in flight now.
    pub ordering: bool,
    /// Consecutive failed orders (0 after a success).
    pub failures: u32,
    /// The most recent failure of the current streak: its class, the CA's problem type and
    /// detail.
    pub last_error: Option<String>,
    /// Orders since launch, by outcome.
    pub orders: OrderTally,
}

impl CertStatus {
    pub(crate) fn new(domains: Vec<String>) -> Self {
        Self {
            domains,
            served: None,
            issued_by: None,
            renew_at: None,
            ari_window: None,
            next_order_at: None,
            ordering: false,
            failures: 0,
            last_error: None,
            orders: OrderTally::default(),
        }
    }

    /// Takes the lifecycle's view (timings, failures); the served certificate's details come
    /// from [`ServedCert::from_leaf`] when it is installed.
    pub(crate) fn update(&mut self, lifecycle: &LifecycleStatus) {
        self.renew_at = lifecycle.renew_at;
        self.ari_window = lifecycle.ari_window;
        self.next_order_at = lifecycle.next_order_at;
        self.ordering = lifecycle.ordering;
        self.failures = lifecycle.failures;
        self.last_error = lifecycle.last_error.as_ref().map(ToString::to_string);
    }

    /// `true` while a certificate is served and valid at `now`.
    pub fn is_valid_at(&self, now: UnixTime) -> bool {
        self.served
            .as_ref()
            .is_some_and(|s| s.not_before <= now && now < s.not_after)
    }
}

/// The served certificate's facts, read from its leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServedCert {
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity.
    pub not_after: UnixTime,
    /// The issuer's common name (its whole distinguished name when it has none).
    pub issuer: String,
    /// The serial number in upper-case hexadecimal, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// The key type: `ecdsa-p256`, `ecdsa-p384`, `rsa-2048`, `ed25519`, ...
    pub key_type: String,
    /// The DNS names it covers (subjectAltName).
    pub names: Vec<String>,
}

impl ServedCert {
    /// Reads the facts from a leaf certificate (DER), for example one served from files.
    pub fn from_leaf(leaf: &CertificateDer<'_>) -> Result<Self, String> {
        use x509_parser::public_key::PublicKey;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("unparsable certificate: {e}"))?;
        let seconds = |t: i64| UnixTime::from_secs(u64::try_from(t).unwrap_or(0));
        let issuer = cert
            .issuer()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .map_or_else(|| cert.issuer().to_string(), str::to_owned);
        let serial = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let key_type = match cert.public_key().parsed() {
            Ok(PublicKey::EC(point)) => format!("ecdsa-p{}", point.key_size()),
            Ok(PublicKey::RSA(rsa)) => format!("rsa-{}", rsa.key_size()),
            _ => match cert
                .public_key()
                .algorithm
                .algorithm
                .to_id_string()
                .as_str()
            {
                "1.3.101.112" => "ed25519".to_owned(),
                other => other.to_owned(),
            },
        };
        Ok(Self {
            not_before: seconds(cert.validity().not_before.timestamp()),
            not_after: seconds(cert.validity().not_after.timestamp()),
            issuer,
            serial,
            key_type,
            names: san_names(&cert),
        })
    }
}

/// Orders since launch, by outcome: issued, or the class of their failure (the same classes
/// that decide the retry delay).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrderTally {
    /// Orders that ended with a certificate that was installed.
    pub issued: u64,
    /// The CA could not be reached (connect, TLS, no answer in time).
    pub unreachable: u64,
    /// The CA answered with a server error.
    pub server_error: u64,
    /// The CA rate-limited the order.
    pub rate_limited: u64,
    /// The CA refused the request (failed validation, rejected identifier, ...).
    pub rejected: u64,
    /// The CA issued a certificate that could not be used.
    pub invalid_certificate: u64,
}

impl OrderTally {
    pub(crate) fn count_failure(&mut self, kind: FailureKind) {
        match kind {
            FailureKind::Unreachable => self.unreachable += 1,
            FailureKind::ServerError => self.server_error += 1,
            FailureKind::RateLimited { .. } => self.rate_limited += 1,
            FailureKind::Rejected => self.rejected += 1,
            FailureKind::InvalidCertificate => self.invalid_certificate += 1,
        }
    }

    /// Every outcome with its label (`issued`, `unreachable`, `server_error`, `rate_limited`,
    /// `rejected`, `invalid_certificate`), for metrics.
    pub fn by_result(&self) -> [(&'static str, u64); 6] {
        [
            ("issued", self.issued),
            ("unreachable", self.unreachable),
            ("server_error", self.server_error),
            ("rate_limited", self.rate_limited),
            ("rejected", self.rejected),
            ("invalid_certificate", self.invalid_certificate),
        ]
    }
}

/// One step of talking to the CA, as timed in [`crate::AcmeHandle::acme_request_durations`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AcmeOperation {
    /// Registering or restoring the account (including fetching the directory).
    Account,
    /// Placing a new order.
    NewOrder,
    /// Fetching an authorization.
    Authorization,
    /// Telling the CA a challenge is ready.
    Challenge,
    /// Polling an order's status.
    PollOrder,
    /// Finalizing an order with the CSR.
    Finalize,
    /// Downloading the certificate (polling until it is issued).
    Certificate,
    /// Fetching an order placed by an earlier run, to resume it.
    ResumeOrder,
    /// Asking for renewal information (ARI).
    RenewalInfo,
}

impl AcmeOperation {
    /// Every operation, in a fixed order.
    pub const ALL: [Self; 9] = [
        Self::Account,
        Self::NewOrder,
        Self::Authorization,
        Self::Challenge,
        Self::PollOrder,
        Self::Finalize,
        Self::Certificate,
        Self::ResumeOrder,
        Self::RenewalInfo,
    ];

    /// A short label: `account`, `new_order`, `authorization`, `challenge`, `poll_order`,
    /// `finalize`, `certificate`, `resume_order`, `renewal_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::NewOrder => "new_order",
            Self::Authorization => "authorization",
            Self::Challenge => "challenge",
            Self::PollOrder => "poll_order",
            Self::Finalize => "finalize",
            Self::Certificate => "certificate",
            Self::ResumeOrder => "resume_order",
            Self::RenewalInfo => "renewal_info",
        }
    }
}

/// Upper bounds, in seconds, of [`DurationHistogram`]'s buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How long one kind of request took, as a Prometheus-style histogram.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DurationHistogram {
    /// Requests timed.
    pub count: u64,
    /// Their total duration in seconds.
    pub sum_seconds: f64,
    /// For each bound of [`DURATION_BUCKETS`], how many took at most that long (cumulative).
    pub buckets: [u64; DURATION_BUCKETS.len()],
}

impl DurationHistogram {
    fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        self.count += 1;
        self.sum_seconds += seconds;
        for (bound, count) in DURATION_BUCKETS.iter().zip(&mut self.buckets) {
            if seconds <= *bound {
                *count += 1;
            }
        }
    }
}

/// The durations of a cache directory's requests to its CA, by operation.
#[derive(Debug, Default)]
pub(crate) struct RequestDurations(Mutex<[DurationHistogram; AcmeOperation::ALL.len()]>);

impl RequestDurations {
    pub(crate) fn observe(&self, operation: AcmeOperation, took: Duration) {
        let index = AcmeOperation::ALL
            .iter()
            .position(|o| *o == operation)
            .unwrap_or(0);
        self.0.lock().unwrap_or_else(|e| e.into_inner())[index].observe(took);
    }

    pub(crate) fn snapshot(&self) -> Vec<(AcmeOperation, DurationHistogram)> {
        let histograms = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        AcmeOperation::ALL.into_iter().zip(histograms).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_per_operation() {
        let durations = RequestDurations::default();
        durations.observe(AcmeOperation::NewOrder, Duration::from_millis(3));
        durations.observe(AcmeOperation::NewOrder, Duration::from_millis(300));
        durations.observe(AcmeOperation::NewOrder, Duration::from_secs(60));
        let all = durations.snapshot();
        let (operation, new_order) = &all[1];
        assert_eq!(*operation, AcmeOperation::NewOrder);
        assert_eq!(new_order.count, 3);
        assert!((new_order.sum_seconds - 60.303).abs() < 1e-9);
        assert_eq!(new_order.buckets[0], 1, "<= 5 ms");
        assert_eq!(new_order.buckets[6], 2, "<= 500 ms");
        assert_eq!(new_order.buckets[11], 2, "60 s is above every bound");
        assert_eq!(all[0].1.count, 0, "other operations are untouched");
    }

    #[test]
    fn a_served_certificate_is_described_from_its_leaf() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0A, 0xBC]));
        let cert = params.self_signed(&key).unwrap();
        let served = ServedCert::from_leaf(cert.der()).unwrap();
        assert_eq!(served.key_type, "ecdsa-p384");
        assert_eq!(served.serial, "0ABC");
        assert_eq!(served.issuer, "rcgen self signed cert");
        assert_eq!(served.names, ["a.test"]);
        assert!(served.not_before < served.not_after);
        assert!(ServedCert::from_leaf(&CertificateDer::from(vec![1, 2, 3])).is_err());
    }
}
