//! One connection: the handshake, then requests until the client leaves.
//!
//! The handler speaks requests only: names are checked by
//! [`RemoteName`], files are the [`Store`]'s, bytes are the transport's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::watch;

mod get_tree;
mod put_tree;
mod resume;

use super::gate::Pass;
use super::tally::Tally;
use super::Config;
use crate::protocol::{
    Digest, ErrorCode, FailureKind, Message, Refusal, RemoteName, RequestKind, Token, MAGIC,
};
use crate::report::{Detail, Outcome, Report, Reporter, Start, Subject};
use crate::security::access::Grant;
use crate::store::{self, Owner, Store};
use crate::transport::{self, Batched, Connection, Link, TransportError, TLS_HANDSHAKE_BYTE};

/// Listing entries are read from the directory and sent in batches of
/// this many: the most a listing holds in memory at once.
const ENTRIES_PER_BATCH: usize = 256;

/// How long a connection turned away may take to read why before it is
/// closed anyway.
const TURN_AWAY_TIME: Duration = Duration::from_secs(1);

/// How long an idle connection told that the server is shutting down may
/// take to hang up before it is closed anyway.
const SHUTDOWN_GOODBYE_TIME: Duration = Duration::from_millis(250);

/// How long a resumed upload waits for another try of it to let go of
/// what it goes on from. Well within a client's reply timeout (10 s by
/// default).
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// How often it looks meanwhile.
const BUSY_POLL: Duration = Duration::from_millis(50);

/// Everything one connection's task needs.
pub(super) struct Session {
    pub store: Arc<Store>,
    pub reporter: Reporter,
    /// Where failures before the token is accepted are reported: counted,
    /// and told once per kind per window.
    pub tally: Arc<Tally>,
    pub peer: SocketAddr,
    pub config: Arc<Config>,
    /// Turns true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Taken for reading each batch of a listing, so listings share the
    /// blocking pool with other requests instead of filling it.
    pub listing_turns: Arc<tokio::sync::Semaphore>,
}

/// Why a request ended early.
enum Abort {
    /// Refused with an answer to the client; the connection goes on.
    Refused(Refusal),
    /// The connection cannot go on.
    Broken(TransportError),
}

impl From<Refusal> for Abort {
    fn from(refusal: Refusal) -> Self {
        Abort::Refused(refusal)
    }
}

impl From<crate::protocol::NameError> for Abort {
    fn from(error: crate::protocol::NameError) -> Self {
        Abort::Refused(error.into())
    }
}

impl From<TransportError> for Abort {
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::DigestMismatch => Abort::Refused(Refusal::new(
                ErrorCode::DigestMismatch,
                "data arrived damaged (BLAKE3 digest mismatch); nothing was kept",
            )),
            // The body could not be stored; the store says why in its words.
            TransportError::Sink(e) => Abort::Refused(store::classify(e)),
            TransportError::StreamTooLarge { limit } => Abort::Refused(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "the stream passed the {limit} bytes this server accepts; nothing was kept"
                ),
            )),
            broken => Abort::Broken(broken),
        }
    }
}

impl Session {
    /// Serves the connection until the client closes it or it breaks.
    /// `pass` is its place: a handshake's until the token is accepted,
    /// then a served connection's; the connection is closed if no served
    /// place is left for it.
    pub async fn serve(self, stream: TcpStream, mut pass: Pass) {
        if let Err(e) = transport::tune(&stream) {
            tracing::debug!(error = %e, "cannot tune the TCP socket");
        }
        // The deadline runs from the connection's arrival: time waiting in
        // line for a handshake place counts.
        let header_timeout = self.config.header_timeout;
        let deadline = pass.arrived() + header_timeout;
        let mut shutdown = self.shutdown.clone();
        let opened = tokio::select! {
            opened = tokio::time::timeout_at(deadline, self.open(stream)) => opened,
            // A client still in its handshake has asked nothing yet: it is
            // let go at once, like an idle one.
            () = stopping(&mut shutdown) => return,
        };
        let (mut conn, token) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(unopened)) => {
                if unopened.is_offence {
                    pass.offend();
                }
                return self.report_unopened(unopened.kind, unopened.message);
            }
            Err(_) => {
                // Before the preamble there is no frame the peer could read.
                pass.offend();
                let waited = header_timeout.as_secs();
                let message = format!("no handshake within {waited}s");
                return self.report_unopened(ErrorCode::Timeout.into(), message);
            }
        };
        let grant = match self.config.access.admit(&token) {
            Ok(grant) => grant,
            Err(why) => {
                pass.offend();
                return self
                    .refuse_handshake(&mut conn, ErrorCode::Unauthorized, why.to_owned())
                    .await;
            }
        };
        if let Err(refusal) = pass.promote() {
            // The served places filled up during the handshake: this
            // client is told as one turned away on arrival is.
            return self
                .refuse_handshake(&mut conn, ErrorCode::Busy, refusal.to_string())
                .await;
        }
        let welcome = Message::Welcome {
            requests: RequestKind::ALL.to_vec(),
        };
        if let Err(e) = conn.write_message(&welcome).await {
            return self.report_connection(e.kind(), e.to_string());
        }
        self.serve_requests(conn, grant, Owner::of(&token)).await;
    }

    /// Opens the connection as the server is configured: TLS, or plain
    /// TCP with `--plain`; then the ferry handshake, up to the client's
    /// token. A plain client meeting a TLS server is told so in plain ferry
    /// frames, which it can read, and turned away at once.
    async fn open(&self, stream: TcpStream) -> Result<(Connection<Link>, Token), Unopened> {
        let link = match &self.config.tls {
            None => Link::Plain(stream),
            Some(tls) => {
                let mut first = [0u8; 1];
                match stream.peek(&mut first).await {
                    Ok(1..) => {}
                    Ok(0) => {
                        let closed = "the client closed the connection before the handshake";
                        return Err(Unopened::new(FailureKind::ConnectionLost, closed));
                    }
                    Err(e) => {
                        return Err(Unopened::new(FailureKind::ConnectionLost, e.to_string()))
                    }
                }
                if first[0] != TLS_HANDSHAKE_BYTE {
                    let mut conn = Connection::new(Link::Plain(stream));
                    conn.set_stall_limit(TURN_AWAY_TIME);
                    let why = "this server requires TLS; connect without --plain";
                    let told = conn.turn_away(ErrorCode::TlsRequired, why.to_owned());
                    let _ = tokio::time::timeout(2 * TURN_AWAY_TIME, told).await;
                    // A plain ferry client is mistaken; anything else is
                    // neither ferry nor TLS.
                    if first[0] != MAGIC[0] {
                        return Err(Unopened::offence(
                            FailureKind::NotFerry,
                            "the client's bytes are neither TLS nor ferry; this server requires TLS",
                        ));
                    }
                    return Err(Unopened::new(
                        ErrorCode::TlsRequired.into(),
                        "the client did not start TLS (a --plain client?); this server requires TLS",
                    ));
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
                match acceptor.accept(Batched::new(stream)).await {
                    Ok(tls) => Link::Tls(Box::new(tls.into())),
                    Err(e) => {
                        let unopened = Unopened::new(FailureKind::TlsError, tls_failure(&e));
                        return Err(Unopened {
                            is_offence: is_broken_tls(&e),
                            ..unopened
                        });
                    }
                }
            }
        };
        let mut conn = Connection::new(link);
        conn.set_stall_limit(self.config.stall_timeout);
        conn.set_min_rate(self.config.min_rate);
        conn.set_rate_limit(self.config.rate_limit);
        match conn.server_handshake().await {
            Ok(token) => Ok((conn, token)),
            Err(e) => {
                let unopened = Unopened::new(e.kind(), e.to_string());
                Err(match e {
                    // Bytes no ferry client sends.
                    TransportError::NotFerry
                    | TransportError::Malformed(_)
                    | TransportError::UnknownMessage(_)
                    | TransportError::Unexpected { .. } => Unopened {
                        is_offence: true,
                        ..unopened
                    },
                    _ => unopened,
                })
            }
        }
    }

    /// Answers a client's hello with an error and closes the connection:
    /// the client is not authenticated, or there is no room to serve it.
    async fn refuse_handshake(&self, conn: &mut Connection<Link>, code: ErrorCode, reason: String) {
        let refusal = Message::Error {
            code,
            message: reason.clone(),
        };
        // It may never read it; it has its answer either way.
        let _ = tokio::time::timeout(TURN_AWAY_TIME, conn.write_message(&refusal)).await;
        self.report_unopened(code.into(), reason);
    }

    /// Answers requests until the client leaves, the connection breaks, or
    /// the server shuts down.
    async fn serve_requests(&self, mut conn: Connection<Link>, grant: Grant, owner: Owner) {
        let header_timeout = self.config.header_timeout;
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return self.close_for_shutdown(&mut conn).await;
            }
            // Waiting for the next request is idling; once its first byte
            // is in, the rest must follow within the header deadline, so
            // a client trickling a byte at a time cannot hold the slot.
            let idle = self.config.idle_timeout;
            let waited = tokio::select! {
                waited = tokio::time::timeout(idle, conn.wait_for_data()) => waited,
                () = stopping(&mut shutdown) => continue,
            };
            match waited {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return,
                Ok(Err(e)) => return self.report_connection(e.kind(), e.to_string()),
                Err(_) => {
                    let why = format!("idle for {}s", idle.as_secs());
                    return self.report(Subject::Connection, None, Outcome::Closed(why));
                }
            }
            let message = match tokio::time::timeout(header_timeout, conn.read_message()).await {
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => return,
                Ok(Err(TransportError::UnknownMessage(tag))) => {
                    let why = format!("this server does not know requests of tag 0x{tag:02x}");
                    if !self.refuse(&mut conn, None, unsupported(why)).await {
                        return;
                    }
                    continue;
                }
                Ok(Err(TransportError::Malformed(e))) => {
                    let reason = format!("malformed message: {e}");
                    return self.hang_up(&mut conn, ErrorCode::BadRequest, reason).await;
                }
                Ok(Err(e)) => return self.report_connection(e.kind(), e.to_string()),
                Err(_) => {
                    let waited = header_timeout.as_secs();
                    let reason = format!("request not complete within {waited}s");
                    return self.hang_up(&mut conn, ErrorCode::Timeout, reason).await;
                }
            };
            let Some(kind) = message.request_kind() else {
                let why = format!("expected a request, got {}", message.name());
                if !self.refuse(&mut conn, None, unsupported(why)).await {
                    return;
                }
                continue;
            };
            let subject = Subject::Request(kind);
            let name = report_name(&message);
            // A tree's access is checked once its manifest is read, so the
            // stream stays in step.
            let allowed = match message {
                Message::PutTree { .. } => Ok(()),
                _ => needed_rights(&message, kind).try_for_each(|kind| grant.check(kind)),
            };
            if let Err(why) = allowed {
                let refused = Refusal::new(ErrorCode::Forbidden, why);
                if !self.refuse(&mut conn, Some((subject, name)), refused).await {
                    return;
                }
                continue;
            }
            let started = Instant::now();
            // Boxed: the future of a request's handling is large (a tree's
            // second pass holds a body's receive within it), and an idle
            // connection should not hold that much memory while it waits.
            let handled = Box::pin(self.handle(&mut conn, message, &grant, &owner, started));
            match handled.await {
                Ok(detail) => self.report(subject, name, Outcome::Ok(detail)),
                Err(Abort::Refused(refusal)) => {
                    if !self.refuse(&mut conn, Some((subject, name)), refusal).await {
                        return;
                    }
                }
                Err(Abort::Broken(e)) => {
                    let outcome = Outcome::failed(e.kind(), broken(kind, &e));
                    return self.report(subject, name, outcome);
                }
            }
        }
    }

    /// Carries out one request and answers it.
    async fn handle(
        &self,
        conn: &mut Connection<Link>,
        request: Message,
        grant: &Grant,
        owner: &Owner,
        started: Instant,
    ) -> Result<Detail, Abort> {
        match request {
            Message::PutTree {
                target,
                replace,
                top,
                restart,
            } => {
                let asked = put_tree::PutTree {
                    replace,
                    top,
                    restart,
                };
                self.put_tree(conn, &target, asked, grant, owner, started)
                    .await
            }
            Message::Put { name, size } => self.put(conn, &name, size, started).await,
            Message::PutStream { name, replace } => {
                self.put_stream(conn, &name, replace, started).await
            }
            Message::Get { name } => self.get(conn, &name, started).await,
            Message::PutFrom {
                name,
                size,
                modified,
                restart,
            } => {
                let asked = resume::PutFrom {
                    size,
                    modified,
                    restart,
                };
                self.put_from(conn, &name, asked, owner, started).await
            }
            Message::GetFrom {
                name,
                prefix,
                size,
                modified,
            } => {
                let asked = resume::GetFrom {
                    prefix,
                    size,
                    modified,
                };
                self.get_from(conn, &name, asked, started).await
            }
            Message::GetTree { source } => self.get_tree(conn, &source, started).await,
            Message::List { dir, long } => self.list(conn, &dir, long).await,
            Message::Delete { name, recursive } => self.delete(conn, &name, recursive).await,
            Message::MakeDir { name, parents } => {
                let name = RemoteName::parse(&name)?;
                self.blocking(move |store| store.make_dir(&name, parents))
                    .await?;
                conn.write_message(&Message::Done).await?;
                Ok(Detail::None)
            }
            Message::RemoveDir { name } => {
                let name = RemoteName::parse(&name)?;
                self.blocking(move |store| store.remove_dir(&name)).await?;
                conn.write_message(&Message::Done).await?;
                Ok(Detail::None)
            }
            Message::Rename { from, to } => {
                let from = RemoteName::parse(&from)?;
                let to = RemoteName::parse(&to)?;
                let detail = Detail::Renamed(to.to_string());
                self.blocking(move |store| store.rename(&from, &to)).await?;
                conn.write_message(&Message::Done).await?;
                Ok(detail)
            }
            Message::Stat { name } => {
                let name = RemoteName::parse_dir(&name)?;
                let info = self
                    .blocking(move |store| store.stat(name.as_ref()))
                    .await?;
                conn.write_message(&Message::Info(info)).await?;
                Ok(Detail::None)
            }
            other => Err(unsupported(format!("expected a request, got {}", other.name())).into()),
        }
    }

    async fn put(
        &self,
        conn: &mut Connection<Link>,
        name: &str,
        size: u64,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name)?;
        self.check_file_size(size)?;
        let (upload, sink) = self
            .blocking(move |store| store.begin_write(&name, size))
            .await?;
        // The go-ahead comes only now, so a refused upload costs the client
        // one round trip and no body.
        conn.write_message(&Message::Proceed).await?;
        // Dropping the upload on any failure below removes what was written.
        let (sink, digest) = conn.recv_body(sink, size, &mut |_| {}).await?;
        self.blocking(move |_| upload.commit(sink, &digest)).await?;
        conn.write_message(&Message::Done).await?;
        Ok(Detail::Transfer {
            bytes: size,
            elapsed: started.elapsed(),
            start: Start::Fresh,
        })
    }

    /// Keeps the digest just computed while sending `file` for later
    /// gets, unless the store had it at hand already.
    async fn remember_digest(&self, file: store::ReadFile, digest: Digest, cached: Option<Digest>) {
        if cached.is_none() {
            let _ = self
                .blocking(move |_| {
                    file.remember(&digest);
                    Ok(())
                })
                .await;
        }
    }

    /// Refuses a file larger than this server accepts.
    fn check_file_size(&self, size: u64) -> Result<(), Refusal> {
        match self.config.max_file_size.filter(|&limit| size > limit) {
            Some(limit) => Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("{size} bytes is more than this server accepts ({limit} bytes)"),
            )),
            None => Ok(()),
        }
    }

    /// A put of unknown length: checked and staged as a put is, its size
    /// limit met as the chunks arrive.
    async fn put_stream(
        &self,
        conn: &mut Connection<Link>,
        name: &str,
        replace: bool,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name)?;
        let (upload, sink) = self
            .blocking(move |store| store.begin_stream(&name, replace))
            .await?;
        conn.write_message(&Message::Proceed).await?;
        // Dropping the upload on any failure below removes what was written.
        let limit = self.config.max_file_size;
        let streamed = conn.recv_stream(sink, limit, &mut |_| {}).await?;
        let (sink, digest) = (streamed.sink, streamed.digest);
        self.blocking(move |_| upload.commit(sink, &digest)).await?;
        conn.write_message(&Message::Done).await?;
        Ok(Detail::Transfer {
            bytes: streamed.size,
            elapsed: started.elapsed(),
            start: Start::Fresh,
        })
    }

    async fn get(
        &self,
        conn: &mut Connection<Link>,
        name: &str,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name)?;
        let file = self.blocking(move |store| store.open_read(&name)).await?;
        let (size, cached) = (file.size(), file.cached_digest());
        conn.queue(&Message::Body { size })?;
        let (file, digest) = conn.send_body(file, size, cached, &mut |_| {}).await?;
        self.remember_digest(file, digest, cached).await;
        Ok(Detail::Transfer {
            bytes: size,
            elapsed: started.elapsed(),
            start: Start::Fresh,
        })
    }

    /// Streams a listing: a batch is read from the directory only once the
    /// one before it is on its way, so a client that reads slowly, or not
    /// at all, holds at most one batch.
    async fn list(
        &self,
        conn: &mut Connection<Link>,
        dir: &str,
        long: bool,
    ) -> Result<Detail, Abort> {
        let dir = RemoteName::parse_dir(dir)?;
        let mut listing = self
            .blocking(move |store| store.list(dir.as_ref(), long))
            .await?;
        let mut count = 0;
        loop {
            let (back, batch) = self
                .next_batch_in_turn(count == 0, listing, |listing| {
                    listing.next_batch(ENTRIES_PER_BATCH)
                })
                .await?;
            listing = back;
            let batch = batch?;
            if batch.is_empty() {
                break;
            }
            count += batch.len();
            for entry in batch {
                conn.queue(&Message::Entry(entry))?;
            }
            // A listing that fit in its batch is over: asking for the
            // empty batch after it would wait for a turn behind long ones.
            if listing.is_done() {
                break;
            }
            conn.flush().await?;
        }
        for (reason, count) in listing.omitted() {
            conn.queue(&Message::Omitted { reason, count })?;
        }
        conn.write_message(&Message::Done).await?;
        Ok(Detail::Entries(count))
    }

    async fn delete(
        &self,
        conn: &mut Connection<Link>,
        name: &str,
        recursive: bool,
    ) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name)?;
        if !recursive {
            self.blocking(move |store| store.delete(&name)).await?;
            conn.write_message(&Message::Done).await?;
            return Ok(Detail::None);
        }
        let removed = self.blocking(move |store| store.delete_tree(&name)).await?;
        conn.write_message(&Message::Removed {
            files: removed.files,
            directories: removed.directories,
        })
        .await?;
        Ok(Detail::Removed {
            files: removed.files,
            directories: removed.directories,
        })
    }

    /// Answers a request with an error frame and reports it (as `about`,
    /// or as the connection's if no request could be made out). Returns
    /// whether the connection goes on: not if it is gone, or the code ends
    /// it.
    async fn refuse(
        &self,
        conn: &mut Connection<Link>,
        about: Option<(Subject, Option<String>)>,
        refusal: Refusal,
    ) -> bool {
        let Refusal { code, message } = refusal;
        let sent = conn
            .write_message(&Message::Error {
                code,
                message: message.clone(),
            })
            .await;
        let (subject, name) = about.unwrap_or((Subject::Connection, None));
        self.report(subject, name, Outcome::failed(code, message));
        match sent {
            Err(e) => {
                self.report_connection(e.kind(), e.to_string());
                false
            }
            Ok(()) => !code.ends_connection(),
        }
    }

    /// Tells the client the server is shutting down, in the frame its
    /// next request will read as the answer, and closes the connection.
    async fn close_for_shutdown(&self, conn: &mut Connection<Link>) {
        // Short: an idle client says nothing more, and the server should be
        // gone as soon as nothing is in flight.
        conn.set_stall_limit(SHUTDOWN_GOODBYE_TIME);
        let why = "the server is shutting down; no more requests on this connection";
        let told = conn.say_goodbye(ErrorCode::ShuttingDown, why.to_owned());
        let _ = tokio::time::timeout(2 * SHUTDOWN_GOODBYE_TIME, told).await;
    }

    /// Tells a client that broke the protocol, or kept the server waiting
    /// too long, why it is being dropped, and closes the connection: the
    /// stream may be out of step, but the client still learns why.
    async fn hang_up(&self, conn: &mut Connection<Link>, code: ErrorCode, reason: String) {
        let refusal = Message::Error {
            code,
            message: reason.clone(),
        };
        let _ = conn.write_message(&refusal).await;
        let kind = match code {
            ErrorCode::BadRequest => FailureKind::ProtocolError,
            other => other.into(),
        };
        self.report_connection(kind, reason);
    }

    /// Runs store work on the blocking pool.
    /// Reads the next batch of a long listing or walk with `read`, on the
    /// blocking pool. After the first batch it takes a listing turn, so a
    /// short one never waits behind long ones; the turn is released before
    /// the batch is sent, so a client that does not read holds none.
    async fn next_batch_in_turn<S: Send + 'static, B: Send + 'static>(
        &self,
        first: bool,
        mut state: S,
        read: impl FnOnce(&mut S) -> Result<B, Refusal> + Send + 'static,
    ) -> Result<(S, Result<B, Refusal>), Refusal> {
        let turn = match first {
            true => None,
            false => self.listing_turns.acquire().await.ok(),
        };
        let read = self
            .blocking(move |_| {
                let batch = read(&mut state);
                Ok((state, batch))
            })
            .await;
        drop(turn);
        read
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, Refusal> + Send + 'static,
    ) -> Result<T, Refusal> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "store task failed");
                Err(Refusal::new(ErrorCode::Io, "internal server error"))
            })
    }

    /// [`Session::blocking`], made again while the store answers `busy`,
    /// for a while: another try of the same upload, just cut off, may
    /// still hold what this one goes on from while it keeps what it
    /// verified (a sync of at most two steps).
    async fn blocking_unless_busy<T: Send + 'static>(
        &self,
        work: impl Fn(&Store) -> Result<T, Refusal> + Clone + Send + 'static,
    ) -> Result<T, Refusal> {
        // By the clock, not by the sleeps: a try on an S3 store takes
        // several round trips of its own.
        let began = Instant::now();
        loop {
            match self.blocking(work.clone()).await {
                Err(refusal) if refusal.code == ErrorCode::Busy && began.elapsed() < BUSY_WAIT => {
                    tokio::time::sleep(BUSY_POLL).await;
                }
                done => return done,
            }
        }
    }

    fn report(&self, subject: Subject, name: Option<String>, outcome: Outcome) {
        (self.reporter)(&Report::now(self.peer.to_string(), subject, name, outcome));
    }

    fn report_connection(&self, kind: FailureKind, message: String) {
        self.report(Subject::Connection, None, Outcome::failed(kind, message));
    }

    /// Reports a failure before the token was accepted: counted with the
    /// like, as anyone can cause them.
    fn report_unopened(&self, kind: FailureKind, message: String) {
        self.tally.fail(self.peer, kind, message);
    }
}

/// Says in a user's words how a request of `kind` lost its connection.
fn broken(kind: RequestKind, error: &TransportError) -> String {
    let kept = match kind {
        RequestKind::Put | RequestKind::PutStream => "; nothing was kept",
        RequestKind::PutFrom => "; the whole 64 MiB steps of it that arrived are kept for a resume",
        RequestKind::PutTree => "; no file of it that was not complete was kept",
        _ => "",
    };
    if !error.is_peer_gone() {
        return format!("{error}{kept}");
    }
    let what = match kind {
        RequestKind::Put | RequestKind::PutStream | RequestKind::PutFrom => {
            "the upload was complete"
        }
        RequestKind::PutTree => "the tree upload was complete",
        RequestKind::Get | RequestKind::GetFrom => "the download was complete",
        RequestKind::GetTree => "the tree download was complete",
        RequestKind::List => "the listing was complete",
        RequestKind::Delete
        | RequestKind::MakeDir
        | RequestKind::RemoveDir
        | RequestKind::Rename
        | RequestKind::Stat => "it was answered",
    };
    format!("the client went away (closed the connection) before {what}{kept}")
}

/// Completes once the server starts shutting down; never, if the server
/// is gone without saying so.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|&stopping| stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The refusal of something that is not a request this server serves.
fn unsupported(why: String) -> Refusal {
    Refusal::new(ErrorCode::UnsupportedRequest, why)
}

/// The name a request's report line shows: what it is about.
fn report_name(request: &Message) -> Option<String> {
    match request {
        Message::Put { name, .. }
        | Message::PutStream { name, .. }
        | Message::PutFrom { name, .. }
        | Message::Get { name }
        | Message::GetFrom { name, .. }
        | Message::Delete { name, .. }
        | Message::MakeDir { name, .. }
        | Message::RemoveDir { name }
        | Message::Stat { name } => Some(name.clone()),
        Message::GetTree { source } => (!source.is_empty()).then(|| source.clone()),
        Message::List { dir, .. } => (!dir.is_empty()).then(|| dir.clone()),
        Message::PutTree { target, .. } => (!target.is_empty()).then(|| target.clone()),
        Message::Rename { from, .. } => Some(from.clone()),
        // Not requests: listed, so a new request cannot go unnamed.
        Message::Hello { .. }
        | Message::TreeEntry(_)
        | Message::TreeEnd { .. }
        | Message::Chunk { .. }
        | Message::Skip { .. }
        | Message::Conflict { .. }
        | Message::TreeDone { .. }
        | Message::Resume { .. }
        | Message::Sending { .. }
        | Message::Held { .. }
        | Message::Trailer { .. }
        | Message::Proceed
        | Message::Body { .. }
        | Message::Entry(_)
        | Message::Done
        | Message::Welcome { .. }
        | Message::Info(_)
        | Message::Omitted { .. }
        | Message::Removed { .. }
        | Message::Error { .. } => None,
    }
}

/// The rights `request`, of `kind`, needs: those of its kind, and the
/// right to delete as well if it may replace a file, which takes the old
/// file's name away.
fn needed_rights(request: &Message, kind: RequestKind) -> impl Iterator<Item = RequestKind> {
    let replaces = matches!(request, Message::PutStream { replace: true, .. });
    std::iter::once(kind).chain(replaces.then_some(RequestKind::Delete))
}

/// Why a connection never got as far as its first request.
struct Unopened {
    kind: FailureKind,
    message: String,
    /// Whether the client failed as no working client does, and its
    /// address is penalised for it.
    is_offence: bool,
}

impl Unopened {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Unopened {
            kind,
            message: message.into(),
            is_offence: false,
        }
    }

    fn offence(kind: FailureKind, message: impl Into<String>) -> Self {
        Unopened {
            is_offence: true,
            ..Unopened::new(kind, message)
        }
    }
}

/// Whether a TLS handshake failed on bytes no TLS client sends: a replayed
/// or forged flight, garbage. A client that went away, or that declined
/// the server's identity with an alert, is no offender: clients are
/// killed and unpinned identities refused in the normal run of things.
fn is_broken_tls(error: &std::io::Error) -> bool {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    !matches!(tls, None | Some(rustls::Error::AlertReceived(_)))
}

/// Describes a failed TLS handshake for the report.
fn tls_failure(error: &std::io::Error) -> String {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "the client ended the TLS handshake ({alert:?}); \
             did it refuse this server's identity?"
        ),
        Some(rustls::Error::InvalidMessage(_)) => {
            "the client's bytes are not TLS; this server requires TLS".to_owned()
        }
        _ => format!("TLS handshake failed: {error}"),
    }
}
