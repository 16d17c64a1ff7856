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
//! - `greedy-click`: the same loop, but the objective is the predicted short-term open or click
//!   alone, with no floor: the usual "engagement-optimised" sender.
//! - `fcfs`: no planner: every opportunity is sent when it arrives, on its first reachable
//!   channel outside quiet hours, until a cap says no — what most messaging products do. It
//!   runs beside tern rather than through it, with the same caps.
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
    Tern,
    GreedyClick,
    Fcfs,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Tern => "tern",
            Arm::GreedyClick => "greedy-click",
            Arm::Fcfs => "fcfs",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Arm::Tern => "tern's planner with the multi-objective model it trains each night",
            Arm::GreedyClick => {
                "tern's loop, but the objective is the predicted open or click alone, with no floor"
            }
            Arm::Fcfs => {
                "every opportunity sent when it arrives on its first reachable channel outside quiet hours, until a cap says no"
            }
        }
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
    /// Run every arm (tern, greedy-click, fcfs) and compare them.
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
    #[serde(skip)]
    pub volume_by_hour: BTreeMap<String, [u64; 24]>,
    #[serde(skip)]
    pub calibration: Vec<CalibrationBin>,
    pub seconds: f64,
}

/// The channels a simulated user can be reached on, as the profile says.
fn reachable_channels(p: &Profile) -> Vec<String> {
    let mut r = vec!["in_app".to_string()];
    if p.push_enabled && p.device.is_some() {
        r.push("push".into());
    }
    if p.email_verified {
        r.push("email".into());
    }
    r
}

/// The channel an unsubscribe or push-disabled outcome takes away, as any sender would learn.
fn lost_channel(kind: OutcomeKind) -> Option<&'static str> {
    match kind {
        OutcomeKind::Unsubscribed => Some("email"),
        OutcomeKind::PushDisabled => Some("push"),
        _ => None,
    }
}

#[derive(Debug)]
struct PendingTx {
    submitted: DateTime<Utc>,
    created: DateTime<Utc>,
    expires: DateTime<Utc>,
    reachable: bool,
}

/// The demo's own ledger of transactional messages: each one submitted, matched to its send by
/// user (oldest first), so that the loop check does not take tern's word for it.
struct TxLog {
    reachable: BTreeMap<String, Vec<String>>,
    pending: BTreeMap<String, VecDeque<PendingTx>>,
    submitted: u64,
    sent: u64,
    latencies: Vec<i64>,
    request_latencies: Vec<i64>,
}

impl TxLog {
    fn new(profiles: &[Profile]) -> TxLog {
        TxLog {
            reachable: profiles
                .iter()
                .map(|p| (p.user_id.clone(), reachable_channels(p)))
                .collect(),
            pending: BTreeMap::new(),
            submitted: 0,
            sent: 0,
            latencies: Vec::new(),
            request_latencies: Vec::new(),
        }
    }

    fn submit(&mut self, o: &NewOpportunity, now: DateTime<Utc>) {
        if o.priority != tern_core::TRANSACTIONAL {
            return;
        }
        let reachable = self
            .reachable
            .get(&o.user_id)
            .is_some_and(|r| o.channels.iter().any(|c| r.contains(c)));
        self.submitted += 1;
        self.pending
            .entry(o.user_id.clone())
            .or_default()
            .push_back(PendingTx {
                submitted: now,
                created: o.created_at,
                expires: o.expires_at,
                reachable,
            });
    }

    fn sent(&mut self, user_id: &str, priority: &str, now: DateTime<Utc>) {
        if priority != tern_core::TRANSACTIONAL {
            return;
        }
        self.sent += 1;
        let Some(queue) = self.pending.get_mut(user_id) else {
            return;
        };
        let i = queue.iter().position(|p| p.expires > now).unwrap_or(0);
        if let Some(p) = queue.remove(i) {
            self.latencies.push((now - p.submitted).num_seconds());
            self.request_latencies.push((now - p.created).num_seconds());
        }
    }

    fn learn(&mut self, outcomes: &[Outcome], now: DateTime<Utc>) {
        for o in outcomes.iter().filter(|o| o.at <= now) {
            if let (Some(lost), Some(r)) =
                (lost_channel(o.kind), self.reachable.get_mut(&o.user_id))
            {
                r.retain(|c| c != lost);
            }
        }
    }

    fn finish(mut self, end: DateTime<Utc>) -> Transactional {
        let mut t = Transactional {
            submitted: self.submitted,
            sent: self.sent,
            ..Transactional::default()
        };
        for p in self.pending.values().flatten() {
            if p.expires > end {
                t.open += 1;
            } else if p.reachable {
                t.expired_unsent += 1;
            } else {
                t.unreachable += 1;
            }
        }
        self.latencies.sort_unstable();
        self.request_latencies.sort_unstable();
        t.latency_p50_secs = percentile(&self.latencies, 0.5);
        t.latency_p99_secs = percentile(&self.latencies, 0.99);
        t.request_latency_p50_secs = percentile(&self.request_latencies, 0.5);
        t.request_latency_p99_secs = percentile(&self.request_latencies, 0.99);
        t
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub async fn run(url: Option<&str>, args: DemoArgs) -> Result<ExitCode> {
    ensure!(
        args.start.time() == chrono::NaiveTime::MIN,
        "--start must be a UTC midnight, e.g. 2026-03-02T00:00:00Z"
    );
    let arms: Vec<Arm> = if args.compare {
        vec![Arm::Tern, Arm::GreedyClick, Arm::Fcfs]
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
        let kept: Vec<&str> = tern_policy::example::split_documents(text)
            .into_iter()
            .filter(|doc| {
                let kind = tern_policy::example::kind_of(doc);
                !(kind == Some("Experiment") && (!keep_experiments || arm != Arm::Tern))
                    && !(kind == Some("Objective") && arm == Arm::GreedyClick)
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

/// The gRPC clients of every role.
struct Clients {
    admin: AdminServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    opportunities: OpportunityServiceClient<Channel>,
    schedule: ScheduleServiceClient<Channel>,
    feedback: FeedbackServiceClient<Channel>,
}

impl Clients {
    async fn connect(address: SocketAddr) -> Result<Clients> {
        let channel = Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to the daemon at {address}"))?;
        let limit = 64 * 1024 * 1024;
        Ok(Clients {
            admin: AdminServiceClient::new(channel.clone()),
            users: UserServiceClient::new(channel.clone()).max_decoding_message_size(limit),
            opportunities: OpportunityServiceClient::new(channel.clone()),
            schedule: ScheduleServiceClient::new(channel.clone()).max_decoding_message_size(limit),
            feedback: FeedbackServiceClient::new(channel),
        })
    }
}

/// Runs one arm on one seed.
async fn simulate(
    store: &Store,
    arm: Arm,
    seed: u64,
    args: &DemoArgs,
    policies: &Path,
    bundle: &Bundle,
) -> Result<RunResult> {
    let started = Instant::now();
    let start = args.start;
    let mut world = World::new(Config::new(args.users as usize, seed, start));
    let profiles = world.profiles();
    let daemon = if arm == Arm::Fcfs {
        None
    } else {
        let config = tern_daemon::ServiceConfig {
            // The demo's policies do not change while it runs.
            policy_poll: Duration::from_secs(60),
            policy_settle: Duration::ZERO,
            max_message_bytes: 64 * 1024 * 1024,
            simulate_from: Some(start),
            training: Some(tern_daemon::Training {
                schedule: tern_policy::CronSchedule::parse(TRAIN_SCHEDULE)
                    .map_err(|e| anyhow::anyhow!("the demo's training schedule: {e}"))?,
                settings: tern_daemon::train::TrainSettings {
                    days: 28,
                    valid_fraction: 0.25,
                    config: tern_model::TrainConfig::default(),
                    labels: tern_daemon::train::Labels {
                        // The run is weeks long: a week's retention label is observable
                        // within it.
                        retention_days: 7,
                        // Opens come within hours; a short label window lets the first model
                        // train (and be validated) within days rather than after a week.
                        engagement_hours: 12,
                        ..tern_daemon::train::Labels::default()
                    },
                    work_dir: std::env::temp_dir(),
                    progress: None,
                },
                promote: true,
            }),
            ..tern_daemon::ServiceConfig::local(policies)
        };
        Some(tern_daemon::service::start(store.clone(), config).await?)
    };
    let mut clients = match &daemon {
        Some(d) => Some(Clients::connect(d.address).await?),
        None => None,
    };
    if let Some(c) = &mut clients {
        for chunk in profiles.chunks(BATCH) {
            c.users
                .upsert(pb::UpsertUsersRequest {
                    users: chunk.iter().map(user).collect(),
                })
                .await
                .context("UserService.Upsert")?;
        }
    }

    if !args.quiet {
        println!(
            "{} (seed {seed}): {} users, {} days",
            arm.name(),
            thousands(args.users),
            args.days
        );
    }
    let mut fcfs = Fcfs::new(bundle, &profiles);
    let mut tx = TxLog::new(&profiles);
    let mut waiting: Vec<Outcome> = Vec::new();
    let mut days = Vec::new();
    let mut submitted = 0u64;
    let mut events = 0u64;
    let reset_generator = bundle.generators.iter().any(
        |g| matches!(&g.trigger, tern_policy::Trigger::Event { event, .. } if event == RESET_EVENT),
    );
    let mut reported = 0u64;
    let mut volume_by_hour: BTreeMap<String, [u64; 24]> = BTreeMap::new();
    let steps = i64::from(args.days) * 24;
    for step in 1..=steps {
        let now = start + TimeDelta::hours(step);
        let hour_start = now - TimeDelta::hours(1);
        if let Some(c) = &mut clients {
            c.admin
                .advance_clock(pb::AdvanceClockRequest {
                    to: Some(timestamp(now)),
                })
                .await
                .context("AdminService.AdvanceClock")?;
        }
        if step % 24 == 0 {
            let day = (now - TimeDelta::days(1)).date_naive();
            // Outcomes up to midnight belong to the closing day.
            reported += report_due(&mut clients, &mut waiting, now).await?;
            let r = world.end_of_day(day)?;
            if let Some(c) = &mut clients {
                for chunk in r.active_users.chunks(BATCH) {
                    c.feedback
                        .report_activity(pb::ReportActivityRequest {
                            activity: chunk
                                .iter()
                                .map(|u| pb::Activity {
                                    user_id: u.clone(),
                                    occurred_at: Some(timestamp(now - TimeDelta::hours(12))),
                                })
                                .collect(),
                        })
                        .await
                        .context("FeedbackService.ReportActivity")?;
                }
            }
            let row = DayRow {
                day,
                messages: r
                    .messages
                    .iter()
                    .map(|(k, v)| (k.clone(), *v as u64))
                    .collect(),
                opens: r.opens as u64,
                conversions: r.conversions as u64,
                unsubscribes: (r.unsubscribes + r.push_disables) as u64,
                active_users: r.active as u64,
            };
            if !args.quiet {
                let model = match &mut clients {
                    Some(c) => {
                        let m = c
                            .admin
                            .get_status(pb::GetStatusRequest {})
                            .await?
                            .into_inner()
                            .model_version;
                        if m.is_empty() {
                            "no model yet".to_string()
                        } else {
                            format!("model {m}")
                        }
                    }
                    None => "no model".into(),
                };
                println!("  {}", day_line(&row, args.users, &model));
            }
            days.push(row);
            if step == steps {
                break;
            }
        }

        // Delivery: everything due now, on every channel.
        let sent = match &mut clients {
            Some(c) => deliver_due(c, &mut world, now).await?,
            None => fcfs.deliver(&mut world, now, false)?,
        };
        for d in sent {
            tx.sent(&d.user_id, &d.priority, now);
            volume_by_hour.entry(d.channel).or_default()[now.hour() as usize] += 1;
            waiting.extend(d.outcomes);
        }
        if arm == Arm::Fcfs {
            fcfs.learn(&waiting, now);
        }
        tx.learn(&waiting, now);
        reported += report_due(&mut clients, &mut waiting, now).await?;

        // Upstream: the opportunities that arose in the hour that just ended.
        let arisen = world.opportunities(hour_start, now);
        match &mut clients {
            Some(c) => {
                // Password resets arrive as events, for the policy's generator to turn into
                // opportunities; the rest are submitted as opportunities.
                let (resets, direct): (Vec<NewOpportunity>, Vec<NewOpportunity>) = arisen
                    .into_iter()
                    .partition(|o| reset_generator && o.category == "account");
                for o in direct.iter().chain(&resets) {
                    tx.submit(o, now);
                }
                for chunk in direct.chunks(BATCH) {
                    let reply = c
                        .opportunities
                        .submit(pb::SubmitRequest {
                            source: tern_sim::SOURCE.into(),
                            opportunities: chunk.iter().map(opportunity).collect(),
                        })
                        .await
                        .context("OpportunityService.Submit")?
                        .into_inner();
                    ensure!(
                        reply.rejected.is_empty(),
                        "tern rejected simulated opportunities: {:?}",
                        reply.rejected.first()
                    );
                    submitted += u64::from(reply.created);
                }
                if !resets.is_empty() {
                    let reply = c
                        .opportunities
                        .submit_events(pb::SubmitEventsRequest {
                            events: resets.iter().map(reset_event).collect(),
                        })
                        .await
                        .context("OpportunityService.SubmitEvents")?
                        .into_inner();
                    ensure!(
                        reply.evaluation_errors == 0,
                        "the password-reset generator failed: {:?}",
                        reply.error_samples
                    );
                    submitted += u64::from(reply.opportunities_created);
                    events += resets.len() as u64;
                }
            }
            None => {
                submitted += arisen.len() as u64;
                for o in &arisen {
                    tx.submit(o, now);
                }
                fcfs.arrive(arisen)
            }
        }

        // Delivery again, as a delivery service pulls all the time: what must go out at once
        // (a class that bypasses anything, which tern planned as it arrived) goes now, not
        // an hour later, when a password reset has expired.
        let urgent = match &mut clients {
            Some(c) => deliver_due(c, &mut world, now).await?,
            None => fcfs.deliver(&mut world, now, true)?,
        };
        for d in urgent {
            tx.sent(&d.user_id, &d.priority, now);
            volume_by_hour.entry(d.channel).or_default()[now.hour() as usize] += 1;
            waiting.extend(d.outcomes);
        }
    }
    let end = start + TimeDelta::days(i64::from(args.days));

    let summary = world.summary();
    let mut result = RunResult {
        arm,
        seed,
        users: args.users,
        retention: summary.retention,
        messages: summary.messages.values().sum::<usize>() as u64,
        opens: summary.opens as u64,
        conversions: summary.conversions as u64,
        conversion_value: summary.conversion_value,
        unsubscribes: (summary.unsubscribes + summary.push_disables) as u64,
        days,
        submitted,
        events,
        opportunity_states: BTreeMap::new(),
        outcomes_stored: BTreeMap::new(),
        outcomes_reported: reported,
        models_trained: 0,
        active_model: None,
        suppressed: BTreeMap::new(),
        cap_violations: cap_violations(bundle, world.receipts()),
        transactional: tx.finish(end),
        volume_by_hour,
        calibration: Vec::new(),
        seconds: 0.0,
    };
    if let Some(d) = daemon {
        store.expire(end).await?;
        result.opportunity_states = store.opportunity_states().await?;
        result.outcomes_stored = store.outcome_counts().await?;
        result.suppressed = store.suppressed_totals().await?;
        let models = store.list_models().await?;
        result.models_trained = models.len() as u64;
        result.active_model = store.active_model().await?.map(|(v, _)| v);
        result.calibration = store
            .engagement_calibration(10, TimeDelta::hours(48), end)
            .await?
            .into_iter()
            .map(|b| CalibrationBin {
                predicted: b.predicted,
                observed: b.observed,
                count: b.count,
            })
            .collect();
        d.stop();
        d.finish(Duration::from_secs(5)).await?;
    }
    result.seconds = started.elapsed().as_secs_f64();
    if !args.quiet {
        println!(
            "  done in {:.0}s: retention (mean daily active share, last 7 days) {:.1}%",
            result.seconds,
            100.0 * result.retention
        );
    }
    Ok(result)
}

/// One message that reached a simulated user.
struct Delivered {
    channel: String,
    user_id: String,
    priority: String,
    outcomes: Vec<Outcome>,
}

/// Pulls everything due on every channel, acks it as sent, and hands it to the population.
/// Returns each message with its outcomes.
async fn deliver_due(
    c: &mut Clients,
    world: &mut World,
    now: DateTime<Utc>,
) -> Result<Vec<Delivered>> {
    let mut sent = Vec::new();
    for channel in ["push", "email", "in_app"] {
        loop {
            let items = c
                .schedule
                .pull(pb::PullRequest {
                    holder: format!("sim-{channel}"),
                    channels: vec![channel.into()],
                    max_items: PULL,
                    lease: Some(prost_types::Duration {
                        seconds: 600,
                        nanos: 0,
                    }),
                })
                .await
                .context("ScheduleService.Pull")?
                .into_inner()
                .items;
            if items.is_empty() {
                break;
            }
            let acks = c
                .schedule
                .ack(pb::AckRequest {
                    acks: items.iter().map(pb::AckItem::sent).collect(),
                })
                .await
                .context("ScheduleService.Ack")?
                .into_inner()
                .outcomes;
            let ids: BTreeMap<i64, i64> = acks
                .iter()
                .filter_map(|a| a.message_id.map(|m| (a.item_id, m)))
                .collect();
            for item in &items {
                // Only what tern confirmed as sent reaches the user.
                let Some(message) = ids.get(&item.item_id) else {
                    continue;
                };
                let outcomes = world.deliver(Delivery {
                    message_id: message.to_string(),
                    user_id: item.user_id.clone(),
                    channel: item.channel.clone(),
                    category: item.category.clone(),
                    template: item.template.clone(),
                    relevance: item.signals.get("relevance").copied(),
                    order_value: item.signals.get("order_value").copied(),
                    at: now,
                })?;
                sent.push(Delivered {
                    channel: item.channel.clone(),
                    user_id: item.user_id.clone(),
                    priority: item.priority.clone(),
                    outcomes,
                });
            }
        }
    }
    Ok(sent)
}

/// Reports the outcomes whose time has come; keeps the rest waiting.
async fn report_due(
    clients: &mut Option<Clients>,
    waiting: &mut Vec<Outcome>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let (due, later): (Vec<Outcome>, Vec<Outcome>) = std::mem::take(waiting)
        .into_iter()
        .partition(|o| o.at <= now);
    *waiting = later;
    let Some(c) = clients else {
        return Ok(due.len() as u64);
    };
    let mut n = 0;
    for chunk in due.chunks(BATCH) {
        let outcomes = chunk
            .iter()
            .filter_map(|o| {
                Some(pb::Outcome {
                    user_id: o.user_id.clone(),
                    message_id: o.message_id.parse().ok()?,
                    kind: outcome_kind(o.kind) as i32,
                    occurred_at: Some(timestamp(o.at)),
                    value: o.value,
                })
            })
            .collect::<Vec<_>>();
        n += outcomes.len() as u64;
        c.feedback
            .report(pb::ReportRequest { outcomes })
            .await
            .context("FeedbackService.Report")?;
    }
    Ok(n)
}

fn outcome_kind(k: OutcomeKind) -> pb::OutcomeKind {
    match k {
        OutcomeKind::Delivered => pb::OutcomeKind::Delivered,
        OutcomeKind::Opened => pb::OutcomeKind::Opened,
        OutcomeKind::Clicked => pb::OutcomeKind::Clicked,
        OutcomeKind::Converted => pb::OutcomeKind::Converted,
        OutcomeKind::Unsubscribed => pb::OutcomeKind::Unsubscribed,
        OutcomeKind::PushDisabled => pb::OutcomeKind::PushDisabled,
        OutcomeKind::Bounced => pb::OutcomeKind::Bounced,
        OutcomeKind::Complained => pb::OutcomeKind::Complained,
    }
}

/// A profile as the upstream system describes the user to tern. The attributes are the ones
/// the example policies' conditions read.
fn user(p: &Profile) -> pb::User {
    let attributes = serde_json::json!({
        "country": p.country,
        "premium": p.premium,
        "tags": p.tags,
        "push_enabled": p.push_enabled,
        "devices": p.device.iter().collect::<Vec<_>>(),
        "email_verified": p.email_verified,
        "email_unsubscribed": false,
        "digest_opt_out": false,
        "unseen_items": 0,
        "followed_artists": [],
        "artist_affinity": {},
    });
    let state = |channel: &str, reachable: bool| pb::ChannelState {
        channel: channel.into(),
        reachable,
        opted_out: false,
    };
    pb::User {
        user_id: p.user_id.clone(),
        timezone: p.timezone.clone(),
        locale: p.locale.clone(),
        attributes_json: attributes.to_string(),
        channels: vec![
            state("push", p.push_enabled && p.device.is_some()),
            state("email", p.email_verified),
            state("in_app", true),
        ],
        opted_out_categories: Vec::new(),
    }
}

/// The upstream event behind a simulated password reset: the policy's `password-reset`
/// generator keys the message on `event.request_id`.
fn reset_event(o: &NewOpportunity) -> pb::Event {
    pb::Event {
        r#type: RESET_EVENT.into(),
        user_ids: vec![o.user_id.clone()],
        event_id: o.dedupe_key.clone(),
        numbers: Default::default(),
        strings: [("request_id".to_string(), o.dedupe_key.clone())].into(),
        occurred_at: Some(timestamp(o.created_at)),
    }
}

fn opportunity(o: &NewOpportunity) -> pb::Opportunity {
    pb::Opportunity {
        user_id: o.user_id.clone(),
        dedupe_key: o.dedupe_key.clone(),
        template: o.template.clone(),
        category: o.category.clone(),
        priority: o.priority.clone(),
        channels: o.channels.clone(),
        signals: o.signals.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        payload: o.payload.clone().into_iter().collect(),
        created_at: Some(timestamp(o.created_at)),
        expires_at: Some(timestamp(o.expires_at)),
        ..Default::default()
    }
}

/// One message a user got, as caps count it.
#[derive(Debug, Clone)]
struct Sent {
    channel: String,
    category: String,
    /// Of a priority class the cap set does not hold back (its `exempt`, or a class that bypasses
    /// caps): neither counted nor held back.
    exempt: bool,
    at: DateTime<Utc>,
}

/// The first-come-first-served sender: no model, no planner.
struct Fcfs<'b> {
    bundle: &'b Bundle,
    timezones: BTreeMap<String, chrono_tz::Tz>,
    /// Reachable channels per user, as the profile says and outcomes revise.
    reachable: BTreeMap<String, Vec<String>>,
    /// What each user was sent.
    sent: BTreeMap<String, Vec<Sent>>,
    queue: Vec<NewOpportunity>,
}

impl<'b> Fcfs<'b> {
    fn new(bundle: &'b Bundle, profiles: &[Profile]) -> Fcfs<'b> {
        Fcfs {
            bundle,
            timezones: profiles
                .iter()
                .map(|p| {
                    (
                        p.user_id.clone(),
                        p.timezone.parse().unwrap_or(chrono_tz::UTC),
                    )
                })
                .collect(),
            reachable: profiles
                .iter()
                .map(|p| (p.user_id.clone(), reachable_channels(p)))
                .collect(),
            sent: BTreeMap::new(),
            queue: Vec::new(),
        }
    }

    fn arrive(&mut self, opportunities: Vec<NewOpportunity>) {
        self.queue.extend(opportunities);
    }

    /// An unsubscribe or push-disabled outcome takes the channel away, as it would in any
    /// sender.
    fn learn(&mut self, outcomes: &[Outcome], now: DateTime<Utc>) {
        for o in outcomes.iter().filter(|o| o.at <= now) {
            let Some(lost) = lost_channel(o.kind) else {
                continue;
            };
            if let Some(r) = self.reachable.get_mut(&o.user_id) {
                r.retain(|c| c != lost);
            }
        }
    }

    /// Sends what arrived, in arrival order, each on its first channel that is reachable,
    /// outside quiet hours and within the caps; what cannot go now is dropped. A class the
    /// policy lets bypass quiet hours or caps is treated as tern treats it. With `urgent_only`,
    /// only the classes that bypass anything go (as they arrive); the rest wait in the queue.
    fn deliver(
        &mut self,
        world: &mut World,
        now: DateTime<Utc>,
        urgent_only: bool,
    ) -> Result<Vec<Delivered>> {
        let mut queue = std::mem::take(&mut self.queue);
        queue.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.dedupe_key.cmp(&b.dedupe_key))
        });
        let mut out = Vec::new();
        for o in queue {
            if o.expires_at <= now {
                continue;
            }
            let class = Priority::parse(&o.priority);
            if urgent_only && !class.is_some_and(|p| self.bundle.urgent(p)) {
                self.queue.push(o);
                continue;
            }
            let exempt = class.is_some_and(|p| {
                self.bundle
                    .default_caps()
                    .is_some_and(|c| !self.bundle.caps_hold(c, p))
                    || self.bundle.bypasses(p, Bypass::Caps)
            });
            let loud = class.is_some_and(|p| self.bundle.bypasses(p, Bypass::QuietHours));
            let tz = self
                .timezones
                .get(&o.user_id)
                .copied()
                .unwrap_or(chrono_tz::UTC);
            let reachable = self.reachable.get(&o.user_id).cloned().unwrap_or_default();
            let history = self.sent.entry(o.user_id.clone()).or_default();
            let channel = o.channels.iter().find(|c| {
                reachable.contains(c)
                    && (loud || !quiet(self.bundle, c, tz, now))
                    && (exempt
                        || self
                            .bundle
                            .default_caps()
                            .is_none_or(|caps| allows(caps, history, c, &o.category, now)))
            });
            let Some(channel) = channel.cloned() else {
                continue;
            };
            history.push(Sent {
                channel: channel.clone(),
                category: o.category.clone(),
                exempt,
                at: now,
            });
            let outcomes = world.deliver(Delivery::of(&o, &channel, now))?;
            out.push(Delivered {
                channel,
                user_id: o.user_id.clone(),
                priority: o.priority.clone(),
                outcomes,
            });
        }
        Ok(out)
    }
}

fn quiet(bundle: &Bundle, channel: &str, tz: chrono_tz::Tz, now: DateTime<Utc>) -> bool {
    let Some(q) = bundle.channel(channel).and_then(|c| c.quiet_hours.as_ref()) else {
        return false;
    };
    let local = now.with_timezone(&tz).time();
    if q.from < q.to {
        local >= q.from && local < q.to
    } else {
        local >= q.from || local < q.to
    }
}

/// Whether one more message now keeps every rule of `caps`, over the non-exempt history.
fn allows(
    caps: &CapSet,
    history: &[Sent],
    channel: &str,
    category: &str,
    now: DateTime<Utc>,
) -> bool {
    caps.rules.iter().all(|rule| {
        if !in_scope(&rule.channel, rule.category.as_deref(), channel, category) {
            return true;
        }
        let times: Vec<DateTime<Utc>> = history
            .iter()
            .filter(|s| {
                !s.exempt
                    && in_scope(
                        &rule.channel,
                        rule.category.as_deref(),
                        &s.channel,
                        &s.category,
                    )
            })
            .map(|s| s.at)
            .collect();
        let count_ok = rule
            .limit
            .as_ref()
            .is_none_or(|l| (times.iter().filter(|t| **t > now - l.per).count() as u64) < l.max);
        let gap_ok = rule
            .min_gap
            .is_none_or(|g| times.iter().all(|t| now - *t >= g));
        count_ok && gap_ok
    })
}

fn in_scope(
    scope: &ChannelScope,
    rule_category: Option<&str>,
    channel: &str,
    category: &str,
) -> bool {
    let channel_ok = match scope {
        ChannelScope::Any => true,
        ChannelScope::Channel(c) => c == channel,
    };
    channel_ok && rule_category.is_none_or(|c| c == category)
}

/// Every cap rule broken, judged from what each user actually received (the simulator's log),
/// under the cap set the policy gives that user. Classes the set does not hold back (its
/// `exempt`, or a class that bypasses caps) are not counted.
pub fn cap_violations(bundle: &Bundle, receipts: &[tern_sim::Receipt]) -> Vec<String> {
    let mut by_user: BTreeMap<&str, Vec<&tern_sim::Receipt>> = BTreeMap::new();
    for r in receipts {
        by_user.entry(&r.user_id).or_default().push(r);
    }
    let mut violations = Vec::new();
    for (user, mut received) in by_user {
        received.sort_by_key(|r| r.at);
        let Some(caps) = user_caps(bundle, user) else {
            continue;
        };
        let exempt = |r: &tern_sim::Receipt| {
            r.category
                .parse::<tern_sim::Category>()
                .ok()
                .and_then(|c| Priority::parse(c.priority()))
                .is_some_and(|p| !bundle.caps_hold(caps, p))
        };
        let counted: Vec<Sent> = received
            .into_iter()
            .filter(|r| !exempt(r))
            .map(|r| Sent {
                channel: r.channel.clone(),
                category: r.category.clone(),
                exempt: false,
                at: r.at,
            })
            .collect();
        for (i, r) in counted.iter().enumerate() {
            if !allows(caps, &counted[..i], &r.channel, &r.category, r.at) {
                violations.push(format!(
                    "{user}: {} {} at {} breaks cap set {}",
                    r.channel, r.category, r.at, caps.metadata.name
                ));
            }
        }
    }
    violations
}

/// The cap set the policy applies to a user: their effective experiment arm's, else the
/// default; none for a holdout (they get nothing to count).
fn user_caps<'b>(bundle: &'b Bundle, user: &str) -> Option<&'b CapSet> {
    match tern_daemon::translate::effective_arm(bundle, user) {
        Some((_, arm)) if arm.holdout => None,
        Some((_, arm)) => match &arm.caps {
            Some(name) => bundle.cap_set(name),
            None => bundle.default_caps(),
        },
        None => bundle.default_caps(),
    }
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
            let xs: Vec<f64> = runs.iter().map(|r| f(r)).collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let sd = if xs.len() > 1 {
                (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
            } else {
                0.0
            };
            (mean, sd)
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
