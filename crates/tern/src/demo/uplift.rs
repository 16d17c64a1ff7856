//! How well a run's model knows the effect of a send: its predicted uplift against the
//! simulator's true uplift ([`World::uplift`]), on every candidate open at the end of the run.
//!
//! Two scores, each for retention alone and for the objective's whole value:
//! - **Spearman's rank correlation** of predicted against true uplift: does the model order the
//!   candidates as their true effects do?
//! - **Uplift-curve AUC**, normalised: send to the candidates in the model's order and add up
//!   their true uplift; the area under that curve, 0 for a random order and 1 for the true
//!   order (negative when worse than random). It weighs getting the strongest effects first.
//!
//! The predicted uplift is what the planner weighs: in `outcome` mode the send's predicted
//! probabilities (retention less the average send's), in `incremental` mode their difference
//! from the same opportunity not sent. A third reading, `activity`, is the diagnostic of the
//! activity head: retention as its difference in active days per week. The fourth, `long-term`,
//! is what `longTerm` weighs: retention as the value function's conservative effect of the send
//! on the user's future, in active days per week.
//! The truth's retention uses the horizon of the model's retention label, so that both speak of
//! the same event (for `activity`, the change in active days over that horizon, per week).

use std::sync::Arc;

use tern_daemon::predict::ModelPredictor;
use tern_model::Model;
use tern_planner::{Predictor, Scores};
use tern_policy::ValueMode;

use super::*;

/// Predicted against true uplift, over one run's open candidates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpliftScore {
    /// How the predictions were read: `outcome`, `incremental`, `activity` (incremental, with
    /// retention as the activity head's active days per week) or `long-term` (retention as the
    /// value function's effect, in active days per week).
    pub mode: String,
    pub candidates: u64,
    pub retention: Agreement,
    pub value: Agreement,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Agreement {
    pub spearman: f64,
    pub uplift_auc: f64,
}

/// Scores the store's active model in each value mode it can serve, at `now`, against the
/// truth of `world` (whose open day must be `now`'s).
pub(super) async fn score(
    store: &Store,
    world: &World,
    bundle: &Bundle,
    now: DateTime<Utc>,
    label_horizon: TimeDelta,
) -> Result<Vec<UpliftScore>> {
    let Some((_, bytes)) = store.active_model().await? else {
        return Ok(Vec::new());
    };
    let model = Arc::new(Model::from_bytes(&bytes)?);
    let inputs = tern_daemon::replan::planning_inputs(store, now, None).await?;
    let objective = bundle
        .default_objective()
        .context("the demo's bundle has a default Objective")?;
    let weights = objective.weights;
    let value = |s: &Scores| {
        weights.conversion * s.conversion
            + weights.engagement * s.engagement
            + weights.retention * s.retention
            - weights.reachability * s.reachability_loss
    };

    // The truth of every candidate a plan would consider, in the predictors' order.
    let mut truth = Vec::new();
    let mut keep = Vec::new();
    for u in &inputs {
        for o in &u.opportunities {
            for c in &o.channels {
                let considered = !u.unreachable_channels.contains(c)
                    && !u.opted_out_channels.contains(c)
                    && !u.opted_out_categories.contains(&o.category);
                keep.push(considered);
                if considered {
                    let t = world.uplift(
                        &Delivery {
                            message_id: String::new(),
                            user_id: u.user_id.clone(),
                            channel: c.clone(),
                            category: o.category.clone(),
                            template: o.template.clone(),
                            relevance: o.signals.get("relevance").copied(),
                            order_value: o.signals.get("order_value").copied(),
                            at: now,
                        },
                        label_horizon,
                    )?;
                    truth.push(t);
                }
            }
        }
    }
    // The activity and long-term readings are active days per week over the horizon, not the
    // chance of being active in its last week: their truth is the same change, in the same unit.
    let per_week = 7.0 / (label_horizon.num_seconds() as f64 / 86_400.0).max(1.0);
    let truth_of = |activity: bool| -> (Vec<f64>, Vec<f64>) {
        let retention: Vec<f64> = truth
            .iter()
            .map(|t| {
                if activity {
                    t.active_days * per_week
                } else {
                    t.retention
                }
            })
            .collect();
        let value = truth
            .iter()
            .zip(&retention)
            .map(|(t, r)| {
                value(&Scores {
                    conversion: t.conversion,
                    engagement: t.engagement,
                    retention: *r,
                    reachability_loss: t.reachability_loss,
                })
            })
            .collect();
        (retention, value)
    };

    let mut out = Vec::new();
    // (name, mode, the activity head's reading, retention in active days per week)
    let readings = [
        ("outcome", ValueMode::Outcome, false, false),
        ("incremental", ValueMode::Incremental, false, false),
        ("activity", ValueMode::Incremental, true, true),
        ("long-term", ValueMode::LongTerm, false, true),
    ];
    for (name, mode, activity, per_week) in readings {
        let mut predictor =
            ModelPredictor::new(Arc::clone(&model), now).with_modes(mode, Default::default());
        if activity {
            predictor = predictor.weighing_activity();
        }
        if mode.is_causal() && !predictor.can_tell_effects() {
            continue;
        }
        if mode == ValueMode::LongTerm && model.value.is_none() {
            continue;
        }
        let (true_retention, true_value) = truth_of(per_week);
        let users: Vec<&tern_planner::UserInput> = inputs.iter().collect();
        let mut scores = Vec::new();
        predictor.predict_many(&users, &mut scores);
        let scores: Vec<Scores> = scores
            .into_iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s)
            .collect();
        let retention: Vec<f64> = scores.iter().map(|s| s.retention).collect();
        let predicted_value: Vec<f64> = scores.iter().map(value).collect();
        out.push(UpliftScore {
            mode: name.to_string(),
            candidates: scores.len() as u64,
            retention: Agreement {
                spearman: spearman(&retention, &true_retention),
                uplift_auc: uplift_auc(&retention, &true_retention),
            },
            value: Agreement {
                spearman: spearman(&predicted_value, &true_value),
                uplift_auc: uplift_auc(&predicted_value, &true_value),
            },
        });
    }
    Ok(out)
}

/// Ranks from 1, ties sharing their mean rank.
fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for k in &order[i..=j] {
            r[*k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation; 0 when either side is constant or there are fewer than 2.
pub(super) fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (ra, rb) = (ranks(&a[..n]), ranks(&b[..n]));
    let mean = (n as f64 + 1.0) / 2.0;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - mean) * (y - mean);
        saa += (x - mean).powi(2);
        sbb += (y - mean).powi(2);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// The normalised area under the uplift curve of `predicted` against the true effects: 1 for
/// the true order, 0 for a random one (ties in the prediction are averaged over).
pub(super) fn uplift_auc(predicted: &[f64], truth: &[f64]) -> f64 {
    let n = predicted.len().min(truth.len());
    if n < 2 {
        return 0.0;
    }
    let area = |key: &[f64]| {
        // Sorted by key descending; a run of tied keys counts each at the run's mean effect.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| key[b].total_cmp(&key[a]));
        let (mut cum, mut area, mut i) = (0.0, 0.0, 0);
        while i < n {
            let mut j = i;
            while j + 1 < n && key[order[j + 1]] == key[order[i]] {
                j += 1;
            }
            let mean = order[i..=j].iter().map(|&k| truth[k]).sum::<f64>() / (j - i + 1) as f64;
            for _ in i..=j {
                cum += mean;
                area += cum;
            }
            i = j + 1;
        }
        area
    };
    let total: f64 = truth[..n].iter().sum();
    let random = total * (n as f64 + 1.0) / 2.0;
    let best = area(&truth[..n]);
    if (best - random).abs() < 1e-12 {
        return 0.0;
    }
    (area(&predicted[..n]) - random) / (best - random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scores_are_one_for_the_true_order_and_about_zero_for_noise() {
        let truth: Vec<f64> = (0..200)
            .map(|i| ((i * 37) % 200) as f64 / 100.0 - 0.5)
            .collect();
        assert!((spearman(&truth, &truth) - 1.0).abs() < 1e-12);
        assert!((uplift_auc(&truth, &truth) - 1.0).abs() < 1e-12);
        let reversed: Vec<f64> = truth.iter().map(|x| -x).collect();
        assert!((spearman(&reversed, &truth) + 1.0).abs() < 1e-12);
        assert!(uplift_auc(&reversed, &truth) < -0.99);
        // A constant prediction says nothing: no correlation, the random order's area.
        let flat = vec![0.3; truth.len()];
        assert_eq!(spearman(&flat, &truth), 0.0);
        assert!(uplift_auc(&flat, &truth).abs() < 1e-9);
        // A monotone transform of the truth ranks the same.
        let squashed: Vec<f64> = truth.iter().map(|x| x.tanh() * 0.01).collect();
        assert!((spearman(&squashed, &truth) - 1.0).abs() < 1e-12);
        assert!((uplift_auc(&squashed, &truth) - 1.0).abs() < 1e-12);
    }
}
