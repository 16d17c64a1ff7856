//! Training: a seeded, deterministic loop on the CPU, with early stopping.
//!
//! One epoch streams the training [`Dataset`]; each incoming batch is shuffled (from the seed,
//! the epoch and the batch's position) and cut into minibatches. Each minibatch takes one Adam
//! step on the network and one SGD step on the logistic baseline. After each epoch the
//! validation pass computes the masked loss; the best weights so far are kept, and training stops
//! when `patience` epochs in a row brought no improvement.
//!
//! The loss is the sum over heads of each head's mean binary cross-entropy over its *observable*
//! labels in the minibatch. A masked label gets weight exactly 0 (and its value was zeroed by
//! [`Batch::new`]), so it contributes nothing to the loss or its gradient: an outcome whose
//! horizon has not passed is neither a positive nor a negative.
//!
//! Determinism: weights and shuffles come from a SplitMix64 generator of our own (`rng.rs`), not
//! from burn's global seed; Flex's matrix products split work over output blocks, never over the
//! summed dimension, so the result does not depend on how many threads ran them. The tests check
//! that two runs, and a run on one thread, give bit-identical weights.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};

use crate::baseline::Logistic;
use crate::data::{Batch, Dataset, TrainingWindow};
use crate::error::ModelError;
use crate::eval::{self, HeadEval};
use crate::features::FeatureSpec;
use crate::model::Model;
use crate::network::{to_vec, Architecture, Network};
use crate::rng;
use crate::summary::{EpochStats, TrainConfig, TrainingSummary};
use crate::HEADS;

/// Trains a model on `train`, stopping early on `valid`, and evaluates it on `valid` beside the
/// base-rate and logistic-regression baselines. The returned model carries its metrics, window
/// and training summary, ready for [`Model::to_bytes`].
pub fn train(
    spec: &FeatureSpec,
    config: &TrainConfig,
    train: &mut dyn Dataset,
    valid: &mut dyn Dataset,
    window: Option<TrainingWindow>,
) -> Result<Model, ModelError> {
    config.check()?;
    let arch = Architecture {
        input: spec.width(),
        hidden: config.hidden,
    };
    arch.check()?;
    let width = spec.width();
    let device = Device::flex().autodiff();
    let mut network = Network::init(&arch, config.seed, &device);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let mut logistic = Logistic::new(width, config.baseline_learning_rate);

    let mut epochs = Vec::new();
    let mut best: Option<(f64, usize, Vec<Vec<f32>>)> = None;
    // Per head: labels seen, and their sum (the positives, or the shares of a soft label).
    let mut base_counts = [(0u64, 0.0f64); HEADS];
    let mut untreated_rows = 0u64;
    let channel_columns: Vec<usize> = spec
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name.starts_with("channel="))
        .map(|(i, _)| i)
        .collect();
    let mut since_best = 0;

    for epoch in 0..config.max_epochs {
        let started = Instant::now();
        let (mut loss_sum, mut steps, mut rows) = (0.0f64, 0u64, 0u64);
        for (batch_index, batch) in train.batches(epoch).enumerate() {
            let batch = batch?;
            check_width(&batch, width)?;
            if epoch == 0 {
                for (l, m) in batch.labels().iter().zip(batch.masks()) {
                    for h in 0..HEADS {
                        if m[h] {
                            base_counts[h].0 += 1;
                            base_counts[h].1 += f64::from(l[h]);
                        }
                    }
                }
                if !channel_columns.is_empty() {
                    untreated_rows += (0..batch.rows())
                        .filter(|&r| {
                            let row = batch.row(r);
                            channel_columns.iter().all(|&c| row[c] == 0.0)
                        })
                        .count() as u64;
                }
                if batch_index == 0 {
                    logistic.start_at(&rates(&base_counts));
                }
            }
            let mut order: Vec<usize> = (0..batch.rows()).collect();
            rng::derive(config.seed, 2, ((epoch as u64) << 32) | batch_index as u64)
                .shuffle(&mut order);
            for index in order.chunks(config.batch_size) {
                let (x, y, w) = minibatch(&batch, index);
                if w.iter().all(|w| *w == 0.0) {
                    continue; // Nothing observable: no step.
                }
                let n = index.len();
                let x = Tensor::<2>::from_data(TensorData::new(x, [n, width]), &device);
                let y = Tensor::<2>::from_data(TensorData::new(y, [n, HEADS]), &device);
                let w = Tensor::<2>::from_data(TensorData::new(w, [n, HEADS]), &device);
                let z = network.forward(x);
                // Numerically stable binary cross-entropy on logits:
                // max(z, 0) − z·y + ln(1 + e^−|z|).
                let l = relu(z.clone()) - z.clone() * y + z.abs().neg().exp().log1p();
                let loss = (l * w).sum();
                let value = to_vec(loss.clone().into_data()).first().copied();
                loss_sum += f64::from(value.unwrap_or(f32::NAN));
                let grads = GradientsParams::from_grads(loss.backward(), &network);
                network = optim.step(config.learning_rate, network, grads);
                logistic.step(batch.features(), batch.labels(), batch.masks(), index);
                steps += 1;
                rows += n as u64;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if epoch == 0 && base_counts.iter().all(|(n, _)| *n == 0) {
            return Err(ModelError::NoData(
                "the training period has no row with an observable label".into(),
            ));
        }
        let inference = network.valid();
        let valid_loss = validation_loss(&inference, width, valid)?;
        if !valid_loss.is_finite() {
            return Err(ModelError::InvalidData(
                "the validation loss is not a number (diverged training?)".into(),
            ));
        }
        epochs.push(EpochStats {
            epoch,
            train_loss: if steps == 0 {
                0.0
            } else {
                loss_sum / steps as f64
            },
            valid_loss,
            train_rows: rows,
            rows_per_second: rows as f64 / seconds.max(1e-9),
        });
        let improved = match &best {
            None => true,
            Some((b, _, _)) => valid_loss < b - config.min_delta,
        };
        if improved {
            best = Some((valid_loss, epoch, inference.params()));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= config.patience {
                break;
            }
        }
    }

    let (best_valid_loss, best_epoch, params) =
        best.ok_or_else(|| ModelError::NoData("no epoch completed".into()))?;
    let base_rates = rates(&base_counts);
    let mut model = Model::from_params(spec.clone(), arch, params)?;
    model.metrics = Some(evaluate_with(&model, &logistic, &base_rates, valid)?);
    model.window = window;
    model.training = Some(TrainingSummary {
        config: config.clone(),
        epochs,
        best_epoch,
        best_valid_loss,
        train_base_rates: base_rates,
        train_labels: base_counts.map(|(n, _)| n),
        untreated_rows,
        logistic,
    });
    Ok(model)
}

fn check_width(batch: &Batch, width: usize) -> Result<(), ModelError> {
    if batch.width() != width {
        return Err(ModelError::Shape {
            what: "batch width (the feature spec's width)",
            expected: width,
            got: batch.width(),
        });
    }
    Ok(())
}

fn rates(counts: &[(u64, f64); HEADS]) -> [f64; HEADS] {
    let mut out = [0.0; HEADS];
    for (o, (n, p)) in out.iter_mut().zip(counts) {
        // With no label at all, 0.5 is the least wrong constant.
        *o = if *n == 0 { 0.5 } else { *p / *n as f64 };
    }
    out
}

/// Gathers a minibatch: features, labels, and per-element loss weights (the row's weight where
/// the label is observable, 0 where masked, divided by that head's total weight in this
/// minibatch, so each head's loss is a weighted mean over its own labels).
fn minibatch(batch: &Batch, index: &[usize]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut x = Vec::with_capacity(index.len() * batch.width());
    let mut y = Vec::with_capacity(index.len() * HEADS);
    let mut w = Vec::with_capacity(index.len() * HEADS);
    let mut totals = [0f32; HEADS];
    for &r in index {
        x.extend_from_slice(batch.row(r));
        y.extend_from_slice(&batch.labels()[r]);
        let weight = batch.weights()[r];
        for (t, &m) in totals.iter_mut().zip(&batch.masks()[r]) {
            let v = if m { weight } else { 0.0 };
            *t += v;
            w.push(v);
        }
    }
    for (i, w) in w.iter_mut().enumerate() {
        let t = totals[i % HEADS];
        if t > 0.0 {
            *w /= t;
        }
    }
    (x, y, w)
}

const VALID_CHUNK_ROWS: usize = 4096;

/// The validation loss: per head, the mean log loss over observable labels, weighted by the
/// rows' weights as in training (so that early stopping judges what training minimises);
/// summed over heads.
fn validation_loss(
    network: &Network,
    width: usize,
    valid: &mut dyn Dataset,
) -> Result<f64, ModelError> {
    let device = Device::flex();
    // Per head: Σ weight · log loss, Σ weight.
    let mut acc = [(0.0f64, 0.0f64); HEADS];
    for batch in valid.batches(0) {
        let batch = batch?;
        check_width(&batch, width)?;
        if batch.rows() == 0 {
            continue;
        }
        // In chunks, so that a large streamed batch never becomes one huge activation tensor.
        for start in (0..batch.rows()).step_by(VALID_CHUNK_ROWS) {
            let rows = VALID_CHUNK_ROWS.min(batch.rows() - start);
            let x = batch.features()[start * width..(start + rows) * width].to_vec();
            let x = Tensor::<2>::from_data(TensorData::new(x, [rows, width]), &device);
            let p = to_vec(sigmoid(network.forward(x)).into_data());
            let labels = &batch.labels()[start..start + rows];
            let masks = &batch.masks()[start..start + rows];
            let weights = &batch.weights()[start..start + rows];
            for (r, ((l, m), w)) in labels.iter().zip(masks).zip(weights).enumerate() {
                for h in 0..HEADS {
                    if m[h] {
                        let p = p.get(r * HEADS + h).copied().unwrap_or(f32::NAN);
                        let w = f64::from(*w);
                        acc[h].0 +=
                            w * eval::soft_log_loss(eval::readable(f64::from(p)), f64::from(l[h]));
                        acc[h].1 += w;
                    }
                }
            }
        }
    }
    Ok(acc
        .iter()
        .map(|(loss, weight)| if *weight > 0.0 { loss / weight } else { 0.0 })
        .sum())
}

/// Evaluates a trained model on another period (e.g. one after its validation period) beside
/// the baselines stored with it: its training base rates and its logistic regression.
pub fn evaluate(model: &Model, data: &mut dyn Dataset) -> Result<eval::Metrics, ModelError> {
    let summary = model.training.as_ref().ok_or_else(|| {
        ModelError::NoData("the model carries no training summary, so no baselines".into())
    })?;
    evaluate_with(model, &summary.logistic, &summary.train_base_rates, data)
}

/// Evaluates `model` on `data` beside the base-rate baseline (with the given training base
/// rates) and a logistic regression trained on the same batches.
fn evaluate_with(
    model: &Model,
    logistic: &Logistic,
    base_rates: &[f64; HEADS],
    data: &mut dyn Dataset,
) -> Result<eval::Metrics, ModelError> {
    let mut evals: [HeadEval; HEADS] = Default::default();
    let mut rows = 0u64;
    let mut preds = Vec::new();
    for batch in data.batches(0) {
        let batch = batch?;
        check_width(&batch, model.spec().width())?;
        preds.clear();
        preds.resize(batch.rows(), [0.0; HEADS]);
        model.predict_rows(
            model.feature_version(),
            batch.features(),
            batch.rows(),
            &mut preds,
        )?;
        for (r, pred) in preds.iter().enumerate() {
            rows += 1;
            let lr = logistic.predict(batch.row(r));
            for (h, e) in evals.iter_mut().enumerate() {
                if batch.masks()[r][h] {
                    let label = batch.labels()[r][h];
                    e.model.add(f64::from(pred[h]), label);
                    e.base.add(base_rates[h], label);
                    e.logistic.add(lr[h], label);
                }
            }
        }
    }
    Ok(eval::metrics(rows, &evals, base_rates))
}
