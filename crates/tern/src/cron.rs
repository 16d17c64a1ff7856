//! Replans on the cron schedules of the active policy's Replan documents.
//!
//! Every replica runs this loop; each firing runs on exactly one of them: the first to claim
//! `(replan, firing)` in the database runs it, the others skip it. A firing missed while no
//! replica was up (or while a long plan ran) is run once, as the latest missed firing, never once
//! per missed firing. Runs of one replica are sequential, and the replan lock keeps plans of
//! different replicas from overlapping.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tern_policy::{Replan, Watcher};
use tern_server::Clock;
use tern_store::Store;

use crate::daemon::Daemon;

/// Without a record of any earlier run, a firing within this long before start counts as missed
/// and runs once at start.
const FIRST_LOOKBACK: TimeDelta = TimeDelta::days(1);
/// The loop wakes at least this often, to pick up policy changes.
const MAX_SLEEP: TimeDelta = TimeDelta::seconds(30);

pub async fn run(
    daemon: Arc<Daemon>,
    store: Store,
    watcher: Arc<Watcher>,
    clock: Arc<dyn Clock>,
    holder: String,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // The latest firing handled (run here, run elsewhere, or skipped), per Replan document.
    let mut handled: HashMap<String, DateTime<Utc>> = HashMap::new();
    loop {
        let bundle = watcher.active();
        let mut wake = clock.now() + MAX_SLEEP;
        for replan in &bundle.replans {
            let name = &replan.metadata.name;
            let now = clock.now();
            let since = match handled.get(name) {
                Some(t) => *t,
                None => match store.last_replan_run(name).await {
                    Ok(last) => last.unwrap_or(now - FIRST_LOOKBACK),
                    Err(e) => {
                        tracing::warn!(replan = %name, error = %e, "cannot read past replan runs; retrying");
                        wake = wake.min(now + TimeDelta::seconds(2));
                        continue;
                    }
                },
            };
            let due = latest_firing(replan, since, now);
            handled.insert(name.clone(), due.unwrap_or(since));
            if let Some(at) = due {
                match store.claim_replan_run(name, at, &holder, now).await {
                    Ok(true) => match daemon.replan(name, Vec::new()).await {
                        Ok(summary) => {
                            if let Err(e) = store.finish_replan_run(name, at, summary.plan_id).await
                            {
                                tracing::warn!(replan = %name, error = %e, "cannot record the run's plan");
                            }
                        }
                        Err(e) => {
                            tracing::error!(replan = %name, firing = %at, error = %e, "the cron replan failed")
                        }
                    },
                    Ok(false) => {
                        tracing::debug!(replan = %name, firing = %at, "another replica runs this firing")
                    }
                    Err(e) => {
                        tracing::warn!(replan = %name, error = %e, "cannot claim the replan run; retrying");
                        // Not handled: try this firing again on the next pass.
                        handled.insert(name.clone(), since);
                        wake = wake.min(clock.now() + TimeDelta::seconds(2));
                    }
                }
            }
            let from = handled[name].max(clock.now());
            if let Some(next) = next_firing(replan, from) {
                wake = wake.min(next);
            }
        }
        let sleep = (wake - clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(5));
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// The latest firing of `replan` in `(since, now]`.
pub fn latest_firing(
    replan: &Replan,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut latest = None;
    // Bounded: an every-second schedule after a day's downtime is 86,400 steps.
    for t in firings(replan, since).take(1_000_000) {
        if t > now {
            break;
        }
        latest = Some(t);
    }
    latest
}

/// The first firing after `after`.
pub fn next_firing(replan: &Replan, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    firings(replan, after).next()
}

fn firings(replan: &Replan, after: DateTime<Utc>) -> Box<dyn Iterator<Item = DateTime<Utc>> + '_> {
    match replan.timezone {
        Some(tz) => Box::new(
            replan
                .cron
                .schedule
                .after(&after.with_timezone(&tz))
                .map(|t| t.with_timezone(&Utc)),
        ),
        None => Box::new(replan.cron.schedule.after(&after)),
    }
}

/// This replica's name in `replan_runs`: the host name and the process id.
pub fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}
