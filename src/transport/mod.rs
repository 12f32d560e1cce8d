//! The one place bytes meet a socket: the preamble exchange, message frames
//! and raw file bodies.
//!
//! [`Connection`] speaks frames over any async stream. A body moves between
//! the stream and a [`BodySource`] or [`BodySink`] that the caller hands
//! over; the transport never opens a file. When the stream is plain TCP and
//! the other end is a descriptor, bodies bypass the stream, with
//! sendfile(2) on the way out and splice(2) on the way in, hashed with
//! BLAKE3 alongside the I/O. Otherwise (TLS, which must see every byte, or
//! an end without a descriptor) bodies move in chunks through the stream.
//! Either way the waiting for the peer is async and only bounded steps of
//! disk work run on the blocking pool (see `pump`, and `body` for the
//! steps), so a slow peer holds no thread. Memory per transfer is bounded
//! whatever the file size. A body can also go on after a prefix its
//! receiver holds already, and the receiver vouches for what it has
//! synced as it arrives, so a body cut off can go on later (see `flush`,
//! PROTOCOL.md §5.13). A body of unknown length moves in chunks,
//! each behind a frame of its own (see `chunked`). A small body of a
//! tree may instead move whole through memory, queued with its frames
//! (see `whole`).

mod body;
mod chunked;
mod ends;
mod flush;
mod link;
mod pump;
mod rate;
mod whole;

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use rate::Throttle;

use crate::protocol::{
    self, DecodeError, ErrorCode, FailureKind, Message, Preamble, PreambleError, Token,
    PREAMBLE_LEN, VERSION,
};
pub use chunked::Streamed;
pub use ends::{BodySink, BodySource, Discard};
pub use link::{tune, Batched, Link, Stream};
pub use pump::PrefixCheck;
pub use whole::WHOLE_BODY;

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
    /// The peer moved a body slower than the minimum rate for a whole
    /// stall limit.
    #[error(
        "only {moved} bytes moved in {seconds}s, slower than the minimum of {min_rate} bytes a \
         second; gave up on the peer"
    )]
    TooSlow {
        moved: u64,
        seconds: u64,
        min_rate: u64,
    },
    /// The body's digest did not match its trailer. The connection remains
    /// usable.
    #[error("BLAKE3 digest of the received data does not match the sender's")]
    DigestMismatch,
    /// A stream passed the most the receiver takes. The rest of it was
    /// read and discarded, so the connection remains usable.
    #[error("the stream passed the limit of {limit} bytes")]
    StreamTooLarge { limit: u64 },
}

impl TransportError {
    /// Whether the connection can carry further messages after this error.
    pub fn is_connection_usable(&self) -> bool {
        matches!(
            self,
            TransportError::Sink(_)
                | TransportError::DigestMismatch
                | TransportError::StreamTooLarge { .. }
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
            TransportError::Stalled(_) | TransportError::TooSlow { .. } => {
                ErrorCode::Timeout.into()
            }
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
            TransportError::StreamTooLarge { .. } => ErrorCode::TooLarge.into(),
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
    /// The slowest a body may move, in bytes a second, averaged over a
    /// stall limit; 0 for no minimum.
    min_rate: u64,
    /// The most bodies may move, both ways.
    throttle: Throttle,
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
            min_rate: 0,
            throttle: Throttle::default(),
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

    /// Sets the slowest a body may move, in bytes a second averaged over
    /// the stall limit, before it fails with [`TransportError::TooSlow`];
    /// 0 for no minimum.
    pub fn set_min_rate(&mut self, bytes_per_second: u64) {
        self.min_rate = bytes_per_second;
    }

    /// Sets the most bodies may move, sent and received together, in
    /// bytes a second; 0 for no limit, the default, under which the data
    /// path makes no more system calls than without one.
    pub fn set_rate_limit(&mut self, bytes_per_second: u64) {
        self.throttle = Throttle::new(bytes_per_second);
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
        let (message, error) = match self.expect_message().await {
            Ok(Message::Hello { token }) => return Ok(token),
            Ok(other) => (
                format!("expected a hello, got {}", other.name()),
                TransportError::Unexpected {
                    expected: "a hello",
                    got: other.name(),
                },
            ),
            // Whatever it was, it is not the hello that must come first.
            Err(e @ (TransportError::Malformed(_) | TransportError::UnknownMessage(_))) => {
                (format!("expected a hello: {e}"), e)
            }
            Err(other) => return Err(other),
        };
        let refusal = Message::Error {
            code: ErrorCode::BadRequest,
            message,
        };
        self.write_message(&refusal).await?;
        Err(error)
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
        self.say_goodbye(code, message).await
    }

    /// Sends a last `Error` frame saying why the connection ends, then
    /// waits, within the stall limit, for the peer to hang up: closing with
    /// bytes of its own still unread would reset the connection, and a
    /// reset can discard the reason before the peer reads it.
    pub async fn say_goodbye(
        &mut self,
        code: ErrorCode,
        message: String,
    ) -> Result<(), TransportError> {
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

/// A connected pair of loopback sockets, for the transport's tests.
#[cfg(test)]
async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connecting = tokio::net::TcpStream::connect(addr);
    let (client, accepted) = tokio::join!(connecting, listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}
