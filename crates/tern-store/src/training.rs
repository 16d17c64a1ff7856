//! Training data: each user's messages with their outcomes and the days the user was active,
//! streamed user by user so that a caller never needs the whole history in memory.
//!
//! Two ordered scans run side by side (messages with their outcomes, and activity days) and are
//! merged on `user_id`. Both sort by the same byte-wise collation (`COLLATE "C"`) that Rust's
//! `String` ordering uses, which is what makes the merge correct.

use std::collections::BTreeMap;
use std::pin::Pin;

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::{BoxStream, Peekable};
use futures::{Stream, StreamExt};
use sqlx::postgres::PgRow;
use sqlx::Row;
use tern_core::OutcomeKind;

use crate::{Result, Store};

/// One user's history over a period, as [`Store::training_history`] yields it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingUser {
    pub user_id: String,
    /// `None` when no user row exists (history imported before the user was).
    pub timezone: Option<String>,
    /// When the user row was created: tenure is measured from it.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Days with activity inside the requested activity range, ascending.
    pub active_days: Vec<NaiveDate>,
    /// Messages sent inside the requested period, by send time.
    pub messages: Vec<TrainingMessage>,
    /// Would-be messages inside the period that were withheld rather than sent (a holdout's, or
    /// withheld at random by the planner's exploration), by their would-be send time: what
    /// happened to the user without the send. Their `sent_at` is when the item's send window
    /// opened, `message_id` the schedule item's id, and they have no outcomes.
    pub withheld: Vec<TrainingMessage>,
}

/// A sent message with what is known about it: its opportunity and its outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingMessage {
    pub message_id: i64,
    pub channel: String,
    pub category: String,
    /// The opportunity's priority class (caps exempt some).
    pub priority: String,
    pub template: String,
    pub sent_at: DateTime<Utc>,
    pub opportunity_created_at: DateTime<Utc>,
    pub opportunity_expires_at: DateTime<Utc>,
    /// The opportunity's numeric value signals (non-numeric ones are left out).
    pub signals: BTreeMap<String, f64>,
    /// Every outcome reported for the message, by time.
    pub outcomes: Vec<(OutcomeKind, DateTime<Utc>)>,
    /// The probability with which the logging policy took this action, given the user's arm:
    /// sent it, or (for a withheld one) withheld it: the `withhold` share for exploration, 1
    /// for a holdout user. `None` for messages imported from elsewhere.
    pub propensity: Option<f64>,
}

type Rows<'a> = Peekable<BoxStream<'a, std::result::Result<PgRow, sqlx::Error>>>;

struct Merge<'a> {
    messages: Rows<'a>,
    activity: Rows<'a>,
}

impl Store {
    /// When the first message in `[since, until)` was sent, if any: training starts its
    /// window there, so that a young installation (or a simulation's first nights) is not
    /// split into an empty training part and a validation part holding everything.
    pub async fn first_message_at(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT min(sent_at) FROM messages WHERE sent_at >= $1 AND sent_at < $2",
        )
        .bind(since)
        .bind(until)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records days on which users were active. Idempotent: a day already recorded is left
    /// alone. Returns how many (user, day) pairs were new.
    pub async fn record_activity(&self, activity: &[(String, NaiveDate)]) -> Result<u64> {
        if let Some((user, _)) = activity.iter().find(|(u, _)| u.is_empty() || u.len() > 512) {
            return Err(tern_core::InvalidInput::new(format!(
                "activity user ids must be 1 to 512 bytes, got {} bytes",
                user.len()
            ))
            .into());
        }
        let users: Vec<&str> = activity.iter().map(|(u, _)| u.as_str()).collect();
        let days: Vec<NaiveDate> = activity.iter().map(|(_, d)| *d).collect();
        let done: i64 = sqlx::query_scalar(
            "WITH ins AS (INSERT INTO user_activity (user_id, day) \
               SELECT u, d FROM unnest($1::text[], $2::date[]) AS x(u, d) ORDER BY u, d \
               ON CONFLICT DO NOTHING RETURNING user_id), \
             queued AS (INSERT INTO replan_queue (user_id, due_at, reason) \
               SELECT DISTINCT user_id, '-infinity'::timestamptz, 'activity' FROM ins \
               ORDER BY user_id) \
             SELECT count(*) FROM ins",
        )
        .bind(&users)
        .bind(&days)
        .fetch_one(&self.pool)
        .await?;
        Ok(done.max(0) as u64)
    }

    /// Streams, user by user in `user_id` order, every message sent in `[from, until)` with its
    /// opportunity and outcomes, and every would-be message withheld in it, together with the
    /// user's activity days in `[activity_from, activity_until]`. Users with activity but no
    /// message in the period are skipped. Only one user's history is held at a time.
    pub fn training_history(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        activity_from: NaiveDate,
        activity_until: NaiveDate,
    ) -> impl Stream<Item = Result<TrainingUser>> + Send + '_ {
        let messages = sqlx::query(
            "SELECT m.user_id, m.message_id, m.channel, m.category, m.priority, m.template, \
                    m.sent_at, m.propensity, false AS withheld, \
                    o.created_at AS opp_created_at, o.expires_at AS opp_expires_at, o.signals, \
                    u.timezone, u.created_at AS user_created_at, x.kinds, x.times \
             FROM messages m \
             JOIN opportunities o ON o.user_id = m.user_id AND o.opportunity_id = m.opportunity_id \
             LEFT JOIN users u ON u.user_id = m.user_id \
             LEFT JOIN LATERAL ( \
               SELECT array_agg(kind ORDER BY occurred_at, kind) AS kinds, \
                      array_agg(occurred_at ORDER BY occurred_at, kind) AS times \
               FROM outcomes oc WHERE oc.user_id = m.user_id AND oc.message_id = m.message_id \
             ) x ON true \
             WHERE m.sent_at >= $1 AND m.sent_at < $2 \
             UNION ALL \
             SELECT s.user_id, s.item_id, s.channel, o.category, o.priority, o.template, \
                    s.send_after, \
                    CASE WHEN s.withheld_by = 'exploration' THEN s.propensity ELSE 1.0 END, true, \
                    o.created_at, o.expires_at, o.signals, \
                    u.timezone, u.created_at, NULL, NULL \
             FROM schedule_items s \
             JOIN opportunities o ON o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
             LEFT JOIN users u ON u.user_id = s.user_id \
             WHERE s.state = 'withheld' AND s.send_after >= $1 AND s.send_after < $2 \
             ORDER BY 1, 7, 9, 2",
        )
        .bind(from)
        .bind(until)
        .fetch(&self.pool)
        .peekable();
        let activity = sqlx::query(
            "SELECT user_id, array_agg(day ORDER BY day) AS days FROM user_activity \
             WHERE day >= $1 AND day <= $2 GROUP BY user_id ORDER BY user_id",
        )
        .bind(activity_from)
        .bind(activity_until)
        .fetch(&self.pool)
        .peekable();
        futures::stream::try_unfold(Merge { messages, activity }, |mut m| async move {
            match m.next_user().await? {
                Some(user) => Ok(Some((user, m))),
                None => Ok(None),
            }
        })
    }
}

impl Merge<'_> {
    async fn next_user(&mut self) -> Result<Option<TrainingUser>> {
        let Some(first) = self.messages.next().await.transpose()? else {
            return Ok(None);
        };
        let user_id: String = first.try_get("user_id")?;
        let mut user = TrainingUser {
            timezone: first.try_get("timezone")?,
            first_seen_at: first.try_get("user_created_at")?,
            active_days: Vec::new(),
            messages: Vec::new(),
            withheld: Vec::new(),
            user_id,
        };
        user.add(&first)?;
        loop {
            let same = match Pin::new(&mut self.messages).peek().await {
                Some(Ok(row)) => row.try_get::<&str, _>("user_id")? == user.user_id,
                // An error is taken (and returned) by the next call's `next`.
                Some(Err(_)) | None => false,
            };
            if !same {
                break;
            }
            let row = self.messages.next().await.transpose()?;
            if let Some(row) = row {
                user.add(&row)?;
            }
        }
        // Skip activity of users without messages, up to this user.
        loop {
            let order = match Pin::new(&mut self.activity).peek().await {
                Some(Ok(row)) => row
                    .try_get::<&str, _>("user_id")?
                    .cmp(user.user_id.as_str()),
                Some(Err(_)) => match self.activity.next().await {
                    Some(Err(e)) => return Err(e.into()),
                    _ => continue,
                },
                None => break,
            };
            match order {
                std::cmp::Ordering::Less => {
                    self.activity.next().await;
                }
                std::cmp::Ordering::Equal => {
                    if let Some(row) = self.activity.next().await.transpose()? {
                        user.active_days = row.try_get("days")?;
                    }
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(Some(user))
    }
}

impl TrainingUser {
    /// Files a row of the history scan as a message or a withheld one.
    fn add(&mut self, row: &PgRow) -> Result<()> {
        let m = message(row)?;
        if row.try_get::<bool, _>("withheld")? {
            self.withheld.push(m);
        } else {
            self.messages.push(m);
        }
        Ok(())
    }
}

fn message(row: &PgRow) -> Result<TrainingMessage> {
    let signals: serde_json::Value = row.try_get("signals")?;
    let signals = crate::planning::numbers(signals);
    let kinds: Option<Vec<String>> = row.try_get("kinds")?;
    let times: Option<Vec<DateTime<Utc>>> = row.try_get("times")?;
    let outcomes = kinds
        .unwrap_or_default()
        .into_iter()
        .zip(times.unwrap_or_default())
        .map(|(k, t)| Ok((k.parse::<OutcomeKind>()?, t)))
        .collect::<Result<Vec<_>>>()?;
    Ok(TrainingMessage {
        message_id: row.try_get("message_id")?,
        channel: row.try_get("channel")?,
        category: row.try_get("category")?,
        priority: row.try_get("priority")?,
        template: row.try_get("template")?,
        sent_at: row.try_get("sent_at")?,
        opportunity_created_at: row.try_get("opp_created_at")?,
        opportunity_expires_at: row.try_get("opp_expires_at")?,
        signals,
        outcomes,
        propensity: row.try_get("propensity")?,
    })
}
