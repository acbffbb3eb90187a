//! An embedder's `main` that returns right after `ready()` exits quietly: the blocking tasks
//! still queued (the certificate write that follows issuance) are cancelled by the runtime's
//! shutdown, and that is not a panic. Each run is a child process (this test binary, re-run
//! for the one test with `CERTLOOP_EXIT_CHILD` set), so that its whole stderr can be read.

use std::process::Command;

use certloop_tests::pebble::Pebble;
use certloop_tokio::AcmeConfig;

const TEST: &str = "returning_from_main_after_ready_prints_nothing";

#[test]
fn returning_from_main_after_ready_prints_nothing() {
    if let Ok(args) = std::env::var("CERTLOOP_EXIT_CHILD") {
        return child_main(&args);
    }
    let pebble = Pebble::start();
    for run in 0..10 {
        // Even runs issue a first certificate; odd runs start from the one the run before cached.
        let cache = pebble.scratch(&format!("exit-{}", run / 2));
        let args = format!(
            "{}\n{}\n{}\n{}",
            pebble.directory_url,
            pebble.directory_ca.display(),
            pebble.tls_port,
            cache.display()
        );
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("CERTLOOP_EXIT_CHILD", args)
            .output()
            .expect("run the child");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "run {run}: {}\n{stderr}",
            output.status
        );
        assert!(
            !stderr.contains("panicked"),
            "run {run}: the child printed a panic:\n{stderr}"
        );
        // The certificate was issued in that run (it is cached now), so shutdown raced real work.
        let cached = std::fs::read_dir(&cache).expect("cache dir").count();
        assert!(cached > 1, "run {run}: nothing cached");
    }
}

/// What an embedder writes: launch, serve TLS, await `ready()`, return.
fn child_main(args: &str) {
    let [directory, directory_ca, port, cache] = args.lines().collect::<Vec<_>>()[..] else {
        panic!("bad CERTLOOP_EXIT_CHILD: {args:?}");
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let config = AcmeConfig::new(["exit.certloop.test"], cache)
            .directory_url(directory)
            .extra_roots_pem(directory_ca);
        let port: u16 = port.parse().expect("port");
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let acme = certloop_tokio::launch(config).await.expect("launch");
        let _listener = certloop_tokio::AcmeListener::from_tcp(tcp, &acme).expect("listener");
        acme.ready().await.expect("ready");
    });
    // Returning drops the runtime, as the end of `main` does.
}
