//! Generators: opportunities the policy creates itself, from submitted events
//! (`OpportunityService.SubmitEvents`) and on cron schedules over a segment of users.
//!
//! Both paths are idempotent. An event id is recorded once its opportunities are stored, and a
//! resubmitted id is a duplicate; the opportunities' dedupe keys come from the event (or the run
//! time), so a crash between storing them and recording the event only makes the retry find
//! them as duplicates. A scheduled run is claimed per firing in `cron_runs` (see `cron.rs`),
//! and its keys carry the run's time, so two runs of one firing could not double a message
//! either.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use tern_core::NewOpportunity;
use tern_policy::{Bundle, EvalError, EventView, Firing, Generator, Proposal, UserView};
use tern_server::{ControlError, Event, EventResult, EventsSummary, GeneratedOpportunity, Metrics};
use tern_store::{EventContent, EventRecord, GeneratorUser, Store};

/// Opportunities are stored in batches of this many.
const INGEST_BATCH: usize = 5_000;
/// A scheduled run reads users in pages of this many.
const PAGE: i64 = 2_000;
/// Error sentences kept for the reply and the log.
const SAMPLES: usize = 10;

/// Counts of one generator pass, added up over batches.
#[derive(Debug, Default)]
pub struct Tally {
    pub created: u64,
    pub duplicate: u64,
    pub errors: u64,
    pub samples: Vec<String>,
    pending: Vec<NewOpportunity>,
    /// For each pending row, the index of the event (in the request) that proposed it.
    pending_event: Vec<Option<usize>>,
    /// What each event's proposals became, by event index: stored or found existing.
    made: Vec<(usize, GeneratedOpportunity)>,
}

impl Tally {
    fn error(&mut self, e: EvalError) {
        self.errors += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(e.to_string());
        }
    }

    async fn push(
        &mut self,
        store: &Store,
        p: Proposal,
        event: Option<usize>,
    ) -> Result<(), ControlError> {
        self.pending_event.push(event);
        self.pending.push(NewOpportunity {
            user_id: p.user_id,
            dedupe_key: p.dedupe_key,
            source: p.source,
            template: p.template,
            category: p.category,
            priority: p.priority.as_str().to_string(),
            channels: p.channels,
            signals: p.signals,
            payload: p.payload,
            created_at: p.created_at,
            expires_at: p.expires_at,
        });
        if self.pending.len() >= INGEST_BATCH {
            self.flush(store).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, store: &Store) -> Result<(), ControlError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let report = store.ingest_opportunities(&self.pending).await?;
        self.created += report.new_count() as u64;
        self.duplicate += report.duplicate_count() as u64;
        // Generators write names and keys the policy validated; a rejected row means a generator
        // produced something the store refuses (say, a key too long), which is its error.
        for ((row, status), event) in self
            .pending
            .iter()
            .zip(&report.rows)
            .zip(&self.pending_event)
        {
            let id = match status {
                tern_store::RowStatus::New(id) => Some(*id),
                tern_store::RowStatus::Duplicate => None,
                tern_store::RowStatus::Rejected(reason) => {
                    self.errors += 1;
                    if self.samples.len() < SAMPLES {
                        self.samples.push(format!(
                            "{} for user {}: the opportunity was rejected: {reason}",
                            row.source, row.user_id
                        ));
                    }
                    continue;
                }
            };
            if let Some(event) = event {
                self.made.push((
                    *event,
                    GeneratedOpportunity {
                        generator: row
                            .source
                            .strip_prefix("generator:")
                            .unwrap_or(&row.source)
                            .to_string(),
                        user_id: row.user_id.clone(),
                        dedupe_key: row.dedupe_key.clone(),
                        opportunity_id: id,
                    },
                ));
            }
        }
        self.pending.clear();
        self.pending_event.clear();
        Ok(())
    }

    fn count(&self, metrics: &Metrics, generator: &str) {
        metrics.add(
            "tern_generator_opportunities_total",
            &[("generator", generator)],
            self.created as f64,
        );
        metrics.add(
            "tern_generator_errors_total",
            &[("generator", generator)],
            self.errors as f64,
        );
    }
}

/// The `user` variable for a user tern does not know yet: only the id, in UTC, no attributes,
/// so that a generator without a condition (a password reset) still reaches them.
pub fn unknown_user(user_id: &str) -> UserView {
    UserView {
        id: user_id.to_string(),
        timezone: "UTC".into(),
        attributes: serde_json::json!({}),
        ..UserView::default()
    }
}

/// The `user` variable for a stored user.
pub fn user_view(u: GeneratorUser) -> UserView {
    UserView {
        id: u.user_id,
        timezone: u.timezone,
        locale: u.locale,
        attributes: u.attributes,
        active_days_28d: u.active_days_28d,
        opted_out_categories: u.opted_out_categories,
        channels: u.channels,
    }
}

/// Runs the event-triggered generators of `bundle` on `events`. Events seen before (or twice
/// in this batch) are skipped. A user tern does not know yet is seen with no attributes, so a
/// generator without a condition (a password reset) still reaches them.
pub async fn submit_events(
    store: &Store,
    bundle: &Bundle,
    metrics: &Metrics,
    events: Vec<Event>,
    now: DateTime<Utc>,
) -> Result<EventsSummary, ControlError> {
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let mut seen: HashSet<String> = store.seen_events(&ids).await?;
    let mut results: Vec<EventResult> = Vec::with_capacity(events.len());
    // Fresh events with their index in the request.
    let mut fresh = Vec::with_capacity(events.len());
    let mut duplicates = 0;
    for (i, e) in events.into_iter().enumerate() {
        let duplicate_event = !seen.insert(e.event_id.clone());
        results.push(EventResult {
            event_id: e.event_id.clone(),
            duplicate_event,
            opportunities: Vec::new(),
        });
        if duplicate_event {
            duplicates += 1;
        } else {
            fresh.push((i, e));
        }
    }

    let wanted: Vec<String> = fresh
        .iter()
        .map(|(_, e)| e)
        .filter(|e| generators_for(bundle, &e.event_type).next().is_some())
        .flat_map(|e| e.user_ids.iter().cloned())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut users: HashMap<String, UserView> = HashMap::with_capacity(wanted.len());
    for chunk in wanted.chunks(PAGE as usize) {
        for u in store.generator_users(chunk, now).await? {
            users.insert(u.user_id.clone(), user_view(u));
        }
    }

    let mut per_generator: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut records = Vec::with_capacity(fresh.len());
    for (index, e) in &fresh {
        let view = EventView {
            event_id: e.event_id.clone(),
            numbers: e.numbers.clone(),
            strings: e.strings.clone(),
        };
        let mut proposed: u64 = 0;
        for g in generators_for(bundle, &e.event_type) {
            let mut firing = Firing::for_event(g, &e.event_type, &view, now)
                .expect("generators_for matched the event type");
            let tally = per_generator.entry(&g.metadata.name).or_default();
            for user_id in unique(&e.user_ids) {
                let unknown;
                let user = match users.get(user_id) {
                    Some(u) => u,
                    None => {
                        unknown = unknown_user(user_id);
                        &unknown
                    }
                };
                match firing.propose(user) {
                    Ok(Some(p)) => {
                        proposed += 1;
                        tally.push(store, p, Some(*index)).await?
                    }
                    Ok(None) => {}
                    Err(err) => tally.error(err),
                }
            }
        }
        records.push(EventRecord {
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            user_count: i32::try_from(e.user_ids.len()).unwrap_or(i32::MAX),
            // What the generators proposed; some may have existed already.
            opportunities: i32::try_from(proposed).unwrap_or(i32::MAX),
            occurred_at: e.occurred_at,
            content: EventContent {
                user_ids: e.user_ids.clone(),
                numbers: e.numbers.clone(),
                strings: e.strings.clone(),
            },
        });
    }
    let mut summary = EventsSummary {
        duplicate_events: duplicates,
        ..EventsSummary::default()
    };
    for (name, tally) in &mut per_generator {
        tally.flush(store).await?;
        for (event, made) in tally.made.drain(..) {
            results[event].opportunities.push(made);
        }
        tally.count(metrics, name);
        summary.opportunities_created += tally.created;
        summary.opportunities_duplicate += tally.duplicate;
        summary.evaluation_errors += tally.errors;
        for s in tally.samples.drain(..) {
            if summary.error_samples.len() < SAMPLES {
                summary.error_samples.push(s);
            }
        }
    }
    summary.results = results;
    // Only now: an event is recorded once what it created is stored.
    if !records.is_empty() {
        store.record_events(&records, now).await?;
    }
    if summary.evaluation_errors > 0 {
        tracing::warn!(
            errors = summary.evaluation_errors,
            first = %summary.error_samples.first().map(String::as_str).unwrap_or(""),
            "generator expressions failed for some users"
        );
    }
    Ok(summary)
}

/// Runs one firing of a scheduled generator over every user, page by page.
pub async fn run_scheduled(
    store: &Store,
    generator: &Generator,
    metrics: &Metrics,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Tally, ControlError> {
    let name = &generator.metadata.name;
    let Some(mut firing) = Firing::for_run(generator, at) else {
        return Err(ControlError::Internal(format!(
            "generator {name} has no schedule"
        )));
    };
    let mut tally = Tally::default();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .generator_users_page(after.as_deref(), PAGE, now)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.user_id.clone());
        for u in page {
            match firing.propose(&user_view(u)) {
                Ok(Some(p)) => tally.push(store, p, None).await?,
                Ok(None) => {}
                Err(e) => tally.error(e),
            }
        }
    }
    tally.flush(store).await?;
    tally.count(metrics, name);
    metrics.inc("tern_generator_runs_total", &[("generator", name.as_str())]);
    tracing::info!(
        generator = %name,
        firing = %at,
        created = tally.created,
        duplicate = tally.duplicate,
        errors = tally.errors,
        first_error = %tally.samples.first().map(String::as_str).unwrap_or(""),
        "ran a scheduled generator"
    );
    Ok(tally)
}

fn generators_for<'b>(
    bundle: &'b Bundle,
    event_type: &'b str,
) -> impl Iterator<Item = &'b Generator> {
    bundle.generators.iter().filter(move |g| {
        matches!(&g.trigger, tern_policy::Trigger::Event { event, .. } if event == event_type)
    })
}

/// The ids in order, each once.
fn unique(ids: &[String]) -> impl Iterator<Item = &String> {
    let mut seen = HashSet::new();
    ids.iter().filter(move |id| seen.insert(id.as_str()))
}
