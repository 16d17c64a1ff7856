//! Evaluation: log loss, AUC and calibration per head, streamed, beside two baselines.
//!
//! Every figure is accumulated row by row in constant memory, so a held-out period of any size
//! can be evaluated as it streams out of the database. AUC comes from score histograms with
//! [`AUC_BINS`] bins (scores in one bin count as ties, worth half a pair); with 16,384 bins the
//! difference from the exact AUC is far below the noise of any real holdout.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::{Head, HEADS};

/// Histogram resolution for AUC.
pub const AUC_BINS: usize = 1 << 14;

/// Bins of the expected calibration error (equal width over `[0, 1]`).
pub const ECE_BINS: usize = 10;

/// A head needs at least this many labelled validation rows before [`promotable`] judges it;
/// below that its log loss is mostly noise.
pub const MIN_LABELS_FOR_PROMOTION: u64 = 200;

/// Probabilities are clamped to `[EPS, 1 - EPS]` before taking logs, so one confident mistake costs
/// a large but finite loss.
const EPS: f64 = 1e-7;

/// How one predictor did on one head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Mean binary cross-entropy over labelled rows (lower is better).
    pub log_loss: f64,
    /// Area under the ROC curve; `None` when the labels are all of one class.
    pub auc: Option<f64>,
    /// Expected calibration error over 10 equal-width bins: the row-weighted mean of
    /// |mean prediction − observed rate| per bin (lower is better).
    pub ece: f64,
}

/// One head's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMetrics {
    pub head: Head,
    /// Rows whose outcome for this head was observable (mask 1).
    pub labels: u64,
    pub positives: u64,
    /// The positive rate in the training period: the base-rate baseline's constant prediction.
    pub train_base_rate: f64,
    pub model: Scores,
    /// Predicting `train_base_rate` for every row.
    pub base_rate: Scores,
    /// A logistic regression on the same features, trained on the same batches.
    pub logistic: Scores,
}

/// The evaluation of a model on a held-out period, stored with the model in its artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Rows evaluated (any head labelled or not).
    pub rows: u64,
    pub heads: Vec<HeadMetrics>,
}

impl Metrics {
    pub fn head(&self, head: Head) -> Option<&HeadMetrics> {
        self.heads.iter().find(|h| h.head == head)
    }
}

/// The promotion verdict, head by head.
///
/// The rule: a head with at least [`MIN_LABELS_FOR_PROMOTION`] labelled validation rows is
/// *evaluated*, and its log loss must not be worse than predicting the training base rate. A
/// model that loses to a constant on any evaluated head has learned something wrong (a leak, a
/// broken feature, a drifted period), and the planner would act on its confident mistakes. A
/// head with fewer labels is *not evaluated*: its loss is mostly noise, so it neither passes nor
/// fails, and it is reported as such. A model with no evaluated head has shown nothing and is
/// not promotable (the command line can force it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Promotion {
    /// Evaluated heads on which the model is at least as good as the base rate.
    pub beats: Vec<Head>,
    /// Evaluated heads on which it is worse, one sentence each.
    pub loses: Vec<String>,
    /// Heads with too few labels to judge, with their label counts.
    pub not_evaluated: Vec<(Head, u64)>,
}

impl Promotion {
    /// Judges a model's validation metrics.
    pub fn of(metrics: &Metrics) -> Promotion {
        let mut p = Promotion::default();
        for h in &metrics.heads {
            if h.labels < MIN_LABELS_FOR_PROMOTION {
                p.not_evaluated.push((h.head, h.labels));
                continue;
            }
            // A NaN loss compares as neither: it loses.
            match h.model.log_loss.partial_cmp(&h.base_rate.log_loss) {
                Some(Ordering::Less | Ordering::Equal) => p.beats.push(h.head),
                _ => p.loses.push(format!(
                    "{}: validation log loss {:.5} is worse than the base rate's {:.5} ({} labels)",
                    h.head, h.model.log_loss, h.base_rate.log_loss, h.labels
                )),
            }
        }
        p
    }

    /// Whether the model may be promoted: no evaluated head loses, and at least one is
    /// evaluated.
    pub fn promotable(&self) -> bool {
        self.loses.is_empty() && !self.beats.is_empty()
    }

    /// Why it may not be promoted, one sentence each; empty if it may.
    pub fn refusals(&self) -> Vec<String> {
        let mut out = self.loses.clone();
        if self.beats.is_empty() && self.loses.is_empty() {
            out.push(format!(
                "no head has {MIN_LABELS_FOR_PROMOTION} labelled validation rows, so nothing shows the model beats the base rate"
            ));
        }
        out
    }

    /// The heads not evaluated, as `engagement (120 labels)`, comma-separated.
    pub fn not_evaluated_text(&self) -> String {
        self.not_evaluated
            .iter()
            .map(|(h, n)| format!("{h} ({n} labels)"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line for people: `promotable: beats the base rate on conversion, retention; not
    /// evaluated (fewer than 200 labels): engagement (120 labels)`, or why not.
    pub fn summary(&self) -> String {
        let mut s = if self.promotable() {
            let heads: Vec<String> = self.beats.iter().map(|h| h.to_string()).collect();
            format!("promotable: beats the base rate on {}", heads.join(", "))
        } else {
            format!("not promotable: {}", self.refusals().join("; "))
        };
        if !self.not_evaluated.is_empty() {
            s.push_str(&format!(
                "; not evaluated (fewer than {MIN_LABELS_FOR_PROMOTION} labels): {}",
                self.not_evaluated_text()
            ));
        }
        s
    }
}

/// Why a model may not be promoted, one sentence each; empty if it may. See [`Promotion`].
pub fn promotion_refusals(metrics: &Metrics) -> Vec<String> {
    Promotion::of(metrics).refusals()
}

/// Whether the model may be promoted: see [`Promotion`].
pub fn promotable(metrics: &Metrics) -> bool {
    Promotion::of(metrics).promotable()
}

/// Streams predictions and labels of one predictor on one head.
#[derive(Debug, Clone)]
pub(crate) struct Accumulator {
    n: u64,
    positives: u64,
    loss: f64,
    pos_hist: Vec<u64>,
    neg_hist: Vec<u64>,
    ece_count: [u64; ECE_BINS],
    ece_pred: [f64; ECE_BINS],
    ece_pos: [f64; ECE_BINS],
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            n: 0,
            positives: 0,
            loss: 0.0,
            pos_hist: vec![0; AUC_BINS],
            neg_hist: vec![0; AUC_BINS],
            ece_count: [0; ECE_BINS],
            ece_pred: [0.0; ECE_BINS],
            ece_pos: [0.0; ECE_BINS],
        }
    }
}

impl Accumulator {
    /// Adds one labelled row: `p` the predicted probability, `label` the outcome (0 or 1, or a
    /// share in between for a soft label such as activity: the loss and calibration take it
    /// as it is, the AUC counts it as positive from 0.5).
    pub fn add(&mut self, p: f64, label: f32) {
        let p = readable(p);
        let y = f64::from(label).clamp(0.0, 1.0);
        let positive = label >= 0.5;
        self.n += 1;
        self.loss += soft_log_loss(p, y);
        let bin = ((p * AUC_BINS as f64) as usize).min(AUC_BINS - 1);
        if positive {
            self.positives += 1;
            self.pos_hist[bin] += 1;
        } else {
            self.neg_hist[bin] += 1;
        }
        let e = ((p * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        self.ece_count[e] += 1;
        self.ece_pred[e] += p;
        self.ece_pos[e] += y;
    }

    pub fn n(&self) -> u64 {
        self.n
    }

    pub fn positives(&self) -> u64 {
        self.positives
    }

    /// Mean log loss so far (0 with no rows).
    pub fn mean_loss(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.loss / self.n as f64
        }
    }

    pub fn scores(&self) -> Scores {
        let negatives = self.n - self.positives;
        let auc = if self.positives == 0 || negatives == 0 {
            None
        } else {
            // For each positive, count negatives scored strictly below it, plus half the ties.
            let mut below = 0u64;
            let mut pairs = 0.0f64;
            for bin in 0..AUC_BINS {
                let (p, n) = (self.pos_hist[bin], self.neg_hist[bin]);
                pairs += p as f64 * (below as f64 + n as f64 / 2.0);
                below += n;
            }
            Some(pairs / (self.positives as f64 * negatives as f64))
        };
        let mut ece = 0.0;
        if self.n > 0 {
            for b in 0..ECE_BINS {
                let c = self.ece_count[b];
                if c > 0 {
                    let gap = (self.ece_pred[b] - self.ece_pos[b]).abs() / c as f64;
                    ece += gap * c as f64 / self.n as f64;
                }
            }
        }
        Scores {
            log_loss: self.mean_loss(),
            auc,
            ece,
        }
    }
}

/// Binary cross-entropy of one prediction, in nats.
/// A prediction as the evaluation reads it: clamped to [0, 1], and 0.5 when not a number.
pub(crate) fn readable(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.5
    }
}

/// Cross-entropy against a label in [0, 1]: the log loss for 0 and 1, and the same formula in
/// between.
pub(crate) fn soft_log_loss(p: f64, y: f64) -> f64 {
    if y <= 0.0 {
        log_loss(p, false)
    } else if y >= 1.0 {
        log_loss(p, true)
    } else {
        y * log_loss(p, true) + (1.0 - y) * log_loss(p, false)
    }
}

pub(crate) fn log_loss(p: f64, positive: bool) -> f64 {
    let p = p.clamp(EPS, 1.0 - EPS);
    if positive {
        -p.ln()
    } else {
        -(1.0 - p).ln()
    }
}

/// The three accumulators of one head.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadEval {
    pub model: Accumulator,
    pub base: Accumulator,
    pub logistic: Accumulator,
}

/// Builds [`Metrics`] from finished accumulators.
pub(crate) fn metrics(rows: u64, evals: &[HeadEval; HEADS], base_rates: &[f64; HEADS]) -> Metrics {
    Metrics {
        rows,
        heads: Head::ALL
            .iter()
            .zip(evals)
            .zip(base_rates)
            .map(|((&head, e), &rate)| HeadMetrics {
                head,
                labels: e.model.n(),
                positives: e.model.positives(),
                train_base_rate: rate,
                model: e.model.scores(),
                base_rate: e.base.scores(),
                logistic: e.logistic.scores(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_a_perfect_ranking_is_one_and_of_a_constant_is_one_half() {
        let mut perfect = Accumulator::default();
        let mut constant = Accumulator::default();
        for i in 0..100 {
            let label = if i < 50 { 0.0 } else { 1.0 };
            perfect.add(i as f64 / 100.0, label);
            constant.add(0.3, label);
        }
        assert_eq!(perfect.scores().auc, Some(1.0));
        assert_eq!(constant.scores().auc, Some(0.5));
    }

    #[test]
    fn a_calibrated_constant_has_zero_ece_and_an_overconfident_one_does_not() {
        let mut calibrated = Accumulator::default();
        let mut overconfident = Accumulator::default();
        for i in 0..1000 {
            let label = if i % 4 == 0 { 1.0 } else { 0.0 };
            calibrated.add(0.25, label);
            overconfident.add(0.95, label);
        }
        assert!(calibrated.scores().ece < 1e-9);
        assert!((overconfident.scores().ece - 0.7).abs() < 1e-9);
        let ll = calibrated.scores().log_loss;
        let expected = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!((ll - expected).abs() < 1e-9);
    }

    #[test]
    fn a_head_worse_than_the_base_rate_blocks_promotion_and_one_with_too_few_labels_is_not_evaluated(
    ) {
        let scores = |log_loss| Scores {
            log_loss,
            auc: None,
            ece: 0.0,
        };
        let head = |labels, model| HeadMetrics {
            head: Head::Conversion,
            labels,
            positives: labels / 10,
            train_base_rate: 0.1,
            model: scores(model),
            base_rate: scores(0.3),
            logistic: scores(0.3),
        };
        let good = Metrics {
            rows: 1000,
            heads: vec![head(1000, 0.2), head(10, 0.9)],
        };
        assert!(promotable(&good));
        let bad = Metrics {
            rows: 1000,
            heads: vec![head(1000, 0.31)],
        };
        assert!(!promotable(&bad));
        assert!(promotion_refusals(&bad)[0].contains("conversion"));
        let nan = Metrics {
            rows: 1000,
            heads: vec![head(1000, f64::NAN)],
        };
        assert!(!promotable(&nan), "a NaN loss is never promotable");

        // A head with too few labels is reported as not evaluated, not as passed.
        let p = Promotion::of(&good);
        assert_eq!(p.beats, [Head::Conversion]);
        assert_eq!(p.not_evaluated, [(Head::Conversion, 10)]);
        assert!(p.summary().contains("not evaluated"), "{}", p.summary());

        // Nothing evaluated: nothing shows the model is any good.
        let unjudged = Metrics {
            rows: 100,
            heads: vec![head(150, 0.1), head(0, 0.1)],
        };
        assert!(!promotable(&unjudged));
        let p = Promotion::of(&unjudged);
        assert!(
            p.refusals()[0].contains("no head has 200"),
            "{:?}",
            p.refusals()
        );
        assert!(p.summary().starts_with("not promotable"), "{}", p.summary());
    }
}
