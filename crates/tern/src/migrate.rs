//! `tern migrate`: apply the embedded migrations, or list them.

use std::process::ExitCode;

use anyhow::Result;
use tern_store::migrate::{binary_version, status_json};
use tern_store::MigrationState;

use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// List applied and pending migrations instead of applying them. Exits 1 when any is
    /// pending, so deployment scripts can wait on it.
    #[arg(long)]
    status: bool,
    /// With --status: print JSON.
    #[arg(long, requires = "status")]
    json: bool,
}

pub async fn run(url: Option<&str>, args: Args) -> Result<ExitCode> {
    let db = Database::open_unmigrated(url).await?;
    let result = if args.status {
        status(&db, args.json).await
    } else {
        apply(&db).await
    };
    db.close().await;
    result
}

async fn apply(db: &Database) -> Result<ExitCode> {
    let applied = db.store.migrate().await?;
    if applied.is_empty() {
        println!(
            "the schema is up to date (version {}); nothing to apply",
            binary_version()
        );
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        println!(
            "applied {} migration(s): {}; the schema is at version {}",
            applied.len(),
            list.join(", "),
            binary_version()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(db: &Database, json: bool) -> Result<ExitCode> {
    let status = db.store.migration_status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
    } else {
        println!("{:>8}  {:<32}  state", "version", "description");
        for s in &status {
            println!(
                "{:>8}  {:<32}  {}",
                s.version,
                s.description,
                s.state.as_str()
            );
        }
    }
    let all_applied = status.iter().all(|s| s.state == MigrationState::Applied);
    Ok(if all_applied {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
