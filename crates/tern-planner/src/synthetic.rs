//! The benchmark's data set: deterministic, so that any peer (the SQL version of the selection,
//! another machine) can plan exactly the same users.

use std::collections::BTreeMap;

use chrono::DateTime;

use crate::config::*;
use crate::types::*;
use tern_core::SplitMix64;

/// The `now` the synthetic data set is built around (2026-03-29 00:00 UTC, the night Europe
/// springs forward, so that the benchmark also crosses a daylight-saving change).
pub const SYNTHETIC_NOW: i64 = 1_774_742_400;

const ZONES: &[&str] = &[
    "Europe/Stockholm",
    "America/New_York",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "UTC",
    "America/Los_Angeles",
    "Europe/London",
];
const CHANNELS: &[&str] = &["push", "email", "in_app", "sms", "web_push", "whatsapp"];
const CATEGORIES: &[&str] = &["marketing", "content", "social", "transactional"];

/// `users` users with `opps_per_user` open opportunities each, every one eligible on the first
/// `channels` channels (at most 6), a send-time profile, up to 8 past sends in the last 7 days, and
/// inline scores; plus a configuration with quiet hours on push, four cap rules, a `transactional`
/// exemption, an experiment (45% control, 45% retention-heavy, 10% holdout), 5% exploration and a
/// 24-hour horizon. No budget binds. The same arguments always give the same data.
pub fn synthetic(
    users: usize,
    opps_per_user: usize,
    channels: usize,
    seed: u64,
) -> (PlannerConfig, Vec<UserInput>) {
    let channels = channels.clamp(1, CHANNELS.len());
    let chan: Vec<String> = CHANNELS[..channels].iter().map(|s| s.to_string()).collect();
    let config = PlannerConfig {
        channels: chan
            .iter()
            .map(|name| ChannelConfig {
                name: name.clone(),
                quiet_hours: (name == "push" || name == "sms").then(|| QuietHours {
                    from: LocalTime::hm(22, 0).expect("a time of day"),
                    to: LocalTime::hm(8, 0).expect("a time of day"),
                }),
                budget: Some(Budget {
                    max: u64::MAX / 2,
                    per_secs: 86400,
                }),
            })
            .collect(),
        caps: vec![
            CapRule {
                channel: Some(chan[0].clone()),
                max: Some(2),
                window_secs: Some(86400),
                ..CapRule::default()
            },
            CapRule {
                channel: Some(ANY_CHANNEL.into()),
                max: Some(6),
                window_secs: Some(7 * 86400),
                ..CapRule::default()
            },
            CapRule {
                channel: Some(chan[chan.len().min(2) - 1].clone()),
                category: Some("marketing".into()),
                max: Some(3),
                window_secs: Some(7 * 86400),
                ..CapRule::default()
            },
            CapRule {
                channel: Some(chan[0].clone()),
                min_gap_secs: Some(4 * 3600),
                ..CapRule::default()
            },
        ],
        exempt_priorities: Vec::new(),
        priorities: BTreeMap::from([("transactional".to_string(), Bypass::ALL)]),
        objectives: BTreeMap::from([
            (
                "default".to_string(),
                Objective {
                    conversion: 1.0,
                    engagement: 0.3,
                    retention: 2.0,
                    reachability: 4.0,
                    min_value: 0.02,
                    long_term: false,
                },
            ),
            (
                "retention-heavy".to_string(),
                Objective {
                    conversion: 0.5,
                    engagement: 0.3,
                    retention: 4.0,
                    reachability: 6.0,
                    min_value: 0.02,
                    long_term: false,
                },
            ),
        ]),
        experiment: Some(Experiment {
            name: "retention-weights".into(),
            salt: "2026-q4".into(),
            arms: vec![
                Arm {
                    name: "control".into(),
                    share: 0.45,
                    objective: None,
                    caps: None,
                    exempt_priorities: None,
                    holdout: false,
                },
                Arm {
                    name: "retention".into(),
                    share: 0.45,
                    objective: Some("retention-heavy".into()),
                    caps: None,
                    exempt_priorities: None,
                    holdout: false,
                },
                Arm {
                    name: "holdout".into(),
                    share: 0.10,
                    objective: None,
                    caps: None,
                    exempt_priorities: None,
                    holdout: true,
                },
            ],
        }),
        exploration: 0.05,
        withhold: 0.0,
        multi_channel: false,
        horizon_secs: 86400,
        send_window_secs: 3600,
    };

    let ts = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(users);
    let mut next_id = 1i64;
    for u in 0..users {
        let profile = if rng.below(4) == 0 {
            Vec::new()
        } else {
            (0..24).map(|_| rng.next_f64()).collect()
        };
        let history = (0..rng.below(9))
            .map(|_| PastSend {
                channel: chan[rng.below(channels)].clone(),
                category: CATEGORIES[rng.below(CATEGORIES.len())].into(),
                priority: "marketing".into(),
                sent_at: ts(SYNTHETIC_NOW - 1 - rng.below(7 * 86400) as i64),
                opened_at: None,
            })
            .collect();
        let opportunities = (0..opps_per_user)
            .map(|_| {
                let id = next_id;
                next_id += 1;
                let category = CATEGORIES[rng.below(CATEGORIES.len())];
                let created = SYNTHETIC_NOW - rng.below(2 * 86400) as i64;
                OpportunityInput {
                    id,
                    category: category.into(),
                    priority: if category == "transactional" && rng.below(4) == 0 {
                        "transactional".into()
                    } else {
                        "marketing".into()
                    },
                    channels: chan.clone(),
                    created_at: ts(created),
                    expires_at: ts(created + 3600 + rng.below(3 * 86400) as i64),
                    template: format!("t{}", rng.below(20)),
                    scores: (0..channels)
                        .map(|_| Scores {
                            conversion: (rng.next_f64() * 0.2),
                            engagement: (rng.next_f64() * 0.5),
                            retention: (rng.next_f64() * 0.04 - 0.01),
                            reachability_loss: (rng.next_f64() * 0.02),
                        })
                        .collect(),
                    signals: Default::default(),
                }
            })
            .collect();
        out.push(UserInput {
            user_id: format!("user-{u:08}"),
            timezone: ZONES[rng.below(ZONES.len())].into(),
            arm: None,
            send_time_profile: profile,
            opted_out_channels: if rng.below(10) == 0 {
                vec![chan[rng.below(channels)].clone()]
            } else {
                Vec::new()
            },
            unreachable_channels: Vec::new(),
            opted_out_categories: if rng.below(20) == 0 {
                vec!["social".into()]
            } else {
                Vec::new()
            },
            history,
            opportunities,
            activity: Default::default(),
            arrivals: Vec::new(),
        });
    }
    (config, out)
}
