//! The one place bytes meet a socket: the preamble exchange, message frames
//! and raw file bodies.
//!
//! [`Connection`] speaks frames over any async stream. Bodies bypass it:
//! they move between a file and the socket's descriptor on a thread of their
//! own (see `body`), with sendfile(2) on the way out and a few large buffers
//! on the way in, hashed with BLAKE3 alongside the I/O. Memory per transfer is
//! bounded whatever the file size.

mod body;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{
    self, DecodeError, ErrorCode, Message, Preamble, PreambleError, PREAMBLE_LEN, VERSION,
};
pub use body::Digest;
use body::{Received, Wire};

/// Bytes asked of the socket per read while waiting for a frame.
const FRAME_READ_CHUNK: usize = 8 * 1024;

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer closed the connection where more was expected.
    #[error("connection closed by the peer")]
    Closed,
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("peer sent a malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// The peer's preamble is not ferry's.
    #[error("peer does not speak the ferry protocol")]
    NotFerry,
    /// The peer speaks another protocol version.
    #[error("peer speaks ferry protocol version {theirs}, this side speaks version {VERSION}")]
    Version { theirs: u16 },
    /// A message could not be encoded.
    #[error("{0}")]
    TooLarge(#[from] protocol::EncodeTooLarge),
    /// The peer sent a valid message where another was expected.
    #[error("peer sent {got} where {expected} was expected")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    /// Writing the received body to its file failed. The body was still
    /// consumed in full, so the connection remains usable.
    #[error("{0}")]
    File(io::Error),
    /// Reading the file being sent failed part way. The connection cannot
    /// continue, since the peer expects the declared number of bytes.
    #[error("reading the file failed while it was being sent: {0}")]
    SourceFailed(io::Error),
    /// The file being sent ended before its declared size: it shrank while
    /// it was read. The connection cannot continue, since the peer expects
    /// the declared number of bytes.
    #[error("file shrank to {sent} of its {declared} bytes while it was being sent")]
    FileShrank { sent: u64, declared: u64 },
    /// The peer let the stall limit pass without sending or taking a byte.
    #[error("no progress for {}s; gave up on the peer", .0.as_secs())]
    Stalled(Duration),
    /// The body's digest did not match its trailer. The connection remains
    /// usable.
    #[error("BLAKE3 digest of the received data does not match the sender's")]
    DigestMismatch,
}

impl TransportError {
    /// Whether the connection can carry further requests after this error.
    pub fn is_connection_usable(&self) -> bool {
        matches!(
            self,
            TransportError::File(_) | TransportError::DigestMismatch
        )
    }

    /// A stable kebab-case word for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Closed | TransportError::Io(_) => "connection-lost",
            TransportError::Stalled(_) => "timeout",
            TransportError::Malformed(_)
            | TransportError::Unexpected { .. }
            | TransportError::TooLarge(_) => "protocol-error",
            TransportError::NotFerry => "not-ferry",
            TransportError::Version { .. } => "unsupported-version",
            TransportError::File(_) | TransportError::SourceFailed(_) => "io-error",
            TransportError::FileShrank { .. } => "file-changed",
            TransportError::DigestMismatch => "digest-mismatch",
        }
    }
}

/// A ferry connection over any byte stream.
pub struct Connection<S> {
    stream: S,
    /// Bytes received but not yet consumed: part of a frame, or the start of
    /// a body that arrived with the frame before it.
    read_buf: Vec<u8>,
    /// Encoded frames not yet written.
    write_buf: Vec<u8>,
    /// How long any one read or write may wait for the peer.
    stall_limit: Duration,
}

/// How long a connection waits for its peer to move a byte, unless told
/// otherwise with [`Connection::set_stall_limit`].
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(60);

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream; nothing is sent yet.
    pub fn new(stream: S) -> Self {
        Connection {
            stream,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
            stall_limit: DEFAULT_STALL_LIMIT,
        }
    }

    /// How long any one read or write may wait for the peer.
    pub fn stall_limit(&self) -> Duration {
        self.stall_limit
    }

    /// Sets how long any one read or write, of a frame or of a body, may
    /// wait for the peer before failing with [`TransportError::Stalled`].
    pub fn set_stall_limit(&mut self, limit: Duration) {
        self.stall_limit = limit;
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The client's side of the preamble exchange: send ours, check theirs.
    pub async fn client_handshake(&mut self) -> Result<(), TransportError> {
        self.stream.write_all(&Preamble::OURS.to_bytes()).await?;
        self.stream.flush().await?;
        let preamble = self.read_preamble().await?;
        if preamble.version != VERSION {
            return Err(TransportError::Version {
                theirs: preamble.version,
            });
        }
        Ok(())
    }

    /// The server's side of the preamble exchange: check the client's, then
    /// answer with ours. A foreign or mismatched client also gets an `Error`
    /// frame explaining why, before the caller closes the connection.
    pub async fn server_handshake(&mut self) -> Result<(), TransportError> {
        let refusal = match self.read_preamble().await {
            Ok(preamble) if preamble.version == VERSION => None,
            Ok(preamble) => Some((
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks ferry protocol version {VERSION}, the client version {}",
                    preamble.version
                ),
                TransportError::Version {
                    theirs: preamble.version,
                },
            )),
            Err(TransportError::NotFerry) => Some((
                ErrorCode::BadRequest,
                "expected the ferry preamble; is this a ferry client?".to_owned(),
                TransportError::NotFerry,
            )),
            Err(other) => return Err(other),
        };
        self.stream.write_all(&Preamble::OURS.to_bytes()).await?;
        if let Some((code, message, error)) = refusal {
            self.write_message(&Message::Error { code, message })
                .await?;
            return Err(error);
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Turns the peer away before any handshake: our preamble, so that a
    /// ferry client reads on, then an `Error` frame saying why. Then waits,
    /// within the stall limit, for the peer to hang up: closing with its
    /// preamble still unread would reset the connection, and a reset can
    /// discard the reason before the peer reads it.
    pub async fn turn_away(
        &mut self,
        code: ErrorCode,
        message: String,
    ) -> Result<(), TransportError> {
        self.write_buf.extend_from_slice(&Preamble::OURS.to_bytes());
        self.write_message(&Message::Error { code, message })
            .await?;
        self.stream.shutdown().await?;
        while self.fill_read_buf().await? > 0 {
            self.read_buf.clear();
        }
        Ok(())
    }

    async fn read_preamble(&mut self) -> Result<Preamble, TransportError> {
        while self.read_buf.len() < PREAMBLE_LEN {
            if self.fill_read_buf().await? == 0 {
                // A peer that hangs up after a few foreign bytes is foreign.
                return Err(if self.read_buf.is_empty() {
                    TransportError::Closed
                } else {
                    TransportError::NotFerry
                });
            }
            // As far as both go, what arrived must be the magic.
            if !self
                .read_buf
                .iter()
                .zip(protocol::MAGIC)
                .all(|(a, b)| *a == b)
            {
                return Err(TransportError::NotFerry);
            }
        }
        let mut bytes = [0; PREAMBLE_LEN];
        for (slot, byte) in bytes.iter_mut().zip(self.read_buf.drain(..PREAMBLE_LEN)) {
            *slot = byte;
        }
        Preamble::from_bytes(&bytes).map_err(|PreambleError::NotFerry| TransportError::NotFerry)
    }

    /// Reads the next message. `Ok(None)` means the peer closed the
    /// connection cleanly between messages.
    pub async fn read_message(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            if let Some((message, used)) = protocol::decode(&self.read_buf)? {
                self.read_buf.drain(..used);
                return Ok(Some(message));
            }
            if self.fill_read_buf().await? == 0 {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(TransportError::Closed)
                };
            }
        }
    }

    /// Reads the next message, treating a closed connection as an error.
    pub async fn expect_message(&mut self) -> Result<Message, TransportError> {
        self.read_message().await?.ok_or(TransportError::Closed)
    }

    /// Encodes `message` into the write buffer without sending it.
    pub fn queue(&mut self, message: &Message) -> Result<(), TransportError> {
        protocol::encode(message, &mut self.write_buf)?;
        Ok(())
    }

    /// Waits until the peer sends something, without consuming it: `true`
    /// once a byte is at hand, `false` if the peer closed the connection.
    /// Has no stall limit; the caller decides how long to wait.
    pub async fn wait_for_data(&mut self) -> Result<bool, TransportError> {
        Ok(!self.read_buf.is_empty() || self.read_more().await? > 0)
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        let limit = self.stall_limit;
        let written = tokio::time::timeout(limit, async {
            self.stream.write_all(&self.write_buf).await?;
            self.stream.flush().await
        })
        .await;
        self.write_buf.clear();
        match written {
            Ok(done) => Ok(done?),
            Err(_) => Err(TransportError::Stalled(limit)),
        }
    }

    /// Sends one message now.
    pub async fn write_message(&mut self, message: &Message) -> Result<(), TransportError> {
        self.queue(message)?;
        self.flush().await
    }

    /// Reads what the peer has sent into the read buffer, within the stall
    /// limit; 0 means the peer closed the connection.
    async fn fill_read_buf(&mut self) -> Result<usize, TransportError> {
        let limit = self.stall_limit;
        match tokio::time::timeout(limit, self.read_more()).await {
            Ok(read) => Ok(read?),
            Err(_) => Err(TransportError::Stalled(limit)),
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        let mut chunk = [0; FRAME_READ_CHUNK];
        let n = self.stream.read(&mut chunk).await?;
        self.read_buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl<S: AsyncRead + AsyncWrite + AsFd + Unpin> Connection<S> {
    /// Sends the first `size` bytes of `file` as a raw body, then the trailer
    /// with their digest: `known` if the caller has it, otherwise computed as
    /// the file is sent. Gives back the file and the digest.
    pub async fn send_file(
        &mut self,
        file: File,
        size: u64,
        known: Option<Digest>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(File, Digest), TransportError> {
        self.flush().await?;
        let (file, sent) = self
            .on_data_thread(progress, move |socket, moved| {
                let sent = body::send_file(socket, &file, size, known, moved);
                (file, sent)
            })
            .await?;
        let digest = sent?;
        self.write_message(&Message::Trailer { digest }).await?;
        Ok((file, digest))
    }

    /// Receives a raw body of `size` bytes into `file`, then its trailer, and
    /// checks the digest. If writing to `file` fails, the rest of the body is
    /// still read and discarded so that the connection stays in step; the
    /// error is returned after the trailer. Gives back the file and the
    /// verified digest.
    pub async fn recv_file(
        &mut self,
        file: File,
        size: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(File, Digest), TransportError> {
        // The start of the body may have arrived with the frame before it.
        let prefix_len =
            usize::try_from(size).map_or(self.read_buf.len(), |size| size.min(self.read_buf.len()));
        let prefix: Vec<u8> = self.read_buf.drain(..prefix_len).collect();
        let (file, received) = self
            .on_data_thread(progress, move |socket, moved| {
                let received = body::receive_file(socket, &prefix, &file, size, moved);
                (file, received)
            })
            .await?;
        let Received { digest, sink_error } = received?;
        let trailer = self.expect_message().await?;
        let Message::Trailer { digest: expected } = trailer else {
            return Err(TransportError::Unexpected {
                expected: "a trailer",
                got: trailer.name(),
            });
        };
        if let Some(e) = sink_error {
            return Err(TransportError::File(e));
        }
        if digest != expected {
            return Err(TransportError::DigestMismatch);
        }
        Ok((file, digest))
    }

    /// Runs blocking data-path `work` on the socket in a thread of the
    /// blocking pool, telling `progress` how it advances. If this future is
    /// dropped first, the socket is shut down so the thread stops at once
    /// rather than finishing, or stalling, a transfer nobody awaits.
    async fn on_data_thread<T: Send + 'static>(
        &self,
        progress: &mut (dyn FnMut(u64) + Send),
        work: impl FnOnce(Wire<'_>, &AtomicU64) -> T + Send + 'static,
    ) -> Result<T, TransportError> {
        let socket = Arc::new(self.stream.as_fd().try_clone_to_owned()?);
        let hang_up = ShutdownOnDrop(Some(Arc::clone(&socket)));
        let moved = Arc::new(AtomicU64::new(0));
        let mut task = tokio::task::spawn_blocking({
            let moved = Arc::clone(&moved);
            let stall_limit = self.stall_limit;
            move || {
                let wire = Wire {
                    fd: socket.as_fd(),
                    stall_limit,
                };
                work(wire, &moved)
            }
        });
        let mut reported = 0;
        let mut report = |progress: &mut (dyn FnMut(u64) + Send)| {
            let now = moved.load(Ordering::Relaxed);
            if now > reported {
                progress(now - reported);
                reported = now;
            }
        };
        let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
        let joined = loop {
            tokio::select! {
                joined = &mut task => break joined,
                _ = ticks.tick() => report(progress),
            }
        };
        hang_up.disarm();
        report(progress);
        joined.map_err(|e| TransportError::Io(io::Error::other(format!("data thread failed: {e}"))))
    }
}

/// How often a transfer's progress is passed on.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Shuts a socket down when dropped, unless disarmed.
struct ShutdownOnDrop(Option<Arc<OwnedFd>>);

impl ShutdownOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(socket) = &self.0 {
            // The connection is being abandoned; a failure changes nothing.
            let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Both);
        }
    }
}
