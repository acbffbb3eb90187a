//! The proxy's listening sockets, made in one place so that every listener has the same
//! accept queue.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel completes and holds until the accept loop takes them (the kernel
/// caps it at `net.core.somaxconn`, 4096 by default). `TcpListener::bind` asks for 128, and a
/// burst of a few hundred new clients overflowed that: the kernel drops the SYNs past it and
/// those clients wait a second for their retransmit. nginx asks for 511.
pub(crate) const BACKLOG: u32 = 1024;

/// A socket listening on `addr` with the [`BACKLOG`] (`SO_REUSEADDR` set, as `bind` does).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A burst of connections larger than `bind`'s 128 completes before the accept loop takes
    /// any: past the queue, the kernel would drop the SYNs and a connect would hang.
    #[tokio::test]
    async fn holds_a_burst_of_connections_before_any_accept() {
        const BURST: usize = 300;
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..BURST {
            let connect = tokio::net::TcpStream::connect(addr);
            let client = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .expect("a connect within the listen queue completes at once");
            clients.push(client.unwrap());
        }
        for _ in 0..BURST {
            listener.accept().await.unwrap();
        }
    }
}
