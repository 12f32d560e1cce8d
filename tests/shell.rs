//! The interactive shell driven through piped stdin: seed 002's commands
//! and the directory commands, one connection for all of them, failures
//! that do not end it, reconnection after the server goes away or shuts
//! down, globs local and remote; and on a real terminal, confirmation
//! before a delete.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_exit, describe, write_file, Backing, TestServer, PATIENCE};

#[test]
fn ls_lh_in_the_shell_lists_human_sizes_instead_of_printing_help() {
    let server = TestServer::start();
    write_file(server.root(), "small.bin", &[7; 1536]);
    let output = server.run_shell("ls -lh\n");
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
    let output = server.run_shell(script);
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
    let output = server.run_shell(script);
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
    let output = server.run_shell(script);
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
    let output = server.run_shell("help\n");
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for command in [
        "put", "get", "list", "delete", "quit", "upld", "dwld", "delf", "mkdir", "rmdir", "rename",
        "mv", "stat", "cd", "pwd", "lcd", "lpwd", "lls", "!COMMAND",
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
    let stderr_lines = watch_stderr(&mut child);
    let wait_for = |needle: &str| wait_for_line(&stderr_lines, needle);

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
struct Terminal {
    child: std::process::Child,
    screen: std::sync::Arc<std::sync::Mutex<String>>,
    keyboard: std::process::ChildStdin,
    /// A home made for this terminal alone, kept until it goes.
    _home: Option<tempfile::TempDir>,
}

impl Terminal {
    /// The shell of `server`'s client, on a pty, with a home of its own
    /// (so its history file is the test's).
    fn open(server: &TestServer) -> Terminal {
        let home = tempfile::tempdir().unwrap();
        let mut terminal = Terminal::open_with_home(server, home.path());
        terminal._home = Some(home);
        terminal
    }

    /// The shell of `server`'s client, on a pty, run in the client
    /// directory with `home` as HOME and no XDG_STATE_HOME.
    fn open_with_home(server: &TestServer, home: &std::path::Path) -> Terminal {
        let shell = format!(
            "{} client 127.0.0.1 {} --plain",
            env!("CARGO_BIN_EXE_ferry"),
            server.port()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &shell, "/dev/null"])
            .current_dir(server.client_dir())
            .env("HOME", home)
            .env_remove("XDG_STATE_HOME")
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
        let keyboard = child.stdin.take().unwrap();
        Terminal {
            child,
            screen,
            keyboard,
            _home: None,
        }
    }

    /// How many times `needle` is on the screen so far.
    fn count(&self, needle: &str) -> usize {
        self.screen.lock().unwrap().matches(needle).count()
    }

    /// Everything shown so far.
    fn screen(&self) -> String {
        self.screen.lock().unwrap().clone()
    }

    /// Waits until `needle` has been shown `times` times; fails showing
    /// the screen if it is not within [`PATIENCE`].
    fn shown(&self, needle: &str, times: usize) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.count(needle) < times {
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} not shown {times} times; the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys` as they are, without Enter.
    fn type_keys(&mut self, keys: &str) {
        self.keyboard.write_all(keys.as_bytes()).unwrap();
    }

    fn type_line(&mut self, line: &str) {
        self.keyboard
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
    }

    /// Types Ctrl-D at the `prompts`th prompt and returns the exit code.
    fn quit_at_prompt(mut self, prompts: usize) -> Option<i32> {
        self.shown("ferry> ", prompts);
        self.keyboard.write_all(b"\x04").unwrap();
        common::wait_with_deadline(&mut self.child).code()
    }
}

#[test]
fn on_a_terminal_delete_asks_first_and_no_keeps_the_file() {
    let server = TestServer::start();
    write_file(server.root(), "precious.txt", b"p");
    let mut terminal = Terminal::open(&server);

    terminal.shown("ferry> ", 1);
    terminal.type_line("delete precious.txt");
    terminal.shown("[y/N]", 1);
    terminal.type_line("n");
    terminal.shown("not deleted", 1);
    assert!(server.root().join("precious.txt").exists());

    terminal.shown("ferry> ", 2);
    terminal.type_line("DELF precious.txt");
    terminal.shown("[y/N]", 2);
    terminal.type_line("y");
    terminal.shown("delete \"precious.txt\" ok", 1);
    assert!(!server.root().join("precious.txt").exists());

    assert_eq!(terminal.quit_at_prompt(3), Some(0));
}

#[test]
fn a_piped_script_makes_moves_shows_and_removes_a_directory() {
    let server = TestServer::start();
    write_file(server.client_dir(), "a.txt", b"seven b");
    let script = "mkdir d\nput a.txt d/\nmv d/a.txt d/b.txt\nstat d/b.txt\ndelete -r d\n";
    let output = server.run_shell(script);
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("name:     d/b.txt\nkind:     file\nsize:     7\n"),
        "{}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for said in [
        "mkdir \"d\" ok",
        "put \"d/a.txt\" ok",
        "rename \"d/a.txt\" ok -> \"d/b.txt\"",
        "stat \"d/b.txt\" ok",
        "delete \"d\" ok removed 1 file and 1 directory",
    ] {
        assert!(
            stderr.contains(said),
            "{said:?} missing\n{}",
            describe(&output)
        );
    }
    assert!(server.root_files().is_empty());
    // One connection for all five.
    let reports = server.wait_for_reports(5);
    assert!(reports
        .iter()
        .all(|r| r.is_ok() && r.peer == reports[0].peer));
}

#[test]
fn one_failing_directory_command_makes_a_piped_script_exit_1_after_running_the_rest() {
    let server = TestServer::start();
    let output = server.run_shell("mkdir d\nrmdir missing\nmkdir -p d/e/f\nrmdir d\n");
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rmdir \"missing\" failed not-found"),
        "{stderr}"
    );
    assert!(stderr.contains("rmdir \"d\" failed not-empty"), "{stderr}");
    assert_eq!(server.root_files(), ["d", "d/e", "d/e/f"]);
}

#[test]
fn on_a_terminal_delete_looks_before_asking() {
    let server = TestServer::start();
    write_file(server.root(), "existing.txt", b"e");
    write_file(server.root(), "dir/inside.txt", b"i");
    let mut terminal = Terminal::open(&server);

    // A missing name: reported at once, nothing asked.
    terminal.shown("ferry> ", 1);
    terminal.type_line("rm nosuch.txt");
    terminal.shown("delete \"nosuch.txt\" failed not-found", 1);
    terminal.shown("ferry> ", 2);
    assert_eq!(terminal.count("[y/N]"), 0, "{}", terminal.screen());

    // A directory without -r: the server's refusal, nothing asked.
    terminal.type_line("rm dir");
    terminal.shown("delete \"dir\" failed is-a-directory", 1);
    terminal.shown("ferry> ", 3);
    assert_eq!(terminal.count("[y/N]"), 0, "{}", terminal.screen());

    // A file: asked, and kept on no.
    terminal.type_line("rm existing.txt");
    terminal.shown("delete \"existing.txt\" on the server? [y/N]", 1);
    terminal.type_line("n");
    terminal.shown("not deleted", 1);
    assert!(server.root().join("existing.txt").exists());

    // A directory with -r: asked about everything in it.
    terminal.shown("ferry> ", 4);
    terminal.type_line("delete -r dir");
    terminal.shown(
        "delete \"dir\" and everything in it on the server? [y/N]",
        1,
    );
    terminal.type_line("y");
    terminal.shown("delete \"dir\" ok removed 1 file and 1 directory", 1);
    assert_eq!(server.root_files(), ["existing.txt"]);

    assert_eq!(terminal.quit_at_prompt(5), Some(0));
}

#[test]
fn on_a_terminal_a_dangling_or_escaping_symlink_can_be_deleted() {
    let server = TestServer::start();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("nowhere", server.root().join("dangling")).unwrap();
    std::os::unix::fs::symlink(outside.path(), server.root().join("escape")).unwrap();
    let mut terminal = Terminal::open(&server);
    for (asked, link) in ["dangling", "escape"].into_iter().enumerate() {
        terminal.shown("ferry> ", asked + 1);
        terminal.type_line(&format!("rm {link}"));
        terminal.shown("[y/N]", asked + 1);
        terminal.type_line("y");
        terminal.shown(&format!("delete \"{link}\" ok"), 1);
    }
    assert!(server.root_files().is_empty());
    assert!(outside.path().is_dir());
    assert_eq!(terminal.quit_at_prompt(3), Some(0));
}

#[test]
fn on_a_terminal_deleting_a_symlink_to_a_directory_asks_first() {
    let server = TestServer::start();
    write_file(server.root(), "dir/inside.txt", b"i");
    std::os::unix::fs::symlink("dir", server.root().join("dir-link")).unwrap();
    let mut terminal = Terminal::open(&server);
    terminal.shown("ferry> ", 1);
    terminal.type_line("rm dir-link");
    terminal.shown(
        "delete the symlink \"dir-link\" on the server (not what it leads to)? [y/N]",
        1,
    );
    terminal.type_line("n");
    terminal.shown("not deleted", 1);
    terminal.shown("ferry> ", 2);
    assert!(server.root().join("dir-link").symlink_metadata().is_ok());
    assert!(server.root().join("dir/inside.txt").exists());
    assert_eq!(terminal.quit_at_prompt(2), Some(0));
}

#[test]
fn at_sigterm_an_idle_shell_is_let_go_at_once_and_says_so_at_its_next_command() {
    let mut server = common::BinaryServer::start(&["--grace", "30"]);
    let client_dir = tempfile::tempdir().unwrap();
    let mut child = common::client_at("127.0.0.1", server.port, &[])
        .current_dir(client_dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stderr_lines = watch_stderr(&mut child);
    let wait_for = |needle: &str| wait_for_line(&stderr_lines, needle);

    writeln!(stdin, "stat").unwrap();
    wait_for("stat ok");
    let signalled = std::time::Instant::now();
    let status = server.stop_with("TERM");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    // Nothing was in flight: no waiting out the 30 s of grace.
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM"
    );
    let (_, server_stderr) = server.stop_and_collect();
    assert_eq!(
        server_stderr.matches("ferry server shutting down").count(),
        1,
        "{server_stderr}"
    );
    assert!(
        !server_stderr.contains("cancelling requests still in flight"),
        "{server_stderr}"
    );

    // The shell's next command learns the server closed the connection,
    // without waiting for a reply that will never come.
    let typed = std::time::Instant::now();
    writeln!(stdin, "stat").unwrap();
    wait_for("the server closed the connection");
    wait_for("cannot connect");
    assert!(
        typed.elapsed() < Duration::from_secs(5),
        "{:?}",
        typed.elapsed()
    );
    drop(stdin);
    assert_eq!(common::wait_with_deadline(&mut child).code(), Some(1));
}

/// The lines `child` writes to stderr, as they come.
fn watch_stderr(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (lines, stderr_lines) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    stderr_lines
}

/// The next line holding `needle`, passing over others; fails the test if
/// none comes within [`PATIENCE`].
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

// Globs in the shell (issue 13): local ones expanded as sh expands them,
// quoted ones left alone, remote ones expanded over the server's listings.

#[test]
fn put_in_the_shell_expands_a_local_glob_to_every_match() {
    let server = TestServer::start();
    for name in ["a.txt", "b.txt", "c.md", ".hidden.txt", "d1/x.txt"] {
        write_file(server.client_dir(), name, name.as_bytes());
    }
    let output = server.run_shell("put *.txt\n");
    assert_exit(&output, 0);
    // Hidden names only for a pattern that starts with a literal `.`.
    assert_eq!(
        server.root_files(),
        ["a.txt", "b.txt"],
        "{}",
        describe(&output)
    );
    assert_eq!(
        std::fs::read(server.root().join("b.txt")).unwrap(),
        b"b.txt"
    );
}

#[test]
fn mput_in_the_shell_expands_globs_in_directories_and_keeps_the_target() {
    let server = TestServer::start();
    for name in ["d1/a.txt", "d2/b.txt", "d2/c.md", "e1/z.txt"] {
        write_file(server.client_dir(), name, name.as_bytes());
    }
    let output = server.run_shell("mput d*/*.txt into/\n");
    assert_exit(&output, 0);
    assert_eq!(
        server.root_files(),
        ["into", "into/a.txt", "into/b.txt"],
        "{}",
        describe(&output)
    );
}

#[test]
fn a_quoted_glob_in_the_shell_names_a_file_literally() {
    let server = TestServer::start();
    write_file(server.client_dir(), "a*.txt", b"star");
    write_file(server.client_dir(), "ab.txt", b"ab");
    let output = server.run_shell("put 'a*.txt'\nput \"a*\".txt copy.txt\n");
    assert_exit(&output, 0);
    assert_eq!(
        server.root_files(),
        ["a*.txt", "copy.txt"],
        "{}",
        describe(&output)
    );
    assert_eq!(
        std::fs::read(server.root().join("copy.txt")).unwrap(),
        b"star"
    );
}

#[test]
fn a_local_glob_matching_nothing_fails_that_command_only() {
    let server = TestServer::start();
    write_file(server.client_dir(), "a.txt", b"a");
    let output = server.run_shell("put *.nothing\nput a.txt\n");
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("put \"*.nothing\" failed bad-local-name: *.nothing: no match"),
        "{}",
        describe(&output)
    );
    assert_eq!(server.root_files(), ["a.txt"]);
}

fn mget_in_the_shell_expands_a_quoted_remote_glob(backing: Backing) {
    let server = TestServer::start_in(backing);
    for name in ["d/x.txt", "d/y.txt", "d/.hidden", "e/z.txt"] {
        server.write_served(name, name.as_bytes());
    }
    let output = server.run_shell("mget 'd/*'\n");
    assert_exit(&output, 0);
    assert_eq!(
        common::files_under(server.client_dir()),
        ["x.txt", "y.txt"],
        "{}",
        describe(&output)
    );
}

#[test]
fn a_one_shot_put_leaves_local_globs_to_the_users_shell() {
    let server = TestServer::start();
    write_file(server.client_dir(), "a.txt", b"a");
    // No shell between: the operand `*.txt` reaches ferry as it is, and
    // names no file.
    let output = server.run_client(&["put", "*.txt"]);
    assert_exit(&output, 1);
    assert!(server.root_files().is_empty(), "{}", describe(&output));
}

// The shell as sftp's (issue 16): remote and local working directories,
// `~`, `!`, history between sessions and Tab completion.

/// Runs the shell of `server`'s client with `script` piped in, HOME set to
/// `home` and no XDG_STATE_HOME.
fn run_shell_at_home(
    server: &TestServer,
    home: &std::path::Path,
    script: &str,
) -> std::process::Output {
    let mut child = server
        .client(&[])
        .env("HOME", home)
        .env_remove("XDG_STATE_HOME")
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
fn after_cd_names_are_taken_from_the_remote_directory_and_pwd_shows_it() {
    let server = TestServer::start();
    write_file(server.root(), "d/e/x.txt", b"in e");
    write_file(server.root(), "top.txt", b"top");
    write_file(server.client_dir(), "up.txt", b"up");
    let script = "pwd
cd d/e
pwd
list
get x.txt
put up.txt
get ../../top.txt
cd ..
pwd
cd /
pwd
";
    let output = server.run_shell(script);
    assert_exit(&output, 0);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "/\n/d/e\nx.txt\n/d\n/\n",
        "{}",
        describe(&output)
    );
    assert_eq!(
        std::fs::read(server.client_dir().join("x.txt")).unwrap(),
        b"in e"
    );
    assert!(server.client_dir().join("top.txt").exists());
    assert_eq!(
        std::fs::read(server.root().join("d/e/up.txt")).unwrap(),
        b"up",
        "{}",
        describe(&output)
    );
}

#[test]
fn cd_to_a_missing_directory_or_a_file_fails_and_stays_put() {
    let server = TestServer::start();
    write_file(server.root(), "d/f.txt", b"f");
    let output = server.run_shell("cd d\ncd nosuch\ncd f.txt\npwd\n");
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cd /d/nosuch: no such file or directory"),
        "{}",
        describe(&output)
    );
    assert!(
        stderr.contains("cd /d/f.txt: not a directory"),
        "{}",
        describe(&output)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "/d\n");
}

#[test]
fn lcd_moves_where_gets_land_and_lpwd_and_lls_show_it() {
    let server = TestServer::start();
    write_file(server.root(), "x.txt", b"x");
    write_file(server.client_dir(), "here/b.txt", b"bb");
    write_file(server.client_dir(), "here/a/inner", b"");
    let script = "lcd here\nget x.txt\nlpwd\nlls\nlls -l a/..\nlcd nosuch\n";
    let output = server.run_shell(script);
    assert_exit(&output, 1);
    assert_eq!(
        std::fs::read(server.client_dir().join("here/x.txt")).unwrap(),
        b"x",
        "{}",
        describe(&output)
    );
    let here = server.client_dir().join("here").canonicalize().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(here.to_str().unwrap()), "{stdout}");
    assert_eq!(
        lines.by_ref().take(3).collect::<Vec<_>>(),
        ["a/", "b.txt", "x.txt"]
    );
    let long: Vec<&str> = lines.collect();
    assert_eq!(long.len(), 3, "{stdout}");
    assert!(
        long[1].trim_start().starts_with("2 ") && long[1].ends_with("  b.txt"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("lcd nosuch:"),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_leading_tilde_in_a_local_path_is_the_home_directory() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    write_file(home.path(), "h1.txt", b"h1");
    write_file(home.path(), "h2.txt", b"h2");
    write_file(server.root(), "r.txt", b"r");
    let script =
        "put ~/h1.txt\nput ~/h2*.txt copy.txt\nget r.txt ~/got.txt\nput '~/h1.txt'\nlcd ~\nlpwd\n";
    let output = run_shell_at_home(&server, home.path(), script);
    // Only the quoted `~` fails: there is no directory `~` here.
    assert_exit(&output, 1);
    assert_eq!(
        server.root_files(),
        ["copy.txt", "h1.txt", "r.txt"],
        "{}",
        describe(&output)
    );
    assert_eq!(
        std::fs::read(server.root().join("copy.txt")).unwrap(),
        b"h2"
    );
    assert_eq!(std::fs::read(home.path().join("got.txt")).unwrap(), b"r");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim_end(),
        home.path().to_str().unwrap()
    );
}

#[test]
fn a_bang_runs_a_local_command_and_says_how_it_failed() {
    let server = TestServer::start();
    let output = server.run_shell("!echo hi\n! exit 3\n");
    assert_exit(&output, 1);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hi\n",
        "{}",
        describe(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("exit 3: exit status 3"),
        "{}",
        describe(&output)
    );
}

#[test]
fn on_a_terminal_the_prompt_shows_the_remote_directory() {
    let server = TestServer::start();
    write_file(server.root(), "pets/cat.jpg", b"c");
    let mut terminal = Terminal::open(&server);
    terminal.shown("ferry> ", 1);
    terminal.type_line("cd pets");
    terminal.shown("ferry:/pets> ", 1);
    terminal.type_line("cd ..");
    assert_eq!(terminal.quit_at_prompt(2), Some(0));
}

#[test]
fn history_is_kept_between_sessions_in_a_file_of_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    write_file(server.root(), "remembered.txt", b"r");

    let mut first = Terminal::open_with_home(&server, home.path());
    first.shown("ferry> ", 1);
    first.type_line("stat remembered.txt");
    first.shown("stat \"remembered.txt\" ok", 1);
    assert_eq!(first.quit_at_prompt(2), Some(0));

    let file = home.path().join(".local/state/ferry/history");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());

    let mut second = Terminal::open_with_home(&server, home.path());
    second.shown("ferry> ", 1);
    // Up, then Enter: the command of the first session again.
    second.type_keys("\x1b[A\r");
    second.shown("stat \"remembered.txt\" ok", 1);
    assert_eq!(second.quit_at_prompt(2), Some(0));
}

#[test]
fn tab_completes_a_command() {
    let server = TestServer::start();
    let mut terminal = Terminal::open(&server);
    terminal.shown("ferry> ", 1);
    // `lpw` alone is no command; completed, it prints where the shell is.
    terminal.type_keys("lpw\t\r");
    let here = server.client_dir().canonicalize().unwrap();
    terminal.shown(&format!("\n{}", here.display()), 1);
    assert_eq!(terminal.quit_at_prompt(2), Some(0));
}

#[test]
fn tab_completes_a_local_path() {
    let server = TestServer::start();
    write_file(server.client_dir(), "my report.txt", b"local");
    let mut terminal = Terminal::open(&server);
    terminal.shown("ferry> ", 1);
    terminal.type_keys("put my\t\r");
    terminal.shown("put \"my report.txt\" ok", 1);
    assert_eq!(server.root_files(), ["my report.txt"]);
    assert_eq!(terminal.quit_at_prompt(2), Some(0));
}

#[test]
fn tab_completes_a_remote_name_in_the_directory_being_typed() {
    let server = TestServer::start();
    write_file(server.root(), "my dir/inner file.txt", b"remote");
    let mut terminal = Terminal::open(&server);
    terminal.shown("ferry> ", 1);
    terminal.type_keys("get my\tin\t\r");
    terminal.shown("get \"my dir/inner file.txt\" -> \"inner file.txt\" ok", 1);
    assert_eq!(
        std::fs::read(server.client_dir().join("inner file.txt")).unwrap(),
        b"remote"
    );
    assert_eq!(terminal.quit_at_prompt(2), Some(0));
}

fn tab_lists_a_remote_directory_once_a_line(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("abc.txt", b"c");
    server.write_served("abd.txt", b"d");
    let mut terminal = Terminal::open(&server);
    terminal.shown("ferry> ", 1);
    // Four Tabs on the line: the common part, the list, and after `c`
    // the whole name; one listing for all.
    terminal.type_keys("stat a\t\t\tc\t\r");
    terminal.shown("stat \"abc.txt\" ok", 1);
    let reports = server.wait_for_reports(2);
    let listings = reports
        .iter()
        .filter(|report| {
            report.subject == ferry::report::Subject::Request(ferry::protocol::RequestKind::List)
        })
        .count();
    assert_eq!(listings, 1, "{reports:#?}");
    assert_eq!(terminal.quit_at_prompt(2), Some(0));
}

store_matrix!(
    mget_in_the_shell_expands_a_quoted_remote_glob,
    tab_lists_a_remote_directory_once_a_line,
);
