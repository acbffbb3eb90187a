//! The real `certloop` binary against a real Pebble and a real upstream, checked with curl,
//! openssl and a rustls client. Each test starts its own Pebble on free ports.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

use common::{
    Certloop, certloop_command, curl, faketime_wrapper, manual_pair, open_tunnel, stdout, upstream,
};

use certloop_tests::conformance::fetch_verified;
use certloop_tests::pebble::{Pebble, free_port, wait_until};
use certloop_tests::upstream::REQUESTS_STARTED;

fn write_config(pebble: &Pebble, name: &str, body: &str) -> PathBuf {
    let path = pebble.scratch(&format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    std::fs::write(&path, body).expect("write config");
    path
}

fn acme_listener(pebble: &Pebble, name: &str, port: u16, domains: &[&str], extra: &str) -> String {
    let domains: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "[[listeners]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\nupstream = \"http://127.0.0.1:{}\"\n\
         tls_mode = \"acme\"\nacme_domains = [{}]\nacme_directory = \"{}\"\nacme_directory_ca = \"{}\"\n{extra}\n",
        upstream(),
        domains.join(", "),
        pebble.directory_url,
        pebble.directory_ca.display()
    )
}

/// A configuration with one ACME listener named `name` for `domain` on Pebble's TLS port.
fn single_listener_config(pebble: &Pebble, name: &str, domain: &str, extra: &str) -> PathBuf {
    let body = format!(
        "state_dir = \"{}\"\n{}",
        pebble.scratch("state").display(),
        acme_listener(pebble, name, pebble.tls_port, &[domain], extra)
    );
    write_config(pebble, name, &body)
}

#[test]
fn serves_verified_certificates_and_proxies() {
    let pebble = Pebble::start();
    let state = pebble.scratch("state");
    let http01_port = free_port();
    let down_port = free_port();
    let slow_port = free_port();
    let config = format!(
        "state_dir = \"{}\"\n[http]\nbind = \"127.0.0.1:{}\"\nhttps_port = {}\n{}{}{}{}",
        state.display(),
        pebble.http_port,
        pebble.tls_port,
        acme_listener(
            &pebble,
            "web",
            pebble.tls_port,
            &["web.certloop.test", "www.certloop.test"],
            ""
        ),
        acme_listener(
            &pebble,
            "api",
            http01_port,
            &["api.certloop.test"],
            "acme_challenge = \"http-01\""
        ),
        // Only one listener can own the port Pebble validates TLS-ALPN-01 on.
        acme_listener(
            &pebble,
            "down",
            down_port,
            &["down.certloop.test"],
            "acme_challenge = \"http-01\""
        )
        .replace(
            &format!("http://127.0.0.1:{}", upstream()),
            &format!("http://127.0.0.1:{}", free_port())
        ),
        acme_listener(
            &pebble,
            "slow",
            slow_port,
            &["slow.certloop.test"],
            "acme_challenge = \"http-01\"\nupstream_timeout = \"500ms\""
        ),
    );
    let config = write_config(&pebble, "proxy", &config);
    let mut proxy = Certloop::start(&config, &[], None);
    proxy.wait_ready();
    let root = pebble.scratch("root.pem");
    std::fs::write(&root, pebble.issuing_root_pem()).expect("root");
    let root = root.display().to_string();

    // The chain verifies for every name, on both listeners (TLS-ALPN-01 and HTTP-01).
    for (name, port) in [
        ("web.certloop.test", pebble.tls_port),
        ("www.certloop.test", pebble.tls_port),
        ("api.certloop.test", http01_port),
    ] {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let out = curl(&[
            "--cacert",
            &root,
            "--resolve",
            &resolve,
            &format!("https://{name}:{port}/check"),
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout(&out).starts_with("upstream saw GET /check"),
            "{}",
            stdout(&out)
        );
    }

    // Bodies reach the upstream and back; forwarding headers are set; ALPN negotiates h2.
    let resolve = format!("web.certloop.test:{}:127.0.0.1", pebble.tls_port);
    let url = format!("https://web.certloop.test:{}/upload?x=1", pebble.tls_port);
    let body = pebble.scratch("body.bin");
    std::fs::write(&body, "certloop ".repeat(20_000)).expect("body");
    let body = format!("@{}", body.display());
    let out = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &resolve,
        "--http2",
        "-w",
        "\nhttp_version=%{http_version}",
        "--data-binary",
        &body,
        &url,
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("upstream saw POST /upload?x=1") && text.contains("body-bytes: 180000"),
        "{text}"
    );
    assert!(
        text.contains("x-forwarded-proto: https") && text.contains("x-forwarded-for: 127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "x-forwarded-host: web.certloop.test:{}",
            pebble.tls_port
        )),
        "{text}"
    );
    assert!(text.ends_with("http_version=2"), "{text}");

    // TLS 1.1 is refused.
    let tls11 = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-connect",
            &format!("127.0.0.1:{}", pebble.tls_port),
        ])
        .args(["-servername", "web.certloop.test"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(
        !tls11.status.success(),
        "TLS 1.1 handshake succeeded:\n{}",
        stdout(&tls11)
    );

    // Port 80 redirects with 308, keeping host, path and query.
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: web.certloop.test",
        &format!("http://127.0.0.1:{}/a/b?c=d", pebble.http_port),
    ]);
    assert_eq!(
        stdout(&out),
        format!("308 https://web.certloop.test:{}/a/b?c=d", pebble.tls_port)
    );

    // A WebSocket-style upgrade passes through and echoes.
    let echoed = upgrade_echo(
        pebble.tls_port,
        "web.certloop.test",
        &pebble.issuing_root_pem(),
    );
    assert_eq!(echoed, "ping through the proxy");

    // An unreachable upstream is a 502, logged with the listener's name.
    let resolve_down = format!("down.certloop.test:{down_port}:127.0.0.1");
    let out = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &resolve_down,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://down.certloop.test:{down_port}/"),
    ]);
    assert_eq!(stdout(&out), "502");
    wait_until("the 502 to be logged", Duration::from_secs(5), || {
        proxy.log().contains("listener=down")
    });

    // An upstream slower than upstream_timeout is a 504.
    let resolve_slow = format!("slow.certloop.test:{slow_port}:127.0.0.1");
    let slow_url = format!("https://slow.certloop.test:{slow_port}/slow?ms=3000");
    let out = curl(&[
        "--cacert",
        &root,
        "--resolve",
        &resolve_slow,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &slow_url,
    ]);
    assert_eq!(stdout(&out), "504");
}

/// Sends an HTTP/1.1 upgrade through the proxy and echoes a message over the upgraded stream.
fn upgrade_echo(port: u16, name: &str, root_pem: &str) -> String {
    let mut tls = open_tunnel(port, name, root_pem);
    tls.write_all(b"ping through the proxy")
        .expect("write upgraded");
    let mut echoed = vec![0u8; "ping through the proxy".len()];
    tls.read_exact(&mut echoed).expect("echo");
    String::from_utf8(echoed).expect("utf8")
}

#[test]
fn restarts_warm_and_survives_a_ca_outage() {
    let mut pebble = Pebble::start();
    let config = single_listener_config(&pebble, "warm", "warm.certloop.test", "");
    let mut first = Certloop::start(&config, &[], None);
    first.wait_ready();
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(35)), 0);
    let orders = pebble.log().matches("POST /order-plz").count();

    // Warm cache: no new order.
    let mut second = Certloop::start(&config, &[], None);
    second.wait_ready();
    assert_eq!(
        pebble.log().matches("POST /order-plz").count(),
        orders,
        "no new order"
    );
    assert!(
        second.log().contains("serving cached certificate"),
        "{}",
        second.log()
    );
    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(35)), 0);

    // CA down, four years later (Pebble certificates last five): renewal is due and fails,
    // certloop still starts with the cached certificate and warns.
    pebble.stop_ca();
    let wrapper = faketime_wrapper("+4y");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut third = Certloop::start(&config, &[], Some(&wrapper));
    third.wait_ready();
    wait_until("a renewal warning", Duration::from_secs(30), || {
        third.log().contains("WARN") && third.log().contains("CA unreachable")
    });
    assert!(
        third.log().contains("serving current certificate"),
        "{}",
        third.log()
    );
}

#[test]
fn ca_down_at_first_start_exits_1_within_the_startup_timeout() {
    let mut pebble = Pebble::start();
    pebble.stop_ca();
    let config = single_listener_config(
        &pebble,
        "cold",
        "cold.certloop.test",
        "acme_startup_timeout = \"5s\"",
    );
    let started = Instant::now();
    let mut proxy = Certloop::start(&config, &["--log-format", "json"], None);
    assert_eq!(proxy.wait_exit(Duration::from_secs(20)), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let log = proxy.log();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("certloop: listener cold:")
            && last.contains("CA unreachable")
            && last.contains("restart"),
        "{last}"
    );
    // Every log line before the final message is a JSON object with a level.
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 1);
    for line in &lines[..lines.len() - 1] {
        assert!(
            line.starts_with('{') && line.contains("\"level\":"),
            "{line}"
        );
    }
}

#[test]
fn bad_configuration_exits_2_naming_file_line_and_key() {
    let pebble = Pebble::start();
    let body = format!(
        "{}colour = \"blue\"\n",
        acme_listener(&pebble, "web", free_port(), &["x.certloop.test"], "")
    );
    let config = write_config(&pebble, "bad", &body);
    for check in [true, false] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_certloop"));
        if check {
            command.arg("check");
        }
        let out = command.arg("--config").arg(&config).output().expect("run");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}:10", config.display())) && err.contains("colour"),
            "{err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_certloop"))
        .arg("--nonsense")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let pebble = Pebble::start();
    let config = single_listener_config(&pebble, "term", "term.certloop.test", "");
    let mut proxy = Certloop::start(&config, &[], None);
    proxy.wait_ready();
    let root = pebble.scratch("root.pem");
    std::fs::write(&root, pebble.issuing_root_pem()).expect("root");
    let before = REQUESTS_STARTED.load(Ordering::SeqCst);
    let (root_arg, port) = (root.display().to_string(), pebble.tls_port);
    let request = std::thread::spawn(move || {
        let resolve = format!("term.certloop.test:{port}:127.0.0.1");
        curl(&[
            "--http1.1",
            "-D",
            "-",
            "--cacert",
            &root_arg,
            "--resolve",
            &resolve,
            &format!("https://term.certloop.test:{port}/slow?ms=1500"),
        ])
    });
    wait_until(
        "the request to reach the upstream",
        Duration::from_secs(10),
        || REQUESTS_STARTED.load(Ordering::SeqCst) > before,
    );
    proxy.signal("TERM");
    let out = request.join().expect("request thread");
    let answer = stdout(&out);
    assert!(
        answer.contains("upstream saw GET /slow"),
        "in-flight request completed: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stop came while the upstream worked: the answer still tells the client to close.
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert_eq!(proxy.wait_exit(Duration::from_secs(35)), 0);
}

#[test]
fn manual_certificate_swapped_on_disk_is_served_after_sighup_or_a_file_change() {
    let pebble = Pebble::start();
    let dir = pebble.scratch("manual");
    std::fs::create_dir_all(&dir).expect("dir");
    let name = "internal.certloop.test";
    let (cert_a, key_a, ca_a) = manual_pair(&dir, "a", name);
    let (cert_b, key_b, ca_b) = manual_pair(&dir, "b", name);
    let live_cert = dir.join("live.pem");
    let live_key = dir.join("live.key");
    std::fs::copy(&cert_a, &live_cert).expect("copy");
    std::fs::copy(&key_a, &live_key).expect("copy");
    let port = free_port();
    let config = format!(
        "[[listeners]]\nname = \"internal\"\nbind = \"127.0.0.1:{port}\"\nupstream = \"http://127.0.0.1:{}\"\ntls_mode = \"manual\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        upstream(),
        live_cert.display(),
        live_key.display()
    );
    let config = write_config(&pebble, "manual", &config);
    let mut proxy = Certloop::start(&config, &[], None);
    proxy.wait_ready();
    fetch_verified(port, name, &ca_a).expect("serves A");
    // A mismatched pair (B's certificate, A's key) is refused; A stays.
    std::fs::copy(&cert_b, &live_cert).expect("copy");
    proxy.signal("HUP");
    wait_until("the refusal to be logged", Duration::from_secs(10), || {
        proxy.log().contains("refused")
    });
    fetch_verified(port, name, &ca_a).expect("still serves A");
    // The matching key arrives: B is served.
    std::fs::copy(&key_b, &live_key).expect("copy");
    proxy.signal("HUP");
    wait_until(
        "certificate B to be served",
        Duration::from_secs(10),
        || fetch_verified(port, name, &ca_b).is_ok(),
    );
    // Without a signal: changed files are noticed on their own (checked every 2 s).
    std::fs::copy(&cert_a, &live_cert).expect("copy");
    std::fs::copy(&key_a, &live_key).expect("copy");
    wait_until(
        "certificate A to be served again without SIGHUP",
        Duration::from_secs(15),
        || fetch_verified(port, name, &ca_a).is_ok(),
    );
}

/// Replaces the private key in a cached certificate file with a fresh, unrelated one.
fn swap_cached_key(path: &std::path::Path) {
    let bundle = std::fs::read_to_string(path).expect("cached certificate");
    let end = "-----END PRIVATE KEY-----\n";
    let split = bundle.find(end).expect("a PKCS#8 key first") + end.len();
    let other = rcgen::KeyPair::generate().expect("key").serialize_pem();
    std::fs::write(path, format!("{other}{}", &bundle[split..])).expect("write");
}

#[test]
fn a_cached_key_that_does_not_match_is_replaced_or_refused() {
    let mut pebble = Pebble::start();
    let name = "mismatch.certloop.test";
    let config = single_listener_config(&pebble, "mismatch", name, "acme_startup_timeout = \"5s\"");
    let mut first = Certloop::start(&config, &[], None);
    first.wait_ready();
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(35)), 0);
    let cache_dir = pebble.scratch("state").join("mismatch");
    let cached = cache_dir.join(certloop_acme::testing::cert_file_name(
        &[name.to_owned()],
        &pebble.directory_url,
    ));
    let set_aside = || {
        std::fs::read_dir(&cache_dir)
            .expect("cache dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".corrupt-"))
            .count()
    };

    // CA up: the mismatched file is set aside, a new certificate is ordered and served.
    swap_cached_key(&cached);
    let orders = pebble.log().matches("POST /order-plz").count();
    let mut second = Certloop::start(&config, &[], None);
    second.wait_ready();
    assert_eq!(pebble.log().matches("POST /order-plz").count(), orders + 1);
    assert_eq!(set_aside(), 1, "the mismatched file is kept aside");
    assert!(second.log().contains("does not match"), "{}", second.log());
    fetch_verified(pebble.tls_port, name, &pebble.issuing_root_pem())
        .expect("a verified certificate whose key matches is served");
    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(35)), 0);

    // CA down: a mismatched cache is no certificate at all, so certloop refuses to start and
    // says which file it set aside.
    swap_cached_key(&cached);
    pebble.stop_ca();
    let mut third = Certloop::start(&config, &[], None);
    assert_eq!(
        third.wait_exit(Duration::from_secs(30)),
        1,
        "{}",
        third.log()
    );
    let log = third.log();
    assert!(
        log.contains("does not match") && log.contains(&cached.display().to_string()),
        "{log}"
    );
    assert_eq!(set_aside(), 2);
}

#[test]
fn one_listener_serves_several_certificates_by_name() {
    let pebble = Pebble::start();
    let groups = "[[listeners.certificates]]\ndomains = [\"shop.certloop.test\"]\n\
                  [[listeners.certificates]]\ndomains = [\"blog.certloop.test\", \"www.blog.certloop.test\"]\n";
    let config = single_listener_config(&pebble, "multi", "main.certloop.test", groups);
    let mut proxy = Certloop::start(&config, &[], None);
    proxy.wait_ready();
    let root = pebble.issuing_root_pem();
    let mut serials = Vec::new();
    for name in [
        "main.certloop.test",
        "shop.certloop.test",
        "blog.certloop.test",
        "www.blog.certloop.test",
    ] {
        let (leaf, response) =
            fetch_verified(pebble.tls_port, name, &root).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(response.starts_with("HTTP/1.1 200"), "{name}: {response}");
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("leaf");
        serials.push(parsed.raw_serial().to_vec());
    }
    assert_eq!(
        pebble.log().matches("POST /order-plz").count(),
        3,
        "one order per certificate"
    );
    assert!(
        serials[0] != serials[1] && serials[1] != serials[2],
        "three certificates"
    );
    assert_eq!(
        serials[2], serials[3],
        "one certificate for both blog names"
    );
}

#[test]
fn a_wildcard_listener_gets_its_certificate_by_dns_01_through_knot() {
    let knot = certloop_tests::knot::Knot::start("certloop.test", "");
    let pebble = Pebble::start_with(&certloop_tests::pebble::PebbleOptions {
        dns_server: Some(knot.addr),
        ..Default::default()
    });
    let extra = format!(
        "acme_challenge = \"dns-01\"\nacme_dns_server = \"{}\"\nacme_dns_zone = \"{}\"\n\
         acme_dns_key_name = \"{}\"\nacme_dns_key_file = \"{}\"\n",
        knot.addr,
        knot.zone,
        knot.key_name,
        knot.key_file.display()
    );
    let body = format!(
        "state_dir = \"{}\"\n{}",
        pebble.scratch("state").display(),
        acme_listener(
            &pebble,
            "apps",
            pebble.tls_port,
            &["*.certloop.test", "certloop.test"],
            &extra
        )
    );
    let config = write_config(&pebble, "wildcard", &body);
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    let root = pebble.issuing_root_pem();
    for name in ["certloop.test", "shop.certloop.test"] {
        let (_, response) = fetch_verified(pebble.tls_port, name, &root)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", certloop.log()));
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let log = certloop.log();
    let secret = std::fs::read_to_string(&knot.key_file).expect("key");
    assert!(
        !log.contains(secret.trim()),
        "the TSIG secret never reaches the log"
    );
    assert!(knot.txt("_acme-challenge.certloop.test").is_empty());
    certloop.signal("TERM");
    assert_eq!(certloop.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn account_show_rollover_and_revoke_from_the_command_line() {
    let pebble = Pebble::start();
    let domain = "account.certloop.test";
    let config = single_listener_config(
        &pebble,
        "web",
        domain,
        "acme_contact = [\"mailto:ops@example.com\"]",
    );
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    let root = pebble.issuing_root_pem();
    let (first_leaf, _) = fetch_verified(pebble.tls_port, domain, &root).expect("served");
    // Show works while certloop runs; the others need the cache directory, and say so.
    let (code, shown) = certloop_command(&["account", "--listener", "web", "show"], &config);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("account   https://127.0.0.1:") && shown.contains("mailto:ops@example.com"),
        "{shown}"
    );
    let (code, busy) = certloop_command(&["account", "--listener", "web", "rollover"], &config);
    assert_eq!(code, 1, "{busy}");
    assert!(busy.contains("stop it"), "{busy}");
    let (code, unknown) = certloop_command(&["revoke", "--listener", "nope"], &config);
    assert_eq!(code, 2, "{unknown}");
    assert!(unknown.contains("there are: web"), "{unknown}");
    certloop.signal("TERM");
    assert_eq!(certloop.wait_exit(Duration::from_secs(10)), 0);
    let (code, rolled) = certloop_command(&["account", "--listener", "web", "rollover"], &config);
    assert_eq!(code, 0, "{rolled}");
    assert!(
        pebble.log().contains("/rollover-account-key"),
        "{}",
        pebble.log()
    );
    let (code, revoked) = certloop_command(
        &["revoke", "--listener", "web", "--reason", "keyCompromise"],
        &config,
    );
    assert_eq!(code, 0, "{revoked}");
    assert!(revoked.contains("revoked 1 certificate(s)"), "{revoked}");
    // The next start serves the replacement from the cache, without ordering again.
    let orders = pebble.log().matches("POST /order-plz").count();
    assert_eq!(orders, 2);
    let mut again = Certloop::start(&config, &[], None);
    again.wait_ready();
    let (leaf, _) = fetch_verified(pebble.tls_port, domain, &root).expect("served");
    assert_ne!(leaf, first_leaf, "the replacement is served");
    assert_eq!(pebble.log().matches("POST /order-plz").count(), orders);
    again.signal("TERM");
    assert_eq!(again.wait_exit(Duration::from_secs(10)), 0);
}
