//! Running one request: check the local side, connect if needed, perform,
//! report. Shared by the one-shot command line and the shell.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ferry::client::{format_target, Client, ClientError, Security, Upload};
use ferry::protocol::{NameError, RemoteName};
use ferry::report::{Detail, Outcome, Report, RequestKind};

use super::output::{print_entry, print_report, ProgressBar};
use super::{exit, Request};

/// What every request needs to know besides itself.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub quiet: bool,
    pub timeout: Duration,
    pub security: Security,
}

impl Settings {
    /// `host:port` as the user gave it.
    pub fn target(&self) -> String {
        format_target(&self.host, self.port)
    }

    /// Connects to the server.
    pub async fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(&self.host, self.port, self.timeout, &self.security).await
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    BadName(#[from] NameError),
    #[error("{0}")]
    LocalName(String),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("interrupted by Ctrl-C; nothing partial was kept")]
    Interrupted,
}

impl CommandError {
    fn kind(&self) -> String {
        match self {
            CommandError::BadName(_) => "bad-name".into(),
            CommandError::LocalName(_) => "bad-local-name".into(),
            CommandError::Client(e) => e.kind(),
            CommandError::Interrupted => "interrupted".into(),
        }
    }

    /// Whether the connection to the server is gone (or never was). An
    /// interrupted request leaves the connection out of step, so it counts.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            CommandError::Client(e) => e.is_connection_lost(),
            CommandError::Interrupted => true,
            CommandError::BadName(_) | CommandError::LocalName(_) => false,
        }
    }

    fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CommandError::Interrupted => exit::INTERRUPTED,
            CommandError::Client(e) if e.is_trust_failure() => exit::UNTRUSTED,
            e if e.is_connection_lost() => exit::UNREACHABLE,
            _ => exit::FAILED,
        })
    }
}

/// A request whose local side is checked: the file to upload is open, the
/// download destination is free, the names follow the rules.
pub enum Prepared {
    Put {
        upload: Upload,
        name: RemoteName,
    },
    Get {
        name: RemoteName,
        dest: PathBuf,
        /// A directory to make, with its parents, before the download:
        /// the local path named it with a trailing `/`.
        into_dir: Option<PathBuf>,
    },
    List {
        dir: Option<RemoteName>,
        long: bool,
        human: bool,
    },
    Delete {
        name: RemoteName,
    },
}

/// The kind of `request` and the remote name it is about, for its report.
pub fn describe(request: &Request) -> (RequestKind, Option<String>) {
    match request {
        Request::Put {
            local_path,
            remote_name,
        } => {
            let name = remote_name_for_put(local_path, remote_name.as_deref()).ok();
            (RequestKind::Put, name)
        }
        Request::Get { remote_name, .. } => (RequestKind::Get, Some(remote_name.clone())),
        Request::List { remote_dir, .. } => (RequestKind::List, remote_dir.clone()),
        Request::Delete { remote_name } => (RequestKind::Delete, Some(remote_name.clone())),
    }
}

/// Checks everything that can be checked without the server.
pub fn prepare(request: Request) -> Result<Prepared, CommandError> {
    Ok(match request {
        Request::Put {
            local_path,
            remote_name,
        } => {
            let upload = Upload::open(&local_path)?;
            let name = remote_name_for_put(&local_path, remote_name.as_deref())?;
            Prepared::Put {
                upload,
                name: RemoteName::parse(&name)?,
            }
        }
        Request::Get {
            remote_name,
            local_path,
        } => {
            let name = RemoteName::parse(&remote_name)?;
            let (dest, into_dir) = match local_path {
                None => (PathBuf::from(name.file_name()), None),
                Some(dir) if names_directory(&dir) => {
                    check_directory(&dir)?;
                    (dir.join(name.file_name()), Some(dir))
                }
                Some(dir) if dir.is_dir() => (dir.join(name.file_name()), None),
                Some(path) => (path, None),
            };
            if dest.symlink_metadata().is_ok() {
                return Err(ClientError::LocalExists(dest).into());
            }
            Prepared::Get {
                name,
                dest,
                into_dir,
            }
        }
        Request::List {
            long,
            human_readable,
            remote_dir,
        } => {
            let dir = match remote_dir.as_deref().map(|d| d.trim_end_matches('/')) {
                None | Some("") => None,
                Some(dir) => Some(RemoteName::parse(dir)?),
            };
            Prepared::List {
                dir,
                long,
                human: human_readable,
            }
        }
        Request::Delete { remote_name } => Prepared::Delete {
            name: RemoteName::parse(&remote_name)?,
        },
    })
}

/// Whether a local path names a directory by ending in `/`, as a remote
/// name given to put does.
fn names_directory(path: &Path) -> bool {
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

/// The remote name a put uses: the one given, the local file's name, or
/// the local file's name inside a given directory ending in `/`.
fn remote_name_for_put(local: &Path, remote: Option<&str>) -> Result<String, CommandError> {
    let base_name = || {
        local.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            CommandError::LocalName(format!(
                "cannot take a remote name from {}; give one after the local path",
                local.display()
            ))
        })
    };
    Ok(match remote {
        None => base_name()?.to_owned(),
        Some(dir) if dir.ends_with('/') => format!("{dir}{}", base_name()?),
        Some(name) => name.to_owned(),
    })
}

/// Sends a prepared request over `client`, abandoning it on Ctrl-C.
/// Abandoning drops the transfer, which removes a staged download's
/// temporary file; killed by the signal instead, the client would leave it.
pub async fn perform(
    client: &mut Client,
    prepared: Prepared,
    settings: &Settings,
) -> Result<Detail, CommandError> {
    tokio::select! {
        // Polled first, so the handler is in place before any temporary
        // file exists.
        biased;
        _ = tokio::signal::ctrl_c() => Err(CommandError::Interrupted),
        result = send(client, prepared, settings) => result.map_err(Into::into),
    }
}

async fn send(
    client: &mut Client,
    prepared: Prepared,
    settings: &Settings,
) -> Result<Detail, ClientError> {
    let started = Instant::now();
    let transfer = |bytes| Detail::Transfer {
        bytes,
        elapsed: started.elapsed(),
    };
    match prepared {
        Prepared::Put { upload, name } => {
            let mut bar = ProgressBar::for_transfer(settings.quiet);
            client.put(upload, &name, &mut bar).await.map(transfer)
        }
        Prepared::Get {
            name,
            dest,
            into_dir,
        } => {
            if let Some(dir) = into_dir {
                // Made only now, once connected, so an unreachable server
                // leaves no empty directory behind.
                std::fs::create_dir_all(&dir)
                    .map_err(|source| ClientError::Local { path: dir, source })?;
            }
            let mut bar = ProgressBar::for_transfer(settings.quiet);
            client.get(&name, &dest, &mut bar).await.map(transfer)
        }
        Prepared::List { dir, long, human } => {
            let mut stdout = std::io::stdout().lock();
            let mut print = |entry| print_entry(&mut stdout, &entry, long, human);
            client
                .list(dir.as_ref(), long, &mut print)
                .await
                .map(Detail::Entries)
        }
        Prepared::Delete { name } => client.delete(&name).await.map(|()| Detail::None),
    }
}

/// Prints the report line for a finished request.
pub fn report(
    settings: &Settings,
    peer: String,
    (request, name): (RequestKind, Option<String>),
    result: &Result<Detail, CommandError>,
) {
    let outcome = match result {
        Ok(detail) => Outcome::Ok(*detail),
        Err(e) => Outcome::Failed {
            kind: e.kind(),
            message: e.to_string(),
        },
    };
    // Quiet drops the line for success only: a failure always says why.
    if !settings.quiet || result.is_err() {
        print_report(&Report::now(peer, request, name, outcome));
    }
}

/// `ferry client HOST PORT <request>`: one request, one report line.
pub async fn run_once(settings: &Settings, request: Request) -> ExitCode {
    let description = describe(&request);
    let result = match prepare(request) {
        Ok(prepared) => match settings.connect().await {
            Ok(mut client) => {
                let peer = client.server_addr().to_string();
                let result = perform(&mut client, prepared, settings).await;
                report(settings, peer, description, &result);
                return exit_code(&result);
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    report(settings, settings.target(), description, &result);
    exit_code(&result)
}

fn exit_code(result: &Result<Detail, CommandError>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => e.exit_code(),
    }
}
