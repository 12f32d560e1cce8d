//! What `ManifestOrder` must do with any sequence of tree entries: the
//! checks of the `manifest` fuzz target, replayed by
//! `tests/fuzz_regressions.rs`.
//!
//! The bytes are read as frames back to back; every `TreeEntry` goes to one
//! `ManifestOrder`, every `TreeEnd` to its `finish`, other frames are passed
//! over, and a frame that does not decode is skipped if its length is good
//! (else the reading ends). A refused entry must change nothing, so the
//! checks go on after it as if it had never come: a receiver stops there,
//! but going on reaches more states.
//!
//! Beside the checker, the check keeps every admitted path and holds each
//! entry to PROTOCOL.md §5.10 spelled out as rules on them: its path parses
//! with `RemoteName::parse` and is its own plain form; it was not admitted
//! before; it lies under no admitted file; its parent directory was
//! admitted before it (or it is at the top); it sorts after the entry
//! admitted before it, component by component in byte order; a directory
//! has no size; the sizes add up within 2^64. The checker must admit an
//! entry exactly when it keeps every rule (the order's checker holds only
//! the entry before, so this proves the shortcut sound and complete), and
//! its counts, and what `finish` accepts, must be those of what it
//! admitted.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

use ferry::protocol::{
    decode, EntryKind, ManifestOrder, Message, RemoteName, TreeEntry, MAX_FRAME_LEN,
};

/// What a manifest came to, for tests that expect a particular outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Entries admitted, and refused.
    pub admitted: u64,
    pub refused: u64,
    /// `TreeEnd`s whose counts `finish` accepted, and refused.
    pub ends_accepted: u64,
    pub ends_refused: u64,
}

/// Checks `ManifestOrder` over the entries in `bytes`; `Err` says which
/// property broke.
pub fn check(bytes: &[u8]) -> Result<Outcome, String> {
    let mut order = ManifestOrder::new();
    let mut model = Model::default();
    let mut outcome = Outcome::default();
    for message in frames(bytes) {
        match message {
            Message::TreeEntry(entry) => {
                let admitted = order.admit(&entry);
                let verdict = model.judge(&entry);
                match (&admitted, verdict) {
                    (Ok(()), Ok(())) => {
                        model.admit(&entry);
                        outcome.admitted += 1;
                    }
                    (Err(error), Err(_)) => {
                        if error.to_string().is_empty() {
                            return Err(format!("refused {:?} with no words", entry.path));
                        }
                        outcome.refused += 1;
                    }
                    (Ok(()), Err(rule)) => {
                        return Err(format!("admitted {entry:?}, which {rule}"));
                    }
                    (Err(error), Ok(())) => {
                        return Err(format!(
                            "refused {entry:?} ({error}), which keeps every rule"
                        ));
                    }
                }
                if order.counts() != (model.entries, model.bytes) {
                    return Err(format!(
                        "counts {:?} after {:?}, but {:?} were admitted",
                        order.counts(),
                        entry.path,
                        (model.entries, model.bytes)
                    ));
                }
            }
            Message::TreeEnd { entries, bytes } => {
                let fits = (entries, bytes) == (model.entries, model.bytes);
                match (order.finish(entries, bytes), fits) {
                    (Ok(()), true) => outcome.ends_accepted += 1,
                    (Err(_), false) => outcome.ends_refused += 1,
                    (finished, _) => {
                        return Err(format!(
                            "finish({entries}, {bytes}) is {finished:?} after {:?} admitted",
                            (model.entries, model.bytes)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(outcome)
}

/// The messages in `bytes`, frame after frame.
fn frames(mut bytes: &[u8]) -> Vec<Message> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        match decode(bytes) {
            Ok(Some((message, used))) => {
                messages.push(message);
                bytes = bytes.get(used..).unwrap_or_default();
            }
            Ok(None) => break,
            Err(_) => {
                // A whole frame of a good length: pass over it.
                let len = bytes
                    .first_chunk::<4>()
                    .map(|p| u32::from_be_bytes(*p) as usize);
                match len.filter(|len| (1..=MAX_FRAME_LEN).contains(len)) {
                    Some(len) if 4 + len <= bytes.len() => bytes = &bytes[4 + len..],
                    _ => break,
                }
            }
        }
    }
    messages
}

/// The manifest so far, as the rules see it.
#[derive(Debug, Default)]
struct Model {
    /// Every admitted path; sorted, so the paths under one are a range.
    admitted: BTreeSet<String>,
    directories: HashSet<String>,
    /// Admitted files (and any other entry that is not a directory).
    others: HashSet<String>,
    /// The components of the entry admitted last.
    previous: Option<Vec<String>>,
    entries: u64,
    bytes: u64,
}

impl Model {
    /// Which rule `entry` breaks, if any.
    fn judge(&self, entry: &TreeEntry) -> Result<(), String> {
        let path = entry.path.as_str();
        match RemoteName::parse(path) {
            Ok(name) if name.as_str() == path => {}
            Ok(name) => return Err(format!("is not plain (it means {:?})", name.as_str())),
            Err(error) => return Err(format!("is not a name ({error})")),
        }
        if self.admitted.contains(path) {
            return Err("was admitted before".into());
        }
        let components: Vec<&str> = path.split('/').collect();
        for depth in 1..components.len() {
            let ancestor = components[..depth].join("/");
            if self.others.contains(&ancestor) {
                return Err(format!("lies under the file {ancestor:?}"));
            }
        }
        if entry.kind != EntryKind::Directory {
            let below = format!("{path}/");
            if let Some(under) = self.admitted.range(below.clone()..).next() {
                if under.starts_with(&below) {
                    return Err(format!("is a file above the admitted {under:?}"));
                }
            }
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !self.directories.contains(parent) {
                return Err(format!("is in {parent:?}, not a directory admitted before"));
            }
        }
        if let Some(previous) = &self.previous {
            let after = components
                .iter()
                .copied()
                .cmp(previous.iter().map(String::as_str));
            if after != Ordering::Greater {
                return Err(format!("does not sort after {:?}", previous.join("/")));
            }
        }
        if entry.kind == EntryKind::Directory && entry.size != 0 {
            return Err("is a directory with a size".into());
        }
        if self.bytes.checked_add(entry.size).is_none() {
            return Err("takes the sizes past 2^64".into());
        }
        Ok(())
    }

    /// Takes `entry`, which keeps every rule.
    fn admit(&mut self, entry: &TreeEntry) {
        let path = entry.path.clone();
        match entry.kind {
            EntryKind::Directory => self.directories.insert(path.clone()),
            EntryKind::File | EntryKind::Other => self.others.insert(path.clone()),
        };
        self.previous = Some(path.split('/').map(str::to_owned).collect());
        self.admitted.insert(path);
        self.entries += 1;
        // `judge` saw that the sum fits.
        self.bytes = self.bytes.saturating_add(entry.size);
    }
}
