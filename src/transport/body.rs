//! The blocking pieces of the data path: each one moves or hashes one
//! bounded step of a body and returns, so no thread ever waits on the
//! network. The async side (see `pump`) waits for the socket, then hands
//! each step to the blocking pool.
//!
//! - Sending a file uses sendfile(2): the kernel hands page-cache pages to
//!   TCP and nothing is copied through user space.
//! - Receiving splices the socket into a pipe (without blocking, on the
//!   async side) and the pipe into the file here, so each byte is copied
//!   once, into the page cache; what was written is read back from the
//!   page cache and hashed in steps of its own, beside the next piece.
//! - Disk space is claimed ahead of the data only as far as data has
//!   arrived (see [`FileWriter::reserve_ahead`]), never for the size a peer
//!   merely declares.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use rustix::pipe::SpliceFlags;

use super::{BodySink, BodySource, TransportError};
use crate::protocol::StepHasher;

/// Bodies up to this size move in one chunk through user space: the
/// zero-copy machinery would cost more than it saves.
pub const INLINE_BODY: u64 = 256 * 1024;

/// The pipe a large body is spliced through; large pipes mean few splices.
pub const PIPE_BUFFER: usize = 1024 * 1024;

/// Bytes read per pread(2) when hashing; small enough to stay in the L2
/// cache between the read and the hash.
const HASH_READ: usize = 256 * 1024;

/// The most disk space a receiver claims in one step ahead of the data.
const RESERVE_STEP: u64 = 64 * 1024 * 1024;

/// How much of a body is written between syncs while it arrives.
pub const FLUSH_STEP: u64 = 64 * 1024 * 1024;

/// The most one step of sendfile(2) is asked to move before the async side
/// looks at the socket again and reports progress.
pub const SENDFILE_STEP: usize = 4 * 1024 * 1024;

/// Where a body being received stands: how far it is written, how far disk
/// space is claimed, and the first write that failed. It holds no
/// reference, so it can travel between the async side and the blocking
/// steps.
#[derive(Debug, Default)]
pub struct FileWriter {
    /// Where this transfer's bytes start: after a partial it resumes.
    start: u64,
    pub offset: u64,
    /// Where the disk space claimed so far ends.
    reserved: u64,
    /// The first failure; from then on the body is read and discarded, so
    /// the connection stays in step.
    pub error: Option<io::Error>,
}

impl FileWriter {
    /// A writer of a body's bytes from `start` on.
    pub fn at(start: u64) -> FileWriter {
        FileWriter {
            start,
            offset: start,
            reserved: start,
            error: None,
        }
    }

    /// Claims disk space for what comes next of the `left` bytes still to
    /// be written: as much again as has arrived so far, at most
    /// [`RESERVE_STEP`], and never past the body's end. One large extent
    /// is less filesystem work than many small ones, and a peer that
    /// declares a huge body and sends little claims about as little as it
    /// sent: a thousand uploads of one byte claim a block each. A partial
    /// resumed does not count as arrived: the peer has not sent it now.
    pub fn reserve_ahead(&mut self, sink: &dyn BodySink, left: u64) {
        let arrived = self.offset - self.start;
        if self.offset >= self.reserved && self.error.is_none() && arrived > 0 {
            let step = left.min(arrived).min(RESERVE_STEP);
            sink.reserve(self.offset, step);
            self.reserved = self.offset + step;
        }
    }

    /// Writes `bytes` at the current offset, unless writing failed before.
    pub fn write(&mut self, sink: &dyn BodySink, bytes: &[u8]) {
        if self.error.is_none() {
            match sink.write_all_at(bytes, self.offset) {
                Ok(()) => self.offset += bytes.len() as u64,
                Err(e) => self.error = Some(e),
            }
        }
    }

    /// Moves `len` bytes from `pipe` into the sink's descriptor, or, once
    /// writing has failed, reads and discards them. Fails only if the pipe
    /// itself does, which leaves the connection out of step.
    pub fn write_from_pipe(
        &mut self,
        sink: &dyn BodySink,
        pipe: &OwnedFd,
        mut len: usize,
    ) -> Result<(), TransportError> {
        if sink.raw_fd().is_none() {
            self.error
                .get_or_insert_with(|| io::Error::other("the sink has no descriptor to splice to"));
        }
        while let (true, None, Some(fd)) = (len > 0, &self.error, sink.raw_fd()) {
            let mut offset = self.offset;
            match rustix::pipe::splice(pipe, None, fd, Some(&mut offset), len, SpliceFlags::MOVE) {
                Ok(n) => {
                    self.offset = offset;
                    len -= n;
                }
                Err(Errno::INTR) => {}
                Err(e) => self.error = Some(e.into()),
            }
        }
        let mut scrap = [0; 8192];
        while len > 0 {
            let want = len.min(scrap.len());
            match rustix::io::read(pipe, head_mut(&mut scrap, want)) {
                Ok(n) => len -= n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(TransportError::Io(e.into())),
            }
        }
        Ok(())
    }
}

/// Hashes bytes `from..to` of what `read_at` reads into `hasher`, giving
/// up early if `stop` is set. Ends early with `Ok(Err(at))` if the data
/// ends at `at`.
pub fn hash_range(
    read_at: impl Fn(&mut [u8], u64) -> io::Result<usize>,
    hasher: &mut StepHasher,
    from: u64,
    to: u64,
    stop: &AtomicBool,
) -> io::Result<Result<(), u64>> {
    let mut buffer = vec![0; buffer_len(to - from, HASH_READ)];
    let mut offset = from;
    while offset < to && !stop.load(Ordering::Relaxed) {
        let want = buffer_len(to - offset, buffer.len());
        let n = read_at(head_mut(&mut buffer, want), offset)?;
        if n == 0 {
            return Ok(Err(offset));
        }
        hasher.update(head(&buffer, n));
        offset += n as u64;
    }
    Ok(Ok(()))
}

/// A hasher of bytes `from..to` of `source`, read from it; `from` is a
/// whole number of steps. Gives up early if `stop` is set (the hasher is
/// then of no use).
pub fn hash_source(
    source: &dyn BodySource,
    from: u64,
    to: u64,
    stop: &AtomicBool,
) -> Result<StepHasher, TransportError> {
    let mut hasher = StepHasher::at(from);
    let read_at = |buf: &mut [u8], offset| source.read_at(buf, offset);
    match hash_range(read_at, &mut hasher, from, to, stop) {
        Ok(Ok(())) => Ok(hasher),
        Ok(Err(sent)) => Err(TransportError::FileShrank { sent, declared: to }),
        Err(e) => Err(TransportError::SourceFailed(e)),
    }
}

/// Reads bytes `offset..offset + len` of `source` whole into `chunk`, a
/// buffer used before (so its pages are not faulted in afresh for every
/// chunk), hashing them into `hasher` unless the digest is known already.
pub fn read_chunk(
    source: &dyn BodySource,
    offset: u64,
    len: usize,
    size: u64,
    hasher: Option<&mut StepHasher>,
    mut chunk: Vec<u8>,
) -> Result<Vec<u8>, TransportError> {
    chunk.resize(len, 0);
    let mut filled = 0;
    while filled < chunk.len() {
        let rest = chunk.get_mut(filled..).unwrap_or_default();
        match source.read_at(rest, offset + filled as u64) {
            Ok(0) => {
                return Err(TransportError::FileShrank {
                    sent: offset + filled as u64,
                    declared: size,
                })
            }
            Ok(n) => filled += n,
            Err(e) => return Err(TransportError::SourceFailed(e)),
        }
    }
    if let Some(hasher) = hasher {
        hasher.update(&chunk);
    }
    Ok(chunk)
}

/// Sends bytes of `file` from `offset` on, up to `end` and at most
/// [`SENDFILE_STEP`], with sendfile(2) on the non-blocking `socket`;
/// returns the new offset, which is `offset` itself if the socket took
/// nothing (its buffer is full: the caller waits for it).
pub fn sendfile_step(
    socket: &OwnedFd,
    file: BorrowedFd<'_>,
    mut offset: u64,
    end: u64,
) -> Result<u64, TransportError> {
    let start = offset;
    while offset < end && offset - start < SENDFILE_STEP as u64 {
        let want = buffer_len(end - offset, SENDFILE_STEP);
        match rustix::fs::sendfile(socket.as_fd(), file, Some(&mut offset), want) {
            Ok(0) => {
                return Err(TransportError::FileShrank {
                    sent: offset,
                    declared: end,
                })
            }
            Ok(_) => {}
            Err(Errno::AGAIN) => break,
            Err(Errno::INTR) => {}
            // sendfile reports a failed read of the file and a failed
            // write to the socket alike; the socket is the likelier.
            Err(Errno::IO) => return Err(TransportError::SourceFailed(io::Error::from(Errno::IO))),
            Err(e) => return Err(TransportError::Io(e.into())),
        }
    }
    Ok(offset)
}

/// The first `len` bytes of `buffer`, or all of it if shorter. Callers
/// never ask for more than there is; this spares the data path a panic if
/// one ever did.
fn head(buffer: &[u8], len: usize) -> &[u8] {
    buffer.get(..len).unwrap_or(buffer)
}

/// [`head`] for writing into.
fn head_mut(buffer: &mut [u8], len: usize) -> &mut [u8] {
    let len = len.min(buffer.len());
    buffer.split_at_mut(len).0
}

/// The length of the next piece: `limit`, or what is left if less.
pub fn buffer_len(left: u64, limit: usize) -> usize {
    usize::try_from(left).map_or(limit, |left| left.min(limit))
}
