//! Verified resume (issue 14, PROTOCOL.md §5.13): a put or a get cut off
//! part way, made again, goes on from the prefix its receiver proves, says
//! so, and ends byte-identical; what cannot be proven is sent again.

mod common;

use std::path::Path;

use common::*;
use ferry::store::PARTIALS_DIR;

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

/// Issue 14: a refused request leaves nothing, not even an empty partial:
/// a put to a taken name, a get of a missing one.
#[test]
fn a_refused_put_or_get_leaves_no_partial() {
    let server = TestServer::start();
    write_file(server.root(), "taken.txt", b"first");
    write_file(server.client_dir(), "taken.txt", b"second");
    let output = server.run_client(&["put", "taken.txt"]);
    assert_exit_saying(&output, 1, "already-exists");
    assert_eq!(server_partials(server.root()), Vec::<String>::new());

    let output = server.run_client(&["get", "missing.txt"]);
    assert_exit_saying(&output, 1, "not-found");
    assert_eq!(files_under(server.client_dir()), ["taken.txt"]);
}
