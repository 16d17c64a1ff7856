//! Stable hashing: per-user random streams (experiment arms are `tern_core::assign`'s).
//!
//! A stream must give the same draws on every machine, thread count and release, because a
//! random stream that moved would make the logged propensities unreproducible.

use tern_core::SplitMix64;

/// FNV-1a, 64 bit: a fixed, fast hash to key the per-user random stream.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The random stream of one user in one plan: keyed by the seed and the user id, so it does not
/// depend on which thread plans the user.
pub(crate) fn user_stream(seed: u64, user_id: &str) -> SplitMix64 {
    let mut s = SplitMix64::new(seed ^ fnv1a(user_id.as_bytes()).rotate_left(17));
    s.next_u64();
    s
}
