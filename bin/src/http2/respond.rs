//! Sends a response on an HTTP/2 stream: the head (with `Date` and a length added where the
//! response lacks them), then the body as the client's flow-control window makes room for it
//! (none to a HEAD request, whose answer states only the length). A client that resets the
//! stream ends the sending at once.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use hyper::Response;
use hyper::body::Body;
use hyper::header::{CONTENT_LENGTH, DATE, HeaderValue};

use crate::connection::Streaming;
use crate::proxy::ProxyBody;

/// Sends `response` to a request (a HEAD request when `head_request`) on `respond`;
/// `streaming` hears of each piece of the body that goes out.
pub(crate) async fn respond(
    respond: &mut SendResponse<Bytes>,
    response: Response<ProxyBody>,
    streaming: Streaming,
    head_request: bool,
) {
    let (parts, mut body) = response.into_parts();
    let mut head = Response::from_parts(parts, ());
    let headers = head.headers_mut();
    if !headers.contains_key(DATE)
        && let Ok(now) = HeaderValue::from_bytes(&crate::http_date::now())
    {
        headers.insert(DATE, now);
    }
    let end = head_request || body.is_end_stream();
    if !body.is_end_stream()
        && !headers.contains_key(CONTENT_LENGTH)
        && let Some(length) = body.size_hint().exact()
    {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    let mut send = match respond.send_response(head, end) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!("HTTP/2 response head not sent: {e}");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if end {
        return;
    }
    if let Err(e) = pipe(&mut body, &mut send, &streaming).await {
        tracing::debug!("HTTP/2 response body not sent to its end: {e}");
        send.send_reset(Reason::INTERNAL_ERROR);
    }
}

/// Passes `body` on to `send`, a piece at a time, each once the client's window has room.
async fn pipe(
    body: &mut ProxyBody,
    send: &mut SendStream<Bytes>,
    streaming: &Streaming,
) -> Result<(), String> {
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(reason) = send.poll_reset(cx) {
                return Poll::Ready(Err(reset(reason)));
            }
            Pin::new(&mut *body).poll_frame(cx).map(Ok)
        })
        .await?;
        let Some(frame) = frame else {
            return send
                .send_data(Bytes::new(), true)
                .map_err(|e| e.to_string());
        };
        let frame = frame.map_err(|e| format!("from the upstream: {e}"))?;
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.reserve_capacity(0);
                    return send.send_trailers(trailers).map_err(|e| e.to_string());
                }
                continue;
            }
        };
        let end = body.is_end_stream();
        if !data.is_empty() {
            // Asking for a single byte of window claims none of the connection's window
            // ahead of need; `send_data` asks for the rest of the piece itself.
            send.reserve_capacity(1);
            poll_fn(|cx| {
                while send.capacity() == 0 {
                    if let Poll::Ready(reason) = send.poll_reset(cx) {
                        return Poll::Ready(Err(reset(reason)));
                    }
                    match send.poll_capacity(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                        Poll::Ready(None) => return Poll::Ready(Err("stream closed".to_owned())),
                    }
                }
                Poll::Ready(Ok(()))
            })
            .await?;
        }
        send.send_data(data, end).map_err(|e| e.to_string())?;
        streaming.progress();
        if end {
            return Ok(());
        }
    }
}

fn reset(reason: Result<Reason, h2::Error>) -> String {
    match reason {
        Ok(reason) => format!("reset by the client ({reason:?})"),
        Err(e) => e.to_string(),
    }
}
