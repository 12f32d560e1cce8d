//! The interactive shell (seed 002's CONN/UPLD/LIST/DWLD/DELF/QUIT client):
//! one connection kept across commands, remote and local working
//! directories, line editing, Tab completion and a history kept between
//! sessions on a terminal, plain line reading from a pipe.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::client::Client;
use ferry::protocol::{EntryKind, Link, RemoteName};
use ferry::report::{escape_controls, Detail};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;
use tokio::runtime::Runtime;

use super::completion::{self, WordKind};
use super::remote_dir::RemoteDir;
use super::request::{self, describe, perform, prepare, CommandError, Settings};
use super::shell_helper::ShellHelper;
use super::shell_words::Word;
use super::Request;
use super::{history, local, local_glob, shell_words};

/// One line typed into the shell.
#[derive(Debug, Parser)]
#[command(
    multicall = true,
    about = "Commands (any case; names with spaces in quotes; !COMMAND runs COMMAND here through sh, ! alone a shell):"
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
    /// Change the remote working directory, which names are taken from
    /// (`/` alone or no directory: the served directory).
    Cd {
        /// The directory on the server.
        dir: Option<String>,
    },
    /// Print the remote working directory.
    Pwd,
    /// Change the local working directory [default: the home directory].
    Lcd {
        /// The local directory.
        dir: Option<PathBuf>,
    },
    /// Print the local working directory.
    Lpwd,
    /// List the local working directory, or a directory here.
    // -h is --human-readable, as in `ls -lh`; help is --help alone.
    #[command(
        disable_help_flag = true,
        arg(clap::Arg::new("help")
            .long("help")
            .action(clap::ArgAction::Help)
            .help("Print help"))
    )]
    Lls {
        /// Show size and modification time.
        #[arg(short)]
        long: bool,
        /// With -l, sizes as `ls -lh` shows them.
        #[arg(short = 'h', long)]
        human_readable: bool,
        /// The local directory [default: the working directory].
        dir: Option<PathBuf>,
    },
    /// Leave the shell (Ctrl-D works too).
    #[command(visible_alias = "exit")]
    Quit,
}

/// Where command lines come from.
enum Input<'a> {
    /// A terminal: line editing, completion, history, prompts,
    /// confirmations.
    Terminal {
        editor: Box<Editor<ShellHelper<'a>, FileHistory>>,
        /// Where each line is appended; `None` once it cannot be.
        history: Option<PathBuf>,
    },
    /// A pipe or file: plain lines, no prompts, no confirmations.
    Script(std::io::StdinLock<'static>),
}

impl<'a> Input<'a> {
    fn open(runtime: &'a Runtime) -> Input<'a> {
        if std::io::stdin().is_terminal() {
            let config = rustyline::Config::builder()
                .max_history_size(history::MAX_ENTRIES)
                .map(|config| {
                    config
                        .auto_add_history(false)
                        // As bash and sftp: the common part, then a list.
                        .completion_type(rustyline::CompletionType::List)
                        .build()
                });
            match config.and_then(Editor::with_config) {
                Ok(mut editor) => {
                    editor.set_helper(Some(ShellHelper::new(runtime)));
                    let history = open_history(&mut editor);
                    return Input::Terminal {
                        editor: Box::new(editor),
                        history,
                    };
                }
                Err(e) => eprintln!("ferry: no line editing ({e}); reading plain lines"),
            }
        }
        Input::Script(std::io::stdin().lock())
    }

    /// The next line, or `None` at end of input (Ctrl-D). On a terminal,
    /// the session's connection is lent to completion meanwhile.
    fn read_line(&mut self, session: &mut Session) -> Option<String> {
        match self {
            Input::Terminal { editor, history } => {
                if let Some(helper) = editor.helper_mut() {
                    helper.begin_line(session.client.take(), &session.remote_dir);
                }
                let prompt = match session.remote_dir.is_root() {
                    true => "ferry> ".to_owned(),
                    false => format!(
                        "ferry:{}> ",
                        escape_controls(&session.remote_dir.to_string())
                    ),
                };
                let read = editor.readline(&prompt);
                if let Some(helper) = editor.helper_mut() {
                    session.client = helper.end_line();
                }
                match read {
                    Ok(line) => {
                        remember(editor, history, &line);
                        Some(line)
                    }
                    // Ctrl-C abandons the line being typed, not the shell.
                    Err(ReadlineError::Interrupted) => Some(String::new()),
                    Err(ReadlineError::Eof) => None,
                    Err(e) => {
                        eprintln!("ferry: cannot read a command: {e}");
                        None
                    }
                }
            }
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
            Input::Terminal { editor, .. } => editor
                .readline(&format!("{question} [y/N] "))
                .is_ok_and(|answer| matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")),
            Input::Script(_) => true,
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Input::Terminal { .. })
    }
}

/// Loads the history of earlier sessions into `editor`, and returns the
/// file to append this session's lines to; `None`, once said, if there is
/// none to use.
fn open_history(editor: &mut Editor<ShellHelper<'_>, FileHistory>) -> Option<PathBuf> {
    let path = history::path()?;
    if let Err(e) = history::create(&path) {
        eprintln!(
            "ferry: no history kept: cannot make {}: {e}",
            path.display()
        );
        return None;
    }
    if let Err(e) = editor.load_history(&path) {
        eprintln!("ferry: cannot read the history in {}: {e}", path.display());
    }
    Some(path)
}

/// Adds `line` to the history and appends it to the file at once, so a
/// shell killed later keeps it; a file that cannot be written is said
/// once and then left alone.
fn remember(
    editor: &mut Editor<ShellHelper<'_>, FileHistory>,
    history: &mut Option<PathBuf>,
    line: &str,
) {
    if !matches!(editor.add_history_entry(line), Ok(true)) {
        return;
    }
    if let Some(path) = history {
        if let Err(e) = editor.append_history(path) {
            eprintln!("ferry: history no longer kept in {}: {e}", path.display());
            *history = None;
        }
    }
}

/// Runs the shell until `quit` or end of input. From a script, the exit
/// code is 1 if any command failed; at a terminal it is 0.
pub fn run(runtime: &Runtime, settings: &Settings) -> ExitCode {
    let mut input = Input::open(runtime);
    let mut session = Session {
        settings,
        client: None,
        remote_dir: RemoteDir::default(),
    };
    if input.is_terminal() {
        eprintln!("ferry shell: type 'help' for commands, 'quit' or Ctrl-D to leave");
    }
    runtime.block_on(session.connect());
    let mut failed = false;
    while let Some(line) = input.read_line(&mut session) {
        // As in sftp, `!` runs the rest of the line here, through sh.
        if let Some(command) = line.trim_start().strip_prefix('!') {
            failed |= !local::run_command(command);
            continue;
        }
        let Some(mut words) = shell_words::split(&line) else {
            eprintln!("ferry: unbalanced quotes in: {}", line.trim_end());
            failed = true;
            continue;
        };
        expand_tildes(&mut words);
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
            ShellCommand::Cd { dir } => {
                failed |= !runtime.block_on(session.change_dir(dir.as_deref().unwrap_or("/")));
            }
            ShellCommand::Pwd => println!("{}", escape_controls(&session.remote_dir.to_string())),
            ShellCommand::Lcd { dir } => failed |= !said(local::change_dir(dir.as_deref())),
            ShellCommand::Lpwd => {
                failed |= !said(local::current_dir().map(|dir| println!("{}", dir.display())))
            }
            ShellCommand::Lls {
                long,
                human_readable,
                dir,
            } => failed |= !said(local::list(dir.as_deref(), long, human_readable)),
            ShellCommand::Request(request @ Request::Delete { .. }) if input.is_terminal() => {
                let request = session.remote_dir.apply(request);
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
                    Ok(request) => {
                        let request = session.remote_dir.apply(request);
                        failed |= !runtime.block_on(session.execute(request));
                    }
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

/// Expands a leading `~` in the words that are local paths, as sh does
/// (`~user` is not expanded).
fn expand_tildes(words: &mut [Word]) {
    let Some(home) = local::home_dir() else {
        return;
    };
    let home = home.to_string_lossy();
    let texts: Vec<&str> = words.iter().map(|word| word.text.as_str()).collect();
    let kinds = completion::kinds(&texts);
    for (word, kind) in words.iter_mut().zip(kinds) {
        if kind == WordKind::Local {
            word.expand_tilde(&home);
        }
    }
}

/// Says why a local command failed, if it did; returns whether it worked.
fn said(result: Result<(), String>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            eprintln!("ferry: {}", escape_controls(&e));
            false
        }
    }
}

/// The shell's connection, made again whenever it is lost.
struct Session<'a> {
    settings: &'a Settings,
    client: Option<Client>,
    /// Where names typed are taken from (`cd`).
    remote_dir: RemoteDir,
}

impl Session<'_> {
    /// Makes `dir`, taken from the remote working directory, the new one
    /// if it is a directory on the server; says why not if it is not.
    async fn change_dir(&mut self, dir: &str) -> bool {
        let target = self.remote_dir.enter(dir);
        let Some(name) = target.name() else {
            self.remote_dir = target;
            return true;
        };
        let shown = escape_controls(&target.to_string());
        let name = match RemoteName::parse(&name) {
            Ok(name) => name,
            Err(e) => {
                eprintln!("ferry: cd {shown}: {e}");
                return false;
            }
        };
        let Some(client) = self.client().await else {
            return false;
        };
        match client.stat(Some(&name)).await {
            Ok(info) if info.kind == EntryKind::Directory => {
                self.remote_dir = target;
                true
            }
            Ok(_) => {
                eprintln!("ferry: cd {shown}: not a directory on the server");
                false
            }
            Err(e) => {
                let lost = e.is_connection_lost();
                let e = escape_controls(&e.to_string());
                eprintln!("ferry: cd {shown}: {e}");
                if lost {
                    self.client = None;
                }
                false
            }
        }
    }

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
