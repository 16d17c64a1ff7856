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
        sqlx::query("UPDATE models SET status = 'retired' WHERE status = 'active'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE models SET status = 'active', promoted_at = $2 WHERE version = $1")
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Re-activates the model that was active before the current one (the most recently promoted
    /// retired model) and returns its version. Like `cd -`, rolling back twice returns to where
    /// it started.
    pub async fn rollback_model(&self, now: DateTime<Utc>) -> Result<String> {
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT version FROM models WHERE status = 'retired' AND promoted_at IS NOT NULL \
               AND promoted_at < coalesce((SELECT promoted_at FROM models WHERE status = 'active'), 'infinity') \
             ORDER BY promoted_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let previous = previous.ok_or_else(|| {
            StoreError::NotFound("a previously active model to roll back to".into())
        })?;
        self.promote_model(&previous, now).await?;
        Ok(previous)
    }
}
