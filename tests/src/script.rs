//! Scripted scenarios for one [`CertLifecycle`], recorded as one line per step for snapshot
//! tests: `+<time since start>  <event>  =>  <actions>`.

use std::sync::Arc;
use std::time::Duration;

use certloop_core::{
    Action, CachedCert, CertBundle, CertConfig, CertInfo, CertLifecycle, Certificate, Event,
    FailureKind, OrderError, OrderId, Policy, RenewalInfo, RequestId, RetryState, UnixTime,
};

use crate::sim::{describe_action, describe_event};

/// Scripts start here: 2027-01-15T08:00:00Z.
pub const SCRIPT_START: UnixTime = UnixTime::from_secs(1_800_000_000);

/// A lifecycle under a script, with everything it did so far.
pub struct Script {
    lifecycle: CertLifecycle,
    domains: Vec<String>,
    now: UnixTime,
    lines: Vec<String>,
    /// Every action, in order, for assertions.
    pub actions: Vec<Action>,
    last_order: Option<OrderId>,
    last_store: Option<RequestId>,
    last_renewal_info: Option<RequestId>,
}

impl Script {
    /// A lifecycle for `domains` with the default policy, started at [`SCRIPT_START`].
    pub fn new(domains: &[&str]) -> Self {
        Self::with_policy(domains, Policy::default())
    }

    /// A lifecycle with a specific policy.
    pub fn with_policy(domains: &[&str], policy: Policy) -> Self {
        let config = CertConfig::new(domains.iter().copied(), 7).expect("valid names");
        Self::with_config(domains, config, policy)
    }

    /// A lifecycle ordering from `issuers` CAs, in order of preference.
    pub fn with_issuers(domains: &[&str], issuers: usize) -> Self {
        let config = CertConfig::new(domains.iter().copied(), 7).expect("valid names");
        Self::with_config(domains, config.with_issuers(issuers), Policy::default())
    }

    fn with_config(domains: &[&str], config: CertConfig, policy: Policy) -> Self {
        let lifecycle =
            CertLifecycle::new(Arc::new(policy), &config, SCRIPT_START).expect("valid policy");
        let mut script = Self {
            lifecycle,
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            now: SCRIPT_START,
            lines: Vec::new(),
            actions: Vec::new(),
            last_order: None,
            last_store: None,
            last_renewal_info: None,
        };
        script.record("start".to_owned());
        script
    }

    /// The lifecycle itself, for assertions.
    pub fn lifecycle(&self) -> &CertLifecycle {
        &self.lifecycle
    }

    /// The current script time.
    pub fn now(&self) -> UnixTime {
        self.now
    }

    /// Moves the script clock (forwards or backwards) without telling the lifecycle.
    pub fn set_now(&mut self, now: UnixTime) -> &mut Self {
        self.now = now;
        self
    }

    /// Advances the clock by `d` and delivers a tick.
    pub fn wait(&mut self, d: Duration) -> &mut Self {
        self.now = self.now.saturating_add(d);
        self.event(Event::Tick)
    }

    /// Jumps to the lifecycle's next wake and ticks. Panics if there is none.
    pub fn until_wake(&mut self) -> &mut Self {
        let at = self
            .lifecycle
            .poll_timeout()
            .expect("the lifecycle has a wake time");
        self.now = self.now.max(at);
        self.event(Event::Tick)
    }

    /// Delivers `event` at the current time and records the step.
    pub fn event(&mut self, event: Event) -> &mut Self {
        let described = describe_event(&event);
        self.lifecycle.handle(self.now, event);
        self.record(described);
        self
    }

    /// Answers `LoadCache` with nothing cached.
    pub fn cache_missing(&mut self) -> &mut Self {
        self.event(Event::CacheLoaded {
            cert: CachedCert::Missing,
            retry: None,
        })
    }

    /// Answers `LoadCache` with a certificate for the configured names.
    pub fn cache_cert(&mut self, not_before: UnixTime, lifetime: Duration) -> &mut Self {
        let cert = self.cert(not_before, lifetime);
        self.event(Event::CacheLoaded {
            cert: CachedCert::Found(cert),
            retry: None,
        })
    }

    /// Answers `LoadCache` with a certificate and a persisted retry state.
    pub fn cache_cert_with_retry(
        &mut self,
        cert: Option<Certificate>,
        retry: RetryState,
    ) -> &mut Self {
        let cert = cert.map_or(CachedCert::Missing, CachedCert::Found);
        self.event(Event::CacheLoaded {
            cert,
            retry: Some(retry),
        })
    }

    /// A certificate for the configured names.
    pub fn cert(&self, not_before: UnixTime, lifetime: Duration) -> Certificate {
        self.cert_for(&self.domains.clone(), not_before, lifetime)
    }

    /// A certificate for `names`.
    pub fn cert_for(
        &self,
        names: &[String],
        not_before: UnixTime,
        lifetime: Duration,
    ) -> Certificate {
        Certificate {
            info: CertInfo {
                not_before,
                not_after: not_before.saturating_add(lifetime),
                names: names.to_vec().into(),
            },
            bundle: CertBundle::new(b"-----BEGIN PRIVATE KEY-----\nsecret\n".to_vec()),
        }
    }

    /// Answers the latest order with a certificate issued now (backdated an hour).
    pub fn order_succeeds(&mut self, lifetime: Duration) -> &mut Self {
        let cert = self.cert(self.now.saturating_sub(Duration::from_secs(3600)), lifetime);
        self.order_returns(cert)
    }

    /// Answers the latest order with `cert`.
    pub fn order_returns(&mut self, cert: Certificate) -> &mut Self {
        let order = self.last_order.expect("an order was started");
        self.event(Event::OrderSucceeded { order, cert })
    }

    /// Answers the latest order with a failure.
    pub fn order_fails(&mut self, kind: FailureKind, detail: &str) -> &mut Self {
        let order = self.last_order.expect("an order was started");
        let error = OrderError {
            kind,
            detail: detail.to_owned(),
        };
        self.event(Event::OrderFailed { order, error })
    }

    /// Answers the latest store request.
    pub fn store_finishes(&mut self, result: Result<(), &str>) -> &mut Self {
        let request = self.last_store.expect("a store was requested");
        self.event(Event::StoreFinished {
            request,
            result: result.map_err(str::to_owned),
        })
    }

    /// Answers the latest renewal-information request.
    pub fn renewal_info(&mut self, info: RenewalInfo) -> &mut Self {
        let request = self
            .last_renewal_info
            .expect("renewal information was requested");
        self.event(Event::RenewalInfo { request, info })
    }

    /// The recorded trace.
    pub fn trace(&self) -> String {
        self.lines.join("\n")
    }

    fn record(&mut self, what: String) {
        let mut drained = Vec::new();
        while let Some(action) = self.lifecycle.poll_action() {
            match &action {
                Action::StartOrder { order, .. } => self.last_order = Some(*order),
                Action::StoreCert { request, .. } => self.last_store = Some(*request),
                Action::FetchRenewalInfo { request, .. } => self.last_renewal_info = Some(*request),
                _ => {}
            }
            drained.push(describe_action(&action));
            self.actions.push(action);
        }
        let secs = self.now.saturating_since(SCRIPT_START).as_secs();
        let elapsed = format!(
            "+{}d{:02}h{:02}m{:02}s",
            secs / 86_400,
            secs % 86_400 / 3600,
            secs % 3600 / 60,
            secs % 60
        );
        let mut line = format!("{elapsed:<14} {what}");
        for action in drained {
            line.push_str("\n            => ");
            line.push_str(&action);
        }
        self.lines.push(line);
    }
}
