//! `--limit-rate` (issue 16): the client's, per transfer, and the
//! server's, per connection, both ways, over plain TCP (sendfile and
//! splice) and TLS (chunks), for files, trees and streams.
//!
//! Only lower bounds on time are asserted: a limited transfer must take at
//! least half of size / rate (its first tenth of a second comes at once),
//! however fast the machine; an upper bound would flake on a busy one.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_exit, assert_exit_saying, client_at, describe, ferry_command, pinned,
    pseudo_random_bytes, wait_with_deadline, write_file, BinaryServer,
};

/// Bytes each limited transfer moves: three MiB, at [`RATE`] about 1.6 s.
const SIZE: usize = 3 << 20;

/// The limit the tests set, as given and in bytes a second (decimal M).
const RATE: &str = "2M";
const RATE_BYTES: f64 = 2_000_000.0;

/// The least time a limited transfer of `bytes` may take.
fn lower_bound(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 / RATE_BYTES * 0.5)
}

/// Runs `command` in `dir`, with `stdin` if given; its output and how long
/// it took.
fn timed(mut command: Command, dir: &Path, stdin: Option<&[u8]>) -> (Output, Duration) {
    command
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let began = Instant::now();
    let mut child = command.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    (output, began.elapsed())
}

fn assert_slow(output: &Output, took: Duration, bytes: usize) {
    assert_exit(output, 0);
    assert!(
        took >= lower_bound(bytes),
        "{bytes} bytes at {RATE} took only {took:?}\n{}",
        describe(output)
    );
}

/// A client of `server` with `args`: plain, or pinned over TLS.
fn client(server: &BinaryServer, tls: bool, args: &[&str]) -> Command {
    if tls {
        pinned(server, args)
    } else {
        client_at("127.0.0.1", server.port, args)
    }
}

/// A limited put and get of one file each take their time and arrive
/// whole.
fn check_file_both_ways(tls: bool) {
    let server = if tls {
        BinaryServer::start_tls(&[])
    } else {
        BinaryServer::start(&[])
    };
    let local = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(SIZE, 16);
    write_file(local.path(), "up.bin", &data);
    let put = client(&server, tls, &["--limit-rate", RATE, "put", "up.bin"]);
    let (output, took) = timed(put, local.path(), None);
    assert_slow(&output, took, SIZE);
    assert!(std::fs::read(server.root.path().join("up.bin")).unwrap() == data);

    let get = client(
        &server,
        tls,
        &["--limit-rate", RATE, "get", "up.bin", "down.bin"],
    );
    let (output, took) = timed(get, local.path(), None);
    assert_slow(&output, took, SIZE);
    assert!(std::fs::read(local.path().join("down.bin")).unwrap() == data);
}

#[test]
fn a_limited_put_and_get_over_plain_tcp_keep_to_the_rate() {
    check_file_both_ways(false);
}

#[test]
fn a_limited_put_and_get_over_tls_keep_to_the_rate() {
    check_file_both_ways(true);
}

#[test]
fn limited_trees_and_streams_keep_to_the_rate() {
    let server = BinaryServer::start(&[]);
    let local = tempfile::tempdir().unwrap();
    let third = SIZE / 3;
    let files: Vec<Vec<u8>> = (0..3)
        .map(|seed| pseudo_random_bytes(third, seed))
        .collect();
    for (i, data) in files.iter().enumerate() {
        write_file(local.path(), &format!("tree/sub/{i}.bin"), data);
    }
    let put = client(&server, false, &["--limit-rate", RATE, "put", "-r", "tree"]);
    let (output, took) = timed(put, local.path(), None);
    assert_slow(&output, took, 3 * third);

    let get = client(
        &server,
        false,
        &["--limit-rate", RATE, "get", "-r", "tree", "copy"],
    );
    let (output, took) = timed(get, local.path(), None);
    assert_slow(&output, took, 3 * third);
    for (i, data) in files.iter().enumerate() {
        let copy = std::fs::read(local.path().join(format!("copy/sub/{i}.bin"))).unwrap();
        assert!(copy == *data, "copy/sub/{i}.bin differs");
    }

    let data = pseudo_random_bytes(SIZE, 17);
    let put = client(
        &server,
        false,
        &["--limit-rate", RATE, "put", "-", "stream.bin"],
    );
    let (output, took) = timed(put, local.path(), Some(&data));
    assert_slow(&output, took, SIZE);
    assert!(std::fs::read(server.root.path().join("stream.bin")).unwrap() == data);

    let get = client(
        &server,
        false,
        &["--limit-rate", RATE, "get", "stream.bin", "-"],
    );
    let (output, took) = timed(get, local.path(), None);
    assert_slow(&output, took, SIZE);
    assert!(output.stdout == data);
}

#[test]
fn the_servers_limit_holds_each_connection_to_the_rate_both_ways() {
    let server = BinaryServer::start(&["--limit-rate", RATE]);
    let local = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(SIZE, 18);
    write_file(local.path(), "up.bin", &data);
    let (output, took) = timed(
        client(&server, false, &["put", "up.bin"]),
        local.path(),
        None,
    );
    assert_slow(&output, took, SIZE);
    assert!(std::fs::read(server.root.path().join("up.bin")).unwrap() == data);

    let get = client(&server, false, &["get", "up.bin", "down.bin"]);
    let (output, took) = timed(get, local.path(), None);
    assert_slow(&output, took, SIZE);
    assert!(std::fs::read(local.path().join("down.bin")).unwrap() == data);
}

#[test]
fn a_limit_of_zero_is_no_limit() {
    let server = BinaryServer::start(&["--limit-rate", "0"]);
    let local = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(64 << 10, 19);
    write_file(local.path(), "up.bin", &data);
    let put = client(&server, false, &["--limit-rate", "0", "put", "up.bin"]);
    let (output, _) = timed(put, local.path(), None);
    assert_exit(&output, 0);
    assert!(std::fs::read(server.root.path().join("up.bin")).unwrap() == data);
}

#[test]
fn a_rate_that_is_not_one_is_a_usage_error() {
    for rate in ["fast", "-1", "10X", "1.5.3M", "", "0.1"] {
        let flag = format!("--limit-rate={rate}");
        let output = ferry_command()
            .args(["client", "127.0.0.1", "1", &flag, "list"])
            .output()
            .unwrap();
        assert_exit_saying(&output, 2, "--limit-rate");
        let output = ferry_command()
            .args(["server", "0", "--plain", &flag])
            .output()
            .unwrap();
        assert_exit_saying(&output, 2, "--limit-rate");
    }
    // Below the server's own minimum rate, every transfer would fail. A
    // server that started instead is killed after PATIENCE, failing.
    let mut server = ferry_command()
        .args(["server", "0", "--plain", "--limit-rate", "2K"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut server);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("below --min-rate"), "{stderr}");
}

/// A named server's `limit-rate` in the config file limits its client,
/// and the `[server]` table's limits the server (each a lower bound, as
/// above); a bad rate there names the file and line.
#[test]
fn limit_rate_comes_from_the_config_file_too() {
    let config_dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&[]);
    let config = write_file(
        config_dir.path(),
        "ferry.toml",
        format!(
            "[servers.slow]\nhost = \"127.0.0.1\"\nport = {}\nplain = true\nlimit-rate = \"{RATE}\"\n",
            server.port
        )
        .as_bytes(),
    );
    let config = config.to_str().unwrap();
    let local = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(SIZE, 21);
    write_file(local.path(), "up.bin", &data);
    let mut put = ferry_command();
    put.args(["client", "slow", "--config", config, "put", "up.bin"]);
    let (output, took) = timed(put, local.path(), None);
    assert_slow(&output, took, SIZE);
    assert!(std::fs::read(server.root.path().join("up.bin")).unwrap() == data);

    let server_config = write_file(
        config_dir.path(),
        "server.toml",
        format!("[server]\nlimit-rate = \"{RATE}\"\n").as_bytes(),
    );
    let limited = BinaryServer::start(&["--config", server_config.to_str().unwrap()]);
    let (output, took) = timed(
        client(&limited, false, &["put", "up.bin"]),
        local.path(),
        None,
    );
    assert_slow(&output, took, SIZE);

    let bad = write_file(
        config_dir.path(),
        "bad.toml",
        b"[servers.slow]\nlimit-rate = \"fast\"\n",
    );
    let output = ferry_command()
        .args(["client", "slow", "--config", bad.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    assert_exit_saying(&output, 1, "bad.toml:2");
}
