//! What the client prints: report lines and progress on stderr, listings
//! on stdout; under --json, every line on stdout as JSON.

use std::io::{IsTerminal, Write};

use ferry::client::{Progress, TreeFile};
use ferry::protocol::{Entry, EntryKind, Info, Link, OmitReason};
use ferry::report::{escape_controls, Report};
use indicatif::ProgressStyle;

/// Prints a report line to stderr.
pub fn print_report(report: &Report) {
    let _ = writeln!(std::io::stderr().lock(), "{report}");
}

/// Where a JSON line goes: stdout, unless a download is written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonTo {
    Stdout,
    /// Stdout carries a file's bytes (`get NAME -`).
    Stderr,
}

/// Prints one JSON line. Write errors (a closed pipe) are ignored, as for
/// listings.
pub fn print_json(line: &str, to: JsonTo) {
    let _ = match to {
        JsonTo::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
        JsonTo::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
    };
}

/// Prints one listing entry: its name, with a trailing `/` for a
/// directory, after its size and time with `long`, the size as
/// [`human_size`] writes it with `human`. Control characters are escaped
/// so each entry stays one line. Write errors (a closed pipe) are ignored:
/// the listing is still read to its end to keep the connection in step.
pub fn print_entry(out: &mut impl Write, entry: &Entry, long: bool, human: bool) {
    let slash = if entry.kind == EntryKind::Directory {
        "/"
    } else {
        ""
    };
    let name = escape_controls(&entry.name);
    let _ = if long {
        let time = format_time(entry.modified);
        if human {
            writeln!(out, "{:>5}  {time}  {name}{slash}", human_size(entry.size))
        } else {
            writeln!(out, "{:>14}  {time}  {name}{slash}", entry.size)
        }
    } else {
        writeln!(out, "{name}{slash}")
    };
}

/// Says on stderr, one line per reason, how many names a listing (`not
/// shown`) or a tree (`left out`) left out.
pub fn print_omitted(omitted: &[(OmitReason, u64)], how: &str) {
    for (reason, count) in omitted {
        let why = match reason {
            OmitReason::UnusableName => {
                "not valid UTF-8, or holding control characters or backslashes".to_owned()
            }
            OmitReason::LinkOutside => {
                "symlinks leading outside the served directory, or nowhere".to_owned()
            }
            OmitReason::Vanished => "removed while the directory was being listed".to_owned(),
            OmitReason::NotFileOrDirectory => {
                "symlinks or special files, which a tree does not carry".to_owned()
            }
            OmitReason::Unknown(code) => format!("for a reason this client does not know ({code})"),
        };
        let names = if *count == 1 { "name" } else { "names" };
        let _ = writeln!(std::io::stderr().lock(), "{count} {names} {how}: {why}");
    }
}

/// Prints what a stat found, one `field: value` a line.
pub fn print_info(out: &mut impl Write, name: &str, info: &Info) {
    let kind = match info.kind {
        EntryKind::File => "file",
        EntryKind::Directory => "directory",
        EntryKind::Other => "other (fifo, socket or device)",
    };
    let kind = match info.link {
        Link::None => kind.to_owned(),
        Link::Inside => format!("{kind}, through a symlink"),
        Link::Elsewhere => "symlink leading outside the served directory, or nowhere".to_owned(),
    };
    let _ = writeln!(out, "name:     {}", escape_controls(name));
    let _ = writeln!(out, "kind:     {kind}");
    let _ = writeln!(out, "size:     {}", info.size);
    let _ = writeln!(out, "modified: {}", format_time(info.modified));
    let _ = writeln!(out, "mode:     {:04o}", info.mode);
    if info.kind == EntryKind::File && info.link != Link::Elsewhere {
        let digest = info.digest.map_or_else(
            || "not known to the server yet (a get computes it)".to_owned(),
            |digest| digest.iter().map(|byte| format!("{byte:02x}")).collect(),
        );
        let _ = writeln!(out, "blake3:   {digest}");
    }
}

/// Seconds since the Unix epoch as an RFC 3339 time, `-` if out of range.
fn format_time(seconds: i64) -> String {
    std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(
            seconds.max(0).unsigned_abs(),
        ))
        .map(humantime::format_rfc3339_seconds)
        .map_or_else(|| "-".to_owned(), |t| t.to_string())
}

/// `bytes` as `ls -lh` shows it: bytes below 1024, else in the smallest
/// unit (K, M, G, T, P, E; powers of 1024) that keeps it under 1024,
/// rounded up so it never shows less than there is, with one decimal
/// below 10: `1.5K`, `23M`, `2.0G`.
fn human_size(bytes: u64) -> String {
    if bytes < 1024 {
        return bytes.to_string();
    }
    let bytes = u128::from(bytes);
    let (unit, divisor) = ["K", "M", "G", "T", "P", "E"]
        .into_iter()
        .zip(std::iter::successors(Some(1024_u128), |d| Some(d * 1024)))
        .find(|(_, divisor)| bytes.div_ceil(*divisor) < 1024)
        // u64::MAX is under 16E, so some unit always fits.
        .unwrap_or(("E", 1 << 60));
    let tenths = (bytes * 10).div_ceil(divisor);
    if tenths < 100 {
        format!("{}.{}{unit}", tenths / 10, tenths % 10)
    } else {
        format!("{}{unit}", bytes.div_ceil(divisor))
    }
}

/// How each file of a tree is named as it moves or is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileNaming {
    /// A line on stderr, above the bar.
    Text,
    /// A `tree-file` JSON object on stdout.
    Json,
}

/// A progress bar on stderr, drawn only when stderr is a terminal; for a
/// tree, it may also name each file.
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
    /// For a tree: files done, of how many.
    files: Option<(u64, u64)>,
    naming: Option<FileNaming>,
}

impl ProgressBar {
    /// A bar for one transfer, hidden with `quiet` or without a terminal.
    pub fn for_transfer(quiet: bool) -> Self {
        let shown = !quiet && std::io::stderr().is_terminal();
        ProgressBar {
            bar: shown.then(indicatif::ProgressBar::hidden),
            files: None,
            naming: None,
        }
    }

    /// One bar for a whole tree: files done of all, and bytes; each file
    /// named as `naming` says.
    pub fn for_tree(quiet: bool, naming: Option<FileNaming>) -> Self {
        let mut bar = ProgressBar::for_transfer(quiet);
        bar.files = Some((0, 0));
        bar.naming = naming;
        bar
    }

    /// Names a file of the tree, if asked to: `action` is moved, resumed
    /// or skipped.
    fn name_file(&self, path: &str, action: &'static str, size: u64, moved: u64) {
        match self.naming {
            None => {}
            Some(FileNaming::Json) => print_json(
                &super::json::tree_file_line(path, action, size, moved),
                JsonTo::Stdout,
            ),
            Some(FileNaming::Text) => {
                let line = match action {
                    "resumed" => format!(
                        "  resumed {:?} {moved} of {size} bytes",
                        escape_controls(path)
                    ),
                    "skipped" => format!("  skipped {:?} (same content)", escape_controls(path)),
                    _ => format!("  {action} {:?} {size} bytes", escape_controls(path)),
                };
                match &self.bar {
                    // Above the bar, which is drawn again below it.
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
    }

    fn show_files(&self) {
        if let (Some(bar), Some((done, total))) = (&self.bar, self.files) {
            bar.set_message(format!("{done}/{total} files"));
        }
    }
}

impl Progress for ProgressBar {
    fn begin(&mut self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            let template = match self.files {
                Some(_) => "{msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                None => "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn begin_files(&mut self, total: u64) {
        self.files = Some((0, total));
        self.show_files();
    }

    fn file_done(&mut self, file: &TreeFile<'_>) {
        if let Some((done, _)) = self.files.as_mut() {
            *done += 1;
        }
        self.show_files();
        let action = match file.moved < file.size {
            true => "resumed",
            false => "moved",
        };
        self.name_file(file.path, action, file.size, file.moved);
    }

    fn file_skipped(&mut self, path: &str, size: u64) {
        self.name_file(path, "skipped", size, 0);
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn human_sizes_round_up_like_ls() {
        for (bytes, shown) in [
            (0, "0"),
            (1023, "1023"),
            (1024, "1.0K"),
            (1025, "1.1K"),
            (1536, "1.5K"),
            (10 * 1024 - 1, "10K"),
            (1024 * 1024 - 1, "1.0M"),
            (23 * 1024 * 1024, "23M"),
            (2 << 30, "2.0G"),
            (u64::MAX, "16E"),
        ] {
            assert_eq!(human_size(bytes), shown, "{bytes}");
        }
    }
}
