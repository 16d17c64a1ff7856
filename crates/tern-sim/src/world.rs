//! The world: the population's hidden state moving through time, one UTC day at a time.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tern_core::{NewOpportunity, OutcomeKind};

use crate::config::Config;
use crate::opportunities::day_opportunities;
use crate::population::{is_night, Category, Channel, Profile, Reach, User};
use crate::receipts::{max_in_window, Receipt};
use crate::rng::{exponential, hash_str, sigmoid, stream, Purpose};

/// The price of a marketing conversion whose delivery carried no `order_value`.
pub(crate) const DEFAULT_ORDER_VALUE: f64 = 30.0;

/// Engagement is bounded so that no history makes a user certain to come back or to leave.
pub(crate) const ENGAGEMENT_LIMIT: f64 = 4.0;

/// A message the driver sent, as the simulator needs to know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Opaque, echoed in every outcome. With the user, channel and time it keys the random draws
    /// of the response, so that the draws do not shift with whatever else was delivered first.
    pub message_id: String,
    pub user_id: String,
    pub channel: String,
    pub category: String,
    pub template: String,
    /// The signal as tern passed it through, accepted for symmetry and otherwise ignored: the
    /// user responds to their true interest, not to what upstream estimated.
    pub relevance: Option<f64>,
    /// The price, for the value of a marketing conversion.
    pub order_value: Option<f64>,
    /// When the message reached the user. Must fall on the open day.
    pub at: DateTime<Utc>,
}

impl Delivery {
    /// `opportunity` sent on `channel` at `at`, with its dedupe key as the message id.
    pub fn of(opportunity: &NewOpportunity, channel: &str, at: DateTime<Utc>) -> Delivery {
        Delivery {
            message_id: opportunity.dedupe_key.clone(),
            user_id: opportunity.user_id.clone(),
            channel: channel.to_string(),
            category: opportunity.category.clone(),
            template: opportunity.template.clone(),
            relevance: opportunity.signals.get("relevance").copied(),
            order_value: opportunity.signals.get("order_value").copied(),
            at,
        }
    }
}

/// What a user did with a message: what the driver reports to tern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub message_id: String,
    pub user_id: String,
    /// One of `Opened`, `Clicked`, `Converted`, `Unsubscribed`, `PushDisabled`.
    pub kind: OutcomeKind,
    /// Never before the delivery; may fall on a later day than the send.
    pub at: DateTime<Utc>,
    /// The order value, for conversions of marketing messages.
    pub value: Option<f64>,
}

/// One closed day: who was active (for the driver to report as activity), and what happened,
/// from the ground truth. Outcomes count on the day of the send they follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayReport {
    pub day: NaiveDate,
    /// Sorted.
    pub active_users: Vec<String>,
    /// Deliveries per channel, every channel named.
    pub messages: BTreeMap<String, usize>,
    /// Deliveries that reached no one: a lost or never-open channel, or an in-app message on
    /// a day the user did not open the app.
    pub unreached: usize,
    pub opens: usize,
    pub clicks: usize,
    pub conversions: usize,
    pub conversion_value: f64,
    pub unsubscribes: usize,
    pub push_disables: usize,
    pub active: usize,
    /// Mean fatigue at the end of the day, in push-equivalents.
    pub mean_fatigue: f64,
}

/// The whole run so far, cheap to compute at any time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub users: usize,
    pub days: usize,
    pub messages: BTreeMap<String, usize>,
    pub unreached: usize,
    pub opens: usize,
    pub clicks: usize,
    pub conversions: usize,
    pub conversion_value: f64,
    pub unsubscribes: usize,
    pub push_disables: usize,
    /// Share of users active on the first day.
    pub first_day_active: f64,
    /// Retention: mean share of users active per day over the last 7 closed days.
    pub retention: f64,
    /// Share of users active at least once in the last 7 closed days.
    pub active_last_7: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("unknown channel {0:?}; expected push, email or in_app")]
    UnknownChannel(String),
    #[error("unknown category {0:?}; expected content, social, marketing or account")]
    UnknownCategory(String),
    #[error("delivery at {at} falls on {day}, which is already closed; the open day is {open}")]
    DayClosed {
        at: DateTime<Utc>,
        day: NaiveDate,
        open: NaiveDate,
    },
    #[error("delivery at {at} falls on {day}, but the open day is {open}: close it with end_of_day first")]
    DayNotOpen {
        at: DateTime<Utc>,
        day: NaiveDate,
        open: NaiveDate,
    },
    #[error(
        "end_of_day({got}) called, but the open day is {expected}: days close once each, in order"
    )]
    OutOfOrder { expected: NaiveDate, got: NaiveDate },
}

#[derive(Debug, Clone, Default)]
struct Tally {
    messages: [usize; 3],
    unreached: usize,
    opens: usize,
    clicks: usize,
    conversions: usize,
    conversion_value: f64,
    unsubscribes: usize,
    push_disables: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        for (a, b) in self.messages.iter_mut().zip(other.messages) {
            *a += b;
        }
        self.unreached += other.unreached;
        self.opens += other.opens;
        self.clicks += other.clicks;
        self.conversions += other.conversions;
        self.conversion_value += other.conversion_value;
        self.unsubscribes += other.unsubscribes;
        self.push_disables += other.push_disables;
    }

    fn messages(&self) -> BTreeMap<String, usize> {
        Channel::ALL
            .into_iter()
            .map(|c| (c.as_str().to_string(), self.messages[c as usize]))
            .collect()
    }
}

/// The synthetic population and its hidden state. Everything it returns is what an outside
/// system could observe; the truth (interests, active hours, fatigue, engagement) stays inside.
#[derive(Debug, Clone)]
pub struct World {
    pub(crate) config: Config,
    pub(crate) start: DateTime<Utc>,
    pub(crate) users: Vec<User>,
    pub(crate) by_id: BTreeMap<String, usize>,
    /// The day deliveries are accepted for, and the next one `end_of_day` closes.
    pub(crate) open_day: NaiveDate,
    receipts: Vec<Receipt>,
    today: Tally,
    total: Tally,
    daily_active: Vec<usize>,
    /// The last day whose opportunities were drawn: a caller asking hour by hour draws each
    /// day once instead of 24 times.
    drawn: DayCache,
}

/// One day's opportunities of every user, as [`World::opportunities`] last drew them. They
/// depend only on the seed and the users' fixed interests, so a cached day is the day.
#[derive(Debug, Default)]
struct DayCache(std::sync::Mutex<Option<(i64, std::sync::Arc<Vec<NewOpportunity>>)>>);

impl Clone for DayCache {
    fn clone(&self) -> DayCache {
        DayCache(std::sync::Mutex::new(
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ))
    }
}

impl World {
    pub fn new(config: Config) -> World {
        let start = config.start.date_naive().and_time(NaiveTime::MIN).and_utc();
        let users: Vec<User> = (0..config.users)
            .map(|i| User::generate(&config, i, start))
            .collect();
        let by_id = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), i))
            .collect();
        let mut world = World {
            config,
            start,
            users,
            by_id,
            open_day: start.date_naive(),
            receipts: Vec::new(),
            today: Tally::default(),
            total: Tally::default(),
            daily_active: Vec::new(),
            drawn: DayCache::default(),
        };
        world.open(world.open_day);
        world
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The UTC day deliveries are accepted for; `end_of_day` must close it next.
    pub fn open_day(&self) -> NaiveDate {
        self.open_day
    }

    /// The profiles to upsert into tern, in user id order.
    pub fn profiles(&self) -> Vec<Profile> {
        self.users.iter().map(User::profile).collect()
    }

    /// The opportunities created in `[from, to)` (none before the start), sorted by creation
    /// time, then user, then dedupe key. Pure: any slicing of a day returns the same whole.
    pub fn opportunities(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<NewOpportunity> {
        let from = from.max(self.start);
        let mut out = Vec::new();
        if from >= to {
            return out;
        }
        let first = (from.date_naive() - self.start.date_naive()).num_days();
        let last =
            ((to - TimeDelta::nanoseconds(1)).date_naive() - self.start.date_naive()).num_days();
        for day in first..=last {
            let drawn = self.day(day);
            out.extend(
                drawn
                    .iter()
                    .filter(|o| from <= o.created_at && o.created_at < to)
                    .cloned(),
            );
        }
        out.sort_by(|a, b| {
            (a.created_at, &a.user_id, &a.dedupe_key).cmp(&(
                b.created_at,
                &b.user_id,
                &b.dedupe_key,
            ))
        });
        out
    }

    /// Every user's opportunities of day `day` (days since the start), drawn once per day.
    fn day(&self, day: i64) -> std::sync::Arc<Vec<NewOpportunity>> {
        let mut cache = self.drawn.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, drawn)) = &*cache {
            if *d == day {
                return drawn.clone();
            }
        }
        let day_start = self.start + TimeDelta::days(day);
        let drawn: Vec<NewOpportunity> = self
            .users
            .iter()
            .enumerate()
            .flat_map(|(i, user)| day_opportunities(&self.config, i, user, day, day_start))
            .collect();
        let drawn = std::sync::Arc::new(drawn);
        *cache = Some((day, drawn.clone()));
        drawn
    }

    /// Hands one message to its user and returns what they did with it, in time order.
    ///
    /// A message on a channel that does not reach the user (never enabled, or lost) does
    /// nothing, and neither does an in-app message on a day the user does not open the app;
    /// both are still logged, since they were sent.
    pub fn deliver(&mut self, delivery: Delivery) -> Result<Vec<Outcome>, SimError> {
        let (index, channel, category) = self.resolve(&delivery)?;
        let at = delivery.at;
        let day = at.date_naive();
        if day > self.open_day {
            return Err(SimError::DayNotOpen {
                at,
                day,
                open: self.open_day,
            });
        }

        let config = &self.config;
        let user = &mut self.users[index];
        let reached = match channel {
            Channel::InApp => user.active_today,
            _ => user.reach(channel) == Reach::Open,
        };
        self.receipts.push(Receipt {
            user_id: delivery.user_id.clone(),
            channel: channel.as_str().to_string(),
            category: category.as_str().to_string(),
            at,
            reached,
        });
        self.today.messages[channel as usize] += 1;
        if !reached {
            self.today.unreached += 1;
            return Ok(Vec::new());
        }

        user.decay_to(at, config.fatigue.half_life_days);
        let mut rng = stream(
            config.seed,
            Purpose::Response,
            &[
                index as u64,
                hash_str(&delivery.message_id),
                channel as u64,
                at.timestamp() as u64,
            ],
        );
        let interest = user.interest[category.index()];
        let night = is_night(user.local_hour(at));
        let outcome = |kind, at, value| Outcome {
            message_id: delivery.message_id.clone(),
            user_id: delivery.user_id.clone(),
            kind,
            at,
            value,
        };
        let mut out = Vec::new();

        if rng.next_f64() < open_probability(config, user, channel, category, at) {
            let mean_delay_minutes = match channel {
                Channel::Push if user.in_active_hours(at) => 20.0,
                Channel::Push => 180.0,
                Channel::Email => 240.0,
                Channel::InApp => 120.0,
            };
            let opened = at + minutes(1.0 / 60.0 + exponential(&mut rng, mean_delay_minutes));
            out.push(outcome(OutcomeKind::Opened, opened, None));
            self.today.opens += 1;
            let cares = interest >= 0.5;
            if cares {
                user.touches += 1.0;
            }
            if rng.next_f64() < click_given_open(user, category) {
                let clicked = opened + minutes(0.1 + 3.0 * rng.next_f64());
                out.push(outcome(OutcomeKind::Clicked, clicked, None));
                self.today.clicks += 1;
                if cares {
                    user.touches += config.engagement.click_weight;
                }
                let price = delivery
                    .order_value
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .unwrap_or(DEFAULT_ORDER_VALUE);
                if rng.next_f64() < convert_given_click(interest, category, price) {
                    let converted = clicked + minutes(1.0 + 59.0 * rng.next_f64());
                    let value = (category == Category::Marketing).then_some(price);
                    out.push(outcome(OutcomeKind::Converted, converted, value));
                    self.today.conversions += 1;
                    self.today.conversion_value += value.unwrap_or(0.0);
                }
            }
        }

        user.fatigue += fatigue_weight(config, channel, interest, night);

        if channel != Channel::InApp {
            let p = loss_probability(
                config,
                user.fatigue * user.sensitivity,
                channel,
                interest,
                night,
            );
            if rng.next_f64() < p {
                let (kind, lost_at) = if channel == Channel::Push {
                    self.today.push_disables += 1;
                    user.push = Reach::Lost;
                    (
                        OutcomeKind::PushDisabled,
                        at + minutes(1.0 + 30.0 * rng.next_f64()),
                    )
                } else {
                    self.today.unsubscribes += 1;
                    user.email = Reach::Lost;
                    let after = out.first().map_or(at, |o| o.at);
                    (
                        OutcomeKind::Unsubscribed,
                        after + minutes(0.5 + 5.0 * rng.next_f64()),
                    )
                };
                out.push(outcome(kind, lost_at, None));
            }
        }
        out.sort_by_key(|o| o.at);
        Ok(out)
    }

    /// The user's index, the channel and the category of `delivery`, which must not fall on a
    /// closed day.
    pub(crate) fn resolve(
        &self,
        delivery: &Delivery,
    ) -> Result<(usize, Channel, Category), SimError> {
        let index = *self
            .by_id
            .get(&delivery.user_id)
            .ok_or_else(|| SimError::UnknownUser(delivery.user_id.clone()))?;
        let channel: Channel = delivery
            .channel
            .parse()
            .map_err(|()| SimError::UnknownChannel(delivery.channel.clone()))?;
        let category: Category = delivery
            .category
            .parse()
            .map_err(|()| SimError::UnknownCategory(delivery.category.clone()))?;
        let at = delivery.at;
        let day = at.date_naive();
        if day < self.open_day {
            return Err(SimError::DayClosed {
                at,
                day,
                open: self.open_day,
            });
        }
        Ok((index, channel, category))
    }

    /// Closes `day`: settles each user's engagement (what the day's opens earned, what fatigue
    /// above comfort cost), reports who was active, and opens the next day.
    ///
    /// Who is active on a day is drawn when the day opens, from engagement as it stood then,
    /// because in-app messages need to know whether they will be seen.
    pub fn end_of_day(&mut self, day: NaiveDate) -> Result<DayReport, SimError> {
        if day != self.open_day {
            return Err(SimError::OutOfOrder {
                expected: self.open_day,
                got: day,
            });
        }
        let index = (day - self.start.date_naive()).num_days();
        let midnight = self.start + TimeDelta::days(index + 1);
        let e = &self.config.engagement;
        let mut active_users = Vec::new();
        let mut fatigue_sum = 0.0;
        for user in &mut self.users {
            user.decay_to(midnight, self.config.fatigue.half_life_days);
            fatigue_sum += user.fatigue;
            let excess = (user.fatigue * user.sensitivity - e.comfort).max(0.0);
            let gain = e.daily_gain * (1.0 - (-user.touches).exp());
            user.engagement = (user.engagement * (1.0 - e.reversion) + gain - e.overload * excess)
                .clamp(-ENGAGEMENT_LIMIT, ENGAGEMENT_LIMIT);
            user.touches = 0.0;
            if user.active_today {
                active_users.push(user.id.clone());
                user.last_active_day = Some(index);
            }
        }
        let tally = std::mem::take(&mut self.today);
        self.total.add(&tally);
        self.daily_active.push(active_users.len());
        let report = DayReport {
            day,
            messages: tally.messages(),
            unreached: tally.unreached,
            opens: tally.opens,
            clicks: tally.clicks,
            conversions: tally.conversions,
            conversion_value: tally.conversion_value,
            unsubscribes: tally.unsubscribes,
            push_disables: tally.push_disables,
            active: active_users.len(),
            mean_fatigue: fatigue_sum / self.users.len().max(1) as f64,
            active_users,
        };
        self.open_day = day
            .succ_opt()
            .expect("the simulation ends long before chrono's calendar");
        self.open(self.open_day);
        Ok(report)
    }

    /// Draws who will be active on `day`.
    fn open(&mut self, day: NaiveDate) {
        let index = (day - self.start.date_naive()).num_days();
        for (i, user) in self.users.iter_mut().enumerate() {
            let mut rng = stream(
                self.config.seed,
                Purpose::Activity,
                &[i as u64, index as u64],
            );
            user.active_today = rng.next_f64() < sigmoid(user.base + user.engagement);
        }
    }

    /// Every delivery so far, in the order delivered.
    pub fn receipts(&self) -> &[Receipt] {
        &self.receipts
    }

    /// The most messages (on `channel`, or on any) one user received within any window of
    /// length `window`, over the whole run.
    pub fn max_received(&self, channel: Option<&str>, window: TimeDelta) -> usize {
        max_in_window(&self.receipts, channel, window)
    }

    pub fn summary(&self) -> Summary {
        let users = self.users.len().max(1) as f64;
        let days = self.daily_active.len();
        let last = &self.daily_active[days.saturating_sub(7)..];
        let retention = if last.is_empty() {
            0.0
        } else {
            last.iter().sum::<usize>() as f64 / last.len() as f64 / users
        };
        let recent = self
            .users
            .iter()
            .filter(|u| u.last_active_day.is_some_and(|d| d + 7 >= days as i64))
            .count();
        Summary {
            users: self.users.len(),
            days,
            messages: self.total.messages(),
            unreached: self.total.unreached,
            opens: self.total.opens,
            clicks: self.total.clicks,
            conversions: self.total.conversions,
            conversion_value: self.total.conversion_value,
            unsubscribes: self.total.unsubscribes,
            push_disables: self.total.push_disables,
            first_day_active: self.daily_active.first().map_or(0.0, |&n| n as f64 / users),
            retention,
            active_last_7: recent as f64 / users,
        }
    }

    /// The hidden state of one user, for tests that play policies knowing the truth.
    #[cfg(test)]
    pub(crate) fn user(&self, id: &str) -> &User {
        &self.users[self.by_id[id]]
    }

    /// The true chance that `user` clicks a message of `category` on `channel` at `at`, as
    /// things stand now: what a policy greedy on clicks would rank by.
    #[cfg(test)]
    pub(crate) fn click_probability(
        &self,
        id: &str,
        channel: Channel,
        category: Category,
        at: DateTime<Utc>,
    ) -> f64 {
        let user = self.user(id);
        let reached = match channel {
            Channel::InApp => user.active_today,
            _ => user.reach(channel) == Reach::Open,
        };
        if !reached {
            return 0.0;
        }
        open_probability(&self.config, user, channel, category, at)
            * click_given_open(user, category)
    }
}

/// What one message adds to its user's fatigue: by channel, more when irrelevant, and a push
/// in the quiet night counts double.
pub(crate) fn fatigue_weight(config: &Config, channel: Channel, interest: f64, night: bool) -> f64 {
    let f = &config.fatigue;
    let base = match channel {
        Channel::Push => f.push,
        Channel::Email => f.email,
        Channel::InApp => f.in_app,
    };
    let night = if night && channel == Channel::Push {
        f.night_push
    } else {
        1.0
    };
    base * (1.0 + f.irrelevance * (1.0 - interest)) * night
}

/// The chance that a push or email costs the channel, given the user's fatigue (times
/// sensitivity) with this message counted. In-app messages never do.
pub(crate) fn loss_probability(
    config: &Config,
    felt_fatigue: f64,
    channel: Channel,
    interest: f64,
    night: bool,
) -> f64 {
    if channel == Channel::InApp {
        return 0.0;
    }
    let h = &config.hazard;
    h.base
        + h.per_fatigue * felt_fatigue
        + h.per_irrelevance * (1.0 - interest)
        + if night && channel == Channel::Push {
            h.night_push
        } else {
            0.0
        }
}

/// The chance of opening: interest and responsiveness set a base per channel; push loses most
/// of it away from the user's active hours (email waits in the inbox, in-app is seen when the
/// user opens the app anyway); fatigue damps it all.
pub(crate) fn open_probability(
    config: &Config,
    user: &User,
    channel: Channel,
    category: Category,
    at: DateTime<Utc>,
) -> f64 {
    let interest = user.interest[category.index()];
    let base = match channel {
        Channel::Push => -1.4,
        Channel::Email => -1.9,
        Channel::InApp => -0.8,
    };
    let closeness = user.closeness(at);
    let timing = match channel {
        Channel::Push => 0.12 + 0.88 * closeness,
        Channel::Email => 0.6 + 0.4 * closeness,
        Channel::InApp => 1.0,
    };
    let fatigue = user.fatigue_at(at, config.fatigue.half_life_days) * user.sensitivity;
    sigmoid(base + 3.0 * (interest - 0.5) + user.responsiveness)
        * timing
        * (-config.fatigue.open_damping * fatigue).exp()
}

pub(crate) fn click_given_open(user: &User, category: Category) -> f64 {
    let interest = user.interest[category.index()];
    sigmoid(-0.8 + 2.0 * (interest - 0.5) + 0.5 * user.responsiveness)
}

/// Marketing converts most (that is what it is for), less so at a higher price; account
/// messages have nothing to convert to.
pub(crate) fn convert_given_click(interest: f64, category: Category, price: f64) -> f64 {
    match category {
        Category::Marketing => {
            sigmoid(-1.2 + 3.0 * (interest - 0.5) - 0.5 * (price / DEFAULT_ORDER_VALUE).ln())
        }
        Category::Content => sigmoid(-3.0 + 2.0 * (interest - 0.5)),
        Category::Social => sigmoid(-3.5 + 2.0 * (interest - 0.5)),
        Category::Account => 0.0,
    }
}

fn minutes(m: f64) -> TimeDelta {
    TimeDelta::milliseconds((m * 60_000.0).round() as i64)
}
