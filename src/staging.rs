//! Atomic, never-overwriting file creation.
//!
//! A transfer is written to a hidden temporary file in the directory of its
//! destination and appears under its real name only when [`Staged::commit`]
//! moves it there with a rename that refuses to replace anything. Until
//! then, and if the transfer fails or its task is dropped, the temporary file
//! is removed, so a name only ever shows a complete, verified file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::{Dir, OpenOptions};
use rustix::fs::{AtFlags, RenameFlags};
use rustix::io::Errno;

use crate::protocol::TEMP_PREFIX;

/// Distinguishes the temporary files of one process.
static NEXT_TEMP_ID: AtomicU64 = AtomicU64::new(0);

/// A file being written under a temporary name.
#[derive(Debug)]
pub struct Staged {
    dir: Dir,
    temp_name: String,
    final_name: PathBuf,
    committed: bool,
}

impl Staged {
    /// Creates a temporary file in `dir` for what will become `final_name`,
    /// a single path component. Fails with `AlreadyExists` if the name is
    /// already taken, so a doomed transfer is refused before it starts.
    pub fn create(dir: Dir, final_name: &Path) -> io::Result<(Staged, std::fs::File)> {
        if dir.symlink_metadata(final_name).is_ok() {
            return Err(already_exists());
        }
        let temp_name = format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            NEXT_TEMP_ID.fetch_add(1, Ordering::Relaxed)
        );
        // Readable too: a body is hashed back from the page cache as it is
        // written.
        let file = dir.open_with(
            &temp_name,
            OpenOptions::new().read(true).write(true).create_new(true),
        )?;
        let staged = Staged {
            dir,
            temp_name,
            final_name: final_name.to_owned(),
            committed: false,
        };
        Ok((staged, file.into_std()))
    }

    /// Moves the temporary file to its final name, unless something else took
    /// that name meanwhile (then `AlreadyExists`, and the temporary file goes).
    pub fn commit(mut self) -> io::Result<()> {
        let renamed = rustix::fs::renameat_with(
            &self.dir,
            &self.temp_name,
            &self.dir,
            &self.final_name,
            RenameFlags::NOREPLACE,
        );
        match renamed {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(already_exists()),
            // Filesystems without RENAME_NOREPLACE: a hard link also refuses
            // to replace, and the temporary name is then removed.
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                rustix::fs::linkat(
                    &self.dir,
                    &self.temp_name,
                    &self.dir,
                    &self.final_name,
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::EXIST => already_exists(),
                    other => other.into(),
                })?;
                self.dir.remove_file(&self.temp_name)?;
            }
            Err(other) => return Err(other.into()),
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = self.dir.remove_file(&self.temp_name) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(temp = %self.temp_name, error = %e, "cannot remove temporary file");
                }
            }
        }
    }
}

/// The id of the process that made a temporary file, from its name
/// (`<TEMP_PREFIX><pid>-<n>`, as [`Staged::create`] writes it); `None` for
/// any other name.
pub fn temp_file_owner(name: &str) -> Option<u32> {
    let (pid, counter) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    counter.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn already_exists() -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        "a file by that name already exists",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_dir() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        (tmp, dir)
    }

    fn names(dir: &Dir) -> Vec<String> {
        let mut names: Vec<String> = dir
            .entries()
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn commit_moves_the_file_into_place() {
        let (_tmp, dir) = temp_dir();
        let (staged, mut file) =
            Staged::create(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        file.write_all(b"hello").unwrap();
        assert!(
            names(&dir)[0].starts_with(TEMP_PREFIX),
            "hidden until committed"
        );
        staged.commit().unwrap();
        assert_eq!(names(&dir), ["a.txt"]);
        assert_eq!(dir.read("a.txt").unwrap(), b"hello");
    }

    #[test]
    fn dropping_removes_the_temporary_file() {
        let (_tmp, dir) = temp_dir();
        let (staged, _file) = Staged::create(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        drop(staged);
        assert!(names(&dir).is_empty());
    }

    #[test]
    fn an_existing_name_is_refused_up_front() {
        let (_tmp, dir) = temp_dir();
        dir.write("a.txt", b"old").unwrap();
        let error = Staged::create(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(names(&dir), ["a.txt"]);
    }

    #[test]
    fn a_name_taken_during_the_transfer_is_not_replaced() {
        let (_tmp, dir) = temp_dir();
        let (first, _) = Staged::create(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        let (second, mut file) =
            Staged::create(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        file.write_all(b"second").unwrap();
        second.commit().unwrap();
        assert_eq!(
            first.commit().unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(names(&dir), ["a.txt"]);
        assert_eq!(dir.read("a.txt").unwrap(), b"second");
    }

    #[test]
    fn the_owner_of_a_temporary_file_is_read_from_its_name() {
        let (_tmp, dir) = temp_dir();
        let (_staged, _file) = Staged::create(dir.try_clone().unwrap(), Path::new("x")).unwrap();
        assert_eq!(temp_file_owner(&names(&dir)[0]), Some(std::process::id()));
        assert_eq!(temp_file_owner(".ferry-tmp-4242"), None);
        assert_eq!(temp_file_owner(".ferry-tmp-x-7"), None);
        assert_eq!(temp_file_owner("ferry-tmp-4242-7"), None);
        assert_eq!(temp_file_owner("notes.txt"), None);
    }
}
