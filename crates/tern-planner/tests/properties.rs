//! Property tests: random users, histories and configurations; the independent checker in
//! `common` verifies every promise, and plans must not depend on thread count or input order.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use tern_planner::*;

const CHANNELS: &[&str] = &["push", "email", "in_app"];
const CATEGORIES: &[&str] = &["marketing", "content", "transactional"];
const ZONES: &[&str] = &[
    "Europe/Stockholm",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "UTC",
    "Not/AZone",
];
/// Instants near daylight-saving changes (EU and US, spring and autumn 2026) and a quiet week.
const NOWS: &[i64] = &[
    1_772_935_200, // 2026-03-08 02:00 UTC, hours before New York springs forward
    1_774_738_800, // 2026-03-28 23:00 UTC, Stockholm springs forward at 01:00
    1_792_882_800, // 2026-10-24 23:00 UTC, Stockholm falls back at 01:00
    1_793_487_600, // 2026-10-31 23:00 UTC, New York falls back 2026-11-01
    1_780_000_000, // 2026-05-28 20:26:40 UTC, nothing changes
];

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap()
}

fn hhmm() -> impl Strategy<Value = String> {
    (0u32..24, prop_oneof![Just(0u32), Just(30), 0u32..60])
        .prop_map(|(h, m)| format!("{h:02}:{m:02}"))
}

fn channel_config() -> impl Strategy<Value = Vec<ChannelConfig>> {
    (
        prop_oneof![Just(1usize), Just(2), Just(3), Just(3)],
        prop::collection::vec(
            (
                prop::option::of((hhmm(), hhmm()).prop_filter("from != to", |(f, t)| f != t)),
                prop::option::of(0u64..12),
            ),
            3,
        ),
    )
        .prop_map(|(n, specs)| {
            specs
                .into_iter()
                .take(n)
                .enumerate()
                .map(|(i, (q, b))| ChannelConfig {
                    name: CHANNELS[i].into(),
                    quiet_hours: q.map(|(from, to)| QuietHours {
                        from: LocalTime::parse(&from).unwrap(),
                        to: LocalTime::parse(&to).unwrap(),
                    }),
                    budget: b.map(|max| Budget {
                        max,
                        per_secs: 86400,
                    }),
                })
                .collect()
        })
}

fn cap_rule() -> impl Strategy<Value = CapRule> {
    (
        prop::option::of(prop::sample::select(vec!["push", "email", "in_app", "any"])),
        prop::option::of(prop::sample::select(CATEGORIES.to_vec())),
        prop_oneof![
            (
                0u32..4,
                prop::sample::select(vec![3600u64, 4 * 3600, 86400, 7 * 86400])
            )
                .prop_map(|(m, w)| (Some(m), Some(w), None)),
            prop::sample::select(vec![1800u64, 4 * 3600, 86400]).prop_map(|g| (
                None,
                None,
                Some(g)
            )),
            // A count and a gap in one rule: both hold.
            (
                1u32..4,
                prop::sample::select(vec![86400u64, 7 * 86400]),
                prop::sample::select(vec![1800u64, 4 * 3600])
            )
                .prop_map(|(m, w, g)| (Some(m), Some(w), Some(g))),
        ],
    )
        .prop_map(
            |(channel, category, (max, window_secs, min_gap_secs))| CapRule {
                name: None,
                channel: channel.map(String::from),
                category: category.map(String::from),
                max,
                window_secs,
                min_gap_secs,
            },
        )
}

fn config() -> impl Strategy<Value = PlannerConfig> {
    (
        channel_config(),
        prop::collection::vec(cap_rule(), 0..5),
        (any::<bool>(), any::<u8>(), any::<bool>()),
        prop::sample::select(vec![0.0, 0.0, 0.2, 0.5]),
        prop::sample::select(vec![3600u64, 6 * 3600, 86400, 3 * 86400]),
        prop::sample::select(vec![600u64, 3600]),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(cap_rule(), 0..3),
        (0.0f64..0.2, any::<u16>()),
    )
        .prop_map(
            |(
                channels,
                caps,
                (exempt, bits, arm_exempt),
                exploration,
                horizon,
                window,
                multi,
                experiment,
                arm_caps,
                (min_value, salt),
            )| {
                // Rules may only name declared channels.
                let names: Vec<String> = channels.iter().map(|c| c.name.clone()).collect();
                let keep = |r: &CapRule| {
                    r.channel
                        .as_deref()
                        .is_none_or(|c| c == "any" || names.iter().any(|n| n == c))
                };
                let caps: Vec<CapRule> = caps.into_iter().filter(keep).collect();
                let arm_caps: Vec<CapRule> = arm_caps.into_iter().filter(keep).collect();
                PlannerConfig {
                    channels,
                    caps,
                    exempt_priorities: if exempt {
                        vec!["transactional".into()]
                    } else {
                        vec![]
                    },
                    // Any combination of bypasses for transactional messages (none: the class
                    // is not declared).
                    priorities: BTreeMap::from([(
                        "transactional".to_string(),
                        Bypass {
                            caps: bits & 1 != 0,
                            budgets: bits & 2 != 0,
                            min_value: bits & 4 != 0,
                            quiet_hours: bits & 8 != 0,
                            holdouts: bits & 16 != 0,
                        },
                    )]),
                    objectives: BTreeMap::from([
                        (
                            "default".into(),
                            Objective {
                                conversion: 1.0,
                                engagement: 0.3,
                                retention: 2.0,
                                reachability: 4.0,
                                min_value,
                                long_term: false,
                            },
                        ),
                        (
                            "other".into(),
                            Objective {
                                conversion: 0.2,
                                engagement: 1.0,
                                retention: 0.0,
                                reachability: 1.0,
                                min_value: 0.0,
                                // Pacing and send time by value under every property.
                                long_term: true,
                            },
                        ),
                    ]),
                    experiment: experiment.then(|| Experiment {
                        name: "e".into(),
                        salt: format!("salt-{salt}"),
                        arms: vec![
                            Arm {
                                name: "a".into(),
                                share: 0.4,
                                objective: None,
                                caps: None,
                                exempt_priorities: None,
                                holdout: false,
                            },
                            Arm {
                                name: "b".into(),
                                share: 0.4,
                                objective: Some("other".into()),
                                caps: Some(arm_caps),
                                // Its own cap set, exempting nothing or inheriting the list.
                                exempt_priorities: arm_exempt.then(Vec::new),
                                holdout: false,
                            },
                            Arm {
                                name: "h".into(),
                                share: 0.2,
                                objective: None,
                                caps: None,
                                exempt_priorities: None,
                                holdout: true,
                            },
                        ],
                    }),
                    exploration,
                    withhold: 0.0,
                    multi_channel: multi,
                    horizon_secs: horizon,
                    send_window_secs: window,
                }
            },
        )
}

fn scores() -> impl Strategy<Value = Scores> {
    (0.0f64..0.3, 0.0f64..0.6, -0.05f64..0.05, 0.0f64..0.03).prop_map(|(c, e, r, l)| Scores {
        conversion: c,
        engagement: e,
        retention: r,
        reachability_loss: l,
    })
}

fn user(now: i64, i: usize) -> impl Strategy<Value = UserInput> {
    let history = prop::collection::vec(
        (
            prop::sample::select(CHANNELS.to_vec()),
            prop::sample::select(CATEGORIES.to_vec()),
            -10 * 86400i64..2 * 3600,
        )
            .prop_map(move |(ch, cat, dt)| PastSend {
                channel: ch.into(),
                category: cat.into(),
                priority: "marketing".into(),
                sent_at: ts(now + dt),
                opened_at: None,
            }),
        0..8,
    );
    let opps = prop::collection::vec(
        (
            prop::sample::select(CATEGORIES.to_vec()),
            any::<bool>(),
            prop_oneof![
                4 => prop::sample::subsequence(vec!["push", "email", "in_app"], 1..=3),
                1 => prop::sample::subsequence(vec!["push", "email", "in_app", "sms"], 1..=4),
            ],
            -2 * 86400i64..86400,
            60i64..3 * 86400,
            prop::collection::vec(scores(), 4),
        )
            .prop_map(|(cat, transactional, channels, created, life, scores)| {
                (cat, transactional, channels, created, life, scores)
            }),
        0..8,
    );
    (
        prop::sample::select(ZONES.to_vec()),
        prop_oneof![Just(vec![]), prop::collection::vec(0.0f64..1.0, 24)],
        prop::option::of(prop::sample::select(CHANNELS.to_vec())),
        prop::option::of(prop::sample::select(CHANNELS.to_vec())),
        prop::option::of(prop::sample::select(CATEGORIES.to_vec())),
        history,
        opps,
        // Arrivals per day of each of the user's kinds of opportunity (0: none known), so
        // that pacing binds for some users of a long-term arm.
        prop_oneof![Just(0.0f64), 0.1f64..6.0],
    )
        .prop_map(
            move |(tz, profile, out, unreach, outcat, history, opps, rate)| UserInput {
                user_id: format!("u{i:03}"),
                timezone: tz.into(),
                arm: None,
                send_time_profile: profile,
                opted_out_channels: out.into_iter().map(String::from).collect(),
                unreachable_channels: unreach.into_iter().map(String::from).collect(),
                opted_out_categories: outcat.into_iter().map(String::from).collect(),
                history,
                arrivals: if rate > 0.0 {
                    opps.iter()
                        .map(|(cat, _, channels, ..)| Arrival {
                            category: cat.to_string(),
                            channels: channels.iter().map(|c| c.to_string()).collect(),
                            per_day: rate,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                opportunities: opps
                    .into_iter()
                    .enumerate()
                    .map(
                        |(k, (cat, transactional, channels, created, life, scores))| {
                            OpportunityInput {
                                id: (i * 100 + k) as i64,
                                category: cat.into(),
                                priority: if transactional {
                                    "transactional".into()
                                } else {
                                    "marketing".into()
                                },
                                channels: channels.iter().map(|c| c.to_string()).collect(),
                                created_at: ts(now + created),
                                expires_at: ts(now + created + life),
                                template: "t".into(),
                                scores: scores[..channels.len()].to_vec(),
                                signals: Default::default(),
                            }
                        },
                    )
                    .collect(),
                activity: Default::default(),
            },
        )
}

fn scenario() -> impl Strategy<Value = (PlannerConfig, Vec<UserInput>, i64, u64)> {
    (
        config(),
        prop::sample::select(NOWS.to_vec()),
        -86400i64..86400,
        1usize..8,
        any::<u64>(),
    )
        .prop_flat_map(|(config, base, shift, n, seed)| {
            let now = base + shift;
            let users: Vec<_> = (0..n).map(|i| user(now, i)).collect();
            (Just(config), users, Just(now), Just(seed))
        })
}

fn plan_on(threads: usize, planner: &Planner, users: &[UserInput], now: i64, seed: u64) -> Plan {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| planner.plan(users, ts(now), seed, &InlineScores).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_promise_holds((config, users, now, seed) in scenario()) {
        let planner = Planner::new(config.clone()).unwrap();
        let plan = plan_on(1, &planner, &users, now, seed);
        if let Err(e) = common::check(&config, &users, &plan, ts(now)) {
            panic!("{e}\nconfig: {}\nusers: {}\nplan: {}",
                serde_json::to_string(&config).unwrap(),
                serde_json::to_string(&users).unwrap(),
                serde_json::to_string(&plan).unwrap());
        }
        // Deterministic, and the same on four threads and in reverse input order.
        let again = plan_on(4, &planner, &users, now, seed);
        prop_assert_eq!(&plan, &again);
        let mut reversed = users.clone();
        reversed.reverse();
        let reversed = plan_on(4, &planner, &reversed, now, seed);
        prop_assert_eq!(&plan, &reversed);
        // Explanations exist for everyone and never panic.
        for u in &users {
            prop_assert!(explain(&planner, &plan, u).is_some());
        }
    }
}

#[test]
fn scenarios_actually_choose_and_suppress() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..200 {
        let (config, users, now, seed) = scenario().new_tree(&mut runner).unwrap().current();
        let planner = Planner::new(config).unwrap();
        let plan = planner.plan(&users, ts(now), seed, &InlineScores).unwrap();
        for (k, v) in plan.stats.suppressed {
            *totals.entry(k).or_default() += v;
        }
        *totals.entry("chosen".into()).or_default() += plan.stats.chosen.values().sum::<u64>();
        *totals.entry("explored".into()).or_default() += plan
            .users
            .iter()
            .flat_map(|u| &u.choices)
            .filter(|c| c.explored)
            .count() as u64;
    }
    eprintln!("{totals:?}");
    for reason in [
        "chosen",
        "cap",
        "min_gap",
        "quiet_hours",
        "budget",
        "duplicate",
        "holdout",
        "expired",
        "explored",
    ] {
        assert!(
            totals.get(reason).copied().unwrap_or(0) > 0,
            "no {reason} in 200 scenarios: {totals:?}"
        );
    }
}

/// The benchmark's data set keeps every promise too (a small slice of it, in debug).
#[test]
fn the_synthetic_data_set_keeps_every_promise() {
    let (config, users) = synthetic(400, 8, 3, 42);
    let planner = Planner::new(config.clone()).unwrap();
    let now = ts(SYNTHETIC_NOW);
    let plan = plan_on(1, &planner, &users, SYNTHETIC_NOW, 7);
    common::check(&config, &users, &plan, now).unwrap();
    assert_eq!(plan, plan_on(4, &planner, &users, SYNTHETIC_NOW, 7));
    assert!(plan.stats.chosen.values().sum::<u64>() > 400);
}
