//! Runs the cron schedules of the active policy: its Replan documents and its scheduled
//! Generators (keyed `generator/NAME` in `replan_runs`, beside the replans' own names), and the
//! daemon's model training when `--train-schedule` is given (keyed `train`).
//!
//! Every replica runs this loop; each firing runs on exactly one of them: the first to claim
//! `(job, firing)` in the database runs it, the others skip it. Runs of one replica are
//! sequential, and the replan lock keeps plans of different replicas from overlapping.
//!
//! When jobs fire follows the Kubernetes CronJob model:
//! - A job that has never run starts at its next firing after it was first seen: a job added
//!   at 13:38 with a 09:00 schedule first runs tomorrow at 09:00, and a fresh database runs
//!   nothing at start.
//! - A firing that passed while this replica was up but busy (a long plan) runs late, once.
//! - A firing that passed while no replica was up runs when one comes back only if the
//!   document's `startingDeadline` allows it (no more than that late); without one it is
//!   skipped. Either way it runs at most once, as the latest missed firing, never once per
//!   missed firing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use tern_policy::{Bundle, CronSchedule, Generator, Replan, Trigger};

use crate::daemon::Daemon;

/// The loop wakes at least this often, to pick up policy changes.
const MAX_SLEEP: TimeDelta = TimeDelta::seconds(30);

/// The background loop of a daemon on the system clock. (On a simulated clock there is no loop:
/// `AdvanceClock` runs [`Cron::pass`] itself.)
pub async fn run(daemon: Arc<Daemon>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut cron = Cron::new(daemon.clock.now());
    loop {
        let wake = cron.pass(&daemon).await.wake;
        let sleep = (wake - daemon.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(5));
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// What one replica remembers between passes: the latest firing handled (run here, run
/// elsewhere, or skipped) per job, when it started, and when it last looked.
#[derive(Debug)]
pub struct Cron {
    handled: HashMap<String, DateTime<Utc>>,
    /// When this replica started: firings before it were missed while it was down.
    started: DateTime<Utc>,
    /// The previous pass: a job not seen before appeared after it.
    last_pass: Option<DateTime<Utc>>,
}

/// The outcome of one pass.
pub struct Pass {
    /// When the next pass is due.
    pub wake: DateTime<Utc>,
    /// The jobs this replica ran, with their firings.
    pub ran: Vec<(String, DateTime<Utc>)>,
}

impl Cron {
    /// A replica that starts at `started` (its clock's time).
    pub fn new(started: DateTime<Utc>) -> Cron {
        Cron {
            handled: HashMap::new(),
            started,
            last_pass: None,
        }
    }

    /// Runs, one after the other, every job whose latest firing up to now has not been handled.
    pub async fn pass(&mut self, daemon: &Daemon) -> Pass {
        let bundle = daemon.watcher.active();
        let clock = &daemon.clock;
        let store = &daemon.store;
        let mut wake = clock.now() + MAX_SLEEP;
        let mut ran = Vec::new();
        for job in jobs(&bundle, daemon.training_schedule()) {
            let name = &job.key();
            let now = clock.now();
            let since = match self.handled.get(name) {
                Some(t) => *t,
                None => match store.last_replan_run(name).await {
                    // Never run anywhere: it starts at its next firing after it appeared.
                    Ok(last) => last.unwrap_or(self.last_pass.unwrap_or(self.started)),
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, "cannot read past cron runs; retrying");
                        wake = wake.min(now + TimeDelta::seconds(2));
                        continue;
                    }
                },
            };
            let latest = latest_firing(&job, since, now);
            self.handled.insert(name.clone(), latest.unwrap_or(since));
            let due = latest.filter(|at| {
                let missed_while_down = *at < self.started;
                let allowed = !missed_while_down
                    || job.starting_deadline().is_some_and(|d| now - *at <= d);
                if !allowed {
                    tracing::info!(
                        job = %name,
                        firing = %at,
                        "a firing missed while tern was down is skipped (no startingDeadline allows it)"
                    );
                }
                allowed
            });
            if let Some(at) = due {
                match store.claim_replan_run(name, at, &daemon.holder, now).await {
                    Ok(true) => {
                        run_job(daemon, &job, at).await;
                        ran.push((name.clone(), at));
                    }
                    Ok(false) => {
                        tracing::debug!(job = %name, firing = %at, "another replica runs this firing")
                    }
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, "cannot claim the cron run; retrying");
                        // Not handled: try this firing again on the next pass.
                        self.handled.insert(name.clone(), since);
                        wake = wake.min(clock.now() + TimeDelta::seconds(2));
                    }
                }
            }
            let from = self.handled[name].max(clock.now());
            if let Some(next) = next_firing(&job, from) {
                wake = wake.min(next);
            }
        }
        self.last_pass = Some(clock.now());
        Pass { wake, ran }
    }
}

/// Something that runs on a cron schedule.
pub enum Job<'b> {
    Replan(&'b Replan),
    Generator(&'b Generator),
    /// The daemon's model training (`tern serve --train-schedule`), in UTC.
    Train(&'b CronSchedule),
}

impl Job<'_> {
    /// Its name in `replan_runs` and in `GetStatus`: a Replan's own name, or `generator/NAME`
    /// (a name cannot contain `/`, so the two never collide).
    pub fn key(&self) -> String {
        match self {
            Job::Replan(r) => r.metadata.name.clone(),
            Job::Generator(g) => format!("generator/{}", g.metadata.name),
            Job::Train(_) => "train".to_string(),
        }
    }

    /// How late a firing missed while tern was down may still run.
    fn starting_deadline(&self) -> Option<TimeDelta> {
        match self {
            Job::Replan(r) => r.starting_deadline,
            Job::Generator(g) => match &g.trigger {
                Trigger::Schedule {
                    starting_deadline, ..
                } => *starting_deadline,
                Trigger::Event { .. } => None,
            },
            // Training that missed its night waits for the next: it would compete with the
            // morning's traffic.
            Job::Train(_) => None,
        }
    }

    fn schedule(&self) -> (&CronSchedule, Option<Tz>) {
        match self {
            Job::Replan(r) => (&r.cron, r.timezone),
            Job::Generator(g) => match &g.trigger {
                Trigger::Schedule { cron, timezone, .. } => (cron, *timezone),
                Trigger::Event { .. } => unreachable!("jobs() keeps only scheduled generators"),
            },
            Job::Train(schedule) => (schedule, None),
        }
    }
}

/// The cron jobs: the bundle's Replans and scheduled Generators, and training when scheduled.
pub fn jobs<'b>(bundle: &'b Bundle, training: Option<&'b CronSchedule>) -> Vec<Job<'b>> {
    let replans = bundle.replans.iter().map(Job::Replan);
    let generators = bundle
        .generators
        .iter()
        .filter(|g| matches!(g.trigger, Trigger::Schedule { .. }))
        .map(Job::Generator);
    // Training first: a replan due at the same firing then plans with the new model.
    training
        .map(Job::Train)
        .into_iter()
        .chain(replans)
        .chain(generators)
        .collect()
}

async fn run_job(daemon: &Daemon, job: &Job<'_>, at: DateTime<Utc>) {
    let name = job.key();
    let store = &daemon.store;
    match job {
        Job::Replan(r) => match daemon.replan(&r.metadata.name, Vec::new()).await {
            Ok(summary) => {
                if let Err(e) = store.finish_replan_run(&name, at, summary.plan_id).await {
                    tracing::warn!(replan = %name, error = %e, "cannot record the run's plan");
                }
            }
            Err(e) => {
                tracing::error!(replan = %name, firing = %at, error = %e, "the cron replan failed")
            }
        },
        Job::Generator(g) => {
            // A failed run is not retried: its firing is claimed, and the next firing creates
            // what is due then (a digest twice in a row would be worse than one missed).
            if let Err(e) = daemon.run_generator(g, at).await {
                tracing::error!(generator = %name, firing = %at, error = %e, "the scheduled generator failed")
            }
        }
        Job::Train(_) => match daemon.train(at).await {
            Ok(_) => {}
            Err(e) if e.is::<crate::train::NotEnoughHistory>() => {
                tracing::info!(firing = %at, reason = %e, "scheduled training skipped")
            }
            Err(e) => tracing::error!(firing = %at, error = %e, "the scheduled training failed"),
        },
    }
}

/// The latest firing of `job` in `(since, now]`.
pub fn latest_firing(
    job: &Job<'_>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut latest = None;
    // Bounded: an every-second schedule after a day's downtime is 86,400 steps.
    for t in firings(job, since).take(1_000_000) {
        if t > now {
            break;
        }
        latest = Some(t);
    }
    latest
}

/// The first firing after `after`.
pub fn next_firing(job: &Job<'_>, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    firings(job, after).next()
}

fn firings<'a>(
    job: &'a Job<'_>,
    after: DateTime<Utc>,
) -> Box<dyn Iterator<Item = DateTime<Utc>> + 'a> {
    let (schedule, tz) = job.schedule();
    match tz {
        Some(tz) => Box::new(
            schedule
                .schedule
                .after(&after.with_timezone(&tz))
                .map(|t| t.with_timezone(&Utc)),
        ),
        None => Box::new(schedule.schedule.after(&after)),
    }
}

/// This replica's name in `replan_runs`: the host name and the process id.
pub fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}
