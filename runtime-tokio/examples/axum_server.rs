//! An axum application over HTTPS whose certificate comes from an ACME CA: the whole server is
//! `axum::serve(listener, app)`.
//!
//! ```text
//! cargo run -p certloop-tokio --features axum --example axum_server -- --domain example.com \
//!     --directory staging --cache-dir /tmp/acme --bind 0.0.0.0:443 [--directory-ca ca.pem]
//! ```

use axum::Router;
use axum::routing::get;
use certloop_acme::example::{ExampleArgs, PAGE, fail};
use certloop_tokio::AcmeListener;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = ExampleArgs::from_env().unwrap_or_else(|e| fail(2, e));
    // Bound before launch, so the CA's validation finds it.
    let tcp = tokio::net::TcpListener::bind(&args.bind)
        .await
        .unwrap_or_else(|e| fail(1, format!("cannot bind {}: {e}", args.bind)));
    let acme = certloop_tokio::launch(args.config)
        .await
        .unwrap_or_else(|e| fail(1, e));
    let listener = AcmeListener::from_tcp(tcp, &acme).unwrap_or_else(|e| fail(1, e));
    acme.ready().await.unwrap_or_else(|e| fail(1, e));
    eprintln!("axum_server: ready, serving https://{}", args.bind);
    let app = Router::new().route("/", get(|| async { PAGE }));
    axum::serve(listener, app)
        .await
        .unwrap_or_else(|e| fail(1, e));
}
