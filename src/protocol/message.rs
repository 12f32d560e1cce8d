//! Message frames: layout, encoding and decoding.
//!
//! A frame is a big-endian `u32` length, then that many bytes: a one-byte
//! tag and the message's fields. Integers are big-endian; a string is a
//! `u16` byte length and that many bytes of UTF-8. The length counts the tag,
//! must be at least 1 and at most [`MAX_FRAME_LEN`], and is checked before
//! anything is allocated.

use super::error_code::ErrorCode;
use super::request::{
    RequestKind, TAG_DELETE, TAG_GET, TAG_GET_FROM, TAG_GET_TREE, TAG_LIST, TAG_MAKE_DIR, TAG_PUT,
    TAG_PUT_FROM, TAG_PUT_STREAM, TAG_PUT_TREE, TAG_REMOVE_DIR, TAG_RENAME, TAG_STAT,
};
use super::resume::ResumeReason;
use super::steps::{Prefix, MAX_PREFIX_VALUES, STEP};
use super::token::Token;
use super::Digest;

/// Largest frame length accepted or produced (tag and fields, without the
/// 4-byte length prefix). Names are at most 4 KiB, so 16 KiB leaves room for
/// every message, a rename's two names included, while keeping a hostile
/// peer's cost small.
pub const MAX_FRAME_LEN: usize = 16 * 1024;

/// Longest error message sent; longer ones are cut at a character boundary.
const MAX_ERROR_MESSAGE_LEN: usize = 1024;

const TAG_HELLO: u8 = 0x05;
const TAG_TRAILER: u8 = 0x10;
const TAG_TREE_ENTRY: u8 = 0x11;
const TAG_TREE_END: u8 = 0x12;
const TAG_CHUNK: u8 = 0x13;
const TAG_PROCEED: u8 = 0x20;
const TAG_BODY: u8 = 0x21;
const TAG_ENTRY: u8 = 0x22;
const TAG_DONE: u8 = 0x23;
const TAG_WELCOME: u8 = 0x24;
const TAG_INFO: u8 = 0x25;
const TAG_OMITTED: u8 = 0x26;
const TAG_REMOVED: u8 = 0x27;
const TAG_SKIP: u8 = 0x28;
const TAG_CONFLICT: u8 = 0x29;
const TAG_TREE_DONE: u8 = 0x2a;
const TAG_RESUME: u8 = 0x2b;
const TAG_SENDING: u8 = 0x2c;
const TAG_HELD: u8 = 0x2d;
const TAG_ERROR: u8 = 0x7f;

const LIST_FLAG_LONG: u8 = 0x01;
const DELETE_FLAG_RECURSIVE: u8 = 0x01;
const MAKE_DIR_FLAG_PARENTS: u8 = 0x01;
const PUT_FLAG_REPLACE: u8 = 0x01;
const PUT_TREE_FLAG_TOP: u8 = 0x02;
const PUT_TREE_FLAG_RESTART: u8 = 0x04;
const PUT_FROM_FLAG_RESTART: u8 = 0x01;

/// Every message of the protocol, in both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client, once, right after the preambles: who is asking. The server
    /// answers `Welcome`, or `Error` and closes the connection.
    Hello { token: Token },
    /// Client: store `size` bytes under `name`. The server answers
    /// `Proceed` or `Error` before any body byte is sent.
    Put { name: String, size: u64 },
    /// Client: send me the file `name`. Answered by `Body` or `Error`.
    Get { name: String },
    /// Client: list the directory `dir` (empty for the root), or show the
    /// one entry `dir` if it is not a directory. Answered by `Entry` and
    /// `Omitted` frames then `Done`, or by `Error`.
    List { dir: String, long: bool },
    /// Client: remove the file `name`; with `recursive`, a directory and
    /// everything in it. Answered by `Done` (a file) or `Removed`
    /// (recursive), or by `Error`.
    Delete { name: String, recursive: bool },
    /// Client: make the directory `name`; with `parents`, its missing
    /// parents too, and an existing directory is then no error. Answered by
    /// `Done` or `Error`.
    MakeDir { name: String, parents: bool },
    /// Client: remove the empty directory `name`. Answered by `Done` or
    /// `Error`.
    RemoveDir { name: String },
    /// Client: give `from` the name `to`, never replacing anything.
    /// Answered by `Done` or `Error`.
    Rename { from: String, to: String },
    /// Client: describe `name` (empty for the root). Answered by `Info` or
    /// `Error`.
    Stat { name: String },
    /// Client: store a tree of files and directories under the directory
    /// `target` (empty for the root), made if missing. A manifest of
    /// `TreeEntry` frames and a `TreeEnd` follow; the server answers go or
    /// no-go before any body (PROTOCOL.md §5.10). With `replace`, an
    /// existing file of other content is replaced instead of refused. With
    /// `top`, `(mode, modified)`: the permission bits (`0o777` at most)
    /// and time a `target` the tree makes takes once its contents are in;
    /// a directory merged into keeps its own. With `restart`, what the
    /// server kept of an interrupted try at the same new tree is
    /// discarded rather than gone on from.
    PutTree {
        target: String,
        replace: bool,
        top: Option<(u32, i64)>,
        restart: bool,
    },
    /// Client: send me the tree under `source` (a directory, or one
    /// file). Answered by a manifest, then the bodies the client asks for
    /// (§5.11).
    GetTree { source: String },
    /// Client: store a body of unknown length under `name`, sent in
    /// `Chunk`s. Answered like a `Put` (§5.12).
    PutStream { name: String, replace: bool },
    /// Client: store `size` bytes under `name`, going on from a partial
    /// the server kept of an earlier try from the same source, whose
    /// modification time is `modified`; with `restart`, any partial is
    /// discarded. Answered by `Resume` or `Error` (§5.13).
    PutFrom {
        name: String,
        size: u64,
        modified: i64,
        restart: bool,
    },
    /// Client: send me the file `name` from byte `prefix.len` (a whole
    /// number of steps) on; the client holds a partial of those bytes,
    /// vouched for by `prefix`, of the file as it was when it had `size`
    /// bytes and modification time `modified`. Answered by `Sending` or
    /// `Error` (§5.13).
    GetFrom {
        name: String,
        prefix: Prefix,
        size: u64,
        modified: i64,
    },
    /// Either side, in a tree exchange: one file or directory of the tree.
    TreeEntry(TreeEntry),
    /// Either side: the end of a manifest or of a tree's bodies; how many
    /// entries came before it and how many file bytes they hold.
    TreeEnd { entries: u64, bytes: u64 },
    /// Client, in a stream upload: `size` raw bytes follow; 0 ends the
    /// body, and a `Trailer` follows.
    Chunk { size: u32 },
    /// Server, in a tree exchange: the `count` entries from index `first`
    /// are files the server already has with the same content.
    Skip { first: u64, count: u64 },
    /// Server: a name of the tree that is in the way; an `Error` follows
    /// the last one.
    Conflict { name: String },
    /// Server: a tree is done: `files` moved, `skipped` already there with
    /// the same content, `bytes` in the files moved.
    TreeDone {
        files: u64,
        skipped: u64,
        bytes: u64,
    },
    /// Server, answering a `PutFrom`: its partial holds the first
    /// `prefix.len` bytes, vouched for by `prefix`; send the rest, then the
    /// trailer of the whole file.
    Resume {
        prefix: Prefix,
        reason: ResumeReason,
    },
    /// Server, answering a `GetFrom`: the file has `size` bytes and was
    /// modified at `modified`; its bytes from `offset` on follow, then the
    /// trailer of the whole file.
    Sending {
        size: u64,
        modified: i64,
        offset: u64,
        reason: ResumeReason,
    },
    /// In a tree exchange, the receiver of the bodies: it holds a partial
    /// of the file at manifest index `index`, proving `prefix`; the file
    /// is sent from there (PROTOCOL.md §5.10, §5.11).
    Held { index: u64, prefix: Prefix },
    /// Either side, right after a body: the BLAKE3 digest of its bytes.
    Trailer { digest: Digest },
    /// Server: go ahead and send the body of a `Put`.
    Proceed,
    /// Server: `size` raw bytes of the requested file follow, then a `Trailer`.
    Body { size: u64 },
    /// Server: one entry of a listing.
    Entry(Entry),
    /// Server: the request succeeded (a put is stored, a delete done, a
    /// listing complete).
    Done,
    /// Server: the client is welcome; these are the requests it serves.
    Welcome { requests: Vec<RequestKind> },
    /// Server: what a `Stat` asked about.
    Info(Info),
    /// Server, within a listing: `count` names were left out, for `reason`.
    Omitted { reason: OmitReason, count: u64 },
    /// Server: a recursive delete is done; this is what went.
    Removed { files: u64, directories: u64 },
    /// Server: the request failed; the connection stays usable unless the
    /// code says otherwise ([`ErrorCode::ends_connection`]).
    Error { code: ErrorCode, message: String },
}

impl Message {
    /// A short description of the message kind, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "a hello",
            Message::Put { .. } => "a put request",
            Message::Get { .. } => "a get request",
            Message::List { .. } => "a list request",
            Message::Delete { .. } => "a delete request",
            Message::MakeDir { .. } => "a mkdir request",
            Message::RemoveDir { .. } => "an rmdir request",
            Message::Rename { .. } => "a rename request",
            Message::Stat { .. } => "a stat request",
            Message::PutTree { .. } => "a put-tree request",
            Message::GetTree { .. } => "a get-tree request",
            Message::PutStream { .. } => "a put-stream request",
            Message::PutFrom { .. } => "a put-from request",
            Message::GetFrom { .. } => "a get-from request",
            Message::TreeEntry(_) => "a tree entry",
            Message::TreeEnd { .. } => "a tree end",
            Message::Chunk { .. } => "a chunk header",
            Message::Skip { .. } => "a skip note",
            Message::Conflict { .. } => "a conflict note",
            Message::TreeDone { .. } => "a tree-done reply",
            Message::Resume { .. } => "a resume reply",
            Message::Sending { .. } => "a sending reply",
            Message::Held { .. } => "a held-partial note",
            Message::Trailer { .. } => "a trailer",
            Message::Proceed => "a proceed reply",
            Message::Body { .. } => "a body reply",
            Message::Entry(_) => "a listing entry",
            Message::Done => "a done reply",
            Message::Welcome { .. } => "a welcome",
            Message::Info(_) => "an info reply",
            Message::Omitted { .. } => "an omitted-names note",
            Message::Removed { .. } => "a removed reply",
            Message::Error { .. } => "an error reply",
        }
    }

    /// Which request this is, if it is one.
    pub fn request_kind(&self) -> Option<RequestKind> {
        Some(match self {
            Message::Put { .. } => RequestKind::Put,
            Message::Get { .. } => RequestKind::Get,
            Message::List { .. } => RequestKind::List,
            Message::Delete { .. } => RequestKind::Delete,
            Message::MakeDir { .. } => RequestKind::MakeDir,
            Message::RemoveDir { .. } => RequestKind::RemoveDir,
            Message::Rename { .. } => RequestKind::Rename,
            Message::Stat { .. } => RequestKind::Stat,
            Message::PutTree { .. } => RequestKind::PutTree,
            Message::GetTree { .. } => RequestKind::GetTree,
            Message::PutStream { .. } => RequestKind::PutStream,
            Message::PutFrom { .. } => RequestKind::PutFrom,
            Message::GetFrom { .. } => RequestKind::GetFrom,
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
            | Message::Error { .. } => return None,
        })
    }
}

/// One directory entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the entry is.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, in whole seconds since the Unix epoch.
    pub modified: i64,
    /// The entry's name: a single component.
    pub name: String,
}

/// One file or directory of a tree, as a manifest carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// A file or a directory; other kinds are never sent.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Unix permission bits, `0o777` at most (no setuid, setgid, sticky).
    pub mode: u32,
    /// Modification time, in whole seconds since the Unix epoch.
    pub modified: i64,
    /// The file's BLAKE3 digest, where the exchange carries one.
    pub digest: Option<Digest>,
    /// The path below the tree's top, `/`-separated, never empty.
    pub path: String,
}

/// The kind of a listed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    /// A fifo, socket or device: listed, but not transferable.
    Other,
}

/// What the server knows of one name, in answer to `Stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// What it is (a symlink inside the root: what it leads to).
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, in whole seconds since the Unix epoch.
    pub modified: i64,
    /// Unix permission bits (`0o7777` at most).
    pub mode: u32,
    /// Whether the name is a symlink, and where it leads.
    pub link: Link,
    /// The file's BLAKE3 digest, if the server has it at hand.
    pub digest: Option<Digest>,
}

/// Whether a name that `Stat` describes is a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Not a link: the rest of the `Info` describes the name itself.
    None,
    /// A link to something inside the served directory, which the rest of
    /// the `Info` describes.
    Inside,
    /// A link leading outside the served directory, or nowhere: the rest
    /// of the `Info` describes the link itself (kind `Other`).
    Elsewhere,
}

/// Why a listing left names out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OmitReason {
    /// Names no client could ask for: not UTF-8, or breaking the naming
    /// rules (control characters, backslashes).
    UnusableName,
    /// Symlinks that lead outside the served directory, or nowhere.
    LinkOutside,
    /// Entries that disappeared while the directory was being listed.
    Vanished,
    /// In a tree: symlinks and special files, which a tree never carries.
    NotFileOrDirectory,
    /// A reason this build does not know, from a newer server.
    Unknown(u8),
}

impl OmitReason {
    fn to_u8(self) -> u8 {
        match self {
            OmitReason::UnusableName => 0,
            OmitReason::LinkOutside => 1,
            OmitReason::Vanished => 2,
            OmitReason::NotFileOrDirectory => 3,
            OmitReason::Unknown(other) => other,
        }
    }

    fn from_u8(byte: u8) -> OmitReason {
        match byte {
            0 => OmitReason::UnusableName,
            1 => OmitReason::LinkOutside,
            2 => OmitReason::Vanished,
            3 => OmitReason::NotFileOrDirectory,
            other => OmitReason::Unknown(other),
        }
    }
}

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix is 0 or above [`MAX_FRAME_LEN`].
    #[error("frame length {0} is outside 1..={MAX_FRAME_LEN}")]
    FrameLength(u32),
    /// The tag names no message this build knows. The frame was whole, and
    /// took `used` bytes: skipping them keeps the stream in step.
    #[error("unknown message tag 0x{tag:02x}")]
    UnknownTag { tag: u8, used: usize },
    /// The frame ends before its fields do.
    #[error("frame is shorter than its fields")]
    Truncated,
    /// The frame has bytes after its last field.
    #[error("frame has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A string is not UTF-8.
    #[error("a string field is not valid UTF-8")]
    InvalidUtf8,
    /// An enumerated field or flag byte has a value with no meaning.
    #[error("field value 0x{0:02x} is not valid")]
    InvalidValue(u8),
    /// A tree entry's mode has bits beyond `0o777`.
    #[error("mode {0:#o} has bits beyond 0o777")]
    InvalidMode(u32),
    /// A resume offset is not a whole number of steps.
    #[error("offset {0} is not a whole number of {STEP}-byte steps")]
    UnalignedOffset(u64),
    /// A prefix does not have one chaining value per set bit of its steps.
    #[error("a prefix of {len} bytes cannot have {values} chaining values")]
    MalformedPrefix { len: u64, values: u8 },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message would take {0} bytes, more than the frame limit of {MAX_FRAME_LEN}")]
pub struct EncodeTooLarge(pub usize);

/// Appends `message` as one frame to `out`.
///
/// Fails only for names too long for a frame; names that passed
/// [`RemoteName::parse`](super::RemoteName::parse) always fit.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeTooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match message {
        Message::Put { name, size } => {
            out.push(TAG_PUT);
            out.extend_from_slice(&size.to_be_bytes());
            put_str(out, name);
        }
        Message::Get { name } => {
            out.push(TAG_GET);
            put_str(out, name);
        }
        Message::List { dir, long } => {
            out.push(TAG_LIST);
            out.push(flag(*long, LIST_FLAG_LONG));
            put_str(out, dir);
        }
        Message::Delete { name, recursive } => {
            out.push(TAG_DELETE);
            out.push(flag(*recursive, DELETE_FLAG_RECURSIVE));
            put_str(out, name);
        }
        Message::MakeDir { name, parents } => {
            out.push(TAG_MAKE_DIR);
            out.push(flag(*parents, MAKE_DIR_FLAG_PARENTS));
            put_str(out, name);
        }
        Message::RemoveDir { name } => {
            out.push(TAG_REMOVE_DIR);
            put_str(out, name);
        }
        Message::Rename { from, to } => {
            out.push(TAG_RENAME);
            put_str(out, from);
            put_str(out, to);
        }
        Message::Stat { name } => {
            out.push(TAG_STAT);
            put_str(out, name);
        }
        Message::PutTree {
            target,
            replace,
            top,
            restart,
        } => {
            out.push(TAG_PUT_TREE);
            out.push(
                flag(*replace, PUT_FLAG_REPLACE)
                    | flag(top.is_some(), PUT_TREE_FLAG_TOP)
                    | flag(*restart, PUT_TREE_FLAG_RESTART),
            );
            if let Some((mode, modified)) = top {
                out.extend_from_slice(&mode.to_be_bytes());
                out.extend_from_slice(&modified.to_be_bytes());
            }
            put_str(out, target);
        }
        Message::GetTree { source } => {
            out.push(TAG_GET_TREE);
            out.push(0);
            put_str(out, source);
        }
        Message::PutStream { name, replace } => {
            out.push(TAG_PUT_STREAM);
            out.push(flag(*replace, PUT_FLAG_REPLACE));
            put_str(out, name);
        }
        Message::PutFrom {
            name,
            size,
            modified,
            restart,
        } => {
            out.push(TAG_PUT_FROM);
            out.push(flag(*restart, PUT_FROM_FLAG_RESTART));
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&modified.to_be_bytes());
            put_str(out, name);
        }
        Message::GetFrom {
            name,
            prefix,
            size,
            modified,
        } => {
            out.push(TAG_GET_FROM);
            put_prefix(out, prefix);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&modified.to_be_bytes());
            put_str(out, name);
        }
        Message::TreeEntry(entry) => {
            out.push(TAG_TREE_ENTRY);
            out.push(kind_to_u8(entry.kind));
            out.extend_from_slice(&entry.size.to_be_bytes());
            out.extend_from_slice(&entry.mode.to_be_bytes());
            out.extend_from_slice(&entry.modified.to_be_bytes());
            put_digest(out, entry.digest.as_ref());
            put_str(out, &entry.path);
        }
        Message::TreeEnd { entries, bytes } => {
            out.push(TAG_TREE_END);
            out.extend_from_slice(&entries.to_be_bytes());
            out.extend_from_slice(&bytes.to_be_bytes());
        }
        Message::Chunk { size } => {
            out.push(TAG_CHUNK);
            out.extend_from_slice(&size.to_be_bytes());
        }
        Message::Skip { first, count } => {
            out.push(TAG_SKIP);
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        Message::Conflict { name } => {
            out.push(TAG_CONFLICT);
            put_str(out, name);
        }
        Message::TreeDone {
            files,
            skipped,
            bytes,
        } => {
            out.push(TAG_TREE_DONE);
            out.extend_from_slice(&files.to_be_bytes());
            out.extend_from_slice(&skipped.to_be_bytes());
            out.extend_from_slice(&bytes.to_be_bytes());
        }
        Message::Resume { prefix, reason } => {
            out.push(TAG_RESUME);
            out.push(reason.to_u8());
            put_prefix(out, prefix);
        }
        Message::Sending {
            size,
            modified,
            offset,
            reason,
        } => {
            out.push(TAG_SENDING);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&modified.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
            out.push(reason.to_u8());
        }
        Message::Held { index, prefix } => {
            out.push(TAG_HELD);
            out.extend_from_slice(&index.to_be_bytes());
            put_prefix(out, prefix);
        }
        Message::Hello { token } => {
            out.push(TAG_HELLO);
            put_str(out, token.expose());
        }
        Message::Trailer { digest } => {
            out.push(TAG_TRAILER);
            out.extend_from_slice(digest);
        }
        Message::Proceed => out.push(TAG_PROCEED),
        Message::Body { size } => {
            out.push(TAG_BODY);
            out.extend_from_slice(&size.to_be_bytes());
        }
        Message::Entry(entry) => {
            out.push(TAG_ENTRY);
            out.push(kind_to_u8(entry.kind));
            out.extend_from_slice(&entry.size.to_be_bytes());
            out.extend_from_slice(&entry.modified.to_be_bytes());
            put_str(out, &entry.name);
        }
        Message::Done => out.push(TAG_DONE),
        Message::Welcome { requests } => {
            out.push(TAG_WELCOME);
            // At most a few dozen kinds exist; the frame limit catches more.
            out.push(u8::try_from(requests.len()).unwrap_or(u8::MAX));
            out.extend(requests.iter().map(|kind| kind.tag()));
        }
        Message::Info(info) => {
            out.push(TAG_INFO);
            out.push(kind_to_u8(info.kind));
            out.extend_from_slice(&info.size.to_be_bytes());
            out.extend_from_slice(&info.modified.to_be_bytes());
            out.extend_from_slice(&info.mode.to_be_bytes());
            out.push(match info.link {
                Link::None => 0,
                Link::Inside => 1,
                Link::Elsewhere => 2,
            });
            put_digest(out, info.digest.as_ref());
        }
        Message::Omitted { reason, count } => {
            out.push(TAG_OMITTED);
            out.push(reason.to_u8());
            out.extend_from_slice(&count.to_be_bytes());
        }
        Message::Removed { files, directories } => {
            out.push(TAG_REMOVED);
            out.extend_from_slice(&files.to_be_bytes());
            out.extend_from_slice(&directories.to_be_bytes());
        }
        Message::Error { code, message } => {
            out.push(TAG_ERROR);
            out.extend_from_slice(&code.to_u16().to_be_bytes());
            put_str(out, truncate_at_char(message, MAX_ERROR_MESSAGE_LEN));
        }
    }
    let frame_len = out.len() - start - 4;
    if frame_len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeTooLarge(frame_len));
    }
    // Cannot truncate: frame_len <= MAX_FRAME_LEN, far below u32::MAX.
    let prefix = (frame_len as u32).to_be_bytes();
    for (slot, byte) in out.iter_mut().skip(start).zip(prefix) {
        *slot = byte;
    }
    Ok(())
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, and otherwise
/// the message with the number of bytes it took. A bad length prefix is an
/// error as soon as its 4 bytes are in, so an oversized frame is never
/// buffered.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes(*prefix);
    let frame_len = declared as usize;
    if frame_len == 0 || frame_len > MAX_FRAME_LEN {
        return Err(DecodeError::FrameLength(declared));
    }
    let Some(frame) = buf.get(4..4 + frame_len) else {
        return Ok(None);
    };
    let mut fields = Fields(frame);
    let message = match fields.u8()? {
        TAG_PUT => {
            let size = fields.u64()?;
            Message::Put {
                name: fields.string()?,
                size,
            }
        }
        TAG_HELLO => Message::Hello {
            token: Token::new(fields.string()?),
        },
        TAG_GET => Message::Get {
            name: fields.string()?,
        },
        TAG_LIST => {
            let long = fields.flag(LIST_FLAG_LONG)?;
            Message::List {
                dir: fields.string()?,
                long,
            }
        }
        TAG_DELETE => {
            let recursive = fields.flag(DELETE_FLAG_RECURSIVE)?;
            Message::Delete {
                name: fields.string()?,
                recursive,
            }
        }
        TAG_MAKE_DIR => {
            let parents = fields.flag(MAKE_DIR_FLAG_PARENTS)?;
            Message::MakeDir {
                name: fields.string()?,
                parents,
            }
        }
        TAG_REMOVE_DIR => Message::RemoveDir {
            name: fields.string()?,
        },
        TAG_RENAME => {
            let from = fields.string()?;
            Message::Rename {
                from,
                to: fields.string()?,
            }
        }
        TAG_STAT => Message::Stat {
            name: fields.string()?,
        },
        TAG_PUT_TREE => {
            // Three flags, in any combination.
            let flags = fields.u8()?;
            if flags & !(PUT_FLAG_REPLACE | PUT_TREE_FLAG_TOP | PUT_TREE_FLAG_RESTART) != 0 {
                return Err(DecodeError::InvalidValue(flags));
            }
            let top = if flags & PUT_TREE_FLAG_TOP != 0 {
                let mode = u32::from_be_bytes(fields.array()?);
                if mode > 0o777 {
                    return Err(DecodeError::InvalidMode(mode));
                }
                Some((mode, i64::from_be_bytes(fields.array()?)))
            } else {
                None
            };
            Message::PutTree {
                target: fields.string()?,
                replace: flags & PUT_FLAG_REPLACE != 0,
                top,
                restart: flags & PUT_TREE_FLAG_RESTART != 0,
            }
        }
        TAG_GET_TREE => {
            // No flag is defined yet: only 0 is valid.
            fields.flag(0)?;
            Message::GetTree {
                source: fields.string()?,
            }
        }
        TAG_PUT_STREAM => {
            let replace = fields.flag(PUT_FLAG_REPLACE)?;
            Message::PutStream {
                name: fields.string()?,
                replace,
            }
        }
        TAG_PUT_FROM => {
            let restart = fields.flag(PUT_FROM_FLAG_RESTART)?;
            let size = fields.u64()?;
            let modified = fields.i64()?;
            Message::PutFrom {
                name: fields.string()?,
                size,
                modified,
                restart,
            }
        }
        TAG_GET_FROM => {
            let prefix = fields.prefix()?;
            let size = fields.u64()?;
            let modified = fields.i64()?;
            Message::GetFrom {
                name: fields.string()?,
                prefix,
                size,
                modified,
            }
        }
        TAG_TREE_ENTRY => {
            let kind = match fields.kind()? {
                EntryKind::Other => return Err(DecodeError::InvalidValue(2)),
                kind => kind,
            };
            let size = fields.u64()?;
            let mode = u32::from_be_bytes(fields.array()?);
            if mode > 0o777 {
                return Err(DecodeError::InvalidMode(mode));
            }
            let modified = i64::from_be_bytes(fields.array()?);
            let digest = fields.digest()?;
            Message::TreeEntry(TreeEntry {
                kind,
                size,
                mode,
                modified,
                digest,
                path: fields.string()?,
            })
        }
        TAG_TREE_END => {
            let entries = fields.u64()?;
            Message::TreeEnd {
                entries,
                bytes: fields.u64()?,
            }
        }
        TAG_CHUNK => Message::Chunk {
            size: u32::from_be_bytes(fields.array()?),
        },
        TAG_SKIP => {
            let first = fields.u64()?;
            Message::Skip {
                first,
                count: fields.u64()?,
            }
        }
        TAG_CONFLICT => Message::Conflict {
            name: fields.string()?,
        },
        TAG_TREE_DONE => {
            let files = fields.u64()?;
            let skipped = fields.u64()?;
            Message::TreeDone {
                files,
                skipped,
                bytes: fields.u64()?,
            }
        }
        TAG_RESUME => {
            let reason = ResumeReason::from_u8(fields.u8()?);
            Message::Resume {
                prefix: fields.prefix()?,
                reason,
            }
        }
        TAG_SENDING => {
            let size = fields.u64()?;
            let modified = fields.i64()?;
            let offset = fields.step_offset()?;
            Message::Sending {
                size,
                modified,
                offset,
                reason: ResumeReason::from_u8(fields.u8()?),
            }
        }
        TAG_HELD => {
            let index = fields.u64()?;
            Message::Held {
                index,
                prefix: fields.prefix()?,
            }
        }
        TAG_TRAILER => Message::Trailer {
            digest: fields.array()?,
        },
        TAG_PROCEED => Message::Proceed,
        TAG_BODY => Message::Body {
            size: fields.u64()?,
        },
        TAG_ENTRY => {
            let kind = fields.kind()?;
            let size = fields.u64()?;
            let modified = i64::from_be_bytes(fields.array()?);
            Message::Entry(Entry {
                kind,
                size,
                modified,
                name: fields.string()?,
            })
        }
        TAG_DONE => Message::Done,
        TAG_WELCOME => {
            let count = fields.u8()?;
            let tags = fields.take(usize::from(count))?;
            // A kind this build does not know is one it will not ask for.
            let requests = tags.iter().filter_map(|&tag| RequestKind::from_tag(tag));
            Message::Welcome {
                requests: requests.collect(),
            }
        }
        TAG_INFO => {
            let kind = fields.kind()?;
            let size = fields.u64()?;
            let modified = i64::from_be_bytes(fields.array()?);
            let mode = u32::from_be_bytes(fields.array()?);
            let link = match fields.u8()? {
                0 => Link::None,
                1 => Link::Inside,
                2 => Link::Elsewhere,
                other => return Err(DecodeError::InvalidValue(other)),
            };
            let digest = fields.digest()?;
            Message::Info(Info {
                kind,
                size,
                modified,
                mode,
                link,
                digest,
            })
        }
        TAG_OMITTED => {
            let reason = OmitReason::from_u8(fields.u8()?);
            Message::Omitted {
                reason,
                count: fields.u64()?,
            }
        }
        TAG_REMOVED => {
            let files = fields.u64()?;
            Message::Removed {
                files,
                directories: fields.u64()?,
            }
        }
        TAG_ERROR => {
            let code = ErrorCode::from_u16(u16::from_be_bytes(fields.array()?));
            Message::Error {
                code,
                message: fields.string()?,
            }
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                tag,
                used: 4 + frame_len,
            })
        }
    };
    if !fields.0.is_empty() {
        return Err(DecodeError::TrailingBytes(fields.0.len()));
    }
    Ok(Some((message, 4 + frame_len)))
}

fn flag(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

fn kind_to_u8(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::File => 0,
        EntryKind::Directory => 1,
        EntryKind::Other => 2,
    }
}

/// A `has_digest` byte, then the digest when there is one.
fn put_digest(out: &mut Vec<u8>, digest: Option<&Digest>) {
    match digest {
        Some(digest) => {
            out.push(1);
            out.extend_from_slice(digest);
        }
        None => out.push(0),
    }
}

/// A prefix's length, the count of its chaining values, and them. A
/// well-formed prefix has at most 64 values; the decoder refuses any
/// other shape.
fn put_prefix(out: &mut Vec<u8>, prefix: &Prefix) {
    out.extend_from_slice(&prefix.len.to_be_bytes());
    let count = u8::try_from(prefix.values.len()).unwrap_or(u8::MAX);
    out.push(count);
    for value in prefix.values.iter().take(usize::from(count)) {
        out.extend_from_slice(value);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // A string longer than u16::MAX is cut here and then rejected by the
    // frame-length check in `encode`, since such a frame exceeds the limit.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    let bytes = s.as_bytes();
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A cursor over a frame's fields.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// An offset a resume starts at: a whole number of steps.
    /// A prefix: its length, the count of its chaining values, and
    /// them; malformed unless it has the shape its length calls for.
    fn prefix(&mut self) -> Result<Prefix, DecodeError> {
        let len = self.u64()?;
        let count = self.u8()?;
        let malformed = DecodeError::MalformedPrefix { len, values: count };
        if usize::from(count) > MAX_PREFIX_VALUES {
            return Err(malformed);
        }
        let values = (0..count).map(|_| self.array());
        let prefix = Prefix {
            len,
            values: values.collect::<Result<_, _>>()?,
        };
        if !prefix.is_well_formed(STEP) {
            return Err(malformed);
        }
        Ok(prefix)
    }

    fn step_offset(&mut self) -> Result<u64, DecodeError> {
        let offset = self.u64()?;
        if offset % STEP != 0 {
            return Err(DecodeError::UnalignedOffset(offset));
        }
        Ok(offset)
    }

    /// A flag byte that may be 0 or `bit`; anything else is malformed.
    fn flag(&mut self, bit: u8) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            byte if byte == bit => Ok(true),
            other => Err(DecodeError::InvalidValue(other)),
        }
    }

    /// A `has_digest` byte (0 or 1), then the digest when it is 1.
    fn digest(&mut self) -> Result<Option<Digest>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.array()?)),
            other => Err(DecodeError::InvalidValue(other)),
        }
    }

    fn kind(&mut self) -> Result<EntryKind, DecodeError> {
        match self.u8()? {
            0 => Ok(EntryKind::File),
            1 => Ok(EntryKind::Directory),
            2 => Ok(EntryKind::Other),
            other => Err(DecodeError::InvalidValue(other)),
        }
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = u16::from_be_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ChainingValue;
    use proptest::prelude::*;

    fn encoded(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, &mut out).unwrap();
        out
    }

    #[test]
    fn put_wire_format() {
        let bytes = encoded(&Message::Put {
            name: "a/b".into(),
            size: 258,
        });
        #[rustfmt::skip]
        let expected = [
            0x00, 0x00, 0x00, 0x0e,                         // frame length 14
            0x01,                                           // tag: Put
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, // size 258
            0x00, 0x03, b'a', b'/', b'b',                   // name "a/b"
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn error_wire_format() {
        let bytes = encoded(&Message::Error {
            code: ErrorCode::NotFound,
            message: "gone".into(),
        });
        #[rustfmt::skip]
        let expected = [
            0x00, 0x00, 0x00, 0x09,       // frame length 9
            0x7f,                         // tag: Error
            0x00, 0x04,                   // code 4: not-found
            0x00, 0x04, b'g', b'o', b'n', b'e',
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn list_and_entry_wire_format() {
        assert_eq!(
            encoded(&Message::List {
                dir: String::new(),
                long: true
            }),
            [0, 0, 0, 4, 0x03, 0x01, 0x00, 0x00]
        );
        let entry = Entry {
            kind: EntryKind::Directory,
            size: 0,
            modified: -1,
            name: "d".into(),
        };
        #[rustfmt::skip]
        let expected = [
            0x00, 0x00, 0x00, 0x15, // frame length 21
            0x22, 0x01,             // tag: Entry, kind: directory
            0, 0, 0, 0, 0, 0, 0, 0, // size 0
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // modified -1
            0x00, 0x01, b'd',
        ];
        assert_eq!(encoded(&Message::Entry(entry)), expected);
    }

    #[test]
    fn directory_request_wire_formats() {
        assert_eq!(
            encoded(&Message::Delete {
                name: "d".into(),
                recursive: true
            }),
            [0, 0, 0, 5, 0x04, 0x01, 0x00, 0x01, b'd']
        );
        assert_eq!(
            encoded(&Message::MakeDir {
                name: "d".into(),
                parents: true
            }),
            [0, 0, 0, 5, 0x06, 0x01, 0x00, 0x01, b'd']
        );
        assert_eq!(
            encoded(&Message::RemoveDir { name: "d".into() }),
            [0, 0, 0, 4, 0x07, 0x00, 0x01, b'd']
        );
        #[rustfmt::skip]
        let rename = [
            0x00, 0x00, 0x00, 0x08, // frame length 8
            0x08,                   // tag: Rename
            0x00, 0x01, b'a',       // from "a"
            0x00, 0x02, b'b', b'c', // to "bc"
        ];
        assert_eq!(
            encoded(&Message::Rename {
                from: "a".into(),
                to: "bc".into()
            }),
            rename
        );
        assert_eq!(
            encoded(&Message::Stat {
                name: String::new()
            }),
            [0, 0, 0, 3, 0x09, 0x00, 0x00]
        );
    }

    #[test]
    fn reply_wire_formats() {
        assert_eq!(
            encoded(&Message::Welcome {
                requests: vec![RequestKind::Put, RequestKind::Stat]
            }),
            [0, 0, 0, 4, 0x24, 0x02, 0x01, 0x09]
        );
        #[rustfmt::skip]
        let info = [
            0x00, 0x00, 0x00, 0x18, // frame length 24
            0x25, 0x00,             // tag: Info, kind: file
            0, 0, 0, 0, 0, 0, 0, 5, // size 5
            0, 0, 0, 0, 0, 0, 0, 7, // modified 7
            0x00, 0x00, 0x01, 0xa4, // mode 0o644
            0x01,                   // a link to it, inside the root
            0x00,                   // no digest
        ];
        assert_eq!(
            encoded(&Message::Info(Info {
                kind: EntryKind::File,
                size: 5,
                modified: 7,
                mode: 0o644,
                link: Link::Inside,
                digest: None,
            })),
            info
        );
        assert_eq!(
            encoded(&Message::Omitted {
                reason: OmitReason::LinkOutside,
                count: 3
            }),
            [0, 0, 0, 10, 0x26, 0x01, 0, 0, 0, 0, 0, 0, 0, 3]
        );
        assert_eq!(
            encoded(&Message::Removed {
                files: 2,
                directories: 1
            }),
            [0, 0, 0, 17, 0x27, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn tree_wire_formats() {
        #[rustfmt::skip]
        let entry = [
            0x00, 0x00, 0x00, 0x1c, // frame length 28
            0x11, 0x00,             // tag: TreeEntry, kind: file
            0, 0, 0, 0, 0, 0, 0, 5, // size 5
            0x00, 0x00, 0x01, 0xed, // mode 0o755
            0, 0, 0, 0, 0, 0, 0, 7, // modified 7
            0x00,                   // no digest
            0x00, 0x03, b'a', b'/', b'b', // path "a/b"
        ];
        assert_eq!(
            encoded(&Message::TreeEntry(TreeEntry {
                kind: EntryKind::File,
                size: 5,
                mode: 0o755,
                modified: 7,
                digest: None,
                path: "a/b".into(),
            })),
            entry
        );
        assert_eq!(
            encoded(&Message::PutTree {
                target: "t".into(),
                replace: true,
                top: None,
                restart: false,
            }),
            [0, 0, 0, 5, 0x0a, 0x01, 0x00, 0x01, b't']
        );
        assert_eq!(
            encoded(&Message::PutTree {
                target: "t".into(),
                replace: false,
                top: None,
                restart: true,
            }),
            [0, 0, 0, 5, 0x0a, 0x04, 0x00, 0x01, b't']
        );
        #[rustfmt::skip]
        let put_tree_top = [
            0x00, 0x00, 0x00, 0x11, // frame length 17
            0x0a, 0x03,             // tag: PutTree, flags: replace | top
            0x00, 0x00, 0x01, 0xe8, // mode 0o750
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf9, // modified -7
            0x00, 0x01, b't',       // target "t"
        ];
        assert_eq!(
            encoded(&Message::PutTree {
                target: "t".into(),
                replace: true,
                top: Some((0o750, -7)),
                restart: false,
            }),
            put_tree_top
        );
        assert_eq!(
            decode(&put_tree_top[..]),
            Ok(Some((
                Message::PutTree {
                    target: "t".into(),
                    replace: true,
                    top: Some((0o750, -7)),
                    restart: false,
                },
                put_tree_top.len()
            )))
        );
        assert_eq!(
            encoded(&Message::GetTree { source: "".into() }),
            [0, 0, 0, 4, 0x0b, 0x00, 0x00, 0x00]
        );
        assert_eq!(
            encoded(&Message::Chunk { size: 2 }),
            [0, 0, 0, 5, 0x13, 0, 0, 0, 2]
        );
        let mut skip = vec![0, 0, 0, 17, 0x28];
        skip.extend_from_slice(&3u64.to_be_bytes());
        skip.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(encoded(&Message::Skip { first: 3, count: 2 }), skip);
    }

    #[test]
    fn resume_wire_formats() {
        #[rustfmt::skip]
        let put_from = [
            0x00, 0x00, 0x00, 0x15, // frame length 21
            0x0d, 0x01,             // tag: PutFrom, flags: restart
            0, 0, 0, 0, 0, 0, 0, 5, // size 5
            0, 0, 0, 0, 0, 0, 0, 7, // modified 7
            0x00, 0x01, b'a',       // name "a"
        ];
        assert_eq!(
            encoded(&Message::PutFrom {
                name: "a".into(),
                size: 5,
                modified: 7,
                restart: true,
            }),
            put_from
        );
        #[rustfmt::skip]
        let get_from_head = [
            0x00, 0x00, 0x00, 0x3d,       // frame length 61
            0x0e,                         // tag: GetFrom
            0, 0, 0, 0, 0x04, 0, 0, 0,    // offset 64 MiB
            0x01,                         // one chaining value
        ];
        #[rustfmt::skip]
        let get_from_tail = [
            0, 0, 0, 0, 0x04, 0, 0, 0x01, // size 64 MiB + 1
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // modified -1
            0x00, 0x01, b'a',             // name "a"
        ];
        let mut get_from = get_from_head.to_vec();
        get_from.extend([3; 32]);
        get_from.extend(get_from_tail);
        assert_eq!(
            encoded(&Message::GetFrom {
                name: "a".into(),
                prefix: Prefix {
                    len: STEP,
                    values: vec![[3; 32]],
                },
                size: STEP + 1,
                modified: -1,
            }),
            get_from
        );
        #[rustfmt::skip]
        let resume = [
            0x00, 0x00, 0x00, 0x4b,       // frame length 75
            0x2b,                         // tag: Resume
            0x01,                         // reason: resumed
            0, 0, 0, 0, 0x0c, 0, 0, 0,    // offset 3 steps
            0x02,                         // two chaining values
        ];
        let mut with_values = resume.to_vec();
        with_values.extend([1; 32]);
        with_values.extend([2; 32]);
        assert_eq!(
            encoded(&Message::Resume {
                prefix: Prefix {
                    len: 3 * STEP,
                    values: vec![[1; 32], [2; 32]],
                },
                reason: ResumeReason::Resumed,
            }),
            with_values
        );
        #[rustfmt::skip]
        let sending = [
            0x00, 0x00, 0x00, 0x1a, // frame length 26
            0x2c,                   // tag: Sending
            0, 0, 0, 0, 0, 0, 0, 9, // size 9
            0, 0, 0, 0, 0, 0, 0, 7, // modified 7
            0, 0, 0, 0, 0, 0, 0, 0, // offset 0
            0x03,                   // reason: the source changed
        ];
        assert_eq!(
            encoded(&Message::Sending {
                size: 9,
                modified: 7,
                offset: 0,
                reason: ResumeReason::SourceChanged,
            }),
            sending
        );
        let value = [0xab; 32];
        #[rustfmt::skip]
        let mut held = vec![
            0x00, 0x00, 0x00, 0x32, // frame length 50
            0x2d, // tag: Held
            0, 0, 0, 0, 0, 0, 0, 3, // index 3
            0, 0, 0, 0, 4, 0, 0, 0, // offset 2^26: one step
            0x01, // one chaining value
        ];
        held.extend_from_slice(&value);
        let message = Message::Held {
            index: 3,
            prefix: Prefix {
                len: STEP,
                values: vec![value],
            },
        };
        assert_eq!(encoded(&message), held);
        assert_eq!(decode(&held), Ok(Some((message, held.len()))));
    }

    #[test]
    fn resumes_from_no_whole_step_or_of_the_wrong_shape_are_malformed() {
        let resume = |len, values: Vec<ChainingValue>| {
            encoded(&Message::Resume {
                prefix: Prefix { len, values },
                reason: ResumeReason::New,
            })
        };
        let cases = [
            (resume(STEP + 1, vec![[0; 32]]), STEP + 1, 1),
            (resume(3 * STEP, vec![[0; 32]]), 3 * STEP, 1),
            (resume(0, vec![[0; 32]]), 0, 1),
            (resume(STEP, vec![]), STEP, 0),
            (resume(u64::MAX, vec![[0; 32]; 65]), u64::MAX, 65),
        ];
        for (bytes, len, values) in cases {
            assert_eq!(
                decode(&bytes),
                Err(DecodeError::MalformedPrefix { len, values }),
                "{len} bytes, {values} values"
            );
        }
        let get_from = encoded(&Message::GetFrom {
            name: "a".into(),
            prefix: Prefix {
                len: STEP / 2,
                values: vec![],
            },
            size: STEP,
            modified: 0,
        });
        assert_eq!(
            decode(&get_from),
            Err(DecodeError::MalformedPrefix {
                len: STEP / 2,
                values: 0
            })
        );
        let sending = encoded(&Message::Sending {
            size: STEP,
            modified: 0,
            offset: 1,
            reason: ResumeReason::Resumed,
        });
        assert_eq!(decode(&sending), Err(DecodeError::UnalignedOffset(1)));
        let mut put_from = encoded(&Message::PutFrom {
            name: "a".into(),
            size: 0,
            modified: 0,
            restart: false,
        });
        put_from[5] = 0x02;
        assert_eq!(decode(&put_from), Err(DecodeError::InvalidValue(2)));
    }

    #[test]
    fn tree_entries_of_other_kinds_or_wider_modes_are_malformed() {
        let mut other = encoded(&Message::TreeEntry(TreeEntry {
            kind: EntryKind::File,
            size: 0,
            mode: 0o644,
            modified: 0,
            digest: None,
            path: "x".into(),
        }));
        let mut setuid = other.clone();
        other[5] = 2;
        assert_eq!(decode(&other), Err(DecodeError::InvalidValue(2)));
        setuid[16] = 0x09; // mode 0o4644: setuid
        assert_eq!(decode(&setuid), Err(DecodeError::InvalidMode(0o4644)));
        let mut get_tree = encoded(&Message::GetTree { source: "".into() });
        get_tree[5] = 1;
        assert_eq!(decode(&get_tree), Err(DecodeError::InvalidValue(1)));
    }

    #[test]
    fn put_tree_flags_beyond_replace_top_and_restart_and_top_modes_beyond_0o777_are_malformed() {
        let plain = encoded(&Message::PutTree {
            target: "t".into(),
            replace: false,
            top: None,
            restart: false,
        });
        for flags in [0x08, 0x0d, 0x80, 0xff] {
            let mut bad = plain.clone();
            bad[5] = flags;
            assert_eq!(decode(&bad), Err(DecodeError::InvalidValue(flags)));
        }
        let mut setgid = encoded(&Message::PutTree {
            target: "t".into(),
            replace: false,
            top: Some((0o755, 0)),
            restart: false,
        });
        setgid[8] = 0x05; // mode 0o2755: setgid
        assert_eq!(decode(&setgid), Err(DecodeError::InvalidMode(0o2755)));
        // The top flag without its fields: the frame is too short for them.
        let mut short = plain;
        short[5] = 0x02;
        assert_eq!(decode(&short), Err(DecodeError::Truncated));
    }

    #[test]
    fn a_welcome_naming_unknown_requests_keeps_the_known_ones() {
        let bytes = [0, 0, 0, 5, 0x24, 0x03, 0x01, 0x3a, 0x02];
        assert_eq!(
            decode(&bytes),
            Ok(Some((
                Message::Welcome {
                    requests: vec![RequestKind::Put, RequestKind::Get]
                },
                bytes.len()
            )))
        );
    }

    #[test]
    fn hello_wire_format() {
        let hello = Message::Hello {
            token: Token::new("tok".into()),
        };
        assert_eq!(
            encoded(&hello),
            [0, 0, 0, 6, 0x05, 0x00, 0x03, b't', b'o', b'k']
        );
        let anonymous = Message::Hello {
            token: Token::default(),
        };
        assert_eq!(encoded(&anonymous), [0, 0, 0, 3, 0x05, 0x00, 0x00]);
    }

    #[test]
    fn oversized_length_is_refused_before_the_frame_arrives() {
        let prefix = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert_eq!(
            decode(&prefix),
            Err(DecodeError::FrameLength(MAX_FRAME_LEN as u32 + 1))
        );
        assert_eq!(
            decode(&u32::MAX.to_be_bytes()),
            Err(DecodeError::FrameLength(u32::MAX))
        );
        assert_eq!(decode(&[0, 0, 0, 0]), Err(DecodeError::FrameLength(0)));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: &[(&[u8], DecodeError)] = &[
            (
                &[0, 0, 0, 1, 0x55],
                DecodeError::UnknownTag { tag: 0x55, used: 5 },
            ),
            (
                &[0, 0, 0, 3, 0x3a, 0x00, 0x00, 0xff],
                DecodeError::UnknownTag { tag: 0x3a, used: 7 },
            ),
            (&[0, 0, 0, 2, 0x20, 0x00], DecodeError::TrailingBytes(1)),
            (&[0, 0, 0, 3, 0x02, 0x00, 0x05], DecodeError::Truncated),
            (
                &[0, 0, 0, 5, 0x02, 0x00, 0x02, 0xc3, 0x28],
                DecodeError::InvalidUtf8,
            ),
            (
                &[0, 0, 0, 4, 0x03, 0x02, 0x00, 0x00],
                DecodeError::InvalidValue(2),
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(decode(bytes).as_ref(), Err(error), "{bytes:02x?}");
        }
    }

    #[test]
    fn long_error_messages_are_cut_at_a_char_boundary() {
        let message = "é".repeat(MAX_ERROR_MESSAGE_LEN);
        let bytes = encoded(&Message::Error {
            code: ErrorCode::Io,
            message,
        });
        let Some((Message::Error { message, .. }, _)) = decode(&bytes).unwrap() else {
            panic!("not an error frame");
        };
        assert_eq!(message.len(), MAX_ERROR_MESSAGE_LEN);
    }

    #[test]
    fn names_too_long_for_a_frame_are_not_encoded() {
        let mut out = vec![7];
        let name = "n".repeat(MAX_FRAME_LEN);
        assert!(encode(&Message::Get { name }, &mut out).is_err());
        assert_eq!(out, [7], "a refused message leaves the buffer as it was");
    }

    /// A well-formed prefix of any length: a value per set bit of its steps.
    fn any_prefix() -> impl Strategy<Value = Prefix> {
        (0..=u64::MAX / STEP).prop_flat_map(|steps| {
            let count = steps.count_ones() as usize;
            proptest::collection::vec(any::<ChainingValue>(), count).prop_map(move |values| {
                Prefix {
                    len: steps * STEP,
                    values,
                }
            })
        })
    }

    fn any_message() -> impl Strategy<Value = Message> {
        let name = "\\PC{0,64}";
        prop_oneof![
            (name, any::<u64>()).prop_map(|(name, size)| Message::Put { name, size }),
            name.prop_map(|name| Message::Get { name }),
            (name, any::<bool>()).prop_map(|(dir, long)| Message::List { dir, long }),
            (name, any::<bool>()).prop_map(|(name, recursive)| Message::Delete { name, recursive }),
            (name, any::<bool>()).prop_map(|(name, parents)| Message::MakeDir { name, parents }),
            name.prop_map(|name| Message::RemoveDir { name }),
            (name, name).prop_map(|(from, to)| Message::Rename { from, to }),
            name.prop_map(|name| Message::Stat { name }),
            (
                name,
                any::<bool>(),
                proptest::option::of((0..=0o777u32, any::<i64>())),
                any::<bool>(),
            )
                .prop_map(|(target, replace, top, restart)| Message::PutTree {
                    target,
                    restart,
                    replace,
                    top
                }),
            name.prop_map(|source| Message::GetTree { source }),
            (name, any::<bool>()).prop_map(|(name, replace)| Message::PutStream { name, replace }),
            (name, any::<u64>(), any::<i64>(), any::<bool>()).prop_map(
                |(name, size, modified, restart)| Message::PutFrom {
                    name,
                    size,
                    modified,
                    restart
                }
            ),
            (name, any_prefix(), any::<u64>(), any::<i64>()).prop_map(
                |(name, prefix, size, modified)| Message::GetFrom {
                    name,
                    prefix,
                    size,
                    modified
                }
            ),
            (any_prefix(), any::<u8>()).prop_map(|(prefix, reason)| Message::Resume {
                prefix,
                reason: ResumeReason::from_u8(reason)
            }),
            (any::<u64>(), any_prefix())
                .prop_map(|(index, prefix)| Message::Held { index, prefix }),
            (any::<u64>(), any::<i64>(), 0..=u64::MAX / STEP, any::<u8>()).prop_map(
                |(size, modified, steps, reason)| Message::Sending {
                    size,
                    modified,
                    offset: steps * STEP,
                    reason: ResumeReason::from_u8(reason)
                }
            ),
            (
                any::<bool>(),
                any::<u64>(),
                0..=0o777u32,
                any::<i64>(),
                any::<Option<[u8; 32]>>(),
                name
            )
                .prop_map(|(file, size, mode, modified, digest, path)| {
                    let kind = if file {
                        EntryKind::File
                    } else {
                        EntryKind::Directory
                    };
                    Message::TreeEntry(TreeEntry {
                        kind,
                        size,
                        mode,
                        modified,
                        digest,
                        path,
                    })
                }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(entries, bytes)| Message::TreeEnd { entries, bytes }),
            any::<u32>().prop_map(|size| Message::Chunk { size }),
            (any::<u64>(), any::<u64>()).prop_map(|(first, count)| Message::Skip { first, count }),
            name.prop_map(|name| Message::Conflict { name }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(files, skipped, bytes)| {
                Message::TreeDone {
                    files,
                    skipped,
                    bytes,
                }
            }),
            proptest::sample::subsequence(RequestKind::ALL.to_vec(), 0..=RequestKind::ALL.len())
                .prop_map(|requests| Message::Welcome { requests }),
            (
                0..3u8,
                any::<u64>(),
                any::<i64>(),
                any::<u32>(),
                0..3u8,
                any::<Option<[u8; 32]>>()
            )
                .prop_map(|(kind, size, modified, mode, link, digest)| Message::Info(
                    Info {
                        kind: [EntryKind::File, EntryKind::Directory, EntryKind::Other]
                            [kind as usize],
                        size,
                        modified,
                        mode,
                        link: [Link::None, Link::Inside, Link::Elsewhere][link as usize],
                        digest,
                    }
                )),
            (any::<u8>(), any::<u64>()).prop_map(|(reason, count)| Message::Omitted {
                reason: OmitReason::from_u8(reason),
                count
            }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(files, directories)| Message::Removed { files, directories }),
            name.prop_map(|token| Message::Hello {
                token: Token::new(token)
            }),
            any::<[u8; 32]>().prop_map(|digest| Message::Trailer { digest }),
            Just(Message::Proceed),
            any::<u64>().prop_map(|size| Message::Body { size }),
            (0..3u8, any::<u64>(), any::<i64>(), name).prop_map(|(kind, size, modified, name)| {
                let kind = [EntryKind::File, EntryKind::Directory, EntryKind::Other][kind as usize];
                Message::Entry(Entry {
                    kind,
                    size,
                    modified,
                    name,
                })
            }),
            Just(Message::Done),
            (any::<u16>(), name).prop_map(|(code, message)| Message::Error {
                code: ErrorCode::from_u16(code),
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(message in any_message()) {
            let bytes = encoded(&message);
            prop_assert_eq!(decode(&bytes), Ok(Some((message, bytes.len()))));
        }

        #[test]
        fn every_prefix_of_a_frame_is_incomplete(message in any_message()) {
            let bytes = encoded(&message);
            for end in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..end]), Ok(None));
            }
        }

        #[test]
        fn frames_decode_one_at_a_time(first in any_message(), second in any_message()) {
            let mut bytes = encoded(&first);
            let first_len = bytes.len();
            encode(&second, &mut bytes).unwrap();
            prop_assert_eq!(decode(&bytes), Ok(Some((first, first_len))));
            prop_assert_eq!(decode(&bytes[first_len..]), Ok(Some((second, bytes.len() - first_len))));
        }

        #[test]
        fn no_input_makes_the_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn plausible_frames_never_panic(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = ((body.len() + 1) as u32).to_be_bytes().to_vec();
            bytes.push(tag);
            bytes.extend_from_slice(&body);
            if let Ok(Some((_, used))) = decode(&bytes) {
                prop_assert_eq!(used, bytes.len());
            }
        }
    }
}
