//! A stream that tells an observer what moves through it, for the deadlines that need to know
//! (the connection watchdog, the tunnel's idle timer). Everything else is passed through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an [`Observed`] stream reports.
pub(crate) trait IoObserver {
    /// `bytes` were read.
    fn read(&self, bytes: &[u8]);

    /// `count` bytes were written.
    fn wrote(&self, _count: usize) {}
}

/// `inner`, reporting reads and writes to `observer`.
pub(crate) struct Observed<T, O> {
    pub(crate) inner: T,
    pub(crate) observer: O,
}

impl<T: AsyncRead + Unpin, O: IoObserver + Unpin> AsyncRead for Observed<T, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if matches!(result, Poll::Ready(Ok(()))) && !read.is_empty() {
            self.observer.read(read);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin, O: IoObserver + Unpin> Observed<T, O> {
    fn report(&self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(count)) = result
            && count > 0
        {
            self.observer.wrote(count);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin, O: IoObserver + Unpin> AsyncWrite for Observed<T, O> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.report(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.report(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
