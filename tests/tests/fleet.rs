//! Fleet mode against a real `redis-server` and Pebble: the lease and fencing protocol one
//! operation at a time, then instances on tokio and smol, each on its own loopback address,
//! sharing certificates, the account and challenge answers.

use std::time::Duration;

use certloop_acme::testing::FleetProbe;
use certloop_acme::{AcmeConfig, AcmeHandle, ChallengeKind, RedisSettings};
use certloop_tests::adapters::{InFleet, Smol, Tokio};
use certloop_tests::conformance as suite;
use certloop_tests::conformance::{Adapter, fetch_verified_at};
use certloop_tests::pebble::{Pebble, PebbleOptions, free_port, wait_until};
use certloop_tests::redis_server::RedisServer;

fn settings(redis: &RedisServer, prefix: &str) -> RedisSettings {
    RedisSettings::new(redis.url())
        .key_prefix(prefix)
        .lease(Duration::from_secs(3))
}

/// The protocol, on smol (no tokio runtime): one holder at a time, tokens that only grow, a
/// holder whose lease ran out (a pause) refused, and a Redis that lost its data refusing every
/// token issued before.
#[test]
fn a_lease_is_exclusive_and_a_stale_holder_cannot_write() {
    let mut redis = RedisServer::start();
    let rt = certloop_smol::SmolRuntime;
    let (a, b) = (
        FleetProbe::new(rt, settings(&redis, "t:")).unwrap(),
        FleetProbe::new(rt, settings(&redis, "t:")).unwrap(),
    );
    smol::block_on(async {
        let held = a.acquire("x.test").await.unwrap().expect("free at first");
        assert!(b.acquire("x.test").await.unwrap().is_none(), "held by a");
        assert!(a.write_cert(&held, b"one").await.unwrap());
        assert_eq!(
            b.cert("x.test").await.unwrap(),
            Some((held.token(), b"one".to_vec()))
        );
        assert!(a.extend(&held).await.unwrap());
        // a pauses past its lease; b takes over with a newer token.
        wait_until("a's lease to expire", Duration::from_secs(10), || {
            redis.cli(&["PTTL", "t:lease:x.test"]) == "-2"
        });
        let taken = b
            .acquire("x.test")
            .await
            .unwrap()
            .expect("expired lease taken over");
        assert!(taken.token() > held.token());
        assert!(
            !a.extend(&held).await.unwrap(),
            "a learns it lost the lease"
        );
        assert!(
            !a.write_cert(&held, b"stale").await.unwrap(),
            "a's late write is refused"
        );
        assert!(b.write_cert(&taken, b"two").await.unwrap());
        assert_eq!(
            a.cert("x.test").await.unwrap(),
            Some((taken.token(), b"two".to_vec()))
        );
        // Released: the next holder need not wait for the expiry.
        b.release(&taken).await;
        let again = a.acquire("x.test").await.unwrap().expect("released");
        assert!(again.token() > taken.token());
        a.release(&again).await;
    });
    // Redis restarted without its data: tokens start again, in a new epoch, and no token of
    // the old one is accepted even though its number is higher.
    let old = smol::block_on(async {
        for _ in 0..3 {
            let lease = b.acquire("y.test").await.unwrap().expect("free");
            b.release(&lease).await;
        }
        b.acquire("y.test").await.unwrap().expect("free")
    });
    assert_eq!(old.token(), 4);
    for _ in 0..5 {
        let lease = smol::block_on(a.acquire("y.test"));
        assert!(matches!(lease, Ok(None)), "held by b");
    }
    redis.restart_empty();
    smol::block_on(async {
        // The first command after the restart may find the old connection gone.
        let mut fresh = a.acquire("y.test").await;
        if fresh.is_err() {
            fresh = a.acquire("y.test").await;
        }
        let fresh = fresh.unwrap().expect("an empty Redis has no lease");
        assert!(fresh.token() < old.token(), "the counter started again");
        let mut refused = b.write_cert(&old, b"old epoch").await;
        if refused.is_err() {
            refused = b.write_cert(&old, b"old epoch").await;
        }
        assert!(!refused.unwrap(), "a token of the lost dataset is refused");
        assert!(a.write_cert(&fresh, b"new epoch").await.unwrap());
    });
}

/// A password is sent, and never printed; without it Redis refuses and the error says so.
#[test]
fn a_redis_password_is_used_and_never_printed() {
    let redis = RedisServer::start_with(Some("s3cret-fleet-pw"));
    let rt = certloop_smol::SmolRuntime;
    let without = FleetProbe::new(rt, settings(&redis, "p:")).unwrap();
    let error = smol::block_on(without.acquire("x.test")).unwrap_err();
    assert!(
        error.contains("NOAUTH") || error.contains("uthentication"),
        "{error}"
    );
    let with = FleetProbe::new(rt, settings(&redis, "p:").password("s3cret-fleet-pw")).unwrap();
    assert!(smol::block_on(with.acquire("x.test")).unwrap().is_some());
    let printed = format!(
        "{:?} {error}",
        settings(&redis, "p:").password("s3cret-fleet-pw")
    );
    assert!(!printed.contains("s3cret"), "{printed}");
}

/// A Pebble that validates on ports of its own, which every instance of the test binds on
/// its own loopback address.
fn validating_on_own_ports() -> Pebble {
    Pebble::start_with(&PebbleOptions {
        validation_ports: Some((free_port(), free_port())),
        ..Default::default()
    })
}

/// One instance of the fleet on its own loopback address, on either runtime.
struct Node {
    ip: String,
    handle: AcmeHandle,
}

fn node_config(
    pebble: &Pebble,
    redis: &RedisServer,
    cache: &std::path::Path,
    names: &[&str],
) -> AcmeConfig {
    let mut config = AcmeConfig::new([names[0]], cache)
        .directory_url(&pebble.directory_url)
        .contact("mailto:ops@example.com")
        .extra_roots_pem(&pebble.directory_ca)
        .fleet_redis(RedisSettings::new(redis.url()).key_prefix("fleet:"));
    for name in &names[1..] {
        config = config.certificate([*name]);
    }
    config
}

fn start<A: Adapter>(a: &A, pebble: &Pebble, ip: &str, config: AcmeConfig) -> Node {
    // A stopped instance's driver releases the cache directory's lock as it ends.
    let mut launched = None;
    wait_until(
        "the cache directory to be free",
        Duration::from_secs(10),
        || {
            match a.launch(config.clone()) {
                Ok(handle) => launched = Some(handle),
                Err(certloop_acme::StartError::Store(e)) if e.to_string().contains("lock") => {}
                Err(e) => panic!("{}: {e}", A::NAME),
            }
            launched.is_some()
        },
    );
    let handle = launched.expect("launched");
    a.serve_tls_at(ip, pebble.tls_port, &handle);
    a.serve_http01_at(ip, pebble.http_port, &handle);
    Node {
        ip: ip.to_owned(),
        handle,
    }
}

fn orders(pebble: &Pebble) -> usize {
    pebble.log().matches("POST /order-plz").count()
}

fn accounts(pebble: &Pebble) -> usize {
    pebble.log().matches("POST /sign-me-up").count()
}

/// Three instances (tokio, smol, tokio) on 127.0.0.2-4 share three certificates: each is
/// ordered once fleet-wide, on one account, and every instance serves every one. A fourth
/// instance orders a certificate whose name resolves to an instance that does not manage it:
/// that one answers the validation from the fleet, for TLS-ALPN-01 and HTTP-01. With Redis
/// stopped the instances keep serving and one restarts from its local copy; Redis restarted
/// empty costs no order.
#[test]
fn a_fleet_orders_each_certificate_once_and_every_instance_serves_it() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("certloop_acme=info")
        .with_test_writer()
        .try_init();
    let mut redis = RedisServer::start();
    let pebble = validating_on_own_ports();
    let names = ["a.fleet.test", "b.fleet.test", "c.fleet.test"];
    for (name, ip) in names.iter().zip(["127.0.0.2", "127.0.0.3", "127.0.0.4"]) {
        pebble.resolve(name, ip);
    }
    let (tokio, smol) = (Tokio::default(), Smol);
    let caches: Vec<_> = (0..5)
        .map(|i| pebble.scratch(&format!("cache-{i}")))
        .collect();
    let mut nodes = vec![
        start(
            &tokio,
            &pebble,
            "127.0.0.2",
            node_config(&pebble, &redis, &caches[0], &names),
        ),
        start(
            &smol,
            &pebble,
            "127.0.0.3",
            node_config(&pebble, &redis, &caches[1], &names),
        ),
        start(
            &tokio,
            &pebble,
            "127.0.0.4",
            node_config(&pebble, &redis, &caches[2], &names),
        ),
    ];
    for node in &nodes {
        tokio
            .block_on(node.handle.ready())
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", node.ip, pebble.log()));
    }
    assert_eq!(orders(&pebble), 3, "one order per certificate, fleet-wide");
    assert_eq!(accounts(&pebble), 1, "one account, registered once");
    let root = pebble.issuing_root_pem();
    let served = |nodes: &[Node]| {
        (names.iter())
            .map(|name| {
                let leaves: Vec<_> = (nodes.iter())
                    .map(|node| {
                        fetch_verified_at(&node.ip, pebble.tls_port, name, &root)
                            .unwrap_or_else(|e| panic!("{name} at {}: {e}", node.ip))
                            .0
                    })
                    .collect();
                assert!(
                    leaves.windows(2).all(|w| w[0] == w[1]),
                    "{name}: every instance serves the same certificate"
                );
                leaves[0].clone()
            })
            .collect::<Vec<_>>()
    };
    let first = served(&nodes);

    // Validations that reach an instance that does not manage the certificate.
    for (kind, name, ip, address) in [
        (
            ChallengeKind::TlsAlpn01,
            "d.fleet.test",
            "127.0.0.3",
            "127.0.0.5",
        ),
        (
            ChallengeKind::Http01,
            "e.fleet.test",
            "127.0.0.2",
            "127.0.0.6",
        ),
    ] {
        pebble.resolve(name, ip);
        let cache = pebble.scratch(&format!("cache-{name}"));
        let config = node_config(&pebble, &redis, &cache, &[name]).challenge(kind);
        let node = start(&tokio, &pebble, address, config);
        tokio
            .block_on(node.handle.ready())
            .unwrap_or_else(|e| panic!("{kind:?} through {ip}: {e}\n{}", pebble.log()));
        fetch_verified_at(address, pebble.tls_port, name, &root).expect("served");
        node.handle.stop();
    }
    assert_eq!(orders(&pebble), 5);

    // Redis down: every instance keeps serving; one restarts from its local copy.
    redis.stop();
    let restarted = nodes.remove(0);
    restarted.handle.stop();
    let again = start(
        &smol,
        &pebble,
        "127.0.0.7",
        node_config(&pebble, &redis, &caches[0], &names),
    );
    smol::block_on(again.handle.ready()).expect("starts from the local copy without Redis");
    nodes.push(again);
    assert_eq!(served(&nodes), first);
    // Redis back, empty: nothing to order, every certificate is still valid.
    redis.restart_empty();
    wait_until(
        "an instance to be back in the fleet",
        Duration::from_secs(15),
        || redis.cli(&["ZCARD", "fleet:nodes"]) != "0",
    );
    assert_eq!(served(&nodes), first);
    assert_eq!(
        orders(&pebble),
        5,
        "no new order after Redis came back empty\n{}",
        pebble.log()
    );
    for node in nodes {
        node.handle.stop();
    }
}

/// `rediss://`: two instances share a certificate through a Redis that speaks TLS only, its
/// certificate verified against the CA the configuration adds (and without it, refused).
#[test]
fn a_fleet_shares_through_redis_over_tls() {
    let redis = RedisServer::start_tls();
    let pebble = validating_on_own_ports();
    let name = "tls.fleet.test";
    pebble.resolve(name, "127.0.0.2");
    let redis_ca = redis.tls_ca.clone().expect("TLS");
    let config = |cache: &str| {
        node_config(&pebble, &redis, &pebble.scratch(cache), &[name]).extra_roots_pem(&redis_ca)
    };
    let tokio = Tokio::default();
    let nodes = [
        start(&tokio, &pebble, "127.0.0.2", config("cache-tokio")),
        start(&Smol, &pebble, "127.0.0.3", config("cache-smol")),
    ];
    for node in &nodes {
        tokio
            .block_on(node.handle.ready())
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", node.ip, pebble.log()));
        let storage = node.handle.fleet_storage().expect("fleet mode");
        assert!(storage.reachable, "{}: Redis over TLS answers", node.ip);
    }
    assert_eq!(orders(&pebble), 1, "one order, fleet-wide, through TLS");
    assert_eq!(redis.cli(&["EXISTS", &format!("fleet:cert:{name}")]), "1");
    let root = pebble.issuing_root_pem();
    let leaves: Vec<_> = (nodes.iter())
        .map(|node| {
            fetch_verified_at(&node.ip, pebble.tls_port, name, &root)
                .expect("served")
                .0
        })
        .collect();
    assert_eq!(leaves[0], leaves[1]);
    for node in nodes {
        node.handle.stop();
    }

    // Without the CA, the instance does not trust Redis's certificate: no fleet storage.
    let untrusting = start(
        &tokio,
        &pebble,
        "127.0.0.4",
        node_config(
            &pebble,
            &redis,
            &pebble.scratch("cache-untrusting"),
            &[name],
        ),
    );
    wait_until("the TLS refusal", Duration::from_secs(15), || {
        untrusting
            .handle
            .fleet_storage()
            .is_some_and(|s| !s.reachable)
    });
    untrusting.handle.stop();
}

/// A certificate written to Redis whose notification is lost still reaches an instance, by
/// its periodic check (every second here): the newer certificate another CA client ordered
/// is written without a message, and the instance serves it.
#[test]
fn a_lost_notification_only_delays_a_new_certificate_until_the_next_check() {
    let redis = RedisServer::start();
    let pebble = validating_on_own_ports();
    let name = "quiet.fleet.test";
    pebble.resolve(name, "127.0.0.2");
    let tokio = Tokio::default();
    let quick_checks = RedisSettings::new(redis.url())
        .key_prefix("fleet:")
        .check_interval(Duration::from_secs(1));
    let watching = start(
        &tokio,
        &pebble,
        "127.0.0.2",
        node_config(&pebble, &redis, &pebble.scratch("cache-watching"), &[name])
            .fleet_redis(quick_checks),
    );
    tokio.block_on(watching.handle.ready()).expect("ready");
    let root = pebble.issuing_root_pem();
    let first = fetch_verified_at("127.0.0.2", pebble.tls_port, name, &root)
        .expect("served")
        .0;

    // A newer certificate for the same name, from an instance outside the fleet. Pebble's
    // validity has one-second resolution: it must be issued in a later second to be newer.
    let unix_second = || {
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
            .expect("clock")
            .as_secs()
    };
    let first_issued = unix_second();
    wait_until("the next second", Duration::from_secs(3), || {
        unix_second() > first_issued
    });
    pebble.resolve(name, "127.0.0.3");
    let outside_cache = pebble.scratch("cache-outside");
    let outside = AcmeConfig::new([name], &outside_cache)
        .directory_url(&pebble.directory_url)
        .extra_roots_pem(&pebble.directory_ca);
    let outsider = start(&tokio, &pebble, "127.0.0.3", outside);
    tokio.block_on(outsider.handle.ready()).expect("outsider");
    let newer = fetch_verified_at("127.0.0.3", pebble.tls_port, name, &root)
        .expect("served")
        .0;
    assert_ne!(newer, first);
    outsider.handle.stop();
    let stored = || {
        (std::fs::read_dir(&outside_cache).expect("cache").flatten())
            .map(|entry| entry.path())
            .find(|path| {
                let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
                file.starts_with("cached_cert_") && !file.contains('.')
            })
    };
    wait_until(
        "the outsider's certificate file",
        Duration::from_secs(10),
        || stored().is_some(),
    );
    let bundle = std::fs::read(stored().expect("stored")).expect("bundle");

    let probe = FleetProbe::new(certloop_smol::SmolRuntime, settings(&redis, "fleet:")).unwrap();
    smol::block_on(async {
        let lease = probe.acquire(name).await.unwrap().expect("lease");
        let written = probe.write_cert_unannounced(&lease, &bundle, &pebble.directory_url);
        assert!(written.await.unwrap(), "written under a newer token");
        probe.release(&lease).await;
    });
    wait_until(
        "the instance to serve the certificate it was not told about",
        Duration::from_secs(10),
        || {
            fetch_verified_at("127.0.0.2", pebble.tls_port, name, &root)
                .is_ok_and(|(leaf, _)| leaf == newer)
        },
    );
    // While nothing is written, a check reads the write count (`MGET`) and compares no
    // record (`HMGET`).
    let calls = |command: &str| -> u64 {
        let stats = redis.cli(&["INFO", "commandstats"]);
        (stats.lines())
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let (compared, checked) = (calls("hmget"), calls("mget"));
    wait_until("two more checks", Duration::from_secs(10), || {
        calls("mget") >= checked + 2
    });
    assert_eq!(
        calls("hmget"),
        compared,
        "a check without writes compared records"
    );
    watching.handle.stop();
}

/// The fleet asks the CA for a certificate's renewal window (ARI) once: an instance serving a
/// certificate another one fetched the window for takes it from Redis, until the CA's retry
/// time. Against a fake ARI directory in front of Pebble, whose first window opens at once
/// (a renewal) and the next one months away.
#[test]
fn the_fleet_asks_the_ca_for_a_renewal_window_once() {
    let redis = RedisServer::start();
    let pebble = validating_on_own_ports();
    let ari = certloop_tests::ari_directory::AriDirectory::start(&pebble);
    let name = "ari.fleet.test";
    pebble.resolve(name, "127.0.0.2");
    let config = |cache: &str| {
        node_config(&pebble, &redis, &pebble.scratch(cache), &[name])
            .directory(certloop_acme::Directory::Url(ari.url.clone()))
    };
    let distinct_asked = || {
        let asked = ari.asked.lock().expect("lock");
        (asked.iter().collect::<std::collections::BTreeSet<_>>()).len()
    };
    let tokio = Tokio::default();
    let first = start(&tokio, &pebble, "127.0.0.2", config("cache-first"));
    tokio
        .block_on(first.handle.ready())
        .expect("first instance");
    // Renewed when the first window opened; then the renewed certificate's window is asked.
    wait_until(
        "the renewed certificate's window",
        Duration::from_secs(30),
        || distinct_asked() == 2 && first.handle.status()[0].ari_window.is_some(),
    );
    let window = first.handle.status()[0].ari_window;
    let (asked, ordered) = (ari.asked.lock().expect("lock").len(), orders(&pebble));

    let second = start(&Smol, &pebble, "127.0.0.3", config("cache-second"));
    smol::block_on(second.handle.ready()).expect("second instance");
    wait_until(
        "the second instance to know the window",
        Duration::from_secs(15),
        || second.handle.status()[0].ari_window.is_some(),
    );
    assert_eq!(second.handle.status()[0].ari_window, window);
    assert_eq!(
        ari.asked.lock().expect("lock").len(),
        asked,
        "the second instance took the window from the fleet"
    );
    assert_eq!(
        orders(&pebble),
        ordered,
        "the second instance ordered nothing"
    );
    first.handle.stop();
    second.handle.stop();
}

/// The conformance scenarios whose outcome must not depend on the storage, run again with the
/// certificates kept in Redis (the directory being each instance's local copy).
macro_rules! same_outcome_over_redis {
    ($($scenario:ident),* $(,)?) => {
        mod over_redis {
            use super::*;
            $( #[test] fn $scenario() { suite::$scenario(&InFleet::<Tokio>::default()); } )*
        }
    };
}

same_outcome_over_redis!(
    issues_with_tls_alpn_01_for_several_names,
    issues_with_http_01,
    restart_with_cache_makes_no_new_order,
    restart_with_ca_down_serves_cached_and_warns,
    first_start_ca_down_fails_within_bound,
    renews_before_expiry,
    sni_selects_among_certificates,
    key_types_are_issued_and_served,
);

/// A CA failing orders: the instance that ordered shares its backoff, and the others, taking
/// the lease after it, do not order before it ends. One order reaches the CA, not one per
/// instance.
#[test]
fn a_failed_order_holds_the_whole_fleet_back_until_its_retry_time() {
    use certloop_core::Policy;
    use certloop_tests::fault_proxy::{Fault, FaultPlan, FaultProxy, Path as CaPath};
    let redis = RedisServer::start();
    let pebble = Pebble::start();
    let ca = FaultProxy::start(&pebble);
    ca.set(Some(FaultPlan {
        path: CaPath::NewOrder,
        fault: Fault::Status {
            status: 500,
            retry_after: None,
            problem: Some("serverInternal"),
        },
        times: None,
    }));
    let tokio = Tokio::default();
    let policy = Policy {
        startup_retry_min: Duration::from_secs(30),
        startup_retry_max: Duration::from_secs(30),
        startup_timeout: Duration::from_secs(120),
        ..Policy::default()
    };
    let handles: Vec<AcmeHandle> = (0..2)
        .map(|i| {
            let cache = pebble.scratch(&format!("cache-{i}"));
            let config = AcmeConfig::new(["backoff.fleet.test"], &cache)
                .directory_url(&ca.directory_url)
                .extra_roots_pem(&pebble.directory_ca)
                .policy(policy.clone())
                .fleet_redis(settings(&redis, "b:"));
            tokio.launch(config).expect("launch")
        })
        .collect();
    let new_orders = || {
        (ca.requests().iter())
            .filter(|r| r.contains("/order-plz"))
            .count()
    };
    let errors = || -> Vec<String> {
        (handles.iter())
            .filter_map(|h| h.status()[0].last_error.clone())
            .collect()
    };
    // The holder fails; after its 3 s lease the other takes it and finds the fleet's backoff.
    wait_until(
        "both instances to have failed",
        Duration::from_secs(20),
        || errors().len() == 2,
    );
    assert!(
        errors()
            .iter()
            .any(|e| e.contains("the fleet's latest order failed")),
        "{:?}",
        errors()
    );
    assert_eq!(
        new_orders(),
        1,
        "one order reached the CA: {:?}",
        ca.requests()
    );
    // The instance held back shares nothing: the fleet's backoff stays the failed order's.
    let shared = redis.cli(&["GET", "b:retry:backoff.fleet.test"]);
    assert!(shared.contains("failures=1"), "{shared}");
    assert!(
        !shared.contains("the fleet's latest order failed"),
        "{shared}"
    );
    for handle in handles {
        handle.stop();
    }
}
