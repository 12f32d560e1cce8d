//! The one place bytes meet a socket: the preamble exchange, message frames
//! and raw file bodies.
//!
//! [`Connection`] speaks frames over any async stream. A body moves between
//! the stream and a [`BodySource`] or [`BodySink`] that the caller hands
//! over; the transport never opens a file. When the stream is plain TCP and
//! the other end is a descriptor, bodies bypass the stream: they move
//! between the two descriptors on a thread of their own (see `body`), with
//! sendfile(2) on the way out and splice(2) on the way in, hashed with
//! BLAKE3 alongside the I/O. Otherwise (TLS, which must see every byte, or
//! an end without a descriptor) bodies move in chunks between the stream
//! and a thread that reads or writes the other end (see `buffered`). Memory
//! per transfer is bounded whatever the file size.

mod body;
mod buffered;
mod ends;
mod link;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{
    self, DecodeError, Digest, ErrorCode, FailureKind, Message, Preamble, PreambleError, Token,
    PREAMBLE_LEN, VERSION,
};
use body::{Received, Wire};
pub use ends::{BodySink, BodySource};
pub use link::{Link, Stream};

/// The first byte of a TLS handshake record: what a TLS client sends first.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

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
    /// The peer sent a whole frame with a tag this build does not know. It
    /// was skipped, so the stream is still in step.
    #[error("peer sent a message of unknown kind (tag 0x{0:02x})")]
    UnknownMessage(u8),
    /// The peer's preamble is not ferry's.
    #[error("peer does not speak the ferry protocol")]
    NotFerry,
    /// The peer opened with a TLS handshake where the ferry preamble was
    /// expected: a TLS client meeting a `--plain` server.
    #[error("the client started TLS, but this server runs with --plain")]
    UnexpectedTls,
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
    /// Writing the received body to its sink failed. The body was still
    /// consumed in full, so the connection remains usable.
    #[error("{0}")]
    Sink(io::Error),
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
    /// Whether the connection can carry further messages after this error.
    pub fn is_connection_usable(&self) -> bool {
        matches!(
            self,
            TransportError::Sink(_)
                | TransportError::DigestMismatch
                | TransportError::UnknownMessage(_)
        )
    }

    /// Whether the peer went away: it closed or reset the connection, as a
    /// client interrupted with Ctrl-C or killed does.
    pub fn is_peer_gone(&self) -> bool {
        match self {
            TransportError::Closed => true,
            TransportError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }

    /// What kind of failure this is, for reports.
    pub fn kind(&self) -> FailureKind {
        match self {
            TransportError::Closed | TransportError::Io(_) => FailureKind::ConnectionLost,
            TransportError::Stalled(_) => ErrorCode::Timeout.into(),
            TransportError::Malformed(_)
            | TransportError::UnknownMessage(_)
            | TransportError::Unexpected { .. }
            | TransportError::TooLarge(_) => FailureKind::ProtocolError,
            TransportError::NotFerry => FailureKind::NotFerry,
            TransportError::UnexpectedTls => FailureKind::TlsUnexpected,
            TransportError::Version { .. } => ErrorCode::UnsupportedVersion.into(),
            TransportError::Sink(_) | TransportError::SourceFailed(_) => ErrorCode::Io.into(),
            TransportError::FileShrank { .. } => FailureKind::FileChanged,
            TransportError::DigestMismatch => ErrorCode::DigestMismatch.into(),
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

    /// The client's side of the handshake: send our preamble and `Hello`
    /// at once, check the server's preamble, and return its answer to the
    /// `Hello`: `Welcome` if we are welcome, `Error` if not.
    pub async fn client_handshake(&mut self, token: &Token) -> Result<Message, TransportError> {
        self.write_buf.extend_from_slice(&Preamble::OURS.to_bytes());
        self.queue(&Message::Hello {
            token: token.clone(),
        })?;
        self.flush().await?;
        let preamble = self.read_preamble().await?;
        if preamble.version != VERSION {
            return Err(TransportError::Version {
                theirs: preamble.version,
            });
        }
        self.expect_message().await
    }

    /// The server's side of the handshake: check the client's preamble,
    /// answer with ours, and return the token of the client's `Hello`; the
    /// caller answers that. A foreign or mismatched client also gets an
    /// `Error` frame explaining why, before the caller closes the connection.
    pub async fn server_handshake(&mut self) -> Result<Token, TransportError> {
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
            Err(TransportError::NotFerry) if self.read_buf.first() == Some(&TLS_HANDSHAKE_BYTE) => {
                Some((
                    ErrorCode::BadRequest,
                    "this server runs with --plain; connect with --plain too".to_owned(),
                    TransportError::UnexpectedTls,
                ))
            }
            Err(TransportError::NotFerry) => Some((
                ErrorCode::BadRequest,
                "expected the ferry preamble; is this a ferry client?".to_owned(),
                TransportError::NotFerry,
            )),
            Err(other) => return Err(other),
        };
        self.write_buf.extend_from_slice(&Preamble::OURS.to_bytes());
        if let Some((code, message, error)) = refusal {
            self.write_message(&Message::Error { code, message })
                .await?;
            return Err(error);
        }
        self.flush().await?;
        match self.expect_message().await? {
            Message::Hello { token } => Ok(token),
            other => {
                let message = format!("expected a hello, got {}", other.name());
                self.write_message(&Message::Error {
                    code: ErrorCode::BadRequest,
                    message,
                })
                .await?;
                Err(TransportError::Unexpected {
                    expected: "a hello",
                    got: other.name(),
                })
            }
        }
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
    /// connection cleanly between messages. A whole frame of an unknown
    /// kind is consumed and reported as [`TransportError::UnknownMessage`],
    /// after which the next message can be read.
    pub async fn read_message(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            match protocol::decode(&self.read_buf) {
                Ok(Some((message, used))) => {
                    self.read_buf.drain(..used);
                    return Ok(Some(message));
                }
                Ok(None) => {}
                Err(DecodeError::UnknownTag { tag, used }) => {
                    self.read_buf.drain(..used);
                    return Err(TransportError::UnknownMessage(tag));
                }
                Err(malformed) => return Err(malformed.into()),
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
        let n = match self.stream.read(&mut chunk).await {
            // TLS's word for a peer that hung up without saying goodbye
            // (close_notify). Frames carry their length and bodies their
            // digest, so a cut is caught without it: this is an end of
            // stream like any other.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            read => read?,
        };
        self.read_buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl<S: Stream> Connection<S> {
    /// Sends the first `size` bytes of `source` as a raw body, then the
    /// trailer with their digest: `known` if the caller has it, otherwise
    /// computed as the body is sent. Gives back the source and the digest.
    pub async fn send_body<B: BodySource>(
        &mut self,
        source: B,
        size: u64,
        known: Option<Digest>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(B, Digest), TransportError> {
        self.flush().await?;
        let zero_copy = source.raw_fd().is_some();
        let (source, digest) = match self.stream.raw_socket().filter(|_| zero_copy) {
            Some(socket) => {
                let (source, sent) = self
                    .on_data_thread(socket, progress, move |socket, moved| {
                        let sent = body::send_file(socket, &source, size, known, moved);
                        (source, sent)
                    })
                    .await?;
                (source, sent?)
            }
            None => self.send_chunks(source, size, known, progress).await?,
        };
        self.write_message(&Message::Trailer { digest }).await?;
        Ok((source, digest))
    }

    /// Receives a raw body of `size` bytes into `sink`, then its trailer,
    /// and checks the digest. If writing to `sink` fails, the rest of the
    /// body is still read and discarded so that the connection stays in
    /// step; the error ([`TransportError::Sink`]) is returned after the
    /// trailer. Gives back the sink and the verified digest.
    pub async fn recv_body<B: BodySink>(
        &mut self,
        sink: B,
        size: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(B, Digest), TransportError> {
        // The start of the body may have arrived with the frame before it.
        let prefix_len =
            usize::try_from(size).map_or(self.read_buf.len(), |size| size.min(self.read_buf.len()));
        let prefix: Vec<u8> = self.read_buf.drain(..prefix_len).collect();
        let zero_copy = sink.raw_fd().is_some();
        let (sink, received) = match self.stream.raw_socket().filter(|_| zero_copy) {
            Some(socket) => {
                self.on_data_thread(socket, progress, move |socket, moved| {
                    let received = body::receive_file(socket, &prefix, &sink, size, moved);
                    (sink, received)
                })
                .await?
            }
            None => self.recv_chunks(prefix, sink, size, progress).await?,
        };
        let Received { digest, sink_error } = received?;
        let trailer = self.expect_message().await?;
        let Message::Trailer { digest: expected } = trailer else {
            return Err(TransportError::Unexpected {
                expected: "a trailer",
                got: trailer.name(),
            });
        };
        if let Some(e) = sink_error {
            return Err(TransportError::Sink(e));
        }
        if digest != expected {
            return Err(TransportError::DigestMismatch);
        }
        Ok((sink, digest))
    }

    /// The body of [`Connection::send_body`] in chunks: a thread reads and
    /// hashes them from the source, this task writes them to the stream.
    /// Dropping this future drops the channel, which stops the thread.
    async fn send_chunks<B: BodySource>(
        &mut self,
        file: B,
        size: u64,
        known: Option<Digest>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(B, Digest), TransportError> {
        let (chunks, mut arriving) = tokio::sync::mpsc::channel(buffered::CHUNKS_IN_FLIGHT);
        let reader = tokio::task::spawn_blocking(move || {
            let read = buffered::read_chunks(&file, size, known, &chunks);
            (file, read)
        });
        let mut written = Ok(());
        while let Some(chunk) = arriving.recv().await {
            written = self.write_all_within_stall_limit(&chunk).await;
            if written.is_err() {
                break;
            }
            progress(chunk.len() as u64);
        }
        // Stops the reader if writing failed; it has finished otherwise.
        drop(arriving);
        let (file, read) = reader.await.map_err(data_thread_failed)?;
        written?;
        Ok((file, read?))
    }

    /// The body of [`Connection::recv_body`] in chunks: this task reads
    /// them from the stream, a thread hashes them and writes them to the
    /// sink. Never reads past the body's end.
    async fn recv_chunks<B: BodySink>(
        &mut self,
        prefix: Vec<u8>,
        file: B,
        size: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(B, Result<Received, TransportError>), TransportError> {
        let (chunks, arriving) = tokio::sync::mpsc::channel(buffered::CHUNKS_IN_FLIGHT);
        let writer = tokio::task::spawn_blocking(move || {
            let received = buffered::write_chunks(&file, size, arriving);
            (file, received)
        });
        let mut left = size - prefix.len() as u64;
        progress(prefix.len() as u64);
        let mut read = Ok(());
        if !prefix.is_empty() && chunks.send(prefix).await.is_err() {
            read = Err(data_thread_failed("the file thread stopped"));
        }
        while left > 0 && read.is_ok() {
            let mut chunk = Vec::with_capacity(buffered::next_chunk_len(left));
            read = self.fill_within_stall_limit(&mut chunk).await;
            left -= chunk.len() as u64;
            progress(chunk.len() as u64);
            if chunks.send(chunk).await.is_err() {
                read = Err(data_thread_failed("the file thread stopped"));
            }
        }
        drop(chunks);
        let (file, received) = writer.await.map_err(data_thread_failed)?;
        read?;
        Ok((file, Ok(received)))
    }

    /// Writes all of `bytes`, failing if the peer takes none of them for
    /// the stall limit.
    async fn write_all_within_stall_limit(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let limit = self.stall_limit;
        let mut rest = bytes;
        while !rest.is_empty() {
            match tokio::time::timeout(limit, self.stream.write(rest)).await {
                Ok(Ok(0)) => return Err(TransportError::Closed),
                Ok(Ok(n)) => rest = rest.get(n..).unwrap_or_default(),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(TransportError::Stalled(limit)),
            }
        }
        Ok(())
    }

    /// Reads into `chunk` until its capacity is full, failing if the peer
    /// sends nothing for the stall limit or closes the connection first.
    async fn fill_within_stall_limit(&mut self, chunk: &mut Vec<u8>) -> Result<(), TransportError> {
        let limit = self.stall_limit;
        while chunk.len() < chunk.capacity() {
            let want = (chunk.capacity() - chunk.len()) as u64;
            let mut body = (&mut self.stream).take(want);
            match tokio::time::timeout(limit, body.read_buf(chunk)).await {
                Ok(Ok(0)) => return Err(TransportError::Closed),
                Ok(Ok(_)) => {}
                // TLS's word for a peer gone without close_notify: a cut
                // like any other (see `read_more`).
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(TransportError::Closed)
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(TransportError::Stalled(limit)),
            }
        }
        Ok(())
    }

    /// Runs blocking data-path `work` on the socket in a thread of the
    /// blocking pool, telling `progress` how it advances. If this future is
    /// dropped first, the socket is shut down so the thread stops at once
    /// rather than finishing, or stalling, a transfer nobody awaits.
    async fn on_data_thread<T: Send + 'static>(
        &self,
        socket: BorrowedFd<'_>,
        progress: &mut (dyn FnMut(u64) + Send),
        work: impl FnOnce(Wire<'_>, &AtomicU64) -> T + Send + 'static,
    ) -> Result<T, TransportError> {
        let socket = Arc::new(socket.try_clone_to_owned()?);
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
        joined.map_err(data_thread_failed)
    }
}

fn data_thread_failed(why: impl std::fmt::Display) -> TransportError {
    TransportError::Io(io::Error::other(format!("data thread failed: {why}")))
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
