//! A minimal HTTPS server on smol whose certificate comes from an ACME CA. No tokio runtime
//! runs in this process.
//!
//! ```text
//! cargo run -p certloop-smol --example https_server -- --domain example.com \
//!     --directory staging --cache-dir /tmp/acme --bind 0.0.0.0:443 [--directory-ca ca.pem]
//! ```

use certloop_acme::example::{ExampleArgs, fail, http1_only, serve_hello};

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = ExampleArgs::from_env().unwrap_or_else(|e| fail(2, e));
    smol::block_on(async {
        let listener = async_net::TcpListener::bind(args.bind.as_str())
            .await
            .unwrap_or_else(|e| fail(1, format!("cannot bind {}: {e}", args.bind)));
        let acme = certloop_smol::launch(args.config)
            .await
            .unwrap_or_else(|e| fail(1, e.to_string()));
        if let Some(bind) = &args.http01_bind {
            let port80 = async_net::TcpListener::bind(bind.as_str())
                .await
                .unwrap_or_else(|e| fail(1, format!("cannot bind {bind}: {e}")));
            smol::spawn(certloop_smol::serve_http01(port80, acme.http01_tokens())).detach();
        }
        // Serve TLS from the start, so TLS-ALPN-01 validation reaches the resolver.
        let config = http1_only(&acme.server_config());
        smol::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                smol::spawn(serve_hello(
                    stream,
                    config.clone(),
                    "hello from certloop on smol\n",
                ))
                .detach();
            }
        })
        .detach();
        acme.ready()
            .await
            .unwrap_or_else(|e| fail(1, format!("no certificate: {e}")));
        eprintln!("https_server: ready, serving https://{}", args.bind);
        std::future::pending::<()>().await;
    });
}
