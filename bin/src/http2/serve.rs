//! One HTTP/2 connection and all of its streams, driven by the connection's one task.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2::RecvStream;
use h2::server::{Connection, Handshake, SendResponse};
use hyper::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite};

use super::RequestBody;
use super::batched_writes::BatchedWrites;
use super::respond::respond;
use crate::connection::{Awaiting, Shared};
use crate::proxy::{ConnectionFacts, Proxy, ProxySlot};

/// How many times one wake-up of the connection goes round (streams, then the connection)
/// while new streams keep arriving, before it lets other connections run.
const ROUNDS: usize = 4;

/// What the streams of one connection share.
pub(crate) struct Http2Context {
    /// The listener's proxy; each stream uses the one current when it begins.
    pub(crate) proxy: Arc<ProxySlot>,
    pub(crate) facts: Arc<ConnectionFacts>,
}

enum State<T> {
    Handshaking(Handshake<BatchedWrites<T>, Bytes>),
    Serving(Connection<BatchedWrites<T>, Bytes>),
    Ended,
}

/// An HTTP/2 connection being served: the future ends when the connection does.
pub(crate) struct ProxiedHttp2<T> {
    state: State<T>,
    streams: FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>,
    context: Http2Context,
    shared: Arc<Shared>,
    /// Set once asked to finish: no stream begins after the ones in flight.
    draining: bool,
    /// What the watchdog was last told: every stream answered, some answers still queued.
    unflushed: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ProxiedHttp2<T> {
    /// Serves `io`, whose reads feed `shared`'s watchdog, with `builder`'s settings.
    pub(crate) fn new(
        io: T,
        builder: &h2::server::Builder,
        context: Http2Context,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Handshaking(builder.handshake(BatchedWrites::new(io))),
            streams: FuturesUnordered::new(),
            context,
            shared,
            draining: false,
            unflushed: false,
        }
    }

    /// Sends GOAWAY: the streams in flight finish, no other begins.
    pub(crate) fn drain(&mut self) {
        self.draining = true;
        if let State::Serving(conn) = &mut self.state {
            conn.graceful_shutdown();
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Future for ProxiedHttp2<T> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let State::Handshaking(handshake) = &mut this.state {
            match Pin::new(handshake).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(conn)) => {
                    this.state = State::Serving(conn);
                    if this.draining {
                        this.drain();
                    }
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!("HTTP/2 handshake failed: {e}");
                    this.state = State::Ended;
                }
            }
        }
        for _ in 0..ROUNDS {
            // The streams that can go on do first, so that what they queue leaves in the
            // connection's next write rather than one write each.
            while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {}
            let State::Serving(conn) = &mut this.state else {
                return Poll::Ready(());
            };
            let mut began = false;
            loop {
                match conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, send)))) => {
                        let stream = stream(&this.context, &this.shared, req, send);
                        this.streams.push(stream);
                        began = true;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!("HTTP/2 connection ended: {e}");
                        return Poll::Ready(());
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            if !began {
                // The h2 connection keeps a stream until its last bytes are written.
                let unflushed = this.streams.is_empty() && conn.has_streams();
                if unflushed != this.unflushed {
                    this.unflushed = unflushed;
                    this.shared.unflushed(unflushed);
                }
                return Poll::Pending;
            }
        }
        // Still busy: come back after the other tasks had their turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The future of a stream that has just begun.
fn stream(
    context: &Http2Context,
    shared: &Arc<Shared>,
    req: Request<RecvStream>,
    mut send: SendResponse<Bytes>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let awaiting = Awaiting::start(shared.clone());
    let proxy: Arc<Proxy> = context.proxy.current();
    let facts = context.facts.clone();
    Box::pin(async move {
        let (parts, recv) = req.into_parts();
        let head_request = parts.method == Method::HEAD;
        let body = RequestBody::new(recv, &parts.headers);
        let handling = proxy.handle(Request::from_parts(parts, body), facts);
        let mut handling = std::pin::pin!(handling);
        // A stream the client resets while the upstream works ends here; the exchange
        // with the upstream is dropped with it. One reset already (a HEADERS frame and its
        // RST_STREAM in one read) never reaches the upstream.
        let response = poll_fn(|cx| {
            if send.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            handling.as_mut().poll(cx).map(Some)
        })
        .await;
        if let Some(response) = response {
            respond(&mut send, response, awaiting.responded(), head_request).await;
        }
    })
}
