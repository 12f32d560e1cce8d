//! The shell's commands on this machine (issue 16), as sftp has them:
//! `lcd` and `lpwd` for the local working directory (the process's own),
//! `lls` for a listing of it, `!` for a command through `sh -c`, and the
//! home directory that a leading `~` stands for.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use ferry::protocol::{Entry, EntryKind};

use super::output::print_entry;

/// The home directory `~` stands for: `$HOME`, else the account's.
pub fn home_dir() -> Option<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home)),
        _ => dirs::home_dir(),
    }
}

/// Changes the local working directory to `dir` (the home directory if
/// none), as `cd` does in sh.
pub fn change_dir(dir: Option<&Path>) -> Result<(), String> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => home_dir().ok_or("lcd: no home directory to go to")?,
    };
    std::env::set_current_dir(&dir).map_err(|e| format!("lcd {}: {e}", dir.display()))
}

/// The local working directory.
pub fn current_dir() -> Result<PathBuf, String> {
    std::env::current_dir().map_err(|e| format!("lpwd: {e}"))
}

/// Lists the local directory `dir` (the working directory if none) to
/// stdout as `list` lists a remote one: sorted names, directories ending
/// in `/`, hidden names left out, with `long` their size and time. A file
/// lists as itself.
pub fn list(dir: Option<&Path>, long: bool, human: bool) -> Result<(), String> {
    let dir = dir.unwrap_or(Path::new("."));
    let shown = |e: std::io::Error| format!("lls {}: {e}", dir.display());
    let metadata = std::fs::metadata(dir).map_err(shown)?;
    let mut entries = Vec::new();
    if metadata.is_dir() {
        for found in std::fs::read_dir(dir).map_err(shown)? {
            let found = found.map_err(shown)?;
            let name = found.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            // A name removed while listed, or a dangling link, still shows.
            let metadata = std::fs::metadata(found.path()).or_else(|_| found.metadata());
            entries.push(entry(name, metadata.ok()));
        }
    } else {
        entries.push(entry(dir.display().to_string(), Some(metadata)));
    }
    entries.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut stdout = std::io::stdout().lock();
    for entry in &entries {
        print_entry(&mut stdout, entry, long, human);
    }
    let _ = stdout.flush();
    Ok(())
}

/// A listing entry for a local name.
fn entry(name: String, metadata: Option<std::fs::Metadata>) -> Entry {
    let kind = match &metadata {
        Some(metadata) if metadata.is_dir() => EntryKind::Directory,
        Some(metadata) if metadata.is_file() => EntryKind::File,
        _ => EntryKind::Other,
    };
    Entry {
        kind,
        size: metadata
            .as_ref()
            .map_or(0, |metadata| match metadata.is_dir() {
                true => 0,
                false => metadata.len(),
            }),
        modified: metadata.as_ref().map_or(0, MetadataExt::mtime),
        name,
    }
}

/// Runs `command` through `sh -c` on this terminal, or an interactive
/// `$SHELL` (`/bin/sh` if unset) for an empty one, as sftp's `!` does.
/// Its exit status is said if it is not 0; returns whether it was 0.
pub fn run_command(command: &str) -> bool {
    let command = command.trim();
    let (program, status) = match command.is_empty() {
        true => {
            let shell = std::env::var("SHELL")
                .ok()
                .filter(|shell| !shell.is_empty())
                .unwrap_or_else(|| "/bin/sh".to_owned());
            let status = std::process::Command::new(&shell).status();
            (shell, status)
        }
        false => {
            let status = std::process::Command::new("sh")
                .args(["-c", command])
                .status();
            (command.to_owned(), status)
        }
    };
    match status {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("ferry: {program}: {}", describe_status(status));
            false
        }
        Err(e) => {
            eprintln!("ferry: cannot run {program}: {e}");
            false
        }
    }
}

/// How a command that did not succeed ended.
fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}
