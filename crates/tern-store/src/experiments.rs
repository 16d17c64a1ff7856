//! What an experiment report reads: every user an experiment assigned, with what they were sent,
//! what happened, what a holdout would have been sent, and the days they were active — all
//! counted over the user's own observation period, in one statement.
//!
//! Each user is observed from `first_planned_at` (the first plan that put them in the experiment)
//! to `until`. A user's messages and outcomes are counted whatever experiment the message itself
//! was tagged with: a user can be in two experiments in different layers, and each experiment's
//! arms must be compared on everything their users received. Days are UTC dates, as
//! `user_activity` stores them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use tern_core::InvalidInput;

use crate::{Result, Store};

/// The activity windows of a report, in whole days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityWindows {
    /// A user is retained when active on any of the `retention_days` days before `until`'s date.
    pub retention_days: u32,
    /// The CUPED covariate counts active days among the `pre_days` days before the user's
    /// first planned day: activity the experiment cannot have caused.
    pub pre_days: u32,
}

/// One user an experiment assigned, observed over `[first_planned_at, until)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentUser {
    pub user_id: String,
    /// The arm the user is in now (the latest plan's).
    pub arm: String,
    /// How often a later plan moved the user to another arm; above 0, the user saw two arms.
    pub arm_changes: u32,
    pub first_planned_at: DateTime<Utc>,
    /// Messages sent in the window, per channel (channels without messages are absent).
    pub messages: BTreeMap<String, u64>,
    /// Outcomes of those messages that occurred before `until`, per kind (absent kinds: none).
    pub outcomes: BTreeMap<String, u64>,
    /// Whether any of those outcomes lost a channel (unsubscribed, push disabled, complained).
    pub lost_reach: bool,
    /// Counterfactual messages of a holdout user whose send window opened in the window (items
    /// `withheld`), per channel: what the user would have been sent outside the holdout.
    pub withheld: BTreeMap<String, u64>,
    /// Active days from the first planned day up to (not including) `until`'s date.
    pub active_days: u32,
    /// Active on any of the [`ActivityWindows::retention_days`] days before `until`'s date.
    pub retained: bool,
    /// Active days in the [`ActivityWindows::pre_days`] days before the first planned day.
    pub pre_active_days: u32,
}

impl Store {
    /// The policy versions that assigned users to `experiment` before `until`, with how many
    /// users each wrote last, the most recently used first: the bundles that actually ran.
    pub async fn experiment_policy_versions(
        &self,
        experiment: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT policy_version, count(*) FROM experiment_assignments \
             WHERE experiment = $1 AND first_planned_at < $2 \
             GROUP BY policy_version ORDER BY max(last_planned_at) DESC, policy_version",
        )
        .bind(experiment)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every user assigned to `experiment` before `until`, with their window's counts, ordered
    /// by user id.
    ///
    /// One statement: each assigned user's messages, outcomes, withheld items and activity are
    /// read through that user's own index ranges (`LATERAL`), so the cost grows with the
    /// experiment's users and their history, not with the whole tables.
    pub async fn experiment_users(
        &self,
        experiment: &str,
        until: DateTime<Utc>,
        windows: ActivityWindows,
    ) -> Result<Vec<ExperimentUser>> {
        if windows.retention_days == 0 {
            return Err(InvalidInput::new("the retention window must be at least one day").into());
        }
        let retention = i32::try_from(windows.retention_days)
            .map_err(|_| InvalidInput::new("the retention window is too long"))?;
        let pre = i32::try_from(windows.pre_days)
            .map_err(|_| InvalidInput::new("the pre-period is too long"))?;
        let rows = sqlx::query(
            "WITH a AS ( \
               SELECT user_id, arm, arm_changes, first_planned_at, \
                      (first_planned_at AT TIME ZONE 'UTC')::date AS first_day, \
                      ($2::timestamptz AT TIME ZONE 'UTC')::date AS until_day \
               FROM experiment_assignments \
               WHERE experiment = $1 AND first_planned_at < $2) \
             SELECT a.user_id, a.arm, a.arm_changes, a.first_planned_at, \
                    COALESCE(m.channels, '{}'), COALESCE(m.counts, '{}'), \
                    COALESCE(o.kinds, '{}'), COALESCE(o.counts, '{}'), \
                    COALESCE(o.lost_reach, false), \
                    COALESCE(w.channels, '{}'), COALESCE(w.counts, '{}'), \
                    COALESCE(d.active_days, 0), COALESCE(d.retained, false), \
                    COALESCE(d.pre_active_days, 0) \
             FROM a \
             LEFT JOIN LATERAL ( \
               SELECT array_agg(channel ORDER BY channel) AS channels, \
                      array_agg(n ORDER BY channel) AS counts \
               FROM (SELECT channel::text AS channel, count(*) AS n FROM messages \
                     WHERE user_id = a.user_id \
                       AND sent_at >= a.first_planned_at AND sent_at < $2 \
                     GROUP BY channel) x) m ON true \
             LEFT JOIN LATERAL ( \
               SELECT array_agg(kind ORDER BY kind) AS kinds, \
                      array_agg(n ORDER BY kind) AS counts, \
                      bool_or(kind IN ('unsubscribed', 'push_disabled', 'complained')) \
                        AS lost_reach \
               FROM (SELECT oc.kind, count(*) AS n \
                     FROM messages ms \
                     JOIN outcomes oc ON oc.user_id = ms.user_id \
                                     AND oc.message_id = ms.message_id \
                     WHERE ms.user_id = a.user_id \
                       AND ms.sent_at >= a.first_planned_at AND ms.sent_at < $2 \
                       AND oc.occurred_at < $2 \
                     GROUP BY oc.kind) x) o ON true \
             LEFT JOIN LATERAL ( \
               SELECT array_agg(channel ORDER BY channel) AS channels, \
                      array_agg(n ORDER BY channel) AS counts \
               FROM (SELECT channel::text AS channel, count(*) AS n FROM schedule_items \
                     WHERE user_id = a.user_id AND state = 'withheld' \
                       AND withheld_by = 'holdout' \
                       AND send_after >= a.first_planned_at AND send_after < $2 \
                     GROUP BY channel) x) w ON true \
             LEFT JOIN LATERAL ( \
               SELECT count(*) FILTER (WHERE day >= a.first_day)::int AS active_days, \
                      bool_or(day >= a.until_day - $3) AS retained, \
                      count(*) FILTER (WHERE day >= a.first_day - $4 AND day < a.first_day)::int \
                        AS pre_active_days \
               FROM user_activity \
               WHERE user_id = a.user_id \
                 AND day >= least(a.first_day - $4, a.until_day - $3) \
                 AND day < a.until_day) d ON true \
             ORDER BY a.user_id",
        )
        .bind(experiment)
        .bind(until)
        .bind(retention)
        .bind(pre)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ExperimentUser {
                    user_id: r.try_get(0)?,
                    arm: r.try_get(1)?,
                    arm_changes: r.try_get::<i32, _>(2)?.max(0) as u32,
                    first_planned_at: r.try_get(3)?,
                    messages: counts(r.try_get(4)?, r.try_get(5)?),
                    outcomes: counts(r.try_get(6)?, r.try_get(7)?),
                    lost_reach: r.try_get(8)?,
                    withheld: counts(r.try_get(9)?, r.try_get(10)?),
                    active_days: r.try_get::<i32, _>(11)?.max(0) as u32,
                    retained: r.try_get(12)?,
                    pre_active_days: r.try_get::<i32, _>(13)?.max(0) as u32,
                })
            })
            .collect()
    }
}

/// Pairs the parallel `array_agg` columns of keys and counts into a map.
fn counts(keys: Vec<String>, counts: Vec<i64>) -> BTreeMap<String, u64> {
    keys.into_iter()
        .zip(counts)
        .map(|(k, n)| (k, n.max(0) as u64))
        .collect()
}
