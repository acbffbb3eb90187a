//! Serving one HTTP connection under the watchdog: hyper does the protocol, the watchdog
//! (`watchdog.rs`) decides when a slow head or an idle keep-alive has had its time, and a stop
//! signal turns into a graceful shutdown (in-flight requests finish, idle connections close).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

use crate::limits::{CLOSE_GRACE, Limits, MAX_CONCURRENT_STREAMS};
use crate::proxy::ProxyBody;
use crate::watchdog::{Activity, Deadlines, Protocol, Verdict};

/// hyper's connection settings for a listener with `limits`.
pub(crate) fn http_builder(limits: &Limits, http1_only: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog times request heads, from their first byte rather than from the end
        // of the previous response as hyper would.
        .header_read_timeout(None)
        // A head that does not fit is answered with 431 and the connection closed.
        .max_buf_size(limits.max_request_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): a client whose reset streams pile up gets a GOAWAY.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024);
    if http1_only {
        builder.http1_only()
    } else {
        builder
    }
}

/// The deadlines the watchdog enforces under `limits`.
pub(crate) fn deadlines(limits: &Limits) -> Deadlines {
    Deadlines {
        request_header: limits.request_header_timeout,
        idle: limits.idle_timeout,
    }
}

/// What the IO wrapper and the service tell the watchdog.
struct Shared {
    activity: Mutex<Activity>,
    head_began: Notify,
}

impl Shared {
    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Ends a request's in-flight time when the service future completes or is dropped (an HTTP/2
/// stream reset drops it).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn start(shared: Arc<Shared>) -> Self {
        shared.activity().on_request_start();
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity().on_request_end(Instant::now());
    }
}

/// The client's stream, reporting what it reads to the watchdog.
struct Watched<T> {
    inner: T,
    shared: Arc<Shared>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if matches!(result, Poll::Ready(Ok(()))) && !read.is_empty() {
            let mut activity = self.shared.activity();
            let was_pending = activity.head_pending();
            activity.on_read(Instant::now(), read);
            if !was_pending && activity.head_pending() {
                self.shared.head_began.notify_one();
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves HTTP on `io` until the client leaves, the watchdog closes it, or `stop` turns true
/// and the in-flight requests have finished.
pub(crate) async fn serve<T, H, F>(
    io: T,
    protocol: Protocol,
    handler: H,
    builder: &auto::Builder<TokioExecutor>,
    deadlines: Deadlines,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let shared = Arc::new(Shared {
        activity: Mutex::new(Activity::new(protocol, Instant::now())),
        head_began: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        inner: io,
        shared: shared.clone(),
    });
    let service_shared = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let in_flight = InFlight::start(service_shared.clone());
        let response = handler(req);
        async move {
            let response = response.await;
            drop(in_flight);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    // Set once the watchdog closed the connection: past it, the connection is dropped.
    let mut drop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = match (drop_at, shared.activity().verdict(now, deadlines)) {
            (Some(at), _) if now >= at => return,
            (Some(at), _) | (None, Verdict::CheckAt(at)) => at,
            (None, Verdict::Close(reason)) => {
                tracing::debug!("closing connection: {reason:?}");
                conn.as_mut().graceful_shutdown();
                drop_at = Some(now + CLOSE_GRACE);
                continue;
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(wake.into()) => {}
            () = shared.head_began.notified() => {}
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
