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
pub use known_hosts::{Entry as KnownHostEntry, KnownHost, KnownHosts, KnownHostsError};
pub use pinning::{connect_tls, TlsFailure};
pub use secret_file::SecretFileError;

/// ferry's directory under the user's configuration directory
/// (`$XDG_CONFIG_HOME/ferry`, usually `~/.config/ferry`), if there is one.
pub fn config_dir() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("ferry"))
}

/// The TLS provider: ring's implementations, TLS 1.3 only, its cipher
/// suites in the order fastest here first. Both ends are ferry, and the
/// server takes the client's first that it has.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    // AES-128-GCM with the CPU's AES and carry-less multiply instructions
    // is several times faster than ChaCha20-Poly1305, and a third faster
    // than AES-256-GCM (10 rounds, not 14); without them ChaCha20 is the
    // faster.
    let cipher_suites = if has_aes_instructions() {
        vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ]
    } else {
        vec![
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ]
    };
    std::sync::Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites,
        ..rustls::crypto::ring::default_provider()
    })
}

/// Whether this CPU has the instructions that make AES-GCM fast.
fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite;

    #[test]
    fn the_fastest_cipher_suite_here_comes_first_and_all_are_tls13() {
        let suites: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let first = match has_aes_instructions() {
            true => CipherSuite::TLS13_AES_128_GCM_SHA256,
            false => CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        };
        assert_eq!(suites.first(), Some(&first));
        assert_eq!(suites.len(), 3);
        assert!(provider().cipher_suites.iter().all(|s| s.tls13().is_some()));
    }
}
