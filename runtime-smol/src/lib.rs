//! `certloop-smol`: automatic ACME certificates for a smol server, with no tokio runtime.
//!
//! The smallest server: bind, launch, serve through an [`AcmeListener`], and start only once
//! [`AcmeHandle::ready`] says a valid certificate is served.
//! ```no_run
//! use certloop_smol::{AcmeConfig, AcmeListener, Directory};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tcp = async_net::TcpListener::bind("0.0.0.0:443").await?; // before launch
//! let config = AcmeConfig::new(["example.com"], "/var/lib/myapp/acme")
//!     .directory(Directory::Staging)
//!     .contact("mailto:ops@example.com");
//! let acme = certloop_smol::launch(config).await?; // bad configuration or cache: error here
//! let listener = AcmeListener::from_tcp(tcp, &acme)?; // answers the CA's validation itself
//! acme.ready().await?; // no valid certificate, per the failure table: do not start
//! loop {
//!     let (tls, _peer) = listener.accept().await?; // a futures_rustls TlsStream, handshake done
//!     smol::spawn(async move { drop(tls) /* serve HTTP over `tls` */ }).detach();
//! }
//! # }
//! ```
//! Logs go through `tracing`: install a subscriber to see them.
//!
//! ACME runs on instant-acme with certloop's own HTTP client over async-net, polled with
//! async-io timers: instant-acme's tokio-only `poll_*` helpers are never called. Everything but
//! the runtime seam ([`SmolRuntime`]) lives in `certloop-acme`, shared with `certloop-tokio`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod listener;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use certloop_acme::adapter::{BoxFuture, Runtime};

pub use certloop_acme::embedding::*;

pub use listener::AcmeListener;

/// The runtime seam on smol: async-net sockets, async-io timers, smol's global executor and
/// the `blocking` pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    type Tcp = async_net::TcpStream;

    fn connect(&self, host: String, port: u16) -> BoxFuture<io::Result<Self::Tcp>> {
        Box::pin(async move {
            let stream = async_net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(async move {
            async_io::Timer::after(duration).await;
        })
    }

    fn spawn(&self, future: BoxFuture<()>) {
        smol::spawn(future).detach();
    }

    fn unblock<T: Send + 'static>(&self, work: Box<dyn FnOnce() -> T + Send>) -> BoxFuture<T> {
        Box::pin(blocking::unblock(work))
    }
}

/// Starts certificate management on smol and returns at once; serve TLS with
/// [`AcmeHandle::server_config`], then await [`AcmeHandle::ready`].
pub async fn launch(config: AcmeConfig) -> Result<AcmeHandle, StartError> {
    certloop_acme::adapter::launch(SmolRuntime, config).await
}

/// The ready-made port-80 responder: answers HTTP-01 validation for pending tokens and 404s
/// everything else. Runs forever: accept errors (such as running out of file descriptors) are
/// retried with a backoff, each connection gets
/// [`RESPONDER_DEADLINE`], and at most
/// [`RESPONDER_MAX_CONNECTIONS`] are served
/// at once ([`RESPONDER_MAX_PER_CLIENT`] from
/// one client).
pub async fn serve_http01(listener: async_net::TcpListener, tokens: Arc<Http01Tokens>) {
    let accept = || async {
        listener
            .accept()
            .await
            .map(|(stream, peer)| (stream, peer.ip()))
    };
    certloop_acme::adapter::serve_responder(SmolRuntime, accept, tokens).await;
}
