//! The S3 store as a whole: starting a server on a bucket, and what it
//! refuses. The requests themselves are tested on both stores, in the
//! files of their topics (`store_matrix!`).

mod common;

use common::s3::{environment, S3Server};
use common::{assert_exit, describe, pseudo_random_bytes, Backing, BinaryServer, TestServer};
use ferry::protocol::RemoteName;
use ferry::store::{Store, StoreSpec};
use ferry::transport::BodySource;

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

/// A test server on a bucket, or `None` (the test passes, having said
/// why) where no S3 server can be had.
fn s3_server() -> Option<TestServer> {
    S3Server::shared()?;
    Some(TestServer::start_in(Backing::S3))
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An object another S3 tool wrote carries no digest: the first get
/// hashes it as it sends, the client checks that digest, and the server
/// keeps it in a record naming the object's ETag, so `stat` shows it.
#[test]
fn an_object_another_tool_wrote_is_got_whole_and_its_digest_kept() {
    let Some(server) = s3_server() else { return };
    // Several of the transport's 256 KiB chunks, the last one short.
    let data = pseudo_random_bytes(3 * 1024 * 1024 + 17, 7);
    server.write_served("from-elsewhere.bin", &data);
    let before = server.run_client(&["stat", "from-elsewhere.bin"]);
    assert_exit(&before, 0);
    assert!(
        stdout_of(&before).contains("blake3:   not known"),
        "{}",
        describe(&before)
    );
    assert_exit(&server.run_client(&["get", "from-elsewhere.bin"]), 0);
    let got = std::fs::read(server.client_dir().join("from-elsewhere.bin")).unwrap();
    assert!(got == data, "the bytes got differ from the object's");
    // The digest is kept before the get is reported.
    server.wait_for_reports(2);
    let after = server.run_client(&["stat", "from-elsewhere.bin"]);
    assert_exit(&after, 0);
    let line = format!("blake3:   {}\n", blake3::hash(&data).to_hex());
    assert!(stdout_of(&after).contains(&line), "{}", describe(&after));
    let names = server.served_names();
    assert!(
        names
            .iter()
            .any(|name| name.starts_with(".ferry-tmp-state/digests/")),
        "{names:?}"
    );
    // Known now, it is sent ahead of the body, and still checked.
    assert_exit(
        &server.run_client(&["get", "from-elsewhere.bin", "again.bin"]),
        0,
    );
    let again = std::fs::read(server.client_dir().join("again.bin")).unwrap();
    assert!(again == data, "the second get differs");
}

/// A read goes on from an open GET while it can; where it must open
/// another (here, a read at another offset), the GET names the ETag the
/// object had when opened, so an object replaced meanwhile fails the read
/// rather than give the new object's bytes after the old one's. (Over the
/// wire the reopening cannot be timed, so the store is driven directly.)
#[test]
fn a_read_of_an_object_replaced_since_it_was_opened_fails_rather_than_mix() {
    let Some(s3) = S3Server::shared() else { return };
    let bucket = s3.new_bucket();
    let old = pseudo_random_bytes(2 * 1024 * 1024, 1);
    let new = pseudo_random_bytes(2 * 1024 * 1024, 2);
    bucket.write("files/object", &old);
    let store = Store::open(&StoreSpec::S3(bucket.spec("files"))).unwrap();
    let name = RemoteName::parse("object").unwrap();
    let file = store.open_read(&name).unwrap();
    assert!(BodySource::raw_fd(&file).is_none());
    let mut chunk = vec![0; 64 * 1024];
    assert_eq!(file.read_at(&mut chunk, 0).unwrap(), chunk.len());
    assert!(chunk[..] == old[..chunk.len()]);

    bucket.write("files/object", &new);
    let error = file.read_at(&mut chunk, 1024 * 1024).unwrap_err();
    assert!(
        error.to_string().contains("replaced while it was read"),
        "{error}"
    );
    // Opened again, it is the new object.
    let file = store.open_read(&name).unwrap();
    assert_eq!(file.read_at(&mut chunk, 1024 * 1024).unwrap(), chunk.len());
    assert!(chunk[..] == new[1024 * 1024..1024 * 1024 + chunk.len()]);
}
