//! Opportunities: batch ingest, loading the open ones, expiry.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::Row;
use tern_core::{NewOpportunity, Opportunity, OpportunityId, OpportunityState};

use crate::{Result, Store};

/// What happened to one row of an ingested batch, in the batch's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowStatus {
    /// Stored under this id.
    New(OpportunityId),
    /// An opportunity with the same `(user_id, dedupe_key)` already exists (or came earlier in the
    /// same batch); nothing was changed.
    Duplicate,
    /// Malformed; nothing was stored. The reason is meant for the submitter.
    Rejected(String),
}

/// The outcome of [`Store::ingest_opportunities`], one status per submitted row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub rows: Vec<RowStatus>,
}

impl IngestReport {
    pub fn new_count(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r, RowStatus::New(_)))
            .count()
    }

    pub fn duplicate_count(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r, RowStatus::Duplicate))
            .count()
    }

    pub fn rejected_count(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r, RowStatus::Rejected(_)))
            .count()
    }
}

/// The batch as columns, which is how it travels to PostgreSQL: one statement binds ten arrays and
/// `unnest`s them, instead of ten parameters per row.
#[derive(Default)]
struct Columns {
    user_id: Vec<String>,
    dedupe_key: Vec<String>,
    source: Vec<String>,
    template: Vec<String>,
    category: Vec<String>,
    priority: Vec<String>,
    /// Comma-joined: `unnest` flattens a two-dimensional array, so channel lists travel as text
    /// (channel names cannot contain commas, see `tern_core::validate_name`).
    channels: Vec<String>,
    signals: Vec<serde_json::Value>,
    payload: Vec<serde_json::Value>,
    created_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
}

impl Columns {
    fn push(&mut self, o: &NewOpportunity) {
        self.user_id.push(o.user_id.clone());
        self.dedupe_key.push(o.dedupe_key.clone());
        self.source.push(o.source.clone());
        self.template.push(o.template.clone());
        self.category.push(o.category.clone());
        self.priority.push(o.priority.clone());
        self.channels.push(o.channels.join(","));
        self.signals.push(serde_json::Value::Object(
            o.signals
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect(),
        ));
        self.payload.push(payload_json(&o.payload));
        self.created_at.push(o.created_at);
        self.expires_at.push(o.expires_at);
    }
}

/// A payload as the `jsonb` object it is stored as.
pub(crate) fn payload_json(p: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        p.iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect(),
    )
}

/// A stored payload back as a map; entries that are not strings (none are written) are left out.
pub(crate) fn payload_map(v: serde_json::Value) -> BTreeMap<String, String> {
    match v {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The batch insert (its users queued for an incremental replan in the same statement), with
/// `$filter` and `$conflict` deciding what happens to keys that exist
/// already: see `insert_batch`. Rows are inserted in the batch's order (`ORDER BY x.n`), so ids
/// follow the input whatever join the anti-join becomes: the same submissions number the same
/// opportunities the same way.
macro_rules! insert_batch {
    ($filter:literal, $conflict:literal) => {
        concat!(
            "WITH ins AS (INSERT INTO opportunities (user_id, dedupe_key, source, template, \
               category, priority, channels, signals, payload, created_at, expires_at) \
             SELECT u, d, s, t, c, p, string_to_array(ch, ','), sg, pl, ca, ea \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::jsonb[], $9::jsonb[], $10::timestamptz[], \
                         $11::timestamptz[]) WITH ORDINALITY \
                  AS x(u, d, s, t, c, p, ch, sg, pl, ca, ea, n) ",
            $filter,
            " ORDER BY x.n ",
            $conflict,
            " RETURNING user_id, dedupe_key, opportunity_id), \
             queued AS (INSERT INTO replan_queue (user_id, due_at, reason) \
               SELECT DISTINCT user_id, '-infinity'::timestamptz, 'opportunity' FROM ins \
               ORDER BY user_id) \
             SELECT user_id, dedupe_key, opportunity_id FROM ins"
        )
    };
}

/// Ingest's fast path: only keys that do not exist yet (see `insert_batch`).
pub(crate) const INSERT_NEW_KEYS: &str = insert_batch!(
    "WHERE NOT EXISTS (SELECT 1 FROM opportunities o WHERE o.user_id = x.u AND o.dedupe_key = x.d)",
    ""
);
/// Ingest after a race on a key: `ON CONFLICT DO NOTHING` (see `insert_batch`).
pub(crate) const INSERT_ON_CONFLICT: &str =
    insert_batch!("", "ON CONFLICT (user_id, dedupe_key) DO NOTHING");

/// PostgreSQL's unique_violation.
const UNIQUE_VIOLATION: &str = "23505";

const SELECT_COLUMNS: &str = "opportunity_id, user_id, dedupe_key, source, template, category, \
     priority, channels, signals, payload, created_at, expires_at, state";

impl Store {
    /// Stores a batch of opportunities in one statement. Idempotent on `(user_id, dedupe_key)`:
    /// rows that exist already are reported as [`RowStatus::Duplicate`] and left untouched, so
    /// an upstream system may resubmit a batch after a timeout without creating anything twice.
    /// Malformed rows are rejected individually; the rest of the batch is stored.
    pub async fn ingest_opportunities(&self, batch: &[NewOpportunity]) -> Result<IngestReport> {
        let mut rows: Vec<Option<RowStatus>> = vec![None; batch.len()];
        // The first occurrence of each key in the batch, by key.
        let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
        for (i, o) in batch.iter().enumerate() {
            if let Err(e) = o.validate() {
                rows[i] = Some(RowStatus::Rejected(e.0));
            } else {
                // Iterating in order, the first occurrence claims the key; later copies are
                // duplicates of it.
                let key = (o.user_id.as_str(), o.dedupe_key.as_str());
                match first.entry(key) {
                    Entry::Occupied(_) => rows[i] = Some(RowStatus::Duplicate),
                    Entry::Vacant(slot) => {
                        slot.insert(i);
                    }
                }
            }
        }

        // Sorted by key, so that concurrent batches lock index entries in the same order.
        let mut order: Vec<usize> = first.values().copied().collect();
        order.sort_unstable_by(|&a, &b| {
            (&batch[a].user_id, &batch[a].dedupe_key)
                .cmp(&(&batch[b].user_id, &batch[b].dedupe_key))
        });
        let mut cols = Columns::default();
        for &i in &order {
            cols.push(&batch[i]);
        }

        if !order.is_empty() {
            let inserted = insert_batch(&self.pool, &cols).await?;
            for row in inserted {
                let user: String = row.try_get(0)?;
                let key: String = row.try_get(1)?;
                let id: i64 = row.try_get(2)?;
                if let Some(&i) = first.get(&(user.as_str(), key.as_str())) {
                    rows[i] = Some(RowStatus::New(id));
                }
            }
        }
        Ok(IngestReport {
            rows: rows
                .into_iter()
                .map(|r| r.unwrap_or(RowStatus::Duplicate))
                .collect(),
        })
    }

    /// The naive path: one `INSERT` statement (and one commit) per row. It exists only as the
    /// baseline that `tern bench ingest` measures [`Store::ingest_opportunities`] against.
    pub async fn ingest_opportunities_one_by_one(
        &self,
        batch: &[NewOpportunity],
    ) -> Result<IngestReport> {
        let mut rows = Vec::with_capacity(batch.len());
        for o in batch {
            if let Err(e) = o.validate() {
                rows.push(RowStatus::Rejected(e.0));
                continue;
            }
            let mut cols = Columns::default();
            cols.push(o);
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO opportunities (user_id, dedupe_key, source, template, category, priority, \
                 channels, signals, payload, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, string_to_array($7, ','), $8, $9, $10, $11) \
                 ON CONFLICT (user_id, dedupe_key) DO NOTHING RETURNING opportunity_id",
            )
            .bind(&cols.user_id[0])
            .bind(&cols.dedupe_key[0])
            .bind(&cols.source[0])
            .bind(&cols.template[0])
            .bind(&cols.category[0])
            .bind(&cols.priority[0])
            .bind(&cols.channels[0])
            .bind(&cols.signals[0])
            .bind(&cols.payload[0])
            .bind(cols.created_at[0])
            .bind(cols.expires_at[0])
            .fetch_optional(&self.pool)
            .await?;
            rows.push(id.map_or(RowStatus::Duplicate, RowStatus::New));
        }
        Ok(IngestReport { rows })
    }

    /// The open, unexpired opportunities of the given users, ordered by user and id: what a replan
    /// considers.
    pub async fn open_opportunities(
        &self,
        users: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Opportunity>> {
        let rows = sqlx::query(&format!(
            "SELECT {SELECT_COLUMNS} FROM opportunities \
             WHERE user_id = ANY($1) AND state = 'open' AND expires_at > $2 \
             ORDER BY user_id, opportunity_id"
        ))
        .bind(users)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(opportunity_from_row).collect()
    }

    /// One opportunity by key, in any state.
    pub async fn opportunity(
        &self,
        user_id: &str,
        id: OpportunityId,
    ) -> Result<Option<Opportunity>> {
        let row = sqlx::query(&format!(
            "SELECT {SELECT_COLUMNS} FROM opportunities WHERE user_id = $1 AND opportunity_id = $2"
        ))
        .bind(user_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(opportunity_from_row).transpose()
    }

    /// Marks open opportunities whose expiry has passed as expired, and retires the schedule
    /// items that can no longer be sent: pending (and counterfactual) ones past their window or
    /// opportunity, and leased ones whose lease has also run out. Returns how many opportunities expired.
    pub async fn expire(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let expired = sqlx::query(
            "UPDATE opportunities SET state = 'expired' WHERE state = 'open' AND expires_at <= $1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE schedule_items s SET state = 'expired', updated_at = $1 \
             FROM opportunities o \
             WHERE o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
               AND (s.state IN ('pending', 'counterfactual') \
                    OR (s.state = 'leased' AND s.lease_expires_at <= $1)) \
               AND (s.send_before <= $1 OR o.state <> 'open')",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(expired)
    }
}

/// Inserts the rows whose key is new. The fast path filters existing keys with an anti-join and
/// inserts plainly, which costs about 20% less than `ON CONFLICT` (no speculative insertion). If
/// another connection inserts one of the same keys between the anti-join and the insert, the
/// statement fails with a unique violation and nothing is written; the batch is then retried with
/// `ON CONFLICT DO NOTHING`, which waits for the other transaction and skips its rows.
async fn insert_batch(pool: &sqlx::PgPool, cols: &Columns) -> Result<Vec<sqlx::postgres::PgRow>> {
    let run = |sql: &'static str| async move {
        sqlx::query(sql)
            .bind(&cols.user_id)
            .bind(&cols.dedupe_key)
            .bind(&cols.source)
            .bind(&cols.template)
            .bind(&cols.category)
            .bind(&cols.priority)
            .bind(&cols.channels)
            .bind(&cols.signals)
            .bind(&cols.payload)
            .bind(&cols.created_at)
            .bind(&cols.expires_at)
            .fetch_all(pool)
            .await
    };
    match run(INSERT_NEW_KEYS).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            Ok(run(INSERT_ON_CONFLICT).await?)
        }
        other => Ok(other?),
    }
}

fn opportunity_from_row(row: &sqlx::postgres::PgRow) -> Result<Opportunity> {
    let signals: serde_json::Value = row.try_get("signals")?;
    let state: String = row.try_get("state")?;
    Ok(Opportunity {
        id: row.try_get("opportunity_id")?,
        new: NewOpportunity {
            user_id: row.try_get("user_id")?,
            dedupe_key: row.try_get("dedupe_key")?,
            source: row.try_get("source")?,
            template: row.try_get("template")?,
            category: row.try_get("category")?,
            priority: row.try_get("priority")?,
            channels: row.try_get("channels")?,
            signals: signals
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default(),
            payload: payload_map(row.try_get("payload")?),
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
        },
        state: state.parse::<OpportunityState>()?,
    })
}
