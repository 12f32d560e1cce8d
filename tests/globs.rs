//! Remote globs expanded by the client over a real server's listings
//! (issue 13): what matches, in what order, and what matches nothing.

mod common;

use common::{Backing, TestServer};
use ferry::client::{expand_remote, Client, GlobError, Progress, Upload};
use ferry::protocol::{NameError, RemoteName};

struct Quiet;

impl Progress for Quiet {
    fn begin(&mut self, _total: u64) {}
    fn advance(&mut self, _bytes: u64) {}
}

/// Files put through the client, into directories it made.
const FILES: &[&str] = &[
    "a.txt",
    "b.txt",
    "c.txt",
    "d.txt",
    ".hidden.txt",
    "ünï cöde.txt",
    "notes.md",
    "dfile",
    "d1/x.txt",
    "d1/y.txt",
    "d2/x.txt",
    "d3/z.txt",
];
const DIRS: &[&str] = &["d1", "d2", "d3"];

/// Runs `test` with a library client connected to a server holding
/// `FILES`.
fn with_served(test: impl AsyncFnOnce(&mut Client)) {
    let server = TestServer::start();
    server.with_library_client(async |client| {
        fill(client, &server).await;
        test(client).await;
    });
}

async fn fill(client: &mut Client, server: &TestServer) {
    for dir in DIRS {
        let name = RemoteName::parse(dir).unwrap();
        client.make_dir(&name, false).await.unwrap();
    }
    for (index, file) in FILES.iter().enumerate() {
        let local = server.client_dir().join(format!("source-{index}"));
        std::fs::write(&local, file.as_bytes()).unwrap();
        let name = RemoteName::parse(file).unwrap();
        client
            .put(Upload::open(&local).unwrap(), &name, &mut Quiet)
            .await
            .unwrap();
    }
}

async fn expand(client: &mut Client, pattern: &str) -> Vec<String> {
    match expand_remote(client, pattern).await {
        Ok(names) => names,
        Err(e) => panic!("{pattern:?}: {e}"),
    }
}

#[test]
fn globs_match_sorted_names_and_leave_hidden_ones_out() {
    with_served(async |client| {
        for (pattern, expected) in [
            (
                "*.txt",
                &["a.txt", "b.txt", "c.txt", "d.txt", "ünï cöde.txt"][..],
            ),
            ("?.txt", &["a.txt", "b.txt", "c.txt", "d.txt"]),
            ("[a-c].txt", &["a.txt", "b.txt", "c.txt"]),
            ("[!a-c].txt", &["d.txt"]),
            ("*.md", &["notes.md"]),
            (".*", &[".hidden.txt"]),
            ("./b*", &["b.txt"]),
            (
                "*",
                &[
                    "a.txt",
                    "b.txt",
                    "c.txt",
                    "d.txt",
                    "d1",
                    "d2",
                    "d3",
                    "dfile",
                    "notes.md",
                    "ünï cöde.txt",
                ],
            ),
        ] {
            assert_eq!(expand(client, pattern).await, expected, "{pattern:?}");
        }
    });
}

#[test]
fn a_glob_in_a_directory_component_lists_every_matching_directory() {
    with_served(async |client| {
        for (pattern, expected) in [
            // d3 has no x.txt, and the file dfile is not descended into.
            ("d*/x.txt", &["d1/x.txt", "d2/x.txt"][..]),
            ("d*/*", &["d1/x.txt", "d1/y.txt", "d2/x.txt", "d3/z.txt"]),
            ("d[13]/?.txt", &["d1/x.txt", "d1/y.txt", "d3/z.txt"]),
            ("d1/*", &["d1/x.txt", "d1/y.txt"]),
            // A trailing `/` matches directories only, and stays, as in sh.
            ("d*/", &["d1/", "d2/", "d3/"]),
        ] {
            assert_eq!(expand(client, pattern).await, expected, "{pattern:?}");
        }
    });
}

#[test]
fn a_pattern_without_globs_is_returned_as_is() {
    with_served(async |client| {
        // Not checked against the server: the request that uses it says
        // whether it exists.
        assert_eq!(expand(client, "missing.txt").await, ["missing.txt"]);
        assert_eq!(expand(client, "d1/x.txt").await, ["d1/x.txt"]);
        // Escapes are removed.
        assert_eq!(expand(client, "a\\*b").await, ["a*b"]);
    });
}

#[test]
fn a_glob_that_matches_nothing_is_no_match() {
    with_served(async |client| {
        for pattern in [
            "*.jpg",
            "[x-z].txt",
            "d*/nothing",
            "missing/*",
            // A file where the pattern needs a directory.
            "a.txt/*",
            "dfile*/x.txt",
            "*.md/",
        ] {
            match expand_remote(client, pattern).await {
                Err(GlobError::NoMatch { pattern: said }) => assert_eq!(said, pattern),
                other => panic!("{pattern:?}: {other:?}"),
            }
        }
        let message = expand_remote(client, "*.jpg").await.unwrap_err();
        assert_eq!(message.to_string(), "*.jpg: no match");
        assert_eq!(message.kind().to_string(), "not-found");
        // The connection is still good after every miss.
        assert_eq!(expand(client, "n*.md").await, ["notes.md"]);
    });
}

#[test]
fn a_pattern_outside_the_served_directory_is_refused() {
    with_served(async |client| {
        for (pattern, error) in [
            ("../*", NameError::DotComponent),
            ("/etc/*", NameError::Absolute),
            ("d1//*", NameError::EmptyComponent),
        ] {
            match expand_remote(client, pattern).await {
                Err(GlobError::BadPattern { source, .. }) => {
                    assert_eq!(source, error, "{pattern:?}")
                }
                other => panic!("{pattern:?}: {other:?}"),
            }
        }
    });
}

/// The command line: `get` expands a quoted remote pattern itself, with
/// the cp rules applied to what it matched; a pattern that matches
/// nothing fails with `no match` and exit 1, and nothing is fetched.
fn get_expands_remote_patterns_and_no_match_exits_1(backing: Backing) {
    let server = TestServer::start_in(backing);
    for (name, data) in [
        ("photos/a.jpg", &b"aa"[..]),
        ("photos/b.jpg", b"bbb"),
        ("photos/c.png", b"c"),
        ("photos/x*y.jpg", b"literal star"),
    ] {
        server.write_served(name, data);
    }
    let output = server.run_client(&["get", "photos/*.jpg", "dl/"]);
    assert!(output.status.success(), "{output:?}");
    let got = server.client_dir().join("dl");
    let mut names: Vec<String> = std::fs::read_dir(&got)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.jpg", "b.jpg", "x*y.jpg"]);
    assert_eq!(std::fs::read(got.join("x*y.jpg")).unwrap(), b"literal star");

    // One match and no target: into the current directory, by its name.
    let output = server.run_client(&["get", "photos/?.png"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read(server.client_dir().join("c.png")).unwrap(),
        b"c"
    );

    let output = server.run_client(&["get", "photos/*.gif", "none/"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("photos/*.gif: no match"), "{stderr}");
    assert!(!server.client_dir().join("none").exists());
}

store_matrix!(get_expands_remote_patterns_and_no_match_exits_1);
