//! One seed's world: processes launched, crashed and restarted over one simulated disk and
//! one CA, with the invariants checked after every task step.

use std::collections::VecDeque;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certloop_acme::adapter::Runtime;
use certloop_acme::testing::{ChallengeOwner, certified_key_from_bundle};
use certloop_acme::testing::{Observer, Seams, launch_with};
use certloop_acme::testing::{cert_file_name, decode_cert_file};
use certloop_acme::{AcmeConfig, AcmeHandle, Directory};
use certloop_core::{Action, OrderId, Policy, SplitMix64, UnixTime};

use super::DriverSimConfig;
use super::executor::{SimExecutor, SimRuntime};
use super::fake_ca::{CaFaults, CaStats, DIRECTORY_URL, FakeCa};
use super::mem_fs::{DiskFaults, MemFs};
use crate::invariants::LifecycleInvariants;

/// 2026-01-01T00:00:00Z: where every simulated wall clock starts.
const START: u64 = 1_767_225_600_000;
const CACHE_DIR: &str = "/sim/cache";
const MINUTE_MS: u64 = 60_000;

/// A broken invariant, with the seed and the moment.
#[derive(Debug)]
pub struct DriverViolation {
    /// The seed.
    pub seed: u64,
    /// Simulated minutes since the start.
    pub minute: u64,
    /// What broke.
    pub what: String,
}

impl fmt::Display for DriverViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} at minute {}: {}\nreproduce: SIM_SEED={} cargo test -p certloop-tests --test driver_simulation",
            self.seed, self.minute, self.what, self.seed
        )
    }
}

/// What one seed did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverReport {
    /// Task steps run.
    pub steps: u64,
    /// Processes launched.
    pub launches: u64,
    /// Crashes (the disk kept only what was durable).
    pub crashes: u64,
    /// Startups refused (no valid certificate could be had).
    pub failed_startups: u64,
    /// Certificates installed.
    pub installs: u64,
    /// Wall-clock jumps.
    pub clock_jumps: u64,
    /// Disk write faults injected (failed or torn writes, failed renames).
    pub disk_write_faults: u64,
    /// What the CA saw.
    pub ca: CaStats,
    /// Most orders for one certificate within an hour.
    pub max_orders_per_hour: usize,
    /// A hash of the run's decisions, for the determinism check.
    pub trace: u64,
}

/// What the observer saw of the running process.
#[derive(Default)]
struct Seen {
    /// The leaf (DER) and end of validity of each certificate the core installed.
    installed: Vec<Option<(Vec<u8>, UnixTime)>>,
    /// The running order task of each certificate.
    running: Vec<Option<ChallengeOwner>>,
    violations: Vec<String>,
    installs: u64,
    trace: DefaultHasher,
    /// The core's safety invariants, per certificate, over the actions the driver carries out.
    invariants: Vec<LifecycleInvariants>,
    /// Each certificate's orders whose task has not ended yet, oldest first (tasks run one at
    /// a time, in the order their `StartOrder`s came).
    orders: Vec<VecDeque<OrderId>>,
    /// The wall clock at the last action.
    clock: UnixTime,
}

struct SimObserver {
    seen: Mutex<Seen>,
    exec: Arc<SimExecutor>,
    verbose: bool,
}

impl SimObserver {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Observer for SimObserver {
    fn action(&self, cert: usize, action: &Action) {
        let now = self.exec.wall_clock();
        let mut seen = self.seen();
        let before = std::mem::replace(&mut seen.clock, now);
        for invariants in &mut seen.invariants {
            invariants.clock_moved(before, now);
        }
        if let Err(broken) = seen.invariants[cert].check(now, action) {
            seen.violations
                .push(format!("certificate {cert}: {broken}"));
        }
        if let Action::StartOrder { order, .. } = action {
            seen.orders[cert].push_back(*order);
        }
        let kind = match action {
            Action::LoadCache { .. } => "load",
            Action::StartOrder { .. } => "order",
            Action::InstallCert(_) => "install",
            Action::StoreCert { .. } => "store",
            Action::PersistRetryState(_) => "retry-state",
            Action::FetchRenewalInfo { .. } => "ari",
            Action::Log(_) => "log",
            Action::Ready { .. } => "ready",
            Action::FailStartup(_) => "fail",
            Action::AbandonOrder { .. } => "abandon",
            Action::ScheduleWake(_) => "wake",
        };
        (cert, kind, now.as_millis() / 1000).hash(&mut seen.trace);
        if self.verbose {
            let minute = self.exec.elapsed_ms() / MINUTE_MS;
            match action {
                Action::Log(notice) => println!("[minute {minute:>4}]   cert {cert}: {notice}"),
                Action::StartOrder { attempt, .. } => {
                    println!("[minute {minute:>4}]   cert {cert}: order (attempt {attempt})")
                }
                _ => {}
            }
        }
        if let Action::InstallCert(c) = action {
            let leaf = decode_cert_file(c.bundle.bytes())
                .ok()
                .and_then(|f| f.chain.into_iter().next())
                .map(|l| l.to_vec())
                .unwrap_or_default();
            if seen.installed.len() <= cert {
                seen.installed.resize(cert + 1, None);
            }
            seen.installed[cert] = Some((leaf, c.info.not_after));
            seen.installs += 1;
        }
    }

    fn order_task(&self, cert: usize, owner: ChallengeOwner, running: bool) {
        let mut seen = self.seen();
        if seen.running.len() <= cert {
            seen.running.resize(cert + 1, None);
        }
        if !running && let Some(order) = seen.orders[cert].pop_front() {
            seen.invariants[cert].answered(order);
        }
        match (running, seen.running[cert]) {
            (true, Some(other)) => seen.violations.push(format!(
                "two order tasks for certificate {cert} at once ({other:?} and {owner:?})"
            )),
            (true, None) => seen.running[cert] = Some(owner),
            (false, Some(current)) if current == owner => seen.running[cert] = None,
            (false, _) => {}
        }
    }
}

/// One process: launched, maybe ready, until it exits or crashes.
struct Process {
    observer: Arc<SimObserver>,
    slot: Arc<Mutex<ProcessSlot>>,
    launched_ms: u64,
    /// Every certificate had a valid copy on disk at launch (and nothing may stop it being
    /// read): the failure table says this start must succeed.
    must_start: bool,
    /// The ready verdict was checked.
    ready_checked: std::cell::Cell<bool>,
}

#[derive(Default)]
struct ProcessSlot {
    handle: Option<AcmeHandle>,
    outcome: Option<Result<(), String>>,
}

/// The world of one seed.
pub struct DriverSim {
    cfg: DriverSimConfig,
    exec: Arc<SimExecutor>,
    ca: FakeCa,
    fs: MemFs,
    rng: SplitMix64,
    process: Option<Process>,
    relaunch_at: Option<u64>,
    report: DriverReport,
    trace: u64,
    failed_in_a_row: u32,
    verbose: bool,
}

impl DriverSim {
    /// The world for `cfg`; `verbose` prints each process's life.
    pub fn new(cfg: DriverSimConfig, verbose: bool) -> Self {
        let exec = SimExecutor::new(UnixTime::from_millis(START), cfg.seed ^ 0xe8ec);
        let ca = FakeCa::new(exec.runtime(), cfg.validity, cfg.ca_faults, cfg.seed ^ 0xca);
        let fs = MemFs::new(CACHE_DIR, cfg.disk_faults, cfg.seed ^ 0xd15c);
        Self {
            rng: SplitMix64::new(cfg.seed ^ 0x3e1d),
            cfg,
            exec,
            ca,
            fs,
            process: None,
            relaunch_at: Some(0),
            report: DriverReport::default(),
            trace: 0,
            failed_in_a_row: 0,
            verbose,
        }
    }

    fn violation(&self, what: String) -> DriverViolation {
        DriverViolation {
            seed: self.cfg.seed,
            minute: self.exec.elapsed_ms() / MINUTE_MS,
            what,
        }
    }

    fn say(&self, what: &str) {
        if self.verbose {
            println!("[minute {:>4}] {what}", self.exec.elapsed_ms() / MINUTE_MS);
        }
    }

    fn config(&self) -> AcmeConfig {
        let mut config = AcmeConfig::new(self.cfg.certs[0].clone(), CACHE_DIR)
            .directory(Directory::Url(DIRECTORY_URL.into()))
            .challenge(self.cfg.challenge)
            .policy(Policy::default());
        for names in &self.cfg.certs[1..] {
            config = config.certificate(names.clone());
        }
        config
    }

    /// Whether every certificate has a usable copy on disk that is valid at `now` for longer
    /// than the startup takes.
    fn disk_holds_valid_certs(&self, now: UnixTime) -> bool {
        let files = self.fs.files();
        self.cfg.certs.iter().all(|names| {
            files
                .get(&cert_file_name(names, DIRECTORY_URL))
                .and_then(|bytes| {
                    certified_key_from_bundle(bytes).ok()?;
                    let info = decode_cert_file(bytes).ok()?.info;
                    let margin = Policy::default().startup_timeout;
                    Some(info.not_before <= now && now.saturating_add(margin) < info.not_after)
                })
                .unwrap_or(false)
        })
    }

    fn launch(&mut self) {
        self.report.launches += 1;
        let now = self.exec.wall_clock();
        let observer = Arc::new(SimObserver {
            seen: Mutex::new(Seen {
                installed: vec![None; self.cfg.certs.len()],
                running: vec![None; self.cfg.certs.len()],
                invariants: (self.cfg.certs.iter())
                    .map(|names| LifecycleInvariants::new(names, Policy::default().order_timeout))
                    .collect(),
                orders: vec![VecDeque::new(); self.cfg.certs.len()],
                clock: now,
                ..Seen::default()
            }),
            exec: self.exec.clone(),
            verbose: self.verbose,
        });
        let slot = Arc::new(Mutex::new(ProcessSlot::default()));
        let reads_may_fail = self.in_safety() && self.cfg.disk_faults.read_fails > 0;
        let valid_on_disk = self.disk_holds_valid_certs(now);
        self.process = Some(Process {
            observer: observer.clone(),
            slot: slot.clone(),
            launched_ms: self.exec.elapsed_ms(),
            must_start: valid_on_disk && !reads_may_fail,
            ready_checked: std::cell::Cell::new(false),
        });
        self.say(&format!("launch (valid cache on disk: {valid_on_disk})"));
        let rt: SimRuntime = self.exec.runtime();
        let seams = Seams {
            transport: Some(Arc::new(self.ca.clone())),
            fs: Arc::new(self.fs.clone()),
            observer: Some(observer),
        };
        let config = self.config();
        let published = self.ca.published();
        self.exec.runtime().spawn(Box::pin(async move {
            let outcome = match launch_with(rt, config, seams).await {
                Ok(handle) => {
                    published.set(handle.resolver(), handle.http01_tokens());
                    locked(&slot).handle = Some(handle.clone());
                    handle.ready().await
                }
                Err(e) => Err(e),
            };
            locked(&slot).outcome = Some(outcome.map_err(|e| e.to_string()));
        }));
    }

    /// Ends the process: every task dropped, the disk keeping what was durable if it crashed.
    fn end_process(&mut self, crashed: bool, restart_after_ms: u64) {
        if let Some(process) = self.process.take() {
            let seen = process.observer.seen();
            self.report.installs += seen.installs;
            self.trace ^= seen.trace.finish().rotate_left(self.report.launches as u32);
            drop(seen);
            let handle = locked(&process.slot).handle.take();
            drop(handle);
        }
        self.ca.published().clear();
        self.exec.kill_all();
        if crashed {
            self.fs.crash();
            self.report.crashes += 1;
        }
        self.relaunch_at = Some(self.exec.elapsed_ms() + restart_after_ms);
    }

    fn in_safety(&self) -> bool {
        self.exec.elapsed_ms() < ms(self.cfg.safety)
    }

    /// Checks every invariant that must hold between any two steps.
    fn check(&mut self) -> Result<(), DriverViolation> {
        let Some(process) = &self.process else {
            return Ok(());
        };
        let now = self.exec.wall_clock();
        let (handle, outcome) = {
            let slot = locked(&process.slot);
            (slot.handle.clone(), slot.outcome.clone())
        };
        let seen = process.observer.seen();
        if let Some(what) = seen.violations.first() {
            return Err(self.violation(what.clone()));
        }
        if let Some(handle) = &handle {
            let running: Vec<ChallengeOwner> = seen.running.iter().flatten().copied().collect();
            let resolver = handle.resolver();
            let published = resolver
                .challenge_owners()
                .into_iter()
                .chain(handle.http01_tokens().owners());
            for owner in published {
                if !running.contains(&owner) {
                    return Err(self.violation(format!(
                        "a challenge answer of {owner:?} outlived its order task"
                    )));
                }
            }
            // What is served is exactly what the core installed, with a matching key.
            for (i, names) in self.cfg.certs.iter().enumerate() {
                let Some((leaf, _)) = &seen.installed[i] else {
                    continue;
                };
                for name in names {
                    let served = resolver.current(Some(name));
                    let Some(served) = served else {
                        return Err(
                            self.violation(format!("{name}: installed, but nothing served"))
                        );
                    };
                    if served.keys_match().is_err() {
                        return Err(
                            self.violation(format!("{name}: the served key does not match"))
                        );
                    }
                    if served.cert.first().map(|c| c.as_ref()) != Some(leaf.as_slice()) {
                        return Err(self.violation(format!(
                            "{name}: the resolver serves another certificate than the core installed"
                        )));
                    }
                }
            }
        }
        let launched_ms = process.launched_ms;
        let must_start = process.must_start;
        match &outcome {
            Some(Ok(())) => {
                self.failed_in_a_row = 0;
                if seen.installed.iter().any(Option::is_none) {
                    return Err(self.violation("ready without a certificate installed".into()));
                }
                let expired =
                    (seen.installed.iter().flatten()).any(|(_, not_after)| *not_after <= now);
                if !process.ready_checked.replace(true) && expired {
                    return Err(self.violation("ready with an expired certificate".into()));
                }
            }
            Some(Err(error)) => {
                if must_start && self.fs.read_faults() == 0 {
                    return Err(self.violation(format!(
                        "refused to start although every certificate on disk was valid: {error}"
                    )));
                }
                self.report.failed_startups += 1;
                drop(seen);
                self.say(&format!("startup refused: {error}"));
                // Restarted like a service manager would: sooner at first, then less often.
                self.failed_in_a_row += 1;
                let backoff = 10_000u64 << self.failed_in_a_row.min(6);
                let delay = backoff + self.rng.up_to(backoff);
                self.end_process(false, delay);
                return Ok(());
            }
            None => {
                let bound = ms(Policy::default().startup_timeout) + 2 * MINUTE_MS;
                if self.exec.elapsed_ms() > launched_ms + bound {
                    return Err(self.violation(format!(
                        "no startup verdict {} s after launch",
                        bound / 1000
                    )));
                }
            }
        }
        // Healed and converged: once serving, every certificate valid, with a good part of its
        // life left.
        let healed_for = self.exec.elapsed_ms().saturating_sub(ms(self.cfg.safety));
        // The bound: the longest backoff a first start may have persisted (`retry_max`), and an
        // hour to order.
        let converged = ms(Policy::default().retry_max) + 3_600_000;
        if healed_for > converged && outcome == Some(Ok(())) {
            for (i, installed) in seen.installed.iter().enumerate() {
                let left = installed.as_ref().map_or(0, |(_, not_after)| {
                    not_after.saturating_since(now).as_millis()
                });
                if left < self.cfg.validity.as_millis() / 4 {
                    return Err(self.violation(format!(
                        "healed for {} min, certificate {i} has only {} min left",
                        healed_for / MINUTE_MS,
                        left / 60_000
                    )));
                }
            }
        }
        Ok(())
    }

    /// Runs the seed to the end.
    pub fn run(mut self) -> Result<DriverReport, DriverViolation> {
        let end = ms(self.cfg.safety) + ms(self.cfg.liveness);
        let mut next_crash = self.next_in(self.cfg.crash_every);
        let mut next_outage = self.cfg.outages.map(|(every, _)| self.pick(every));
        let mut outage_ends: Option<u64> = None;
        let mut next_jump = self.next_in(self.cfg.clock_jumps);
        let mut healed = false;
        loop {
            while self.exec.step() {
                self.report.steps += 1;
                if self.fs.is_dead() {
                    self.say("crash (armed, mid-write)");
                    let delay = self.rng.up_to(30_000);
                    self.end_process(true, delay);
                    continue;
                }
                self.check()?;
            }
            let now = self.exec.elapsed_ms();
            if now >= end {
                break;
            }
            if !healed && !self.in_safety() {
                healed = true;
                self.ca.set_faults(CaFaults::default());
                self.ca.set_down(false);
                (next_crash, next_outage, outage_ends, next_jump) = (None, None, None, None);
                self.fs.set_faults(DiskFaults::default());
                self.fs.disarm();
                self.say("healed");
            }
            if let Some(at) = self.relaunch_at
                && now >= at
            {
                self.relaunch_at = None;
                self.launch();
                continue;
            }
            if next_crash.is_some_and(|at| now >= at) {
                next_crash = self.next_in(self.cfg.crash_every).map(|d| d + now);
                if self.process.is_some() {
                    if self.rng.chance(1, 2) {
                        self.say("crash armed");
                        self.fs.arm_crash(self.rng.up_to(12));
                    } else {
                        self.say("crash");
                        let delay = self.rng.up_to(30_000);
                        self.end_process(true, delay);
                    }
                }
                continue;
            }
            if next_outage.is_some_and(|at| now >= at) {
                let (every, length) = self.cfg.outages.expect("scheduled");
                next_outage = Some(now + self.pick(every));
                outage_ends = Some(now + self.pick(length));
                self.ca.set_down(true);
                self.say("CA outage begins");
                continue;
            }
            if outage_ends.is_some_and(|at| now >= at) {
                outage_ends = None;
                self.ca.set_down(false);
                self.say("CA outage ends");
                continue;
            }
            if next_jump.is_some_and(|at| now >= at) {
                next_jump = self.next_in(self.cfg.clock_jumps).map(|d| d + now);
                // Forward up to 3 hours (a suspend), or back up to 10 minutes (an NTP step).
                let delta = if self.rng.chance(2, 3) {
                    i64::try_from(self.rng.up_to(3 * 3_600_000)).unwrap_or(0)
                } else {
                    -i64::try_from(self.rng.up_to(600_000)).unwrap_or(0)
                };
                self.exec.jump_wall_clock(delta);
                self.report.clock_jumps += 1;
                self.say(&format!("wall clock jumps {} s", delta / 1000));
                continue;
            }
            let heal_at = (!healed).then(|| ms(self.cfg.safety));
            let wake = [
                self.exec.next_timer_ms(),
                Some(end),
                heal_at,
                self.relaunch_at,
                next_crash,
                next_outage,
                outage_ends,
                next_jump,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
            if wake <= now {
                // Everything due now was handled above: the world would spin in place.
                return Err(self.violation(format!("nothing moves time past {now} ms")));
            }
            self.exec.advance_to(wake);
        }
        if let Some(process) = &self.process {
            let outcome = locked(&process.slot).outcome.clone();
            if outcome != Some(Ok(())) {
                return Err(self.violation(format!(
                    "healed for {} h and still not serving: {outcome:?}",
                    self.cfg.liveness.as_secs() / 3600
                )));
            }
        } else {
            return Err(self.violation("healed, and no process is running".into()));
        }
        self.end_process(false, 0);
        self.report.ca = self.ca.stats();
        self.report.max_orders_per_hour = self.ca.max_orders_per_hour();
        self.report.disk_write_faults = self.fs.write_faults();
        let mut hasher = DefaultHasher::new();
        (
            self.trace,
            self.report.steps,
            self.report.launches,
            self.report.ca.orders,
        )
            .hash(&mut hasher);
        self.report.trace = hasher.finish();
        Ok(self.report)
    }

    /// A random delay around `mean` (between half and one and a half of it), in ms.
    fn pick(&mut self, mean: Duration) -> u64 {
        let mean = ms(mean);
        mean / 2 + self.rng.up_to(mean)
    }

    fn next_in(&mut self, mean: Option<Duration>) -> Option<u64> {
        mean.map(|m| self.pick(m))
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
