//! Activating policy bundles: the loop that follows the policy watcher, records every bundle
//! that becomes active in the database, and reports every rejected change. The daemon runs it;
//! `tern policy watch` runs it alone, so operators can see what a deployment would accept.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tern_policy::{Bundle, WatchEvent, Watcher};
use tern_store::Store;
use tokio::sync::mpsc;

/// How long to wait before retrying to record an activation while the database is away.
const RETRY: Duration = Duration::from_secs(2);

/// Records activations and reports rejections until a shutdown signal. An activation that cannot
/// be recorded (the database is away) is retried until it is, and a newer one replaces it.
///
/// Each activation and rejection is told to `say` as a line (`activated <version> (<n>
/// documents)`, `rejected <digest>; ...` with the findings), which `tern policy watch` and
/// `tern serve` print.
pub async fn run_loop(
    store: &Store,
    mut unrecorded: Option<Arc<Bundle>>,
    mut events: mpsc::UnboundedReceiver<WatchEvent>,
    shutdown: impl std::future::Future<Output = ()>,
    metrics: Option<Arc<tern_server::Metrics>>,
    say: fn(&str),
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
pub async fn record(store: &Store, bundle: &Bundle) -> Result<(), ()> {
    store
        .record_policy_activation(&bundle.version, &bundle.canonical_json(), Utc::now())
        .await
        .map_err(|e| tracing::warn!(version = %bundle.version, error = %e, "cannot record the policy yet; retrying"))
}

/// The watcher reports on a std channel from its own thread; this thread hands its events to
/// the async side.
pub fn forward(watcher: &Watcher) -> mpsc::UnboundedReceiver<WatchEvent> {
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
