//! The `oracle` arm: the ceiling. It reads the simulator's hidden truth, which no real sender
//! can, and sends by the true effect of each send against not sending ([`World::uplift`]),
//! under the same caps and quiet hours as every other arm.
//!
//! # How it decides
//! Every hour, for each user with open opportunities:
//! 1. Each opportunity on each channel that is reachable (as far as a sender can know: the
//!    profile, less the channels lost to an unsubscribe), outside the channel's quiet hours, and
//!    within the caps is worth the objective's weights applied to its true uplift:
//!    `conversion·Δp(conversion) + engagement·Δp(open) + retention·Δp(retained) −
//!    reachability·p(channel lost)`, with retention over the objective's horizon.
//! 2. It waits when the same opportunity would be worth more later in its life: the value is
//!    computed for every remaining hour up to its expiry (or two days, whichever is sooner) from
//!    the user's state now (fatigue decays, attention follows the hour), and the opportunity goes
//!    now only if no later hour beats now. Quiet hours and caps are not foreseen.
//! 3. The best candidate goes if its value clears the objective's `minValue` (the floor tern
//!    plans with), the user's state moves (fatigue, the day's touches), and the rest of that
//!    user's candidates are valued again, until none clears it.
//!
//! It is greedy in time and blind to the week's cap to come, so it is not the optimum; it is
//! what a sender that knew every user's truth would do hour by hour. What it cannot see is
//! documented in [`tern_sim`]'s `truth` module.

use super::*;

/// Hours ahead an opportunity's value is looked at before deciding to send it now.
const LOOKAHEAD_HOURS: i64 = 48;

/// The objective the oracle maximises, from the policy's default objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Oracle {
    pub(super) weights: tern_policy::Weights,
    pub(super) floor: f64,
    pub(super) horizon: TimeDelta,
}

impl Oracle {
    pub(super) fn of(bundle: &Bundle) -> Result<Oracle> {
        let o = bundle
            .default_objective()
            .context("the oracle arm needs a default Objective to maximise")?;
        Ok(Oracle {
            weights: o.weights,
            floor: o.min_value,
            horizon: o.horizon,
        })
    }

    /// The objective's value of a true uplift.
    pub(super) fn value(&self, u: &tern_sim::Uplift) -> f64 {
        let w = &self.weights;
        w.conversion * u.conversion + w.engagement * u.engagement + w.retention * u.retention
            - w.reachability * u.reachability_loss
    }

    /// Sends what is worth sending now out of `considered`, user by user; what is not sent and
    /// still open goes back to the sender's queue.
    pub(super) fn deliver(
        &self,
        sender: &mut Fcfs<'_>,
        world: &mut World,
        considered: Vec<NewOpportunity>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Delivered>> {
        let mut by_user: BTreeMap<String, Vec<NewOpportunity>> = BTreeMap::new();
        for o in considered {
            by_user.entry(o.user_id.clone()).or_default().push(o);
        }
        let mut out = Vec::new();
        for (_, mut open) in by_user {
            loop {
                // Each opportunity at its best channel now; the first best on ties.
                let mut best: Option<(f64, usize, String)> = None;
                for (i, o) in open.iter().enumerate() {
                    let mut here: Option<(f64, String)> = None;
                    for channel in sender.allowed(o, now) {
                        let v = self
                            .value(&world.uplift(&Delivery::of(o, &channel, now), self.horizon)?);
                        if here.as_ref().is_none_or(|(h, _)| v > *h) {
                            here = Some((v, channel));
                        }
                    }
                    let Some((v, channel)) = here else {
                        continue;
                    };
                    if v <= self.floor || best.as_ref().is_some_and(|(b, _, _)| *b >= v) {
                        continue;
                    }
                    if self.later_is_better(sender, world, o, now, v)? {
                        continue;
                    }
                    best = Some((v, i, channel));
                }
                let Some((_, i, channel)) = best else {
                    break;
                };
                let o = open.swap_remove(i);
                out.push(sender.send(world, &o, channel, now)?);
            }
            sender.queue.extend(open);
        }
        Ok(out)
    }

    /// Whether some later hour of the opportunity's life, on any of its channels reachable and
    /// outside quiet hours then, is worth more than `now_value`, judged from the user's state now.
    fn later_is_better(
        &self,
        sender: &Fcfs<'_>,
        world: &World,
        o: &NewOpportunity,
        now: DateTime<Utc>,
        now_value: f64,
    ) -> Result<bool> {
        let end = o.expires_at.min(now + TimeDelta::hours(LOOKAHEAD_HOURS));
        let mut at = now + TimeDelta::hours(1);
        while at < end {
            for c in sender.open_channels(o, at, false) {
                let v = self.value(&world.uplift(&Delivery::of(o, &c, at), self.horizon)?);
                if v > now_value {
                    return Ok(true);
                }
            }
            at += TimeDelta::hours(1);
        }
        Ok(false)
    }
}
