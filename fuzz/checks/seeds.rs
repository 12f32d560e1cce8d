//! Seed inputs for each fuzz target, built from real frames so the fuzzer
//! starts from every message kind and from whole request sequences rather
//! than from nothing. `examples/write_seeds.rs` writes them out for
//! `scripts/fuzz.sh`; `tests/fuzz_regressions.rs` checks they pass.

use ferry::protocol::{
    encode, Entry, EntryKind, ErrorCode, Info, Link, Message, OmitReason, Preamble, RequestKind,
    Token, TreeEntry, MAX_COMPONENT_LEN,
};

/// A named seed input.
pub type Seed = (&'static str, Vec<u8>);

/// The seeds of the fuzz target `target`, or `None` if there is no such target.
pub fn for_target(target: &str) -> Option<Vec<Seed>> {
    match target {
        "decode" => Some(decode()),
        "name" => Some(name()),
        "session" => Some(session()),
        "manifest" => Some(manifest()),
        _ => None,
    }
}

/// One frame of every message kind, a frame of an unknown kind, and two
/// frames back to back.
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
        ("delete-recursive", delete_tree("d")),
        ("make-dir", make_dir("x/y", false)),
        ("make-dir-parents", make_dir("x/y", true)),
        ("remove-dir", remove_dir("d")),
        ("rename", rename("a.txt", "d/b.txt")),
        ("stat", stat("a.txt")),
        ("stat-root", stat("")),
        (
            "put-tree",
            Message::PutTree {
                target: "backup".into(),
                replace: true,
                top: None,
                restart: false,
            },
        ),
        (
            "put-tree-top",
            Message::PutTree {
                target: "backup".into(),
                replace: false,
                top: Some((0o750, 1_700_000_000)),
                restart: true,
            },
        ),
        ("hello", hello()),
        (
            "hello-token",
            Message::Hello {
                token: Token::new("s3cret".into()),
            },
        ),
        ("trailer", trailer(b"hello")),
        ("proceed", Message::Proceed),
        ("body", Message::Body { size: 5 }),
        ("entry-file", entry(EntryKind::File, "b.bin")),
        ("entry-directory", entry(EntryKind::Directory, "d")),
        ("entry-other", entry(EntryKind::Other, "fifo")),
        ("done", Message::Done),
        (
            "welcome",
            Message::Welcome {
                requests: RequestKind::ALL.to_vec(),
            },
        ),
        ("welcome-empty", Message::Welcome { requests: vec![] }),
        ("info-file", info(EntryKind::File, Some(b"hello"))),
        ("info-directory", info(EntryKind::Directory, None)),
        (
            "omitted",
            Message::Omitted {
                reason: OmitReason::LinkOutside,
                count: 2,
            },
        ),
        (
            "omitted-unknown-reason",
            Message::Omitted {
                reason: OmitReason::Unknown(200),
                count: u64::MAX,
            },
        ),
        (
            "removed",
            Message::Removed {
                files: 2,
                directories: 1,
            },
        ),
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
    // A whole frame of a tag no message has: skipped by the transport.
    seeds.push(("unknown-tag", vec![0, 0, 0, 3, 0x3a, 0, 0]));
    // A welcome naming a request this build does not know (0x3a).
    seeds.push((
        "welcome-unknown-kind",
        vec![0, 0, 0, 5, 0x24, 3, 0x01, 0x3a, 0x09],
    ));
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
        ("dot-slash", "./a".to_owned()),
        ("dot-inside", "x/./y/.".to_owned()),
        ("trailing-slash", "dir/".to_owned()),
        ("two-trailing-slashes", "dir//".to_owned()),
        ("root-dot", ".".to_owned()),
        ("root-dot-slash", "./".to_owned()),
        ("root-slash", "/".to_owned()),
        ("root-slashes", "//".to_owned()),
        ("dot-then-dot-dot", "./..".to_owned()),
        // Longest name whose plain form is short: the limit is on the name sent.
        ("dots-at-the-limit", format!("{}a", "./".repeat(2047))),
    ];
    names
        .into_iter()
        .map(|(seed, name)| (seed, name.into_bytes()))
        .collect()
}

/// Manifests as a put-tree or get-tree sends them (PROTOCOL.md §5.10,
/// §5.11), good ones and ones that break each rule of their order, some
/// going on after the entry that breaks it. `tests/fuzz_regressions.rs`
/// checks how many entries of each are admitted.
pub fn manifest() -> Vec<Seed> {
    let file = |path: &str, size| tree_entry(EntryKind::File, path, size);
    let dir = |path: &str| tree_entry(EntryKind::Directory, path, 0);
    let end = |entries, bytes| Message::TreeEnd { entries, bytes };
    let put_tree = Message::PutTree {
        target: "backup".into(),
        replace: false,
        top: None,
        restart: false,
    };
    let mut with_digest = file("a.txt", 5);
    if let Message::TreeEntry(entry) = &mut with_digest {
        entry.digest = Some(*blake3::hash(b"hello").as_bytes());
    }
    let manifests: Vec<(&'static str, Vec<Message>)> = vec![
        (
            "tree",
            vec![
                put_tree.clone(),
                dir("a"),
                file("a/x", 3),
                dir("a/y"),
                dir("a/y/deep"),
                file("a/y/deep/f", 4),
                dir("a/y/empty"),
                file("a/z", 0),
                file("a.txt", 5),
                dir("b"),
                file("c", 1),
                end(10, 13),
            ],
        ),
        (
            "files-in-byte-order",
            vec![
                file("B.txt", 1),
                file("a b.txt", 2),
                file("a.txt", 3),
                file("ünï.txt", 4),
                end(4, 10),
            ],
        ),
        ("get-tree-with-digest", vec![with_digest, end(1, 5)]),
        ("empty", vec![put_tree.clone(), end(0, 0)]),
        ("duplicate", vec![file("a", 1), file("a", 1), file("b", 1)]),
        (
            "directory-again-after-its-files",
            vec![dir("d"), file("d/x", 1), dir("d")],
        ),
        (
            "out-of-order",
            vec![file("b", 1), file("a", 1), file("c", 1)],
        ),
        (
            "back-up-a-level",
            vec![dir("d"), dir("d/e"), file("d/e/x", 1), file("d/a", 1)],
        ),
        ("file-then-child", vec![file("f", 1), file("f/child", 1)]),
        ("no-parent", vec![file("d/x", 1), dir("d"), file("d/x", 1)]),
        (
            "parent-left-behind",
            vec![dir("d"), file("d/x", 1), file("e", 1), file("d/y", 1)],
        ),
        (
            "not-plain",
            vec![file("./a", 1), file("a/", 1), dir("d"), file("d/./x", 1)],
        ),
        (
            "bad-names",
            vec![
                file("../x", 1),
                file("/abs", 1),
                file("a//b", 1),
                file("a\\b", 1),
                file(".ferry-tmp-1-2", 1),
                file("", 1),
                file("ok", 1),
            ],
        ),
        (
            "sized-directory",
            vec![tree_entry(EntryKind::Directory, "d", 7)],
        ),
        (
            "sizes-past-2-64",
            vec![
                file("a", u64::MAX / 2 + 1),
                file("b", u64::MAX / 2 + 1),
                file("c", 1),
            ],
        ),
        (
            "wrong-end-counts",
            vec![file("a", 1), end(2, 1), end(1, 2), end(1, 1)],
        ),
    ];
    manifests
        .into_iter()
        .map(|(name, messages)| (name, frames(&messages)))
        .collect()
}

fn tree_entry(kind: EntryKind, path: &str, size: u64) -> Message {
    Message::TreeEntry(TreeEntry {
        kind,
        size,
        mode: if kind == EntryKind::Directory {
            0o755
        } else {
            0o644
        },
        modified: 1_700_000_000,
        digest: None,
        path: path.to_owned(),
    })
}

/// Sessions over the fixture of `checks/session.rs` (its names: `a.txt`,
/// `empty`, `d/b.bin`, `fifo`, `link` to `a.txt`, `escape` to a directory
/// outside the root, `dangling` to nowhere): every request kind, accepted
/// and refused, whole uploads, names as people type them, messages that are
/// not requests, and broken handshakes. A session's first byte is odd to
/// have the preamble and a hello sent before the rest.
/// `tests/fuzz_regressions.rs` checks what some of them are answered.
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
        (
            "replies-as-requests-then-stat",
            requests(&[
                Message::Done,
                Message::Welcome { requests: vec![] },
                info(EntryKind::File, None),
                Message::Removed {
                    files: 1,
                    directories: 0,
                },
                stat(""),
            ]),
        ),
        ("second-hello", requests(&[hello(), list("", false)])),
        (
            "mkdir-p-and-list",
            requests(&[
                make_dir("x/y/z", true),
                make_dir("x/y/z", true),
                list("x/y", true),
            ]),
        ),
        (
            "mkdir-refused",
            requests(&[
                make_dir("p/q", false),
                make_dir("d", false),
                make_dir("a.txt/x", true),
                make_dir("escape/new", true),
                make_dir("dangling/x", true),
                make_dir(".", true),
            ]),
        ),
        (
            "mkdir-rmdir-stat",
            requests(&[make_dir("new", false), remove_dir("new/"), stat("new")]),
        ),
        (
            "rmdir-refused",
            requests(&[
                remove_dir("d"),
                remove_dir("a.txt"),
                remove_dir("escape"),
                remove_dir("nope"),
                remove_dir(""),
            ]),
        ),
        (
            "rename-file",
            requests(&[
                rename("a.txt", "renamed.txt"),
                list("", false),
                get("renamed.txt"),
            ]),
        ),
        (
            "rename-dir",
            requests(&[rename("d", "e/"), list("e", false), stat("d")]),
        ),
        (
            "rename-into-itself",
            requests(&[
                rename("d", "d/sub"),
                rename("d", "./d/./sub/x"),
                rename("d", "d"),
            ]),
        ),
        (
            "rename-onto-existing",
            requests(&[
                rename("a.txt", "empty"),
                rename("a.txt", "d"),
                rename("empty", "link"),
                rename("d", "a.txt"),
                rename("nope", "x"),
            ]),
        ),
        (
            "rename-through-escape",
            requests(&[
                rename("a.txt", "escape/stolen"),
                rename("escape/canary", "caught"),
                rename("escape", "d/escape"),
                list("d", true),
            ]),
        ),
        ("delete-r-d", requests(&[delete_tree("d"), list("", false)])),
        (
            // The link itself goes; what it leads to outside stays.
            "delete-r-dir-holding-link-outside",
            requests(&[rename("escape", "d/escape"), delete_tree("d")]),
        ),
        (
            "delete-r-file-and-links",
            requests(&[
                delete_tree("a.txt"),
                delete_tree("escape/"),
                delete_tree("dangling"),
            ]),
        ),
        (
            "delete-r-refused",
            requests(&[
                delete_tree("nope"),
                delete_tree("."),
                delete_tree("escape/canary"),
            ]),
        ),
        (
            "stat-root-file-link",
            requests(&[
                stat(""),
                stat("a.txt"),
                stat("link"),
                stat("d"),
                stat("fifo"),
                stat("escape"),
                stat("dangling"),
            ]),
        ),
        (
            "list-a-file",
            requests(&[list("a.txt", true), list("link", false), list("fifo", true)]),
        ),
        (
            "names-as-typed",
            requests(&[
                get("./a.txt"),
                list("d/", false),
                stat("./d/./b.bin"),
                stat("./"),
                get("d//b.bin"),
                list("//", false),
                delete("./"),
                make_dir("./x/", false),
                list("x/.", false),
            ]),
        ),
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
    let mut put_stat = requests(&[put("new.txt", 5)]);
    put_stat.extend_from_slice(b"hello");
    put_stat.extend(frames(&[trailer(b"hello"), stat("new.txt")]));
    seeds.push(("put-then-stat", put_stat));
    let mut no_trailer = requests(&[put("new.txt", 5)]);
    no_trailer.extend_from_slice(b"hello");
    no_trailer.extend(frames(&[get("a.txt")]));
    seeds.push(("put-without-trailer", no_trailer));
    let mut malformed = requests(&[]);
    malformed.extend_from_slice(&[0, 0, 0, 1, 0x55]);
    seeds.push(("unknown-tag", malformed));
    let mut unknown_then_valid = requests(&[]);
    unknown_then_valid.extend_from_slice(&[0, 0, 0, 1, 0x55]);
    unknown_then_valid.extend_from_slice(&[0, 0, 0, 3, 0x3a, 0, 0]);
    unknown_then_valid.extend(frames(&[get("a.txt")]));
    seeds.push(("unknown-tags-then-get", unknown_then_valid));
    let mut bad_flags = requests(&[]);
    bad_flags.extend_from_slice(&[0, 0, 0, 5, 0x04, 0x02, 0x00, 0x01, b'd']);
    seeds.push(("delete-bad-flags", bad_flags));
    seeds.push((
        "no-hello",
        raw(&[Preamble::OURS.to_bytes().as_slice(), &frames(&[stat("")])].concat()),
    ));
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

fn delete_tree(name: &str) -> Message {
    Message::Delete {
        name: name.to_owned(),
        recursive: true,
    }
}

fn make_dir(name: &str, parents: bool) -> Message {
    Message::MakeDir {
        name: name.to_owned(),
        parents,
    }
}

fn remove_dir(name: &str) -> Message {
    Message::RemoveDir {
        name: name.to_owned(),
    }
}

fn rename(from: &str, to: &str) -> Message {
    Message::Rename {
        from: from.to_owned(),
        to: to.to_owned(),
    }
}

fn stat(name: &str) -> Message {
    Message::Stat {
        name: name.to_owned(),
    }
}

fn hello() -> Message {
    Message::Hello {
        token: Token::default(),
    }
}

fn info(kind: EntryKind, body: Option<&[u8]>) -> Message {
    Message::Info(Info {
        kind,
        size: body.map_or(0, |body| body.len() as u64),
        modified: 1_700_000_000,
        mode: 0o644,
        link: Link::None,
        digest: body.map(|body| *blake3::hash(body).as_bytes()),
    })
}

fn trailer(body: &[u8]) -> Message {
    Message::Trailer {
        digest: *blake3::hash(body).as_bytes(),
    }
}
