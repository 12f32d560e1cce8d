//! Inputs the fuzz targets in `fuzz/` must keep handling: every file under
//! `fuzz/regressions/<target>/` goes through the very checks its target
//! runs (`fuzz/checks/`), and so does every generated seed. Crashes the
//! fuzzer finds are minimized and added there; see `scripts/fuzz.sh`.

#[path = "../fuzz/checks/decode.rs"]
mod decode;
#[path = "../fuzz/checks/name.rs"]
mod name;
#[path = "../fuzz/checks/seeds.rs"]
mod seeds;
#[path = "../fuzz/checks/session.rs"]
mod session;

use std::path::{Path, PathBuf};

use ferry::protocol::Message;

/// The committed regression inputs of `target`, sorted by name. Never
/// empty: a test over an empty directory would pass without checking
/// anything.
fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    inputs
}

/// Runs `check` on every input, then fails listing each one that broke.
fn assert_all_pass<T>(
    inputs: impl IntoIterator<Item = (String, Vec<u8>)>,
    mut check: impl FnMut(&[u8]) -> Result<T, String>,
) {
    let mut failures = Vec::new();
    for (name, bytes) in inputs {
        // Printed first, so the input is named even if the library panics.
        eprintln!("checking {name}");
        if let Err(finding) = check(&bytes) {
            failures.push(format!("{name}: {finding}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn named(inputs: Vec<(PathBuf, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let shown = |path: PathBuf| path.display().to_string();
    inputs.into_iter().map(|(p, b)| (shown(p), b)).collect()
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let seeds = seeds::for_target(target).expect("a fuzz target");
    let shown = |name| format!("seed {target}/{name}");
    seeds.into_iter().map(|(n, b)| (shown(n), b)).collect()
}

#[test]
fn decoder_regressions_hold() {
    assert_all_pass(named(regressions("decode")), decode::check);
}

#[test]
fn name_regressions_hold() {
    assert_all_pass(named(regressions("name")), name::check);
}

#[test]
fn session_regressions_hold() {
    let harness = session::Harness::start();
    assert_all_pass(named(regressions("session")), |input| harness.check(input));
}

#[test]
fn decoder_and_name_seeds_pass_their_checks() {
    assert_all_pass(seeds("decode"), decode::check);
    assert_all_pass(seeds("name"), name::check);
}

#[test]
fn session_seeds_pass_and_reach_deep_states() {
    let harness = session::Harness::start();
    let mut replies = Vec::new();
    assert_all_pass(seeds("session"), |input| {
        replies.push(harness.check(input)?);
        Ok(())
    });
    // The seeds are worth their name only if they get past the handshake
    // and the name checks: a body sent, an upload accepted and stored.
    let sent = |wanted: fn(&Message) -> bool| replies.iter().flatten().any(wanted);
    assert!(sent(|m| matches!(m, Message::Body { size: 5 })));
    assert!(sent(|m| matches!(m, Message::Proceed)));
    assert!(sent(
        |m| matches!(m, Message::Entry(e) if e.name == "new.txt")
    ));
}
