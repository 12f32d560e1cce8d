//! Changing what is served without a body: delete, delete -r, mkdir,
//! rmdir and rename of a file.
//!
//! A directory on S3 is a key prefix; it exists while some key starts
//! with it, and an empty one is kept by its marker object (`name/`, no
//! bytes). Removing the last key beneath a directory would make it
//! vanish, where a disk keeps it: every removal therefore writes the
//! parent's marker when it left the parent empty, as `rmdir` on a disk
//! leaves the parent.
//!
//! A rename is a conditional copy and a delete, not atomic: for a moment
//! a reader may see both names, never neither. Renaming a directory
//! would copy every key beneath it, neither atomic nor bounded, and is
//! refused.

use std::collections::BTreeSet;

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::bucket::{Bucket, Failure, Head};
use super::{digests, no_such, S3Store};
use crate::protocol::{ErrorCode, Refusal, RemoteName};
use crate::store::Removed;

/// The largest object one CopyObject copies (S3's limit, 5 GiB).
const MAX_COPY: u64 = 5 << 30;

/// The most keys one DeleteObjects removes (S3's limit).
const DELETE_BATCH: usize = 1000;

impl S3Store {
    /// Removes the file `name`; refuses directories.
    pub fn delete(&self, name: &RemoteName) -> Result<(), Refusal> {
        let doing = || format!("deleting {name}");
        let key = self.bucket.key(name);
        if self
            .bucket
            .head(&key)
            .map_err(|f| f.refusal(&doing()))?
            .is_none()
        {
            return Err(match self.is_dir(name).map_err(|f| f.refusal(&doing()))? {
                true => Refusal::new(
                    ErrorCode::IsADirectory,
                    "is a directory; delete it with everything in it with delete -r, \
                     or an empty one with rmdir",
                ),
                false => no_such(),
            });
        }
        self.bucket
            .delete_key(&key)
            .map_err(|f| f.refusal(&doing()))?;
        digests::forget(&self.bucket, &key);
        self.keep_parent(name);
        Ok(())
    }

    /// Removes `name` and, if it is a directory, every key beneath it;
    /// counts what a disk would: files, and directories (the top one, and
    /// each met beneath it, marked or not).
    pub fn delete_tree(&self, name: &RemoteName) -> Result<Removed, Refusal> {
        let key = self.bucket.key(name);
        let doing = || format!("deleting {name}");
        if self
            .bucket
            .head(&key)
            .map_err(|f| f.refusal(&doing()))?
            .is_some()
        {
            self.delete(name)?;
            return Ok(Removed {
                files: 1,
                directories: 0,
            });
        }
        let beneath = format!("{key}/");
        let keys = (self.bucket.keys_under(&beneath, None)).map_err(|f| f.refusal(&doing()))?;
        if keys.is_empty() {
            return Err(no_such());
        }
        let mut directories = BTreeSet::new();
        let mut files = 0;
        let mut doomed = Vec::with_capacity(keys.len());
        for key in keys {
            let relative = &key[beneath.len()..];
            // Each directory a key lies in beneath the top: `a/b/c` is in
            // `a` and `a/b`; the marker `a/b/` is `a` and `a/b`.
            let mut at = 0;
            while let Some(slash) = relative[at..].find('/') {
                at += slash + 1;
                directories.insert(relative[..at].to_owned());
            }
            if !key.ends_with('/') {
                files += 1;
                // The digest record, if any, goes with its object.
                doomed.push(digests::record_key(&self.bucket, &key));
            }
            doomed.push(key);
        }
        self.bucket
            .delete_keys(&doomed)
            .map_err(|f| f.refusal(&doing()))?;
        self.keep_parent(name);
        Ok(Removed {
            files,
            directories: directories.len() as u64 + 1,
        })
    }

    /// Makes the directory `name` (its marker, created only if missing);
    /// with `parents`, markers for its missing parents too, and an
    /// existing directory is then no error.
    pub fn make_dir(&self, name: &RemoteName, parents: bool) -> Result<(), Refusal> {
        let doing = || format!("making {name}");
        self.check_ancestors(name)?;
        let key = self.bucket.key(name);
        if self
            .bucket
            .head(&key)
            .map_err(|f| f.refusal(&doing()))?
            .is_some()
        {
            return Err(match parents {
                true => Refusal::new(
                    ErrorCode::AlreadyExists,
                    "a file by that name (or of a parent's name) exists",
                ),
                false => exists(),
            });
        }
        if self.is_dir(name).map_err(|f| f.refusal(&doing()))? {
            return if parents { Ok(()) } else { Err(exists()) };
        }
        let mut ancestors = ancestors(name);
        if !parents {
            if let Some(parent) = ancestors.pop() {
                if !self.is_dir_at(&parent).map_err(|f| f.refusal(&doing()))? {
                    return Err(Refusal::new(
                        ErrorCode::NotFound,
                        "the parent directory does not exist (mkdir -p makes it)",
                    ));
                }
            }
            ancestors.clear();
        }
        for ancestor in ancestors {
            if !self.is_dir_at(&ancestor).map_err(|f| f.refusal(&doing()))? {
                let marker = format!("{}{ancestor}/", self.bucket.prefix());
                self.bucket
                    .create_marker(&marker)
                    .map_err(|f| f.refusal(&doing()))?;
            }
        }
        match self.bucket.create_marker(&format!("{key}/")) {
            Ok(true) => Ok(()),
            // Another mkdir made it meanwhile.
            Ok(false) if parents => Ok(()),
            Ok(false) => Err(exists()),
            Err(f) => Err(f.refusal(&doing())),
        }
    }

    /// Removes the empty directory `name` (its marker).
    pub fn remove_dir(&self, name: &RemoteName) -> Result<(), Refusal> {
        let doing = || format!("removing {name}");
        let key = self.bucket.key(name);
        if self
            .bucket
            .head(&key)
            .map_err(|f| f.refusal(&doing()))?
            .is_some()
        {
            return Err(Refusal::new(
                ErrorCode::NotADirectory,
                "not a directory; delete removes files and links",
            ));
        }
        let marker = format!("{key}/");
        let keys = (self.bucket.keys_under(&marker, Some(2))).map_err(|f| f.refusal(&doing()))?;
        if keys.is_empty() {
            return Err(no_such());
        }
        if keys != [marker.clone()] {
            return Err(Refusal::new(
                ErrorCode::NotEmpty,
                "the directory is not empty",
            ));
        }
        self.bucket
            .delete_key(&marker)
            .map_err(|f| f.refusal(&doing()))?;
        self.keep_parent(name);
        Ok(())
    }

    /// Gives the file `from` the name `to`, never replacing anything.
    pub fn rename(&self, from: &RemoteName, to: &RemoteName) -> Result<(), Refusal> {
        let doing = || format!("renaming {from}");
        let inside = (to.as_str().strip_prefix(from.as_str())).is_some_and(|r| r.starts_with('/'));
        if inside {
            return Err(Refusal::new(
                ErrorCode::BadName,
                "cannot move a directory into itself",
            ));
        }
        let from_key = self.bucket.key(from);
        let Some(head) = self
            .bucket
            .head(&from_key)
            .map_err(|f| f.refusal(&doing()))?
        else {
            return Err(match self.is_dir(from).map_err(|f| f.refusal(&doing()))? {
                true => Refusal::new(
                    ErrorCode::Io,
                    "renaming a directory is not supported on an S3 store \
                     (it would copy every file in it, one by one)",
                ),
                false => no_such(),
            });
        };
        if head.size > MAX_COPY {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "renaming a file over {MAX_COPY} bytes (5 GiB) is not supported on an S3 store"
                ),
            ));
        }
        self.check_ancestors(to)?;
        let to_key = self.bucket.key(to);
        let taken_now = || -> Result<bool, Failure> {
            Ok(self.bucket.head(&to_key)?.is_some() || self.is_dir(to)?)
        };
        if taken_now().map_err(|f| f.refusal(&doing()))? {
            return Err(renamed_onto());
        }
        if let Some(parent) = to.parent() {
            if !self.is_dir_at(parent).map_err(|f| f.refusal(&doing()))? {
                return Err(no_such());
            }
        }
        // Read before the copy: a multipart object's digest is in a record
        // naming its ETag, which the copy changes.
        let digest = digests::lookup(&self.bucket, &from_key, &head);
        let copied = match self.bucket.copy_new(&from_key, &head.etag, &to_key) {
            Ok(etag) => etag,
            Err(f) if f.is_precondition_failed() => {
                return Err(match taken_now() {
                    Ok(false) => Refusal::new(
                        ErrorCode::Busy,
                        "the file changed while it was being renamed; try again",
                    ),
                    _ => renamed_onto(),
                })
            }
            Err(f) => return Err(f.refusal(&doing())),
        };
        if let (Some(digest), false) =
            (digest, head.metadata.contains_key(digests::DIGEST_METADATA))
        {
            let copy = Head {
                etag: copied,
                ..head
            };
            digests::remember(&self.bucket, &to_key, &copy, &digest);
        }
        self.bucket
            .delete_key(&from_key)
            .map_err(|f| f.refusal(&doing()))?;
        digests::forget(&self.bucket, &from_key);
        self.keep_parent(from);
        Ok(())
    }

    /// Whether `name` is a directory: a key starts with `name/`.
    fn is_dir(&self, name: &RemoteName) -> Result<bool, Failure> {
        self.is_dir_at(name.as_str())
    }

    /// Whether the path `dir` (a name, or a parent of one) is a directory.
    fn is_dir_at(&self, dir: &str) -> Result<bool, Failure> {
        let beneath = format!("{}{dir}/", self.bucket.prefix());
        self.bucket.has_keys_under(&beneath)
    }

    /// After `name` was removed: writes its parent's marker if nothing
    /// is left beneath the parent, so the directory stays, as on a disk.
    /// Best effort: a parent lost here is an empty directory gone.
    fn keep_parent(&self, name: &RemoteName) {
        let Some(parent) = name.parent() else {
            return;
        };
        let marker = format!("{}{parent}/", self.bucket.prefix());
        let kept = match self.bucket.has_keys_under(&marker) {
            Ok(true) => Ok(true),
            Ok(false) => self.bucket.create_marker(&marker),
            Err(f) => Err(f),
        };
        if let Err(f) = kept {
            tracing::warn!(parent, "cannot keep an emptied directory: {}", f.message);
        }
    }
}

/// The parents of `name`, outermost first: `a/b/c` has `a` and `a/b`.
fn ancestors(name: &RemoteName) -> Vec<String> {
    let Some(parent) = name.parent() else {
        return Vec::new();
    };
    let mut found: Vec<String> = Vec::new();
    for component in parent.split('/') {
        found.push(match found.last() {
            Some(last) => format!("{last}/{component}"),
            None => component.to_owned(),
        });
    }
    found
}

/// A mkdir's refusal of a taken name: the local store's words.
fn exists() -> Refusal {
    Refusal::new(ErrorCode::AlreadyExists, "something by that name exists")
}

/// A rename's refusal of a taken name: the local store's words.
fn renamed_onto() -> Refusal {
    Refusal::new(
        ErrorCode::AlreadyExists,
        "the new name is taken; ferry never replaces anything",
    )
}

impl Bucket {
    /// The keys beneath `prefix`, in S3's order: all of them, or at most
    /// `max`.
    pub fn keys_under(&self, prefix: &str, max: Option<usize>) -> Result<Vec<String>, Failure> {
        let mut keys = Vec::new();
        let mut pages = (self.client().list_objects_v2())
            .bucket(self.name())
            .prefix(prefix)
            .set_max_keys(max.and_then(|m| i32::try_from(m).ok()))
            .into_paginator()
            .send();
        while let Some(page) = self.block_on(pages.next()) {
            let page = page.map_err(|e| Failure::of(&e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            if max.is_some_and(|max| keys.len() >= max) {
                keys.truncate(max.unwrap_or(0));
                break;
            }
        }
        Ok(keys)
    }

    /// Creates the directory marker `key` (ending in `/`, no bytes) unless
    /// some object has that key: whether it was created.
    pub fn create_marker(&self, key: &str) -> Result<bool, Failure> {
        let call = (self.client().put_object())
            .bucket(self.name())
            .key(key)
            .content_length(0)
            .if_none_match("*")
            .send();
        match self.block_on(call) {
            Ok(_) => Ok(true),
            Err(e) => {
                let failure = Failure::of(&e);
                match failure.is_precondition_failed() {
                    true => Ok(false),
                    false => Err(failure),
                }
            }
        }
    }

    /// Copies the object `from`, as long as its ETag is `etag`, to the new
    /// key `to` (with its metadata), never replacing an object there: the
    /// copy's ETag.
    pub fn copy_new(&self, from: &str, etag: &str, to: &str) -> Result<String, Failure> {
        let source = format!("{}/{}", self.name(), encode_key(from));
        let call = (self.client().copy_object())
            .bucket(self.name())
            .key(to)
            .copy_source(source)
            .copy_source_if_match(etag)
            .if_none_match("*")
            .send();
        let copied = self.block_on(call).map_err(|e| Failure::of(&e))?;
        Ok((copied.copy_object_result)
            .and_then(|r| r.e_tag)
            .unwrap_or_default())
    }

    /// Deletes `keys`, a batch of [`DELETE_BATCH`] at a time; missing keys
    /// are no error.
    pub fn delete_keys(&self, keys: &[String]) -> Result<(), Failure> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure::broken(e.to_string()))?;
            let delete = (Delete::builder().set_objects(Some(objects)).quiet(true))
                .build()
                .map_err(|e| Failure::broken(e.to_string()))?;
            let call = (self.client().delete_objects())
                .bucket(self.name())
                .delete(delete)
                .send();
            let done = self.block_on(call).map_err(|e| Failure::of(&e))?;
            if let Some(error) = done.errors().first() {
                return Err(Failure::broken(format!(
                    "S3 did not delete {}: {}",
                    error.key().unwrap_or_default(),
                    error.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

/// `key` as CopyObject's source names it: percent-encoded, but for the
/// characters URLs leave as they are and `/`.
fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                encoded.push(char::from(byte))
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_percent_encoded() {
        for (key, encoded) in [
            ("served/a.txt", "served/a.txt"),
            ("with space", "with%20space"),
            ("ü+%", "%C3%BC%2B%25"),
        ] {
            assert_eq!(encode_key(key), encoded);
        }
    }

    #[test]
    fn ancestors_are_outermost_first() {
        let name = RemoteName::parse("a/b/c").unwrap();
        assert_eq!(ancestors(&name), ["a", "a/b"]);
        assert!(ancestors(&RemoteName::parse("top").unwrap()).is_empty());
    }
}
