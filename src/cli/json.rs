//! JSON output, for `ferry client --json` and `ferry server --log-format
//! json`: one object a line, each with a `type` a script dispatches on.
//! The field names are a promise (README, "JSON output"): add fields,
//! never rename or drop one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry::protocol::{Entry, EntryKind, Info, Link};
use ferry::report::{Detail, Outcome, Report, Start};
use serde::Serialize;

/// A finished request (or, from a server, a connection's or a cleanup's
/// end), as [`Report`]'s text line tells it. Fields a request has no
/// use for are left out rather than null.
#[derive(Serialize)]
struct ReportObject<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    /// When it finished, RFC 3339 with milliseconds.
    time: String,
    peer: &'a str,
    /// `put`, `get`, `list`, ..., or `connection`, `cleanup` from a server.
    request: String,
    name: Option<&'a str>,
    local: Option<&'a str>,
    /// `ok`, `failed`, or `closed` (a server's connection ending as it
    /// should).
    outcome: &'static str,
    #[serde(flatten)]
    detail: DetailFields<'a>,
}

/// What a report adds beyond its outcome; each field only where the text
/// line has it.
#[derive(Default, Serialize)]
struct DetailFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reread: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_over: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_directories: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renamed_to: Option<&'a str>,
    /// The failure kind, the word the text line shows after `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// Why it failed, or why a connection was closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// A report as one JSON line (no newline).
pub fn report_line(report: &Report) -> String {
    let (outcome, detail) = match &report.outcome {
        Outcome::Ok(detail) => ("ok", detail_fields(detail)),
        Outcome::Failed { kind, message } => (
            "failed",
            DetailFields {
                kind: Some(kind.to_string()),
                message: Some(message),
                ..DetailFields::default()
            },
        ),
        Outcome::Closed(why) => (
            "closed",
            DetailFields {
                message: Some(why),
                ..DetailFields::default()
            },
        ),
    };
    to_line(&ReportObject {
        type_: "report",
        time: rfc3339_millis(report.time),
        peer: &report.peer,
        request: report.subject.to_string(),
        name: report.name.as_deref(),
        local: report.local.as_deref(),
        outcome,
        detail,
    })
}

fn detail_fields(detail: &Detail) -> DetailFields<'_> {
    let none = DetailFields::default();
    match detail {
        Detail::None => none,
        Detail::Transfer {
            bytes,
            elapsed,
            start,
        } => {
            let (resumed_at, reread, started_over) = match start {
                Start::Fresh => (None, None, None),
                Start::ResumedAt { at, reread } => (Some(*at), Some(*reread), None),
                Start::StartedOver(why) => (None, None, Some(why.as_str())),
            };
            DetailFields {
                bytes: Some(*bytes),
                seconds: Some(seconds(*elapsed)),
                resumed_at,
                reread,
                started_over,
                ..none
            }
        }
        Detail::Entries(count) => DetailFields {
            entries: Some(*count),
            ..none
        },
        Detail::Removed { files, directories } => DetailFields {
            removed_files: Some(*files),
            removed_directories: Some(*directories),
            ..none
        },
        Detail::Renamed(to) => DetailFields {
            renamed_to: Some(to),
            ..none
        },
        Detail::Tree {
            files,
            skipped,
            bytes,
            elapsed,
        } => DetailFields {
            files: Some(*files),
            skipped: Some(*skipped),
            bytes: Some(*bytes),
            seconds: Some(seconds(*elapsed)),
            ..none
        },
    }
}

/// The last line of a failed client command: what failed, and the exit
/// code the process ends with.
#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    /// The request, if the failure was one's: `put`, `get`, ...
    request: Option<String>,
    name: Option<&'a str>,
    kind: String,
    message: &'a str,
    exit_code: u8,
}

/// An `error` line. `request` and `name` say what failed, when a request
/// did.
pub fn error_line(
    request: Option<String>,
    name: Option<&str>,
    kind: &str,
    message: &str,
    exit_code: u8,
) -> String {
    to_line(&ErrorObject {
        type_: "error",
        request,
        name,
        kind: kind.to_owned(),
        message,
        exit_code,
    })
}

/// One name of a listing.
#[derive(Serialize)]
struct EntryObject<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    name: &'a str,
    kind: &'static str,
    /// Bytes; null without `-l`, which the server then does not send.
    size: Option<u64>,
    mtime: Option<String>,
    mtime_seconds: Option<i64>,
}

/// A listing entry as a JSON line; `long` says whether the server sent
/// its size and time.
pub fn entry_line(entry: &Entry, long: bool) -> String {
    to_line(&EntryObject {
        type_: "entry",
        name: &entry.name,
        kind: kind_word(entry.kind),
        size: long.then_some(entry.size),
        mtime: long.then(|| rfc3339_seconds(entry.modified)),
        mtime_seconds: long.then_some(entry.modified),
    })
}

/// A file of a tree as it moved or was skipped (`--verbose`).
#[derive(Serialize)]
struct TreeFileObject<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    path: &'a str,
    action: &'static str,
    size: u64,
    /// Bytes that moved: `size` when moved, less when resumed, 0 when
    /// skipped.
    moved: u64,
}

/// A tree file as a JSON line: `action` is moved, resumed or skipped.
pub fn tree_file_line(path: &str, action: &'static str, size: u64, moved: u64) -> String {
    to_line(&TreeFileObject {
        type_: "tree-file",
        path,
        action,
        size,
        moved,
    })
}

/// What a stat found.
#[derive(Serialize)]
struct StatObject<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    name: &'a str,
    kind: &'static str,
    /// `none`, `inside` (a symlink to something served, which the other
    /// fields describe) or `elsewhere` (a symlink leading out or nowhere).
    link: &'static str,
    size: u64,
    mtime: String,
    mtime_seconds: i64,
    /// Permission bits in octal, as `ls` and `chmod` write them: `0644`.
    mode: String,
    /// The BLAKE3 digest in hex, null if the server does not have it yet
    /// or the name is not a file.
    blake3: Option<String>,
}

/// A stat's answer as a JSON line.
pub fn stat_line(name: &str, info: &Info) -> String {
    to_line(&StatObject {
        type_: "stat",
        name,
        kind: kind_word(info.kind),
        link: match info.link {
            Link::None => "none",
            Link::Inside => "inside",
            Link::Elsewhere => "elsewhere",
        },
        size: info.size,
        mtime: rfc3339_seconds(info.modified),
        mtime_seconds: info.modified,
        mode: format!("{:04o}", info.mode),
        blake3: info
            .digest
            .map(|digest| digest.iter().map(|byte| format!("{byte:02x}")).collect()),
    })
}

/// The server's start line.
#[derive(Serialize)]
struct StartObject<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    time: String,
    /// The bound address, `IP:PORT`: the port is the one picked for 0.
    address: String,
    root: &'a str,
    /// `plain` or `TLS, identity <fingerprint>`, as the text line says.
    encryption: &'a str,
    /// `fingerprint` of the identity under TLS, else null.
    fingerprint: Option<String>,
    /// Who may connect, and with which mode, as the text line says.
    access: &'a str,
}

/// The server's start line as JSON.
pub fn start_line(
    address: std::net::SocketAddr,
    root: &str,
    encryption: &str,
    fingerprint: Option<String>,
    access: &str,
) -> String {
    to_line(&StartObject {
        type_: "start",
        time: rfc3339_millis(SystemTime::now()),
        address: address.to_string(),
        root,
        encryption,
        fingerprint,
        access,
    })
}

/// The line a server's report writer adds when it had to drop lines.
#[derive(Serialize)]
struct DroppedObject {
    #[serde(rename = "type")]
    type_: &'static str,
    time: String,
    count: u64,
}

/// `count` report lines were dropped, as a JSON line.
pub fn dropped_line(count: u64) -> String {
    to_line(&DroppedObject {
        type_: "dropped",
        time: rfc3339_millis(SystemTime::now()),
        count,
    })
}

/// The word a listing and a stat use for a kind.
fn kind_word(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Directory => "dir",
        EntryKind::Other => "other",
    }
}

fn seconds(elapsed: Duration) -> f64 {
    // Milliseconds are what the text line shows, and what a script can use.
    (elapsed.as_secs_f64() * 1000.0).round() / 1000.0
}

fn rfc3339_millis(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Seconds since the epoch as RFC 3339; times before it show as the epoch,
/// as the text listing does.
fn rfc3339_seconds(seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(seconds.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Serialises one object. Its fields are strings and numbers only, which
/// serde_json always writes: an error here is a bug, said as JSON still.
fn to_line(object: &impl Serialize) -> String {
    serde_json::to_string(object).unwrap_or_else(|e| {
        let said = serde_json::json!({
            "type": "error",
            "kind": "internal-error",
            "message": format!("cannot write JSON: {e}"),
        });
        said.to_string()
    })
}

// The binary denies these for code that runs; a test fails by panicking.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    use ferry::protocol::{ErrorCode, RequestKind};
    use ferry::report::Subject;

    fn parsed(line: &str) -> serde_json::Value {
        serde_json::from_str(line).expect(line)
    }

    #[test]
    fn a_transfer_report_has_bytes_seconds_and_where_it_landed() {
        let report = Report::now(
            "127.0.0.1:1".to_owned(),
            Subject::Request(RequestKind::Get),
            Some("a \"b\"\n".to_owned()),
            Outcome::Ok(Detail::Transfer {
                bytes: 12,
                elapsed: Duration::from_millis(1500),
                start: Start::ResumedAt { at: 4, reread: 0 },
            }),
        )
        .landed_at(Some("./c".to_owned()));
        let object = parsed(&report_line(&report));
        assert_eq!(object["type"], "report");
        assert_eq!(object["request"], "get");
        assert_eq!(object["name"], "a \"b\"\n");
        assert_eq!(object["local"], "./c");
        assert_eq!(object["outcome"], "ok");
        assert_eq!(object["bytes"], 12);
        assert_eq!(object["seconds"], 1.5);
        assert_eq!(object["resumed_at"], 4);
        assert!(object.get("kind").is_none(), "{object}");
    }

    #[test]
    fn a_failure_report_has_its_kind_and_message() {
        let report = Report::now(
            "p".to_owned(),
            Subject::Request(RequestKind::Delete),
            None,
            Outcome::failed(ErrorCode::NotFound, "no such file"),
        );
        let object = parsed(&report_line(&report));
        assert_eq!(object["outcome"], "failed");
        assert_eq!(object["kind"], "not-found");
        assert_eq!(object["message"], "no such file");
        assert_eq!(object["name"], serde_json::Value::Null);
    }

    #[test]
    fn the_dropped_lines_notice_is_an_object_too() {
        let object = parsed(&dropped_line(7));
        assert_eq!(object["type"], "dropped");
        assert_eq!(object["count"], 7);
        assert!(object["time"].is_string());
    }

    #[test]
    fn times_before_the_epoch_show_as_the_epoch() {
        assert_eq!(rfc3339_seconds(-5), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(86_400), "1970-01-02T00:00:00Z");
    }
}
