//! The proxy's server-side TLS stream: rustls over a socket, writing to the socket only when
//! flushed.
//!
//! A write is encrypted into rustls's buffer and leaves at the next flush or shutdown (or
//! when the buffer holds [`rustls`'s limit](rustls::ConnectionCommon::set_buffer_limit),
//! 64 KiB). So what a connection answers in one go leaves in one system call: the session
//! tickets of a TLS 1.3 handshake leave with the first response instead of on their own, and
//! a last response leaves with its close_notify. Each write the client's side receives costs
//! both ends a wake-up; a resumed connection carrying one request made four and now makes two.
//! The callers flush whenever they wait for the client (the HTTP/1.1 path after each response,
//! `h2` after each batch of frames).

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::{ProtocolVersion, ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS connection accepted by [`accept`].
pub(crate) struct TlsStream<IO> {
    io: IO,
    tls: ServerConnection,
    /// close_notify is queued: nothing else is written.
    closing: bool,
    /// The socket's write side is shut: a shutdown again is a no-op.
    shut: bool,
    /// Plaintext rustls holds, ready to read.
    readable: usize,
}

/// Runs the server side of a TLS handshake on `io`. What the handshake leaves to send at its
/// end in TLS 1.3 (the session tickets) stays queued for the first flush; a TLS 1.2 server's
/// last flight, which the client waits for, is sent before returning. On failure the alert
/// rustls chose is sent, as far as the socket takes it.
pub(crate) async fn accept<IO>(io: IO, config: Arc<ServerConfig>) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let tls = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut stream = TlsStream {
        io,
        tls,
        closing: false,
        shut: false,
        readable: 0,
    };
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// The TLS session: protocol version, ALPN, SNI.
    pub(crate) fn session(&self) -> &ServerConnection {
        &self.tls
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.tls.is_handshaking()
                && (!self.tls.wants_write()
                    || self.tls.protocol_version() == Some(ProtocolVersion::TLSv1_3))
            {
                return Poll::Ready(Ok(()));
            }
            if self.tls.wants_write() {
                ready!(self.poll_send(cx))?;
                continue;
            }
            if ready!(self.poll_receive(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Writes what rustls has queued to the socket, all of it or until the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            let mut socket = SyncIo {
                io: &mut self.io,
                cx,
            };
            match self.tls.write_tls(&mut socket) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads once from the socket into rustls and processes the records; the number of bytes
    /// read (0: end of file). A TLS error sends rustls's alert, as far as the socket takes it.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut socket = SyncIo {
            io: &mut self.io,
            cx,
        };
        let read = match self.tls.read_tls(&mut socket) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match self.tls.process_new_packets() {
            Ok(state) => self.readable = state.plaintext_bytes_to_read(),
            Err(error) => {
                let _ = self.poll_send(cx);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
        }
        Poll::Ready(Ok(read))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    /// Plaintext rustls holds, else more from the socket. A clean close_notify is the end of
    /// the stream; a socket closed without one is an `UnexpectedEof` error.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Only what rustls holds is zeroed first, not the whole of a large buffer on every
            // read; with nothing held, one byte lets rustls say whether the stream ended.
            let room = this.readable.max(1).min(buf.remaining());
            match this.tls.reader().read(buf.initialize_unfilled_to(room)) {
                Ok(n) => {
                    buf.advance(n);
                    this.readable = this.readable.saturating_sub(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            ready!(this.poll_receive(cx))?;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    /// Encrypts into rustls's buffer; the socket is written only when that buffer is full.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        loop {
            let taken = this.tls.writer().write(buf)?;
            if taken > 0 || buf.is_empty() {
                return Poll::Ready(Ok(taken));
            }
            ready!(this.poll_send(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// close_notify, then everything queued with it, then the socket's write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.tls.send_close_notify();
            this.closing = true;
        }
        if this.shut {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send(cx))?;
        ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
        this.shut = true;
        Poll::Ready(Ok(()))
    }
}

/// The socket as the blocking `Read`/`Write` rustls expects, `WouldBlock` standing for
/// `Pending` (the waker in `cx` is registered).
struct SyncIo<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncRead + Unpin> Read for SyncIo<'_, '_, IO> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Write for SyncIo<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A socket end that counts the writes that took bytes. Like a TCP socket it takes
    /// vectored writes, as one write.
    struct CountedWrites {
        io: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for CountedWrites {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountedWrites {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.io).poll_write(cx, buf);
            if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            written
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.poll_write(cx, &joined)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// A server configuration for `tls.test` and a client one that trusts it, limited to
    /// `version`, the client keeping sessions.
    fn configs(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["tls.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = certloop_acme::adapter::provider();
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A client's TLS connection to `tls.test` over `io`.
    async fn connect(
        config: Arc<rustls::ClientConfig>,
        io: DuplexStream,
    ) -> tokio_rustls::client::TlsStream<DuplexStream> {
        let name = rustls::pki_types::ServerName::try_from("tls.test").unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(name, io)
            .await
            .unwrap()
    }

    /// The client's side: connects over `io`, sends `ping`, reads to the end.
    async fn client(
        config: Arc<rustls::ClientConfig>,
        io: DuplexStream,
    ) -> (io::Result<Vec<u8>>, rustls::HandshakeKind) {
        let mut tls = connect(config, io).await;
        tls.write_all(b"ping").await.unwrap();
        let mut answer = Vec::new();
        let read = tls.read_to_end(&mut answer).await.map(|_| answer);
        (read, tls.get_ref().1.handshake_kind().unwrap())
    }

    /// One connection: the server reads `ping`, answers `answer`, and shuts down. The number
    /// of writes the server made in all, and what the client read.
    async fn exchange(
        server: &Arc<ServerConfig>,
        client_config: &Arc<rustls::ClientConfig>,
        answer: &[u8],
    ) -> (usize, io::Result<Vec<u8>>, rustls::HandshakeKind) {
        let (client_io, server_io) = tokio::io::duplex(8 * 1024);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = CountedWrites {
            io: server_io,
            writes: writes.clone(),
        };
        let client = tokio::spawn(client(client_config.clone(), client_io));
        let mut tls = accept(counted, server.clone()).await.unwrap();
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        tls.write_all(answer).await.unwrap();
        tls.shutdown().await.unwrap();
        // A second shutdown changes nothing; nothing is written after close_notify.
        tls.shutdown().await.unwrap();
        assert_eq!(
            tls.write(b"late").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        let (read, kind) = client.await.unwrap();
        (writes.load(Ordering::SeqCst), read, kind)
    }

    #[tokio::test]
    async fn a_tls13_answer_leaves_with_the_session_tickets_and_close_notify_in_one_write() {
        let (server, client) = configs(&rustls::version::TLS13);
        let (writes, read, kind) = exchange(&server, &client, b"pong").await;
        assert_eq!(
            read.unwrap(),
            b"pong",
            "the answer, then a clean close_notify"
        );
        assert_eq!(kind, rustls::HandshakeKind::Full);
        assert_eq!(
            writes, 2,
            "the server's flight, then tickets, answer and close_notify"
        );
        // The deferred tickets did arrive: the next connection resumes with one.
        let (writes, read, kind) = exchange(&server, &client, b"pong").await;
        assert_eq!(read.unwrap(), b"pong");
        assert_eq!(kind, rustls::HandshakeKind::Resumed);
        assert_eq!(writes, 2);
    }

    #[tokio::test]
    async fn a_tls12_handshake_sends_the_servers_last_flight_before_it_returns() {
        // The client waits for the server's Finished before it sends a byte: kept back, both
        // sides would wait for ever.
        let (server, client) = configs(&rustls::version::TLS12);
        let exchanged = exchange(&server, &client, b"pong");
        let (_, read, _) = tokio::time::timeout(std::time::Duration::from_secs(10), exchanged)
            .await
            .expect("the TLS 1.2 exchange completes");
        assert_eq!(read.unwrap(), b"pong");
    }

    #[tokio::test]
    async fn an_answer_many_times_rustls_buffer_goes_through_a_small_socket_buffer() {
        let (server, client) = configs(&rustls::version::TLS13);
        let answer: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (writes, read, _) = exchange(&server, &client, &answer).await;
        assert_eq!(read.unwrap(), answer);
        assert!(writes > 2, "the buffer was written out as it filled");
    }

    #[tokio::test]
    async fn an_upload_of_many_records_reads_whole_into_buffers_of_any_size() {
        let (server, client) = configs(&rustls::version::TLS13);
        let (client_io, server_io) = tokio::io::duplex(8 * 1024);
        let upload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let sent = upload.clone();
        let client = tokio::spawn(async move {
            let mut tls = connect(client, client_io).await;
            tls.write_all(&sent).await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let mut tls = accept(server_io, server).await.unwrap();
        // Reads as the HTTP/1.1 path makes them (into spare, uninitialised capacity) and of a
        // single byte, by turns.
        let (mut received, mut into_spare) = (Vec::new(), true);
        loop {
            into_spare = !into_spare;
            let n = if into_spare {
                received.reserve(16 * 1024);
                tls.read_buf(&mut received).await.unwrap()
            } else {
                let mut byte = [0u8; 1];
                let n = tls.read(&mut byte).await.unwrap();
                received.extend_from_slice(&byte[..n]);
                n
            };
            if n == 0 {
                break;
            }
        }
        assert_eq!(received, upload, "every byte, in order, then a clean end");
        client.await.unwrap();
    }

    #[tokio::test]
    async fn a_key_update_the_client_asks_for_is_answered_before_the_next_answer() {
        // A record that carries no plaintext (the client's KeyUpdate) must not read as the
        // end of the stream; the server's KeyUpdate waits in rustls's buffer for the next
        // flush, ahead of the answer, which the client must read with the new keys.
        let (server, client) = configs(&rustls::version::TLS13);
        let (client_io, server_io) = tokio::io::duplex(8 * 1024);
        let client = tokio::spawn(async move {
            let mut tls = connect(client, client_io).await;
            tls.write_all(b"pi").await.unwrap();
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.write_all(b"ng").await.unwrap();
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let mut tls = accept(server_io, server).await.unwrap();
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        tls.write_all(b"pong").await.unwrap();
        tls.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap(), b"pong");
    }

    #[tokio::test]
    async fn a_client_that_leaves_without_close_notify_reads_as_unexpected_eof() {
        let (server, client) = configs(&rustls::version::TLS13);
        let (client_io, server_io) = tokio::io::duplex(8 * 1024);
        let client = tokio::spawn(async move {
            let mut tls = connect(client, client_io).await;
            tls.write_all(b"ping").await.unwrap();
            // The socket closes under the TLS session: no close_notify.
            drop(tls.into_inner().0);
        });
        let mut tls = accept(server_io, server).await.unwrap();
        let mut read = Vec::new();
        let error = tls.read_to_end(&mut read).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read, b"ping");
        client.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_speaks_no_tls_gets_an_alert_and_the_handshake_fails() {
        let (server, _) = configs(&rustls::version::TLS13);
        let (mut client_io, server_io) = tokio::io::duplex(8 * 1024);
        client_io
            .write_all(b"GET / HTTP/1.1\r\nHost: tls.test\r\n\r\n")
            .await
            .unwrap();
        let error = accept(server_io, server).await.err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let mut alert = [0u8; 1];
        client_io.read_exact(&mut alert).await.unwrap();
        assert_eq!(alert[0], 0x15, "a TLS alert record");
    }
}
