//! Remote globs: a shell-style matcher for one name component, and its
//! expansion over the server's listings (issue 13).
//!
//! The client expands a remote pattern such as `photos/*.jpg` by listing
//! each directory level the pattern needs and matching the entries; the
//! server never sees a pattern and runs no glob engine. The matcher is
//! written here rather than taken from a crate because it matches our own
//! listing entries, not the local file system, and needs only sh's rules:
//! `*`, `?`, `[...]` with ranges and `!` or `^` negation, and backslash
//! escapes. As in sh, `*`, `?` and `[...]` never match `/`, and a leading
//! `.` is matched only by a literal `.`, so `*` leaves hidden names out.

use crate::protocol::{EntryKind, ErrorCode, FailureKind, NameError, RemoteName};

use super::{Client, ClientError};

/// Why a remote pattern gave no names.
#[derive(Debug, thiserror::Error)]
pub enum GlobError {
    /// Nothing on the server matches the pattern.
    #[error("{pattern}: no match")]
    NoMatch { pattern: String },
    /// The pattern cannot name anything beneath the served directory.
    #[error("{pattern}: {source}")]
    BadPattern { pattern: String, source: NameError },
    /// A listing or stat the expansion needed failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl GlobError {
    /// What kind of failure this is, for reports: no match is the
    /// `not-found` of a name that does not exist.
    pub fn kind(&self) -> FailureKind {
        match self {
            GlobError::NoMatch { .. } => ErrorCode::NotFound.into(),
            GlobError::BadPattern { .. } => ErrorCode::BadName.into(),
            GlobError::Client(e) => e.kind(),
        }
    }
}

/// One element of a component pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This character itself (also what `\c` and a `[` with no `]` are).
    Literal(char),
    /// `?`: any one character but `/`.
    AnyChar,
    /// `*`: any run of characters without `/`, the empty one too.
    AnyRun,
    /// `[...]`: one character in (or, negated, not in) the ranges; never
    /// `/`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Token::Literal(literal) => *literal == c,
            Token::AnyChar => c != '/',
            // A run is matched by backtracking; one character of it is this.
            Token::AnyRun => c != '/',
            Token::Class { negated, ranges } => {
                c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// A glob pattern for one component of a name (no `/` in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parses `component` as sh does; every string is a pattern: a `[`
    /// without its `]` is a literal `[`, and a trailing `\` a literal `\`.
    pub fn new(component: &str) -> Pattern {
        let chars: Vec<char> = component.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            let token = match c {
                '\\' => match chars.get(i + 1) {
                    Some(&escaped) => {
                        i += 1;
                        Token::Literal(escaped)
                    }
                    None => Token::Literal('\\'),
                },
                '*' => Token::AnyRun,
                '?' => Token::AnyChar,
                '[' => match parse_class(&chars, i + 1) {
                    Some((class, end)) => {
                        i = end;
                        tokens.push(class);
                        continue;
                    }
                    None => Token::Literal('['),
                },
                c => Token::Literal(c),
            };
            // `**` means what `*` means within one component, as in sh.
            if !(token == Token::AnyRun && tokens.last() == Some(&Token::AnyRun)) {
                tokens.push(token);
            }
            i += 1;
        }
        Pattern { tokens }
    }

    /// The name this pattern matches, if it matches one name only: it has
    /// no `*`, `?` or `[...]`, and its escapes are removed.
    pub fn literal(&self) -> Option<String> {
        self.tokens
            .iter()
            .map(|token| match token {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        // sh: a leading `.` is matched only by a literal one.
        if name.first() == Some(&'.') && self.tokens.first() != Some(&Token::Literal('.')) {
            return false;
        }
        let tokens = &self.tokens;
        let (mut t, mut n) = (0, 0);
        // The last `*` seen, and where in the name its run ends now: on a
        // mismatch the run takes one more character and matching resumes
        // after it. Going back to the last `*` only is enough, as every
        // earlier one could take no more than the last could.
        let mut run: Option<(usize, usize)> = None;
        while let Some(&c) = name.get(n) {
            match tokens.get(t) {
                Some(Token::AnyRun) => {
                    run = Some((t, n));
                    t += 1;
                    continue;
                }
                Some(token) if token.matches_one(c) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match run {
                Some((run_t, run_end)) if name.get(run_end).is_some_and(|&c| c != '/') => {
                    run = Some((run_t, run_end + 1));
                    t = run_t + 1;
                    n = run_end + 1;
                }
                _ => return false,
            }
        }
        tokens.iter().skip(t).all(|token| *token == Token::AnyRun)
    }
}

/// Parses the inside of a bracket expression starting at `start` (just
/// after the `[`): the class and the index after its `]`, or `None` when
/// there is no `]` and the `[` is a literal.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        // A `]` first in the class is a member, as in sh (`[]a]`).
        if *chars.get(i)? == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let (lo, next) = class_char(chars, i)?;
        i = next;
        // A `-` last in the class is a member (`[a-]`); a range whose ends
        // are the wrong way round matches nothing, as in bash.
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
            let (hi, next) = class_char(chars, i + 1)?;
            i = next;
            ranges.push((lo, hi));
        } else {
            ranges.push((lo, lo));
        }
    }
}

/// One member character of a class at `i`, a backslash escaping it, and
/// the index after it.
fn class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match chars.get(i)? {
        '\\' => chars.get(i + 1).map(|&c| (c, i + 2)),
        &c => Some((c, i + 1)),
    }
}

/// Expands the remote `pattern` (`*`, `?`, `[...]`, backslash escapes, `/`
/// between components) over the server's listings, and returns the
/// matching names, sorted.
///
/// A pattern without any glob is returned as it is (escapes removed),
/// without asking the server whether it exists: the request that uses it
/// says so. Otherwise the leading literal components must name a directory,
/// every level from the first glob on is listed once per directory that
/// matched so far, and a pattern that matches nothing is
/// [`GlobError::NoMatch`]. A trailing `/` matches directories only and is
/// kept on each name, as in sh. Hidden names match only a pattern whose
/// component starts with a literal `.`.
pub async fn expand_remote(client: &mut Client, pattern: &str) -> Result<Vec<String>, GlobError> {
    let bad = |source| GlobError::BadPattern {
        pattern: pattern.to_owned(),
        source,
    };
    let no_match = || GlobError::NoMatch {
        pattern: pattern.to_owned(),
    };
    let components = split_pattern(pattern).map_err(bad)?;
    let dirs_only = pattern.ends_with('/');
    let Some(first_glob) = components.iter().position(|c| c.literal().is_none()) else {
        if !pattern.contains('\\') {
            return Ok(vec![pattern.to_owned()]);
        }
        let mut name = components
            .iter()
            .filter_map(Pattern::literal)
            .collect::<Vec<_>>()
            .join("/");
        if dirs_only {
            name.push('/');
        }
        return Ok(vec![name]);
    };

    // The literal start is not listed level by level: one stat says
    // whether it is a directory (listing a file would list the file).
    let prefix = components
        .iter()
        .take(first_glob)
        .filter_map(Pattern::literal)
        .collect::<Vec<_>>()
        .join("/");
    if !prefix.is_empty() {
        let name = RemoteName::parse(&prefix).map_err(bad)?;
        match client.stat(Some(&name)).await {
            Ok(info) if info.kind == EntryKind::Directory => {}
            Ok(_) => return Err(no_match()),
            Err(e) if is_gone(&e) => return Err(no_match()),
            Err(e) => return Err(e.into()),
        }
    }

    let mut level = vec![prefix];
    let last = components.len() - 1;
    for (index, component) in components.iter().enumerate().skip(first_glob) {
        let wants_dir = index < last || dirs_only;
        let mut next = Vec::new();
        for dir in &level {
            let listed = RemoteName::parse_dir(dir).map_err(bad)?;
            let listing = client
                .list(listed.as_ref(), false, &mut |entry| {
                    if component.matches(&entry.name)
                        && (!wants_dir || entry.kind == EntryKind::Directory)
                    {
                        next.push(join(dir, &entry.name));
                    }
                })
                .await;
            match listing {
                Ok(_) => {}
                // Gone since its parent was listed: it matches nothing.
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if next.is_empty() {
            return Err(no_match());
        }
        level = next;
    }
    level.sort_unstable();
    if dirs_only {
        for name in &mut level {
            name.push('/');
        }
    }
    Ok(level)
}

/// The component patterns of `pattern`, `.` components left out; refuses
/// what could name nothing beneath the served directory.
fn split_pattern(pattern: &str) -> Result<Vec<Pattern>, NameError> {
    if pattern.is_empty() {
        return Err(NameError::Empty);
    }
    if pattern.starts_with('/') {
        return Err(NameError::Absolute);
    }
    let body = pattern.strip_suffix('/').unwrap_or(pattern);
    let mut components = Vec::new();
    for component in body.split('/') {
        match component {
            "" => return Err(NameError::EmptyComponent),
            "." => {}
            ".." => return Err(NameError::DotComponent),
            c => components.push(Pattern::new(c)),
        }
    }
    if components.is_empty() {
        return Err(NameError::Root);
    }
    Ok(components)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether the server said the name is not there (or not a directory).
fn is_gone(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Remote {
            code: ErrorCode::NotFound | ErrorCode::NotADirectory,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (pattern, name, matches)
    const CASES: &[(&str, &str, bool)] = &[
        // Literals.
        ("a.txt", "a.txt", true),
        ("a.txt", "a.txtx", false),
        ("a.txt", "a.tx", false),
        ("", "", true),
        ("", "a", false),
        ("ünï", "ünï", true),
        // `?`: exactly one character, Unicode ones too.
        ("?", "a", true),
        ("?", "é", true),
        ("?", "", false),
        ("?", "ab", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        // `*`: any run, the empty one too.
        ("*", "", true),
        ("*", "anything at all", true),
        ("*.txt", "a.txt", true),
        ("*.txt", ".txt.txt", false),
        ("*.txt", "a.txt.gz", false),
        ("a*", "a", true),
        ("a*b", "ab", true),
        ("a*b", "axxb", true),
        ("a*b", "axxbx", false),
        ("a*b*c", "abbbc", true),
        ("a*b*c", "aXbYbZc", true),
        ("a*b*c", "acb", false),
        ("**", "x", true),
        (
            "*a*a*a*b",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac",
            false,
        ),
        ("*x", "yyyyx", true),
        // `*` and `?` never match `/`.
        ("*", "a/b", false),
        ("a?b", "a/b", false),
        ("a*", "a/", false),
        // Classes, ranges and negation.
        ("[abc]", "b", true),
        ("[abc]", "d", false),
        ("[abc]", "", false),
        ("[a-c]", "a", true),
        ("[a-c]", "c", true),
        ("[a-c]", "d", false),
        ("[a-c].txt", "b.txt", true),
        ("[0-9][0-9]", "42", true),
        ("[0-9][0-9]", "4x", false),
        ("[a-cx-z]", "y", true),
        ("[a-cx-z]", "m", false),
        ("[!a-c]", "d", true),
        ("[!a-c]", "b", false),
        ("[^a-c]", "d", true),
        ("[^a-c]", "a", false),
        ("[!a]", "", false),
        ("[c-a]", "b", false),
        ("[é-ü]", "ï", true),
        // `]` first is a member; `-` first or last is a member.
        ("[]]", "]", true),
        ("[]a]", "a", true),
        ("[!]]", "]", false),
        ("[!]]", "x", true),
        ("[-a]", "-", true),
        ("[a-]", "-", true),
        ("[a-]", "b", false),
        // A class never matches `/`, negated or not.
        ("[!a]", "/", false),
        // A `[` without its `]` is a literal.
        ("[", "[", true),
        ("[a", "[a", true),
        ("[a", "a", false),
        ("a[", "a[", true),
        ("[]", "[]", true),
        ("[!", "[!", true),
        // Backslash escapes, outside and inside classes.
        ("\\*", "*", true),
        ("\\*", "x", false),
        ("\\?", "?", true),
        ("\\?", "x", false),
        ("\\[a]", "[a]", true),
        ("\\[a]", "a", false),
        ("a\\\\b", "a\\b", true),
        ("\\a", "a", true),
        ("[\\]]", "]", true),
        ("[\\!a]", "!", true),
        ("[a\\-c]", "-", true),
        ("[a\\-c]", "b", false),
        ("trailing\\", "trailing\\", true),
        // A leading `.` only by a literal `.`.
        ("*", ".hidden", false),
        ("?hidden", ".hidden", false),
        ("[.]hidden", ".hidden", false),
        ("[!a]hidden", ".hidden", false),
        (".*", ".hidden", true),
        (".h*", ".hidden", true),
        ("\\.hidden", ".hidden", true),
        ("*", "a.hidden", true),
        ("a*", "a.", true),
    ];

    #[test]
    fn matches_as_sh_does() {
        for &(pattern, name, expected) in CASES {
            assert_eq!(
                Pattern::new(pattern).matches(name),
                expected,
                "pattern {pattern:?} against {name:?}"
            );
        }
    }

    #[test]
    fn only_patterns_without_globs_are_literal() {
        for (pattern, literal) in [
            ("a.txt", Some("a.txt")),
            ("\\*", Some("*")),
            ("a\\?b", Some("a?b")),
            ("[a", Some("[a")),
            ("[", Some("[")),
            ("", Some("")),
            ("*", None),
            ("a?", None),
            ("[ab]", None),
            ("x[!a]", None),
        ] {
            assert_eq!(
                Pattern::new(pattern).literal().as_deref(),
                literal,
                "{pattern:?}"
            );
        }
    }

    #[test]
    fn a_long_name_against_many_stars_is_quick() {
        // Exponential backtracking would never finish this.
        let name = "a".repeat(10_000);
        let pattern = Pattern::new(&("*a".repeat(100) + "b"));
        assert!(!pattern.matches(&name));
        assert!(Pattern::new(&"*a".repeat(100)).matches(&name));
    }

    #[test]
    fn patterns_are_split_into_components() {
        let literals = |pattern| {
            split_pattern(pattern).map(|components| {
                components
                    .iter()
                    .map(|c| c.literal().unwrap_or_else(|| "<glob>".to_owned()))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            literals("a/b*/c"),
            Ok(vec!["a".into(), "<glob>".into(), "c".into()])
        );
        assert_eq!(literals("./a/./*"), Ok(vec!["a".into(), "<glob>".into()]));
        assert_eq!(literals("d*/"), Ok(vec!["<glob>".into()]));
        for (pattern, error) in [
            ("", NameError::Empty),
            ("/etc/*", NameError::Absolute),
            ("a//*", NameError::EmptyComponent),
            ("../*", NameError::DotComponent),
            ("a/../*", NameError::DotComponent),
            (".", NameError::Root),
            ("./", NameError::Root),
        ] {
            assert_eq!(literals(pattern), Err(error), "{pattern:?}");
        }
    }
}
