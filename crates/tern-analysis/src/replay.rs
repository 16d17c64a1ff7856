//! `tern policy simulate`'s generator replay: what the generators that a change adds, removes or
//! edits would have created over the period, under each bundle, on the events tern received and
//! the scheduled runs that fell in it.
//!
//! Only generators that differ between the bundles are replayed: an unchanged generator creates
//! the same opportunities under both. The replay counts opportunities and evaluation errors; it
//! does not plan them, so the volume and value figures of the simulation cover the logged
//! decisions only, and the report says so.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tern_policy::{Bundle, EventView, Firing, Generator, Trigger, UserView};
use tern_store::Store;

use tern_daemon::generators::{unknown_user, user_view};

use crate::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

/// At most this many events are replayed; a longer period is cut, and the report says so.
const MAX_EVENTS: i64 = 200_000;
/// At most this many firings of one scheduled generator are replayed (the latest ones).
const MAX_FIRINGS: usize = 31;
/// Users per page of a scheduled run.
const PAGE: i64 = 1_000;

/// What one generator created under one bundle.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Created {
    pub opportunities: u64,
    /// Users for whom an expression failed (each is skipped, as at run time).
    pub errors: u64,
    /// The first error, as the daemon would log it.
    pub first_error: Option<String>,
}

/// One generator that differs between the bundles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratorRow {
    pub generator: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// `None` where the bundle has no such generator.
    pub current: Option<Created>,
    pub new: Option<Created>,
}

/// The replay's figures and what it could not cover.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GeneratorReplay {
    pub rows: Vec<GeneratorRow>,
    /// Events replayed, of those received in the period.
    pub events_replayed: u64,
    pub events_received: u64,
    /// What could not be replayed, one sentence each.
    pub not_replayed: Vec<String>,
}

/// Replays every generator that differs between `current` and `new` over `[from, until)`.
pub async fn replay_generators(
    store: &Store,
    current: &Bundle,
    new: &Bundle,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<GeneratorReplay> {
    let mut names: Vec<&str> = current
        .generators
        .iter()
        .chain(&new.generators)
        .map(|g| g.metadata.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut changed: Vec<(&str, Option<&Generator>, Option<&Generator>)> = Vec::new();
    for name in names {
        let (a, b) = (current.generator(name), new.generator(name));
        let same = matches!((a, b), (Some(x), Some(y)) if x.canonical() == y.canonical());
        if !same {
            changed.push((name, a, b));
        }
    }
    let mut out = GeneratorReplay::default();
    if changed.is_empty() {
        return Ok(out);
    }
    let mut tallies: BTreeMap<(&str, bool), Created> = BTreeMap::new();

    // Events: each changed event generator of either bundle, on the events of its type.
    let event_generators: Vec<(bool, &Generator)> = changed
        .iter()
        .flat_map(|(_, a, b)| [(false, *a), (true, *b)])
        .filter_map(|(is_new, g)| g.map(|g| (is_new, g)))
        .filter(|(_, g)| matches!(g.trigger, Trigger::Event { .. }))
        .collect();
    if !event_generators.is_empty() {
        let events = store.events_between(from, until, MAX_EVENTS + 1).await?;
        if events.len() as i64 > MAX_EVENTS {
            out.not_replayed.push(format!(
                "only the first {MAX_EVENTS} events of the period were replayed"
            ));
        }
        let mut users: HashMap<String, UserView> = HashMap::new();
        let mut without_content = 0u64;
        let mut exercised: HashSet<&str> = HashSet::new();
        for e in events.iter().take(MAX_EVENTS as usize) {
            out.events_received += 1;
            let matching: Vec<&(bool, &Generator)> = event_generators
                .iter()
                .filter(|(_, g)| matches!(&g.trigger, Trigger::Event { event, .. } if *event == e.event_type))
                .collect();
            if matching.is_empty() {
                continue;
            }
            exercised.insert(e.event_type.as_str());
            let Some(content) = &e.content else {
                without_content += 1;
                continue;
            };
            out.events_replayed += 1;
            let missing: Vec<String> = content
                .user_ids
                .iter()
                .filter(|u| !users.contains_key(*u))
                .cloned()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            for chunk in missing.chunks(PAGE as usize) {
                for u in store.generator_users(chunk, e.received_at).await? {
                    users.insert(u.user_id.clone(), user_view(u));
                }
            }
            let view = EventView {
                event_id: e.event_id.clone(),
                numbers: content.numbers.clone(),
                strings: content.strings.clone(),
            };
            for (is_new, g) in matching {
                let Some(mut firing) = Firing::for_event(g, &e.event_type, &view, e.received_at)
                else {
                    continue;
                };
                let tally = tallies
                    .entry((g.metadata.name.as_str(), *is_new))
                    .or_default();
                let mut seen = HashSet::new();
                for user_id in content.user_ids.iter().filter(|u| seen.insert(u.as_str())) {
                    let unknown;
                    let user = match users.get(user_id) {
                        Some(u) => u,
                        None => {
                            unknown = unknown_user(user_id);
                            &unknown
                        }
                    };
                    count(tally, firing.propose(user));
                }
            }
        }
        let mut silent: Vec<String> = event_generators
            .iter()
            .filter_map(|(_, g)| match &g.trigger {
                Trigger::Event { event, .. } if !exercised.contains(event.as_str()) => Some(
                    format!("generator {}: no `{event}` event was received in the period, so it was not exercised", g.metadata.name),
                ),
                _ => None,
            })
            .collect();
        silent.sort();
        silent.dedup();
        out.not_replayed.extend(silent);
        if without_content > 0 {
            out.not_replayed.push(format!(
                "{without_content} event(s) were recorded before tern kept event content and could not be replayed"
            ));
        }
    }

    // Scheduled runs: the firings of each changed scheduled generator in the period, over
    // every user as of the firing.
    for (_, a, b) in &changed {
        for (is_new, g) in [(false, *a), (true, *b)] {
            let Some(g) = g else { continue };
            if !matches!(g.trigger, Trigger::Schedule { .. }) {
                continue;
            }
            // The daemon's own schedule reading, so that the replay fires when the daemon would.
            let job = tern_daemon::cron::Job::Generator(g);
            let firings: Vec<DateTime<Utc>> = tern_daemon::cron::firings(&job, from)
                .take_while(|t| *t < until)
                .take(10_000)
                .collect();
            let tally = tallies
                .entry((g.metadata.name.as_str(), is_new))
                .or_default();
            if firings.len() > MAX_FIRINGS {
                out.not_replayed.push(format!(
                    "generator {}: only the last {MAX_FIRINGS} of its {} firings in the period were replayed",
                    g.metadata.name,
                    firings.len()
                ));
            }
            let skip = firings.len().saturating_sub(MAX_FIRINGS);
            for at in firings.into_iter().skip(skip) {
                let Some(mut firing) = Firing::for_run(g, at) else {
                    continue;
                };
                let mut after: Option<String> = None;
                loop {
                    let page = store
                        .generator_users_page(after.as_deref(), PAGE, at)
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.user_id.clone());
                    for u in page {
                        count(tally, firing.propose(&user_view(u)));
                    }
                }
            }
        }
    }

    out.rows = changed
        .iter()
        .map(|(name, a, b)| GeneratorRow {
            generator: name.to_string(),
            change: match (a, b) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            },
            current: a.map(|_| tallies.get(&(*name, false)).cloned().unwrap_or_default()),
            new: b.map(|_| tallies.get(&(*name, true)).cloned().unwrap_or_default()),
        })
        .collect();
    Ok(out)
}

fn count(
    tally: &mut Created,
    result: Result<Option<tern_policy::Proposal>, tern_policy::EvalError>,
) {
    match result {
        Ok(Some(_)) => tally.opportunities += 1,
        Ok(None) => {}
        Err(e) => {
            tally.errors += 1;
            if tally.first_error.is_none() {
                tally.first_error = Some(e.to_string());
            }
        }
    }
}
