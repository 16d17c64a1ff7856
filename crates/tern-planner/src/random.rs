//! Stable hashing: experiment arms and per-user random streams.
//!
//! Both must give the same answer on every machine, thread count and release, because an arm
//! assignment that moved would corrupt an experiment, and a random stream that moved would make
//! the logged propensities unreproducible.

use sha2::{Digest, Sha256};
use tern_core::SplitMix64;

/// The point of a user in `[0, 1)` for an experiment with `salt`: the first 8 bytes of
/// `SHA-256(salt ":" user_id)`, read big-endian, divided by 2⁶⁴. In PostgreSQL:
/// `('x' || left(encode(sha256(convert_to(salt || ':' || user_id, 'UTF8')), 'hex'), 16))::bit(64)`
/// gives the same 64 bits.
pub fn arm_point(salt: &str, user_id: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(user_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 high bits keep the result exactly representable and strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

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
