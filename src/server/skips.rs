//! The files a GetTree's client will not take: a bit per manifest entry,
//! all the server holds between the manifest and the bodies
//! (PROTOCOL.md §5.11).

/// A bit per entry of a manifest, set for the entries skipped.
#[derive(Debug)]
pub(super) struct Skips {
    bits: Vec<u64>,
    entries: u64,
}

impl Skips {
    /// No entry of a manifest of `entries` skipped yet.
    pub fn new(entries: u64) -> Skips {
        // The caller bounds `entries`, so the bitmap fits in memory.
        let words = usize::try_from(entries.div_ceil(64)).unwrap_or(usize::MAX);
        Skips {
            bits: vec![0; words],
            entries,
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
}
