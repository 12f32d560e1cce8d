//! Temporary files left behind by a server that was killed mid-upload.
//!
//! A server that dies without running its destructors cannot remove the
//! hidden temporary files of its uploads in flight. They are invisible to
//! clients, but they hold disk space, so a starting server looks for them.
//! A temporary file is named after the process that made it; one whose
//! process is still running, such as another server sharing the directory,
//! is left alone. One named after this very process is a dead one's whose
//! id was reused if it is older than this process's start.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cap_std::fs::Dir;

use crate::staging::temp_file_owner;

/// One temporary file of a dead process, and whether removing it worked.
pub struct Leftover {
    /// Its path relative to the served directory.
    pub path: PathBuf,
    pub removed: io::Result<()>,
}

/// Removes every temporary file under `root` whose process is gone; this
/// process started at `started`. Does not follow symlinks, so it never
/// leaves `root`.
pub fn remove_leftovers(root: &Dir, started: SystemTime) -> Vec<Leftover> {
    // File times are coarse-grained; a second's margin keeps our own fresh
    // files safe. A dead process whose id came back to us within a second
    // of its death is not a real concern: ids are reused after tens of
    // thousands of others.
    let ours_before = started.checked_sub(Duration::from_secs(1));
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = if relative.as_os_str().is_empty() {
            root.try_clone()
        } else {
            root.open_dir(&relative)
        };
        let Ok(entries) = dir.and_then(|dir| dir.entries()) else {
            continue; // unreadable: nothing of ours can be in there
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = relative.join(&name);
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let owner = name.to_str().and_then(temp_file_owner);
            let Some(owner) = owner else {
                if kind.is_dir() {
                    pending.push(path);
                }
                continue;
            };
            let stale = if owner == std::process::id() {
                let modified = entry.metadata().and_then(|m| m.modified());
                modified.is_ok_and(|m| Some(m.into_std()) < ours_before)
            } else {
                !is_running(owner)
            };
            if !stale {
                continue;
            }
            // A tree's staging directory goes with everything in it.
            let removed = if kind.is_dir() {
                remove_staging_dir(root, &relative, &name)
            } else {
                root.remove_file(&path)
            };
            found.push(Leftover { path, removed });
        }
    }
    found
}

/// Removes the staging directory `name` in the directory `relative` of
/// `root`, and what is in it, following no symlink.
fn remove_staging_dir(
    root: &Dir,
    relative: &std::path::Path,
    name: &std::ffi::OsStr,
) -> io::Result<()> {
    let parent = if relative.as_os_str().is_empty() {
        root.try_clone()?
    } else {
        root.open_dir(relative)?
    };
    let name = name.to_str().ok_or_else(|| io::Error::other("not UTF-8"))?;
    super::tree::remove(&parent, name)
        .map(drop)
        .map_err(|refusal| io::Error::other(refusal.message))
}

/// Whether a process with this id exists (possibly another user's).
fn is_running(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TEMP_PREFIX;

    #[test]
    fn this_process_is_running() {
        assert!(is_running(std::process::id()));
    }

    #[test]
    fn a_file_of_our_own_id_is_a_leftover_only_if_older_than_our_start() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let pid = std::process::id();
        let old = format!("{TEMP_PREFIX}{pid}-0");
        let fresh = format!("{TEMP_PREFIX}{pid}-1");
        root.write(&old, b"dead").unwrap();
        root.write(&fresh, b"live").unwrap();
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let old_file = root.open_with(&old, cap_std::fs::OpenOptions::new().write(true));
        old_file
            .unwrap()
            .into_std()
            .set_modified(an_hour_ago)
            .unwrap();

        let found = remove_leftovers(&root, SystemTime::now());
        let removed: Vec<_> = found.iter().map(|l| l.path.clone()).collect();
        assert_eq!(removed, [PathBuf::from(&old)]);
        assert!(root.exists(&fresh));
    }

    #[test]
    fn a_dead_process_s_staging_directory_goes_with_its_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        // No process has the largest id.
        let staging = format!("{TEMP_PREFIX}{}-0", i32::MAX);
        root.create_dir_all(format!("keep/{staging}/sub")).unwrap();
        root.write(format!("keep/{staging}/sub/f"), b"x").unwrap();
        let found = remove_leftovers(&root, SystemTime::now());
        assert_eq!(found.len(), 1);
        assert!(found[0].removed.is_ok());
        assert!(root.exists("keep"));
        assert!(!root.exists(format!("keep/{staging}")));
    }
}
