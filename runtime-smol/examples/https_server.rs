//! A minimal HTTPS server on smol whose certificate comes from an ACME CA. No tokio runtime
//! runs in this process.
//!
//! ```text
//! cargo run -p certloop-smol --example https_server -- --domain example.com \
//!     --directory staging --cache-dir /tmp/acme --bind 0.0.0.0:443 [--directory-ca ca.pem]
//! ```

use certloop_acme::example::{ExampleArgs, PAGE, fail, http1_only, serve_hello};
use certloop_smol::AcmeListener;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = ExampleArgs::from_env().unwrap_or_else(|e| fail(2, e));
    smol::block_on(async {
        // Bound before launch, so the CA's validation finds it.
        let tcp = async_net::TcpListener::bind(args.bind.as_str())
            .await
            .unwrap_or_else(|e| fail(1, format!("cannot bind {}: {e}", args.bind)));
        let acme = certloop_smol::launch(args.config)
            .await
            .unwrap_or_else(|e| fail(1, e));
        if let Some(bind) = &args.http01_bind {
            let port80 = async_net::TcpListener::bind(bind.as_str())
                .await
                .unwrap_or_else(|e| fail(1, format!("cannot bind {bind}: {e}")));
            smol::spawn(certloop_smol::serve_http01(port80, acme.http01_tokens())).detach();
        }
        let listener = AcmeListener::with_config(tcp, &acme, http1_only(&acme.server_config()))
            .unwrap_or_else(|e| fail(1, e));
        acme.ready().await.unwrap_or_else(|e| fail(1, e));
        eprintln!("https_server: ready, serving https://{}", args.bind);
        loop {
            match listener.accept().await {
                Ok((tls, _)) => smol::spawn(serve_hello(tls, PAGE)).detach(),
                Err(e) => fail(1, e),
            }
        }
    });
}
