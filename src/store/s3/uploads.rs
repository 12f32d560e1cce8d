//! The multipart uploads this store has open, recorded in the bucket so
//! that any server in front of it can abort those a killed server left.
//!
//! S3 keeps an upload that is never completed or aborted, invisible but
//! billed, for ever (unless the bucket has a lifecycle rule). Each upload
//! is therefore recorded under ferry's state prefix when it begins, with
//! the time by this server's clock, and the record is removed when the
//! upload ends. A sweep, at start and hourly, aborts the uploads whose
//! record is older than the partial time to live. It goes by the record's
//! time rather than S3's `Initiated`, which some S3-compatible servers
//! do not keep (moto answers a fixed date).
//!
//! A resumable upload (resume.rs) stays open when its client goes, for a
//! later try through any server to go on with; its record is written
//! again at each checkpoint and each resume ([`held`]), so it is swept
//! once no try has touched it for the time to live, and it names the
//! partial's record, which the sweep removes with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::bucket::{Bucket, Failure};
use super::digests::STATE_DIR;

#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    upload_id: String,
    /// Seconds since the Unix epoch, by the recording server's clock:
    /// when the upload began, or a resumable one was last touched.
    began: u64,
    /// The key of the record of the resumable upload this is, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partial: Option<String>,
}

/// Records that the multipart upload `upload_id` of `key` has begun.
pub fn began(bucket: &Bucket, key: &str, upload_id: &str) -> Result<(), Failure> {
    let record = Record {
        key: key.to_owned(),
        upload_id: upload_id.to_owned(),
        began: seconds(SystemTime::now()),
        partial: None,
    };
    let body = serde_json::to_vec(&record).map_err(|e| Failure::broken(e.to_string()))?;
    bucket.put_small(&record_key(bucket, upload_id), body)
}

/// Records that the resumable upload `upload_id` of `key`, whose partial
/// is recorded at `partial`, was touched now: its time to live starts
/// again.
pub fn held(bucket: &Bucket, key: &str, upload_id: &str, partial: &str) -> Result<(), Failure> {
    let record = Record {
        key: key.to_owned(),
        upload_id: upload_id.to_owned(),
        began: seconds(SystemTime::now()),
        partial: Some(partial.to_owned()),
    };
    let body = serde_json::to_vec(&record).map_err(|e| Failure::broken(e.to_string()))?;
    bucket.put_small(&record_key(bucket, upload_id), body)
}

/// Forgets the upload `upload_id`, completed or aborted. Best effort: a
/// record left behind is removed by a sweep, whose abort of an upload that
/// is gone does no harm. (An upload abandoned in `Drop` removes its record
/// from the task that aborts it, by [`record_key`].)
pub fn ended(bucket: &Bucket, upload_id: &str) {
    let _ = bucket.delete_key(&record_key(bucket, upload_id));
}

/// The key of the record of `upload_id`: named by a hash, since upload ids
/// are long and of any characters.
pub fn record_key(bucket: &Bucket, upload_id: &str) -> String {
    let named = blake3::hash(upload_id.as_bytes());
    format!(
        "{}{STATE_DIR}/uploads/{}",
        bucket.prefix(),
        &named.to_hex()[..40]
    )
}

/// Aborts the uploads recorded longer ago than `ttl`, and removes their
/// records; returns how many went. Best effort, like the local sweep: what
/// fails now is tried again at the next.
pub fn sweep(bucket: &Bucket, ttl: Duration) -> usize {
    let oldest = seconds(SystemTime::now()).saturating_sub(ttl.as_secs());
    let beneath = format!("{}{STATE_DIR}/uploads/", bucket.prefix());
    let Ok(keys) = bucket.keys_under(&beneath, None) else {
        return 0;
    };
    let mut swept = 0;
    for record_key in keys {
        let Ok(Some(body)) = bucket.get_small(&record_key) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<Record>(&body) else {
            // Not ferry's, or torn: nothing to abort by it.
            let _ = bucket.delete_key(&record_key);
            continue;
        };
        if record.began > oldest {
            continue;
        }
        let abort = (bucket.client().abort_multipart_upload())
            .bucket(bucket.name())
            .key(&record.key)
            .upload_id(&record.upload_id)
            .send();
        match bucket.block_on(abort).map_err(|e| Failure::of(&e)) {
            // Gone already: completed, or aborted by another server.
            Ok(_) => swept += 1,
            Err(failure) if failure.is_not_found() => {}
            Err(_) => continue,
        }
        if let Some(partial) = &record.partial {
            forget_partial(bucket, partial, &record.upload_id);
        }
        let _ = bucket.delete_key(&record_key);
    }
    swept + super::resume::sweep_unstarted(bucket, ttl)
}

/// Removes the partial's record at `key` if it is still of the upload
/// `upload_id` just aborted: a later try that started over wrote its own.
fn forget_partial(bucket: &Bucket, key: &str, upload_id: &str) {
    let Ok(Some((body, etag))) = bucket.get_small_tagged(key) else {
        return;
    };
    let of = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("upload_id")?.as_str().map(str::to_owned));
    if of.as_deref() == Some(upload_id) {
        let _ = bucket.delete_key_if(key, &etag);
    }
}

pub(super) fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
