//! The real binary against a CA that misbehaves: a fault-injecting proxy in front of Pebble
//! (`certloop_tests::fault_proxy`). For each fault, the failure table's row that applies: a first
//! start fails with a message that says what the CA did, without hammering it; a start with a
//! cached certificate serves it and warns (or renews, through a CA that is only slow); transient
//! faults do not stop a first start; kills, a full or read-only disk, clock jumps and SIGSTOP
//! never cost the served certificate.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use certloop_tests::conformance::fetch_verified;
use certloop_tests::fault_proxy::{Fault, FaultPlan, FaultProxy, Path};
use certloop_tests::pebble::Pebble;
use common::{Certloop, certloop_command, faketime_wrapper, upstream};

/// A configuration for one ACME listener through `proxy`. `startup` is `acme_startup_timeout`:
/// short where a start must fail, generous where it must succeed on a loaded machine.
fn config(pebble: &Pebble, proxy: &FaultProxy, name: &str, domain: &str, startup: &str) -> PathBuf {
    let body = format!(
        "state_dir = \"{}\"\n[[listeners]]\nname = \"{name}\"\nbind = \"127.0.0.1:{}\"\n\
         upstream = \"http://127.0.0.1:{}\"\ntls_mode = \"acme\"\nacme_domains = [\"{domain}\"]\n\
         acme_directory = \"{}\"\nacme_directory_ca = \"{}\"\nacme_startup_timeout = \"{startup}\"\n",
        pebble.scratch("state").display(),
        pebble.tls_port,
        upstream(),
        proxy.directory_url,
        pebble.directory_ca.display()
    );
    let path = pebble.scratch(&format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    std::fs::write(&path, body).expect("write config");
    path
}

fn status(status: u16, retry_after: Option<&str>, problem: Option<&'static str>) -> Fault {
    Fault::Status {
        status,
        retry_after: retry_after.map(str::to_owned),
        problem,
    }
}

/// Runs `check` once per case, each with its own Pebble and proxy, side by side.
fn each_case<C: Send + 'static>(cases: Vec<C>, check: impl Fn(C) + Send + Sync + Copy + 'static) {
    let threads: Vec<_> = cases
        .into_iter()
        .map(|case| std::thread::spawn(move || check(case)))
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().err())
        .map(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn a_first_start_against_a_failing_ca_exits_1_saying_what_the_ca_did() {
    let cases: Vec<(&str, Path, Fault, &str)> = vec![
        (
            "directory-503",
            Path::Directory,
            status(503, Some("120"), Some("serverInternal")),
            "HTTP 503",
        ),
        (
            "nonce-500",
            Path::Nonce,
            status(500, None, None),
            "HTTP 500",
        ),
        (
            "order-429",
            Path::NewOrder,
            status(
                429,
                Some("Wed, 21 Oct 2037 07:28:00 GMT"),
                Some("rateLimited"),
            ),
            "rateLimited",
        ),
        (
            "finalize-500",
            Path::Finalize,
            status(500, None, Some("serverInternal")),
            "HTTP 500",
        ),
        (
            "download-503",
            Path::Certificate,
            status(503, Some("120"), None),
            "HTTP 503",
        ),
        ("garbage", Path::All, Fault::Garbage, "could not be read"),
        ("stall", Path::Directory, Fault::Stall, "no response within"),
        // 5 s per request, longer than a 6 s startup timeout allows one request (2 s).
        (
            "slow",
            Path::All,
            Fault::Delay(Duration::from_secs(5)),
            "no response within",
        ),
        ("reset", Path::All, Fault::Reset, "CA unreachable"),
    ];
    each_case(cases, |(tag, path, fault, expected)| {
        let pebble = Pebble::start();
        let proxy = FaultProxy::start(&pebble);
        proxy.set(Some(FaultPlan {
            path,
            fault,
            times: None,
        }));
        let config = config(&pebble, &proxy, tag, &format!("{tag}.certloop.test"), "6s");
        let started = Instant::now();
        let mut certloop = Certloop::start(&config, &[], None);
        let code = certloop.wait_exit(Duration::from_secs(30));
        let log = certloop.log();
        let last = log.lines().last().unwrap_or_default();
        eprintln!("{tag}: {last}\n  requests: {:?}", proxy.requests());
        assert_eq!(code, 1, "{tag}: exit code\n{log}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{tag}: took {:?}",
            started.elapsed()
        );
        assert!(
            last.contains(&format!("listener {tag}")) && last.contains(expected),
            "{tag}: the last line should name the listener and say {expected:?}:\n{last}\n{log}"
        );
        // An answer from the CA is not retried within seconds: with Retry-After or a server
        // error it gets at most the first attempt and one retry within the startup timeout.
        if ["reset", "stall", "slow"].contains(&tag) {
            // The CA never answered: nothing was persisted against it, so once it is back a
            // restart orders at once instead of being refused by a backoff.
            proxy.set(None);
            let patient = pebble.scratch(&format!("{tag}.toml"));
            let text = std::fs::read_to_string(&patient).expect("config");
            std::fs::write(&patient, text.replace("\"6s\"", "\"30s\"")).expect("config");
            let mut again = Certloop::start(&patient, &[], None);
            again.wait_ready();
        } else {
            let orders = proxy
                .requests()
                .iter()
                .filter(|r| path == Path::All || path_of(r, path))
                .count();
            assert!(
                orders <= 4,
                "{tag}: {orders} faulted requests\n{:?}",
                proxy.requests()
            );
        }
    });
}

fn path_of(request: &str, path: Path) -> bool {
    let p = request.split(' ').nth(1).unwrap_or_default();
    match path {
        Path::Directory => p == "/dir",
        Path::Nonce => p.starts_with("/nonce-plz"),
        Path::NewOrder => p.starts_with("/order-plz"),
        Path::Finalize => p.starts_with("/finalize-order/"),
        Path::Certificate => p.starts_with("/certZ/"),
        Path::All => true,
    }
}

#[test]
fn transient_faults_do_not_stop_a_first_start() {
    let cases: Vec<(&str, FaultPlan)> = vec![
        (
            "bad-nonce",
            FaultPlan {
                path: Path::All,
                fault: Fault::BadNonceFirst,
                times: None,
            },
        ),
        (
            "slow-finalize",
            FaultPlan {
                path: Path::Finalize,
                // Within the 10 s a request gets under a 30 s startup timeout.
                fault: Fault::Delay(Duration::from_secs(5)),
                times: None,
            },
        ),
        (
            "reset-once",
            FaultPlan {
                path: Path::Directory,
                fault: Fault::Reset,
                times: Some(1),
            },
        ),
    ];
    each_case(cases, |(tag, plan)| {
        let pebble = Pebble::start();
        let proxy = FaultProxy::start(&pebble);
        proxy.set(Some(plan));
        let domain = format!("{tag}.certloop.test");
        let config = config(&pebble, &proxy, tag, &domain, "30s");
        let mut certloop = Certloop::start(&config, &[], None);
        certloop.wait_ready();
        assert!(proxy.faulted() > 0, "{tag}: no fault was injected");
        fetch_verified(pebble.tls_port, &domain, &pebble.issuing_root_pem())
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
    });
}

#[test]
fn with_a_cached_certificate_a_failing_ca_is_a_warning_and_a_slow_one_renews() {
    // (tag, fault, what the log must say, whether that is a warning). A CA that is slow but
    // answers within the per-request timeout is no fault: the renewal goes through.
    let cases: Vec<(&str, Fault, &str, bool)> = vec![
        (
            "cached-503",
            status(503, Some("300"), Some("serverInternal")),
            "HTTP 503",
            true,
        ),
        ("cached-stall", Fault::Stall, "no response within", true),
        ("cached-garbage", Fault::Garbage, "could not be read", true),
        ("cached-reset", Fault::Reset, "CA unreachable", true),
        (
            "cached-slow",
            Fault::Delay(Duration::from_secs(5)),
            "renewed certificate installed",
            false,
        ),
    ];
    each_case(cases, |(tag, fault, expected, warns)| {
        let pebble = Pebble::start();
        let proxy = FaultProxy::start(&pebble);
        let domain = format!("{tag}.certloop.test");
        let config = config(&pebble, &proxy, tag, &domain, "30s");
        let mut first = Certloop::start(&config, &[], None);
        first.wait_ready();
        first.signal("TERM");
        assert_eq!(first.wait_exit(Duration::from_secs(35)), 0);
        // Four years on, the cached certificate is due for renewal and the CA misbehaves.
        proxy.set(Some(FaultPlan {
            path: Path::All,
            fault,
            times: None,
        }));
        let wrapper = faketime_wrapper("+4y");
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let mut second = Certloop::start(&config, &[], Some(&wrapper));
        second.wait_ready();
        certloop_tests::pebble::wait_until(
            &format!("{tag}: {expected:?} in the log"),
            Duration::from_secs(120),
            || second.log().contains(expected) && (!warns || second.log().contains("WARN")),
        );
        assert!(
            warns || !second.log().contains("WARN"),
            "{tag}: a slow CA is no fault\n{}",
            second.log()
        );
        fetch_verified(pebble.tls_port, &domain, &pebble.issuing_root_pem())
            .unwrap_or_else(|e| panic!("{tag}: still serving: {e}"));
    });
}

#[test]
fn kill_9_at_random_moments_never_leaves_anything_corrupt_served_or_behind() {
    // 30-second certificates: renewals happen during the run as well as first issuance.
    let pebble = Pebble::start_with(&certloop_tests::pebble::PebbleOptions {
        validity_secs: Some(30),
        ..Default::default()
    });
    let proxy = FaultProxy::start(&pebble);
    let domain = "crash.certloop.test";
    let config = config(&pebble, &proxy, "crash", domain, "30s");
    let cache_dir = pebble.scratch("state").join("crash");
    let root = pebble.issuing_root_pem();
    let leftovers = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.contains(".tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // A fixed sequence of kill moments (a small LCG), so a failure reproduces.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next_delay = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        Duration::from_millis((state >> 33) % 700)
    };
    // Most kills are tied to issuance: those starts run 15 s ahead, so a certificate they find
    // is due for renewal or expired once it is 5 s old (while one they get is not due at once:
    // renewal starts with 10 s to 13 s left), and they are killed 0 to 35 ms after the proxy
    // received their first, second or third issuance step (new order, finalize, certificate
    // download): around the pending-order record written just before finalize, the finalize
    // itself, or the certificate write and the record's removal after the download. The rest
    // land at random moments of a start on the real clock.
    let steps = [Path::NewOrder, Path::Finalize, Path::Certificate];
    let step_of = |request: &String| steps.iter().position(|&p| path_of(request, p));
    let mut killed_after = [0usize; 3];
    let ahead = faketime_wrapper("+15");
    let ahead: Vec<&str> = ahead.iter().map(String::as_str).collect();
    for iteration in 0..50 {
        let seen = proxy.requests().len();
        let tied = iteration % 5 != 4 && iteration % 4 != 0;
        let mut certloop = Certloop::start(&config, &[], tied.then_some(&ahead[..]));
        if iteration % 5 == 4 {
            // Every fifth start: it must come up and serve a valid certificate whose key
            // matches, with no temp file left by the kills before.
            certloop.wait_ready();
            fetch_verified(pebble.tls_port, domain, &root)
                .unwrap_or_else(|e| panic!("iteration {iteration}: {e}\n{}", certloop.log()));
            let left = leftovers(&cache_dir);
            assert!(left.is_empty(), "iteration {iteration}: {left:?}");
        }
        let delay = next_delay();
        if tied {
            let nth = iteration % 4 - 1;
            let received = || proxy.requests()[seen..].iter().filter_map(step_of).nth(nth);
            let deadline = Instant::now() + Duration::from_secs(8);
            while received().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some(step) = received() {
                killed_after[step] += 1;
                std::thread::sleep(delay / 20);
            }
        } else {
            std::thread::sleep(delay);
        }
        drop(certloop); // SIGKILL
    }
    eprintln!("kills after new order, finalize, certificate download: {killed_after:?}");
    assert!(
        killed_after.iter().sum::<usize>() >= 12 && killed_after.iter().all(|&n| n >= 2),
        "too few kills landed on issuance steps: {killed_after:?}"
    );
    let mut last = Certloop::start(&config, &[], None);
    last.wait_ready();
    fetch_verified(pebble.tls_port, domain, &root).expect("serves after 50 kills");
    assert!(leftovers(&cache_dir).is_empty());
    assert!(!last.log().contains("ERROR"), "{}", last.log());
}

/// A small tmpfs mounted on `dir` (the tests run as root, as CI does), unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Self(dir.to_owned())
    }

    /// Fills the disk; returns the filler, whose removal frees the space again.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl SmallDisk {
    /// Makes the disk read-only for new opens by mounting a read-only view of it over
    /// itself (a plain `remount,ro` is refused while certloop holds its lock file open).
    fn remount_read_only(&self) {
        for args in [&["--bind"][..], &["-o", "remount,bind,ro"][..]] {
            let status = std::process::Command::new("mount")
                .args(args)
                .arg(&self.0)
                .arg(&self.0)
                .status()
                .expect("mount");
            assert!(status.success(), "mount {args:?}");
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Every mount stacked on the directory (the read-only view, then the tmpfs).
        while std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
        {}
    }
}

#[test]
fn a_full_disk_at_renewal_keeps_the_renewed_certificate_served_and_warns() {
    let pebble = Pebble::start_with(&certloop_tests::pebble::PebbleOptions {
        validity_secs: Some(20),
        ..Default::default()
    });
    let proxy = FaultProxy::start(&pebble);
    let disk = SmallDisk::mount(&pebble.scratch("state").join("full"), "1m");
    let domain = "full.certloop.test";
    let config = config(&pebble, &proxy, "full", domain, "30s");
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    let (first, _) = fetch_verified(pebble.tls_port, domain, &pebble.issuing_root_pem())
        .expect("first certificate");
    let _filler = disk.fill();
    // The 20-second certificate is renewed after about 13 s; storing it fails.
    certloop_tests::pebble::wait_until("the cache write to fail", Duration::from_secs(40), || {
        certloop.log().contains("could not write certificate cache")
    });
    let log = certloop.log();
    let line = log
        .lines()
        .find(|l| l.contains("could not write certificate cache"))
        .unwrap_or_default();
    assert!(
        line.contains("WARN")
            && line.contains("No space left on device")
            && line.contains("retrying at"),
        "{line}"
    );
    let (renewed, _) = fetch_verified(pebble.tls_port, domain, &pebble.issuing_root_pem())
        .expect("the renewed certificate is served although it could not be stored");
    assert_ne!(first, renewed, "the renewal is installed");
    assert!(
        certloop.child.try_wait().expect("wait").is_none(),
        "still running"
    );
}

#[test]
fn a_process_stopped_past_its_renewal_time_renews_soon_after_it_continues() {
    let pebble = Pebble::start_with(&certloop_tests::pebble::PebbleOptions {
        validity_secs: Some(20),
        ..Default::default()
    });
    let proxy = FaultProxy::start(&pebble);
    let domain = "stopped.certloop.test";
    let config = config(&pebble, &proxy, "stopped", domain, "30s");
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    let root = pebble.issuing_root_pem();
    let (first, _) = fetch_verified(pebble.tls_port, domain, &root).expect("first certificate");
    let orders = proxy
        .requests()
        .iter()
        .filter(|r| r.contains("/order-plz"))
        .count();
    // Stopped through the renewal point (about 13 s into the 20 s lifetime).
    certloop.signal("STOP");
    std::thread::sleep(Duration::from_secs(15));
    certloop.signal("CONT");
    let continued = Instant::now();
    certloop_tests::pebble::wait_until(
        "a renewed certificate after SIGCONT",
        Duration::from_secs(60),
        || fetch_verified(pebble.tls_port, domain, &root).is_ok_and(|(served, _)| served != first),
    );
    eprintln!("renewed {:?} after SIGCONT", continued.elapsed());
    assert!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.contains("/order-plz"))
            .count()
            > orders,
        "a new order was placed"
    );
}

#[test]
fn a_certificate_download_that_fails_after_finalize_collects_the_same_order() {
    let pebble = Pebble::start();
    let proxy = FaultProxy::start(&pebble);
    // The first two downloads fail as a reset connection, after the order was finalized.
    proxy.set(Some(FaultPlan {
        path: Path::Certificate,
        fault: Fault::Reset,
        times: Some(2),
    }));
    let domain = "finalized.certloop.test";
    let config = config(&pebble, &proxy, "finalized", domain, "30s");
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    fetch_verified(pebble.tls_port, domain, &pebble.issuing_root_pem()).expect("served");
    let requests = proxy.requests();
    let count = |prefix: &str| requests.iter().filter(|r| r.contains(prefix)).count();
    assert_eq!(proxy.faulted(), 2, "{requests:?}");
    assert_eq!(
        count("/order-plz"),
        1,
        "one order, collected after the failures: {requests:?}"
    );
    assert_eq!(count("/finalize-order/"), 1, "{requests:?}");
    assert!(
        certloop
            .log()
            .contains("collecting the certificate of an order finalized earlier")
    );
    let cache = pebble.scratch("state").join("finalized");
    let leftover = std::fs::read_dir(&cache)
        .expect("cache")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .any(|n| n.ends_with(".pending-order"));
    assert!(
        !leftover,
        "the pending-order record is removed once collected"
    );
}

#[test]
fn a_pending_order_whose_certificate_is_already_served_is_dropped_not_counted_as_a_failure() {
    // A kill after the certificate was stored but before the pending-order record was removed
    // leaves a record of an order whose certificate is the one served. The next renewal must
    // drop the record and order anew, not take the same certificate back as a CA failure
    // (that failure, persisted, once kept a later start from starting at all).
    let pebble = Pebble::start();
    let proxy = FaultProxy::start(&pebble);
    let domain = "stored.certloop.test";
    let config = config(&pebble, &proxy, "stored", domain, "30s");
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    let root = pebble.issuing_root_pem();
    let (first, _) = fetch_verified(pebble.tls_port, domain, &root).expect("first certificate");
    let issued = std::time::SystemTime::now();
    drop(certloop); // SIGKILL
    let finalize = proxy
        .requests()
        .into_iter()
        .find(|r| path_of(r, Path::Finalize))
        .expect("a finalize request");
    let order_id = finalize
        .split(' ')
        .nth(1)
        .and_then(|p| p.strip_prefix("/finalize-order/"))
        .expect("order id")
        .to_owned();
    let cache_dir = pebble.scratch("state").join("stored");
    let cert_file =
        certloop_acme::testing::cert_file_name(&[domain.to_owned()], &proxy.directory_url);
    let bundle = std::fs::read_to_string(cache_dir.join(&cert_file)).expect("cached certificate");
    let key_start = bundle
        .find("-----BEGIN PRIVATE KEY-----")
        .expect("key in the bundle");
    let key_end = bundle.find("-----END PRIVATE KEY-----").expect("key end") + 25;
    let order_url = proxy
        .directory_url
        .replace("/dir", &format!("/my-order/{order_id}"));
    let record =
        serde_json::json!({ "order_url": order_url, "key_pem": &bundle[key_start..key_end] });
    let record_path = cache_dir.join(format!("{cert_file}.pending-order"));
    std::fs::write(&record_path, record.to_string()).expect("record");
    // Pebble states validity to the second: a renewal issued within the second of the first
    // certificate would end at the same second, and be refused as no newer.
    certloop_tests::pebble::wait_until(
        "the clock past the first certificate's second",
        Duration::from_secs(5),
        || std::time::SystemTime::now() >= issued + Duration::from_millis(1100),
    );
    // Four years on (the certificate lasts five): renewal is due at start.
    let ahead = faketime_wrapper("+4y");
    let ahead: Vec<&str> = ahead.iter().map(String::as_str).collect();
    let mut renewed = Certloop::start(&config, &[], Some(&ahead));
    renewed.wait_ready();
    certloop_tests::pebble::wait_until("a renewed certificate", Duration::from_secs(60), || {
        fetch_verified(pebble.tls_port, domain, &root).is_ok_and(|(c, _)| c != first)
    });
    let log = renewed.log();
    assert!(log.contains("already served; ordering anew"), "{log}");
    assert!(!log.contains("unusable certificate"), "{log}");
    assert!(!record_path.exists(), "the record is removed");
}

#[test]
fn the_wall_clock_jumping_forward_and_back_at_runtime() {
    let pebble = Pebble::start();
    let proxy = FaultProxy::start(&pebble);
    let domain = "clock.certloop.test";
    let config = config(&pebble, &proxy, "clock", domain, "30s");
    let offset = pebble.scratch("faketime-offset");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let wrapper = common::faketime_file_wrapper(&offset);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut certloop = Certloop::start(&config, &[], Some(&wrapper));
    certloop.wait_ready();
    let root = pebble.issuing_root_pem();
    let (first, _) = fetch_verified(pebble.tls_port, domain, &root).expect("first certificate");
    // Four years later (the certificate lasts five): renewal is due, and the driver, which
    // never sleeps more than a minute without reading the clock, notices.
    std::fs::write(&offset, "+4y\n").expect("offset file");
    let jumped = Instant::now();
    certloop_tests::pebble::wait_until(
        "a renewal after the clock jumped forward",
        Duration::from_secs(90),
        || fetch_verified(pebble.tls_port, domain, &root).is_ok_and(|(c, _)| c != first),
    );
    eprintln!("renewed {:?} after the jump", jumped.elapsed());
    // Back to the present: the renewed certificate is still valid and still served.
    std::fs::write(&offset, "+0\n").expect("offset file");
    let (after, _) = fetch_verified(pebble.tls_port, domain, &root).expect("served");
    assert_ne!(after, first);
    assert!(
        certloop.child.try_wait().expect("wait").is_none(),
        "{}",
        certloop.log()
    );
}

#[test]
fn a_cache_directory_that_turns_read_only_keeps_the_renewed_certificate_served() {
    let pebble = Pebble::start_with(&certloop_tests::pebble::PebbleOptions {
        validity_secs: Some(20),
        ..Default::default()
    });
    let proxy = FaultProxy::start(&pebble);
    let disk = SmallDisk::mount(&pebble.scratch("state").join("readonly"), "4m");
    let domain = "readonly.certloop.test";
    let config = config(&pebble, &proxy, "readonly", domain, "30s");
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    let root = pebble.issuing_root_pem();
    let (first, _) = fetch_verified(pebble.tls_port, domain, &root).expect("first certificate");
    disk.remount_read_only();
    certloop_tests::pebble::wait_until("the cache write to fail", Duration::from_secs(40), || {
        certloop.log().contains("could not write certificate cache")
    });
    assert!(
        certloop.log().contains("Read-only file system"),
        "{}",
        certloop.log()
    );
    let (renewed, _) = fetch_verified(pebble.tls_port, domain, &root).expect("still serving");
    assert_ne!(first, renewed, "the renewal is installed");
}

#[test]
fn a_read_only_cache_directory_at_start_serves_what_it_holds_and_warns() {
    let pebble = Pebble::start();
    let proxy = FaultProxy::start(&pebble);
    let disk = SmallDisk::mount(&pebble.scratch("state").join("rostart"), "4m");
    let domain = "rostart.certloop.test";
    let config = config(&pebble, &proxy, "rostart", domain, "10s");
    let root = pebble.issuing_root_pem();
    let mut first_run = Certloop::start(&config, &[], None);
    first_run.wait_ready();
    let (issued, _) = fetch_verified(pebble.tls_port, domain, &root).expect("issued");
    first_run.signal("TERM");
    assert_eq!(first_run.wait_exit(Duration::from_secs(10)), 0);
    // The directory turns read-only, and the CA cannot be reached: the failure table's
    // "cached certificate, CA unreachable" row, with nothing writable.
    disk.remount_read_only();
    proxy.set(Some(FaultPlan {
        path: Path::All,
        fault: Fault::Reset,
        times: None,
    }));
    let mut second_run = Certloop::start(&config, &[], None);
    second_run.wait_ready();
    let (served, _) = fetch_verified(pebble.tls_port, domain, &root).expect("served from cache");
    assert_eq!(served, issued, "the cached certificate");
    let log = second_run.log();
    assert!(
        log.contains("is not writable") && log.contains("Read-only file system"),
        "{log}"
    );
}

#[test]
fn a_finalize_whose_answer_is_lost_is_collected_without_finalizing_again() {
    let pebble = Pebble::start();
    let proxy = FaultProxy::start(&pebble);
    // Pebble finalizes the order, but certloop never hears back.
    proxy.set(Some(FaultPlan {
        path: Path::Finalize,
        fault: Fault::LoseAnswer,
        times: Some(1),
    }));
    let domain = "lost.certloop.test";
    let config = config(&pebble, &proxy, "lost", domain, "30s");
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    fetch_verified(pebble.tls_port, domain, &pebble.issuing_root_pem()).expect("served");
    let requests = proxy.requests();
    let count = |prefix: &str| requests.iter().filter(|r| r.contains(prefix)).count();
    assert_eq!(proxy.faulted(), 1, "{requests:?}");
    assert_eq!(count("/order-plz"), 1, "no second order: {requests:?}");
    assert_eq!(
        count("/finalize-order/"),
        1,
        "no second finalize: {requests:?}"
    );
}

#[test]
fn a_start_refused_by_a_persisted_backoff_says_how_to_order_at_once() {
    let pebble = Pebble::start();
    let proxy = FaultProxy::start(&pebble);
    let domain = "backoff.certloop.test";
    let config = config(&pebble, &proxy, "backoff", domain, "6s");
    // The CA answers the order with an error: the backoff is persisted past the startup
    // timeout, and the start fails.
    proxy.set(Some(FaultPlan {
        path: Path::NewOrder,
        fault: status(500, None, Some("serverInternal")),
        times: None,
    }));
    let mut first = Certloop::start(&config, &[], None);
    assert_eq!(
        first.wait_exit(Duration::from_secs(30)),
        1,
        "{}",
        first.log()
    );
    // The cause is fixed, but a plain restart is still refused, without asking the CA, and
    // says until when, why, and what to do.
    proxy.set(None);
    let asked = proxy.requests().len();
    let mut second = Certloop::start(&config, &[], None);
    assert_eq!(second.wait_exit(Duration::from_secs(30)), 1);
    let last = second.log().lines().last().unwrap_or_default().to_owned();
    for wanted in ["not allowed before", "HTTP 500", "--retry-now"] {
        assert!(last.contains(wanted), "{wanted:?} missing: {last}");
    }
    let orders_meanwhile = proxy.requests()[asked..]
        .iter()
        .filter(|r| path_of(r, Path::NewOrder))
        .count();
    assert_eq!(
        orders_meanwhile, 0,
        "the backoff must keep the CA out of it"
    );
    // --retry-now orders at once and serves.
    let mut third = Certloop::start(&config, &["--retry-now"], None);
    third.wait_ready();
    assert!(
        third.log().contains("ordering at once as asked"),
        "{}",
        third.log()
    );
    fetch_verified(pebble.tls_port, domain, &pebble.issuing_root_pem()).expect("served");
}

#[test]
fn an_acme_profile_the_ca_lacks_exits_2_naming_the_listener_and_what_it_offers() {
    let pebble = Pebble::start();
    let proxy = FaultProxy::start(&pebble);
    proxy.offer_profiles(&["classic", "tlsserver"]);
    let config = config(&pebble, &proxy, "short", "profile.certloop.test", "20s");
    let text =
        std::fs::read_to_string(&config).expect("config") + "acme_profile = \"shortlived\"\n";
    std::fs::write(&config, text).expect("config");
    let mut certloop = Certloop::start(&config, &[], None);
    assert_eq!(
        certloop.wait_exit(Duration::from_secs(30)),
        2,
        "{}",
        certloop.log()
    );
    let last = certloop.log().lines().last().unwrap_or_default().to_owned();
    for wanted in [
        "listener short",
        "\"shortlived\"",
        "it offers: classic, tlsserver",
    ] {
        assert!(last.contains(wanted), "{wanted:?} missing: {last}");
    }
    assert!(proxy.new_orders().is_empty(), "nothing was ordered");
    // Offered: the order asks for it, and the listener serves.
    proxy.offer_profiles(&["classic", "shortlived"]);
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    let root = pebble.issuing_root_pem();
    fetch_verified(pebble.tls_port, "profile.certloop.test", &root).expect("served");
    let sent = proxy.new_orders();
    assert!(
        !sent.is_empty() && sent.iter().all(|order| order["profile"] == "shortlived"),
        "{sent:?}"
    );
}

#[test]
fn with_the_preferred_ca_down_the_fallback_issuer_issues_and_a_restart_serves_its_certificate() {
    let mut preferred = Pebble::start();
    let fallback = Pebble::start_with(&certloop_tests::pebble::PebbleOptions {
        validation_ports: Some((preferred.tls_port, preferred.http_port)),
        ..Default::default()
    });
    preferred.stop_ca();
    let domain = "fallback.certloop.test";
    let config = preferred.scratch("fallback.toml");
    let body = format!(
        "state_dir = \"{}\"\n[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:{}\"\n\
         upstream = \"http://127.0.0.1:{}\"\ntls_mode = \"acme\"\nacme_domains = [\"{domain}\"]\n\
         acme_startup_timeout = \"20s\"\n\
         [[listeners.acme_issuers]]\ndirectory = \"{}\"\ndirectory_ca = \"{}\"\n\
         contact = [\"mailto:ops@example.com\"]\n\
         [[listeners.acme_issuers]]\ndirectory = \"{}\"\ndirectory_ca = \"{}\"\n",
        preferred.scratch("state").display(),
        preferred.tls_port,
        upstream(),
        preferred.directory_url,
        preferred.directory_ca.display(),
        fallback.directory_url,
        fallback.directory_ca.display(),
    );
    std::fs::write(&config, body).expect("config");
    let mut first = Certloop::start(&config, &[], None);
    first.wait_ready();
    let root = fallback.issuing_root_pem();
    fetch_verified(preferred.tls_port, domain, &root).expect("issued by the fallback");
    let log = first.log();
    assert!(
        log.contains("issuer 1 failed the order") && log.contains("ordering from issuer 2"),
        "{log}"
    );
    let (code, json) = certloop_command(&["status", "--json"], &config);
    assert_eq!(code, 0, "{json}");
    assert!(
        json.contains(&format!("\"issued_by\": \"{}\"", fallback.directory_url)),
        "{json}"
    );
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(10)), 0);
    // A restart serves the fallback's certificate from its cache file, without ordering.
    let orders_before = fallback.log().matches("POST /order-plz").count();
    let mut second = Certloop::start(&config, &[], None);
    second.wait_ready();
    fetch_verified(preferred.tls_port, domain, &root).expect("served after the restart");
    assert_eq!(
        fallback.log().matches("POST /order-plz").count(),
        orders_before
    );
    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(10)), 0);
}
