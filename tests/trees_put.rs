//! `put -r` and puts of several files: one PutTree request per command
//! (PROTOCOL.md §5.10, issue 13).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use ferry::protocol::{EntryKind, ErrorCode, FailureKind, Message, TreeEntry, TEMP_PREFIX};
use ferry::report::Outcome;
use ferry::security::access::{Access, ServerMode};
use ferry::store::{StoreSpec, PARTIALS_DIR};

/// 2001-09-09, long before any test runs.
const OLD: i64 = 1_000_000_000;

fn set_time(path: &Path, seconds: i64) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64);
    std::fs::File::open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with nested and empty directories, names with spaces, Unicode
/// and a newline, sizes 0, 1 and 4096 (and `big` bytes more in one file),
/// three modes and old times; returns the files and directories a put
/// must carry, as paths relative to `dir`.
fn make_tree(dir: &Path, big: usize) -> Vec<&'static str> {
    for sub in ["deep", "deep/er", "empty", "with space"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
    }
    let files: [(&str, Vec<u8>, u32); 6] = [
        ("zero", Vec::new(), 0o644),
        ("one", b"1".to_vec(), 0o600),
        ("deep/er/four k", pseudo_random_bytes(4096, 1), 0o755),
        ("with space/crème brûlée.txt", b"sugar".to_vec(), 0o644),
        ("deep/big", pseudo_random_bytes(big, 2), 0o600),
        ("new\nline", b"skipped".to_vec(), 0o644),
    ];
    for (name, data, mode) in &files {
        std::fs::write(dir.join(name), data).unwrap();
        set_mode(&dir.join(name), *mode);
        set_time(&dir.join(name), OLD);
    }
    std::os::unix::fs::symlink("one", dir.join("link to one")).unwrap();
    set_mode(&dir.join("empty"), 0o700);
    for sub in ["deep/er", "deep", "empty", "with space"] {
        set_time(&dir.join(sub), OLD + 60);
    }
    vec![
        "deep",
        "deep/big",
        "deep/er",
        "deep/er/four k",
        "empty",
        "one",
        "with space",
        "with space/crème brûlée.txt",
        "zero",
    ]
}

/// Asserts `theirs` holds what `ours` does at each of `paths`: the same
/// kind, bytes, permission bits and modification time.
fn assert_same_tree(ours: &Path, theirs: &Path, paths: &[&str]) {
    let mut found = files_under(theirs);
    found.retain(|path| !path.is_empty());
    let mut expected: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected, "what the server holds");
    for path in paths {
        let (a, b) = (ours.join(path), theirs.join(path));
        let (ma, mb) = (a.symlink_metadata().unwrap(), b.symlink_metadata().unwrap());
        assert_eq!(ma.is_dir(), mb.is_dir(), "{path}");
        assert_eq!(ma.mode() & 0o777, mb.mode() & 0o777, "mode of {path}");
        assert_eq!(ma.mtime(), mb.mtime(), "time of {path}");
        if ma.is_file() {
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{path}"
            );
        }
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts no temporary name is left in the store, nor (on S3) an
/// upload open.
fn no_temporaries(server: &TestServer) {
    let left: Vec<String> = (server.served_tree().into_iter())
        .filter(|path| path.contains(TEMP_PREFIX))
        .collect();
    assert!(left.is_empty(), "temporary names left: {left:?}");
    if let Some(bucket) = server.bucket() {
        assert_eq!(bucket.open_uploads(), [], "uploads left open");
    }
}

/// On S3: asserts the served tree `target` holds what `ours` does at
/// each of `paths`, as S3 keeps it: the same kinds and bytes, and each
/// file's modification time in its metadata.
fn assert_same_served(server: &TestServer, ours: &Path, target: &str, paths: &[&str]) {
    let mut expected: Vec<String> = paths.iter().map(|p| format!("{target}/{p}")).collect();
    expected.push(target.to_owned());
    expected.sort();
    assert_eq!(server.served_tree(), expected, "what the server holds");
    let bucket = server.bucket().unwrap();
    for path in paths {
        let ours = ours.join(path);
        if ours.is_dir() {
            continue;
        }
        let key = format!("{S3_PREFIX}/{target}/{path}");
        assert!(
            bucket.read(&key).unwrap() == std::fs::read(&ours).unwrap(),
            "{path}"
        );
        let head = bucket
            .block_on(
                bucket
                    .client()
                    .head_object()
                    .bucket(bucket.name())
                    .key(&key)
                    .send(),
            )
            .unwrap();
        let kept = head.metadata().and_then(|m| m.get("ferry-mtime")).cloned();
        let time = ours.metadata().unwrap().mtime().to_string();
        assert_eq!(kept, Some(time), "time of {path}");
    }
}

fn a_tree_round_trips_with_modes_times_and_odd_names_and_a_second_run_moves_nothing(
    backing: Backing,
) {
    let server = TestServer::start_in(backing);
    let photos = server.client_dir().join("photos");
    std::fs::create_dir(&photos).unwrap();
    let paths = make_tree(&photos, 64 * 1024 * 1024);

    let output = server.run_client(&["put", "-r", "photos"]);
    assert_exit(&output, 0);
    match backing {
        Backing::Local => assert_same_tree(&photos, &server.root().join("photos"), &paths),
        // S3 keeps no modes, nor directory times: the bytes, the empty
        // directory and the files' times come back.
        Backing::S3 => assert_same_served(&server, &photos, "photos", &paths),
    }
    assert!(
        stderr(&output).contains(r#""photos/new\nline""#),
        "{}",
        describe(&output)
    );
    assert!(
        stderr(&output).contains("link to one"),
        "{}",
        describe(&output)
    );
    assert!(
        stderr(&output).contains("ok 5 files, 0 skipped"),
        "{}",
        describe(&output)
    );
    no_temporaries(&server);

    let again = server.run_client(&["put", "-r", "photos"]);
    assert_exit(&again, 0);
    assert!(
        stderr(&again).contains("ok 0 files, 5 skipped, 0 bytes"),
        "{}",
        describe(&again)
    );
    let reports = server.wait_for_reports(2);
    let line = reports.last().unwrap().to_string();
    assert!(
        line.contains("put-tree \"photos\" ok 0 files, 5 skipped"),
        "{line}"
    );
}

#[test]
fn a_tree_round_trips_over_tls() {
    let server = BinaryServer::start_tls(&[]);
    let local = tempfile::tempdir().unwrap();
    let photos = local.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    let paths = make_tree(&photos, 1024 * 1024);
    let output = pinned(&server, &["put", "-r", "photos", "album"])
        .current_dir(local.path())
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_same_tree(&photos, &server.root.path().join("album"), &paths);
}

fn a_tree_in_the_way_is_refused_naming_what_conflicts_and_nothing_moves(backing: Backing) {
    let server = TestServer::start_in(backing);
    let photos = server.client_dir().join("photos");
    std::fs::create_dir(&photos).unwrap();
    make_tree(&photos, 10);
    // A file where the tree has a directory.
    server.write_served("photos/deep", b"a file");
    // Same size, other content: a conflict too, found by digest once the
    // names are clear.
    server.write_served("photos/one", b"2");
    let output = server.run_client(&["put", "-r", "photos"]);
    assert_exit_saying(&output, 1, r#"1 name of the tree is taken: "deep""#);
    assert_eq!(
        server.served_tree(),
        ["photos", "photos/deep", "photos/one"]
    );
    assert_exit(&server.run_client(&["rm", "photos/deep"]), 0);
    let output = server.run_client(&["put", "-r", "photos"]);
    assert_exit_saying(&output, 1, r#"1 name of the tree is taken: "one""#);
    assert_eq!(server.served_tree(), ["photos", "photos/one"]);
    assert_eq!(server.read_served("photos/one").unwrap(), b"2");
    // Many: the first 20 named, all counted.
    for n in 0..30 {
        write_file(server.client_dir(), &format!("many/{n:02}"), b"new");
        server.write_served(&format!("many/{n:02}"), b"older");
    }
    let output = server.run_client(&["put", "-r", "many"]);
    assert_exit_saying(&output, 1, "30 names of the tree are taken");
    assert!(
        stderr(&output).contains(r#"the first 20: "00""#),
        "{}",
        describe(&output)
    );
    assert!(stderr(&output).contains(r#""19""#), "{}", describe(&output));
    assert!(
        !stderr(&output).contains(r#""20""#),
        "{}",
        describe(&output)
    );
}

/// The protocol's own words: a manifest, then the answer, with no body
/// ever sent.
fn file(path: &str, size: u64) -> Message {
    Message::TreeEntry(TreeEntry {
        kind: EntryKind::File,
        size,
        mode: 0o644,
        modified: OLD,
        digest: None,
        path: path.into(),
    })
}

fn dir(path: &str) -> Message {
    Message::TreeEntry(TreeEntry {
        kind: EntryKind::Directory,
        size: 0,
        mode: 0o755,
        modified: OLD,
        digest: None,
        path: path.into(),
    })
}

/// Sends a PutTree and its manifest, ending it with the right counts.
fn send_manifest(client: &mut RawClient, target: &str, replace: bool, entries: &[Message]) {
    client.send(&Message::PutTree {
        target: target.into(),
        replace,
        top: None,
        restart: false,
    });
    let mut bytes = 0;
    for entry in entries {
        if let Message::TreeEntry(entry) = entry {
            bytes += entry.size;
        }
        client.send(entry);
    }
    client.send(&Message::TreeEnd {
        entries: entries.len() as u64,
        bytes,
    });
}

fn error_code(message: Option<Message>) -> ErrorCode {
    match message {
        Some(Message::Error { code, .. }) => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Whether the connection is still in step: a Stat is answered.
fn still_in_step(client: &mut RawClient) {
    client.send(&Message::Stat { name: "".into() });
    assert!(
        matches!(client.recv(), Some(Message::Info(_))),
        "the connection is out of step"
    );
}

fn a_conflict_is_answered_before_any_body_is_sent(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("d/x", b"old");
    server.make_served_dir("d/sub");
    let mut client = RawClient::handshake(server.addr());
    send_manifest(
        &mut client,
        "d",
        false,
        &[file("sub", 3), file("x", 5), file("y", 1 << 30)],
    );
    // Not a byte of the gigabyte was sent, and the answer is in.
    assert_eq!(
        client.recv(),
        Some(Message::Conflict { name: "sub".into() })
    );
    assert_eq!(client.recv(), Some(Message::Conflict { name: "x".into() }));
    let Some(Message::Error { code, message }) = client.recv() else {
        panic!("no error after the conflicts");
    };
    assert_eq!(code, ErrorCode::AlreadyExists);
    assert!(
        message.starts_with("2 names of the tree are taken"),
        "{message}"
    );
    still_in_step(&mut client);
    assert_eq!(server.served_tree(), ["d", "d/sub", "d/x"]);
}

fn replacing_needs_the_right_to_delete(backing: Backing) {
    for (mode, allowed) in [(ServerMode::NoDelete, false), (ServerMode::Full, true)] {
        let server = TestServer::start_in_with(backing, |config| {
            config.access = Arc::new(Access { tokens: None, mode });
        });
        server.write_served("photos/one", b"old");
        server.write_served("photos/same", b"same");
        write_file(server.client_dir(), "photos/one", b"new content");
        write_file(server.client_dir(), "photos/same", b"same");
        write_file(server.client_dir(), "photos/two", b"2");
        let output = server.run_client(&["put", "-r", "--replace", "photos"]);
        let one = server.read_served("photos/one").unwrap();
        if allowed {
            assert_exit(&output, 0);
            assert!(
                stderr(&output).contains("ok 2 files, 1 skipped"),
                "{}",
                describe(&output)
            );
            assert_eq!(one, b"new content");
            assert_eq!(server.read_served("photos/two").unwrap(), b"2");
        } else {
            assert_exit_saying(&output, 1, "replacing needs the right to delete");
            assert_eq!(one, b"old");
            assert_eq!(
                server.served_tree(),
                ["photos", "photos/one", "photos/same"]
            );
            // Refused before any body, and the stream is in step.
            let mut client = RawClient::handshake(server.addr());
            send_manifest(&mut client, "photos", true, &[file("one", 1 << 30)]);
            assert_eq!(error_code(client.recv()), ErrorCode::Forbidden);
            still_in_step(&mut client);
        }
        // Without --replace, the other content is a conflict.
        write_file(server.client_dir(), "photos/one", b"newer content");
        let output = server.run_client(&["put", "-r", "photos"]);
        assert_exit_saying(&output, 1, "1 name of the tree is taken");
    }
}

fn several_sources_go_into_a_directory_target_made_if_missing(backing: Backing) {
    let server = TestServer::start_in(backing);
    let at = server.client_dir();
    write_file(at, "a.txt", b"a");
    write_file(at, "b.txt", b"bb");
    write_file(at, "photos/p.jpg", b"jpeg");
    let output = server.run_client(&["put", "-r", "b.txt", "a.txt", "photos", "dest"]);
    assert_exit(&output, 0);
    assert_eq!(
        server.served_tree(),
        [
            "dest",
            "dest/a.txt",
            "dest/b.txt",
            "dest/photos",
            "dest/photos/p.jpg"
        ]
    );
    // Into an existing directory, merging.
    write_file(at, "c.txt", b"c");
    let output = server.run_client(&["mput", "c.txt", "a.txt", "dest/"]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("ok 1 file, 1 skipped"),
        "{}",
        describe(&output)
    );
    assert_eq!(server.read_served("dest/c.txt").unwrap(), b"c");
    // A source named on the command line is followed if it is a symlink.
    std::os::unix::fs::symlink("photos", at.join("album")).unwrap();
    let output = server.run_client(&["put", "-r", "album", "a.txt", "linked"]);
    assert_exit(&output, 0);
    assert_eq!(server.read_served("linked/album/p.jpg").unwrap(), b"jpeg");
}

/// What README tells a user whose shell expands `put *.txt` into two
/// names: give a target directory, the served one as `./`, and the files
/// go into it rather than one onto the other.
fn several_names_go_into_the_target_directory_the_served_one_as_dot_slash(backing: Backing) {
    let server = TestServer::start_in(backing);
    write_file(server.client_dir(), "a.txt", b"a");
    write_file(server.client_dir(), "b.txt", b"b");
    assert_exit(&server.run_client(&["put", "a.txt", "b.txt", "./"]), 0);
    assert_exit(&server.run_client(&["put", "a.txt", "b.txt", "dir/"]), 0);
    assert_eq!(
        server.served_tree(),
        ["a.txt", "b.txt", "dir", "dir/a.txt", "dir/b.txt"]
    );
    assert_eq!(server.read_served("b.txt").unwrap(), b"b");
}

fn targets_follow_cp_rules(backing: Backing) {
    let server = TestServer::start_in(backing);
    let at = server.client_dir();
    write_file(at, "photos/p.jpg", b"jpeg");
    write_file(at, "a.txt", b"a");
    // A missing target becomes the copy, with or without a slash.
    assert_exit(&server.run_client(&["put", "-r", "photos", "backup"]), 0);
    assert_exit(&server.run_client(&["put", "-r", "photos", "other/"]), 0);
    assert!(server.read_served("backup/p.jpg").is_some());
    assert!(server.read_served("other/p.jpg").is_some());
    // An existing directory target takes the directory inside it.
    assert_exit(&server.run_client(&["put", "-r", "photos", "backup"]), 0);
    assert!(server.read_served("backup/photos/p.jpg").is_some());
    // One file: into a directory, or a new name.
    assert_exit(&server.run_client(&["put", "a.txt", "backup"]), 0);
    assert_exit(&server.run_client(&["put", "a.txt", "new/"]), 0);
    assert_exit(&server.run_client(&["put", "a.txt", "b.txt"]), 0);
    for name in ["backup/a.txt", "new/a.txt", "b.txt"] {
        assert_eq!(server.read_served(name).unwrap(), b"a", "{name}");
    }
    // --replace on one file: atomically, by its new name.
    write_file(at, "a.txt", b"A!");
    assert_exit(
        &server.run_client(&["put", "--replace", "a.txt", "b.txt"]),
        0,
    );
    assert_eq!(server.read_served("b.txt").unwrap(), b"A!");
    // A directory without -r.
    let output = server.run_client(&["put", "photos"]);
    assert_exit_saying(&output, 1, "put -r");
    // An empty directory is copied as one (on S3, by its marker).
    std::fs::create_dir(at.join("nothing")).unwrap();
    assert_exit(&server.run_client(&["put", "-r", "nothing"]), 0);
    assert!(server.served_tree().contains(&"nothing".to_owned()));
}

#[test]
fn malformed_manifests_are_bad_requests_and_end_the_connection() {
    let server = TestServer::start();
    let cases: [(&str, Vec<Message>); 5] = [
        ("a duplicate", vec![file("a", 1), file("a", 1)]),
        ("out of order", vec![file("b", 1), file("a", 1)]),
        (
            "a file then its child",
            vec![file("f", 1), file("f/child", 1)],
        ),
        ("a parent not announced", vec![dir("d"), file("e/x", 1)]),
        ("a way out", vec![file("../x", 1)]),
    ];
    for (label, entries) in cases {
        let mut client = RawClient::handshake(server.addr());
        send_manifest(&mut client, "t", false, &entries);
        assert_eq!(error_code(client.recv()), ErrorCode::BadRequest, "{label}");
        assert!(client.is_closed(), "{label}");
    }
    // A TreeEnd that miscounts.
    let mut client = RawClient::handshake(server.addr());
    client.send(&Message::PutTree {
        target: "t".into(),
        replace: false,
        top: None,
        restart: false,
    });
    client.send(&file("a", 1));
    client.send(&Message::TreeEnd {
        entries: 2,
        bytes: 1,
    });
    assert_eq!(error_code(client.recv()), ErrorCode::BadRequest);
    assert!(server.root_files().is_empty());
}

#[test]
fn too_many_entries_are_refused_before_any_body() {
    let server = TestServer::start_with(|config| config.max_tree_entries = 2);
    let mut client = RawClient::handshake(server.addr());
    send_manifest(
        &mut client,
        "",
        false,
        &[file("a", 1 << 30), file("b", 1), file("c", 1)],
    );
    let Some(Message::Error { code, message }) = client.recv() else {
        panic!("no refusal");
    };
    assert_eq!(code, ErrorCode::TooLarge);
    assert!(message.contains("more than 2 entries"), "{message}");
    still_in_step(&mut client);

    write_file(server.client_dir(), "t/a", b"a");
    write_file(server.client_dir(), "t/b", b"b");
    write_file(server.client_dir(), "t/c", b"c");
    let output = server.run_client(&["put", "-r", "t"]);
    assert_exit_saying(&output, 1, "more than 2 entries");
    assert!(server.root_files().is_empty());
}

/// Sends `data` as the body of the file entry just sent, with its trailer.
fn send_body(client: &mut RawClient, data: &[u8]) {
    client.send_raw(data);
    client.send(&Message::Trailer {
        digest: *blake3::hash(data).as_bytes(),
    });
}

/// Sends two files' entries, the first whole and the second half, then
/// hangs up; returns once the server has reported the failure.
fn drop_mid_tree(server: &TestServer, target: &str) {
    let big = pseudo_random_bytes(1024 * 1024, 3);
    let mut client = RawClient::handshake(server.addr());
    let entries = [file("a", 10), file("b", big.len() as u64)];
    send_manifest(&mut client, target, false, &entries);
    assert_eq!(client.recv(), Some(Message::Proceed));
    client.send(&entries[0]);
    send_body(&mut client, b"0123456789");
    client.send(&entries[1]);
    client.send_raw(&big[..big.len() / 2]);
    drop(client);
    let report = server.wait_for_reports(1).pop().unwrap();
    assert!(
        matches!(
            report.outcome,
            Outcome::Failed {
                kind: FailureKind::ConnectionLost,
                ..
            }
        ),
        "{report}"
    );
}

/// Issue 14: a new tree cut off shows nothing, not even the parents made
/// for it, but keeps what it verified, hidden; the same tree put again
/// names the kept file a candidate, skips it on its digest, and takes
/// only the rest. Local only: S3 cannot make a tree appear whole (no
/// rename of a prefix), so there a new tree is visible as it grows
/// (`a_put_r_killed_midway_keeps_whole_files_on_s3_and_the_next_run_skips_them`).
#[test]
fn a_connection_dropped_mid_tree_shows_nothing_of_a_new_tree_and_the_next_try_goes_on() {
    let server = TestServer::start();
    drop_mid_tree(&server, "fresh/tree");
    let shown: Vec<String> = server
        .root_files()
        .into_iter()
        .filter(|path| !path.starts_with(PARTIALS_DIR))
        .collect();
    assert_eq!(shown, Vec::<String>::new());

    let big = pseudo_random_bytes(1024 * 1024, 3);
    let mut client = RawClient::handshake(server.addr());
    let entries = [file("a", 10), file("b", big.len() as u64)];
    send_manifest(&mut client, "fresh/tree", false, &entries);
    let kept = Message::Skip { first: 0, count: 1 };
    assert_eq!(client.recv(), Some(kept.clone()));
    assert_eq!(client.recv(), Some(Message::Proceed));
    client.send(&Message::Trailer {
        digest: *blake3::hash(b"0123456789").as_bytes(),
    });
    assert_eq!(client.recv(), Some(kept));
    assert_eq!(client.recv(), Some(Message::Proceed));
    client.send(&entries[1]);
    send_body(&mut client, &big);
    client.send(&Message::TreeEnd {
        entries: 1,
        bytes: big.len() as u64,
    });
    assert_eq!(
        client.recv(),
        Some(Message::TreeDone {
            files: 1,
            skipped: 1,
            bytes: big.len() as u64,
        })
    );
    assert_eq!(
        server.root_files(),
        ["fresh", "fresh/tree", "fresh/tree/a", "fresh/tree/b"]
    );
    assert_eq!(
        std::fs::read(server.root().join("fresh/tree/b")).unwrap(),
        big
    );
}

fn a_connection_dropped_mid_merge_leaves_each_file_complete_or_absent(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.make_served_dir("m");
    drop_mid_tree(&server, "m");
    for path in server.served_tree() {
        match path.as_str() {
            "m" => {}
            "m/a" => assert_eq!(server.read_served("m/a").unwrap(), b"0123456789"),
            other => panic!("left behind: {other}"),
        }
    }
    if let Some(bucket) = server.bucket() {
        eventually("the cut-off upload aborted", || {
            bucket.open_uploads().is_empty()
        });
    }
}

/// Issue 17: on S3 a tree is written file by file, each atomically, a
/// new one as a merge: a `put -r` whose client is killed midway leaves
/// the files it completed, whole, and no multipart upload open once the
/// server notices; the same command run again skips those files on
/// their digests and sends the rest.
#[test]
fn a_put_r_killed_midway_keeps_whole_files_on_s3_and_the_next_run_skips_them() {
    if common::s3::S3Server::shared().is_none() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    let at = server.client_dir();
    let step = ferry::protocol::STEP as usize;
    let big = pseudo_random_bytes(step + 8 * 1024 * 1024, 4);
    write_file(at, "photos/a", b"0123456789");
    write_file(at, "photos/b", &pseudo_random_bytes(1024 * 1024, 5));
    write_file(at, "photos/c", &big);
    write_file(at, "photos/d", b"last");
    // Held in `c`, after its first step went up as a part.
    let held = (1024 * 1024 + step + 4 * 1024 * 1024) as u64;
    let relay = Relay::start(server.addr(), Framing::Opaque, Cut::Hold(Way::Up, held));
    let mut client = client_at("127.0.0.1", relay.port(), &["put", "-r", "photos"])
        .current_dir(at)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let bucket = server.bucket().unwrap();
    eventually("a part of c went up", || !bucket.open_uploads().is_empty());
    client.kill().unwrap();
    client.wait().unwrap();
    drop(relay);
    server.wait_for_reports(1);
    eventually("the cut-off upload aborted", || {
        bucket.open_uploads().is_empty()
    });
    assert_eq!(server.served_tree(), ["photos", "photos/a", "photos/b"]);
    assert_eq!(server.read_served("photos/a").unwrap(), b"0123456789");

    let output = server.run_client(&["put", "-r", "photos"]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("ok 2 files, 2 skipped"),
        "{}",
        describe(&output)
    );
    // The times too, of the file sent in parts as of the others.
    let paths = ["a", "b", "c", "d"];
    assert_same_served(&server, &at.join("photos"), "photos", &paths);
    no_temporaries(&server);
}

/// Issue 17: a tree on S3 cut off keeps every file that arrived whole
/// and verified, the small ones sent together included, a new tree as a
/// merge: they are not to be sent again.
#[test]
fn a_tree_cut_off_on_s3_keeps_every_file_that_arrived_verified() {
    if common::s3::S3Server::shared().is_none() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    let mut client = RawClient::handshake(server.addr());
    let entries = [file("a", 10), file("b", 3), file("c", 100)];
    send_manifest(&mut client, "new", false, &entries);
    assert_eq!(client.recv(), Some(Message::Proceed));
    client.send(&entries[0]);
    send_body(&mut client, b"0123456789");
    client.send(&entries[1]);
    send_body(&mut client, b"abc");
    client.send(&entries[2]);
    client.send_raw(&[b'c'; 50]);
    drop(client);
    server.wait_for_reports(1);
    assert_eq!(server.served_tree(), ["new", "new/a", "new/b"]);
    assert_eq!(server.read_served("new/b").unwrap(), b"abc");
}

fn a_file_that_arrives_damaged_fails_the_tree_and_the_stream_stays_in_step(backing: Backing) {
    let server = TestServer::start_in(backing);
    let mut client = RawClient::handshake(server.addr());
    let entries = [file("a", 3), file("b", 3)];
    send_manifest(&mut client, "t", false, &entries);
    assert_eq!(client.recv(), Some(Message::Proceed));
    client.send(&entries[0]);
    client.send_raw(b"abc");
    client.send(&Message::Trailer { digest: [0; 32] });
    client.send(&entries[1]);
    send_body(&mut client, b"def");
    client.send(&Message::TreeEnd {
        entries: 2,
        bytes: 6,
    });
    let Some(Message::Error { code, message }) = client.recv() else {
        panic!("no refusal");
    };
    assert_eq!(code, ErrorCode::DigestMismatch);
    assert!(message.contains("\"a\""), "{message}");
    still_in_step(&mut client);
    assert!(
        server.served_tree().is_empty(),
        "{:?}",
        server.served_tree()
    );
}

#[test]
fn a_manifest_over_the_byte_limit_is_refused_before_any_body() {
    let server = TestServer::start_with(|config| config.max_manifest_bytes = 100);
    let mut client = RawClient::handshake(server.addr());
    let long = "x".repeat(80);
    send_manifest(&mut client, "t", false, &[file("a", 1), file(&long, 1)]);
    let Some(Message::Error { code, message }) = client.recv() else {
        panic!("no refusal");
    };
    assert_eq!(code, ErrorCode::TooLarge);
    assert!(
        message.contains("manifest is larger than 100 bytes"),
        "{message}"
    );
    still_in_step(&mut client);
}

fn the_shell_puts_trees_and_several_files_and_knows_mput(backing: Backing) {
    let server = TestServer::start_in(backing);
    write_file(server.client_dir(), "photos/p.jpg", b"jpeg");
    write_file(server.client_dir(), "a.txt", b"a");
    write_file(server.client_dir(), "b.txt", b"b");
    let script = "put -r photos\nmput a.txt b.txt dest\nput -r photos\n";
    let output = server.run_shell(script);
    assert_exit(&output, 0);
    assert_eq!(
        server.served_tree(),
        ["dest", "dest/a.txt", "dest/b.txt", "photos", "photos/p.jpg"]
    );
    assert!(
        stderr(&output).contains("ok 0 files, 1 skipped"),
        "{}",
        describe(&output)
    );
}

/// The peak resident memory of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[ignore = "makes a million files (a minute or more); run alone with --ignored"]
fn a_manifest_of_a_million_entries_is_made_in_bounded_memory() {
    use ferry::client::{LocalTree, TreeSource};
    let tmp = tempfile::tempdir().unwrap();
    for d in 0..1000 {
        let dir = tmp.path().join(format!("d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..999 {
            std::fs::File::create(dir.join(format!("f{f:03}"))).unwrap();
        }
    }
    let before = peak_rss_kib();
    let tree = LocalTree::walk(
        &[TreeSource::Contents(tmp.path().to_owned())],
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(tree.entries, 1_000_000);
    let mut reader = tree.entries().unwrap();
    let mut count = 0;
    while reader.next_entry().unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, 1_000_000);
    // The manifest is on disk; memory holds one directory's names.
    let grew = peak_rss_kib() - before;
    assert!(grew < 32 * 1024, "the walk took {grew} KiB more");
}

#[test]
fn a_file_above_the_size_limit_refuses_the_tree_before_any_body() {
    let server = TestServer::start_with(|config| config.max_file_size = Some(10));
    let mut client = RawClient::handshake(server.addr());
    send_manifest(
        &mut client,
        "t",
        false,
        &[file("big", 11), file("small", 10)],
    );
    let Some(Message::Error { code, message }) = client.recv() else {
        panic!("no refusal");
    };
    assert_eq!(code, ErrorCode::TooLarge);
    assert!(message.contains("\"big\""), "{message}");
    still_in_step(&mut client);
}

/// A tree whose files fit the disk one by one but not all together is
/// refused by its sum before any body (issue 13), whether it is new or
/// merged into a directory; nothing is made, and the connection lives.
#[test]
fn a_tree_bigger_than_the_free_space_is_refused_before_any_body() {
    let server = TestServer::start();
    std::fs::create_dir(server.root().join("there")).unwrap();
    let disk = rustix::fs::statvfs(server.root()).unwrap();
    let each = disk.f_bavail * disk.f_frsize / 5 * 3;
    let mut client = RawClient::handshake(server.addr());
    for target in ["new", "there"] {
        send_manifest(
            &mut client,
            target,
            false,
            &[file("a", each), file("b", each)],
        );
        let Some(Message::Error { code, message }) = client.recv() else {
            panic!("no refusal for {target}");
        };
        assert_eq!(code, ErrorCode::InsufficientStorage, "{message}");
        assert!(
            message.contains(&format!("{} bytes needed", 2 * each)),
            "{message}"
        );
        still_in_step(&mut client);
    }
    assert_eq!(server.root_files(), ["there"]);
}

#[test]
fn staging_directories_of_a_dead_server_are_removed_at_start() {
    let served = tempfile::tempdir().unwrap();
    // No process has the largest id.
    let dead = format!("{TEMP_PREFIX}{}-0", i32::MAX);
    write_file(served.path(), &format!("{dead}/sub/f"), b"half a tree");
    write_file(served.path(), &format!("keep/{dead}/f"), b"half a tree");
    let server =
        TestServer::start_with(|config| config.store = StoreSpec::Local(served.path().to_owned()));
    server.wait_for_reports(2);
    assert_eq!(files_under(served.path()), ["keep"]);
}

/// The mode and modification time of `path` itself.
fn mode_and_time(path: &Path) -> (u32, i64) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.mode() & 0o777, meta.mtime())
}

/// A PutTree's top (PROTOCOL.md §5.10, issue 13), in the protocol's own
/// words: a target the tree makes takes its mode and time once its
/// contents are in; a directory merged into keeps its own.
#[test]
fn a_target_the_tree_makes_takes_the_top_s_mode_and_time_and_one_merged_into_keeps_its_own() {
    let server = TestServer::start();
    let old = server.root().join("old");
    std::fs::create_dir(&old).unwrap();
    set_mode(&old, 0o700);
    set_time(&old, OLD);
    let top = (0o750, OLD - 5000);
    for target in ["new", "old"] {
        let mut client = RawClient::handshake(server.addr());
        let entries = [dir("d"), file("d/a", 3), file("z", 3)];
        client.send(&Message::PutTree {
            target: target.into(),
            replace: false,
            top: Some(top),
            restart: false,
        });
        for entry in &entries {
            client.send(entry);
        }
        let end = Message::TreeEnd {
            entries: 3,
            bytes: 6,
        };
        client.send(&end);
        assert_eq!(client.recv(), Some(Message::Proceed), "{target}");
        for entry in &entries {
            client.send(entry);
            if matches!(entry, Message::TreeEntry(e) if e.kind == EntryKind::File) {
                send_body(&mut client, b"abc");
            }
        }
        client.send(&end);
        assert!(
            matches!(client.recv(), Some(Message::TreeDone { files: 2, .. })),
            "{target}"
        );
    }
    assert_eq!(mode_and_time(&server.root().join("new")), top);
    assert_eq!(mode_and_time(&server.root().join("new/d")), (0o755, OLD));
    let (mode, time) = mode_and_time(&old);
    assert_eq!(mode, 0o700);
    assert_ne!(time, top.1);
    assert!(old.join("d/a").is_file());
    no_temporaries(&server);
}

/// A tree `put -r` makes is the source directory's copy, its own mode and
/// time included (`cp -rp`, issue 13), wherever cp's rules put it; a
/// directory merged into keeps its own, and one that several sources go
/// into is the copy of none.
#[test]
fn a_new_tree_takes_the_source_directory_s_mode_and_time_and_a_merge_keeps_the_target_s() {
    let server = TestServer::start();
    let here = server.client_dir();
    write_file(here, "photos/one", b"1");
    write_file(here, "photos/sub/two", b"2");
    write_file(here, "a.txt", b"a");
    let source = here.join("photos");
    set_mode(&source, 0o750);
    set_time(&source, OLD - 5000);
    std::fs::create_dir(server.root().join("into")).unwrap();
    for (args, copy) in [
        (&["put", "-r", "photos"][..], "photos"),
        (&["put", "-r", "photos", "new name"], "new name"),
        (&["put", "-r", "photos", "into"], "into/photos"),
    ] {
        let output = server.run_client(args);
        assert_exit(&output, 0);
        assert_eq!(
            mode_and_time(&server.root().join(copy)),
            (0o750, OLD - 5000),
            "{args:?}"
        );
    }
    // Merged into, as every directory there before, it keeps its own.
    let merged = server.root().join("photos");
    set_mode(&merged, 0o700);
    set_time(&merged, OLD);
    std::fs::remove_file(merged.join("one")).unwrap();
    assert_exit(&server.run_client(&["put", "-r", "photos"]), 0);
    assert!(merged.join("one").is_file());
    let (mode, time) = mode_and_time(&merged);
    assert_eq!(mode, 0o700);
    assert_ne!(time, OLD - 5000);
    // Several sources: the directory made for them is no copy.
    assert_exit(
        &server.run_client(&["put", "-r", "photos", "a.txt", "several"]),
        0,
    );
    assert!(server.root().join("several/photos/sub/two").is_file());
    assert_eq!(
        mode_and_time(&server.root().join("several/photos")),
        (0o750, OLD - 5000)
    );
    assert_ne!(mode_and_time(&server.root().join("several")).1, OLD - 5000);
}

// Behaviour both stores promise (one store_matrix! per file).
store_matrix!(
    a_tree_round_trips_with_modes_times_and_odd_names_and_a_second_run_moves_nothing,
    a_tree_in_the_way_is_refused_naming_what_conflicts_and_nothing_moves,
    a_conflict_is_answered_before_any_body_is_sent,
    replacing_needs_the_right_to_delete,
    several_sources_go_into_a_directory_target_made_if_missing,
    several_names_go_into_the_target_directory_the_served_one_as_dot_slash,
    targets_follow_cp_rules,
    a_connection_dropped_mid_merge_leaves_each_file_complete_or_absent,
    a_file_that_arrives_damaged_fails_the_tree_and_the_stream_stays_in_step,
    the_shell_puts_trees_and_several_files_and_knows_mput,
);
