//! Serving one HTTP connection under the watchdog: the proxy's own paths (`h1` for HTTP/1.1
//! over TLS, `http2` for HTTP/2, as ALPN chose: there is no version sniffing, so a connection
//! told to stop right after its handshake still serves one request) or hyper's HTTP/1.1 server
//! (the plain-HTTP and admin listeners) do the protocol, the watchdog (`watchdog.rs`) decides
//! when a slow head, a stalled body or an idle keep-alive has had its time, and a stop signal
//! turns into a graceful shutdown (in-flight requests finish, idle connections close).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::http2::{Http2Context, ProxiedHttp2};
use crate::limits::{
    CLOSE_GRACE, HTTP2_LOCAL_ERROR_RESETS, HTTP2_SEND_BUFFER, HTTP2_WINDOW, Limits,
    MAX_CONCURRENT_STREAMS,
};
use crate::observed_io::{IoObserver, Observed};
use crate::proxy::ProxyBody;
use crate::watchdog::{Activity, BodyId, Deadlines, Protocol, Verdict};

/// A listener's connection settings, one per protocol.
pub(crate) struct HttpBuilders {
    http1: http1::Builder,
    http2: h2::server::Builder,
    deadlines: Deadlines,
    max_request_header_bytes: usize,
}

impl HttpBuilders {
    /// The settings for a listener with `limits`.
    pub(crate) fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        // The watchdog times request heads, from their first byte rather than from the end of
        // the previous response as hyper would; a head over the limit (complete, or still
        // arriving) is answered with 431 and the connection closed.
        http1
            .header_read_timeout(None)
            .max_header_size(limits.max_request_header_bytes);
        let mut http2 = h2::server::Builder::new();
        // hyper's settings, which the proxy served HTTP/2 with before it had its own loop.
        http2
            .initial_window_size(HTTP2_WINDOW)
            .initial_connection_window_size(HTTP2_WINDOW)
            .max_send_buffer_size(HTTP2_SEND_BUFFER)
            .max_local_error_reset_streams(Some(HTTP2_LOCAL_ERROR_RESETS))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(
                u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX),
            );
        Self {
            http1,
            http2,
            deadlines: Deadlines {
                request_header: limits.request_header_timeout,
                idle: limits.idle_timeout,
            },
            max_request_header_bytes: limits.max_request_header_bytes,
        }
    }
}

/// What the IO wrapper, the service and the response bodies tell the watchdog.
pub(crate) struct Shared {
    activity: Mutex<Activity>,
    /// A request head began during the connection's last poll: the watchdog's deadline moved.
    head_began: AtomicBool,
}

impl Shared {
    /// HTTP/2: whether responses handed over are still partly queued for the client.
    pub(crate) fn unflushed(&self, unflushed: bool) {
        self.activity().on_unflushed(unflushed);
    }

    fn new(protocol: Protocol) -> Arc<Self> {
        Arc::new(Self {
            activity: Mutex::new(Activity::new(protocol, Instant::now())),
            head_began: AtomicBool::new(false),
        })
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request between its head and its response head. Dropped without [`Self::responded`]
/// (an HTTP/2 stream reset drops the service future), the request simply ends.
pub(crate) struct Awaiting(Option<Arc<Shared>>);

impl Awaiting {
    /// A complete request head arrived.
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        shared.activity().on_request_start();
        Self(Some(shared))
    }

    /// The response head is ready; its body is timed by the returned guard.
    pub(crate) fn responded(mut self) -> Streaming {
        let shared = self.0.take().expect("responded once");
        let id = shared.activity().on_response(Instant::now());
        Streaming {
            shared: Some(shared),
            id,
        }
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.activity().on_request_dropped(Instant::now());
        }
    }
}

/// A response body being sent.
pub(crate) struct Streaming {
    shared: Option<Arc<Shared>>,
    id: BodyId,
}

impl Streaming {
    /// A piece of the body went out.
    pub(crate) fn progress(&self) {
        if let Some(shared) = &self.shared {
            shared.activity().on_body_progress(self.id, Instant::now());
        }
    }

    fn end(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.activity().on_body_end(self.id, Instant::now());
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.end();
    }
}

/// A response body that tells the watchdog each time hyper takes a piece of it (hyper asks
/// only when the client has made room), and when it is done.
pub(crate) struct TrackedBody {
    inner: ProxyBody,
    streaming: Streaming,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.streaming.progress(),
            Poll::Ready(None | Some(Err(_))) => self.streaming.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's reads feed the watchdog (a head that begins wakes it).
impl IoObserver for Arc<Shared> {
    fn read(&self, bytes: &[u8]) {
        let began = {
            let mut activity = self.activity();
            let was_pending = activity.head_pending();
            activity.on_read(Instant::now(), bytes);
            !was_pending && activity.head_pending()
        };
        if began {
            self.head_began.store(true, Ordering::Relaxed);
        }
    }
}

/// A connection that can be asked to finish gracefully.
trait Drain: Future {
    /// The stop signal: finish what is in flight, then close.
    fn drain(self: Pin<&mut Self>);

    /// The watchdog's verdict: begin no other request.
    fn close(self: Pin<&mut Self>) {
        self.drain();
    }
}

/// How far a connection on the proxy's HTTP/1.1 path is from its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Serving,
    /// The stop signal: the request in flight, or the first one of a connection that has not
    /// had one yet, is served, with `Connection: close`.
    Stopping,
    /// The watchdog's verdict: no other request begins.
    Closing,
}

/// A connection on the proxy's HTTP/1.1 path (`h1`), told how far it is from its end.
struct ProxiedHttp1 {
    serving: Pin<Box<dyn Future<Output = ()> + Send>>,
    ending: watch::Sender<Ending>,
}

impl Future for ProxiedHttp1 {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.serving.as_mut().poll(cx)
    }
}

impl Drain for ProxiedHttp1 {
    fn drain(self: Pin<&mut Self>) {
        self.ending.send_if_modified(|ending| {
            let serving = *ending == Ending::Serving;
            if serving {
                *ending = Ending::Stopping;
            }
            serving
        });
    }

    fn close(self: Pin<&mut Self>) {
        self.ending.send_replace(Ending::Closing);
    }
}

impl<I, S> Drain for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = TrackedBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drain for ProxiedHttp2<T> {
    fn drain(self: Pin<&mut Self>) {
        self.get_mut().drain();
    }
}

/// Serves HTTP/1.1 with hyper on `io` until the client leaves, the watchdog closes it, or
/// `stop` turns true and the in-flight requests have finished.
pub(crate) fn serve<T, H, F>(
    io: T,
    handler: H,
    builders: Arc<HttpBuilders>,
    stop: watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let shared = Shared::new(Protocol::Http1);
    let io = TokioIo::new(Observed {
        inner: io,
        observer: shared.clone(),
    });
    let service_shared = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let awaiting = Awaiting::start(service_shared.clone());
        let response = handler(req);
        async move {
            let response = response.await;
            let streaming = awaiting.responded();
            Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, streaming }))
        }
    });
    let conn = builders.http1.serve_connection(io, service).with_upgrades();
    Box::pin(watch_over(Box::pin(conn), shared, builders.deadlines, stop))
}

/// Serves a TLS connection that negotiated HTTP/1.1 (or nothing) on the proxy's own path,
/// under the same watchdog as [`serve`].
pub(crate) fn serve_proxied_http1<T>(
    io: T,
    context: crate::h1::Http1Context,
    builders: &HttpBuilders,
    stop: watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Shared::new(Protocol::Http1);
    let io = Observed {
        inner: io,
        observer: shared.clone(),
    };
    let (ending, ending_rx) = watch::channel(Ending::Serving);
    let context = crate::h1::Http1Context {
        max_head: builders.max_request_header_bytes,
        ..context
    };
    let serving = Box::pin(crate::h1::serve(io, context, shared.clone(), ending_rx));
    let conn = ProxiedHttp1 { serving, ending };
    Box::pin(watch_over(Box::pin(conn), shared, builders.deadlines, stop))
}

/// Serves a TLS connection that negotiated HTTP/2 on the proxy's own loop (`http2`), under
/// the same watchdog as [`serve`].
pub(crate) fn serve_proxied_http2<T>(
    io: T,
    context: Http2Context,
    builders: &HttpBuilders,
    stop: watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Shared::new(Protocol::Http2);
    let io = Observed {
        inner: io,
        observer: shared.clone(),
    };
    let conn = ProxiedHttp2::new(io, &builders.http2, context, shared.clone());
    Box::pin(watch_over(Box::pin(conn), shared, builders.deadlines, stop))
}

/// Drives `conn`, closing it when the watchdog says so or draining it on `stop`. (`conn` comes
/// boxed: moved into this future, it would be kept twice, as argument and as pinned local.)
async fn watch_over<C: Drain + Send>(
    mut conn: Pin<Box<C>>,
    shared: Arc<Shared>,
    deadlines: Deadlines,
    mut stop: watch::Receiver<bool>,
) {
    let mut stopping = *stop.borrow_and_update();
    if stopping {
        shared.activity().on_stop(Instant::now());
        conn.as_mut().drain();
    }
    // Set once the watchdog closed the connection: past it, the connection is dropped.
    let mut drop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let verdict = shared.activity().verdict(now, deadlines);
        let wake = match (drop_at, verdict) {
            (Some(at), _) if now >= at => {
                tracing::debug!("connection dropped: it did not close within {CLOSE_GRACE:?}");
                return;
            }
            (Some(at), _) | (None, Verdict::CheckAt(at)) => at,
            (None, Verdict::Close(reason)) => {
                tracing::debug!("closing connection: {reason:?}");
                conn.as_mut().close();
                drop_at = Some(now + CLOSE_GRACE);
                continue;
            }
        };
        // Biased: whether a head began is known once the connection has been polled. The
        // flag is set by the connection's reads, which happen only while it is polled here (a
        // tunnel's come after this loop has returned), so the check needs no waker (a wake-up
        // of its own task would send the task through the scheduler again, once per request).
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            () = poll_fn(|_| match shared.head_began.swap(false, Ordering::Relaxed) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }) => {}
            () = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.changed(), if !stopping => {
                stopping = true;
                shared.activity().on_stop(Instant::now());
                conn.as_mut().drain();
            }
        }
    }
}
