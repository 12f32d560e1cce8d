//! BLAKE3 digests kept with the files they describe, so that a get can
//! send a file without reading it a second time to hash it.
//!
//! A digest is stored in the extended attribute [`ATTRIBUTE`] together with
//! the file's size and modification time: a record whose stamp no longer
//! matches the file is ignored. This is the check rsync and make rely on; a
//! file rewritten in place with its size kept and its modification time
//! restored would defeat it, and its download would then fail the client's
//! digest check rather than deliver wrong data.
//!
//! Filesystems without user extended attributes simply cache nothing: every
//! get of a file hashes it while sending.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use rustix::fs::XattrFlags;

use crate::protocol::Digest;

/// The extended attribute that holds a file's digest record.
pub const ATTRIBUTE: &str = "user.ferry.blake3";

/// The first byte of a record, so the layout can change later.
const RECORD_VERSION: u8 = 1;

/// Version, size, modification seconds and nanoseconds, digest.
const RECORD_LEN: usize = 1 + 8 + 8 + 4 + 32;

/// A digest is remembered after a get only if the file has not been
/// modified for this long: a file written within the clock's granularity of
/// the stamp could change again without its modification time moving.
const SETTLED: Duration = Duration::from_secs(2);

/// What a digest is valid for: one state of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    size: u64,
    modified_seconds: i64,
    modified_nanos: u32,
}

impl Stamp {
    /// The file's length when stamped.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's modification time when stamped, in whole seconds since
    /// the epoch.
    pub fn modified_seconds(&self) -> i64 {
        self.modified_seconds
    }

    /// The stamp of an open file now.
    pub fn of(file: &File) -> std::io::Result<Stamp> {
        let metadata = file.metadata()?;
        Ok(Stamp {
            size: metadata.size(),
            modified_seconds: metadata.mtime(),
            // Always below 10^9.
            modified_nanos: u32::try_from(metadata.mtime_nsec()).unwrap_or(0),
        })
    }

    /// Whether the file has gone unmodified long enough that its stamp can
    /// be trusted to change with its content.
    pub fn is_settled(&self) -> bool {
        let modified = SystemTime::UNIX_EPOCH
            + Duration::from_secs(self.modified_seconds.max(0).unsigned_abs())
            + Duration::from_nanos(self.modified_nanos.into());
        modified
            .elapsed()
            .is_ok_and(|since_modified| since_modified >= SETTLED)
    }
}

/// The digest recorded for `file`, if there is one and it belongs to `stamp`.
pub fn lookup(file: &File, stamp: &Stamp) -> Option<Digest> {
    let mut record = [0; RECORD_LEN];
    match rustix::fs::fgetxattr(file, ATTRIBUTE, &mut record) {
        Ok(RECORD_LEN) => {}
        _ => return None,
    }
    let (recorded, digest) = decode(&record)?;
    (recorded == *stamp).then_some(digest)
}

/// Records `digest` for `file` in the state `stamp`. Best effort: a
/// filesystem without extended attributes, or a file the server may not
/// change, just goes uncached.
pub fn remember(file: &File, stamp: &Stamp, digest: &Digest) {
    let record = encode(stamp, digest);
    if let Err(e) = rustix::fs::fsetxattr(file, ATTRIBUTE, &record, XattrFlags::empty()) {
        tracing::debug!(error = %e, "cannot cache a digest");
    }
}

fn encode(stamp: &Stamp, digest: &Digest) -> [u8; RECORD_LEN] {
    let mut record = [0; RECORD_LEN];
    record[0] = RECORD_VERSION;
    record[1..9].copy_from_slice(&stamp.size.to_be_bytes());
    record[9..17].copy_from_slice(&stamp.modified_seconds.to_be_bytes());
    record[17..21].copy_from_slice(&stamp.modified_nanos.to_be_bytes());
    record[21..].copy_from_slice(digest);
    record
}

fn decode(record: &[u8; RECORD_LEN]) -> Option<(Stamp, Digest)> {
    let (&version, rest) = record.split_first()?;
    if version != RECORD_VERSION {
        return None;
    }
    let (size, rest) = rest.split_first_chunk::<8>()?;
    let (seconds, rest) = rest.split_first_chunk::<8>()?;
    let (nanos, rest) = rest.split_first_chunk::<4>()?;
    let digest: Digest = rest.try_into().ok()?;
    let stamp = Stamp {
        size: u64::from_be_bytes(*size),
        modified_seconds: i64::from_be_bytes(*seconds),
        modified_nanos: u32::from_be_bytes(*nanos),
    };
    Some((stamp, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn stamp() -> Stamp {
        Stamp {
            size: 1 << 40,
            modified_seconds: -5,
            modified_nanos: 999_999_999,
        }
    }

    #[test]
    fn records_round_trip() {
        let digest = [7; 32];
        assert_eq!(decode(&encode(&stamp(), &digest)), Some((stamp(), digest)));
    }

    #[test]
    fn records_of_another_version_are_ignored() {
        let mut record = encode(&stamp(), &[7; 32]);
        record[0] = RECORD_VERSION + 1;
        assert_eq!(decode(&record), None);
    }

    #[test]
    fn a_remembered_digest_is_found_until_the_file_changes() {
        let mut file = tempfile::tempfile_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        file.write_all(b"first").unwrap();
        let before = Stamp::of(&file).unwrap();
        remember(&file, &before, &[1; 32]);
        assert_eq!(lookup(&file, &before), Some([1; 32]));

        file.write_all(b" and more").unwrap();
        let after = Stamp::of(&file).unwrap();
        assert_ne!(before, after);
        assert_eq!(lookup(&file, &after), None);
    }

    #[test]
    fn a_freshly_written_file_is_not_settled() {
        let file = tempfile::tempfile_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        assert!(!Stamp::of(&file).unwrap().is_settled());
    }
}
