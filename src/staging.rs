//! Atomic, never-overwriting file creation.
//!
//! A transfer is written to a temporary file in the directory of its
//! destination and appears under its real name only when [`Staged::commit`]
//! has synced it to disk and moved it there with a rename that refuses to
//! replace anything, then synced the directory. Until then, and if the
//! transfer fails or its task is dropped, the temporary file is removed, so
//! a name only ever shows a complete, verified file that a power cut will
//! not take back.
//!
//! The temporary file is hidden by a name ([`Staged::create`]), which a
//! server can sweep up after a crash, or has no name at all
//! ([`Staged::create_unnamed`], `O_TMPFILE`), so that even a process killed
//! outright leaves nothing behind.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::{Dir, OpenOptions};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::protocol::TEMP_PREFIX;

/// Files of at least this many bytes, written in a batch that is synced
/// later, have their writeback started as soon as they are complete.
pub const EARLY_WRITEBACK: u64 = 1024 * 1024;

/// Starts writing `file`'s dirty pages to disk, without waiting: the sync
/// that follows later (a batch's `syncfs`) then finds little left to
/// write, and the disk works while the next files arrive rather than all
/// at once at the end. Best effort; durability still rests on that sync.
pub fn start_writeback(file: &impl AsRawFd) {
    // SAFETY: sync_file_range only reads its integer arguments; the
    // descriptor is borrowed from a live file for the call.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Distinguishes the temporary files of one process.
static NEXT_TEMP_ID: AtomicU64 = AtomicU64::new(0);

/// A file being written under a temporary name, or none.
#[derive(Debug)]
pub struct Staged {
    dir: Dir,
    /// `None` for an unnamed (`O_TMPFILE`) file.
    temp_name: Option<String>,
    final_name: PathBuf,
    /// Whether the commit may replace a file of the final name.
    replaces: bool,
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
        Self::create_named(dir, final_name)
    }

    /// Like [`Staged::create`], but for a file that replaces whatever
    /// file has `final_name` when it is committed, atomically: a reader of
    /// the name sees the old file or the new one, never a mix.
    pub fn create_replacing(dir: Dir, final_name: &Path) -> io::Result<(Staged, std::fs::File)> {
        let (mut staged, file) = Self::create_named(dir, final_name)?;
        staged.replaces = true;
        Ok((staged, file))
    }

    /// Like [`Staged::create`], but the file has no name until it is
    /// committed, so nothing is left behind however the process ends. Falls
    /// back to a named temporary file where the filesystem has no
    /// `O_TMPFILE`.
    pub fn create_unnamed(dir: Dir, final_name: &Path) -> io::Result<(Staged, std::fs::File)> {
        if dir.symlink_metadata(final_name).is_ok() {
            return Err(already_exists());
        }
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::openat(&dir, ".", flags, Mode::from_raw_mode(0o666)) {
            Ok(fd) => {
                let staged = Staged {
                    dir,
                    temp_name: None,
                    final_name: final_name.to_owned(),
                    replaces: false,
                    committed: false,
                };
                Ok((staged, std::fs::File::from(fd)))
            }
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
                Self::create_named(dir, final_name)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn create_named(dir: Dir, final_name: &Path) -> io::Result<(Staged, std::fs::File)> {
        // Readable too: a body is hashed back from the page cache as it is
        // written.
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        let mut attempts = 0;
        let (temp_name, file) = loop {
            let temp_name = format!(
                "{TEMP_PREFIX}{}-{}",
                std::process::id(),
                NEXT_TEMP_ID.fetch_add(1, Ordering::Relaxed)
            );
            match dir.open_with(&temp_name, &options) {
                Ok(file) => break (temp_name, file),
                // A process killed before us, with our id, left it; its
                // name is not ours to take, and not the final name's fault.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let staged = Staged {
            dir,
            temp_name: Some(temp_name),
            final_name: final_name.to_owned(),
            replaces: false,
            committed: false,
        };
        Ok((staged, file.into_std()))
    }

    /// Moves the file to its final name, replacing what has it only if
    /// `replace`. The caller has synced the file already (a tree syncs its
    /// whole filesystem once per batch, not each file) and syncs the
    /// directory after.
    pub fn rename_synced(mut self, replace: bool) -> io::Result<()> {
        let Some(temp_name) = self.temp_name.clone() else {
            return Err(io::Error::other("an unnamed file is linked, not renamed"));
        };
        if replace {
            self.dir.rename(&temp_name, &self.dir, &self.final_name)?;
        } else {
            self.rename_into_place(&temp_name)?;
        }
        self.committed = true;
        Ok(())
    }

    /// Syncs `file`, the one [`Staged::create`] gave, to disk; moves it to
    /// its final name unless something else took that name meanwhile (then
    /// `AlreadyExists`, and the temporary file goes; made by
    /// [`Staged::create_replacing`], it replaces a file there); then syncs the
    /// directory, so the name survives a power cut too.
    pub fn commit(mut self, file: &std::fs::File) -> io::Result<()> {
        file.sync_data()?;
        match &self.temp_name {
            Some(temp_name) => self.rename_into_place(temp_name)?,
            None => self.link_into_place(file)?,
        }
        self.committed = true;
        // cap-std's handle may be O_PATH, which cannot be synced. A
        // directory we may write but not read (a drop box) cannot be opened
        // to sync; syncing its whole filesystem covers it.
        let readable = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.dir, ".", readable, Mode::empty()) {
            Ok(dir) => rustix::fs::fsync(dir)?,
            Err(Errno::ACCESS) => rustix::fs::syncfs(file)?,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn rename_into_place(&self, temp_name: &str) -> io::Result<()> {
        if self.replaces {
            // rename(2) replaces a file atomically; a directory that took
            // the name meanwhile it refuses (EISDIR).
            let (dir, to) = (&self.dir, &self.final_name);
            return Ok(rustix::fs::renameat(dir, temp_name, dir, to)?);
        }
        let renamed = rustix::fs::renameat_with(
            &self.dir,
            temp_name,
            &self.dir,
            &self.final_name,
            RenameFlags::NOREPLACE,
        );
        match renamed {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => Err(already_exists()),
            // Filesystems without RENAME_NOREPLACE: a hard link also refuses
            // to replace, and the temporary name is then removed.
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                rustix::fs::linkat(
                    &self.dir,
                    temp_name,
                    &self.dir,
                    &self.final_name,
                    AtFlags::empty(),
                )
                .map_err(not_replacing)?;
                self.dir.remove_file(temp_name)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Gives an unnamed file its name; linking, like renaming without
    /// replacement, fails if the name is taken.
    fn link_into_place(&self, file: &std::fs::File) -> io::Result<()> {
        // The way open(2) documents: through /proc, which needs no
        // privilege, where AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH.
        let through_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
        let linked = rustix::fs::linkat(
            rustix::fs::CWD,
            &through_proc,
            &self.dir,
            &self.final_name,
            AtFlags::SYMLINK_FOLLOW,
        );
        match linked {
            Err(Errno::NOENT) => {
                rustix::fs::linkat(file, "", &self.dir, &self.final_name, AtFlags::EMPTY_PATH)
            }
            other => other,
        }
        .map_err(not_replacing)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let Some(temp_name) = self.temp_name.as_ref().filter(|_| !self.committed) else {
            return;
        };
        if let Err(e) = self.dir.remove_file(temp_name) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(temp = %temp_name, error = %e, "cannot remove temporary file");
            }
        }
    }
}

/// Makes a hidden directory in `dir` to build a tree in, named as
/// temporary files are, so that a server starting after a crash sweeps it
/// up as it does them. Returns its name.
pub fn make_staging_dir(dir: &Dir) -> io::Result<String> {
    for _ in 0..100 {
        let name = format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            NEXT_TEMP_ID.fetch_add(1, Ordering::Relaxed)
        );
        match dir.create_dir(&name) {
            Ok(()) => return Ok(name),
            // A dead process with our id left it; see `create_named`.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(already_exists())
}

/// The id of the process that made a temporary file, from its name
/// (`<TEMP_PREFIX><pid>-<n>`, as [`Staged::create`] and
/// [`make_staging_dir`] write it); `None` for
/// any other name.
pub fn temp_file_owner(name: &str) -> Option<u32> {
    let (pid, counter) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    counter.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn not_replacing(error: Errno) -> io::Error {
    match error {
        Errno::EXIST => already_exists(),
        other => other.into(),
    }
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
        staged.commit(&file).unwrap();
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
        let (first, first_file) =
            Staged::create(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        let (second, mut file) =
            Staged::create(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        file.write_all(b"second").unwrap();
        second.commit(&file).unwrap();
        assert_eq!(
            first.commit(&first_file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(names(&dir), ["a.txt"]);
        assert_eq!(dir.read("a.txt").unwrap(), b"second");
    }

    #[test]
    fn an_unnamed_file_shows_nothing_until_committed_and_nothing_if_dropped() {
        let (_tmp, dir) = temp_dir();
        let (staged, mut file) =
            Staged::create_unnamed(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        assert_eq!(staged.temp_name, None, "this filesystem has O_TMPFILE");
        file.write_all(b"hello").unwrap();
        assert!(names(&dir).is_empty());
        staged.commit(&file).unwrap();
        assert_eq!(names(&dir), ["a.txt"]);
        assert_eq!(dir.read("a.txt").unwrap(), b"hello");

        let (dropped, _file) =
            Staged::create_unnamed(dir.try_clone().unwrap(), Path::new("b.txt")).unwrap();
        drop(dropped);
        assert_eq!(names(&dir), ["a.txt"]);
    }

    #[test]
    fn an_unnamed_file_does_not_replace_a_name_taken_meanwhile() {
        let (_tmp, dir) = temp_dir();
        let (staged, file) =
            Staged::create_unnamed(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        dir.write("a.txt", b"theirs").unwrap();
        assert_eq!(
            staged.commit(&file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(names(&dir), ["a.txt"]);
        assert_eq!(dir.read("a.txt").unwrap(), b"theirs");
    }

    #[test]
    fn a_replacing_file_takes_the_name_of_an_existing_one() {
        let (_tmp, dir) = temp_dir();
        dir.write("a.txt", b"old").unwrap();
        let (staged, mut file) =
            Staged::create_replacing(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        file.write_all(b"new").unwrap();
        assert_eq!(
            dir.read("a.txt").unwrap(),
            b"old",
            "untouched until committed"
        );
        staged.commit(&file).unwrap();
        assert_eq!(names(&dir), ["a.txt"]);
        assert_eq!(dir.read("a.txt").unwrap(), b"new");
    }

    #[test]
    fn a_temporary_name_left_by_a_dead_process_with_our_id_is_stepped_over() {
        let (_tmp, dir) = temp_dir();
        let next = NEXT_TEMP_ID.load(Ordering::Relaxed);
        let pid = std::process::id();
        for n in next..next + 3 {
            dir.write(format!("{TEMP_PREFIX}{pid}-{n}"), b"stale")
                .unwrap();
        }
        let (staged, file) = Staged::create(dir.try_clone().unwrap(), Path::new("a.txt")).unwrap();
        staged.commit(&file).unwrap();
        assert!(names(&dir).contains(&"a.txt".to_owned()));
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
