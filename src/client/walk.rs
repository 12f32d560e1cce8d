//! Walking local files and directories into a tree's manifest
//! (PROTOCOL.md §5.10), in the one order a manifest has: a sorted
//! depth-first walk, each directory's names in byte order.
//!
//! The manifest is never held whole: each entry is written, with the local
//! path it came from, to an unnamed temporary file as it is found, and
//! read back for each pass. Only the names of the directory being walked,
//! and of those above it, are in memory at once.
//!
//! Symlinks are not followed and not sent, nor are fifos, sockets and
//! devices; names the protocol cannot carry are skipped too. Each skip is
//! told to the caller, which says so; none fails the walk.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ClientError;
use crate::protocol::{self, EntryKind, Message, RemoteName, TreeEntry};

/// What goes into a tree: a local file or directory, and the name it takes
/// in the tree.
#[derive(Debug, Clone)]
pub enum TreeSource {
    /// What is inside this local directory, at the top of the tree.
    Contents(PathBuf),
    /// This local file or directory, under this name at the top of the
    /// tree.
    Named(PathBuf, String),
}

/// Why a local entry was left out of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// A symbolic link: not followed, not sent.
    Symlink,
    /// A fifo, socket or device.
    Special,
    /// A name the protocol cannot carry (a control character, a
    /// backslash, not UTF-8, too long, or reserved).
    Name,
}

/// A walked tree: its manifest, spooled, and what was left out.
#[derive(Debug)]
pub struct LocalTree {
    spool: File,
    /// How many entries, and the sum of the file sizes.
    pub entries: u64,
    pub bytes: u64,
    /// How many files the manifest holds.
    pub files: u64,
    /// Symlinks, special files and unnamable entries left out.
    pub left_out: u64,
    /// With one directory's contents as the only source, the tree is that
    /// directory's copy: its mode (permission bits) and time, for a top
    /// the tree makes to take.
    pub top: Option<(u32, i64)>,
}

/// One entry read back from the spool.
#[derive(Debug)]
pub struct Spooled {
    pub local: PathBuf,
    pub entry: TreeEntry,
}

impl LocalTree {
    /// Walks `sources` into a manifest. `on_left` hears of each entry left
    /// out. Two sources with the same name are refused.
    pub fn walk(
        sources: &[TreeSource],
        on_left: &mut dyn FnMut(&Path, Left),
    ) -> Result<LocalTree, ClientError> {
        // Several sources, or a file, go into a directory that is no copy
        // of anything.
        let copied_dir = match sources {
            [TreeSource::Contents(dir)] => {
                let metadata = std::fs::metadata(dir).map_err(|e| local(dir.clone(), e))?;
                Some((metadata.permissions().mode() & 0o777, metadata.mtime()))
            }
            _ => None,
        };
        let spool = tempfile::tempfile().map_err(|source| ClientError::Local {
            path: std::env::temp_dir(),
            source,
        })?;
        let mut walker = Walker {
            out: BufWriter::new(spool),
            on_left,
            entries: 0,
            bytes: 0,
            files: 0,
            left_out: 0,
            frame: Vec::new(),
        };
        // A source named on the command line is followed if it is a
        // symlink, as cp follows its operands; nothing inside is.
        let mut top: Vec<(OsString, PathBuf, bool)> = Vec::new();
        for source in sources {
            match source {
                TreeSource::Contents(dir) => top.extend(
                    children(dir)?
                        .into_iter()
                        .map(|(name, path)| (name, path, false)),
                ),
                TreeSource::Named(path, name) => top.push((name.into(), path.clone(), true)),
            }
        }
        top.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let names = top.iter().map(|(name, _, _)| name);
        if let Some(twice) = names.clone().zip(names.skip(1)).find(|(a, b)| a == b) {
            return Err(ClientError::Local {
                path: PathBuf::from(twice.0),
                source: io::Error::other("two sources take this name in the tree"),
            });
        }
        walker.walk_level("", top)?;
        let Walker {
            out,
            entries,
            bytes,
            files,
            left_out,
            ..
        } = walker;
        let spool = out
            .into_inner()
            .map_err(|e| local(std::env::temp_dir(), e.into_error()))?;
        Ok(LocalTree {
            spool,
            entries,
            bytes,
            files,
            left_out,
            top: copied_dir,
        })
    }

    /// Reads the manifest from its start, entry by entry.
    pub fn entries(&self) -> Result<Reader, ClientError> {
        let mut file = self
            .spool
            .try_clone()
            .map_err(|e| local(std::env::temp_dir(), e))?;
        file.rewind().map_err(|e| local(std::env::temp_dir(), e))?;
        Ok(Reader {
            input: BufReader::new(file),
            buf: Vec::new(),
        })
    }
}

/// Reads a spooled manifest back.
pub struct Reader {
    input: BufReader<File>,
    buf: Vec<u8>,
}

impl Reader {
    /// The next entry, or `None` after the last.
    pub fn next_entry(&mut self) -> Result<Option<Spooled>, ClientError> {
        let spool_error = |e| local(std::env::temp_dir(), e);
        let mut len = [0; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(spool_error(e)),
        }
        let mut path = vec![0; u32::from_le_bytes(len) as usize];
        self.input.read_exact(&mut path).map_err(spool_error)?;
        self.input.read_exact(&mut len).map_err(spool_error)?;
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.input.read_exact(&mut self.buf).map_err(spool_error)?;
        let entry = match protocol::decode(&self.buf) {
            Ok(Some((Message::TreeEntry(entry), _))) => entry,
            _ => {
                return Err(spool_error(io::Error::other(
                    "the manifest spool is damaged",
                )))
            }
        };
        Ok(Some(Spooled {
            local: PathBuf::from(OsString::from_vec(path)),
            entry,
        }))
    }
}

struct Walker<'a> {
    out: BufWriter<File>,
    on_left: &'a mut dyn FnMut(&Path, Left),
    entries: u64,
    bytes: u64,
    files: u64,
    left_out: u64,
    frame: Vec<u8>,
}

impl Walker<'_> {
    /// Walks `items`, sorted by name, under the tree path `prefix`; each
    /// says whether a symlink there is followed.
    fn walk_level(
        &mut self,
        prefix: &str,
        items: Vec<(OsString, PathBuf, bool)>,
    ) -> Result<(), ClientError> {
        for (name, local_path, follow) in items {
            let metadata = if follow {
                std::fs::metadata(&local_path)
            } else {
                std::fs::symlink_metadata(&local_path)
            }
            .map_err(|e| local(local_path.clone(), e))?;
            let kind = metadata.file_type();
            if kind.is_symlink() {
                self.leave(&local_path, Left::Symlink);
                continue;
            }
            if !kind.is_dir() && !kind.is_file() {
                self.leave(&local_path, Left::Special);
                continue;
            }
            let Some(path) = tree_path(prefix, &name) else {
                self.leave(&local_path, Left::Name);
                continue;
            };
            let entry = entry_for(&metadata, path);
            self.write(&local_path, &entry)?;
            if kind.is_dir() {
                let mut inside: Vec<_> = children(&local_path)?
                    .into_iter()
                    .map(|(name, path)| (name, path, false))
                    .collect();
                inside.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                self.walk_level(&entry.path, inside)?;
            }
        }
        Ok(())
    }

    fn leave(&mut self, path: &Path, why: Left) {
        self.left_out += 1;
        (self.on_left)(path, why);
    }

    fn write(&mut self, local_path: &Path, entry: &TreeEntry) -> Result<(), ClientError> {
        self.frame.clear();
        protocol::encode(&Message::TreeEntry(entry.clone()), &mut self.frame)
            .map_err(|e| local(local_path.to_owned(), io::Error::other(e.to_string())))?;
        let path = local_path.as_os_str().as_bytes();
        let spool_error = |e| local(std::env::temp_dir(), e);
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        self.out.write_all(&len(path.len())).map_err(spool_error)?;
        self.out.write_all(path).map_err(spool_error)?;
        self.out
            .write_all(&len(self.frame.len()))
            .map_err(spool_error)?;
        self.out.write_all(&self.frame).map_err(spool_error)?;
        self.entries += 1;
        if entry.kind == EntryKind::File {
            self.files += 1;
            self.bytes += entry.size;
        }
        Ok(())
    }
}

/// The entries of the local directory `dir`: name and path.
fn children(dir: &Path) -> Result<Vec<(OsString, PathBuf)>, ClientError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| local(dir.to_owned(), e))? {
        let entry = entry.map_err(|e| local(dir.to_owned(), e))?;
        found.push((entry.file_name(), entry.path()));
    }
    Ok(found)
}

/// `name` under `prefix` as a tree path, if the protocol can carry it.
fn tree_path(prefix: &str, name: &std::ffi::OsStr) -> Option<String> {
    let name = name.to_str()?;
    if name.contains('/') {
        return None;
    }
    let path = if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    };
    match RemoteName::parse(&path) {
        Ok(parsed) if parsed.as_str() == path => Some(path),
        _ => None,
    }
}

/// The manifest entry for a local file or directory.
fn entry_for(metadata: &Metadata, path: String) -> TreeEntry {
    let is_dir = metadata.is_dir();
    TreeEntry {
        kind: if is_dir {
            EntryKind::Directory
        } else {
            EntryKind::File
        },
        size: if is_dir { 0 } else { metadata.len() },
        mode: metadata.permissions().mode() & 0o777,
        modified: metadata.mtime(),
        digest: None,
        path,
    }
}

fn local(path: PathBuf, source: io::Error) -> ClientError {
    ClientError::Local { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ManifestOrder;

    #[test]
    fn a_walk_gives_the_manifest_order_and_leaves_out_links_and_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in ["d", "d/e", "d.x", "a b"] {
            std::fs::create_dir(root.join(dir)).unwrap();
        }
        for file in ["d/e/f", "d/z", "d.x/y", "a b/é", "c", "new\nline"] {
            std::fs::write(root.join(file), b"x").unwrap();
        }
        std::os::unix::fs::symlink("c", root.join("link")).unwrap();
        let mut left = Vec::new();
        let tree = LocalTree::walk(
            &[TreeSource::Contents(root.to_owned())],
            &mut |path, why| left.push((path.file_name().unwrap().to_owned(), why)),
        )
        .unwrap();
        let mut reader = tree.entries().unwrap();
        let mut order = ManifestOrder::new();
        let mut paths = Vec::new();
        while let Some(spooled) = reader.next_entry().unwrap() {
            order.admit(&spooled.entry).unwrap();
            paths.push(spooled.entry.path);
        }
        assert_eq!(
            paths,
            ["a b", "a b/é", "c", "d", "d/e", "d/e/f", "d/z", "d.x", "d.x/y"]
        );
        assert_eq!(
            (tree.entries, tree.files, tree.bytes, tree.left_out),
            (9, 5, 5, 2)
        );
        left.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            left,
            [
                ("link".into(), Left::Symlink),
                ("new\nline".into(), Left::Name)
            ]
        );
    }
}
