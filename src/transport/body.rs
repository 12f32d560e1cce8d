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
//! - Receiving reads the socket into a few large buffers that circulate
//!   between this thread, which fills each one and writes it to the file,
//!   and a hashing thread. BLAKE3 therefore runs on the other core while
//!   the next buffer is received, instead of in line with the I/O.
//!
//! Bodies of at most [`INLINE_BODY`] bytes skip the second thread: starting
//! one would cost more than hashing them.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

use super::TransportError;

/// A BLAKE3 digest.
pub type Digest = [u8; 32];

/// Bodies up to this size are hashed in line with the I/O.
pub const INLINE_BODY: u64 = 256 * 1024;

/// Size of each receive buffer. Large buffers mean few write(2) calls and
/// let BLAKE3 use its widest SIMD path.
const RECEIVE_BUFFER: usize = 1024 * 1024;

/// Receive buffers in circulation: one being filled, one being hashed, and
/// slack so neither side waits on the other's hiccups. With
/// [`RECEIVE_BUFFER`] this bounds a transfer to 4 MiB.
const RECEIVE_BUFFERS: usize = 4;

/// Bytes read per pread(2) when hashing a file that is being sent; small
/// enough to stay in the L2 cache between the read and the hash.
const HASH_READ: usize = 256 * 1024;

/// The most one sendfile(2) call is asked to move. Bounded so progress is
/// seen during a large file; the socket buffer bounds each call anyway.
const SENDFILE_STEP: usize = 16 * 1024 * 1024;

/// Sends the first `size` bytes of `file` on `socket` and returns their
/// digest: `known` if given, otherwise computed from the file as it is sent.
/// `moved` counts the bytes sent so far.
pub fn send_file(
    socket: BorrowedFd<'_>,
    file: &File,
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

/// Receives a body of `size` bytes into `file`: first `prefix`, the part
/// that arrived along with the frame before it, then the rest from
/// `socket`. Never reads past the body's end. `moved` counts bytes received.
pub fn receive_file(
    socket: BorrowedFd<'_>,
    prefix: &[u8],
    file: &File,
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
        let mut buffer = vec![0; buffer_len(remaining, RECEIVE_BUFFER)];
        fill(socket, &mut buffer)?;
        hasher.update(&buffer);
        writer.write(&buffer);
        moved.fetch_add(remaining, Ordering::Relaxed);
        return Ok(writer.finish(&hasher));
    }
    let (to_hasher, for_hasher) = mpsc::sync_channel::<(Vec<u8>, usize)>(RECEIVE_BUFFERS);
    let (to_receiver, for_receiver) = mpsc::sync_channel::<Vec<u8>>(RECEIVE_BUFFERS);
    for _ in 0..RECEIVE_BUFFERS {
        // Cannot fail: the channel has room for every buffer.
        let _ = to_receiver.send(vec![0; buffer_len(remaining, RECEIVE_BUFFER)]);
    }
    std::thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            for (buffer, len) in for_hasher {
                hasher.update(&buffer[..len]);
                // The receiver may have stopped early; then nobody needs it.
                let _ = to_receiver.send(buffer);
            }
            hasher
        });
        let mut left = remaining;
        let mut outcome = Ok(());
        while left > 0 {
            let Ok(mut buffer) = for_receiver.recv() else {
                break; // the hashing thread is gone; join reports why
            };
            let len = buffer_len(left, buffer.len());
            if let Err(e) = fill(socket, &mut buffer[..len]) {
                outcome = Err(e);
                break;
            }
            writer.write(&buffer[..len]);
            left -= len as u64;
            moved.fetch_add(len as u64, Ordering::Relaxed);
            if to_hasher.send((buffer, len)).is_err() {
                break;
            }
        }
        drop(to_hasher);
        let hasher = hashing
            .join()
            .map_err(|_| TransportError::Io(io::Error::other("the hashing thread panicked")))?;
        outcome?;
        Ok(writer.finish(&hasher))
    })
}

/// Writes a body to its file, remembering the first failure instead of
/// stopping: the body must still be consumed.
struct FileWriter<'a> {
    file: &'a File,
    offset: u64,
    error: Option<io::Error>,
}

impl<'a> FileWriter<'a> {
    fn new(file: &'a File) -> Self {
        FileWriter {
            file,
            offset: 0,
            error: None,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            match self.file.write_all_at(bytes, self.offset) {
                Ok(()) => self.offset += bytes.len() as u64,
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn finish(self, hasher: &blake3::Hasher) -> Received {
        Received {
            digest: *hasher.finalize().as_bytes(),
            sink_error: self.error,
        }
    }
}

/// Hashes the first `size` bytes of `file`, giving up early if `stop` is set.
fn hash_file(file: &File, size: u64, stop: &AtomicBool) -> Result<Digest, TransportError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0; buffer_len(size, HASH_READ)];
    let mut offset = 0;
    while offset < size && !stop.load(Ordering::Relaxed) {
        let want = buffer_len(size - offset, buffer.len());
        let n = match file.read_at(&mut buffer[..want], offset) {
            Ok(0) => {
                return Err(TransportError::FileShrank {
                    sent: offset,
                    declared: size,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TransportError::SourceFailed(e)),
        };
        hasher.update(&buffer[..n]);
        offset += n as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Sends the first `size` bytes of `file` with sendfile(2).
fn sendfile_all(
    socket: BorrowedFd<'_>,
    file: &File,
    size: u64,
    moved: &AtomicU64,
) -> Result<(), TransportError> {
    let mut offset = 0;
    while offset < size {
        let step = buffer_len(size - offset, SENDFILE_STEP);
        match rustix::fs::sendfile(socket, file, Some(&mut offset), step) {
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
fn fill(socket: BorrowedFd<'_>, buffer: &mut [u8]) -> Result<(), TransportError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match rustix::net::recv(
            socket,
            &mut buffer[filled..],
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

/// Waits until the socket is ready for `interest`, or has failed.
fn wait_for(socket: BorrowedFd<'_>, interest: PollFlags) -> Result<(), TransportError> {
    let mut fds = [PollFd::new(&socket, interest)];
    match rustix::event::poll(&mut fds, None) {
        // Readiness, an error or a hang-up: the next call says which.
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(TransportError::Io(e.into())),
    }
}

/// The length of the next piece: `limit`, or what is left if less.
fn buffer_len(left: u64, limit: usize) -> usize {
    usize::try_from(left).map_or(limit, |left| left.min(limit))
}
