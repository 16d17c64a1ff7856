//! `tern model list|show|promote|rollback|export`: which trained model the daemon uses.
//!
//! Promotion applies the model crate's rule ([`tern_model::promotion_refusals`]) to the metrics
//! inside the artifact itself, not to the registry's copy: the artifact is what would serve.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use tern_model::{promotion_refusals, Model};

use crate::db::Database;

#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Every registered model, newest first, with its status and validation summary.
    List {
        /// One JSON object per model, one per line.
        #[arg(long)]
        json: bool,
    },
    /// One model's metrics per head beside the baselines, and its training window.
    Show {
        #[arg(id = "model_version", value_name = "VERSION")]
        version: String,
    },
    /// Make a model the active one (the daemon picks it up without a restart). Refuses a model
    /// that does worse than the base rate on its validation period unless --force.
    Promote {
        #[arg(id = "model_version", value_name = "VERSION")]
        version: String,
        #[arg(long)]
        force: bool,
    },
    /// Re-activate the model that was active before the current one. Each rollback steps one
    /// model further back through the promotions; it says which model becomes active first.
    Rollback {
        /// Only say which model would become active.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a model's artifact to a file (for `tern plan --model`).
    Export {
        #[arg(id = "model_version", value_name = "VERSION")]
        version: String,
        #[arg(long, short)]
        output: PathBuf,
    },
}

pub async fn run(url: Option<&str>, cmd: ModelCommand) -> Result<ExitCode> {
    let db = Database::open_existing(url, "tern model").await?;
    let store = &db.store;
    match cmd {
        ModelCommand::List { json } => {
            let models = store.list_models().await?;
            if json {
                for m in &models {
                    println!(
                        "{}",
                        serde_json::json!({
                            "version": m.version,
                            "status": m.status,
                            "feature_version": m.feature_version,
                            "created_at": m.created_at,
                            "promoted_at": m.promoted_at,
                            "train_from": m.train_from,
                            "train_until": m.train_until,
                            "metrics": m.metrics,
                        })
                    );
                }
            } else if models.is_empty() {
                println!("no models registered; train one with `tern train`");
            } else {
                println!(
                    "{:<32} {:<9} {:<20} {:<25} validation log loss (model / base rate) per head",
                    "version", "status", "features", "trained until"
                );
                for m in &models {
                    println!(
                        "{:<32} {:<9} {:<20} {:<25} {}",
                        m.version,
                        m.status,
                        m.feature_version,
                        m.train_until
                            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
                        summary(&m.metrics)
                    );
                }
            }
        }
        ModelCommand::Show { version } => {
            let model = load(store, &version).await?;
            let info = store
                .model(&version)
                .await?
                .with_context(|| format!("no model {version:?} is registered"))?;
            println!("model {version} ({})", info.status);
            println!("features: {}", model.feature_version());
            if let Some(w) = model.window {
                println!(
                    "trained on {} .. {}, validated on {} .. {}",
                    w.train_from, w.valid_from, w.valid_from, w.valid_until
                );
            }
            if let Some(labels) = info.metrics.get("labels") {
                println!("labels: {labels}");
            }
            print!("{}", crate::train::metrics_table(&model));
            if let Some(v) = &model.value {
                print!("{}", value_table(v));
            }
        }
        ModelCommand::Promote { version, force } => {
            let model = load(store, &version).await?;
            let refusals = match &model.metrics {
                Some(m) => promotion_refusals(m),
                None => vec!["the model carries no validation metrics".to_string()],
            };
            if !refusals.is_empty() {
                if !force {
                    bail!(
                        "model {version} is not promoted: {} (use --force to promote it anyway)",
                        refusals.join("; ")
                    );
                }
                eprintln!(
                    "warning: promoting {version} despite: {}",
                    refusals.join("; ")
                );
            }
            store.promote_model(&version, Utc::now()).await?;
            println!("model {version} is now the active model");
        }
        ModelCommand::Rollback { dry_run } => {
            let Some((target, current)) = store.rollback_target().await? else {
                bail!("no earlier active model to roll back to; see `tern model list`");
            };
            println!("rolling back from model {current} to {target}");
            if dry_run {
                println!("dry run: nothing changed");
            } else {
                let version = store.rollback_model(Utc::now()).await?;
                println!("rolled back: model {version} is now the active model");
            }
        }
        ModelCommand::Export { version, output } => {
            let bytes = artifact(store, &version).await?;
            Model::from_bytes(&bytes)
                .with_context(|| format!("the stored artifact of {version} is not readable"))?;
            std::fs::write(&output, &bytes)
                .with_context(|| format!("cannot write {}", output.display()))?;
            println!("wrote model {version} to {}", output.display());
        }
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn artifact(store: &tern_store::Store, version: &str) -> Result<Vec<u8>> {
    store
        .model_artifact(version)
        .await?
        .with_context(|| format!("no model {version:?} is registered; see `tern model list`"))
}

async fn load(store: &tern_store::Store, version: &str) -> Result<Model> {
    let bytes = artifact(store, version).await?;
    Model::from_bytes(&bytes)
        .with_context(|| format!("the stored artifact of {version} is not readable"))
}

/// `engagement 0.412/0.455, ...` from the registry's metrics JSON (as `tern train` stores it).
fn summary(metrics: &serde_json::Value) -> String {
    let Some(heads) = metrics
        .pointer("/validation/heads")
        .and_then(|h| h.as_array())
    else {
        return "-".into();
    };
    heads
        .iter()
        .filter_map(|h| {
            let name = h.get("head")?.as_str()?;
            // A head with no labels has no loss: show a dash, not a perfect-looking 0.000.
            if h.get("labels").and_then(|l| l.as_u64()) == Some(0) {
                return Some(format!("{name} –"));
            }
            let model = h.pointer("/model/log_loss")?.as_f64()?;
            let base = h.pointer("/base_rate/log_loss")?.as_f64()?;
            Some(format!("{name} {model:.3}/{base:.3}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value function as a table: what it was fitted on, and each state feature's weight (in
/// discounted active days) with its spread across the bootstrap fits.
fn value_table(v: &tern_model::ValueFunction) -> String {
    let mut out = format!(
        "value function: {} user-days of {} users, {:.1}% active, discount {:.4}, kappa {}\n| state feature | weight | spread |\n| --- | --- | --- |\n",
        v.transitions,
        v.users,
        100.0 * v.active_share,
        v.config.gamma,
        v.config.kappa
    );
    for (i, name) in v.feature_names().iter().enumerate() {
        let each: Vec<f64> = v.members.iter().map(|m| m[i]).collect();
        let spread = if each.len() >= 2 {
            let mean = each.iter().sum::<f64>() / each.len() as f64;
            (each.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (each.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        out.push_str(&format!(
            "| {name} | {:+.4} | {spread:.4} |\n",
            v.weights[i]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::summary;

    /// A head without labels has no loss to show: a dash, not a perfect-looking `0.000/0.000`.
    #[test]
    fn a_head_without_labels_shows_a_dash() {
        let metrics = serde_json::json!({ "validation": { "heads": [
            { "head": "engagement", "labels": 812,
              "model": { "log_loss": 0.4121 }, "base_rate": { "log_loss": 0.4553 } },
            { "head": "retention", "labels": 0,
              "model": { "log_loss": 0.0 }, "base_rate": { "log_loss": 0.0 } }
        ] } });
        assert_eq!(summary(&metrics), "engagement 0.412/0.455, retention –");
        assert_eq!(summary(&serde_json::json!({})), "-");
    }
}
