//! A tiny seeded generator (SplitMix64) for weight initialisation and shuffling.
//!
//! burn's own `Device::seed` may be process-global depending on the backend, so two models
//! initialised concurrently (two tests, two trainings in one process) could interleave draws.
//! Drawing everything from a generator that the caller owns makes a training run a pure function
//! of its seed and its data.

use tern_core::SplitMix64;

/// A generator for one purpose (e.g. the shuffle of one epoch), independent of the others.
pub(crate) fn derive(seed: u64, stream: u64, index: u64) -> SplitMix64 {
    let state = (seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ 0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_mul(0xa24b_aed4_963e_e407);
    let mut r = SplitMix64::new(state);
    r.next_u64();
    r
}
