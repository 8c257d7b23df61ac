use std::fmt;
use std::hash::Hash;

use crate::stable_hash;

/// The max parallelism a job gets when none is set: the number of key groups.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest max parallelism (key groups are stored in 16 bits on the wire).
pub const MAX_MAX_PARALLELISM: u32 = 32_768;

/// One key group: the unit of keyed state that moves between subtasks on rescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGroup(pub u32);

impl KeyGroup {
    /// The subtask that owns this key group when `max_parallelism` key groups are spread over
    /// `parallelism` subtasks (the inverse of [`KeyGroupRange::for_subtask`]).
    pub fn subtask(self, max_parallelism: u32, parallelism: u32) -> u32 {
        debug_assert!(self.0 < max_parallelism, "key group {self} out of range");
        debug_assert!(parallelism >= 1 && parallelism <= max_parallelism);
        ((self.0 as u64 * parallelism as u64) / max_parallelism as u64) as u32
    }
}

impl fmt::Display for KeyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kg{}", self.0)
    }
}

/// The key group of a key (stable across runs and releases).
pub fn key_group_for<K: Hash + ?Sized>(key: &K, max_parallelism: u32) -> KeyGroup {
    debug_assert!(max_parallelism >= 1);
    KeyGroup((stable_hash(key) % max_parallelism as u64) as u32)
}

/// A contiguous, inclusive range of key groups owned by one subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupRange {
    /// First key group in the range.
    pub start: u32,
    /// Last key group in the range (inclusive). `end < start` means the range is empty.
    pub end: u32,
}

impl KeyGroupRange {
    /// The range of subtask `index` out of `parallelism` (Flink's formula, so the same job
    /// spreads key groups the way a Flink user expects).
    pub fn for_subtask(max_parallelism: u32, parallelism: u32, index: u32) -> Self {
        assert!(
            parallelism >= 1 && parallelism <= max_parallelism && index < parallelism,
            "bad key group assignment: index {index} of parallelism {parallelism} with max parallelism {max_parallelism}"
        );
        let (m, p, i) = (max_parallelism as u64, parallelism as u64, index as u64);
        let start = (i * m).div_ceil(p);
        let end = ((i + 1) * m - 1) / p;
        KeyGroupRange {
            start: start as u32,
            end: end as u32,
        }
    }

    /// Whether `kg` lies in this range.
    pub fn contains(&self, kg: KeyGroup) -> bool {
        kg.0 >= self.start && kg.0 <= self.end
    }

    /// The number of key groups in the range.
    pub fn len(&self) -> u32 {
        if self.end < self.start {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_partition_all_key_groups(m in 1u32..2048, p_seed in 0u32..2048) {
            let p = p_seed % m + 1;
            let mut next = 0u32;
            for i in 0..p {
                let r = KeyGroupRange::for_subtask(m, p, i);
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty());
                for kg in r.start..=r.end {
                    prop_assert_eq!(KeyGroup(kg).subtask(m, p), i);
                }
                next = r.end + 1;
            }
            prop_assert_eq!(next, m);
        }
    }

    #[test]
    fn flink_example_ranges() {
        // 128 key groups over 3 subtasks, as Flink assigns them.
        assert_eq!(
            KeyGroupRange::for_subtask(128, 3, 0),
            KeyGroupRange { start: 0, end: 42 }
        );
        assert_eq!(
            KeyGroupRange::for_subtask(128, 3, 1),
            KeyGroupRange { start: 43, end: 85 }
        );
        assert_eq!(
            KeyGroupRange::for_subtask(128, 3, 2),
            KeyGroupRange { start: 86, end: 127 }
        );
    }
}
