//! What the daemon does between requests: replans (on demand, and later on cron), the active
//! model, and the status operators read. The gRPC server reaches it through
//! [`tern_server::Control`].
//!
//! A replan: take the replan lock (one replica at a time, across the database), read the active
//! policy bundle and model once, load what the users with open opportunities need from the store,
//! plan on a blocking thread, and publish the schedule in one transaction. The bundle and the
//! model are read per replan, so a reloaded policy or a newly promoted model applies to the next
//! plan without a restart.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use tern_model::Model;
use tern_policy::{Bundle, CronSchedule, Watcher};
use tern_server::{
    Clock, Control, ControlError, DaemonStatus, ManualClock, Metrics, ReplanSummary, SystemClock,
};
use tern_store::{Scope, Store};

use crate::cron::{jobs, Cron, Job};
use crate::train::TrainSettings;
use crate::Error;

/// The trigger of the partial plan that follows new opportunities of an urgent priority class
/// (one that bypasses anything), from `Submit` or from events, recorded on the plan like a
/// Replan document's name.
pub const URGENT_TRIGGER: &str = "urgent";

pub struct Daemon {
    pub(crate) store: Store,
    pub(crate) watcher: Arc<Watcher>,
    model: tokio::sync::Mutex<Option<(String, Arc<Model>)>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Arc<Metrics>,
    /// This replica's name in `cron_runs`.
    pub(crate) holder: String,
    /// Set in simulation mode: the clock `AdvanceClock` moves.
    pub(crate) simulated: Option<Arc<ManualClock>>,
    /// How full replans are paged.
    pub(crate) paging: Paging,
    /// The cron state `AdvanceClock` passes over (simulation mode has no background loop).
    cron: tokio::sync::Mutex<Cron>,
    training: Option<Training>,
}

/// How pages and their leases are sized: plain data in [`DaemonConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paging {
    /// A sweep has one page per this many open opportunities (at least one page, at most
    /// [`tern_store::BUCKETS`]). A page's memory is about proportional to it.
    pub page_opportunities: u64,
    /// How long a replica holds a page before another may take it over.
    pub lease: TimeDelta,
    /// Pages this replica plans at once (at least 1).
    pub workers: u32,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            page_opportunities: 50_000,
            lease: TimeDelta::seconds(60),
            workers: 2,
        }
    }
}

/// Model training on a schedule, inside the daemon.
#[derive(Debug, Clone)]
pub struct Training {
    pub schedule: CronSchedule,
    pub settings: TrainSettings,
    /// Promote each new model that passes the promotion rule (never by force).
    pub promote: bool,
}

/// How a daemon runs besides its store, policies and metrics: plain data, which the binary fills
/// from its flags and a test fills directly.
pub struct DaemonConfig {
    /// This replica's name in `cron_runs` (see [`crate::cron::holder`]).
    pub holder: String,
    /// Simulation mode: the daemon's clock, moved only by `AdvanceClock`.
    pub simulated: Option<Arc<ManualClock>>,
    /// Model training on a schedule, if any.
    pub training: Option<Training>,
    /// How full replans are split into pages, and how long a page's lease lasts.
    pub paging: Paging,
}

impl Daemon {
    pub fn new(
        store: Store,
        watcher: Arc<Watcher>,
        metrics: Arc<Metrics>,
        config: DaemonConfig,
    ) -> Daemon {
        let clock: Arc<dyn Clock> = match &config.simulated {
            Some(c) => c.clone(),
            None => Arc::new(SystemClock),
        };
        let started = clock.now();
        Daemon {
            store,
            watcher,
            model: tokio::sync::Mutex::new(None),
            clock,
            metrics,
            holder: config.holder,
            simulated: config.simulated,
            paging: config.paging,
            cron: tokio::sync::Mutex::new(Cron::new(started)),
            training: config.training,
        }
    }

    /// The clock the daemon reads (the system's, or the simulated one `AdvanceClock` moves),
    /// which the gRPC handlers must read too.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The policy bundle in force now.
    pub fn active_policy(&self) -> Arc<Bundle> {
        self.watcher.active()
    }

    /// The training schedule, when the daemon trains.
    pub fn training_schedule(&self) -> Option<&CronSchedule> {
        self.training.as_ref().map(|t| &t.schedule)
    }

    /// Trains on the history up to `at`, registers the model, and promotes it when configured
    /// and the promotion rule allows. The next plan picks it up (models are read per plan).
    pub async fn train(&self, at: DateTime<Utc>) -> Result<String, Error> {
        let Some(training) = &self.training else {
            return Err(Error::Training(
                "this daemon has no training schedule".into(),
            ));
        };
        let started = Instant::now();
        let trained = match crate::train::train_and_register(
            &self.store,
            &training.settings,
            at,
            self.clock.now(),
        )
        .await
        {
            Ok(t) => t,
            Err(e) => {
                self.metrics
                    .inc("tern_trainings_total", &[("result", "failed")]);
                return Err(e);
            }
        };
        let refusals = tern_model::promotion_refusals(&trained.metrics);
        let promoted = training.promote && refusals.is_empty();
        if promoted {
            self.store
                .promote_model(&trained.version, self.clock.now())
                .await?;
        }
        self.metrics.inc(
            "tern_trainings_total",
            &[("result", if promoted { "promoted" } else { "registered" })],
        );
        tracing::info!(
            model = %trained.version,
            promoted,
            refusals = %refusals.join("; "),
            seconds = started.elapsed().as_secs_f64(),
            "trained a model"
        );
        Ok(trained.version)
    }

    /// The active model from the registry, loaded again only when the active version changed.
    pub(crate) async fn active_model(&self) -> Result<Option<(String, Arc<Model>)>, ControlError> {
        let mut cached = self.model.lock().await;
        // The version first: the artifact (megabytes) is read only when it changed, not for
        // every page of a full replan.
        let Some(version) = self.store.active_model_version().await? else {
            *cached = None;
            return Ok(None);
        };
        if cached.as_ref().is_some_and(|(v, _)| *v == version) {
            return Ok(cached.clone());
        }
        let Some(bytes) = self.store.model_artifact(&version).await? else {
            // Rolled back or replaced between the two reads: the next plan sees the new one.
            return Ok(cached.clone());
        };
        match Model::from_bytes(&bytes) {
            Ok(model) => {
                tracing::info!(model = %version, "loaded the active model");
                *cached = Some((version, Arc::new(model)));
                Ok(cached.clone())
            }
            // A broken artifact must not stop planning: keep the model that was serving.
            Err(e) => {
                tracing::error!(model = %version, error = %e, "cannot load the active model; keeping the previous one");
                Ok(cached.clone())
            }
        }
    }

    /// Runs one firing of a scheduled generator.
    pub async fn run_generator(
        &self,
        generator: &tern_policy::Generator,
        at: DateTime<Utc>,
    ) -> Result<crate::generators::Tally, ControlError> {
        crate::generators::run_scheduled(
            &self.store,
            generator,
            &self.metrics,
            at,
            self.clock.now(),
        )
        .await
    }

    /// Plans `users` and publishes; every user with open opportunities, page by page, when
    /// `users` is empty (a full replan).
    pub async fn replan(
        &self,
        trigger: &str,
        users: Vec<String>,
    ) -> Result<ReplanSummary, ControlError> {
        let result = if users.is_empty() {
            self.sweep(trigger).await
        } else {
            self.plan_users(trigger, users, Scope::Users).await
        };
        self.count_plan(trigger, result)
    }

    /// Plans the users whose inputs changed since they were last planned (see
    /// [`crate::replan`]), or everyone when the policy or model changed since the last full
    /// replan.
    pub async fn replan_incremental(&self, trigger: &str) -> Result<ReplanSummary, ControlError> {
        let result = self.incremental(trigger).await;
        self.count_plan(trigger, result)
    }

    fn count_plan(
        &self,
        trigger: &str,
        result: Result<ReplanSummary, ControlError>,
    ) -> Result<ReplanSummary, ControlError> {
        let m = &self.metrics;
        match &result {
            Ok(s) => {
                m.inc(
                    "tern_plans_total",
                    &[("trigger", trigger), ("result", "published")],
                );
                m.observe("tern_plan_duration_seconds", &[], s.duration_seconds);
                m.set("tern_plan_candidates", &[], s.candidates as f64);
                for (channel, n) in &s.chosen_per_channel {
                    m.add("tern_plan_chosen_total", &[("channel", channel)], *n as f64);
                }
                for (reason, n) in &s.suppressed_per_reason {
                    m.add(
                        "tern_plan_suppressed_total",
                        &[("reason", reason)],
                        *n as f64,
                    );
                }
                m.set_info(
                    "tern_model_info",
                    "version",
                    s.model_version.as_deref().unwrap_or("none"),
                );
            }
            Err(e) => {
                m.inc(
                    "tern_plans_total",
                    &[("trigger", trigger), ("result", "failed")],
                );
                tracing::error!(trigger, error = %e, "the plan failed");
            }
        }
        result
    }
}

impl Daemon {
    /// Plans `users` at once, because each just got a message of an urgent class: it must be due
    /// now, not at the next scheduled replan, which may come after it expires. The opportunities
    /// are stored already, so a plan that fails here is caught up by the next scheduled one.
    async fn plan_urgent(&self, mut users: Vec<String>) {
        users.sort_unstable();
        users.dedup();
        if users.is_empty() {
            return;
        }
        if let Err(e) = Daemon::replan(self, URGENT_TRIGGER, users).await {
            tracing::warn!(error = %e, "could not plan urgent messages at once");
        }
    }
}

#[tonic::async_trait]
impl Control for Daemon {
    async fn replan(&self, users: Vec<String>) -> Result<ReplanSummary, ControlError> {
        Daemon::replan(self, "manual", users).await
    }

    async fn submit_events(
        &self,
        events: Vec<tern_server::Event>,
    ) -> Result<tern_server::EventsSummary, ControlError> {
        let bundle = self.watcher.active();
        // Users an urgent class (one that bypasses anything: a password reset) may have
        // reached: planned at once, so that the message is due now rather than at the next
        // scheduled replan, which can come after it expires.
        let urgent_event = |kind: &str| {
            bundle.generators.iter().any(|g| {
                let on = match &g.trigger {
                    tern_policy::Trigger::Event { event, .. } => event == kind,
                    tern_policy::Trigger::Schedule { .. } => false,
                };
                on && bundle.urgent(g.priority)
            })
        };
        let urgent: Vec<String> = events
            .iter()
            .filter(|e| urgent_event(&e.event_type))
            .flat_map(|e| e.user_ids.iter().cloned())
            .collect();
        let summary = crate::generators::submit_events(
            &self.store,
            &bundle,
            &self.metrics,
            events,
            self.clock.now(),
        )
        .await?;
        if summary.opportunities_created > 0 {
            self.plan_urgent(urgent).await;
        }
        Ok(summary)
    }

    async fn submitted(&self, created: &[(String, String)]) {
        let bundle = self.watcher.active();
        let urgent: Vec<String> = created
            .iter()
            .filter(|(_, class)| {
                tern_policy::Priority::parse(class).is_some_and(|c| bundle.urgent(c))
            })
            .map(|(user, _)| user.clone())
            .collect();
        self.plan_urgent(urgent).await;
    }

    async fn advance_clock(
        &self,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, ControlError> {
        let Some(clock) = &self.simulated else {
            return Err(ControlError::Precondition(
                "the daemon runs on the system clock; start it with --simulate-from to drive its clock".into(),
            ));
        };
        // One advance at a time: the jobs of one must finish before time moves again.
        let mut cron = self.cron.lock().await;
        clock.advance(to).map_err(|now| {
            ControlError::Invalid(format!(
                "cannot move the clock back from {} to {}",
                now.to_rfc3339(),
                to.to_rfc3339()
            ))
        })?;
        Ok(self.cron_pass(&mut cron).await.ran)
    }

    fn vocabulary(&self) -> Option<tern_server::Vocabulary> {
        let bundle = self.watcher.active();
        Some(tern_server::Vocabulary {
            priorities: tern_policy::Priority::ALL
                .iter()
                .map(|p| p.to_string())
                .collect(),
            channels: bundle
                .channels
                .iter()
                .map(|c| c.metadata.name.clone())
                .collect(),
            categories: bundle
                .categories
                .iter()
                .map(|c| c.metadata.name.clone())
                .collect(),
        })
    }

    async fn status(&self) -> Result<DaemonStatus, ControlError> {
        let bundle = self.watcher.active();
        let rejected = self.watcher.status().last_error;
        let model = self.store.active_model_version().await?;
        let recent = self.store.recent_plans(5).await?;
        let now = self.clock.now();
        let next_runs = jobs(&bundle, self.training_schedule())
            .iter()
            .filter_map(|j| crate::cron::next_firing(j, now).map(|t| (j.key(), t)))
            .collect();
        Ok(DaemonStatus {
            policy_version: Some(bundle.version.clone()),
            last_reload_error: rejected
                .as_ref()
                .map(|r| r.findings.to_text().trim_end().to_string()),
            rejected_policy_version: rejected.map(|r| r.version),
            model_version: model,
            recent_plans: recent
                .into_iter()
                .map(|p| ReplanSummary {
                    plan_id: p.plan_id,
                    trigger: p.trigger.clone(),
                    policy_version: p.policy_version.clone(),
                    model_version: p.model_version.clone(),
                    started_at: Some(p.started_at),
                    published_at: p.published_at,
                    candidates: p.stats.candidates,
                    chosen_per_channel: p.stats.chosen,
                    suppressed_per_reason: p.stats.suppressed,
                    duration_seconds: p.stats.duration_seconds,
                })
                .collect(),
            next_runs,
            serving: true,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The cron jobs: `cron` decides which firing is due; the daemon claims and runs it.

/// The cron loop wakes at least this often, to pick up policy changes.
const MAX_SLEEP: TimeDelta = TimeDelta::seconds(30);

/// The outcome of one cron pass.
pub struct Pass {
    /// When the next pass is due.
    pub wake: DateTime<Utc>,
    /// The jobs this replica ran, with their firings.
    pub ran: Vec<(String, DateTime<Utc>)>,
}

/// The background cron loop of a daemon on the system clock, until `shutdown`. (On a simulated
/// clock there is no loop: `AdvanceClock` runs [`Daemon::cron_pass`] itself.)
pub async fn run_cron(daemon: Arc<Daemon>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut cron = Cron::new(daemon.clock.now());
    loop {
        let wake = daemon.cron_pass(&mut cron).await.wake;
        let sleep = (wake - daemon.clock.now())
            .to_std()
            .unwrap_or(std::time::Duration::ZERO)
            .max(std::time::Duration::from_millis(5));
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

impl Daemon {
    /// Runs, one after the other, every job whose latest firing up to now has not been
    /// handled, each firing on the one replica that claims it first.
    pub async fn cron_pass(&self, cron: &mut Cron) -> Pass {
        let bundle = self.watcher.active();
        let clock = &self.clock;
        let store = &self.store;
        let mut wake = clock.now() + MAX_SLEEP;
        let mut ran = Vec::new();
        for job in jobs(&bundle, self.training_schedule()) {
            let name = &job.key();
            let now = clock.now();
            let last_run = if cron.knows(name) {
                None
            } else {
                match store.last_cron_run(name).await {
                    Ok(last) => last,
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, "cannot read past cron runs; retrying");
                        wake = wake.min(now + TimeDelta::seconds(2));
                        continue;
                    }
                }
            };
            let since = cron.since(name, last_run);
            if let Some(at) = cron.due(&job, since, now) {
                match store.claim_cron_run(name, at, &self.holder, now).await {
                    Ok(true) => {
                        self.run_job(&job, at).await;
                        ran.push((name.clone(), at));
                    }
                    Ok(false) => {
                        tracing::debug!(job = %name, firing = %at, "another replica runs this firing");
                        if matches!(job, Job::Replan(_)) {
                            self.join_sweep().await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, "cannot claim the cron run; retrying");
                        // Not handled: try this firing again on the next pass.
                        cron.retry(name, since);
                        wake = wake.min(clock.now() + TimeDelta::seconds(2));
                    }
                }
            }
            if let Some(next) = cron.next_wake(&job, clock.now()) {
                wake = wake.min(next);
            }
        }
        // A full replan whose pages nobody works (their replica died) is taken over here, as
        // soon as their leases expire.
        if self.simulated.is_none() {
            if let Ok(Some(sweep)) = store.running_sweep().await {
                if let Err(e) = self.work_sweep(&sweep).await {
                    tracing::warn!(plan = sweep.plan_id, error = %e, "cannot plan pages of the running full replan");
                }
                let _ = self.finish_sweep(sweep.plan_id).await;
                // Look again when the first lease held on one of its pages expires.
                if let Ok(Some(expiry)) = store.next_page_expiry(sweep.plan_id).await {
                    wake = wake.min(expiry.max(clock.now()) + TimeDelta::milliseconds(100));
                }
            }
            // And notice a full replan another replica starts within half a lease.
            let lease = self.paging.lease.max(TimeDelta::seconds(2));
            wake = wake.min(clock.now() + lease / 2);
        }
        cron.finish_pass(clock.now());
        Pass { wake, ran }
    }

    /// Helps with the full replan another replica started for a firing this one lost: waits
    /// briefly for it to appear, then plans pages of it.
    async fn join_sweep(&self) {
        for _ in 0..50 {
            match self.store.running_sweep().await {
                Ok(Some(sweep)) => {
                    match self.work_sweep(&sweep).await {
                        Ok(pages) => {
                            tracing::info!(
                                plan = sweep.plan_id,
                                pages,
                                "planned pages of a full replan another replica started"
                            )
                        }
                        Err(e) => {
                            tracing::warn!(plan = sweep.plan_id, error = %e, "cannot plan pages of the running full replan")
                        }
                    }
                    let _ = self.finish_sweep(sweep.plan_id).await;
                    return;
                }
                Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                Err(_) => return,
            }
        }
    }

    async fn run_job(&self, job: &Job<'_>, at: DateTime<Utc>) {
        let daemon = self;
        let name = job.key();
        let store = &daemon.store;
        match job {
            Job::Replan(_) | Job::Incremental(_) => {
                let result = match job {
                    Job::Replan(r) => daemon.replan(&r.metadata.name, Vec::new()).await,
                    Job::Incremental(r) => daemon.replan_incremental(&r.metadata.name).await,
                    _ => unreachable!("matched above"),
                };
                match result {
                    Ok(summary) => {
                        if let Err(e) = store.finish_cron_run(&name, at, summary.plan_id).await {
                            tracing::warn!(replan = %name, error = %e, "cannot record the run's plan");
                        }
                    }
                    Err(e) => {
                        tracing::error!(replan = %name, firing = %at, error = %e, "the cron replan failed")
                    }
                }
            }
            Job::Generator(g) => {
                // A failed run is not retried: its firing is claimed, and the next firing creates
                // what is due then (a digest twice in a row would be worse than one missed).
                if let Err(e) = daemon.run_generator(g, at).await {
                    tracing::error!(generator = %name, firing = %at, error = %e, "the scheduled generator failed")
                }
            }
            Job::Train(_) => match daemon.train(at).await {
                Ok(_) => {}
                Err(e @ Error::NotEnoughHistory(_)) => {
                    tracing::info!(firing = %at, reason = %e, "scheduled training skipped")
                }
                Err(e) => {
                    tracing::error!(firing = %at, error = %e, "the scheduled training failed")
                }
            },
        }
    }
}
