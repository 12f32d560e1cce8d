//! Writing a tree a client puts (PROTOCOL.md §5.10) to an S3 store.
//!
//! S3 cannot make a tree appear whole: there is no rename of a prefix. So
//! a tree is written file by file, each file atomically, as a put writes
//! it (create-only, or replacing with `--replace`), for a new target as
//! for a merge: a new tree is visible as it grows, and a tree cut off
//! keeps the files it completed. Running the same put again goes on from
//! there, as any merge does: the files already there with the same size
//! and digest are skipped. There are no partials: a file cut off midway
//! is sent again whole.
//!
//! What the manifest meets is found by one recursive listing of the
//! target, a page of 1000 keys per request, rather than a HEAD per entry:
//! a tree of many small files costs a thousandth of the requests. The
//! listing is held in memory, so a target of more than [`LISTED_KEYS`]
//! keys is not listed whole; its entries are looked up one at a time
//! instead (a HEAD, and a LIST of one key for a directory). Files of the
//! same size are HEADed for their digests either way, [`AT_ONCE`] at a
//! time, once the client's digests come; and small files (bodies taken
//! whole) are sent as many at a time, since on S3 each request waits a
//! round trip.
//!
//! A directory gets a marker object only if nothing else keeps it: when
//! the second pass leaves a directory in which it wrote nothing, and
//! which holds no key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use aws_sdk_s3::types::EncodingType;

use super::bucket::{Bucket, Failure};
use super::listing::url_decoded;
use super::read::ObjectReader;
use super::write::{ObjectWriter, Upload, MAX_PARTS};
use super::{digests, S3Store};
use crate::protocol::{Digest, EntryKind, ErrorCode, Refusal, RemoteName, TreeEntry, STEP};
use crate::store::{Candidate, Meets};
use crate::transport::BodySink;

/// The most keys of a target held in memory from its listing; past
/// this, entries are looked up one at a time.
const LISTED_KEYS: usize = 100_000;

/// How many candidates' digests are looked up at once, and how many
/// small files are sent at once.
const AT_ONCE: usize = 16;

/// A tree being written to the bucket.
#[derive(Debug)]
pub struct ObjectTree {
    store: S3Store,
    /// The key prefix of the tree's top, ending in `/` (or the served
    /// prefix, for the root).
    top: String,
    /// The target's name; `None` for the root.
    target: Option<RemoteName>,
    replace: bool,
    /// What was under the target when the tree was opened, if it was
    /// listed whole.
    listed: Option<Listed>,
    /// The files the survey found with the same size, in manifest order,
    /// before their digests are looked up.
    unresolved: VecDeque<Unresolved>,
    /// The next of them, with their digests.
    candidates: VecDeque<Candidate>,
    /// Small files verified, waiting to be sent with the next few: what
    /// it is received in, and its digest. Dropped unsent, they leave
    /// nothing.
    waiting: Vec<(TreeObject, ObjectWriter, Digest)>,
    /// The directories of the entry being written, the top first: path
    /// below the top, and whether anything was written beneath it.
    chain: Vec<(String, bool)>,
}

/// The keys under a target: its files with their sizes, and its
/// directories (a marker, or a prefix of a key), by path below the top.
#[derive(Debug, Default)]
struct Listed {
    /// Whether there was any key, the top's own marker included.
    any: bool,
    files: HashMap<String, u64>,
    dirs: HashSet<String>,
}

/// What a path of the tree is in the bucket.
enum Found {
    Nothing,
    /// An object of that many bytes.
    File(u64),
    Directory,
}

/// A file the survey found with the same size, its digest not yet looked
/// up: kept small, as a manifest may have a million.
#[derive(Debug)]
struct Unresolved {
    index: u64,
    path: String,
    size: u64,
}

/// A file of the tree being received: how it is committed, and its path
/// in the tree.
#[derive(Debug)]
pub struct TreeObject {
    upload: Upload,
    path: String,
}

impl S3Store {
    /// Opens the tree `target` (`None`: the root) for a PutTree: a
    /// directory is merged into, a missing name becomes a new tree, and a
    /// file (or a name beneath one) is refused. Writes nothing yet.
    pub fn open_tree(
        &self,
        target: Option<&RemoteName>,
        replace: bool,
    ) -> Result<ObjectTree, Refusal> {
        let top = match target {
            Some(target) => {
                let doing = || format!("looking up {target}");
                self.check_ancestors(target)?;
                let key = self.bucket.key(target);
                if self
                    .bucket
                    .head(&key)
                    .map_err(|f| f.refusal(&doing()))?
                    .is_some()
                {
                    return Err(Refusal::new(
                        ErrorCode::NotADirectory,
                        "the target of the tree is not a directory",
                    ));
                }
                format!("{key}/")
            }
            None => self.bucket.prefix().to_owned(),
        };
        let listed = list_all(&self.bucket, &top)
            .map_err(|f| f.refusal("listing the target of the tree"))?;
        Ok(ObjectTree {
            store: self.clone(),
            top,
            target: target.cloned(),
            replace,
            listed,
            unresolved: VecDeque::new(),
            candidates: VecDeque::new(),
            waiting: Vec::new(),
            chain: vec![(String::new(), false)],
        })
    }
}

impl ObjectTree {
    fn bucket(&self) -> &Bucket {
        &self.store.bucket
    }

    /// Whether the target had no key when the tree was opened: a new tree.
    pub fn is_new(&self) -> bool {
        self.target.is_some() && self.listed.as_ref().is_some_and(|listed| !listed.any)
    }

    /// What `entry`, the one at `index` of the manifest, meets where it
    /// would go. A file of the same size is remembered, with the server's
    /// digest of it, for [`ObjectTree::next_candidate`].
    pub fn survey(&mut self, index: u64, entry: &TreeEntry) -> Result<Meets, Refusal> {
        let is_file = entry.kind != EntryKind::Directory;
        if is_file && entry.size > MAX_PARTS * STEP {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "{:?} has {} bytes, more than an S3 store takes ({} bytes: {MAX_PARTS} parts of {STEP})",
                    entry.path,
                    entry.size,
                    MAX_PARTS * STEP
                ),
            ));
        }
        let doing = || format!("looking up {:?}", entry.path);
        let key = format!("{}{}", self.top, entry.path);
        let other_file = if self.replace {
            Meets::Free
        } else {
            Meets::Conflict
        };
        match self
            .find(&entry.path, &key)
            .map_err(|f| f.refusal(&doing()))?
        {
            Found::Nothing => return Ok(Meets::Free),
            Found::Directory if is_file => return Ok(Meets::Conflict),
            Found::Directory => return Ok(Meets::Free),
            Found::File(_) if !is_file => return Ok(Meets::Conflict),
            Found::File(size) if size != entry.size || entry.kind != EntryKind::File => {
                return Ok(other_file)
            }
            Found::File(_) => {}
        }
        // Its digest is looked up with those of the candidates around it,
        // when the client's digests come.
        self.unresolved.push_back(Unresolved {
            index,
            path: entry.path.clone(),
            size: entry.size,
        });
        Ok(Meets::SameSize)
    }

    /// What the tree's `path`, at `key`, is in the bucket: as the listing
    /// found it, or else as a HEAD and a LIST of one key find it now.
    fn find(&self, path: &str, key: &str) -> Result<Found, Failure> {
        if let Some(listed) = &self.listed {
            return Ok(if let Some(&size) = listed.files.get(path) {
                Found::File(size)
            } else if listed.dirs.contains(path) {
                Found::Directory
            } else {
                Found::Nothing
            });
        }
        if let Some(head) = self.bucket().head(key)? {
            Ok(Found::File(head.size))
        } else if self.bucket().has_keys_under(&format!("{key}/"))? {
            Ok(Found::Directory)
        } else {
            Ok(Found::Nothing)
        }
    }

    /// The next file the survey found with the same size, in manifest
    /// order, with the server's digest of it; `None` after the last.
    pub fn next_candidate(&mut self) -> Result<Option<Candidate>, Refusal> {
        if self.candidates.is_empty() {
            self.resolve_candidates()?;
        }
        Ok(self.candidates.pop_front())
    }

    /// Finds the digests of the next few candidates, at once: each is a
    /// HEAD (unless the survey made one) and, for an object whose digest
    /// is not in its metadata, a GET of its record.
    fn resolve_candidates(&mut self) -> Result<(), Refusal> {
        let take = self.unresolved.len().min(AT_ONCE);
        let batch: Vec<Unresolved> = self.unresolved.drain(..take).collect();
        let (bucket, top) = (&self.store.bucket, self.top.as_str());
        // Threads, each blocking on the bucket's runtime as every store
        // call does (as the walk's HEADs are made).
        let digests: Vec<Result<Option<Digest>, Refusal>> = std::thread::scope(|scope| {
            let calls: Vec<_> = (batch.iter())
                .map(|unresolved| scope.spawn(move || digest_of(bucket, top, unresolved)))
                .collect();
            calls
                .into_iter()
                .map(|call| {
                    call.join()
                        .unwrap_or_else(|_| Err(Refusal::new(ErrorCode::Io, "a HEAD failed")))
                })
                .collect()
        });
        for (unresolved, digest) in batch.into_iter().zip(digests) {
            self.candidates.push_back(Candidate {
                index: unresolved.index,
                path: unresolved.path,
                // A file gone or changed since the survey: a digest no
                // content has, so it is not skipped, but a conflict
                // (or replaced), as a file of another size would be.
                digest: digest?.unwrap_or([0; 32]),
            });
        }
        Ok(())
    }

    /// Whether a file may replace what is in its way.
    pub fn replaces(&self) -> bool {
        self.replace
    }

    /// Takes the next entry of the second pass: a directory is noted (its
    /// marker comes when the pass leaves it, if it needs one); a file
    /// gets a writer, to spool its body to and send it. The small files
    /// waiting go first, so they are not held while a large one streams.
    pub fn enter(
        &mut self,
        entry: &TreeEntry,
    ) -> Result<Option<(TreeObject, ObjectWriter)>, Refusal> {
        if entry.kind != EntryKind::Directory {
            self.send_waiting()?;
        }
        self.enter_any(entry)
    }

    /// [`ObjectTree::enter`], leaving the small files waiting.
    fn enter_any(
        &mut self,
        entry: &TreeEntry,
    ) -> Result<Option<(TreeObject, ObjectWriter)>, Refusal> {
        let parent = entry.path.rsplit_once('/').map_or("", |(parent, _)| parent);
        self.leave_until(parent)?;
        if entry.kind == EntryKind::Directory {
            self.chain.push((entry.path.clone(), false));
            return Ok(None);
        }
        // The file's directories are kept by it.
        for (_, written) in &mut self.chain {
            *written = true;
        }
        let full = match &self.target {
            Some(target) => format!("{}/{}", target.as_str(), entry.path),
            None => entry.path.clone(),
        };
        let name = RemoteName::parse(&full)?;
        let (upload, mut writer) = self.store.begin(&name, self.replace, Some(entry.size))?;
        writer.keep_modified(entry.modified);
        let object = TreeObject {
            upload,
            path: entry.path.clone(),
        };
        Ok(Some((object, writer)))
    }

    /// Takes a file whose body arrived whole and verified: makes it appear
    /// under its name.
    pub fn received(
        &mut self,
        object: TreeObject,
        body: ObjectWriter,
        digest: &Digest,
    ) -> Result<(), Refusal> {
        commit(object, body, digest)
    }

    /// Takes the next entry of the second pass, a small file whose body
    /// arrived whole and verified: one PutObject, as [`ObjectTree::enter`]
    /// and [`ObjectTree::received`] make it, sent with the next few small
    /// files at once.
    pub fn write_whole(
        &mut self,
        entry: &TreeEntry,
        body: &[u8],
        digest: &Digest,
    ) -> Result<(), Refusal> {
        let Some((object, writer)) = self.enter_any(entry)? else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "tree entry {:?} came with a body but is no file",
                    entry.path
                ),
            ));
        };
        writer.write_all_at(body, 0).map_err(|e| {
            Refusal::new(
                ErrorCode::Io,
                format!("cannot spool the body of {:?}: {e}", entry.path),
            )
        })?;
        self.waiting.push((object, writer, *digest));
        if self.waiting.len() >= AT_ONCE {
            self.send_waiting()?;
        }
        Ok(())
    }

    /// Commits the small files waiting, at once: a thread each, blocking
    /// on the bucket's runtime as every store call does. The first
    /// refusal, if any, once all are done.
    fn send_waiting(&mut self) -> Result<(), Refusal> {
        let waiting = std::mem::take(&mut self.waiting);
        let committed: Vec<Result<(), Refusal>> = std::thread::scope(|scope| {
            let calls: Vec<_> = (waiting.into_iter())
                .map(|(object, body, digest)| scope.spawn(move || commit(object, body, &digest)))
                .collect();
            calls
                .into_iter()
                .map(|call| {
                    call.join()
                        .unwrap_or_else(|_| Err(Refusal::new(ErrorCode::Io, "a put failed")))
                })
                .collect()
        });
        committed.into_iter().collect()
    }

    /// Ends a tree cut off before its end: the small files that arrived
    /// verified are committed, as those before them were.
    pub fn cut_off(mut self) {
        if let Err(refusal) = self.send_waiting() {
            tracing::warn!(error = %refusal.message, "cannot keep the last files of a tree cut off");
        }
    }

    /// Completes the tree: the directories still open get their markers,
    /// the top too if the tree is new and empty.
    pub fn finish(mut self) -> Result<(), Refusal> {
        self.send_waiting()?;
        self.leave_until("")?;
        let top_written = self.chain.first().is_some_and(|(_, written)| *written);
        if self.is_new() && !top_written {
            let marker = self.top.clone();
            self.bucket()
                .create_marker(&marker)
                .map_err(|f| f.refusal("making the tree's directory"))?;
        }
        Ok(())
    }

    /// Leaves the directories of the chain down to `parent`, which the
    /// next entry is in: each one nothing was written beneath is kept by
    /// a marker, unless keys were there already.
    fn leave_until(&mut self, parent: &str) -> Result<(), Refusal> {
        while self.chain.len() > 1 && self.chain.last().is_some_and(|(path, _)| path != parent) {
            let Some((path, written)) = self.chain.pop() else {
                break;
            };
            if !written {
                self.keep_dir(&path)
                    .map_err(|f| f.refusal(&format!("making the directory {path:?}")))?;
            }
            // The directory is there now, and keeps its parent.
            if let Some((_, written)) = self.chain.last_mut() {
                *written = true;
            }
        }
        Ok(())
    }

    /// Writes the marker of the tree's directory `path` unless a key is
    /// beneath it.
    fn keep_dir(&self, path: &str) -> Result<(), Failure> {
        let marker = format!("{}{path}/", self.top);
        let has_keys = match &self.listed {
            Some(listed) => listed.dirs.contains(path),
            None => self.bucket().has_keys_under(&marker)?,
        };
        if !has_keys {
            self.bucket().create_marker(&marker)?;
        }
        Ok(())
    }
}

/// Makes the verified file `object`, received in `body`, appear under
/// its name.
fn commit(object: TreeObject, body: ObjectWriter, digest: &Digest) -> Result<(), Refusal> {
    let TreeObject { upload, path } = object;
    upload
        .commit(body, digest)
        .map_err(|refusal| match refusal.code {
            ErrorCode::AlreadyExists => Refusal::new(
                ErrorCode::AlreadyExists,
                format!("{path:?} was taken meanwhile; ferry never overwrites"),
            ),
            _ => refusal,
        })
}

/// The digest of the same-size object `unresolved`, beneath the prefix
/// `top`: the one ferry keeps, or else hashed now (a GET of the whole
/// object, which another tool wrote) and kept. `None` if it is gone, or
/// no longer of that size.
fn digest_of(
    bucket: &Arc<Bucket>,
    top: &str,
    unresolved: &Unresolved,
) -> Result<Option<Digest>, Refusal> {
    let key = format!("{top}{}", unresolved.path);
    let head = match bucket.head(&key) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(failure) => return Err(failure.refusal(&format!("looking up {:?}", unresolved.path))),
    };
    if head.size != unresolved.size {
        return Ok(None);
    }
    if let Some(digest) = digests::lookup(bucket, &key, &head) {
        return Ok(Some(digest));
    }
    ObjectReader::known(Arc::clone(bucket), key, head, None).hash()
}

/// Every key beneath the prefix `top`, as paths below it; `None` if there
/// are more than [`LISTED_KEYS`].
fn list_all(bucket: &Bucket, top: &str) -> Result<Option<Listed>, Failure> {
    let mut listed = Listed::default();
    let mut keys = 0;
    let mut pages = (bucket.client().list_objects_v2())
        .bucket(bucket.name())
        .prefix(top)
        // Readable whatever a key holds (bucket.rs).
        .encoding_type(EncodingType::Url)
        .into_paginator()
        .send();
    while let Some(page) = bucket.block_on(pages.next()) {
        let page = page.map_err(|e| Failure::of(&e))?;
        for object in page.contents() {
            keys += 1;
            if keys > LISTED_KEYS {
                return Ok(None);
            }
            listed.any = true;
            let Some(key) = object.key().and_then(url_decoded) else {
                continue; // no manifest can name it
            };
            let Some(path) = key.strip_prefix(top) else {
                continue;
            };
            // Every parent of a key is a directory; a marker's own path is
            // one too.
            let (dir, file) = match path.strip_suffix('/') {
                Some(dir) => (dir, None),
                None => (path.rsplit_once('/').map_or("", |(dir, _)| dir), Some(path)),
            };
            let mut ancestor = dir;
            while !ancestor.is_empty() && listed.dirs.insert(ancestor.to_owned()) {
                ancestor = ancestor.rsplit_once('/').map_or("", |(up, _)| up);
            }
            if let Some(file) = file {
                let size = object.size().unwrap_or(0).max(0) as u64;
                listed.files.insert(file.to_owned(), size);
            }
        }
    }
    Ok(Some(listed))
}
