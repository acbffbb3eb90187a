//! The proxy's listening sockets, made in one place so that every listener has the same
//! accept queue. A socket belongs to no runtime: the shard that runs a listener's accept loop
//! (`shards.rs`) registers its own descriptor of it, and after a reload the next accept loop
//! does the same, on the same queue.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpSocket;

/// Connections the kernel completes and holds until an accept loop takes them (the kernel
/// caps it at `net.core.somaxconn`, 4096 by default). `TcpListener::bind` asks for 128, and a
/// burst of a few hundred new clients overflowed that: the kernel drops the SYNs past it and
/// those clients wait a second for their retransmit. nginx asks for 511.
pub(crate) const BACKLOG: u32 = 1024;

/// A listening socket, registered with no runtime; its clones are the same socket.
#[derive(Clone)]
pub(crate) struct ListenSocket(Arc<std::net::TcpListener>);

impl ListenSocket {
    /// Listens on `addr` with the [`BACKLOG`] (`SO_REUSEADDR` set, as `TcpListener::bind`
    /// does). Called on a runtime.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // Taken off the runtime's event loop again, still non-blocking.
        Ok(Self(Arc::new(socket.listen(BACKLOG)?.into_std()?)))
    }

    /// A descriptor of the socket for one shard's accept loop, to register with
    /// `tokio::net::TcpListener::from_std` on that shard.
    pub(crate) fn for_shard(&self) -> io::Result<std::net::TcpListener> {
        self.0.try_clone()
    }

    /// The address it listens on.
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A burst of connections larger than `TcpListener::bind`'s 128 completes before the
    /// accept loop takes any: past the queue, the kernel would drop the SYNs and a connect
    /// would hang. (Linux before 5.4 caps every queue at 128, `net.core.somaxconn`.)
    #[tokio::test]
    async fn holds_a_burst_of_connections_before_any_accept() {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(128);
        let burst = somaxconn.min(300);
        let socket = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..burst {
            let connect = TcpStream::connect(addr);
            let client = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .expect("a connect within the listen queue completes at once");
            clients.push(client.unwrap());
        }
        let listener = TcpListener::from_std(socket.for_shard().unwrap()).unwrap();
        for _ in 0..burst {
            listener.accept().await.unwrap();
        }
    }
}
