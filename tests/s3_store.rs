//! The S3 store as a whole: starting a server on a bucket, and what it
//! refuses. The requests themselves are tested on both stores, in the
//! files of their topics (`store_matrix!`).

mod common;

use common::s3::{environment, S3Server};
use common::{Backing, BinaryServer, RawClient, TestServer};
use ferry::protocol::{ErrorCode, Message, RequestKind};

/// `ferry server 0 --plain --store ADDRESS --s3-endpoint URL` with moto's
/// credentials, as a user would start it.
fn server_command(address: &str, endpoint: &str) -> std::process::Command {
    let mut command = common::ferry_command();
    command.args([
        "server",
        "0",
        "--bind",
        "127.0.0.1",
        "--plain",
        "--store",
        address,
        "--s3-endpoint",
        endpoint,
    ]);
    command.envs(environment());
    command
}

#[test]
fn the_start_line_names_the_bucket_and_prefix() {
    let Some(s3) = S3Server::shared() else { return };
    let bucket = s3.new_bucket();
    let address = format!("s3://{}/team/files", bucket.name());
    let server = BinaryServer::start_exactly(
        tempfile::tempdir().unwrap(),
        &[
            "server",
            "0",
            "--bind",
            "127.0.0.1",
            "--plain",
            "--store",
            &address,
            "--s3-endpoint",
            s3.endpoint(),
        ],
        |command| {
            command.envs(environment());
        },
    );
    let serving = format!(", serving {address};");
    assert!(
        server.start_line.contains(&serving),
        "{}",
        server.start_line
    );
}

#[test]
fn a_missing_bucket_is_refused_at_start() {
    let Some(s3) = S3Server::shared() else { return };
    let output = server_command("s3://no-such-bucket-here", s3.endpoint())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot serve s3://no-such-bucket-here")
            && stderr.contains("no such bucket"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "it said it was serving");
}

#[test]
fn a_store_that_does_not_answer_is_refused_at_start() {
    // Nothing listens on this port: a socket bound and closed just now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let output = server_command("s3://files", &endpoint).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve s3://files at {endpoint}")),
        "{stderr}"
    );
}

#[test]
fn a_bad_address_is_a_usage_error() {
    let output = common::ferry_command()
        .args(["server", "0", "--store", "s3://No_Such"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a bucket name"), "{stderr}");
}

#[test]
fn a_request_the_store_does_not_serve_is_not_offered_and_is_refused_if_sent() {
    if S3Server::shared().is_none() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    let (mut raw, welcome) = RawClient::hello(server.addr(), "");
    let Some(Message::Welcome { requests }) = welcome else {
        panic!("expected a welcome, got {welcome:?}");
    };
    assert!(requests.contains(&RequestKind::Stat), "{requests:?}");
    assert!(!requests.contains(&RequestKind::PutFrom), "{requests:?}");
    // A client that sends it anyway is told, and may go on.
    raw.send(&Message::PutFrom {
        name: "a.bin".into(),
        size: 10,
        modified: 0,
        restart: false,
    });
    match raw.recv() {
        Some(Message::Error {
            code: ErrorCode::UnsupportedRequest,
            ..
        }) => {}
        other => panic!("expected unsupported-request, got {other:?}"),
    }
    raw.send(&Message::Stat {
        name: String::new(),
    });
    assert!(
        matches!(raw.recv(), Some(Message::Info(_))),
        "the connection did not carry on"
    );
}

#[test]
fn the_config_file_can_name_the_store_and_a_root_flag_replaces_it() {
    let Some(s3) = S3Server::shared() else { return };
    let bucket = s3.new_bucket();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nport = 0\nbind = \"127.0.0.1\"\nplain = true\n\
             store = \"s3://{}/from-config\"\ns3-endpoint = \"{}\"\n",
            bucket.name(),
            s3.endpoint()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let server = BinaryServer::start_exactly(
        tempfile::tempdir().unwrap(),
        &["server", "--config", config],
        |command| {
            command.envs(environment());
        },
    );
    let serving = format!(", serving s3://{}/from-config;", bucket.name());
    assert!(
        server.start_line.contains(&serving),
        "{}",
        server.start_line
    );

    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_str().unwrap().to_owned();
    let server = BinaryServer::start_exactly(
        root,
        &["server", "--config", config, "--root", &root_path],
        |command| {
            command.envs(environment());
        },
    );
    assert!(
        server
            .start_line
            .contains(&format!(", serving {root_path};")),
        "{}",
        server.start_line
    );
}
