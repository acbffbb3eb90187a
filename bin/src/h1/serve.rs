//! One HTTP/1.1 client connection through the proxy, in one task: read a request head, write
//! it again for the upstream, pass the body on, read the response head, write it again for
//! the client, pass the body on, and again. Nothing is parsed twice, no header map is built,
//! and the upstream connection is driven by the same task. While a connection is idle it
//! holds no buffer.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use hyper::Method;
use hyper::header::HeaderValue;
use hyper::http::uri::PathAndQuery;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::chunked::{ChunkedBody, LAST_CHUNK, encode_chunk};
use super::head::{
    ForwardedRequest, ForwardedResponse, Framing, forward_request, forward_response, own_response,
    parse_response, split_target, switching_head,
};
use super::pool::{READ_SIZE, Upstream};
use crate::access_log::Entry;
use crate::admission::Admitted;
use crate::connection::{Awaiting, Ending, Shared};
use crate::http_date;
use crate::observed_io::IoObserver;
use crate::proxy::{ConnectionFacts, Proxy, ProxySlot, UpstreamFailure};
use crate::tunnel;

/// What one connection's requests share.
pub(crate) struct Http1Context {
    pub(crate) proxy: Arc<ProxySlot>,
    pub(crate) facts: Arc<ConnectionFacts>,
    /// Kept by a tunnel the connection turns into.
    pub(crate) slots: Arc<Admitted>,
    pub(crate) max_head: usize,
}

/// Why an exchange with the upstream produced no response to forward.
enum Failure {
    /// Connecting, writing or reading failed, or the upstream closed the connection.
    Unreachable(String),
    /// The upstream's answer cannot be forwarded.
    BadAnswer(&'static str),
    /// The request body was malformed.
    BadBody,
    /// The client went away while sending the body.
    ClientGone,
}

/// An upstream response head, with the connection it came on (whose buffer holds what was
/// read after the head).
struct Answer {
    upstream: Upstream,
    response: ForwardedResponse,
}

/// Where the request body stands.
struct Upload {
    /// Bytes of the body passed on.
    sent: u64,
    /// Whether the body was read to its end (the connection can carry another request).
    done: bool,
}

/// Serves requests on `client` until it closes, the watchdog or the stop signal ends it
/// (through `ending`), or it turns into a tunnel.
///
/// Not an `async fn`: that would keep its arguments twice in the future (as arguments and as
/// locals), and the TLS stream is over a kilobyte, held for the connection's whole life.
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve<C>(
    mut client: C,
    context: Http1Context,
    watch: Arc<Shared>,
    mut ending: watch::Receiver<Ending>,
) -> impl Future<Output = ()> + Send
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let mut buf: Vec<u8> = Vec::new();
        let mut served = 0u64;
        loop {
            let proxy = context.proxy.current();
            let rewrite = proxy.rewrite(context.facts.peer);
            let request = loop {
                // Checked first: past the watchdog's verdict not even a head already read is
                // served.
                let level = *ending.borrow_and_update();
                if level == Ending::Closing
                    || (level == Ending::Stopping && buf.is_empty() && served > 0)
                {
                    let _ = client.shutdown().await;
                    return;
                }
                if !buf.is_empty() {
                    match forward_request(&buf, context.max_head, &rewrite) {
                        Ok(Some(request)) => break request,
                        Ok(None) => {}
                        Err(refusal) => {
                            let (status, reason, body) = refusal.answer();
                            let awaiting = Awaiting::start(watch.clone());
                            let _streaming = awaiting.responded();
                            proxy.metrics.response(status);
                            let _ = client
                                .write_all(&own_response(status, reason, body, true, false))
                                .await;
                            let _ = client.shutdown().await;
                            return;
                        }
                    }
                }
                let read = tokio::select! {
                    read = read_more(&mut client, &mut buf) => read,
                    _ = ending.changed() => continue,
                };
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            };
            served += 1;
            // Boxed: the states of a request in flight would otherwise stay in the connection's
            // future, idle or not.
            let next = Box::pin(one_request(
                &mut client,
                &mut buf,
                &request,
                &proxy,
                &context,
                &watch,
                &ending,
            ));
            match next.await {
                Next::KeepAlive if buf.is_empty() => {
                    // Nothing of the next request yet: let the idle connection hold no buffer.
                    buf = Vec::new();
                }
                // The next request began while this one was served: its head is timed from now.
                Next::KeepAlive => watch.read(&buf),
                Next::Close => {
                    let _ = client.shutdown().await;
                    return;
                }
                Next::Upgrade(answer) => {
                    upgrade(client, buf, answer, &proxy, context.slots.clone());
                    return;
                }
            }
        }
    }
}

/// Whether the client connection stays open after `request`'s answer: the client asked for
/// it, its body was read whole, and no stop signal has come.
fn keeps_client(
    request: &ForwardedRequest,
    body_sent: bool,
    ending: &watch::Receiver<Ending>,
) -> bool {
    request.keep_alive && body_sent && *ending.borrow() == Ending::Serving
}

/// What a connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols: the connection becomes a tunnel.
    Upgrade(Answer),
}

/// Forwards one request whose head is at the start of `buf`, and its response; past the
/// `ending` signal, the response says `Connection: close`.
async fn one_request<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    buf: &mut Vec<u8>,
    request: &ForwardedRequest,
    proxy: &Proxy,
    context: &Http1Context,
    watch: &Arc<Shared>,
    ending: &watch::Receiver<Ending>,
) -> Next {
    let awaiting = Awaiting::start(watch.clone());
    // The start of the request, for the log, and of the upstream's time to answer.
    let (started, time) = (Instant::now(), SystemTime::now());
    let log = proxy
        .access_log
        .as_ref()
        .map(|_| LogFacts::of(buf, request));
    buf.drain(..request.head_len);

    let exchange = exchange(proxy, client, buf, request, ending);
    let (answer, upload) = match tokio::time::timeout(proxy.timeout, exchange).await {
        Ok((Ok(answer), upload)) => (Ok(answer), upload),
        Ok((Err(failure), upload)) => (Err(Some(failure)), upload),
        Err(_) => (
            Err(None),
            Upload {
                sent: 0,
                done: false,
            },
        ),
    };
    let upstream_took = answer.is_ok().then(|| started.elapsed());
    let keep_client = keeps_client(request, upload.done, ending);
    let record = |status: u16, bytes_out: u64| {
        if let (Some(access_log), Some(facts)) = (&proxy.access_log, &log) {
            access_log.record(&facts.entry(
                proxy,
                &context.facts,
                time,
                status,
                (upload.sent, bytes_out),
                started.elapsed(),
                upstream_took,
            ));
        }
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(failure) => {
            let (status, reason, body) = match failure {
                None => proxy.upstream_failed(&UpstreamFailure::TimedOut),
                Some(Failure::Unreachable(e)) => {
                    proxy.upstream_failed(&UpstreamFailure::Unreachable(&e))
                }
                Some(Failure::BadAnswer(e)) => {
                    proxy.upstream_failed(&UpstreamFailure::BadAnswer(e))
                }
                Some(Failure::BadBody) => (400, "Bad Request", "malformed chunked body\n"),
                Some(Failure::ClientGone) => return Next::Close,
            };
            let _streaming = awaiting.responded();
            proxy.metrics.response(status);
            let response = own_response(status, reason, body, !keep_client, request.is_head);
            let sent = client
                .write_all(&response)
                .await
                .and(finish(client, keep_client).await);
            record(status, body.len() as u64);
            return if sent.is_err() || !keep_client {
                Next::Close
            } else {
                Next::KeepAlive
            };
        }
    };
    if let Some(took) = upstream_took {
        proxy.metrics.upstream_answered(took);
    }
    let status = answer.response.status;
    proxy.metrics.response(status);
    if status == 101 {
        let streaming = awaiting.responded();
        record(101, 0);
        drop(streaming);
        return Next::Upgrade(answer);
    }
    let streaming = awaiting.responded();
    let keep_client = keep_client && !answer.response.close;
    let mut sent = 0;
    let relayed = relay_body(client, answer, proxy, keep_client, &mut sent, || {
        streaming.progress()
    })
    .await;
    drop(streaming);
    record(status, sent);
    if relayed.is_err() || !keep_client {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// Sends the end of an answer: a flush, or for a connection that closes after it the shutdown,
/// so that the last bytes leave with close_notify in one write. Called while the answer is
/// still timed by the watchdog as a body in flight.
async fn finish<C: AsyncWrite + Unpin>(client: &mut C, keep_client: bool) -> io::Result<()> {
    if keep_client {
        client.flush().await
    } else {
        client.shutdown().await
    }
}

/// Reads what the client sent next into `buf`. A connection waiting for a request reads one
/// byte first, so that an idle connection holds no buffer; the rest of the head follows
/// from the TLS layer's buffer.
async fn read_more<C: AsyncRead + Unpin>(client: &mut C, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() == 0 {
        let mut first = [0u8; 1];
        let n = client.read(&mut first).await?;
        if n == 1 {
            buf.reserve(READ_SIZE);
            buf.push(first[0]);
        }
        return Ok(n);
    }
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    client.read_buf(buf).await
}

/// Sends `request` (with its body, the start of which is in `buf`) upstream and reads the
/// response head. A connection from the pool that turns out closed is replaced once, when the
/// request has no body to send again.
async fn exchange<C: AsyncRead + AsyncWrite + Unpin>(
    proxy: &Proxy,
    client: &mut C,
    buf: &mut Vec<u8>,
    request: &ForwardedRequest,
    ending: &watch::Receiver<Ending>,
) -> (Result<Answer, Failure>, Upload) {
    let mut upload = Upload {
        sent: 0,
        done: request.framing == Framing::Empty,
    };
    let mut pooled = proxy.pool.take();
    loop {
        let reused = pooled.is_some();
        let mut upstream = match pooled.take() {
            Some(upstream) => upstream,
            None => match proxy.pool.connect().await {
                Ok(upstream) => upstream,
                Err(e) => return (Err(Failure::Unreachable(e.to_string())), upload),
            },
        };
        let sent = match request.framing {
            Framing::Empty => upstream
                .stream
                .write_all(&request.upstream_head)
                .await
                .map_err(|e| Failure::Unreachable(e.to_string())),
            framing => {
                // An upstream may answer before it has read the whole body (a 401, a 413): its
                // answer is forwarded at once, the rest of the body is not sent, and both
                // connections close after it.
                upstream.buf.reserve(READ_SIZE / 4);
                let (reader, mut writer) = upstream.stream.split();
                // Informational answers (a 100, a 103) are dropped: the upstream still wants
                // the body.
                let answered = async {
                    loop {
                        if reader.as_ref().readable().await.is_err() {
                            return;
                        }
                        match reader.as_ref().try_read_buf(&mut upstream.buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        // Only the status matters here: no client head is written.
                        let status = parse_response(
                            &upstream.buf,
                            request.is_head,
                            request.http10,
                            |_, _, _, _| (),
                        );
                        match status {
                            Ok(Some(head)) if head.status < 200 && head.status != 101 => {
                                upstream.buf.advance(head.head_len);
                            }
                            Ok(None) => {}
                            _ => return,
                        }
                    }
                };
                tokio::select! {
                    biased;
                    sent = upload_body(client, &mut writer, buf, request, framing, &mut upload) => sent,
                    () = answered => Ok(()),
                }
            }
        };
        let answer = match sent {
            Ok(()) => read_response_head(upstream, request, ending, upload.done).await,
            Err(failure) => Err((failure, true)),
        };
        match answer {
            Ok(mut answer) => {
                // A body that was not sent whole leaves the upstream connection mid-request.
                answer.response.upstream_reusable &= upload.done;
                return (Ok(answer), upload);
            }
            // Nothing came back on a connection the upstream had closed: send it again.
            Err((Failure::Unreachable(_), true))
                if reused && request.framing == Framing::Empty && request.idempotent => {}
            Err((failure, _)) => return (Err(failure), upload),
        }
    }
}

/// Sends the head and the body, of `framing`, whose first bytes are in `buf`; bytes after the
/// body stay in `buf`.
async fn upload_body<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    upstream: &mut (impl AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    request: &ForwardedRequest,
    framing: Framing,
    upload: &mut Upload,
) -> Result<(), Failure> {
    let mut chunked = ChunkedBody::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    // Appends to `out` what of `bytes` is body; returns how many bytes that took, and whether
    // the body ends there. A chunked body is written again with chunks of its data alone: no
    // client's extensions or trailers reach the upstream.
    let mut take = |bytes: &[u8], out: &mut Vec<u8>| -> Result<(usize, bool), Failure> {
        if framing != Framing::Chunked {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
            left -= n as u64;
            out.extend_from_slice(&bytes[..n]);
            return Ok((n, left == 0));
        }
        let mut at = 0;
        while at < bytes.len() && !chunked.is_done() {
            let (used, data) = chunked
                .next_data(&bytes[at..])
                .map_err(|_| Failure::BadBody)?;
            if !data.is_empty() {
                encode_chunk(out, &bytes[at..][data]);
            }
            at += used;
        }
        if chunked.is_done() {
            out.extend_from_slice(LAST_CHUNK);
        }
        Ok((at, chunked.is_done()))
    };
    let mut out = Vec::with_capacity(request.upstream_head.len() + buf.len() + 16);
    out.extend_from_slice(&request.upstream_head);
    let (n, mut done) = take(buf, &mut out)?;
    buf.drain(..n);
    upload.sent += (out.len() - request.upstream_head.len()) as u64;
    upstream
        .write_all(&out)
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    if !done && request.expects_continue && upload.sent == 0 {
        let continued = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        continued
            .and(client.flush().await)
            .map_err(|_| Failure::ClientGone)?;
    }
    while !done {
        buf.reserve(READ_SIZE);
        match client.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(Failure::ClientGone),
            Ok(_) => {}
        }
        out.clear();
        let (n, end) = take(buf, &mut out)?;
        done = end;
        upstream
            .write_all(&out)
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        buf.drain(..n);
        upload.sent += out.len() as u64;
    }
    upload.done = true;
    Ok(())
}

/// Reads the response head (informational responses other than 101 are dropped). The flag
/// says whether nothing at all came back.
async fn read_response_head(
    mut upstream: Upstream,
    request: &ForwardedRequest,
    ending: &watch::Receiver<Ending>,
    body_sent: bool,
) -> Result<Answer, (Failure, bool)> {
    let mut nothing_yet = true;
    loop {
        if !upstream.buf.is_empty() {
            // Decided as the head is written, so that a stop signal that came while the
            // upstream worked still closes with `Connection: close`.
            let keep_client = keeps_client(request, body_sent, ending);
            match forward_response(&upstream.buf, request, keep_client, &http_date::now()) {
                Ok(Some(mut response)) if response.status == 101 && request.upgrade => {
                    response.client_head = switching_head(&upstream.buf[..response.head_len]);
                    upstream.buf.advance(response.head_len);
                    return Ok(Answer { upstream, response });
                }
                Ok(Some(response)) if response.status < 200 => {
                    if response.status == 101 {
                        let e = Failure::BadAnswer("101 to a request that asked no upgrade");
                        return Err((e, false));
                    }
                    upstream.buf.advance(response.head_len);
                    continue;
                }
                Ok(Some(response)) => {
                    upstream.buf.advance(response.head_len);
                    return Ok(Answer { upstream, response });
                }
                Ok(None) => {}
                Err(e) => return Err((Failure::BadAnswer(e), false)),
            }
        }
        upstream.buf.reserve(READ_SIZE / 4);
        match upstream.stream.read_buf(&mut upstream.buf).await {
            Ok(0) => {
                let e = Failure::Unreachable("the upstream closed the connection".into());
                return Err((e, nothing_yet));
            }
            Ok(_) => nothing_yet = false,
            Err(e) => return Err((Failure::Unreachable(e.to_string()), nothing_yet)),
        }
    }
}

/// Sends the response head and body to the client, telling `progress` each time a piece
/// went out and counting the body bytes into `sent`; gives the upstream connection back when
/// it can carry another request. An error means either side failed (the client connection
/// must close). Unless `keep_client`, the body ends with the connection's shutdown.
async fn relay_body<C: AsyncWrite + Unpin>(
    client: &mut C,
    answer: Answer,
    proxy: &Proxy,
    keep_client: bool,
    sent: &mut u64,
    progress: impl Fn(),
) -> io::Result<()> {
    let Answer {
        mut upstream,
        response,
    } = answer;
    let mut chunked = ChunkedBody::default();
    let mut left = match response.framing {
        Framing::Length(n) => n,
        Framing::Empty => 0,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut out = response.client_head;
    let mut done = left == 0;
    loop {
        let bytes = &upstream.buf;
        let n = match response.framing {
            Framing::Chunked => chunked
                .feed(bytes)
                .map_err(|_| io::Error::other("malformed chunked response"))?,
            _ => usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len()),
        };
        if response.framing == Framing::Chunked {
            done = chunked.is_done();
        } else if response.framing != Framing::UntilClose {
            left -= n as u64;
            done = left == 0;
        }
        *sent += n as u64;
        if out.is_empty() {
            client.write_all(&bytes[..n]).await?;
        } else {
            // The head goes out with the body's first bytes, in one TLS record.
            out.extend_from_slice(&bytes[..n]);
            client.write_all(&out).await?;
            out = Vec::new();
        }
        progress();
        let extra = upstream.buf.len() > n;
        if done {
            finish(client, keep_client).await?;
            if response.upstream_reusable && !extra {
                proxy.pool.give_back(upstream);
            }
            return Ok(());
        }
        upstream.buf.clear();
        upstream.buf.reserve(READ_SIZE);
        client.flush().await?;
        if upstream.stream.read_buf(&mut upstream.buf).await? == 0 {
            if response.framing == Framing::UntilClose {
                return Ok(());
            }
            return Err(io::Error::other(
                "the upstream closed the connection mid-body",
            ));
        }
    }
}

/// Turns the connection into a tunnel to the upstream, after the 101 and whatever either side
/// sent past its head.
fn upgrade<C>(mut client: C, buf: Vec<u8>, answer: Answer, proxy: &Proxy, slots: Arc<Admitted>)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Answer {
        mut upstream,
        response,
    } = answer;
    let (listener, idle) = (proxy.listener.clone(), proxy.tunnel_idle);
    proxy.tunnels.spawn(async move {
        let _slots = slots;
        let mut head = response.client_head;
        head.extend_from_slice(&upstream.buf);
        let opened = async {
            client.write_all(&head).await?;
            client.flush().await?;
            upstream.stream.write_all(&buf).await
        };
        if let Err(e) = opened.await {
            tracing::warn!(listener = %listener, "upgrade failed: {e}");
            return;
        }
        let end = tunnel::run(client, upstream.stream, idle).await;
        tracing::debug!(listener = %listener, "tunnel ended: {end:?}");
    });
}

/// What the access log needs from a request head, taken before the head's bytes go.
struct LogFacts {
    method: Method,
    path: Option<PathAndQuery>,
    host: Option<HeaderValue>,
    http10: bool,
}

impl LogFacts {
    fn of(bytes: &[u8], request: &ForwardedRequest) -> Self {
        let target = std::str::from_utf8(&bytes[request.target.clone()]).unwrap_or("/");
        let path = split_target(target).map_or("/", |(path, _)| path);
        Self {
            method: Method::from_bytes(&bytes[request.method.clone()]).unwrap_or(Method::GET),
            path: PathAndQuery::try_from(path).ok(),
            host: request
                .host
                .clone()
                .and_then(|h| HeaderValue::from_bytes(&bytes[h]).ok()),
            http10: request.http10,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        proxy: &Proxy,
        connection: &ConnectionFacts,
        time: SystemTime,
        status: u16,
        (bytes_in, bytes_out): (u64, u64),
        duration: Duration,
        upstream: Option<Duration>,
    ) -> Entry {
        Entry {
            time,
            listener: proxy.listener.clone(),
            client: connection.peer,
            host: self.host.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            version: if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" },
            status,
            bytes_in,
            bytes_out,
            duration,
            upstream,
            tls_version: connection.tls_version,
            alpn: connection.alpn,
        }
    }
}
