//! What a replan reads, what operators ask about plans and schedules, and the lock that lets
//! only one replica plan at a time.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::{Postgres, Row, Transaction};
use tern_core::OpportunityId;

use crate::{Result, Store};

/// One user as a replan needs them: preferences, recent history and open opportunities.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanningUser {
    pub user_id: String,
    /// `UTC` when no user row exists.
    pub timezone: String,
    pub opted_out_channels: Vec<String>,
    pub unreachable_channels: Vec<String>,
    pub opted_out_categories: Vec<String>,
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Active days since the start of the history window, ascending.
    pub active_days: Vec<NaiveDate>,
    /// Messages sent inside the history window, items leased now (counted as sent at their
    /// send time), and a holdout user's withheld items (counted as sent when their window
    /// opened; [`Store::settle_counterfactuals`] withholds the due ones before a plan reads
    /// this): the policy's caps then shape what it would send a holdout user as they would if
    /// it were sending. (Such sends never have an open, which the fatigue features read as
    /// ignored messages.)
    pub history: Vec<PastSend>,
    pub opportunities: Vec<OpenOpportunity>,
    /// Opportunities created for the user in the [`ARRIVALS_WINDOW`] before the plan, in any
    /// state, counted per kind (category and channels): how fast candidates arrive, which
    /// pacing reads.
    pub arrivals: Vec<Arrivals>,
}

/// How far back [`PlanningUser::arrivals`] counts.
pub const ARRIVALS_WINDOW: TimeDelta = TimeDelta::days(7);

/// Opportunities of one kind created within [`ARRIVALS_WINDOW`].
#[derive(Debug, Clone, PartialEq)]
pub struct Arrivals {
    pub category: String,
    pub channels: Vec<String>,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PastSend {
    pub channel: String,
    pub category: String,
    pub priority: String,
    pub sent_at: DateTime<Utc>,
    /// When it was first opened or clicked; `None` for leased items and unopened messages.
    pub opened_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenOpportunity {
    pub opportunity_id: OpportunityId,
    pub template: String,
    pub category: String,
    pub priority: String,
    pub channels: Vec<String>,
    pub signals: BTreeMap<String, f64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A published plan, as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRecord {
    pub plan_id: i64,
    pub trigger: String,
    pub policy_version: String,
    pub model_version: Option<String>,
    pub started_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub stats: crate::PlanStats,
}

/// One schedule item of a user, for support tooling.
#[derive(Debug, Clone, PartialEq)]
pub struct UserScheduleItem {
    pub item_id: i64,
    pub opportunity_id: OpportunityId,
    pub plan_id: i64,
    pub channel: String,
    pub template: String,
    pub state: String,
    pub send_after: DateTime<Utc>,
    pub send_before: DateTime<Utc>,
    pub value: f64,
    pub propensity: f64,
    /// The opportunity's template parameters.
    pub payload: BTreeMap<String, String>,
    pub dedupe_key: String,
}

/// Held while a replan runs: a transaction-scoped advisory lock, released when this is dropped
/// (rolled back) or when the holder's connection dies, so a killed replica never blocks the
/// others.
pub struct ReplanLock {
    _tx: Transaction<'static, Postgres>,
}

/// The open opportunities a plan considers: unexpired, and without an item that a delivery
/// service holds or has sent. `state = 'open'` matches the partial bucket index, so a read never
/// scans the closed opportunities that history accumulates.
macro_rules! open_opportunities {
    ($filter:literal) => {
        concat!(
            "SELECT o.user_id, o.opportunity_id, o.template, o.category, o.priority, o.channels, \
            o.signals, o.created_at, o.expires_at \
     FROM opportunities o \
     WHERE o.state = 'open' AND o.expires_at > $1 ",
            not_in_flight!(),
            $filter,
            "ORDER BY o.user_id, o.opportunity_id"
        )
    };
}

/// The condition that opportunity `o` has no item a delivery service holds or has sent.
macro_rules! not_in_flight {
    () => {
        "AND NOT EXISTS (SELECT 1 FROM schedule_items s \
                         WHERE s.user_id = o.user_id AND s.opportunity_id = o.opportunity_id \
                           AND s.state IN ('leased', 'sent')) "
    };
}

/// The head of a read of named users one by one: each distinct id of the array parameter
/// `$param` as `u.id`, joined to the `LATERAL (...)` subquery that follows, which ends with
/// `OFFSET 0` so that PostgreSQL keeps it a probe per user rather than turning it into a scan
/// of the table filtered against the whole list.
macro_rules! each_named_user {
    ($param:literal) => {
        concat!(
            "FROM (SELECT DISTINCT id FROM unnest(",
            $param,
            "::text[]) AS x(id)) AS u CROSS JOIN LATERAL ( "
        )
    };
}

/// A replan of named users: their open opportunities, looked up user by user through the
/// primary key. Written as `user_id = ANY($2)`, PostgreSQL matched the array against the *second*
/// column of the open-opportunity bucket index and read that whole index, dead entries of every
/// opportunity that ever left `open` included: 2.4 s and 335,352 buffers for 5,613 opportunities
/// on the tenth simulated day of the demo, growing with every day of history. `OFFSET 0` keeps the lateral
/// subquery a probe per user rather than a join PostgreSQL may turn into that scan again. The
/// bucket equality lets the probe use the open opportunities' partial bucket index: through the
/// primary key it fetched every opportunity the user ever had (13 heap rows per open one on
/// day 7 of the demo) only to drop the closed ones.
pub(crate) const OPEN_OPPORTUNITIES_OF_USERS: &str = concat!(
    "SELECT o.user_id, o.opportunity_id, o.template, o.category, o.priority, o.channels, \
            o.signals, o.created_at, o.expires_at \
     ",
    each_named_user!("$2"),
    "SELECT o.* FROM opportunities o \
       WHERE (hashtext(o.user_id) & 4095) = (hashtext(u.id) & 4095) AND o.user_id = u.id \
         AND o.state = 'open' AND o.expires_at > $1 ",
    not_in_flight!(),
    "OFFSET 0) AS o \
     ORDER BY o.user_id, o.opportunity_id"
);

/// A page of a sweep: the open opportunities of the users in a range of buckets (see
/// [`crate::BUCKETS`]), found through the open opportunities' bucket index.
pub(crate) const OPEN_OPPORTUNITIES_IN_BUCKETS: &str = open_opportunities!(
    "AND (hashtext(o.user_id) & 4095) >= $2 AND (hashtext(o.user_id) & 4095) < $3 "
);

/// What a plan reads about its users (`$1`), besides their opportunities: preferences and
/// channels.
pub(crate) const USERS_OF: &str =
    "SELECT u.user_id, u.timezone, u.opted_out_categories, u.created_at, \
            array(SELECT c.channel::text FROM user_channels c \
                  WHERE c.user_id = u.user_id AND c.opted_out ORDER BY c.channel) AS opted_out, \
            array(SELECT c.channel::text FROM user_channels c \
                  WHERE c.user_id = u.user_id AND NOT c.reachable ORDER BY c.channel) AS unreachable \
     FROM users u WHERE u.user_id = ANY($1)";

/// The users' (`$1`) sends in the history window `[$2, $3]`: messages with their first open,
/// items leased now, a holdout user's withheld items. The messages are read user by user
/// (`OFFSET 0` keeps the lateral subquery a probe through `messages_user_sent_at`): filtered
/// with `user_id = ANY($1)`, PostgreSQL sequentially scanned every message in the window and
/// compared each with the whole list (48 ms of 62 for 1,400 users on day 7 of the demo, and
/// growing with history).
pub(crate) const HISTORY_OF: &str = concat!(
    "SELECT m.user_id, m.channel, m.category, m.priority, m.sent_at, \
            (SELECT min(x.occurred_at) FROM outcomes x \
             WHERE x.user_id = m.user_id AND x.message_id = m.message_id \
               AND x.kind IN ('opened', 'clicked') AND x.occurred_at <= $3) AS opened_at ",
    each_named_user!("$1"),
    "SELECT m.* FROM messages m \
       WHERE m.user_id = u.id AND m.sent_at >= $2 AND m.sent_at <= $3 OFFSET 0) AS m \
     UNION ALL \
     SELECT s.user_id, s.channel, o.category, o.priority, s.send_after, NULL \
     FROM schedule_items s \
     JOIN opportunities o ON o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
     WHERE s.user_id = ANY($1) AND s.state = 'leased' \
     UNION ALL \
     SELECT s.user_id, s.channel, o.category, o.priority, s.send_after, NULL \
     FROM schedule_items s \
     JOIN opportunities o ON o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
     WHERE s.user_id = ANY($1) AND s.state = 'withheld' \
       AND s.send_after >= $2 AND s.send_after <= $3"
);

/// The users' (`$1`) active days in `[$2, $3]`.
pub(crate) const ACTIVITY_OF: &str =
    "SELECT user_id, array_agg(day ORDER BY day) AS days FROM user_activity \
     WHERE user_id = ANY($1) AND day >= $2 AND day <= $3 GROUP BY user_id";

/// The users' (`$1`) opportunities created in `($2, $3]`, counted per kind, user by user
/// through `opportunities_user_created` (an index-only scan once vacuumed). Filtered with
/// `user_id = ANY($1)`, this was a parallel sequential scan of every opportunity ever
/// submitted (92 ms for 1,400 users on day 7 of the demo).
pub(crate) const ARRIVALS_OF: &str = concat!(
    "SELECT a.user_id, a.category, a.channels, count(*) AS n ",
    each_named_user!("$1"),
    "SELECT o.user_id, o.category, o.channels FROM opportunities o \
       WHERE o.user_id = u.id AND o.created_at > $2 AND o.created_at <= $3 OFFSET 0) AS a \
     GROUP BY a.user_id, a.category, a.channels ORDER BY a.user_id, a.category, a.channels"
);

/// The advisory lock key of replans: "tern" and a 1.
const REPLAN_LOCK: i64 = 0x7465_726e_0000_0001;

impl Store {
    /// Takes the replan lock, waiting for a replan in progress elsewhere to finish.
    pub async fn lock_replans(&self) -> Result<ReplanLock> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(REPLAN_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(ReplanLock { _tx: tx })
    }

    /// Takes the replan lock shared, as a page of a sweep does while it is read, planned and
    /// published: pages of one sweep run side by side on several replicas, and a plan of named
    /// users (which takes the lock exclusively) runs between pages, never across one, so no page
    /// publishes what it read before such a plan replaced the same users' schedules.
    pub async fn lock_replans_shared(&self) -> Result<ReplanLock> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(REPLAN_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(ReplanLock { _tx: tx })
    }

    /// Takes the replan lock if nobody holds it; `None` when another replan is running.
    pub async fn try_lock_replans(&self) -> Result<Option<ReplanLock>> {
        let mut tx = self.pool.begin().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(REPLAN_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        Ok(got.then_some(ReplanLock { _tx: tx }))
    }

    /// Everything a replan at `now` needs about the users who have open opportunities (only
    /// `users`, when given): opportunities that are open, unexpired and not already leased or
    /// sent; preferences; messages sent since `now - history` and items leased now; active days.
    pub async fn planning_input(
        &self,
        now: DateTime<Utc>,
        history: TimeDelta,
        users: Option<&[String]>,
    ) -> Result<Vec<PlanningUser>> {
        let rows = match users {
            Some(users) => {
                sqlx::query(OPEN_OPPORTUNITIES_OF_USERS)
                    .bind(now)
                    .bind(users)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(open_opportunities!(""))
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        self.planning_users(rows, now, history).await
    }

    /// What [`Store::planning_input`] reads, for the users in buckets `[from, to)` (see
    /// [`crate::BUCKETS`]): one page of a sweep, found through the open opportunities' bucket
    /// index rather than a list of ids.
    pub async fn planning_input_buckets(
        &self,
        now: DateTime<Utc>,
        history: TimeDelta,
        buckets: std::ops::Range<i32>,
    ) -> Result<Vec<PlanningUser>> {
        let rows = sqlx::query(OPEN_OPPORTUNITIES_IN_BUCKETS)
            .bind(now)
            .bind(buckets.start)
            .bind(buckets.end)
            .fetch_all(&self.pool)
            .await?;
        self.planning_users(rows, now, history).await
    }

    /// The users of `rows` (open opportunities, ordered by user) with everything else a plan
    /// reads about them.
    async fn planning_users(
        &self,
        rows: Vec<sqlx::postgres::PgRow>,
        now: DateTime<Utc>,
        history: TimeDelta,
    ) -> Result<Vec<PlanningUser>> {
        let mut out: Vec<PlanningUser> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for row in &rows {
            let user_id: String = row.try_get("user_id")?;
            let at = *index.entry(user_id.clone()).or_insert_with(|| {
                out.push(PlanningUser {
                    user_id,
                    timezone: "UTC".into(),
                    opted_out_channels: Vec::new(),
                    unreachable_channels: Vec::new(),
                    opted_out_categories: Vec::new(),
                    first_seen_at: None,
                    active_days: Vec::new(),
                    history: Vec::new(),
                    opportunities: Vec::new(),
                    arrivals: Vec::new(),
                });
                out.len() - 1
            });
            let signals: serde_json::Value = row.try_get("signals")?;
            out[at].opportunities.push(OpenOpportunity {
                opportunity_id: row.try_get("opportunity_id")?,
                template: row.try_get("template")?,
                category: row.try_get("category")?,
                priority: row.try_get("priority")?,
                channels: row.try_get("channels")?,
                signals: numbers(signals),
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        let ids: Vec<String> = out.iter().map(|u| u.user_id.clone()).collect();

        for row in sqlx::query(USERS_OF)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?
        {
            let user_id: &str = row.try_get("user_id")?;
            if let Some(&at) = index.get(user_id) {
                let u = &mut out[at];
                u.timezone = row.try_get("timezone")?;
                u.opted_out_categories = row.try_get("opted_out_categories")?;
                u.first_seen_at = row.try_get("created_at")?;
                u.opted_out_channels = row.try_get("opted_out")?;
                u.unreachable_channels = row.try_get("unreachable")?;
            }
        }

        for row in sqlx::query(HISTORY_OF)
            .bind(&ids)
            .bind(now - history)
            .bind(now)
            .fetch_all(&self.pool)
            .await?
        {
            let user_id: &str = row.try_get("user_id")?;
            if let Some(&at) = index.get(user_id) {
                out[at].history.push(PastSend {
                    channel: row.try_get("channel")?,
                    category: row.try_get("category")?,
                    priority: row.try_get("priority")?,
                    sent_at: row.try_get("sent_at")?,
                    opened_at: row.try_get("opened_at")?,
                });
            }
        }

        for row in sqlx::query(ACTIVITY_OF)
            .bind(&ids)
            .bind((now - history).date_naive())
            .bind(now.date_naive())
            .fetch_all(&self.pool)
            .await?
        {
            let user_id: &str = row.try_get("user_id")?;
            if let Some(&at) = index.get(user_id) {
                out[at].active_days = row.try_get("days")?;
            }
        }

        for row in sqlx::query(ARRIVALS_OF)
            .bind(&ids)
            .bind(now - ARRIVALS_WINDOW)
            .bind(now)
            .fetch_all(&self.pool)
            .await?
        {
            let user_id: &str = row.try_get("user_id")?;
            if let Some(&at) = index.get(user_id) {
                out[at].arrivals.push(Arrivals {
                    category: row.try_get("category")?,
                    channels: row.try_get("channels")?,
                    count: row.try_get("n")?,
                });
            }
        }
        Ok(out)
    }

    /// The most recent plans, newest first.
    pub async fn recent_plans(&self, limit: i64) -> Result<Vec<PlanRecord>> {
        let rows = sqlx::query(
            "SELECT plan_id, trigger, policy_version, model_version, started_at, published_at, stats \
             FROM plans WHERE state = 'published' ORDER BY plan_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PlanRecord {
                    plan_id: r.try_get("plan_id")?,
                    trigger: r.try_get("trigger")?,
                    policy_version: r.try_get("policy_version")?,
                    model_version: r.try_get("model_version")?,
                    started_at: r.try_get("started_at")?,
                    published_at: r.try_get("published_at")?,
                    // Stats written by another version may lack a field: it reads as 0.
                    stats: serde_json::from_value(r.try_get("stats")?).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// A user's schedule items, newest first (at most `limit`).
    pub async fn user_schedule(&self, user_id: &str, limit: i64) -> Result<Vec<UserScheduleItem>> {
        let rows = sqlx::query(
            "SELECT s.item_id, s.opportunity_id, s.plan_id, s.channel, o.template, s.state, \
                    s.send_after, s.send_before, s.value, s.propensity, o.payload, o.dedupe_key \
             FROM schedule_items s \
             JOIN opportunities o ON o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id \
             WHERE s.user_id = $1 ORDER BY s.item_id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserScheduleItem {
                    item_id: r.try_get("item_id")?,
                    opportunity_id: r.try_get("opportunity_id")?,
                    plan_id: r.try_get("plan_id")?,
                    channel: r.try_get("channel")?,
                    template: r.try_get("template")?,
                    state: r.try_get("state")?,
                    send_after: r.try_get("send_after")?,
                    send_before: r.try_get("send_before")?,
                    value: r.try_get("value")?,
                    propensity: r.try_get("propensity")?,
                    payload: crate::opportunities::payload_map(r.try_get("payload")?),
                    dedupe_key: r.try_get("dedupe_key")?,
                })
            })
            .collect()
    }
}

/// The numeric entries of a JSON object (value signals); anything else is left out.
pub(crate) fn numbers(v: serde_json::Value) -> BTreeMap<String, f64> {
    match v {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter_map(|(k, v)| v.as_f64().map(|v| (k, v)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

impl Store {
    /// Claims the cron job `job` (a Replan's name, `generator/NAME` or `train`) for its firing
    /// at `scheduled_for`. True for exactly one caller per firing, across every replica.
    pub async fn claim_cron_run(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let claimed = sqlx::query(
            "INSERT INTO cron_runs (job, scheduled_for, claimed_by, claimed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(job)
        .bind(scheduled_for)
        .bind(holder)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// Records the plan a claimed replan run published.
    pub async fn finish_cron_run(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        plan_id: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE cron_runs SET plan_id = $3 WHERE job = $1 AND scheduled_for = $2")
            .bind(job)
            .bind(scheduled_for)
            .bind(plan_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The latest firing of `job` that any replica claimed.
    pub async fn last_cron_run(&self, job: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("SELECT max(scheduled_for) FROM cron_runs WHERE job = $1")
                .bind(job)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// What channel `$1`'s budget has used since `$2`: see [`Store::channel_usage`].
pub(crate) const CHANNEL_USAGE: &str =
    "SELECT (SELECT count(*) FROM messages WHERE channel = $1 AND sent_at >= $2) \
          + (SELECT count(*) FROM schedule_items \
             WHERE channel = $1 AND state = 'leased' AND lease_holder IS NOT NULL) \
          + CASE WHEN $3::text[] IS NULL THEN 0 ELSE \
              (SELECT count(*) FROM schedule_items WHERE channel = $1 AND state = 'pending') \
              - (SELECT count(*) FROM schedule_items \
                 WHERE user_id = ANY($3) AND state = 'pending' AND channel = $1) END";

impl Store {
    /// How much of a channel's budget is already used at `now`: messages sent on it since
    /// `since`, plus items leased on it now (they are about to be sent), plus, for a replan of
    /// only some users, the pending items of every other user (which that replan keeps):
    /// counted as all pending items less the replanned users' (an index probe per user), not
    /// as `user_id <> ALL(users)`, which compares every pending item with every replanned user.
    pub async fn channel_usage(
        &self,
        channel: &str,
        since: DateTime<Utc>,
        replanned_users: Option<&[String]>,
    ) -> Result<u64> {
        let used: i64 = sqlx::query_scalar(CHANNEL_USAGE)
            .bind(channel)
            .bind(since)
            .bind(replanned_users)
            .fetch_one(&self.pool)
            .await?;
        Ok(used.max(0) as u64)
    }
}
