//! put and get through the real binary: round trips, default names, and
//! never overwriting on either side.

mod common;

use common::{
    assert_exit, assert_exit_saying, describe, files_under, pseudo_random_bytes, write_file,
    Backing, TestServer,
};
use ferry::report::Outcome;

fn put_then_get_round_trips_the_bytes(backing: Backing) {
    let server = TestServer::start_in(backing);
    let data = pseudo_random_bytes(3 * 1024 * 1024 + 17, 1);
    write_file(server.client_dir(), "data.bin", &data);

    assert_exit(&server.run_client(&["put", "data.bin", "stored.bin"]), 0);
    assert_eq!(server.read_served("stored.bin").unwrap(), data);

    assert_exit(&server.run_client(&["get", "stored.bin", "back.bin"]), 0);
    assert_eq!(
        std::fs::read(server.client_dir().join("back.bin")).unwrap(),
        data
    );
}

fn empty_and_oddly_named_files_round_trip(backing: Backing) {
    let server = TestServer::start_in(backing);
    for (name, data) in [
        ("empty", &b""[..]),
        ("with space.txt", b"spaces"),
        ("ünïcödé 名前.txt", b"unicode"),
        ("-starts-with-dash", b"dash"),
    ] {
        let local = write_file(server.client_dir(), &format!("local-{}", name.len()), data);
        let put = server.run_client(&["put", local.to_str().unwrap(), "--", name]);
        assert_exit(&put, 0);
        let back = format!("back-{}", name.len());
        assert_exit(&server.run_client(&["get", "--", name, &back]), 0);
        assert_eq!(
            std::fs::read(server.client_dir().join(&back)).unwrap(),
            data,
            "{name}"
        );
    }
}

fn put_defaults_to_the_local_base_name_from_any_path(backing: Backing) {
    let server = TestServer::start_in(backing);
    let elsewhere = tempfile::tempdir().unwrap();
    let local = write_file(elsewhere.path(), "deep/dir/report.pdf", b"pdf");
    assert_exit(&server.run_client(&["put", local.to_str().unwrap()]), 0);
    assert_eq!(server.read_served("report.pdf").unwrap(), b"pdf");
}

/// Names typed the way a shell user types them (issue 11): `.` is the
/// served directory, `./x` and `x/./y` are `x` and `x/y`.
fn put_get_and_delete_take_names_as_people_type_them(backing: Backing) {
    let server = TestServer::start_in(backing);
    write_file(server.client_dir(), "a.txt", b"a");
    for remote in [".", "./", "/"] {
        assert_exit(&server.run_client(&["put", "a.txt", remote]), 0);
        assert_eq!(server.served_tree(), ["a.txt"], "put a.txt {remote:?}");
        assert_exit(&server.run_client(&["delete", "a.txt"]), 0);
    }
    assert_exit(&server.run_client(&["put", "a.txt", "./d/./b.txt"]), 0);
    assert_eq!(server.served_tree(), ["d", "d/b.txt"]);
    assert_exit(&server.run_client(&["get", "./d/b.txt", "got.txt"]), 0);
    assert_eq!(
        std::fs::read(server.client_dir().join("got.txt")).unwrap(),
        b"a"
    );
    assert_exit(&server.run_client(&["delete", "d/./b.txt"]), 0);
    assert_eq!(server.served_tree(), ["d"]);
}

fn put_into_a_directory_name_ending_in_a_slash_creates_parents(backing: Backing) {
    let server = TestServer::start_in(backing);
    write_file(server.client_dir(), "a.txt", b"a");
    assert_exit(&server.run_client(&["put", "a.txt", "new/sub/"]), 0);
    assert_eq!(server.read_served("new/sub/a.txt").unwrap(), b"a");
    assert_exit(&server.run_client(&["put", "a.txt", "other/dir/b.txt"]), 0);
    assert_eq!(server.read_served("other/dir/b.txt").unwrap(), b"a");
}

fn get_defaults_to_the_base_name_in_the_current_directory(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("dir/file.txt", b"content");
    assert_exit(&server.run_client(&["get", "dir/file.txt"]), 0);
    assert_eq!(
        std::fs::read(server.client_dir().join("file.txt")).unwrap(),
        b"content"
    );
}

fn get_into_an_existing_directory_uses_the_base_name(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("file.txt", b"content");
    std::fs::create_dir(server.client_dir().join("downloads")).unwrap();
    assert_exit(&server.run_client(&["get", "file.txt", "downloads"]), 0);
    assert_eq!(
        std::fs::read(server.client_dir().join("downloads/file.txt")).unwrap(),
        b"content"
    );
}

fn get_into_a_path_ending_in_a_slash_makes_the_directory_and_parents(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("notes.txt", b"notes");
    for dir in ["newdir/", "old/2026/"] {
        assert_exit(&server.run_client(&["get", "notes.txt", dir]), 0);
        let written = server.client_dir().join(dir).join("notes.txt");
        assert_eq!(
            std::fs::read(&written).ok(),
            Some(b"notes".to_vec()),
            "{dir}"
        );
    }
}

fn get_into_a_file_named_with_a_trailing_slash_is_refused(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("notes.txt", b"notes");
    write_file(server.client_dir(), "plain", b"precious");
    let output = server.run_client(&["get", "notes.txt", "plain/"]);
    assert_exit_saying(&output, 1, "plain/ is not a directory");
    assert_eq!(files_under(server.client_dir()), ["plain"]);
    assert_eq!(
        std::fs::read(server.client_dir().join("plain")).unwrap(),
        b"precious"
    );
}

fn put_over_an_existing_name_is_refused_and_keeps_the_original(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("taken.txt", b"original");
    write_file(server.client_dir(), "taken.txt", b"intruder");
    let output = server.run_client(&["put", "taken.txt"]);
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed already-exists"),
        "{}",
        describe(&output)
    );
    assert_eq!(server.read_served("taken.txt").unwrap(), b"original");
    assert_eq!(
        server.served_names(),
        ["taken.txt"],
        "no temporary file is left"
    );
}

#[test]
fn get_over_an_existing_local_file_is_refused_before_asking_the_server() {
    let server = TestServer::start();
    write_file(server.root(), "file.txt", b"remote");
    write_file(server.client_dir(), "file.txt", b"precious");
    let output = server.run_client(&["get", "file.txt"]);
    assert_exit_saying(&output, 1, "failed local-exists");
    assert_eq!(
        std::fs::read(server.client_dir().join("file.txt")).unwrap(),
        b"precious"
    );
    // The client did not even connect: the server reported nothing.
    assert!(server.reports().is_empty(), "{:?}", server.reports());
}

#[test]
fn put_of_a_missing_local_file_fails_before_connecting() {
    let server = TestServer::start();
    let output = server.run_client(&["put", "no-such-file.txt"]);
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no-such-file.txt") && stderr.contains("No such file"),
        "{stderr}"
    );
    assert!(server.reports().is_empty(), "{:?}", server.reports());
}

#[test]
fn put_of_a_directory_fails_locally() {
    let server = TestServer::start();
    std::fs::create_dir(server.client_dir().join("folder")).unwrap();
    let output = server.run_client(&["put", "folder"]);
    assert_exit_saying(&output, 1, "is a directory");
    assert!(server.reports().is_empty());
}

fn get_of_a_missing_file_is_not_found_and_leaves_no_local_file(backing: Backing) {
    let server = TestServer::start_in(backing);
    let output = server.run_client(&["get", "ghost.txt"]);
    assert_exit_saying(&output, 1, "failed not-found");
    assert!(
        files_under(server.client_dir()).is_empty(),
        "{:?}",
        files_under(server.client_dir())
    );
}

fn get_of_a_directory_is_refused(backing: Backing) {
    let server = TestServer::start_in(backing);
    // A directory with a file in it: on S3, a directory is the keys
    // beneath its name.
    server.write_served("dir/inside", b"x");
    let output = server.run_client(&["get", "dir"]);
    assert_exit_saying(&output, 1, "failed is-a-directory");
    assert!(files_under(server.client_dir()).is_empty());
}

fn large_random_file_round_trips_with_equal_digests(backing: Backing) {
    let server = TestServer::start_in(backing);
    let data = pseudo_random_bytes(256 * 1024 * 1024, 0x5eed);
    let digest = blake3::hash(&data);
    write_file(server.client_dir(), "big.bin", &data);
    drop(data);

    assert_exit(
        &server.run_client(&["put", "big.bin", "big-on-server.bin"]),
        0,
    );
    let stored = server.read_served("big-on-server.bin").unwrap();
    assert_eq!(blake3::hash(&stored), digest);
    drop(stored);

    assert_exit(
        &server.run_client(&["get", "big-on-server.bin", "big-back.bin"]),
        0,
    );
    let back = std::fs::read(server.client_dir().join("big-back.bin")).unwrap();
    assert_eq!(blake3::hash(&back), digest);
}

#[test]
fn transfers_are_reported_with_byte_counts_on_both_sides() {
    let server = TestServer::start();
    write_file(server.client_dir(), "r.txt", b"12345");
    let output = server.run_client(&["put", "r.txt"]);
    assert_exit(&output, 0);
    let client_line = String::from_utf8_lossy(&output.stderr);
    let server_addr = server.addr().to_string();
    assert!(
        client_line.contains(&format!("{server_addr} put \"r.txt\" ok 5 bytes in")),
        "{client_line}"
    );
    assert_eq!(
        client_line.lines().count(),
        1,
        "one report line: {client_line}"
    );
    assert!(output.stdout.is_empty(), "put prints nothing on stdout");

    let reports = server.wait_for_reports(1);
    let line = reports[0].to_string();
    assert!(line.contains("put \"r.txt\" ok 5 bytes in"), "{line}");
    assert!(reports[0].peer.starts_with("127.0.0.1:"), "{line}");
    let time = line.split(' ').next().unwrap();
    assert!(
        humantime::parse_rfc3339(time).is_ok(),
        "RFC 3339 UTC time: {line}"
    );
}

#[test]
fn quiet_silences_the_report_line() {
    let server = TestServer::start();
    write_file(server.client_dir(), "q.txt", b"q");
    let output = server.run_client(&["--quiet", "put", "q.txt"]);
    assert_exit(&output, 0);
    assert!(output.stderr.is_empty(), "{}", describe(&output));
    assert!(matches!(
        server.wait_for_reports(1)[0].outcome,
        Outcome::Ok(_)
    ));
}

#[test]
fn quiet_still_reports_a_failure() {
    let server = TestServer::start();
    let output = server.run_client(&["--quiet", "get", "missing.txt"]);
    assert_exit_saying(&output, 1, "not-found");
    assert_eq!(String::from_utf8_lossy(&output.stderr).lines().count(), 1);
}

#[test]
fn put_of_a_fifo_is_refused_without_blocking() {
    let server = TestServer::start();
    let fifo = server.client_dir().join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = server
        .client(&["put", "pipe"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(common::wait_with_deadline(&mut child).code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn get_of_a_fifo_on_the_server_is_refused_without_blocking() {
    let server = TestServer::start();
    let fifo = server.root().join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let output = server.run_client(&["get", "pipe"]);
    common::assert_exit_saying(&output, 1, "failed not-a-regular-file");
    let listing = server.run_client(&["list"]);
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "pipe\n");
}

// The tests above that take a Backing run on both stores (one
// store_matrix! per file).
store_matrix!(
    put_then_get_round_trips_the_bytes,
    empty_and_oddly_named_files_round_trip,
    put_get_and_delete_take_names_as_people_type_them,
    large_random_file_round_trips_with_equal_digests,
    put_defaults_to_the_local_base_name_from_any_path,
    put_into_a_directory_name_ending_in_a_slash_creates_parents,
    put_over_an_existing_name_is_refused_and_keeps_the_original,
    get_defaults_to_the_base_name_in_the_current_directory,
    get_into_an_existing_directory_uses_the_base_name,
    get_into_a_path_ending_in_a_slash_makes_the_directory_and_parents,
    get_into_a_file_named_with_a_trailing_slash_is_refused,
    get_of_a_missing_file_is_not_found_and_leaves_no_local_file,
    get_of_a_directory_is_refused,
);
