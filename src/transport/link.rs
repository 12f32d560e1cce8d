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

    /// Reads from the socket in large batches while `on`, as while a
    /// body arrives, where that saves system calls (see [`Batched`]).
    fn batch_reads(&mut self, _on: bool) {}
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
    Tls(Box<TlsStream<Batched>>),
}

impl Link {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Link::Plain(tcp) => tcp,
            Link::Tls(tls) => tls.get_ref().0.tcp(),
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

    fn batch_reads(&mut self, on: bool) {
        if let Link::Tls(tls) = self {
            tls.get_mut().0.batch(on);
        }
    }
}

/// Bytes a [`Batched`] socket reads at once while it batches.
const BATCH: usize = 256 * 1024;

/// The TCP socket under TLS. rustls reads at most one record (16 KiB)
/// from it at a time, which costs a system call a record; while a body
/// arrives, this reads up to 256 KiB (`BATCH`) at once into a buffer of its
/// own and hands them on from there. The buffer is there only while it
/// batches (and until what it holds is read), so an idle connection holds
/// none.
pub struct Batched {
    tcp: TcpStream,
    /// Read from the socket; bytes `start..end` are yet to be handed on.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    batching: bool,
}

impl Batched {
    pub fn new(tcp: TcpStream) -> Batched {
        Batched {
            tcp,
            buffer: Vec::new(),
            start: 0,
            end: 0,
            batching: false,
        }
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Batches reads from now on, or no longer once what is held is read.
    fn batch(&mut self, on: bool) {
        self.batching = on;
        self.let_go_if_done();
    }

    /// Gives the buffer back once it is read and no batching needs it.
    fn let_go_if_done(&mut self) {
        if self.start == self.end && !self.batching {
            self.buffer = Vec::new();
            (self.start, self.end) = (0, 0);
        }
    }
}

impl AsyncRead for Batched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            if !this.batching {
                return Pin::new(&mut this.tcp).poll_read(cx, out);
            }
            if this.buffer.is_empty() {
                this.buffer = vec![0; BATCH];
            }
            let mut read = ReadBuf::new(&mut this.buffer);
            std::task::ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut read))?;
            (this.start, this.end) = (0, read.filled().len());
            if this.end == 0 {
                return Poll::Ready(Ok(())); // the end of the stream
            }
        }
        let held = this.buffer.get(this.start..this.end).unwrap_or_default();
        let n = held.len().min(out.remaining());
        out.put_slice(held.get(..n).unwrap_or_default());
        this.start += n;
        this.let_go_if_done();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Batched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
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

    /// While it batches, a reader taking 16 KiB at a time (as rustls does)
    /// gets every byte in order, the socket read in large pieces; once
    /// batching stops, what is held is still handed on first, then the
    /// buffer goes and reads go straight to the socket.
    #[tokio::test]
    async fn batched_reads_hand_on_every_byte_in_order_and_let_go_of_the_buffer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sender, receiver) = super::super::tcp_pair().await;
        let data: Vec<u8> = (0..3 * BATCH + 123).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writing = tokio::spawn(async move { sender.write_all(&sent).await.unwrap() });
        let mut batched = Batched::new(receiver);
        let mut got = Vec::new();
        let mut piece = vec![0; 16 * 1024];
        batched.batch(true);
        while got.len() < 2 * BATCH {
            let n = batched.read(&mut piece).await.unwrap();
            got.extend_from_slice(&piece[..n]);
            assert!(batched.buffer.len() == BATCH, "a buffer while batching");
        }
        batched.batch(false);
        while got.len() < data.len() {
            let n = batched.read(&mut piece).await.unwrap();
            assert_ne!(n, 0, "the stream ended early");
            got.extend_from_slice(&piece[..n]);
            if batched.start == batched.end {
                assert_eq!(batched.buffer.capacity(), 0, "let go once read");
            }
        }
        writing.await.unwrap();
        assert!(got == data, "the bytes differ");
        assert_eq!(batched.buffer.capacity(), 0);
    }
}
