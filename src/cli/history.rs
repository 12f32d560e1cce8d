//! Where the shell keeps its history between sessions (issue 16):
//! `$XDG_STATE_HOME/ferry/history`, by default
//! `~/.local/state/ferry/history`, readable by its owner only, since
//! commands name files.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

/// How many lines the history keeps; older ones are dropped.
pub const MAX_ENTRIES: usize = 1000;

/// The history file's place, or `None` with no home directory to put it
/// in. A relative `XDG_STATE_HOME` is ignored, as the XDG spec says.
pub fn path() -> Option<PathBuf> {
    let state_home = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| Some(super::local::home_dir()?.join(".local/state")))?;
    Some(state_home.join("ferry").join("history"))
}

/// Makes the history file at `path` if it is not there, mode 0600 in a
/// directory of mode 0700, so that the editor only ever writes into a
/// file that is the owner's alone.
pub fn create(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    Ok(())
}
