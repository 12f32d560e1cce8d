//! A received manifest kept in an unnamed temporary file rather than in
//! memory, so a tree of any size costs the client a little disk and no
//! more memory than one entry (PROTOCOL.md §5.11). The entries are kept as
//! the frames they came in.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

use crate::protocol::{decode, encode, Message, TreeEntry};

/// Entries written in order, then read back in the same order.
pub(super) struct Spool {
    writer: BufWriter<File>,
}

/// A spool being read back.
pub(super) struct SpoolReader {
    reader: BufReader<File>,
    frame: Vec<u8>,
}

impl Spool {
    /// An empty spool in the system's temporary directory, with no name,
    /// so nothing is left behind however the process ends.
    pub fn new() -> io::Result<Spool> {
        let dir = std::env::temp_dir();
        let flags = rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR;
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        let file = match rustix::fs::open(&dir, flags | rustix::fs::OFlags::CLOEXEC, mode) {
            Ok(fd) => File::from(fd),
            // No O_TMPFILE there: a named file, unlinked at once.
            Err(_) => {
                let path = dir.join(format!("ferry-manifest-{}", std::process::id()));
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                std::fs::remove_file(&path)?;
                file
            }
        };
        Ok(Spool {
            writer: BufWriter::new(file),
        })
    }

    /// Keeps `entry`.
    pub fn push(&mut self, entry: TreeEntry) -> io::Result<()> {
        let mut frame = Vec::new();
        encode(&Message::TreeEntry(entry), &mut frame).map_err(io::Error::other)?;
        self.writer.write_all(&frame)
    }

    /// Reads the entries back from the first.
    pub fn read(self) -> io::Result<SpoolReader> {
        let mut file = self.writer.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(SpoolReader {
            reader: BufReader::new(file),
            frame: Vec::new(),
        })
    }
}

impl SpoolReader {
    /// The next entry; `None` after the last.
    pub fn next_entry(&mut self) -> io::Result<Option<TreeEntry>> {
        let mut length = [0; 4];
        match self.reader.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let body_len = u32::from_be_bytes(length) as usize;
        self.frame.clear();
        self.frame.extend_from_slice(&length);
        self.frame.resize(4 + body_len, 0);
        self.reader
            .read_exact(self.frame.get_mut(4..).unwrap_or_default())?;
        match decode(&self.frame) {
            Ok(Some((Message::TreeEntry(entry), _))) => Ok(Some(entry)),
            _ => Err(io::Error::other("the manifest spool is damaged")),
        }
    }

    /// Starts again from the first entry.
    pub fn rewind(&mut self) -> io::Result<()> {
        self.reader.rewind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EntryKind;

    #[test]
    fn entries_come_back_in_order_twice() {
        let mut spool = Spool::new().unwrap();
        let entries: Vec<TreeEntry> = (0..300)
            .map(|n| TreeEntry {
                kind: EntryKind::File,
                size: n,
                mode: 0o644,
                modified: -5,
                digest: Some([n as u8; 32]),
                path: format!("f{n:04}"),
            })
            .collect();
        for entry in &entries {
            spool.push(entry.clone()).unwrap();
        }
        let mut reader = spool.read().unwrap();
        for _ in 0..2 {
            let mut back = Vec::new();
            while let Some(entry) = reader.next_entry().unwrap() {
                back.push(entry);
            }
            assert_eq!(back, entries);
            reader.rewind().unwrap();
        }
    }
}
