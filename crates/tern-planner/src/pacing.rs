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
//! The threshold is the slot's opportunity cost, not a forecast of the user's future: it
//! ignores how much of the current window is spent (the cap handles a full window) and
//! assumes tomorrow's candidates look like today's population.
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
pub(crate) fn thresholds(
    arm: &CompiledArm,
    arm_index: usize,
    known: &[String],
    user: &UserInput,
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
        let days = window as f64 / 86_400.0;
        let expected: f64 = user
            .arrivals
            .iter()
            .filter(|a| a.per_day.is_finite() && a.per_day > 0.0)
            .filter(|a| rules_of(arm, known, &a.channels, &a.category) >> r & 1 == 1)
            .map(|a| a.per_day * days)
            .sum();
        if expected > f64::from(max) {
            out[r] = pacing.threshold(arm_index, r, f64::from(max) / expected);
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
