//! The shell's remote working directory (issue 16): names typed after a
//! `cd` are joined to it before they are sent, as sftp does. This is only
//! name joining on the client; the server's path gate judges the result as
//! it judges any name.

use std::path::PathBuf;

use super::Request;

/// A directory below the served root, as the components leading to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteDir {
    components: Vec<String>,
}

impl RemoteDir {
    /// `name` taken from this directory: a `/` at its start means from the
    /// served root; `.` and empty components are dropped and `..` takes
    /// one component away, never going above the root. A trailing `/` is
    /// kept, since a put's target gives it a meaning. The root itself is
    /// `""`.
    pub fn join(&self, name: &str) -> String {
        let mut components = match name.starts_with('/') {
            true => Vec::new(),
            false => self.components.clone(),
        };
        for component in name.split('/') {
            match component {
                "" | "." => {}
                ".." => {
                    components.pop();
                }
                other => components.push(other.to_owned()),
            }
        }
        let mut joined = components.join("/");
        if name.ends_with('/') && !joined.is_empty() {
            joined.push('/');
        }
        joined
    }

    /// The directory `name` leads to from here.
    pub fn enter(&self, name: &str) -> RemoteDir {
        RemoteDir {
            components: self
                .join(name)
                .split('/')
                .filter(|component| !component.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Whether this is the served root.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The directory as a name for a request: `None` for the root.
    pub fn name(&self) -> Option<String> {
        (!self.is_root()).then(|| self.components.join("/"))
    }

    /// `name` joined to this directory for a remote glob: the directory's
    /// own glob characters escaped, so that only the typed part matches.
    fn join_pattern(&self, name: &str) -> String {
        let escaped = RemoteDir {
            components: self
                .components
                .iter()
                .map(|component| {
                    component
                        .chars()
                        .flat_map(|c| match matches!(c, '*' | '?' | '[' | ']' | '\\') {
                            true => vec!['\\', c],
                            false => vec![c],
                        })
                        .collect()
                })
                .collect(),
        };
        escaped.join(name)
    }

    /// `request` with each remote name in it taken from this directory:
    /// a put's target (one is added if the put has none, so that what is
    /// sent lands here), a get's sources, and the names of every other
    /// request. Local paths are left as they are.
    pub fn apply(&self, request: Request) -> Request {
        match request {
            Request::Put {
                recursive,
                replace,
                restart,
                mut paths,
            } => {
                match paths.len() {
                    1 if !self.is_root() => paths.push(PathBuf::from(self.join(".") + "/")),
                    1 => {}
                    _ => {
                        if let Some(target) = paths.last_mut() {
                            let joined = self.join(&target.to_string_lossy());
                            // The root as a put's target is `.`.
                            *target = match joined.is_empty() {
                                true => PathBuf::from("."),
                                false => PathBuf::from(joined),
                            };
                        }
                    }
                }
                Request::Put {
                    recursive,
                    replace,
                    restart,
                    paths,
                }
            }
            Request::Get {
                recursive,
                replace,
                restart,
                mut operands,
            } => {
                let sources = match operands.len() {
                    1 => 1,
                    n => n - 1,
                };
                for source in operands.iter_mut().take(sources) {
                    let typed = source.to_string_lossy().into_owned();
                    let joined = match typed.contains(['*', '?', '[']) {
                        true => self.join_pattern(&typed),
                        false => self.join(&typed),
                    };
                    *source = joined.into();
                }
                Request::Get {
                    recursive,
                    replace,
                    restart,
                    operands,
                }
            }
            Request::List {
                long,
                human_readable,
                remote_dir,
            } => Request::List {
                long,
                human_readable,
                remote_dir: self.join_optional(remote_dir),
            },
            Request::Delete {
                recursive,
                remote_name,
            } => Request::Delete {
                recursive,
                remote_name: self.join(&remote_name),
            },
            Request::Mkdir {
                parents,
                remote_name,
            } => Request::Mkdir {
                parents,
                remote_name: self.join(&remote_name),
            },
            Request::Rmdir { remote_name } => Request::Rmdir {
                remote_name: self.join(&remote_name),
            },
            Request::Rename { from, to } => Request::Rename {
                from: self.join(&from),
                to: self.join(&to),
            },
            Request::Stat { remote_name } => Request::Stat {
                remote_name: self.join_optional(remote_name),
            },
        }
    }

    /// An optional directory name joined; none is this directory.
    fn join_optional(&self, name: Option<String>) -> Option<String> {
        match name {
            Some(name) => Some(self.join(&name)),
            None => self.name(),
        }
    }
}

impl std::fmt::Display for RemoteDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.components.join("/"))
    }
}

#[cfg(test)]
// The binary denies unwrap outside tests as the library does, but without
// the library's exemption for tests.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_join_within_the_served_root() {
        let root = RemoteDir::default();
        let pets = root.enter("pets/cats");
        for (dir, name, joined) in [
            (&root, "a.txt", "a.txt"),
            (&root, "..", ""),
            (&root, "../../etc/passwd", "etc/passwd"),
            (&root, "/etc/passwd", "etc/passwd"),
            (&pets, "tom.jpg", "pets/cats/tom.jpg"),
            (&pets, "./tom.jpg", "pets/cats/tom.jpg"),
            (&pets, "../dogs/rex.jpg", "pets/dogs/rex.jpg"),
            (&pets, "../../../../x", "x"),
            (&pets, "/x", "x"),
            (&pets, "/", ""),
            (&pets, ".", "pets/cats"),
            (&pets, "sub/", "pets/cats/sub/"),
            (&pets, "a//b", "pets/cats/a/b"),
        ] {
            assert_eq!(dir.join(name), joined, "{dir} + {name:?}");
        }
    }

    #[test]
    fn the_directory_shows_as_an_absolute_path() {
        let root = RemoteDir::default();
        assert_eq!(root.to_string(), "/");
        assert_eq!(root.name(), None);
        let dir = root.enter("a/b/../c/");
        assert_eq!(dir.to_string(), "/a/c");
        assert_eq!(dir.name().as_deref(), Some("a/c"));
        assert!(dir.enter("../..").is_root());
    }

    #[test]
    fn requests_take_their_remote_names_from_the_directory() {
        let dir = RemoteDir::default().enter("d*");
        let put = dir.apply(Request::Put {
            recursive: false,
            replace: false,
            restart: false,
            paths: vec!["a.txt".into()],
        });
        let Request::Put { paths, .. } = put else {
            panic!("{put:?}")
        };
        assert_eq!(paths, [PathBuf::from("a.txt"), PathBuf::from("d*/")]);

        let get = dir.apply(Request::Get {
            recursive: false,
            replace: false,
            restart: false,
            operands: vec!["x.txt".into(), "*.md".into(), "local/".into()],
        });
        let Request::Get { operands, .. } = get else {
            panic!("{get:?}")
        };
        assert_eq!(operands, ["d*/x.txt", "d\\*/*.md", "local/"]);

        let list = dir.apply(Request::List {
            long: false,
            human_readable: false,
            remote_dir: None,
        });
        let Request::List { remote_dir, .. } = list else {
            panic!("{list:?}")
        };
        assert_eq!(remote_dir.as_deref(), Some("d*"));
    }
}
