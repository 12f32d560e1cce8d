//! Writing a file to the bucket: Put and PutStream.
//!
//! The body is spooled to an unnamed local file ([`ObjectWriter`]), so
//! the transport splices into it and hashes it back as it does for a
//! file on disk. Each whole 64 MiB step ([`STEP`], a whole BLAKE3
//! subtree) goes up as one part of a multipart upload while the next
//! arrives, from the transport's sync every step; the holes behind what
//! is uploaded and hashed are punched out of the spool, so a long put
//! keeps about two steps on local disk. A body of one step or less goes
//! up at the end as one PutObject, which carries its digest.
//!
//! Nothing is visible under the name before the commit: the final create
//! (PutObject or CompleteMultipartUpload) carries `If-None-Match: *`, so
//! of several uploads racing to one new name exactly one wins, whatever
//! the checks made before the body said. An upload dropped uncommitted
//! (a digest mismatch, a client gone) aborts its multipart upload, unless
//! it is a resumable one with a step recorded (resume.rs).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::bucket::{Bucket, Failure, Head};
use super::{digests, uploads, S3Store, MODIFIED_METADATA};
use crate::protocol::{Digest, ErrorCode, Refusal, RemoteName, STEP};
use crate::transport::BodySink;

/// The most parts a multipart upload may have (S3's limit): with parts of
/// one step, the largest file an S3 store takes is 625 GiB.
pub(super) const MAX_PARTS: u64 = 10_000;

/// The metadata key (after `x-amz-meta-`) of the random token an upload
/// gives its object: after an answer lost on the way, the object under
/// the name is known to be this upload's only if it carries its token.
const UPLOAD_METADATA: &str = "ferry-upload";

/// How much of the spool one read takes when a part is sent.
const READ_BUFFER: usize = 1 << 20;

impl S3Store {
    /// Begins receiving `size` bytes as `name`. Refuses before the body
    /// what is certain to fail: a taken name, a directory of that name, a
    /// parent that is a file, a size over what S3 takes in parts of a step.
    pub fn begin_write(
        &self,
        name: &RemoteName,
        size: u64,
    ) -> Result<(Upload, ObjectWriter), Refusal> {
        check_size(size)?;
        self.check_free(name, false)?;
        self.begin(name, false, Some(size))
    }

    /// Begins receiving a body of unknown length as `name`; with
    /// `replace`, an object of that name is replaced (atomically: S3
    /// swaps the object whole) when the upload is committed.
    pub fn begin_stream(
        &self,
        name: &RemoteName,
        replace: bool,
    ) -> Result<(Upload, ObjectWriter), Refusal> {
        self.check_free(name, replace)?;
        self.begin(name, replace, None)
    }

    pub(super) fn begin(
        &self,
        name: &RemoteName,
        replace: bool,
        size: Option<u64>,
    ) -> Result<(Upload, ObjectWriter), Refusal> {
        let writer = ObjectWriter::new(
            Arc::clone(&self.bucket),
            self.bucket.key(name),
            new_token()?,
            size,
            Parts::default(),
        )?;
        Ok((Upload { replace }, writer))
    }

    /// Refuses `name` for a new file if what is there makes the create
    /// certain to fail, or (for a file) certain to be refused. Racy by
    /// nature: the conditional create is the guarantee.
    pub(super) fn check_free(&self, name: &RemoteName, replace: bool) -> Result<(), Refusal> {
        let doing = || format!("looking up {name}");
        self.check_ancestors(name)?;
        let key = self.bucket.key(name);
        if self
            .bucket
            .has_keys_under(&format!("{key}/"))
            .map_err(|f| f.refusal(&doing()))?
        {
            return Err(Refusal::new(
                ErrorCode::IsADirectory,
                "a directory by that name exists",
            ));
        }
        if !replace
            && self
                .bucket
                .head(&key)
                .map_err(|f| f.refusal(&doing()))?
                .is_some()
        {
            return Err(taken());
        }
        Ok(())
    }

    /// Refuses a name beneath a file: no ancestor of `name` may be an
    /// object (a HEAD each).
    pub(super) fn check_ancestors(&self, name: &RemoteName) -> Result<(), Refusal> {
        let Some(parent) = name.parent() else {
            return Ok(());
        };
        let mut ancestor = String::with_capacity(parent.len());
        for component in parent.split('/') {
            if !ancestor.is_empty() {
                ancestor.push('/');
            }
            ancestor.push_str(component);
            let key = format!("{}{ancestor}", self.bucket.prefix());
            let head = (self.bucket.head(&key))
                .map_err(|f| f.refusal(&format!("looking up {ancestor}")))?;
            if head.is_some() {
                return Err(Refusal::new(
                    ErrorCode::NotADirectory,
                    "a component of the name is not a directory",
                ));
            }
        }
        Ok(())
    }
}

/// Refuses a body larger than S3 takes in parts of a step.
pub(super) fn check_size(size: u64) -> Result<(), Refusal> {
    if size > MAX_PARTS * STEP {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "{size} bytes is more than an S3 store takes ({} bytes: {MAX_PARTS} parts of {STEP})",
                MAX_PARTS * STEP
            ),
        ));
    }
    Ok(())
}

/// The refusal of a create whose name is taken: the local store's words.
pub(super) fn taken() -> Refusal {
    Refusal::new(
        ErrorCode::AlreadyExists,
        "a file by that name already exists; ferry never overwrites",
    )
}

/// A random token naming one upload, 32 hex digits.
pub(super) fn new_token() -> Result<String, Refusal> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Refusal::new(ErrorCode::Io, "no random numbers for the upload's token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How an upload is to be committed.
#[derive(Debug)]
pub struct Upload {
    /// Whether the commit replaces an object of the name (PutStream with
    /// replace) rather than create only.
    replace: bool,
}

impl Upload {
    /// Makes the received body, verified to have `digest`, appear under
    /// its name.
    pub fn commit(self, body: ObjectWriter, digest: &Digest) -> Result<(), Refusal> {
        body.commit(self.replace, digest)
    }
}

/// Where an upload's body is written: a local spool file, sent to S3 a
/// step at a time.
pub struct ObjectWriter {
    bucket: Arc<Bucket>,
    key: String,
    spool: File,
    /// Put in the object's metadata, to know it again (see
    /// [`UPLOAD_METADATA`]).
    token: String,
    /// The body's size, for a put; `None` for a stream. A stream's
    /// receive hashes each piece before it writes it, and takes no
    /// checkpoints; a put's hashes what it wrote, and does.
    size: Option<u64>,
    /// The modification time the object keeps in its metadata
    /// ([`MODIFIED_METADATA`]), if it was given one.
    modified: Option<i64>,
    parts: Mutex<Parts>,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The multipart upload of a body, once it has one.
#[derive(Default)]
struct Parts {
    /// The upload's id, from its first part on.
    upload_id: Option<String>,
    /// The parts sent, in order: part `n` (from 1) holds bytes
    /// `(n-1)*STEP..n*STEP`.
    sent: Vec<CompletedPart>,
    /// How far the spool's start is punched out.
    punched: u64,
    /// Whether the upload is completed or aborted: nothing is left to
    /// abort.
    settled: bool,
    /// Whether the upload is left open when the writer goes: a resumable
    /// upload's, which another try goes on with (resume.rs).
    kept: bool,
}

impl Parts {
    /// Where the bytes sent end.
    fn sent_to(&self) -> u64 {
        self.sent.len() as u64 * STEP
    }
}

impl ObjectWriter {
    /// A writer of `key` with a new spool; `parts` are those an earlier
    /// try sent (resume.rs), whose bytes the spool does not hold: the
    /// body is written at its own offsets, after them.
    fn new(
        bucket: Arc<Bucket>,
        key: String,
        token: String,
        size: Option<u64>,
        parts: Parts,
    ) -> Result<ObjectWriter, Refusal> {
        let spool = tempfile::tempfile().map_err(|e| {
            Refusal::new(
                ErrorCode::Io,
                format!("cannot make a spool file for the upload: {e}"),
            )
        })?;
        Ok(ObjectWriter {
            bucket,
            key,
            spool,
            token,
            size,
            modified: None,
            parts: Mutex::new(parts),
        })
    }

    /// A writer of the `size` bytes of a resumable upload to `key`, going
    /// on with the multipart upload `upload_id`, whose first parts, of a
    /// step each, have `etags`; `None`: a new upload. `token` is the
    /// upload's, kept in its record.
    pub(super) fn resumable(
        bucket: Arc<Bucket>,
        key: String,
        token: String,
        size: u64,
        upload_id: Option<String>,
        etags: &[String],
    ) -> Result<ObjectWriter, Refusal> {
        let sent: Vec<CompletedPart> = (1..)
            .zip(etags)
            .map(|(number, etag)| {
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build()
            })
            .collect();
        let parts = Parts {
            upload_id,
            punched: sent.len() as u64 * STEP,
            sent,
            ..Parts::default()
        };
        ObjectWriter::new(bucket, key, token, Some(size), parts)
    }

    /// The key written.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The bucket written to.
    pub(super) fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The multipart upload's id and the ETags of the parts that hold the
    /// first `len` bytes (whole steps), if they are all sent.
    pub(super) fn parts_of(&self, len: u64) -> Option<(String, Vec<String>)> {
        let parts = self.parts();
        let count = usize::try_from(len / STEP).ok()?;
        if parts.sent_to() < len || parts.settled {
            return None;
        }
        let etags = (parts.sent.get(..count)?.iter())
            .map(|part| part.e_tag().map(str::to_owned))
            .collect::<Option<Vec<String>>>()?;
        Some((parts.upload_id.clone()?, etags))
    }

    /// Leaves the multipart upload open when the writer goes, for a
    /// resume to go on with.
    pub(super) fn keep_open(&self) {
        self.parts().kept = true;
    }

    /// Aborts the multipart upload now, unless it is settled.
    pub(super) fn abort_now(&self) {
        let mut parts = self.parts();
        if !parts.settled {
            self.abort(&mut parts);
        }
    }

    /// Gives the object the modification time `seconds`, kept in its
    /// metadata, which `stat` and a GetTree tell rather than S3's own.
    pub(super) fn keep_modified(&mut self, seconds: i64) {
        self.modified = Some(seconds);
    }

    /// The metadata the object is created with besides the digest and
    /// the token: what [`ObjectWriter::keep_modified`] gave it.
    fn kept_metadata(&self) -> Option<HashMap<String, String>> {
        let modified = self.modified?;
        Some(HashMap::from([(
            MODIFIED_METADATA.to_owned(),
            modified.to_string(),
        )]))
    }

    fn parts(&self) -> MutexGuard<'_, Parts> {
        // A panic while the lock was held left nothing half-changed that
        // matters more than going on: the commit checks the parts anyway.
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spool's length: every byte before it is written (the transport
    /// writes a body in order, one write at a time).
    fn spooled(&self) -> io::Result<u64> {
        Ok(self.spool.metadata()?.len())
    }

    /// The spool's bytes `offset..offset+len`, as a body S3's client can
    /// send again if it retries: it reopens the spool through /proc each
    /// time.
    async fn body(&self, offset: u64, len: u64) -> Result<ByteStream, Failure> {
        ByteStream::read_from()
            .path(format!("/proc/self/fd/{}", self.spool.as_raw_fd()))
            .offset(offset)
            .length(Length::Exact(len))
            .buffer_size(READ_BUFFER)
            .build()
            .await
            .map_err(|e| Failure::broken(format!("reading the spool: {e}")))
    }

    /// Sends every whole step of the spool not sent yet, except the
    /// body's last: that part goes at the commit, so a body of one step
    /// or less never starts a multipart upload. A put knows where its body
    /// ends; a stream knows a step is not its last only once a byte
    /// beyond it has come.
    fn send_steps(&self, parts: &mut Parts, spooled: u64) -> Result<(), Failure> {
        let ready = |end: u64| match self.size {
            Some(size) => end <= spooled && end < size,
            None => end < spooled,
        };
        while ready(parts.sent_to() + STEP) {
            self.send_part(parts, STEP)?;
        }
        Ok(())
    }

    /// Sends the next part, `len` bytes long, starting the multipart
    /// upload if this is its first.
    fn send_part(&self, parts: &mut Parts, len: u64) -> Result<(), Failure> {
        let upload_id = match &parts.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self.bucket.block_on(
                    (self.bucket.client().create_multipart_upload())
                        .bucket(self.bucket.name())
                        .key(&self.key)
                        .set_metadata(self.kept_metadata())
                        .metadata(UPLOAD_METADATA, &self.token)
                        .send(),
                );
                let id = (created.map_err(|e| Failure::of(&e))?.upload_id)
                    .ok_or_else(|| Failure::broken("S3 gave no upload id".to_owned()))?;
                parts.upload_id = Some(id.clone());
                // Recorded before any part goes up, so that if this server
                // dies the upload is found and aborted (uploads.rs); an
                // upload that cannot be recorded is not gone on with.
                uploads::began(&self.bucket, &self.key, &id)?;
                id
            }
        };
        let number = i32::try_from(parts.sent.len() + 1)
            .map_err(|_| Failure::broken("too many parts".to_owned()))?;
        let offset = parts.sent_to();
        let sent = self.bucket.block_on(async {
            let body = self.body(offset, len).await?;
            (self.bucket.client().upload_part())
                .bucket(self.bucket.name())
                .key(&self.key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| Failure::of(&e))
        })?;
        parts.sent.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag)
                .build(),
        );
        Ok(())
    }

    /// Frees the spool's disk before `end`, as far as it is sent.
    fn punch(&self, parts: &mut Parts, end: u64) {
        let end = end.min(parts.sent_to());
        if end <= parts.punched {
            return;
        }
        let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        // Best effort: a file system that cannot punch keeps the bytes.
        if rustix::fs::fallocate(&self.spool, flags, parts.punched, end - parts.punched).is_ok() {
            parts.punched = end;
        }
    }

    /// Makes the body appear under its key; see the module's doc.
    pub(super) fn commit(&self, replace: bool, digest: &Digest) -> Result<(), Refusal> {
        let doing = "storing the file";
        let size = self.spooled().map_err(|e| spool_failed(&e))?;
        let mut parts = std::mem::take(&mut *self.parts());
        let committed = if parts.upload_id.is_none() {
            self.put_whole(size, replace, digest)
        } else {
            self.complete(&mut parts, size, replace, digest)
        };
        // Whatever came of it, nothing is left to abort, unless the
        // multipart upload is still open (the completion refused): then
        // the drop aborts it.
        let open = committed.is_err() && parts.upload_id.is_some() && !parts.settled;
        *self.parts() = Parts {
            settled: !open,
            ..parts
        };
        committed.map_err(|e| match e {
            Committed::Taken => taken(),
            Committed::Failed(failure) => failure.refusal(doing),
        })
    }

    /// Sends the whole body as one PutObject carrying its digest.
    fn put_whole(&self, size: u64, replace: bool, digest: &Digest) -> Result<(), Committed> {
        let put = self.bucket.block_on(async {
            let body = self.body(0, size).await?;
            (self.bucket.client().put_object())
                .bucket(self.bucket.name())
                .key(&self.key)
                .content_length(size as i64)
                .set_metadata(self.kept_metadata())
                .metadata(digests::DIGEST_METADATA, digests::hex(digest))
                .metadata(UPLOAD_METADATA, &self.token)
                .set_if_none_match((!replace).then(|| "*".to_owned()))
                .body(body)
                .send()
                .await
                .map_err(|e| Failure::of(&e))
        });
        match put {
            Ok(_) => Ok(()),
            // Taken, or ours already: the SDK retries a put whose answer
            // was lost, and the retry finds the first try's object.
            Err(failure) if failure.is_precondition_failed() => self.ours_or_taken(),
            Err(failure) => Err(Committed::Failed(failure)),
        }
    }

    /// Sends the rest of the body and completes the multipart upload.
    fn complete(
        &self,
        parts: &mut Parts,
        size: u64,
        replace: bool,
        digest: &Digest,
    ) -> Result<(), Committed> {
        self.send_steps(parts, size).map_err(Committed::Failed)?;
        if parts.sent_to() < size {
            self.send_part(parts, size - parts.sent_to())
                .map_err(Committed::Failed)?;
        }
        let upload_id = parts.upload_id.clone().unwrap_or_default();
        let completion = || {
            self.bucket
                .block_on(
                    (self.bucket.client().complete_multipart_upload())
                        .bucket(self.bucket.name())
                        .key(&self.key)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts.sent.clone()))
                                .build(),
                        )
                        .set_if_none_match((!replace).then(|| "*".to_owned()))
                        .send(),
                )
                .map_err(|e| Failure::of(&e))
        };
        let mut completed = completion();
        if completed.as_ref().is_err_and(|f| f.status.is_none()) {
            // No answer: it may or may not have been done. Once more; a
            // completion already done is answered 200, 412 or 404, all
            // settled by looking at the object below.
            completed = completion();
        }
        let etag = match completed {
            Ok(done) if replace => done.e_tag,
            Ok(_) => {
                // A repeated completion is answered 200 by some stores
                // even when another upload took the name meanwhile.
                self.ours_or_taken().inspect_err(|_| self.abort(parts))?;
                None
            }
            Err(failure) if failure.is_precondition_failed() || failure.is_not_found() => {
                self.ours_or_taken().inspect_err(|_| self.abort(parts))?;
                None
            }
            Err(failure) => return Err(Committed::Failed(failure)),
        };
        parts.settled = true;
        uploads::ended(&self.bucket, &upload_id);
        // The digest cannot be in a multipart object's metadata, fixed
        // before it was known: it goes in a record naming the ETag.
        let etag = match etag {
            Some(etag) => Some(etag),
            None => self.bucket.head(&self.key).ok().flatten().map(|h| h.etag),
        };
        if let Some(etag) = etag {
            let head = Head {
                size,
                etag,
                modified: 0,
                metadata: Default::default(),
            };
            digests::remember(&self.bucket, &self.key, &head, digest);
        }
        Ok(())
    }

    /// After a create refused, or answered ambiguously: whether the object
    /// under the key is this upload's (its token in its metadata).
    fn ours_or_taken(&self) -> Result<(), Committed> {
        match self.bucket.head(&self.key) {
            Ok(Some(head)) if head.metadata.get(UPLOAD_METADATA) == Some(&self.token) => Ok(()),
            Ok(_) => Err(Committed::Taken),
            Err(failure) => Err(Committed::Failed(failure)),
        }
    }

    /// Aborts the multipart upload now (on the blocking pool).
    fn abort(&self, parts: &mut Parts) {
        if let Some(id) = &parts.upload_id {
            let aborted = self.bucket.block_on(
                (self.bucket.client().abort_multipart_upload())
                    .bucket(self.bucket.name())
                    .key(&self.key)
                    .upload_id(id)
                    .send(),
            );
            parts.settled = aborted.is_ok();
            if parts.settled {
                uploads::ended(&self.bucket, id);
            }
        }
    }
}

/// Why a commit did not make the object.
enum Committed {
    /// Another upload has the name.
    Taken,
    Failed(Failure),
}

fn spool_failed(error: &io::Error) -> Refusal {
    Refusal::new(
        ErrorCode::Io,
        format!("reading the upload's spool: {error}"),
    )
}

impl Drop for ObjectWriter {
    /// An upload not committed leaves nothing: its multipart upload is
    /// aborted, in the background, since this may run on an async thread.
    /// A resumable upload's is kept open instead, once it has a step to
    /// go on from (see `keep_open`).
    fn drop(&mut self) {
        let parts = self.parts();
        let (Some(id), false, false) = (&parts.upload_id, parts.settled, parts.kept) else {
            return;
        };
        let abort = (self.bucket.client().abort_multipart_upload())
            .bucket(self.bucket.name())
            .key(&self.key)
            .upload_id(id);
        let forget = (self.bucket.client().delete_object())
            .bucket(self.bucket.name())
            .key(uploads::record_key(&self.bucket, id));
        let key = self.key.clone();
        self.bucket.spawn(async move {
            match abort.send().await {
                // Kept otherwise, so that a sweep aborts it later.
                Ok(_) => drop(forget.send().await),
                Err(e) => tracing::warn!(
                    key,
                    "cannot abort an upload left unfinished: {}",
                    Failure::of(&e).message
                ),
            }
        });
    }
}

impl BodySink for ObjectWriter {
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.spool.as_fd())
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        BodySink::write_all_at(&self.spool, bytes, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        BodySink::read_at(&self.spool, buf, offset)
    }

    fn reserve(&self, offset: u64, len: u64) {
        BodySink::reserve(&self.spool, offset, len);
    }

    /// Sends the whole steps spooled (all but the last byte's) as parts.
    /// A stream's bytes are hashed before they are written, so what is
    /// sent is punched out of its spool at once; a put's wait for its
    /// checkpoint, the sign that the hashing has passed them.
    fn sync_written(&self) -> io::Result<()> {
        let spooled = self.spooled()?;
        let mut parts = self.parts();
        self.send_steps(&mut parts, spooled)
            .map_err(|f| io::Error::other(f.refusal("sending a part").to_string()))?;
        if self.size.is_none() {
            let sent = parts.sent_to();
            self.punch(&mut parts, sent);
        }
        Ok(())
    }

    /// The hashing has passed `prefix`: what of it is sent is punched.
    fn checkpoint(&self, prefix: &crate::protocol::Prefix) {
        let mut parts = self.parts();
        self.punch(&mut parts, prefix.len);
    }

    /// Taken so the transport holds a put's receive within two steps of
    /// what is sent, and says when the hashing has passed a step.
    fn takes_checkpoints(&self) -> bool {
        true
    }
}
