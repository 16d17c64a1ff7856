//! Replans, in three scopes (see `tern_store::sweeps` for what the store keeps of them):
//!
//! - **Users**: named users (a manual replan of some users, the urgent plan after a message of
//!   an urgent class), under the replan lock taken exclusively, published in one transaction.
//! - **Incremental**: the users in the replan queue (their inputs changed since they were last
//!   planned, or their revisit came due), the same way. If the active policy or model differs
//!   from the one the last full replan used, every user's plan is out of date, and it runs as a
//!   sweep instead.
//! - **Sweep**: every user with open opportunities, page by page. Each page (a range of user
//!   buckets) is read, planned and published in its own transaction under the replan lock
//!   taken *shared*, so pages run side by side on every replica that joins the sweep while
//!   plans of named users wait between pages. Memory is bounded by a page.
//!
//! A channel budget is a quota across all users. A plan of some users gets what the window has
//! left after everyone else's sends, leases and pending items. A sweep's pages share what is left
//! evenly: a page may choose at most (what the window has left now, less what the sweep's
//! published pages chose) divided by the pages not yet published, so the sweep as a whole never
//! exceeds the budget, whatever order or replica its pages run on. (An item of the sweep that is
//! delivered while it still runs is counted twice, once sent and once chosen: the budget can end
//! slightly under-used, never over.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use tern_model::Model;
use tern_planner::{Plan, Planner, PlannerConfig, Predictor, Reason, UserInput};
use tern_policy::Bundle;
use tern_server::{ControlError, ReplanSummary};
use tern_store::{
    Assignment, NewPlan, NewScheduleItem, PageClaim, PageStats, PlanStats, PlanningUser, Replanned,
    RunningSweep, Scope, Supersede, SweepProgress, Withholding,
};

use crate::daemon::{Daemon, URGENT_TRIGGER};
use crate::features;
use crate::predict::{ModelPredictor, Prior};
use crate::translate::{assign_arms, planner_config};
use crate::Error;

/// How far back a replan reads history: the longest cap window and the fatigue features' reach.
pub(crate) const HISTORY: TimeDelta = TimeDelta::days(28);

/// A user left with opportunities the plan did not schedule is looked at again at the latest
/// after this long, even if nothing about them changed: their scores move with time (recency,
/// the time of day) even when their inputs do not.
pub(crate) const REVISIT_AT_MOST: TimeDelta = TimeDelta::hours(6);

/// At most this many queue rows are read by one incremental replan; the rest wait for the next.
const INCREMENTAL_ROWS: i64 = 200_000;

/// What a plan of some users produced, before it is published.
struct Planned {
    plan: Plan,
    items: Vec<NewScheduleItem>,
    assignments: Vec<Assignment>,
    revisits: Vec<(String, DateTime<Utc>)>,
}

/// Where a plan's budgets come from.
enum Budgets<'a> {
    /// Everyone else's sends, leases and pending items are subtracted.
    Users(&'a [String]),
    /// A page of a sweep: an even share of what the sweep has left.
    Page(&'a SweepProgress),
}

impl Daemon {
    /// The planner for the active policy (as `replan_doc` configures it), with each channel
    /// budget cut to what this plan may use.
    async fn planner(
        &self,
        bundle: &Bundle,
        replan_doc: Option<&str>,
        budgets: Budgets<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Planner, PlannerConfig), ControlError> {
        let mut config = planner_config(bundle, replan_doc).map_err(|e| {
            ControlError::Unplannable(format!("the active policy cannot be planned with: {e}"))
        })?;
        for channel in &mut config.channels {
            if let Some(budget) = &mut channel.budget {
                let since = now - TimeDelta::seconds(budget.per_secs as i64);
                budget.max = match &budgets {
                    Budgets::Users(users) => {
                        let used = self
                            .store
                            .channel_usage(&channel.name, since, Some(users))
                            .await?;
                        budget.max.saturating_sub(used)
                    }
                    Budgets::Page(progress) => {
                        let used = self.store.channel_usage(&channel.name, since, None).await?;
                        let chosen = progress.chosen.get(&channel.name).copied().unwrap_or(0);
                        let left = budget.max.saturating_sub(used).saturating_sub(chosen);
                        left / u64::from(progress.pages.saturating_sub(progress.done).max(1))
                    }
                };
            }
        }
        let planner = Planner::new(config.clone()).map_err(|e| {
            ControlError::Unplannable(format!("the active policy cannot be planned with: {e}"))
        })?;
        Ok((planner, config))
    }

    /// Plans `input` (users as the store returns them) with `planner`.
    async fn plan_input(
        &self,
        bundle: &Bundle,
        (planner, config): (Planner, PlannerConfig),
        input: Vec<PlanningUser>,
        model: Option<(String, Arc<Model>)>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Result<Planned, ControlError> {
        let mut inputs: Vec<UserInput> = input.into_iter().map(|u| user_input(u, now)).collect();
        // Every experiment each planned user is in, not only the one that decides their
        // treatment: a user in two layers counts in both reports.
        let assigned = assign_arms(bundle, &mut inputs);
        // The (experiment, arm) that decides each user's treatment, carried as such to the
        // schedule items rather than read back from the planner's arm label.
        let treatment = crate::translate::treatment(&assigned, &inputs);
        let assignments: Vec<Assignment> = assigned
            .into_iter()
            .zip(&inputs)
            .flat_map(|(assigned, u)| {
                assigned.into_iter().map(|(e, arm)| Assignment {
                    experiment: e.metadata.name.clone(),
                    user_id: u.user_id.clone(),
                    arm: arm.name.clone(),
                })
            })
            .collect();
        let (mode, modes) = crate::translate::value_modes(bundle, &treatment);
        let windows = cap_windows(&config);
        let (plan, inputs) = tokio::task::spawn_blocking(move || {
            let predictor: Box<dyn Predictor> = match model {
                Some((_, m)) => Box::new(ModelPredictor::new(m, now).with_modes(mode, modes)),
                None => Box::new(Prior),
            };
            (planner.plan(&inputs, now, seed, predictor.as_ref()), inputs)
        })
        .await
        .map_err(|e| ControlError::Internal(format!("the planner failed: {e}")))?;
        let plan = plan.map_err(|e| ControlError::Internal(format!("the planner refused: {e}")))?;
        let items = schedule_items(&plan, &treatment);
        let revisits = revisits(&plan, &inputs, &windows, now, next_sweep(bundle, now));
        Ok(Planned {
            plan,
            items,
            assignments,
            revisits,
        })
    }

    /// Plans named users, or (`scope` incremental) the users the replan queue holds, and
    /// publishes in one transaction under the replan lock.
    pub(crate) async fn plan_users(
        &self,
        trigger: &str,
        users: Vec<String>,
        scope: Scope,
    ) -> Result<ReplanSummary, ControlError> {
        let _lock = self.store.lock_replans().await?;
        let started = Instant::now();
        let now = self.clock.now();
        let bundle: Arc<Bundle> = self.watcher.active();
        let replan_doc = replan_doc(trigger);
        // What the plan will have seen: the queue rows read before the input.
        let (users, seen) = match scope {
            Scope::Incremental => {
                let due = self.store.due_replans(now, INCREMENTAL_ROWS).await?;
                let mut users: Vec<String> = due.iter().map(|q| q.user_id.clone()).collect();
                users.sort_unstable();
                users.dedup();
                (users, due)
            }
            _ => {
                let seen = self.store.queued_for(&users, now).await?;
                (users, seen)
            }
        };
        // Why the users are replanned: queue rows per reason, for the log.
        let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
        for q in &seen {
            *reasons.entry(q.reason.as_str()).or_default() += 1;
        }
        let reasons = reasons
            .iter()
            .map(|(r, n)| format!("{r}:{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let prepared = self
            .planner(&bundle, replan_doc, Budgets::Users(&users), now)
            .await?;
        let horizon = TimeDelta::seconds(prepared.1.horizon_secs as i64);
        // A holdout user's due would-be messages become their history before it is read.
        self.store.settle_counterfactuals(now).await?;
        let input = if users.is_empty() {
            Vec::new()
        } else {
            self.store
                .planning_input(now, HISTORY, Some(&users))
                .await?
        };
        let read_secs = started.elapsed().as_secs_f64();
        let model = self.active_model().await?;
        let model_version = model.as_ref().map(|(v, _)| v.clone());
        let seed = now.timestamp_micros() as u64;
        let planned = self
            .plan_input(&bundle, prepared, input, model, now, seed)
            .await?;
        let plan_secs = started.elapsed().as_secs_f64() - read_secs;
        // Before the plan is published, so that a user's observation period never starts after
        // the first message of their arm.
        self.store
            .record_assignments(&planned.assignments, &bundle.version, now)
            .await?;
        let stats = &planned.plan.stats;
        let published = self
            .store
            .publish_plan_with(
                &NewPlan {
                    trigger: trigger.to_string(),
                    policy_version: bundle.version.clone(),
                    model_version: model_version.clone(),
                    seed: seed as i64,
                    started_at: now,
                    horizon_end: now + horizon,
                    stats: PlanStats {
                        candidates: stats.candidates,
                        users: stats.users,
                        chosen: stats.chosen.clone(),
                        suppressed: stats.suppressed.clone(),
                        duration_seconds: started.elapsed().as_secs_f64(),
                    },
                },
                &planned.items,
                &Supersede::Users(users.clone()),
                &Replanned {
                    scope,
                    seen: seen.into_iter().map(|q| (q.user_id, q.seq)).collect(),
                    users,
                    revisits: planned.revisits,
                },
                now,
            )
            .await?;
        self.metrics.add(
            "tern_plan_users_total",
            &[("scope", scope.as_str())],
            stats.users as f64,
        );
        if scope == Scope::Incremental {
            if let Ok((due, later)) = self.store.replan_queue_len(now).await {
                self.metrics
                    .set("tern_replan_queue", &[("state", "due")], due as f64);
                self.metrics
                    .set("tern_replan_queue", &[("state", "later")], later as f64);
            }
        }
        let summary = ReplanSummary {
            plan_id: published.plan_id,
            trigger: trigger.to_string(),
            policy_version: bundle.version.clone(),
            model_version,
            started_at: Some(now),
            published_at: Some(self.clock.now()),
            candidates: stats.candidates,
            chosen_per_channel: stats.chosen.clone(),
            suppressed_per_reason: stats.suppressed.clone(),
            duration_seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            plan = summary.plan_id,
            trigger,
            scope = scope.as_str(),
            users = stats.users,
            candidates = summary.candidates,
            items = published.items,
            seconds = summary.duration_seconds,
            read_secs,
            plan_secs,
            reasons,
            "published a plan"
        );
        Ok(summary)
    }

    /// An incremental replan: the users the replan queue holds. It runs as a sweep instead when
    /// the active policy or model is not the one the last sweep planned with (or there was
    /// none): then every user's plan is out of date.
    pub(crate) async fn incremental(&self, trigger: &str) -> Result<ReplanSummary, ControlError> {
        let bundle = self.watcher.active();
        let model = self.active_model().await?.map(|(v, _)| v);
        let last = self.store.last_sweep().await?;
        let current = last
            .as_ref()
            .is_some_and(|(policy, m)| *policy == bundle.version && *m == model);
        if !current {
            tracing::info!(
                trigger,
                "the policy or model changed since the last full replan: replanning everyone"
            );
            return self.sweep(trigger).await;
        }
        self.plan_users(trigger, Vec::new(), Scope::Incremental)
            .await
    }

    /// A full replan: starts a sweep (or joins the one running), plans pages until none is
    /// left, and finishes it. Returns the sweep's summary; while pages are still held by other
    /// replicas it waits for them (or takes them over when their lease passes).
    pub(crate) async fn sweep(&self, trigger: &str) -> Result<ReplanSummary, ControlError> {
        let started = Instant::now();
        let sweep = match self.store.running_sweep().await? {
            Some(s) => s,
            None => {
                self.start_sweep(trigger).await?;
                match self.store.running_sweep().await? {
                    Some(s) => s,
                    // Finished by other replicas in the meantime.
                    None => {
                        return Err(ControlError::Precondition(
                            "the full replan finished on another replica".into(),
                        ))
                    }
                }
            }
        };
        self.work_sweep(&sweep).await?;
        let stats = self.wait_sweep(&sweep).await?;
        let summary = ReplanSummary {
            plan_id: sweep.plan_id,
            trigger: sweep.trigger.clone(),
            policy_version: sweep.policy_version.clone(),
            model_version: sweep.model_version.clone(),
            started_at: Some(sweep.started_at),
            published_at: Some(self.clock.now()),
            candidates: stats.candidates,
            chosen_per_channel: stats.chosen,
            suppressed_per_reason: stats.suppressed,
            duration_seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            plan = summary.plan_id,
            trigger = %summary.trigger,
            users = stats.users,
            candidates = summary.candidates,
            seconds = summary.duration_seconds,
            "published a full replan"
        );
        Ok(summary)
    }

    /// Creates a sweep's plan and pages, sized by the open opportunities.
    async fn start_sweep(&self, trigger: &str) -> Result<(), ControlError> {
        let now = self.clock.now();
        let bundle = self.watcher.active();
        let config = planner_config(&bundle, replan_doc(trigger)).map_err(|e| {
            ControlError::Unplannable(format!("the active policy cannot be planned with: {e}"))
        })?;
        let model = self.active_model().await?.map(|(v, _)| v);
        let maintained = self.store.maintain_tables().await?;
        log_maintained(&maintained, "before a full replan");
        let open = self.store.open_opportunity_count(now).await?;
        let pages = open.div_ceil(self.paging.page_opportunities.max(1)).max(1);
        let horizon = TimeDelta::seconds(config.horizon_secs as i64);
        let created = self
            .store
            .start_sweep(
                &NewPlan {
                    trigger: trigger.to_string(),
                    policy_version: bundle.version.clone(),
                    model_version: model,
                    seed: now.timestamp_micros(),
                    started_at: now,
                    horizon_end: now + horizon,
                    stats: PlanStats::default(),
                },
                pages.min(u64::from(u32::MAX)) as u32,
            )
            .await?;
        if let Some(plan_id) = created {
            tracing::info!(
                plan = plan_id,
                trigger,
                pages,
                open,
                "started a full replan"
            );
        }
        Ok(())
    }

    /// Plans pages of `sweep` until none is left to claim, [`crate::Paging::workers`] at a
    /// time: one page's reading and publishing wait on PostgreSQL while another's planning
    /// runs here (one at a time left a third of the machine idle at a million users). Each
    /// page is claimed, planned and published on its own, as on another replica. Returns the
    /// pages this replica published.
    pub(crate) async fn work_sweep(&self, sweep: &RunningSweep) -> Result<u32, ControlError> {
        let workers = self.paging.workers.max(1);
        let done =
            futures::future::try_join_all((0..workers).map(|_| self.work_pages(sweep))).await?;
        Ok(done.into_iter().sum())
    }

    /// One of [`Daemon::work_sweep`]'s workers: claims and plans pages until none is left.
    async fn work_pages(&self, sweep: &RunningSweep) -> Result<u32, ControlError> {
        let mut planned = 0;
        loop {
            let now = self.clock.now();
            let Some(claim) = self
                .store
                .claim_page(sweep.plan_id, &self.holder, now, self.paging.lease)
                .await?
            else {
                return Ok(planned);
            };
            match self.plan_page(sweep, &claim).await {
                Ok(true) => {
                    planned += 1;
                    self.metrics
                        .inc("tern_plan_pages_total", &[("result", "published")]);
                }
                Ok(false) => {
                    self.metrics
                        .inc("tern_plan_pages_total", &[("result", "lost")]);
                    tracing::warn!(
                        plan = sweep.plan_id,
                        page = claim.page,
                        "a page's lease passed to another replica before it was published"
                    );
                }
                Err(e) => {
                    self.metrics
                        .inc("tern_plan_pages_total", &[("result", "failed")]);
                    if matches!(e, ControlError::Unplannable(_)) {
                        self.store.fail_sweep(sweep.plan_id).await?;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Finishes sweep `plan_id` if its last page is published (see
    /// [`tern_store::Store::finish_sweep`]), and then vacuums and analyses the tables that need
    /// it ([`tern_store::Store::maintain_tables`]): a sweep can grow the schedule from nothing
    /// to millions of items, and the plans of the incremental replans after it (the budget
    /// counts above all) go wrong on the old statistics until autovacuum catches up.
    pub(crate) async fn finish_sweep(
        &self,
        plan_id: i64,
    ) -> Result<Option<PlanStats>, ControlError> {
        let Some(stats) = self.store.finish_sweep(plan_id, self.clock.now()).await? else {
            return Ok(None);
        };
        self.metrics.add(
            "tern_plan_users_total",
            &[("scope", "sweep")],
            stats.users as f64,
        );
        let maintained = self.store.maintain_tables().await?;
        log_maintained(&maintained, "after a full replan");
        Ok(Some(stats))
    }

    /// Waits for the other replicas' pages of `sweep` (taking over any whose lease passes) and
    /// finishes it; gives up after a lease and a little more (the sweep goes on without this
    /// call, and is finished by whichever replica publishes its last page).
    async fn wait_sweep(&self, sweep: &RunningSweep) -> Result<PlanStats, ControlError> {
        let patience =
            self.paging.lease.to_std().unwrap_or_default() + std::time::Duration::from_secs(10);
        let waited = Instant::now();
        loop {
            if let Some(stats) = self.finish_sweep(sweep.plan_id).await? {
                return Ok(stats);
            }
            if let Some(stats) = self.store.published_stats(sweep.plan_id).await? {
                return Ok(stats);
            }
            if waited.elapsed() > patience {
                return Err(ControlError::Precondition(format!(
                    "pages of full replan {} are still held by other replicas",
                    sweep.plan_id
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            self.work_sweep(sweep).await?;
        }
    }

    /// Reads, plans and publishes one page. False when the lease passed to another replica
    /// before it could publish (nothing was written).
    async fn plan_page(
        &self,
        sweep: &RunningSweep,
        claim: &PageClaim,
    ) -> Result<bool, ControlError> {
        let _shared = self.store.lock_replans_shared().await?;
        let started = Instant::now();
        let now = self.clock.now();
        let bundle: Arc<Bundle> = self.watcher.active();
        let progress = self.store.sweep_progress(sweep.plan_id).await?;
        let prepared = self
            .planner(
                &bundle,
                replan_doc(&sweep.trigger),
                Budgets::Page(&progress),
                now,
            )
            .await?;
        self.store.settle_counterfactuals(now).await?;
        // Users first, then their queue rows, then their input: whatever a seen row stands for
        // is in the input.
        let users = self
            .store
            .users_in_buckets(claim.buckets.clone(), now)
            .await?;
        let seen = self.store.queued_for(&users, now).await?;
        let input = self
            .store
            .planning_input_buckets(now, HISTORY, claim.buckets.clone())
            .await?;
        let mut replanned_users = users;
        replanned_users.extend(input.iter().map(|u| u.user_id.clone()));
        replanned_users.sort_unstable();
        replanned_users.dedup();
        let read_secs = started.elapsed().as_secs_f64();
        let model = self.active_model().await?;
        let planned = self
            .plan_input(&bundle, prepared, input, model, now, sweep.seed as u64)
            .await?;
        let plan_secs = started.elapsed().as_secs_f64() - read_secs;
        self.store
            .record_assignments(&planned.assignments, &bundle.version, now)
            .await?;
        let stats = &planned.plan.stats;
        let page_stats = PageStats {
            users: stats.users,
            candidates: stats.candidates,
            chosen: stats.chosen.clone(),
            suppressed: stats.suppressed.clone(),
            seconds: started.elapsed().as_secs_f64(),
            holder: self.holder.clone(),
        };
        let published = self
            .store
            .publish_page(
                claim,
                &self.holder,
                &planned.items,
                &Replanned {
                    scope: Scope::Sweep,
                    seen: seen.into_iter().map(|q| (q.user_id, q.seq)).collect(),
                    users: replanned_users,
                    revisits: planned.revisits,
                },
                &page_stats,
                now,
            )
            .await?;
        if let Some(p) = &published {
            for (channel, n) in &stats.chosen {
                self.metrics
                    .add("tern_plan_chosen_total", &[("channel", channel)], *n as f64);
            }
            for (reason, n) in &stats.suppressed {
                self.metrics.add(
                    "tern_plan_suppressed_total",
                    &[("reason", reason)],
                    *n as f64,
                );
            }
            tracing::debug!(
                plan = sweep.plan_id,
                page = claim.page,
                users = stats.users,
                items = p.items,
                read_secs,
                plan_secs,
                publish_secs = started.elapsed().as_secs_f64() - read_secs - plan_secs,
                "published a page"
            );
        }
        Ok(published.is_some())
    }
}

/// Logs what [`tern_store::Store::maintain_tables`] did, if anything.
fn log_maintained(done: &tern_store::Maintained, when: &str) {
    if !done.is_empty() {
        tracing::info!(
            vacuumed = %done.vacuumed.join(", "),
            analysed = %done.analysed.join(", "),
            "maintained the tables replans read {when}"
        );
    }
}

/// The Replan document a trigger names, if it names one.
fn replan_doc(trigger: &str) -> Option<&str> {
    (trigger != "manual" && trigger != URGENT_TRIGGER).then_some(trigger)
}

/// Every distinct cap window of the configuration, its arms' included.
fn cap_windows(config: &PlannerConfig) -> Vec<TimeDelta> {
    let arms = config
        .experiment
        .iter()
        .flat_map(|e| &e.arms)
        .flat_map(|a| a.caps.iter().flatten());
    let mut windows: Vec<TimeDelta> = config
        .caps
        .iter()
        .chain(arms)
        .filter_map(|r| r.window_secs)
        .map(|s| TimeDelta::seconds(s as i64))
        .collect();
    windows.sort_unstable();
    windows.dedup();
    windows
}

/// When to look again at each user the plan left with an opportunity it did not schedule for
/// a reason that passes with time (a cap, a gap, pacing, the budget, the horizon, a value below
/// the threshold): when the first of their counted sends leaves a cap window, and at the latest
/// after [`REVISIT_AT_MOST`]. Users whose every opportunity is scheduled, or kept out by their
/// own choices (opt-outs, reachability), wait for a change.
///
/// A revisit due at or after `sweep` (the next full replan) is left out: the full replan plans
/// every user with open opportunities then anyway. In the demo, revisits were half the queue rows
/// of each incremental replan.
fn revisits(
    plan: &Plan,
    inputs: &[UserInput],
    windows: &[TimeDelta],
    now: DateTime<Utc>,
    sweep: Option<DateTime<Utc>>,
) -> Vec<(String, DateTime<Utc>)> {
    let by_id: HashMap<&str, &UserInput> = inputs.iter().map(|u| (u.user_id.as_str(), u)).collect();
    let mut out = Vec::new();
    for u in &plan.users {
        let waiting = u.suppressions.iter().any(|s| {
            matches!(
                s.reason,
                Reason::Horizon
                    | Reason::QuietHours
                    | Reason::BelowMinValue
                    | Reason::Cap { .. }
                    | Reason::MinGap { .. }
                    | Reason::Budget { .. }
                    | Reason::Paced { .. }
            )
        });
        if !waiting {
            continue;
        }
        let mut at = now + REVISIT_AT_MOST;
        if let Some(input) = by_id.get(u.user_id.as_str()) {
            for send in &input.history {
                for w in windows {
                    let leaves = send.sent_at + *w;
                    if leaves > now && leaves < at {
                        at = leaves;
                    }
                }
            }
        }
        if sweep.is_none_or(|sweep| at < sweep) {
            out.push((u.user_id.clone(), at));
        }
    }
    out
}

/// The next full replan of any of the active policy's Replan documents after `now`.
fn next_sweep(bundle: &Bundle, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    bundle
        .replans
        .iter()
        .filter_map(|r| crate::cron::next_firing(&crate::cron::Job::Replan(r), now))
        .min()
}

/// What the planner would read for `users` (every user with an open opportunity when `None`)
/// at `now`: for tools that score candidates outside a plan, such as the demo's comparison of
/// predicted and true uplift.
pub async fn planning_inputs(
    store: &tern_store::Store,
    now: DateTime<Utc>,
    users: Option<&[String]>,
) -> Result<Vec<UserInput>, Error> {
    let input = store.planning_input(now, HISTORY, users).await?;
    Ok(input.into_iter().map(|u| user_input(u, now)).collect())
}

/// A user as the store returns them, as the planner (and its predictor) reads them.
pub(crate) fn user_input(u: PlanningUser, now: DateTime<Utc>) -> UserInput {
    let days = features::arrival_days(now, u.first_seen_at);
    let arrivals = u
        .arrivals
        .into_iter()
        .map(|a| tern_planner::Arrival {
            category: a.category,
            channels: a.channels,
            per_day: a.count as f64 / days,
        })
        .collect();
    UserInput {
        arrivals,
        activity: features::activity_as_of(u.first_seen_at, &u.active_days, now),
        user_id: u.user_id,
        timezone: u.timezone,
        arm: None,
        send_time_profile: Vec::new(),
        opted_out_channels: u.opted_out_channels,
        unreachable_channels: u.unreachable_channels,
        opted_out_categories: u.opted_out_categories,
        history: u
            .history
            .into_iter()
            .map(|h| tern_planner::PastSend {
                channel: h.channel,
                category: h.category,
                priority: h.priority,
                sent_at: h.sent_at,
                opened_at: h.opened_at,
            })
            .collect(),
        opportunities: u
            .opportunities
            .into_iter()
            .map(|o| tern_planner::OpportunityInput {
                id: o.opportunity_id,
                category: o.category,
                priority: o.priority,
                channels: o.channels,
                created_at: o.created_at,
                expires_at: o.expires_at,
                template: o.template,
                scores: Vec::new(),
                signals: o.signals,
            })
            .collect(),
    }
}

/// The plan's choices as schedule items, each with the (experiment, arm) it was planned under.
fn schedule_items(
    plan: &Plan,
    treatment: &HashMap<String, (String, String)>,
) -> Vec<NewScheduleItem> {
    let mut items = Vec::new();
    for u in &plan.users {
        let (experiment, arm) = match treatment.get(&u.user_id) {
            Some((e, a)) => (Some(e.clone()), Some(a.clone())),
            None => (None, None),
        };
        let counterfactuals = u.suppressions.iter().filter_map(|s| {
            let why = match s.reason {
                Reason::Holdout => Withholding::Holdout,
                Reason::Withheld => Withholding::Exploration,
                _ => return None,
            };
            Some((s.counterfactual.as_deref()?, Some(why)))
        });
        let choices = u.choices.iter().map(|c| (c, None));
        for (c, counterfactual) in choices.chain(counterfactuals) {
            items.push(NewScheduleItem {
                user_id: u.user_id.clone(),
                opportunity_id: c.opportunity,
                channel: plan.channel_name(c.channel).to_string(),
                send_after: c.send_after,
                send_before: c.send_before,
                value: c.value,
                propensity: c.propensity,
                experiment: experiment.clone(),
                arm: arm.clone(),
                scores: serde_json::json!({
                    "conversion": c.scores.conversion,
                    "engagement": c.scores.engagement,
                    "retention": c.scores.retention,
                    "reachability_loss": c.scores.reachability_loss,
                }),
                counterfactual,
            });
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tern_planner::{Stats, Suppression, UserPlan};

    /// A plan that left one opportunity of `user` unscheduled, its value below the threshold.
    fn plan_leaving(user: &str) -> Plan {
        Plan {
            channels: vec!["push".into()],
            users: vec![UserPlan {
                user_id: user.into(),
                arm: "default".into(),
                choices: Vec::new(),
                suppressions: vec![Suppression {
                    opportunity: 1,
                    channel: Some(0),
                    reason: Reason::BelowMinValue,
                    value: Some(0.0),
                    counterfactual: None,
                }],
                error: None,
            }],
            stats: Stats::default(),
        }
    }

    #[test]
    fn a_revisit_comes_before_the_next_full_replan_or_not_at_all() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let plan = plan_leaving("a");
        let at_most = vec![("a".to_string(), now + REVISIT_AT_MOST)];
        assert_eq!(revisits(&plan, &[], &[], now, None), at_most);
        let later = now + REVISIT_AT_MOST + TimeDelta::seconds(1);
        assert_eq!(revisits(&plan, &[], &[], now, Some(later)), at_most);
        // The full replan plans the user then anyway.
        for sweep in [now + TimeDelta::hours(1), now + REVISIT_AT_MOST] {
            assert_eq!(revisits(&plan, &[], &[], now, Some(sweep)), Vec::new());
        }
        // A user whose plan left nothing for later gets no revisit.
        let mut done = plan_leaving("b");
        done.users[0].suppressions.clear();
        assert_eq!(revisits(&done, &[], &[], now, None), Vec::new());
    }
}
