//! A real S3 server for the tests: moto, in server mode behind the
//! serialising wrapper `tests/s3/locked_moto.py`, on 127.0.0.1 and a free
//! port, one per test binary. Its Python environment is made under
//! `target/` the first time, so a fresh clone's `cargo test` runs the S3
//! tests too. Only when that install fails (no package registry) do they
//! skip: each says why, and a marker file lets `.ci/run` fail on it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use ferry::store::s3::{Credentials, S3Spec};

/// The moto release the wrapper was written and checked against.
const MOTO: &str = "moto[server]==5.2.5";

/// A running S3 server.
pub struct S3Server {
    endpoint: String,
    _child: Child,
}

/// The shared server, or why there is none.
static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();

impl S3Server {
    /// The server shared by this test binary, started on first use; `None`
    /// (after saying why, and leaving the marker) when it cannot be had.
    pub fn shared() -> Option<&'static S3Server> {
        match SERVER.get_or_init(|| start(&[], &[])) {
            Ok(server) => Some(server),
            Err(why) => {
                eprintln!("skipped: {why}");
                let _ = std::fs::write(skip_marker(), format!("{why}\n"));
                None
            }
        }
    }

    /// A server of this test's own, which logs every create request to
    /// `log` (`METHOD PATH IF-NONE-MATCH`, `-` when absent; see
    /// `tests/s3/locked_moto.py`); `None` as for [`S3Server::shared`]. It
    /// lives as long as the test binary.
    pub fn logging_creates(log: &Path) -> Option<&'static S3Server> {
        Self::private(start(&[log.as_os_str()], &[]))
    }

    /// A server of its own that loses the answer to each multipart
    /// upload's first completion, and answers the retry 412 (see
    /// `tests/s3/locked_moto.py`); `None` as for [`S3Server::shared`].
    pub fn losing_completions() -> Option<&'static S3Server> {
        Self::private(start(&[], &[("FERRY_TEST_LOSE_COMPLETIONS", "1")]))
    }

    fn private(started: Result<S3Server, String>) -> Option<&'static S3Server> {
        match started {
            Ok(server) => Some(Box::leak(Box::new(server))),
            Err(why) => {
                eprintln!("skipped: {why}");
                let _ = std::fs::write(skip_marker(), format!("{why}\n"));
                None
            }
        }
    }

    /// The service's URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A new empty bucket, its name unique to this test.
    pub fn new_bucket(&'static self) -> TestBucket {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ferry-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let bucket = TestBucket {
            server: self,
            name,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let client = bucket.client();
        bucket
            .runtime
            .block_on(client.create_bucket().bucket(&bucket.name).send())
            .unwrap();
        bucket
    }
}

/// Credentials moto accepts; any would do.
pub fn credentials() -> Credentials {
    Credentials {
        access_key_id: "ferry-test".to_owned(),
        secret_access_key: "ferry-test-secret".to_owned(),
    }
}

/// The environment a `ferry server --store` process needs to reach moto.
pub fn environment() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", "ferry-test"),
        ("AWS_SECRET_ACCESS_KEY", "ferry-test-secret"),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// `ferry server 0 --bind 127.0.0.1 --plain --store ADDRESS --s3-endpoint
/// URL`, as a user would start it, with moto's credentials.
pub fn server_command(address: &str, endpoint: &str) -> Command {
    let mut command = super::ferry_command();
    command.args(server_args(address, endpoint));
    command.envs(environment());
    command
}

/// [`server_command`]'s server, started; its start line read.
pub fn start_binary_server(address: &str, endpoint: &str) -> super::BinaryServer {
    super::BinaryServer::start_exactly(
        tempfile::tempdir().unwrap(),
        &server_args(address, endpoint),
        |command| {
            command.envs(environment());
        },
    )
}

fn server_args<'a>(address: &'a str, endpoint: &'a str) -> [&'a str; 9] {
    [
        "server",
        "0",
        "--bind",
        "127.0.0.1",
        "--plain",
        "--store",
        address,
        "--s3-endpoint",
        endpoint,
    ]
}

/// A bucket of the test server, seen directly rather than through ferry.
pub struct TestBucket {
    server: &'static S3Server,
    name: String,
    runtime: tokio::runtime::Runtime,
}

impl TestBucket {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn endpoint(&self) -> &str {
        self.server.endpoint()
    }

    /// What a ferry server needs to serve this bucket, beneath `prefix`.
    pub fn spec(&self, prefix: &str) -> S3Spec {
        let address = match prefix {
            "" => format!("s3://{}", self.name),
            prefix => format!("s3://{}/{prefix}", self.name),
        };
        S3Spec {
            endpoint: Some(self.server.endpoint.clone()),
            region: Some("us-east-1".to_owned()),
            credentials: Some(credentials()),
            ..S3Spec::parse(&address).unwrap()
        }
    }

    /// An SDK client for the test server.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let keys = credentials();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::Ring))
                    .build_https(),
            )
            .endpoint_url(&self.server.endpoint)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                keys.access_key_id,
                keys.secret_access_key,
                None,
                None,
                "tests",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Runs an SDK call to completion.
    pub fn block_on<F: std::future::Future>(&self, call: F) -> F::Output {
        self.runtime.block_on(call)
    }

    /// The object `key`'s bytes, or `None` if there is no such key.
    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        let client = self.client();
        let got = self.block_on(client.get_object().bucket(&self.name).key(key).send());
        match got {
            Ok(object) => Some(
                self.block_on(object.body.collect())
                    .unwrap()
                    .into_bytes()
                    .to_vec(),
            ),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => None,
            Err(e) => panic!("reading {key}: {e:?}"),
        }
    }

    /// Writes the object `key` as another S3 tool would: no metadata.
    pub fn write(&self, key: &str, bytes: &[u8]) {
        let client = self.client();
        self.block_on(
            client
                .put_object()
                .bucket(&self.name)
                .key(key)
                .body(ByteStream::from(bytes.to_vec()))
                .send(),
        )
        .unwrap();
    }

    /// Every key in the bucket, sorted.
    pub fn keys(&self) -> Vec<String> {
        let client = self.client();
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(&self.name)
            .into_paginator()
            .send();
        while let Some(page) = self.block_on(pages.next()) {
            let page = page.unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        keys
    }

    /// The multipart uploads open in the bucket, as `(key, upload id)`.
    pub fn open_uploads(&self) -> Vec<(String, String)> {
        let client = self.client();
        let listed = self
            .block_on(client.list_multipart_uploads().bucket(&self.name).send())
            .unwrap();
        listed
            .uploads()
            .iter()
            .map(|u| {
                let key = u.key().unwrap_or_default().to_owned();
                (key, u.upload_id().unwrap_or_default().to_owned())
            })
            .collect()
    }
}

/// Where a skipped S3 test leaves its reason, for `.ci/run` to find.
pub fn skip_marker() -> PathBuf {
    target_dir().join("s3-tests-skipped")
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// Installs moto if needed, and starts it, with `extra` arguments.
fn start(extra: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Result<S3Server, String> {
    let python = install()?;
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/locked_moto.py");
    let mut child = Command::new(python)
        .args([wrapper.as_os_str(), "127.0.0.1".as_ref(), "0".as_ref()])
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start moto: {e}"))?;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let endpoint = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            return Err(format!("moto ended before serving: {}", said.join("\n")));
        };
        if let Some(at) = line.find("Running on http://") {
            break line[at + "Running on ".len()..].trim().to_owned();
        }
        said.push(line);
    };
    // Read on, so that moto never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(S3Server {
        endpoint,
        _child: child,
    })
}

/// The virtual environment's Python with moto installed, made the first
/// time under `target/`; a lock keeps two test binaries from making it at
/// once.
fn install() -> Result<PathBuf, String> {
    let venv = target_dir().join("s3-venv");
    let python = venv.join("bin/python");
    std::fs::create_dir_all(target_dir()).map_err(|e| e.to_string())?;
    let lock =
        std::fs::File::create(target_dir().join("s3-venv.lock")).map_err(|e| e.to_string())?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| e.to_string())?;
    if python.exists() {
        return Ok(python);
    }
    let making = target_dir().join("s3-venv.making");
    let _ = std::fs::remove_dir_all(&making);
    let run = |command: &mut Command, what: &str| -> Result<(), String> {
        let output = command
            .output()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(format!(
            "cannot install moto for the S3 tests ({what} failed; is PyPI reachable?): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&making),
        "python3 -m venv",
    )?;
    run(
        Command::new(making.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            MOTO,
        ]),
        "pip install",
    )?;
    // Moved into place only once whole; the venv's scripts name their
    // interpreter by path, so it is run as `bin/python -m` from here on.
    std::fs::rename(&making, &venv).map_err(|e| e.to_string())?;
    Ok(python)
}
