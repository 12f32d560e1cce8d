//! The GetTree request (PROTOCOL.md §5.11): the manifest, walked and
//! hashed in batches; the client's skips, a bit per entry; then a second
//! walk that sends each file not skipped, small ones read whole a batch
//! at a time.

use std::time::Instant;

use super::{Abort, Session, ENTRIES_PER_BATCH};
use crate::protocol::{
    Digest, EntryKind, ErrorCode, Message, Prefix, Refusal, RemoteName, TreeEntry, MAX_HELD,
};
use crate::report::Detail;
use crate::server::skips::Skips;
use crate::store;
use crate::transport::{self, Connection, Link};

/// The most entries a tree sent by GetTree may have: the server holds a
/// bit for each between the passes.
const MAX_TREE_ENTRIES: u64 = 1_000_000;

/// The file bytes a batch of a manifest covers, at most, unless one file
/// alone is larger: the files of a batch are hashed before it is sent.
const MANIFEST_BATCH_BYTES: u64 = 64 * 1024 * 1024;

/// The most entries the second pass of a GetTree walks in one turn on the
/// blocking pool before it gives the thread back.
const WALK_STEPS: usize = 256;

/// The bytes of small files the second pass of a GetTree reads whole in
/// one turn on the blocking pool, at most (give or take one file).
const TURN_BYTES: u64 = 1024 * 1024;

/// Bytes of small files queued before they are written to the socket.
const FLUSH_BYTES: usize = 256 * 1024;

impl Session {
    /// Sends the tree under `source` (PROTOCOL.md §5.11): the manifest,
    /// the client's skips, then the bodies it did not skip.
    pub(super) async fn get_tree(
        &self,
        conn: &mut Connection<Link>,
        source: &str,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let source = RemoteName::parse_dir(source)?;
        let entries = self.send_manifest(conn, source.clone()).await?;
        let skips = self.read_skips(conn, entries).await?;
        let walk = self
            .blocking(move |store| store.walk_tree(source.as_ref()))
            .await?;
        let (files, skipped, bytes) = self.send_tree_bodies(conn, walk, skips).await?;
        conn.write_message(&Message::TreeDone {
            files,
            skipped,
            bytes,
        })
        .await?;
        Ok(Detail::Tree {
            files,
            skipped,
            bytes,
            elapsed: started.elapsed(),
        })
    }

    /// Walks the tree and sends its manifest, a batch at a time as a
    /// listing is sent, each file with its digest; returns how many
    /// entries it had.
    async fn send_manifest(
        &self,
        conn: &mut Connection<Link>,
        source: Option<RemoteName>,
    ) -> Result<u64, Abort> {
        let mut walk = self
            .blocking(move |store| store.walk_tree(source.as_ref()))
            .await?;
        let (mut entries, mut bytes) = (0u64, 0u64);
        loop {
            let (back, batch) = self
                .next_batch_in_turn(entries == 0, walk, manifest_batch)
                .await?;
            walk = back;
            let batch = batch?;
            if batch.is_empty() {
                break;
            }
            entries += batch.len() as u64;
            if entries > MAX_TREE_ENTRIES {
                let why = format!("the tree has more than {MAX_TREE_ENTRIES} entries");
                return Err(Refusal::new(ErrorCode::TooLarge, why).into());
            }
            for entry in batch {
                bytes = bytes.saturating_add(entry.size);
                conn.queue(&Message::TreeEntry(entry))?;
            }
            conn.flush().await?;
        }
        for (reason, count) in walk.omitted() {
            conn.queue(&Message::Omitted { reason, count })?;
        }
        conn.write_message(&Message::TreeEnd { entries, bytes })
            .await?;
        Ok(entries)
    }

    /// Reads the client's `Skip` runs and `Held` prefixes up to its
    /// `TreeEnd`: a bit for each of the manifest's `entries`, and the
    /// prefixes. The client may take a while to decide
    /// (it hashes its own files), so this waits as long as an idle
    /// connection may, on the async side, holding no thread.
    async fn read_skips(&self, conn: &mut Connection<Link>, entries: u64) -> Result<Skips, Abort> {
        let mut skips = Skips::new(entries);
        let mut frames = 0u64;
        let stall_limit = conn.stall_limit();
        conn.set_stall_limit(self.config.idle_timeout);
        let read = loop {
            match conn.expect_message().await {
                Ok(Message::Skip { first, count }) if skips.mark(first, count) => frames += 1,
                Ok(Message::Held { index, prefix }) => match skips.hold(index, prefix) {
                    true => frames += 1,
                    false => {
                        let why = format!(
                            "a held partial of entry {index} is out of place: beyond the \
                             tree, skipped, out of order or one of more than {MAX_HELD} \
                             (malformed message)"
                        );
                        break Err(Refusal::new(ErrorCode::BadRequest, why).into());
                    }
                },
                Ok(Message::TreeEnd { entries, bytes: 0 }) if entries == frames => break Ok(()),
                Ok(other) => {
                    let why = format!(
                        "expected a skip run within the tree's {entries} entries, or the end \
                         of the skips, got {} (malformed message)",
                        other.name()
                    );
                    break Err(Refusal::new(ErrorCode::BadRequest, why).into());
                }
                Err(e) => break Err(e.into()),
            }
        };
        conn.set_stall_limit(stall_limit);
        read.map(|()| skips)
    }

    /// Walks the tree again and sends each file the client did not skip:
    /// its entry, its body and its trailer, back to back. Returns the
    /// files sent, the files skipped and the bytes sent.
    ///
    /// The walk runs a turn ahead on the blocking pool: small files (at
    /// most [`transport::WHOLE_BODY`]) are read whole there, a batch per
    /// turn, and queued together, so a batch costs one trip to the pool
    /// and one write to the socket; a larger file is opened there and
    /// streamed from here.
    async fn send_tree_bodies(
        &self,
        conn: &mut Connection<Link>,
        walk: store::TreeWalk,
        skips: Skips,
    ) -> Result<(u64, u64, u64), Abort> {
        let (mut files, mut skipped, mut bytes) = (0u64, 0u64, 0u64);
        let walk_on = |mut walk: store::TreeWalk, skips: Skips, index: u64| {
            tokio::task::spawn_blocking(move || {
                let turn = next_to_send(&mut walk, &skips, index);
                (walk, skips, turn)
            })
        };
        let mut next = Some(walk_on(walk, skips, 0));
        while let Some(walking) = next.take() {
            let (walk, skips, turn) = walking.await.map_err(|e| {
                tracing::error!(error = %e, "store task failed");
                Refusal::new(ErrorCode::Io, "internal server error")
            })?;
            let mut turn = turn?;
            skipped += turn.skipped;
            if !turn.done && turn.end.is_none() {
                next = Some(walk_on(walk, skips, turn.index));
            } else if turn.end.is_none() && turn.index != skips.len() {
                turn.end = Some(file_changed("entries of the tree went since its manifest"));
            }
            for send in turn.sends {
                let size = match send {
                    ToSend::Whole {
                        entry,
                        body,
                        digest,
                        cached,
                    } => {
                        let size = entry.size;
                        conn.queue(&Message::TreeEntry(TreeEntry {
                            digest: cached,
                            ..entry
                        }))?;
                        conn.queue(&Message::Body { size })?;
                        conn.queue_whole_body(&body, digest)?;
                        if conn.queued_len() >= FLUSH_BYTES {
                            conn.flush().await?;
                        }
                        size
                    }
                    ToSend::Stream {
                        entry,
                        file,
                        held: None,
                    } => {
                        let (size, cached) = (file.size(), file.cached_digest());
                        conn.queue(&Message::TreeEntry(TreeEntry {
                            digest: cached,
                            ..entry
                        }))?;
                        conn.queue(&Message::Body { size })?;
                        let (file, digest) =
                            conn.send_body(file, size, cached, &mut |_| {}).await?;
                        self.remember_digest(file, digest, cached).await;
                        size
                    }
                    // The client holds a partial of it: from where that
                    // ends, as for a GetFrom (§5.13).
                    ToSend::Stream {
                        entry,
                        file,
                        held: Some(prefix),
                    } => {
                        conn.queue(&Message::TreeEntry(TreeEntry {
                            digest: file.cached_digest(),
                            ..entry
                        }))?;
                        // The client checked that the file is the
                        // manifest's, which its partial was made of.
                        let size = file.size();
                        let (offset, _) = self.send_from(conn, file, prefix, true).await?;
                        size - offset
                    }
                };
                files += 1;
                bytes += size;
            }
            if let Some(end) = turn.end {
                // What came before the change is sent whole first.
                conn.flush().await?;
                return Err(end.into());
            }
            conn.flush().await?;
        }
        Ok((files, skipped, bytes))
    }
}

/// The next manifest entries of `walk`, each file with its digest; none at
/// the end. A batch ends early once its files are large, so entries hashed
/// here reach the client while the next are hashed.
fn manifest_batch(walk: &mut store::TreeWalk) -> Result<Vec<TreeEntry>, Refusal> {
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    while batch.len() < ENTRIES_PER_BATCH && bytes < MANIFEST_BATCH_BYTES {
        let Some(mut entry) = walk.next_entry()? else {
            break;
        };
        if entry.kind == EntryKind::File {
            entry.digest = Some(walk.digest_current(entry.size)?);
            bytes = bytes.saturating_add(entry.size);
        }
        batch.push(entry);
    }
    Ok(batch)
}

/// What the second pass of a GetTree walked in one turn.
struct Turn {
    /// How many entries have been walked, this turn's included.
    index: u64,
    /// Files passed over this turn because the client skipped them.
    skipped: u64,
    /// The files to send, in order.
    sends: Vec<ToSend>,
    /// Whether the walk is at its end.
    done: bool,
    /// The tree changed: the answer, after the files before the change.
    end: Option<Refusal>,
}

/// A file of the second pass of a GetTree, ready to send.
enum ToSend {
    /// A small file, read whole.
    Whole {
        entry: TreeEntry,
        body: Vec<u8>,
        /// The digest of `body`.
        digest: Digest,
        /// The digest the store had at hand, which the entry carries.
        cached: Option<Digest>,
    },
    /// A larger file, or one the client holds a partial of, opened, to be
    /// streamed.
    Stream {
        entry: TreeEntry,
        file: store::ReadFile,
        /// What the client holds of it.
        held: Option<Prefix>,
    },
}

/// Walks on from entry `index` over the files the client did not skip:
/// at most [`WALK_STEPS`] entries, and at most [`TURN_BYTES`] of small
/// files read whole, up to and including the first larger file.
fn next_to_send(
    walk: &mut store::TreeWalk,
    skips: &Skips,
    mut index: u64,
) -> Result<Turn, Refusal> {
    let mut turn = Turn {
        index,
        skipped: 0,
        sends: Vec::new(),
        done: false,
        end: None,
    };
    let mut held = 0u64;
    for _ in 0..WALK_STEPS {
        let Some(entry) = walk.next_entry()? else {
            turn.done = true;
            break;
        };
        if index >= skips.len() {
            turn.end = Some(file_changed(
                "entries came into the tree since its manifest",
            ));
            break;
        }
        let is_skipped = skips.is_skipped(index);
        index += 1;
        turn.index = index;
        match entry.kind {
            EntryKind::File if is_skipped => turn.skipped += 1,
            EntryKind::File => {
                let file = match walk.open_current() {
                    Ok(file) => file,
                    Err(refusal) if refusal.code == ErrorCode::NotFound => {
                        turn.end = Some(file_changed(&format!("{:?} went", entry.path)));
                        break;
                    }
                    Err(refusal) if turn.sends.is_empty() => return Err(refusal),
                    Err(refusal) => {
                        turn.end = Some(refusal);
                        break;
                    }
                };
                if file.size() != entry.size {
                    turn.end = Some(file_changed(&format!("{:?} changed size", entry.path)));
                    break;
                }
                let partial = skips.held(index - 1).cloned();
                if entry.size > transport::WHOLE_BODY || partial.is_some() {
                    turn.sends.push(ToSend::Stream {
                        entry,
                        file,
                        held: partial,
                    });
                    break;
                }
                let Some((body, digest)) = file.read_whole()? else {
                    turn.end = Some(file_changed(&format!("{:?} changed size", entry.path)));
                    break;
                };
                held += entry.size;
                turn.sends.push(ToSend::Whole {
                    entry,
                    body,
                    digest,
                    cached: file.cached_digest(),
                });
                if held >= TURN_BYTES {
                    break;
                }
            }
            EntryKind::Directory | EntryKind::Other => {}
        }
    }
    Ok(turn)
}

/// The refusal for a tree that changed between its manifest and its
/// bodies; sent after what went before it (PROTOCOL.md §5.11).
fn file_changed(what: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Io,
        format!("file-changed: {what}; the files sent before this are complete"),
    )
}
