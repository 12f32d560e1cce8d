//! The served directory: the one gate between remote names and the disk.
//!
//! Every operation resolves its name beneath an open handle on the root
//! directory with cap-std, which refuses any path that would leave it,
//! including through symlinks and directories swapped for symlinks during a
//! request (it uses `openat2(RESOLVE_BENEATH)` where the kernel has it). The
//! names reaching this module have already passed the lexical rules of
//! [`RemoteName`]. All methods block; callers run them off the async threads.

use std::io;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, Metadata, OpenOptions, OpenOptionsExt};

use super::leftovers::Leftover;
use super::Failure;
use crate::protocol::{Entry, EntryKind, ErrorCode, RemoteName};
use crate::staging::Staged;

/// An open handle on the served directory.
#[derive(Debug)]
pub struct Root {
    dir: Dir,
    path: PathBuf,
}

impl Root {
    /// Opens `path`, creating it and its parents if missing.
    pub fn open(path: &Path) -> io::Result<Root> {
        std::fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let dir = Dir::open_ambient_dir(&path, cap_std::ambient_authority())?;
        // cap-std opens directories with O_PATH, which needs no permission on
        // the directory itself. A root this process may not search would fail
        // every request, so it is refused now rather than served. Search is
        // enough: a root it may not read or write still serves gets or puts.
        rustix::fs::statat(&dir, ".", rustix::fs::AtFlags::empty())?;
        Ok(Root { dir, path })
    }

    /// The absolute path of the served directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the temporary files of dead processes; see [`super::leftovers`].
    pub fn remove_leftovers(&self, started: std::time::SystemTime) -> Vec<Leftover> {
        super::leftovers::remove_leftovers(&self.dir, started)
    }

    /// Opens a regular file for reading and returns it with its size.
    pub fn open_file(&self, name: &RemoteName) -> Result<(std::fs::File, u64), Failure> {
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
        Ok((file.into_std(), metadata.len()))
    }

    /// Prepares to receive `size` bytes as `name`: creates missing parent
    /// directories and a hidden temporary file beside the final name.
    /// Refuses a taken name, and a file larger than the disk's free space.
    pub fn stage(&self, name: &RemoteName, size: u64) -> Result<(Staged, std::fs::File), Failure> {
        // Open first and create only what is missing, so that a parent that
        // is a file, or a symlink leading outside, is reported as such rather
        // than as a failed mkdir.
        let parent = match (self.dir_at(name.parent()), name.parent()) {
            (Err(e), Some(path)) if e.kind() == io::ErrorKind::NotFound => {
                self.dir.create_dir_all(path).map_err(classify)?;
                self.dir.open_dir(path)
            }
            (opened, _) => opened,
        }
        .map_err(classify)?;
        let file_name = name.file_name();
        if parent.symlink_metadata(file_name).is_ok_and(|m| m.is_dir()) {
            return Err(Failure::new(
                ErrorCode::IsADirectory,
                "a directory by that name exists",
            ));
        }
        check_free_space(&parent, size)?;
        Staged::create(parent, Path::new(file_name)).map_err(classify)
    }

    /// The entries of the root, or of the directory `dir` beneath it, sorted
    /// by name. Transfers in progress, names that are not UTF-8 or break the
    /// naming rules, and symlinks that lead outside the root are left out. Sizes and times are filled
    /// in only when `long` is set.
    pub fn list(&self, dir: Option<&RemoteName>, long: bool) -> Result<Vec<Entry>, Failure> {
        let dir = self.dir_at(dir.map(RemoteName::as_str)).map_err(classify)?;
        let mut entries = Vec::new();
        for dir_entry in dir.entries().map_err(classify)? {
            let dir_entry = dir_entry.map_err(classify)?;
            let Ok(name) = dir_entry.file_name().into_string() else {
                continue;
            };
            // Transfers in progress, and names no client could ask for
            // (control characters, backslashes): a ferry server never lists
            // a name that breaks the rules, so a client may refuse one.
            if RemoteName::parse(&name).is_err() {
                continue;
            }
            let file_type = dir_entry.file_type().map_err(classify)?;
            let metadata = if long || file_type.is_symlink() {
                // Follows symlinks, but only within the root.
                match dir.metadata(&name) {
                    Ok(metadata) => Some(metadata),
                    Err(_) if file_type.is_symlink() => continue,
                    Err(e) => return Err(classify(e)),
                }
            } else {
                None
            };
            let is_dir = metadata
                .as_ref()
                .map_or(file_type.is_dir(), Metadata::is_dir);
            let is_file = metadata
                .as_ref()
                .map_or(file_type.is_file(), Metadata::is_file);
            let kind = match (is_dir, is_file) {
                (true, _) => EntryKind::Directory,
                (_, true) => EntryKind::File,
                _ => EntryKind::Other,
            };
            let (size, modified) = match metadata.filter(|_| long) {
                Some(metadata) => (
                    if is_file { metadata.len() } else { 0 },
                    metadata
                        .modified()
                        .map_or(0, |time| unix_seconds(time.into_std())),
                ),
                None => (0, 0),
            };
            entries.push(Entry {
                kind,
                size,
                modified,
                name,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Removes the file (or symlink) `name`; refuses directories.
    pub fn delete(&self, name: &RemoteName) -> Result<(), Failure> {
        let parent = self.dir_at(name.parent()).map_err(classify)?;
        let metadata = parent
            .symlink_metadata(name.file_name())
            .map_err(classify)?;
        if metadata.is_dir() {
            return Err(Failure::new(
                ErrorCode::IsADirectory,
                "is a directory; ferry deletes only files",
            ));
        }
        parent.remove_file(name.file_name()).map_err(classify)
    }

    /// A handle on the directory `path` beneath the root, or on the root.
    fn dir_at(&self, path: Option<&str>) -> io::Result<Dir> {
        match path {
            Some(path) => self.dir.open_dir(path),
            None => self.dir.try_clone(),
        }
    }
}

/// Refuses an upload the disk cannot hold, before its body is sent, rather
/// than letting it fail part way. Only checked, not reserved: a reservation
/// would let a client claim any amount of disk with one small request; the
/// receiver reserves as the data arrives instead.
fn check_free_space(dir: &Dir, size: u64) -> Result<(), Failure> {
    let Ok(fs) = rustix::fs::fstatvfs(dir) else {
        return Ok(()); // unknown; the writes will find out
    };
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    if size <= free {
        return Ok(());
    }
    Err(Failure::new(
        ErrorCode::InsufficientStorage,
        format!("not enough space on the server's disk: {size} bytes needed, {free} free"),
    ))
}

fn check_is_file(metadata: &Metadata) -> Result<(), Failure> {
    if metadata.is_dir() {
        Err(Failure::new(
            ErrorCode::IsADirectory,
            "is a directory, not a file",
        ))
    } else if !metadata.is_file() {
        Err(Failure::new(
            ErrorCode::NotARegularFile,
            "not a regular file (fifo, socket or device)",
        ))
    } else {
        Ok(())
    }
}

fn unix_seconds(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Maps a filesystem error to the failure a client is told.
pub(super) fn classify(error: io::Error) -> Failure {
    use io::ErrorKind as Kind;
    // cap-std reports a path that would leave the root as PermissionDenied
    // without an OS error number; a real EACCES always carries one.
    if error.kind() == Kind::PermissionDenied && error.raw_os_error().is_none() {
        return Failure::new(
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
        Kind::FileTooLarge => (
            ErrorCode::InsufficientStorage,
            "the file is larger than the server may write (its file size limit)",
        ),
        Kind::StorageFull | Kind::QuotaExceeded => (
            ErrorCode::InsufficientStorage,
            "not enough space on the server's disk",
        ),
        _ => return Failure::new(ErrorCode::Io, error.to_string()),
    };
    Failure::new(code, message)
}
