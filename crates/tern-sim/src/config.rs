//! The knobs of the ground truth. The defaults are calibrated (see the policy comparison in
//! `tests.rs`) so that over-messaging wins clicks in the first days and loses users after a few
//! weeks; change them together with that test.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Everything that determines a [`World`](crate::World): the same `Config` gives the same users,
/// the same opportunities and, for the same deliveries, the same outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub users: usize,
    pub seed: u64,
    /// Day 0 of the simulation. Truncated to its UTC midnight: days are UTC days, because
    /// activity is reported per UTC day.
    pub start: DateTime<Utc>,
    /// Share of users with a device that allows push. Default 0.70.
    pub push_enabled_share: f64,
    /// Share of users with a verified email address. Default 0.85.
    pub email_verified_share: f64,
    /// Share of premium users, who are somewhat more active. Default 0.15.
    pub premium_share: f64,
    pub rates: Rates,
    /// Standard deviation of the noise between a user's true interest and the `relevance`
    /// signal upstream attaches to an opportunity. Default 0.15: good enough to rank, not to
    /// read the truth off.
    pub relevance_noise: f64,
    pub fatigue: Fatigue,
    pub engagement: Engagement,
    pub hazard: Hazard,
}

/// Opportunities per user per day, by category (Poisson means).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Default 1.0.
    pub content: f64,
    /// Default 0.5.
    pub social: f64,
    /// Default 0.3.
    pub marketing: f64,
    /// Default 0.01: transactional messages are rare, and must never be crowded out.
    pub account: f64,
}

/// How messages wear a user down. Fatigue is a sum of message weights that halves every
/// `half_life_days`; a user's sensitivity scales what it does to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fatigue {
    /// Default 2.0 days.
    pub half_life_days: f64,
    /// Weight of one push. Default 1.0: it interrupts.
    pub push: f64,
    /// Default 0.6.
    pub email: f64,
    /// Default 0.25: it waits quietly in the app, and weighs only when seen.
    pub in_app: f64,
    /// Extra weight of an irrelevant message: the weight is multiplied by
    /// `1 + irrelevance × (1 − interest)`. Default 1.0.
    pub irrelevance: f64,
    /// Multiplier on the weight of a push in the quiet night (23:00–07:00 local). Default 2.0.
    pub night_push: f64,
    /// How much fatigue (times sensitivity) dampens opening: the open probability is multiplied
    /// by `exp(−open_damping × fatigue × sensitivity)`. Default 0.06.
    pub open_damping: f64,
}

/// The long-term engagement state L: a user is active on a day with probability
/// `sigmoid(base + L)`. It is what a policy can win or lose over weeks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    /// The most L one day of good messages can add. The day's gain is
    /// `daily_gain × (1 − exp(−touches))`, where touches count the opened messages the user cares
    /// about (true interest ≥ 0.5) plus `click_weight` per click on them: the first good touch of
    /// a day does most of the good, and more add little. Default 0.35.
    pub daily_gain: f64,
    /// Default 0.7.
    pub click_weight: f64,
    /// Fatigue (times sensitivity) a user tolerates without harm. Default 2.5: a relevant push
    /// every other day stays below it, one a day does not for the sensitive.
    pub comfort: f64,
    /// L lost per day per unit of fatigue above comfort. Default 0.03.
    pub overload: f64,
    /// Share of L that fades every day, so that neither good nor bad treatment lasts for ever.
    /// Default 0.03.
    pub reversion: f64,
}

/// The chance that one message costs the channel (an unsubscribe, push turned off).
/// Per message: `base + per_fatigue × fatigue × sensitivity + per_irrelevance × (1 − interest)`,
/// plus `night_push` for a push in the quiet night.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hazard {
    /// Default 0.0005.
    pub base: f64,
    /// Default 0.0006.
    pub per_fatigue: f64,
    /// Default 0.003.
    pub per_irrelevance: f64,
    /// Default 0.01.
    pub night_push: f64,
}

impl Config {
    /// The calibrated defaults for `users` users drawn from `seed`, starting on `start`'s UTC day.
    pub fn new(users: usize, seed: u64, start: DateTime<Utc>) -> Self {
        Config {
            users,
            seed,
            start,
            push_enabled_share: 0.70,
            email_verified_share: 0.85,
            premium_share: 0.15,
            rates: Rates {
                content: 1.0,
                social: 0.5,
                marketing: 0.3,
                account: 0.01,
            },
            relevance_noise: 0.15,
            fatigue: Fatigue {
                half_life_days: 2.0,
                push: 1.0,
                email: 0.6,
                in_app: 0.25,
                irrelevance: 1.0,
                night_push: 2.0,
                open_damping: 0.06,
            },
            engagement: Engagement {
                daily_gain: 0.35,
                click_weight: 0.7,
                comfort: 2.5,
                overload: 0.03,
                reversion: 0.03,
            },
            hazard: Hazard {
                base: 0.0005,
                per_fatigue: 0.0006,
                per_irrelevance: 0.003,
                night_push: 0.01,
            },
        }
    }
}
