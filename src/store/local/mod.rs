//! The local store: the served files are a directory on this machine's
//! disk, and every operation a request makes on them is shaped for the
//! requests rather than for `std::fs`.
//!
//! Every name is resolved beneath an open handle on the served directory
//! with cap-std, which refuses any path that would leave it, including
//! through symlinks and directories swapped for symlinks during a request
//! (it uses `openat2(RESOLVE_BENEATH)` where the kernel has it). The names
//! reaching this module have already passed the lexical rules of
//! [`RemoteName`]. What a request is refused for comes back as a
//! [`Refusal`], ready for an `Error` frame; no caller sees an `io::Error`
//! of a served file. All methods block; callers run them off the async
//! threads.
//!
//! Bodies do not pass through here: [`LocalStore::open_read`] and
//! [`LocalStore::begin_write`] hand out [`ReadFile`] and [`WriteFile`], which the
//! transport moves bytes from and to. Both are descriptors, so the
//! transport finds the zero-copy path through them the way it finds the
//! socket's.

mod digest_cache;
mod leftovers;
mod listing;
mod partials;
mod tree;
mod tree_write;
mod walk;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, Metadata, OpenOptions, OpenOptionsExt, PermissionsExt};

use crate::protocol::{Digest, EntryKind, ErrorCode, Info, Link, Refusal, RemoteName};
use crate::staging::Staged;
use digest_cache::Stamp;
pub use leftovers::Leftover;
pub use listing::Listing;
pub use partials::{Owner, ResumableUpload, PARTIALS_DIR};
// The S3 store names its partials the same way.
pub(in crate::store) use partials::partial_key;
pub use tree::Removed;
pub use tree_write::{Candidate, Meets, TreeFile, TreeWrite};
pub use walk::TreeWalk;

/// The served directory.
#[derive(Debug)]
pub struct LocalStore {
    dir: Dir,
    path: PathBuf,
}

/// A file opened for a get: its size, and its digest if the store has it.
#[derive(Debug)]
pub struct ReadFile {
    file: File,
    size: u64,
    stamp: Stamp,
    cached: Option<Digest>,
}

impl ReadFile {
    /// The regular file `file`, `size` bytes long, opened for reading,
    /// with its digest record if a valid one is at hand.
    fn opened(file: File, size: u64) -> Result<ReadFile, Refusal> {
        let stamp = Stamp::of(&file).map_err(classify)?;
        let cached = digest_cache::lookup(&file, &stamp);
        Ok(ReadFile {
            file,
            size,
            stamp,
            cached,
        })
    }
}

/// An upload in progress: it ends in [`Upload::commit`], or, dropped, is
/// abandoned and leaves nothing behind.
#[derive(Debug)]
pub struct Upload {
    /// `None` once committed. Declared first, so dropped first: the
    /// temporary file must go before the directories it is in.
    staged: Option<Staged>,
    /// The parent directories this upload made.
    made: MadeDirs,
}

/// Directories made for an upload, removed again (those still empty) if
/// the upload is abandoned: a refused or failed put leaves nothing behind.
#[derive(Debug)]
struct MadeDirs {
    root: Dir,
    /// Paths beneath the root, shallowest first.
    paths: Vec<String>,
}

/// Where an upload's body is written.
#[derive(Debug)]
pub struct WriteFile {
    file: File,
}

impl LocalStore {
    /// Opens `path`, creating it and its parents if missing.
    pub fn open(path: &Path) -> io::Result<LocalStore> {
        std::fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let dir = Dir::open_ambient_dir(&path, cap_std::ambient_authority())?;
        // cap-std opens directories with O_PATH, which needs no permission on
        // the directory itself. A root this process may not search would fail
        // every request, so it is refused now rather than served. Search is
        // enough: a root it may not read or write still serves gets or puts.
        rustix::fs::statat(&dir, ".", rustix::fs::AtFlags::empty())?;
        Ok(LocalStore { dir, path })
    }

    /// The absolute path of the served directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the temporary files that dead processes left (a server
    /// killed mid-upload), keeping those of processes still running.
    pub fn remove_leftovers(&self, started: std::time::SystemTime) -> Vec<Leftover> {
        leftovers::remove_leftovers(&self.dir, started)
    }

    /// Opens the regular file `name` for reading.
    pub fn open_read(&self, name: &RemoteName) -> Result<ReadFile, Refusal> {
        // Refuse fifos and devices by their metadata before opening them, and
        // open without blocking in case one was swapped in meanwhile; the
        // final check is on the opened file itself.
        check_is_file(&self.dir.metadata(name.as_str()).map_err(classify)?)?;
        let nonblocking = rustix::fs::OFlags::NONBLOCK.bits() as i32;
        let file = self
            .dir
            .open_with(
                name.as_str(),
                OpenOptions::new().read(true).custom_flags(nonblocking),
            )
            .map_err(classify)?;
        let metadata = file.metadata().map_err(classify)?;
        check_is_file(&metadata)?;
        ReadFile::opened(file.into_std(), metadata.len())
    }

    /// Begins receiving `size` bytes as `name`: creates missing parent
    /// directories and a hidden temporary file beside the final name.
    /// Refuses a taken name, and a file larger than the disk's free space,
    /// before it creates anything; directories it creates go again if the
    /// upload does not complete.
    pub fn begin_write(
        &self,
        name: &RemoteName,
        size: u64,
    ) -> Result<(Upload, WriteFile), Refusal> {
        self.begin(name, size, false)
    }

    /// Begins receiving a body of unknown length as `name`, as
    /// [`LocalStore::begin_write`] does; the disk's free space is met by the
    /// writes as they come. With `replace`, a file of that name is
    /// replaced, atomically, when the upload is committed.
    pub fn begin_stream(
        &self,
        name: &RemoteName,
        replace: bool,
    ) -> Result<(Upload, WriteFile), Refusal> {
        self.begin(name, 0, replace)
    }

    fn begin(
        &self,
        name: &RemoteName,
        size: u64,
        replace: bool,
    ) -> Result<(Upload, WriteFile), Refusal> {
        let (made, parent) = self.parent_for_upload(name, size)?;
        let file_name = Path::new(name.file_name());
        let staged = if replace {
            Staged::create_replacing(parent, file_name)
        } else {
            Staged::create(parent, file_name)
        };
        let (staged, file) = staged.map_err(classify)?;
        let upload = Upload {
            staged: Some(staged),
            made,
        };
        Ok((upload, WriteFile { file }))
    }

    /// The directory an upload of `size` bytes to `name` goes to, made
    /// with its missing parents (which go again when the returned
    /// [`MadeDirs`] is dropped uncommitted). Refuses a directory of that
    /// name, and a size larger than the disk's free space.
    fn parent_for_upload(&self, name: &RemoteName, size: u64) -> Result<(MadeDirs, Dir), Refusal> {
        // Open first and create only what is missing, so that a parent that
        // is a file, or a symlink leading outside, is reported as such rather
        // than as a failed mkdir.
        let mut made = MadeDirs::new(&self.dir)?;
        let parent = match (self.dir_at(name.parent()), name.parent()) {
            (Err(e), Some(path)) if e.kind() == io::ErrorKind::NotFound => {
                check_free_space(&self.dir, size)?;
                made.make_all(path).map_err(classify)?;
                self.dir.open_dir(path)
            }
            (opened, _) => opened,
        }
        .map_err(classify)?;
        if parent
            .symlink_metadata(name.file_name())
            .is_ok_and(|m| m.is_dir())
        {
            return Err(Refusal::new(
                ErrorCode::IsADirectory,
                "a directory by that name exists",
            ));
        }
        check_free_space(&parent, size)?;
        Ok((made, parent))
    }

    /// The entries of the root, or of the directory `dir` beneath it, a
    /// batch at a time; a `dir` that is not a directory is listed as its
    /// one entry, as `ls` does.
    pub fn list(&self, dir: Option<&RemoteName>, long: bool) -> Result<Listing, Refusal> {
        match dir {
            None => Listing::of_dir(&self.dir, None, long),
            // Resolved from the root, not from its parent: a symlink there
            // may lead anywhere inside the root, `..` included.
            Some(name) => Listing::of_name(&self.dir, name, long),
        }
    }

    /// A walk of the tree under `source` (`None`: the root) for a
    /// GetTree: its directories and files, or the one file `source` is.
    /// Resolved beneath the root like any name; inside, the walk follows
    /// no symlink.
    pub fn walk_tree(&self, source: Option<&RemoteName>) -> Result<TreeWalk, Refusal> {
        let Some(source) = source else {
            return TreeWalk::of_dir(self.dir.try_clone().map_err(classify)?);
        };
        let metadata = self.dir.metadata(source.as_str()).map_err(classify)?;
        if metadata.is_dir() {
            return TreeWalk::of_dir(self.dir.open_dir(source.as_str()).map_err(classify)?);
        }
        check_is_file(&metadata)?;
        let parent = self.dir_at(source.parent()).map_err(classify)?;
        if !parent
            .symlink_metadata(source.file_name())
            .map_err(classify)?
            .is_file()
        {
            return Err(Refusal::new(
                ErrorCode::NotARegularFile,
                "a symlink; a tree does not carry symlinks",
            ));
        }
        Ok(TreeWalk::of_file(parent, source.file_name()))
    }

    /// What `name` (`None`: the root) is: kind, size, time, mode, and the
    /// digest of a file whose digest the store has at hand. A symlink says
    /// so, and is described by what it leads to if that is inside the root.
    pub fn stat(&self, name: Option<&RemoteName>) -> Result<Info, Refusal> {
        let Some(name) = name else {
            let root = self.dir.metadata(".").map_err(classify)?;
            return Ok(self.describe(".", &root, Link::None));
        };
        let parent = self.dir_at(name.parent()).map_err(classify)?;
        let itself = parent
            .symlink_metadata(name.file_name())
            .map_err(classify)?;
        if !itself.is_symlink() {
            return Ok(self.describe(name.as_str(), &itself, Link::None));
        }
        // Followed, but only within the root.
        match self.dir.metadata(name.as_str()) {
            Ok(target) => Ok(self.describe(name.as_str(), &target, Link::Inside)),
            Err(_) => Ok(Info {
                kind: EntryKind::Other,
                size: 0,
                modified: modified_seconds(&itself),
                mode: itself.permissions().mode() & 0o7777,
                link: Link::Elsewhere,
                digest: None,
            }),
        }
    }

    /// The `Info` for what `path` leads to, as `metadata` describes it.
    fn describe(&self, path: &str, metadata: &Metadata, link: Link) -> Info {
        let digest = if metadata.is_file() {
            self.cached_digest(path)
        } else {
            None
        };
        Info {
            kind: kind_of(metadata),
            size: if metadata.is_file() {
                metadata.len()
            } else {
                0
            },
            modified: modified_seconds(metadata),
            mode: metadata.permissions().mode() & 0o7777,
            link,
            digest,
        }
    }

    /// Removes the file (or symlink) `name`; refuses directories.
    pub fn delete(&self, name: &RemoteName) -> Result<(), Refusal> {
        let parent = self.dir_at(name.parent()).map_err(classify)?;
        let metadata = parent
            .symlink_metadata(name.file_name())
            .map_err(classify)?;
        if metadata.is_dir() {
            return Err(Refusal::new(
                ErrorCode::IsADirectory,
                "is a directory; delete it with everything in it with delete -r, \
                 or an empty one with rmdir",
            ));
        }
        parent.remove_file(name.file_name()).map_err(classify)
    }

    /// Removes `name` and, if it is a directory, everything in it, never
    /// following a symlink: a symlink is removed as a link.
    pub fn delete_tree(&self, name: &RemoteName) -> Result<Removed, Refusal> {
        let parent = self.dir_at(name.parent()).map_err(classify)?;
        tree::remove(&parent, name.file_name())
    }

    /// Makes the directory `name`; with `parents`, its missing parents too,
    /// and an existing directory is then no error.
    pub fn make_dir(&self, name: &RemoteName, parents: bool) -> Result<(), Refusal> {
        if parents {
            return self.dir.create_dir_all(name.as_str()).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Refusal::new(
                        ErrorCode::AlreadyExists,
                        "a file by that name (or of a parent's name) exists",
                    )
                } else {
                    classify(e)
                }
            });
        }
        let parent = self.dir_at(name.parent()).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Refusal::new(
                ErrorCode::NotFound,
                "the parent directory does not exist (mkdir -p makes it)",
            ),
            _ => classify(e),
        })?;
        parent
            .create_dir(name.file_name())
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => {
                    Refusal::new(ErrorCode::AlreadyExists, "something by that name exists")
                }
                _ => classify(e),
            })
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &RemoteName) -> Result<(), Refusal> {
        let parent = self.dir_at(name.parent()).map_err(classify)?;
        let metadata = parent
            .symlink_metadata(name.file_name())
            .map_err(classify)?;
        if !metadata.is_dir() {
            return Err(Refusal::new(
                ErrorCode::NotADirectory,
                "not a directory; delete removes files and links",
            ));
        }
        parent.remove_dir(name.file_name()).map_err(classify)
    }

    /// Gives `from` the name `to`, atomically, never replacing anything:
    /// not a file, and not a directory either (no implicit move into it).
    pub fn rename(&self, from: &RemoteName, to: &RemoteName) -> Result<(), Refusal> {
        tree::check_not_into_itself(from, to)?;
        let from_parent = self.dir_at(from.parent()).map_err(classify)?;
        let to_parent = self.dir_at(to.parent()).map_err(classify)?;
        tree::rename_no_replace(&from_parent, from.file_name(), &to_parent, to.file_name())
    }

    /// The digest cached for the file at `path`, if any and still valid.
    fn cached_digest(&self, path: &str) -> Option<Digest> {
        let nonblocking = rustix::fs::OFlags::NONBLOCK.bits() as i32;
        let options = OpenOptions::new()
            .read(true)
            .custom_flags(nonblocking)
            .clone();
        let file = self.dir.open_with(path, &options).ok()?.into_std();
        let stamp = Stamp::of(&file).ok()?;
        digest_cache::lookup(&file, &stamp)
    }

    /// A handle on the directory `path` beneath the root, or on the root.
    fn dir_at(&self, path: Option<&str>) -> io::Result<Dir> {
        match path {
            Some(path) => self.dir.open_dir(path),
            None => self.dir.try_clone(),
        }
    }
}

impl ReadFile {
    /// The file's size when it was opened: what a get sends.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's modification time when it was opened, in whole seconds
    /// since the epoch: with the size, what a resumed get checks the
    /// client's partial was made of.
    pub fn modified(&self) -> i64 {
        self.stamp.modified_seconds()
    }

    /// The file's digest, if the store has it for the file as it is.
    pub fn cached_digest(&self) -> Option<Digest> {
        self.cached
    }

    /// Keeps `digest`, just computed while sending the file, for later
    /// gets: only if the file has settled and did not change meanwhile,
    /// since otherwise the digest may describe neither its old content nor
    /// its new.
    pub fn remember(&self, digest: &Digest) {
        if self.cached.is_none()
            && self.stamp.is_settled()
            && Stamp::of(&self.file).is_ok_and(|now| now == self.stamp)
        {
            digest_cache::remember(&self.file, &self.stamp, digest);
        }
    }
}

impl ReadFile {
    /// Reads the file whole, as large as it was when opened, with its
    /// digest: the cached one, or computed now and remembered. `None` if
    /// the file is shorter now: it changed. For small files only; the
    /// whole body is in memory.
    pub fn read_whole(&self) -> Result<Option<(Vec<u8>, Digest)>, Refusal> {
        use std::os::unix::fs::FileExt;
        let len = usize::try_from(self.size)
            .map_err(|_| Refusal::new(ErrorCode::TooLarge, "a file too large to read whole"))?;
        let mut body = vec![0; len];
        let mut read = 0;
        while read < len {
            let rest = body.get_mut(read..).unwrap_or_default();
            match self.file.read_at(rest, read as u64) {
                Ok(0) => return Ok(None),
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e)),
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
}

impl AsFd for ReadFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Upload {
    /// Makes the received body appear under its name, with `digest`
    /// remembered for later gets: synced to disk, moved into place by a
    /// rename that never replaces anything (unless the upload was begun to
    /// replace), its directory synced.
    pub fn commit(mut self, body: WriteFile, digest: &Digest) -> Result<(), Refusal> {
        let Some(staged) = self.staged.take() else {
            return Err(Refusal::new(
                ErrorCode::Io,
                "the upload was committed already",
            ));
        };
        // Stamped after the last write, so the record matches the file as
        // it will appear under its name.
        if let Ok(stamp) = Stamp::of(&body.file) {
            digest_cache::remember(&body.file, &stamp, digest);
        }
        let committed = staged.commit(&body.file).map_err(classify);
        if committed.is_ok() {
            // They hold the file now.
            self.made.paths.clear();
        }
        committed
    }
}

impl MadeDirs {
    fn new(root: &Dir) -> Result<MadeDirs, Refusal> {
        Ok(MadeDirs {
            root: root.try_clone().map_err(classify)?,
            paths: Vec::new(),
        })
    }

    /// Makes `path` and its missing parents, remembering which it made.
    fn make_all(&mut self, path: &str) -> io::Result<()> {
        let mut prefix = String::with_capacity(path.len());
        for component in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            match self.root.create_dir(&prefix) {
                Ok(()) => self.paths.push(prefix.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for MadeDirs {
    /// Removes the directories made, deepest first, as far as they are
    /// empty: another upload may have put something in one meanwhile.
    /// Nothing is left to remove once the upload is committed, and this
    /// also runs when making them, or the temporary file, failed.
    fn drop(&mut self) {
        while let Some(path) = self.paths.pop() {
            if self.root.remove_dir(&path).is_err() {
                break;
            }
        }
    }
}

impl AsFd for WriteFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Refuses an upload the disk cannot hold, before its body is sent, rather
/// than letting it fail part way. Only checked, not reserved: a reservation
/// would let a client claim any amount of disk with one small request; the
/// receiver reserves as the data arrives instead.
fn check_free_space(dir: &Dir, size: u64) -> Result<(), Refusal> {
    let Ok(fs) = rustix::fs::fstatvfs(dir) else {
        return Ok(()); // unknown; the writes will find out
    };
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    if size <= free {
        return Ok(());
    }
    Err(Refusal::new(
        ErrorCode::InsufficientStorage,
        format!("not enough space on the server's disk: {size} bytes needed, {free} free"),
    ))
}

fn check_is_file(metadata: &Metadata) -> Result<(), Refusal> {
    if metadata.is_dir() {
        Err(Refusal::new(
            ErrorCode::IsADirectory,
            "is a directory, not a file",
        ))
    } else if !metadata.is_file() {
        Err(Refusal::new(
            ErrorCode::NotARegularFile,
            "not a regular file (fifo, socket or device)",
        ))
    } else {
        Ok(())
    }
}

/// What a listing or a stat calls an entry with this metadata.
fn kind_of(metadata: &Metadata) -> EntryKind {
    if metadata.is_dir() {
        EntryKind::Directory
    } else if metadata.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// Modification time in whole seconds since the Unix epoch, 0 if unknown.
fn modified_seconds(metadata: &Metadata) -> i64 {
    let Ok(time) = metadata.modified() else {
        return 0;
    };
    match time.into_std().duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// What a client is told for a filesystem error: the one place such
/// errors are put into a request's words.
pub fn classify(error: io::Error) -> Refusal {
    use io::ErrorKind as Kind;
    // cap-std reports a path that would leave the root as PermissionDenied
    // without an OS error number; a real EACCES always carries one.
    if error.kind() == Kind::PermissionDenied && error.raw_os_error().is_none() {
        return Refusal::new(
            ErrorCode::BadName,
            "name leads outside the served directory",
        );
    }
    let (code, message) = match error.kind() {
        Kind::NotFound => (ErrorCode::NotFound, "no such file or directory"),
        Kind::AlreadyExists => (
            ErrorCode::AlreadyExists,
            "a file by that name already exists; ferry never overwrites",
        ),
        Kind::PermissionDenied => (ErrorCode::PermissionDenied, "permission denied"),
        Kind::IsADirectory => (ErrorCode::IsADirectory, "is a directory"),
        Kind::NotADirectory => (
            ErrorCode::NotADirectory,
            "a component of the name is not a directory",
        ),
        Kind::DirectoryNotEmpty => (ErrorCode::NotEmpty, "the directory is not empty"),
        Kind::FileTooLarge => (
            ErrorCode::InsufficientStorage,
            "the file is larger than the server may write (its file size limit)",
        ),
        Kind::StorageFull | Kind::QuotaExceeded => (
            ErrorCode::InsufficientStorage,
            "not enough space on the server's disk",
        ),
        _ => return Refusal::new(ErrorCode::Io, error.to_string()),
    };
    Refusal::new(code, message)
}
