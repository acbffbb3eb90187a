//! [`AcmeListener`]: TLS connections for the application, with TLS-ALPN-01 validations
//! answered inside, from the moment it exists.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use certloop_acme::adapter::{ACME_TLS_ALPN, Handshake, Incoming, spawn_incoming};
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{AcmeHandle, TokioRuntime};

/// A TLS listener serving an [`AcmeHandle`]'s certificates: `accept` yields connections whose
/// handshake is done, while validation handshakes (ALPN `acme-tls/1`) are answered inside and
/// never reach the application. It accepts from the moment it is made, so awaiting
/// [`AcmeHandle::ready`] before the first `accept` is fine. Each handshake runs in its own task
/// within [`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT), at most
/// [`MAX_HANDSHAKES`](crate::MAX_HANDSHAKES) at once and
/// [`MAX_HANDSHAKES_PER_CLIENT`](crate::MAX_HANDSHAKES_PER_CLIENT) from one client, so a slow
/// client costs only its own slots. The listener keeps `acme` alive (renewals go on while it
/// serves); dropping it closes the socket.
///
/// With the `axum` feature, it is an `axum::serve::Listener`: `axum::serve(listener, app)`.
pub struct AcmeListener {
    incoming: Incoming<TlsStream<TcpStream>>,
    local_addr: SocketAddr,
    _acme: AcmeHandle,
}

impl AcmeListener {
    /// Binds `addr` and serves `acme`'s certificates there, with its
    /// [`AcmeHandle::server_config`].
    pub async fn bind(addr: impl ToSocketAddrs, acme: &AcmeHandle) -> io::Result<Self> {
        Self::from_tcp(TcpListener::bind(addr).await?, acme)
    }

    /// Serves `acme`'s certificates on a listener bound already.
    pub fn from_tcp(listener: TcpListener, acme: &AcmeHandle) -> io::Result<Self> {
        Self::with_config(listener, acme, acme.server_config())
    }

    /// Serves with a `ServerConfig` of your own, built around `acme`'s
    /// [`AcmeHandle::resolver`]; its ALPN list must include `acme-tls/1` for TLS-ALPN-01
    /// validation to succeed.
    pub fn with_config(
        listener: TcpListener,
        acme: &AcmeHandle,
        config: Arc<ServerConfig>,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let listener = Arc::new(listener);
        let accept = move || {
            let listener = listener.clone();
            async move { listener.accept().await }
        };
        let acceptor = TlsAcceptor::from(config);
        let handshake = move |tcp: TcpStream| {
            let acceptor = acceptor.clone();
            async move {
                let _ = tcp.set_nodelay(true);
                let mut tls = acceptor.accept(tcp).await?;
                if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                    let _ = tls.shutdown().await;
                    return Ok(Handshake::Validation);
                }
                Ok(Handshake::Serve(tls))
            }
        };
        let name = format!("tls {local_addr}");
        let incoming = spawn_incoming(&TokioRuntime::current(), name, accept, handshake);
        Ok(Self {
            incoming,
            local_addr,
            _acme: acme.clone(),
        })
    }

    /// The next connection, TLS handshake done, and its peer.
    pub async fn accept(&self) -> io::Result<(TlsStream<TcpStream>, SocketAddr)> {
        self.incoming.next().await
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

#[cfg(feature = "axum")]
impl axum::serve::Listener for AcmeListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match Self::accept(self).await {
            Ok(connection) => connection,
            // The loop ended only because the runtime is shutting down.
            Err(_) => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
