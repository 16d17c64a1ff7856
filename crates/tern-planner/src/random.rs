//! Stable hashing: experiment arms and per-user random streams.
//!
//! Both must give the same answer on every machine, thread count and release, because an arm
//! assignment that moved would corrupt an experiment, and a random stream that moved would make
//! the logged propensities unreproducible.

use sha2::{Digest, Sha256};

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

/// SplitMix64: tiny, fast, and fully specified, so the stream is the same everywhere.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// The stream of one user in one plan: independent of which thread plans the user.
    pub fn for_user(seed: u64, user_id: &str) -> Self {
        let mut s = SplitMix(seed ^ fnv1a(user_id.as_bytes()).rotate_left(17));
        s.next_u64();
        s
    }

    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift; the bias is below 2⁻⁵⁰ for small `n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}
