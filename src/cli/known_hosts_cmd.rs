//! `ferry known-hosts list|forget`: the servers the client has met.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ferry::client::format_target;
use ferry::security::KnownHosts;

use super::address::{parse_address, DEFAULT_PORT};
use super::exit;

#[derive(Debug, Subcommand)]
pub enum KnownHostsCommand {
    /// Print each recorded server as `HOST:PORT FINGERPRINT`.
    List(FileArg),
    /// Forget a server's recorded identity, so that the next connection
    /// trusts the one it proves; for a server whose identity was replaced.
    Forget {
        /// The server as recorded: HOST:PORT, or [IPV6]:PORT [default
        /// port: 7740].
        target: String,
        #[command(flatten)]
        file: FileArg,
    },
}

#[derive(Debug, Args)]
pub struct FileArg {
    /// The known-hosts file [default: known_hosts in ~/.config/ferry].
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
}

impl FileArg {
    fn hosts(&self) -> anyhow::Result<KnownHosts> {
        Ok(match &self.known_hosts {
            Some(path) => KnownHosts::at(path.clone()),
            None => KnownHosts::default_location()?,
        })
    }
}

/// Runs `ferry known-hosts ...`.
pub fn run(command: KnownHostsCommand) -> ExitCode {
    let done = match command {
        KnownHostsCommand::List(file) => list(&file),
        KnownHostsCommand::Forget { target, file } => forget(&target, &file),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn list(file: &FileArg) -> anyhow::Result<()> {
    let hosts = file.hosts()?;
    let (entries, bad) = hosts.entries()?;
    let mut stdout = std::io::stdout().lock();
    for entry in entries {
        match writeln!(stdout, "{} {}", entry.target, entry.fingerprint) {
            Ok(()) => {}
            // Whoever read the list has gone, as with `head`.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    for line in bad {
        eprintln!(
            "ferry: line {line} of {} is not `HOST:PORT FINGERPRINT`; left out",
            hosts.path().display()
        );
    }
    Ok(())
}

fn forget(target: &str, file: &FileArg) -> anyhow::Result<()> {
    let address = parse_address(target)?;
    // Written as the client records it: brackets around IPv6.
    let target = format_target(&address.host, address.port.unwrap_or(DEFAULT_PORT));
    let hosts = file.hosts()?;
    hosts.forget(&target)?;
    eprintln!(
        "ferry: forgot {target} in {}; the next connection trusts the identity it proves",
        hosts.path().display()
    );
    Ok(())
}
