//! Hostile names and symlinks: nothing outside the served directory is ever
//! read, written, listed or deleted, and the refusal is clear.

mod common;

use std::os::unix::fs::symlink;

use common::{
    assert_exit, assert_exit_saying, files_under, write_file, Backing, RawClient, TestServer,
};
use ferry::protocol::{ErrorCode, Message};

/// Every kind of name the rules refuse, as the server sees it on the wire,
/// for every request.
fn hostile_names() -> Vec<String> {
    vec![
        "/etc/passwd".into(),
        "//".into(),
        "..".into(),
        "../outside.txt".into(),
        "./..".into(),
        "dir/../../outside.txt".into(),
        "dir//file".into(),
        "dir//".into(),
        "..\\outside.txt".into(),
        "dir\\file".into(),
        "nul\0byte".into(),
        "new\nline".into(),
        "escape\x1b[31m".into(),
        "x".repeat(256),
        vec!["y".repeat(200); 21].join("/"),
        ".ferry-tmp-1-1".into(),
    ]
}

/// Names of the served directory itself: refused where a name beneath it
/// is needed, the root for `list` and `stat` (issue 11).
const ROOT_NAMES: [&str; 5] = ["", "/", ".", "./", "./."];

fn assert_bad_name(reply: Option<Message>, what: &str) {
    match reply {
        Some(Message::Error {
            code: ErrorCode::BadName,
            ..
        }) => {}
        other => panic!("{what}: expected bad-name, got {other:?}"),
    }
}

#[test]
fn the_server_refuses_every_hostile_name_for_every_request() {
    let server = TestServer::start();
    let outside = tempfile::tempdir().unwrap();
    write_file(server.root(), "dir/file", b"inside");
    let mut client = RawClient::handshake(server.addr());
    let names = hostile_names()
        .into_iter()
        .chain(ROOT_NAMES.map(String::from));
    for name in names {
        let is_root = ROOT_NAMES.contains(&name.as_str());
        let named = |other: &str| -> Vec<Message> {
            vec![
                Message::Put {
                    name: name.clone(),
                    size: 4,
                },
                Message::Get { name: name.clone() },
                Message::Delete {
                    name: name.clone(),
                    recursive: false,
                },
                Message::Delete {
                    name: name.clone(),
                    recursive: true,
                },
                Message::MakeDir {
                    name: name.clone(),
                    parents: true,
                },
                Message::RemoveDir { name: name.clone() },
                Message::Rename {
                    from: name.clone(),
                    to: other.into(),
                },
                Message::Rename {
                    from: other.into(),
                    to: name.clone(),
                },
            ]
        };
        for request in named("dir/file") {
            client.send(&request);
            assert_bad_name(client.recv(), &format!("{request:?}"));
        }
        let about_a_directory = [
            Message::List {
                dir: name.clone(),
                long: false,
            },
            Message::Stat { name: name.clone() },
        ];
        for request in about_a_directory {
            client.send(&request);
            if is_root {
                // Served as the root: read to its end.
                loop {
                    match client.recv() {
                        Some(Message::Done | Message::Info(_)) => break,
                        Some(Message::Entry(_) | Message::Omitted { .. }) => {}
                        other => panic!("{request:?}: got {other:?}"),
                    }
                }
            } else {
                assert_bad_name(client.recv(), &format!("{request:?}"));
            }
        }
    }
    // The connection survived every refusal, and nothing was touched.
    assert_eq!(client.get("dir/file"), Ok(b"inside".to_vec()));
    assert_eq!(server.root_files(), ["dir", "dir/file"]);
    assert!(files_under(outside.path()).is_empty());
}

#[test]
fn the_client_refuses_hostile_names_before_connecting() {
    let server = TestServer::start();
    write_file(server.client_dir(), "local.txt", b"x");
    for name in ["../escape.txt", "/abs.txt", "a\\b", "a//b", "nul\u{1}ctl"] {
        let put = server.run_client(&["put", "local.txt", name]);
        assert_exit_saying(&put, 1, "failed bad-name");
        assert_exit(&server.run_client(&["get", name, "out.txt"]), 1);
        assert_exit(&server.run_client(&["delete", name]), 1);
    }
    assert!(
        server.reports().is_empty(),
        "nothing reached the server: {:?}",
        server.reports()
    );
}

#[test]
fn a_report_line_escapes_control_characters_in_names() {
    let server = TestServer::start();
    let mut client = RawClient::handshake(server.addr());
    client.send(&Message::Get {
        name: "evil\n\x1b[2Jname".into(),
    });
    assert_bad_name(client.recv(), "get");
    let line = server.wait_for_reports(1)[0].to_string();
    assert!(!line.chars().any(char::is_control), "{line:?}");
    assert!(line.contains(r"evil\n\u{1b}[2Jname"), "{line}");
}

#[test]
fn long_names_at_the_limits_work() {
    let server = TestServer::start();
    let component = "c".repeat(255);
    let mut client = RawClient::handshake(server.addr());
    assert_eq!(client.put(&component, b"max component"), Message::Done);
    assert_eq!(client.get(&component), Ok(b"max component".to_vec()));
}

/// A served directory holding symlinks of every kind, and a directory
/// outside it with a secret.
struct SymlinkWorld {
    server: TestServer,
    outside: tempfile::TempDir,
}

fn symlink_world() -> SymlinkWorld {
    let server = TestServer::start();
    let outside = tempfile::tempdir().unwrap();
    write_file(outside.path(), "secret.txt", b"secret");
    let root = server.root();
    write_file(root, "inside/real.txt", b"real");
    symlink(outside.path().join("secret.txt"), root.join("abs-file-out")).unwrap();
    symlink(outside.path(), root.join("abs-dir-out")).unwrap();
    symlink("../../", root.join("inside/rel-dir-out")).unwrap();
    symlink("inside/real.txt", root.join("rel-file-in")).unwrap();
    symlink("inside", root.join("rel-dir-in")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    symlink("loop-b", root.join("loop-a")).unwrap();
    symlink("loop-a", root.join("loop-b")).unwrap();
    SymlinkWorld { server, outside }
}

#[test]
fn symlinks_leading_outside_are_refused_for_every_request() {
    let world = symlink_world();
    let mut client = RawClient::handshake(world.server.addr());
    for name in [
        "abs-file-out",
        "abs-dir-out/secret.txt",
        "inside/rel-dir-out/secret.txt",
    ] {
        client.send(&Message::Get { name: name.into() });
        assert_bad_name(client.recv(), &format!("get {name}"));
    }
    for dir in ["abs-dir-out", "inside/rel-dir-out"] {
        client.send(&Message::List {
            dir: dir.into(),
            long: true,
        });
        assert_bad_name(client.recv(), &format!("list {dir}"));
    }
    for name in [
        "abs-dir-out/new.txt",
        "abs-dir-out/sub/new.txt",
        "inside/rel-dir-out/new.txt",
    ] {
        let reply = client.put(name, b"intruder");
        assert!(
            matches!(
                reply,
                Message::Error {
                    code: ErrorCode::BadName,
                    ..
                }
            ),
            "put {name}: {reply:?}"
        );
    }
    client.send(&Message::Delete {
        name: "abs-dir-out/secret.txt".into(),
        recursive: false,
    });
    assert_bad_name(client.recv(), "delete through a symlink");
    assert_eq!(files_under(world.outside.path()), ["secret.txt"]);
    assert_eq!(
        std::fs::read(world.outside.path().join("secret.txt")).unwrap(),
        b"secret"
    );
}

#[test]
fn symlinks_inside_the_root_are_followed() {
    let world = symlink_world();
    let mut client = RawClient::handshake(world.server.addr());
    assert_eq!(client.get("rel-file-in"), Ok(b"real".to_vec()));
    assert_eq!(client.get("rel-dir-in/real.txt"), Ok(b"real".to_vec()));
    assert_eq!(client.put("rel-dir-in/new.txt", b"new"), Message::Done);
    assert_eq!(
        std::fs::read(world.server.root().join("inside/new.txt")).unwrap(),
        b"new"
    );
}

#[test]
fn listing_hides_symlinks_that_lead_outside_or_nowhere() {
    let world = symlink_world();
    let output = world.server.run_client(&["list"]);
    assert_exit(&output, 0);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "inside/\nrel-dir-in/\nrel-file-in\n"
    );
}

#[test]
fn deleting_a_symlink_removes_the_link_not_its_target() {
    let world = symlink_world();
    assert_exit(&world.server.run_client(&["delete", "abs-file-out"]), 0);
    assert!(world
        .server
        .root()
        .join("abs-file-out")
        .symlink_metadata()
        .is_err());
    assert_eq!(
        std::fs::read(world.outside.path().join("secret.txt")).unwrap(),
        b"secret"
    );
}

#[test]
fn dangling_and_looping_symlinks_are_refused_cleanly() {
    let world = symlink_world();
    let mut client = RawClient::handshake(world.server.addr());
    for name in ["dangling", "loop-a"] {
        client.send(&Message::Get { name: name.into() });
        assert!(
            matches!(client.recv(), Some(Message::Error { .. })),
            "get {name}"
        );
        let reply = client.put(name, b"x");
        assert!(
            matches!(
                reply,
                Message::Error {
                    code: ErrorCode::AlreadyExists,
                    ..
                }
            ),
            "put over {name}: {reply:?}"
        );
    }
    assert!(files_under(world.outside.path()) == ["secret.txt"]);
}

fn put_under_a_file_is_not_a_directory(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("file", b"f");
    let mut client = RawClient::handshake(server.addr());
    let reply = client.put("file/child", b"x");
    assert!(
        matches!(
            reply,
            Message::Error {
                code: ErrorCode::NotADirectory,
                ..
            }
        ),
        "{reply:?}"
    );
    server.write_served("dir/inside", b"i");
    let reply = client.put("dir", b"x");
    assert!(
        matches!(
            reply,
            Message::Error {
                code: ErrorCode::IsADirectory,
                ..
            }
        ),
        "{reply:?}"
    );
}

store_matrix!(put_under_a_file_is_not_a_directory);

#[test]
fn names_no_client_could_ask_for_are_left_out_of_listings() {
    let server = TestServer::start();
    for name in ["plain.txt", "bell\x07.txt", "back\\slash.txt"] {
        write_file(server.root(), name, b"x");
    }
    let output = server.run_client(&["list"]);
    assert_exit(&output, 0);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "plain.txt\n");
}
