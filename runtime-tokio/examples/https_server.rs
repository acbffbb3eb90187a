//! A minimal HTTPS server on tokio whose certificate comes from an ACME CA.
//!
//! ```text
//! cargo run -p certloop-tokio --example https_server -- --domain example.com \
//!     --directory staging --cache-dir /tmp/acme --bind 0.0.0.0:443 [--directory-ca ca.pem]
//! ```

use certloop_acme::example::{ExampleArgs, PAGE, fail, http1_only, serve_hello};
use certloop_tokio::AcmeListener;
use tokio_util::compat::TokioAsyncReadCompatExt;

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
    if let Some(bind) = &args.http01_bind {
        let port80 = tokio::net::TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| fail(1, format!("cannot bind {bind}: {e}")));
        tokio::spawn(certloop_tokio::serve_http01(port80, acme.http01_tokens()));
    }
    let listener = AcmeListener::with_config(tcp, &acme, http1_only(&acme.server_config()))
        .unwrap_or_else(|e| fail(1, e));
    acme.ready().await.unwrap_or_else(|e| fail(1, e));
    eprintln!("https_server: ready, serving https://{}", args.bind);
    loop {
        match listener.accept().await {
            Ok((tls, _)) => drop(tokio::spawn(serve_hello(tls.compat(), PAGE))),
            Err(e) => fail(1, e),
        }
    }
}
