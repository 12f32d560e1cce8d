//! The `ferry` binary's command line: help, exit codes, the server's start
//! line and reports, signals, list and delete, addresses.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use common::{
    assert_exit, assert_exit_saying, client_at, describe, eventually, ferry_command, files_under,
    write_file, Backing, BinaryServer, RawClient, TestServer, PATIENCE,
};
use ferry::protocol::{Message, TEMP_PREFIX};

#[test]
fn every_command_has_help_and_the_binary_a_version() {
    for args in [
        &["--help"][..],
        &["server", "--help"],
        &["client", "--help"],
        &["client", "h", "1", "put", "--help"],
        &["client", "h", "1", "get", "--help"],
        &["client", "h", "1", "list", "--help"],
        &["client", "h", "1", "delete", "--help"],
    ] {
        let output = ferry_command().args(args).output().unwrap();
        assert_exit(&output, 0);
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage:"),
            "{args:?}: {}",
            describe(&output)
        );
    }
    let output = ferry_command().arg("--version").output().unwrap();
    assert_exit(&output, 0);
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ferry "));
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &[][..],
        // Since issue 16 a port may be left out (7740), on either side.
        &["client"],
        &["client", "localhost", "not-a-port", "list"],
        &["client", "localhost:9000", "9000", "list"],
        &["client", "localhost", "9000", "put"],
        &["client", "localhost", "9000", "frobnicate"],
        &["server", "0", "--frobnicate"],
        &["server", "70000"],
    ] {
        assert_exit(&ferry_command().args(args).output().unwrap(), 2);
    }
}

#[test]
fn the_timeout_takes_fractions_and_refuses_what_could_never_wait() {
    let server = TestServer::start();
    for timeout in ["1.5", "0.25", "3"] {
        assert_exit(&server.run_client(&["--timeout", timeout, "list"]), 0);
    }
    for (timeout, why) in [
        ("0", "more than 0"),
        ("-1", "more than 0"),
        ("NaN", "finite"),
        ("inf", "finite"),
        ("1.5s", "not a number"),
    ] {
        let output = server.run_client(&[&format!("--timeout={timeout}"), "list"]);
        assert_exit_saying(&output, 2, why);
    }
}

#[test]
fn an_unreachable_server_exits_with_3() {
    // Bind and drop a listener to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = client_at("127.0.0.1", port, &["list"]).output().unwrap();
    assert_exit(&output, 3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} list failed unreachable")),
        "{stderr}"
    );
}

#[test]
fn the_server_prints_its_start_line_and_one_report_per_request() {
    let mut server = BinaryServer::start(&[]);
    let root = server.root.path().canonicalize().unwrap();
    assert!(
        server
            .start_line
            .contains(&format!("127.0.0.1:{}", server.port)),
        "{}",
        server.start_line
    );
    assert!(
        server.start_line.contains(root.to_str().unwrap()),
        "{}",
        server.start_line
    );
    assert_eq!(server.start_line.lines().count(), 1);

    let mut client = RawClient::handshake(format!("127.0.0.1:{}", server.port).parse().unwrap());
    assert_eq!(client.put("a.txt", b"abc"), Message::Done);
    let line = server.next_line();
    assert!(
        line.contains(" 127.0.0.1:") && line.contains(" put \"a.txt\" ok 3 bytes in "),
        "{line}"
    );
    client.send(&Message::Get {
        name: "missing".into(),
    });
    assert!(matches!(client.recv(), Some(Message::Error { .. })));
    let line = server.next_line();
    assert!(
        line.contains(" get \"missing\" failed not-found: "),
        "{line}"
    );
}

#[test]
fn a_quiet_server_prints_its_start_line_and_only_failures_on_stderr() {
    let mut server = BinaryServer::start(&["--quiet"]);
    let stderr = BufReader::new(server.child.stderr.take().unwrap());
    let (said, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = said.send(line);
        }
    });

    let mut client = RawClient::handshake(server.addr());
    assert_eq!(client.put("a.txt", b"abc"), Message::Done);
    client.send(&Message::Get {
        name: "missing".into(),
    });
    assert!(matches!(client.recv(), Some(Message::Error { .. })));
    let failure = loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("no report of the failed get on stderr");
        if line.contains(" get \"missing\" ") {
            break line;
        }
    };
    assert!(failure.contains(" failed not-found: "), "{failure}");
    // Reports follow each connection's requests in order: had the put's
    // been printed, it would be on stdout by now.
    let (stdout, _) = server.stop_and_collect();
    assert_eq!(stdout, "");
}

#[test]
fn the_server_creates_a_missing_root() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("new/served");
    let mut child = ferry_command()
        .args(["server", "0", "--bind", "127.0.0.1", "--root"])
        .arg(&root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("up and running"), "{line}");
    assert!(root.is_dir());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_start_line_names_the_served_directory() {
    let server = BinaryServer::start(&[]);
    let root = server.root.path().canonicalize().unwrap();
    let serving = format!(", serving {};", root.display());
    assert!(
        server.start_line.contains(&serving),
        "{}",
        server.start_line
    );
}

#[test]
fn sigterm_and_sigint_stop_the_server_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut server = BinaryServer::start(&[]);
        let status = server.stop_with(signal);
        assert_eq!(status.code(), Some(0), "SIG{signal}");
    }
}

#[test]
fn shutdown_cancels_a_stalled_upload_and_removes_its_temporary_file() {
    let mut server = BinaryServer::start(&["--grace", "1"]);
    let mut uploader = RawClient::handshake(format!("127.0.0.1:{}", server.port).parse().unwrap());
    uploader.send(&Message::Put {
        name: "stalled.bin".into(),
        size: 1 << 20,
    });
    assert_eq!(uploader.recv(), Some(Message::Proceed));
    uploader.send_raw(&[9; 1000]);
    common::eventually("the temporary file exists", || {
        common::files_under(server.root.path())
            .iter()
            .any(|f| f.starts_with(TEMP_PREFIX))
    });
    assert_eq!(server.stop_with("TERM").code(), Some(0));
    let left: Vec<_> = std::fs::read_dir(server.root.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn list_prints_sorted_names_with_slashes_on_directories_and_nothing_else(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("b.txt", b"bb");
    server.write_served("a.txt", b"a");
    server.write_served("dir/inner.txt", b"inner");
    server.write_served(".hidden", b"h");
    let output = server.run_client(&["list"]);
    assert_exit(&output, 0);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        ".hidden\na.txt\nb.txt\ndir/\n"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("list ok 4 entries"));

    let output = server.run_client(&["list", "dir"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "inner.txt\n");
}

fn list_long_shows_size_and_modification_time(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("five.txt", b"12345");
    server.write_served("sub/inner.txt", b"");
    let output = server.run_client(&["list", "-l"]);
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!((lines[0][0], lines[0][2]), ("5", "five.txt"), "{stdout}");
    assert_eq!(lines[1][2], "sub/", "{stdout}");
    let modified = humantime::parse_rfc3339(lines[0][1]).unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    assert!(age.as_secs() < 3600, "{stdout}");
}

#[test]
fn list_lh_shows_sizes_as_ls_does_and_only_help_prints_help() {
    let server = TestServer::start();
    write_file(server.root(), "small.bin", &[7; 1536]);
    std::fs::File::create(server.root().join("sparse.bin"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    for args in [&["list", "-lh"][..], &["ls", "-l", "--human-readable"]] {
        let output = server.run_client(args);
        assert_exit(&output, 0);
        // The first and last words of each line: size and name.
        let sizes: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let mut words = line.split_whitespace();
                let first = words.next().unwrap_or_default();
                format!("{first} {}", words.last().unwrap_or_default())
            })
            .collect();
        assert_eq!(
            sizes,
            ["1.5K small.bin", "2.0G sparse.bin"],
            "{args:?}: {}",
            describe(&output)
        );
    }
    let output = server.run_client(&["list", "-h"]);
    assert_exit(&output, 0);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "small.bin\nsparse.bin\n",
        "{}",
        describe(&output)
    );
}

fn list_of_a_missing_directory_fails_and_of_a_file_shows_the_file(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("file", b"four");
    let output = server.run_client(&["list", "nope"]);
    assert_exit_saying(&output, 1, "failed not-found");
    // As `ls -l file` shows the file (issue 11).
    let output = server.run_client(&["list", "-l", "file"]);
    assert_exit(&output, 0);
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(listed.ends_with("  file\n"), "{listed}");
    assert!(listed.trim_start().starts_with("4 "), "{listed}");
}

fn delete_removes_a_file_and_refuses_directories_and_missing_names(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("doomed.txt", b"x");
    server.write_served("dir/keep.txt", b"k");
    assert_exit(&server.run_client(&["delete", "doomed.txt"]), 0);
    assert_eq!(server.read_served("doomed.txt"), None);

    let output = server.run_client(&["delete", "doomed.txt"]);
    assert_exit_saying(&output, 1, "failed not-found");

    let output = server.run_client(&["delete", "dir"]);
    assert_exit_saying(&output, 1, "failed is-a-directory");
    assert_eq!(server.read_served("dir/keep.txt").unwrap(), b"k");
}

store_matrix!(
    list_prints_sorted_names_with_slashes_on_directories_and_nothing_else,
    list_long_shows_size_and_modification_time,
    list_of_a_missing_directory_fails_and_of_a_file_shows_the_file,
    delete_removes_a_file_and_refuses_directories_and_missing_names,
);

#[test]
fn hostnames_and_ipv6_addresses_work() {
    let server = BinaryServer::start_on("::1");
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "v6.txt", b"six");
    let put = client_at("::1", server.port, &["put", "v6.txt"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_exit_saying(&put, 0, &format!("[::1]:{} put", server.port));

    let server = TestServer::start();
    let output = client_at("localhost", server.port(), &["list"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
}

#[test]
fn shutdown_lets_a_request_in_flight_finish() {
    let mut server = BinaryServer::start(&["--grace", "20"]);
    let mut uploader = RawClient::handshake(format!("127.0.0.1:{}", server.port).parse().unwrap());
    uploader.send(&Message::Put {
        name: "finishing.bin".into(),
        size: 2000,
    });
    assert_eq!(uploader.recv(), Some(Message::Proceed));
    uploader.send_raw(&[5; 1000]);
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // New connections are refused once the server stops accepting.
    common::eventually("the listener is closed", || {
        std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err()
    });
    uploader.send_raw(&[5; 1000]);
    uploader.send(&Message::Trailer {
        digest: *blake3::hash(&[5; 2000]).as_bytes(),
    });
    assert_eq!(uploader.recv(), Some(Message::Done));
    drop(uploader);
    assert_eq!(
        common::wait_with_deadline(&mut server.child).code(),
        Some(0)
    );
    assert_eq!(
        std::fs::read(server.root.path().join("finishing.bin")).unwrap(),
        [5; 2000]
    );
}

#[test]
fn a_restarted_server_removes_and_reports_what_its_killed_predecessor_left() {
    let mut server = BinaryServer::start(&[]);
    let addr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let mut uploader = RawClient::handshake(addr);
    uploader.send(&Message::Put {
        name: "deep/big.bin".to_owned(),
        size: 1 << 30,
    });
    assert_eq!(uploader.recv(), Some(Message::Proceed));
    uploader.send_raw(&[7; 100_000]);
    let temp_exists = |root: &std::path::Path| {
        files_under(root)
            .iter()
            .any(|name| name.contains(TEMP_PREFIX))
    };
    eventually("the upload's temporary file appears", || {
        temp_exists(server.root.path())
    });
    server.stop_with("KILL");
    assert!(temp_exists(server.root.path()), "SIGKILL runs no cleanup");

    // Another process's temporary file, still alive: this test's own.
    let alive = format!("{TEMP_PREFIX}{}-0", std::process::id());
    write_file(server.root.path(), &alive, b"in use");

    let root = std::mem::replace(&mut server.root, tempfile::tempdir().unwrap());
    let mut restarted = BinaryServer::start_in(root);
    // Waited for first: without the cleanup there is no line to read.
    eventually("the leftover is gone", || {
        files_under(restarted.root.path()) == [alive.clone(), "deep".to_owned()]
    });
    let report = restarted.next_line();
    assert!(
        report.contains(" local cleanup \"deep/.ferry-tmp-"),
        "{report}"
    );
    assert!(report.trim_end().ends_with(" ok"), "{report}");
    let mut client = RawClient::handshake(format!("127.0.0.1:{}", restarted.port).parse().unwrap());
    assert_eq!(client.put("deep/big.bin", b"whole"), Message::Done);
}

/// A second Ctrl-C or SIGTERM stops the server at once, even with a
/// request still in flight inside its grace period (issue 11 review).
#[test]
fn a_second_signal_stops_the_server_at_once() {
    let mut server = BinaryServer::start(&["--grace", "60"]);
    let mut uploader = RawClient::handshake(server.addr());
    uploader.send(&Message::Put {
        name: "slow.bin".into(),
        size: 1 << 20,
    });
    assert_eq!(uploader.recv(), Some(Message::Proceed));
    uploader.send_raw(&[1; 1000]);
    server.signal("TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "one signal lets the upload in flight finish"
    );
    let started = std::time::Instant::now();
    let status = server.stop_with("TERM");
    assert_eq!(status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (_, stderr) = server.stop_and_collect();
    assert!(
        stderr.contains("stopped at once by a second signal"),
        "{stderr}"
    );
}
