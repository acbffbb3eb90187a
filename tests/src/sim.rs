//! Deterministic simulation of certificate lifecycles (in the spirit of TigerBeetle's VOPR).
//!
//! One seed derives everything: how many certificates, their lifetimes, what the cache holds at
//! first start, and every fault rate (CA outages, 5xx, rate limits, rejections, slow answers,
//! wrong or expired certificates, store failures, corrupt caches, clock jumps, crashes). The
//! run is a safety phase with faults, then a healed liveness phase that must converge. Every
//! step is checked against the invariants; a failure names the seed and the command that
//! reproduces it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use certloop_core::{
    Action, CachedCert, CertBundle, CertConfig, CertFleet, CertId, CertInfo, Certificate, Event,
    FailureKind, Level, Notice, OrderError, OrderId, Policy, RenewalInfo, RetryState, SplitMix64,
    StartupFailure, UnixTime,
};

use crate::invariants::{LifecycleInvariants, installable};

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// Simulated runs start here (2027-01-15).
const START: u64 = 1_800_000_000 * SECOND;
/// Orders that reach one CA, per certificate, in any rolling hour, across restarts: the core's
/// own budget (per process: it is not persisted) plus what a restart loop adds in the hour
/// before. Each restart honours the persisted streak's wait, which doubles from a minute
/// (1 + 2 + 4 + 8 + 16 + 32 minutes pass the hour: six orders at most), plus one from a restart
/// whose last order failed to reach the CA (not persisted against it).
pub const MAX_CA_ORDERS_PER_HOUR: usize = certloop_core::ORDER_BUDGET + 7;
/// After healing, every certificate must have converged within this long.
const CONVERGE_WITHIN: u64 = 4 * DAY;

/// What the cache holds for a certificate at first start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialCache {
    /// Nothing.
    Missing,
    /// A valid certificate with this percentage of its lifetime left.
    Valid(u8),
    /// A certificate that expired a day ago.
    Expired,
    /// An unreadable file.
    Corrupt,
    /// A valid certificate for other names.
    WrongNames,
}

/// One simulated certificate.
#[derive(Clone, Debug)]
pub struct CertSpec {
    /// Its names.
    pub domains: Vec<String>,
    /// The lifetime the CA issues it with.
    pub lifetime: Duration,
    /// The cache at first start.
    pub initial: InitialCache,
}

/// Fault rates, each a chance in 100 (per order, per write, per day, …).
#[derive(Clone, Debug, Default)]
pub struct Rates {
    /// A CA outage starts on a given day.
    pub outage_per_day: u64,
    /// Longest outage, in hours.
    pub outage_max_hours: u64,
    /// An order is answered unreachable outside outages (timeouts, resets).
    pub unreachable: u64,
    /// An order gets a 5xx.
    pub server_error: u64,
    /// An order is rate limited.
    pub rate_limited: u64,
    /// An order is rejected (permanent error).
    pub rejected: u64,
    /// The CA issues a certificate for the wrong names.
    pub wrong_names: u64,
    /// The CA issues an already-expired certificate.
    pub expired_issue: u64,
    /// The CA issues a one-hour certificate.
    pub short_issue: u64,
    /// The CA answers slowly (up to 9 minutes, inside the order timeout).
    pub slow: u64,
    /// A cache write fails.
    pub store_fail: u64,
    /// The cache reads back corrupt at a restart.
    pub cache_corrupt: u64,
    /// The clock jumps (up to two days either way) on a given day.
    pub clock_jump_per_day: u64,
    /// The process crashes on a given day.
    pub crash_per_day: u64,
    /// The CA offers ARI (all-or-nothing per run, 0 or 100).
    pub ari: u64,
    /// An ARI window asks for immediate renewal.
    pub ari_urgent: u64,
}

/// Everything a seed decides.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Simulated days.
    pub days: u64,
    /// Day on which faults stop.
    pub heal_day: u64,
    /// The certificates.
    pub certs: Vec<CertSpec>,
    /// Fault rates.
    pub rates: Rates,
    /// How many CAs each certificate is ordered from (the fake CA answers for all of them with
    /// the same faults: every fallback fails as often as the preferred CA).
    pub issuers: usize,
    /// Which family of runs this is.
    pub kind: SimKind,
}

/// The families of simulated runs, each derived from a seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimKind {
    /// Swarm testing: any certificates, any fault mix ([`SimConfig::from_seed`]).
    Swarm,
    /// Six-day certificates through CA outages of up to two days
    /// ([`SimConfig::short_lived_outages`]). Outages never overlap and are at least half a
    /// lifetime apart, and no fault can make a certificate lapse on its own (no rejections,
    /// rate limits, wrong or short certificates, clock jumps or corrupt caches): a certificate
    /// once served must never lapse.
    ShortLivedOutages,
}

impl SimKind {
    /// The run this family derives from `seed`.
    pub fn config(self, seed: u64, days: u64) -> SimConfig {
        match self {
            Self::Swarm => SimConfig::from_seed(seed, days),
            Self::ShortLivedOutages => SimConfig::short_lived_outages(seed, days),
        }
    }

    /// The `certloop-sim` argument that selects this family.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Swarm => "",
            Self::ShortLivedOutages => " --short-lived",
        }
    }
}

impl SimConfig {
    /// Derives a whole run from `seed` (swarm testing: the fault mix itself is random).
    pub fn from_seed(seed: u64, days: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5EED_0F5E_ED00_0001);
        let count = 1 + rng.up_to(2) as usize;
        let lifetimes = [6, 45, 90];
        let certs = (0..count)
            .map(|i| {
                let lifetime = Duration::from_millis(lifetimes[rng.up_to(2) as usize] * DAY);
                let initial = match rng.up_to(5) {
                    0 | 1 => InitialCache::Missing,
                    2 => InitialCache::Valid(rng.up_to(99) as u8 + 1),
                    3 => InitialCache::Expired,
                    4 => InitialCache::Corrupt,
                    _ => InitialCache::WrongNames,
                };
                let domains = (0..=rng.up_to(2))
                    .map(|n| format!("n{n}.cert{i}.example"))
                    .collect();
                CertSpec {
                    domains,
                    lifetime,
                    initial,
                }
            })
            .collect();
        let mut rate = |max: u64| if rng.chance(1, 4) { 0 } else { rng.up_to(max) };
        let rates = Rates {
            outage_per_day: rate(30),
            outage_max_hours: 1 + rate(48),
            unreachable: rate(15),
            server_error: rate(20),
            rate_limited: rate(10),
            rejected: rate(8),
            wrong_names: rate(4),
            expired_issue: rate(4),
            short_issue: rate(4),
            slow: rate(20),
            store_fail: rate(30),
            cache_corrupt: rate(20),
            clock_jump_per_day: rate(5),
            crash_per_day: rate(10),
            ari_urgent: rate(5),
            ari: 0,
        };
        let rates = Rates {
            ari: if rng.chance(1, 3) { 100 } else { 0 },
            ..rates
        };
        let heal_day = days.saturating_sub(30).max(days * 2 / 3);
        Self {
            seed,
            days,
            heal_day,
            certs,
            rates,
            issuers: 1 + rng.up_to(1) as usize,
            kind: SimKind::Swarm,
        }
    }

    /// Six-day (160-hour) certificates through CA outages of up to two days each, with the
    /// faults a certificate must survive (unreachable, 5xx, slow answers, failed writes,
    /// crashes, ARI or not): once served, a certificate must never lapse.
    pub fn short_lived_outages(seed: u64, days: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5EED_0F5E_ED00_0006);
        let count = 1 + rng.up_to(2) as usize;
        let certs = (0..count)
            .map(|i| CertSpec {
                domains: vec![format!("short{i}.example")],
                lifetime: Duration::from_secs(160 * 3600),
                // A cached certificate with at least half its life left: less would be due, and
                // could lapse in an outage that begins at the start.
                initial: match rng.up_to(1) {
                    0 => InitialCache::Missing,
                    _ => InitialCache::Valid(50 + rng.up_to(50) as u8),
                },
            })
            .collect();
        let mut rate = |max: u64| if rng.chance(1, 4) { 0 } else { rng.up_to(max) };
        let rates = Rates {
            outage_per_day: 10 + rate(40),
            outage_max_hours: 48,
            unreachable: rate(15),
            server_error: rate(20),
            slow: rate(20),
            store_fail: rate(30),
            crash_per_day: rate(10),
            ari_urgent: rate(5),
            ..Rates::default()
        };
        let rates = Rates {
            ari: if rng.chance(1, 3) { 100 } else { 0 },
            ..rates
        };
        Self {
            seed,
            days,
            heal_day: days.saturating_sub(15).max(days * 2 / 3),
            certs,
            rates,
            issuers: 1,
            kind: SimKind::ShortLivedOutages,
        }
    }
}

impl fmt::Display for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rates;
        write!(
            f,
            "SEED={}{} days={} heal_day={} issuers={} certs=[",
            self.seed,
            self.kind.flag(),
            self.days,
            self.heal_day,
            self.issuers
        )?;
        for (i, c) in self.certs.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(
                f,
                "{sep}{}x{}h/{:?}",
                c.domains.len(),
                c.lifetime.as_secs() / 3600,
                c.initial
            )?;
        }
        write!(
            f,
            "] outage={}/100/day(<={}h) unreachable={} 5xx={} ratelimit={} rejected={} \
             wrong_names={} expired={} short={} slow={} store_fail={} corrupt={} \
             clock_jump={}/100/day crash={}/100/day ari={} ari_urgent={}",
            r.outage_per_day,
            r.outage_max_hours,
            r.unreachable,
            r.server_error,
            r.rate_limited,
            r.rejected,
            r.wrong_names,
            r.expired_issue,
            r.short_issue,
            r.slow,
            r.store_fail,
            r.cache_corrupt,
            r.clock_jump_per_day,
            r.crash_per_day,
            r.ari,
            r.ari_urgent
        )
    }
}

/// Counts from one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Hash over every action in order: equal for equal seeds.
    pub trace_hash: u64,
    /// Simulation steps.
    pub steps: u64,
    /// Orders started.
    pub orders: u64,
    /// Orders that failed.
    pub order_failures: u64,
    /// Certificates installed.
    pub installs: u64,
    /// Startups that failed (each followed by a restart).
    pub failed_startups: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Warnings and errors logged.
    pub warnings: u64,
    /// Error notices.
    pub errors: u64,
}

/// An invariant that did not hold.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The seed.
    pub seed: u64,
    /// The family of runs the seed is of.
    pub kind: SimKind,
    /// The step at which it was detected.
    pub step: u64,
    /// Simulated time since start.
    pub at: Duration,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} violated an invariant at step {} (+{}): {}\nreproduce with: \
             cargo run -p certloop-tests --bin certloop-sim -- --seed {}{} --verbose",
            self.seed,
            self.step,
            certloop_core::Human(self.at),
            self.message,
            self.seed,
            self.kind.flag()
        )
    }
}

enum SimEvent {
    Deliver {
        cert: usize,
        id: CertId,
        event: Event,
    },
    Wake,
    Skew(i64),
    Crash(usize),
    Restart(usize),
    Heal,
}

struct Queued {
    at: u64,
    seq: u64,
    what: SimEvent,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What the simulator knows about one certificate across restarts.
struct Track {
    config: CertConfig,
    lifetime: u64,
    id: Option<CertId>,
    // The "disk": survives restarts.
    stored: Option<Certificate>,
    retry: Option<RetryState>,
    /// True times of the orders that reached a CA since the clock last jumped, and which.
    ca_orders: VecDeque<(UnixTime, usize)>,
    // Per instance.
    started_true: u64,
    /// The wall clock jumped since this instance started.
    clock_jumped: bool,
    clock: UnixTime,
    cache_valid_at_load: Option<bool>,
    cache_expired_at_load: Option<UnixTime>,
    invariants: LifecycleInvariants,
    cancelled: Vec<OrderId>,
    failed_orders: u32,
    gated: bool,
    retry_due_by: Option<UnixTime>,
}

impl Track {
    fn reset_instance(
        &mut self,
        id: CertId,
        now: UnixTime,
        true_now: u64,
        order_timeout: Duration,
    ) {
        self.id = Some(id);
        self.started_true = true_now;
        self.clock_jumped = false;
        self.clock = now;
        self.cache_valid_at_load = None;
        self.cache_expired_at_load = None;
        self.invariants = LifecycleInvariants::new(self.config.domains(), order_timeout);
        self.cancelled.clear();
        self.failed_orders = 0;
        self.gated = false;
        self.retry_due_by = None;
    }
}

/// One simulated run.
pub struct Sim {
    cfg: SimConfig,
    policy: Arc<Policy>,
    rng: SplitMix64,
    fleet: CertFleet,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    now: u64,
    skew: i64,
    healed: bool,
    outages: Vec<(u64, u64)>,
    tracks: Vec<Track>,
    scheduled_wake: Option<u64>,
    /// The last time handed to the fleet.
    fleet_clock: Option<UnixTime>,
    serial: u64,
    hasher: DefaultHasher,
    report: Report,
    verbose: bool,
}

impl Sim {
    /// Builds the run `cfg` describes. With `verbose`, every step is printed.
    pub fn new(cfg: SimConfig, verbose: bool) -> Self {
        let mut rng = SplitMix64::new(cfg.seed);
        let policy = Arc::new(Policy::default());
        let fleet = CertFleet::new(policy.clone()).expect("default policy is valid");
        let mut outages: Vec<(u64, u64)> = Vec::new();
        // Half the shortest lifetime between two outages, when certificates must never lapse.
        let apart = (cfg.certs.iter())
            .map(|c| c.lifetime.as_millis() as u64 / 2)
            .min()
            .filter(|_| cfg.kind == SimKind::ShortLivedOutages)
            .unwrap_or(0);
        for day in 0..cfg.heal_day {
            if rng.chance(cfg.rates.outage_per_day, 100) {
                let start = START + day * DAY + rng.up_to(DAY);
                let len = MINUTE + rng.up_to(cfg.rates.outage_max_hours * HOUR);
                if outages.last().is_none_or(|&(_, end)| start >= end + apart) {
                    outages.push((start, start + len));
                }
            }
        }
        let tracks = cfg
            .certs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let config = CertConfig::new(spec.domains.clone(), cfg.seed.wrapping_add(i as u64))
                    .expect("simulated names are valid")
                    .with_issuers(cfg.issuers);
                let lifetime = spec.lifetime.as_millis() as u64;
                let stored = initial_cache(spec, lifetime, i);
                Track {
                    lifetime,
                    id: None,
                    stored,
                    retry: None,
                    ca_orders: VecDeque::new(),
                    started_true: START,
                    clock_jumped: false,
                    clock: UnixTime::from_millis(START),
                    cache_valid_at_load: None,
                    cache_expired_at_load: None,
                    invariants: LifecycleInvariants::new(config.domains(), policy.order_timeout),
                    cancelled: Vec::new(),
                    failed_orders: 0,
                    gated: false,
                    retry_due_by: None,
                    config,
                }
            })
            .collect();
        let mut sim = Self {
            policy,
            rng,
            fleet,
            queue: BinaryHeap::new(),
            seq: 0,
            now: START,
            skew: 0,
            healed: false,
            outages,
            tracks,
            scheduled_wake: None,
            fleet_clock: None,
            serial: 0,
            hasher: DefaultHasher::new(),
            report: Report::default(),
            verbose,
            cfg,
        };
        for day in 0..sim.cfg.heal_day {
            let base = START + day * DAY;
            for cert in 0..sim.tracks.len() {
                if sim.rng.chance(sim.cfg.rates.crash_per_day, 100) {
                    let at = base + sim.rng.up_to(DAY);
                    sim.push(at, SimEvent::Crash(cert));
                }
            }
            if sim.rng.chance(sim.cfg.rates.clock_jump_per_day, 100) {
                let at = base + sim.rng.up_to(DAY);
                let jump = sim.rng.up_to(4 * DAY) as i64 - 2 * DAY as i64;
                let back = at + 10 * MINUTE + sim.rng.up_to(12 * HOUR);
                sim.push(at, SimEvent::Skew(jump));
                sim.push(back, SimEvent::Skew(0));
            }
        }
        sim.push(START + sim.cfg.heal_day * DAY, SimEvent::Heal);
        for cert in 0..sim.tracks.len() {
            sim.push(START, SimEvent::Restart(cert));
        }
        sim
    }

    /// Runs to the end; `Err` on the first invariant violation.
    pub fn run(mut self) -> Result<Report, Violation> {
        let end = START + self.cfg.days * DAY;
        while let Some(Reverse(next)) = self.queue.pop() {
            if next.at > end {
                break;
            }
            self.now = next.at;
            self.report.steps += 1;
            if let Err(message) = self.step(next.what) {
                return Err(Violation {
                    seed: self.cfg.seed,
                    kind: self.cfg.kind,
                    step: self.report.steps,
                    at: Duration::from_millis(self.now - START),
                    message,
                });
            }
        }
        if let Err(message) = self.check_converged(true) {
            return Err(Violation {
                seed: self.cfg.seed,
                kind: self.cfg.kind,
                step: self.report.steps,
                at: Duration::from_millis(self.now - START),
                message,
            });
        }
        self.report.trace_hash = self.hasher.finish();
        Ok(self.report)
    }

    fn push(&mut self, at: u64, what: SimEvent) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            what,
        }));
    }

    /// The wall clock the certificate's process reads.
    fn observed(&self) -> UnixTime {
        UnixTime::from_millis(self.now.saturating_add_signed(self.skew))
    }

    fn step(&mut self, what: SimEvent) -> Result<(), String> {
        let observed = self.observed();
        if matches!(
            what,
            SimEvent::Deliver { .. } | SimEvent::Wake | SimEvent::Restart(_)
        ) {
            // The fleet hands a backwards clock to every machine.
            if self.fleet_clock.is_some_and(|last| observed < last) {
                for cert in 0..self.tracks.len() {
                    if self.tracks[cert].id.is_some() {
                        self.advance_clock(cert, observed);
                    }
                }
            }
            self.fleet_clock = Some(observed);
        }
        match what {
            SimEvent::Deliver { cert, id, event } => {
                if self.tracks[cert].id != Some(id) {
                    // The instance it was meant for crashed; the fleet would ignore it too.
                    self.fleet.handle(observed, id, event);
                } else {
                    self.deliver(cert, id, observed, event)?;
                }
            }
            SimEvent::Wake => {
                if self.scheduled_wake == Some(self.now) {
                    self.scheduled_wake = None;
                }
                self.log(format_args!(
                    "tick (fleet wake {:?}, observed {})",
                    self.fleet.poll_timeout(),
                    observed.as_millis()
                ));
                // Only the machines whose wake is due see this time.
                for cert in 0..self.tracks.len() {
                    if let Some(id) = self.tracks[cert].id
                        && self.fleet.wake_of(id).is_some_and(|at| at <= observed)
                    {
                        self.advance_clock(cert, observed);
                    }
                }
                self.fleet.handle_timeout(observed);
            }
            SimEvent::Skew(skew) => {
                if !self.healed || skew == 0 {
                    // Order rates are measured over a steady clock: a jump starts a new window.
                    for track in &mut self.tracks {
                        track.ca_orders.clear();
                        track.clock_jumped = true;
                    }
                    self.skew = skew;
                    self.log(format_args!("clock skew now {skew} ms"));
                }
            }
            SimEvent::Crash(cert) => {
                if let Some(id) = self.tracks[cert].id.take() {
                    self.report.crashes += 1;
                    self.log(format_args!("cert{cert} crashes"));
                    self.fleet.remove(id);
                    let at = self.now + SECOND + self.rng.up_to(2 * MINUTE);
                    self.push(at, SimEvent::Restart(cert));
                }
            }
            SimEvent::Restart(cert) => {
                self.log(format_args!("cert{cert} starts"));
                let id = self.fleet.insert(observed, &self.tracks[cert].config);
                let order_timeout = self.policy.order_timeout;
                self.tracks[cert].reset_instance(id, observed, self.now, order_timeout);
                self.advance_clock(cert, observed);
            }
            SimEvent::Heal => {
                self.healed = true;
                self.skew = 0;
                self.log(format_args!("faults healed"));
            }
        }
        self.drain()?;
        self.check_all()?;
        self.schedule_wake();
        Ok(())
    }

    fn deliver(
        &mut self,
        cert: usize,
        id: CertId,
        now: UnixTime,
        event: Event,
    ) -> Result<(), String> {
        self.advance_clock(cert, now);
        let track = &mut self.tracks[cert];
        let mut must_install = None;
        match &event {
            Event::CacheLoaded { cert: cached, .. } => {
                let valid = matches!(cached, CachedCert::Found(c) if installable(&c.info, track.clock, track.config.domains(), None));
                track.cache_valid_at_load = Some(valid);
                track.cache_expired_at_load = match cached {
                    CachedCert::Found(c) if c.info.not_after <= track.clock => {
                        Some(c.info.not_after)
                    }
                    _ => None,
                };
            }
            Event::OrderSucceeded { order, .. } | Event::OrderFailed { order, .. }
                if track.cancelled.contains(order) =>
            {
                return Ok(());
            }
            // An answer to the order in flight that could be installed must be installed.
            Event::OrderSucceeded {
                order,
                cert: issued,
            } if track.invariants.answered(*order)
                && track.invariants.could_install(&issued.info, track.clock) =>
            {
                must_install = Some(issued.info.not_after);
            }
            Event::OrderFailed { order, .. } if track.invariants.answered(*order) => {
                track.failed_orders += 1;
            }
            _ => {}
        }
        self.log(format_args!("cert{cert} <- {}", describe_event(&event)));
        self.fleet.handle(now, id, event);
        let loaded_valid = self.tracks[cert].cache_valid_at_load == Some(true);
        if loaded_valid && !self.fleet.is_ready(id) {
            return Err(format!(
                "cert{cert}: a valid cached certificate did not make it ready"
            ));
        }
        if let Some(not_after) = must_install {
            self.drain()?;
            let installed = self.tracks[cert]
                .invariants
                .installed()
                .map(|i| i.not_after);
            if installed != Some(not_after) {
                return Err(format!(
                    "cert{cert}: an installable certificate was not installed"
                ));
            }
        }
        Ok(())
    }

    /// Mirrors the machine's clock: the last time it was handed.
    fn advance_clock(&mut self, cert: usize, now: UnixTime) {
        let track = &mut self.tracks[cert];
        track.invariants.clock_moved(track.clock, now);
        track.clock = now;
    }

    fn drain(&mut self) -> Result<(), String> {
        while let Some((id, action)) = self.fleet.poll_action() {
            let Some(cert) = self.tracks.iter().position(|t| t.id == Some(id)) else {
                return Err(format!(
                    "action for an unknown certificate id {id:?}: {action:?}"
                ));
            };
            self.fingerprint(cert, &action);
            self.log(format_args!("cert{cert} -> {}", describe_action(&action)));
            self.act(cert, id, action)?;
        }
        Ok(())
    }

    fn act(&mut self, cert: usize, id: CertId, action: Action) -> Result<(), String> {
        let observed = self.observed();
        let track = &mut self.tracks[cert];
        let superseded = (track.invariants.check(track.clock, &action))
            .map_err(|e| format!("cert{cert}: {e}"))?;
        // The adapter cancels an order past its timeout, so its answer never arrives.
        track.cancelled.extend(superseded);
        match action {
            Action::LoadCache { .. } => {
                let track = &mut self.tracks[cert];
                let corrupt = !self.healed && self.rng.chance(self.cfg.rates.cache_corrupt, 100);
                let loaded = match (&track.stored, corrupt) {
                    (Some(_), true) => {
                        // The adapter moves a corrupt file aside: it is gone from the cache.
                        track.stored = None;
                        CachedCert::Unreadable {
                            reason: "cached_cert_x: not PEM".into(),
                        }
                    }
                    (Some(c), false) => CachedCert::Found(c.clone()),
                    (None, _) => CachedCert::Missing,
                };
                let event = Event::CacheLoaded {
                    cert: loaded,
                    retry: track.retry.clone(),
                };
                self.push(self.now + 1, SimEvent::Deliver { cert, id, event });
            }
            Action::StartOrder {
                order,
                domains,
                issuer,
                ..
            } => {
                self.report.orders += 1;
                self.tracks[cert].retry_due_by = None;
                self.order(cert, id, order, &domains, issuer)?;
            }
            Action::InstallCert(_) => {
                self.report.installs += 1;
                self.tracks[cert].retry_due_by = None;
            }
            Action::Ready { .. } => {}
            Action::StoreCert { request, cert: c } => {
                let fail = !self.healed && self.rng.chance(self.cfg.rates.store_fail, 100);
                let result = if fail {
                    Err("cache dir: permission denied".to_owned())
                } else {
                    self.tracks[cert].stored = Some(c);
                    Ok(())
                };
                let at = self.now + 1 + self.rng.up_to(50);
                self.push(
                    at,
                    SimEvent::Deliver {
                        cert,
                        id,
                        event: Event::StoreFinished { request, result },
                    },
                );
            }
            // Written beside the cache; if this write failed, a restart could not honour the
            // backoff, so the order-rate invariant assumes it succeeds.
            Action::PersistRetryState(state) => self.tracks[cert].retry = Some(state),
            Action::FetchRenewalInfo { request, .. } => {
                let info = self.renewal_info(cert, observed);
                let at = self.now + 10 + self.rng.up_to(2 * SECOND);
                self.push(
                    at,
                    SimEvent::Deliver {
                        cert,
                        id,
                        event: Event::RenewalInfo { request, info },
                    },
                );
            }
            Action::Log(notice) => self.notice(cert, id, &notice)?,
            Action::FailStartup(failure) => self.failed_startup(cert, &failure)?,
            // The simulated CA answers every order; a completion after this is ignored.
            Action::AbandonOrder { .. } => {}
            Action::ScheduleWake(_) => return Err("the fleet forwarded a ScheduleWake".into()),
        }
        Ok(())
    }

    /// The fake CA: decides an order's fate from the fault rates.
    fn order(
        &mut self,
        cert: usize,
        id: CertId,
        order: OrderId,
        domains: &[String],
        issuer: usize,
    ) -> Result<(), String> {
        let rates = self.cfg.rates.clone();
        let faulty = !self.healed;
        let in_outage = faulty
            && self
                .outages
                .iter()
                .any(|&(s, e)| (s..e).contains(&self.now));
        let fault = |rng: &mut SplitMix64, rate: u64| faulty && rng.chance(rate, 100);
        let error = |kind, detail: &str| Event::OrderFailed {
            order,
            error: OrderError {
                kind,
                detail: detail.to_owned(),
            },
        };
        if in_outage || fault(&mut self.rng, rates.unreachable) {
            let at = self.now + 100 + self.rng.up_to(30 * SECOND);
            let event = error(FailureKind::Unreachable, "connect: connection refused");
            self.push(at, SimEvent::Deliver { cert, id, event });
            return Ok(());
        }
        self.count_ca_order(cert, issuer)?;
        let slow = fault(&mut self.rng, rates.slow);
        let latency = if slow {
            self.rng.up_to(9 * MINUTE)
        } else {
            50 + self.rng.up_to(5 * SECOND)
        };
        let issued_at = self.now + latency;
        let mut roll = if faulty { self.rng.up_to(99) } else { 100 };
        let mut next = |rate: u64| {
            let hit = roll < rate;
            roll = roll.saturating_sub(rate);
            hit
        };
        let lifetime = self.tracks[cert].lifetime;
        let event = if next(rates.server_error) {
            error(
                FailureKind::ServerError,
                "urn:ietf:params:acme:error:serverInternal: 503",
            )
        } else if next(rates.rate_limited) {
            let retry_after = self
                .rng
                .chance(1, 2)
                .then(|| Duration::from_millis(self.rng.up_to(3 * HOUR)));
            error(
                FailureKind::RateLimited { retry_after },
                "urn:ietf:params:acme:error:rateLimited",
            )
        } else if next(rates.rejected) {
            error(
                FailureKind::Rejected,
                "urn:ietf:params:acme:error:rejectedIdentifier",
            )
        } else if next(rates.wrong_names) {
            self.issue(order, issued_at, lifetime, vec!["wrong.example".into()])
        } else if next(rates.expired_issue) {
            self.issue(order, issued_at - 2 * DAY, DAY, domains.to_vec())
        } else if next(rates.short_issue) {
            self.issue(order, issued_at, HOUR, domains.to_vec())
        } else {
            self.issue(order, issued_at, lifetime, domains.to_vec())
        };
        self.push(issued_at, SimEvent::Deliver { cert, id, event });
        Ok(())
    }

    /// A certificate from the CA's (true) clock, backdated an hour as real CAs do.
    fn issue(&mut self, order: OrderId, at: u64, lifetime: u64, names: Vec<String>) -> Event {
        self.serial += 1;
        let not_before = UnixTime::from_millis(at - HOUR);
        let info = CertInfo {
            not_before,
            not_after: UnixTime::from_millis(at - HOUR + lifetime),
            names: names.into(),
        };
        let bundle = CertBundle::new(self.serial.to_be_bytes().to_vec());
        Event::OrderSucceeded {
            order,
            cert: Certificate { info, bundle },
        }
    }

    fn renewal_info(&mut self, cert: usize, now: UnixTime) -> RenewalInfo {
        if self.cfg.rates.ari == 0 {
            return RenewalInfo::Unsupported;
        }
        let Some(info) = self.tracks[cert].invariants.installed() else {
            return RenewalInfo::Failed { retry_after: None };
        };
        if !self.healed && self.rng.chance(self.cfg.rates.ari_urgent, 100) {
            return RenewalInfo::Window {
                start: now.saturating_sub(Duration::from_secs(3600)),
                end: now.saturating_add(Duration::from_secs(3600)),
                retry_after: Some(Duration::from_secs(6 * 3600)),
            };
        }
        // The CA suggests the middle third of the remaining-third window, a little early.
        let lifetime = info.lifetime();
        let end = info.not_after.saturating_sub(lifetime / 3);
        RenewalInfo::Window {
            start: end.saturating_sub(lifetime / 15),
            end,
            retry_after: None,
        }
    }

    /// Rate limits are per CA: each issuer's orders are counted on their own.
    fn count_ca_order(&mut self, cert: usize, issuer: usize) -> Result<(), String> {
        let track = &mut self.tracks[cert];
        let now = UnixTime::from_millis(self.now);
        track.ca_orders.push_back((now, issuer));
        while track
            .ca_orders
            .front()
            .is_some_and(|(t, _)| now.saturating_since(*t) >= Duration::from_secs(3600))
        {
            track.ca_orders.pop_front();
        }
        let at_this_ca = (track.ca_orders.iter())
            .filter(|(_, i)| *i == issuer)
            .count();
        if at_this_ca > MAX_CA_ORDERS_PER_HOUR {
            return Err(format!(
                "cert{cert}: {at_this_ca} orders reached issuer {} within an hour (limit \
                 {MAX_CA_ORDERS_PER_HOUR})",
                issuer + 1
            ));
        }
        Ok(())
    }

    fn notice(&mut self, cert: usize, _id: CertId, notice: &Notice) -> Result<(), String> {
        match notice.level() {
            Level::Error => {
                self.report.errors += 1;
                self.report.warnings += 1;
            }
            Level::Warn => self.report.warnings += 1,
            Level::Info | Level::Debug => {}
        }
        let track = &mut self.tracks[cert];
        match notice {
            Notice::RetryStateRestored { .. } => track.gated = true,
            Notice::OrderFailed { retry_at, .. } => {
                self.report.order_failures += 1;
                if track.invariants.installed().is_some() {
                    let bound = self
                        .policy
                        .retry_after_max
                        .max(self.policy.retry_max * 5 / 4);
                    let due_by = track.clock.saturating_add(bound + Duration::from_secs(1));
                    if *retry_at > due_by {
                        return Err(format!(
                            "cert{cert}: retry scheduled at {retry_at}, beyond the backoff bound {due_by}"
                        ));
                    }
                    track.retry_due_by = Some(due_by);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn failed_startup(&mut self, cert: usize, failure: &StartupFailure) -> Result<(), String> {
        self.report.failed_startups += 1;
        let track = &mut self.tracks[cert];
        if track.cache_valid_at_load == Some(true) {
            return Err(format!(
                "cert{cert}: FailStartup although the cache held a valid certificate"
            ));
        }
        // Measured in true time. A wall clock set back during startup is noticed at the next
        // wake at the latest, which can add up to one more startup timeout.
        let waited = Duration::from_millis(self.now - track.started_true);
        let bound = self.policy.startup_timeout * if track.clock_jumped { 2 } else { 1 };
        if waited > bound + Duration::from_secs(1) {
            return Err(format!("cert{cert}: startup failed only after {waited:?}"));
        }
        let explained = track.failed_orders > 0
            || track.gated
            || failure.blocked_until.is_some()
            || track.invariants.outstanding().is_some();
        if !explained {
            return Err(format!(
                "cert{cert}: FailStartup without a failed, gated or hung order: {failure}"
            ));
        }
        if failure.cached_expired != track.cache_expired_at_load {
            return Err(format!(
                "cert{cert}: FailStartup misreports the cached certificate: {failure}"
            ));
        }
        track.id = None;
        let at = self.now + 5 * SECOND + self.rng.up_to(2 * MINUTE);
        self.push(at, SimEvent::Restart(cert));
        Ok(())
    }

    /// Invariants checked after every step.
    fn check_all(&self) -> Result<(), String> {
        for (cert, track) in self.tracks.iter().enumerate() {
            let Some(id) = track.id else { continue };
            let wake = self.fleet.wake_of(id);
            if self.fleet.has_failed(id) {
                return Err(format!(
                    "cert{cert}: failed instance still running in the simulator"
                ));
            }
            match wake {
                Some(at) if at <= track.clock => {
                    return Err(format!(
                        "cert{cert}: wake {at} ({} ms) is not after now {} ms: a tight loop",
                        at.as_millis(),
                        track.clock.as_millis()
                    ));
                }
                None => return Err(format!("cert{cert}: a running lifecycle has no wake time")),
                Some(_) => {}
            }
            if self.fleet.is_ready(id) != track.invariants.ready() {
                return Err(format!(
                    "cert{cert}: readiness disagrees with the actions seen"
                ));
            }
            if track.invariants.ready() && self.fleet.serving(id) != track.invariants.installed() {
                return Err(format!(
                    "cert{cert}: the served certificate is not the last one installed"
                ));
            }
            if self.cfg.kind == SimKind::ShortLivedOutages
                && let Some(served) = track.invariants.installed()
                && !served.is_valid_at(track.clock)
            {
                return Err(format!(
                    "cert{cert}: the served certificate lapsed at {} (now {})",
                    served.not_after, track.clock
                ));
            }
            if let Some(due) = track.retry_due_by
                && track.clock > due
            {
                return Err(format!(
                    "cert{cert}: no retry by {due} after a failed renewal"
                ));
            }
        }
        if self.healed && self.now >= START + self.cfg.heal_day * DAY + CONVERGE_WITHIN {
            self.check_converged(false)?;
        }
        Ok(())
    }

    /// Liveness: after healing, every certificate is served, valid, with more than its renewal
    /// threshold left (less a minute for an order in flight).
    fn check_converged(&self, final_check: bool) -> Result<(), String> {
        let when = if final_check {
            "at the end"
        } else {
            "after healing"
        };
        for (cert, track) in self.tracks.iter().enumerate() {
            let Some(info) = track.invariants.installed().filter(|_| track.id.is_some()) else {
                return Err(format!("cert{cert}: no certificate served {when}"));
            };
            // Healed: the wall clock is true time again.
            let now = self.observed();
            let threshold = self.policy.renewal_threshold(info.lifetime());
            let remaining = info.not_after.saturating_since(now);
            if !info.is_valid_at(now) || remaining + Duration::from_secs(60) < threshold {
                return Err(format!(
                    "cert{cert}: {when}, served certificate has {remaining:?} left (threshold {threshold:?}, valid {})",
                    info.is_valid_at(now)
                ));
            }
        }
        Ok(())
    }

    fn schedule_wake(&mut self) {
        let Some(at) = self.fleet.poll_timeout() else {
            return;
        };
        // Adapters sleep on a monotonic timer for (wake - wall clock now).
        let true_at = self.now + at.as_millis().saturating_sub(self.observed().as_millis());
        if self.scheduled_wake.is_none_or(|s| true_at < s) {
            self.scheduled_wake = Some(true_at);
            self.push(true_at, SimEvent::Wake);
        }
    }

    fn fingerprint(&mut self, cert: usize, action: &Action) {
        let h = &mut self.hasher;
        (self.now, cert).hash(h);
        std::mem::discriminant(action).hash(h);
        match action {
            Action::StartOrder { order, attempt, .. } => (order.0, attempt).hash(h),
            Action::InstallCert(c) | Action::StoreCert { cert: c, .. } => c.info.not_after.hash(h),
            Action::PersistRetryState(r) => (r.failures, r.next_attempt_at).hash(h),
            Action::Log(n) => std::mem::discriminant(n).hash(h),
            _ => {}
        }
    }

    fn log(&self, line: fmt::Arguments<'_>) {
        if self.verbose {
            let t = Duration::from_millis(self.now - START);
            println!(
                "{:>12} {:>13} {line}",
                format!("+{}", certloop_core::Human(t)),
                self.now - START
            );
        }
    }
}

/// What the simulator, independently of the core, considers installable.
fn initial_cache(spec: &CertSpec, lifetime: u64, index: usize) -> Option<Certificate> {
    let not_after = match spec.initial {
        InitialCache::Missing | InitialCache::Corrupt => return None,
        InitialCache::Valid(pct) => START + lifetime * u64::from(pct) / 100,
        InitialCache::Expired => START - DAY,
        InitialCache::WrongNames => START + lifetime / 2,
    };
    let names: Vec<String> = match spec.initial {
        InitialCache::WrongNames => vec!["other.example".into()],
        _ => spec.domains.clone(),
    };
    let info = CertInfo {
        not_before: UnixTime::from_millis(not_after - lifetime),
        not_after: UnixTime::from_millis(not_after),
        names: names.into(),
    };
    Some(Certificate {
        info,
        bundle: CertBundle::new(vec![0xCA, index as u8]),
    })
}

/// One line describing an event, for traces.
pub fn describe_event(event: &Event) -> String {
    match event {
        Event::Tick => "Tick".into(),
        Event::RenewNow => "RenewNow".into(),
        Event::CacheLoaded { cert, retry } => {
            let cert = match cert {
                CachedCert::Missing => "missing".to_owned(),
                CachedCert::Unreadable { reason } => format!("unreadable: {reason}"),
                CachedCert::Found(c) => format!("cert until {}", c.info.not_after),
            };
            match retry {
                Some(r) => format!(
                    "CacheLoaded({cert}; {} failures, next {:?})",
                    r.failures,
                    r.next_attempt_at.map(|t| t.to_string())
                ),
                None => format!("CacheLoaded({cert})"),
            }
        }
        Event::OrderSucceeded { order, cert } => format!(
            "OrderSucceeded#{} [{}] {}..{}",
            order.0,
            cert.info.names.join(","),
            cert.info.not_before,
            cert.info.not_after
        ),
        Event::OrderFailed { order, error } => format!("OrderFailed#{} {error}", order.0),
        Event::SharedCertArrived { cert } => format!(
            "SharedCertArrived [{}] {}..{}",
            cert.info.names.join(","),
            cert.info.not_before,
            cert.info.not_after
        ),
        Event::StoreFinished { request, result } => {
            format!("StoreFinished#{} {result:?}", request.0)
        }
        Event::RenewalInfo { request, info } => match info {
            RenewalInfo::Window {
                start,
                end,
                retry_after,
            } => format!(
                "RenewalInfo#{} window {start}..{end}, ask again after {}",
                request.0,
                retry_after.map_or("-".to_owned(), |d| certloop_core::Human(d).to_string())
            ),
            other => format!("RenewalInfo#{} {other:?}", request.0),
        },
    }
}

/// One line describing an action, for traces.
pub fn describe_action(action: &Action) -> String {
    match action {
        Action::LoadCache { .. } => "LoadCache".into(),
        Action::StartOrder {
            order,
            attempt,
            replacing,
            issuer,
            ..
        } => format!(
            "StartOrder#{} attempt {attempt}{}{}",
            order.0,
            if *issuer > 0 {
                format!(" from issuer {}", issuer + 1)
            } else {
                String::new()
            },
            if replacing.is_some() {
                " (replacing)"
            } else {
                ""
            }
        ),
        Action::InstallCert(c) => format!("InstallCert until {}", c.info.not_after),
        Action::StoreCert { request, cert } => {
            format!("StoreCert#{} until {}", request.0, cert.info.not_after)
        }
        Action::PersistRetryState(r) => format!(
            "PersistRetryState({} failures, next {})",
            r.failures,
            r.next_attempt_at.map_or("-".to_owned(), |t| t.to_string())
        ),
        Action::FetchRenewalInfo { request, .. } => format!("FetchRenewalInfo#{}", request.0),
        Action::Log(n) => format!("Log({:?}: {n})", n.level()),
        Action::Ready { not_after } => format!("Ready until {not_after}"),
        Action::FailStartup(f) => format!("FailStartup: {f}"),
        Action::AbandonOrder { order } => format!("AbandonOrder#{}", order.0),
        Action::ScheduleWake(at) => format!(
            "ScheduleWake({})",
            at.map_or("none".to_owned(), |t| t.to_string())
        ),
    }
}
