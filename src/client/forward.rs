//! A download handed to a writer (standard output) as it arrives, instead
//! of staged in a file: what was written cannot be taken back, so a digest
//! that does not match is only known, and reported, at the end.

use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::transport::BodySink;

/// A body sink that writes in order to `W`. It has no descriptor, so the
/// transport moves the body in chunks and hashes them as they arrive,
/// never reading anything back.
pub(super) struct Forward<W> {
    out: Mutex<W>,
    /// How many bytes went out: where the next write must start.
    written: AtomicU64,
}

impl<W> Forward<W> {
    pub(super) fn new(out: W) -> Self {
        Forward {
            out: Mutex::new(out),
            written: AtomicU64::new(0),
        }
    }
}

impl<W: Write + Send + 'static> BodySink for Forward<W> {
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Writes `bytes` and flushes them, so they are out as they arrive; a
    /// writer cannot seek, so `offset` must be where the last write ended.
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        if offset != self.written.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "a forwarded body must be written in order",
            ));
        }
        let mut out = self
            .out
            .lock()
            .map_err(|_| io::Error::other("an earlier write panicked"))?;
        out.write_all(bytes)?;
        out.flush()?;
        self.written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a forwarded body cannot be read back",
        ))
    }

    fn reserve(&self, _offset: u64, _len: u64) {}

    fn sync_written(&self) -> io::Result<()> {
        Ok(())
    }
}
