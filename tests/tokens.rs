//! Access tokens as a user makes and uses them: `ferry token new`, and a
//! server that refuses to start with a weak token (issue 12, item 8).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use ferry::protocol::Message;

/// Runs `ferry token new <args>`; checks it succeeded quietly and returns
/// its one line.
fn token_new(args: &[&str]) -> String {
    let mut command = ferry_command();
    command.args(["token", "new"]).args(args);
    let (output, _) = output_within(&mut command, PATIENCE);
    assert_exit(&output, 0);
    assert!(output.stderr.is_empty(), "{}", describe(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("not one line: {stdout:?}"));
    assert!(!line.contains('\n'), "not one line: {stdout:?}");
    line.to_owned()
}

fn is_token(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes a token file of the mode a server accepts (0600).
fn token_file(dir: &Path, text: &str) -> PathBuf {
    let path = write_file(dir, "tokens", text.as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn token_new_prints_64_hex_digits_different_each_time() {
    let first = token_new(&[]);
    let second = token_new(&[]);
    assert!(is_token(&first), "{first:?}");
    assert!(is_token(&second), "{second:?}");
    assert_ne!(first, second);
}

#[test]
fn token_new_with_a_mode_prints_a_token_file_line_a_server_accepts() {
    let keys = tempfile::tempdir().unwrap();
    let ro = token_new(&["--mode", "ro"]);
    let rw = token_new(&["--mode", "rw"]);
    let wo = token_new(&["--mode", "wo"]);
    let (ro_token, mode) = ro.split_once(' ').unwrap();
    assert!(is_token(ro_token), "{ro:?}");
    assert_eq!(mode, "ro");
    assert!(rw.ends_with(" rw") && wo.ends_with(" wo"), "{rw:?} {wo:?}");
    let path = token_file(keys.path(), &format!("{ro}\n{rw}\n{wo}\n"));
    let server = BinaryServer::start(&["--token-file", path.to_str().unwrap()]);
    assert!(
        server.start_line.contains("3 tokens from"),
        "{}",
        server.start_line
    );
    let mut client = RawClient::handshake_with(server.addr(), ro_token);
    client.send(&Message::List {
        dir: String::new(),
        long: false,
    });
    assert_eq!(client.recv(), Some(Message::Done));
    // The mode came with it: a read-only token may not upload.
    assert!(
        matches!(client.put("new.txt", b"x"), Message::Error { .. }),
        "a read-only token uploaded"
    );
}

#[test]
fn token_new_refuses_an_unknown_mode() {
    let mut command = ferry_command();
    command.args(["token", "new", "--mode", "admin"]);
    let (output, _) = output_within(&mut command, PATIENCE);
    assert_exit_saying(&output, 2, "possible values: rw, ro, wo");
    assert!(output.stdout.is_empty(), "{}", describe(&output));
}

#[test]
fn a_weak_token_line_stops_the_server_naming_the_line_and_not_the_token() {
    let strong = "read-write-token-0001";
    let cases = [
        ("abcdefghij0123456", "17 characters, fewer than 20"),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "1 different character, fewer than 8",
        ),
        (
            "0101010101010101010101010101",
            "2 different characters, fewer than 8",
        ),
    ];
    for (weak, why) in cases {
        let keys = tempfile::tempdir().unwrap();
        let path = token_file(keys.path(), &format!("# team\n{strong} rw\n\n{weak} ro\n"));
        let output = server_refusing_to_start(&["--plain"], |command| {
            command.arg("--token-file").arg(&path);
        });
        let said = format!("line 4 of {}: the token is too weak: {why}", path.display());
        assert_exit_saying(&output, 1, &said);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("ferry token new"), "{stderr}");
        assert!(
            !stderr.contains(weak) && !stderr.contains(strong),
            "{stderr}"
        );
    }
}

#[test]
fn a_weak_ferry_token_stops_the_server_naming_the_variable_and_not_the_token() {
    let weak = "password-password";
    let output = server_refusing_to_start(&["--plain"], |command| {
        command.env("FERRY_TOKEN", weak);
    });
    assert_exit_saying(
        &output,
        1,
        "FERRY_TOKEN is too weak: 17 characters, fewer than 20",
    );
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(weak),
        "{}",
        describe(&output)
    );
}
