//! Gets of several names, of directories (`get -r`), or replacing: cp's
//! rules turn the command line's operands into one GetTree request per
//! source, each into the local directory the rules give it.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ferry::client::{Client, ClientError, TreeHow};
use ferry::protocol::{EntryKind, ErrorCode, RemoteName};
use ferry::report::Detail;

use super::output::{print_omitted, ProgressBar};
use super::request::{names_directory, Settings};

/// A get of several names, or of directories, or replacing.
pub struct TreeGet {
    /// `None`: the served directory.
    pub sources: Vec<Option<RemoteName>>,
    pub target: Option<PathBuf>,
    pub recursive: bool,
    pub how: TreeHow,
}

/// A get's operands: the remote names, and the local target (the last
/// operand, when there are two or more).
pub fn split_get(operands: &[OsString]) -> (Vec<String>, Option<PathBuf>) {
    let (sources, target) = match operands {
        [one] => (std::slice::from_ref(one), None),
        [sources @ .., target] => (sources, Some(PathBuf::from(target))),
        [] => (operands, None),
    };
    // A remote name that is not UTF-8 cannot be on the server: kept as
    // its lossy form, it is refused by the server as not found.
    let sources = sources
        .iter()
        .map(|source| source.to_string_lossy().into_owned())
        .collect();
    (sources, target)
}

/// Whether a get is the plain download of one file by a Get request:
/// one name, no -r, no --replace.
pub fn is_plain_get(recursive: bool, replace: bool, sources: &[String]) -> bool {
    !recursive && !replace && sources.len() == 1
}

/// Where a tree get lands: the local target, or the directory it goes
/// into.
pub fn tree_local(sources: &[String], target: Option<PathBuf>) -> String {
    match (target, sources) {
        (Some(target), _) => target.display().to_string(),
        (None, [one]) => RemoteName::parse(one)
            .map_or_else(|_| ".".to_owned(), |name| name.file_name().to_owned()),
        (None, _) => ".".to_owned(),
    }
}

/// A remote directory got without -r: the error says how to get it.
pub fn suggest_recursive(error: ClientError) -> ClientError {
    match error {
        ClientError::Remote {
            code: ErrorCode::IsADirectory,
            message,
        } => ClientError::Remote {
            code: ErrorCode::IsADirectory,
            message: format!("{message}; get -r copies a directory"),
        },
        other => other,
    }
}

/// Gets each source by a GetTree, into the local directory the cp rules
/// give it, and adds up what moved.
pub async fn get_trees(
    client: &mut Client,
    get: TreeGet,
    settings: &Settings,
) -> Result<Detail, ClientError> {
    let started = Instant::now();
    let several = get.sources.len() > 1;
    let (mut files, mut skipped, mut bytes) = (0, 0, 0);
    for source in &get.sources {
        let is_dir = match source {
            None => true,
            Some(name) => match client.stat(Some(name)).await?.kind {
                EntryKind::Directory => true,
                EntryKind::File => false,
                EntryKind::Other => {
                    return Err(ClientError::Remote {
                        code: ErrorCode::NotARegularFile,
                        message: format!("{name}: not a regular file or directory"),
                    })
                }
            },
        };
        if is_dir && !get.recursive {
            return Err(suggest_recursive(ClientError::Remote {
                code: ErrorCode::IsADirectory,
                message: format!("{} is a directory", display_source(source.as_ref())),
            }));
        }
        let base = source.as_ref().map(RemoteName::file_name);
        let dest = match (&get.target, base) {
            // Into a directory: the target of several, or one named so.
            (Some(target), _) if several || (!is_dir && names_directory(target)) => {
                make_dir(target)?;
                match base.filter(|_| is_dir) {
                    Some(base) => target.join(base),
                    None => target.clone(),
                }
            }
            (Some(target), Some(base)) if target.is_dir() => match is_dir {
                true => target.join(base),
                false => target.clone(),
            },
            (Some(target), _) if is_dir => target.clone(),
            // One file to a new name: the plain get, which never replaces,
            // or a tree of that one file, which may.
            (Some(target), Some(_)) if !get.how.replace => {
                let name = source.as_ref().ok_or_else(|| not_a_file(target))?;
                let mut bar = ProgressBar::for_transfer(settings.hides_progress());
                bytes += client.get(name, target, &mut bar).await?;
                files += 1;
                continue;
            }
            (Some(target), _) => {
                let (dir, name) = split_file_target(target)?;
                let mut bar =
                    ProgressBar::for_tree(settings.hides_progress(), settings.file_naming());
                let got = client
                    .get_tree(source.as_ref(), &dir, Some(&name), get.how, &mut bar)
                    .await?;
                (files, skipped, bytes) =
                    (files + got.files, skipped + got.skipped, bytes + got.bytes);
                continue;
            }
            (None, Some(base)) if is_dir => PathBuf::from(base),
            (None, _) => PathBuf::from("."),
        };
        // A bar per source: each tree's totals are known only once its
        // manifest has come.
        let mut bar = ProgressBar::for_tree(settings.hides_progress(), settings.file_naming());
        let got = client
            .get_tree(source.as_ref(), &dest, None, get.how, &mut bar)
            .await?;
        drop(bar);
        print_omitted(&got.omitted, "left out");
        files += got.files;
        skipped += got.skipped;
        bytes += got.bytes;
    }
    Ok(Detail::Tree {
        files,
        skipped,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Makes the local directory `dir`, with its parents, if missing.
fn make_dir(dir: &Path) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir).map_err(|source| ClientError::Local {
        path: dir.to_owned(),
        source,
    })
}

/// The directory a file's new name is in, and the name.
fn split_file_target(target: &Path) -> Result<(PathBuf, String), ClientError> {
    let name = target.file_name().and_then(|name| name.to_str());
    let Some(name) = name else {
        return Err(not_a_file(target));
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_owned()))
}

/// A file cannot take `target` as its name.
fn not_a_file(target: &Path) -> ClientError {
    ClientError::Local {
        path: target.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a usable file name"),
    }
}

/// A source as the user would write it.
fn display_source(source: Option<&RemoteName>) -> &str {
    source.map_or(".", RemoteName::as_str)
}
