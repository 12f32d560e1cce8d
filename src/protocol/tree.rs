//! The order of a tree's manifest (PROTOCOL.md §5.10).
//!
//! Entries come as a sorted depth-first walk gives them: a directory before
//! what is in it, paths increasing component by component in byte order.
//! That order lets a receiver refuse duplicates, entries under a file and
//! entries whose directory was never announced while holding only the path
//! of the entry before, however many entries the tree has.

use super::message::{EntryKind, TreeEntry};
use super::name::{NameError, RemoteName};

/// Why a manifest, or a second pass over it, is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("tree entry {path:?}: {error}")]
    BadPath { path: String, error: NameError },
    #[error("tree entry {0:?} is not in its plain form")]
    NotPlain(String),
    #[error("tree entry {0:?} comes again, or out of order")]
    OutOfOrder(String),
    #[error("tree entry {0:?} is not inside a directory announced before it")]
    NoParent(String),
    #[error("tree entry {0:?} is a directory with a size")]
    SizedDirectory(String),
    #[error("the tree's sizes add up to more than 2^64 bytes")]
    TooManyBytes,
    #[error("the tree's end counts {said_entries} entries of {said_bytes} bytes, but {entries} of {bytes} came")]
    CountMismatch {
        said_entries: u64,
        said_bytes: u64,
        entries: u64,
        bytes: u64,
    },
}

/// The most partials a receiver may say it holds in one tree exchange
/// (`Held`, PROTOCOL.md §5.10, §5.11): the sender keeps each, with up to
/// 64 chaining values, until its file is sent.
pub const MAX_HELD: usize = 16;

/// How the paths `a` and `b` compare in a manifest's order: component by
/// component, each in byte order, so a directory comes before what is in
/// it (`a` < `a/x` < `a.txt`).
pub fn manifest_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Checks a manifest entry by entry, in order.
#[derive(Debug, Default)]
pub struct ManifestOrder {
    /// The components of the entry before.
    previous: Vec<String>,
    /// How many of `previous`'s components are directories: all of them
    /// if it was a directory, all but its last if it was a file.
    open: usize,
    entries: u64,
    bytes: u64,
}

impl ManifestOrder {
    /// A check of a manifest that has had no entry yet.
    pub fn new() -> ManifestOrder {
        ManifestOrder::default()
    }

    /// Takes the next entry, or says why it cannot come here.
    pub fn admit(&mut self, entry: &TreeEntry) -> Result<(), ManifestError> {
        let path = &entry.path;
        let plain = RemoteName::parse(path).map_err(|error| ManifestError::BadPath {
            path: path.clone(),
            error,
        })?;
        if plain.as_str() != path {
            return Err(ManifestError::NotPlain(path.clone()));
        }
        if entry.kind == EntryKind::Directory && entry.size != 0 {
            return Err(ManifestError::SizedDirectory(path.clone()));
        }
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (parent.split('/').collect(), name),
            None => (Vec::new(), path.as_str()),
        };
        let depth = parent.len();
        // Its directory must be one the entry before is in (or is).
        let parent_is_open = depth <= self.open
            && parent
                .iter()
                .zip(&self.previous)
                .all(|(mine, theirs)| mine == theirs);
        if !parent_is_open {
            return Err(ManifestError::NoParent(path.clone()));
        }
        // Beside the entry before (or one of its directories), it must sort
        // after it; below it, it is after it anyway.
        if let Some(before) = self.previous.get(depth) {
            if name <= before.as_str() {
                return Err(ManifestError::OutOfOrder(path.clone()));
            }
        }
        self.bytes = self
            .bytes
            .checked_add(entry.size)
            .ok_or(ManifestError::TooManyBytes)?;
        self.entries += 1;
        self.previous = path.split('/').map(str::to_owned).collect();
        self.open = match entry.kind {
            EntryKind::Directory => self.previous.len(),
            EntryKind::File | EntryKind::Other => depth,
        };
        Ok(())
    }

    /// How many entries came, and the sum of their sizes.
    pub fn counts(&self) -> (u64, u64) {
        (self.entries, self.bytes)
    }

    /// Checks the counts a `TreeEnd` said against what came.
    pub fn finish(&self, said_entries: u64, said_bytes: u64) -> Result<(), ManifestError> {
        if (said_entries, said_bytes) == (self.entries, self.bytes) {
            Ok(())
        } else {
            Err(ManifestError::CountMismatch {
                said_entries,
                said_bytes,
                entries: self.entries,
                bytes: self.bytes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, path: &str) -> TreeEntry {
        TreeEntry {
            kind,
            size: if kind == EntryKind::File { 3 } else { 0 },
            mode: 0o644,
            modified: 0,
            digest: None,
            path: path.into(),
        }
    }

    #[test]
    fn manifest_order_is_the_order_a_manifest_admits() {
        let sorted = ["a", "a/x", "a/x/1", "a/y", "a.txt", "b", "b/a"];
        for pair in sorted.windows(2) {
            assert!(manifest_order(pair[0], pair[1]).is_lt(), "{pair:?}");
            assert!(manifest_order(pair[1], pair[0]).is_gt(), "{pair:?}");
        }
        assert!(manifest_order("a/x", "a/x").is_eq());
        let mut order = ManifestOrder::new();
        for path in sorted {
            let kind = if path.contains('.') || path.ends_with('1') {
                EntryKind::File
            } else {
                EntryKind::Directory
            };
            assert_eq!(order.admit(&entry(kind, path)), Ok(()), "{path}");
        }
    }

    fn dir(path: &str) -> TreeEntry {
        entry(EntryKind::Directory, path)
    }

    fn file(path: &str) -> TreeEntry {
        entry(EntryKind::File, path)
    }

    /// Admits `entries` in turn; the first refusal, if any.
    fn check(entries: &[TreeEntry]) -> Result<ManifestOrder, ManifestError> {
        let mut order = ManifestOrder::new();
        for entry in entries {
            order.admit(entry)?;
        }
        Ok(order)
    }

    #[test]
    fn a_sorted_depth_first_walk_is_admitted_and_counted() {
        let order = check(&[
            dir("a"),
            file("a/x"),
            dir("a/y"),
            dir("a/y/deep"),
            file("a/y/deep/f"),
            file("a/z"),
            file("a.txt"),
            dir("b"),
            file("c"),
        ])
        .unwrap();
        assert_eq!(order.counts(), (9, 15));
        assert!(order.finish(9, 15).is_ok());
        assert!(matches!(
            order.finish(9, 16),
            Err(ManifestError::CountMismatch { .. })
        ));
    }

    #[test]
    fn duplicates_and_disorder_are_refused() {
        let dup = check(&[file("a"), file("a")]);
        assert_eq!(dup.unwrap_err(), ManifestError::OutOfOrder("a".into()));
        let back = check(&[file("b"), file("a")]);
        assert_eq!(back.unwrap_err(), ManifestError::OutOfOrder("a".into()));
        let dir_twice = check(&[dir("d"), file("d/x"), dir("d")]);
        assert_eq!(
            dir_twice.unwrap_err(),
            ManifestError::OutOfOrder("d".into())
        );
        let back_up = check(&[dir("d"), dir("d/e"), file("d/e/x"), file("d/a")]);
        assert_eq!(
            back_up.unwrap_err(),
            ManifestError::OutOfOrder("d/a".into())
        );
    }

    #[test]
    fn entries_under_a_file_or_an_unannounced_directory_are_refused() {
        let under_file = check(&[file("f"), file("f/child")]);
        assert_eq!(
            under_file.unwrap_err(),
            ManifestError::NoParent("f/child".into())
        );
        let unannounced = check(&[file("d/x")]);
        assert_eq!(
            unannounced.unwrap_err(),
            ManifestError::NoParent("d/x".into())
        );
        let left = check(&[dir("d"), file("d/x"), file("e"), file("d/y")]);
        assert_eq!(left.unwrap_err(), ManifestError::NoParent("d/y".into()));
    }

    #[test]
    fn paths_must_be_plain_names() {
        for bad in ["", "../x", "/abs", "a//b", "a\\b", "a\nb", ".ferry-tmp-1"] {
            assert!(
                matches!(check(&[file(bad)]), Err(ManifestError::BadPath { .. })),
                "{bad:?}"
            );
        }
        for not_plain in ["./a", "a/", "a/."] {
            assert_eq!(
                check(&[file(not_plain)]).unwrap_err(),
                ManifestError::NotPlain(not_plain.into())
            );
        }
        let mut sized = dir("d");
        sized.size = 1;
        assert_eq!(
            check(&[sized]).unwrap_err(),
            ManifestError::SizedDirectory("d".into())
        );
    }
}
