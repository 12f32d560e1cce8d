//! Tab completion in the shell (issue 16): commands, local paths from
//! this machine's directories, remote names from the server's listing of
//! the directory being typed. A directory is listed once a line: pressing
//! Tab again on the same line uses what came, a new line lists again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

use ferry::client::Client;
use ferry::protocol::{EntryKind, RemoteName};
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};
use tokio::runtime::Runtime;

use super::completion::{self, quote, split_partial, WordKind};
use super::local::home_dir;
use super::remote_dir::RemoteDir;

/// A name in a directory, and whether it is a directory.
type Listing = Vec<(String, bool)>;

/// The shell's line-editing helper: completion, and nothing else.
pub struct ShellHelper<'a> {
    runtime: &'a Runtime,
    /// The shell's connection, lent while a line is read; `None` when it
    /// is not lent or is lost.
    client: RefCell<Option<Client>>,
    /// The remote working directory, which names typed are relative to.
    remote_dir: RemoteDir,
    /// The remote listings made for the line being read, by directory.
    listings: RefCell<HashMap<String, Listing>>,
}

impl<'a> ShellHelper<'a> {
    pub fn new(runtime: &'a Runtime) -> Self {
        ShellHelper {
            runtime,
            client: RefCell::new(None),
            remote_dir: RemoteDir::default(),
            listings: RefCell::new(HashMap::new()),
        }
    }

    /// Starts a line: lends the connection for listings from `remote_dir`,
    /// and forgets the listings of the line before.
    pub fn begin_line(&mut self, client: Option<Client>, remote_dir: &RemoteDir) {
        *self.client.get_mut() = client;
        self.remote_dir = remote_dir.clone();
        self.listings.get_mut().clear();
    }

    /// Ends a line: gives the connection back (`None` if a listing lost
    /// it).
    pub fn end_line(&mut self) -> Option<Client> {
        self.client.get_mut().take()
    }

    /// Local paths that complete `partial`, relative ones in the working
    /// directory.
    fn local(&self, partial: &str) -> Vec<Pair> {
        let (dir, prefix) = split_partial(partial);
        let listed = match dir {
            "" => PathBuf::from("."),
            _ if dir.starts_with("~/") => match home_dir() {
                Some(home) => home.join(&dir[2..]),
                None => return Vec::new(),
            },
            _ => PathBuf::from(dir),
        };
        let Ok(entries) = std::fs::read_dir(&listed) else {
            return Vec::new();
        };
        let names: Listing = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                // Through links, as `cd` into a link to a directory goes.
                Some((name, entry.path().is_dir()))
            })
            .collect();
        candidates(dir, prefix, &names)
    }

    /// Remote names that complete `partial`, relative ones in the remote
    /// working directory.
    fn remote(&self, partial: &str) -> Vec<Pair> {
        let (dir, prefix) = split_partial(partial);
        let listed = self.remote_dir.join(dir);
        if let Some(names) = self.listings.borrow().get(&listed) {
            return candidates(dir, prefix, names);
        }
        let names = self.list(&listed);
        let found = candidates(dir, prefix, &names);
        self.listings.borrow_mut().insert(listed, names);
        found
    }

    /// The names in the remote directory `dir` (the root for `""`); none
    /// if it cannot be listed. A connection lost meanwhile is dropped, for
    /// the shell to make again.
    fn list(&self, dir: &str) -> Listing {
        let name = match dir {
            "" => None,
            _ => match RemoteName::parse(dir) {
                Ok(name) => Some(name),
                Err(_) => return Vec::new(),
            },
        };
        let mut client = self.client.borrow_mut();
        let Some(connection) = client.as_mut() else {
            return Vec::new();
        };
        let mut names = Vec::new();
        let listed = self
            .runtime
            .block_on(connection.list(name.as_ref(), false, &mut |entry| {
                names.push((entry.name, entry.kind == EntryKind::Directory))
            }));
        match listed {
            Ok(_) => names,
            Err(e) => {
                if e.is_connection_lost() {
                    *client = None;
                }
                Vec::new()
            }
        }
    }
}

/// The names of `names` starting with `prefix` (hidden ones only for a
/// prefix starting with `.`), as `dir` followed by the name, quoted;
/// a directory ends in `/`, anything else in a space that ends the word.
fn candidates(dir: &str, prefix: &str, names: &Listing) -> Vec<Pair> {
    let mut found: Vec<Pair> = names
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter(|(name, _)| prefix.starts_with('.') || !name.starts_with('.'))
        .map(|(name, is_dir)| {
            let end = if *is_dir { "/" } else { " " };
            Pair {
                display: format!("{name}{}", if *is_dir { "/" } else { "" }),
                replacement: format!("{}{}{end}", quote(dir), quote(name)),
            }
        })
        .collect();
    found.sort_unstable_by(|a, b| a.display.cmp(&b.display));
    found
}

impl Completer for ShellHelper<'_> {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let Some((start, partial, kind)) = completion::word_at_cursor(&line[..pos]) else {
            return Ok((pos, Vec::new()));
        };
        let found = match kind {
            WordKind::Command => completion::COMMANDS
                .iter()
                .filter(|command| command.starts_with(&partial.to_lowercase()))
                .map(|command| Pair {
                    display: (*command).to_owned(),
                    replacement: format!("{command} "),
                })
                .collect(),
            WordKind::Local => self.local(&partial),
            WordKind::Remote => self.remote(&partial),
            WordKind::Other => Vec::new(),
        };
        Ok((start, found))
    }
}

impl Hinter for ShellHelper<'_> {
    type Hint = String;
}

impl Highlighter for ShellHelper<'_> {}

impl Validator for ShellHelper<'_> {}

impl Helper for ShellHelper<'_> {}
