//! Operations on whole directories: removing a tree, and renaming without
//! replacing anything.

use std::ffi::{OsStr, OsString};
use std::io;

use cap_std::fs::Dir;
use rustix::fs::{Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::classify;
use crate::protocol::{ErrorCode, Refusal, RemoteName, TEMP_PREFIX};

/// What a recursive delete removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Files, symlinks and other non-directories.
    pub files: u64,
    pub directories: u64,
}

/// The deepest tree a recursive delete walks: it holds one open
/// directory per level, so this bounds its descriptors. A deeper tree can
/// still be removed in parts, by deleting a deep part of it first.
const MAX_DEPTH: usize = 1024;

/// Removes `name` from `parent`: a file or a symlink as itself, a
/// directory with everything in it. Never follows a symlink, so nothing
/// outside the tree is touched. Leaves the temporary files of uploads in
/// progress alone (no client may delete another's transfer), so a
/// directory holding one is not removed.
pub(super) fn remove(parent: &Dir, name: &str) -> Result<Removed, Refusal> {
    let metadata = parent.symlink_metadata(name).map_err(classify)?;
    if !metadata.is_dir() {
        parent.remove_file(name).map_err(classify)?;
        return Ok(Removed {
            files: 1,
            directories: 0,
        });
    }
    let mut walk = Walk::default();
    let top = open_dir_nofollow(parent, OsStr::new(name)).map_err(|e| walk.failed(e))?;
    let mut levels = vec![walk.enter(top, OsString::from(name))?];
    while let Some(level) = levels.last_mut() {
        if let Some(child) = level.subdirectories.pop() {
            let dir = open_dir_nofollow(&level.dir, &child).map_err(|e| walk.failed(e))?;
            if levels.len() >= MAX_DEPTH {
                return Err(walk.refused(Refusal::new(
                    ErrorCode::Io,
                    format!(
                        "the tree is deeper than {MAX_DEPTH} levels; delete a deep part of it first"
                    ),
                )));
            }
            let next = walk.enter(dir, child)?;
            levels.push(next);
            continue;
        }
        let Some(done) = levels.pop() else { break };
        let up = levels.last().map_or(parent, |level| &level.dir);
        up.remove_dir(&done.name).map_err(|e| walk.failed(e))?;
        walk.removed.directories += 1;
    }
    Ok(walk.removed)
}

/// One directory of a tree being removed: open, with the subdirectories
/// still to visit.
struct Level {
    dir: Dir,
    /// Its name in the level above.
    name: OsString,
    subdirectories: Vec<OsString>,
}

/// What a recursive delete has done so far.
#[derive(Default)]
struct Walk {
    removed: Removed,
    /// Temporary files of uploads in progress, left alone.
    in_progress: u64,
}

impl Walk {
    /// Removes the files of `dir` and lists its subdirectories.
    fn enter(&mut self, dir: Dir, name: OsString) -> Result<Level, Refusal> {
        let children = dir
            .entries()
            .and_then(|entries| {
                entries
                    .map(|entry| {
                        let entry = entry?;
                        Ok((entry.file_name(), entry.file_type()?.is_dir()))
                    })
                    .collect::<io::Result<Vec<_>>>()
            })
            .map_err(|e| self.failed(e))?;
        let mut subdirectories = Vec::new();
        for (child, is_dir) in children {
            if is_dir {
                subdirectories.push(child);
            } else if child.to_str().is_some_and(|c| c.starts_with(TEMP_PREFIX)) {
                self.in_progress += 1;
            } else {
                dir.remove_file(&child).map_err(|e| self.failed(e))?;
                self.removed.files += 1;
            }
        }
        Ok(Level {
            dir,
            name,
            subdirectories,
        })
    }

    /// The refusal for `error`, saying how much went before it.
    fn failed(&self, error: io::Error) -> Refusal {
        let refusal = classify(error);
        if refusal.code == ErrorCode::NotEmpty && self.in_progress > 0 {
            return self.refused(Refusal::new(
                ErrorCode::NotEmpty,
                "an upload is in progress inside it; try again when it is done",
            ));
        }
        self.refused(refusal)
    }

    /// `refusal`, saying how much went before it.
    fn refused(&self, refusal: Refusal) -> Refusal {
        let Removed { files, directories } = self.removed;
        Refusal::new(
            refusal.code,
            format!(
                "{} (after removing {files} files and {directories} directories)",
                refusal.message
            ),
        )
    }
}

/// Opens the directory `name` in `parent`, refusing to follow a symlink:
/// one swapped in mid-walk is an error, not a way out of the tree.
fn open_dir_nofollow(parent: &Dir, name: &OsStr) -> io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(parent, name, flags, Mode::empty())?;
    Ok(Dir::from_std_file(std::fs::File::from(fd)))
}

/// Refuses to move a directory beneath itself, which no rename can do.
pub(super) fn check_not_into_itself(from: &RemoteName, to: &RemoteName) -> Result<(), Refusal> {
    let inside = to
        .as_str()
        .strip_prefix(from.as_str())
        .is_some_and(|rest| rest.starts_with('/'));
    if inside {
        return Err(Refusal::new(
            ErrorCode::BadName,
            "cannot move a directory into itself",
        ));
    }
    Ok(())
}

/// Renames `from` in `from_dir` to `to` in `to_dir`, failing if `to` is
/// taken by anything at all.
pub(super) fn rename_no_replace(
    from_dir: &Dir,
    from: &str,
    to_dir: &Dir,
    to: &str,
) -> Result<(), Refusal> {
    let renamed = rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE);
    match renamed {
        Ok(()) => Ok(()),
        Err(Errno::EXIST | Errno::NOTEMPTY) => Err(Refusal::new(
            ErrorCode::AlreadyExists,
            "the new name is taken; ferry never replaces anything",
        )),
        Err(Errno::INVAL) => Err(Refusal::new(
            ErrorCode::BadName,
            "cannot move a directory into itself \
             (or this filesystem cannot rename without replacing)",
        )),
        Err(Errno::XDEV) => Err(Refusal::new(
            ErrorCode::Io,
            "the two names are on different filesystems on the server",
        )),
        Err(other) => Err(classify(other.into())),
    }
}
