//! A body's BLAKE3 digest taken a step at a time, so that the start of a
//! body can be vouched for by a few chaining values instead of its bytes
//! (PROTOCOL.md §5.13).
//!
//! BLAKE3 hashes a tree: a subtree of 2^k chunks that starts at a multiple
//! of its own size is a node of the tree of any longer input, and its
//! chaining value is all the rest of the tree needs of it. So a receiver
//! that keeps the chaining values covering the first `n` steps of a body
//! (a [`Prefix`]: one value per set bit of `n`) can later hash only the
//! rest and still reach the whole body's digest, the one in the trailer.
//! A sender can hash its own prefix beside sending the rest, because the
//! two halves meet only at the end.
//!
//! Every subtree here is whole steps of [`STEP`] bytes (tests use smaller
//! powers of two), so the blake3 crate's `hazmat` functions do the work
//! and this module only keeps the shape of the tree.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};

use super::Digest;

/// The bytes of one step: the receiver syncs and records its prefix every
/// step, and a resume starts at a whole number of them. A power of two,
/// so each step is a subtree of the BLAKE3 tree.
pub const STEP: u64 = 64 * 1024 * 1024;

/// The chaining value of a subtree: the non-root hash of a node.
pub type ChainingValue = [u8; 32];

/// The most chaining values a prefix has: one per set bit of its steps.
pub const MAX_PREFIX_VALUES: usize = 64;

/// The first `len` bytes of a body, a whole number of steps, vouched for
/// by the chaining values of the largest aligned subtrees that cover
/// them, largest (leftmost) first: one per set bit of `len / STEP`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    pub len: u64,
    pub values: Vec<ChainingValue>,
}

impl Prefix {
    /// No prefix: a body from its start.
    pub fn none() -> Prefix {
        Prefix::default()
    }

    /// Whether `values` has the shape `len` calls for, with steps of
    /// `step` bytes.
    pub fn is_well_formed(&self, step: u64) -> bool {
        self.len.is_multiple_of(step)
            && (self.len / step).count_ones() as usize == self.values.len()
    }

    /// The subtrees of the prefix, leftmost first.
    fn subtrees(&self, step: u64) -> impl Iterator<Item = Subtree> + '_ {
        let steps = self.len / step;
        let mut start = 0;
        // The set bits of `steps`, highest first, are the subtrees' sizes.
        (0..64u32)
            .rev()
            .filter(move |level| steps & (1 << level) != 0)
            .zip(&self.values)
            .map(move |(level, value)| {
                let subtree = Subtree {
                    value: *value,
                    start,
                    level,
                };
                start += 1 << level;
                subtree
            })
    }
}

/// A complete subtree of `2^level` steps starting at step `start`.
#[derive(Clone, Copy, Debug)]
struct Subtree {
    value: ChainingValue,
    start: u64,
    level: u32,
}

/// Complete subtrees in order, each merged with its left sibling as soon
/// as both are there. Merging two siblings is right only when more of the
/// body follows them (otherwise they are the root's children), so a
/// subtree is pushed only once a byte past it is known to exist.
#[derive(Clone, Debug, Default)]
struct Stack {
    subtrees: Vec<Subtree>,
}

impl Stack {
    fn push(&mut self, mut subtree: Subtree) {
        while let Some(top) = self.subtrees.last() {
            let siblings = top.level == subtree.level
                && top.start + (1 << top.level) == subtree.start
                && top.start % (2 << top.level) == 0;
            if !siblings {
                break;
            }
            subtree = Subtree {
                value: merge_subtrees_non_root(&top.value, &subtree.value, Mode::Hash),
                start: top.start,
                level: top.level + 1,
            };
            self.subtrees.pop();
        }
        self.subtrees.push(subtree);
    }
}

/// Hashes a body, or the rest of one from a whole step on, step by step.
#[derive(Clone, Debug)]
pub struct StepHasher {
    step: u64,
    /// Where this hasher started, in steps.
    first: u64,
    /// The complete steps hashed here, merged as far as they can be
    /// without the prefix before `first`.
    stack: Stack,
    /// Steps pushed onto `stack`.
    pushed: u64,
    /// The step being hashed.
    current: blake3::Hasher,
    current_len: u64,
}

impl StepHasher {
    /// A hasher of a body from its start.
    pub fn new() -> StepHasher {
        StepHasher::at(0)
    }

    /// A hasher of the rest of a body from byte `offset`, a whole number
    /// of [`STEP`]s; its prefix is given only at the end.
    pub fn at(offset: u64) -> StepHasher {
        StepHasher::with_step(STEP, offset)
    }

    /// As [`StepHasher::at`], with steps of `step` bytes (a power of two
    /// of at least 1 KiB, BLAKE3's chunk).
    fn with_step(step: u64, offset: u64) -> StepHasher {
        debug_assert!(step.is_power_of_two() && step >= blake3::CHUNK_LEN as u64);
        debug_assert_eq!(offset % step, 0);
        let first = offset / step;
        StepHasher {
            step,
            first,
            stack: Stack::default(),
            pushed: 0,
            current: step_hasher(step, first),
            current_len: 0,
        }
    }

    /// Where the bytes hashed so far end, in the whole body.
    pub fn offset(&self) -> u64 {
        (self.first + self.pushed) * self.step + self.current_len
    }

    /// Hashes the next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) -> &mut Self {
        while !bytes.is_empty() {
            if self.current_len == self.step {
                let index = self.first + self.pushed;
                let value = self.current.finalize_non_root();
                self.stack.push(Subtree {
                    value,
                    start: index,
                    level: 0,
                });
                self.pushed += 1;
                self.current = step_hasher(self.step, index + 1);
                self.current_len = 0;
            }
            let room = usize::try_from(self.step - self.current_len).unwrap_or(usize::MAX);
            let (now, later) = bytes.split_at(bytes.len().min(room));
            self.current.update(now);
            self.current_len += now.len() as u64;
            bytes = later;
        }
        self
    }

    /// The prefix of every whole step hashed so far, given the prefix
    /// before this hasher's start (`before.len` must be that start). The
    /// body must go on past it: a prefix is never the whole body.
    pub fn prefix(&self, before: &Prefix) -> Prefix {
        let mut stack = self.joined(before);
        if self.current_len == self.step {
            let index = self.first + self.pushed;
            stack.push(Subtree {
                value: self.current.finalize_non_root(),
                start: index,
                level: 0,
            });
        }
        let steps: u64 = stack.subtrees.iter().map(|s| 1u64 << s.level).sum();
        Prefix {
            len: steps * self.step,
            values: stack.subtrees.iter().map(|s| s.value).collect(),
        }
    }

    /// The digest of the whole body, given the prefix before this hasher's
    /// start; `None` if nothing was hashed after a non-empty prefix (a
    /// prefix is never a whole body, so there is no digest to give).
    pub fn finalize(&self, before: &Prefix) -> Option<Digest> {
        let stack = self.joined(before);
        let Some((bottom, rest)) = stack.subtrees.split_first() else {
            return (self.first == 0).then(|| *self.current.finalize().as_bytes());
        };
        if self.current_len == 0 {
            return None;
        }
        let mut right = self.current.finalize_non_root();
        for left in rest.iter().rev() {
            right = merge_subtrees_non_root(&left.value, &right, Mode::Hash);
        }
        Some(*merge_subtrees_root(&bottom.value, &right, Mode::Hash).as_bytes())
    }

    /// The prefix's subtrees, then this hasher's, merged where they meet.
    fn joined(&self, before: &Prefix) -> Stack {
        debug_assert_eq!(before.len, self.first * self.step);
        let mut stack = Stack::default();
        for subtree in before.subtrees(self.step) {
            stack.push(subtree);
        }
        for subtree in &self.stack.subtrees {
            stack.push(*subtree);
        }
        stack
    }
}

impl Default for StepHasher {
    fn default() -> Self {
        StepHasher::new()
    }
}

/// A BLAKE3 hasher for step `index`: a subtree of its own, except the
/// first, which may turn out to be the whole body.
fn step_hasher(step: u64, index: u64) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    if index > 0 {
        hasher.set_input_offset(index * step);
    }
    hasher
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small steps, so that trees of many steps stay small.
    const TEST_STEP: u64 = 1024;

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + i / 1024) as u8).collect()
    }

    /// Hashes `data` from `start` on, given the prefix of the bytes before.
    fn hash_from(data: &[u8], start: usize, before: &Prefix, pieces: usize) -> Option<Digest> {
        let mut hasher = StepHasher::with_step(TEST_STEP, start as u64);
        let rest = &data[start..];
        for piece in rest.chunks(rest.len().div_ceil(pieces).max(1)) {
            hasher.update(piece);
        }
        hasher.finalize(before)
    }

    /// The prefix of the first `steps` steps of `data`.
    fn prefix_of(data: &[u8], steps: usize) -> Prefix {
        let mut hasher = StepHasher::with_step(TEST_STEP, 0);
        hasher.update(&data[..steps * TEST_STEP as usize]);
        hasher.prefix(&Prefix::none())
    }

    #[test]
    fn a_body_hashed_in_steps_has_its_blake3_digest() {
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            2048,
            3 * 1024 + 7,
            8 * 1024,
            13 * 1024 + 1,
        ] {
            let data = body(len);
            for pieces in [1, 3, 17] {
                let got = hash_from(&data, 0, &Prefix::none(), pieces);
                assert_eq!(got, Some(*blake3::hash(&data).as_bytes()), "{len} bytes");
            }
        }
    }

    #[test]
    fn the_rest_after_any_prefix_gives_the_whole_digest() {
        for len in [1025, 2049, 4096, 5000, 8 * 1024 + 1, 23 * 1024 + 100] {
            let data = body(len);
            let whole = *blake3::hash(&data).as_bytes();
            // Every prefix of whole steps that leaves at least one byte.
            for steps in 0..=(len - 1) / TEST_STEP as usize {
                let prefix = prefix_of(&data, steps);
                assert!(
                    prefix.is_well_formed(TEST_STEP),
                    "{len} bytes, {steps} steps"
                );
                let start = steps * TEST_STEP as usize;
                assert_eq!(
                    hash_from(&data, start, &prefix, 3),
                    Some(whole),
                    "{len}, {steps}"
                );
            }
        }
    }

    #[test]
    fn a_prefix_has_one_value_per_set_bit_of_its_steps() {
        let data = body(14 * 1024 + 1);
        for (steps, values) in [(0, 0), (1, 1), (2, 1), (3, 2), (7, 3), (8, 1), (14, 3)] {
            let prefix = prefix_of(&data, steps);
            assert_eq!(prefix.len, steps as u64 * TEST_STEP);
            assert_eq!(prefix.values.len(), values, "{steps} steps");
        }
    }

    #[test]
    fn a_prefix_taken_part_way_matches_one_taken_at_its_end() {
        // A receiver records its prefix while more is still arriving; the
        // record must be what a hasher stopping there would give.
        let data = body(11 * 1024 + 5);
        let mut hasher = StepHasher::with_step(TEST_STEP, 0);
        for (at, byte) in data.iter().enumerate() {
            hasher.update(std::slice::from_ref(byte));
            let steps = (at + 1) / TEST_STEP as usize;
            assert_eq!(hasher.prefix(&Prefix::none()), prefix_of(&data, steps));
        }
    }

    #[test]
    fn a_prefix_of_other_bytes_gives_another_digest() {
        let data = body(6 * 1024 + 3);
        let mut other = data.clone();
        other[100] ^= 1;
        let prefix = prefix_of(&other, 4);
        let got = hash_from(&data, 4 * 1024, &prefix, 2);
        assert_ne!(got, Some(*blake3::hash(&data).as_bytes()));
    }

    #[test]
    fn a_prefix_without_a_rest_has_no_digest() {
        let data = body(4 * 1024);
        let prefix = prefix_of(&data, 4);
        assert_eq!(hash_from(&data, 4 * 1024, &prefix, 1), None);
    }

    #[test]
    fn the_real_step_is_a_subtree() {
        // One real step and a byte: the shape at full size, hashed once.
        let data = body(STEP as usize + 1);
        let mut head = StepHasher::new();
        head.update(&data[..STEP as usize]);
        let prefix = head.prefix(&Prefix::none());
        assert_eq!(prefix.values.len(), 1);
        let mut rest = StepHasher::at(STEP);
        rest.update(&data[STEP as usize..]);
        assert_eq!(
            rest.finalize(&prefix),
            Some(*blake3::hash(&data).as_bytes())
        );
    }
}
