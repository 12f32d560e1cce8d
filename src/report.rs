//! The one-line report printed for every request, by server and client alike.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::protocol::{FailureKind, RequestKind};

/// Receives the server's reports; the binary prints them, tests collect them.
pub type Reporter = Arc<dyn Fn(&Report) + Send + Sync>;

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Report {
    /// When the request finished.
    pub time: SystemTime,
    /// The other side: the client for the server's reports, the server for
    /// the client's.
    pub peer: String,
    /// What the report is about.
    pub subject: Subject,
    /// The remote name the request was about, if any.
    pub name: Option<String>,
    /// Where a client's download landed: the local path written (`-` for
    /// standard output). `None` for everything else.
    pub local: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

/// What a report can be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// One request.
    Request(RequestKind),
    /// The connection itself: the handshake, or a message outside any request.
    Connection,
    /// The server removing a temporary file that a dead process left.
    Cleanup,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok(Detail),
    /// It failed: a stable kind and a human message.
    Failed { kind: FailureKind, message: String },
    /// A connection was closed as it should be (idle, shutting down): no
    /// failure, but worth a line.
    Closed(String),
}

impl Outcome {
    /// A failure of `kind`, described by `message`.
    pub fn failed(kind: impl Into<FailureKind>, message: impl Into<String>) -> Self {
        Outcome::Failed {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// What a successful request is worth mentioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    None,
    /// A file body moved: `bytes` of it this time, from where `start`
    /// says.
    Transfer {
        bytes: u64,
        elapsed: Duration,
        start: Start,
    },
    /// A listing was sent or received.
    Entries(usize),
    /// A recursive delete removed this much.
    Removed {
        files: u64,
        directories: u64,
    },
    /// A rename gave the name this new one.
    Renamed(String),
    /// A tree moved: files sent, files skipped as already there, the
    /// bytes of the files sent.
    Tree {
        files: u64,
        skipped: u64,
        bytes: u64,
        elapsed: Duration,
    },
}

/// Where a transfer's body began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Start {
    /// At its first byte, with nothing to resume.
    #[default]
    Fresh,
    /// At byte `at`, after a prefix a partial held and proved, reading
    /// `reread` bytes of it to do so (0 when its sealed record held).
    ResumedAt { at: u64, reread: u64 },
    /// At its first byte, a partial discarded for this reason.
    StartedOver(String),
}

impl Report {
    /// A report stamped with the current time.
    pub fn now(peer: String, subject: Subject, name: Option<String>, outcome: Outcome) -> Self {
        Report {
            time: SystemTime::now(),
            peer,
            subject,
            name,
            local: None,
            outcome,
        }
    }

    /// The same report, naming where the download landed.
    pub fn landed_at(self, local: Option<String>) -> Self {
        Report { local, ..self }
    }

    /// Whether the request succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Request(kind) => kind.fmt(f),
            Subject::Connection => f.write_str("connection"),
            Subject::Cleanup => f.write_str("cleanup"),
        }
    }
}

impl fmt::Display for Report {
    /// One line, whatever the name or message contain: `time peer request
    /// ["name"] [-> "local"] ok|failed ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            humantime::format_rfc3339_millis(self.time),
            self.peer,
            self.subject
        )?;
        if let Some(name) = &self.name {
            // Debug quoting escapes control characters, quotes and backslashes.
            write!(f, " {name:?}")?;
        }
        if let Some(local) = &self.local {
            write!(f, " -> {local:?}")?;
        }
        match &self.outcome {
            Outcome::Ok(Detail::None) => f.write_str(" ok"),
            Outcome::Ok(Detail::Transfer {
                bytes,
                elapsed,
                start,
            }) => {
                let seconds = elapsed.as_secs_f64();
                write!(f, " ok {bytes} bytes in {seconds:.3}s")?;
                // A rate over less than a megabyte says more about latency.
                if seconds > 0.0 && *bytes >= 1_000_000 {
                    write!(f, " ({:.1} MB/s)", *bytes as f64 / seconds / 1e6)?;
                }
                match start {
                    Start::Fresh => Ok(()),
                    Start::ResumedAt { at, reread: 0 } => {
                        write!(f, ", resumed at {}", mebibytes(*at))
                    }
                    Start::ResumedAt { at, reread } => write!(
                        f,
                        ", resumed at {} (proved by reading {} of the partial again)",
                        mebibytes(*at),
                        mebibytes(*reread)
                    ),
                    Start::StartedOver(why) => {
                        write!(f, ", started over: {}", escape_controls(why))
                    }
                }
            }
            Outcome::Ok(Detail::Entries(1)) => f.write_str(" ok 1 entry"),
            Outcome::Ok(Detail::Entries(count)) => write!(f, " ok {count} entries"),
            Outcome::Ok(Detail::Removed { files, directories }) => {
                let files = counted(*files, "file", "files");
                let directories = counted(*directories, "directory", "directories");
                write!(f, " ok removed {files} and {directories}")
            }
            Outcome::Ok(Detail::Renamed(to)) => write!(f, " ok -> {to:?}"),
            Outcome::Ok(Detail::Tree {
                files,
                skipped,
                bytes,
                elapsed,
            }) => {
                let files = counted(*files, "file", "files");
                let seconds = elapsed.as_secs_f64();
                write!(
                    f,
                    " ok {files}, {skipped} skipped, {bytes} bytes in {seconds:.3}s"
                )?;
                if seconds > 0.0 && *bytes >= 1_000_000 {
                    write!(f, " ({:.1} MB/s)", *bytes as f64 / seconds / 1e6)?;
                }
                Ok(())
            }
            Outcome::Failed { kind, message } => {
                write!(f, " failed {kind}: {}", escape_controls(message))
            }
            Outcome::Closed(why) => write!(f, " closed: {}", escape_controls(why)),
        }
    }
}

/// `bytes` in MiB with one decimal, as a resume offset (a whole number of
/// 64 MiB steps) reads best.
pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `count` with its noun, singular or plural.
fn counted(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// `s` with every control character escaped, so it prints on one line and
/// cannot drive the terminal.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::ErrorCode;

    fn at_epoch(request: RequestKind, name: Option<&str>, outcome: Outcome) -> String {
        let report = Report {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            peer: "127.0.0.1:4242".to_owned(),
            subject: Subject::Request(request),
            name: name.map(str::to_owned),
            local: None,
            outcome,
        };
        report.to_string()
    }

    #[test]
    fn a_download_names_where_it_landed() {
        let outcome = Outcome::Ok(Detail::Transfer {
            bytes: 2,
            elapsed: Duration::from_millis(1),
            start: Start::Fresh,
        });
        let report = Report {
            time: SystemTime::UNIX_EPOCH,
            peer: "127.0.0.1:4242".to_owned(),
            subject: Subject::Request(RequestKind::Get),
            name: Some("nested/renamed.txt".to_owned()),
            local: Some("./new\nname.txt".to_owned()),
            outcome,
        };
        assert_eq!(
            report.to_string(),
            r#"1970-01-01T00:00:00.000Z 127.0.0.1:4242 get "nested/renamed.txt" -> "./new\nname.txt" ok 2 bytes in 0.001s"#
        );
    }

    #[test]
    fn transfer_line() {
        let outcome = Outcome::Ok(Detail::Transfer {
            bytes: 2_000_000,
            elapsed: Duration::from_secs(2),
            start: Start::Fresh,
        });
        assert_eq!(
            at_epoch(RequestKind::Put, Some("a b.txt"), outcome),
            "2023-11-14T22:13:20.123Z 127.0.0.1:4242 put \"a b.txt\" ok 2000000 bytes in 2.000s (1.0 MB/s)"
        );
    }

    #[test]
    fn a_resumed_or_restarted_transfer_says_so() {
        let resumed = Outcome::Ok(Detail::Transfer {
            bytes: 1000,
            elapsed: Duration::from_secs(1),
            start: Start::ResumedAt {
                at: 612 * 1024 * 1024,
                reread: 0,
            },
        });
        assert!(at_epoch(RequestKind::Get, Some("x"), resumed)
            .ends_with("ok 1000 bytes in 1.000s, resumed at 612.0 MiB"));
        let reread = Outcome::Ok(Detail::Transfer {
            bytes: 1000,
            elapsed: Duration::from_secs(1),
            start: Start::ResumedAt {
                at: 128 * 1024 * 1024,
                reread: 128 * 1024 * 1024,
            },
        });
        assert!(at_epoch(RequestKind::Get, Some("x"), reread)
            .ends_with("resumed at 128.0 MiB (proved by reading 128.0 MiB of the partial again)"));
        let over = Outcome::Ok(Detail::Transfer {
            bytes: 1000,
            elapsed: Duration::from_secs(1),
            start: Start::StartedOver("the source changed\n".to_owned()),
        });
        assert!(at_epoch(RequestKind::Put, Some("x"), over)
            .ends_with("ok 1000 bytes in 1.000s, started over: the source changed\\n"));
    }

    #[test]
    fn failure_line() {
        let outcome = Outcome::failed(ErrorCode::NotFound, "no such file");
        assert_eq!(
            at_epoch(RequestKind::Get, Some("x"), outcome),
            "2023-11-14T22:13:20.123Z 127.0.0.1:4242 get \"x\" failed not-found: no such file"
        );
    }

    #[test]
    fn hostile_names_and_messages_stay_on_one_line() {
        let outcome = Outcome::failed(ErrorCode::BadName, "bad\nname\x1b[2J");
        let line = at_epoch(RequestKind::Put, Some("evil\n\r\x1b[31m\"name"), outcome);
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(line.contains(r#""evil\n\r\u{1b}[31m\"name""#), "{line}");
        assert!(line.ends_with(r"bad\nname\u{1b}[2J"), "{line}");
    }

    #[test]
    fn removal_counts_are_singular_or_plural() {
        let line = |files, directories| {
            let outcome = Outcome::Ok(Detail::Removed { files, directories });
            at_epoch(RequestKind::Delete, Some("d"), outcome)
        };
        assert!(line(1, 1).ends_with("ok removed 1 file and 1 directory"));
        assert!(line(0, 2).ends_with("ok removed 0 files and 2 directories"));
    }

    #[test]
    fn tree_line_counts_files_skips_and_bytes() {
        let outcome = Outcome::Ok(Detail::Tree {
            files: 2,
            skipped: 1,
            bytes: 10,
            elapsed: Duration::from_millis(1500),
        });
        assert!(at_epoch(RequestKind::GetTree, Some("d"), outcome)
            .ends_with("get-tree \"d\" ok 2 files, 1 skipped, 10 bytes in 1.500s"));
    }

    #[test]
    fn listing_line_without_name() {
        assert_eq!(
            at_epoch(RequestKind::List, None, Outcome::Ok(Detail::Entries(3))),
            "2023-11-14T22:13:20.123Z 127.0.0.1:4242 list ok 3 entries"
        );
    }
}
