//! Trees resume (issue 14, PROTOCOL.md §5.10): a new tree cut off part
//! way, put again, skips the files the first try verified and sends only
//! the rest; nothing of it is visible before it is whole.
//!
//! Transfers run through a [`Relay`] that cuts them after an exact number
//! of bytes and counts what the next try moves.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use common::*;
use ferry::store::PARTIALS_DIR;

const MIB: u64 = 1 << 20;

/// The tree: this many files of one MiB, in two directories.
const FILES: u64 = 16;

/// Where a put of the tree is cut: half of it.
const CUT: u64 = 8 * MIB;

/// Makes `photos/` in `dir`: [`FILES`] files of one MiB, half in `x/`,
/// half in `y/`.
fn make_photos(dir: &Path) {
    for n in 0..FILES {
        let sub = if n % 2 == 0 { "x" } else { "y" };
        let data = pseudo_random_bytes(MIB as usize, n + 1);
        write_file(dir, &format!("photos/{sub}/{n:02}.bin"), &data);
    }
}

/// Every path under `a` has the same kind and content under `b`, and
/// the other way round.
fn assert_same_tree(a: &Path, b: &Path) {
    let (ours, theirs) = (files_under(a), files_under(b));
    assert_eq!(ours, theirs);
    for path in ours {
        let (x, y) = (a.join(&path), b.join(&path));
        if x.is_file() {
            assert!(
                std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                "{path} differs"
            );
        }
    }
}

/// The files and skipped files a put -r's report line counts.
fn counts(output: &Output) -> (u64, u64) {
    assert_exit(output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let after = stderr
        .split(" ok ")
        .nth(1)
        .unwrap_or_else(|| panic!("no report in {stderr:?}"));
    let mut words = after.split([' ', ',']).filter(|w| !w.is_empty());
    let files = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("files"), "{stderr}");
    let skipped = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("skipped"), "{stderr}");
    (files, skipped)
}

/// The names under the partials directory of `root`.
fn kept(root: &Path) -> Vec<String> {
    files_under(root)
        .into_iter()
        .filter(|path| path.starts_with(PARTIALS_DIR))
        .collect()
}

/// Puts `photos` from `here` through a relay that cuts it after [`CUT`]
/// bytes; checks that it failed, and waits for the server to report it.
fn cut_put(server: &TestServer, args: &[&str]) {
    cut_put_at(server, args, CUT);
}

/// [`cut_put`], cut after `cut` bytes.
fn cut_put_at(server: &TestServer, args: &[&str], cut: u64) {
    let reports = server.reports().len();
    let relay = Relay::start(server.addr(), Framing::Opaque, Cut::After(Way::Up, cut));
    let output = run(server, relay.port(), args);
    assert!(!output.status.success(), "{}", describe(&output));
    server.wait_for_reports(reports + 1);
}

fn run(server: &TestServer, port: u16, args: &[&str]) -> Output {
    client_at("127.0.0.1", port, args)
        .current_dir(server.client_dir())
        .output()
        .unwrap()
}

/// Issue 14: a put -r of a new tree cut off leaves nothing visible, and
/// the same put again skips the files the first try verified, sends the
/// rest, and ends with the tree whole and nothing kept.
#[test]
fn a_new_tree_cut_off_goes_on_from_the_files_it_verified() {
    let server = TestServer::start();
    make_photos(server.client_dir());
    cut_put(&server, &["put", "-r", "photos"]);
    let listed = server.run_client(&["list"]);
    assert_exit(&listed, 0);
    assert!(listed.stdout.is_empty(), "{}", describe(&listed));
    assert!(!kept(server.root()).is_empty());

    let relay = Relay::counting(server.addr(), Framing::Opaque);
    let (files, skipped) = counts(&run(&server, relay.port(), &["put", "-r", "photos"]));
    assert_eq!(files + skipped, FILES);
    // A cut after half the bytes leaves at least a few whole files
    // verified, whatever was still in the buffers.
    assert!(skipped >= 4, "{skipped} skipped");
    let sent = relay.counted(Way::Up);
    assert!(sent < files * MIB + MIB, "sent {sent} for {files} files");
    assert_same_tree(
        &server.client_dir().join("photos"),
        &server.root().join("photos"),
    );
    assert_eq!(kept(server.root()), Vec::<String>::new());
}

/// What the first try kept but the source no longer has is not in the
/// tree the second try makes, and a file changed since is sent again.
#[test]
fn a_new_tree_goes_on_as_its_source_is_now() {
    let server = TestServer::start();
    make_photos(server.client_dir());
    cut_put(&server, &["put", "-r", "photos"]);
    assert!(!kept(server.root()).is_empty());
    let photos = server.client_dir().join("photos");
    std::fs::remove_file(photos.join("x/00.bin")).unwrap();
    std::fs::remove_dir_all(photos.join("y")).unwrap();
    write_file(&photos, "y", b"now a file");
    write_file(&photos, "x/02.bin", &pseudo_random_bytes(MIB as usize, 99));

    let output = server.run_client(&["put", "-r", "photos"]);
    let (files, skipped) = counts(&output);
    assert_eq!(files + skipped, FILES / 2, "{}", describe(&output));
    assert!(skipped >= 1, "{}", describe(&output));
    assert_same_tree(&photos, &server.root().join("photos"));
    assert_eq!(kept(server.root()), Vec::<String>::new());
}

/// `--restart` discards what the first try kept: everything is sent.
#[test]
fn restart_puts_a_new_tree_from_the_start() {
    let server = TestServer::start();
    make_photos(server.client_dir());
    cut_put(&server, &["put", "-r", "photos"]);
    assert!(!kept(server.root()).is_empty());
    let output = server.run_client(&["put", "-r", "--restart", "photos"]);
    assert_eq!(counts(&output), (FILES, 0));
    assert_same_tree(
        &server.client_dir().join("photos"),
        &server.root().join("photos"),
    );
    assert_eq!(kept(server.root()), Vec::<String>::new());
}

/// What one token's try kept is not another's to go on from: Bob's put of
/// the same tree sends it all, and leaves Alice's be.
#[test]
fn another_token_does_not_go_on_from_a_kept_tree() {
    let (_keys, tokens) = alice_and_bob_token_file();
    let mut server = BinaryServer::start(&["--token-file", tokens.to_str().unwrap()]);
    let here = tempfile::tempdir().unwrap();
    make_photos(here.path());
    let as_who = |token: &str, port: u16, args: &[&str]| {
        let mut command = client_at("127.0.0.1", port, args);
        command.env("FERRY_TOKEN", token).current_dir(here.path());
        command.output().unwrap()
    };
    let relay = Relay::start(server.addr(), Framing::Opaque, Cut::After(Way::Up, CUT));
    assert!(!as_who(ALICE, relay.port(), &["put", "-r", "photos"])
        .status
        .success());
    server.next_report_saying("put-tree");
    let alices = kept(server.root.path());
    assert!(!alices.is_empty());

    let output = as_who(BOB, server.port, &["put", "-r", "photos", "bobs"]);
    assert_eq!(counts(&output), (FILES, 0));
    let output = as_who(BOB, server.port, &["put", "-r", "photos"]);
    assert_eq!(counts(&output), (FILES, 0));
    assert_eq!(kept(server.root.path()), alices);
}

/// A tree kept longer than `--partial-ttl` is swept when the server
/// starts, as a partial is.
#[test]
fn an_expired_kept_tree_is_swept_at_start() {
    let server = BinaryServer::start(&[]);
    let here = tempfile::tempdir().unwrap();
    make_photos(here.path());
    let relay = Relay::start(server.addr(), Framing::Opaque, Cut::After(Way::Up, CUT));
    let cut = client_at("127.0.0.1", relay.port(), &["put", "-r", "photos"])
        .current_dir(here.path())
        .output()
        .unwrap();
    assert!(!cut.status.success());
    let mut server = server;
    server.next_report_saying("put-tree");
    let root = server.kill_keeping_root();
    let partials = root.path().join(PARTIALS_DIR);
    let tree = std::fs::read_dir(&partials)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "tree"))
        .expect("a kept tree");
    let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
    std::fs::File::open(&tree)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();

    let mut server = BinaryServer::start_in(root);
    let swept = server.next_report_saying("cleanup");
    assert!(
        swept.contains("1 partial uploads older than 24h"),
        "{swept}"
    );
    assert_eq!(kept(server.root.path()), Vec::<String>::new());
}

/// The hidden directory a new tree download is built in beside `target`.
fn hidden_tree(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!(".{name}.ferry-partial-tree"))
}

/// A server serving `photos/`, and its copy's path on the server.
fn server_with_photos() -> TestServer {
    let server = TestServer::start();
    make_photos(server.root());
    server
}

/// Gets `photos` through a relay that cuts it after `cut` bytes down;
/// checks that it failed, with nothing under the name, and something
/// kept in the hidden directory.
fn cut_get(server: &TestServer, args: &[&str], cut: u64) {
    let relay = Relay::start(server.addr(), Framing::Opaque, Cut::After(Way::Down, cut));
    let output = run(server, relay.port(), args);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(!server.client_dir().join("photos").exists());
    let hidden = hidden_tree(server.client_dir(), "photos");
    assert!(
        !files_under(&hidden).is_empty(),
        "nothing kept: {}",
        describe(&output)
    );
}

/// Issue 14: a get -r of a new tree cut off leaves nothing under the
/// name, and keeps the files it verified in a hidden directory beside
/// it; the same get again skips them, fetches the rest, and leaves the
/// tree whole and nothing hidden.
#[test]
fn a_new_tree_download_cut_off_goes_on_from_the_files_it_verified() {
    let server = server_with_photos();
    cut_get(&server, &["get", "-r", "photos"], CUT);
    let relay = Relay::counting(server.addr(), Framing::Opaque);
    let (files, skipped) = counts(&run(&server, relay.port(), &["get", "-r", "photos"]));
    assert_eq!(files + skipped, FILES);
    assert!(skipped >= 4, "{skipped} skipped");
    let received = relay.counted(Way::Down);
    assert!(
        received < files * MIB + MIB,
        "received {received} for {files} files"
    );
    assert_same_tree(
        &server.root().join("photos"),
        &server.client_dir().join("photos"),
    );
    assert_eq!(
        files_under(server.client_dir()).first().map(String::as_str),
        Some("photos")
    );
    assert!(!hidden_tree(server.client_dir(), "photos").exists());
}

/// The tree a download goes on from ends as the server's tree is now:
/// what it no longer has goes, what changed comes again; `--restart`
/// fetches everything.
#[test]
fn a_new_tree_download_goes_on_as_the_server_s_tree_is_now_or_restarts() {
    let server = server_with_photos();
    cut_get(&server, &["get", "-r", "photos"], CUT);
    let photos = server.root().join("photos");
    std::fs::remove_file(photos.join("x/00.bin")).unwrap();
    std::fs::remove_dir_all(photos.join("y")).unwrap();
    write_file(&photos, "y", b"now a file");
    write_file(&photos, "x/02.bin", &pseudo_random_bytes(MIB as usize, 99));
    let output = server.run_client(&["get", "-r", "photos"]);
    let (files, skipped) = counts(&output);
    assert_eq!(files + skipped, FILES / 2, "{}", describe(&output));
    assert!(skipped >= 1, "{}", describe(&output));
    assert_same_tree(&photos, &server.client_dir().join("photos"));

    std::fs::remove_dir_all(server.client_dir().join("photos")).unwrap();
    cut_get(&server, &["get", "-r", "photos"], CUT / 2);
    let output = server.run_client(&["get", "-r", "--restart", "photos"]);
    assert_eq!(counts(&output), (FILES / 2, 0));
    assert_same_tree(&photos, &server.client_dir().join("photos"));
    assert!(!hidden_tree(server.client_dir(), "photos").exists());
}

/// Ctrl-C mid-way through a new tree download keeps what it verified,
/// hidden, and the next download goes on from it.
#[test]
fn ctrl_c_mid_tree_download_keeps_the_files_verified() {
    let server = server_with_photos();
    let relay = Relay::start(server.addr(), Framing::Opaque, Cut::Hold(Way::Down, CUT));
    let client = client_at("127.0.0.1", relay.port(), &["get", "-r", "photos"])
        .current_dir(server.client_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Held, the client has written what it got; its files wait for their
    // batch in the hidden directory under temporary names.
    let hidden = hidden_tree(server.client_dir(), "photos");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let written = || match hidden.exists() {
        true => files_under(&hidden),
        false => Vec::new(),
    };
    while written().iter().filter(|path| path.contains('.')).count() < 4 {
        assert!(std::time::Instant::now() < deadline, "{:?}", written());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = client.id().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    let output = client.wait_with_output().unwrap();
    assert_exit_saying(&output, 130, "interrupted");
    drop(relay);
    assert!(!server.client_dir().join("photos").exists());

    let (files, skipped) = counts(&server.run_client(&["get", "-r", "photos"]));
    assert_eq!(files + skipped, FILES);
    assert!(skipped >= 4, "{skipped} skipped");
    assert_same_tree(
        &server.root().join("photos"),
        &server.client_dir().join("photos"),
    );
}

/// The big file of a tree: a step and a little more, so a cut past its
/// step keeps a partial of one step.
const BIG_FILE: u64 = ferry::protocol::STEP + 8 * MIB;

/// Makes `big/` in `dir`: a small file, a big one, and a small one.
fn make_big_tree(dir: &Path) {
    write_file(dir, "big/a.bin", &pseudo_random_bytes(MIB as usize, 11));
    write_file(
        dir,
        "big/b.bin",
        &pseudo_random_bytes(BIG_FILE as usize, 12),
    );
    write_file(dir, "big/c.bin", &pseudo_random_bytes(MIB as usize, 13));
}

/// Where a transfer of `big/` is cut: in its big file, past its step.
const IN_BIG_FILE: u64 = MIB + ferry::protocol::STEP + 2 * MIB;

/// `--verbose` names what became of each file of [`make_big_tree`] on the
/// run after a cut in its big file (issue 16).
fn assert_names_resumed_file(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("  skipped \"a.bin\" (same content)"),
        "{stderr}"
    );
    // The cut came past its first step, which the receiver had synced.
    let rest = BIG_FILE - ferry::protocol::STEP;
    let resumed = format!("  resumed \"b.bin\" {rest} of {BIG_FILE} bytes");
    assert!(stderr.contains(&resumed), "{stderr}");
    assert!(
        stderr.contains(&format!("  moved \"c.bin\" {MIB} bytes")),
        "{stderr}"
    );
}

/// Issue 14: the file a tree download was cut in resumes from its last
/// step: the next get -r skips the file before it, is sent only the rest
/// of the cut one, and the file after it.
#[test]
fn the_file_a_tree_download_was_cut_in_resumes_from_its_last_step() {
    let server = TestServer::start();
    make_big_tree(server.root());
    let relay = Relay::start(
        server.addr(),
        Framing::Opaque,
        Cut::After(Way::Down, IN_BIG_FILE),
    );
    let output = run(&server, relay.port(), &["get", "-r", "big"]);
    assert!(!output.status.success(), "{}", describe(&output));

    let relay = Relay::counting(server.addr(), Framing::Opaque);
    let output = run(&server, relay.port(), &["-v", "get", "-r", "big"]);
    let (files, skipped) = counts(&output);
    assert_eq!((files, skipped), (2, 1), "{}", describe(&output));
    assert_names_resumed_file(&output);
    let rest = BIG_FILE - ferry::protocol::STEP + MIB;
    let received = relay.counted(Way::Down);
    assert!(
        received < rest + MIB,
        "received {received}, the rest being {rest}"
    );
    assert_same_tree(&server.root().join("big"), &server.client_dir().join("big"));
    assert_eq!(
        files_under(server.client_dir()).len(),
        4,
        "{:?}",
        files_under(server.client_dir())
    );

    // With --restart, what a cut kept, the big file's partial too, is
    // thrown away: everything comes again.
    std::fs::remove_dir_all(server.client_dir().join("big")).unwrap();
    let relay = Relay::start(
        server.addr(),
        Framing::Opaque,
        Cut::After(Way::Down, IN_BIG_FILE),
    );
    assert!(!run(&server, relay.port(), &["get", "-r", "big"])
        .status
        .success());
    let relay = Relay::counting(server.addr(), Framing::Opaque);
    let output = run(&server, relay.port(), &["get", "-r", "--restart", "big"]);
    assert_eq!(counts(&output), (3, 0), "{}", describe(&output));
    assert!(relay.counted(Way::Down) > BIG_FILE + 2 * MIB);
    assert_same_tree(&server.root().join("big"), &server.client_dir().join("big"));
}

/// Issue 14: the file a tree upload was cut in resumes from the server's
/// last step: the next put -r skips the file before it, sends only the
/// rest of the cut one, and the file after it; nothing is kept after.
#[test]
fn the_file_a_tree_upload_was_cut_in_resumes_from_its_last_step() {
    let server = TestServer::start();
    make_big_tree(server.client_dir());
    cut_put_at(&server, &["put", "-r", "big"], IN_BIG_FILE);

    let relay = Relay::counting(server.addr(), Framing::Opaque);
    let output = run(&server, relay.port(), &["-v", "put", "-r", "big"]);
    let (files, skipped) = counts(&output);
    assert_eq!((files, skipped), (2, 1), "{}", describe(&output));
    assert_names_resumed_file(&output);
    let rest = BIG_FILE - ferry::protocol::STEP + MIB;
    let sent = relay.counted(Way::Up);
    assert!(sent < rest + MIB, "sent {sent}, the rest being {rest}");
    assert_same_tree(&server.client_dir().join("big"), &server.root().join("big"));
    assert_eq!(kept(server.root()), Vec::<String>::new());
}

/// A client that, offered a partial of a file, then sends that file's
/// entry shorter than the partial is told `bad-request`; the server
/// neither panics nor reads a body of a wrapped-around length.
#[test]
fn a_held_file_sent_shorter_than_its_partial_is_a_bad_request() {
    use ferry::protocol::{EntryKind, ErrorCode, Message, TreeEntry};
    let server = TestServer::start();
    make_big_tree(server.client_dir());
    cut_put_at(&server, &["put", "-r", "big"], IN_BIG_FILE);
    let modified = |name: &str| {
        let path = server.client_dir().join("big").join(name);
        let time = std::fs::metadata(path).unwrap().modified().unwrap();
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let file = |name: &str, size: u64| {
        Message::TreeEntry(TreeEntry {
            kind: EntryKind::File,
            size,
            mode: 0o644,
            modified: modified(name),
            digest: None,
            path: name.to_owned(),
        })
    };
    let mut raw = RawClient::handshake(server.addr());
    raw.send(&Message::PutTree {
        target: "big".into(),
        replace: false,
        top: None,
        restart: false,
    });
    raw.send(&file("b.bin", BIG_FILE));
    raw.send(&Message::TreeEnd {
        entries: 1,
        bytes: BIG_FILE,
    });
    let Some(Message::Held { index: 0, prefix }) = raw.recv() else {
        panic!("no partial held");
    };
    assert_eq!(prefix.len, ferry::protocol::STEP);
    assert_eq!(raw.recv(), Some(Message::Proceed));
    raw.send(&file("b.bin", 1));
    match raw.recv() {
        Some(Message::Error { code, .. }) => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
}
