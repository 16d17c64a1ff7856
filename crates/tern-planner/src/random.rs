//! Stable hashing: per-user random streams (experiment arms are `tern_core::assign`'s).
//!
//! A stream must give the same draws on every machine, thread count and release, because a
//! random stream that moved would make the logged propensities unreproducible.

use tern_core::SplitMix64;

/// The random stream of one user in one plan: keyed by the seed and the user id, so it does not
/// depend on which thread plans the user.
pub(crate) fn user_stream(seed: u64, user_id: &str) -> SplitMix64 {
    let mut s = SplitMix64::new(seed ^ tern_core::fnv1a64(user_id.as_bytes()).rotate_left(17));
    s.next_u64();
    s
}
