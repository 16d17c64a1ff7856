//! Activating policy bundles: the loop that follows a policy directory, records every bundle
//! that becomes active in the database, and reports every rejected change. The daemon runs it;
//! `tern policy watch` runs it alone, so operators can see what a deployment would accept.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use tern_policy::{Bundle, WatchEvent, WatchOptions, Watcher};
use tern_store::Store;
use tokio::sync::mpsc;

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

/// How long to wait before retrying to record an activation while the database is away.
const RETRY: Duration = Duration::from_secs(2);

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
    run_loop(store, unrecorded, events, shutdown_signal(), None).await;
    watcher.stop();
    Ok(ExitCode::SUCCESS)
}

/// Records activations and reports rejections until a shutdown signal. An activation that cannot
/// be recorded (the database is away) is retried until it is, and a newer one replaces it.
pub(crate) async fn run_loop(
    store: &Store,
    mut unrecorded: Option<Arc<Bundle>>,
    mut events: mpsc::UnboundedReceiver<WatchEvent>,
    shutdown: impl std::future::Future<Output = ()>,
    metrics: Option<Arc<tern_server::Metrics>>,
) {
    tokio::pin!(shutdown);
    loop {
        if let Some(bundle) = &unrecorded {
            if record(store, bundle).await.is_ok() {
                unrecorded = None;
            }
        }
        let retry = async {
            if unrecorded.is_some() {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            () = retry => {}
            event = events.recv() => match event {
                Some(WatchEvent::Activated(bundle)) => {
                    if let Some(m) = &metrics {
                        m.inc("tern_policy_reloads_total", &[("result", "ok")]);
                        m.set_info("tern_policy_info", "version", &bundle.version);
                    }
                    unrecorded = record(store, &bundle).await.err().map(|()| bundle.clone());
                    say(&format!("activated {} ({} documents)", bundle.version, bundle.documents().len()));
                }
                Some(WatchEvent::Rejected(rejected)) => {
                    if let Some(m) = &metrics {
                        m.inc("tern_policy_reloads_total", &[("result", "rejected")]);
                    }
                    say(&format!(
                        "rejected {}; the active bundle keeps serving:\n{}",
                        rejected.version,
                        rejected.findings.to_text().trim_end()
                    ));
                }
                None => return,
            },
        }
    }
}

/// Records an activation; on failure says so and leaves the retry to the caller.
pub(crate) async fn record(store: &Store, bundle: &Bundle) -> Result<(), ()> {
    store
        .record_policy_activation(&bundle.version, &bundle.canonical_json(), Utc::now())
        .await
        .map_err(|e| eprintln!("warning: cannot record policy {} yet: {e}", bundle.version))
}

/// The watcher reports on a std channel from its own thread; this thread hands its events to
/// the async side.
pub(crate) fn forward(watcher: &Watcher) -> mpsc::UnboundedReceiver<WatchEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = watcher.subscribe();
    std::thread::spawn(move || {
        while let Ok(event) = events.recv() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    rx
}

/// Prints one line (or block) to stdout and flushes it, so a pipe sees each event as it happens.
pub(crate) fn say(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
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
