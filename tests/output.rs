//! Machine-readable output and where things landed (issue 16): `--json`
//! on every client command, `ferry server --log-format json`, and the
//! local path in a get's report.

mod common;

use std::process::Output;

use common::*;
use serde_json::Value;

/// Every stdout line of `output`, each of which must be a JSON object
/// with a `type`.
fn json_lines(output: &Output) -> Vec<Value> {
    lines_of(&output.stdout, output)
}

/// Every stderr line, each of which must be a JSON object: for a download
/// written to stdout.
fn json_stderr_lines(output: &Output) -> Vec<Value> {
    lines_of(&output.stderr, output)
}

fn lines_of(bytes: &[u8], output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{}", describe(output)));
            assert!(value["type"].is_string(), "no type: {line}");
            value
        })
        .collect()
}

/// Runs `args` with --json against `server`, expecting success, and
/// returns its stdout's objects, the last being its report.
fn json_ok(server: &TestServer, args: &[&str]) -> Vec<Value> {
    let output = server.run_client(&[&["--json"], args].concat());
    assert_exit(&output, 0);
    let lines = json_lines(&output);
    let report = lines
        .last()
        .unwrap_or_else(|| panic!("{}", describe(&output)));
    assert_eq!(report["type"], "report", "{report}");
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(report["peer"], server.addr().to_string(), "{report}");
    assert!(report["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    lines
}

/// Runs `command` (with --json among its arguments) expecting it to fail
/// with `code`, and checks the last line is an `error` of `kind` with
/// that exit code, after a failed report if a request was made.
fn json_failure(command: &mut std::process::Command, code: i32, kind: &str) -> Value {
    let output = command.output().unwrap();
    assert_exit(&output, code);
    let lines = json_lines(&output);
    let error = lines
        .last()
        .unwrap_or_else(|| panic!("{}", describe(&output)));
    assert_eq!(error["type"], "error", "{}", describe(&output));
    assert_eq!(error["kind"], kind, "{}", describe(&output));
    assert_eq!(error["exit_code"], code, "{}", describe(&output));
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    if let [.., report, _] = lines.as_slice() {
        assert_eq!(report["type"], "report");
        assert_eq!(report["outcome"], "failed");
        assert_eq!(report["kind"], kind);
    }
    error.clone()
}

/// The one object of `lines` that is the report, checked for `request`
/// and `name`.
fn report_of<'a>(lines: &'a [Value], request: &str, name: Option<&str>) -> &'a Value {
    let report = lines.last().unwrap();
    assert_eq!(report["request"], request, "{report}");
    assert_eq!(
        report["name"],
        name.map_or(Value::Null, Value::from),
        "{report}"
    );
    report
}

#[test]
fn every_client_command_prints_only_json_objects_with_their_fields() {
    let server = TestServer::start();
    let local = server.client_dir();
    write_file(local, "a b.txt", b"hello");
    write_file(local, "tree/one.txt", b"1");
    write_file(local, "tree/sub/two.txt", b"22");

    let lines = json_ok(&server, &["mkdir", "nested"]);
    report_of(&lines, "mkdir", Some("nested"));

    // A file put into a remote directory is reported by the name it got.
    let lines = json_ok(&server, &["put", "a b.txt", "nested"]);
    let report = report_of(&lines, "put", Some("nested/a b.txt"));
    assert_eq!(report["bytes"], 5);
    assert!(report["seconds"].is_number(), "{report}");

    let lines = json_ok(&server, &["list"]);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["type"], "entry");
    assert_eq!(lines[0]["name"], "nested");
    assert_eq!(lines[0]["kind"], "dir");
    assert_eq!(lines[0]["size"], Value::Null);
    assert_eq!(report_of(&lines, "list", None)["entries"], 1);

    let lines = json_ok(&server, &["list", "-l", "nested"]);
    let entry = &lines[0];
    assert_eq!(entry["type"], "entry");
    assert_eq!(entry["name"], "a b.txt");
    assert_eq!(entry["kind"], "file");
    assert_eq!(entry["size"], 5);
    assert!(entry["mtime"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(entry["mtime_seconds"].as_i64().is_some_and(|s| s > 0));
    assert_eq!(report_of(&lines, "list", Some("nested"))["entries"], 1);

    let lines = json_ok(&server, &["stat", "nested/a b.txt"]);
    let stat = &lines[0];
    assert_eq!(stat["type"], "stat");
    assert_eq!(stat["name"], "nested/a b.txt");
    assert_eq!(stat["kind"], "file");
    assert_eq!(stat["link"], "none");
    assert_eq!(stat["size"], 5);
    assert!(stat["mode"].as_str().is_some_and(|m| m.len() == 4));
    assert!(stat["mtime"].is_string());
    assert_eq!(
        stat["blake3"].as_str().unwrap(),
        blake3::hash(b"hello").to_hex().as_str()
    );
    report_of(&lines, "stat", Some("nested/a b.txt"));

    // The local path a get wrote, in its report.
    let lines = json_ok(&server, &["get", "nested/a b.txt", "got.txt"]);
    let report = report_of(&lines, "get", Some("nested/a b.txt"));
    assert_eq!(report["local"], "got.txt");
    assert_eq!(report["bytes"], 5);
    assert_eq!(std::fs::read(local.join("got.txt")).unwrap(), b"hello");

    let lines = json_ok(&server, &["rename", "nested/a b.txt", "nested/c.txt"]);
    let report = report_of(&lines, "rename", Some("nested/a b.txt"));
    assert_eq!(report["renamed_to"], "nested/c.txt");

    let lines = json_ok(&server, &["delete", "nested/c.txt"]);
    report_of(&lines, "delete", Some("nested/c.txt"));
    let lines = json_ok(&server, &["rmdir", "nested"]);
    report_of(&lines, "rmdir", Some("nested"));

    let lines = json_ok(&server, &["put", "-r", "tree"]);
    let report = report_of(&lines, "put-tree", Some("tree"));
    assert_eq!(report["files"], 2);
    assert_eq!(report["skipped"], 0);
    assert_eq!(report["bytes"], 3);

    let lines = json_ok(&server, &["get", "-r", "tree", "copy"]);
    let report = report_of(&lines, "get-tree", Some("tree"));
    assert_eq!(report["local"], "copy");
    assert_eq!(report["files"], 2);
    assert_eq!(report["bytes"], 3);
    assert_eq!(
        std::fs::read(local.join("copy/sub/two.txt")).unwrap(),
        b"22"
    );

    // Into the local tree it came from: both files skipped, and counted.
    let lines = json_ok(&server, &["get", "-r", "tree"]);
    let report = report_of(&lines, "get-tree", Some("tree"));
    assert_eq!(report["local"], "tree");
    assert_eq!(report["files"], 0);
    assert_eq!(report["skipped"], 2);
}

#[test]
fn standard_streams_keep_their_bytes_and_json_goes_beside_them() {
    let server = TestServer::start();
    let input = write_file(server.client_dir(), "input", b"from stdin");
    let output = server
        .client(&["--json", "put", "-", "in.txt"])
        .stdin(std::fs::File::open(input).unwrap())
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let lines = json_lines(&output);
    let report = report_of(&lines, "put-stream", Some("in.txt"));
    assert_eq!(report["bytes"], 10);

    // Stdout carries the file; the report is JSON on stderr.
    let output = server.run_client(&["--json", "get", "in.txt", "-"]);
    assert_exit(&output, 0);
    assert_eq!(output.stdout, b"from stdin");
    let lines = json_stderr_lines(&output);
    let report = report_of(&lines, "get", Some("in.txt"));
    assert_eq!(report["local"], "-");
    assert_eq!(report["bytes"], 10);
}

#[test]
fn request_failures_end_with_an_error_object_carrying_the_exit_code() {
    let server = TestServer::start();
    write_file(server.root(), "there.txt", b"x");
    write_file(server.client_dir(), "there.txt", b"x");

    let error = json_failure(
        &mut server.client(&["--json", "get", "missing.txt"]),
        1,
        "not-found",
    );
    assert_eq!(error["request"], "get");
    assert_eq!(error["name"], "missing.txt");
    json_failure(
        &mut server.client(&["--json", "put", "there.txt"]),
        1,
        "already-exists",
    );
    json_failure(
        &mut server.client(&["--json", "delete", "../escape"]),
        1,
        "bad-name",
    );
    // A token file that cannot be read fails before any request.
    let error = json_failure(
        &mut server.client(&["--json", "--token-file", "no-such-file", "list"]),
        1,
        "local-io-error",
    );
    assert_eq!(error["request"], Value::Null);
    // A request that is not one: put - needs the remote name.
    json_failure(
        &mut server.client(&["--json", "put", "-"]),
        2,
        "bad-local-name",
    );
}

#[test]
fn a_refusal_by_the_servers_mode_is_a_json_error() {
    let server = BinaryServer::start(&["--read-only"]);
    let local = tempfile::tempdir().unwrap();
    write_file(local.path(), "up.txt", b"up");
    let mut put = client_at("127.0.0.1", server.port, &["--json", "put", "up.txt"]);
    put.current_dir(local.path());
    json_failure(&mut put, 1, "forbidden");
}

#[test]
fn an_unreachable_server_is_a_json_error_with_exit_code_3() {
    // A port just freed: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut list = client_at("127.0.0.1", port, &["--json", "--timeout", "5", "list"]);
    json_failure(&mut list, 3, "unreachable");
}

#[test]
fn an_untrusted_server_is_a_json_error_with_exit_code_4() {
    let server = BinaryServer::start_tls(&[]);
    let wrong = "ab".repeat(32);
    let mut list = tls_client_at(
        "127.0.0.1",
        server.port,
        &["--json", "--fingerprint", &wrong, "list"],
    );
    let error = json_failure(&mut list, 4, "identity-changed");
    assert_eq!(error["request"], "list");
}

#[test]
fn the_server_logs_json_lines_with_the_json_log_format() {
    let mut server = BinaryServer::start(&["--log-format", "json"]);
    let start: Value = serde_json::from_str(&server.start_line).unwrap();
    assert_eq!(start["type"], "start");
    assert_eq!(start["address"], format!("127.0.0.1:{}", server.port));
    assert_eq!(start["root"], server.root.path().display().to_string());
    assert_eq!(start["fingerprint"], Value::Null);
    assert!(start["encryption"].as_str().unwrap().contains("plain"));
    assert!(start["access"].as_str().unwrap().contains("read-write"));

    let local = tempfile::tempdir().unwrap();
    write_file(local.path(), "up.txt", b"four");
    let run = |args: &[&str]| {
        let mut command = client_at("127.0.0.1", server.port, args);
        command.current_dir(local.path()).output().unwrap()
    };
    assert_exit(&run(&["put", "up.txt"]), 0);
    assert_exit(&run(&["get", "nothing"]), 1);

    let put: Value = serde_json::from_str(&server.next_report()).unwrap();
    assert_eq!(put["type"], "report");
    assert_eq!(put["request"], "put");
    assert_eq!(put["name"], "up.txt");
    assert_eq!(put["outcome"], "ok");
    assert_eq!(put["bytes"], 4);
    assert!(put["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let get: Value = serde_json::from_str(&server.next_report()).unwrap();
    assert_eq!(get["request"], "get");
    assert_eq!(get["outcome"], "failed");
    assert_eq!(get["kind"], "not-found");
    assert!(get["message"].is_string());
}

#[test]
fn a_get_report_names_the_local_path_it_wrote() {
    let server = TestServer::start();
    write_file(server.root(), "nested/renamed.txt", b"ok");
    let output = server.run_client(&["get", "nested/renamed.txt", "."]);
    assert_exit_saying(
        &output,
        0,
        r#"get "nested/renamed.txt" -> "./renamed.txt" ok 2 bytes"#,
    );
    // Nothing landed: no arrow.
    let output = server.run_client(&["get", "nested/renamed.txt"]);
    assert_exit_saying(
        &output,
        1,
        r#"get "nested/renamed.txt" failed local-exists"#,
    );
}

#[test]
fn a_put_report_names_the_remote_name_it_got() {
    let server = TestServer::start();
    write_file(server.root(), "dir/keep", b"");
    write_file(server.client_dir(), "a.txt", b"a");
    let output = server.run_client(&["put", "a.txt", "dir"]);
    assert_exit_saying(&output, 0, r#"put "dir/a.txt" ok 1 bytes"#);
    write_file(server.client_dir(), "tree/b.txt", b"b");
    let output = server.run_client(&["put", "-r", "tree", "dir"]);
    assert_exit_saying(&output, 0, r#"put-tree "dir/tree" ok 1 file"#);
}

#[test]
fn the_shell_under_json_prints_a_report_object_per_command() {
    let server = TestServer::start();
    write_file(server.root(), "here.txt", b"x");
    let script = write_file(server.client_dir(), "script", b"ls\nget missing.txt\n");
    let output = server
        .client(&["--json"])
        .stdin(std::fs::File::open(script).unwrap())
        .output()
        .unwrap();
    assert_exit(&output, 1);
    let lines = json_lines(&output);
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["entry", "report", "report"],
        "{}",
        describe(&output)
    );
    assert_eq!(lines[0]["name"], "here.txt");
    assert_eq!(lines[1]["request"], "list");
    assert_eq!(lines[2]["request"], "get");
    assert_eq!(lines[2]["outcome"], "failed");
    assert_eq!(lines[2]["kind"], "not-found");
}

/// The `tree-file` objects of `lines`, as (path, action, size, moved),
/// sorted by path.
fn tree_files(lines: &[Value]) -> Vec<(String, String, u64, u64)> {
    let mut files: Vec<_> = lines
        .iter()
        .filter(|line| line["type"] == "tree-file")
        .map(|line| {
            (
                line["path"].as_str().unwrap().to_owned(),
                line["action"].as_str().unwrap().to_owned(),
                line["size"].as_u64().unwrap(),
                line["moved"].as_u64().unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn verbose_names_each_file_of_a_tree_as_it_moves_or_is_skipped() {
    let server = TestServer::start();
    let local = server.client_dir();
    write_file(local, "tree/one.txt", b"1");
    write_file(local, "tree/sub/two.txt", b"22");
    let file = |path: &str, action: &str, size: u64, moved: u64| {
        (path.to_owned(), action.to_owned(), size, moved)
    };

    // Not asked: no file objects, only the report.
    let lines = json_ok(&server, &["put", "-r", "tree", "quiet-copy"]);
    assert_eq!(tree_files(&lines), []);
    assert_eq!(lines.len(), 1, "{lines:?}");

    let lines = json_ok(&server, &["--verbose", "put", "-r", "tree"]);
    assert_eq!(
        tree_files(&lines),
        [
            file("one.txt", "moved", 1, 1),
            file("sub/two.txt", "moved", 2, 2)
        ]
    );
    assert_eq!(lines.last().unwrap()["type"], "report");

    // Again into the same tree, one file changed: the other is skipped.
    write_file(local, "tree/sub/two.txt", b"2!");
    let lines = json_ok(&server, &["-v", "put", "-r", "--replace", "tree"]);
    assert_eq!(
        tree_files(&lines),
        [
            file("one.txt", "skipped", 1, 0),
            file("sub/two.txt", "moved", 2, 2)
        ]
    );

    // A get the same way: to a new name, then into the tree it came from.
    let lines = json_ok(&server, &["-v", "get", "-r", "tree", "fresh"]);
    assert_eq!(
        tree_files(&lines),
        [
            file("one.txt", "moved", 1, 1),
            file("sub/two.txt", "moved", 2, 2)
        ]
    );
    let lines = json_ok(&server, &["-v", "get", "-r", "tree"]);
    assert_eq!(
        tree_files(&lines),
        [
            file("one.txt", "skipped", 1, 0),
            file("sub/two.txt", "skipped", 2, 0)
        ]
    );

    // Without --json, a line each on stderr.
    let output = server.run_client(&["-v", "get", "-r", "tree", "text-copy"]);
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("  moved \"one.txt\" 1 bytes"), "{stderr}");
    assert!(
        stderr.contains("  moved \"sub/two.txt\" 2 bytes"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
