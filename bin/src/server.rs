//! Accept loops: TLS listeners (HTTP/1.1 and HTTP/2 through the proxy, TLS-ALPN-01 handshakes
//! closed after the handshake) and the plain-HTTP listener (HTTP-01 answers, 308 to HTTPS).
//! Both accept through the shared backoff, hold their connection caps, and run every
//! connection on a shard (`shards.rs`) in the process's task tracker so that shutdown waits
//! for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use certloop_acme::adapter::{AcceptBackoff, accept_with_backoff};
use certloop_tokio::{Http01Tokens, TokioRuntime};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Admitted};
use crate::connection::{self, HttpBuilders};
use crate::h1::Http1Context;
use crate::http2::Http2Context;
use crate::limits::Limits;
use crate::listen::ListenSocket;
use crate::metrics::{Handshake, ListenerMetrics};
use crate::proxy::{ConnectionFacts, ProxyBody, ProxySlot, text};
use crate::shards::{self, Shards};
use crate::tls_stream;
use crate::watchdog::Protocol;

/// What every connection of one listener shares.
pub(crate) struct ListenerContext {
    name: String,
    limits: Limits,
    admission: Admission,
    builders: Arc<HttpBuilders>,
    tracker: TaskTracker,
    shards: Arc<Shards>,
    stop: watch::Receiver<bool>,
    metrics: ListenerMetrics,
}

impl ListenerContext {
    /// The context of listener `name`, whose connections run on `shards` in `tracker`, close
    /// gracefully when `stop` turns true, and are counted in `metrics`.
    pub(crate) fn new(
        name: &str,
        limits: Limits,
        tracker: TaskTracker,
        shards: Arc<Shards>,
        stop: watch::Receiver<bool>,
        metrics: ListenerMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            admission: Admission::new(limits.max_connections, limits.max_connections_per_ip),
            builders: Arc::new(HttpBuilders::new(&limits)),
            limits,
            tracker,
            shards,
            stop,
            metrics,
        })
    }
}

impl ListenerContext {
    /// hyper's settings for this listener's connections.
    pub(crate) fn builders(&self) -> Arc<HttpBuilders> {
        self.builders.clone()
    }

    /// Turns true when the listener must stop.
    pub(crate) fn stop(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }
}

/// Accepts connections until `stop` turns true, on a shard (`shards.rs`), handing each
/// admitted one to `serve` in the task tracker; each counts as open in the
/// listener's metrics until `serve` ends. Returns the socket, still open, so that a reload can
/// hand it to the listener's next accept loop.
pub(crate) async fn accept_loop<S, Fut>(
    ctx: Arc<ListenerContext>,
    listener: ListenSocket,
    serve: S,
) -> ListenSocket
where
    S: Fn(TcpStream, SocketAddr, Admitted) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accepting = ctx.shards.acceptor().spawn(accept_on_shard(
        ctx.clone(),
        listener.clone(),
        Arc::new(serve),
    ));
    let _ = accepting.await;
    listener
}

/// The accept loop, on its shard's own descriptor of the socket (made again with the accept
/// backoff if that fails, as when out of file descriptors). A connection is served where it
/// was accepted, unless another shard serves fewer; then it moves there.
async fn accept_on_shard<S, Fut>(ctx: Arc<ListenerContext>, socket: ListenSocket, serve: Arc<S>)
where
    S: Fn(TcpStream, SocketAddr, Admitted) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rt = TokioRuntime::current();
    let mut backoff = AcceptBackoff::default();
    let mut stop = ctx.stop.clone();
    let listener = loop {
        if *stop.borrow_and_update() {
            return;
        }
        let register = accept_with_backoff(&rt, &ctx.name, &mut backoff, || {
            std::future::ready(socket.for_shard().and_then(TcpListener::from_std))
        });
        tokio::select! {
            listener = register => break listener,
            changed = stop.changed() => if changed.is_err() {
                return; // the stop sender is gone: stop too
            },
        }
    };
    drop(socket);
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let slot = tokio::select! {
            slot = ctx.admission.slot() => slot,
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return, // the stop sender is gone: stop too
            },
        };
        let accept = accept_with_backoff(&rt, &ctx.name, &mut backoff, || listener.accept());
        let (tcp, peer) = tokio::select! {
            accepted = accept => accepted,
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let Some(admitted) = ctx.admission.admit(slot, peer.ip()) else {
            tracing::debug!(listener = %ctx.name, %peer, "closed: too many connections from this address");
            continue;
        };
        let open = ctx.metrics.connection_opened();
        let serve = serve.clone();
        let shard = ctx.shards.place();
        let admitted = admitted.on_shard(ctx.shards.open(shard));
        if Some(shard) == shards::current() {
            ctx.shards.spawn(shard, &ctx.tracker, async move {
                serve(tcp, peer, admitted).await;
                drop(open);
            });
            continue;
        }
        let name = ctx.clone();
        let moved = tcp.into_std();
        ctx.shards.spawn(shard, &ctx.tracker, async move {
            match moved.and_then(TcpStream::from_std) {
                Ok(tcp) => serve(tcp, peer, admitted).await,
                Err(e) => tracing::debug!(listener = %name.name, %peer, "closed: {e}"),
            }
            drop(open);
        });
    }
}

/// Accepts TLS connections until the context's stop signal, then returns the socket. Each
/// request goes to the proxy in `proxy` at the time it arrives.
pub(crate) async fn serve_tls(
    ctx: Arc<ListenerContext>,
    listener: ListenSocket,
    tls: Arc<rustls::ServerConfig>,
    proxy: Arc<ProxySlot>,
) -> ListenSocket {
    let accepting = ctx.clone();
    let serve = move |tcp: TcpStream, peer: SocketAddr, admitted: Admitted| {
        let (ctx, tls, proxy) = (ctx.clone(), tls.clone(), proxy.clone());
        async move {
            let admitted = Arc::new(admitted);
            let _ = tcp.set_nodelay(true);
            let handshake = tls_stream::accept(tcp, tls);
            let tls = match tokio::time::timeout(ctx.limits.tls_handshake_timeout, handshake).await
            {
                Ok(Ok(tls)) => {
                    ctx.metrics.handshake(Handshake::Completed);
                    tls
                }
                Ok(Err(e)) => {
                    ctx.metrics.handshake(Handshake::Failed);
                    tracing::debug!(listener = %ctx.name, %peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    ctx.metrics.handshake(Handshake::TimedOut);
                    tracing::debug!(listener = %ctx.name, %peer, "TLS handshake timed out");
                    return;
                }
            };
            let session = tls.session();
            let (protocol, alpn) = match session.alpn_protocol() {
                Some(certloop_acme::adapter::ACME_TLS_ALPN) => return, // the handshake was the answer
                Some(b"h2") => (Protocol::Http2, "h2"),
                Some(b"http/1.1") => (Protocol::Http1, "http/1.1"),
                _ => (Protocol::Http1, "-"),
            };
            let tls_version = match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "TLSv1.3",
            };
            let facts = Arc::new(ConnectionFacts {
                peer,
                tls_version,
                alpn,
            });
            if protocol == Protocol::Http1 {
                let context = Http1Context {
                    proxy,
                    facts,
                    slots: admitted,
                    max_head: 0, // set from the listener's limits
                };
                connection::serve_proxied_http1(tls, context, &ctx.builders, ctx.stop.clone())
                    .await;
                return;
            }
            let context = Http2Context { proxy, facts };
            connection::serve_proxied_http2(tls, context, &ctx.builders, ctx.stop.clone()).await;
        }
    };
    accept_loop(accepting, listener, serve).await
}

/// The HTTP-01 tokens of every ACME listener, for the `[http]` listener; a reload changes the
/// list.
pub(crate) type TokenLists = Arc<std::sync::RwLock<Vec<Arc<Http01Tokens>>>>;

/// The `[http]` listener: HTTP-01 answers for every ACME listener, 308 to HTTPS otherwise.
pub(crate) async fn serve_http(
    ctx: Arc<ListenerContext>,
    listener: ListenSocket,
    tokens: TokenLists,
    https_port: u16,
) -> ListenSocket {
    let accepting = ctx.clone();
    let serve = move |tcp: TcpStream, _peer: SocketAddr, admitted: Admitted| {
        let (ctx, tokens) = (ctx.clone(), tokens.clone());
        async move {
            let _admitted = admitted;
            let (builders, stop) = (ctx.builders(), ctx.stop());
            let handler = move |req: Request<Incoming>| {
                let lists = tokens.read().unwrap_or_else(|e| e.into_inner());
                let response = http_response(&req, &lists, https_port);
                drop(lists);
                ctx.metrics.response(response.status().as_u16());
                std::future::ready(response)
            };
            connection::serve(tcp, handler, builders, stop).await;
        }
    };
    accept_loop(accepting, listener, serve).await
}

fn http_response(
    req: &Request<Incoming>,
    tokens: &[Arc<Http01Tokens>],
    https_port: u16,
) -> Response<ProxyBody> {
    let path = req.uri().path();
    if req.method() == Method::GET
        && let Some(answer) = tokens.iter().find_map(|t| t.answer_path(path))
    {
        return text(StatusCode::OK, &answer);
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(host, |(h, _)| h);
    if host.is_empty() {
        return text(StatusCode::BAD_REQUEST, "missing Host header\n");
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut response = text(StatusCode::PERMANENT_REDIRECT, "redirecting to HTTPS\n");
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::metrics::Metrics;

    /// The connections an accept loop holds end up on both shards; stopping hands the socket
    /// back, and a new accept loop on it (on the other shard) serves again, as after a reload.
    #[tokio::test]
    async fn connections_spread_over_shards_and_the_socket_comes_back_for_the_next_loop() {
        let (shards, stop_shards) = Shards::start(2).unwrap();
        let tracker = TaskTracker::new();
        let metrics = Metrics::new();
        let served_on = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut socket = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        for round in 0..2 {
            let (stop, stop_rx) = watch::channel(false);
            let ctx = ListenerContext::new(
                "test",
                Limits::default(),
                tracker.clone(),
                shards.clone(),
                stop_rx,
                metrics.listener("test"),
            );
            let (seen, done) = (served_on.clone(), ended.clone());
            // Greets, then holds the connection (and its admission, with its shard load) until
            // the client closes it.
            let serve = move |mut tcp: TcpStream, _: SocketAddr, admitted: Admitted| {
                seen.lock().unwrap().push(shards::current());
                let done = done.clone();
                async move {
                    let _ = tcp.write_all(b"hi").await;
                    let _ = tcp.read(&mut [0u8; 1]).await;
                    drop(admitted);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            };
            let accepting = tokio::spawn(accept_loop(ctx, socket, serve));
            let mut clients = Vec::new();
            for _ in 0..4 {
                let mut client = TcpStream::connect(addr).await.unwrap();
                let mut greeting = [0u8; 2];
                tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut greeting))
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: no greeting"))
                    .unwrap();
                clients.push(client);
            }
            let mut on = served_on.lock().unwrap().split_off(0);
            on.sort();
            on.dedup();
            assert_eq!(
                on,
                [Some(0), Some(1)],
                "round {round}: served on both shards"
            );
            stop.send_replace(true);
            socket = tokio::time::timeout(Duration::from_secs(10), accepting)
                .await
                .expect("the accept loop stops")
                .unwrap();
            // The next round starts with both shards empty.
            drop(clients);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while ended.load(std::sync::atomic::Ordering::Relaxed) < 4 * (round + 1) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: the connections did not end"
                );
                tokio::task::yield_now().await;
            }
        }
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("every connection ends once its client has gone");
        drop(stop_shards);
    }
}
