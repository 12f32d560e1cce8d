//! Fuzz target: `RemoteName::parse` on any string; see `checks/name.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/name.rs"]
mod name;

fuzz_target!(|bytes: &[u8]| {
    if let Err(finding) = name::check(bytes) {
        panic!("name: {finding}");
    }
});
