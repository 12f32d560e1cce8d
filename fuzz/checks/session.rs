//! A whole server session fed arbitrary bytes: the harness and checks of the
//! `session` fuzz target, replayed by `tests/fuzz_regressions.rs`.
//!
//! [`Harness`] runs a real [`Server`] on 127.0.0.1 over a small fixture
//! tree. For each input it opens a connection, writes the input (after the
//! ferry preamble and a `Hello` if the input's first byte is odd, so the
//! fuzzer gets past the handshake cheaply), closes its sending side and reads until the server
//! hangs up. Then:
//!
//! - the server hung up within [`REPLY_WAIT`]: it always sees the end of the
//!   input, so waiting longer means it is stuck;
//! - what it sent is well formed: its preamble, whole frames of server
//!   messages, each body followed by a trailer with the body's BLAKE3
//!   digest, nothing after an error that ends the connection, no
//!   temporary file or name with a `/` listed, no error message too long;
//! - each request got the answer its kind calls for, in order, a welcome
//!   only to the hello, and the server stopped only where the input let it
//!   (`answers.rs`);
//! - no server task panicked;
//! - no temporary file outlived the connection, and nothing outside the
//!   served directory changed, name, size or content (a symlink in the
//!   fixture points there, and requests may move it about);
//! - the server still answers a fresh connection's listing correctly.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry::protocol::{
    decode, encode, EntryKind, Message, OmitReason, Preamble, Token, PREAMBLE_LEN, TEMP_PREFIX,
};
use ferry::report::{Report, Reporter};
use ferry::server::{Config, Limits, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "answers.rs"]
mod answers;

/// How long the server may take to hang up once the input has ended.
pub const REPLY_WAIT: Duration = Duration::from_secs(5);

/// `Error` messages are cut to this many bytes (PROTOCOL.md §3).
const MAX_ERROR_MESSAGE_LEN: usize = 1024;

/// Panics seen by the hook [`Harness::start`] installs, in any thread.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// A server serving a fixture tree, and the means to check a session.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    root: PathBuf,
    outside: PathBuf,
    /// The fixture as laid out: root and outside, path and kind of each entry.
    fixture: (Vec<String>, Vec<String>),
    /// Holds `root` and `outside`, and nothing else; removed when the
    /// harness is dropped.
    dir: tempfile::TempDir,
}

impl Harness {
    /// Lays out the fixture and starts a server on it, on a runtime of its
    /// own. Panics, which tokio would catch in a connection task and the
    /// server only log, are counted from now on so [`Harness::check`] can
    /// report them.
    pub fn start() -> Harness {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        let dir = tempfile::tempdir().expect("create the harness directory");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        lay_out(&root, &outside).expect("lay out the fixture");
        let fixture = (tree(&root), tree(&outside));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("start a tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the listener's address");
        let reporter: Reporter = Arc::new(|_: &Report| {});
        // Inputs are garbage more often than not, all from one address:
        // with penalties on, each would get the next ones refused, and the
        // fuzzer would explore nothing past the refusal. Penalties have
        // tests of their own (tests/flood.rs).
        let config = Config {
            limits: Limits {
                max_penalty: Duration::ZERO,
                ..Limits::default()
            },
            ..Config::new(&root)
        };
        let server = Server::open(config, reporter).expect("open the server");
        runtime.spawn(server.run(listener, std::future::pending()));
        Harness {
            runtime,
            addr,
            root,
            outside,
            fixture,
            dir,
        }
    }

    /// Runs one session on `input` and checks it; gives back the messages
    /// the server sent, or what went wrong.
    pub fn check(&self, input: &[u8]) -> Result<Vec<Message>, String> {
        let (selector, payload) = input.split_first().unwrap_or((&0, &[]));
        let mut stream = Vec::with_capacity(PREAMBLE_LEN + payload.len());
        if selector & 1 == 1 {
            stream.extend_from_slice(&handshake());
        }
        stream.extend_from_slice(payload);
        let panics = PANICS.load(Ordering::SeqCst);
        let reply = self.runtime.block_on(exchange(self.addr, &stream));
        if PANICS.load(Ordering::SeqCst) != panics {
            return Err("a server task panicked (its message is above)".into());
        }
        let reply = reply?;
        let messages = read_reply(&reply, !stream.is_empty())?;
        answers::check(&stream, &messages, reply.reset)?;
        self.check_and_restore_fixture()?;
        self.check_still_serving()?;
        Ok(messages)
    }

    /// Fails if a temporary file outlived its connection or anything outside
    /// the root changed; puts the fixture back if requests changed it.
    fn check_and_restore_fixture(&self) -> Result<(), String> {
        // Beside the root, only `outside` is there to be reached.
        let beside = tree_top(self.dir.path());
        if beside != ["outside/", "root/"] {
            return Err(format!(
                "a request changed the directory holding the root: {beside:?}"
            ));
        }
        let now = tree(&self.root);
        if now == self.fixture.0 {
            return Ok(());
        }
        let leftover = now.iter().find(|entry| {
            let name = entry.rsplit('/').next().unwrap_or(entry);
            name.starts_with(TEMP_PREFIX)
        });
        let outside_now = tree(&self.outside);
        empty_dir(&self.root).expect("clear the served directory");
        empty_dir(&self.outside).expect("clear the outside directory");
        lay_out(&self.root, &self.outside).expect("lay out the fixture again");
        if let Some(leftover) = leftover {
            return Err(format!(
                "a temporary file outlived its connection: {leftover}"
            ));
        }
        if outside_now != self.fixture.1 {
            return Err(format!(
                "a request changed the directory outside the root: {outside_now:?}"
            ));
        }
        Ok(())
    }

    /// A fresh connection's listing of the root must be the fixture's.
    fn check_still_serving(&self) -> Result<(), String> {
        let mut request = handshake();
        let list = Message::List {
            dir: String::new(),
            long: false,
        };
        encode(&list, &mut request).expect("a list request fits a frame");
        let reply = self.runtime.block_on(exchange(self.addr, &request));
        let listed = reply
            .and_then(|reply| read_reply(&reply, true))
            .map_err(|e| format!("afterwards, a listing failed: {e}"))?;
        let expected = [
            ("a.txt", EntryKind::File),
            ("d", EntryKind::Directory),
            ("empty", EntryKind::File),
            ("fifo", EntryKind::Other),
            ("link", EntryKind::File),
        ];
        let mut entries = Vec::new();
        let mut omitted = Vec::new();
        for message in listed.iter().skip(1) {
            match message {
                Message::Entry(entry) => entries.push((entry.name.as_str(), entry.kind)),
                Message::Omitted { reason, count } => omitted.push((*reason, *count)),
                Message::Done => {}
                _ => return Err(format!("afterwards, a listing got {listed:?}")),
            }
        }
        // Entries come in the directory's order.
        entries.sort_by_key(|(name, _)| *name);
        // `escape` leads outside and `dangling` nowhere: counted, not shown.
        let links_left_out = [(OmitReason::LinkOutside, 2)];
        if entries != expected
            || omitted != links_left_out
            || !matches!(listed.first(), Some(Message::Welcome { .. }))
            || listed.last() != Some(&Message::Done)
        {
            return Err(format!("afterwards, the root lists as {listed:?}"));
        }
        Ok(())
    }
}

/// A client's preamble and a `Hello` without a token.
fn handshake() -> Vec<u8> {
    let mut bytes = Preamble::OURS.to_bytes().to_vec();
    let hello = Message::Hello {
        token: Token::default(),
    };
    encode(&hello, &mut bytes).expect("a hello fits a frame");
    bytes
}

/// What the server sent on one connection.
struct Reply {
    bytes: Vec<u8>,
    /// The connection was reset rather than closed, as when the server hangs
    /// up on input it has not read: the last bytes it sent may be lost.
    reset: bool,
}

/// Sends `stream`, closes the sending side, and reads until the server
/// hangs up, for at most [`REPLY_WAIT`].
async fn exchange(addr: SocketAddr, stream: &[u8]) -> Result<Reply, String> {
    let talk = async {
        let mut socket = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to the server: {e}"))?;
        let (mut reader, mut writer) = socket.split();
        let send = async {
            // The server may hang up before it has read everything; what it
            // sent until then is what gets checked.
            let _ = writer.write_all(stream).await;
            let _ = writer.shutdown().await;
        };
        let receive = async {
            let mut bytes = Vec::new();
            let ended = reader.read_to_end(&mut bytes).await;
            Reply {
                bytes,
                reset: ended.is_err(),
            }
        };
        let ((), reply) = tokio::join!(send, receive);
        Ok(reply)
    };
    tokio::time::timeout(REPLY_WAIT, talk)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the server neither hung up nor stopped sending within {REPLY_WAIT:?} of the \
                 end of the input"
            ))
        })
}

/// Checks that `reply` is what a server may send, and returns its messages.
/// `spoke` tells whether the client sent any byte at all.
fn read_reply(reply: &Reply, spoke: bool) -> Result<Vec<Message>, String> {
    let mut rest = reply.bytes.as_slice();
    if !spoke {
        if rest.is_empty() {
            return Ok(Vec::new());
        }
        return Err(format!("the server sent {rest:02x?} to a silent client"));
    }
    // The server answers any bytes at all with its preamble.
    let ours = Preamble::OURS.to_bytes();
    match rest.split_at_checked(PREAMBLE_LEN) {
        Some((preamble, after)) if preamble == ours => rest = after,
        None if reply.reset && ours.starts_with(rest) => return Ok(Vec::new()),
        _ => {
            return Err(format!(
                "the reply does not start with a preamble: {rest:02x?}"
            ))
        }
    }
    let mut messages: Vec<Message> = Vec::new();
    while !rest.is_empty() {
        if let Some(Message::Error { code, .. }) = messages.last() {
            if code.ends_connection() {
                return Err(format!("bytes follow the hang-up {messages:?}"));
            }
        }
        let (message, used) = match decode(rest) {
            Ok(Some(decoded)) => decoded,
            Ok(None) if reply.reset => break,
            Ok(None) => return Err(format!("the reply ends inside a frame: {rest:02x?}")),
            Err(e) => return Err(format!("the server sent a malformed frame: {e}")),
        };
        rest = &rest[used..];
        match &message {
            Message::Entry(entry) => {
                let name = entry.name.as_str();
                if name.is_empty()
                    || name.contains('/')
                    || name == "."
                    || name == ".."
                    || name.starts_with(TEMP_PREFIX)
                {
                    return Err(format!("a listing shows the entry {name:?}"));
                }
            }
            Message::Error { message: text, .. } if text.len() > MAX_ERROR_MESSAGE_LEN => {
                return Err(format!("an error message of {} bytes", text.len()));
            }
            Message::Omitted { .. }
            | Message::Done
            | Message::Error { .. }
            | Message::Welcome { .. }
            | Message::Proceed
            | Message::Info(_)
            | Message::Removed { .. }
            | Message::TreeEntry(_)
            | Message::TreeEnd { .. }
            | Message::Skip { .. }
            | Message::Conflict { .. }
            | Message::TreeDone { .. }
            | Message::Resume { .. } => {}
            // No fixture file is a step long, so a body is always sent
            // from its start and its trailer is its own digest.
            Message::Body { size }
            | Message::Sending {
                size, offset: 0, ..
            } => match read_body(rest, *size) {
                Ok(Some(after)) => rest = after,
                Ok(None) if reply.reset => break,
                Ok(None) => return Err(format!("a body of {size} bytes is cut short")),
                Err(e) => return Err(e),
            },
            Message::Hello { .. }
            | Message::Put { .. }
            | Message::Get { .. }
            | Message::List { .. }
            | Message::Delete { .. }
            | Message::MakeDir { .. }
            | Message::RemoveDir { .. }
            | Message::Rename { .. }
            | Message::Stat { .. }
            | Message::PutTree { .. }
            | Message::GetTree { .. }
            | Message::PutStream { .. }
            | Message::PutFrom { .. }
            | Message::GetFrom { .. }
            | Message::Chunk { .. }
            | Message::Trailer { .. } => return Err(format!("the server sent {}", message.name())),
            Message::Sending { offset, .. } => {
                return Err(format!("the server resumed a fixture file at {offset}"))
            }
            Message::Held { index, .. } => {
                return Err(format!("the server held a partial of tree entry {index}"))
            }
        }
        messages.push(message);
    }
    Ok(messages)
}

/// Reads a raw body of `size` bytes and the trailer after it from the front
/// of `rest`, checks the digest, and returns what follows; `None` if the
/// reply ends first.
fn read_body(rest: &[u8], size: u64) -> Result<Option<&[u8]>, String> {
    let Some((body, after)) = usize::try_from(size)
        .ok()
        .and_then(|size| rest.split_at_checked(size))
    else {
        return Ok(None);
    };
    match decode(after) {
        Ok(Some((Message::Trailer { digest }, used))) => {
            if digest != *blake3::hash(body).as_bytes() {
                return Err(format!(
                    "the trailer of a {size}-byte body has the wrong digest"
                ));
            }
            Ok(Some(&after[used..]))
        }
        Ok(None) => Ok(None),
        other => Err(format!("a body is followed by {other:?}, not a trailer")),
    }
}

/// The fixture: files, a directory, a fifo, and symlinks inside, outside
/// (to `outside`, which holds a canary) and nowhere.
fn lay_out(root: &Path, outside: &Path) -> io::Result<()> {
    fs::create_dir_all(root)?;
    fs::create_dir_all(outside)?;
    fs::write(outside.join("canary"), b"outside the served directory")?;
    fs::write(root.join("a.txt"), b"hello")?;
    fs::write(root.join("empty"), b"")?;
    fs::create_dir(root.join("d"))?;
    let b: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("d/b.bin"), b)?;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )?;
    symlink("a.txt", root.join("link"))?;
    symlink(outside, root.join("escape"))?;
    symlink("nowhere", root.join("dangling"))
}

/// Every entry under `dir` with its kind and, for files, size and BLAKE3
/// digest: relative, sorted, symlinks not followed.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let Ok(entries) = fs::read_dir(dir.join(&relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = relative.join(entry.file_name());
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let kind = metadata.file_type();
            let shown = path.to_string_lossy();
            found.push(if kind.is_dir() {
                format!("{shown}/")
            } else if kind.is_file() {
                let digest = fs::read(entry.path()).map(|bytes| blake3::hash(&bytes));
                let digest = digest.map_or_else(|e| e.to_string(), |d| d.to_hex().to_string());
                format!("{shown} {} {digest}", metadata.len())
            } else if kind.is_symlink() {
                format!("{shown} -> {:?}", fs::read_link(entry.path()))
            } else {
                format!("{shown} ({kind:?})")
            });
            if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The entries right in `dir`, directories with a trailing `/`, sorted.
fn tree_top(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => format!("{name}/"),
                _ => name,
            }
        })
        .collect();
    found.sort();
    found
}

/// Removes everything in `dir` but `dir` itself, which the server holds open.
fn empty_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
