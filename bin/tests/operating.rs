//! What an operator sees, against the real binary and Pebble: the admin listener's metrics
//! (checked against the certificate clients are served), health and readiness (before the
//! first certificate and after an expiry), the status page rendered in a real headless
//! Chromium, and `certloop status` from the running process and from disk.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Certloop, curl, stdout, upstream};

use certloop_tests::conformance::fetch_verified;
use certloop_tests::pebble::{Pebble, free_port, wait_until};

/// `GET http://127.0.0.1:port{path}`: the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let out = curl(&[
        "-w",
        "\n%{http_code}",
        &format!("http://127.0.0.1:{port}{path}"),
    ]);
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of the metric line that starts with `series` (name and labels).
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The first line of the access log at `path`, once one is there.
fn logged_line(path: &Path) -> String {
    let mut line = String::new();
    wait_until("an access log line", Duration::from_secs(10), || {
        line = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        !line.is_empty()
    });
    line
}

/// `certloop status --config PATH [extra]`: its stdout and stderr.
fn status_command(config: &Path, extra: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_certloop"))
        .arg("status")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .expect("run certloop status");
    assert!(out.status.success(), "{out:?}");
    (
        stdout(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs headless Chromium with `args` in its own process group, killed whole if it outlives
/// `within` (and after it exits, so no helper process stays behind). Returns its stdout.
fn chromium(args: &[&str], profile: &Path, within: Duration) -> String {
    let out_file = profile.with_extension("stdout");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(std::fs::File::create(&out_file).expect("stdout file"))
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromium (Debian package chromium): run scripts/setup.sh");
    let group = child.id();
    let deadline = Instant::now() + within;
    let exited = loop {
        if child.try_wait().expect("wait").is_some() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    assert!(exited, "chromium did not finish within {within:?}");
    std::fs::read_to_string(&out_file).unwrap_or_default()
}

#[test]
fn metrics_health_status_page_and_status_command_report_what_is_served() {
    let pebble = Pebble::start();
    let admin = free_port();
    let offset = pebble.scratch("faketime-offset");
    std::fs::create_dir_all(offset.parent().expect("dir")).expect("dir");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let config = pebble.scratch("operating.toml");
    let access_log = pebble.scratch("access.log");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[admin]\nbind = \"127.0.0.1:{admin}\"\n\
             [access_log]\npath = \"{}\"\n\
             [[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:{}\"\nupstream = \"http://127.0.0.1:{}\"\n\
             tls_mode = \"acme\"\nacme_domains = [\"web.certloop.test\", \"www.certloop.test\"]\n\
             acme_directory = \"{}\"\nacme_directory_ca = \"{}\"\n",
            pebble.scratch("state").display(),
            access_log.display(),
            pebble.tls_port,
            upstream(),
            pebble.directory_url,
            pebble.directory_ca.display()
        ),
    )
    .expect("config");
    let wrapper = common::faketime_file_wrapper(&offset);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut certloop = Certloop::start(&config, &[], Some(&wrapper));
    certloop.wait_ready();

    // A proxied request, verified against Pebble's root; its leaf is what the figures describe.
    let root = pebble.issuing_root_pem();
    let (leaf, response) =
        fetch_verified(pebble.tls_port, "web.certloop.test", &root).expect("served");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("leaf");
    let not_after = parsed.validity().not_after.timestamp();
    let serial: String = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();

    // Its access log line, then another in a new file after a rotation and SIGUSR1.
    let line = logged_line(&access_log);
    for field in [
        "\"listener\":\"web\"",
        "\"status\":200",
        "\"host\":\"web.certloop.test\"",
        "\"method\":\"GET\"",
        "\"tls\":\"TLSv1.3\"",
        "\"alpn\":\"http/1.1\"",
        "\"client\":\"127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert!(entry["bytes_out"].as_u64().is_some_and(|n| n > 0), "{line}");
    assert!(entry["upstream_ms"].as_f64().is_some() && entry["duration_ms"].as_f64().is_some());
    std::fs::rename(&access_log, access_log.with_extension("log.1")).expect("rotate");
    certloop.signal("USR1");
    wait_until("the access log reopened", Duration::from_secs(10), || {
        certloop.log().contains("access log reopened")
    });
    fetch_verified(pebble.tls_port, "www.certloop.test", &root).expect("served");
    assert!(logged_line(&access_log).contains("\"host\":\"www.certloop.test\""));

    assert_eq!(get(admin, "/healthz"), (200, "ok\n".to_owned()));
    let (code, ready) = get(admin, "/readyz");
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("\"ready\":true"), "{ready}");

    let (code, metrics) = get(admin, "/metrics");
    assert_eq!(code, 200);
    let cert = "{listener=\"web\",cert=\"web.certloop.test\"}";
    assert_eq!(
        metric(&metrics, &format!("certloop_cert_not_after_seconds{cert}")),
        Some(not_after as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, &format!("certloop_cert_expired{cert}")),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("certloop_cert_renewal_failures_consecutive{cert}")
        ),
        Some(0.0)
    );
    let next = metric(
        &metrics,
        &format!("certloop_cert_next_renewal_seconds{cert}"),
    )
    .expect("next renewal");
    assert!(next < not_after as f64, "renews before it expires: {next}");
    assert!(
        metrics.lines().any(|l| l.starts_with("certloop_cert_info{")
            && l.contains(&format!("serial=\"{serial}\""))
            && l.contains("key_type=\"ecdsa-p256\"")
            && l.contains("issuer=\"Pebble Intermediate")),
        "{metrics}"
    );
    let orders = "certloop_acme_orders_total{listener=\"web\",cert=\"web.certloop.test\"";
    assert_eq!(
        metric(&metrics, &format!("{orders},result=\"issued\"}}")),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, &format!("{orders},result=\"unreachable\"}}")),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "certloop_acme_request_duration_seconds_count{listener=\"web\",operation=\"new_order\"}"
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &metrics,
            "certloop_tls_handshakes_total{listener=\"web\",result=\"ok\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "certloop_http_requests_total{listener=\"web\",code_class=\"2xx\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "certloop_upstream_duration_seconds_count{listener=\"web\"}"
        ),
        Some(2.0)
    );

    // The status page, rendered by a real browser: one row per certificate, with the serial.
    let page = format!("http://127.0.0.1:{admin}/");
    let dom = chromium(
        &["--dump-dom", &page],
        &pebble.scratch("chromium-dom"),
        Duration::from_secs(60),
    );
    assert_eq!(
        dom.matches("<tr class=\"cert\" data-listener=\"web\">")
            .count(),
        1,
        "{dom}"
    );
    assert!(dom.contains(&serial) && dom.contains("web.certloop.test, www.certloop.test"));
    assert!(dom.contains("<svg class=\"timeline\""), "{dom}");
    let screenshot = pebble.scratch("status-page.png");
    chromium(
        &[
            "--window-size=1400,420",
            "--hide-scrollbars",
            &format!("--screenshot={}", screenshot.display()),
            &page,
        ],
        &pebble.scratch("chromium-shot"),
        Duration::from_secs(60),
    );
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("CERTLOOP_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).expect("copy the screenshot");
    }

    // `certloop status` from the running process, then (stopped) from the cache directory.
    let (table, from) = status_command(&config, &[]);
    assert!(from.contains("from the running process"), "{from}");
    let expiry = certloop_core::UnixTime::from_secs(not_after as u64).to_string();
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web ") && l.contains(&expiry)),
        "{table}"
    );
    let (json, _) = status_command(&config, &["--json"]);
    assert!(
        json.contains(&format!("\"serial\": \"{serial}\"")),
        "{json}"
    );

    // Six years later (Pebble's certificates last five): expired, still served, not ready.
    std::fs::write(&offset, "+6y\n").expect("offset file");
    let (code, ready) = get(admin, "/readyz");
    assert_eq!(code, 503, "{ready}");
    assert!(
        ready.contains("\"listener\":\"web\"") && ready.contains("expired at"),
        "{ready}"
    );
    let (_, metrics) = get(admin, "/metrics");
    assert_eq!(
        metric(&metrics, &format!("certloop_cert_expired{cert}")),
        Some(1.0)
    );
    std::fs::write(&offset, "+0\n").expect("offset file");

    certloop.signal("TERM");
    assert_eq!(
        certloop.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        certloop.log()
    );
    let (table, from) = status_command(&config, &[]);
    assert!(from.contains("reading the cache directories"), "{from}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web ") && l.contains(&expiry)),
        "{table}"
    );
}

#[test]
fn readyz_is_503_naming_the_listener_until_its_first_certificate() {
    let pebble = Pebble::start();
    let admin = free_port();
    let config = pebble.scratch("waiting.toml");
    std::fs::create_dir_all(config.parent().expect("dir")).expect("dir");
    // A CA that refuses connections: the first order keeps failing for the startup timeout.
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[admin]\nbind = \"127.0.0.1:{admin}\"\n\
             [[listeners]]\nname = \"waiting\"\nbind = \"127.0.0.1:{}\"\nupstream = \"http://127.0.0.1:{}\"\n\
             tls_mode = \"acme\"\nacme_domains = [\"waiting.certloop.test\"]\n\
             acme_directory = \"https://127.0.0.1:{}/dir\"\nacme_startup_timeout = \"60s\"\n",
            pebble.scratch("state").display(),
            free_port(),
            upstream(),
            free_port(),
        ),
    )
    .expect("config");
    let mut certloop = Certloop::start(&config, &[], None);
    let mut answer = (0, String::new());
    wait_until("the admin listener", Duration::from_secs(20), || {
        answer = get(admin, "/readyz");
        answer.0 != 0
    });
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(
        answer.1.contains("\"listener\":\"waiting\"")
            && answer
                .1
                .contains("waiting.certloop.test: no certificate yet"),
        "{answer:?}"
    );
    assert_eq!(get(admin, "/healthz").0, 200);
    let (_, metrics) = get(admin, "/metrics");
    assert!(
        metrics.contains("certloop_cert_renewal_failures_consecutive{listener=\"waiting\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("certloop_cert_not_after_seconds{"),
        "nothing served yet"
    );
    certloop.signal("TERM");
    assert_eq!(
        certloop.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        certloop.log()
    );
}
