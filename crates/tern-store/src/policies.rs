//! The record of policy bundles that were activated.

use chrono::{DateTime, Utc};

use crate::{Result, Store};

/// One activated policy bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVersion {
    pub version: String,
    pub bundle: serde_json::Value,
    pub first_activated_at: DateTime<Utc>,
    pub last_activated_at: DateTime<Utc>,
}

impl Store {
    /// Records that the bundle with this content hash became active at `now`. Activating a version
    /// seen before (a rollback, or a replica starting) only moves its `last_activated_at`, so
    /// every plan's `policy_version` can always be looked up with the exact content it ran.
    pub async fn record_policy_activation(
        &self,
        version: &str,
        bundle: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO policy_versions (version, bundle, first_activated_at, last_activated_at) \
             VALUES ($1, $2, $3, $3) \
             ON CONFLICT (version) DO UPDATE SET \
               last_activated_at = greatest(policy_versions.last_activated_at, excluded.last_activated_at)",
        )
        .bind(version)
        .bind(bundle)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A recorded policy version, if it was ever activated.
    pub async fn policy_version(&self, version: &str) -> Result<Option<PolicyVersion>> {
        Ok(
            sqlx::query_as::<_, (String, serde_json::Value, DateTime<Utc>, DateTime<Utc>)>(
                "SELECT version, bundle, first_activated_at, last_activated_at \
             FROM policy_versions WHERE version = $1",
            )
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .map(
                |(version, bundle, first_activated_at, last_activated_at)| PolicyVersion {
                    version,
                    bundle,
                    first_activated_at,
                    last_activated_at,
                },
            ),
        )
    }
}
