//! The demo's driver: one arm on one simulated world, driven through the service's gRPC API in
//! every role (upstream, delivery, feedback), an hour at a time on the simulated clock.

use super::*;

/// How the demo's daemon labels outcomes for training.
pub(super) const LABELS: tern_daemon::train::Labels = tern_daemon::train::Labels {
    // The run is weeks long: a week's retention label is observable within it.
    retention_days: 7,
    // Opens come within hours; a short label window lets the first model train (and be
    // validated) within days rather than after a week.
    engagement_hours: 12,
    conversion_days: 7,
    reachability_days: 7,
};

/// The channels a simulated user can be reached on, as the profile says.
pub(super) fn reachable_channels(p: &Profile) -> Vec<String> {
    let mut r = vec!["in_app".to_string()];
    if p.push_enabled && p.device.is_some() {
        r.push("push".into());
    }
    if p.email_verified {
        r.push("email".into());
    }
    r
}

/// The channel an unsubscribe or push-disabled outcome takes away, as any sender would learn.
pub(super) fn lost_channel(kind: OutcomeKind) -> Option<&'static str> {
    match kind {
        OutcomeKind::Unsubscribed => Some("email"),
        OutcomeKind::PushDisabled => Some("push"),
        _ => None,
    }
}

#[derive(Debug)]
pub(super) struct PendingTx {
    pub(super) submitted: DateTime<Utc>,
    pub(super) created: DateTime<Utc>,
    pub(super) expires: DateTime<Utc>,
    pub(super) reachable: bool,
}

/// The demo's own ledger of transactional messages: each one submitted, matched to its send by
/// user (oldest first), so that the loop check does not take tern's word for it.
pub(super) struct TxLog {
    pub(super) reachable: BTreeMap<String, Vec<String>>,
    pub(super) pending: BTreeMap<String, VecDeque<PendingTx>>,
    pub(super) submitted: u64,
    pub(super) sent: u64,
    pub(super) latencies: Vec<i64>,
    pub(super) request_latencies: Vec<i64>,
}

impl TxLog {
    pub(super) fn new(profiles: &[Profile]) -> TxLog {
        TxLog {
            reachable: profiles
                .iter()
                .map(|p| (p.user_id.clone(), reachable_channels(p)))
                .collect(),
            pending: BTreeMap::new(),
            submitted: 0,
            sent: 0,
            latencies: Vec::new(),
            request_latencies: Vec::new(),
        }
    }

    pub(super) fn submit(&mut self, o: &NewOpportunity, now: DateTime<Utc>) {
        if o.priority != tern_core::TRANSACTIONAL {
            return;
        }
        let reachable = self
            .reachable
            .get(&o.user_id)
            .is_some_and(|r| o.channels.iter().any(|c| r.contains(c)));
        self.submitted += 1;
        self.pending
            .entry(o.user_id.clone())
            .or_default()
            .push_back(PendingTx {
                submitted: now,
                created: o.created_at,
                expires: o.expires_at,
                reachable,
            });
    }

    pub(super) fn sent(&mut self, user_id: &str, priority: &str, now: DateTime<Utc>) {
        if priority != tern_core::TRANSACTIONAL {
            return;
        }
        self.sent += 1;
        let Some(queue) = self.pending.get_mut(user_id) else {
            return;
        };
        let i = queue.iter().position(|p| p.expires > now).unwrap_or(0);
        if let Some(p) = queue.remove(i) {
            self.latencies.push((now - p.submitted).num_seconds());
            self.request_latencies.push((now - p.created).num_seconds());
        }
    }

    pub(super) fn learn(&mut self, outcomes: &[Outcome], now: DateTime<Utc>) {
        for o in outcomes.iter().filter(|o| o.at <= now) {
            if let (Some(lost), Some(r)) =
                (lost_channel(o.kind), self.reachable.get_mut(&o.user_id))
            {
                r.retain(|c| c != lost);
            }
        }
    }

    pub(super) fn finish(mut self, end: DateTime<Utc>) -> Transactional {
        let mut t = Transactional {
            submitted: self.submitted,
            sent: self.sent,
            ..Transactional::default()
        };
        for p in self.pending.values().flatten() {
            if p.expires > end {
                t.open += 1;
            } else if p.reachable {
                t.expired_unsent += 1;
            } else {
                t.unreachable += 1;
            }
        }
        self.latencies.sort_unstable();
        self.request_latencies.sort_unstable();
        t.latency_p50_secs = percentile(&self.latencies, 0.5);
        t.latency_p99_secs = percentile(&self.latencies, 0.99);
        t.request_latency_p50_secs = percentile(&self.request_latencies, 0.5);
        t.request_latency_p99_secs = percentile(&self.request_latencies, 0.99);
        t
    }
}

/// The nearest-rank percentile of sorted values.
pub(super) fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The gRPC clients of every role.
pub(super) struct Clients {
    pub(super) admin: AdminServiceClient<Channel>,
    pub(super) users: UserServiceClient<Channel>,
    pub(super) opportunities: OpportunityServiceClient<Channel>,
    pub(super) schedule: ScheduleServiceClient<Channel>,
    pub(super) feedback: FeedbackServiceClient<Channel>,
}

impl Clients {
    pub(super) async fn connect(address: SocketAddr) -> Result<Clients> {
        let channel = Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to the daemon at {address}"))?;
        let limit = 64 * 1024 * 1024;
        Ok(Clients {
            admin: AdminServiceClient::new(channel.clone()),
            users: UserServiceClient::new(channel.clone()).max_decoding_message_size(limit),
            opportunities: OpportunityServiceClient::new(channel.clone()),
            schedule: ScheduleServiceClient::new(channel.clone()).max_decoding_message_size(limit),
            feedback: FeedbackServiceClient::new(channel),
        })
    }
}

/// Runs one arm on one seed.
pub(super) async fn simulate(
    store: &Store,
    arm: Arm,
    seed: u64,
    args: &DemoArgs,
    policies: &Path,
    bundle: &Bundle,
) -> Result<RunResult> {
    let started = Instant::now();
    let start = args.start;
    let mut world = World::new(Config::new(args.users as usize, seed, start));
    let profiles = world.profiles();
    let daemon = if !arm.through_tern() {
        None
    } else {
        let config = tern_daemon::ServiceConfig {
            // The demo's policies do not change while it runs.
            policy_poll: Duration::from_secs(60),
            policy_settle: Duration::ZERO,
            max_message_bytes: 64 * 1024 * 1024,
            simulate_from: Some(start),
            training: Some(tern_daemon::Training {
                schedule: tern_policy::CronSchedule::parse(TRAIN_SCHEDULE)
                    .map_err(|e| anyhow::anyhow!("the demo's training schedule: {e}"))?,
                settings: tern_daemon::train::TrainSettings {
                    days: 28,
                    valid_fraction: 0.25,
                    config: tern_model::TrainConfig::default(),
                    labels: LABELS,
                    max_weight: args.max_weight,
                    work_dir: std::env::temp_dir(),
                    progress: None,
                },
                promote: true,
            }),
            ..tern_daemon::ServiceConfig::local(policies)
        };
        Some(tern_daemon::service::start(store.clone(), config).await?)
    };
    let mut clients = match &daemon {
        Some(d) => Some(Clients::connect(d.address).await?),
        None => None,
    };
    if let Some(c) = &mut clients {
        for chunk in profiles.chunks(BATCH) {
            c.users
                .upsert(pb::UpsertUsersRequest {
                    users: chunk.iter().map(user).collect(),
                })
                .await
                .context("UserService.Upsert")?;
        }
    }

    if !args.quiet {
        println!(
            "{} (seed {seed}): {} users, {} days",
            arm.name(),
            thousands(args.users),
            args.days
        );
    }
    let mode = match arm {
        Arm::None => Mode::Nothing,
        Arm::Oracle => Mode::Oracle(oracle::Oracle::of(bundle)?),
        _ => Mode::Fcfs,
    };
    let mut fcfs = Fcfs::new(mode, bundle, &profiles);
    let mut tx = TxLog::new(&profiles);
    let mut waiting: Vec<Outcome> = Vec::new();
    let mut days = Vec::new();
    let mut submitted = 0u64;
    let mut events = 0u64;
    let reset_generator = bundle.generators.iter().any(
        |g| matches!(&g.trigger, tern_policy::Trigger::Event { event, .. } if event == RESET_EVENT),
    );
    let mut reported = 0u64;
    let mut volume_by_hour: BTreeMap<String, [u64; 24]> = BTreeMap::new();
    let steps = i64::from(args.days) * 24;
    let mut spent = Spent::default();
    for step in 1..=steps {
        let now = start + TimeDelta::hours(step);
        let hour_start = now - TimeDelta::hours(1);
        if let Some(c) = &mut clients {
            let t = Instant::now();
            c.admin
                .advance_clock(pb::AdvanceClockRequest {
                    to: Some(timestamp(now)),
                })
                .await
                .context("AdminService.AdvanceClock")?;
            spent.clock += t.elapsed();
        }
        if step % 24 == 0 {
            let day = (now - TimeDelta::days(1)).date_naive();
            // Outcomes up to midnight belong to the closing day. The senders and the ledger learn
            // from them before they leave the waiting list: an unsubscribe that falls due at
            // midnight must still take the channel away, or the ledger counts a password reset
            // to that user as reachable and expired.
            if !arm.through_tern() {
                fcfs.learn(&waiting, now);
            }
            tx.learn(&waiting, now);
            reported += report_due(&mut clients, &mut waiting, now).await?;
            let r = world.end_of_day(day)?;
            if let Some(c) = &mut clients {
                for chunk in r.active_users.chunks(BATCH) {
                    c.feedback
                        .report_activity(pb::ReportActivityRequest {
                            activity: chunk
                                .iter()
                                .map(|u| pb::Activity {
                                    user_id: u.clone(),
                                    occurred_at: Some(timestamp(now - TimeDelta::hours(12))),
                                })
                                .collect(),
                        })
                        .await
                        .context("FeedbackService.ReportActivity")?;
                }
            }
            let row = DayRow {
                day,
                messages: r
                    .messages
                    .iter()
                    .map(|(k, v)| (k.clone(), *v as u64))
                    .collect(),
                opens: r.opens as u64,
                conversions: r.conversions as u64,
                unsubscribes: (r.unsubscribes + r.push_disables) as u64,
                active_users: r.active as u64,
            };
            if !args.quiet {
                let model = match &mut clients {
                    Some(c) => {
                        let m = c
                            .admin
                            .get_status(pb::GetStatusRequest {})
                            .await?
                            .into_inner()
                            .model_version;
                        if m.is_empty() {
                            "no model yet".to_string()
                        } else {
                            format!("model {m}")
                        }
                    }
                    None => "no model".into(),
                };
                println!("  {}", day_line(&row, args.users, &model));
            }
            days.push(row);
            if step == steps {
                break;
            }
        }

        // Delivery: everything due now, on every channel.
        let t = Instant::now();
        let sent = match &mut clients {
            Some(c) => deliver_due(c, &mut world, now).await?,
            None => fcfs.deliver(&mut world, now, false)?,
        };
        for d in sent {
            tx.sent(&d.user_id, &d.priority, now);
            volume_by_hour.entry(d.channel).or_default()[now.hour() as usize] += 1;
            waiting.extend(d.outcomes);
        }
        if !arm.through_tern() {
            fcfs.learn(&waiting, now);
        }
        tx.learn(&waiting, now);
        reported += report_due(&mut clients, &mut waiting, now).await?;
        spent.delivery += t.elapsed();

        // Upstream: the opportunities that arose in the hour that just ended.
        let t = Instant::now();
        let arisen = world.opportunities(hour_start, now);
        spent.world += t.elapsed();
        let t = Instant::now();
        match &mut clients {
            Some(c) => {
                // Password resets arrive as events, for the policy's generator to turn into
                // opportunities; the rest are submitted as opportunities.
                let (resets, direct): (Vec<NewOpportunity>, Vec<NewOpportunity>) = arisen
                    .into_iter()
                    .partition(|o| reset_generator && o.category == "account");
                for o in direct.iter().chain(&resets) {
                    tx.submit(o, now);
                }
                for chunk in direct.chunks(BATCH) {
                    let reply = c
                        .opportunities
                        .submit(pb::SubmitRequest {
                            source: tern_sim::SOURCE.into(),
                            opportunities: chunk.iter().map(opportunity).collect(),
                        })
                        .await
                        .context("OpportunityService.Submit")?
                        .into_inner();
                    ensure!(
                        reply.rejected.is_empty(),
                        "tern rejected simulated opportunities: {:?}",
                        reply.rejected.first()
                    );
                    submitted += u64::from(reply.created);
                }
                if !resets.is_empty() {
                    let reply = c
                        .opportunities
                        .submit_events(pb::SubmitEventsRequest {
                            events: resets.iter().map(reset_event).collect(),
                        })
                        .await
                        .context("OpportunityService.SubmitEvents")?
                        .into_inner();
                    ensure!(
                        reply.evaluation_errors == 0,
                        "the password-reset generator failed: {:?}",
                        reply.error_samples
                    );
                    submitted += u64::from(reply.opportunities_created);
                    events += resets.len() as u64;
                }
            }
            None => {
                submitted += arisen.len() as u64;
                for o in &arisen {
                    tx.submit(o, now);
                }
                fcfs.arrive(arisen)
            }
        }
        spent.upstream += t.elapsed();

        // Delivery again, as a delivery service pulls all the time: what must go out at once
        // (a class that bypasses anything, which tern planned as it arrived) goes now, not
        // an hour later, when a password reset has expired.
        let t = Instant::now();
        let urgent = match &mut clients {
            Some(c) => deliver_due(c, &mut world, now).await?,
            None => fcfs.deliver(&mut world, now, true)?,
        };
        for d in urgent {
            tx.sent(&d.user_id, &d.priority, now);
            volume_by_hour.entry(d.channel).or_default()[now.hour() as usize] += 1;
            waiting.extend(d.outcomes);
        }
        spent.delivery += t.elapsed();
    }
    let end = start + TimeDelta::days(i64::from(args.days));

    let summary = world.summary();
    let mut result = RunResult {
        arm,
        seed,
        users: args.users,
        retention: summary.retention,
        messages: summary.messages.values().sum::<usize>() as u64,
        opens: summary.opens as u64,
        conversions: summary.conversions as u64,
        conversion_value: summary.conversion_value,
        unsubscribes: (summary.unsubscribes + summary.push_disables) as u64,
        days,
        submitted,
        events,
        opportunity_states: BTreeMap::new(),
        outcomes_stored: BTreeMap::new(),
        outcomes_reported: reported,
        models_trained: 0,
        active_model: None,
        suppressed: BTreeMap::new(),
        cap_violations: cap_violations(bundle, world.receipts()),
        transactional: tx.finish(end),
        uplift: Vec::new(),
        volume_by_hour,
        calibration: Vec::new(),
        seconds: 0.0,
    };
    if let Some(d) = daemon {
        result.uplift = uplift::score(
            store,
            &world,
            bundle,
            end,
            TimeDelta::days(i64::from(LABELS.retention_days)),
        )
        .await?;
        store.expire(end).await?;
        result.opportunity_states = store.opportunity_states().await?;
        result.outcomes_stored = store.outcome_counts().await?;
        result.suppressed = store.suppressed_totals().await?;
        let models = store.list_models().await?;
        result.models_trained = models.len() as u64;
        result.active_model = store.active_model_version().await?;
        result.calibration = store
            .engagement_calibration(10, TimeDelta::hours(48), end)
            .await?
            .into_iter()
            .map(|b| CalibrationBin {
                predicted: b.predicted,
                observed: b.observed,
                count: b.count,
            })
            .collect();
        d.stop();
        d.finish(Duration::from_secs(5)).await?;
    }
    result.seconds = started.elapsed().as_secs_f64();
    if !args.quiet {
        println!(
            "  done in {:.0}s: retention (mean daily active share, last 7 days) {:.1}%",
            result.seconds,
            100.0 * result.retention
        );
        println!("  {}", spent.line(result.seconds));
    }
    Ok(result)
}

/// Where a run's wall-clock time went, as the driver sees it: `AdvanceClock` holds the daemon's
/// cron jobs (replans, generators, training), delivery the pulls, acks and outcome reports, the
/// world the simulated population's own work, upstream the submits.
#[derive(Default)]
struct Spent {
    clock: Duration,
    delivery: Duration,
    world: Duration,
    upstream: Duration,
}

impl Spent {
    fn line(&self, total: f64) -> String {
        let parts = [
            ("clock and cron jobs", self.clock),
            ("delivery and outcomes", self.delivery),
            ("upstream submits", self.upstream),
            ("the population", self.world),
        ];
        let rest = total - parts.iter().map(|(_, d)| d.as_secs_f64()).sum::<f64>();
        let mut line: Vec<String> = parts
            .iter()
            .map(|(name, d)| format!("{name} {:.0}s", d.as_secs_f64()))
            .collect();
        line.push(format!("the rest {rest:.0}s"));
        format!("time: {}", line.join(", "))
    }
}

/// One message that reached a simulated user.
pub(super) struct Delivered {
    pub(super) channel: String,
    pub(super) user_id: String,
    pub(super) priority: String,
    pub(super) outcomes: Vec<Outcome>,
}

/// Pulls everything due on every channel, acks it as sent, and hands it to the population.
/// Returns each message with its outcomes.
pub(super) async fn deliver_due(
    c: &mut Clients,
    world: &mut World,
    now: DateTime<Utc>,
) -> Result<Vec<Delivered>> {
    let mut sent = Vec::new();
    for channel in ["push", "email", "in_app"] {
        loop {
            let mut items = c
                .schedule
                .pull(pb::PullRequest {
                    holder: format!("sim-{channel}"),
                    channels: vec![channel.into()],
                    max_items: PULL,
                    lease: Some(prost_types::Duration {
                        seconds: 600,
                        nanos: 0,
                    }),
                })
                .await
                .context("ScheduleService.Pull")?
                .into_inner()
                .items;
            if items.is_empty() {
                break;
            }
            // A pull's order among items due at once is the database's; the population must not
            // depend on it (the same seed gives the same run), so items are acked and delivered
            // in one canonical order.
            items.sort_by(|a, b| (&a.user_id, &a.dedupe_key).cmp(&(&b.user_id, &b.dedupe_key)));
            let acks = c
                .schedule
                .ack(pb::AckRequest {
                    acks: items.iter().map(pb::AckItem::sent).collect(),
                })
                .await
                .context("ScheduleService.Ack")?
                .into_inner()
                .outcomes;
            let ids: BTreeMap<i64, i64> = acks
                .iter()
                .filter_map(|a| a.message_id.map(|m| (a.item_id, m)))
                .collect();
            for item in &items {
                // Only what tern confirmed as sent reaches the user.
                let Some(message) = ids.get(&item.item_id) else {
                    continue;
                };
                // The population knows a message by the opportunity's key, which the seed
                // fixes, not by tern's message id, which depends on insertion order; outcomes
                // are reported under tern's id.
                let mut outcomes = world.deliver(Delivery {
                    message_id: item.dedupe_key.clone(),
                    user_id: item.user_id.clone(),
                    channel: item.channel.clone(),
                    category: item.category.clone(),
                    template: item.template.clone(),
                    relevance: item.signals.get("relevance").copied(),
                    order_value: item.signals.get("order_value").copied(),
                    at: now,
                })?;
                for o in &mut outcomes {
                    o.message_id = message.to_string();
                }
                sent.push(Delivered {
                    channel: item.channel.clone(),
                    user_id: item.user_id.clone(),
                    priority: item.priority.clone(),
                    outcomes,
                });
            }
        }
    }
    Ok(sent)
}

/// Reports the outcomes whose time has come; keeps the rest waiting.
pub(super) async fn report_due(
    clients: &mut Option<Clients>,
    waiting: &mut Vec<Outcome>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let (due, later): (Vec<Outcome>, Vec<Outcome>) = std::mem::take(waiting)
        .into_iter()
        .partition(|o| o.at <= now);
    *waiting = later;
    let Some(c) = clients else {
        return Ok(due.len() as u64);
    };
    let mut n = 0;
    for chunk in due.chunks(BATCH) {
        let outcomes = chunk
            .iter()
            .filter_map(|o| {
                Some(pb::Outcome {
                    user_id: o.user_id.clone(),
                    message_id: o.message_id.parse().ok()?,
                    kind: outcome_kind(o.kind) as i32,
                    occurred_at: Some(timestamp(o.at)),
                    value: o.value,
                })
            })
            .collect::<Vec<_>>();
        n += outcomes.len() as u64;
        c.feedback
            .report(pb::ReportRequest { outcomes })
            .await
            .context("FeedbackService.Report")?;
    }
    Ok(n)
}

pub(super) fn outcome_kind(k: OutcomeKind) -> pb::OutcomeKind {
    match k {
        OutcomeKind::Delivered => pb::OutcomeKind::Delivered,
        OutcomeKind::Opened => pb::OutcomeKind::Opened,
        OutcomeKind::Clicked => pb::OutcomeKind::Clicked,
        OutcomeKind::Converted => pb::OutcomeKind::Converted,
        OutcomeKind::Unsubscribed => pb::OutcomeKind::Unsubscribed,
        OutcomeKind::PushDisabled => pb::OutcomeKind::PushDisabled,
        OutcomeKind::Bounced => pb::OutcomeKind::Bounced,
        OutcomeKind::Complained => pb::OutcomeKind::Complained,
    }
}

/// A profile as the upstream system describes the user to tern. The attributes are the ones
/// the example policies' conditions read.
pub(super) fn user(p: &Profile) -> pb::User {
    let attributes = serde_json::json!({
        "country": p.country,
        "premium": p.premium,
        "tags": p.tags,
        "push_enabled": p.push_enabled,
        "devices": p.device.iter().collect::<Vec<_>>(),
        "email_verified": p.email_verified,
        "email_unsubscribed": false,
        "digest_opt_out": false,
        "unseen_items": 0,
        "followed_artists": [],
        "artist_affinity": {},
    });
    let state = |channel: &str, reachable: bool| pb::ChannelState {
        channel: channel.into(),
        reachable,
        opted_out: false,
    };
    pb::User {
        user_id: p.user_id.clone(),
        timezone: p.timezone.clone(),
        locale: p.locale.clone(),
        attributes_json: attributes.to_string(),
        channels: vec![
            state("push", p.push_enabled && p.device.is_some()),
            state("email", p.email_verified),
            state("in_app", true),
        ],
        opted_out_categories: Vec::new(),
    }
}

/// The upstream event behind a simulated password reset: the policy's `password-reset`
/// generator keys the message on `event.request_id`.
pub(super) fn reset_event(o: &NewOpportunity) -> pb::Event {
    pb::Event {
        r#type: RESET_EVENT.into(),
        user_ids: vec![o.user_id.clone()],
        event_id: o.dedupe_key.clone(),
        numbers: Default::default(),
        strings: [("request_id".to_string(), o.dedupe_key.clone())].into(),
        occurred_at: Some(timestamp(o.created_at)),
    }
}

pub(super) fn opportunity(o: &NewOpportunity) -> pb::Opportunity {
    pb::Opportunity {
        user_id: o.user_id.clone(),
        dedupe_key: o.dedupe_key.clone(),
        template: o.template.clone(),
        category: o.category.clone(),
        priority: o.priority.clone(),
        channels: o.channels.clone(),
        signals: o.signals.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        payload: o.payload.clone().into_iter().collect(),
        created_at: Some(timestamp(o.created_at)),
        expires_at: Some(timestamp(o.expires_at)),
        ..Default::default()
    }
}
