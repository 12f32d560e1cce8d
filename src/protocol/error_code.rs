//! Stable error codes carried by `Error` frames.

use std::fmt;

/// Why a request failed, as a stable number on the wire and a stable
/// kebab-case word in reports. Codes never change meaning; a code this build
/// does not know decodes as [`ErrorCode::Unknown`] so newer servers stay
/// readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame was malformed or not expected at this point.
    BadRequest,
    /// The peer speaks a protocol version this side does not.
    UnsupportedVersion,
    /// The remote name breaks the naming rules or leaves the served root.
    BadName,
    /// No file or directory by that name.
    NotFound,
    /// The name is taken; ferry never overwrites.
    AlreadyExists,
    /// The name is a directory where a file was needed.
    IsADirectory,
    /// A component of the name is not a directory.
    NotADirectory,
    /// The name is neither a regular file nor a directory (fifo, socket, device).
    NotARegularFile,
    /// The server's operating system refused access.
    PermissionDenied,
    /// The server's disk or quota is full.
    InsufficientStorage,
    /// The body's BLAKE3 digest did not match the trailer; nothing was kept.
    DigestMismatch,
    /// Any other server-side I/O failure.
    Io,
    /// The server is at its connection limit; the connection is closed.
    Busy,
    /// The file exceeds the server's size limit.
    TooLarge,
    /// The server gave up waiting for the client; the connection is closed.
    Timeout,
    /// The client's token is missing or not accepted; the connection is
    /// closed.
    Unauthorized,
    /// The request is not allowed by the server's mode or the token's.
    Forbidden,
    /// The client spoke plain TCP to a server that requires TLS; the
    /// connection is closed.
    TlsRequired,
    /// The server does not serve this kind of request (an unknown tag, or
    /// a message that is not a request); the connection carries on.
    UnsupportedRequest,
    /// The server is shutting down and takes no more requests; the
    /// connection is closed.
    ShuttingDown,
    /// The directory is not empty.
    NotEmpty,
    /// A code this build does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The number sent on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::BadName => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::AlreadyExists => 5,
            ErrorCode::IsADirectory => 6,
            ErrorCode::NotADirectory => 7,
            ErrorCode::NotARegularFile => 8,
            ErrorCode::PermissionDenied => 9,
            ErrorCode::InsufficientStorage => 10,
            ErrorCode::DigestMismatch => 11,
            ErrorCode::Io => 12,
            ErrorCode::Busy => 13,
            ErrorCode::TooLarge => 14,
            ErrorCode::Timeout => 15,
            ErrorCode::Unauthorized => 16,
            ErrorCode::Forbidden => 17,
            ErrorCode::TlsRequired => 18,
            ErrorCode::UnsupportedRequest => 19,
            ErrorCode::ShuttingDown => 20,
            ErrorCode::NotEmpty => 21,
            ErrorCode::Unknown(code) => code,
        }
    }

    /// Whether the server closes the connection after sending this code:
    /// the one place that decides it, for server and client alike.
    pub fn ends_connection(self) -> bool {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::UnsupportedVersion
            | ErrorCode::Busy
            | ErrorCode::Timeout
            | ErrorCode::Unauthorized
            | ErrorCode::TlsRequired
            | ErrorCode::ShuttingDown => true,
            ErrorCode::BadName
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::IsADirectory
            | ErrorCode::NotADirectory
            | ErrorCode::NotARegularFile
            | ErrorCode::PermissionDenied
            | ErrorCode::InsufficientStorage
            | ErrorCode::DigestMismatch
            | ErrorCode::Io
            | ErrorCode::TooLarge
            | ErrorCode::Forbidden
            | ErrorCode::UnsupportedRequest
            | ErrorCode::NotEmpty
            // A newer server's code for a failed request; a closed
            // connection is noticed anyway at the next request.
            | ErrorCode::Unknown(_) => false,
        }
    }

    /// The code for a number read off the wire.
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::BadName,
            4 => ErrorCode::NotFound,
            5 => ErrorCode::AlreadyExists,
            6 => ErrorCode::IsADirectory,
            7 => ErrorCode::NotADirectory,
            8 => ErrorCode::NotARegularFile,
            9 => ErrorCode::PermissionDenied,
            10 => ErrorCode::InsufficientStorage,
            11 => ErrorCode::DigestMismatch,
            12 => ErrorCode::Io,
            13 => ErrorCode::Busy,
            14 => ErrorCode::TooLarge,
            15 => ErrorCode::Timeout,
            16 => ErrorCode::Unauthorized,
            17 => ErrorCode::Forbidden,
            18 => ErrorCode::TlsRequired,
            19 => ErrorCode::UnsupportedRequest,
            20 => ErrorCode::ShuttingDown,
            21 => ErrorCode::NotEmpty,
            other => ErrorCode::Unknown(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::BadName => "bad-name",
            ErrorCode::NotFound => "not-found",
            ErrorCode::AlreadyExists => "already-exists",
            ErrorCode::IsADirectory => "is-a-directory",
            ErrorCode::NotADirectory => "not-a-directory",
            ErrorCode::NotARegularFile => "not-a-regular-file",
            ErrorCode::PermissionDenied => "permission-denied",
            ErrorCode::InsufficientStorage => "insufficient-storage",
            ErrorCode::DigestMismatch => "digest-mismatch",
            ErrorCode::Io => "io-error",
            ErrorCode::Busy => "busy",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TlsRequired => "tls-required",
            ErrorCode::UnsupportedRequest => "unsupported-request",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::NotEmpty => "not-empty",
            ErrorCode::Unknown(code) => return write!(f, "error-{code}"),
        };
        f.write_str(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips() {
        for code in 0..=u16::MAX {
            assert_eq!(ErrorCode::from_u16(code).to_u16(), code);
        }
    }

    #[test]
    fn known_codes_have_distinct_words() {
        let words: std::collections::HashSet<String> = (1..=21)
            .map(|n| ErrorCode::from_u16(n).to_string())
            .collect();
        assert_eq!(words.len(), 21);
        assert!(!words.iter().any(|w| w.starts_with("error-")));
    }
}
