//! One connection: the handshake, then requests until the client leaves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::connections::Refusal;
use super::digest_cache::{self, Stamp};
use super::root::{classify, Root};
use super::{Config, Failure};
use crate::protocol::{ErrorCode, Message, RemoteName, Token};
use crate::report::{Detail, Outcome, Report, Reporter, RequestKind};
use crate::security::access::{Grant, Operation};
use crate::transport::{Connection, Link, TransportError, TLS_HANDSHAKE_BYTE};

/// Listing entries are sent in batches of this many frames per write.
const ENTRIES_PER_WRITE: usize = 256;

/// How long a connection turned away may take to read why before it is
/// closed anyway.
const TURN_AWAY_TIME: Duration = Duration::from_secs(1);

/// Everything one connection's task needs.
pub(super) struct Session {
    pub root: Arc<Root>,
    pub reporter: Reporter,
    pub peer: SocketAddr,
    pub config: Arc<Config>,
}

/// Why a request ended early.
enum Abort {
    /// Refused with an answer to the client; the connection goes on.
    Refused(Failure),
    /// The connection cannot go on.
    Broken(TransportError),
}

impl From<Failure> for Abort {
    fn from(failure: Failure) -> Self {
        Abort::Refused(failure)
    }
}

impl From<TransportError> for Abort {
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::DigestMismatch => Abort::Refused(Failure::new(
                ErrorCode::DigestMismatch,
                "data arrived damaged (BLAKE3 digest mismatch); nothing was kept",
            )),
            TransportError::File(e) => Abort::Refused(classify(e)),
            broken => Abort::Broken(broken),
        }
    }
}

impl Session {
    /// Serves the connection until the client closes it or it breaks.
    pub async fn serve(self, stream: TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %self.peer, error = %e, "cannot set TCP_NODELAY");
        }
        let header_timeout = self.config.header_timeout;
        let (mut conn, token) = match tokio::time::timeout(header_timeout, self.open(stream)).await
        {
            Ok(Ok(opened)) => opened,
            Ok(Err(Unopened { kind, message })) => return self.report_connection(&kind, message),
            Err(_) => {
                // Before the preamble there is no frame the peer could read.
                let waited = header_timeout.as_secs();
                return self.report_connection("timeout", format!("no handshake within {waited}s"));
            }
        };
        let grant = match self.config.access.admit(&token) {
            Ok(grant) => grant,
            Err(why) => {
                return self
                    .hang_up(&mut conn, ErrorCode::Unauthorized, why.to_owned())
                    .await
            }
        };
        if let Err(e) = conn.write_message(&Message::Done).await {
            return self.report_connection(e.kind(), e.to_string());
        }
        self.serve_requests(conn, grant).await;
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
                        let closed = TransportError::Closed.to_string();
                        return Err(Unopened::new("connection-lost", closed));
                    }
                    Err(e) => return Err(Unopened::new("connection-lost", e.to_string())),
                }
                if first[0] != TLS_HANDSHAKE_BYTE {
                    let mut conn = Connection::new(Link::Plain(stream));
                    conn.set_stall_limit(TURN_AWAY_TIME);
                    let why = "this server requires TLS; connect without --plain";
                    let told = conn.turn_away(ErrorCode::TlsRequired, why.to_owned());
                    let _ = tokio::time::timeout(2 * TURN_AWAY_TIME, told).await;
                    return Err(Unopened::new(
                        "tls-required",
                        "the client did not start TLS (a --plain client?); this server requires TLS",
                    ));
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
                match acceptor.accept(stream).await {
                    Ok(tls) => Link::Tls(Box::new(tls.into())),
                    Err(e) => return Err(Unopened::new("tls-error", tls_failure(&e))),
                }
            }
        };
        let mut conn = Connection::new(link);
        conn.set_stall_limit(self.config.stall_timeout);
        match conn.server_handshake().await {
            Ok(token) => Ok((conn, token)),
            Err(e) => Err(Unopened::new(e.kind(), e.to_string())),
        }
    }

    /// Answers requests until the client leaves or the connection breaks.
    async fn serve_requests(&self, mut conn: Connection<Link>, grant: Grant) {
        let header_timeout = self.config.header_timeout;
        loop {
            // Waiting for the next request is idling; once its first byte
            // is in, the rest must follow within the header deadline, so
            // a client trickling a byte at a time cannot hold the slot.
            match tokio::time::timeout(self.config.idle_timeout, conn.wait_for_data()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return,
                Ok(Err(e)) => return self.report_connection(e.kind(), e.to_string()),
                Err(_) => {
                    let idle = self.config.idle_timeout.as_secs();
                    let reason = format!("idle for {idle}s; closed");
                    return self.report_connection("timeout", reason);
                }
            }
            let message = match tokio::time::timeout(header_timeout, conn.read_message()).await {
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => return,
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
            let started = Instant::now();
            let forbidden = |operation| {
                let why = grant.check(operation).err()?;
                Some(Err(Failure::new(ErrorCode::Forbidden, why).into()))
            };
            let (request, name, result) = match message {
                Message::Put { name, size } => {
                    let result = match forbidden(Operation::Put) {
                        Some(refused) => refused,
                        None => self.put(&mut conn, &name, size, started).await,
                    };
                    (RequestKind::Put, Some(name), result)
                }
                Message::Get { name } => {
                    let result = match forbidden(Operation::Get) {
                        Some(refused) => refused,
                        None => self.get(&mut conn, &name, started).await,
                    };
                    (RequestKind::Get, Some(name), result)
                }
                Message::List { dir, long } => {
                    let result = match forbidden(Operation::List) {
                        Some(refused) => refused,
                        None => self.list(&mut conn, &dir, long).await,
                    };
                    (RequestKind::List, (!dir.is_empty()).then_some(dir), result)
                }
                Message::Delete { name } => {
                    let result = match forbidden(Operation::Delete) {
                        Some(refused) => refused,
                        None => self.delete(&mut conn, &name).await,
                    };
                    (RequestKind::Delete, Some(name), result)
                }
                other => {
                    let reason = format!("expected a request, got {}", other.name());
                    return self.hang_up(&mut conn, ErrorCode::BadRequest, reason).await;
                }
            };
            match result {
                Ok(detail) => self.report(request, name, Outcome::Ok(detail)),
                Err(Abort::Refused(Failure { code, message })) => {
                    let reply = Message::Error {
                        code,
                        message: message.clone(),
                    };
                    let sent = conn.write_message(&reply).await;
                    let kind = code.to_string();
                    self.report(request, name, Outcome::Failed { kind, message });
                    if let Err(e) = sent {
                        return self.report_connection(e.kind(), e.to_string());
                    }
                }
                Err(Abort::Broken(e)) => {
                    let kind = e.kind().to_owned();
                    let message = e.to_string();
                    return self.report(request, name, Outcome::Failed { kind, message });
                }
            }
        }
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
            ErrorCode::BadRequest => "protocol-error".to_owned(),
            other => other.to_string(),
        };
        self.report_connection(&kind, reason);
    }

    /// Turns away a connection over the limits: it is told it is `busy`,
    /// over TLS if the server speaks it, and closed within a few seconds
    /// whatever the peer does.
    pub async fn turn_away(self, stream: TcpStream, refusal: Refusal) {
        let link = match &self.config.tls {
            None => Ok(Link::Plain(stream)),
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
                match tokio::time::timeout(TURN_AWAY_TIME, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => Ok(Link::Tls(Box::new(tls.into()))),
                    Ok(Err(e)) => Err(tls_failure(&e)),
                    Err(_) => Err("no TLS handshake within a second".to_owned()),
                }
            }
        };
        let reason = refusal.to_string();
        let mut conn = match link {
            Ok(link) => Connection::new(link),
            Err(why) => return self.report_connection("busy", format!("{reason}; {why}")),
        };
        conn.set_stall_limit(TURN_AWAY_TIME);
        let told = conn.turn_away(ErrorCode::Busy, reason.clone());
        // Whether the peer read it or not, the connection ends here.
        let _ = tokio::time::timeout(2 * TURN_AWAY_TIME, told).await;
        self.report_connection("busy", reason);
    }

    async fn put(
        &self,
        conn: &mut Connection<Link>,
        name: &str,
        size: u64,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name).map_err(Failure::from)?;
        if let Some(limit) = self.config.max_file_size.filter(|&limit| size > limit) {
            let reason = format!("{size} bytes is more than this server accepts ({limit} bytes)");
            return Err(Failure::new(ErrorCode::TooLarge, reason).into());
        }
        let (staged, file) = self.blocking(move |root| root.stage(&name, size)).await?;
        // The go-ahead comes only now, so a refused upload costs the client
        // one round trip and no body.
        conn.write_message(&Message::Proceed).await?;
        let (file, digest) = conn.recv_file(file, size, &mut |_| {}).await?;
        self.blocking(move |_| {
            // Stamped after the last write, so the record matches the file
            // as it will appear under its name.
            if let Ok(stamp) = Stamp::of(&file) {
                digest_cache::remember(&file, &stamp, &digest);
            }
            staged.commit(&file).map_err(classify)
        })
        .await?;
        conn.write_message(&Message::Done).await?;
        Ok(Detail::Transfer {
            bytes: size,
            elapsed: started.elapsed(),
        })
    }

    async fn get(
        &self,
        conn: &mut Connection<Link>,
        name: &str,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name).map_err(Failure::from)?;
        let (file, size, stamp, cached) = self
            .blocking(move |root| {
                let (file, size) = root.open_file(&name)?;
                let stamp = Stamp::of(&file).map_err(classify)?;
                let cached = digest_cache::lookup(&file, &stamp);
                Ok((file, size, stamp, cached))
            })
            .await?;
        conn.queue(&Message::Body { size })?;
        let (file, digest) = conn.send_file(file, size, cached, &mut |_| {}).await?;
        if cached.is_none() && stamp.is_settled() {
            // Only if the file did not change while it was read: otherwise
            // the digest may describe neither its old content nor its new.
            let _ = self
                .blocking(move |_| {
                    if Stamp::of(&file).is_ok_and(|now| now == stamp) {
                        digest_cache::remember(&file, &stamp, &digest);
                    }
                    Ok(())
                })
                .await;
        }
        Ok(Detail::Transfer {
            bytes: size,
            elapsed: started.elapsed(),
        })
    }

    async fn list(
        &self,
        conn: &mut Connection<Link>,
        dir: &str,
        long: bool,
    ) -> Result<Detail, Abort> {
        let dir = match dir {
            "" => None,
            dir => Some(RemoteName::parse(dir).map_err(Failure::from)?),
        };
        let entries = self
            .blocking(move |root| root.list(dir.as_ref(), long))
            .await?;
        let count = entries.len();
        for batch in entries.chunks(ENTRIES_PER_WRITE) {
            for entry in batch {
                conn.queue(&Message::Entry(entry.clone()))?;
            }
            conn.flush().await?;
        }
        conn.write_message(&Message::Done).await?;
        Ok(Detail::Entries(count))
    }

    async fn delete(&self, conn: &mut Connection<Link>, name: &str) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name).map_err(Failure::from)?;
        self.blocking(move |root| root.delete(&name)).await?;
        conn.write_message(&Message::Done).await?;
        Ok(Detail::None)
    }

    /// Runs filesystem work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Root) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || work(&root))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(peer = %self.peer, error = %e, "filesystem task failed");
                Err(Failure::new(ErrorCode::Io, "internal server error"))
            })
    }

    fn report(&self, request: RequestKind, name: Option<String>, outcome: Outcome) {
        (self.reporter)(&Report::now(self.peer.to_string(), request, name, outcome));
    }

    fn report_connection(&self, kind: &str, message: String) {
        let outcome = Outcome::Failed {
            kind: kind.to_owned(),
            message,
        };
        self.report(RequestKind::Connection, None, outcome);
    }
}

/// Why a connection never got as far as its first request.
struct Unopened {
    kind: String,
    message: String,
}

impl Unopened {
    fn new(kind: &str, message: impl Into<String>) -> Self {
        Unopened {
            kind: kind.to_owned(),
            message: message.into(),
        }
    }
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
