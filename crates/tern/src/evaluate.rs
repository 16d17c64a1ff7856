//! `tern evaluate` and `tern policy simulate`: the command lines and renderings of
//! [`tern_analysis::decisions`] (the logged decisions, a candidate replayed on them) and
//! [`tern_analysis::replay`] (changed generators replayed on the period's events).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::json;
use tern_analysis::decisions::*;
use tern_model::Model;
use tern_ope::{Bootstrap, Estimate, Evaluation};
use tern_planner::Predictor;
use tern_policy::Bundle;
use tern_store::Store;

use crate::db::Database;
use crate::output::out;
use crate::plan::load_bundle;
use crate::train::LabelArgs;
use tern_daemon::predict::{ModelPredictor, Prior};

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

    /// What `bundle` would plan with: the model valued in the bundle's default objective's
    /// mode (`value: incremental` scores each send against not sending it), and for users in an
    /// experiment arm whose objective says otherwise, in that objective's mode.
    fn scorer(&self, bundle: &Bundle) -> Box<PredictorAt<'_>> {
        let mode = bundle
            .default_objective()
            .map(|o| o.value)
            .unwrap_or_default();
        Box::new(move |at, modes| match &self.model {
            Some((_, m)) => {
                Box::new(ModelPredictor::new(m.clone(), at).with_modes(mode, modes.clone()))
                    as Box<dyn Predictor>
            }
            None => Box::new(Prior),
        })
    }

    fn direct_method(&self) -> Box<PredictorAt<'_>> {
        Box::new(move |at, _| match &self.model {
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
        let decisions = load_decisions(&db.store, from, until, &args.log.labels.into()).await?;
        if decisions.is_empty() {
            bail!("no decisions were logged between {from} and {until}: nothing to estimate from");
        }
        let scoring = Scoring::active(&db.store).await?;
        let (scorer, dm) = (scoring.scorer(&bundle), scoring.direct_method());
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
        let decisions = load_decisions(&db.store, from, until, &args.log.labels.into()).await?;
        if decisions.is_empty() {
            bail!("no decisions were logged between {from} and {until}: nothing to replay");
        }
        let generators =
            tern_analysis::replay::replay_generators(&db.store, &current, &new, from, until)
                .await?;
        let scoring = Scoring::active(&db.store).await?;
        let (scorer_a, scorer_b, dm) = (
            scoring.scorer(&current),
            scoring.scorer(&new),
            scoring.direct_method(),
        );
        let (a, b) = tokio::task::block_in_place(|| {
            Ok::<_, anyhow::Error>((
                replay(&current, &decisions, &scorer_a, &dm)?,
                replay(&new, &decisions, &scorer_b, &dm)?,
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
    generators: &tern_analysis::replay::GeneratorReplay,
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
fn generators_markdown(out: &mut String, g: &tern_analysis::replay::GeneratorReplay) {
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
    let cell = |c: &Option<tern_analysis::replay::Created>,
                f: fn(&tern_analysis::replay::Created) -> u64| {
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
