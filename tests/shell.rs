//! The interactive shell driven through piped stdin: seed 002's commands,
//! one connection for all of them, failures that do not end it, and
//! reconnection after the server goes away.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_exit, describe, write_file, TestServer, PATIENCE};

fn run_script(server: &TestServer, script: &str) -> Output {
    let mut child = server
        .client(&[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn ls_lh_in_the_shell_lists_human_sizes_instead_of_printing_help() {
    let server = TestServer::start();
    write_file(server.root(), "small.bin", &[7; 1536]);
    let output = run_script(&server, "ls -lh\n");
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with(" 1.5K  ") && stdout.ends_with("  small.bin\n"),
        "{}",
        describe(&output)
    );
    assert!(
        !describe(&output).contains("Usage"),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_piped_script_runs_every_command_over_one_connection() {
    let server = TestServer::start();
    write_file(server.client_dir(), "notes.txt", b"notes");
    let script = "put notes.txt\nlist\nget notes.txt copy.txt\ndelete notes.txt\nlist\nquit\n";
    let output = run_script(&server, script);
    assert_exit(&output, 0);
    // stdout holds the two listings and nothing else: no prompts.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "notes.txt\n",
        "{}",
        describe(&output)
    );
    assert_eq!(
        std::fs::read(server.client_dir().join("copy.txt")).unwrap(),
        b"notes"
    );
    // delete asked for no confirmation, since stdin is not a terminal.
    assert!(server.root_files().is_empty());
    let reports = server.wait_for_reports(5);
    assert!(
        reports
            .iter()
            .all(|r| r.is_ok() && r.peer == reports[0].peer),
        "{reports:#?}"
    );
}

#[test]
fn seed_commands_work_in_any_case() {
    let server = TestServer::start();
    write_file(server.client_dir(), "f.txt", b"seed");
    let script = "CONN\nUPLD f.txt\nLIST\nDWLD f.txt g.txt\nDELF f.txt\nQuit\n";
    let output = run_script(&server, script);
    assert_exit(&output, 0);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "f.txt\n",
        "{}",
        describe(&output)
    );
    assert_eq!(
        std::fs::read(server.client_dir().join("g.txt")).unwrap(),
        b"seed"
    );
    assert!(server.root_files().is_empty());
}

#[test]
fn a_failed_command_does_not_end_the_shell() {
    let server = TestServer::start();
    write_file(server.client_dir(), "ok.txt", b"ok");
    let script = "get missing.txt\nnonsense command\nput \"unbalanced\nput ok.txt\n";
    let output = run_script(&server, script);
    // Every line ran; a script with a failure exits 1.
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("get \"missing.txt\" failed not-found"),
        "{stderr}"
    );
    assert!(stderr.contains("unbalanced quotes"), "{stderr}");
    assert!(stderr.contains("put \"ok.txt\" ok"), "{stderr}");
    assert_eq!(server.root_files(), ["ok.txt"]);
}

#[test]
fn help_lists_the_commands_and_end_of_input_quits() {
    let server = TestServer::start();
    let output = run_script(&server, "help\n");
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for command in [
        "put", "get", "list", "delete", "quit", "upld", "dwld", "delf",
    ] {
        assert!(
            stdout.contains(command),
            "{command} missing from help: {stdout}"
        );
    }
}

#[test]
fn the_shell_reconnects_after_the_server_goes_away() {
    let server =
        TestServer::start_with(|config| config.shutdown_grace = Duration::from_millis(100));
    let port = server.port();
    let client_dir = tempfile::tempdir().unwrap();
    let mut child = common::client_at("127.0.0.1", port, &[])
        .current_dir(client_dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (lines, stderr_lines) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let wait_for = |needle: &str| loop {
        let line = stderr_lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    };

    writeln!(stdin, "list").unwrap();
    wait_for("list ok");
    drop(server);
    let _restarted = TestServer::start_on_port(port, |_| {});
    writeln!(stdin, "list").unwrap();
    wait_for("closed the connection; reconnecting");
    wait_for("list ok");
    drop(stdin);
    assert_eq!(common::wait_with_deadline(&mut child).code(), Some(0));
}

/// The shell on a real terminal: `script` (util-linux) gives it a pty.
/// Input is typed only once the screen shows the prompt it answers.
#[test]
fn on_a_terminal_delete_asks_first_and_no_keeps_the_file() {
    let server = TestServer::start();
    write_file(server.root(), "precious.txt", b"p");
    let shell = format!(
        "{} client 127.0.0.1 {} --plain",
        env!("CARGO_BIN_EXE_ferry"),
        server.port()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) runs the shell on a pty");
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = std::sync::Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut chunk) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    let shown = |needle: &str, times: usize| {
        common::eventually(&format!("{needle:?} is shown {times} times"), || {
            screen.lock().unwrap().matches(needle).count() >= times
        });
    };
    let mut keyboard = child.stdin.take().unwrap();
    let mut type_line = |line: &str| keyboard.write_all(format!("{line}\r").as_bytes()).unwrap();

    shown("ferry> ", 1);
    type_line("delete precious.txt");
    shown("[y/N]", 1);
    type_line("n");
    shown("not deleted", 1);
    assert!(server.root().join("precious.txt").exists());

    shown("ferry> ", 2);
    type_line("DELF precious.txt");
    shown("[y/N]", 2);
    type_line("y");
    shown("delete \"precious.txt\" ok", 1);
    assert!(!server.root().join("precious.txt").exists());

    shown("ferry> ", 3);
    keyboard.write_all(b"\x04").unwrap(); // Ctrl-D
    assert_eq!(common::wait_with_deadline(&mut child).code(), Some(0));
}
