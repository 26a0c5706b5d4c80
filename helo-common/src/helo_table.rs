//! The HELO table's layout: where a listed greeting's hash lives, so that the XDP program finds it
//! with two array lookups and the agent places it where the program will look.
//!
//! The table is a `BPF_F_MMAPABLE` array of buckets of [`SLOTS`] slots, a two-choice (cuckoo)
//! hash table: a hash lives in one of its two [`candidates`]. A kernel hash map cost about 15–19
//! ns per lookup here (jhash, a bucket walk, a `memcmp` call); an array lookup is inlined by the
//! verifier, and the four keys of a bucket share one cache line. Only the agent writes keys and
//! entries (through its mapping of the array); the program writes only an entry's hit counters.
//!
//! The program learns the bucket count from a read-only global the agent sets at load
//! ([`BUCKET_MASK_GLOBAL`]): the verifier then knows it as a constant and bounds the index with it.

use crate::maps::BlockEntry;

/// Slots per bucket: four 8-byte keys, half a cache line.
pub const SLOTS: usize = 4;

/// One bucket: the keys first (what a lookup reads), then their entries. A key of 0 is a free
/// slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub keys: [u64; SLOTS],
    pub entries: [BlockEntry; SLOTS],
}

/// The name of the program's global that holds `buckets - 1`.
pub const BUCKET_MASK_GLOBAL: &str = "HELO_BUCKET_MASK";

/// The key stored for a greeting's hash: the hash itself, except that 0 marks a free slot, so
/// a hash of 0 is stored as 1 (both have odds of 2⁻⁶⁴).
#[inline(always)]
pub fn slot_key(hash: u64) -> u64 {
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// The two buckets a key may live in: its low and its high 32 bits, masked. They may be the same.
#[inline(always)]
pub fn candidates(key: u64, mask: u32) -> [u32; 2] {
    [key as u32 & mask, (key >> 32) as u32 & mask]
}

/// Buckets for a table meant to hold `capacity` names before it evicts: a quarter more slots
/// than names, rounded up to a power of two of buckets. The agent moves names only from their
/// first bucket to their second (see `helo-user`'s `kernel/helo_table.rs`); with that, the first
/// eviction came at 96–98% full (`kernel_helo_table`, 256 to 65,536 slots).
pub const fn bucket_count(capacity: u32) -> u32 {
    let slots = capacity as u64 + capacity as u64 / 4;
    let buckets = slots.div_ceil(SLOTS as u64);
    if buckets == 0 {
        1
    } else {
        buckets.next_power_of_two() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_of_zero_does_not_look_like_a_free_slot() {
        assert_eq!(slot_key(0), 1);
        assert_eq!(slot_key(7), 7);
    }

    #[test]
    fn the_bucket_count_is_a_power_of_two_with_a_quarter_more_slots_than_names() {
        assert_eq!(bucket_count(0), 1);
        assert_eq!(bucket_count(64), 32);
        assert_eq!(bucket_count(51), 16);
        assert_eq!(bucket_count(52), 32);
        assert_eq!(bucket_count(1 << 20), 1 << 19);
        assert_eq!(bucket_count(u32::MAX), 1 << 31);
        for capacity in [1, 3, 100, 1000, 838_860, 1_000_000] {
            assert!(bucket_count(capacity) as usize * SLOTS * 4 >= capacity as usize * 5, "{capacity}");
        }
    }

    #[test]
    fn candidates_stay_within_the_table() {
        let mask = bucket_count(1000) - 1;
        for key in [1u64, u64::MAX, 0x1234_5678_9abc_def0] {
            assert!(candidates(key, mask).iter().all(|&b| b <= mask));
        }
        assert_eq!(candidates(0x0000_0005_0000_0003, 7), [3, 5]);
    }

    #[test]
    fn a_bucket_is_three_cache_lines_keys_first() {
        assert_eq!(core::mem::size_of::<Bucket>(), 32 + SLOTS * core::mem::size_of::<BlockEntry>());
        assert_eq!(core::mem::offset_of!(Bucket, keys), 0);
    }
}
