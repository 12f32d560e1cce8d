//! Disk accounting against a hostile client (issue 12): a declared size
//! claims nothing on its own, and a refused or failed put leaves no
//! directory behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{RawClient, TestServer};
use ferry::protocol::{ErrorCode, Message};
use ferry::store::StoreSpec;

fn expect_error(reply: Option<Message>, expected: ErrorCode) {
    match reply {
        Some(Message::Error { code, .. }) if code == expected => {}
        other => panic!("expected {expected}, got {other:?}"),
    }
}

/// Every directory under `root`, relative. Polled while the server may be
/// removing directories: one that goes while it is read is not counted.
fn directories_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot read {}: {e}", dir.display()),
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                let path = entry.path();
                found.push(path.strip_prefix(root).unwrap().display().to_string());
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn refused_deep_puts_create_no_directories() {
    let server = TestServer::start();
    let mut client = RawClient::handshake(server.addr());
    for n in 0..200 {
        let name = format!("{}/f", vec![format!("d{n}"); 100].join("/"));
        // More than any disk has free: refused before any body.
        client.send(&Message::Put {
            name,
            size: u64::MAX / 2,
        });
        expect_error(client.recv(), ErrorCode::InsufficientStorage);
    }
    assert_eq!(directories_under(server.root()), Vec::<String>::new());
}

#[test]
fn a_failed_put_removes_the_directories_it_made_and_no_others() {
    let server = TestServer::start();
    std::fs::create_dir(server.root().join("kept")).unwrap();
    let mut client = RawClient::handshake(server.addr());
    client.send(&Message::Put {
        name: "kept/new/deeper/f.bin".into(),
        size: 5,
    });
    assert_eq!(client.recv(), Some(Message::Proceed));
    assert_eq!(
        directories_under(server.root()),
        ["kept", "kept/new", "kept/new/deeper"]
    );
    client.send_raw(b"hello");
    client.send(&Message::Trailer {
        digest: *blake3::hash(b"HELLO").as_bytes(),
    });
    expect_error(client.recv(), ErrorCode::DigestMismatch);
    assert_eq!(directories_under(server.root()), ["kept"]);

    // A client gone mid-body: the same.
    let mut vanishing = RawClient::handshake(server.addr());
    vanishing.send(&Message::Put {
        name: "gone/f.bin".into(),
        size: 1000,
    });
    assert_eq!(vanishing.recv(), Some(Message::Proceed));
    vanishing.send_raw(&[1; 10]);
    drop(vanishing);
    common::eventually("the made directory to go", || {
        directories_under(server.root()) == ["kept"]
    });

    // A put that lands keeps what it made.
    assert_eq!(client.put("kept/new/f.bin", b"landed"), Message::Done);
    assert_eq!(directories_under(server.root()), ["kept", "kept/new"]);
}

/// A small filesystem of its own, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A tmpfs of `mib` MiB, or `None` where this process may not mount
    /// (not root, or no privilege in this sandbox).
    fn mount(mib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallDisk { path, _dir: dir })
    }

    fn used(&self) -> u64 {
        let fs = rustix::fs::statvfs(&self.path).unwrap();
        (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Forty uploads that each declare nearly the whole disk and send a byte
/// claim about a byte each: a real put still fits (issue 12: 40 such
/// connections used to fill a 1.8 GiB filesystem).
#[test]
fn declared_sizes_claim_no_disk_ahead_of_their_data() {
    let Some(disk) = SmallDisk::mount(64) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let root = disk.path.join("served");
    let served = root.clone();
    let server = TestServer::start_with(move |config| config.store = StoreSpec::Local(served));
    let before = disk.used();
    let mut tricklers = Vec::new();
    for n in 0..40 {
        let mut client = RawClient::handshake(server.addr());
        client.send(&Message::Put {
            name: format!("claim-{n}.bin"),
            size: 60 << 20,
        });
        assert_eq!(client.recv(), Some(Message::Proceed), "upload {n}");
        client.send_raw(&[7]);
        tricklers.push(client);
    }
    common::eventually("every upload's first byte to be written", || {
        disk.used() > before
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let claimed = disk.used() - before;
    assert!(claimed <= 4 << 20, "{claimed} bytes claimed");
    let mut legit = RawClient::handshake(server.addr());
    assert_eq!(legit.put("real.bin", &vec![1; 1 << 20]), Message::Done);
}
