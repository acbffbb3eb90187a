//! One conformance suite, run unchanged against both runtime adapters and a real Pebble.
//! Each scenario starts its own Pebble on free ports.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use certloop_acme::testing::DirStore;
use certloop_acme::{
    AcmeConfig, AcmeHandle, ChallengeKind, Directory, KeyType, LifecycleEvent, StartError,
};
use certloop_core::{Policy, Ratio};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::pebble::{Pebble, PebbleOptions, free_port, wait_until};

/// What the suite needs from a runtime adapter.
pub trait Adapter {
    /// For messages.
    const NAME: &'static str;
    /// Runs `future` to completion on this runtime.
    fn block_on<T>(&self, future: impl Future<Output = T>) -> T;
    /// The adapter's `launch`.
    fn launch(&self, config: AcmeConfig) -> Result<AcmeHandle, StartError>;
    /// Serves HTTPS on `ip:port` with `handle`'s settings, in the background.
    fn serve_tls_at(&self, ip: &str, port: u16, handle: &AcmeHandle);
    /// Runs the adapter's port-80 responder on `ip:port`, in the background.
    fn serve_http01_at(&self, ip: &str, port: u16, handle: &AcmeHandle);
    /// Serves HTTPS on `127.0.0.1:port` with `handle`'s settings, in the background.
    fn serve_tls(&self, port: u16, handle: &AcmeHandle) {
        self.serve_tls_at("127.0.0.1", port, handle);
    }
    /// Runs the adapter's port-80 responder on `127.0.0.1:port`, in the background.
    fn serve_http01(&self, port: u16, handle: &AcmeHandle) {
        self.serve_http01_at("127.0.0.1", port, handle);
    }
}

fn config(pebble: &Pebble, names: &[&str], cache: &Path) -> AcmeConfig {
    AcmeConfig::new(names.iter().copied(), cache)
        .directory_url(&pebble.directory_url)
        .contact("mailto:ops@example.com")
        .extra_roots_pem(&pebble.directory_ca)
}

fn orders(pebble: &Pebble) -> usize {
    pebble.log().matches("POST /order-plz").count()
}

/// Starts, serves TLS and waits for readiness.
fn start_serving<A: Adapter>(
    a: &A,
    pebble: &Pebble,
    config: AcmeConfig,
) -> Result<AcmeHandle, StartError> {
    let handle = a.launch(config)?;
    a.serve_tls(pebble.tls_port, &handle);
    a.block_on(handle.ready())?;
    Ok(handle)
}

/// Collects `handle`'s lifecycle events (history first) until one satisfies `wanted`.
fn wait_for_event<A: Adapter>(
    a: &A,
    handle: &AcmeHandle,
    within: Duration,
    wanted: impl Fn(&LifecycleEvent) -> bool,
) -> Vec<LifecycleEvent> {
    let events = handle.subscribe();
    let mut seen = Vec::new();
    let deadline = Instant::now() + within;
    while !seen.iter().any(&wanted) {
        assert!(
            Instant::now() < deadline,
            "no matching lifecycle event within {within:?}: {seen:?}"
        );
        seen.extend(
            a.block_on(crate::pebble::within(Duration::from_secs(1), events.next()))
                .flatten(),
        );
    }
    seen
}

/// Drops a handle and waits until its driver released the cache directory's lock.
fn stop(handle: AcmeHandle, cache: &Path) {
    handle.stop();
    wait_until(
        "the cache directory lock to be released",
        Duration::from_secs(10),
        || DirStore::open(cache).is_ok(),
    );
}

/// Connects as a client trusting only `root_pem`, with SNI `name`: the handshake verifies the
/// served chain for that name. Returns the leaf and the response to `GET /`.
pub fn fetch_verified(
    port: u16,
    name: &str,
    root_pem: &str,
) -> Result<(CertificateDer<'static>, String), String> {
    fetch_verified_at("127.0.0.1", port, name, root_pem)
}

/// [`fetch_verified`] from the server at `ip`.
pub fn fetch_verified_at(
    ip: &str,
    port: u16,
    name: &str,
    root_pem: &str,
) -> Result<(CertificateDer<'static>, String), String> {
    let config = crate::client_config(root_pem, b"http/1.1")?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect((ip, port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response);
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no certificate served")?;
    Ok((leaf.into_owned(), response))
}

/// TLS-ALPN-01 for a certificate with several names; each name verifies against Pebble's root.
pub fn issues_with_tls_alpn_01_for_several_names<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let cache = pebble.scratch("cache");
    let names = ["a.certloop.test", "b.certloop.test", "c.certloop.test"];
    let handle = start_serving(a, &pebble, config(&pebble, &names, &cache))
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", A::NAME, pebble.log()));
    let root = pebble.issuing_root_pem();
    let mut leaf = None;
    for name in names {
        let (served, response) =
            fetch_verified(pebble.tls_port, name, &root).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        leaf = Some(served);
    }
    assert_eq!(orders(&pebble), 1);
    // The status describes the certificate clients are served.
    let leaf = leaf.expect("fetched");
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("leaf");
    let status = handle.status();
    let served = status[0].served.as_ref().expect("served in the status");
    let serial: String = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(served.serial, serial, "{status:?}");
    let not_after = u64::try_from(parsed.validity().not_after.timestamp()).expect("after 1970");
    assert_eq!(served.not_after.as_millis(), not_after * 1000);
    assert_eq!(served.key_type, "ecdsa-p256");
    assert!(served.issuer.contains("Pebble"), "{}", served.issuer);
    assert_eq!(status[0].orders.issued, 1);
    assert_eq!((status[0].failures, status[0].ordering), (0, false));
    assert!(status[0].renew_at.is_some_and(|at| at < served.not_after));
    let durations = handle.acme_request_durations();
    let timed = |op: certloop_acme::AcmeOperation| {
        durations
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(0, |(_, h)| h.count)
    };
    assert_eq!(timed(certloop_acme::AcmeOperation::NewOrder), 1);
    assert_eq!(timed(certloop_acme::AcmeOperation::Finalize), 1);
    assert_eq!(
        timed(certloop_acme::AcmeOperation::Challenge),
        names.len() as u64
    );
}

/// HTTP-01 through the adapter's ready-made port-80 responder.
pub fn issues_with_http_01<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let cache = pebble.scratch("cache");
    let config = config(&pebble, &["http.certloop.test"], &cache).challenge(ChallengeKind::Http01);
    let handle = a.launch(config).expect("launch");
    a.serve_http01(pebble.http_port, &handle);
    // Nothing listens on the TLS port until the certificate is issued: only HTTP-01 can pass.
    a.block_on(handle.ready())
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", A::NAME, pebble.log()));
    a.serve_tls(pebble.tls_port, &handle);
    fetch_verified(
        pebble.tls_port,
        "http.certloop.test",
        &pebble.issuing_root_pem(),
    )
    .expect("verified chain");
    assert!(
        handle
            .http01_tokens()
            .answer_path("/.well-known/acme-challenge/x")
            .is_none()
    );
}

/// A restart with a cached certificate serves it without a new order or a new account.
pub fn restart_with_cache_makes_no_new_order<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let cache = pebble.scratch("cache");
    let names = ["restart.certloop.test"];
    let first = start_serving(a, &pebble, config(&pebble, &names, &cache)).expect("first start");
    let root = pebble.issuing_root_pem();
    let (leaf_before, _) = fetch_verified(pebble.tls_port, names[0], &root).expect("first serve");
    stop(first, &cache);
    let (orders_before, accounts_before) = (
        orders(&pebble),
        pebble.log().matches("POST /sign-me-up").count(),
    );
    let tls_port = free_port();
    let handle = a
        .launch(config(&pebble, &names, &cache))
        .expect("second launch");
    a.serve_tls(tls_port, &handle);
    a.block_on(handle.ready()).expect("second start");
    let (leaf_after, _) = fetch_verified(tls_port, names[0], &root).expect("second serve");
    assert_eq!(leaf_before, leaf_after, "the cached certificate is served");
    assert_eq!(orders(&pebble), orders_before, "no new order");
    assert_eq!(
        pebble.log().matches("POST /sign-me-up").count(),
        accounts_before,
        "no new account"
    );
}

/// With the CA down, a restart serves the cached certificate and warns about the failed
/// renewal (the policy makes renewal due at once).
pub fn restart_with_ca_down_serves_cached_and_warns<A: Adapter>(a: &A) {
    // Two-minute certificates, renewed when 99% remains: renewal is due a second after issue.
    let mut pebble = Pebble::start_with(&PebbleOptions {
        validity_secs: Some(120),
        ..Default::default()
    });
    let cache = pebble.scratch("cache");
    let names = ["down.certloop.test"];
    let first = start_serving(a, &pebble, config(&pebble, &names, &cache)).expect("first start");
    let root = pebble.issuing_root_pem();
    stop(first, &cache);
    pebble.stop_ca();
    let policy = Policy {
        short_lived_renew_when_remaining: Ratio::new(99, 100),
        ..Policy::default()
    };
    let handle = a
        .launch(config(&pebble, &names, &cache).policy(policy))
        .expect("launch with CA down");
    let tls_port = free_port();
    a.serve_tls(tls_port, &handle);
    a.block_on(handle.ready())
        .expect("starts with the cached certificate");
    fetch_verified(tls_port, names[0], &root).expect("cached certificate served");
    let seen = wait_for_event(
        a,
        &handle,
        Duration::from_secs(60),
        |e| matches!(e, LifecycleEvent::RenewalFailed { error, expired: false, .. } if error.contains("CA unreachable")),
    );
    assert!(
        matches!(seen.first(), Some(LifecycleEvent::Loaded { .. })),
        "{seen:?}"
    );
}

/// First start with the CA down fails within the startup bound, naming domain and directory.
pub fn first_start_ca_down_fails_within_bound<A: Adapter>(a: &A) {
    let mut pebble = Pebble::start();
    pebble.stop_ca();
    let cache = pebble.scratch("cache");
    let policy = Policy {
        startup_timeout: Duration::from_secs(5),
        ..Policy::default()
    };
    let started = Instant::now();
    let handle = a
        .launch(config(&pebble, &["first.certloop.test"], &cache).policy(policy))
        .expect("launch");
    let error = a
        .block_on(handle.ready())
        .expect_err("must not start without a certificate");
    let elapsed = started.elapsed();
    assert!(
        elapsed <= Duration::from_secs(7),
        "failed after {elapsed:?}"
    );
    let message = error.to_string();
    for part in [
        "first.certloop.test",
        &pebble.directory_url,
        "CA unreachable",
        "attempts",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

/// A corrupt certificate file is moved aside (kept) and a fresh order replaces it.
pub fn corrupt_cache_is_set_aside_and_reordered<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let cache = pebble.scratch("cache");
    let names = vec!["corrupt.certloop.test".to_owned()];
    std::fs::create_dir_all(&cache).expect("cache dir");
    let path = cache.join(certloop_acme::testing::cert_file_name(
        &names,
        &pebble.directory_url,
    ));
    std::fs::write(&path, b"-----BEGIN PRIVATE KEY-----\ngarbage\n").expect("write corrupt file");
    let _handle = start_serving(
        a,
        &pebble,
        config(&pebble, &["corrupt.certloop.test"], &cache),
    )
    .expect("start");
    wait_until(
        "the new certificate to be stored",
        Duration::from_secs(10),
        || std::fs::read(&path).is_ok_and(|b| certloop_acme::testing::decode_cert_file(&b).is_ok()),
    );
    let aside: Vec<String> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(cache.join(&aside[0])).expect("kept"),
        b"-----BEGIN PRIVATE KEY-----\ngarbage\n"
    );
    assert_eq!(orders(&pebble), 1, "a fresh order replaced it");
}

/// `production`, `staging` and URLs select the right directory.
pub fn directory_selection<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    for (given, url) in [
        (
            "production",
            certloop_acme::LETS_ENCRYPT_PRODUCTION.to_owned(),
        ),
        ("staging", certloop_acme::LETS_ENCRYPT_STAGING.to_owned()),
        (pebble.directory_url.as_str(), pebble.directory_url.clone()),
    ] {
        let cache = pebble.scratch(&format!("cache-{}", free_port()));
        let config = AcmeConfig::new(["dir.certloop.test"], &cache)
            .directory(Directory::parse(given).expect("valid directory"));
        let handle = a.launch(config).expect("launch");
        assert_eq!(handle.directory_url(), url);
        stop(handle, &cache);
    }
}

/// A cache written in rustls-acme's format (key PEM, newline, chain PEM, under its file name)
/// is adopted without an order: the CA is down when certloop starts on it.
pub fn adopts_rustls_acme_cache<A: Adapter>(a: &A) {
    let mut pebble = Pebble::start();
    let names = ["adopt.certloop.test"];
    let issuing = pebble.scratch("issuing");
    let first = start_serving(a, &pebble, config(&pebble, &names, &issuing)).expect("issue");
    stop(first, &issuing);
    let issued_file = std::fs::read_dir(&issuing)
        .expect("cache")
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name().to_string_lossy().starts_with("cached_cert_")
                && !e.file_name().to_string_lossy().contains('.')
        })
        .expect("certificate file");
    let decoded =
        certloop_acme::testing::decode_cert_file(&std::fs::read(issued_file.path()).expect("read"))
            .expect("decode");
    let fixture = crate::rustls_acme_fixture::cert_file(&decoded);
    let adopted = pebble.scratch("adopted");
    crate::rustls_acme_fixture::write(&adopted, &names, &pebble.directory_url, &fixture);
    let root = pebble.issuing_root_pem();
    pebble.stop_ca();
    let handle = a.launch(config(&pebble, &names, &adopted)).expect("launch");
    let tls_port = free_port();
    a.serve_tls(tls_port, &handle);
    a.block_on(handle.ready()).expect("adopted without the CA");
    let (leaf, _) = fetch_verified(tls_port, names[0], &root).expect("served");
    assert_eq!(leaf, decoded.chain[0]);
    drop(handle);
}

/// Short-lived certificates are renewed before they expire, and the renewed one is served.
pub fn renews_before_expiry<A: Adapter>(a: &A) {
    let pebble = Pebble::start_with(&PebbleOptions {
        validity_secs: Some(15),
        ..Default::default()
    });
    let cache = pebble.scratch("cache");
    let names = ["renew.certloop.test"];
    let handle = start_serving(a, &pebble, config(&pebble, &names, &cache)).expect("start");
    let root = pebble.issuing_root_pem();
    let (first_leaf, _) = fetch_verified(pebble.tls_port, names[0], &root).expect("served");
    let seen = wait_for_event(a, &handle, Duration::from_secs(30), |e| {
        matches!(e, LifecycleEvent::Renewed { .. })
    });
    assert!(
        seen.iter()
            .any(|e| matches!(e, LifecycleEvent::Expiring { .. })),
        "{seen:?}"
    );
    let (renewed_leaf, _) =
        fetch_verified(pebble.tls_port, names[0], &root).expect("served after renewal");
    assert_ne!(
        first_leaf, renewed_leaf,
        "the renewed certificate is served"
    );
}

/// Several certificates behind one listener: SNI selects the right one for each name.
pub fn sni_selects_among_certificates<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let cache = pebble.scratch("cache");
    let config = config(&pebble, &["one.certloop.test"], &cache)
        .certificate(["two.certloop.test", "www.two.certloop.test"]);
    let _handle = start_serving(a, &pebble, config).expect("start");
    let root = pebble.issuing_root_pem();
    let (one, _) = fetch_verified(pebble.tls_port, "one.certloop.test", &root).expect("one");
    let (two, _) = fetch_verified(pebble.tls_port, "www.two.certloop.test", &root).expect("two");
    assert_ne!(one, two, "each name gets its own certificate");
    assert_eq!(orders(&pebble), 2);
}

/// External Account Binding: a CA that requires it accepts the account when it is configured,
/// and the error names the CA's problem when it is not.
pub fn external_account_binding<A: Adapter>(a: &A) {
    let (kid, key) = (
        "kid-1",
        "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    );
    let pebble = Pebble::start_with(&PebbleOptions {
        eab: Some((kid.into(), key.into())),
        ..Default::default()
    });
    let without = pebble.scratch("without");
    let policy = Policy {
        startup_timeout: Duration::from_secs(5),
        ..Policy::default()
    };
    let handle = a
        .launch(config(&pebble, &["eab.certloop.test"], &without).policy(policy))
        .expect("launch");
    let error = a.block_on(handle.ready()).expect_err("the CA requires EAB");
    assert!(
        error.to_string().contains("externalAccountRequired"),
        "{error}"
    );
    drop(handle);
    let with = pebble.scratch("with");
    let config = config(&pebble, &["eab.certloop.test"], &with).eab(kid, key);
    let _handle =
        start_serving(a, &pebble, config).unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
}

/// An unusable cache directory is reported at start, with its path.
pub fn unwritable_cache_dir_is_reported<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let file = pebble.scratch("not-a-directory");
    std::fs::write(&file, b"x").expect("write");
    let error = a
        .launch(config(&pebble, &["dir.certloop.test"], &file))
        .expect_err("must fail");
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
}

/// With room for one order at a time, three certificates are ordered one after the other: no
/// new order reaches the CA before the previous one was finalized (against the fault proxy,
/// which logs requests in arrival order and slows each finalization down so that a second
/// order would have overtaken it).
pub fn orders_beyond_the_limit_wait_their_turn<A: Adapter>(a: &A) {
    use crate::fault_proxy::{Fault, FaultPlan, FaultProxy, Path as CaPath};
    let pebble = Pebble::start();
    let proxy = FaultProxy::start(&pebble);
    proxy.set(Some(FaultPlan {
        path: CaPath::Finalize,
        fault: Fault::Delay(Duration::from_millis(300)),
        times: None,
    }));
    let cache = pebble.scratch("cache");
    let config = config(&pebble, &["one.certloop.test"], &cache)
        .certificate(["two.certloop.test"])
        .certificate(["three.certloop.test"])
        .directory_url(&proxy.directory_url)
        .max_concurrent_orders(1);
    let handle = start_serving(a, &pebble, config)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", A::NAME, pebble.log()));
    let steps: Vec<&str> = (proxy.requests().iter())
        .filter_map(|r| {
            if r.contains("/order-plz") {
                Some("order")
            } else if r.contains("/finalize-order/") {
                Some("finalize")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        steps,
        [
            "order", "finalize", "order", "finalize", "order", "finalize"
        ],
        "{}: {:?}",
        A::NAME,
        proxy.requests()
    );
    handle.stop();
    let refused = a.launch(
        self::config(&pebble, &["one.certloop.test"], &pebble.scratch("other"))
            .max_concurrent_orders(0),
    );
    match refused {
        Err(StartError::Config { field, .. }) => assert_eq!(field, "max_concurrent_orders"),
        other => panic!("a limit of 0 was accepted: {:?}", other.err()),
    }
}

/// A CA whose ARI window has opened triggers a renewal at once, ordered with `replaces`
/// (against a fake directory in front of Pebble, which has no ARI).
pub fn ari_window_triggers_a_renewal<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let ari = crate::ari_directory::AriDirectory::start(&pebble);
    let cache = pebble.scratch("cache");
    let config = AcmeConfig::new(["ari.certloop.test"], &cache)
        .directory(Directory::Url(ari.url.clone()))
        .extra_roots_pem(&pebble.directory_ca);
    let handle =
        start_serving(a, &pebble, config).unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    wait_for_event(a, &handle, Duration::from_secs(30), |e| {
        matches!(e, LifecycleEvent::Renewed { .. })
    });
    // Pebble 2.4 ignores `replaces`, so the runner orders once more without it.
    assert!(orders(&pebble) >= 2, "one order, then a renewal");
    let asked = ari.asked.lock().expect("lock").clone();
    assert!(!asked.is_empty(), "renewal information was fetched");
    wait_until(
        "the renewed certificate to be asked about",
        Duration::from_secs(10),
        || {
            ari.asked
                .lock()
                .expect("lock")
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                >= 2
        },
    );
}

/// An ACME profile the CA does not offer fails the launch, naming what it offers; one it
/// offers is sent with every new order (against the fault proxy, which adds profiles to
/// Pebble's directory).
pub fn profile_is_checked_at_launch_and_sent_with_orders<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let proxy = crate::fault_proxy::FaultProxy::start(&pebble);
    proxy.offer_profiles(&["classic", "shortlived"]);
    let cache = pebble.scratch("cache");
    let names = ["profile.certloop.test"];
    let through_proxy = |profile: &str| {
        config(&pebble, &names, &cache)
            .directory_url(&proxy.directory_url)
            .profile(profile)
    };
    match a.launch(through_proxy("tlsserver")) {
        Err(StartError::Config { field, problem }) => {
            assert_eq!(field, "profile");
            assert!(
                problem.contains("\"tlsserver\"") && problem.contains("classic, shortlived"),
                "{problem}"
            );
        }
        other => panic!("a profile the CA lacks was accepted: {:?}", other.err()),
    }
    assert_eq!(orders(&pebble), 0, "nothing was ordered");
    let handle = start_serving(a, &pebble, through_proxy("shortlived"))
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", A::NAME, pebble.log()));
    fetch_verified(pebble.tls_port, names[0], &pebble.issuing_root_pem()).expect("served");
    let sent = proxy.new_orders();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["profile"], "shortlived", "{sent:?}");
    drop(handle);
}

/// Every key type is generated, issued by Pebble, served and reported.
pub fn key_types_are_issued_and_served<A: Adapter>(a: &A) {
    // RSA 4096 only differs from 2048 in its size; it costs seconds to generate.
    for key_type in [KeyType::EcdsaP384, KeyType::Rsa2048] {
        // A Pebble each: the adapter's TLS server keeps Pebble's validation port.
        let pebble = Pebble::start();
        let root = pebble.issuing_root_pem();
        let name = format!("{key_type}.certloop.test");
        let cache = pebble.scratch(key_type.name());
        let config = config(&pebble, &[name.as_str()], &cache).key_type(key_type);
        let handle = start_serving(a, &pebble, config)
            .unwrap_or_else(|e| panic!("{}: {key_type}: {e}\n{}", A::NAME, pebble.log()));
        let (leaf, _) = fetch_verified(pebble.tls_port, &name, &root).expect("verified");
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("leaf");
        let served_key = match parsed.public_key().parsed().expect("public key") {
            x509_parser::public_key::PublicKey::EC(point) => format!("ecdsa-p{}", point.key_size()),
            x509_parser::public_key::PublicKey::RSA(rsa) => format!("rsa-{}", rsa.key_size()),
            other => panic!("unexpected key {other:?}"),
        };
        assert_eq!(served_key, key_type.name());
        let status = handle.status();
        assert_eq!(
            status[0].served.as_ref().expect("served").key_type,
            key_type.name()
        );
        stop(handle, &cache);
    }
}

/// An IP address certificate (RFC 8738) with each challenge: ordered as an `ip` identifier,
/// validated on the address (TLS-ALPN-01 with the reverse-DNS name as SNI), and served to a
/// client that sends no SNI (as clients of an address do) alongside a DNS-named certificate.
pub fn issues_ip_address_certificates<A: Adapter>(a: &A) {
    for challenge in [ChallengeKind::TlsAlpn01, ChallengeKind::Http01] {
        let pebble = Pebble::start();
        let cache = pebble.scratch("cache");
        let config = config(&pebble, &["name.certloop.test"], &cache)
            .certificate(["127.0.0.1"])
            .challenge(challenge);
        let handle = a.launch(config).expect("launch");
        a.serve_http01(pebble.http_port, &handle);
        a.serve_tls(pebble.tls_port, &handle);
        a.block_on(handle.ready())
            .unwrap_or_else(|e| panic!("{}: {challenge:?}: {e}\n{}", A::NAME, pebble.log()));
        let root = pebble.issuing_root_pem();
        // A client of 127.0.0.1 verifies the address against an iPAddress entry, sends no SNI.
        let (leaf, response) = fetch_verified(pebble.tls_port, "127.0.0.1", &root)
            .unwrap_or_else(|e| panic!("{challenge:?}: {e}"));
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("leaf");
        let san = parsed
            .subject_alternative_name()
            .expect("SAN")
            .expect("SAN");
        assert!(
            matches!(
                san.value.general_names.as_slice(),
                [x509_parser::extensions::GeneralName::IPAddress([
                    127, 0, 0, 1
                ])]
            ),
            "{:?}",
            san.value
        );
        fetch_verified(pebble.tls_port, "name.certloop.test", &root).expect("the DNS name");
        let status = handle.status();
        assert_eq!(
            status[1].served.as_ref().expect("served").names,
            ["127.0.0.1"]
        );
        assert_eq!(orders(&pebble), 2);
        assert!(
            pebble.log().contains("127.0.0.1"),
            "Pebble validated the address"
        );
    }
}

/// Issuer fallback: the preferred CA answers errors, so the fallback issues (and the status
/// says so); once the preferred CA recovers, the renewal comes from it again. Two Pebbles
/// validating on the same ports; the preferred one behind the fault proxy.
pub fn falls_back_to_the_next_issuer_and_renews_from_the_preferred_one<A: Adapter>(a: &A) {
    let preferred = Pebble::start();
    let fallback = Pebble::start_with(&PebbleOptions {
        validity_secs: Some(16),
        validation_ports: Some((preferred.tls_port, preferred.http_port)),
        ..Default::default()
    });
    let proxy = crate::fault_proxy::FaultProxy::start(&preferred);
    proxy.set(Some(crate::fault_proxy::FaultPlan {
        path: crate::fault_proxy::Path::All,
        fault: crate::fault_proxy::Fault::Status {
            status: 503,
            retry_after: None,
            problem: Some("serverInternal"),
        },
        times: None,
    }));
    let cache = preferred.scratch("cache");
    let names = ["fallback.certloop.test"];
    let config = config(&preferred, &names, &cache)
        .directory_url(&proxy.directory_url)
        .extra_roots_pem(&fallback.directory_ca)
        .fallback_issuer(
            certloop_acme::Issuer::new(Directory::Url(fallback.directory_url.clone()))
                .contact("mailto:ops@example.com"),
        );
    let handle = start_serving(a, &preferred, config)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", A::NAME, fallback.log()));
    fetch_verified(preferred.tls_port, names[0], &fallback.issuing_root_pem())
        .expect("issued by the fallback");
    assert_eq!((orders(&preferred), orders(&fallback)), (0, 1));
    let status = handle.status();
    assert_eq!(
        status[0].issued_by.as_deref(),
        Some(fallback.directory_url.as_str())
    );
    assert_eq!(status[0].orders.server_error, 1, "{:?}", status[0].orders);
    // The preferred CA recovers: the renewal (due within seconds) is its.
    proxy.set(None);
    wait_for_event(a, &handle, Duration::from_secs(40), |e| {
        matches!(e, LifecycleEvent::Renewed { .. })
    });
    fetch_verified(preferred.tls_port, names[0], &preferred.issuing_root_pem())
        .expect("renewed by the preferred CA");
    assert_eq!(orders(&preferred), 1);
    assert_eq!(
        handle.status()[0].issued_by.as_deref(),
        Some(proxy.directory_url.as_str())
    );
}

/// DNS-01 through a real authoritative server (knot), for a wildcard and its parent: the
/// records are published by signed dynamic updates, seen on every authoritative server before
/// the CA looks, and removed afterwards; any name under the wildcard gets the certificate. A
/// zone with an authoritative server that never answers fails with a clear error in time.
pub fn dns_01_issues_a_wildcard_certificate_through_knot<A: Adapter>(a: &A) {
    let knot = crate::knot::Knot::start("certloop.test", "");
    let pebble = Pebble::start_with(&PebbleOptions {
        dns_server: Some(knot.addr),
        ..Default::default()
    });
    let cache = pebble.scratch("cache");
    let settings =
        certloop_acme::Rfc2136Settings::new(knot.addr, &knot.zone, &knot.key_name, &knot.key_file);
    let names = ["*.certloop.test", "certloop.test"];
    let wildcard = config(&pebble, &names, &cache).dns01_rfc2136(settings);
    let handle = start_serving(a, &pebble, wildcard)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}\n{}", A::NAME, pebble.log(), knot.log()));
    let root = pebble.issuing_root_pem();
    for name in [
        "certloop.test",
        "www.certloop.test",
        "anything.certloop.test",
    ] {
        fetch_verified(pebble.tls_port, name, &root).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(
        knot.txt("_acme-challenge.certloop.test").is_empty(),
        "the records are removed once the order ends"
    );
    assert!(knot.log().contains("DDNS"), "updates went through knot");
    drop(handle);
    // An authoritative server that never answers: the order fails, saying which and why.
    let broken = crate::knot::Knot::start("certloop.test", "@ NS ns2.elsewhere.invalid.");
    let cache = pebble.scratch("cache-broken");
    let settings = certloop_acme::Rfc2136Settings {
        propagation_timeout: Duration::from_secs(2),
        ..certloop_acme::Rfc2136Settings::new(
            broken.addr,
            &broken.zone,
            &broken.key_name,
            &broken.key_file,
        )
    };
    let policy = Policy {
        startup_timeout: Duration::from_secs(10),
        ..Policy::default()
    };
    let never = config(&pebble, &["never.certloop.test"], &cache)
        .dns01_rfc2136(settings)
        .policy(policy);
    match a.launch(never).map(|handle| a.block_on(handle.ready())) {
        Ok(Err(StartError::NoCertificate { reason, .. })) => assert!(
            reason.contains("did not reach every authoritative server within 2s")
                && reason.contains("ns2.elsewhere.invalid"),
            "{reason}"
        ),
        other => panic!("started without a visible record: {other:?}"),
    }
    assert!(
        broken.txt("_acme-challenge.never.certloop.test").is_empty(),
        "removed"
    );
}

/// The account: shown from the cache, its key rolled over (the old key kept aside only until
/// the new one is confirmed), and a revocation that orders the replacement at once, signed
/// with the new key.
pub fn account_rollover_and_revocation<A: Adapter>(a: &A) {
    let pebble = Pebble::start();
    let cache = pebble.scratch("cache");
    let names = ["revoke.certloop.test"];
    let handle = start_serving(a, &pebble, config(&pebble, &names, &cache))
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", A::NAME, pebble.log()));
    let shown = a.block_on(handle.account()).expect("account");
    assert!(shown.url.starts_with("https://127.0.0.1:"), "{shown:?}");
    assert_eq!(shown.contacts, ["mailto:ops@example.com"]);
    assert_eq!(shown.key_type, "ecdsa-p256");
    let key_files = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&cache)
            .expect("cache")
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("cached_account_")
            })
            .map(|e| {
                let bytes = std::fs::read(e.path()).expect("read");
                (e.file_name().to_string_lossy().into_owned(), bytes)
            })
            .collect();
        files.sort();
        files
    };
    let before = key_files();
    let rolled = a.block_on(handle.rollover_account_key()).expect("rollover");
    assert_eq!(rolled.url, shown.url, "the same account");
    let after = key_files();
    assert_eq!(
        before.iter().map(|f| &f.0).collect::<Vec<_>>(),
        after.iter().map(|f| &f.0).collect::<Vec<_>>(),
        "the previous key was removed once the new one was confirmed"
    );
    assert_ne!(before, after, "a new key is stored");
    assert!(
        pebble.log().contains("/rollover-account-key"),
        "{}",
        pebble.log()
    );
    let root = pebble.issuing_root_pem();
    let (revoked_leaf, _) = fetch_verified(pebble.tls_port, names[0], &root).expect("served");
    let events = handle.subscribe();
    let revoked = a.block_on(handle.revoke(certloop_acme::RevocationReason::KeyCompromise));
    assert_eq!(revoked, Ok(1));
    assert!(pebble.log().contains("/revoke-cert"), "{}", pebble.log());
    let set_aside = std::fs::read_dir(&cache)
        .expect("cache")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".revoked-"));
    assert!(
        set_aside,
        "no later start may serve the revoked certificate"
    );
    drop(events);
    wait_for_event(a, &handle, Duration::from_secs(30), |e| {
        matches!(e, LifecycleEvent::Renewed { .. })
    });
    let (replacement, _) = fetch_verified(pebble.tls_port, names[0], &root).expect("served");
    assert_ne!(replacement, revoked_leaf, "the replacement is served");
    assert_eq!(orders(&pebble), 2, "ordered with the new account key");
}

/// Fleet mode on this runtime: two instances sharing a Redis, on 127.0.0.2 and 127.0.0.3, the
/// name resolving to the second. One order for both, both serve the certificate, and the
/// validation is answered by whichever instance it reaches.
pub fn a_fleet_of_two_orders_once<A: Adapter>(a: &A) {
    let redis = crate::redis_server::RedisServer::start();
    let pebble = Pebble::start_with(&PebbleOptions {
        validation_ports: Some((free_port(), free_port())),
        ..Default::default()
    });
    let name = "two.fleet.test";
    pebble.resolve(name, "127.0.0.3");
    let fleet = certloop_acme::RedisSettings::new(redis.url());
    let handles: Vec<AcmeHandle> = ["127.0.0.2", "127.0.0.3"]
        .into_iter()
        .map(|ip| {
            let cache = pebble.scratch(&format!("cache-{ip}"));
            let config = config(&pebble, &[name], &cache).fleet_redis(fleet.clone());
            let handle = a
                .launch(config)
                .unwrap_or_else(|e| panic!("{}: {e}", A::NAME));
            a.serve_tls_at(ip, pebble.tls_port, &handle);
            handle
        })
        .collect();
    for handle in &handles {
        a.block_on(handle.ready())
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", A::NAME, pebble.log()));
    }
    assert_eq!(orders(&pebble), 1, "one order for the fleet");
    let root = pebble.issuing_root_pem();
    let served: Vec<_> = ["127.0.0.2", "127.0.0.3"]
        .into_iter()
        .map(|ip| {
            fetch_verified_at(ip, pebble.tls_port, name, &root)
                .expect("served")
                .0
        })
        .collect();
    assert_eq!(served[0], served[1], "the same certificate on both");
}
