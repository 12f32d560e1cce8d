//! Reaching a server (issue 16) with the real binary: HOST:PORT and
//! [IPV6]:PORT beside HOST PORT, the default port 7740, named servers and
//! server defaults in the config file, and the known-hosts commands.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use tempfile::TempDir;

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `ferry client <args>`, run to the end.
fn client(args: &[&str]) -> Output {
    ferry_command().arg("client").args(args).output().unwrap()
}

/// A file private to its owner, as token files must be.
fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = write_file(dir, name, text.as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A plain server on 127.0.0.1 serving one file, `a.txt`.
fn server_with_a_file() -> BinaryServer {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "a.txt", b"a");
    BinaryServer::start_in(root)
}

#[test]
fn host_colon_port_and_host_then_port_reach_the_same_server() {
    let server = server_with_a_file();
    let port = server.port.to_string();
    let joined = format!("127.0.0.1:{port}");
    let named = format!("localhost:{port}");
    for args in [
        &[joined.as_str(), "--plain", "list"][..],
        &["127.0.0.1", &port, "--plain", "list"],
        &[named.as_str(), "--plain", "ls"],
    ] {
        let output = client(args);
        assert_exit(&output, 0);
        assert_eq!(stdout_of(&output), "a.txt\n", "{args:?}");
    }
}

#[test]
fn ipv6_addresses_work_with_brackets_and_port_or_bare() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        eprintln!("skipped: ::1 cannot be bound here ({e})");
        return;
    }
    let server = BinaryServer::start_on("::1");
    let port = server.port.to_string();
    let joined = format!("[::1]:{port}");
    for args in [
        &[joined.as_str(), "--plain", "list"][..],
        &["[::1]", &port, "--plain", "list"],
        &["::1", &port, "--plain", "list"],
    ] {
        let output = client(args);
        assert_exit(&output, 0);
        // Reported as it is recorded in known_hosts: brackets and port.
        assert!(
            stderr_of(&output).contains(&format!(" [::1]:{port} list ok")),
            "{args:?}: {}",
            describe(&output)
        );
    }
}

#[test]
fn a_port_given_twice_or_a_bad_address_is_a_usage_error() {
    for (args, says) in [
        (&["127.0.0.1:1", "2", "list"][..], "port given twice"),
        (&["host:0", "list"], "not between 1 and 65535"),
        (&["host:http", "list"], "not a number"),
        (&["[example.com]:1", "list"], "IPv6"),
        (&["host", "lst"], "neither a port"),
    ] {
        let output = client(args);
        assert_exit_saying(&output, 2, says);
    }
}

#[test]
fn without_a_port_the_client_connects_to_7740_and_takes_the_next_word_as_a_request() {
    // Whatever listens on 7740 here (most likely nothing), the report
    // names the address tried.
    let output = client(&["127.0.0.1", "--plain", "--timeout", "2", "list"]);
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(" 127.0.0.1:7740 list "),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_server_started_without_a_port_listens_on_7740() {
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:7740") {
        eprintln!("skipped: port 7740 is taken here ({e})");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_str().unwrap().to_owned();
    let args = [
        "server",
        "--plain",
        "--bind",
        "127.0.0.1",
        "--root",
        &root_path,
    ];
    let server = BinaryServer::start_exactly(root, &args, |_| {});
    assert!(
        server.start_line.contains("on 127.0.0.1:7740,"),
        "{}",
        server.start_line
    );
    assert_exit(&client(&["127.0.0.1", "--plain", "list"]), 0);
}

/// A config file holding `text`, in a directory of its own that can hold
/// the files it names.
fn config_file(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "ferry.toml", text.as_bytes());
    (dir, path)
}

#[test]
fn a_named_server_is_reached_with_its_settings_and_flags_win() {
    let (_keys, tokens) = alice_and_bob_token_file();
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "a.txt", b"a");
    let server = BinaryServer::start_in_with(root, &["--token-file", path_str(&tokens)]);
    // The token file is named relative to the config file.
    let (dir, config) = config_file(&format!(
        "[servers.box]\nhost = \"127.0.0.1\"\nport = {}\nplain = true\n\
         token-file = \"alice.token\"\ntimeout = 5\n",
        server.port
    ));
    private_file(dir.path(), "alice.token", ALICE);
    let wrong = private_file(dir.path(), "wrong.token", "not-a-token");

    let output = client(&["box", "--config", path_str(&config), "list"]);
    assert_exit(&output, 0);
    assert_eq!(stdout_of(&output), "a.txt\n");
    let target = format!(" 127.0.0.1:{} list ok", server.port);
    assert!(
        stderr_of(&output).contains(&target),
        "{}",
        describe(&output)
    );

    // A flag wins over the file: another token, another port.
    let output = client(&[
        "box",
        "--config",
        path_str(&config),
        "--token-file",
        path_str(&wrong),
        "list",
    ]);
    assert_exit_saying(&output, 4, "unauthorized");
    let output = client(&["box:1", "--config", path_str(&config), "list"]);
    assert_exit_saying(&output, 3, "127.0.0.1:1");
}

#[test]
fn the_default_config_file_is_read_from_the_config_directory() {
    let server = server_with_a_file();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("ferry")).unwrap();
    write_file(
        &home.path().join("ferry"),
        "config.toml",
        format!(
            "[servers.here]\nhost = \"127.0.0.1\"\nport = {}\nplain = true\n",
            server.port
        )
        .as_bytes(),
    );
    let output = ferry_command()
        .env("XDG_CONFIG_HOME", home.path())
        .args(["client", "here", "list"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_eq!(stdout_of(&output), "a.txt\n");
}

#[test]
fn config_mistakes_name_the_file_and_line() {
    let (_dir, unknown) = config_file("[servers.box]\nhost = \"127.0.0.1\"\nprot = 9\n");
    let output = client(&["box", "--config", path_str(&unknown), "list"]);
    assert_exit_saying(&output, 1, &format!("{}:3: ", unknown.display()));
    assert_exit_saying(&output, 1, "unknown field `prot`");

    let (_dir, bad) = config_file("# ports\n[servers.box]\nport = 70000\n");
    let output = client(&["box", "--config", path_str(&bad), "list"]);
    assert_exit_saying(&output, 1, &format!("{}:3: ", bad.display()));
    assert_exit_saying(&output, 1, "65535");

    let (_dir, bad_mode) = config_file("[server]\nmode = \"rw\"\n");
    let output = server_refusing_to_start(&["--config", path_str(&bad_mode)], |_| {});
    assert_exit_saying(&output, 1, &format!("{}:2: ", bad_mode.display()));

    let missing = unknown.with_file_name("missing.toml");
    let output = client(&["box", "--config", path_str(&missing), "list"]);
    assert_exit_saying(&output, 1, "missing.toml");
}

#[test]
fn server_defaults_come_from_the_config_file_and_flags_win() {
    let (dir, config) = config_file(
        "[server]\nport = 0\nbind = \"127.0.0.1\"\nplain = true\nroot = \"served\"\n\
         mode = \"no-delete\"\nmax-file-size = 4\n",
    );
    let served = dir.path().join("served");
    let keep = tempfile::tempdir().unwrap();
    let server =
        BinaryServer::start_exactly(keep, &["server", "--config", path_str(&config)], |_| {});
    let line = &server.start_line;
    assert!(line.contains("on 127.0.0.1:"), "{line}");
    assert!(line.contains(path_str(&served)), "{line}");
    assert!(line.contains("plain TCP"), "{line}");
    assert!(line.contains("no-delete"), "{line}");
    let port = server.port.to_string();
    let big = write_file(dir.path(), "big", b"12345");
    let small = write_file(dir.path(), "small", b"1234");
    let put = |file: &Path| client(&["127.0.0.1", &port, "--plain", "put", path_str(file)]);
    assert_exit(&put(&small), 0);
    assert_exit(&put(&big), 1);
    assert_eq!(files_under(&served), ["small"]);

    // Flags win: another mode and root.
    let other = tempfile::tempdir().unwrap();
    let other_path = path_str(other.path()).to_owned();
    let args = [
        "server",
        "--config",
        path_str(&config),
        "--read-only",
        "--root",
        &other_path,
    ];
    let server = BinaryServer::start_exactly(other, &args, |_| {});
    let line = &server.start_line;
    assert!(line.contains("read-only"), "{line}");
    assert!(line.contains(&other_path), "{line}");
    assert!(!line.contains(path_str(&served)), "{line}");
}

#[test]
fn known_hosts_are_listed_and_forgotten_keeping_the_file_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = ("1".repeat(64), "2".repeat(64));
    let known = write_file(
        dir.path(),
        "known_hosts",
        format!("# met\n127.0.0.1:4000 {one}\n[::1]:9107 {two}\n").as_bytes(),
    );
    // Not the 0600 a new temporary file gets: the rewrite keeps this one.
    std::fs::set_permissions(&known, std::fs::Permissions::from_mode(0o644)).unwrap();
    let known_hosts = |args: &[&str]| {
        ferry_command()
            .arg("known-hosts")
            .args(args)
            .args(["--known-hosts", path_str(&known)])
            .output()
            .unwrap()
    };
    let output = known_hosts(&["list"]);
    assert_exit(&output, 0);
    assert_eq!(
        stdout_of(&output),
        format!("127.0.0.1:4000 {one}\n[::1]:9107 {two}\n")
    );

    assert_exit(&known_hosts(&["forget", "[::1]:9107"]), 0);
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        format!("# met\n127.0.0.1:4000 {one}\n")
    );
    let mode = std::fs::metadata(&known).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert_eq!(
        stdout_of(&known_hosts(&["list"])),
        format!("127.0.0.1:4000 {one}\n")
    );

    let output = known_hosts(&["forget", "[::1]:9107"]);
    assert_exit_saying(&output, 1, "records no server [::1]:9107");
}

#[test]
fn a_changed_identity_names_the_command_that_forgets_it() {
    let server = BinaryServer::start_tls(&[]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{}", server.port);
    let known = write_file(
        dir.path(),
        "known_hosts",
        format!("{target} {}\n", "0".repeat(64)).as_bytes(),
    );
    let list = || {
        tls_client_at(
            "127.0.0.1",
            server.port,
            &["--known-hosts", path_str(&known), "list"],
        )
        .output()
        .unwrap()
    };
    let output = list();
    assert_exit_saying(&output, 4, &format!("`ferry known-hosts forget {target}`"));

    let forget = ferry_command()
        .args([
            "known-hosts",
            "forget",
            &target,
            "--known-hosts",
            path_str(&known),
        ])
        .output()
        .unwrap();
    assert_exit(&forget, 0);
    assert_exit_saying(&list(), 0, "first connection");
}
