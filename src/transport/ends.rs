//! The two ends of a body that are not the socket: where it is read from
//! ([`BodySource`]) and where it is written to ([`BodySink`]).
//!
//! The transport never opens a file. It is handed a source or a sink, and
//! asks it for a descriptor the way it asks the stream for its socket
//! ([`Stream::raw_tcp`](super::Stream::raw_tcp)): when both the
//! socket and the file are descriptors, the body moves by sendfile(2) and
//! splice(2); otherwise it moves in chunks through the methods below. Any
//! open descriptor is both, so a `File`, or a store's handle that wraps
//! one, needs no code of its own.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::io::Errno;

use crate::protocol::Prefix;

/// Where a body is read from.
pub trait BodySource: Send + Sync + 'static {
    /// A descriptor sendfile(2) can read from, when there is one.
    fn raw_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end. An
    /// interrupted call is retried here, not by the caller: every error is
    /// a real one.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

/// Where a body is written to.
pub trait BodySink: Send + Sync + 'static {
    /// A descriptor splice(2) can write to, when there is one.
    fn raw_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Writes all of `bytes` at `offset`.
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;

    /// Reads back what was written, so the zero-copy path can hash it;
    /// retries an interrupted call as [`BodySource::read_at`] does.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Claims room for `len` more bytes at `offset`, ahead of the data.
    /// Best effort: where it cannot, the writes do without.
    fn reserve(&self, offset: u64, len: u64);

    /// Pushes what was written so far toward the disk while the rest still
    /// arrives. A failure here is met again by the final sync.
    fn sync_written(&self) -> io::Result<()>;

    /// The first `prefix.len` bytes are synced to disk and vouched for by
    /// `prefix`: a sink that keeps partials records it, so an interrupted
    /// transfer can go on from there (PROTOCOL.md §5.13). Called on the
    /// blocking pool while the body arrives, with ever longer prefixes of
    /// whole steps, each shorter than the body; never after the receive
    /// has returned, unless it was cancelled (its future dropped) while a
    /// call was under way.
    fn checkpoint(&self, _prefix: &Prefix) {}

    /// Whether [`BodySink::checkpoint`] keeps anything. Only for a sink
    /// that does is the receive held within two steps of its last
    /// checkpoint, and a body cut off synced and vouched for up to the
    /// last whole step it holds before the error is returned, as is one
    /// whose sender pauses before the receive waits on; for any other the
    /// data is synced every step and no more.
    fn takes_checkpoints(&self) -> bool {
        false
    }
}

impl<T: AsFd + Send + Sync + 'static> BodySource for T {
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_fd_at(self.as_fd(), buf, offset)
    }
}

impl<T: AsFd + Send + Sync + 'static> BodySink for T {
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }

    fn write_all_at(&self, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
        while !bytes.is_empty() {
            match rustix::io::pwrite(self.as_fd(), bytes, offset) {
                Ok(0) => return Err(io::Error::other("the file took none of the bytes")),
                Ok(n) => {
                    bytes = bytes.get(n..).unwrap_or_default();
                    offset += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_fd_at(self.as_fd(), buf, offset)
    }

    fn reserve(&self, offset: u64, len: u64) {
        let keep_size = rustix::fs::FallocateFlags::KEEP_SIZE;
        let _ = rustix::fs::fallocate(self.as_fd(), keep_size, offset, len);
    }

    fn sync_written(&self) -> io::Result<()> {
        Ok(rustix::fs::fdatasync(self.as_fd())?)
    }
}

/// A sink that keeps nothing: where a receiver reads a body it has
/// already given up on, so the stream stays in step and the digest is
/// still checked.
#[derive(Debug, Default)]
pub struct Discard;

impl BodySink for Discard {
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn write_all_at(&self, _bytes: &[u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
        Err(io::Error::other("a discarded body cannot be read back"))
    }

    fn reserve(&self, _offset: u64, _len: u64) {}

    fn sync_written(&self) -> io::Result<()> {
        Ok(())
    }
}

fn read_fd_at(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match rustix::io::pread(fd, &mut *buf, offset) {
            Err(Errno::INTR) => {}
            read => return Ok(read?),
        }
    }
}
