//! `tern plan`: the planner offline, on a JSON Lines file of users, under a policy bundle; and the
//! translation of a policy bundle into the planner's configuration, which the daemon shares.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use tern_planner::{
    explain, jsonl, Arm, Budget, CapRule, ChannelConfig, Experiment, InlineScores, Objective,
    Planner, PlannerConfig, QuietHours, UserInput,
};
use tern_policy::{Bundle, ChannelScope};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The policy bundle directory.
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// JSON Lines, one user per line with history, opportunities and predictions (format in
    /// docs/planner.md).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the schedule and the suppressions as JSON Lines; stdout when absent.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The Replan document whose horizon and exploration share apply; the first by name when
    /// absent.
    #[arg(long)]
    replan: Option<String>,
    /// The Experiment document to apply (the planner applies one at a time); the first by name
    /// when absent, none with `--experiment none`.
    #[arg(long)]
    experiment: Option<String>,
    /// The planning instant (RFC 3339); now when absent.
    #[arg(long)]
    now: Option<DateTime<Utc>>,
    /// Seed of the exploration draws: the same inputs and seed give the same schedule.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Instead of the schedule, print why this user got what they got.
    #[arg(long, value_name = "USER")]
    explain: Option<String>,
}

pub fn run(args: PlanArgs) -> Result<ExitCode> {
    let bundle = Bundle::load(&args.policies).map_err(|findings| {
        anyhow!(
            "{} is not a valid policy bundle ({} error(s)); run `tern policy check {}`",
            args.policies.display(),
            findings.error_count(),
            args.policies.display()
        )
    })?;
    let config = planner_config(&bundle, args.replan.as_deref(), args.experiment.as_deref())?;
    let planner = Planner::new(config).context("the policy cannot be planned with")?;
    let input =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let mut users = jsonl::read_users(BufReader::new(input))
        .with_context(|| format!("{} is not valid planner input", args.input.display()))?;
    assign_arms(&bundle, planner.config(), &mut users);
    let now = args.now.unwrap_or_else(Utc::now);
    let plan = planner.plan(&users, now, args.seed, &InlineScores)?;

    if let Some(user) = &args.explain {
        let text = users
            .iter()
            .find(|u| &u.user_id == user)
            .and_then(|u| explain(&planner, &plan, u))
            .ok_or_else(|| anyhow!("user {user:?} is not in {}", args.input.display()))?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    jsonl::write_plan(&planner, &plan, &mut out)?;
    out.flush()?;
    let chosen: u64 = plan.stats.chosen.values().sum();
    eprintln!(
        "planned {} users, {} candidates: {} chosen, policy {}",
        plan.users.len(),
        plan.stats.candidates,
        chosen,
        bundle.short_version()
    );
    Ok(ExitCode::SUCCESS)
}

/// Translates a policy bundle into the planner's configuration: the channels with their quiet
/// hours and budgets, the `default` cap set, every objective, one experiment, and the horizon and
/// exploration share of one Replan document.
///
/// The experiment's arms keep their shares scaled by its `traffic`, and an extra arm, `outside`,
/// with no overrides takes the users the experiment does not admit, who get the default
/// objective and caps. Who is in which arm is decided by the policy ([`assign_arms`]), not by
/// these shares.
pub fn planner_config(
    bundle: &Bundle,
    replan: Option<&str>,
    experiment: Option<&str>,
) -> Result<PlannerConfig> {
    let replan = match replan {
        Some(name) => bundle
            .replans
            .iter()
            .find(|r| r.metadata.name == name)
            .ok_or_else(|| anyhow!("the bundle has no Replan named {name:?}"))?,
        None => bundle
            .replans
            .first()
            .ok_or_else(|| anyhow!("the bundle has no Replan document"))?,
    };
    let experiment = match experiment {
        Some("none") => None,
        Some(name) => Some(
            bundle
                .experiments
                .iter()
                .find(|e| e.metadata.name == name)
                .ok_or_else(|| anyhow!("the bundle has no Experiment named {name:?}"))?,
        ),
        None => bundle.experiments.first(),
    };

    let caps_of = |name: &str| -> Result<Vec<CapRule>> {
        let set = bundle
            .cap_set(name)
            .ok_or_else(|| anyhow!("the bundle has no Caps named {name:?}"))?;
        Ok(cap_rules(&set.rules))
    };
    let default_caps = bundle.default_caps();
    let exempt_priorities = default_caps
        .map(|set| set.exempt.iter().map(|p| p.as_str().to_string()).collect())
        .unwrap_or_default();

    let experiment = match experiment {
        None => None,
        Some(e) => {
            let mut arms = Vec::new();
            for arm in &e.arms {
                arms.push(Arm {
                    name: arm.name.clone(),
                    share: arm.share * e.traffic,
                    objective: arm.objective.clone(),
                    caps: arm.caps.as_deref().map(caps_of).transpose()?,
                    holdout: arm.holdout,
                });
            }
            if e.arms.iter().any(|a| a.name == OUTSIDE) {
                bail!(
                    "experiment {:?} has an arm named {OUTSIDE:?}, a name tern plan reserves",
                    e.metadata.name
                );
            }
            arms.push(Arm {
                name: OUTSIDE.into(),
                share: (1.0 - e.traffic).max(0.0),
                objective: None,
                caps: None,
                holdout: false,
            });
            Some(Experiment {
                name: e.metadata.name.clone(),
                salt: e.salt.clone(),
                arms,
            })
        }
    };

    if bundle.default_objective().is_none() {
        bail!("the bundle has no Objective named \"default\"");
    }
    Ok(PlannerConfig {
        channels: bundle
            .channels
            .iter()
            .map(|c| ChannelConfig {
                name: c.metadata.name.clone(),
                quiet_hours: c.quiet_hours.as_ref().map(|q| QuietHours {
                    from: q.from.format("%H:%M").to_string(),
                    to: q.to.format("%H:%M").to_string(),
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
                    },
                )
            })
            .collect(),
        experiment,
        exploration: replan.exploration,
        multi_channel: false,
        horizon_secs: replan.horizon.num_seconds().max(1) as u64,
        send_window_secs: 3600,
    })
}

/// The name of the arm for users that the applied experiment does not admit.
pub const OUTSIDE: &str = "outside";

/// Sets each user's arm from the policy bundle's assignment (the experiment's traffic, its layer
/// and its salted hash), so that the planner and every other reader of the bundle agree on who
/// is in which arm.
pub fn assign_arms(bundle: &Bundle, config: &PlannerConfig, users: &mut [UserInput]) {
    let Some(experiment) = &config.experiment else {
        for user in users {
            user.arm = None;
        }
        return;
    };
    for user in users {
        let arm = bundle
            .assignments(&user.user_id)
            .into_iter()
            .find(|(e, _)| e.metadata.name == experiment.name)
            .map_or(OUTSIDE, |(_, arm)| arm.name.as_str());
        user.arm = Some(arm.to_string());
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

    fn example() -> Bundle {
        Bundle::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies")).expect("valid")
    }

    #[test]
    fn the_example_bundle_translates_into_a_valid_planner_config() {
        let bundle = example();
        let config = planner_config(&bundle, None, None).unwrap();
        assert_eq!(config.channels.len(), bundle.channels.len());
        assert!(config.objectives.contains_key("default"));
        assert!(config
            .exempt_priorities
            .contains(&"transactional".to_string()));
        let experiment = config.experiment.as_ref().unwrap();
        let total: f64 = experiment.arms.iter().map(|a| a.share).sum();
        assert!((total - 1.0).abs() < 1e-9, "arm shares sum to {total}");
        Planner::new(config).expect("the planner accepts it");
    }

    #[test]
    fn every_replan_and_experiment_of_the_example_can_be_chosen() {
        let bundle = example();
        for r in &bundle.replans {
            for e in &bundle.experiments {
                let config =
                    planner_config(&bundle, Some(&r.metadata.name), Some(&e.metadata.name))
                        .unwrap();
                assert_eq!(config.horizon_secs as i64, r.horizon.num_seconds());
                Planner::new(config).unwrap();
            }
        }
        assert!(planner_config(&bundle, None, Some("none"))
            .unwrap()
            .experiment
            .is_none());
        assert!(planner_config(&bundle, Some("nope"), None).is_err());
    }
}

#[cfg(test)]
mod assignment_tests {
    use super::*;

    #[test]
    fn arms_follow_the_policy_assignment() {
        let bundle = Bundle::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies")).unwrap();
        let config = planner_config(&bundle, None, None).unwrap();
        let name = config.experiment.as_ref().unwrap().name.clone();
        let mut users: Vec<UserInput> = (0..2000)
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
            })
            .collect();
        assign_arms(&bundle, &config, &mut users);
        let mut outside = 0;
        for u in &users {
            let expected = bundle
                .assignments(&u.user_id)
                .into_iter()
                .find(|(e, _)| e.metadata.name == name)
                .map(|(_, a)| a.name.clone());
            match expected {
                Some(arm) => assert_eq!(u.arm.as_deref(), Some(arm.as_str())),
                None => {
                    assert_eq!(u.arm.as_deref(), Some(OUTSIDE));
                    outside += 1;
                }
            }
        }
        assert!(outside > 0 && outside < users.len(), "{outside} outside");
        let plan = Planner::new(config)
            .unwrap()
            .plan(&users, Utc::now(), 1, &InlineScores)
            .unwrap();
        assert!(plan.users.iter().all(|u| u.error.is_none()));
    }
}
