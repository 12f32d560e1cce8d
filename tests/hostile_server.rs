//! The real client against fake servers that lie, stall or try to drive
//! the user's terminal: the client must end, keep nothing unverified, and
//! print nothing raw. The fakes speak plain TCP; the clients pass --plain.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use ferry::protocol::{ErrorCode, Message, Preamble};

/// How long past its `--timeout 1` a client may take to give up: the
/// timeout itself plus a wide margin for a shared, busy CI machine.
const GIVE_UP_BOUND: Duration = Duration::from_secs(5);

/// A client run ends by itself well within this, or is killed and fails.
const KILL_AFTER: Duration = Duration::from_secs(10);

/// Runs `ferry client --plain … <args>` against `port` in a fresh
/// directory; returns its output, how long it took, and what the
/// directory holds afterwards.
fn run_in_fresh_dir(port: u16, args: &[&str]) -> (std::process::Output, Duration, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = client_at("127.0.0.1", port, args);
    command.current_dir(dir.path());
    let (output, took) = output_within(&mut command, KILL_AFTER);
    (output, took, files_under(dir.path()))
}

/// A fake server that reads a request and then neither answers nor closes.
fn fake_server_that_stops_answering() -> u16 {
    fake_ferry_server(|stream| {
        let _request = read_frame(stream);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    })
}

#[test]
fn a_download_with_more_bytes_than_declared_is_refused_and_nothing_kept() {
    let mut reply = frame(&Message::Body { size: 5 });
    reply.extend_from_slice(b"hellohello");
    reply.extend(frame(&Message::Trailer {
        digest: *blake3::hash(b"hellohello").as_bytes(),
    }));
    let (output, _, left) = run_in_fresh_dir(fake_download_server(reply), &["get", "file.txt"]);
    // The five bytes past the body are read as the trailer's frame header.
    assert_exit_saying(&output, 3, "failed protocol-error");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_download_that_stops_short_and_hangs_is_given_up_within_the_timeout() {
    let mut reply = frame(&Message::Body { size: 1000 });
    reply.extend_from_slice(&[7; 10]);
    let port = fake_ferry_server(move |stream| {
        let _request = read_frame(stream);
        let _ = stream.write_all(&reply);
        // Holds the connection open without another byte.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    let (output, took, left) = run_in_fresh_dir(port, &["--timeout", "1", "get", "file.txt"]);
    println!("the client gave up after {took:?}");
    assert_exit_saying(&output, 3, "failed timeout");
    assert!(left.is_empty(), "{left:?}");
    assert!(took < GIVE_UP_BOUND, "took {took:?}");
}

#[test]
fn a_server_that_says_nothing_is_given_up_within_the_timeout_plain_or_tls() {
    let silent = || {
        fake_server(|stream| {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        })
    };
    let (output, took, _) = run_in_fresh_dir(silent(), &["--timeout", "1", "list"]);
    println!("plain: the client gave up after {took:?}");
    assert_exit_saying(&output, 3, "failed timeout");
    assert!(took < GIVE_UP_BOUND, "plain: took {took:?}");

    // Over TLS the silence falls in the TLS handshake instead.
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let mut client = tls_client_at(
        "127.0.0.1",
        silent(),
        &["--known-hosts", known.to_str().unwrap()],
    );
    client.args(["--timeout", "1", "list"]);
    let (output, took) = output_within(&mut client, KILL_AFTER);
    println!("TLS: the client gave up after {took:?}");
    assert_exit_saying(&output, 3, "failed timeout");
    assert!(took < GIVE_UP_BOUND, "TLS: took {took:?}");
    assert!(!known.exists());
}

#[test]
fn a_server_that_never_answers_an_upload_is_given_up_within_the_timeout() {
    let local = tempfile::tempdir().unwrap();
    let upload = write_file(local.path(), "up.bin", &[5; 1000]);
    let upload = upload.to_str().unwrap();

    // Silent after the request: no go-ahead, no refusal.
    let port = fake_server_that_stops_answering();
    let (output, took, _) = run_in_fresh_dir(port, &["--timeout", "1", "put", upload]);
    println!("no proceed: the client gave up after {took:?}");
    assert_exit_saying(&output, 3, "failed timeout");
    assert!(took < GIVE_UP_BOUND, "no proceed: took {took:?}");

    // Silent after taking the whole body and its trailer.
    let port = fake_ferry_server(|stream| {
        let put = read_frame(stream);
        let size = u64::from_be_bytes(put[1..9].try_into().unwrap());
        let _ = stream.write_all(&frame(&Message::Proceed));
        let mut body = vec![0; size as usize];
        let _ = stream.read_exact(&mut body);
        let _trailer = read_frame(stream);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    let (output, took, _) = run_in_fresh_dir(port, &["--timeout", "1", "put", upload]);
    println!("no done: the client gave up after {took:?}");
    assert_exit_saying(&output, 3, "failed timeout");
    assert!(took < GIVE_UP_BOUND, "no done: took {took:?}");
}

/// A message no ferry server would send: a terminal escape that clears
/// the screen, and a line of its own pretending to be ferry's.
const HOSTILE_MESSAGE: &str = "gone\x1b[2J\nferry: all files deleted";

fn assert_printed_escaped(output: &std::process::Output) {
    assert!(
        !output.stderr.contains(&0x1b) && !output.stdout.contains(&0x1b),
        "a raw escape reached the terminal:\n{}",
        describe(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(r"\u{1b}[2J\nferry: all"), "{stderr}");
    assert!(
        !stderr.lines().any(|line| line.starts_with("ferry: all")),
        "{stderr}"
    );
}

#[test]
fn an_error_message_with_terminal_escapes_is_printed_escaped() {
    let reply = frame(&Message::Error {
        code: ErrorCode::NotFound,
        message: HOSTILE_MESSAGE.into(),
    });
    let (output, _, left) = run_in_fresh_dir(fake_download_server(reply), &["get", "file.txt"]);
    assert_exit_saying(&output, 1, "failed not-found");
    assert_printed_escaped(&output);
    assert!(left.is_empty(), "{left:?}");
}

/// A fake server that answers the client's hello with `Error{code}`.
fn fake_server_refusing_the_hello(code: ErrorCode) -> u16 {
    fake_server(move |stream| {
        let _hello = read_frame(stream);
        let mut refusal = Preamble::OURS.to_bytes().to_vec();
        refusal.extend(frame(&Message::Error {
            code,
            message: HOSTILE_MESSAGE.into(),
        }));
        let _ = stream.write_all(&refusal);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    })
}

#[test]
fn a_server_that_refuses_the_hello_as_unauthorized_ends_the_client_with_exit_4() {
    let port = fake_server_refusing_the_hello(ErrorCode::Unauthorized);
    let (output, _, _) = run_in_fresh_dir(port, &["list"]);
    assert_exit_saying(&output, 4, "failed unauthorized");
    assert_printed_escaped(&output);
}

#[test]
fn the_shell_prints_a_refused_hello_escaped() {
    let port = fake_server_refusing_the_hello(ErrorCode::Unauthorized);
    // No request: the shell connects at once, then reads no command.
    let (output, _, _) = run_in_fresh_dir(port, &[]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("gone"),
        "{}",
        describe(&output)
    );
    assert_printed_escaped(&output);
}
