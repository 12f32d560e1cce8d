//! What each request must be answered with: the part of the `session`
//! checks that reads the client's bytes the way the server reads them, a
//! frame at a time, beside the messages the server sent.
//!
//! The server answers requests in order, one answer each, and reads the
//! next request only once it has answered; so the input alone decides which
//! answers may come, and when the server may stop sending:
//!
//! - the handshake: a hello is answered by a welcome naming every request
//!   (the harness's server serves them all); any other first message by
//!   `bad-request`; a frame it cannot read by at most an error that ends
//!   the connection;
//! - a request whose name breaks the naming rules: `bad-name`;
//! - put: an error, or proceed; then, once the body and its trailer are
//!   in, done or an error, and `digest-mismatch` exactly when the trailer
//!   is not the body's digest. Anything but a trailer after the body ends
//!   the connection without a word (PROTOCOL.md §5.5);
//! - get: a body. list: entries, then `omitted` notes, then done; or
//!   entries, then an error. A short listing's entries carry no size or
//!   time, and `omitted` comes nowhere else. delete: done, or `removed` if
//!   recursive. mkdir, rmdir, rename: done. stat: info. Each, or an error
//!   that leaves the connection open;
//! - a frame of a tag no message has, or a message that is not a request (a
//!   second hello among them): `unsupported-request`, and the next request
//!   is still answered;
//! - a malformed frame: `bad-request`, then nothing;
//! - the end of the input, between frames or inside one: nothing more.
//!
//! When the connection was reset, its last messages may be lost: the
//! messages need only be the start of what the input calls for.

use ferry::protocol::{
    decode, DecodeError, EntryKind, ErrorCode, Message, NameError, Preamble, RemoteName,
    RequestKind,
};

/// Checks that `messages`, read from a connection that was `reset` or not,
/// are what a server owes a client that sent `sent`.
pub fn check(sent: &[u8], messages: &[Message], reset: bool) -> Result<(), String> {
    let mut server = Answers {
        messages: messages.iter(),
        reset,
    };
    let ours = Preamble::OURS.to_bytes();
    let Some(mut rest) = sent.strip_prefix(ours.as_slice()) else {
        // A foreign preamble, another version's, or only part of one.
        return server.at_most_a_hang_up("a preamble that is not ours");
    };
    match decode(rest) {
        Ok(Some((Message::Hello { .. }, used))) => {
            rest = &rest[used..];
            match server.next("the hello")? {
                None => return Ok(()),
                Some(Message::Welcome { requests }) if requests[..] == RequestKind::ALL => {}
                Some(other) => return Err(format!("the hello is answered by {other:?}")),
            }
        }
        Ok(Some((other, _))) => {
            let what = format!("{} in place of the hello", other.name());
            return server.hang_up(ErrorCode::BadRequest, &what).map(drop);
        }
        Ok(None) => return server.done("the end of the input").map(drop),
        Err(_) => return server.at_most_a_hang_up("a first frame that cannot be read"),
    }
    loop {
        let then = match decode(rest) {
            Ok(None) => server.done("the end of the input")?,
            Err(DecodeError::UnknownTag { tag, used }) => {
                rest = &rest[used..];
                server.unsupported(&format!("a frame of the unknown tag 0x{tag:02x}"))?
            }
            Err(e) => server.hang_up(ErrorCode::BadRequest, &format!("a malformed frame ({e})"))?,
            Ok(Some((message, used))) => {
                rest = &rest[used..];
                if message.request_kind().is_some() {
                    answer(&mut server, &message, &mut rest)?
                } else {
                    server.unsupported(&format!("{} in place of a request", message.name()))?
                }
            }
        };
        if let Then::Stop = then {
            return Ok(());
        }
    }
}

/// Whether the server reads on after an answer.
enum Then {
    ReadOn,
    /// The connection is over, or what is left of the reply was lost.
    Stop,
}

/// The server's messages, taken as the requests call for them.
struct Answers<'a> {
    messages: std::slice::Iter<'a, Message>,
    /// The connection was reset: its last messages may be lost.
    reset: bool,
}

impl<'a> Answers<'a> {
    /// The next message, owed for `what`; `None` if the reply ends here, as
    /// it may only when the connection was reset.
    fn next(&mut self, what: &str) -> Result<Option<&'a Message>, String> {
        match self.messages.next() {
            Some(message) => Ok(Some(message)),
            None if self.reset => Ok(None),
            None => Err(format!("no answer to {what}")),
        }
    }

    /// After `what`, the server sends nothing more.
    fn done(&mut self, what: &str) -> Result<Then, String> {
        match self.messages.next() {
            None => Ok(Then::Stop),
            Some(message) => Err(format!("after {what}, the server sent {message:?}")),
        }
    }

    /// `what` is answered by an error with `code`, then nothing more.
    fn hang_up(&mut self, code: ErrorCode, what: &str) -> Result<Then, String> {
        match self.next(what)? {
            None => Ok(Then::Stop),
            Some(Message::Error { code: sent, .. }) if *sent == code => self.done(what),
            Some(other) => Err(format!("{what} is answered by {other:?}, not by {code}")),
        }
    }

    /// After `what`, at most an error that ends the connection.
    fn at_most_a_hang_up(&mut self, what: &str) -> Result<(), String> {
        match self.messages.next() {
            None => Ok(()),
            Some(Message::Error { code, .. }) if code.ends_connection() => {
                self.done(what).map(drop)
            }
            Some(other) => Err(format!("{what} is answered by {other:?}")),
        }
    }

    /// `what` is not a request: `unsupported-request`, and the connection
    /// goes on.
    fn unsupported(&mut self, what: &str) -> Result<Then, String> {
        match self.next(what)? {
            None => Ok(Then::Stop),
            Some(Message::Error {
                code: ErrorCode::UnsupportedRequest,
                ..
            }) => Ok(Then::ReadOn),
            Some(other) => Err(format!(
                "{what} is answered by {other:?}, not by unsupported-request"
            )),
        }
    }
}

/// Checks the answer to `request`, taking the body of an upload from the
/// front of `rest`.
fn answer(server: &mut Answers, request: &Message, rest: &mut &[u8]) -> Result<Then, String> {
    let Some(answer) = server.next(request.name())? else {
        return Ok(Then::Stop);
    };
    if let Some(broken) = name_error(request) {
        return match answer {
            Message::Error {
                code: ErrorCode::BadName,
                ..
            } => Ok(Then::ReadOn),
            other => Err(format!(
                "{request:?}, whose name breaks a rule ({broken}), is answered by {other:?}"
            )),
        };
    }
    let fits = match (request, answer) {
        (_, Message::Error { code, .. }) => {
            // Every request is served, and no refusal of one ends the
            // connection; the time limits are far beyond a session's.
            return if code.ends_connection() || *code == ErrorCode::UnsupportedRequest {
                Err(format!("{request:?} is answered by {answer:?}"))
            } else {
                Ok(Then::ReadOn)
            };
        }
        (Message::Put { size, .. }, Message::Proceed) => return upload(server, rest, *size),
        (Message::List { long, .. }, first) => return listing(server, *long, first),
        (Message::Get { .. }, Message::Body { .. })
        | (
            Message::Delete {
                recursive: false, ..
            },
            Message::Done,
        )
        | (Message::MakeDir { .. }, Message::Done)
        | (Message::RemoveDir { .. }, Message::Done)
        | (Message::Rename { .. }, Message::Done) => true,
        // At least the name itself went.
        (
            Message::Delete {
                recursive: true, ..
            },
            Message::Removed { files, directories },
        ) => files.saturating_add(*directories) > 0,
        (Message::Stat { .. }, Message::Info(info)) => {
            let plain = info.kind == EntryKind::File || (info.size == 0 && info.digest.is_none());
            info.mode <= 0o7777 && plain
        }
        _ => false,
    };
    if fits {
        Ok(Then::ReadOn)
    } else {
        Err(format!("{request:?} is answered by {answer:?}"))
    }
}

/// The body of an accepted upload, `size` bytes from the front of `rest`,
/// its trailer, and the answer once they are in.
fn upload(server: &mut Answers, rest: &mut &[u8], size: u64) -> Result<Then, String> {
    let Some((body, after)) = usize::try_from(size)
        .ok()
        .and_then(|size| rest.split_at_checked(size))
    else {
        return server.done("an upload cut short");
    };
    let Ok(Some((Message::Trailer { digest }, used))) = decode(after) else {
        return server.done("an upload's body followed by no trailer");
    };
    *rest = &after[used..];
    let damaged = digest != *blake3::hash(body).as_bytes();
    let Some(answer) = server.next("an upload's trailer")? else {
        return Ok(Then::Stop);
    };
    let fits = match answer {
        Message::Done => !damaged,
        // A sink that failed would be reported first; the harness's bodies
        // are far too small for that.
        Message::Error { code, .. } => {
            (*code == ErrorCode::DigestMismatch) == damaged && !code.ends_connection()
        }
        _ => false,
    };
    if fits {
        Ok(Then::ReadOn)
    } else {
        let state = if damaged { "a damaged" } else { "an intact" };
        Err(format!(
            "{state} upload of {size} bytes is answered by {answer:?}"
        ))
    }
}

/// A listing that began with `first`: entries, then `omitted` notes, then
/// done; or entries, then an error.
fn listing(server: &mut Answers, long: bool, first: &Message) -> Result<Then, String> {
    let mut message = first;
    let mut omitted = false;
    loop {
        match message {
            Message::Entry(entry) if !omitted => {
                let short = !long && (entry.size != 0 || entry.modified != 0);
                if short || (entry.kind == EntryKind::Directory && entry.size != 0) {
                    return Err(format!("a listing (long: {long}) shows {entry:?}"));
                }
            }
            Message::Omitted { count, .. } if *count > 0 => omitted = true,
            Message::Done => return Ok(Then::ReadOn),
            Message::Error { code, .. } if !omitted && !code.ends_connection() => {
                return Ok(Then::ReadOn)
            }
            other => return Err(format!("a listing goes on with {other:?}")),
        }
        match server.next("a listing")? {
            Some(next) => message = next,
            None => return Ok(Then::Stop),
        }
    }
}

/// The rule a name of `request` breaks, if one does: list and stat take the
/// root (`""`), the others need a name beneath it.
fn name_error(request: &Message) -> Option<NameError> {
    let name = |name: &str| RemoteName::parse(name).err();
    match request {
        Message::Put { name: n, .. }
        | Message::Get { name: n }
        | Message::Delete { name: n, .. }
        | Message::MakeDir { name: n, .. }
        | Message::RemoveDir { name: n } => name(n),
        Message::List { dir: n, .. } | Message::Stat { name: n } => RemoteName::parse_dir(n).err(),
        Message::Rename { from, to } => name(from).or_else(|| name(to)),
        _ => None,
    }
}
