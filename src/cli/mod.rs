//! The command line: clap types, and dispatch to the server, a one-shot
//! request or the interactive shell.

mod output;
mod request;
mod serve;
mod shell;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// ferry: move files between machines, fast and safely.
///
/// A server serves one directory over TCP; a client uploads, downloads,
/// lists and deletes files in it. Nothing is ever overwritten, and a file
/// appears complete and verified (BLAKE3) or not at all.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    /// Serve a directory over TCP.
    Server(ServerArgs),
    /// Send one request to a server, or open an interactive shell when no
    /// request is given.
    Client(ClientArgs),
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Port to listen on; 0 picks a free port (the start line shows it).
    port: u16,
    /// Directory to serve; created if missing.
    #[arg(long, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    /// Address to listen on [default: all interfaces, IPv6 and IPv4].
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// Seconds that requests in flight may run on after Ctrl-C or SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    grace: u64,
    /// Connections served at once; the next is told the server is busy.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Connections served at once from any one client address [default: no
    /// limit but --max-connections].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_per_ip: Option<u64>,
    /// Largest file a client may upload, in bytes or with a unit: 500M,
    /// 2GiB [default: no limit but the disk's free space].
    #[arg(long, value_name = "SIZE")]
    max_file_size: Option<bytesize::ByteSize>,
    /// Seconds a client may take to send the handshake, or a request once
    /// it has begun one, however slowly it trickles in.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a connection may sit idle between requests before it is
    /// closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds a transfer may go without a byte moving before it is
    /// abandoned and its partial upload removed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    stall_timeout: u64,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Server host name, IPv4 or IPv6 address.
    host: String,
    /// Server port.
    port: u16,
    /// Print no report line when a request succeeds; failures still do.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Seconds to wait for the server to connect or answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, global = true)]
    timeout: u64,
    #[command(subcommand)]
    request: Option<Request>,
}

/// The requests, shared by the one-shot command line and the shell.
#[derive(Debug, Clone, Subcommand)]
pub enum Request {
    /// Upload a local file; the server refuses a name that exists.
    #[command(visible_alias = "upld")]
    Put {
        /// The file to upload; any local path.
        local_path: PathBuf,
        /// Name on the server [default: the local file's name]. A name
        /// ending in '/' names a directory to put it in.
        remote_name: Option<String>,
    },
    /// Download a file; an existing local file is never overwritten.
    #[command(visible_alias = "dwld")]
    Get {
        /// Name of the file on the server.
        remote_name: String,
        /// Where to write it [default: its name, in the current directory].
        /// An existing directory receives it under its name.
        local_path: Option<PathBuf>,
    },
    /// List the served directory, or a directory beneath it.
    #[command(visible_alias = "ls")]
    List {
        /// Show size and modification time.
        #[arg(short)]
        long: bool,
        /// Directory to list [default: the served directory].
        remote_dir: Option<String>,
    },
    /// Delete a file on the server (never a directory).
    #[command(visible_aliases = ["delf", "rm"])]
    Delete {
        /// Name of the file on the server.
        remote_name: String,
    },
}

/// The exit codes the client promises.
pub mod exit {
    /// The request failed: not found, already exists, bad name, refused.
    pub const FAILED: u8 = 1;
    /// The server could not be reached or does not speak ferry.
    pub const UNREACHABLE: u8 = 3;
    /// Ctrl-C abandoned the request (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    // The server spreads connections over every core. A client drives one
    // connection, so one thread is enough and starts faster; its bodies move
    // on threads of their own anyway.
    let mut builder = match cli.command {
        TopCommand::Server(_) => tokio::runtime::Builder::new_multi_thread(),
        TopCommand::Client(_) => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        TopCommand::Server(args) => match runtime.block_on(serve::serve(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferry: {e:#}");
                ExitCode::FAILURE
            }
        },
        TopCommand::Client(args) => {
            let settings = request::Settings {
                host: args.host,
                port: args.port,
                quiet: args.quiet,
                timeout: Duration::from_secs(args.timeout),
            };
            match args.request {
                Some(request) => runtime.block_on(request::run_once(&settings, request)),
                None => shell::run(&runtime, &settings),
            }
        }
    }
}
