//! The hot-path statements, named, with where each one routes when the per-user tables are
//! distributed (Citus) or hash-partitioned by `user_id` (docs/scaling.md, "Past one database").
//!
//! Each entry's `sql` is the very constant its store function executes, so that a check of the
//! list (tests/store/partitioned.rs `EXPLAIN`s every entry on a hash-partitioned copy of the
//! schema) checks what runs, not a copy that may drift from it.
//!
//! Left out on purpose:
//! - statements on tables that stay whole (would be reference tables): the `plans` insert of a
//!   publish, `plan_pages` claims and publishes, the replan lock, `cron_runs`;
//! - `record_assignments` (`experiment_assignments`): keyed `(experiment, user_id)`, so not
//!   distributable by `user_id` until its key is reordered (docs/scaling.md);
//! - full replans that are not paged (`planning_input` without users, `Supersede::All`): every
//!   user by definition, and the daemon plans everyone in sweep pages instead;
//! - maintenance that runs once per sweep or per cron firing, not per request or per page
//!   (`expire`, `finish_sweep`'s stale items, statistics refreshes): every partition, by design.

use crate::{leases, opportunities, planning, plans, sweeps};

/// Where a statement's reads and writes of per-user tables land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// One user's rows: `user_id = $n` on every per-user table it reads or writes. Planned against
    /// that user's partition alone (a custom plan prunes when planning, a generic one when the
    /// executor starts); under Citus, a router query to one worker.
    OneUser,
    /// The rows of the users it names with `user_id = ANY($n)`. The plan keeps only their
    /// partitions of the table so filtered; tables reached from its rows through `user_id` (a
    /// join, a correlated subquery) are pruned per probe as it runs. Under Citus, the filter prunes
    /// shards the same way, and the tables joined on `user_id` are co-located with it.
    NamedUsers,
    /// The rows of the users in a batch whose keys arrive as `unnest`ed arrays (acks, ingest,
    /// items to publish). Nothing filters `user_id` by a parameter, so the plan lists every
    /// partition; as it runs, each key probes its own user's partition only (a nested loop or
    /// a subquery per key), and inserted rows are routed to their user's partition. The batch's
    /// users' partitions are all that is touched, but that is known only at run time: nothing in
    /// the statement tells a planner which partitions (or, under Citus, which workers) a batch
    /// needs.
    KeyedBatch,
    /// Every partition: the statement asks across users by design (the due queue, a page of
    /// hash buckets, every user's due counterfactuals), or its plan reads a small index whole,
    /// in every partition, rather than probing per key (a batch ack's update).
    EveryPartition,
}

/// One statement of a hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotStatement {
    /// The hot path and the statement, `path.statement`; unique in [`HOT_PATHS`].
    pub path: &'static str,
    /// The statement exactly as the store runs it.
    pub sql: &'static str,
    pub routes: Routes,
}

const fn hot(path: &'static str, sql: &'static str, routes: Routes) -> HotStatement {
    HotStatement { path, sql, routes }
}

/// Every statement the hot paths run on per-user tables.
pub const HOT_PATHS: &[HotStatement] = &[
    // Pull: the earliest due items of the requested channels, of anyone.
    hot("pull.lease", leases::LEASE_DUE, Routes::EveryPartition),
    // Ack, one item (`Store::ack`, and the rare cases of a batch).
    hot("ack.lock_item", leases::LOCK_ITEM, Routes::OneUser),
    hot("ack.apply", leases::APPLY_ACK, Routes::OneUser),
    hot("ack.message_of", leases::MESSAGE_OF, Routes::OneUser),
    // Ack, a batch (`Store::ack_many`); a single ack runs the last four with one key.
    hot("ack.lock_batch", leases::LOCK_ACKED, Routes::KeyedBatch),
    // The batch's update filters `state = 'leased'`, but not `lease_holder IS NOT NULL`, so the
    // small index of leased items (`schedule_items_leased`, migration 0014) cannot serve it:
    // with that index usable, PostgreSQL read it whole, in every partition, and hash-joined the
    // batch to it instead of probing each key.
    hot("ack.apply_batch", leases::APPLY_ACKS, Routes::KeyedBatch),
    hot("ack.record_sent", leases::RECORD_SENT, Routes::KeyedBatch),
    hot("ack.close_sent", leases::CLOSE_SENT, Routes::KeyedBatch),
    hot(
        "ack.close_skipped",
        leases::CLOSE_SKIPPED,
        Routes::KeyedBatch,
    ),
    hot("ack.enqueue", sweeps::ENQUEUE, Routes::KeyedBatch),
    // Lease extension.
    hot("extend.lease", leases::EXTEND_LEASE, Routes::OneUser),
    // Ingest: the fast path, and the retry after a race on a key.
    hot(
        "ingest.new_keys",
        opportunities::INSERT_NEW_KEYS,
        Routes::KeyedBatch,
    ),
    hot(
        "ingest.on_conflict",
        opportunities::INSERT_ON_CONFLICT,
        Routes::KeyedBatch,
    ),
    // A replan of named users (manual, urgent, incremental); a page reads its users' the same
    // way once it has their ids, bar the open opportunities (`sweep.opportunities`).
    hot("replan.due", sweeps::DUE_REPLANS, Routes::EveryPartition),
    hot("replan.queued", sweeps::QUEUED_FOR, Routes::NamedUsers),
    // A probe per named user (a lateral subquery over the `unnest`ed ids), so routed as a keyed
    // batch: `user_id = ANY` here read the whole bucket index (see the constant).
    hot(
        "replan.opportunities",
        planning::OPEN_OPPORTUNITIES_OF_USERS,
        Routes::KeyedBatch,
    ),
    hot("replan.users", planning::USERS_OF, Routes::NamedUsers),
    hot("replan.history", planning::HISTORY_OF, Routes::NamedUsers),
    hot("replan.activity", planning::ACTIVITY_OF, Routes::NamedUsers),
    hot("replan.arrivals", planning::ARRIVALS_OF, Routes::KeyedBatch),
    hot(
        "replan.channel_usage",
        planning::CHANNEL_USAGE,
        Routes::EveryPartition,
    ),
    // A page of a sweep: its users and their open opportunities, by bucket range.
    hot(
        "sweep.users",
        sweeps::USERS_IN_BUCKETS,
        Routes::EveryPartition,
    ),
    hot(
        "sweep.opportunities",
        planning::OPEN_OPPORTUNITIES_IN_BUCKETS,
        Routes::EveryPartition,
    ),
    // Publish (a plan of named users, or a page).
    hot("publish.settle", plans::SETTLE, Routes::EveryPartition),
    hot(
        "publish.supersede_pending",
        plans::SUPERSEDE_PENDING_OF_USERS,
        Routes::NamedUsers,
    ),
    hot(
        "publish.supersede_counterfactual",
        plans::SUPERSEDE_COUNTERFACTUAL_OF_USERS,
        Routes::NamedUsers,
    ),
    hot(
        "publish.insert_items",
        plans::INSERT_ITEMS,
        Routes::KeyedBatch,
    ),
    hot(
        "publish.delete_seen",
        sweeps::DELETE_SEEN,
        Routes::KeyedBatch,
    ),
    hot(
        "publish.delete_revisits",
        sweeps::DELETE_REVISITS,
        Routes::NamedUsers,
    ),
    hot(
        "publish.insert_revisits",
        sweeps::INSERT_REVISITS,
        Routes::KeyedBatch,
    ),
];
