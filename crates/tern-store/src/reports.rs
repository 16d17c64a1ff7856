//! Read-only summaries of what tern did: where every opportunity ended, what the plans held
//! back and why, and how well the model's predictions matched what happened. `tern demo`
//! reports them; an operator can read the same numbers.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;

use crate::{Result, Store};

/// One bin of a calibration curve: messages whose prediction fell in the bin, the mean
/// prediction and the share that happened.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationBin {
    pub predicted: f64,
    pub observed: f64,
    pub count: u64,
}

impl Store {
    /// Opportunities by state (`open`, `sent`, `expired`, `cancelled`).
    pub async fn opportunity_states(&self) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query("SELECT state, count(*) FROM opportunities GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as u64)))
            .collect()
    }

    /// Candidates the published plans did not choose, by reason, summed over every plan.
    pub async fn suppressed_totals(&self) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT s.key, sum(s.value::bigint)::bigint FROM plans p, \
                    jsonb_each_text(COALESCE(p.stats->'suppressed', '{}')) s \
             WHERE p.state = 'published' GROUP BY s.key ORDER BY s.key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as u64)))
            .collect()
    }

    /// Outcomes stored, by kind.
    pub async fn outcome_counts(&self) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query("SELECT kind, count(*) FROM outcomes GROUP BY kind")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as u64)))
            .collect()
    }

    /// The calibration of the engagement prediction on messages sent with a model, before
    /// `until - window` (so that each has had `window` to be opened): `bins` equal-width bins
    /// of the predicted probability; empty bins are left out.
    pub async fn engagement_calibration(
        &self,
        bins: i32,
        window: TimeDelta,
        until: DateTime<Utc>,
    ) -> Result<Vec<CalibrationBin>> {
        let rows = sqlx::query(
            "SELECT avg(p)::float8, avg(engaged::int)::float8, count(*) FROM ( \
               SELECT (m.scores->>'engagement')::float8 AS p, \
                      EXISTS (SELECT 1 FROM outcomes o \
                              WHERE o.user_id = m.user_id AND o.message_id = m.message_id \
                                AND o.kind IN ('opened', 'clicked') \
                                AND o.occurred_at < m.sent_at + $2) AS engaged \
               FROM messages m \
               WHERE m.model_version IS NOT NULL AND m.sent_at < $3 - $2 \
                 AND m.scores ? 'engagement') x \
             GROUP BY least(width_bucket(p, 0, 1, $1), $1) ORDER BY 1",
        )
        .bind(bins)
        .bind(window)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CalibrationBin {
                    predicted: r.try_get(0)?,
                    observed: r.try_get(1)?,
                    count: r.try_get::<i64, _>(2)? as u64,
                })
            })
            .collect()
    }
}
