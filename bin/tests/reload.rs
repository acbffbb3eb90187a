//! Live configuration reload against the real binary and Pebble: listeners added (with an
//! ACME certificate) and removed, an upstream changed under traffic without a failed request,
//! no new order for a certificate whose names did not change, and a broken file refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

mod common;

use common::{Certloop, certloop_command, upstream};

use certloop_tests::conformance::fetch_verified;
use certloop_tests::pebble::{Pebble, free_port, wait_until};

fn orders(pebble: &Pebble) -> usize {
    pebble.log().matches("POST /order-plz").count()
}

/// An ACME listener validated with HTTP-01 (through `[http]` on Pebble's HTTP port).
fn listener(pebble: &Pebble, name: &str, port: u16, upstream: &str) -> String {
    format!(
        "[[listeners]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\nupstream = \"{upstream}\"\n\
         tls_mode = \"acme\"\nacme_domains = [\"{name}.certloop.test\"]\nacme_challenge = \"http-01\"\n\
         acme_directory = \"{}\"\nacme_directory_ca = \"{}\"\n",
        pebble.directory_url,
        pebble.directory_ca.display()
    )
}

fn head(pebble: &Pebble) -> String {
    format!(
        "state_dir = \"{}\"\n[http]\nbind = \"127.0.0.1:{}\"\n",
        pebble.scratch("state").display(),
        pebble.http_port
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    std::fs::write(path, text).expect("write config");
}

/// How many times `what` appears in certloop's log.
fn logged(certloop: &Certloop, what: &str) -> usize {
    certloop.log().matches(what).count()
}

#[test]
fn reload_adds_removes_and_changes_listeners_without_failing_a_request() {
    let pebble = Pebble::start();
    let root = pebble.issuing_root_pem();
    let second_upstream = certloop_tests::serve_in_background(certloop_tests::upstream::serve);
    let (web_port, old_port, new_port) = (free_port(), free_port(), free_port());
    let first = format!("http://127.0.0.1:{}", upstream());
    let config: PathBuf = pebble.scratch("reload.toml");
    write(
        &config,
        &format!(
            "{}{}{}",
            head(&pebble),
            listener(&pebble, "web", web_port, &first),
            listener(&pebble, "old", old_port, &first)
        ),
    );
    let mut certloop = Certloop::start(&config, &[], None);
    certloop.wait_ready();
    assert_eq!(orders(&pebble), 2);

    // Traffic on "web" throughout: every request must succeed.
    let (stop, sent, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let traffic = {
        let (stop, sent, failed, root) = (stop.clone(), sent.clone(), failed.clone(), root.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match fetch_verified(web_port, "web.certloop.test", &root) {
                    Ok((_, response)) if response.starts_with("HTTP/1.1 200") => {}
                    Ok((_, response)) => failed.lock().unwrap().push(response),
                    Err(e) => failed.lock().unwrap().push(e),
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_until("traffic", Duration::from_secs(10), || {
        sent.load(Ordering::SeqCst) >= 20
    });

    // "web" moves to another upstream, "old" goes, "new" comes with its own certificate.
    let moved = format!("http://127.0.0.1:{second_upstream}/v2");
    write(
        &config,
        &format!(
            "{}{}{}",
            head(&pebble),
            listener(&pebble, "web", web_port, &moved),
            listener(&pebble, "new", new_port, &first)
        ),
    );
    let (code, said) = certloop_command(&["reload"], &config);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("sent SIGHUP"), "{said}");
    wait_until("the reload", Duration::from_secs(20), || {
        logged(&certloop, "configuration reloaded") == 1
    });
    let log = certloop.log();
    assert!(
        log.contains("added=[\"new\"]")
            && log.contains("removed=[\"old\"]")
            && log.contains("upstream_changed=[\"web\"]"),
        "{log}"
    );
    wait_until(
        "the new listener's certificate",
        Duration::from_secs(30),
        || fetch_verified(new_port, "new.certloop.test", &root).is_ok(),
    );
    let (_, response) = fetch_verified(web_port, "web.certloop.test", &root).expect("web");
    assert!(response.contains("upstream saw GET /v2/"), "{response}");
    let during = sent.load(Ordering::SeqCst);
    wait_until(
        "more traffic after the reload",
        Duration::from_secs(10),
        || sent.load(Ordering::SeqCst) >= during + 20,
    );
    stop.store(true, Ordering::SeqCst);
    traffic.join().expect("traffic thread");
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        sent.load(Ordering::SeqCst),
        &failed[..failed.len().min(3)]
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", old_port)).is_err(),
        "the removed listener's port is closed"
    );
    // One order for the new listener; none for "web", whose names did not change.
    assert_eq!(orders(&pebble), 3, "{}", pebble.log());

    // A broken file: `certloop reload` refuses it, naming file and line; a SIGHUP with it in
    // place is refused by the process, which keeps serving.
    let good = std::fs::read_to_string(&config).expect("config");
    write(
        &config,
        &good.replace(
            "upstream = \"http://127.0.0.1",
            "upstream = \"ftp://127.0.0.1",
        ),
    );
    let (code, said) = certloop_command(&["reload"], &config);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains(&format!("{}:", config.display())) && said.contains("upstream"),
        "{said}"
    );
    certloop.signal("HUP");
    wait_until("the refusal", Duration::from_secs(20), || {
        logged(&certloop, "configuration reload refused") == 1
    });
    let log = certloop.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("configuration reload refused"))
        .expect("line");
    assert!(
        refusal.contains(&format!("{}:", config.display())) && refusal.contains("upstream"),
        "{refusal}"
    );
    let (_, response) =
        fetch_verified(web_port, "web.certloop.test", &root).expect("still serving");
    assert!(response.contains("upstream saw GET /v2/"), "{response}");
    assert!(fetch_verified(new_port, "new.certloop.test", &root).is_ok());

    // A listener whose cache directory cannot be created: refused before anything changes.
    let impossible = format!(
        "{good}{}acme_cache_dir = \"/dev/null/cache\"\n",
        listener(&pebble, "late", free_port(), &moved)
    );
    write(&config, &impossible);
    let (code, said) = certloop_command(&["reload"], &config);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("listener late: cache directory /dev/null/cache"),
        "{said}"
    );
    certloop.signal("HUP");
    wait_until("the second refusal", Duration::from_secs(20), || {
        logged(&certloop, "configuration reload refused") == 2
    });
    assert!(fetch_verified(new_port, "new.certloop.test", &root).is_ok());

    certloop.signal("TERM");
    assert_eq!(
        certloop.wait_exit(Duration::from_secs(30)),
        0,
        "{}",
        certloop.log()
    );
    assert!(
        !pebble.scratch("state").join("certloop.pid").exists(),
        "the pid file is removed at exit"
    );
}
