//! The kinds of request, named in one place.
//!
//! Every decision about requests (who may make them, what a server serves,
//! how they are reported) matches on [`RequestKind`] without a catch-all
//! arm, so a new kind does not compile until each of those is decided.

use std::fmt;

pub(super) const TAG_PUT: u8 = 0x01;
pub(super) const TAG_GET: u8 = 0x02;
pub(super) const TAG_LIST: u8 = 0x03;
pub(super) const TAG_DELETE: u8 = 0x04;
pub(super) const TAG_MAKE_DIR: u8 = 0x06;
pub(super) const TAG_REMOVE_DIR: u8 = 0x07;
pub(super) const TAG_RENAME: u8 = 0x08;
pub(super) const TAG_STAT: u8 = 0x09;
pub(super) const TAG_PUT_TREE: u8 = 0x0a;
pub(super) const TAG_GET_TREE: u8 = 0x0b;
pub(super) const TAG_PUT_STREAM: u8 = 0x0c;
pub(super) const TAG_PUT_FROM: u8 = 0x0d;
pub(super) const TAG_GET_FROM: u8 = 0x0e;

/// A kind of request a client can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Put,
    Get,
    List,
    Delete,
    MakeDir,
    RemoveDir,
    Rename,
    Stat,
    PutTree,
    GetTree,
    PutStream,
    /// A put that resumes a partial upload, or keeps one if cut off.
    PutFrom,
    /// A get that resumes a partial download.
    GetFrom,
}

impl RequestKind {
    /// Every kind, in tag order: what this server serves.
    pub const ALL: [RequestKind; 13] = [
        RequestKind::Put,
        RequestKind::Get,
        RequestKind::List,
        RequestKind::Delete,
        RequestKind::MakeDir,
        RequestKind::RemoveDir,
        RequestKind::Rename,
        RequestKind::Stat,
        RequestKind::PutTree,
        RequestKind::GetTree,
        RequestKind::PutStream,
        RequestKind::PutFrom,
        RequestKind::GetFrom,
    ];

    /// The tag of the request's frame.
    pub fn tag(self) -> u8 {
        match self {
            RequestKind::Put => TAG_PUT,
            RequestKind::Get => TAG_GET,
            RequestKind::List => TAG_LIST,
            RequestKind::Delete => TAG_DELETE,
            RequestKind::MakeDir => TAG_MAKE_DIR,
            RequestKind::RemoveDir => TAG_REMOVE_DIR,
            RequestKind::Rename => TAG_RENAME,
            RequestKind::Stat => TAG_STAT,
            RequestKind::PutTree => TAG_PUT_TREE,
            RequestKind::GetTree => TAG_GET_TREE,
            RequestKind::PutStream => TAG_PUT_STREAM,
            RequestKind::PutFrom => TAG_PUT_FROM,
            RequestKind::GetFrom => TAG_GET_FROM,
        }
    }

    /// The kind whose frames carry `tag`, if this build knows one.
    pub fn from_tag(tag: u8) -> Option<RequestKind> {
        RequestKind::ALL.into_iter().find(|kind| kind.tag() == tag)
    }
}

impl fmt::Display for RequestKind {
    /// The word reports and the command line use. A resumable put or get
    /// is, to its user, a put or a get.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestKind::Put | RequestKind::PutFrom => "put",
            RequestKind::Get | RequestKind::GetFrom => "get",
            RequestKind::List => "list",
            RequestKind::Delete => "delete",
            RequestKind::MakeDir => "mkdir",
            RequestKind::RemoveDir => "rmdir",
            RequestKind::Rename => "rename",
            RequestKind::Stat => "stat",
            RequestKind::PutTree => "put-tree",
            RequestKind::GetTree => "get-tree",
            RequestKind::PutStream => "put-stream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_distinct_and_map_back() {
        for kind in RequestKind::ALL {
            assert_eq!(RequestKind::from_tag(kind.tag()), Some(kind));
        }
        let tags: std::collections::HashSet<u8> =
            RequestKind::ALL.iter().map(|k| k.tag()).collect();
        assert_eq!(tags.len(), RequestKind::ALL.len());
        assert_eq!(RequestKind::from_tag(0x05), None, "hello is not a request");
    }
}
