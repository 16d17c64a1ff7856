//! Publishing a plan: the new schedule replaces the old one in a single transaction.

use chrono::{DateTime, Utc};
use sqlx::Row;
use tern_core::OpportunityId;

use crate::sweeps::Replanned;
use crate::{Result, Store};

/// The plan's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPlan {
    /// The Replan policy document that triggered it, or `manual`.
    pub trigger: String,
    pub policy_version: String,
    pub model_version: Option<String>,
    pub seed: i64,
    pub started_at: DateTime<Utc>,
    pub horizon_end: DateTime<Utc>,
    /// Candidates, choices and suppressions, as the planner summarises them.
    pub stats: PlanStats,
}

/// What one plan did, stored with it (`plans.stats`, JSON) and shown in `GetStatus`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PlanStats {
    /// Users planned.
    pub users: u64,
    /// Candidates (opportunity × channel) considered.
    pub candidates: u64,
    /// Items chosen, per channel.
    pub chosen: std::collections::BTreeMap<String, u64>,
    /// Suppressions, per reason.
    pub suppressed: std::collections::BTreeMap<String, u64>,
    /// From taking the replan lock to publishing.
    pub duration_seconds: f64,
}

/// One chosen candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScheduleItem {
    pub user_id: String,
    pub opportunity_id: OpportunityId,
    pub channel: String,
    pub send_after: DateTime<Utc>,
    pub send_before: DateTime<Utc>,
    pub value: f64,
    pub propensity: f64,
    pub experiment: Option<String>,
    pub arm: Option<String>,
    pub scores: serde_json::Value,
    /// Set for a would-be message that is not sent, with why: stored as a `counterfactual` item
    /// that no puller sees, and `withheld` (with its opportunity) once its send window opens.
    pub counterfactual: Option<Withholding>,
}

/// Why a would-be message is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withholding {
    /// The user is in an experiment's holdout arm: given the arm, not sending was certain.
    Holdout,
    /// The Replan's `withhold` share drew it: not sending had the item's propensity.
    Exploration,
}

impl Withholding {
    /// The name stored in `schedule_items.withheld_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            Withholding::Holdout => "holdout",
            Withholding::Exploration => "exploration",
        }
    }
}

/// One user's arm in one experiment, as a plan assigned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub experiment: String,
    pub user_id: String,
    pub arm: String,
}

/// Which pending items of earlier plans the new plan replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Supersede {
    /// A full replan: every pending item is replaced.
    All,
    /// A replan of some users: only their pending items are replaced.
    Users(Vec<String>),
}

/// What [`Store::publish_plan`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedPlan {
    pub plan_id: i64,
    /// Items stored.
    pub items: u64,
    /// Items dropped because their opportunity is no longer open or already has an item leased
    /// or sent: a plan never re-issues what a delivery service holds or has sent.
    pub skipped: u64,
    /// Pending items of earlier plans that this plan replaced.
    pub superseded: u64,
    /// Counterfactual items of earlier plans whose send window had opened: now `withheld`.
    pub withheld: u64,
}

impl Store {
    /// Publishes a plan atomically: records it, supersedes the pending items it replaces, and
    /// inserts its items. Pullers see either the old schedule or the new one, never a mix; a
    /// process that dies before commit leaves nothing behind.
    pub async fn publish_plan(
        &self,
        plan: &NewPlan,
        items: &[NewScheduleItem],
        supersede: &Supersede,
        now: DateTime<Utc>,
    ) -> Result<PublishedPlan> {
        self.publish_plan_with(plan, items, supersede, &Replanned::default(), now)
            .await
    }

    /// [`Store::publish_plan`], with the replan queue kept in the same transaction: the queue
    /// rows the plan read are deleted and the users' revisits replaced.
    pub async fn publish_plan_with(
        &self,
        plan: &NewPlan,
        items: &[NewScheduleItem],
        supersede: &Supersede,
        replanned: &Replanned,
        now: DateTime<Utc>,
    ) -> Result<PublishedPlan> {
        check_items(items)?;
        let mut tx = self.pool.begin().await?;
        // A counterfactual item whose window has opened is what a holdout user would have got by
        // now; it is settled before the new plan replaces the pending ones, as a pulled item is.
        let withheld = settle(&mut tx, now).await?;
        let plan_id: i64 = sqlx::query_scalar(
            "INSERT INTO plans (trigger, policy_version, model_version, seed, started_at, \
             published_at, horizon_end, state, stats, scope) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'published', $8, $9) RETURNING plan_id",
        )
        .bind(&plan.trigger)
        .bind(&plan.policy_version)
        .bind(&plan.model_version)
        .bind(plan.seed)
        .bind(plan.started_at)
        .bind(now)
        .bind(plan.horizon_end)
        .bind(sqlx::types::Json(&plan.stats))
        .bind(replanned.scope.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let (superseded, inserted) = write_items(&mut tx, plan_id, items, supersede, now).await?;
        crate::sweeps::write_queue(&mut tx, replanned).await?;
        tx.commit().await?;
        Ok(PublishedPlan {
            plan_id,
            items: inserted,
            skipped: items.len() as u64 - inserted,
            superseded,
            withheld,
        })
    }

    /// Settles every counterfactual item whose send window has opened by `now`: the item and
    /// its opportunity become `withheld`, which is when a real item would have been pulled. A
    /// replan calls this before it reads its input, so that a holdout user's due would-be
    /// messages count as their history and are not chosen again; [`Store::publish_plan`] does
    /// it too. Returns the items settled.
    pub async fn settle_counterfactuals(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let settled = settle(&mut tx, now).await?;
        tx.commit().await?;
        Ok(settled)
    }

    /// Records each planned user's arm in each experiment they are in. The first plan to assign
    /// a user starts their observation period; a later plan that assigns another arm (a share,
    /// salt or layer changed) moves them and counts the change, so a report can set them apart.
    /// An unchanged row is rewritten at most once a day (to refresh `last_planned_at`), so that
    /// hourly replans of every user do not rewrite every row every hour. Returns the rows
    /// written.
    pub async fn record_assignments(
        &self,
        assignments: &[Assignment],
        policy_version: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        // Sorted by key, so that two replicas recording overlapping sets lock rows in one order.
        let mut sorted: Vec<&Assignment> = assignments.iter().collect();
        sorted.sort_by(|a, b| (&a.experiment, &a.user_id).cmp(&(&b.experiment, &b.user_id)));
        sorted.dedup_by(|a, b| a.experiment == b.experiment && a.user_id == b.user_id);
        let mut written = 0;
        for chunk in sorted.chunks(10_000) {
            let experiments: Vec<&str> = chunk.iter().map(|a| a.experiment.as_str()).collect();
            let users: Vec<&str> = chunk.iter().map(|a| a.user_id.as_str()).collect();
            let arms: Vec<&str> = chunk.iter().map(|a| a.arm.as_str()).collect();
            written += sqlx::query(
                "INSERT INTO experiment_assignments AS a (experiment, user_id, arm, \
                   policy_version, first_planned_at, last_planned_at) \
                 SELECT x.e, x.u, x.r, $4, $5, $5 \
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS x(e, u, r) \
                 ON CONFLICT (experiment, user_id) DO UPDATE SET \
                   arm = EXCLUDED.arm, policy_version = EXCLUDED.policy_version, \
                   last_planned_at = GREATEST(a.last_planned_at, EXCLUDED.last_planned_at), \
                   arm_changes = a.arm_changes + (a.arm <> EXCLUDED.arm)::int \
                 WHERE a.arm <> EXCLUDED.arm \
                    OR a.last_planned_at < EXCLUDED.last_planned_at - interval '1 day'",
            )
            .bind(&experiments)
            .bind(&users)
            .bind(&arms)
            .bind(policy_version)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(written)
    }
}

/// Refuses a plan whose items PostgreSQL would store but no puller could use.
pub(crate) fn check_items(items: &[NewScheduleItem]) -> Result<()> {
    for item in items {
        if !(item.propensity > 0.0 && item.propensity <= 1.0) {
            return Err(tern_core::InvalidInput::new(format!(
                "propensity {} of the item for opportunity {} is not in (0, 1]",
                item.propensity, item.opportunity_id
            ))
            .into());
        }
        if item.send_before <= item.send_after {
            return Err(tern_core::InvalidInput::new(format!(
                "the send window of the item for opportunity {} is empty",
                item.opportunity_id
            ))
            .into());
        }
        if !item.value.is_finite() {
            return Err(tern_core::InvalidInput::new(format!(
                "the value of the item for opportunity {} is not finite",
                item.opportunity_id
            ))
            .into());
        }
    }
    Ok(())
}

/// A replan of some users, publishing: their pending items (`$2`) give way to the new plan's.
pub(crate) const SUPERSEDE_PENDING_OF_USERS: &str =
    "UPDATE schedule_items SET state = 'superseded', updated_at = $1 \
     WHERE state = 'pending' AND user_id = ANY($2)";

/// A replan of some users, publishing: their counterfactual items (`$2`) give way to the new
/// plan's.
pub(crate) const SUPERSEDE_COUNTERFACTUAL_OF_USERS: &str =
    "UPDATE schedule_items SET state = 'superseded', updated_at = $1 \
     WHERE state = 'counterfactual' AND user_id = ANY($2)";

/// Supersedes the pending and counterfactual items `supersede` names and inserts `items` under
/// `plan_id`, skipping opportunities that are closed or already have a live item. Returns
/// (superseded, inserted).
pub(crate) async fn write_items(
    tx: &mut sqlx::PgConnection,
    plan_id: i64,
    items: &[NewScheduleItem],
    supersede: &Supersede,
    now: DateTime<Utc>,
) -> Result<(u64, u64)> {
    // One statement per state, each matching its partial index (`schedule_items_due`,
    // `schedule_items_counterfactual`): `state IN (both)` matches neither and scans every
    // item ever planned, which grows with every replan. (And no `$2 IS NULL OR ...`, which a
    // generic plan cannot fold away.)
    let mut superseded = 0;
    for pending in [true, false] {
        let query = match (supersede, pending) {
            (Supersede::All, true) => sqlx::query(
                "UPDATE schedule_items SET state = 'superseded', updated_at = $1 \
                 WHERE state = 'pending'",
            )
            .bind(now),
            (Supersede::All, false) => sqlx::query(
                "UPDATE schedule_items SET state = 'superseded', updated_at = $1 \
                 WHERE state = 'counterfactual'",
            )
            .bind(now),
            (Supersede::Users(users), true) => sqlx::query(SUPERSEDE_PENDING_OF_USERS)
                .bind(now)
                .bind(users),
            (Supersede::Users(users), false) => sqlx::query(SUPERSEDE_COUNTERFACTUAL_OF_USERS)
                .bind(now)
                .bind(users),
        };
        superseded += query.execute(&mut *tx).await?.rows_affected();
    }

    let (inserted, _) = insert_items(&mut *tx, plan_id, items, now, false).await?;
    Ok((superseded, inserted))
}

/// The statement that inserts a plan's items: see [`insert_items`].
macro_rules! insert_items_sql {
    () => {
        "INSERT INTO schedule_items (user_id, plan_id, opportunity_id, channel, send_after, \
           send_before, value, propensity, experiment, arm, scores, state, withheld_by, \
           updated_at) \
         SELECT x.u, $1, x.o, x.c, x.a, x.b, x.v, x.p, x.e, x.r, x.s, x.t, x.w, $12 \
         FROM unnest($2::text[], $3::bigint[], $4::text[], $5::timestamptz[], \
                     $6::timestamptz[], $7::float8[], $8::float8[], $9::text[], $10::text[], \
                     $11::jsonb[], $13::text[], $14::text[]) WITH ORDINALITY \
              AS x(u, o, c, a, b, v, p, e, r, s, t, w, n) \
         WHERE (SELECT op.state = 'open' AND op.expires_at > $12 FROM opportunities op \
                WHERE op.user_id = x.u AND op.opportunity_id = x.o) \
           AND NOT (SELECT EXISTS (SELECT 1 FROM schedule_items s \
                           WHERE s.user_id = x.u AND s.opportunity_id = x.o \
                             AND s.state IN ('pending', 'leased', 'sent', \
                                             'counterfactual', 'withheld'))) \
         ORDER BY x.n"
    };
}

/// [`insert_items_sql`]'s statement, as [`insert_items`] runs it.
pub(crate) const INSERT_ITEMS: &str = insert_items_sql!();

/// Inserts `items` under `plan_id`, skipping opportunities that are closed or already have a
/// live item. Returns the rows inserted; with `explain`, runs the statement under
/// `EXPLAIN (ANALYZE, BUFFERS)` instead and returns the plan's lines too (the rows are
/// inserted all the same: callers roll back).
async fn insert_items(
    tx: &mut sqlx::PgConnection,
    plan_id: i64,
    items: &[NewScheduleItem],
    now: DateTime<Utc>,
    explain: bool,
) -> Result<(u64, Vec<String>)> {
    // Inserted in this order (`ORDER BY x.n`), so that item ids follow the plan, not the
    // join strategy the existing-item checks happen to get.
    //
    // The two checks are scalar subqueries on purpose: each is a probe of one key (the
    // opportunity's primary key, the items' index by opportunity), whatever the statistics say.
    // Written as EXISTS / NOT EXISTS they became joins, and on a freshly loaded table (no
    // statistics, so PostgreSQL guesses a few hundred open opportunities) the planner hashed
    // every open opportunity on every publish, however small the batch (docs/benchmarks.md,
    // "The publish after a bulk load").
    let mut sorted: Vec<&NewScheduleItem> = items.iter().collect();
    sorted.sort_by(|a, b| (&a.user_id, a.opportunity_id).cmp(&(&b.user_id, b.opportunity_id)));
    let users: Vec<&str> = sorted.iter().map(|i| i.user_id.as_str()).collect();
    let channels: Vec<&str> = sorted.iter().map(|i| i.channel.as_str()).collect();
    let opportunities: Vec<i64> = sorted.iter().map(|i| i.opportunity_id).collect();
    let after: Vec<DateTime<Utc>> = sorted.iter().map(|i| i.send_after).collect();
    let before: Vec<DateTime<Utc>> = sorted.iter().map(|i| i.send_before).collect();
    let values: Vec<f64> = sorted.iter().map(|i| i.value).collect();
    let propensities: Vec<f64> = sorted.iter().map(|i| i.propensity).collect();
    let experiments: Vec<Option<&str>> = sorted.iter().map(|i| i.experiment.as_deref()).collect();
    let arms: Vec<Option<&str>> = sorted.iter().map(|i| i.arm.as_deref()).collect();
    let scores: Vec<&serde_json::Value> = sorted.iter().map(|i| &i.scores).collect();
    let states: Vec<&str> = sorted
        .iter()
        .map(|i| match i.counterfactual {
            Some(_) => "counterfactual",
            None => "pending",
        })
        .collect();
    let withheld_by: Vec<Option<&str>> = sorted
        .iter()
        .map(|i| i.counterfactual.map(Withholding::as_str))
        .collect();

    macro_rules! bound {
        ($sql:expr) => {
            sqlx::query($sql)
                .bind(plan_id)
                .bind(&users)
                .bind(&opportunities)
                .bind(&channels)
                .bind(&after)
                .bind(&before)
                .bind(&values)
                .bind(&propensities)
                .bind(&experiments)
                .bind(&arms)
                .bind(&scores)
                .bind(now)
                .bind(&states)
                .bind(&withheld_by)
        };
    }
    // The checks are probes of one key each. The second probes the table this statement
    // inserts into: when its statistics say it is (nearly) empty (analysed before the first
    // plan, or never, after a bulk load), PostgreSQL plans it as a sequential scan per inserted
    // row, over the rows the statement itself has inserted so far, which is quadratic in the
    // batch: a 300,000-item publish ran for over 12 minutes. No sequential scan, then, in this
    // transaction: every statement left in it reads by index.
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await?;
    if explain {
        let rows = bound!(concat!("EXPLAIN (ANALYZE, BUFFERS) ", insert_items_sql!()))
            .fetch_all(&mut *tx)
            .await?;
        let lines = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        return Ok((0, lines));
    }
    let inserted = bound!(INSERT_ITEMS).execute(tx).await?.rows_affected();
    Ok((inserted, Vec::new()))
}

impl Store {
    /// `EXPLAIN (ANALYZE, BUFFERS)` of publishing `items` (under a throwaway plan), rolled back:
    /// the plan PostgreSQL picks for the statement now, with the work it did. For benchmarks
    /// and the regression test that keeps the publish a probe per item.
    pub async fn explain_publish(
        &self,
        items: &[NewScheduleItem],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        check_items(items)?;
        let mut tx = self.pool.begin().await?;
        let plan_id: i64 = sqlx::query_scalar(
            "INSERT INTO plans (trigger, policy_version, started_at, horizon_end) \
             VALUES ('explain', 'explain', $1, $1) RETURNING plan_id",
        )
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let (_, lines) = insert_items(&mut tx, plan_id, items, now, true).await?;
        tx.rollback().await?;
        Ok(lines)
    }
}

/// Every user's due counterfactual items, and their open opportunities, become `withheld`:
/// see [`settle`].
pub(crate) const SETTLE: &str = "WITH due AS ( \
       UPDATE schedule_items SET state = 'withheld', updated_at = $1 \
       WHERE state = 'counterfactual' AND send_after <= $1 \
       RETURNING user_id, opportunity_id), \
     opportunities_withheld AS ( \
       UPDATE opportunities o SET state = 'withheld' FROM due \
       WHERE o.user_id = due.user_id AND o.opportunity_id = due.opportunity_id \
         AND o.state = 'open') \
     SELECT count(*) FROM due";

/// Every user's due counterfactual items (not only the replanned ones': a due counterfactual
/// must not wait for its user's next plan) become `withheld`, with their open opportunity.
pub(crate) async fn settle(tx: &mut sqlx::PgConnection, now: DateTime<Utc>) -> Result<u64> {
    let settled: i64 = sqlx::query_scalar(SETTLE)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    Ok(settled as u64)
}
