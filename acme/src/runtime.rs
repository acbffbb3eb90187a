//! The seam between the shared code and an async runtime: four operations each adapter
//! supplies in its runtime's own idiom. Everything else is written once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

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
