//! The policy bundle as the planner sees it: [`planner_config`] translates a bundle (and one of
//! its Replan documents) into a [`PlannerConfig`], and [`assign_arms`] tells the planner each
//! user's experiment arm from the policy's own assignment. The daemon, `tern plan` and the
//! analyses share this one translation.

use tern_planner::{
    Arm, Budget, Bypass, CapRule, ChannelConfig, Experiment, Objective, PlannerConfig, QuietHours,
    UserInput,
};
use tern_policy::{Bundle, ChannelScope};

use crate::Error;

/// Translates a policy bundle into the planner's configuration: the channels with their quiet
/// hours and budgets, the `default` cap set (with the classes it exempts), what each declared
/// priority class bypasses, every objective, every experiment (an arm's own cap set with its own
/// exemptions), and the horizon and exploration share of one Replan document.
///
/// The planner sees the bundle's experiments as one: its arms are every experiment's arms, named
/// `experiment/arm`, plus [`OUTSIDE`] for users in no arm that changes anything. Their shares are
/// irrelevant (zero, and one for `outside`): who is in which arm is decided by the policy's own
/// assignment ([`assign_arms`]), which the planner is then told per user.
///
/// A bundle without a Replan document is planned only on demand, over
/// [`DEFAULT_HORIZON_SECS`] with no exploration: `tern policy check` accepts such a bundle, so
/// the planner must run it.
pub fn planner_config(bundle: &Bundle, replan: Option<&str>) -> Result<PlannerConfig, Error> {
    let of = |r: &tern_policy::Replan| {
        (
            r.horizon.num_seconds().max(1) as u64,
            r.exploration,
            r.withhold,
        )
    };
    let (horizon_secs, exploration, withhold) = match replan {
        Some(name) => bundle
            .replans
            .iter()
            .find(|r| r.metadata.name == name)
            .map(of)
            .ok_or_else(|| Error::Policy(format!("the bundle has no Replan named {name:?}")))?,
        None => bundle
            .replans
            .first()
            .map(of)
            .unwrap_or((DEFAULT_HORIZON_SECS, 0.0, 0.0)),
    };

    // A cap set's rules and the classes it exempts travel together: an arm with its own set
    // gets that set's `exempt`, not the default set's.
    let caps_of = |name: &str| -> Result<(Vec<CapRule>, Vec<String>), Error> {
        let set = bundle
            .cap_set(name)
            .ok_or_else(|| Error::Policy(format!("the bundle has no Caps named {name:?}")))?;
        Ok((cap_rules(&set.rules), exempt_of(set)))
    };
    let default_caps = bundle.default_caps();
    let exempt_priorities = default_caps.map(exempt_of).unwrap_or_default();

    let experiment = if bundle.experiments.is_empty() {
        None
    } else {
        let mut arms = Vec::new();
        for e in &bundle.experiments {
            for arm in &e.arms {
                let (caps, exempt) = arm.caps.as_deref().map(caps_of).transpose()?.unzip();
                arms.push(Arm {
                    name: arm_name(&e.metadata.name, &arm.name),
                    share: 0.0,
                    objective: arm.objective.clone(),
                    caps,
                    exempt_priorities: exempt,
                    holdout: arm.holdout,
                });
            }
        }
        arms.push(Arm {
            name: OUTSIDE.into(),
            share: 1.0,
            objective: None,
            caps: None,
            exempt_priorities: None,
            holdout: false,
        });
        Some(Experiment {
            name: "policy".into(),
            salt: String::new(),
            arms,
        })
    };

    if bundle.default_objective().is_none() {
        return Err(Error::Policy(
            "the bundle has no Objective named \"default\"".into(),
        ));
    }
    Ok(PlannerConfig {
        channels: bundle
            .channels
            .iter()
            .map(|c| ChannelConfig {
                name: c.metadata.name.clone(),
                quiet_hours: c.quiet_hours.as_ref().map(|q| QuietHours {
                    from: q.from.into(),
                    to: q.to.into(),
                }),
                budget: c.budget.as_ref().map(|b| Budget {
                    max: b.max,
                    per_secs: b.per.num_seconds().max(1) as u64,
                }),
            })
            .collect(),
        caps: default_caps
            .map(|set| cap_rules(&set.rules))
            .unwrap_or_default(),
        exempt_priorities,
        priorities: bundle
            .priorities
            .iter()
            .map(|p| (p.class.as_str().to_string(), bypass_of(p)))
            .collect(),
        objectives: bundle
            .objectives
            .iter()
            .map(|o| {
                (
                    o.metadata.name.clone(),
                    Objective {
                        conversion: o.weights.conversion,
                        engagement: o.weights.engagement,
                        retention: o.weights.retention,
                        reachability: o.weights.reachability,
                        min_value: o.min_value,
                        long_term: o.value == tern_policy::ValueMode::LongTerm,
                    },
                )
            })
            .collect(),
        experiment,
        exploration,
        withhold,
        multi_channel: false,
        horizon_secs,
        send_window_secs: 3600,
    })
}

/// How the plan values sends: the default objective's [`ValueMode`], and the users whose
/// experiment arm (`treatment`: user → (experiment, arm)) names an objective that values them
/// otherwise.
pub fn value_modes(
    bundle: &Bundle,
    treatment: &std::collections::HashMap<String, (String, String)>,
) -> (
    tern_policy::ValueMode,
    std::collections::HashMap<String, tern_policy::ValueMode>,
) {
    let default = bundle
        .default_objective()
        .map(|o| o.value)
        .unwrap_or_default();
    let overrides = treatment
        .iter()
        .filter_map(|(user, (experiment, arm))| {
            let arm = bundle
                .experiments
                .iter()
                .find(|e| e.metadata.name == *experiment)?
                .arms
                .iter()
                .find(|a| a.name == *arm)?;
            let mode = bundle.objective(arm.objective.as_deref()?)?.value;
            (mode != default).then(|| (user.clone(), mode))
        })
        .collect();
    (default, overrides)
}

/// The horizon of an on-demand plan under a bundle with no Replan document: one day.
pub const DEFAULT_HORIZON_SECS: u64 = 86_400;

/// The arm of users in no experiment arm that changes their objective, caps or delivery.
/// (`experiment/arm` names contain a slash, so it cannot collide with one.)
pub const OUTSIDE: &str = "outside";

fn arm_name(experiment: &str, arm: &str) -> String {
    format!("{experiment}/{arm}")
}

/// The experiment arm that decides how a user is treated: the first assignment, by experiment
/// name, whose arm changes something (a holdout, an objective or caps), else the first.
pub fn effective_arm<'b>(
    bundle: &'b Bundle,
    user_id: &str,
) -> Option<(&'b tern_policy::Experiment, &'b tern_policy::Arm)> {
    effective(&bundle.assignments(user_id))
}

/// The assignment, among a user's, that decides how the user is treated (see
/// [`effective_arm`]).
pub fn effective<'b>(
    assignments: &[(&'b tern_policy::Experiment, &'b tern_policy::Arm)],
) -> Option<(&'b tern_policy::Experiment, &'b tern_policy::Arm)> {
    assignments
        .iter()
        .find(|(_, arm)| arm.holdout || arm.objective.is_some() || arm.caps.is_some())
        .or(assignments.first())
        .copied()
}

/// Sets each user's arm from the policy bundle's assignment (each experiment's traffic, its
/// layer and its salted hash), so that the planner and every other reader of the bundle agree on
/// who is in which arm. A user in several experiments (in different layers) gets the first, by
/// experiment name, whose arm changes something: a holdout, an objective or caps.
///
/// Returns every user's assignments, in input order, for callers that record them (the
/// daemon), so that no one hashes a user twice.
pub fn assign_arms<'b>(
    bundle: &'b Bundle,
    users: &mut [UserInput],
) -> Vec<Vec<(&'b tern_policy::Experiment, &'b tern_policy::Arm)>> {
    users
        .iter_mut()
        .map(|user| {
            let assignments = bundle.assignments(&user.user_id);
            user.arm = match effective(&assignments) {
                Some((e, arm)) => Some(arm_name(&e.metadata.name, &arm.name)),
                None if bundle.experiments.is_empty() => None,
                None => Some(OUTSIDE.to_string()),
            };
            assignments
        })
        .collect()
}

/// Each user's treatment, by user id: the (experiment, arm) that decides it (see
/// [`effective`]), from the assignments [`assign_arms`] returned for `users`, in the same order.
/// Users in no experiment are left out.
pub fn treatment(
    assigned: &[Vec<(&tern_policy::Experiment, &tern_policy::Arm)>],
    users: &[UserInput],
) -> std::collections::HashMap<String, (String, String)> {
    assigned
        .iter()
        .zip(users)
        .filter_map(|(a, u)| {
            effective(a).map(|(e, arm)| {
                (
                    u.user_id.clone(),
                    (e.metadata.name.clone(), arm.name.clone()),
                )
            })
        })
        .collect()
}

fn exempt_of(set: &tern_policy::CapSet) -> Vec<String> {
    set.exempt.iter().map(|p| p.as_str().to_string()).collect()
}

/// A `kind: Priority` document as the planner's flags.
fn bypass_of(p: &tern_policy::PriorityClass) -> Bypass {
    use tern_policy::Bypass as B;
    Bypass {
        caps: p.bypasses(B::Caps),
        budgets: p.bypasses(B::Budgets),
        min_value: p.bypasses(B::MinValue),
        quiet_hours: p.bypasses(B::QuietHours),
        holdouts: p.bypasses(B::Holdouts),
    }
}

fn cap_rules(rules: &[tern_policy::CapRule]) -> Vec<CapRule> {
    rules
        .iter()
        .map(|r| CapRule {
            name: None,
            channel: match &r.channel {
                ChannelScope::Any => None,
                ChannelScope::Channel(c) => Some(c.clone()),
            },
            category: r.category.clone(),
            max: r
                .limit
                .as_ref()
                .map(|l| l.max.min(u64::from(u32::MAX)) as u32),
            window_secs: r.limit.as_ref().map(|l| l.per.num_seconds().max(1) as u64),
            min_gap_secs: r.min_gap.map(|g| g.num_seconds().max(1) as u64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use tern_planner::{jsonl, InlineScores, Planner};

    fn example() -> Bundle {
        Bundle::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies")).expect("valid")
    }

    fn users(n: usize) -> Vec<UserInput> {
        (0..n)
            .map(|i| UserInput {
                user_id: format!("user-{i}"),
                timezone: "UTC".into(),
                arm: None,
                send_time_profile: vec![],
                opted_out_channels: vec![],
                unreachable_channels: vec![],
                opted_out_categories: vec![],
                history: vec![],
                opportunities: vec![],
                activity: Default::default(),
                arrivals: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn the_example_bundle_translates_into_a_valid_planner_config() {
        let bundle = example();
        let config = planner_config(&bundle, None).unwrap();
        assert_eq!(config.channels.len(), bundle.channels.len());
        assert!(config.objectives.contains_key("default"));
        assert_eq!(config.priorities["transactional"], Bypass::ALL);
        let arms = &config.experiment.as_ref().unwrap().arms;
        let declared: usize = bundle.experiments.iter().map(|e| e.arms.len()).sum();
        assert_eq!(arms.len(), declared + 1);
        Planner::new(config).expect("the planner accepts it");
    }

    #[test]
    fn every_replan_of_the_example_can_be_chosen() {
        let bundle = example();
        for r in &bundle.replans {
            let config = planner_config(&bundle, Some(&r.metadata.name)).unwrap();
            assert_eq!(config.horizon_secs as i64, r.horizon.num_seconds());
            assert_eq!(config.exploration, r.exploration);
            Planner::new(config).unwrap();
        }
        assert!(planner_config(&bundle, Some("nope")).is_err());
    }

    #[test]
    fn arms_follow_the_policy_assignment_across_experiments() {
        let bundle = example();
        let config = planner_config(&bundle, None).unwrap();
        let mut users = users(3000);
        assign_arms(&bundle, &mut users);
        let mut seen = std::collections::BTreeSet::new();
        for u in &users {
            let assigned = bundle.assignments(&u.user_id);
            let arm = u.arm.as_deref().unwrap();
            match assigned.first() {
                None => assert_eq!(arm, OUTSIDE),
                Some(_) => assert!(
                    assigned
                        .iter()
                        .any(|(e, a)| arm == arm_name(&e.metadata.name, &a.name)),
                    "{arm} is not among {} assignments",
                    assigned.len()
                ),
            }
            seen.insert(arm.to_string());
        }
        // Both experiments of the example (one layer) and the users outside them all occur.
        assert!(
            seen.iter().any(|a| a.starts_with("retention-weights/")),
            "{seen:?}"
        );
        assert!(
            seen.iter().any(|a| a.starts_with("fewer-pushes/")),
            "{seen:?}"
        );
        assert!(seen.contains(OUTSIDE), "{seen:?}");
        let plan = Planner::new(config)
            .unwrap()
            .plan(&users, Utc::now(), 1, &InlineScores)
            .unwrap();
        assert!(plan.users.iter().all(|u| u.error.is_none()));
    }

    /// Each cap set's `exempt` is its own: the reproduction of a bug where the `default` set's
    /// list applied to every arm. `gentle` (one push a day) exempts `high`; a `high` push to a
    /// user in `fewer-pushes/gentle` who had a push yesterday evening is then sent, marked
    /// exempt. With the lists swapped, `gentle` holds it back.
    #[test]
    fn each_cap_set_exempts_its_own_classes() {
        use std::path::Path;
        let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
        let dir = std::env::temp_dir().join(format!("tern-exempt-{}", std::process::id()));
        let run = |default_exempt: &str, gentle_exempt: &str| {
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(example).unwrap() {
                let path = entry.unwrap().path();
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
            let caps = std::fs::read_to_string(dir.join("caps.yaml")).unwrap();
            let caps = caps
                .replace(
                    "    - { channel: any, category: social, max: 3, per: 7d }\n",
                    &format!("    - {{ channel: any, category: social, max: 3, per: 7d }}\n  exempt: {default_exempt}\n"),
                )
                .replace(
                    "    - { channel: any, minGap: 2h }\n",
                    &format!("    - {{ channel: any, minGap: 2h }}\n  exempt: {gentle_exempt}\n"),
                );
            std::fs::write(dir.join("caps.yaml"), caps).unwrap();
            let bundle = Bundle::load(&dir).expect("valid");
            let config = planner_config(&bundle, None).unwrap();
            let now: DateTime<Utc> = "2026-03-02T12:00:00Z".parse().unwrap();
            // A user the policy puts in fewer-pushes/gentle.
            let user_id = (0..)
                .map(|i| format!("user-{i}"))
                .find(|u| {
                    effective_arm(&bundle, u).is_some_and(|(e, a)| {
                        e.metadata.name == "fewer-pushes" && a.name == "gentle"
                    })
                })
                .unwrap();
            let line = serde_json::json!({
                "user_id": user_id, "timezone": "UTC",
                "history": [{"channel": "push", "category": "content", "priority": "normal",
                             "sent_at": "2026-03-01T20:00:00Z"}],
                "opportunities": [{"id": 1, "category": "content", "priority": "high",
                    "channels": ["push"], "created_at": "2026-03-02T11:00:00Z",
                    "expires_at": "2026-03-02T16:00:00Z", "template": "t",
                    "scores": [{"conversion": 0.5, "engagement": 0.5, "retention": 0.05,
                                "reachability_loss": 0.0}]}]
            });
            let mut users = jsonl::read_users(std::io::Cursor::new(format!("{line}\n"))).unwrap();
            assign_arms(&bundle, &mut users);
            let plan = Planner::new(config)
                .unwrap()
                .plan(&users, now, 1, &InlineScores)
                .unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            plan.users.into_iter().next().unwrap()
        };
        let sent = run("[]", "[high]");
        assert_eq!(sent.choices.len(), 1, "{sent:?}");
        assert!(sent.choices[0].exempt);
        let held = run("[high]", "[]");
        assert!(held.choices.is_empty(), "{held:?}");
        assert!(
            held.suppressions
                .iter()
                .any(|s| matches!(s.reason, tern_planner::Reason::Cap { .. })),
            "{held:?}"
        );
    }

    /// Whatever `tern policy check` accepts, the planner runs: bundles are generated with rules,
    /// windows, channels, horizons and exploration shares on both sides of every limit, and each
    /// one the checker loads must translate into a configuration the planner accepts, under
    /// every Replan document and with none named.
    #[test]
    fn every_bundle_the_checker_accepts_the_planner_runs() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        use std::cell::Cell;
        use tern_policy::SourceFile;

        // Durations on both sides of the 366-day limit; channels and counts on both sides of
        // theirs. Most rules are well formed, so that most bundles get as far as the planner.
        const DURATIONS: &[&str] = &["1s", "1h", "3h", "1d", "7d", "366d", "367d", "400d", "520w"];
        const VALID: &[&str] = &["1s", "1h", "3h", "1d", "7d", "366d"];
        let any = || prop::sample::select(DURATIONS.to_vec());
        let valid = || prop::sample::select(VALID.to_vec());
        let channel = || prop::sample::select(vec!["any", "ch00", "ch00", "ch01", "ch40"]);
        let max = || prop::sample::select(vec!["0", "1", "2", "4294967295", "5000000000"]);
        let rule = prop_oneof![
            6 => (channel(), max(), valid()).prop_map(|(c, m, p)| (c, Some(m), Some(p), None)),
            3 => (channel(), valid()).prop_map(|(c, g)| (c, None, None, Some(g))),
            3 => (channel(), max(), valid(), valid()).prop_map(|(c, m, p, g)| (c, Some(m), Some(p), Some(g))),
            2 => (
                channel(),
                prop::option::of(max()),
                prop::option::of(any()),
                prop::option::of(any()),
            ),
        ]
        .prop_map(|(channel, max, per, gap)| {
            let mut fields = vec![format!("channel: {channel}")];
            fields.extend(max.map(|m| format!("max: {m}")));
            fields.extend(per.map(|d| format!("per: {d}")));
            fields.extend(gap.map(|d| format!("minGap: {d}")));
            format!("    - {{ {} }}\n", fields.join(", "))
        });
        let rules = prop_oneof![
            6 => prop::collection::vec(rule.clone(), 0..4),
            1 => prop::collection::vec(rule, 30..36),
        ];
        let channel = (
            prop::option::of(prop::sample::select(vec![
                ("22:00", "08:00"),
                ("21:00", "07:30"),
                ("12:00", "13:00"),
                ("08:00", "08:00"),
            ])),
            prop::option::of(any()),
        );
        let channels = prop_oneof![
            6 => prop::collection::vec(channel.clone(), 2..5),
            1 => prop::collection::vec(channel, 31..34),
        ];
        let replan =
            prop::option::of((any(), prop::sample::select(vec!["0", "0.05", "0.999", "1"])));
        let bundle = (
            channels,
            rules.clone(),
            prop::option::of(rules),
            replan,
            prop::sample::select(vec!["1", "1", "1", "0", "-2.5"]),
        );

        let accepted = Cell::new(0u32);
        let refused = Cell::new(0u32);
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&bundle, |(channels, default_rules, other_rules, replan, weight)| {
                let mut docs = Vec::new();
                for (i, (quiet, budget)) in channels.iter().enumerate() {
                    let mut spec = Vec::new();
                    if let Some((from, to)) = quiet {
                        spec.push(format!("quietHours: {{ from: \"{from}\", to: \"{to}\" }}"));
                    }
                    if let Some(per) = budget {
                        spec.push(format!("budget: {{ max: 1000, per: {per} }}"));
                    }
                    docs.push(format!(
                        "kind: Channel\nmetadata: {{ name: ch{i:02} }}\nspec: {{ {} }}\n",
                        spec.join(", ")
                    ));
                }
                docs.push(format!(
                    "kind: Objective\nmetadata: {{ name: default }}\nspec:\n  weights: {{ conversion: {weight} }}\n"
                ));
                let list = |rules: &[String]| {
                    if rules.is_empty() {
                        "  rules: []\n".to_string()
                    } else {
                        format!("  rules:\n{}", rules.concat())
                    }
                };
                docs.push(format!(
                    "kind: Caps\nmetadata: {{ name: default }}\nspec:\n{}  exempt: [high]\n",
                    list(&default_rules)
                ));
                if let Some(rules) = &other_rules {
                    docs.push(format!(
                        "kind: Caps\nmetadata: {{ name: gentle }}\nspec:\n{}",
                        list(rules)
                    ));
                    docs.push(
                        "kind: Experiment\nmetadata: { name: caps }\nspec:\n  salt: s\n  arms:\n    - { name: control, share: 0.5 }\n    - { name: gentle, share: 0.5, caps: gentle }\n"
                            .to_string(),
                    );
                }
                if let Some((horizon, exploration)) = replan {
                    docs.push(format!(
                        "kind: Replan\nmetadata: {{ name: hourly }}\nspec:\n  cron: \"0 0 * * * *\"\n  horizon: {horizon}\n  exploration: {exploration}\n"
                    ));
                }
                let text: String = docs
                    .iter()
                    .map(|d| format!("---\napiVersion: tern/v1\n{d}"))
                    .collect();
                let dir = std::path::Path::new("generated");
                let files = [SourceFile {
                    path: dir.join("bundle.yaml"),
                    bytes: text.clone().into_bytes(),
                }];
                let bundle = match Bundle::from_files(dir, &files) {
                    Ok(b) => b,
                    Err(findings) => {
                        if refused.get() < 3 {
                            eprintln!("refused:\n{}", findings.to_text());
                        }
                        refused.set(refused.get() + 1);
                        return Ok(());
                    }
                };
                accepted.set(accepted.get() + 1);
                let names = std::iter::once(None)
                    .chain(bundle.replans.iter().map(|r| Some(r.metadata.name.as_str())));
                for name in names {
                    let config = planner_config(&bundle, name)
                        .map_err(|e| TestCaseError::fail(format!("{e:#}\n{text}")))?;
                    Planner::new(config)
                        .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
                }
                Ok(())
            })
            .unwrap();
        eprintln!(
            "generated bundles: {} accepted by check and run by the planner, {} refused by check",
            accepted.get(),
            refused.get()
        );
        // Both sides of the limits occur, so the property is not vacuous.
        assert!(accepted.get() >= 100, "only {} accepted", accepted.get());
        assert!(refused.get() >= 100, "only {} refused", refused.get());
    }
}
