//! The cron schedules of the active policy: its Replan documents and its scheduled Generators
//! (keyed `generator/NAME` in `cron_runs`, beside the replans' own names), and the daemon's
//! model training when it trains on a schedule (keyed `train`); and [`Cron`], what one replica
//! remembers to decide which firing is due. The daemon runs the jobs ([`crate::Daemon`]'s cron
//! pass); this module only decides when.
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

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use tern_policy::{Bundle, CronSchedule, Generator, Replan, Trigger};

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

impl Cron {
    /// A replica that starts at `started` (its clock's time).
    pub fn new(started: DateTime<Utc>) -> Cron {
        Cron {
            handled: HashMap::new(),
            started,
            last_pass: None,
        }
    }

    /// Where to look for `name`'s next firing from: the latest firing handled here, else its
    /// last recorded run anywhere (`last_run`), else, for a job that never ran, the moment this
    /// replica first saw it: its next firing after it appeared, never one that had passed.
    pub fn since(&self, name: &str, last_run: Option<DateTime<Utc>>) -> DateTime<Utc> {
        match self.handled.get(name) {
            Some(t) => *t,
            None => last_run.unwrap_or(self.last_pass.unwrap_or(self.started)),
        }
    }

    /// Whether this replica has handled `name` before (then [`Cron::since`] needs no
    /// `last_run`).
    pub fn knows(&self, name: &str) -> bool {
        self.handled.contains_key(name)
    }

    /// The firing of `job` to run now, if any: its latest in `(since, now]`, unless that one
    /// passed while this replica was down and no `startingDeadline` allows it. Either way the
    /// latest firing counts as handled.
    pub fn due(
        &mut self,
        job: &Job<'_>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let name = job.key();
        let latest = latest_firing(job, since, now);
        self.handled.insert(name.clone(), latest.unwrap_or(since));
        latest.filter(|at| {
            let missed_while_down = *at < self.started;
            let allowed =
                !missed_while_down || job.starting_deadline().is_some_and(|d| now - *at <= d);
            if !allowed {
                tracing::info!(
                    job = %name,
                    firing = %at,
                    "a firing missed while tern was down is skipped (no startingDeadline allows it)"
                );
            }
            allowed
        })
    }

    /// Forgets that the firings up to `since` were handled: the claim failed and the next pass
    /// tries again.
    pub fn retry(&mut self, name: &str, since: DateTime<Utc>) {
        self.handled.insert(name.to_string(), since);
    }

    /// When `job` fires next after what was handled (or `now`, if later).
    pub fn next_wake(&self, job: &Job<'_>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = self
            .handled
            .get(&job.key())
            .copied()
            .unwrap_or(now)
            .max(now);
        next_firing(job, from)
    }

    /// Marks the end of a pass: a job first seen in a later pass appeared after `now`.
    pub fn finish_pass(&mut self, now: DateTime<Utc>) {
        self.last_pass = Some(now);
    }
}

/// Something that runs on a cron schedule.
pub enum Job<'b> {
    /// A Replan's full replans (`cron`).
    Replan(&'b Replan),
    /// A Replan's incremental replans (`incremental`), keyed `incremental/NAME`.
    Incremental(&'b Replan),
    Generator(&'b Generator),
    /// The daemon's model training (`tern serve --train-schedule`), in UTC.
    Train(&'b CronSchedule),
}

impl Job<'_> {
    /// Its name in `cron_runs` and in `GetStatus`: a Replan's own name, or `generator/NAME`
    /// or `incremental/NAME` (a name cannot contain `/`, so they never collide).
    pub fn key(&self) -> String {
        match self {
            Job::Replan(r) => r.metadata.name.clone(),
            Job::Incremental(r) => format!("incremental/{}", r.metadata.name),
            Job::Generator(g) => format!("generator/{}", g.metadata.name),
            Job::Train(_) => "train".to_string(),
        }
    }

    /// How late a firing missed while tern was down may still run.
    pub fn starting_deadline(&self) -> Option<TimeDelta> {
        match self {
            Job::Replan(r) | Job::Incremental(r) => r.starting_deadline,
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
            Job::Incremental(r) => match &r.incremental {
                Some(cron) => (cron, r.timezone),
                None => unreachable!("jobs() keeps only replans with an incremental schedule"),
            },
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
    let incremental = bundle
        .replans
        .iter()
        .filter(|r| r.incremental.is_some())
        .map(Job::Incremental);
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
        .chain(incremental)
        .chain(generators)
        .collect()
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

/// Every firing of `job` after `after`, in UTC, read in the job's zone.
pub fn firings<'a>(
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

/// This replica's name in `cron_runs`: the host name and the process id.
pub fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Scheduled training never catches up: a night missed while tern was down waits for the
    /// next, as docs/policies.md says (Train jobs have no startingDeadline).
    #[test]
    fn a_training_firing_missed_while_down_is_skipped_and_the_next_one_runs() {
        let nightly = CronSchedule::parse("0 0 2 * * *").unwrap();
        let job = Job::Train(&nightly);
        // Last trained on the 1st at 02:00; down until the 3rd at 09:00.
        let mut cron = Cron::new(t("2026-03-03T09:00:00Z"));
        let since = cron.since("train", Some(t("2026-03-01T02:00:00Z")));
        assert_eq!(cron.due(&job, since, t("2026-03-03T09:00:00Z")), None);
        // The next night runs.
        let since = cron.since("train", None);
        assert_eq!(
            cron.due(&job, since, t("2026-03-04T02:00:05Z")),
            Some(t("2026-03-04T02:00:00Z"))
        );
    }
}
