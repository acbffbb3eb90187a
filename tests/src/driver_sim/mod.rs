//! The driver under simulation: the real `certloop_acme` driver, step runner, store and
//! resolver, on a deterministic runtime ([`executor`]), over a disk with faults ([`mem_fs`]),
//! against an ACME CA in the same process ([`fake_ca`]). One seed derives every rate; the run
//! prints them. A safety phase with faults, crashes and clock jumps, then a healed liveness
//! phase that must converge. Invariants are checked after every task step.

pub mod executor;
pub mod fake_ca;
pub mod mem_fs;
mod world;

use std::fmt;
use std::time::Duration;

use certloop_acme::ChallengeKind;
use certloop_core::SplitMix64;

pub use fake_ca::{CaFaults, CaStats};
pub use mem_fs::DiskFaults;
pub use world::{DriverReport, DriverSim, DriverViolation};

/// Everything one seed decides.
#[derive(Clone, Debug)]
pub struct DriverSimConfig {
    /// The seed.
    pub seed: u64,
    /// The certificates (names of each).
    pub certs: Vec<Vec<String>>,
    /// The challenge the driver answers.
    pub challenge: ChallengeKind,
    /// How long the CA's certificates are valid.
    pub validity: Duration,
    /// Per-request faults at the CA during the safety phase.
    pub ca_faults: CaFaults,
    /// Disk faults during the safety phase.
    pub disk_faults: DiskFaults,
    /// Mean time between crashes during the safety phase (`None`: no crashes).
    pub crash_every: Option<Duration>,
    /// Mean time between CA outages, and their mean length (`None`: none).
    pub outages: Option<(Duration, Duration)>,
    /// Mean time between wall-clock jumps (`None`: none).
    pub clock_jumps: Option<Duration>,
    /// Length of the phase with faults.
    pub safety: Duration,
    /// Length of the healed phase.
    pub liveness: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);

impl DriverSimConfig {
    /// Derives a configuration from `seed` (swarm testing: each seed enables a different mix).
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5eed_d21e_0000_0001);
        let mut rate = |enabled_in: u64, max: u64| {
            if rng.chance(1, enabled_in) {
                rng.up_to(max)
            } else {
                0
            }
        };
        let ca_faults = CaFaults {
            refused: rate(3, 80),
            stall: rate(4, 30),
            slow: rate(3, 100),
            server_error: rate(3, 80),
            unavailable: rate(4, 40),
            rate_limited: rate(4, 40),
            garbage: rate(4, 40),
            lost_answer: rate(3, 80),
            bad_nonce: rate(3, 100),
            slow_issuance: rate(3, 300),
        };
        let disk_faults = DiskFaults {
            write_fails: rate(3, 150),
            write_tears: rate(3, 150),
            read_fails: rate(3, 150),
            rename_fails: rate(4, 100),
        };
        let mut rng = SplitMix64::new(seed ^ 0x5eed_d21e_0000_0002);
        let cert_count = 1 + rng.up_to(2) as usize;
        let certs = (0..cert_count)
            .map(|i| {
                let names = 1 + rng.up_to(1);
                (0..names).map(|n| format!("n{n}.c{i}.sim.test")).collect()
            })
            .collect();
        let challenge = if rng.chance(1, 2) {
            ChallengeKind::TlsAlpn01
        } else {
            ChallengeKind::Http01
        };
        let validity = [3, 6, 12][rng.up_to(2) as usize] * HOUR;
        let minutes = |m: u64| Duration::from_secs(60 * m);
        let crash_every = rng.chance(2, 3).then(|| minutes(20 + rng.up_to(240)));
        let outages = rng
            .chance(1, 2)
            .then(|| (minutes(60 + rng.up_to(300)), minutes(1 + rng.up_to(120))));
        let clock_jumps = rng.chance(1, 3).then(|| minutes(60 + rng.up_to(300)));
        Self {
            seed,
            certs,
            challenge,
            validity,
            ca_faults,
            disk_faults,
            crash_every,
            outages,
            clock_jumps,
            safety: 12 * HOUR,
            liveness: 12 * HOUR,
        }
    }
}

impl fmt::Display for DriverSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.ca_faults;
        let d = &self.disk_faults;
        let mins =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{}m", d.as_secs() / 60));
        writeln!(
            f,
            "SEED={} certs={:?} challenge={} validity={}h safety={}h liveness={}h",
            self.seed,
            self.certs,
            self.challenge.name(),
            self.validity.as_secs() / 3600,
            self.safety.as_secs() / 3600,
            self.liveness.as_secs() / 3600,
        )?;
        writeln!(
            f,
            "  CA faults per mille: refused={} stall={} slow={} 500={} 503={} 429={} garbage={} lost_answer={} bad_nonce={} slow_issuance={}",
            c.refused,
            c.stall,
            c.slow,
            c.server_error,
            c.unavailable,
            c.rate_limited,
            c.garbage,
            c.lost_answer,
            c.bad_nonce,
            c.slow_issuance
        )?;
        writeln!(
            f,
            "  disk faults per mille: write_fails={} write_tears={} read_fails={} rename_fails={}",
            d.write_fails, d.write_tears, d.read_fails, d.rename_fails
        )?;
        write!(
            f,
            "  crash every {}; CA outage every {}; clock jump every {}",
            mins(self.crash_every),
            self.outages.map_or("never".into(), |(every, len)| format!(
                "{}m for ~{}m",
                every.as_secs() / 60,
                len.as_secs() / 60
            )),
            mins(self.clock_jumps)
        )
    }
}
