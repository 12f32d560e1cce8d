//! The files a GetTree's client will not take, a bit per manifest entry,
//! and the few it holds partials of: all the server holds between the
//! manifest and the bodies (PROTOCOL.md §5.11).

use crate::protocol::{Prefix, MAX_HELD};

/// A bit per entry of a manifest, set for the entries skipped, and the
/// prefixes the client holds of others.
#[derive(Debug)]
pub(super) struct Skips {
    bits: Vec<u64>,
    entries: u64,
    /// Entry indices, increasing, and what the client holds of each.
    held: Vec<(u64, Prefix)>,
}

impl Skips {
    /// No entry of a manifest of `entries` skipped yet.
    pub fn new(entries: u64) -> Skips {
        // The caller bounds `entries`, so the bitmap fits in memory.
        let words = usize::try_from(entries.div_ceil(64)).unwrap_or(usize::MAX);
        Skips {
            bits: vec![0; words],
            entries,
            held: Vec::new(),
        }
    }

    /// How many entries the manifest had.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Skips the `count` entries from `first`; false, marking nothing, if
    /// they are not all within the manifest or the run is empty.
    pub fn mark(&mut self, first: u64, count: u64) -> bool {
        let Some(end) = first.checked_add(count) else {
            return false;
        };
        if count == 0 || end > self.entries {
            return false;
        }
        for index in first..end {
            if let Some(word) = self.bits.get_mut((index / 64) as usize) {
                *word |= 1 << (index % 64);
            }
        }
        true
    }

    /// Notes that the client holds `prefix` of the entry `index`; false,
    /// noting nothing, if that entry is not in the manifest, is skipped,
    /// does not come after the last one noted, or is one too many, or if
    /// the prefix is empty.
    pub fn hold(&mut self, index: u64, prefix: Prefix) -> bool {
        let after_last = self.held.last().is_none_or(|(last, _)| index > *last);
        let fits = index < self.entries && !self.is_skipped(index) && prefix.len > 0;
        if !(after_last && fits) || self.held.len() == MAX_HELD {
            return false;
        }
        self.held.push((index, prefix));
        true
    }

    /// What the client holds of the entry `index`, if it said.
    pub fn held(&self, index: u64) -> Option<&Prefix> {
        self.held
            .binary_search_by_key(&index, |(held, _)| *held)
            .ok()
            .and_then(|at| self.held.get(at))
            .map(|(_, prefix)| prefix)
    }

    /// Whether the entry `index` is skipped.
    pub fn is_skipped(&self, index: u64) -> bool {
        self.bits
            .get((index / 64) as usize)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_within_the_manifest_are_marked_and_others_refused() {
        let mut skips = Skips::new(130);
        assert!(skips.mark(60, 10));
        assert!(skips.mark(129, 1));
        assert!(!skips.mark(129, 2));
        assert!(!skips.mark(0, 0));
        assert!(!skips.mark(u64::MAX, 2));
        let marked: Vec<u64> = (0..130).filter(|&i| skips.is_skipped(i)).collect();
        let expected: Vec<u64> = (60..70).chain([129]).collect();
        assert_eq!(marked, expected);
        assert!(!skips.is_skipped(500));
    }

    #[test]
    fn held_prefixes_come_in_order_for_entries_taken_and_are_few() {
        let step = Prefix {
            len: crate::protocol::STEP,
            values: vec![[7; 32]],
        };
        let mut skips = Skips::new(100);
        assert!(skips.mark(10, 5));
        assert!(!skips.hold(12, step.clone()), "a skipped entry");
        assert!(!skips.hold(100, step.clone()), "beyond the manifest");
        assert!(!skips.hold(3, Prefix::none()), "an empty prefix");
        assert!(skips.hold(3, step.clone()));
        assert!(!skips.hold(3, step.clone()), "the same entry again");
        assert!(!skips.hold(2, step.clone()), "out of order");
        for index in 20..20 + MAX_HELD as u64 - 1 {
            assert!(skips.hold(index, step.clone()));
        }
        assert!(!skips.hold(99, step.clone()), "one too many");
        assert_eq!(skips.held(3), Some(&step));
        assert_eq!(skips.held(4), None);
        assert_eq!(skips.held(99), None);
    }
}
