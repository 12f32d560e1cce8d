//! Walking a tree for a GetTree (PROTOCOL.md §5.11): entries in the order
//! of a manifest, a directory before what is in it and each directory's
//! names in byte order, never following a symlink.
//!
//! The walk holds a stack of open directories, each with the names of it
//! still to visit: memory grows with the depth of the tree and the size of
//! its directories, not with the number of entries. The same walk is made
//! twice, once for the manifest and once for the bodies, so the server
//! keeps nothing of the manifest between the passes.

use std::ffi::OsStr;
use std::io::Read;

use cap_std::fs::{Dir, Metadata, PermissionsExt};
use rustix::fs::{Mode, OFlags};

use super::{classify, modified_seconds, ReadFile};
use crate::protocol::{
    Digest, EntryKind, ErrorCode, NameError, OmitReason, Refusal, RemoteName, TreeEntry,
};

/// A walk of the tree under a directory, or of one file.
#[derive(Debug)]
pub struct TreeWalk {
    /// The directories being walked, the top first.
    levels: Vec<Level>,
    /// The file a walk of one file gives, until it is given.
    single: Option<(Dir, String)>,
    /// Where the file last given is: its directory and name.
    current: Option<(Dir, String)>,
    unusable_names: u64,
    not_carried: u64,
}

/// One directory of the walk.
#[derive(Debug)]
struct Level {
    dir: Dir,
    /// Its path below the top, with a trailing `/`; empty for the top.
    prefix: String,
    /// Its names still to visit, the greatest first, so the next is popped.
    names: Vec<String>,
}

impl TreeWalk {
    /// Walks what is under the directory `dir`.
    pub(super) fn of_dir(dir: Dir) -> Result<TreeWalk, Refusal> {
        let mut walk = TreeWalk {
            levels: Vec::new(),
            single: None,
            current: None,
            unusable_names: 0,
            not_carried: 0,
        };
        walk.enter(dir, String::new())?;
        Ok(walk)
    }

    /// Walks the one file `name` in `parent`.
    pub(super) fn of_file(parent: Dir, name: &str) -> TreeWalk {
        TreeWalk {
            levels: Vec::new(),
            single: Some((parent, name.to_owned())),
            current: None,
            unusable_names: 0,
            not_carried: 0,
        }
    }

    /// The next entry, without a digest; `None` at the end. A directory is
    /// entered as it is given.
    pub fn next_entry(&mut self) -> Result<Option<TreeEntry>, Refusal> {
        if let Some((parent, name)) = self.single.take() {
            let metadata = parent.symlink_metadata(&name).map_err(classify)?;
            let entry = describe(&metadata, EntryKind::File, name.clone());
            self.current = Some((parent, name));
            return Ok(Some(entry));
        }
        loop {
            let Some(level) = self.levels.last_mut() else {
                return Ok(None);
            };
            let Some(name) = level.names.pop() else {
                self.levels.pop();
                continue;
            };
            let path = format!("{}{name}", level.prefix);
            if RemoteName::parse(&path).is_err() {
                // Too long or too deep as a path, though fine as a name.
                self.unusable_names += 1;
                continue;
            }
            let metadata = match level.dir.symlink_metadata(&name) {
                Ok(metadata) => metadata,
                // Gone since the directory was read: as if never there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(classify(e)),
            };
            if metadata.is_dir() {
                let dir = open_dir_nofollow(&level.dir, &name).map_err(classify)?;
                let entry = describe(&metadata, EntryKind::Directory, path.clone());
                self.enter(dir, format!("{path}/"))?;
                return Ok(Some(entry));
            }
            if !metadata.is_file() {
                self.not_carried += 1;
                continue;
            }
            let dir = level.dir.try_clone().map_err(classify)?;
            self.current = Some((dir, name));
            return Ok(Some(describe(&metadata, EntryKind::File, path)));
        }
    }

    /// Opens the file [`TreeWalk::next_entry`] gave last, refusing
    /// anything else that took its name since.
    pub fn open_current(&self) -> Result<ReadFile, Refusal> {
        let Some((dir, name)) = &self.current else {
            return Err(Refusal::new(ErrorCode::Io, "no file to open in the walk"));
        };
        // Without blocking, in case a fifo took the name; checked below.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, name.as_str(), flags, Mode::empty())
            .map_err(|e| classify(e.into()))?;
        let file = std::fs::File::from(fd);
        let metadata = file.metadata().map_err(classify)?;
        if !metadata.is_file() {
            return Err(Refusal::new(
                ErrorCode::NotARegularFile,
                format!("{name:?} is no longer a regular file"),
            ));
        }
        ReadFile::opened(file, metadata.len())
    }

    /// The digest of the file [`TreeWalk::next_entry`] gave last, `size`
    /// bytes long: the store's record, or else hashed now and remembered
    /// as a get remembers it.
    pub fn digest_current(&self, size: u64) -> Result<Digest, Refusal> {
        let file = self.open_current()?;
        if let Some(digest) = file.cached_digest() {
            return Ok(digest);
        }
        let mut hasher = blake3::Hasher::new();
        let hashed = hasher
            .update_reader((&file.file).take(size))
            .map_err(classify)?
            .count();
        if hashed != size || file.size() != size {
            return Err(changed(&self.current));
        }
        let digest = *hasher.finalize().as_bytes();
        file.remember(&digest);
        Ok(digest)
    }

    /// How many names were left out so far, and why; reasons with none
    /// are not named.
    pub fn omitted(&self) -> impl Iterator<Item = (OmitReason, u64)> {
        [
            (OmitReason::UnusableName, self.unusable_names),
            (OmitReason::NotFileOrDirectory, self.not_carried),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
    }

    /// Reads the names of `dir`, sorted, and makes it the level walked.
    fn enter(&mut self, dir: Dir, prefix: String) -> Result<(), Refusal> {
        let mut names = Vec::new();
        for entry in dir.entries().map_err(classify)? {
            let entry = entry.map_err(classify)?;
            let Ok(name) = entry.file_name().into_string() else {
                self.unusable_names += 1;
                continue;
            };
            match RemoteName::parse(&name) {
                Ok(_) => names.push(name),
                // A transfer in progress: not a name anyone has yet.
                Err(NameError::Reserved) => {}
                Err(_) => self.unusable_names += 1,
            }
        }
        // Byte order, the greatest first: popped, they come smallest first.
        names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        self.levels.push(Level { dir, prefix, names });
        Ok(())
    }
}

/// The entry for what `metadata` describes, as `kind`, at `path`.
fn describe(metadata: &Metadata, kind: EntryKind, path: String) -> TreeEntry {
    TreeEntry {
        kind,
        size: match kind {
            EntryKind::File => metadata.len(),
            EntryKind::Directory | EntryKind::Other => 0,
        },
        mode: metadata.permissions().mode() & 0o777,
        modified: modified_seconds(metadata),
        digest: None,
        path,
    }
}

/// The refusal for a file that changed while it was read.
fn changed(current: &Option<(Dir, String)>) -> Refusal {
    let name = current.as_ref().map_or("", |(_, name)| name.as_str());
    Refusal::new(
        ErrorCode::Io,
        format!("file-changed: {name:?} changed while it was read"),
    )
}

/// Opens the directory `name` in `parent`, refusing to follow a symlink
/// swapped in since it was looked at.
fn open_dir_nofollow(parent: &Dir, name: &str) -> std::io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(parent, OsStr::new(name), flags, Mode::empty())?;
    Ok(Dir::from_std_file(std::fs::File::from(fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk_all(walk: &mut TreeWalk) -> Vec<(EntryKind, String)> {
        let mut out = Vec::new();
        while let Some(entry) = walk.next_entry().unwrap() {
            out.push((entry.kind, entry.path));
        }
        out
    }

    #[test]
    fn a_walk_is_sorted_depth_first_and_leaves_out_links_and_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/y")).unwrap();
        std::fs::write(root.join("a/x"), b"1").unwrap();
        std::fs::write(root.join("a/y/z"), b"22").unwrap();
        std::fs::write(root.join("a.txt"), b"").unwrap();
        std::fs::write(root.join("b"), b"").unwrap();
        std::fs::write(root.join(".ferry-tmp-1-1"), b"").unwrap();
        std::os::unix::fs::symlink("a", root.join("link")).unwrap();
        std::fs::write(root.join("bad\nname"), b"").unwrap();
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority()).unwrap();
        let mut walk = TreeWalk::of_dir(dir).unwrap();
        let dir = EntryKind::Directory;
        let file = EntryKind::File;
        assert_eq!(
            walk_all(&mut walk),
            [
                (dir, "a".to_owned()),
                (file, "a/x".to_owned()),
                (dir, "a/y".to_owned()),
                (file, "a/y/z".to_owned()),
                (file, "a.txt".to_owned()),
                (file, "b".to_owned()),
            ]
        );
        assert_eq!(
            walk.omitted().collect::<Vec<_>>(),
            [
                (OmitReason::UnusableName, 1),
                (OmitReason::NotFileOrDirectory, 1)
            ]
        );
    }
}
