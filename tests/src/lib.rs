//! certloop's test kit, by part:
//! - simulators: [`sim`] (the core's fleet over simulated years) and [`driver_sim`] (the real
//!   driver, store and resolver over a simulated runtime, disk and CA), with [`invariants`]
//!   shared with the fuzz bodies ([`fuzz_bodies`], run by ordinary tests over the checked-in
//!   corpus) and scripted traces ([`script`]);
//! - the Pebble harness: [`pebble`] (Pebble and its challenge DNS), [`fault_proxy`],
//!   [`knot`] (DNS-01's authoritative server), [`redis_server`] (the fleet's Redis),
//!   [`ari_directory`], [`upstream`] and [`rustls_acme_fixture`];
//! - the conformance suite ([`conformance`]) and the two runtimes behind it ([`adapters`]).

#![forbid(unsafe_code)]

pub mod adapters;
pub mod ari_directory;
pub mod conformance;
pub mod driver_sim;
pub mod fault_proxy;
pub mod fuzz_bodies;
pub mod invariants;
pub mod knot;
pub mod pebble;
pub mod redis_server;
pub mod rustls_acme_fixture;
pub mod script;
pub mod sim;
pub mod upstream;

use std::sync::atomic::Ordering;
use std::time::Duration;

pub use sim::{Report, Sim, SimConfig, SimKind, Violation};

/// Binds a free loopback port and runs `serve` on it in a background thread with its own
/// tokio runtime, for the rest of the test process. Returns the port.
pub fn serve_in_background<F>(
    serve: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
) -> u16
where
    F: Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            serve(listener).await;
        });
    });
    port
}

/// A TLS client configuration (the one crypto provider) that trusts only the certificates in
/// `root_pem` and offers `alpn`.
pub fn client_config(
    root_pem: &str,
    alpn: &[u8],
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e: rustls::pki_types::pem::Error| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(certloop_acme::adapter::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// Totals over many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Sum of the per-seed reports (trace hashes are xor-ed).
    pub total: Report,
}

/// Runs seeds `first..first + count` of the family `kind`, each for `days`, on `threads`
/// threads. Stops at the first violation (the lowest failing seed among those run).
pub fn run_seeds(
    kind: SimKind,
    first: u64,
    count: u64,
    days: u64,
    threads: usize,
) -> Result<Summary, Violation> {
    let reports = over_seeds(
        first,
        count,
        threads,
        |seed| Sim::new(kind.config(seed, days), false).run(),
        |v| v.seed,
    )?;
    let mut summary = Summary::default();
    reports.iter().for_each(|r| summary.add(r));
    Ok(summary)
}

/// Runs `run` for seeds `first..first + count` on `threads` threads, each taking every
/// `threads`-th seed. Once a seed fails, no thread starts another; the error is the lowest
/// failing seed's (`seed_of` says which seed an error is for) among those run.
pub fn over_seeds<R: Send, V: Send>(
    first: u64,
    count: u64,
    threads: usize,
    run: impl Fn(u64) -> Result<R, V> + Sync,
    seed_of: fn(&V) -> u64,
) -> Result<Vec<R>, V> {
    let threads = threads.max(1) as u64;
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<(Vec<R>, Option<V>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (run, failed) = (&run, &failed);
                scope.spawn(move || {
                    let mut reports = Vec::new();
                    let mut seed = first + t;
                    while seed < first + count && !failed.load(Ordering::Relaxed) {
                        match run(seed) {
                            Ok(report) => reports.push(report),
                            Err(v) => {
                                failed.store(true, Ordering::Relaxed);
                                return (reports, Some(v));
                            }
                        }
                        seed += threads;
                    }
                    (reports, None)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread panicked"))
            .collect()
    });
    let mut all = Vec::new();
    let mut first_violation: Option<V> = None;
    for (reports, violation) in results {
        all.extend(reports);
        if let Some(v) = violation
            && first_violation
                .as_ref()
                .is_none_or(|f| seed_of(&v) < seed_of(f))
        {
            first_violation = Some(v);
        }
    }
    first_violation.map_or(Ok(all), Err)
}

impl Summary {
    fn add(&mut self, r: &Report) {
        self.seeds += 1;
        let t = &mut self.total;
        t.trace_hash ^= r.trace_hash;
        t.steps += r.steps;
        t.orders += r.orders;
        t.order_failures += r.order_failures;
        t.installs += r.installs;
        t.failed_startups += r.failed_startups;
        t.crashes += r.crashes;
        t.warnings += r.warnings;
        t.errors += r.errors;
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.total;
        write!(
            f,
            "{} seeds: {} steps, {} orders ({} failed), {} installs, {} failed startups, {} crashes, \
             {} warnings ({} errors)",
            self.seeds,
            t.steps,
            t.orders,
            t.order_failures,
            t.installs,
            t.failed_startups,
            t.crashes,
            t.warnings,
            t.errors
        )
    }
}

/// Parses `SIM_SEED`/`SIM_COUNT`-style numbers, with a clear message.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// One simulated year.
pub const YEAR_DAYS: u64 = 365;

/// Two cores on the reference machine.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Convenience for docs and tests.
pub fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}
