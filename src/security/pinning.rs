//! The client's side of TLS: the server is trusted by the fingerprint of
//! its certificate, not by a certificate authority. The handshake's
//! signature is still checked against that certificate's key, so only the
//! holder of the server's private key can complete it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::Connect;

use super::Fingerprint;
use crate::protocol::MAGIC;
use crate::transport::Batched;

/// Why the TLS handshake failed.
#[derive(Debug)]
pub enum TlsFailure {
    /// The server proved an identity other than the one expected.
    Mismatch { seen: Fingerprint },
    /// The server answered with a ferry preamble instead of TLS: a
    /// `--plain` server.
    PlainFerry,
    /// The server answered with something that is neither TLS nor ferry.
    NotTls,
    /// The server closed the connection, or reset it, without a byte of
    /// TLS: what a server over its limits does.
    Closed,
    /// The connection failed, or TLS did for another reason.
    Other(io::Error),
}

/// Runs the TLS handshake on `tcp`, accepting the server if its identity
/// has the `expected` fingerprint or, with none expected, whatever identity
/// it proves. Returns the stream and the fingerprint the server proved.
pub async fn connect_tls(
    tcp: TcpStream,
    host: &str,
    expected: Option<Fingerprint>,
) -> Result<(TlsStream<Batched>, Fingerprint), TlsFailure> {
    let provider = super::provider();
    let verifier = Arc::new(PinVerifier {
        expected,
        seen: Mutex::new(None),
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsFailure::Other(io::Error::other(e)))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    // The name is only sent as SNI; the identity is checked by fingerprint.
    let name = ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::from(std::net::IpAddr::from([0, 0, 0, 0])));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (connected, reply) =
        handshake_keeping_reply(connector.connect(name, Batched::new(tcp))).await;
    let seen = *verifier.seen.lock().unwrap_or_else(PoisonError::into_inner);
    match (connected, seen) {
        (Ok(stream), Some(seen)) => Ok((stream, seen)),
        (Err(_), Some(seen)) if expected.is_some_and(|expected| expected != seen) => {
            Err(TlsFailure::Mismatch { seen })
        }
        (Err(e), _) if is_not_tls(&e) && is_ferry_preamble(&reply) => Err(TlsFailure::PlainFerry),
        (Err(e), _) if is_not_tls(&e) => Err(TlsFailure::NotTls),
        (Err(e), None) if reply.is_empty() && is_closed(&e) => Err(TlsFailure::Closed),
        (Err(e), _) => Err(TlsFailure::Other(e)),
        (Ok(_), None) => Err(TlsFailure::Other(io::Error::other(
            "TLS completed without a server certificate",
        ))),
    }
}

/// Runs the handshake, keeping a copy of the first bytes the server sends:
/// if they are not TLS, they tell what answered instead. They are peeked
/// before the handshake reads them, so rustls still sees every byte.
async fn handshake_keeping_reply(
    mut connect: Connect<Batched>,
) -> (io::Result<TlsStream<Batched>>, Vec<u8>) {
    let mut reply = [0; MAGIC.len()];
    let mut peeked = None;
    let connected = std::future::poll_fn(|cx| {
        // Peeked before each turn of the handshake, the only place rustls
        // reads; a peek that finds nothing leaves the socket not readable
        // for the rest of the turn, so rustls reads nothing unpeeked. (With
        // I/O driven on another thread, bytes landing between the two calls
        // could slip by: the message is then the one for a stranger.)
        if let (None, Some(tcp)) = (peeked, connect.get_ref().map(Batched::tcp)) {
            if let Poll::Ready(result) = tcp.poll_peek(cx, &mut ReadBuf::new(&mut reply)) {
                peeked = Some(result.unwrap_or(0));
            }
        }
        Pin::new(&mut connect).poll(cx)
    })
    .await;
    let reply = reply.get(..peeked.unwrap_or(0)).unwrap_or_default();
    (connected, reply.to_vec())
}

/// Whether `reply`, the start of what a server sent, begins as a ferry
/// preamble does.
fn is_ferry_preamble(reply: &[u8]) -> bool {
    !reply.is_empty() && MAGIC.starts_with(reply)
}

/// Whether the handshake failed because the peer closed or reset the
/// connection.
fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Whether the handshake failed because the peer's bytes were not TLS.
fn is_not_tls(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)))
}

/// Accepts the certificate with the expected fingerprint, or any if none is
/// expected, and remembers which it saw.
#[derive(Debug)]
struct PinVerifier {
    expected: Option<Fingerprint>,
    seen: Mutex<Option<Fingerprint>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of_certificate(end_entity);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(seen);
        match self.expected {
            Some(expected) if expected != seen => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
