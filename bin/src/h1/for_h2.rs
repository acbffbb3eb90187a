//! HTTP/2 streams to the upstream, through the HTTP/1.1 path's pool: the request head is
//! written straight from the stream's request as it came, the response head is parsed once
//! into an `http` response, and the response body is read as the stream's sender asks for it,
//! in the client connection's task. No connection task, no channel between tasks.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::chunked::{ChunkedBody, LAST_CHUNK, encode_chunk};
use super::head::{
    Framing, HeaderFacts, IDEMPOTENT, Outgoing, ParsedResponse, Refusal, parse_response,
    upstream_head,
};
use super::pool::{READ_SIZE, Upstream};
use crate::proxy::Proxy;

/// Why a request got no response from the upstream.
pub(crate) enum SendError {
    /// The request itself cannot be forwarded (400).
    BadRequest(&'static str),
    /// The upstream could not be reached, or its answer cannot be forwarded (502).
    Upstream(String),
}

/// Sends `req`, from `client`, to `proxy`'s upstream and returns its response once the head
/// has arrived; the body follows as it is read. The head is written from the request as
/// it came (hop-by-hop headers left out, forwarding headers set: `head::upstream_head`). A
/// pooled connection the upstream has closed is replaced once, when the request has no body
/// to send again.
pub(crate) async fn send<B>(
    proxy: &Arc<Proxy>,
    mut req: Request<B>,
    client: SocketAddr,
) -> Result<Response<UpstreamBody>, SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if req.method() == Method::CONNECT {
        return Err(SendError::BadRequest("CONNECT is not supported\n"));
    }
    let idempotent = IDEMPOTENT.contains(&req.method().as_str());
    let framing = if req.body().is_end_stream() {
        Framing::Empty
    } else {
        match req.body().size_hint().exact() {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        }
    };
    let head = {
        let lines: Vec<(&str, &[u8])> = req
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        let lines = lines.iter().copied();
        let facts = HeaderFacts::of(lines.clone()).map_err(|refusal| {
            SendError::BadRequest(match refusal {
                Refusal::Malformed(what) => what,
                _ => "bad request head\n",
            })
        })?;
        let host = facts
            .host
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let outgoing = Outgoing {
            method: req.method().as_str(),
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            http10: false,
            host,
            framing,
            upgrade: None,
        };
        upstream_head(&outgoing, &proxy.rewrite(client), lines, &facts)
    };
    let is_head = req.method() == Method::HEAD;
    let failed = |e: String| SendError::Upstream(e);
    let mut pooled = proxy.pool.take();
    loop {
        let reused = pooled.is_some();
        let mut upstream = match pooled.take() {
            Some(upstream) => upstream,
            None => proxy
                .pool
                .connect()
                .await
                .map_err(|e| failed(e.to_string()))?,
        };
        let sent = match framing {
            Framing::Empty => upstream
                .stream
                .write_all(&head)
                .await
                .map_err(|e| e.to_string()),
            _ => upload(&mut upstream.stream, &head, req.body_mut(), framing).await,
        };
        let answer = match sent {
            Ok(()) => response_head(upstream, is_head).await,
            Err(e) => Err((e, true)),
        };
        match answer {
            Ok((upstream, parsed)) => {
                let ParsedResponse {
                    status,
                    framing,
                    upstream_reusable,
                    written: headers,
                    ..
                } = parsed;
                let mut body = UpstreamBody {
                    upstream: Some(upstream),
                    framing,
                    left: match framing {
                        Framing::Length(n) => n,
                        _ => 0,
                    },
                    chunked: ChunkedBody::default(),
                    reusable: upstream_reusable,
                    proxy: proxy.clone(),
                };
                if body.is_end_stream() {
                    body.finish();
                }
                let mut response = Response::new(body);
                *response.status_mut() = StatusCode::from_u16(status)
                    .map_err(|_| failed("bad response status".to_owned()))?;
                *response.headers_mut() = headers;
                return Ok(response);
            }
            // Nothing came back on a connection the upstream had closed: send it again.
            Err((_, true)) if reused && framing == Framing::Empty && idempotent => {}
            Err((e, _)) => return Err(failed(e)),
        }
    }
}

/// Sends the head, then the body as it arrives, of `framing`.
async fn upload<B>(
    upstream: &mut TcpStream,
    head: &[u8],
    body: &mut B,
    framing: Framing,
) -> Result<(), String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let failed = |e: io::Error| e.to_string();
    upstream.write_all(head).await.map_err(failed)?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("request body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not passed on
        };
        if data.is_empty() {
            continue;
        }
        if framing == Framing::Chunked {
            let mut chunk = Vec::with_capacity(data.len() + 16);
            encode_chunk(&mut chunk, &data);
            upstream.write_all(&chunk).await.map_err(failed)?;
        } else {
            upstream.write_all(&data).await.map_err(failed)?;
        }
    }
    if framing == Framing::Chunked {
        upstream.write_all(LAST_CHUNK).await.map_err(failed)?;
    }
    Ok(())
}

/// Reads the response head (informational responses are dropped) and makes its header lines
/// an `http` header map. The flag of an error says whether nothing at all came back.
async fn response_head(
    mut upstream: Upstream,
    is_head: bool,
) -> Result<(Upstream, ParsedResponse<HeaderMap>), (String, bool)> {
    let mut nothing_yet = true;
    loop {
        if !upstream.buf.is_empty() {
            let parsed = parse_response(&upstream.buf, is_head, false, |_, _, lines, _| {
                let mut headers = HeaderMap::with_capacity(lines.size_hint().0);
                for (name, value) in lines {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_bytes(value),
                    ) {
                        headers.append(name, value);
                    }
                }
                headers
            })
            .map_err(|e| (e.to_owned(), false))?;
            match parsed {
                // Nothing asked for an upgrade: what follows a 101 is not HTTP.
                Some(parsed) if parsed.status == 101 => {
                    return Err(("101 to a request that asked no upgrade".into(), false));
                }
                Some(parsed) if parsed.status < 200 => {
                    upstream.buf.advance(parsed.head_len);
                    continue;
                }
                Some(parsed) => {
                    upstream.buf.advance(parsed.head_len);
                    return Ok((upstream, parsed));
                }
                None => {}
            }
        }
        upstream.buf.reserve(READ_SIZE / 4);
        match upstream.stream.read_buf(&mut upstream.buf).await {
            Ok(0) => return Err(("the upstream closed the connection".into(), nothing_yet)),
            Ok(_) => nothing_yet = false,
            Err(e) => return Err((e.to_string(), nothing_yet)),
        }
    }
}

/// A response body read from the upstream connection as the stream asks for it; the connection
/// goes back to the pool when the body has been read to its end.
pub(crate) struct UpstreamBody {
    /// `None` once the body has ended.
    upstream: Option<Upstream>,
    framing: Framing,
    /// What is left of a body of known length.
    left: u64,
    chunked: ChunkedBody,
    reusable: bool,
    proxy: Arc<Proxy>,
}

impl UpstreamBody {
    /// The body ended: the connection goes back to the pool if it can carry another request.
    fn finish(&mut self) {
        if let Some(upstream) = self.upstream.take()
            && self.reusable
            && upstream.buf.is_empty()
        {
            self.proxy.pool.give_back(upstream);
        }
    }

    /// The next piece of body already read, if any.
    fn next_piece(&mut self) -> Result<Option<Bytes>, io::Error> {
        let Some(Upstream { buf, .. }) = self.upstream.as_mut() else {
            return Ok(None);
        };
        if buf.is_empty() {
            return Ok(None);
        }
        let piece = match self.framing {
            Framing::Empty => None,
            Framing::UntilClose => Some(buf.split().freeze()),
            Framing::Length(_) => {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.left -= n as u64;
                Some(buf.split_to(n).freeze())
            }
            Framing::Chunked => {
                let (used, data) = self
                    .chunked
                    .next_data(buf)
                    .map_err(|_| io::Error::other("malformed chunked response body"))?;
                let mut taken = buf.split_to(used);
                taken.truncate(data.end);
                taken.advance(data.start);
                Some(taken.freeze())
            }
        };
        Ok(piece.filter(|p| !p.is_empty()))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let piece = this.next_piece();
            if this.is_end_stream() {
                this.finish();
            }
            let Some(upstream) = this.upstream.as_mut() else {
                return Poll::Ready(match piece {
                    Ok(Some(piece)) => Some(Ok(Frame::data(piece))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e.into())),
                });
            };
            match piece {
                Ok(Some(piece)) => return Poll::Ready(Some(Ok(Frame::data(piece)))),
                Err(e) => {
                    this.upstream = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                // The chunked framing read so far carried no data: there may be more of it.
                Ok(None) if !upstream.buf.is_empty() => continue,
                Ok(None) => {}
            }
            upstream.buf.reserve(READ_SIZE);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut upstream.stream),
                cx,
                &mut upstream.buf
            ));
            match read {
                Ok(0) if this.framing == Framing::UntilClose => this.upstream = None,
                Ok(0) => {
                    this.upstream = None;
                    let e = io::Error::other("the upstream closed the connection mid-body");
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.upstream = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.upstream.is_none()
            || match self.framing {
                Framing::Empty => true,
                Framing::Length(_) => self.left == 0,
                Framing::Chunked => self.chunked.is_done(),
                Framing::UntilClose => false,
            }
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(_) => SizeHint::with_exact(self.left),
            _ => SizeHint::default(),
        }
    }
}
