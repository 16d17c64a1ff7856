//! Logged decisions for off-policy evaluation: every opportunity that reached a final state in
//! a period, with what the logging policy did about it and the probability it did it with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store};

/// One opportunity decided in the period: sent (through a schedule item, so with a propensity),
/// withheld (by a holdout arm, or at random by the Replan's `withhold` share), or expired unsent.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedDecision {
    pub user_id: String,
    pub opportunity_id: i64,
    pub category: String,
    pub priority: String,
    pub template: String,
    pub channels: Vec<String>,
    /// The opportunity's numeric value signals.
    pub signals: BTreeMap<String, f64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// What the logging policy sent, if it sent anything.
    pub sent: Option<LoggedSend>,
    /// Set when the logging policy chose a send and then withheld it.
    pub withheld: Option<LoggedWithholding>,
}

/// The logged action of a withheld opportunity: nothing, where a message would have gone.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedWithholding {
    /// The probability of sending nothing, given the user's arm: the `withhold` share for a
    /// send withheld at random, 1 for a holdout user's.
    pub propensity: f64,
    /// When the plan that withheld it started.
    pub planned_at: DateTime<Utc>,
}

/// The logged action of a sent opportunity.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedSend {
    pub message_id: i64,
    pub channel: String,
    /// The probability with which the plan chose this item, in (0, 1].
    pub propensity: f64,
    pub sent_at: DateTime<Utc>,
    /// When the plan that chose it started: the moment of the decision.
    pub planned_at: DateTime<Utc>,
}

impl Store {
    /// The decisions on the opportunities created in `[from, until)` that were final by
    /// `until`: sent from a plan's schedule item before it (messages imported from elsewhere
    /// have no propensity and are left out), withheld when its send window opened before it,
    /// or expired unsent by then. Selecting by creation, whatever the action, keeps the set of
    /// decisions independent of what the logging policy did with them. Open and cancelled
    /// opportunities are not final decisions of the logging policy and are left out. Three
    /// indexable branches rather than one `OR`.
    pub async fn logged_decisions(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<LoggedDecision>> {
        let rows = sqlx::query(
            "SELECT o.user_id, o.opportunity_id, o.category, o.priority, o.template, o.channels, \
                    o.signals, o.created_at, o.expires_at, \
                    m.message_id, m.channel, m.propensity, m.sent_at, p.started_at AS planned_at, \
                    NULL::float8 AS withheld_propensity \
             FROM opportunities o \
             JOIN messages m ON m.user_id = o.user_id \
                  AND m.opportunity_id = o.opportunity_id AND m.item_id IS NOT NULL \
             JOIN plans p ON p.plan_id = m.plan_id \
             WHERE o.state = 'sent' AND o.created_at >= $1 AND o.created_at < $2 \
               AND m.sent_at < $2 AND m.propensity IS NOT NULL \
             UNION ALL \
             SELECT o.user_id, o.opportunity_id, o.category, o.priority, o.template, o.channels, \
                    o.signals, o.created_at, o.expires_at, \
                    NULL, NULL, NULL, NULL, p.started_at, \
                    CASE WHEN s.withheld_by = 'exploration' THEN s.propensity ELSE 1.0 END \
             FROM opportunities o \
             JOIN schedule_items s ON s.user_id = o.user_id \
                  AND s.opportunity_id = o.opportunity_id AND s.state = 'withheld' \
             JOIN plans p ON p.plan_id = s.plan_id \
             WHERE o.state = 'withheld' AND o.created_at >= $1 AND o.created_at < $2 \
               AND s.send_after < $2 \
             UNION ALL \
             SELECT o.user_id, o.opportunity_id, o.category, o.priority, o.template, o.channels, \
                    o.signals, o.created_at, o.expires_at, \
                    NULL, NULL, NULL, NULL, NULL, NULL \
             FROM opportunities o \
             WHERE o.state = 'expired' AND o.created_at >= $1 AND o.created_at < $2 \
               AND o.expires_at <= $2 \
             ORDER BY 1, 2",
        )
        .bind(from)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let message_id: Option<i64> = row.try_get("message_id")?;
                let sent = match message_id {
                    Some(message_id) => Some(LoggedSend {
                        message_id,
                        channel: row.try_get("channel")?,
                        propensity: row.try_get("propensity")?,
                        sent_at: row.try_get("sent_at")?,
                        planned_at: row.try_get("planned_at")?,
                    }),
                    None => None,
                };
                let withheld = match row.try_get::<Option<f64>, _>("withheld_propensity")? {
                    Some(propensity) => Some(LoggedWithholding {
                        propensity,
                        planned_at: row.try_get("planned_at")?,
                    }),
                    None => None,
                };
                Ok(LoggedDecision {
                    user_id: row.try_get("user_id")?,
                    opportunity_id: row.try_get("opportunity_id")?,
                    category: row.try_get("category")?,
                    priority: row.try_get("priority")?,
                    template: row.try_get("template")?,
                    channels: row.try_get("channels")?,
                    signals: crate::planning::numbers(row.try_get("signals")?),
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    sent,
                    withheld,
                })
            })
            .collect()
    }

    /// Each known user's time zone and first appearance, by id; unknown users are left out.
    pub async fn user_zones(
        &self,
        users: &[&str],
    ) -> Result<BTreeMap<String, (String, Option<DateTime<Utc>>)>> {
        let rows =
            sqlx::query("SELECT user_id, timezone, created_at FROM users WHERE user_id = ANY($1)")
                .bind(users)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("user_id")?,
                    (row.try_get("timezone")?, row.try_get("created_at")?),
                ))
            })
            .collect()
    }
}
