//! The file side of the data path for streams that must see every byte:
//! TLS encrypts in user space, so sendfile(2) and splice(2) cannot bypass
//! it. The async side moves chunks between the stream and a channel; the
//! functions here move them between the channel and the file on a thread of
//! their own, hashing alongside, so file I/O and the syncs never block the
//! runtime and run beside the encryption.

use std::sync::mpsc;

use tokio::sync::mpsc as chunk_channel;

use super::body::{buffer_len, flush_written, FileWriter, Received, FLUSH_STEP};
use super::{BodySink, BodySource, TransportError};
use crate::protocol::Digest;

/// Bytes per chunk handed between the file thread and the stream: large
/// enough that the hop is rare, small enough to stay in the cache.
pub const CHUNK: usize = 256 * 1024;

/// Chunks in flight between the two sides: enough to keep both busy.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// Reads the first `size` bytes of `file` in chunks into `chunks`, hashing
/// them unless `known` is given, and returns the digest. Stops early, with
/// [`TransportError::Closed`], if the stream side has gone.
pub fn read_chunks(
    file: &dyn BodySource,
    size: u64,
    known: Option<Digest>,
    chunks: &chunk_channel::Sender<Vec<u8>>,
) -> Result<Digest, TransportError> {
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0;
    while offset < size {
        let mut chunk = vec![0; buffer_len(size - offset, CHUNK)];
        let mut filled = 0;
        while filled < chunk.len() {
            let rest = chunk.get_mut(filled..).unwrap_or_default();
            match file.read_at(rest, offset + filled as u64) {
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
        if known.is_none() {
            hasher.update(&chunk);
        }
        offset += chunk.len() as u64;
        if chunks.blocking_send(chunk).is_err() {
            return Err(TransportError::Closed);
        }
    }
    Ok(known.unwrap_or_else(|| *hasher.finalize().as_bytes()))
}

/// Writes the chunks of a body of `size` bytes to `file` as they arrive,
/// hashing them, until the channel closes. As on the zero-copy path, disk
/// space is claimed a step ahead of the data, the file is synced every
/// [`FLUSH_STEP`] by a thread of its own, and a failing write does not stop
/// the body from being consumed: the error comes back with the digest.
pub fn write_chunks(
    file: &dyn BodySink,
    size: u64,
    mut chunks: chunk_channel::Receiver<Vec<u8>>,
) -> Received {
    let mut writer = FileWriter::new(file);
    let mut hasher = blake3::Hasher::new();
    let (to_flusher, unflushed) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || flush_written(file, unflushed));
        let mut flushed = 0;
        while let Some(chunk) = chunks.blocking_recv() {
            hasher.update(&chunk);
            writer.reserve_ahead(size.saturating_sub(writer.offset));
            writer.write(&chunk);
            if writer.offset - flushed >= FLUSH_STEP {
                // The flusher is gone only after a panic; the final sync
                // still covers everything.
                let _ = to_flusher.send(());
                flushed = writer.offset;
            }
        }
        drop(to_flusher);
        writer.finish(&hasher)
    })
}

/// How much of the body to ask the stream for next.
pub fn next_chunk_len(left: u64) -> usize {
    buffer_len(left, CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn file_holding(data: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    fn noise(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn chunks_read_from_a_file_are_whole_in_order_and_hashed() {
        let data = noise(3 * CHUNK + 5);
        let file = file_holding(&data);
        let (chunks, mut arriving) = chunk_channel::channel(CHUNKS_IN_FLIGHT);
        let reader =
            std::thread::spawn(move || read_chunks(&file, data.len() as u64, None, &chunks));
        let mut read = Vec::new();
        while let Some(chunk) = arriving.blocking_recv() {
            assert!(chunk.len() <= CHUNK);
            read.extend(chunk);
        }
        let digest = reader.join().unwrap().unwrap();
        assert_eq!(read, noise(3 * CHUNK + 5));
        assert_eq!(digest, *blake3::hash(&read).as_bytes());
    }

    #[test]
    fn a_file_shorter_than_declared_is_an_error_not_a_short_body() {
        let file = file_holding(&noise(100));
        let (chunks, mut arriving) = chunk_channel::channel(CHUNKS_IN_FLIGHT);
        let reader = std::thread::spawn(move || read_chunks(&file, 200, None, &chunks));
        while arriving.blocking_recv().is_some() {}
        let error = reader.join().unwrap().unwrap_err();
        assert!(matches!(
            error,
            TransportError::FileShrank {
                sent: 100,
                declared: 200
            }
        ));
    }

    #[test]
    fn chunks_written_to_a_file_land_whole_with_their_digest() {
        let data = noise(2 * CHUNK + 17);
        let file = tempfile::tempfile().unwrap();
        let (chunks, arriving) = chunk_channel::channel(CHUNKS_IN_FLIGHT);
        let size = data.len() as u64;
        let writer = std::thread::spawn(move || {
            let received = write_chunks(&file, size, arriving);
            (file, received)
        });
        for piece in data.chunks(CHUNK / 3) {
            chunks.blocking_send(piece.to_vec()).unwrap();
        }
        drop(chunks);
        let (file, received) = writer.join().unwrap();
        assert!(received.sink_error.is_none());
        assert_eq!(received.digest, *blake3::hash(&data).as_bytes());
        let mut written = vec![0; data.len()];
        file.read_exact_at(&mut written, 0).unwrap();
        assert_eq!(written, data);
        assert_eq!(file.metadata().unwrap().len(), size);
    }
}
