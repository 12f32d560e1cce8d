//! Puts and gets that resume (PROTOCOL.md §5.13): an interrupted one, made
//! again, goes on after the part already there, once that part is proven.
//!
//! A download is written to a hidden partial beside its target,
//! `.NAME.ferry-partial`, with its record `.NAME.ferry-partial.rec`; both
//! go when the file takes its name. An upload's partial is the server's.
//! Either way the whole file's digest is checked before it takes its name,
//! and a resumed transfer that fails that check is made once more from
//! its start, since the partial, not the data sent, is then the suspect.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cap_std::fs::Dir;

use super::{unexpected, Client, ClientError, Progress, Upload, SLOWEST_DISK_BYTES_PER_SEC};
use crate::partial::{self, Found, Partial, Place};
use crate::protocol::{Message, Prefix, RemoteName, RequestKind, ResumeReason};
use crate::report::{mebibytes, Start};
use crate::transport::{PrefixCheck, TransportError};

/// What a resumable transfer moved this time, and from where.
#[derive(Debug)]
pub struct Moved {
    /// Bytes moved this time: the file's size less what was resumed.
    pub bytes: u64,
    pub start: Start,
}

/// The suffix of a download's hidden partial; its record adds `.rec`.
pub const PARTIAL_SUFFIX: &str = ".ferry-partial";

impl Client {
    /// Uploads `upload` as `name`, going on from what the server kept of
    /// an earlier try of the same file, unless `restart`. A server that
    /// cannot resume gets a plain put.
    pub async fn put_resumable(
        &mut self,
        upload: Upload,
        name: &RemoteName,
        restart: bool,
        progress: &mut dyn Progress,
    ) -> Result<Moved, ClientError> {
        if !self.serves(RequestKind::PutFrom) {
            let bytes = self.put(upload, name, progress).await?;
            let start = Start::Fresh;
            return Ok(Moved { bytes, start });
        }
        let modified = upload.file.metadata().map_or(0, |m| m.mtime());
        let Upload { file, size } = upload;
        // Shared with the transport, which may send it twice.
        let file = Arc::new(file);
        let mut restart = restart;
        let mut started_over = None;
        loop {
            let request = Message::PutFrom {
                name: name.to_string(),
                size,
                modified,
                restart,
            };
            let (prefix, reason) = match self.request(&request).await? {
                Message::Resume { prefix, reason } => (prefix, reason),
                other => return Err(unexpected(other, "a resume reply")),
            };
            progress.begin(size - prefix.len);
            let sent = self
                .conn
                .send_body_from(Arc::clone(&file), size, &prefix, None, &mut |n| {
                    progress.advance(n)
                })
                .await?;
            let syncing = Duration::from_secs(size / SLOWEST_DISK_BYTES_PER_SEC);
            let outcome = self.reply_within(self.timeout + syncing).await;
            let resumed = prefix.len > 0;
            match outcome {
                Ok(Message::Done) => {
                    let start = match (started_over.take(), reason) {
                        (Some(why), _) => Start::StartedOver(why),
                        (None, ResumeReason::New) => Start::Fresh,
                        (None, ResumeReason::Resumed) => Start::ResumedAt {
                            at: prefix.len,
                            // The server's part: its report says.
                            reread: 0,
                        },
                        (None, other) => Start::StartedOver(other.describe()),
                    };
                    let bytes = size - prefix.len;
                    return Ok(Moved { bytes, start });
                }
                Ok(other) => return Err(unexpected(other, "a done reply")),
                // The server's partial, not the data, failed the check:
                // once more from the start.
                Err(ClientError::Remote {
                    code: crate::protocol::ErrorCode::DigestMismatch,
                    ..
                }) if resumed && !restart => {
                    let why = match sent.2 {
                        PrefixCheck::Differed => format!(
                            "the server's partial did not hold this file's first {}",
                            mebibytes(prefix.len)
                        ),
                        _ => "the resumed file failed its digest check".to_owned(),
                    };
                    started_over = Some(why);
                    restart = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Downloads `name` to the local path `dest`, which must not exist,
    /// going on from the partial an earlier try left beside it, unless
    /// `restart`. A server that cannot resume gets a plain get.
    pub async fn get_resumable(
        &mut self,
        name: &RemoteName,
        dest: &Path,
        restart: bool,
        progress: &mut dyn Progress,
    ) -> Result<Moved, ClientError> {
        if !self.serves(RequestKind::GetFrom) {
            let bytes = self.get(name, dest, progress).await?;
            let start = Start::Fresh;
            return Ok(Moved { bytes, start });
        }
        let local = |source| ClientError::Local {
            path: dest.to_owned(),
            source,
        };
        if dest.symlink_metadata().is_ok() {
            return Err(ClientError::LocalExists(dest.to_owned()));
        }
        let (dir, file_name) = parent_and_name(dest).map_err(local)?;
        let data_name = partial_name(&file_name);
        let record_name = format!("{data_name}.rec");
        let mut restart = restart;
        let mut started_over = None;
        loop {
            // The source the partial was made of, as its record says; a
            // damaged record proves nothing and is met by `open`.
            let recorded = partial::read_record(&dir, &record_name);
            let (source_size, source_modified) = recorded
                .as_ref()
                .map_or((0, 0), |r| (r.source_size, r.source_modified));
            let place = Place {
                dir: &dir,
                data_name: &data_name,
                record_name: &record_name,
                name: name.as_str(),
                source_size,
                source_modified,
                // Beside the target: no directory of partials.
                tidy: None,
            };
            let (partial, found) = open_partial(&place, restart).map_err(local)?;
            let prefix = partial.prefix();
            let request = Message::GetFrom {
                name: name.to_string(),
                prefix: prefix.clone(),
                size: source_size,
                modified: source_modified,
            };
            let (size, modified, offset, reason) = match self.request(&request).await? {
                Message::Sending {
                    size,
                    modified,
                    offset,
                    reason,
                } => (size, modified, offset, reason),
                other => return Err(unexpected(other, "a sending reply")),
            };
            let from = if offset == 0 {
                partial.start_over(size, modified).map_err(local)?;
                Prefix::none()
            } else if offset == prefix.len {
                prefix
            } else {
                return Err(ClientError::BadReply(format!(
                    "the server offered to go on from byte {offset}, not {}",
                    prefix.len
                )));
            };
            progress.begin(size - from.len);
            let received = self
                .conn
                .recv_body_from(partial.clone(), size, from.clone(), &mut |n| {
                    progress.advance(n)
                })
                .await;
            match received {
                Ok(_) => {}
                Err(TransportError::DigestMismatch) => {
                    partial.discard().map_err(local)?;
                    if from.len == 0 || restart {
                        return Err(ClientError::DigestMismatch);
                    }
                    started_over = Some(format!(
                        "the partial's first {} did not match the server's file",
                        mebibytes(from.len)
                    ));
                    restart = true;
                    continue;
                }
                Err(TransportError::Sink(source)) => return Err(local(source)),
                // Dropped, the partial is sealed at its last checkpoint.
                Err(other) => return Err(other.into()),
            }
            let committed = partial.commit(&dir, Path::new(&file_name), false);
            if let Err(e) = committed {
                let _ = partial.discard();
                return Err(match e.kind() {
                    io::ErrorKind::AlreadyExists => ClientError::LocalExists(dest.to_owned()),
                    _ => local(e),
                });
            }
            let start = match (started_over, reason) {
                (Some(why), _) => Start::StartedOver(why),
                (None, ResumeReason::Resumed) => Start::ResumedAt {
                    at: from.len,
                    reread: found.reread(),
                },
                (None, ResumeReason::New) => match found {
                    Found::Nothing | Found::Resumed { .. } => Start::Fresh,
                    other => Start::StartedOver(describe_local(other)),
                },
                (None, other) => Start::StartedOver(other.describe()),
            };
            let bytes = size - from.len;
            return Ok(Moved { bytes, start });
        }
    }
}

/// The hidden partial beside a download named `file_name`.
pub fn partial_name(file_name: &str) -> String {
    format!(".{file_name}{PARTIAL_SUFFIX}")
}

/// The directory `dest` is in, opened, and its file name.
fn parent_and_name(dest: &Path) -> io::Result<(Dir, String)> {
    let file_name = dest
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?
        .to_owned();
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = Dir::open_ambient_dir(&parent, cap_std::ambient_authority())?;
    Ok((dir, file_name))
}

/// Opens the partial at `place`, saying so if another ferry holds it.
fn open_partial(place: &Place<'_>, restart: bool) -> io::Result<(Partial, Found)> {
    Partial::open(place, restart).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            "another ferry is downloading to this name",
        ),
        _ => e,
    })
}

/// Why the local partial was not used.
fn describe_local(found: Found) -> String {
    match found {
        Found::Restarted => ResumeReason::Restarted.describe(),
        Found::SourceChanged => ResumeReason::SourceChanged.describe(),
        Found::Unproven | Found::Nothing | Found::Resumed { .. } => {
            ResumeReason::Unproven.describe()
        }
    }
}
