//! `tern policy watch`: the daemon's activation loop ([`tern_daemon::activate`]) run alone, so
//! operators can see what a deployment would accept; and the output helpers `tern serve` shares.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use tern_daemon::activate::{forward, record, run_loop};
use tern_policy::{WatchOptions, Watcher};
use tern_store::Store;

use crate::output::say;

use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The bundle directory.
    pub dir: PathBuf,
    /// Milliseconds between two reads of the directory.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
    /// Milliseconds the files must stay unchanged before they are validated.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub settle_ms: u64,
}

/// `tern policy watch`: runs until SIGINT or SIGTERM.
pub async fn watch(url: Option<&str>, args: WatchArgs) -> Result<ExitCode> {
    let db = Database::open(url).await?;
    let result = follow(&db.store, &args).await;
    db.close().await;
    result
}

async fn follow(store: &Store, args: &WatchArgs) -> Result<ExitCode> {
    store.check_schema().await?;
    let options = WatchOptions {
        poll_interval: Duration::from_millis(args.poll_ms),
        settle: Duration::from_millis(args.settle_ms),
    };
    let watcher = match Watcher::start(&args.dir, options) {
        Ok(watcher) => watcher,
        Err(findings) => {
            print!("{}", findings.to_text());
            eprintln!(
                "error: {} is not a valid policy bundle; nothing was activated",
                args.dir.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let events = forward(&watcher);
    let active = watcher.active();
    // Recorded before it is announced, so that whoever reads the announcement finds the row.
    let unrecorded = record(store, &active).await.err().map(|()| active.clone());
    say(&format!(
        "active {} ({} documents)",
        active.version,
        active.documents().len()
    ));
    run_loop(store, unrecorded, events, shutdown_signal(), None, say).await;
    watcher.stop();
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
