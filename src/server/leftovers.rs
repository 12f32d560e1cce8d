//! Temporary files left behind by a server that was killed mid-upload.
//!
//! A server that dies without running its destructors cannot remove the
//! hidden temporary files of its uploads in flight. They are invisible to
//! clients, but they hold disk space, so a starting server looks for them.
//! A temporary file is named after the process that made it; one whose
//! process is still running, such as another server sharing the directory,
//! is left alone.

use std::io;
use std::path::PathBuf;

use cap_std::fs::Dir;

use crate::staging::temp_file_owner;

/// One temporary file of a dead process, and whether removing it worked.
pub struct Leftover {
    /// Its path relative to the served directory.
    pub path: PathBuf,
    pub removed: io::Result<()>,
}

/// Removes every temporary file under `root` whose process is gone. Does
/// not follow symlinks, so it never leaves `root`.
pub fn remove_leftovers(root: &Dir) -> Vec<Leftover> {
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
            if kind.is_dir() {
                pending.push(path);
            } else if let Some(owner) = name.to_str().and_then(temp_file_owner) {
                if !is_running(owner) {
                    let removed = root.remove_file(&path);
                    found.push(Leftover { path, removed });
                }
            }
        }
    }
    found
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

    #[test]
    fn this_process_is_running() {
        assert!(is_running(std::process::id()));
    }
}
