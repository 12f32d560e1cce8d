//! Faults from outside ferry: clients killed mid-transfer, permissions,
//! special files, files changed while they are sent, exhausted descriptors,
//! a full disk and symlinks swapped in. The server answers clearly, keeps
//! nothing half-written and keeps serving. (A client killed mid-upload is
//! tested in `concurrency.rs`.)

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    assert_exit, assert_exit_saying, client_at, describe, eventually, ferry_command, files_under,
    pseudo_random_bytes, write_file, BinaryServer, RawClient, TestServer,
};
use ferry::protocol::{ErrorCode, Message};
use rustix::process::{Resource, Rlimit};

/// The user and group an unprivileged server runs as when the tests run as
/// root, who ignores file modes: nobody and nogroup.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Makes `command` run as nobody when the tests run as root.
fn unprivileged(command: &mut Command) {
    if is_root() {
        command.uid(NOBODY).gid(NOBODY);
    }
}

/// Hands `path` to the user an unprivileged server runs as.
fn give_to_server_user(path: &Path) {
    if is_root() {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Takes permissions away and gives them back when dropped, so that a
/// temporary directory can be removed even without root.
#[derive(Default)]
struct Modes(Vec<(PathBuf, fs::Permissions)>);

impl Modes {
    fn set(&mut self, path: &Path, mode: u32) {
        let before = fs::metadata(path).unwrap().permissions();
        set_mode(path, mode);
        self.0.push((path.to_owned(), before));
    }
}

impl Drop for Modes {
    fn drop(&mut self) {
        for (path, before) in self.0.drain(..).rev() {
            let _ = fs::set_permissions(path, before);
        }
    }
}

/// Makes `command` start with `resource` limited to `limit`, soft and hard.
fn with_limit(command: &mut Command, resource: Resource, limit: u64) {
    let limit = Rlimit {
        current: Some(limit),
        maximum: Some(limit),
    };
    // SAFETY: setrlimit is a single system call: async-signal-safe, no
    // allocation, no lock, as the child of a fork requires.
    unsafe {
        command.pre_exec(move || Ok(rustix::process::setrlimit(resource, limit)?));
    }
}

/// A file of `len` bytes that takes no room on disk: big enough that a
/// transfer of it is still running when the test acts.
fn sparse_file(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Whether process `pid` holds open a regular file with data in it: the
/// download it is receiving, under whatever name or none.
fn is_receiving(pid: u32) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| fs::metadata(fd.path()).is_ok_and(|m| m.is_file() && m.len() > 0))
}

/// How many of the descriptors numbered below `limit` process `pid` has
/// open. (Counting them all would include any it inherited above it.)
fn descriptors_in_use_below(pid: u32, limit: u64) -> u64 {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let numbers = fds
        .flatten()
        .filter_map(|fd| fd.file_name().to_str()?.parse::<u64>().ok());
    numbers.filter(|&fd| fd < limit).count() as u64
}

fn expect_error(reply: Option<Message>, code: ErrorCode, what: &str) -> String {
    match reply {
        Some(Message::Error { code: got, message }) if got == code => message,
        other => panic!("{what}: expected {code}, got {other:?}"),
    }
}

// --- A client killed mid-download -------------------------------------

#[test]
fn a_client_killed_mid_download_leaves_only_a_hidden_partial_and_the_server_keeps_serving() {
    let server = TestServer::start();
    sparse_file(&server.root().join("huge.bin"), 8 << 30);
    write_file(server.root(), "small.txt", b"still serving");
    let mut client = server
        .client(&["get", "huge.bin"])
        // Nothing open that is_receiving could take for the download.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = client.id();
    eventually("the download is under way", || is_receiving(pid));
    client.kill().unwrap();
    client.wait().unwrap();
    // The process is gone, and with it every chance to clean up: nothing
    // under the name, at most the hidden partial and its record, for a
    // resume (tests/resume.rs).
    let left = files_under(server.client_dir());
    assert!(
        left.iter()
            .all(|name| name.starts_with(".huge.bin.ferry-partial")),
        "left in the destination directory: {left:?}"
    );
    assert_exit(&server.run_client(&["get", "small.txt"]), 0);
    assert_eq!(
        fs::read(server.client_dir().join("small.txt")).unwrap(),
        b"still serving"
    );
}

// --- Permission denied ------------------------------------------------

/// A root directory that an unprivileged server may use, inside a parent
/// it may traverse.
fn root_for_unprivileged_server() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    give_to_server_user(root.path());
    root
}

#[test]
fn permission_denied_on_a_file_or_directory_is_a_clear_error_and_the_server_keeps_serving() {
    let root = root_for_unprivileged_server();
    let path = root.path().to_owned();
    write_file(&path, "open.txt", b"readable");
    write_file(&path, "secret.txt", b"secret");
    write_file(&path, "locked/file.txt", b"locked");
    write_file(&path, "readonly/kept.txt", b"kept");
    let mut modes = Modes::default();
    modes.set(&path.join("secret.txt"), 0o000);
    modes.set(&path.join("locked"), 0o000);
    modes.set(&path.join("readonly"), 0o555);
    let server = BinaryServer::start_configured(root, unprivileged);
    let mut client = RawClient::handshake(server.addr());

    client.send(&Message::Get {
        name: "secret.txt".into(),
    });
    expect_error(client.recv(), ErrorCode::PermissionDenied, "get secret.txt");
    client.send(&Message::Get {
        name: "locked/file.txt".into(),
    });
    expect_error(
        client.recv(),
        ErrorCode::PermissionDenied,
        "get locked/file.txt",
    );
    client.send(&Message::List {
        dir: "locked".into(),
        long: false,
    });
    expect_error(client.recv(), ErrorCode::PermissionDenied, "list locked");
    for name in ["locked/new.txt", "readonly/new.txt", "readonly/sub/new.txt"] {
        let reply = Some(client.put(name, b"refused"));
        expect_error(reply, ErrorCode::PermissionDenied, &format!("put {name}"));
    }
    for name in ["locked/file.txt", "readonly/kept.txt"] {
        client.send(&Message::Delete {
            name: name.into(),
            recursive: false,
        });
        expect_error(
            client.recv(),
            ErrorCode::PermissionDenied,
            &format!("delete {name}"),
        );
    }

    // The same connection still serves what may be served.
    assert_eq!(client.get("open.txt"), Ok(b"readable".to_vec()));
    assert_eq!(client.get("readonly/kept.txt"), Ok(b"kept".to_vec()));
    // The real client says so, and keeps nothing.
    let local = tempfile::tempdir().unwrap();
    let output = client_at("127.0.0.1", server.port, &["get", "secret.txt"])
        .current_dir(local.path())
        .output()
        .unwrap();
    assert_exit_saying(&output, 1, "failed permission-denied");
    assert!(files_under(local.path()).is_empty());
    // Nothing was created, nothing removed.
    drop(modes);
    assert_eq!(
        files_under(&path),
        [
            "locked",
            "locked/file.txt",
            "open.txt",
            "readonly",
            "readonly/kept.txt",
            "secret.txt"
        ]
    );
}

#[test]
fn a_root_that_becomes_inaccessible_is_refused_per_request_until_it_is_back() {
    let root = root_for_unprivileged_server();
    let path = root.path().to_owned();
    write_file(&path, "open.txt", b"readable");
    let server = BinaryServer::start_configured(root, unprivileged);
    let mut client = RawClient::handshake(server.addr());
    let mut modes = Modes::default();
    modes.set(&path, 0o000);

    client.send(&Message::Get {
        name: "open.txt".into(),
    });
    expect_error(client.recv(), ErrorCode::PermissionDenied, "get open.txt");
    client.send(&Message::List {
        dir: String::new(),
        long: false,
    });
    expect_error(client.recv(), ErrorCode::PermissionDenied, "list the root");
    let reply = Some(client.put("new.txt", b"refused"));
    expect_error(reply, ErrorCode::PermissionDenied, "put new.txt");
    client.send(&Message::Delete {
        name: "open.txt".into(),
        recursive: false,
    });
    expect_error(
        client.recv(),
        ErrorCode::PermissionDenied,
        "delete open.txt",
    );

    drop(modes);
    assert_eq!(client.get("open.txt"), Ok(b"readable".to_vec()));
    assert_eq!(client.put("new.txt", b"accepted"), Message::Done);
    assert_eq!(files_under(&path), ["new.txt", "open.txt"]);
}

#[test]
fn a_root_the_server_may_not_search_is_a_clear_error_at_start() {
    let root = root_for_unprivileged_server();
    let mut modes = Modes::default();
    modes.set(root.path(), 0o000);
    let mut command = ferry_command();
    command
        .args(["server", "0", "--bind", "127.0.0.1", "--plain", "--root"])
        .arg(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unprivileged(&mut command);
    let mut child = command.spawn().unwrap();
    let status = common::wait_with_deadline(&mut child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("cannot serve directory {}", root.path().display());
    assert!(
        stderr.contains(&expected) && stderr.contains("Permission denied"),
        "{}",
        describe(&output)
    );
    assert!(
        output.stdout.is_empty(),
        "no start line: {}",
        describe(&output)
    );
}

#[test]
fn a_root_that_may_be_searched_but_not_read_serves_all_but_listings() {
    let root = root_for_unprivileged_server();
    let path = root.path().to_owned();
    write_file(&path, "known.txt", b"known");
    let mut modes = Modes::default();
    // Write and search, no read: a drop box.
    modes.set(&path, 0o300);
    let server = BinaryServer::start_configured(root, unprivileged);
    let mut client = RawClient::handshake(server.addr());
    client.send(&Message::List {
        dir: String::new(),
        long: false,
    });
    expect_error(client.recv(), ErrorCode::PermissionDenied, "list the root");
    assert_eq!(client.get("known.txt"), Ok(b"known".to_vec()));
    assert_eq!(client.put("dropped.txt", b"dropped"), Message::Done);
    drop(modes);
    assert_eq!(files_under(&path), ["dropped.txt", "known.txt"]);
}

// --- Special files ----------------------------------------------------

#[test]
fn get_of_a_socket_a_device_or_a_link_to_a_fifo_is_refused_without_blocking() {
    let server = TestServer::start();
    let root = server.root();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .unwrap()
        .success());
    symlink("fifo", root.join("link-to-fifo")).unwrap();
    let mut names = vec!["socket", "link-to-fifo"];
    if is_root() {
        // /dev/zero's numbers: read in full, it would never end.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("zero"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 5),
        )
        .unwrap();
        names.push("zero");
    } else {
        eprintln!("note: not root, so no device node is made and that case is skipped");
    }
    let mut client = RawClient::handshake(server.addr());
    for name in &names {
        client.send(&Message::Get {
            name: (*name).into(),
        });
        expect_error(
            client.recv(),
            ErrorCode::NotARegularFile,
            &format!("get {name}"),
        );
    }
    write_file(root, "plain.txt", b"plain");
    assert_eq!(client.get("plain.txt"), Ok(b"plain".to_vec()));
    let output = server.run_client(&["get", "socket"]);
    assert_exit_saying(&output, 1, "failed not-a-regular-file");
    assert!(files_under(server.client_dir()).is_empty());
}

// --- Files changed while they are sent --------------------------------

/// Asks for `name` and reads its Body header and the first few bytes of
/// the body; returns the declared size and those bytes.
fn start_download(client: &mut RawClient, name: &str) -> (u64, Vec<u8>) {
    client.send(&Message::Get { name: name.into() });
    let Some(Message::Body { size }) = client.recv() else {
        panic!("no body for {name}");
    };
    let mut start = vec![0; 64 * 1024];
    client.read_exact(&mut start);
    (size, start)
}

#[test]
fn a_file_deleted_while_it_is_downloaded_arrives_as_it_was_when_opened() {
    let server = TestServer::start();
    // Far more than the socket buffers hold, so most of it is still to be
    // read from the file when it goes.
    let data = pseudo_random_bytes(32 << 20, 7);
    let path = write_file(server.root(), "doomed.bin", &data);
    let mut client = RawClient::handshake(server.addr());
    let (size, mut body) = start_download(&mut client, "doomed.bin");
    assert_eq!(size, data.len() as u64);
    fs::remove_file(&path).unwrap();
    // Another file takes the name at once; the download is not confused.
    fs::write(&path, b"replacement").unwrap();
    let mut rest = vec![0; data.len() - body.len()];
    client.read_exact(&mut rest);
    body.extend_from_slice(&rest);
    assert!(body == data, "the body is the content as it was opened");
    let Some(Message::Trailer { digest }) = client.recv() else {
        panic!("no trailer");
    };
    assert_eq!(digest, *blake3::hash(&data).as_bytes());
    assert_eq!(client.get("doomed.bin"), Ok(b"replacement".to_vec()));
}

#[test]
fn a_file_truncated_while_it_is_downloaded_ends_the_connection_without_a_trailer() {
    let server = TestServer::start();
    let data = pseudo_random_bytes(32 << 20, 8);
    let path = write_file(server.root(), "shrinking.bin", &data);
    let mut client = RawClient::handshake(server.addr());
    let (size, start) = start_download(&mut client, "shrinking.bin");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let mut rest = Vec::new();
    client.stream.read_to_end(&mut rest).unwrap();
    let received = (start.len() + rest.len()) as u64;
    assert!(
        received < size,
        "the server stops short: {received} of {size} bytes, then closes"
    );
    let report = server.wait_for_reports(1)[0].to_string();
    assert!(
        report.contains("get \"shrinking.bin\" failed file-changed"),
        "{report}"
    );
    assert_eq!(
        RawClient::handshake(server.addr()).get("shrinking.bin"),
        Ok(data[..1000].to_vec())
    );
}

#[test]
fn a_file_truncated_while_the_client_downloads_it_keeps_nothing_locally() {
    let server = TestServer::start();
    let path = server.root().join("huge.bin");
    sparse_file(&path, 8 << 30);
    let mut client = server
        .client(&["get", "huge.bin"])
        // Nothing open that is_receiving could take for the download.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = client.id();
    eventually("the download is under way", || is_receiving(pid));
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    // A body in transit has no timeout on the client; a deadline here.
    common::wait_with_deadline(&mut client);
    let output = client.wait_with_output().unwrap();
    assert_exit_saying(&output, 3, "failed connection-lost");
    assert!(
        files_under(server.client_dir()).is_empty(),
        "{:?}",
        files_under(server.client_dir())
    );
    let report = server.wait_for_reports(1)[0].to_string();
    assert!(
        report.contains("get \"huge.bin\" failed file-changed"),
        "{report}"
    );
    assert_exit(&server.run_client(&["get", "huge.bin", "empty.bin"]), 0);
    assert_eq!(files_under(server.client_dir()), ["empty.bin"]);
}

// --- Out of descriptors -----------------------------------------------

#[test]
fn a_server_out_of_descriptors_refuses_clearly_does_not_spin_and_recovers() {
    const LIMIT: u64 = 64;
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "file.txt", b"content");
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_file = log.reopen().unwrap();
    let mut server = BinaryServer::start_configured(root, |command| {
        with_limit(command, Resource::Nofile, LIMIT);
        command.env("RUST_LOG", "warn").stderr(log_file);
    });
    let pid = server.child.id();
    // Connected before the descriptors run out.
    let mut early = RawClient::handshake(server.addr());
    // Idle connections until the server has no descriptor left; the surplus
    // waits in the listen backlog, and takes every descriptor freed.
    let idle: Vec<_> = (0..2 * LIMIT)
        .map(|_| std::net::TcpStream::connect(server.addr()).unwrap())
        .collect();
    eventually("the server has used every descriptor", || {
        descriptors_in_use_below(pid, LIMIT) == LIMIT
    });

    // A request that needs a descriptor fails, with the system's word.
    early.send(&Message::Get {
        name: "file.txt".into(),
    });
    let message = expect_error(early.recv(), ErrorCode::Io, "get while out of descriptors");
    assert!(message.contains("Too many open files"), "{message}");

    // A new client is not accepted: its connection waits in the listen
    // backlog, unanswered, until the client gives up. Meanwhile the server
    // does not spin: each failed accept is logged, and over that second it
    // retries about ten times, not thousands. (Counted rather than timed
    // with CPU use, which a busy machine would hide.)
    let failed_accepts = || {
        fs::read_to_string(log.path())
            .unwrap()
            .matches("cannot accept a connection")
            .count()
    };
    let before = failed_accepts();
    let output = client_at("127.0.0.1", server.port, &["--timeout", "1", "list"])
        .output()
        .unwrap();
    let retries = failed_accepts() - before;
    assert_exit_saying(&output, 3, "failed timeout");
    assert!(
        (1..100).contains(&retries),
        "{retries} failed accepts in the second a client waited"
    );

    drop(idle);
    eventually("the server has let go of the idle connections", || {
        descriptors_in_use_below(pid, LIMIT) < LIMIT / 2
    });
    assert_eq!(early.get("file.txt"), Ok(b"content".to_vec()));
    let output = client_at("127.0.0.1", server.port, &["list"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "file.txt\n");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
}

// --- A full disk ------------------------------------------------------

#[test]
fn a_disk_full_mid_upload_is_insufficient_storage_keeps_nothing_and_the_server_lives() {
    // RLIMIT_FSIZE stands in for a full disk: a write past it fails with
    // EFBIG (and raises SIGXFSZ, which by default would kill the server).
    let root = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start_configured(root, |command| {
        with_limit(command, Resource::Fsize, 128 * 1024);
    });
    let local = tempfile::tempdir().unwrap();
    // One body small enough to be received in line, one large enough to be
    // spliced; both cross the limit.
    write_file(
        local.path(),
        "inline.bin",
        &pseudo_random_bytes(200 * 1024, 3),
    );
    write_file(
        local.path(),
        "spliced.bin",
        &pseudo_random_bytes(4 << 20, 4),
    );
    write_file(local.path(), "small.txt", b"fits");
    let port = server.port;
    let put = |name: &str| {
        client_at("127.0.0.1", port, &["put", name])
            .current_dir(local.path())
            .output()
            .unwrap()
    };
    for name in ["inline.bin", "spliced.bin"] {
        assert_exit_saying(&put(name), 1, "failed insufficient-storage");
        let report = server.next_line();
        assert!(
            report.contains(&format!("put \"{name}\" failed insufficient-storage")),
            "{report}"
        );
        assert!(
            files_under(server.root.path()).is_empty(),
            "{:?}",
            files_under(server.root.path())
        );
    }
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
    assert_exit(&put("small.txt"), 0);
    assert_eq!(files_under(server.root.path()), ["small.txt"]);
}

// --- Symlinks in the middle of a name, and swapped in -----------------

#[test]
fn a_symlink_in_a_middle_component_is_followed_only_while_it_stays_inside() {
    let server = TestServer::start();
    let outside = tempfile::tempdir().unwrap();
    write_file(outside.path(), "secret.txt", b"secret");
    write_file(outside.path(), "deeper/secret.txt", b"deeper secret");
    let root = server.root();
    write_file(root, "other/file.txt", b"other");
    fs::create_dir(root.join("inside")).unwrap();
    symlink(outside.path(), root.join("inside/out")).unwrap();
    // Up to the directory holding both the root and `outside`.
    symlink("../..", root.join("inside/up")).unwrap();
    symlink("../other", root.join("inside/in")).unwrap();
    let outside_name = outside.path().file_name().unwrap().to_str().unwrap();
    let up_secret = format!("inside/up/{outside_name}/secret.txt");
    assert!(fs::metadata(root.join(&up_secret)).is_ok(), "{up_secret}");
    let mut client = RawClient::handshake(server.addr());

    for name in [
        "inside/out/secret.txt",
        "inside/out/deeper/secret.txt",
        &up_secret,
    ] {
        client.send(&Message::Get { name: name.into() });
        expect_error(client.recv(), ErrorCode::BadName, &format!("get {name}"));
        client.send(&Message::Delete {
            name: name.into(),
            recursive: false,
        });
        expect_error(client.recv(), ErrorCode::BadName, &format!("delete {name}"));
    }
    client.send(&Message::List {
        dir: "inside/out/deeper".into(),
        long: true,
    });
    expect_error(client.recv(), ErrorCode::BadName, "list inside/out/deeper");
    let up_new = format!("inside/up/{outside_name}/fresh/new.txt");
    for name in [
        "inside/out/deeper/new.txt",
        "inside/out/fresh/dir/new.txt",
        &up_new,
    ] {
        let reply = Some(client.put(name, b"intruder"));
        expect_error(reply, ErrorCode::BadName, &format!("put {name}"));
    }
    assert_eq!(
        files_under(outside.path()),
        ["deeper", "deeper/secret.txt", "secret.txt"]
    );

    assert_eq!(client.get("inside/in/file.txt"), Ok(b"other".to_vec()));
    assert_eq!(client.put("inside/in/new/put.txt", b"put"), Message::Done);
    assert_eq!(fs::read(root.join("other/new/put.txt")).unwrap(), b"put");
    client.send(&Message::List {
        dir: "inside/in".into(),
        long: false,
    });
    let mut listed = Vec::new();
    while let Some(Message::Entry(entry)) = client.recv() {
        listed.push(entry.name);
    }
    listed.sort();
    assert_eq!(listed, ["file.txt", "new"]);
    client.send(&Message::Delete {
        name: "inside/in/file.txt".into(),
        recursive: false,
    });
    assert_eq!(client.recv(), Some(Message::Done));
    assert_eq!(files_under(&root.join("other")), ["new", "new/put.txt"]);
}

#[test]
fn a_directory_swapped_for_a_symlink_during_a_put_keeps_the_file_inside() {
    let server = TestServer::start();
    let outside = tempfile::tempdir().unwrap();
    let root = server.root();
    fs::create_dir(root.join("sub")).unwrap();
    let data = pseudo_random_bytes(1 << 20, 9);
    let mut client = RawClient::handshake(server.addr());
    client.send(&Message::Put {
        name: "sub/moving.bin".into(),
        size: data.len() as u64,
    });
    assert_eq!(client.recv(), Some(Message::Proceed));
    client.send_raw(&data[..300_000]);
    fs::rename(root.join("sub"), root.join("sub-moved")).unwrap();
    symlink(outside.path(), root.join("sub")).unwrap();
    client.send_raw(&data[300_000..]);
    client.send(&Message::Trailer {
        digest: *blake3::hash(&data).as_bytes(),
    });
    // The upload may finish in the directory it started in, wherever that
    // is now (what ferry does), or fail; it never lands where the name leads
    // today.
    match client.recv() {
        Some(Message::Done) => {
            assert!(fs::read(root.join("sub-moved/moving.bin")).unwrap() == data);
        }
        Some(Message::Error { .. }) => {
            assert_eq!(files_under(root), ["sub", "sub-moved"]);
        }
        other => panic!("expected an answer to the put, got {other:?}"),
    }
    assert!(files_under(outside.path()).is_empty());
    let reply = Some(client.put("sub/after.bin", b"intruder"));
    expect_error(reply, ErrorCode::BadName, "put through the swapped-in link");
    assert!(files_under(outside.path()).is_empty());
}
