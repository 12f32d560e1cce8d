//! Running one request: check the local side, connect if needed, perform,
//! report. Shared by the one-shot command line and the shell.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ferry::client::{
    expand_remote, format_target, Client, ClientError, GlobError, Left, LocalTree, Moved, Security,
    TreeHow, TreeSource, Upload,
};
use ferry::protocol::{ErrorCode, FailureKind, NameError, RemoteName, RequestKind};
use ferry::report::{Detail, Outcome, Report, Start, Subject};

use super::get_tree::{get_trees, is_plain_get, split_get, suggest_recursive, tree_local, TreeGet};
use super::json;
use super::local_glob::LocalGlobError;
use super::output::{
    print_entry, print_info, print_json, print_omitted, print_report, FileNaming, JsonTo,
    ProgressBar,
};
use super::put_plan::{self, PutPlan, Resolve};
use super::{exit, Request};

/// What every request needs to know besides itself.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub quiet: bool,
    pub timeout: Duration,
    pub security: Security,
    /// Print JSON objects, one a line, instead of text (`--json`).
    pub json: bool,
    /// Name each file of a tree as it moves or is skipped (`--verbose`).
    pub verbose: bool,
    /// The most a transfer's bodies may move, in bytes a second; 0 for no
    /// limit.
    pub rate_limit: u64,
}

impl Settings {
    /// `host:port` as the user gave it.
    pub fn target(&self) -> String {
        format_target(&self.host, self.port)
    }

    /// Whether progress bars stay hidden: when quiet, and under --json,
    /// whose readers are scripts.
    pub fn hides_progress(&self) -> bool {
        self.quiet || self.json
    }

    /// How a tree's files are named as they go: not at all, unless
    /// `--verbose`.
    pub fn file_naming(&self) -> Option<FileNaming> {
        self.verbose.then_some(match self.json {
            true => FileNaming::Json,
            false => FileNaming::Text,
        })
    }

    /// Connects to the server.
    pub async fn connect(&self) -> Result<Client, ClientError> {
        let mut client =
            Client::connect(&self.host, self.port, self.timeout, &self.security).await?;
        client.set_rate_limit(self.rate_limit);
        Ok(client)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    BadName(#[from] NameError),
    #[error("{0}")]
    LocalName(String),
    /// The arguments do not make a request.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Client(#[from] ClientError),
    /// A remote pattern matched nothing, or could not be expanded.
    #[error("{0}")]
    Glob(#[from] GlobError),
    /// A local pattern in the shell matched nothing, or could not be
    /// expanded.
    #[error("{0}")]
    LocalGlob(#[from] LocalGlobError),
    #[error(
        "interrupted by Ctrl-C; a file put or get run again goes on from where it stopped \
         (--restart starts it over)"
    )]
    Interrupted,
}

impl CommandError {
    fn kind(&self) -> FailureKind {
        match self {
            CommandError::BadName(_) => ErrorCode::BadName.into(),
            CommandError::LocalName(_) | CommandError::Usage(_) => FailureKind::BadLocalName,
            CommandError::Client(e) => e.kind(),
            CommandError::Glob(e) => e.kind(),
            CommandError::LocalGlob(LocalGlobError::NoMatch { .. }) => FailureKind::BadLocalName,
            CommandError::LocalGlob(LocalGlobError::Unreadable { .. }) => FailureKind::LocalIo,
            CommandError::Interrupted => FailureKind::Interrupted,
        }
    }

    /// Whether the connection to the server is gone (or never was). An
    /// interrupted request leaves the connection out of step, so it counts.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            CommandError::Client(e) | CommandError::Glob(GlobError::Client(e)) => {
                e.is_connection_lost()
            }
            CommandError::Interrupted => true,
            CommandError::Glob(_) | CommandError::LocalGlob(_) => false,
            CommandError::BadName(_) | CommandError::LocalName(_) | CommandError::Usage(_) => false,
        }
    }

    /// Whether a download written out as it arrived lost its reader.
    fn is_broken_pipe(&self) -> bool {
        matches!(
            self,
            CommandError::Client(ClientError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe
        )
    }

    /// The exit code a one-shot command that failed so ends with.
    fn exit_status(&self) -> u8 {
        match self {
            CommandError::Interrupted => exit::INTERRUPTED,
            CommandError::Usage(_) => exit::USAGE,
            CommandError::Client(e) if e.is_trust_failure() => exit::UNTRUSTED,
            e if e.is_connection_lost() => exit::UNREACHABLE,
            _ => exit::FAILED,
        }
    }
}

/// A request whose local side is checked: the file to upload is open, the
/// download destination is free, the names follow the rules.
pub enum Prepared {
    Put {
        upload: Upload,
        name: RemoteName,
        /// If `name` is a directory on the server: the name inside it,
        /// and the local file to open again for it. The put to `name`
        /// is refused before its body then, which costs a round trip only
        /// when it happens, where asking first would cost one every time.
        if_dir: Option<(RemoteName, PathBuf)>,
        /// Discard what the server kept of an interrupted upload.
        restart: bool,
    },
    /// `put - NAME`: standard input, of unknown length.
    PutStdin {
        name: RemoteName,
        replace: bool,
    },
    /// `get NAME -`: to standard output, as it arrives.
    GetStdout {
        name: RemoteName,
    },
    PutTree {
        sources: Vec<TreeSource>,
        target: Option<RemoteName>,
        resolve: Resolve,
        replace: bool,
        /// Discard what the server kept of an interrupted try.
        restart: bool,
    },
    Get {
        name: RemoteName,
        dest: PathBuf,
        /// A directory to make, with its parents, before the download:
        /// the local path named it with a trailing `/`.
        into_dir: Option<PathBuf>,
        /// Discard the partial an interrupted download left.
        restart: bool,
    },
    /// Files or trees by GetTree requests, one per source.
    GetTrees(TreeGet),
    List {
        dir: Option<RemoteName>,
        long: bool,
        human: bool,
    },
    Delete {
        name: RemoteName,
        recursive: bool,
    },
    MakeDir {
        name: RemoteName,
        parents: bool,
    },
    RemoveDir {
        name: RemoteName,
    },
    Rename {
        from: RemoteName,
        to: RemoteName,
    },
    Stat {
        name: Option<RemoteName>,
    },
}

/// What a request's report says it is about.
#[derive(Debug, Clone)]
pub struct Description {
    pub subject: Subject,
    /// The remote name.
    pub name: Option<String>,
    /// Where a download lands: the local path, `-` for standard output.
    pub local: Option<String>,
}

/// The kind of `request`, the remote name it is about and, for a get,
/// where it lands, for its report.
pub fn describe(request: &Request) -> Description {
    let (kind, name, local) = match request {
        Request::Put {
            paths,
            recursive,
            replace,
            ..
        } => match stdin_put(paths, *recursive) {
            Some(name) => (RequestKind::PutStream, name.map(str::to_owned), None),
            None => {
                let (kind, name) = put_plan::describe(paths, *recursive, *replace);
                (kind, name, None)
            }
        },
        Request::Get {
            recursive,
            replace,
            operands,
            ..
        } => match split_get(operands) {
            (sources, target) if is_plain_get(*recursive, *replace, &sources) => {
                let source = sources.first().cloned();
                let local = source
                    .as_deref()
                    .and_then(|source| plain_get_local(source, target));
                (RequestKind::Get, source, local)
            }
            (sources, target) => (
                RequestKind::GetTree,
                Some(sources.join(", ")),
                Some(tree_local(&sources, target)),
            ),
        },
        Request::List { remote_dir, .. } => (RequestKind::List, remote_dir.clone(), None),
        Request::Delete { remote_name, .. } => {
            (RequestKind::Delete, Some(remote_name.clone()), None)
        }
        Request::Mkdir { remote_name, .. } => {
            (RequestKind::MakeDir, Some(remote_name.clone()), None)
        }
        Request::Rmdir { remote_name } => (RequestKind::RemoveDir, Some(remote_name.clone()), None),
        Request::Rename { from, .. } => (RequestKind::Rename, Some(from.clone()), None),
        Request::Stat { remote_name } => (RequestKind::Stat, remote_name.clone(), None),
    };
    Description {
        subject: Subject::Request(kind),
        name,
        local,
    }
}

/// Where the plain get of `source` to `target` lands, as [`prepare_get`]
/// will decide it; for a pattern, the target it names, if any.
fn plain_get_local(source: &str, target: Option<PathBuf>) -> Option<String> {
    match target {
        Some(target) if is_standard_stream(&target) => Some("-".to_owned()),
        target if is_pattern(source) => target.map(|target| target.display().to_string()),
        target => RemoteName::parse(source)
            .ok()
            .map(|name| destination(&name, target).0.display().to_string()),
    }
}

/// The local file a plain get of `name` writes, by the rules of cp, and
/// the directory to make for it when `target` names one with a trailing
/// `/`.
fn destination(name: &RemoteName, target: Option<PathBuf>) -> (PathBuf, Option<PathBuf>) {
    match target {
        None => (PathBuf::from(name.file_name()), None),
        Some(dir) if names_directory(&dir) => (dir.join(name.file_name()), Some(dir)),
        Some(dir) if dir.is_dir() => (dir.join(name.file_name()), None),
        Some(path) => (path, None),
    }
}

/// Prepares a get of `sources` (remote names, patterns already expanded)
/// to `target`.
fn prepare_get(
    how: GetHow,
    sources: Vec<String>,
    target: Option<PathBuf>,
) -> Result<Prepared, CommandError> {
    let GetHow {
        recursive,
        replace,
        restart,
    } = how;
    if let ([source], Some(target)) = (sources.as_slice(), &target) {
        if is_standard_stream(target) && !recursive && !replace {
            return Ok(Prepared::GetStdout {
                name: RemoteName::parse(source)?,
            });
        }
    }
    if !is_plain_get(recursive, replace, &sources) {
        let sources = sources
            .iter()
            .map(|source| RemoteName::parse_dir(source))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Prepared::GetTrees(TreeGet {
            sources,
            target,
            recursive,
            how: TreeHow { replace, restart },
        }));
    }
    let remote_name = sources.first().cloned().unwrap_or_default();
    let name = RemoteName::parse(&remote_name)?;
    let (dest, into_dir) = destination(&name, target);
    if let Some(dir) = &into_dir {
        check_directory(dir)?;
    }
    if dest.symlink_metadata().is_ok() {
        return Err(ClientError::LocalExists(dest).into());
    }
    Ok(Prepared::Get {
        name,
        dest,
        into_dir,
        restart,
    })
}

/// A request ready to send, or a get naming remote patterns, which only
/// the server's listings can turn into names.
pub enum Command {
    Ready(Prepared),
    Matching {
        how: GetHow,
        patterns: Vec<String>,
        target: Option<PathBuf>,
    },
}

/// The flags of a get.
#[derive(Debug, Clone, Copy)]
pub struct GetHow {
    pub recursive: bool,
    pub replace: bool,
    pub restart: bool,
}

/// Checks everything that can be checked without the server.
pub fn prepare(request: Request) -> Result<Command, CommandError> {
    if let Request::Get {
        recursive,
        replace,
        restart,
        operands,
    } = &request
    {
        let (sources, target) = split_get(operands);
        if sources.iter().any(|source| is_pattern(source)) {
            let how = GetHow {
                recursive: *recursive,
                replace: *replace,
                restart: *restart,
            };
            return Ok(Command::Matching {
                how,
                patterns: sources,
                target,
            });
        }
    }
    prepare_ready(request).map(Command::Ready)
}

/// Checks a request that names no remote pattern.
fn prepare_ready(request: Request) -> Result<Prepared, CommandError> {
    Ok(match request {
        Request::Put {
            recursive,
            replace,
            paths,
            ..
        } if stdin_put(&paths, recursive).is_some() => {
            let name = stdin_put(&paths, recursive).flatten().map(str::to_owned);
            Prepared::PutStdin {
                name: RemoteName::parse(&stream_name(name)?)?,
                replace,
            }
        }
        Request::Put {
            recursive,
            replace,
            restart,
            paths,
        } => match put_plan::plan(&paths, recursive, replace)? {
            PutPlan::File {
                local,
                name,
                if_dir,
            } => Prepared::Put {
                restart,
                upload: Upload::open(&local)?,
                name: RemoteName::parse(&name)?,
                if_dir: match if_dir {
                    Some(inside) => Some((RemoteName::parse(&inside)?, local)),
                    None => None,
                },
            },
            PutPlan::Tree {
                sources,
                target,
                resolve,
                replace,
            } => Prepared::PutTree {
                sources,
                target,
                resolve,
                replace,
                restart,
            },
        },
        Request::Get {
            recursive,
            replace,
            restart,
            operands,
        } => {
            let (sources, target) = split_get(&operands);
            let how = GetHow {
                recursive,
                replace,
                restart,
            };
            prepare_get(how, sources, target)?
        }
        Request::List {
            long,
            human_readable,
            remote_dir,
        } => Prepared::List {
            dir: RemoteName::parse_dir(remote_dir.as_deref().unwrap_or_default())?,
            long,
            human: human_readable,
        },
        Request::Delete {
            remote_name,
            recursive,
        } => Prepared::Delete {
            name: RemoteName::parse(&remote_name)?,
            recursive,
        },
        Request::Mkdir {
            remote_name,
            parents,
        } => Prepared::MakeDir {
            name: RemoteName::parse(&remote_name)?,
            parents,
        },
        Request::Rmdir { remote_name } => Prepared::RemoveDir {
            name: RemoteName::parse(&remote_name)?,
        },
        Request::Rename { from, to } => Prepared::Rename {
            from: RemoteName::parse(&from)?,
            to: RemoteName::parse(&to)?,
        },
        Request::Stat { remote_name } => Prepared::Stat {
            name: RemoteName::parse_dir(remote_name.as_deref().unwrap_or_default())?,
        },
    })
}

/// Whether a local path is `-`: standard input for a put, standard output
/// for a get, as for curl and tar.
fn is_standard_stream(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Whether a remote operand is a pattern (`*`, `?`, `[...]`) for the
/// client to expand. A backslash alone does not make one: no name can
/// hold it, so `a\b` stays a bad name, refused before connecting.
fn is_pattern(operand: &str) -> bool {
    operand.contains(['*', '?', '['])
}

/// The names `sources` stand for: each pattern replaced by the names it
/// matches (sorted; no match is an error), plain names kept.
async fn expand_patterns(
    client: &mut Client,
    sources: Vec<String>,
) -> Result<Vec<String>, GlobError> {
    let mut names = Vec::new();
    for source in sources {
        match is_pattern(&source) {
            true => names.extend(expand_remote(client, &source).await?),
            false => names.push(source),
        }
    }
    Ok(names)
}

/// For `put - NAME` (`-` as the one source, without -r): `Some` with the
/// name, if one was given; `None` for any other put.
fn stdin_put(paths: &[PathBuf], recursive: bool) -> Option<Option<&str>> {
    match paths {
        [source, rest @ ..] if !recursive && rest.len() <= 1 && is_standard_stream(source) => {
            Some(rest.first().map(|name| name.to_str().unwrap_or_default()))
        }
        _ => None,
    }
}

/// Whether `request` reads standard input or writes standard output: one
/// a shell, which owns the terminal, cannot give it.
pub fn uses_standard_stream(request: &Request) -> bool {
    match request {
        Request::Put {
            paths, recursive, ..
        } => stdin_put(paths, *recursive).is_some(),
        Request::Get { operands, .. } => {
            operands.len() > 1 && operands.last().is_some_and(|last| last == "-")
        }
        _ => false,
    }
}

/// The remote name of `put - NAME`: there is no local name to take one
/// from, so it must be given, and be a file's name, not a directory's.
fn stream_name(remote: Option<String>) -> Result<String, CommandError> {
    match remote {
        Some(name) if !name.ends_with('/') && RemoteName::parse_dir(&name) != Ok(None) => Ok(name),
        _ => Err(CommandError::Usage(
            "put - reads standard input and needs the remote file's name: put - NAME".to_owned(),
        )),
    }
}

/// Whether a local path names a directory by ending in `/`, as a remote
/// name given to put does.
pub(super) fn names_directory(path: &Path) -> bool {
    path.as_os_str().as_bytes().ends_with(b"/")
}

/// Checks that `dir`, named with a trailing `/`, is a directory or can be
/// made one: it exists as one or not at all.
fn check_directory(dir: &Path) -> Result<(), CommandError> {
    // With the trailing `/`, stat fails on anything but a directory.
    match std::fs::metadata(dir) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(CommandError::LocalName(format!(
                "{} is not a directory, but a path ending in '/' names one",
                dir.display()
            )))
        }
        Err(source) => Err(ClientError::Local {
            path: dir.to_owned(),
            source,
        }
        .into()),
    }
}

/// Says on stderr that a local entry was left out of a tree, and why; the
/// path escaped, as it may hold anything.
fn say_left_out(path: &Path, why: Left) {
    let why = match why {
        Left::Symlink => "a symlink (not followed)",
        Left::Special => "not a regular file or directory",
        Left::Name => {
            "a name the server cannot hold (a control character or backslash, not UTF-8, \
             too long, or reserved)"
        }
    };
    eprintln!("ferry: left out {path:?}: {why}");
}

/// `count` entries, in words.
fn counted_entries(count: u64) -> String {
    match count {
        1 => "1 entry".to_owned(),
        _ => format!("{count} entries"),
    }
}

/// Sends a prepared request over `client`, abandoning it on Ctrl-C.
/// Abandoning drops the transfer, which removes a staged download's
/// temporary file; killed by the signal instead, the client would leave it.
/// What only the server could settle (the file a pattern matched, a put
/// gone into a directory) is written into `description`, so the report
/// names where things went.
pub async fn perform(
    client: &mut Client,
    command: Command,
    settings: &Settings,
    description: &mut Description,
) -> Result<Detail, CommandError> {
    let prepared = match command {
        Command::Ready(prepared) => prepared,
        Command::Matching {
            how,
            patterns,
            target,
        } => {
            let sources = expand_patterns(client, patterns).await?;
            let prepared = prepare_get(how, sources, target)?;
            if let Prepared::Get { name, dest, .. } = &prepared {
                description.name = Some(name.to_string());
                description.local = Some(dest.display().to_string());
            }
            prepared
        }
    };
    tokio::select! {
        // Polled first, so the handler is in place before any temporary
        // file exists.
        biased;
        _ = tokio::signal::ctrl_c() => Err(CommandError::Interrupted),
        result = send(client, prepared, settings, &mut description.name) => {
            result.map_err(Into::into)
        }
    }
}

/// Sends `prepared`; `remote` is the name its report gives, changed when
/// the server's answer moves the request to another.
async fn send(
    client: &mut Client,
    prepared: Prepared,
    settings: &Settings,
    remote: &mut Option<String>,
) -> Result<Detail, ClientError> {
    let started = Instant::now();
    let transfer = |bytes| Detail::Transfer {
        bytes,
        elapsed: started.elapsed(),
        start: Start::Fresh,
    };
    let moved_detail = |moved: Moved| Detail::Transfer {
        bytes: moved.bytes,
        elapsed: started.elapsed(),
        start: moved.start,
    };
    match prepared {
        Prepared::Put {
            upload,
            name,
            if_dir,
            restart,
        } => {
            let mut bar = ProgressBar::for_transfer(settings.hides_progress());
            let put = client.put_resumable(upload, &name, restart, &mut bar).await;
            let moved = match (put, if_dir) {
                (
                    Err(ClientError::Remote {
                        code: ErrorCode::IsADirectory,
                        ..
                    }),
                    Some((inside, local)),
                ) => {
                    *remote = Some(inside.to_string());
                    let upload = Upload::open(&local)?;
                    client
                        .put_resumable(upload, &inside, restart, &mut bar)
                        .await?
                }
                (put, _) => put?,
            };
            Ok(moved_detail(moved))
        }
        Prepared::PutStdin { name, replace } => {
            // No bar: the length is not known.
            let mut bar = ProgressBar::for_transfer(true);
            // A copy of the descriptor, read by tokio on its blocking pool
            // as its own stdin would be (without the feature that brings it).
            let stdin = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| ClientError::Local {
                    path: PathBuf::from("-"),
                    source,
                })?;
            let stdin = tokio::fs::File::from_std(std::fs::File::from(stdin));
            let sent = client.put_stream(stdin, &name, replace, &mut bar).await;
            sent.map(transfer)
        }
        Prepared::GetStdout { name } => {
            // The bar, like the report, is on stderr.
            let mut bar = ProgressBar::for_transfer(settings.hides_progress());
            let stdout = std::io::stdout();
            client.get_to(&name, stdout, &mut bar).await.map(transfer)
        }
        Prepared::PutTree {
            sources,
            target,
            resolve,
            replace,
            restart,
        } => {
            let (target, sources) = put_plan::resolve(client, target, &resolve, sources).await?;
            *remote = target.as_ref().map(RemoteName::to_string);
            let walked = tokio::task::spawn_blocking(move || {
                LocalTree::walk(&sources, &mut |path, why| say_left_out(path, why))
            });
            let tree = walked.await.map_err(|e| {
                ClientError::BadReply(format!("walking the local files failed: {e}"))
            })??;
            if tree.left_out > 0 {
                eprintln!(
                    "ferry: {} left out of the tree (not sent)",
                    counted_entries(tree.left_out)
                );
            }
            let mut bar = ProgressBar::for_tree(settings.hides_progress(), settings.file_naming());
            let sent = client
                .put_tree(&tree, target.as_ref(), replace, restart, &mut bar)
                .await?;
            Ok(Detail::Tree {
                files: sent.files,
                skipped: sent.skipped,
                bytes: sent.bytes,
                elapsed: started.elapsed(),
            })
        }
        Prepared::Get {
            name,
            dest,
            into_dir,
            restart,
        } => {
            if let Some(dir) = into_dir {
                // Made only now, once connected, so an unreachable server
                // leaves no empty directory behind.
                std::fs::create_dir_all(&dir)
                    .map_err(|source| ClientError::Local { path: dir, source })?;
            }
            let mut bar = ProgressBar::for_transfer(settings.hides_progress());
            client
                .get_resumable(&name, &dest, restart, &mut bar)
                .await
                .map(moved_detail)
                .map_err(suggest_recursive)
        }
        Prepared::GetTrees(get) => get_trees(client, get, settings).await,
        Prepared::List { dir, long, human } => {
            // Servers send entries in their directory's order; sorted by
            // name, as ls does.
            let mut entries = Vec::new();
            let listed = client
                .list(dir.as_ref(), long, &mut |entry| entries.push(entry))
                .await?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            let mut stdout = std::io::stdout().lock();
            for entry in &entries {
                match settings.json {
                    true => print_json(&json::entry_line(entry, long), JsonTo::Stdout),
                    false => print_entry(&mut stdout, entry, long, human),
                }
            }
            print_omitted(&listed.omitted, "not shown");
            Ok(Detail::Entries(listed.entries))
        }
        Prepared::Delete { name, recursive } => {
            let removed = client.delete(&name, recursive).await?;
            Ok(removed.map_or(Detail::None, |removed| Detail::Removed {
                files: removed.files,
                directories: removed.directories,
            }))
        }
        Prepared::MakeDir { name, parents } => {
            client.make_dir(&name, parents).await.map(|()| Detail::None)
        }
        Prepared::RemoveDir { name } => client.remove_dir(&name).await.map(|()| Detail::None),
        Prepared::Rename { from, to } => {
            client.rename(&from, &to).await?;
            Ok(Detail::Renamed(to.to_string()))
        }
        Prepared::Stat { name } => {
            let info = client.stat(name.as_ref()).await?;
            let shown = name.as_ref().map_or("/", RemoteName::as_str);
            match settings.json {
                true => print_json(&json::stat_line(shown, &info), JsonTo::Stdout),
                false => print_info(&mut std::io::stdout().lock(), shown, &info),
            }
            Ok(Detail::None)
        }
    }
}

/// Prints the report line for a finished request.
pub fn report(
    settings: &Settings,
    peer: String,
    description: Description,
    result: &Result<Detail, CommandError>,
) {
    let to = json_to(&description);
    let Description {
        subject,
        name,
        local,
    } = description;
    let (outcome, local) = match result {
        Ok(detail) => (Outcome::Ok(detail.clone()), local),
        // Nothing landed.
        Err(e) => (Outcome::failed(e.kind(), e.to_string()), None),
    };
    // Quiet drops the line for success only: a failure always says why.
    if !settings.quiet || result.is_err() {
        let report = Report::now(peer, subject, name, outcome).landed_at(local);
        match settings.json {
            true => print_json(&json::report_line(&report), to),
            false => print_report(&report),
        }
    }
}

/// Where a request's JSON lines go: beside, not into, a download written
/// to stdout.
fn json_to(description: &Description) -> JsonTo {
    match description.local.as_deref() {
        Some("-") => JsonTo::Stderr,
        _ => JsonTo::Stdout,
    }
}

/// Under --json, ends a failed one-shot command with an `error` line
/// carrying the exit code.
fn say_error(settings: &Settings, description: &Description, error: &CommandError) {
    if settings.json {
        let line = json::error_line(
            Some(description.subject.to_string()),
            description.name.as_deref(),
            &error.kind().to_string(),
            &error.to_string(),
            error.exit_status(),
        );
        print_json(&line, json_to(description));
    }
}

/// `ferry client HOST PORT <request>`: one request, one report line.
pub async fn run_once(settings: &Settings, request: Request) -> ExitCode {
    let mut description = describe(&request);
    let result = match prepare(request) {
        Ok(prepared) => match settings.connect().await {
            Ok(mut client) => {
                let peer = client.server_addr().to_string();
                let result = perform(&mut client, prepared, settings, &mut description).await;
                // Whoever read the download went away (`get NAME - | head`):
                // nothing to say, as for any tool in a pipe.
                if matches!(&result, Err(e) if e.is_broken_pipe()) {
                    return ExitCode::SUCCESS;
                }
                return finish(settings, peer, description, &result);
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    finish(settings, settings.target(), description, &result)
}

/// Reports a one-shot command's result and gives its exit code.
fn finish(
    settings: &Settings,
    peer: String,
    description: Description,
    result: &Result<Detail, CommandError>,
) -> ExitCode {
    report(settings, peer, description.clone(), result);
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            say_error(settings, &description, e);
            ExitCode::from(e.exit_status())
        }
    }
}
