//! Large socket reads for a reader that asks for small ones.
//!
//! rustls asks its transport for at most 4 KiB at a time, so a TLS leg relaying a large
//! literal made one `recv` system call per 4 KiB, and on this kind of machine the system calls
//! cost more than the cryptography. [`ReadAhead`] reads up to 64 KiB at once and serves the
//! small reads from that. Its buffer is given back once it is drained after a small read, so
//! an idle connection holds none; writes pass straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read from the socket at once.
const READ_AHEAD: usize = 64 * 1024;

/// Wraps a transport; see the module documentation.
pub struct ReadAhead<S> {
    inner: S,
    /// Read but not yet handed out: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// The last socket read filled less than a quarter of the buffer: traffic is light.
    light: bool,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            buf: Vec::new(),
            pos: 0,
            light: true,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Hands out buffered bytes; drops the buffer when drained under light traffic.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = (self.buf.len() - self.pos).min(out.remaining());
        out.put_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.pos = 0;
            if self.light {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
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
        if this.pos < this.buf.len() {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= READ_AHEAD {
            // A large read gains nothing from a copy.
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        this.buf.clear();
        this.buf.reserve(READ_AHEAD);
        let mut ahead = ReadBuf::uninit(&mut this.buf.spare_capacity_mut()[..READ_AHEAD]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut ahead))?;
        let n = ahead.filled().len();
        // SAFETY: the first `n` bytes of the spare capacity were initialized by the read
        // (`ReadBuf::filled`), and `n <= READ_AHEAD <= capacity`.
        unsafe { this.buf.set_len(n) };
        this.light = n < READ_AHEAD / 4;
        this.pos = 0;
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

    #[tokio::test]
    async fn small_reads_see_every_byte_in_order_and_idle_holds_nothing() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&data).await.unwrap();
        drop(far);
        let mut reader = ReadAhead::new(near);
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
        assert_eq!(reader.buf.capacity(), 0, "nothing held at the end");
    }
}
