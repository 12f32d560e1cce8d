//! Moving a body between the stream and its source or sink without ever
//! holding a thread while the peer is slow.
//!
//! Waiting is done here, on the async side: for the socket to be readable
//! or writable, or for the stream to take or give a chunk. Each step of
//! disk work (a splice into the file, a sendfile, a chunk read or written,
//! a range hashed, a sync) then runs on the blocking pool and returns, so a
//! thousand clients trickling bytes hold a thousand sockets and a little
//! memory, but no thread: requests of other clients find the pool free.
//! Steps overlap where they can (a chunk is hashed and written while the
//! next arrives; a file is hashed while it is sent), and at most two chunks
//! are in memory per transfer.
//!
//! A transfer must also keep moving: no byte for the stall limit ends it
//! ([`TransportError::Stalled`]), and so does moving fewer bytes than the
//! minimum rate over a whole stall limit ([`TransportError::TooSlow`]), so
//! a peer that sends a byte now and then cannot hold a transfer open. A
//! receiver that keeps checkpoints puts a pause of its sender to use, to
//! bring them up to date (see `flush`), within the same stall limit
//! ([`Stall`]).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::body::{self, buffer_len, FileWriter, INLINE_BODY, PIPE_BUFFER};
use super::flush::{Flushing, IDLE};
use super::{BodySink, BodySource, Connection, Stream, TransportError};
use crate::protocol::{Digest, Message, Prefix, StepHasher, STEP};

/// The most a sendfile(2) on the async side sends: the first piece of
/// each round, small so that a file not in the page cache keeps the
/// runtime waiting for one read at most.
const PROBE: usize = 64 * 1024;

/// Bytes per chunk moved through user space (TLS, or an end without a
/// descriptor): large enough that the hops are rare, small enough that two
/// of them per transfer stay cheap.
pub const CHUNK: usize = 256 * 1024;

/// What a body receiver got.
struct Received {
    /// The hash of the body as it arrived, after the prefix it went on from.
    hasher: StepHasher,
    /// The first write to the sink that failed, if one did; the body was
    /// still read in full so the connection stays in step.
    sink_error: Option<io::Error>,
}

/// A body receiver cut off.
struct CutOff {
    error: TransportError,
    /// How far the body is written, every byte of it taken from the
    /// socket and hashed (see [`Flushing::bring_up_to_date`]); `None`
    /// if not all of them are: a write failed.
    written: Option<u64>,
}

impl From<TransportError> for CutOff {
    /// A cut before the body began, or one that lost track of it.
    fn from(error: TransportError) -> CutOff {
        CutOff {
            error,
            written: None,
        }
    }
}

/// What a sender of the rest of a body found of the prefix the receiver
/// offered, against its own source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixCheck {
    /// The digest was known, so the source's prefix was not hashed; the
    /// receiver's digest check still settles it.
    NotChecked,
    /// The source's first bytes have the offered prefix.
    Matched,
    /// They do not: the receiver's partial is not of this source, and its
    /// digest check fails.
    Differed,
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
        let (source, digest, _) = self
            .send_body_from(source, size, &Prefix::none(), known, progress)
            .await?;
        Ok((source, digest))
    }

    /// Sends bytes `from.len..size` of `source` as a raw body, the rest of
    /// a body whose receiver holds a partial it says `from` vouches for,
    /// then the trailer with the digest of all `size` bytes: `known` if
    /// the caller has it, otherwise computed from the source as the body
    /// is sent, its first `from.len` bytes hashed beside the rest. That
    /// digest is the source's own whatever `from` says, so a receiver
    /// whose partial differs fails its check; the [`PrefixCheck`] tells
    /// the sender as much. `from` must be well-formed and, unless empty,
    /// shorter than `size`. Gives back the source, the digest and the
    /// check.
    pub async fn send_body_from<B: BodySource>(
        &mut self,
        source: B,
        size: u64,
        from: &Prefix,
        known: Option<Digest>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(B, Digest, PrefixCheck), TransportError> {
        check_resumable(from, size)?;
        self.flush().await?;
        let source = Arc::new(source);
        let stop = StopOnDrop::default();
        // Started at once, so it is done about when the rest is sent.
        let own_prefix = (known.is_none() && from.len > 0).then(|| {
            let (source, stop, len) = (Arc::clone(&source), Arc::clone(&stop.0), from.len);
            tokio::task::spawn_blocking(move || {
                let hasher = body::hash_source(&*source, 0, len, &stop)?;
                Ok::<_, TransportError>(hasher.prefix(&Prefix::none()))
            })
        });
        let zero_copy = source.raw_fd().is_some() && size - from.len > INLINE_BODY;
        let hash = known.is_none();
        let tail = match self.stream.raw_tcp().filter(|_| zero_copy) {
            Some(_) => {
                self.send_zero_copy(&source, from.len, size, hash, progress)
                    .await?
            }
            None => {
                self.send_chunks(&source, from.len, size, hash, progress)
                    .await?
            }
        };
        let (digest, check) = match (known, tail) {
            (Some(digest), _) => (digest, PrefixCheck::NotChecked),
            (None, Some(tail)) => {
                let own = match own_prefix {
                    Some(hashing) => hashing.await.map_err(data_path_failed)??,
                    None => Prefix::none(),
                };
                let digest = tail
                    .finalize(&own)
                    .ok_or_else(|| data_path_failed("no digest"))?;
                let check = if own == *from {
                    PrefixCheck::Matched
                } else {
                    PrefixCheck::Differed
                };
                (digest, check)
            }
            (None, None) => return Err(data_path_failed("no digest")),
        };
        self.write_message(&Message::Trailer { digest }).await?;
        Ok((take_back(source)?, digest, check))
    }

    /// Receives a raw body of `size` bytes into `sink`, then its trailer,
    /// and checks the digest. If writing to `sink` fails, the rest of the
    /// body is still read and discarded so that the connection stays in
    /// step; the error ([`TransportError::Sink`]) is returned after the
    /// trailer. Never reads past the body's end. Gives back the sink and
    /// the verified digest.
    pub async fn recv_body<B: BodySink>(
        &mut self,
        sink: B,
        size: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(B, Digest), TransportError> {
        self.recv_body_from(sink, size, Prefix::none(), progress)
            .await
    }

    /// As [`Connection::recv_body`], for the rest of a body whose first
    /// `from.len` bytes the sink holds already, vouched for by `from`:
    /// bytes `from.len..size` arrive and are written at those offsets,
    /// and the digest checked is that of `from` joined with their hash.
    /// `from` must be well-formed and, unless empty, shorter than `size`.
    /// Every step (64 MiB) of what arrived is synced, and then vouched for
    /// to the sink ([`BodySink::checkpoint`]). For a sink that keeps its
    /// checkpoints, the receive waits for them rather than run two steps
    /// ahead of the last, and a body cut off is synced and vouched for up
    /// to the last whole step that arrived before the error is returned,
    /// as is one whose sender pauses before the receive waits on (see
    /// `flush` for the bounds).
    pub async fn recv_body_from<B: BodySink>(
        &mut self,
        sink: B,
        size: u64,
        from: Prefix,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(B, Digest), TransportError> {
        check_resumable(&from, size)?;
        let rest = size - from.len;
        // The start of the body may have arrived with the frame before it.
        let early_len =
            usize::try_from(rest).map_or(self.read_buf.len(), |rest| rest.min(self.read_buf.len()));
        let early: Vec<u8> = self.read_buf.drain(..early_len).collect();
        let sink = Arc::new(sink);
        let mut flushing = Flushing::after(&from, size, sink.takes_checkpoints());
        let zero_copy = sink.raw_fd().is_some() && rest > INLINE_BODY;
        let received = match self.stream.raw_tcp().filter(|_| zero_copy) {
            Some(_) => {
                self.recv_zero_copy(&sink, early, &from, size, &mut flushing, progress)
                    .await
            }
            None => {
                // Through TLS: the ciphertext comes in large reads.
                self.stream.batch_reads(true);
                let received = self
                    .recv_chunks(&sink, early, &from, size, &mut flushing, progress)
                    .await;
                self.stream.batch_reads(false);
                received
            }
        };
        // Cut off or not, no sync or checkpoint outlives the receive.
        let received = match received {
            Ok(received) => received,
            Err(CutOff { error, written }) => {
                flushing.bring_up_to_date(&sink, written).await;
                return Err(error);
            }
        };
        flushing.finish(&sink).await;
        // The whole body is written and hashed, unless a write failed.
        let written = received.sink_error.is_none().then_some(size);
        let stall = Stall::from_now(self.stall_limit);
        if sink.takes_checkpoints()
            && tokio::time::timeout(IDLE, self.wait_for_data())
                .await
                .is_err()
        {
            // The sender paused before its trailer; the wait given up
            // read nothing.
            flushing.bring_up_to_date(&sink, written).await;
        }
        let trailer = match stall
            .within(self.expect_message())
            .await
            .and_then(|read| read)
        {
            Ok(Message::Trailer { digest }) => Ok(digest),
            Ok(other) => Err(TransportError::Unexpected {
                expected: "a trailer",
                got: other.name(),
            }),
            Err(e) => Err(e),
        };
        let expected = match trailer {
            Ok(expected) => expected,
            // It goes on from the body's last whole step.
            Err(error) => {
                flushing.bring_up_to_date(&sink, written).await;
                return Err(error);
            }
        };
        if let Some(e) = received.sink_error {
            return Err(TransportError::Sink(e));
        }
        if received.hasher.finalize(&from) != Some(expected) {
            return Err(TransportError::DigestMismatch);
        }
        Ok((take_back(sink)?, expected))
    }

    /// [`Connection::send_body_from`] by sendfile(2) from the source's
    /// descriptor to the socket, bytes `start..size`, while they are
    /// hashed beside it if `hash`.
    async fn send_zero_copy<B: BodySource>(
        &mut self,
        source: &Arc<B>,
        start: u64,
        size: u64,
        hash: bool,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Option<StepHasher>, TransportError> {
        let tcp = self
            .stream
            .raw_tcp()
            .ok_or_else(|| data_path_failed("no socket"))?;
        let socket = Arc::new(tcp.as_fd().try_clone_to_owned()?);
        let stop = StopOnDrop::default();
        let hashing = hash.then(|| {
            let (source, stop) = (Arc::clone(source), Arc::clone(&stop.0));
            tokio::task::spawn_blocking(move || body::hash_source(&*source, start, size, &stop))
        });
        let mut pace = Pace::new(self.stall_limit, self.min_rate);
        let mut offset = start;
        while offset < size {
            // Under a rate limit, this round sends no more than it allows.
            let round = self
                .throttle
                .piece(buffer_len(size - offset, usize::MAX))
                .await;
            let end = offset.saturating_add(round as u64).min(size);
            wait_ready(tcp, Interest::WRITABLE, Stall::from_now(self.stall_limit)).await?;
            // A first piece goes through tokio, so that an EAGAIN is met
            // where tokio sees it and forgets the socket's readiness without
            // losing a wakeup; a step on another thread cannot tell it that.
            let file = source
                .raw_fd()
                .ok_or_else(|| data_path_failed("the source has no descriptor"))?;
            let probe = buffer_len(end - offset, PROBE);
            let mut at = offset;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(tcp.as_fd(), file, Some(&mut at), probe)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Err(TransportError::FileShrank {
                        sent: offset,
                        declared: size,
                    })
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(sendfile_failed(e)),
            }
            progress(at - offset);
            pace.moved(at - offset)?;
            self.throttle.moved(at - offset);
            offset = at;
            if offset == end {
                continue;
            }
            // The rest of what the socket takes now, on the blocking pool:
            // reading the file may wait for the disk.
            let (source, step_socket) = (Arc::clone(source), Arc::clone(&socket));
            let sent = blocking(move || {
                let file = source
                    .raw_fd()
                    .ok_or_else(|| data_path_failed("the source has no descriptor"))?;
                body::sendfile_step(&step_socket, file, offset, end)
            })
            .await??;
            progress(sent - offset);
            pace.moved(sent - offset)?;
            self.throttle.moved(sent - offset);
            offset = sent;
        }
        match hashing {
            Some(hashing) => Ok(Some(hashing.await.map_err(data_path_failed)??)),
            None => Ok(None),
        }
    }

    /// [`Connection::send_body_from`] in chunks through the stream, bytes
    /// `start..size`: the next chunk is read, and hashed if `hash`, on the
    /// blocking pool while this one is written to the stream.
    async fn send_chunks<B: BodySource>(
        &mut self,
        source: &Arc<B>,
        start: u64,
        size: u64,
        hash: bool,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Option<StepHasher>, TransportError> {
        let read = |offset: u64, mut hasher: Option<StepHasher>, buffer: Vec<u8>| {
            let source = Arc::clone(source);
            tokio::task::spawn_blocking(move || {
                let len = buffer_len(size - offset, CHUNK);
                let chunk = body::read_chunk(&*source, offset, len, size, hasher.as_mut(), buffer);
                (chunk, hasher)
            })
        };
        let mut hasher = hash.then(|| StepHasher::at(start));
        let mut next = (size > start).then(|| read(start, hasher.take(), Vec::new()));
        let mut pace = Pace::new(self.stall_limit, self.min_rate);
        let mut offset = start;
        // Two buffers take turns: one is read into while the other is sent.
        let mut spare = Vec::new();
        while let Some(reading) = next.take() {
            let (chunk, returned) = reading.await.map_err(data_path_failed)?;
            let chunk = chunk?;
            offset += chunk.len() as u64;
            if offset < size {
                next = Some(read(offset, returned, std::mem::take(&mut spare)));
            } else {
                hasher = returned;
            }
            self.write_paced(&chunk, &mut pace).await?;
            progress(chunk.len() as u64);
            spare = chunk;
        }
        Ok(hasher)
    }

    /// [`Connection::recv_body_from`] by splice(2): socket into a pipe
    /// here, without blocking, then pipe into the sink's descriptor on the
    /// blocking pool; what was written is hashed from the page cache by a
    /// step of its own while the next piece arrives, and synced as
    /// `flushing` says. `early` is the start of the bytes after `from`.
    /// Cut off, it hashes what it wrote before it returns.
    async fn recv_zero_copy<B: BodySink>(
        &mut self,
        sink: &Arc<B>,
        early: Vec<u8>,
        from: &Prefix,
        size: u64,
        flushing: &mut Flushing,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Received, CutOff> {
        let mut writer = FileWriter::at(from.len);
        let mut hashing = Hashing::new(from.len, &early);
        let spliced = self
            .splice_body(
                sink,
                early,
                size,
                &mut writer,
                &mut hashing,
                flushing,
                progress,
            )
            .await;
        let hashed = hashing.catch_up(sink, &mut writer, flushing, true).await;
        match spliced.and(hashed) {
            Ok(()) => Ok(Received {
                hasher: hashing.hasher,
                sink_error: writer.error,
            }),
            Err(error) => Err(CutOff {
                error,
                written: writer.error.is_none().then_some(writer.offset),
            }),
        }
    }

    /// The moving of [`Connection::recv_zero_copy`]: the body into the
    /// sink through `writer`, with `hashing` behind it; the next piece is
    /// never read two steps or more past the last checkpoint (see
    /// `flush`). However it ends, every byte taken from the socket has
    /// been handed to the sink, unless `writer` says a write failed.
    #[allow(clippy::too_many_arguments)]
    async fn splice_body<B: BodySink>(
        &mut self,
        sink: &Arc<B>,
        early: Vec<u8>,
        size: u64,
        writer: &mut FileWriter,
        hashing: &mut Hashing,
        flushing: &mut Flushing,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), TransportError> {
        let tcp = self
            .stream
            .raw_tcp()
            .ok_or_else(|| data_path_failed("no socket"))?;
        let (pipe_out, pipe_in) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(io::Error::from)?;
        // A bigger pipe means fewer splices; the default is 64 KiB.
        let pipe_len = rustix::pipe::fcntl_setpipe_size(&pipe_in, PIPE_BUFFER).unwrap_or(64 * 1024);
        let pipe_out = Arc::new(pipe_out);
        let early_len = early.len() as u64;
        let mut left = size - writer.offset - early_len;
        progress(early_len);
        self.throttle.moved(early_len);
        if !early.is_empty() {
            let (sink, mut moved) = (Arc::clone(sink), std::mem::take(writer));
            let step = blocking(move || {
                moved.write(&*sink, &early);
                moved
            });
            *writer = step.await.map_err(|e| lost(writer, e))?;
        }
        let mut pace = Pace::new(self.stall_limit, self.min_rate);
        while left > 0 {
            if writer.error.is_none() {
                while flushing.behind(writer.offset) {
                    hashing.catch_up(sink, writer, flushing, true).await?;
                    if !flushing.wait(sink, writer.offset).await {
                        break;
                    }
                }
            }
            // Before the stall limit starts: a wait of our own is no stall.
            let want = self.throttle.piece(buffer_len(left, pipe_len)).await;
            let stall = Stall::from_now(self.stall_limit);
            // A peek, cancel-safe, not `readable`: tokio may still hold
            // the socket readable from before the splices that emptied it
            // (see `splice_in`).
            if sink.takes_checkpoints()
                && writer.error.is_none()
                && tokio::time::timeout(IDLE, tcp.peek(&mut [0]))
                    .await
                    .is_err()
            {
                // The sender paused: what came is vouched for, in case
                // this receiver is killed before more comes.
                hashing.catch_up(sink, writer, flushing, true).await?;
                flushing.bring_up_to_date(sink, Some(writer.offset)).await;
            }
            let n = splice_in(tcp, &pipe_in, want, stall).await?;
            let (sink_step, pipe) = (Arc::clone(sink), Arc::clone(&pipe_out));
            let mut moved = std::mem::take(writer);
            let step = blocking(move || {
                moved.reserve_ahead(&*sink_step, left);
                let written = moved.write_from_pipe(&*sink_step, &pipe, n);
                (moved, written)
            });
            let (back, written) = step.await.map_err(|e| lost(writer, e))?;
            *writer = back;
            written?;
            left -= n as u64;
            progress(n as u64);
            pace.moved(n as u64)?;
            self.throttle.moved(n as u64);
            if writer.error.is_none() {
                hashing.catch_up(sink, writer, flushing, false).await?;
                flushing.advance(sink, writer.offset);
            }
        }
        Ok(())
    }

    /// [`Connection::recv_body_from`] in chunks through the stream: each
    /// chunk is hashed and written on the blocking pool while the next
    /// arrives, and synced as `flushing` says; the next is never read two
    /// steps or more past the last checkpoint (see `flush`). `early` is
    /// the start of the bytes after `from`. Cut off, it writes and hashes
    /// what it read before it returns, the chunk it was filling too; so
    /// does it when the sender pauses, before it waits on.
    async fn recv_chunks<B: BodySink>(
        &mut self,
        sink: &Arc<B>,
        early: Vec<u8>,
        from: &Prefix,
        size: u64,
        flushing: &mut Flushing,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Received, CutOff> {
        type Written = (FileWriter, StepHasher);
        let mut state: Written = (FileWriter::at(from.len), StepHasher::at(from.len));
        // A write gives its chunk back, to be filled again: two buffers
        // take turns, so their pages are not faulted in afresh each chunk.
        let mut writing: Option<JoinHandle<(Written, Vec<u8>)>> = None;
        let mut spare = Vec::new();
        let mut pace = Pace::new(self.stall_limit, self.min_rate);
        let mut left = size - from.len - early.len() as u64;
        progress(early.len() as u64);
        self.throttle.moved(early.len() as u64);
        let mut chunk = early;
        let mut cut = None;
        // How far the writes done end, while the next has the state;
        // `None` once one failed.
        let mut written = Some(from.len);
        let pausing = sink.takes_checkpoints();
        // The wait for the sender's next bytes, once it has paused in it.
        let mut paused = None;
        loop {
            if !chunk.is_empty() {
                if let Some(previous) = writing.take() {
                    (state, spare) = previous.await.map_err(data_path_failed)?;
                    written = state.0.error.is_none().then_some(state.0.offset);
                    flushing.hashed(&state.1);
                    flushing.advance(sink, state.0.offset);
                }
                let (mut writer, mut hasher) = std::mem::take(&mut state);
                let sink = Arc::clone(sink);
                writing = Some(tokio::task::spawn_blocking(move || {
                    hasher.update(&chunk);
                    writer.reserve_ahead(&*sink, size - writer.offset);
                    writer.write(&*sink, &chunk);
                    ((writer, hasher), chunk)
                }));
            }
            if left == 0 || cut.is_some() {
                break;
            }
            if paused.is_some() {
                // What came, the chunk cut short by the pause too, is
                // vouched for, in case this receiver is killed before more
                // comes.
                if let Some(last) = writing.take() {
                    (state, spare) = last.await.map_err(data_path_failed)?;
                    written = state.0.error.is_none().then_some(state.0.offset);
                    flushing.hashed(&state.1);
                }
                flushing.bring_up_to_date(sink, written).await;
            }
            if let Some(written) = written {
                while flushing.behind(written) {
                    if !flushing.wait(sink, written).await {
                        break;
                    }
                }
            }
            let mut next = std::mem::take(&mut spare);
            next.clear();
            let want = buffer_len(left, CHUNK);
            let filled = self
                .fill_or_pause(&mut next, want, &mut pace, pausing, paused.take())
                .await;
            left -= next.len() as u64;
            progress(next.len() as u64);
            chunk = next;
            match filled {
                Ok(pause) => paused = pause,
                Err(error) => cut = Some(error),
            }
        }
        if let Some(last) = writing.take() {
            (state, _) = last.await.map_err(data_path_failed)?;
            flushing.hashed(&state.1);
        }
        let (writer, hasher) = state;
        match cut {
            None => Ok(Received {
                hasher,
                sink_error: writer.error,
            }),
            Some(error) => Err(CutOff {
                error,
                written: writer.error.is_none().then_some(writer.offset),
            }),
        }
    }

    /// Writes all of `bytes` to the stream, failing if the peer takes none
    /// of them for the stall limit, or takes them slower than the minimum
    /// rate.
    pub(super) async fn write_paced(
        &mut self,
        bytes: &[u8],
        pace: &mut Pace,
    ) -> Result<(), TransportError> {
        let limit = self.stall_limit;
        let mut rest = bytes;
        while !rest.is_empty() {
            let piece = self.throttle.piece(rest.len()).await;
            let piece = rest.get(..piece).unwrap_or(rest);
            match tokio::time::timeout(limit, self.stream.write(piece)).await {
                Ok(Ok(0)) => return Err(TransportError::Closed),
                Ok(Ok(n)) => {
                    rest = rest.get(n..).unwrap_or_default();
                    pace.moved(n as u64)?;
                    self.throttle.moved(n as u64);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(TransportError::Stalled(limit)),
            }
        }
        Ok(())
    }

    /// Reads into `chunk` until its capacity is full, failing if the peer
    /// sends nothing for the stall limit, sends slower than the minimum
    /// rate, or closes the connection first.
    pub(super) async fn fill_paced(
        &mut self,
        chunk: &mut Vec<u8>,
        pace: &mut Pace,
    ) -> Result<(), TransportError> {
        let want = chunk.capacity();
        self.fill_or_pause(chunk, want, pace, false, None).await?;
        Ok(())
    }

    /// [`Connection::fill_paced`] up to `want` bytes, going on with
    /// `waiting`, a wait the peer paused in, if given. If `pausing`, a wait
    /// in which the peer sends nothing for [`IDLE`] is cut short and given
    /// back, `chunk` short, for the caller to put the pause to use and then
    /// go on with it: its stall limit still runs from when it began.
    async fn fill_or_pause(
        &mut self,
        chunk: &mut Vec<u8>,
        want: usize,
        pace: &mut Pace,
        pausing: bool,
        mut waiting: Option<Stall>,
    ) -> Result<Option<Stall>, TransportError> {
        // Room for all of it at once, so every read can fill what came.
        chunk.reserve(want.saturating_sub(chunk.len()));
        while chunk.len() < want {
            // Before the stall limit starts: a wait of our own is no stall.
            let rest = self.throttle.piece(want - chunk.len()).await as u64;
            let (stall, may_pause) = match waiting.take() {
                Some(stall) => (stall, false),
                None => (Stall::from_now(self.stall_limit), pausing),
            };
            let mut body = (&mut self.stream).take(rest);
            // Cancel-safe: a read given up reads nothing.
            let read = stall.within(body.read_buf(chunk));
            let read = if may_pause {
                match tokio::time::timeout(IDLE, read).await {
                    Ok(read) => read,
                    Err(_) => return Ok(Some(stall)),
                }
            } else {
                read.await
            };
            match read? {
                Ok(0) => return Err(TransportError::Closed),
                Ok(n) => {
                    pace.moved(n as u64)?;
                    self.throttle.moved(n as u64);
                }
                // TLS's word for a peer gone without close_notify: a cut
                // like any other (see `Connection::read_more`).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(TransportError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

/// What a hashing step gives back: the hasher, and whether the range was
/// read whole (`Ok(Err(at))`: the data ended at `at`).
type HashStep = (StepHasher, io::Result<Result<(), u64>>);

/// The hashing of a received body, a step behind the writing: it reads
/// back from the sink what was written, on the blocking pool, while the
/// next piece arrives.
struct Hashing {
    hasher: StepHasher,
    /// The hasher has seen bytes `..hashed`.
    hashed: u64,
    /// A step in progress, with the hasher inside it.
    step: Option<JoinHandle<HashStep>>,
}

impl Hashing {
    /// Hashing of a body from byte `start` on that has seen `early`, the
    /// first bytes from there.
    fn new(start: u64, early: &[u8]) -> Hashing {
        let mut hasher = StepHasher::at(start);
        hasher.update(early);
        Hashing {
            hasher,
            hashed: start + early.len() as u64,
            step: None,
        }
    }

    /// Hands the hasher what `writer` has written since, once the step in
    /// progress is done: at once, all of it, if `wait`, otherwise only if
    /// it is already done, as far as the next step; `flushing` hears how
    /// far it came. A read-back that fails is the sink's failure, like a
    /// write.
    async fn catch_up<B: BodySink>(
        &mut self,
        sink: &Arc<B>,
        writer: &mut FileWriter,
        flushing: &mut Flushing,
        wait: bool,
    ) -> Result<(), TransportError> {
        loop {
            if let Some(step) = self.step.take() {
                if !wait && !step.is_finished() {
                    self.step = Some(step);
                    return Ok(());
                }
                let (hasher, hashed) = step.await.map_err(|e| lost(writer, data_path_failed(e)))?;
                self.hasher = hasher;
                flushing.hashed(&self.hasher);
                let failure = match hashed {
                    Ok(Ok(())) => None,
                    Ok(Err(_)) => Some(io::Error::other(
                        "the file being received was truncated by someone else",
                    )),
                    Err(e) => Some(e),
                };
                if let Some(e) = failure {
                    writer.error.get_or_insert(e);
                }
            }
            if writer.error.is_some() || self.hashed >= writer.offset {
                return Ok(());
            }
            // Never past a step in one go, so that `flushing` hears of
            // every step's prefix.
            let (from, to) = (self.hashed, writer.offset.min(next_step(self.hashed)));
            let mut hasher = std::mem::take(&mut self.hasher);
            let sink = Arc::clone(sink);
            self.step = Some(tokio::task::spawn_blocking(move || {
                let read_at = |buf: &mut [u8], offset| sink.read_at(buf, offset);
                let hashed =
                    body::hash_range(read_at, &mut hasher, from, to, &AtomicBool::new(false));
                (hasher, hashed)
            }));
            self.hashed = to;
            if !wait {
                return Ok(());
            }
        }
    }
}

/// Where the step after the one `offset` is in begins.
fn next_step(offset: u64) -> u64 {
    (offset / STEP + 1).saturating_mul(STEP)
}

/// Notes in `writer` that a step of the data path failed and took the
/// writer's account of what was written with it; gives back `error`.
fn lost(writer: &mut FileWriter, error: TransportError) -> TransportError {
    writer
        .error
        .get_or_insert_with(|| io::Error::other("a step of the data path failed"));
    error
}

/// Keeps a transfer to its stall limit and minimum rate.
pub(super) struct Pace {
    limit: Duration,
    /// Bytes per second; 0 for no minimum.
    min_rate: u64,
    window_start: Instant,
    moved: u64,
}

impl Pace {
    pub(super) fn new(limit: Duration, min_rate: u64) -> Pace {
        Pace {
            limit,
            min_rate,
            window_start: Instant::now(),
            moved: 0,
        }
    }

    /// Counts `bytes` more moved; fails once a whole stall limit has
    /// passed with fewer bytes than the minimum rate asks for.
    pub(super) fn moved(&mut self, bytes: u64) -> Result<(), TransportError> {
        self.moved += bytes;
        let elapsed = self.window_start.elapsed();
        if elapsed < self.limit {
            return Ok(());
        }
        let wanted = (self.min_rate as f64 * elapsed.as_secs_f64()) as u64;
        if self.moved < wanted {
            return Err(TransportError::TooSlow {
                moved: self.moved,
                seconds: elapsed.as_secs(),
                min_rate: self.min_rate,
            });
        }
        self.window_start = Instant::now();
        self.moved = 0;
        Ok(())
    }
}

/// A wait for the peer, given up with [`TransportError::Stalled`] once
/// the stall limit has passed since it began, however it is split: what
/// a receiver does while its sender pauses ([`IDLE`]) does not lengthen
/// it.
#[derive(Clone, Copy)]
struct Stall {
    limit: Duration,
    began: Instant,
}

impl Stall {
    fn from_now(limit: Duration) -> Stall {
        Stall {
            limit,
            began: Instant::now(),
        }
    }

    /// `ready`'s output, unless the stall limit passes first.
    async fn within<F: std::future::Future>(self, ready: F) -> Result<F::Output, TransportError> {
        let left = self.limit.saturating_sub(self.began.elapsed());
        tokio::time::timeout(left, ready)
            .await
            .map_err(|_| TransportError::Stalled(self.limit))
    }
}

/// Splices what the socket has, up to `want` bytes, into the empty pipe:
/// waits for the first byte (within `stall`), then takes whatever more
/// arrived without waiting. Returns how many bytes the pipe holds.
///
/// Only the first splice goes through tokio's readiness: into an empty
/// pipe, EAGAIN can only mean the socket is empty, so tokio may forget its
/// readiness. A later EAGAIN may mean the pipe is full instead (TCP fills
/// a pipe slot per packet fragment, not per page), and clearing the
/// socket's readiness then would wait for data that is already there.
async fn splice_in(
    tcp: &TcpStream,
    pipe: &OwnedFd,
    want: usize,
    stall: Stall,
) -> Result<usize, TransportError> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let splice = |len| rustix::pipe::splice(tcp.as_fd(), None, pipe, None, len, flags);
    let mut spliced = loop {
        wait_ready(tcp, Interest::READABLE, stall).await?;
        match tcp.try_io(Interest::READABLE, || splice(want).map_err(io::Error::from)) {
            Ok(0) => return Err(TransportError::Closed),
            Ok(n) => break n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(TransportError::Io(e)),
        }
    };
    while spliced < want {
        match splice(want - spliced) {
            Ok(0) | Err(rustix::io::Errno::AGAIN) => break,
            Ok(n) => spliced += n,
            Err(rustix::io::Errno::INTR) => {}
            // What the pipe holds is written first; the next splice meets
            // the failure again.
            Err(_) => break,
        }
    }
    Ok(spliced)
}

/// Waits until the socket is ready for `interest`, or has failed, within
/// `stall`.
async fn wait_ready(
    tcp: &TcpStream,
    interest: Interest,
    stall: Stall,
) -> Result<(), TransportError> {
    stall.within(tcp.ready(interest)).await??;
    Ok(())
}

/// What a failed sendfile(2) means: it reports a failed read of the file
/// and a failed write to the socket alike; EIO is the file's.
fn sendfile_failed(error: io::Error) -> TransportError {
    if error.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) {
        TransportError::SourceFailed(error)
    } else {
        TransportError::Io(error)
    }
}

/// Refuses to go on from a prefix that is not one, or that leaves
/// nothing of the body to send: the caller rules both out.
fn check_resumable(from: &Prefix, size: u64) -> Result<(), TransportError> {
    if from.is_well_formed(STEP) && (from.len == 0 || from.len < size) {
        return Ok(());
    }
    Err(data_path_failed(format!(
        "a body of {size} bytes cannot go on from byte {}",
        from.len
    )))
}

/// Runs one step of blocking work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TransportError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(data_path_failed)
}

/// The source or sink back from the steps that shared it; they have all
/// finished by now.
pub(super) fn take_back<B>(end: Arc<B>) -> Result<B, TransportError> {
    Arc::try_unwrap(end).map_err(|_| data_path_failed("a step still holds the file"))
}

pub(super) fn data_path_failed(why: impl std::fmt::Display) -> TransportError {
    TransportError::Io(io::Error::other(format!("data path failed: {why}")))
}

/// Tells a hashing step to stop when the transfer it serves is dropped.
#[derive(Default)]
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp_pair;
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use tokio::io::AsyncWriteExt;

    /// Bytes no compressor or filesystem would shortcut.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn file_holding(data: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    /// A source or sink with no descriptor, as an object store's would be:
    /// bodies to and from it move in chunks.
    #[derive(Default)]
    struct Memory(std::sync::Mutex<Vec<u8>>);

    impl BodySource for Memory {
        fn raw_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
            None
        }

        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let data = self.0.lock().unwrap();
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        }
    }

    impl BodySink for Memory {
        fn raw_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
            None
        }

        fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
            let mut data = self.0.lock().unwrap();
            let end = offset as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset as usize..end].copy_from_slice(bytes);
            Ok(())
        }

        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            BodySource::read_at(self, buf, offset)
        }

        fn reserve(&self, _offset: u64, _len: u64) {}

        fn sync_written(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Noise made a word at a time: bodies of several steps stay quick to
    /// make in a debug build.
    fn fast_noise(len: usize, mut state: u64) -> Vec<u8> {
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        data.truncate(len);
        data
    }

    /// The prefix of the first `len` bytes of `data`, as a receiver that
    /// synced them would hold it.
    fn prefix_of(data: &[u8], len: u64) -> Prefix {
        let mut hasher = StepHasher::new();
        hasher.update(&data[..len as usize]);
        hasher.prefix(&Prefix::none())
    }

    /// How much of a sink's bytes are there, to check what a sync covered.
    trait Length {
        fn length(&self) -> u64;
    }

    impl Length for std::fs::File {
        fn length(&self) -> u64 {
            self.metadata().unwrap().len()
        }
    }

    impl Length for Memory {
        fn length(&self) -> u64 {
            self.0.lock().unwrap().len() as u64
        }
    }

    /// A sink that records its checkpoints, each with how many bytes the
    /// last sync before it covered. Its syncs can be made slow, and it
    /// notes the most that was ever written past the last checkpoint,
    /// looked at after each sync and before each checkpoint.
    struct Recording<S> {
        inner: S,
        sync_delay: Duration,
        /// What it recorded, for the test to read while the receive has
        /// the sink.
        log: Arc<Log>,
    }

    #[derive(Default)]
    struct Log {
        synced: std::sync::Mutex<u64>,
        checkpoints: std::sync::Mutex<Vec<(Prefix, u64)>>,
        max_ahead: std::sync::Mutex<u64>,
    }

    impl Log {
        fn checkpoints(&self) -> Vec<(Prefix, u64)> {
            self.checkpoints.lock().unwrap().clone()
        }
    }

    impl<S> Recording<S> {
        fn new(inner: S) -> Recording<S> {
            Recording::slow(inner, Duration::ZERO)
        }

        /// A recording whose every sync takes `sync_delay` longer.
        fn slow(inner: S, sync_delay: Duration) -> Recording<S> {
            Recording {
                inner,
                sync_delay,
                log: Default::default(),
            }
        }
    }

    impl<S: Length> Recording<S> {
        /// Notes how far what is written now runs past the last checkpoint.
        fn note_ahead(&self) {
            let checkpointed = {
                let checkpoints = self.log.checkpoints.lock().unwrap();
                checkpoints.last().map_or(0, |(p, _)| p.len)
            };
            let ahead = self.inner.length().saturating_sub(checkpointed);
            let mut max = self.log.max_ahead.lock().unwrap();
            *max = (*max).max(ahead);
        }
    }

    impl<S: BodySink + Length> BodySink for Recording<S> {
        fn raw_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
            self.inner.raw_fd()
        }

        fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
            self.inner.write_all_at(bytes, offset)
        }

        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.inner.read_at(buf, offset)
        }

        fn reserve(&self, offset: u64, len: u64) {
            self.inner.reserve(offset, len)
        }

        fn sync_written(&self) -> io::Result<()> {
            // The length before the sync: all of it is on disk after.
            let length = self.inner.length();
            self.inner.sync_written()?;
            std::thread::sleep(self.sync_delay);
            *self.log.synced.lock().unwrap() = length;
            self.note_ahead();
            Ok(())
        }

        fn takes_checkpoints(&self) -> bool {
            true
        }

        fn checkpoint(&self, prefix: &Prefix) {
            self.note_ahead();
            let synced = *self.log.synced.lock().unwrap();
            self.log
                .checkpoints
                .lock()
                .unwrap()
                .push((prefix.clone(), synced));
        }
    }

    /// Sends `data` to `sink`, which holds its first `from` bytes
    /// already, and gives back the sink with what the sender found.
    async fn resume<A: BodySource, B: BodySink>(
        source: A,
        sink: B,
        data: &[u8],
        from: u64,
    ) -> (Result<(B, Digest), TransportError>, PrefixCheck) {
        let (a, b) = tcp_pair().await;
        let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
        let size = data.len() as u64;
        let offered = prefix_of(data, from);
        let (mut quiet, mut silent) = (|_| {}, |_| {});
        let send = sender.send_body_from(source, size, &offered, None, &mut quiet);
        let recv = receiver.recv_body_from(sink, size, offered.clone(), &mut silent);
        let (sent, received) = tokio::join!(send, recv);
        (received, sent.unwrap().2)
    }

    /// Checks what a resumed receive left: every byte of `data` in the
    /// sink, and checkpoints of ever longer whole steps, each after a
    /// sync that covered it and each the prefix of those bytes.
    fn check_resumed<S: BodySink + Length>(
        received: Result<(Recording<S>, Digest), TransportError>,
        data: &[u8],
        from: u64,
        what: &str,
    ) {
        let (sink, digest) = received.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(digest, *blake3::hash(data).as_bytes(), "{what}");
        let mut written = vec![0; data.len()];
        let mut at = 0;
        while at < written.len() {
            let n = sink.read_at(&mut written[at..], at as u64).unwrap();
            assert!(n > 0, "{what}: the sink ends at {at}");
            at += n;
        }
        assert!(written == data, "{what}: the sink holds other bytes");
        let checkpoints = sink.log.checkpoints();
        let lens: Vec<u64> = checkpoints.iter().map(|(p, _)| p.len).collect();
        assert_eq!(lens.first(), Some(&(from + STEP)), "{what}: {lens:?}");
        for (prefix, synced) in checkpoints.iter() {
            assert!(prefix.len < data.len() as u64, "{what}: {lens:?}");
            assert!(prefix.len <= *synced, "{what}: {} not synced", prefix.len);
            assert_eq!(*prefix, prefix_of(data, prefix.len), "{what}");
        }
        assert!(lens.windows(2).all(|w| w[0] < w[1]), "{what}: {lens:?}");
    }

    /// A body resumed from a partial of whole steps arrives whole, by
    /// sendfile and splice between descriptors and in chunks between ends
    /// without one, and the receiver vouches for what it synced as it goes
    /// (issue 14).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_resumed_after_a_prefix_arrives_whole_with_checkpoints() {
        let data = fast_noise(2 * STEP as usize + (3 << 20), 7);
        let source = file_holding(&data);
        for from in [0, STEP] {
            let partial = &data[..from as usize];
            let sink = Recording::new(file_holding(partial));
            let file = source.try_clone().unwrap();
            let (received, check) = resume(file, sink, &data, from).await;
            assert_eq!(check, PrefixCheck::Matched);
            check_resumed(received, &data, from, &format!("splice from {from}"));

            let memory = Memory(std::sync::Mutex::new(data.clone()));
            let sink = Recording::new(Memory(std::sync::Mutex::new(partial.to_vec())));
            let (received, check) = resume(memory, sink, &data, from).await;
            assert_eq!(check, PrefixCheck::Matched);
            check_resumed(received, &data, from, &format!("chunks from {from}"));
        }
    }

    /// A sync that takes this long lets a fast peer run far ahead of it.
    const SLOW_SYNC: Duration = Duration::from_millis(600);

    /// A body cut off a little past two steps, by a peer that hung up,
    /// while the syncs lag behind: before the receive returns its error,
    /// what arrived is synced and vouched for up to its last whole step,
    /// over splice and over chunks (issue 14).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_cut_off_is_vouched_for_up_to_its_last_whole_step() {
        let data = fast_noise(2 * STEP as usize + (3 << 20), 13);
        for chunks in [false, true] {
            let what = if chunks { "chunks" } else { "splice" };
            let (mut a, b) = tcp_pair().await;
            let mut receiver = Connection::new(b);
            let peer = async {
                a.write_all(&data).await.unwrap();
                drop(a);
            };
            let (received, log) = if chunks {
                let sink = Recording::slow(Memory::default(), SLOW_SYNC);
                let log = Arc::clone(&sink.log);
                let recv = async { receiver.recv_body(sink, 4 * STEP, &mut |_| {}).await };
                (tokio::join!(peer, recv).1.map(|_| ()), log)
            } else {
                let sink = Recording::slow(tempfile::tempfile().unwrap(), SLOW_SYNC);
                let log = Arc::clone(&sink.log);
                let recv = async { receiver.recv_body(sink, 4 * STEP, &mut |_| {}).await };
                (tokio::join!(peer, recv).1.map(|_| ()), log)
            };
            assert!(
                matches!(received, Err(TransportError::Closed)),
                "{what}: {:?}",
                received.err()
            );
            let checkpoints = log.checkpoints();
            let lens: Vec<u64> = checkpoints.iter().map(|(p, _)| p.len >> 20).collect();
            let (last, synced) = checkpoints.last().expect(what);
            assert_eq!(last.len, 2 * STEP, "{what}: checkpoints at {lens:?} MiB");
            assert_eq!(*last, prefix_of(&data, 2 * STEP), "{what}");
            assert!(*synced >= last.len, "{what}: only {synced} synced");
        }
    }

    /// A sender that pauses just past two steps, holding the connection
    /// open: the receiver syncs and vouches for both before more comes,
    /// over splice and over chunks (the chunk the pause cut short written
    /// too), so a receiver killed during the pause is sent less than a
    /// step again (issue 14).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_whose_sender_pauses_vouches_for_what_came() {
        let data = fast_noise(2 * STEP as usize + 1, 19);
        let data = &data;
        for chunks in [false, true] {
            let what = if chunks { "chunks" } else { "splice" };
            let (mut a, b) = tcp_pair().await;
            let mut receiver = Connection::new(b);
            // Sends what it has, then waits (a while at most) for the
            // receiver's checkpoint of both steps before it hangs up.
            let pause = |log: Arc<Log>| async move {
                a.write_all(data).await.unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                let vouched = || log.checkpoints().last().map(|(p, _)| p.len) == Some(2 * STEP);
                while !vouched() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                log.checkpoints()
            };
            let (checkpoints, received) = if chunks {
                let sink = Recording::new(Memory::default());
                let pause = pause(Arc::clone(&sink.log));
                let recv = async { receiver.recv_body(sink, 4 * STEP, &mut |_| {}).await };
                let (checkpoints, received) = tokio::join!(pause, recv);
                (checkpoints, received.map(|_| ()))
            } else {
                let sink = Recording::new(tempfile::tempfile().unwrap());
                let pause = pause(Arc::clone(&sink.log));
                let recv = async { receiver.recv_body(sink, 4 * STEP, &mut |_| {}).await };
                let (checkpoints, received) = tokio::join!(pause, recv);
                (checkpoints, received.map(|_| ()))
            };
            assert!(
                matches!(received, Err(TransportError::Closed)),
                "{what}: {:?}",
                received.err()
            );
            let lens: Vec<u64> = checkpoints.iter().map(|(p, _)| p.len >> 20).collect();
            let (last, synced) = checkpoints.last().expect(what);
            assert_eq!(last.len, 2 * STEP, "{what}: checkpoints at {lens:?} MiB");
            assert_eq!(*last, prefix_of(data, 2 * STEP), "{what}");
            assert!(*synced >= last.len, "{what}: only {synced} synced");
        }
    }

    /// A sink whose syncs are slow holds back a fast sender: what is
    /// written never runs two steps, and the piece read last, past the
    /// last checkpoint, so a receiver killed outright resends little more
    /// (issue 14).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_sync_holds_the_receive_within_two_steps_of_its_checkpoint() {
        let data = fast_noise(4 * STEP as usize + (1 << 20), 17);
        let size = data.len() as u64;
        for chunks in [false, true] {
            let what = if chunks { "chunks" } else { "splice" };
            let (a, b) = tcp_pair().await;
            let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
            let send = async {
                let sent = if chunks {
                    let memory = Memory(std::sync::Mutex::new(data.clone()));
                    let sent = sender.send_body(memory, size, None, &mut |_| {}).await;
                    sent.map(|_| ())
                } else {
                    let file = file_holding(&data);
                    let sent = sender.send_body(file, size, None, &mut |_| {}).await;
                    sent.map(|_| ())
                };
                sent.unwrap();
            };
            let (received, log) = if chunks {
                let sink = Recording::slow(Memory::default(), SLOW_SYNC);
                let log = Arc::clone(&sink.log);
                let recv = async { receiver.recv_body(sink, size, &mut |_| {}).await };
                (tokio::join!(send, recv).1.map(|(_, d)| d), log)
            } else {
                let sink = Recording::slow(tempfile::tempfile().unwrap(), SLOW_SYNC);
                let log = Arc::clone(&sink.log);
                let recv = async { receiver.recv_body(sink, size, &mut |_| {}).await };
                (tokio::join!(send, recv).1.map(|(_, d)| d), log)
            };
            let digest = received.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(digest, *blake3::hash(&data).as_bytes(), "{what}");
            let ahead = *log.max_ahead.lock().unwrap();
            let piece = PIPE_BUFFER.max(2 * CHUNK) as u64;
            assert!(
                ahead <= 2 * STEP + piece,
                "{what}: {} MiB written past the last checkpoint",
                ahead >> 20
            );
            let checkpoints = log.checkpoints();
            let lens: Vec<u64> = checkpoints.iter().map(|(p, _)| p.len >> 20).collect();
            assert!(lens.len() >= 3, "{what}: checkpoints at {lens:?} MiB");
            for (prefix, synced) in &checkpoints {
                assert!(prefix.len <= *synced, "{what}: {lens:?} MiB");
                assert_eq!(*prefix, prefix_of(&data, prefix.len), "{what}");
            }
        }
    }

    /// A partial that is not the sender's: the sender says so, and the
    /// receiver's check fails, since the trailer carries the digest of the
    /// sender's own bytes, not one made from the prefix it was offered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partial_of_other_bytes_fails_the_digest_check() {
        let data = fast_noise(STEP as usize + (1 << 20), 11);
        let mut partial = data[..STEP as usize].to_vec();
        partial[12345] ^= 1;
        let (a, b) = tcp_pair().await;
        let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
        let size = data.len() as u64;
        let offered = prefix_of(&partial, STEP);
        let send = async {
            let sent = sender
                .send_body_from(file_holding(&data), size, &offered, None, &mut |_| {})
                .await;
            sender.write_message(&Message::Done).await.unwrap();
            sent
        };
        let recv = async {
            let sink = file_holding(&partial);
            let received = receiver
                .recv_body_from(sink, size, offered.clone(), &mut |_| {})
                .await;
            (received, receiver.read_message().await.unwrap())
        };
        let (sent, (received, next)) = tokio::join!(send, recv);
        let (_, digest, check) = sent.unwrap();
        assert_eq!(digest, *blake3::hash(&data).as_bytes());
        assert_eq!(check, PrefixCheck::Differed);
        assert!(
            matches!(received, Err(TransportError::DigestMismatch)),
            "{:?}",
            received.err()
        );
        assert_eq!(next, Some(Message::Done), "the connection is still in step");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ends_without_a_descriptor_move_in_chunks() {
        let len = 3 * CHUNK + 17;
        let data = noise(len);
        let (a, b) = tcp_pair().await;
        let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
        let source = Memory(std::sync::Mutex::new(data.clone()));
        let (mut quiet, mut silent) = (|_| {}, |_| {});
        let send = sender.send_body(source, len as u64, None, &mut quiet);
        let recv = receiver.recv_body(Memory::default(), len as u64, &mut silent);
        let (sent, received) = tokio::join!(send, recv);
        sent.unwrap();
        let (sink, digest) = received.unwrap();
        assert_eq!(digest, *blake3::hash(&data).as_bytes());
        assert_eq!(*sink.0.lock().unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_sink_still_consumes_the_whole_body_and_the_next_frame_follows() {
        for len in [1000, 3 << 20] {
            let data = noise(len);
            let (a, b) = tcp_pair().await;
            let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
            // Read-only: every write fails.
            let temp = tempfile::NamedTempFile::new().unwrap();
            let sink = std::fs::File::open(temp.path()).unwrap();
            let send = async {
                let source = file_holding(&data);
                let sent = sender
                    .send_body(source, len as u64, None, &mut |_| {})
                    .await;
                sent.unwrap();
                sender.write_message(&Message::Done).await.unwrap();
            };
            let recv = async {
                let received = receiver.recv_body(sink, len as u64, &mut |_| {}).await;
                assert!(
                    matches!(received, Err(TransportError::Sink(_))),
                    "{len} bytes"
                );
                receiver.read_message().await.unwrap()
            };
            let ((), next) = tokio::join!(send, recv);
            assert_eq!(next, Some(Message::Done), "{len} bytes");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_cut_short_is_an_error() {
        for len in [1000, 3 << 20] {
            let (mut a, b) = tcp_pair().await;
            let mut receiver = Connection::new(b);
            a.write_all(&noise(len / 2)).await.unwrap();
            drop(a);
            let sink = tempfile::tempfile().unwrap();
            let received = receiver.recv_body(sink, len as u64, &mut |_| {}).await;
            assert!(
                matches!(received, Err(TransportError::Closed)),
                "{len} bytes: {:?}",
                received.err()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_huge_declared_body_claims_disk_only_as_far_as_data_arrived() {
        use std::os::unix::fs::MetadataExt;
        let (mut a, b) = tcp_pair().await;
        let mut receiver = Connection::new(b);
        let sent = 2 << 20;
        a.write_all(&noise(sent)).await.unwrap();
        drop(a);
        let sink = tempfile::tempfile().unwrap();
        let claim = sink.try_clone().unwrap();
        let _ = receiver.recv_body(sink, 1 << 40, &mut |_| {}).await;
        let claimed = claim.metadata().unwrap().blocks() * 512;
        assert!(
            claimed <= 2 * sent as u64 + (1 << 20),
            "{claimed} bytes claimed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_received_file_claims_no_disk_beyond_its_end() {
        use std::os::unix::fs::MetadataExt;
        let len = (3 << 20) + 5;
        let (a, b) = tcp_pair().await;
        let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
        let (mut quiet, mut silent) = (|_| {}, |_| {});
        let source = file_holding(&noise(len));
        let send = sender.send_body(source, len as u64, None, &mut quiet);
        let recv = receiver.recv_body(tempfile::tempfile().unwrap(), len as u64, &mut silent);
        let (sent, received) = tokio::join!(send, recv);
        sent.unwrap();
        let (sink, _) = received.unwrap();
        let claimed = sink.metadata().unwrap().blocks() * 512;
        assert!(
            claimed <= (len as u64).next_multiple_of(64 * 1024),
            "{claimed} bytes claimed"
        );
    }

    /// A peer that sends a little now and then, but never less often than
    /// the stall limit, is given up once a whole stall limit has passed
    /// below the minimum rate (issue 12).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickling_peer_is_given_up_below_the_minimum_rate() {
        for len in [INLINE_BODY, 8 << 20] {
            let (mut a, b) = tcp_pair().await;
            let mut receiver = Connection::new(b);
            receiver.set_stall_limit(Duration::from_millis(300));
            receiver.set_min_rate(1 << 20);
            let trickle = tokio::spawn(async move {
                for _ in 0..40 {
                    if a.write_all(&[7; 10]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            let sink = tempfile::tempfile().unwrap();
            let received = receiver.recv_body(sink, len, &mut |_| {}).await;
            assert!(
                matches!(received, Err(TransportError::TooSlow { .. })),
                "{len} bytes: {:?}",
                received.err()
            );
            trickle.abort();
        }
    }

    /// Transfers whose peers have gone quiet hold no thread: the blocking
    /// pool stays free for everyone else's work (issue 12).
    #[test]
    fn stalled_transfers_hold_no_blocking_thread() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut peers = Vec::new();
            let mut transfers = Vec::new();
            for i in 0..8u64 {
                let (a, b) = tcp_pair().await;
                let mut receiver = Connection::new(b);
                let len = if i % 2 == 0 { 8 << 20 } else { 1000 };
                // A body declared, never sent.
                transfers.push(tokio::spawn(async move {
                    let sink = tempfile::tempfile().unwrap();
                    let _ = receiver.recv_body(sink, len, &mut |_| {}).await;
                }));
                peers.push(a);
                // A body sent to a peer that never reads it.
                let (c, d) = tcp_pair().await;
                let mut sender = Connection::new(c);
                let data = file_holding(&noise(4 << 20));
                transfers.push(tokio::spawn(async move {
                    let _ = sender
                        .send_body(data, 4 << 20, Some([0; 32]), &mut |_| {})
                        .await;
                }));
                peers.push(d);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let free = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::task::spawn_blocking(|| "done"),
            )
            .await;
            assert_eq!(free.ok().and_then(Result::ok), Some("done"));
            for transfer in transfers {
                transfer.abort();
            }
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_of_every_size_cross_a_socket_whole_with_their_digest() {
        for len in [
            0,
            1,
            INLINE_BODY as usize + 1,
            3 * 1024 * 1024 + 5,
            40 << 20,
        ] {
            let data = noise(len);
            let (a, b) = tcp_pair().await;
            let mut sender = Connection::new(a);
            let mut receiver = Connection::new(b);
            let source = file_holding(&data);
            let sink = tempfile::tempfile().unwrap();
            let send = async {
                sender
                    .send_body(source, len as u64, None, &mut |_| {})
                    .await
            };
            let recv = async { receiver.recv_body(sink, len as u64, &mut |_| {}).await };
            let (sent, received) =
                tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(send, recv) })
                    .await
                    .unwrap_or_else(|_| panic!("{len} bytes: stuck"));
            let (_, sent_digest) = sent.unwrap();
            let (sink, digest) = received.unwrap();
            assert_eq!(digest, *blake3::hash(&data).as_bytes(), "{len} bytes");
            assert_eq!(sent_digest, digest);
            let mut written = vec![0; len];
            sink.read_exact_at(&mut written, 0).unwrap();
            assert_eq!(written, data, "{len} bytes");
        }
    }
}
