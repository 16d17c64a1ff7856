//! `tern train`: the command line of [`tern_daemon::train`], which learns the outcome model from
//! the history in PostgreSQL, judges it on a later period and registers it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tern_daemon::train::{train_and_register, Labels, TrainSettings};
use tern_model::{promotion_refusals, Model, TrainConfig};

use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// End of the history to learn from (RFC 3339); now when absent. Only what was known at this
    /// instant is used: later outcomes and activity are ignored, unfinished labels are masked.
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// Days of history before --until. Retention labels exist only for sends older than the
    /// retention horizon, so this should be well over it (the default: 90 days against 28).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// The share of the period (its end) held out for validation and early stopping.
    #[arg(long, default_value_t = 0.2)]
    valid_fraction: f64,
    /// Seed of initialisation and shuffling: the same history and seed give the same weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 30)]
    max_epochs: usize,
    /// Rows per optimizer step.
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    /// The most one row may weigh. Rows weigh the inverse of the probability with which the
    /// logged decision took their action (a send withheld at random with probability 0.05
    /// weighs 20), up to this; 1, the default, turns weighting off (docs/model.md says why).
    #[arg(long, default_value_t = tern_daemon::train::MAX_WEIGHT, value_parser = max_weight)]
    max_weight: f64,
    #[command(flatten)]
    labels: LabelArgs,
    /// Make the new model the one the daemon uses, if it beats the base rate on validation.
    #[arg(long)]
    promote: bool,
    /// With --promote: promote even a model that does worse than the base rate.
    #[arg(long, requires = "promote")]
    force: bool,
    /// Also write the model artifact to this file (for `tern plan --model`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Where the temporary spill of feature rows goes (unlinked at once; about 220 bytes a row).
    #[arg(long, env = "TMPDIR", default_value = "/tmp")]
    work_dir: PathBuf,
}

/// `--max-weight`: a finite number of at least 1.
pub(crate) fn max_weight(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if w >= 1.0 && w.is_finite() => Ok(w),
        _ => Err(format!("expected a number of at least 1, got {s:?}")),
    }
}

/// How outcomes become labels (`tern_daemon::train::Labels`, as flags).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LabelArgs {
    /// A message engaged if opened or clicked within this many hours of the send.
    #[arg(long, default_value_t = 48)]
    pub engagement_hours: u32,
    /// A message converted if a conversion followed within this many days.
    #[arg(long, default_value_t = 7)]
    pub conversion_days: u32,
    /// Reachability was lost if an unsubscribe, push-disabled or complaint outcome followed
    /// within this many days.
    #[arg(long, default_value_t = 7)]
    pub reachability_days: u32,
    /// Retention: the user was active during the last week of this many days after the send (the
    /// objective's horizon in the policies).
    #[arg(long, default_value_t = 28, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub retention_days: u32,
}

impl From<LabelArgs> for Labels {
    fn from(a: LabelArgs) -> Labels {
        Labels {
            engagement_hours: a.engagement_hours,
            conversion_days: a.conversion_days,
            reachability_days: a.reachability_days,
            retention_days: a.retention_days,
        }
    }
}

pub async fn run(url: Option<&str>, args: TrainArgs) -> Result<ExitCode> {
    let settings = TrainSettings {
        days: args.days,
        valid_fraction: args.valid_fraction,
        config: TrainConfig {
            seed: args.seed,
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            max_epochs: args.max_epochs,
            ..TrainConfig::default()
        },
        labels: args.labels.into(),
        max_weight: args.max_weight,
        work_dir: args.work_dir.clone(),
        progress: Some(|line| eprintln!("{line}")),
    };
    // Checked before the database is opened: a usage mistake should not wait for a connection.
    if !(args.valid_fraction > 0.0 && args.valid_fraction < 1.0) {
        bail!("--valid-fraction must be between 0 and 1 (exclusive)");
    }
    let until = args.until.unwrap_or_else(Utc::now);
    let db = Database::open_existing(url, "tern train").await?;
    let trained = train_and_register(&db.store, &settings, until, Utc::now()).await?;
    let version = &trained.version;
    print!("{}", metrics_table(&trained.model));
    println!("registered model {version} (candidate)");
    if let Some(path) = &args.output {
        std::fs::write(path, &trained.bytes)
            .with_context(|| format!("cannot write the model to {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if args.promote {
        let refusals = promotion_refusals(&trained.metrics);
        if !refusals.is_empty() && !args.force {
            bail!(
                "model {version} is registered but not promoted: {} (use --force to promote it anyway)",
                refusals.join("; ")
            );
        }
        db.store.promote_model(version, Utc::now()).await?;
        println!("promoted model {version}: it is now the active model");
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The validation metrics per head beside both baselines, as a text table.
pub fn metrics_table(model: &Model) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let Some(m) = &model.metrics else {
        return "no validation metrics\n".into();
    };
    let _ = writeln!(
        out,
        "validation ({} rows)     labels  positive   log loss: model   base rate    logistic   AUC: model  logistic   calibration error",
        m.rows
    );
    for h in m.heads.iter().filter(|h| h.labels == 0) {
        let _ = writeln!(
            out,
            "  {:<22} not evaluated: no label of the validation period is observable yet (its window is longer than the time since the period began)",
            h.head.as_str()
        );
    }
    for h in m.heads.iter().filter(|h| h.labels > 0) {
        let auc = |a: Option<f64>| a.map_or("-".to_string(), |a| format!("{a:.3}"));
        let _ = writeln!(
            out,
            "  {:<22} {:>7} {:>9.4} {:>17.5} {:>11.5} {:>11.5} {:>12} {:>9} {:>19.4}",
            h.head.as_str(),
            h.labels,
            if h.labels == 0 {
                0.0
            } else {
                h.positives as f64 / h.labels as f64
            },
            h.model.log_loss,
            h.base_rate.log_loss,
            h.logistic.log_loss,
            auc(h.model.auc),
            auc(h.logistic.auc),
            h.model.ece
        );
    }
    let _ = writeln!(out, "{}", tern_model::Promotion::of(m).summary());
    out
}
