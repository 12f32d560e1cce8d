//! Remote names: the only paths that ever cross the wire.
//!
//! A remote name is a relative path with `/` separators. The rules here are
//! purely lexical; the server additionally resolves every name beneath an
//! open handle on its root so that symlinks cannot lead outside it.
//!
//! Names are taken the way people type them: `.` components and one
//! trailing `/` are dropped (`./x`, `x/./y`, `dir/`), so a parsed name is
//! always in its plain form. A name that is nothing but the served
//! directory itself (`.`, `./`, `/`) is a [`NameError::Root`] for
//! [`RemoteName::parse`], and the root for [`RemoteName::parse_dir`].

use std::fmt;

/// Longest remote name, in bytes.
pub const MAX_NAME_LEN: usize = 4096;
/// Longest single component of a remote name, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;
/// Prefix of the hidden temporary files that receive transfers in progress.
/// Names with a component starting with it are reserved, so a client can
/// neither create, read nor delete another transfer's temporary file.
pub const TEMP_PREFIX: &str = ".ferry-tmp-";

/// A name that passed every lexical rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteName(String);

/// Why a remote name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {0} bytes long, the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// A component is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("a component is {0} bytes long, the limit is {MAX_COMPONENT_LEN}")]
    ComponentTooLong(usize),
    /// The name starts with `/` (and is more than `/` alone).
    #[error("name is absolute; names are relative to the served directory")]
    Absolute,
    /// The name has a `..` component.
    #[error("name has a '..' component")]
    DotComponent,
    /// The name has an empty component (`a//b`).
    #[error("name has an empty component")]
    EmptyComponent,
    /// The name is the served directory itself (`.`, `/`), where a name
    /// beneath it is needed.
    #[error("name is the served directory itself")]
    Root,
    /// The name has a backslash, which is a separator on some systems.
    #[error("name contains a backslash; use '/' to separate directories")]
    Backslash,
    /// The name has a NUL or other control character.
    #[error("name contains a control character")]
    ControlCharacter,
    /// A component starts with [`TEMP_PREFIX`].
    #[error("names starting with '{TEMP_PREFIX}' are reserved for transfers in progress")]
    Reserved,
}

impl RemoteName {
    /// Checks `name` against every rule and returns it in its plain form;
    /// the served directory itself is refused with [`NameError::Root`].
    pub fn parse(name: &str) -> Result<RemoteName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        Self::parse_dir(name)?.ok_or(NameError::Root)
    }

    /// Like [`RemoteName::parse`], but the served directory itself (`""`,
    /// `/`, `.`, `./`) is accepted, as `None`: for requests about a
    /// directory, such as a listing.
    pub fn parse_dir(name: &str) -> Result<Option<RemoteName>, NameError> {
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(name.len()));
        }
        if name.is_empty() || name == "/" {
            return Ok(None);
        }
        if name.starts_with('/') {
            return Err(NameError::Absolute);
        }
        if name.contains('\\') {
            return Err(NameError::Backslash);
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        // One trailing `/` says "a directory", as in a shell; it adds nothing.
        let name = name.strip_suffix('/').unwrap_or(name);
        let mut plain = Vec::new();
        for component in name.split('/') {
            match component {
                "" => return Err(NameError::EmptyComponent),
                "." => {}
                ".." => return Err(NameError::DotComponent),
                c if c.len() > MAX_COMPONENT_LEN => {
                    return Err(NameError::ComponentTooLong(c.len()))
                }
                c if c.starts_with(TEMP_PREFIX) => return Err(NameError::Reserved),
                c => plain.push(c),
            }
        }
        Ok((!plain.is_empty()).then(|| RemoteName(plain.join("/"))))
    }

    /// The name as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Everything before the last component, if there is anything.
    pub fn parent(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(parent, _)| parent)
    }
}

impl fmt::Display for RemoteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_names() {
        for name in [
            "a",
            "report.pdf",
            "dir/sub/file.txt",
            ".hidden",
            "..double-dot-prefix",
            "file..",
            "with space",
            "ünïcödé/名前.txt",
            "-dash",
            ".ferry-tmp",
        ] {
            assert_eq!(RemoteName::parse(name).map(|n| n.0), Ok(name.to_owned()));
        }
    }

    #[test]
    fn names_as_people_type_them_are_made_plain() {
        for (typed, plain) in [
            ("./x", "x"),
            ("x/./y", "x/y"),
            ("x/.", "x"),
            ("dir/", "dir"),
            ("./a/b/", "a/b"),
            ("././a", "a"),
        ] {
            assert_eq!(RemoteName::parse(typed).map(|n| n.0), Ok(plain.to_owned()));
        }
    }

    #[test]
    fn the_root_is_a_directory_but_never_a_name() {
        for root in ["", "/", ".", "./", "./."] {
            assert_eq!(RemoteName::parse_dir(root), Ok(None), "{root:?}");
        }
        for root in ["/", ".", "./"] {
            assert_eq!(RemoteName::parse(root), Err(NameError::Root), "{root:?}");
        }
        assert_eq!(
            RemoteName::parse_dir("a/b").unwrap().map(|n| n.0),
            Some("a/b".to_owned())
        );
    }

    #[test]
    fn refused_names() {
        let long_component = "x".repeat(MAX_COMPONENT_LEN + 1);
        let long_name = vec!["y".repeat(200); 21].join("/");
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("//", NameError::Absolute),
            ("..", NameError::DotComponent),
            ("../secret", NameError::DotComponent),
            ("a/../../b", NameError::DotComponent),
            ("./..", NameError::DotComponent),
            ("a/..", NameError::DotComponent),
            ("a//b", NameError::EmptyComponent),
            ("a//", NameError::EmptyComponent),
            ("//a", NameError::Absolute),
            ("..\\windows", NameError::Backslash),
            ("a\\b", NameError::Backslash),
            ("nul\0byte", NameError::ControlCharacter),
            ("new\nline", NameError::ControlCharacter),
            ("esc\x1b[31m", NameError::ControlCharacter),
            ("del\x7f", NameError::ControlCharacter),
            ("c1\u{9b}", NameError::ControlCharacter),
            (&long_component, NameError::ComponentTooLong(256)),
            (&long_name, NameError::TooLong(4220)),
            (".ferry-tmp-1-2", NameError::Reserved),
            ("dir/.ferry-tmp-x/f", NameError::Reserved),
        ];
        for (name, error) in cases {
            assert_eq!(RemoteName::parse(name).as_ref(), Err(error), "{name:?}");
        }
    }

    #[test]
    fn longest_legal_name_and_component_are_accepted() {
        let component = "c".repeat(MAX_COMPONENT_LEN);
        assert!(RemoteName::parse(&component).is_ok());
        // 17 components of 240 bytes and 16 separators: exactly 4096 bytes.
        let name = vec!["n".repeat(240); 17].join("/");
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(RemoteName::parse(&name).is_ok());
    }

    #[test]
    fn file_name_and_parent() {
        let name = RemoteName::parse("a/b/c.txt").unwrap();
        assert_eq!(name.file_name(), "c.txt");
        assert_eq!(name.parent(), Some("a/b"));
        let flat = RemoteName::parse("c.txt").unwrap();
        assert_eq!(flat.file_name(), "c.txt");
        assert_eq!(flat.parent(), None);
    }
}
