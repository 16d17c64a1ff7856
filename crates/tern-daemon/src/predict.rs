//! The model behind the planner's [`Predictor`] trait: candidates become feature rows (built by
//! [`crate::features`], as in training) and are scored in batches of a few thousand rows.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tern_model::{Head, Model, HEADS};
use tern_planner::{candidates, Predictor, Scores, UserInput};

use crate::features::{self, Candidate, Past};

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
        }
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
        let spec = self.model.spec();
        let channels = &spec.declaration().channels;
        let total: usize = users.iter().map(|u| candidates(u)).sum();
        let mut rows = spec.matrix(total);
        let mut history = Vec::new();
        let mut encoded = true;
        for user in users {
            for_each_candidate(channels, user, self.now, &mut history, |ctx| {
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
        for user in users {
            for o in &user.opportunities {
                let prior = Prior::scores(&o.signals);
                for _ in &o.channels {
                    let p = rows.next().expect("one prediction per candidate");
                    let head = |h: Head, fallback: f64, shift: f64| {
                        if self.trusted[h.index()] {
                            f64::from(p[h.index()]) - shift
                        } else {
                            fallback
                        }
                    };
                    out.push(Scores {
                        conversion: head(Head::Conversion, prior.conversion, 0.0),
                        engagement: head(Head::Engagement, prior.engagement, 0.0),
                        retention: head(Head::Retention, prior.retention, self.retention_base_rate),
                        reachability_loss: head(
                            Head::ReachabilityLoss,
                            prior.reachability_loss,
                            0.0,
                        ),
                    });
                }
            }
        }
    }
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
    mut f: impl FnMut(&tern_model::CandidateContext<'_>),
) {
    let tz = features::zone(Some(&user.timezone));
    let past: Vec<Past<'_>> = user
        .history
        .iter()
        .map(|p| Past {
            channel: &p.channel,
            sent_at: p.sent_at,
            opened_at: p.opened_at,
        })
        .collect();
    features::channel_history(channels, &past, now, history);
    let context = features::user_context(&user.activity, tz, now);
    for o in &user.opportunities {
        for channel in &o.channels {
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
