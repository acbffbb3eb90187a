//! Fleet mode with real processes: `certloop` instances on 127.0.0.2-6, all on the same port,
//! sharing one `redis-server` (`[storage] backend = "redis"`), with `pebble-challtestsrv`
//! deciding which instance each name resolves to. Every certificate is verified against
//! Pebble's root at every instance.

use std::path::PathBuf;
use std::time::Duration;

mod common;

use common::{Certloop, upstream};

use certloop_tests::conformance::fetch_verified_at;
use certloop_tests::fault_proxy::{Fault, FaultPlan, FaultProxy, Path as CaPath};
use certloop_tests::pebble::{Pebble, PebbleOptions, free_port, wait_until};
use certloop_tests::redis_server::RedisServer;
use rustls::pki_types::CertificateDer;

fn node_ip(index: usize) -> String {
    format!("127.0.0.{}", index + 2)
}

/// The port of every instance's `[admin]` listener (each on its own address): the HTTP-01
/// port of the test's own Pebble, which no instance listens on otherwise and no other test
/// running at the same time uses.
fn admin_port(pebble: &Pebble) -> u16 {
    pebble.http_port
}

/// The value of `series` in instance `index`'s `/metrics`.
fn metric(pebble: &Pebble, index: usize, series: &str) -> Option<String> {
    let url = format!("http://{}:{}/metrics", node_ip(index), admin_port(pebble));
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5", &url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|line| Some(line.strip_prefix(series)?.trim().to_owned()))
}

/// Instance `index`'s configuration: the fleet's Redis with a 3 s lease, one listener on its
/// own address and the shared port, one certificate per name, metrics on its address.
fn node_config(
    pebble: &Pebble,
    directory: &str,
    redis: &RedisServer,
    index: usize,
    names: &[String],
) -> PathBuf {
    let mut body = format!(
        "state_dir = \"{state}\"\n\n[admin]\nbind = \"{ip}:{admin}\"\n\n\
         [storage]\nbackend = \"redis\"\nurl = \"{url}\"\nlease = \"3s\"\n\n\
         [[listeners]]\nname = \"edge\"\nbind = \"{ip}:{port}\"\nupstream = \"http://127.0.0.1:{up}\"\n\
         tls_mode = \"acme\"\nacme_domains = [\"{first}\"]\nacme_directory = \"{directory}\"\n\
         acme_directory_ca = \"{ca}\"\n",
        state = pebble.scratch(&format!("node-{index}")).display(),
        url = redis.url(),
        ip = node_ip(index),
        port = pebble.tls_port,
        admin = admin_port(pebble),
        up = upstream(),
        first = names[0],
        ca = pebble.directory_ca.display(),
    );
    for name in &names[1..] {
        body.push_str(&format!(
            "[[listeners.certificates]]\ndomains = [\"{name}\"]\n"
        ));
    }
    let path = pebble.scratch(&format!("node-{index}.toml"));
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    std::fs::write(&path, body).expect("write config");
    path
}

fn orders(pebble: &Pebble) -> usize {
    pebble.log().matches("POST /order-plz").count()
}

/// The certificate every instance at `ips` serves for each name (all the same, verified
/// against Pebble's root), by name.
fn served_everywhere(
    pebble: &Pebble,
    ips: &[String],
    names: &[String],
) -> Vec<CertificateDer<'static>> {
    let root = pebble.issuing_root_pem();
    (names.iter())
        .map(|name| {
            let leaves: Vec<_> = (ips.iter())
                .map(|ip| {
                    let (leaf, response) = fetch_verified_at(ip, pebble.tls_port, name, &root)
                        .unwrap_or_else(|e| panic!("{name} at {ip}: {e}"));
                    assert!(
                        response.starts_with("HTTP/1.1 200"),
                        "{name} at {ip}: {response}"
                    );
                    leaf
                })
                .collect();
            assert!(
                leaves.windows(2).all(|w| w[0] == w[1]),
                "{name}: every instance serves the same certificate"
            );
            leaves[0].clone()
        })
        .collect()
}

/// Five instances, twenty certificates: one order per certificate, fleet-wide; every instance
/// serves every certificate. Redis stops: the instances keep serving and warn, and one
/// restarted meanwhile starts from its local copy. Redis restarted empty: the fleet converges
/// without an order. Then the renewal: one order per certificate, every instance serving the
/// renewed ones.
#[test]
fn five_instances_order_each_of_twenty_certificates_once_and_renew_each_once() {
    let mut redis = RedisServer::start();
    // 60 s certificates: renewed once, about 30 s in, after the Redis outage.
    let pebble = Pebble::start_with(&PebbleOptions {
        validation_ports: Some((free_port(), free_port())),
        validity_secs: Some(60),
        ..Default::default()
    });
    let names: Vec<String> = (0..20).map(|i| format!("n{i:02}.fleet.test")).collect();
    // Issued by the first instance, started alone: the CA validates where a name resolves,
    // and an instance that is not listening yet would fail the fleet's order (and hold every
    // instance back with its backoff). The renewal is ordered and validated wherever each
    // name resolves, once all five are up.
    for name in &names {
        pebble.resolve(name, &node_ip(0));
    }
    let ips: Vec<String> = (0..5).map(node_ip).collect();
    let configs: Vec<PathBuf> = (0..5)
        .map(|i| node_config(&pebble, &pebble.directory_url, &redis, i, &names))
        .collect();
    let mut nodes = vec![Certloop::start(&configs[0], &[], None)];
    nodes[0].wait_ready();
    nodes.extend(configs[1..].iter().map(|c| Certloop::start(c, &[], None)));
    for node in &mut nodes {
        node.wait_ready();
    }
    assert_eq!(orders(&pebble), 20, "one order per certificate, fleet-wide");
    assert_eq!(
        pebble.log().matches("POST /sign-me-up").count(),
        1,
        "one account"
    );
    let first = served_everywhere(&pebble, &ips, &names);

    redis.stop();
    wait_until("every instance to warn", Duration::from_secs(15), || {
        (nodes.iter()).all(|n| n.log().contains("fleet storage unavailable"))
    });
    let up = "certloop_fleet_storage_up{listener=\"edge\"}";
    assert_eq!(
        metric(&pebble, 1, up).as_deref(),
        Some("0"),
        "the outage is in the metrics"
    );
    assert_eq!(served_everywhere(&pebble, &ips, &names), first);
    drop(nodes.remove(0));
    let mut restarted = Certloop::start(&configs[0], &[], None);
    restarted.wait_ready();
    assert!(
        restarted
            .log()
            .contains("starting from this instance's local copies"),
        "{}",
        restarted.log()
    );
    nodes.insert(0, restarted);
    assert_eq!(served_everywhere(&pebble, &ips, &names), first);
    redis.restart_empty();
    wait_until(
        "the five to be back in the fleet",
        Duration::from_secs(20),
        || redis.cli(&["ZCARD", "certloop:nodes"]) == "5",
    );
    assert_eq!(metric(&pebble, 1, up).as_deref(), Some("1"));
    assert_eq!(served_everywhere(&pebble, &ips, &names), first);
    assert_eq!(orders(&pebble), 20, "no order after Redis came back empty");
    for (i, name) in names.iter().enumerate() {
        pebble.resolve(name, &node_ip(i % 5));
    }

    let root = pebble.issuing_root_pem();
    wait_until(
        "every instance to serve every renewed certificate",
        Duration::from_secs(60),
        || {
            (names.iter().zip(&first)).all(|(name, old)| {
                (ips.iter()).all(|ip| {
                    fetch_verified_at(ip, pebble.tls_port, name, &root)
                        .is_ok_and(|(leaf, _)| leaf != *old)
                })
            })
        },
    );
    served_everywhere(&pebble, &ips, &names);
    assert_eq!(orders(&pebble), 40, "one order per certificate per renewal");
}

/// Starts instance 0 alone, so that it takes the lease, and waits until the CA holds its
/// finalize request (the fault proxy's plan). Returns the fleet's pieces.
fn holder_in_the_middle_of_its_order(
    fault: Fault,
) -> (
    RedisServer,
    Pebble,
    FaultProxy,
    Vec<String>,
    Vec<PathBuf>,
    Certloop,
) {
    let redis = RedisServer::start();
    let pebble = Pebble::start_with(&PebbleOptions {
        validation_ports: Some((free_port(), free_port())),
        ..Default::default()
    });
    let ca = FaultProxy::start(&pebble);
    let names = vec!["held.fleet.test".to_owned()];
    // Validated at the holder while it is the only instance.
    pebble.resolve(&names[0], &node_ip(0));
    let configs: Vec<PathBuf> = (0..3)
        .map(|i| node_config(&pebble, &ca.directory_url, &redis, i, &names))
        .collect();
    ca.set(Some(FaultPlan {
        path: CaPath::Finalize,
        fault,
        times: Some(1),
    }));
    let holder = Certloop::start(&configs[0], &[], None);
    wait_until(
        "the holder's finalize to reach the CA",
        Duration::from_secs(30),
        || ca.faulted() == 1,
    );
    assert!(
        holder.log().contains("took the fleet's lease"),
        "{}",
        holder.log()
    );
    (redis, pebble, ca, names, configs, holder)
}

/// kill -9 of the lease holder in the middle of its order: after the lease runs out another
/// instance orders, once, and every live instance serves its certificate.
#[test]
fn when_the_lease_holder_is_killed_mid_order_another_instance_completes_it() {
    let (redis, pebble, _ca, names, configs, holder) =
        holder_in_the_middle_of_its_order(Fault::Stall);
    let mut others: Vec<Certloop> = (configs[1..].iter())
        .map(|c| Certloop::start(c, &[], None))
        .collect();
    drop(holder); // SIGKILL
    pebble.resolve(&names[0], &node_ip(2));
    for node in &mut others {
        node.wait_ready();
    }
    assert!(
        orders(&pebble) <= 2,
        "one extra order at most: {}",
        orders(&pebble)
    );
    served_everywhere(&pebble, &[node_ip(1), node_ip(2)], &names);
    let token = redis.cli(&["HGET", "certloop:cert:held.fleet.test", "token"]);
    assert_eq!(
        token, "2",
        "written under the lease taken over from the killed holder"
    );
}

/// SIGSTOP of the lease holder past its lease while another instance orders, then SIGCONT:
/// the paused instance never replaces the fleet's certificate, and serves it.
#[test]
fn a_paused_lease_holder_cannot_overwrite_the_certificate_of_the_instance_that_took_over() {
    let (redis, pebble, _ca, names, configs, mut holder) =
        holder_in_the_middle_of_its_order(Fault::Delay(Duration::from_secs(8)));
    holder.signal("STOP");
    let mut others: Vec<Certloop> = (configs[1..].iter())
        .map(|c| Certloop::start(c, &[], None))
        .collect();
    pebble.resolve(&names[0], &node_ip(2));
    for node in &mut others {
        node.wait_ready();
    }
    let live = [node_ip(1), node_ip(2)];
    let fleets = served_everywhere(&pebble, &live, &names);
    let token = redis.cli(&["HGET", "certloop:cert:held.fleet.test", "token"]);
    assert_eq!(token, "2", "written by the instance that took over");
    // The CA answers the paused instance's finalize (8 s after it asked) while it is stopped.
    wait_until(
        "the held finalize to be answered",
        Duration::from_secs(20),
        || orders(&pebble) == 2 && pebble.log().matches("Issued certificate").count() == 2,
    );
    holder.signal("CONT");
    holder.wait_ready();
    let all = [node_ip(0), node_ip(1), node_ip(2)];
    wait_until(
        "the paused instance to serve the fleet's certificate",
        Duration::from_secs(15),
        || {
            let root = pebble.issuing_root_pem();
            fetch_verified_at(&all[0], pebble.tls_port, &names[0], &root)
                .is_ok_and(|(leaf, _)| leaf == fleets[0])
        },
    );
    assert_eq!(served_everywhere(&pebble, &all, &names), fleets);
    assert_eq!(
        redis.cli(&["HGET", "certloop:cert:held.fleet.test", "token"]),
        "2",
        "the late write did not land"
    );
    let log = holder.log();
    assert!(
        log.contains("the fleet refused this instance's certificate")
            || log.contains("serving the certificate another instance stored"),
        "{log}"
    );
}
