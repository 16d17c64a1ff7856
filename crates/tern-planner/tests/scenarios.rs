//! Hand-built scenarios, one promise each: caps with history, exemptions, quiet hours across
//! daylight-saving changes, budgets, holdouts, duplicates, exploration statistics, bad input.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tern_planner::*;

fn ts(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// An arm with the default objective and caps.
fn arm(name: &str, share: f64, holdout: bool) -> Arm {
    Arm {
        name: name.into(),
        share,
        objective: None,
        caps: None,
        exempt_priorities: None,
        holdout,
    }
}

/// Half the users in `control`, half in a holdout.
fn control_and_holdout() -> Experiment {
    Experiment {
        name: "e".into(),
        salt: "x".into(),
        arms: vec![arm("control", 0.5, false), arm("holdout", 0.5, true)],
    }
}

fn base_config() -> PlannerConfig {
    PlannerConfig {
        channels: vec![
            ChannelConfig {
                name: "push".into(),
                quiet_hours: Some(QuietHours {
                    from: LocalTime::parse("22:00").unwrap(),
                    to: LocalTime::parse("08:00").unwrap(),
                }),
                budget: None,
            },
            ChannelConfig {
                name: "email".into(),
                quiet_hours: None,
                budget: None,
            },
        ],
        caps: vec![],
        exempt_priorities: vec!["transactional".into()],
        priorities: BTreeMap::new(),
        objectives: BTreeMap::from([(
            "default".into(),
            Objective {
                conversion: 1.0,
                engagement: 0.0,
                retention: 0.0,
                reachability: 1.0,
                min_value: 0.01,
                long_term: false,
            },
        )]),
        experiment: None,
        exploration: 0.0,
        withhold: 0.0,
        multi_channel: false,
        horizon_secs: 2 * 86400,
        send_window_secs: 3600,
    }
}

fn opp(
    id: i64,
    channels: &[&str],
    conversion: f64,
    created: &str,
    expires: &str,
) -> OpportunityInput {
    OpportunityInput {
        id,
        category: "marketing".into(),
        priority: "marketing".into(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        created_at: ts(created),
        expires_at: ts(expires),
        template: format!("t{id}"),
        scores: channels
            .iter()
            .map(|_| Scores {
                conversion,
                ..Scores::default()
            })
            .collect(),
        signals: Default::default(),
    }
}

fn user(id: &str, tz: &str, opportunities: Vec<OpportunityInput>) -> UserInput {
    UserInput {
        user_id: id.into(),
        timezone: tz.into(),
        arm: None,
        send_time_profile: vec![],
        opted_out_channels: vec![],
        unreachable_channels: vec![],
        opted_out_categories: vec![],
        history: vec![],
        opportunities,
        activity: Default::default(),
        arrivals: Vec::new(),
    }
}

fn run(config: &PlannerConfig, users: &[UserInput], now: &str) -> Plan {
    let planner = Planner::new(config.clone()).unwrap();
    let plan = planner.plan(users, ts(now), 1, &InlineScores).unwrap();
    common::check(config, users, &plan, ts(now)).unwrap();
    plan
}

#[test]
fn caps_count_history_and_this_plan_and_the_checker_catches_a_breach() {
    let mut config = base_config();
    config.caps = vec![CapRule {
        channel: Some("push".into()),
        max: Some(2),
        window_secs: Some(86400),
        ..CapRule::default()
    }];
    let now = "2026-06-01T10:00:00Z";
    let mut u = user(
        "u1",
        "UTC",
        (1..=3)
            .map(|i| opp(i, &["push"], 0.1 * i as f64, now, "2026-06-01T20:00:00Z"))
            .collect(),
    );
    u.history.push(PastSend {
        channel: "push".into(),
        category: "content".into(),
        priority: "marketing".into(),
        sent_at: ts("2026-06-01T07:00:00Z"),
        opened_at: None,
    });
    let plan = run(&config, std::slice::from_ref(&u), now);
    let up = &plan.users[0];
    assert_eq!(up.choices.len(), 1, "{up:#?}");
    assert_eq!(up.choices[0].opportunity, 3, "the most valuable wins");
    assert_eq!(up.choices[0].send_after, ts(now));
    for s in &up.suppressions {
        assert_eq!(
            s.reason,
            Reason::Cap {
                rule: 0,
                count: 3,
                max: 2
            }
        );
    }
    // A plan that breaks the cap is caught by the independent checker.
    let mut broken = plan.clone();
    let mut extra = broken.users[0].choices[0].clone();
    extra.opportunity = 2;
    broken.users[0].choices.push(extra);
    broken.users[0].suppressions.retain(|s| s.opportunity != 2);
    assert!(common::check(&config, &[u], &broken, ts(now)).is_err());
}

#[test]
fn exempt_sends_are_not_blocked_but_count() {
    let mut config = base_config();
    config.caps = vec![CapRule {
        channel: Some("any".into()),
        max: Some(1),
        window_secs: Some(86400),
        ..CapRule::default()
    }];
    let now = "2026-06-01T10:00:00Z";
    let mut tx = opp(1, &["email"], 0.05, now, "2026-06-02T10:00:00Z");
    tx.priority = "transactional".into();
    let mut u = user(
        "u1",
        "UTC",
        vec![tx, opp(2, &["email"], 0.9, now, "2026-06-02T10:00:00Z")],
    );
    u.history.push(PastSend {
        channel: "email".into(),
        category: "marketing".into(),
        priority: "marketing".into(),
        sent_at: ts("2026-06-01T09:00:00Z"),
        opened_at: None,
    });
    let plan = run(&config, &[u], now);
    let up = &plan.users[0];
    assert_eq!(up.choices.len(), 1);
    assert_eq!(up.choices[0].opportunity, 1);
    assert!(up.choices[0].exempt);
    assert!(matches!(up.suppressions[0].reason, Reason::Cap { .. }));
}

/// An item created during quiet hours waits for the first allowed local time, and that time is
/// right across daylight-saving changes.
#[test]
fn quiet_hours_wait_and_follow_daylight_saving() {
    let config = base_config();
    let cases = [
        // Stockholm springs forward on 2026-03-29 (02:00 CET → 03:00 CEST): 08:00 CEST is 06:00 UTC.
        (
            "Europe/Stockholm",
            "2026-03-28T22:00:00Z",
            "2026-03-29T06:00:00Z",
        ),
        // Stockholm falls back on 2026-10-25 (03:00 CEST → 02:00 CET): 08:00 CET is 07:00 UTC.
        (
            "Europe/Stockholm",
            "2026-10-24T21:00:00Z",
            "2026-10-25T07:00:00Z",
        ),
        // New York springs forward on 2026-03-08: 08:00 EDT is 12:00 UTC.
        (
            "America/New_York",
            "2026-03-08T03:00:00Z",
            "2026-03-08T12:00:00Z",
        ),
        // New York falls back on 2026-11-01: 08:00 EST is 13:00 UTC.
        (
            "America/New_York",
            "2026-11-01T03:00:00Z",
            "2026-11-01T13:00:00Z",
        ),
    ];
    for (tz, now, expected) in cases {
        let u = user(
            "u",
            tz,
            vec![opp(1, &["push"], 0.5, now, "2026-12-31T00:00:00Z")],
        );
        let plan = run(&config, &[u], now);
        let c = &plan.users[0].choices[0];
        assert_eq!(c.send_after, ts(expected), "{tz} at {now}");
        assert_eq!(
            c.send_before,
            ts(expected) + chrono::Duration::hours(1),
            "{tz}"
        );
    }
}

#[test]
fn an_item_that_expires_inside_quiet_hours_is_suppressed_for_quiet_hours() {
    let config = base_config();
    let now = "2026-06-01T21:00:00Z"; // 23:00 in Stockholm
    let u = user(
        "u",
        "Europe/Stockholm",
        vec![opp(1, &["push"], 0.5, now, "2026-06-02T04:00:00Z")],
    );
    let plan = run(&config, &[u], now);
    assert_eq!(plan.users[0].suppressions[0].reason, Reason::QuietHours);
}

/// The send-time profile picks the best local hour; on the fall-back day the repeated hour
/// 02:00 exists twice and the earlier one wins; on the spring-forward day it does not exist.
#[test]
fn the_profile_picks_the_best_local_hour_across_daylight_saving() {
    let mut config = base_config();
    config.channels[0].quiet_hours = None;
    let mut profile = vec![0.1; 24];
    profile[2] = 1.0;
    profile[5] = 0.5;
    for (now, expected) in [
        ("2026-10-24T20:00:00Z", "2026-10-25T00:00:00Z"), // 02:00 CEST, the first of the two
        ("2026-03-28T20:00:00Z", "2026-03-29T03:00:00Z"), // no 02:00: 05:00 CEST is the next best
    ] {
        let mut u = user(
            "u",
            "Europe/Stockholm",
            vec![opp(1, &["push"], 0.5, now, "2026-12-31T00:00:00Z")],
        );
        u.send_time_profile = profile.clone();
        config.horizon_secs = 12 * 3600;
        let plan = run(&config, &[u], now);
        assert_eq!(plan.users[0].choices[0].send_after, ts(expected), "{now}");
    }
}

#[test]
fn the_same_opportunity_goes_out_once_unless_the_policy_allows_more() {
    let mut config = base_config();
    let now = "2026-06-01T10:00:00Z";
    let u = user(
        "u",
        "UTC",
        vec![opp(1, &["push", "email"], 0.5, now, "2026-06-02T00:00:00Z")],
    );
    let plan = run(&config, std::slice::from_ref(&u), now);
    assert_eq!(plan.users[0].choices.len(), 1);
    assert!(matches!(
        plan.users[0].suppressions[0].reason,
        Reason::Duplicate { .. }
    ));
    config.multi_channel = true;
    let plan = run(&config, &[u], now);
    assert_eq!(plan.users[0].choices.len(), 2);
}

#[test]
fn budgets_hold_exactly_and_the_most_valuable_sends_win() {
    let mut config = base_config();
    config.channels[1].budget = Some(Budget {
        max: 10,
        per_secs: 86400,
    });
    let now = "2026-06-01T10:00:00Z";
    // Many ties: values repeat every 7 users, so the exact fit decides among equals.
    let users: Vec<UserInput> = (0..60)
        .map(|i| {
            user(
                &format!("u{i:02}"),
                "UTC",
                vec![opp(
                    i,
                    &["email"],
                    0.05 + (i % 7) as f64 * 0.1,
                    now,
                    "2026-06-02T00:00:00Z",
                )],
            )
        })
        .collect();
    let plan = run(&config, &users, now);
    assert_eq!(plan.stats.chosen["email"], 10);
    let chosen_min = plan
        .users
        .iter()
        .flat_map(|u| &u.choices)
        .map(|c| c.value)
        .fold(f64::MAX, f64::min);
    let dropped_max = plan
        .users
        .iter()
        .flat_map(|u| &u.suppressions)
        .filter(|s| matches!(s.reason, Reason::Budget { .. }))
        .filter_map(|s| s.value)
        .fold(f64::MIN, f64::max);
    assert!(chosen_min >= dropped_max, "{chosen_min} < {dropped_max}");
    assert!(plan.stats.prices["email"] > 0.0);
    assert!(plan.stats.passes > 1);
}

#[test]
fn holdout_users_get_nothing_but_the_counterfactual_is_recorded() {
    let mut config = base_config();
    config.experiment = Some(control_and_holdout());
    let now = "2026-06-01T10:00:00Z";
    let users: Vec<UserInput> = (0..40)
        .map(|i| {
            user(
                &format!("u{i}"),
                "UTC",
                vec![opp(i, &["email"], 0.5, now, "2026-06-02T00:00:00Z")],
            )
        })
        .collect();
    let plan = run(&config, &users, now);
    let holdouts: Vec<&UserPlan> = plan.users.iter().filter(|u| u.arm == "holdout").collect();
    assert!(
        holdouts.len() > 5 && holdouts.len() < 35,
        "{}",
        holdouts.len()
    );
    for u in holdouts {
        assert!(u.choices.is_empty());
        let s = &u.suppressions[0];
        assert_eq!(s.reason, Reason::Holdout);
        let would = s.counterfactual.as_ref().unwrap();
        assert_eq!(would.send_after, ts(now));
    }
    assert_eq!(
        plan.stats.chosen["email"],
        plan.users.iter().filter(|u| u.arm == "control").count() as u64
    );
}

/// With exploration ε among `n` allowed candidates, the greedy one is chosen with probability
/// 1 − ε + ε/n and each other with ε/n; the recorded propensities say exactly that, and the
/// empirical frequencies match them.
#[test]
fn exploration_frequencies_match_the_recorded_propensities() {
    let mut config = base_config();
    config.exploration = 0.3;
    config.caps = vec![CapRule {
        channel: Some("any".into()),
        max: Some(1),
        window_secs: Some(86400),
        ..CapRule::default()
    }];
    let now = "2026-06-01T10:00:00Z";
    let n_users = 20_000;
    let users: Vec<UserInput> = (0..n_users)
        .map(|i| {
            user(
                &format!("u{i:05}"),
                "UTC",
                (1..=4)
                    .map(|k| opp(k, &["email"], 0.1 * k as f64, now, "2026-06-02T00:00:00Z"))
                    .collect(),
            )
        })
        .collect();
    let plan = run(&config, &users, now);
    let mut counts = [0usize; 5];
    let mut explored = 0;
    for u in &plan.users {
        assert_eq!(u.choices.len(), 1);
        let c = &u.choices[0];
        let expected = if c.opportunity == 4 {
            0.7 + 0.3 / 4.0
        } else {
            0.3 / 4.0
        };
        assert!((c.propensity - expected).abs() < 1e-12, "{}", c.propensity);
        counts[c.opportunity as usize] += 1;
        explored += c.explored as usize;
    }
    let n = n_users as f64;
    // Five standard deviations: a false alarm is far rarer than one in a million runs.
    let within = |observed: usize, p: f64| {
        (observed as f64 - n * p).abs() < 5.0 * (n * p * (1.0 - p)).sqrt()
    };
    assert!(within(explored, 0.3), "explored {explored}");
    assert!(within(counts[4], 0.775), "greedy {}", counts[4]);
    for (k, &count) in counts.iter().enumerate().take(4).skip(1) {
        assert!(within(count, 0.075), "opportunity {k}: {count}");
    }
}

#[test]
fn bad_user_input_is_reported_not_panicked_on() {
    let config = base_config();
    let now = "2026-06-01T10:00:00Z";
    let mut bad_profile = user(
        "b",
        "UTC",
        vec![opp(2, &["push"], 0.5, now, "2026-06-02T00:00:00Z")],
    );
    bad_profile.send_time_profile = vec![f64::NAN; 3];
    let users = vec![
        user(
            "a",
            "Mars/Olympus",
            vec![opp(1, &["push"], 0.5, now, "2026-06-02T00:00:00Z")],
        ),
        bad_profile,
        user(
            "c",
            "UTC",
            vec![opp(3, &["fax"], 0.5, now, "2026-06-01T09:00:00Z")],
        ),
    ];
    let plan = run(&config, &users, now);
    assert!(plan.users[0]
        .error
        .as_deref()
        .unwrap()
        .contains("Mars/Olympus"));
    assert_eq!(plan.users[1].suppressions[0].reason, Reason::BadInput);
    assert_eq!(plan.users[2].suppressions[0].reason, Reason::Expired);
    // The output is a function of the input set: a bad user's suppressions come out by
    // opportunity, like every other line, whatever order the opportunities came in.
    let mut shuffled = users[0].clone();
    shuffled.opportunities = vec![
        opp(9, &["push"], 0.5, now, "2026-06-02T00:00:00Z"),
        opp(1, &["push"], 0.5, now, "2026-06-02T00:00:00Z"),
        opp(4, &["push"], 0.5, now, "2026-06-02T00:00:00Z"),
    ];
    let mut sorted = shuffled.clone();
    sorted.opportunities.sort_by_key(|o| o.id);
    let a = run(&config, &[shuffled], now);
    let b = run(&config, &[sorted], now);
    assert_eq!(a, b);
    let ids: Vec<i64> = a.users[0]
        .suppressions
        .iter()
        .map(|s| s.opportunity)
        .collect();
    assert_eq!(ids, [1, 4, 9]);
    let planner = Planner::new(config).unwrap();
    let dup = vec![users[0].clone(), users[0].clone()];
    assert!(matches!(
        planner.plan(&dup, ts(now), 1, &InlineScores),
        Err(PlanError::DuplicateUser(_))
    ));
}

#[test]
fn bad_configurations_say_what_is_wrong() {
    // A time of day is parsed where it is read: a JSON configuration with 25:00 is refused.
    let err = serde_json::from_str::<QuietHours>(r#"{"from": "25:00", "to": "08:00"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("25:00"), "{err}");
    let mut c = base_config();
    c.channels[0].quiet_hours = Some(QuietHours {
        from: LocalTime::parse("08:00").unwrap(),
        to: LocalTime::parse("08:00").unwrap(),
    });
    assert_eq!(
        Planner::new(c).unwrap_err(),
        ConfigError::EmptyQuietHours("push".into())
    );
    let mut c = base_config();
    c.caps.push(CapRule {
        channel: Some("fax".into()),
        max: Some(1),
        window_secs: Some(60),
        ..CapRule::default()
    });
    assert!(Planner::new(c)
        .unwrap_err()
        .to_string()
        .contains("not declared"));
    let mut c = base_config();
    c.caps.push(CapRule {
        max: Some(1),
        ..CapRule::default()
    });
    assert!(Planner::new(c)
        .unwrap_err()
        .to_string()
        .contains("`max` needs `per`"));
    // The same rule as the policy checker: a window over 366 days is refused by both.
    let mut c = base_config();
    c.caps.push(CapRule {
        max: Some(1),
        window_secs: Some(400 * 86_400),
        ..CapRule::default()
    });
    assert!(Planner::new(c)
        .unwrap_err()
        .to_string()
        .contains("between 1 second and 366 days"));
    let mut c = base_config();
    c.objectives.clear();
    assert_eq!(
        Planner::new(c).unwrap_err(),
        ConfigError::NoDefaultObjective
    );
    let mut c = base_config();
    c.exploration = 1.0;
    assert!(matches!(
        Planner::new(c).unwrap_err(),
        ConfigError::BadExploration(_)
    ));
    let mut c = base_config();
    c.experiment = Some(Experiment {
        name: "e".into(),
        salt: "s".into(),
        arms: vec![Arm {
            name: "a".into(),
            share: 0.5,
            objective: None,
            caps: None,
            exempt_priorities: None,
            holdout: false,
        }],
    });
    assert!(Planner::new(c)
        .unwrap_err()
        .to_string()
        .contains("add up to 0.5"));
}

#[test]
fn users_without_a_named_arm_get_the_policy_assignment() {
    // The planner and the policy share one rule: the arm is the rendezvous winner under the
    // salt, so a config's arms and a bundle's experiment agree on every user.
    let mut config = base_config();
    config.experiment = Some(Experiment {
        name: "e".into(),
        salt: "2026-q4".into(),
        arms: vec![arm("control", 0.5, false), arm("treatment", 0.5, false)],
    });
    let planner = Planner::new(config).unwrap();
    for u in 0..200 {
        let user = format!("user-{u}");
        let expected =
            tern_core::assign::rendezvous("2026-q4", [("control", 0.5), ("treatment", 0.5)], &user)
                .unwrap();
        assert_eq!(
            planner.arm_of(&user),
            ["control", "treatment"][expected],
            "{user}"
        );
    }
}

#[test]
fn an_arm_named_by_the_caller_overrides_the_hash_and_an_unknown_one_is_refused() {
    let mut config = base_config();
    config.experiment = Some(Experiment {
        name: "e".into(),
        salt: "x".into(),
        arms: vec![arm("control", 1.0, false), arm("holdout", 0.0, true)],
    });
    let opportunity = || {
        vec![opp(
            1,
            &["push"],
            0.5,
            "2026-03-02T09:00:00Z",
            "2026-03-03T09:00:00Z",
        )]
    };
    let mut named = user("u1", "UTC", opportunity());
    named.arm = Some("holdout".into());
    let hashed = user("u2", "UTC", opportunity());
    let mut unknown = user("u3", "UTC", opportunity());
    unknown.arm = Some("nope".into());
    let planner = Planner::new(config).unwrap();
    let plan = planner
        .plan(
            &[named, hashed, unknown],
            ts("2026-03-02T10:00:00Z"),
            1,
            &InlineScores,
        )
        .unwrap();
    let u1 = plan.user("u1").unwrap();
    assert_eq!(u1.arm, "holdout");
    assert!(u1.choices.is_empty());
    assert!(u1.suppressions.iter().all(|s| s.reason == Reason::Holdout));
    assert_eq!(plan.user("u2").unwrap().arm, "control");
    let u3 = plan.user("u3").unwrap();
    assert_eq!(u3.error.as_deref(), Some("unknown experiment arm \"nope\""));
    assert!(u3.suppressions.iter().all(|s| s.reason == Reason::BadInput));
}

/// A transactional opportunity of `value` (as conversion probability) on `channels`.
fn tx(id: i64, channels: &[&str], value: f64, created: &str, expires: &str) -> OpportunityInput {
    let mut o = opp(id, channels, value, created, expires);
    o.priority = "transactional".into();
    o.category = "account".into();
    o
}

/// `base_config` where transactional messages bypass `bypass` and no cap set exempts them.
fn bypassing(bypass: Bypass) -> PlannerConfig {
    let mut config = base_config();
    config.exempt_priorities = vec![];
    config.priorities = BTreeMap::from([("transactional".into(), bypass)]);
    config
}

#[test]
fn bypass_caps_frees_a_class_from_every_cap_set_even_an_arms_own() {
    let cap = |max| {
        vec![CapRule {
            channel: Some("any".into()),
            max: Some(max),
            window_secs: Some(86400),
            ..CapRule::default()
        }]
    };
    let now = "2026-06-01T10:00:00Z";
    let mut u = user(
        "u1",
        "UTC",
        vec![
            tx(1, &["email"], 0.05, now, "2026-06-01T11:00:00Z"),
            opp(2, &["email"], 0.9, now, "2026-06-02T10:00:00Z"),
        ],
    );
    u.history.push(PastSend {
        channel: "email".into(),
        category: "marketing".into(),
        priority: "marketing".into(),
        sent_at: ts("2026-06-01T09:00:00Z"),
        opened_at: None,
    });
    u.arm = Some("strict".into());
    let experiment = |exempt: Option<Vec<String>>| Experiment {
        name: "e".into(),
        salt: "s".into(),
        arms: vec![
            Arm {
                name: "strict".into(),
                share: 1.0,
                objective: None,
                caps: Some(cap(1)),
                exempt_priorities: exempt,
                holdout: false,
            },
            arm("other", 0.0, false),
        ],
    };
    // Not declared, and the arm's own cap set exempts nothing: the cap holds it back.
    let mut config = bypassing(Bypass::default());
    config.caps = cap(5);
    config.exempt_priorities = vec!["transactional".into()];
    config.experiment = Some(experiment(Some(vec![])));
    let plan = run(&config, std::slice::from_ref(&u), now);
    let up = &plan.users[0];
    assert!(up.choices.is_empty(), "{up:#?}");
    assert!(matches!(up.suppressions[0].reason, Reason::Cap { .. }));
    // Bypassing caps, it goes out at once, and still counts: the marketing message waits.
    config.priorities.insert(
        "transactional".into(),
        Bypass {
            caps: true,
            ..Bypass::default()
        },
    );
    let plan = run(&config, std::slice::from_ref(&u), now);
    let up = &plan.users[0];
    assert_eq!(up.choices.len(), 1, "{up:#?}");
    assert_eq!(up.choices[0].opportunity, 1);
    assert!(up.choices[0].exempt);
    assert_eq!(up.choices[0].send_after, ts(now));
    assert_eq!(up.choices[0].send_before, ts("2026-06-01T11:00:00Z"));
    assert!(matches!(up.suppressions[0].reason, Reason::Cap { .. }));
}

#[test]
fn bypass_budgets_is_not_priced_and_dropped_last() {
    let now = "2026-06-01T10:00:00Z";
    let mut users: Vec<UserInput> = (0..5)
        .map(|i| {
            user(
                &format!("m{i}"),
                "UTC",
                vec![opp(i, &["email"], 0.9, now, "2026-06-02T00:00:00Z")],
            )
        })
        .collect();
    for i in 0..2 {
        users.push(user(
            &format!("t{i}"),
            "UTC",
            vec![tx(10 + i, &["email"], 0.02, now, "2026-06-01T11:00:00Z")],
        ));
    }
    let chosen_tx = |config: &PlannerConfig| {
        let plan = run(config, &users, now);
        assert_eq!(plan.stats.chosen["email"], 3, "{:?}", plan.stats);
        plan.users
            .iter()
            .filter(|u| u.user_id.starts_with('t'))
            .map(|u| u.choices.len())
            .sum::<usize>()
    };
    let budget = |config: &mut PlannerConfig| {
        config.channels[1].budget = Some(Budget {
            max: 3,
            per_secs: 86400,
        })
    };
    // Priced like everything else, the low-value resets lose to marketing.
    let mut config = bypassing(Bypass {
        caps: true,
        ..Bypass::default()
    });
    budget(&mut config);
    assert_eq!(chosen_tx(&config), 0);
    let mut config = bypassing(Bypass {
        budgets: true,
        ..Bypass::default()
    });
    budget(&mut config);
    assert_eq!(chosen_tx(&config), 2);
}

#[test]
fn bypass_min_value_sends_a_message_the_model_values_below_the_floor() {
    let now = "2026-06-01T10:00:00Z";
    // A value of 0, below the objective's minimum of 0.01 (the live daemon's `below_min_value`).
    let u = user(
        "u",
        "UTC",
        vec![tx(1, &["email"], 0.0, now, "2026-06-01T11:00:00Z")],
    );
    let plan = run(&bypassing(Bypass::default()), std::slice::from_ref(&u), now);
    assert_eq!(
        plan.users[0].suppressions[0].reason,
        Reason::BelowMinValue,
        "{plan:#?}"
    );
    let config = bypassing(Bypass {
        min_value: true,
        ..Bypass::default()
    });
    let plan = run(&config, &[u], now);
    let c = &plan.users[0].choices[0];
    assert_eq!((c.opportunity, c.send_after), (1, ts(now)));
}

/// 03:00 in Sydney (17:00 UTC; AEST is UTC+10 in June), inside push's quiet hours 22:00–08:00,
/// with an hour to live: every moment before expiry is quiet, yet a class that bypasses quiet
/// hours goes out at once, for the whole hour, whatever the profile prefers.
#[test]
fn bypass_quiet_hours_sends_at_three_in_the_morning_in_sydney() {
    let now = "2026-06-01T17:00:00Z";
    let expires = "2026-06-01T18:00:00Z";
    let mut u = user(
        "sydney",
        "Australia/Sydney",
        vec![tx(1, &["push"], 0.5, now, expires)],
    );
    let mut profile = vec![0.1; 24];
    profile[19] = 1.0;
    u.send_time_profile = profile;
    let plan = run(&bypassing(Bypass::default()), std::slice::from_ref(&u), now);
    assert_eq!(plan.users[0].suppressions[0].reason, Reason::QuietHours);
    let config = bypassing(Bypass {
        quiet_hours: true,
        ..Bypass::default()
    });
    let plan = run(&config, &[u], now);
    let c = &plan.users[0].choices[0];
    assert_eq!(c.send_after, ts(now));
    assert_eq!(c.send_before, ts(expires));
}

#[test]
fn bypass_holdouts_sends_to_holdout_users_and_withholds_the_rest() {
    let now = "2026-06-01T10:00:00Z";
    let mut u = user(
        "h",
        "UTC",
        vec![
            tx(1, &["email"], 0.5, now, "2026-06-01T11:00:00Z"),
            opp(2, &["email"], 0.5, now, "2026-06-02T00:00:00Z"),
        ],
    );
    u.arm = Some("holdout".into());
    let with = |bypass: Bypass| {
        let mut config = bypassing(bypass);
        config.multi_channel = true;
        config.experiment = Some(control_and_holdout());
        run(&config, std::slice::from_ref(&u), now)
    };
    // Bypassing everything else but not holdouts, the reset is only a counterfactual.
    let plan = with(Bypass {
        holdouts: false,
        ..Bypass::ALL
    });
    let up = &plan.users[0];
    assert!(up.choices.is_empty(), "{up:#?}");
    assert!(up.suppressions.iter().all(|s| s.reason == Reason::Holdout));
    let plan = with(Bypass {
        holdouts: true,
        ..Bypass::default()
    });
    let up = &plan.users[0];
    assert_eq!(up.choices.len(), 1, "{up:#?}");
    assert_eq!(up.choices[0].opportunity, 1);
    assert_eq!(up.suppressions.len(), 1);
    assert_eq!(up.suppressions[0].opportunity, 2);
    assert_eq!(up.suppressions[0].reason, Reason::Holdout);
}

/// A class that bypasses anything is due at once: its window starts now (between two whole
/// hours), runs a whole send window across the hour, and ignores the profile's best hour;
/// the same message of an ordinary class waits for the best hour.
#[test]
fn a_bypassing_class_is_due_at_once_for_a_whole_send_window() {
    let now = "2026-06-01T10:20:00Z";
    let mut profile = vec![0.1; 24];
    profile[19] = 1.0;
    let mut u = user(
        "u",
        "UTC",
        vec![tx(1, &["email"], 0.5, now, "2026-06-03T00:00:00Z")],
    );
    u.send_time_profile = profile;
    let plan = run(&bypassing(Bypass::ALL), std::slice::from_ref(&u), now);
    let c = &plan.users[0].choices[0];
    assert_eq!(c.send_after, ts(now));
    assert_eq!(c.send_before, ts("2026-06-01T11:20:00Z"));
    // A replan a little later keeps it due from that moment.
    let later = "2026-06-01T10:35:00Z";
    let plan = run(&bypassing(Bypass::ALL), std::slice::from_ref(&u), later);
    assert_eq!(plan.users[0].choices[0].send_after, ts(later));
    let plan = run(&bypassing(Bypass::default()), &[u], now);
    assert_eq!(
        plan.users[0].choices[0].send_after,
        ts("2026-06-01T19:00:00Z")
    );
}

/// The policy's `withhold` share: each opportunity the plan would send is withheld with that
/// probability, by one draw per opportunity (so every later plan draws the same), and logged as
/// a counterfactual with that probability; what is sent carries `1 − withhold` in its
/// propensity. It takes no cap slot, and a class that bypasses anything is never withheld.
#[test]
fn withheld_sends_are_drawn_once_per_opportunity_and_logged_with_their_probability() {
    let mut config = base_config();
    config.withhold = 0.2;
    config.caps = vec![CapRule {
        channel: Some("any".into()),
        max: Some(2),
        window_secs: Some(86400),
        ..CapRule::default()
    }];
    config.priorities.insert(
        "transactional".into(),
        Bypass {
            caps: true,
            ..Bypass::default()
        },
    );
    let now = "2026-06-01T10:00:00Z";
    let n_users = 10_000;
    let users: Vec<UserInput> = (0..n_users)
        .map(|i| {
            let mut reset = opp(9, &["email"], 0.5, now, "2026-06-01T11:00:00Z");
            reset.priority = "transactional".into();
            user(
                &format!("u{i:05}"),
                "UTC",
                vec![
                    opp(1, &["email", "push"], 0.2, now, "2026-06-02T00:00:00Z"),
                    opp(2, &["email"], 0.1, now, "2026-06-02T00:00:00Z"),
                    reset,
                ],
            )
        })
        .collect();
    let plan = run(&config, &users, now);
    let mut withheld = BTreeMap::new();
    for u in &plan.users {
        let reset = u.choices.iter().find(|c| c.opportunity == 9).unwrap();
        assert_eq!(reset.propensity, 1.0, "a bypassing class is never withheld");
        let held: Vec<&Suppression> = u
            .suppressions
            .iter()
            .filter(|s| s.reason == Reason::Withheld)
            .collect();
        for s in &held {
            let c = s
                .counterfactual
                .as_deref()
                .expect("what would have been sent");
            assert_eq!(c.propensity, 0.2);
            withheld.insert((u.user_id.clone(), s.opportunity), ());
        }
        // The cap allows two a day and the reset counts: a withheld first choice leaves its
        // slot to the second.
        let sent: Vec<&Choice> = u.choices.iter().filter(|c| c.opportunity != 9).collect();
        assert!(!sent.is_empty() || !held.is_empty());
        for c in &sent {
            assert!((c.propensity - 0.8).abs() < 1e-12, "{}", c.propensity);
        }
        if held.iter().any(|s| s.opportunity == 1) {
            assert!(
                sent.iter().any(|c| c.opportunity == 2) || held.iter().any(|s| s.opportunity == 2),
                "a withheld send takes no cap slot"
            );
        }
    }
    // `--explain` says why, and shows no send (nor cap slot) for what was withheld.
    let held = plan
        .users
        .iter()
        .position(|u| {
            u.suppressions
                .iter()
                .any(|s| s.reason == Reason::Withheld && s.opportunity == 1)
        })
        .expect("some user had opportunity 1 withheld");
    let planner = Planner::new(config.clone()).unwrap();
    let text = explain(&planner, &plan, &users[held]).unwrap();
    let line = |needle: &str| {
        text.lines()
            .any(|l| l.starts_with("  not sending opportunity 1 on ") && l.contains(needle))
    };
    assert!(line(": withheld at random"), "{text}");
    assert!(
        line(": the same opportunity is already withheld on "),
        "{text}"
    );
    assert!(!text.contains("send opportunity 1 ("), "{text}");
    // About a fifth of the first choices are withheld (five standard deviations).
    let first = withheld.keys().filter(|(_, o)| *o == 1).count() as f64;
    let n = n_users as f64;
    assert!(
        (first - 0.2 * n).abs() < 5.0 * (n * 0.2 * 0.8f64).sqrt(),
        "withheld {first} of {n}"
    );
    // A later plan draws the same for every opportunity.
    let again = run(&config, &users, "2026-06-01T12:00:00Z");
    let again: BTreeMap<(String, i64), ()> = again
        .users
        .iter()
        .flat_map(|u| {
            u.suppressions
                .iter()
                .filter(|s| s.reason == Reason::Withheld)
                .map(|s| ((u.user_id.clone(), s.opportunity), ()))
        })
        .collect();
    let first_plan: BTreeMap<(String, i64), ()> =
        withheld.into_iter().filter(|((_, o), _)| *o == 1).collect();
    let again: BTreeMap<(String, i64), ()> =
        again.into_iter().filter(|((_, o), _)| *o == 1).collect();
    assert_eq!(first_plan, again);
}

/// Scores that depend on the moment a candidate is scored for: conversion `base` at the plan's
/// start, `evening` for any moment from 17:00 to 21:00 UTC.
struct EveningIsBetter {
    evening: f64,
}

impl Predictor for EveningIsBetter {
    fn predict(&self, user: &UserInput, out: &mut Vec<Scores>) {
        InlineScores.predict(user, out)
    }

    fn predict_many_at(
        &self,
        users: &[&UserInput],
        at: Option<DateTime<Utc>>,
        out: &mut Vec<Scores>,
    ) {
        use chrono::Timelike;
        for u in users {
            let start = out.len();
            InlineScores.predict(u, out);
            if at.is_some_and(|t| (17..21).contains(&t.hour())) {
                for s in &mut out[start..] {
                    s.conversion = self.evening;
                }
            }
        }
    }
}

fn long_term(config: &mut PlannerConfig) {
    config.objectives.get_mut("default").unwrap().long_term = true;
}

/// With `long_term`, a candidate goes in the slot predicted to be worth most (the evening),
/// with that slot's value; without it, as soon as it may. Equal values keep the earliest slot.
#[test]
fn a_long_term_objective_sends_when_the_prediction_is_best() {
    let now = "2026-06-01T10:00:00Z";
    let users = vec![user(
        "u1",
        "UTC",
        vec![opp(
            1,
            &["email"],
            0.1,
            "2026-06-01T09:00:00Z",
            "2026-06-02T09:00:00Z",
        )],
    )];
    let predictor = EveningIsBetter { evening: 0.3 };
    let mut config = base_config();
    let plain = Planner::new(config.clone())
        .unwrap()
        .plan(&users, ts(now), 1, &predictor)
        .unwrap();
    assert_eq!(plain.users[0].choices[0].send_after, ts(now));
    assert_eq!(plain.users[0].choices[0].value, 0.1);

    long_term(&mut config);
    let planner = Planner::new(config.clone()).unwrap();
    let plan = planner.plan(&users, ts(now), 1, &predictor).unwrap();
    common::check(&config, &users, &plan, ts(now)).unwrap();
    let c = &plan.users[0].choices[0];
    // Slots every 3 hours from 10:00, each scored at its start: 19:00 is the first inside the
    // evening.
    assert_eq!(c.send_after, ts("2026-06-01T19:00:00Z"));
    assert!((c.value - 0.3).abs() < 1e-12, "{c:?}");

    // Nothing better later: at once.
    let flat = planner.plan(&users, ts(now), 1, &InlineScores).unwrap();
    assert_eq!(flat.users[0].choices[0].send_after, ts(now));
}

/// The default configuration with `long_term` and one cap of `max` sends a week on any channel.
fn weekly_cap_long_term(max: u32) -> PlannerConfig {
    let mut config = base_config();
    long_term(&mut config);
    config.caps = vec![CapRule {
        channel: None,
        max: Some(max),
        window_secs: Some(7 * 86400),
        ..CapRule::default()
    }];
    config
}

/// Ten email opportunities worth 0.02, 0.04, ... 0.2, open for a day from 09:00.
fn ten_emails() -> Vec<OpportunityInput> {
    (1..=10)
        .map(|i| {
            opp(
                i,
                &["email"],
                0.02 * i as f64,
                "2026-06-01T09:00:00Z",
                "2026-06-02T09:00:00Z",
            )
        })
        .collect()
}

/// Pacing: a user whose opportunities arrive faster than a count cap allows keeps its slots for
/// the candidates worth most in this plan's distribution; the weak one is `paced`, with the
/// threshold. A user with no arrival history, or arrivals within the cap, is not paced.
#[test]
fn pacing_keeps_cap_slots_for_the_best_candidates() {
    let now = "2026-06-01T10:00:00Z";
    let config = weekly_cap_long_term(2);
    let opps = ten_emails;
    let arrivals = |per_day: f64| {
        vec![Arrival {
            category: "marketing".into(),
            channels: vec!["email".into(), "push".into()],
            per_day,
        }]
    };
    let mut busy = user("busy", "UTC", opps());
    // 14 a week against 2 slots: only the best seventh.
    busy.arrivals = arrivals(2.0);
    let mut calm = user("calm", "UTC", opps());
    calm.arrivals = arrivals(0.2);
    let unknown = user("unknown", "UTC", opps());
    let users = vec![busy, calm, unknown];
    let plan = run(&config, &users, now);

    let busy = plan.user("busy").unwrap();
    let paced: Vec<_> = busy
        .suppressions
        .iter()
        .filter_map(|s| match s.reason {
            Reason::Paced { threshold } => Some((s.opportunity, threshold, s.value.unwrap())),
            _ => None,
        })
        .collect();
    // 30 values, 10 each of 0.02 ... 0.2: the best 1/7 clear the 26th, 0.18.
    assert!(!paced.is_empty());
    for (_, threshold, value) in &paced {
        assert!((threshold - 0.18).abs() < 1e-12, "{paced:?}");
        assert!(value < threshold);
    }
    let chosen: Vec<i64> = busy.choices.iter().map(|c| c.opportunity).collect();
    assert_eq!(chosen, vec![9, 10], "{busy:?}");
    for who in ["calm", "unknown"] {
        let u = plan.user(who).unwrap();
        assert!(u
            .suppressions
            .iter()
            .all(|s| !matches!(s.reason, Reason::Paced { .. })));
        assert_eq!(u.choices.len(), 2);
    }
    // The paced line says why, and with what threshold.
    let planner = Planner::new(config).unwrap();
    let mut out = Vec::new();
    jsonl::write_plan(&planner, &plan, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#""reason":"paced","threshold":0.18"#),
        "{text}"
    );
}

/// Pacing follows the user's window: the share of candidates a cap can take is its free slots
/// over the candidates expected until a slot comes back. An empty window is priced as the
/// stationary share; a window spent early prices its last slot higher; one about to roll over
/// is not paced at all.
#[test]
fn the_price_of_a_slot_rises_as_the_window_is_spent() {
    let now = "2026-06-01T10:00:00Z";
    let config = weekly_cap_long_term(3);
    let opps = ten_emails;
    let sent = |at: &str| PastSend {
        channel: "email".into(),
        category: "marketing".into(),
        priority: "normal".into(),
        sent_at: ts(at),
        opened_at: None,
    };
    // 14 arrivals a week.
    let with = |id: &str, history: Vec<PastSend>| {
        let mut u = user(id, "UTC", opps());
        u.arrivals = vec![Arrival {
            category: "marketing".into(),
            channels: vec!["email".into()],
            per_day: 2.0,
        }];
        u.history = history;
        u
    };
    let users = vec![
        with("fresh", vec![]),
        // Two of three slots spent yesterday: one left for the six days until they return.
        with(
            "early",
            vec![sent("2026-05-31T09:00:00Z"), sent("2026-05-31T10:00:00Z")],
        ),
        // Two spent almost a week ago: they return within hours.
        with(
            "late",
            vec![sent("2026-05-25T12:00:00Z"), sent("2026-05-25T13:00:00Z")],
        ),
    ];
    let plan = run(&config, &users, now);
    let threshold = |who: &str| {
        plan.user(who)
            .unwrap()
            .suppressions
            .iter()
            .find_map(|s| match s.reason {
                Reason::Paced { threshold } => Some(threshold),
                _ => None,
            })
    };
    let chosen = |who: &str| -> Vec<i64> {
        plan.user(who)
            .unwrap()
            .choices
            .iter()
            .map(|c| c.opportunity)
            .collect()
    };
    // 30 values, three each of 0.02 ... 0.2. Fresh: 3 slots for 14 expected, the best 3/14
    // clear the 24th value, 0.16. Early: 1 slot for 12 expected, the 28th, 0.2.
    assert!((threshold("fresh").unwrap() - 0.16).abs() < 1e-12);
    assert_eq!(chosen("fresh"), vec![8, 9, 10]);
    assert!((threshold("early").unwrap() - 0.2).abs() < 1e-12);
    assert_eq!(chosen("early"), vec![10]);
    // Late: its slots come back today, so it is not paced (and may send more once they have).
    assert_eq!(threshold("late"), None);
    assert!(chosen("late").contains(&10));
}
