//! The S3 store as a whole: starting a server on a bucket, and what it
//! refuses. The requests themselves are tested on both stores, in the
//! files of their topics (`store_matrix!`).

mod common;

use std::io::Write;
use std::sync::Arc;

use common::s3::{environment, server_command, start_binary_server, S3Server};
use common::{
    assert_exit, describe, eventually, pseudo_random_bytes, write_file, Backing, BinaryServer,
    RawClient, TestServer,
};
use ferry::protocol::{ErrorCode, Message, RemoteName};
use ferry::store::{Store, StoreSpec};
use ferry::transport::BodySource;

#[test]
fn the_start_line_names_the_bucket_and_prefix() {
    let Some(s3) = S3Server::shared() else { return };
    let bucket = s3.new_bucket();
    let address = format!("s3://{}/team/files", bucket.name());
    let server = start_binary_server(&address, s3.endpoint());
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

/// Ferry never overwrites: every request that creates a served key (a
/// put, a multipart completion, a stream, a directory marker, a rename's
/// copy) carries `If-None-Match: *`, so S3 refuses it if the key was taken
/// after ferry looked. Only ferry's own records beneath
/// `.ferry-tmp-state/` (digests of multipart objects) are written
/// unconditionally: they are replaced as their objects are.
#[test]
fn every_create_of_a_served_key_carries_if_none_match() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("creates.log");
    let Some(s3) = S3Server::logging_creates(&log) else {
        return;
    };
    let server = TestServer::start_on_bucket(Arc::new(s3.new_bucket()), |_| {});
    write_file(server.client_dir(), "small.txt", b"small");
    let large = pseudo_random_bytes(70 * 1024 * 1024, 3);
    write_file(server.client_dir(), "large.bin", &large);
    drop(large);
    assert_exit(&server.run_client(&["put", "small.txt", "d/small.txt"]), 0);
    assert_exit(&server.run_client(&["put", "large.bin"]), 0);
    let mut stream = server
        .client(&["put", "-", "streamed.txt"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    stream.stdin.take().unwrap().write_all(b"streamed").unwrap();
    assert!(stream.wait().unwrap().success());
    assert_exit(&server.run_client(&["mkdir", "-p", "e/f"]), 0);
    assert_exit(
        &server.run_client(&["rename", "d/small.txt", "e/moved.txt"]),
        0,
    );
    // Renaming out of d left it empty: its marker keeps it.
    assert_exit(&server.run_client(&["rmdir", "d"]), 0);

    let bucket = server.bucket().unwrap();
    let served = format!("/{}/{}/", bucket.name(), common::S3_PREFIX);
    let state = format!("{served}.ferry-tmp-state/");
    let log = std::fs::read_to_string(&log).unwrap();
    let creates: Vec<(&str, &str)> = log
        .lines()
        .filter_map(|line| {
            let (request, condition) = line.rsplit_once(' ')?;
            let path = request.split_once(' ')?.1;
            (path.starts_with(&served) && !path.starts_with(&state)).then_some((path, condition))
        })
        .collect();
    for (path, condition) in &creates {
        assert_eq!(*condition, "*", "{path} was created unconditionally\n{log}");
    }
    let created: Vec<String> = creates
        .iter()
        .map(|(path, _)| path[served.len()..].to_owned())
        .collect();
    for expected in [
        "d/small.txt",
        "large.bin",
        "streamed.txt",
        "e/",
        "e/f/",
        "e/moved.txt",
        "d/",
    ] {
        assert!(
            created.iter().any(|c| c == expected),
            "no create of {expected} logged\n{log}"
        );
    }
}

/// A put of one step or less has no checkpoint to keep: it writes no
/// record of a partial (three round trips saved per small file), where a
/// put of more writes one as it begins.
#[test]
fn only_a_put_of_more_than_a_step_records_a_partial() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("creates.log");
    let Some(s3) = S3Server::logging_creates(&log) else {
        return;
    };
    let server = TestServer::start_on_bucket(Arc::new(s3.new_bucket()), |_| {});
    let partials = "/.ferry-tmp-state/partials/";
    write_file(server.client_dir(), "small.txt", b"small");
    assert_exit(&server.run_client(&["put", "small.txt"]), 0);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(partials), "{logged}");

    let large = pseudo_random_bytes(70 * 1024 * 1024, 4);
    write_file(server.client_dir(), "large.bin", &large);
    drop(large);
    assert_exit(&server.run_client(&["put", "large.bin"]), 0);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(partials), "{logged}");
}

/// Eight clients put the same new name at once, through two ferry
/// servers in front of one bucket: exactly one succeeds, every other is
/// refused as already-exists, and the object holds the winner's bytes.
#[test]
fn racing_puts_through_two_servers_make_exactly_one_winner() {
    let Some(s3) = S3Server::shared() else { return };
    let bucket = Arc::new(s3.new_bucket());
    let other = TestServer::start_on_bucket(Arc::clone(&bucket), |_| {});
    let server = TestServer::start_on_bucket(bucket, |_| {});
    let bodies: Vec<Vec<u8>> = (0..8)
        .map(|i| pseudo_random_bytes(4 * 1024 * 1024, 100 + i))
        .collect();
    let clients: Vec<std::process::Child> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let through = if i % 2 == 0 { &server } else { &other };
            let local = write_file(through.client_dir(), &format!("body-{i}"), body);
            through
                .client(&["put", local.to_str().unwrap(), "race.bin"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<std::process::Output> = clients
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners: Vec<usize> = (0..8).filter(|&i| outputs[i].status.success()).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:#?}",
        outputs.iter().map(describe).collect::<Vec<_>>()
    );
    for (i, output) in outputs.iter().enumerate() {
        if i != winners[0] {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("already-exists"), "{}", describe(output));
        }
    }
    let stored = server.read_served("race.bin").unwrap();
    assert!(
        stored == bodies[winners[0]],
        "the object is not the winner's"
    );
}

/// The connection of a put whose multipart upload has begun goes away:
/// nothing appears under the name, and the server aborts the upload.
#[test]
fn a_put_cut_off_mid_upload_leaves_nothing_and_no_upload_open() {
    if S3Server::shared().is_none() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    let bucket = server.bucket().unwrap();
    let mut raw = RawClient::handshake(server.addr());
    raw.send(&Message::Put {
        name: "cut.bin".into(),
        size: 200 * 1024 * 1024,
    });
    assert_eq!(raw.recv(), Some(Message::Proceed));
    // More than one step: the first part goes up while the rest comes.
    raw.send_raw(&pseudo_random_bytes(100 * 1024 * 1024, 5));
    eventually("the multipart upload to begin", || {
        !bucket.open_uploads().is_empty()
    });
    drop(raw);
    server.wait_for_reports(1);
    eventually("the upload to be aborted", || {
        bucket.open_uploads().is_empty()
    });
    assert_eq!(server.read_served("cut.bin"), None);
    assert!(
        server.served_names().is_empty(),
        "{:?}",
        server.served_names()
    );
}

/// A multipart put whose trailer names another digest is refused, and
/// leaves nothing: no object, no upload open.
#[test]
fn a_put_with_a_wrong_digest_leaves_nothing_and_no_upload_open() {
    if S3Server::shared().is_none() {
        return;
    }
    let server = TestServer::start_in(Backing::S3);
    let data = pseudo_random_bytes(70 * 1024 * 1024, 6);
    let mut raw = RawClient::handshake(server.addr());
    raw.send(&Message::Put {
        name: "damaged.bin".into(),
        size: data.len() as u64,
    });
    assert_eq!(raw.recv(), Some(Message::Proceed));
    raw.send_raw(&data);
    raw.send(&Message::Trailer { digest: [0; 32] });
    let reply = raw.recv();
    assert!(
        matches!(
            reply,
            Some(Message::Error {
                code: ErrorCode::DigestMismatch,
                ..
            })
        ),
        "{reply:?}"
    );
    let bucket = server.bucket().unwrap();
    eventually("the upload to be aborted", || {
        bucket.open_uploads().is_empty()
    });
    assert_eq!(server.read_served("damaged.bin"), None);
    assert!(
        server.served_names().is_empty(),
        "{:?}",
        server.served_names()
    );
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

/// A directory of more keys than one page of ListObjectsV2 (1000) holds
/// lists every name once: the pages are fetched in turn as the batches
/// (256 entries) are sent.
#[test]
fn a_listing_of_more_keys_than_a_page_lists_every_name_once() {
    let Some(server) = s3_server() else { return };
    let bucket = server.bucket().unwrap();
    let names: Vec<String> = (0..1100).map(|n| format!("f{n:04}")).collect();
    // Concurrently: one at a time, moto takes a while.
    let client = bucket.client();
    bucket.block_on(async {
        let mut puts = tokio::task::JoinSet::new();
        for name in &names {
            let call = (client.put_object())
                .bucket(bucket.name())
                .key(format!("{}/many/{name}", common::S3_PREFIX))
                .body(Vec::from(&b"x"[..]).into())
                .send();
            puts.spawn(call);
            if puts.len() >= 32 {
                puts.join_next().await.unwrap().unwrap().unwrap();
            }
        }
        while let Some(put) = puts.join_next().await {
            put.unwrap().unwrap();
        }
    });
    server.write_served("many/sub/inner", b"");
    for args in [&["list", "many"][..], &["list", "-l", "many"]] {
        let output = server.run_client(args);
        assert_exit(&output, 0);
        let listed: Vec<String> = stdout_of(&output)
            .lines()
            .map(|line| line.rsplit("  ").next().unwrap().to_owned())
            .collect();
        let mut expected = names.clone();
        expected.push("sub/".to_owned());
        assert_eq!(listed, expected, "{args:?}");
    }
}

/// Keys no ferry name can be (an empty component, a control character, a
/// backslash, `..`) are left out of a listing and counted, as a disk's
/// unusable names are; ferry's own state beneath the prefix is left out
/// without a word, from listings and from trees.
#[test]
fn keys_no_name_can_be_are_counted_and_ferry_s_state_never_shows() {
    let Some(server) = s3_server() else { return };
    server.write_served("good.txt", b"g");
    server.write_served("d/inner", b"i");
    // An empty directory's marker.
    server.write_served("e/", b"");
    // A get of another tool's object keeps its digest beneath the state
    // prefix.
    assert_exit(&server.run_client(&["get", "good.txt"]), 0);
    server.wait_for_reports(1);
    let names = server.served_names();
    assert!(
        names
            .iter()
            .any(|name| name.starts_with(".ferry-tmp-state/")),
        "{names:?}"
    );
    // Written after the look at every key, which these would upset (the
    // harness lists without decoding).
    server.write_served("a//b", b"x");
    server.write_served("bad\u{1}name", b"x");
    server.write_served("back\\slash", b"x");
    server.write_served("../up", b"x");
    for args in [&["list"][..], &["list", "-l"]] {
        let output = server.run_client(args);
        assert_exit(&output, 0);
        let listed: Vec<String> = stdout_of(&output)
            .lines()
            .map(|line| line.rsplit("  ").next().unwrap().to_owned())
            .collect();
        // `a//b` is a directory `a` holding an empty name.
        assert_eq!(
            listed,
            ["a/", "d/", "e/", "good.txt"],
            "{}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        // `bad\x01name`, `back\\slash` and `..`.
        let unusable =
            "3 names not shown: not valid UTF-8, or holding control characters or backslashes\n";
        assert!(stderr.contains(unusable), "{}", describe(&output));
    }
    // A tree of the root: the same names, and the same left out.
    let output = server.run_client(&["get", "-r", ".", "copy"]);
    assert_exit(&output, 0);
    assert_eq!(
        common::files_under(&server.client_dir().join("copy")),
        ["a", "d", "d/inner", "e", "good.txt"],
        "{}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("4 names left out"), "{}", describe(&output));
    let output = server.run_client(&["list", "e"]);
    assert_exit(&output, 0);
    assert_eq!(stdout_of(&output), "", "{}", describe(&output));
    let output = server.run_client(&["list", "a"]);
    assert_exit(&output, 0);
    assert_eq!(stdout_of(&output), "", "{}", describe(&output));
    let unusable =
        "1 name not shown: not valid UTF-8, or holding control characters or backslashes\n";
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(unusable),
        "{}",
        describe(&output)
    );
}

/// S3 lets one name be both an object and a prefix (`both` and
/// `both/inner`, written by other tools). A listing shows both; a tree,
/// which cannot hold both, carries the directory and counts the file left
/// out.
#[test]
fn a_name_that_is_a_file_and_a_directory_lists_twice_and_walks_as_the_directory() {
    let Some(server) = s3_server() else { return };
    server.write_served("t/both", b"file");
    server.write_served("t/both/inner", b"inner");
    let output = server.run_client(&["list", "t"]);
    assert_exit(&output, 0);
    assert_eq!(stdout_of(&output), "both\nboth/\n", "{}", describe(&output));
    let output = server.run_client(&["get", "-r", "t", "copy"]);
    assert_exit(&output, 0);
    assert_eq!(
        common::files_under(&server.client_dir().join("copy")),
        ["both", "both/inner"],
        "{}",
        describe(&output)
    );
    assert!(server.client_dir().join("copy/both").is_dir());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 name left out"), "{}", describe(&output));
}

/// The answer to a multipart put's completion is lost, and the retry is
/// refused as if another upload had the name: the object under the name
/// is this upload's own (its token says so), so the put is reported done,
/// not already-exists, and nothing is aborted.
#[test]
fn a_completion_whose_answer_was_lost_is_settled_by_looking_at_the_object() {
    let Some(s3) = S3Server::losing_completions() else {
        return;
    };
    let server = TestServer::start_on_bucket(Arc::new(s3.new_bucket()), |_| {});
    let data = pseudo_random_bytes(70 * 1024 * 1024, 23);
    write_file(server.client_dir(), "big.bin", &data);
    let output = server.run_client(&["put", "big.bin"]);
    assert_exit(&output, 0);
    assert!(
        server.read_served("big.bin").unwrap() == data,
        "{}",
        describe(&output)
    );
}
