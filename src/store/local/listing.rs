//! Listing a directory as a stream: entries are read from the directory a
//! batch at a time, so memory stays bounded whatever its size, and a
//! listing whose client has gone is simply not read further.

use cap_std::fs::{Dir, FileType, ReadDir};

use super::{classify, kind_of, modified_seconds};
use crate::protocol::{Entry, EntryKind, NameError, OmitReason, Refusal, RemoteName};

/// A listing in progress, in the directory's own order.
#[derive(Debug)]
pub struct Listing {
    /// The served directory: symlinks are resolved beneath it, not beneath
    /// the directory listed, so a link to `../elsewhere` inside the root is
    /// followed like any name a client could give.
    root: Dir,
    /// The directory listed, relative to the root (`None`: the root).
    path: Option<String>,
    /// `None` once the directory is read to its end.
    entries: Option<ReadDir>,
    /// The one entry of a listing of a name that is not a directory.
    single: Option<Entry>,
    long: bool,
    unusable_names: u64,
    links_outside: u64,
    vanished: u64,
}

impl Listing {
    /// Lists the directory `path` beneath `root` (`None`: the root).
    pub(super) fn of_dir(root: &Dir, path: Option<&str>, long: bool) -> Result<Listing, Refusal> {
        let entries = match path {
            Some(path) => root.read_dir(path),
            None => root.entries(),
        }
        .map_err(classify)?;
        Ok(Listing {
            root: root.try_clone().map_err(classify)?,
            path: path.map(str::to_owned),
            entries: Some(entries),
            single: None,
            long,
            unusable_names: 0,
            links_outside: 0,
            vanished: 0,
        })
    }

    /// Lists `name` beneath `root`: its entries if it is a directory (or a
    /// symlink to one inside the root), or else the one entry for it, as
    /// `ls -l file` shows the file.
    pub(super) fn of_name(root: &Dir, name: &RemoteName, long: bool) -> Result<Listing, Refusal> {
        // Follows symlinks, but only within the root.
        let metadata = root.metadata(name.as_str()).map_err(classify)?;
        if metadata.is_dir() {
            return Listing::of_dir(root, Some(name.as_str()), long);
        }
        let (size, modified) = if long {
            (metadata.len(), modified_seconds(&metadata))
        } else {
            (0, 0)
        };
        let entry = Entry {
            kind: kind_of(&metadata),
            size,
            modified,
            name: name.file_name().to_owned(),
        };
        Ok(Listing {
            root: root.try_clone().map_err(classify)?,
            path: None,
            entries: None,
            single: Some(entry),
            long,
            unusable_names: 0,
            links_outside: 0,
            vanished: 0,
        })
    }

    /// The next entries, at most `max` of them; none at the end.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Entry>, Refusal> {
        let mut batch: Vec<Entry> = self.single.take().into_iter().collect();
        while batch.len() < max {
            let Some(entries) = self.entries.as_mut() else {
                break;
            };
            let Some(dir_entry) = entries.next() else {
                self.entries = None;
                break;
            };
            let dir_entry = dir_entry.map_err(classify)?;
            let Ok(name) = dir_entry.file_name().into_string() else {
                self.unusable_names += 1;
                continue;
            };
            match RemoteName::parse(&name) {
                Ok(_) => {}
                // A transfer in progress: not a name anyone has yet.
                Err(NameError::Reserved) => continue,
                // Names no client could ask for (control characters,
                // backslashes): a ferry server never lists a name that
                // breaks the rules, so a client may refuse one.
                Err(_) => {
                    self.unusable_names += 1;
                    continue;
                }
            }
            let file_type = dir_entry.file_type().map_err(classify)?;
            if let Some(entry) = self.describe(name, file_type)? {
                batch.push(entry);
            }
        }
        Ok(batch)
    }

    /// Whether the directory has been read to its end: no batch is left.
    pub fn is_done(&self) -> bool {
        self.single.is_none() && self.entries.is_none()
    }

    /// How many names were left out so far, and why; reasons with none
    /// are not named.
    pub fn omitted(&self) -> impl Iterator<Item = (OmitReason, u64)> {
        [
            (OmitReason::UnusableName, self.unusable_names),
            (OmitReason::LinkOutside, self.links_outside),
            (OmitReason::Vanished, self.vanished),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
    }

    /// The entry for `name`, or `None` if it is left out (and counted).
    fn describe(&mut self, name: String, file_type: FileType) -> Result<Option<Entry>, Refusal> {
        if !self.long && !file_type.is_symlink() {
            // The directory entry says what it is: no stat needed.
            let kind = if file_type.is_dir() {
                EntryKind::Directory
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            return Ok(Some(Entry {
                kind,
                size: 0,
                modified: 0,
                name,
            }));
        }
        // Follows symlinks, but only within the root: a symlink is listed
        // as what it leads to.
        let full = match &self.path {
            Some(path) => format!("{path}/{name}"),
            None => name.clone(),
        };
        let metadata = match self.root.metadata(&full) {
            Ok(metadata) => metadata,
            Err(_) if file_type.is_symlink() => {
                self.links_outside += 1;
                return Ok(None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.vanished += 1;
                return Ok(None);
            }
            Err(e) => return Err(classify(e)),
        };
        let (size, modified) = if self.long {
            let size = if metadata.is_file() {
                metadata.len()
            } else {
                0
            };
            (size, modified_seconds(&metadata))
        } else {
            (0, 0)
        };
        Ok(Some(Entry {
            kind: kind_of(&metadata),
            size,
            modified,
            name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_files(count: usize) -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        for n in 0..count {
            std::fs::write(tmp.path().join(format!("f{n}")), b"x").unwrap();
        }
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        (tmp, dir)
    }

    #[test]
    fn a_listing_comes_in_batches_of_at_most_the_size_asked() {
        let (_tmp, root) = root_with_files(10);
        let mut listing = Listing::of_dir(&root, None, false).unwrap();
        let mut sizes = Vec::new();
        loop {
            let batch = listing.next_batch(4).unwrap();
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(listing.omitted().count(), 0);
    }

    #[test]
    fn a_listing_is_done_once_a_batch_reaches_the_directory_end() {
        let (_tmp, root) = root_with_files(3);
        let mut listing = Listing::of_dir(&root, None, false).unwrap();
        assert!(!listing.is_done());
        assert_eq!(listing.next_batch(3).unwrap().len(), 3);
        assert!(!listing.is_done(), "a full batch cannot know the end came");
        assert!(listing.next_batch(3).unwrap().is_empty());
        assert!(listing.is_done());
        let mut short = Listing::of_dir(&root, None, false).unwrap();
        assert_eq!(short.next_batch(4).unwrap().len(), 3);
        assert!(short.is_done(), "a short batch reached the end");
    }

    /// An entry removed between reading the directory and describing it
    /// is left out and counted, not a failure of the whole listing (issue
    /// 12: with other clients putting and deleting, `list -l` failed).
    #[test]
    fn entries_that_vanish_mid_listing_are_counted_not_fatal() {
        let (tmp, root) = root_with_files(10);
        let mut listing = Listing::of_dir(&root, None, true).unwrap();
        let first = listing.next_batch(1).unwrap();
        assert_eq!(first.len(), 1);
        for n in 0..10 {
            let name = format!("f{n}");
            if name != first[0].name {
                std::fs::remove_file(tmp.path().join(name)).unwrap();
            }
        }
        // The directory was read ahead: its names come, their files are gone.
        let rest = listing.next_batch(100).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(
            listing.omitted().collect::<Vec<_>>(),
            [(OmitReason::Vanished, 9)]
        );
    }
}
