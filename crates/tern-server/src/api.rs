//! The services. Each handler checks the whole request, converts it, makes one store call (or a
//! few, for per-item acks) and converts the result; nothing here decides policy.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use chrono::TimeDelta;
use tern_store::{Ack, AckResult, ChannelState, LeaseRequest, NewOutcome, RowStatus, Store, User};
use tonic::{Request, Response, Status};

use crate::convert::{self, time};
use crate::errors::{self, invalid};
use crate::metrics::Metrics;
use crate::{pb, Clock, Control};

/// Most rows in one Submit, Upsert, Report or ReportActivity.
pub const MAX_BATCH: usize = 10_000;
/// Most user ids over all events of one SubmitEvents.
pub const MAX_EVENT_USERS: usize = 100_000;
/// Most items in one Pull.
pub const MAX_PULL: u32 = 1_000;
const MIN_LEASE: TimeDelta = TimeDelta::seconds(1);
const MAX_LEASE: TimeDelta = TimeDelta::hours(1);
const DEFAULT_LEASE: TimeDelta = TimeDelta::seconds(60);

/// Every tern.v1 service over one store.
#[derive(Clone)]
pub struct Api {
    store: Store,
    clock: Arc<dyn Clock>,
    control: Arc<dyn Control>,
    metrics: Arc<Metrics>,
    /// False once shutdown began: new pulls get UNAVAILABLE so that no new lease starts while
    /// the process is going away.
    pub(crate) serving: Arc<AtomicBool>,
}

impl Api {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        control: Arc<dyn Control>,
        metrics: Arc<Metrics>,
    ) -> Api {
        Api {
            store,
            clock,
            control,
            metrics,
            serving: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Counts a request by method and status code, and its duration.
    fn finish<T>(
        &self,
        method: &'static str,
        started: Instant,
        result: Result<Response<T>, Status>,
    ) -> Result<Response<T>, Status> {
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.metrics.inc(
            "tern_grpc_requests_total",
            &[("method", method), ("code", &code)],
        );
        self.metrics.observe(
            "tern_grpc_request_duration_seconds",
            &[("method", method)],
            started.elapsed().as_secs_f64(),
        );
        result
    }

    /// A store error as a status, counted when the database is at fault.
    fn db(&self, err: tern_store::StoreError) -> Status {
        if matches!(
            err,
            tern_store::StoreError::Unavailable(_) | tern_store::StoreError::Database(_)
        ) {
            self.metrics.inc("tern_database_errors_total", &[]);
        }
        errors::store(err)
    }

    /// The store, for the server's health probe.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the server is still taking new work.
    pub fn serving(&self) -> bool {
        self.serving.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn batch_size(what: &str, n: usize) -> Result<(), Status> {
    if n == 0 {
        return Err(invalid(format!("{what}: the batch is empty")));
    }
    if n > MAX_BATCH {
        return Err(invalid(format!(
            "{what}: {n} rows is more than the limit of {MAX_BATCH}; split the batch"
        )));
    }
    Ok(())
}

fn lease_duration(d: Option<&prost_types::Duration>) -> Result<TimeDelta, Status> {
    let lease = match d {
        None => DEFAULT_LEASE,
        Some(d) => convert::from_duration(d, "lease").map_err(invalid)?,
    };
    if lease < MIN_LEASE || lease > MAX_LEASE {
        return Err(invalid("lease must be between 1 second and 1 hour"));
    }
    Ok(lease)
}

/// A lease token; `what` names where it was (`ack 3`, `the lease`).
fn token(s: &str, what: &str) -> Result<uuid::Uuid, Status> {
    s.parse().map_err(|_| {
        invalid(format!(
            "{what}: lease_token is not a lease token (the UUID that Pull returned)"
        ))
    })
}

/// A required user id (or other key): 1 to 512 bytes, no NUL.
fn key(what: &str, s: &str) -> Result<(), Status> {
    tern_core::validate_text(what, s, tern_core::MAX_KEY_LEN).map_err(|e| invalid(e.0))
}

#[tonic::async_trait]
impl pb::opportunity_service_server::OpportunityService for Api {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::SubmitReply>, Status> = async {
            let req = request.into_inner();
            tern_core::validate_text("source", &req.source, tern_core::MAX_LABEL_LEN)
                .map_err(|e| invalid(e.0))?;
            batch_size("opportunities", req.opportunities.len())?;
            let now = self.clock.now();
            let vocabulary = self.control.vocabulary();
            let n = req.opportunities.len();
            let mut results: Vec<Option<pb::row_result::Result>> = vec![None; n];
            let mut rows = Vec::with_capacity(n);
            let mut at = Vec::with_capacity(n);
            for (i, o) in req.opportunities.into_iter().enumerate() {
                match convert::opportunity(o, &req.source, now, vocabulary.as_ref()) {
                    Ok(o) => {
                        rows.push(o);
                        at.push(i);
                    }
                    Err(reason) => results[i] = Some(pb::row_result::Result::Rejected(reason)),
                }
            }
            if !rows.is_empty() {
                let report = self
                    .store
                    .ingest_opportunities(&rows)
                    .await
                    .map_err(|e| self.db(e))?;
                let created: Vec<(String, String)> = report
                    .rows
                    .iter()
                    .zip(&rows)
                    .filter(|(status, _)| matches!(status, RowStatus::New(_)))
                    .map(|(_, o)| (o.user_id.clone(), o.priority.clone()))
                    .collect();
                if !created.is_empty() {
                    self.control.submitted(&created).await;
                }
                for (status, i) in report.rows.into_iter().zip(at) {
                    results[i] = Some(match status {
                        RowStatus::New(id) => pb::row_result::Result::CreatedId(id),
                        RowStatus::Duplicate => pb::row_result::Result::Duplicate(true),
                        RowStatus::Rejected(reason) => pb::row_result::Result::Rejected(reason),
                    });
                }
            }
            let mut reply = pb::SubmitReply::default();
            for (i, r) in results.into_iter().enumerate() {
                match &r {
                    Some(pb::row_result::Result::CreatedId(_)) => reply.created += 1,
                    Some(pb::row_result::Result::Duplicate(_)) => reply.duplicates += 1,
                    Some(pb::row_result::Result::Rejected(reason)) => {
                        reply.rejected.push(pb::RowError {
                            index: i as u32,
                            reason: reason.clone(),
                        })
                    }
                    None => {}
                }
                reply.results.push(pb::RowResult { result: r });
            }
            let m = &self.metrics;
            m.add(
                "tern_opportunities_submitted_total",
                &[("result", "created")],
                f64::from(reply.created),
            );
            m.add(
                "tern_opportunities_submitted_total",
                &[("result", "duplicate")],
                f64::from(reply.duplicates),
            );
            m.add(
                "tern_opportunities_submitted_total",
                &[("result", "rejected")],
                reply.rejected.len() as f64,
            );
            Ok(Response::new(reply))
        }
        .await;
        self.finish("Submit", started, result)
    }

    async fn submit_events(
        &self,
        request: Request<pb::SubmitEventsRequest>,
    ) -> Result<Response<pb::SubmitEventsReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::SubmitEventsReply>, Status> = async {
            let req = request.into_inner();
            batch_size("events", req.events.len())?;
            let users: usize = req.events.iter().map(|e| e.user_ids.len()).sum();
            if users > MAX_EVENT_USERS {
                return Err(invalid(format!(
                    "events: {users} user ids in all is more than the limit of {MAX_EVENT_USERS}; split the batch"
                )));
            }
            let events = req
                .events
                .into_iter()
                .enumerate()
                .map(|(i, e)| convert::event(e).map_err(|m| invalid(format!("event {i}: {m}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let summary = self
                .control
                .submit_events(events)
                .await
                .map_err(errors::control)?;
            let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
            Ok(Response::new(pb::SubmitEventsReply {
                opportunities_created: clamp(summary.opportunities_created),
                duplicate_events: clamp(summary.duplicate_events),
                duplicate_opportunities: clamp(summary.opportunities_duplicate),
                evaluation_errors: clamp(summary.evaluation_errors),
                error_samples: summary.error_samples,
                results: summary
                    .results
                    .into_iter()
                    .map(|r| pb::EventResult {
                        event_id: r.event_id,
                        duplicate_event: r.duplicate_event,
                        opportunities: r
                            .opportunities
                            .into_iter()
                            .map(|o| pb::GeneratedOpportunity {
                                generator: o.generator,
                                user_id: o.user_id,
                                dedupe_key: o.dedupe_key,
                                opportunity_id: o.opportunity_id.unwrap_or(0),
                                duplicate: o.opportunity_id.is_none(),
                            })
                            .collect(),
                    })
                    .collect(),
            }))
        }
        .await;
        self.finish("SubmitEvents", started, result)
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for Api {
    async fn upsert(
        &self,
        request: Request<pb::UpsertUsersRequest>,
    ) -> Result<Response<pb::UpsertUsersReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::UpsertUsersReply>, Status> = async {
            let req = request.into_inner();
            batch_size("users", req.users.len())?;
            let mut users = Vec::with_capacity(req.users.len());
            for (i, u) in req.users.into_iter().enumerate() {
                if u.timezone.parse::<chrono_tz::Tz>().is_err() {
                    return Err(invalid(format!(
                        "user {i}: unknown time zone {:?} (an IANA name such as Europe/Stockholm)",
                        u.timezone
                    )));
                }
                let attributes = if u.attributes_json.is_empty() {
                    serde_json::json!({})
                } else {
                    serde_json::from_str::<serde_json::Value>(&u.attributes_json)
                        .ok()
                        .filter(|v| v.is_object())
                        .ok_or_else(|| {
                            invalid(format!("user {i}: attributes_json is not a JSON object"))
                        })?
                };
                let user = User {
                    user_id: u.user_id,
                    timezone: u.timezone,
                    locale: Some(u.locale).filter(|l| !l.is_empty()),
                    attributes,
                    opted_out_categories: u.opted_out_categories,
                    channels: u
                        .channels
                        .into_iter()
                        .map(|c| ChannelState {
                            channel: c.channel,
                            reachable: c.reachable,
                            opted_out: c.opted_out,
                        })
                        .collect(),
                };
                user.validate()
                    .map_err(|e| invalid(format!("user {i}: {e}")))?;
                users.push(user);
            }
            let before = self
                .store
                .upsert_users(&users, self.clock.now())
                .await
                .map_err(|e| self.db(e))?;
            Ok(Response::new(pb::UpsertUsersReply {
                upserted: users.len() as u32,
                cancelled_items: before as u32,
            }))
        }
        .await;
        self.finish("Upsert", started, result)
    }
}

#[tonic::async_trait]
impl pb::feedback_service_server::FeedbackService for Api {
    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::ReportReply>, Status> = async {
            let req = request.into_inner();
            batch_size("outcomes", req.outcomes.len())?;
            let now = self.clock.now();
            let mut outcomes = Vec::with_capacity(req.outcomes.len());
            for (i, o) in req.outcomes.into_iter().enumerate() {
                let row = |m: String| invalid(format!("outcome {i}: {m}"));
                tern_core::validate_text("user_id", &o.user_id, tern_core::MAX_KEY_LEN)
                    .map_err(|e| row(e.0))?;
                if o.value.is_some_and(|v| !v.is_finite()) {
                    return Err(row("value must be a finite number".into()));
                }
                outcomes.push(NewOutcome {
                    user_id: o.user_id,
                    message_id: o.message_id,
                    kind: convert::outcome_kind(o.kind).map_err(row)?,
                    occurred_at: match &o.occurred_at {
                        Some(t) => convert::from_time(t, "occurred_at").map_err(row)?,
                        None => now,
                    },
                    value: o.value,
                });
            }
            let report = self
                .store
                .record_outcomes(&outcomes, now)
                .await
                .map_err(|e| self.db(e))?;
            Ok(Response::new(pb::ReportReply {
                stored: report.stored as u32,
                duplicates: report.duplicates as u32,
                unknown_message: report.unknown_message as u32,
            }))
        }
        .await;
        self.finish("Report", started, result)
    }

    async fn report_activity(
        &self,
        request: Request<pb::ReportActivityRequest>,
    ) -> Result<Response<pb::ReportActivityReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::ReportActivityReply>, Status> = async {
            let req = request.into_inner();
            batch_size("activity", req.activity.len())?;
            let now = self.clock.now();
            let mut days = Vec::with_capacity(req.activity.len());
            for (i, a) in req.activity.into_iter().enumerate() {
                key(&format!("activity {i}: user_id"), &a.user_id)?;
                let at = match &a.occurred_at {
                    Some(t) => convert::from_time(t, "occurred_at")
                        .map_err(|m| invalid(format!("activity {i}: {m}")))?,
                    None => now,
                };
                days.push((a.user_id, at.date_naive()));
            }
            let new = self
                .store
                .record_activity(&days)
                .await
                .map_err(|e| self.db(e))?;
            Ok(Response::new(pb::ReportActivityReply {
                new_days: new as u32,
            }))
        }
        .await;
        self.finish("ReportActivity", started, result)
    }
}

#[tonic::async_trait]
impl pb::schedule_service_server::ScheduleService for Api {
    async fn pull(
        &self,
        request: Request<pb::PullRequest>,
    ) -> Result<Response<pb::PullReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::PullReply>, Status> = async {
            if !self.serving() {
                return Err(Status::unavailable(
                    "shutting down: pull from another replica",
                ));
            }
            let client = request.extensions().get::<crate::auth::Client>().cloned();
            let req = request.into_inner();
            if let Some(client) = &client {
                if let Some(c) = req.channels.iter().find(|c| !client.may_pull(c)) {
                    return Err(Status::permission_denied(format!(
                        "client {:?} may not pull channel {c:?}",
                        client.name
                    )));
                }
            }
            key("holder", &req.holder)?;
            if req.channels.is_empty() {
                return Err(invalid("at least one channel is required"));
            }
            for c in &req.channels {
                tern_core::validate_name("channel", c).map_err(|e| invalid(e.0))?;
            }
            if req.max_items == 0 || req.max_items > MAX_PULL {
                return Err(invalid(format!("max_items must be 1 to {MAX_PULL}")));
            }
            let lease_for = lease_duration(req.lease.as_ref())?;
            let channels = req.channels;
            let items = self
                .store
                .lease(
                    &LeaseRequest {
                        holder: req.holder,
                        channels: channels.clone(),
                        max_items: req.max_items,
                        lease_for,
                    },
                    self.clock.now(),
                )
                .await
                .map_err(|e| self.db(e))?;
            for c in &channels {
                self.metrics
                    .inc("tern_pull_requests_total", &[("channel", c)]);
            }
            for i in &items {
                self.metrics
                    .inc("tern_pulled_items_total", &[("channel", &i.channel)]);
                if i.attempt > 1 {
                    self.metrics.inc("tern_lease_expired_total", &[]);
                }
            }
            let items = items
                .into_iter()
                .map(|i| pb::LeasedItem {
                    user_id: i.user_id,
                    item_id: i.item_id,
                    opportunity_id: i.opportunity_id,
                    channel: i.channel,
                    template: i.template,
                    category: i.category,
                    priority: i.priority,
                    signals: i.signals.into_iter().collect(),
                    send_after: Some(time(i.send_after)),
                    send_before: Some(time(i.send_before)),
                    lease_token: i.lease_token.to_string(),
                    lease_expires_at: Some(time(i.lease_expires_at)),
                    attempt: i.attempt.max(0) as u32,
                    payload: i.payload.into_iter().collect(),
                    dedupe_key: i.dedupe_key,
                    locale: i.locale.unwrap_or_default(),
                })
                .collect();
            Ok(Response::new(pb::PullReply { items }))
        }
        .await;
        self.finish("Pull", started, result)
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::AckReply>, Status> = async {
            let req = request.into_inner();
            if req.acks.is_empty() {
                return Err(invalid("acks: the batch is empty"));
            }
            if req.acks.len() > MAX_PULL as usize {
                return Err(invalid(format!("acks: at most {MAX_PULL} per request")));
            }
            // The whole request is checked before any ack is applied.
            let mut acks = Vec::with_capacity(req.acks.len());
            for (i, a) in req.acks.iter().enumerate() {
                key(&format!("ack {i}: user_id"), &a.user_id)?;
                acks.push(Ack {
                    user_id: a.user_id.clone(),
                    item_id: a.item_id,
                    lease_token: token(&a.lease_token, &format!("ack {i}"))?,
                    status: convert::ack_status(a.status)
                        .map_err(|m| invalid(format!("ack {i}: {m}")))?,
                });
            }
            let now = self.clock.now();
            let results = self
                .store
                .ack_many(&acks, now)
                .await
                .map_err(|e| self.db(e))?;
            let mut outcomes = Vec::with_capacity(acks.len());
            for (a, result) in acks.iter().zip(results) {
                use pb::AckResult as R;
                let (code, message_id) = match result {
                    AckResult::Acked { message_id } => (R::Acked, message_id),
                    AckResult::AlreadyAcked { message_id } => (R::AlreadyAcked, message_id),
                    AckResult::Stale => (R::Stale, None),
                    AckResult::Conflict { .. } => (R::Conflict, None),
                    AckResult::Cancelled => (R::Cancelled, None),
                    AckResult::NotFound => (R::NotFound, None),
                };
                let name = match code {
                    R::Acked => "acked",
                    R::AlreadyAcked => "already_acked",
                    R::Stale => "stale",
                    R::Conflict => "conflict",
                    R::Cancelled => "cancelled",
                    _ => "not_found",
                };
                self.metrics.inc("tern_acks_total", &[("result", name)]);
                outcomes.push(pb::AckOutcome {
                    item_id: a.item_id,
                    result: code as i32,
                    message_id,
                });
            }
            if let [only] = outcomes.as_slice() {
                if only.result == pb::AckResult::Stale as i32 {
                    return Err(Status::failed_precondition(
                        "the lease is stale: it expired or the item was leased again; do not send",
                    ));
                }
            }
            Ok(Response::new(pb::AckReply { outcomes }))
        }
        .await;
        self.finish("Ack", started, result)
    }

    async fn extend_lease(
        &self,
        request: Request<pb::ExtendLeaseRequest>,
    ) -> Result<Response<pb::ExtendLeaseReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::ExtendLeaseReply>, Status> = async {
            let req = request.into_inner();
            key("user_id", &req.user_id)?;
            let lease_for = lease_duration(req.lease.as_ref())?;
            let token = token(&req.lease_token, "the lease")?;
            let until = self
                .store
                .extend_lease(
                    &req.user_id,
                    req.item_id,
                    token,
                    lease_for,
                    self.clock.now(),
                )
                .await
                .map_err(|e| self.db(e))?
                .ok_or_else(|| {
                    Status::failed_precondition("the lease is no longer held; do not send the item")
                })?;
            Ok(Response::new(pb::ExtendLeaseReply {
                lease_expires_at: Some(time(until)),
            }))
        }
        .await;
        self.finish("ExtendLease", started, result)
    }

    async fn get_user_schedule(
        &self,
        request: Request<pb::GetUserScheduleRequest>,
    ) -> Result<Response<pb::GetUserScheduleReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::GetUserScheduleReply>, Status> = async {
            let req = request.into_inner();
            key("user_id", &req.user_id)?;
            let items = self
                .store
                .user_schedule(&req.user_id, 500)
                .await
                .map_err(|e| self.db(e))?
                .into_iter()
                .map(|i| pb::ScheduledItem {
                    item_id: i.item_id,
                    opportunity_id: i.opportunity_id,
                    channel: i.channel,
                    template: i.template,
                    state: i.state,
                    send_after: Some(time(i.send_after)),
                    send_before: Some(time(i.send_before)),
                    value: i.value,
                    propensity: i.propensity,
                    plan_id: i.plan_id,
                    payload: i.payload.into_iter().collect(),
                    dedupe_key: i.dedupe_key,
                })
                .collect();
            Ok(Response::new(pb::GetUserScheduleReply { items }))
        }
        .await;
        self.finish("GetUserSchedule", started, result)
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for Api {
    async fn replan(
        &self,
        request: Request<pb::ReplanRequest>,
    ) -> Result<Response<pb::PlanSummary>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::PlanSummary>, Status> = async {
            let req = request.into_inner();
            for (i, u) in req.user_ids.iter().enumerate() {
                key(&format!("user_ids[{i}]"), u)?;
            }
            let summary = self
                .control
                .replan(req.user_ids)
                .await
                .map_err(errors::control)?;
            Ok(Response::new(convert::summary(&summary)))
        }
        .await;
        self.finish("Replan", started, result)
    }

    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::AdvanceClockReply>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::AdvanceClockReply>, Status> = async {
            let req = request.into_inner();
            let to = req.to.as_ref().ok_or_else(|| invalid("to is required"))?;
            let to = convert::from_time(to, "to").map_err(invalid)?;
            let ran = self
                .control
                .advance_clock(to)
                .await
                .map_err(errors::control)?;
            Ok(Response::new(pb::AdvanceClockReply {
                now: Some(time(self.clock.now())),
                ran: ran
                    .into_iter()
                    .map(|(replan, at)| pb::CronRun {
                        replan,
                        next_run: Some(time(at)),
                    })
                    .collect(),
            }))
        }
        .await;
        self.finish("AdvanceClock", started, result)
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        let started = Instant::now();
        let result: Result<Response<pb::Status>, Status> = async {
            let s = self.control.status().await.map_err(errors::control)?;
            Ok(Response::new(pb::Status {
                policy_version: s.policy_version.unwrap_or_default(),
                last_reload_error: s.last_reload_error.unwrap_or_default(),
                rejected_policy_version: s.rejected_policy_version.unwrap_or_default(),
                model_version: s.model_version.unwrap_or_default(),
                recent_plans: s.recent_plans.iter().map(convert::summary).collect(),
                next_runs: s
                    .next_runs
                    .into_iter()
                    .map(|(replan, at)| pb::CronRun {
                        replan,
                        next_run: Some(time(at)),
                    })
                    .collect(),
                health: if s.serving && self.serving() {
                    "SERVING".into()
                } else {
                    "NOT_SERVING".into()
                },
            }))
        }
        .await;
        self.finish("GetStatus", started, result)
    }
}
