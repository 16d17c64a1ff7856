//! The statistics of an experiment report: differences between arms with confidence intervals,
//! variance reduction with a pre-period covariate (CUPED), and the sample-ratio-mismatch check.

/// A difference of means between a treatment arm and control, with its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub control_mean: f64,
    pub treatment_mean: f64,
    /// `treatment_mean - control_mean`.
    pub delta: f64,
    pub low: f64,
    pub high: f64,
}

/// The difference of means with a normal-approximation (Welch) interval at `level` (e.g. 0.95).
/// Arms of fewer than two units give an infinitely wide interval rather than a false precision.
pub fn difference(control: &[f64], treatment: &[f64], level: f64) -> Difference {
    let (mc, vc) = mean_var(control);
    let (mt, vt) = mean_var(treatment);
    let delta = mt - mc;
    let half = if control.len() < 2 || treatment.len() < 2 {
        f64::INFINITY
    } else {
        z(level) * (vc / control.len() as f64 + vt / treatment.len() as f64).sqrt()
    };
    Difference {
        control_mean: mc,
        treatment_mean: mt,
        delta,
        low: delta - half,
        high: delta + half,
    }
}

/// CUPED: each unit's metric less `θ·(x − mean x)`, where `x` is the same metric before the
/// experiment and `θ = cov(x, y) / var(x)` over all units of all arms. The adjusted metric has
/// the same mean difference between arms (assignment is independent of the pre-period) and a
/// smaller variance, by the share of it that the pre-period explains.
pub fn cuped(metric: &[f64], covariate: &[f64]) -> Vec<f64> {
    assert_eq!(metric.len(), covariate.len(), "one covariate per unit");
    let (mx, vx) = mean_var(covariate);
    let (my, _) = mean_var(metric);
    let n = metric.len();
    let theta = if n < 2 || vx == 0.0 {
        0.0
    } else {
        metric
            .iter()
            .zip(covariate)
            .map(|(y, x)| (y - my) * (x - mx))
            .sum::<f64>()
            / (n - 1) as f64
            / vx
    };
    metric
        .iter()
        .zip(covariate)
        .map(|(y, x)| y - theta * (x - mx))
        .collect()
}

/// The sample-ratio-mismatch check: are the arms' sizes what their shares promise?
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio {
    pub chi_square: f64,
    pub p_value: f64,
}

impl SampleRatio {
    /// The conventional alarm: a p-value under 0.001 means the assignment or the logging is
    /// broken, and no difference between the arms can be trusted.
    pub fn mismatch(&self) -> bool {
        self.p_value < 0.001
    }
}

/// Pearson's chi-square test of the observed arm sizes against the expected shares (which are
/// normalised, so they need not sum to 1).
pub fn sample_ratio(observed: &[u64], shares: &[f64]) -> SampleRatio {
    assert_eq!(observed.len(), shares.len(), "one share per arm");
    let total: f64 = observed.iter().sum::<u64>() as f64;
    let share_sum: f64 = shares.iter().sum();
    let chi_square: f64 = observed
        .iter()
        .zip(shares)
        .filter(|(_, s)| **s > 0.0)
        .map(|(o, s)| {
            let e = total * s / share_sum;
            (*o as f64 - e).powi(2) / e
        })
        .sum();
    let df = shares
        .iter()
        .filter(|s| **s > 0.0)
        .count()
        .saturating_sub(1);
    let p_value = if df == 0 || total == 0.0 {
        1.0
    } else {
        1.0 - lower_gamma_regularized(df as f64 / 2.0, chi_square / 2.0)
    };
    SampleRatio {
        chi_square,
        p_value,
    }
}

fn mean_var(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() < 2 {
        0.0
    } else {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    };
    (mean, var)
}

/// The two-sided normal quantile for a confidence level: 1.96 for 0.95.
pub fn z(level: f64) -> f64 {
    inverse_normal(0.5 + level.clamp(0.0, 0.999_999) / 2.0)
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn inverse_normal(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// P(a, x), the regularised lower incomplete gamma function: by its series below `a + 1`, by
/// the continued fraction of the upper function above (Numerical Recipes' `gammp`).
fn lower_gamma_regularized(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let log_prefix = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (sum * log_prefix.exp()).min(1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (1.0 - log_prefix.exp() * h).max(0.0)
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.5203681218851,
        -1259.1392167224028,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507343278686905,
        -0.13857109526572012,
        9.984_369_578_019_572e-6,
        1.5056327351493116e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let s = G[0] + (1..9).map(|i| G[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} != {b}");
    }

    #[test]
    fn normal_quantiles_match_the_tables() {
        close(z(0.95), 1.959_963_985, 1e-8);
        close(z(0.90), 1.644_853_627, 1e-8);
        close(z(0.99), 2.575_829_304, 1e-8);
    }

    #[test]
    fn chi_square_p_values_match_the_tables() {
        // One degree of freedom: 3.841 is the 5% point; two: 5.991.
        close(
            1.0 - lower_gamma_regularized(0.5, 3.841_458_8 / 2.0),
            0.05,
            1e-6,
        );
        close(
            1.0 - lower_gamma_regularized(1.0, 5.991_464_5 / 2.0),
            0.05,
            1e-6,
        );
        close(ln_gamma(5.0), 24f64.ln(), 1e-12);
    }

    #[test]
    fn the_sample_ratio_check_passes_a_fair_split_and_flags_a_skewed_one() {
        let fair = sample_ratio(&[5_000, 5_000], &[0.5, 0.5]);
        assert_eq!(fair.chi_square, 0.0);
        close(fair.p_value, 1.0, 1e-12);
        assert!(!fair.mismatch());
        // 600 / 400 against 50/50: (100² / 500) · 2 = 40.
        let skewed = sample_ratio(&[600, 400], &[0.5, 0.5]);
        close(skewed.chi_square, 40.0, 1e-12);
        assert!(skewed.p_value < 1e-9 && skewed.mismatch(), "{skewed:?}");
        // Shares are normalised: 45/45/10 as weights.
        let three = sample_ratio(&[4_500, 4_500, 1_000], &[45.0, 45.0, 10.0]);
        assert_eq!(three.chi_square, 0.0);
    }

    #[test]
    fn the_difference_interval_is_welchs() {
        let control = [1.0, 2.0, 3.0, 4.0];
        let treatment = [2.0, 4.0, 6.0, 8.0];
        let d = difference(&control, &treatment, 0.95);
        close(d.delta, 2.5, 1e-12);
        // var(c) = 5/3, var(t) = 20/3; se = sqrt((5/3 + 20/3) / 4) = sqrt(25/12)
        let half = 1.959_963_985 * (25.0f64 / 12.0).sqrt();
        close(d.low, 2.5 - half, 1e-7);
        close(d.high, 2.5 + half, 1e-7);
        assert!(difference(&[1.0], &treatment, 0.95).low.is_infinite());
    }

    #[test]
    fn cuped_keeps_the_difference_and_shrinks_the_variance() {
        // y = x + effect + small noise; x varies a lot between units, alike in both arms.
        let x: Vec<f64> = (0..200).map(|i| ((i / 2) % 20) as f64).collect();
        let noise = |i: usize| ((i * 7919) % 11) as f64 / 10.0 - 0.5;
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, x)| x + noise(i) + if i % 2 == 1 { 1.0 } else { 0.0 })
            .collect();
        let adjusted = cuped(&y, &x);
        let split = |v: &[f64]| -> (Vec<f64>, Vec<f64>) {
            let c = v.iter().step_by(2).copied().collect();
            let t = v.iter().skip(1).step_by(2).copied().collect();
            (c, t)
        };
        let (yc, yt) = split(&y);
        let (ac, at) = split(&adjusted);
        let raw = difference(&yc, &yt, 0.95);
        let adj = difference(&ac, &at, 0.95);
        close(adj.delta, raw.delta, 0.1);
        assert!(
            (adj.high - adj.low) < 0.2 * (raw.high - raw.low),
            "raw {raw:?}, adjusted {adj:?}"
        );
    }
}
