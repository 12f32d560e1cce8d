//! Fuzz target: `ManifestOrder` over the tree entries of any frames; see
//! `checks/manifest.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/manifest.rs"]
mod manifest;

fuzz_target!(|bytes: &[u8]| {
    if let Err(finding) = manifest::check(bytes) {
        panic!("manifest: {finding}");
    }
});
