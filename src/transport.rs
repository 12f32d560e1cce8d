//! The one place bytes meet a socket: the preamble exchange, message frames
//! and raw file bodies.
//!
//! [`Connection`] is generic over the stream so that the same code serves
//! plain TCP and, later, TLS. Bodies are streamed through one reusable buffer
//! and hashed with BLAKE3 as they pass, so memory per transfer is constant
//! whatever the file size.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{
    self, DecodeError, ErrorCode, Message, Preamble, PreambleError, PREAMBLE_LEN, VERSION,
};

/// Bytes moved per read or write of a body. Large enough that syscall
/// overhead is small, small enough to stay in cache while it is hashed.
const BODY_CHUNK: usize = 256 * 1024;

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
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream; nothing is sent yet.
    pub fn new(stream: S) -> Self {
        Connection {
            stream,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
        }
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
            if !self
                .read_buf
                .starts_with(&protocol::MAGIC[..self.read_buf.len().min(protocol::MAGIC.len())])
            {
                return Err(TransportError::NotFerry);
            }
        }
        let mut bytes = [0; PREAMBLE_LEN];
        bytes.copy_from_slice(&self.read_buf[..PREAMBLE_LEN]);
        self.read_buf.drain(..PREAMBLE_LEN);
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

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends one message now.
    pub async fn write_message(&mut self, message: &Message) -> Result<(), TransportError> {
        self.queue(message)?;
        self.flush().await
    }

    /// Sends `declared` bytes read from `source` as a raw body, then the
    /// trailer with their digest. `progress` is told of every chunk sent.
    pub async fn send_body<R: AsyncRead + Unpin>(
        &mut self,
        source: &mut R,
        declared: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), TransportError> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0; chunk_len(declared)];
        let mut sent = 0;
        while sent < declared {
            let want = chunk_len(declared - sent);
            let n = source
                .read(&mut buf[..want])
                .await
                .map_err(TransportError::SourceFailed)?;
            if n == 0 {
                return Err(TransportError::FileShrank { sent, declared });
            }
            hasher.update(&buf[..n]);
            self.stream.write_all(&buf[..n]).await?;
            sent += n as u64;
            progress(n as u64);
        }
        let digest = *hasher.finalize().as_bytes();
        self.write_message(&Message::Trailer { digest }).await
    }

    /// Receives a raw body of `declared` bytes into `sink`, then its trailer,
    /// and checks the digest. If `sink` fails, the rest of the body is still
    /// read and discarded so that the connection stays in step; the error is
    /// returned after the trailer.
    pub async fn recv_body<W: AsyncWrite + Unpin>(
        &mut self,
        sink: &mut W,
        declared: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), TransportError> {
        let mut hasher = blake3::Hasher::new();
        let mut sink_error = None;
        let mut received = 0;
        let mut buf = vec![0; chunk_len(declared)];
        while received < declared {
            let want = chunk_len(declared - received);
            let n = self.read_body_bytes(&mut buf[..want]).await?;
            hasher.update(&buf[..n]);
            if sink_error.is_none() {
                if let Err(e) = sink.write_all(&buf[..n]).await {
                    sink_error = Some(e);
                }
            }
            received += n as u64;
            progress(n as u64);
        }
        if sink_error.is_none() {
            // A tokio file finishes its last write in the background; flush
            // waits for it so a failure is seen here.
            sink_error = sink.flush().await.err();
        }
        let trailer = self.expect_message().await?;
        let Message::Trailer { digest } = trailer else {
            return Err(TransportError::Unexpected {
                expected: "a trailer",
                got: trailer.name(),
            });
        };
        if let Some(e) = sink_error {
            return Err(TransportError::File(e));
        }
        if digest != *hasher.finalize().as_bytes() {
            return Err(TransportError::DigestMismatch);
        }
        Ok(())
    }

    /// Reads up to `buf.len()` body bytes: first what is already buffered,
    /// then from the socket. Never returns 0; a closed socket is an error.
    async fn read_body_bytes(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        if !self.read_buf.is_empty() {
            let n = buf.len().min(self.read_buf.len());
            buf[..n].copy_from_slice(&self.read_buf[..n]);
            self.read_buf.drain(..n);
            return Ok(n);
        }
        match self.stream.read(buf).await? {
            0 => Err(TransportError::Closed),
            n => Ok(n),
        }
    }

    async fn fill_read_buf(&mut self) -> Result<usize, TransportError> {
        let mut chunk = [0; FRAME_READ_CHUNK];
        let n = self.stream.read(&mut chunk).await?;
        self.read_buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

/// The buffer size for a body with `remaining` bytes left.
fn chunk_len(remaining: u64) -> usize {
    usize::try_from(remaining).map_or(BODY_CHUNK, |r| r.min(BODY_CHUNK))
}
