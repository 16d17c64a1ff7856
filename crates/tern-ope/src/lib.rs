//! Off-policy evaluation: the value a candidate policy would have earned, estimated from the
//! decisions a logging policy took, the probabilities with which it took them, and what
//! happened — before a single user sees the candidate.
//!
//! Every estimator here reweights logged rewards by `w = π_target(a|x) / π_logging(a|x)`:
//! - [`ips`] (inverse propensity scoring): `mean(w·r)`. Unbiased when the logging policy gave
//!   every action the candidate takes a positive probability; its variance grows with `w`.
//! - [`snips`] (self-normalised IPS): `Σ w·r / Σ w`. A little biased, much steadier when a few
//!   weights are large.
//! - [`doubly_robust`]: a direct-method prediction of the candidate's value, corrected by the
//!   weighted error of the prediction on the logged action: `mean(q̂_target + w·(r − q̂_logged))`.
//!   Unbiased if either the propensities or the predictions are right, and lower-variance than
//!   IPS when the predictions are decent.
//!
//! [`evaluate`] gives each with a percentile bootstrap interval and the effective sample size
//! `(Σw)² / Σw²`, and reports the candidate's probability mass on actions the logging policy
//! never takes (no support), where no reweighting can say anything and a number would mislead.
//!
//! [`experiment`] holds the statistics of an experiment report: differences between arms with
//! intervals, CUPED, and the sample-ratio-mismatch check.
//!
//! Plain data in and out: no SQL, no model, no policies. The caller computes propensities and
//! the direct method's predictions.

pub mod experiment;

use tern_core::SplitMix64;

/// One logged decision, for one context (a user at a replan) and the action taken there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Logged {
    /// The probability with which the logging policy took the logged action, in (0, 1].
    pub propensity: f64,
    /// The probability with which the candidate policy would take the same action, in [0, 1].
    pub target: f64,
    /// What happened (e.g. 1 for a conversion, or the objective's value).
    pub reward: f64,
    /// The direct method's prediction of the reward of the logged action.
    pub predicted_logged: f64,
    /// The direct method's prediction of the candidate's expected reward in this context
    /// (over its own action probabilities).
    pub predicted_target: f64,
    /// The candidate's probability mass, in this context, on actions the logging policy gives
    /// probability 0. Nothing logged can speak for them.
    pub unsupported: f64,
}

/// A logged decision that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpeError {
    #[error("row {row}: propensity {value} is not in (0, 1]")]
    Propensity { row: usize, value: f64 },
    #[error("row {row}: {field} {value} is not in [0, 1]")]
    Probability {
        row: usize,
        field: &'static str,
        value: f64,
    },
    #[error("row {row}: {field} is not a finite number")]
    NotFinite { row: usize, field: &'static str },
    #[error("no logged decisions to estimate from")]
    Empty,
    #[error("the two logs must describe the same decisions (the same propensities and rewards, row by row): {baseline} rows against {candidate}")]
    Unpaired { baseline: usize, candidate: usize },
    #[error("{units} units for {rows} rows: every row needs its unit")]
    Units { rows: usize, units: usize },
}

/// Checks every row; estimators assume a checked log.
pub fn check(log: &[Logged]) -> Result<(), OpeError> {
    if log.is_empty() {
        return Err(OpeError::Empty);
    }
    for (row, l) in log.iter().enumerate() {
        for (field, v) in [
            ("reward", l.reward),
            ("predicted_logged", l.predicted_logged),
            ("predicted_target", l.predicted_target),
        ] {
            if !v.is_finite() {
                return Err(OpeError::NotFinite { row, field });
            }
        }
        if !(l.propensity > 0.0 && l.propensity <= 1.0) {
            return Err(OpeError::Propensity {
                row,
                value: l.propensity,
            });
        }
        for (field, v) in [("target", l.target), ("unsupported", l.unsupported)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(OpeError::Probability {
                    row,
                    field,
                    value: v,
                });
            }
        }
    }
    Ok(())
}

fn weight(l: &Logged) -> f64 {
    l.target / l.propensity
}

/// Inverse propensity scoring: `mean(w·r)`.
pub fn ips(log: &[Logged]) -> f64 {
    log.iter().map(|l| weight(l) * l.reward).sum::<f64>() / log.len() as f64
}

/// Self-normalised IPS: `Σ w·r / Σ w`; 0 when the candidate gives every logged action weight 0.
pub fn snips(log: &[Logged]) -> f64 {
    let w: f64 = log.iter().map(weight).sum();
    if w == 0.0 {
        return 0.0;
    }
    log.iter().map(|l| weight(l) * l.reward).sum::<f64>() / w
}

/// Doubly robust: `mean(q̂_target + w·(r − q̂_logged))`.
pub fn doubly_robust(log: &[Logged]) -> f64 {
    log.iter()
        .map(|l| l.predicted_target + weight(l) * (l.reward - l.predicted_logged))
        .sum::<f64>()
        / log.len() as f64
}

/// `(Σw)² / Σw²`: how many logged decisions the weighted estimate is worth. Equal to the log's
/// length when the candidate is the logging policy; small when a few weights dominate.
pub fn effective_sample_size(log: &[Logged]) -> f64 {
    let (s, s2) = log
        .iter()
        .map(weight)
        .fold((0.0, 0.0), |(s, s2), w| (s + w, s2 + w * w));
    if s2 == 0.0 {
        0.0
    } else {
        s * s / s2
    }
}

/// An estimate with its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    /// The percentile bootstrap interval at the requested level.
    pub low: f64,
    pub high: f64,
}

/// Everything [`evaluate`] reports for one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub rows: usize,
    pub ips: Estimate,
    pub snips: Estimate,
    pub doubly_robust: Estimate,
    pub effective_sample_size: f64,
    /// The candidate's mean probability mass on actions the logging policy never takes.
    pub unsupported: f64,
}

impl Evaluation {
    /// Why these numbers should not be trusted, if they should not: one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.unsupported > 0.0 {
            out.push(format!(
                "no support: {:.1}% of the candidate's choices are actions the logging policy never takes; the estimates say nothing about them",
                100.0 * self.unsupported
            ));
        }
        if self.effective_sample_size < 0.01 * self.rows as f64 {
            out.push(format!(
                "the effective sample size is {:.0} of {} decisions: a few large weights dominate",
                self.effective_sample_size, self.rows
            ));
        }
        out
    }
}

/// Settings of [`evaluate`].
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    pub resamples: usize,
    /// E.g. 0.95 for a 95% interval.
    pub level: f64,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: 1000,
            level: 0.95,
            seed: 0,
        }
    }
}

/// IPS, SNIPS and doubly robust with bootstrap intervals (the same resamples for all three, so
/// their intervals are comparable), the effective sample size and the unsupported mass. Each
/// row is resampled on its own: right when decisions are independent; see [`evaluate_by_unit`]
/// when they come in groups.
pub fn evaluate(log: &[Logged], bootstrap: Bootstrap) -> Result<Evaluation, OpeError> {
    let units: Vec<u64> = (0..log.len() as u64).collect();
    evaluate_by_unit(log, &units, bootstrap)
}

/// [`evaluate`] with a bootstrap that resamples whole units (`units[i]` is row `i`'s: a user,
/// say) rather than rows. One user's decisions share the user's mood, fatigue and reachability,
/// so they are not independent, and resampling them one by one gives intervals that are too
/// narrow for users with many decisions.
pub fn evaluate_by_unit(
    log: &[Logged],
    units: &[u64],
    bootstrap: Bootstrap,
) -> Result<Evaluation, OpeError> {
    check(log)?;
    let groups = groups(log.len(), units)?;
    let n = log.len();
    let mut rng = SplitMix64::new(bootstrap.seed);
    let mut draws: [Vec<f64>; 3] = Default::default();
    let mut sample = Vec::with_capacity(n);
    for _ in 0..bootstrap.resamples {
        sample.clear();
        for _ in 0..groups.len() {
            sample.extend(groups[rng.below(groups.len())].iter().map(|&i| log[i]));
        }
        draws[0].push(ips(&sample));
        draws[1].push(snips(&sample));
        draws[2].push(doubly_robust(&sample));
    }
    let [i, s, d] = &mut draws;
    Ok(Evaluation {
        rows: n,
        ips: percentile_interval(ips(log), i, bootstrap.level),
        snips: percentile_interval(snips(log), s, bootstrap.level),
        doubly_robust: percentile_interval(doubly_robust(log), d, bootstrap.level),
        effective_sample_size: effective_sample_size(log),
        unsupported: log.iter().map(|l| l.unsupported).sum::<f64>() / n as f64,
    })
}

/// Row indices grouped by unit, in the order units first appear (so that one row per unit
/// resamples exactly as rows do).
fn groups(rows: usize, units: &[u64]) -> Result<Vec<Vec<usize>>, OpeError> {
    if units.len() != rows {
        return Err(OpeError::Units {
            rows,
            units: units.len(),
        });
    }
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let g = *index.entry(*u).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    Ok(groups)
}

/// The doubly robust estimate of `candidate − baseline` on the same logged decisions (row `i` of
/// each is the same decision), with a paired percentile bootstrap interval: both are resampled
/// together, so what the two policies share (the users, the luck of the draws) cancels out of
/// the interval, which is then much narrower than the two separate intervals suggest.
pub fn compare(
    baseline: &[Logged],
    candidate: &[Logged],
    bootstrap: Bootstrap,
) -> Result<Estimate, OpeError> {
    let units: Vec<u64> = (0..baseline.len() as u64).collect();
    compare_by_unit(baseline, candidate, &units, bootstrap)
}

/// [`compare`] resampling whole units, as [`evaluate_by_unit`] does.
pub fn compare_by_unit(
    baseline: &[Logged],
    candidate: &[Logged],
    units: &[u64],
    bootstrap: Bootstrap,
) -> Result<Estimate, OpeError> {
    check(baseline)?;
    check(candidate)?;
    let n = baseline.len();
    // The same decisions: the same logged propensity and outcome, row by row.
    if candidate.len() != n
        || baseline
            .iter()
            .zip(candidate)
            .any(|(b, c)| b.propensity != c.propensity || b.reward != c.reward)
    {
        return Err(OpeError::Unpaired {
            baseline: n,
            candidate: candidate.len(),
        });
    }
    let groups = groups(n, units)?;
    let dr = |l: &Logged| l.predicted_target + weight(l) * (l.reward - l.predicted_logged);
    let diffs: Vec<f64> = baseline
        .iter()
        .zip(candidate)
        .map(|(b, c)| dr(c) - dr(b))
        .collect();
    let value = diffs.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix64::new(bootstrap.seed);
    let mut draws: Vec<f64> = (0..bootstrap.resamples)
        .map(|_| {
            let (mut sum, mut rows) = (0.0, 0usize);
            for _ in 0..groups.len() {
                for &i in &groups[rng.below(groups.len())] {
                    sum += diffs[i];
                    rows += 1;
                }
            }
            sum / rows.max(1) as f64
        })
        .collect();
    Ok(percentile_interval(value, &mut draws, bootstrap.level))
}

/// The estimate with the percentile interval of its bootstrap draws at `level`; the bare
/// estimate when there are no draws.
fn percentile_interval(value: f64, draws: &mut [f64], level: f64) -> Estimate {
    if draws.is_empty() {
        return Estimate {
            value,
            low: value,
            high: value,
        };
    }
    draws.sort_by(f64::total_cmp);
    let alpha = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    let at = |q: f64| draws[((q * (draws.len() - 1) as f64).round() as usize).min(draws.len() - 1)];
    Estimate {
        value,
        low: at(alpha),
        high: at(1.0 - alpha),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(propensity: f64, target: f64, reward: f64, q_logged: f64, q_target: f64) -> Logged {
        Logged {
            propensity,
            target,
            reward,
            predicted_logged: q_logged,
            predicted_target: q_target,
            unsupported: 0.0,
        }
    }

    /// Four decisions, worked by hand:
    /// weights 0.8/0.5 = 1.6, 0.2/0.5 = 0.4, 1.0/0.25 = 4, 0/0.75 = 0.
    fn log() -> Vec<Logged> {
        vec![
            row(0.5, 0.8, 1.0, 0.6, 0.5),
            row(0.5, 0.2, 0.0, 0.3, 0.4),
            row(0.25, 1.0, 1.0, 0.5, 0.5),
            row(0.75, 0.0, 1.0, 0.9, 0.2),
        ]
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn compare_estimates_the_paired_doubly_robust_difference() {
        // The candidate of `log()` against the logging policy itself (target = 1 on every
        // logged action, the direct method on the logged action): DR per row is then
        // q + (r − q) / p with target 1: 0.6 + 2·(1 − 0.6) = 1.4; 0.3 + 2·(0 − 0.3) = −0.3;
        // 0.5 + 4·(1 − 0.5) = 2.5; 0.9 + (1/0.75)·(1 − 0.9) = 1.0333…
        let baseline: Vec<Logged> = log()
            .iter()
            .map(|l| Logged {
                target: 1.0,
                predicted_target: l.predicted_logged,
                ..*l
            })
            .collect();
        let base_dr = (1.4 - 0.3 + 2.5 + (0.9 + 0.1 / 0.75)) / 4.0;
        close(doubly_robust(&baseline), base_dr);
        let none = Bootstrap {
            resamples: 0,
            ..Bootstrap::default()
        };
        let d = compare(&baseline, &log(), none).unwrap();
        close(d.value, 1.03 - base_dr);
        // With resamples, the interval holds the estimate; a log against itself differs by 0.
        let d = compare(&baseline, &log(), Bootstrap::default()).unwrap();
        assert!(d.low < d.value && d.value < d.high, "{d:?}");
        let same = compare(&log(), &log(), Bootstrap::default()).unwrap();
        assert_eq!((same.value, same.low, same.high), (0.0, 0.0, 0.0));
        assert!(matches!(
            compare(&log(), &log()[..3], none),
            Err(OpeError::Unpaired { .. })
        ));
    }

    #[test]
    fn the_bootstrap_resamples_whole_units() {
        // One unit holding every row: each resample is the whole log, so the intervals close
        // on the estimates.
        let one = [7u64; 4];
        let e = evaluate_by_unit(&log(), &one, Bootstrap::default()).unwrap();
        for x in [e.ips, e.snips, e.doubly_robust] {
            close(x.low, x.value);
            close(x.high, x.value);
        }
        close(e.ips.value, 1.4);
        let d = compare_by_unit(&log(), &log(), &one, Bootstrap::default()).unwrap();
        assert_eq!((d.low, d.high), (0.0, 0.0));
        // Each row its own unit is the row bootstrap.
        let rows = evaluate(&log(), Bootstrap::default()).unwrap();
        let own = evaluate_by_unit(&log(), &[3, 1, 4, 5], Bootstrap::default()).unwrap();
        assert_eq!(rows, own);
        assert!(matches!(
            evaluate_by_unit(&log(), &[1, 2], Bootstrap::default()),
            Err(OpeError::Units { rows: 4, units: 2 })
        ));
    }

    #[test]
    fn ips_is_the_mean_weighted_reward() {
        // (1.6·1 + 0.4·0 + 4·1 + 0·1) / 4 = 5.6 / 4
        close(ips(&log()), 1.4);
    }

    #[test]
    fn snips_normalises_by_the_sum_of_weights() {
        // 5.6 / (1.6 + 0.4 + 4 + 0) = 5.6 / 6
        close(snips(&log()), 5.6 / 6.0);
    }

    #[test]
    fn doubly_robust_corrects_the_direct_method_by_its_weighted_error() {
        // 0.5 + 1.6·(1 − 0.6) = 1.14; 0.4 + 0.4·(0 − 0.3) = 0.28;
        // 0.5 + 4·(1 − 0.5) = 2.5; 0.2 + 0·(1 − 0.9) = 0.2; mean = 4.12 / 4
        close(doubly_robust(&log()), 1.03);
    }

    #[test]
    fn effective_sample_size_is_the_squared_sum_over_the_sum_of_squares() {
        // 6² / (2.56 + 0.16 + 16 + 0) = 36 / 18.72
        close(effective_sample_size(&log()), 36.0 / 18.72);
        // The logging policy evaluated on its own log: every weight is 1.
        let same: Vec<Logged> = log()
            .into_iter()
            .map(|l| Logged {
                target: l.propensity,
                ..l
            })
            .collect();
        close(effective_sample_size(&same), 4.0);
        close(ips(&same), 0.75);
        close(snips(&same), 0.75);
    }

    #[test]
    fn with_perfect_predictions_doubly_robust_is_the_direct_method() {
        let exact: Vec<Logged> = log()
            .into_iter()
            .map(|l| Logged {
                predicted_logged: l.reward,
                ..l
            })
            .collect();
        close(doubly_robust(&exact), (0.5 + 0.4 + 0.5 + 0.2) / 4.0);
    }

    #[test]
    fn the_bootstrap_interval_holds_the_estimate_and_is_reproducible() {
        let big: Vec<Logged> = (0..200).flat_map(|_| log()).collect();
        let e = evaluate(&big, Bootstrap::default()).unwrap();
        for est in [e.ips, e.snips, e.doubly_robust] {
            assert!(est.low <= est.value && est.value <= est.high, "{est:?}");
            assert!(est.high - est.low < 0.5, "{est:?}");
        }
        close(e.ips.value, 1.4);
        assert_eq!(e, evaluate(&big, Bootstrap::default()).unwrap());
        let other = evaluate(
            &big,
            Bootstrap {
                seed: 1,
                ..Bootstrap::default()
            },
        )
        .unwrap();
        assert_ne!(e.ips.low, other.ips.low);
    }

    #[test]
    fn a_candidate_without_support_is_flagged_and_bad_rows_are_refused() {
        let mut l = log();
        l[0].unsupported = 0.4;
        let e = evaluate(&l, Bootstrap::default()).unwrap();
        close(e.unsupported, 0.1);
        assert!(
            e.warnings()[0].starts_with("no support: 10.0%"),
            "{:?}",
            e.warnings()
        );
        assert!(evaluate(&log(), Bootstrap::default())
            .unwrap()
            .warnings()
            .is_empty());

        let mut bad = log();
        bad[2].propensity = 0.0;
        assert_eq!(
            check(&bad),
            Err(OpeError::Propensity { row: 2, value: 0.0 })
        );
        let mut bad = log();
        bad[1].reward = f64::NAN;
        assert!(matches!(
            check(&bad),
            Err(OpeError::NotFinite {
                row: 1,
                field: "reward"
            })
        ));
        let mut bad = log();
        bad[3].target = 1.5;
        assert!(matches!(
            check(&bad),
            Err(OpeError::Probability { row: 3, .. })
        ));
        assert_eq!(evaluate(&[], Bootstrap::default()), Err(OpeError::Empty));
    }
}
