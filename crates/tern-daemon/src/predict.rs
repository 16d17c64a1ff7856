//! The model behind the planner's [`Predictor`] trait: candidates become feature rows (built by
//! [`crate::features`], as in training) and are scored in batches of a few thousand rows.
//!
//! # Value modes
//! What the planner weighs depends on the objective's `value` ([`ValueMode`]):
//! - `outcome`: each head's probability for the send, with retention taken relative to the
//!   average send of the training data.
//! - `incremental`: each head's probability for the send minus its probability for the same
//!   opportunity, at the same moment, not sent. The outcomes only a message can have (an open,
//!   a conversion through it, a lost channel) have probability 0 without it, by definition;
//!   retention, which happens either way, is scored for the same opportunity not sent
//!   ([`NO_SEND`]) by the one network that learned from sends and from withheld would-be sends.
//!   Not sending is worth exactly zero.
//!   A model that saw no withheld send has learned nothing about "no send"; it is scored as in
//!   `outcome` mode rather than trusted with a difference it cannot know.
//! - `longTerm`: conversion, engagement and reachability as in `incremental`; retention is
//!   what the send leaves behind in the user's future, read from the model's value function
//!   ([`tern_model::ValueFunction`], fitted on logged user-day transitions): its conservative
//!   effect (the state after the send, in expectation over its open and its loss of the channel,
//!   against the state without it, less one spread across bootstrap fits), in active days per
//!   week of the discounted future. A model without a value function scores these users as
//!   `incremental`. The planner adds pacing and send time by value for these users
//!   (`Objective::long_term`), scoring them at several moments through
//!   [`Predictor::predict_many_at`]. The activity head's difference (active days gained, sent
//!   against not sent) is not weighed: measured against the simulator's truth it ranked
//!   candidates the wrong way round (see docs/model.md), so it is only read as a diagnostic
//!   ([`ModelPredictor::weighing_activity`]).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tern_model::{ChannelHistory, Head, Marginal, Model, UserContext, UserState, HEADS, NO_SEND};
use tern_planner::{candidates, Predictor, Scores, UserInput};
use tern_policy::ValueMode;

use crate::features::{self, Candidate, Past};

/// [`ModelPredictor::weighing_activity`] reads retention as active days gained per week: the
/// activity head's share of active days, times this.
const DAYS_PER_WEEK: f64 = 7.0;

/// Scores candidates with a trained model, as if each were sent at the planning instant.
///
/// The planner places a message in time after scoring, so the model sees the candidate at `now`
/// (its fatigue, its local hour); the planner's send-time profile then chooses the hour.
pub struct ModelPredictor {
    model: Arc<Model>,
    now: DateTime<Utc>,
    /// The retention head predicts the probability that the user is still active at the horizon
    /// after this message. The planner weighs an *effect*, so the rate over the training data is
    /// subtracted: a message that predicts better retention than the average send counts for
    /// it, one that predicts worse (the fatigued user) counts against it.
    retention_base_rate: f64,
    /// Per head: whether training saw any label for it.
    trusted: [bool; HEADS],
    /// The value mode of users not listed in `modes`.
    mode: ValueMode,
    /// Users whose objective (their experiment arm's) values sends otherwise.
    modes: HashMap<String, ValueMode>,
    /// Retention read from the activity head (see [`ModelPredictor::weighing_activity`]).
    activity: bool,
}

impl ModelPredictor {
    pub fn new(model: Arc<Model>, now: DateTime<Utc>) -> ModelPredictor {
        let retention_base_rate = model
            .training
            .as_ref()
            .map_or(0.0, |t| t.train_base_rates[Head::Retention.index()]);
        // Artifacts from before label counts were kept say nothing: trust every head, as then.
        let trusted = match model.training.as_ref().map(|t| t.train_labels) {
            Some(counts) if counts.iter().any(|n| *n > 0) => counts.map(|n| n > 0),
            _ => [true; HEADS],
        };
        ModelPredictor {
            model,
            now,
            retention_base_rate,
            trusted,
            mode: ValueMode::Outcome,
            modes: HashMap::new(),
            activity: false,
        }
    }

    /// For diagnostics (the demo's uplift table): in a causal mode, retention becomes the
    /// activity head's difference, sent against not sent, in active days gained per week. No
    /// objective weighs it: at the demo's scale it ranked candidates against their true effect.
    pub fn weighing_activity(mut self) -> Self {
        self.activity = true;
        self
    }

    /// Values sends in `mode`, or per user where `modes` names one (users in an experiment arm
    /// whose objective says otherwise). `incremental` needs a model that learned from withheld
    /// sends; with any other it stays `outcome` (see the module docs).
    pub fn with_modes(mut self, mode: ValueMode, modes: HashMap<String, ValueMode>) -> Self {
        if self.can_tell_effects() {
            self.mode = mode;
            self.modes = modes;
        }
        self
    }

    /// Whether the model learned from withheld sends, and so can score "no send".
    pub fn can_tell_effects(&self) -> bool {
        self.model
            .training
            .as_ref()
            .is_some_and(|t| t.untreated_rows > 0)
    }

    fn mode_of(&self, user: &str) -> ValueMode {
        self.modes.get(user).copied().unwrap_or(self.mode)
    }
}

impl ModelPredictor {
    /// The same model predicting each outcome's probability as such, retention included (no
    /// base rate subtracted): what off-policy evaluation's direct method compares with the
    /// observed outcomes.
    pub fn probabilities(model: Arc<Model>, now: DateTime<Utc>) -> ModelPredictor {
        ModelPredictor {
            retention_base_rate: 0.0,
            ..ModelPredictor::new(model, now)
        }
    }
}

impl Predictor for ModelPredictor {
    fn predict(&self, user: &UserInput, out: &mut Vec<Scores>) {
        self.predict_many(&[user], out);
    }

    fn predict_many(&self, users: &[&UserInput], out: &mut Vec<Scores>) {
        self.predict_many_at(users, None, out)
    }

    /// Scores each candidate as if sent at `at` (the planning instant when `None`): the local
    /// hour, weekday, ages and fatigue windows move with it; the history stays as it is now.
    fn predict_many_at(
        &self,
        users: &[&UserInput],
        at: Option<DateTime<Utc>>,
        out: &mut Vec<Scores>,
    ) {
        let now = at.unwrap_or(self.now);
        let spec = self.model.spec();
        let channels = &spec.declaration().channels;
        let modes: Vec<ValueMode> = users.iter().map(|u| self.mode_of(&u.user_id)).collect();
        let incremental: Vec<bool> = modes.iter().map(|m| m.is_causal()).collect();
        let total: usize = users.iter().map(|u| candidates(u)).sum();
        let untreated: usize = users
            .iter()
            .zip(&incremental)
            .filter(|(_, i)| **i)
            .map(|(u, _)| u.opportunities.len())
            .sum();
        let mut rows = spec.matrix(total + untreated);
        let mut history = Vec::new();
        let mut encoded = true;
        for (user, incremental) in users.iter().zip(&incremental) {
            for_each_action(channels, user, now, *incremental, &mut history, |ctx| {
                encoded &= rows.push(spec, ctx).is_ok();
            });
        }
        let mut p = vec![[0.0f32; HEADS]; rows.rows()];
        if !encoded || self.model.predict(&rows, &mut p).is_err() {
            // Unreachable with the model's own spec; zeros make every candidate worthless
            // rather than acting on garbage.
            out.resize(out.len() + total, Scores::default());
            return;
        }
        // A head that saw no label in training has learned nothing: the prior speaks for it.
        let mut rows = p.iter();
        // Per long-term user: what a send does to their state, per channel of the value function.
        let (mut lt_history, mut lt_lost, mut lt_marginals) = (Vec::new(), Vec::new(), Vec::new());
        for ((user, incremental), mode) in users.iter().zip(&incremental).zip(&modes) {
            let long_term = self
                .model
                .value
                .as_ref()
                .filter(|_| *mode == ValueMode::LongTerm);
            if let Some(v) = long_term {
                let user = state_of(&v.channels, user, now, &mut lt_history, &mut lt_lost);
                let state = UserState {
                    user,
                    history: &lt_history,
                    lost: &lt_lost,
                };
                lt_marginals.clear();
                lt_marginals.extend(v.channels.iter().map(|c| v.marginal(&state, c)));
            }
            for o in &user.opportunities {
                let prior = Prior::scores(&o.signals);
                let sends: Vec<&[f32; HEADS]> = rows.by_ref().take(o.channels.len()).collect();
                // What the same opportunity, not sent, would have come to. An open, a
                // conversion through the message and a lost channel cannot happen without the
                // message: their probability without a send is 0 by definition, not an estimate
                // to learn from the few withheld rows. Retention happens either way, and is the
                // effect the network learned.
                let baseline: [f64; HEADS] = if *incremental {
                    let none = rows.next().expect("one no-send row per opportunity");
                    let mut b = [0.0; HEADS];
                    for h in [Head::Retention, Head::Activity] {
                        b[h.index()] = f64::from(none[h.index()]);
                    }
                    b
                } else {
                    let mut b = [0.0; HEADS];
                    b[Head::Retention.index()] = self.retention_base_rate;
                    b
                };
                for (p, channel) in sends.into_iter().zip(&o.channels) {
                    let head = |h: Head, fallback: f64| {
                        if self.trusted[h.index()] {
                            f64::from(p[h.index()]) - baseline[h.index()]
                        } else {
                            fallback
                        }
                    };
                    let retention = if let Some(v) = long_term {
                        // What the send leaves behind, in active days per week of the
                        // discounted future: the value function's conservative effect.
                        let effect = v
                            .channels
                            .iter()
                            .position(|c| c == channel)
                            .and_then(|c| lt_marginals[c].as_ref())
                            .map_or(0.0, |m: &Marginal| {
                                m.effect(
                                    f64::from(p[Head::Engagement.index()]),
                                    f64::from(p[Head::ReachabilityLoss.index()]),
                                )
                                .conservative()
                            });
                        DAYS_PER_WEEK * (1.0 - v.config.gamma) * effect
                    } else if self.activity && *incremental {
                        // The diagnostic reading: the activity head's share of active days
                        // moved by the send, as active days gained per week.
                        DAYS_PER_WEEK * head(Head::Activity, prior.retention / DAYS_PER_WEEK)
                    } else {
                        head(Head::Retention, prior.retention)
                    };
                    out.push(Scores {
                        conversion: head(Head::Conversion, prior.conversion),
                        engagement: head(Head::Engagement, prior.engagement),
                        retention,
                        reachability_loss: head(Head::ReachabilityLoss, prior.reachability_loss),
                    });
                }
            }
        }
    }
}

/// The user's earlier sends as the fatigue features read them.
fn past_of(user: &UserInput) -> Vec<Past<'_>> {
    user.history
        .iter()
        .map(|p| Past {
            channel: &p.channel,
            sent_at: p.sent_at,
            opened_at: p.opened_at,
        })
        .collect()
}

/// A user's state at `now` as the value function reads it, into reused buffers: fatigue per
/// channel and activity as the model's features have them, and every channel the user cannot be
/// reached on any more.
fn state_of<'c>(
    channels: &'c [String],
    user: &UserInput,
    now: DateTime<Utc>,
    history: &mut Vec<ChannelHistory<'c>>,
    lost: &mut Vec<String>,
) -> UserContext {
    features::channel_history(channels, &past_of(user), now, history);
    lost.clear();
    lost.extend(
        user.opted_out_channels
            .iter()
            .chain(&user.unreachable_channels)
            .cloned(),
    );
    features::user_context(&user.activity, features::zone(Some(&user.timezone)), now)
}

/// Builds the model's context of each candidate of `user` (opportunity by opportunity, channel
/// by channel, as predictors emit scores) as if sent at `now`, and hands it to `f`: the one
/// place where a planner input becomes model features, for scoring and for training on
/// replayed decisions alike.
pub fn for_each_candidate<'h>(
    channels: &'h [String],
    user: &UserInput,
    now: DateTime<Utc>,
    history: &mut Vec<tern_model::ChannelHistory<'h>>,
    f: impl FnMut(&tern_model::CandidateContext<'_>),
) {
    for_each_action(channels, user, now, false, history, f)
}

/// [`for_each_candidate`], and with `untreated`, after each opportunity's channels the same
/// opportunity not sent ([`NO_SEND`]).
pub fn for_each_action<'h>(
    channels: &'h [String],
    user: &UserInput,
    now: DateTime<Utc>,
    untreated: bool,
    history: &mut Vec<tern_model::ChannelHistory<'h>>,
    mut f: impl FnMut(&tern_model::CandidateContext<'_>),
) {
    let tz = features::zone(Some(&user.timezone));
    features::channel_history(channels, &past_of(user), now, history);
    let context = features::user_context(&user.activity, tz, now);
    for o in &user.opportunities {
        let actions = o
            .channels
            .iter()
            .map(String::as_str)
            .chain(untreated.then_some(NO_SEND));
        for channel in actions {
            let ctx = features::context(
                &Candidate {
                    channel,
                    category: &o.category,
                    template: &o.template,
                    signals: &o.signals,
                    created_at: o.created_at,
                    expires_at: o.expires_at,
                },
                context,
                history,
                tz,
                now,
            );
            f(&ctx);
        }
    }
}

/// Predictions before any model is trained: a cautious prior, so that a new deployment sends a
/// little (and so collects the outcomes the first model learns from) rather than nothing. The
/// upstream `relevance` signal, when present and in [0, 1], raises the expected engagement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prior;

impl Prior {
    /// The prior's scores for one opportunity (the same on every channel).
    pub fn scores(signals: &std::collections::BTreeMap<String, f64>) -> Scores {
        let relevance = signals
            .get("relevance")
            .copied()
            .filter(|r| r.is_finite())
            .map_or(0.25, |r| r.clamp(0.0, 1.0));
        Scores {
            conversion: 0.02 * relevance,
            engagement: 0.05 + 0.25 * relevance,
            retention: 0.0,
            reachability_loss: 0.002,
        }
    }
}

impl Predictor for Prior {
    fn predict(&self, user: &UserInput, out: &mut Vec<Scores>) {
        for o in &user.opportunities {
            let s = Prior::scores(&o.signals);
            for _ in &o.channels {
                out.push(s);
            }
        }
    }
}
