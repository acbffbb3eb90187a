//! `first-cert-bench`: time from process start, with an empty cache, to the first response
//! verified against Pebble's root (one name, TLS-ALPN-01 and then HTTP-01), for certloop and,
//! when Debian's `caddy` is installed, for Caddy in the same run, rounds alternating. Not a test: run it with
//! `scripts/bench-first-cert.sh [ROUNDS]`, which installs Caddy and builds the release binary.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certloop_tests::conformance::fetch_verified;
use certloop_tests::pebble::{Pebble, free_port};

/// The challenge both servers use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Challenge {
    TlsAlpn01,
    Http01,
}

/// Starts the server under test with an empty state directory under `scratch`.
type Start = fn(&Pebble, &Path, &str, Challenge) -> Child;

fn start_certloop(pebble: &Pebble, scratch: &Path, name: &str, challenge: Challenge) -> Child {
    let binary = std::env::var("CERTLOOP_BIN").unwrap_or_else(|_| "target/release/certloop".into());
    let upstream = certloop_tests::serve_in_background(certloop_tests::upstream::serve);
    let config = scratch.join("certloop.toml");
    let http01 = match challenge {
        Challenge::TlsAlpn01 => String::new(),
        Challenge::Http01 => format!(
            "[http]\nbind = \"127.0.0.1:{}\"\nhttps_port = {}\n",
            pebble.http_port, pebble.tls_port
        ),
    };
    let kind = match challenge {
        Challenge::TlsAlpn01 => "tls-alpn-01",
        Challenge::Http01 => "http-01",
    };
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n{http01}[[listeners]]\nname = \"bench\"\nbind = \"127.0.0.1:{}\"\n\
             upstream = \"http://127.0.0.1:{upstream}\"\ntls_mode = \"acme\"\nacme_challenge = \"{kind}\"\n\
             acme_domains = [\"{name}\"]\nacme_directory = \"{}\"\nacme_directory_ca = \"{}\"\n",
            scratch.join("state").display(),
            pebble.tls_port,
            pebble.directory_url,
            pebble.directory_ca.display()
        ),
    )
    .expect("config");
    Command::new(binary)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start certloop (build it first: scripts/bench-first-cert.sh)")
}

fn start_caddy(pebble: &Pebble, scratch: &Path, name: &str, challenge: Challenge) -> Child {
    let (http_port, disabled) = match challenge {
        Challenge::TlsAlpn01 => (free_port(), "disable_http_challenge"),
        Challenge::Http01 => (pebble.http_port, "disable_tlsalpn_challenge"),
    };
    let caddyfile = scratch.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n  admin off\n  skip_install_trust\n  http_port {}\n  https_port {}\n  \
             storage file_system {}\n  acme_ca {}\n  acme_ca_root {}\n}}\n\
             https://{name} {{\n  bind 127.0.0.1\n  tls {{\n    issuer acme {{\n      dir {}\n      \
             trusted_roots {}\n      {disabled}\n    }}\n  }}\n  respond \"hello\" 200\n}}\n",
            http_port,
            pebble.tls_port,
            scratch.join("caddy").display(),
            pebble.directory_url,
            pebble.directory_ca.display(),
            pebble.directory_url,
            pebble.directory_ca.display(),
        ),
    )
    .expect("Caddyfile");
    Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("HOME", scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start caddy")
}

/// Seconds from spawning the server to its first verified response.
fn time_first_response(
    pebble: &Pebble,
    start: Start,
    challenge: Challenge,
    round: usize,
    label: &str,
) -> f64 {
    let tag = format!("{label}-{}-{round}", challenge as u8);
    let scratch = pebble.scratch(&tag);
    std::fs::create_dir_all(&scratch).expect("scratch");
    let name = format!("{tag}.bench.certloop.test");
    let root = pebble.issuing_root_pem();
    let started = Instant::now();
    let mut child = start(pebble, &scratch, &name, challenge);
    let deadline = started + Duration::from_secs(30);
    let elapsed = loop {
        if fetch_verified(pebble.tls_port, &name, &root).is_ok_and(|(_, r)| r.contains(" 200")) {
            break started.elapsed();
        }
        if Instant::now() > deadline || child.try_wait().is_ok_and(|s| s.is_some()) {
            let _ = child.kill();
            panic!("{label}: no verified response within 30 s (round {round})");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    let _ = child.wait();
    elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let caddy = Command::new("caddy").arg("version").output().is_ok();
    let pebble = Pebble::start();
    for (challenge, label) in [
        (Challenge::TlsAlpn01, "TLS-ALPN-01"),
        (Challenge::Http01, "HTTP-01"),
    ] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            ours.push(time_first_response(
                &pebble,
                start_certloop,
                challenge,
                round,
                "certloop",
            ));
            if caddy {
                theirs.push(time_first_response(
                    &pebble,
                    start_caddy,
                    challenge,
                    round,
                    "caddy",
                ));
            }
            println!(
                "{label} round {round}: certloop {:.3} s{}",
                ours[round],
                theirs
                    .get(round)
                    .map(|t| format!(", caddy {t:.3} s"))
                    .unwrap_or_default()
            );
        }
        let ours = median(ours);
        print!("{label}, first verified response, median of {rounds}: certloop {ours:.3} s");
        if caddy {
            let theirs = median(theirs);
            println!(
                ", caddy {theirs:.3} s: certloop is {:.2}x faster",
                theirs / ours
            );
        } else {
            println!(
                " (caddy is not installed: no baseline; scripts/bench-first-cert.sh installs it)"
            );
        }
    }
}
