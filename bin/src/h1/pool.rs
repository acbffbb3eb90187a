//! Idle keep-alive connections to one upstream, shared by a listener's connections: a request
//! takes the one used last (its socket is the likeliest to be warm), gives it back once its
//! response has been read to the end, and connects anew when none is idle. Each connection
//! keeps its read buffer, so that a request allocates none.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// How long a new upstream connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The read buffer each connection starts with (it grows for larger heads).
pub(crate) const READ_SIZE: usize = 16 * 1024;
/// Idle upstream connections kept, and for how long.
const MAX_IDLE: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One connection to the upstream.
pub(crate) struct Upstream {
    pub(crate) stream: TcpStream,
    /// What was read from the stream and not used yet.
    pub(crate) buf: BytesMut,
}

/// The idle connections to one upstream.
pub(crate) struct UpstreamPool {
    /// `host:port`.
    authority: String,
    /// Oldest first.
    idle: Mutex<VecDeque<(Upstream, Instant)>>,
}

impl UpstreamPool {
    /// A pool for the upstream at `authority` (`host:port`).
    pub(crate) fn new(authority: String) -> Self {
        Self {
            authority,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// An idle connection the upstream has not closed, if there is one.
    pub(crate) fn take(&self) -> Option<Upstream> {
        let now = Instant::now();
        loop {
            let (upstream, since) = self
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_back()?;
            if now.duration_since(since) < IDLE_TIMEOUT && still_open(&upstream) {
                return Some(upstream);
            }
        }
    }

    /// A new connection.
    pub(crate) async fn connect(&self) -> io::Result<Upstream> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Upstream {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
        })
    }

    /// Gives back a connection whose last response was read to the end.
    /// Each time, the oldest idle connection is dropped if it has been idle too long or the
    /// upstream has closed it, so that closed connections do not pile up after a burst.
    pub(crate) fn give_back(&self, mut upstream: Upstream) {
        upstream.buf.clear();
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((oldest, since)) = idle.front()
            && (now.duration_since(*since) >= IDLE_TIMEOUT || !still_open(oldest))
        {
            idle.pop_front();
        }
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back((upstream, now));
    }
}

/// Whether an idle connection can still carry a request: a read on it finds nothing unless the
/// upstream closed it (or said something out of turn).
fn still_open(upstream: &Upstream) -> bool {
    matches!(upstream.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
