//! The planner's input and output: plain data, serde-(de)serializable.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One user as the planner sees it: where they are, when they respond, what they allow, what they
/// were sent, and what could be sent to them now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub user_id: String,
    /// An IANA zone name such as `Europe/Stockholm`.
    pub timezone: String,
    /// The experiment arm the caller assigned, by name. The daemon and `tern plan` set it from the
    /// policy bundle's assignment (experiments, traffic and exclusive layers), which is the one
    /// source of truth; when absent, the planner places the user by the same rule,
    /// [`tern_core::assign::rendezvous`] over the configured arms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// 24 non-negative weights, one per local hour (0 = midnight to 1 am): how likely this user is
    /// to respond at that hour. Empty means every hour is as good as any other.
    #[serde(default)]
    pub send_time_profile: Vec<f64>,
    #[serde(default)]
    pub opted_out_channels: Vec<String>,
    /// Channels with no working address (no push token, bounced email).
    #[serde(default)]
    pub unreachable_channels: Vec<String>,
    #[serde(default)]
    pub opted_out_categories: Vec<String>,
    /// Past sends, plus items currently leased (counted as sent at their send time), in any order.
    #[serde(default)]
    pub history: Vec<PastSend>,
    #[serde(default)]
    pub opportunities: Vec<OpportunityInput>,
    /// What the user does in the product, independent of messages. The planner itself never
    /// reads it; predictors do (tenure and recent activity are model features).
    #[serde(default, skip_serializing_if = "Activity::is_unknown")]
    pub activity: Activity,
    /// How many opportunities of each kind arrived for the user lately, per day: what pacing
    /// (an objective with [`long_term`](crate::Objective::long_term)) reads to expect how many
    /// candidates each cap window will bring. Empty means unknown: no pacing for the user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrivals: Vec<Arrival>,
}

/// A kind of opportunity (category and channels) and how often it arrived for one user lately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrival {
    pub category: String,
    pub channels: Vec<String>,
    /// Opportunities of this kind per day (finite and ≥ 0; anything else is ignored).
    pub per_day: f64,
}

/// A user's activity in the product, as of the plan: facts a predictor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// When the user first appeared; tenure is measured from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_at: Option<DateTime<Utc>>,
    /// The end of the last day on which the user was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<DateTime<Utc>>,
    /// Days with any activity among the 28 before the plan.
    #[serde(default)]
    pub active_days_28d: u32,
}

impl Activity {
    /// Nothing is known (what an input without the field means).
    pub fn is_unknown(&self) -> bool {
        *self == Activity::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PastSend {
    pub channel: String,
    pub category: String,
    #[serde(default)]
    pub priority: String,
    pub sent_at: DateTime<Utc>,
    /// When the message was first opened or clicked, if it was (fatigue features read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpportunityInput {
    pub id: i64,
    pub category: String,
    pub priority: String,
    pub channels: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub template: String,
    /// Predictions per channel, parallel to `channels`, read by [`InlineScores`]. A missing entry
    /// counts as all zeros.
    #[serde(default)]
    pub scores: Vec<Scores>,
    /// The value signals the upstream system submitted with the opportunity (e.g. `relevance`),
    /// by name. The planner does not read them; the model does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<String, f64>,
}

/// The model's predictions for one candidate (opportunity × channel).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    /// Probability that the message leads to a conversion.
    #[serde(default)]
    pub conversion: f64,
    /// Probability of an open or click.
    #[serde(default)]
    pub engagement: f64,
    /// Predicted effect on long-term retention (may be negative).
    #[serde(default)]
    pub retention: f64,
    /// Probability that the user is lost on this channel (unsubscribes, disables push, complains).
    #[serde(default)]
    pub reachability_loss: f64,
}

/// Where predictions come from. Tests and benchmarks feed fixed ones; the model implements this.
pub trait Predictor: Sync {
    /// Pushes one [`Scores`] per candidate of `user` onto `out` (which arrives empty): opportunity
    /// by opportunity in input order, and within one, channel by channel as listed in its
    /// `channels`. Missing trailing entries count as all zeros.
    fn predict(&self, user: &UserInput, out: &mut Vec<Scores>);

    /// Scores several users at once: exactly one [`Scores`] per candidate, user after user, in
    /// the order of [`predict`](Predictor::predict). The planner calls this (once per plan, on
    /// chunks of users, however many budget passes follow) so that a model can score a few
    /// thousand rows per call instead of one user's dozen. The default asks user by user.
    fn predict_many(&self, users: &[&UserInput], out: &mut Vec<Scores>) {
        self.predict_many_at(users, None, out)
    }

    /// [`predict_many`](Predictor::predict_many), as if each candidate were sent at `at`
    /// instead of at the planning instant (`None`). An objective with
    /// [`long_term`](crate::Objective::long_term) asks for several times ahead, to send each
    /// candidate when it is predicted to be worth most. A predictor that cannot tell one
    /// moment from another returns the same scores, and every candidate then goes at the
    /// earliest slot. The default does exactly that.
    fn predict_many_at(
        &self,
        users: &[&UserInput],
        at: Option<DateTime<Utc>>,
        out: &mut Vec<Scores>,
    ) {
        let _ = at;
        let mut one = Vec::new();
        for user in users {
            one.clear();
            self.predict(user, &mut one);
            one.resize(candidates(user), Scores::default());
            out.extend_from_slice(&one);
        }
    }
}

/// Number of candidates (opportunity × channel) of one user.
pub fn candidates(user: &UserInput) -> usize {
    user.opportunities.iter().map(|o| o.channels.len()).sum()
}

/// Reads the predictions carried in [`OpportunityInput::scores`].
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineScores;

impl Predictor for InlineScores {
    fn predict(&self, user: &UserInput, out: &mut Vec<Scores>) {
        for opp in &user.opportunities {
            for i in 0..opp.channels.len() {
                out.push(opp.scores.get(i).copied().unwrap_or_default());
            }
        }
    }
}

/// A chosen candidate: send `opportunity` on `channel` within `[send_after, send_before)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub opportunity: i64,
    /// Index into [`Plan::channels`].
    pub channel: u16,
    pub send_after: DateTime<Utc>,
    pub send_before: DateTime<Utc>,
    /// The weighted sum of predicted outcomes under the user's objective.
    pub value: f64,
    /// `value` minus the channel's budget price.
    pub margin: f64,
    /// The exact probability with which this candidate was chosen at its decision, in (0, 1].
    pub propensity: f64,
    /// Whether the exploration draw (rather than the greedy rule) picked it.
    pub explored: bool,
    /// Whether its priority class is exempt from the arm's caps and minimum gaps (the cap set
    /// exempts it, or the class bypasses caps).
    pub exempt: bool,
    /// Whether its priority class bypasses budgets: not priced, and dropped last by the exact fit.
    #[serde(default)]
    pub unpriced: bool,
    pub scores: Scores,
}

/// A candidate (or a whole opportunity, when `channel` is `None`) that was not chosen, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    pub opportunity: i64,
    pub channel: Option<u16>,
    pub reason: Reason,
    /// The candidate's value, where it was computed.
    pub value: Option<f64>,
    /// For holdout users: what the policy would have sent.
    pub counterfactual: Option<Box<Choice>>,
}

/// Why a candidate was not chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The opportunity expired before the plan's `now`.
    Expired,
    /// It could only be placed after the plan's horizon; a later plan will consider it.
    Horizon,
    /// Every remaining moment before it expires is inside the channel's quiet hours.
    QuietHours,
    /// The user opted out of the channel.
    OptedOut,
    /// The user opted out of the opportunity's category (applies to every channel).
    OptedOutCategory,
    /// The user has no working address on the channel.
    Unreachable,
    /// The channel is not in the configuration.
    UnknownChannel,
    /// The user's time zone or send-time profile is malformed (see [`UserPlan::error`]).
    BadInput,
    /// Its value is below the objective's `min_value`.
    BelowMinValue,
    /// A count cap (rule index into the arm's rules) would be exceeded: `count` sends (this one
    /// included) in the fullest window, over `max`.
    Cap { rule: u16, count: u32, max: u32 },
    /// A minimum gap (rule index) to another send would be violated.
    MinGap { rule: u16 },
    /// Its value minus the channel's budget price is below `min_value`, or the budget's final
    /// exact fit dropped it.
    Budget { price: f64 },
    /// Pacing (an objective with [`long_term`](crate::Objective::long_term)): its value is
    /// below what a slot of one of its count caps is worth to this user, given how many
    /// candidates each window of that cap brings them: the slot is kept for a better one.
    Paced { threshold: f64 },
    /// The same opportunity is already chosen on another channel.
    Duplicate { chosen_channel: u16 },
    /// The user is in a holdout arm; `counterfactual` says what would have been sent.
    Holdout,
    /// Withheld at random (the policy's `withhold` share) so that the model sees what happens
    /// without a send; `counterfactual` says what would have been sent, with the probability
    /// of withholding it as its propensity.
    Withheld,
}

impl Reason {
    /// A stable lowercase name, used in stats and in the JSON Lines output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::Horizon => "horizon",
            Reason::QuietHours => "quiet_hours",
            Reason::OptedOut => "opted_out",
            Reason::OptedOutCategory => "opted_out_category",
            Reason::Unreachable => "unreachable",
            Reason::UnknownChannel => "unknown_channel",
            Reason::BadInput => "bad_input",
            Reason::BelowMinValue => "below_min_value",
            Reason::Cap { .. } => "cap",
            Reason::MinGap { .. } => "min_gap",
            Reason::Budget { .. } => "budget",
            Reason::Paced { .. } => "paced",
            Reason::Duplicate { .. } => "duplicate",
            Reason::Holdout => "holdout",
            Reason::Withheld => "withheld",
        }
    }
}

/// What the plan decided for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPlan {
    pub user_id: String,
    /// The experiment arm (`default` without an experiment).
    pub arm: String,
    /// Sorted by send time, then opportunity, then channel.
    pub choices: Vec<Choice>,
    /// Sorted by opportunity, then channel (opportunity-wide entries first).
    pub suppressions: Vec<Suppression>,
    /// Why the user's input could not be used, when every candidate is suppressed as `bad_input`.
    pub error: Option<String>,
}

/// The result of one planning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Channel names; [`Choice::channel`] and friends index into this.
    pub channels: Vec<String>,
    /// One entry per input user, sorted by user id (byte order).
    pub users: Vec<UserPlan>,
    pub stats: Stats,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stats {
    pub users: u64,
    /// Opportunity × listed channel pairs.
    pub candidates: u64,
    /// Chosen sends per channel name (holdout counterfactuals excluded).
    pub chosen: BTreeMap<String, u64>,
    /// Suppressions per reason name.
    pub suppressed: BTreeMap<String, u64>,
    /// The final budget price per channel name (0 where the budget does not bind).
    pub prices: BTreeMap<String, f64>,
    /// How many full selection passes the budget search ran (1 when no budget binds).
    pub passes: u32,
    /// Choices dropped by the final exact fit, per channel name.
    pub budget_dropped: BTreeMap<String, u64>,
}

impl Plan {
    /// The name of channel index `i`.
    pub fn channel_name(&self, i: u16) -> &str {
        self.channels.get(i as usize).map_or("?", String::as_str)
    }

    /// The plan of one user, if the input had it.
    pub fn user(&self, user_id: &str) -> Option<&UserPlan> {
        self.users
            .binary_search_by(|u| u.user_id.as_str().cmp(user_id))
            .ok()
            .map(|i| &self.users[i])
    }
}
