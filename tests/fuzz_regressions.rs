//! Inputs the fuzz targets in `fuzz/` must keep handling: every file under
//! `fuzz/regressions/<target>/` goes through the very checks its target
//! runs (`fuzz/checks/`), and so does every generated seed. Crashes the
//! fuzzer finds are minimized and added there; see `scripts/fuzz.sh`.

#[path = "../fuzz/checks/decode.rs"]
mod decode;
#[path = "../fuzz/checks/manifest.rs"]
mod manifest;
#[path = "../fuzz/checks/name.rs"]
mod name;
#[path = "../fuzz/checks/seeds.rs"]
mod seeds;
#[path = "../fuzz/checks/session.rs"]
mod session;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ferry::protocol::{EntryKind, ErrorCode, Message, OmitReason};

/// The committed regression inputs of `target`, sorted by name. Never
/// empty: a test over an empty directory would pass without checking
/// anything.
fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    inputs
}

/// Runs `check` on every input, then fails listing each one that broke.
fn assert_all_pass<T>(
    inputs: impl IntoIterator<Item = (String, Vec<u8>)>,
    mut check: impl FnMut(&[u8]) -> Result<T, String>,
) {
    let mut failures = Vec::new();
    for (name, bytes) in inputs {
        // Printed first, so the input is named even if the library panics.
        eprintln!("checking {name}");
        if let Err(finding) = check(&bytes) {
            failures.push(format!("{name}: {finding}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn named(inputs: Vec<(PathBuf, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let shown = |path: PathBuf| path.display().to_string();
    inputs.into_iter().map(|(p, b)| (shown(p), b)).collect()
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let seeds = seeds::for_target(target).expect("a fuzz target");
    let shown = |name| format!("seed {target}/{name}");
    seeds.into_iter().map(|(n, b)| (shown(n), b)).collect()
}

#[test]
fn decoder_regressions_hold() {
    assert_all_pass(named(regressions("decode")), decode::check);
}

#[test]
fn name_regressions_hold() {
    assert_all_pass(named(regressions("name")), name::check);
}

#[test]
fn session_regressions_hold() {
    let harness = session::Harness::start();
    assert_all_pass(named(regressions("session")), |input| harness.check(input));
}

#[test]
fn decoder_and_name_seeds_pass_their_checks() {
    assert_all_pass(seeds("decode"), decode::check);
    assert_all_pass(seeds("name"), name::check);
}

#[test]
fn manifest_regressions_hold() {
    assert_all_pass(named(regressions("manifest")), manifest::check);
}

/// Issue 13: the manifest's order checker admits exactly the entries that
/// keep the rules of PROTOCOL.md §5.10, and the seeds reach each rule:
/// (seed, entries admitted, refused, ends accepted, refused).
#[test]
fn manifest_seeds_pass_and_admit_what_they_should() {
    #[rustfmt::skip]
    let expected: &[(&str, u64, u64, u64, u64)] = &[
        ("tree", 10, 0, 1, 0),
        ("files-in-byte-order", 4, 0, 1, 0),
        ("get-tree-with-digest", 1, 0, 1, 0),
        ("empty", 0, 0, 1, 0),
        ("duplicate", 2, 1, 0, 0),
        ("directory-again-after-its-files", 2, 1, 0, 0),
        ("out-of-order", 2, 1, 0, 0),
        ("back-up-a-level", 3, 1, 0, 0),
        ("file-then-child", 1, 1, 0, 0),
        ("no-parent", 2, 1, 0, 0),
        ("parent-left-behind", 3, 1, 0, 0),
        ("not-plain", 1, 3, 0, 0),
        ("bad-names", 1, 6, 0, 0),
        ("sized-directory", 0, 1, 0, 0),
        ("sizes-past-2-64", 2, 1, 0, 0),
        ("wrong-end-counts", 1, 0, 1, 2),
    ];
    let seeds = seeds("manifest");
    assert_eq!(
        seeds.len(),
        expected.len(),
        "a seed without its expectation"
    );
    let mut outcomes = HashMap::new();
    assert_all_pass(seeds.clone(), |input| {
        manifest::check(input).map(|outcome| outcomes.insert(input.to_vec(), outcome))
    });
    for (seed, admitted, refused, ends_accepted, ends_refused) in expected {
        let name = format!("seed manifest/{seed}");
        let (_, bytes) = seeds
            .iter()
            .find(|(shown, _)| *shown == name)
            .unwrap_or_else(|| panic!("no manifest seed named {seed}"));
        let wanted = manifest::Outcome {
            admitted: *admitted,
            refused: *refused,
            ends_accepted: *ends_accepted,
            ends_refused: *ends_refused,
        };
        assert_eq!(outcomes[bytes], wanted, "{seed}");
    }
}

#[test]
fn session_seeds_pass_and_reach_deep_states() {
    let harness = session::Harness::start();
    let seeds = seeds("session");
    let mut replies = Vec::new();
    assert_all_pass(seeds.clone(), |input| {
        let reply = harness.check(input);
        replies.push(reply.clone().unwrap_or_default());
        reply.map(drop)
    });
    // `assert_all_pass` checks every input, in order.
    let names = seeds.iter().map(|(name, _)| name.as_str());
    let replies: HashMap<&str, Vec<Message>> = names.zip(replies).collect();
    // The seeds are worth their name only if they get past the handshake
    // and the name checks into each request's work: a body sent, an upload
    // stored, each directory operation done, or refused for its own reason,
    // and the connection going on after what it does not serve.
    let hello_digest = Some(*blake3::hash(b"hello").as_bytes());
    let digest = move |m: &Message| matches!(m, Message::Info(i) if i.digest == hello_digest);
    let link_elsewhere =
        |m: &Message| matches!(m, Message::Info(i) if i.link == ferry::protocol::Link::Elsewhere);
    let link_outside = |m: &Message| {
        let reason = OmitReason::LinkOutside;
        *m == Message::Omitted { reason, count: 1 }
    };
    #[rustfmt::skip]
    let expected: &[Expected] = &[
        ("get-a", "the body of a.txt", &body(5)),
        ("put-get-list-delete", "proceed", &|m| *m == Message::Proceed),
        ("put-get-list-delete", "new.txt listed", &entry("new.txt")),
        ("put-then-stat", "the upload's digest", &digest),
        ("mkdir-p-and-list", "z listed", &entry("z")),
        ("mkdir-refused", "not-found", &refused(ErrorCode::NotFound)),
        ("mkdir-refused", "already-exists", &refused(ErrorCode::AlreadyExists)),
        ("mkdir-refused", "bad-name", &refused(ErrorCode::BadName)),
        ("mkdir-rmdir-stat", "not-found", &refused(ErrorCode::NotFound)),
        ("rmdir-refused", "not-empty", &refused(ErrorCode::NotEmpty)),
        ("rmdir-refused", "not-a-directory", &refused(ErrorCode::NotADirectory)),
        ("rename-file", "renamed.txt listed", &entry("renamed.txt")),
        ("rename-file", "the renamed body", &body(5)),
        ("rename-dir", "b.bin listed in e", &entry("b.bin")),
        ("rename-into-itself", "bad-name", &refused(ErrorCode::BadName)),
        ("rename-into-itself", "already-exists", &refused(ErrorCode::AlreadyExists)),
        ("rename-onto-existing", "already-exists", &refused(ErrorCode::AlreadyExists)),
        ("rename-through-escape", "bad-name", &refused(ErrorCode::BadName)),
        ("rename-through-escape", "the moved link left out", &link_outside),
        ("delete-r-d", "1 file, 1 directory removed", &removed(1, 1)),
        ("delete-r-dir-holding-link-outside", "b.bin, link, d removed", &removed(2, 1)),
        ("delete-r-file-and-links", "1 file removed", &removed(1, 0)),
        ("delete-r-refused", "not-found", &refused(ErrorCode::NotFound)),
        ("delete-r-refused", "bad-name", &refused(ErrorCode::BadName)),
        ("stat-root-file-link", "a directory's info", &info(EntryKind::Directory, 0)),
        ("stat-root-file-link", "a.txt's info", &info(EntryKind::File, 5)),
        ("stat-root-file-link", "the fifo's info", &info(EntryKind::Other, 0)),
        ("stat-root-file-link", "links leading elsewhere", &link_elsewhere),
        ("list-a-file", "a.txt listed as itself", &entry("a.txt")),
        ("names-as-typed", "the body of ./a.txt", &body(5)),
        ("names-as-typed", "b.bin listed in d/", &entry("b.bin")),
        ("names-as-typed", "the info of ./d/./b.bin", &info(EntryKind::File, 3000)),
        ("names-as-typed", "bad-name", &refused(ErrorCode::BadName)),
        ("unknown-tags-then-get", "unsupported-request", &refused(ErrorCode::UnsupportedRequest)),
        ("unknown-tags-then-get", "the body after them", &body(5)),
        ("second-hello", "unsupported-request", &refused(ErrorCode::UnsupportedRequest)),
        ("second-hello", "the listing after it", &|m| *m == Message::Done),
        ("replies-as-requests-then-stat", "the root's info", &info(EntryKind::Directory, 0)),
    ];
    let missing: Vec<String> = expected
        .iter()
        .filter_map(|(seed, what, wanted)| {
            let reply = replies.get(format!("seed session/{seed}").as_str());
            let reply = reply.unwrap_or_else(|| panic!("no session seed named {seed}"));
            (!reply.iter().any(wanted)).then(|| format!("{seed}: no {what} in {reply:?}"))
        })
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

// What a seed's reply must hold, for `session_seeds_pass_and_reach_deep_states`.

/// A session seed, what its reply must hold, and a test for it.
type Expected<'a> = (&'a str, &'a str, &'a dyn Fn(&Message) -> bool);

fn body(size: u64) -> impl Fn(&Message) -> bool {
    move |m| matches!(m, Message::Body { size: s } if *s == size)
}

fn entry(name: &'static str) -> impl Fn(&Message) -> bool {
    move |m| matches!(m, Message::Entry(e) if e.name == name)
}

fn info(kind: EntryKind, size: u64) -> impl Fn(&Message) -> bool {
    move |m| matches!(m, Message::Info(i) if i.kind == kind && i.size == size)
}

fn removed(files: u64, directories: u64) -> impl Fn(&Message) -> bool {
    move |m| *m == Message::Removed { files, directories }
}

fn refused(code: ErrorCode) -> impl Fn(&Message) -> bool {
    move |m| matches!(m, Message::Error { code: c, .. } if *c == code)
}
