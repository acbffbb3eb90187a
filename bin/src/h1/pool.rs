//! Idle keep-alive connections to one upstream, shared by a listener's connections on the
//! same shard: a request takes the one used last (its socket is the likeliest to be warm),
//! gives it back once its response has been read to the end, and connects anew when none is
//! idle. Each connection keeps its read buffer, so that a request allocates none.
//!
//! Each shard has its own idle list: a connection is registered with the event loop of the
//! shard that made it, and used from another shard, each of its readiness events would cross
//! threads.

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
/// Idle upstream connections kept (over all shards), and for how long.
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
    /// For each shard, oldest first.
    idle: Vec<Mutex<VecDeque<(Upstream, Instant)>>>,
    /// Kept for each shard.
    max_idle: usize,
}

impl UpstreamPool {
    /// A pool for the upstream at `authority` (`host:port`), used from `shards` shards.
    pub(crate) fn new(authority: String, shards: usize) -> Self {
        let shards = shards.max(1);
        Self {
            authority,
            idle: (0..shards).map(|_| Mutex::default()).collect(),
            max_idle: (MAX_IDLE / shards).max(1),
        }
    }

    /// The idle connections of the caller's shard.
    fn idle(&self) -> std::sync::MutexGuard<'_, VecDeque<(Upstream, Instant)>> {
        let shard = crate::shards::current().unwrap_or(0);
        let shard = &self.idle[shard % self.idle.len()];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection the upstream has not closed, if there is one.
    pub(crate) fn take(&self) -> Option<Upstream> {
        let now = Instant::now();
        loop {
            let (upstream, since) = self.idle().pop_back()?;
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
        let mut idle = self.idle();
        if let Some((oldest, since)) = idle.front()
            && (now.duration_since(*since) >= IDLE_TIMEOUT || !still_open(oldest))
        {
            idle.pop_front();
        }
        if idle.len() >= self.max_idle {
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
