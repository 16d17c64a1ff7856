//! The model's promises, on synthetic data with a planted signal.

use tern_model::{
    evaluate, promotable, train, Batch, ChannelHistory, Engine, FeatureMatrix, FeatureSpec, FromFn,
    Head, InMemory, Model, ModelError, SpecDecl, TrainConfig, UserContext, UserState, ValueConfig,
    ValueFit, HEADS,
};

/// A deterministic generator for test data (xorshift64*), independent of the crate's.
struct Gen(u64);
impl Gen {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// `rows` rows of the default spec's width with a planted signal: conversion depends on features
/// 0, 1 and the product of 2 and 3; engagement on feature 4; reachability loss on feature 5;
/// activity (a share of seven days) on feature 6.
/// Retention is observable for only half the rows; `masked_value` is what the masked labels hold
/// (it must not matter).
fn data(seed: u64, rows: usize, batch_rows: usize, masked_value: f32) -> InMemory {
    let width = FeatureSpec::default().width();
    let mut g = Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut batches = Vec::new();
    let mut done = 0;
    while done < rows {
        let n = batch_rows.min(rows - done);
        let mut x = Vec::with_capacity(n * width);
        let mut labels = Vec::with_capacity(n);
        let mut masks = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f32> = (0..width).map(|_| g.f() * 2.0 - 1.0).collect();
            let p = [
                sigmoid(3.0 * row[0] - 2.0 * row[1] + 3.0 * row[2] * row[3] - 0.5),
                sigmoid(2.5 * row[4]),
                sigmoid(1.5 * row[0] + 1.5 * row[4]),
                sigmoid(-2.0 + 2.0 * row[5]),
                sigmoid(1.0 - 2.0 * row[6]),
            ];
            let mut l = [0.0; HEADS];
            let mut m = [true; HEADS];
            for h in 0..HEADS {
                l[h] = if g.f() < p[h] { 1.0 } else { 0.0 };
            }
            // Activity is a share: a soft label, the mean of seven days' draws.
            l[4] = (0..7).filter(|_| g.f() < p[4]).count() as f32 / 7.0;
            if g.f() < 0.5 {
                m[2] = false;
                l[2] = masked_value;
            }
            x.extend_from_slice(&row);
            labels.push(l);
            masks.push(m);
        }
        batches.push(Batch::new(width, x, labels, masks).unwrap());
        done += n;
    }
    InMemory(batches)
}

fn config() -> TrainConfig {
    TrainConfig {
        seed: 7,
        batch_size: 128,
        learning_rate: 3e-3,
        max_epochs: 6,
        patience: 2,
        ..TrainConfig::default()
    }
}

fn trained(masked_value: f32, seed: u64) -> Model {
    trained_with(masked_value, TrainConfig { seed, ..config() })
}

fn trained_with(masked_value: f32, config: TrainConfig) -> Model {
    let spec = FeatureSpec::default();
    train(
        &spec,
        &config,
        &mut data(1, 4000, 1000, masked_value),
        &mut data(2, 2000, 1000, masked_value),
        None,
    )
    .unwrap()
}

fn some_rows(rows: usize) -> FeatureMatrix {
    let spec = FeatureSpec::default();
    let mut g = Gen(99);
    let x = (0..rows * spec.width())
        .map(|_| g.f() * 2.0 - 1.0)
        .collect();
    FeatureMatrix::from_raw(&spec, x).unwrap()
}

fn predict(model: &Model, x: &FeatureMatrix) -> Vec<[f32; HEADS]> {
    let mut out = vec![[0.0; HEADS]; x.rows()];
    model.predict(x, &mut out).unwrap();
    out
}

#[test]
fn the_model_learns_a_planted_signal_and_beats_both_baselines() {
    let model = trained(0.0, 7);
    let metrics = model.metrics.as_ref().unwrap();
    let conversion = metrics.head(Head::Conversion).unwrap();
    let auc = conversion.model.auc.unwrap();
    assert!(auc > 0.8, "conversion AUC {auc} on held-out data");
    assert!(conversion.model.log_loss < conversion.base_rate.log_loss);
    // The interaction term (feature 2 × feature 3) is invisible to a linear model.
    assert!(
        conversion.model.log_loss < conversion.logistic.log_loss,
        "{conversion:?}"
    );
    let engagement = metrics.head(Head::Engagement).unwrap();
    assert!(engagement.model.auc.unwrap() > 0.75, "{engagement:?}");
    let retention = metrics.head(Head::Retention).unwrap();
    assert!(
        retention.labels > 800 && retention.labels < 1200,
        "only observable retention labels are evaluated: {}",
        retention.labels
    );
    // A soft label is learned like any other: its share, better than the base rate.
    let activity = metrics.head(Head::Activity).unwrap();
    assert!(
        activity.model.log_loss < activity.base_rate.log_loss - 0.01,
        "{activity:?}"
    );
    assert!(promotable(metrics), "{metrics:?}");
    let summary = model.training.as_ref().unwrap();
    assert!(summary.epochs.len() <= 6 && !summary.epochs.is_empty());
    let rate = summary.train_base_rates[Head::Activity.index()];
    assert!(
        rate > 0.5 && rate < 0.8,
        "the mean share, not a count of halves: {rate}"
    );

    // A later evaluation of the same period against the stored baselines gives the same figures.
    let again = evaluate(&model, &mut data(2, 2000, 1000, 0.0)).unwrap();
    assert_eq!(&again, metrics);
}

#[test]
fn training_streams_batches_from_a_source_and_reports_its_errors() {
    let spec = FeatureSpec::default();
    let config = TrainConfig {
        max_epochs: 2,
        ..config()
    };
    // Each pass regenerates its batches lazily, as a database cursor would.
    let passes = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = passes.clone();
    let mut train_set = FromFn(move |_epoch| {
        counter.set(counter.get() + 1);
        data(1, 1000, 250, 0.0).0.into_iter().map(Ok)
    });
    let mut valid_set = data(2, 500, 500, 0.0);
    let model = train(&spec, &config, &mut train_set, &mut valid_set, None).unwrap();
    let summary = model.training.unwrap();
    assert_eq!(summary.epochs[0].train_rows, 1000);
    assert_eq!(passes.get(), summary.epochs.len(), "one pass per epoch");

    let mut failing = FromFn(|_epoch| {
        std::iter::once(Err(ModelError::from_source(std::io::Error::other(
            "connection reset",
        ))))
    });
    let err = train(&spec, &config, &mut failing, &mut valid_set, None).unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");

    let mut empty = InMemory(vec![]);
    let err = train(&spec, &config, &mut empty, &mut valid_set, None).unwrap_err();
    assert!(matches!(err, ModelError::NoData(_)), "{err}");

    let mut narrow = InMemory(vec![Batch::new(
        3,
        vec![0.0; 3],
        vec![[0.0; HEADS]],
        vec![[true; HEADS]],
    )
    .unwrap()]);
    let err = train(&spec, &config, &mut narrow, &mut valid_set, None).unwrap_err();
    assert!(matches!(err, ModelError::Shape { .. }), "{err}");
}

/// Rows that all look alike, a quarter of them positive on every head; the positives weigh
/// `weight` each.
fn alike(weight: f32) -> InMemory {
    let width = FeatureSpec::default().width();
    let rows = 2000;
    let labels: Vec<[f32; HEADS]> = (0..rows)
        .map(|r| [if r % 4 == 0 { 1.0 } else { 0.0 }; HEADS])
        .collect();
    let weights = labels
        .iter()
        .map(|l| if l[0] > 0.5 { weight } else { 1.0 })
        .collect();
    let batch = Batch::new(
        width,
        vec![0.25; rows * width],
        labels,
        vec![[true; HEADS]; rows],
    )
    .unwrap()
    .with_weights(weights)
    .unwrap();
    InMemory(vec![batch])
}

#[test]
fn row_weights_count_in_the_loss() {
    // Unweighted, the rate is 1/4; with each positive weighing 3 (as a row logged with
    // probability 1/3 stands for three), the weighted rate is 3/6 = 1/2.
    let spec = FeatureSpec::default();
    let rate = |weight: f32| {
        let config = TrainConfig {
            max_epochs: 8,
            patience: 8,
            ..config()
        };
        let model = train(&spec, &config, &mut alike(weight), &mut alike(weight), None).unwrap();
        let x = FeatureMatrix::from_raw(&spec, vec![0.25; spec.width()]).unwrap();
        predict(&model, &x)[0]
    };
    for (h, p) in rate(1.0).iter().enumerate() {
        assert!((p - 0.25).abs() < 0.03, "head {h}: {p} unweighted");
    }
    for (h, p) in rate(3.0).iter().enumerate() {
        assert!(
            (p - 0.5).abs() < 0.03,
            "head {h}: {p} with the positives weighing 3"
        );
    }
}

#[test]
fn masked_labels_do_not_leak_into_training() {
    let a = trained(0.0, 11);
    let b = trained(1.0, 11);
    assert_eq!(
        a.params(),
        b.params(),
        "flipping masked labels changed the weights"
    );
}

#[test]
fn the_same_seed_gives_the_same_weights_and_another_seed_does_not() {
    let a = trained(0.0, 5);
    let b = trained(0.0, 5);
    assert_eq!(a.params(), b.params());
    let c = trained(0.0, 6);
    assert_ne!(a.params(), c.params());
    // Nor does the number of threads: with minibatches of 1,024 rows Flex runs the larger
    // matrix products on several threads, but splits them over output blocks only.
    let big = TrainConfig {
        seed: 5,
        batch_size: 1024,
        max_epochs: 2,
        ..config()
    };
    let threaded = trained_with(0.0, big.clone());
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| trained_with(0.0, big));
    assert_eq!(
        threaded.params(),
        one_thread.params(),
        "weights depend on the thread count"
    );
}

#[test]
fn save_then_load_gives_identical_predictions_and_damage_is_refused() {
    let model = trained(0.0, 7);
    let bytes = model.to_bytes().unwrap();
    let loaded = Model::from_bytes(&bytes).unwrap();
    let x = some_rows(5000);
    assert_eq!(predict(&model, &x), predict(&loaded, &x));
    // Metrics go through JSON, whose f64 parsing may differ in the last bit (serde_json without
    // `float_roundtrip`); the weights are raw bytes and exact.
    let (m, l) = (
        model.metrics.as_ref().unwrap(),
        loaded.metrics.as_ref().unwrap(),
    );
    for (a, b) in m.heads.iter().zip(&l.heads) {
        assert_eq!(
            (a.head, a.labels, a.positives),
            (b.head, b.labels, b.positives)
        );
        assert!((a.model.log_loss - b.model.log_loss).abs() < 1e-12);
    }
    let (t, u) = (
        model.training.as_ref().unwrap(),
        loaded.training.as_ref().unwrap(),
    );
    assert_eq!(
        (&t.config, t.best_epoch, t.epochs.len()),
        (&u.config, u.best_epoch, u.epochs.len())
    );
    assert_eq!(loaded.feature_version(), model.feature_version());

    let mut damaged = bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    assert!(matches!(
        Model::from_bytes(&damaged),
        Err(ModelError::Artifact(_))
    ));
    assert!(Model::from_bytes(&bytes[..bytes.len() - 4]).is_err());
    assert!(Model::from_bytes(b"not a model").is_err());
    assert!(Model::from_bytes(&[]).is_err());
}

#[test]
fn features_of_another_version_are_refused() {
    let model = trained(0.0, 7);
    let mut decl: SpecDecl = FeatureSpec::default().declaration().clone();
    decl.category_buckets = 16;
    let other = FeatureSpec::new(decl).unwrap();
    let x = FeatureMatrix::from_raw(&other, vec![0.0; other.width() * 3]).unwrap();
    let mut out = vec![[0.0; HEADS]; 3];
    let err = model.predict(&x, &mut out).unwrap_err();
    match &err {
        ModelError::FeatureVersionMismatch { model: m, features } => {
            assert_eq!(m, model.feature_version());
            assert_eq!(features, other.version());
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(err.to_string().contains("feature version mismatch"));

    // Same width, other version: still refused.
    let raw = vec![0.0; model.spec().width()];
    let err = model.predict_rows("fs-0000000000000000", &raw, 1, &mut out[..1]);
    assert!(matches!(
        err,
        Err(ModelError::FeatureVersionMismatch { .. })
    ));
}

#[test]
fn both_engines_agree_whole_chunked_and_row_by_row() {
    let mut model = trained(0.0, 7);
    let x = some_rows(3000);
    model.set_engine(Engine::Burn);
    model.set_chunk_rows(100_000);
    let reference = predict(&model, &x);
    let close = |a: &[[f32; HEADS]], at: usize, what: &str| {
        for (i, a) in a.iter().enumerate() {
            let b = reference[at + i];
            for h in 0..HEADS {
                assert!(
                    (a[h] - b[h]).abs() < 1e-5,
                    "{what}, row {}: {a:?} vs {b:?}",
                    at + i
                );
            }
        }
    };
    for engine in [Engine::Burn, Engine::Fused] {
        model.set_engine(engine);
        for chunk in [100_000, 256, 1000] {
            model.set_chunk_rows(chunk);
            close(
                &predict(&model, &x),
                0,
                &format!("{engine:?} in chunks of {chunk}"),
            );
        }
        let mut one = [[0.0; HEADS]; 1];
        let width = model.spec().width();
        for i in [0, 1, 2999] {
            let row = &x.as_slice()[i * width..(i + 1) * width];
            model.predict_rows(x.version(), row, 1, &mut one).unwrap();
            close(&one, i, &format!("{engine:?}, one row"));
        }
    }
    let mut out = vec![[0.0; HEADS]; 2];
    assert!(matches!(
        model.predict(&x, &mut out),
        Err(ModelError::Shape { .. })
    ));
}

#[test]
fn a_value_function_travels_in_the_artifact_and_older_formats_still_load() {
    let mut model = trained(0.0, 7);
    let plain = model.to_bytes().unwrap();
    let mut fit = ValueFit::new(vec!["push".into()], ValueConfig::for_horizon(2.0, 1)).unwrap();
    fit.user(1);
    let history = [ChannelHistory {
        channel: "push",
        sent_7d: 2,
        ..ChannelHistory::default()
    }];
    let state = UserState {
        user: UserContext::default(),
        history: &history,
        lost: &[],
    };
    fit.push(&state, true, &state);
    fit.push(&state, false, &state);
    model.value = Some(fit.finish().unwrap());
    let loaded = Model::from_bytes(&model.to_bytes().unwrap()).unwrap();
    let (a, b) = (
        model.value.as_ref().unwrap(),
        loaded.value.as_ref().unwrap(),
    );
    assert_eq!(a.channels, b.channels);
    assert_eq!(a.weights.len(), b.weights.len());
    for (x, y) in a.weights.iter().zip(&b.weights) {
        assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{x} vs {y}");
    }

    // Format 2 had no value function: it loads, without one. A newer format is refused.
    let mut older = plain.clone();
    older[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert!(Model::from_bytes(&older).unwrap().value.is_none());
    let mut newer = plain;
    newer[8..12].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(
        Model::from_bytes(&newer),
        Err(ModelError::Artifact(m)) if m.contains("format 4")
    ));
}
