//! What a training run records in the model artifact: its settings ([`TrainConfig`]) and its
//! course ([`TrainingSummary`], one [`EpochStats`] per epoch). The artifact (`model.rs`) stores
//! them and the training loop (`train.rs`) fills them; neither needs the other.

use serde::{Deserialize, Serialize};

use crate::baseline::Logistic;
use crate::error::ModelError;
use crate::HEADS;

/// Training settings. Stored in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: u64,
    /// Widths of the two trunk layers.
    pub hidden: [usize; 2],
    pub batch_size: usize,
    pub learning_rate: f64,
    /// At most this many passes over the training data.
    pub max_epochs: usize,
    /// Stop after this many epochs without a validation improvement of at least `min_delta`.
    pub patience: usize,
    pub min_delta: f64,
    /// Learning rate of the logistic-regression baseline (plain SGD).
    pub baseline_learning_rate: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            hidden: [128, 64],
            batch_size: 512,
            learning_rate: 2e-3,
            max_epochs: 30,
            patience: 3,
            min_delta: 1e-4,
            baseline_learning_rate: 0.2,
        }
    }
}

impl TrainConfig {
    pub(crate) fn check(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::InvalidConfig(m.to_string()));
        if self.batch_size == 0 {
            return bad("batch_size must be positive");
        }
        if self.max_epochs == 0 {
            return bad("max_epochs must be positive");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate must be a positive number");
        }
        if !(self.baseline_learning_rate > 0.0 && self.baseline_learning_rate.is_finite()) {
            return bad("baseline_learning_rate must be a positive number");
        }
        Ok(())
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean minibatch loss over the epoch (sum over heads).
    pub train_loss: f64,
    /// Validation loss after the epoch (sum over heads of mean masked log loss).
    pub valid_loss: f64,
    pub train_rows: u64,
    /// Training rows per second in this epoch (excluding validation).
    pub rows_per_second: f64,
}

/// How a model was trained. Stored in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub config: TrainConfig,
    pub epochs: Vec<EpochStats>,
    /// The epoch whose weights were kept (0-based).
    pub best_epoch: usize,
    pub best_valid_loss: f64,
    /// Positive rate per head over the training rows with an observable label.
    pub train_base_rates: [f64; HEADS],
    /// Training rows with an observable label, per head. A head with none has learned nothing
    /// (its output is its initialisation), and predictors should not trust it. Absent from
    /// artifacts written before it existed, where it reads as unknown (all zero).
    #[serde(default)]
    pub train_labels: [u64; HEADS],
    /// Training rows of the action "no send" (no channel column set): what the model knows of
    /// outcomes without a send. Without them it cannot tell the effect of a send, and
    /// predictors do not ask it to. Absent (0) from artifacts written before it existed.
    #[serde(default)]
    pub untreated_rows: u64,
    /// The logistic-regression baseline trained on the same minibatches.
    pub logistic: Logistic,
}
