//! `certloop-sim`: run the lifecycle simulator from the command line.
//!
//! ```text
//! certloop-sim --seed 42 --verbose       # one seed, every step printed
//! certloop-sim --first 0 --count 100000  # a soak over many seeds
//! certloop-sim --random --count 1000     # seeds from the clock (printed), for nightly runs
//! certloop-sim --short-lived --count 1000 # six-day certificates through two-day CA outages
//! ```

use std::process::ExitCode;

use certloop_tests::{Sim, SimKind, YEAR_DAYS, default_threads, run_seeds};

fn main() -> ExitCode {
    let mut seed = None;
    let mut kind = SimKind::Swarm;
    let (mut first, mut count, mut days, mut verbose, mut random) =
        (0, 1000, YEAR_DAYS, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> u64 {
            let v = args.next().unwrap_or_default();
            v.parse().unwrap_or_else(|_| {
                eprintln!("certloop-sim: {what} needs a whole number, got {v:?}");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--seed" => seed = Some(number("--seed")),
            "--first" => first = number("--first"),
            "--count" => count = number("--count"),
            "--days" => days = number("--days"),
            "--verbose" => verbose = true,
            "--random" => random = true,
            "--short-lived" => kind = SimKind::ShortLivedOutages,
            other => {
                eprintln!(
                    "certloop-sim: unknown argument {other:?} (see the source header for usage)"
                );
                return ExitCode::from(2);
            }
        }
    }
    if random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        first = nanos % 1_000_000_000_000;
        println!("random seeds start at {first}");
    }
    if let Some(seed) = seed {
        let cfg = kind.config(seed, days);
        println!("{cfg}");
        return match Sim::new(cfg, verbose).run() {
            Ok(report) => {
                println!("ok: {report:?}");
                ExitCode::SUCCESS
            }
            Err(violation) => {
                println!("FAILED: {violation}");
                ExitCode::FAILURE
            }
        };
    }
    let started = std::time::Instant::now();
    match run_seeds(kind, first, count, days, default_threads()) {
        Ok(summary) => {
            println!("ok: {summary} in {:.1?}", started.elapsed());
            ExitCode::SUCCESS
        }
        Err(violation) => {
            println!("{}", kind.config(violation.seed, days));
            println!("FAILED: {violation}");
            ExitCode::FAILURE
        }
    }
}
