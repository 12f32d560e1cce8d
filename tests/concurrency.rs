//! Many clients at once, races on one name, and clients that stall, vanish
//! or are killed: the server keeps serving and leaves nothing half-written.

mod common;

use std::process::{Child, Stdio};
use std::thread;

use common::{
    assert_exit, assert_exit_saying, describe, eventually, pseudo_random_bytes, write_file,
    RawClient, TestServer,
};
use ferry::client::partial_name;
use ferry::protocol::{ErrorCode, Message, TEMP_PREFIX};
use ferry::store::PARTIALS_DIR;

#[test]
fn fifty_clients_at_once_all_succeed() {
    let server = TestServer::start();
    let files: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| {
            (
                format!("client-{i}.bin"),
                pseudo_random_bytes(64 * 1024 + i, i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        write_file(server.client_dir(), name, data);
    }
    let puts: Vec<Child> = files
        .iter()
        .map(|(name, _)| {
            let remote = format!("up/{name}");
            server
                .client(&["put", name, &remote])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for put in puts {
        assert_exit(&put.wait_with_output().unwrap(), 0);
    }
    let gets: Vec<Child> = files
        .iter()
        .map(|(name, _)| {
            let remote = format!("up/{name}");
            let local = format!("down-{name}");
            server
                .client(&["get", &remote, &local])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for get in gets {
        assert_exit(&get.wait_with_output().unwrap(), 0);
    }
    for (name, data) in &files {
        assert_eq!(
            &std::fs::read(server.client_dir().join(format!("down-{name}"))).unwrap(),
            data
        );
    }
    assert_eq!(server.wait_for_reports(100).len(), 100);
}

#[test]
fn of_two_concurrent_puts_of_one_name_exactly_one_wins() {
    let server = TestServer::start();
    let mut first = RawClient::handshake(server.addr());
    let mut second = RawClient::handshake(server.addr());
    // Both are told to proceed: neither name exists yet.
    for (client, size) in [(&mut first, 5), (&mut second, 6)] {
        client.send(&Message::Put {
            name: "race.txt".into(),
            size,
        });
        assert_eq!(client.recv(), Some(Message::Proceed));
    }
    second.send_raw(b"second");
    second.send(&Message::Trailer {
        digest: *blake3::hash(b"second").as_bytes(),
    });
    assert_eq!(second.recv(), Some(Message::Done));
    first.send_raw(b"first");
    first.send(&Message::Trailer {
        digest: *blake3::hash(b"first").as_bytes(),
    });
    match first.recv() {
        Some(Message::Error {
            code: ErrorCode::AlreadyExists,
            ..
        }) => {}
        other => panic!("the loser must get already-exists, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(server.root().join("race.txt")).unwrap(),
        b"second"
    );
    assert_eq!(server.root_files(), ["race.txt"]);
}

#[test]
fn an_upload_in_progress_never_appears() {
    let server = TestServer::start();
    let mut uploader = RawClient::handshake(server.addr());
    uploader.send(&Message::Put {
        name: "partial.bin".into(),
        size: 1_000_000,
    });
    assert_eq!(uploader.recv(), Some(Message::Proceed));
    uploader.send_raw(&[1; 500_000]);
    eventually("the temporary file exists", || {
        server
            .root_files()
            .iter()
            .any(|f| f.starts_with(TEMP_PREFIX))
    });
    let output = server.run_client(&["list", "-l"]);
    assert_exit(&output, 0);
    assert!(output.stdout.is_empty(), "{}", describe(&output));
    assert_exit(&server.run_client(&["get", "partial.bin"]), 1);
}

#[test]
fn a_client_vanishing_mid_upload_leaves_nothing_behind() {
    let server = TestServer::start();
    let mut uploader = RawClient::handshake(server.addr());
    uploader.send(&Message::Put {
        name: "vanished.bin".into(),
        size: 1_000_000,
    });
    assert_eq!(uploader.recv(), Some(Message::Proceed));
    uploader.send_raw(&[1; 300_000]);
    eventually("the temporary file exists", || {
        !server.root_files().is_empty()
    });
    drop(uploader);
    eventually("the temporary file is gone", || {
        server.root_files().is_empty()
    });
    let report = &server.wait_for_reports(1)[0];
    assert!(
        report
            .to_string()
            .contains("put \"vanished.bin\" failed connection-lost: the client went away"),
        "{report}"
    );
    assert!(report.to_string().ends_with("nothing was kept"), "{report}");
    assert_eq!(
        RawClient::handshake(server.addr()).put("vanished.bin", b"again"),
        Message::Done
    );
}

/// Issue 14: a client killed mid-upload, past the first step, leaves its
/// upload's partial, for a resume: hidden in the server's partials
/// directory, never under the name, never listed, never served. The
/// server keeps serving.
#[test]
fn a_client_killed_mid_upload_leaves_only_a_hidden_partial_and_the_server_keeps_serving() {
    let server = TestServer::start();
    // A sparse file big enough that the upload is still running when
    // killed; the server's disk must have room for it.
    let big = std::fs::File::create(server.client_dir().join("huge.bin")).unwrap();
    big.set_len(2 << 30).unwrap();
    let mut client = server
        .client(&["put", "huge.bin"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partials = server.root().join(PARTIALS_DIR);
    let record = || {
        let entries = std::fs::read_dir(&partials).ok()?;
        let names = entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok());
        let record = names.into_iter().find(|name| name.ends_with(".rec"))?;
        Some(partials.join(record))
    };
    eventually("the upload has started", || record().is_some());
    common::wait_for_a_step(&record().unwrap());
    client.kill().unwrap();
    client.wait().unwrap();
    let report = server.wait_for_reports(1)[0].to_string();
    assert!(
        report.contains("put \"huge.bin\" failed connection-lost"),
        "{report}"
    );
    assert!(report.ends_with("kept for a resume"), "{report}");
    // The partial and its record, and no record being written.
    eventually("only the partial and its record are left", || {
        let files = server.root_files();
        files.len() == 3
            && files
                .iter()
                .all(|f| f.starts_with(PARTIALS_DIR) && !f.ends_with(".new"))
    });
    let output = server.run_client(&["list", "-l"]);
    assert_exit(&output, 0);
    assert!(output.stdout.is_empty(), "{}", describe(&output));
    assert_exit_saying(
        &server.run_client(&["get", "huge.bin", "copy.bin"]),
        1,
        "not-found",
    );
    write_file(server.client_dir(), "small.txt", b"still serving");
    assert_exit(&server.run_client(&["put", "small.txt"]), 0);
    let served: Vec<String> = server
        .root_files()
        .into_iter()
        .filter(|f| !f.starts_with(PARTIALS_DIR))
        .collect();
    assert_eq!(served, ["small.txt"]);
}

#[test]
fn a_stalled_client_does_not_hold_up_the_others() {
    let server = TestServer::start();
    // One client stalls half way through a frame, another half way through
    // a body, a third never finishes its handshake.
    let mut mid_frame = RawClient::handshake(server.addr());
    mid_frame.send_raw(&[0, 0, 0, 40, 0x02]);
    let mut mid_body = RawClient::handshake(server.addr());
    mid_body.send(&Message::Put {
        name: "slow.bin".into(),
        size: 1 << 20,
    });
    assert_eq!(mid_body.recv(), Some(Message::Proceed));
    mid_body.send_raw(&[0; 1000]);
    let mut mid_handshake = RawClient::connect(server.addr());
    mid_handshake.send_raw(b"FER");

    let workers: Vec<_> = (0..4)
        .map(|i| {
            let addr = server.addr();
            thread::spawn(move || {
                let mut client = RawClient::handshake(addr);
                let name = format!("busy-{i}");
                assert_eq!(client.put(&name, name.as_bytes()), Message::Done);
                assert_eq!(client.get(&name), Ok(name.into_bytes()));
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_exit(&server.run_client(&["list"]), 0);
}

/// Issue 14: Ctrl-C mid-download, past the first step, keeps the hidden
/// partial beside the target, for a resume, and nothing under the
/// target's name; the client exits 130.
#[test]
fn ctrl_c_mid_download_keeps_only_a_hidden_partial_and_exits_130() {
    let server = TestServer::start();
    let huge = std::fs::File::create(server.root().join("huge.bin")).unwrap();
    huge.set_len(8 << 30).unwrap();
    let client = server
        .client(&["get", "huge.bin"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial = partial_name("huge.bin");
    common::wait_for_a_step(&server.client_dir().join(format!("{partial}.rec")));
    let pid = client.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let output = client.wait_with_output().unwrap();
    assert_exit_saying(&output, 130, "failed interrupted");
    assert_eq!(
        common::files_under(server.client_dir()),
        [partial.clone(), format!("{partial}.rec")],
        "{}",
        describe(&output)
    );
}
