//! How the client decides to trust a server: plain TCP, a pinned
//! fingerprint, or trust on first use recorded in a known-hosts file.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpStream;

use super::ClientError;
use crate::protocol::Token;
use crate::security::{connect_tls, Fingerprint, KnownHosts, TlsFailure};
use crate::transport::Link;

/// What the client presents and whom it trusts.
#[derive(Debug, Clone)]
pub struct Security {
    pub trust: Trust,
    /// Sent in the handshake; empty for none.
    pub token: Token,
    /// Told of a server trusted for the first time, with its `host:port`,
    /// as soon as it is recorded: whatever happens to the connection next.
    pub on_first_use: fn(&str, &FirstUse),
}

/// Whom the client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// No TLS at all (`--plain`).
    Plain,
    /// TLS, and the server must prove this identity (`--fingerprint`).
    Pinned(Fingerprint),
    /// TLS; a server met before must prove the identity recorded for it,
    /// a new one is trusted and recorded.
    KnownHosts(KnownHosts),
}

/// A server trusted for the first time, and where that was recorded.
#[derive(Debug, Clone)]
pub struct FirstUse {
    pub fingerprint: Fingerprint,
    pub recorded_in: PathBuf,
}

impl Trust {
    /// Opens the link to `target` (`host:port`) over `tcp`: plain, or TLS
    /// with the server's identity checked. A new server is recorded, and
    /// `on_first_use` told.
    pub(super) async fn open(
        &self,
        tcp: TcpStream,
        host: &str,
        target: &str,
        timeout: Duration,
        on_first_use: fn(&str, &FirstUse),
    ) -> Result<Link, ClientError> {
        let known = match self {
            Trust::Plain => return Ok(Link::Plain(tcp)),
            Trust::Pinned(_) => None,
            Trust::KnownHosts(hosts) => hosts.lookup(target)?,
        };
        let expected = match self {
            Trust::Pinned(fingerprint) => Some(*fingerprint),
            _ => known.map(|known| known.fingerprint),
        };
        let handshake = tokio::time::timeout(timeout, connect_tls(tcp, host, expected));
        let (stream, seen) = match handshake.await {
            Err(_) => return Err(ClientError::Timeout(timeout)),
            Ok(Ok(connected)) => connected,
            Ok(Err(TlsFailure::Mismatch { seen })) => {
                return Err(match (self, known) {
                    (Trust::KnownHosts(hosts), Some(known)) => ClientError::IdentityChanged {
                        target: target.to_owned(),
                        seen,
                        expected: known.fingerprint,
                        file: hosts.path().to_owned(),
                        line: known.line,
                    },
                    _ => ClientError::NotPinned {
                        target: target.to_owned(),
                        seen,
                    },
                })
            }
            Ok(Err(TlsFailure::PlainFerry)) => return Err(ClientError::PlainFerry),
            Ok(Err(TlsFailure::NotTls)) => return Err(ClientError::NotTls),
            Ok(Err(TlsFailure::Closed)) => return Err(ClientError::ClosedInHandshake),
            Ok(Err(TlsFailure::Other(e))) => return Err(ClientError::Tls(e)),
        };
        if let (Trust::KnownHosts(hosts), None) = (self, known) {
            hosts.record(target, seen)?;
            let first_use = FirstUse {
                fingerprint: seen,
                recorded_in: hosts.path().to_owned(),
            };
            on_first_use(target, &first_use);
        }
        Ok(Link::Tls(Box::new(stream.into())))
    }
}
