//! Hot reload: a [`Watcher`] polls a bundle directory and activates new valid bundles
//! atomically, keeping the last good one when a change is bad.
//!
//! Polling (rather than inotify) is deliberate: it sees every way a directory changes —
//! editors' save-by-rename, `git checkout`, and the Kubernetes ConfigMap update, which swaps a
//! `..data` symlink to a new timestamped directory — with one mechanism that behaves the same on
//! every filesystem, including network and overlay mounts where change events are unreliable.
//! A poll reads the policy files (they are small) and hashes their bytes.
//!
//! A change is acted on once the content has been the same for two polls and for at least
//! `settle`, so a half-written file is normally never seen; if one is, it is just a bad bundle
//! that is rejected, and the complete file activates on a later poll. The bundle is validated
//! from the bytes that were hashed, so a file changing between hashing and loading cannot mix
//! two states.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bundle::{content_digest, read_files, Bundle, SourceFile};
use crate::finding::Findings;

/// How often to look, and how long content must stay unchanged before it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Time between two reads of the directory.
    pub poll_interval: Duration,
    /// How long the content must stay unchanged (and at least two polls) before it is
    /// validated.
    pub settle: Duration,
}

impl Default for WatchOptions {
    /// One poll a second and two seconds of quiet: invisible cost, and a policy change is live
    /// a few seconds after it lands.
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(1),
            settle: Duration::from_secs(2),
        }
    }
}

/// The last rejected change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The digest of the rejected files' bytes ([`content_digest`]): a bad bundle has no
    /// canonical content and so no version of its own.
    pub version: String,
    /// Why it was rejected.
    pub findings: Findings,
}

/// What the watcher is doing, for health endpoints and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchStatus {
    /// The version of the bundle being served.
    pub active_version: String,
    /// The last rejected change, cleared when a valid bundle is seen again.
    pub last_error: Option<Rejected>,
    /// How many times a new bundle was activated after the first.
    pub reloads: u64,
    /// How many changes were rejected.
    pub failures: u64,
}

/// What subscribers are told.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A new bundle is active.
    Activated(Arc<Bundle>),
    /// A change was rejected; the previous bundle is still active.
    Rejected(Rejected),
}

struct Shared {
    active: RwLock<Arc<Bundle>>,
    status: Mutex<WatchStatus>,
    subscribers: Mutex<Vec<mpsc::Sender<WatchEvent>>>,
    stop: Mutex<bool>,
    wake: Condvar,
    stopped: AtomicBool,
}

/// Watches a bundle directory on a background thread. Dropping it stops the thread.
pub struct Watcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("status", &self.status())
            .finish()
    }
}

impl Watcher {
    /// Loads the bundle in `dir` and starts watching it. Refuses to start (with every finding)
    /// when the bundle is not valid: a daemon should not come up without a policy.
    pub fn start(dir: impl AsRef<Path>, options: WatchOptions) -> Result<Watcher, Findings> {
        let dir = dir.as_ref().to_path_buf();
        let files = read_files(&dir).map_err(|e| Findings(vec![e.to_finding()]))?;
        let bundle = Bundle::from_files(&dir, &files)?;
        let shared = Arc::new(Shared {
            status: Mutex::new(WatchStatus {
                active_version: bundle.version.clone(),
                last_error: None,
                reloads: 0,
                failures: 0,
            }),
            active: RwLock::new(Arc::new(bundle)),
            subscribers: Mutex::new(Vec::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        let digest = content_digest(&files);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("tern-policy-watch".to_string())
            .spawn(move || poll_loop(&thread_shared, &dir, options, digest))
            .map_err(|e| {
                Findings(vec![crate::Finding::error(
                    Path::new("."),
                    crate::Pos::NONE,
                    format!("cannot start the policy watcher thread: {e}"),
                )])
            })?;
        Ok(Watcher {
            shared,
            thread: Some(thread),
        })
    }

    /// The bundle being served. Cheap (one `Arc` clone); hold it for the duration of one
    /// decision, such as a plan, so that the decision sees one version throughout.
    pub fn active(&self) -> Arc<Bundle> {
        Arc::clone(
            &self
                .shared
                .active
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// A snapshot of the watcher's status.
    pub fn status(&self) -> WatchStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Receives an event for every activation and rejection from now on.
    pub fn subscribe(&self) -> mpsc::Receiver<WatchEvent> {
        let (tx, rx) = mpsc::channel();
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx
    }

    /// Whether the polling thread is still running (it only stops when asked).
    pub fn is_running(&self) -> bool {
        !self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Stops the polling thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        *self
            .shared
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sleeps for `d` unless asked to stop; returns whether to stop.
fn sleep_or_stop(shared: &Shared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut stop = shared.stop.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if *stop {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        stop = shared
            .wake
            .wait_timeout(stop, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// What one poll saw: the files, or why they could not be read (a directory mid-swap, or gone).
enum Seen {
    Files(Vec<SourceFile>),
    Unreadable(Findings),
}

fn poll_loop(shared: &Shared, dir: &Path, options: WatchOptions, initial: String) {
    let mut processed = initial.clone();
    let mut candidate: (String, Instant) = (initial, Instant::now());
    while !sleep_or_stop(shared, options.poll_interval) {
        let (digest, seen) = match read_files(dir) {
            Ok(files) => (content_digest(&files), Seen::Files(files)),
            Err(e) => {
                let text = e.to_string();
                let findings = Findings(vec![e.to_finding()]);
                let digest = crate::version_of(&serde_json::json!({ "unreadable": text }));
                (digest, Seen::Unreadable(findings))
            }
        };
        if digest != candidate.0 {
            candidate = (digest, Instant::now());
            continue;
        }
        if candidate.1.elapsed() < options.settle || digest == processed {
            continue;
        }
        processed = digest.clone();
        let result = match seen {
            // Loading never panics by design; should a bug make it, the watcher must keep
            // serving the active bundle rather than die, so a panic is one more rejection.
            Seen::Files(files) => {
                catch_unwind(AssertUnwindSafe(|| Bundle::from_files(dir, &files))).unwrap_or_else(
                    |_| {
                        Err(Findings(vec![crate::Finding::error(
                            dir,
                            crate::Pos::NONE,
                            "internal error while loading the bundle (a bug in tern-policy)",
                        )]))
                    },
                )
            }
            Seen::Unreadable(findings) => Err(findings),
        };
        let event = match result {
            Ok(bundle) => {
                let mut status = shared.status.lock().unwrap_or_else(PoisonError::into_inner);
                status.last_error = None;
                if bundle.version == status.active_version {
                    // The same policies written differently, or a revert to the active
                    // bundle after a rejected change: nothing to activate.
                    continue;
                }
                let bundle = Arc::new(bundle);
                *shared
                    .active
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&bundle);
                status.active_version = bundle.version.clone();
                status.reloads += 1;
                WatchEvent::Activated(bundle)
            }
            Err(findings) => {
                let rejected = Rejected {
                    version: digest,
                    findings,
                };
                let mut status = shared.status.lock().unwrap_or_else(PoisonError::into_inner);
                status.failures += 1;
                status.last_error = Some(rejected.clone());
                WatchEvent::Rejected(rejected)
            }
        };
        shared
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|tx| tx.send(event.clone()).is_ok());
    }
    shared.stopped.store(true, Ordering::SeqCst);
}
