//! Reading an object for a get: [`ObjectReader`], a body source with no
//! descriptor, so the transport reads it in chunks at increasing offsets.
//!
//! A GET per chunk would cost a round trip per 256 KiB. The reader keeps
//! the GETs it opened instead, each positioned at the offset it has reached,
//! and serves a read at that offset from it; a read elsewhere opens a new
//! one from there (`Range: bytes=N-`). Every GET names the ETag the HEAD
//! found (`If-Match`), so if the object is replaced during the get, the
//! next GET fails rather than go on with the new object's bytes after
//! the old one's. A resumed get hashes the client's prefix from offset 0
//! while it sends the rest from further on, so two streams are kept.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufRead, AsyncReadExt};

use super::bucket::{Bucket, Failure, Head};
use super::{digests, modified, no_such, S3Store};
use crate::protocol::{Digest, ErrorCode, Refusal, RemoteName};

/// How many open GETs a reader keeps: one for the body sent, one for the
/// prefix a resumed get hashes beside it.
const MAX_STREAMS: usize = 2;

/// An object opened for a get, as its HEAD described it.
pub struct ObjectReader {
    bucket: Arc<Bucket>,
    key: String,
    head: Head,
    /// The digest ferry keeps for the object, if it has one.
    cached: Option<Digest>,
    /// Open GETs, each with the offset of its next byte; the least
    /// recently used first.
    streams: Mutex<Vec<Cursor>>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("key", &self.key)
            .field("size", &self.head.size)
            .field("etag", &self.head.etag)
            .finish_non_exhaustive()
    }
}

/// An open GET of an object, from some offset to its end.
struct Cursor {
    /// The offset of the next byte the body gives.
    next: u64,
    body: Pin<Box<dyn AsyncBufRead + Send>>,
}

impl S3Store {
    /// Opens the object `name` for a get: refuses a directory (a name with
    /// keys beneath it) and a missing name.
    pub fn open_read(&self, name: &RemoteName) -> Result<ObjectReader, Refusal> {
        let key = self.bucket.key(name);
        let doing = || format!("opening {name}");
        match self.bucket.head(&key).map_err(|f| f.refusal(&doing()))? {
            Some(head) => Ok(ObjectReader::new(Arc::clone(&self.bucket), key, head)),
            None => {
                let beneath = format!("{key}/");
                if (self.bucket.has_keys_under(&beneath)).map_err(|f| f.refusal(&doing()))? {
                    Err(Refusal::new(
                        ErrorCode::IsADirectory,
                        "is a directory, not a file",
                    ))
                } else {
                    Err(no_such())
                }
            }
        }
    }
}

impl ObjectReader {
    /// The object `key`, as `head` describes it.
    fn new(bucket: Arc<Bucket>, key: String, head: Head) -> ObjectReader {
        let cached = digests::lookup(&bucket, &key, &head);
        ObjectReader::known(bucket, key, head, cached)
    }

    /// The object `key`, as `head` describes it, whose digest (as
    /// `digests::lookup` found it) is `cached`.
    pub(super) fn known(
        bucket: Arc<Bucket>,
        key: String,
        head: Head,
        cached: Option<Digest>,
    ) -> ObjectReader {
        ObjectReader {
            bucket,
            key,
            head,
            cached,
            streams: Mutex::new(Vec::new()),
        }
    }

    /// The object's size as its HEAD found it: what a get sends.
    pub fn size(&self) -> u64 {
        self.head.size
    }

    /// The object's modification time, in whole seconds since the epoch:
    /// the one ferry kept with it, else when S3 stored it.
    pub fn modified(&self) -> i64 {
        modified(&self.head)
    }

    /// The object's digest, if ferry keeps one for it as it is.
    pub fn cached_digest(&self) -> Option<Digest> {
        self.cached
    }

    /// Keeps `digest`, just computed while sending the object, for later
    /// gets and `stat`: in a record naming the object's ETag, so it is
    /// not believed of an object that replaces this one.
    pub fn remember(&self, digest: &Digest) {
        if self.cached.is_none() {
            digests::remember(&self.bucket, &self.key, &self.head, digest);
        }
    }

    /// Reads the object whole, with its digest: the kept one, or computed
    /// now and remembered. `None` if the object was replaced or is not as
    /// long as its HEAD said. For small objects only; the whole body is in
    /// memory.
    pub fn read_whole(&self) -> Result<Option<(Vec<u8>, Digest)>, Refusal> {
        let len = usize::try_from(self.head.size)
            .map_err(|_| Refusal::new(ErrorCode::TooLarge, "a file too large to read whole"))?;
        let mut body = vec![0; len];
        let mut read = 0;
        while read < len {
            let rest = body.get_mut(read..).unwrap_or_default();
            match self.read_at(rest, read as u64) {
                Ok(0) => return Ok(None),
                Ok(n) => read += n,
                Err(e) if is_replaced(&e) => return Ok(None),
                Err(e) => return Err(Refusal::new(ErrorCode::Io, e.to_string())),
            }
        }
        let digest = match self.cached {
            Some(digest) => digest,
            None => {
                let digest = *blake3::hash(&body).as_bytes();
                self.remember(&digest);
                digest
            }
        };
        Ok(Some((body, digest)))
    }

    /// Hashes the whole object, and remembers the digest: `None` if the
    /// object was replaced or is not as long as its HEAD said.
    pub fn hash(&self) -> Result<Option<Digest>, Refusal> {
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0; HASH_BUFFER];
        let mut offset = 0;
        while offset < self.head.size {
            match self.read_at(&mut buffer, offset) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    hasher.update(buffer.get(..n).unwrap_or_default());
                    offset += n as u64;
                }
                Err(e) if is_replaced(&e) => return Ok(None),
                Err(e) => return Err(Refusal::new(ErrorCode::Io, e.to_string())),
            }
        }
        let digest = *hasher.finalize().as_bytes();
        self.remember(&digest);
        Ok(Some(digest))
    }

    /// Reads up to `buf.len()` bytes at `offset`, from the open GET
    /// positioned there if there is one; 0 at the object's end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = self.head.size.saturating_sub(offset);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let mut cursor = self.take_stream(offset);
        let mut filled = 0;
        // A GET that fails midway (a connection reset, a timeout) is
        // reopened once where it stopped; If-Match keeps that safe.
        let mut reopened = false;
        while filled < want {
            let at = offset + filled as u64;
            let mut stream = match cursor.take() {
                Some(stream) => stream,
                None => self.open_at(at)?,
            };
            let into = buf.get_mut(filled..want).unwrap_or_default();
            match self.bucket.block_on(stream.body.read(into)) {
                Ok(n) if n > 0 => {
                    filled += n;
                    stream.next += n as u64;
                    cursor = Some(stream);
                }
                // Ended before the size its HEAD gave: a broken stream, as
                // an error is.
                Ok(_) | Err(_) if !reopened => reopened = true,
                Ok(_) => {
                    return Err(io::Error::other(format!(
                        "reading {}: the object ended at {at} bytes, before its {} bytes",
                        self.key, self.head.size
                    )))
                }
                Err(e) => return Err(io::Error::other(format!("reading {}: {e}", self.key))),
            }
        }
        if let Some(stream) = cursor {
            self.keep_stream(stream);
        }
        Ok(filled)
    }

    /// The open GET positioned at `offset`, if one is.
    fn take_stream(&self, offset: u64) -> Option<Cursor> {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let at = streams.iter().position(|stream| stream.next == offset)?;
        Some(streams.remove(at))
    }

    /// Keeps `stream` for the read that goes on from it, letting go of the
    /// least recently used one if there are too many.
    fn keep_stream(&self, stream: Cursor) {
        if stream.next >= self.head.size {
            return;
        }
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if streams.len() >= MAX_STREAMS {
            streams.remove(0);
        }
        streams.push(stream);
    }

    /// Opens a GET of the object from `offset` to its end, of the object
    /// the HEAD found and no other.
    fn open_at(&self, offset: u64) -> io::Result<Cursor> {
        let call = (self.bucket.client().get_object())
            .bucket(self.bucket.name())
            .key(&self.key)
            .range(format!("bytes={offset}-"))
            .if_match(&self.head.etag)
            .send();
        match self.bucket.block_on(call) {
            Ok(object) => Ok(Cursor {
                next: offset,
                body: Box::pin(object.body.into_async_read()),
            }),
            Err(error) => {
                let failure = Failure::of(&error);
                if failure.is_precondition_failed() || failure.is_not_found() {
                    Err(io::Error::other(Replaced(self.key.clone())))
                } else {
                    Err(io::Error::other(format!(
                        "reading {}: {}",
                        self.key,
                        failure.refusal("a GET").message
                    )))
                }
            }
        }
    }
}

/// How much of an object [`ObjectReader::hash`] reads at a time.
const HASH_BUFFER: usize = 256 * 1024;

/// The object was replaced or deleted since its HEAD.
#[derive(Debug, thiserror::Error)]
#[error("file-changed: {0} was replaced while it was read")]
struct Replaced(String);

/// Whether `error` says the object read was replaced.
fn is_replaced(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<Replaced>().is_some())
}
