//! Candidates planned per second (selection and timing; the model is excluded: scores are inline)
//! at 100k users × 8 opportunities × 3 channels, on one thread and on all of them.
//!
//! `cargo bench -p tern-planner`; `TERN_BENCH_USERS=10000` for a quicker run.

use std::hint::black_box;

use chrono::DateTime;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tern_planner::{synthetic, InlineScores, Planner, SYNTHETIC_NOW};

fn plan(c: &mut Criterion) {
    let users: usize = std::env::var("TERN_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (config, input) = synthetic(users, 8, 3, 42);
    let planner = Planner::new(config).expect("the synthetic config is valid");
    let now = DateTime::from_timestamp(SYNTHETIC_NOW, 0).expect("valid instant");
    let candidates = (users * 8 * 3) as u64;

    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    group.throughput(Throughput::Elements(candidates));
    for threads in [1, 0] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        let name = if threads == 1 {
            "1-thread".to_string()
        } else {
            format!("{}-threads", pool.current_num_threads())
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                pool.install(|| {
                    black_box(planner.plan(&input, now, 7, &InlineScores).expect("plan"))
                })
            })
        });
    }
    group.finish();
}

/// The same data with a push budget that binds (a quarter of the unconstrained push volume), so
/// the price search runs: 1 + BUDGET_ROUNDS + 1 passes. 10k users, all threads.
fn plan_with_budget(c: &mut Criterion) {
    let users = 10_000;
    let (mut config, input) = synthetic(users, 8, 3, 42);
    let now = DateTime::from_timestamp(SYNTHETIC_NOW, 0).expect("valid instant");
    let free = Planner::new(config.clone())
        .expect("valid")
        .plan(&input, now, 7, &InlineScores)
        .expect("plan");
    let push = free.stats.chosen["push"];
    config.channels[0].budget = Some(tern_planner::Budget {
        max: push / 4,
        per_secs: 86400,
    });
    let planner = Planner::new(config).expect("valid");
    let mut group = c.benchmark_group("plan-budget");
    group.sample_size(10);
    group.throughput(Throughput::Elements((users * 8 * 3) as u64));
    group.bench_function("binding-push-budget", |b| {
        b.iter(|| black_box(planner.plan(&input, now, 7, &InlineScores).expect("plan")))
    });
    group.finish();
}

criterion_group!(benches, plan, plan_with_budget);
criterion_main!(benches);
