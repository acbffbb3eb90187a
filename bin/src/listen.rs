//! The proxy's listening sockets, made in one place so that every listener has the same
//! accept queue. The accept loops run on the main runtime, and what they accept belongs to no
//! runtime yet: the shard that serves a connection registers it with its own event loop
//! (`shards.rs`).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Connections the kernel completes and holds until the accept loop takes them (the kernel
/// caps it at `net.core.somaxconn`, 4096 by default). `TcpListener::bind` asks for 128, and a
/// burst of a few hundred new clients overflowed that: the kernel drops the SYNs past it and
/// those clients wait a second for their retransmit. nginx asks for 511.
pub(crate) const BACKLOG: u32 = 1024;

/// A listening socket, registered with the runtime that made it.
pub(crate) struct ListenSocket(TcpListener);

impl ListenSocket {
    /// Listens on `addr` with the [`BACKLOG`] (`SO_REUSEADDR` set, as `TcpListener::bind`
    /// does).
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(Self(socket.listen(BACKLOG)?))
    }

    /// The next connection, for [`register`] on the runtime that will serve it.
    pub(crate) async fn accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        let (tcp, peer) = self.0.accept().await?;
        // Taken off this runtime's event loop (still non-blocking).
        Ok((tcp.into_std()?, peer))
    }

    /// The address it listens on.
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// An accepted connection, registered with the caller's runtime.
pub(crate) fn register(tcp: std::net::TcpStream) -> io::Result<TcpStream> {
    TcpStream::from_std(tcp)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A burst of connections larger than `TcpListener::bind`'s 128 completes before the
    /// accept loop takes any: past the queue, the kernel would drop the SYNs and a connect
    /// would hang.
    #[tokio::test]
    async fn holds_a_burst_of_connections_before_any_accept() {
        const BURST: usize = 300;
        let listener = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..BURST {
            let connect = TcpStream::connect(addr);
            let client = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .expect("a connect within the listen queue completes at once");
            clients.push(client.unwrap());
        }
        for _ in 0..BURST {
            listener.accept().await.unwrap();
        }
    }

    /// A connection accepted here and registered on another runtime carries bytes both ways.
    #[tokio::test]
    async fn an_accepted_connection_is_served_on_another_runtime() {
        let listener = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let echo = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut tcp = register(tcp).unwrap();
                let mut ping = [0u8; 4];
                tcp.read_exact(&mut ping).await.unwrap();
                tcp.write_all(&ping).await.unwrap();
            });
        });
        client.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut pong))
            .await
            .expect("the echo")
            .unwrap();
        assert_eq!(&pong, b"ping");
        echo.join().unwrap();
    }
}
