//! Walking a tree of an S3 store for a GetTree (PROTOCOL.md §5.11): the
//! entries in a manifest's order, a directory before what is in it and
//! each directory's names in byte order.
//!
//! S3 lists whole keys in byte order, which is not a manifest's: `a.txt`
//! comes before `a/x` there (`.` < `/`), after it in a manifest, which
//! compares component by component. So the walk lists one level at a time
//! (the delimiter `/` gives a level's files and its directories), sorts
//! that level by name, and goes down into a directory as it gives it:
//! memory grows with the depth of the tree and the size of its levels, as
//! the local walk's does. ListObjects tells no user metadata, so each file
//! is HEADed (for the time ferry kept, and its digest), a few at once.

use std::sync::Arc;

use aws_sdk_s3::types::EncodingType;

use super::bucket::{Bucket, Failure, Head};
use super::listing::url_decoded;
use super::read::ObjectReader;
use super::{digests, modified, no_such, S3Store, DIRECTORY_MODE, FILE_MODE};
use crate::protocol::{
    Digest, EntryKind, ErrorCode, NameError, OmitReason, Refusal, RemoteName, TreeEntry,
};

/// How many files of a level are HEADed at once.
const HEADS_AT_ONCE: usize = 16;

/// A walk of the tree under a prefix, or of one object.
#[derive(Debug)]
pub struct ObjectWalk {
    bucket: Arc<Bucket>,
    /// The key prefix of the tree's top, ending in `/` (or the served
    /// prefix).
    top: String,
    /// The directories being walked, the top first.
    levels: Vec<Level>,
    /// The one object a walk of a file gives, until it is given.
    single: Option<Found>,
    /// The file given last, as its HEAD found it.
    current: Option<Found>,
    /// When the walk began: the time of a directory with no key of its own.
    began: i64,
    unusable_names: u64,
}

/// One directory of the walk.
#[derive(Debug)]
struct Level {
    /// Its path below the top, with a trailing `/`; empty for the top.
    path: String,
    /// Its names still to visit, the greatest first, so the next is popped.
    names: Vec<Listed>,
}

/// A name of a level, as its listing gave it.
#[derive(Debug)]
struct Listed {
    name: String,
    kind: EntryKind,
    /// For a file: its HEAD, once fetched (`Some(None)`: it is gone).
    head: Option<Option<Found>>,
}

/// An object as the walk HEADed it.
#[derive(Debug, Clone)]
struct Found {
    key: String,
    head: Head,
    /// Its digest, if ferry keeps one.
    digest: Option<Digest>,
}

impl S3Store {
    /// A walk of the tree under `source` (`None`: the root) for a
    /// GetTree: its directories and files, or the one object `source` is.
    pub fn walk_tree(&self, source: Option<&RemoteName>) -> Result<ObjectWalk, Refusal> {
        let bucket = Arc::clone(&self.bucket);
        let Some(source) = source else {
            let top = self.bucket.prefix().to_owned();
            return ObjectWalk::of_dir(bucket, top).map(|(walk, _)| walk);
        };
        let key = self.bucket.key(source);
        let doing = || format!("walking {source}");
        if let Some(head) = self.bucket.head(&key).map_err(|f| f.refusal(&doing()))? {
            let digest = digests::lookup(&self.bucket, &key, &head);
            let mut walk = ObjectWalk::new(bucket, key.clone());
            walk.single = Some(Found { key, head, digest });
            return Ok(walk);
        }
        match ObjectWalk::of_dir(bucket, format!("{key}/"))? {
            (walk, true) => Ok(walk),
            (_, false) => Err(no_such()),
        }
    }
}

impl ObjectWalk {
    fn new(bucket: Arc<Bucket>, top: String) -> ObjectWalk {
        let began = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        ObjectWalk {
            bucket,
            top,
            levels: Vec::new(),
            single: None,
            current: None,
            began,
            unusable_names: 0,
        }
    }

    /// Walks what is beneath the prefix `top`; says too whether any key
    /// is (a directory's marker at least).
    fn of_dir(bucket: Arc<Bucket>, top: String) -> Result<(ObjectWalk, bool), Refusal> {
        let mut walk = ObjectWalk::new(bucket, top);
        let (_, any) = walk.enter(String::new())?;
        Ok((walk, any))
    }

    /// The next entry, without a digest; `None` at the end. A directory is
    /// entered as it is given.
    pub fn next_entry(&mut self) -> Result<Option<TreeEntry>, Refusal> {
        if let Some(found) = self.single.take() {
            let name = found.key.rsplit('/').next().unwrap_or_default().to_owned();
            let entry = file_entry(&found, name);
            self.current = Some(found);
            return Ok(Some(entry));
        }
        loop {
            let Some(level) = self.levels.last_mut() else {
                return Ok(None);
            };
            if level.names.last().is_some_and(|next| next.head.is_none()) {
                self.head_next_files()?;
            }
            let Some(level) = self.levels.last_mut() else {
                return Ok(None);
            };
            let Some(listed) = level.names.pop() else {
                self.levels.pop();
                continue;
            };
            let path = format!("{}{}", level.path, listed.name);
            if RemoteName::parse(&path).is_err() {
                // Too long or too deep as a path, though fine as a name.
                self.unusable_names += 1;
                continue;
            }
            match listed.kind {
                EntryKind::Directory => {
                    let (modified, _) = self.enter(format!("{path}/"))?;
                    return Ok(Some(TreeEntry {
                        kind: EntryKind::Directory,
                        size: 0,
                        mode: DIRECTORY_MODE,
                        modified,
                        digest: None,
                        path,
                    }));
                }
                EntryKind::File | EntryKind::Other => {
                    // Gone since the level was listed: as if never there.
                    let Some(Some(found)) = listed.head else {
                        continue;
                    };
                    let entry = file_entry(&found, path);
                    self.current = Some(found);
                    return Ok(Some(entry));
                }
            }
        }
    }

    /// Opens the object [`ObjectWalk::next_entry`] gave last: reads of it
    /// fail if it has been replaced since its HEAD.
    pub fn open_current(&self) -> Result<ObjectReader, Refusal> {
        let Some(found) = &self.current else {
            return Err(Refusal::new(ErrorCode::Io, "no file to open in the walk"));
        };
        Ok(ObjectReader::known(
            Arc::clone(&self.bucket),
            found.key.clone(),
            found.head.clone(),
            found.digest,
        ))
    }

    /// The digest of the object [`ObjectWalk::next_entry`] gave last,
    /// `size` bytes long: the one ferry keeps, or else hashed now (a GET
    /// of the whole object) and kept as a get keeps it.
    pub fn digest_current(&self, size: u64) -> Result<Digest, Refusal> {
        let object = self.open_current()?;
        if let Some(digest) = object.cached_digest() {
            return Ok(digest);
        }
        match object.hash()? {
            Some(digest) if object.size() == size => Ok(digest),
            _ => {
                let key = self.current.as_ref().map_or("", |found| found.key.as_str());
                Err(Refusal::new(
                    ErrorCode::Io,
                    format!("file-changed: {key:?} changed while it was read"),
                ))
            }
        }
    }

    /// How many names were left out so far, and why; reasons with none
    /// are not named.
    pub fn omitted(&self) -> impl Iterator<Item = (OmitReason, u64)> {
        [(OmitReason::UnusableName, self.unusable_names)]
            .into_iter()
            .filter(|(_, count)| *count > 0)
    }

    /// Lists the level at `path` below the top, sorted, and makes it the
    /// level walked. Returns the directory's time (its newest key's, else
    /// the walk's start) and whether any key is beneath it.
    fn enter(&mut self, path: String) -> Result<(i64, bool), Refusal> {
        let prefix = format!("{}{path}", self.top);
        let mut names: Vec<Listed> = Vec::new();
        let mut newest = None;
        let mut any = false;
        let mut next_page = None;
        loop {
            let call = (self.bucket.client().list_objects_v2())
                .bucket(self.bucket.name())
                .prefix(&prefix)
                .delimiter("/")
                // Decoded below; see listing.rs.
                .encoding_type(EncodingType::Url)
                .set_continuation_token(next_page)
                .send();
            let page = (self.bucket.block_on(call))
                .map_err(|e| Failure::of(&e).refusal(&format!("listing {path}")))?;
            any |= !page.contents().is_empty() || !page.common_prefixes().is_empty();
            for object in page.contents() {
                let modified = object.last_modified().map(|t| t.secs());
                newest = newest.max(modified);
                let key = object.key().and_then(url_decoded);
                match key.as_deref().map(|key| key.strip_prefix(&prefix)) {
                    // The directory's own marker.
                    Some(Some("")) => {}
                    Some(Some(name)) => self.admit(&mut names, name, EntryKind::File),
                    _ => self.unusable_names += 1,
                }
            }
            for dir in page.common_prefixes() {
                let decoded = dir.prefix().and_then(url_decoded);
                let name = (decoded.as_deref())
                    .and_then(|decoded| decoded.strip_prefix(&prefix))
                    .and_then(|name| name.strip_suffix('/'));
                match name {
                    Some(name) => self.admit(&mut names, name, EntryKind::Directory),
                    None => self.unusable_names += 1,
                }
            }
            next_page = page.next_continuation_token().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || next_page.is_none() {
                break;
            }
        }
        // Byte order, the greatest first: popped, they come smallest first.
        // A name both a file and a directory (`a` and `a/x`, which S3
        // allows) comes once, as the directory: a manifest cannot hold
        // both, and the directory holds more.
        names.sort_unstable_by(|a, b| {
            (b.name.as_bytes(), b.kind == EntryKind::Directory)
                .cmp(&(a.name.as_bytes(), a.kind == EntryKind::Directory))
        });
        let before = names.len();
        names.dedup_by(|later, kept| later.name == kept.name);
        self.unusable_names += (before - names.len()) as u64;
        self.levels.push(Level { path, names });
        Ok((newest.unwrap_or(self.began), any))
    }

    /// Adds the component `name` to a level's `names`, unless it is left
    /// out: ferry's own state silently, a name no client could ask for
    /// counted.
    fn admit(&mut self, names: &mut Vec<Listed>, name: &str, kind: EntryKind) {
        match RemoteName::parse(name) {
            Ok(parsed) if parsed.as_str() == name => names.push(Listed {
                name: name.to_owned(),
                kind,
                head: None,
            }),
            Err(NameError::Reserved) => {}
            _ => self.unusable_names += 1,
        }
    }

    /// HEADs the next files of the level walked, a few at once, with the
    /// digest records of those that have no digest in their metadata.
    fn head_next_files(&mut self) -> Result<(), Refusal> {
        let Some(level) = self.levels.last_mut() else {
            return Ok(());
        };
        let prefix = format!("{}{}", self.top, level.path);
        let waiting: Vec<&mut Listed> = (level.names.iter_mut().rev())
            .take_while(|listed| listed.head.is_none())
            .filter(|listed| listed.kind == EntryKind::File)
            .take(HEADS_AT_ONCE)
            .collect();
        let bucket = &self.bucket;
        // Threads, each blocking on the bucket's runtime as every store
        // call does: the calls are short, and Bucket::head serves as it is.
        let heads: Vec<Result<Option<Found>, Failure>> = std::thread::scope(|scope| {
            let calls: Vec<_> = (waiting.iter())
                .map(|listed| {
                    let key = format!("{prefix}{}", listed.name);
                    scope.spawn(move || head_with_digest(bucket, key))
                })
                .collect();
            calls
                .into_iter()
                .map(|call| {
                    call.join()
                        .unwrap_or_else(|_| Err(Failure::broken("a HEAD failed".to_owned())))
                })
                .collect()
        });
        for (listed, head) in waiting.into_iter().zip(heads) {
            let doing = || format!("walking {}{}", level.path, listed.name);
            listed.head = Some(head.map_err(|f| f.refusal(&doing()))?);
        }
        // Directories among them need no HEAD; marked so the next call
        // looks further.
        for listed in level.names.iter_mut().rev() {
            match listed.head {
                Some(_) => {}
                None if listed.kind == EntryKind::Directory => listed.head = Some(None),
                None => break,
            }
        }
        Ok(())
    }
}

/// HEADs `key`, and finds the digest ferry keeps for it.
fn head_with_digest(bucket: &Bucket, key: String) -> Result<Option<Found>, Failure> {
    Ok(bucket.head(&key)?.map(|head| {
        let digest = digests::lookup(bucket, &key, &head);
        Found { key, head, digest }
    }))
}

/// The entry of the object `found`, at `path`.
fn file_entry(found: &Found, path: String) -> TreeEntry {
    TreeEntry {
        kind: EntryKind::File,
        size: found.head.size,
        mode: FILE_MODE,
        modified: modified(&found.head),
        digest: None,
        path,
    }
}
