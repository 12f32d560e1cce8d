//! An S3 store that goes away: the S3 service stopped mid-upload and
//! mid-download (clean errors, nothing visible, the next request works
//! once it is back), and a server killed mid-upload, whose open multipart
//! upload the next server aborts once it is older than the time to live.
//! The service "stops" at a proxy in front of the shared moto server, so
//! what moto holds survives it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::proxy::Proxy;
use common::s3::{start_binary_server, S3Server};
use common::{
    assert_exit, eventually, pseudo_random_bytes, wait_with_deadline, TestServer, S3_PREFIX,
};
use ferry::store::StoreSpec;

/// A server on a new bucket that reaches S3 only through `proxy`.
fn server_behind(proxy: &Proxy) -> TestServer {
    let s3 = S3Server::shared().expect("checked by the caller");
    let url = proxy.url();
    TestServer::start_on_bucket(Arc::new(s3.new_bucket()), |config| {
        if let StoreSpec::S3(spec) = &mut config.store {
            spec.endpoint = Some(url);
        }
    })
}

fn moto_address() -> std::net::SocketAddr {
    let s3 = S3Server::shared().expect("checked by the caller");
    let host_port = s3.endpoint().trim_start_matches("http://");
    host_port.parse().unwrap()
}

#[test]
fn the_store_stopping_mid_download_fails_the_get_cleanly_and_the_next_get_works() {
    if S3Server::shared().is_none() {
        return;
    }
    let proxy = Proxy::start(moto_address());
    let server = server_behind(&proxy);
    let data = pseudo_random_bytes(48 << 20, 22);
    server.write_served("big.bin", &data);
    // Slowed down, so that the store can stop while the body is under way.
    let mut get = server
        .client(&["--limit-rate", "10M", "get", "big.bin"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let partial = server.client_dir().join(".big.bin.ferry-partial");
    eventually("the download's first bytes", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 4 << 20)
    });
    proxy.take_down();
    let status = wait_with_deadline(&mut get);
    let mut said = String::new();
    std::io::Read::read_to_string(&mut get.stderr.take().unwrap(), &mut said).unwrap();
    // Once the body has begun, a server that cannot read on closes the
    // connection without a trailer (PROTOCOL.md §5.2): the client says so,
    // keeping its partial for the next try, and the server's report says
    // why.
    assert_eq!(status.code(), Some(3), "{said}");
    assert!(said.contains("connection-lost"), "{said}");
    let reports = server.wait_for_reports(1);
    let report = format!("{:?}", reports[0]);
    assert!(
        report.contains("S3"),
        "the report does not name the store: {report}"
    );
    assert!(
        !server.client_dir().join("big.bin").exists(),
        "a cut-off download took its name"
    );
    proxy.bring_back();
    let again = server.run_client(&["get", "big.bin"]);
    assert_exit(&again, 0);
    let got = std::fs::read(server.client_dir().join("big.bin")).unwrap();
    assert!(got == data, "the second get brought different bytes");
}

#[test]
fn the_store_stopping_mid_upload_fails_the_put_cleanly_shows_nothing_and_the_next_put_works() {
    if S3Server::shared().is_none() {
        return;
    }
    let proxy = Proxy::start(moto_address());
    let server = server_behind(&proxy);
    let bucket = Arc::clone(server.bucket().unwrap());
    // More than one 64 MiB part, so the upload is a multipart one.
    let data = pseudo_random_bytes(80 << 20, 22);
    let local = server.client_dir().join("upload.bin");
    std::fs::write(&local, &data).unwrap();
    let mut put = server
        .client(&["--limit-rate", "30M", "put", "upload.bin"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first part is on its way once the multipart upload exists.
    eventually("the multipart upload's start", || {
        !bucket.open_uploads().is_empty()
    });
    proxy.take_down();
    let status = wait_with_deadline(&mut put);
    assert_eq!(status.code(), Some(1), "the put did not fail as a request");
    let key = format!("{S3_PREFIX}/upload.bin");
    assert_eq!(bucket.read(&key), None, "a cut-off upload is visible");
    proxy.bring_back();
    let again = server.run_client(&["put", "upload.bin"]);
    assert_exit(&again, 0);
    assert!(
        bucket.read(&key).is_some_and(|stored| stored == data),
        "the second put did not store the file"
    );
}

#[test]
fn an_upload_a_killed_server_left_open_is_aborted_once_older_than_the_time_to_live() {
    let Some(s3) = S3Server::shared() else { return };
    let bucket = Arc::new(s3.new_bucket());
    let mut first = start_binary_server(
        &format!("s3://{}/{S3_PREFIX}", bucket.name()),
        bucket.endpoint(),
    );
    let client_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        client_dir.path().join("big.bin"),
        pseudo_random_bytes(100 << 20, 23),
    )
    .unwrap();
    let mut put = common::client_at(
        "127.0.0.1",
        first.port,
        &["--limit-rate", "30M", "put", "big.bin"],
    )
    .current_dir(client_dir.path())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    eventually("the multipart upload's start", || {
        !bucket.open_uploads().is_empty()
    });
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let _ = wait_with_deadline(&mut put);
    assert_eq!(
        bucket.open_uploads().len(),
        1,
        "the killed server's upload is not open"
    );

    // Within the time to live (24 hours by default), a new server keeps it.
    let keeping = TestServer::start_on_bucket(Arc::clone(&bucket), |_| {});
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        bucket.open_uploads().len(),
        1,
        "a fresh upload was aborted: {:?}",
        keeping.reports()
    );
    drop(keeping);

    // Past it, the next server's first sweep aborts it, and says so.
    std::thread::sleep(Duration::from_secs(2));
    let sweeping = TestServer::start_on_bucket(Arc::clone(&bucket), |config| {
        config.partial_ttl = Duration::from_secs(1);
    });
    eventually("the expired upload's abort", || {
        bucket.open_uploads().is_empty()
    });
    let reports = sweeping.wait_for_reports(1);
    assert!(
        format!("{reports:?}").contains("partial uploads older than"),
        "{reports:?}"
    );
    assert!(
        bucket.keys().iter().all(|key| !key.contains("big.bin")),
        "{:?}",
        bucket.keys()
    );
}
