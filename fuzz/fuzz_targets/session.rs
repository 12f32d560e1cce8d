//! Fuzz target: a whole server session fed arbitrary bytes; see
//! `checks/session.rs`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../checks/session.rs"]
mod session;

/// One server for the whole fuzzing process: starting one per input would
/// cost far more than the session itself.
fn harness() -> &'static session::Harness {
    static HARNESS: OnceLock<session::Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // tokio catches a panic in a connection task and the server only
        // logs it; abort instead, so libFuzzer records the input as a crash
        // and the panic's message and stack are in its log.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            std::process::abort();
        }));
        session::Harness::start()
    })
}

fuzz_target!(|input: &[u8]| {
    if let Err(finding) = harness().check(input) {
        panic!("session: {finding}");
    }
});
