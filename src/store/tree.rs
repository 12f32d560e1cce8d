//! Operations on whole directories: removing a tree, and renaming without
//! replacing anything.

use std::ffi::OsString;
use std::io;

use cap_std::fs::Dir;
use rustix::fs::{Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::classify;
use crate::protocol::{ErrorCode, Refusal, RemoteName};

/// What a recursive delete removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Files, symlinks and other non-directories.
    pub files: u64,
    pub directories: u64,
}

/// Removes `name` from `parent`: a file or a symlink as itself, a
/// directory with everything in it. Never follows a symlink, so nothing
/// outside the tree is touched. The walk keeps a stack of paths rather than
/// of open directories, so a deep tree costs memory, not descriptors.
pub(super) fn remove(parent: &Dir, name: &str) -> Result<Removed, Refusal> {
    let mut removed = Removed::default();
    let metadata = parent.symlink_metadata(name).map_err(classify)?;
    if !metadata.is_dir() {
        parent.remove_file(name).map_err(classify)?;
        removed.files = 1;
        return Ok(removed);
    }
    let top = open_dir_nofollow(parent, &[OsString::from(name)]).map_err(classify)?;
    // Post-order: a directory is removed once it has been emptied.
    let mut pending: Vec<(Vec<OsString>, bool)> = vec![(Vec::new(), false)];
    while let Some((path, emptied)) = pending.pop() {
        if emptied {
            if let Some((last, parent_path)) = path.split_last() {
                let parent_dir = open_dir_nofollow(&top, parent_path)
                    .map_err(|e| partly_removed(classify(e), removed))?;
                parent_dir
                    .remove_dir(last)
                    .map_err(|e| partly_removed(classify(e), removed))?;
                removed.directories += 1;
            }
            continue;
        }
        let dir =
            open_dir_nofollow(&top, &path).map_err(|e| partly_removed(classify(e), removed))?;
        pending.push((path.clone(), true));
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
            .map_err(|e| partly_removed(classify(e), removed))?;
        for (child, is_dir) in children {
            if is_dir {
                let mut child_path = path.clone();
                child_path.push(child);
                pending.push((child_path, false));
            } else {
                dir.remove_file(&child)
                    .map_err(|e| partly_removed(classify(e), removed))?;
                removed.files += 1;
            }
        }
    }
    parent
        .remove_dir(name)
        .map_err(|e| partly_removed(classify(e), removed))?;
    removed.directories += 1;
    Ok(removed)
}

/// Opens the directory at `path` (components) beneath `base`, refusing to
/// follow a symlink at any step: one swapped in mid-walk is an error, not
/// a way out of the tree.
fn open_dir_nofollow(base: &Dir, path: &[OsString]) -> io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = base.try_clone()?;
    for component in path {
        let fd = rustix::fs::openat(&dir, component.as_os_str(), flags, Mode::empty())?;
        dir = Dir::from_std_file(std::fs::File::from(fd));
    }
    Ok(dir)
}

/// A refusal that says how much was removed before it.
fn partly_removed(refusal: Refusal, removed: Removed) -> Refusal {
    Refusal::new(
        refusal.code,
        format!(
            "{} (after removing {} files and {} directories)",
            refusal.message, removed.files, removed.directories
        ),
    )
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
