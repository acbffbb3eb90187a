//! `redis-fleet-bench [CERTS] [NODES]`: what fleet mode costs and saves, against a real
//! `redis-server` and Pebble, with NODES instances (default 5) in this process on 127.0.0.2
//! and up, each managing the same CERTS certificates (default 1,000) of one name each:
//! - orders per renewal, fleet-wide (the goal is exactly 1.0), against a baseline measured in
//!   the same run: one instance alone, with no Redis;
//! - Redis commands per renewal (`INFO stats` before and after the renewals, less the
//!   background rate of heartbeats and periodic checks measured just before them);
//! - the time from the first instance serving a renewed certificate to the last one serving
//!   it (p50, p99; the goal is p99 under 1 s).
//!
//! Not a test: run it with `scripts/bench-fleet.sh [CERTS] [NODES]`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certloop_acme::{AcmeConfig, AcmeHandle, LifecycleEvent, RedisSettings};
use certloop_core::Policy;
use certloop_tests::adapters::Tokio;
use certloop_tests::conformance::Adapter;
use certloop_tests::pebble::{Pebble, PebbleOptions, free_port, wait_until};
use certloop_tests::redis_server::RedisServer;

fn arg(position: usize, default: usize) -> usize {
    std::env::args()
        .nth(position)
        .map_or(default, |a| a.parse().expect("a number"))
}

/// What one run measured.
struct Outcome {
    certs: usize,
    nodes: usize,
    issue_orders: usize,
    renewal_orders: usize,
    /// Redis commands per renewal, background excluded, and the background rate per second.
    commands: Option<(f64, f64)>,
    /// Per certificate: first instance serving the renewal to the last.
    spread: Vec<Duration>,
    renewal_phase: Duration,
}

fn orders(pebble: &Pebble) -> usize {
    pebble.log().matches("POST /order-plz").count()
}

fn commands_processed(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "stats"]);
    (info.lines())
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed")
}

fn run(certs: usize, nodes: usize, fleet: bool) -> Outcome {
    let redis = fleet.then(RedisServer::start);
    // Long enough that every certificate is issued (eight orders at a time, a few per second
    // on Pebble) and the background measured before the first renewal, at half the lifetime.
    let validity = 60 + certs as u64 / 2;
    let pebble = Pebble::start_with(&PebbleOptions {
        validation_ports: Some((free_port(), free_port())),
        validity_secs: Some(validity),
        ..Default::default()
    });
    let ip = |node: usize| format!("127.0.0.{}", node + 2);
    let names: Vec<String> = (0..certs).map(|i| format!("c{i}.bench.test")).collect();
    // Issued at the first instance (the others may not listen yet); renewed wherever the
    // name resolves once all are up.
    for name in &names {
        pebble.resolve(name, &ip(0));
    }
    let tokio = Tokio::default();
    let renewed: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let handles: Vec<AcmeHandle> = (0..nodes)
        .map(|node| {
            let cache = pebble.scratch(&format!("cache-{node}"));
            // A thousand first orders at once keep Pebble busy for minutes.
            let policy = Policy {
                startup_timeout: Duration::from_secs(600),
                ..Policy::default()
            };
            let mut config = AcmeConfig::new([names[0].as_str()], &cache)
                .policy(policy)
                .directory_url(&pebble.directory_url)
                .extra_roots_pem(&pebble.directory_ca);
            for name in &names[1..] {
                config = config.certificate([name.as_str()]);
            }
            if let Some(redis) = &redis {
                config = config.fleet_redis(RedisSettings::new(redis.url()));
            }
            let handle = tokio.launch(config).expect("launch");
            tokio.serve_tls_at(&ip(node), pebble.tls_port, &handle);
            let events = handle.subscribe();
            let renewed = renewed.clone();
            std::thread::spawn(move || {
                while let Some(event) = futures_lite::future::block_on(events.next()) {
                    if let LifecycleEvent::Renewed { domains, .. } = event {
                        let seen = (domains.join(","), Instant::now());
                        renewed.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
                    }
                }
            });
            handle
        })
        .collect();
    for handle in &handles {
        tokio.block_on(handle.ready()).expect("ready");
    }
    for (i, name) in names.iter().enumerate() {
        pebble.resolve(name, &ip(i % nodes));
    }
    let issue_orders = orders(&pebble);
    // The background (heartbeats, periodic checks) before any renewal.
    let background = redis.as_ref().map(|redis| {
        let (before, at) = (commands_processed(redis), Instant::now());
        std::thread::sleep(Duration::from_secs(10));
        let rate = (commands_processed(redis) - before) as f64 / at.elapsed().as_secs_f64();
        (rate, commands_processed(redis), Instant::now())
    });
    let early = renewed.lock().unwrap_or_else(|e| e.into_inner()).len();
    assert_eq!(
        (early, orders(&pebble)),
        (0, issue_orders),
        "renewals began before the background was measured: a longer validity is needed"
    );
    let total = certs * nodes;
    wait_until(
        "every instance to serve every renewed certificate",
        Duration::from_secs(validity * 2),
        || renewed.lock().unwrap_or_else(|e| e.into_inner()).len() >= total,
    );
    let renewal_orders = orders(&pebble) - issue_orders;
    let seen = renewed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let first_seen = seen.iter().map(|(_, at)| *at).min().expect("renewals");
    let last_seen = seen.iter().map(|(_, at)| *at).max().expect("renewals");
    let commands = redis
        .as_ref()
        .zip(background)
        .map(|(redis, (rate, before, at))| {
            let used = (commands_processed(redis) - before) as f64;
            let background = rate * at.elapsed().as_secs_f64();
            ((used - background).max(0.0) / certs as f64, rate)
        });
    let mut spread: Vec<Duration> = (names.iter())
        .filter_map(|name| {
            let times: Vec<Instant> = (seen.iter())
                .filter(|(d, _)| d == name)
                .map(|(_, at)| *at)
                .collect();
            Some(*times.iter().max()? - *times.iter().min()?)
        })
        .collect();
    spread.sort();
    for handle in handles {
        handle.stop();
    }
    Outcome {
        certs,
        nodes,
        issue_orders,
        renewal_orders,
        commands,
        spread,
        renewal_phase: last_seen - first_seen,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

fn main() {
    let (certs, nodes) = (arg(1, 1000), arg(2, 5));
    // One instance alone, no Redis: what a renewal costs the CA without a fleet (instances
    // without Redis cannot share a name: the CA validates at only one of them).
    let baseline = run(certs.min(40), 1, false);
    let fleet = run(certs, nodes, true);
    println!(
        "| run | instances | certificates | orders at issuance | orders per renewal | Redis commands per renewal | background commands/s | install to all serving p50 | p99 | max | renewal phase |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (label, o) in [
        ("baseline: one instance, no Redis", &baseline),
        ("fleet: one Redis", &fleet),
    ] {
        let (per_renewal, background) = o
            .commands
            .map_or(("-".to_owned(), "-".to_owned()), |(c, r)| {
                (format!("{c:.1}"), format!("{r:.0}"))
            });
        println!(
            "| {label} | {} | {} | {} | {:.2} | {per_renewal} | {background} | {:?} | {:?} | {:?} | {:.1} s |",
            o.nodes,
            o.certs,
            o.issue_orders,
            o.renewal_orders as f64 / o.certs as f64,
            percentile(&o.spread, 0.5),
            percentile(&o.spread, 0.99),
            o.spread.last().copied().unwrap_or_default(),
            o.renewal_phase.as_secs_f64(),
        );
    }
    let ratio = (fleet.renewal_orders as f64 / fleet.certs as f64)
        / (baseline.renewal_orders as f64 / baseline.certs as f64);
    println!("orders per renewal, fleet / baseline: {ratio:.3}");
}
