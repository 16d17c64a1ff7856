//! The planner's configuration: what the policy bundle says, as plain serde data.
//!
//! `tern_daemon::translate` builds a [`PlannerConfig`] from a policy bundle (the planner knows
//! no YAML); tests and benchmarks build one directly or read it as JSON. Cap rules, horizons and
//! exploration are validated by `tern_core::limits`, the same code `tern policy check` runs. [`crate::Planner::new`] validates it and turns names into indices once,
//! so that the hot path compares integers, never strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tern_core::limits;

/// The keyword that makes a cap rule count every channel.
pub const ANY_CHANNEL: &str = "any";

/// Everything the planner needs from the active policy bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerConfig {
    /// The channels the planner may send on, with their quiet hours and budgets. A candidate on a
    /// channel not listed here is suppressed with [`crate::Reason::UnknownChannel`].
    pub channels: Vec<ChannelConfig>,
    /// Per-user caps and minimum gaps, applied to every user not in an arm that overrides them.
    #[serde(default)]
    pub caps: Vec<CapRule>,
    /// Priority classes that the top-level `caps` do not hold back (a cap set's `exempt` list).
    /// Their sends still count toward every cap for the sends around them. Only caps: what else
    /// a class bypasses is said in [`PlannerConfig::priorities`].
    #[serde(default)]
    pub exempt_priorities: Vec<String>,
    /// What each priority class bypasses (a `kind: Priority` document), by class name. A class
    /// that bypasses anything is sent as soon as its bypasses allow (see [`Bypass`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub priorities: BTreeMap<String, Bypass>,
    /// Named objectives. `default` is used for users outside any experiment and for arms that name
    /// no objective.
    pub objectives: BTreeMap<String, Objective>,
    /// At most one experiment splits users into arms.
    #[serde(default)]
    pub experiment: Option<Experiment>,
    /// The share ε of decisions drawn uniformly among the allowed candidates, in [0, 1).
    #[serde(default)]
    pub exploration: f64,
    /// The share of would-be sends withheld at random, in [0, 0.5]: each opportunity draws once
    /// (by its id, so the same across plans), and a withheld one is logged as a counterfactual
    /// with [`crate::Reason::Withheld`] and that probability. Classes that bypass anything are
    /// never withheld.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub withhold: f64,
    /// Whether one opportunity may be sent on several channels. Off by default: a user should not
    /// get the same message by push and by email.
    #[serde(default)]
    pub multi_channel: bool,
    /// How far ahead the plan schedules, in seconds. Items that cannot be placed before
    /// `now + horizon` wait for a later plan ([`crate::Reason::Horizon`]).
    pub horizon_secs: u64,
    /// The longest send window handed to delivery, in seconds (60 to 3600, default 3600). Caps and
    /// gaps are checked as if the send could happen anywhere in its window, so a shorter window
    /// makes the planner less conservative.
    #[serde(default = "default_send_window")]
    pub send_window_secs: u64,
}

/// What the candidates of one priority class bypass. A class with any flag set is *urgent*: its
/// candidates are placed at the earliest moment their remaining checks allow (not at the user's
/// best hour), with a send window as long as the send window allows, so that each replan keeps
/// them due until they are sent or expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bypass {
    /// Not held back by any cap or minimum gap, of any arm (their sends still count).
    #[serde(default)]
    pub caps: bool,
    /// Not priced by channel budgets, and dropped last by the budget's exact fit.
    #[serde(default)]
    pub budgets: bool,
    /// Not suppressed for a value below the objective's `min_value`.
    #[serde(default)]
    pub min_value: bool,
    /// Placed in channels' quiet hours too.
    #[serde(default)]
    pub quiet_hours: bool,
    /// Sent to holdout users too (not withheld as a counterfactual).
    #[serde(default)]
    pub holdouts: bool,
}

impl Bypass {
    /// Every flag set.
    pub const ALL: Bypass = Bypass {
        caps: true,
        budgets: true,
        min_value: true,
        quiet_hours: true,
        holdouts: true,
    };

    /// Whether any flag is set: the class is urgent.
    pub fn any(&self) -> bool {
        self.caps || self.budgets || self.min_value || self.quiet_hours || self.holdouts
    }
}

fn default_send_window() -> u64 {
    3600
}

/// One delivery channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    /// Local times (in the user's time zone) during which nothing is sent on this channel.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// A quota across all users, met with a price per channel.
    #[serde(default)]
    pub budget: Option<Budget>,
}

/// `from` and `to` are local wall-clock times; `from > to` wraps midnight (`22:00`–`08:00`).
/// `from == to` is refused as ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub from: LocalTime,
    pub to: LocalTime,
}

/// A local time of day to the minute, written `"HH:MM"` in JSON. It is parsed once, where it is
/// read (the policy decoder, or JSON deserialisation), and the planner only compares seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalTime(u32);

impl LocalTime {
    /// `hour:minute`; `None` outside 00:00–23:59.
    pub fn hm(hour: u32, minute: u32) -> Option<LocalTime> {
        (hour < 24 && minute < 60).then_some(LocalTime(hour * 3600 + minute * 60))
    }

    /// `"HH:MM"`, two digits each.
    pub fn parse(s: &str) -> Option<LocalTime> {
        let (h, m) = s.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        LocalTime::hm(h.parse().ok()?, m.parse().ok()?)
    }

    /// Seconds since midnight.
    pub fn seconds(self) -> u32 {
        self.0
    }
}

impl From<chrono::NaiveTime> for LocalTime {
    /// To the minute: quiet hours are written `HH:MM`.
    fn from(t: chrono::NaiveTime) -> LocalTime {
        use chrono::Timelike;
        LocalTime(t.num_seconds_from_midnight() / 60 * 60)
    }
}

impl std::fmt::Display for LocalTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 3600, self.0 % 3600 / 60)
    }
}

impl Serialize for LocalTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LocalTime, D::Error> {
        let s = String::deserialize(d)?;
        LocalTime::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a local time \"HH:MM\"")))
    }
}

/// At most `max` sends on the channel across all users in this plan. `per_secs` is the quota's
/// window; the plan's own sends count against it, so the caller passes as `max` what is left of the
/// current window (see `docs/planner.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max: u64,
    pub per_secs: u64,
}

/// A per-user limit. Either a count (`max` sends per rolling `window_secs`) or a minimum gap
/// (`min_gap_secs` between two sends), over the sends that match `channel` (a name, or `any` /
/// absent for every channel) and `category` (absent for every category).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CapRule {
    /// Shown in suppression reasons and explanations; defaults to a description of the rule.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub max: Option<u32>,
    #[serde(default)]
    pub window_secs: Option<u64>,
    #[serde(default)]
    pub min_gap_secs: Option<u64>,
}

/// Weights over the model's predicted outcomes. The value of a candidate is
/// `conversion·p(conv) + engagement·p(eng) + retention·retention_effect − reachability·p(loss)`:
/// a positive `reachability` weight is a *penalty* on the probability of losing the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    #[serde(default)]
    pub conversion: f64,
    #[serde(default)]
    pub engagement: f64,
    #[serde(default)]
    pub retention: f64,
    #[serde(default)]
    pub reachability: f64,
    /// Candidates worth less than this are not sent: sending nothing is a valid decision.
    #[serde(default)]
    pub min_value: f64,
    /// Plans over time rather than send by send (the policy's `value: longTerm`):
    /// - **pacing**: a count cap's slot goes only to a candidate worth at least what the slot
    ///   is worth to this user, the value that the best `max` of the candidates a window
    ///   brings them would clear (their recent arrivals, [`crate::UserInput::arrivals`], and
    ///   this plan's values of such candidates), instead of to whichever comes first;
    /// - **send time by value**: each candidate is scored at several moments of the next day
    ///   ([`crate::pacing::SLOTS`] of [`crate::pacing::SLOT_SECS`]) and placed in the one
    ///   predicted to be worth most, outside quiet hours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub long_term: bool,
}

/// Users are split into arms by the policy's salted rendezvous hash of their id
/// ([`tern_core::assign::rendezvous`]), unless their input names the arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub salt: String,
    /// Shares must add up to 1; arm `i` takes the points in `[Σ_{j<i} share_j, Σ_{j≤i} share_j)`.
    pub arms: Vec<Arm>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    pub name: String,
    pub share: f64,
    /// The objective's name; `default` when absent.
    #[serde(default)]
    pub objective: Option<String>,
    /// Replaces the top-level caps for this arm's users.
    #[serde(default)]
    pub caps: Option<Vec<CapRule>>,
    /// The classes this arm's `caps` do not hold back; the top-level `exempt_priorities` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempt_priorities: Option<Vec<String>>,
    /// Users in a holdout arm get nothing; the plan records what they would have got.
    #[serde(default)]
    pub holdout: bool,
}

/// Why a configuration was refused. Each message names the offending item.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("channel {0:?} is declared twice")]
    DuplicateChannel(String),
    #[error("channel name {0:?} is invalid (empty, or the reserved word \"any\")")]
    BadChannelName(String),
    #[error("the planner supports at most 32 channels")]
    TooManyChannels,
    #[error("channel {0:?}: quiet hours from and to are equal")]
    EmptyQuietHours(String),
    #[error("channel {0:?}: budget window must be positive")]
    BadBudget(String),
    #[error("cap rule {index} ({name}): {message}")]
    BadCapRule {
        index: usize,
        name: String,
        message: String,
    },
    #[error("a cap set holds at most 64 limits (a rule with both max and minGap holds two)")]
    TooManyCapRules,
    #[error("objective {name:?}: {message}")]
    BadObjective { name: String, message: String },
    #[error("no objective named \"default\"")]
    NoDefaultObjective,
    #[error("experiment {experiment:?}: {message}")]
    BadExperiment { experiment: String, message: String },
    #[error("withhold must be in [0, 0.5], got {0}")]
    BadWithhold(f64),
    #[error("exploration must be in [0, 1), got {0}")]
    BadExploration(f64),
    #[error("horizon must be between 1 second and 366 days")]
    BadHorizon,
    #[error("send window must be between 60 and 3600 seconds, got {0}")]
    BadSendWindow(u64),
}

/// A validated, index-based form of [`PlannerConfig`]: what the hot path reads.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub channels: Vec<String>,
    /// Quiet hours per channel as local seconds of day `[from, to)`, possibly wrapping.
    pub quiet: Vec<Option<(u32, u32)>>,
    pub budgets: Vec<Option<u64>>,
    /// What each class bypasses; classes not listed bypass nothing.
    pub bypass: BTreeMap<String, Bypass>,
    pub arms: Vec<CompiledArm>,
    pub salt: Option<String>,
    /// Arm shares, same order as `arms`.
    pub shares: Vec<f64>,
    pub exploration: f64,
    pub withhold: f64,
    pub multi_channel: bool,
    pub horizon: i64,
    pub window: i64,
    /// Every distinct local second of day at which some channel's quiet hours start or end:
    /// the boundaries at which the time pieces split besides whole local hours.
    pub quiet_bounds: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledArm {
    pub name: String,
    pub objective: Objective,
    pub rules: Vec<CompiledRule>,
    /// The classes these rules do not hold back.
    pub exempt: Vec<String>,
    pub holdout: bool,
    /// Per channel: the rules (bits) whose channel is that one or any.
    pub channel_masks: Vec<u64>,
    /// The rules (bits) that match every category.
    pub any_category: u64,
}

impl CompiledArm {
    fn new(
        name: String,
        objective: Objective,
        rules: Vec<CompiledRule>,
        exempt: Vec<String>,
        holdout: bool,
        channels: usize,
    ) -> Self {
        let channel_masks = (0..channels)
            .map(|c| {
                rules.iter().enumerate().fold(0u64, |m, (i, r)| {
                    if r.channel.is_none_or(|rc| rc as usize == c) {
                        m | 1 << i
                    } else {
                        m
                    }
                })
            })
            .collect();
        let any_category =
            rules.iter().enumerate().fold(
                0u64,
                |m, (i, r)| if r.category.is_none() { m | 1 << i } else { m },
            );
        CompiledArm {
            name,
            objective,
            rules,
            exempt,
            holdout,
            channel_masks,
            any_category,
        }
    }

    /// The rules that count a send on `channel` (None: an unknown channel) in `category`.
    pub fn mask(&self, channel: Option<u16>, category: &str) -> u64 {
        let mut m = match channel {
            Some(c) => self.channel_masks.get(c as usize).copied().unwrap_or(0),
            None => self.rules.iter().enumerate().fold(0u64, |m, (i, r)| {
                if r.channel.is_none() {
                    m | 1 << i
                } else {
                    m
                }
            }),
        };
        let mut cat = self.any_category;
        for (i, r) in self.rules.iter().enumerate() {
            if r.category.as_deref() == Some(category) {
                cat |= 1 << i;
            }
        }
        m &= cat;
        m
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub label: String,
    /// `None`: any channel.
    pub channel: Option<u16>,
    pub category: Option<String>,
    pub limit: Limit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Max { max: u32, window: i64 },
    MinGap { gap: i64 },
}

impl CapRule {
    /// A readable description: `push max 2 per 86400s`, `any min gap 14400s`,
    /// `email max 2 per 86400s, min gap 10800s`.
    pub fn describe(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let mut s = self.channel.clone().unwrap_or_else(|| ANY_CHANNEL.into());
        if let Some(c) = &self.category {
            s.push('/');
            s.push_str(c);
        }
        match (self.max, self.window_secs, self.min_gap_secs) {
            (Some(m), Some(w), Some(g)) => format!("{s} max {m} per {w}s, min gap {g}s"),
            (_, _, Some(g)) => format!("{s} min gap {g}s"),
            (Some(m), Some(w), _) => format!("{s} max {m} per {w}s"),
            _ => s,
        }
    }
}

impl PlannerConfig {
    /// Validates the configuration and resolves names to indices.
    pub(crate) fn compile(&self) -> Result<Compiled, ConfigError> {
        if self.channels.len() > limits::MAX_CHANNELS {
            return Err(ConfigError::TooManyChannels);
        }
        let mut channels = Vec::new();
        let mut quiet = Vec::new();
        let mut budgets = Vec::new();
        let mut quiet_bounds = Vec::new();
        for ch in &self.channels {
            if ch.name.is_empty() || ch.name == ANY_CHANNEL {
                return Err(ConfigError::BadChannelName(ch.name.clone()));
            }
            if channels.contains(&ch.name) {
                return Err(ConfigError::DuplicateChannel(ch.name.clone()));
            }
            channels.push(ch.name.clone());
            let q = match &ch.quiet_hours {
                None => None,
                Some(q) => {
                    let (from, to) = (q.from.seconds(), q.to.seconds());
                    if from == to {
                        return Err(ConfigError::EmptyQuietHours(ch.name.clone()));
                    }
                    quiet_bounds.extend([from, to]);
                    Some((from, to))
                }
            };
            quiet.push(q);
            budgets.push(match &ch.budget {
                None => None,
                Some(b) if b.per_secs == 0 => return Err(ConfigError::BadBudget(ch.name.clone())),
                Some(b) => Some(b.max),
            });
        }
        quiet_bounds.sort_unstable();
        quiet_bounds.dedup();

        if limits::check_exploration(self.exploration).is_err() {
            return Err(ConfigError::BadExploration(self.exploration));
        }
        if limits::check_withhold(self.withhold).is_err() {
            return Err(ConfigError::BadWithhold(self.withhold));
        }
        if limits::check_horizon(self.horizon_secs).is_err() {
            return Err(ConfigError::BadHorizon);
        }
        if !(60..=3600).contains(&self.send_window_secs) {
            return Err(ConfigError::BadSendWindow(self.send_window_secs));
        }
        for (name, o) in &self.objectives {
            let finite = [
                o.conversion,
                o.engagement,
                o.retention,
                o.reachability,
                o.min_value,
            ]
            .iter()
            .all(|x| x.is_finite());
            if !finite {
                return Err(ConfigError::BadObjective {
                    name: name.clone(),
                    message: "every weight and minValue must be a finite number".into(),
                });
            }
        }
        let default = self
            .objectives
            .get("default")
            .ok_or(ConfigError::NoDefaultObjective)?;
        let default_rules = compile_rules(&self.caps, &channels)?;

        let (arms, shares, salt) = match &self.experiment {
            None => (
                vec![CompiledArm::new(
                    "default".into(),
                    default.clone(),
                    default_rules,
                    self.exempt_priorities.clone(),
                    false,
                    channels.len(),
                )],
                vec![1.0],
                None,
            ),
            Some(exp) => {
                let bad = |message: String| ConfigError::BadExperiment {
                    experiment: exp.name.clone(),
                    message,
                };
                if exp.arms.is_empty() {
                    return Err(bad("an experiment needs at least one arm".into()));
                }
                let mut arms = Vec::new();
                let mut shares = Vec::new();
                let mut total = 0.0;
                for arm in &exp.arms {
                    if !(arm.share.is_finite() && arm.share >= 0.0) {
                        return Err(bad(format!("arm {:?}: share must be ≥ 0", arm.name)));
                    }
                    if arms.iter().any(|a: &CompiledArm| a.name == arm.name) {
                        return Err(bad(format!("arm {:?} is declared twice", arm.name)));
                    }
                    let objective_name = arm.objective.as_deref().unwrap_or("default");
                    let objective = self.objectives.get(objective_name).ok_or_else(|| {
                        bad(format!(
                            "arm {:?}: no objective named {objective_name:?}",
                            arm.name
                        ))
                    })?;
                    let rules = match &arm.caps {
                        Some(caps) => compile_rules(caps, &channels)?,
                        None => default_rules.clone(),
                    };
                    let exempt = arm
                        .exempt_priorities
                        .clone()
                        .unwrap_or_else(|| self.exempt_priorities.clone());
                    total += arm.share;
                    shares.push(arm.share);
                    arms.push(CompiledArm::new(
                        arm.name.clone(),
                        objective.clone(),
                        rules,
                        exempt,
                        arm.holdout,
                        channels.len(),
                    ));
                }
                if (total - 1.0).abs() > 1e-9 {
                    return Err(bad(format!("arm shares add up to {total}, not 1")));
                }
                (arms, shares, Some(exp.salt.clone()))
            }
        };

        Ok(Compiled {
            channels,
            quiet,
            budgets,
            bypass: self
                .priorities
                .iter()
                .filter(|(_, b)| b.any())
                .map(|(k, b)| (k.clone(), *b))
                .collect(),
            arms,
            salt,
            shares,
            exploration: self.exploration,
            withhold: self.withhold,
            multi_channel: self.multi_channel,
            horizon: self.horizon_secs as i64,
            window: self.send_window_secs as i64,
            quiet_bounds,
        })
    }
}

/// Compiles one cap set. Each rule is validated by [`tern_core::limits::cap_limits`], the same
/// function `tern policy check` calls; a rule with both a count and a gap becomes two limits
/// under one label, and both hold.
fn compile_rules(rules: &[CapRule], channels: &[String]) -> Result<Vec<CompiledRule>, ConfigError> {
    let mut compiled = Vec::new();
    for (index, r) in rules.iter().enumerate() {
        let bad = |message: String| ConfigError::BadCapRule {
            index,
            name: r.describe(),
            message,
        };
        let channel = match r.channel.as_deref() {
            None | Some(ANY_CHANNEL) => None,
            Some(name) => Some(
                channels
                    .iter()
                    .position(|c| c == name)
                    .ok_or_else(|| bad("names a channel that is not declared".into()))?
                    as u16,
            ),
        };
        let limits = limits::cap_limits(r.max.map(u64::from), r.window_secs, r.min_gap_secs)
            .map_err(|e| bad(e.to_string()))?;
        let rule = |limit| CompiledRule {
            label: r.describe(),
            channel,
            category: r.category.clone(),
            limit,
        };
        if let Some((max, window)) = limits.count {
            compiled.push(rule(Limit::Max {
                max,
                window: window as i64,
            }));
        }
        if let Some(gap) = limits.min_gap_secs {
            compiled.push(rule(Limit::MinGap { gap: gap as i64 }));
        }
    }
    if compiled.len() > limits::MAX_CAP_LIMITS {
        return Err(ConfigError::TooManyCapRules);
    }
    Ok(compiled)
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
