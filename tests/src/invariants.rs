//! The safety invariants of one certificate's lifecycle, written once: the simulator checks
//! them for every certificate of its fleet, the fuzz target for the one lifecycle it feeds.
//!
//! - an order starts only when none is in flight, or the one in flight has timed out;
//! - an installed certificate is valid now, covers the configured names, and outlives the one
//!   it replaces;
//! - `Ready` comes once, after an install; `FailStartup` never follows an install, and nothing
//!   but a cleared wake follows `FailStartup`.

use std::time::Duration;

use certloop_core::{Action, CertInfo, OrderId, UnixTime};

/// Whether `info` may be installed at `now` for `domains`, replacing a certificate valid until
/// `current`.
pub fn installable(
    info: &CertInfo,
    now: UnixTime,
    domains: &[String],
    current: Option<UnixTime>,
) -> bool {
    info.is_valid_at(now)
        && domains.iter().all(|d| info.names.iter().any(|n| n == d))
        && current.is_none_or(|c| info.not_after > c)
}

/// What one lifecycle has done so far, as far as the invariants care.
#[derive(Debug)]
pub struct LifecycleInvariants {
    domains: Vec<String>,
    order_timeout: Duration,
    installed: Option<CertInfo>,
    ready: bool,
    failed: bool,
    outstanding: Option<(OrderId, UnixTime)>,
}

impl LifecycleInvariants {
    /// A lifecycle for `domains` whose orders time out after `order_timeout`.
    pub fn new(domains: &[String], order_timeout: Duration) -> Self {
        Self {
            domains: domains.to_vec(),
            order_timeout,
            installed: None,
            ready: false,
            failed: false,
            outstanding: None,
        }
    }

    /// The last certificate installed.
    pub fn installed(&self) -> Option<&CertInfo> {
        self.installed.as_ref()
    }

    /// Whether `Ready` was emitted.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The order in flight and when (by the lifecycle's clock) it started.
    pub fn outstanding(&self) -> Option<(OrderId, UnixTime)> {
        self.outstanding
    }

    /// Whether `info` could replace what is installed at `now`.
    pub fn could_install(&self, info: &CertInfo, now: UnixTime) -> bool {
        let current = self.installed.as_ref().map(|i| i.not_after);
        installable(info, now, &self.domains, current)
    }

    /// The lifecycle's clock moved from `before` to `now`: one set back moves the core's order
    /// timeout back by as much.
    pub fn clock_moved(&mut self, before: UnixTime, now: UnixTime) {
        if let Some((_, started)) = &mut self.outstanding {
            *started = started.saturating_sub(before.saturating_since(now));
        }
    }

    /// `order` was answered; `true` if it was the order in flight.
    pub fn answered(&mut self, order: OrderId) -> bool {
        let current = self.outstanding.is_some_and(|(o, _)| o == order);
        if current {
            self.outstanding = None;
        }
        current
    }

    /// Checks `action`, emitted when the lifecycle's clock read `now`. `Ok(Some(order))`: a
    /// new order superseded `order`, which had timed out (the adapter cancels it).
    pub fn check(&mut self, now: UnixTime, action: &Action) -> Result<Option<OrderId>, String> {
        if self.failed && *action != Action::ScheduleWake(None) {
            return Err(format!("{action:?} after FailStartup"));
        }
        match action {
            Action::StartOrder { order, .. } => {
                let superseded = match self.outstanding {
                    Some((previous, started)) => {
                        if now < started.saturating_add(self.order_timeout) {
                            return Err(format!(
                                "order {order:?} started while {previous:?} in flight"
                            ));
                        }
                        Some(previous)
                    }
                    None => None,
                };
                self.outstanding = Some((*order, now));
                return Ok(superseded);
            }
            Action::InstallCert(cert) => {
                if !self.could_install(&cert.info, now) {
                    let current = self.installed.as_ref().map(|i| i.not_after);
                    return Err(format!(
                        "installed an unusable certificate {:?} at {now} (serving until {current:?})",
                        cert.info
                    ));
                }
                self.installed = Some(cert.info.clone());
            }
            Action::Ready { .. } => {
                let valid = self.installed.as_ref().is_some_and(|i| i.is_valid_at(now));
                if !valid || self.ready {
                    return Err("Ready without a valid certificate, or twice".into());
                }
                self.ready = true;
            }
            Action::FailStartup(_) => {
                if self.installed.is_some() {
                    return Err("FailStartup after a certificate was installed".into());
                }
                self.failed = true;
            }
            Action::LoadCache { .. }
            | Action::StoreCert { .. }
            | Action::PersistRetryState(_)
            | Action::FetchRenewalInfo { .. }
            | Action::Log(_)
            | Action::AbandonOrder { .. }
            | Action::ScheduleWake(_) => {}
        }
        Ok(None)
    }
}
