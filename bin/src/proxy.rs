//! The reverse proxy: one request in, one request to the HTTP/1.1 upstream (pooled), with
//! forwarding headers set, hop-by-hop headers removed, bodies streamed both ways, WebSocket
//! upgrades passed through, and 502/504 when the upstream is down or slow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use tokio_util::task::TaskTracker;

use certloop_acme::adapter::canonical_ip;

use crate::access_log::{AccessLog, Entry};
use crate::counted_body::ReportedBody;
use crate::forwarding::IpRange;
use crate::h1::Rewrite;
use crate::h1::UpstreamPool;
use crate::h1::for_h2::{self, SendError};
use crate::http2::RequestBody;
use crate::metrics::ListenerMetrics;

/// Response bodies: the upstream's, streamed, or a short one of our own.
pub(crate) type ProxyBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One listener's proxy.
pub(crate) struct Proxy {
    pub(crate) listener: Arc<str>,
    pub(crate) upstream: Uri,
    /// The upstream's path prefix without its trailing `/`, for the HTTP/1.1 path.
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) tunnel_idle: Duration,
    pub(crate) trusted_proxies: Vec<IpRange>,
    /// Idle connections to the upstream, for both client protocols.
    pub(crate) pool: UpstreamPool,
    /// Upgraded tunnels run here, so that shutdown waits for them like for connections.
    pub(crate) tunnels: TaskTracker,
    pub(crate) metrics: ListenerMetrics,
    pub(crate) access_log: Option<AccessLog>,
}

/// A listener's current proxy: a reload that changes only the upstream settings replaces it,
/// and the next request on every connection uses the new one. Reading it takes no lock.
pub(crate) struct ProxySlot(arc_swap::ArcSwap<Proxy>);

impl ProxySlot {
    pub(crate) fn new(proxy: Arc<Proxy>) -> Arc<Self> {
        Arc::new(Self(arc_swap::ArcSwap::new(proxy)))
    }

    pub(crate) fn current(&self) -> Arc<Proxy> {
        self.0.load_full()
    }

    pub(crate) fn replace(&self, proxy: Arc<Proxy>) {
        self.0.store(proxy);
    }
}

/// What every request of one TLS connection shares, for the access log.
pub(crate) struct ConnectionFacts {
    pub(crate) peer: SocketAddr,
    /// `TLSv1.3` or `TLSv1.2`.
    pub(crate) tls_version: &'static str,
    /// `h2`, `http/1.1`, or `-` when none was negotiated.
    pub(crate) alpn: &'static str,
}

/// Why the upstream gave no answer to forward.
pub(crate) enum UpstreamFailure<'a> {
    /// Not within the listener's `upstream_timeout`.
    TimedOut,
    /// Connecting, writing or reading failed, or the upstream closed the connection.
    Unreachable(&'a str),
    /// The upstream's answer cannot be forwarded.
    BadAnswer(&'a str),
}

/// The HTTP/2 response of [`Proxy::upstream_failed`]'s answer.
fn failed_answer((status, _, body): (u16, &'static str, &'static str)) -> Response<ProxyBody> {
    text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        body,
    )
}

/// A short text response.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    respond(status, "text/plain", body.to_owned())
}

/// A response of our own with a body of `content_type`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl Proxy {
    /// A proxy to `upstream` for the listener `listener`; forwarding headers from peers in
    /// `trusted_proxies` are kept and extended; upgraded tunnels run in `tunnels` and close
    /// after `tunnel_idle` without a byte moving; responses and upstream timings are counted
    /// in `metrics`, and each request gets a line in `access_log` when there is one. Idle
    /// upstream connections are kept for each of the `shards`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        listener: &str,
        upstream: Uri,
        timeout: Duration,
        tunnel_idle: Duration,
        trusted_proxies: Vec<IpRange>,
        tunnels: TaskTracker,
        metrics: ListenerMetrics,
        access_log: Option<AccessLog>,
        shards: usize,
    ) -> Arc<Self> {
        let port = upstream.port_u16().unwrap_or(80);
        let host = upstream.host().unwrap_or_default();
        let pool = UpstreamPool::new(format!("{}:{port}", host), shards);
        Arc::new(Self {
            listener: listener.into(),
            prefix: upstream.path().trim_end_matches('/').to_owned(),
            upstream,
            pool,
            timeout,
            tunnel_idle,
            trusted_proxies,
            tunnels,
            metrics,
            access_log,
        })
    }

    /// How a request from `client` is written for this proxy's upstream.
    pub(crate) fn rewrite(&self, client: SocketAddr) -> Rewrite<'_> {
        let peer = canonical_ip(client.ip());
        Rewrite {
            prefix: &self.prefix,
            authority: self.authority(),
            peer,
            peer_is_trusted: self.trusted_proxies.iter().any(|r| r.contains(peer)),
        }
    }

    /// Counts and logs a request the upstream gave no answer to; returns the status, reason
    /// and body to answer it with (the same on HTTP/1.1 and HTTP/2).
    pub(crate) fn upstream_failed(
        &self,
        failure: &UpstreamFailure<'_>,
    ) -> (u16, &'static str, &'static str) {
        let (listener, upstream) = (&self.listener, &self.upstream);
        match failure {
            UpstreamFailure::TimedOut => {
                self.metrics.upstream_failed(true);
                tracing::warn!(listener = %listener, upstream = %upstream, "upstream did not answer within {:?}: 504", self.timeout);
                (504, "Gateway Timeout", "upstream timed out\n")
            }
            UpstreamFailure::Unreachable(e) => {
                self.metrics.upstream_failed(false);
                tracing::warn!(listener = %listener, upstream = %upstream, "upstream unreachable: {e}: 502");
                (502, "Bad Gateway", "upstream unreachable\n")
            }
            UpstreamFailure::BadAnswer(e) => {
                self.metrics.upstream_failed(false);
                tracing::warn!(listener = %listener, upstream = %upstream, "upstream answer not forwarded: {e}: 502");
                (502, "Bad Gateway", "bad upstream response\n")
            }
        }
    }

    /// The upstream's authority as configured: the `Host` of a request that names none.
    pub(crate) fn authority(&self) -> &str {
        self.upstream.authority().map_or("", |a| a.as_str())
    }

    /// Forwards one request (see [`Self::forward`]), counts its response, and logs it once
    /// its body has been sent.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<RequestBody>,
        connection: Arc<ConnectionFacts>,
    ) -> Response<ProxyBody> {
        let Some(log) = self.access_log.clone() else {
            let (response, _) = self.clone().forward(req, connection.peer, None).await;
            self.metrics.response(response.status().as_u16());
            return response;
        };
        let (started, time) = (std::time::Instant::now(), std::time::SystemTime::now());
        let host = request_host(&req);
        let (method, path) = (req.method().clone(), req.uri().path_and_query().cloned());
        let version = match req.version() {
            Version::HTTP_2 => "HTTP/2.0",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let bytes_in = Arc::new(AtomicU64::new(0));
        let (response, upstream) = (self.clone())
            .forward(req, connection.peer, Some(bytes_in.clone()))
            .await;
        let status = response.status().as_u16();
        self.metrics.response(status);
        let listener = self.listener.clone();
        response.map(move |body| {
            ReportedBody::new(body, move |bytes_out| {
                log.record(&Entry {
                    time,
                    listener,
                    client: connection.peer,
                    host,
                    method,
                    path,
                    version,
                    status,
                    bytes_in: bytes_in.load(Ordering::Relaxed),
                    bytes_out,
                    duration: started.elapsed(),
                    upstream,
                    tls_version: connection.tls_version,
                    alpn: connection.alpn,
                });
            })
            .boxed()
        })
    }

    /// Forwards one HTTP/2 request from `client` (HTTP/1.1 connections take the `h1` path). The
    /// request body's bytes are counted into `bytes_in` when given; the upstream's time to
    /// answer is returned with the response.
    async fn forward(
        self: Arc<Self>,
        req: Request<RequestBody>,
        client: SocketAddr,
        bytes_in: Option<Arc<AtomicU64>>,
    ) -> (Response<ProxyBody>, Option<Duration>) {
        let req = req.map(|body| body.counting(bytes_in));
        let asked = std::time::Instant::now();
        let answer = tokio::time::timeout(self.timeout, for_h2::send(&self, req, client)).await;
        let response = match answer {
            Ok(Ok(response)) => {
                let took = asked.elapsed();
                self.metrics.upstream_answered(took);
                return (response.map(BodyExt::boxed), Some(took));
            }
            Ok(Err(SendError::BadRequest(what))) => text(StatusCode::BAD_REQUEST, what),
            Ok(Err(SendError::Upstream(e))) => {
                failed_answer(self.upstream_failed(&UpstreamFailure::Unreachable(&e)))
            }
            Err(_) => failed_answer(self.upstream_failed(&UpstreamFailure::TimedOut)),
        };
        (response, None)
    }
}

/// The host the client asked for: `Host`, or the authority of an HTTP/2 request.
fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}
