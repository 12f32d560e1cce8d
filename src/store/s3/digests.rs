//! Where an object's BLAKE3 digest is kept, so a get can send it before
//! the body rather than hashing as it sends, and `stat` can tell it.
//!
//! An object ferry writes with one PutObject carries its digest in its
//! own metadata (`x-amz-meta-ferry-blake3`), written with the object. A
//! multipart upload's metadata is fixed when it begins, before the digest
//! is known, so for those (and for objects other tools wrote, once a get
//! has hashed them) the digest goes in a small record object beneath
//! ferry's state prefix, naming the object's ETag: a record whose ETag no
//! longer matches is about an object since replaced, and is ignored.

use serde::{Deserialize, Serialize};

use super::bucket::{Bucket, Head};
use crate::protocol::Digest;

/// The metadata key (after `x-amz-meta-`) of a digest written with its
/// object.
pub const DIGEST_METADATA: &str = "ferry-blake3";

/// Beneath the served prefix, where ferry keeps what is not served. Every
/// name component starting `.ferry-tmp-` is reserved (PROTOCOL.md §7), so
/// no client can reach it, and listings leave it out.
pub const STATE_DIR: &str = ".ferry-tmp-state";

#[derive(Serialize, Deserialize)]
struct Record {
    etag: String,
    size: u64,
    blake3: String,
}

/// The digest of the object `key`, which `head` describes, if ferry
/// knows it: from the object's metadata, else from a record that still
/// matches the object.
pub fn lookup(bucket: &Bucket, key: &str, head: &Head) -> Option<Digest> {
    if let Some(digest) = head
        .metadata
        .get(DIGEST_METADATA)
        .and_then(|hex| parse(hex))
    {
        return Some(digest);
    }
    let body = bucket.get_small(&record_key(bucket, key)).ok()??;
    let record: Record = serde_json::from_slice(&body).ok()?;
    (record.etag == head.etag && record.size == head.size)
        .then(|| parse(&record.blake3))
        .flatten()
}

/// Keeps `digest` for the object `key` as `head` describes it. Best
/// effort: a digest not kept is computed again by the next get.
pub fn remember(bucket: &Bucket, key: &str, head: &Head, digest: &Digest) {
    let record = Record {
        etag: head.etag.clone(),
        size: head.size,
        blake3: hex(digest),
    };
    if let Ok(body) = serde_json::to_vec(&record) {
        let _ = bucket.put_small(&record_key(bucket, key), body);
    }
}

/// Forgets the digest record of the object `key` (deleted or renamed).
pub fn forget(bucket: &Bucket, key: &str) {
    let _ = bucket.delete_key(&record_key(bucket, key));
}

/// The record's key: named by a hash of the object's key, so any key fits
/// S3's 1024-byte limit.
pub(super) fn record_key(bucket: &Bucket, key: &str) -> String {
    let named = blake3::hash(key.as_bytes());
    format!(
        "{}{STATE_DIR}/digests/{}",
        bucket.prefix(),
        &named.to_hex()[..40]
    )
}

/// The digest as metadata and records write it: 64 lowercase hex digits.
pub fn hex(digest: &Digest) -> String {
    blake3::Hash::from(*digest).to_hex().to_string()
}

fn parse(hex: &str) -> Option<Digest> {
    blake3::Hash::from_hex(hex)
        .ok()
        .map(|hash| *hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let digest = *blake3::hash(b"ferry").as_bytes();
        assert_eq!(hex(&digest).len(), 64);
        assert_eq!(parse(&hex(&digest)), Some(digest));
        assert_eq!(parse("not hex"), None);
    }
}
