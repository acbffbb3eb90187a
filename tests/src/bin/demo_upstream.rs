//! `demo-upstream`: a small HTTP/1.1 upstream for the demo and the end-to-end tests. It
//! answers every request with what it saw (method, path, forwarding headers, body length), and
//! `/slow?ms=N` answers after N milliseconds.
//!
//! ```text
//! demo-upstream 127.0.0.1:8080
//! ```

#[tokio::main]
async fn main() {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .unwrap_or_else(|e| {
            eprintln!("demo-upstream: cannot listen on {bind}: {e}");
            std::process::exit(1)
        });
    eprintln!("demo-upstream: listening on {bind}");
    certloop_tests::upstream::serve(listener).await;
}
