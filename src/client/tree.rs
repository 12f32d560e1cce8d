//! Receiving a tree with one GetTree request (PROTOCOL.md §5.11): the
//! manifest is checked and spooled, the client decides what it takes,
//! then the bodies come back to back and each is verified before it takes
//! its name beneath the target.

use std::io;
use std::path::{Path, PathBuf};

use super::local_tree::{self, Decision, KeptTree, Planner, TreeWriter};
use super::spool::{Spool, SpoolReader};
use super::{unexpected, Client, ClientError, Progress, TreeFile};
use crate::partial::Partial;
use crate::protocol::{
    EntryKind, ManifestOrder, Message, OmitReason, Prefix, RemoteName, RequestKind, TreeEntry,
    MAX_HELD, STEP,
};
use crate::transport::{TransportError, WHOLE_BODY};

/// The most entries a manifest may have: the client holds a bit for each.
const MAX_TREE_ENTRIES: u64 = 1_000_000;

/// How long the client waits for the next frame of a manifest, at least.
const MANIFEST_WAIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The most conflicting names a refused tree names.
const CONFLICTS_SHOWN: usize = 20;

/// How a tree download treats what is already here.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeHow {
    /// Replace local files of other content, instead of refusing them.
    pub replace: bool,
    /// Discard what an earlier try kept (a new tree's hidden directory,
    /// the partials of files), instead of going on from it.
    pub restart: bool,
}

/// What a tree download did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeGot {
    /// Files received.
    pub files: u64,
    /// Files skipped, being here already with the same content.
    pub skipped: u64,
    /// Bytes of the files received.
    pub bytes: u64,
    /// Names the server left out of the tree, and why.
    pub omitted: Vec<(OmitReason, u64)>,
}

/// Local names in the way of a tree: the first few, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts {
    pub first: Vec<String>,
    pub count: u64,
}

impl std::fmt::Display for Conflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = if self.count == 1 {
            "name is"
        } else {
            "names are"
        };
        write!(f, "{} local {names} in the way: ", self.count)?;
        for (n, name) in self.first.iter().enumerate() {
            let comma = if n == 0 { "" } else { ", " };
            write!(f, "{comma}{name}")?;
        }
        if self.count > self.first.len() as u64 {
            f.write_str(", …")?;
        }
        f.write_str("; nothing was fetched (--replace replaces files of other content)")
    }
}

impl Client {
    /// Downloads the tree under `source` (`None`: the served directory),
    /// or the one file `source` is, into the local directory `target`:
    /// a new tree if `target` does not exist (it appears whole or not at
    /// all), else merged into it file by file. Files here with the same
    /// content are skipped; with `replace`, files of other content are
    /// replaced, else any is a conflict and nothing is fetched. With
    /// `as_name`, `source` must be one file, and it takes that name in
    /// `target` instead of its own.
    ///
    /// A new tree is built in a hidden directory beside `target`; cut off,
    /// it keeps there the files verified, and the next download of it
    /// goes on from them (skipping those that are the same); a file of
    /// more than a step goes on from the partial a cut left of it. Unless
    /// `restart`.
    pub async fn get_tree(
        &mut self,
        source: Option<&RemoteName>,
        target: &Path,
        as_name: Option<&str>,
        how: TreeHow,
        progress: &mut dyn Progress,
    ) -> Result<TreeGot, ClientError> {
        let TreeHow { replace, restart } = how;
        self.require(RequestKind::GetTree)?;
        let local = |source: io::Error| ClientError::Local {
            path: target.to_owned(),
            source,
        };
        let is_one_component = |name: &str| {
            RemoteName::parse(name)
                .is_ok_and(|parsed| parsed.as_str() == name && parsed.parent().is_none())
        };
        if as_name.is_some_and(|name| !is_one_component(name)) {
            let why = "a name a tree could carry is needed for the file";
            return Err(local(io::Error::new(io::ErrorKind::InvalidInput, why)));
        }
        let existing = match target.symlink_metadata() {
            Ok(_) => Some(local_tree::open_target(target).map_err(local)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(local(e)),
        };
        // A new tree is the copy of the source directory: it takes that
        // directory's mode and time, as `cp -rp` and `rsync -t` give them.
        // Merging leaves the target's own alone, as it leaves every
        // directory of a merge that was there before; a file named anew
        // goes into a directory that is no copy of anything.
        let top = match (&existing, as_name) {
            (None, None) => self.directory_attributes(source).await?,
            _ => None,
        };
        let request = Message::GetTree {
            source: source.map(RemoteName::to_string).unwrap_or_default(),
        };
        self.conn.write_message(&request).await?;
        let (spool, entries, omitted) = self.receive_manifest(as_name).await?;
        let mut spool = spool.read().map_err(local)?;

        // Decide, then tell the server, before any body: against the
        // target, or against what an earlier try of a new tree kept.
        let (writer, planned_on, resumed) = match existing {
            Some(top) => {
                let planned_on = rustix::io::dup(&top).map_err(|e| local(e.into()))?;
                (TreeWriter::merge(top, replace), Some(planned_on), false)
            }
            None => {
                let kept = KeptTree::open(target, restart).map_err(local)?;
                let resumed = kept.resumed;
                let planned_on = resumed.then(|| kept.dir()).transpose().map_err(local)?;
                let writer = TreeWriter::new_tree(kept, top).map_err(local)?;
                (writer, planned_on, resumed)
            }
        };
        // A server that cannot resume would not know `Held`.
        let offers = !restart && self.serves(RequestKind::GetFrom);
        // Hashing local files takes a while: off the async thread, so
        // Ctrl-C is heard meanwhile.
        let owned_target = target.to_owned();
        let planned = tokio::task::spawn_blocking(move || {
            let on = Target {
                dir: planned_on,
                replace,
                resumed,
                offers,
            };
            let plan = plan(&mut spool, entries, on, &owned_target);
            (spool, plan)
        })
        .await;
        let Ok((mut spool, plan)) = planned else {
            let why = io::Error::other("the local check of the tree failed");
            return Err(local(why));
        };
        let mut plan = plan?;
        // Where the tree goes is made ready before any body, so a local
        // failure, like a conflict, refuses the transfer cleanly.
        let room = check_room(target, plan.bytes);
        let ready = match (plan.conflicts.count, room) {
            (1.., _) => Err(ClientError::LocalConflicts(plan.conflicts)),
            (0, Err(e)) => Err(local(e)),
            (0, Ok(())) if resumed => spool
                .rewind()
                .and_then(|()| writer.prune(&mut spool))
                .map_err(local),
            (0, Ok(())) => Ok(()),
        };
        if let Err(refused) = ready {
            // Dropped, the writer leaves what an earlier try kept.
            plan.taken.iter_mut().for_each(|slot| *slot = false);
            self.send_skips(&plan.taken, &[]).await?;
            self.receive_tree_done(0).await?;
            return Err(refused);
        }
        self.send_skips(&plan.taken, &plan.partials).await?;
        spool.rewind().map_err(local)?;
        progress.begin(plan.bytes);
        progress.begin_files(plan.files);
        let partials = std::mem::take(&mut plan.partials).into_iter().collect();
        let mut receiving = Receiving {
            partials,
            spool,
            writer,
            taken: plan.taken,
            index: 0,
            target,
            got: TreeGot {
                omitted,
                ..TreeGot::default()
            },
        };
        let received = self.receive_bodies(&mut receiving, as_name, progress).await;
        match received {
            Ok(counts) => receiving.finish(counts, progress),
            Err(error) => {
                // A transfer cut off (the connection lost or stalled, a
                // reply too late) keeps what came verified, for the next
                // try: the writer, dropped, sees to it. A damaged body
                // keeps nothing. An orderly end (the server's error after
                // what it sent, a file found changed) keeps what came
                // verified in a merge, as the server's message says, and
                // nothing of a new tree.
                if matches!(error, ClientError::DigestMismatch) {
                    receiving.writer.abandon();
                } else if !matches!(error, ClientError::Transport(_) | ClientError::Timeout(_)) {
                    receiving
                        .writer
                        .keep_verified()
                        .map_err(|source| ClientError::Local {
                            path: target.to_owned(),
                            source,
                        })?;
                }
                Err(error)
            }
        }
    }

    /// Receives the bodies of the files taken, each after its entry, up
    /// to the server's end of the tree: what it counts (files, skipped,
    /// bytes).
    async fn receive_bodies(
        &mut self,
        receiving: &mut Receiving<'_>,
        as_name: Option<&str>,
        progress: &mut dyn Progress,
    ) -> Result<(u64, u64, u64), ClientError> {
        let target = receiving.target;
        loop {
            let entry = match self.reply().await? {
                // The one file, checked as it was named in the manifest.
                Message::TreeEntry(entry) => match as_name {
                    Some(name) => TreeEntry {
                        path: name.to_owned(),
                        ..entry
                    },
                    None => entry,
                },
                Message::TreeDone {
                    files,
                    skipped,
                    bytes,
                } => return Ok((files, skipped, bytes)),
                other => return Err(unexpected(other, "a tree entry")),
            };
            let expected = receiving.next_file(&entry, progress)?;
            let partial = receiving.partials.remove(&(receiving.index as u64 - 1));
            if let Some(partial) = partial.filter(|p| p.prefix().len > 0) {
                let moved = self
                    .receive_held(receiving, &expected, partial, progress)
                    .await?;
                receiving.landed(&expected, moved, progress);
                continue;
            }
            let size = match self.reply().await? {
                Message::Body { size } if size == expected.size => size,
                Message::Body { size } => {
                    return Err(ClientError::BadReply(format!(
                        "sent {size} bytes for {:?}, announced with {}",
                        entry.path, expected.size
                    )))
                }
                other => return Err(unexpected(other, "a body")),
            };
            if size > STEP {
                // Into a partial, so that a cut leaves what came of it.
                let partial = receiving
                    .writer
                    .begin_partial(&expected)
                    .map_err(|e| local_at(target, &expected, e))?;
                self.receive_into(receiving, &expected, partial, Prefix::none(), progress)
                    .await?;
                receiving.landed(&expected, size, progress);
                continue;
            }
            if size <= WHOLE_BODY {
                // Small: taken whole into memory, and written in one go.
                let (body, digest) = match self.conn.recv_whole_body(size).await {
                    Ok(received) => received,
                    Err(TransportError::DigestMismatch) => return Err(ClientError::DigestMismatch),
                    Err(other) => return Err(other.into()),
                };
                if expected.digest != Some(digest) {
                    return Err(ClientError::FileChanged(expected.path));
                }
                receiving
                    .writer
                    .write_whole(&expected, &body)
                    .map_err(|e| local_at(target, &expected, e))?;
                progress.advance(size);
                receiving.landed(&expected, size, progress);
                continue;
            }
            let file = receiving
                .writer
                .begin_file(&expected)
                .map_err(|e| local_at(target, &expected, e))?;
            let received = self
                .conn
                .recv_body(file, size, &mut |n| progress.advance(n))
                .await;
            let (file, digest) = match received {
                Ok(received) => received,
                Err(TransportError::Sink(e)) => return Err(local_at(target, &expected, e)),
                Err(TransportError::DigestMismatch) => return Err(ClientError::DigestMismatch),
                Err(other) => return Err(other.into()),
            };
            // Verified against the trailer; it must also be what the
            // manifest announced, or the file changed between the passes.
            if expected.digest != Some(digest) {
                return Err(ClientError::FileChanged(expected.path));
            }
            receiving
                .writer
                .finish_file(file, &expected)
                .map_err(|e| local_at(target, &expected, e))?;
            receiving.landed(&expected, size, progress);
        }
    }

    /// Receives the file `expected`, of which `partial` proves a prefix
    /// the server was told of: its `Sending` says from where it sends
    /// (from the start if it cannot go on from there). Returns the bytes
    /// that came.
    async fn receive_held(
        &mut self,
        receiving: &mut Receiving<'_>,
        expected: &TreeEntry,
        partial: Partial,
        progress: &mut dyn Progress,
    ) -> Result<u64, ClientError> {
        let held = partial.prefix();
        let local = |e| local_at(receiving.target, expected, e);
        let from = match self.reply().await? {
            Message::Sending {
                size,
                modified,
                offset,
                ..
            } if size == expected.size && modified == expected.modified => match offset {
                0 => {
                    partial.start_over(size, modified).map_err(local)?;
                    Prefix::none()
                }
                _ if offset == held.len => held,
                _ => {
                    return Err(ClientError::BadReply(format!(
                        "the server offered to go on with {:?} from byte {offset}, not {}",
                        expected.path, held.len
                    )))
                }
            },
            Message::Sending { .. } => return Err(ClientError::FileChanged(expected.path.clone())),
            other => return Err(unexpected(other, "a sending reply")),
        };
        let moved = expected.size - from.len;
        self.receive_into(receiving, expected, partial, from, progress)
            .await?;
        Ok(moved)
    }

    /// Receives the body of the file `expected` into `partial` after
    /// `from`, checks it, and gives it its name.
    async fn receive_into(
        &mut self,
        receiving: &mut Receiving<'_>,
        expected: &TreeEntry,
        partial: Partial,
        from: Prefix,
        progress: &mut dyn Progress,
    ) -> Result<(), ClientError> {
        let local = |e| local_at(receiving.target, expected, e);
        let received = self
            .conn
            .recv_body_from(partial.clone(), expected.size, from, &mut |n| {
                progress.advance(n)
            })
            .await;
        let digest = match received {
            Ok((_, digest)) => digest,
            Err(TransportError::Sink(e)) => return Err(local(e)),
            Err(TransportError::DigestMismatch) => {
                // What it held, or what came, is not the server's file.
                partial.discard().map_err(local)?;
                return Err(ClientError::DigestMismatch);
            }
            // Dropped, the partial is sealed at its last checkpoint.
            Err(other) => return Err(other.into()),
        };
        if expected.digest != Some(digest) {
            partial.discard().map_err(local)?;
            return Err(ClientError::FileChanged(expected.path.clone()));
        }
        receiving
            .writer
            .finish_partial(&partial, expected)
            .map_err(local)
    }

    /// The mode and time of the directory `source`; `None` if it is a
    /// file.
    async fn directory_attributes(
        &mut self,
        source: Option<&RemoteName>,
    ) -> Result<Option<(u32, i64)>, ClientError> {
        let info = self.stat(source).await?;
        Ok((info.kind == EntryKind::Directory).then_some((info.mode, info.modified)))
    }

    /// Receives and checks the manifest, keeping it in a spool: the
    /// spool, how many entries it has, and what the server left out. With
    /// `as_name`, the manifest must be one file, kept under that name.
    async fn receive_manifest(
        &mut self,
        as_name: Option<&str>,
    ) -> Result<(Spool, u64, Vec<(OmitReason, u64)>), ClientError> {
        let mut order = ManifestOrder::new();
        let mut spool = Spool::new().map_err(|source| ClientError::Local {
            path: std::env::temp_dir(),
            source,
        })?;
        let mut omitted = Vec::new();
        loop {
            // The server hashes the files it has no digest for before it
            // sends their entries: a large file takes a while.
            match self.reply_within(self.timeout.max(MANIFEST_WAIT)).await? {
                Message::TreeEntry(entry) => {
                    order
                        .admit(&entry)
                        .map_err(|e| ClientError::BadReply(e.to_string()))?;
                    if entry.kind == EntryKind::File && entry.digest.is_none() {
                        return Err(ClientError::BadReply(format!(
                            "tree entry {:?} came without its digest",
                            entry.path
                        )));
                    }
                    if order.counts().0 > MAX_TREE_ENTRIES {
                        return Err(ClientError::BadReply(format!(
                            "the tree has more than {MAX_TREE_ENTRIES} entries"
                        )));
                    }
                    let entry = match as_name {
                        None => entry,
                        Some(name) if order.counts().0 == 1 && entry.kind == EntryKind::File => {
                            TreeEntry {
                                path: name.to_owned(),
                                ..entry
                            }
                        }
                        Some(_) => {
                            return Err(ClientError::BadReply(
                                "sent a tree where one file was asked for".to_owned(),
                            ))
                        }
                    };
                    spool.push(entry).map_err(|source| ClientError::Local {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                }
                Message::Omitted { reason, count } => omitted.push((reason, count)),
                Message::TreeEnd { entries, bytes } => {
                    order
                        .finish(entries, bytes)
                        .map_err(|e| ClientError::BadReply(e.to_string()))?;
                    return Ok((spool, entries, omitted));
                }
                other => return Err(unexpected(other, "a tree entry")),
            }
        }
    }

    /// Tells the server which entries it need not send: runs of the
    /// entries not `taken`; and from where to send those it holds
    /// `partials` of that prove anything.
    async fn send_skips(
        &mut self,
        taken: &[bool],
        partials: &[(u64, Partial)],
    ) -> Result<(), ClientError> {
        let mut runs = 0u64;
        let mut start = None;
        for (index, &is_taken) in taken.iter().chain([&true]).enumerate() {
            match (start, is_taken) {
                (None, false) => start = Some(index),
                (Some(first), true) => {
                    let (first, count) = (first as u64, (index - first) as u64);
                    self.conn.queue(&Message::Skip { first, count })?;
                    runs += 1;
                    start = None;
                }
                _ => {}
            }
        }
        for (index, partial) in partials {
            let prefix = partial.prefix();
            if prefix.len > 0 {
                self.conn.queue(&Message::Held {
                    index: *index,
                    prefix,
                })?;
                runs += 1;
            }
        }
        self.conn.queue(&Message::TreeEnd {
            entries: runs,
            bytes: 0,
        })?;
        self.conn.flush().await?;
        Ok(())
    }

    /// Waits for the end of a tree of which `files` were to come.
    async fn receive_tree_done(&mut self, files: u64) -> Result<(), ClientError> {
        match self.reply().await? {
            Message::TreeDone { files: sent, .. } if sent == files => Ok(()),
            other => Err(unexpected(other, "the end of the tree")),
        }
    }
}

/// What the client takes of a manifest.
struct Plan {
    /// A flag per entry: taken (a directory to make, a file to fetch).
    taken: Vec<bool>,
    /// The files taken, and the bytes to come of them.
    files: u64,
    bytes: u64,
    conflicts: Conflicts,
    /// The partials an earlier try left of files taken, by manifest
    /// index, at most [`MAX_HELD`]: offered to the server if they prove
    /// anything, and received into either way.
    partials: Vec<(u64, Partial)>,
}

/// What a manifest is planned against.
struct Target {
    /// The target, or the hidden directory a new tree goes on from; none
    /// for a new tree from the start.
    dir: Option<rustix::fd::OwnedFd>,
    replace: bool,
    /// `dir` is a new tree's hidden directory, kept by an earlier try.
    resumed: bool,
    /// Whether partials of files are offered to go on from: the server
    /// can resume, and no restart was asked for (else they are
    /// discarded as their files come).
    offers: bool,
}

/// Decides, for each of the `entries` of `spool`, whether it is taken,
/// skipped or in the way, against `on`.
fn plan(
    spool: &mut SpoolReader,
    entries: u64,
    on: Target,
    target: &Path,
) -> Result<Plan, ClientError> {
    let mut planner = Planner::new(on.dir, on.replace, on.resumed);
    let mut plan = Plan {
        // Bounded: the manifest had at most MAX_TREE_ENTRIES.
        taken: vec![false; usize::try_from(entries).unwrap_or(0)],
        files: 0,
        bytes: 0,
        conflicts: Conflicts {
            first: Vec::new(),
            count: 0,
        },
        partials: Vec::new(),
    };
    let mut index = 0;
    let spool_failed = |source| ClientError::Local {
        path: target.to_owned(),
        source,
    };
    while let Some(entry) = spool.next_entry().map_err(spool_failed)? {
        match planner
            .decide(&entry)
            .map_err(|e| local_at(target, &entry, e))?
        {
            Decision::Take => {
                if let Some(slot) = plan.taken.get_mut(index) {
                    *slot = true;
                }
                if entry.kind == EntryKind::File {
                    plan.files += 1;
                    plan.bytes += entry.size;
                }
                if entry.kind == EntryKind::File && on.offers && plan.partials.len() < MAX_HELD {
                    let partial = planner
                        .partial(&entry)
                        .map_err(|e| local_at(target, &entry, e))?;
                    if let Some(partial) = partial {
                        plan.bytes -= partial.prefix().len;
                        plan.partials.push((index as u64, partial));
                    }
                }
            }
            Decision::Skip => {}
            Decision::Conflict(why) => {
                plan.conflicts.count += 1;
                if plan.conflicts.first.len() < CONFLICTS_SHOWN {
                    let local = target.join(&entry.path);
                    plan.conflicts.first.push(format!("{local:?} {why}"));
                }
            }
        }
        index += 1;
    }
    Ok(plan)
}

/// The second pass in progress: the manifest read alongside the bodies,
/// and where they are written.
struct Receiving<'a> {
    /// The partials of files to come, by manifest index.
    partials: std::collections::BTreeMap<u64, Partial>,
    spool: SpoolReader,
    writer: TreeWriter,
    taken: Vec<bool>,
    /// The index of the next manifest entry.
    index: usize,
    target: &'a Path,
    got: TreeGot,
}

impl Receiving<'_> {
    /// Counts a file of `size` bytes that took its place, for the report
    /// and the bar.
    fn landed(&mut self, file: &TreeEntry, moved: u64, progress: &mut dyn Progress) {
        progress.file_done(&TreeFile {
            path: &file.path,
            size: file.size,
            moved,
        });
        self.got.files += 1;
        self.got.bytes += moved;
    }

    /// The manifest's next file taken, which `entry` must be, making the
    /// directories before it; the file skipped on the way are counted.
    fn next_file(
        &mut self,
        entry: &TreeEntry,
        progress: &mut dyn Progress,
    ) -> Result<TreeEntry, ClientError> {
        let expected = loop {
            let Some(next) = self.next_entry()? else {
                return Err(not_in_manifest(entry));
            };
            if let Some(file) = self.take(next, progress)? {
                break file;
            }
        };
        if entry.path != expected.path || entry.kind != EntryKind::File {
            // A later file of the manifest: the server's walk no longer
            // finds those before it.
            if entry.kind == EntryKind::File && self.is_file_ahead(&entry.path)? {
                return Err(ClientError::FileChanged(expected.path));
            }
            return Err(not_in_manifest(entry));
        }
        if (entry.size, entry.mode, entry.modified)
            != (expected.size, expected.mode, expected.modified)
        {
            return Err(ClientError::FileChanged(expected.path));
        }
        Ok(expected)
    }

    /// Checks the server's counts, makes the directories after the last
    /// body, and gives the tree its names.
    fn finish(
        mut self,
        (files, skipped, bytes): (u64, u64, u64),
        progress: &mut dyn Progress,
    ) -> Result<TreeGot, ClientError> {
        while let Some(next) = self.next_entry()? {
            if let Some(file) = self.take(next, progress)? {
                return Err(ClientError::BadReply(format!(
                    "the tree ended without {:?}",
                    file.path
                )));
            }
        }
        let got = (self.got.files, self.got.skipped, self.got.bytes);
        if (files, skipped, bytes) != got {
            return Err(ClientError::BadReply(format!(
                "the tree's end counts {files} files, {skipped} skipped, {bytes} bytes, but \
                 {} files of {} bytes came and {} were skipped",
                got.0, got.2, got.1
            )));
        }
        let target = self.target;
        self.writer.finish().map_err(|source| ClientError::Local {
            path: target.to_owned(),
            source,
        })?;
        Ok(self.got)
    }

    /// Makes the directory `next`, or counts it skipped, or gives back the
    /// file taken.
    fn take(
        &mut self,
        next: TreeEntry,
        progress: &mut dyn Progress,
    ) -> Result<Option<TreeEntry>, ClientError> {
        let is_taken = self.taken.get(self.index).copied().unwrap_or(false);
        self.index += 1;
        match next.kind {
            EntryKind::Directory => {
                self.writer
                    .directory(&next)
                    .map_err(|e| local_at(self.target, &next, e))?;
                Ok(None)
            }
            EntryKind::File | EntryKind::Other if is_taken => Ok(Some(next)),
            EntryKind::File | EntryKind::Other => {
                progress.file_skipped(&next.path, next.size);
                self.got.skipped += 1;
                Ok(None)
            }
        }
    }

    /// Whether `path` is a file further on in the manifest; reads the
    /// manifest on to there, or to its end.
    fn is_file_ahead(&mut self, path: &str) -> Result<bool, ClientError> {
        while let Some(next) = self.next_entry()? {
            if next.path == path {
                return Ok(next.kind == EntryKind::File);
            }
        }
        Ok(false)
    }

    fn next_entry(&mut self) -> Result<Option<TreeEntry>, ClientError> {
        let target = self.target;
        self.spool
            .next_entry()
            .map_err(|source| ClientError::Local {
                path: target.to_owned(),
                source,
            })
    }
}

/// A local failure at `entry` of the tree going to `target`.
fn local_at(target: &Path, entry: &TreeEntry, source: io::Error) -> ClientError {
    let path: PathBuf = target.join(&entry.path);
    match source.kind() {
        io::ErrorKind::AlreadyExists => ClientError::LocalExists(path),
        _ => ClientError::Local { path, source },
    }
}

/// The server sent a body the manifest did not announce, or not there.
fn not_in_manifest(entry: &TreeEntry) -> ClientError {
    ClientError::BadReply(format!(
        "sent a body for {:?}, which is not the manifest's next file",
        entry.path
    ))
}

/// Refuses a tree of `bytes` that the disk holding `target` (or, for a
/// new tree, the nearest directory above it) has no room for, before any
/// body: the server's check of an upload, made here for a download.
fn check_room(target: &Path, bytes: u64) -> io::Result<()> {
    let found = target
        .ancestors()
        .find(|dir| dir.as_os_str().is_empty() || dir.exists());
    let Some(existing) = found else {
        return Ok(());
    };
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    let Ok(fs) = rustix::fs::statvfs(existing) else {
        return Ok(()); // unknown; the writes will find out
    };
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    if bytes <= free {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::StorageFull,
        format!("not enough space on this disk: {bytes} bytes needed, {free} free"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_larger_than_the_free_space_is_refused_and_a_new_target_is_met_above() {
        let dir = tempfile::tempdir().unwrap();
        let new_tree = dir.path().join("not/yet/made");
        assert!(check_room(&new_tree, 0).is_ok());
        assert!(check_room(dir.path(), 1024).is_ok());
        let refused = check_room(&new_tree, u64::MAX).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::StorageFull);
        assert!(refused.to_string().contains("bytes needed"), "{refused}");
        // A relative target with no directory of its own is met in ".".
        assert!(check_room(Path::new("relative-new"), u64::MAX).is_err());
    }
}
