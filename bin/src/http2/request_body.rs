//! A request body as the `h2` crate receives it, read as an `http_body::Body`: each piece read
//! gives its flow-control window back to the client (so a slow upstream slows the client, and
//! no more than a window is ever buffered), and is counted for the access log.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::RecvStream;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONTENT_LENGTH, HeaderMap};

/// The body of one HTTP/2 request.
pub(crate) struct RequestBody {
    recv: RecvStream,
    /// What is left of a body whose length the request stated (one value, or several equal).
    left: Option<u64>,
    counter: Option<Arc<AtomicU64>>,
}

impl RequestBody {
    /// The body of a request with `headers`, received on `recv`.
    pub(crate) fn new(recv: RecvStream, headers: &HeaderMap) -> Self {
        Self {
            recv,
            left: stated_length(headers),
            counter: None,
        }
    }

    /// The same body, adding the bytes read to `counter` when there is one.
    pub(crate) fn counting(self, counter: Option<Arc<AtomicU64>>) -> Self {
        Self { counter, ..self }
    }
}

/// The `Content-Length` of `headers`: `None` when it is absent, malformed or stated twice
/// differently (the `h2` crate already resets a stream whose data disagrees with it).
fn stated_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let first: u64 = values.next()?.to_str().ok()?.parse().ok()?;
    values
        .all(|v| v.to_str().ok().and_then(|v| v.parse().ok()) == Some(first))
        .then_some(first)
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match ready!(this.recv.poll_data(cx)) {
            Some(Ok(data)) => {
                let len = data.len();
                // The window is given back once the piece is passed on: the upstream's pace
                // is the client's.
                let _ = this.recv.flow_control().release_capacity(len);
                if let Some(counter) = &this.counter {
                    counter.fetch_add(len as u64, Ordering::Relaxed);
                }
                if let Some(left) = this.left.as_mut() {
                    *left = left.saturating_sub(len as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => match ready!(this.recv.poll_trailers(cx)) {
                Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                Ok(None) => Poll::Ready(None),
                Err(e) => Poll::Ready(Some(Err(e))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.left
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn lengths(values: &[&str]) -> Option<u64> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
        }
        stated_length(&headers)
    }

    #[test]
    fn a_length_counts_only_when_every_value_states_the_same_number() {
        assert_eq!(lengths(&[]), None);
        assert_eq!(lengths(&["12"]), Some(12));
        assert_eq!(lengths(&["12", "12"]), Some(12));
        assert_eq!(lengths(&["12", "13"]), None);
        assert_eq!(lengths(&["-1"]), None);
        assert_eq!(lengths(&["1 2"]), None);
    }
}
