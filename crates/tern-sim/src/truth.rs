//! The ground truth of a send's effect: what delivering one message does, in expectation,
//! against not delivering it. Nothing outside the simulator can know this; it is what a model's
//! uplift estimates are scored against, and what the `oracle` policy decides by.
//!
//! # How it is computed
//! Exactly, from the same functions [`World::deliver`] and [`World::end_of_day`] draw from, for
//! the short-term outcomes: the chance of an open, a click and a conversion, and of losing the
//! channel. The long-term effect is a mean-field rollout of the user's engagement L over the
//! horizon, twice: once without the message and once with it.
//!
//! - With the message, the day of the send gains `daily_gain × E[exp(−t) − exp(−(t + X))]`
//!   more, where `t` is the day's good touches so far and `X` the touches the message adds (one
//!   for an open of a message the user cares about, `click_weight` more for a click).
//! - Its weight adds to fatigue and decays with the fatigue half-life; each night, fatigue above
//!   comfort wears L down.
//! - Both rollouts assume the user goes on being messaged at the pace of late: the fatigue they
//!   carry now is held, and the message's weight comes on top of it. That prices a message to a
//!   tired user at its true marginal cost, rather than as if it were the last one.
//! - L moves the chance of being active each day (`sigmoid(base + L)`); the uplift in retention
//!   is the change in the chance of being active on at least one day of the horizon's last week,
//!   the same event tern's retention label records.
//!
//! What it leaves out: the message's effect on the opens of later messages (fatigue damps them)
//! and the future messages a lost channel can no longer carry. Both make sending look slightly
//! better than it is, for every policy alike.

use chrono::{NaiveDate, TimeDelta};
use serde::{Deserialize, Serialize};

use crate::population::{is_night, Channel, Reach};
use crate::rng::sigmoid;
use crate::world::{
    click_given_open, convert_given_click, fatigue_weight, loss_probability, open_probability,
    Delivery, SimError, World, DEFAULT_ORDER_VALUE, ENGAGEMENT_LIMIT,
};

/// The true expected effect of one delivery against none, per outcome. Each is a difference of
/// probabilities (or of expected counts), so not sending is worth exactly zero.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Uplift {
    /// The chance that the message converts (nothing converts without a message).
    pub conversion: f64,
    /// The chance that it is opened (a click needs an open).
    pub engagement: f64,
    /// The change in the chance that the user is active on at least one day of the last week
    /// of the horizon (the whole horizon, if shorter than a week).
    pub retention: f64,
    /// The change in the expected number of days the user is active within the horizon.
    pub active_days: f64,
    /// The chance that the message costs its channel (an unsubscribe or push turned off).
    pub reachability_loss: f64,
}

impl World {
    /// The true effect, in expectation, of delivering `delivery` at its time against not
    /// delivering it, with the long-term effect taken over `horizon` after the send.
    ///
    /// The time must fall on the open day or later; a later day is judged from the user's state
    /// now, as if nothing else reached them in between. Pure: it changes nothing.
    pub fn uplift(&self, delivery: &Delivery, horizon: TimeDelta) -> Result<Uplift, SimError> {
        let (index, channel, category) = self.resolve(delivery)?;
        let at = delivery.at;
        let day = at.date_naive();
        let config = &self.config;
        let user = &self.users[index];
        let e = &config.engagement;
        let half_life = config.fatigue.half_life_days;
        let start_day = self.start.date_naive();
        let open = (self.open_day - start_day).num_days();
        let send = (day - start_day).num_days();

        // L after each night from the open day to the end of the horizon: `(day, L)` with the
        // day it sets the chance of activity for. The send's day gains `send_gain` (the day's
        // touches so far included) and its weight adds fatigue from `at` on, decaying; without
        // the message, the same with the day's touches alone and no weight.
        let end: NaiveDate = (at + horizon).date_naive();
        let last = (end - start_day).num_days();
        let held = user.fatigue_at(at, half_life);
        let excess = |f: f64| (f * user.sensitivity - e.comfort).max(0.0);
        let gain = |touches: f64| e.daily_gain * (1.0 - (-touches).exp());
        let touches_before = if send == open { user.touches } else { 0.0 };
        let rollout = |send_gain: f64, weight: f64| -> Vec<(i64, f64)> {
            let mut l = user.engagement;
            (open..last)
                .map(|k| {
                    let midnight = self.start + TimeDelta::days(k + 1);
                    let extra = if k >= send {
                        weight
                            * 0.5f64
                                .powf((midnight - at).num_seconds() as f64 / 86_400.0 / half_life)
                    } else {
                        0.0
                    };
                    let g = if k == send {
                        send_gain
                    } else if k == open {
                        gain(user.touches)
                    } else {
                        0.0
                    };
                    l = (l * (1.0 - e.reversion) + g - e.overload * excess(held + extra))
                        .clamp(-ENGAGEMENT_LIMIT, ENGAGEMENT_LIMIT);
                    (k + 1, l)
                })
                .collect()
        };
        let baseline = rollout(gain(touches_before), 0.0);

        // Whether the message reaches the user at all.
        let reach = match channel {
            Channel::InApp if send == open => f64::from(u8::from(user.active_today)),
            Channel::InApp => {
                let l = baseline
                    .iter()
                    .find(|(k, _)| *k == send)
                    .map_or(user.engagement, |(_, l)| *l);
                sigmoid(user.base + l)
            }
            _ => f64::from(u8::from(user.reach(channel) == Reach::Open)),
        };
        if reach == 0.0 {
            return Ok(Uplift::default());
        }

        let interest = user.interest[category.index()];
        let night = is_night(user.local_hour(at));
        let p_open = open_probability(config, user, channel, category, at);
        let p_click = p_open * click_given_open(user, category);
        let price = delivery
            .order_value
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(DEFAULT_ORDER_VALUE);
        let p_convert = p_click * convert_given_click(interest, category, price);
        let weight = fatigue_weight(config, channel, interest, night);
        let p_lost = loss_probability(
            config,
            (held + weight) * user.sensitivity,
            channel,
            interest,
            night,
        )
        .clamp(0.0, 1.0);

        // The day's gain with the message: the expectation over the touches it adds.
        let send_gain = if interest >= 0.5 {
            let opened_only = p_open - p_click;
            let clicked = p_click;
            let none = 1.0 - p_open;
            none * gain(touches_before)
                + opened_only * gain(touches_before + 1.0)
                + clicked * gain(touches_before + 1.0 + e.click_weight)
        } else {
            gain(touches_before)
        };
        let treated = rollout(send_gain, weight);

        // Active days within the horizon, and the chance of any in its last week.
        let span = horizon.min(TimeDelta::days(7));
        let week_from = ((at + horizon - span).date_naive() - start_day).num_days();
        let mut active_days = 0.0;
        let (mut none_without, mut none_with) = (1.0, 1.0);
        for ((k, l0), (_, l1)) in baseline.iter().zip(&treated) {
            if *k <= send || *k > last - 1 {
                continue;
            }
            let (p0, p1) = (sigmoid(user.base + l0), sigmoid(user.base + l1));
            active_days += p1 - p0;
            if *k >= week_from {
                none_without *= 1.0 - p0;
                none_with *= 1.0 - p1;
            }
        }
        let retention = none_without - none_with;

        Ok(Uplift {
            conversion: reach * p_convert,
            engagement: reach * p_open,
            retention: reach * retention,
            active_days: reach * active_days,
            reachability_loss: reach * p_lost,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    use super::*;
    use crate::{Category, Config, World};

    fn email(world: &World, user: &str, at: DateTime<Utc>, category: Category) -> Delivery {
        Delivery {
            message_id: format!("m-{user}"),
            user_id: user.to_string(),
            channel: "email".into(),
            category: category.as_str().into(),
            template: category.template().into(),
            relevance: None,
            order_value: None,
            at,
        }
        .with_day_of(world)
    }

    impl Delivery {
        fn with_day_of(self, world: &World) -> Delivery {
            assert_eq!(self.at.date_naive(), world.open_day());
            self
        }
    }

    /// The expectation agrees with the world's own draws: one email to every user on day 0,
    /// against none, changes the active days of the next two weeks by what `uplift` predicted.
    /// Activity is drawn from streams keyed by user and day, so the two worlds differ only
    /// where the message changed engagement.
    #[test]
    fn the_expected_uplift_is_what_the_world_does() {
        let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
        let mut treated = World::new(Config::new(6_000, 11, start));
        let mut untreated = treated.clone();
        let at = start + TimeDelta::hours(15);
        let horizon = TimeDelta::days(15);
        let (mut opens, mut predicted) = (0usize, Uplift::default());
        for p in treated.profiles() {
            if !p.email_verified {
                continue;
            }
            let d = email(&treated, &p.user_id, at, Category::Content);
            let u = treated.uplift(&d, horizon).unwrap();
            predicted.engagement += u.engagement;
            predicted.active_days += u.active_days;
            predicted.retention += u.retention;
            let outcomes = treated.deliver(d).unwrap();
            opens += outcomes
                .iter()
                .filter(|o| o.kind == tern_core::OutcomeKind::Opened)
                .count();
        }
        let mut gained = 0i64;
        for k in 0..15 {
            let day = (start + TimeDelta::days(k)).date_naive();
            let a = treated.end_of_day(day).unwrap().active as i64;
            let b = untreated.end_of_day(day).unwrap().active as i64;
            if k >= 1 {
                gained += a - b;
            }
        }
        let opens = opens as f64;
        assert!(
            (opens - predicted.engagement).abs() < 0.1 * predicted.engagement,
            "opens {opens} against {:.1} expected",
            predicted.engagement
        );
        assert!(predicted.active_days > 50.0, "{predicted:?}");
        assert!(
            (gained as f64 - predicted.active_days).abs() < 0.3 * predicted.active_days + 20.0,
            "active days gained {gained} against {:.1} expected",
            predicted.active_days
        );
        assert!(predicted.retention > 0.0, "{predicted:?}");
    }

    #[test]
    fn a_message_to_a_worn_out_user_costs_and_an_unreachable_one_does_nothing() {
        let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
        let mut world = World::new(Config::new(400, 5, start));
        let at = start + TimeDelta::hours(14);
        let horizon = TimeDelta::days(28);
        let users: Vec<_> = world.profiles();
        let mut rested = 0.0;
        for p in users.iter().filter(|p| p.email_verified) {
            rested += world
                .uplift(&email(&world, &p.user_id, at, Category::Content), horizon)
                .unwrap()
                .retention;
        }
        // Ten irrelevant emails each: fatigue far above comfort.
        for p in users.iter().filter(|p| p.email_verified) {
            for i in 0..10 {
                let mut d = email(&world, &p.user_id, at, Category::Marketing);
                d.message_id = format!("blast-{i}-{}", p.user_id);
                world.deliver(d).unwrap();
            }
        }
        let mut worn = 0.0;
        for p in users.iter().filter(|p| p.email_verified) {
            let d = email(&world, &p.user_id, at, Category::Marketing);
            let u = world.uplift(&d, horizon).unwrap();
            if u == Uplift::default() {
                continue; // The blast cost this user their email: nothing reaches them now.
            }
            worn += u.retention;
            assert!(u.reachability_loss > 0.0);
        }
        assert!(rested > 0.0, "{rested}");
        assert!(worn < 0.0, "{worn}");

        let unverified = users.iter().find(|p| !p.email_verified).unwrap();
        let d = email(&world, &unverified.user_id, at, Category::Content);
        assert_eq!(world.uplift(&d, horizon).unwrap(), Uplift::default());
        let mut late = d.clone();
        late.user_id = "nobody".into();
        assert!(matches!(
            world.uplift(&late, horizon),
            Err(SimError::UnknownUser(_))
        ));
        world.end_of_day(start.date_naive()).unwrap();
        assert!(matches!(
            world.uplift(&d, horizon),
            Err(SimError::DayClosed { .. })
        ));
    }
}
