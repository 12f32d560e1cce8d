//! The local side of a tree download: deciding what to take, and writing
//! it beneath the target without ever leaving it.
//!
//! Both walk a manifest in its order (PROTOCOL.md §5.10) holding the chain
//! of directories the current entry is in, each opened from the one above
//! it without following a symlink: a name is only ever looked up in a
//! directory handle, one component at a time, so no symlink, planted
//! before or during the transfer, leads a write outside the target.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::resume::{partial_name, PARTIAL_SUFFIX};
use super::spool::SpoolReader;
use crate::partial::{Partial, Place};
use crate::protocol::{EntryKind, TreeEntry, STEP, TEMP_PREFIX};

/// Distinguishes the temporary names of one process.
static NEXT_TEMP_ID: AtomicU64 = AtomicU64::new(0);

/// Files written and verified before they take their names in one go:
/// one filesystem sync, then the renames.
const BATCH_FILES: usize = 256;

/// Bytes written before a batch takes its names, whatever its length.
const BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// What to do with one entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Make the directory, or fetch the file.
    Take,
    /// A file that is here already with the same content.
    Skip,
    /// Something else is in the way; says what.
    Conflict(&'static str),
}

/// Decides, entry by entry, what a manifest means for the local target.
pub(super) struct Planner {
    /// The target, or the hidden directory a new tree goes on from;
    /// `None` where neither exists yet.
    top: Option<OwnedDir>,
    /// The directories of the current entry's chain: `None` for one that
    /// does not exist here (everything in it is new).
    chain: Vec<Option<OwnedDir>>,
    replace: bool,
    /// `top` is a new tree's hidden directory, kept by an earlier try:
    /// whatever is in it is the transfer's own, taken again where it is
    /// not the same, never a conflict.
    resumed: bool,
}

/// A directory opened for reading (so it can be synced, and its mode and
/// times set), never through a symlink.
type OwnedDir = rustix::fd::OwnedFd;

impl Planner {
    /// Plans for the target `top`, which exists or not (`None`); or, if
    /// `resumed`, for the hidden directory an earlier try of a new tree
    /// kept.
    pub fn new(top: Option<OwnedDir>, replace: bool, resumed: bool) -> Planner {
        Planner {
            top,
            chain: Vec::new(),
            replace,
            resumed,
        }
    }

    /// The partial an earlier try left of `entry`, the file just decided
    /// on (and taken), proven as far as it can be; `None` if there is
    /// none. See [`open_partial`].
    pub fn partial(&self, entry: &TreeEntry) -> io::Result<Option<Partial>> {
        let (depth, name) = split(&entry.path);
        let parent = match depth {
            0 => self.top.as_ref(),
            _ => self.chain.last().and_then(Option::as_ref),
        };
        let Some(parent) = parent else {
            return Ok(None);
        };
        let record = format!("{}.rec", partial_name(name));
        match rustix::fs::statat(parent, record.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => open_partial(parent, entry, false).map(Some),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What to do with `entry`, the next of the manifest.
    pub fn decide(&mut self, entry: &TreeEntry) -> io::Result<Decision> {
        let (depth, name) = split(&entry.path);
        self.chain.truncate(depth);
        let parent = match self.chain.last() {
            Some(parent) => parent.as_ref(),
            None => self.top.as_ref(),
        };
        let Some(parent) = parent else {
            if entry.kind == EntryKind::Directory {
                self.chain.push(None);
            }
            return Ok(Decision::Take);
        };
        let here = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => FileType::from_raw_mode(stat.st_mode),
            Err(Errno::NOENT) => {
                if entry.kind == EntryKind::Directory {
                    self.chain.push(None);
                }
                return Ok(Decision::Take);
            }
            Err(e) => return Err(e.into()),
        };
        match (entry.kind, here) {
            (EntryKind::Directory, FileType::Directory) => {
                self.chain.push(Some(open_dir_nofollow(parent, name)?));
                Ok(Decision::Take)
            }
            (EntryKind::Directory, _) => {
                self.chain.push(None);
                if self.resumed {
                    Ok(Decision::Take)
                } else {
                    Ok(Decision::Conflict("is not a directory here"))
                }
            }
            (_, FileType::RegularFile) if is_same_file(parent, name, entry)? => Ok(Decision::Skip),
            // An earlier try's: taken again, and what is in the way goes
            // before any body (see `TreeWriter::prune`).
            _ if self.resumed => Ok(Decision::Take),
            (_, FileType::Directory) => Ok(Decision::Conflict("is a directory here")),
            (_, FileType::RegularFile) if self.replace => Ok(Decision::Take),
            (_, FileType::RegularFile) => Ok(Decision::Conflict("is here with other content")),
            _ if self.replace => Ok(Decision::Take),
            _ => Ok(Decision::Conflict("is a symlink or special file here")),
        }
    }
}

/// Whether the file `name` in `dir` has the size and digest of `entry`.
fn is_same_file(dir: &OwnedDir, name: &str, entry: &TreeEntry) -> io::Result<bool> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = File::from(rustix::fs::openat(dir, name, flags, Mode::empty())?);
    if file.metadata()?.len() != entry.size {
        return Ok(false);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader((&file).take(entry.size))?;
    Ok(Some(*hasher.finalize().as_bytes()) == entry.digest)
}

/// Writes the entries taken beneath the target: a new tree in a hidden
/// directory beside it, given its name at the end; a merge file by file.
/// Dropped before [`TreeWriter::finish`], it leaves nothing behind: no
/// temporary file, and nothing of a new tree.
pub(super) struct TreeWriter {
    /// Where the entries go: the target, or the new tree's hidden
    /// directory.
    top: OwnedDir,
    /// For a new tree: where it is built and the name it takes.
    new_tree: Option<NewTree>,
    /// The directories of the current entry's chain.
    chain: Vec<Level>,
    /// Files verified, waiting to take their names.
    pending: Vec<Pending>,
    pending_bytes: u64,
    /// The temporary file being written, if any.
    writing: Option<(OwnedDir, String)>,
    replace: bool,
}

/// A new tree being built.
struct NewTree {
    parent: OwnedDir,
    hidden: String,
    /// The hidden directory's path, to remove it whole on failure.
    hidden_path: PathBuf,
    name: String,
    /// The mode and time the top directory takes, once all is in it.
    attributes: Option<(u32, i64)>,
    /// The hidden directory, open and locked while this transfer has it.
    _lock: OwnedDir,
    /// Set once the tree took its name, or failed in a way that keeps
    /// nothing of it.
    done: bool,
}

/// The hidden directory a new tree is built in beside its target,
/// `.NAME.ferry-partial-tree`: kept if the download is cut off, so the
/// next download of it goes on from the files in it.
pub(super) struct KeptTree {
    parent: OwnedDir,
    hidden: String,
    hidden_path: PathBuf,
    name: String,
    dir: OwnedDir,
    /// Whether an earlier try left it.
    pub resumed: bool,
}

/// The suffix of a new tree's hidden directory.
const TREE_PARTIAL_SUFFIX: &str = ".ferry-partial-tree";

impl KeptTree {
    /// Opens and locks the hidden directory of a new tree that will take
    /// the name `target`: the one an earlier try left (discarded first
    /// with `restart`), or a new one.
    pub fn open(target: &Path, restart: bool) -> io::Result<KeptTree> {
        let name = target
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a usable name"))?;
        let parent_path = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parent = rustix::fs::open(parent_path, flags, Mode::empty())?;
        let hidden = format!(".{name}{TREE_PARTIAL_SUFFIX}");
        let hidden_path = parent_path.join(&hidden);
        let (mut resumed, mut discard) = (true, restart);
        let dir = loop {
            match open_dir_nofollow(&parent, &hidden) {
                Ok(dir) => {
                    lock(&dir, &hidden_path)?;
                    if !discard {
                        break dir;
                    }
                    // std's remove_dir_all never follows a symlink out.
                    std::fs::remove_dir_all(&hidden_path)?;
                    (resumed, discard) = (false, false);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match rustix::fs::mkdirat(&parent, hidden.as_str(), Mode::from_raw_mode(0o777))
                    {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    resumed = false;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(KeptTree {
            parent,
            hidden,
            hidden_path,
            name: name.to_owned(),
            dir,
            resumed,
        })
    }

    /// The hidden directory, for the planning of what to take.
    pub fn dir(&self) -> io::Result<OwnedDir> {
        Ok(rustix::io::dup(&self.dir)?)
    }
}

/// Locks the hidden directory `dir` of a new tree for this transfer.
fn lock(dir: &OwnedDir, path: &Path) -> io::Result<()> {
    match rustix::fs::flock(dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(Errno::WOULDBLOCK) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("another download is writing {}", path.display()),
        )),
        Err(e) => Err(e.into()),
    }
}

/// A directory of the chain.
struct Level {
    dir: OwnedDir,
    /// Mode and time to give it once its contents are in: only for
    /// directories this transfer made.
    attributes: Option<(u32, i64)>,
}

/// A verified file under its temporary name.
struct Pending {
    dir: OwnedDir,
    temp: String,
    name: String,
}

impl TreeWriter {
    /// Writes into the existing directory `top`, file by file.
    pub fn merge(top: OwnedDir, replace: bool) -> TreeWriter {
        TreeWriter {
            top,
            new_tree: None,
            chain: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            writing: None,
            replace,
        }
    }

    /// Builds a new tree in its hidden directory, `kept`, to take its
    /// name (which must not exist) at the end; with `attributes`, the
    /// tree's top directory takes that mode and time then. In a directory
    /// an earlier try left, whatever is in the way is replaced.
    pub fn new_tree(kept: KeptTree, attributes: Option<(u32, i64)>) -> io::Result<TreeWriter> {
        let KeptTree {
            parent,
            hidden,
            hidden_path,
            name,
            dir,
            resumed,
        } = kept;
        Ok(TreeWriter {
            top: rustix::io::dup(&dir)?,
            new_tree: Some(NewTree {
                parent,
                hidden,
                hidden_path,
                name,
                attributes,
                _lock: dir,
                done: false,
            }),
            chain: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            writing: None,
            replace: resumed,
        })
    }

    /// Removes from a new tree's hidden directory, which an earlier try
    /// left, whatever the manifest (`spool`, read from its start) does not
    /// name, or names as another kind: the tree that takes the name is
    /// then exactly the manifest. Walks the directory in manifest order
    /// beside the manifest.
    pub fn prune(&self, spool: &mut SpoolReader) -> io::Result<()> {
        let Some(tree) = &self.new_tree else {
            return Ok(());
        };
        let mut next = spool.next_entry()?;
        prune_under(&self.top, &tree.hidden_path, "", spool, &mut next)
    }

    /// Makes (or, merging, enters) the directory `entry`.
    pub fn directory(&mut self, entry: &TreeEntry) -> io::Result<()> {
        let (depth, name) = split(&entry.path);
        self.close_to(depth)?;
        let parent = self.current();
        let attributes = match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => Some((entry.mode, entry.modified)),
            Err(Errno::EXIST) if self.new_tree.is_none() => None,
            // An earlier try's, perhaps given a mode that keeps it from
            // being written to: it takes its mode again at the end.
            Err(Errno::EXIST) => {
                rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
                Some((entry.mode, entry.modified))
            }
            Err(e) => return Err(e.into()),
        };
        let dir = open_dir_nofollow(parent, name)?;
        self.chain.push(Level { dir, attributes });
        Ok(())
    }

    /// Creates the temporary file the file `entry` is received into.
    pub fn begin_file(&mut self, entry: &TreeEntry) -> io::Result<File> {
        let (depth, _) = split(&entry.path);
        self.close_to(depth)?;
        let parent = self.current();
        let temp = temp_name();
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, temp.as_str(), flags, Mode::from_raw_mode(0o600))?;
        let dir = rustix::io::dup(parent)?;
        self.writing = Some((dir, temp));
        Ok(File::from(fd))
    }

    /// Gives the received and verified `file` its mode and time, and
    /// queues it to take its name.
    pub fn finish_file(&mut self, file: File, entry: &TreeEntry) -> io::Result<()> {
        let Some((dir, temp)) = self.writing.take() else {
            return Err(io::Error::other("no file is being written"));
        };
        let pending = Pending {
            dir,
            temp,
            name: split(&entry.path).1.to_owned(),
        };
        // Queued first, so a failure below still removes it.
        self.pending.push(pending);
        rustix::fs::fchmod(&file, Mode::from_raw_mode(entry.mode & 0o777))?;
        set_time(&file, entry.modified)?;
        if entry.size >= crate::staging::EARLY_WRITEBACK {
            crate::staging::start_writeback(&file);
        }
        self.pending_bytes += entry.size;
        if self.pending.len() >= BATCH_FILES || self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// A new partial beside the file `entry`, to receive it into, so a
    /// cut leaves what came of it for the next try (any partial of it
    /// there is discarded).
    pub fn begin_partial(&mut self, entry: &TreeEntry) -> io::Result<Partial> {
        let (depth, _) = split(&entry.path);
        self.close_to(depth)?;
        open_partial(self.current(), entry, true)
    }

    /// Gives the received and verified `partial` of the file `entry` its
    /// mode, time and name, at once.
    pub fn finish_partial(&mut self, partial: &Partial, entry: &TreeEntry) -> io::Result<()> {
        let (depth, name) = split(&entry.path);
        self.close_to(depth)?;
        rustix::fs::fchmod(partial.file(), Mode::from_raw_mode(entry.mode & 0o777))?;
        set_time(partial.file(), entry.modified)?;
        partial.commit(&cap_dir(self.current())?, Path::new(name), self.replace)
    }

    /// Writes the file `entry`, whose body arrived whole and verified, to
    /// a temporary file, and queues it as [`TreeWriter::finish_file`] does.
    pub fn write_whole(&mut self, entry: &TreeEntry, body: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = self.begin_file(entry)?;
        file.write_all_at(body, 0)?;
        self.finish_file(file, entry)
    }

    /// Gives every file its name and every directory made its mode and
    /// time, syncs, and gives a new tree its name.
    pub fn finish(mut self) -> io::Result<()> {
        self.close_to(0)?;
        self.flush()?;
        if let Some((mode, modified)) = self.new_tree.as_ref().and_then(|tree| tree.attributes) {
            set_attributes(&self.top, mode, modified)?;
        }
        rustix::fs::syncfs(&self.top)?;
        if let Some(tree) = self.new_tree.as_mut() {
            rustix::fs::renameat_with(
                &tree.parent,
                tree.hidden.as_str(),
                &tree.parent,
                tree.name.as_str(),
                RenameFlags::NOREPLACE,
            )
            .map_err(not_replacing)?;
            tree.done = true;
            rustix::fs::fsync(&tree.parent)?;
        }
        Ok(())
    }

    /// After a transfer ended early other than by a cut (the server's
    /// error, a file found changed, a damaged body), in a merge: gives the
    /// files received and verified so far their names, and the
    /// directories made their modes and times. A new tree keeps nothing,
    /// not even for a next try: it is whole or absent.
    pub fn keep_verified(&mut self) -> io::Result<()> {
        if self.new_tree.is_some() {
            self.abandon();
            return Ok(());
        }
        self.close_to(0)?;
        self.flush()
    }

    /// After a transfer that failed its check: keeps nothing of it, no
    /// file waiting for its name and no new tree.
    pub fn abandon(&mut self) {
        for pending in self.pending.drain(..) {
            let _ = rustix::fs::unlinkat(&pending.dir, pending.temp.as_str(), AtFlags::empty());
        }
        if let Some(tree) = self.new_tree.as_mut() {
            tree.done = true;
            // std's remove_dir_all never follows a symlink out of the tree.
            let _ = std::fs::remove_dir_all(&tree.hidden_path);
        }
    }

    /// The directory entries go into now.
    fn current(&self) -> &OwnedDir {
        self.chain.last().map_or(&self.top, |level| &level.dir)
    }

    /// Leaves the directories of the chain deeper than `depth`, giving
    /// those this transfer made their mode and time, after their contents.
    fn close_to(&mut self, depth: usize) -> io::Result<()> {
        while self.chain.len() > depth {
            let Some(level) = self.chain.pop() else { break };
            if let Some((mode, modified)) = level.attributes {
                // A rename inside would move the directory's time again.
                self.flush()?;
                set_attributes(&level.dir, mode, modified)?;
            }
        }
        Ok(())
    }

    /// One sync of the filesystem for the whole batch, then the renames.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        rustix::fs::syncfs(&self.top)?;
        let flags = if self.replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        // On a failure the rest stay pending, and dropping the writer
        // removes them; the temporary names of those renamed are gone.
        for pending in &self.pending {
            rustix::fs::renameat_with(
                &pending.dir,
                pending.temp.as_str(),
                &pending.dir,
                pending.name.as_str(),
                flags,
            )
            .map_err(not_replacing)?;
        }
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}

impl Drop for TreeWriter {
    /// Ends a transfer cut off (the connection lost, Ctrl-C): the file
    /// being written goes, and the files verified take their names, after
    /// a sync, for a next try to go on from. A new tree's hidden
    /// directory stays unless it holds nothing.
    fn drop(&mut self) {
        if let Some((dir, temp)) = self.writing.take() {
            let _ = rustix::fs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
        }
        if self.new_tree.as_ref().is_some_and(|tree| tree.done) {
            return;
        }
        if self.close_to(0).and_then(|()| self.flush()).is_err() {
            for pending in self.pending.drain(..) {
                let _ = rustix::fs::unlinkat(&pending.dir, pending.temp.as_str(), AtFlags::empty());
            }
        }
        if let Some(tree) = &self.new_tree {
            let _ = rustix::fs::unlinkat(&tree.parent, tree.hidden.as_str(), AtFlags::REMOVEDIR);
        }
    }
}

/// [`TreeWriter::prune`] of the directory `dir`, `prefix` below the top,
/// `top`; `next` is the manifest's next entry. The names here and the
/// manifest's entries here come in the same order, and are walked side by
/// side. The partial of a file the manifest has, and that is large enough
/// to have kept one, stays for the transfer to go on from.
fn prune_under(
    dir: &OwnedDir,
    top: &Path,
    prefix: &str,
    spool: &mut SpoolReader,
    next: &mut Option<TreeEntry>,
) -> io::Result<()> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort_unstable();
    let mut names = names.into_iter().peekable();
    // Files of the manifest here whose partial may stay, and the partials
    // here, matched once all the names here are known.
    let (mut resumable, mut partials) = (Vec::new(), Vec::new());
    let mut child = next_child(spool, next, prefix)?;
    loop {
        let here = names.peek().map(|name| name.as_slice());
        let wanted = child
            .as_ref()
            .and_then(|entry| entry.path.strip_prefix(prefix))
            .map(str::as_bytes);
        let order = match (here, wanted) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(here), Some(wanted)) => here.cmp(wanted),
        };
        if order.is_gt() {
            // Not here: the transfer brings it.
            if let Some(entry) = child.take().filter(can_have_partial) {
                resumable.push(split(&entry.path).1.to_owned());
            }
            child = next_child(spool, next, prefix)?;
            continue;
        }
        let Some(name) = names.next() else { break };
        let name = String::from_utf8(name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))?;
        let stat = rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        let named = match order.is_eq() {
            true => child.take(),
            false => None,
        };
        match (named.as_ref().map(|entry| entry.kind), kind) {
            (Some(EntryKind::Directory), FileType::Directory) => {
                let below = open_dir_nofollow(dir, &name)?;
                rustix::fs::fchmod(&below, Mode::from_raw_mode(0o700))?;
                prune_under(&below, top, &format!("{prefix}{name}/"), spool, next)?;
            }
            (Some(EntryKind::File), FileType::RegularFile) => {}
            (None, FileType::RegularFile) if partial_of(&name).is_some() => partials.push(name),
            (_, FileType::Directory) => {
                let below = open_dir_nofollow(dir, &name)?;
                rustix::fs::fchmod(&below, Mode::from_raw_mode(0o700))?;
                // std's remove_dir_all never follows a symlink out.
                std::fs::remove_dir_all(top.join(format!("{prefix}{name}")))?;
            }
            _ => rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty())?,
        }
        if let Some(entry) = named.filter(can_have_partial) {
            resumable.push(split(&entry.path).1.to_owned());
        }
        if order.is_eq() {
            child = next_child(spool, next, prefix)?;
        }
    }
    for name in partials {
        if !partial_of(&name).is_some_and(|of| resumable.iter().any(|file| file == of)) {
            rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty())?;
        }
    }
    Ok(())
}

/// The manifest's next entry directly in the directory `prefix` (the
/// top for ""), passing over those deeper (in a directory not entered);
/// `None` once the manifest has left that directory.
fn next_child(
    spool: &mut SpoolReader,
    next: &mut Option<TreeEntry>,
    prefix: &str,
) -> io::Result<Option<TreeEntry>> {
    loop {
        let within = next
            .as_ref()
            .and_then(|entry| entry.path.strip_prefix(prefix));
        match within {
            Some(path) => {
                let deeper = path.contains('/');
                let this = std::mem::replace(next, spool.next_entry()?);
                if !deeper {
                    return Ok(this);
                }
            }
            _ => return Ok(None),
        }
    }
}

/// Whether the manifest's `entry` is a file that may have a partial: one
/// of more than a step, which a checkpoint can be kept of.
fn can_have_partial(entry: &TreeEntry) -> bool {
    entry.kind == EntryKind::File && entry.size > STEP
}

/// The name of the file `name` is a partial or a partial's record of, if
/// it is one: `.NAME.ferry-partial`, `.NAME.ferry-partial.rec` or
/// `.NAME.ferry-partial.rec.new`.
fn partial_of(name: &str) -> Option<&str> {
    let data = name
        .strip_suffix(".rec.new")
        .or_else(|| name.strip_suffix(".rec"))
        .unwrap_or(name);
    data.strip_prefix('.')?.strip_suffix(PARTIAL_SUFFIX)
}

/// How many directories `path` is below the top, and its last component.
fn split(path: &str) -> (usize, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (parent.split('/').count(), name),
        None => (0, path),
    }
}

/// A hidden name of this process, never one a tree carries.
fn temp_name() -> String {
    format!(
        "{TEMP_PREFIX}{}-{}",
        std::process::id(),
        NEXT_TEMP_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// Opens the directory `name` in `parent` for reading, refusing a symlink.
fn open_dir_nofollow(parent: &OwnedDir, name: &str) -> io::Result<OwnedDir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(parent, name, flags, Mode::empty())?)
}

/// Opens the partial of the file `entry` in `dir`, beside where the file
/// goes: `.NAME.ferry-partial` and its record, as a single get keeps them.
/// What it holds is proven (see [`Partial::open`]), or discarded first
/// with `restart`.
fn open_partial(dir: &OwnedDir, entry: &TreeEntry, restart: bool) -> io::Result<Partial> {
    let name = split(&entry.path).1;
    let data_name = partial_name(name);
    let record_name = format!("{data_name}.rec");
    let dir = cap_dir(dir)?;
    let place = Place {
        dir: &dir,
        data_name: &data_name,
        record_name: &record_name,
        name: &entry.path,
        source_size: entry.size,
        source_modified: entry.modified,
        tidy: None,
    };
    Ok(Partial::open(&place, restart)?.0)
}

/// `dir` as a capability-based directory handle, for [`Partial`].
fn cap_dir(dir: &OwnedDir) -> io::Result<cap_std::fs::Dir> {
    let dup = rustix::io::dup(dir)?;
    Ok(cap_std::fs::Dir::from_std_file(File::from(dup)))
}

/// Opens the existing directory `path` the user named as a target.
pub(super) fn open_target(path: &Path) -> io::Result<OwnedDir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Sets the modification (and access) time of `fd` to `modified` seconds.
fn set_time(fd: impl AsFd, modified: i64) -> io::Result<()> {
    let time = Timespec {
        tv_sec: modified,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    Ok(rustix::fs::futimens(fd, &times)?)
}

/// Gives the directory `dir` its time and its mode (permission bits
/// only: no setuid, setgid or sticky bit).
fn set_attributes(dir: &OwnedDir, mode: u32, modified: i64) -> io::Result<()> {
    set_time(dir, modified)?;
    Ok(rustix::fs::fchmod(dir, Mode::from_raw_mode(mode & 0o777))?)
}

/// A rename that found its name taken says so in ferry's words.
fn not_replacing(error: Errno) -> io::Error {
    match error {
        Errno::EXIST | Errno::NOTEMPTY => io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the name was taken meanwhile; ferry never replaces anything without --replace",
        ),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, path: &str, data: &[u8]) -> TreeEntry {
        TreeEntry {
            kind,
            size: data.len() as u64,
            mode: 0o644,
            modified: 0,
            digest: (kind == EntryKind::File).then(|| *blake3::hash(data).as_bytes()),
            path: path.to_owned(),
        }
    }

    #[test]
    fn decisions_follow_what_is_here() {
        let tmp = tempfile::tempdir().unwrap();
        let here = tmp.path();
        std::fs::create_dir(here.join("d")).unwrap();
        std::fs::write(here.join("d/same"), b"same").unwrap();
        std::fs::write(here.join("d/other"), b"mine").unwrap();
        std::fs::write(here.join("file"), b"").unwrap();
        std::os::unix::fs::symlink("d", here.join("link")).unwrap();
        let dir = EntryKind::Directory;
        let file = EntryKind::File;
        let cases: &[(EntryKind, &str, &[u8], Decision, Decision)] = &[
            (dir, "d", b"", Decision::Take, Decision::Take),
            (file, "d/new", b"x", Decision::Take, Decision::Take),
            (
                file,
                "d/other",
                b"theirs",
                Decision::Conflict("is here with other content"),
                Decision::Take,
            ),
            (file, "d/same", b"same", Decision::Skip, Decision::Skip),
            (
                dir,
                "file",
                b"",
                Decision::Conflict("is not a directory here"),
                Decision::Conflict("is not a directory here"),
            ),
            (file, "file/under", b"x", Decision::Take, Decision::Take),
            (
                dir,
                "link",
                b"",
                Decision::Conflict("is not a directory here"),
                Decision::Conflict("is not a directory here"),
            ),
            (dir, "missing", b"", Decision::Take, Decision::Take),
            (file, "missing/x", b"x", Decision::Take, Decision::Take),
        ];
        // In the hidden directory a new tree goes on from, everything is
        // the transfer's own: taken again unless it is the same.
        for (replace, resumed) in [(false, false), (true, false), (false, true)] {
            let top = Some(open_target(here).unwrap());
            let mut planner = Planner::new(top, replace, resumed);
            for (kind, path, data, without, with) in cases {
                let expected = match (resumed, replace) {
                    (true, _) if *with == Decision::Skip => &Decision::Skip,
                    (true, _) => &Decision::Take,
                    (false, true) => with,
                    (false, false) => without,
                };
                let decided = planner.decide(&entry(*kind, path, data)).unwrap();
                assert_eq!(
                    &decided, expected,
                    "{path} (replace: {replace}, resumed: {resumed})"
                );
            }
        }
    }

    #[test]
    fn split_gives_depth_and_name() {
        assert_eq!(split("a"), (0, "a"));
        assert_eq!(split("a/b"), (1, "b"));
        assert_eq!(split("a/b c/d"), (2, "d"));
    }
}
