//! tern's PostgreSQL repository. Every SQL statement tern runs lives in this crate.
//!
//! # Layout
//! - [`Store`] (this file): the connection pool and the error type; every method takes the current
//!   time as an argument (`now`) instead of reading the clock, so that lease expiry, opportunity
//!   expiry and history windows can be tested at exact instants without sleeping.
//! - [`migrate`]: the embedded migrations, `tern migrate` and `--status`, and the refusal to touch
//!   a database whose schema is newer than this binary.
//! - [`opportunities`]: batch ingest, idempotent on `(user_id, dedupe_key)`; loading open
//!   opportunities for a set of users; expiring old ones.
//! - [`users`]: users with timezone, attributes, reachability and opt-outs.
//! - [`history`]: messages sent and their outcomes, and the per-user history windows that caps and
//!   features count.
//! - [`generators`]: users as generator expressions see them, page by page, and the record of
//!   processed events that makes `SubmitEvents` idempotent.
//! - [`training`]: days of user activity, and each user's messages with their outcomes streamed
//!   user by user for `tern train`.
//! - [`models`]: the model registry: artifacts, metrics, promotion and rollback.
//! - [`planning`]: what a replan reads ([`Store::planning_input`]), the replan lock that lets one
//!   replica plan at a time, recent plans and one user's schedule.
//! - [`plans`]: publishing a plan's schedule in one transaction.
//! - [`sweeps`]: full replans page by page under leases (several replicas share one), and the
//!   replan queue of users whose plan may be out of date, which incremental replans read.
//! - [`policies`]: the record of activated policy bundles, by content hash.
//! - [`experiments`]: what an experiment report reads: each assigned user's messages, outcomes,
//!   withheld counterfactual messages and activity over their own observation period.
//! - [`reports`]: read-only summaries: opportunity states, suppressions over all plans,
//!   outcome counts, the engagement prediction's calibration.
//! - [`decisions`]: the logging policy's decisions over a period, with their propensities, for
//!   off-policy evaluation.
//! - [`peer`]: the plain-SQL versions of tern's jobs that benchmarks compare against.
//! - [`bulk`]: loading users and opportunities with `COPY` (backfills, `tern bench replan`).
//! - [`admin`]: creating and dropping scratch databases (tests, benchmarks).
//! - [`leases`]: handing due schedule items to delivery services under a lease (`FOR UPDATE SKIP
//!   LOCKED`), acks with lease tokens, lease extension.
//! - [`routing`]: the hot paths' statements, named, with where each routes when the per-user
//!   tables are distributed or hash-partitioned by `user_id`.
//!
//! # Invariants
//! - Multi-row writes are single statements or single transactions: a batch is stored whole or not
//!   at all, so a caller that sees an error may retry the whole batch.
//! - Ingest sorts each batch by its unique key before inserting, so two connections that submit
//!   overlapping batches lock rows in the same order and cannot deadlock.
//! - A schedule item is leased to one holder at a time; only the current token can ack it; an ack
//!   is idempotent; the message row for a `sent` ack is written in the ack's transaction.

pub mod admin;
pub mod bulk;
pub mod decisions;
pub mod experiments;
pub mod generators;
pub mod history;
pub mod leases;
pub mod migrate;
pub mod models;
pub mod opportunities;
pub mod peer;
pub mod planning;
pub mod plans;
pub mod policies;
pub mod reports;
pub mod routing;
pub mod sweeps;
pub mod training;
pub mod users;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tern_core::InvalidInput;

pub use decisions::{LoggedDecision, LoggedSend, LoggedWithholding};
pub use experiments::{ActivityWindows, ExperimentUser};
pub use generators::{EventContent, EventRecord, GeneratorUser, StoredEvent};
pub use history::{HistoryWindow, NewMessage, NewOutcome, OutcomeReport, UserHistory, WindowCount};
pub use leases::{Ack, AckResult, LeaseRequest, LeasedItem};
pub use migrate::{MigrationState, MigrationStatus};
pub use models::{ModelInfo, NewModel};
pub use opportunities::{IngestReport, RowStatus};
pub use planning::{
    Arrivals, OpenOpportunity, PastSend, PlanRecord, PlanningUser, ReplanLock, UserScheduleItem,
    ARRIVALS_WINDOW,
};
pub use plans::{
    Assignment, NewPlan, NewScheduleItem, PlanStats, PublishedPlan, Supersede, Withholding,
};
pub use policies::PolicyVersion;
pub use reports::CalibrationBin;
pub use sweeps::{
    Maintained, PageClaim, PageStats, Queued, Replanned, RunningSweep, Scope, SweepProgress,
    BUCKETS,
};
pub use training::{TrainingMessage, TrainingUser};
pub use users::{ChannelState, User};

/// Everything that can go wrong in the store, phrased for the operator who reads it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (refused, timed out, went away mid-query). Callers may retry;
    /// nothing was committed by the failed call.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The connection string itself is wrong.
    #[error("invalid DATABASE_URL: {0}")]
    BadUrl(String),
    /// The database has migrations this binary does not know: it was migrated by a newer tern.
    #[error(
        "the database schema is at version {database}, newer than this binary's {binary}; \
         run a tern release that includes migration {database} (refusing to touch the database)"
    )]
    SchemaTooNew { database: i64, binary: i64 },
    /// The database lacks migrations this binary needs.
    #[error(
        "the database schema is at version {database} but this binary needs {binary}; run `tern migrate`"
    )]
    SchemaBehind { database: i64, binary: i64 },
    /// A migration failed part-way on a previous run and left its mark.
    #[error(
        "migration {0} was left half-applied by an earlier run; restore the database or repair it by hand, then delete its row from _sqlx_migrations"
    )]
    DirtyMigration(i64),
    /// An applied migration's text differs from the one embedded in this binary.
    #[error("migration {0} was changed after it was applied; migrations must never be edited once released")]
    ModifiedMigration(i64),
    #[error("migration failed: {0}")]
    Migrate(String),
    /// The caller sent something malformed; nothing was written.
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other database error (a constraint the validation did not foresee, a bug).
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl StoreError {
    /// Whether retrying the same call later may succeed (the server maps this to UNAVAILABLE).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            sqlx::Error::Configuration(_) => StoreError::BadUrl(err.to_string()),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections:
                // the server is restarting or full, which is a transient condition.
                Some("57P01" | "57P02" | "57P03" | "53300") => {
                    StoreError::Unavailable(err.to_string())
                }
                // invalid_catalog_name: the database was dropped (or not created yet) under a
                // running tern. Nothing can be written until it is back: the same condition as a
                // server that is down, not a bug in a query.
                Some("3D000") => StoreError::Unavailable(err.to_string()),
                // Connection exceptions (class 08).
                Some(code) if code.starts_with("08") => StoreError::Unavailable(err.to_string()),
                // The database refuses connections for now (`ALLOW_CONNECTIONS false`, as
                // during maintenance): the same condition as a server that is down.
                Some("55000") if db.message().contains("not currently accepting connections") => {
                    StoreError::Unavailable(err.to_string())
                }
                _ => StoreError::Database(err),
            },
            _ => StoreError::Database(err),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle to tern's database: a connection pool plus the queries in this crate's modules.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// How long to wait for a connection before reporting the database unavailable.
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl Store {
    /// Connects to `url` and checks that the server answers.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, ConnectOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Store> {
        let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            StoreError::BadUrl(
                e.to_string()
                    .trim_start_matches("error with configuration: ")
                    .to_string(),
            )
        })?;
        Store::connect_options(connect, options).await
    }

    async fn connect_options(connect: PgConnectOptions, options: ConnectOptions) -> Result<Store> {
        // No JIT compilation: tern's statements are short index probes and batches, for which
        // PostgreSQL's cost threshold still picks JIT once a batch is large (a 16,000-item
        // publish spent 43 ms compiling expressions it then ran once).
        let connect = connect.application_name("tern").options([("jit", "off")]);
        // One direct connection first: a pool that cannot connect only reports "timed out",
        // while the driver's own error says why (refused, unknown host, authentication failed).
        let probe = tokio::time::timeout(
            options.acquire_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "no answer from the server within {} s",
                options.acquire_timeout.as_secs()
            ))
        })?
        .map_err(|e| match StoreError::from(e) {
            StoreError::Database(e) => StoreError::Unavailable(e.to_string()),
            other => other,
        })?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(Store { pool })
    }

    /// Wraps an existing pool (tests, embedding).
    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection; pending calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
