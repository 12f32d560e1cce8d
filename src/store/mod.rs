//! The one place the server meets stored files: every operation a request
//! makes on what is served, shaped for the requests rather than for the
//! storage beneath. The server names only what this module exports.
//!
//! [`Store`] is the seam: an enum of the backends, each of its methods a
//! `match` with an arm per backend, so a new backend does not compile
//! until every request has been decided for it. A [`StoreSpec`] says which
//! backend, and where, before the store is opened. There are two: a
//! directory on the local disk ([`LocalStore`]) and objects under a prefix
//! of an S3 bucket ([`S3Store`], designed in `docs/design/s3-store.md`).
//!
//! The handles a request holds while it works ([`ReadFile`], [`WriteFile`],
//! [`Upload`], [`ResumableUpload`], [`Listing`], [`TreeWalk`],
//! [`TreeWrite`], [`TreeFile`], and the [`Partial`] a resumable upload
//! writes to) are the local store's own types until a second backend has
//! a handle of that kind: then the name becomes an enum here, as every
//! one of them now is, a change to this module alone, since the server
//! names them only through it. (The client keeps its partials as
//! `crate::partial::Partial`, the local arm's type.) Made enums of one
//! variant, they would be
//! methods that forward and decide nothing, and not every backend will
//! need every handle: one that does not serve PutTree has no `TreeWrite`
//! of its own.
//!
//! All methods block; callers run them off the async threads. What a
//! request is refused for comes back as a [`Refusal`], ready for an `Error`
//! frame.

mod local;
pub mod s3;

use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::partial::Found;
use crate::protocol::{
    Digest, Entry, ErrorCode, Info, OmitReason, Prefix, Refusal, RemoteName, TreeEntry,
};
use crate::transport::{BodySink, BodySource};

/// Where a file of a PutTree is received: as a put's body is.
pub use self::WriteFile as TreeBody;
pub use local::{classify, Candidate, Leftover, LocalStore, Meets, Owner, Removed, PARTIALS_DIR};
use s3::{ObjectWriter, S3Spec, S3Store};

/// Where the served files are to be kept: what a server is configured
/// with, before the store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A directory on this machine's disk, created with its parents if
    /// missing.
    Local(PathBuf),
    /// Objects under a prefix of an S3 bucket.
    S3(S3Spec),
}

/// Why a store could not be opened: the server does not start, rather
/// than fail every request.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local directory could not be made, opened or searched.
    // The cause is the error's source; `{:#}` prints it after this.
    #[error("cannot serve directory {path}")]
    Directory { path: PathBuf, source: io::Error },
    /// The bucket could not be reached, or not listed.
    #[error(transparent)]
    S3(#[from] s3::OpenError),
}

/// The served files, in whichever backend holds them.
#[derive(Debug)]
pub enum Store {
    /// A directory on this machine's disk.
    Local(LocalStore),
    /// Objects in an S3 bucket.
    S3(S3Store),
}

impl Store {
    /// Opens the store `spec` names.
    pub fn open(spec: &StoreSpec) -> Result<Store, OpenError> {
        match spec {
            StoreSpec::Local(path) => {
                LocalStore::open(path)
                    .map(Store::Local)
                    .map_err(|source| OpenError::Directory {
                        path: path.clone(),
                        source,
                    })
            }
            StoreSpec::S3(spec) => Ok(Store::S3(S3Store::open(spec)?)),
        }
    }

    /// What is served, as the server's start line names it: for a local
    /// store, the directory's absolute path.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(store) => store.path().display().to_string(),
            Store::S3(store) => store.describe(),
        }
    }

    /// Removes what uploads of dead processes left (a server killed
    /// mid-upload), keeping what processes still running hold; this
    /// process started at `started`.
    pub fn remove_leftovers(&self, started: SystemTime) -> Vec<Leftover> {
        match self {
            Store::Local(store) => store.remove_leftovers(started),
            Store::S3(_) => Vec::new(),
        }
    }

    /// Removes the partials no upload touched for `ttl`; returns how many
    /// went.
    pub fn sweep_partials(&self, ttl: Duration) -> usize {
        match self {
            Store::Local(store) => store.sweep_partials(ttl),
            Store::S3(store) => store.sweep_uploads(ttl),
        }
    }

    /// Opens the file `name` for a get.
    pub fn open_read(&self, name: &RemoteName) -> Result<ReadFile, Refusal> {
        match self {
            Store::Local(store) => store.open_read(name).map(ReadFile::Local),
            Store::S3(store) => store.open_read(name).map(ReadFile::S3),
        }
    }

    /// Begins receiving `size` bytes as `name`, which appears only when the
    /// upload is committed. Refuses a taken name, and a file larger than
    /// the store can hold, before it makes anything.
    pub fn begin_write(
        &self,
        name: &RemoteName,
        size: u64,
    ) -> Result<(Upload, WriteFile), Refusal> {
        match self {
            Store::Local(store) => (store.begin_write(name, size))
                .map(|(upload, body)| (Upload::Local(upload), WriteFile::Local(body))),
            Store::S3(store) => (store.begin_write(name, size))
                .map(|(upload, body)| (Upload::S3(upload), WriteFile::S3(body))),
        }
    }

    /// Begins receiving a body of unknown length as `name`, as
    /// [`Store::begin_write`] does. With `replace`, a file of that name is
    /// replaced, atomically, when the upload is committed.
    pub fn begin_stream(
        &self,
        name: &RemoteName,
        replace: bool,
    ) -> Result<(Upload, WriteFile), Refusal> {
        match self {
            Store::Local(store) => (store.begin_stream(name, replace))
                .map(|(upload, body)| (Upload::Local(upload), WriteFile::Local(body))),
            Store::S3(store) => (store.begin_stream(name, replace))
                .map(|(upload, body)| (Upload::S3(upload), WriteFile::S3(body))),
        }
    }

    /// Begins a resumable upload of `size` bytes to `name` for `owner`,
    /// from a source last modified at `modified`: goes on from what an
    /// earlier try of the owner's kept and proved, unless `restart`.
    /// Refuses, before anything is written, what [`Store::begin_write`]
    /// refuses.
    pub fn begin_resumable(
        &self,
        owner: &Owner,
        name: &RemoteName,
        size: u64,
        modified: i64,
        restart: bool,
    ) -> Result<(ResumableUpload, Partial, Found), Refusal> {
        match self {
            Store::Local(store) => (store.begin_resumable(owner, name, size, modified, restart))
                .map(|(upload, partial, found)| {
                    (
                        ResumableUpload::Local(upload),
                        Partial::Local(partial),
                        found,
                    )
                }),
            Store::S3(store) => (store.begin_resumable(owner, name, size, modified, restart)).map(
                |(upload, partial, found)| {
                    (ResumableUpload::S3(upload), Partial::S3(partial), found)
                },
            ),
        }
    }

    /// The entries of the root, or of the directory `dir`, a batch at a
    /// time; a `dir` that is not a directory is listed as its one entry.
    pub fn list(&self, dir: Option<&RemoteName>, long: bool) -> Result<Listing, Refusal> {
        match self {
            Store::Local(store) => store.list(dir, long).map(Listing::Local),
            Store::S3(store) => store.list(dir, long).map(Listing::S3),
        }
    }

    /// A walk of the tree under `source` (`None`: the root) for a GetTree:
    /// its directories and files, or the one file `source` is.
    pub fn walk_tree(&self, source: Option<&RemoteName>) -> Result<TreeWalk, Refusal> {
        match self {
            Store::Local(store) => store.walk_tree(source).map(TreeWalk::Local),
            Store::S3(store) => store
                .walk_tree(source)
                .map(|walk| TreeWalk::S3(Box::new(walk))),
        }
    }

    /// What `name` (`None`: the root) is: kind, size, time, mode, and the
    /// digest of a file whose digest the store has at hand.
    pub fn stat(&self, name: Option<&RemoteName>) -> Result<Info, Refusal> {
        match self {
            Store::Local(store) => store.stat(name),
            Store::S3(store) => store.stat(name),
        }
    }

    /// Removes the file `name`; refuses directories.
    pub fn delete(&self, name: &RemoteName) -> Result<(), Refusal> {
        match self {
            Store::Local(store) => store.delete(name),
            Store::S3(store) => store.delete(name),
        }
    }

    /// Removes `name` and, if it is a directory, everything in it.
    pub fn delete_tree(&self, name: &RemoteName) -> Result<Removed, Refusal> {
        match self {
            Store::Local(store) => store.delete_tree(name),
            Store::S3(store) => store.delete_tree(name),
        }
    }

    /// Makes the directory `name`; with `parents`, its missing parents too,
    /// and an existing directory is then no error.
    pub fn make_dir(&self, name: &RemoteName, parents: bool) -> Result<(), Refusal> {
        match self {
            Store::Local(store) => store.make_dir(name, parents),
            Store::S3(store) => store.make_dir(name, parents),
        }
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &RemoteName) -> Result<(), Refusal> {
        match self {
            Store::Local(store) => store.remove_dir(name),
            Store::S3(store) => store.remove_dir(name),
        }
    }

    /// Gives `from` the name `to`, never replacing anything.
    pub fn rename(&self, from: &RemoteName, to: &RemoteName) -> Result<(), Refusal> {
        match self {
            Store::Local(store) => store.rename(from, to),
            Store::S3(store) => store.rename(from, to),
        }
    }

    /// Opens the tree `target` (`None`: the root) for a PutTree: a
    /// directory is merged into; a missing name becomes a new tree, which
    /// takes `top`'s mode and time at the end, if given. A new tree goes on
    /// from what an earlier try of `owner`'s kept, unless `restart`.
    pub fn open_tree(
        &self,
        target: Option<&RemoteName>,
        replace: bool,
        top: Option<(u32, i64)>,
        owner: &Owner,
        restart: bool,
    ) -> Result<TreeWrite, Refusal> {
        match self {
            Store::Local(store) => (store.open_tree(target, replace, top, owner, restart))
                .map(|tree| TreeWrite::Local(Box::new(tree))),
            // No staging on S3: nothing to go on from, or to restart.
            Store::S3(store) => {
                (store.open_tree(target, replace)).map(|tree| TreeWrite::S3(Box::new(tree)))
            }
        }
    }

    /// Whether a PutTree receives its files of more than a step into
    /// partials ([`TreeWrite::enter_partial`]), so a cut keeps what came
    /// of them; otherwise as its other files ([`TreeWrite::enter`]).
    pub fn takes_tree_partials(&self) -> bool {
        match self {
            Store::Local(_) => true,
            // A tree on S3 keeps whole files only.
            Store::S3(_) => false,
        }
    }
}

/// A tree being written for a PutTree (PROTOCOL.md §5.10). Both kinds
/// are boxed: a tree moves to the blocking pool and back for every batch
/// of its entries.
pub enum TreeWrite {
    /// Staged on the local disk, taking its names in batches; a new tree
    /// appears whole.
    Local(Box<local::TreeWrite>),
    /// Written to the bucket file by file, each file atomically.
    S3(Box<s3::ObjectTree>),
}

impl TreeWrite {
    /// Whether the tree goes to a new name.
    pub fn is_new(&self) -> bool {
        match self {
            TreeWrite::Local(tree) => tree.is_new(),
            TreeWrite::S3(tree) => tree.is_new(),
        }
    }

    /// What `entry`, the one at `index` of the manifest, meets where it
    /// would go. A file of the same size is remembered, with the store's
    /// digest of it, for [`TreeWrite::next_candidate`].
    pub fn survey(&mut self, index: u64, entry: &TreeEntry) -> Result<Meets, Refusal> {
        match self {
            TreeWrite::Local(tree) => tree.survey(index, entry),
            TreeWrite::S3(tree) => tree.survey(index, entry),
        }
    }

    /// The partials an earlier try left that prove a prefix: manifest
    /// index, path and prefix, in manifest order.
    pub fn held(&self) -> Vec<(u64, String, Prefix)> {
        match self {
            TreeWrite::Local(tree) => tree.held(),
            TreeWrite::S3(_) => Vec::new(),
        }
    }

    /// The next file the survey found with the same size, in manifest
    /// order; `None` after the last.
    pub fn next_candidate(&mut self) -> Result<Option<Candidate>, Refusal> {
        match self {
            TreeWrite::Local(tree) => tree.next_candidate(),
            TreeWrite::S3(tree) => tree.next_candidate(),
        }
    }

    /// Refuses a tree of `bytes` the store cannot hold.
    pub fn check_space(&self, bytes: u64) -> Result<(), Refusal> {
        match self {
            TreeWrite::Local(tree) => tree.check_space(bytes),
            // S3 tells no free space.
            TreeWrite::S3(_) => Ok(()),
        }
    }

    /// Makes what the tree needs before its first entry.
    pub fn start(&mut self) -> Result<(), Refusal> {
        match self {
            TreeWrite::Local(tree) => tree.start(),
            TreeWrite::S3(_) => Ok(()),
        }
    }

    /// Takes the next entry of the second pass: a directory is made or
    /// noted; a file gets where its body is written.
    pub fn enter(&mut self, entry: &TreeEntry) -> Result<Option<(TreeFile, WriteFile)>, Refusal> {
        Ok(match self {
            TreeWrite::Local(tree) => (tree.enter(entry)?)
                .map(|(file, body)| (TreeFile::Local(file), WriteFile::Local(body))),
            TreeWrite::S3(tree) => (tree.enter(entry)?)
                .map(|(object, body)| (TreeFile::S3(object), WriteFile::S3(body))),
        })
    }

    /// Takes the next entry of the second pass, a file of more than a
    /// step, into a partial (stores that
    /// [take tree partials](Store::takes_tree_partials) only: the local
    /// store, whose partial type this is).
    pub fn enter_partial(
        &mut self,
        entry: &TreeEntry,
    ) -> Result<(crate::partial::Partial, Prefix), Refusal> {
        match self {
            TreeWrite::Local(tree) => tree.enter_partial(entry),
            TreeWrite::S3(_) => Err(no_tree_partials()),
        }
    }

    /// Takes a file whose body arrived whole and verified in `partial`.
    pub fn received_partial(
        &mut self,
        partial: &crate::partial::Partial,
        entry: &TreeEntry,
        digest: &Digest,
    ) -> Result<(), Refusal> {
        match self {
            TreeWrite::Local(tree) => tree.received_partial(partial, entry, digest),
            TreeWrite::S3(_) => Err(no_tree_partials()),
        }
    }

    /// Takes a file whose body arrived whole and verified.
    pub fn received(
        &mut self,
        file: TreeFile,
        body: WriteFile,
        digest: &Digest,
    ) -> Result<(), Refusal> {
        match (self, file, body) {
            (TreeWrite::Local(tree), TreeFile::Local(file), WriteFile::Local(body)) => {
                tree.received(file, body, digest)
            }
            (TreeWrite::S3(tree), TreeFile::S3(object), WriteFile::S3(body)) => {
                tree.received(object, body, digest)
            }
            _ => Err(Refusal::new(
                ErrorCode::Io,
                "internal: a tree's file received with another store's body",
            )),
        }
    }

    /// Takes the next entry of the second pass, a small file whose body
    /// arrived whole and verified, in one step.
    pub fn write_whole(
        &mut self,
        entry: &TreeEntry,
        body: &[u8],
        digest: &Digest,
    ) -> Result<(), Refusal> {
        match self {
            TreeWrite::Local(tree) => tree.write_whole(entry, body, digest),
            TreeWrite::S3(tree) => tree.write_whole(entry, body, digest),
        }
    }

    /// Completes the tree.
    pub fn finish(self) -> Result<(), Refusal> {
        match self {
            TreeWrite::Local(tree) => (*tree).finish(),
            TreeWrite::S3(tree) => (*tree).finish(),
        }
    }

    /// Ends a tree cut off before its end: what can be kept for the next
    /// try is kept (on S3, every file that arrived verified), the rest
    /// undone.
    pub fn cut_off(self) {
        match self {
            TreeWrite::Local(tree) => (*tree).cut_off(),
            // A file not committed aborts its upload when dropped.
            TreeWrite::S3(tree) => (*tree).cut_off(),
        }
    }

    /// Ends a tree that failed: nothing of it is kept that can be undone
    /// (on S3, the files committed stay).
    pub fn discard(self) {
        match self {
            TreeWrite::Local(tree) => (*tree).discard(),
            TreeWrite::S3(_) => {}
        }
    }

    /// Whether a file may replace what is in its way.
    pub fn replaces(&self) -> bool {
        match self {
            TreeWrite::Local(tree) => tree.replaces(),
            TreeWrite::S3(tree) => tree.replaces(),
        }
    }
}

/// A file of a PutTree being received, to be handed back to
/// [`TreeWrite::received`].
pub enum TreeFile {
    Local(local::TreeFile),
    S3(s3::TreeObject),
}

/// The refusal of a partial asked of a store whose trees take none.
fn no_tree_partials() -> Refusal {
    Refusal::new(
        ErrorCode::Io,
        "internal: this store receives no file of a tree into a partial",
    )
}

/// A file opened for a get: its size, and its digest if the store has it.
#[derive(Debug)]
pub enum ReadFile {
    /// A file on the local disk: a descriptor, sent by sendfile(2).
    Local(local::ReadFile),
    /// An object, read by ranged GETs and sent in chunks.
    S3(s3::ObjectReader),
}

impl ReadFile {
    /// The file's size when it was opened: what a get sends.
    pub fn size(&self) -> u64 {
        match self {
            ReadFile::Local(file) => file.size(),
            ReadFile::S3(object) => object.size(),
        }
    }

    /// The file's modification time when it was opened, in whole seconds
    /// since the epoch: with the size, what a resumed get checks the
    /// client's partial was made of.
    pub fn modified(&self) -> i64 {
        match self {
            ReadFile::Local(file) => file.modified(),
            ReadFile::S3(object) => object.modified(),
        }
    }

    /// The file's digest, if the store has it for the file as it is.
    pub fn cached_digest(&self) -> Option<Digest> {
        match self {
            ReadFile::Local(file) => file.cached_digest(),
            ReadFile::S3(object) => object.cached_digest(),
        }
    }

    /// Keeps `digest`, just computed while sending the file, for later
    /// gets.
    pub fn remember(&self, digest: &Digest) {
        match self {
            ReadFile::Local(file) => file.remember(digest),
            ReadFile::S3(object) => object.remember(digest),
        }
    }

    /// Reads the file whole, as large as it was when opened, with its
    /// digest. `None` if it changed meanwhile. For small files only.
    pub fn read_whole(&self) -> Result<Option<(Vec<u8>, Digest)>, Refusal> {
        match self {
            ReadFile::Local(file) => file.read_whole(),
            ReadFile::S3(object) => object.read_whole(),
        }
    }
}

impl BodySource for ReadFile {
    fn raw_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            ReadFile::Local(file) => BodySource::raw_fd(file),
            // No descriptor: the transport reads it in chunks.
            ReadFile::S3(_) => None,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            ReadFile::Local(file) => BodySource::read_at(file, buf, offset),
            ReadFile::S3(object) => object.read_at(buf, offset),
        }
    }
}

/// A listing in progress, read a batch at a time.
#[derive(Debug)]
pub enum Listing {
    /// A directory on the local disk, in its own order.
    Local(local::Listing),
    /// A prefix of a bucket, a page of keys at a time.
    S3(s3::ObjectListing),
}

impl Listing {
    /// The next entries, at most `max` of them; none at the end.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Entry>, Refusal> {
        match self {
            Listing::Local(listing) => listing.next_batch(max),
            Listing::S3(listing) => listing.next_batch(max),
        }
    }

    /// Whether the listing is at its end: no batch is left.
    pub fn is_done(&self) -> bool {
        match self {
            Listing::Local(listing) => listing.is_done(),
            Listing::S3(listing) => listing.is_done(),
        }
    }

    /// How many names were left out so far, and why; reasons with none
    /// are not named.
    pub fn omitted(&self) -> Vec<(OmitReason, u64)> {
        match self {
            Listing::Local(listing) => listing.omitted().collect(),
            Listing::S3(listing) => listing.omitted().collect(),
        }
    }
}

/// A walk of a tree for a GetTree, in a manifest's order.
#[derive(Debug)]
pub enum TreeWalk {
    /// A directory on the local disk.
    Local(local::TreeWalk),
    /// A prefix of a bucket, a level at a time. Boxed: it holds the HEAD
    /// of the file given last, and the walk moves to the blocking pool
    /// and back for every batch.
    S3(Box<s3::ObjectWalk>),
}

impl TreeWalk {
    /// The next entry, without a digest; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<TreeEntry>, Refusal> {
        match self {
            TreeWalk::Local(walk) => walk.next_entry(),
            TreeWalk::S3(walk) => walk.next_entry(),
        }
    }

    /// Opens the file [`TreeWalk::next_entry`] gave last, refusing
    /// anything else that took its name since.
    pub fn open_current(&self) -> Result<ReadFile, Refusal> {
        match self {
            TreeWalk::Local(walk) => walk.open_current().map(ReadFile::Local),
            TreeWalk::S3(walk) => walk.open_current().map(ReadFile::S3),
        }
    }

    /// The digest of the file [`TreeWalk::next_entry`] gave last, `size`
    /// bytes long: the store's, or else computed now and kept.
    pub fn digest_current(&self, size: u64) -> Result<Digest, Refusal> {
        match self {
            TreeWalk::Local(walk) => walk.digest_current(size),
            TreeWalk::S3(walk) => walk.digest_current(size),
        }
    }

    /// How many names were left out so far, and why; reasons with none
    /// are not named.
    pub fn omitted(&self) -> Vec<(OmitReason, u64)> {
        match self {
            TreeWalk::Local(walk) => walk.omitted().collect(),
            TreeWalk::S3(walk) => walk.omitted().collect(),
        }
    }
}

/// Where an upload's body is written until it is committed.
#[derive(Debug)]
pub enum WriteFile {
    /// A hidden temporary file beside the final name.
    Local(local::WriteFile),
    /// A local spool, sent to the bucket a step at a time.
    S3(ObjectWriter),
}

impl BodySink for WriteFile {
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            WriteFile::Local(file) => BodySink::raw_fd(file),
            WriteFile::S3(writer) => writer.raw_fd(),
        }
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        match self {
            WriteFile::Local(file) => BodySink::write_all_at(file, bytes, offset),
            WriteFile::S3(writer) => writer.write_all_at(bytes, offset),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            WriteFile::Local(file) => BodySink::read_at(file, buf, offset),
            WriteFile::S3(writer) => BodySink::read_at(writer, buf, offset),
        }
    }

    fn reserve(&self, offset: u64, len: u64) {
        match self {
            WriteFile::Local(file) => BodySink::reserve(file, offset, len),
            WriteFile::S3(writer) => writer.reserve(offset, len),
        }
    }

    fn sync_written(&self) -> io::Result<()> {
        match self {
            WriteFile::Local(file) => BodySink::sync_written(file),
            WriteFile::S3(writer) => writer.sync_written(),
        }
    }

    fn checkpoint(&self, prefix: &Prefix) {
        match self {
            WriteFile::Local(file) => BodySink::checkpoint(file, prefix),
            WriteFile::S3(writer) => writer.checkpoint(prefix),
        }
    }

    fn takes_checkpoints(&self) -> bool {
        match self {
            WriteFile::Local(file) => BodySink::takes_checkpoints(file),
            WriteFile::S3(writer) => writer.takes_checkpoints(),
        }
    }
}

/// An upload begun, to be committed once its body is whole and verified;
/// dropped uncommitted, it leaves nothing under the name.
#[derive(Debug)]
pub enum Upload {
    Local(local::Upload),
    S3(s3::Upload),
}

impl Upload {
    /// Makes the received `body`, verified to have `digest`, appear under
    /// its name.
    pub fn commit(self, body: WriteFile, digest: &Digest) -> Result<(), Refusal> {
        match (self, body) {
            (Upload::Local(upload), WriteFile::Local(body)) => upload.commit(body, digest),
            (Upload::S3(upload), WriteFile::S3(body)) => upload.commit(body, digest),
            _ => Err(Refusal::new(
                ErrorCode::Io,
                "internal: an upload committed with another store's body",
            )),
        }
    }
}

/// A resumable upload begun, committed with the [`Partial`] it wrote to
/// once the body is whole and verified.
#[derive(Debug)]
pub enum ResumableUpload {
    Local(local::ResumableUpload),
    S3(s3::ResumableObject),
}

impl ResumableUpload {
    /// Gives the complete, verified `partial` its name, never replacing
    /// anything, with `digest` kept for later gets.
    pub fn commit(self, partial: &Partial, digest: &Digest) -> Result<(), Refusal> {
        match (self, partial) {
            (ResumableUpload::Local(upload), Partial::Local(partial)) => {
                upload.commit(partial, digest)
            }
            (ResumableUpload::S3(upload), Partial::S3(partial)) => upload.commit(partial, digest),
            _ => Err(Refusal::new(
                ErrorCode::Io,
                "internal: an upload committed with another store's partial",
            )),
        }
    }
}

/// Where a resumable upload's body is written, kept when it is cut off
/// for a later try to go on from. A clone is another handle on the same
/// partial.
#[derive(Clone, Debug)]
pub enum Partial {
    /// A hidden file with a record beside it (the client's kind too).
    Local(crate::partial::Partial),
    /// A multipart upload left open, recorded in the bucket.
    S3(s3::ObjectPartial),
}

impl Partial {
    /// The proven prefix the body goes on from.
    pub fn prefix(&self) -> Prefix {
        match self {
            Partial::Local(partial) => partial.prefix(),
            Partial::S3(partial) => partial.prefix(),
        }
    }

    /// Removes the partial: its data cannot be used.
    pub fn discard(&self) -> io::Result<()> {
        match self {
            Partial::Local(partial) => partial.discard(),
            Partial::S3(partial) => partial.discard(),
        }
    }
}

impl BodySink for Partial {
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Partial::Local(partial) => BodySink::raw_fd(partial),
            Partial::S3(partial) => partial.raw_fd(),
        }
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Partial::Local(partial) => BodySink::write_all_at(partial, bytes, offset),
            Partial::S3(partial) => partial.write_all_at(bytes, offset),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Partial::Local(partial) => BodySink::read_at(partial, buf, offset),
            Partial::S3(partial) => BodySink::read_at(partial, buf, offset),
        }
    }

    fn reserve(&self, offset: u64, len: u64) {
        match self {
            Partial::Local(partial) => BodySink::reserve(partial, offset, len),
            Partial::S3(partial) => partial.reserve(offset, len),
        }
    }

    fn sync_written(&self) -> io::Result<()> {
        match self {
            Partial::Local(partial) => BodySink::sync_written(partial),
            Partial::S3(partial) => partial.sync_written(),
        }
    }

    fn checkpoint(&self, prefix: &Prefix) {
        match self {
            Partial::Local(partial) => BodySink::checkpoint(partial, prefix),
            Partial::S3(partial) => partial.checkpoint(prefix),
        }
    }

    fn takes_checkpoints(&self) -> bool {
        match self {
            Partial::Local(partial) => BodySink::takes_checkpoints(partial),
            Partial::S3(partial) => partial.takes_checkpoints(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::BodySource;

    /// The transport's zero-copy path (sendfile, splice) needs a
    /// descriptor from each body; the local store's handles must keep
    /// giving one when they become enums of several backends.
    #[test]
    fn local_bodies_are_descriptors() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreSpec::Local(root.path().to_owned())).unwrap();
        let name = RemoteName::parse("a file").unwrap();
        let (upload, body) = store.begin_write(&name, 4).unwrap();
        assert!(BodySink::raw_fd(&body).is_some());
        body.write_all_at(b"body", 0).unwrap();
        upload
            .commit(body, blake3::hash(b"body").as_bytes())
            .unwrap();
        let read = store.open_read(&name).unwrap();
        assert!(BodySource::raw_fd(&read).is_some());
    }
}
