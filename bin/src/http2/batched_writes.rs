//! Writes that wait for the flush. Over a stream that takes vectored writes, the `h2` crate
//! chains a DATA payload of 256 bytes or more to its frame header instead of copying it, and
//! must then write before it can encode the next frame: each response became a TLS record and
//! a system call of its own. This stream says it takes no vectored writes, so `h2` copies
//! payloads under 1 KiB into its buffer and one flush carries many frames; what `h2` writes
//! is collected until it flushes, so that it leaves in one TLS write. (Measured: one `writev`
//! to the client per request became 0.14 at 20 connections of 10 streams.) A DATA payload of
//! 1 KiB or more is still a flush of its own, now with a copy (its frame header is collected
//! before it); a large write with nothing collected before it goes straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Past this many bytes collected, a write first sends what was collected.
const COLLECT_UP_TO: usize = 64 * 1024;

/// A collecting buffer larger than this is given back once sent, so that an idle connection
/// holds little.
const KEEP_UP_TO: usize = 4 * 1024;

/// A write at least this long, with nothing collected before it, is not copied.
const UNCOPIED_FROM: usize = 8 * 1024;

/// A stream whose writes are collected until a flush (at most [`COLLECT_UP_TO`] bytes).
pub(crate) struct BatchedWrites<T> {
    inner: T,
    collected: Vec<u8>,
    /// How much of `collected` the inner stream has taken.
    sent: usize,
}

impl<T: AsyncWrite + Unpin> BatchedWrites<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            collected: Vec::new(),
            sent: 0,
        }
    }

    /// Hands everything collected to the inner stream.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.collected.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.collected[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        if self.collected.capacity() > KEEP_UP_TO {
            self.collected = Vec::new();
        } else {
            self.collected.clear();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.collected.is_empty() && data.len() >= UNCOPIED_FROM {
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        if self.collected.len() >= COLLECT_UP_TO {
            ready!(self.poll_send(cx))?;
        }
        // Never more than the limit: a client that allows huge frames and then stops reading
        // holds at most this much here.
        let taken = data.len().min(COLLECT_UP_TO - self.collected.len());
        self.collected.extend_from_slice(&data[..taken]);
        Poll::Ready(Ok(taken))
    }

    /// No: see the module's documentation.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write it is given.
    #[derive(Default)]
    struct Recorder(Vec<Vec<u8>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_leave_together_at_the_flush_and_large_ones_uncopied() {
        let mut batched = BatchedWrites::new(Recorder::default());
        batched.write_all(b"HEADERS").await.unwrap();
        batched.write_all(b"DATA").await.unwrap();
        assert!(
            batched.inner.0.is_empty(),
            "nothing leaves before the flush"
        );
        batched.flush().await.unwrap();
        assert_eq!(batched.inner.0, vec![b"HEADERSDATA".to_vec()]);
        let large = vec![7u8; UNCOPIED_FROM];
        batched.write_all(&large).await.unwrap();
        assert_eq!(
            batched.inner.0.len(),
            2,
            "a large write goes straight through"
        );
        // Past the collecting limit, what was collected leaves before more is taken.
        for _ in 0..=COLLECT_UP_TO / 1024 {
            batched.write_all(&[1u8; 1024]).await.unwrap();
        }
        assert_eq!(batched.inner.0.len(), 3);
        assert_eq!(batched.inner.0[2].len(), COLLECT_UP_TO);
        batched.shutdown().await.unwrap();
        assert_eq!(
            batched.inner.0[3].len(),
            1024,
            "shutting down sends the rest"
        );
        assert!(batched.collected.capacity() <= KEEP_UP_TO);
        // A write larger than the room left is taken in part: never more than the limit held.
        batched.write_all(b"header").await.unwrap();
        batched.write_all(&vec![2u8; 100 * 1024]).await.unwrap();
        assert!(batched.collected.len() <= COLLECT_UP_TO);
        batched.flush().await.unwrap();
        let sent: Vec<usize> = batched.inner.0[4..].iter().map(Vec::len).collect();
        assert_eq!(sent, vec![COLLECT_UP_TO, 6 + 100 * 1024 - COLLECT_UP_TO]);
    }
}
