//! Training data as a stream of batches, and the time split.
//!
//! The trainer never asks for the whole history: it asks a [`Dataset`] for one pass at a time and
//! consumes [`Batch`]es as they come, so the caller can stream them from a database cursor. Only
//! one batch (plus the model) is in memory at once.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::HEADS;

/// Labelled rows: features (row-major, `rows × width`), one label per head, whether each label
/// is observable yet, and a weight per row (1 unless [`Batch::with_weights`] set others).
///
/// A label whose horizon has not passed (retention measured over 28 days, for a message sent
/// yesterday) is *masked*: it is not a negative, it is unknown, and it is left out of the loss.
/// Masked labels are zeroed on construction, so no value a caller puts there can reach the
/// model.
///
/// A row's weight scales its share of every head's loss. Training on logged decisions weights a
/// row by the inverse of the probability with which the logging policy took its action, so that
/// the rare action (a send withheld at random) counts for the users it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    width: usize,
    features: Vec<f32>,
    labels: Vec<[f32; HEADS]>,
    masks: Vec<[bool; HEADS]>,
    weights: Vec<f32>,
}

impl Batch {
    /// Checks shapes and values: every feature finite, every observable label in `[0, 1]`.
    pub fn new(
        width: usize,
        features: Vec<f32>,
        mut labels: Vec<[f32; HEADS]>,
        masks: Vec<[bool; HEADS]>,
    ) -> Result<Batch, ModelError> {
        let rows = labels.len();
        if width == 0 {
            return Err(ModelError::InvalidConfig(
                "feature width must be positive".into(),
            ));
        }
        if features.len() != rows.saturating_mul(width) {
            return Err(ModelError::Shape {
                what: "batch features (rows × width)",
                expected: rows.saturating_mul(width),
                got: features.len(),
            });
        }
        if masks.len() != rows {
            return Err(ModelError::Shape {
                what: "batch masks (one per row)",
                expected: rows,
                got: masks.len(),
            });
        }
        if let Some(i) = features.iter().position(|x| !x.is_finite()) {
            return Err(ModelError::InvalidData(format!(
                "feature {} of row {} is not a finite number",
                i % width,
                i / width
            )));
        }
        for (row, (l, m)) in labels.iter_mut().zip(&masks).enumerate() {
            for h in 0..HEADS {
                if !m[h] {
                    l[h] = 0.0;
                } else if !(0.0..=1.0).contains(&l[h]) {
                    return Err(ModelError::InvalidData(format!(
                        "label {h} of row {row} is {}, expected a value in [0, 1]",
                        l[h]
                    )));
                }
            }
        }
        Ok(Batch {
            width,
            features,
            weights: vec![1.0; labels.len()],
            labels,
            masks,
        })
    }

    /// The same rows with these weights: one per row, finite and not negative.
    pub fn with_weights(mut self, weights: Vec<f32>) -> Result<Batch, ModelError> {
        if weights.len() != self.rows() {
            return Err(ModelError::Shape {
                what: "batch weights (one per row)",
                expected: self.rows(),
                got: weights.len(),
            });
        }
        if let Some(row) = weights.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(ModelError::InvalidData(format!(
                "the weight of row {row} is {}, expected a finite number ≥ 0",
                weights[row]
            )));
        }
        self.weights = weights;
        Ok(self)
    }

    pub fn rows(&self) -> usize {
        self.labels.len()
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn features(&self) -> &[f32] {
        &self.features
    }
    pub fn labels(&self) -> &[[f32; HEADS]] {
        &self.labels
    }
    pub fn masks(&self) -> &[[bool; HEADS]] {
        &self.masks
    }
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.width..(i + 1) * self.width]
    }
}

/// The batches of one pass.
pub type Batches<'a> = Box<dyn Iterator<Item = Result<Batch, ModelError>> + 'a>;

/// A re-iterable source of batches: the trainer calls [`batches`](Dataset::batches) once per
/// epoch (and once more for evaluation). A pass must yield the same rows every time; their order
/// may change with `epoch` (and the trainer shuffles within each batch anyway).
pub trait Dataset {
    fn batches(&mut self, epoch: usize) -> Batches<'_>;
}

/// Batches held in memory: for tests, benchmarks and small histories.
#[derive(Debug, Clone, Default)]
pub struct InMemory(pub Vec<Batch>);

impl Dataset for InMemory {
    fn batches(&mut self, _epoch: usize) -> Batches<'_> {
        Box::new(self.0.iter().cloned().map(Ok))
    }
}

/// Adapts a closure that opens a new pass (e.g. runs the query again) into a [`Dataset`].
pub struct FromFn<F>(pub F);

impl<F, I> Dataset for FromFn<F>
where
    F: FnMut(usize) -> I,
    I: Iterator<Item = Result<Batch, ModelError>> + 'static,
{
    fn batches(&mut self, epoch: usize) -> Batches<'_> {
        Box::new((self.0)(epoch))
    }
}

/// The period a model was trained and validated on: stored in its artifact, so that an operator
/// can see what a model knows about, and so that evaluation never overlaps training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingWindow {
    /// Messages sent in `[train_from, valid_from)` are training data.
    pub train_from: DateTime<Utc>,
    /// Messages sent in `[valid_from, valid_until)` are validation data.
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

/// Which side of a time split a row falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Valid,
}

impl TrainingWindow {
    /// Splits `[from, until)` so that the last `valid_fraction` of the time is validation: the
    /// model is judged on a period after everything it learned from, as it will be used.
    pub fn split(
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        valid_fraction: f64,
    ) -> Result<TrainingWindow, ModelError> {
        if until <= from {
            return Err(ModelError::InvalidConfig(format!(
                "the training window must end after it starts ({from} .. {until})"
            )));
        }
        if !(valid_fraction > 0.0 && valid_fraction < 1.0) {
            return Err(ModelError::InvalidConfig(format!(
                "the validation fraction must be between 0 and 1, got {valid_fraction}"
            )));
        }
        let span = (until - from).num_seconds() as f64;
        let valid_from = until - Duration::seconds((span * valid_fraction).round() as i64);
        Ok(TrainingWindow {
            train_from: from,
            valid_from,
            valid_until: until,
        })
    }

    /// Where a row sent at `at` belongs; `None` outside the window.
    pub fn part(&self, at: DateTime<Utc>) -> Option<Part> {
        if at >= self.train_from && at < self.valid_from {
            Some(Part::Train)
        } else if at >= self.valid_from && at < self.valid_until {
            Some(Part::Valid)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn masked_labels_are_zeroed_and_bad_values_refused() {
        let b = Batch::new(
            1,
            vec![0.5],
            vec![[7.0, 1.0, 0.0, f32::NAN, 0.25]],
            vec![[false, true, true, false, true]],
        )
        .unwrap();
        assert_eq!(b.labels()[0], [0.0, 1.0, 0.0, 0.0, 0.25]);
        assert!(Batch::new(1, vec![0.5], vec![[2.0; HEADS]], vec![[true; HEADS]]).is_err());
        assert!(Batch::new(
            1,
            vec![f32::INFINITY],
            vec![[0.0; HEADS]],
            vec![[true; HEADS]]
        )
        .is_err());
        assert!(Batch::new(2, vec![0.5], vec![[0.0; HEADS]], vec![[true; HEADS]]).is_err());
        let one = || Batch::new(1, vec![0.5], vec![[0.0; HEADS]], vec![[true; HEADS]]).unwrap();
        assert_eq!(one().weights(), [1.0]);
        assert_eq!(one().with_weights(vec![2.5]).unwrap().weights(), [2.5]);
        assert!(one().with_weights(vec![-1.0]).is_err());
        assert!(one().with_weights(vec![f32::NAN]).is_err());
        assert!(one().with_weights(vec![1.0, 1.0]).is_err());
    }

    #[test]
    fn the_split_puts_the_last_fraction_into_validation() {
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let until = Utc.with_ymd_and_hms(2026, 1, 11, 0, 0, 0).unwrap();
        let w = TrainingWindow::split(from, until, 0.2).unwrap();
        assert_eq!(
            w.valid_from,
            Utc.with_ymd_and_hms(2026, 1, 9, 0, 0, 0).unwrap()
        );
        assert_eq!(w.part(from), Some(Part::Train));
        assert_eq!(w.part(w.valid_from), Some(Part::Valid));
        assert_eq!(w.part(until), None);
        assert!(TrainingWindow::split(until, from, 0.2).is_err());
        assert!(TrainingWindow::split(from, until, 1.0).is_err());
    }
}
