//! The byte stream under a connection: plain TCP, or TLS over TCP.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// The most bytes a socket holds that TCP has not yet sent. Without a
/// bound, a peer that stops reading lets the kernel queue megabytes per
/// connection (the send buffer grows to `tcp_wmem`'s maximum); a few
/// hundred such peers exhaust the machine's TCP memory, and then the
/// kernel drops packets of every connection, legitimate ones included.
/// Data in flight is not limited by this, so a long fast link keeps its
/// speed; the queue is refilled as soon as it drains below the mark.
pub const UNSENT_LIMIT: u32 = 512 * 1024;

/// Prepares a new TCP connection for ferry: no Nagle delay (requests and
/// replies are small frames) and at most `UNSENT_LIMIT` (512 KiB) queued
/// unsent.
pub fn tune(tcp: &TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let limit = UNSENT_LIMIT;
    // SAFETY: the descriptor is the open socket `tcp` owns, and the option
    // value is a valid c_int-sized integer that outlives the call.
    let status = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const limit).cast(),
            std::mem::size_of_val(&limit) as libc::socklen_t,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The option the kernel holds for `tcp`, read back.
    fn unsent_limit_of(tcp: &TcpStream) -> u32 {
        let mut value: u32 = 0;
        let mut len = std::mem::size_of_val(&value) as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes and sized alike.
        let status = unsafe {
            libc::getsockopt(
                tcp.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(status, 0, "{}", io::Error::last_os_error());
        value
    }

    #[tokio::test]
    async fn tune_bounds_the_unsent_queue_and_turns_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert_ne!(
            unsent_limit_of(&client),
            UNSENT_LIMIT,
            "not the kernel's default"
        );
        tune(&client).unwrap();
        assert_eq!(unsent_limit_of(&client), UNSENT_LIMIT);
        assert!(client.nodelay().unwrap());
    }
}
