//! The seam between the shared code and an async runtime: four operations each adapter
//! supplies in its runtime's own idiom, and the wall clock (the system's, unless a simulated
//! runtime supplies its own). Everything else is written once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certloop_core::UnixTime;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the shared code needs from a runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream, as futures-io.
    type Tcp: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static;

    /// Connects to `host:port`.
    fn connect(&self, host: String, port: u16) -> BoxFuture<io::Result<Self::Tcp>>;

    /// Completes after `duration` on the runtime's own timer.
    fn sleep(&self, duration: Duration) -> BoxFuture<()>;

    /// Runs `future` in the background.
    fn spawn(&self, future: BoxFuture<()>);

    /// Runs blocking `work` (file IO) off the async threads.
    fn unblock<T: Send + 'static>(&self, work: Box<dyn FnOnce() -> T + Send>) -> BoxFuture<T>;

    /// The wall clock, which certificate validity is measured in. Runtimes keep the default,
    /// the system clock; a simulated runtime supplies its virtual one.
    fn wall_clock(&self) -> UnixTime {
        system_clock()
    }
}

/// The system's wall clock, as the core wants it.
pub fn system_clock() -> UnixTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    UnixTime::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// `future`'s output, or `None` if `duration` passes first.
pub async fn timeout<R: Runtime, T>(
    rt: &R,
    duration: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    let sleep = rt.sleep(duration);
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep.await;
        None
    })
    .await
}
