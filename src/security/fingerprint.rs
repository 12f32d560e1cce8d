//! The SHA-256 fingerprint that names a server's identity.

use std::fmt;

/// The SHA-256 digest of a certificate, shown and written as 64 lowercase
/// hex digits. Not a secret: it identifies a server, it does not open one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// Why text is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    #[error("a fingerprint is 64 hex digits (SHA-256), got {0} digits")]
    Length(usize),
    #[error("a fingerprint is hex digits only, got {0:?}")]
    NotHex(char),
}

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0; 32];
        for (slot, byte) in bytes.iter_mut().zip(digest.as_ref()) {
            *slot = *byte;
        }
        Fingerprint(bytes)
    }

    /// Reads 64 hex digits, in either case. A leading `sha256:` and colons
    /// between digit pairs, as other tools print fingerprints, are allowed.
    pub fn parse(text: &str) -> Result<Fingerprint, FingerprintError> {
        let text = text.trim();
        let text = text
            .strip_prefix("sha256:")
            .or_else(|| text.strip_prefix("SHA256:"))
            .unwrap_or(text);
        let mut digits = Vec::with_capacity(64);
        for c in text.chars().filter(|&c| c != ':') {
            let digit = c.to_digit(16).ok_or(FingerprintError::NotHex(c))?;
            digits.push(digit as u8);
        }
        if digits.len() != 64 {
            return Err(FingerprintError::Length(digits.len()));
        }
        let mut bytes = [0; 32];
        for (slot, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            if let [high, low] = pair {
                *slot = high << 4 | low;
            }
        }
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_the_sha256_of_the_certificate_in_hex() {
        // SHA-256 of the empty string, a published test vector.
        let empty = Fingerprint::of_certificate(b"");
        assert_eq!(
            empty.to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parsing_round_trips_and_accepts_common_spellings() {
        let fingerprint = Fingerprint::of_certificate(b"a certificate");
        let hex = fingerprint.to_string();
        assert_eq!(Fingerprint::parse(&hex), Ok(fingerprint));
        assert_eq!(Fingerprint::parse(&hex.to_uppercase()), Ok(fingerprint));
        assert_eq!(
            Fingerprint::parse(&format!("sha256:{hex}")),
            Ok(fingerprint)
        );
        let colons: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
        assert_eq!(Fingerprint::parse(&colons.join(":")), Ok(fingerprint));
    }

    #[test]
    fn wrong_lengths_and_letters_are_refused() {
        assert_eq!(Fingerprint::parse("abcd"), Err(FingerprintError::Length(4)));
        let bad = format!("{}g", "a".repeat(63));
        assert_eq!(Fingerprint::parse(&bad), Err(FingerprintError::NotHex('g')));
        assert_eq!(Fingerprint::parse(""), Err(FingerprintError::Length(0)));
    }
}
