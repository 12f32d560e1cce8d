//! Writing a tree a client puts (PROTOCOL.md §5.10): what each entry of its
//! manifest meets on the server, then the entries themselves.
//!
//! A tree whose target does not exist is built in a hidden staging
//! directory and takes its name by one never-replacing rename at the end,
//! so it appears whole or not at all. The staging directory is kept in the
//! partials directory, named after the tree's owner and target: a try cut
//! off leaves there what it verified, and the next try of the same tree
//! by the same owner builds on it (its files are candidates for skipping,
//! as a merge's are; anything in it may be replaced, and what the manifest
//! does not name is removed before any body), so a tree goes on from
//! where it was cut. A file of more than a step is received into a
//! partial of the owner's, as a PutFrom's body is, so the file a cut fell
//! in goes on from its last step. A tree whose target is a directory is merged into
//! it, each file atomically. Either way files are
//! written to hidden temporary files, and take their names in batches: one
//! `syncfs` for the batch, then the renames, then the times and modes of
//! the directories whose contents are all in place (a new tree's top
//! last, just before its rename). Dropped before
//! [`TreeWrite::finish`], it removes its temporary files and the
//! directories it made (as far as they are empty); a new tree's staging
//! directory keeps the files verified, or goes if it has none.
//!
//! Memory stays bounded whatever the size of the tree: the candidates for
//! skipping wait in an unnamed temporary file, not in memory, and only the
//! chain of directories being written is held open.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::digest_cache::{self, Stamp};
use super::partials::{self, Owner};
use super::{check_free_space, classify, tree, MadeDirs, WriteFile};
use crate::partial::{Partial, Place};
use crate::protocol::{
    manifest_order, Digest, EntryKind, ErrorCode, Prefix, Refusal, RemoteName, TreeEntry, MAX_HELD,
    STEP,
};
use crate::staging::Staged;

/// Verified files waiting for their batch's sync: few enough that their
/// directory handles stay well within a process's descriptors.
const BATCH_FILES: usize = 1024;

/// Finished directories waiting for their times, before a batch is
/// committed even without files.
const BATCH_DIRS: usize = 1024;

/// Bytes read at a time when hashing a file already there.
const HASH_READ: usize = 256 * 1024;

/// What an entry of the manifest meets where it would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meets {
    /// Nothing in its way (or a directory where it is a directory, or a
    /// file it will replace).
    Free,
    /// A file of the same size: skipped if the content is the same too.
    SameSize,
    /// Something in its way: another kind, another size (unless
    /// replacing), a symlink, a name that leads outside.
    Conflict,
}

/// A file that [`crate::store::TreeWrite::survey`] found with the same
/// size, read back in manifest order once the client's digests come.
#[derive(Debug)]
pub struct Candidate {
    pub index: u64,
    pub path: String,
    /// What the server holds under that name.
    pub digest: Digest,
}

/// A tree being written.
pub struct TreeWrite {
    /// Where entry paths are resolved: the target of a merge, or the
    /// staging directory of a new tree once [`TreeWrite::start`] made it
    /// (or [`LocalStore::open_tree`] found it kept).
    base: Option<Dir>,
    replace: bool,
    /// `base` is a new tree's staging directory kept by an earlier try:
    /// anything in it may be replaced, and what the manifest does not
    /// name is removed before any body.
    resumed: bool,
    /// The manifest's entries, kind and path, written as they are
    /// surveyed, for a resumed tree only.
    manifest: Option<BufWriter<File>>,
    /// Whose tree this is, where it goes, and the store's root: the
    /// partials of its large files are found by them.
    owner: Owner,
    target: Option<RemoteName>,
    root: Dir,
    /// Discard what earlier tries kept rather than go on from it.
    restart: bool,
    /// The partials an earlier try left of files of the manifest, proving
    /// a prefix: manifest index, path, partial; in manifest order, at most
    /// [`MAX_HELD`].
    held: Vec<(u64, String, Partial)>,
    /// Where a new tree goes; `None` for a merge.
    new: Option<NewTree>,
    /// Candidates of the survey, written as they are found.
    spool: Option<BufWriter<File>>,
    /// The same, being read back.
    unspool: Option<BufReader<File>>,
    /// The directories of the entry being written: path and handle.
    chain: Vec<(String, Dir)>,
    /// Directories left by the chain, waiting for their times and modes
    /// until their files are in place.
    finished: Vec<FinishedDir>,
    /// Verified files waiting for the batch's sync.
    batch: Vec<Staged>,
    /// The last file received: a descriptor of the tree's filesystem to
    /// sync it by where its directories cannot be opened for reading.
    last_file: Option<File>,
    /// Directories a merge made, in the order made.
    made: Vec<String>,
    /// Parents of the target made for a new tree; declared last, so they
    /// go after what is in them.
    made_parents: Option<MadeDirs>,
    /// Set once [`TreeWrite::finish`] or [`TreeWrite::discard`] began:
    /// the staging directory is no longer worth keeping.
    finishing: bool,
    done: bool,
}

/// Where a new tree is built and what it becomes.
struct NewTree {
    /// The store's root, from which the parent is resolved.
    root: Dir,
    /// The target's parent, `None` for the root; made if missing.
    parent_path: Option<String>,
    /// Its handle, once it exists.
    parent: Option<Dir>,
    name: String,
    /// The name of its staging directory in the partials directory.
    key: String,
    staging: Option<Staging>,
    /// The mode and time the tree's top takes once all is in it.
    top: Option<(u32, i64)>,
}

/// Where a new tree is built.
struct Staging {
    /// The directory holding it: the partials directory, or the target's
    /// parent where the partials directory is on another filesystem.
    holder: Dir,
    name: String,
    /// The lock of a staging directory in the partials directory, which
    /// is kept for the next try if this one is cut off; `None` for one
    /// beside the target, which is not.
    lock: Option<OwnedFd>,
}

struct FinishedDir {
    path: String,
    mode: u32,
    modified: i64,
    made: bool,
}

/// A file of the tree being received: written to a temporary file, then
/// handed back to [`TreeWrite::received`].
pub struct TreeFile {
    staged: Staged,
    mode: u32,
    modified: i64,
}

impl super::LocalStore {
    /// Opens the tree `target` (`None`: the root) for a PutTree: a
    /// directory is merged into, keeping its own mode and time; a missing
    /// name becomes a new tree, which takes `top`'s mode and time at the
    /// end, if given; anything else is refused. Makes nothing yet.
    ///
    /// A new tree goes on from the staging directory an earlier try of
    /// `owner`'s at the same target kept, unless `restart` (which
    /// discards it); one that another connection is building is `busy`.
    pub fn open_tree(
        &self,
        target: Option<&RemoteName>,
        replace: bool,
        top: Option<(u32, i64)>,
        owner: &Owner,
        restart: bool,
    ) -> Result<TreeWrite, Refusal> {
        let not_a_directory = || {
            Refusal::new(
                ErrorCode::NotADirectory,
                "the target of the tree is not a directory",
            )
        };
        let mut tree = TreeWrite {
            base: None,
            replace,
            resumed: false,
            manifest: None,
            owner: owner.clone(),
            target: target.cloned(),
            root: self.dir.try_clone().map_err(classify)?,
            restart,
            held: Vec::new(),
            new: None,
            spool: None,
            unspool: None,
            chain: Vec::new(),
            finished: Vec::new(),
            batch: Vec::new(),
            last_file: None,
            made: Vec::new(),
            made_parents: None,
            finishing: false,
            done: false,
        };
        let Some(target) = target else {
            tree.base = Some(self.dir.try_clone().map_err(classify)?);
            return Ok(tree);
        };
        match self.dir.symlink_metadata(target.as_str()) {
            Ok(m) if m.is_dir() => {
                tree.base = Some(self.dir.open_dir(target.as_str()).map_err(classify)?);
            }
            Ok(_) => return Err(not_a_directory()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = partials::tree_key(owner, target);
                let kept = self.kept_staging(&key, target, restart)?;
                if let Some(kept) = &kept {
                    tree.base = Some(kept.holder.open_dir(&kept.name).map_err(classify)?);
                    tree.resumed = true;
                }
                tree.new = Some(NewTree {
                    root: self.dir.try_clone().map_err(classify)?,
                    parent_path: target.parent().map(str::to_owned),
                    parent: None,
                    name: target.file_name().to_owned(),
                    key,
                    staging: kept,
                    top,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Err(not_a_directory()),
            Err(e) => return Err(classify(e)),
        }
        Ok(tree)
    }

    /// The staging directory `key` an earlier try kept, locked; `None` if
    /// there is none, or if `restart` and it was removed.
    fn kept_staging(
        &self,
        key: &str,
        target: &RemoteName,
        restart: bool,
    ) -> Result<Option<Staging>, Refusal> {
        let holder = match self.dir.open_dir(partials::PARTIALS_DIR) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            opened => opened.map_err(classify)?,
        };
        let lock = match partials::lock_tree(&holder, key) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(Refusal::new(
                    ErrorCode::Busy,
                    format!(
                        "another upload of the tree {:?} is in progress",
                        target.as_str()
                    ),
                ))
            }
            Err(e) => return Err(classify(e)),
        };
        if restart {
            tree::remove(&holder, key)?;
            return Ok(None);
        }
        Ok(Some(Staging {
            holder,
            name: key.to_owned(),
            lock: Some(lock),
        }))
    }
}

impl TreeWrite {
    /// Whether the tree goes to a new name, built apart until it is whole.
    pub fn is_new(&self) -> bool {
        self.new.is_some()
    }

    /// What `entry`, the one at `index` of the manifest, meets where it
    /// would go. A file of the same size is remembered, with the server's
    /// digest of it, for [`TreeWrite::next_candidate`].
    pub fn survey(&mut self, index: u64, entry: &TreeEntry) -> Result<Meets, Refusal> {
        if self.resumed {
            self.spool_manifest(entry)?;
        }
        let meets = self.meets(index, entry)?;
        if meets == Meets::Free && entry.kind == EntryKind::File {
            self.hold_partial(index, entry)?;
        }
        Ok(meets)
    }

    /// What [`TreeWrite::survey`] says `entry` meets.
    fn meets(&mut self, index: u64, entry: &TreeEntry) -> Result<Meets, Refusal> {
        let Some(base) = &self.base else {
            return Ok(Meets::Free); // a new tree meets nothing
        };
        let metadata = match base.symlink_metadata(&entry.path) {
            Ok(metadata) => metadata,
            // Under a file the manifest has as a directory: that is the
            // conflict, counted once.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Meets::Free)
            }
            // A name leading outside the served directory, through a
            // symlink on the way.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && e.raw_os_error().is_none() => {
                return Ok(Meets::Conflict)
            }
            Err(e) => return Err(classify(e)),
        };
        Ok(match entry.kind {
            EntryKind::Directory if metadata.is_dir() => Meets::Free,
            EntryKind::File if metadata.is_file() && metadata.len() == entry.size => {
                let digest = digest_of(base, &entry.path)?;
                self.spool_candidate(index, &entry.path, &digest)?;
                Meets::SameSize
            }
            EntryKind::File if metadata.is_file() && self.replace => Meets::Free,
            // What an earlier try left in the tree's own staging directory
            // is replaced.
            _ if self.resumed => Meets::Free,
            _ => Meets::Conflict,
        })
    }

    /// Keeps the partial an earlier try of the owner's left of the file
    /// `entry`, at `index`, if it proves a prefix of the same source.
    fn hold_partial(&mut self, index: u64, entry: &TreeEntry) -> Result<(), Refusal> {
        if entry.size <= STEP || self.restart || self.held.len() == MAX_HELD {
            return Ok(());
        }
        let key = partials::partial_key(&self.owner, &self.full_name(entry)?);
        let has_record = match self.root.open_dir(partials::PARTIALS_DIR) {
            Ok(dir) => dir.symlink_metadata(format!("{key}.rec")).is_ok(),
            Err(_) => false,
        };
        if !has_record {
            return Ok(());
        }
        match self.open_partial(entry, false) {
            Ok(partial) if partial.prefix().len > 0 => {
                self.held.push((index, entry.path.clone(), partial));
                Ok(())
            }
            // Nothing proven: the body makes a partial of its own.
            Ok(_) => Ok(()),
            // Another upload has it: the body is met by `busy` if it
            // still does.
            Err(refusal) if refusal.code == ErrorCode::Busy => Ok(()),
            Err(refusal) => Err(refusal),
        }
    }

    /// The partials an earlier try left that prove a prefix: manifest
    /// index, path and prefix, in manifest order.
    pub fn held(&self) -> Vec<(u64, String, Prefix)> {
        self.held
            .iter()
            .map(|(index, path, partial)| (*index, path.clone(), partial.prefix()))
            .collect()
    }

    /// The name `entry` takes in the store.
    fn full_name(&self, entry: &TreeEntry) -> Result<RemoteName, Refusal> {
        let full = match &self.target {
            Some(target) => format!("{}/{}", target.as_str(), entry.path),
            None => entry.path.clone(),
        };
        Ok(RemoteName::parse(&full)?)
    }

    /// The owner's partial of the file `entry`, in the partials directory:
    /// the one there, proven, or a new one (the old discarded, with
    /// `restart`).
    fn open_partial(&self, entry: &TreeEntry, restart: bool) -> Result<Partial, Refusal> {
        let name = self.full_name(entry)?;
        let key = partials::partial_key(&self.owner, &name);
        let record_name = format!("{key}.rec");
        // The directory of the partials goes when its last partial does,
        // so it may go between its making and the partial's: made again.
        let mut attempts = 0;
        loop {
            let dir = partials::partials_dir(&self.root)?;
            let place = Place {
                dir: &dir,
                data_name: &key,
                record_name: &record_name,
                name: name.as_str(),
                source_size: entry.size,
                source_modified: entry.modified,
                tidy: Some((&self.root, partials::PARTIALS_DIR)),
            };
            match Partial::open(&place, restart) {
                Ok((partial, _)) => return Ok(partial),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(Refusal::new(
                        ErrorCode::Busy,
                        format!("another upload of {:?} is in progress", name.as_str()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
                Err(e) => return Err(classify(e)),
            }
        }
    }

    fn spool_manifest(&mut self, entry: &TreeEntry) -> Result<(), Refusal> {
        if self.manifest.is_none() {
            self.manifest = Some(BufWriter::new(tempfile::tempfile().map_err(classify)?));
        }
        let Some(manifest) = self.manifest.as_mut() else {
            return Ok(()); // just made
        };
        let len = u16::try_from(entry.path.len())
            .map_err(|_| Refusal::new(ErrorCode::BadName, "name too long"))?;
        let is_dir = u8::from(entry.kind == EntryKind::Directory);
        manifest.write_all(&[is_dir]).map_err(classify)?;
        manifest.write_all(&len.to_le_bytes()).map_err(classify)?;
        manifest.write_all(entry.path.as_bytes()).map_err(classify)
    }

    fn spool_candidate(&mut self, index: u64, path: &str, digest: &Digest) -> Result<(), Refusal> {
        if self.spool.is_none() {
            self.spool = Some(BufWriter::new(tempfile::tempfile().map_err(classify)?));
        }
        let Some(spool) = self.spool.as_mut() else {
            return Ok(()); // just made
        };
        let len = u16::try_from(path.len())
            .map_err(|_| Refusal::new(ErrorCode::BadName, "name too long"))?;
        spool.write_all(&index.to_le_bytes()).map_err(classify)?;
        spool.write_all(digest).map_err(classify)?;
        spool.write_all(&len.to_le_bytes()).map_err(classify)?;
        spool.write_all(path.as_bytes()).map_err(classify)
    }

    /// The next file the survey found with the same size, in manifest
    /// order; `None` after the last.
    pub fn next_candidate(&mut self) -> Result<Option<Candidate>, Refusal> {
        if let Some(spool) = self.spool.take() {
            let mut file = spool.into_inner().map_err(|e| classify(e.into_error()))?;
            file.rewind().map_err(classify)?;
            self.unspool = Some(BufReader::new(file));
        }
        let Some(unspool) = self.unspool.as_mut() else {
            return Ok(None);
        };
        let mut index = [0; 8];
        match unspool.read_exact(&mut index) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.unspool = None;
                return Ok(None);
            }
            Err(e) => return Err(classify(e)),
        }
        let mut digest = [0; 32];
        let mut len = [0; 2];
        unspool.read_exact(&mut digest).map_err(classify)?;
        unspool.read_exact(&mut len).map_err(classify)?;
        let mut path = vec![0; usize::from(u16::from_le_bytes(len))];
        unspool.read_exact(&mut path).map_err(classify)?;
        let path = String::from_utf8(path).map_err(|e| classify(io::Error::other(e)))?;
        Ok(Some(Candidate {
            index: u64::from_le_bytes(index),
            path,
            digest,
        }))
    }

    /// Refuses a tree of `bytes` the disk cannot hold.
    pub fn check_space(&self, bytes: u64) -> Result<(), Refusal> {
        let new_root = self.new.as_ref().map(|new| &new.root);
        match self.base.as_ref().or(new_root) {
            Some(dir) => check_free_space(dir, bytes),
            None => Ok(()),
        }
    }

    /// Makes what the tree needs before its first entry: a new tree's
    /// missing parents and its staging directory; from a kept staging
    /// directory, what the manifest does not name is removed first.
    pub fn start(&mut self) -> Result<(), Refusal> {
        let Some(new) = self.new.as_mut() else {
            return Ok(());
        };
        let mut made = MadeDirs::new(&new.root)?;
        let parent = match &new.parent_path {
            None => new.root.try_clone(),
            Some(path) => match new.root.open_dir(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    made.make_all(path).map_err(classify)?;
                    new.root.open_dir(path)
                }
                opened => opened,
            },
        }
        .map_err(classify)?;
        self.made_parents = Some(made);
        if new.staging.is_none() {
            let staging = make_staging(&new.root, &parent, &new.key)?;
            self.base = Some(staging.holder.open_dir(&staging.name).map_err(classify)?);
            new.staging = Some(staging);
        }
        new.parent = Some(parent);
        if let (Some(manifest), Some(base)) = (self.manifest.take(), &self.base) {
            let file = manifest
                .into_inner()
                .map_err(|e| classify(e.into_error()))?;
            prune(base, &mut ManifestReader::new(file)?)?;
        }
        Ok(())
    }

    /// Takes the next entry of the second pass: a directory is made (or
    /// found, in a merge); a file gets a hidden temporary file beside its
    /// name, to write its body to.
    pub fn enter(&mut self, entry: &TreeEntry) -> Result<Option<(TreeFile, WriteFile)>, Refusal> {
        let (parent_path, name) = split(&entry.path);
        // Leave the directories this entry is not in: their contents are
        // all here.
        while let Some((path, _)) = self.chain.last() {
            if path == parent_path {
                break;
            }
            self.chain.pop();
        }
        let parent = parent_in(&self.chain, self.base.as_ref(), entry)?;
        match entry.kind {
            EntryKind::Directory => {
                let made = match parent.create_dir(name) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        if !parent.symlink_metadata(name).is_ok_and(|m| m.is_dir()) {
                            return Err(Refusal::new(
                                ErrorCode::AlreadyExists,
                                format!(
                                    "{:?} is taken by something that is not a directory",
                                    entry.path
                                ),
                            ));
                        }
                        if self.resumed {
                            // An earlier try's, perhaps finished with a mode
                            // that keeps it from being written to: it takes
                            // its mode again once its contents are in.
                            let owner_only = Mode::from_raw_mode(0o700);
                            rustix::fs::chmodat(parent, name, owner_only, AtFlags::empty())
                                .map_err(|e| classify(e.into()))?;
                        }
                        self.resumed
                    }
                    Err(e) => return Err(classify(e)),
                };
                if made && !self.is_new() {
                    self.made.push(entry.path.clone());
                }
                let dir = parent.open_dir(name).map_err(classify)?;
                self.chain.push((entry.path.clone(), dir));
                self.finished.push(FinishedDir {
                    path: entry.path.clone(),
                    mode: entry.mode & 0o777,
                    modified: entry.modified,
                    made,
                });
                // A tree of many directories and few files still commits
                // as it goes, so the waiting directories stay few.
                if self.finished.len() >= BATCH_DIRS {
                    self.commit_batch()?;
                }
                Ok(None)
            }
            EntryKind::File | EntryKind::Other => {
                let dir = parent.try_clone().map_err(classify)?;
                let created = if self.replaces() {
                    Staged::create_replacing(dir, Path::new(name))
                } else {
                    Staged::create(dir, Path::new(name))
                };
                let (staged, file) = created.map_err(|e| taken_meanwhile(e, entry))?;
                let tree_file = TreeFile {
                    staged,
                    mode: entry.mode & 0o777,
                    modified: entry.modified,
                };
                Ok(Some((tree_file, WriteFile { file })))
            }
        }
    }

    /// Takes the next entry of the second pass, a file of more than a
    /// step: the partial to receive it into, in the partials directory so
    /// a cut keeps what came of it, and the prefix it proves already (the
    /// one `held` offered, or none for a new partial).
    pub fn enter_partial(&mut self, entry: &TreeEntry) -> Result<(Partial, Prefix), Refusal> {
        let (parent_path, _) = split(&entry.path);
        while self
            .chain
            .last()
            .is_some_and(|(path, _)| path != parent_path)
        {
            self.chain.pop();
        }
        parent_in(&self.chain, self.base.as_ref(), entry)?;
        // Those of entries passed over go: their files did not come.
        while self
            .held
            .first()
            .is_some_and(|(_, path, _)| manifest_order(path, &entry.path).is_lt())
        {
            self.held.remove(0);
        }
        if self
            .held
            .first()
            .is_some_and(|(_, path, _)| *path == entry.path)
        {
            let (_, _, partial) = self.held.remove(0);
            let prefix = partial.prefix();
            return Ok((partial, prefix));
        }
        Ok((self.open_partial(entry, true)?, Prefix::none()))
    }

    /// Takes a file whose body arrived whole and verified in `partial`:
    /// gives it its mode and time, remembers its digest, and gives it its
    /// name at once (the partial is synced first).
    pub fn received_partial(
        &mut self,
        partial: &Partial,
        entry: &TreeEntry,
        digest: &Digest,
    ) -> Result<(), Refusal> {
        settle_file(partial.file(), entry.mode & 0o777, entry.modified, digest)?;
        let parent = parent_in(&self.chain, self.base.as_ref(), entry)?;
        let name = Path::new(split(&entry.path).1);
        partial
            .commit(parent, name, self.replaces())
            .map_err(|e| taken_meanwhile(e, entry))
    }

    /// Takes a file whose body arrived whole and verified: gives it its
    /// mode and time, remembers its digest, and queues it for the batch.
    pub fn received(
        &mut self,
        tree_file: TreeFile,
        body: WriteFile,
        digest: &Digest,
    ) -> Result<(), Refusal> {
        let TreeFile {
            staged,
            mode,
            modified,
        } = tree_file;
        let stamp = settle_file(&body.file, mode, modified, digest)?;
        if stamp.is_some_and(|stamp| stamp.size() >= crate::staging::EARLY_WRITEBACK) {
            crate::staging::start_writeback(&body.file);
        }
        self.batch.push(staged);
        self.last_file = Some(body.file);
        if self.batch.len() >= BATCH_FILES || self.finished.len() >= BATCH_DIRS {
            self.commit_batch()?;
        }
        Ok(())
    }

    /// Takes the next entry of the second pass, a file whose body arrived
    /// whole and verified: writes it to a hidden temporary file beside its
    /// name and hands it on as [`TreeWrite::received`] does, in one step.
    pub fn write_whole(
        &mut self,
        entry: &TreeEntry,
        body: &[u8],
        digest: &Digest,
    ) -> Result<(), Refusal> {
        use std::os::unix::fs::FileExt;
        let Some((tree_file, write_file)) = self.enter(entry)? else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "tree entry {:?} came with a body but is no file",
                    entry.path
                ),
            ));
        };
        write_file.file.write_all_at(body, 0).map_err(classify)?;
        self.received(tree_file, write_file, digest)
    }

    /// Syncs the filesystem once, gives the batch's files their names, then
    /// sets the times and modes of the directories the chain has left.
    fn commit_batch(&mut self) -> Result<(), Refusal> {
        let base = self.base.as_ref().ok_or_else(not_started)?;
        if !self.batch.is_empty() {
            sync_filesystem(base, self.last_file.as_ref())?;
        }
        let replace = self.replaces();
        for staged in self.batch.drain(..) {
            staged.rename_synced(replace).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Refusal::new(
                    ErrorCode::AlreadyExists,
                    "a name of the tree was taken meanwhile; ferry never overwrites",
                ),
                _ => classify(e),
            })?;
        }
        // Only directories no longer in the chain are complete.
        let open: Vec<String> = self.chain.iter().map(|(path, _)| path.clone()).collect();
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .finished
            .drain(..)
            .partition(|dir| !open.contains(&dir.path));
        self.finished = waiting;
        // Deepest first: setting a directory's time must come after
        // anything is made in it.
        for dir in done.iter().rev() {
            set_dir_times(base, dir)?;
        }
        Ok(())
    }

    /// Completes the tree: the last batch, a last sync, and for a new tree
    /// the rename that gives it its name.
    pub fn finish(mut self) -> Result<(), Refusal> {
        // Whatever fails from here, the staging directory is not worth
        // keeping: its contents are all there.
        self.finishing = true;
        self.chain.clear();
        self.commit_batch()?;
        // Last, as anything made in it would move its time again.
        if let Some(NewTree {
            staging: Some(staging),
            top: Some((mode, modified)),
            ..
        }) = &self.new
        {
            let top = FinishedDir {
                path: staging.name.clone(),
                mode: mode & 0o777,
                modified: *modified,
                made: true,
            };
            set_dir_times(&staging.holder, &top)?;
        }
        let base = self.base.as_ref().ok_or_else(not_started)?;
        sync_filesystem(base, self.last_file.as_ref())?;
        if let Some(new) = &self.new {
            let (Some(parent), Some(staging)) = (&new.parent, &new.staging) else {
                return Err(not_started());
            };
            tree::rename_no_replace(&staging.holder, &staging.name, parent, &new.name)?;
            sync_filesystem(parent, self.last_file.as_ref())?;
            if staging.lock.is_some() {
                // The partials directory goes with the last thing in it.
                let _ = new.root.remove_dir(partials::PARTIALS_DIR);
            }
        }
        self.done = true;
        if let Some(made) = self.made_parents.as_mut() {
            made.paths.clear();
        }
        Ok(())
    }

    /// Ends a tree cut off before its end: a new tree's staging directory
    /// that can be kept keeps every file verified (the last batch takes
    /// its names, after a sync), for the next try; anything else is
    /// undone, as a drop does.
    pub fn cut_off(mut self) {
        if !self.keeps_staging() {
            return;
        }
        self.chain.clear();
        if self.commit_batch().is_err() {
            return;
        }
        if let Some(NewTree {
            staging: Some(staging),
            ..
        }) = &self.new
        {
            // The time-to-live of a kept tree runs from its last try.
            let now = Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                },
                last_modification: Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                },
            };
            let _ = rustix::fs::utimensat(
                &staging.holder,
                staging.name.as_str(),
                &now,
                AtFlags::empty(),
            );
        }
    }

    /// Ends a tree that failed: nothing of it is kept, not even a new
    /// tree's staging directory.
    pub fn discard(mut self) {
        self.finishing = true;
    }

    /// Whether a file may replace what is in its way: with the `replace`
    /// flag, or in a kept staging directory.
    pub fn replaces(&self) -> bool {
        self.replace || self.resumed
    }

    /// Whether the tree is new, with a staging directory to keep for the
    /// next try if this one is cut off.
    fn keeps_staging(&self) -> bool {
        !self.finishing
            && self
                .new
                .as_ref()
                .and_then(|new| new.staging.as_ref())
                .is_some_and(|staging| staging.lock.is_some())
    }
}

impl Drop for TreeWrite {
    /// Undoes an unfinished tree: temporary files first, then the
    /// directories made for it. A new tree's staging directory that can
    /// be kept keeps the files that took their names in it, unless it has
    /// none.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.batch.clear();
        self.chain.clear();
        if let Some(base) = &self.base {
            for path in self.made.iter().rev() {
                let _ = base.remove_dir(path);
            }
        }
        let keep = self.keeps_staging();
        if let Some(NewTree {
            root,
            staging: Some(staging),
            top,
            ..
        }) = &self.new
        {
            if keep && staging.holder.remove_dir(&staging.name).is_err() {
                return; // not empty: kept
            }
            if top.is_some() {
                // The top may have taken a mode that keeps even its owner
                // from emptying it.
                let owner_only = Mode::from_raw_mode(0o700);
                let _ = rustix::fs::chmodat(
                    &staging.holder,
                    staging.name.as_str(),
                    owner_only,
                    AtFlags::empty(),
                );
            }
            match tree::remove(&staging.holder, &staging.name) {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => {
                    tracing::warn!(staging = %staging.name, error = %e.message, "cannot remove a tree's staging directory");
                }
            }
            if staging.lock.is_some() {
                // The partials directory goes with the last thing in it.
                let _ = root.remove_dir(partials::PARTIALS_DIR);
            }
        }
    }
}

/// Makes a new tree's staging directory, named `key`, locked, in the
/// partials directory, to be kept if the tree is cut off; or, where that
/// directory is on another filesystem than the target's `parent` (a
/// rename cannot cross), a hidden one beside the target, not kept.
fn make_staging(root: &Dir, parent: &Dir, key: &str) -> Result<Staging, Refusal> {
    // The partials directory goes with its last partial, so it may go
    // between its making and the staging directory's: made again.
    for _ in 0..3 {
        let holder = partials::partials_dir(root)?;
        if !same_filesystem(&holder, parent)? {
            break;
        }
        match holder.create_dir(key) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // Another try of the same tree made it since this one looked.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Refusal::new(
                    ErrorCode::Busy,
                    "another upload of the tree is in progress",
                ))
            }
            Err(e) => return Err(classify(e)),
        }
        let lock = partials::lock_tree(&holder, key).map_err(classify)?;
        return Ok(Staging {
            holder,
            name: key.to_owned(),
            lock: Some(lock),
        });
    }
    let name = crate::staging::make_staging_dir(parent).map_err(classify)?;
    Ok(Staging {
        holder: parent.try_clone().map_err(classify)?,
        name,
        lock: None,
    })
}

fn same_filesystem(a: &Dir, b: &Dir) -> Result<bool, Refusal> {
    let device = |dir: &Dir| {
        rustix::fs::fstat(dir)
            .map(|stat| stat.st_dev)
            .map_err(|e| classify(e.into()))
    };
    Ok(device(a)? == device(b)?)
}

/// The manifest's entries as [`TreeWrite::survey`] spooled them, read
/// back in order.
struct ManifestReader {
    file: BufReader<File>,
    /// The next entry, read ahead: whether it is a directory, its path.
    next: Option<(bool, String)>,
}

impl ManifestReader {
    fn new(mut file: File) -> Result<ManifestReader, Refusal> {
        file.rewind().map_err(classify)?;
        let mut reader = ManifestReader {
            file: BufReader::new(file),
            next: None,
        };
        reader.advance()?;
        Ok(reader)
    }

    fn advance(&mut self) -> Result<(), Refusal> {
        let mut is_dir = [0; 1];
        match self.file.read_exact(&mut is_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.next = None;
                return Ok(());
            }
            Err(e) => return Err(classify(e)),
        }
        let mut len = [0; 2];
        self.file.read_exact(&mut len).map_err(classify)?;
        let mut path = vec![0; usize::from(u16::from_le_bytes(len))];
        self.file.read_exact(&mut path).map_err(classify)?;
        let path = String::from_utf8(path).map_err(|e| classify(io::Error::other(e)))?;
        self.next = Some((is_dir[0] == 1, path));
        Ok(())
    }

    /// Passes over the entries before `path` in manifest order; whether
    /// the next is `path`, and a directory.
    fn find(&mut self, path: &str) -> Result<Option<bool>, Refusal> {
        while let Some((is_dir, next)) = &self.next {
            match manifest_order(next, path) {
                std::cmp::Ordering::Less => self.advance()?,
                std::cmp::Ordering::Equal => return Ok(Some(*is_dir)),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }
}

/// Removes from a kept staging directory, `base`, what the manifest does
/// not name (or names as another kind), so the tree is the manifest's
/// whatever an earlier try left. Walks `base` in manifest order beside
/// the spooled manifest.
fn prune(base: &Dir, manifest: &mut ManifestReader) -> Result<(), Refusal> {
    prune_under(base, "", manifest)
}

fn prune_under(dir: &Dir, prefix: &str, manifest: &mut ManifestReader) -> Result<(), Refusal> {
    let mut names = Vec::new();
    for entry in dir.entries().map_err(classify)? {
        names.push(entry.map_err(classify)?.file_name());
    }
    names.sort_unstable();
    for name in names {
        let Some(utf8) = name.to_str() else {
            // No manifest names it.
            tree::remove(dir, &name.to_string_lossy())?;
            continue;
        };
        let path = format!("{prefix}{utf8}");
        let metadata = dir.symlink_metadata(utf8).map_err(classify)?;
        match manifest.find(&path)? {
            Some(true) if metadata.is_dir() => {
                let below = dir.open_dir(utf8).map_err(classify)?;
                prune_under(&below, &format!("{path}/"), manifest)?;
            }
            Some(false) if metadata.is_file() => {}
            _ => {
                tree::remove(dir, utf8)?;
            }
        }
    }
    Ok(())
}

/// Sets a finished directory's time, and its mode if the tree made it.
fn set_dir_times(base: &Dir, dir: &FinishedDir) -> Result<(), Refusal> {
    let (parent, name) = match dir.path.rsplit_once('/') {
        Some((parent, name)) => (Some(base.open_dir(parent).map_err(classify)?), name),
        None => (None, dir.path.as_str()),
    };
    let parent = parent.as_ref().unwrap_or(base);
    if dir.made {
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(dir.mode),
            AtFlags::empty(),
        )
        .map_err(|e| classify(e.into()))?;
    }
    let time = timespec(dir.modified);
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| classify(e.into()))
}

/// Syncs the filesystem `dir` is on: one `syncfs` for everything a
/// batch wrote. cap-std's handles are `O_PATH`, which cannot be synced, so
/// the directory is opened for reading, or, where that is not allowed (a
/// drop box), `file`, on the same filesystem, is used.
fn sync_filesystem(dir: &Dir, file: Option<&File>) -> Result<(), Refusal> {
    let readable = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let synced = match rustix::fs::openat(dir, ".", readable, Mode::empty()) {
        Ok(opened) => rustix::fs::syncfs(opened),
        Err(Errno::ACCESS) => match file {
            Some(file) => rustix::fs::syncfs(file),
            None => Ok(()), // nothing was written
        },
        Err(e) => Err(e),
    };
    synced.map_err(|e| classify(e.into()))
}

/// The directory the entry of the second pass just entered is in: the
/// last of `chain`, the directories entered, or `base` at the top.
fn parent_in<'a>(
    chain: &'a [(String, Dir)],
    base: Option<&'a Dir>,
    entry: &TreeEntry,
) -> Result<&'a Dir, Refusal> {
    match chain.last() {
        Some((_, dir)) => Ok(dir),
        None if !entry.path.contains('/') => base.ok_or_else(not_started),
        // The order check of the manifest rules this out.
        None => Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "tree entry {:?} is not inside a directory sent before it",
                entry.path
            ),
        )),
    }
}

/// Gives a verified file of the tree its mode and time and remembers its
/// digest; its stamp then, if it could be taken.
fn settle_file(
    file: &File,
    mode: u32,
    modified: i64,
    digest: &Digest,
) -> Result<Option<Stamp>, Refusal> {
    rustix::fs::fchmod(file, Mode::from_raw_mode(mode)).map_err(|e| classify(e.into()))?;
    let time = timespec(modified);
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::futimens(file, &times).map_err(|e| classify(e.into()))?;
    let stamp = Stamp::of(file).ok();
    if let Some(stamp) = &stamp {
        digest_cache::remember(file, stamp, digest);
    }
    Ok(stamp)
}

/// The refusal for a name of the tree `entry` that was taken meanwhile,
/// or for another failure `error` to give it its name.
fn taken_meanwhile(error: io::Error, entry: &TreeEntry) -> Refusal {
    match error.kind() {
        io::ErrorKind::AlreadyExists => Refusal::new(
            ErrorCode::AlreadyExists,
            format!(
                "{:?} was taken meanwhile; ferry never overwrites",
                entry.path
            ),
        ),
        _ => classify(error),
    }
}

/// The directory part of a manifest path (`""` for the top) and its
/// last component.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn timespec(seconds: i64) -> Timespec {
    Timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    }
}

fn not_started() -> Refusal {
    Refusal::new(ErrorCode::Io, "the tree was not started")
}

/// The BLAKE3 digest of the file at `path` beneath `base`: the cached one
/// if it is still valid, otherwise computed, and then cached.
fn digest_of(base: &Dir, path: &str) -> Result<Digest, Refusal> {
    let nonblocking = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let file = base
        .open_with(
            path,
            OpenOptions::new().read(true).custom_flags(nonblocking),
        )
        .map_err(classify)?
        .into_std();
    let stamp = Stamp::of(&file).map_err(classify)?;
    if let Some(digest) = digest_cache::lookup(&file, &stamp) {
        return Ok(digest);
    }
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0; HASH_READ];
    let mut reader = &file;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(buffer.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify(e)),
        }
    }
    let digest = *hasher.finalize().as_bytes();
    if stamp.is_settled() && Stamp::of(&file).is_ok_and(|now| now == stamp) {
        digest_cache::remember(&file, &stamp, &digest);
    }
    Ok(digest)
}
