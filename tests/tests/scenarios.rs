//! The failure table, the happy path and the renewal policy as scripted traces: each test
//! asserts the behaviour, then snapshots the whole trace (one line per step).

use std::time::Duration;

use certloop_core::{
    Action, Event, FailureKind, Level, Notice, Policy, RenewalInfo, RetryState, UnixTime,
};
use certloop_tests::script::{SCRIPT_START, Script};

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3600);
const NAMES: &[&str] = &["example.com", "www.example.com"];

fn count(script: &Script, pred: impl Fn(&Action) -> bool) -> usize {
    script.actions.iter().filter(|a| pred(a)).count()
}

fn failed_startup(script: &Script) -> Option<String> {
    script.actions.iter().find_map(|a| match a {
        Action::FailStartup(f) => Some(f.to_string()),
        _ => None,
    })
}

fn notices_at(script: &Script, level: Level) -> Vec<&Notice> {
    script
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(n) if n.level() == level => Some(n),
            _ => None,
        })
        .collect()
}

fn is_order(a: &Action) -> bool {
    matches!(a, Action::StartOrder { .. })
}

#[test]
fn happy_path_first_start_then_renewal() {
    let mut s = Script::new(NAMES);
    s.cache_missing()
        .order_succeeds(90 * DAY)
        .store_finishes(Ok(()));
    assert!(s.lifecycle().is_ready());
    let renew_at = s.lifecycle().renew_at().unwrap();
    let not_after = s.lifecycle().serving().unwrap().not_after;
    // A third of 90 days, minus at most 1.5 days of spread.
    let before_expiry = not_after.saturating_since(renew_at);
    assert!(
        before_expiry >= 30 * DAY && before_expiry <= 30 * DAY + DAY * 3 / 2,
        "{before_expiry:?}"
    );
    s.renewal_info(RenewalInfo::Unsupported);
    s.until_wake();
    assert_eq!(s.now(), renew_at);
    s.order_succeeds(90 * DAY).store_finishes(Ok(()));
    assert_eq!(count(&s, is_order), 2);
    assert_eq!(count(&s, |a| matches!(a, Action::Ready { .. })), 1);
    assert!(s.lifecycle().serving().unwrap().not_after > not_after);
    insta::assert_snapshot!(s.trace());
}

/// Row 1: first start, no cached cert, ACME unreachable: fail to start with a clear error.
#[test]
fn row1_first_start_ca_unreachable_fails_within_timeout() {
    let mut s = Script::new(NAMES);
    s.cache_missing();
    while s.lifecycle().order_in_flight().is_some() {
        s.wait(Duration::from_millis(500));
        s.order_fails(
            FailureKind::Unreachable,
            "connect to 127.0.0.1:14000: connection refused",
        );
        if !s.lifecycle().has_failed() {
            s.until_wake();
        }
    }
    assert!(s.lifecycle().has_failed());
    assert!(s.now().saturating_since(SCRIPT_START) <= Policy::default().startup_timeout);
    assert!(count(&s, is_order) >= 3, "retried within seconds");
    let reason = failed_startup(&s).unwrap();
    assert!(
        reason.contains("example.com") && reason.contains("connection refused"),
        "{reason}"
    );
    assert_eq!(count(&s, |a| matches!(a, Action::Ready { .. })), 0);
    insta::assert_snapshot!(s.trace());
}

/// Row 1 with a CA that never answers: the deadline still ends the startup.
#[test]
fn row1_first_start_ca_hangs_fails_at_deadline() {
    let mut s = Script::new(NAMES);
    s.cache_missing().until_wake();
    assert!(s.lifecycle().has_failed());
    assert_eq!(
        s.now().saturating_since(SCRIPT_START),
        Policy::default().startup_timeout
    );
    insta::assert_snapshot!(s.trace());
}

/// Row 2: first start, no cached cert, ACME succeeds: normal start.
#[test]
fn row2_first_start_ca_succeeds() {
    let mut s = Script::new(NAMES);
    s.cache_missing()
        .wait(Duration::from_secs(2))
        .order_succeeds(90 * DAY);
    assert!(s.lifecycle().is_ready());
    assert_eq!(count(&s, |a| matches!(a, Action::InstallCert(_))), 1);
    assert_eq!(count(&s, |a| matches!(a, Action::StoreCert { .. })), 1);
    insta::assert_snapshot!(s.trace());
}

/// Row 3: cached cert, ACME unreachable for renewal: start with the cached cert, warn.
#[test]
fn row3_cached_cert_ca_unreachable_starts_and_warns() {
    let mut s = Script::new(NAMES);
    // 80 of 90 days used: inside the renewal window, so a renewal starts at once.
    s.cache_cert(SCRIPT_START.saturating_sub(80 * DAY), 90 * DAY);
    assert!(s.lifecycle().is_ready());
    s.wait(Duration::from_secs(5))
        .order_fails(FailureKind::Unreachable, "dns error: no such host");
    assert!(s.lifecycle().is_ready() && !s.lifecycle().has_failed());
    assert!(!notices_at(&s, Level::Warn).is_empty());
    assert!(failed_startup(&s).is_none());
    insta::assert_snapshot!(s.trace());
}

/// Row 4: renewal fails after start: keep serving, warn, retry with backoff.
#[test]
fn row4_renewal_failures_back_off_while_serving() {
    let mut s = Script::new(NAMES);
    s.cache_missing()
        .order_succeeds(90 * DAY)
        .store_finishes(Ok(()));
    s.renewal_info(RenewalInfo::Unsupported).until_wake();
    let mut gaps = Vec::new();
    let mut last = s.now();
    for _ in 0..8 {
        s.order_fails(
            FailureKind::ServerError,
            "urn:ietf:params:acme:error:serverInternal: 500",
        );
        s.until_wake();
        gaps.push(s.now().saturating_since(last));
        last = s.now();
    }
    // Exponential from about a minute (jittered down by up to half) to the 4-hour cap.
    assert!(
        gaps[0] >= Duration::from_secs(30) && gaps[0] <= Duration::from_secs(60),
        "{gaps:?}"
    );
    assert!(gaps.iter().all(|g| *g <= 4 * HOUR), "{gaps:?}");
    // The eighth retry waits 60 s * 2^7, jittered down by at most a quarter.
    assert!(gaps[7] >= Duration::from_secs(60 * 128 * 3 / 4), "{gaps:?}");
    assert!(s.lifecycle().is_ready());
    assert_eq!(notices_at(&s, Level::Warn).len(), 8);
    insta::assert_snapshot!(s.trace());
}

/// Row 5: cached cert expired, renewal fails at start: fail to start.
#[test]
fn row5_cached_expired_and_renewal_fails_fails_startup() {
    let mut s = Script::new(NAMES);
    s.cache_cert(SCRIPT_START.saturating_sub(91 * DAY), 90 * DAY);
    assert!(!s.lifecycle().is_ready());
    s.wait(Duration::from_secs(1)).order_fails(
        FailureKind::ServerError,
        "urn:ietf:params:acme:error:serverInternal: 503",
    );
    assert!(s.lifecycle().has_failed());
    let reason = failed_startup(&s).unwrap();
    assert!(reason.contains("expired at"), "{reason}");
    assert_eq!(count(&s, |a| matches!(a, Action::InstallCert(_))), 0);
    insta::assert_snapshot!(s.trace());
}

/// Row 6: the cert expires while running: keep serving it, log an error, keep retrying.
#[test]
fn row6_expiry_while_running_keeps_serving_and_retrying() {
    let mut s = Script::new(NAMES);
    s.cache_missing()
        .order_succeeds(6 * DAY)
        .store_finishes(Ok(()));
    s.renewal_info(RenewalInfo::Unsupported);
    let not_after = s.lifecycle().serving().unwrap().not_after;
    while s.now() < not_after.saturating_add(6 * HOUR) {
        s.until_wake();
        if s.lifecycle().order_in_flight().is_some() {
            s.order_fails(FailureKind::Unreachable, "connection timed out");
        }
    }
    assert!(s.lifecycle().is_ready());
    assert_eq!(
        s.lifecycle().serving().unwrap().not_after,
        not_after,
        "still serving the old one"
    );
    assert!(
        s.actions
            .iter()
            .any(|a| matches!(a, Action::Log(Notice::CertExpired { .. }))),
        "expiry logged as an error"
    );
    // A 6-day certificate gets many attempts between its renewal point and its expiry.
    let attempts = count(&s, is_order) - 1;
    assert!(attempts >= 12, "{attempts} attempts");
    while s.lifecycle().order_in_flight().is_none() {
        s.until_wake();
    }
    s.order_succeeds(6 * DAY);
    assert!(s.lifecycle().serving().unwrap().not_after > not_after);
    insta::assert_snapshot!(s.trace());
}

#[test]
fn ari_window_moves_renewal_earlier() {
    let mut s = Script::new(NAMES);
    s.cache_missing()
        .order_succeeds(90 * DAY)
        .store_finishes(Ok(()));
    let default_renewal = s.lifecycle().renew_at().unwrap();
    let start = s.now().saturating_add(10 * DAY);
    let end = start.saturating_add(DAY);
    s.renewal_info(RenewalInfo::Window {
        start,
        end,
        retry_after: Some(DAY),
    });
    let renew_at = s.lifecycle().renew_at().unwrap();
    assert!(renew_at >= start && renew_at <= end && renew_at < default_renewal);
    s.until_wake(); // the next ARI check, a day later (the CA's Retry-After)
    s.renewal_info(RenewalInfo::Window {
        start,
        end,
        retry_after: Some(DAY),
    });
    while s.lifecycle().order_in_flight().is_none() {
        s.until_wake();
        if s.lifecycle().order_in_flight().is_none() {
            s.renewal_info(RenewalInfo::Window {
                start,
                end,
                retry_after: Some(DAY),
            });
        }
    }
    assert!(
        s.now() >= start && s.now() <= end,
        "renewed inside the CA's window"
    );
    insta::assert_snapshot!(s.trace());
}

#[test]
fn rate_limited_retry_honours_retry_after() {
    let mut s = Script::new(NAMES);
    s.cache_missing()
        .order_succeeds(90 * DAY)
        .store_finishes(Ok(()));
    s.renewal_info(RenewalInfo::Unsupported).until_wake();
    let failed_at = s.now();
    s.order_fails(
        FailureKind::RateLimited {
            retry_after: Some(3 * HOUR),
        },
        "urn:ietf:params:acme:error:rateLimited: too many new orders recently",
    );
    s.until_wake();
    assert!(s.lifecycle().order_in_flight().is_some());
    assert!(s.now().saturating_since(failed_at) >= 3 * HOUR);
    insta::assert_snapshot!(s.trace());
}

#[test]
fn restart_honours_persisted_backoff() {
    // A failure streak persisted by an earlier run: the renewal waits for it.
    let mut s = Script::new(NAMES);
    let next = SCRIPT_START.saturating_add(2 * HOUR);
    let cert = s.cert(SCRIPT_START.saturating_sub(70 * DAY), 90 * DAY);
    let error = certloop_core::OrderError {
        kind: FailureKind::RateLimited { retry_after: None },
        detail: "urn:ietf:params:acme:error:rateLimited".into(),
    };
    let retry = RetryState {
        failures: 4,
        next_attempt_at: Some(next),
        last_error: Some(error),
    };
    s.cache_cert_with_retry(Some(cert), retry.clone());
    assert!(s.lifecycle().is_ready());
    assert!(s.lifecycle().order_in_flight().is_none());
    s.until_wake();
    assert_eq!(s.now(), next);
    assert!(
        s.actions
            .iter()
            .any(|a| matches!(a, Action::StartOrder { attempt: 5, .. }))
    );

    // Without a certificate, a CA-imposed wait beyond the startup timeout fails at once.
    let mut s = Script::new(NAMES);
    s.cache_cert_with_retry(None, retry);
    assert!(s.lifecycle().has_failed());
    assert_eq!(count(&s, is_order), 0);
}

#[test]
fn unusable_certificates_are_never_installed() {
    let mut s = Script::new(NAMES);
    s.cache_missing()
        .order_succeeds(90 * DAY)
        .store_finishes(Ok(()));
    s.renewal_info(RenewalInfo::Unsupported);
    let serving = s.lifecycle().serving().unwrap().clone();
    s.until_wake();
    // Wrong names, expired, not yet valid, and shorter-lived than the served one.
    let now = s.now();
    let candidates = [
        s.cert_for(&["other.example".to_owned()], now, 90 * DAY),
        s.cert(now.saturating_sub(10 * DAY), DAY),
        s.cert(now.saturating_add(DAY), 90 * DAY),
        s.cert(now.saturating_sub(HOUR), 6 * DAY),
    ];
    for cert in candidates {
        s.order_returns(cert).until_wake();
        assert_eq!(s.lifecycle().serving(), Some(&serving));
    }
    assert_eq!(notices_at(&s, Level::Error).len(), 4);
    insta::assert_snapshot!(s.trace());
}

#[test]
fn stale_duplicate_and_early_events_are_harmless() {
    let mut s = Script::new(NAMES);
    s.cache_missing();
    let before = s.actions.len();
    // Early ticks, a duplicate cache answer, and a clock that goes backwards.
    s.event(Event::Tick).event(Event::Tick);
    s.cache_missing();
    s.set_now(SCRIPT_START.saturating_sub(HOUR))
        .event(Event::Tick);
    assert_eq!(count(&s, is_order), 1);
    s.set_now(SCRIPT_START.saturating_add(Duration::from_secs(1)))
        .order_succeeds(90 * DAY);
    // A duplicate answer to the same order changes nothing.
    let installs = count(&s, |a| matches!(a, Action::InstallCert(_)));
    s.order_succeeds(90 * DAY)
        .order_fails(FailureKind::ServerError, "late");
    assert_eq!(count(&s, |a| matches!(a, Action::InstallCert(_))), installs);
    assert!(s.actions.len() > before);
    assert!(s.lifecycle().poll_timeout().unwrap() > UnixTime::from_secs(1_800_000_001));
    insta::assert_snapshot!(s.trace());
}

#[test]
fn private_key_bytes_never_reach_debug_output() {
    let mut s = Script::new(NAMES);
    s.cache_missing().order_succeeds(90 * DAY);
    let rendered = format!("{:?}", s.actions);
    assert!(
        !rendered.contains("secret") && !rendered.contains("PRIVATE KEY"),
        "{rendered}"
    );
}

/// Sixty-second certificates renewed for three hours: the order budget's window shrinks to the
/// certificate's lifetime, so no renewal waits for it and none lapses (with an hourly budget of
/// 8, the ninth renewal would wait most of an hour).
#[test]
fn sixty_second_certificates_are_renewed_for_hours_without_lapsing() {
    let lifetime = Duration::from_secs(60);
    let mut s = Script::new(NAMES);
    s.cache_missing();
    let first = s.cert(s.now(), lifetime);
    s.order_returns(first).store_finishes(Ok(()));
    s.renewal_info(RenewalInfo::Unsupported);
    for renewal in 1..=270 {
        s.until_wake();
        assert!(
            s.lifecycle().order_in_flight().is_some(),
            "renewal {renewal}: woke at {} without ordering",
            s.now()
        );
        let cert = s.cert(s.now(), lifetime);
        s.order_returns(cert).store_finishes(Ok(()));
        assert!(s.lifecycle().serving().unwrap().not_after > s.now());
    }
    assert_eq!(count(&s, is_order), 271);
    assert!(
        !notices_at(&s, Level::Error)
            .iter()
            .any(|n| matches!(n, Notice::CertExpired { .. })),
        "a certificate lapsed"
    );
}

/// The status snapshot follows the lifecycle: what is served, the renewal point, the CA's
/// window, the failure streak and the next order.
#[test]
fn the_status_snapshot_tells_what_is_served_and_what_comes_next() {
    let mut s = Script::new(NAMES);
    let status = s.lifecycle().status();
    assert!(!status.ready && status.serving.is_none() && status.next_order_at.is_none());
    s.cache_missing();
    assert!(s.lifecycle().status().ordering);
    s.order_succeeds(90 * DAY).store_finishes(Ok(()));
    let status = s.lifecycle().status();
    assert!(status.ready && !status.ordering && !status.failed);
    assert_eq!(status.serving.as_ref(), s.lifecycle().serving());
    assert_eq!(status.renew_at, s.lifecycle().renew_at());
    assert_eq!(status.next_order_at, status.renew_at);
    let not_after = status.serving.unwrap().not_after;
    let (start, end) = (
        not_after.saturating_sub(40 * DAY),
        not_after.saturating_sub(39 * DAY),
    );
    s.renewal_info(RenewalInfo::Window {
        start,
        end,
        retry_after: None,
    });
    let status = s.lifecycle().status();
    assert_eq!(status.ari_window, Some((start, end)));
    let renew_at = status.renew_at.unwrap();
    assert!(
        start <= renew_at && renew_at <= end,
        "moved into the window"
    );
    s.set_now(renew_at);
    s.event(Event::Tick);
    assert!(s.lifecycle().status().ordering);
    s.order_fails(
        FailureKind::ServerError,
        "urn:ietf:params:acme:error:serverInternal: boom",
    );
    let status = s.lifecycle().status();
    assert_eq!(status.failures, 1);
    let error = status.last_error.expect("the failure is kept");
    assert!(error.detail.contains("serverInternal"), "{error}");
    let retry_at = status.next_order_at.expect("a retry is scheduled");
    assert!(
        retry_at > s.now(),
        "the backoff waits: {retry_at} after {}",
        s.now()
    );
    s.set_now(retry_at);
    s.event(Event::Tick);
    s.order_succeeds(90 * DAY).store_finishes(Ok(()));
    let status = s.lifecycle().status();
    assert_eq!((status.failures, status.last_error), (0, None));
    assert!(status.serving.unwrap().not_after > not_after);
}

/// The issuer each `StartOrder` so far went to, in order.
fn issuers_asked(script: &Script) -> Vec<usize> {
    (script.actions.iter())
        .filter_map(|a| match a {
            Action::StartOrder { issuer, .. } => Some(*issuer),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failing_issuer_falls_back_to_the_next_at_once_and_renewals_prefer_the_first_again() {
    let mut s = Script::with_issuers(NAMES, 2);
    // First start: the preferred CA is down; the fallback is asked at once, and issues.
    s.cache_missing();
    let started = s.now();
    s.order_fails(FailureKind::Unreachable, "connection refused");
    assert_eq!(issuers_asked(&s), [0, 1]);
    assert_eq!(s.now(), started, "no wait before the fallback");
    s.order_succeeds(90 * DAY).store_finishes(Ok(()));
    assert!(s.lifecycle().is_ready());
    // The renewal asks the preferred CA first again.
    s.renewal_info(RenewalInfo::Unsupported).until_wake();
    assert_eq!(issuers_asked(&s), [0, 1, 0]);
    // A rate limit there also falls back; a failure of the last issuer backs off as usual
    // and the next round starts with the preferred one.
    s.order_fails(
        FailureKind::RateLimited {
            retry_after: Some(HOUR),
        },
        "urn:ietf:params:acme:error:rateLimited: too many certificates",
    );
    assert_eq!(issuers_asked(&s), [0, 1, 0, 1]);
    let failed_at = s.now();
    s.order_fails(FailureKind::ServerError, "HTTP 500");
    s.until_wake();
    assert_eq!(issuers_asked(&s), [0, 1, 0, 1, 0]);
    assert!(
        s.now().saturating_since(failed_at) >= HOUR,
        "the round waits for the Retry-After the first issuer asked for"
    );
    // A rejection is the request's fault: no fallback, the usual wait.
    s.order_fails(
        FailureKind::Rejected,
        "urn:ietf:params:acme:error:rejectedIdentifier",
    );
    assert_eq!(issuers_asked(&s), [0, 1, 0, 1, 0]);
    insta::assert_snapshot!(s.trace());
}

#[test]
fn renew_now_orders_at_once_and_keeps_serving_until_the_new_one_is_installed() {
    let mut s = Script::new(NAMES);
    s.event(Event::RenewNow);
    assert_eq!(count(&s, is_order), 0, "ignored while loading the cache");
    s.cache_missing()
        .order_succeeds(90 * DAY)
        .store_finishes(Ok(()));
    s.renewal_info(RenewalInfo::Unsupported);
    let served = s.lifecycle().serving().unwrap().not_after;
    let at = s.now();
    s.event(Event::RenewNow);
    if s.lifecycle().order_in_flight().is_none() {
        s.until_wake();
    }
    assert_eq!(s.now(), at, "no wait");
    assert_eq!(count(&s, is_order), 2);
    // A duplicate while the order runs is a no-op; the old certificate is served meanwhile.
    s.event(Event::RenewNow);
    assert_eq!(count(&s, is_order), 2);
    assert_eq!(s.lifecycle().serving().unwrap().not_after, served);
    s.wait(HOUR).order_succeeds(90 * DAY);
    assert!(s.lifecycle().serving().unwrap().not_after > served);
}

#[test]
fn a_certificate_another_instance_stored_is_served_and_ends_the_renewal_here() {
    let mut s = Script::new(NAMES);
    let early = s.cert(s.now(), 90 * DAY);
    s.event(Event::SharedCertArrived {
        cert: early.clone(),
    });
    assert!(
        s.lifecycle().serving().is_none(),
        "ignored while loading the cache"
    );
    s.cache_missing()
        .order_succeeds(90 * DAY)
        .store_finishes(Ok(()));
    s.renewal_info(RenewalInfo::Unsupported);
    let served = s.lifecycle().serving().unwrap().not_after;
    // Renewal comes due and an order starts; another instance stores its renewal first.
    s.until_wake();
    assert_eq!(count(&s, is_order), 2);
    assert!(s.lifecycle().order_in_flight().is_some());
    let renewed = s.cert(s.now(), 90 * DAY);
    s.event(Event::SharedCertArrived {
        cert: renewed.clone(),
    });
    assert_eq!(
        s.lifecycle().serving().unwrap().not_after,
        renewed.info.not_after
    );
    assert!(s.lifecycle().serving().unwrap().not_after > served);
    assert!(
        s.lifecycle().order_in_flight().is_none(),
        "the order is no longer needed"
    );
    assert_eq!(
        count(&s, |a| matches!(a, Action::AbandonOrder { .. })),
        1,
        "and the adapter is told to cancel it"
    );
    assert!(
        s.actions
            .iter()
            .any(|a| matches!(a, Action::StoreCert { cert, .. } if *cert == renewed)),
        "the local copy is written"
    );
    // Its late completion, a duplicate, or an older certificate change nothing.
    s.order_returns(renewed.clone());
    s.event(Event::SharedCertArrived {
        cert: renewed.clone(),
    });
    s.event(Event::SharedCertArrived { cert: early });
    assert_eq!(
        s.lifecycle().serving().unwrap().not_after,
        renewed.info.not_after
    );
    assert_eq!(count(&s, is_order), 2, "no new order");
    // A revoked certificate is replaced by an order, never by the same certificate again.
    s.event(Event::RenewNow);
    assert_eq!(count(&s, is_order), 3);
    s.event(Event::SharedCertArrived {
        cert: renewed.clone(),
    });
    assert!(
        s.lifecycle().order_in_flight().is_some(),
        "the replacement order goes on"
    );
}
