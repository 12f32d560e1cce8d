//! Who the server is and who may use it: the server's TLS identity, the
//! client's pinning of it, access tokens and modes.
//!
//! No cryptography is written here: rustls does TLS 1.3, rcgen makes the
//! self-signed certificate, ring computes fingerprints, BLAKE3 compares
//! tokens.

pub mod access;
mod fingerprint;
mod identity;
mod known_hosts;
mod pinning;
mod secret_file;

use std::path::PathBuf;

pub use fingerprint::{Fingerprint, FingerprintError};
pub use identity::{Identity, IdentityError};
pub use known_hosts::{KnownHost, KnownHosts, KnownHostsError};
pub use pinning::{connect_tls, TlsFailure};
pub use secret_file::SecretFileError;

/// ferry's directory under the user's configuration directory
/// (`$XDG_CONFIG_HOME/ferry`, usually `~/.config/ferry`), if there is one.
pub fn config_dir() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("ferry"))
}

/// The TLS provider: ring's implementations, TLS 1.3 only.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
