//! The ferry server: accepts connections and serves one directory.
//!
//! The caller binds the listener and owns shutdown: [`Server::run`] takes a
//! bound listener and a future that completes when the server should stop,
//! so tests can bind port 0 and stop the server when they are done.

mod connections;
mod door;
mod gate;
mod handler;
mod penalties;
mod skips;
mod tally;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::Instrument;

use crate::protocol::{ErrorCode, FailureKind};
use crate::report::{Detail, Outcome, Report, Reporter, Subject};
use crate::security::access::Access;
use crate::store::{OpenError, Store, StoreSpec};
pub use connections::Limits;
use connections::{Connections, Ended};
use door::Door;
use gate::Pass;
use tally::Tally;

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the served files are kept.
    pub store: StoreSpec,
    /// How many connections are served, and shaking hands, at once, and
    /// how long an address whose handshakes fail is refused.
    pub limits: Limits,
    /// How long the handshake, and each request once its first byte is in,
    /// may take to arrive, however slowly it trickles.
    pub header_timeout: Duration,
    /// How long a connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How long a request may wait without a byte moving either way.
    pub stall_timeout: Duration,
    /// The slowest a body may move, in bytes a second averaged over the
    /// stall timeout, before the transfer is given up; 0 for no minimum.
    pub min_rate: u64,
    /// The most a connection's bodies may move, both ways together, in
    /// bytes a second; 0 for no limit.
    pub rate_limit: u64,
    /// How long an interrupted upload's partial is kept for a resume.
    pub partial_ttl: Duration,
    /// The largest file a put may declare; `None` for no limit but the
    /// free space.
    pub max_file_size: Option<u64>,
    /// The most entries a tree may have (PutTree).
    pub max_tree_entries: u64,
    /// The most bytes of frames a tree's manifest may take.
    pub max_manifest_bytes: u64,
    /// How long requests in flight may run on after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// The TLS configuration presenting the server's identity; `None`
    /// serves plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Who may connect and what they may do.
    pub access: Arc<Access>,
    /// How long failures of connections not yet authenticated are only
    /// counted, after the first is reported, before one line sums them
    /// up: anyone can cause them by the thousand.
    pub summary_window: Duration,
}

/// The most entries a tree may have by default: a million files is a
/// large photo library, and its manifest is checked in bounded memory.
pub const DEFAULT_MAX_TREE_ENTRIES: u64 = 1_000_000;

/// The most bytes a tree's manifest may take by default: a million
/// entries of paths averaging over 200 bytes.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

/// The slowest a transfer may move by default: 4 KiB a second, a quarter
/// of the slowest real link the limits are meant to serve (16 KiB/s), and
/// over the default 60 s stall timeout a quarter of a megabyte: a client
/// that sends a byte now and then cannot hold a transfer open.
pub const DEFAULT_MIN_RATE: u64 = 4 * 1024;

/// How long an interrupted upload's partial waits for its resume by
/// default: a day, time to come back to a transfer cut off overnight.
pub const DEFAULT_PARTIAL_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How often partials are swept while the server runs.
const PARTIAL_SWEEP_PERIOD: Duration = Duration::from_secs(60 * 60);

impl Config {
    /// Defaults for serving the directory `root` (created if missing):
    /// plain TCP, open to anyone. The command line's defaults are TLS and a
    /// persistent identity.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Config {
            store: StoreSpec::Local(root.into()),
            limits: Limits::default(),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5 * 60),
            stall_timeout: Duration::from_secs(60),
            min_rate: DEFAULT_MIN_RATE,
            rate_limit: 0,
            partial_ttl: DEFAULT_PARTIAL_TTL,
            max_file_size: None,
            max_tree_entries: DEFAULT_MAX_TREE_ENTRIES,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            access: Arc::new(Access::open()),
            summary_window: Duration::from_secs(10),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] OpenError),
}

/// A server ready to run: its store is open.
pub struct Server {
    store: Arc<Store>,
    config: Arc<Config>,
    reporter: Reporter,
    /// Turns for reading a batch of a listing: as many as there are cores.
    /// Listing a large directory long is work on the blocking pool, a stat
    /// per entry; a hundred clients listing at once would otherwise fill
    /// the pool and every other request would queue behind them.
    listing_turns: Arc<tokio::sync::Semaphore>,
}

impl Server {
    /// Opens the store the configuration names (a local directory is
    /// created if missing).
    pub fn open(config: Config, reporter: Reporter) -> Result<Server, ServerError> {
        let store = Store::open(&config.store)?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Server {
            store: Arc::new(store),
            config: Arc::new(config),
            reporter,
            listing_turns: Arc::new(tokio::sync::Semaphore::new(cores)),
        })
    }

    /// What is served, as the start line names it.
    pub fn describe_store(&self) -> String {
        self.store.describe()
    }

    /// Serves connections from `listener` until `shutdown` completes, then
    /// stops accepting and closes idle connections at once (a client's next
    /// request reads `shutting-down`), gives requests in flight the grace
    /// period to finish, and cancels the rest. A cancelled upload removes
    /// its temporary file. Returns as soon as no connection is left.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.start_removing_leftovers();
        self.start_sweeping_partials();
        let limits = self.config.limits;
        let tally = Arc::new(Tally::new(
            Arc::clone(&self.reporter),
            self.config.summary_window,
        ));
        let plain = self.config.tls.is_none();
        let header_timeout = self.config.header_timeout;
        let mut door = Door::new(limits, Arc::clone(&tally), plain, header_timeout);
        let mut connections = Connections::new();
        let (stopping, stop_watch) = tokio::sync::watch::channel(false);
        let mut starter = Starter {
            server: &self,
            tally: &tally,
            shutdown: stop_watch,
            next_id: 0,
        };
        // Summaries of failures are due a window after the first; looking
        // once a second is close enough, and costs nothing.
        let mut summaries = tokio::time::interval(Duration::from_secs(1));
        summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let gate = door.gate();
        tokio::pin!(shutdown);
        loop {
            let line_due = door.next_deadline();
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let peer = canonical_peer(peer);
                        door.arrive(stream, peer, |stream, peer, pass| {
                            starter.start(&mut connections, stream, peer, pass);
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot accept a connection");
                        // Out of descriptors: accepting again at once would spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = gate.freed() => door.let_in(|stream, peer, pass| {
                    starter.start(&mut connections, stream, peer, pass);
                }),
                () = sleep_until(line_due), if line_due.is_some() => door.send_away_overdue(),
                Some(ended) = connections.join_next(), if !connections.is_empty() => {
                    self.report_panic(ended);
                }
                () = door.reap_lingering() => {}
                _ = summaries.tick() => tally.flush(),
            }
        }
        drop(listener);
        // Those waiting in line and lingering are closed as they are.
        drop(door);
        // Every session sees this; the receivers outlive a closed sender.
        let _ = stopping.send(true);
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while let Some(ended) = connections.join_next().await {
                self.report_panic(ended);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                "grace period over; cancelling requests still in flight"
            );
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
        tally.flush_all();
    }

    /// Reports a connection whose task panicked: a bug, but one that cost
    /// only that connection.
    fn report_panic(&self, ended: Ended) {
        if let Some(panic) = ended.panic {
            let outcome = Outcome::failed(
                FailureKind::InternalError,
                format!("server bug, this connection was closed: {panic}"),
            );
            let peer = ended.peer.to_string();
            (self.reporter)(&Report::now(peer, Subject::Connection, None, outcome));
        }
    }

    /// Removes, in the background, the temporary files that a killed server
    /// left in the root, reporting each one. Clients are served meanwhile:
    /// a large tree must not delay the start.
    fn start_removing_leftovers(&self) {
        let store = Arc::clone(&self.store);
        let reporter = Arc::clone(&self.reporter);
        let started = std::time::SystemTime::now();
        tokio::task::spawn_blocking(move || {
            for leftover in store.remove_leftovers(started) {
                let outcome = match leftover.removed {
                    Ok(()) => Outcome::Ok(Detail::None),
                    Err(e) => Outcome::failed(ErrorCode::Io, format!("cannot remove it: {e}")),
                };
                let name = leftover.path.to_string_lossy().into_owned();
                // No client is involved; the name carries the dead process's id.
                let peer = "local".to_owned();
                reporter(&Report::now(peer, Subject::Cleanup, Some(name), outcome));
            }
        });
    }
}

impl Server {
    /// Sweeps the partials of uploads not resumed within the time to live,
    /// now and every [`PARTIAL_SWEEP_PERIOD`], in the background; a line
    /// reports each sweep that removed any.
    fn start_sweeping_partials(&self) {
        let store = Arc::clone(&self.store);
        let reporter = Arc::clone(&self.reporter);
        let ttl = self.config.partial_ttl;
        tokio::spawn(async move {
            loop {
                let sweeping = Arc::clone(&store);
                let swept = tokio::task::spawn_blocking(move || sweeping.sweep_partials(ttl))
                    .await
                    .unwrap_or(0);
                if swept > 0 {
                    let name = format!(
                        "{swept} partial uploads older than {}h",
                        ttl.as_secs() / 3600
                    );
                    let report = Report::now(
                        "local".to_owned(),
                        Subject::Cleanup,
                        Some(name),
                        Outcome::Ok(Detail::None),
                    );
                    reporter(&report);
                }
                tokio::time::sleep(PARTIAL_SWEEP_PERIOD).await;
            }
        });
    }
}

/// Starts a session, a task each, for connections let in.
struct Starter<'a> {
    server: &'a Server,
    tally: &'a Arc<Tally>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    next_id: u64,
}

impl Starter<'_> {
    fn start(
        &mut self,
        connections: &mut Connections,
        stream: TcpStream,
        peer: SocketAddr,
        pass: Pass,
    ) {
        self.next_id += 1;
        let span = tracing::info_span!("connection", id = self.next_id, %peer);
        let session = handler::Session {
            store: Arc::clone(&self.server.store),
            reporter: Arc::clone(&self.server.reporter),
            tally: Arc::clone(self.tally),
            peer,
            config: Arc::clone(&self.server.config),
            shutdown: self.shutdown.clone(),
            listing_turns: Arc::clone(&self.server.listing_turns),
        };
        connections.spawn(peer, session.serve(stream, pass).instrument(span));
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Clients reaching a dual-stack socket over IPv4 appear as `::ffff:a.b.c.d`;
/// reports show them as the IPv4 addresses they are.
fn canonical_peer(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => peer,
        },
        v4 => v4,
    }
}
