//! Uploads kept part way, to be resumed (PROTOCOL.md §5.13).
//!
//! A resumable upload is written to a partial file in one hidden
//! directory at the root, [`PARTIALS_DIR`], whose name is reserved like a
//! temporary file's, so no client can name, list or fetch what is in it.
//! A partial is named after its owner (a digest of the token that began
//! it, or of no token) and the name it is for, so only the same owner
//! uploading the same name finds it again. The directory is there only
//! while a partial is: it goes with the last one. An upload cut off keeps its
//! partial up to its last checkpoint; partials not touched for the
//! server's `--partial-ttl` are swept away.
//!
//! A new tree a PutTree builds is built here too, in a directory named
//! after its owner and target ([`tree_key`]), so a try cut off leaves what
//! it verified for the next try of the same tree (see
//! [`super::TreeWrite`]); it is swept like a partial.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use cap_std::fs::DirBuilderExt;
use cap_std::fs::{Dir, DirBuilder};

use super::digest_cache::{self, Stamp};
use super::{check_free_space, classify, LocalStore, MadeDirs};
use crate::partial::{Found, Partial, Place};
use crate::protocol::{Digest, ErrorCode, Refusal, RemoteName, Token};

/// The hidden directory of the partials, at the root.
pub const PARTIALS_DIR: &str = ".ferry-tmp-partials";

/// How the staging directory of a new tree ends, in the partials
/// directory.
const TREE_SUFFIX: &str = ".tree";

/// Whose partials these are: a digest of the token a client offered (an
/// empty one for none), never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner([u8; 32]);

impl Owner {
    pub fn of(token: &Token) -> Owner {
        Owner(blake3::derive_key(
            "ferry 2026-11 owner of a partial upload",
            token.expose().as_bytes(),
        ))
    }
}

/// A resumable upload in progress: the partial it writes to is handed to
/// the transport as the body's sink, and given back to
/// [`ResumableUpload::commit`].
#[derive(Debug)]
pub struct ResumableUpload {
    parent: Dir,
    file_name: String,
    /// The directories made for it, removed again (if empty) unless it
    /// is committed.
    made: MadeDirs,
}

impl LocalStore {
    /// Begins a resumable upload of `size` bytes to `name` for `owner`,
    /// from a source last modified at `modified`: finds and proves the
    /// owner's partial of that name, or makes one (discarding any with
    /// `restart`). Refuses, before anything is written, what
    /// [`LocalStore::begin_write`] refuses, with the partial's proven bytes
    /// counted as already on disk.
    pub fn begin_resumable(
        &self,
        owner: &Owner,
        name: &RemoteName,
        size: u64,
        modified: i64,
        restart: bool,
    ) -> Result<(ResumableUpload, Partial, Found), Refusal> {
        // What refuses the upload whatever the partial holds comes first,
        // so a refusal makes no partial.
        let (made, parent) = self.parent_for_upload(name, 0)?;
        if parent.symlink_metadata(name.file_name()).is_ok() {
            return Err(Refusal::new(
                ErrorCode::AlreadyExists,
                "a file by that name exists",
            ));
        }
        let key = partial_key(owner, name);
        let record_name = format!("{key}.rec");
        let busy = || {
            Refusal::new(
                ErrorCode::Busy,
                format!("another upload of {:?} is in progress", name.as_str()),
            )
        };
        // The directory of the partials goes when its last partial does,
        // so it may go between its making and the partial's: made again.
        let mut attempts = 0;
        let (partial, found) = loop {
            let partials = self.partials_dir()?;
            let place = Place {
                dir: &partials,
                data_name: &key,
                record_name: &record_name,
                name: name.as_str(),
                source_size: size,
                source_modified: modified,
                tidy: Some((&self.dir, PARTIALS_DIR)),
            };
            match Partial::open(&place, restart) {
                Ok(opened) => break opened,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(busy()),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < MAKE_ATTEMPTS => {
                    attempts += 1
                }
                Err(e) => return Err(classify(e)),
            }
        };
        // The partial's bytes are on the disk already.
        let held = partial.prefix().len;
        if let Err(refusal) = check_free_space(&parent, size - held.min(size)) {
            // An empty partial is not worth keeping; a proven one waits
            // for room to be made.
            if held == 0 {
                let _ = partial.discard();
            }
            return Err(refusal);
        }
        let upload = ResumableUpload {
            parent,
            file_name: name.file_name().to_owned(),
            made,
        };
        Ok((upload, partial, found))
    }

    /// Removes the partials no upload touched for `ttl`, and the pieces of
    /// records a killed server left; returns how many partials went.
    pub fn sweep_partials(&self, ttl: Duration) -> usize {
        let Ok(dir) = self.dir.open_dir(PARTIALS_DIR) else {
            return 0;
        };
        let Ok(entries) = dir.entries() else {
            return 0;
        };
        let now = SystemTime::now();
        let mut swept = 0;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let touched = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.into_std());
            let expired = touched.is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > ttl));
            if !expired {
                continue;
            }
            // A partial or a tree an upload holds is not swept: its lock
            // says so.
            if let Some(key) = name.strip_suffix(".rec") {
                if Partial::remove_unless_in_use(&dir, key, &name).unwrap_or(false) {
                    swept += 1;
                }
            } else if name.ends_with(TREE_SUFFIX) {
                if let Ok(_held) = lock_tree(&dir, &name) {
                    if super::tree::remove(&dir, &name).is_ok() {
                        swept += 1;
                    }
                }
            }
        }
        // Gone with its last partial; one still holding any stays.
        let _ = self.dir.remove_dir(PARTIALS_DIR);
        swept
    }

    fn partials_dir(&self) -> Result<Dir, Refusal> {
        partials_dir(&self.dir)
    }
}

/// The hidden directory of the partials in `root`, made if missing, for
/// this server's user alone.
pub(super) fn partials_dir(root: &Dir) -> Result<Dir, Refusal> {
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    // An upload that has just taken its partial out removes the directory
    // if that left it empty, which may fall between the making here and
    // the opening: made again, as often as another upload could have
    // finished meanwhile.
    let mut attempts = 0;
    loop {
        match root.create_dir_with(PARTIALS_DIR, &builder) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(classify(e)),
            _ => {}
        }
        match root.open_dir(PARTIALS_DIR) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < MAKE_ATTEMPTS => {
                attempts += 1
            }
            opened => return opened.map_err(classify),
        }
    }
}

/// How often [`partials_dir`] makes the directory again when it is taken
/// away before it is opened: far more often than uploads finish at once.
const MAKE_ATTEMPTS: u32 = 100;

/// The name, in the partials directory, of the directory where `owner`'s
/// new tree at `target` is built.
pub(super) fn tree_key(owner: &Owner, target: &RemoteName) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&owner.0);
    // Kept apart from the keys of files of the same name.
    hasher.update(b"tree\0");
    hasher.update(target.as_str().as_bytes());
    let key: String = hasher.finalize().to_hex().chars().take(40).collect();
    key + TREE_SUFFIX
}

/// Locks the tree staging directory `name` in `dir` for one upload: held
/// while the returned descriptor is open. `WouldBlock` if another upload
/// holds it.
pub(super) fn lock_tree(dir: &Dir, name: &str) -> io::Result<OwnedFd> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)?;
    Ok(fd)
}

impl ResumableUpload {
    /// Gives the complete, verified partial its name, never replacing
    /// anything, with `digest` remembered for later gets.
    pub fn commit(mut self, partial: &Partial, digest: &Digest) -> Result<(), Refusal> {
        // Stamped after the last write, so the record matches the file as
        // it will appear under its name.
        if let Ok(stamp) = Stamp::of(partial.file()) {
            digest_cache::remember(partial.file(), &stamp, digest);
        }
        partial
            .commit(&self.parent, Path::new(&self.file_name), false)
            .map_err(classify)?;
        // They hold the file now.
        self.made.paths.clear();
        Ok(())
    }
}

/// The file name of `owner`'s partial for `name`.
pub(in crate::store) fn partial_key(owner: &Owner, name: &RemoteName) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&owner.0);
    hasher.update(name.as_str().as_bytes());
    // 160 bits: no two names of one owner will meet.
    hasher.finalize().to_hex().chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NameError;

    /// Soak, 2026-11-28: a put failed `not-found` when another upload's
    /// tidy took the empty directory away between its making and its
    /// opening. Here a thread takes it away as fast as it can while this
    /// one makes and opens it.
    #[test]
    fn the_partials_directory_taken_away_meanwhile_is_made_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(root.path(), cap_std::ambient_authority()).unwrap();
        let remover = dir.try_clone().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let tidying = std::thread::spawn(move || {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = remover.remove_dir(PARTIALS_DIR);
                // As often as uploads could finish, not in lockstep with
                // the making, which no number of attempts would outlast.
                std::thread::yield_now();
            }
        });
        let failed = (0..20_000).filter(|_| partials_dir(&dir).is_err()).count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        tidying.join().unwrap();
        assert_eq!(failed, 0, "of 20000 makings and openings");
    }

    #[test]
    fn the_partials_directory_is_a_name_no_client_can_use() {
        assert_eq!(RemoteName::parse(PARTIALS_DIR), Err(NameError::Reserved));
    }

    #[test]
    fn partials_of_other_owners_or_names_have_other_keys() {
        let name = RemoteName::parse("a/b.txt").unwrap();
        let other_name = RemoteName::parse("a/c.txt").unwrap();
        let alice = Owner::of(&Token::new("alice".to_owned()));
        let nobody = Owner::of(&Token::new(String::new()));
        assert_ne!(partial_key(&alice, &name), partial_key(&nobody, &name));
        assert_ne!(partial_key(&alice, &name), partial_key(&alice, &other_name));
        assert_eq!(
            partial_key(&alice, &name),
            partial_key(&alice, &name.clone())
        );
    }

    #[test]
    fn a_tree_of_one_owner_and_target_has_its_own_key() {
        let name = RemoteName::parse("a/b").unwrap();
        let alice = Owner::of(&Token::new("alice".to_owned()));
        let nobody = Owner::of(&Token::new(String::new()));
        assert_eq!(tree_key(&alice, &name), tree_key(&alice, &name));
        assert_ne!(tree_key(&alice, &name), tree_key(&nobody, &name));
        assert!(!tree_key(&alice, &name).starts_with(&partial_key(&alice, &name)));
        assert!(tree_key(&alice, &name).ends_with(TREE_SUFFIX));
    }
}
