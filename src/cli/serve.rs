//! `ferry server`: bind, print the start line, serve until a signal.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry::report::Reporter;
use ferry::security::access::{Access, ServerMode, Tokens};
use ferry::security::Identity;
use ferry::server::{Config, Limits, Server};
use ferry::store::s3::S3Spec;
use ferry::store::StoreSpec;
use tokio::net::TcpListener;

use super::address::DEFAULT_PORT;
use super::json;
use super::report_queue::{self, ReportWriter};
use super::{LogFormat, ServerArgs, TOKEN_VARIABLE};

pub(super) async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    raise_open_file_limit();
    give_back_freed_memory();
    let _file_size_signal = survive_file_size_limit()?;
    let listener = bind(args.bind, args.port.unwrap_or(DEFAULT_PORT)).await?;
    let (reporter, report_writer) = reporter(args.quiet, args.log_format)?;
    let security = ServerSecurity::from_args(&args)?;
    let config = Config {
        limits: Limits {
            total: saturating_usize(args.max_connections),
            per_ip: Some(saturating_usize(args.max_per_ip)),
            handshakes: saturating_usize(args.max_handshakes),
            handshakes_per_ip: saturating_usize(args.max_handshakes_per_ip),
            max_penalty: Duration::from_secs(args.max_penalty),
        },
        header_timeout: Duration::from_secs(args.header_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        stall_timeout: Duration::from_secs(args.stall_timeout),
        partial_ttl: Duration::from_secs(args.partial_ttl.saturating_mul(3600)),
        min_rate: args.min_rate.as_u64(),
        rate_limit: args.limit_rate,
        max_file_size: args.max_file_size.map(|size| size.as_u64()),
        max_tree_entries: args.max_tree_entries,
        max_manifest_bytes: args.max_manifest_bytes.as_u64(),
        shutdown_grace: Duration::from_secs(args.grace),
        tls: security.tls,
        access: Arc::new(security.access),
        store: store_spec(&args),
        ..Config::new(&args.root)
    };
    // Off the async threads: opening an S3 store waits for the bucket's
    // answer.
    let server = tokio::task::spawn_blocking(move || Server::open(config, reporter))
        .await
        .context("the store's opening failed")??;
    let shutdown = shutdown_signal()?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let serving = server.describe_store();
    let start_line = match args.log_format {
        LogFormat::Text => format!(
            "ferry server up and running on {local}, serving {serving}; {}; {}",
            security.encryption, security.access_summary
        ),
        LogFormat::Json => json::start_line(
            local,
            &serving,
            &security.encryption,
            security.fingerprint.clone(),
            &security.access_summary,
        ),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{start_line}").context("cannot write to stdout")?;
    drop(stdout);
    server.run(listener, shutdown).await;
    // Blocks this thread, which drives nothing else now that serving is over.
    report_writer.finish(REPORT_FLUSH_PATIENCE);
    tracing::info!("ferry server stopped");
    Ok(())
}

/// Where the served files are: the `--store` bucket, else the `--root`
/// directory.
fn store_spec(args: &ServerArgs) -> StoreSpec {
    match &args.store {
        Some(spec) => StoreSpec::S3(S3Spec {
            endpoint: args.s3_endpoint.clone(),
            region: args.s3_region.clone(),
            ..spec.clone()
        }),
        None => StoreSpec::Local(args.root.clone()),
    }
}

/// How long a stopping server waits for its queued report lines to be
/// written before it exits without them.
const REPORT_FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// Prints each report on stdout, in `format`; with `quiet`, only failed
/// ones, on stderr beside the other diagnostics. Lines go through a
/// bounded queue to a writer thread: a stream nobody reads loses lines
/// (counted, and said when the stream moves again) instead of stalling
/// the server.
fn reporter(quiet: bool, format: LogFormat) -> anyhow::Result<(Reporter, ReportWriter)> {
    let notice = match format {
        LogFormat::Text => report_queue::dropped_text_line,
        LogFormat::Json => json::dropped_line,
    };
    let started = if quiet {
        report_queue::start(std::io::stderr(), false, notice)
    } else {
        report_queue::start(std::io::stdout(), true, notice)
    };
    let (queue, writer) = started.context("cannot start the report writer thread")?;
    let reporter: Reporter = Arc::new(move |report| {
        if !(quiet && report.is_ok()) {
            let line = match format {
                LogFormat::Text => report.to_string(),
                LogFormat::Json => json::report_line(report),
            };
            queue.push(line + "\n");
        }
    });
    Ok((reporter, writer))
}

/// The server's TLS and access settings, and how the start line tells
/// them.
struct ServerSecurity {
    tls: Option<Arc<rustls::ServerConfig>>,
    access: Access,
    encryption: String,
    /// The identity's fingerprint, under TLS.
    fingerprint: Option<String>,
    access_summary: String,
}

impl ServerSecurity {
    fn from_args(args: &ServerArgs) -> anyhow::Result<ServerSecurity> {
        // Tokens first: every input is checked before the identity, the
        // one piece of state a start may create, is made.
        let (tokens, whose) = match (&args.token_file, std::env::var(TOKEN_VARIABLE)) {
            (Some(path), _) => {
                let tokens = Tokens::load(path)?;
                let count = tokens.len();
                let plural = if count == 1 { "" } else { "s" };
                let whose = format!("{count} token{plural} from {}", path.display());
                (Some(tokens), whose)
            }
            (None, Ok(token)) if !token.is_empty() => (
                Some(Tokens::single(&token)?),
                format!("the token in {TOKEN_VARIABLE}"),
            ),
            (None, _) => (
                None,
                "open to anyone who can connect (no token file)".to_owned(),
            ),
        };
        let (tls, encryption, fingerprint) = if args.plain {
            (None, "plain TCP, not encrypted (--plain)".to_owned(), None)
        } else {
            let path = match &args.identity {
                Some(path) => path.clone(),
                None => Identity::default_path()?,
            };
            let (identity, created) = Identity::load_or_create(&path)?;
            if created {
                eprintln!(
                    "ferry: made a new server identity in {}; clients pin its fingerprint",
                    path.display()
                );
            }
            let fingerprint = identity.fingerprint().to_string();
            let said = format!("TLS, identity {fingerprint}");
            (Some(identity.server_config()), said, Some(fingerprint))
        };
        if tls.is_none() && tokens.is_some() {
            tracing::warn!("--plain: clients' tokens cross the network unencrypted");
        }
        let mode = if args.read_only {
            ServerMode::ReadOnly
        } else if args.no_delete {
            ServerMode::NoDelete
        } else if args.upload_only {
            ServerMode::UploadOnly
        } else {
            ServerMode::Full
        };
        Ok(ServerSecurity {
            tls,
            access: Access { tokens, mode },
            encryption,
            fingerprint,
            access_summary: format!("{whose}, {mode}"),
        })
    }
}

/// Makes memory freed after a burst of work go back to the system, so a
/// flood of transfers leaves the server as small as it found it (issue 12:
/// after 100 unread TLS downloads, glibc kept 34 of their 61 MiB).
///
/// glibc grows its threshold for mapping large blocks on their own as they
/// are freed, and then serves the body chunks (256 KiB) from the heap,
/// which it keeps; pinning the threshold maps them on their own for good,
/// and they go back when freed. What smaller blocks leave in the heap is
/// trimmed every 10 s.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt and malloc_trim only tune and trim glibc's
        // allocator, which stays consistent across both; neither touches
        // memory the program holds.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
        tokio::spawn(async {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                // SAFETY: as above.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    }
}

/// Lifts the soft limit on open descriptors to the hard one: each
/// connection holds one, and the usual soft limit of 1024 is below the
/// default connection limit. Failing leaves the server as it was.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
}

/// A write past the file-size limit (RLIMIT_FSIZE) raises SIGXFSZ, which
/// would kill the server; listening for it makes the write fail with EFBIG
/// instead, and the upload is refused as `insufficient-storage`. The signal
/// is ignored for as long as the returned listener lives.
fn survive_file_size_limit() -> anyhow::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    let sigxfsz = SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw());
    signal(sigxfsz).context("cannot listen for SIGXFSZ")
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Binds `addr`, or with none every interface: IPv6 and IPv4 on one
/// dual-stack socket where the system has IPv6, IPv4 alone otherwise.
async fn bind(addr: Option<IpAddr>, port: u16) -> anyhow::Result<TcpListener> {
    if let Some(ip) = addr {
        let addr = SocketAddr::new(ip, port);
        return listen(addr).with_context(|| format!("cannot listen on {addr}"));
    }
    match listen(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)) {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
            listen(v4).with_context(|| format!("cannot listen on {v4}"))
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on port {port}")),
    }
}

/// The kernel's queue of connections not yet accepted. A flood of
/// connections overflows a short one (128 here before), and every SYN it
/// drops costs a legitimate client a one-second retry; the kernel caps it
/// at `net.core.somaxconn` anyway.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's and tokio's own bind do: a restarted server may take its
    // port back while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Listens for SIGINT (Ctrl-C) and SIGTERM from now on; the future it
/// returns completes at the first of them. Installed before the start line
/// is printed, so a signal sent as soon as that line appears is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!(
            "ferry server shutting down: no new connections, idle ones closed, \
             requests in flight finishing (a second Ctrl-C or SIGTERM stops at once)"
        );
        // A second signal means "now": uploads cut short leave only hidden
        // temporary files, which the next start sweeps up.
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("ferry server stopped at once by a second signal");
            std::process::exit(1);
        });
    })
}
