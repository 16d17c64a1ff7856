//! `tern bench`: measurements of tern's own hot paths beside the naive way of doing the same,
//! in the same run, on the same database. docs/benchmarks.md quotes its output.
//!
//! Every benchmark works in a scratch database of its own (created and dropped here), so it can
//! be pointed at a real server without touching tern's tables.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use chrono::{TimeDelta, Utc};
use futures::future::join_all;
use tern_core::NewOpportunity;
use tern_planner::{synthetic, value_of, InlineScores, Planner, SYNTHETIC_NOW};
use tern_store::peer::{PeerCandidate, PeerCaps};
use tern_store::Store;

use crate::db::Database;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Opportunity ingest: batched, idempotent `Store::ingest_opportunities` against one
    /// `INSERT` per row.
    Ingest(IngestArgs),
    /// The planner: candidates planned per second (selection and send times, model excluded) on
    /// one thread and on all, against the same selection written as SQL window functions.
    Plan(PlanArgs),
    /// The model at replan scale: the seconds a replan of --users × --opportunities × --channels
    /// candidates spends encoding features and scoring them, the way the planner calls it.
    Model(ModelArgs),
    /// The delivery path: Pull + Ack over gRPC on loopback by concurrent clients against a
    /// published schedule, beside the same work done by calling the store directly (no gRPC);
    /// then Pull + Ack started at fixed rates (an open loop), with their latency against the
    /// offered load.
    Serve(ServeArgs),
    /// A full replan of --users through the daemon's paged path right after a COPY load, an
    /// incremental replan after --change of the users changed, and the full replan again with
    /// --replicas daemons sharing it: seconds, candidates per second and peak memory.
    Replan(crate::bench_replan::ReplanArgs),
    /// Off-policy evaluation against the truth on the simulator: over --seeds seeds, how often
    /// the IPS, SNIPS and doubly robust intervals for a candidate policy cover the value that
    /// running it actually earns (docs/evaluation.md).
    Ope(crate::coverage::CoverageArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Items in the schedule the gRPC clients drain.
    #[arg(long, default_value_t = 1_000_000)]
    items: usize,
    /// Items the direct-store peer drains (a separate channel of the same schedule).
    #[arg(long, default_value_t = 200_000)]
    peer_items: usize,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Items per Pull.
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// Database connections of the server (and of the peer).
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Items seeded (on a third channel) for the open-loop runs.
    #[arg(long, default_value_t = 400_000)]
    open_items: usize,
    /// Seconds of each open-loop run.
    #[arg(long, default_value_t = 10)]
    open_secs: u64,
    /// Offered loads of the open-loop runs, as shares of the round trips per second the closed
    /// loop reached (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.8")]
    open_loads: Vec<f64>,
}

#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// 420,000 users × 8 × 3 is about 10 million candidates.
    #[arg(long, default_value_t = 420_000)]
    users: usize,
    #[arg(long, default_value_t = 8)]
    opportunities: usize,
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Score as `value: longTerm` does: a no-send row per opportunity beside its channels, and
    /// retention from a value function's effect of each send (one state per user, one marginal
    /// per channel). A plan scores such users at 8 moments, so it calls this 8 times.
    #[arg(long)]
    long_term: bool,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Opportunities per user.
    #[arg(long, default_value_t = 8)]
    opportunities: usize,
    /// Channels per opportunity.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Timed runs of each; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Rows to ingest through the batch path.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Batches in flight at once (each on its own connection).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Rows to ingest one `INSERT` at a time (the baseline; slow, so fewer).
    #[arg(long, default_value_t = 20_000)]
    baseline_rows: usize,
}

pub async fn run(url: Option<&str>, bench: Bench) -> Result<ExitCode> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures from it are not representative");
    }
    match bench {
        // No database: the model is scored in memory, the simulator runs in memory.
        Bench::Model(args) => return model(args),
        Bench::Ope(args) => return tokio::task::block_in_place(|| crate::coverage::run(args)),
        _ => {}
    }
    let db = Database::open(url).await?;
    let result = match bench {
        Bench::Model(_) | Bench::Ope(_) => unreachable!("handled above"),
        Bench::Ingest(args) => ingest(&db, args).await,
        Bench::Plan(args) => plan(&db, args).await,
        Bench::Serve(args) => serve(&db, args).await,
        Bench::Replan(args) => crate::bench_replan::run(&db, args).await,
    };
    db.close().await;
    result
}

/// A deterministic synthetic opportunity: eight per user, realistic field sizes.
fn opportunity(i: usize, prefix: &str) -> NewOpportunity {
    let now = Utc::now();
    NewOpportunity {
        user_id: format!("user-{:09}", i / 8),
        dedupe_key: format!("{prefix}-{i}"),
        source: "bench".into(),
        template: [
            "new_release",
            "weekly_digest",
            "price_drop",
            "order_shipped",
        ][i % 4]
            .into(),
        category: ["content", "digest", "commerce", "transactional"][i % 4].into(),
        priority: if i % 4 == 3 {
            "transactional"
        } else {
            "marketing"
        }
        .into(),
        channels: ["push", "email", "in_app"][..1 + i % 3]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        signals: BTreeMap::from([
            ("relevance".into(), (i % 97) as f64 / 97.0),
            ("popularity".into(), (i % 13) as f64 / 13.0),
        ]),
        payload: Default::default(),
        created_at: now,
        expires_at: now + TimeDelta::hours(48),
    }
}

async fn ingest(db: &Database, args: IngestArgs) -> Result<ExitCode> {
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let scratch = format!("tern_bench_{}", std::process::id());
    db.store.create_database(&scratch, None).await?;
    let result = ingest_in(&db.url, &scratch, &args).await;
    db.store.drop_database(&scratch).await?;
    let report = result?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

async fn ingest_in(url: &str, database: &str, args: &IngestArgs) -> Result<String> {
    let store = Store::connect_to_database(url, database).await?;
    store.migrate().await?;

    let rows: Vec<NewOpportunity> = (0..args.rows).map(|i| opportunity(i, "batch")).collect();
    let batches: Vec<&[NewOpportunity]> = rows.chunks(args.batch).collect();

    let started = Instant::now();
    let mut inserted = 0;
    for group in batches.chunks(args.concurrency) {
        let reports = join_all(group.iter().map(|b| store.ingest_opportunities(b))).await;
        for r in reports {
            inserted += r?.new_count();
        }
    }
    let batch_secs = started.elapsed().as_secs_f64();
    ensure!(
        inserted == args.rows,
        "expected {} new rows, got {inserted}",
        args.rows
    );

    // Idempotence, measured: resubmitting the first batch stores nothing.
    let started = Instant::now();
    let again = store.ingest_opportunities(batches[0]).await?;
    let resubmit_secs = started.elapsed().as_secs_f64();
    ensure!(
        again.new_count() == 0,
        "a resubmitted batch stored new rows"
    );

    let baseline: Vec<NewOpportunity> = (0..args.baseline_rows)
        .map(|i| opportunity(i, "single"))
        .collect();
    let started = Instant::now();
    let single = store.ingest_opportunities_one_by_one(&baseline).await?;
    let single_secs = started.elapsed().as_secs_f64();
    ensure!(
        single.new_count() == args.baseline_rows,
        "baseline stored too few rows"
    );
    store.close().await;

    let batch_rate = args.rows as f64 / batch_secs;
    let single_rate = args.baseline_rows as f64 / single_secs;
    Ok(format!(
        "opportunity ingest ({} rows, batches of {}, {} in flight)\n\
         {:<34} {:>12} rows/s  ({:.2} s)\n\
         {:<34} {:>12} rows/s  ({} rows, {:.2} s)\n\
         {:<34} {:>12.1}x\n\
         {:<34} {:>12} rows/s  (0 new of {})",
        args.rows,
        args.batch,
        args.concurrency,
        "batched (unnest, idempotent)",
        thousands(batch_rate),
        batch_secs,
        "one INSERT per row (baseline)",
        thousands(single_rate),
        args.baseline_rows,
        single_secs,
        "ratio",
        batch_rate / single_rate,
        "resubmitted batch (all duplicates)",
        thousands(batches[0].len() as f64 / resubmit_secs),
        batches[0].len(),
    ))
}

pub(crate) fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn plan(db: &Database, args: PlanArgs) -> Result<ExitCode> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    let (config, users) = synthetic(args.users, args.opportunities, args.channels, 1);
    let candidates: usize = users
        .iter()
        .flat_map(|u| &u.opportunities)
        .map(|o| o.channels.len())
        .sum();
    let planner = Planner::new(config.clone())?;
    let now =
        chrono::DateTime::from_timestamp(SYNTHETIC_NOW, 0).context("the synthetic instant")?;

    let timed = |threads: usize| -> Result<(f64, u64)> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let mut secs = Vec::new();
        let mut chosen = 0;
        for _ in 0..args.runs {
            let started = Instant::now();
            let plan = pool.install(|| planner.plan(&users, now, 7, &InlineScores))?;
            secs.push(started.elapsed().as_secs_f64());
            chosen = plan.stats.chosen.values().sum();
        }
        Ok((median(&mut secs), chosen))
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (one_secs, chosen) = timed(1)?;
    let (all_secs, _) = timed(cores)?;

    // The peer: the values precomputed under the default objective, loaded into a table, and
    // the selection done by window functions. Only the query is timed.
    let objective = &config.objectives["default"];
    let mut rows = Vec::with_capacity(candidates);
    for u in &users {
        for o in &u.opportunities {
            for (channel, scores) in o.channels.iter().zip(&o.scores) {
                rows.push(PeerCandidate {
                    user_id: u.user_id.clone(),
                    opportunity_id: o.id,
                    channel: channel.clone(),
                    value: value_of(objective, scores),
                });
            }
        }
    }
    let caps = PeerCaps {
        per_channel: 2,
        per_user: 6,
        min_value: objective.min_value,
    };
    let scratch = format!("tern_bench_{}", std::process::id());
    db.store.create_database(&scratch, None).await?;
    let peer = async {
        let store = Store::connect_to_database(&db.url, &scratch).await?;
        store.peer_load(&rows).await?;
        let mut secs = Vec::new();
        let mut chosen = 0;
        for _ in 0..args.runs {
            let started = Instant::now();
            chosen = store.peer_select(caps).await?;
            secs.push(started.elapsed().as_secs_f64());
        }
        store.close().await;
        anyhow::Ok((median(&mut secs), chosen))
    }
    .await;
    db.store.drop_database(&scratch).await?;
    let (sql_secs, sql_chosen) = peer?;

    let rate = |secs: f64| thousands(candidates as f64 / secs);
    println!(
        "planning {} users x {} opportunities x {} channels = {} candidates (median of {})\n\
         {:<40} {:>12} candidates/s  ({:.2} s, {} chosen)\n\
         {:<40} {:>12} candidates/s  ({:.2} s)\n\
         {:<40} {:>12} candidates/s  ({:.2} s, {} chosen)\n\
         {:<40} {:>12.1}x\n\
         {:<40} {:>12.1}x",
        args.users,
        args.opportunities,
        args.channels,
        candidates,
        args.runs,
        "tern planner, 1 thread",
        rate(one_secs),
        one_secs,
        chosen,
        format!("tern planner, {cores} threads"),
        rate(all_secs),
        all_secs,
        "SQL window functions (PostgreSQL)",
        rate(sql_secs),
        sql_secs,
        sql_chosen,
        "ratio, 1 thread / SQL",
        sql_secs / one_secs,
        format!("ratio, {cores} threads / SQL"),
        sql_secs / all_secs,
    );
    Ok(ExitCode::SUCCESS)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Scores every candidate of a synthetic population through the planner's predictor (feature
/// encoding plus inference, chunked and parallel as in a replan), then the inference alone on
/// the already encoded rows. The weights come from one quick training epoch on random rows: the
/// architecture is the real one, and speed does not depend on what the weights learned.
fn model(args: ModelArgs) -> Result<ExitCode> {
    use rayon::prelude::*;
    use tern_model::{Batch, FeatureSpec, InMemory, TrainConfig, HEADS};
    use tern_planner::{Predictor, Scores, UserInput};

    ensure!(args.runs > 0, "--runs must be at least 1");
    let spec = FeatureSpec::default();
    let width = spec.width();
    let mut rng = tern_core::SplitMix64::new(1);
    let rows = 4096;
    let x: Vec<f32> = (0..rows * width).map(|_| rng.next_f64() as f32).collect();
    let y: Vec<[f32; HEADS]> = (0..rows)
        .map(|_| [f32::from(u8::from(rng.below(2) == 0)); HEADS])
        .collect();
    let data = || {
        InMemory(vec![Batch::new(
            width,
            x.clone(),
            y.clone(),
            vec![[true; HEADS]; rows],
        )
        .unwrap()])
    };
    let config = TrainConfig {
        max_epochs: 1,
        ..TrainConfig::default()
    };
    let mut model = tern_model::train(&spec, &config, &mut data(), &mut data(), None)?;
    if args.long_term {
        // A model that saw withheld sends, with a value function fitted on random user-days:
        // what is timed is the scoring path, not what these weights say.
        if let Some(t) = model.training.as_mut() {
            t.untreated_rows = 1;
        }
        model.value = Some(random_value_function(&spec)?);
    }
    let (_, mut users) = synthetic(args.users, args.opportunities, args.channels, 1);
    for u in &mut users {
        for o in &mut u.opportunities {
            o.signals.insert("relevance".into(), 0.5);
        }
    }
    let candidates: usize = users.iter().map(tern_planner::candidates).sum();
    let now =
        chrono::DateTime::from_timestamp(SYNTHETIC_NOW, 0).context("the synthetic instant")?;
    let predictor =
        tern_daemon::predict::ModelPredictor::new(std::sync::Arc::new(model.clone()), now)
            .with_modes(
                if args.long_term {
                    tern_policy::ValueMode::LongTerm
                } else {
                    tern_policy::ValueMode::Outcome
                },
                Default::default(),
            );

    let mut whole = Vec::new();
    for _ in 0..args.runs {
        let started = Instant::now();
        let scored: usize = users
            .par_chunks(128)
            .map(|chunk| {
                let refs: Vec<&UserInput> = chunk.iter().collect();
                let mut out: Vec<Scores> = Vec::new();
                predictor.predict_many(&refs, &mut out);
                out.len()
            })
            .sum();
        whole.push(started.elapsed().as_secs_f64());
        ensure!(
            scored == candidates,
            "scored {scored} of {candidates} candidates"
        );
    }

    let mut rng = tern_core::SplitMix64::new(2);
    let mut row = vec![0.0f32; width];
    let mut raw = Vec::with_capacity(candidates * width);
    for _ in 0..candidates {
        for v in row.iter_mut() {
            *v = rng.next_f64() as f32;
        }
        raw.extend_from_slice(&row);
    }
    let matrix = tern_model::FeatureMatrix::from_raw(&spec, raw)?;
    let mut out = vec![[0.0f32; HEADS]; candidates];
    let mut infer = Vec::new();
    for _ in 0..args.runs {
        let started = Instant::now();
        model.predict(&matrix, &mut out)?;
        infer.push(started.elapsed().as_secs_f64());
    }
    let whole = median(&mut whole);
    let infer = median(&mut infer);
    let threads = rayon::current_num_threads();
    println!(
        "scoring {} users x {} opportunities x {} channels = {} candidates, {} threads, engine {:?} (median of {})\n\
         {:<44} {:>8.2} s  {:>12} candidates/s\n\
         {:<44} {:>8.2} s  {:>12} rows/s",
        args.users,
        args.opportunities,
        args.channels,
        candidates,
        threads,
        model.engine(),
        args.runs,
        if args.long_term {
            "encode + infer + value function (longTerm)"
        } else {
            "encode + infer, as the planner calls it"
        },
        whole,
        thousands(candidates as f64 / whole),
        "infer only (rows already encoded)",
        infer,
        thousands(candidates as f64 / infer),
    );
    Ok(ExitCode::SUCCESS)
}

/// A value function over the spec's channels, fitted on 20,000 random user-days.
fn random_value_function(spec: &tern_model::FeatureSpec) -> Result<tern_model::ValueFunction> {
    use tern_model::{ChannelHistory, UserContext, UserState, ValueConfig, ValueFit};
    let channels = spec.declaration().channels.clone();
    let mut fit = ValueFit::new(channels.clone(), ValueConfig::for_horizon(7.0, 1))?;
    let mut rng = tern_core::SplitMix64::new(3);
    let state = |rng: &mut tern_core::SplitMix64| {
        let history: Vec<ChannelHistory<'_>> = channels
            .iter()
            .map(|c| ChannelHistory {
                channel: c,
                sent_1d: rng.below(3) as u32,
                sent_7d: rng.below(8) as u32,
                sent_28d: rng.below(25) as u32,
                opened_28d: rng.below(5) as u32,
                hours_since_last: Some(rng.next_f64() * 100.0),
            })
            .collect();
        let user = UserContext {
            tenure_days: rng.next_f64() * 60.0,
            utc_offset_minutes: 0,
            active_days_28d: rng.below(29) as f64,
            hours_since_active: Some(rng.next_f64() * 200.0),
        };
        (user, history)
    };
    for u in 0..2_000 {
        fit.user(u);
        for _ in 0..10 {
            let (a, ha) = state(&mut rng);
            let (b, hb) = state(&mut rng);
            let active = rng.below(2) == 0;
            fit.push(
                &UserState {
                    user: a,
                    history: &ha,
                    lost: &[],
                },
                active,
                &UserState {
                    user: b,
                    history: &hb,
                    lost: &[],
                },
            );
        }
    }
    Ok(fit.finish()?)
}

/// A `Control` for the benchmark's server: it serves the delivery path only.
struct NoControl;

#[tonic::async_trait]
impl tern_server::Control for NoControl {
    async fn replan(
        &self,
        _users: Vec<String>,
    ) -> Result<tern_server::ReplanSummary, tern_server::ControlError> {
        Err(tern_server::ControlError::NoPolicy(
            "the benchmark server does not plan".into(),
        ))
    }
    async fn status(&self) -> Result<tern_server::DaemonStatus, tern_server::ControlError> {
        Ok(tern_server::DaemonStatus::default())
    }
    async fn submit_events(
        &self,
        _events: Vec<tern_server::Event>,
    ) -> Result<tern_server::EventsSummary, tern_server::ControlError> {
        Err(tern_server::ControlError::NoPolicy(
            "the benchmark server runs no generators".into(),
        ))
    }
    async fn advance_clock(
        &self,
        _to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, tern_server::ControlError> {
        Err(tern_server::ControlError::Precondition(
            "the benchmark server runs on the system clock".into(),
        ))
    }
}

async fn serve(db: &Database, args: ServeArgs) -> Result<ExitCode> {
    ensure!(
        args.clients > 0 && args.batch > 0,
        "--clients and --batch must be positive"
    );
    let scratch = format!("tern_bench_{}", std::process::id());
    db.store.create_database(&scratch, None).await?;
    let result = serve_in(&db.url, &scratch, &args).await;
    db.store.drop_database(&scratch).await?;
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

/// Pull + Ack round trips: their count of items, and each round trip's latency in seconds.
#[derive(Default)]
struct Drained {
    items: usize,
    latencies: Vec<f64>,
}

async fn serve_in(url: &str, database: &str, args: &ServeArgs) -> Result<String> {
    use tern_server::pb;
    use tern_server::pb::schedule_service_client::ScheduleServiceClient;
    use tern_store::{ConnectOptions, LeaseRequest, NewPlan, NewScheduleItem, Supersede};

    let options = ConnectOptions {
        max_connections: args.connections,
        ..ConnectOptions::default()
    };
    let admin = Store::connect_to_database(url, database).await?;
    admin.migrate().await?;
    let store = Store::connect_to_database_with(url, database, options).await?;

    // The schedule: one opportunity and one due item per row, on `push` for the gRPC clients and
    // on `email` for the peer.
    let started = Instant::now();
    let now = Utc::now();
    let total = args.items + args.peer_items + args.open_items;
    let rows: Vec<NewOpportunity> = (0..total).map(|i| opportunity(i, "serve")).collect();
    let mut items = Vec::with_capacity(total);
    for chunk in rows.chunks(10_000) {
        let report = store.ingest_opportunities(chunk).await?;
        for (o, r) in chunk.iter().zip(report.rows) {
            if let tern_store::RowStatus::New(id) = r {
                items.push((o.user_id.clone(), id));
            }
        }
    }
    ensure!(
        items.len() == total,
        "seeded {} of {total} opportunities",
        items.len()
    );
    for (n, chunk) in items.chunks(100_000).enumerate() {
        let schedule: Vec<NewScheduleItem> = chunk
            .iter()
            .enumerate()
            .map(|(k, (user, id))| NewScheduleItem {
                user_id: user.clone(),
                opportunity_id: *id,
                channel: match n * 100_000 + k {
                    i if i < args.items => "push",
                    i if i < args.items + args.peer_items => "email",
                    _ => "in_app",
                }
                .into(),
                send_after: now - chrono::TimeDelta::minutes(1),
                send_before: now + chrono::TimeDelta::hours(6),
                value: 1.0,
                propensity: 1.0,
                experiment: None,
                arm: None,
                scores: serde_json::json!({}),
                counterfactual: None,
            })
            .collect();
        store
            .publish_plan(
                &NewPlan {
                    trigger: "bench".into(),
                    policy_version: "bench".into(),
                    model_version: None,
                    seed: 0,
                    started_at: now,
                    horizon_end: now + chrono::TimeDelta::hours(6),
                    stats: Default::default(),
                },
                &schedule,
                &Supersede::Users(Vec::new()),
                now,
            )
            .await?;
    }
    let seed_secs = started.elapsed().as_secs_f64();

    // The server, in this process, on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let api = tern_server::api(
        store.clone(),
        std::sync::Arc::new(tern_server::SystemClock),
        std::sync::Arc::new(NoControl),
        tern_server::Metrics::new(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tern_server::serve(
        listener,
        api,
        tern_server::ServeOptions::default(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await?;
        let batch = args.batch;
        clients.push(tokio::spawn(async move {
            let mut client = ScheduleServiceClient::new(channel);
            let mut d = Drained::default();
            loop {
                let t = Instant::now();
                let items = client
                    .pull(pb::PullRequest {
                        holder: format!("bench-{c}"),
                        channels: vec!["push".into()],
                        max_items: batch,
                        lease: None,
                    })
                    .await?
                    .into_inner()
                    .items;
                if items.is_empty() {
                    return anyhow::Ok(d);
                }
                let acks = items.iter().map(pb::AckItem::sent).collect();
                client.ack(pb::AckRequest { acks }).await?;
                d.latencies.push(t.elapsed().as_secs_f64());
                d.items += items.len();
            }
        }));
    }
    let grpc = collect(clients).await?;
    let grpc_secs = started.elapsed().as_secs_f64();

    // Open loop: round trips started at a fixed rate, whether or not earlier ones finished,
    // each timed from when it was due to start (so that a slow server cannot hide its queue by
    // slowing the clients down: no coordinated omission).
    let max_rate = grpc.latencies.len() as f64 / grpc_secs;
    let mut channels = Vec::new();
    for _ in 0..args.clients {
        channels.push(
            tonic::transport::Channel::from_shared(format!("http://{address}"))?
                .connect()
                .await?,
        );
    }
    let mut open_lines = Vec::new();
    for &share in &args.open_loads {
        ensure!(share > 0.0, "--open-loads are positive shares");
        let rate = max_rate * share;
        let interval = std::time::Duration::from_secs_f64(1.0 / rate);
        let started = tokio::time::Instant::now();
        let end = started + std::time::Duration::from_secs(args.open_secs);
        let mut tasks = Vec::new();
        let mut k: u32 = 0;
        loop {
            let due = started + interval * k;
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due).await;
            let mut client =
                ScheduleServiceClient::new(channels[k as usize % channels.len()].clone());
            let batch = args.batch;
            tasks.push(tokio::spawn(async move {
                let items = client
                    .pull(pb::PullRequest {
                        holder: format!("open-{k}"),
                        channels: vec!["in_app".into()],
                        max_items: batch,
                        lease: None,
                    })
                    .await?
                    .into_inner()
                    .items;
                if !items.is_empty() {
                    let acks = items.iter().map(pb::AckItem::sent).collect();
                    client.ack(pb::AckRequest { acks }).await?;
                }
                anyhow::Ok((items.len(), due.elapsed().as_secs_f64()))
            }));
            k += 1;
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        let mut items = 0;
        let mut empty = 0;
        for t in tasks {
            let (n, latency) = t.await??;
            items += n;
            empty += usize::from(n == 0);
            latencies.push(latency);
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] * 1000.0
        };
        open_lines.push(format!(
            "{:<44} {:>10} items/s   Pull+Ack p50 {:>6.1} ms   p99 {:>6.1} ms   ({} round trips at {:.0}/s{})",
            format!("open loop at {:.0}% of the closed loop's rate", share * 100.0),
            thousands(items as f64 / args.open_secs as f64),
            pct(0.5),
            pct(0.99),
            latencies.len(),
            rate,
            if empty > 0 {
                format!(", {empty} found nothing due: seed more with --open-items")
            } else {
                String::new()
            },
        ));
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    ensure!(
        grpc.items == args.items,
        "the gRPC clients drained {} of {} items",
        grpc.items,
        args.items
    );

    // The peer: the same Pull + Ack cycle against the store directly, same concurrency.
    let started = Instant::now();
    let mut peers = Vec::new();
    for c in 0..args.clients {
        let store = store.clone();
        let batch = args.batch;
        peers.push(tokio::spawn(async move {
            let mut d = Drained::default();
            loop {
                let t = Instant::now();
                let items = store
                    .lease(
                        &LeaseRequest {
                            holder: format!("peer-{c}"),
                            channels: vec!["email".into()],
                            max_items: batch,
                            lease_for: chrono::TimeDelta::seconds(60),
                        },
                        Utc::now(),
                    )
                    .await?;
                if items.is_empty() {
                    return anyhow::Ok(d);
                }
                let acks: Vec<tern_store::Ack> = items
                    .iter()
                    .map(|i| tern_store::Ack {
                        user_id: i.user_id.clone(),
                        item_id: i.item_id,
                        lease_token: i.lease_token,
                        status: tern_core::AckStatus::Sent,
                    })
                    .collect();
                store.ack_many(&acks, Utc::now()).await?;
                d.latencies.push(t.elapsed().as_secs_f64());
                d.items += items.len();
            }
        }));
    }
    let peer = collect(peers).await?;
    let peer_secs = started.elapsed().as_secs_f64();
    store.close().await;
    admin.close().await;

    let pct = |l: &[f64], q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)] * 1000.0;
    let open = open_lines.join("\n");
    Ok(format!(
        "schedule: {} items for the gRPC clients, {} for the peer, seeded in {seed_secs:.1} s\n\
         {} clients, {} items per Pull, {} database connections\n\
         {:<44} {:>10} items/s   Pull+Ack p50 {:>6.1} ms   p99 {:>6.1} ms   ({} round trips)\n\
         {:<44} {:>10} items/s   lease+acks p50 {:>6.1} ms p99 {:>6.1} ms   ({} round trips)\n\
         {open}",
        args.items,
        args.peer_items,
        args.clients,
        args.batch,
        args.connections,
        "tern serve, gRPC over loopback",
        thousands(grpc.items as f64 / grpc_secs),
        pct(&grpc.latencies, 0.5),
        pct(&grpc.latencies, 0.99),
        grpc.latencies.len(),
        "the store called directly (no gRPC)",
        thousands(peer.items as f64 / peer_secs),
        pct(&peer.latencies, 0.5),
        pct(&peer.latencies, 0.99),
        peer.latencies.len(),
    ))
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Result<Drained>>>) -> Result<Drained> {
    let mut all = Drained::default();
    for t in tasks {
        let d = t.await??;
        all.items += d.items;
        all.latencies.extend(d.latencies);
    }
    all.latencies.sort_by(f64::total_cmp);
    ensure!(!all.latencies.is_empty(), "no round trip completed");
    Ok(all)
}
