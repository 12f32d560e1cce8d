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
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KnownHostsError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        find(&text, target).map_err(|line| KnownHostsError::BadLine {
            path: self.path.clone(),
            line,
        })
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

/// The first line of `text` for `target`, or the number of a line for it
/// that cannot be read. Blank lines and `#` comments are skipped.
fn find(text: &str, target: &str) -> Result<Option<KnownHost>, usize> {
    for (index, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let Some(host) = words.next().filter(|word| !word.starts_with('#')) else {
            continue;
        };
        if host != target {
            continue;
        }
        let line = index + 1;
        let fingerprint = match (words.next(), words.next()) {
            (Some(hex), None) => Fingerprint::parse(hex).map_err(|_| line)?,
            _ => return Err(line),
        };
        return Ok(Some(KnownHost { line, fingerprint }));
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
