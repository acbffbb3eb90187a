//! A minimal HTTPS server on tokio whose certificate comes from an ACME CA.
//!
//! ```text
//! cargo run -p certloop-tokio --example https_server -- --domain example.com \
//!     --directory staging --cache-dir /tmp/acme --bind 0.0.0.0:443 [--directory-ca ca.pem]
//! ```

use certloop_acme::example::{ExampleArgs, fail, http1_only, serve_hello};
use tokio_util::compat::TokioAsyncReadCompatExt;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = ExampleArgs::from_env().unwrap_or_else(|e| fail(2, e));
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .unwrap_or_else(|e| fail(1, format!("cannot bind {}: {e}", args.bind)));
    let acme = certloop_tokio::launch(args.config)
        .await
        .unwrap_or_else(|e| fail(1, e.to_string()));
    if let Some(bind) = &args.http01_bind {
        let port80 = tokio::net::TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| fail(1, format!("cannot bind {bind}: {e}")));
        tokio::spawn(certloop_tokio::serve_http01(port80, acme.http01_tokens()));
    }
    // Serve TLS from the start, so TLS-ALPN-01 validation reaches the resolver.
    let config = http1_only(&acme.server_config());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve_hello(
                stream.compat(),
                config.clone(),
                "hello from certloop on tokio\n",
            ));
        }
    });
    acme.ready()
        .await
        .unwrap_or_else(|e| fail(1, format!("no certificate: {e}")));
    eprintln!("https_server: ready, serving https://{}", args.bind);
    std::future::pending::<()>().await;
}
