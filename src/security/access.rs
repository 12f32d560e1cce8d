//! Who may do what: access tokens with their modes, and the server's own
//! mode. A request runs only if both allow it.

use std::fmt::{self, Write as _};
use std::path::Path;

use super::{secret_file, SecretFileError};
use crate::protocol::{RequestKind, Token};

/// The shortest token a server accepts, in characters: shorter ones could
/// be guessed. A token from [`new_token`] has 64.
pub const MIN_TOKEN_LEN: usize = 20;

/// The fewest different characters a server accepts in a token: fewer
/// betray a made-up one (`aaaaaaaaaaaaaaaaaaaa`, `12121212121212121212`)
/// that its length alone would let through. 64 random hex digits have
/// fewer than 8 different ones with a probability below 10^-18.
pub const MIN_DISTINCT_CHARS: usize = 8;

/// Random bytes in a token made by [`new_token`]: 256 bits, beyond
/// guessing at any rate a server can be asked.
pub const NEW_TOKEN_BYTES: usize = 32;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// `rw`: everything.
    ReadWrite,
    /// `ro`: get, list and stat; no change at all.
    ReadOnly,
    /// `wo`: put and mkdir only, for a drop box.
    WriteOnly,
}

/// What the whole server allows, whoever asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerMode {
    /// Everything.
    #[default]
    Full,
    /// `--read-only`: get, list and stat; no change at all.
    ReadOnly,
    /// `--no-delete`: everything but taking a name away (delete, rmdir,
    /// rename).
    NoDelete,
    /// `--upload-only`: put and mkdir only; not even list.
    UploadOnly,
}

/// What a request does to the served directory, as access sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Reads: changes nothing.
    Read,
    /// Adds a name; takes none away.
    Create,
    /// Takes a name away (a rename takes its old name away).
    Remove,
}

/// The one decision of what each kind of request does. No catch-all arm:
/// a new kind of request does not compile until it is placed here.
fn effect(kind: RequestKind) -> Effect {
    match kind {
        RequestKind::Get
        | RequestKind::GetFrom
        | RequestKind::GetTree
        | RequestKind::List
        | RequestKind::Stat => Effect::Read,
        RequestKind::Put
        | RequestKind::PutFrom
        | RequestKind::PutTree
        | RequestKind::PutStream
        | RequestKind::MakeDir => Effect::Create,
        RequestKind::Delete | RequestKind::RemoveDir | RequestKind::Rename => Effect::Remove,
    }
}

impl TokenMode {
    fn allows(self, kind: RequestKind) -> bool {
        match (self, effect(kind)) {
            (TokenMode::ReadWrite, _) => true,
            (TokenMode::ReadOnly, Effect::Read) => true,
            (TokenMode::ReadOnly, Effect::Create | Effect::Remove) => false,
            (TokenMode::WriteOnly, Effect::Create) => true,
            (TokenMode::WriteOnly, Effect::Read | Effect::Remove) => false,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            TokenMode::ReadWrite => "read and write",
            TokenMode::ReadOnly => "read only",
            TokenMode::WriteOnly => "upload and mkdir only",
        }
    }
}

impl ServerMode {
    fn allows(self, kind: RequestKind) -> bool {
        match (self, effect(kind)) {
            (ServerMode::Full, _) => true,
            (ServerMode::ReadOnly, Effect::Read) => true,
            (ServerMode::ReadOnly, Effect::Create | Effect::Remove) => false,
            (ServerMode::NoDelete, Effect::Read | Effect::Create) => true,
            (ServerMode::NoDelete, Effect::Remove) => false,
            (ServerMode::UploadOnly, Effect::Create) => true,
            (ServerMode::UploadOnly, Effect::Read | Effect::Remove) => false,
        }
    }
}

impl fmt::Display for TokenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenMode::ReadWrite => "rw",
            TokenMode::ReadOnly => "ro",
            TokenMode::WriteOnly => "wo",
        })
    }
}

impl fmt::Display for ServerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerMode::Full => "read-write",
            ServerMode::ReadOnly => "read-only",
            ServerMode::NoDelete => "no-delete",
            ServerMode::UploadOnly => "upload-only",
        })
    }
}

/// The tokens a server accepts. Only their BLAKE3 hashes are kept: a
/// comparison of hashes takes the same time wherever the bytes differ
/// (BLAKE3's `Hash` compares in constant time), and no token is held in
/// memory longer than it takes to load it.
pub struct Tokens {
    accepted: Vec<(blake3::Hash, TokenMode)>,
}

/// Why a token file or token could not be used. Names lines, never tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("line {line} of {path}: {why}")]
    Line {
        path: String,
        line: usize,
        why: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot get random bytes from the system to make a token")]
    Random,
}

/// Shows how many tokens there are, never the tokens or their hashes.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({})", self.accepted.len())
    }
}

impl Tokens {
    /// Reads a token file: one `TOKEN MODE` a line, the mode `rw`, `ro` or
    /// `wo`; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<Tokens, TokenError> {
        let text = secret_file::read(path)?;
        Tokens::parse(&text).map_err(|(line, why)| TokenError::Line {
            path: path.display().to_string(),
            line,
            why,
        })
    }

    /// The one read-write token of `FERRY_TOKEN`.
    pub fn single(token: &str) -> Result<Tokens, TokenError> {
        check_token(token).map_err(|why| TokenError::Invalid(format!("FERRY_TOKEN {why}")))?;
        Ok(Tokens {
            accepted: vec![(blake3::hash(token.as_bytes()), TokenMode::ReadWrite)],
        })
    }

    fn parse(text: &str) -> Result<Tokens, (usize, String)> {
        let mut accepted: Vec<(blake3::Hash, TokenMode)> = Vec::new();
        let mut last_line = 0;
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            last_line = line_number;
            let fail = |why: &str| (line_number, why.to_owned());
            let mut words = line.split_whitespace();
            let Some(token) = words.next().filter(|word| !word.starts_with('#')) else {
                continue;
            };
            check_token(token).map_err(|why| fail(&format!("the token {why}")))?;
            let mode = match (words.next(), words.next()) {
                (Some("rw"), None) => TokenMode::ReadWrite,
                (Some("ro"), None) => TokenMode::ReadOnly,
                (Some("wo"), None) => TokenMode::WriteOnly,
                (None, _) => return Err(fail("no mode after the token (rw, ro or wo)")),
                _ => return Err(fail("expected `TOKEN MODE`, the mode rw, ro or wo")),
            };
            let hash = blake3::hash(token.as_bytes());
            if accepted.iter().any(|(known, _)| *known == hash) {
                return Err(fail("the same token appears on an earlier line"));
            }
            accepted.push((hash, mode));
        }
        if accepted.is_empty() {
            // Named at its last line, or its first if the file is empty.
            let line = last_line.max(1);
            return Err((
                line,
                "no tokens in the file; it would refuse everyone".into(),
            ));
        }
        Ok(Tokens { accepted })
    }

    /// The mode of `offered`, if it is one of the tokens. Every token is
    /// compared, each in constant time.
    pub fn check(&self, offered: &Token) -> Option<TokenMode> {
        let offered = blake3::hash(offered.expose().as_bytes());
        let mut found = None;
        for (accepted, mode) in &self.accepted {
            if *accepted == offered {
                found = Some(*mode);
            }
        }
        found
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.accepted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty()
    }
}

/// Reads the client's token from a file holding it alone on a line
/// (blank lines and `#` comments aside).
pub fn read_client_token(path: &Path) -> Result<Token, TokenError> {
    let text = secret_file::read(path)?;
    let mut tokens = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    let invalid = |why: &str| TokenError::Invalid(format!("{}: {why}", path.display()));
    let token = tokens.next().ok_or_else(|| invalid("no token in it"))?;
    if tokens.next().is_some() {
        return Err(invalid("more than one line; a client uses one token"));
    }
    Ok(Token::new(token.to_owned()))
}

/// A new token: [`NEW_TOKEN_BYTES`] bytes from the system's secure random
/// generator, as lowercase hex digits. Hex rather than base64: it needs no
/// dependency, and a token of hex digits is one word in any shell, file
/// or URL, never starts with `-` or `#`, and reads out unambiguously.
pub fn new_token() -> Result<Token, TokenError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; NEW_TOKEN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let mut hex = String::with_capacity(2 * NEW_TOKEN_BYTES);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(Token::new(hex))
}

/// Whether a server may accept `token`: one word, long enough, and not
/// obviously made up. The reason given never quotes the token.
fn check_token(token: &str) -> Result<(), String> {
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds a space or a control character".into());
    }
    let len = token.chars().count();
    if len < MIN_TOKEN_LEN {
        return Err(too_weak(&counted(len, "character"), MIN_TOKEN_LEN));
    }
    let mut distinct: Vec<char> = token.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT_CHARS {
        let said = counted(distinct.len(), "different character");
        return Err(too_weak(&said, MIN_DISTINCT_CHARS));
    }
    Ok(())
}

fn too_weak(has: &str, least: usize) -> String {
    format!("is too weak: {has}, fewer than {least}; make one with `ferry token new`")
}

/// `1 character`, `2 characters`.
fn counted(count: usize, noun: &str) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {noun}{plural}")
}

/// What a connection may do, settled once its token is checked.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    token: Option<TokenMode>,
    server: ServerMode,
}

/// Who may use a server.
#[derive(Debug)]
pub struct Access {
    /// `None`: open to anyone who can connect.
    pub tokens: Option<Tokens>,
    pub mode: ServerMode,
}

impl Access {
    /// Anyone may do anything: the library's default.
    pub fn open() -> Access {
        Access {
            tokens: None,
            mode: ServerMode::Full,
        }
    }

    /// Admits a connection that presented `offered` (empty if none), or
    /// says why not, in words for the client and the report.
    pub fn admit(&self, offered: &Token) -> Result<Grant, &'static str> {
        let token = match &self.tokens {
            None => None,
            Some(_) if offered.is_empty() => {
                return Err("this server requires a token: set FERRY_TOKEN or pass --token-file")
            }
            Some(tokens) => Some(tokens.check(offered).ok_or("the token was not accepted")?),
        };
        Ok(Grant {
            token,
            server: self.mode,
        })
    }
}

impl Grant {
    /// Whether a request of `kind` is allowed, or why not.
    pub fn check(&self, kind: RequestKind) -> Result<(), String> {
        if !self.server.allows(kind) {
            return Err(format!("this server is {}", self.server));
        }
        match self.token {
            Some(mode) if !mode.allows(kind) => {
                Err(format!("this token is {mode}: {}", mode.describe()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: &str = "read-write-token-0001";
    const RO: &str = "read-only-token-00002";
    const WO: &str = "write-only-token-0003";

    fn tokens() -> Tokens {
        Tokens::parse(&format!("# team\n{RW} rw\n\n{RO}   ro\n{WO}\two\n")).unwrap()
    }

    fn token(text: &str) -> Token {
        Token::new(text.to_owned())
    }

    #[test]
    fn each_token_has_its_mode_and_others_have_none() {
        let tokens = tokens();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens.check(&token(RW)), Some(TokenMode::ReadWrite));
        assert_eq!(tokens.check(&token(RO)), Some(TokenMode::ReadOnly));
        assert_eq!(tokens.check(&token(WO)), Some(TokenMode::WriteOnly));
        assert_eq!(tokens.check(&token("read-write-token-0002")), None);
        assert_eq!(tokens.check(&token(&RW[..RW.len() - 1])), None);
        assert_eq!(tokens.check(&token("")), None);
    }

    #[test]
    fn bad_lines_are_named_without_their_token() {
        let cases = [
            ("short rw\n", 1, "too weak: 5 characters"),
            (&format!("{RW}\n") as &str, 1, "no mode"),
            (&format!("\n{RW} admin\n"), 2, "rw, ro or wo"),
            (&format!("{RW} rw extra\n"), 1, "TOKEN MODE"),
            (&format!("{RW} rw\n{RW} ro\n"), 2, "earlier line"),
            ("# only a comment\n", 1, "no tokens"),
            ("", 1, "no tokens"),
        ];
        for (text, line, why) in cases {
            let (got_line, got_why) = Tokens::parse(text).err().unwrap();
            assert_eq!(got_line, line, "{text:?}");
            assert!(got_why.contains(why), "{text:?}: {got_why}");
            assert!(!got_why.contains(RW), "{got_why}");
        }
    }

    #[test]
    fn modes_combine_with_the_servers() {
        use RequestKind::*;
        let all = RequestKind::ALL;
        let allowed = |access: &Access, offered: &str| -> Vec<RequestKind> {
            let grant = access.admit(&token(offered)).unwrap();
            all.into_iter()
                .filter(|op| grant.check(*op).is_ok())
                .collect()
        };
        let with = |mode| Access {
            tokens: Some(tokens()),
            mode,
        };
        assert_eq!(allowed(&with(ServerMode::Full), RW), all);
        assert_eq!(
            allowed(&with(ServerMode::Full), RO),
            [Get, List, Stat, GetTree, GetFrom]
        );
        assert_eq!(
            allowed(&with(ServerMode::Full), WO),
            [Put, MakeDir, PutTree, PutStream, PutFrom]
        );
        assert_eq!(
            allowed(&with(ServerMode::NoDelete), RW),
            [Put, Get, List, MakeDir, Stat, PutTree, GetTree, PutStream, PutFrom, GetFrom]
        );
        assert_eq!(
            allowed(&with(ServerMode::ReadOnly), RW),
            [Get, List, Stat, GetTree, GetFrom]
        );
        assert_eq!(allowed(&with(ServerMode::ReadOnly), WO), []);
        assert_eq!(
            allowed(&with(ServerMode::UploadOnly), RW),
            [Put, MakeDir, PutTree, PutStream, PutFrom]
        );
        assert_eq!(allowed(&with(ServerMode::UploadOnly), RO), []);
        assert_eq!(
            allowed(&with(ServerMode::NoDelete), WO),
            [Put, MakeDir, PutTree, PutStream, PutFrom]
        );
        let open = Access {
            tokens: None,
            mode: ServerMode::NoDelete,
        };
        assert_eq!(
            allowed(&open, ""),
            [Put, Get, List, MakeDir, Stat, PutTree, GetTree, PutStream, PutFrom, GetFrom]
        );
        assert_eq!(
            allowed(&open, "any token at all is ignored"),
            [Put, Get, List, MakeDir, Stat, PutTree, GetTree, PutStream, PutFrom, GetFrom]
        );
    }

    #[test]
    fn a_server_with_tokens_turns_away_missing_and_wrong_ones() {
        let access = Access {
            tokens: Some(tokens()),
            mode: ServerMode::Full,
        };
        assert!(access
            .admit(&token(""))
            .unwrap_err()
            .contains("requires a token"));
        assert!(access
            .admit(&token("not-a-known-token-at-all"))
            .unwrap_err()
            .contains("not accepted"));
    }

    #[test]
    fn ferry_token_must_be_a_real_token() {
        let refused = Tokens::single("abc").unwrap_err().to_string();
        assert!(refused.starts_with("FERRY_TOKEN is too weak"), "{refused}");
        assert!(!refused.contains("abc"), "{refused}");
        let single = Tokens::single(RW).unwrap();
        assert_eq!(single.check(&token(RW)), Some(TokenMode::ReadWrite));
    }

    #[test]
    fn weak_tokens_are_refused_saying_why_and_never_what() {
        // (token, refused because, or None if accepted)
        let cases: [(&str, Option<&str>); 13] = [
            ("", Some("0 characters, fewer than 20")),
            ("a1b2c3d4e5f6g7h8i9j", Some("19 characters, fewer than 20")),
            (
                "aaaaaaaaaaaaaaaaaaaa",
                Some("1 different character, fewer than 8"),
            ),
            ("12121212121212121212", Some("2 different characters")),
            (
                "abcdefgabcdefgabcdefgabcdefg",
                Some("7 different characters"),
            ),
            (
                "0000000000000000000000000000000000000000000000000000000000000000",
                Some("1 different"),
            ),
            // Characters, not bytes: 20 of them, 8 different, 40 bytes.
            ("ééééééééééééabcdefg1", None),
            ("ééééééééé", Some("9 characters")),
            ("a1b2c3d4e5f6g7h8i9j0", None),
            ("abcdefghabcdefghabcd", None),
            ("read-write-token-0001", None),
            (
                "has a space in it and is long",
                Some("space or a control character"),
            ),
            (
                "control\u{7}character-in-it-0123",
                Some("space or a control character"),
            ),
        ];
        for (candidate, refused) in cases {
            match (check_token(candidate), refused) {
                (Ok(()), None) => {}
                (Err(why), Some(expected)) => {
                    assert!(why.contains(expected), "{candidate:?}: {why}");
                    if !candidate.is_empty() {
                        assert!(!why.contains(candidate), "{why}");
                    }
                }
                (got, expected) => panic!("{candidate:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_weak_token_line_is_named_with_its_file_line_and_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let weak = "aaaaaaaaaaaaaaaaaaaaaaaa";
        std::fs::write(&path, format!("# team\n{RW} rw\n{weak} ro\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let refused = Tokens::load(&path).unwrap_err().to_string();
        let expected = format!("line 3 of {}: the token is too weak", path.display());
        assert!(refused.starts_with(&expected), "{refused}");
        assert!(
            !refused.contains(weak) && !refused.contains(RW),
            "{refused}"
        );
    }

    #[test]
    fn new_tokens_are_64_hex_digits_all_different_and_accepted() {
        let made: Vec<String> = (0..100)
            .map(|_| new_token().unwrap().expose().to_owned())
            .collect();
        for made in &made {
            assert_eq!(made.len(), 2 * NEW_TOKEN_BYTES, "{made}");
            assert!(made.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            assert_eq!(check_token(made), Ok(()));
        }
        let mut distinct = made.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), made.len());
    }
}
