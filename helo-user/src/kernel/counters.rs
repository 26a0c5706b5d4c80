//! The program's per-outcome packet counters as the agent reads them, summed over CPUs.

use helo_common::maps::counter;

/// Per-outcome packet counts, summed over CPUs, indexed by `helo_common::maps::counter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; counter::COUNT as usize]);

impl Counters {
    pub fn get(&self, index: u32) -> u64 {
        self.0[index as usize]
    }

    /// `(name, count)` for every counter, in index order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        counter::NAMES.iter().copied().zip(self.0.iter().copied())
    }

    /// Counts since `earlier`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters(std::array::from_fn(|i| self.0[i].saturating_sub(earlier.0[i])))
    }
}
