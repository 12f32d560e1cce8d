//! Small bodies moved whole through memory, with the frames around them.
//!
//! A tree of many small files is bound by what each file costs beside its
//! bytes: a trip to the blocking pool to read or write it, a write to the
//! socket for its entry, another for its body and another for its
//! trailer, each a TLS record of its own. A body of at most
//! [`WHOLE_BODY`] bytes is instead read from the stream into memory and
//! hashed here (a few microseconds), or queued with its trailer behind the
//! frames before it, so the caller can write many files to disk in one
//! trip and many bodies to the socket in one write. Memory stays bounded:
//! one body at a time on receipt, and what the caller queues before it
//! flushes.

use super::pump::{data_path_failed, Pace};
use super::{Connection, Stream, TransportError};
use crate::protocol::{Digest, Message};

/// The largest body moved whole through memory; larger ones take the
/// streaming paths of [`Connection::send_body`] and
/// [`Connection::recv_body`].
pub const WHOLE_BODY: u64 = 64 * 1024;

impl<S: Stream> Connection<S> {
    /// Receives a raw body of `size` bytes, at most [`WHOLE_BODY`], into
    /// memory, then its trailer, and checks the digest. A body whose digest
    /// does not match is [`TransportError::DigestMismatch`], with the
    /// stream still in step. Gives back the bytes and the verified digest.
    pub async fn recv_whole_body(
        &mut self,
        size: u64,
    ) -> Result<(Vec<u8>, Digest), TransportError> {
        let len = usize::try_from(size)
            .ok()
            .filter(|_| size <= WHOLE_BODY)
            .ok_or_else(|| data_path_failed("a body too large to take whole"))?;
        let mut body = Vec::with_capacity(len);
        // The start of the body may have arrived with the frame before it.
        let prefix = len.min(self.read_buf.len());
        body.extend(self.read_buf.drain(..prefix));
        let mut pace = Pace::new(self.stall_limit, self.min_rate);
        self.fill_paced(&mut body, &mut pace).await?;
        let digest = *blake3::hash(&body).as_bytes();
        match self.expect_message().await? {
            Message::Trailer { digest: expected } if expected == digest => Ok((body, digest)),
            Message::Trailer { .. } => Err(TransportError::DigestMismatch),
            other => Err(TransportError::Unexpected {
                expected: "a trailer",
                got: other.name(),
            }),
        }
    }

    /// Queues `body` as raw bytes, then its trailer with `digest`, behind
    /// what is queued already, without sending anything.
    pub fn queue_whole_body(&mut self, body: &[u8], digest: Digest) -> Result<(), TransportError> {
        self.write_buf.extend_from_slice(body);
        self.queue(&Message::Trailer { digest })
    }

    /// How many bytes are queued and not yet sent.
    pub fn queued_len(&self) -> usize {
        self.write_buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp_pair;

    #[tokio::test]
    async fn whole_bodies_cross_in_one_write_and_are_checked() {
        let (a, b) = tcp_pair().await;
        let (mut sender, mut receiver) = (Connection::new(a), Connection::new(b));
        let bodies: [&[u8]; 3] = [b"", b"x", &[7; WHOLE_BODY as usize]];
        for body in bodies {
            sender
                .queue_whole_body(body, *blake3::hash(body).as_bytes())
                .unwrap();
        }
        // A damaged body: the digest of other bytes.
        sender
            .queue_whole_body(b"abc", *blake3::hash(b"abd").as_bytes())
            .unwrap();
        sender.queue(&Message::Proceed).unwrap();
        assert!(sender.queued_len() > WHOLE_BODY as usize);
        sender.flush().await.unwrap();
        assert_eq!(sender.queued_len(), 0);
        for body in bodies {
            let (got, digest) = receiver.recv_whole_body(body.len() as u64).await.unwrap();
            assert_eq!(got, body);
            assert_eq!(digest, *blake3::hash(body).as_bytes());
        }
        assert!(matches!(
            receiver.recv_whole_body(3).await,
            Err(TransportError::DigestMismatch)
        ));
        // Still in step after the mismatch.
        assert_eq!(receiver.expect_message().await.unwrap(), Message::Proceed);
    }

    #[tokio::test]
    async fn a_body_too_large_to_take_whole_is_refused() {
        let (a, _b) = tcp_pair().await;
        let mut receiver = Connection::new(a);
        assert!(receiver.recv_whole_body(WHOLE_BODY + 1).await.is_err());
    }
}
