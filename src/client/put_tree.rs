//! Putting a tree (PROTOCOL.md §5.10): the manifest, the digests of the
//! files the server may already have, then the bodies back to back, with
//! no round trip per file.

use std::time::Duration;

use super::walk::{LocalTree, Spooled};
use super::{unexpected, Client, ClientError, Progress, TreeFile, SLOWEST_DISK_BYTES_PER_SEC};
use crate::protocol::{EntryKind, Message, Prefix, RemoteName, RequestKind, TreeEntry, MAX_HELD};
use crate::transport::{TransportError, WHOLE_BODY};

/// Entries queued between flushes of the manifest and of the digests.
const FLUSH_EVERY: u64 = 256;

/// Directories and small files read in one trip to the blocking pool.
const BATCH_ENTRIES: usize = 256;

/// Bytes of small files read in one trip, at most (give or take a file).
const BATCH_BYTES: u64 = 1024 * 1024;

/// Bytes of small files queued before they are written to the socket.
const FLUSH_BYTES: usize = 256 * 1024;

/// What a tree put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSent {
    /// Files sent.
    pub files: u64,
    /// Files the server had already, with the same content.
    pub skipped: u64,
    /// Bytes sent.
    pub bytes: u64,
}

impl Client {
    /// Puts `tree` into the directory `target` (`None`: the served
    /// directory), made if missing, taking the tree's top mode and time
    /// if it is made; with `replace`, files of other content are replaced
    /// rather than refused. The server refuses conflicts
    /// before any body ([`ClientError::RemoteConflicts`]); files it has with the
    /// same content are not sent again, nor those a cut-off try of the same
    /// new tree left, unless `restart`.
    pub async fn put_tree(
        &mut self,
        tree: &LocalTree,
        target: Option<&RemoteName>,
        replace: bool,
        restart: bool,
        progress: &mut dyn Progress,
    ) -> Result<TreeSent, ClientError> {
        self.require(RequestKind::PutTree)?;
        let target = target.map(RemoteName::to_string).unwrap_or_default();
        self.conn.queue(&Message::PutTree {
            target,
            replace,
            top: tree.top,
            // A server that cannot resume keeps nothing to discard, and
            // would not know the flag.
            restart: restart && self.serves(RequestKind::PutFrom),
        })?;
        let mut reader = tree.entries()?;
        let mut queued = 0;
        while let Some(Spooled { entry, .. }) = reader.next_entry()? {
            self.conn.queue(&Message::TreeEntry(entry))?;
            queued += 1;
            if queued % FLUSH_EVERY == 0 {
                self.conn.flush().await?;
            }
        }
        self.conn
            .write_message(&Message::TreeEnd {
                entries: tree.entries,
                bytes: tree.bytes,
            })
            .await?;
        // The server looks at what it has, hashing files of the same size
        // unless it has their digests at hand.
        let surveying = self.timeout + disk_time(tree.bytes);
        let (candidates, held) = self.read_runs(tree.entries, surveying).await?;
        let skipped = if candidates.is_empty() {
            Vec::new()
        } else {
            self.send_digests(tree, &candidates).await?;
            match self.read_runs(tree.entries, self.timeout).await? {
                (skipped, again) if again.is_empty() => skipped,
                _ => return Err(ClientError::BadReply("held a partial too late".into())),
            }
        };
        let sent = self.send_bodies(tree, &skipped, held, progress).await?;
        let syncing = self.timeout + disk_time(sent.bytes);
        match self.reply_within(syncing).await? {
            Message::TreeDone {
                files,
                skipped,
                bytes,
            } if (files, bytes) == (sent.files, sent.bytes) => Ok(TreeSent {
                files,
                skipped,
                bytes,
            }),
            Message::TreeDone { files, bytes, .. } => Err(ClientError::BadReply(format!(
                "took {files} files of {bytes} bytes, but {} of {} were sent",
                sent.files, sent.bytes
            ))),
            other => Err(unexpected(other, "a tree-done reply")),
        }
    }

    /// Reads `Skip` runs, and the `Held` partials of files to send from
    /// where they end, up to a `Proceed`; `Conflict`s and an `Error`
    /// instead are the refusal.
    async fn read_runs(
        &mut self,
        entries: u64,
        wait: Duration,
    ) -> Result<(Vec<(u64, u64)>, Vec<(u64, Prefix)>), ClientError> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut held: Vec<(u64, Prefix)> = Vec::new();
        let mut conflicts = Vec::new();
        loop {
            match self.reply_within(wait).await {
                Ok(Message::Skip { first, count }) => {
                    let after_last = runs.last().map_or(0, |(first, count)| first + count);
                    let end = first.checked_add(count);
                    if count == 0 || first < after_last || end.is_none_or(|end| end > entries) {
                        return Err(ClientError::BadReply(format!(
                            "skipped {count} entries from {first}, out of order or beyond the tree"
                        )));
                    }
                    runs.push((first, count));
                }
                Ok(Message::Held { index, prefix }) => {
                    let after_last = held.last().is_none_or(|(last, _)| index > *last);
                    if !after_last || index >= entries || held.len() == MAX_HELD {
                        return Err(ClientError::BadReply(format!(
                            "held a partial of entry {index}, out of order, beyond the tree \
                             or one too many"
                        )));
                    }
                    held.push((index, prefix));
                }
                Ok(Message::Conflict { name }) => conflicts.push(name),
                Ok(Message::Proceed) => return Ok((runs, held)),
                Ok(other) => return Err(unexpected(other, "a go-ahead for the tree")),
                Err(ClientError::Remote { code, message }) if !conflicts.is_empty() => {
                    return Err(ClientError::RemoteConflicts {
                        code,
                        message,
                        names: conflicts,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the digest of each file in `candidates`, in manifest order.
    async fn send_digests(
        &mut self,
        tree: &LocalTree,
        candidates: &[(u64, u64)],
    ) -> Result<(), ClientError> {
        let mut reader = tree.entries()?;
        let mut index = 0;
        let mut sent = 0;
        for &(first, count) in candidates {
            while index < first {
                reader.next_entry()?;
                index += 1;
            }
            for _ in 0..count {
                let Some(Spooled { local, entry }) = reader.next_entry()? else {
                    return Err(ClientError::BadReply(
                        "skipped entries beyond the tree".into(),
                    ));
                };
                index += 1;
                if entry.kind != EntryKind::File {
                    return Err(ClientError::BadReply(format!(
                        "asked for the digest of {:?}, a directory",
                        entry.path
                    )));
                }
                let size = entry.size;
                let hashing = tokio::task::spawn_blocking(move || hash_file(&local, size));
                let digest = hashing
                    .await
                    .map_err(|e| ClientError::BadReply(format!("hashing failed: {e}")))??;
                self.conn.queue(&Message::Trailer { digest })?;
                sent += 1;
                if sent % FLUSH_EVERY == 0 {
                    self.conn.flush().await?;
                }
            }
        }
        self.conn.flush().await?;
        Ok(())
    }

    /// Sends every entry not `skipped` with its body, then the end; a
    /// file `held` from where the server's partial of it ends.
    ///
    /// Directories and small files (at most [`WHOLE_BODY`]) go in batches:
    /// the files of a batch are read and hashed whole in one trip to the
    /// blocking pool, while the batch before is sent, and their frames and
    /// bodies are queued to go in few writes. A larger file is streamed.
    async fn send_bodies(
        &mut self,
        tree: &LocalTree,
        skipped: &[(u64, u64)],
        held: Vec<(u64, Prefix)>,
        progress: &mut dyn Progress,
    ) -> Result<TreeSent, ClientError> {
        // A first reading for the totals the progress shows.
        let (mut files, mut total) = (0, 0);
        let mut reader = tree.entries()?;
        let mut cursor = SkipCursor::new(skipped);
        while let Some(Spooled { entry, .. }) = reader.next_entry()? {
            if !cursor.skips_next() && entry.kind == EntryKind::File {
                files += 1;
                total += entry.size;
            }
        }
        // What the server holds already does not come again (a server's
        // prefixes are checked as each file is sent).
        let held_bytes = held
            .iter()
            .map(|(_, prefix)| prefix.len)
            .fold(0, u64::saturating_add);
        total = total.saturating_sub(held_bytes);
        let mut held = held.into_iter().peekable();
        // The bytes of the files this pass names, which its end counts.
        let mut announced = 0;
        progress.begin(total);
        progress.begin_files(files);
        let mut sent = TreeSent {
            files: 0,
            skipped: skipped.iter().map(|(_, count)| count).sum(),
            bytes: 0,
        };
        let mut entries = 0;
        let mut reader = tree.entries()?;
        let mut cursor = SkipCursor::new(skipped);
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut reading: Option<Reading> = None;
        let mut index = 0;
        while let Some(spooled) = reader.next_entry()? {
            index += 1;
            if cursor.skips_next() {
                if spooled.entry.kind == EntryKind::File {
                    progress.file_skipped(&spooled.entry.path, spooled.entry.size);
                }
                continue;
            }
            entries += 1;
            let size = spooled.entry.size;
            announced += size;
            let from = held
                .next_if(|(held, _)| *held == index - 1)
                .map_or_else(Prefix::none, |(_, prefix)| prefix);
            let whole = from.len == 0 && size <= WHOLE_BODY;
            if spooled.entry.kind == EntryKind::Directory || whole {
                batch_bytes += size;
                batch.push(spooled);
                if batch.len() >= BATCH_ENTRIES || batch_bytes >= BATCH_BYTES {
                    let next = read_batch(std::mem::take(&mut batch));
                    batch_bytes = 0;
                    if let Some(before) = reading.replace(next) {
                        self.send_batch(before, &mut sent, progress).await?;
                    }
                }
                continue;
            }
            // A larger file: everything before it goes first.
            if let Some(before) = reading.take() {
                self.send_batch(before, &mut sent, progress).await?;
            }
            if !batch.is_empty() {
                batch_bytes = 0;
                let before = read_batch(std::mem::take(&mut batch));
                self.send_batch(before, &mut sent, progress).await?;
            }
            let Spooled { local, entry } = spooled;
            let upload = super::Upload::open(&local)?;
            if upload.size < size {
                return Err(shrank(local));
            }
            let path = entry.path.clone();
            self.conn.queue(&Message::TreeEntry(entry))?;
            self.conn
                .send_body_from(upload.file, size, &from, None, &mut |n| progress.advance(n))
                .await
                .map_err(|e| match e {
                    TransportError::SourceFailed(source) => ClientError::Local {
                        path: local.clone(),
                        source,
                    },
                    other => other.into(),
                })?;
            progress.file_done(&TreeFile {
                path: &path,
                size,
                moved: size - from.len,
            });
            sent.files += 1;
            sent.bytes += size - from.len;
        }
        if let Some(before) = reading.take() {
            self.send_batch(before, &mut sent, progress).await?;
        }
        if !batch.is_empty() {
            let last = read_batch(batch);
            self.send_batch(last, &mut sent, progress).await?;
        }
        self.conn
            .write_message(&Message::TreeEnd {
                entries,
                bytes: announced,
            })
            .await?;
        Ok(sent)
    }

    /// Queues a batch read by [`read_batch`], sending as the queue grows.
    async fn send_batch(
        &mut self,
        reading: Reading,
        sent: &mut TreeSent,
        progress: &mut dyn Progress,
    ) -> Result<(), ClientError> {
        let read = reading
            .await
            .map_err(|e| ClientError::BadReply(format!("reading files failed: {e}")))?;
        for (entry, body) in read {
            let size = entry.size;
            let Some(body) = body else {
                self.conn.queue(&Message::TreeEntry(entry))?;
                continue; // a directory
            };
            let (bytes, digest) = body?;
            let path = entry.path.clone();
            self.conn.queue(&Message::TreeEntry(entry))?;
            self.conn.queue_whole_body(&bytes, digest)?;
            progress.advance(size);
            progress.file_done(&TreeFile {
                path: &path,
                size,
                moved: size,
            });
            sent.files += 1;
            sent.bytes += size;
            if self.conn.queued_len() >= FLUSH_BYTES {
                self.conn.flush().await?;
            }
        }
        Ok(())
    }
}

/// A batch of entries being read on the blocking pool: each with, for a
/// file, its body and digest, or why it could not be read.
type Reading = tokio::task::JoinHandle<Vec<(TreeEntry, Option<WholeFile>)>>;

/// A small file read whole, and its digest.
type WholeFile = Result<(Vec<u8>, [u8; 32]), ClientError>;

/// Reads the files of `batch`, small ones, whole on the blocking pool.
/// Past a file that cannot be read, nothing more is read: the tree fails
/// there.
fn read_batch(batch: Vec<Spooled>) -> Reading {
    tokio::task::spawn_blocking(move || {
        let mut read = Vec::with_capacity(batch.len());
        for Spooled { local, entry } in batch {
            if entry.kind == EntryKind::Directory {
                read.push((entry, None));
                continue;
            }
            let whole = read_whole(&local, entry.size);
            let failed = whole.is_err();
            read.push((entry, Some(whole)));
            if failed {
                break;
            }
        }
        read
    })
}

/// The first `size` bytes of the local file `path`, and their digest.
fn read_whole(path: &std::path::Path, size: u64) -> WholeFile {
    use std::os::unix::fs::FileExt;
    let upload = super::Upload::open(path)?;
    if upload.size < size {
        return Err(shrank(path.to_owned()));
    }
    let mut body = vec![0; usize::try_from(size).unwrap_or(0)];
    let mut read = 0;
    while read < body.len() {
        let rest = body.get_mut(read..).unwrap_or_default();
        match upload.file.read_at(rest, read as u64) {
            Ok(0) => return Err(shrank(path.to_owned())),
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ClientError::Local {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    let digest = *blake3::hash(&body).as_bytes();
    Ok((body, digest))
}

/// The failure of a file that shrank while the tree was being sent.
fn shrank(path: std::path::PathBuf) -> ClientError {
    ClientError::Local {
        path,
        source: std::io::Error::other("the file shrank while the tree was being sent"),
    }
}

/// Walks the manifest's indices alongside sorted runs of skipped ones.
struct SkipCursor<'a> {
    runs: std::slice::Iter<'a, (u64, u64)>,
    run: Option<(u64, u64)>,
    index: u64,
}

impl<'a> SkipCursor<'a> {
    fn new(runs: &'a [(u64, u64)]) -> Self {
        let mut runs = runs.iter();
        let run = runs.next().copied();
        SkipCursor {
            runs,
            run,
            index: 0,
        }
    }

    /// Whether the next entry is skipped.
    fn skips_next(&mut self) -> bool {
        let index = self.index;
        self.index += 1;
        while let Some((first, count)) = self.run {
            if index < first + count {
                return index >= first;
            }
            self.run = self.runs.next().copied();
        }
        false
    }
}

/// How long a disk may take over `bytes`, beyond the usual wait.
fn disk_time(bytes: u64) -> Duration {
    Duration::from_secs(bytes / SLOWEST_DISK_BYTES_PER_SEC)
}

/// The BLAKE3 digest of the first `size` bytes of the local file `path`.
fn hash_file(path: &std::path::Path, size: u64) -> Result<[u8; 32], ClientError> {
    use std::io::Read;
    let local = |source| ClientError::Local {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(local)?;
    let mut hasher = blake3::Hasher::new();
    let copied = std::io::copy(&mut file.take(size), &mut hasher).map_err(local)?;
    if copied != size {
        return Err(local(std::io::Error::other(
            "the file shrank while the tree was being sent",
        )));
    }
    Ok(*hasher.finalize().as_bytes())
}
