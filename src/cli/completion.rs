//! What Tab completes in the shell (issue 16), apart from any I/O: which
//! kind of word is at the cursor, where that word begins, how a partial
//! path splits into the directory to list and the prefix to match, and
//! how a completed name is written back so that the shell reads it as
//! one literal word.

use super::shell_words;

/// What a word of a shell line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordKind {
    /// The command.
    Command,
    /// A path on this machine.
    Local,
    /// A name on the server.
    Remote,
    /// An option, or an operand of a command that takes no names.
    Other,
}

/// The commands and aliases of the shell, for completing the first word.
pub const COMMANDS: &[&str] = &[
    "cd", "conn", "connect", "delete", "delf", "dwld", "exit", "get", "help", "lcd", "list", "lls",
    "lpwd", "ls", "mget", "mkdir", "mput", "mv", "put", "pwd", "quit", "rename", "rm", "rmdir",
    "stat", "upld",
];

/// The kind of each of `words` (a line's words, the command first, in
/// any case): for put, the operands before the last are local and the last
/// is remote (a lone operand is local); for get, the operands are remote
/// but the last of two or more, which is local; the other requests and
/// `cd` take remote names, `lcd` and `lls` local ones. Words starting with
/// `-` are options until a `--`; `-` alone is an operand.
pub fn kinds<S: AsRef<str>>(words: &[S]) -> Vec<WordKind> {
    let Some(command) = words.first() else {
        return Vec::new();
    };
    let mut operands = Vec::new();
    let mut options_ended = false;
    for (index, word) in words.iter().enumerate().skip(1) {
        let word = word.as_ref();
        if options_ended || word == "-" || !word.starts_with('-') {
            operands.push(index);
        } else if word == "--" {
            options_ended = true;
        }
    }
    let command = command.as_ref().to_lowercase();
    let last = operands.last().copied();
    let many = operands.len() > 1;
    (0..words.len())
        .map(|index| {
            if index == 0 {
                return WordKind::Command;
            }
            if !operands.contains(&index) {
                return WordKind::Other;
            }
            let is_last = Some(index) == last;
            match command.as_str() {
                "put" | "upld" | "mput" if many && is_last => WordKind::Remote,
                "put" | "upld" | "mput" => WordKind::Local,
                "get" | "dwld" | "mget" if many && is_last => WordKind::Local,
                "get" | "dwld" | "mget" => WordKind::Remote,
                "list" | "ls" | "delete" | "delf" | "rm" | "mkdir" | "rmdir" | "rename" | "mv"
                | "stat" | "cd" => WordKind::Remote,
                "lcd" | "lls" => WordKind::Local,
                _ => WordKind::Other,
            }
        })
        .collect()
}

/// The word the cursor is in, for `before` (the line up to the cursor):
/// where it begins, its text with quotes taken away, and the kind of word
/// it is. `None` if the line before it cannot be read (a stray `\`).
pub fn word_at_cursor(before: &str) -> Option<(usize, String, WordKind)> {
    let start = last_word_start(before);
    let mut words: Vec<String> = shell_words::split(&before[..start])?
        .into_iter()
        .map(|word| word.text)
        .collect();
    let partial = close_quotes(&before[start..]);
    let text = match shell_words::split(&partial)?.pop() {
        Some(word) => word.text,
        None => String::new(),
    };
    words.push(text.clone());
    let kind = kinds(&words).pop().unwrap_or(WordKind::Other);
    Some((start, text, kind))
}

/// Where the last word of `line` begins (its end if it ends in a blank):
/// after the last blank that no quote or `\` takes.
fn last_word_start(line: &str) -> usize {
    let mut start = 0;
    let mut quote = None;
    let mut escaped = false;
    for (at, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (None, '\\') | (Some('"'), '\\') => escaped = true,
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, ' ' | '\t') => start = at + c.len_utf8(),
            _ => {}
        }
    }
    start
}

/// `word` with a quote left open closed, and a trailing lone `\` dropped,
/// so that it splits.
fn close_quotes(word: &str) -> String {
    let mut quote = None;
    let mut escaped = false;
    for c in word.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (None, '\\') | (Some('"'), '\\') => escaped = true,
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            _ => {}
        }
    }
    let mut closed = word.to_owned();
    if escaped {
        closed.pop();
    }
    if let Some(quote) = quote {
        closed.push(quote);
    }
    closed
}

/// A partial path split after its last `/`: the directory part (with its
/// `/`, empty for none) and the prefix of the name being typed.
pub fn split_partial(partial: &str) -> (&str, &str) {
    match partial.rfind('/') {
        Some(slash) => partial.split_at(slash + 1),
        None => ("", partial),
    }
}

/// `text` written so that the shell reads it back as itself, one word with
/// no glob: blanks, quotes, `\`, glob characters and a `#` escaped with
/// `\`. A leading `~` is left alone, to be expanded.
pub fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            ' ' | '\t' | '\n' | '\'' | '"' | '\\' | '*' | '?' | '[' | ']' | '#'
        ) {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use WordKind::*;

    #[test]
    fn each_word_is_a_command_a_local_path_or_a_remote_name_by_its_place() {
        for (line, expected) in [
            ("put", vec![Command]),
            ("put a", vec![Command, Local]),
            ("put a b", vec![Command, Local, Remote]),
            ("UPLD a b c", vec![Command, Local, Local, Remote]),
            ("put -r a", vec![Command, Other, Local]),
            ("put -- -a b", vec![Command, Other, Local, Remote]),
            ("get a", vec![Command, Remote]),
            ("dwld a b", vec![Command, Remote, Local]),
            ("mget -r a b c", vec![Command, Other, Remote, Remote, Local]),
            ("get a -", vec![Command, Remote, Local]),
            ("ls -l d", vec![Command, Other, Remote]),
            ("mv a b", vec![Command, Remote, Remote]),
            ("cd d", vec![Command, Remote]),
            ("lcd d", vec![Command, Local]),
            ("lls -l d", vec![Command, Other, Local]),
            ("help put", vec![Command, Other]),
        ] {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(kinds(&words), expected, "{line:?}");
        }
    }

    #[test]
    fn the_word_at_the_cursor_is_found_through_quotes() {
        for (before, expected) in [
            ("", Some((0, "", Command))),
            ("pu", Some((0, "pu", Command))),
            ("put ", Some((4, "", Local))),
            ("put my\\ fi", Some((4, "my fi", Local))),
            ("put 'my fi", Some((4, "my fi", Local))),
            ("put \"a b\" c", Some((10, "c", Remote))),
            ("get x 'lo", Some((6, "lo", Local))),
            ("get d\\", Some((4, "d", Remote))),
            ("cd 'a b'/c", Some((3, "a b/c", Remote))),
        ] {
            let found = word_at_cursor(before);
            let found = found
                .as_ref()
                .map(|(at, text, kind)| (*at, text.as_str(), *kind));
            assert_eq!(found, expected, "{before:?}");
        }
    }

    #[test]
    fn a_partial_path_splits_after_its_last_slash() {
        for (partial, expected) in [
            ("", ("", "")),
            ("ab", ("", "ab")),
            ("d/", ("d/", "")),
            ("d/e/ab", ("d/e/", "ab")),
            ("/ab", ("/", "ab")),
            ("~/x", ("~/", "x")),
        ] {
            assert_eq!(split_partial(partial), expected, "{partial:?}");
        }
    }

    #[test]
    fn a_quoted_name_reads_back_as_one_literal_word() {
        for name in [
            "plain.txt",
            "my file.txt",
            "it's \"x\"",
            "a*[b]?.txt",
            "#1",
            "back\\slash",
        ] {
            let words = shell_words::split(&quote(name)).unwrap_or_default();
            let [word] = words.as_slice() else {
                panic!("{name:?} is not one word: {words:?}");
            };
            assert_eq!(word.text, name);
            assert_eq!(word.pattern, None, "{name:?}");
        }
        assert_eq!(quote("~/my file"), "~/my\\ file");
    }
}
