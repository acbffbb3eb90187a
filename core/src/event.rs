//! The vocabulary between the core and an adapter: events in, actions out, notices for logs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::time::{Human, UnixTime};

/// Identifies one `StartOrder`; its completion echoes it so stale answers are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(pub u64);

/// Identifies one store or renewal-information request, echoed by its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// The certificate material exactly as the adapter stores and serves it (for the on-disk cache:
/// the PKCS#8 key PEM followed by the chain PEM). The core never looks inside, and its `Debug`
/// shows only the length, so a private key cannot reach a log line through it.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle(Arc<[u8]>);

impl CertBundle {
    /// Wraps the adapter's bytes.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The adapter's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `true` when both are the same bundle (clones of one another), not merely equal bytes:
    /// an adapter recognises the bundle it handed in without comparing its contents.
    pub fn is_same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertBundle({} bytes)", self.0.len())
    }
}

/// What the core needs to know about a certificate: its validity and names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity.
    pub not_after: UnixTime,
    /// DNS names from the subjectAltName extension.
    pub names: Arc<[String]>,
}

impl CertInfo {
    /// `not_after - not_before`.
    pub fn lifetime(&self) -> Duration {
        self.not_after.saturating_since(self.not_before)
    }

    /// Valid at `now`: `not_before <= now < not_after`.
    pub fn is_valid_at(&self, now: UnixTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// A certificate with its material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// Validity and names, parsed by the adapter.
    pub info: CertInfo,
    /// Key and chain.
    pub bundle: CertBundle,
}

/// What the cache held for these domains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CachedCert {
    /// Nothing cached.
    Missing,
    /// A file exists but could not be used; the adapter has moved it aside.
    Unreadable {
        /// What was wrong, naming the file.
        reason: String,
    },
    /// A parsed certificate (which may be expired or for other names).
    Found(Certificate),
}

/// How an order failed, as classified by the adapter from the CA's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The CA could not be reached (DNS, connect, TLS, timeout).
    Unreachable,
    /// The CA answered with a server error (5xx, `serverInternal`).
    ServerError,
    /// The CA is rate limiting us; it may say for how long.
    RateLimited {
        /// The CA's Retry-After, if any.
        retry_after: Option<Duration>,
    },
    /// The CA refused the request itself (rejected identifier, unauthorized, malformed
    /// request, failed validation): retrying soon will not help.
    Rejected,
    /// The CA issued a certificate the core refused to install.
    InvalidCertificate,
}

/// A failed order: its class and a description naming the CA's problem type and detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderError {
    /// Classification, which decides the retry delay.
    pub kind: FailureKind,
    /// For people: e.g. `urn:ietf:params:acme:error:rateLimited: too many certificates`.
    pub detail: String,
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self.kind {
            FailureKind::Unreachable => "CA unreachable",
            FailureKind::ServerError => "CA server error",
            FailureKind::RateLimited { .. } => "rate limited by the CA",
            FailureKind::Rejected => "request rejected by the CA",
            FailureKind::InvalidCertificate => "CA issued an unusable certificate",
        };
        write!(f, "{class}: {}", self.detail)
    }
}

/// The state that decides the next attempt. The core asks for it to be persisted
/// ([`Action::PersistRetryState`]) and gets it back with [`Event::CacheLoaded`], so a restart loop
/// does not reset the backoff and burn the CA's rate limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Consecutive failed orders.
    pub failures: u32,
    /// No order before this time.
    pub next_attempt_at: Option<UnixTime>,
    /// The most recent failure.
    pub last_error: Option<OrderError>,
}

/// The CA's answer to a renewal-information (ARI, RFC 9773) request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewalInfo {
    /// The CA suggests renewing within `[start, end]`.
    Window {
        /// Window start.
        start: UnixTime,
        /// Window end.
        end: UnixTime,
        /// When to ask again, if the CA said.
        retry_after: Option<Duration>,
    },
    /// The directory has no `renewalInfo`; the core stops asking for this certificate.
    Unsupported,
    /// The request failed; the core asks again later.
    Failed {
        /// When to ask again, if the CA said.
        retry_after: Option<Duration>,
    },
}

/// Something that happened, reported to [`crate::CertLifecycle::handle`] with the current time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Time passed; nothing else happened. Early, repeated or late ticks are harmless.
    Tick,
    /// Replace the served certificate now (it was revoked, or an operator asks): the next
    /// order starts at once, within the order budget and any failure streak's wait (an order
    /// already in flight is the replacement), and its certificate is installed even if it does
    /// not expire later. Ignored while nothing is served.
    RenewNow,
    /// Another instance sharing this certificate's storage (a fleet) stored a new certificate
    /// for it. Installed at once if it is valid, covers the names and expires later than the
    /// served one; an order in flight is then no longer needed and its completion is ignored.
    /// Ignored while the cache is still loading (the load reads shared storage too).
    SharedCertArrived {
        /// The certificate the other instance stored.
        cert: Certificate,
    },
    /// The answer to [`Action::LoadCache`].
    CacheLoaded {
        /// The cached certificate, if any.
        cert: CachedCert,
        /// The persisted retry state, if any.
        retry: Option<RetryState>,
    },
    /// The order succeeded; the CA issued this certificate.
    OrderSucceeded {
        /// The order this answers.
        order: OrderId,
        /// The new certificate.
        cert: Certificate,
    },
    /// The order failed.
    OrderFailed {
        /// The order this answers.
        order: OrderId,
        /// Why.
        error: OrderError,
    },
    /// The answer to [`Action::StoreCert`].
    StoreFinished {
        /// The request this answers.
        request: RequestId,
        /// `Err` describes the failure, naming the path.
        result: Result<(), String>,
    },
    /// The answer to [`Action::FetchRenewalInfo`].
    RenewalInfo {
        /// The request this answers.
        request: RequestId,
        /// The CA's answer.
        info: RenewalInfo,
    },
}

/// Something the adapter must do. Every action carries all the adapter needs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Load the cached certificate and retry state for these domains; answer with
    /// [`Event::CacheLoaded`].
    LoadCache {
        /// The certificate's names, in configured order.
        domains: Arc<[String]>,
    },
    /// Order a certificate; answer with [`Event::OrderSucceeded`] or [`Event::OrderFailed`].
    StartOrder {
        /// Echo this in the answer.
        order: OrderId,
        /// The names to order.
        domains: Arc<[String]>,
        /// 1 for the first attempt of a streak, counting up while attempts fail.
        attempt: u32,
        /// The certificate this one replaces (for ARI `replaces`), if any.
        replacing: Option<CertBundle>,
        /// Which of the certificate's issuers (CAs, in order of preference; see
        /// [`crate::CertConfig::with_issuers`]) to order from: 0 unless the preferred one just
        /// failed for a reason that was not the request's fault.
        issuer: usize,
    },
    /// Serve this certificate from now on.
    InstallCert(Certificate),
    /// Write this certificate to the cache; answer with [`Event::StoreFinished`].
    StoreCert {
        /// Echo this in the answer.
        request: RequestId,
        /// The certificate to store.
        cert: Certificate,
    },
    /// Persist the retry state beside the cache (best effort, no answer expected).
    PersistRetryState(RetryState),
    /// Ask the CA for renewal information about this certificate; answer with
    /// [`Event::RenewalInfo`].
    FetchRenewalInfo {
        /// Echo this in the answer.
        request: RequestId,
        /// The certificate to ask about.
        cert: CertBundle,
    },
    /// Render this notice to the log.
    Log(Notice),
    /// A valid certificate is installed: the server may start accepting. Emitted once.
    Ready {
        /// The installed certificate's end of validity.
        not_after: UnixTime,
    },
    /// Starting is impossible: exit with this reason. Emitted at most once, only before
    /// [`Action::Ready`]; the lifecycle does nothing afterwards.
    FailStartup(StartupFailure),
    /// The order in flight is no longer needed (another instance of a fleet supplied its
    /// certificate): cancel it. Its completion, if one still arrives, is ignored.
    AbandonOrder {
        /// The order to cancel.
        order: OrderId,
    },
    /// Call `handle(now, Event::Tick)` at this time (replaces any earlier wake; `None`: no wake
    /// needed). The same value as [`crate::CertLifecycle::poll_timeout`].
    ScheduleWake(Option<UnixTime>),
}

/// Why the lifecycle could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupFailure {
    /// The certificate's names.
    pub domains: Arc<[String]>,
    /// Orders attempted since start.
    pub attempts: u32,
    /// Consecutive failed orders, including those before a restart.
    pub failures: u32,
    /// How long it tried.
    pub waited: Duration,
    /// If the cache held a certificate that had expired, its end of validity.
    pub cached_expired: Option<UnixTime>,
    /// The last error, if any order was attempted or a persisted one blocks ordering.
    pub last_error: Option<OrderError>,
    /// Set when the CA answered the last order with an error and backing off forbids any
    /// attempt before this time (after the startup deadline).
    pub blocked_until: Option<UnixTime>,
}

impl fmt::Display for StartupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.domains.join(", ");
        match self.cached_expired {
            Some(at) => write!(f, "the cached certificate for {names} expired at {at} and ")?,
            None => write!(f, "no valid certificate for {names}: ")?,
        }
        match self.blocked_until {
            Some(until) => write!(
                f,
                "after {} failed order(s) answered by the CA, the next is not allowed before \
                 {until}, beyond the startup timeout ({} attempt(s) since start)",
                self.failures, self.attempts
            )?,
            None => write!(
                f,
                "no certificate could be obtained in {} ({} attempt{})",
                Human(self.waited),
                self.attempts,
                if self.attempts == 1 { "" } else { "s" }
            )?,
        }
        if let Some(e) = &self.last_error {
            write!(f, "; last error: {e}")?;
        }
        f.write_str(". Check that the ACME directory is reachable and that the names resolve to this server")
    }
}

/// Log severity of a [`Notice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something is wrong now.
    Error,
    /// Something may go wrong later.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
}

/// What is being served while an order fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// Nothing yet (starting).
    Nothing,
    /// A valid certificate until this time.
    ValidUntil(UnixTime),
    /// An expired certificate, since this time.
    ExpiredSince(UnixTime),
}

/// Why a certificate cannot be installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertProblem {
    /// `not_after` has passed.
    Expired {
        /// End of validity.
        not_after: UnixTime,
    },
    /// `not_before` is in the future (or the clock is behind).
    NotYetValid {
        /// Start of validity.
        not_before: UnixTime,
    },
    /// The certificate lacks some configured names.
    MissingNames(Vec<String>),
    /// It would not extend validity beyond the certificate being served.
    NotNewer {
        /// End of validity of the candidate.
        not_after: UnixTime,
        /// End of validity of the certificate being served.
        serving_until: UnixTime,
    },
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Expired { not_after } => write!(f, "expired at {not_after}"),
            Self::NotYetValid { not_before } => write!(f, "not valid before {not_before}"),
            Self::MissingNames(names) => write!(f, "does not cover {}", names.join(", ")),
            Self::NotNewer {
                not_after,
                serving_until,
            } => write!(
                f,
                "expires at {not_after}, not after the served certificate ({serving_until})"
            ),
        }
    }
}

/// A typed log message; adapters render it with [`Notice::level`] and `Display`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// No cached certificate.
    CacheMissing,
    /// The cache could not be used: ordering a new certificate.
    CacheUnreadable {
        /// What was wrong, naming the file.
        reason: String,
    },
    /// Serving the cached certificate.
    CachedCertAdopted {
        /// Its end of validity.
        not_after: UnixTime,
    },
    /// The cached certificate cannot be served.
    CachedCertUnusable(CertProblem),
    /// Serving a certificate another instance of the fleet stored.
    SharedCertAdopted {
        /// Its end of validity.
        not_after: UnixTime,
        /// `true` if it replaced a served certificate.
        renewal: bool,
    },
    /// An order was started.
    OrderStarted {
        /// The order.
        order: OrderId,
        /// Attempt number in the current streak.
        attempt: u32,
    },
    /// A new certificate is installed.
    CertIssued {
        /// Its end of validity.
        not_after: UnixTime,
        /// `true` if it replaced a served certificate.
        renewal: bool,
    },
    /// The CA issued a certificate that was not installed.
    IssuedCertRejected(CertProblem),
    /// An order failed and will be retried.
    OrderFailed {
        /// Attempt number in the current streak.
        attempt: u32,
        /// Why.
        error: OrderError,
        /// When the next attempt happens.
        retry_at: UnixTime,
        /// What is served meanwhile.
        serving: Serving,
    },
    /// An issuer failed an order for a reason that was not the request's fault (unreachable,
    /// server error, rate limited): the next issuer is asked at once.
    IssuerFallback {
        /// The issuer that failed (0 is the preferred one).
        failed: usize,
        /// The issuer asked next.
        next: usize,
        /// Why the failed one failed.
        error: OrderError,
    },
    /// The served certificate expired; it is still served while renewal is retried.
    CertExpired {
        /// Its end of validity.
        not_after: UnixTime,
    },
    /// Writing the cache failed; it will be retried.
    StoreFailed {
        /// Why, naming the path.
        reason: String,
        /// When the write is retried.
        retry_at: UnixTime,
    },
    /// The CA's renewal window moved the renewal earlier.
    RenewalMovedEarlier {
        /// The CA's suggested window start.
        window_start: UnixTime,
        /// The CA's suggested window end.
        window_end: UnixTime,
        /// The chosen renewal time.
        renew_at: UnixTime,
    },
    /// A retry waits for the time the CA asked for before ordering again after a restart.
    RetryStateRestored {
        /// Consecutive failures so far.
        failures: u32,
        /// Next attempt.
        next_attempt_at: UnixTime,
    },
    /// `now` went backwards; duration timers keep their remaining time.
    ClockWentBackwards {
        /// By how much.
        by: Duration,
    },
    /// A completion that matched no outstanding request was ignored.
    IgnoredStale(&'static str),
}

impl Notice {
    /// Severity.
    pub fn level(&self) -> Level {
        match self {
            Self::CertExpired { .. } | Self::IssuedCertRejected(_) => Level::Error,
            Self::OrderFailed { serving, .. } => match serving {
                Serving::ExpiredSince(_) => Level::Error,
                Serving::Nothing | Serving::ValidUntil(_) => Level::Warn,
            },
            Self::CacheUnreadable { .. }
            | Self::CachedCertUnusable(_)
            | Self::StoreFailed { .. }
            | Self::ClockWentBackwards { .. }
            | Self::IssuerFallback { .. }
            | Self::RetryStateRestored { .. } => Level::Warn,
            Self::CacheMissing
            | Self::CachedCertAdopted { .. }
            | Self::SharedCertAdopted { .. }
            | Self::OrderStarted { .. }
            | Self::CertIssued { .. }
            | Self::RenewalMovedEarlier { .. } => Level::Info,
            Self::IgnoredStale(_) => Level::Debug,
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CacheMissing => f.write_str("no cached certificate"),
            Self::CacheUnreadable { reason } => {
                write!(
                    f,
                    "cached certificate unusable ({reason}); ordering a new one"
                )
            }
            Self::CachedCertAdopted { not_after } => {
                write!(f, "serving cached certificate valid until {not_after}")
            }
            Self::CachedCertUnusable(p) => write!(f, "cached certificate {p}; ordering a new one"),
            Self::SharedCertAdopted { not_after, .. } => write!(
                f,
                "serving the certificate another instance stored, valid until {not_after}"
            ),
            Self::OrderStarted { order, attempt } => {
                write!(
                    f,
                    "ordering certificate (order {}, attempt {attempt})",
                    order.0
                )
            }
            Self::CertIssued { not_after, renewal } => write!(
                f,
                "{} certificate installed, valid until {not_after}",
                if *renewal { "renewed" } else { "new" }
            ),
            Self::IssuedCertRejected(p) => {
                write!(
                    f,
                    "CA issued a certificate that {p}; keeping the current one"
                )
            }
            Self::OrderFailed {
                attempt,
                error,
                retry_at,
                serving,
            } => {
                write!(
                    f,
                    "order attempt {attempt} failed: {error}; retrying at {retry_at}"
                )?;
                match serving {
                    Serving::Nothing => Ok(()),
                    Serving::ValidUntil(t) => {
                        write!(f, "; serving current certificate, valid until {t}")
                    }
                    Serving::ExpiredSince(t) => {
                        write!(f, "; still serving the certificate that EXPIRED at {t}")
                    }
                }
            }
            Self::IssuerFallback {
                failed,
                next,
                error,
            } => write!(
                f,
                "issuer {} failed the order: {error}; ordering from issuer {} at once",
                failed + 1,
                next + 1
            ),
            Self::CertExpired { not_after } => write!(
                f,
                "served certificate expired at {not_after}; still serving it while renewal is retried"
            ),
            Self::StoreFailed { reason, retry_at } => {
                write!(
                    f,
                    "could not write certificate cache: {reason}; retrying at {retry_at}"
                )
            }
            Self::RenewalMovedEarlier {
                window_start,
                window_end,
                renew_at,
            } => write!(
                f,
                "CA suggests renewing between {window_start} and {window_end}; renewing at {renew_at}"
            ),
            Self::RetryStateRestored {
                failures,
                next_attempt_at,
            } => write!(
                f,
                "{failures} earlier failed order(s) restored from cache; next attempt at {next_attempt_at}"
            ),
            Self::ClockWentBackwards { by } => {
                write!(
                    f,
                    "system clock went back by {}; timers keep their remaining time",
                    Human(*by)
                )
            }
            Self::IgnoredStale(what) => write!(f, "ignored stale {what}"),
        }
    }
}
