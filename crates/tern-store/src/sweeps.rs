//! Replans at scale: sweeps planned page by page (and by several replicas at once), and the
//! replan queue that incremental replans read.
//!
//! A **sweep** is a full replan: one `plans` row (scope `sweep`, state `running` until its last
//! page is published) and its pages in `plan_pages`, each a range of user buckets
//! (`hashtext(user_id) & 4095`, [`BUCKETS`] of them). A replica claims a page under a lease,
//! plans it and publishes it with [`Store::publish_page`], which marks the page done in the same
//! transaction only while the lease is still its own: a page is published once, and a replica
//! that dies mid-page leaves a lease that expires for another to take over. A user's schedule is
//! replaced whole in their page's transaction, so a puller never sees half of a user's plan.
//!
//! The **replan queue** (`replan_queue`) holds users whose plan may be out of date: every write
//! that changes what a plan reads about a user appends a row in its own transaction, due at once;
//! a plan appends a row due later for a user it left opportunities unscheduled for (see
//! [`Replanned::revisits`]). An incremental replan plans the users with due rows and deletes
//! exactly the rows it read, so a change committed while it ran stays queued.

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;

use crate::plans::{NewPlan, NewScheduleItem, PlanStats, PublishedPlan, Supersede};
use crate::{Result, Store};

/// Users are split into this many buckets by `hashtext(user_id) & 4095`; a page is a range of
/// them.
pub const BUCKETS: i32 = 4096;

/// What a plan is of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// Named users: a manual replan of some users, an urgent plan.
    #[default]
    Users,
    /// The users in the replan queue.
    Incremental,
    /// Every user with open opportunities, page by page.
    Sweep,
}

impl Scope {
    /// The name stored in `plans.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Users => "users",
            Scope::Incremental => "incremental",
            Scope::Sweep => "sweep",
        }
    }
}

/// What a published plan does to the replan queue, in its own transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replanned {
    pub scope: Scope,
    /// The queue rows (user, seq) the plan read: deleted, since the plan saw what they stand for.
    pub seen: Vec<(String, i64)>,
    /// Every user the plan planned: their earlier revisits are dropped (this plan's replace them).
    pub users: Vec<String>,
    /// When to look at a user again although nothing about them changed: they were left with
    /// opportunities the plan did not schedule, and what kept them out (a cap window, the
    /// horizon) passes then.
    pub revisits: Vec<(String, DateTime<Utc>)>,
}

/// One queue row: a user whose plan may be out of date.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Queued {
    pub user_id: String,
    pub seq: i64,
    pub reason: String,
}

/// A sweep in progress, as a replica joining it needs it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunningSweep {
    pub plan_id: i64,
    pub trigger: String,
    pub policy_version: String,
    pub model_version: Option<String>,
    pub seed: i64,
    pub started_at: DateTime<Utc>,
    pub horizon_end: DateTime<Utc>,
}

/// A page claimed by one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageClaim {
    pub plan_id: i64,
    pub page: i32,
    pub buckets: Range<i32>,
    /// How many times it has been claimed, this claim included.
    pub claims: i32,
}

/// How a sweep's budget share is computed for a page: see [`Store::budget_share`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepProgress {
    pub pages: u32,
    pub done: u32,
    /// Items chosen per channel by the published pages.
    pub chosen: BTreeMap<String, u64>,
}

/// A page's stats as stored (`plan_pages.stats`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PageStats {
    pub users: u64,
    pub candidates: u64,
    pub chosen: BTreeMap<String, u64>,
    pub suppressed: BTreeMap<String, u64>,
    pub seconds: f64,
    pub holder: String,
}

/// An incremental replan: the queue rows due at `$1`, oldest first, at most `$2`, of any user.
pub(crate) const DUE_REPLANS: &str =
    "SELECT user_id, seq, reason FROM replan_queue WHERE due_at <= $1 \
     ORDER BY due_at, seq LIMIT $2";

/// A page's users (or a replan's named users, `$1`): their queue rows due at `$2`.
pub(crate) const QUEUED_FOR: &str = "SELECT user_id, seq, reason FROM replan_queue \
     WHERE user_id = ANY($1) AND due_at <= $2 ORDER BY user_id, seq";

/// A page's users: those in buckets `[$1, $2)` with open opportunities at `$3`.
pub(crate) const USERS_IN_BUCKETS: &str = "SELECT DISTINCT user_id FROM opportunities \
     WHERE state = 'open' AND (hashtext(user_id) & 4095) >= $1 \
       AND (hashtext(user_id) & 4095) < $2 AND expires_at > $3 \
     ORDER BY user_id";

impl Store {
    /// Starts a sweep of `pages` pages, unless one is running already (`None`). The pages split
    /// the buckets into equal ranges.
    pub async fn start_sweep(&self, plan: &NewPlan, pages: u32) -> Result<Option<i64>> {
        let pages = pages.clamp(1, BUCKETS as u32) as i32;
        let mut tx = self.pool.begin().await?;
        let plan_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO plans (trigger, policy_version, model_version, seed, started_at, \
             horizon_end, state, stats, scope) \
             VALUES ($1, $2, $3, $4, $5, $6, 'running', '{}', 'sweep') \
             ON CONFLICT ((true)) WHERE state = 'running' AND scope = 'sweep' DO NOTHING \
             RETURNING plan_id",
        )
        .bind(&plan.trigger)
        .bind(&plan.policy_version)
        .bind(&plan.model_version)
        .bind(plan.seed)
        .bind(plan.started_at)
        .bind(plan.horizon_end)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(plan_id) = plan_id else {
            return Ok(None);
        };
        let bounds: Vec<i32> = (0..=pages).map(|p| p * BUCKETS / pages).collect();
        sqlx::query(
            "INSERT INTO plan_pages (plan_id, page, bucket_from, bucket_to) \
             SELECT $1, p - 1, $2[p], $2[p + 1] FROM generate_series(1, $3) AS p",
        )
        .bind(plan_id)
        .bind(&bounds)
        .bind(pages)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(plan_id))
    }

    /// The sweep in progress, if any.
    pub async fn running_sweep(&self) -> Result<Option<RunningSweep>> {
        Ok(sqlx::query_as(
            "SELECT plan_id, trigger, policy_version, model_version, seed, started_at, \
                    horizon_end \
             FROM plans WHERE state = 'running' AND scope = 'sweep'",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Claims the next page of sweep `plan_id` nobody holds (never claimed, or its lease expired)
    /// for `lease`; `None` when every page is done or held.
    pub async fn claim_page(
        &self,
        plan_id: i64,
        holder: &str,
        now: DateTime<Utc>,
        lease: TimeDelta,
    ) -> Result<Option<PageClaim>> {
        let row = sqlx::query(
            "UPDATE plan_pages p SET state = 'running', holder = $2, lease_until = $4, \
                    claims = p.claims + 1 \
             WHERE (p.plan_id, p.page) = ( \
                 SELECT plan_id, page FROM plan_pages \
                 WHERE plan_id = $1 \
                   AND (state = 'todo' OR (state = 'running' AND lease_until <= $3)) \
                 ORDER BY page LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING page, bucket_from, bucket_to, claims",
        )
        .bind(plan_id)
        .bind(holder)
        .bind(now)
        .bind(now + lease)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PageClaim {
                plan_id,
                page: r.try_get("page")?,
                buckets: r.try_get("bucket_from")?..r.try_get("bucket_to")?,
                claims: r.try_get("claims")?,
            })
        })
        .transpose()
    }

    /// How far sweep `plan_id` has got: pages, pages done, and what the done pages chose.
    pub async fn sweep_progress(&self, plan_id: i64) -> Result<SweepProgress> {
        let rows: Vec<(String, Option<serde_json::Value>)> =
            sqlx::query_as("SELECT state, stats FROM plan_pages WHERE plan_id = $1")
                .bind(plan_id)
                .fetch_all(&self.pool)
                .await?;
        let mut progress = SweepProgress::default();
        for (state, stats) in rows {
            progress.pages += 1;
            if state == "done" {
                progress.done += 1;
                for (channel, n) in page_stats(stats).chosen {
                    *progress.chosen.entry(channel).or_default() += n;
                }
            }
        }
        Ok(progress)
    }

    /// Publishes one page of a sweep: supersedes the live items of `users` (the page's users),
    /// inserts `items` under the sweep's plan, keeps the replan queue, and marks the page done,
    /// all in one transaction, and only while this claim (`holder`, and no later claim since) still
    /// holds the page. `None`
    /// when it does not (the lease expired and another replica took the page): nothing is
    /// written.
    pub async fn publish_page(
        &self,
        claim: &PageClaim,
        holder: &str,
        items: &[NewScheduleItem],
        replanned: &Replanned,
        stats: &PageStats,
        now: DateTime<Utc>,
    ) -> Result<Option<PublishedPlan>> {
        crate::plans::check_items(items)?;
        let mut tx = self.pool.begin().await?;
        // The claim count tells this claim from a later one by the same holder name.
        let held: Option<(String, Option<String>, i32)> = sqlx::query_as(
            "SELECT state, holder, claims FROM plan_pages \
             WHERE plan_id = $1 AND page = $2 FOR UPDATE",
        )
        .bind(claim.plan_id)
        .bind(claim.page)
        .fetch_optional(&mut *tx)
        .await?;
        if held != Some(("running".into(), Some(holder.to_string()), claim.claims)) {
            return Ok(None);
        }
        let withheld = crate::plans::settle(&mut tx, now).await?;
        let supersede = Supersede::Users(replanned.users.clone());
        let (superseded, inserted) =
            crate::plans::write_items(&mut tx, claim.plan_id, items, &supersede, now).await?;
        write_queue(&mut tx, replanned).await?;
        sqlx::query(
            "UPDATE plan_pages SET state = 'done', done_at = $3, stats = $4 \
             WHERE plan_id = $1 AND page = $2",
        )
        .bind(claim.plan_id)
        .bind(claim.page)
        .bind(now)
        .bind(sqlx::types::Json(stats))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(PublishedPlan {
            plan_id: claim.plan_id,
            items: inserted,
            skipped: items.len() as u64 - inserted,
            superseded,
            withheld,
        }))
    }

    /// Finishes sweep `plan_id` once every page is done: its stats become the pages' sum, it is
    /// published, and the live items of earlier plans whose opportunity is no longer open (users
    /// no page visited, since they have nothing open) are superseded. Returns the stats, or
    /// `None` while pages remain or when another replica finished it first.
    pub async fn finish_sweep(
        &self,
        plan_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<PlanStats>> {
        let mut tx = self.pool.begin().await?;
        let plan: Option<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT state, started_at FROM plans WHERE plan_id = $1 FOR UPDATE")
                .bind(plan_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(("running", started)) = plan.as_ref().map(|(s, t)| (s.as_str(), *t)) else {
            return Ok(None);
        };
        let rows: Vec<(String, Option<serde_json::Value>)> =
            sqlx::query_as("SELECT state, stats FROM plan_pages WHERE plan_id = $1")
                .bind(plan_id)
                .fetch_all(&mut *tx)
                .await?;
        let mut stats = PlanStats::default();
        for (state, page) in rows {
            if state != "done" {
                return Ok(None);
            }
            let page = page_stats(page);
            stats.users += page.users;
            stats.candidates += page.candidates;
            for (k, n) in page.chosen {
                *stats.chosen.entry(k).or_default() += n;
            }
            for (k, n) in page.suppressed {
                *stats.suppressed.entry(k).or_default() += n;
            }
        }
        stats.duration_seconds = (now - started).as_seconds_f64().max(0.0);
        // One statement per state, each matching the partial index of its state.
        macro_rules! stale {
            ($state:literal) => {
                concat!(
                    "UPDATE schedule_items s SET state = 'superseded', updated_at = $2 \
                     WHERE s.state = '",
                    $state,
                    "' AND s.plan_id < $1 \
                       AND NOT EXISTS (SELECT 1 FROM opportunities o \
                                       WHERE o.user_id = s.user_id \
                                         AND o.opportunity_id = s.opportunity_id \
                                         AND o.state = 'open' AND o.expires_at > $2)"
                )
            };
        }
        for sql in [stale!("pending"), stale!("counterfactual")] {
            sqlx::query(sql)
                .bind(plan_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE plans SET state = 'published', published_at = $2, stats = $3 \
             WHERE plan_id = $1",
        )
        .bind(plan_id)
        .bind(now)
        .bind(sqlx::types::Json(&stats))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(stats))
    }

    /// Marks sweep `plan_id` failed (its policy can no longer be planned, say), so that the next
    /// firing can start another. Pages already published stay.
    pub async fn fail_sweep(&self, plan_id: i64) -> Result<()> {
        sqlx::query("UPDATE plans SET state = 'failed' WHERE plan_id = $1 AND state = 'running'")
            .bind(plan_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Open opportunities now: how a sweep sizes its pages.
    pub async fn open_opportunity_count(&self, now: DateTime<Utc>) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM opportunities WHERE state = 'open' AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// The queue rows due at `now`, oldest first, at most `limit`.
    pub async fn due_replans(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Queued>> {
        Ok(sqlx::query_as(DUE_REPLANS)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The queue rows of `users` due at `now`: what a page reads before its input, so that it
    /// can delete them when it publishes.
    pub async fn queued_for(&self, users: &[String], now: DateTime<Utc>) -> Result<Vec<Queued>> {
        Ok(sqlx::query_as(QUEUED_FOR)
            .bind(users)
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The users in buckets `[from, to)` that have open opportunities: a page's users, read
    /// before the page's queue rows and input.
    pub async fn users_in_buckets(
        &self,
        buckets: Range<i32>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(USERS_IN_BUCKETS)
            .bind(buckets.start)
            .bind(buckets.end)
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
    }

    /// How many queue rows wait, due or not: for metrics.
    pub async fn replan_queue_len(&self, now: DateTime<Utc>) -> Result<(u64, u64)> {
        let (due, later): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE due_at <= $1), count(*) FILTER (WHERE due_at > $1) \
             FROM replan_queue",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok((due.max(0) as u64, later.max(0) as u64))
    }
}

/// A page's stored stats; a page written by another version may lack a field, which reads 0.
fn page_stats(stored: Option<serde_json::Value>) -> PageStats {
    stored
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// A queue row due at once for each of `$1`, with reason `$2`: see [`enqueue`].
pub(crate) const ENQUEUE: &str = "INSERT INTO replan_queue (user_id, due_at, reason) \
     SELECT DISTINCT u, '-infinity'::timestamptz, $2 FROM unnest($1::text[]) AS u ORDER BY u";

/// Appends a queue row, due at once, for each of `users` (deduplicated, in order): called by
/// every write that changes what a user's plan reads, in that write's transaction.
pub(crate) async fn enqueue(
    conn: &mut sqlx::PgConnection,
    users: &[&str],
    reason: &str,
) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query(ENQUEUE)
        .bind(users)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(())
}

/// Publishing: the queue rows (user `$1`, seq `$2`) the plan read go.
pub(crate) const DELETE_SEEN: &str =
    "DELETE FROM replan_queue q USING unnest($1::text[], $2::bigint[]) AS x(u, s) \
     WHERE q.user_id = x.u AND q.seq = x.s";

/// Publishing: the planned users' (`$1`) earlier revisits go.
pub(crate) const DELETE_REVISITS: &str =
    "DELETE FROM replan_queue WHERE user_id = ANY($1) AND reason = 'revisit'";

/// Publishing: the plan's revisits (user `$1`, due `$2`) come.
pub(crate) const INSERT_REVISITS: &str = "INSERT INTO replan_queue (user_id, due_at, reason) \
     SELECT u, d, 'revisit' FROM unnest($1::text[], $2::timestamptz[]) AS x(u, d)";

/// The replan queue side of publishing a plan: the rows it read go, its users' earlier revisits
/// go, its revisits come.
pub(crate) async fn write_queue(conn: &mut sqlx::PgConnection, r: &Replanned) -> Result<()> {
    if !r.seen.is_empty() {
        let users: Vec<&str> = r.seen.iter().map(|(u, _)| u.as_str()).collect();
        let seqs: Vec<i64> = r.seen.iter().map(|(_, s)| *s).collect();
        sqlx::query(DELETE_SEEN)
            .bind(&users)
            .bind(&seqs)
            .execute(&mut *conn)
            .await?;
    }
    if !r.users.is_empty() {
        sqlx::query(DELETE_REVISITS)
            .bind(&r.users)
            .execute(&mut *conn)
            .await?;
    }
    if !r.revisits.is_empty() {
        let mut revisits: Vec<&(String, DateTime<Utc>)> = r.revisits.iter().collect();
        revisits.sort();
        let users: Vec<&str> = revisits.iter().map(|(u, _)| u.as_str()).collect();
        let due: Vec<DateTime<Utc>> = revisits.iter().map(|(_, t)| *t).collect();
        sqlx::query(INSERT_REVISITS)
            .bind(&users)
            .bind(&due)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// The policy and model versions of the last published sweep: what an incremental replan
    /// compares the active ones with.
    pub async fn last_sweep(&self) -> Result<Option<(String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT policy_version, model_version FROM plans \
             WHERE scope = 'sweep' AND state = 'published' ORDER BY plan_id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The stats of plan `plan_id` once published; `None` while it runs.
    pub async fn published_stats(&self, plan_id: i64) -> Result<Option<PlanStats>> {
        let row: Option<(String, serde_json::Value)> =
            sqlx::query_as("SELECT state, stats FROM plans WHERE plan_id = $1")
                .bind(plan_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some((state, stats)) if state == "published" => {
                Some(serde_json::from_value(stats).unwrap_or_default())
            }
            Some((state, _)) if state == "failed" => {
                return Err(crate::StoreError::NotFound(format!(
                    "full replan {plan_id} failed"
                )))
            }
            _ => None,
        })
    }
}

impl Store {
    /// How many pages of sweep `plan_id` each replica published: who shared the work.
    pub async fn pages_by_holder(&self, plan_id: i64) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT coalesce(holder, ''), count(*) FROM plan_pages \
             WHERE plan_id = $1 AND state = 'done' GROUP BY 1 ORDER BY 1",
        )
        .bind(plan_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Refreshes the planner statistics of every table (`ANALYZE`), as autovacuum eventually
    /// would after a bulk load.
    pub async fn analyze(&self) -> Result<()> {
        sqlx::query("ANALYZE").execute(&self.pool).await?;
        Ok(())
    }
}

/// The tables a replan reads, whose statistics its statements' plans depend on.
const PLANNED_TABLES: &[&str] = &[
    "opportunities",
    "schedule_items",
    "users",
    "user_channels",
    "messages",
    "outcomes",
    "user_activity",
    "replan_queue",
];

/// What [`Store::maintain_tables`] did, table by table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintained {
    /// Vacuumed (and analysed): a fifth or more of their rows were dead.
    pub vacuumed: Vec<String>,
    /// Only analysed: statistics missing or far behind.
    pub analysed: Vec<String>,
}

impl Maintained {
    pub fn is_empty(&self) -> bool {
        self.vacuumed.is_empty() && self.analysed.is_empty()
    }
}

/// The tables of [`PLANNED_TABLES`] that [`Store::maintain_tables`] vacuums (`vacuum`) or only
/// analyses: autovacuum's default thresholds (a fifth of the rows dead; here with a floor of
/// 1,000) for vacuuming, and for analysing a table of 10,000 rows or more whose statistics are
/// missing or far behind (more than twice the rows, and 10,000 more, than when last analysed).
const TABLES_TO_MAINTAIN: &str = "SELECT relname, vacuum FROM ( \
       SELECT c.relname::text AS relname, \
              s.n_dead_tup > 1000 + 0.2 * greatest(s.n_live_tup, c.reltuples) AS vacuum, \
              s.n_live_tup >= 10000 \
                AND (c.reltuples < 0 OR s.n_live_tup > 2 * c.reltuples + 10000) AS stale \
       FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid \
       WHERE c.relname = ANY($1) AND c.relnamespace = current_schema()::regnamespace) t \
     WHERE vacuum OR stale ORDER BY 1";

impl Store {
    /// Vacuums each table a replan reads whose dead rows pass autovacuum's default threshold,
    /// and analyses each whose statistics are missing or far behind: what autovacuum would do,
    /// done where it is off or has not got there yet. Replans churn their tables (every plan
    /// supersedes the items it replaces, the replan queue is written and emptied all day,
    /// opportunities leave `open`), and index probes then wade through dead entries: on
    /// day 7 of the demo with autovacuum off, `opportunities` held 106,684 dead row versions
    /// beside 126,247 live ones (19,563 open). Without statistics (after a bulk load) PostgreSQL guesses a
    /// few hundred rows for a table of millions, and joins against it go wrong. A full replan
    /// calls this before it starts and when it finishes.
    pub async fn maintain_tables(&self) -> Result<Maintained> {
        let due: Vec<(String, bool)> = sqlx::query_as(TABLES_TO_MAINTAIN)
            .bind(PLANNED_TABLES)
            .fetch_all(&self.pool)
            .await?;
        let mut done = Maintained::default();
        for (table, vacuum) in due {
            // The name comes from the fixed list above, never from input. VACUUM cannot run in
            // a transaction block, so it goes as a simple query of its own.
            if vacuum {
                sqlx::raw_sql(&format!("VACUUM (ANALYZE) {table}"))
                    .execute(&self.pool)
                    .await?;
                done.vacuumed.push(table);
            } else {
                sqlx::raw_sql(&format!("ANALYZE {table}"))
                    .execute(&self.pool)
                    .await?;
                done.analysed.push(table);
            }
        }
        Ok(done)
    }
}

impl Store {
    /// When the first lease held on a page of sweep `plan_id` expires: when a replica waiting
    /// for the sweep should look again.
    pub async fn next_page_expiry(&self, plan_id: i64) -> Result<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT min(lease_until) FROM plan_pages WHERE plan_id = $1 AND state = 'running'",
        )
        .bind(plan_id)
        .fetch_one(&self.pool)
        .await?)
    }
}
