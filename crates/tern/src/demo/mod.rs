//! `tern demo`: the whole loop on a simulated population, in one command.
//!
//! A [`tern_sim::World`] stands in for the users; tern never sees its truth. For each arm (a way
//! of deciding what to send) and seed, the demo makes a scratch database, starts a daemon in
//! this process on a simulated clock, and drives it through its public gRPC API in every role:
//! the upstream system submits the population's profiles, its opportunities, and its password
//! resets as events for the policy's generator, the delivery
//! services pull due items on each channel and ack them, and the feedback reporter sends the
//! outcomes (when simulated time reaches them) and each day's active users. Time moves an hour at
//! a time through `AdminService.AdvanceClock`, which runs the cron jobs that fell due: the
//! policies' replans and generators, and nightly training with promotion.
//!
//! The arms:
//! - `tern`: the policies as written, with the model it trains each night.
//! - `tern-incremental`: the same, with the default objective valuing each send by its predicted
//!   effect against not sending (`value: incremental`).
//! - `tern-long-term`: the same, valuing each send over time (`value: longTerm`): its effect on
//!   the user's active days, cap slots paced across their window, and each send at the moment
//!   of the next day predicted to be worth most.
//! - `greedy-click`: the same loop, but the objective is the predicted short-term open or click
//!   alone, with no floor: the usual "engagement-optimised" sender.
//! - `fcfs`: no planner: every opportunity is sent when it arrives, on its first reachable
//!   channel outside quiet hours, until a cap says no — what most messaging products do. It
//!   runs beside tern rather than through it, with the same caps.
//! - `none`: the floor: only what must go out (the classes that bypass everything, such as
//!   password resets), beside tern.
//! - `oracle`: the ceiling: beside tern, it reads the simulator's hidden truth and sends by the
//!   true effect of each send against not sending, under the same caps and quiet hours
//!   (`oracle.rs` says how it decides).
//!
//! Experiment documents apply only to a lone `tern` arm: with more than one arm they are left out
//! of every arm, so that each user gets the arm's policy (an experiment's holdout would blur the
//! comparison), and the other arms have no use for them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde::Serialize;
use tern_core::{NewOpportunity, OutcomeKind};
use tern_policy::{Bundle, Bypass, CapSet, ChannelScope, Priority};
use tern_server::pb::admin_service_client::AdminServiceClient;
use tern_server::pb::feedback_service_client::FeedbackServiceClient;
use tern_server::pb::opportunity_service_client::OpportunityServiceClient;
use tern_server::pb::schedule_service_client::ScheduleServiceClient;
use tern_server::pb::user_service_client::UserServiceClient;
use tern_server::{pb, timestamp};
use tern_sim::{Config, Delivery, Outcome, Profile, World};
use tern_store::Store;
use tonic::transport::Channel;

use crate::db::Database;
use crate::report::{ArmReport, CalibrationBin, DayRow, Report, Transactional};

mod caps;
mod driver;
mod fcfs;
mod oracle;
mod uplift;

pub use caps::cap_violations;
use driver::*;
use fcfs::*;

/// The objective of the greedy arm: the chance of an open or click, nothing else, no floor.
const GREEDY_OBJECTIVE: &str = "apiVersion: tern/v1
kind: Objective
metadata:
  name: default
  description: Greedy on the predicted short-term open or click.
spec:
  weights: { conversion: 0.0, engagement: 1.0, retention: 0.0, reachability: 0.0 }
  minValue: 0.0
";

/// The event type of a password reset, as the example generator `password-reset` expects it.
const RESET_EVENT: &str = "password_reset_requested";
/// Nightly training, in UTC.
const TRAIN_SCHEDULE: &str = "0 0 2 * * *";
/// Items per Pull.
const PULL: u32 = 1_000;
/// Rows per Submit, Upsert and Report.
const BATCH: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// The floor: only what must go out.
    None,
    Fcfs,
    GreedyClick,
    Tern,
    /// tern with the default objective valuing each send by its effect (`value: incremental`).
    TernIncremental,
    /// tern with the default objective valuing each send over time (`value: longTerm`).
    TernLongTerm,
    /// The ceiling: by the simulator's true effect of each send.
    Oracle,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Tern => "tern",
            Arm::TernIncremental => "tern-incremental",
            Arm::TernLongTerm => "tern-long-term",
            Arm::GreedyClick => "greedy-click",
            Arm::Fcfs => "fcfs",
            Arm::None => "none",
            Arm::Oracle => "oracle",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Arm::Tern => "tern's planner with the multi-objective model it trains each night",
            Arm::TernIncremental => {
                "tern valuing each send by its predicted effect against not sending (value: incremental)"
            }
            Arm::TernLongTerm => {
                "tern valuing each send over time: effect on active days, paced cap slots, send time by value (value: longTerm)"
            }
            Arm::GreedyClick => {
                "tern's loop, but the objective is the predicted open or click alone, with no floor"
            }
            Arm::Fcfs => {
                "every opportunity sent when it arrives on its first reachable channel outside quiet hours, until a cap says no"
            }
            Arm::None => "only what must go out (transactional): the floor",
            Arm::Oracle => {
                "by the simulator's true effect of each send against none, under the same caps and quiet hours: the ceiling"
            }
        }
    }

    /// Whether the arm runs through tern (a daemon, its planner and model), rather than beside
    /// it.
    fn through_tern(self) -> bool {
        matches!(
            self,
            Arm::Tern | Arm::TernIncremental | Arm::TernLongTerm | Arm::GreedyClick
        )
    }
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Simulated users.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    users: u64,
    /// Simulated days.
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..=120))]
    days: u32,
    /// The population's seed; the same seed gives the same people, opportunities and
    /// responses.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The arms to run on the same population, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tern")]
    arms: Vec<Arm>,
    /// Run every arm (none, fcfs, greedy-click, tern, tern-incremental, tern-long-term, oracle)
    /// and compare
    /// them.
    #[arg(long, conflicts_with = "arms")]
    compare: bool,
    /// Repeat on this many seeds (seed, seed+1, ...) and report the mean and spread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    seeds: u32,
    /// The policy bundle; the built-in example policies when absent.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Write an HTML page with plots (of the first seed).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the results as JSON (every arm and seed, with the loop's bookkeeping).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The first simulated day (a UTC midnight).
    #[arg(long, default_value = "2026-03-02T00:00:00Z")]
    start: DateTime<Utc>,
    /// Print only the summaries, not a line per day.
    #[arg(long)]
    quiet: bool,
    /// Keep the run's database under this name instead of dropping it, so that `tern experiment
    /// report`, `tern evaluate` and `tern policy simulate` can be run on its history (one arm
    /// and one seed only; needs DATABASE_URL, since a private PostgreSQL is removed on exit).
    #[arg(long, value_name = "NAME")]
    keep_database: Option<String>,
    /// The most one training row may weigh (`tern train --max-weight`; 1, the default, is no
    /// weighting): more weights the tern arms' training rows by their logged propensities, to
    /// measure what that does.
    #[arg(long, default_value_t = tern_daemon::train::MAX_WEIGHT, value_parser = crate::train::max_weight)]
    max_weight: f64,
}

/// One arm on one seed: what the simulator saw, and what tern recorded.
#[derive(Debug, Serialize)]
pub struct RunResult {
    pub arm: Arm,
    pub seed: u64,
    pub users: u64,
    pub days: Vec<DayRow>,
    /// Mean daily active share over the last 7 days: the long-term outcome.
    pub retention: f64,
    pub messages: u64,
    pub opens: u64,
    pub conversions: u64,
    pub conversion_value: f64,
    pub unsubscribes: u64,
    /// Opportunities tern stored as new: submitted directly, or created by its generators from
    /// the events submitted.
    pub submitted: u64,
    /// Events submitted (password resets, which the policy's generator turns into messages).
    pub events: u64,
    /// Where tern's opportunities ended, by state (tern arms only).
    pub opportunity_states: BTreeMap<String, u64>,
    /// Outcomes tern stored, by kind (tern arms only).
    pub outcomes_stored: BTreeMap<String, u64>,
    pub outcomes_reported: u64,
    pub models_trained: u64,
    pub active_model: Option<String>,
    pub suppressed: BTreeMap<String, u64>,
    /// Cap rules broken, by the simulator's own log of what each user received.
    pub cap_violations: Vec<String>,
    /// What became of the transactional messages (password resets): the loop check fails if
    /// one a user could have received expired unsent.
    pub transactional: Transactional,
    /// The final model's predicted uplift against the simulator's truth, per value mode it can
    /// serve (tern arms only).
    pub uplift: Vec<uplift::UpliftScore>,
    #[serde(skip)]
    pub volume_by_hour: BTreeMap<String, [u64; 24]>,
    #[serde(skip)]
    pub calibration: Vec<CalibrationBin>,
    pub seconds: f64,
}

pub async fn run(url: Option<&str>, args: DemoArgs) -> Result<ExitCode> {
    ensure!(
        args.start.time() == chrono::NaiveTime::MIN,
        "--start must be a UTC midnight, e.g. 2026-03-02T00:00:00Z"
    );
    let arms: Vec<Arm> = if args.compare {
        vec![
            Arm::None,
            Arm::Fcfs,
            Arm::GreedyClick,
            Arm::Tern,
            Arm::TernIncremental,
            Arm::TernLongTerm,
            Arm::Oracle,
        ]
    } else {
        let mut a = args.arms.clone();
        a.dedup();
        a
    };
    ensure!(!arms.is_empty(), "--arms needs at least one arm");
    if let Some(name) = &args.keep_database {
        ensure!(
            arms.len() == 1 && args.seeds == 1,
            "--keep-database keeps one run: give one arm and one seed"
        );
        ensure!(
            url.is_some(),
            "--keep-database needs DATABASE_URL: a private PostgreSQL is removed on exit"
        );
        ensure!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "--keep-database {name:?}: use 1 to 63 lowercase letters, digits and underscores"
        );
    }
    let work = std::env::temp_dir().join(format!("tern-demo-{}", std::process::id()));
    let source = match &args.policies {
        Some(dir) => read_dir_files(dir)?,
        None => tern_policy::example::FILES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
    };
    let result = run_all(url, &args, &arms, &source, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    let results = result?;

    print_summary(&results);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.report {
        let first = results.iter().map(|r| r.seed).min().unwrap_or(args.seed);
        let report = Report {
            title: "tern demo".into(),
            subtitle: format!(
                "{} users, {} days from {}, seed {first}",
                thousands(args.users),
                args.days,
                args.start.date_naive()
            ),
            arms: results
                .iter()
                .filter(|r| r.seed == first)
                .map(|r| ArmReport {
                    name: r.arm.name().into(),
                    description: r.arm.description().into(),
                    users: r.users,
                    days: r.days.clone(),
                    volume_by_hour: r.volume_by_hour.clone(),
                    suppressed: r.suppressed.clone(),
                    calibration: r.calibration.clone(),
                    transactional: Some(r.transactional.clone()),
                })
                .collect(),
        };
        std::fs::write(path, crate::report::html(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    // The loop check: a transactional message that could reach its user must not expire.
    let lost: Vec<String> = results
        .iter()
        .filter(|r| r.transactional.expired_unsent > 0)
        .map(|r| {
            format!(
                "{} (seed {}): {} of {}",
                r.arm.name(),
                r.seed,
                r.transactional.expired_unsent,
                r.transactional.submitted
            )
        })
        .collect();
    ensure!(
        lost.is_empty(),
        "transactional messages expired unsent: {}",
        lost.join("; ")
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_all(
    url: Option<&str>,
    args: &DemoArgs,
    arms: &[Arm],
    source: &[(String, String)],
    work: &Path,
) -> Result<Vec<RunResult>> {
    let keep_experiments = arms.len() == 1;
    // Listening from the start, so that SIGTERM or Ctrl-C at any point ends the run below
    // instead of the process, and its scratch database is dropped before exiting.
    let mut interrupted = Interrupted::listen()?;
    let db = Database::open(url).await?;
    let mut results = Vec::new();
    for seed in args.seed..args.seed + u64::from(args.seeds) {
        for &arm in arms {
            let dir = work.join(format!("{}-{seed}", arm.name()));
            write_policies(&dir, source, arm, keep_experiments)?;
            let bundle = Bundle::load(&dir).map_err(|f| {
                anyhow::anyhow!(
                    "the {} arm's policies are not valid:\n{}",
                    arm.name(),
                    f.to_text()
                )
            })?;
            let scratch = args.keep_database.clone().unwrap_or_else(|| {
                format!(
                    "tern_demo_{}_{}_{seed}",
                    std::process::id(),
                    arm.name().replace('-', "_")
                )
            });
            db.store.create_database(&scratch, None).await?;
            let run = async {
                let store = Store::connect_to_database(&db.url, &scratch).await?;
                store.migrate().await?;
                let r = simulate(&store, arm, seed, args, &dir, &bundle).await;
                store.close().await;
                r
            };
            // On a signal the run is dropped where it stands (its in-process daemon with it),
            // and the cleanup below runs as after a failure.
            let (outcome, signal) = tokio::select! {
                r = run => (r, None),
                s = interrupted.recv() => (Err(anyhow::anyhow!("interrupted by {s}")), Some(s)),
            };
            if args.keep_database.is_none() {
                db.store.drop_database(&scratch).await?;
            } else if outcome.is_ok() {
                println!("kept the run's database as {scratch}");
            }
            if let Some(s) = signal {
                db.close().await;
                anyhow::bail!(
                    "interrupted by {s}; {}",
                    if args.keep_database.is_none() {
                        format!("dropped the scratch database {scratch}")
                    } else {
                        format!("the database {scratch} is left as it was")
                    }
                );
            }
            results.push(outcome?);
        }
    }
    db.close().await;
    Ok(results)
}

/// SIGTERM and SIGINT, caught from the moment [`Interrupted::listen`] returns.
struct Interrupted {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Interrupted {
    fn listen() -> Result<Interrupted> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupted {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// The name of the next signal.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Writes the arm's bundle: the source files, less Experiment documents when comparing, and
/// for the greedy arm with its own objective instead of the source's.
fn write_policies(
    dir: &Path,
    source: &[(String, String)],
    arm: Arm,
    keep_experiments: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in source {
        let kept: Vec<String> = tern_policy::example::split_documents(text)
            .into_iter()
            .filter(|doc| {
                let kind = tern_policy::example::kind_of(doc);
                !(kind == Some("Experiment") && (!keep_experiments || arm != Arm::Tern))
                    && !(kind == Some("Objective") && arm == Arm::GreedyClick)
            })
            .map(|doc| {
                let mode = match arm {
                    Arm::TernIncremental => Some("incremental"),
                    Arm::TernLongTerm => Some("longTerm"),
                    _ => None,
                };
                match mode {
                    Some(mode) if tern_policy::example::kind_of(doc) == Some("Objective") => {
                        with_value(doc, mode)
                    }
                    _ => doc.to_string(),
                }
            })
            .collect();
        if !kept.is_empty() {
            std::fs::write(dir.join(name), kept.join("\n---\n"))?;
        }
    }
    if arm == Arm::GreedyClick {
        std::fs::write(dir.join("zz-greedy-objective.yaml"), GREEDY_OBJECTIVE)?;
    }
    Ok(())
}

/// The default objective of `doc` valuing sends in `mode` (unless it names a mode already);
/// other documents as they are.
fn with_value(doc: &str, mode: &str) -> String {
    let is_default = doc
        .lines()
        .any(|l| l.trim() == "name: default" || l.contains("name: default }"));
    let has_value = doc
        .lines()
        .any(|l| l.starts_with("  value:") || l.starts_with("  value :"));
    if !is_default || has_value {
        return doc.to_string();
    }
    doc.replacen("\nspec:\n", &format!("\nspec:\n  value: {mode}\n"), 1)
}

fn read_dir_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.push((name, std::fs::read_to_string(&path)?));
        }
    }
    ensure!(!files.is_empty(), "{} holds no .yaml files", dir.display());
    files.sort();
    Ok(files)
}

fn day_line(row: &DayRow, users: u64, model: &str) -> String {
    let messages: u64 = row.messages.values().sum();
    let per_channel = row
        .messages
        .iter()
        .map(|(c, n)| format!("{c} {}", thousands(*n)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{}: {} messages ({per_channel}), opened {:.1}%, converted {:.2}%, unsubscribed {:.2}%, active {:.1}%, {model}",
        row.day,
        thousands(messages),
        percent(row.opens, messages),
        percent(row.conversions, messages),
        percent(row.unsubscribes, messages),
        percent(row.active_users, users),
    )
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Per arm: the mean over seeds, with the standard deviation when there are several.
fn print_summary(results: &[RunResult]) {
    let mut arms: Vec<Arm> = results.iter().map(|r| r.arm).collect();
    arms.sort();
    arms.dedup();
    let seeds = results.iter().filter(|r| r.arm == arms[0]).count();
    println!();
    println!(
        "| arm | messages per user | conversions per user | unsubscribes per 1,000 users | retention (last 7 days) | seeds |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for arm in arms {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.arm == arm).collect();
        let stat = |f: &dyn Fn(&RunResult) -> f64| {
            mean_sd(&runs.iter().map(|r| f(r)).collect::<Vec<f64>>())
        };
        let show = |(m, s): (f64, f64), digits: usize| {
            if seeds > 1 {
                format!("{m:.digits$} ± {s:.digits$}")
            } else {
                format!("{m:.digits$}")
            }
        };
        println!(
            "| {} | {} | {} | {} | {}% | {} |",
            arm.name(),
            show(stat(&|r| r.messages as f64 / r.users as f64), 2),
            show(stat(&|r| r.conversions as f64 / r.users as f64), 3),
            show(
                stat(&|r| 1000.0 * r.unsubscribes as f64 / r.users as f64),
                1
            ),
            show(stat(&|r| 100.0 * r.retention), 2),
            runs.len()
        );
    }
    print_paired(results);
    print_uplift(results);
    println!();
    println!(
        "| arm | seed | transactional submitted | sent | unreachable | expired unsent | latency p50 | latency p99 | from request p50 | from request p99 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in results {
        let t = &r.transactional;
        let secs = |s: Option<i64>| s.map_or("-".to_string(), |s| format!("{s} s"));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.arm.name(),
            r.seed,
            t.submitted,
            t.sent,
            t.unreachable,
            t.expired_unsent,
            secs(t.latency_p50_secs),
            secs(t.latency_p99_secs),
            secs(t.request_latency_p50_secs),
            secs(t.request_latency_p99_secs),
        );
    }
    for r in results {
        if !r.cap_violations.is_empty() {
            println!(
                "warning: {} (seed {}): {} cap violations, e.g. {}",
                r.arm.name(),
                r.seed,
                r.cap_violations.len(),
                r.cap_violations[0]
            );
        }
    }
}

/// Two-sided 95% quantiles of Student's t for 1 to 30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The mean of `xs` with its 95% t-interval half-width (0 for a single value).
pub(crate) fn mean_interval(xs: &[f64]) -> (f64, f64) {
    let (mean, sd) = mean_sd(xs);
    let n = xs.len();
    if n < 2 {
        return (mean, 0.0);
    }
    let t = T95.get(n - 2).copied().unwrap_or(1.96);
    (mean, t * sd / (n as f64).sqrt())
}

/// The mean of `xs` and its sample standard deviation (0 for a single value).
fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    (mean, sd)
}

/// A figure of a run: its name, how to read it off the run, and its decimals.
type Metric = (&'static str, fn(&RunResult) -> f64, usize);

/// Each arm against the floor (`none`) and against `tern`, paired by seed: the mean difference
/// over seeds with its 95% t-interval. The seeds share the population, so the paired difference
/// removes most of what varies between them.
fn print_paired(results: &[RunResult]) {
    let mut arms: Vec<Arm> = results.iter().map(|r| r.arm).collect();
    arms.sort();
    arms.dedup();
    let seeds: Vec<u64> = {
        let mut s: Vec<u64> = results.iter().map(|r| r.seed).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    if seeds.len() < 2 {
        return;
    }
    let run = |arm: Arm, seed: u64| results.iter().find(|r| r.arm == arm && r.seed == seed);
    let metrics: [Metric; 4] = [
        ("retention (points)", |r| 100.0 * r.retention, 2),
        (
            "messages per user",
            |r| r.messages as f64 / r.users as f64,
            2,
        ),
        (
            "unsubscribes per 1,000 users",
            |r| 1000.0 * r.unsubscribes as f64 / r.users as f64,
            1,
        ),
        (
            "conversions per user",
            |r| r.conversions as f64 / r.users as f64,
            3,
        ),
    ];
    for base in [Arm::None, Arm::Tern] {
        if !arms.contains(&base) {
            continue;
        }
        println!();
        println!(
            "Paired by seed against {} (mean difference, 95% interval, {} seeds):",
            base.name(),
            seeds.len()
        );
        println!();
        let header: Vec<&str> = metrics.iter().map(|m| m.0).collect();
        println!("| arm − {} | {} |", base.name(), header.join(" | "));
        println!("| --- |{}", " --- |".repeat(metrics.len()));
        for &arm in arms.iter().filter(|a| **a != base) {
            let cells: Vec<String> = metrics
                .iter()
                .map(|(_, f, digits)| {
                    let d: Vec<f64> = seeds
                        .iter()
                        .filter_map(|&s| Some(f(run(arm, s)?) - f(run(base, s)?)))
                        .collect();
                    let (m, h) = mean_interval(&d);
                    format!("{m:+.digits$} ± {h:.digits$}", digits = *digits)
                })
                .collect();
            println!("| {} | {} |", arm.name(), cells.join(" | "));
        }
    }
}

/// The final models' uplift against the simulator's truth, per arm and value mode.
fn print_uplift(results: &[RunResult]) {
    let mut rows: BTreeMap<(String, String), Vec<&uplift::UpliftScore>> = BTreeMap::new();
    for r in results {
        for u in &r.uplift {
            rows.entry((r.arm.name().to_string(), u.mode.clone()))
                .or_default()
                .push(u);
        }
    }
    if rows.is_empty() {
        return;
    }
    println!();
    println!("Predicted against true uplift of the candidates open at the end (mean ± 95% interval over seeds):");
    println!();
    println!("| arm | scored as | retention: rank correlation | retention: uplift AUC | value: rank correlation | value: uplift AUC | candidates |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for ((arm, mode), scores) in rows {
        let cell = |f: &dyn Fn(&uplift::UpliftScore) -> f64| {
            let xs: Vec<f64> = scores.iter().map(|u| f(u)).collect();
            let (m, h) = mean_interval(&xs);
            if xs.len() > 1 {
                format!("{m:.3} ± {h:.3}")
            } else {
                format!("{m:.3}")
            }
        };
        println!(
            "| {arm} | {mode} | {} | {} | {} | {} | {} |",
            cell(&|u| u.retention.spearman),
            cell(&|u| u.retention.uplift_auc),
            cell(&|u| u.value.spearman),
            cell(&|u| u.value.uplift_auc),
            scores.iter().map(|u| u.candidates).sum::<u64>() / scores.len() as u64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(arm: Arm) -> Bundle {
        let dir = std::env::temp_dir().join(format!(
            "tern-demo-unit-{}-{}",
            std::process::id(),
            arm.name()
        ));
        let source: Vec<(String, String)> = tern_policy::example::FILES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        write_policies(&dir, &source, arm, false).unwrap();
        let b = Bundle::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        b
    }

    fn receipt(user: &str, channel: &str, category: &str, hour: i64) -> tern_sim::Receipt {
        tern_sim::Receipt {
            user_id: user.into(),
            channel: channel.into(),
            category: category.into(),
            at: "2026-03-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::hours(hour),
            reached: true,
        }
    }

    #[test]
    fn the_cap_checker_finds_what_the_default_caps_forbid_and_spares_transactional() {
        let b = bundle(Arm::Tern);
        assert!(b.experiments.is_empty());
        // Push: at most 2 a day and 4 h apart.
        let fine = [
            receipt("a", "push", "content", 8),
            receipt("a", "push", "content", 12),
            receipt("a", "push", "content", 32),
            receipt("a", "email", "account", 33),
        ];
        assert_eq!(cap_violations(&b, &fine), Vec::<String>::new());
        let too_many = [
            receipt("a", "push", "content", 8),
            receipt("a", "push", "content", 12),
            receipt("a", "push", "content", 16),
        ];
        let v = cap_violations(&b, &too_many);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with("a: push content at 2026-03-02 16:00:00 UTC"),
            "{v:?}"
        );
        let too_close = [
            receipt("b", "push", "social", 8),
            receipt("b", "push", "content", 9),
        ];
        assert_eq!(cap_violations(&b, &too_close).len(), 1);
        // Password resets are exempt however many there are.
        let resets: Vec<_> = (0..5)
            .map(|h| receipt("c", "email", "account", h))
            .collect();
        assert!(cap_violations(&b, &resets).is_empty());
    }

    #[test]
    fn the_greedy_arm_replaces_the_objective_and_drops_experiments() {
        let b = bundle(Arm::GreedyClick);
        let o = b.default_objective().unwrap();
        assert_eq!(o.weights.engagement, 1.0);
        assert_eq!(o.weights.retention, 0.0);
        assert_eq!(o.min_value, 0.0);
        assert!(b.experiments.is_empty());
        assert_eq!(b.objectives.len(), 1);
    }
}
