//! The real driver, step runner, store and resolver under simulation: seeds with CA faults,
//! disk faults, crashes and clock jumps, then a healed phase that must converge.
//!
//! `SIM_SEED=n` runs one seed verbosely; `SIM_FIRST`/`SIM_COUNT` choose the range (default:
//! seeds 0..2000). A failure prints the command that reproduces it.

use certloop_tests::driver_sim::{DriverReport, DriverSim, DriverSimConfig};
use certloop_tests::{default_threads, env_u64, over_seeds};

#[test]
fn two_thousand_seeds_of_the_driver_hold_every_invariant() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED is a whole number");
        let cfg = DriverSimConfig::from_seed(seed);
        println!("{cfg}");
        match DriverSim::new(cfg, true).run() {
            Ok(report) => println!("{report:?}"),
            Err(v) => panic!("{v}"),
        }
        return;
    }
    let first = env_u64("SIM_FIRST", 0);
    let count = env_u64("SIM_COUNT", 2000);
    let started = std::time::Instant::now();
    let run = |seed| DriverSim::new(DriverSimConfig::from_seed(seed), false).run();
    let reports: Vec<DriverReport> =
        match over_seeds(first, count, default_threads(), run, |v| v.seed) {
            Ok(reports) => reports,
            Err(v) => panic!("{}\n{v}", DriverSimConfig::from_seed(v.seed)),
        };
    let sum = |f: fn(&DriverReport) -> u64| reports.iter().map(f).sum::<u64>();
    println!(
        "driver seeds {first}..{}: {} launches, {} crashes, {} failed startups, {} installs, {} clock jumps, \
         {} CA requests ({} faulted), {} orders, {} issued, {} disk write faults, max {} orders/hour, in {:.1?}",
        first + count,
        sum(|r| r.launches),
        sum(|r| r.crashes),
        sum(|r| r.failed_startups),
        sum(|r| r.installs),
        sum(|r| r.clock_jumps),
        sum(|r| r.ca.requests),
        sum(|r| r.ca.faults),
        sum(|r| r.ca.orders),
        sum(|r| r.ca.issued),
        sum(|r| r.disk_write_faults),
        reports
            .iter()
            .map(|r| r.max_orders_per_hour)
            .max()
            .unwrap_or(0),
        started.elapsed()
    );
    assert_eq!(reports.len() as u64, count);
    // The faults were real.
    assert!(sum(|r| r.crashes) > 0 && sum(|r| r.failed_startups) > 0);
    assert!(sum(|r| r.ca.faults) > 0 && sum(|r| r.disk_write_faults) > 0);
    assert!(sum(|r| r.installs) > count);
}

#[test]
fn a_driver_seed_reproduces_its_run_exactly() {
    for seed in [0, 1, 7, 42, 1 << 40] {
        let a = DriverSim::new(DriverSimConfig::from_seed(seed), false).run();
        let b = DriverSim::new(DriverSimConfig::from_seed(seed), false).run();
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "seed {seed} is not deterministic"),
            (a, b) => panic!("seed {seed}: {:?} vs {:?}", a.err(), b.err()),
        }
    }
}
