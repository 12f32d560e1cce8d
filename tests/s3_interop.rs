//! Objects are plain: what ferry puts in a bucket, another S3 tool reads
//! byte for byte, and what another tool wrote, ferry serves with a
//! verified digest. The other tool is rclone (Debian's package, which
//! `.ci/run` installs), talking to the same moto server.

mod common;

use std::path::Path;
use std::process::Command;

use common::s3::{skip_marker, S3Server};
use common::{assert_exit, pseudo_random_bytes, Backing, TestServer, S3_PREFIX};

/// `rclone` with a remote named `moto` for the test server, configured
/// by environment alone, so no user's rclone.conf is read or written.
fn rclone(server: &TestServer, args: &[&str]) -> Command {
    let bucket = server.bucket().expect("an S3-backed server");
    let mut command = Command::new("rclone");
    command
        .args(args)
        // rclone cannot take a CA bundle with its own HTTP transport, and
        // the test server is plain HTTP anyway.
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_MOTO_TYPE", "s3")
        .env("RCLONE_CONFIG_MOTO_PROVIDER", "Other")
        .env("RCLONE_CONFIG_MOTO_ENDPOINT", bucket.endpoint())
        .env("RCLONE_CONFIG_MOTO_ACCESS_KEY_ID", "ferry-test")
        .env("RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY", "ferry-test-secret")
        .env("RCLONE_CONFIG_MOTO_REGION", "us-east-1")
        .env("RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE", "true");
    command
}

/// The S3 server, if it and rclone can be had; else says why, and leaves
/// the marker `.ci/run` fails on.
fn ready() -> bool {
    if S3Server::shared().is_none() {
        return false;
    }
    if Command::new("rclone").arg("version").output().is_err() {
        let why = "rclone is not installed (Debian: apt-get install rclone)";
        eprintln!("skipped: {why}");
        let _ = std::fs::write(skip_marker(), format!("{why}\n"));
        return false;
    }
    true
}

/// The rclone path of the served name `name`.
fn remote_path(server: &TestServer, name: &str) -> String {
    let bucket = server.bucket().expect("an S3-backed server");
    format!("moto:{}/{S3_PREFIX}/{name}", bucket.name())
}

fn rclone_reads(server: &TestServer, name: &str, into: &Path) -> Vec<u8> {
    let output = rclone(server, &["copyto", &remote_path(server, name)])
        .arg(into)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rclone copyto: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(into).unwrap()
}

#[test]
fn files_ferry_puts_are_read_back_by_rclone_byte_identical() {
    if !ready() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    let scratch = tempfile::tempdir().unwrap();
    // One small object (a single PutObject) and one of three parts.
    for (name, size) in [("small.bin", 100_000), ("dir/large.bin", 130 << 20)] {
        let data = pseudo_random_bytes(size, 31);
        let local = server.client_dir().join(name.replace('/', "-"));
        std::fs::write(&local, &data).unwrap();
        assert_exit(
            &server.run_client(&["put", local.to_str().unwrap(), name]),
            0,
        );
        let read = rclone_reads(&server, name, &scratch.path().join("read"));
        assert!(read == data, "rclone read back different bytes of {name}");
    }
}

#[test]
fn a_file_rclone_wrote_is_served_with_a_verified_digest() {
    if !ready() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    let data = pseudo_random_bytes(3 << 20, 37);
    let source = server.client_dir().join("from-rclone.bin");
    std::fs::write(&source, &data).unwrap();
    let output = rclone(&server, &["copyto"])
        .arg(&source)
        .arg(remote_path(&server, "sub/foreign.bin"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rclone copyto: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_file(&source).unwrap();
    // The client checks the BLAKE3 digest the server sends after the body,
    // which the server computed while reading the object.
    assert_exit(&server.run_client(&["get", "sub/foreign.bin"]), 0);
    let got = std::fs::read(server.client_dir().join("foreign.bin")).unwrap();
    assert!(got == data, "ferry served different bytes");
    server.wait_for_reports(1);
    let stat = server.run_client(&["stat", "sub/foreign.bin"]);
    assert_exit(&stat, 0);
    let line = format!("blake3:   {}\n", blake3::hash(&data).to_hex());
    assert!(
        String::from_utf8_lossy(&stat.stdout).contains(&line),
        "the digest computed by the get was not kept: {}",
        String::from_utf8_lossy(&stat.stdout)
    );
}
