//! The interactive shell (seed 002's CONN/UPLD/LIST/DWLD/DELF/QUIT client):
//! one connection kept across commands, line editing and history on a
//! terminal, plain line reading from a pipe.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::client::Client;
use ferry::protocol::{EntryKind, Link, RemoteName};
use ferry::report::{escape_controls, Detail};
use rustyline::error::ReadlineError;
use tokio::runtime::Runtime;

use super::request::{self, describe, perform, prepare, CommandError, Settings};
use super::Request;
use super::{local_glob, shell_words};

/// One line typed into the shell.
#[derive(Debug, Parser)]
#[command(
    multicall = true,
    about = "Commands (any case; names with spaces in quotes):"
)]
struct ShellLine {
    #[command(subcommand)]
    command: ShellCommand,
}

#[derive(Debug, Subcommand)]
enum ShellCommand {
    #[command(flatten)]
    Request(Request),
    /// Connect to the server again.
    #[command(visible_alias = "conn")]
    Connect,
    /// Leave the shell (Ctrl-D works too).
    #[command(visible_alias = "exit")]
    Quit,
}

/// Where command lines come from.
enum Input {
    /// A terminal: line editing, history, prompts, confirmations.
    Terminal(rustyline::DefaultEditor),
    /// A pipe or file: plain lines, no prompts, no confirmations.
    Script(std::io::StdinLock<'static>),
}

impl Input {
    fn open() -> Input {
        if std::io::stdin().is_terminal() {
            match rustyline::DefaultEditor::new() {
                Ok(editor) => return Input::Terminal(editor),
                Err(e) => eprintln!("ferry: no line editing ({e}); reading plain lines"),
            }
        }
        Input::Script(std::io::stdin().lock())
    }

    /// The next line, or `None` at end of input (Ctrl-D).
    fn read_line(&mut self) -> Option<String> {
        match self {
            Input::Terminal(editor) => match editor.readline("ferry> ") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Some(line)
                }
                // Ctrl-C abandons the line being typed, not the shell.
                Err(ReadlineError::Interrupted) => Some(String::new()),
                Err(ReadlineError::Eof) => None,
                Err(e) => {
                    eprintln!("ferry: cannot read a command: {e}");
                    None
                }
            },
            Input::Script(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) => None,
                    Ok(_) => Some(line),
                    Err(e) => {
                        eprintln!("ferry: cannot read a command: {e}");
                        None
                    }
                }
            }
        }
    }

    /// Asks a yes/no question on a terminal; a script is not asked.
    fn confirm(&mut self, question: &str) -> bool {
        match self {
            Input::Terminal(editor) => editor
                .readline(&format!("{question} [y/N] "))
                .is_ok_and(|answer| matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")),
            Input::Script(_) => true,
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Input::Terminal(_))
    }
}

/// Runs the shell until `quit` or end of input. From a script, the exit
/// code is 1 if any command failed; at a terminal it is 0.
pub fn run(runtime: &Runtime, settings: &Settings) -> ExitCode {
    let mut input = Input::open();
    let mut session = Session {
        settings,
        client: None,
    };
    if input.is_terminal() {
        eprintln!("ferry shell: type 'help' for commands, 'quit' or Ctrl-D to leave");
    }
    runtime.block_on(session.connect());
    let mut failed = false;
    while let Some(line) = input.read_line() {
        let Some(words) = shell_words::split(&line) else {
            eprintln!("ferry: unbalanced quotes in: {}", line.trim_end());
            failed = true;
            continue;
        };
        let mut texts: Vec<String> = words.iter().map(|word| word.text.clone()).collect();
        let Some(first) = texts.first_mut() else {
            continue;
        };
        // Seed 002's commands are upper case; accept any case.
        *first = first.to_lowercase();
        let command = match ShellLine::try_parse_from(&texts) {
            Ok(line) => line.command,
            Err(e) => {
                let _ = e.print();
                failed |= e.use_stderr();
                continue;
            }
        };
        match command {
            ShellCommand::Quit => break,
            ShellCommand::Connect => {
                session.client = None;
                failed |= !runtime.block_on(session.connect());
            }
            ShellCommand::Request(request @ Request::Delete { .. }) if input.is_terminal() => {
                // Look first: asking about a name that is not there, or a
                // directory without -r, would only be refused afterwards.
                let Some(question) = runtime.block_on(session.deletion_question(&request)) else {
                    failed = true;
                    continue;
                };
                if question
                    .as_ref()
                    .is_none_or(|question| input.confirm(question))
                {
                    failed |= !runtime.block_on(session.execute(request));
                } else {
                    eprintln!("not deleted");
                }
            }
            ShellCommand::Request(request) => {
                // Local globs are the shell's to expand here, as sh would.
                let description = describe(&request);
                match local_glob::expand_put(request, &words, Path::new(".")) {
                    Ok(request) => failed |= !runtime.block_on(session.execute(request)),
                    Err(e) => {
                        let failed_glob = Err(e.into());
                        request::report(settings, settings.target(), description, &failed_glob);
                        failed = true;
                    }
                }
            }
        }
    }
    if failed && !input.is_terminal() {
        ExitCode::from(super::exit::FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The shell's connection, made again whenever it is lost.
struct Session<'a> {
    settings: &'a Settings,
    client: Option<Client>,
}

impl Session<'_> {
    /// Connects, reporting a failure; returns whether it worked.
    async fn connect(&mut self) -> bool {
        match self.settings.connect().await {
            Ok(client) => {
                if !self.settings.quiet {
                    eprintln!("connected to {}", client.server_addr());
                }
                self.client = Some(client);
                true
            }
            Err(e) => {
                // The message may come from the server: escaped, it cannot
                // drive the terminal.
                let e = escape_controls(&e.to_string());
                eprintln!("ferry: {e}; will try again at the next command");
                false
            }
        }
    }

    /// Runs one request, reconnecting first if the connection is gone;
    /// returns whether it succeeded.
    async fn execute(&mut self, request: Request) -> bool {
        let mut description = describe(&request);
        let prepared = match request::uses_standard_stream(&request) {
            true => Err(CommandError::Usage(
                "- (standard input or output) works in one-shot commands, not in the shell".into(),
            )),
            false => prepare(request),
        };
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                request::report(self.settings, self.settings.target(), description, &Err(e));
                return false;
            }
        };
        let settings = self.settings;
        let Some(client) = self.client().await else {
            return false;
        };
        let peer = client.server_addr().to_string();
        let result = perform(client, prepared, settings, &mut description).await;
        self.finish(peer, description, &result);
        result.is_ok()
    }

    /// What to ask before the delete `request`: `Some(None)` if nothing
    /// needs asking (a directory, not a link to one, without -r, which the
    /// server will refuse with its reason), `None` if the name cannot be
    /// deleted at all, which is then reported as the delete's failure.
    async fn deletion_question(&mut self, request: &Request) -> Option<Option<String>> {
        let Request::Delete {
            remote_name,
            recursive,
        } = request
        else {
            return Some(None);
        };
        let description = describe(request);
        let name = match RemoteName::parse(remote_name) {
            Ok(name) => name,
            Err(e) => {
                let failed = Err(e.into());
                request::report(self.settings, self.settings.target(), description, &failed);
                return None;
            }
        };
        let client = self.client().await?;
        let peer = client.server_addr().to_string();
        let info = match client.stat(Some(&name)).await {
            Ok(info) => info,
            Err(e) => {
                self.finish(peer, description, &Err(e.into()));
                return None;
            }
        };
        Some(match (info.link, info.kind, recursive) {
            (Link::Inside | Link::Elsewhere, _, _) => Some(format!(
                "delete the symlink {remote_name:?} on the server (not what it leads to)?"
            )),
            (Link::None, EntryKind::Directory, false) => None,
            (Link::None, EntryKind::Directory, true) => Some(format!(
                "delete {remote_name:?} and everything in it on the server?"
            )),
            (Link::None, _, _) => Some(format!("delete {remote_name:?} on the server?")),
        })
    }

    /// The connection, made again first if it is gone; `None` if it
    /// cannot be made (already reported).
    async fn client(&mut self) -> Option<&mut Client> {
        if self
            .client
            .as_ref()
            .is_some_and(Client::is_closed_by_server)
        {
            eprintln!("the server closed the connection; reconnecting");
            self.client = None;
        }
        if self.client.is_none() && !self.connect().await {
            return None;
        }
        self.client.as_mut()
    }

    /// Reports a request's result, and forgets a connection it lost.
    fn finish(
        &mut self,
        peer: String,
        description: request::Description,
        result: &Result<Detail, CommandError>,
    ) {
        request::report(self.settings, peer, description, result);
        if result.as_ref().is_err_and(CommandError::is_connection_lost) {
            eprintln!(
                "connection to {} lost; will reconnect at the next command",
                self.settings.target()
            );
            self.client = None;
        }
    }
}
