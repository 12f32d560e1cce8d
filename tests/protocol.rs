//! The wire protocol against a live server, byte by byte, and the real
//! client against fake servers: what neither side's own code would send.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{
    assert_exit, assert_exit_saying, client_at, fake_download_server, fake_ferry_server,
    fake_server, files_under, frame, read_frame, write_file, RawClient, TestServer,
};
use ferry::protocol::{Entry, EntryKind, ErrorCode, Message, Preamble, PREAMBLE_LEN};

#[test]
fn a_refused_put_is_answered_before_any_body_is_sent() {
    let server = TestServer::start();
    write_file(server.root(), "taken.bin", b"original");
    let mut client = RawClient::handshake(server.addr());
    // Hand-built Put frame: length 20, tag 0x01, size 10 GB, name "taken.bin".
    #[rustfmt::skip]
    let put = [
        0x00, 0x00, 0x00, 0x14,
        0x01,
        0x00, 0x00, 0x00, 0x02, 0x54, 0x0b, 0xe4, 0x00,
        0x00, 0x09, b't', b'a', b'k', b'e', b'n', b'.', b'b', b'i', b'n',
    ];
    client.send_raw(&put);
    // No body byte has been sent, yet the answer is already here.
    match client.recv() {
        Some(Message::Error {
            code: ErrorCode::AlreadyExists,
            ..
        }) => {}
        other => panic!("expected already-exists before any body, got {other:?}"),
    }
    // The server expects no body: the very next bytes are read as a request.
    assert_eq!(client.get("taken.bin"), Ok(b"original".to_vec()));
}

#[test]
fn several_requests_share_one_connection() {
    let server = TestServer::start();
    let mut client = RawClient::handshake(server.addr());
    assert_eq!(client.put("one", b"1"), Message::Done);
    assert_eq!(client.put("two", b"22"), Message::Done);
    client.send(&Message::List {
        dir: String::new(),
        long: true,
    });
    let mut names = Vec::new();
    while let Some(Message::Entry(entry)) = client.recv() {
        names.push((entry.name, entry.size));
    }
    assert_eq!(names, [("one".to_owned(), 1), ("two".to_owned(), 2)]);
    client.send(&Message::Delete {
        name: "one".into(),
        recursive: false,
    });
    assert_eq!(client.recv(), Some(Message::Done));
    assert_eq!(client.get("two"), Ok(b"22".to_vec()));
    let reports = server.wait_for_reports(5);
    assert!(
        reports.iter().all(|r| r.peer == reports[0].peer),
        "one connection: {reports:#?}"
    );
}

#[test]
fn a_foreign_client_gets_a_clear_error_and_is_reported() {
    let server = TestServer::start();
    let mut client = RawClient::connect(server.addr());
    client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut preamble = [0; PREAMBLE_LEN];
    client.read_exact(&mut preamble);
    assert_eq!(Preamble::from_bytes(&preamble), Ok(Preamble::OURS));
    match client.recv() {
        Some(Message::Error {
            code: ErrorCode::BadRequest,
            message,
        }) => {
            assert!(message.contains("ferry"), "{message}");
        }
        other => panic!("expected bad-request, got {other:?}"),
    }
    assert!(client.is_closed());
    let line = server.wait_for_reports(1)[0].to_string();
    assert!(line.contains("connection failed not-ferry"), "{line}");
}

#[test]
fn a_client_of_another_version_is_told_so() {
    let server = TestServer::start();
    // 2 is the version before this one, whose clients are out there; 7 is
    // one from the future.
    for version in [2, 7] {
        let mut client = RawClient::connect(server.addr());
        client.send_raw(&Preamble { version }.to_bytes());
        let mut preamble = [0; PREAMBLE_LEN];
        client.read_exact(&mut preamble);
        assert_eq!(Preamble::from_bytes(&preamble), Ok(Preamble::OURS));
        match client.recv() {
            Some(Message::Error {
                code: ErrorCode::UnsupportedVersion,
                message,
            }) => {
                let both = format!("version 3, the client version {version}");
                assert!(message.contains(&both), "{message}");
            }
            other => panic!("expected unsupported-version, got {other:?}"),
        }
        assert!(client.is_closed());
    }
    assert!(server.wait_for_reports(1)[0]
        .to_string()
        .contains("unsupported-version"));
}

/// What a version 2 client sends first, byte for byte, as PROTOCOL.md §9
/// documents the answer to it.
#[test]
fn a_version_2_client_reads_our_preamble_then_unsupported_version() {
    let server = TestServer::start();
    let mut client = RawClient::connect(server.addr());
    client.send_raw(&[0x46, 0x45, 0x52, 0x52, 0x59, 0x00, 0x00, 0x02]);
    client.send_raw(&[0, 0, 0, 3, 0x05, 0x00, 0x00]); // its Hello, no token
    let mut preamble = [0; PREAMBLE_LEN];
    client.read_exact(&mut preamble);
    assert_eq!(preamble, [0x46, 0x45, 0x52, 0x52, 0x59, 0x00, 0x00, 0x03]);
    let expected = frame(&Message::Error {
        code: ErrorCode::UnsupportedVersion,
        message: "this server speaks ferry protocol version 3, the client version 2".into(),
    });
    let mut answer = vec![0; expected.len()];
    client.read_exact(&mut answer);
    assert_eq!(answer, expected);
    assert!(client.is_closed());
}

#[test]
fn an_oversized_header_is_refused_without_waiting_for_it() {
    let server = TestServer::start();
    let mut client = RawClient::handshake(server.addr());
    // Claims a 4 GiB frame; only the 4 length bytes are ever sent.
    client.send_raw(&[0xff, 0xff, 0xff, 0xff]);
    match client.recv() {
        Some(Message::Error {
            code: ErrorCode::BadRequest,
            message,
        }) => {
            assert!(message.contains("frame length"), "{message}");
        }
        other => panic!("expected bad-request, got {other:?}"),
    }
    assert!(client.is_closed());
    // The server itself is fine.
    assert_eq!(
        RawClient::handshake(server.addr()).put("after", b"ok"),
        Message::Done
    );
}

#[test]
fn malformed_frames_close_only_that_connection() {
    let server = TestServer::start();
    let mut bystander = RawClient::handshake(server.addr());
    for garbage in [
        &[0, 0, 0, 3, 0x02, 0xff, 0xff][..],
        &[0, 0, 0, 2, 0x23, 0x00],
        &[0, 0, 0, 3, 0x04, 0x07, 0x00],
    ] {
        let mut client = RawClient::handshake(server.addr());
        client.send_raw(garbage);
        assert!(matches!(
            client.recv(),
            Some(Message::Error {
                code: ErrorCode::BadRequest,
                ..
            })
        ));
        assert!(client.is_closed(), "{garbage:02x?}");
    }
    assert_eq!(bystander.put("still-served", b"yes"), Message::Done);
}

/// A whole frame the server does not serve leaves the stream in step: it
/// is answered, and the next request on the same connection is served
/// (issue 11).
#[test]
fn an_unknown_or_unserved_message_is_answered_and_the_connection_lives_on() {
    let server = TestServer::start();
    let mut client = RawClient::handshake(server.addr());
    let unserved = [
        &[0, 0, 0, 1, 0x99][..],                   // unknown tag
        &[0, 0, 0, 4, 0x3a, 1, 2, 3],              // a later request's tag, with fields
        &[0, 0, 0, 1, 0x23],                       // Done: a reply, not a request
        &[0, 0, 0, 4, 0x05, 0x00, 0x01, b't'][..], // a second Hello
    ];
    for bytes in unserved {
        client.send_raw(bytes);
        match client.recv() {
            Some(Message::Error {
                code: ErrorCode::UnsupportedRequest,
                ..
            }) => {}
            other => panic!("{bytes:02x?}: expected unsupported-request, got {other:?}"),
        }
        assert_eq!(client.put("after.txt", b"served"), Message::Done);
        std::fs::remove_file(server.root().join("after.txt")).unwrap();
    }
    let reports = server.reports();
    assert!(
        reports
            .iter()
            .any(|r| r.to_string().contains("failed unsupported-request")),
        "{reports:?}"
    );
}

#[test]
fn a_put_whose_digest_does_not_match_keeps_nothing() {
    let server = TestServer::start();
    let mut client = RawClient::handshake(server.addr());
    client.send(&Message::Put {
        name: "damaged.bin".into(),
        size: 5,
    });
    assert_eq!(client.recv(), Some(Message::Proceed));
    client.send_raw(b"hello");
    client.send(&Message::Trailer {
        digest: *blake3::hash(b"HELLO").as_bytes(),
    });
    match client.recv() {
        Some(Message::Error {
            code: ErrorCode::DigestMismatch,
            ..
        }) => {}
        other => panic!("expected digest-mismatch, got {other:?}"),
    }
    assert!(server.root_files().is_empty(), "{:?}", server.root_files());
    // The connection is still in step.
    assert_eq!(client.put("damaged.bin", b"hello"), Message::Done);
}

#[test]
fn the_client_recognises_a_server_that_is_not_ferry() {
    let port = fake_server(|stream| {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let output = client_at("127.0.0.1", port, &["list"]).output().unwrap();
    assert_exit_saying(&output, 3, "failed not-ferry");
}

#[test]
fn the_client_gives_up_on_a_silent_server() {
    let port = fake_server(|stream| {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    });
    let output = client_at("127.0.0.1", port, &["--timeout", "1", "list"])
        .output()
        .unwrap();
    assert_exit_saying(&output, 3, "failed timeout");
}

#[test]
fn the_client_refuses_a_server_of_another_version() {
    let port = fake_server(|stream| {
        let _ = stream.write_all(&Preamble { version: 9 }.to_bytes());
    });
    let output = client_at("127.0.0.1", port, &["list"]).output().unwrap();
    assert_exit(&output, 3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unsupported-version") && stderr.contains("version 9"),
        "{stderr}"
    );
}

/// Runs `ferry client … get file.txt` in a fresh directory; returns the
/// output and what the directory holds afterwards.
fn get_from(port: u16) -> (std::process::Output, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let output = client_at("127.0.0.1", port, &["get", "file.txt"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    (output, files_under(dir.path()))
}

#[test]
fn a_download_whose_digest_does_not_match_keeps_nothing() {
    let mut reply = frame(&Message::Body { size: 5 });
    reply.extend_from_slice(b"hello");
    reply.extend(frame(&Message::Trailer {
        digest: *blake3::hash(b"other").as_bytes(),
    }));
    let (output, left) = get_from(fake_download_server(reply));
    assert_exit_saying(&output, 1, "failed digest-mismatch");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_download_cut_short_keeps_nothing() {
    let mut reply = frame(&Message::Body { size: 1000 });
    reply.extend_from_slice(&[7; 10]);
    let port = fake_ferry_server(move |stream| {
        // Hang up after 10 of the 1000 bytes.
        let _request = read_frame(stream);
        let _ = stream.write_all(&reply);
    });
    let (output, left) = get_from(port);
    assert_exit_saying(&output, 3, "failed connection-lost");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_listing_with_a_name_no_ferry_server_would_send_is_refused() {
    for hostile in [
        "../../etc/passwd",
        "a/b",
        "evil\x1b[2J",
        ".ferry-tmp-1-2",
        "",
        // Names a server would only send in their plain form (issue 11).
        "./x",
        "x/",
        ".",
    ] {
        let mut reply = frame(&Message::Entry(Entry {
            kind: EntryKind::File,
            size: 0,
            modified: 0,
            name: "fine.txt".into(),
        }));
        reply.extend(frame(&Message::Entry(Entry {
            kind: EntryKind::File,
            size: 0,
            modified: 0,
            name: hostile.into(),
        })));
        reply.extend(frame(&Message::Done));
        let output = client_at("127.0.0.1", fake_download_server(reply), &["list"])
            .output()
            .unwrap();
        assert_exit_saying(&output, 3, "failed protocol-error: server misbehaved");
        let listed = String::from_utf8_lossy(&output.stdout);
        assert!(
            !listed.contains(hostile) || hostile.is_empty(),
            "{hostile:?} was listed: {listed}"
        );
    }
}

/// Whatever comes in place of the hello, a whole frame of an unknown kind
/// or a malformed one, is answered before the connection closes, as any
/// other wrong first message is.
#[test]
fn garbage_in_place_of_the_hello_is_answered_bad_request() {
    // Without penalties: garbage is an offence, and the second connection
    // would be refused before it could send its own.
    let server = TestServer::start_with(|config| config.limits.max_penalty = Duration::ZERO);
    for garbage in [&[0, 0, 0, 1, 0x99][..], &[0, 0, 0, 2, 0x23, 0x00]] {
        let mut client = RawClient::connect(server.addr());
        client.send_raw(&Preamble::OURS.to_bytes());
        client.send_raw(garbage);
        let mut preamble = [0; PREAMBLE_LEN];
        client.read_exact(&mut preamble);
        match client.recv() {
            Some(Message::Error {
                code: ErrorCode::BadRequest,
                message,
            }) => assert!(message.contains("expected a hello"), "{message}"),
            other => panic!("{garbage:02x?}: expected bad-request, got {other:?}"),
        }
        assert!(client.is_closed(), "{garbage:02x?}");
    }
}
