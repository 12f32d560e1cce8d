//! The server remembers each file's BLAKE3 digest with its size and
//! modification time, and a get sends a file with a valid record without
//! hashing it again. These tests see the cache from outside: a file changed
//! behind the server's back with its stamp kept is sent with the remembered
//! digest, and the client then refuses it; any real change of stamp makes
//! the server hash the file afresh.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{assert_exit, assert_exit_saying, write_file, TestServer};

/// Rewrites a file in place with other bytes of the same length, then puts
/// its modification time back: a change the stamp cannot see.
fn change_behind_the_stamp(path: &Path) {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut data = std::fs::read(path).unwrap();
    for byte in &mut data {
        *byte = !*byte;
    }
    std::fs::write(path, &data).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(modified).unwrap();
}

/// Sets a file's modification time to `ago` before now.
fn age(path: &Path, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

#[test]
fn a_get_after_a_put_sends_the_digest_remembered_from_the_upload() {
    let server = TestServer::start();
    write_file(server.client_dir(), "up", b"uploaded through ferry");
    assert_exit(&server.run_client(&["put", "up"]), 0);

    change_behind_the_stamp(&server.root().join("up"));
    let get = server.run_client(&["get", "up", "down"]);
    assert_exit_saying(&get, 1, "digest mismatch");
    assert!(!server.client_dir().join("down").exists());
}

#[test]
fn a_file_changed_after_its_upload_is_hashed_again() {
    let server = TestServer::start();
    write_file(server.client_dir(), "up", b"first version");
    assert_exit(&server.run_client(&["put", "up"]), 0);

    let stored = server.root().join("up");
    std::fs::write(&stored, b"later version").unwrap();
    // Same length; a new modification time even within one clock tick.
    age(&stored, Duration::from_secs(3600));
    assert_exit(&server.run_client(&["get", "up", "down"]), 0);
    assert_eq!(
        std::fs::read(server.client_dir().join("down")).unwrap(),
        b"later version"
    );
}

#[test]
fn a_get_remembers_the_digest_of_a_settled_file() {
    let server = TestServer::start();
    let path = write_file(server.root(), "old", b"put there by hand long ago");
    age(&path, Duration::from_secs(3600));
    assert_exit(&server.run_client(&["get", "old", "first"]), 0);
    // The digest is stored before the request is reported.
    server.wait_for_reports(1);

    change_behind_the_stamp(&path);
    assert_exit_saying(
        &server.run_client(&["get", "old", "second"]),
        1,
        "digest mismatch",
    );
}

#[test]
fn a_get_does_not_remember_the_digest_of_a_file_modified_just_now() {
    let server = TestServer::start();
    let path = write_file(server.root(), "fresh", b"still being edited");
    assert_exit(&server.run_client(&["get", "fresh", "first"]), 0);
    server.wait_for_reports(1);

    // Its stamp could fail to move on the next edit, so nothing was cached.
    change_behind_the_stamp(&path);
    assert_exit(&server.run_client(&["get", "fresh", "second"]), 0);
    assert_eq!(
        std::fs::read(server.client_dir().join("second")).unwrap(),
        std::fs::read(&path).unwrap()
    );
}
