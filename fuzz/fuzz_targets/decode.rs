//! Fuzz target: `protocol::decode` on any bytes; see `checks/decode.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/decode.rs"]
mod decode;

fuzz_target!(|bytes: &[u8]| {
    if let Err(finding) = decode::check(bytes) {
        panic!("decode: {finding}");
    }
});
