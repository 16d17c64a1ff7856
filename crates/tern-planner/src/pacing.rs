//! Planning over time, for objectives with [`long_term`](crate::Objective::long_term): what a
//! cap slot is worth (pacing), and when in the next day a send is worth most.
//!
//! # Pacing
//! A count cap (`max` sends per window) is a budget of slots per user and window. Spent first
//! come first served, a weak message on Monday takes the slot that a good one on Thursday
//! needed, and a population whose windows started together sends in a weekly sawtooth. With
//! arrivals at a steady rate, the policy that keeps the most value in the long run is a
//! threshold: send a candidate only if its value is among the best `max` of the `M` candidates
//! a window brings the user, that is, at least the `1 − max/M` quantile of the value of such
//! candidates. `M` comes from the user's own recent arrivals ([`crate::UserInput::arrivals`]),
//! the value distribution from this plan's candidates of the same arm that the rule counts
//! (one per opportunity, at its best channel and slot). Where `M ≤ max` the rule cannot bind
//! on average and the threshold is off. The caps themselves still hold every send.
//!
//! The share follows the user's window: the free slots over the candidates expected until
//! the oldest counted send leaves it ([`thresholds`]), so the price of a slot rises as a window
//! is spent and falls as it rolls over. It assumes tomorrow's candidates look like today's
//! population.
//!
//! # Send time by value
//! Each candidate of such an objective is scored at [`SLOTS`] moments, every [`SLOT_SECS`]
//! from the plan's start, and is placed within the slot predicted to be worth most, among
//! those open on its channel (not wholly quiet) before it expires. The next plan does the
//! same from its own start, so a candidate held for the evening is judged again as the evening
//! comes.

use crate::config::{CompiledArm, Limit};
use crate::types::UserInput;

/// The spacing of the moments at which a long-term objective's candidates are scored.
pub const SLOT_SECS: i64 = 3 * 3600;

/// How many such moments: a day ahead.
pub const SLOTS: usize = 8;

/// Per arm and rule: the values that this plan's candidates counted by the rule can reach, one
/// per opportunity, ascending. Empty for arms that do not pace and for minimum gaps.
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    pub(crate) values: Vec<Vec<Vec<f64>>>,
}

impl Pacing {
    /// The value that a `share` of the rule's candidates reach or exceed: the price of a slot
    /// when only that share of the candidates can have one.
    pub(crate) fn threshold(&self, arm: usize, rule: usize, share: f64) -> f64 {
        let Some(v) = self.values.get(arm).and_then(|a| a.get(rule)) else {
            return f64::NEG_INFINITY;
        };
        if v.is_empty() || share.is_nan() || share >= 1.0 {
            return f64::NEG_INFINITY;
        }
        let share = share.max(0.0);
        let i = ((1.0 - share) * v.len() as f64).floor() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// The rules (bits) that count a send on any of `channels` in `category`, under `arm`.
pub(crate) fn rules_of(
    arm: &CompiledArm,
    known: &[String],
    channels: &[String],
    category: &str,
) -> u64 {
    channels
        .iter()
        .filter_map(|c| known.iter().position(|k| k == c))
        .fold(0, |m, c| m | arm.mask(Some(c as u16), category))
}

/// One user's thresholds, per rule of their arm (index `arm_index`): the value a candidate must
/// reach to take a slot of that rule, or `-∞` where the rule is not expected to bind.
///
/// The share of candidates a rule can take is its free slots over the candidates expected
/// until a slot comes back: with `used` of the rule's `max` slots taken in its sliding window
/// (`points[rule]`, the user's counted sends, ascending) and the oldest of them leaving the
/// window after `τ`, `(max − used) / (rate · τ)`; with none taken, `max` over a whole window's
/// arrivals. An empty window reads as the stationary share `max / M`; a window spent early
/// raises the price of its last slots until they come back, and one about to roll over lowers
/// it, so that a user's week is not spent on Monday nor left unspent on Sunday.
#[allow(clippy::too_many_arguments)]
pub(crate) fn thresholds(
    arm: &CompiledArm,
    arm_index: usize,
    known: &[String],
    user: &UserInput,
    points: &[Vec<i64>],
    now: i64,
    pacing: &Pacing,
    out: &mut Vec<f64>,
) {
    out.clear();
    out.resize(arm.rules.len(), f64::NEG_INFINITY);
    if !arm.objective.long_term || user.arrivals.is_empty() {
        return;
    }
    for (r, rule) in arm.rules.iter().enumerate() {
        let Limit::Max { max, window } = rule.limit else {
            continue;
        };
        if window <= 0 {
            continue;
        }
        let per_second: f64 = user
            .arrivals
            .iter()
            .filter(|a| a.per_day.is_finite() && a.per_day > 0.0)
            .filter(|a| rules_of(arm, known, &a.channels, &a.category) >> r & 1 == 1)
            .map(|a| a.per_day / 86_400.0)
            .sum();
        let counted = points.get(r).map_or(&[][..], Vec::as_slice);
        let in_window = &counted[counted.partition_point(|&t| t <= now - window)..];
        let in_window = &in_window[..in_window.partition_point(|&t| t <= now)];
        let free = i64::from(max) - in_window.len() as i64;
        if free <= 0 {
            // The cap itself holds every send until a slot comes back.
            continue;
        }
        let until = in_window
            .first()
            .map_or(window, |oldest| oldest + window - now);
        let expected = per_second * until.max(1) as f64;
        if expected > free as f64 {
            out[r] = pacing.threshold(arm_index, r, free as f64 / expected);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_quantile_that_leaves_the_share() {
        let p = Pacing {
            values: vec![vec![(0..100).map(f64::from).collect()]],
        };
        // The best 6 of 100 clear 94.
        assert_eq!(p.threshold(0, 0, 0.06), 94.0);
        assert_eq!(p.threshold(0, 0, 1.0), f64::NEG_INFINITY);
        assert_eq!(p.threshold(0, 0, 0.0), 99.0);
        assert_eq!(p.threshold(1, 0, 0.5), f64::NEG_INFINITY);
    }
}
