//! A typed ferry client: connect once, then put, get, list, delete and
//! manage directories over the same connection.
//!
//! Local checks come first and cost no round trip: [`Upload::open`] fails on
//! a missing file before anything is sent, and [`Client::get`] refuses an
//! existing destination before asking the server. Downloads are staged in a
//! hidden temporary file and moved into place only when complete and
//! verified, never over an existing file, or handed to a writer as they
//! arrive ([`Client::get_to`]). Streams of unknown length go up with
//! [`Client::put_stream`].
//!
//! Remote globs are expanded here, over listings, by [`expand_remote`]:
//! the server never matches patterns.

mod forward;
pub mod glob;
mod local_tree;
mod put_tree;
mod resume;
mod spool;
mod tree;
mod trust;
mod walk;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_std::fs::Dir;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;

use crate::protocol::{
    Entry, ErrorCode, FailureKind, Info, Message, OmitReason, RemoteName, RequestKind,
};
use crate::security::{Fingerprint, KnownHostsError};
use crate::staging::Staged;
use crate::transport::{self, Connection, Link, TransportError};
pub use glob::{expand_remote, GlobError};
pub use put_tree::TreeSent;
pub use resume::{partial_name, Moved, PARTIAL_SUFFIX};
pub use tree::{Conflicts, TreeGot, TreeHow};
pub use trust::{FirstUse, Security, Trust};
pub use walk::{Left, LocalTree, TreeSource};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    /// No address of the host accepted a connection.
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    /// The server did not answer in time.
    #[error("server did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke or the server spoke something other than ferry.
    #[error("{0}")]
    Transport(TransportError),
    /// The server refused the request.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
    /// The server refused a tree for names in its way: the first of them
    /// (up to 20), and its message, which counts them all.
    #[error("{message}{}", conflict_list(names))]
    RemoteConflicts {
        code: ErrorCode,
        message: String,
        names: Vec<String>,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    /// The local destination exists; ferry never overwrites.
    #[error("{} already exists locally; ferry never overwrites", .0.display())]
    LocalExists(PathBuf),
    /// The server sent something no ferry server would, such as a listed
    /// name that breaks the naming rules; the connection is abandoned.
    #[error("server misbehaved: {0}")]
    BadReply(String),
    /// Local names are in the way of a tree; nothing was fetched.
    #[error("{0}")]
    LocalConflicts(Conflicts),
    /// A file of a tree changed on the server between its manifest and
    /// its body; the transfer was abandoned and the file not kept.
    #[error("{0:?} changed on the server while the tree was sent; it was not kept")]
    FileChanged(String),
    /// The downloaded data did not match the server's digest.
    #[error("data arrived damaged (BLAKE3 digest mismatch); nothing was kept")]
    DigestMismatch,
    /// A download handed out as it arrived did not match the server's
    /// digest: what was written is damaged, and cannot be taken back.
    #[error(
        "data arrived damaged (BLAKE3 digest mismatch) and was written out already, which \
         cannot be taken back: discard what was written"
    )]
    DamagedOutput,
    /// Writing a download out as it arrived failed; the rest of it was
    /// read and dropped.
    #[error("cannot write the download out: {0}")]
    Output(io::Error),
    /// The server does not serve this kind of request (an older or
    /// narrower server); nothing was sent.
    #[error("this server does not support {0} requests")]
    Unsupported(RequestKind),
    /// A server met before proved another identity than the one recorded.
    #[error(
        "WARNING: SERVER IDENTITY CHANGED: {target} proved identity {seen}, but line {line} of \
         {} records {expected}. Someone may be intercepting this connection, or the server's \
         identity was replaced; nothing was sent. If the change is expected, run \
         `ferry known-hosts forget {target}` (it removes that line) and connect again",
        file.display()
    )]
    IdentityChanged {
        target: String,
        seen: Fingerprint,
        expected: Fingerprint,
        file: PathBuf,
        line: usize,
    },
    /// The server did not prove the identity given with `--fingerprint`.
    #[error(
        "WARNING: SERVER IDENTITY MISMATCH: {target} proved identity {seen}, not the one \
         given with --fingerprint; nothing was sent"
    )]
    NotPinned { target: String, seen: Fingerprint },
    /// The server answered TLS with a ferry preamble: it runs `--plain`.
    #[error("the server did not answer with TLS; it runs with --plain, so pass --plain too")]
    PlainFerry,
    /// The server answered TLS with something neither TLS nor ferry.
    #[error("the server did not answer with TLS and does not look like a ferry server")]
    NotTls,
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The server closed the connection before its handshake was done,
    /// without a word: a server over its limits does that, and so does
    /// one refusing this address after failed handshakes.
    #[error(
        "the server closed the connection during the handshake \
         (it may be busy, or refusing this address for a while)"
    )]
    ClosedInHandshake,
    /// The known-hosts file could not be read or written.
    #[error("{0}")]
    KnownHosts(#[from] KnownHostsError),
}

impl ClientError {
    /// What kind of failure this is, for reports.
    pub fn kind(&self) -> FailureKind {
        match self {
            ClientError::Resolve { .. } | ClientError::Connect { .. } => FailureKind::Unreachable,
            ClientError::Timeout(_) => ErrorCode::Timeout.into(),
            ClientError::Transport(e) => e.kind(),
            ClientError::Remote { code, .. } | ClientError::RemoteConflicts { code, .. } => {
                (*code).into()
            }
            ClientError::Local { .. } => FailureKind::LocalIo,
            ClientError::LocalExists(_) | ClientError::LocalConflicts(_) => {
                FailureKind::LocalExists
            }
            ClientError::FileChanged(_) => FailureKind::FileChanged,
            ClientError::BadReply(_) => FailureKind::ProtocolError,
            ClientError::DigestMismatch | ClientError::DamagedOutput => {
                ErrorCode::DigestMismatch.into()
            }
            ClientError::Output(_) => FailureKind::LocalIo,
            ClientError::Unsupported(_) => ErrorCode::UnsupportedRequest.into(),
            ClientError::IdentityChanged { .. } | ClientError::NotPinned { .. } => {
                FailureKind::IdentityChanged
            }
            ClientError::PlainFerry | ClientError::NotTls => FailureKind::NotTls,
            ClientError::Tls(_) => FailureKind::TlsError,
            ClientError::ClosedInHandshake => FailureKind::ConnectionLost,
            ClientError::KnownHosts(_) => FailureKind::KnownHosts,
        }
    }

    /// Whether trust failed either way: the server is not who it was, or
    /// it does not accept us.
    pub fn is_trust_failure(&self) -> bool {
        matches!(
            self,
            ClientError::IdentityChanged { .. }
                | ClientError::NotPinned { .. }
                | ClientError::Remote {
                    code: ErrorCode::Unauthorized,
                    ..
                }
        )
    }

    /// Whether the connection is gone (or never was), as opposed to one
    /// request having failed on a connection that still works.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            ClientError::Resolve { .. }
            | ClientError::Connect { .. }
            | ClientError::Timeout(_)
            | ClientError::BadReply(_)
            // Abandoned mid-tree: the rest of its bodies are still coming.
            | ClientError::FileChanged(_)
            | ClientError::IdentityChanged { .. }
            | ClientError::NotPinned { .. }
            | ClientError::PlainFerry
            | ClientError::NotTls
            | ClientError::Tls(_)
            | ClientError::ClosedInHandshake
            | ClientError::KnownHosts(_) => true,
            ClientError::Transport(e) => !e.is_connection_usable(),
            ClientError::Remote { code, .. } | ClientError::RemoteConflicts { code, .. } => {
                code.ends_connection()
            }
            ClientError::Local { .. }
            | ClientError::LocalExists(_)
            | ClientError::LocalConflicts(_)
            | ClientError::DigestMismatch
            | ClientError::DamagedOutput
            | ClientError::Output(_)
            | ClientError::Unsupported(_) => false,
        }
    }
}

impl From<TransportError> for ClientError {
    fn from(error: TransportError) -> Self {
        ClientError::Transport(error)
    }
}

/// Told how a transfer advances, to draw a progress bar.
pub trait Progress: Send {
    /// The body is about to move; it has `total` bytes.
    fn begin(&mut self, total: u64);
    /// `bytes` more have moved.
    fn advance(&mut self, bytes: u64);
    /// A tree's bodies are about to move: `total` files of them.
    fn begin_files(&mut self, _total: u64) {}
    /// One more file of a tree has moved and is in place.
    fn file_done(&mut self, _file: &TreeFile<'_>) {}
    /// A file of a tree was not moved: the other side has it with the same
    /// content.
    fn file_skipped(&mut self, _path: &str, _size: u64) {}
}

/// A file of a tree that has moved, as [`Progress::file_done`] hears of it.
#[derive(Debug, Clone, Copy)]
pub struct TreeFile<'a> {
    /// The path below the tree's top, `/`-separated.
    pub path: &'a str,
    /// The file's size.
    pub size: u64,
    /// The bytes that moved for it: less than `size` when it went on from
    /// a prefix its receiver held.
    pub moved: u64,
}

/// The conflicting names of a refused tree, as its error shows them
/// beyond the few the server's message names.
fn conflict_list(names: &[String]) -> String {
    if names.len() <= NAMED_BY_SERVER {
        return String::new();
    }
    let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
    format!("; the first {}: {}", names.len(), quoted.join(", "))
}

/// How many conflicting names a ferry server's refusal names itself.
const NAMED_BY_SERVER: usize = 5;

/// The slowest disk a server is expected to sync an upload to, on top of
/// the usual reply timeout: 10 MB/s allows 100 s more for a gigabyte.
const SLOWEST_DISK_BYTES_PER_SEC: u64 = 10_000_000;

/// How long a recursive delete may take on the server, at least: it
/// answers only once the whole tree is gone.
const RECURSIVE_DELETE_WAIT: Duration = Duration::from_secs(10 * 60);

/// A local file opened for upload.
#[derive(Debug)]
pub struct Upload {
    file: std::fs::File,
    size: u64,
}

impl Upload {
    /// Opens a regular file for upload; fails before any network traffic.
    pub fn open(path: &Path) -> Result<Upload, ClientError> {
        use std::os::unix::fs::OpenOptionsExt;
        let local = |source| ClientError::Local {
            path: path.to_owned(),
            source,
        };
        // Without O_NONBLOCK, opening a fifo would wait for a writer forever;
        // the check below then refuses anything but a regular file.
        let nonblocking = rustix::fs::OFlags::NONBLOCK.bits() as i32;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nonblocking)
            .open(path)
            .map_err(local)?;
        let metadata = file.metadata().map_err(local)?;
        if !metadata.is_file() {
            let what = if metadata.is_dir() {
                "is a directory"
            } else {
                "is not a regular file"
            };
            return Err(local(io::Error::other(what)));
        }
        Ok(Upload {
            file,
            size: metadata.len(),
        })
    }
}

/// A connection to a ferry server.
pub struct Client {
    conn: Connection<Link>,
    server: SocketAddr,
    timeout: Duration,
    /// The requests the server said it serves, in its welcome.
    serves: Vec<RequestKind>,
}

/// What a listing brought besides its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// How many entries there were.
    pub entries: usize,
    /// Names the server left out, and why.
    pub omitted: Vec<(OmitReason, u64)>,
}

/// What a recursive delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub files: u64,
    pub directories: u64,
}

impl Client {
    /// Resolves `host`, connects to the first of its addresses that answers,
    /// sets up TLS as `security` says, and makes the handshake. `timeout`
    /// bounds each connection attempt, the TLS and ferry handshakes, every
    /// later wait for a reply, and how long a body may go without moving.
    pub async fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        security: &Security,
    ) -> Result<Client, ClientError> {
        let target = format_target(host, port);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| ClientError::Resolve {
                host: host.to_owned(),
                source,
            })?
            .collect();
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "host has no addresses");
        for addr in addrs {
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    last_error = e;
                    continue;
                }
                Err(_) => {
                    last_error = io::Error::new(io::ErrorKind::TimedOut, "connection timed out");
                    continue;
                }
            };
            transport::tune(&stream).map_err(TransportError::Io)?;
            let link = security
                .trust
                .open(stream, host, &target, timeout, security.on_first_use)
                .await?;
            let mut conn = Connection::new(link);
            // A body that stops moving is given up after the same wait as
            // a reply: a server that stalls must not hold the client.
            conn.set_stall_limit(timeout);
            let answer = with_timeout(timeout, conn.client_handshake(&security.token)).await;
            let serves = match answer {
                Err(ClientError::Transport(e)) if e.is_peer_gone() => {
                    return Err(ClientError::ClosedInHandshake)
                }
                answer => answer?,
            };
            let serves = match serves {
                Message::Welcome { requests } => requests,
                Message::Error { code, message } => {
                    return Err(ClientError::Remote { code, message })
                }
                other => return Err(unexpected(other, "a welcome")),
            };
            return Ok(Client {
                conn,
                server: addr,
                timeout,
                serves,
            });
        }
        Err(ClientError::Connect {
            target,
            source: last_error,
        })
    }

    /// Sets the most the bodies of this client's transfers may move, in
    /// bytes a second, files, trees and streams, up or down; 0 for no
    /// limit, the default.
    pub fn set_rate_limit(&mut self, bytes_per_second: u64) {
        self.conn.set_rate_limit(bytes_per_second);
    }

    /// The address of the server this client is connected to.
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// Whether the server has closed the connection, or said it will,
    /// while it sat idle: a peek that does not wait sees the end of the
    /// stream, or bytes nobody asked for. Between requests a server speaks
    /// only to say goodbye (`shutting-down`), so anything at all means the
    /// connection is over.
    pub fn is_closed_by_server(&self) -> bool {
        let mut byte = [0u8; 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        !matches!(
            rustix::net::recv(self.conn.get_ref().tcp(), &mut byte, flags),
            Err(rustix::io::Errno::AGAIN)
        )
    }

    /// Uploads `upload` as `name`. The server says yes or no before any of
    /// the file is sent.
    pub async fn put(
        &mut self,
        upload: Upload,
        name: &RemoteName,
        progress: &mut dyn Progress,
    ) -> Result<u64, ClientError> {
        self.require(RequestKind::Put)?;
        let Upload { file, size } = upload;
        self.conn
            .write_message(&Message::Put {
                name: name.to_string(),
                size,
            })
            .await?;
        match self.reply().await? {
            Message::Proceed => {}
            other => return Err(unexpected(other, "a proceed reply")),
        }
        progress.begin(size);
        self.conn
            .send_body(file, size, None, &mut |n| progress.advance(n))
            .await?;
        // The server answers once the file is on its disk, which for a large
        // file on a slow disk takes a while after the last byte.
        let syncing = Duration::from_secs(size / SLOWEST_DISK_BYTES_PER_SEC);
        match self.reply_within(self.timeout + syncing).await? {
            Message::Done => Ok(size),
            other => Err(unexpected(other, "a done reply")),
        }
    }

    /// Uploads what `input` gives, to its end, as `name`: a stream of
    /// unknown length, which the server keeps only once it has all of it,
    /// verified. With `replace`, a file of that name is replaced,
    /// atomically; that needs the right to delete too.
    pub async fn put_stream<R: AsyncRead + Unpin>(
        &mut self,
        mut input: R,
        name: &RemoteName,
        replace: bool,
        progress: &mut dyn Progress,
    ) -> Result<u64, ClientError> {
        self.require(RequestKind::PutStream)?;
        let request = Message::PutStream {
            name: name.to_string(),
            replace,
        };
        match self.request(&request).await? {
            Message::Proceed => {}
            other => return Err(unexpected(other, "a proceed reply")),
        }
        let (size, _digest) = self
            .conn
            .send_stream(&mut input, &mut |n| progress.advance(n))
            .await?;
        let syncing = Duration::from_secs(size / SLOWEST_DISK_BYTES_PER_SEC);
        match self.reply_within(self.timeout + syncing).await? {
            Message::Done => Ok(size),
            other => Err(unexpected(other, "a done reply")),
        }
    }

    /// Downloads `name` into `out` as it arrives; at the end, checks the
    /// digest, and fails with [`ClientError::DamagedOutput`] if it does
    /// not match: what was written cannot be taken back.
    pub async fn get_to<W: io::Write + Send + 'static>(
        &mut self,
        name: &RemoteName,
        out: W,
        progress: &mut dyn Progress,
    ) -> Result<u64, ClientError> {
        self.require(RequestKind::Get)?;
        let request = Message::Get {
            name: name.to_string(),
        };
        let size = match self.request(&request).await? {
            Message::Body { size } => size,
            other => return Err(unexpected(other, "a body reply")),
        };
        progress.begin(size);
        let sink = forward::Forward::new(out);
        let received = self
            .conn
            .recv_body(sink, size, &mut |n| progress.advance(n))
            .await;
        match received {
            Ok(_) => Ok(size),
            Err(TransportError::Sink(e)) => Err(ClientError::Output(e)),
            Err(TransportError::DigestMismatch) => Err(ClientError::DamagedOutput),
            Err(other) => Err(other.into()),
        }
    }

    /// Downloads `name` to the local path `dest`, which must not exist.
    pub async fn get(
        &mut self,
        name: &RemoteName,
        dest: &Path,
        progress: &mut dyn Progress,
    ) -> Result<u64, ClientError> {
        self.require(RequestKind::Get)?;
        let (staged, file) = stage_download(dest)?;
        self.conn
            .write_message(&Message::Get {
                name: name.to_string(),
            })
            .await?;
        let size = match self.reply().await? {
            Message::Body { size } => size,
            other => return Err(unexpected(other, "a body reply")),
        };
        progress.begin(size);
        let received = self
            .conn
            .recv_body(file, size, &mut |n| progress.advance(n))
            .await;
        let file = match received {
            Ok((file, _digest)) => file,
            Err(TransportError::Sink(source)) => {
                return Err(ClientError::Local {
                    path: dest.to_owned(),
                    source,
                })
            }
            Err(TransportError::DigestMismatch) => return Err(ClientError::DigestMismatch),
            Err(other) => return Err(other.into()),
        };
        staged.commit(&file).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => ClientError::LocalExists(dest.to_owned()),
            _ => ClientError::Local {
                path: dest.to_owned(),
                source,
            },
        })?;
        Ok(size)
    }

    /// Lists the root, or `dir` beneath it (or the one entry `dir` if it
    /// is not a directory), handing each entry to `on_entry` as it arrives,
    /// in the server's order.
    pub async fn list(
        &mut self,
        dir: Option<&RemoteName>,
        long: bool,
        on_entry: &mut dyn FnMut(Entry),
    ) -> Result<Listed, ClientError> {
        self.require(RequestKind::List)?;
        let dir = dir.map(RemoteName::to_string).unwrap_or_default();
        self.conn
            .write_message(&Message::List { dir, long })
            .await?;
        let mut listed = Listed::default();
        loop {
            match self.reply().await? {
                Message::Entry(entry) => {
                    check_listed_name(&entry.name)?;
                    listed.entries += 1;
                    on_entry(entry);
                }
                Message::Omitted { reason, count } => listed.omitted.push((reason, count)),
                Message::Done => return Ok(listed),
                other => return Err(unexpected(other, "a listing entry")),
            }
        }
    }

    /// Deletes the remote file (or symlink) `name`; with `recursive`, a
    /// directory and everything in it, saying how much went.
    pub async fn delete(
        &mut self,
        name: &RemoteName,
        recursive: bool,
    ) -> Result<Option<Removed>, ClientError> {
        self.require(RequestKind::Delete)?;
        let request = Message::Delete {
            name: name.to_string(),
            recursive,
        };
        self.conn.write_message(&request).await?;
        // A large tree takes the server a while; it answers once all is gone.
        let wait = if recursive {
            self.timeout.max(RECURSIVE_DELETE_WAIT)
        } else {
            self.timeout
        };
        match (self.reply_within(wait).await?, recursive) {
            (Message::Done, false) => Ok(None),
            (Message::Removed { files, directories }, true) => {
                Ok(Some(Removed { files, directories }))
            }
            (other, _) => Err(unexpected(other, "a reply to a delete")),
        }
    }

    /// Makes the remote directory `name`; with `parents`, its missing
    /// parents too, and an existing directory is then no error.
    pub async fn make_dir(&mut self, name: &RemoteName, parents: bool) -> Result<(), ClientError> {
        self.require(RequestKind::MakeDir)?;
        let request = Message::MakeDir {
            name: name.to_string(),
            parents,
        };
        self.expect_done(&request).await
    }

    /// Removes the empty remote directory `name`.
    pub async fn remove_dir(&mut self, name: &RemoteName) -> Result<(), ClientError> {
        self.require(RequestKind::RemoveDir)?;
        let request = Message::RemoveDir {
            name: name.to_string(),
        };
        self.expect_done(&request).await
    }

    /// Renames `from` to `to` on the server, never replacing anything.
    pub async fn rename(&mut self, from: &RemoteName, to: &RemoteName) -> Result<(), ClientError> {
        self.require(RequestKind::Rename)?;
        let request = Message::Rename {
            from: from.to_string(),
            to: to.to_string(),
        };
        self.expect_done(&request).await
    }

    /// What the server knows of `name` (`None`: the served directory).
    pub async fn stat(&mut self, name: Option<&RemoteName>) -> Result<Info, ClientError> {
        self.require(RequestKind::Stat)?;
        let request = Message::Stat {
            name: name.map(RemoteName::to_string).unwrap_or_default(),
        };
        match self.request(&request).await? {
            Message::Info(info) => Ok(info),
            other => Err(unexpected(other, "an info reply")),
        }
    }

    /// Whether the server said it serves requests of `kind`.
    pub fn serves(&self, kind: RequestKind) -> bool {
        self.serves.contains(&kind)
    }

    /// Refuses, before sending anything, a request the server does not
    /// serve.
    fn require(&self, kind: RequestKind) -> Result<(), ClientError> {
        if self.serves(kind) {
            Ok(())
        } else {
            Err(ClientError::Unsupported(kind))
        }
    }

    /// Sends `request` and returns the server's reply.
    async fn request(&mut self, request: &Message) -> Result<Message, ClientError> {
        self.conn.write_message(request).await?;
        self.reply().await
    }

    /// Sends `request`, which succeeds with `Done`.
    async fn expect_done(&mut self, request: &Message) -> Result<(), ClientError> {
        match self.request(request).await? {
            Message::Done => Ok(()),
            other => Err(unexpected(other, "a done reply")),
        }
    }

    /// The server's next message; an `Error` frame becomes `Err`.
    async fn reply(&mut self) -> Result<Message, ClientError> {
        self.reply_within(self.timeout).await
    }

    async fn reply_within(&mut self, timeout: Duration) -> Result<Message, ClientError> {
        // `timeout` bounds this wait; the connection's stall limit is for
        // bodies, and must not cut a long wait short.
        let body_stall_limit = self.conn.stall_limit();
        self.conn.set_stall_limit(Duration::MAX);
        let reply = with_timeout(timeout, self.conn.expect_message()).await;
        self.conn.set_stall_limit(body_stall_limit);
        match reply {
            // Whatever it was, the reply to this request is lost with it.
            Err(ClientError::Transport(TransportError::UnknownMessage(tag))) => {
                Err(ClientError::BadReply(format!(
                    "replied with a message of unknown kind 0x{tag:02x}"
                )))
            }
            Err(other) => Err(other),
            Ok(Message::Error { code, message }) => Err(ClientError::Remote { code, message }),
            Ok(message) => Ok(message),
        }
    }
}

/// A listed name must be one valid component: what a ferry server lists.
/// Anything else comes from a misbehaving server and is not passed on.
fn check_listed_name(name: &str) -> Result<(), ClientError> {
    match RemoteName::parse(name) {
        // In its plain form too: `./x` or `x/` would be taken for `x`.
        Ok(parsed) if parsed.parent().is_none() && parsed.as_str() == name => Ok(()),
        Ok(_) => Err(ClientError::BadReply(format!(
            "listed {name:?}, a path rather than a name"
        ))),
        Err(e) => Err(ClientError::BadReply(format!("listed {name:?}: {e}"))),
    }
}

/// Checks that `dest` is free and creates the unnamed temporary file that
/// will become it: a client killed mid-download leaves nothing behind.
fn stage_download(dest: &Path) -> Result<(Staged, std::fs::File), ClientError> {
    let local = |source| ClientError::Local {
        path: dest.to_owned(),
        source,
    };
    if dest.symlink_metadata().is_ok() {
        return Err(ClientError::LocalExists(dest.to_owned()));
    }
    let file_name = dest.file_name().ok_or_else(|| {
        local(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = Dir::open_ambient_dir(parent, cap_std::ambient_authority()).map_err(local)?;
    Staged::create_unnamed(dir, Path::new(file_name)).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => ClientError::LocalExists(dest.to_owned()),
        _ => local(source),
    })
}

async fn with_timeout<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClientError::Timeout(timeout)),
    }
}

fn unexpected(got: Message, expected: &'static str) -> ClientError {
    ClientError::Transport(TransportError::Unexpected {
        expected,
        got: got.name(),
    })
}

/// `host:port`, with brackets around an IPv6 address.
pub fn format_target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
