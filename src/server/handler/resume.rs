//! The resumable requests (PROTOCOL.md §5.13): a put that goes on from
//! the partial an earlier try of the same owner left, and a get that goes
//! on from where the client's partial ends.

use std::time::Instant;

use super::{Abort, Session};
use crate::partial::Found;
use crate::protocol::{Message, Prefix, RemoteName, ResumeReason, STEP};
use crate::report::{Detail, Start};
use crate::store::{Owner, ReadFile};
use crate::transport::{Connection, Link, PrefixCheck, TransportError};

/// What a resumable put asks for, besides the name.
pub(super) struct PutFrom {
    pub size: u64,
    pub modified: i64,
    pub restart: bool,
}

/// What a resumable get says of the client's partial.
pub(super) struct GetFrom {
    pub prefix: Prefix,
    pub size: u64,
    pub modified: i64,
}

impl Session {
    /// Receives the rest of a file into the owner's partial of `name`,
    /// then gives it the name. Cut off, the partial stays for a resume,
    /// sealed at its last checkpoint (see [`crate::partial`]); a body that
    /// fails its digest, or a name taken meanwhile, discards it.
    pub(super) async fn put_from(
        &self,
        conn: &mut Connection<Link>,
        name: &str,
        asked: PutFrom,
        owner: &Owner,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name)?;
        self.check_file_size(asked.size)?;
        let PutFrom {
            size,
            modified,
            restart,
        } = asked;
        let (owner, name_for_store) = (owner.clone(), name.clone());
        let (upload, partial, found) = self
            .blocking_unless_busy(move |store| {
                store.begin_resumable(&owner, &name_for_store, size, modified, restart)
            })
            .await?;
        let prefix = partial.prefix();
        let reason = reason_for(found);
        conn.write_message(&Message::Resume {
            prefix: prefix.clone(),
            reason,
        })
        .await?;
        let received = conn
            .recv_body_from(partial.clone(), size, prefix.clone(), &mut |_| {})
            .await;
        let digest = match received {
            Ok((_, digest)) => digest,
            Err(TransportError::DigestMismatch) => {
                let _ = self.blocking(move |_| Ok(partial.discard())).await;
                return Err(TransportError::DigestMismatch.into());
            }
            // Dropped, the partial is sealed at its last checkpoint.
            Err(e) => return Err(e.into()),
        };
        self.blocking(move |_| {
            let committed = upload.commit(&partial, &digest);
            if committed.is_err() {
                let _ = partial.discard();
            }
            committed
        })
        .await?;
        conn.write_message(&Message::Done).await?;
        Ok(Detail::Transfer {
            bytes: size - prefix.len,
            elapsed: started.elapsed(),
            start: start_for(reason, prefix.len, found.reread()),
        })
    }

    /// Sends the file `name` from where the client's partial ends, if the
    /// file is still the one the partial was made of, otherwise whole.
    pub(super) async fn get_from(
        &self,
        conn: &mut Connection<Link>,
        name: &str,
        asked: GetFrom,
        started: Instant,
    ) -> Result<Detail, Abort> {
        let name = RemoteName::parse(name)?;
        let file = self.blocking(move |store| store.open_read(&name)).await?;
        let (size, modified) = (file.size(), file.modified());
        let same_file = asked.size == size && asked.modified == modified;
        let (offset, reason) = self.send_from(conn, file, asked.prefix, same_file).await?;
        Ok(Detail::Transfer {
            bytes: size - offset,
            elapsed: started.elapsed(),
            start: start_for(reason, offset, 0),
        })
    }

    /// Sends `file` from where the client's partial, proving `offered`,
    /// ends, if it can go on from there (`same_file`: the partial was made
    /// of this file as it is now), otherwise whole (§5.13): `Sending`, the
    /// bytes, the trailer. Gives back where the bytes began, and why.
    pub(super) async fn send_from(
        &self,
        conn: &mut Connection<Link>,
        file: ReadFile,
        offered: Prefix,
        same_file: bool,
    ) -> Result<(u64, ResumeReason), Abort> {
        let (size, modified, cached) = (file.size(), file.modified(), file.cached_digest());
        let (from, reason) = match offered.len {
            0 => (Prefix::none(), ResumeReason::New),
            _ if !same_file => (Prefix::none(), ResumeReason::SourceChanged),
            len if len >= size => (Prefix::none(), ResumeReason::Unproven),
            _ => (offered, ResumeReason::Resumed),
        };
        debug_assert_eq!(from.len % STEP, 0);
        conn.queue(&Message::Sending {
            size,
            modified,
            offset: from.len,
            reason,
        })?;
        let (file, digest, check) = conn
            .send_body_from(file, size, &from, cached, &mut |_| {})
            .await?;
        self.remember_digest(file, digest, cached).await;
        if check == PrefixCheck::Differed {
            // The client's digest check fails and it starts over; this
            // side says why.
            tracing::info!("the client's partial of a get did not match the file's first bytes");
        }
        Ok((from.len, reason))
    }
}

/// The reason a `Resume` gives for what became of the partial.
fn reason_for(found: Found) -> ResumeReason {
    match found {
        Found::Nothing => ResumeReason::New,
        Found::Resumed { .. } => ResumeReason::Resumed,
        Found::Restarted => ResumeReason::Restarted,
        Found::SourceChanged => ResumeReason::SourceChanged,
        Found::Unproven => ResumeReason::Unproven,
    }
}

/// Where a report says a transfer began, `reread` bytes of the partial
/// read again to prove it.
fn start_for(reason: ResumeReason, offset: u64, reread: u64) -> Start {
    match reason {
        ResumeReason::New => Start::Fresh,
        ResumeReason::Resumed => Start::ResumedAt { at: offset, reread },
        other => Start::StartedOver(other.describe()),
    }
}
