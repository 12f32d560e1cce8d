//! Local globs in the shell (issue 13): a put's local operands expanded
//! against the local filesystem as sh expands them, with the matcher remote
//! globs use: `*`, `?` and `[...]` in any component (`dir*/x.txt`), a
//! leading `.` matched only by a literal one, the names sorted, and a
//! pattern that matches nothing an error, as with bash's `failglob` (the
//! command is not run). A quoted word is not expanded. In one-shot mode
//! the user's own shell has done all this before ferry starts.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ferry::client::glob::Pattern;

use super::shell_words::Word;
use super::Request;

/// Why a local pattern gave no paths.
#[derive(Debug, thiserror::Error)]
pub enum LocalGlobError {
    /// No local file matches the pattern.
    #[error("{pattern}: no match")]
    NoMatch { pattern: String },
    /// A directory the pattern needs could not be read.
    #[error("{pattern}: cannot read {}: {source}", dir.display())]
    Unreadable {
        pattern: String,
        dir: PathBuf,
        source: io::Error,
    },
}

/// The put `request` with each local operand that is an unquoted pattern
/// replaced by the paths it matches, relative ones in `cwd` (the shell
/// passes `.`); any other request as it is. `words` are the words of the
/// line `request` was parsed from.
///
/// One operand that matches several paths has no target after it: they
/// go to the top of the served directory, as `put a b .` sends them, not
/// `a` under the name `b`.
pub fn expand_put(request: Request, words: &[Word], cwd: &Path) -> Result<Request, LocalGlobError> {
    let Request::Put {
        recursive,
        replace,
        restart,
        paths,
    } = request
    else {
        return Ok(request);
    };
    let operands = put_operands(words);
    // The words clap took as the paths; if they are not (which the put's
    // grammar rules out), nothing is expanded rather than the wrong word.
    let same = operands.len() == paths.len()
        && operands
            .iter()
            .zip(&paths)
            .all(|(word, path)| path.as_os_str() == word.text.as_str());
    if !same {
        return Ok(Request::Put {
            recursive,
            replace,
            restart,
            paths,
        });
    }
    let locals = match paths.len() {
        1 => 1,
        n => n - 1,
    };
    let mut expanded = Vec::with_capacity(paths.len());
    for (index, (word, path)) in operands.iter().zip(paths).enumerate() {
        let matched = match &word.pattern {
            Some(pattern) if index < locals => expand(cwd, pattern, &word.text)?,
            _ => None,
        };
        match matched {
            // A file called `-` that a pattern matched is that file, not
            // standard input.
            Some(matched) => {
                expanded.extend(
                    matched
                        .into_iter()
                        .map(|path| match path.as_os_str() == "-" {
                            true => PathBuf::from("./-"),
                            false => path,
                        }),
                )
            }
            None => expanded.push(path),
        }
    }
    if locals == 1 && operands.len() == 1 && expanded.len() > 1 {
        expanded.push(PathBuf::from("."));
    }
    Ok(Request::Put {
        recursive,
        replace,
        restart,
        paths: expanded,
    })
}

/// The words of a put line that are its operands, as clap reads them: all
/// but the command and its options, `-` alone is an operand, and
/// everything after `--` is.
fn put_operands(words: &[Word]) -> Vec<&Word> {
    let mut operands = Vec::new();
    let mut options_ended = false;
    for word in words.iter().skip(1) {
        if options_ended || word.text == "-" || !word.text.starts_with('-') {
            operands.push(word);
        } else if word.text == "--" {
            options_ended = true;
        }
    }
    operands
}

/// The local paths `pattern` matches (relative ones in `cwd`, and
/// relative as typed), sorted by their bytes (sh's order in the C locale),
/// or `None` if it has no glob in it (such as `[a`, whose
/// `[` is a literal) and stands for itself; `shown` is the word as the
/// user means it, for messages.
///
/// Each component with a glob lists the directories matched so far; a
/// component without one is joined on and must exist. A trailing `/`
/// matches directories only and is kept, as in sh. Names that are not
/// UTF-8 are never matched: no server could hold them.
pub fn expand(
    cwd: &Path,
    pattern: &str,
    shown: &str,
) -> Result<Option<Vec<PathBuf>>, LocalGlobError> {
    let components: Vec<Pattern> = pattern
        .split('/')
        .filter(|component| !component.is_empty())
        .map(Pattern::new)
        .collect();
    if components
        .iter()
        .all(|component| component.literal().is_some())
    {
        return Ok(None);
    }
    let dirs_only = pattern.ends_with('/');
    let mut level = vec![match pattern.starts_with('/') {
        true => PathBuf::from("/"),
        false => PathBuf::new(),
    }];
    let last = components.len() - 1;
    for (index, component) in components.iter().enumerate() {
        let wants_dir = index < last || dirs_only;
        let mut next = Vec::new();
        for base in &level {
            if let Some(name) = component.literal() {
                let path = base.join(name);
                let found = cwd.join(&path);
                let exists = match wants_dir {
                    true => found.is_dir(),
                    false => found.symlink_metadata().is_ok(),
                };
                if exists {
                    next.push(path);
                }
                continue;
            }
            for name in list(&cwd.join(base)).map_err(|source| LocalGlobError::Unreadable {
                pattern: shown.to_owned(),
                dir: match base.as_os_str().is_empty() {
                    true => PathBuf::from("."),
                    false => base.clone(),
                },
                source,
            })? {
                if component.matches(&name) {
                    let path = base.join(name);
                    // Through symlinks, as sh goes: `dir*/x` finds x in a
                    // link to a directory.
                    if !wants_dir || cwd.join(&path).is_dir() {
                        next.push(path);
                    }
                }
            }
        }
        if next.is_empty() {
            return Err(LocalGlobError::NoMatch {
                pattern: shown.to_owned(),
            });
        }
        level = next;
    }
    level.sort_unstable_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    if dirs_only {
        for path in &mut level {
            path.as_mut_os_string().push("/");
        }
    }
    Ok(Some(level))
}

/// The UTF-8 names in the directory `dir`; a name that is gone or not a
/// directory holds none.
fn list(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
// The binary denies unwrap outside tests as the library does, but without
// the library's exemption for tests.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::shell_words::split;

    /// A directory of files to match, passed to `test`.
    fn in_fixture(test: impl FnOnce(&Path)) {
        let tmp = tempfile::tempdir().unwrap();
        for file in [
            "a.txt",
            "b.txt",
            "B.txt",
            "c.md",
            ".hidden.txt",
            "a*.txt",
            "ünï.txt",
            "d1/x.txt",
            "d1/y.txt",
            "d2/x.txt",
            "d3/z.md",
            ".dot/x.txt",
            "-",
        ] {
            let path = tmp.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        std::os::unix::fs::symlink("d2", tmp.path().join("d4")).unwrap();
        test(tmp.path());
    }

    fn expanded(cwd: &Path, pattern: &str) -> Result<Option<Vec<String>>, String> {
        expand(cwd, pattern, pattern)
            .map(|paths| {
                paths.map(|paths| {
                    paths
                        .into_iter()
                        .map(|path| path.to_str().unwrap().to_owned())
                        .collect()
                })
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn patterns_match_as_sh_matches() {
        in_fixture(|dir| {
            let some = |paths: &[&str]| Ok(Some(paths.iter().map(|p| (*p).to_owned()).collect()));
            for (pattern, expected) in [
                // Sorted by bytes: capitals first; hidden names left out.
                (
                    "*.txt",
                    some(&["B.txt", "a*.txt", "a.txt", "b.txt", "ünï.txt"]),
                ),
                ("?.txt", some(&["B.txt", "a.txt", "b.txt"])),
                ("[ab].txt", some(&["a.txt", "b.txt"])),
                ("[!ab].txt", some(&["B.txt"])),
                (".*", some(&[".dot", ".hidden.txt"])),
                ("a\\*.txt", Ok(None)),
                ("a\\*.t*", some(&["a*.txt"])),
                // A component with a glob in a directory, through a link.
                ("d*/x.txt", some(&["d1/x.txt", "d2/x.txt", "d4/x.txt"])),
                ("d1/*", some(&["d1/x.txt", "d1/y.txt"])),
                ("*/*.md", some(&["d3/z.md"])),
                ("./c*", some(&["./c.md"])),
                ("d*/", some(&["d1/", "d2/", "d3/", "d4/"])),
                ("*.md/", Err("*.md/: no match".into())),
                ("*.nothing", Err("*.nothing: no match".into())),
                ("nowhere/*", Err("nowhere/*: no match".into())),
                ("c.md/*", Err("c.md/*: no match".into())),
                ("[a", Ok(None)),
                ("plain.txt", Ok(None)),
            ] {
                assert_eq!(expanded(dir, pattern), expected, "{pattern:?}");
            }
        });
    }

    #[test]
    fn an_absolute_pattern_lists_from_the_root() {
        in_fixture(|dir| {
            let pattern = format!("{}/d*/y.txt", dir.display());
            let expected = format!("{}/d1/y.txt", dir.display());
            assert_eq!(
                expanded(Path::new("/nowhere"), &pattern),
                Ok(Some(vec![expected]))
            );
        });
    }

    /// The paths of `line` once parsed as a put and expanded.
    fn put_paths(cwd: &Path, line: &str) -> Result<Vec<String>, String> {
        use clap::Parser;
        #[derive(Parser)]
        #[command(multicall = true)]
        struct Line {
            #[command(subcommand)]
            request: Request,
        }
        let words = split(line).unwrap();
        let texts = words.iter().map(|word| word.text.clone());
        let request = Line::try_parse_from(texts).unwrap().request;
        match expand_put(request, &words, cwd).map_err(|e| e.to_string())? {
            Request::Put { paths, .. } => Ok(paths
                .into_iter()
                .map(|path| path.to_str().unwrap().to_owned())
                .collect()),
            other => panic!("not a put: {other:?}"),
        }
    }

    #[test]
    fn a_put_expands_its_unquoted_local_operands_only() {
        in_fixture(|dir| {
            let paths = |paths: &[&str]| Ok(paths.iter().map(|p| (*p).to_owned()).collect());
            for (line, expected) in [
                // Several matches of the one operand: to the top, not one
                // file under the other's name.
                ("put [ab].txt", paths(&["a.txt", "b.txt", "."])),
                ("put a.t?t", paths(&["a.txt"])),
                (
                    "put [ab].txt backup/",
                    paths(&["a.txt", "b.txt", "backup/"]),
                ),
                ("mput -r d[12] --replace", paths(&["d1", "d2", "."])),
                // The target is never expanded; quoted words never are.
                ("put a.txt *.md", paths(&["a.txt", "*.md"])),
                ("put 'a*.txt'", paths(&["a*.txt"])),
                ("put \"a*\".txt", paths(&["a*.txt"])),
                ("put a\\*.txt", paths(&["a*.txt"])),
                ("put 'a'*.txt", paths(&["a*.txt", "a.txt", "."])),
                ("put -- *.md", paths(&["c.md"])),
                ("put - name", paths(&["-", "name"])),
                ("put ? name", paths(&["./-", "name"])),
                ("put *.nothing", Err("*.nothing: no match".to_owned())),
                ("put a.txt *.nothing x/", Err("*.nothing: no match".into())),
            ] {
                assert_eq!(put_paths(dir, line), expected, "{line:?}");
            }
        });
    }
}
