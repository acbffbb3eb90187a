//! The lifecycle of one certificate: [`CertLifecycle`] is the public face of [`Machine`], whose
//! side timers live in small sub-states (store write-back, ARI polling, the order budget), each
//! moving itself back when the wall clock is set back.

mod ari;
mod machine;
mod order_budget;
mod store_writeback;
mod timer;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::config::{CertConfig, ConfigError, Policy};
use crate::event::{Action, CertInfo, Event, OrderId};
use crate::status::LifecycleStatus;
use crate::time::UnixTime;

pub(crate) use machine::Machine;
pub use order_budget::ORDER_BUDGET;

/// The lifecycle of one certificate: events with the current time in, actions out.
///
/// Drive it like this, and nothing else:
/// 1. after [`CertLifecycle::new`] and after every [`CertLifecycle::handle`], drain
///    [`CertLifecycle::poll_action`] until it returns `None`, carrying out each action;
/// 2. sleep until [`CertLifecycle::poll_timeout`] (or until an IO result arrives), then call
///    `handle(now, Event::Tick)` (or the IO result's event).
///
/// `handle` never fails. Late, duplicate or unknown completions, early ticks and a clock that
/// goes backwards are harmless.
#[derive(Debug)]
pub struct CertLifecycle {
    machine: Machine,
    actions: VecDeque<Action>,
}

impl CertLifecycle {
    /// A lifecycle for `cert`, started at `now`. Its first action is [`Action::LoadCache`].
    pub fn new(policy: Arc<Policy>, cert: &CertConfig, now: UnixTime) -> Result<Self, ConfigError> {
        policy.validate()?;
        let mut actions = VecDeque::new();
        let machine = Machine::new(policy, cert, now, &mut |a| actions.push_back(a));
        Ok(Self { machine, actions })
    }

    /// Feeds one event that happened at `now`.
    pub fn handle(&mut self, now: UnixTime, event: Event) {
        let actions = &mut self.actions;
        self.machine
            .handle(now, event, &mut |a| actions.push_back(a));
    }

    /// The next action to carry out; drain until `None` after every `handle`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call `handle(now, Event::Tick)` next; `None` once startup has failed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<UnixTime> {
        self.machine.poll_timeout()
    }

    /// The certificate being served, if any.
    pub fn serving(&self) -> Option<&CertInfo> {
        self.machine.serving()
    }

    /// When the served certificate will be renewed (absent failures).
    pub fn renew_at(&self) -> Option<UnixTime> {
        self.machine.renew_at()
    }

    /// What is served, when it renews and how the last orders went.
    pub fn status(&self) -> LifecycleStatus {
        self.machine.status()
    }

    /// `true` once a certificate is installed (after [`Action::Ready`]).
    pub fn is_ready(&self) -> bool {
        self.machine.is_ready()
    }

    /// `true` after [`Action::FailStartup`].
    pub fn has_failed(&self) -> bool {
        self.machine.has_failed()
    }

    /// The order awaiting an answer, if any.
    pub fn order_in_flight(&self) -> Option<OrderId> {
        self.machine.order_in_flight()
    }

    /// The configured names.
    pub fn domains(&self) -> &Arc<[String]> {
        self.machine.domains()
    }
}
