//! The data path: raw bodies between a file and a socket, at the speed of
//! the wire.
//!
//! Everything here blocks, and runs on a thread of its own while the async
//! side waits. The socket belongs to tokio and stays non-blocking, so a
//! would-block answer is waited out with poll(2) on the descriptor.
//!
//! - Sending uses sendfile(2): the kernel hands page-cache pages to TCP and
//!   nothing is copied through user space. When the digest is not known in
//!   advance, a second thread hashes the file from the page cache alongside.
//! - Receiving splices the socket into a pipe and the pipe into the file, so
//!   each byte is copied once, into the page cache. A second thread reads
//!   back what has been written and hashes it: BLAKE3 runs on the other
//!   core while the next piece arrives, instead of in line with the I/O.
//!   A third syncs what has been written every [`FLUSH_STEP`], so the sync
//!   before the file takes its name has only the tail left to wait for;
//!   disk space is claimed a step ahead of the data, never for the size a
//!   peer merely declares.
//!
//! Bodies of at most [`INLINE_BODY`] bytes skip the second thread: starting
//! one would cost more than hashing them.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags};

use super::{BodySink, BodySource, TransportError};
use crate::protocol::Digest;

/// Bodies up to this size are hashed in line with the I/O.
pub const INLINE_BODY: u64 = 256 * 1024;

/// The pipe a large body is spliced through; large pipes mean few splices.
const PIPE_BUFFER: usize = 1024 * 1024;

/// Bytes read per pread(2) when hashing a file that is being sent; small
/// enough to stay in the L2 cache between the read and the hash.
const HASH_READ: usize = 256 * 1024;

/// How much disk space a receiver claims ahead of the data.
const RESERVE_STEP: u64 = 64 * 1024 * 1024;

/// How much of a body is written between syncs while it arrives.
pub(super) const FLUSH_STEP: u64 = 64 * 1024 * 1024;

/// The most one sendfile(2) call is asked to move. Bounded so progress is
/// seen during a large file; the socket buffer bounds each call anyway.
const SENDFILE_STEP: usize = 16 * 1024 * 1024;

/// The socket as the data thread sees it: its descriptor, and how long the
/// peer may leave it without progress before the transfer is given up.
#[derive(Clone, Copy)]
pub struct Wire<'a> {
    pub fd: BorrowedFd<'a>,
    pub stall_limit: Duration,
}

/// Sends the first `size` bytes of `file`, a source with a descriptor, on
/// `socket` and returns their digest: `known` if given, otherwise computed
/// from the file as it is sent. `moved` counts the bytes sent so far.
pub fn send_file(
    socket: Wire<'_>,
    file: &dyn BodySource,
    size: u64,
    known: Option<Digest>,
    moved: &AtomicU64,
) -> Result<Digest, TransportError> {
    if let Some(digest) = known {
        sendfile_all(socket, file, size, moved)?;
        return Ok(digest);
    }
    if size <= INLINE_BODY {
        let digest = hash_file(file, size, &AtomicBool::new(false))?;
        sendfile_all(socket, file, size, moved)?;
        return Ok(digest);
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| hash_file(file, size, &stop));
        let sent = sendfile_all(socket, file, size, moved);
        if sent.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let digest = hashing.join().unwrap_or_else(|_| {
            Err(TransportError::SourceFailed(io::Error::other(
                "the hashing thread panicked",
            )))
        });
        sent?;
        digest
    })
}

/// What [`receive_file`] got.
pub struct Received {
    /// The digest of the body as it arrived.
    pub digest: Digest,
    /// The first write to the file that failed, if one did; the body was
    /// still read in full so the connection stays in step.
    pub sink_error: Option<io::Error>,
}

/// Receives a body of `size` bytes into `file`, a sink with a descriptor:
/// first `prefix`, the part that arrived along with the frame before it,
/// then the rest from `socket`. Never reads past the body's end. `moved`
/// counts bytes received.
pub fn receive_file(
    socket: Wire<'_>,
    prefix: &[u8],
    file: &dyn BodySink,
    size: u64,
    moved: &AtomicU64,
) -> Result<Received, TransportError> {
    let mut writer = FileWriter::new(file);
    let mut hasher = blake3::Hasher::new();
    hasher.update(prefix);
    writer.write(prefix);
    moved.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    let remaining = size - prefix.len() as u64;
    if remaining == 0 {
        return Ok(writer.finish(&hasher));
    }
    if size <= INLINE_BODY {
        let mut buffer = vec![0; buffer_len(remaining, INLINE_BODY as usize)];
        fill(socket, &mut buffer)?;
        hasher.update(&buffer);
        writer.write(&buffer);
        moved.fetch_add(remaining, Ordering::Relaxed);
        return Ok(writer.finish(&hasher));
    }
    receive_spliced(socket, writer, hasher, remaining, moved)
}

/// The large-body path of [`receive_file`]: splice(2) moves the body from
/// the socket into a pipe and from the pipe into the file, so this thread
/// copies each byte once, into the page cache. A second thread reads back
/// what has been written, from the page cache, and hashes it.
fn receive_spliced(
    socket: Wire<'_>,
    mut writer: FileWriter<'_>,
    hasher: blake3::Hasher,
    remaining: u64,
    moved: &AtomicU64,
) -> Result<Received, TransportError> {
    let (pipe_out, pipe_in) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(io::Error::from)?;
    // A bigger pipe means fewer splices; the default is 64 KiB.
    let pipe_len = rustix::pipe::fcntl_setpipe_size(&pipe_in, PIPE_BUFFER).unwrap_or(64 * 1024);
    let file = writer.file;
    let (to_hasher, written) = mpsc::channel::<u64>();
    let (to_flusher, unflushed) = mpsc::channel::<()>();
    let start = writer.offset;
    std::thread::scope(|scope| {
        let hashing = scope.spawn(move || hash_written(file, start, hasher, written));
        scope.spawn(move || flush_written(file, unflushed));
        let mut flushed = start;
        let mut left = remaining;
        let mut outcome = Ok(());
        while left > 0 {
            let step = buffer_len(left, pipe_len);
            let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
            let n = match rustix::pipe::splice(socket.fd, None, &pipe_in, None, step, flags) {
                Ok(0) => {
                    outcome = Err(TransportError::Closed);
                    break;
                }
                Ok(n) => n,
                Err(Errno::AGAIN) => match wait_for(socket, PollFlags::IN) {
                    Ok(()) => continue,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                },
                Err(Errno::INTR) => continue,
                Err(e) => {
                    outcome = Err(TransportError::Io(e.into()));
                    break;
                }
            };
            writer.reserve_ahead(left);
            if let Err(e) = writer.write_from_pipe(&pipe_out, n) {
                outcome = Err(e);
                break;
            }
            left -= n as u64;
            moved.fetch_add(n as u64, Ordering::Relaxed);
            if writer.error.is_none() {
                // The hasher may be gone only after a panic; join reports it.
                let _ = to_hasher.send(writer.offset);
                if writer.offset - flushed >= FLUSH_STEP {
                    let _ = to_flusher.send(());
                    flushed = writer.offset;
                }
            }
        }
        drop(to_hasher);
        drop(to_flusher);
        let hashed = hashing
            .join()
            .map_err(|_| TransportError::Io(io::Error::other("the hashing thread panicked")))?;
        outcome?;
        // A failed read-back is the file's failure: the body was consumed,
        // so the connection goes on and the trailer is still read.
        let hasher = hashed.unwrap_or_else(|e| {
            writer.error.get_or_insert(e);
            blake3::Hasher::new()
        });
        Ok(writer.finish(&hasher))
    })
}

/// Hashes `file` from `start` on, as far as the receiving thread reports it
/// written, until it reports no more.
fn hash_written(
    file: &dyn BodySink,
    start: u64,
    mut hasher: blake3::Hasher,
    written: mpsc::Receiver<u64>,
) -> io::Result<blake3::Hasher> {
    let mut buffer = vec![0; HASH_READ];
    let mut hashed = start;
    for written_to in written {
        while hashed < written_to {
            let want = buffer_len(written_to - hashed, buffer.len());
            match file.read_at(head_mut(&mut buffer, want), hashed) {
                Ok(0) => {
                    return Err(io::Error::other(
                        "the file being received was truncated by someone else",
                    ))
                }
                Ok(n) => {
                    hasher.update(head(&buffer, n));
                    hashed += n as u64;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(hasher)
}

/// Syncs `file` to disk each time the receiving thread reports another
/// [`FLUSH_STEP`] written, until it reports no more. The receiver syncs the
/// whole file before it gives it a name; writing it back while the body
/// still arrives leaves that final sync only the tail to wait for. A
/// failure here is not reported: the final sync meets it again.
pub(super) fn flush_written(file: &dyn BodySink, unflushed: mpsc::Receiver<()>) {
    while unflushed.recv().is_ok() {
        // Reports that came in during the last sync are covered by this one.
        while unflushed.try_recv().is_ok() {}
        if file.sync_written().is_err() {
            return;
        }
    }
}

/// Writes a body to its file, remembering the first failure instead of
/// stopping: the body must still be consumed.
pub(super) struct FileWriter<'a> {
    file: &'a dyn BodySink,
    pub(super) offset: u64,
    /// Where the disk space claimed so far ends.
    reserved: u64,
    error: Option<io::Error>,
}

impl<'a> FileWriter<'a> {
    pub(super) fn new(file: &'a dyn BodySink) -> Self {
        FileWriter {
            file,
            offset: 0,
            reserved: 0,
            error: None,
        }
    }

    /// Claims disk space for what comes next of the `left` bytes still to
    /// be written, [`RESERVE_STEP`] at a time: one large extent is less
    /// filesystem work than many small ones. Only ever a step beyond the
    /// data, so a peer that declares a huge body and sends little claims
    /// little; and never past the body's end, since space kept beyond a
    /// file's size stays claimed.
    pub(super) fn reserve_ahead(&mut self, left: u64) {
        if self.offset >= self.reserved && self.error.is_none() {
            let step = left.min(RESERVE_STEP);
            self.file.reserve(self.offset, step);
            self.reserved = self.offset + step;
        }
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            match self.file.write_all_at(bytes, self.offset) {
                Ok(()) => self.offset += bytes.len() as u64,
                Err(e) => self.error = Some(e),
            }
        }
    }

    /// Moves `len` bytes from `pipe` into the file, or, once writing has
    /// failed, reads and discards them.
    fn write_from_pipe(&mut self, pipe: &OwnedFd, mut len: usize) -> Result<(), TransportError> {
        if self.file.raw_fd().is_none() {
            self.error
                .get_or_insert_with(|| io::Error::other("the sink has no descriptor to splice to"));
        }
        while let (true, None, Some(fd)) = (len > 0, &self.error, self.file.raw_fd()) {
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

    pub(super) fn finish(self, hasher: &blake3::Hasher) -> Received {
        Received {
            digest: *hasher.finalize().as_bytes(),
            sink_error: self.error,
        }
    }
}

/// Hashes the first `size` bytes of `file`, giving up early if `stop` is set.
fn hash_file(
    file: &dyn BodySource,
    size: u64,
    stop: &AtomicBool,
) -> Result<Digest, TransportError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0; buffer_len(size, HASH_READ)];
    let mut offset = 0;
    while offset < size && !stop.load(Ordering::Relaxed) {
        let want = buffer_len(size - offset, buffer.len());
        let n = match file.read_at(head_mut(&mut buffer, want), offset) {
            Ok(0) => {
                return Err(TransportError::FileShrank {
                    sent: offset,
                    declared: size,
                })
            }
            Ok(n) => n,
            Err(e) => return Err(TransportError::SourceFailed(e)),
        };
        hasher.update(head(&buffer, n));
        offset += n as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Sends the first `size` bytes of `file` with sendfile(2).
fn sendfile_all(
    socket: Wire<'_>,
    file: &dyn BodySource,
    size: u64,
    moved: &AtomicU64,
) -> Result<(), TransportError> {
    let Some(file) = file.raw_fd() else {
        let why = "the source has no descriptor to send from";
        return Err(TransportError::SourceFailed(io::Error::other(why)));
    };
    let mut offset = 0;
    while offset < size {
        let step = buffer_len(size - offset, SENDFILE_STEP);
        match rustix::fs::sendfile(socket.fd, file, Some(&mut offset), step) {
            Ok(0) => {
                return Err(TransportError::FileShrank {
                    sent: offset,
                    declared: size,
                })
            }
            Ok(n) => {
                moved.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(Errno::AGAIN) => wait_for(socket, PollFlags::OUT)?,
            Err(Errno::INTR) => {}
            // sendfile reports a failed read of the file and a failed
            // write to the socket alike; the socket is the likelier.
            Err(Errno::IO) => return Err(TransportError::SourceFailed(io::Error::from(Errno::IO))),
            Err(e) => return Err(TransportError::Io(e.into())),
        }
    }
    Ok(())
}

/// Fills `buffer` from the socket.
fn fill(socket: Wire<'_>, buffer: &mut [u8]) -> Result<(), TransportError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match rustix::net::recv(
            socket.fd,
            buffer.get_mut(filled..).unwrap_or_default(),
            rustix::net::RecvFlags::empty(),
        ) {
            Ok((0, _)) => return Err(TransportError::Closed),
            Ok((n, _)) => filled += n,
            Err(Errno::AGAIN) => wait_for(socket, PollFlags::IN)?,
            Err(Errno::INTR) => {}
            Err(e) => return Err(TransportError::Io(e.into())),
        }
    }
    Ok(())
}

/// Waits until the socket is ready for `interest`, or has failed; gives up
/// with [`TransportError::Stalled`] if the peer lets its stall limit pass.
fn wait_for(socket: Wire<'_>, interest: PollFlags) -> Result<(), TransportError> {
    let mut fds = [PollFd::new(&socket.fd, interest)];
    // A limit too large for a timespec is as good as none.
    let limit = Timespec::try_from(socket.stall_limit).ok();
    match rustix::event::poll(&mut fds, limit.as_ref()) {
        Ok(0) => Err(TransportError::Stalled(socket.stall_limit)),
        // Readiness, an error or a hang-up: the next call says which.
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(TransportError::Io(e.into())),
    }
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
pub(super) fn buffer_len(left: u64, limit: usize) -> usize {
    usize::try_from(left).map_or(limit, |left| left.min(limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

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

    fn wire(socket: &UnixStream) -> Wire<'_> {
        Wire {
            fd: socket.as_fd(),
            stall_limit: Duration::from_secs(30),
        }
    }

    fn file_holding(data: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    /// Feeds `bytes` into one end of a socket pair from another thread,
    /// then closes it.
    fn peer_sending(bytes: Vec<u8>) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || theirs.write_all(&bytes).unwrap());
        (ours, sender)
    }

    #[test]
    fn small_and_large_files_are_sent_whole_with_their_digest() {
        for len in [0, 1, INLINE_BODY as usize, 3 * 1024 * 1024 + 5] {
            let data = noise(len);
            let file = file_holding(&data);
            let (ours, mut theirs) = UnixStream::pair().unwrap();
            let reader = std::thread::spawn(move || {
                let mut got = vec![0; len];
                theirs.read_exact(&mut got).unwrap();
                got
            });
            let moved = AtomicU64::new(0);
            let digest = send_file(wire(&ours), &file, len as u64, None, &moved).unwrap();
            assert_eq!(digest, *blake3::hash(&data).as_bytes(), "{len} bytes");
            assert_eq!(reader.join().unwrap(), data, "{len} bytes");
            assert_eq!(moved.load(Ordering::Relaxed), len as u64);
        }
    }

    #[test]
    fn a_file_shorter_than_declared_is_an_error() {
        let file = file_holding(&noise(1000));
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let sent = send_file(wire(&ours), &file, 2000, None, &AtomicU64::new(0));
        assert!(
            matches!(sent, Err(TransportError::FileShrank { .. })),
            "{sent:?}"
        );
    }

    #[test]
    fn small_and_large_bodies_are_received_whole_and_no_further() {
        for (len, prefix_len) in [(10, 0), (10, 10), (100_000, 4000), (3 << 20, 8192)] {
            let data = noise(len);
            let mut on_the_wire = data[prefix_len..].to_vec();
            on_the_wire.extend_from_slice(b"next frame");
            let (ours, sender) = peer_sending(on_the_wire);
            let file = tempfile::tempfile().unwrap();
            let moved = AtomicU64::new(0);
            let received =
                receive_file(wire(&ours), &data[..prefix_len], &file, len as u64, &moved).unwrap();
            assert!(received.sink_error.is_none());
            assert_eq!(received.digest, *blake3::hash(&data).as_bytes());
            assert_eq!(
                std::fs::read(format!("/proc/self/fd/{}", fd_number(&file))).unwrap(),
                data
            );
            assert_eq!(moved.load(Ordering::Relaxed), len as u64);
            sender.join().unwrap();
            let mut rest = Vec::new();
            (&ours).read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"next frame", "{len} bytes");
        }
    }

    #[test]
    fn a_failing_file_still_consumes_the_whole_body() {
        for len in [1000, 3 << 20] {
            let mut on_the_wire = noise(len);
            on_the_wire.extend_from_slice(b"next frame");
            let (ours, sender) = peer_sending(on_the_wire);
            // Read-only: every write fails.
            let file = File::open(tempfile::NamedTempFile::new().unwrap().path()).unwrap();
            let received =
                receive_file(wire(&ours), &[], &file, len as u64, &AtomicU64::new(0)).unwrap();
            assert!(received.sink_error.is_some(), "{len} bytes");
            sender.join().unwrap();
            let mut rest = Vec::new();
            (&ours).read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"next frame", "{len} bytes");
        }
    }

    #[test]
    fn a_file_that_cannot_be_read_back_for_hashing_fails_like_a_write() {
        let len = 3 << 20;
        let mut on_the_wire = noise(len);
        on_the_wire.extend_from_slice(b"next frame");
        let (ours, sender) = peer_sending(on_the_wire);
        // Write-only: splicing into it works, reading it back does not.
        let temp = tempfile::NamedTempFile::new().unwrap();
        let file = File::options().write(true).open(temp.path()).unwrap();
        let received =
            receive_file(wire(&ours), &[], &file, len as u64, &AtomicU64::new(0)).unwrap();
        assert!(received.sink_error.is_some());
        sender.join().unwrap();
        let mut rest = Vec::new();
        (&ours).read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"next frame");
    }

    #[test]
    fn a_body_cut_short_is_an_error() {
        let (ours, _sender) = peer_sending(noise(1 << 20));
        let file = tempfile::tempfile().unwrap();
        let received = receive_file(wire(&ours), &[], &file, 2 << 20, &AtomicU64::new(0));
        assert!(
            matches!(received, Err(TransportError::Closed)),
            "{:?}",
            received.err()
        );
    }

    #[test]
    fn a_huge_declared_body_claims_disk_only_a_step_ahead_of_the_data() {
        use std::os::unix::fs::MetadataExt;
        let (ours, _sender) = peer_sending(noise(2 << 20));
        let file = tempfile::tempfile().unwrap();
        let declared = 1 << 40;
        let _ = receive_file(wire(&ours), &[], &file, declared, &AtomicU64::new(0));
        let claimed = file.metadata().unwrap().blocks() * 512;
        assert!(
            claimed <= RESERVE_STEP + (2 << 20),
            "{claimed} bytes claimed"
        );
    }

    #[test]
    fn a_received_file_claims_no_disk_beyond_its_end() {
        use std::os::unix::fs::MetadataExt;
        let len = (3 << 20) + 5;
        let (ours, _sender) = peer_sending(noise(len));
        let file = tempfile::tempfile().unwrap();
        receive_file(wire(&ours), &[], &file, len as u64, &AtomicU64::new(0)).unwrap();
        let claimed = file.metadata().unwrap().blocks() * 512;
        assert!(
            claimed <= (len as u64).next_multiple_of(64 * 1024),
            "{claimed} bytes claimed"
        );
    }

    fn fd_number(file: &File) -> i32 {
        use std::os::fd::AsRawFd;
        file.as_raw_fd()
    }
}
