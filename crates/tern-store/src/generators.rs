//! What generators read and write: users with the fields their expressions see, page by page
//! for a scheduled run over a segment, and the record of processed events.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;

use crate::{Result, Store};

/// A user as generator expressions see them (see `tern_policy::UserView`).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorUser {
    pub user_id: String,
    pub timezone: String,
    pub locale: Option<String>,
    pub attributes: serde_json::Value,
    pub opted_out_categories: Vec<String>,
    /// Channel → (reachable, opted out).
    pub channels: BTreeMap<String, (bool, bool)>,
    /// Days active in the 28 days before `now`'s UTC date.
    pub active_days_28d: u32,
}

/// One processed event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub event_id: String,
    pub event_type: String,
    pub user_count: i32,
    pub opportunities: i32,
    pub occurred_at: Option<DateTime<Utc>>,
    /// What it carried, kept for replays.
    pub content: EventContent,
}

/// The users, numbers and strings of an event, as submitted.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventContent {
    pub user_ids: Vec<String>,
    pub numbers: BTreeMap<String, f64>,
    pub strings: BTreeMap<String, String>,
}

/// A processed event read back for a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event_id: String,
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    /// `None` for events recorded before their content was kept.
    pub content: Option<EventContent>,
}

/// Users, their channels and their recent activity in one statement. `$1` filters by id (NULL:
/// no filter), `$2` is the keyset cursor, `$3` the page size, `$4` the first day of the activity
/// window and `$5` the day after it.
const USERS: &str = "\
    SELECT u.user_id, u.timezone, u.locale, u.attributes, u.opted_out_categories, \
           COALESCE(c.channels, '{}') AS channels, \
           COALESCE(c.reachable, '{}') AS reachable, \
           COALESCE(c.opted_out, '{}') AS opted_out, \
           (SELECT count(*) FROM user_activity a \
             WHERE a.user_id = u.user_id AND a.day >= $4 AND a.day < $5) AS active_days \
    FROM users u \
    LEFT JOIN LATERAL ( \
        SELECT array_agg(channel::text ORDER BY channel) AS channels, \
               array_agg(reachable ORDER BY channel) AS reachable, \
               array_agg(opted_out ORDER BY channel) AS opted_out \
        FROM user_channels uc WHERE uc.user_id = u.user_id) c ON true \
    WHERE ($1::text[] IS NULL OR u.user_id = ANY($1)) \
      AND ($2::text IS NULL OR u.user_id > $2) \
    ORDER BY u.user_id \
    LIMIT $3";

impl Store {
    /// The given users (unknown ids are left out), as of `now`.
    pub async fn generator_users(
        &self,
        user_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<GeneratorUser>> {
        self.generator_users_query(Some(user_ids), None, user_ids.len() as i64, now)
            .await
    }

    /// Up to `limit` users after `after` in id order: a scheduled run walks every user this way,
    /// a page at a time, so that a segment of millions is never all in memory.
    pub async fn generator_users_page(
        &self,
        after: Option<&str>,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<GeneratorUser>> {
        self.generator_users_query(None, after, limit, now).await
    }

    async fn generator_users_query(
        &self,
        ids: Option<&[String]>,
        after: Option<&str>,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<GeneratorUser>> {
        let today = now.date_naive();
        let rows = sqlx::query(USERS)
            .bind(ids)
            .bind(after)
            .bind(limit)
            .bind(today - TimeDelta::days(28))
            .bind(today)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let channels: Vec<String> = row.try_get("channels")?;
                let reachable: Vec<bool> = row.try_get("reachable")?;
                let opted_out: Vec<bool> = row.try_get("opted_out")?;
                let active: i64 = row.try_get("active_days")?;
                Ok(GeneratorUser {
                    user_id: row.try_get("user_id")?,
                    timezone: row.try_get("timezone")?,
                    locale: row.try_get("locale")?,
                    attributes: row.try_get("attributes")?,
                    opted_out_categories: row.try_get("opted_out_categories")?,
                    channels: channels
                        .into_iter()
                        .zip(reachable.into_iter().zip(opted_out))
                        .collect(),
                    active_days_28d: active as u32,
                })
            })
            .collect()
    }

    /// The events received in `[from, until)`, oldest first, at most `limit`.
    pub async fn events_between(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT event_id, type, received_at, content FROM events \
             WHERE received_at >= $1 AND received_at < $2 \
             ORDER BY received_at, event_id LIMIT $3",
        )
        .bind(from)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let content: Option<serde_json::Value> = r.try_get("content")?;
                Ok(StoredEvent {
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("type")?,
                    received_at: r.try_get("received_at")?,
                    content: content.and_then(|c| serde_json::from_value(c).ok()),
                })
            })
            .collect()
    }

    /// Which of these event ids have been processed before.
    pub async fn seen_events(&self, event_ids: &[String]) -> Result<HashSet<String>> {
        let rows = sqlx::query("SELECT event_id FROM events WHERE event_id = ANY($1)")
            .bind(event_ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Records processed events; an id recorded before is left as it was. Returns how many
    /// were new.
    pub async fn record_events(&self, events: &[EventRecord], now: DateTime<Utc>) -> Result<u64> {
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let users: Vec<i32> = events.iter().map(|e| e.user_count).collect();
        let opportunities: Vec<i32> = events.iter().map(|e| e.opportunities).collect();
        let occurred: Vec<Option<DateTime<Utc>>> = events.iter().map(|e| e.occurred_at).collect();
        let content: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(&e.content).unwrap_or_default())
            .collect();
        let done = sqlx::query(
            "INSERT INTO events (event_id, type, user_count, opportunities, occurred_at, \
                                 received_at, content) \
             SELECT i, t, u, o, oc, $6, c \
             FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::timestamptz[], \
                         $7::jsonb[]) AS x(i, t, u, o, oc, c) \
             ORDER BY i \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&types)
        .bind(&users)
        .bind(&opportunities)
        .bind(&occurred)
        .bind(now)
        .bind(&content)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
