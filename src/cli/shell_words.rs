//! Splitting a shell line into words by sh's quoting rules (the ones shlex
//! follows), keeping what sh keeps for globbing and shlex drops: which
//! characters were quoted. A quoted `*` is a star, never a glob (issue 13).

/// Characters a glob pattern gives a meaning to (`!`, `^` and `-` within
/// `[...]`); quoted, they are escaped in a word's pattern.
const GLOB_SPECIAL: &[char] = &['*', '?', '[', ']', '\\', '!', '^', '-'];

/// One word of a shell line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word with its quotes and escapes taken away: what the command
    /// is given.
    pub text: String,
    /// The word as a glob pattern, if a `*`, `?` or `[` in it was not
    /// quoted: its quoted glob characters escaped with `\`, so that they
    /// match only themselves.
    pub pattern: Option<String>,
    /// Whether the word is `~` or begins with `~/`, the `~` unquoted: a
    /// local path the shell expands to the home directory, as sh does.
    pub has_tilde: bool,
}

impl Word {
    /// The word with its leading `~` replaced by `home`, if it has one to
    /// expand (`~user` is not expanded).
    pub fn expand_tilde(&mut self, home: &str) {
        if !self.has_tilde {
            return;
        }
        self.text.replace_range(..1, home);
        if let Some(pattern) = &mut self.pattern {
            let escaped: String = home
                .chars()
                .flat_map(|c| match GLOB_SPECIAL.contains(&c) {
                    true => vec!['\\', c],
                    false => vec![c],
                })
                .collect();
            pattern.replace_range(..1, &escaped);
        }
        self.has_tilde = false;
    }
}

/// A word being read.
#[derive(Debug, Default)]
struct WordBuilder {
    text: String,
    pattern: String,
    has_glob: bool,
    starts_unquoted: bool,
}

impl WordBuilder {
    fn push(&mut self, c: char, quoted: bool) {
        if self.text.is_empty() {
            self.starts_unquoted = !quoted;
        }
        self.text.push(c);
        if quoted && GLOB_SPECIAL.contains(&c) {
            self.pattern.push('\\');
        } else if !quoted && matches!(c, '*' | '?' | '[') {
            self.has_glob = true;
        }
        self.pattern.push(c);
    }

    fn finish(self) -> Word {
        let has_tilde = self.starts_unquoted && (self.text == "~" || self.text.starts_with("~/"));
        Word {
            has_tilde,
            text: self.text,
            pattern: self.has_glob.then_some(self.pattern),
        }
    }
}

/// Splits `line` into words as sh does: blanks (space, tab, newline)
/// separate words; `'...'` quotes everything in it; `"..."` quotes
/// everything, a `\` taking itself away only before `$`, `` ` ``, `"`, `\`
/// or a newline; outside quotes, `\` quotes the next character (and a `\`
/// before a newline takes both away); a `#` that begins a word begins a
/// comment. No variables, substitutions or operators: these are not
/// commands for sh. `None` for a quote left open or a `\` at the end.
pub fn split(line: &str) -> Option<Vec<Word>> {
    let mut chars = line.chars();
    let mut words = Vec::new();
    let mut word: Option<WordBuilder> = None;
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(done) = word.take() {
                    words.push(done.finish());
                }
            }
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                let word = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c, true),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('$' | '`' | '"' | '\\') => word.push(c, true),
                            '\n' => {}
                            c => {
                                word.push('\\', true);
                                word.push(c, true);
                            }
                        },
                        c => word.push(c, true),
                    }
                }
            }
            '\\' => {
                let word = word.get_or_insert_default();
                match chars.next()? {
                    '\n' => {}
                    c => word.push(c, true),
                }
            }
            c => word.get_or_insert_default().push(c, false),
        }
    }
    if let Some(done) = word {
        words.push(done.finish());
    }
    Some(words)
}

#[cfg(test)]
// The binary denies unwrap outside tests as the library does, but without
// the library's exemption for tests.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Lines whose words must be shlex's, quoting and all.
    const LINES: &[&str] = &[
        "",
        "   ",
        "put a.txt\n",
        "put  a.txt\tb.txt  \n",
        "put 'a b.txt' \"c d.txt\"",
        "put it\\'s\\ here",
        "put \"a \\\" b\" \"\\$x\" \"\\q\" \"back\\\\slash\"",
        "put 'no \\ escape in single quotes'",
        "put ''",
        "put \"\"",
        "put a''b",
        "put a\\\nb",
        "put \"a\\\nb\"",
        "# a comment\n",
        "put a # a comment",
        "put a#not-a-comment",
        "put ünï'cö'de",
        "put *.txt 'a*.txt' \"b?.txt\" \\*.txt [ab].txt",
    ];

    #[test]
    fn words_are_shlexs_words() {
        for line in LINES {
            let texts = split(line)
                .map(|words| words.into_iter().map(|word| word.text).collect::<Vec<_>>());
            assert_eq!(texts, shlex::split(line), "{line:?}");
        }
    }

    #[test]
    fn open_quotes_and_a_trailing_backslash_are_refused() {
        for line in ["put 'a", "put \"a", "put a\\", "put \"a\\"] {
            assert_eq!(split(line), None, "{line:?}");
            assert_eq!(shlex::split(line), None, "{line:?}");
        }
    }

    #[test]
    fn only_unquoted_glob_characters_make_a_pattern() {
        // (word as typed, pattern)
        for (typed, pattern) in [
            ("a.txt", None),
            ("*.txt", Some("*.txt")),
            ("'*.txt'", None),
            ("\"*.txt\"", None),
            ("\\*.txt", None),
            ("'a*'*.txt", Some("a\\**.txt")),
            ("d*/'x?'", Some("d*/x\\?")),
            ("\"[a]\"[b]", Some("\\[a\\][b]")),
            ("[a'-'c]", Some("[a\\-c]")),
            ("['!'a]", Some("[\\!a]")),
            ("x\\\\*", Some("x\\\\*")),
            ("?", Some("?")),
            ("]", None),
        ] {
            let words = split(typed).unwrap();
            let [word] = words.as_slice() else {
                panic!("{typed:?} is not one word: {words:?}");
            };
            assert_eq!(word.pattern.as_deref(), pattern, "{typed:?}");
        }
    }

    #[test]
    fn only_an_unquoted_leading_tilde_is_expanded() {
        // (word as typed, text once expanded, pattern once expanded)
        for (typed, text, pattern) in [
            ("~", "/h o*me", None),
            ("~/x.txt", "/h o*me/x.txt", None),
            ("~/*.txt", "/h o*me/*.txt", Some("/h o\\*me/*.txt")),
            ("'~'/x", "~/x", None),
            ("\\~", "~", None),
            ("~user/x", "~user/x", None),
            ("a~/x", "a~/x", None),
        ] {
            let mut words = split(typed).unwrap();
            let [word] = words.as_mut_slice() else {
                panic!("{typed:?} is not one word: {words:?}");
            };
            word.expand_tilde("/h o*me");
            assert_eq!(word.text, text, "{typed:?}");
            assert_eq!(word.pattern.as_deref(), pattern, "{typed:?}");
        }
    }
}
