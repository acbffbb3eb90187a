//! The state machine for one certificate.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{CertConfig, Policy, name_covers, retry_cap};
use crate::event::{
    Action, CachedCert, CertInfo, CertProblem, Certificate, Event, FailureKind, Notice, OrderError,
    OrderId, RenewalInfo, RequestId, RetryState, Serving, StartupFailure,
};
use crate::rng::SplitMix64;
use crate::status::LifecycleStatus;
use crate::time::{Human, UnixTime, duration_millis};

use super::ari::{AriAnswer, AriPoll};
use super::order_budget::{self, OrderBudget};
use super::store_writeback::{StoreWriteBack, WriteEnded};

/// Where the lifecycle is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for [`Event::CacheLoaded`].
    LoadingCache { deadline: UnixTime },
    /// No certificate installed yet; ordering until `deadline`.
    Starting {
        deadline: UnixTime,
        cached_expired: Option<UnixTime>,
    },
    /// A certificate is installed and is always served from now on.
    Running,
    /// [`Action::FailStartup`] was emitted; every event is ignored.
    Failed,
}

#[derive(Clone, Debug)]
struct Served {
    cert: Certificate,
    renew_at: UnixTime,
    expiry_reported: bool,
}

/// The machine behind [`CertLifecycle`] and [`crate::CertFleet`]: it writes actions into a
/// caller-supplied sink so a fleet can share one queue among a million certificates.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    policy: Arc<Policy>,
    domains: Arc<[String]>,
    rng: SplitMix64,
    /// The latest `now` seen.
    clock: UnixTime,
    started_at: UnixTime,
    phase: Phase,
    serving: Option<Served>,
    order_in_flight: Option<OrderId>,
    /// When the order in flight counts as failed if it has not been answered.
    order_deadline: UnixTime,
    /// An order that timed out; its answer is still taken until the next order starts.
    late_order: Option<OrderId>,
    budget: OrderBudget,
    /// Set while a failure streak gates the next order.
    retry_at: Option<UnixTime>,
    failures: u32,
    startup_attempts: u32,
    last_error: Option<OrderError>,
    /// How many issuers there are, and which one the next order goes to.
    issuers: usize,
    issuer: usize,
    /// The latest time an issuer asked not to be asked before (a rate limit's Retry-After)
    /// during the current round of issuers: the round's retry honours it.
    round_not_before: Option<UnixTime>,
    /// [`Event::RenewNow`] asked to replace the served certificate (revoked, perhaps): its
    /// replacement is installed even if it does not expire later.
    replace_served: bool,
    store: StoreWriteBack,
    ari: AriPoll,
    next_id: u64,
    reported_wake: Option<UnixTime>,
}

impl Machine {
    pub(crate) fn new(
        policy: Arc<Policy>,
        cert: &CertConfig,
        now: UnixTime,
        out: &mut impl FnMut(Action),
    ) -> Self {
        let deadline = now.saturating_add(policy.startup_timeout);
        let mut machine = Self {
            domains: cert.domains().clone(),
            rng: SplitMix64::new(cert.seed()),
            clock: now,
            started_at: now,
            phase: Phase::LoadingCache { deadline },
            serving: None,
            order_in_flight: None,
            order_deadline: now,
            late_order: None,
            budget: OrderBudget::new(),
            retry_at: None,
            failures: 0,
            startup_attempts: 0,
            last_error: None,
            issuers: cert.issuers(),
            issuer: 0,
            round_not_before: None,
            replace_served: false,
            store: StoreWriteBack::default(),
            ari: AriPoll::default(),
            next_id: 1,
            reported_wake: None,
            policy,
        };
        out(Action::LoadCache {
            domains: machine.domains.clone(),
        });
        machine.report_wake(out);
        machine
    }

    pub(crate) fn handle(&mut self, now: UnixTime, event: Event, out: &mut impl FnMut(Action)) {
        if self.phase == Phase::Failed {
            return;
        }
        let now = self.observe_clock(now, out);
        match event {
            Event::Tick => {}
            Event::RenewNow => {
                if let Some(served) = &mut self.serving
                    && self.phase == Phase::Running
                {
                    served.renew_at = served.renew_at.min(now);
                    self.replace_served = true;
                }
            }
            Event::SharedCertArrived { cert } => self.on_shared_cert(now, cert, out),
            Event::CacheLoaded { cert, retry } => self.on_cache_loaded(now, cert, retry, out),
            Event::OrderSucceeded { order, cert } => self.on_order_succeeded(now, order, cert, out),
            Event::OrderFailed { order, error } => self.on_order_failed(now, order, error, out),
            Event::StoreFinished { request, result } => {
                self.on_store_finished(now, request, result, out);
            }
            Event::RenewalInfo { request, info } => self.on_renewal_info(now, request, info, out),
        }
        self.on_time(now, out);
        self.report_wake(out);
    }

    /// The next time the machine wants a tick. Never in the past after `handle` returns, except
    /// for timers that are due exactly at the current instant and already handled.
    pub(crate) fn poll_timeout(&self) -> Option<UnixTime> {
        match self.phase {
            Phase::Failed => None,
            Phase::LoadingCache { deadline } => Some(deadline),
            Phase::Starting { deadline, .. } => {
                let next = self.next_order_time().or(self.unanswered_order_deadline());
                Some(next.map_or(deadline, |at| at.min(deadline)))
            }
            Phase::Running => {
                let expiry = self
                    .serving
                    .as_ref()
                    .filter(|s| !s.expiry_reported)
                    .map(|s| s.cert.info.not_after);
                [
                    self.next_order_time(),
                    self.unanswered_order_deadline(),
                    expiry,
                    self.store.wake(),
                    self.ari.wake(),
                ]
                .into_iter()
                .flatten()
                .min()
            }
        }
    }

    pub(crate) fn reported_wake(&self) -> Option<UnixTime> {
        self.reported_wake
    }

    pub(crate) fn serving(&self) -> Option<&CertInfo> {
        self.serving.as_ref().map(|s| &s.cert.info)
    }

    pub(crate) fn renew_at(&self) -> Option<UnixTime> {
        self.serving.as_ref().map(|s| s.renew_at)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.phase == Phase::Running
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.phase == Phase::Failed
    }

    pub(crate) fn status(&self) -> LifecycleStatus {
        LifecycleStatus {
            serving: self.serving().cloned(),
            renew_at: self.renew_at(),
            ari_window: self.ari.window(),
            failures: self.failures,
            last_error: self.last_error.clone(),
            next_order_at: self.next_order_time(),
            ordering: self.order_in_flight.is_some(),
            ready: self.is_ready(),
            failed: self.has_failed(),
        }
    }

    pub(crate) fn order_in_flight(&self) -> Option<OrderId> {
        self.order_in_flight
    }

    pub(crate) fn domains(&self) -> &Arc<[String]> {
        &self.domains
    }

    /// A `now` before the previous one means the wall clock was set back. Timers that measure
    /// a duration (startup deadline, backoff, order timeout, store retry, ARI polling) move back
    /// with it, so they keep their remaining time instead of stalling for as long as the clock
    /// jumped; wall-clock points (renewal time, expiry) stay where they are.
    fn observe_clock(&mut self, now: UnixTime, out: &mut impl FnMut(Action)) -> UnixTime {
        if now < self.clock {
            let by = self.clock.saturating_since(now);
            out(Action::Log(Notice::ClockWentBackwards { by }));
            let back = |t: &mut UnixTime| *t = t.saturating_sub(by);
            if let Phase::LoadingCache { deadline } | Phase::Starting { deadline, .. } =
                &mut self.phase
            {
                back(deadline);
            }
            back(&mut self.started_at);
            back(&mut self.order_deadline);
            self.retry_at.as_mut().map(back);
            self.round_not_before.as_mut().map(back);
            self.store.shift_back(by);
            self.ari.shift_back(by);
            self.budget.shift_back(by);
        }
        self.clock = now;
        now
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn report_wake(&mut self, out: &mut impl FnMut(Action)) {
        let wake = self.poll_timeout();
        if wake != self.reported_wake {
            self.reported_wake = wake;
            out(Action::ScheduleWake(wake));
        }
    }

    fn unanswered_order_deadline(&self) -> Option<UnixTime> {
        self.order_in_flight.map(|_| self.order_deadline)
    }

    fn next_order_time(&self) -> Option<UnixTime> {
        if self.order_in_flight.is_some() {
            return None;
        }
        let wanted = match self.phase {
            Phase::Starting { .. } => self.retry_at.unwrap_or(UnixTime::EPOCH),
            Phase::Running => self
                .retry_at
                .or(self.serving.as_ref().map(|s| s.renew_at))?,
            Phase::LoadingCache { .. } | Phase::Failed => return None,
        };
        let lifetime = self.serving.as_ref().map(|s| s.cert.info.lifetime());
        Some(self.budget.earliest(wanted, order_budget::window(lifetime)))
    }

    /// Fires every timer that is due at `now`.
    fn on_time(&mut self, now: UnixTime, out: &mut impl FnMut(Action)) {
        match self.phase {
            Phase::Failed => return,
            Phase::LoadingCache { deadline } | Phase::Starting { deadline, .. }
                if now >= deadline =>
            {
                if self.order_in_flight.take().is_some() {
                    // No answer in time is not an answer from the CA: recorded, but a restart
                    // may order again at once (an order the CA finalized meanwhile is collected
                    // then, not placed twice).
                    let detail = format!(
                        "no answer within the startup timeout ({})",
                        Human(self.policy.startup_timeout)
                    );
                    let error = OrderError {
                        kind: FailureKind::Unreachable,
                        detail,
                    };
                    return self.order_failed(now, error, out);
                }
                return self.fail_startup(now, None, out);
            }
            Phase::LoadingCache { .. } => return,
            Phase::Starting { .. } | Phase::Running => {}
        }
        if self.unanswered_order_deadline().is_some_and(|at| at <= now) {
            // The adapter bounds every order by `order_timeout`; an order still unanswered
            // counts as failed, and its late answer will be ignored as stale.
            self.late_order = self.order_in_flight.take();
            let detail = format!("no answer within {}", Human(self.policy.order_timeout));
            self.order_failed(
                now,
                OrderError {
                    kind: FailureKind::Unreachable,
                    detail,
                },
                out,
            );
        }
        if self.next_order_time().is_some_and(|at| at <= now) {
            self.start_order(now, out);
        }
        if let Some(served) = &mut self.serving
            && !served.expiry_reported
            && now >= served.cert.info.not_after
        {
            served.expiry_reported = true;
            let not_after = served.cert.info.not_after;
            out(Action::Log(Notice::CertExpired { not_after }));
        }
        if self.store.take_due(now) {
            self.store_served(out);
        }
        if self.ari.take_due(now) {
            self.fetch_renewal_info(now, out);
        }
    }

    fn on_cache_loaded(
        &mut self,
        now: UnixTime,
        cert: CachedCert,
        retry: Option<RetryState>,
        out: &mut impl FnMut(Action),
    ) {
        let Phase::LoadingCache { deadline } = self.phase else {
            return out(Action::Log(Notice::IgnoredStale("cache load")));
        };
        let restored = retry.unwrap_or_default();
        self.failures = restored.failures;
        self.last_error.clone_from(&restored.last_error);
        let mut cached_expired = None;
        match cert {
            CachedCert::Found(cert) => match self.check_installable(now, &cert.info) {
                Ok(()) => {
                    out(Action::Log(Notice::CachedCertAdopted {
                        not_after: cert.info.not_after,
                    }));
                    self.install(now, cert, out);
                    return self.restore_renewal_backoff(now, &restored, out);
                }
                Err(problem) => {
                    if let CertProblem::Expired { not_after } = problem {
                        cached_expired = Some(not_after);
                    }
                    out(Action::Log(Notice::CachedCertUnusable(problem)));
                }
            },
            CachedCert::Missing => out(Action::Log(Notice::CacheMissing)),
            CachedCert::Unreadable { reason } => {
                out(Action::Log(Notice::CacheUnreadable { reason }));
            }
        }
        self.phase = Phase::Starting {
            deadline,
            cached_expired,
        };
        // Without a certificate, a persisted wait is honoured only if the CA answered the last
        // order: failures to reach it cost no rate limit, and nothing can be served until an
        // order succeeds.
        let ca_answered = restored
            .last_error
            .as_ref()
            .is_some_and(|e| e.kind != FailureKind::Unreachable);
        if let Some(at) = restored
            .next_attempt_at
            .filter(|at| ca_answered && *at > now)
        {
            if at >= deadline {
                return self.fail_startup(now, Some(at), out);
            }
            self.retry_at = Some(at);
            out(Action::Log(Notice::RetryStateRestored {
                failures: self.failures,
                next_attempt_at: at,
            }));
        }
    }

    /// With a served certificate, a persisted failure streak keeps gating renewal orders.
    fn restore_renewal_backoff(
        &mut self,
        now: UnixTime,
        restored: &RetryState,
        out: &mut impl FnMut(Action),
    ) {
        let renewal_due = self.serving.as_ref().is_some_and(|s| s.renew_at <= now);
        match restored.next_attempt_at {
            Some(at) if renewal_due && self.failures > 0 => {
                let at = at.max(now);
                self.retry_at = Some(at);
                out(Action::Log(Notice::RetryStateRestored {
                    failures: self.failures,
                    next_attempt_at: at,
                }));
            }
            // A streak from before the served certificate was issued no longer applies.
            _ => {
                self.failures = 0;
                self.last_error = None;
            }
        }
    }

    fn start_order(&mut self, now: UnixTime, out: &mut impl FnMut(Action)) {
        let order = OrderId(self.next_id());
        self.order_in_flight = Some(order);
        self.late_order = None;
        self.budget.spend(now);
        self.order_deadline = now.saturating_add(self.policy.order_timeout);
        if matches!(self.phase, Phase::Starting { .. }) {
            self.startup_attempts += 1;
        }
        let attempt = self.failures.saturating_add(1);
        out(Action::Log(Notice::OrderStarted { order, attempt }));
        out(Action::StartOrder {
            order,
            domains: self.domains.clone(),
            attempt,
            replacing: self.serving.as_ref().map(|s| s.cert.bundle.clone()),
            issuer: self.issuer,
        });
    }

    fn on_order_succeeded(
        &mut self,
        now: UnixTime,
        order: OrderId,
        cert: Certificate,
        out: &mut impl FnMut(Action),
    ) {
        // An order that overran its timeout still counts if no other order has started since.
        let late = self.late_order == Some(order) && self.order_in_flight.is_none();
        if self.order_in_flight != Some(order) && !late {
            return out(Action::Log(Notice::IgnoredStale("order completion")));
        }
        self.order_in_flight = None;
        self.late_order = None;
        if let Err(problem) = self.check_installable(now, &cert.info) {
            let detail = problem.to_string();
            out(Action::Log(Notice::IssuedCertRejected(problem)));
            if late {
                return; // its failure was counted when it timed out
            }
            let error = OrderError {
                kind: FailureKind::InvalidCertificate,
                detail,
            };
            return self.order_failed(now, error, out);
        }
        let renewal = self.serving.is_some();
        let not_after = cert.info.not_after;
        self.adopt_new(now, cert, Notice::CertIssued { not_after, renewal }, out);
    }

    /// Serves a new certificate (ordered here, or by another instance), ends any failure
    /// streak and stores it.
    fn adopt_new(
        &mut self,
        now: UnixTime,
        cert: Certificate,
        notice: Notice,
        out: &mut impl FnMut(Action),
    ) {
        self.replace_served = false;
        self.install(now, cert, out);
        out(Action::Log(notice));
        self.retry_at = None;
        self.last_error = None;
        // The next renewal asks the preferred issuer first again.
        self.issuer = 0;
        self.round_not_before = None;
        if self.failures > 0 {
            self.failures = 0;
            out(Action::PersistRetryState(RetryState::default()));
        }
        self.store_served(out);
    }

    /// A certificate another instance stored: the renewal it answers is done here too.
    fn on_shared_cert(&mut self, now: UnixTime, cert: Certificate, out: &mut impl FnMut(Action)) {
        // Strictly newer, even when the served one is to be replaced (revoked): the
        // replacement is this instance's own order, not an older copy from the fleet.
        let not_newer =
            (self.serving.as_ref()).is_some_and(|s| cert.info.not_after <= s.cert.info.not_after);
        if matches!(self.phase, Phase::LoadingCache { .. })
            || not_newer
            || self.check_installable(now, &cert.info).is_err()
        {
            return out(Action::Log(Notice::IgnoredStale("shared certificate")));
        }
        // The order in flight (waiting for the other instance, most likely) is not needed.
        if let Some(order) = self.order_in_flight.take() {
            out(Action::AbandonOrder { order });
        }
        self.late_order = None;
        let not_after = cert.info.not_after;
        let renewal = self.serving.is_some();
        self.adopt_new(
            now,
            cert,
            Notice::SharedCertAdopted { not_after, renewal },
            out,
        );
    }

    fn on_order_failed(
        &mut self,
        now: UnixTime,
        order: OrderId,
        error: OrderError,
        out: &mut impl FnMut(Action),
    ) {
        if self.order_in_flight != Some(order) {
            return out(Action::Log(Notice::IgnoredStale("order completion")));
        }
        self.order_in_flight = None;
        self.order_failed(now, error, out);
    }

    fn order_failed(&mut self, now: UnixTime, error: OrderError, out: &mut impl FnMut(Action)) {
        let not_the_requests_fault = matches!(
            error.kind,
            FailureKind::Unreachable | FailureKind::ServerError | FailureKind::RateLimited { .. }
        );
        // Past the startup deadline nothing more is ordered: the round ends here.
        let out_of_time = matches!(self.phase, Phase::Starting { deadline, .. } if now >= deadline);
        if not_the_requests_fault && self.issuer + 1 < self.issuers && !out_of_time {
            // The next issuer at once (the order budget still applies); the streak counts one
            // failure per round of issuers, so more issuers never mean a faster backoff.
            let failed = self.issuer;
            self.issuer += 1;
            if let FailureKind::RateLimited {
                retry_after: Some(wait),
            } = error.kind
            {
                let until = now.saturating_add(wait.min(self.policy.retry_after_max));
                self.round_not_before = Some(self.round_not_before.map_or(until, |t| t.max(until)));
            }
            self.last_error = Some(error.clone());
            out(Action::Log(Notice::IssuerFallback {
                failed,
                next: self.issuer,
                error,
            }));
            return;
        }
        self.issuer = 0;
        self.failures = self.failures.saturating_add(1);
        let attempt = self.failures;
        let served = self
            .serving
            .as_ref()
            .map(|s| (s.cert.info.lifetime(), s.cert.info.not_after));
        let (delay, serving) = match served {
            Some((lifetime, not_after)) => {
                let cap = retry_cap(&self.policy, lifetime);
                let delay = match error.kind {
                    // Retrying a refused request soon only burns rate limits.
                    FailureKind::Rejected => cap + self.jitter(cap / 4),
                    _ => self.backoff(self.policy.retry_min, cap, self.failures),
                };
                let serving = if not_after > now {
                    Serving::ValidUntil(not_after)
                } else {
                    Serving::ExpiredSince(not_after)
                };
                (delay, serving)
            }
            // Starting: retry within seconds only when the CA was not reached. An answer from
            // the CA (5xx, rejection, rate limit) means retrying soon, or after a restart, would
            // only burn its rate limits.
            None if error.kind == FailureKind::Unreachable => {
                let (min, max) = (self.policy.startup_retry_min, self.policy.startup_retry_max);
                (
                    self.backoff(min, max, self.startup_attempts),
                    Serving::Nothing,
                )
            }
            None => {
                let (min, max) = (self.policy.retry_min, self.policy.retry_max);
                (self.backoff(min, max, self.failures), Serving::Nothing)
            }
        };
        let delay = match error.kind {
            FailureKind::RateLimited {
                retry_after: Some(ra),
            } => delay.max(ra.min(self.policy.retry_after_max)),
            _ => delay,
        };
        let retry_at = now.saturating_add(delay);
        // An issuer of this round asked for a longer wait: the next round starts with it.
        let retry_at = retry_at.max(self.round_not_before.take().unwrap_or(retry_at));
        self.last_error = Some(error.clone());
        out(Action::PersistRetryState(RetryState {
            failures: self.failures,
            next_attempt_at: Some(retry_at),
            last_error: Some(error.clone()),
        }));
        if let Phase::Starting { deadline, .. } = self.phase
            && retry_at >= deadline
        {
            let blocked = (error.kind != FailureKind::Unreachable).then_some(retry_at);
            return self.fail_startup(now, blocked, out);
        }
        self.retry_at = Some(retry_at);
        out(Action::Log(Notice::OrderFailed {
            attempt,
            error,
            retry_at,
            serving,
        }));
    }

    /// `min * 2^(n-1)` capped at `max`, then jittered down by up to a quarter (enough to
    /// spread a fleet, little enough to keep the worst-case order rate low).
    fn backoff(&mut self, min: Duration, max: Duration, n: u32) -> Duration {
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        let full = min.saturating_mul(factor).min(max);
        full - self.jitter(full / 4)
    }

    /// A random duration in `0..=max`.
    fn jitter(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.rng.up_to(duration_millis(max)))
    }

    fn fail_startup(
        &mut self,
        now: UnixTime,
        blocked_until: Option<UnixTime>,
        out: &mut impl FnMut(Action),
    ) {
        let cached_expired = match self.phase {
            Phase::Starting { cached_expired, .. } => cached_expired,
            _ => None,
        };
        self.phase = Phase::Failed;
        self.order_in_flight = None;
        out(Action::FailStartup(StartupFailure {
            domains: self.domains.clone(),
            attempts: self.startup_attempts,
            failures: self.failures,
            waited: now.saturating_since(self.started_at),
            cached_expired,
            last_error: self.last_error.clone(),
            blocked_until,
        }));
    }

    fn check_installable(&self, now: UnixTime, info: &CertInfo) -> Result<(), CertProblem> {
        if now < info.not_before {
            return Err(CertProblem::NotYetValid {
                not_before: info.not_before,
            });
        }
        if now >= info.not_after {
            return Err(CertProblem::Expired {
                not_after: info.not_after,
            });
        }
        let missing: Vec<String> = self
            .domains
            .iter()
            .filter(|d| !info.names.iter().any(|n| name_covers(n, d)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(CertProblem::MissingNames(missing));
        }
        match &self.serving {
            Some(served)
                if !self.replace_served && info.not_after <= served.cert.info.not_after =>
            {
                Err(CertProblem::NotNewer {
                    not_after: info.not_after,
                    serving_until: served.cert.info.not_after,
                })
            }
            _ => Ok(()),
        }
    }

    /// Serves `cert` from now on (already checked by `check_installable`).
    fn install(&mut self, now: UnixTime, cert: Certificate, out: &mut impl FnMut(Action)) {
        let renew_at = self.renewal_time(&cert.info);
        let not_after = cert.info.not_after;
        out(Action::InstallCert(cert.clone()));
        self.serving = Some(Served {
            cert,
            renew_at,
            expiry_reported: false,
        });
        if self.phase != Phase::Running {
            self.phase = Phase::Running;
            out(Action::Ready { not_after });
        }
        self.ari.restart(now);
    }

    /// `not_after` minus the renewal threshold, minus a seeded spread.
    fn renewal_time(&mut self, info: &CertInfo) -> UnixTime {
        let lifetime = info.lifetime();
        let threshold = self.policy.renewal_threshold(lifetime);
        let spread = self.jitter(self.policy.renewal_spread.of(lifetime));
        info.not_after
            .saturating_sub(threshold)
            .saturating_sub(spread)
    }

    /// Writes the served certificate, or marks it for writing once the write in flight ends.
    fn store_served(&mut self, out: &mut impl FnMut(Action)) {
        let Some(served) = &self.serving else { return };
        if self.store.defer_if_busy() {
            return;
        }
        let cert = served.cert.clone();
        let request = RequestId(self.next_id());
        self.store.begin(request);
        out(Action::StoreCert { request, cert });
    }

    fn on_store_finished(
        &mut self,
        now: UnixTime,
        request: RequestId,
        result: Result<(), String>,
        out: &mut impl FnMut(Action),
    ) {
        match (self.store.finish(request, result.is_ok()), result) {
            (WriteEnded::Stale, _) => out(Action::Log(Notice::IgnoredStale("store completion"))),
            (WriteEnded::Written { rewrite: true }, _) => self.store_served(out),
            (WriteEnded::Failed { failures }, Err(reason)) => {
                let (min, max) = (self.policy.retry_min, self.policy.retry_max);
                let retry_at = now.saturating_add(self.backoff(min, max, failures));
                self.store.schedule_retry(retry_at);
                out(Action::Log(Notice::StoreFailed { reason, retry_at }));
            }
            // Written with nothing newer waiting (`finish` fails only an `Err`).
            (WriteEnded::Written { rewrite: false } | WriteEnded::Failed { .. }, _) => {}
        }
    }

    /// Asks for the CA's renewal window, unless a renewal is already under way.
    fn fetch_renewal_info(&mut self, now: UnixTime, out: &mut impl FnMut(Action)) {
        let Some(served) = &self.serving else { return };
        let renewing =
            self.order_in_flight.is_some() || self.failures > 0 || now >= served.renew_at;
        if renewing || !self.ari.can_ask() {
            return;
        }
        let cert = served.cert.bundle.clone();
        let request = RequestId(self.next_id());
        self.ari.begin(request);
        out(Action::FetchRenewalInfo { request, cert });
    }

    fn on_renewal_info(
        &mut self,
        now: UnixTime,
        request: RequestId,
        info: RenewalInfo,
        out: &mut impl FnMut(Action),
    ) {
        match self.ari.answered(now, request, info, &self.policy) {
            AriAnswer::Stale => out(Action::Log(Notice::IgnoredStale("renewal information"))),
            AriAnswer::NewWindow { start, end } => self.apply_renewal_window(now, start, end, out),
            AriAnswer::Nothing => {}
        }
    }

    /// Renews at a random time inside the CA's window (RFC 9773), if that is earlier.
    fn apply_renewal_window(
        &mut self,
        now: UnixTime,
        start: UnixTime,
        end: UnixTime,
        out: &mut impl FnMut(Action),
    ) {
        let pick = start.saturating_add(self.jitter(end.saturating_since(start)));
        if let Some(served) = &mut self.serving
            && pick < served.renew_at
        {
            served.renew_at = pick.max(now);
            out(Action::Log(Notice::RenewalMovedEarlier {
                window_start: start,
                window_end: end,
                renew_at: served.renew_at,
            }));
        }
    }
}
