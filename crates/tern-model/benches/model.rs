//! Inference and training throughput of the 48 → 128 → 64 → 4-head network, in rows per second.
//!
//! `cargo bench -p tern-model --bench model` (release). Prints one line per figure in the same
//! format as `bench/torch_peer.py`, so `bench/run.sh` can put them side by side. Figures are
//! medians of `REPEATS` runs; this machine is noisy.

use std::time::Instant;

use tern_model::{
    train, Batch, CandidateContext, ChannelHistory, Engine, FeatureMatrix, FeatureSpec, InMemory,
    Model, TrainConfig, UserContext, HEADS,
};

const REPEATS: usize = 5;

struct Gen(u64);
impl Gen {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32) * 2.0
            - 1.0
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn batches(spec: &FeatureSpec, rows: usize, per_batch: usize, g: &mut Gen) -> InMemory {
    let w = spec.width();
    let mut out = Vec::new();
    let mut done = 0;
    while done < rows {
        let n = per_batch.min(rows - done);
        let x: Vec<f32> = (0..n * w).map(|_| g.f()).collect();
        let labels = (0..n)
            .map(|i| {
                let z = x[i * w] * 2.0 - x[i * w + 1];
                [
                    f32::from(z > 0.0),
                    f32::from(g.f() > 0.0),
                    0.0,
                    f32::from(g.f() > 0.9),
                    g.f(),
                ]
            })
            .collect();
        let masks = (0..n).map(|_| [true, true, false, true, true]).collect();
        out.push(Batch::new(w, x, labels, masks).unwrap());
        done += n;
    }
    InMemory(out)
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let spec = FeatureSpec::default();
    let mut g = Gen(0x1234_5678_9abc_def1);
    let threads = rayon::current_num_threads();
    println!(
        "# tern-model bench: {} features, threads {threads}",
        spec.width()
    );

    // Training: 200k rows, batch 1024, one epoch per run (no early stop: patience high).
    let train_rows = 200_000;
    let mut train_data = batches(&spec, train_rows, 50_000, &mut g);
    let mut valid_data = batches(&spec, 10_000, 10_000, &mut g);
    let mut model: Option<Model> = None;
    if wanted("train") {
        let config = TrainConfig {
            batch_size: 1024,
            max_epochs: 3,
            patience: 10,
            ..TrainConfig::default()
        };
        let trained = train(&spec, &config, &mut train_data, &mut valid_data, None).unwrap();
        let summary = trained.training.as_ref().unwrap();
        let rates: Vec<f64> = summary.epochs.iter().map(|e| e.rows_per_second).collect();
        println!("train batch=1024 rows/s={:.0}", median(rates));
        model = Some(trained);
    }
    let mut model = match model {
        Some(m) => m,
        None => {
            let config = TrainConfig {
                max_epochs: 1,
                ..TrainConfig::default()
            };
            let mut small = batches(&spec, 2_000, 2_000, &mut g);
            train(&spec, &config, &mut small, &mut valid_data, None).unwrap()
        }
    };

    if wanted("encode") {
        // Encoding one candidate (no PyTorch peer: this is tern's own feature code).
        let signals = std::collections::BTreeMap::from([
            ("relevance".to_string(), 0.7),
            ("order_value".to_string(), 25.0),
        ]);
        let history = [
            ChannelHistory {
                channel: "push",
                sent_1d: 1,
                sent_7d: 4,
                sent_28d: 11,
                opened_28d: 3,
                hours_since_last: Some(5.0),
            },
            ChannelHistory {
                channel: "email",
                sent_1d: 0,
                sent_7d: 2,
                sent_28d: 8,
                opened_28d: 4,
                hours_since_last: Some(50.0),
            },
        ];
        let rows = 200_000;
        let mut m = spec.matrix(rows);
        let rates = (0..REPEATS)
            .map(|_| {
                m.clear();
                let t = Instant::now();
                for i in 0..rows {
                    let ctx = CandidateContext {
                        channel: ["push", "email", "in_app"][i % 3],
                        category: "content",
                        template: "new_release",
                        signals: &signals,
                        age_hours: (i % 48) as f64,
                        hours_to_expiry: 24.0,
                        user: UserContext {
                            tenure_days: 300.0,
                            utc_offset_minutes: 60,
                            active_days_28d: 9.0,
                            hours_since_active: Some(3.0),
                        },
                        history: &history,
                        local_hour: (i % 24) as f64,
                        local_weekday: (i % 7) as u32,
                    };
                    m.push(&spec, &ctx).unwrap();
                }
                rows as f64 / t.elapsed().as_secs_f64()
            })
            .collect();
        println!("encode batch=1 rows/s={:.0}", median(rates));
    }

    if let Ok(chunk) = std::env::var("TERN_CHUNK_ROWS") {
        model.set_chunk_rows(chunk.parse().expect("TERN_CHUNK_ROWS is a number"));
    }
    // `infer` is the fused engine; `infer-burn` is burn's Flex backend on the module (the default).
    for (engine, prefix) in [(Engine::Fused, "infer"), (Engine::Burn, "infer-burn")] {
        model.set_engine(engine);
        for batch in [1usize, 256, 4096, 65_536] {
            let name = format!("{prefix} batch={batch}");
            if !wanted(&name) {
                continue;
            }
            let x: Vec<f32> = (0..batch * spec.width()).map(|_| g.f()).collect();
            let x = FeatureMatrix::from_raw(&spec, x).unwrap();
            let mut out = vec![[0.0f32; HEADS]; batch];
            // Enough calls for ~0.3 s per repeat at a rough 1 M rows/s, at least 20.
            let calls = (300_000 / batch).max(20);
            model.predict(&x, &mut out).unwrap(); // Warm-up.
            let rates = (0..REPEATS)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..calls {
                        model.predict(&x, &mut out).unwrap();
                    }
                    (calls * batch) as f64 / t.elapsed().as_secs_f64()
                })
                .collect();
            println!("{name} rows/s={:.0}", median(rates));
            std::hint::black_box(&out);
        }
    }
}
