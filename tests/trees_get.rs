//! `get -r` and gets of several names, by GetTree (PROTOCOL.md §5.11, issue
//! 13): trees come back byte-identical with their modes and times, what is
//! here already is skipped, what is in the way is refused before any body,
//! cp's rules place the copy, and a lying server writes nothing anywhere.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use common::*;
use ferry::client::TreeHow;
use ferry::protocol::{EntryKind, ErrorCode, Info, Link, Message, ResumeReason, TreeEntry};

/// A modification time long past: 2001-09-09.
const OLD: i64 = 1_000_000_000;

/// Sets the modification time of `path` (a file or a directory).
fn set_mtime(path: &Path, seconds: i64) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs());
    std::fs::File::open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds a tree under `dir/top`: nested and empty directories, names
/// with spaces and Unicode, sizes 0, 1 and 4096 (and `big` bytes more in
/// one file), modes 0600, 0644 and 0755, old times.
fn build_tree(dir: &Path, top: &str, big: usize) {
    let root = dir.join(top);
    write_file(&root, "empty file", b"");
    write_file(&root, "one", b"1");
    write_file(&root, "nested/deeper/four k", &pseudo_random_bytes(4096, 1));
    write_file(&root, "nested/naïve café ☕.txt", b"unicode");
    write_file(&root, "nested/big.bin", &pseudo_random_bytes(big, 2));
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    set_mode(&root.join("one"), 0o600);
    set_mode(&root.join("nested/deeper/four k"), 0o755);
    set_mode(&root.join("empty file"), 0o644);
    for (n, path) in [
        "one",
        "empty file",
        "nested/deeper/four k",
        "nested/big.bin",
        "nested/deeper",
        "empty dir",
        "nested",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(path), OLD + n as i64 * 1000);
    }
}

/// Every entry under `dir`: path, kind, mode, time, and content.
fn snapshot(dir: &Path) -> Vec<(String, bool, u32, i64, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|path| {
            let full = dir.join(&path);
            let meta = std::fs::symlink_metadata(&full).unwrap();
            let content = if meta.is_file() {
                std::fs::read(&full).unwrap()
            } else {
                Vec::new()
            };
            (
                path,
                meta.is_dir(),
                meta.mode() & 0o777,
                meta.mtime(),
                content,
            )
        })
        .collect()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Builds [`build_tree`]'s tree under `top` in what `server` serves. A
/// bucket gets it uploaded from a copy in the (unused) served directory,
/// whose modes are made the ones an S3 store shows (0644, 0755), and an
/// empty directory as its marker; S3 keeps neither modes nor times.
fn build_served_tree(server: &TestServer, top: &str, big: usize) {
    build_tree(server.root(), top, big);
    if server.bucket().is_none() {
        return;
    }
    let root = server.root().join(top);
    for path in files_under(&root) {
        let full = root.join(&path);
        if full.is_dir() {
            set_mode(&full, 0o755);
            if std::fs::read_dir(&full).unwrap().next().is_none() {
                server.write_served(&format!("{top}/{path}/"), b"");
            }
        } else {
            set_mode(&full, 0o644);
            server.write_served(&format!("{top}/{path}"), &std::fs::read(&full).unwrap());
        }
    }
}

/// [`snapshot`] of a copy got from `server`, or of the tree it serves,
/// built by [`build_served_tree`]: from a bucket, without times, which
/// are S3's own (when each object was stored), not the tree's.
fn served_snapshot(server: &TestServer, dir: &Path) -> Vec<(String, bool, u32, i64, Vec<u8>)> {
    let mut entries = snapshot(dir);
    if server.bucket().is_some() {
        for entry in &mut entries {
            entry.3 = 0;
        }
    }
    entries
}

/// On S3, with the modes it shows and the times it keeps (when each
/// object was stored), and nothing a tree leaves out.
fn a_tree_round_trips_byte_identical_with_modes_and_times_over_plain(backing: Backing) {
    let server = TestServer::start_in(backing);
    build_served_tree(&server, "photos", 64 * 1024 * 1024);
    if backing == Backing::Local {
        std::os::unix::fs::symlink("one", server.root().join("photos/link")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            server.root().join("photos/nested/fifo"),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
    }
    let output = server.run_client(&["get", "-r", "photos"]);
    assert_exit(&output, 0);
    assert_eq!(
        stderr_of(&output).contains("2 names left out: symlinks or special files"),
        backing == Backing::Local,
        "{}",
        describe(&output)
    );
    let mut expected = served_snapshot(&server, &server.root().join("photos"));
    expected.retain(|(path, ..)| path != "link" && path != "nested/fifo");
    assert_eq!(
        served_snapshot(&server, &server.client_dir().join("photos")),
        expected
    );
    assert!(stderr_of(&output).contains("get-tree \"photos\" -> \"photos\" ok 5 files, 0 skipped"));
}

#[test]
fn a_tree_round_trips_over_tls() {
    let server = BinaryServer::start_tls(&[]);
    build_tree(server.root.path(), "t", 300_000);
    let client_dir = tempfile::tempdir().unwrap();
    let output = pinned(&server, &["get", "-r", "t", "copy"])
        .current_dir(client_dir.path())
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_eq!(
        snapshot(&client_dir.path().join("copy")),
        snapshot(&server.root.path().join("t"))
    );
}

fn a_second_run_moves_nothing_and_says_so(backing: Backing) {
    let server = TestServer::start_in(backing);
    build_served_tree(&server, "d", 10);
    assert_exit(&server.run_client(&["get", "-r", "d"]), 0);
    let again = server.run_client(&["get", "-r", "d"]);
    assert_exit(&again, 0);
    assert!(
        stderr_of(&again).contains("ok 0 files, 5 skipped, 0 bytes"),
        "{}",
        describe(&again)
    );
}

fn a_local_conflict_is_refused_before_any_body_and_replace_replaces(backing: Backing) {
    let server = TestServer::start_in(backing);
    build_served_tree(&server, "d", 10);
    write_file(server.client_dir(), "d/one", b"mine");
    let refused = server.run_client(&["get", "-r", "d"]);
    assert_exit_saying(&refused, 1, "1 local name is in the way");
    assert!(
        stderr_of(&refused).contains("one"),
        "{}",
        describe(&refused)
    );
    // Nothing came: not even the files that were not in the way.
    assert_eq!(files_under(&server.client_dir().join("d")), ["one"]);
    let reports = server.wait_for_reports(2);
    assert!(reports[1].to_string().contains("ok 0 files"), "{reports:?}");
    assert_eq!(
        std::fs::read(server.client_dir().join("d/one")).unwrap(),
        b"mine"
    );

    let replaced = server.run_client(&["get", "-r", "--replace", "d"]);
    assert_exit(&replaced, 0);
    assert_eq!(
        served_snapshot(&server, &server.client_dir().join("d")),
        served_snapshot(&server, &server.root().join("d"))
    );
}

fn cp_rules_place_the_copy(backing: Backing) {
    let server = TestServer::start_in(backing);
    build_served_tree(&server, "d", 10);
    let here = server.client_dir();
    // Into an existing directory: inside it.
    std::fs::create_dir(here.join("into")).unwrap();
    assert_exit(&server.run_client(&["get", "-r", "d", "into"]), 0);
    assert!(here.join("into/d/one").is_file());
    // A target that does not exist becomes the copy, with or without '/'.
    assert_exit(&server.run_client(&["get", "-r", "d", "copy"]), 0);
    assert!(here.join("copy/one").is_file());
    assert_exit(&server.run_client(&["get", "-r", "d", "slash/"]), 0);
    assert!(here.join("slash/one").is_file());
    // One file to a path ending in '/': a directory, made if missing.
    assert_exit(&server.run_client(&["get", "-r", "d/one", "files/"]), 0);
    assert!(here.join("files/one").is_file());
    // A directory without -r is a clear error that says how.
    let plain = server.run_client(&["get", "d", "nodir"]);
    assert_exit_saying(&plain, 1, "get -r");
    assert!(!here.join("nodir").exists());
    let leftovers: Vec<String> = files_under(here)
        .into_iter()
        .filter(|name| name.contains(".ferry-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn several_names_go_into_one_directory(backing: Backing) {
    let server = TestServer::start_in(backing);
    build_served_tree(&server, "d", 10);
    let output = server.run_client(&["get", "-r", "d/one", "d/nested", "out"]);
    assert_exit(&output, 0);
    let here = server.client_dir();
    assert_eq!(std::fs::read(here.join("out/one")).unwrap(), b"1");
    assert_eq!(
        served_snapshot(&server, &here.join("out/nested")),
        served_snapshot(&server, &server.root().join("d/nested"))
    );
    // Without -r, several files are fine, and a directory is not.
    let files = server.run_client(&["mget", "d/one", "d/empty file", "two"]);
    assert_exit(&files, 0);
    assert!(here.join("two/empty file").is_file());
    let with_dir = server.run_client(&["get", "d/one", "d/nested", "three"]);
    assert_exit_saying(&with_dir, 1, "get -r");
}

/// A fake server that answers the client's stats with a directory and its
/// GetTree with `reply`, then waits for the client to hang up.
fn hostile_tree_server(reply: Vec<Message>, then: Vec<u8>) -> u16 {
    fake_ferry_server(move |stream| {
        let info = Message::Info(Info {
            kind: EntryKind::Directory,
            size: 0,
            modified: 0,
            mode: 0o755,
            link: Link::None,
            digest: None,
        });
        loop {
            let rest = read_frame(stream);
            let mut request = (rest.len() as u32).to_be_bytes().to_vec();
            request.extend(rest);
            match ferry::protocol::decode(&request) {
                Ok(Some((Message::Stat { .. }, _))) => {
                    let _ = stream.write_all(&frame(&info));
                }
                Ok(Some((Message::GetTree { .. }, _))) => break,
                _ => return, // the client hung up, or asked for something else
            }
        }
        let mut bytes = Vec::new();
        for message in &reply {
            bytes.extend(frame(message));
        }
        bytes.extend(then);
        let _ = stream.write_all(&bytes);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    })
}

fn file_entry(path: &str, data: &[u8]) -> TreeEntry {
    TreeEntry {
        kind: EntryKind::File,
        size: data.len() as u64,
        mode: 0o644,
        modified: OLD,
        digest: Some(*blake3::hash(data).as_bytes()),
        path: path.to_owned(),
    }
}

fn dir_entry(path: &str) -> TreeEntry {
    TreeEntry {
        kind: EntryKind::Directory,
        size: 0,
        mode: 0o755,
        modified: OLD,
        digest: None,
        path: path.to_owned(),
    }
}

/// A manifest of `entries` with a true end.
fn manifest(entries: &[TreeEntry]) -> Vec<Message> {
    let mut messages: Vec<Message> = entries.iter().cloned().map(Message::TreeEntry).collect();
    messages.push(Message::TreeEnd {
        entries: entries.len() as u64,
        bytes: entries.iter().map(|e| e.size).sum(),
    });
    messages
}

/// Runs `get -r tree` against `port` in a directory of its own inside
/// another; the client must fail with a protocol error and nothing at all
/// may appear, inside its directory or beside it.
fn assert_refused_and_nothing_written(port: u16) {
    let outer = tempfile::tempdir().unwrap();
    let here = outer.path().join("here");
    std::fs::create_dir(&here).unwrap();
    let mut command = client_at("127.0.0.1", port, &["--timeout", "5", "get", "-r", "tree"]);
    command.current_dir(&here);
    let (output, _) = output_within(&mut command, Duration::from_secs(20));
    assert_exit_saying(&output, 3, "protocol-error");
    assert_eq!(files_under(outer.path()), ["here"], "{}", describe(&output));
}

#[test]
fn a_manifest_reaching_outside_the_target_writes_nothing() {
    for path in ["../x", "/abs", "a/../../x", "", "a\nb"] {
        let port = hostile_tree_server(manifest(&[file_entry(path, b"evil")]), Vec::new());
        assert_refused_and_nothing_written(port);
    }
}

#[test]
fn duplicates_and_files_with_children_are_refused() {
    let duplicate = [file_entry("a", b"1"), file_entry("a", b"2")];
    assert_refused_and_nothing_written(hostile_tree_server(manifest(&duplicate), Vec::new()));
    let under_file = [file_entry("f", b"1"), file_entry("f/child", b"2")];
    assert_refused_and_nothing_written(hostile_tree_server(manifest(&under_file), Vec::new()));
    let unannounced = [dir_entry("d"), file_entry("e/x", b"2")];
    assert_refused_and_nothing_written(hostile_tree_server(manifest(&unannounced), Vec::new()));
}

#[test]
fn more_entries_or_bytes_than_announced_are_refused() {
    let entries = [file_entry("a", b"1"), file_entry("b", b"2")];
    let mut more_entries = manifest(&entries);
    more_entries.pop();
    more_entries.push(Message::TreeEnd {
        entries: 1,
        bytes: 2,
    });
    assert_refused_and_nothing_written(hostile_tree_server(more_entries, Vec::new()));
    // A body longer than its manifest entry.
    let mut body = frame(&Message::TreeEntry(file_entry("a", b"1")));
    body.extend(frame(&Message::Body { size: 6 }));
    body.extend_from_slice(b"evil!!");
    body.extend(frame(&Message::Trailer {
        digest: *blake3::hash(b"evil!!").as_bytes(),
    }));
    assert_refused_and_nothing_written(hostile_tree_server(manifest(&entries), body));
}

#[test]
fn a_body_for_a_path_not_in_the_manifest_is_refused() {
    let entries = [file_entry("a", b"1")];
    let mut body = frame(&Message::TreeEntry(file_entry("../b", b"2")));
    body.extend(frame(&Message::Body { size: 1 }));
    body.extend_from_slice(b"2");
    body.extend(frame(&Message::Trailer {
        digest: *blake3::hash(b"2").as_bytes(),
    }));
    assert_refused_and_nothing_written(hostile_tree_server(manifest(&entries), body));
    let mut other = frame(&Message::TreeEntry(file_entry("z", b"2")));
    other.extend(frame(&Message::Body { size: 1 }));
    assert_refused_and_nothing_written(hostile_tree_server(manifest(&entries), other));
}

fn replace_gives_one_file_a_new_name_over_an_old_file(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("one", b"new content");
    write_file(server.client_dir(), "mine", b"old");
    let refused = server.run_client(&["get", "one", "mine"]);
    assert_exit_saying(&refused, 1, "already exists");
    let replaced = server.run_client(&["get", "--replace", "one", "mine"]);
    assert_exit(&replaced, 0);
    assert_eq!(
        std::fs::read(server.client_dir().join("mine")).unwrap(),
        b"new content"
    );
    assert_eq!(files_under(server.client_dir()), ["mine"]);
}

fn the_shell_gets_trees_and_several_names(backing: Backing) {
    let server = TestServer::start_in(backing);
    build_served_tree(&server, "d", 10);
    let script = "get -r d\nmget d/one \"d/empty file\" two\nget -r d\n";
    let output = server.run_shell(script);
    assert_exit(&output, 0);
    let here = server.client_dir();
    assert_eq!(
        served_snapshot(&server, &here.join("d")),
        served_snapshot(&server, &server.root().join("d"))
    );
    assert!(here.join("two/one").is_file() && here.join("two/empty file").is_file());
    assert!(
        stderr_of(&output).contains("ok 0 files, 5 skipped"),
        "{}",
        describe(&output)
    );
}

/// A body that fails its check part way through a tree: nothing of a new
/// tree is left, not even the file that came whole before it; in a merge,
/// no temporary file.
#[test]
fn a_tree_that_fails_part_way_leaves_nothing() {
    let entries = [file_entry("a", b"1"), file_entry("b", b"2")];
    let mut bodies = Vec::new();
    for (entry, data, digest_of) in [(&entries[0], b"1", b"1"), (&entries[1], b"X", b"2")] {
        bodies.extend(frame(&Message::TreeEntry(entry.clone())));
        bodies.extend(frame(&Message::Body { size: 1 }));
        bodies.extend_from_slice(data);
        bodies.extend(frame(&Message::Trailer {
            digest: *blake3::hash(digest_of).as_bytes(),
        }));
    }
    let outer = tempfile::tempdir().unwrap();
    for existing in [false, true] {
        if existing {
            std::fs::create_dir(outer.path().join("tree")).unwrap();
        }
        let port = hostile_tree_server(manifest(&entries), bodies.clone());
        let mut command = client_at("127.0.0.1", port, &["--timeout", "5", "get", "-r", "tree"]);
        command.current_dir(outer.path());
        let (output, _) = output_within(&mut command, Duration::from_secs(20));
        assert_exit_saying(&output, 1, "digest-mismatch");
        let left: &[&str] = if existing { &["tree"] } else { &[] };
        assert_eq!(files_under(outer.path()), left, "{}", describe(&output));
    }
}

/// The server's side in raw frames, so client and server cannot share a
/// bug: the manifest in order with digests and what was left out, then
/// only the bodies not skipped.
///
/// S3 lists keys in whole-key order, `a.txt` before `a/x`; the manifest's
/// order is by component, `a/x` first.
fn the_server_sends_a_sorted_manifest_then_only_what_was_not_skipped(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("t/b", b"bee");
    server.write_served("t/a/x", b"ex");
    server.write_served("t/a.txt", b"");
    if backing == Backing::Local {
        std::os::unix::fs::symlink("b", server.root().join("t/link")).unwrap();
    }
    let mut raw = RawClient::handshake(server.addr());
    raw.send(&Message::GetTree { source: "t".into() });
    let mut manifest = Vec::new();
    let mut omitted = Vec::new();
    let end = loop {
        match raw.recv().unwrap() {
            Message::TreeEntry(entry) => manifest.push(entry),
            Message::Omitted { reason, count } => omitted.push((reason, count)),
            end @ Message::TreeEnd { .. } => break end,
            other => panic!("{other:?}"),
        }
    };
    // A symlink is left out; S3 has none.
    let left_out = match backing {
        Backing::Local => vec![(ferry::protocol::OmitReason::NotFileOrDirectory, 1)],
        Backing::S3 => Vec::new(),
    };
    assert_eq!(omitted, left_out);
    assert_eq!(
        end,
        Message::TreeEnd {
            entries: 4,
            bytes: 5
        }
    );
    let paths: Vec<&str> = manifest.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["a", "a/x", "a.txt", "b"]);
    assert_eq!(manifest[1].digest, Some(*blake3::hash(b"ex").as_bytes()));
    assert_eq!(manifest[0].digest, None);
    // Skip a/x; take a.txt and b.
    raw.send(&Message::Skip { first: 1, count: 1 });
    raw.send(&Message::TreeEnd {
        entries: 1,
        bytes: 0,
    });
    for (path, data) in [("a.txt", &b""[..]), ("b", b"bee")] {
        let Some(Message::TreeEntry(entry)) = raw.recv() else {
            panic!("no entry for {path}");
        };
        assert_eq!(entry.path, path);
        assert_eq!(
            raw.recv(),
            Some(Message::Body {
                size: data.len() as u64
            })
        );
        let mut body = vec![0; data.len()];
        raw.read_exact(&mut body);
        assert_eq!(body, data);
        assert!(matches!(raw.recv(), Some(Message::Trailer { .. })));
    }
    assert_eq!(
        raw.recv(),
        Some(Message::TreeDone {
            files: 2,
            skipped: 1,
            bytes: 3
        })
    );
    // A skip outside the manifest is malformed: refused, and the
    // connection closed.
    raw.send(&Message::GetTree { source: "t".into() });
    while !matches!(raw.recv(), Some(Message::TreeEnd { .. })) {}
    raw.send(&Message::Skip { first: 3, count: 2 });
    assert!(matches!(
        raw.recv(),
        Some(Message::Error {
            code: ferry::protocol::ErrorCode::BadRequest,
            ..
        })
    ));
    assert!(raw.is_closed());
}

/// A local symlink where the tree has a directory is in the way, with or
/// without --replace: nothing is written through it.
#[test]
fn a_local_symlink_where_the_tree_has_a_directory_is_never_followed() {
    let server = TestServer::start();
    write_file(server.root(), "d/sub/file", b"through the link");
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(server.client_dir().join("d")).unwrap();
    std::os::unix::fs::symlink(outside.path(), server.client_dir().join("d/sub")).unwrap();
    for replace in [false, true] {
        let args: &[&str] = if replace {
            &["get", "-r", "--replace", "d"]
        } else {
            &["get", "-r", "d"]
        };
        let output = server.run_client(args);
        assert_exit_saying(&output, 1, "is not a directory here");
        assert_eq!(files_under(outside.path()), Vec::<String>::new());
    }
}

/// What a tree download told its progress, in order.
#[derive(Debug, PartialEq, Eq)]
enum Told {
    Bytes(u64),
    Files(u64),
    FileDone,
}

/// Records what it is told, and adds up the bytes moved.
#[derive(Default)]
struct Recorder {
    told: Vec<Told>,
    moved: u64,
}

impl ferry::client::Progress for Recorder {
    fn begin(&mut self, total: u64) {
        self.told.push(Told::Bytes(total));
    }
    fn advance(&mut self, bytes: u64) {
        self.moved += bytes;
    }
    fn begin_files(&mut self, total: u64) {
        self.told.push(Told::Files(total));
    }
    fn file_done(&mut self, _file: &ferry::client::TreeFile<'_>) {
        self.told.push(Told::FileDone);
    }
}

/// One progress bar for the whole tree (issue 13) needs the count of the
/// files that will come, skipped ones left out, and word of each as it
/// lands; small files (read whole) and large ones (streamed) alike.
#[test]
fn a_tree_download_tells_its_progress_the_files_to_come_and_each_one_done() {
    let server = TestServer::start();
    write_file(server.root(), "d/here already", b"same");
    write_file(server.root(), "d/small", b"1");
    write_file(
        server.root(),
        "d/sub/large",
        &pseudo_random_bytes(300_000, 3),
    );
    std::fs::create_dir(server.root().join("d/empty")).unwrap();
    write_file(server.client_dir(), "d/here already", b"same");
    let target = server.client_dir().join("d");
    let source = ferry::protocol::RemoteName::parse("d").unwrap();
    let mut recorder = Recorder::default();
    server.with_library_client(async |client| {
        let got = client
            .get_tree(
                Some(&source),
                &target,
                None,
                TreeHow::default(),
                &mut recorder,
            )
            .await
            .unwrap();
        assert_eq!((got.files, got.skipped), (2, 1));
    });
    assert_eq!(
        recorder.told,
        [
            Told::Bytes(300_001),
            Told::Files(2),
            Told::FileDone,
            Told::FileDone
        ]
    );
    assert_eq!(recorder.moved, 300_001);
}

/// The mode and modification time of `path` itself.
fn mode_and_time(path: &Path) -> (u32, i64) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.mode() & 0o777, meta.mtime())
}

/// A tree made by the copy is the source directory's copy, its own mode
/// and time included (`cp -rp`, issue 13), wherever cp's rules put it; a
/// directory merged into keeps its own mode.
#[test]
fn a_new_tree_takes_the_source_directory_s_mode_and_time_and_a_merge_keeps_the_target_s() {
    let server = TestServer::start();
    build_tree(server.root(), "photos", 10);
    let source = server.root().join("photos");
    set_mode(&source, 0o750);
    set_mtime(&source, OLD - 5000);
    let here = server.client_dir();
    std::fs::create_dir(here.join("into")).unwrap();
    for (args, copy) in [
        (&["get", "-r", "photos"][..], "photos"),
        (&["get", "-r", "photos", "new name"], "new name"),
        (&["get", "-r", "photos", "into"], "into/photos"),
    ] {
        let output = server.run_client(args);
        assert_exit(&output, 0);
        assert_eq!(
            mode_and_time(&here.join(copy)),
            (0o750, OLD - 5000),
            "{args:?}"
        );
    }
    // Merged into, as every directory there before, it keeps its own.
    let merged = here.join("photos");
    set_mode(&merged, 0o700);
    set_mtime(&merged, OLD);
    std::fs::remove_file(merged.join("one")).unwrap();
    assert_exit(&server.run_client(&["get", "-r", "photos"]), 0);
    assert!(merged.join("one").is_file());
    assert_eq!(mode_and_time(&merged).0, 0o700);
}

/// A proxy to `server` for one connection that passes everything on as it
/// comes, but runs `meanwhile` when the server's manifest has come to its
/// end, before the client sees that end: so the tree changes, for sure,
/// between the manifest and the bodies. Returns its port.
fn proxy_changing_the_tree(
    server: std::net::SocketAddr,
    meanwhile: impl FnOnce() + Send + 'static,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut upstream = std::net::TcpStream::connect(server).unwrap();
        let (mut from_client, mut to_server) =
            (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_client, &mut to_server);
            let _ = to_server.shutdown(std::net::Shutdown::Write);
        });
        let mut preamble = [0; ferry::protocol::PREAMBLE_LEN];
        upstream.read_exact(&mut preamble).unwrap();
        client.write_all(&preamble).unwrap();
        // Frames only, up to the manifest's end: no body comes before it.
        let mut meanwhile = Some(meanwhile);
        while meanwhile.is_some() {
            let rest = read_frame(&mut upstream);
            let mut whole = (rest.len() as u32).to_be_bytes().to_vec();
            whole.extend(rest);
            if let Ok(Some((Message::TreeEnd { .. }, _))) = ferry::protocol::decode(&whole) {
                meanwhile.take().unwrap()();
            }
            client.write_all(&whole).unwrap();
        }
        let _ = std::io::copy(&mut upstream, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Write);
    });
    port
}

/// What makes the served file `t/NAME` grow (`grows`) or go, from
/// another thread, directly in the store.
fn changer(server: &TestServer, name: &str, grows: bool) -> Box<dyn FnOnce() + Send> {
    let grown = b"grown longer than it was";
    let Some(bucket) = server.bucket() else {
        let path = server.root().join("t").join(name);
        return Box::new(move || {
            if grows {
                std::fs::write(&path, grown).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        });
    };
    let (client, bucket) = (bucket.client(), bucket.name().to_owned());
    let key = format!("{}/t/{name}", common::S3_PREFIX);
    Box::new(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            if grows {
                let put = client.put_object().bucket(&bucket).key(&key);
                put.body(grown.to_vec().into()).send().await.unwrap();
            } else {
                let delete = client.delete_object().bucket(&bucket).key(&key);
                delete.send().await.unwrap();
            }
        });
    })
}

/// A tree that changes on the server between its manifest and its bodies
/// (PROTOCOL.md §5.11, issue 13): a file that grew, one that went, the
/// last one gone. The client fails with `file-changed` and keeps nothing
/// of the changed file; a new tree is whole or absent, so nothing of it
/// is left; in a merge, the files before the change are there, complete.
fn a_tree_changed_between_the_passes_is_file_changed_keeping_only_whole_files(backing: Backing) {
    let names = ["a", "b", "c", "d", "e"];
    for (changed, grows, code, kept) in [
        ("c", true, 3, &names[..2]),
        ("c", false, 3, &names[..2]),
        ("e", false, 1, &names[..4]),
    ] {
        for merge in [false, true] {
            let server = TestServer::start_in(backing);
            for name in names {
                server.write_served(&format!("t/{name}"), name.repeat(100).as_bytes());
            }
            let port = proxy_changing_the_tree(server.addr(), changer(&server, changed, grows));
            let here = server.client_dir();
            if merge {
                std::fs::create_dir(here.join("t")).unwrap();
            }
            let mut command = client_at("127.0.0.1", port, &["get", "-r", "t"]);
            command.current_dir(here);
            let (output, _) = output_within(&mut command, Duration::from_secs(20));
            let case = format!("{changed} (grows: {grows}, merge: {merge})");
            assert_exit_saying(&output, code, "file-changed");
            let mut expected: Vec<String> = Vec::new();
            if merge {
                expected.push("t".into());
                for name in kept {
                    expected.push(format!("t/{name}"));
                    let content = std::fs::read(here.join("t").join(name)).unwrap();
                    assert_eq!(content, name.repeat(100).as_bytes(), "{case}");
                }
            }
            assert_eq!(files_under(here), expected, "{case}: {}", describe(&output));
        }
    }
}

/// Issue 14: a `Held` partial of an entry the client skipped, or out of
/// order, is a malformed message; one of a file the server cannot go on
/// from (a prefix as long as the file) is answered by `Sending` from the
/// start, with the reason.
#[test]
fn held_partials_out_of_place_are_bad_requests_and_one_too_long_is_sent_whole() {
    let server = TestServer::start();
    write_file(server.root(), "t/a", b"aaa");
    write_file(server.root(), "t/b", b"bee");
    let step = ferry::protocol::Prefix {
        len: ferry::protocol::STEP,
        values: vec![[1; 32]],
    };
    let manifest = |raw: &mut RawClient| {
        raw.send(&Message::GetTree { source: "t".into() });
        while !matches!(raw.recv(), Some(Message::TreeEnd { .. })) {}
    };
    for held in [
        vec![(0, step.clone())],                    // skipped below
        vec![(1, step.clone()), (1, step.clone())], // twice
        vec![(2, step.clone())],                    // beyond the tree
    ] {
        let mut raw = RawClient::handshake(server.addr());
        manifest(&mut raw);
        raw.send(&Message::Skip { first: 0, count: 1 });
        for (index, prefix) in held.clone() {
            raw.send(&Message::Held { index, prefix });
        }
        raw.send(&Message::TreeEnd {
            entries: 1 + held.len() as u64,
            bytes: 0,
        });
        match raw.recv() {
            Some(Message::Error { code, .. }) => assert_eq!(code, ErrorCode::BadRequest),
            other => panic!("{held:?}: {other:?}"),
        }
    }

    let mut raw = RawClient::handshake(server.addr());
    manifest(&mut raw);
    raw.send(&Message::Skip { first: 0, count: 1 });
    raw.send(&Message::Held {
        index: 1,
        prefix: step,
    });
    raw.send(&Message::TreeEnd {
        entries: 2,
        bytes: 0,
    });
    assert!(matches!(raw.recv(), Some(Message::TreeEntry(_))));
    let Some(Message::Sending {
        size: 3,
        offset: 0,
        reason,
        ..
    }) = raw.recv()
    else {
        panic!("no sending from the start");
    };
    assert_eq!(reason, ResumeReason::Unproven);
    let mut body = [0; 3];
    raw.read_exact(&mut body);
    assert_eq!(&body, b"bee");
    assert!(matches!(raw.recv(), Some(Message::Trailer { .. })));
    assert!(matches!(
        raw.recv(),
        Some(Message::TreeDone { files: 1, .. })
    ));
}

store_matrix!(
    a_tree_round_trips_byte_identical_with_modes_and_times_over_plain,
    a_tree_changed_between_the_passes_is_file_changed_keeping_only_whole_files,
    a_second_run_moves_nothing_and_says_so,
    a_local_conflict_is_refused_before_any_body_and_replace_replaces,
    cp_rules_place_the_copy,
    several_names_go_into_one_directory,
    replace_gives_one_file_a_new_name_over_an_old_file,
    the_shell_gets_trees_and_several_names,
    the_server_sends_a_sorted_manifest_then_only_what_was_not_skipped,
);
