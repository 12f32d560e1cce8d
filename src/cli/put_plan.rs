//! What `put [-r] [--replace] LOCAL... [REMOTE]` means, by the rules of
//! cp and scp: the last of two or more operands is the target; several
//! sources go into it as a directory; one file goes to it as a new name,
//! or into it if it is a directory; a directory (with `-r`) goes inside a
//! directory that exists, or becomes a target that does not.
//!
//! Some answers depend on the server (is the target a directory?): those
//! are left as a [`Resolve`], asked with a Stat once connected.

use std::path::{Path, PathBuf};

use ferry::client::{Client, ClientError, TreeSource};
use ferry::protocol::{EntryKind, ErrorCode, RemoteName, RequestKind};

use super::request::CommandError;

/// A put, planned as far as it can be without the server.
#[derive(Debug)]
pub enum PutPlan {
    /// One file by a plain Put, as ever: to `name`, or, if the server has
    /// a directory by that name (it refuses the put to it), into it as
    /// `if_dir`.
    File {
        local: PathBuf,
        name: String,
        if_dir: Option<String>,
    },
    /// A tree (PutTree): `sources` into the directory `target`, once
    /// `resolve` has settled it.
    Tree {
        sources: Vec<TreeSource>,
        target: Option<RemoteName>,
        resolve: Resolve,
        replace: bool,
    },
}

/// What the server must be asked before a tree's target is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolve {
    /// Nothing: the target is known.
    Nothing,
    /// A directory source (its contents, `base` its name): inside the
    /// target if that is a directory, else the target becomes the copy.
    DirInto { base: String },
    /// One file replacing (`--replace`), named `base` locally: inside the
    /// target if that is a directory, else it is the file's new name.
    FileInto { base: String },
}

/// Plans a put of `paths` (sources, then the target if there are two or
/// more).
pub fn plan(paths: &[PathBuf], recursive: bool, replace: bool) -> Result<PutPlan, CommandError> {
    let (sources, target) = match paths {
        [] => return Err(CommandError::LocalName("put needs a local path".into())),
        [only] => (std::slice::from_ref(only), None),
        [sources @ .., target] => (sources, Some(remote_text(target)?)),
    };
    let mut kinds = Vec::with_capacity(sources.len());
    for source in sources {
        let metadata = std::fs::metadata(source).map_err(|source_error| ClientError::Local {
            path: source.clone(),
            source: source_error,
        })?;
        if metadata.is_dir() && !recursive {
            return Err(CommandError::LocalName(format!(
                "{} is a directory; put -r copies a directory and everything in it",
                source.display()
            )));
        }
        kinds.push(metadata.is_dir());
    }
    // `.` and `/` name the served directory itself.
    let target = match target {
        Some(text) => Some(RemoteName::parse_dir(&text)?.map(|name| (name, text.ends_with('/')))),
        None => None,
    };
    let (source, is_dir) = match (sources, kinds.as_slice()) {
        ([source], [is_dir]) => (source, *is_dir),
        _ => {
            // Several sources: the target is a directory, made if missing.
            let named = sources
                .iter()
                .map(|source| Ok(TreeSource::Named(source.clone(), base_name(source)?)))
                .collect::<Result<Vec<_>, CommandError>>()?;
            return Ok(PutPlan::Tree {
                sources: named,
                target: target.flatten().map(|(name, _)| name),
                resolve: Resolve::Nothing,
                replace,
            });
        }
    };
    let base = base_name(source)?;
    if is_dir {
        let (target, resolve) = match target.flatten() {
            // Without a target, or into the served directory: its name
            // at the top, merged into what is there.
            None => (Some(RemoteName::parse(&base)?), Resolve::Nothing),
            Some((target, _)) => (Some(target), Resolve::DirInto { base }),
        };
        return Ok(PutPlan::Tree {
            sources: vec![TreeSource::Contents(source.clone())],
            target,
            resolve,
            replace,
        });
    }
    if !replace {
        let (name, if_dir) = match target.flatten() {
            None => (base, None),
            Some((dir, true)) => (format!("{dir}/{base}"), None),
            Some((name, false)) => (name.to_string(), Some(format!("{name}/{base}"))),
        };
        return Ok(PutPlan::File {
            local: source.clone(),
            name,
            if_dir,
        });
    }
    let (target, resolve) = match target.flatten() {
        None => (None, Resolve::Nothing),
        Some((dir, true)) => (Some(dir), Resolve::Nothing),
        Some((name, false)) => (Some(name), Resolve::FileInto { base: base.clone() }),
    };
    Ok(PutPlan::Tree {
        sources: vec![TreeSource::Named(source.clone(), base)],
        target,
        resolve,
        replace,
    })
}

/// The kind of request a put makes and the name its report shows: the
/// remote name of a single file, a tree's target (or its first source's
/// name, without one).
pub fn describe(
    paths: &[PathBuf],
    recursive: bool,
    replace: bool,
) -> (RequestKind, Option<String>) {
    let fallback = || paths.last().map(|path| path.to_string_lossy().into_owned());
    match plan(paths, recursive, replace) {
        Ok(PutPlan::File { name, .. }) => (RequestKind::Put, Some(name)),
        Ok(PutPlan::Tree { target, .. }) => (RequestKind::PutTree, target.map(|t| t.to_string())),
        Err(_) => (RequestKind::Put, fallback()),
    }
}

/// Settles a tree's target with the server: the target, and its sources
/// as they are to be named.
pub async fn resolve(
    client: &mut Client,
    target: Option<RemoteName>,
    resolve: &Resolve,
    sources: Vec<TreeSource>,
) -> Result<(Option<RemoteName>, Vec<TreeSource>), ClientError> {
    let Some(name) = target else {
        return Ok((None, sources));
    };
    let base = match resolve {
        Resolve::Nothing => return Ok((Some(name), sources)),
        Resolve::DirInto { base } | Resolve::FileInto { base } => base,
    };
    if is_remote_dir(client, &name).await? {
        let inside =
            RemoteName::parse(&format!("{name}/{base}")).map_err(|e| ClientError::Remote {
                code: ErrorCode::BadName,
                message: e.to_string(),
            })?;
        return Ok(match resolve {
            Resolve::DirInto { .. } => (Some(inside), sources),
            _ => (Some(name), sources),
        });
    }
    if *resolve == (Resolve::DirInto { base: base.clone() }) {
        return Ok((Some(name), sources));
    }
    // One file under a new name: into the name's parent.
    let renamed = sources
        .into_iter()
        .map(|source| match source {
            TreeSource::Named(path, _) => TreeSource::Named(path, name.file_name().to_owned()),
            other => other,
        })
        .collect();
    let parent = name
        .parent()
        .map(RemoteName::parse)
        .transpose()
        .map_err(|e| ClientError::Remote {
            code: ErrorCode::BadName,
            message: e.to_string(),
        })?;
    Ok((parent, renamed))
}

/// Whether the server has a directory called `name`; a missing name is
/// not one. Where stat is not allowed (an upload-only server, a
/// write-only token) the name is taken as it is, as puts always did.
pub async fn is_remote_dir(client: &mut Client, name: &RemoteName) -> Result<bool, ClientError> {
    match client.stat(Some(name)).await {
        Ok(info) => Ok(info.kind == EntryKind::Directory),
        Err(ClientError::Remote {
            code: ErrorCode::NotFound | ErrorCode::NotADirectory | ErrorCode::Forbidden,
            ..
        })
        | Err(ClientError::Unsupported(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The remote operand as text: it must be UTF-8 to be a name at all.
fn remote_text(path: &Path) -> Result<String, CommandError> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        CommandError::LocalName(format!(
            "{} is not UTF-8, so it cannot be a name on the server",
            path.display()
        ))
    })
}

/// The name a local path takes on the server: its last component (of the
/// absolute path, for `.` and the like).
fn base_name(path: &Path) -> Result<String, CommandError> {
    let named = || -> Option<String> {
        let name = match path.file_name() {
            Some(name) => name.to_owned(),
            None => path.canonicalize().ok()?.file_name()?.to_owned(),
        };
        name.to_str().map(str::to_owned)
    };
    named().ok_or_else(|| {
        CommandError::LocalName(format!(
            "cannot take a name on the server from {}; give a target after it",
            path.display()
        ))
    })
}

#[cfg(test)]
// The binary denies unwrap outside tests as the library does, but without
// the library's exemption for tests.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("photos")).unwrap();
        std::fs::write(tmp.path().join("a.txt"), b"a").unwrap();
        std::fs::write(tmp.path().join("b.txt"), b"b").unwrap();
        tmp
    }

    fn tree(plan: PutPlan) -> (Option<String>, Resolve, usize) {
        match plan {
            PutPlan::Tree {
                target,
                resolve,
                sources,
                ..
            } => (target.map(|t| t.to_string()), resolve, sources.len()),
            other => panic!("not a tree: {other:?}"),
        }
    }

    #[test]
    fn operands_follow_cp_and_scp() {
        let tmp = fixture();
        let at = |name: &str| tmp.path().join(name);
        let photos = || Resolve::DirInto {
            base: "photos".into(),
        };
        assert_eq!(
            tree(plan(&[at("photos")], true, false).unwrap()),
            (Some("photos".into()), Resolve::Nothing, 1)
        );
        assert_eq!(
            tree(plan(&[at("photos"), "backup/".into()], true, false).unwrap()),
            (Some("backup".into()), photos(), 1)
        );
        assert_eq!(
            tree(plan(&[at("photos"), ".".into()], true, false).unwrap()),
            (Some("photos".into()), Resolve::Nothing, 1)
        );
        assert_eq!(
            tree(plan(&[at("a.txt"), at("b.txt"), "d".into()], false, false).unwrap()),
            (Some("d".into()), Resolve::Nothing, 2)
        );
        assert_eq!(
            tree(plan(&[at("a.txt"), "b.txt".into()], false, true).unwrap()),
            (
                Some("b.txt".into()),
                Resolve::FileInto {
                    base: "a.txt".into()
                },
                1
            )
        );
        let PutPlan::File { name, if_dir, .. } =
            plan(&[at("a.txt"), "b.txt".into()], false, false).unwrap()
        else {
            panic!("a plain put")
        };
        assert_eq!(
            (name.as_str(), if_dir.as_deref()),
            ("b.txt", Some("b.txt/a.txt"))
        );
        let error = plan(&[at("photos")], false, false).unwrap_err();
        assert!(error.to_string().contains("put -r"), "{error}");
    }
}
