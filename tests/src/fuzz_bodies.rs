//! The bodies of the cargo-fuzz targets. They live here so that ordinary tests run them over
//! the checked-in corpus (`fuzz/corpus/<target>/`) on the stable toolchain.

use std::sync::Arc;
use std::time::Duration;

use certloop_core::{
    Action, CachedCert, CertBundle, CertConfig, CertInfo, CertLifecycle, Certificate, Event,
    FailureKind, OrderError, OrderId, Policy, RenewalInfo, RequestId, RetryState, UnixTime,
};

use crate::invariants::LifecycleInvariants;

const START: u64 = 1_800_000_000_000;
const NAMES: [&str; 2] = ["a.example", "b.example"];

/// Decodes arbitrary bytes into events and time steps (including time going backwards) and
/// feeds them to one lifecycle, checking the simulator's safety invariants after every step.
/// Panics on a violation.
pub fn event_sequence(data: &[u8]) {
    let config =
        CertConfig::new(NAMES, u64::from(data.first().copied().unwrap_or(0))).expect("valid names");
    let policy = Arc::new(Policy::default());
    let mut lc = CertLifecycle::new(policy.clone(), &config, UnixTime::from_millis(START))
        .expect("valid policy");
    let mut checker = Checker::new(&policy);
    let mut now = START;
    checker.drain(&mut lc, UnixTime::from_millis(now));
    for op in data.chunks_exact(4) {
        let [kind, a, b, c] = [op[0], op[1], op[2], op[3]];
        let step = i64::from(i16::from_be_bytes([a, b]));
        let unit: i64 = [1, 1000, 60_000, 3_600_000][usize::from(c % 4)];
        now = now.saturating_add_signed(step.saturating_mul(unit));
        let t = UnixTime::from_millis(now);
        let event = match kind % 8 {
            0 => Event::Tick,
            1 => Event::CacheLoaded {
                cert: cached(a, b, t),
                retry: retry_state(c, t),
            },
            2 => Event::OrderSucceeded {
                order: checker.order_ref(c),
                cert: issued(a, b, t),
            },
            3 => Event::OrderFailed {
                order: checker.order_ref(c),
                error: error(a, b),
            },
            4 => Event::StoreFinished {
                request: checker.store_ref(c),
                result: if a % 2 == 0 {
                    Ok(())
                } else {
                    Err("disk full".into())
                },
            },
            5 => Event::RenewalInfo {
                request: checker.ari_ref(c),
                info: renewal_info(a, b, t),
            },
            6 => Event::SharedCertArrived {
                cert: issued(a, b, t),
            },
            _ => match checker.next_wake {
                // Jump to the wake the core asked for.
                Some(at) => {
                    now = at.as_millis();
                    Event::Tick
                }
                None => Event::Tick,
            },
        };
        let t = UnixTime::from_millis(now);
        checker.note_event(&event);
        lc.handle(t, event);
        checker.drain(&mut lc, t);
    }
}

fn cert(names: &[&str], not_before: UnixTime, lifetime: Duration) -> Certificate {
    Certificate {
        info: CertInfo {
            not_before,
            not_after: not_before.saturating_add(lifetime),
            names: names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<Vec<_>>()
                .into(),
        },
        bundle: CertBundle::new(vec![1, 2, 3]),
    }
}

fn lifetime(b: u8) -> Duration {
    Duration::from_secs([3600, 86_400, 6 * 86_400, 90 * 86_400][usize::from(b % 4)])
}

fn cached(a: u8, b: u8, now: UnixTime) -> CachedCert {
    let age = Duration::from_secs(u64::from(b) * 3600);
    match a % 5 {
        0 => CachedCert::Missing,
        1 => CachedCert::Unreadable {
            reason: "garbage".into(),
        },
        2 => CachedCert::Found(cert(&NAMES, now.saturating_sub(age), lifetime(a / 5))),
        3 => CachedCert::Found(cert(
            &["other.example"],
            now.saturating_sub(age),
            lifetime(a / 5),
        )),
        _ => CachedCert::Found(cert(&NAMES, now.saturating_add(age), lifetime(a / 5))),
    }
}

fn issued(a: u8, b: u8, now: UnixTime) -> Certificate {
    let skew = Duration::from_secs(u64::from(b) * 600);
    match a % 4 {
        0 | 1 => cert(
            &NAMES,
            now.saturating_sub(Duration::from_secs(3600)),
            lifetime(b),
        ),
        2 => cert(&["a.example"], now, lifetime(b)),
        _ => cert(&NAMES, now.saturating_add(skew), lifetime(a)),
    }
}

fn error(a: u8, b: u8) -> OrderError {
    let kind = match a % 5 {
        0 => FailureKind::Unreachable,
        1 => FailureKind::ServerError,
        2 => FailureKind::RateLimited {
            retry_after: b
                .is_multiple_of(2)
                .then(|| Duration::from_secs(u64::from(b) * 997)),
        },
        3 => FailureKind::Rejected,
        _ => FailureKind::InvalidCertificate,
    };
    OrderError {
        kind,
        detail: "fuzz".into(),
    }
}

fn retry_state(c: u8, now: UnixTime) -> Option<RetryState> {
    c.is_multiple_of(3).then(|| RetryState {
        failures: u32::from(c),
        next_attempt_at: Some(now.saturating_add(Duration::from_secs(u64::from(c) * 60))),
        last_error: Some(error(c, c)),
    })
}

fn renewal_info(a: u8, b: u8, now: UnixTime) -> RenewalInfo {
    let start = now.saturating_add(Duration::from_secs(u64::from(a) * 3600));
    let end = start.saturating_add(Duration::from_secs(u64::from(b) * 3600));
    match a % 4 {
        0 => RenewalInfo::Unsupported,
        1 => RenewalInfo::Failed {
            retry_after: Some(Duration::from_secs(u64::from(b))),
        },
        2 => RenewalInfo::Window {
            start: end,
            end: start,
            retry_after: None,
        },
        _ => RenewalInfo::Window {
            start,
            end,
            retry_after: Some(Duration::from_secs(u64::from(b))),
        },
    }
}

/// The simulator's safety invariants ([`LifecycleInvariants`]) for a single lifecycle fed
/// arbitrary events, plus the wake-time contract of `poll_timeout`.
struct Checker {
    invariants: LifecycleInvariants,
    clock: UnixTime,
    failed: bool,
    last_order: Option<OrderId>,
    last_store: Option<RequestId>,
    last_ari: Option<RequestId>,
    next_wake: Option<UnixTime>,
}

impl Checker {
    fn new(policy: &Policy) -> Self {
        let names: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
        Self {
            invariants: LifecycleInvariants::new(&names, policy.order_timeout),
            clock: UnixTime::from_millis(START),
            failed: false,
            last_order: None,
            last_store: None,
            last_ari: None,
            next_wake: None,
        }
    }

    /// The latest order id, or a stale or never-issued one.
    fn order_ref(&self, c: u8) -> OrderId {
        match (c % 3, self.last_order) {
            (0, _) | (_, None) => OrderId(u64::from(c)),
            (_, Some(o)) => o,
        }
    }

    fn store_ref(&self, c: u8) -> RequestId {
        self.last_store
            .filter(|_| !c.is_multiple_of(3))
            .unwrap_or(RequestId(u64::from(c)))
    }

    fn ari_ref(&self, c: u8) -> RequestId {
        self.last_ari
            .filter(|_| !c.is_multiple_of(3))
            .unwrap_or(RequestId(u64::from(c)))
    }

    fn note_event(&mut self, event: &Event) {
        if let Event::OrderSucceeded { order, .. } | Event::OrderFailed { order, .. } = event {
            self.invariants.answered(*order);
        }
    }

    fn drain(&mut self, lc: &mut CertLifecycle, now: UnixTime) {
        self.invariants.clock_moved(self.clock, now);
        self.clock = now;
        while let Some(action) = lc.poll_action() {
            if let Err(broken) = self.invariants.check(self.clock, &action) {
                panic!("{broken}");
            }
            match action {
                Action::StartOrder { order, .. } => self.last_order = Some(order),
                Action::FailStartup(_) => self.failed = true,
                Action::StoreCert { request, .. } => self.last_store = Some(request),
                Action::FetchRenewalInfo { request, .. } => self.last_ari = Some(request),
                Action::ScheduleWake(at) => self.next_wake = at,
                _ => {}
            }
        }
        assert_eq!(
            lc.poll_timeout(),
            self.next_wake,
            "poll_timeout disagrees with ScheduleWake"
        );
        match lc.poll_timeout() {
            Some(at) => assert!(
                at > self.clock || lc.has_failed(),
                "wake {at} not after now {}",
                self.clock
            ),
            None => assert!(self.failed, "no wake while running"),
        }
    }
}

/// Decodes arbitrary bytes as a cached certificate file and as a retry-state sidecar. Must
/// never panic; a decoded certificate must have a leaf.
pub fn cache_decode(data: &[u8]) {
    if let Ok(file) = certloop_acme::testing::decode_cert_file(data) {
        assert!(!file.chain.is_empty());
        assert!(!format!("{file:?}").contains("PRIVATE"));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(state) = certloop_acme::testing::decode_retry_state(text)
    {
        let again = certloop_acme::testing::encode_retry_state(&state);
        let reparsed =
            certloop_acme::testing::decode_retry_state(&again).expect("re-encoded state parses");
        assert_eq!(reparsed.failures, state.failures);
        assert_eq!(reparsed.next_attempt_at, state.next_attempt_at);
    }
}
