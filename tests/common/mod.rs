//! Shared test helpers: an in-process server on port 0, the real binary,
//! a raw protocol client that bypasses ferry's own client code, and fake
//! servers that send what ferry's own server never would.

#![allow(dead_code)] // Each test crate uses a different subset of these helpers.

pub mod proxy;
pub mod s3;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry::client::{Client, Security, Trust};
use ferry::protocol::{decode, encode, Message, Preamble, RequestKind, Token, PREAMBLE_LEN};
use ferry::report::{Report, Reporter};
use ferry::server::{Config, Server};
use ferry::store::StoreSpec;
use s3::{S3Server, TestBucket};
use tempfile::TempDir;

/// How long a test waits for something that should happen promptly before
/// it fails; generous, because CI machines are shared.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Where a test server keeps its files: the tests of behaviour both
/// stores promise run on each ([`store_matrix!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A temporary directory.
    Local,
    /// A new bucket of the shared S3 test server, beneath a prefix.
    S3,
}

/// The key prefix an S3-backed test server serves beneath: not the
/// bucket's top, so the tests see that nothing is written outside it.
pub const S3_PREFIX: &str = "served";

/// Turns test functions taking a [`Backing`] into a test on each store,
/// `local::NAME` and `s3::NAME`. The S3 one says why and passes when no S3
/// server can be had (`.ci/run` fails on that).
#[macro_export]
macro_rules! store_matrix {
    ($($test:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $test() { super::$test($crate::common::Backing::Local) } )*
        }
        mod s3 {
            $(
                #[test]
                fn $test() {
                    if $crate::common::s3::S3Server::shared().is_some() {
                        super::$test($crate::common::Backing::S3)
                    }
                }
            )*
        }
    };
}

/// A server running in this process on 127.0.0.1 and a free port, serving
/// a fresh temporary directory or bucket; stopped when dropped.
pub struct TestServer {
    addr: SocketAddr,
    root: TempDir,
    bucket: Option<Arc<TestBucket>>,
    client_dir: TempDir,
    reports: Arc<(Mutex<Vec<Report>>, Condvar)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// Starts a server after `configure` adjusts its settings.
    pub fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_on_port(0, configure)
    }

    /// Starts a server on a given port of 127.0.0.1 (0 for any).
    pub fn start_on_port(port: u16, configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_serving(Backing::Local, port, configure)
    }

    /// Starts a server on `backing`; for S3, the shared S3 server must be
    /// up ([`store_matrix!`] checks).
    pub fn start_in(backing: Backing) -> TestServer {
        Self::start_serving(backing, 0, |_| {})
    }

    /// Starts a server on `backing` after `configure` adjusts its settings.
    pub fn start_in_with(backing: Backing, configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_serving(backing, 0, configure)
    }

    /// Starts a server on `bucket`, which another server may serve too,
    /// after `configure` adjusts its settings.
    pub fn start_on_bucket(
        bucket: Arc<TestBucket>,
        configure: impl FnOnce(&mut Config),
    ) -> TestServer {
        Self::start_on_store(Some(bucket), 0, configure)
    }

    fn start_serving(
        backing: Backing,
        port: u16,
        configure: impl FnOnce(&mut Config),
    ) -> TestServer {
        let bucket = match backing {
            Backing::Local => None,
            Backing::S3 => {
                let s3 = S3Server::shared().expect("the S3 test server is up");
                Some(Arc::new(s3.new_bucket()))
            }
        };
        Self::start_on_store(bucket, port, configure)
    }

    fn start_on_store(
        bucket: Option<Arc<TestBucket>>,
        port: u16,
        configure: impl FnOnce(&mut Config),
    ) -> TestServer {
        let root = tempfile::tempdir().unwrap();
        let client_dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(root.path());
        if let Some(bucket) = &bucket {
            config.store = StoreSpec::S3(bucket.spec(S3_PREFIX));
        }
        configure(&mut config);
        let reports: Arc<(Mutex<Vec<Report>>, Condvar)> = Arc::default();
        let sink = Arc::clone(&reports);
        let reporter: Reporter = Arc::new(move |report: &Report| {
            sink.0.lock().unwrap().push(report.clone());
            sink.1.notify_all();
        });
        let server = Server::open(config, reporter).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(server.run(listener, async {
                let _ = stop.await;
            }));
        });
        TestServer {
            addr,
            root,
            bucket,
            client_dir,
            reports,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The served directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The bucket served, if the server serves one.
    pub fn bucket(&self) -> Option<&Arc<TestBucket>> {
        self.bucket.as_ref()
    }

    /// The served file `name`'s bytes, read from the store directly;
    /// `None` if there is none.
    pub fn read_served(&self, name: &str) -> Option<Vec<u8>> {
        match &self.bucket {
            None => std::fs::read(self.root().join(name)).ok(),
            Some(bucket) => bucket.read(&format!("{S3_PREFIX}/{name}")),
        }
    }

    /// Writes the file `name` into the store directly, as another program
    /// would (with its parent directories, on a disk).
    pub fn write_served(&self, name: &str, bytes: &[u8]) {
        match &self.bucket {
            None => {
                let path = self.root().join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Some(bucket) => bucket.write(&format!("{S3_PREFIX}/{name}"), bytes),
        }
    }

    /// Everything in the store, relative to what is served and sorted:
    /// on a disk, every file and directory (temporary ones included); in a
    /// bucket, every key beneath the prefix (markers and ferry's own state
    /// included). A test that expects nothing left behind checks this.
    pub fn served_names(&self) -> Vec<String> {
        match &self.bucket {
            None => files_under(self.root()),
            Some(bucket) => {
                let keys = bucket.keys();
                let beneath = format!("{S3_PREFIX}/");
                for key in &keys {
                    assert!(key.starts_with(&beneath), "{key} is outside the prefix");
                }
                keys.iter()
                    .map(|key| key[beneath.len()..].to_owned())
                    .collect()
            }
        }
    }

    /// What the store holds as a disk shows it, relative and sorted: on
    /// a disk, every file and directory; in a bucket, each key beneath the
    /// prefix with the directories it lies in, a marker (`d/`) as its
    /// directory, and ferry's own state (`.ferry-tmp-state/`) left out.
    /// For tests of what a request leaves, the same on both stores.
    pub fn served_tree(&self) -> Vec<String> {
        if self.bucket.is_none() {
            return files_under(self.root());
        }
        let mut tree = std::collections::BTreeSet::new();
        for key in self.served_names() {
            if key.starts_with(".ferry-tmp-state/") {
                continue;
            }
            let key = key.trim_end_matches('/');
            for (at, _) in key.match_indices('/') {
                tree.insert(key[..at].to_owned());
            }
            tree.insert(key.to_owned());
        }
        tree.into_iter().collect()
    }

    /// Makes the directory `name` in the store directly, with its
    /// parents: on S3, its marker object.
    pub fn make_served_dir(&self, name: &str) {
        match &self.bucket {
            None => std::fs::create_dir_all(self.root().join(name)).unwrap(),
            Some(bucket) => bucket.write(&format!("{S3_PREFIX}/{name}/"), b""),
        }
    }

    /// The client's working directory.
    pub fn client_dir(&self) -> &Path {
        self.client_dir.path()
    }

    /// `ferry client 127.0.0.1 PORT <args>`, run in the client directory.
    /// Runs the client's shell with `script` piped to its standard input,
    /// a command a line, and waits for it to end.
    pub fn run_shell(&self, script: &str) -> Output {
        let mut child = self
            .client(&[])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn client(&self, args: &[&str]) -> Command {
        let mut command = client_at("127.0.0.1", self.port(), args);
        command.current_dir(self.client_dir());
        command
    }

    /// Runs the client and returns its output.
    pub fn run_client(&self, args: &[&str]) -> Output {
        self.client(args).output().unwrap()
    }

    /// Waits until the server has made at least `count` reports and returns
    /// them all. Reports follow the reply, so a client may finish first.
    pub fn wait_for_reports(&self, count: usize) -> Vec<Report> {
        let (lock, changed) = &*self.reports;
        let deadline = Instant::now() + PATIENCE;
        let mut reports = lock.lock().unwrap();
        while reports.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "expected {count} reports, got {:#?}",
                *reports
            );
            reports = changed.wait_timeout(reports, left).unwrap().0;
        }
        reports.clone()
    }

    /// The reports made so far.
    pub fn reports(&self) -> Vec<Report> {
        self.reports.0.lock().unwrap().clone()
    }

    /// Names in the served directory (recursively, relative, sorted),
    /// temporary files included.
    pub fn root_files(&self) -> Vec<String> {
        files_under(self.root())
    }

    /// Runs `test` with ferry's library client connected to this server
    /// over plain TCP. The server runs its own runtime, so the client gets
    /// one of its own.
    pub fn with_library_client(&self, test: impl AsyncFnOnce(&mut Client)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let security = Security {
                trust: Trust::Plain,
                token: Token::default(),
                on_first_use: |_, _| {},
            };
            let mut client = Client::connect("127.0.0.1", self.port(), PATIENCE, &security)
                .await
                .unwrap();
            test(&mut client).await;
        });
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every file and directory under `dir`, relative and sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            found.push(
                path.strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The real `ferry` binary, with a configuration directory of this test
/// process's own (identities, known hosts) and no token from the
/// environment of whoever runs the tests.
pub fn ferry_command() -> Command {
    static CONFIG_HOME: OnceLock<TempDir> = OnceLock::new();
    let config_home = CONFIG_HOME.get_or_init(|| tempfile::tempdir().unwrap());
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .env("XDG_CONFIG_HOME", config_home.path())
        .env_remove("FERRY_TOKEN");
    command
}

/// `ferry client HOST PORT --plain <args>`: most tests are about what
/// happens inside the connection, and test servers are plain unless a test
/// asks for TLS.
pub fn client_at(host: &str, port: u16, args: &[&str]) -> Command {
    let mut command = tls_client_at(host, port, &["--plain"]);
    command.args(args);
    command
}

/// `ferry client HOST PORT <args>`, over TLS unless `args` say otherwise.
pub fn tls_client_at(host: &str, port: u16, args: &[&str]) -> Command {
    let mut command = ferry_command();
    command.args(["client", host, &port.to_string()]).args(args);
    command
}

/// Describes a finished command for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the command exited with `code`, showing its output if not.
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", describe(output));
}

/// Asserts the command exited with `code` and said `needle` on stderr.
pub fn assert_exit_saying(output: &Output, code: i32, needle: &str) {
    assert_exit(output, code);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(needle),
        "expected {needle:?} on stderr\n{}",
        describe(output)
    );
}

/// Deterministic pseudo-random bytes (xorshift), so a failing test can be
/// rerun on the same data.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// A `ferry server` process on 127.0.0.1 and a port the OS picked.
pub struct BinaryServer {
    pub child: Child,
    pub port: u16,
    pub root: TempDir,
    pub start_line: String,
    stdout: BufReader<ChildStdout>,
}

impl BinaryServer {
    /// A plain server on 127.0.0.1 serving a fresh directory.
    pub fn start(extra_args: &[&str]) -> BinaryServer {
        Self::start_at("127.0.0.1", extra_args)
    }

    /// A server as a user starts it, TLS and all, with `extra_args`.
    pub fn start_tls(extra_args: &[&str]) -> BinaryServer {
        Self::start_tls_configured(extra_args, |_| {})
    }

    /// [`BinaryServer::start_tls`], its command adjusted by `configure`.
    pub fn start_tls_configured(
        extra_args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> BinaryServer {
        let root = tempfile::tempdir().unwrap();
        Self::launch(root, "127.0.0.1", extra_args, false, configure)
    }

    /// A server listening on `bind` instead of 127.0.0.1.
    pub fn start_on(bind: &str) -> BinaryServer {
        Self::start_at(bind, &[])
    }

    fn start_at(bind: &str, extra_args: &[&str]) -> BinaryServer {
        Self::start_serving(tempfile::tempdir().unwrap(), bind, extra_args)
    }

    /// A server on 127.0.0.1 serving `root`, which may hold files already.
    pub fn start_in(root: TempDir) -> BinaryServer {
        Self::start_serving(root, "127.0.0.1", &[])
    }

    /// A plain server on 127.0.0.1 serving `root`, with `extra_args`.
    pub fn start_in_with(root: TempDir, extra_args: &[&str]) -> BinaryServer {
        Self::start_serving(root, "127.0.0.1", extra_args)
    }

    /// Kills the server with SIGKILL, as a crash would, and gives back the
    /// directory it served, to serve it again.
    pub fn kill_keeping_root(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.root, tempfile::tempdir().unwrap())
    }

    /// The next report line that contains `needle`, passing over others.
    pub fn next_report_saying(&mut self, needle: &str) -> String {
        loop {
            let line = self.next_report();
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// A server on 127.0.0.1 serving `root`, its command adjusted by
    /// `configure` before it starts: resource limits, another user, where
    /// its stderr goes.
    pub fn start_configured(root: TempDir, configure: impl FnOnce(&mut Command)) -> BinaryServer {
        Self::start_serving_with(root, "127.0.0.1", &[], configure)
    }

    fn start_serving(root: TempDir, bind: &str, extra_args: &[&str]) -> BinaryServer {
        Self::start_serving_with(root, bind, extra_args, |_| {})
    }

    fn start_serving_with(
        root: TempDir,
        bind: &str,
        extra_args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> BinaryServer {
        Self::launch(root, bind, extra_args, true, configure)
    }

    fn launch(
        root: TempDir,
        bind: &str,
        extra_args: &[&str],
        plain: bool,
        configure: impl FnOnce(&mut Command),
    ) -> BinaryServer {
        let mut args = vec!["server", "0", "--bind", bind, "--root"];
        let root_path = root.path().to_str().unwrap().to_owned();
        args.push(&root_path);
        args.extend(plain.then_some("--plain"));
        args.extend(extra_args);
        Self::start_exactly(root, &args, configure)
    }

    /// `ferry <args>`, which starts a server, with nothing added: no port,
    /// address or root unless `args` give them (a config file may). `root`
    /// is the directory it is meant to serve, kept as long as the server.
    pub fn start_exactly(
        root: TempDir,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> BinaryServer {
        let mut command = ferry_command();
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut start_line = String::new();
        stdout.read_line(&mut start_line).unwrap();
        let port = port_from_start_line(&start_line);
        BinaryServer {
            child,
            port,
            root,
            start_line,
            stdout,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The next report line on the server's stdout.
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    /// The next report line on the server's stdout; fails, killing the
    /// server so the read ends, if none comes within [`PATIENCE`].
    pub fn next_report(&mut self) -> String {
        let pid = self.child.id().to_string();
        let (arrived, waiting) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if waiting.recv_timeout(PATIENCE).is_err() {
                // The child is not reaped before the server is dropped, so
                // its pid cannot have been reused.
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        });
        let line = self.next_line();
        let _ = arrived.send(());
        watchdog.join().unwrap();
        assert!(!line.is_empty(), "no report line within {PATIENCE:?}");
        line
    }

    /// Stops the server and returns what it wrote after the lines read so
    /// far: the rest of its stdout, and its stderr.
    pub fn stop_and_collect(mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (rest, stderr)
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop_with(&mut self, signal: &str) -> std::process::ExitStatus {
        self.signal(signal);
        wait_with_deadline(&mut self.child)
    }

    /// Sends `signal` without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port in a start line such as `... up and running on 127.0.0.1:4242, ...`,
/// or in the `address` of a JSON one (`--log-format json`).
pub fn port_from_start_line(line: &str) -> u16 {
    if line.starts_with('{') {
        let start: serde_json::Value = serde_json::from_str(line).unwrap();
        let address = start["address"].as_str().unwrap_or_default();
        return address
            .parse::<SocketAddr>()
            .unwrap_or_else(|_| panic!("no address in {line:?}"))
            .port();
    }
    assert!(
        line.contains("up and running"),
        "not a start line: {line:?}"
    );
    let addr = line
        .split_whitespace()
        .find_map(|word| word.trim_end_matches(',').parse::<SocketAddr>().ok());
    addr.unwrap_or_else(|| panic!("no address in {line:?}"))
        .port()
}

/// The fingerprint a TLS server's start line shows: `TLS, identity <64 hex>`.
pub fn fingerprint_in(start_line: &str) -> String {
    let (_, after) = start_line
        .split_once("TLS, identity ")
        .unwrap_or_else(|| panic!("no identity in the start line {start_line:?}"));
    let hex: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || ('a'..='f').contains(c))
        .collect();
    assert_eq!(hex.len(), 64, "not 64 lowercase hex digits: {start_line:?}");
    hex
}

/// A TLS client that trusts exactly `server`'s identity, so that tests
/// share no known-hosts file.
pub fn pinned(server: &BinaryServer, args: &[&str]) -> Command {
    let fingerprint = fingerprint_in(&server.start_line);
    let mut command = tls_client_at("127.0.0.1", server.port, &["--fingerprint", &fingerprint]);
    command.args(args);
    command
}

/// Waits for `child` to exit, killing it and failing after [`PATIENCE`].
pub fn wait_with_deadline(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {PATIENCE:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` has a file open beneath `dir`, named or not.
pub fn has_file_open_under(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| target.starts_with(dir))
}

/// Polls `condition` until it holds, failing after [`PATIENCE`].
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A second loopback address, for clients that must not share the test's
/// usual address, 127.0.0.1: a flood, or an address under a penalty. All
/// of 127.0.0.0/8 reaches the loopback interface.
pub const FLOOD_ADDRESS: [u8; 4] = [127, 0, 0, 2];

/// A TCP connection to `server` from the local address `source`; std's
/// `TcpStream::connect` cannot choose one.
pub fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let socket = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&socket, &SocketAddr::from((source, 0))).unwrap();
    connect(&socket, &server).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// A client that speaks the protocol through raw, blocking socket calls, so
/// tests can send what ferry's own client never would.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects without sending anything.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects from the local address `source` without sending anything.
    pub fn connect_from(source: [u8; 4], addr: SocketAddr) -> RawClient {
        RawClient {
            stream: connect_from(source, addr),
            buf: Vec::new(),
        }
    }

    /// Connects and makes the handshake, presenting no token.
    pub fn handshake(addr: SocketAddr) -> RawClient {
        Self::handshake_with(addr, "")
    }

    /// Connects and makes the handshake, presenting `token`.
    pub fn handshake_with(addr: SocketAddr, token: &str) -> RawClient {
        let (client, answer) = RawClient::hello(addr, token);
        assert!(
            matches!(answer, Some(Message::Welcome { .. })),
            "the hello was not welcome: {answer:?}"
        );
        client
    }

    /// Connects, sends the preamble and a `Hello` with `token`, checks the
    /// server's preamble, and returns the server's answer to the `Hello`.
    pub fn hello(addr: SocketAddr, token: &str) -> (RawClient, Option<Message>) {
        let mut client = RawClient::connect(addr);
        client.send_raw(&Preamble::OURS.to_bytes());
        client.send(&Message::Hello {
            token: Token::new(token.to_owned()),
        });
        let mut theirs = [0; PREAMBLE_LEN];
        client.read_exact(&mut theirs);
        assert_eq!(Preamble::from_bytes(&theirs), Ok(Preamble::OURS));
        let answer = client.recv();
        (client, answer)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, message: &Message) {
        let mut bytes = Vec::new();
        encode(message, &mut bytes).unwrap();
        self.send_raw(&bytes);
    }

    pub fn read_exact(&mut self, out: &mut [u8]) {
        let buffered = out.len().min(self.buf.len());
        out[..buffered].copy_from_slice(&self.buf[..buffered]);
        self.buf.drain(..buffered);
        self.stream.read_exact(&mut out[buffered..]).unwrap();
    }

    /// The next message, or `None` if the server closed the connection.
    pub fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some((message, used)) = decode(&self.buf).unwrap() {
                self.buf.drain(..used);
                return Some(message);
            }
            let mut chunk = [0; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                // A signal landed during the read (read(2) is not restarted
                // for every handler); nothing was read, so read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
    }

    /// Whether the server has closed the connection (reads until EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// A full put: request, body, trailer; returns the final reply.
    pub fn put(&mut self, name: &str, data: &[u8]) -> Message {
        self.send(&Message::Put {
            name: name.into(),
            size: data.len() as u64,
        });
        match self.recv().unwrap() {
            Message::Proceed => {}
            refusal => return refusal,
        }
        self.send_raw(data);
        self.send(&Message::Trailer {
            digest: *blake3::hash(data).as_bytes(),
        });
        self.recv().unwrap()
    }

    /// A full get; returns the body, or the refusal.
    pub fn get(&mut self, name: &str) -> Result<Vec<u8>, Message> {
        self.send(&Message::Get { name: name.into() });
        let size = match self.recv().unwrap() {
            Message::Body { size } => size,
            refusal => return Err(refusal),
        };
        let mut body = vec![0; size as usize];
        self.read_exact(&mut body);
        let Some(Message::Trailer { digest }) = self.recv() else {
            panic!("no trailer after the body");
        };
        assert_eq!(digest, *blake3::hash(&body).as_bytes());
        Ok(body)
    }
}

/// Writes `data` to `dir/name`, creating parent directories.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, data).unwrap();
    path
}

/// A one-connection fake server on 127.0.0.1: reads the client's preamble
/// and then plays `script` with whatever the client sent so far. Returns
/// its port.
pub fn fake_server(script: impl FnOnce(&mut TcpStream) + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut preamble = [0; PREAMBLE_LEN];
        let _ = stream.read_exact(&mut preamble);
        script(&mut stream);
    });
    port
}

/// The bytes of one frame holding `message`.
pub fn frame(message: &Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode(message, &mut bytes).unwrap();
    bytes
}

/// A fake server that makes the handshake, welcoming any client, then
/// plays `script`.
pub fn fake_ferry_server(script: impl FnOnce(&mut TcpStream) + Send + 'static) -> u16 {
    fake_server(move |stream| {
        let _hello = read_frame(stream);
        let mut welcome = Preamble::OURS.to_bytes().to_vec();
        welcome.extend(frame(&welcome_message()));
        let _ = stream.write_all(&welcome);
        script(stream);
    })
}

/// What a fake server answers a hello: every request but the resumable
/// ones, which no fake server speaks. A client then puts and gets with
/// Put and Get, as it does with a server that cannot resume.
pub fn welcome_message() -> Message {
    let resumable = [RequestKind::PutFrom, RequestKind::GetFrom];
    Message::Welcome {
        requests: RequestKind::ALL
            .iter()
            .copied()
            .filter(|kind| !resumable.contains(kind))
            .collect(),
    }
}

/// Reads one whole frame, whatever it holds.
pub fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut length = [0; 4];
    let _ = stream.read_exact(&mut length);
    let mut rest = vec![0; u32::from_be_bytes(length) as usize];
    let _ = stream.read_exact(&mut rest);
    rest
}

/// A fake server that answers a request with `reply`, then waits for the
/// client to hang up.
pub fn fake_download_server(reply: Vec<u8>) -> u16 {
    fake_ferry_server(move |stream| {
        let _request = read_frame(stream);
        let _ = stream.write_all(&reply);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    })
}

/// Runs `command` to its end and returns its output and how long it took;
/// fails, killing it, if it is still running after `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!("still running after {limit:?}, killed; its stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (output, elapsed)
}

/// Runs `ferry server` on a free port with `args`, expecting it to refuse
/// to start; returns its output.
pub fn server_refusing_to_start(args: &[&str], configure: impl FnOnce(&mut Command)) -> Output {
    let root = tempfile::tempdir().unwrap();
    let mut command = ferry_command();
    command
        .args(["server", "0", "--bind", "127.0.0.1", "--root"])
        .arg(root.path())
        .args(args);
    configure(&mut command);
    let (output, _) = output_within(&mut command, PATIENCE);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("up and running"),
        "{}",
        describe(&output)
    );
    output
}

/// How far the partial's record at `path` vouches for it (PROTOCOL.md
/// §5.13), if there is a whole, undamaged record there.
pub fn recorded_prefix(path: &Path) -> Option<u64> {
    ferry::partial::Record::decode(&std::fs::read(path).ok()?).map(|record| record.prefix.len)
}

/// Waits until the partial's record at `path` vouches for a step or more:
/// a partial cut off before its first step is not kept.
pub fn wait_for_a_step(path: &Path) {
    eventually("the receiver vouched for a step", || {
        recorded_prefix(path).is_some_and(|len| len >= ferry::protocol::STEP)
    });
}

/// A way through a [`Relay`]: up is client to server, down server to client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    Up,
    Down,
}

/// What a [`Relay`] does to a connection once `n` bytes of a body went
/// one way.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// Nothing: it passes everything on.
    Never,
    /// Closes both ways of the connection, as a lost link does.
    After(Way, u64),
    /// Passes nothing more that way, holding the connection open, until
    /// [`Relay::sever`] or the relay is dropped.
    Hold(Way, u64),
}

/// Where a [`Relay`] takes a body to begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// ferry's protocol over plain TCP: after the preamble, the frames up
    /// to the first that a file's body follows (Put or PutFrom up, Body or
    /// Sending down); whatever comes after it is the body, and its
    /// trailer. For connections of one transfer.
    Plain,
    /// Bytes it cannot read (TLS): all of them count, from the first.
    Opaque,
}

/// A TCP relay on 127.0.0.1 to a server, for tests that count the bytes
/// a transfer moves, or cut it off part way, at an exact byte of its body.
/// Every connection it accepts is relayed, each cut alike; the counts are
/// of all of them. Dropped, it severs its connections.
pub struct Relay {
    port: u16,
    state: Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    /// Body bytes passed on up and down.
    counted: [std::sync::atomic::AtomicU64; 2],
    /// Set once a connection was cut or held.
    cut: std::sync::atomic::AtomicBool,
    /// Set to sever every connection.
    severed: std::sync::atomic::AtomicBool,
    /// Both sockets of every connection, to sever them; a connection cut
    /// off is dropped from here, so that its sockets close once its pumps
    /// end, and a peer still sending meets a reset, not a full window.
    sockets: Mutex<Vec<Option<[TcpStream; 2]>>>,
}

impl Relay {
    /// A relay to `server` that does `cut` to each connection.
    pub fn start(server: SocketAddr, framing: Framing, cut: Cut) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(RelayState::default());
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if shared.severed.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(upstream) = TcpStream::connect(server) else {
                    return;
                };
                let connection = {
                    let mut sockets = shared.sockets.lock().unwrap();
                    sockets.push(Some([
                        client.try_clone().unwrap(),
                        upstream.try_clone().unwrap(),
                    ]));
                    sockets.len() - 1
                };
                for (way, from, to) in [
                    (
                        Way::Up,
                        client.try_clone().unwrap(),
                        upstream.try_clone().unwrap(),
                    ),
                    (
                        Way::Down,
                        upstream.try_clone().unwrap(),
                        client.try_clone().unwrap(),
                    ),
                ] {
                    let state = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        pump(way, from, to, framing, cut, &state);
                        if state.cut.load(std::sync::atomic::Ordering::SeqCst) {
                            state.sockets.lock().unwrap()[connection] = None;
                        }
                    });
                }
            }
        });
        Relay { port, state }
    }

    /// A relay that only counts.
    pub fn counting(server: SocketAddr, framing: Framing) -> Relay {
        Relay::start(server, framing, Cut::Never)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Body bytes passed on `way` so far (all bytes with
    /// [`Framing::Opaque`]).
    pub fn counted(&self, way: Way) -> u64 {
        self.state.counted[way as usize].load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until a connection has been cut off or held.
    pub fn wait_for_cut(&self) {
        eventually("the relay cut the connection", || {
            self.state.cut.load(std::sync::atomic::Ordering::SeqCst)
        });
    }

    /// Closes both ways of every connection, held or not.
    pub fn sever(&self) {
        self.state
            .severed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for socket in self
            .state
            .sockets
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .flatten()
        {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        // Wakes the accept loop, which then ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.sever();
    }
}

/// Where a way of a relayed connection is: before its body, or in it.
enum Phase {
    /// Bytes of the preamble still to come.
    Preamble(usize),
    /// The first bytes of a frame so far: its length and tag.
    Head(Vec<u8>),
    /// Bytes of a frame still to come, and whether the body follows it.
    Rest(u64, bool),
    Body,
}

impl Phase {
    /// Passes over `bytes` going `way`, returning how many of them come
    /// before the body.
    fn before_body(&mut self, way: Way, bytes: &[u8]) -> usize {
        // The tags of the frames a body follows: Put, PutFrom; Body,
        // Sending.
        let body_next: &[u8] = match way {
            Way::Up => &[0x01, 0x0d],
            Way::Down => &[0x21, 0x2c],
        };
        let mut used = 0;
        while used < bytes.len() {
            let left = &bytes[used..];
            match self {
                Phase::Body => return used,
                Phase::Preamble(want) => {
                    let n = (*want).min(left.len());
                    used += n;
                    *want -= n;
                    if *want == 0 {
                        *self = Phase::Head(Vec::new());
                    }
                }
                Phase::Head(head) => {
                    let n = (5 - head.len()).min(left.len());
                    head.extend_from_slice(&left[..n]);
                    used += n;
                    if head.len() == 5 {
                        let len = u32::from_be_bytes(head[..4].try_into().unwrap());
                        // A frame holds its tag at least; one that does
                        // not is no frame, and all from there counts.
                        *self = match u64::from(len).checked_sub(1) {
                            Some(rest) => Phase::Rest(rest, body_next.contains(&head[4])),
                            None => Phase::Body,
                        };
                    }
                }
                Phase::Rest(want, body_next) => {
                    let n = (*want).min(left.len() as u64);
                    used += n as usize;
                    *want -= n;
                    if *want == 0 {
                        *self = if *body_next {
                            Phase::Body
                        } else {
                            Phase::Head(Vec::new())
                        };
                    }
                }
            }
        }
        if let Phase::Rest(0, true) = self {
            *self = Phase::Body;
        }
        used
    }
}

/// Passes bytes on `way` from `from` to `to`, counting the body's and
/// doing `cut`.
fn pump(
    way: Way,
    mut from: TcpStream,
    mut to: TcpStream,
    framing: Framing,
    cut: Cut,
    state: &RelayState,
) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut phase = match framing {
        Framing::Plain => Phase::Preamble(PREAMBLE_LEN),
        Framing::Opaque => Phase::Body,
    };
    let (limit, hold) = match cut {
        Cut::After(at, n) if at == way => (Some(n), false),
        Cut::Hold(at, n) if at == way => (Some(n), true),
        _ => (None, false),
    };
    let mut passed = 0u64;
    let mut buf = vec![0; 256 * 1024];
    loop {
        // A cut at byte 0 comes as soon as the body begins.
        let due = matches!(phase, Phase::Body) && limit.is_some_and(|n| passed >= n);
        if due {
            state.cut.store(true, SeqCst);
            if hold {
                while !state.severed.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let head = phase.before_body(way, &buf[..n]);
        let body = (n - head) as u64;
        let allowed = limit.map_or(body, |limit| body.min(limit - passed));
        if to.write_all(&buf[..head + allowed as usize]).is_err() {
            let _ = from.shutdown(std::net::Shutdown::Both);
            return;
        }
        passed += allowed;
        state.counted[way as usize].fetch_add(allowed, SeqCst);
    }
}

/// Two tokens with the right to read and write, for tests of what one
/// token may see of another's.
pub const ALICE: &str = "alice-token-6f1d93b2c8e04a75";
pub const BOB: &str = "bob-token-0c2e8d4a9b7f1e36";

/// A token file granting [`ALICE`] and [`BOB`] `rw`, private as a server
/// requires; the directory holding it goes when the first is dropped.
pub fn alice_and_bob_token_file() -> (TempDir, PathBuf) {
    let keys = tempfile::tempdir().unwrap();
    let tokens = write_file(
        keys.path(),
        "tokens",
        format!("{ALICE} rw\n{BOB} rw\n").as_bytes(),
    );
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (keys, tokens)
}
