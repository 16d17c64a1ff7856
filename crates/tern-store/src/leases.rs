//! Leasing due schedule items to delivery services, and their acknowledgements.
//!
//! A delivery service pulls items with [`Store::lease`] and gets each with a fresh random token
//! and an expiry. Until the expiry the item is its alone: concurrent pulls skip it (`FOR UPDATE
//! SKIP LOCKED`, then the state change). After the expiry the item is due again and the next pull
//! takes it with a new token, which makes the old token stale: an ack with it is refused, so an
//! item that was handed out twice is still recorded as sent at most once.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use tern_core::{AckStatus, InvalidInput, ItemState, OpportunityId};
use uuid::Uuid;

use crate::{Result, Store};

/// A delivery service's request for due items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Who holds the lease (a delivery service instance); recorded for support tooling.
    pub holder: String,
    /// Channels the caller delivers.
    pub channels: Vec<String>,
    pub max_items: u32,
    /// How long the items stay reserved for the caller.
    pub lease_for: TimeDelta,
}

/// A leased item, with what the delivery service needs to render and send it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedItem {
    pub user_id: String,
    pub item_id: i64,
    pub opportunity_id: OpportunityId,
    pub plan_id: i64,
    pub channel: String,
    pub template: String,
    pub category: String,
    pub priority: String,
    /// The opportunity's numeric value signals.
    pub signals: std::collections::BTreeMap<String, f64>,
    /// The opportunity's template parameters.
    pub payload: std::collections::BTreeMap<String, String>,
    /// The opportunity's key, unique per user: a sender may use it to make its own provider
    /// call idempotent.
    pub dedupe_key: String,
    /// The user's BCP 47 locale, when upstream gave one.
    pub locale: Option<String>,
    pub send_after: DateTime<Utc>,
    pub send_before: DateTime<Utc>,
    pub lease_token: Uuid,
    pub lease_expires_at: DateTime<Utc>,
    /// 1 on the first lease, 2 after one expiry, and so on.
    pub attempt: i32,
}

/// An acknowledgement of one leased item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub user_id: String,
    pub item_id: i64,
    pub lease_token: Uuid,
    pub status: AckStatus,
}

/// What became of an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckResult {
    /// Applied now. For `sent`, the message id under which outcomes are reported.
    Acked {
        message_id: Option<i64>,
    },
    /// The same ack was applied before; nothing changed.
    AlreadyAcked {
        message_id: Option<i64>,
    },
    /// The token is not the item's current one, or the lease has expired: the item is (or will
    /// be) someone else's. Nothing changed.
    Stale,
    /// The item was acked before with this token but another status; nothing changed.
    Conflict {
        current: ItemState,
    },
    /// The item was cancelled (an opt-out) while leased: it must not be sent.
    Cancelled,
    NotFound,
}

/// The pull: per requested channel, the earliest due items on the due index, locked
/// (`SKIP LOCKED`) and leased in one statement. Reads the due queue of every user: see
/// [`crate::routing`].
pub(crate) const LEASE_DUE: &str = "WITH due AS ( \
       SELECT d.user_id, d.item_id FROM unnest($1::text[]) AS ch(name) \
       CROSS JOIN LATERAL ( \
         SELECT s.user_id, s.item_id, s.send_after FROM schedule_items s \
         WHERE s.channel = ch.name AND s.state IN ('pending', 'leased') \
           AND s.send_after <= $2 AND s.send_before > $2 \
           AND (s.state = 'pending' OR s.lease_expires_at <= $2) \
           AND EXISTS (SELECT 1 FROM opportunities o \
                       WHERE o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
                         AND o.state = 'open' AND o.expires_at > $2) \
         ORDER BY s.send_after \
         LIMIT $3 \
         FOR UPDATE OF s SKIP LOCKED) d \
       ORDER BY d.send_after \
       LIMIT $3) \
     UPDATE schedule_items s \
     SET state = 'leased', lease_holder = $4, lease_token = gen_random_uuid(), \
         lease_expires_at = $5, attempt = s.attempt + 1, updated_at = $2 \
     FROM due, opportunities o \
     WHERE s.user_id = due.user_id AND s.item_id = due.item_id \
       AND o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
     RETURNING s.user_id, s.item_id, s.opportunity_id, s.plan_id, s.channel, o.template, \
       o.category, o.priority, o.signals, s.send_after, s.send_before, s.lease_token, \
       s.lease_expires_at, s.attempt, o.payload, o.dedupe_key, \
       (SELECT u.locale FROM users u WHERE u.user_id = s.user_id)";

/// A batch of acks, first: every item of the batch locked in key order.
pub(crate) const LOCK_ACKED: &str = "SELECT 1 FROM schedule_items s \
     JOIN unnest($1::text[], $2::bigint[]) AS x(u, i) ON s.user_id = x.u AND s.item_id = x.i \
     ORDER BY s.user_id, s.item_id FOR UPDATE OF s";

/// A batch of acks: the common case (the current token of an unexpired lease) for every item
/// at once.
pub(crate) const APPLY_ACKS: &str = "UPDATE schedule_items s SET state = x.st, updated_at = $5 \
     FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[]) AS x(u, i, tok, st) \
     WHERE s.user_id = x.u AND s.item_id = x.i AND s.lease_token = x.tok \
       AND s.state = 'leased' AND s.lease_expires_at > $5 \
     RETURNING s.user_id, s.item_id, s.state";

/// Extends one item's lease while its token holds it.
pub(crate) const EXTEND_LEASE: &str =
    "UPDATE schedule_items SET lease_expires_at = $4, updated_at = $5 \
     WHERE user_id = $1 AND item_id = $2 AND lease_token = $3 \
       AND state = 'leased' AND lease_expires_at > $5 \
     RETURNING lease_expires_at";

impl Store {
    /// Leases up to `max_items` items that are due at `now` on the requested channels, earliest
    /// send time first. An item is due when its window contains `now`, its opportunity is open and
    /// unexpired, and it is pending or its previous lease has expired.
    pub async fn lease(&self, req: &LeaseRequest, now: DateTime<Utc>) -> Result<Vec<LeasedItem>> {
        if req.lease_for <= TimeDelta::zero() {
            return Err(InvalidInput::new("the lease duration must be positive").into());
        }
        if req.max_items == 0 || req.channels.is_empty() {
            return Ok(Vec::new());
        }
        // Per channel, so that each channel's scan walks the due index (channel, send_after) in
        // order and stops after `max_items`; `channel = ANY(...)` made PostgreSQL collect and sort
        // every due item of the requested channels on every pull.
        let rows = sqlx::query(LEASE_DUE)
            .bind({
                let mut channels = req.channels.clone();
                channels.sort();
                channels.dedup();
                channels
            })
            .bind(now)
            .bind(i64::from(req.max_items))
            .bind(&req.holder)
            .bind(now + req.lease_for)
            .fetch_all(&self.pool)
            .await?;
        let mut items = rows
            .into_iter()
            .map(|r| {
                Ok(LeasedItem {
                    user_id: r.try_get(0)?,
                    item_id: r.try_get(1)?,
                    opportunity_id: r.try_get(2)?,
                    plan_id: r.try_get(3)?,
                    channel: r.try_get(4)?,
                    template: r.try_get(5)?,
                    category: r.try_get(6)?,
                    priority: r.try_get(7)?,
                    signals: crate::planning::numbers(r.try_get(8)?),
                    send_after: r.try_get(9)?,
                    send_before: r.try_get(10)?,
                    lease_token: r.try_get(11)?,
                    lease_expires_at: r.try_get(12)?,
                    attempt: r.try_get(13)?,
                    payload: crate::opportunities::payload_map(r.try_get(14)?),
                    dedupe_key: r.try_get(15)?,
                    locale: r.try_get(16)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        items.sort_by_key(|i| (i.send_after, i.item_id));
        Ok(items)
    }

    /// Applies an ack. Only the current token of an unexpired lease can change the item; repeating
    /// an applied ack is harmless. A `sent` ack records the message (with the plan, policy and
    /// model versions, arm, propensity and scores of the decision) and closes the opportunity, in
    /// the same transaction.
    pub async fn ack(&self, ack: &Ack, now: DateTime<Utc>) -> Result<AckResult> {
        let mut tx = self.pool.begin().await?;
        let result = ack_in(&mut tx, ack, now).await?;
        if ack.status != tern_core::AckStatus::Sent && matches!(result, AckResult::Acked { .. }) {
            crate::sweeps::enqueue(&mut tx, &[ack.user_id.as_str()], "ack").await?;
        }
        tx.commit().await?;
        Ok(result)
    }

    /// Applies several acks in one transaction, each judged exactly as [`Store::ack`] judges it;
    /// the results come back in request order. The common case (the current token of an
    /// unexpired lease) is applied to the whole batch in three statements instead of three per
    /// item, which is what lets delivery services ack at tens of thousands of items a second.
    /// Rows are locked in key order, so two batches that share items cannot deadlock. On an error
    /// nothing is applied, and the whole batch may be sent again (acks are idempotent).
    pub async fn ack_many(&self, acks: &[Ack], now: DateTime<Utc>) -> Result<Vec<AckResult>> {
        let mut results: Vec<Option<AckResult>> = vec![None; acks.len()];
        // The first ack of each item takes the set-based fast path; repeats within the batch are
        // judged one by one afterwards, and see what the first one did.
        let mut seen = std::collections::HashSet::with_capacity(acks.len());
        let first: Vec<usize> = (0..acks.len())
            .filter(|&i| seen.insert((acks[i].user_id.as_str(), acks[i].item_id)))
            .collect();
        let users: Vec<&str> = first.iter().map(|&i| acks[i].user_id.as_str()).collect();
        let items: Vec<i64> = first.iter().map(|&i| acks[i].item_id).collect();
        let tokens: Vec<Uuid> = first.iter().map(|&i| acks[i].lease_token).collect();
        let states: Vec<&str> = first
            .iter()
            .map(|&i| acks[i].status.item_state().as_str())
            .collect();

        let mut tx = self.pool.begin().await?;
        // Lock every row of the batch in key order, so that overlapping batches cannot deadlock.
        sqlx::query(LOCK_ACKED)
            .bind(&users)
            .bind(&items)
            .execute(&mut *tx)
            .await?;
        // The common case, for every item at once: the current token of an unexpired lease.
        let applied: Vec<(String, i64, String)> = sqlx::query_as(APPLY_ACKS)
            .bind(&users)
            .bind(&items)
            .bind(&tokens)
            .bind(&states)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        let sent: Vec<(&str, i64)> = applied
            .iter()
            .filter(|(_, _, st)| st == "sent")
            .map(|(u, i, _)| (u.as_str(), *i))
            .collect();
        let message_ids = record_sent(&mut tx, &sent, now).await?;
        let skipped: Vec<(&str, i64)> = applied
            .iter()
            .filter(|(_, _, st)| st == "skipped")
            .map(|(u, i, _)| (u.as_str(), *i))
            .collect();
        close_skipped(&mut tx, &skipped).await?;
        let applied: std::collections::HashSet<(&str, i64)> =
            applied.iter().map(|(u, i, _)| (u.as_str(), *i)).collect();
        for &i in &first {
            let key = (acks[i].user_id.as_str(), acks[i].item_id);
            if applied.contains(&key) {
                results[i] = Some(AckResult::Acked {
                    message_id: message_ids.get(&(key.0.to_string(), key.1)).copied(),
                });
            }
        }
        // Everything else (stale, repeated, conflicting, cancelled, unknown) is rare: judged one
        // by one with the single-ack rules.
        for (i, r) in results.iter_mut().enumerate() {
            if r.is_none() {
                *r = Some(ack_in(&mut tx, &acks[i], now).await?);
            }
        }
        // A failed or skipped send leaves a hole in the user's plan (an opportunity open again
        // without an item, a cap slot free): their plan is out of date. A sent one was planned.
        let replan: Vec<&str> = acks
            .iter()
            .zip(&results)
            .filter(|(a, r)| {
                a.status != tern_core::AckStatus::Sent && matches!(r, Some(AckResult::Acked { .. }))
            })
            .map(|(a, _)| a.user_id.as_str())
            .collect();
        crate::sweeps::enqueue(&mut tx, &replan, "ack").await?;
        tx.commit().await?;
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(AckResult::NotFound))
            .collect())
    }

    /// Extends a lease that is still held. Returns the new expiry, or `None` when the token is
    /// stale or the lease has already expired (the caller must not send then).
    pub async fn extend_lease(
        &self,
        user_id: &str,
        item_id: i64,
        lease_token: Uuid,
        lease_for: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        if lease_for <= TimeDelta::zero() {
            return Err(InvalidInput::new("the lease duration must be positive").into());
        }
        Ok(sqlx::query_scalar(EXTEND_LEASE)
            .bind(user_id)
            .bind(item_id)
            .bind(lease_token)
            .bind(now + lease_for)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// One ack, first: its item, locked.
pub(crate) const LOCK_ITEM: &str =
    "SELECT state, lease_token, lease_expires_at FROM schedule_items \
     WHERE user_id = $1 AND item_id = $2 FOR UPDATE";

/// One ack, applied.
pub(crate) const APPLY_ACK: &str = "UPDATE schedule_items SET state = $3, updated_at = $4 \
     WHERE user_id = $1 AND item_id = $2";

/// One ack inside the caller's transaction: lock the item, judge the token and the state, apply.
async fn ack_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ack: &Ack,
    now: DateTime<Utc>,
) -> Result<AckResult> {
    let Some(row) = sqlx::query(LOCK_ITEM)
        .bind(&ack.user_id)
        .bind(ack.item_id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(AckResult::NotFound);
    };
    let state: ItemState = row.try_get::<String, _>(0)?.parse()?;
    let token: Option<Uuid> = row.try_get(1)?;
    let expires: Option<DateTime<Utc>> = row.try_get(2)?;
    if token != Some(ack.lease_token) {
        return Ok(AckResult::Stale);
    }
    let target = ack.status.item_state();
    let result = match state {
        ItemState::Leased if expires.is_some_and(|e| e > now) => {
            sqlx::query(APPLY_ACK)
                .bind(&ack.user_id)
                .bind(ack.item_id)
                .bind(target.as_str())
                .bind(now)
                .execute(&mut **tx)
                .await?;
            let item = [(ack.user_id.as_str(), ack.item_id)];
            let message_id = match ack.status {
                AckStatus::Sent => record_sent(tx, &item, now).await?.into_values().next(),
                AckStatus::Skipped => {
                    close_skipped(tx, &item).await?;
                    None
                }
                AckStatus::Failed => None,
            };
            AckResult::Acked { message_id }
        }
        ItemState::Leased => AckResult::Stale,
        ItemState::Cancelled => AckResult::Cancelled,
        s if s == target => AckResult::AlreadyAcked {
            message_id: message_of(tx, &ack.user_id, ack.item_id).await?,
        },
        ItemState::Sent | ItemState::Failed | ItemState::Skipped => {
            AckResult::Conflict { current: state }
        }
        _ => AckResult::Stale,
    };
    Ok(result)
}
/// The messages of `sent` acks, one per item: see [`record_sent`].
pub(crate) const RECORD_SENT: &str =
    "INSERT INTO messages (user_id, opportunity_id, item_id, channel, category, priority, \
       template, sent_at, plan_id, policy_version, model_version, experiment, arm, \
       propensity, scores) \
     SELECT s.user_id, s.opportunity_id, s.item_id, s.channel, o.category, o.priority, \
       o.template, $3, s.plan_id, p.policy_version, p.model_version, s.experiment, s.arm, \
       s.propensity, s.scores \
     FROM unnest($1::text[], $2::bigint[]) AS x(u, i) \
     JOIN schedule_items s ON s.user_id = x.u AND s.item_id = x.i \
     JOIN opportunities o ON o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
     JOIN plans p ON p.plan_id = s.plan_id \
     ORDER BY s.user_id, s.item_id \
     RETURNING user_id, item_id, message_id";

/// The opportunities of `sent` acks, closed: see [`record_sent`].
pub(crate) const CLOSE_SENT: &str = "UPDATE opportunities o SET state = 'sent' \
     FROM unnest($1::text[], $2::bigint[]) AS x(u, i) \
     JOIN schedule_items s ON s.user_id = x.u AND s.item_id = x.i \
     WHERE o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id";

/// Records the messages of `sent` acks (one per item, copying what the decision was based on:
/// plan, policy and model versions, arm, propensity, scores) and closes their opportunities.
/// Returns each item's message id. The unique key on `(user_id, item_id)` makes a second message
/// for the same item impossible.
async fn record_sent(
    tx: &mut sqlx::PgConnection,
    items: &[(&str, i64)],
    now: DateTime<Utc>,
) -> Result<HashMap<(String, i64), i64>> {
    if items.is_empty() {
        return Ok(HashMap::new());
    }
    let users: Vec<&str> = items.iter().map(|(u, _)| *u).collect();
    let ids: Vec<i64> = items.iter().map(|(_, i)| *i).collect();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(RECORD_SENT)
        .bind(&users)
        .bind(&ids)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
    sqlx::query(CLOSE_SENT)
        .bind(&users)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    Ok(rows.into_iter().map(|(u, i, m)| ((u, i), m)).collect())
}

/// The opportunities of `skipped` acks, closed: see [`close_skipped`].
pub(crate) const CLOSE_SKIPPED: &str = "UPDATE opportunities o SET state = 'cancelled' \
     FROM unnest($1::text[], $2::bigint[]) AS x(u, i) \
     JOIN schedule_items s ON s.user_id = x.u AND s.item_id = x.i \
     WHERE o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
       AND o.state = 'open'";

/// Closes the opportunities of `skipped` acks: the sender decided this message should not go out
/// (its content went stale, its own rules said no), so no later plan offers it again, on this
/// channel or another. A `failed` ack, by contrast, leaves the opportunity open for a retry.
async fn close_skipped(tx: &mut sqlx::PgConnection, items: &[(&str, i64)]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = items.iter().map(|(u, _)| *u).collect();
    let ids: Vec<i64> = items.iter().map(|(_, i)| *i).collect();
    sqlx::query(CLOSE_SKIPPED)
        .bind(&users)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The message a `sent` item became (an ack repeated).
pub(crate) const MESSAGE_OF: &str =
    "SELECT message_id FROM messages WHERE user_id = $1 AND item_id = $2";

async fn message_of(
    tx: &mut sqlx::PgConnection,
    user_id: &str,
    item_id: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(MESSAGE_OF)
        .bind(user_id)
        .bind(item_id)
        .fetch_optional(&mut *tx)
        .await?)
}
