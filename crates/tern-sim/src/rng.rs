//! Keyed random streams. Every draw comes from a stream named by what it is about (a user, a
//! day, a message), never from one shared generator, so that a result does not depend on the
//! order in which the driver asks: the opportunities of a day are the same in one call or in
//! twenty-four, and two policies meet the same users on the same days.

use tern_core::SplitMix64;

/// What a stream is for, so that streams about the same user and day never coincide.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    Population = 1,
    Opportunities = 2,
    Activity = 3,
    Response = 4,
}

/// SplitMix64's output function: a bijection that scatters nearby inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stream for `purpose` keyed by `parts` (user index, day, message hash ...).
pub(crate) fn stream(seed: u64, purpose: Purpose, parts: &[u64]) -> SplitMix64 {
    let mut h = mix(seed ^ 0x7465_726e_2d73_696d);
    h = mix(h ^ purpose as u64);
    for &part in parts {
        h = mix(h.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ part);
    }
    SplitMix64::new(h)
}

/// FNV-1a: a fixed hash of strings (message ids), the same on every platform and run.
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A standard normal draw (Box–Muller, one of the pair).
pub(crate) fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Poisson draw by Knuth's product method, fine for the small means used here.
pub(crate) fn poisson(rng: &mut SplitMix64, mean: f64) -> usize {
    if mean <= 0.0 {
        return 0;
    }
    let limit = (-mean).exp();
    let mut product = rng.next_f64();
    let mut n = 0;
    while product > limit {
        product *= rng.next_f64();
        n += 1;
    }
    n
}

/// An exponential draw with the given mean.
pub(crate) fn exponential(rng: &mut SplitMix64, mean: f64) -> f64 {
    -mean * (1.0 - rng.next_f64()).ln()
}

pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
