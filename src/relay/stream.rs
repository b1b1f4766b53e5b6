//! A connection leg that is plain TCP or TLS on either side, behind one type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp;

use super::read_ahead::ReadAhead;

/// One leg of a relayed connection. TLS legs read through [`ReadAhead`] (rustls reads 4 KiB
/// at a time).
pub enum Stream {
    Plain(TcpStream),
    /// imapscope is the TLS client (the upstream leg).
    TlsToServer(Box<tokio_rustls::client::TlsStream<ReadAhead<TcpStream>>>),
    /// imapscope is the TLS server (the client leg).
    TlsToClient(Box<tokio_rustls::server::TlsStream<ReadAhead<TcpStream>>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// The TCP socket under this leg, for what the stream's API does not reach (see
    /// [`end_without_close_notify`]).
    pub fn tcp_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Plain(tcp) => tcp.as_raw_fd(),
            Stream::TlsToServer(tls) => tls.get_ref().0.get_ref().as_raw_fd(),
            Stream::TlsToClient(tls) => tls.get_ref().0.get_ref().as_raw_fd(),
        }
    }

    /// The two directions of this leg, for the two pumps of one task. A plain socket splits
    /// by reference, without a lock; a TLS stream is one state machine for both directions,
    /// so its halves share it through tokio's split.
    pub fn halves(&mut self) -> (ReadLeg<'_>, WriteLeg<'_>) {
        match self {
            Stream::Plain(tcp) => {
                let (read, write) = tcp.split();
                (ReadLeg::Plain(read), WriteLeg::Plain(write))
            }
            tls => {
                let (read, write) = tokio::io::split(tls);
                (ReadLeg::Tls(read), WriteLeg::Tls(write))
            }
        }
    }
}

/// The reading half of a [`Stream`] (see [`Stream::halves`]).
pub enum ReadLeg<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut Stream>),
}

/// The writing half of a [`Stream`] (see [`Stream::halves`]).
pub enum WriteLeg<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut Stream>),
}

impl AsyncRead for ReadLeg<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadLeg::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ReadLeg::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteLeg<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteLeg::Plain(s) => Pin::new(s).poll_write(cx, buf),
            WriteLeg::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteLeg::Plain(s) => Pin::new(s).poll_flush(cx),
            WriteLeg::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteLeg::Plain(s) => Pin::new(s).poll_shutdown(cx),
            WriteLeg::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteLeg::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteLeg::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteLeg::Plain(s) => s.is_write_vectored(),
            WriteLeg::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsToServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsToClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsToServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsToClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsToServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsToClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsToServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::TlsToClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::TlsToServer(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::TlsToClient(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::TlsToServer(s) => s.is_write_vectored(),
            Stream::TlsToClient(s) => s.is_write_vectored(),
        }
    }
}

/// Ends the sending direction of a TLS leg's TCP socket without TLS's close_notify, for a
/// peer on the other leg that ended uncleanly (a TCP close without close_notify, a reset, a
/// record that did not decrypt): its truncation reaches this leg's peer as a truncation, as
/// it would have directly, not as the clean end that `shutdown` (close_notify first) says.
pub fn end_without_close_notify(fd: std::os::fd::RawFd) {
    // SAFETY: shutdown takes no pointers; `fd` belongs to a TCP socket the caller keeps open
    // for the call's duration, and an invalid one only makes the call fail with EBADF.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Asks the kernel to acknowledge what `fd` has received at once rather than after the
/// delayed-ACK timer (Linux's `TCP_QUICKACK`, which lapses by itself, so it is asked for after
/// every read). A server that writes with Nagle on (Cyrus) holds the last, short segment of a
/// large response until its earlier segments are acknowledged; a relay that reads them and
/// waits 40 ms to say so makes every large FETCH 40 ms slower. Best effort: a failure only
/// loses the speed-up.
#[cfg(target_os = "linux")]
pub fn acknowledge_now(fd: std::os::fd::RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local; `fd` belongs to a
    // TCP socket the caller keeps open for the call's duration, and an invalid one only makes
    // the call fail with EBADF.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub fn acknowledge_now(_fd: std::os::fd::RawFd) {}
