//! Listing a directory of an S3 store: ListObjectsV2 beneath the
//! directory's prefix with the delimiter `/`, so each page (up to 1000)
//! holds the files of that level as objects and its directories as common
//! prefixes. A page is fetched only when the entries of the one before
//! are sent, so memory stays bounded and a listing whose client has gone
//! is not read further.

use std::collections::VecDeque;
use std::sync::Arc;

use aws_sdk_s3::types::EncodingType;

use super::bucket::{Bucket, Failure};
use super::{no_such, S3Store};
use crate::protocol::{Entry, EntryKind, NameError, OmitReason, Refusal, RemoteName};

/// A listing in progress, in S3's order (by name) page by page.
#[derive(Debug)]
pub struct ObjectListing {
    bucket: Arc<Bucket>,
    /// The directory's key prefix, ending in `/` (or the served prefix).
    prefix: String,
    long: bool,
    /// Entries of the pages fetched, not yet given.
    buffered: VecDeque<Entry>,
    /// Where the next page begins, when S3 said there is one.
    next_page: Option<String>,
    /// Whether the last page has been fetched.
    fetched_all: bool,
    unusable_names: u64,
}

impl S3Store {
    /// The entries of the root, or of the directory `dir`; a `dir` that
    /// names a file is listed as that one entry, as `ls -l file` shows it.
    pub fn list(&self, dir: Option<&RemoteName>, long: bool) -> Result<ObjectListing, Refusal> {
        let Some(name) = dir else {
            return Ok(ObjectListing::new(
                Arc::clone(&self.bucket),
                self.bucket.prefix().to_owned(),
                long,
            ));
        };
        let key = self.bucket.key(name);
        let doing = || format!("listing {name}");
        if let Some(head) = self.bucket.head(&key).map_err(|f| f.refusal(&doing()))? {
            let (size, modified) = if long {
                // The time a listing of its directory shows.
                (head.size, head.modified)
            } else {
                (0, 0)
            };
            let mut listing = ObjectListing::new(Arc::clone(&self.bucket), key, long);
            listing.buffered.push_back(Entry {
                kind: EntryKind::File,
                size,
                modified,
                name: name.file_name().to_owned(),
            });
            listing.fetched_all = true;
            return Ok(listing);
        }
        let mut listing = ObjectListing::new(Arc::clone(&self.bucket), format!("{key}/"), long);
        // A directory is there only if something is beneath it, a marker at
        // least: the first page says.
        if !listing.fetch().map_err(|f| f.refusal(&doing()))? {
            return Err(no_such());
        }
        Ok(listing)
    }
}

impl ObjectListing {
    fn new(bucket: Arc<Bucket>, prefix: String, long: bool) -> ObjectListing {
        ObjectListing {
            bucket,
            prefix,
            long,
            buffered: VecDeque::new(),
            next_page: None,
            fetched_all: false,
            unusable_names: 0,
        }
    }

    /// The next entries, at most `max` of them; none at the end.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Entry>, Refusal> {
        let mut batch = Vec::new();
        while batch.len() < max {
            if let Some(entry) = self.buffered.pop_front() {
                batch.push(entry);
                continue;
            }
            if self.fetched_all {
                break;
            }
            if let Err(failure) = self.fetch() {
                let dir = self.prefix.strip_prefix(self.bucket.prefix());
                let dir = dir.unwrap_or_default().trim_end_matches('/');
                return Err(failure.refusal(&format!("listing {dir}")));
            }
        }
        Ok(batch)
    }

    /// Whether the listing is at its end: no batch is left.
    pub fn is_done(&self) -> bool {
        self.buffered.is_empty() && self.fetched_all
    }

    /// How many names were left out so far, and why; reasons with none
    /// are not named.
    pub fn omitted(&self) -> impl Iterator<Item = (OmitReason, u64)> {
        [(OmitReason::UnusableName, self.unusable_names)]
            .into_iter()
            .filter(|(_, count)| *count > 0)
    }

    /// Fetches the next page into the buffer; returns whether the page
    /// held any key at all (the directory's marker included), which the
    /// first page of a directory that is not there does not.
    fn fetch(&mut self) -> Result<bool, Failure> {
        let call = (self.bucket.client().list_objects_v2())
            .bucket(self.bucket.name())
            .prefix(&self.prefix)
            .delimiter("/")
            // Keys come percent-encoded: a key may hold characters XML 1.0
            // cannot carry (control characters), which would otherwise make
            // the whole page unreadable.
            .encoding_type(EncodingType::Url)
            .set_continuation_token(self.next_page.take())
            .send();
        let page = self.bucket.block_on(call).map_err(|e| Failure::of(&e))?;
        let mut entries = Vec::new();
        for object in page.contents() {
            let Some(key) = object.key().map(url_decoded) else {
                continue;
            };
            let Some(name) = key
                .as_deref()
                .and_then(|key| key.strip_prefix(&self.prefix))
            else {
                // Not UTF-8 once decoded: S3 keys are, so never met.
                self.unusable_names += 1;
                continue;
            };
            // The directory's own marker.
            if name.is_empty() {
                continue;
            }
            let (size, modified) = if self.long {
                let size = object.size().unwrap_or(0).max(0) as u64;
                (size, object.last_modified().map_or(0, |t| t.secs()))
            } else {
                (0, 0)
            };
            if let Some(entry) = self.entry(name, EntryKind::File, size, modified) {
                entries.push(entry);
            }
        }
        for dir in page.common_prefixes() {
            let Some(prefix) = dir.prefix().map(url_decoded) else {
                continue;
            };
            let Some(name) = (prefix.as_deref())
                .and_then(|prefix| prefix.strip_prefix(&self.prefix))
                .and_then(|name| name.strip_suffix('/'))
            else {
                self.unusable_names += 1;
                continue;
            };
            // S3 keeps no time for a prefix; a HEAD of each marker would
            // cost a request per directory.
            if let Some(entry) = self.entry(name, EntryKind::Directory, 0, 0) {
                entries.push(entry);
            }
        }
        // Files and directories come apart in a page: merged by name.
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        self.buffered.extend(entries);
        self.next_page = page.next_continuation_token().map(str::to_owned);
        self.fetched_all = !page.is_truncated().unwrap_or(false) || self.next_page.is_none();
        Ok(!page.contents().is_empty() || !page.common_prefixes().is_empty())
    }

    /// The entry for the component `name`, or `None` if it is left out:
    /// ferry's own state silently, a name no client could ask for (empty,
    /// as in a key `a//b`, `..`, control characters) counted.
    fn entry(&mut self, name: &str, kind: EntryKind, size: u64, modified: i64) -> Option<Entry> {
        match RemoteName::parse(name) {
            // One component: a name with a `/` cannot come from a page
            // listed with the delimiter, but is not shown if it did.
            Ok(parsed) if parsed.as_str() == name => Some(Entry {
                kind,
                size,
                modified,
                name: name.to_owned(),
            }),
            Err(NameError::Reserved) => None,
            _ => {
                self.unusable_names += 1;
                None
            }
        }
    }
}

/// A key as a listing with `encoding-type=url` gives it, decoded: `%XX`
/// is the byte XX and `+` a space (AWS encodes a space so, and a `+` as
/// `%2B`). `None` if that is not UTF-8, or not well encoded.
pub(super) fn url_decoded(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(rest.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = rest.get(2..)?;
            }
            byte => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_as_s3_encodes_them() {
        assert_eq!(url_decoded("a%2Fb+c%2B%01").as_deref(), Some("a/b c+\u{1}"));
        assert_eq!(
            url_decoded("plain/key.txt").as_deref(),
            Some("plain/key.txt")
        );
        assert_eq!(url_decoded("%C3%A9").as_deref(), Some("é"));
        assert_eq!(url_decoded("%FF"), None);
        assert_eq!(url_decoded("%4"), None);
        assert_eq!(url_decoded("%zz"), None);
    }
}
