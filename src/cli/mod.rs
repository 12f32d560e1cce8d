//! The command line: clap types, and dispatch to the server, a one-shot
//! request or the interactive shell.

mod address;
mod completion;
mod config;
mod docs;
mod get_tree;
mod history;
mod json;
mod known_hosts_cmd;
mod local;
mod local_glob;
mod output;
mod put_plan;
mod remote_dir;
mod report_queue;
mod request;
mod serve;
mod shell;
mod shell_helper;
mod shell_words;

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ferry::client::{FirstUse, Security, Trust};
use ferry::protocol::{FailureKind, Token};
use ferry::security::{access, KnownHosts};
use ferry::store::s3::S3Spec;

/// Move files between machines, fast and safely.
///
/// A server serves one directory over TCP; a client uploads, downloads,
/// lists, renames and deletes files and directories in it. Nothing is ever overwritten, and a file
/// appears complete and verified (BLAKE3) or not at all.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: TopCommand,
}

impl Cli {
    /// Parses the process's arguments, keeping clap's matches: they tell
    /// which options the command line gave, and those win over the config
    /// file's defaults. Exits as clap does on a usage error.
    pub fn parse_with_matches() -> (Cli, ArgMatches) {
        let matches = Cli::command().get_matches();
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        (cli, matches)
    }
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    /// Serve a directory, or an S3 bucket, over TCP.
    // Boxed: its options outweigh every other command's.
    Server(Box<ServerArgs>),
    /// Send one request to a server, or open an interactive shell when no
    /// request is given.
    Client(ClientArgs),
    /// Make access tokens for a server's token file.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show or forget the servers recorded in the known-hosts file.
    #[command(subcommand)]
    KnownHosts(known_hosts_cmd::KnownHostsCommand),
    /// Print a completion script for a shell: `ferry completions bash >
    /// ~/.local/share/bash-completion/completions/ferry`.
    Completions {
        /// The shell to complete ferry's commands in.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on standard output: `ferry man | man -l -`,
    /// or `ferry man > ~/.local/share/man/man1/ferry.1`.
    Man,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a new random token: 32 bytes from the system's secure random
    /// generator, as 64 hex digits.
    ///
    /// With --mode, prints `TOKEN MODE`, a line for a server's token file
    /// (which must be mode 0600): `ferry token new --mode rw >> tokens`.
    New {
        /// Follow the token with this mode: rw (everything), ro (get, list
        /// and stat), wo (put and mkdir only).
        #[arg(long, value_name = "MODE")]
        mode: Option<ModeArg>,
    },
}

/// A token's mode as the command line spells it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Rw,
    Ro,
    Wo,
}

impl From<ModeArg> for access::TokenMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Rw => access::TokenMode::ReadWrite,
            ModeArg::Ro => access::TokenMode::ReadOnly,
            ModeArg::Wo => access::TokenMode::WriteOnly,
        }
    }
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Port to listen on; 0 picks a free port (the start line shows it)
    /// [default: the config file's, else 7740].
    port: Option<u16>,
    /// Take defaults for these options from FILE's `[server]` table
    /// [default: config.toml in ~/.config/ferry, if there is one].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory to serve; created if missing.
    #[arg(long, value_name = "DIR", default_value = ".")]
    root: PathBuf,
    /// Serve objects in an S3 bucket instead of a directory, beneath
    /// PREFIX if given. Credentials come from the AWS environment
    /// variables or profile (README: Storing in S3).
    #[arg(long, value_name = "s3://BUCKET[/PREFIX]", conflicts_with = "root", value_parser = parse_s3_address)]
    store: Option<S3Spec>,
    /// The S3 service's URL, for an S3-compatible store (MinIO, Ceph,
    /// Garage, R2, …) [default: AWS].
    #[arg(long, value_name = "URL", requires = "store")]
    s3_endpoint: Option<String>,
    /// The bucket's region [default: AWS_REGION or the profile's, else
    /// us-east-1].
    #[arg(long, value_name = "REGION", requires = "store")]
    s3_region: Option<String>,
    /// Address to listen on [default: all interfaces, IPv6 and IPv4].
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// Print no report line for a request that succeeds; a failed one is
    /// reported on stderr. The start line is still printed.
    #[arg(short, long)]
    quiet: bool,
    /// Seconds that requests in flight may run on after Ctrl-C or SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    grace: u64,
    /// Connections served at once, once their token is accepted; the next
    /// is turned away as busy.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Connections served at once from any one client address: one address
    /// cannot fill the server, yet 200 clients behind one address fit. As
    /// many as --max-connections lifts it.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_per_ip: u64,
    /// Connections in their handshake (TLS and token) at once; more wait a
    /// few seconds in line, then are closed without any TLS.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_handshakes: u64,
    /// Connections in their handshake at once from any one client address,
    /// so one address cannot hold the handshakes of all.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    max_handshakes_per_ip: u64,
    /// Longest time, in seconds, an address is refused after its
    /// handshakes fail (token not accepted, not ferry, too slow): 1 s for
    /// the first, doubling for each further one; 0 turns penalties off.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    max_penalty: u64,
    /// Largest file a client may upload, in bytes or with a unit: 500M,
    /// 2GiB [default: no limit but the disk's free space].
    #[arg(long, value_name = "SIZE")]
    max_file_size: Option<bytesize::ByteSize>,
    /// Most entries (files and directories) one `put -r` may send; a
    /// bigger tree is refused before any body.
    #[arg(long, value_name = "N", default_value_t = ferry::server::DEFAULT_MAX_TREE_ENTRIES)]
    max_tree_entries: u64,
    /// Most bytes the list of a tree's entries (its manifest) may take;
    /// checked before any body.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    max_manifest_bytes: bytesize::ByteSize,
    /// Seconds a client may take to send the handshake, or a request once
    /// it has begun one, however slowly it trickles in.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a connection may sit idle between requests before it is
    /// closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds a transfer may go without a byte moving before it is
    /// abandoned; what of an upload arrived is kept for a resume.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    stall_timeout: u64,
    /// Hours an interrupted upload's partial is kept for the same client
    /// to resume it; swept at start and every hour.
    #[arg(long, value_name = "HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..))]
    partial_ttl: u64,
    /// The slowest a transfer may move, per second, averaged over the stall
    /// timeout, before it is abandoned: 4KiB, 1M, or bytes; 0 for no
    /// minimum.
    #[arg(long, value_name = "SIZE", default_value = "4KiB")]
    min_rate: bytesize::ByteSize,
    /// The most each connection's bodies may move, per second, both ways:
    /// 500K, 10M (10^6 bytes), 1.5MiB (2^20), or bytes [default: no limit].
    #[arg(long, value_name = "RATE", default_value = "0", hide_default_value = true, value_parser = parse_rate)]
    limit_rate: u64,
    /// Serve plain, unencrypted TCP instead of TLS: only on a network you
    /// trust, or to measure.
    #[arg(long, conflicts_with = "identity")]
    plain: bool,
    /// The server's identity (certificate and key, made on first start,
    /// mode 0600) [default: identity.pem in ~/.config/ferry].
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Accept only clients with a token from FILE: one `TOKEN MODE` a line,
    /// the mode rw, ro or wo; the file must be mode 0600 [default: the one
    /// read-write token in FERRY_TOKEN if set, else open to anyone].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Allow only get, list and stat: nothing changes.
    #[arg(long, group = "mode")]
    read_only: bool,
    /// Allow everything but taking a name away: no delete, rmdir or rename.
    #[arg(long, group = "mode")]
    no_delete: bool,
    /// Allow only put and mkdir: a drop box whose content clients cannot
    /// list or fetch.
    #[arg(long, group = "mode")]
    upload_only: bool,
    /// How the start line and the report lines are written: text, one
    /// line a report as ever, or json, one object a line (see README,
    /// "JSON output").
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How a server writes its start line and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// The server: HOST, HOST:PORT or [IPV6]:PORT, where HOST is a name
    /// from the config file, a host name, an IPv4 or an IPv6 address.
    host: String,
    /// Server port, if HOST has none [default: the named server's, else
    /// 7740].
    #[arg(value_parser = parse_port_operand)]
    port: Option<u16>,
    /// Read named servers from FILE [default: config.toml in
    /// ~/.config/ferry, if there is one].
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print no report line when a request succeeds; failures still do.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Seconds to wait for the server to connect or answer, or for a
    /// transfer to move again; fractions allowed (0.5) [default: 10].
    #[arg(long, value_name = "SECONDS", global = true, value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Speak plain, unencrypted TCP, to a server run with --plain.
    #[arg(long, global = true, conflicts_with_all = ["fingerprint", "known_hosts"])]
    plain: bool,
    /// Trust only the server whose identity has this SHA-256 fingerprint
    /// (from its start line); the known-hosts file is then not used.
    #[arg(long, value_name = "HEX", global = true, value_parser = parse_fingerprint)]
    fingerprint: Option<ferry::security::Fingerprint>,
    /// Where servers met before are recorded, one `HOST:PORT FINGERPRINT`
    /// a line [default: known_hosts in ~/.config/ferry].
    #[arg(long, value_name = "FILE", global = true)]
    known_hosts: Option<PathBuf>,
    /// Read the access token from FILE (mode 0600) [default: FERRY_TOKEN if
    /// set]. Never given on the command line, where others could see it.
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Print JSON objects, one a line, on stdout instead of text: reports,
    /// listing entries, stats and errors (see README, "JSON output"); no
    /// progress bars.
    #[arg(long, global = true)]
    json: bool,
    /// Name each file of a tree (put -r, get -r) as it moves or is
    /// skipped: a line on stderr, or with --json a tree-file object.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// The most a transfer may move, per second, up or down: 500K, 10M
    /// (10^6 bytes), 1.5MiB (2^20), or bytes; 0 for no limit [default:
    /// the named server's limit-rate in the config file, else none].
    #[arg(long, value_name = "RATE", global = true, value_parser = parse_rate)]
    limit_rate: Option<u64>,
    #[command(subcommand)]
    request: Option<Request>,
}

/// The requests, shared by the one-shot command line and the shell.
#[derive(Debug, Clone, Subcommand)]
pub enum Request {
    /// Upload local files, and with -r directories, or standard input with
    /// `put - NAME`; the server refuses a name that exists unless --replace.
    ///
    /// The last of two or more paths is the name on the server. Several
    /// sources go into it as a directory (made if missing); one file
    /// becomes it, or goes into it if it ends in '/' or is a directory on
    /// the server; a directory goes inside it if it is a directory on the
    /// server, else becomes it. Without it, a file or directory keeps its
    /// name at the top of the served directory, and a directory merges
    /// into one there: files already there with the same content are not
    /// sent again. Modes and modification times are kept; symlinks and
    /// special files are left out.
    #[command(visible_aliases = ["upld", "mput"])]
    Put {
        /// Copy directories and everything in them.
        #[arg(short, long)]
        recursive: bool,
        /// Replace files on the server whose content differs, each
        /// atomically; needs the right to delete.
        #[arg(long)]
        replace: bool,
        /// Discard what the server kept of an interrupted upload of this
        /// file (with -r, of this new directory) and start over, instead
        /// of going on from it.
        #[arg(long)]
        restart: bool,
        /// LOCAL... [REMOTE]: the local files (directories with -r), then
        /// the name on the server. A lone - is standard input, and needs
        /// the name (a local file named - is ./-).
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Download files, or with -r directories; an existing local file is
    /// never overwritten without --replace.
    ///
    /// With one name, a path after it is the new name, or an existing
    /// directory (or one ending in '/', made if missing) to put it in. With
    /// several names, the last path is a directory to put them in, made if
    /// missing. With -r, a directory goes inside an existing directory
    /// target; a target that does not exist becomes the copy; without a
    /// target it goes to the current directory, merging with what is
    /// there: files here with the same content are skipped, files of
    /// other content refuse the whole transfer.
    #[command(visible_aliases = ["dwld", "mget"])]
    Get {
        /// Copy directories, with everything in them (symlinks and
        /// special files on the server are left out, and counted).
        #[arg(short, long)]
        recursive: bool,
        /// Replace local files of other content, atomically, instead of
        /// refusing them.
        #[arg(long)]
        replace: bool,
        /// Discard the partial an interrupted download of this file (with
        /// -r, of this new directory) left beside it and start over,
        /// instead of going on from it.
        #[arg(long)]
        restart: bool,
        /// Names on the server; of two or more, the last is the local
        /// path to write to [default: their names, in the current
        /// directory]. A last operand '-' is standard output, for one
        /// file: written as it arrives and checked at the end (on a
        /// mismatch, discard what was written).
        #[arg(required = true, value_name = "NAME")]
        operands: Vec<std::ffi::OsString>,
    },
    /// List the served directory, or a directory beneath it.
    // -h is --human-readable, as in `ls -lh`; help is --help alone.
    #[command(
        visible_alias = "ls",
        disable_help_flag = true,
        arg(clap::Arg::new("help")
            .long("help")
            .action(clap::ArgAction::Help)
            .help("Print help"))
    )]
    List {
        /// Show size and modification time.
        #[arg(short)]
        long: bool,
        /// With -l, show sizes as `ls -lh` does: bytes below 1024, else
        /// rounded up in powers of 1024 with a unit (1.5K, 23M, 2.0G).
        #[arg(short = 'h', long)]
        human_readable: bool,
        /// Directory to list [default: the served directory].
        remote_dir: Option<String>,
    },
    /// Delete a file or symlink on the server; with -r, a directory and
    /// everything in it.
    #[command(visible_aliases = ["delf", "rm"])]
    Delete {
        /// Remove a directory and everything in it (symlinks are removed
        /// as links, never followed).
        #[arg(short, long)]
        recursive: bool,
        /// Name on the server.
        remote_name: String,
    },
    /// Make a directory on the server.
    Mkdir {
        /// Make missing parent directories too; an existing directory is
        /// then no error.
        #[arg(short, long)]
        parents: bool,
        /// Name of the new directory.
        remote_name: String,
    },
    /// Remove an empty directory on the server.
    Rmdir {
        /// Name of the directory.
        remote_name: String,
    },
    /// Rename a file or directory on the server, atomically; never
    /// replaces anything, and never moves into an existing directory.
    #[command(visible_alias = "mv")]
    Rename {
        /// The current name.
        from: String,
        /// The new name; it must not exist.
        to: String,
    },
    /// Show what the server knows of a name: kind, size, modification
    /// time, mode, and the BLAKE3 digest if the server has it.
    Stat {
        /// Name on the server [default: the served directory].
        remote_name: Option<String>,
    },
}

/// The exit codes the client promises.
pub mod exit {
    /// The request failed: not found, already exists, bad name, refused,
    /// or a local file (such as the token file) cannot be used.
    pub const FAILED: u8 = 1;
    /// The command line could not be used (clap exits with it itself for
    /// what it can tell).
    pub const USAGE: u8 = 2;
    /// The server could not be reached or does not speak ferry.
    pub const UNREACHABLE: u8 = 3;
    /// Trust failed: the server's identity is not the one expected, or the
    /// server did not accept our token.
    pub const UNTRUSTED: u8 = 4;
    /// Ctrl-C abandoned the request (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// Runs the parsed command line; `matches` are clap's, for the options
/// given.
pub fn run(cli: Cli, matches: &ArgMatches) -> ExitCode {
    match cli.command {
        TopCommand::Server(args) => run_server(*args, matches.subcommand_matches("server")),
        TopCommand::Client(args) => run_client(args),
        TopCommand::Token(command) => run_token(command),
        TopCommand::KnownHosts(command) => known_hosts_cmd::run(command),
        TopCommand::Completions { shell } => print(&docs::completions(shell), "the completions"),
        TopCommand::Man => match docs::man_page() {
            Ok(page) => print(&page, "the man page"),
            Err(e) => {
                eprintln!("ferry: cannot render the man page: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs `ferry server`. It spreads connections over every core.
fn run_server(mut args: ServerArgs, matches: Option<&ArgMatches>) -> ExitCode {
    match config::load(args.config.as_deref()) {
        Ok(config) => config.server.apply(&mut args, matches),
        Err(e) => {
            eprintln!("ferry: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    // Every limited transfer would move slower than the server allows and
    // be given up as too slow.
    if args.limit_rate != 0 && args.limit_rate < args.min_rate.as_u64() {
        eprintln!(
            "ferry: --limit-rate {} bytes a second is below --min-rate {} bytes a second: \
             every transfer would be given up as too slow",
            args.limit_rate,
            args.min_rate.as_u64()
        );
        return ExitCode::from(exit::USAGE);
    }
    let Some(runtime) = start_runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve::serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `ferry client`. A client drives one connection, so one thread is
/// enough and starts faster; the disk work of its bodies runs on the
/// blocking pool anyway.
fn run_client(args: ClientArgs) -> ExitCode {
    let Some(runtime) = start_runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let address = match address::client_address(&args.host, args.port) {
        Ok(address) => address,
        Err(e) => {
            eprintln!("ferry: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    // A config file, token file or known-hosts location that cannot be
    // used is a local file problem, not a misused command line.
    let options =
        config::load(args.config.as_deref()).map(|config| config.client_options(&args, address));
    let (options, security) = match options.and_then(|o| client_security(&o).map(|s| (o, s))) {
        Ok(both) => both,
        Err(e) => {
            let message = format!("{e:#}");
            match args.json {
                true => output::print_json(
                    &json::error_line(
                        None,
                        None,
                        &FailureKind::LocalIo.to_string(),
                        &message,
                        exit::FAILED,
                    ),
                    output::JsonTo::Stdout,
                ),
                false => eprintln!("ferry: {message}"),
            }
            return ExitCode::from(exit::FAILED);
        }
    };
    let settings = request::Settings {
        host: options.host,
        port: options.port,
        quiet: args.quiet,
        timeout: options.timeout,
        security,
        json: args.json,
        verbose: args.verbose,
        rate_limit: options.rate_limit,
    };
    match args.request {
        Some(request) => runtime.block_on(request::run_once(&settings, request)),
        None => shell::run(&runtime, &settings),
    }
}

/// The async runtime `builder` describes, or `None` once the failure is
/// said.
fn start_runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Runs `ferry token ...`.
fn run_token(command: TokenCommand) -> ExitCode {
    let TokenCommand::New { mode } = command;
    let token = match access::new_token() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("ferry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = match mode {
        Some(mode) => format!("{} {}\n", token.expose(), access::TokenMode::from(mode)),
        None => format!("{}\n", token.expose()),
    };
    print(line.as_bytes(), "the token")
}

/// Writes `output` to stdout; `what` names it if that fails.
fn print(output: &[u8], what: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(output).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever was to read it has gone: nothing to say, as with `head`.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: cannot write {what} to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A timeout in seconds, fractions allowed; more than zero and finite, as
/// a wait of none would fail every request at once.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| "not a number of seconds".to_owned())?;
    if !seconds.is_finite() {
        return Err("must be a finite number of seconds".into());
    }
    if seconds <= 0.0 {
        return Err("must be more than 0 seconds".into());
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(timeout) if !timeout.is_zero() => Ok(timeout),
        Ok(_) => Err("is too short to wait for anything".into()),
        Err(_) => Err("is too long".into()),
    }
}

/// A port operand: digits. Anything else was meant as a request, as a
/// request's name never is digits.
fn parse_port_operand(text: &str) -> Result<u16, String> {
    if !address::is_port_like(text) {
        return Err(format!(
            "`{text}` is neither a port (digits) nor a request; see `ferry client --help`"
        ));
    }
    address::parse_port(text).map_err(|e| e.to_string())
}

/// A rate in bytes a second, as `--min-rate` and `--max-file-size` take
/// sizes: bytes, or with a unit, decimal (K, M, G: 10^3, 10^6, 10^9) or
/// binary (KiB, MiB, GiB), fractions allowed. Unlike curl's
/// `--limit-rate`, whose 10M is 10 MiB, ferry's 10M is 10 MB. 0 is no
/// limit; a nonzero number that comes to less than a byte is refused
/// rather than taken as none.
fn parse_rate(text: &str) -> Result<u64, String> {
    let rate: bytesize::ByteSize = text.trim().parse()?;
    let written_as_zero = text
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .all(|c| c == '0' || c == '.');
    if rate.as_u64() == 0 && !written_as_zero {
        return Err("is less than one byte a second".into());
    }
    Ok(rate.as_u64())
}

fn parse_s3_address(text: &str) -> Result<S3Spec, String> {
    S3Spec::parse(text).map_err(|e| e.to_string())
}

fn parse_fingerprint(text: &str) -> Result<ferry::security::Fingerprint, String> {
    ferry::security::Fingerprint::parse(text).map_err(|e| e.to_string())
}

/// How the client reaches and trusts its server, once its flags and the
/// config file are merged.
#[derive(Debug)]
struct ClientOptions {
    host: String,
    port: u16,
    timeout: Duration,
    plain: bool,
    fingerprint: Option<ferry::security::Fingerprint>,
    known_hosts: Option<PathBuf>,
    token_file: Option<PathBuf>,
    /// Bytes a second a transfer may move; 0 for no limit.
    rate_limit: u64,
}

/// Whom the client trusts and which token it presents, from its options
/// and FERRY_TOKEN.
fn client_security(args: &ClientOptions) -> anyhow::Result<Security> {
    let trust = if args.plain {
        Trust::Plain
    } else if let Some(fingerprint) = args.fingerprint {
        Trust::Pinned(fingerprint)
    } else if let Some(path) = &args.known_hosts {
        Trust::KnownHosts(KnownHosts::at(path.clone()))
    } else {
        Trust::KnownHosts(KnownHosts::default_location()?)
    };
    let token = match &args.token_file {
        Some(path) => access::read_client_token(path)?,
        None => Token::new(std::env::var(TOKEN_VARIABLE).unwrap_or_default()),
    };
    if args.plain && !token.is_empty() {
        tracing::warn!("--plain: the token crosses the network unencrypted");
    }
    Ok(Security {
        trust,
        token,
        on_first_use: announce_first_use,
    })
}

/// Says, in one line, that a server met for the first time is trusted.
fn announce_first_use(target: &str, first: &FirstUse) {
    eprintln!(
        "ferry: first connection to {target}: trusting its identity {} from now on (recorded in {})",
        first.fingerprint,
        first.recorded_in.display()
    );
}

/// The environment variable holding a token, for client and server.
const TOKEN_VARIABLE: &str = "FERRY_TOKEN";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_decimal_and_binary_units_and_refuse_what_is_not_one() {
        for (text, rate) in [
            ("0", Ok(0)),
            ("0K", Ok(0)),
            ("1234", Ok(1234)),
            ("500K", Ok(500_000)),
            ("10M", Ok(10_000_000)),
            ("20MB", Ok(20_000_000)),
            ("1.5MiB", Ok(1_572_864)),
            ("64KiB", Ok(65_536)),
            ("1G", Ok(1_000_000_000)),
            ("0.1", Err(())),
            ("fast", Err(())),
            ("-1", Err(())),
            ("10X", Err(())),
            ("", Err(())),
        ] {
            assert_eq!(parse_rate(text).map_err(|_| ()), rate, "{text:?}");
        }
    }
}
