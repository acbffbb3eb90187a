//! `fleet-bench`: how fast the core simulates certificate-years, and how much memory a managed
//! certificate costs. Not a test: run it with
//! `cargo run --release -p certloop-tests --bin fleet-bench [-- CERTS [LIFETIME_HOURS]]`
//! (default 1,000,000 certificates of 90 days; `-- 1000000 160` for six-day certificates).
//!
//! A `CertFleet` manages every certificate; a fake CA answers each action at once (certificates
//! of the lifetime asked, stores succeed, no ARI). The clock jumps from wake to wake over one simulated
//! year. The baseline, measured in the same run, is the same year for 1,000 certificates: the
//! ratio of per-event costs shows whether cost per event grows with the fleet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certloop_core::{
    Action, CachedCert, CertBundle, CertConfig, CertFleet, CertId, CertInfo, Certificate, Event,
    Policy, RenewalInfo, UnixTime,
};

const YEAR: Duration = Duration::from_secs(365 * 86_400);

struct Run {
    certs: usize,
    orders: u64,
    events: u64,
    elapsed: Duration,
    rss_per_cert: f64,
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn run(certs: usize, lifetime: Duration) -> Run {
    let start = UnixTime::from_secs(1_800_000_000);
    let end = start.saturating_add(YEAR);
    // One shared bundle: certificate bytes are excluded from the per-certificate figure.
    let bundle = CertBundle::new(vec![0u8; 1500]);
    let rss_before = rss_bytes();
    let mut fleet = CertFleet::new(Arc::new(Policy::default())).expect("default policy");
    let mut ids = Vec::with_capacity(certs);
    for i in 0..certs {
        let config = CertConfig::new([format!("c{i}.example")], i as u64).expect("valid name");
        ids.push(fleet.insert(start, &config));
    }
    let started = Instant::now();
    let (mut events, mut orders) = (0u64, 0u64);
    let mut replies: Vec<(CertId, Event)> = Vec::new();
    let mut now = start;
    loop {
        while let Some((id, action)) = fleet.poll_action() {
            let reply = match action {
                Action::LoadCache { .. } => Some(Event::CacheLoaded {
                    cert: CachedCert::Missing,
                    retry: None,
                }),
                Action::StartOrder { order, domains, .. } => {
                    orders += 1;
                    let info = CertInfo {
                        not_before: now,
                        not_after: now.saturating_add(lifetime),
                        names: domains.clone(),
                    };
                    let cert = Certificate {
                        info,
                        bundle: bundle.clone(),
                    };
                    Some(Event::OrderSucceeded { order, cert })
                }
                Action::StoreCert { request, .. } => Some(Event::StoreFinished {
                    request,
                    result: Ok(()),
                }),
                Action::FetchRenewalInfo { request, .. } => Some(Event::RenewalInfo {
                    request,
                    info: RenewalInfo::Unsupported,
                }),
                Action::FailStartup(f) => panic!("unexpected startup failure: {f}"),
                _ => None,
            };
            if let Some(event) = reply {
                replies.push((id, event));
            }
        }
        if let Some((id, event)) = replies.pop() {
            fleet.handle(now, id, event);
            events += 1;
            continue;
        }
        match fleet.poll_timeout() {
            Some(at) if at <= end => {
                now = now.max(at);
                fleet.handle_timeout(now);
                events += 1;
            }
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    let rss_per_cert = rss_bytes().saturating_sub(rss_before) as f64 / certs as f64;
    for id in ids.iter().step_by(certs.div_ceil(100).max(1)) {
        let serving = fleet.serving(*id).expect("every certificate is served");
        assert!(serving.is_valid_at(end), "certificate lapsed");
    }
    Run {
        certs,
        orders,
        events,
        elapsed,
        rss_per_cert,
    }
}

fn main() {
    let certs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("CERTS must be a whole number"))
        .unwrap_or(1_000_000);
    let hours: u64 = std::env::args()
        .nth(2)
        .map(|a| a.parse().expect("LIFETIME_HOURS must be a whole number"))
        .unwrap_or(90 * 24);
    let lifetime = Duration::from_secs(hours * 3600);
    println!("certificates of {hours} hours, renewed per the default policy, for one year");
    let baseline = run(1_000, lifetime);
    let full = run(certs, lifetime);
    let per_event = |r: &Run| r.elapsed.as_secs_f64() / r.events as f64 * 1e9;
    for r in [&baseline, &full] {
        println!(
            "{:>9} certificates x 1 year: {:>6.1} orders each, {:>10} events in {:>7.2?} = \
             {:>12.0} certificate-years/s, {:>6.0} ns/event, {:>6.0} bytes RSS/certificate",
            r.certs,
            r.orders as f64 / r.certs as f64,
            r.events,
            r.elapsed,
            r.certs as f64 / r.elapsed.as_secs_f64(),
            per_event(r),
            r.rss_per_cert
        );
    }
    println!(
        "per-event cost ratio ({} vs 1,000 certificates): {:.2}",
        full.certs,
        per_event(&full) / per_event(&baseline)
    );
}
