//! Standard input and output as the ends of a transfer: `put - NAME`
//! (PutStream, PROTOCOL.md §5.12), `get NAME -`, and `put --replace`
//! (issue 13, the `-` streams and `--replace` bullets).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use common::*;
use ferry::protocol::{ErrorCode, Message};
use ferry::security::access::{Access, ServerMode, Tokens};

const MIB: usize = 1024 * 1024;

/// Block `index` of a deterministic stream: 1 MiB no filesystem or
/// compressor would shortcut.
fn block(index: usize) -> Vec<u8> {
    // Odd seeds: the generator makes each seed odd, so even ones would repeat.
    pseudo_random_bytes(MIB, 2 * index as u64 + 1)
}

/// Starts `command` with its standard input, output and error piped.
fn spawn_piped(command: &mut Command) -> Child {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `command` with `input` on its standard input, to its end.
fn run_with_input(command: &mut Command, input: &[u8]) -> Output {
    let mut child = spawn_piped(command);
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    output
}

fn put_from_stdin_of_256_mib_arrives_byte_identical(backing: Backing) {
    let server = TestServer::start_in(backing);
    let mut child = spawn_piped(&mut server.client(&["put", "-", "big.bin"]));
    let mut stdin = child.stdin.take().unwrap();
    // Written a block at a time: the client cannot know the length.
    let feeder = std::thread::spawn(move || {
        let mut hasher = blake3::Hasher::new();
        for index in 0..256 {
            let block = block(index);
            hasher.update(&block);
            stdin.write_all(&block).unwrap();
        }
        hasher.finalize()
    });
    let output = child.wait_with_output().unwrap();
    let sent = feeder.join().unwrap();
    assert_exit(&output, 0);
    assert!(output.stdout.is_empty(), "{}", describe(&output));
    let stored = server.read_served("big.bin").unwrap();
    assert_eq!(stored.len(), 256 * MIB);
    assert_eq!(blake3::hash(&stored), sent);
    drop(stored);
    let mut names = server.served_names();
    if backing == Backing::S3 {
        // A multipart object's digest is kept in ferry's own records.
        names.retain(|name| !name.starts_with(".ferry-tmp-state/"));
        assert_eq!(server.bucket().unwrap().open_uploads(), []);
    }
    assert_eq!(names, ["big.bin"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ok 268435456 bytes"),
        "{}",
        describe(&output)
    );
}

#[test]
fn put_from_stdin_and_get_to_stdout_over_tls() {
    let server = BinaryServer::start_tls(&[]);
    let data: Vec<u8> = (0..5).flat_map(block).collect();
    let output = run_with_input(&mut pinned(&server, &["put", "-", "tls.bin"]), &data);
    assert_exit(&output, 0);
    assert_eq!(
        std::fs::read(server.root.path().join("tls.bin")).unwrap(),
        data
    );
    let (output, _) = output_within(&mut pinned(&server, &["get", "tls.bin", "-"]), PATIENCE);
    assert_exit(&output, 0);
    assert!(output.stdout == data, "stdout differs from the file");
}

fn put_from_an_empty_stdin_makes_an_empty_file(backing: Backing) {
    let server = TestServer::start_in(backing);
    let output = run_with_input(&mut server.client(&["put", "-", "empty"]), b"");
    assert_exit(&output, 0);
    assert_eq!(server.read_served("empty").unwrap(), b"");
}

fn put_from_stdin_refuses_a_taken_name_and_keeps_the_file(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("taken.txt", b"mine");
    let output = run_with_input(&mut server.client(&["put", "-", "taken.txt"]), b"theirs");
    assert_exit_saying(&output, 1, "already-exists");
    assert_eq!(server.read_served("taken.txt").unwrap(), b"mine");
    assert_eq!(server.served_names(), ["taken.txt"]);
}

fn put_dash_without_a_remote_name_is_a_usage_error(backing: Backing) {
    let server = TestServer::start_in(backing);
    for args in [&["put", "-"][..], &["put", "-", "dir/"], &["put", "-", "."]] {
        let output = run_with_input(&mut server.client(args), b"data");
        assert_exit_saying(&output, 2, "put - NAME");
    }
    assert!(server.served_names().is_empty());
}

#[test]
fn a_client_killed_mid_stream_leaves_nothing() {
    let server = TestServer::start();
    let mut child = spawn_piped(&mut server.client(&["put", "-", "cut.bin"]));
    let mut stdin = child.stdin.take().unwrap();
    for index in 0..8 {
        stdin.write_all(&block(index)).unwrap();
    }
    // The upload is under way: its temporary file is there.
    eventually("the upload to begin", || !server.root_files().is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let reports = server.wait_for_reports(1);
    assert!(
        reports[0].to_string().contains("nothing was kept"),
        "{reports:?}"
    );
    eventually("the temporary file to go", || {
        server.root_files().is_empty()
    });
}

fn a_stream_cut_off_before_its_end_leaves_nothing(backing: Backing) {
    let server = TestServer::start_in(backing);
    // Cut inside a chunk, and after a whole chunk but before Chunk{0}, and
    // after Chunk{0} but before the trailer.
    for cut in 0..3 {
        let mut raw = RawClient::handshake(server.addr());
        raw.send(&Message::PutStream {
            name: "cut.bin".into(),
            replace: false,
        });
        assert_eq!(raw.recv(), Some(Message::Proceed));
        raw.send(&Message::Chunk { size: 1000 });
        raw.send_raw(&[7; 500]);
        if cut > 0 {
            raw.send_raw(&[7; 500]);
        }
        if cut > 1 {
            raw.send(&Message::Chunk { size: 0 });
        }
        drop(raw);
        server.wait_for_reports(cut + 1);
        eventually("the temporary file to go", || {
            server.served_names().is_empty()
        });
    }
}

fn a_stream_that_stalls_or_trickles_is_abandoned_and_leaves_nothing(backing: Backing) {
    let server = TestServer::start_in_with(backing, |config| {
        config.stall_timeout = std::time::Duration::from_millis(500);
        config.min_rate = 64 * 1024;
    });
    for trickle in [false, true] {
        let mut raw = RawClient::handshake(server.addr());
        raw.send(&Message::PutStream {
            name: "slow.bin".into(),
            replace: false,
        });
        assert_eq!(raw.recv(), Some(Message::Proceed));
        raw.send(&Message::Chunk { size: 100_000 });
        raw.send_raw(&[7; 10]);
        if trickle {
            // Never silent for a stall timeout, but far below the rate.
            for _ in 0..30 {
                if raw.stream.write_all(&[7; 10]).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        let reports = server.wait_for_reports(usize::from(trickle) + 1);
        let report = reports.last().unwrap().to_string();
        assert!(report.contains("timeout"), "{report}");
        eventually("the temporary file to go", || {
            server.served_names().is_empty()
        });
    }
}

fn a_raw_stream_arrives_whole_and_a_damaged_one_is_refused_in_step(backing: Backing) {
    let server = TestServer::start_in(backing);
    let mut raw = RawClient::handshake(server.addr());
    let data = pseudo_random_bytes(300_000, 9);
    for (name, digest) in [
        ("bad.bin", [0; 32]),
        ("good.bin", *blake3::hash(&data).as_bytes()),
    ] {
        raw.send(&Message::PutStream {
            name: name.into(),
            replace: false,
        });
        assert_eq!(raw.recv(), Some(Message::Proceed));
        // Chunks of uneven sizes, one of them larger than any the client
        // sends.
        for piece in [&data[..1], &data[1..1000], &data[1000..]] {
            raw.send(&Message::Chunk {
                size: piece.len() as u32,
            });
            raw.send_raw(piece);
        }
        raw.send(&Message::Chunk { size: 0 });
        raw.send(&Message::Trailer { digest });
        let reply = raw.recv();
        if name == "bad.bin" {
            assert!(
                matches!(
                    reply,
                    Some(Message::Error {
                        code: ErrorCode::DigestMismatch,
                        ..
                    })
                ),
                "{reply:?}"
            );
        } else {
            assert_eq!(reply, Some(Message::Done));
        }
    }
    assert_eq!(server.served_names(), ["good.bin"]);
    assert_eq!(server.read_served("good.bin").unwrap(), data);
}

fn a_stream_over_the_size_limit_is_too_large_and_nothing_is_kept(backing: Backing) {
    let server =
        TestServer::start_in_with(backing, |config| config.max_file_size = Some(MIB as u64));
    let data: Vec<u8> = (0..3).flat_map(block).collect();
    let output = run_with_input(&mut server.client(&["put", "-", "huge.bin"]), &data);
    assert_exit_saying(&output, 1, "too-large");
    assert!(
        server.served_names().is_empty(),
        "{:?}",
        server.served_names()
    );
    // Up to the limit is still fine.
    let output = run_with_input(&mut server.client(&["put", "-", "fits.bin"]), &data[..MIB]);
    assert_exit(&output, 0);
    assert_eq!(server.served_names(), ["fits.bin"]);
}

store_matrix!(
    put_from_stdin_of_256_mib_arrives_byte_identical,
    put_from_an_empty_stdin_makes_an_empty_file,
    put_from_stdin_refuses_a_taken_name_and_keeps_the_file,
    put_dash_without_a_remote_name_is_a_usage_error,
    a_stream_cut_off_before_its_end_leaves_nothing,
    a_stream_that_stalls_or_trickles_is_abandoned_and_leaves_nothing,
    a_raw_stream_arrives_whole_and_a_damaged_one_is_refused_in_step,
    a_stream_over_the_size_limit_is_too_large_and_nothing_is_kept,
    put_replace_from_stdin_replaces_and_creates,
    put_replace_refuses_a_directory,
);

#[test]
fn get_to_stdout_writes_only_the_body() {
    let server = TestServer::start();
    let data: Vec<u8> = (0..64).flat_map(block).collect();
    write_file(server.root(), "large.bin", &data);
    let (output, _) = output_within(&mut server.client(&["get", "large.bin", "-"]), PATIENCE);
    assert_exit(&output, 0);
    assert!(
        output.stdout.len() == data.len(),
        "{} bytes",
        output.stdout.len()
    );
    assert!(output.stdout == data, "stdout differs from the file");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("get \"large.bin\" -> \"-\" ok"), "{stderr}");
    // Nothing was written to a file named `-`, or any other.
    assert!(files_under(server.client_dir()).is_empty());
}

#[test]
fn get_to_stdout_whose_reader_goes_away_exits_quietly() {
    let server = TestServer::start();
    write_file(server.root(), "large.bin", &block(0).repeat(16));
    let mut child = spawn_piped(&mut server.client(&["get", "large.bin", "-"]));
    let mut head = [0; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The reader is gone, as `| head -c 10` goes.
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
    assert!(output.stderr.is_empty(), "{}", describe(&output));
}

#[test]
fn get_to_stdout_of_a_damaged_body_exits_1_saying_it_cannot_be_taken_back() {
    let body = b"hello, world";
    let mut reply = frame(&Message::Body {
        size: body.len() as u64,
    });
    reply.extend_from_slice(body);
    reply.extend(frame(&Message::Trailer { digest: [0; 32] }));
    let port = fake_download_server(reply);
    let mut command = client_at("127.0.0.1", port, &["get", "x.txt", "-"]);
    let (output, _) = output_within(&mut command, PATIENCE);
    assert_exit_saying(&output, 1, "digest mismatch");
    assert_exit_saying(&output, 1, "cannot be taken back");
    // It went out as it came: that is what a stream is.
    assert_eq!(output.stdout, body);
}

#[test]
fn dash_is_refused_in_the_shell() {
    let server = TestServer::start();
    write_file(server.root(), "a.txt", b"a");
    let output = run_with_input(&mut server.client(&[]), b"get a.txt -\nput - b.txt\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("not in the shell").count(),
        2,
        "{}",
        describe(&output)
    );
    assert!(output.stdout.is_empty(), "{}", describe(&output));
    assert_eq!(server.root_files(), ["a.txt"]);
}

#[test]
fn put_replace_replaces_a_file_atomically() {
    let server = TestServer::start();
    let old = pseudo_random_bytes(3 * MIB, 1);
    let new = pseudo_random_bytes(2 * MIB, 2);
    write_file(server.root(), "f.bin", &old);
    let local = write_file(server.client_dir(), "new.bin", &new);
    // A reader that opened the old file before the replacement.
    let mut reader = std::fs::File::open(server.root().join("f.bin")).unwrap();
    let output = server.run_client(&["put", "--replace", local.to_str().unwrap(), "f.bin"]);
    assert_exit(&output, 0);
    assert_eq!(std::fs::read(server.root().join("f.bin")).unwrap(), new);
    // The new content took the name by rename: the old file was never
    // written over, so its reader still reads it whole.
    let mut seen = Vec::new();
    reader.read_to_end(&mut seen).unwrap();
    assert!(seen == old, "the old file was changed in place");
    assert_eq!(server.root_files(), ["f.bin"]);
}

fn put_replace_from_stdin_replaces_and_creates(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("f.txt", b"old");
    let replace = ["put", "--replace", "-", "f.txt"];
    let output = run_with_input(&mut server.client(&replace), b"new");
    assert_exit(&output, 0);
    assert_eq!(server.read_served("f.txt").unwrap(), b"new");
    let create = ["put", "--replace", "-", "g.txt"];
    let output = run_with_input(&mut server.client(&create), b"fresh");
    assert_exit(&output, 0);
    assert_eq!(server.read_served("g.txt").unwrap(), b"fresh");
}

fn put_replace_refuses_a_directory(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.make_served_dir("d");
    let output = run_with_input(&mut server.client(&["put", "--replace", "-", "d"]), b"x");
    assert_exit_saying(&output, 1, "is-a-directory");
    assert_eq!(server.served_tree(), ["d"]);
}

#[test]
fn put_replace_is_forbidden_under_no_delete_and_keeps_the_file() {
    let server = TestServer::start_with(|config| {
        config.access = Arc::new(Access {
            tokens: None,
            mode: ServerMode::NoDelete,
        })
    });
    write_file(server.root(), "f.txt", b"old");
    let local = write_file(server.client_dir(), "new.txt", b"new");
    let file_args = ["put", "--replace", local.to_str().unwrap(), "f.txt"];
    let output = server.run_client(&file_args);
    assert_exit_saying(&output, 1, "forbidden");
    let output = run_with_input(
        &mut server.client(&["put", "--replace", "-", "f.txt"]),
        b"new",
    );
    assert_exit_saying(&output, 1, "forbidden");
    assert_eq!(std::fs::read(server.root().join("f.txt")).unwrap(), b"old");
    // Creating is still allowed there, stream or not.
    let output = run_with_input(&mut server.client(&["put", "-", "g.txt"]), b"new");
    assert_exit(&output, 0);
    assert_eq!(server.root_files(), ["f.txt", "g.txt"]);
}

#[test]
fn put_replace_is_forbidden_with_ro_and_wo_tokens() {
    let keys = tempfile::tempdir().unwrap();
    let token = |seed| -> String {
        let bytes = pseudo_random_bytes(32, seed);
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    };
    let (ro, wo, rw) = (token(3), token(5), token(7));
    let path = write_file(
        keys.path(),
        "tokens",
        format!("{ro} ro\n{wo} wo\n{rw} rw\n").as_bytes(),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = TestServer::start_with(|config| {
        config.access = Arc::new(Access {
            tokens: Some(Tokens::load(&path).unwrap()),
            mode: ServerMode::Full,
        })
    });
    write_file(server.root(), "f.txt", b"old");
    let put = |token: &str, args: &[&str], input: &[u8]| {
        let mut command = server.client(args);
        command.env("FERRY_TOKEN", token);
        run_with_input(&mut command, input)
    };
    for token in [&ro, &wo] {
        let output = put(token, &["put", "--replace", "-", "f.txt"], b"new");
        assert_exit_saying(&output, 1, "forbidden");
        assert_eq!(std::fs::read(server.root().join("f.txt")).unwrap(), b"old");
    }
    // A write-only token may still stream a new file in.
    let output = put(&wo, &["put", "-", "g.txt"], b"new");
    assert_exit(&output, 0);
    let output = put(&rw, &["put", "--replace", "-", "f.txt"], b"new");
    assert_exit(&output, 0);
    assert_eq!(std::fs::read(server.root().join("f.txt")).unwrap(), b"new");
}
