//! `AcmeListener` on tokio: `axum::serve(listener, app)` is the whole server, it answers the
//! CA's validation while the application has not accepted anything yet, and a client that
//! stalls its handshake holds up no one else.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use certloop_tests::conformance::fetch_verified;
use certloop_tests::pebble::Pebble;
use certloop_tokio::{AcmeConfig, AcmeListener};

#[test]
fn axum_serves_through_the_listener_and_a_stalled_handshake_costs_no_one_else() {
    let pebble = Pebble::start();
    let name = "axum.certloop.test";
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _acme = runtime.block_on(async {
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", pebble.tls_port))
            .await
            .expect("bind");
        let config = AcmeConfig::new([name], pebble.scratch("cache"))
            .directory_url(&pebble.directory_url)
            .extra_roots_pem(&pebble.directory_ca);
        let acme = certloop_tokio::launch(config).await.expect("launch");
        let listener = AcmeListener::from_tcp(tcp, &acme).expect("listener");
        // Nothing accepts yet: the validation is answered inside the listener.
        acme.ready().await.expect("ready");
        let app = Router::new().route("/", get(|| async { "hello from axum\n" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        acme
    });
    // Silent clients: connected, never sending a ClientHello.
    let stalled: Vec<_> = (0..50)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", pebble.tls_port)).expect("connect"))
        .collect();
    let root = pebble.issuing_root_pem();
    let started = Instant::now();
    let (_, response) = fetch_verified(pebble.tls_port, name, &root).expect("verified");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello from axum\n"), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held up behind stalled handshakes: {:?}",
        started.elapsed()
    );
    drop(stalled);
}
