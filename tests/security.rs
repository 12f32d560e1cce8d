//! Encryption, identity and access against the real binary: TLS by default,
//! the server's identity pinned on first use or by fingerprint, tokens and
//! server modes, and no secret in anything either side prints.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes a file that holds a secret, with `mode`.
fn secret_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = write_file(dir, name, text.as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A fingerprint no server of these tests has.
const STRANGER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn files_of_every_size_round_trip_byte_identical_over_tls() {
    let mut server = BinaryServer::start_tls(&[]);
    fingerprint_in(&server.start_line);
    let local = tempfile::tempdir().unwrap();
    let fetched = tempfile::tempdir().unwrap();
    for (name, size, seed) in [
        ("empty", 0, 1),
        ("one-byte", 1, 2),
        ("medium.bin", 300 * 1024 + 7, 3),
        ("large.bin", 20 << 20, 4),
    ] {
        let data = pseudo_random_bytes(size, seed);
        let path = write_file(local.path(), name, &data);
        let put = pinned(&server, &["put", path_str(&path)]).output().unwrap();
        assert_exit(&put, 0);
        let report = server.next_report();
        assert!(
            report.contains(&format!("put \"{name}\" ok {size} bytes")),
            "{report}"
        );
        let get = pinned(&server, &["get", name])
            .current_dir(fetched.path())
            .output()
            .unwrap();
        assert_exit(&get, 0);
        let report = server.next_report();
        assert!(
            report.contains(&format!("get \"{name}\" ok {size} bytes")),
            "{report}"
        );
        // Compared as booleans: a failure must not print 20 MiB.
        let stored = std::fs::read(server.root.path().join(name)).unwrap();
        assert!(stored == data, "{name}: the server's copy differs");
        let back = std::fs::read(fetched.path().join(name)).unwrap();
        assert!(back == data, "{name}: the downloaded copy differs");
    }
}

/// A TCP relay on 127.0.0.1 that forwards every connection to `target`
/// and keeps a copy of all bytes it forwards, either way.
fn recording_relay(target: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            for (mut from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let record = Arc::clone(&record);
                std::thread::spawn(move || {
                    let mut tee = Tee { to, record };
                    let _ = std::io::copy(&mut from, &mut tee);
                    let _ = tee.to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, seen)
}

struct Tee {
    to: TcpStream,
    record: Arc<Mutex<Vec<u8>>>,
}

impl Write for Tee {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.to.write(bytes)?;
        self.record.lock().unwrap().extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.to.flush()
    }
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn a_relay_between_client_and_server_sees_neither_the_files_nor_the_token() {
    let token = "relay-test-token-3c9a71e0";
    let mut server = BinaryServer::start_tls_configured(&[], |command| {
        command.env("FERRY_TOKEN", token);
    });
    let fingerprint = fingerprint_in(&server.start_line);
    let (relay, seen) = recording_relay(server.port);
    let marker = "plaintext marker that must never cross the wire; ".repeat(100);
    let local = tempfile::tempdir().unwrap();
    let path = write_file(local.path(), "marked.txt", marker.as_bytes());
    let through_relay = |args: &[&str]| {
        let mut command = tls_client_at("127.0.0.1", relay, &["--fingerprint", &fingerprint]);
        command
            .args(args)
            .env("FERRY_TOKEN", token)
            .current_dir(local.path());
        command.output().unwrap()
    };

    assert_exit(&through_relay(&["put", path_str(&path), "sent.txt"]), 0);
    assert!(server.next_report().contains("put \"sent.txt\" ok"));
    assert_exit(&through_relay(&["get", "sent.txt", "back.txt"]), 0);
    assert!(server.next_report().contains("get \"sent.txt\" ok"));
    assert_eq!(
        std::fs::read(local.path().join("back.txt")).unwrap(),
        marker.as_bytes()
    );

    let seen = seen.lock().unwrap();
    // Both bodies went through the relay, so it saw more than one file.
    assert!(
        seen.len() > 2 * marker.len(),
        "{} bytes relayed",
        seen.len()
    );
    assert!(!holds(&seen, b"plaintext marker"), "file content in clear");
    assert!(!holds(&seen, token.as_bytes()), "token in clear");
    assert!(!holds(&seen, b"sent.txt"), "file name in clear");
    assert!(!holds(&seen, b"FERRY"), "ferry preamble in clear");
}

#[test]
fn the_identity_file_is_private_and_keeps_its_fingerprint_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.pem");
    let first = BinaryServer::start_tls(&["--identity", path_str(&identity)]);
    let fingerprint = fingerprint_in(&first.start_line);
    assert_eq!(mode_of(&identity), 0o600);
    drop(first);

    let again = BinaryServer::start_tls(&["--identity", path_str(&identity)]);
    assert_eq!(fingerprint_in(&again.start_line), fingerprint);
    // The fingerprint shown is the identity served.
    assert_exit(&pinned(&again, &["list"]).output().unwrap(), 0);

    let other = dir.path().join("other.pem");
    let different = BinaryServer::start_tls(&["--identity", path_str(&other)]);
    assert_ne!(fingerprint_in(&different.start_line), fingerprint);
}

#[test]
fn without_identity_flag_the_identity_is_kept_in_the_configuration_directory() {
    let config = tempfile::tempdir().unwrap();
    let start = || {
        BinaryServer::start_tls_configured(&[], |command| {
            command.env("XDG_CONFIG_HOME", config.path());
        })
    };
    let first = start();
    let fingerprint = fingerprint_in(&first.start_line);
    let identity = config.path().join("ferry/identity.pem");
    assert_eq!(mode_of(&identity), 0o600);
    drop(first);
    assert_eq!(fingerprint_in(&start().start_line), fingerprint);
}

#[test]
fn an_identity_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.pem");
    drop(BinaryServer::start_tls(&[
        "--identity",
        path_str(&identity),
    ]));
    let content = std::fs::read(&identity).unwrap();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).unwrap();

    let output = server_refusing_to_start(&["--identity", path_str(&identity)], |_| {});
    let stderr = stderr_of(&output);
    assert!(stderr.contains("chmod 600"), "{}", describe(&output));
    assert!(
        stderr.contains(path_str(&identity)),
        "{}",
        describe(&output)
    );
    assert!(!stderr.contains("BEGIN"), "key material shown: {stderr}");
    assert_eq!(std::fs::read(&identity).unwrap(), content, "file changed");
}

#[test]
fn a_server_refusing_its_tokens_makes_no_identity() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    // Its own configuration directory: ferry_command's is shared by every
    // test in this file, and others make identities in it.
    let config = tempfile::tempdir().unwrap();
    let in_config = |command: &mut Command| {
        command.env("XDG_CONFIG_HOME", config.path());
    };
    server_refusing_to_start(&["--token-file", path_str(&tokens)], in_config);
    server_refusing_to_start(&[], |command| {
        in_config(command);
        command.env("FERRY_TOKEN", "too-short");
    });
    assert_eq!(files_under(config.path()), Vec::<String>::new());
}

/// Asserts stderr holds `message` exactly once.
fn assert_said_once(output: &Output, message: &str) {
    let said = stderr_of(output).matches(message).count();
    assert_eq!(
        said,
        1,
        "{message:?} said {said} times\n{}",
        describe(output)
    );
}

#[test]
fn a_refused_token_or_identity_file_is_explained_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let output = server_refusing_to_start(&["--plain", "--token-file", path_str(&missing)], |_| {});
    assert_said_once(&output, &format!("cannot read {}", missing.display()));
    assert_said_once(&output, "No such file or directory");

    let tokens = secret_file(dir.path(), "tokens", &format!("{RW_TOKEN} rw\n"), 0o644);
    let output = server_refusing_to_start(&["--plain", "--token-file", path_str(&tokens)], |_| {});
    assert_said_once(&output, "can be read by other users");

    let identity = dir.path().join("identity.pem");
    drop(BinaryServer::start_tls(&[
        "--identity",
        path_str(&identity),
    ]));
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = server_refusing_to_start(&["--identity", path_str(&identity)], |_| {});
    assert_said_once(&output, "can be read by other users");

    let output = client_at("127.0.0.1", 9, &["--token-file", path_str(&missing)])
        .arg("list")
        .output()
        .unwrap();
    assert_said_once(&output, &format!("cannot read {}", missing.display()));
    assert_said_once(&output, "No such file or directory");
}

#[test]
fn the_first_connection_records_the_servers_identity_and_says_so_once() {
    let server = BinaryServer::start_tls(&[]);
    let fingerprint = fingerprint_in(&server.start_line);
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let client = || {
        tls_client_at(
            "127.0.0.1",
            server.port,
            &["--known-hosts", path_str(&known)],
        )
        .arg("list")
        .output()
        .unwrap()
    };

    let first = client();
    assert_exit(&first, 0);
    let said: Vec<String> = stderr_of(&first)
        .lines()
        .filter(|line| line.contains("first connection"))
        .map(str::to_owned)
        .collect();
    assert_eq!(said.len(), 1, "{}", describe(&first));
    assert!(said[0].contains(&fingerprint), "{}", said[0]);
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert_eq!(
        recorded,
        format!("127.0.0.1:{} {fingerprint}\n", server.port)
    );

    let second = client();
    assert_exit(&second, 0);
    assert!(
        !stderr_of(&second).contains("first connection"),
        "{}",
        describe(&second)
    );
    assert_eq!(std::fs::read_to_string(&known).unwrap(), recorded);
}

#[test]
fn a_changed_identity_is_refused_loudly_and_nothing_is_sent() {
    let mut server = BinaryServer::start_tls(&[]);
    let fingerprint = fingerprint_in(&server.start_line);
    assert_ne!(fingerprint, STRANGER);
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let recorded = format!(
        "192.0.2.7:4000 {fingerprint}\n127.0.0.1:{} {STRANGER}\n",
        server.port
    );
    std::fs::write(&known, &recorded).unwrap();
    let upload = write_file(dir.path(), "upload.txt", b"must not arrive");

    let output = tls_client_at(
        "127.0.0.1",
        server.port,
        &["--known-hosts", path_str(&known)],
    )
    .args(["put", path_str(&upload)])
    .output()
    .unwrap();
    assert_exit_saying(&output, 4, "SERVER IDENTITY CHANGED");
    let stderr = stderr_of(&output);
    assert!(stderr.contains(path_str(&known)), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains(&fingerprint), "{stderr}");

    // The server saw a handshake given up, not a request.
    let report = server.next_report();
    assert!(report.contains("connection failed"), "{report}");
    assert!(files_under(server.root.path()).is_empty());
    assert_eq!(std::fs::read_to_string(&known).unwrap(), recorded);
}

#[test]
fn a_pinned_fingerprint_is_trusted_alone_and_a_wrong_one_refused() {
    let mut server = BinaryServer::start_tls(&[]);
    let fingerprint = fingerprint_in(&server.start_line);
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let config = tempfile::tempdir().unwrap();

    // Right: served, and no known-hosts file is written, given or default.
    let right = tls_client_at("127.0.0.1", server.port, &["--fingerprint", &fingerprint])
        .args(["--known-hosts", path_str(&known), "list"])
        .output()
        .unwrap();
    assert_exit(&right, 0);
    assert!(!known.exists());
    let right = tls_client_at("127.0.0.1", server.port, &["--fingerprint", &fingerprint])
        .arg("list")
        .env("XDG_CONFIG_HOME", config.path())
        .output()
        .unwrap();
    assert_exit(&right, 0);
    assert!(!stderr_of(&right).contains("first connection"));
    assert_eq!(files_under(config.path()), Vec::<String>::new());
    for _ in 0..2 {
        assert!(server.next_report().contains("list ok"));
    }

    // Wrong: refused before anything is sent.
    let upload = write_file(dir.path(), "upload.txt", b"must not arrive");
    let wrong = tls_client_at("127.0.0.1", server.port, &["--fingerprint", STRANGER])
        .args(["put", path_str(&upload)])
        .output()
        .unwrap();
    assert_exit_saying(&wrong, 4, "SERVER IDENTITY MISMATCH");
    let report = server.next_report();
    assert!(report.contains("connection failed"), "{report}");
    assert!(files_under(server.root.path()).is_empty());

    // Malformed: a usage error, before any connection.
    let too_long = format!("{fingerprint}00");
    for malformed in ["xyz", &fingerprint[..63], too_long.as_str()] {
        let output = tls_client_at("127.0.0.1", server.port, &["--fingerprint", malformed])
            .arg("list")
            .output()
            .unwrap();
        assert_exit_saying(&output, 2, "fingerprint");
    }
}

// The issue asks for both sides to see the mismatch in under a second; the
// bound is 5 s so a shared, busy CI machine does not fail the test. Each
// test prints what it measured.
const MISMATCH_BOUND: Duration = Duration::from_secs(5);

#[test]
fn a_plain_client_meeting_a_tls_server_is_told_to_drop_plain_quickly_on_both_sides() {
    let mut server = BinaryServer::start_tls(&[]);
    let started = Instant::now();
    let (output, client_took) = output_within(
        &mut client_at("127.0.0.1", server.port, &["list"]),
        PATIENCE,
    );
    let report = server.next_report();
    let server_took = started.elapsed();
    println!("client finished in {client_took:?}, server reported after {server_took:?}");

    assert_exit_saying(&output, 3, "tls-required");
    assert!(
        stderr_of(&output).contains("connect without --plain"),
        "{}",
        describe(&output)
    );
    assert!(
        report.contains("connection failed tls-required"),
        "{report}"
    );
    assert!(client_took < MISMATCH_BOUND, "client took {client_took:?}");
    assert!(server_took < MISMATCH_BOUND, "server took {server_took:?}");
}

#[test]
fn a_tls_client_meeting_a_plain_server_is_told_to_pass_plain_quickly_on_both_sides() {
    let mut server = BinaryServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let mut client = tls_client_at(
        "127.0.0.1",
        server.port,
        &["--known-hosts", path_str(&known)],
    );
    client.arg("list");
    let started = Instant::now();
    let (output, client_took) = output_within(&mut client, PATIENCE);
    let report = server.next_report();
    let server_took = started.elapsed();
    println!("client finished in {client_took:?}, server reported after {server_took:?}");

    assert_exit_saying(&output, 3, "did not answer with TLS");
    assert!(
        stderr_of(&output).contains("--plain"),
        "{}",
        describe(&output)
    );
    assert!(
        report.contains("connection failed tls-unexpected")
            && report.contains("client started TLS"),
        "{report}"
    );
    assert!(!known.exists(), "a server without TLS was recorded");
    assert!(client_took < MISMATCH_BOUND, "client took {client_took:?}");
    assert!(server_took < MISMATCH_BOUND, "server took {server_took:?}");
}

#[test]
fn a_tls_client_meeting_a_web_server_is_not_told_to_pass_plain() {
    let port = fake_server(|stream| {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        // Open until the client hangs up: closed with the rest of its
        // hello unread, the socket would reset before the answer is read.
        let _ = std::io::Read::read_to_end(stream, &mut Vec::new());
    });
    let output = tls_client_at("127.0.0.1", port, &["--fingerprint", STRANGER, "list"])
        .output()
        .unwrap();
    assert_exit_saying(&output, 3, "does not look like a ferry server");
    assert!(
        !stderr_of(&output).contains("--plain"),
        "{}",
        describe(&output)
    );
}

const RW_TOKEN: &str = "rw-token-7d0c2a91e5b34f68";
const RO_TOKEN: &str = "ro-token-a4f19c3e8b7d2056";
const WO_TOKEN: &str = "wo-token-52e8b1d09c6f3a47";
const WRONG_TOKEN: &str = "no-such-token-0f1e2d3c4b5a";

/// How a client presents its token.
#[derive(Clone, Copy)]
enum Presents<'a> {
    Nothing,
    /// `--token-file` with a file holding just the token.
    File(&'a str),
    /// `FERRY_TOKEN` in the environment.
    Env(&'a str),
}

/// Runs clients against one server and checks each request's outcome on
/// both sides, keeping everything they printed.
struct Session {
    server: BinaryServer,
    /// The client's working directory.
    local: tempfile::TempDir,
    printed: Vec<String>,
}

impl Session {
    fn new(server: BinaryServer) -> Session {
        let printed = vec![server.start_line.clone()];
        Session {
            server,
            local: tempfile::tempdir().unwrap(),
            printed,
        }
    }

    /// Runs `args` presenting `token`; checks the exit code, that stderr
    /// says `client_says`, and that the server's next report says
    /// `server_says`. Returns the client's output.
    fn expect(
        &mut self,
        token: Presents,
        args: &[&str],
        code: i32,
        client_says: &str,
        server_says: &str,
    ) -> Output {
        let output = self.expect_counted(token, args, code, client_says);
        let report = self.server.next_report();
        assert!(
            report.contains(server_says),
            "expected {server_says:?} in {report}"
        );
        self.printed.push(report);
        output
    }

    /// Runs `args` presenting `token` and checks the exit code and that
    /// stderr says `client_says`, like [`Session::expect`]; but the server
    /// reports nothing yet: a failure of a kind it reported lately is only
    /// counted (see [`Session::expect_summary`]).
    fn expect_counted(
        &mut self,
        token: Presents,
        args: &[&str],
        code: i32,
        client_says: &str,
    ) -> Output {
        let mut command = pinned(&self.server, &[]);
        command.current_dir(self.local.path());
        let keys = tempfile::tempdir().unwrap();
        match token {
            Presents::Nothing => {}
            Presents::File(token) => {
                let file = secret_file(keys.path(), "token", &format!("{token}\n"), 0o600);
                command.arg("--token-file").arg(file);
            }
            Presents::Env(token) => {
                command.env("FERRY_TOKEN", token);
            }
        }
        let output = command.args(args).output().unwrap();
        assert_exit_saying(&output, code, client_says);
        self.printed.push(describe(&output));
        output
    }

    /// Checks that the server's next report sums up the failures counted,
    /// which it does once its 10 s window is over.
    fn expect_summary(&mut self, server_says: &str) {
        let report = self.server.next_report();
        assert!(
            report.contains(server_says),
            "expected {server_says:?} in {report}"
        );
        self.printed.push(report);
    }

    fn root(&self) -> &Path {
        self.server.root.path()
    }

    /// Stops the server and checks that no token appears in anything either
    /// side printed.
    fn assert_no_token_printed(self, tokens: &[&str]) {
        let Session {
            server,
            mut printed,
            ..
        } = self;
        let (rest, stderr) = server.stop_and_collect();
        printed.push(rest);
        printed.push(stderr);
        for text in &printed {
            for token in tokens {
                assert!(!text.contains(token), "a token was printed:\n{text}");
            }
        }
    }
}

#[test]
fn each_token_may_do_what_its_mode_allows_and_nothing_more() {
    let keys = tempfile::tempdir().unwrap();
    let tokens = secret_file(
        keys.path(),
        "tokens",
        &format!("# team\n{RW_TOKEN} rw\n{RO_TOKEN} ro\n\n{WO_TOKEN} wo\n"),
        0o600,
    );
    // Wrong tokens from one address are tried in a row below: with
    // penalties, all but the first would be refused before the token is
    // read. Penalties have tests of their own (tests/flood.rs).
    let server =
        BinaryServer::start_tls(&["--token-file", path_str(&tokens), "--max-penalty", "0"]);
    assert!(
        server.start_line.contains("3 tokens from"),
        "{}",
        server.start_line
    );
    let mut s = Session::new(server);
    write_file(s.root(), "shared.txt", b"shared");
    for name in ["rw.txt", "ro.txt", "wo.txt"] {
        write_file(s.local.path(), &format!("up/{name}"), name.as_bytes());
    }
    let (rw, rw_env) = (Presents::File(RW_TOKEN), Presents::Env(RW_TOKEN));
    let (ro, ro_env) = (Presents::File(RO_TOKEN), Presents::Env(RO_TOKEN));
    let (wo, wo_env) = (Presents::File(WO_TOKEN), Presents::Env(WO_TOKEN));

    // rw: everything.
    s.expect(rw, &["put", "up/rw.txt"], 0, "ok", "put \"rw.txt\" ok");
    let listed = s.expect(rw_env, &["list"], 0, "ok", "list ok 2 entries");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("rw.txt"));
    s.expect(rw_env, &["get", "rw.txt"], 0, "ok", "get \"rw.txt\" ok");
    assert_eq!(
        std::fs::read(s.local.path().join("rw.txt")).unwrap(),
        b"rw.txt"
    );
    s.expect(rw, &["delete", "rw.txt"], 0, "ok", "delete \"rw.txt\" ok");
    assert_eq!(files_under(s.root()), ["shared.txt"]);

    // ro: get and list.
    s.expect(ro, &["get", "shared.txt"], 0, "ok", "get \"shared.txt\" ok");
    s.expect(ro_env, &["list"], 0, "ok", "list ok 1 entry");
    let forbidden = "put \"ro.txt\" failed forbidden";
    s.expect(ro, &["put", "up/ro.txt"], 1, "forbidden", forbidden);
    let forbidden = "delete \"shared.txt\" failed forbidden";
    s.expect(ro_env, &["delete", "shared.txt"], 1, "forbidden", forbidden);
    assert_eq!(files_under(s.root()), ["shared.txt"]);

    // wo: put only.
    s.expect(wo_env, &["put", "up/wo.txt"], 0, "ok", "put \"wo.txt\" ok");
    let forbidden = "get \"shared.txt\" failed forbidden";
    let dest = "fetched-by-wo.txt";
    s.expect(wo, &["get", "shared.txt", dest], 1, "forbidden", forbidden);
    assert!(!s.local.path().join(dest).exists());
    let listed = s.expect(wo, &["list"], 1, "forbidden", "list failed forbidden");
    assert!(listed.stdout.is_empty());
    let forbidden = "delete \"shared.txt\" failed forbidden";
    s.expect(wo_env, &["delete", "shared.txt"], 1, "forbidden", forbidden);
    assert_eq!(files_under(s.root()), ["shared.txt", "wo.txt"]);

    // Missing or wrong: nothing runs.
    write_file(s.local.path(), "up/stranger.txt", b"must not arrive");
    let put = ["put", "up/stranger.txt"];
    let turned_away = "connection failed unauthorized";
    s.expect(Presents::Nothing, &put, 4, "unauthorized", turned_away);
    // Reported once per 10 s, then summed up (issue 12).
    for wrong in [Presents::File(WRONG_TOKEN), Presents::Env(WRONG_TOKEN)] {
        s.expect_counted(wrong, &put, 4, "unauthorized");
    }
    s.expect_summary("connection failed unauthorized: 2 more like this in the last 10 s");
    assert_eq!(files_under(s.root()), ["shared.txt", "wo.txt"]);

    s.assert_no_token_printed(&[RW_TOKEN, RO_TOKEN, WO_TOKEN, WRONG_TOKEN]);
}

#[test]
fn a_server_given_ferry_token_accepts_exactly_that_token_for_everything() {
    let token = "server-env-token-91b0c7e2d4";
    // Two failures in a row from one address: see the test above.
    let server = BinaryServer::start_tls_configured(&["--max-penalty", "0"], |command| {
        command.env("FERRY_TOKEN", token);
    });
    assert!(
        server
            .start_line
            .contains("the token in FERRY_TOKEN, read-write"),
        "{}",
        server.start_line
    );
    let mut s = Session::new(server);
    write_file(s.local.path(), "up/a.txt", b"a");
    let holder = Presents::Env(token);
    s.expect(holder, &["put", "up/a.txt"], 0, "ok", "put \"a.txt\" ok");
    s.expect(holder, &["list"], 0, "ok", "list ok 1 entry");
    s.expect(holder, &["get", "a.txt"], 0, "ok", "get \"a.txt\" ok");
    s.expect(holder, &["delete", "a.txt"], 0, "ok", "delete \"a.txt\" ok");

    let turned_away = "connection failed unauthorized";
    s.expect(Presents::Nothing, &["list"], 4, "unauthorized", turned_away);
    let wrong = Presents::Env(WRONG_TOKEN);
    s.expect_counted(wrong, &["list"], 4, "unauthorized");
    s.expect_summary("connection failed unauthorized: 1 more like this in the last 10 s");
    s.assert_no_token_printed(&[token, WRONG_TOKEN]);
}

#[test]
fn without_any_token_source_the_server_says_it_is_open_to_anyone() {
    let server = BinaryServer::start_tls(&[]);
    assert!(
        server.start_line.contains("open to anyone"),
        "{}",
        server.start_line
    );
    assert_exit(&pinned(&server, &["list"]).output().unwrap(), 0);
}

/// A plain server started with a mode `flag`, whose start line names the
/// mode `shown`, and a fresh directory for its client.
fn server_in_mode(flag: &str, shown: &str) -> (BinaryServer, tempfile::TempDir) {
    let server = BinaryServer::start(&[flag]);
    assert!(server.start_line.contains(shown), "{}", server.start_line);
    (server, tempfile::tempdir().unwrap())
}

/// Runs a plain client of the server on `port` in `dir`.
fn client_in(port: u16, dir: &tempfile::TempDir, args: &[&str]) -> Output {
    client_at("127.0.0.1", port, args)
        .current_dir(dir.path())
        .output()
        .unwrap()
}

#[test]
fn a_read_only_server_refuses_put_and_delete_and_touches_nothing() {
    let (mut server, local) = server_in_mode("--read-only", "read-only");
    write_file(server.root.path(), "kept.txt", b"kept");
    let upload = write_file(local.path(), "new.txt", b"new");
    let port = server.port;
    let client = |args: &[&str]| client_in(port, &local, args);

    assert_exit_saying(&client(&["put", path_str(&upload)]), 1, "forbidden");
    assert!(server
        .next_report()
        .contains("put \"new.txt\" failed forbidden"));
    assert_exit_saying(&client(&["delete", "kept.txt"]), 1, "forbidden");
    assert!(server
        .next_report()
        .contains("delete \"kept.txt\" failed forbidden"));
    assert_eq!(files_under(server.root.path()), ["kept.txt"]);
    assert_exit(&client(&["get", "kept.txt"]), 0);
    assert_exit(&client(&["list"]), 0);
}

#[test]
fn a_no_delete_server_takes_uploads_but_refuses_delete() {
    let (mut server, local) = server_in_mode("--no-delete", "no-delete");
    let upload = write_file(local.path(), "new.txt", b"new");
    let port = server.port;
    let client = |args: &[&str]| client_in(port, &local, args);

    assert_exit(&client(&["put", path_str(&upload)]), 0);
    assert!(server.next_report().contains("put \"new.txt\" ok"));
    assert_exit_saying(&client(&["delete", "new.txt"]), 1, "forbidden");
    assert!(server
        .next_report()
        .contains("delete \"new.txt\" failed forbidden"));
    assert_eq!(files_under(server.root.path()), ["new.txt"]);
    assert_exit(&client(&["get", "new.txt", "back.txt"]), 0);
    assert_exit(&client(&["list"]), 0);
}

#[test]
fn an_upload_only_server_takes_uploads_and_shows_and_removes_nothing() {
    let (mut server, local) = server_in_mode("--upload-only", "upload-only");
    let upload = write_file(local.path(), "drop.txt", b"dropped");
    let port = server.port;
    let client = |args: &[&str]| client_in(port, &local, args);

    assert_exit(&client(&["put", path_str(&upload)]), 0);
    assert!(server.next_report().contains("put \"drop.txt\" ok"));
    let get = client(&["get", "drop.txt", "back.txt"]);
    assert_exit_saying(&get, 1, "forbidden");
    assert!(!local.path().join("back.txt").exists());
    let list = client(&["list"]);
    assert_exit_saying(&list, 1, "forbidden");
    assert!(list.stdout.is_empty());
    assert_exit_saying(&client(&["delete", "drop.txt"]), 1, "forbidden");
    for refused in ["get \"drop.txt\"", "list", "delete \"drop.txt\""] {
        let report = server.next_report();
        assert!(
            report.contains(&format!("{refused} failed forbidden")),
            "{report}"
        );
    }
    assert_eq!(files_under(server.root.path()), ["drop.txt"]);
}

#[test]
fn server_modes_exclude_each_other() {
    let output = server_refusing_to_start(&["--plain", "--read-only", "--no-delete"], |_| {});
    assert_exit(&output, 2);
}

#[test]
fn help_shows_no_token_and_there_is_no_token_flag() {
    let token = "help-must-not-show-9e8d7c6b";
    for args in [&["server", "--help"][..], &["client", "--help"]] {
        let output = ferry_command()
            .args(args)
            .env("FERRY_TOKEN", token)
            .output()
            .unwrap();
        assert_exit(&output, 0);
        let text = describe(&output);
        assert!(!text.contains(token), "{text}");
        assert!(text.contains("--token-file"), "{text}");
        assert!(!text.contains("--token "), "{text}");
        assert!(!text.contains("--token <"), "{text}");
    }
    let output = client_at("127.0.0.1", 9, &["--token", "secret-on-the-command-line"])
        .arg("list")
        .output()
        .unwrap();
    assert_exit_saying(&output, 2, "unexpected argument '--token'");
}

#[test]
fn a_token_file_others_can_read_is_refused_without_showing_the_token() {
    let keys = tempfile::tempdir().unwrap();
    let server_tokens = secret_file(keys.path(), "tokens", &format!("{RW_TOKEN} rw\n"), 0o644);
    let output = server_refusing_to_start(
        &["--plain", "--token-file", path_str(&server_tokens)],
        |_| {},
    );
    let text = describe(&output);
    assert!(stderr_of(&output).contains("chmod 600"), "{text}");
    assert!(!text.contains(RW_TOKEN), "{text}");

    let client_token = secret_file(keys.path(), "token", &format!("{RW_TOKEN}\n"), 0o644);
    let output = client_at("127.0.0.1", 9, &["--token-file", path_str(&client_token)])
        .arg("list")
        .output()
        .unwrap();
    assert_exit_saying(&output, 1, "chmod 600");
    assert!(
        !describe(&output).contains(RW_TOKEN),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_token_file_that_is_a_directory_is_called_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let said = format!("{} is a directory", tokens.display());

    let output = server_refusing_to_start(&["--plain", "--token-file", path_str(&tokens)], |_| {});
    assert!(stderr_of(&output).contains(&said), "{}", describe(&output));
    assert!(
        !stderr_of(&output).contains("mode"),
        "{}",
        describe(&output)
    );

    let output = client_at("127.0.0.1", 9, &["--token-file", path_str(&tokens)])
        .arg("list")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(stderr_of(&output).contains(&said), "{}", describe(&output));
    assert!(
        !stderr_of(&output).contains("mode"),
        "{}",
        describe(&output)
    );
}

#[test]
fn an_unusable_client_token_file_exits_1_and_a_usage_error_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let too_open = secret_file(dir.path(), "too-open", &format!("{RW_TOKEN}\n"), 0o644);
    let empty = secret_file(dir.path(), "empty", "", 0o600);
    let directory = dir.path().join("directory");
    std::fs::create_dir(&directory).unwrap();
    let client = |args: &[&str]| client_at("127.0.0.1", 9, args).output().unwrap();
    for (file, said) in [
        (&missing, "cannot read"),
        (&too_open, "chmod 600"),
        (&empty, "no token in it"),
        (&directory, "is a directory"),
    ] {
        let output = client(&["--token-file", path_str(file), "list"]);
        assert_exit_saying(&output, 1, said);
    }
    assert_exit(&client(&["list", "--token-file"]), 2);
}

/// Turned away before any TLS (issue 12): the client hears nothing, and
/// says what that may mean.
#[test]
fn a_tls_server_at_its_connection_limit_turns_the_client_away_as_busy() {
    let mut server = BinaryServer::start_tls(&["--max-connections", "1"]);
    let mut holder = pinned(&server, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(holder.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("connected to") {
        line.clear();
        assert!(
            said.read_line(&mut line).unwrap() > 0,
            "the shell ended without connecting"
        );
    }

    let busy = pinned(&server, &["list"]).output().unwrap();
    assert_exit_saying(
        &busy,
        3,
        "the server closed the connection during the handshake (it may be busy",
    );
    let report = server.next_report();
    assert!(
        report.contains("connection failed busy: the server is serving its limit of 1"),
        "{report}"
    );

    drop(holder.stdin.take());
    assert!(wait_with_deadline(&mut holder).success());
}

/// A TLS client killed mid-upload is reported in plain words, not with
/// rustls's wording and a documentation link (issue 11).
#[test]
fn a_tls_client_killed_mid_upload_is_reported_as_gone() {
    let mut server = BinaryServer::start_tls(&[]);
    let client_dir = tempfile::tempdir().unwrap();
    // Sparse, so the upload is still running when the client is killed.
    let big = std::fs::File::create(client_dir.path().join("huge.bin")).unwrap();
    big.set_len(8 << 30).unwrap();
    let mut client = tls_client_at("127.0.0.1", server.port, &["put", "huge.bin"])
        .current_dir(client_dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let root = server.root.path().to_owned();
    eventually("the upload has started", || !files_under(&root).is_empty());
    client.kill().unwrap();
    client.wait().unwrap();
    let report = server.next_report();
    assert!(
        report.contains("put \"huge.bin\" failed connection-lost: the client went away"),
        "{report}"
    );
    assert!(
        report.contains("are kept for a resume"),
        "a cut-off put keeps its whole steps: {report}"
    );
    assert!(!report.contains("http"), "{report}");
}
