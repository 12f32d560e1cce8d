//! Bodies of unknown length (PROTOCOL.md §5.12): a `Chunk{size}` frame and
//! `size` raw bytes, repeated; `Chunk{0}` ends the body, and the trailer
//! with the digest of all of it follows.
//!
//! A stream always moves through user space, whatever the link: its bytes
//! are cut by frames, so the splice path, which moves one known length, has
//! nothing to splice into. As with a body of known size, each piece is
//! hashed and written on the blocking pool while the next one arrives,
//! what was written is synced every so often, and the stall limit and
//! minimum rate apply. Memory stays bounded whatever a chunk declares: a
//! chunk is taken in pieces of at most [`CHUNK`] bytes.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

use super::body::{buffer_len, FileWriter};
use super::flush::Flushing;
use super::pump::{data_path_failed, take_back, Pace, CHUNK};
use super::{BodySink, Connection, Stream, TransportError};
use crate::protocol::{Digest, Message};

/// What a stream receiver got: the sink back, how many bytes came, and
/// their verified digest.
#[derive(Debug)]
pub struct Streamed<B> {
    pub sink: B,
    pub size: u64,
    pub digest: Digest,
}

impl<S: Stream> Connection<S> {
    /// Sends what `input` gives, to its end, as a stream: one chunk per
    /// read (at most 256 KiB), so a slow producer's bytes leave as
    /// they come rather than when a chunk is full; then `Chunk{0}` and the
    /// trailer. Returns how many bytes went and their digest. A failed read
    /// of `input` is [`TransportError::SourceFailed`]: the peer never gets
    /// the end of the stream, so it keeps nothing.
    pub async fn send_stream<R: AsyncRead + Unpin>(
        &mut self,
        input: &mut R,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(u64, Digest), TransportError> {
        let mut hasher = blake3::Hasher::new();
        let mut pace = Pace::new(self.stall_limit, self.min_rate);
        let mut size: u64 = 0;
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            chunk.clear();
            input
                .read_buf(&mut chunk)
                .await
                .map_err(TransportError::SourceFailed)?;
            // At most CHUNK bytes, far below u32::MAX.
            let len = u32::try_from(chunk.len()).map_err(data_path_failed)?;
            self.queue(&Message::Chunk { size: len })?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
            // The header and its bytes leave in one write.
            let mut framed = std::mem::take(&mut self.write_buf);
            framed.extend_from_slice(&chunk);
            self.write_paced(&framed, &mut pace).await?;
            framed.clear();
            self.write_buf = framed;
            size += u64::from(len);
            progress(u64::from(len));
        }
        let digest = *hasher.finalize().as_bytes();
        self.write_message(&Message::Trailer { digest }).await?;
        Ok((size, digest))
    }

    /// Receives a stream into `sink`, then its trailer, and checks the
    /// digest. Past `limit` bytes nothing more is written, and, as after a
    /// failed write, the rest is read and discarded up to the trailer so
    /// the connection stays in step; then the failed write
    /// ([`TransportError::Sink`]) is returned, else the limit
    /// ([`TransportError::StreamTooLarge`]), else a digest mismatch.
    /// Anything but a chunk where a chunk is due breaks the connection.
    pub async fn recv_stream<B: BodySink>(
        &mut self,
        sink: B,
        limit: Option<u64>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Streamed<B>, TransportError> {
        type Written = (FileWriter, blake3::Hasher);
        let sink = Arc::new(sink);
        let mut state: Written = (FileWriter::default(), blake3::Hasher::new());
        let mut writing: Option<JoinHandle<Written>> = None;
        let mut flushing = Flushing::default();
        let mut pace = Pace::new(self.stall_limit, self.min_rate);
        let mut size: u64 = 0;
        let mut over_limit = None;
        loop {
            let mut left = match self.expect_message().await? {
                Message::Chunk { size: 0 } => break,
                Message::Chunk { size } => u64::from(size),
                other => {
                    return Err(TransportError::Unexpected {
                        expected: "a chunk",
                        got: other.name(),
                    })
                }
            };
            while left > 0 {
                let piece = self.read_piece(left, &mut pace).await?;
                let len = piece.len() as u64;
                left -= len;
                size = size.saturating_add(len);
                progress(len);
                over_limit = over_limit.or(limit.filter(|&limit| size > limit));
                if over_limit.is_some() {
                    continue;
                }
                if let Some(previous) = writing.take() {
                    state = previous.await.map_err(data_path_failed)?;
                    flushing.advance(&sink, state.0.offset);
                }
                let (mut writer, mut hasher) = std::mem::take(&mut state);
                let sink = Arc::clone(&sink);
                // No disk is claimed ahead of the data, as it is for a body
                // of known size: with no end known, a claim could reach past
                // it and stay with the file. The writes meet a full disk.
                writing = Some(tokio::task::spawn_blocking(move || {
                    hasher.update(&piece);
                    writer.write(&*sink, &piece);
                    (writer, hasher)
                }));
            }
        }
        if let Some(last) = writing.take() {
            state = last.await.map_err(data_path_failed)?;
        }
        flushing.finish(&sink).await;
        let trailer = self.expect_message().await?;
        let Message::Trailer { digest: expected } = trailer else {
            return Err(TransportError::Unexpected {
                expected: "a trailer",
                got: trailer.name(),
            });
        };
        let (writer, hasher) = state;
        if let Some(e) = writer.error {
            return Err(TransportError::Sink(e));
        }
        if let Some(limit) = over_limit {
            return Err(TransportError::StreamTooLarge { limit });
        }
        let digest = *hasher.finalize().as_bytes();
        if digest != expected {
            return Err(TransportError::DigestMismatch);
        }
        Ok(Streamed {
            sink: take_back(sink)?,
            size,
            digest,
        })
    }

    /// The next piece of a chunk that has `left` bytes still to come: at
    /// most [`CHUNK`] bytes, first those that arrived with the frame.
    async fn read_piece(&mut self, left: u64, pace: &mut Pace) -> Result<Vec<u8>, TransportError> {
        let want = buffer_len(left, CHUNK);
        let mut piece = Vec::with_capacity(want);
        let buffered = want.min(self.read_buf.len());
        piece.extend(self.read_buf.drain(..buffered));
        self.fill_paced(&mut piece, pace).await?;
        Ok(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp_pair;
    use std::os::unix::fs::FileExt;
    use tokio::io::AsyncWriteExt;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_of_every_size_cross_whole_with_their_digest() {
        for len in [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 17] {
            let data = pattern(len);
            let (a, b) = tcp_pair().await;
            let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
            let mut input = &data[..];
            let (mut quiet, mut silent) = (|_| {}, |_| {});
            let send = sender.send_stream(&mut input, &mut quiet);
            let sink = tempfile::tempfile().unwrap();
            let recv = receiver.recv_stream(sink, None, &mut silent);
            let (sent, received) = tokio::join!(send, recv);
            let (sent_size, sent_digest) = sent.unwrap();
            let streamed = received.unwrap();
            assert_eq!((sent_size, streamed.size), (len as u64, len as u64));
            assert_eq!(streamed.digest, *blake3::hash(&data).as_bytes());
            assert_eq!(sent_digest, streamed.digest);
            let mut written = vec![0; len];
            streamed.sink.read_exact_at(&mut written, 0).unwrap();
            assert_eq!(written, data, "{len} bytes");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_over_the_limit_is_read_to_its_end_and_refused() {
        let data = pattern(3 * CHUNK);
        let (a, b) = tcp_pair().await;
        let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
        let send = async {
            let mut input = &data[..];
            sender.send_stream(&mut input, &mut |_| {}).await.unwrap();
            sender.write_message(&Message::Done).await.unwrap();
        };
        let recv = async {
            let sink = tempfile::tempfile().unwrap();
            let limit = Some(CHUNK as u64);
            let received = receiver.recv_stream(sink, limit, &mut |_| {}).await;
            assert!(
                matches!(received, Err(TransportError::StreamTooLarge { limit }) if limit == CHUNK as u64),
                "{received:?}"
            );
            receiver.read_message().await.unwrap()
        };
        let ((), next) = tokio::join!(send, recv);
        assert_eq!(next, Some(Message::Done), "the connection is still in step");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_cut_off_before_its_end_is_an_error() {
        let (mut a, b) = tcp_pair().await;
        let mut receiver = Connection::new(b);
        let mut bytes = Vec::new();
        crate::protocol::encode(&Message::Chunk { size: 1000 }, &mut bytes).unwrap();
        bytes.extend(pattern(1000));
        a.write_all(&bytes).await.unwrap();
        drop(a);
        let sink = tempfile::tempfile().unwrap();
        let received = receiver.recv_stream(sink, None, &mut |_| {}).await;
        assert!(
            matches!(received, Err(TransportError::Closed)),
            "{received:?}"
        );
    }
}
