//! Users: timezone, attributes, reachability and opt-outs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use tern_core::{check_json, validate_name, validate_text, InvalidInput, MAX_KEY_LEN};

use crate::{Result, Store};

/// A user as upstream systems describe them. Upserting replaces every field.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub user_id: String,
    /// IANA zone name; the server validates it against the zone database before it gets here.
    pub timezone: String,
    pub locale: Option<String>,
    /// A JSON object that segment conditions read.
    pub attributes: serde_json::Value,
    /// Categories the user does not want on any channel.
    pub opted_out_categories: Vec<String>,
    /// Per channel: reachable and opted out. Channels not listed keep their stored state.
    pub channels: Vec<ChannelState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub channel: String,
    pub reachable: bool,
    pub opted_out: bool,
}

impl User {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        validate_text("user_id", &self.user_id, MAX_KEY_LEN)?;
        validate_text("timezone", &self.timezone, MAX_KEY_LEN)?;
        if let Some(locale) = &self.locale {
            validate_text("locale", locale, MAX_KEY_LEN)?;
        }
        if !self.attributes.is_object() {
            return Err(InvalidInput::new("attributes must be a JSON object"));
        }
        check_json("attributes", &self.attributes)?;
        for c in &self.opted_out_categories {
            validate_name("category", c)?;
        }
        for c in &self.channels {
            validate_name("channel", &c.channel)?;
        }
        Ok(())
    }
}

impl Store {
    /// Inserts or replaces users in one transaction, and cancels every live schedule item that
    /// the new state forbids (an opted-out or unreachable channel, an opted-out category), so an
    /// opt-out takes effect at once: cancelled items are never handed out again. Returns the
    /// number of schedule items cancelled. If a user appears twice, the later entry wins.
    pub async fn upsert_users(&self, users: &[User], now: DateTime<Utc>) -> Result<u64> {
        for u in users {
            u.validate()?;
        }
        let mut last: HashMap<&str, &User> = HashMap::with_capacity(users.len());
        for u in users {
            last.insert(&u.user_id, u);
        }
        let mut unique: Vec<&User> = last.into_values().collect();
        unique.sort_by(|a, b| a.user_id.cmp(&b.user_id));

        let ids: Vec<&str> = unique.iter().map(|u| u.user_id.as_str()).collect();
        let zones: Vec<&str> = unique.iter().map(|u| u.timezone.as_str()).collect();
        let locales: Vec<Option<&str>> = unique.iter().map(|u| u.locale.as_deref()).collect();
        let attributes: Vec<&serde_json::Value> = unique.iter().map(|u| &u.attributes).collect();
        let categories: Vec<String> = unique
            .iter()
            .map(|u| u.opted_out_categories.join(","))
            .collect();
        let (mut cu, mut cc, mut cr, mut co) = (vec![], vec![], vec![], vec![]);
        for u in &unique {
            for c in &u.channels {
                cu.push(u.user_id.as_str());
                cc.push(c.channel.as_str());
                cr.push(c.reachable);
                co.push(c.opted_out);
            }
        }

        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (user_id, timezone, locale, attributes, opted_out_categories, created_at, updated_at) \
             SELECT u, z, l, a, coalesce(string_to_array(NULLIF(c, ''), ','), '{}'), $6, $6 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[]) AS x(u, z, l, a, c) \
             ON CONFLICT (user_id) DO UPDATE SET timezone = excluded.timezone, locale = excluded.locale, \
               attributes = excluded.attributes, \
               opted_out_categories = excluded.opted_out_categories, \
               updated_at = excluded.updated_at",
        )
        .bind(&ids)
        .bind(&zones)
        .bind(&locales)
        .bind(&attributes)
        .bind(&categories)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if !cu.is_empty() {
            sqlx::query(
                "INSERT INTO user_channels (user_id, channel, reachable, opted_out, updated_at) \
                 SELECT * , $5 FROM unnest($1::text[], $2::text[], $3::bool[], $4::bool[]) \
                 ON CONFLICT (user_id, channel) DO UPDATE SET reachable = excluded.reachable, \
                   opted_out = excluded.opted_out, updated_at = excluded.updated_at",
            )
            .bind(&cu)
            .bind(&cc)
            .bind(&cr)
            .bind(&co)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let cancelled = cancel_forbidden_items(&mut tx, &ids, now).await?;
        crate::sweeps::enqueue(&mut tx, &ids, "user").await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// One user with their channel states, if known.
    pub async fn user(&self, user_id: &str) -> Result<Option<User>> {
        let Some(row) = sqlx::query(
            "SELECT user_id, timezone, locale, attributes, opted_out_categories FROM users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let channels = sqlx::query(
            "SELECT channel, reachable, opted_out FROM user_channels WHERE user_id = $1 ORDER BY channel",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(ChannelState {
                channel: r.try_get(0)?,
                reachable: r.try_get(1)?,
                opted_out: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(User {
            user_id: row.try_get(0)?,
            timezone: row.try_get(1)?,
            locale: row.try_get(2)?,
            attributes: row.try_get(3)?,
            opted_out_categories: row.try_get(4)?,
            channels,
        }))
    }
}

/// Cancels the live (pending or leased) items of these users that their stored preferences now
/// forbid. Runs inside the caller's transaction so that the preference and its effect commit
/// together.
pub(crate) async fn cancel_forbidden_items(
    tx: &mut sqlx::PgConnection,
    users: &[&str],
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE schedule_items s SET state = 'cancelled', updated_at = $2 \
         FROM opportunities o \
         WHERE s.user_id = ANY($1) AND s.state IN ('pending', 'leased') \
           AND o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
           AND (EXISTS (SELECT 1 FROM user_channels c \
                        WHERE c.user_id = s.user_id AND c.channel = s.channel \
                          AND (c.opted_out OR NOT c.reachable)) \
                OR EXISTS (SELECT 1 FROM users u \
                           WHERE u.user_id = s.user_id AND o.category = ANY(u.opted_out_categories)))",
    )
    .bind(users)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}
