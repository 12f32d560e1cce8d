//! The fixed 8-byte preamble each side sends first.
//!
//! Layout: the 5 magic bytes `FERRY`, one reserved byte (zero), and the
//! protocol version as a big-endian `u16`. A fixed, tiny preamble lets either
//! side recognise a foreign peer (an HTTP client, an SSH server) after reading
//! at most 8 bytes, so a wrong peer is an error, never a hang.

/// Bytes that open every ferry connection, in both directions.
pub const MAGIC: [u8; 5] = *b"FERRY";
/// The protocol version this build speaks.
pub const VERSION: u16 = 3;
/// Length of the preamble on the wire.
pub const PREAMBLE_LEN: usize = 8;

/// What a peer announced in its preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// The protocol version the peer speaks.
    pub version: u16,
}

/// Why a preamble was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreambleError {
    /// The bytes are not a ferry preamble: the peer speaks something else.
    #[error("peer does not speak the ferry protocol")]
    NotFerry,
}

impl Preamble {
    /// The preamble this build sends.
    pub const OURS: Preamble = Preamble { version: VERSION };

    /// The preamble as it goes on the wire.
    pub fn to_bytes(self) -> [u8; PREAMBLE_LEN] {
        let mut bytes = [0u8; PREAMBLE_LEN];
        bytes[..5].copy_from_slice(&MAGIC);
        bytes[6..].copy_from_slice(&self.version.to_be_bytes());
        bytes
    }

    /// Reads a preamble; any version is accepted here, the caller decides
    /// whether it can talk to it.
    pub fn from_bytes(bytes: &[u8; PREAMBLE_LEN]) -> Result<Preamble, PreambleError> {
        if bytes[..5] != MAGIC || bytes[5] != 0 {
            return Err(PreambleError::NotFerry);
        }
        let version = u16::from_be_bytes([bytes[6], bytes[7]]);
        Ok(Preamble { version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_golden_bytes() {
        // "FERRY", reserved 0x00, version 0x0003.
        assert_eq!(
            Preamble::OURS.to_bytes(),
            [0x46, 0x45, 0x52, 0x52, 0x59, 0x00, 0x00, 0x03]
        );
    }

    #[test]
    fn preamble_round_trips_any_version() {
        for version in [0, 1, 2, u16::MAX] {
            let preamble = Preamble { version };
            assert_eq!(Preamble::from_bytes(&preamble.to_bytes()), Ok(preamble));
        }
    }

    #[test]
    fn foreign_peers_are_recognised() {
        for bytes in [
            b"GET / HT",
            b"SSH-2.0-",
            b"FERRY\x01\x00\x01",
            b"\0\0\0\0\0\0\0\0",
        ] {
            assert_eq!(Preamble::from_bytes(bytes), Err(PreambleError::NotFerry));
        }
    }
}
