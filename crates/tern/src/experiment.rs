//! `tern experiment report NAME`: the command line of [`tern_analysis::experiment`], which
//! computes and renders the report (docs/experiments.md defines every metric and JSON field).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use tern_analysis::experiment::{
    compute, control_arm, recorded_arms, render_json, render_markdown, render_text, srm_warning,
    ArmSpec, Metric, Options,
};
use tern_store::ActivityWindows;

use crate::db::Database;

#[derive(Debug, clap::Subcommand)]
pub enum ExperimentCommand {
    /// Compare an experiment's arms: users, messages, outcomes, retention; differences against
    /// control with raw and CUPED intervals; the sample-ratio check; a verdict per arm.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The experiment's name (its `metadata.name` in the policy bundle).
    #[arg(value_name = "NAME")]
    name: String,
    /// The policy bundle directory, which holds the experiment's arms and shares.
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// The end of the observation period (RFC 3339); now when absent. Users first planned at or
    /// after it are not counted.
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// The confidence level of every interval.
    #[arg(long, default_value_t = 0.95)]
    level: f64,
    /// The arm the others are compared with; `control` when the experiment has one, else its
    /// first non-holdout arm.
    #[arg(long, value_name = "ARM")]
    control: Option<String>,
    /// The metric a verdict is decided on.
    #[arg(long, default_value = "retained", value_parser = metric())]
    primary: Metric,
    /// A metric that must not get worse than control (repeatable); `unsubscribed` and
    /// `complained` when none is given.
    #[arg(long = "guardrail", value_name = "METRIC", value_parser = metric())]
    guardrails: Vec<Metric>,
    /// A user is retained when active on any of this many days before --until.
    #[arg(long, default_value_t = 7)]
    retention_days: u32,
    /// The CUPED covariate counts active days in this many days before a user's first plan.
    #[arg(long, default_value_t = 14)]
    pre_days: u32,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables for a terminal.
    Text,
    /// One JSON object (fields in docs/experiments.md).
    Json,
    /// Tables for a pull-request comment.
    Markdown,
}

/// The metric names as the command line's possible values.
fn metric() -> impl clap::builder::TypedValueParser<Value = Metric> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Metric::NAMES)
        .map(|name| Metric::from_name(&name).expect("one of Metric::NAMES"))
}

pub async fn run(database_url: Option<&str>, cmd: ExperimentCommand) -> Result<ExitCode> {
    match cmd {
        ExperimentCommand::Report(args) => report(database_url, args).await,
    }
}

async fn report(database_url: Option<&str>, args: ReportArgs) -> Result<ExitCode> {
    // The bundle first: a wrong name or directory needs no database to be reported.
    let bundle = crate::plan::load_bundle(&args.policies)?;
    let experiment = bundle.experiment(&args.name).ok_or_else(|| {
        let known: Vec<&str> = bundle
            .experiments
            .iter()
            .map(|e| e.metadata.name.as_str())
            .collect();
        if known.is_empty() {
            anyhow!(
                "no experiment {:?} in {}: the bundle declares no experiments",
                args.name,
                args.policies.display()
            )
        } else {
            anyhow!(
                "no experiment {:?} in {}; known experiments: {}",
                args.name,
                args.policies.display(),
                known.join(", ")
            )
        }
    })?;
    let arms: Vec<ArmSpec> = experiment
        .arms
        .iter()
        .map(|a| ArmSpec {
            name: a.name.clone(),
            share: a.share,
            holdout: a.holdout,
        })
        .collect();
    let options = Options {
        until: args.until.unwrap_or_else(Utc::now),
        level: args.level,
        control: args.control,
        primary: args.primary,
        guardrails: args.guardrails,
        retention_days: args.retention_days,
        pre_days: args.pre_days,
    };
    options.check()?;
    // Before the database, like every other mistake in the arguments.
    control_arm(&args.name, &arms, options.control.as_deref())?;

    let db = Database::open_existing(database_url, "tern experiment report").await?;
    // The arms and shares of the bundle that assigned the users, not of the working copy: a
    // pull request's bundle with new shares would otherwise read as a sample-ratio mismatch.
    let (arms, source_note) =
        recorded_arms(&db.store, &args.name, options.until, arms, &args.policies).await?;
    let users = db
        .store
        .experiment_users(
            &args.name,
            options.until,
            ActivityWindows {
                retention_days: options.retention_days,
                pre_days: options.pre_days,
            },
        )
        .await;
    db.close().await;
    let mut report = compute(&args.name, &arms, &users?, &options)?;
    report.notes.extend(source_note);

    if report.sample_ratio.mismatch {
        // On stderr whatever the format, so that a script piping the JSON still sees it.
        eprintln!("warning: {}", srm_warning(&report));
    }
    let out = match args.format {
        Format::Text => render_text(&report),
        Format::Markdown => render_markdown(&report),
        Format::Json => render_json(&report)?,
    };
    crate::output::out(&out);
    Ok(ExitCode::SUCCESS)
}
