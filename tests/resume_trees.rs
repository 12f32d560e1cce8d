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
    let reports = server.reports().len();
    let relay = Relay::start(server.addr(), Framing::Opaque, Cut::After(Way::Up, CUT));
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

const ALICE: &str = "alice-token-6f1d93b2c8e04a75";
const BOB: &str = "bob-token-0c2e8d4a9b7f1e36";

/// What one token's try kept is not another's to go on from: Bob's put of
/// the same tree sends it all, and leaves Alice's be.
#[test]
fn another_token_does_not_go_on_from_a_kept_tree() {
    let keys = tempfile::tempdir().unwrap();
    let tokens = write_file(
        keys.path(),
        "tokens",
        format!("{ALICE} rw\n{BOB} rw\n").as_bytes(),
    );
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
