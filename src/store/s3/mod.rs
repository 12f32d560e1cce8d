//! The S3 store: the served files are objects under a key prefix of one
//! bucket, so several servers can stand in front of the same files.
//! `docs/design/s3-store.md` is the design; README's "Storing in S3" says
//! what a user can rely on.
//!
//! A name `a/b` is the key `PREFIX/a/b`; a directory is the prefix
//! `PREFIX/a/`, kept when empty by a marker object of that key. Objects
//! are plain, so other S3 tools read what ferry writes and ferry serves
//! what they write.

mod bucket;
mod digests;
mod dirs;
mod listing;
mod read;
mod resume;
mod spec;
mod tree_write;
mod uploads;
mod walk;
mod write;

use std::sync::Arc;

use crate::protocol::{EntryKind, ErrorCode, Info, Link, Refusal, RemoteName};
use bucket::{Bucket, Failure, Head};
pub use listing::ObjectListing;
pub use read::ObjectReader;
pub use resume::{ObjectPartial, ResumableObject};
pub use spec::{BadAddress, Credentials, S3Spec};
pub use tree_write::{ObjectTree, TreeObject};
pub use walk::ObjectWalk;
pub use write::{ObjectWriter, Upload};

/// A bucket (and prefix) served. Cloned, it serves the same bucket: a
/// tree being written holds one.
#[derive(Debug, Clone)]
pub struct S3Store {
    /// Shared with the handles requests hold: an object being read, an
    /// upload sending its parts.
    bucket: Arc<Bucket>,
    /// Leases of resumable puts whose tries on this server have ended
    /// without the store hearing of it (see [`resume::Released`]).
    released: resume::Released,
}

/// Why an S3 store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve {address} at {endpoint}: {why}")]
pub struct OpenError {
    address: String,
    endpoint: String,
    why: String,
}

impl S3Store {
    /// Opens the bucket `spec` names, and checks that it can be read: a
    /// bucket that is missing, or that these credentials may not list, is
    /// refused now rather than served with every request failing.
    pub fn open(spec: &S3Spec) -> Result<S3Store, OpenError> {
        let failed = |why: String| OpenError {
            address: spec.address(),
            endpoint: spec.endpoint.clone().unwrap_or_else(|| "AWS".to_owned()),
            why,
        };
        let bucket = Bucket::new(spec).map_err(|e| failed(format!("cannot start: {e}")))?;
        let listed = bucket.block_on(
            bucket
                .client()
                .list_objects_v2()
                .bucket(bucket.name())
                .prefix(bucket.prefix())
                .max_keys(1)
                // Readable whatever the first key holds (bucket.rs).
                .encoding_type(aws_sdk_s3::types::EncodingType::Url)
                .send(),
        );
        if let Err(error) = listed {
            let failure = Failure::of(&error);
            let why = match (failure.status, failure.code.as_deref()) {
                (Some(404), _) | (_, Some("NoSuchBucket")) => "no such bucket".to_owned(),
                (Some(401 | 403), _) => format!("access denied: {}", failure.message),
                _ => failure.message,
            };
            return Err(failed(why));
        }
        Ok(S3Store {
            bucket: Arc::new(bucket),
            released: resume::Released::default(),
        })
    }

    /// The store's address, `s3://BUCKET[/PREFIX]`.
    pub fn describe(&self) -> String {
        match self.bucket.prefix().strip_suffix('/') {
            None => format!("s3://{}", self.bucket.name()),
            Some(prefix) => format!("s3://{}/{prefix}", self.bucket.name()),
        }
    }

    /// Aborts the multipart uploads begun longer than `ttl` ago that no
    /// server completed or aborted (a server killed mid-upload); returns
    /// how many went.
    pub fn sweep_uploads(&self, ttl: std::time::Duration) -> usize {
        uploads::sweep(&self.bucket, ttl)
    }

    /// What `name` is; the root is a directory.
    pub fn stat(&self, name: Option<&RemoteName>) -> Result<Info, Refusal> {
        match name {
            None => Ok(Info {
                kind: EntryKind::Directory,
                size: 0,
                modified: 0,
                mode: DIRECTORY_MODE,
                link: Link::None,
                digest: None,
            }),
            Some(name) => {
                let key = self.bucket.key(name);
                let doing = || format!("looking up {name}");
                match self.bucket.head(&key).map_err(|f| f.refusal(&doing()))? {
                    Some(head) => Ok(Info {
                        kind: EntryKind::File,
                        size: head.size,
                        modified: modified(&head),
                        mode: FILE_MODE,
                        link: Link::None,
                        digest: digests::lookup(&self.bucket, &key, &head),
                    }),
                    None => self.stat_dir(name),
                }
            }
        }
    }

    /// What `name` is when no object has its key: a directory if keys are
    /// beneath it.
    fn stat_dir(&self, name: &RemoteName) -> Result<Info, Refusal> {
        let beneath = format!("{}/", self.bucket.key(name));
        let doing = || format!("looking up {name}");
        let marker = self
            .bucket
            .head(&beneath)
            .map_err(|f| f.refusal(&doing()))?;
        if marker.is_none()
            && !self
                .bucket
                .has_keys_under(&beneath)
                .map_err(|f| f.refusal(&doing()))?
        {
            return Err(no_such());
        }
        Ok(Info {
            kind: EntryKind::Directory,
            size: 0,
            modified: marker.map_or(0, |head| head.modified),
            mode: DIRECTORY_MODE,
            link: Link::None,
            digest: None,
        })
    }
}

/// The modification time an object is shown with: the one ferry kept
/// with it, else when S3 stored it.
fn modified(head: &Head) -> i64 {
    (head.metadata.get(MODIFIED_METADATA))
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(head.modified)
}

/// The metadata key (after `x-amz-meta-`) of the modification time a put
/// gave the file, in seconds since the Unix epoch.
pub const MODIFIED_METADATA: &str = "ferry-mtime";

/// The mode every file is shown with: S3 keeps none.
const FILE_MODE: u32 = 0o644;

/// The refusal of a name with neither an object nor keys beneath it.
fn no_such() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such file or directory")
}

/// The mode every directory is shown with: S3 keeps none.
const DIRECTORY_MODE: u32 = 0o755;
