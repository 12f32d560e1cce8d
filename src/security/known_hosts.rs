//! The client's record of the servers it has met: one `HOST:PORT
//! FINGERPRINT` line each, as SSH's known_hosts, first use trusted.

use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::Fingerprint;

/// A known-hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
}

/// A server found in the file, and the line that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownHost {
    pub line: usize,
    pub fingerprint: Fingerprint,
}

/// Why the known-hosts file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error(
        "no configuration directory (is HOME set?); pass --known-hosts FILE or --fingerprint HEX"
    )]
    NoConfigDir,
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot record the server in {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// A line for the server that cannot be read is not taken as "never
    /// met": that would trust whatever answers now.
    #[error("line {line} of {} is not `HOST:PORT FINGERPRINT`; fix or remove it", path.display())]
    BadLine { path: PathBuf, line: usize },
    #[error("{} records no server {target}", path.display())]
    NotRecorded { path: PathBuf, target: String },
}

/// A line of the file that records a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `host:port`, as the client connected to it.
    pub target: String,
    pub fingerprint: Fingerprint,
}

impl KnownHosts {
    /// The file in ferry's configuration directory.
    pub fn default_location() -> Result<KnownHosts, KnownHostsError> {
        super::config_dir()
            .map(|dir| KnownHosts::at(dir.join("known_hosts")))
            .ok_or(KnownHostsError::NoConfigDir)
    }

    pub fn at(path: PathBuf) -> KnownHosts {
        KnownHosts { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file records for `target` (`host:port`), if anything. A
    /// missing file records nothing.
    pub fn lookup(&self, target: &str) -> Result<Option<KnownHost>, KnownHostsError> {
        find(&self.read()?, target).map_err(|line| KnownHostsError::BadLine {
            path: self.path.clone(),
            line,
        })
    }

    /// Every server the file records, in its order, and the numbers of
    /// the lines that cannot be read (blank lines and comments aside).
    pub fn entries(&self) -> Result<(Vec<Entry>, Vec<usize>), KnownHostsError> {
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        for (index, line) in self.read()?.lines().enumerate() {
            match parse_line(line) {
                Line::Skipped => {}
                Line::Entry(entry) => entries.push(entry),
                Line::Bad(_) => bad.push(index + 1),
            }
        }
        Ok((entries, bad))
    }

    /// Removes every line for `target`, rewriting the file atomically (a
    /// temporary file beside it, renamed over it) with its mode kept. The
    /// server is then met as for the first time.
    pub fn forget(&self, target: &str) -> Result<(), KnownHostsError> {
        let text = self.read()?;
        let kept: String = text
            .split_inclusive('\n')
            .filter(|line| line.split_whitespace().next() != Some(target))
            .collect();
        if kept.len() == text.len() {
            return Err(KnownHostsError::NotRecorded {
                path: self.path.clone(),
                target: target.to_owned(),
            });
        }
        let failed = |source| KnownHostsError::Write {
            path: self.path.clone(),
            source,
        };
        let permissions = std::fs::metadata(&self.path).map_err(failed)?.permissions();
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
        temporary.write_all(kept.as_bytes()).map_err(failed)?;
        temporary.as_file().sync_all().map_err(failed)?;
        std::fs::set_permissions(temporary.path(), permissions).map_err(failed)?;
        temporary.persist(&self.path).map_err(|e| failed(e.error))?;
        Ok(())
    }

    /// The file's text; a missing file is empty.
    fn read(&self) -> Result<String, KnownHostsError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(KnownHostsError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Appends a line trusting `fingerprint` for `target`, creating the file
    /// and its directory if needed.
    pub fn record(&self, target: &str, fingerprint: Fingerprint) -> Result<(), KnownHostsError> {
        let failed = |source| KnownHostsError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(failed)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(failed)?;
        // One write, so clients recording at once do not interleave.
        file.write_all(format!("{target} {fingerprint}\n").as_bytes())
            .map_err(failed)
    }
}

/// What one line of the file holds.
enum Line<'a> {
    /// A blank line or a `#` comment.
    Skipped,
    Entry(Entry),
    /// A line that cannot be read, and its first word.
    Bad(&'a str),
}

fn parse_line(line: &str) -> Line<'_> {
    let mut words = line.split_whitespace();
    let Some(host) = words.next().filter(|word| !word.starts_with('#')) else {
        return Line::Skipped;
    };
    match (words.next().map(Fingerprint::parse), words.next()) {
        (Some(Ok(fingerprint)), None) => Line::Entry(Entry {
            target: host.to_owned(),
            fingerprint,
        }),
        _ => Line::Bad(host),
    }
}

/// The first line of `text` for `target`, or the number of a line for it
/// that cannot be read. Blank lines and `#` comments are skipped.
fn find(text: &str, target: &str) -> Result<Option<KnownHost>, usize> {
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        match parse_line(line) {
            Line::Entry(entry) if entry.target == target => {
                return Ok(Some(KnownHost {
                    line: line_number,
                    fingerprint: entry.fingerprint,
                }))
            }
            Line::Bad(host) if host == target => return Err(line_number),
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(seed: &[u8]) -> Fingerprint {
        Fingerprint::of_certificate(seed)
    }

    #[test]
    fn the_line_for_the_target_is_found_with_its_number() {
        let (a, b) = (fingerprint(b"a"), fingerprint(b"b"));
        let text = format!("# servers\n\n10.0.0.1:4000 {a}\n[::1]:4000 {b}\n");
        assert_eq!(
            find(&text, "[::1]:4000"),
            Ok(Some(KnownHost {
                line: 4,
                fingerprint: b
            }))
        );
        assert_eq!(find(&text, "10.0.0.1:4001"), Ok(None));
        assert_eq!(find(&text, "#"), Ok(None));
    }

    #[test]
    fn an_unreadable_line_for_the_target_is_an_error_not_a_stranger() {
        assert_eq!(find("host:1 nothex\n", "host:1"), Err(1));
        let a = fingerprint(b"a");
        assert_eq!(find(&format!("host:1 {a} extra\n"), "host:1"), Err(1));
        // Damage on another server's line does not matter here.
        assert_eq!(
            find(&format!("other:1 zz\nhost:1 {a}\n"), "host:1")
                .unwrap()
                .unwrap()
                .line,
            2
        );
    }

    #[test]
    fn forgetting_removes_only_that_servers_lines_and_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let (a, b) = (fingerprint(b"a"), fingerprint(b"b"));
        std::fs::write(&path, format!("# mine\nh:1 {a}\nh:10 {b}\nbroken\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let hosts = KnownHosts::at(path.clone());
        hosts.forget("h:1").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("# mine\nh:10 {b}\nbroken\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(matches!(
            hosts.forget("h:1"),
            Err(KnownHostsError::NotRecorded { .. })
        ));
        let (entries, bad) = hosts.entries().unwrap();
        assert_eq!(
            entries,
            vec![Entry {
                target: "h:10".into(),
                fingerprint: b
            }]
        );
        assert_eq!(bad, vec![3]);
    }

    #[test]
    fn recorded_servers_are_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = KnownHosts::at(dir.path().join("new/known_hosts"));
        assert_eq!(hosts.lookup("h:1").unwrap(), None);
        hosts.record("h:1", fingerprint(b"one")).unwrap();
        hosts.record("h:2", fingerprint(b"two")).unwrap();
        let found = hosts.lookup("h:2").unwrap().unwrap();
        assert_eq!((found.line, found.fingerprint), (2, fingerprint(b"two")));
    }
}
