//! The logistic-regression baseline, in plain Rust.
//!
//! It sees the same minibatches as the network, in the same order, so the comparison in
//! [`Metrics`](crate::Metrics) is between models, not between data. A network that does no
//! better than this is not worth its cost; one that does worse has a bug. Plain minibatch SGD on
//! `f64` accumulators keeps it deterministic and independent of burn.

use serde::{Deserialize, Serialize};

use crate::HEADS;

/// A logistic regression per head on the model's features. Stored in the training summary so
/// that a later evaluation (`tern evaluate` on another period) compares against the same
/// baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    width: usize,
    /// `HEADS × width`, head-major.
    weights: Vec<f64>,
    bias: [f64; HEADS],
    lr: f64,
}

impl Logistic {
    pub(crate) fn new(width: usize, lr: f64) -> Self {
        Logistic {
            width,
            weights: vec![0.0; HEADS * width],
            bias: [0.0; HEADS],
            lr,
        }
    }

    /// Sets each head's bias to the logit of its base rate, so that the baseline starts where the
    /// base rate is.
    pub(crate) fn start_at(&mut self, rates: &[f64; HEADS]) {
        for (b, r) in self.bias.iter_mut().zip(rates) {
            let p = r.clamp(1e-4, 1.0 - 1e-4);
            *b = (p / (1.0 - p)).ln();
        }
    }

    /// Probabilities per head for one encoded row (of the width it was trained on).
    pub fn predict(&self, x: &[f32]) -> [f64; HEADS] {
        let mut out = [0.0; HEADS];
        for (h, o) in out.iter_mut().enumerate() {
            let w = &self.weights[h * self.width..(h + 1) * self.width];
            let z = self.bias[h] + w.iter().zip(x).map(|(w, x)| w * f64::from(*x)).sum::<f64>();
            *o = sigmoid(z);
        }
        out
    }

    /// One SGD step on a minibatch: rows given by `index` into `features`, each head averaged over
    /// its observable labels only.
    pub(crate) fn step(
        &mut self,
        features: &[f32],
        labels: &[[f32; HEADS]],
        masks: &[[bool; HEADS]],
        index: &[usize],
    ) {
        let mut gw = vec![0.0; HEADS * self.width];
        let mut gb = [0.0; HEADS];
        let mut n = [0u32; HEADS];
        for &r in index {
            let x = &features[r * self.width..(r + 1) * self.width];
            let p = self.predict(x);
            for h in 0..HEADS {
                if !masks[r][h] {
                    continue;
                }
                n[h] += 1;
                let g = p[h] - f64::from(labels[r][h]);
                gb[h] += g;
                for (gw, x) in gw[h * self.width..(h + 1) * self.width].iter_mut().zip(x) {
                    *gw += g * f64::from(*x);
                }
            }
        }
        for h in 0..HEADS {
            if n[h] == 0 {
                continue;
            }
            let s = self.lr / f64::from(n[h]);
            self.bias[h] -= s * gb[h];
            let w = &mut self.weights[h * self.width..(h + 1) * self.width];
            for (w, g) in w.iter_mut().zip(&gw[h * self.width..(h + 1) * self.width]) {
                *w -= s * g;
            }
        }
    }
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}
