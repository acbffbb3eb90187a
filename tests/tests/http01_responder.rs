//! The library's ready-made HTTP-01 responder on both runtimes: it survives accept errors
//! (it used to leave its loop for good on the first one, stopping HTTP-01 renewals), and a
//! client that sends half a request head is closed at the deadline while others are served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use certloop_acme::adapter::serve_responder;
use certloop_acme::{Http01Tokens, RESPONDER_DEADLINE};
use certloop_tests::pebble::wait_until;

/// A GET for `token`'s challenge path; the whole response.
fn get_challenge(port: u16, token: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        tcp,
        "GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: a.test\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    tcp.read_to_string(&mut response).expect("response");
    response
}

fn closed(tcp: &TcpStream) -> bool {
    tcp.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    let closed = match (&*tcp).read(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    tcp.set_nonblocking(false).expect("blocking");
    closed
}

#[test]
fn the_responder_keeps_accepting_after_accept_errors() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tokens = Arc::new(Http01Tokens::default());
    tokens.insert("tok", "tok.thumbprint");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let listener = Arc::new(listener);
    // Out of descriptors for the first eight calls, then the real listener.
    let accept = move || {
        let (listener, calls) = (listener.clone(), counted.clone());
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) < 8 {
                return Err(std::io::Error::from_raw_os_error(24));
            }
            listener.accept().await.map(|(s, peer)| {
                (
                    tokio_util::compat::TokioAsyncReadCompatExt::compat(s),
                    peer.ip(),
                )
            })
        }
    };
    let seam = {
        let _entered = rt.enter();
        certloop_tokio::TokioRuntime::current()
    };
    rt.spawn(serve_responder(seam, accept, tokens));
    let response = get_challenge(port, "tok");
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("tok.thumbprint"),
        "{response}"
    );
    assert!(calls.load(Ordering::SeqCst) > 8);
}

#[test]
fn both_runtimes_close_half_sent_heads_at_the_deadline_and_serve_others() {
    let tokens = Arc::new(Http01Tokens::default());
    tokens.insert("tok", "tok.thumbprint");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tokio_listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let tokio_port = tokio_listener.local_addr().expect("addr").port();
    rt.spawn(certloop_tokio::serve_http01(tokio_listener, tokens.clone()));
    let smol_listener = smol::block_on(async_net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let smol_port = smol_listener.local_addr().expect("addr").port();
    smol::spawn(certloop_smol::serve_http01(smol_listener, tokens.clone())).detach();

    let started = Instant::now();
    let slow: Vec<TcpStream> = [tokio_port, smol_port]
        .iter()
        .flat_map(|port| {
            (0..5).map(move |_| {
                let mut tcp = TcpStream::connect(("127.0.0.1", *port)).expect("connect");
                tcp.write_all(b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHo")
                    .expect("half a head");
                tcp
            })
        })
        .collect();
    for port in [tokio_port, smol_port] {
        let response = get_challenge(port, "tok");
        assert!(response.ends_with("tok.thumbprint"), "{response}");
    }
    wait_until(
        "half-sent heads to be closed",
        RESPONDER_DEADLINE + Duration::from_secs(5),
        || slow.iter().all(closed),
    );
    assert!(
        started.elapsed() >= RESPONDER_DEADLINE - Duration::from_secs(1),
        "closed after {:?}, before the deadline",
        started.elapsed()
    );
}
