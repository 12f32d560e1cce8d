//! The S3 store as a whole: starting a server on a bucket, and what it
//! refuses. The requests themselves are tested on both stores, in the
//! files of their topics (`store_matrix!`).

mod common;

use common::s3::{environment, S3Server};
use common::{
    assert_exit, describe, pseudo_random_bytes, write_file, Backing, BinaryServer, TestServer,
};

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

/// A put over one step (64 MiB) goes up as a multipart upload, a part a
/// step: 130 MiB is three parts, the last short. The object is the bytes
/// sent, and no upload is left open.
#[test]
fn a_put_of_several_steps_round_trips_and_leaves_no_upload_open() {
    if S3Server::shared().is_none() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    let data = pseudo_random_bytes(130 * 1024 * 1024, 17);
    write_file(server.client_dir(), "big.bin", &data);
    assert_exit(&server.run_client(&["put", "big.bin"]), 0);
    let stored = server.read_served("big.bin").unwrap();
    assert!(stored == data, "the object differs from what was sent");
    let bucket = server.bucket().unwrap();
    assert_eq!(bucket.open_uploads(), []);
    // The digest could not go in a multipart object's metadata; it is in
    // ferry's own records, which stat reads.
    let stat = server.run_client(&["stat", "big.bin"]);
    assert_exit(&stat, 0);
    let hex = blake3::hash(&data).to_hex().to_string();
    assert!(
        String::from_utf8_lossy(&stat.stdout).contains(&hex),
        "{}",
        describe(&stat)
    );
}

/// S3 has no rename: a file is copied and deleted, but a directory would
/// be every key beneath it copied one by one, neither atomic nor
/// bounded, so it is refused, and nothing changes.
#[test]
fn renaming_a_directory_is_refused_and_changes_nothing() {
    if S3Server::shared().is_none() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    server.write_served("d/x/y.txt", b"deep");
    let before = server.served_names();
    let output = server.run_client(&["rename", "d", "e"]);
    assert_exit(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed io-error")
            && stderr.contains("renaming a directory is not supported"),
        "{}",
        describe(&output)
    );
    assert_eq!(server.served_names(), before);
}
