//! The one place the server meets stored files: every operation a request
//! makes on what is served, shaped for the requests rather than for the
//! storage beneath. The server names only what this module exports.
//!
//! There is one backend today, a directory on the local disk
//! ([`LocalStore`]); `docs/design/s3-store.md` designs a second, an S3
//! bucket, behind the same names.

mod local;

pub use local::{
    classify, Candidate, Leftover, Listing, Meets, Owner, ReadFile, Removed, ResumableUpload,
    TreeFile, TreeWalk, TreeWrite, Upload, WriteFile, PARTIALS_DIR,
};
// Under its old name until the seam between the server and the backends
// takes the name.
pub use local::{LocalStore, LocalStore as Store};
