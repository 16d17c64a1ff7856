//! Schema migrations, embedded in the binary at compile time from `migrations/`.
//!
//! sqlx's migrator already serialises concurrent runs with a PostgreSQL advisory lock, so two
//! replicas that start `tern migrate` at once apply each migration exactly once. What it does not
//! do is refuse politely: a database migrated by a newer tern would fail with an error about a
//! "missing" migration. [`Store::migrate`] checks that first and says what to do instead.

use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, Row};

use crate::{Result, Store, StoreError};

/// The migrations this binary carries.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// The state of one migration, as `tern migrate --status` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub state: MigrationState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    Applied,
    Pending,
    /// Recorded as failed part-way (only possible for migrations that opt out of transactions).
    Dirty,
    /// Applied, but its text differs from the embedded one.
    Modified,
    /// Applied by a newer binary; this one does not know it.
    Unknown,
}

impl MigrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Dirty => "dirty",
            MigrationState::Modified => "modified",
            MigrationState::Unknown => "unknown (newer than this binary)",
        }
    }
}

/// The newest migration version this binary knows.
pub fn binary_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

impl Store {
    /// Lists every migration: those this binary carries, applied or pending, and any applied ones
    /// it does not know.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>> {
        let mut conn = self.pool.acquire().await?;
        status_on(&mut conn).await
    }

    /// Applies pending migrations and returns the versions this call applied. Safe to run from
    /// several processes at once: the whole check-and-apply runs under an advisory lock, so each
    /// migration is applied, and reported, by exactly one of them. Refuses, without changing
    /// anything, a database that is newer than this binary, half-migrated, or whose applied
    /// migrations were edited.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *conn)
            .await?;
        let result = migrate_locked(&mut conn).await;
        // Unlock even on failure; if the connection itself is gone, so is the session's lock.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *conn)
            .await;
        result
    }

    /// Checks that the schema is exactly what this binary expects; the daemon calls this before
    /// serving so that it never runs against a schema it does not understand.
    pub async fn check_schema(&self) -> Result<()> {
        let status = self.migration_status().await?;
        refuse_unsafe(&status)?;
        if status.iter().any(|s| s.state == MigrationState::Pending) {
            let database = status
                .iter()
                .filter(|s| s.state == MigrationState::Applied)
                .map(|s| s.version)
                .max()
                .unwrap_or(0);
            return Err(StoreError::SchemaBehind {
                database,
                binary: binary_version(),
            });
        }
        Ok(())
    }
}

/// The advisory lock key that serialises `migrate` across replicas ("tern" in ASCII).
const MIGRATE_LOCK: i64 = 0x7465_726e;

async fn migrate_locked(conn: &mut PgConnection) -> Result<Vec<i64>> {
    let before = status_on(conn).await?;
    refuse_unsafe(&before)?;
    // `run_direct` rather than `run`: `run` goes through `Acquire`, whose future is not `Send`
    // for a borrowed connection (a known rustc limitation), and the daemon migrates inside tasks.
    MIGRATOR.run_direct(conn).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
        sqlx::migrate::MigrateError::Dirty(v) => StoreError::DirtyMigration(v),
        sqlx::migrate::MigrateError::VersionMismatch(v) => StoreError::ModifiedMigration(v),
        other => StoreError::Migrate(other.to_string()),
    })?;
    Ok(before
        .iter()
        .filter(|s| s.state == MigrationState::Pending)
        .map(|s| s.version)
        .collect())
}

async fn status_on(conn: &mut PgConnection) -> Result<Vec<MigrationStatus>> {
    let applied = applied_migrations(conn).await?;
    let mut out = Vec::new();
    for m in MIGRATOR.iter() {
        let state = match applied.iter().find(|a| a.version == m.version) {
            None => MigrationState::Pending,
            Some(a) if !a.success => MigrationState::Dirty,
            Some(a) if a.checksum != *m.checksum => MigrationState::Modified,
            Some(_) => MigrationState::Applied,
        };
        out.push(MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            state,
        });
    }
    for a in &applied {
        if !MIGRATOR.iter().any(|m| m.version == a.version) {
            out.push(MigrationStatus {
                version: a.version,
                description: a.description.clone(),
                state: MigrationState::Unknown,
            });
        }
    }
    out.sort_by_key(|s| s.version);
    Ok(out)
}

async fn applied_migrations(conn: &mut PgConnection) -> Result<Vec<Applied>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get("version")?,
                description: r.try_get("description")?,
                success: r.try_get("success")?,
                checksum: r.try_get("checksum")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// The conditions under which neither `migrate` nor `serve` may touch the database.
fn refuse_unsafe(status: &[MigrationStatus]) -> Result<()> {
    if let Some(newest) = status
        .iter()
        .filter(|s| s.state == MigrationState::Unknown)
        .map(|s| s.version)
        .max()
    {
        return Err(StoreError::SchemaTooNew {
            database: newest,
            binary: binary_version(),
        });
    }
    if let Some(s) = status.iter().find(|s| s.state == MigrationState::Dirty) {
        return Err(StoreError::DirtyMigration(s.version));
    }
    if let Some(s) = status.iter().find(|s| s.state == MigrationState::Modified) {
        return Err(StoreError::ModifiedMigration(s.version));
    }
    Ok(())
}

struct Applied {
    version: i64,
    description: String,
    success: bool,
    checksum: Vec<u8>,
}

/// The status as JSON, for `tern migrate --status --json`.
pub fn status_json(status: &[MigrationStatus]) -> serde_json::Value {
    json!(status
        .iter()
        .map(|s| json!({"version": s.version, "description": s.description, "state": s.state.as_str()}))
        .collect::<Vec<_>>())
}
