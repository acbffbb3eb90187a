//! instant-acme's `HttpClient` over the runtime seam: one HTTP/1.1 connection per request
//! (hyper's low-level client, [`HttpsTransport`]), TLS by futures-rustls with the shared
//! provider, a timeout on every request. The status of every response is checked here, before
//! instant-acme reads a body: an error status becomes a [`CaAnswered`] error carrying the
//! status, the problem document and the response's own `Retry-After` (except a `badNonce`,
//! which instant-acme retries itself). The `Retry-After` of a successful response is kept per
//! URL for polling.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use http::Request;
use http::header::{HOST, RETRY_AFTER};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Limited};
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient, Problem};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};

use certloop_core::UnixTime;

use crate::runtime::{BoxFuture, Runtime, timeout};

/// The longest one ACME HTTP request may take, connect to last header.
pub(crate) const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one ACME request may take when the first certificate must arrive within
/// `startup_timeout`: a third of it (at least a second, at most [`MAX_REQUEST_TIMEOUT`]), so
/// that a stalled CA still leaves room for the fast startup retries.
pub(crate) fn request_timeout(startup_timeout: Duration) -> Duration {
    (startup_timeout / 3).clamp(Duration::from_secs(1), MAX_REQUEST_TIMEOUT)
}

/// The `Retry-After` of the latest successful response from each URL, for the step runner's
/// polling. Each value belongs to the URL that carried it; taking it removes it.
#[derive(Clone, Debug, Default)]
pub(crate) struct RetryAfterSlot(Arc<Mutex<HashMap<String, Duration>>>);

/// Entries kept at most (URLs that are never polled again would otherwise pile up).
const RETRY_AFTER_ENTRIES: usize = 64;

impl RetryAfterSlot {
    /// Takes what the latest response from `url` asked for.
    pub(crate) fn take(&self, url: &str) -> Option<Duration> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(url)
    }

    fn set(&self, url: &str, value: Option<Duration>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(value) => {
                if map.len() >= RETRY_AFTER_ENTRIES {
                    map.clear();
                }
                map.insert(url.to_owned(), value);
            }
            None => {
                map.remove(url);
            }
        }
    }
}

/// The CA answered a request with an error status.
#[derive(Debug)]
pub(crate) struct CaAnswered {
    /// Method and URL.
    pub request: String,
    /// The HTTP status.
    pub status: u16,
    /// The problem document, when the body was one.
    pub problem: Option<Problem>,
    /// The start of the body, when it was not a problem document.
    pub body_excerpt: String,
    /// The response's `Retry-After`, as a duration from now.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for CaAnswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: HTTP {}", self.request, self.status)?;
        match &self.problem {
            Some(p) => write!(
                f,
                ": {}: {}",
                p.r#type.as_deref().unwrap_or("about:blank"),
                p.detail.as_deref().unwrap_or("(no detail)")
            )?,
            None if !self.body_excerpt.is_empty() => write!(f, ": {}", self.body_excerpt)?,
            None => {}
        }
        if let Some(after) = self.retry_after {
            write!(f, " (Retry-After {}s)", after.as_secs())?;
        }
        Ok(())
    }
}

impl std::error::Error for CaAnswered {}

/// The most of an error body read (problem documents are small).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The most of a successful body read (a certificate chain is a few KiB).
const SUCCESS_BODY_LIMIT: usize = 1024 * 1024;

/// A response as soon as its head arrived; the checks read the body.
pub type TransportResponse = http::Response<UnsyncBoxBody<Bytes, String>>;

/// How a request reaches the CA. Always `HttpsTransport`, except in the simulator, whose CA
/// lives in the same process.
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` (an absolute `https` URL) and returns the response once its head arrived.
    fn send(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> BoxFuture<Result<TransportResponse, String>>;
}

/// The HTTP client instant-acme talks through.
pub(crate) struct AcmeHttpClient<R: Runtime> {
    rt: R,
    transport: Arc<dyn Transport>,
    retry_after: RetryAfterSlot,
    request_timeout: Duration,
}

impl<R: Runtime> AcmeHttpClient<R> {
    /// A client sending through `transport`, giving up on a request after `request_timeout`.
    pub(crate) fn new(
        rt: R,
        transport: Arc<dyn Transport>,
        retry_after: RetryAfterSlot,
        request_timeout: Duration,
    ) -> Self {
        Self {
            rt,
            transport,
            retry_after,
            request_timeout,
        }
    }
}

/// HTTPS to the CA over the runtime's TCP: one HTTP/1.1 connection per request.
pub(crate) struct HttpsTransport<R: Runtime> {
    rt: R,
    tls: futures_rustls::TlsConnector,
}

impl<R: Runtime> HttpsTransport<R> {
    /// A transport trusting the public web PKI plus `extra_roots` (e.g. Pebble's CA).
    pub(crate) fn new(rt: R, extra_roots: &[CertificateDer<'static>]) -> Result<Self, String> {
        Ok(Self {
            rt,
            tls: tls_connector(extra_roots)?,
        })
    }
}

/// TLS clients (to the CA, to Redis) trusting the public web PKI plus `extra_roots`.
pub(crate) fn tls_connector(
    extra_roots: &[CertificateDer<'static>],
) -> Result<futures_rustls::TlsConnector, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots
            .add(root.clone())
            .map_err(|e| format!("extra root certificate rejected: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(futures_rustls::TlsConnector::from(Arc::new(config)))
}

impl<R: Runtime> Transport for HttpsTransport<R> {
    fn send(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> BoxFuture<Result<TransportResponse, String>> {
        let (rt, tls) = (self.rt.clone(), self.tls.clone());
        Box::pin(async move {
            let rsp = send(&rt, &tls, req).await?;
            Ok(rsp.map(|body| body.map_err(|e| e.to_string()).boxed_unsync()))
        })
    }
}

fn other(message: impl Into<String>) -> Error {
    Error::Other(message.into().into())
}

impl<R: Runtime> HttpClient for AcmeHttpClient<R> {
    fn request(&self, req: Request<BodyWrapper<Bytes>>) -> BoxFuture<Result<BytesResponse, Error>> {
        let (rt, transport) = (self.rt.clone(), self.transport.clone());
        let (slot, limit) = (self.retry_after.clone(), self.request_timeout);
        Box::pin(async move {
            let uri = req.uri().clone();
            let what = format!("{} {uri}", req.method());
            let checked = async {
                let rsp = transport.send(req).await?;
                let answered_at = rt.wall_clock();
                check(rsp, &what, answered_at)
                    .await
                    .map(|checked| (checked, answered_at))
            };
            match timeout(&rt, limit, checked).await {
                Some(Ok((Checked::Success(rsp), answered_at))) => {
                    let retry_after = rsp
                        .parts
                        .headers
                        .get(RETRY_AFTER)
                        .and_then(|v| parse_retry_after(v.to_str().ok()?, answered_at));
                    slot.set(&uri.to_string(), retry_after);
                    Ok(rsp)
                }
                Some(Ok((Checked::BadNonce(rsp), _))) => Ok(rsp),
                Some(Ok((Checked::Error(answer), _))) => Err(Error::Other(Box::new(answer))),
                Some(Err(e)) => Err(other(format!("{what}: {e}"))),
                None => Err(other(format!("{what}: no response within {limit:?}"))),
            }
        })
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3), as a duration from
/// `now` (the runtime's wall clock when the answer arrived).
fn parse_retry_after(value: &str, now: UnixTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Some(UnixTime::from_secs(at_secs).saturating_since(now))
}

/// A response, sorted by what instant-acme should see of it.
enum Checked {
    /// Read in full within the request's timeout (ACME bodies are small), so that a body that
    /// stalls halfway is a timeout too.
    Success(BytesResponse),
    /// A `badNonce` problem, passed through so that instant-acme retries with a fresh nonce.
    BadNonce(BytesResponse),
    Error(CaAnswered),
}

/// Checks the status of `rsp` (the answer to `what`, arrived at `now`) before anything reads
/// the body.
async fn check(rsp: TransportResponse, what: &str, now: UnixTime) -> Result<Checked, String> {
    let status = rsp.status();
    let (parts, body) = rsp.into_parts();
    if !(status.is_client_error() || status.is_server_error()) {
        let body = Limited::new(body, SUCCESS_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("{what}: reading the answer failed: {e}"))?
            .to_bytes();
        return Ok(Checked::Success(BytesResponse {
            parts,
            body: Box::new(body),
        }));
    }
    let body = Limited::new(body, ERROR_BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| format!("{what}: HTTP {status}, and reading its body failed: {e}"))?
        .to_bytes();
    let problem = serde_json::from_slice::<Problem>(&body).ok();
    let is_bad_nonce = problem
        .as_ref()
        .and_then(|p| p.r#type.as_deref())
        .is_some_and(|t| t == "urn:ietf:params:acme:error:badNonce");
    if is_bad_nonce && status == http::StatusCode::BAD_REQUEST {
        return Ok(Checked::BadNonce(BytesResponse {
            parts,
            body: Box::new(body),
        }));
    }
    let retry_after = parts
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v.to_str().ok()?, now));
    let body_excerpt = match &problem {
        Some(_) => String::new(),
        None => String::from_utf8_lossy(&body[..body.len().min(200)])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    Ok(Checked::Error(CaAnswered {
        request: what.to_owned(),
        status: status.as_u16(),
        problem,
        body_excerpt,
        retry_after,
    }))
}

async fn send<R: Runtime>(
    rt: &R,
    tls: &futures_rustls::TlsConnector,
    mut req: Request<BodyWrapper<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err("ACME requires https".into());
    }
    let host = uri.host().ok_or("no host in URL")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = rt
        .connect(host.clone(), port)
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let server_name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .map_err(|e| format!("{host}: {e}"))?;
    let stream = tls
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(HyperIo(stream))
        .await
        .map_err(|e| e.to_string())?;
    rt.spawn(Box::pin(async move {
        let _ = connection.await;
    }));
    // hyper's low-level client sends the URI as given: use origin form and set Host.
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or(host);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    *req.uri_mut() = path
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    req.headers_mut().insert(
        HOST,
        authority
            .parse()
            .map_err(|e: http::header::InvalidHeaderValue| e.to_string())?,
    );
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// futures-io to hyper's IO traits (a copy through a small buffer: ACME traffic is tiny).
pub struct HyperIo<T>(pub T);

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut tmp = [0u8; 8192];
        let want = tmp.len().min(buf.remaining());
        match Pin::new(&mut self.0).poll_read(cx, &mut tmp[..want]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&tmp[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_timeout_leaves_room_for_retries_within_the_startup_timeout() {
        assert_eq!(
            request_timeout(Duration::from_secs(15)),
            Duration::from_secs(5)
        );
        assert_eq!(
            request_timeout(Duration::from_secs(300)),
            MAX_REQUEST_TIMEOUT
        );
        assert_eq!(
            request_timeout(Duration::from_millis(900)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = UnixTime::from_secs(1_800_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = UNIX_EPOCH + Duration::from_secs(1_800_003_600);
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(later), now),
            Some(hour)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
