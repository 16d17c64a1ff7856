//! The users: who they are (observable), what they are truly like (hidden), and the vocabulary
//! of channels and categories they are reached through.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::rng::{normal, sigmoid, stream, Purpose};

/// The channels the simulated product has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Push,
    Email,
    InApp,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Push, Channel::Email, Channel::InApp];

    /// The name tern's policies use.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Email => "email",
            Channel::InApp => "in_app",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

/// The message categories upstream produces. `Account` is transactional: always relevant,
/// rarely produced, and short-lived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Content,
    Social,
    Marketing,
    Account,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Content,
        Category::Social,
        Category::Marketing,
        Category::Account,
    ];

    /// The name tern's policies use.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Content => "content",
            Category::Social => "social",
            Category::Marketing => "marketing",
            Category::Account => "account",
        }
    }

    pub fn template(self) -> &'static str {
        match self {
            Category::Content => "content_pick",
            Category::Social => "friend_activity",
            Category::Marketing => "offer",
            Category::Account => "password_reset",
        }
    }

    /// How long upstream keeps the opportunity open: news goes stale, a password reset link
    /// expires, an offer runs for days.
    pub fn ttl(self) -> TimeDelta {
        match self {
            Category::Content => TimeDelta::hours(24),
            Category::Social => TimeDelta::hours(12),
            Category::Marketing => TimeDelta::hours(72),
            Category::Account => TimeDelta::hours(1),
        }
    }

    pub fn priority(self) -> &'static str {
        match self {
            Category::Account => tern_core::TRANSACTIONAL,
            _ => "normal",
        }
    }

    /// The channels upstream allows, most preferred first.
    pub fn channels(self) -> &'static [Channel] {
        match self {
            Category::Content => &[Channel::Push, Channel::Email, Channel::InApp],
            Category::Social => &[Channel::Push, Channel::InApp],
            Category::Marketing => &[Channel::Email, Channel::Push],
            Category::Account => &[Channel::Email],
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

struct Zone {
    tz: Tz,
    country: &'static str,
    locale: &'static str,
    weight: f64,
}

/// Where users live. Zones on three continents, so that one UTC send time is morning for some
/// and night for others.
const ZONES: [Zone; 6] = [
    Zone {
        tz: chrono_tz::Europe::London,
        country: "GB",
        locale: "en-GB",
        weight: 0.18,
    },
    Zone {
        tz: chrono_tz::Europe::Stockholm,
        country: "SE",
        locale: "sv-SE",
        weight: 0.08,
    },
    Zone {
        tz: chrono_tz::America::New_York,
        country: "US",
        locale: "en-US",
        weight: 0.28,
    },
    Zone {
        tz: chrono_tz::America::Los_Angeles,
        country: "US",
        locale: "en-US",
        weight: 0.20,
    },
    Zone {
        tz: chrono_tz::Asia::Tokyo,
        country: "JP",
        locale: "ja-JP",
        weight: 0.14,
    },
    Zone {
        tz: chrono_tz::Australia::Sydney,
        country: "AU",
        locale: "en-AU",
        weight: 0.12,
    },
];

/// Topics a user may have declared; they carry no signal, as most profile tags don't.
const TOPICS: [&str; 5] = ["gaming", "music", "news", "sports", "travel"];

/// What upstream knows about a user, as it knew it at signup: for the driver to upsert into
/// tern. Channels lost later are not reflected here; tern learns them from outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub user_id: String,
    /// An IANA zone name.
    pub timezone: String,
    pub locale: String,
    pub country: String,
    pub push_enabled: bool,
    /// `ios` or `android` when push is enabled.
    pub device: Option<String>,
    pub email_verified: bool,
    pub premium: bool,
    /// Sorted. `deal_hunter` and `community` lean (weakly) towards marketing and social interest;
    /// the topics mean nothing.
    pub tags: Vec<String>,
}

/// Whether a channel reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Never had it (no device, unverified address).
    Never,
    Open,
    /// Lost to an unsubscribe or push turned off; it never comes back.
    Lost,
}

/// One user, observable and hidden. Only [`Profile`] leaves the crate.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub id: String,
    zone: usize,
    locale: &'static str,
    premium: bool,
    device: Option<&'static str>,
    tags: Vec<String>,
    email_verified: bool,

    /// Local hour of peak attention, 8–21, and the width (hours, one standard deviation) of
    /// the bell around it.
    pub peak: f64,
    pub width: f64,
    /// True interest per category, indexed by [`Category::index`].
    pub interest: [f64; 4],
    /// Latent daily activity, in logits.
    pub base: f64,
    /// How hard fatigue hits this user.
    pub sensitivity: f64,
    /// Short-term responsiveness, in logits of opening and clicking. Correlated with
    /// sensitivity: the users who click most readily are the ones most easily worn out, which
    /// is what makes optimising clicks alone lose users.
    pub responsiveness: f64,

    pub push: Reach,
    pub email: Reach,
    pub fatigue: f64,
    pub fatigue_at: DateTime<Utc>,
    /// Long-term engagement L, and today's good touches, which add to it when the day closes.
    pub engagement: f64,
    pub touches: f64,
    pub active_today: bool,
    pub last_active_day: Option<i64>,
}

impl User {
    /// User `index` (0-based) of the population: drawn from its own stream, so that the first
    /// thousand users are the same in a population of one thousand or of ten thousand.
    pub fn generate(config: &Config, index: usize, start: DateTime<Utc>) -> User {
        let mut rng = stream(config.seed, Purpose::Population, &[index as u64]);
        let mut pick = rng.next_f64() * ZONES.iter().map(|z| z.weight).sum::<f64>();
        let mut zone = ZONES.len() - 1;
        for (i, z) in ZONES.iter().enumerate() {
            if pick < z.weight {
                zone = i;
                break;
            }
            pick -= z.weight;
        }
        let locale = if ZONES[zone].tz == chrono_tz::America::Los_Angeles && rng.next_f64() < 0.2 {
            "es-US"
        } else {
            ZONES[zone].locale
        };
        let premium = rng.next_f64() < config.premium_share;
        let push_enabled = rng.next_f64() < config.push_enabled_share;
        let device = if !push_enabled {
            None
        } else if rng.next_f64() < 0.55 {
            Some("ios")
        } else {
            Some("android")
        };
        let email_verified = rng.next_f64() < config.email_verified_share;

        let peak = 8.0 + 13.0 * rng.next_f64();
        let width = 1.5 + 2.5 * rng.next_f64();
        let activity = normal(&mut rng);
        let base = 0.9 * activity + if premium { 0.4 } else { -0.06 };
        let mut interest = [1.0; 4];
        for (category, mean) in [
            (Category::Content, 0.0),
            (Category::Social, -0.2),
            (Category::Marketing, -0.8),
        ] {
            interest[category.index()] = sigmoid(mean + 0.3 * activity + 1.4 * normal(&mut rng));
        }
        let touchy = normal(&mut rng);
        let sensitivity = (0.45 * touchy).exp();
        let responsiveness = 0.45 * touchy + 0.35 * normal(&mut rng);

        let mut tags = Vec::new();
        if rng.next_f64() < 0.1 + 0.6 * interest[Category::Marketing.index()] {
            tags.push("deal_hunter".to_string());
        }
        if rng.next_f64() < 0.1 + 0.5 * interest[Category::Social.index()] {
            tags.push("community".to_string());
        }
        for topic in TOPICS {
            if rng.next_f64() < 0.2 {
                tags.push(topic.to_string());
            }
        }
        tags.sort();

        User {
            id: user_id(index),
            zone,
            locale,
            premium,
            device,
            tags,
            email_verified,
            peak,
            width,
            interest,
            base,
            sensitivity,
            responsiveness,
            push: if push_enabled {
                Reach::Open
            } else {
                Reach::Never
            },
            email: if email_verified {
                Reach::Open
            } else {
                Reach::Never
            },
            fatigue: 0.0,
            fatigue_at: start,
            engagement: 0.0,
            touches: 0.0,
            active_today: false,
            last_active_day: None,
        }
    }

    pub fn profile(&self) -> Profile {
        Profile {
            user_id: self.id.clone(),
            timezone: ZONES[self.zone].tz.name().to_string(),
            locale: self.locale.to_string(),
            country: ZONES[self.zone].country.to_string(),
            push_enabled: self.device.is_some(),
            device: self.device.map(str::to_string),
            email_verified: self.email_verified,
            premium: self.premium,
            tags: self.tags.clone(),
        }
    }

    pub fn tz(&self) -> Tz {
        ZONES[self.zone].tz
    }

    /// The local hour of `at`, with minutes as a fraction.
    pub fn local_hour(&self, at: DateTime<Utc>) -> f64 {
        let local = at.with_timezone(&self.tz());
        f64::from(local.hour()) + f64::from(local.minute()) / 60.0
    }

    /// 1 at the peak hour, falling off as a bell of the user's width (around the clock).
    pub fn closeness(&self, at: DateTime<Utc>) -> f64 {
        let d = (self.local_hour(at) - self.peak).rem_euclid(24.0);
        let d = d.min(24.0 - d);
        (-0.5 * (d / self.width).powi(2)).exp()
    }

    /// Whether the user is within their active hours (within one width of the peak).
    pub fn in_active_hours(&self, at: DateTime<Utc>) -> bool {
        self.closeness(at) >= (-0.5f64).exp()
    }

    pub fn reach(&self, channel: Channel) -> Reach {
        match channel {
            Channel::Push => self.push,
            Channel::Email => self.email,
            Channel::InApp => Reach::Open,
        }
    }

    /// Fatigue as it stands at `at`. Messages delivered out of time order are counted without
    /// decay going backwards, so deliver in time order for exact fatigue.
    pub fn fatigue_at(&self, at: DateTime<Utc>, half_life_days: f64) -> f64 {
        let elapsed = (at - self.fatigue_at).num_seconds().max(0) as f64 / 86_400.0;
        self.fatigue * 0.5f64.powf(elapsed / half_life_days)
    }

    pub fn decay_to(&mut self, at: DateTime<Utc>, half_life_days: f64) {
        if at > self.fatigue_at {
            self.fatigue = self.fatigue_at(at, half_life_days);
            self.fatigue_at = at;
        }
    }
}

/// The quiet night, 23:00–07:00 local, when a push is an intrusion.
pub(crate) fn is_night(local_hour: f64) -> bool {
    !(7.0..23.0).contains(&local_hour)
}

/// `u000001` for index 0.
pub(crate) fn user_id(index: usize) -> String {
    format!("u{:06}", index + 1)
}
