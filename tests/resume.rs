//! Verified resume (issue 14, PROTOCOL.md §5.13): a put or a get cut off
//! part way, made again, goes on from the prefix its receiver proves, says
//! so, and ends byte-identical; what cannot be proven is sent again.
//!
//! Transfers run through a [`Relay`] that cuts them at an exact byte of
//! their body and counts what the next try moves. Files are a few steps
//! (64 MiB) long, so that a step can be kept; each test moves as few of
//! them as it can.

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::s3::S3Server;
use common::*;
use ferry::client::partial_name;
use ferry::partial::Record;
use ferry::protocol::{ErrorCode, Message, STEP};
use ferry::report::mebibytes;
use ferry::store::PARTIALS_DIR;

const MIB: u64 = 1 << 20;

/// The file cut at every offset: four steps.
const BIG: u64 = 4 * STEP;

/// A file of one step and a little more: cut past its step, its partial
/// keeps the step, and a resume sends the little more.
const SMALL: u64 = STEP + 4 * MIB;

/// Where [`SMALL`] is cut to keep a partial of one step.
const PAST_STEP: u64 = STEP + MIB;

/// What a plain transfer moves besides its body: a few frames and the
/// trailer.
const FRAMES: u64 = 4096;

/// How long one transfer of a few hundred MiB may take on a busy machine.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);

/// Where a transfer began, as its report line says.
#[derive(Clone, Debug, PartialEq)]
enum Began {
    /// From the start, with nothing to resume: no word about it.
    Fresh,
    /// `, resumed at N MiB`: the partial's sealed record held, and
    /// nothing of it was read again.
    At(u64),
    /// `, resumed at N MiB (proved by reading M MiB of the partial
    /// again)`: the partial had changed since its record (its writer was
    /// killed), and was read again to prove it.
    Proved(u64, u64),
    /// `, started over: <why>`.
    Over(&'static str),
}

const SOURCE_CHANGED: &str = "the source changed since the partial was made";
const UNPROVEN: &str = "the partial could not be proven";
const RESTARTED: &str = "the partial was discarded, as asked";

/// Where a transfer cut off after `cut` bytes of its body resumes: at the
/// last whole step the receiver synced, which is short of the end.
fn resumes_at(cut: u64, size: u64) -> Began {
    match cut.min(size - 1) / STEP * STEP {
        0 => Began::Fresh,
        at => Began::At(at),
    }
}

/// Asserts that the report `line` says the transfer began as `began`.
fn assert_began(line: &str, began: &Began) {
    let line = line.trim_end();
    let ok = match began {
        Began::Fresh => !line.contains("resumed at") && !line.contains("started over"),
        Began::At(at) => line.ends_with(&format!(", resumed at {}", mebibytes(*at))),
        Began::Proved(at, reread) => line.ends_with(&format!(
            ", resumed at {} (proved by reading {} of the partial again)",
            mebibytes(*at),
            mebibytes(*reread)
        )),
        Began::Over(why) => line.ends_with(&format!(", started over: {why}")),
    };
    assert!(ok, "expected {began:?} in the report {line:?}");
}

/// Writes `size` bytes to `path`: random bytes, each 4 KiB block of them
/// starting with its own offset and `seed`, so that no block can pass for
/// another, nor a file for one of another seed.
fn write_source(path: &Path, size: u64, seed: u64) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut chunk = pseudo_random_bytes(MIB as usize, seed);
    let mut offset = 0;
    while offset < size {
        for (i, block) in chunk.chunks_mut(4096).enumerate() {
            let at = offset + 4096 * i as u64;
            block[..8].copy_from_slice(&at.to_le_bytes());
            block[8..16].copy_from_slice(&seed.to_le_bytes());
        }
        let n = (size - offset).min(MIB);
        out.write_all(&chunk[..n as usize]).unwrap();
        offset += n;
    }
    out.flush().unwrap();
}

/// The BLAKE3 digest of the file at `path`.
fn digest_of(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap();
    hasher.finalize()
}

/// Asserts that `copy` holds exactly the bytes of `original`.
fn assert_same_file(copy: &Path, original: &Path) {
    let (len, expected) = (
        std::fs::metadata(copy).unwrap().len(),
        std::fs::metadata(original).unwrap().len(),
    );
    assert_eq!(len, expected, "{} has the wrong size", copy.display());
    assert!(
        digest_of(copy) == digest_of(original),
        "{} differs from {}",
        copy.display(),
        original.display()
    );
}

/// Runs `command` in `dir` to its end.
fn run_in(dir: &Path, mut command: Command) -> Output {
    command.current_dir(dir);
    output_within(&mut command, TRANSFER_LIMIT).0
}

/// The client's report line of the transfer that succeeded in `output`.
fn ok_line(output: &Output) -> String {
    assert_exit(output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find(|line| line.contains(" ok "))
        .unwrap_or_else(|| panic!("no report line\n{}", describe(output)))
        .to_owned()
}

/// Asserts that the command in `output` failed, as a cut one must.
fn assert_failed(output: &Output) {
    assert!(!output.status.success(), "{}", describe(output));
}

/// The files in the server's hidden partials directory under `root`.
fn server_partials(root: &Path) -> Vec<String> {
    match std::fs::read_dir(root.join(PARTIALS_DIR)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{e}"),
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }
}

/// Waits until the server under `root` has let go of its partials: a
/// report of a failed put may come before the server sealed its partial
/// and closed it, and a second put of the name would find it locked.
fn wait_until_let_go(root: &Path) {
    // Records, and records being written (`.rec.new`), are not locked.
    for name in server_partials(root) {
        if name.contains(".rec") {
            continue;
        }
        let path = root.join(PARTIALS_DIR).join(name);
        eventually("the server let go of its partial", || {
            let Ok(file) = File::open(&path) else {
                return true;
            };
            let lock = rustix::fs::FlockOperation::NonBlockingLockExclusive;
            rustix::fs::flock(&file, lock).is_ok()
        });
    }
}

/// The one partial the server under `root` keeps, and its record.
fn server_partial(root: &Path) -> (PathBuf, PathBuf) {
    let names = server_partials(root);
    let [data, record] = names.as_slice() else {
        panic!("not one partial and its record: {names:?}");
    };
    assert_eq!(record, &format!("{data}.rec"), "{names:?}");
    let dir = root.join(PARTIALS_DIR);
    (dir.join(data), dir.join(record))
}

/// The partial a download to `dir/name` keeps beside it, and its record.
fn client_partial(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let data = dir.join(partial_name(name));
    let record = dir.join(format!("{}.rec", partial_name(name)));
    (data, record)
}

/// Files beside a download's target that are partials: none once every
/// transfer completed.
fn client_partials(dir: &Path) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|name| name.contains(".ferry-partial"))
        .collect()
}

/// Sets the modification time of `path` to `time`.
fn set_mtime(path: &Path, time: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

/// The modification time of `path`.
fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Flips the bits of the byte at `offset` of `path`.
fn flip_byte(path: &Path, offset: u64) {
    let file = File::options().read(true).write(true).open(path).unwrap();
    let mut byte = [0];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0xff;
    file.write_all_at(&byte, offset).unwrap();
}

/// A server in this process with a source of `size` bytes in its client
/// directory, `big.bin`.
fn server_with_upload(size: u64) -> (TestServer, PathBuf) {
    server_with_upload_in(Backing::Local, size)
}

/// [`server_with_upload`] on `backing`.
fn server_with_upload_in(backing: Backing, size: u64) -> (TestServer, PathBuf) {
    let server = TestServer::start_in(backing);
    let source = server.client_dir().join("big.bin");
    write_source(&source, size, 1);
    (server, source)
}

/// A server in this process serving a file of `size` bytes, `big.bin`,
/// and where a copy of it is to compare with: the served file itself on a
/// disk; a file in the unused served directory for a bucket.
fn server_with_download(size: u64) -> (TestServer, PathBuf) {
    server_with_download_in(Backing::Local, size)
}

/// [`server_with_download`] on `backing`.
fn server_with_download_in(backing: Backing, size: u64) -> (TestServer, PathBuf) {
    let server = TestServer::start_in(backing);
    let source = server.root().join("big.bin");
    write_source(&source, size, 2);
    if backing == Backing::S3 {
        server.write_served("big.bin", &std::fs::read(&source).unwrap());
    }
    (server, source)
}

/// Runs `args` on `server`'s client through a relay that cuts it as
/// `cut` says, and checks that it failed; then waits for the server's
/// report of it, and for the server to let go of its partial.
fn cut_off(server: &TestServer, args: &[&str], cut: Cut) {
    let reports = server.reports().len();
    let relay = Relay::start(server.addr(), Framing::Plain, cut);
    let output = run_in(
        server.client_dir(),
        client_at("127.0.0.1", relay.port(), args),
    );
    assert_failed(&output);
    server.wait_for_reports(reports + 1);
    wait_until_let_go(server.root());
}

/// Runs `args` on `server`'s client through a counting relay; checks it
/// succeeded and that the client's report says it began as `began`, and
/// the server's as `server_began` (which differs where the client alone
/// knows why it asked for the whole file). Returns the body bytes that
/// went `way`.
fn run_counted_seen(
    server: &TestServer,
    args: &[&str],
    way: Way,
    began: &Began,
    server_began: &Began,
) -> u64 {
    let reports = server.reports().len();
    let relay = Relay::counting(server.addr(), Framing::Plain);
    let output = run_in(
        server.client_dir(),
        client_at("127.0.0.1", relay.port(), args),
    );
    assert_began(&ok_line(&output), began);
    let report = server.wait_for_reports(reports + 1)[reports].to_string();
    assert_began(&report, server_began);
    relay.counted(way)
}

/// [`run_counted_seen`] where both sides say the transfer began as `began`.
fn run_counted(server: &TestServer, args: &[&str], way: Way, began: &Began) -> u64 {
    run_counted_seen(server, args, way, began, began)
}

/// Asserts that `name` on `server` is a copy of `source` and that no
/// partial is left; removes the copy, for the next case.
fn assert_uploaded_then_clear(server: &TestServer, name: &str, source: &Path) {
    assert_served_copy(server, name, source);
    remove_served(server, name);
    assert_no_partials(server);
}

/// Removes the served file `name` from the store directly, as another
/// program would: no request, no report.
fn remove_served(server: &TestServer, name: &str) {
    match server.bucket() {
        None => std::fs::remove_file(server.root().join(name)).unwrap(),
        Some(bucket) => {
            let client = bucket.client();
            let delete = (client.delete_object())
                .bucket(bucket.name())
                .key(format!("{S3_PREFIX}/{name}"))
                .send();
            bucket.block_on(delete).unwrap();
        }
    }
}

/// Asserts that the file `name` served by `server` holds exactly the
/// bytes of `original`.
fn assert_served_copy(server: &TestServer, name: &str, original: &Path) {
    let copy = server.read_served(name).expect("the copy is served");
    assert_eq!(
        copy.len() as u64,
        std::fs::metadata(original).unwrap().len()
    );
    assert!(
        blake3::hash(&copy) == digest_of(original),
        "{name} differs from {}",
        original.display()
    );
}

/// Where the partials `server` keeps for puts vouch for, one per partial:
/// from their records on the disk, or in the bucket (JSON, beneath
/// ferry's state).
fn kept_prefixes(server: &TestServer) -> Vec<u64> {
    match server.bucket() {
        None => server_partials(server.root())
            .into_iter()
            .filter(|name| name.ends_with(".rec"))
            .map(|name| recorded_prefix(&server.root().join(PARTIALS_DIR).join(name)).unwrap())
            .collect(),
        Some(bucket) => bucket
            .keys()
            .into_iter()
            .filter(|key| key.starts_with(&format!("{S3_PREFIX}/{S3_PARTIALS}")))
            .map(|key| {
                let record: serde_json::Value =
                    serde_json::from_slice(&bucket.read(&key).unwrap()).unwrap();
                record["prefix_len"].as_u64().unwrap()
            })
            .collect(),
    }
}

/// Beneath an S3 store's prefix, where the records of its partials are.
const S3_PARTIALS: &str = ".ferry-tmp-state/partials/";

/// Asserts that `server` keeps no partial: on a bucket, no record of a
/// partial or of an upload, and no multipart upload open.
fn assert_no_partials(server: &TestServer) {
    match server.bucket() {
        None => assert_eq!(server_partials(server.root()), Vec::<String>::new()),
        Some(bucket) => {
            let state: Vec<String> = (server.served_names().into_iter())
                .filter(|name| {
                    name.starts_with(S3_PARTIALS) || name.starts_with(".ferry-tmp-state/uploads/")
                })
                .collect();
            assert_eq!(state, Vec::<String>::new());
            assert_eq!(bucket.open_uploads(), Vec::new());
        }
    }
}

/// Asserts that a transfer cut off after `cut` bytes, to begin again as
/// `began`, kept a partial whose record, `record`, vouches for where it
/// will begin; or kept none, if it is to begin from the start.
fn assert_kept(began: &Began, record: Option<PathBuf>, cut: u64) {
    match (began, record) {
        (Began::At(at), Some(record)) => {
            assert_eq!(recorded_prefix(&record), Some(*at), "cut at {cut}");
        }
        (Began::Fresh, None) => {}
        (began, record) => {
            panic!("cut at {cut}, to begin {began:?}: the record kept is {record:?}")
        }
    }
}

/// The offsets a transfer of [`BIG`] is cut at: before its body, after
/// one byte, either side of the first step, one byte short, and the whole
/// body without its trailer.
const CUTS: [u64; 6] = [0, 1, STEP - 1, STEP + 1, BIG - 1, BIG];

/// Issue 14: a put cut off anywhere, made again, resumes from the last
/// step the server synced before the cut, sends only the rest, and ends
/// byte-identical; its partial is gone once it took its name.
fn a_put_cut_off_at_any_offset_resumes_and_sends_at_most_the_rest_and_a_step(backing: Backing) {
    let (server, source) = server_with_upload_in(backing, BIG);
    for cut in CUTS {
        let name = format!("copy-{cut}.bin");
        let args = ["put", "big.bin", &name];
        cut_off(&server, &args, Cut::After(Way::Up, cut));
        assert_eq!(server.read_served(&name), None);
        let began = resumes_at(cut, BIG);
        let kept = match began {
            Began::At(at) => vec![at],
            _ => Vec::new(),
        };
        assert_eq!(kept_prefixes(&server), kept, "cut at {cut}");
        let sent = run_counted(&server, &args, Way::Up, &began);
        let rest = BIG - cut;
        assert!(
            sent <= rest + STEP + FRAMES,
            "cut at {cut}: the resume sent {sent} bytes of a body that had {rest} to go"
        );
        assert_uploaded_then_clear(&server, &name, &source);
    }
}

/// Issue 14: a get cut off anywhere, made again, resumes from the last
/// step the client synced, receives only the rest, and ends
/// byte-identical; before that, nothing is under the target's name.
fn a_get_cut_off_at_any_offset_resumes_and_receives_at_most_the_rest_and_a_step(backing: Backing) {
    let (server, source) = server_with_download_in(backing, BIG);
    let here = server.client_dir();
    for cut in CUTS {
        let name = format!("copy-{cut}.bin");
        let args = ["get", "big.bin", &name];
        cut_off(&server, &args, Cut::After(Way::Down, cut));
        assert!(!here.join(&name).exists());
        let began = resumes_at(cut, BIG);
        let (data, record) = client_partial(here, &name);
        assert_eq!(data.exists(), record.exists(), "cut at {cut}");
        assert_kept(&began, record.exists().then_some(record), cut);
        let received = run_counted(&server, &args, Way::Down, &began);
        let rest = BIG - cut;
        assert!(
            received <= rest + STEP + FRAMES,
            "cut at {cut}: the resume received {received} bytes of a body that had {rest} to go"
        );
        assert_same_file(&here.join(&name), &source);
        std::fs::remove_file(here.join(&name)).unwrap();
        assert_eq!(client_partials(here), Vec::<String>::new());
    }
}

/// Over TLS the body moves in chunks, not by zero-copy: a put and a get cut
/// off past the first step resume from it all the same.
#[test]
fn over_tls_a_cut_put_and_get_resume_from_their_last_step() {
    let mut server = BinaryServer::start_tls(&[]);
    let fingerprint = fingerprint_in(&server.start_line);
    let here = tempfile::tempdir().unwrap();
    let source = here.path().join("big.bin");
    write_source(&source, BIG, 3);
    // Bytes of TLS, not of the body: the cut falls a little short of
    // 100 MiB of it, and records add a little to what is counted.
    let cut = 100 * MIB;
    let tls_overhead = BIG / 256 + 64 * 1024;
    for (args, way, copy) in [
        (
            ["put", "big.bin", "copy.bin"],
            Way::Up,
            server.root.path().join("copy.bin"),
        ),
        (
            ["get", "copy.bin", "back.bin"],
            Way::Down,
            here.path().join("back.bin"),
        ),
    ] {
        let client = |port: u16| {
            let mut command = tls_client_at("127.0.0.1", port, &["--fingerprint", &fingerprint]);
            command.args(args);
            command
        };
        if way == Way::Down {
            // The copy is on the server by now, whole.
            assert_same_file(&server.root.path().join("copy.bin"), &source);
        }
        let relay = Relay::start(server.addr(), Framing::Opaque, Cut::After(way, cut));
        assert_failed(&run_in(here.path(), client(relay.port())));
        server.next_report_saying(" failed ");
        wait_until_let_go(server.root.path());
        let relay = Relay::counting(server.addr(), Framing::Opaque);
        let line = ok_line(&run_in(here.path(), client(relay.port())));
        assert_began(&line, &Began::At(STEP));
        assert_began(&server.next_report_saying(" ok "), &Began::At(STEP));
        let moved = relay.counted(way);
        assert!(
            moved <= BIG - cut + STEP + tls_overhead,
            "{args:?}: the resume moved {moved} bytes"
        );
        assert_same_file(&copy, &source);
    }
    assert_eq!(server_partials(server.root.path()), Vec::<String>::new());
    assert_eq!(client_partials(here.path()), Vec::<String>::new());
}

/// A file two steps and a little long, and where a receiver is held, and
/// killed, part way through it: past the two steps a receiver may run
/// ahead of its last checkpoint (PROTOCOL.md §5.13), so by then it has
/// recorded one.
const KILLED_SIZE: u64 = 2 * STEP + 16 * MIB;
const KILLED_AT: u64 = 2 * STEP + 2 * MIB;

/// Issue 14: a client killed outright (SIGKILL) mid-get leaves a partial
/// beside the target and nothing under its name; its last checkpoint is
/// proven by reading the partial again, and the rerun resumes from it.
fn a_get_whose_client_was_killed_resumes_from_the_partial_it_left(backing: Backing) {
    let (server, source) = server_with_download_in(backing, KILLED_SIZE);
    let here = server.client_dir();
    let relay = Relay::start(
        server.addr(),
        Framing::Plain,
        Cut::Hold(Way::Down, KILLED_AT),
    );
    let mut client = client_at("127.0.0.1", relay.port(), &["get", "big.bin"])
        .current_dir(here)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_, record) = client_partial(here, "big.bin");
    wait_for_a_step(&record);
    client.kill().unwrap();
    client.wait().unwrap();
    let kept = recorded_prefix(&record).unwrap();
    drop(relay);
    server.wait_for_reports(1);
    assert!(!here.join("big.bin").exists());
    assert!(client_partial(here, "big.bin").0.exists());

    // The client proved its partial by reading it: killed, it could not
    // seal it.
    let received = run_counted_seen(
        &server,
        &["get", "big.bin"],
        Way::Down,
        &Began::Proved(kept, kept),
        &Began::At(kept),
    );
    assert!(
        received <= KILLED_SIZE - kept + FRAMES,
        "received {received}"
    );
    assert_same_file(&here.join("big.bin"), &source);
    assert_eq!(client_partials(here), Vec::<String>::new());
}

/// Issue 14: a get held at any offset, its client then killed outright
/// (SIGKILL), made again: the client brought its checkpoint up to the
/// last whole step it had while it waited for more, so the rerun proves
/// that step by reading it, receives at most the rest and a step, and
/// ends byte-identical.
#[test]
fn a_get_whose_client_was_killed_while_held_at_any_offset_resumes_from_its_last_step() {
    let (server, source) = server_with_download(BIG);
    let here = server.client_dir();
    for cut in CUTS {
        let name = format!("copy-{cut}.bin");
        let args = ["get", "big.bin", &name];
        let reports = server.reports().len();
        let relay = Relay::start(server.addr(), Framing::Plain, Cut::Hold(Way::Down, cut));
        // A stall limit beyond the wait below: the client is still waiting
        // when it is killed, not given up with its partial sealed.
        let mut client = client_at("127.0.0.1", relay.port(), &args)
            .args(["--timeout", "60"])
            .current_dir(here)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (data, record) = client_partial(here, &name);
        let kept = cut.min(BIG - 1) / STEP * STEP;
        // Below a step there is no checkpoint to wait for, only the bytes.
        let what = format!("the client took the {cut} bytes the relay let through");
        eventually(&what, || {
            if kept > 0 {
                recorded_prefix(&record) == Some(kept)
            } else {
                has_received(&data, &record, BIG, cut)
            }
        });
        assert!(client.try_wait().unwrap().is_none(), "cut at {cut}");
        client.kill().unwrap();
        client.wait().unwrap();
        drop(relay);
        server.wait_for_reports(reports + 1);
        assert!(!here.join(&name).exists(), "cut at {cut}");

        // Killed, the client could not seal its partial: it proves its
        // step by reading it.
        let began = match kept {
            0 => Began::Fresh,
            at => Began::Proved(at, at),
        };
        let server_began = as_sender_says(&began, false);
        let received = run_counted_seen(&server, &args, Way::Down, &began, &server_began);
        let rest = BIG - cut;
        assert!(
            received <= rest + STEP + FRAMES,
            "cut at {cut}: the resume received {received} bytes of a body that had {rest} to go"
        );
        assert_same_file(&here.join(&name), &source);
        std::fs::remove_file(here.join(&name)).unwrap();
        assert_eq!(client_partials(here), Vec::<String>::new());
    }
}

/// Whether the client writing the partial `data` has received the first
/// `len` bytes of a body of `size`: its record is of that source (it had
/// the server's `Sending`) and the data is that long.
fn has_received(data: &Path, record: &Path, size: u64, len: u64) -> bool {
    let of_source = std::fs::read(record)
        .ok()
        .and_then(|bytes| Record::decode(&bytes))
        .is_some_and(|record| record.source_size == size);
    of_source && std::fs::metadata(data).is_ok_and(|meta| meta.len() >= len)
}

/// Issue 14: a server killed outright mid-put keeps its partial, and a
/// server started again on the same directory resumes it.
#[test]
fn a_put_whose_server_was_killed_resumes_on_the_server_started_again() {
    let server = BinaryServer::start(&[]);
    let here = tempfile::tempdir().unwrap();
    let source = here.path().join("big.bin");
    write_source(&source, KILLED_SIZE, 4);
    let relay = Relay::start(server.addr(), Framing::Plain, Cut::Hold(Way::Up, KILLED_AT));
    let mut client = client_at("127.0.0.1", relay.port(), &["put", "big.bin"])
        .current_dir(here.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the server made a partial", || {
        server_partials(server.root.path()).len() == 2
    });
    let (_, record) = server_partial(server.root.path());
    wait_for_a_step(&record);
    let root = server.kill_keeping_root();
    let kept = recorded_prefix(&record).unwrap();
    relay.sever();
    assert!(!wait_with_deadline(&mut client).success());
    assert!(!root.path().join("big.bin").exists());

    let mut server = BinaryServer::start_in(root);
    let relay = Relay::counting(server.addr(), Framing::Plain);
    let output = run_in(
        here.path(),
        client_at("127.0.0.1", relay.port(), &["put", "big.bin"]),
    );
    // The server proved its partial by reading it: killed, it could not
    // seal it. The client knows only where it went on.
    assert_began(&ok_line(&output), &Began::At(kept));
    assert_began(
        &server.next_report_saying("put"),
        &Began::Proved(kept, kept),
    );
    let sent = relay.counted(Way::Up);
    assert!(sent <= KILLED_SIZE - kept + FRAMES, "sent {sent}");
    assert_same_file(&server.root.path().join("big.bin"), &source);
    assert_eq!(server_partials(server.root.path()), Vec::<String>::new());
}

/// How a partial is damaged between two tries, and where the second
/// begins, as its receiver says: what cannot be proven is sent again, all
/// of it.
const DAMAGES: [(&str, Began); 5] = [
    ("a byte of the data flipped", Began::Over(UNPROVEN)),
    ("a byte of the record flipped", Began::Over(UNPROVEN)),
    ("the record removed", Began::Over(UNPROVEN)),
    ("the data cut short", Began::Over(UNPROVEN)),
    // Written after its record, the partial is read again, and its
    // step still proven.
    ("bytes appended to the data", Began::Proved(STEP, STEP)),
];

/// Where the sender says a transfer began that its receiver says began
/// as `began`: it knows nothing of what the receiver read again, nor why
/// the receiver asked for a whole file (`Fresh`, unless `knows_why`).
fn as_sender_says(began: &Began, knows_why: bool) -> Began {
    match began {
        Began::Proved(at, _) => Began::At(*at),
        Began::Over(_) if !knows_why => Began::Fresh,
        other => other.clone(),
    }
}

/// The bytes a transfer of `size` sends when it begins as `began`.
fn to_send(began: &Began, size: u64) -> u64 {
    match began {
        Began::At(at) | Began::Proved(at, _) => size - at,
        Began::Fresh | Began::Over(_) => size,
    }
}

/// Does `damage` to the partial `data` and its record.
fn damage(damage: &str, data: &Path, record: &Path) {
    assert_eq!(std::fs::metadata(data).unwrap().len(), STEP, "{damage}");
    match damage {
        "a byte of the data flipped" => flip_byte(data, STEP / 2),
        "a byte of the record flipped" => flip_byte(record, 20),
        "the record removed" => std::fs::remove_file(record).unwrap(),
        "the data cut short" => File::options()
            .write(true)
            .open(data)
            .unwrap()
            .set_len(STEP - 1)
            .unwrap(),
        "bytes appended to the data" => File::options()
            .append(true)
            .open(data)
            .unwrap()
            .write_all(b"not of the source")
            .unwrap(),
        other => panic!("no damage {other:?}"),
    }
}

/// Issue 14: a server's partial flipped, cut short, its record damaged or
/// gone: the put still ends byte-identical, sending again what the server
/// cannot prove.
#[test]
fn a_put_resumed_on_a_damaged_partial_sends_again_what_is_not_proven() {
    let (server, source) = server_with_upload(SMALL);
    for (case, (what, began)) in DAMAGES.iter().enumerate() {
        let name = format!("copy-{case}.bin");
        let args = ["put", "big.bin", &name];
        cut_off(&server, &args, Cut::After(Way::Up, PAST_STEP));
        let (data, record) = server_partial(server.root());
        damage(what, &data, &record);
        let client_began = as_sender_says(began, true);
        let sent = run_counted_seen(&server, &args, Way::Up, &client_began, began);
        assert!(
            sent <= to_send(began, SMALL) + FRAMES,
            "{what}: sent {sent}"
        );
        assert_uploaded_then_clear(&server, &name, &source);
    }
}

/// Issue 14: the client's partial flipped, cut short, its record damaged
/// or gone: the get still ends byte-identical, receiving again what the
/// client cannot prove.
fn a_get_resumed_on_a_damaged_partial_receives_again_what_is_not_proven(backing: Backing) {
    let (server, source) = server_with_download_in(backing, SMALL);
    let here = server.client_dir();
    for (case, (what, began)) in DAMAGES.iter().enumerate() {
        let name = format!("copy-{case}.bin");
        let args = ["get", "big.bin", &name];
        cut_off(&server, &args, Cut::After(Way::Down, PAST_STEP));
        let (data, record) = client_partial(here, &name);
        damage(what, &data, &record);
        // The server is asked for the whole file, or the rest: why the
        // client would not go on from its partial is the client's to say.
        let server_began = as_sender_says(began, false);
        let received = run_counted_seen(&server, &args, Way::Down, began, &server_began);
        let resent = to_send(began, SMALL);
        assert!(received <= resent + FRAMES, "{what}: received {received}");
        assert_same_file(&here.join(&name), &source);
        std::fs::remove_file(here.join(&name)).unwrap();
        assert_eq!(client_partials(here), Vec::<String>::new());
    }
}

/// Issue 14: a resumed put whose name another client took before its
/// trailer is refused `already-exists`, leaves that file be, and keeps no
/// partial: there is nothing left to resume.
fn a_put_whose_name_was_taken_meanwhile_is_refused_and_keeps_no_partial(backing: Backing) {
    let server = TestServer::start_in(backing);
    let data = pseudo_random_bytes(SMALL as usize, 8);
    let mut raw = RawClient::handshake(server.addr());
    raw.send(&Message::PutFrom {
        name: "taken.bin".into(),
        size: SMALL,
        modified: 0,
        restart: false,
    });
    assert!(
        matches!(raw.recv(), Some(Message::Resume { .. })),
        "expected a resume reply"
    );
    raw.send_raw(&data);
    eventually("the server recorded a step", || {
        kept_prefixes(&server) == [STEP]
    });
    server.write_served("taken.bin", b"first");
    raw.send(&Message::Trailer {
        digest: *blake3::hash(&data).as_bytes(),
    });
    let reply = raw.recv();
    assert!(
        matches!(
            reply,
            Some(Message::Error {
                code: ErrorCode::AlreadyExists,
                ..
            })
        ),
        "{reply:?}"
    );
    assert_eq!(server.read_served("taken.bin").unwrap(), b"first");
    assert_no_partials(&server);
}

store_matrix!(
    a_put_cut_off_at_any_offset_resumes_and_sends_at_most_the_rest_and_a_step,
    a_get_cut_off_at_any_offset_resumes_and_receives_at_most_the_rest_and_a_step,
    a_get_whose_client_was_killed_resumes_from_the_partial_it_left,
    a_get_resumed_on_a_damaged_partial_receives_again_what_is_not_proven,
    a_put_whose_name_was_taken_meanwhile_is_refused_and_keeps_no_partial,
    a_put_of_a_changed_source_starts_over_saying_why,
    restart_discards_the_partial_and_starts_over,
    a_refused_put_or_get_leaves_no_partial,
    a_put_made_again_at_once_after_a_cut_resumes,
);

/// How the source changes between two tries.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// A new modification time, the bytes the same.
    Touched,
    /// A byte more.
    Grown,
    /// A byte of the first step changed, its size and time kept.
    InPlace,
}

/// Makes `change` to the source at `path`.
fn change(path: &Path, change: Change) {
    let was = mtime(path);
    match change {
        Change::Touched => set_mtime(path, was - Duration::from_secs(3600)),
        Change::Grown => {
            let mut file = File::options().append(true).open(path).unwrap();
            file.write_all(b"!").unwrap();
        }
        Change::InPlace => {
            flip_byte(path, 12345);
            set_mtime(path, was);
        }
    }
}

/// Issue 14: a put whose source changed since the partial was made starts
/// over and says why; one changed in place, under the same size and
/// time, fails its digest on the server and is made once more from the
/// start by the client.
fn a_put_of_a_changed_source_starts_over_saying_why(backing: Backing) {
    let (server, source) = server_with_upload_in(backing, SMALL);
    let in_place = "the server's partial did not hold this file's first 64.0 MiB";
    for (case, (how, began)) in [
        (Change::Touched, Began::Over(SOURCE_CHANGED)),
        (Change::Grown, Began::Over(SOURCE_CHANGED)),
        (Change::InPlace, Began::Over(in_place)),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("copy-{case}.bin");
        let args = ["put", "big.bin", &name];
        cut_off(&server, &args, Cut::After(Way::Up, PAST_STEP));
        change(&source, how);
        let reports = server.reports().len();
        let relay = Relay::counting(server.addr(), Framing::Plain);
        let output = run_in(
            server.client_dir(),
            client_at("127.0.0.1", relay.port(), &args),
        );
        assert_began(&ok_line(&output), &began);
        assert_uploaded_then_clear(&server, &name, &source);
        // The server saw the source change; or the resumed body failed its
        // digest, and the client sent it all once more.
        let sent = relay.counted(Way::Up);
        match how {
            Change::InPlace => {
                let reports = server.wait_for_reports(reports + 2);
                let failed = reports[reports.len() - 2].to_string();
                assert!(failed.contains("failed digest-mismatch"), "{failed}");
                assert!(sent <= SMALL - STEP + SMALL + 2 * FRAMES, "sent {sent}");
            }
            _ => {
                let reports = server.wait_for_reports(reports + 1);
                assert_began(&reports[reports.len() - 1].to_string(), &began);
                assert!(sent <= SMALL + FRAMES, "sent {sent}");
            }
        }
    }
}

/// Issue 14: a get of a file that changed on the server since the partial
/// was made starts over and says why; one changed in place, under the
/// same size and time, fails its digest and is made once more from the
/// start.
#[test]
fn a_get_of_a_changed_file_starts_over_saying_why() {
    let (server, source) = server_with_download(SMALL);
    let here = server.client_dir();
    let in_place = "the partial's first 64.0 MiB did not match the server's file";
    for (case, (how, began)) in [
        (Change::Touched, Began::Over(SOURCE_CHANGED)),
        (Change::Grown, Began::Over(SOURCE_CHANGED)),
        (Change::InPlace, Began::Over(in_place)),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("copy-{case}.bin");
        let args = ["get", "big.bin", &name];
        cut_off(&server, &args, Cut::After(Way::Down, PAST_STEP));
        change(&source, how);
        let output = run_in(here, client_at("127.0.0.1", server.port(), &args));
        assert_began(&ok_line(&output), &began);
        assert_same_file(&here.join(&name), &source);
        std::fs::remove_file(here.join(&name)).unwrap();
        assert_eq!(client_partials(here), Vec::<String>::new());
    }
}

/// Issue 14: `--restart` discards the partial and starts over, saying so.
fn restart_discards_the_partial_and_starts_over(backing: Backing) {
    let (server, source) = server_with_upload_in(backing, SMALL);
    let put = ["put", "--restart", "big.bin"];
    cut_off(&server, &put, Cut::After(Way::Up, PAST_STEP));
    let sent = run_counted(&server, &put, Way::Up, &Began::Over(RESTARTED));
    assert!(sent >= SMALL, "sent {sent}");
    assert_served_copy(&server, "big.bin", &source);
    assert_no_partials(&server);

    let get = ["get", "--restart", "big.bin", "back.bin"];
    cut_off(&server, &get, Cut::After(Way::Down, PAST_STEP));
    let received = run_counted_seen(
        &server,
        &get,
        Way::Down,
        &Began::Over(RESTARTED),
        &Began::Fresh,
    );
    assert!(received >= SMALL, "received {received}");
    let here = server.client_dir();
    assert_same_file(&here.join("back.bin"), &source);
    assert_eq!(client_partials(here), Vec::<String>::new());
}

/// Issue 14: a partial is bound to the token that made it. Another token
/// cannot resume it, see it or list it, and its own put of the name
/// leaves it be; a client without a token is not let in at all. The
/// owner resumes it after all that.
#[test]
fn another_token_cannot_resume_see_or_list_a_partial() {
    let (_keys, tokens) = alice_and_bob_token_file();
    // No penalty for the refused client without a token below: the
    // address would be refused for a while after it (tests/flood.rs).
    let mut server = BinaryServer::start(&[
        "--token-file",
        tokens.to_str().unwrap(),
        "--max-penalty",
        "0",
    ]);
    let here = tempfile::tempdir().unwrap();
    let source = here.path().join("big.bin");
    write_source(&source, SMALL, 5);
    let as_who = |token: Option<&str>, port: u16, args: &[&str]| {
        let mut command = client_at("127.0.0.1", port, args);
        if let Some(token) = token {
            command.env("FERRY_TOKEN", token);
        }
        run_in(here.path(), command)
    };
    let relay = Relay::start(
        server.addr(),
        Framing::Plain,
        Cut::After(Way::Up, PAST_STEP),
    );
    assert_failed(&as_who(Some(ALICE), relay.port(), &["put", "big.bin"]));
    server.next_report_saying("put");
    wait_until_let_go(server.root.path());
    let (data, record) = server_partial(server.root.path());
    let kept = std::fs::read(&record).unwrap();
    let key = data.file_name().unwrap().to_str().unwrap().to_owned();

    // Bob sees nothing, can name nothing, and starts from the start.
    let listed = as_who(Some(BOB), server.port, &["list", "-l"]);
    assert_exit(&listed, 0);
    assert!(listed.stdout.is_empty(), "{}", describe(&listed));
    for name in [
        format!("{PARTIALS_DIR}/{key}"),
        format!("{PARTIALS_DIR}/{key}.rec"),
    ] {
        let output = as_who(Some(BOB), server.port, &["get", &name, "stolen"]);
        assert_exit_saying(&output, 1, "bad-name");
        assert!(!here.path().join("stolen").exists());
    }
    let relay = Relay::counting(server.addr(), Framing::Plain);
    let output = as_who(Some(BOB), relay.port(), &["put", "big.bin"]);
    assert_began(&ok_line(&output), &Began::Fresh);
    assert!(relay.counted(Way::Up) >= SMALL);
    server.next_report_saying("put");
    // Without a token, nothing at all.
    let output = as_who(None, server.port, &["list"]);
    assert_exit_saying(&output, 4, "requires a token");

    // Alice's partial is as she left it, and hers to resume once the name
    // is free again.
    assert_eq!(std::fs::read(&record).unwrap(), kept);
    assert_exit(&as_who(Some(BOB), server.port, &["delete", "big.bin"]), 0);
    let output = as_who(Some(ALICE), server.port, &["put", "big.bin"]);
    assert_began(&ok_line(&output), &Began::At(STEP));
    assert_same_file(&server.root.path().join("big.bin"), &source);
    assert_eq!(server_partials(server.root.path()), Vec::<String>::new());
}

/// A binary server holding the partial of a put of `big.bin` (a SMALL
/// source of `seed`, made in the returned directory) that a relay cut
/// just past the first step, once the server has let go of it.
fn server_with_cut_put(seed: u64) -> (BinaryServer, tempfile::TempDir) {
    let mut server = BinaryServer::start(&[]);
    let here = tempfile::tempdir().unwrap();
    write_source(&here.path().join("big.bin"), SMALL, seed);
    let relay = Relay::start(
        server.addr(),
        Framing::Plain,
        Cut::After(Way::Up, PAST_STEP),
    );
    assert_failed(&put_big(here.path(), relay.port()));
    server.next_report_saying("put");
    wait_until_let_go(server.root.path());
    (server, here)
}

/// Puts `big.bin` from `here` to the plain server on `port`.
fn put_big(here: &Path, port: u16) -> Output {
    run_in(here, client_at("127.0.0.1", port, &["put", "big.bin"]))
}

/// Issue 14: a partial whose record is older than `--partial-ttl` (24 h
/// by default) is swept when the server starts; the put then starts from
/// the start.
#[test]
fn an_expired_partial_is_swept_at_start() {
    let (server, here) = server_with_cut_put(6);
    let (data, record) = server_partial(server.root.path());
    let root = server.kill_keeping_root();
    let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
    set_mtime(&data, two_days_ago);
    set_mtime(&record, two_days_ago);

    let mut server = BinaryServer::start_in(root);
    let swept = server.next_report_saying("cleanup");
    assert!(
        swept.contains("1 partial uploads older than 24h"),
        "{swept}"
    );
    assert_eq!(server_partials(server.root.path()), Vec::<String>::new());
    assert_began(&ok_line(&put_big(here.path(), server.port)), &Began::Fresh);
}

/// A partial younger than its time to live survives a restart of the
/// server: only the expired one goes.
#[test]
fn a_partial_within_its_time_to_live_is_kept_across_a_restart() {
    let (server, here) = server_with_cut_put(7);
    let (_, record) = server_partial(server.root.path());
    let root = server.kill_keeping_root();
    set_mtime(&record, SystemTime::now() - Duration::from_secs(3600));
    let server = BinaryServer::start_in_with(root, &["--partial-ttl", "2"]);
    assert_began(
        &ok_line(&put_big(here.path(), server.port)),
        &Began::At(STEP),
    );
}

/// Issue 14: a refused request leaves nothing, not even an empty partial:
/// a put to a taken name, a get of a missing one.
fn a_refused_put_or_get_leaves_no_partial(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("taken.txt", b"first");
    write_file(server.client_dir(), "taken.txt", b"second");
    let output = server.run_client(&["put", "taken.txt"]);
    assert_exit_saying(&output, 1, "already-exists");
    assert_no_partials(&server);

    let output = server.run_client(&["get", "missing.txt"]);
    assert_exit_saying(&output, 1, "not-found");
    assert_eq!(files_under(server.client_dir()), ["taken.txt"]);
}

/// Issue 14: the same put made again at once, as soon as the cut one has
/// failed, resumes: the server still holds its partial while it seals
/// it, and the new try waits for it (a while) rather than being turned
/// away as `busy`.
fn a_put_made_again_at_once_after_a_cut_resumes(backing: Backing) {
    let (server, source) = server_with_upload_in(backing, SMALL);
    for case in 0..4 {
        let name = format!("copy-{case}.bin");
        let args = ["put", "big.bin", &name];
        let relay = Relay::start(
            server.addr(),
            Framing::Plain,
            Cut::After(Way::Up, PAST_STEP),
        );
        assert_failed(&run_in(
            server.client_dir(),
            client_at("127.0.0.1", relay.port(), &args),
        ));
        drop(relay);
        let output = run_in(server.client_dir(), server.client(&args));
        assert_began(&ok_line(&output), &Began::At(STEP));
        assert_uploaded_then_clear(&server, &name, &source);
    }
}

/// The lease the one partial record in `server`'s bucket names: `None`
/// if no try holds it.
fn lease_of(server: &TestServer) -> Option<String> {
    let bucket = server.bucket().unwrap();
    let keys: Vec<String> = (bucket.keys().into_iter())
        .filter(|key| key.starts_with(&format!("{S3_PREFIX}/{S3_PARTIALS}")))
        .collect();
    let [key] = keys.as_slice() else {
        panic!("not one partial record: {keys:?}");
    };
    let record: serde_json::Value = serde_json::from_slice(&bucket.read(key).unwrap()).unwrap();
    record["lease"].as_str().map(str::to_owned)
}

/// Issue 17: a client killed outright (SIGKILL) mid-put through one server
/// leaves nothing under the name and its multipart upload open; the same
/// put through another server on the bucket resumes it from the last
/// whole step the first recorded, sends only the rest, and the object is
/// byte-identical.
#[test]
fn a_put_whose_client_was_killed_resumes_through_another_server_on_the_bucket() {
    if S3Server::shared().is_none() {
        return;
    }
    let (first, source) = server_with_upload_in(Backing::S3, KILLED_SIZE);
    let second = TestServer::start_on_bucket(Arc::clone(first.bucket().unwrap()), |_| {});
    let relay = Relay::start(first.addr(), Framing::Plain, Cut::Hold(Way::Up, KILLED_AT));
    let mut client = client_at("127.0.0.1", relay.port(), &["put", "big.bin"])
        .current_dir(first.client_dir())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the first server recorded a step", || {
        kept_prefixes(&first)
            .first()
            .is_some_and(|len| *len >= STEP)
    });
    client.kill().unwrap();
    client.wait().unwrap();
    drop(relay);
    first.wait_for_reports(1);
    let [kept] = kept_prefixes(&first)[..] else {
        panic!("not one partial kept");
    };
    assert_eq!(first.read_served("big.bin"), None);
    assert_eq!(first.bucket().unwrap().open_uploads().len(), 1);

    // The same client directory: the source as it was, time and all.
    let relay = Relay::counting(second.addr(), Framing::Plain);
    let output = run_in(
        first.client_dir(),
        client_at("127.0.0.1", relay.port(), &["put", "big.bin"]),
    );
    assert_began(&ok_line(&output), &Began::At(kept));
    assert_began(&second.wait_for_reports(1)[0].to_string(), &Began::At(kept));
    let sent = relay.counted(Way::Up);
    assert!(sent <= KILLED_SIZE - kept + FRAMES, "sent {sent}");
    assert_served_copy(&second, "big.bin", &source);
    assert_no_partials(&second);
}

/// Issue 17: while a try through one server holds a partial (its lease),
/// the same put through another server on the bucket is answered `busy`;
/// once the first try's client is gone, the other resumes the partial.
#[test]
fn two_servers_resuming_one_partial_one_holds_it_and_the_other_is_busy() {
    if S3Server::shared().is_none() {
        return;
    }
    let (first, source) = server_with_upload_in(Backing::S3, SMALL);
    let second = TestServer::start_on_bucket(Arc::clone(first.bucket().unwrap()), |_| {});
    let put = ["put", "big.bin"];
    cut_off(&first, &put, Cut::After(Way::Up, PAST_STEP));
    eventually("the cut try let go of its lease", || {
        lease_of(&first).is_none()
    });

    let relay = Relay::start(first.addr(), Framing::Plain, Cut::Hold(Way::Up, MIB));
    let mut holder = client_at("127.0.0.1", relay.port(), &put)
        .current_dir(first.client_dir())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the first server took the lease", || {
        lease_of(&first).is_some()
    });
    let output = run_in(
        first.client_dir(),
        client_at("127.0.0.1", second.port(), &put),
    );
    assert_failed(&output);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("busy"),
        "{}",
        describe(&output)
    );

    holder.kill().unwrap();
    holder.wait().unwrap();
    drop(relay);
    first.wait_for_reports(2);
    let relay = Relay::counting(second.addr(), Framing::Plain);
    let output = run_in(
        first.client_dir(),
        client_at("127.0.0.1", relay.port(), &put),
    );
    assert_began(&ok_line(&output), &Began::At(STEP));
    assert!(relay.counted(Way::Up) <= SMALL - STEP + FRAMES);
    assert_served_copy(&second, "big.bin", &source);
    assert_no_partials(&second);
}

/// Issue 17: a partial on a bucket that no try touched for the time to
/// live is swept by any server on the bucket: its multipart upload is
/// aborted and its record removed, and the put then starts from the
/// start.
#[test]
fn an_expired_partial_on_a_bucket_is_swept_with_its_upload() {
    if S3Server::shared().is_none() {
        return;
    }
    let (first, source) = server_with_upload_in(Backing::S3, SMALL);
    let put = ["put", "big.bin"];
    cut_off(&first, &put, Cut::After(Way::Up, PAST_STEP));
    let bucket = Arc::clone(first.bucket().unwrap());
    assert_eq!(kept_prefixes(&first), [STEP]);
    assert_eq!(bucket.open_uploads().len(), 1);

    // A time to live of nothing: the partial is older than that.
    let sweeper = TestServer::start_on_bucket(Arc::clone(&bucket), |config| {
        config.partial_ttl = Duration::ZERO;
    });
    let swept = sweeper.wait_for_reports(1)[0].to_string();
    assert!(swept.contains("cleanup"), "{swept}");
    assert_eq!(bucket.open_uploads(), Vec::new());
    assert_no_partials(&first);
    drop(sweeper);
    let output = run_in(first.client_dir(), first.client(&put));
    assert_began(&ok_line(&output), &Began::Fresh);
    assert_served_copy(&first, "big.bin", &source);
}
