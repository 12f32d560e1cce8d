//! The byte stream under a connection: plain TCP, or TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// A stream a [`Connection`](super::Connection) can move bodies over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket itself, when the bytes written to this stream are
    /// the bytes on the wire, so bodies may bypass it with sendfile(2) and
    /// splice(2). `None` when a layer such as TLS must see every byte.
    fn raw_tcp(&self) -> Option<&TcpStream>;
}

impl Stream for TcpStream {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// A TCP connection, encrypted or not.
pub enum Link {
    /// Plain TCP, for `--plain`: bodies move by zero-copy system calls.
    Plain(TcpStream),
    /// TLS 1.3 over TCP (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Link {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Link::Plain(tcp) => tcp,
            Link::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl Stream for Link {
    fn raw_tcp(&self) -> Option<&TcpStream> {
        match self {
            Link::Plain(tcp) => Some(tcp),
            Link::Tls(_) => None,
        }
    }
}

impl AsyncRead for Link {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Link::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Link::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Link::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Link::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
