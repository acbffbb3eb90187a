//! Response bodies that count their bytes for the access log: they report their total once,
//! when they end or are dropped (a client that goes away mid-body still gets its line).
//! (Request bodies count into a shared counter as the upstream reads them:
//! `http2::RequestBody`.)

use std::pin::Pin;

use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::proxy::ProxyBody;

/// A response body that calls `ended` with the bytes sent, once, at its end or when dropped.
pub(crate) struct ReportedBody<F: FnOnce(u64) + Send + Unpin> {
    inner: ProxyBody,
    sent: u64,
    ended: Option<F>,
}

impl<F: FnOnce(u64) + Send + Unpin> ReportedBody<F> {
    pub(crate) fn new(inner: ProxyBody, ended: F) -> Self {
        Self {
            inner,
            sent: 0,
            ended: Some(ended),
        }
    }

    fn end(&mut self) {
        if let Some(ended) = self.ended.take() {
            ended(self.sent);
        }
    }
}

impl<F: FnOnce(u64) + Send + Unpin> Body for ReportedBody<F> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
                if self.inner.is_end_stream() {
                    self.end();
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.end(),
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

impl<F: FnOnce(u64) + Send + Unpin> Drop for ReportedBody<F> {
    fn drop(&mut self) {
        self.end();
    }
}
