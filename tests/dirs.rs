//! Directories and the requests of protocol 3, seen from outside: mkdir,
//! rmdir, rename, recursive delete, stat, listings that say what they
//! leave out, names as people type them, who may do which, shutdown of
//! idle connections, and the new frames on a raw socket.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{
    assert_exit, assert_exit_saying, describe, files_under, frame, wait_with_deadline, write_file,
    Backing, BinaryServer, RawClient, TestServer,
};
use ferry::protocol::{EntryKind, ErrorCode, FailureKind, Info, Link, Message, RequestKind};
use ferry::report::{Detail, Outcome};
use ferry::security::access::{Access, ServerMode, Tokens};

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command failed with exit 1 and the failure kind `kind` in
/// its report line.
fn assert_refused(output: &Output, kind: &str) {
    assert_exit_saying(output, 1, &format!("failed {kind}"));
}

/// A server, and a directory outside its root holding `canary.txt`, which
/// the symlink `out` in the root leads to.
struct World {
    server: TestServer,
    outside: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let server = TestServer::start();
        let outside = tempfile::tempdir().unwrap();
        write_file(outside.path(), "canary.txt", b"alive");
        symlink(outside.path(), server.root().join("out")).unwrap();
        World { server, outside }
    }

    fn root(&self) -> &Path {
        self.server.root()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.server.run_client(args)
    }

    /// Asserts nothing outside the root was created, changed or removed.
    fn assert_outside_untouched(&self) {
        assert_eq!(files_under(self.outside.path()), ["canary.txt"]);
        assert_eq!(
            std::fs::read(self.outside.path().join("canary.txt")).unwrap(),
            b"alive"
        );
    }
}

fn is_symlink(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
}

fn mkdir(root: &Path, name: &str) {
    std::fs::create_dir_all(root.join(name)).unwrap();
}

fn expect_error(reply: Option<Message>, expected: ErrorCode, what: &str) {
    match reply {
        Some(Message::Error { code, .. }) if code == expected => {}
        other => panic!("{what}: expected {expected}, got {other:?}"),
    }
}

// ---------------------------------------------------------------- mkdir

fn mkdir_makes_a_directory(backing: Backing) {
    let server = TestServer::start_in(backing);
    let output = server.run_client(&["mkdir", "new dir"]);
    assert_exit_saying(&output, 0, "mkdir \"new dir\" ok");
    assert_eq!(server.served_tree(), ["new dir"]);
}

fn mkdir_of_a_taken_name_is_already_exists(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.make_served_dir("dir");
    server.write_served("file", b"f");
    for taken in ["dir", "file"] {
        assert_refused(&server.run_client(&["mkdir", taken]), "already-exists");
    }
    assert_eq!(server.read_served("file").unwrap(), b"f");
    assert_eq!(server.served_tree(), ["dir", "file"]);
}

fn mkdir_under_a_missing_parent_is_not_found_and_hints_at_p(backing: Backing) {
    let server = TestServer::start_in(backing);
    let output = server.run_client(&["mkdir", "a/b"]);
    assert_refused(&output, "not-found");
    assert!(
        stderr_of(&output).contains("mkdir -p"),
        "{}",
        describe(&output)
    );
    assert!(server.served_tree().is_empty());
}

fn mkdir_p_makes_the_parents_and_an_existing_directory_is_fine(backing: Backing) {
    let server = TestServer::start_in(backing);
    assert_exit(&server.run_client(&["mkdir", "-p", "a/b/c"]), 0);
    assert_eq!(server.served_tree(), ["a", "a/b", "a/b/c"]);
    for again in ["a", "a/b", "a/b/c", "./a/b/"] {
        assert_exit(&server.run_client(&["mkdir", "-p", again]), 0);
    }
    assert_exit(&server.run_client(&["mkdir", "--parents", "a/d"]), 0);
    assert_eq!(server.served_tree(), ["a", "a/b", "a/b/c", "a/d"]);
}

fn mkdir_through_or_onto_a_regular_file_fails(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("file", b"f");
    let through = server.run_client(&["mkdir", "-p", "file/sub/deeper"]);
    assert_refused(&through, "not-a-directory");
    let onto = server.run_client(&["mkdir", "-p", "file"]);
    assert_refused(&onto, "already-exists");
    let under = server.run_client(&["mkdir", "file/sub"]);
    assert_refused(&under, "not-a-directory");
    assert_eq!(server.served_tree(), ["file"]);
    assert_eq!(server.read_served("file").unwrap(), b"f");
}

#[test]
fn mkdir_through_a_symlink_leading_outside_is_bad_name_and_makes_nothing_there() {
    let world = World::new();
    for args in [
        &["mkdir", "-p", "out/x/y"][..],
        &["mkdir", "-p", "out/x"],
        &["mkdir", "out/x"],
    ] {
        assert_refused(&world.run(args), "bad-name");
    }
    world.assert_outside_untouched();
    assert_eq!(world.server.root_files(), ["out"]);
}

#[test]
fn mkdir_p_through_a_symlink_to_a_directory_inside_works() {
    let server = TestServer::start();
    mkdir(server.root(), "real");
    symlink("real", server.root().join("link")).unwrap();
    assert_exit(&server.run_client(&["mkdir", "-p", "link/x/y"]), 0);
    assert!(server.root().join("real/x/y").is_dir());
    assert!(is_symlink(&server.root().join("link")));
    assert_eq!(server.root_files(), ["link", "real", "real/x", "real/x/y"]);
}

// ---------------------------------------------------------------- rmdir

fn rmdir_removes_an_empty_directory(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.make_served_dir("a/empty");
    assert_exit_saying(
        &server.run_client(&["rmdir", "a/empty"]),
        0,
        "rmdir \"a/empty\" ok",
    );
    assert_eq!(server.served_tree(), ["a"]);
}

fn rmdir_of_a_directory_with_anything_in_it_is_not_empty_and_removes_nothing(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("full/file.txt", b"x");
    server.make_served_dir("nested/sub");
    for full in ["full", "nested"] {
        assert_refused(&server.run_client(&["rmdir", full]), "not-empty");
    }
    assert_eq!(
        server.served_tree(),
        ["full", "full/file.txt", "nested", "nested/sub"]
    );
}

fn rmdir_of_a_file_is_not_a_directory(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("file.txt", b"x");
    assert_refused(
        &server.run_client(&["rmdir", "file.txt"]),
        "not-a-directory",
    );
    assert_eq!(server.served_tree(), ["file.txt"]);
}

#[test]
fn rmdir_of_a_symlink_to_an_empty_directory_is_refused_and_both_are_kept() {
    let server = TestServer::start();
    mkdir(server.root(), "target");
    symlink("target", server.root().join("link")).unwrap();
    for name in ["link", "link/"] {
        assert_refused(&server.run_client(&["rmdir", name]), "not-a-directory");
    }
    assert!(is_symlink(&server.root().join("link")));
    assert!(server.root().join("target").is_dir());
}

fn rmdir_of_the_root_is_bad_name_and_the_root_stays(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("kept.txt", b"k");
    for root in ["/", ".", "./"] {
        assert_refused(&server.run_client(&["rmdir", root]), "bad-name");
    }
    // The server refuses it too, whatever the client.
    let mut raw = RawClient::handshake(server.addr());
    for root in ["", "/", ".", "./"] {
        raw.send(&Message::RemoveDir { name: root.into() });
        expect_error(raw.recv(), ErrorCode::BadName, &format!("rmdir {root:?}"));
    }
    assert_eq!(server.served_tree(), ["kept.txt"]);
}

// ---------------------------------------------------------------- rename

fn rename_gives_a_file_its_new_name_in_place(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("a.txt", b"content");
    let inode = |name: &str| server.root().join(name).metadata().unwrap().ino();
    let before = (backing == Backing::Local).then(|| inode("a.txt"));
    let output = server.run_client(&["rename", "a.txt", "b.txt"]);
    assert_exit_saying(&output, 0, "rename \"a.txt\" ok -> \"b.txt\"");
    assert_eq!(server.read_served("b.txt").unwrap(), b"content");
    // On a disk, the same file under a new name: renamed, not copied and
    // deleted. S3 has no rename: the object is copied, then deleted.
    if let Some(before) = before {
        assert_eq!(inode("b.txt"), before);
    }
    assert_eq!(server.served_tree(), ["b.txt"]);
    let reports = server.wait_for_reports(1);
    assert_eq!(
        reports[0].outcome,
        Outcome::Ok(Detail::Renamed("b.txt".into()))
    );
}

#[test]
fn rename_moves_a_directory_with_everything_in_it() {
    let server = TestServer::start();
    write_file(server.root(), "d/x/y.txt", b"deep");
    mkdir(server.root(), "elsewhere");
    let inode = server.root().join("d").metadata().unwrap().ino();
    assert_exit(&server.run_client(&["mv", "d", "elsewhere/moved/"]), 0);
    let moved = server.root().join("elsewhere/moved");
    assert_eq!(moved.metadata().unwrap().ino(), inode);
    assert_eq!(std::fs::read(moved.join("x/y.txt")).unwrap(), b"deep");
    assert_eq!(
        server.root_files(),
        [
            "elsewhere",
            "elsewhere/moved",
            "elsewhere/moved/x",
            "elsewhere/moved/x/y.txt"
        ]
    );
}

#[test]
fn rename_onto_any_existing_name_is_already_exists_and_never_moves_into_a_directory() {
    let server = TestServer::start();
    let root = server.root();
    write_file(root, "source.txt", b"source");
    mkdir(root, "source-dir");
    write_file(root, "taken.txt", b"taken");
    mkdir(root, "empty-dir");
    write_file(root, "full-dir/inside.txt", b"inside");
    symlink("nowhere", root.join("dangling")).unwrap();
    let before = server.root_files();
    for from in ["source.txt", "source-dir"] {
        for to in [
            "taken.txt",
            "empty-dir",
            "empty-dir/",
            "full-dir",
            "dangling",
        ] {
            let output = server.run_client(&["rename", from, to]);
            assert_refused(&output, "already-exists");
        }
    }
    assert_eq!(server.root_files(), before);
    assert_eq!(std::fs::read(root.join("source.txt")).unwrap(), b"source");
    assert_eq!(std::fs::read(root.join("taken.txt")).unwrap(), b"taken");
    assert_eq!(
        std::fs::read_link(root.join("dangling")).unwrap(),
        Path::new("nowhere")
    );
}

fn rename_of_a_missing_name_or_into_a_missing_directory_is_not_found(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("a.txt", b"a");
    assert_refused(
        &server.run_client(&["rename", "missing.txt", "b.txt"]),
        "not-found",
    );
    assert_refused(
        &server.run_client(&["rename", "a.txt", "no-such-dir/b.txt"]),
        "not-found",
    );
    assert_eq!(server.served_tree(), ["a.txt"]);
}

#[test]
fn rename_of_a_directory_into_itself_is_refused() {
    let server = TestServer::start();
    write_file(server.root(), "a/b/file", b"f");
    symlink("a", server.root().join("alias")).unwrap();
    let before = server.root_files();
    // Lexically beneath itself, and beneath itself through a symlink.
    for to in ["a/c", "a/b/c", "alias/c"] {
        let output = server.run_client(&["rename", "a", to]);
        assert_refused(&output, "bad-name");
        assert!(
            stderr_of(&output).contains("into itself"),
            "{}",
            describe(&output)
        );
    }
    assert_eq!(server.root_files(), before);
}

fn rename_from_or_to_the_root_is_refused(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("x", b"x");
    for (from, to) in [(".", "y"), ("/", "y"), ("./", "y"), ("x", "."), ("x", "/")] {
        assert_refused(&server.run_client(&["rename", from, to]), "bad-name");
    }
    let mut raw = RawClient::handshake(server.addr());
    for (from, to) in [(".", "y"), ("", "y"), ("x", "."), ("x", "")] {
        raw.send(&Message::Rename {
            from: from.into(),
            to: to.into(),
        });
        expect_error(
            raw.recv(),
            ErrorCode::BadName,
            &format!("{from:?} -> {to:?}"),
        );
    }
    assert_eq!(server.served_tree(), ["x"]);
}

#[test]
fn renaming_a_symlink_renames_the_link_not_its_target() {
    let server = TestServer::start();
    write_file(server.root(), "target.txt", b"target");
    mkdir(server.root(), "target-dir");
    symlink("target.txt", server.root().join("link")).unwrap();
    symlink("target-dir", server.root().join("dir-link")).unwrap();
    assert_exit(&server.run_client(&["rename", "link", "renamed"]), 0);
    assert_exit(
        &server.run_client(&["rename", "dir-link", "renamed-dir"]),
        0,
    );
    let root = server.root();
    assert!(is_symlink(&root.join("renamed")));
    assert_eq!(
        std::fs::read_link(root.join("renamed")).unwrap(),
        Path::new("target.txt")
    );
    assert!(is_symlink(&root.join("renamed-dir")));
    assert_eq!(std::fs::read(root.join("target.txt")).unwrap(), b"target");
    assert_eq!(
        server.root_files(),
        ["renamed", "renamed-dir", "target-dir", "target.txt"]
    );
}

#[test]
fn rename_through_a_symlink_leading_outside_is_bad_name_and_changes_nothing() {
    let world = World::new();
    write_file(world.root(), "mine.txt", b"mine");
    for (from, to) in [
        ("out/canary.txt", "stolen.txt"),
        ("mine.txt", "out/mine.txt"),
        ("mine.txt", "out/new-dir/mine.txt"),
    ] {
        assert_refused(&world.run(&["rename", from, to]), "bad-name");
    }
    world.assert_outside_untouched();
    assert_eq!(world.server.root_files(), ["mine.txt", "out"]);
    assert_eq!(
        std::fs::read(world.root().join("mine.txt")).unwrap(),
        b"mine"
    );
}

// ---------------------------------------------------------------- delete -r

fn delete_r_removes_a_tree_and_says_how_much_went(backing: Backing) {
    let server = TestServer::start_in(backing);
    let root = server.root();
    server.write_served("keep.txt", b"keep");
    server.write_served("tree/a.txt", b"a");
    server.write_served("tree/sub/b.txt", b"b");
    server.make_served_dir("tree/sub/deeper/deepest");
    // Symlinks only on a disk: S3 has none.
    let files = match backing {
        Backing::Local => {
            symlink("a.txt", root.join("tree/link-to-a")).unwrap();
            symlink("nowhere", root.join("tree/sub/dangling")).unwrap();
            4
        }
        Backing::S3 => 2,
    };
    let output = server.run_client(&["delete", "-r", "tree"]);
    // Files: a.txt, b.txt (and the two links); directories: tree, sub,
    // deeper, deepest.
    assert_exit_saying(
        &output,
        0,
        &format!("delete \"tree\" ok removed {files} files and 4 directories"),
    );
    assert_eq!(server.served_tree(), ["keep.txt"]);
    let reports = server.wait_for_reports(1);
    assert_eq!(
        reports[0].outcome,
        Outcome::Ok(Detail::Removed {
            files,
            directories: 4
        })
    );
}

#[test]
fn delete_r_removes_names_a_listing_leaves_out_and_special_files() {
    let world = World::new();
    let tree = world.root().join("tree");
    mkdir(world.root(), "tree/sub");
    add_unlistable_names(&tree.join("sub"), world.outside.path());
    make_fifo(&tree.join("fifo"));
    let output = world.run(&["delete", "-r", "tree"]);
    // Two links, two odd names and the fifo; tree and sub.
    assert_exit_saying(&output, 0, "removed 5 files and 2 directories");
    assert_eq!(world.server.root_files(), ["out"]);
    world.assert_outside_untouched();
}

#[test]
fn delete_r_removes_a_link_leading_outside_as_a_link_and_the_canary_survives() {
    let world = World::new();
    write_file(world.root(), "tree/file.txt", b"f");
    symlink(world.outside.path(), world.root().join("tree/escape")).unwrap();
    let relative = format!("../{}", "../".repeat(12));
    symlink(relative, world.root().join("tree/escape-up")).unwrap();
    let output = world.run(&["delete", "-r", "tree"]);
    assert_exit_saying(&output, 0, "removed 3 files and 1 directory");
    world.assert_outside_untouched();
    assert_eq!(world.server.root_files(), ["out"]);
    // Nor does a name through it reach anything there.
    assert_refused(&world.run(&["delete", "-r", "out/canary.txt"]), "bad-name");
    world.assert_outside_untouched();
    // And the top-level link to outside, deleted with -r, goes as a link.
    assert_exit_saying(
        &world.run(&["delete", "-r", "out"]),
        0,
        "removed 1 file and 0 directories",
    );
    world.assert_outside_untouched();
    assert!(world.server.root_files().is_empty());
}

#[test]
fn delete_r_removes_a_link_to_a_directory_inside_as_a_link_and_keeps_its_target() {
    let server = TestServer::start();
    let root = server.root();
    write_file(root, "kept/x.txt", b"x");
    write_file(root, "tree/f.txt", b"f");
    symlink("../kept", root.join("tree/to-kept")).unwrap();
    symlink("kept", root.join("alias")).unwrap();
    assert_exit_saying(
        &server.run_client(&["delete", "-r", "tree"]),
        0,
        "removed 2 files and 1 directory",
    );
    assert_exit_saying(
        &server.run_client(&["delete", "-r", "alias"]),
        0,
        "removed 1 file and 0 directories",
    );
    assert_eq!(server.root_files(), ["kept", "kept/x.txt"]);
    assert_eq!(std::fs::read(root.join("kept/x.txt")).unwrap(), b"x");
}

fn delete_r_of_a_file_removes_the_file(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("d/file.txt", b"f");
    assert_exit_saying(
        &server.run_client(&["delete", "--recursive", "d/file.txt"]),
        0,
        "removed 1 file and 0 directories",
    );
    assert_eq!(server.served_tree(), ["d"]);
}

fn delete_without_r_of_a_directory_is_a_directory_and_says_to_use_r(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("d/file.txt", b"f");
    server.make_served_dir("empty");
    for dir in ["d", "empty"] {
        let output = server.run_client(&["delete", dir]);
        assert_refused(&output, "is-a-directory");
        assert!(
            stderr_of(&output).contains("delete -r"),
            "{}",
            describe(&output)
        );
    }
    assert_eq!(server.served_tree(), ["d", "d/file.txt", "empty"]);
}

/// No client may delete another's transfer in progress (PROTOCOL.md §7):
/// a recursive delete leaves its temporary file, and says why the
/// directory holding it stays.
#[test]
fn delete_r_leaves_an_upload_in_progress_alone() {
    let server = TestServer::start();
    write_file(server.root(), "d/old.txt", b"old");
    let mut uploader = RawClient::handshake(server.addr());
    uploader.send(&Message::Put {
        name: "d/new.bin".into(),
        size: 6,
    });
    assert_eq!(uploader.recv(), Some(Message::Proceed));
    uploader.send_raw(b"hal");
    let output = server.run_client(&["delete", "-r", "d"]);
    assert_exit_saying(&output, 1, "not-empty: an upload is in progress inside it");
    assert!(!server.root().join("d/old.txt").exists());
    // The upload goes on, and lands.
    uploader.send_raw(b"f!?");
    uploader.send(&Message::Trailer {
        digest: *blake3::hash(b"half!?").as_bytes(),
    });
    assert_eq!(uploader.recv(), Some(Message::Done));
    assert_eq!(
        std::fs::read(server.root().join("d/new.bin")).unwrap(),
        b"half!?"
    );
}

/// A recursive delete holds one open directory per level, never the path
/// to each one (quadratic in depth): a tree deeper than its bound is
/// refused with a way out, and one within it goes whole (issue 12).
#[test]
fn delete_r_walks_deep_trees_within_its_bound_and_refuses_deeper_ones() {
    let server = TestServer::start();
    let deep = |levels: usize| vec!["d"; levels].join("/");
    std::fs::create_dir_all(server.root().join("ok").join(deep(1000))).unwrap();
    write_file(
        &server.root().join("ok").join(deep(1000)),
        "leaf.txt",
        b"leaf",
    );
    let output = server.run_client(&["delete", "-r", "ok"]);
    assert_exit(&output, 0);
    assert!(
        stderr_of(&output).contains("ok removed 1 file and 1001 directories"),
        "{}",
        describe(&output)
    );
    std::fs::create_dir_all(server.root().join("too").join(deep(1100))).unwrap();
    let output = server.run_client(&["delete", "-r", "too"]);
    assert_exit_saying(
        &output,
        1,
        "deeper than 1024 levels; delete a deep part of it first",
    );
    let part = format!("too/{}", deep(200));
    assert_exit(&server.run_client(&["delete", "-r", &part]), 0);
    assert_exit(&server.run_client(&["delete", "-r", "too"]), 0);
    assert!(server.root_files().is_empty());
}

fn delete_r_of_the_root_is_refused_and_the_root_stays(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("d/file.txt", b"f");
    for root in [".", "/", "./", "./."] {
        assert_refused(&server.run_client(&["delete", "-r", root]), "bad-name");
    }
    let mut raw = RawClient::handshake(server.addr());
    for root in ["", ".", "/"] {
        raw.send(&Message::Delete {
            name: root.into(),
            recursive: true,
        });
        expect_error(
            raw.recv(),
            ErrorCode::BadName,
            &format!("delete -r {root:?}"),
        );
    }
    assert_eq!(server.served_tree(), ["d", "d/file.txt"]);
}

// The tests of the sections above and of stat below that run on both
// stores (one store_matrix! per file).
store_matrix!(
    mkdir_makes_a_directory,
    mkdir_of_a_taken_name_is_already_exists,
    mkdir_under_a_missing_parent_is_not_found_and_hints_at_p,
    mkdir_p_makes_the_parents_and_an_existing_directory_is_fine,
    mkdir_through_or_onto_a_regular_file_fails,
    rmdir_removes_an_empty_directory,
    rmdir_of_a_directory_with_anything_in_it_is_not_empty_and_removes_nothing,
    rmdir_of_a_file_is_not_a_directory,
    rmdir_of_the_root_is_bad_name_and_the_root_stays,
    rename_gives_a_file_its_new_name_in_place,
    rename_of_a_missing_name_or_into_a_missing_directory_is_not_found,
    rename_from_or_to_the_root_is_refused,
    delete_r_removes_a_tree_and_says_how_much_went,
    delete_r_of_a_file_removes_the_file,
    delete_without_r_of_a_directory_is_a_directory_and_says_to_use_r,
    delete_r_of_the_root_is_refused_and_the_root_stays,
    stat_of_a_directory_and_of_the_root_says_directory,
    stat_of_a_missing_name_is_not_found_and_prints_nothing,
    list_takes_a_directory_name_as_people_type_it,
    list_refuses_empty_components_and_absolute_names,
);

// ---------------------------------------------------------------- stat

/// 2020-09-13T12:26:40Z.
const LONG_AGO: u64 = 1_600_000_000;

fn set_modified(path: &Path, seconds: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
        .unwrap();
}

#[test]
fn stat_of_a_file_shows_its_kind_size_time_and_mode() {
    let server = TestServer::start();
    let path = write_file(server.root(), "dir/report.txt", b"thirteen byte");
    set_modified(&path, LONG_AGO);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = server.run_client(&["stat", "dir/report.txt"]);
    assert_exit_saying(&output, 0, "stat \"dir/report.txt\" ok");
    assert_eq!(
        stdout_of(&output),
        "name:     dir/report.txt\n\
         kind:     file\n\
         size:     13\n\
         modified: 2020-09-13T12:26:40Z\n\
         mode:     0640\n\
         blake3:   not known to the server yet (a get computes it)\n"
    );
}

#[test]
fn stat_shows_the_digest_once_a_get_of_a_settled_file_has_computed_it() {
    let server = TestServer::start();
    let data = b"settled long ago, hashed once";
    let path = write_file(server.root(), "old.txt", data);
    set_modified(&path, LONG_AGO);
    let before = server.run_client(&["stat", "old.txt"]);
    assert_exit(&before, 0);
    assert!(
        stdout_of(&before).contains("blake3:   not known"),
        "{}",
        describe(&before)
    );
    assert_exit(&server.run_client(&["get", "old.txt"]), 0);
    // The digest is kept before the get is reported.
    server.wait_for_reports(2);
    let after = server.run_client(&["stat", "old.txt"]);
    assert_exit(&after, 0);
    let line = format!("blake3:   {}\n", blake3::hash(data).to_hex());
    assert!(stdout_of(&after).contains(&line), "{}", describe(&after));
}

fn stat_of_a_directory_and_of_the_root_says_directory(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("d/inner.txt", b"in d");
    let output = server.run_client(&["stat", "d/"]);
    assert_exit(&output, 0);
    let shown = stdout_of(&output);
    assert!(
        shown.starts_with("name:     d\nkind:     directory\nsize:     0\n"),
        "{shown}"
    );
    for root in [
        &["stat"][..],
        &["stat", "/"],
        &["stat", "."],
        &["stat", "./"],
    ] {
        let output = server.run_client(root);
        assert_exit(&output, 0);
        let shown = stdout_of(&output);
        assert!(
            shown.starts_with("name:     /\nkind:     directory\n"),
            "{root:?}: {shown}"
        );
    }
}

fn make_fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

#[test]
fn stat_of_a_fifo_says_other() {
    let server = TestServer::start();
    make_fifo(&server.root().join("pipe"));
    let output = server.run_client(&["stat", "pipe"]);
    assert_exit(&output, 0);
    assert!(
        stdout_of(&output).contains("kind:     other (fifo, socket or device)\n"),
        "{}",
        describe(&output)
    );
}

fn stat_of_a_missing_name_is_not_found_and_prints_nothing(backing: Backing) {
    let server = TestServer::start_in(backing);
    let output = server.run_client(&["stat", "missing.txt"]);
    assert_refused(&output, "not-found");
    assert!(output.stdout.is_empty(), "{}", describe(&output));
}

#[test]
fn stat_of_a_symlink_says_so_and_shows_what_it_leads_to_inside() {
    let world = World::new();
    write_file(world.root(), "d/target.txt", b"12345");
    symlink("d/target.txt", world.root().join("file-link")).unwrap();
    symlink("d", world.root().join("dir-link")).unwrap();
    symlink("nowhere", world.root().join("dangling")).unwrap();
    let file = world.run(&["stat", "file-link"]);
    assert_exit(&file, 0);
    assert!(
        stdout_of(&file).contains("kind:     file, through a symlink\nsize:     5\n"),
        "{}",
        describe(&file)
    );
    let dir = world.run(&["stat", "dir-link"]);
    assert_exit(&dir, 0);
    assert!(
        stdout_of(&dir).contains("kind:     directory, through a symlink\n"),
        "{}",
        describe(&dir)
    );
    // A link leading outside, or nowhere, is not followed: only the link
    // itself is described (issue 11: a shell looking before a delete must
    // see a link as a link).
    for link in ["out", "dangling"] {
        let shown = world.run(&["stat", link]);
        assert_exit(&shown, 0);
        let text = stdout_of(&shown);
        assert!(
            text.contains("kind:     symlink leading outside the served directory, or nowhere\n"),
            "{}",
            describe(&shown)
        );
        assert!(!text.contains("blake3"), "{}", describe(&shown));
    }
}

// ---------------------------------------------------------------- list

#[test]
fn list_of_a_file_shows_that_file() {
    let server = TestServer::start();
    let path = write_file(server.root(), "d/five.txt", b"12345");
    set_modified(&path, LONG_AGO);
    let long = server.run_client(&["list", "-l", "d/five.txt"]);
    assert_exit_saying(&long, 0, "ok 1 entry");
    assert_eq!(
        stdout_of(&long),
        "             5  2020-09-13T12:26:40Z  five.txt\n"
    );
    let short = server.run_client(&["list", "d/five.txt"]);
    assert_exit(&short, 0);
    assert_eq!(stdout_of(&short), "five.txt\n");
}

/// Creates, in `dir`, one name of every kind a listing leaves out: a
/// symlink leading to `outside`, a dangling symlink, a name with a control
/// character and one that is not UTF-8.
fn add_unlistable_names(dir: &Path, outside: &Path) {
    symlink(outside, dir.join("escape")).unwrap();
    symlink("nowhere", dir.join("dangling")).unwrap();
    let control = dir.join(OsStr::from_bytes(b"bad\x01name"));
    std::fs::write(control, b"x").unwrap();
    let not_utf8 = dir.join(OsStr::from_bytes(b"bad\xffname"));
    std::fs::write(not_utf8, b"x").unwrap();
}

#[test]
fn list_leaves_out_what_it_cannot_show_and_says_why_on_stderr() {
    let world = World::new();
    write_file(world.root(), "good.txt", b"g");
    mkdir(world.root(), "sub");
    add_unlistable_names(world.root(), world.outside.path());
    for args in [&["list"][..], &["list", "-l"]] {
        let output = world.run(args);
        assert_exit_saying(&output, 0, "ok 2 entries");
        let names: Vec<String> = stdout_of(&output)
            .lines()
            .map(|line| line.rsplit("  ").next().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["good.txt", "sub/"], "{}", describe(&output));
        let stderr = stderr_of(&output);
        // `out`, `escape` and `dangling`.
        let links =
            "3 names not shown: symlinks leading outside the served directory, or nowhere\n";
        let unusable =
            "2 names not shown: not valid UTF-8, or holding control characters or backslashes\n";
        assert_eq!(stderr.matches(links).count(), 1, "{args:?}\n{stderr}");
        assert_eq!(stderr.matches(unusable).count(), 1, "{args:?}\n{stderr}");
        assert_eq!(stderr.matches("not shown").count(), 2, "{args:?}\n{stderr}");
    }
    world.assert_outside_untouched();
}

#[test]
fn list_of_a_subdirectory_counts_each_left_out_name_in_the_singular() {
    let world = World::new();
    write_file(world.root(), "sub/good.txt", b"g");
    symlink("nowhere", world.root().join("sub/dangling")).unwrap();
    std::fs::write(world.root().join("sub/back\\slash"), b"x").unwrap();
    let output = world.run(&["list", "sub"]);
    assert_exit(&output, 0);
    assert_eq!(stdout_of(&output), "good.txt\n");
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(
            "1 name not shown: symlinks leading outside the served directory, or nowhere\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "1 name not shown: not valid UTF-8, or holding control characters or backslashes\n"
        ),
        "{stderr}"
    );
}

#[test]
fn list_of_the_root_follows_symlinks_inside_it() {
    let world = World::new();
    write_file(world.root(), "d/f.txt", b"f");
    symlink("d", world.root().join("dir-link")).unwrap();
    symlink("d/f.txt", world.root().join("file-link")).unwrap();
    let output = world.run(&["list"]);
    assert_exit(&output, 0);
    assert_eq!(stdout_of(&output), "d/\ndir-link/\nfile-link\n");
}

#[test]
fn list_of_a_subdirectory_follows_symlinks_leading_elsewhere_inside_the_root() {
    let server = TestServer::start();
    let root = server.root();
    write_file(root, "shared/s.txt", b"s");
    write_file(root, "top.txt", b"t");
    write_file(root, "d/own.txt", b"o");
    symlink("../shared", root.join("d/up-dir")).unwrap();
    symlink("../top.txt", root.join("d/up-file")).unwrap();
    // get and stat follow these links: they lead to names inside the root.
    assert_exit(&server.run_client(&["stat", "d/up-file"]), 0);
    assert_exit(&server.run_client(&["get", "d/up-dir/s.txt"]), 0);
    let output = server.run_client(&["list", "d"]);
    assert_exit(&output, 0);
    assert_eq!(
        stdout_of(&output),
        "own.txt\nup-dir/\nup-file\n",
        "{}",
        describe(&output)
    );
    assert!(
        !stderr_of(&output).contains("not shown"),
        "{}",
        describe(&output)
    );
}

fn list_takes_a_directory_name_as_people_type_it(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("d/x.txt", b"x");
    for typed in ["d", "./d", "d/", "d/./", "./d/.", "d/."] {
        let output = server.run_client(&["list", typed]);
        assert_exit(&output, 0);
        assert_eq!(stdout_of(&output), "x.txt\n", "list {typed:?}");
    }
    for root in ["/", ".", "./"] {
        let output = server.run_client(&["list", root]);
        assert_exit(&output, 0);
        assert_eq!(stdout_of(&output), "d/\n", "list {root:?}");
    }
}

fn list_refuses_empty_components_and_absolute_names(backing: Backing) {
    let server = TestServer::start_in(backing);
    server.write_served("a/b/x.txt", b"x");
    for bad in ["a//b", "//", "//a", "/a", "a/../a"] {
        let output = server.run_client(&["list", bad]);
        assert_refused(&output, "bad-name");
        assert!(output.stdout.is_empty(), "list {bad:?}");
    }
    let mut raw = RawClient::handshake(server.addr());
    raw.send(&Message::List {
        dir: "a//b".into(),
        long: false,
    });
    expect_error(raw.recv(), ErrorCode::BadName, "list a//b");
}

// ---------------------------------------------------------------- names

#[test]
fn put_get_and_delete_take_names_as_people_type_them() {
    let server = TestServer::start();
    write_file(server.client_dir(), "a.txt", b"aaa");
    let run = |args: &[&str]| {
        let output = server.run_client(args);
        assert_exit(&output, 0);
        output
    };
    run(&["put", "a.txt", "./x"]);
    run(&["put", "a.txt", "d/./y"]);
    run(&["put", "a.txt", "d/"]);
    run(&["put", "a.txt", "./"]);
    assert_eq!(server.root_files(), ["a.txt", "d", "d/a.txt", "d/y", "x"]);

    run(&["get", "./x"]);
    run(&["get", "d/./y", "got-y"]);
    run(&["get", "./d/a.txt/", "got-a"]);
    for local in ["x", "got-y", "got-a"] {
        assert_eq!(
            std::fs::read(server.client_dir().join(local)).unwrap(),
            b"aaa"
        );
    }

    run(&["delete", "x/./"]);
    run(&["delete", "./d/y"]);
    run(&["delete", "-r", "./d/"]);
    assert_eq!(server.root_files(), ["a.txt"]);
}

#[test]
fn put_with_hostile_remote_names_is_bad_name_and_stores_nothing() {
    let server = TestServer::start();
    write_file(server.client_dir(), "a.txt", b"aaa");
    // (`.` and `/` name the served directory: the file lands there under
    // its own name, as `cp a.txt .` does; see tests/transfer.rs.)
    for hostile in ["a//b", "../a.txt", "/etc/a.txt"] {
        assert_refused(&server.run_client(&["put", "a.txt", hostile]), "bad-name");
    }
    assert!(server.root_files().is_empty());
}

// ---------------------------------------------------------------- access

/// One request of the access matrix: the client's arguments, and whether
/// its effect is there (on the server's disk, the client's, or stdout).
struct Operation {
    name: &'static str,
    args: &'static [&'static str],
    happened: fn(root: &Path, local: &Path, stdout: &str) -> bool,
}

const OPERATIONS: [Operation; 9] = [
    Operation {
        name: "put",
        args: &["put", "upload.txt", "put.txt"],
        happened: |root, _, _| root.join("put.txt").exists(),
    },
    Operation {
        name: "get",
        args: &["get", "file.txt", "got.txt"],
        happened: |_, local, _| local.join("got.txt").exists(),
    },
    Operation {
        name: "list",
        args: &["list"],
        happened: |_, _, stdout| stdout.contains("file.txt"),
    },
    Operation {
        name: "stat",
        args: &["stat", "file.txt"],
        happened: |_, _, stdout| stdout.contains("kind:     file"),
    },
    Operation {
        name: "mkdir",
        args: &["mkdir", "made"],
        happened: |root, _, _| root.join("made").is_dir(),
    },
    Operation {
        name: "rmdir",
        args: &["rmdir", "empty"],
        happened: |root, _, _| !root.join("empty").exists(),
    },
    Operation {
        name: "rename",
        args: &["rename", "old.txt", "new.txt"],
        happened: |root, _, _| root.join("new.txt").exists() && !root.join("old.txt").exists(),
    },
    Operation {
        name: "delete",
        args: &["delete", "victim.txt"],
        happened: |root, _, _| !root.join("victim.txt").exists(),
    },
    Operation {
        name: "delete -r",
        args: &["delete", "-r", "tree"],
        happened: |root, _, _| !root.join("tree").exists(),
    },
];

const READS: &[&str] = &["get", "list", "stat"];
const CREATES: &[&str] = &["put", "mkdir"];
const ALL_BUT_REMOVALS: &[&str] = &["put", "get", "list", "stat", "mkdir"];
const EVERYTHING: &[&str] = &[
    "put",
    "get",
    "list",
    "stat",
    "mkdir",
    "rmdir",
    "rename",
    "delete",
    "delete -r",
];

/// Fills a served directory and a client directory with what every
/// operation of the matrix needs.
fn prepare_matrix(root: &Path, local: &Path) {
    write_file(local, "upload.txt", b"upload");
    write_file(root, "file.txt", b"file");
    write_file(root, "old.txt", b"old");
    write_file(root, "victim.txt", b"victim");
    write_file(root, "tree/sub/x.txt", b"x");
    mkdir(root, "empty");
}

/// Runs every operation through `run` and checks that those in `allowed`
/// succeed with their effect, and the others exit 1 saying `forbidden`
/// with nothing changed on either side. `after` sees each outcome too.
fn check_matrix(
    label: &str,
    root: &Path,
    local: &Path,
    allowed: &[&str],
    run: &dyn Fn(&[&str]) -> Output,
    after: &mut dyn FnMut(&str, bool),
) {
    for op in &OPERATIONS {
        let is_allowed = allowed.contains(&op.name);
        let (root_before, local_before) = (files_under(root), files_under(local));
        let output = run(op.args);
        let happened = (op.happened)(root, local, &stdout_of(&output));
        let what = format!("{label}: {}\n{}", op.name, describe(&output));
        if is_allowed {
            assert_eq!(output.status.code(), Some(0), "{what}");
            assert!(happened, "allowed but without effect; {what}");
        } else {
            assert_eq!(output.status.code(), Some(1), "{what}");
            assert!(stderr_of(&output).contains("failed forbidden"), "{what}");
            assert!(!happened, "{what}");
            assert!(output.stdout.is_empty(), "{what}");
            assert_eq!(files_under(root), root_before, "{what}");
            assert_eq!(files_under(local), local_before, "{what}");
        }
        after(op.name, is_allowed);
    }
}

const RW_TOKEN: &str = "dirs-rw-token-5a1c9e0b7d";
const RO_TOKEN: &str = "dirs-ro-token-3f8e2a6c1b";
const WO_TOKEN: &str = "dirs-wo-token-9b4d7f0e2c";

/// The three tokens, from a file of mode 0600 as the server requires.
fn tokens() -> Tokens {
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("tokens");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    let text = format!("{RW_TOKEN} rw\n{RO_TOKEN} ro\n{WO_TOKEN} wo\n");
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    Tokens::load(&path).unwrap()
}

#[test]
fn each_server_mode_and_token_mode_allows_exactly_its_requests() {
    let cases: [(&str, ServerMode, Option<&str>, &[&str]); 7] = [
        ("open", ServerMode::Full, None, EVERYTHING),
        ("--read-only", ServerMode::ReadOnly, None, READS),
        ("--no-delete", ServerMode::NoDelete, None, ALL_BUT_REMOVALS),
        ("--upload-only", ServerMode::UploadOnly, None, CREATES),
        ("rw token", ServerMode::Full, Some(RW_TOKEN), EVERYTHING),
        ("ro token", ServerMode::Full, Some(RO_TOKEN), READS),
        ("wo token", ServerMode::Full, Some(WO_TOKEN), CREATES),
    ];
    for (label, mode, token, allowed) in cases {
        let server = TestServer::start_with(|config| {
            config.access = Arc::new(Access {
                tokens: token.map(|_| tokens()),
                mode,
            });
        });
        prepare_matrix(server.root(), server.client_dir());
        let run = |args: &[&str]| {
            let mut command = server.client(args);
            if let Some(token) = token {
                command.env("FERRY_TOKEN", token);
            }
            command.output().unwrap()
        };
        let mut requests = 0;
        let mut check_report = |name: &str, is_allowed: bool| {
            requests += 1;
            let report = server.wait_for_reports(requests).pop().unwrap();
            let forbidden = FailureKind::Code(ErrorCode::Forbidden);
            match &report.outcome {
                Outcome::Ok(_) if is_allowed => {}
                Outcome::Failed { kind, .. } if !is_allowed && *kind == forbidden => {}
                other => panic!("{label}: {name}: the server reported {other:?}"),
            }
        };
        check_matrix(
            label,
            server.root(),
            server.client_dir(),
            allowed,
            &run,
            &mut check_report,
        );
    }
}

#[test]
fn the_mode_flags_reach_the_server() {
    for (flag, allowed) in [
        ("--read-only", READS),
        ("--no-delete", ALL_BUT_REMOVALS),
        ("--upload-only", CREATES),
    ] {
        let server = BinaryServer::start(&[flag]);
        let local = tempfile::tempdir().unwrap();
        prepare_matrix(server.root.path(), local.path());
        let run = |args: &[&str]| {
            common::client_at("127.0.0.1", server.port, args)
                .current_dir(local.path())
                .output()
                .unwrap()
        };
        check_matrix(
            flag,
            server.root.path(),
            local.path(),
            allowed,
            &run,
            &mut |_, _| {},
        );
    }
}

#[test]
fn server_help_names_what_each_mode_allows() {
    let output = common::ferry_command()
        .args(["server", "--help"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let help = stdout_of(&output);
    let line_of = |flag: &str| {
        help.lines()
            .find(|line| line.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("no {flag} in\n{help}"))
            .to_owned()
    };
    let read_only = line_of("--read-only");
    assert!(read_only.contains("stat"), "{read_only}");
    let no_delete = line_of("--no-delete");
    assert!(
        no_delete.contains("rmdir") && no_delete.contains("rename"),
        "{no_delete}"
    );
    let upload_only = line_of("--upload-only");
    assert!(upload_only.contains("mkdir"), "{upload_only}");
}

// ---------------------------------------------------------------- shutdown

#[test]
fn at_sigterm_an_idle_connection_reads_shutting_down_and_is_closed() {
    let mut server = BinaryServer::start(&["--grace", "30"]);
    let mut idle = RawClient::handshake(server.addr());
    // The connection is in use: a request on it is answered.
    idle.send(&Message::Stat { name: "".into() });
    assert!(matches!(idle.recv(), Some(Message::Info(_))));

    let signalled = Instant::now();
    server.signal("TERM");
    expect_error(idle.recv(), ErrorCode::ShuttingDown, "after SIGTERM");
    // A request now is not answered: the connection is closed.
    let _ = std::io::Write::write_all(&mut idle.stream, &frame(&Message::Stat { name: "".into() }));
    assert_eq!(idle.recv(), None);
    let status = wait_with_deadline(&mut server.child);
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    // Nothing was in flight: no waiting out the 30 s of grace.
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM"
    );
    let (_, stderr) = server.stop_and_collect();
    assert_eq!(
        stderr.matches("ferry server shutting down").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("cancelling requests"), "{stderr}");
}

#[test]
fn at_sigterm_a_connection_that_has_not_said_hello_does_not_hold_the_server() {
    let mut server = BinaryServer::start(&["--grace", "5"]);
    // Connected, preamble sent, no hello yet: idle, nothing in flight.
    let mut silent = RawClient::connect(server.addr());
    silent.send_raw(&ferry::protocol::Preamble::OURS.to_bytes());
    let mut theirs = [0; ferry::protocol::PREAMBLE_LEN];
    silent.read_exact(&mut theirs);
    let signalled = Instant::now();
    server.signal("TERM");
    let status = wait_with_deadline(&mut server.child);
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    let (_, stderr) = server.stop_and_collect();
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM\n{stderr}"
    );
    assert!(!stderr.contains("cancelling requests"), "{stderr}");
}

// ---------------------------------------------------------------- raw frames

#[test]
fn the_welcome_names_every_request() {
    let server = TestServer::start();
    let (_client, answer) = RawClient::hello(server.addr(), "");
    let Some(Message::Welcome { requests }) = answer else {
        panic!("not a welcome: {answer:?}");
    };
    let mut tags: Vec<u8> = requests.iter().map(|kind| kind.tag()).collect();
    tags.sort_unstable();
    // As PROTOCOL.md §4 lists them.
    let listed = [
        0x01, 0x02, 0x03, 0x04, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
    ];
    assert_eq!(tags, listed);
    for kind in RequestKind::ALL {
        assert!(requests.contains(&kind), "{kind} missing");
    }
}

#[test]
fn stat_over_the_wire_answers_info() {
    let server = TestServer::start();
    let path = write_file(server.root(), "f.bin", &[7; 1000]);
    set_modified(&path, LONG_AGO);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
    let mut raw = RawClient::handshake(server.addr());
    for root in ["", "/", ".", "./"] {
        raw.send(&Message::Stat { name: root.into() });
        match raw.recv() {
            Some(Message::Info(Info {
                kind: EntryKind::Directory,
                size: 0,
                digest: None,
                ..
            })) => {}
            other => panic!("stat {root:?}: {other:?}"),
        }
    }
    raw.send(&Message::Stat {
        name: "f.bin".into(),
    });
    assert_eq!(
        raw.recv(),
        Some(Message::Info(Info {
            kind: EntryKind::File,
            size: 1000,
            modified: LONG_AGO as i64,
            mode: 0o604,
            link: Link::None,
            digest: None,
        }))
    );
    raw.send(&Message::Stat {
        name: "missing".into(),
    });
    expect_error(raw.recv(), ErrorCode::NotFound, "stat missing");
}

#[test]
fn directory_requests_over_the_wire_answer_done_removed_or_an_error_that_keeps_the_connection() {
    let server = TestServer::start();
    write_file(server.root(), "file.txt", b"f");
    let mut raw = RawClient::handshake(server.addr());
    raw.send(&Message::MakeDir {
        name: "a/b/c".into(),
        parents: true,
    });
    assert_eq!(raw.recv(), Some(Message::Done));
    assert_eq!(raw.put("a/b/c/one.txt", b"1"), Message::Done);
    assert_eq!(raw.put("a/two.txt", b"2"), Message::Done);

    raw.send(&Message::RemoveDir { name: "a".into() });
    expect_error(raw.recv(), ErrorCode::NotEmpty, "rmdir a");
    raw.send(&Message::Rename {
        from: "a".into(),
        to: "z".into(),
    });
    assert_eq!(raw.recv(), Some(Message::Done));
    raw.send(&Message::Delete {
        name: "z".into(),
        recursive: true,
    });
    assert_eq!(
        raw.recv(),
        Some(Message::Removed {
            files: 2,
            directories: 3
        })
    );
    raw.send(&Message::Delete {
        name: "file.txt".into(),
        recursive: false,
    });
    assert_eq!(raw.recv(), Some(Message::Done));
    assert!(server.root_files().is_empty());
}
