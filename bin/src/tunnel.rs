//! Upgraded connections (WebSocket and other HTTP/1.1 upgrades): bytes are copied both ways
//! until either side closes or nothing moves for the idle timeout. The caller keeps the
//! connection's slots alive for as long as this runs, so tunnels count against the caps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::observed_io::{IoObserver, Observed};

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TunnelEnd {
    /// One side closed (or failed).
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
}

/// Milliseconds since the tunnel opened, at the last byte moved.
struct LastActivity {
    opened: Instant,
    at_ms: AtomicU64,
}

impl LastActivity {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.opened + Duration::from_millis(self.at_ms.load(Ordering::Relaxed))
    }
}

/// Every byte moved, either way, on either side, counts as activity.
impl IoObserver for Arc<LastActivity> {
    fn read(&self, _bytes: &[u8]) {
        self.touch();
    }

    fn wrote(&self, _count: usize) {
        self.touch();
    }
}

/// Copies between `client` and `upstream` until one closes or nothing moves for `idle`.
pub(crate) async fn run<A, B>(client: A, upstream: B, idle: Duration) -> TunnelEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(LastActivity {
        opened: Instant::now(),
        at_ms: AtomicU64::new(0),
    });
    let mut client = Observed {
        inner: client,
        observer: activity.clone(),
    };
    let mut upstream = Observed {
        inner: upstream,
        observer: activity.clone(),
    };
    let idle_watch = async {
        loop {
            let deadline = activity.at() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => TunnelEnd::Closed,
        () = idle_watch => TunnelEnd::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_lives_while_bytes_move_and_ends_when_idle() {
        let (client, mut client_far) = tokio::io::duplex(64);
        let (upstream, mut upstream_far) = tokio::io::duplex(64);
        let tunnel = tokio::spawn(run(client, upstream, Duration::from_secs(60)));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            client_far.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            upstream_far.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
        }
        assert!(
            !tunnel.is_finished(),
            "closed although bytes moved every 50 s"
        );
        assert_eq!(tunnel.await.unwrap(), TunnelEnd::Idle);
    }

    #[tokio::test]
    async fn a_tunnel_ends_when_a_side_closes() {
        let (client, client_far) = tokio::io::duplex(64);
        let (upstream, upstream_far) = tokio::io::duplex(64);
        drop((client_far, upstream_far));
        let end = run(client, upstream, Duration::from_secs(60));
        assert_eq!(end.await, TunnelEnd::Closed);
    }
}
