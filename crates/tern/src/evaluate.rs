//! `tern evaluate` and `tern policy simulate`: a candidate policy bundle replayed on the logged
//! decisions, and the value it would have earned estimated off-policy.
//!
//! # The decision and its action
//! A logged decision is one opportunity that reached a final state: sent on a channel (from a
//! plan's schedule item, with the probability the plan chose it with) or expired unsent. Its
//! context is the user as the deciding plan saw them: time zone, activity, what they had been
//! sent in the 28 days before, and what else they were sent while the opportunity was open
//! (which the deciding plan had counted as pending items beside it). Its actions are the
//! opportunity's channels and "nothing".
//!
//! The candidate is replayed as the planner would run it, on each context at the moment of the
//! decision, with exploration off: a deterministic policy whose probability of the logged
//! action is 1 when it takes it and 0 otherwise. What it would have sent to holdout users is
//! what it sends: nothing.
//!
//! # Rewards
//! Per objective, the outcome the model's heads learn, attributed to a message: engaged (opened
//! or clicked within `--engagement-hours`), converted, lost reachability (unsubscribed, push
//! disabled or complained), retained (active in the last week of the retention horizon after
//! the send). Sending nothing earns 0 on each, by definition, which needs no logging: only the
//! candidate's sends need support. A decision counts for an objective once the objective's
//! window after the opportunity's expiry has closed by `--until`, whatever was done, so that
//! the recent end of the period does not keep more of one action than of another.
//!
//! # Support
//! A send the candidate makes where the logging policy sent something else is supported only
//! when the logged decision was randomised (propensity below 1: exploration gave the other
//! allowed channels a chance too); a send where the logging policy sent nothing is never
//! supported, since the planner only declines when no candidate is allowed. Unsupported mass is
//! reported, and the estimates come with a warning rather than a silent number.
//!
//! The estimators are in `tern-ope`; this module only turns logs and bundles into its rows.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use futures::TryStreamExt;
use serde_json::json;
use tern_core::OutcomeKind;
use tern_model::Model;
use tern_ope::{Bootstrap, Estimate, Evaluation, Logged};
use tern_planner::{OpportunityInput, PastSend, Planner, Predictor, Scores, UserInput};
use tern_policy::Bundle;
use tern_store::{LoggedDecision, Store, TrainingUser};

use crate::db::Database;
use crate::output::out;
use crate::plan::load_bundle;
use crate::train::LabelArgs;
use tern_daemon::features;
use tern_daemon::predict::{ModelPredictor, Prior};
use tern_daemon::train::retained;
use tern_daemon::translate::{assign_arms, planner_config};

/// The objectives, in the order of [`Decision::rewards`] and of every estimate.
pub const OBJECTIVES: [&str; 4] = ["conversion", "engagement", "retention", "reachability_loss"];

/// One logged decision, ready to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The user as the deciding plan saw them, with exactly one opportunity: the decided one.
    pub user: UserInput,
    /// When the decision was taken: the deciding plan's start, or the opportunity's creation
    /// when nothing was sent.
    pub decided_at: DateTime<Utc>,
    /// What the logging policy sent, if anything.
    pub logged: Option<Sent>,
    /// Per objective (see [`OBJECTIVES`]), what the logged action earned; `None` while it cannot
    /// be observed yet.
    pub rewards: [Option<f64>; 4],
}

/// A logged send.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub channel: String,
    /// The probability with which the logging policy chose it, in (0, 1].
    pub propensity: f64,
}

/// What a policy does with one logged decision on replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The channel it sends on (an index into the opportunity's channels), if it sends.
    pub channel: Option<usize>,
    /// When the send's window opens.
    pub send_after: Option<DateTime<Utc>>,
    /// Why candidates were suppressed (one entry per suppression, as in a plan's stats).
    pub suppressed: Vec<&'static str>,
    /// The direct method's predictions, one per channel of the opportunity.
    pub predicted: Vec<Scores>,
}

/// Makes a predictor for decisions taken at one instant.
pub type PredictorAt<'a> = dyn Fn(DateTime<Utc>) -> Box<dyn Predictor> + Sync + 'a;

/// Replays `bundle` on every decision: its default Replan's horizon, exploration off, each
/// decision planned at its own moment with the scores `scorer` gives (what the policy would
/// have acted on), and the direct method's predictions from `dm`.
pub fn replay(
    bundle: &Bundle,
    decisions: &[Decision],
    scorer: &PredictorAt<'_>,
    dm: &PredictorAt<'_>,
) -> Result<Vec<Replayed>> {
    let mut config = planner_config(bundle, None)?;
    config.exploration = 0.0;
    let planner = Planner::new(config).context("the candidate policy cannot be planned with")?;
    let mut by_moment: BTreeMap<DateTime<Utc>, Vec<usize>> = BTreeMap::new();
    for (i, d) in decisions.iter().enumerate() {
        if d.user.opportunities.len() != 1 {
            bail!(
                "decision {i} has {} opportunities; a decision has one",
                d.user.opportunities.len()
            );
        }
        by_moment.entry(d.decided_at).or_default().push(i);
    }
    let mut out: Vec<Option<Replayed>> = vec![None; decisions.len()];
    for (at, indices) in by_moment {
        // The same user can hold several decisions at one moment; each is its own context, so
        // each gets its own id (after the arm is assigned from the real one).
        let mut users: Vec<UserInput> = indices
            .iter()
            .map(|&i| {
                let mut u = decisions[i].user.clone();
                assign_arms(bundle, std::slice::from_mut(&mut u));
                u.user_id = format!("{i:010}");
                u
            })
            .collect();
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let plan = planner.plan(&users, at, 0, scorer(at).as_ref())?;
        let mut predicted = Vec::new();
        dm(at).predict_many(&users.iter().collect::<Vec<_>>(), &mut predicted);
        let mut predicted = predicted.into_iter();
        for (user, up) in users.iter().zip(&plan.users) {
            let i: usize = user.user_id.parse().expect("ids are indices");
            let opportunity = &user.opportunities[0];
            let choice = up.choices.first();
            out[i] = Some(Replayed {
                channel: choice.and_then(|c| {
                    let name = plan.channel_name(c.channel);
                    opportunity.channels.iter().position(|ch| ch == name)
                }),
                send_after: choice.map(|c| c.send_after),
                suppressed: up.suppressions.iter().map(|s| s.reason.as_str()).collect(),
                predicted: predicted
                    .by_ref()
                    .take(opportunity.channels.len())
                    .collect(),
            });
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every decision replayed"))
        .collect())
}

fn head(s: &Scores, objective: usize) -> f64 {
    match objective {
        0 => s.conversion,
        1 => s.engagement,
        2 => s.retention,
        _ => s.reachability_loss,
    }
}

/// The rows `tern-ope` estimates from, for one objective: the decisions whose reward is
/// observable, each with the candidate's probability of the logged action, the direct
/// method's prediction for the logged action and for the candidate's, and the support.
pub fn rows(decisions: &[Decision], replayed: &[Replayed], objective: usize) -> Vec<Logged> {
    decisions
        .iter()
        .zip(replayed)
        .filter_map(|(d, r)| {
            let reward = d.rewards[objective]?;
            let channels = &d.user.opportunities[0].channels;
            let q = |c: Option<usize>| c.map_or(0.0, |c| head(&r.predicted[c], objective));
            let logged = d
                .logged
                .as_ref()
                .and_then(|s| channels.iter().position(|c| *c == s.channel));
            let propensity = d.logged.as_ref().map_or(1.0, |s| s.propensity);
            let same = r.channel == logged;
            // Another send than the logged action is backed only by a randomised decision.
            let unsupported = match (r.channel, d.logged.as_ref()) {
                (Some(_), _) if same => 0.0,
                (Some(_), Some(s)) if s.propensity < 1.0 => 0.0,
                (Some(_), _) => 1.0,
                (None, _) => 0.0,
            };
            Some(Logged {
                propensity,
                target: if same { 1.0 } else { 0.0 },
                reward,
                predicted_logged: q(logged),
                predicted_target: q(r.channel),
                unsupported,
            })
        })
        .collect()
}

/// The unit of each row of [`rows`] for `objective`: its user, so that the bootstrap resamples
/// users, whose decisions are not independent of each other.
pub fn units(decisions: &[Decision], objective: usize) -> Vec<u64> {
    let mut ids: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    decisions
        .iter()
        .filter(|d| d.rewards[objective].is_some())
        .map(|d| {
            let next = ids.len() as u64;
            *ids.entry(d.user.user_id.as_str()).or_insert(next)
        })
        .collect()
}

/// The candidate's estimates, objective by objective.
pub fn estimates(
    decisions: &[Decision],
    replayed: &[Replayed],
    bootstrap: Bootstrap,
) -> Vec<(&'static str, Result<Evaluation, tern_ope::OpeError>)> {
    OBJECTIVES
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                *name,
                tern_ope::evaluate_by_unit(
                    &rows(decisions, replayed, k),
                    &units(decisions, k),
                    bootstrap,
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Logged decisions from the store.

/// Reads the decisions of `[from, until)` with what was known of their outcomes at `until`.
pub async fn load_decisions(
    store: &Store,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    labels: &LabelArgs,
) -> Result<Vec<Decision>> {
    let logged = store.logged_decisions(from, until).await?;
    let wanted: BTreeSet<&str> = logged.iter().map(|d| d.user_id.as_str()).collect();
    // Each user's messages from 28 days before the period (their history feeds caps and
    // features) and their activity around it (features, retention).
    let history_from = from - TimeDelta::days(28);
    let mut histories: BTreeMap<String, TrainingUser> = BTreeMap::new();
    let mut stream = std::pin::pin!(store.training_history(
        history_from,
        until,
        history_from.date_naive() - TimeDelta::days(28),
        until.date_naive(),
    ));
    while let Some(user) = stream.try_next().await? {
        if wanted.contains(user.user_id.as_str()) {
            histories.insert(user.user_id.clone(), user);
        }
    }
    let timezones = store
        .user_zones(&wanted.iter().copied().collect::<Vec<_>>())
        .await?;
    Ok(logged
        .into_iter()
        .map(|d| decision(d, &histories, &timezones, labels, until))
        .collect())
}

fn decision(
    d: LoggedDecision,
    histories: &BTreeMap<String, TrainingUser>,
    timezones: &BTreeMap<String, (String, Option<DateTime<Utc>>)>,
    labels: &LabelArgs,
    as_of: DateTime<Utc>,
) -> Decision {
    let decided_at = d.sent.as_ref().map_or(d.created_at, |s| s.planned_at);
    let history = histories.get(&d.user_id);
    let (timezone, first_seen_at) = timezones
        .get(&d.user_id)
        .cloned()
        .unwrap_or_else(|| ("UTC".to_string(), None));
    let active_days = history.map_or(&[][..], |h| h.active_days.as_slice());
    let messages = history.map_or(&[][..], |h| h.messages.as_slice());
    // The deciding plan counted the user's past sends and, as pending items, the other sends it
    // scheduled beside this one; the sends of the opportunity's lifetime stand for those. (The
    // model's features read only what was sent before the decision.)
    let own = d.sent.as_ref().map(|s| s.message_id);
    let past: Vec<PastSend> = messages
        .iter()
        .filter(|m| {
            m.sent_at >= decided_at - TimeDelta::days(28)
                && m.sent_at < d.expires_at
                && Some(m.message_id) != own
        })
        .map(|m| PastSend {
            channel: m.channel.clone(),
            category: m.category.clone(),
            priority: m.priority.clone(),
            sent_at: m.sent_at,
            opened_at: m
                .outcomes
                .iter()
                .filter(|(k, t)| {
                    matches!(k, OutcomeKind::Opened | OutcomeKind::Clicked) && *t < decided_at
                })
                .map(|(_, t)| *t)
                .min(),
        })
        .collect();
    let windows = [
        TimeDelta::days(i64::from(labels.conversion_days)),
        TimeDelta::hours(i64::from(labels.engagement_hours)),
        TimeDelta::days(i64::from(labels.retention_days)),
        TimeDelta::days(i64::from(labels.reachability_days)),
    ];
    // One rule of observability for every action: the window after the opportunity's expiry
    // has closed. (Measured from the send, sends would be observable sooner than the
    // decisions that sent nothing, and the recent end of the period would keep more of the
    // latter: a bias towards "nothing".)
    let ready: [bool; 4] = std::array::from_fn(|k| d.expires_at + windows[k] <= as_of);
    let rewards = match &d.sent {
        None => std::array::from_fn(|k| ready[k].then_some(0.0)),
        Some(s) => {
            let outcomes = messages
                .iter()
                .find(|m| m.message_id == s.message_id)
                .map_or(&[][..], |m| m.outcomes.as_slice());
            let t = s.sent_at;
            let within = |kind: fn(OutcomeKind) -> bool, window: TimeDelta| {
                let hit = outcomes
                    .iter()
                    .any(|(k, at)| kind(*k) && *at >= t && *at < t + window && *at < as_of);
                (t + window <= as_of).then_some(f64::from(u8::from(hit)))
            };
            let (kept, observable) = retained(active_days, t, windows[2], as_of);
            let rewards = [
                within(|k| k == OutcomeKind::Converted, windows[0]),
                within(
                    |k| matches!(k, OutcomeKind::Opened | OutcomeKind::Clicked),
                    windows[1],
                ),
                observable.then_some(f64::from(kept)),
                within(OutcomeKind::loses_reachability, windows[3]),
            ];
            std::array::from_fn(|k| rewards[k].filter(|_| ready[k]))
        }
    };
    Decision {
        user: UserInput {
            user_id: d.user_id.clone(),
            activity: features::activity_as_of(first_seen_at, active_days, decided_at),
            timezone,
            arm: None,
            send_time_profile: Vec::new(),
            opted_out_channels: Vec::new(),
            unreachable_channels: Vec::new(),
            opted_out_categories: Vec::new(),
            history: past,
            opportunities: vec![OpportunityInput {
                id: d.opportunity_id,
                category: d.category,
                priority: d.priority,
                channels: d.channels,
                created_at: d.created_at,
                expires_at: d.expires_at,
                template: d.template,
                scores: Vec::new(),
                signals: d.signals,
            }],
        },
        decided_at,
        logged: d.sent.map(|s| Sent {
            channel: s.channel,
            propensity: s.propensity,
        }),
        rewards,
    }
}

// ---------------------------------------------------------------------------------------------
// The commands.

/// What `tern evaluate` and `tern policy simulate` share: the period, the labels, the
/// bootstrap.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Evaluate on the decisions of this many days before --until.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=365))]
    days: u32,
    /// The end of the period (RFC 3339); now when absent. Only outcomes known by then count.
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// Confidence level of the bootstrap intervals.
    #[arg(long, default_value_t = 0.95)]
    level: f64,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Seed of the bootstrap resampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    labels: LabelArgs,
}

impl LogArgs {
    fn bootstrap(&self) -> Result<Bootstrap> {
        if !(self.level > 0.0 && self.level < 1.0) {
            bail!("--level must be in (0, 1), got {}", self.level);
        }
        Ok(Bootstrap {
            resamples: self.resamples,
            level: self.level,
            seed: self.seed,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// The candidate policy bundle directory.
    #[arg(long)]
    policies: PathBuf,
    #[command(flatten)]
    log: LogArgs,
    /// Print the estimates as JSON.
    #[arg(long)]
    json: bool,
}

/// The direct method and the policies' scorer: the active model, or the prior without one.
struct Scoring {
    model: Option<(String, Arc<Model>)>,
}

impl Scoring {
    async fn active(store: &Store) -> Result<Scoring> {
        let model = match store.active_model().await? {
            Some((version, bytes)) => Some((
                version.clone(),
                Arc::new(
                    Model::from_bytes(&bytes)
                        .with_context(|| format!("the active model {version} cannot be loaded"))?,
                ),
            )),
            None => None,
        };
        Ok(Scoring { model })
    }

    fn name(&self) -> String {
        match &self.model {
            Some((v, _)) => format!("model {v}"),
            None => "the prior (no model is active)".to_string(),
        }
    }

    fn scorer(&self) -> Box<PredictorAt<'_>> {
        Box::new(move |at| match &self.model {
            Some((_, m)) => Box::new(ModelPredictor::new(m.clone(), at)) as Box<dyn Predictor>,
            None => Box::new(Prior),
        })
    }

    fn direct_method(&self) -> Box<PredictorAt<'_>> {
        Box::new(move |at| match &self.model {
            Some((_, m)) => {
                Box::new(ModelPredictor::probabilities(m.clone(), at)) as Box<dyn Predictor>
            }
            None => Box::new(Prior),
        })
    }
}

pub async fn run(url: Option<&str>, args: EvaluateArgs) -> Result<ExitCode> {
    let bootstrap = args.log.bootstrap()?;
    let bundle = load_bundle(&args.policies)?;
    let db = Database::open_existing(url, "tern evaluate").await?;
    let until = args.log.until.unwrap_or_else(Utc::now);
    let from = until - TimeDelta::days(i64::from(args.log.days));
    let result = async {
        let decisions = load_decisions(&db.store, from, until, &args.log.labels).await?;
        if decisions.is_empty() {
            bail!("no decisions were logged between {from} and {until}: nothing to estimate from");
        }
        let scoring = Scoring::active(&db.store).await?;
        let (scorer, dm) = (scoring.scorer(), scoring.direct_method());
        let replayed = tokio::task::block_in_place(|| replay(&bundle, &decisions, &scorer, &dm))?;
        let estimates = estimates(&decisions, &replayed, bootstrap);
        let summary = Summary::of(&decisions, &replayed);
        if args.json {
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&json!({
                    "policies": args.policies.display().to_string(),
                    "policy_version": bundle.version,
                    "from": from,
                    "until": until,
                    "direct_method": scoring.name(),
                    "level": bootstrap.level,
                    "decisions": summary.decisions,
                    "logged_sends": summary.logged_sends,
                    "candidate_sends": summary.candidate_sends,
                    "same_action": summary.same_action,
                    "objectives": estimates.iter().map(|(name, e)| estimate_json(name, e)).collect::<Vec<_>>(),
                }))?
            ));
        } else {
            out(&evaluation_text(&args.policies, &bundle, &scoring.name(), from, until, &summary, &estimates, bootstrap.level));
        }
        Ok(())
    }
    .await;
    db.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Counts over a replay.
struct Summary {
    decisions: usize,
    logged_sends: usize,
    candidate_sends: usize,
    same_action: usize,
}

impl Summary {
    fn of(decisions: &[Decision], replayed: &[Replayed]) -> Summary {
        let same = decisions
            .iter()
            .zip(replayed)
            .filter(|(d, r)| {
                let channels = &d.user.opportunities[0].channels;
                let logged = d
                    .logged
                    .as_ref()
                    .and_then(|s| channels.iter().position(|c| *c == s.channel));
                logged == r.channel
            })
            .count();
        Summary {
            decisions: decisions.len(),
            logged_sends: decisions.iter().filter(|d| d.logged.is_some()).count(),
            candidate_sends: replayed.iter().filter(|r| r.channel.is_some()).count(),
            same_action: same,
        }
    }
}

fn estimate_json(name: &str, e: &Result<Evaluation, tern_ope::OpeError>) -> serde_json::Value {
    let est = |e: &Estimate| json!({"value": e.value, "low": e.low, "high": e.high});
    match e {
        Ok(e) => json!({
            "objective": name,
            "rows": e.rows,
            "ips": est(&e.ips),
            "snips": est(&e.snips),
            "doubly_robust": est(&e.doubly_robust),
            "effective_sample_size": e.effective_sample_size,
            "unsupported": e.unsupported,
            "warnings": e.warnings(),
        }),
        Err(err) => json!({"objective": name, "rows": 0, "error": err.to_string()}),
    }
}

fn interval(e: &Estimate) -> String {
    format!("{:.4} [{:.4}, {:.4}]", e.value, e.low, e.high)
}

#[allow(clippy::too_many_arguments)]
fn evaluation_text(
    dir: &Path,
    bundle: &Bundle,
    dm: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    s: &Summary,
    estimates: &[(&'static str, Result<Evaluation, tern_ope::OpeError>)],
    level: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "candidate {} (policy {}) on {} logged decisions, {} to {}",
        dir.display(),
        bundle.short_version(),
        s.decisions,
        from.format("%Y-%m-%d %H:%M"),
        until.format("%Y-%m-%d %H:%M")
    );
    let _ = writeln!(
        out,
        "the logging policy sent {}; the candidate sends {}, the same action on {} decisions",
        s.logged_sends, s.candidate_sends, s.same_action
    );
    let _ = writeln!(
        out,
        "value per decision, {:.0}% bootstrap intervals; direct method: {dm}\n",
        100.0 * level
    );
    let _ = writeln!(
        out,
        "{:<18} {:>7}  {:<27} {:<27} {:<27} {:>8}",
        "objective", "rows", "IPS", "SNIPS", "doubly robust", "ESS"
    );
    let mut warnings = Vec::new();
    for (name, e) in estimates {
        match e {
            Ok(e) => {
                let _ = writeln!(
                    out,
                    "{:<18} {:>7}  {:<27} {:<27} {:<27} {:>8.0}",
                    name,
                    e.rows,
                    interval(&e.ips),
                    interval(&e.snips),
                    interval(&e.doubly_robust),
                    e.effective_sample_size
                );
                warnings.extend(e.warnings().into_iter().map(|w| format!("{name}: {w}")));
            }
            Err(err) => {
                let _ = writeln!(out, "{name:<18} {:>7}  {err}", 0);
            }
        }
    }
    for w in warnings {
        let _ = writeln!(out, "\nwarning: {w}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// `tern policy simulate`.

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The bundle running now.
    #[arg(long)]
    against: PathBuf,
    /// The changed bundle.
    new: PathBuf,
    #[command(flatten)]
    log: LogArgs,
    /// `markdown` for a pull request, `json` for tools.
    #[arg(long, value_enum, default_value_t = SimulateFormat::Markdown)]
    format: SimulateFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimulateFormat {
    Markdown,
    Json,
}

/// What one bundle does on replay, in aggregate.
#[derive(Debug, Default)]
struct Volume {
    per_channel: BTreeMap<String, u64>,
    per_hour: BTreeMap<u32, u64>,
    suppressed: BTreeMap<&'static str, u64>,
}

fn volume(decisions: &[Decision], replayed: &[Replayed]) -> Volume {
    let mut v = Volume::default();
    for (d, r) in decisions.iter().zip(replayed) {
        if let (Some(c), Some(at)) = (r.channel, r.send_after) {
            *v.per_channel
                .entry(d.user.opportunities[0].channels[c].clone())
                .or_default() += 1;
            *v.per_hour.entry(at.hour()).or_default() += 1;
        }
        for reason in &r.suppressed {
            *v.suppressed.entry(reason).or_default() += 1;
        }
    }
    v
}

pub async fn simulate(url: Option<&str>, args: SimulateArgs) -> Result<ExitCode> {
    let bootstrap = args.log.bootstrap()?;
    let current = load_bundle(&args.against)?;
    let new = load_bundle(&args.new)?;
    let db = Database::open_existing(url, "tern policy simulate").await?;
    let until = args.log.until.unwrap_or_else(Utc::now);
    let from = until - TimeDelta::days(i64::from(args.log.days));
    let result = async {
        let decisions = load_decisions(&db.store, from, until, &args.log.labels).await?;
        if decisions.is_empty() {
            bail!("no decisions were logged between {from} and {until}: nothing to replay");
        }
        let generators =
            crate::replay::replay_generators(&db.store, &current, &new, from, until).await?;
        let scoring = Scoring::active(&db.store).await?;
        let (scorer, dm) = (scoring.scorer(), scoring.direct_method());
        let (a, b) = tokio::task::block_in_place(|| {
            Ok::<_, anyhow::Error>((
                replay(&current, &decisions, &scorer, &dm)?,
                replay(&new, &decisions, &scorer, &dm)?,
            ))
        })?;
        let (markdown, json) = simulation_markdown(
            (&args.against, &current),
            (&args.new, &new),
            &decisions,
            (&a, &b),
            &generators,
            &scoring.name(),
            (from, until),
            bootstrap,
        )?;
        match args.format {
            SimulateFormat::Markdown => out(&markdown),
            SimulateFormat::Json => out(&format!("{}\n", serde_json::to_string_pretty(&json)?)),
        }
        Ok(())
    }
    .await;
    db.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The pull-request comment: what changes between two bundles on the same logged decisions,
/// and the same figures as JSON.
#[allow(clippy::too_many_arguments)]
pub fn simulation_markdown(
    current: (&Path, &Bundle),
    new: (&Path, &Bundle),
    decisions: &[Decision],
    replayed: (&[Replayed], &[Replayed]),
    generators: &crate::replay::GeneratorReplay,
    dm: &str,
    (from, until): (DateTime<Utc>, DateTime<Utc>),
    bootstrap: Bootstrap,
) -> Result<(String, serde_json::Value)> {
    let mut doc = json!({
        "current": { "path": current.0.display().to_string(), "version": current.1.version },
        "new": { "path": new.0.display().to_string(), "version": new.1.version },
        "from": from,
        "until": until,
        "decisions": decisions.len(),
        "direct_method": dm,
        "level": bootstrap.level,
        "generators": generators,
    });
    let (a, b) = replayed;
    let (va, vb) = (volume(decisions, a), volume(decisions, b));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### tern policy simulate: `{}` ({}) → `{}` ({})\n",
        current.0.display(),
        current.1.short_version(),
        new.0.display(),
        new.1.short_version()
    );
    let _ = writeln!(
        out,
        "Both bundles replayed on the {} decisions logged from {} to {} (exploration off). \
         Values are per decision, doubly robust with {} as the direct method, with {:.0}% \
         paired bootstrap intervals.\n",
        decisions.len(),
        from.format("%Y-%m-%d %H:%M UTC"),
        until.format("%Y-%m-%d %H:%M UTC"),
        dm,
        100.0 * bootstrap.level
    );

    let mut changed_users = BTreeSet::new();
    let mut users = BTreeSet::new();
    let mut changed_decisions = 0usize;
    for ((d, x), y) in decisions.iter().zip(a).zip(b) {
        users.insert(d.user.user_id.as_str());
        if x.channel != y.channel {
            changed_decisions += 1;
            changed_users.insert(d.user.user_id.as_str());
        }
    }
    let _ = writeln!(
        out,
        "**Users affected:** {} of {} ({:.1}%); {} of {} decisions change.\n",
        changed_users.len(),
        users.len(),
        pct(changed_users.len() as f64, users.len() as f64),
        changed_decisions,
        decisions.len()
    );
    doc["users"] = json!(users.len());
    doc["users_affected"] = json!(changed_users.len());
    doc["decisions_changed"] = json!(changed_decisions);
    doc["per_channel"] = json!({ "current": va.per_channel, "new": vb.per_channel });
    doc["per_hour_utc"] = json!({ "current": va.per_hour, "new": vb.per_hour });
    doc["suppressions"] = json!({ "current": va.suppressed, "new": vb.suppressed });

    generators_markdown(&mut out, generators);

    let _ = writeln!(out, "#### Volume per channel\n");
    let _ = writeln!(
        out,
        "| channel | current | new | change |\n| --- | ---: | ---: | ---: |"
    );
    let channels: BTreeSet<&String> = va.per_channel.keys().chain(vb.per_channel.keys()).collect();
    for c in channels {
        let (x, y) = (
            va.per_channel.get(c).copied().unwrap_or(0),
            vb.per_channel.get(c).copied().unwrap_or(0),
        );
        let _ = writeln!(out, "| {c} | {x} | {y} | {} |", change(x, y));
    }
    let (tx, ty): (u64, u64) = (va.per_channel.values().sum(), vb.per_channel.values().sum());
    let _ = writeln!(
        out,
        "| **all** | **{tx}** | **{ty}** | **{}** |\n",
        change(tx, ty)
    );

    let _ = writeln!(
        out,
        "#### Volume per hour (UTC, when the send window opens)\n"
    );
    let _ = writeln!(
        out,
        "| hour | current | new | change |\n| --- | ---: | ---: | ---: |"
    );
    for h in 0..24u32 {
        let (x, y) = (
            va.per_hour.get(&h).copied().unwrap_or(0),
            vb.per_hour.get(&h).copied().unwrap_or(0),
        );
        if x + y > 0 {
            let _ = writeln!(out, "| {h:02}:00 | {x} | {y} | {} |", change(x, y));
        }
    }

    let _ = writeln!(out, "\n#### Suppressions by reason\n");
    let _ = writeln!(
        out,
        "| reason | current | new | change |\n| --- | ---: | ---: | ---: |"
    );
    let reasons: BTreeSet<&&str> = va.suppressed.keys().chain(vb.suppressed.keys()).collect();
    for r in reasons {
        let (x, y) = (
            va.suppressed.get(*r).copied().unwrap_or(0),
            vb.suppressed.get(*r).copied().unwrap_or(0),
        );
        let _ = writeln!(out, "| {r} | {x} | {y} | {} |", change(x, y));
    }

    let _ = writeln!(out, "\n#### Estimated value per decision\n");
    let _ = writeln!(
        out,
        "| objective | decisions | current | new | change |\n| --- | ---: | ---: | ---: | ---: |"
    );
    let mut warnings = Vec::new();
    let mut values = Vec::new();
    for (k, name) in OBJECTIVES.iter().enumerate() {
        let (ra, rb, users) = (
            rows(decisions, a, k),
            rows(decisions, b, k),
            units(decisions, k),
        );
        let (ea, eb, diff) = match (
            tern_ope::evaluate_by_unit(&ra, &users, bootstrap),
            tern_ope::evaluate_by_unit(&rb, &users, bootstrap),
            tern_ope::compare_by_unit(&ra, &rb, &users, bootstrap),
        ) {
            (Ok(ea), Ok(eb), Ok(diff)) => (ea, eb, diff),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let _ = writeln!(out, "| {name} | 0 | – | – | {e} |");
                values.push(json!({ "objective": name, "decisions": 0, "error": e.to_string() }));
                continue;
            }
        };
        let estimate = |e: &Estimate| json!({ "value": e.value, "low": e.low, "high": e.high });
        values.push(json!({
            "objective": name,
            "decisions": ea.rows,
            "current": estimate(&ea.doubly_robust),
            "new": estimate(&eb.doubly_robust),
            "change": { "value": diff.value, "low": diff.low, "high": diff.high },
        }));
        for (which, e) in [("current", &ea), ("new", &eb)] {
            warnings.extend(
                e.warnings()
                    .into_iter()
                    .map(|w| format!("{name}, {which}: {w}")),
            );
        }
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {:+.4} [{:+.4}, {:+.4}] |",
            ea.rows,
            interval(&ea.doubly_robust),
            interval(&eb.doubly_robust),
            diff.value,
            diff.low,
            diff.high
        );
    }
    let _ = writeln!(
        out,
        "\nReachability loss is a cost: a positive change there is worse. Not sending earns 0 on \
         every objective."
    );
    if !warnings.is_empty() {
        let _ = writeln!(out, "\n> **Warning**");
        for w in &warnings {
            let _ = writeln!(out, "> - {w}");
        }
    }
    doc["values"] = json!(values);
    doc["warnings"] = json!(warnings);
    Ok((out, doc))
}

/// The generators a change adds, removes or edits, replayed under both bundles, and what the
/// replay could not cover.
fn generators_markdown(out: &mut String, g: &crate::replay::GeneratorReplay) {
    if g.rows.is_empty() {
        let _ = writeln!(
            out,
            "#### Generators\n\nNo generator changes: both bundles create the same opportunities.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "#### Generators (replayed on {} of the period's events and on their scheduled runs)\n",
        g.events_replayed
    );
    let _ = writeln!(
        out,
        "| generator | change | opportunities: current | new | errors: current | new | first error (new) |\n| --- | --- | ---: | ---: | ---: | ---: | --- |"
    );
    let cell = |c: &Option<crate::replay::Created>, f: fn(&crate::replay::Created) -> u64| {
        c.as_ref().map_or("–".to_string(), |c| f(c).to_string())
    };
    for r in &g.rows {
        let first = r
            .new
            .as_ref()
            .and_then(|c| c.first_error.as_deref())
            .unwrap_or("")
            .replace('|', "\\|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.generator,
            r.change,
            cell(&r.current, |c| c.opportunities),
            cell(&r.new, |c| c.opportunities),
            cell(&r.current, |c| c.errors),
            cell(&r.new, |c| c.errors),
            first
        );
    }
    let _ = writeln!(
        out,
        "\nThe opportunities above are counted, not planned: the volume and value below cover \
         the logged decisions only."
    );
    for n in &g.not_replayed {
        let _ = writeln!(out, "\n> **Not replayed:** {n}");
    }
    let _ = writeln!(out);
}

fn pct(x: f64, of: f64) -> f64 {
    if of == 0.0 {
        0.0
    } else {
        100.0 * x / of
    }
}

fn change(x: u64, y: u64) -> String {
    let d = y as i64 - x as i64;
    if x == 0 {
        format!("{d:+}")
    } else {
        format!("{d:+} ({:+.1}%)", pct(d as f64, x as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(channels: &[&str], logged: Option<(&str, f64)>, reward: f64) -> Decision {
        let at = Utc::now();
        Decision {
            user: UserInput {
                user_id: "u".into(),
                timezone: "UTC".into(),
                arm: None,
                send_time_profile: vec![],
                opted_out_channels: vec![],
                unreachable_channels: vec![],
                opted_out_categories: vec![],
                history: vec![],
                opportunities: vec![OpportunityInput {
                    id: 1,
                    category: "content".into(),
                    priority: "normal".into(),
                    channels: channels.iter().map(|c| c.to_string()).collect(),
                    created_at: at,
                    expires_at: at + TimeDelta::hours(6),
                    template: "t".into(),
                    scores: vec![],
                    signals: BTreeMap::new(),
                }],
                activity: Default::default(),
            },
            decided_at: at,
            logged: logged.map(|(channel, propensity)| Sent {
                channel: channel.into(),
                propensity,
            }),
            rewards: [Some(reward), Some(reward), None, Some(0.0)],
        }
    }

    fn replayed(channel: Option<usize>, engagement: &[f64]) -> Replayed {
        Replayed {
            channel,
            send_after: None,
            suppressed: vec![],
            predicted: engagement
                .iter()
                .map(|e| Scores {
                    engagement: *e,
                    ..Scores::default()
                })
                .collect(),
        }
    }

    /// Four decisions: the candidate repeats a randomised send, switches a randomised one to
    /// another channel, switches a deterministic one, and sends where nothing was sent.
    #[test]
    fn rows_carry_the_candidates_probability_the_direct_method_and_the_support() {
        let decisions = vec![
            decision(&["push", "email"], Some(("push", 0.8)), 1.0),
            decision(&["push", "email"], Some(("push", 0.1)), 0.0),
            decision(&["push", "email"], Some(("email", 1.0)), 1.0),
            decision(&["push"], None, 0.0),
        ];
        let replays = vec![
            replayed(Some(0), &[0.6, 0.3]),
            replayed(Some(1), &[0.2, 0.4]),
            replayed(Some(0), &[0.5, 0.7]),
            replayed(Some(0), &[0.9]),
        ];
        let rows = rows(&decisions, &replays, 1);
        let got: Vec<(f64, f64, f64, f64, f64, f64)> = rows
            .iter()
            .map(|l| {
                (
                    l.propensity,
                    l.target,
                    l.reward,
                    l.predicted_logged,
                    l.predicted_target,
                    l.unsupported,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0.8, 1.0, 1.0, 0.6, 0.6, 0.0),
                // Another channel than a randomised decision's: supported, weight 0.
                (0.1, 0.0, 0.0, 0.2, 0.4, 0.0),
                // Another channel than a deterministic decision's: no support.
                (1.0, 0.0, 1.0, 0.7, 0.5, 1.0),
                // A send where nothing was sent: no support; the logged "nothing" predicts 0.
                (1.0, 0.0, 0.0, 0.0, 0.9, 1.0),
            ]
        );
        // IPS by hand: (1/0.8·1 + 0 + 0 + 0) / 4.
        let e = tern_ope::evaluate(&rows, Bootstrap::default()).unwrap();
        assert!((e.ips.value - 1.25 / 4.0).abs() < 1e-12);
        assert!((e.unsupported - 0.5).abs() < 1e-12);
        assert!(!e.warnings().is_empty());
        // Retention is unobserved on every decision here: no rows, no estimate.
        assert!(super::rows(&decisions, &replays, 2).is_empty());
    }

    #[test]
    fn the_example_bundle_replays_each_decision_once_and_never_sends_to_holdouts_by_mistake() {
        let bundle = crate::demo::example_bundle(None).unwrap();
        let decisions: Vec<Decision> = (0..50)
            .map(|i| {
                let mut d = decision(&["push", "email", "in_app"], None, 0.0);
                d.user.user_id = format!("user-{i}");
                d.user.opportunities[0]
                    .signals
                    .insert("relevance".into(), f64::from(i) / 50.0);
                d
            })
            .collect();
        let prior = |_| Box::new(Prior) as Box<dyn Predictor>;
        let replays = replay(&bundle, &decisions, &prior, &prior).unwrap();
        assert_eq!(replays.len(), decisions.len());
        // The prior scores rise with relevance, so the candidate sends the relevant half.
        let sends: Vec<bool> = replays.iter().map(|r| r.channel.is_some()).collect();
        assert!(!sends[0] && sends[49], "{sends:?}");
        assert!(replays.iter().all(|r| r.predicted.len() == 3));
        assert!(replays
            .iter()
            .filter(|r| r.channel.is_none())
            .all(|r| r.suppressed.contains(&"below_min_value")));
    }
}
