//! Resumable puts (PutFrom, PROTOCOL.md §5.13) on the S3 store, resumed
//! through any server in front of the bucket.
//!
//! The body goes up as a put's does ([`ObjectWriter`]: a local spool, a
//! multipart part per step), but the multipart upload is left open when
//! the client goes. The partial is recorded in the bucket, at
//! `.ferry-tmp-state/partials/<partial_key(owner, name)>`, as each try
//! begins (to take its lease) and at each checkpoint: what it is for
//! (name, size, source time), the upload's id and token, the ETags of its
//! parts and the prefix's chaining values. A later try of the same owner
//! and name, through this server or another, reads the record, confirms
//! the parts with ListParts, and goes on from the recorded prefix without
//! reading a byte back. The sweep (uploads.rs) removes the record with its
//! upload, or, for a try killed before its first part, on its own.
//!
//! Every write of the record is a compare-and-swap (`If-Match` the ETag
//! last read or written, `If-None-Match: *` for the first), and the record
//! names a lease, taken by each try as it begins and let go when its
//! client goes. A try that finds a lease touched less than [`LEASE`] ago
//! is answered `busy`; one that loses a compare-and-swap stops recording
//! and refuses its commit, so two servers never both go on with one
//! partial. A server killed mid-put leaves its lease to age out.

use std::collections::HashSet;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::bucket::{Bucket, Failure};
use super::digests::STATE_DIR;
use super::uploads::{self, seconds};
use super::write::{check_size, new_token};
use super::{ObjectWriter, S3Store};
use crate::partial::Found;
use crate::protocol::{ChainingValue, Digest, ErrorCode, Prefix, Refusal, RemoteName, STEP};
use crate::store::local::partial_key;
use crate::store::Owner;
use crate::transport::BodySink;

/// How long a lease holds without being touched: a try that finds one
/// younger is answered `busy`. A try touches its lease at each checkpoint
/// (every step) and lets it go when its client goes, so this is how long
/// a resume waits after a server was killed mid-put, or how long one step
/// may take before another try may take over.
const LEASE: Duration = Duration::from_secs(60);

/// A partial as its record in the bucket keeps it.
#[derive(Clone, Serialize, Deserialize)]
struct Record {
    /// The name the object will take.
    name: String,
    /// The source's size and modification time when the upload began.
    size: u64,
    modified: i64,
    /// The token the object carries (write.rs), the same on every try.
    token: String,
    /// The multipart upload, once a part is recorded.
    upload_id: Option<String>,
    /// The ETags of parts `1..=prefix_len / STEP`.
    etags: Vec<String>,
    /// The proven prefix: its length and chaining values, in hex.
    prefix_len: u64,
    values: Vec<String>,
    /// The try that holds the partial, if one does, and when it last
    /// touched it (seconds since the epoch, by its server's clock).
    lease: Option<String>,
    leased_at: u64,
}

impl Record {
    /// The recorded prefix, if it is well formed and of whole parts.
    fn prefix(&self) -> Option<Prefix> {
        let values = (self.values.iter())
            .map(|hex| {
                let hash = blake3::Hash::from_hex(hex).ok()?;
                Some(ChainingValue::from(*hash.as_bytes()))
            })
            .collect::<Option<Vec<_>>>()?;
        let prefix = Prefix {
            len: self.prefix_len,
            values,
        };
        let parts = usize::try_from(self.prefix_len / STEP).ok()?;
        (prefix.is_well_formed(STEP) && self.etags.len() == parts).then_some(prefix)
    }

    fn encode(&self) -> Result<Vec<u8>, Failure> {
        serde_json::to_vec(self).map_err(|e| Failure::broken(e.to_string()))
    }
}

/// The key of `owner`'s partial record for `name`.
fn record_key(bucket: &Bucket, owner: &Owner, name: &RemoteName) -> String {
    format!(
        "{}{STATE_DIR}/partials/{}",
        bucket.prefix(),
        partial_key(owner, name)
    )
}

fn now() -> u64 {
    seconds(SystemTime::now())
}

fn busy(name: &RemoteName) -> Refusal {
    Refusal::new(
        ErrorCode::Busy,
        format!("another upload of {:?} is in progress", name.as_str()),
    )
}

impl S3Store {
    /// Begins a resumable upload of `size` bytes to `name` for `owner`,
    /// from a source last modified at `modified`: goes on with the
    /// multipart upload the owner's partial record names if the record is
    /// for this source and S3 still holds its parts, else (or with
    /// `restart`) aborts that upload and starts over. Refuses what
    /// [`S3Store::begin_write`] refuses, and `busy` while another try
    /// holds the partial.
    pub fn begin_resumable(
        &self,
        owner: &Owner,
        name: &RemoteName,
        size: u64,
        modified: i64,
        restart: bool,
    ) -> Result<(ResumableObject, ObjectPartial, Found), Refusal> {
        check_size(size)?;
        self.check_free(name, false)?;
        let doing = || format!("looking up the partial of {name}");
        let key = self.bucket.key(name);
        let record_key = record_key(&self.bucket, owner, name);
        let found = (self.bucket.get_small_tagged(&record_key)).map_err(|f| f.refusal(&doing()))?;
        let lease = new_token()?;
        let (old, etag) = match found {
            None => (None, None),
            Some((body, etag)) => (
                Some(serde_json::from_slice::<Record>(&body).ok()),
                Some(etag),
            ),
        };
        if let Some(Some(old)) = &old {
            let fresh = now().saturating_sub(old.leased_at) < LEASE.as_secs();
            if fresh && old.lease.as_ref().is_some_and(|l| !self.released.forget(l)) {
                return Err(busy(name));
            }
        }
        let proven = match &old {
            Some(Some(old)) if !restart && old.size == size && old.modified == modified => self
                .prove(old, name, &key)
                .map_err(|f| f.refusal(&doing()))?,
            _ => false,
        };
        let taken = |record: &Record| {
            let body = record.encode().map_err(|f| f.refusal(&doing()))?;
            match self.bucket.put_small_if(&record_key, body, etag.as_deref()) {
                Ok(etag) => Ok(etag),
                Err(f) if f.is_precondition_failed() || f.is_not_found() => Err(busy(name)),
                Err(f) => Err(f.refusal(&doing())),
            }
        };
        if let (Some(Some(old)), true) = (&old, proven) {
            let record = Record {
                lease: Some(lease),
                leased_at: now(),
                ..old.clone()
            };
            let written = taken(&record)?;
            if let Some(upload_id) = &record.upload_id {
                // Its time to live starts again; best effort, as at a
                // checkpoint.
                let _ = uploads::held(&self.bucket, &key, upload_id, &record_key);
            }
            let writer = ObjectWriter::resumable(
                Arc::clone(&self.bucket),
                key,
                record.token.clone(),
                size,
                record.upload_id.clone(),
                &record.etags,
            )?;
            let partial = ObjectPartial::new(
                writer,
                record_key,
                record,
                Some(written),
                self.released.clone(),
            );
            return Ok((ResumableObject(()), partial, Found::Resumed { reread: 0 }));
        }
        let found = match &old {
            None => Found::Nothing,
            Some(_) if restart => Found::Restarted,
            Some(Some(old)) if old.size != size || old.modified != modified => Found::SourceChanged,
            Some(Some(old)) if old.prefix_len == 0 => Found::Nothing,
            Some(_) => Found::Unproven,
        };
        let record = Record {
            name: name.as_str().to_owned(),
            size,
            modified,
            token: new_token()?,
            upload_id: None,
            etags: Vec::new(),
            prefix_len: 0,
            values: Vec::new(),
            lease: Some(lease),
            leased_at: now(),
        };
        // Written before anything else, so a second try meanwhile is
        // `busy` (and waits) rather than start an upload of its own; a
        // record found is taken over before its upload is aborted, so of
        // two tries only the one that holds it aborts. A body of a step or
        // less has no checkpoint to keep and, with no record found, needs
        // none: it goes up as a put's does, without three round trips.
        let written = match (&old, size <= STEP) {
            (None, true) => None,
            _ => Some(taken(&record)?),
        };
        if let Some(Some(Record {
            upload_id: Some(upload_id),
            ..
        })) = &old
        {
            abort(&self.bucket, &key, upload_id);
        }
        let writer = ObjectWriter::resumable(
            Arc::clone(&self.bucket),
            key,
            record.token.clone(),
            size,
            None,
            &[],
        )?;
        let partial =
            ObjectPartial::new(writer, record_key, record, written, self.released.clone());
        Ok((ResumableObject(()), partial, found))
    }

    /// Whether `record` is for `name`, vouches for a prefix to go on
    /// from, and S3 still holds that prefix's parts with their recorded
    /// ETags.
    fn prove(&self, record: &Record, name: &RemoteName, key: &str) -> Result<bool, Failure> {
        let Some(prefix) = record.prefix() else {
            return Ok(false);
        };
        let (Some(upload_id), true) = (&record.upload_id, prefix.len > 0) else {
            return Ok(false);
        };
        if record.name != name.as_str() || prefix.len >= record.size {
            return Ok(false);
        }
        let held = match self.list_parts(key, upload_id, record.etags.len()) {
            Ok(held) => held,
            // Aborted or completed since: nothing to go on with.
            Err(f) if f.is_not_found() => return Ok(false),
            Err(f) => return Err(f),
        };
        let same = |(etag, (size, held)): (&String, &(u64, String))| {
            *size == STEP && etag.trim_matches('"') == held.trim_matches('"')
        };
        Ok(held.len() == record.etags.len() && record.etags.iter().zip(&held).all(same))
    }

    /// The sizes and ETags of parts `1..=count` of the upload, as far as
    /// S3 holds them in order from the first.
    fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
        count: usize,
    ) -> Result<Vec<(u64, String)>, Failure> {
        let mut held = Vec::with_capacity(count);
        let mut marker: Option<String> = None;
        loop {
            let page = self.bucket.block_on(
                (self.bucket.client().list_parts())
                    .bucket(self.bucket.name())
                    .key(key)
                    .upload_id(upload_id)
                    .set_part_number_marker(marker.take())
                    .send(),
            );
            let page = page.map_err(|e| Failure::of(&e))?;
            for part in page.parts() {
                let number = usize::try_from(part.part_number().unwrap_or(0)).unwrap_or(0);
                if number != held.len() + 1 || held.len() == count {
                    return Ok(held);
                }
                let size = part.size().unwrap_or(0).max(0) as u64;
                held.push((size, part.e_tag().unwrap_or_default().to_owned()));
            }
            marker = page.next_part_number_marker().map(str::to_owned);
            if held.len() == count || page.is_truncated() != Some(true) || marker.is_none() {
                return Ok(held);
            }
        }
    }
}

/// Removes the records of partials that never sent a part (their server
/// was killed before a step) and that no try touched for `ttl`; those
/// with an upload go with it ([`uploads::sweep`]). Returns how many went.
pub(super) fn sweep_unstarted(bucket: &Bucket, ttl: Duration) -> usize {
    let oldest = now().saturating_sub(ttl.as_secs());
    let beneath = format!("{}{STATE_DIR}/partials/", bucket.prefix());
    let Ok(keys) = bucket.keys_under(&beneath, None) else {
        return 0;
    };
    let mut swept = 0;
    for key in keys {
        let Ok(Some((body, etag))) = bucket.get_small_tagged(&key) else {
            continue;
        };
        let unstarted = serde_json::from_slice::<Record>(&body).map_or(true, |record| {
            record.upload_id.is_none() && record.leased_at <= oldest
        });
        if unstarted && bucket.delete_key_if(&key, &etag).is_ok() {
            swept += 1;
        }
    }
    swept
}

/// Aborts the multipart upload `upload_id` of `key` and forgets it. Best
/// effort: one not aborted is swept by its record.
fn abort(bucket: &Bucket, key: &str, upload_id: &str) {
    let aborted = bucket.block_on(
        (bucket.client().abort_multipart_upload())
            .bucket(bucket.name())
            .key(key)
            .upload_id(upload_id)
            .send(),
    );
    if aborted.is_ok() || aborted.is_err_and(|e| Failure::of(&e).is_not_found()) {
        uploads::ended(bucket, upload_id);
    }
}

/// How a resumable upload to the bucket is committed: all it needs is in
/// its partial.
#[derive(Debug)]
pub struct ResumableObject(());

impl ResumableObject {
    /// Sends the rest of the verified body, completes the upload under
    /// its name (never replacing anything), keeps `digest`, and removes
    /// the partial's record.
    pub fn commit(self, partial: &ObjectPartial, digest: &Digest) -> Result<(), Refusal> {
        partial.commit(digest)
    }
}

/// A resumable upload's body: written to a spool and sent a part per step,
/// as a put's, and recorded at each checkpoint. A clone is another handle
/// on the same partial.
#[derive(Clone)]
pub struct ObjectPartial(Arc<Held>);

struct Held {
    writer: ObjectWriter,
    record_key: String,
    /// Where its lease goes when it is let go of.
    released: Released,
    state: Mutex<State>,
    /// Another try took the partial over: nothing more is recorded, the
    /// commit is refused and the upload is left to that try.
    lost: AtomicBool,
    /// Committed or discarded.
    finished: AtomicBool,
}

/// The record as last written, and its ETag; `None` if none is (a body
/// of a step or less).
struct State {
    record: Record,
    etag: Option<String>,
}

impl std::fmt::Debug for ObjectPartial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectPartial")
            .field("key", &self.0.writer.key())
            .finish_non_exhaustive()
    }
}

impl ObjectPartial {
    fn new(
        writer: ObjectWriter,
        record_key: String,
        record: Record,
        etag: Option<String>,
        released: Released,
    ) -> ObjectPartial {
        ObjectPartial(Arc::new(Held {
            writer,
            record_key,
            released,
            state: Mutex::new(State { record, etag }),
            lost: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bucket(&self) -> &Bucket {
        self.0.writer.bucket()
    }

    /// The proven prefix the body goes on from.
    pub fn prefix(&self) -> Prefix {
        self.state().record.prefix().unwrap_or_default()
    }

    /// Gives up the partial: aborts its upload and removes its record,
    /// unless another try has taken it over.
    pub fn discard(&self) -> io::Result<()> {
        self.0.finished.store(true, Ordering::Relaxed);
        if self.0.lost.load(Ordering::Relaxed) {
            self.0.writer.keep_open();
            return Ok(());
        }
        self.0.writer.abort_now();
        let state = self.state();
        let Some(etag) = &state.etag else {
            return Ok(());
        };
        let deleted = self.bucket().delete_key_if(&self.0.record_key, etag);
        if deleted.is_err() {
            // The record stays, leased: the next try through this server
            // takes it over at once (and finds what is left of it).
            self.0.released.add_some(state.record.lease.clone());
        }
        deleted.map_err(|f| io::Error::other(f.message))
    }

    fn commit(&self, digest: &Digest) -> Result<(), Refusal> {
        let taken_over = || {
            Refusal::new(
                ErrorCode::Busy,
                "another server took this upload over; try again",
            )
        };
        if self.0.lost.load(Ordering::Relaxed) {
            return Err(taken_over());
        }
        // Held to the end: a try that took the partial over since the
        // last checkpoint has changed the record, and this one stops.
        let mut state = self.state();
        if let Some(etag) = &state.etag {
            let record = Record {
                leased_at: now(),
                ..state.record.clone()
            };
            let body = record.encode().map_err(|f| f.refusal("storing the file"))?;
            match (self.bucket()).put_small_if(&self.0.record_key, body, Some(etag)) {
                Ok(etag) => state.etag = Some(etag),
                Err(f) if f.is_precondition_failed() || f.is_not_found() => {
                    self.0.lost.store(true, Ordering::Relaxed);
                    return Err(taken_over());
                }
                Err(f) => return Err(f.refusal("storing the file")),
            }
        }
        self.0.finished.store(true, Ordering::Relaxed);
        self.0.writer.commit(false, digest)?;
        if let Some(etag) = &state.etag {
            let _ = self.bucket().delete_key_if(&self.0.record_key, etag);
        }
        Ok(())
    }
}

impl Drop for Held {
    /// A partial neither committed nor discarded was cut off: its upload
    /// stays open and its lease is let go (in the background, since this
    /// may run on an async thread), unless no step was recorded, when
    /// there is nothing to go on from and the upload is aborted.
    fn drop(&mut self) {
        if self.finished.load(Ordering::Relaxed) {
            return;
        }
        if self.lost.load(Ordering::Relaxed) {
            self.writer.keep_open();
            return;
        }
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let bucket = self.writer.bucket();
        let client = bucket.client();
        let Some(etag) = state.etag.clone() else {
            // No record: the writer's drop aborts the upload, if any.
            return;
        };
        // Known here at once, whether or not the store hears of it: the
        // next try through this server need not wait for the lease to age
        // out when the store was unreachable as this one ended.
        let lease = state.record.lease.clone();
        let released = self.released.clone();
        released.add_some(lease.clone());
        if state.record.prefix_len == 0 {
            // Nothing to go on from: the writer's drop aborts the upload.
            let delete = (client.delete_object())
                .bucket(bucket.name())
                .key(&self.record_key)
                .if_match(etag);
            bucket.spawn(async move {
                if delete.send().await.is_ok() {
                    released.forget_some(lease.as_deref());
                }
            });
            return;
        }
        self.writer.keep_open();
        let record = Record {
            lease: None,
            ..state.record.clone()
        };
        let Ok(body) = record.encode() else {
            return;
        };
        let release = (client.put_object())
            .bucket(bucket.name())
            .key(&self.record_key)
            .if_match(etag)
            .body(body.into());
        let key = self.record_key.clone();
        bucket.spawn(async move {
            match release.send().await {
                Ok(_) => released.forget_some(lease.as_deref()),
                // Other servers wait for the lease to age out.
                Err(e) => tracing::debug!(
                    key,
                    "cannot let go of a partial's lease: {}",
                    Failure::of(&e).message
                ),
            }
        });
    }
}

impl BodySink for ObjectPartial {
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        self.0.writer.raw_fd()
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.writer.write_all_at(bytes, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        BodySink::read_at(&self.0.writer, buf, offset)
    }

    fn reserve(&self, offset: u64, len: u64) {
        self.0.writer.reserve(offset, len);
    }

    /// Sends the whole steps spooled as parts; fails once another try has
    /// taken the partial over, which stops a receive that writes.
    fn sync_written(&self) -> io::Result<()> {
        if self.0.lost.load(Ordering::Relaxed) {
            return Err(io::Error::other("another server took this upload over"));
        }
        self.0.writer.sync_written()
    }

    /// Records `prefix`, whose parts are sent: a compare-and-swap of the
    /// record, which also touches the lease and the upload's record for
    /// the sweep.
    fn checkpoint(&self, prefix: &Prefix) {
        self.0.writer.checkpoint(prefix);
        if self.0.lost.load(Ordering::Relaxed) {
            return;
        }
        let Some((upload_id, etags)) = self.0.writer.parts_of(prefix.len) else {
            return;
        };
        let mut state = self.state();
        if prefix.len <= state.record.prefix_len {
            return;
        }
        let record = Record {
            upload_id: Some(upload_id.clone()),
            etags,
            prefix_len: prefix.len,
            values: (prefix.values.iter())
                .map(|value| blake3::Hash::from(*value).to_hex().to_string())
                .collect(),
            leased_at: now(),
            ..state.record.clone()
        };
        let Ok(body) = record.encode() else {
            return;
        };
        let bucket = self.bucket();
        match bucket.put_small_if(&self.0.record_key, body, state.etag.as_deref()) {
            Ok(etag) => {
                state.record = record;
                state.etag = Some(etag);
                if let Err(f) =
                    uploads::held(bucket, self.0.writer.key(), &upload_id, &self.0.record_key)
                {
                    tracing::debug!("cannot touch an upload's record: {}", f.message);
                }
            }
            Err(f) if f.is_precondition_failed() || f.is_not_found() => {
                tracing::warn!(
                    key = self.0.writer.key(),
                    "another server took a resumable upload over"
                );
                self.0.lost.store(true, Ordering::Relaxed);
            }
            // Not recorded: a later try resends from the last checkpoint.
            Err(f) => tracing::debug!("cannot record a partial: {}", f.message),
        }
    }

    fn takes_checkpoints(&self) -> bool {
        true
    }
}

/// The leases of tries on this server that have ended, while the store
/// may still show them held: a try that finds one of these in a record
/// takes the partial over at once rather than answer `busy` until it ages
/// out. Each is kept until the store heard of its release, or a try took
/// it over; so only those whose release could not be written stay.
#[derive(Debug, Clone, Default)]
pub struct Released(Arc<Mutex<HashSet<String>>>);

impl Released {
    fn leases(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_some(&self, lease: Option<String>) {
        if let Some(lease) = lease {
            self.leases().insert(lease);
        }
    }

    fn forget_some(&self, lease: Option<&str>) {
        if let Some(lease) = lease {
            self.leases().remove(lease);
        }
    }

    /// Whether `lease` was let go of here, forgetting it: the caller takes
    /// it over.
    fn forget(&self, lease: &str) -> bool {
        self.leases().remove(lease)
    }
}
