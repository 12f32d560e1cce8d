//! Failure kinds: the one vocabulary for why something failed, shared by
//! reports, client messages and (through [`ErrorCode`]) error frames.

use std::fmt;

use super::ErrorCode;

/// Why a request or connection failed, as a stable kebab-case word.
///
/// A failure the server answered, or that a local check found with the
/// same meaning, is `Code`; the rest are things no error frame carries:
/// a connection that broke, a peer that is not ferry, a local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// What an error frame says (or would say).
    Code(ErrorCode),
    /// The connection closed or broke where more was expected.
    ConnectionLost,
    /// The peer sent something the protocol does not allow there.
    ProtocolError,
    /// The peer does not speak ferry.
    NotFerry,
    /// A TLS client reached a `--plain` server.
    TlsUnexpected,
    /// The server did not answer with TLS.
    NotTls,
    /// The TLS handshake failed.
    TlsError,
    /// The server's host name did not resolve, or no address answered.
    Unreachable,
    /// The file being sent changed size while it was sent.
    FileChanged,
    /// A local file could not be read or written.
    LocalIo,
    /// The local destination exists; ferry never overwrites.
    LocalExists,
    /// A local path gives no usable remote name.
    BadLocalName,
    /// The server proved another identity than the one expected.
    IdentityChanged,
    /// The known-hosts file could not be read or written.
    KnownHosts,
    /// The user pressed Ctrl-C.
    Interrupted,
    /// A bug in ferry; only its connection suffered.
    InternalError,
    /// The server refused a connection, before any TLS, from an address
    /// whose handshakes lately failed (a token not accepted, bytes that
    /// are not ferry, a handshake not finished in time). The client is
    /// told `busy` where the server speaks plain ferry.
    Penalised,
}

impl From<ErrorCode> for FailureKind {
    fn from(code: ErrorCode) -> Self {
        FailureKind::Code(code)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Code(code) => return code.fmt(f),
            FailureKind::ConnectionLost => "connection-lost",
            FailureKind::ProtocolError => "protocol-error",
            FailureKind::NotFerry => "not-ferry",
            FailureKind::TlsUnexpected => "tls-unexpected",
            FailureKind::NotTls => "not-tls",
            FailureKind::TlsError => "tls-error",
            FailureKind::Unreachable => "unreachable",
            FailureKind::FileChanged => "file-changed",
            FailureKind::LocalIo => "local-io-error",
            FailureKind::LocalExists => "local-exists",
            FailureKind::BadLocalName => "bad-local-name",
            FailureKind::IdentityChanged => "identity-changed",
            FailureKind::KnownHosts => "known-hosts",
            FailureKind::Interrupted => "interrupted",
            FailureKind::InternalError => "internal-error",
            FailureKind::Penalised => "penalised",
        })
    }
}

/// A refused request: the code and the words an `Error` frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<super::NameError> for Refusal {
    fn from(error: super::NameError) -> Self {
        Refusal::new(ErrorCode::BadName, error.to_string())
    }
}
