//! Many certificates behind one queue of actions and one priority queue of wake times.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use crate::config::{CertConfig, ConfigError, Policy};
use crate::event::{Action, CertInfo, Event, OrderId};
use crate::lifecycle::Machine;
use crate::status::LifecycleStatus;
use crate::time::UnixTime;

/// Names one certificate in a [`CertFleet`]. Ids of removed certificates are never reused, so
/// a late completion for a removed certificate is ignored rather than misdelivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertId {
    index: u32,
    generation: u32,
}

impl CertId {
    /// Position in the fleet's table (reused after removal, with a new generation).
    pub fn index(self) -> u32 {
        self.index
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    machine: Option<Machine>,
}

/// The lifecycles of many certificates, driven like one [`crate::CertLifecycle`]: `handle`
/// events addressed by [`CertId`], drain [`CertFleet::poll_action`], sleep until
/// [`CertFleet::poll_timeout`], then call [`CertFleet::handle_timeout`].
///
/// Per-event cost does not grow with the number of certificates: actions go into one shared
/// queue and wake times into a binary heap (stale entries are skipped when they surface).
#[derive(Debug)]
pub struct CertFleet {
    policy: Arc<Policy>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    wakes: BinaryHeap<Reverse<(UnixTime, u32, u32)>>,
    actions: VecDeque<(CertId, Action)>,
    len: usize,
    /// The `now` of the previous call, to notice the wall clock being set back.
    last_now: Option<UnixTime>,
}

impl CertFleet {
    /// An empty fleet whose certificates share `policy`.
    pub fn new(policy: Arc<Policy>) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Self {
            policy,
            slots: Vec::new(),
            free: Vec::new(),
            wakes: BinaryHeap::new(),
            actions: VecDeque::new(),
            len: 0,
            last_now: None,
        })
    }

    /// Starts managing `cert` at `now`; its first action is [`Action::LoadCache`].
    pub fn insert(&mut self, now: UnixTime, cert: &CertConfig) -> CertId {
        self.observe_clock(now);
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    machine: None,
                });
                u32::try_from(self.slots.len() - 1).expect("more than 2^32 certificates")
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = CertId {
            index,
            generation: slot.generation,
        };
        let mut sink = Sink {
            id,
            wakes: &mut self.wakes,
            actions: &mut self.actions,
        };
        slot.machine = Some(Machine::new(self.policy.clone(), cert, now, &mut |a| {
            sink.push(a)
        }));
        self.len += 1;
        id
    }

    /// Stops managing a certificate; later events for it are ignored.
    pub fn remove(&mut self, id: CertId) {
        if let Some(slot) = self.slots.get_mut(id.index as usize)
            && slot.generation == id.generation
            && slot.machine.take().is_some()
        {
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(id.index);
            self.len -= 1;
        }
        self.prune_wakes();
    }

    /// Feeds one event for one certificate. Events for unknown or removed ids are ignored.
    pub fn handle(&mut self, now: UnixTime, id: CertId, event: Event) {
        self.observe_clock(now);
        self.deliver(now, id, event, None);
        self.prune_wakes();
    }

    /// Ticks every certificate whose wake time is due at `now`.
    pub fn handle_timeout(&mut self, now: UnixTime) {
        self.observe_clock(now);
        while let Some(&Reverse((at, index, generation))) = self.wakes.peek() {
            if at > now {
                break;
            }
            self.wakes.pop();
            self.deliver(now, CertId { index, generation }, Event::Tick, Some(at));
        }
        self.prune_wakes();
    }

    /// The next action for some certificate; drain until `None` after every mutation.
    /// Wake times are not forwarded: [`CertFleet::poll_timeout`] covers them all.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<(CertId, Action)> {
        self.actions.pop_front()
    }

    /// The earliest wake time over all certificates.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<UnixTime> {
        self.wakes.peek().map(|Reverse((at, ..))| *at)
    }

    /// How many certificates are managed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if no certificate is managed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The certificate `id` serves, if any.
    pub fn serving(&self, id: CertId) -> Option<&CertInfo> {
        self.machine(id).and_then(Machine::serving)
    }

    /// When `id`'s served certificate will be renewed (absent failures).
    pub fn renew_at(&self, id: CertId) -> Option<UnixTime> {
        self.machine(id).and_then(Machine::renew_at)
    }

    /// What `id` serves, when it renews and how its last orders went.
    pub fn status(&self, id: CertId) -> Option<LifecycleStatus> {
        self.machine(id).map(Machine::status)
    }

    /// `true` once `id` has a certificate installed.
    pub fn is_ready(&self, id: CertId) -> bool {
        self.machine(id).is_some_and(Machine::is_ready)
    }

    /// `true` once `id` failed to start.
    pub fn has_failed(&self, id: CertId) -> bool {
        self.machine(id).is_some_and(Machine::has_failed)
    }

    /// `id`'s order awaiting an answer, if any.
    pub fn order_in_flight(&self, id: CertId) -> Option<OrderId> {
        self.machine(id).and_then(Machine::order_in_flight)
    }

    /// `id`'s wake time, if any.
    pub fn wake_of(&self, id: CertId) -> Option<UnixTime> {
        self.machine(id).and_then(Machine::poll_timeout)
    }

    fn machine(&self, id: CertId) -> Option<&Machine> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.machine.as_ref())
            .flatten()
    }

    /// When the wall clock was set back, every machine must hear of it so that its duration
    /// timers move back too (otherwise they would stall for as long as the jump). This is the
    /// one operation that visits every certificate; it happens only when the clock jumps back.
    fn observe_clock(&mut self, now: UnixTime) {
        if self.last_now.is_some_and(|last| now < last) {
            for index in 0..self.slots.len() {
                let slot = &self.slots[index];
                if slot.machine.is_some() {
                    let id = CertId {
                        index: index as u32,
                        generation: slot.generation,
                    };
                    self.deliver(now, id, Event::Tick, None);
                }
            }
            self.prune_wakes();
        }
        self.last_now = Some(now);
    }

    /// Hands `event` to `id`'s machine; with `for_wake`, only if that is still its wake time.
    fn deliver(&mut self, now: UnixTime, id: CertId, event: Event, for_wake: Option<UnixTime>) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        let Some(machine) = slot
            .machine
            .as_mut()
            .filter(|_| slot.generation == id.generation)
        else {
            return;
        };
        if for_wake.is_some_and(|at| machine.reported_wake() != Some(at)) {
            return;
        }
        let mut sink = Sink {
            id,
            wakes: &mut self.wakes,
            actions: &mut self.actions,
        };
        machine.handle(now, event, &mut |a| sink.push(a));
    }

    /// Drops stale heap entries at the top, so `poll_timeout` reports a real wake.
    fn prune_wakes(&mut self) {
        while let Some(&Reverse((at, index, generation))) = self.wakes.peek() {
            let live = self
                .slots
                .get(index as usize)
                .filter(|slot| slot.generation == generation)
                .and_then(|slot| slot.machine.as_ref())
                .is_some_and(|m| m.reported_wake() == Some(at));
            if live {
                break;
            }
            self.wakes.pop();
        }
    }
}

/// Routes one machine's actions: wake times into the heap, everything else into the queue.
struct Sink<'a> {
    id: CertId,
    wakes: &'a mut BinaryHeap<Reverse<(UnixTime, u32, u32)>>,
    actions: &'a mut VecDeque<(CertId, Action)>,
}

impl Sink<'_> {
    fn push(&mut self, action: Action) {
        match action {
            Action::ScheduleWake(Some(at)) => {
                self.wakes
                    .push(Reverse((at, self.id.index, self.id.generation)));
            }
            Action::ScheduleWake(None) => {}
            other => self.actions.push_back((self.id, other)),
        }
    }
}
