//! The PutTree request (PROTOCOL.md §5.10): the manifest and its checks,
//! the digests of the candidates for skipping, then the bodies.
//!
//! The server never holds the manifest: the first pass is checked entry
//! by entry and surveyed in batches, leaving a bit per entry (which files
//! the server has with the same size, then which it has with the same
//! content) and at most [`SHOWN_CONFLICTS`] names; the second pass is
//! checked again as it comes.

use std::time::Instant;

use super::{Abort, Session};
use crate::partial::Partial;
use crate::protocol::{
    self, Digest, EntryKind, ErrorCode, ManifestError, ManifestOrder, Message, Refusal, RemoteName,
    RequestKind, TreeEntry, STEP,
};
use crate::report::Detail;
use crate::security::access::Grant;
use crate::store::{Meets, Owner, TreeBody, TreeFile, TreeWrite};
use crate::transport::{Connection, Discard, Link, TransportError, WHOLE_BODY};

/// Entries surveyed per trip to the blocking pool.
const SURVEY_BATCH: usize = 256;

/// Entries of the second pass handed to the store in one trip, at most.
const BATCH_ENTRIES: usize = 256;

/// Bytes of small files' bodies held for one trip to the store, at most
/// (give or take one body).
const BATCH_BYTES: usize = 1024 * 1024;

/// Conflicting names sent before the refusal; the rest are counted.
const SHOWN_CONFLICTS: usize = 20;

/// Conflicting names named in the refusal's message.
const NAMED_IN_MESSAGE: usize = 5;

/// How a PutTree asks for its tree (PROTOCOL.md §5.10).
pub(super) struct PutTree {
    pub replace: bool,
    /// The mode and time a new target takes.
    pub top: Option<(u32, i64)>,
    /// Discard what an earlier try of the same new tree kept.
    pub restart: bool,
}

impl Session {
    /// Answers a PutTree: refuses it before any body, or takes the tree.
    /// A new tree goes on from what an earlier try of `owner`'s kept.
    pub(super) async fn put_tree(
        &self,
        conn: &mut Connection<Link>,
        target: &str,
        asked: PutTree,
        grant: &Grant,
        owner: &Owner,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let PutTree {
            replace,
            top,
            restart,
        } = asked;
        // Checked here rather than before every request, because the
        // manifest is already on its way: a refused tree's manifest is
        // still read to its end, so the connection stays in step.
        let mut refusal = allowed(grant, replace).err();
        let mut tree = None;
        if refusal.is_none() {
            let opened = match RemoteName::parse_dir(target) {
                Ok(target) => {
                    let owner = owner.clone();
                    self.blocking_unless_busy(move |store| {
                        store.open_tree(target.as_ref(), replace, top, &owner, restart)
                    })
                    .await
                }
                Err(e) => Err(e.into()),
            };
            match opened {
                Ok(opened) => tree = Some(opened),
                Err(why) => refusal = Some(why),
            }
        }
        let manifest = self.read_manifest(conn, tree, refusal).await?;
        let Manifest {
            tree,
            entries,
            bytes,
            mut conflicts,
            candidates,
        } = manifest?;
        let mut tree = self
            .blocking(move |_| {
                tree.check_space(bytes)?;
                Ok(tree)
            })
            .await?;
        conflicts.refuse_if_any(conn)?;
        // The partials an earlier try left of files to come, before the
        // first go-ahead: those files are sent from where they end.
        let mut offsets = Offsets::default();
        for (index, path, prefix) in tree.held() {
            offsets.0.push_back((path, prefix.len));
            conn.queue(&Message::Held { index, prefix })?;
        }
        let mut skipped = Indices::new(entries);
        if candidates.count() > 0 {
            // The candidates are named as runs of skips, before a first
            // go-ahead; the client sends their digests.
            send_runs(conn, &candidates).await?;
            conn.write_message(&Message::Proceed).await?;
            tree = self
                .compare_digests(conn, tree, &mut skipped, &mut conflicts)
                .await?;
            conflicts.refuse_if_any(conn)?;
            send_runs(conn, &skipped).await?;
        }
        conn.write_message(&Message::Proceed).await?;
        let skipped = skipped.count();
        let sent = Sent {
            entries: entries - skipped,
            bytes,
        };
        let (files, moved) = self.receive_bodies(conn, tree, sent, offsets).await?;
        conn.write_message(&Message::TreeDone {
            files,
            skipped,
            bytes: moved,
        })
        .await?;
        Ok(Detail::Tree {
            files,
            skipped,
            bytes: moved,
            elapsed: started.elapsed(),
        })
    }

    /// Reads the manifest to its `TreeEnd`, checking its order and the
    /// limits, and surveys each entry against what the server has. With a
    /// refusal already, or one met on the way, the rest is only checked
    /// and read, and the refusal is the answer. A manifest out of order is
    /// an `Err`: the connection cannot go on.
    async fn read_manifest(
        &self,
        conn: &mut Connection<Link>,
        mut tree: Option<TreeWrite>,
        mut refusal: Option<Refusal>,
    ) -> Result<Result<Manifest, Refusal>, Abort> {
        let mut order = ManifestOrder::new();
        let mut frame_bytes: u64 = 0;
        let mut scratch = Vec::new();
        let mut batch = Vec::with_capacity(SURVEY_BATCH);
        let mut conflicts = Conflicts::default();
        let mut candidates = Indices::new(0);
        loop {
            let Some(entry) = next_entry(conn, &mut order).await? else {
                break;
            };
            scratch.clear();
            protocol::encode(&Message::TreeEntry(entry.clone()), &mut scratch)
                .map_err(TransportError::from)?;
            frame_bytes += scratch.len() as u64;
            if refusal.is_none() {
                refusal = self
                    .over_limits(order.counts().0, frame_bytes, &entry)
                    .err();
            }
            if refusal.is_some() {
                continue;
            }
            batch.push((order.counts().0 - 1, entry));
            if batch.len() == SURVEY_BATCH {
                let survey = self.survey(tree.take(), std::mem::take(&mut batch)).await;
                match survey.map(|(back, found)| {
                    conflicts.note_all(&found, &mut candidates);
                    back
                }) {
                    Ok(back) => tree = Some(back),
                    Err(why) => refusal = Some(why),
                }
            }
        }
        if let Some(refusal) = refusal {
            return Ok(Err(refusal));
        }
        let survey = self.survey(tree, batch).await;
        let tree = match survey {
            Ok((tree, found)) => {
                conflicts.note_all(&found, &mut candidates);
                tree
            }
            Err(why) => return Ok(Err(why)),
        };
        let (entries, bytes) = order.counts();
        candidates.grow(entries);
        Ok(Ok(Manifest {
            tree,
            entries,
            bytes,
            conflicts,
            candidates,
        }))
    }

    /// The limits of a tree, checked as each entry of the manifest comes:
    /// `entries` so far, in `frame_bytes`, the last being `entry`.
    fn over_limits(
        &self,
        entries: u64,
        frame_bytes: u64,
        entry: &TreeEntry,
    ) -> Result<(), Refusal> {
        let config = &self.config;
        let too_large = |why: String| Err(Refusal::new(ErrorCode::TooLarge, why));
        if entries > config.max_tree_entries {
            return too_large(format!(
                "the tree has more than {} entries, the most this server takes in one request",
                config.max_tree_entries
            ));
        }
        if frame_bytes > config.max_manifest_bytes {
            return too_large(format!(
                "the tree's manifest is larger than {} bytes, the most this server takes",
                config.max_manifest_bytes
            ));
        }
        if let Some(limit) = config.max_file_size.filter(|&limit| entry.size > limit) {
            return too_large(format!(
                "{:?} has {} bytes, more than this server accepts ({limit} bytes)",
                entry.path, entry.size
            ));
        }
        Ok(())
    }

    /// Surveys a batch of entries on the blocking pool.
    async fn survey(
        &self,
        tree: Option<TreeWrite>,
        batch: Vec<(u64, TreeEntry)>,
    ) -> Result<(TreeWrite, Vec<Found>), Refusal> {
        let Some(mut tree) = tree else {
            return Err(Refusal::new(ErrorCode::Io, "the tree was given up"));
        };
        self.blocking(move |_| {
            let mut found = Vec::new();
            for (index, entry) in batch {
                match tree.survey(index, &entry)? {
                    Meets::Free => {}
                    meets => found.push(Found {
                        index,
                        path: entry.path,
                        meets,
                    }),
                }
            }
            Ok((tree, found))
        })
        .await
    }

    /// Reads the client's digest of each candidate, in manifest order, and
    /// compares it with the server's: the same content is skipped; another
    /// is replaced where the tree replaces ([`TreeWrite::replaces`]), and
    /// a conflict elsewhere.
    async fn compare_digests(
        &self,
        conn: &mut Connection<Link>,
        mut tree: TreeWrite,
        skipped: &mut Indices,
        conflicts: &mut Conflicts,
    ) -> Result<TreeWrite, Abort> {
        let replace = tree.replaces();
        loop {
            let (back, batch) = self
                .blocking(move |_| {
                    let mut batch = Vec::with_capacity(SURVEY_BATCH);
                    while batch.len() < SURVEY_BATCH {
                        match tree.next_candidate()? {
                            Some(candidate) => batch.push(candidate),
                            None => break,
                        }
                    }
                    Ok((tree, batch))
                })
                .await?;
            tree = back;
            if batch.is_empty() {
                return Ok(tree);
            }
            for candidate in batch {
                let digest = match conn.expect_message().await? {
                    Message::Trailer { digest } => digest,
                    other => return Err(unexpected(other)),
                };
                if digest == candidate.digest {
                    skipped.set(candidate.index);
                } else if !replace {
                    conflicts.note(candidate.path);
                }
            }
        }
    }

    /// Receives the second pass: each entry again, a file's body right
    /// after it. A failure is kept and the rest read and discarded, so the
    /// answer comes at the `TreeEnd` with the stream in step. Returns the
    /// files and bytes moved.
    ///
    /// Directories and small files (bodies of at most [`WHOLE_BODY`],
    /// taken whole into memory and verified here) are handed to the store
    /// in batches, one trip to the blocking pool each, while the next
    /// batch arrives. A larger file is written as it streams in: the
    /// batch before it, the file received before it and its own entry go
    /// in one trip.
    async fn receive_bodies(
        &self,
        conn: &mut Connection<Link>,
        tree: TreeWrite,
        sent: Sent,
        mut offsets: Offsets,
    ) -> Result<(u64, u64), Abort> {
        let tree = self
            .blocking(move |_| {
                let mut tree = tree;
                tree.start()?;
                Ok(tree)
            })
            .await?;
        let mut writing = Writing {
            tree: Some(tree),
            job: None,
            failure: None,
            files: 0,
            bytes: 0,
        };
        let mut order = ManifestOrder::new();
        let mut batch = Batch::default();
        let mut arrived: Option<Arrived> = None;
        let read = self
            .read_bodies(
                conn,
                sent,
                &mut offsets,
                &mut writing,
                &mut order,
                &mut batch,
                &mut arrived,
            )
            .await;
        if let Err(Abort::Broken(cut)) = read {
            // What arrived verified is kept for the next try, off the
            // async threads: the last files take their names after a sync.
            writing.settle().await;
            let failed = writing.failure.is_some();
            if let Some(mut tree) = writing.tree.take() {
                let ops = batch.take();
                let _ = self
                    .blocking(move |_| {
                        if failed {
                            tree.discard();
                        } else {
                            let _ = apply(&mut tree, arrived, ops);
                            tree.cut_off();
                        }
                        Ok(())
                    })
                    .await;
            }
            return Err(Abort::Broken(cut));
        }
        read?;
        writing.settle().await;
        if order.counts().0 != sent.entries {
            writing.fail(bad_request(
                "the tree's bodies left out entries its manifest announced",
            ));
        }
        let Writing {
            tree,
            failure,
            mut files,
            mut bytes,
            ..
        } = writing;
        let Some(mut tree) = tree else {
            return Err(failure
                .unwrap_or_else(|| Refusal::new(ErrorCode::Io, "the tree was given up"))
                .into());
        };
        let (ops, last) = (batch.take(), arrived);
        let (more_files, more_bytes) = self
            .blocking(move |_| {
                if let Some(failure) = failure {
                    // Undone off the async threads: a new tree's staging
                    // directory may hold many files.
                    drop((last, ops));
                    tree.discard();
                    return Err(failure);
                }
                let applied = apply(&mut tree, last, ops)?;
                tree.finish()?;
                Ok(applied)
            })
            .await?;
        files += more_files;
        bytes += more_bytes;
        Ok((files, bytes))
    }

    /// The reading of [`Session::receive_bodies`]: the second pass to its
    /// `TreeEnd`, handed to the store as it comes.
    #[allow(clippy::too_many_arguments)]
    async fn read_bodies(
        &self,
        conn: &mut Connection<Link>,
        sent: Sent,
        offsets: &mut Offsets,
        writing: &mut Writing,
        order: &mut ManifestOrder,
        batch: &mut Batch,
        arrived: &mut Option<Arrived>,
    ) -> Result<(), Abort> {
        loop {
            let Some(entry) = next_entry(conn, order).await? else {
                break;
            };
            let (entries_so_far, bytes_so_far) = order.counts();
            if entries_so_far > sent.entries || bytes_so_far > sent.bytes {
                return Err(bad_request(
                    "the tree's bodies carry more than its manifest announced",
                )
                .into());
            }
            // What of a file comes: less for one sent from a partial, which
            // the entry must still be longer than.
            let Some(body) = entry.size.checked_sub(offsets.take(&entry)) else {
                return Err(bad_request(
                    "a file sent from where its partial ends is shorter than that",
                )
                .into());
            };
            // After a failure the rest is only read; the tree is undone at
            // the end, off the async threads.
            if writing.failure.is_some() {
                discard(conn, &entry, body).await?;
                continue;
            }
            let size = entry.size;
            match entry.kind {
                EntryKind::Directory => batch.push(Op::Directory(entry), 0),
                EntryKind::File if size <= WHOLE_BODY => match conn.recv_whole_body(size).await {
                    Ok((body, digest)) => {
                        let len = body.len();
                        batch.push(
                            Op::Whole {
                                entry,
                                body,
                                digest,
                            },
                            len,
                        );
                    }
                    Err(TransportError::DigestMismatch) => {
                        writing.fail(damaged(&entry.path));
                        continue;
                    }
                    Err(broken) => return Err(Abort::Broken(broken)),
                },
                EntryKind::File if size > STEP && self.store.takes_tree_partials() => {
                    self.receive_into_partial(conn, entry, body, writing, batch, arrived)
                        .await?;
                    continue;
                }
                EntryKind::File | EntryKind::Other => {
                    let path = entry.path.clone();
                    let entered = self
                        .apply_then(writing, arrived, batch, move |tree| tree.enter(&entry))
                        .await?;
                    let Some((tree_file, write_file)) = entered else {
                        discard_body(conn, body).await?;
                        continue;
                    };
                    match conn.recv_body(write_file, size, &mut |_| {}).await {
                        Ok((body, digest)) => {
                            *arrived = Some(Arrived::Temporary {
                                file: tree_file,
                                body,
                                digest,
                                size,
                            })
                        }
                        Err(TransportError::DigestMismatch) => writing.fail(damaged(&path)),
                        Err(TransportError::Sink(e)) => writing.fail(crate::store::classify(e)),
                        Err(broken) => return Err(Abort::Broken(broken)),
                    }
                    continue;
                }
            }
            if batch.is_full() {
                // The batch before goes first: one at a time, in order.
                writing.settle().await;
                writing.start(arrived.take(), batch.take());
            }
        }
        Ok(())
    }
}

impl Session {
    /// Hands the store, in one trip to the blocking pool, the file that
    /// arrived before and the batch waiting, then `enter`s the next file
    /// of the second pass. `None` after a failure, this one or an earlier
    /// one: the body is to be discarded.
    async fn apply_then<T: Send + 'static>(
        &self,
        writing: &mut Writing,
        arrived: &mut Option<Arrived>,
        batch: &mut Batch,
        enter: impl FnOnce(&mut TreeWrite) -> Result<Option<T>, Refusal> + Send + 'static,
    ) -> Result<Option<T>, Abort> {
        writing.settle().await;
        let Some(open) = writing.tree.take_if(|_| writing.failure.is_none()) else {
            return Ok(None);
        };
        let (before, ops) = (arrived.take(), batch.take());
        let (back, applied, entered) = self
            .blocking(move |_| {
                let mut open = open;
                let applied = apply(&mut open, before, ops);
                let entered = match applied {
                    Ok(_) => enter(&mut open),
                    Err(_) => Ok(None),
                };
                Ok((open, applied, entered))
            })
            .await?;
        writing.tree = Some(back);
        writing.count(applied);
        Ok(match (&writing.failure, entered) {
            (None, Ok(entered)) => entered,
            (None, Err(why)) => {
                writing.fail(why);
                None
            }
            (Some(_), _) => None,
        })
    }

    /// Receives `entry`, a file of more than a step, `body` bytes of it,
    /// into a partial: the one an earlier try left, which `Held` offered
    /// and whose end the body goes on from, or a new one; so a cut keeps
    /// what came of it. It takes its name with the next trip to the
    /// store, as a file in a temporary file does.
    async fn receive_into_partial(
        &self,
        conn: &mut Connection<Link>,
        entry: TreeEntry,
        body: u64,
        writing: &mut Writing,
        batch: &mut Batch,
        arrived: &mut Option<Arrived>,
    ) -> Result<(), Abort> {
        let to_enter = entry.clone();
        let entered = self
            .apply_then(writing, arrived, batch, move |tree| {
                tree.enter_partial(&to_enter).map(Some)
            })
            .await?;
        let Some((partial, from)) = entered.filter(|(_, from)| entry.size - from.len == body)
        else {
            if writing.failure.is_none() {
                // The store goes on from another prefix than the one
                // offered: nothing to go on with.
                writing.fail(Refusal::new(
                    ErrorCode::Io,
                    format!("the partial of {:?} changed meanwhile", entry.path),
                ));
            }
            discard_body(conn, body).await?;
            return Ok(());
        };
        match conn
            .recv_body_from(partial.clone(), entry.size, from, &mut |_| {})
            .await
        {
            Ok((_, digest)) => {
                *arrived = Some(Arrived::Partial {
                    partial,
                    entry,
                    digest,
                    moved: body,
                })
            }
            Err(TransportError::DigestMismatch) => {
                let _ = self.blocking(move |_| Ok(partial.discard())).await;
                writing.fail(damaged(&entry.path));
            }
            Err(TransportError::Sink(e)) => writing.fail(crate::store::classify(e)),
            Err(broken) => return Err(Abort::Broken(broken)),
        }
        Ok(())
    }
}

/// The files of the second pass sent from where a partial of them ends
/// (offered with `Held`): path and offset, in manifest order.
#[derive(Default)]
struct Offsets(std::collections::VecDeque<(String, u64)>);

impl Offsets {
    /// Where the body of `entry` begins: the offset offered for it, or 0.
    fn take(&mut self, entry: &TreeEntry) -> u64 {
        match self.0.front() {
            Some((path, offset)) if *path == entry.path => {
                let offset = *offset;
                self.0.pop_front();
                offset
            }
            _ => 0,
        }
    }
}

/// Directories and small files of the second pass waiting to be handed to
/// the store in one trip.
#[derive(Default)]
struct Batch {
    ops: Vec<Op>,
    /// The bytes of the bodies held.
    bytes: usize,
}

impl Batch {
    fn push(&mut self, op: Op, bytes: usize) {
        self.ops.push(op);
        self.bytes += bytes;
    }

    /// Whether the batch is worth a trip: enough entries, or enough bytes
    /// held in memory.
    fn is_full(&self) -> bool {
        self.ops.len() >= BATCH_ENTRIES || self.bytes >= BATCH_BYTES
    }

    fn take(&mut self) -> Vec<Op> {
        self.bytes = 0;
        std::mem::take(&mut self.ops)
    }
}

/// An entry of a [`Batch`].
enum Op {
    Directory(TreeEntry),
    /// A file whose body arrived whole and verified.
    Whole {
        entry: TreeEntry,
        body: Vec<u8>,
        digest: Digest,
    },
}

/// Hands the store, in order, the large file received before a batch and
/// then the batch; the files and bytes kept.
fn apply(
    tree: &mut TreeWrite,
    before: Option<Arrived>,
    ops: Vec<Op>,
) -> Result<(u64, u64), Refusal> {
    let (mut files, mut bytes) = (0, 0);
    if let Some(arrived) = before {
        bytes += arrived.keep(tree)?;
        files += 1;
    }
    for op in ops {
        match op {
            Op::Directory(entry) => {
                tree.enter(&entry)?;
            }
            Op::Whole {
                entry,
                body,
                digest,
            } => {
                tree.write_whole(&entry, &body, &digest)?;
                files += 1;
                bytes += body.len() as u64;
            }
        }
    }
    Ok((files, bytes))
}

/// A batch being handed to the store on the blocking pool: the tree back,
/// and the files and bytes kept.
type Applying = tokio::task::JoinHandle<(TreeWrite, Result<(u64, u64), Refusal>)>;

/// The tree being written in the second pass, and its batch on the
/// blocking pool, if one is there.
struct Writing {
    /// `None` while a batch holds it, or once lost.
    tree: Option<TreeWrite>,
    job: Option<Applying>,
    /// The first failure; the rest of the tree is read and discarded.
    failure: Option<Refusal>,
    files: u64,
    bytes: u64,
}

impl Writing {
    /// Hands `before` and `ops` to the store on the blocking pool, to be
    /// met by [`Writing::settle`].
    fn start(&mut self, before: Option<Arrived>, ops: Vec<Op>) {
        if let Some(mut tree) = self.tree.take_if(|_| self.failure.is_none()) {
            self.job = Some(tokio::task::spawn_blocking(move || {
                let applied = apply(&mut tree, before, ops);
                (tree, applied)
            }));
        }
    }

    /// Waits for the batch on the blocking pool, if one is there.
    async fn settle(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        match job.await {
            Ok((tree, applied)) => {
                self.tree = Some(tree);
                self.count(applied);
            }
            Err(e) => {
                tracing::error!(error = %e, "store task failed");
                self.fail(Refusal::new(ErrorCode::Io, "internal server error"));
            }
        }
    }

    fn count(&mut self, applied: Result<(u64, u64), Refusal>) {
        match applied {
            Ok((files, bytes)) => {
                self.files += files;
                self.bytes += bytes;
            }
            Err(why) => self.fail(why),
        }
    }

    /// Keeps the first failure.
    fn fail(&mut self, why: Refusal) {
        self.failure.get_or_insert(why);
    }
}

/// The failure of a file whose body did not match its digest.
fn damaged(path: &str) -> Refusal {
    Refusal::new(
        ErrorCode::DigestMismatch,
        format!("{path:?} arrived damaged (BLAKE3 digest mismatch); it was not kept"),
    )
}

/// A file whose body arrived whole and verified, not yet handed to the
/// store.
enum Arrived {
    /// In a temporary file.
    Temporary {
        file: TreeFile,
        body: TreeBody,
        digest: Digest,
        size: u64,
    },
    /// In a partial, `moved` bytes of it in this pass.
    Partial {
        partial: Partial,
        entry: TreeEntry,
        digest: Digest,
        moved: u64,
    },
}

impl Arrived {
    /// Hands the file to the tree; the bytes of it that came, once kept.
    fn keep(self, tree: &mut TreeWrite) -> Result<u64, Refusal> {
        match self {
            Arrived::Temporary {
                file,
                body,
                digest,
                size,
            } => {
                tree.received(file, body, &digest)?;
                Ok(size)
            }
            Arrived::Partial {
                partial,
                entry,
                digest,
                moved,
            } => {
                tree.received_partial(&partial, &entry, &digest)?;
                Ok(moved)
            }
        }
    }
}

/// Sends `indices` as `Skip` runs, a batch of frames at a time.
async fn send_runs(conn: &mut Connection<Link>, indices: &Indices) -> Result<(), Abort> {
    for (n, (first, count)) in indices.runs().enumerate() {
        conn.queue(&Message::Skip { first, count })?;
        if n % 1024 == 1023 {
            conn.flush().await?;
        }
    }
    Ok(())
}

/// Reads and drops what follows `entry` in the second pass: a file's body
/// and trailer, `body` bytes of it (less than its size for one sent from
/// a partial).
async fn discard(conn: &mut Connection<Link>, entry: &TreeEntry, body: u64) -> Result<(), Abort> {
    if entry.kind == EntryKind::File {
        discard_body(conn, body).await?;
    }
    Ok(())
}

/// Reads a body of `size` bytes and its trailer, keeping nothing; a
/// digest that does not match matters no more, as the tree failed already.
async fn discard_body(conn: &mut Connection<Link>, size: u64) -> Result<(), Abort> {
    match conn.recv_body(Discard, size, &mut |_| {}).await {
        Ok(_) | Err(TransportError::DigestMismatch) => Ok(()),
        Err(broken) => Err(Abort::Broken(broken)),
    }
}

/// Whether the grant allows a PutTree, and, to replace, a delete too.
fn allowed(grant: &Grant, replace: bool) -> Result<(), Refusal> {
    let forbidden = |why| Refusal::new(ErrorCode::Forbidden, why);
    grant.check(RequestKind::PutTree).map_err(forbidden)?;
    if replace {
        grant
            .check(RequestKind::Delete)
            .map_err(|why| forbidden(format!("replacing needs the right to delete: {why}")))?;
    }
    Ok(())
}

/// The next entry of a pass, admitted by `order`; `None` at its end, once
/// the end's counts are checked.
async fn next_entry(
    conn: &mut Connection<Link>,
    order: &mut ManifestOrder,
) -> Result<Option<TreeEntry>, Abort> {
    match conn.expect_message().await? {
        Message::TreeEntry(entry) => {
            order.admit(&entry).map_err(malformed)?;
            Ok(Some(entry))
        }
        Message::TreeEnd { entries, bytes } => {
            order.finish(entries, bytes).map_err(malformed)?;
            Ok(None)
        }
        other => Err(unexpected(other)),
    }
}

fn malformed(error: ManifestError) -> Abort {
    bad_request(error.to_string()).into()
}

fn bad_request(why: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, why)
}

fn unexpected(got: Message) -> Abort {
    bad_request(format!("expected a tree entry, got {}", got.name())).into()
}

/// A manifest read whole and surveyed.
struct Manifest {
    tree: TreeWrite,
    entries: u64,
    bytes: u64,
    conflicts: Conflicts,
    /// The files the server has with the same size.
    candidates: Indices,
}

/// What the second pass is to carry.
#[derive(Clone, Copy)]
struct Sent {
    entries: u64,
    bytes: u64,
}

/// An entry the survey found something for.
struct Found {
    index: u64,
    path: String,
    meets: Meets,
}

/// The names in the way: the first few, and how many.
#[derive(Default)]
struct Conflicts {
    shown: Vec<String>,
    count: u64,
}

impl Conflicts {
    fn note(&mut self, path: String) {
        self.count += 1;
        if self.shown.len() < SHOWN_CONFLICTS {
            self.shown.push(path);
        }
    }

    fn note_all(&mut self, found: &[Found], candidates: &mut Indices) {
        for found in found {
            match found.meets {
                Meets::Conflict => self.note(found.path.clone()),
                Meets::SameSize => candidates.set(found.index),
                Meets::Free => {}
            }
        }
    }

    /// The refusal of a tree with names in its way, its `Conflict` frames
    /// queued before it; `Ok` if there are none.
    fn refuse_if_any(&mut self, conn: &mut Connection<Link>) -> Result<(), Abort> {
        if self.count == 0 {
            return Ok(());
        }
        let named: Vec<String> = self
            .shown
            .iter()
            .take(NAMED_IN_MESSAGE)
            .map(|name| format!("{name:?}"))
            .collect();
        let more = if self.count > named.len() as u64 {
            ", …"
        } else {
            ""
        };
        let taken = match self.count {
            1 => "1 name of the tree is taken".to_owned(),
            count => format!("{count} names of the tree are taken"),
        };
        let message = format!("{taken}: {}{more}", named.join(", "));
        for name in self.shown.drain(..) {
            conn.queue(&Message::Conflict { name })?;
        }
        Err(Refusal::new(ErrorCode::AlreadyExists, message).into())
    }
}

/// A set of manifest indices, a bit each.
struct Indices {
    bits: Vec<u64>,
    count: u64,
}

impl Indices {
    fn new(len: u64) -> Indices {
        let mut indices = Indices {
            bits: Vec::new(),
            count: 0,
        };
        indices.grow(len);
        indices
    }

    /// Makes room for indices below `len`.
    fn grow(&mut self, len: u64) {
        let words = usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX);
        if words > self.bits.len() {
            self.bits.resize(words, 0);
        }
    }

    fn set(&mut self, index: u64) {
        self.grow(index + 1);
        let (word, bit) = ((index / 64) as usize, index % 64);
        if let Some(word) = self.bits.get_mut(word) {
            if *word & (1 << bit) == 0 {
                *word |= 1 << bit;
                self.count += 1;
            }
        }
    }

    fn count(&self) -> u64 {
        self.count
    }

    /// The set as runs of consecutive indices, `(first, count)`, made as
    /// they are taken.
    fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut set = self.bits.iter().enumerate().flat_map(|(w, &word)| {
            (0..64u64)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| w as u64 * 64 + bit)
        });
        let mut run: Option<(u64, u64)> = None;
        std::iter::from_fn(move || loop {
            let Some(index) = set.next() else {
                return run.take();
            };
            match &mut run {
                Some((first, count)) if *first + *count == index => *count += 1,
                _ => {
                    if let Some(done) = run.replace((index, 1)) {
                        return Some(done);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_come_back_as_runs() {
        let mut indices = Indices::new(10);
        for index in [0, 1, 2, 5, 63, 64, 65, 200] {
            indices.set(index);
        }
        indices.set(1);
        assert_eq!(indices.count(), 8);
        let runs: Vec<_> = indices.runs().collect();
        assert_eq!(runs, [(0, 3), (5, 1), (63, 3), (200, 1)]);
        assert_eq!(Indices::new(100).runs().count(), 0);
    }
}
