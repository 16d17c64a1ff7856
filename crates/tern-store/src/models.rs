//! The model registry: trained models with their artifacts and metrics, and which one serves.
//!
//! At most one model is `active` (a partial unique index enforces it). Promotion retires the
//! active model and activates another in one transaction; rollback re-activates the model that
//! was active before the current one. The registry does not judge models: whether a model is
//! good enough to promote is the model crate's rule, applied by the caller.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, StoreError};

/// A model to register.
#[derive(Debug, Clone, PartialEq)]
pub struct NewModel {
    /// Unique; e.g. a timestamp plus a digest of the weights.
    pub version: String,
    /// The feature spec's version: a model refuses features of another version.
    pub feature_version: String,
    /// The serialized artifact (weights, feature spec, metrics).
    pub artifact: Vec<u8>,
    /// Evaluation on the validation period, as the model crate reports it.
    pub metrics: serde_json::Value,
    /// The period the training data came from.
    pub train_from: Option<DateTime<Utc>>,
    pub train_until: Option<DateTime<Utc>>,
}

/// A registered model, without its artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub version: String,
    pub feature_version: String,
    pub created_at: DateTime<Utc>,
    pub train_from: Option<DateTime<Utc>>,
    pub train_until: Option<DateTime<Utc>>,
    pub metrics: serde_json::Value,
    /// `candidate`, `active` or `retired`.
    pub status: String,
    pub promoted_at: Option<DateTime<Utc>>,
}

const INFO_COLUMNS: &str = "version, feature_version, created_at, train_from, train_until, \
     metrics, status, promoted_at";

fn info(row: &sqlx::postgres::PgRow) -> Result<ModelInfo> {
    Ok(ModelInfo {
        version: row.try_get("version")?,
        feature_version: row.try_get("feature_version")?,
        created_at: row.try_get("created_at")?,
        train_from: row.try_get("train_from")?,
        train_until: row.try_get("train_until")?,
        metrics: row.try_get("metrics")?,
        status: row.try_get("status")?,
        promoted_at: row.try_get("promoted_at")?,
    })
}

impl Store {
    /// Registers a trained model as a candidate.
    pub async fn register_model(&self, model: &NewModel, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO models (version, feature_version, created_at, train_from, train_until, \
               metrics, weights, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'candidate')",
        )
        .bind(&model.version)
        .bind(&model.feature_version)
        .bind(now)
        .bind(model.train_from)
        .bind(model.train_until)
        .bind(&model.metrics)
        .bind(&model.artifact)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                StoreError::Invalid(tern_core::InvalidInput::new(format!(
                    "a model with version {:?} is already registered",
                    model.version
                )))
            }
            _ => StoreError::from(e),
        })?;
        Ok(())
    }

    /// Every registered model, newest first.
    pub async fn list_models(&self) -> Result<Vec<ModelInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {INFO_COLUMNS} FROM models ORDER BY created_at DESC, version DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(info).collect()
    }

    /// One model's registry entry.
    pub async fn model(&self, version: &str) -> Result<Option<ModelInfo>> {
        let row = sqlx::query(&format!(
            "SELECT {INFO_COLUMNS} FROM models WHERE version = $1"
        ))
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(info).transpose()
    }

    /// One model's artifact.
    pub async fn model_artifact(&self, version: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT weights FROM models WHERE version = $1")
                .bind(version)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The active model's version, without its artifact: what a caller that caches the loaded
    /// model checks before each plan.
    pub async fn active_model_version(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT version FROM models WHERE status = 'active'")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The active model's version and artifact, if any model is active.
    pub async fn active_model(&self) -> Result<Option<(String, Vec<u8>)>> {
        Ok(
            sqlx::query_as("SELECT version, weights FROM models WHERE status = 'active'")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Makes `version` the active model and retires the one it replaces, in one transaction.
    pub async fn promote_model(&self, version: &str, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Serialises concurrent promotions: the second waits, then sees the first's result.
        sqlx::query("LOCK TABLE models IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT status FROM models WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        match exists.as_deref() {
            None => return Err(StoreError::NotFound(format!("model {version:?}"))),
            Some("active") => return Ok(()),
            Some(_) => {}
        }
        activate(&mut tx, version, "promote", now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The model a rollback would re-activate, and the active one it would replace: the
    /// activation history is a stack (a promotion pushes, a rollback pops), and this is the
    /// entry below the top.
    pub async fn rollback_target(&self) -> Result<Option<(String, String)>> {
        let history: Vec<(String, String)> =
            sqlx::query_as("SELECT version, kind FROM model_activations ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let stack = activation_stack(&history);
        Ok(match stack.as_slice() {
            [.., below, top] => Some((below.clone(), top.clone())),
            _ => None,
        })
    }

    /// Re-activates the model that was active before the current one and returns its version.
    /// Rolling back again steps back further through the history, never forth: after
    /// promoting A, B, C, two rollbacks leave A active.
    pub async fn rollback_model(&self, now: DateTime<Utc>) -> Result<String> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE models IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let history: Vec<(String, String)> =
            sqlx::query_as("SELECT version, kind FROM model_activations ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        let stack = activation_stack(&history);
        let Some(previous) = stack.len().checked_sub(2).map(|i| stack[i].clone()) else {
            return Err(StoreError::NotFound(
                "a previously active model to roll back to".into(),
            ));
        };
        activate(&mut tx, &previous, "rollback", now).await?;
        tx.commit().await?;
        Ok(previous)
    }
}

/// Makes `version` the one active model and records why.
async fn activate(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    version: &str,
    kind: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("UPDATE models SET status = 'retired' WHERE status = 'active'")
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE models SET status = 'active', promoted_at = $2 WHERE version = $1")
        .bind(version)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO model_activations (version, kind, activated_at) VALUES ($1, $2, $3)")
        .bind(version)
        .bind(kind)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Replays the activation history: a promotion pushes its model, a rollback pops the top (the
/// model it re-activated is the new top). The last entry is the active model.
fn activation_stack(history: &[(String, String)]) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    for (version, kind) in history {
        if kind == "rollback" {
            stack.pop();
            // The history cannot disagree with itself, but a hand-edited table could: keep the
            // recorded model on top either way.
            if stack.last() != Some(version) {
                stack.push(version.clone());
            }
        } else {
            stack.push(version.clone());
        }
    }
    stack
}

#[cfg(test)]
mod tests {
    use super::activation_stack;

    #[test]
    fn rollbacks_step_back_through_the_promotions() {
        let h = |rows: &[(&str, &str)]| {
            activation_stack(
                &rows
                    .iter()
                    .map(|(v, k)| (v.to_string(), k.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        let promoted = [("a", "promote"), ("b", "promote"), ("c", "promote")];
        assert_eq!(h(&promoted), ["a", "b", "c"]);
        let once = [promoted.as_slice(), &[("b", "rollback")]].concat();
        assert_eq!(h(&once), ["a", "b"]);
        let twice = [once.as_slice(), &[("a", "rollback")]].concat();
        assert_eq!(h(&twice), ["a"]);
        let again = [twice.as_slice(), &[("d", "promote")]].concat();
        assert_eq!(h(&again), ["a", "d"]);
    }
}
