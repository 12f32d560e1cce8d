//! The server's report stream: a reader that stops costs lost report
//! lines, counted and said, and never a stalled server (issue 12, item 7).

mod common;

use std::fs::File;
use std::time::{Duration, Instant};

use common::*;
use ferry::protocol::Message;

/// One `list` of the (empty) served directory on `client`, and how long it
/// took.
fn timed_list(client: &mut RawClient) -> Duration {
    let started = Instant::now();
    client.send(&Message::List {
        dir: String::new(),
        long: false,
    });
    // The directory is empty: no entries, just the end of the listing.
    let answer = client.recv();
    assert_eq!(
        answer,
        Some(Message::Done),
        "a list was answered {answer:?}"
    );
    started.elapsed()
}

/// Regression, issue 12 item 7: with stdout a pipe nobody read, the server
/// froze once the pipe was full (some 800 report lines). Here the test reads
/// the start line, then nothing, while it makes more requests than the pipe
/// and the report queue hold together.
#[test]
fn a_server_whose_stdout_nobody_reads_keeps_serving_and_counts_lost_reports() {
    let logs = tempfile::tempdir().unwrap();
    let stderr_path = logs.path().join("stderr");
    let stderr = File::create(&stderr_path).unwrap();
    let mut server = BinaryServer::start_configured(tempfile::tempdir().unwrap(), |command| {
        command.stderr(stderr);
    });
    // A 64 KiB pipe takes some 800 lines, the queue 4096; each request
    // below makes one line, and each connection one more at most.
    let connections = 300;
    let lists_per_connection = 25;
    let mut slowest = Duration::ZERO;
    for _ in 0..connections {
        let mut client = RawClient::handshake(server.addr());
        for _ in 0..lists_per_connection {
            // A frozen server fails here, when the read times out.
            slowest = slowest.max(timed_list(&mut client));
        }
    }
    // Still nobody reads: the server answers at once, new clients and old.
    let mut kept = RawClient::handshake(server.addr());
    for _ in 0..10 {
        let mut client = RawClient::handshake(server.addr());
        for took in [timed_list(&mut client), timed_list(&mut kept)] {
            assert!(took < Duration::from_secs(1), "a list took {took:?}");
        }
    }
    // Reading again: the writer says what it lost before anything else.
    let mut lines = 0;
    loop {
        let line = server.next_report();
        lines += 1;
        if line.contains("report lines dropped") {
            break;
        }
    }
    // Before it: what the pipe held and the one write it was blocked in,
    // a few thousand lines at most; the 4096 queued lines come after.
    assert!(
        lines < 3000,
        "the loss was said only after {lines} lines (slowest flood list {slowest:?})"
    );
    // Said on stderr too, before it was written to stdout.
    let diagnostics = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        diagnostics.contains("report lines dropped"),
        "stderr: {diagnostics}"
    );
}

/// A server stopped while nobody reads its stdout still exits promptly,
/// without its queued lines.
#[test]
fn a_server_whose_stdout_nobody_reads_still_stops_on_sigterm() {
    let mut server = BinaryServer::start(&[]);
    for _ in 0..20 {
        let mut client = RawClient::handshake(server.addr());
        for _ in 0..300 {
            timed_list(&mut client);
        }
    }
    let started = Instant::now();
    let status = server.stop_with("TERM");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        started.elapsed()
    );
}
