//! Large socket reads for a reader that asks for small ones.
//!
//! rustls asks its transport for at most 4 KiB at a time, so a TLS leg relaying a large
//! literal made one `recv` system call per 4 KiB, and on this kind of machine the system calls
//! cost more than the cryptography. [`ReadAhead`] notices bulk traffic (a read that fills
//! what was asked) and then reads up to 64 KiB at once, serving the small reads from that.
//! (256 KiB, as much as a plain leg reads, was tried: TLS throughput was 6-14% lower in the
//! load benchmark, with more time copying in rustls.)
//! Light traffic reads straight through, and the buffer is given back when bulk traffic ends,
//! so an idle connection holds none. Writes pass straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read from the socket at once during bulk traffic.
const READ_AHEAD: usize = 64 * 1024;

/// Wraps a transport; see the module documentation.
pub struct ReadAhead<S> {
    inner: S,
    /// Empty unless bulk traffic is flowing; `buf[pos..end]` is read but not handed out.
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    bulk: bool,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            buf: Box::default(),
            pos: 0,
            end: 0,
            bulk: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Hands out buffered bytes; gives the buffer back once drained after bulk traffic ended.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = (self.end - self.pos).min(out.remaining());
        out.put_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.end && !self.bulk {
            self.buf = Box::default();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.end {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        if !this.bulk || out.remaining() >= READ_AHEAD {
            // Straight through; a read that fills what was asked means bulk traffic.
            let asked = out.remaining();
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            this.bulk = asked > 0 && out.filled().len() - before == asked;
            return Poll::Ready(Ok(()));
        }
        if this.buf.is_empty() {
            this.buf = vec![0; READ_AHEAD].into_boxed_slice();
        }
        let mut ahead = ReadBuf::new(&mut this.buf);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut ahead))?;
        this.end = ahead.filled().len();
        this.pos = 0;
        // A small fill: the burst is over; the buffer goes once drained.
        this.bulk = this.end >= READ_AHEAD / 4;
        this.serve(out);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the reads that reach the transport.
    struct Counted<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn small_reads_see_every_byte_in_order_few_socket_reads_and_idle_holds_nothing() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&data).await.unwrap();
        drop(far);
        let mut reader = ReadAhead::new(Counted {
            inner: near,
            reads: 0,
        });
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        loop {
            let n = reader.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        // 300,000 bytes in 4 KiB reads would be 74 reads; 64 KiB at a time, a handful.
        assert!(reader.inner.reads < 12, "{} reads", reader.inner.reads);
        assert!(reader.buf.is_empty(), "nothing held at the end");
    }
}
