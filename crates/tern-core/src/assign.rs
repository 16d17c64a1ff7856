//! Experiment assignment: one salted hash and one rule for picking an arm, shared by the policy
//! (who is in which arm), the planner (users whose input names no arm) and every analysis, so
//! that they cannot disagree about who was in which arm.

use sha2::{Digest, Sha256};

/// A user's stable position in `[0, 1)` under a salt: the first 8 bytes of
/// SHA-256(`salt`, a zero byte, `user_id`), read big-endian, keeping the top 53 bits, divided by
/// 2⁵³. The zero byte cannot occur in either string (names and ids refuse NUL), so no two
/// `(salt, user)` pairs hash the same bytes. In PostgreSQL:
/// `('x' || left(encode(sha256(convert_to(salt, 'UTF8') || '\x00'::bytea || convert_to(user_id, 'UTF8')), 'hex'), 16))::bit(64)`
/// gives the same 64 bits.
pub fn unit_hash(salt: &str, user_id: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(user_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits, so that the fraction is exact in an f64 and strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// The arm of a user, by weighted rendezvous hashing: every arm with a positive share draws
/// `−ln(1 − unit_hash(salt + "/" + name, user)) / share`, an exponential variable with rate
/// `share`, and the smallest draw wins, so an arm wins with probability equal to its share.
/// Because each arm's draw depends only on its own name and share:
/// - changing one arm's share (and rescaling the others to keep the sum at 1) moves users only
///   into or out of that arm, the fewest that any assignment can move;
/// - adding an arm moves only the users it takes, removing one only the users it had, and
///   reordering arms moves nobody.
///
/// Consecutive hash ranges, the common alternative, shift every later arm's range when one
/// share changes. Returns the index of the winning arm; `None` when no share is positive.
pub fn rendezvous<'a>(
    salt: &str,
    arms: impl IntoIterator<Item = (&'a str, f64)>,
    user_id: &str,
) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for (i, (name, share)) in arms.into_iter().enumerate() {
        if share <= 0.0 || !share.is_finite() {
            continue;
        }
        let u = unit_hash(&format!("{salt}/{name}"), user_id);
        let draw = -(1.0 - u).ln() / share;
        if best.is_none_or(|(b, _)| draw < b) {
            best = Some((draw, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_documented_one() {
        let d = Sha256::digest(b"2026-q4\0user-1");
        let x = u64::from_be_bytes(d[..8].try_into().unwrap());
        assert_eq!(
            unit_hash("2026-q4", "user-1"),
            (x >> 11) as f64 / (1u64 << 53) as f64
        );
    }

    #[test]
    fn arms_win_in_proportion_to_their_shares_and_order_does_not_matter() {
        let arms = [("a", 0.2), ("b", 0.5), ("c", 0.3)];
        let mut counts = [0usize; 3];
        for u in 0..20_000 {
            let user = format!("user-{u}");
            let i = rendezvous("s", arms, &user).unwrap();
            counts[i] += 1;
            let reversed: Vec<_> = arms.iter().rev().copied().collect();
            assert_eq!(rendezvous("s", reversed, &user), Some(2 - i));
        }
        for (c, (_, share)) in counts.iter().zip(arms) {
            let p = *c as f64 / 20_000.0;
            assert!((p - share).abs() < 0.015, "{counts:?}");
        }
        assert_eq!(rendezvous("s", [("a", 0.0)], "u"), None);
    }
}
