//! History: messages sent, their outcomes, and the per-user windows that caps and features count.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use tern_core::{InvalidInput, OpportunityId, OutcomeKind};

use crate::{Result, Store, StoreError};

/// A message sent outside a tern schedule (imported history). Messages sent from a schedule item
/// are recorded by [`Store::ack`] instead.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub user_id: String,
    pub opportunity_id: OpportunityId,
    pub channel: String,
    pub sent_at: DateTime<Utc>,
}

/// An outcome reported by a delivery service.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutcome {
    pub user_id: String,
    pub message_id: i64,
    pub kind: OutcomeKind,
    pub occurred_at: DateTime<Utc>,
    pub value: Option<f64>,
}

/// What [`Store::record_outcomes`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeReport {
    /// Newly stored.
    pub stored: u64,
    /// Already stored (same message and kind); left untouched.
    pub duplicates: u64,
    /// Refer to a message that does not exist.
    pub unknown_message: u64,
    /// Channels newly opted out because of an unsubscribe, push-disabled or complaint outcome.
    pub opted_out: u64,
}

/// The sends of one user inside one rolling window ending at `now`, by channel and category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCount {
    pub window: TimeDelta,
    pub channel: String,
    pub category: String,
    pub count: i64,
}

/// What a user has been sent recently: the counts caps check, and the last send times that
/// minimum gaps and fatigue features need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserHistory {
    pub user_id: String,
    pub counts: Vec<WindowCount>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub last_sent_per_channel: BTreeMap<String, DateTime<Utc>>,
}

impl UserHistory {
    /// Sends in `window` on `channel` (any category), or on any channel when `channel` is `None`,
    /// optionally limited to one category.
    pub fn count(&self, window: TimeDelta, channel: Option<&str>, category: Option<&str>) -> i64 {
        self.counts
            .iter()
            .filter(|c| c.window == window)
            .filter(|c| channel.is_none_or(|ch| c.channel == ch))
            .filter(|c| category.is_none_or(|cat| c.category == cat))
            .map(|c| c.count)
            .sum()
    }
}

/// One message from a user's recent history, for callers that count their own windows (the
/// planner evaluates rolling windows that end in the future, at each candidate send time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryWindow {
    pub user_id: String,
    pub channel: String,
    pub category: String,
    pub priority: String,
    pub sent_at: DateTime<Utc>,
}

impl Store {
    /// Records messages sent outside tern (history imports). Returns their ids in input order.
    pub async fn record_messages(&self, messages: &[NewMessage]) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(messages.len());
        for m in messages {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO messages (user_id, opportunity_id, channel, category, priority, template, sent_at) \
                 SELECT o.user_id, o.opportunity_id, $3, o.category, o.priority, o.template, $4 \
                 FROM opportunities o WHERE o.user_id = $1 AND o.opportunity_id = $2 \
                 RETURNING message_id",
            )
            .bind(&m.user_id)
            .bind(m.opportunity_id)
            .bind(&m.channel)
            .bind(m.sent_at)
            .fetch_optional(&mut *tx)
            .await?;
            ids.push(id.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "opportunity {} of user {:?}",
                    m.opportunity_id, m.user_id
                ))
            })?);
        }
        let users: Vec<&str> = messages.iter().map(|m| m.user_id.as_str()).collect();
        crate::sweeps::enqueue(&mut tx, &users, "message").await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Stores outcomes, each at most once per message and kind, in one transaction. An
    /// unsubscribe, push-disabled or complaint outcome also opts the user out of that message's
    /// channel and cancels the user's live items on it, exactly like an explicit opt-out.
    pub async fn record_outcomes(
        &self,
        outcomes: &[NewOutcome],
        now: DateTime<Utc>,
    ) -> Result<OutcomeReport> {
        for o in outcomes {
            if let Some(v) = o.value {
                if !v.is_finite() {
                    return Err(InvalidInput::new("outcome value must be a finite number").into());
                }
            }
        }
        let users: Vec<&str> = outcomes.iter().map(|o| o.user_id.as_str()).collect();
        let messages: Vec<i64> = outcomes.iter().map(|o| o.message_id).collect();
        let kinds: Vec<&str> = outcomes.iter().map(|o| o.kind.as_str()).collect();
        let times: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.occurred_at).collect();
        let values: Vec<Option<f64>> = outcomes.iter().map(|o| o.value).collect();

        let mut tx = self.pool.begin().await?;
        let known: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM unnest($1::text[], $2::bigint[]) AS x(u, m) \
             WHERE EXISTS (SELECT 1 FROM messages WHERE user_id = x.u AND message_id = x.m)",
        )
        .bind(&users)
        .bind(&messages)
        .fetch_one(&mut *tx)
        .await?;
        // Rows that lose reachability come back so the opt-out can follow in the same transaction.
        let stored = sqlx::query(
            "INSERT INTO outcomes (user_id, message_id, kind, occurred_at, value, received_at) \
             SELECT x.u, x.m, x.k, x.t, x.v, $6 \
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::float8[]) \
                  AS x(u, m, k, t, v) \
             WHERE EXISTS (SELECT 1 FROM messages WHERE user_id = x.u AND message_id = x.m) \
             ORDER BY x.u, x.m, x.k \
             ON CONFLICT (user_id, message_id, kind) DO NOTHING \
             RETURNING user_id, message_id, kind",
        )
        .bind(&users)
        .bind(&messages)
        .bind(&kinds)
        .bind(&times)
        .bind(&values)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;

        let changed: Vec<String> = stored
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()?;
        let changed: Vec<&str> = changed.iter().map(String::as_str).collect();
        crate::sweeps::enqueue(&mut tx, &changed, "outcome").await?;
        let mut lost_users = Vec::new();
        let mut lost_messages = Vec::new();
        for row in &stored {
            let kind: String = row.try_get(2)?;
            if kind.parse::<OutcomeKind>()?.loses_reachability() {
                lost_users.push(row.try_get::<String, _>(0)?);
                lost_messages.push(row.try_get::<i64, _>(1)?);
            }
        }
        let mut opted_out = 0;
        if !lost_users.is_empty() {
            opted_out = sqlx::query(
                "INSERT INTO user_channels (user_id, channel, opted_out, reason, updated_at) \
                 SELECT DISTINCT m.user_id, m.channel, true, 'outcome', $3::timestamptz \
                 FROM unnest($1::text[], $2::bigint[]) AS x(u, m) \
                 JOIN messages m ON m.user_id = x.u AND m.message_id = x.m \
                 ON CONFLICT (user_id, channel) DO UPDATE SET opted_out = true, \
                   reason = excluded.reason, updated_at = excluded.updated_at \
                 WHERE NOT user_channels.opted_out",
            )
            .bind(&lost_users)
            .bind(&lost_messages)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let ids: Vec<&str> = lost_users.iter().map(String::as_str).collect();
            crate::users::cancel_forbidden_items(&mut tx, &ids, now).await?;
        }
        tx.commit().await?;
        let stored_count = stored.len() as u64;
        Ok(OutcomeReport {
            stored: stored_count,
            duplicates: known as u64 - stored_count,
            unknown_message: outcomes.len() as u64 - known as u64,
            opted_out,
        })
    }

    /// For each given user: sends per channel and category in each of `windows` (rolling, ending
    /// at `now`), and the last send times. Users without history get an empty entry, so the result
    /// has one entry per distinct user, in the order of `users`.
    pub async fn history_windows(
        &self,
        users: &[String],
        windows: &[TimeDelta],
        now: DateTime<Utc>,
    ) -> Result<Vec<UserHistory>> {
        let secs: Vec<f64> = windows
            .iter()
            .map(|w| w.num_milliseconds() as f64 / 1000.0)
            .collect();
        let longest = secs.iter().copied().fold(0.0, f64::max);
        let counts = sqlx::query(
            "SELECT m.user_id, w.secs, m.channel, m.category, count(*) \
             FROM messages m \
             JOIN unnest($2::float8[]) AS w(secs) ON m.sent_at > $3 - make_interval(secs => w.secs) \
             WHERE m.user_id = ANY($1) AND m.sent_at <= $3 \
               AND m.sent_at > $3 - make_interval(secs => $4) \
             GROUP BY 1, 2, 3, 4",
        )
        .bind(users)
        .bind(&secs)
        .bind(now)
        .bind(longest)
        .fetch_all(&self.pool)
        .await?;
        let last = sqlx::query(
            "SELECT user_id, channel, max(sent_at) FROM messages \
             WHERE user_id = ANY($1) AND sent_at <= $2 GROUP BY 1, 2",
        )
        .bind(users)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;

        let mut by_user: BTreeMap<String, UserHistory> = BTreeMap::new();
        for row in counts {
            let user: String = row.try_get(0)?;
            let secs: f64 = row.try_get(1)?;
            by_user
                .entry(user.clone())
                .or_default()
                .counts
                .push(WindowCount {
                    window: TimeDelta::milliseconds((secs * 1000.0).round() as i64),
                    channel: row.try_get(2)?,
                    category: row.try_get(3)?,
                    count: row.try_get(4)?,
                });
        }
        for row in last {
            let user: String = row.try_get(0)?;
            let at: DateTime<Utc> = row.try_get(2)?;
            let h = by_user.entry(user).or_default();
            h.last_sent_per_channel.insert(row.try_get(1)?, at);
            h.last_sent_at = h.last_sent_at.max(Some(at));
        }
        let mut seen = std::collections::HashSet::new();
        Ok(users
            .iter()
            .filter(|u| seen.insert(u.as_str()))
            .map(|u| {
                let mut h = by_user.remove(u).unwrap_or_default();
                h.user_id = u.clone();
                h.counts.sort_by(|a, b| {
                    (a.window, &a.channel, &a.category).cmp(&(b.window, &b.channel, &b.category))
                });
                h
            })
            .collect())
    }

    /// Every message sent to these users in `(since, now]`, oldest first per user.
    pub async fn recent_sends(
        &self,
        users: &[String],
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<HistoryWindow>> {
        let rows = sqlx::query(
            "SELECT user_id, channel, category, priority, sent_at FROM messages \
             WHERE user_id = ANY($1) AND sent_at > $2 AND sent_at <= $3 ORDER BY user_id, sent_at",
        )
        .bind(users)
        .bind(since)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(HistoryWindow {
                    user_id: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    category: r.try_get(2)?,
                    priority: r.try_get(3)?,
                    sent_at: r.try_get(4)?,
                })
            })
            .collect()
    }
}
