//! Seed inputs for each fuzz target, built from real frames so the fuzzer
//! starts from every message kind and from whole request sequences rather
//! than from nothing. `examples/write_seeds.rs` writes them out for
//! `scripts/fuzz.sh`; `tests/fuzz_regressions.rs` checks they pass.

use ferry::protocol::{encode, Entry, EntryKind, ErrorCode, Message, MAX_COMPONENT_LEN};

/// A named seed input.
pub type Seed = (&'static str, Vec<u8>);

/// The seeds of the fuzz target `target`, or `None` if there is no such target.
pub fn for_target(target: &str) -> Option<Vec<Seed>> {
    match target {
        "decode" => Some(decode()),
        "name" => Some(name()),
        "session" => Some(session()),
        _ => None,
    }
}

/// One frame of every message kind, and two frames back to back.
pub fn decode() -> Vec<Seed> {
    let entry = |kind, name: &str| {
        Message::Entry(Entry {
            kind,
            size: 3000,
            modified: 1_700_000_000,
            name: name.to_owned(),
        })
    };
    let messages = [
        ("put", put("dir/file.txt", 5)),
        ("get", get("a.txt")),
        ("list", list("", false)),
        ("list-long", list("d", true)),
        ("delete", delete("a.txt")),
        ("trailer", trailer(b"hello")),
        ("proceed", Message::Proceed),
        ("body", Message::Body { size: 5 }),
        ("entry-file", entry(EntryKind::File, "b.bin")),
        ("entry-directory", entry(EntryKind::Directory, "d")),
        ("entry-other", entry(EntryKind::Other, "fifo")),
        ("done", Message::Done),
        (
            "error",
            Message::Error {
                code: ErrorCode::NotFound,
                message: "no such file or directory".into(),
            },
        ),
        (
            "error-unknown-code",
            Message::Error {
                code: ErrorCode::Unknown(999),
                message: "ünïcödé".into(),
            },
        ),
    ];
    let mut seeds: Vec<Seed> = messages
        .into_iter()
        .map(|(name, message)| (name, frames(&[message])))
        .collect();
    seeds.push(("two-frames", frames(&[get("a.txt"), Message::Done])));
    seeds
}

/// Names the rules accept and names each rule refuses.
pub fn name() -> Vec<Seed> {
    let names = [
        ("plain", "a".to_owned()),
        ("nested", "dir/sub/file.txt".to_owned()),
        ("hidden", ".hidden".to_owned()),
        ("dots-in-name", "..double-dot-prefix/file..".to_owned()),
        ("unicode", "ünïcödé/名前.txt".to_owned()),
        ("temp-prefix-without-dash", ".ferry-tmp".to_owned()),
        ("longest-component", "c".repeat(MAX_COMPONENT_LEN)),
        ("dot-dot", "a/../b".to_owned()),
        ("empty-component", "a//b".to_owned()),
        ("absolute", "/etc/passwd".to_owned()),
        ("backslash", "..\\windows".to_owned()),
        ("control", "nul\0byte".to_owned()),
        ("reserved", "dir/.ferry-tmp-1-2".to_owned()),
    ];
    names
        .into_iter()
        .map(|(seed, name)| (seed, name.into_bytes()))
        .collect()
}

/// Sessions over the fixture of `checks/session.rs` (its names: `a.txt`,
/// `empty`, `d/b.bin`, `fifo`, `link`, `escape`, `dangling`): every request
/// kind, accepted and refused, whole uploads, and broken handshakes. A
/// session's first byte is odd to have the preamble sent before the rest.
pub fn session() -> Vec<Seed> {
    let mut seeds = vec![
        ("list-root", requests(&[list("", false)])),
        ("list-long-d", requests(&[list("d", true)])),
        ("list-escape", requests(&[list("escape", false)])),
        ("get-a", requests(&[get("a.txt")])),
        ("get-empty-and-b", requests(&[get("empty"), get("d/b.bin")])),
        ("get-link-and-fifo", requests(&[get("link"), get("fifo")])),
        ("get-outside", requests(&[get("escape/canary")])),
        ("get-missing-and-dir", requests(&[get("nope"), get("d")])),
        ("delete-a", requests(&[delete("a.txt"), list("", true)])),
        (
            "delete-dir-and-link",
            requests(&[delete("d"), delete("link")]),
        ),
        ("put-taken", requests(&[put("a.txt", 10), get("a.txt")])),
        ("put-outside", requests(&[put("escape/new", 1)])),
        ("put-through-file", requests(&[put("a.txt/new", 1)])),
        ("put-dangling", requests(&[put("dangling/new", 1)])),
        (
            "bad-names",
            requests(&[get("../x"), list("a//b", false), delete(".ferry-tmp-1-1")]),
        ),
        ("not-a-request", requests(&[Message::Done])),
    ];
    // A whole upload, then the new file read, listed and removed.
    let mut whole = requests(&[put("new.txt", 5)]);
    whole.extend_from_slice(b"hello");
    whole.extend(frames(&[
        trailer(b"hello"),
        get("new.txt"),
        list("", true),
        delete("new.txt"),
    ]));
    seeds.push(("put-get-list-delete", whole));
    let mut empty = requests(&[put("sub/dir/empty", 0)]);
    empty.extend(frames(&[trailer(b""), list("sub/dir", true)]));
    seeds.push(("put-empty-in-new-dirs", empty));
    let mut damaged = requests(&[put("damaged", 3)]);
    damaged.extend_from_slice(b"abc");
    damaged.extend(frames(&[trailer(b"xyz"), get("damaged")]));
    seeds.push(("put-damaged", damaged));
    let mut cut = requests(&[put("cut", 100)]);
    cut.extend_from_slice(b"only part of the body");
    seeds.push(("put-cut-short", cut));
    let mut malformed = requests(&[]);
    malformed.extend_from_slice(&[0, 0, 0, 1, 0x55]);
    seeds.push(("unknown-tag", malformed));
    let mut oversize = requests(&[]);
    oversize.extend_from_slice(&u32::MAX.to_be_bytes());
    seeds.push(("oversize-length", oversize));
    seeds.push(("http", raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
    seeds.push(("wrong-version", raw(b"FERRY\0\0\x02")));
    seeds.push(("half-preamble", raw(b"FER")));
    seeds
}

/// A session input: the preamble, then `messages`.
fn requests(messages: &[Message]) -> Vec<u8> {
    let mut input = vec![1];
    input.extend(frames(messages));
    input
}

/// A session input of exactly `bytes`, without the preamble.
fn raw(bytes: &[u8]) -> Vec<u8> {
    let mut input = vec![0];
    input.extend_from_slice(bytes);
    input
}

fn frames(messages: &[Message]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for message in messages {
        encode(message, &mut bytes).expect("a seed message fits a frame");
    }
    bytes
}

fn put(name: &str, size: u64) -> Message {
    Message::Put {
        name: name.to_owned(),
        size,
    }
}

fn get(name: &str) -> Message {
    Message::Get {
        name: name.to_owned(),
    }
}

fn list(dir: &str, long: bool) -> Message {
    Message::List {
        dir: dir.to_owned(),
        long,
    }
}

fn delete(name: &str) -> Message {
    Message::Delete {
        name: name.to_owned(),
        recursive: false,
    }
}

fn trailer(body: &[u8]) -> Message {
    Message::Trailer {
        digest: *blake3::hash(body).as_bytes(),
    }
}
