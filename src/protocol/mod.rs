//! The ferry wire protocol: messages, their byte layout, names and limits.
//!
//! Everything here is pure: it turns values into bytes and bytes into values
//! and never touches a socket or a file. `PROTOCOL.md` at the repository root
//! is the prose form of this module; keep the two in step.
//!
//! A connection starts with an 8-byte [`Preamble`] from each side, the
//! client's `Hello` and the server's `Welcome`, then carries
//! length-prefixed [`Message`] frames. File bodies are not framed:
//! after a `Put` is answered with `Proceed`, or a `Get` with `Body`, exactly
//! the declared number of raw bytes follow, then a `Trailer` frame with the
//! BLAKE3 digest of those bytes. Raw bodies let the data path use `sendfile`
//! and `splice` without touching the bytes.

mod error_code;
mod failure;
mod handshake;
mod message;
mod name;
mod request;
mod resume;
mod steps;
mod token;
mod tree;

pub use error_code::ErrorCode;
pub use failure::{FailureKind, Refusal};
pub use handshake::{Preamble, PreambleError, MAGIC, PREAMBLE_LEN, VERSION};
pub use message::{
    decode, encode, DecodeError, EncodeTooLarge, Entry, EntryKind, Info, Link, Message, OmitReason,
    TreeEntry, MAX_FRAME_LEN,
};
pub use name::{NameError, RemoteName, MAX_COMPONENT_LEN, MAX_NAME_LEN, TEMP_PREFIX};
pub use request::RequestKind;
pub use resume::ResumeReason;
pub use steps::{ChainingValue, Prefix, StepHasher, MAX_PREFIX_VALUES, STEP};
pub use token::Token;
pub use tree::{manifest_order, ManifestError, ManifestOrder, MAX_HELD};

/// Length in bytes of a BLAKE3 digest as carried by a `Trailer` frame.
pub const DIGEST_LEN: usize = 32;

/// A BLAKE3 digest, as a `Trailer` or an `Info` carries it.
pub type Digest = [u8; DIGEST_LEN];
