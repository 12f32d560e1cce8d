//! A transfer kept part way, to be resumed: the partial file and its
//! record (PROTOCOL.md §5.14).
//!
//! The receiver of a body writes it to a hidden partial file. After each
//! step is synced to disk it writes a record beside it: the prefix the
//! step ends (its length and chaining values, see [`Prefix`]), what the
//! partial is for, and a checksum. When a transfer is cut off while this
//! process lives, the partial is cut back to its last prefix and the
//! record is sealed with the partial's size and change time. A later
//! transfer of the same file trusts a sealed record as long as the
//! partial still has that size and change time, without reading a byte
//! of it; a partial that changed since (a process killed mid-step, or a
//! byte flipped by someone) is read once and its prefix hashed again, and
//! kept only if it matches; anything else is discarded and the body moves
//! from its start. The whole-file digest checked before the partial takes
//! its name stays the final guarantee.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cap_std::fs::{Dir, OpenOptions};
use rustix::fs::{Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::protocol::{ChainingValue, Prefix, StepHasher, MAX_PREFIX_VALUES, STEP};
use crate::transport::BodySink;

/// The first bytes of every record, with the format's version.
const MAGIC: &[u8; 8] = b"ferryPR1";

/// Bytes read at a time when a partial's prefix is hashed again.
const HASH_READ: usize = 256 * 1024;

/// The largest record: a name of at most 4 KiB and 64 chaining values fit.
const MAX_RECORD_LEN: usize = 8 * 1024;

/// What a partial is for and how far it is proven, as its record keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The proven start of the partial.
    pub prefix: Prefix,
    /// The partial's size when the record was written.
    pub file_size: u64,
    /// The partial's change time then, seconds and nanoseconds.
    pub changed: (i64, u32),
    /// The source's size and modification time (whole seconds) when the
    /// transfer began: a source that differs now is another file.
    pub source_size: u64,
    pub source_modified: i64,
    /// The name the partial will take.
    pub name: String,
}

impl Record {
    /// The record's bytes: the fields, big-endian, then the BLAKE3 digest
    /// of all that comes before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 32 * self.prefix.values.len() + self.name.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.prefix.len.to_be_bytes());
        out.extend_from_slice(&self.file_size.to_be_bytes());
        out.extend_from_slice(&self.changed.0.to_be_bytes());
        out.extend_from_slice(&self.changed.1.to_be_bytes());
        out.extend_from_slice(&self.source_size.to_be_bytes());
        out.extend_from_slice(&self.source_modified.to_be_bytes());
        out.push(self.prefix.values.len() as u8);
        for value in &self.prefix.values {
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// The record in `bytes`, or `None` if they are not one whole,
    /// undamaged record.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
        if blake3::hash(body).as_bytes() != checksum {
            return None;
        }
        let mut reader = Reader(body);
        if reader.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let len = reader.u64()?;
        let file_size = reader.u64()?;
        let changed = (reader.u64()? as i64, reader.u32()?);
        let source_size = reader.u64()?;
        let source_modified = reader.u64()? as i64;
        let count = usize::from(*reader.take(1)?.first()?);
        if count > MAX_PREFIX_VALUES {
            return None;
        }
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            values.push(ChainingValue::try_from(reader.take(32)?).ok()?);
        }
        let name_len = usize::from(u16::from_be_bytes(reader.take(2)?.try_into().ok()?));
        let name = String::from_utf8(reader.take(name_len)?.to_vec()).ok()?;
        let prefix = Prefix { len, values };
        (reader.0.is_empty() && prefix.is_well_formed(STEP)).then_some(Record {
            prefix,
            file_size,
            changed,
            source_size,
            source_modified,
            name,
        })
    }
}

/// Reads a record's fields in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// What became of an earlier partial when a transfer began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// There was none.
    Nothing,
    /// Its prefix is proven; `reread` bytes of it were read to prove it
    /// (0 when its sealed record held).
    Resumed { reread: u64 },
    /// Discarded, as asked.
    Restarted,
    /// Discarded: it was for a source of another size or time.
    SourceChanged,
    /// Discarded: its record is missing or damaged, or it does not match
    /// the partial.
    Unproven,
}

impl Found {
    /// How much of the partial was read again to prove it.
    pub fn reread(self) -> u64 {
        match self {
            Found::Resumed { reread } => reread,
            Found::Nothing | Found::Restarted | Found::SourceChanged | Found::Unproven => 0,
        }
    }
}

/// Where a partial and its record live, and what they are for.
pub struct Place<'a> {
    /// The directory holding both.
    pub dir: &'a Dir,
    pub data_name: &'a str,
    pub record_name: &'a str,
    /// The name the partial will take, kept in its record.
    pub name: &'a str,
    pub source_size: u64,
    pub source_modified: i64,
    /// The directory `dir` is in and its name there, if `dir` is to go
    /// once no partial is left in it.
    pub tidy: Option<(&'a Dir, &'a str)>,
}

/// A partial being written: a body's sink that checkpoints itself. A
/// clone is another handle on the same partial, so its owner still holds
/// it when a failed transfer has dropped the sink it was handed.
#[derive(Clone, Debug)]
pub struct Partial(Arc<Held>);

/// The partial's file and record, shared by its handles.
#[derive(Debug)]
pub struct Held {
    dir: Dir,
    data_name: String,
    record_name: String,
    file: std::fs::File,
    /// The record as last written; its prefix is the last checkpoint.
    record: Mutex<Record>,
    /// Committed or discarded: nothing is left to seal.
    finished: AtomicBool,
    /// Where `dir` is, to remove it once empty.
    tidy: Option<(Dir, String)>,
}

impl Partial {
    /// Opens the partial at `place`, proving what it holds, or makes a new
    /// one (discarding the old with `restart`). Gives back the partial, its
    /// proven prefix (empty for a new one) and what became of the old.
    pub fn open(place: &Place<'_>, restart: bool) -> io::Result<(Partial, Found)> {
        let found = match place
            .dir
            .open_with(place.data_name, OpenOptions::new().read(true).write(true))
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
            Ok(file) => Some(lock_exclusively(file.into_std())?),
        };
        let Some(file) = found else {
            return Ok((Partial::create(place)?, Found::Nothing));
        };
        let record = read_record(place.dir, place.record_name);
        let why_not = match &record {
            _ if restart => Found::Restarted,
            None => Found::Unproven,
            Some(record)
                if record.source_size != place.source_size
                    || record.source_modified != place.source_modified =>
            {
                Found::SourceChanged
            }
            Some(record) if record.name != place.name || record.prefix.len >= place.source_size => {
                Found::Unproven
            }
            Some(record) => match prove(&file, record)? {
                Some(reread) => {
                    let partial = Partial(Arc::new(Held {
                        dir: place.dir.try_clone()?,
                        data_name: place.data_name.to_owned(),
                        record_name: place.record_name.to_owned(),
                        file,
                        record: Mutex::new(record.clone()),
                        finished: AtomicBool::new(false),
                        tidy: tidy_of(place)?,
                    }));
                    if reread > 0 {
                        partial.seal()?;
                    }
                    let found = match record.prefix.len {
                        0 => Found::Nothing,
                        _ => Found::Resumed { reread },
                    };
                    return Ok((partial, found));
                }
                None => Found::Unproven,
            },
        };
        drop(file);
        remove(place.dir, place.data_name)?;
        remove(place.dir, place.record_name)?;
        Ok((Partial::create(place)?, why_not))
    }

    /// A new, empty partial at `place`, with a record of no prefix.
    fn create(place: &Place<'_>) -> io::Result<Partial> {
        // Readable too: a body is hashed back from the page cache.
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(true);
        let file = lock_exclusively(place.dir.open_with(place.data_name, &options)?.into_std())?;
        let partial = Partial(Arc::new(Held {
            dir: place.dir.try_clone()?,
            data_name: place.data_name.to_owned(),
            record_name: place.record_name.to_owned(),
            file,
            record: Mutex::new(Record {
                prefix: Prefix::none(),
                file_size: 0,
                changed: (0, 0),
                source_size: place.source_size,
                source_modified: place.source_modified,
                name: place.name.to_owned(),
            }),
            finished: AtomicBool::new(false),
            tidy: tidy_of(place)?,
        }));
        partial.seal()?;
        Ok(partial)
    }

    /// Removes the partial `data_name` in `dir` and its record
    /// `record_name`, unless a transfer holds it; whether they went.
    pub fn remove_unless_in_use(dir: &Dir, data_name: &str, record_name: &str) -> io::Result<bool> {
        match dir.open_with(data_name, OpenOptions::new().read(true)) {
            Ok(file) => match lock_exclusively(file.into_std()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
                // Held, locked, while it goes.
                Ok(_held) => remove(dir, data_name)?,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        remove(dir, &format!("{record_name}.new"))?;
        remove(dir, record_name)?;
        Ok(true)
    }
}

impl Held {
    /// The partial's file, to stamp it.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// The proven prefix the body goes on from.
    pub fn prefix(&self) -> Prefix {
        self.record().prefix.clone()
    }

    /// Cuts the partial back to its last checkpoint and seals its record
    /// with its size and change time, so a later transfer trusts it
    /// without reading it. For a transfer cut off while this process
    /// lives.
    pub fn seal(&self) -> io::Result<()> {
        let mut record = self.record();
        self.file.set_len(record.prefix.len)?;
        let stat = rustix::fs::fstat(&self.file)?;
        record.file_size = record.prefix.len;
        record.changed = (stat.st_ctime, stat.st_ctime_nsec as u32);
        write_record(&self.dir, &self.record_name, &record)
    }

    /// Empties the partial for a body from its start, of a source of
    /// `source_size` bytes modified at `source_modified`: the other side
    /// would not go on from its prefix.
    pub fn start_over(&self, source_size: u64, source_modified: i64) -> io::Result<()> {
        {
            let mut record = self.record();
            record.prefix = Prefix::none();
            record.source_size = source_size;
            record.source_modified = source_modified;
        }
        self.seal()
    }

    /// Removes the partial and its record: its data cannot be used.
    pub fn discard(&self) -> io::Result<()> {
        self.finished.store(true, Ordering::Relaxed);
        remove(&self.dir, &self.data_name)?;
        remove(&self.dir, &self.record_name)?;
        self.tidy();
        Ok(())
    }

    /// Removes the directory of the partials if no partial is left in
    /// it; one that is not empty stays, as it should.
    fn tidy(&self) {
        if let Some((parent, name)) = &self.tidy {
            let _ = parent.remove_dir(name);
        }
    }

    /// Gives the complete, verified partial the name `final_name` in
    /// `target`, never replacing anything unless `replace`: syncs it,
    /// renames it, removes its record and syncs both directories.
    pub fn commit(&self, target: &Dir, final_name: &Path, replace: bool) -> io::Result<()> {
        self.finished.store(true, Ordering::Relaxed);
        self.file.sync_data()?;
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        match rustix::fs::renameat_with(
            &self.dir,
            self.data_name.as_str(),
            target,
            final_name,
            flags,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the name is taken",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        remove(&self.dir, &self.record_name)?;
        sync_dir(target, &self.file)?;
        sync_dir(&self.dir, &self.file)?;
        self.tidy();
        Ok(())
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Held {
    /// A partial neither committed nor discarded was cut off: once its
    /// last handle goes, which is after every write of the transfer (even
    /// those still running on the blocking pool when the transfer was
    /// dropped), it is sealed at its last checkpoint, or removed if no
    /// step was proven: there is nothing to go on from.
    fn drop(&mut self) {
        if self.finished.load(Ordering::Relaxed) {
            return;
        }
        // Read, and the lock let go, before either takes it again.
        let proven = self.record().prefix.len;
        let kept = match proven {
            0 => self.discard(),
            _ => self.seal(),
        };
        if let Err(e) = kept {
            tracing::debug!(error = %e, "cannot keep or remove a partial");
        }
    }
}

impl std::ops::Deref for Partial {
    type Target = Held;

    fn deref(&self) -> &Held {
        &self.0
    }
}

impl BodySink for Partial {
    fn raw_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.file.raw_fd()
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        BodySink::read_at(&self.file, buf, offset)
    }

    fn reserve(&self, offset: u64, len: u64) {
        self.file.reserve(offset, len);
    }

    fn sync_written(&self) -> io::Result<()> {
        self.file.sync_written()
    }

    fn takes_checkpoints(&self) -> bool {
        true
    }

    fn checkpoint(&self, prefix: &Prefix) {
        let mut record = self.record();
        if prefix.len <= record.prefix.len {
            return;
        }
        record.prefix = prefix.clone();
        // Not sealed: the partial goes on growing, so a later transfer
        // proves this prefix by reading it, unless this one seals it.
        record.file_size = u64::MAX;
        if let Err(e) = write_record(&self.dir, &self.record_name, &record) {
            tracing::debug!(error = %e, "cannot write a partial's record");
        }
    }
}

/// Whether `file` holds the prefix `record` vouches for: `Some(0)` if the
/// sealed record still describes it, `Some(n)` if it changed since but its
/// first `n` bytes hash to the recorded prefix (it is then cut back to
/// them), `None` if neither.
fn prove(file: &std::fs::File, record: &Record) -> io::Result<Option<u64>> {
    let stat = rustix::fs::fstat(file)?;
    let size = stat.st_size as u64;
    let changed = (stat.st_ctime, stat.st_ctime_nsec as u32);
    if size == record.file_size && changed == record.changed && size == record.prefix.len {
        return Ok(Some(0));
    }
    let len = record.prefix.len;
    if size < len {
        return Ok(None);
    }
    let mut hasher = StepHasher::new();
    let mut buffer = vec![0; HASH_READ];
    let mut offset = 0;
    while offset < len {
        let want = buffer
            .len()
            .min(usize::try_from(len - offset).unwrap_or(usize::MAX));
        let read = buffer.get_mut(..want).unwrap_or_default();
        let n = BodySink::read_at(file, read, offset)?;
        if n == 0 {
            return Ok(None);
        }
        hasher.update(read.get(..n).unwrap_or_default());
        offset += n as u64;
    }
    if hasher.prefix(&Prefix::none()) != record.prefix {
        return Ok(None);
    }
    file.set_len(len)?;
    Ok(Some(len))
}

/// A handle on the directory to remove once empty, as `place` names it.
fn tidy_of(place: &Place<'_>) -> io::Result<Option<(Dir, String)>> {
    place
        .tidy
        .map(|(parent, name)| Ok((parent.try_clone()?, name.to_owned())))
        .transpose()
}

/// `file`, locked for this process alone: two transfers of one name never
/// write one partial.
fn lock_exclusively(file: std::fs::File) -> io::Result<std::fs::File> {
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(Errno::WOULDBLOCK) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "another transfer of this name is in progress",
        )),
        Err(e) => Err(e.into()),
    }
}

/// The record `name` in `dir`, if there is a whole, undamaged one.
pub fn read_record(dir: &Dir, name: &str) -> Option<Record> {
    let mut bytes = Vec::new();
    let file = dir.open(name).ok()?;
    use std::io::Read;
    file.take(MAX_RECORD_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    Record::decode(&bytes)
}

/// Writes `record` whole under a temporary name, then renames it over the
/// old, so a reader finds the old record or the new one. Not synced: a
/// record lost to a power cut costs a resend, never wrong data, and the
/// data it vouches for was synced before it.
fn write_record(dir: &Dir, name: &str, record: &Record) -> io::Result<()> {
    let temp = format!("{name}.new");
    dir.write(&temp, record.encode())?;
    dir.rename(&temp, dir, name)
}

fn remove(dir: &Dir, name: &str) -> io::Result<()> {
    match dir.remove_file(name) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Syncs `dir`, or, where it cannot be opened for reading, the filesystem
/// of `file`.
fn sync_dir(dir: &Dir, file: &std::fs::File) -> io::Result<()> {
    let readable = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, ".", readable, Mode::empty()) {
        Ok(dir) => Ok(rustix::fs::fsync(dir)?),
        Err(Errno::ACCESS) => Ok(rustix::fs::syncfs(file.as_fd())?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            prefix: Prefix {
                len: 3 * STEP,
                values: vec![[1; 32], [2; 32]],
            },
            file_size: 3 * STEP,
            changed: (1_700_000_000, 123),
            source_size: 5 * STEP + 1,
            source_modified: -5,
            name: "dir/näme".to_owned(),
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        assert_eq!(Record::decode(&record().encode()), Some(record()));
    }

    #[test]
    fn a_damaged_or_cut_record_is_none() {
        let bytes = record().encode();
        for at in [0, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert_eq!(Record::decode(&damaged), None, "byte {at} flipped");
        }
        for len in [0, 31, 32, bytes.len() - 1] {
            assert_eq!(Record::decode(&bytes[..len]), None, "cut to {len}");
        }
    }

    #[test]
    fn a_record_whose_values_do_not_fit_its_length_is_none() {
        let mut wrong = record();
        wrong.prefix.values.pop();
        assert_eq!(Record::decode(&wrong.encode()), None);
    }

    /// A partial of one step and a bit, checkpointed at the step.
    struct Setup {
        _temp: tempfile::TempDir,
        dir: Dir,
        data: Vec<u8>,
    }

    impl Setup {
        fn new() -> Setup {
            let temp = tempfile::tempdir().unwrap();
            let dir = Dir::open_ambient_dir(temp.path(), cap_std::ambient_authority()).unwrap();
            let data: Vec<u8> = (0..STEP as usize + 4096).map(|i| (i % 251) as u8).collect();
            Setup {
                _temp: temp,
                dir,
                data,
            }
        }

        fn place(&self, source_modified: i64) -> Place<'_> {
            Place {
                dir: &self.dir,
                data_name: "p",
                record_name: "p.rec",
                name: "big",
                source_size: self.data.len() as u64,
                source_modified,
                tidy: None,
            }
        }

        /// Writes the data up to the step and a little past it, checkpoints
        /// the step, and leaves the partial as a killed process would, or
        /// as one that lives on (sealed when its handle goes).
        fn interrupted(&self, sealed: bool) {
            remove(&self.dir, "p").unwrap();
            remove(&self.dir, "p.rec").unwrap();
            let (partial, found) = Partial::open(&self.place(7), false).unwrap();
            assert_eq!(found, Found::Nothing);
            partial
                .write_all_at(&self.data[..STEP as usize + 100], 0)
                .unwrap();
            partial.sync_written().unwrap();
            let mut hasher = StepHasher::new();
            hasher.update(&self.data[..STEP as usize]);
            partial.checkpoint(&hasher.prefix(&Prefix::none()));
            if !sealed {
                // As a killed process leaves it: no seal when it goes.
                partial.finished.store(true, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn a_sealed_partial_resumes_without_a_read() {
        let setup = Setup::new();
        setup.interrupted(true);
        let (partial, found) = Partial::open(&setup.place(7), false).unwrap();
        assert_eq!(found, Found::Resumed { reread: 0 });
        assert_eq!(partial.prefix().len, STEP);
    }

    #[test]
    fn a_partial_changed_after_its_record_is_proven_by_reading_it() {
        let setup = Setup::new();
        setup.interrupted(false);
        let (partial, found) = Partial::open(&setup.place(7), false).unwrap();
        assert_eq!(found, Found::Resumed { reread: STEP });
        assert_eq!(partial.file.metadata().unwrap().len(), STEP);
        drop(partial);
        // Proven and sealed: the next time needs no read.
        let (_, found) = Partial::open(&setup.place(7), false).unwrap();
        assert_eq!(found, Found::Resumed { reread: 0 });
    }

    #[test]
    fn a_flipped_byte_in_the_prefix_discards_the_partial() {
        let setup = Setup::new();
        setup.interrupted(true);
        let file = setup
            .dir
            .open_with("p", OpenOptions::new().write(true))
            .unwrap();
        file.into_std().write_all_at(b"\xff", 1000).unwrap();
        let (partial, found) = Partial::open(&setup.place(7), false).unwrap();
        assert_eq!(found, Found::Unproven);
        assert_eq!(partial.prefix(), Prefix::none());
        assert_eq!(partial.file.metadata().unwrap().len(), 0);
    }

    #[test]
    fn a_damaged_record_or_another_source_or_a_restart_discards_the_partial() {
        let setup = Setup::new();
        setup.interrupted(true);
        let (_, found) = Partial::open(&setup.place(8), false).unwrap();
        assert_eq!(found, Found::SourceChanged);

        setup.interrupted(true);
        let (_, found) = Partial::open(&setup.place(7), true).unwrap();
        assert_eq!(found, Found::Restarted);

        setup.interrupted(true);
        let mut bytes = setup.dir.read("p.rec").unwrap();
        bytes[12] ^= 1;
        setup.dir.write("p.rec", bytes).unwrap();
        let (_, found) = Partial::open(&setup.place(7), false).unwrap();
        assert_eq!(found, Found::Unproven);
    }

    #[test]
    fn a_partial_committed_or_discarded_is_not_sealed_again() {
        let setup = Setup::new();
        let (partial, _) = Partial::open(&setup.place(7), false).unwrap();
        partial.write_all_at(b"all of it", 0).unwrap();
        partial
            .commit(&setup.dir, Path::new("done"), false)
            .unwrap();
        drop(partial);
        assert_eq!(setup.dir.read("done").unwrap(), b"all of it");
        assert!(!setup.dir.exists("p") && !setup.dir.exists("p.rec"));

        let (partial, _) = Partial::open(&setup.place(7), false).unwrap();
        partial.discard().unwrap();
        drop(partial);
        assert!(!setup.dir.exists("p") && !setup.dir.exists("p.rec"));
    }

    #[test]
    fn a_partial_cut_off_before_its_first_step_leaves_nothing() {
        let setup = Setup::new();
        let (partial, _) = Partial::open(&setup.place(7), false).unwrap();
        partial.write_all_at(b"less than a step", 0).unwrap();
        drop(partial);
        assert!(!setup.dir.exists("p") && !setup.dir.exists("p.rec"));
    }

    #[test]
    fn a_commit_never_replaces_a_file() {
        let setup = Setup::new();
        setup.dir.write("done", b"old").unwrap();
        let (partial, _) = Partial::open(&setup.place(7), false).unwrap();
        let refused = partial
            .commit(&setup.dir, Path::new("done"), false)
            .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(setup.dir.read("done").unwrap(), b"old");
    }

    #[test]
    fn a_partial_in_use_is_not_opened_twice() {
        let setup = Setup::new();
        let (_held, _) = Partial::open(&setup.place(7), false).unwrap();
        let again = Partial::open(&setup.place(7), false).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
    }
}
