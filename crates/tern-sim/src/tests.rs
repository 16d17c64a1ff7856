//! Behavioural tests of the ground truth, including the policy comparison that calibrates it:
//! hand-written policies that know the truth, played against the population without tern.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tern_core::{NewOpportunity, OutcomeKind};

use crate::{
    max_in_window, Category, Channel, Config, DayReport, Delivery, Outcome, Receipt, SimError,
    Summary, World,
};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 3, 0, 0, 0).unwrap()
}

fn day(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// Sends nothing.
    None,
    /// Every opportunity on every allowed channel the profile says is reachable, at creation.
    Blast,
    /// At most one message per user per day: the most relevant opportunity above 0.5, by push
    /// within the user's active hours, else by email or in-app.
    Sensible,
    /// The three opportunities with the highest true click probability, per user and day.
    GreedyClick,
}

struct Run {
    reports: Vec<DayReport>,
    summary: Summary,
    outcomes: Vec<Outcome>,
    receipts: Vec<Receipt>,
}

impl Run {
    fn first_days(&self, days: usize, f: impl Fn(&DayReport) -> usize) -> usize {
        self.reports.iter().take(days).map(f).sum()
    }

    fn losses(&self) -> usize {
        self.summary.unsubscribes + self.summary.push_disables
    }
}

/// Plays `policy` for `days` days. Channels lost to an unsubscribe or push disable are not used
/// again, as tern would learn from the outcome.
fn play(policy: Policy, users: usize, seed: u64, days: i64) -> Run {
    play_with(policy, Config::new(users, seed, start()), days)
}

fn play_with(policy: Policy, config: Config, days: i64) -> Run {
    let mut world = World::new(config);
    let profiles: BTreeMap<String, _> = world
        .profiles()
        .into_iter()
        .map(|p| (p.user_id.clone(), p))
        .collect();
    let mut lost: BTreeSet<(String, String)> = BTreeSet::new();
    let mut reports = Vec::new();
    let mut outcomes = Vec::new();
    for d in 0..days {
        let day_start = start() + day(d);
        let day_end = day_start + day(1);
        let opportunities = world.opportunities(day_start, day_end);
        let mut by_user: BTreeMap<&str, Vec<&NewOpportunity>> = BTreeMap::new();
        for o in &opportunities {
            by_user.entry(&o.user_id).or_default().push(o);
        }
        let reachable = |user: &str, channel: &str| {
            let p = &profiles[user];
            let open = match channel {
                "push" => p.push_enabled,
                "email" => p.email_verified,
                _ => true,
            };
            open && !lost.contains(&(user.to_string(), channel.to_string()))
        };
        let mut deliveries = Vec::new();
        for (user, opps) in &by_user {
            match policy {
                Policy::None => {}
                Policy::Blast => {
                    for o in opps {
                        for c in &o.channels {
                            if reachable(user, c) {
                                deliveries.push(Delivery::of(o, c, o.created_at));
                            }
                        }
                    }
                }
                Policy::Sensible => {
                    let best = opps
                        .iter()
                        .filter(|o| o.signals["relevance"] > 0.5)
                        .max_by(|a, b| a.signals["relevance"].total_cmp(&b.signals["relevance"]));
                    let Some(o) = best else { continue };
                    let truth = world.user(user);
                    let until = o.expires_at.min(day_end);
                    let mut well_timed = None;
                    let mut t = o.created_at;
                    while t < until {
                        if truth.in_active_hours(t) {
                            well_timed = Some(t);
                            break;
                        }
                        t += TimeDelta::minutes(30);
                    }
                    let allows = |c: &str| o.channels.iter().any(|x| x == c) && reachable(user, c);
                    let choice = match well_timed {
                        Some(t) if allows("push") => Some(("push", t)),
                        _ if allows("email") => Some(("email", well_timed.unwrap_or(o.created_at))),
                        _ if allows("in_app") => Some(("in_app", o.created_at)),
                        _ => None,
                    };
                    if let Some((channel, at)) = choice {
                        deliveries.push(Delivery::of(o, channel, at));
                    }
                }
                Policy::GreedyClick => {
                    let truth = world.user(user);
                    let mut scored = Vec::new();
                    for o in opps {
                        let category: Category = o.category.parse().unwrap();
                        let until = o.expires_at.min(day_end);
                        let to_peak =
                            (truth.peak - truth.local_hour(o.created_at)).rem_euclid(24.0);
                        let peak = o.created_at + TimeDelta::minutes((to_peak * 60.0) as i64);
                        let mut best: Option<(f64, &str, DateTime<Utc>)> = None;
                        for c in &o.channels {
                            if !reachable(user, c) {
                                continue;
                            }
                            let channel: Channel = c.parse().unwrap();
                            for at in [o.created_at, peak] {
                                if at >= until {
                                    continue;
                                }
                                let p = world.click_probability(user, channel, category, at);
                                if best.is_none_or(|(q, _, _)| p > q) {
                                    best = Some((p, c, at));
                                }
                            }
                        }
                        if let Some((p, c, at)) = best {
                            scored.push((p, Delivery::of(o, c, at)));
                        }
                    }
                    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                    deliveries.extend(scored.into_iter().take(3).map(|(_, d)| d));
                }
            }
        }
        deliveries.sort_by(|a, b| {
            (a.at, &a.user_id, &a.message_id, &a.channel).cmp(&(
                b.at,
                &b.user_id,
                &b.message_id,
                &b.channel,
            ))
        });
        for delivery in deliveries {
            if lost.contains(&(delivery.user_id.clone(), delivery.channel.clone())) {
                continue;
            }
            let at = delivery.at;
            for outcome in world.deliver(delivery).unwrap() {
                assert!(outcome.at >= at, "{outcome:?} is before its send at {at}");
                match outcome.kind {
                    OutcomeKind::Unsubscribed => {
                        lost.insert((outcome.user_id.clone(), "email".to_string()));
                    }
                    OutcomeKind::PushDisabled => {
                        lost.insert((outcome.user_id.clone(), "push".to_string()));
                    }
                    _ => {}
                }
                outcomes.push(outcome);
            }
        }
        reports.push(world.end_of_day(day_start.date_naive()).unwrap());
    }
    Run {
        reports,
        summary: world.summary(),
        outcomes,
        receipts: world.receipts().to_vec(),
    }
}

#[test]
fn over_messaging_wins_the_first_days_and_loses_the_users() {
    const USERS: usize = 2_000;
    const DAYS: i64 = 21;
    for seed in [1, 2, 3] {
        let runs: Vec<(Policy, Run)> = [
            Policy::None,
            Policy::Blast,
            Policy::Sensible,
            Policy::GreedyClick,
        ]
        .into_iter()
        .map(|p| (p, play(p, USERS, seed, DAYS)))
        .collect();
        eprintln!(
            "seed {seed}: {:<12} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8}",
            "policy",
            "messages",
            "opens 1-3",
            "clicks 1-3",
            "opens",
            "clicks",
            "convs",
            "unsubs",
            "push off",
            "day 1",
            "last 7"
        );
        for (policy, run) in &runs {
            let s = &run.summary;
            eprintln!(
                "        {:<12} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7.3} {:>8.3}",
                format!("{policy:?}"),
                s.messages.values().sum::<usize>(),
                run.first_days(3, |r| r.opens),
                run.first_days(3, |r| r.clicks),
                s.opens,
                s.clicks,
                s.conversions,
                s.unsubscribes,
                s.push_disables,
                s.first_day_active,
                s.retention,
            );
        }
        for (policy, run) in &runs {
            let curve: Vec<String> = run
                .reports
                .iter()
                .map(|r| format!("{:.2}", r.active as f64 / USERS as f64))
                .collect();
            eprintln!(
                "        {:<12} daily active: {}",
                format!("{policy:?}"),
                curve.join(" ")
            );
        }
        let [none, blast, sensible, greedy] = [0, 1, 2, 3].map(|i| &runs[i].1);

        // Doing nothing leaves activity where it started.
        assert!((0.45..=0.55).contains(&none.summary.first_day_active));
        let first_week =
            none.reports[..7].iter().map(|r| r.active).sum::<usize>() as f64 / (7 * USERS) as f64;
        assert!((none.summary.retention - first_week).abs() < 0.015);

        // Blasting wins the short run...
        assert!(
            blast.first_days(3, |r| r.opens) as f64
                > 1.5 * sensible.first_days(3, |r| r.opens) as f64
        );
        assert!(
            blast.first_days(3, |r| r.clicks) as f64
                > 1.5 * sensible.first_days(3, |r| r.clicks) as f64
        );
        // ...and loses the long one, to sending nothing as well as to sending well.
        assert!(sensible.summary.retention > none.summary.retention + 0.03);
        assert!(sensible.summary.retention > blast.summary.retention + 0.15);
        assert!(none.summary.retention > blast.summary.retention + 0.1);
        assert!(blast.losses() > 4 * sensible.losses());
        // Chasing predicted clicks is the same trap.
        assert!(greedy.first_days(3, |r| r.clicks) > sensible.first_days(3, |r| r.clicks));
        assert!(sensible.summary.retention > greedy.summary.retention + 0.04);
        assert!(none.summary.retention > greedy.summary.retention);

        // The sensible policy really sent at most one message per user per UTC day.
        let mut per_day: BTreeMap<(&str, chrono::NaiveDate), usize> = BTreeMap::new();
        for r in &sensible.receipts {
            *per_day.entry((&r.user_id, r.at.date_naive())).or_default() += 1;
        }
        assert_eq!(per_day.values().max(), Some(&1));
        assert!(blast.receipts.len() > 3 * sensible.receipts.len());
    }
}

#[test]
fn outcomes_follow_their_send_in_order() {
    let mut world = World::new(Config::new(400, 7, start()));
    let opportunities = world.opportunities(start(), start() + day(1));
    let mut seen = BTreeMap::<OutcomeKind, usize>::new();
    for o in &opportunities {
        for channel in &o.channels {
            let at = o.created_at;
            let outcomes = world.deliver(Delivery::of(o, channel, at)).unwrap();
            for (i, outcome) in outcomes.iter().enumerate() {
                *seen.entry(outcome.kind).or_default() += 1;
                assert!(outcome.at >= at, "{outcome:?} is before its send at {at}");
                assert_eq!(outcome.message_id, o.dedupe_key);
                assert_eq!(outcome.user_id, o.user_id);
                assert!(i == 0 || outcomes[i - 1].at <= outcome.at);
                let has = |k| outcomes.iter().any(|x| x.kind == k);
                match outcome.kind {
                    OutcomeKind::Clicked => assert!(has(OutcomeKind::Opened)),
                    OutcomeKind::Converted => assert!(has(OutcomeKind::Clicked)),
                    _ => {}
                }
                let priced = outcome.kind == OutcomeKind::Converted && o.category == "marketing";
                assert_eq!(outcome.value, priced.then(|| o.signals["order_value"]));
            }
        }
    }
    for kind in [
        OutcomeKind::Opened,
        OutcomeKind::Clicked,
        OutcomeKind::Converted,
    ] {
        assert!(
            seen.get(&kind).is_some_and(|&n| n > 0),
            "no {kind} in {seen:?}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let a = play(Policy::Blast, 300, 11, 3);
    let b = play(Policy::Blast, 300, 11, 3);
    let c = play(Policy::Blast, 300, 12, 3);
    assert!(!a.outcomes.is_empty());
    assert_eq!(a.outcomes, b.outcomes);
    assert_eq!(a.reports, b.reports);
    assert_eq!(a.receipts, b.receipts);
    assert_eq!(a.summary, b.summary);
    assert_ne!(a.outcomes, c.outcomes);
    assert_ne!(a.reports, c.reports);

    let world = |seed| World::new(Config::new(300, seed, start()));
    let week = |w: &World| w.opportunities(start(), start() + day(7));
    assert_eq!(week(&world(11)), week(&world(11)));
    assert_ne!(week(&world(11)), week(&world(12)));
    assert_eq!(world(11).profiles(), world(11).profiles());
    assert_ne!(world(11).profiles(), world(12).profiles());
}

#[test]
fn opportunities_do_not_depend_on_how_time_is_sliced() {
    let world = World::new(Config::new(500, 5, start()));
    let from = start() + day(2);
    let whole = world.opportunities(from, from + day(1));
    let mut hourly = Vec::new();
    for h in 0..24 {
        let t = from + TimeDelta::hours(h);
        hourly.extend(world.opportunities(t, t + TimeDelta::hours(1)));
    }
    assert!(whole.len() > 500);
    assert_eq!(whole, hourly);

    // A range across midnight is the matching parts of both days.
    let (a, b) = (from + TimeDelta::hours(13), from + TimeDelta::hours(29));
    let both = world.opportunities(from, from + day(2));
    let inside: Vec<_> = both
        .into_iter()
        .filter(|o| a <= o.created_at && o.created_at < b)
        .collect();
    assert_eq!(world.opportunities(a, b), inside);

    // A bigger population keeps the same users with the same opportunities.
    let bigger = World::new(Config::new(1_000, 5, start()));
    let first: Vec<_> = bigger
        .opportunities(from, from + day(1))
        .into_iter()
        .filter(|o| o.user_id.as_str() <= "u000500")
        .collect();
    assert_eq!(first, whole);

    // Nothing arises before the start.
    assert!(world.opportunities(start() - day(3), start()).is_empty());
}

#[test]
fn opportunities_look_like_what_upstream_submits() {
    let world = World::new(Config::new(2_000, 3, start()));
    let week = world.opportunities(start(), start() + day(7));
    let mut per_category = BTreeMap::<&str, usize>::new();
    let mut keys = BTreeSet::new();
    for o in &week {
        o.validate().unwrap();
        assert!(
            keys.insert((&o.user_id, &o.dedupe_key)),
            "{} repeats",
            o.dedupe_key
        );
        *per_category.entry(&o.category).or_default() += 1;
        let category: Category = o.category.parse().unwrap();
        assert_eq!(o.template, category.template());
        assert_eq!(o.expires_at - o.created_at, category.ttl());
        let channels: Vec<&str> = category.channels().iter().map(|c| c.as_str()).collect();
        assert_eq!(o.channels, channels);
        assert_eq!(o.priority == "transactional", category == Category::Account);
        let relevance = o.signals["relevance"];
        assert!((0.0..=1.0).contains(&relevance));
        assert_eq!(
            o.signals.contains_key("order_value"),
            category == Category::Marketing
        );
    }
    let per_user_day = |c: &str| per_category[c] as f64 / (2_000.0 * 7.0);
    assert!(
        (0.95..1.05).contains(&per_user_day("content")),
        "{per_category:?}"
    );
    assert!(
        (0.46..0.54).contains(&per_user_day("social")),
        "{per_category:?}"
    );
    assert!(
        (0.27..0.33).contains(&per_user_day("marketing")),
        "{per_category:?}"
    );
    assert!(
        (0.005..0.02).contains(&per_user_day("account")),
        "{per_category:?}"
    );

    // Relevance tracks the truth without revealing it.
    let (mut close, mut n) = (0, 0);
    for o in week.iter().filter(|o| o.category == "content") {
        let truth = world.user(&o.user_id).interest[Category::Content.index()];
        n += 1;
        if (o.signals["relevance"] - truth).abs() < 0.3 {
            close += 1;
        }
        assert!(o.signals["relevance"] != truth || truth == 0.0 || truth == 1.0);
    }
    assert!(close as f64 > 0.9 * n as f64);
}

#[test]
fn the_population_is_plausible_and_the_eager_clickers_tire_easily() {
    let world = World::new(Config::new(2_000, 9, start()));
    let profiles = world.profiles();
    assert_eq!(profiles.len(), 2_000);
    assert_eq!(profiles[0].user_id, "u000001");
    assert_eq!(profiles[1_999].user_id, "u002000");
    let share = |f: &dyn Fn(&crate::Profile) -> bool| {
        profiles.iter().filter(|p| f(p)).count() as f64 / profiles.len() as f64
    };
    assert!((0.66..0.74).contains(&share(&|p| p.push_enabled)));
    assert!((0.82..0.88).contains(&share(&|p| p.email_verified)));
    assert!((0.12..0.18).contains(&share(&|p| p.premium)));
    for p in &profiles {
        assert_eq!(p.push_enabled, p.device.is_some());
        let tz: chrono_tz::Tz = p.timezone.parse().unwrap();
        let country = match p.timezone.as_str() {
            "Europe/London" => "GB",
            "Europe/Stockholm" => "SE",
            "America/New_York" | "America/Los_Angeles" => "US",
            "Asia/Tokyo" => "JP",
            "Australia/Sydney" => "AU",
            other => panic!("unexpected zone {other}"),
        };
        assert_eq!(p.country, country, "{tz}");
        assert!(p.locale.ends_with(country));
        assert!(p.tags.windows(2).all(|w| w[0] < w[1]));
    }

    // Rank users by how readily they click a well-timed push they mildly care about; the top
    // quarter must be more fatigue-sensitive than the bottom quarter.
    let mut users: Vec<(f64, f64)> = profiles
        .iter()
        .map(|p| {
            let u = world.user(&p.user_id);
            (u.responsiveness, u.sensitivity)
        })
        .collect();
    users.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mean = |xs: &[(f64, f64)]| xs.iter().map(|x| x.1).sum::<f64>() / xs.len() as f64;
    let (low, high) = (mean(&users[..500]), mean(&users[1_500..]));
    assert!(
        high > 1.3 * low,
        "sensitivity: top {high:.2}, bottom {low:.2}"
    );
}

#[test]
fn a_lost_channel_stays_lost_and_does_nothing() {
    let mut world = World::new(Config::new(50, 21, start()));
    let profile = world
        .profiles()
        .into_iter()
        .find(|p| p.push_enabled && p.email_verified)
        .unwrap();
    let user = profile.user_id;
    for (channel, lost_kind) in [
        ("push", OutcomeKind::PushDisabled),
        ("email", OutcomeKind::Unsubscribed),
    ] {
        let send = |i: i64| Delivery {
            message_id: format!("{channel}-{i}"),
            user_id: user.clone(),
            channel: channel.to_string(),
            category: "marketing".to_string(),
            template: "offer".to_string(),
            relevance: Some(0.9),
            order_value: Some(20.0),
            at: start() + TimeDelta::minutes(2 * i),
        };
        // Enough messages in one day that fatigue makes the loss certain.
        let mut lost_at = None;
        for i in 0..250 {
            let outcomes = world.deliver(send(i)).unwrap();
            if let Some(o) = outcomes.iter().find(|o| o.kind == lost_kind) {
                assert!(o.at >= send(i).at);
                lost_at = Some(i);
                break;
            }
        }
        let lost_at = lost_at.unwrap_or_else(|| panic!("{channel} never lost"));
        let before = world.receipts().len();
        for i in lost_at + 1..lost_at + 40 {
            assert_eq!(world.deliver(send(i)).unwrap(), Vec::new());
        }
        let after = &world.receipts()[before..];
        assert_eq!(after.len(), 39, "unreached messages are still logged");
        assert!(after.iter().all(|r| !r.reached && r.channel == channel));
    }
    let report = world.end_of_day(start().date_naive()).unwrap();
    assert_eq!((report.push_disables, report.unsubscribes), (1, 1));
    assert!(report.unreached >= 78);
    assert!(report.mean_fatigue > 0.0);
    // The next day, the lost channels are still lost.
    for channel in ["push", "email"] {
        let d = Delivery {
            message_id: "next-day".to_string(),
            user_id: user.clone(),
            channel: channel.to_string(),
            category: "account".to_string(),
            template: "password_reset".to_string(),
            relevance: None,
            order_value: None,
            at: start() + day(1) + TimeDelta::hours(12),
        };
        assert_eq!(world.deliver(d).unwrap(), Vec::new());
    }
}

#[test]
fn in_app_messages_reach_only_users_active_that_day() {
    let mut world = World::new(Config::new(400, 8, start()));
    let at = start() + TimeDelta::hours(12);
    let mut opened = 0;
    for p in world.profiles() {
        let active = world.user(&p.user_id).active_today;
        let outcomes = world
            .deliver(Delivery {
                message_id: format!("m-{}", p.user_id),
                user_id: p.user_id.clone(),
                channel: "in_app".to_string(),
                category: "content".to_string(),
                template: "content_pick".to_string(),
                relevance: None,
                order_value: None,
                at,
            })
            .unwrap();
        if !active {
            assert!(outcomes.is_empty());
        }
        opened += outcomes
            .iter()
            .filter(|o| o.kind == OutcomeKind::Opened)
            .count();
        assert!(outcomes.iter().all(|o| o.kind != OutcomeKind::Unsubscribed));
    }
    assert!(opened > 20);
    let report = world.end_of_day(start().date_naive()).unwrap();
    assert_eq!(report.unreached, 400 - report.active);
    assert_eq!(report.opens, opened);
    assert_eq!(report.messages["in_app"], 400);
    assert_eq!(report.active_users.len(), report.active);
    assert!(report.active_users.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn days_close_in_order_and_deliveries_must_fall_on_the_open_day() {
    let mut world = World::new(Config::new(10, 1, start()));
    let delivery = |user: &str, channel: &str, category: &str, at| Delivery {
        message_id: "m".to_string(),
        user_id: user.to_string(),
        channel: channel.to_string(),
        category: category.to_string(),
        template: "t".to_string(),
        relevance: None,
        order_value: None,
        at,
    };
    let noon = start() + TimeDelta::hours(12);
    assert_eq!(
        world.deliver(delivery("u000011", "push", "content", noon)),
        Err(SimError::UnknownUser("u000011".to_string()))
    );
    assert_eq!(
        world.deliver(delivery("u000001", "sms", "content", noon)),
        Err(SimError::UnknownChannel("sms".to_string()))
    );
    assert_eq!(
        world.deliver(delivery("u000001", "push", "news", noon)),
        Err(SimError::UnknownCategory("news".to_string()))
    );
    assert!(matches!(
        world.deliver(delivery("u000001", "push", "content", noon + day(1))),
        Err(SimError::DayNotOpen { .. })
    ));
    assert!(matches!(
        world.deliver(delivery("u000001", "push", "content", noon - day(1))),
        Err(SimError::DayClosed { .. })
    ));
    assert!(
        world.receipts().is_empty(),
        "refused deliveries are not logged"
    );

    let first = start().date_naive();
    assert!(matches!(
        world.end_of_day(first.succ_opt().unwrap()),
        Err(SimError::OutOfOrder { .. })
    ));
    world.end_of_day(first).unwrap();
    assert_eq!(world.open_day(), first.succ_opt().unwrap());
    assert!(matches!(
        world.end_of_day(first),
        Err(SimError::OutOfOrder { .. })
    ));
    assert!(matches!(
        world.deliver(delivery("u000001", "push", "content", noon)),
        Err(SimError::DayClosed { .. })
    ));
    world
        .deliver(delivery("u000001", "in_app", "content", noon + day(1)))
        .unwrap();
    assert_eq!(world.summary().days, 1);
}

#[test]
fn the_summary_adds_up_the_days() {
    let run = play(Policy::Sensible, 500, 4, 10);
    let s = &run.summary;
    assert_eq!(s.days, 10);
    let sum = |f: fn(&DayReport) -> usize| run.reports.iter().map(f).sum::<usize>();
    assert_eq!(s.opens, sum(|r| r.opens));
    assert_eq!(s.clicks, sum(|r| r.clicks));
    assert_eq!(s.conversions, sum(|r| r.conversions));
    assert_eq!(s.unsubscribes, sum(|r| r.unsubscribes));
    assert_eq!(s.push_disables, sum(|r| r.push_disables));
    assert_eq!(s.messages.values().sum::<usize>(), run.receipts.len());
    let kinds = |k| run.outcomes.iter().filter(|o| o.kind == k).count();
    assert_eq!(s.opens, kinds(OutcomeKind::Opened));
    assert_eq!(s.conversions, kinds(OutcomeKind::Converted));
    let value: f64 = run.outcomes.iter().filter_map(|o| o.value).sum();
    assert!((s.conversion_value - value).abs() < 1e-6);
    let last7 = run.reports[3..].iter().map(|r| r.active).sum::<usize>() as f64 / (7.0 * 500.0);
    assert!((s.retention - last7).abs() < 1e-12);
    let recent: BTreeSet<&String> = run.reports[3..]
        .iter()
        .flat_map(|r| &r.active_users)
        .collect();
    assert!((s.active_last_7 - recent.len() as f64 / 500.0).abs() < 1e-12);
    assert!(s.active_last_7 > s.retention);
}

#[test]
fn max_received_counts_the_busiest_window() {
    let t0 = start();
    let r = |user: &str, channel: &str, minutes: i64| Receipt {
        user_id: user.to_string(),
        channel: channel.to_string(),
        category: "content".to_string(),
        at: t0 + TimeDelta::minutes(minutes),
        reached: true,
    };
    let hour = TimeDelta::hours(1);
    let log = vec![
        r("a", "push", 0),
        r("b", "push", 10),
        r("a", "email", 30),
        r("a", "push", 59),
        r("a", "push", 60),
        r("b", "push", 20),
        r("b", "push", 30),
        r("b", "email", 40),
        r("a", "push", 119),
    ];
    // a: pushes at 0, 59, 60, 119; any message also at 30.
    // b: pushes at 10, 20, 30; email at 40.
    assert_eq!(max_in_window(&log, Some("push"), hour), 3);
    assert_eq!(max_in_window(&log, None, hour), 4);
    assert_eq!(max_in_window(&log, Some("email"), hour), 1);
    assert_eq!(max_in_window(&log, Some("in_app"), hour), 0);
    // Half-open windows: 0 and 60 are a full hour apart.
    assert_eq!(max_in_window(&log, Some("push"), TimeDelta::minutes(60)), 3);
    assert_eq!(
        max_in_window(&log[..5], Some("push"), TimeDelta::minutes(60)),
        2
    );
    assert_eq!(max_in_window(&log, None, TimeDelta::hours(2)), 5);
    assert_eq!(max_in_window(&[], None, hour), 0);

    // The world's own log, after a blast, is counted the same way.
    let mut world = World::new(Config::new(20, 2, start()));
    for o in world.opportunities(start(), start() + day(1)) {
        for c in &o.channels {
            world.deliver(Delivery::of(&o, c, o.created_at)).unwrap();
        }
    }
    let push = world.max_received(Some("push"), TimeDelta::days(1));
    assert_eq!(
        push,
        max_in_window(world.receipts(), Some("push"), TimeDelta::days(1))
    );
    let per_user_push = |u: &str| {
        world
            .receipts()
            .iter()
            .filter(|r| r.user_id == u && r.channel == "push")
            .count()
    };
    let most = world
        .profiles()
        .iter()
        .map(|p| per_user_push(&p.user_id))
        .max()
        .unwrap();
    assert_eq!(push, most, "one day's receipts fit in one day's window");
}
