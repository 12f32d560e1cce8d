//! ferry: a fast, safe file server and client over TCP.
//!
//! Layers, each depending only on those below it:
//!
//! - [`protocol`]: messages, their byte layout, the kinds of request,
//!   error codes and failure kinds, and the rules for remote names. Pure:
//!   no I/O. `PROTOCOL.md` is its prose form.
//! - [`transport`]: the one place bytes meet a socket: the preamble
//!   exchange, frames, and raw bodies between the socket and a source or
//!   sink, moved with sendfile and splice when both are descriptors and
//!   hashed with BLAKE3 alongside; streams of unknown length in chunks.
//! - [`staging`]: files appear only complete, through a hidden temporary
//!   file and a rename that never replaces anything unless asked to.
//! - [`partial`]: a transfer kept part way, with the record that proves
//!   its prefix, so an interrupted transfer goes on where it stopped.
//! - [`store`]: the one place the server meets files: the path gate,
//!   staging and commit, the digest cache, listings, directory operations.
//! - [`server`]: accepts connections, a task each, and answers requests
//!   through the store; it names no file or path itself.
//! - [`client`]: a typed client for one connection: put, get, list,
//!   delete, stat and the directory operations, and remote globs
//!   expanded over listings.
//! - [`report`]: the one-line report both sides print for every request.
//!
//! The `ferry` binary (`src/main.rs` and `src/cli/`) parses the command line
//! and drives [`server`] and [`client`]; the library never sees clap types.

// Network and file input must not be able to panic the server or client:
// no unwrap, expect or unchecked indexing outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod client;
pub mod partial;
pub mod protocol;
pub mod report;
pub mod security;
pub mod server;
pub mod staging;
pub mod store;
pub mod transport;
