//! The lifecycle simulator over many seeds, each a simulated year with faults then healing.
//!
//! `SIM_SEED=n` runs one seed (printing its configuration); `SIM_FIRST`/`SIM_COUNT` choose the
//! range (default: seeds 0..10000). A failure prints the command that reproduces it.

use certloop_tests::{Sim, SimConfig, SimKind, YEAR_DAYS, default_threads, env_u64, run_seeds};

#[test]
fn ten_thousand_simulated_years_hold_every_invariant() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED is a whole number");
        let cfg = SimConfig::from_seed(seed, YEAR_DAYS);
        println!("{cfg}");
        if let Err(v) = Sim::new(cfg, false).run() {
            panic!("{v}");
        }
        return;
    }
    let first = env_u64("SIM_FIRST", 0);
    let count = env_u64("SIM_COUNT", 10_000);
    let started = std::time::Instant::now();
    match run_seeds(SimKind::Swarm, first, count, YEAR_DAYS, default_threads()) {
        Ok(summary) => {
            println!(
                "seeds {first}..{}: {summary} in {:.1?}",
                first + count,
                started.elapsed()
            );
            assert_eq!(summary.seeds, count);
            // The faults were real: the run saw failures, failed startups and crashes.
            assert!(summary.total.order_failures > 0 && summary.total.failed_startups > 0);
            assert!(summary.total.crashes > 0 && summary.total.installs > summary.seeds);
        }
        Err(v) => {
            println!("{}", SimConfig::from_seed(v.seed, YEAR_DAYS));
            panic!(
                "{v}\n(or: SIM_SEED={} cargo test -p certloop-tests --test simulation)",
                v.seed
            );
        }
    }
}

/// Six-day certificates (160 hours) through CA outages of up to two days each, among other
/// faults: once a certificate is served it never lapses (`SimKind::ShortLivedOutages`).
#[test]
fn six_day_certificates_survive_two_day_outages_without_lapsing() {
    let (first, count) = (env_u64("SIM_FIRST", 0), env_u64("SIM_COUNT", 10_000) / 5);
    match run_seeds(
        SimKind::ShortLivedOutages,
        first,
        count,
        120,
        default_threads(),
    ) {
        Ok(summary) => {
            println!("short-lived seeds {first}..{}: {summary}", first + count);
            assert!(summary.total.order_failures > 0 && summary.total.installs > 10 * count);
        }
        Err(v) => {
            println!("{}", SimKind::ShortLivedOutages.config(v.seed, 120));
            panic!("{v}");
        }
    }
}

#[test]
fn a_seed_reproduces_its_run_exactly() {
    for seed in (0..200).chain([u64::MAX, 1 << 40]) {
        let a = Sim::new(SimConfig::from_seed(seed, YEAR_DAYS), false).run();
        let b = Sim::new(SimConfig::from_seed(seed, YEAR_DAYS), false).run();
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "seed {seed} is not deterministic"),
            (a, b) => panic!("seed {seed}: {:?} vs {:?}", a.err(), b.err()),
        }
    }
    // Different seeds give different runs.
    let x = Sim::new(SimConfig::from_seed(1, YEAR_DAYS), false)
        .run()
        .unwrap();
    let y = Sim::new(SimConfig::from_seed(2, YEAR_DAYS), false)
        .run()
        .unwrap();
    assert_ne!(x.trace_hash, y.trace_hash);
}

#[test]
fn the_header_names_the_seed_and_every_rate() {
    let header = SimConfig::from_seed(42, YEAR_DAYS).to_string();
    for key in [
        "SEED=42",
        "outage=",
        "5xx=",
        "ratelimit=",
        "store_fail=",
        "clock_jump=",
        "crash=",
    ] {
        assert!(header.contains(key), "{header}");
    }
}
