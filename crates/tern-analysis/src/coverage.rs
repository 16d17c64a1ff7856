//! The coverage study behind `tern bench ope`: off-policy evaluation checked against the truth, on the simulator.
//!
//! For each seed, two identical simulated populations (the same seed makes the same users and
//! the same opportunities). On the first, the logging policy (the example bundle, with 30%
//! exploration so that its log supports other policies) decides each hour's opportunities and
//! its sends are delivered: the log. On the second, the candidate (a stricter objective,
//! exploration off) runs the same way: its realised value per decision is the truth. The log
//! alone then gives the estimates, as `tern evaluate` computes them: the candidate replayed on
//! each logged context, IPS, SNIPS and doubly robust with a burn model trained on the log as
//! the direct method. Over many seeds, a 95% interval should cover the truth about 95% of the
//! time.
//!
//! Both policies score candidates with the prior, so that the only difference between them is
//! the policy (weights, threshold, exploration), and the model is only the estimator's direct
//! method.
//!
//! Retention is measured as `tern evaluate` measures it with a 7-day horizon
//! ([`RETENTION_DAYS`]): a send's reward is whether its user was active on some day of the
//! week after it (a decision that sent nothing earns 0, as every objective's does). Both worlds
//! run on for that week after the last decision, without deciding anything new, so that every
//! decision's label is observed.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tern_core::{NewOpportunity, OutcomeKind};
use tern_daemon::predict::{for_each_candidate, ModelPredictor, Prior};
use tern_daemon::translate::{assign_arms, planner_config};
use tern_model::{Batch, FeatureSpec, InMemory, TrainConfig, HEADS};
use tern_ope::Bootstrap;
use tern_planner::{OpportunityInput, PastSend, Planner, UserInput};
use tern_policy::Bundle;
use tern_sim::{Config, Delivery, Profile, World};

use crate::decisions::{self as evaluate, Decision, Sent, OBJECTIVES};
use crate::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

pub const CANDIDATE_OBJECTIVE: &str = "apiVersion: tern/v1
kind: Objective
metadata:
  name: default
spec:
  weights: { conversion: 1.0, engagement: 0.3, retention: 2.0, reachability: 6.0 }
  minValue: 0.06
";

/// The retention label's horizon in the study: a week, the shortest that tern's retention
/// label has (its last week is the whole horizon).
pub const RETENTION_DAYS: u32 = 7;

/// What the study runs: per seed, `users` simulated users over `days` of opportunities,
/// the logging policy exploring `exploration`, intervals at `level`.
#[derive(Debug, Clone)]
pub struct Study {
    pub users: usize,
    pub days: u32,
    pub exploration: f64,
    pub level: f64,
}

/// One seed's figures: every estimate beside the truth, and how the policies behaved.
#[derive(Debug, Clone)]
pub struct SeedResult {
    pub seed: u64,
    pub decisions: usize,
    /// Sends of the logging policy and of the candidate run for real.
    pub logged_sends: usize,
    pub candidate_sends: usize,
    /// Decisions where the replayed candidate repeats the logged action.
    pub agree: usize,
    pub rows: Vec<Row>,
}

/// One policy's run on one world: the decisions with what was done and what it earned.
struct Run {
    decisions: Vec<Decision>,
}

/// Decides `days` of opportunities hour by hour with `bundle` (exploration `exploration`),
/// delivering each send at its time, and returns every decision with its rewards.
fn run_policy(
    world: &mut World,
    bundle: &Bundle,
    exploration: f64,
    days: u32,
    seed: u64,
) -> Result<Run> {
    let mut config = planner_config(bundle, None)?;
    config.exploration = exploration;
    let planner = Planner::new(config)?;
    let start = world.config().start;
    let profiles: BTreeMap<String, Profile> = world
        .profiles()
        .into_iter()
        .map(|p| (p.user_id.clone(), p))
        .collect();
    let mut history: BTreeMap<String, Vec<PastSend>> = BTreeMap::new();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut opportunities: Vec<NewOpportunity> = Vec::new();
    // (send time, decision index)
    let mut pending: Vec<(DateTime<Utc>, usize)> = Vec::new();
    // Each user's active days, for the retention labels.
    let mut active: BTreeMap<String, Vec<chrono::NaiveDate>> = BTreeMap::new();
    let mut sent_at: Vec<Option<DateTime<Utc>>> = Vec::new();
    // Decisions stop after `days`; the world runs on until every label's week is over.
    let hours = 24 * (i64::from(days) + 1 + i64::from(RETENTION_DAYS));
    for h in 1..=hours {
        let t = start + TimeDelta::hours(h);
        // Deliver what fell due in the hour that just ended, in time order.
        pending.sort_by_key(|(at, i)| (*at, *i));
        let due: Vec<(DateTime<Utc>, usize)> =
            pending.iter().copied().filter(|(at, _)| *at < t).collect();
        pending.retain(|(at, _)| *at >= t);
        for (at, i) in due {
            let d = &decisions[i];
            let sent = d.logged.as_ref().expect("only sends are pending");
            let outcomes = world
                .deliver(Delivery::of(&opportunities[i], &sent.channel, at))
                .map_err(|e| Error::Simulation(e.to_string()))?;
            let any = |f: fn(OutcomeKind) -> bool, window: TimeDelta| {
                let hit = outcomes.iter().any(|o| f(o.kind) && o.at < at + window);
                Some(f64::from(u8::from(hit)))
            };
            decisions[i].rewards = [
                any(|k| k == OutcomeKind::Converted, TimeDelta::days(7)),
                any(
                    |k| matches!(k, OutcomeKind::Opened | OutcomeKind::Clicked),
                    TimeDelta::hours(48),
                ),
                // Set below, once the week after the send is over.
                None,
                any(OutcomeKind::loses_reachability, TimeDelta::days(7)),
            ];
            sent_at[i] = Some(at);
        }
        if t.timestamp() % 86_400 == 0 {
            let report = world
                .end_of_day((t - TimeDelta::hours(1)).date_naive())
                .map_err(|e| Error::Simulation(e.to_string()))?;
            for user in report.active_users {
                active.entry(user).or_default().push(report.day);
            }
        }
        if h > 24 * i64::from(days) {
            continue;
        }
        // Decide the opportunities created in the hour that just ended.
        let created = world.opportunities(t - TimeDelta::hours(1), t);
        let mut by_user: BTreeMap<&str, Vec<&NewOpportunity>> = BTreeMap::new();
        for o in &created {
            by_user.entry(o.user_id.as_str()).or_default().push(o);
        }
        let mut users: Vec<UserInput> = by_user
            .iter()
            .map(|(user, opps)| {
                let p = &profiles[*user];
                let mut unreachable = Vec::new();
                if !(p.push_enabled && p.device.is_some()) {
                    unreachable.push("push".to_string());
                }
                if !p.email_verified {
                    unreachable.push("email".to_string());
                }
                UserInput {
                    user_id: user.to_string(),
                    timezone: p.timezone.clone(),
                    arm: None,
                    send_time_profile: Vec::new(),
                    opted_out_channels: Vec::new(),
                    unreachable_channels: unreachable,
                    opted_out_categories: Vec::new(),
                    history: history.get(*user).cloned().unwrap_or_default(),
                    opportunities: opps
                        .iter()
                        .enumerate()
                        .map(|(k, o)| input(o, k as i64))
                        .collect(),
                    activity: Default::default(),
                    arrivals: Vec::new(),
                }
            })
            .collect();
        assign_arms(bundle, &mut users);
        let plan = planner.plan(&users, t, seed.wrapping_mul(1_000_003) ^ h as u64, &Prior)?;
        let by_id: BTreeMap<(&str, i64), &NewOpportunity> = by_user
            .iter()
            .flat_map(|(u, opps)| {
                opps.iter()
                    .enumerate()
                    .map(move |(k, o)| ((*u, k as i64), *o))
            })
            .collect();
        for (user, up) in users.iter().zip(&plan.users) {
            for o in &user.opportunities {
                let choice = up.choices.iter().find(|c| c.opportunity == o.id);
                let mut context = user.clone();
                context.opportunities = vec![o.clone()];
                let i = decisions.len();
                let logged = choice.map(|c| Sent {
                    channel: plan.channel_name(c.channel).to_string(),
                    propensity: c.propensity,
                });
                if let (Some(c), Some(s)) = (choice, &logged) {
                    pending.push((c.send_after, i));
                    history
                        .entry(user.user_id.clone())
                        .or_default()
                        .push(PastSend {
                            channel: s.channel.clone(),
                            category: o.category.clone(),
                            priority: o.priority.clone(),
                            sent_at: c.send_after,
                            opened_at: None,
                        });
                }
                decisions.push(Decision {
                    user: context,
                    decided_at: t,
                    // Sending nothing earns nothing; a send's rewards come with its delivery.
                    rewards: if logged.is_some() {
                        [None; 4]
                    } else {
                        [Some(0.0); 4]
                    },
                    logged,
                    unsent_propensity: 1.0,
                });
                sent_at.push(None);
                opportunities.push((*by_id[&(user.user_id.as_str(), o.id)]).clone());
            }
        }
    }
    if let Some((at, _)) = pending.first() {
        return Err(Error::Invalid(format!(
            "a send at {at} was still pending when the run ended"
        )));
    }
    let end = start + TimeDelta::hours(hours);
    let horizon = TimeDelta::days(i64::from(RETENTION_DAYS));
    for (d, at) in decisions.iter_mut().zip(&sent_at) {
        if let Some(at) = at {
            let days = active.get(&d.user.user_id).map_or(&[][..], Vec::as_slice);
            let (kept, observable) = tern_daemon::train::retained(days, *at, horizon, end);
            d.rewards[2] = observable.then_some(f64::from(kept));
        }
    }
    Ok(Run { decisions })
}

/// The simulator's opportunity as the planner sees it; its id is its index among the user's
/// opportunities of the hour.
fn input(o: &NewOpportunity, id: i64) -> OpportunityInput {
    OpportunityInput {
        id,
        category: o.category.clone(),
        priority: o.priority.clone(),
        channels: o.channels.clone(),
        created_at: o.created_at,
        expires_at: o.expires_at,
        template: o.template.clone(),
        scores: Vec::new(),
        signals: o.signals.clone(),
    }
}

/// Feature rows, labels and label masks of one part (training or validation).
type Rows = (Vec<f32>, Vec<[f32; HEADS]>, Vec<[bool; HEADS]>);

/// Trains the direct method on the log's sends: each send's features at its decision, its
/// outcomes as labels (retention unobserved).
fn train_direct_method(log: &[Decision], seed: u64) -> Result<tern_model::Model> {
    let spec = FeatureSpec::default();
    let channels = spec.declaration().channels.clone();
    let width = spec.width();
    let mut rows: [Rows; 2] = Default::default();
    let mut history = Vec::new();
    let mut row = vec![0.0f32; width];
    for (i, d) in log.iter().enumerate() {
        let Some(sent) = &d.logged else { continue };
        let Some(at) = d.user.opportunities[0]
            .channels
            .iter()
            .position(|c| *c == sent.channel)
        else {
            continue;
        };
        let mut k = 0;
        let mut encoded = Ok(());
        for_each_candidate(&channels, &d.user, d.decided_at, &mut history, |ctx| {
            if k == at {
                encoded = spec.encode(ctx, &mut row);
            }
            k += 1;
        });
        encoded?;
        let mut labels = [0.0f32; HEADS];
        let mut masks = [false; HEADS];
        // `OBJECTIVES` are in the model's head order.
        for (head, reward) in d.rewards.iter().enumerate() {
            if let Some(r) = reward {
                labels[head] = *r as f32;
                masks[head] = true;
            }
        }
        // Every fifth send validates (early stopping); the rest train.
        let part = &mut rows[usize::from(i % 5 == 0)];
        part.0.extend_from_slice(&row);
        part.1.push(labels);
        part.2.push(masks);
    }
    let [train, valid] = rows;
    let batches = |(f, l, m): Rows| Batch::new(width, f, l, m).map(|b| InMemory(vec![b]));
    let config = TrainConfig {
        seed,
        max_epochs: 15,
        batch_size: 256,
        ..TrainConfig::default()
    };
    Ok(tern_model::train(
        &spec,
        &config,
        &mut batches(train)?,
        &mut batches(valid)?,
        None,
    )?)
}

/// One seed's figures for one objective.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub seed: u64,
    pub objective: &'static str,
    pub truth: f64,
    pub ips: [f64; 3],
    pub snips: [f64; 3],
    pub dr: [f64; 3],
    pub ess: f64,
    pub rows: usize,
    pub unsupported: f64,
}

pub fn covers(e: &[f64; 3], truth: f64) -> bool {
    e[1] <= truth && truth <= e[2]
}

/// The example bundle (without experiments) logs; the candidate is the same bundle with a
/// heavier reachability weight and a higher `minValue` (see [`CANDIDATE_OBJECTIVE`]).
pub fn policies() -> Result<(Bundle, Bundle)> {
    let example = |objective| {
        tern_policy::example::without_experiments(objective).map_err(|f| {
            Error::Invalid(format!(
                "the example policies are not valid:\n{}",
                f.to_text()
            ))
        })
    };
    Ok((example(None)?, example(Some(CANDIDATE_OBJECTIVE))?))
}

/// Runs one seed: the logging policy and the candidate on identical worlds, the direct method
/// trained on the log, and every estimator's interval beside the candidate's realised value.
pub fn run_seed(
    study: &Study,
    logging: &Bundle,
    candidate: &Bundle,
    seed: u64,
) -> Result<SeedResult> {
    if !(0.0..1.0).contains(&study.exploration) || study.exploration == 0.0 {
        return Err(Error::Invalid(format!(
            "--exploration must be in (0, 1), got {}: without exploration the log supports only the logging policy",
            study.exploration
        )));
    }
    let start = Utc
        .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
        .single()
        .expect("valid");
    let bootstrap = Bootstrap {
        resamples: 1000,
        level: study.level,
        seed: 0,
    };
    let config = Config::new(study.users, seed, start);
    let mut log_world = World::new(config.clone());
    let mut truth_world = World::new(config);
    let log = run_policy(&mut log_world, logging, study.exploration, study.days, seed)?;
    let truth = run_policy(&mut truth_world, candidate, 0.0, study.days, seed)?;
    if truth.decisions.len() != log.decisions.len() {
        return Err(Error::Invalid(format!(
            "seed {seed}: the two worlds saw {} and {} opportunities; they must be the same",
            log.decisions.len(),
            truth.decisions.len()
        )));
    }
    let model = Arc::new(train_direct_method(&log.decisions, seed)?);
    let scorer = |_at: DateTime<Utc>, _: &evaluate::Modes| {
        Box::new(Prior) as Box<dyn tern_planner::Predictor>
    };
    let dm = |at: DateTime<Utc>, _: &evaluate::Modes| {
        Box::new(ModelPredictor::probabilities(model.clone(), at))
            as Box<dyn tern_planner::Predictor>
    };
    let replayed = evaluate::replay(candidate, &log.decisions, &scorer, &dm)?;
    let mut rows = Vec::new();
    for (k, (objective, estimate)) in evaluate::estimates(&log.decisions, &replayed, bootstrap)
        .into_iter()
        .enumerate()
    {
        let Ok(e) = estimate else { continue };
        let realised: Vec<f64> = truth
            .decisions
            .iter()
            .filter_map(|d| d.rewards[k])
            .collect();
        let t = realised.iter().sum::<f64>() / realised.len().max(1) as f64;
        let three = |x: &tern_ope::Estimate| [x.value, x.low, x.high];
        rows.push(Row {
            seed,
            objective,
            truth: t,
            ips: three(&e.ips),
            snips: three(&e.snips),
            dr: three(&e.doubly_robust),
            ess: e.effective_sample_size,
            rows: e.rows,
            unsupported: e.unsupported,
        });
    }
    let sends = |d: &[Decision]| d.iter().filter(|d| d.logged.is_some()).count();
    let agree = log
        .decisions
        .iter()
        .zip(&replayed)
        .filter(|(d, r)| {
            d.logged.as_ref().map(|s| s.channel.as_str())
                == r.channel
                    .map(|c| d.user.opportunities[0].channels[c].as_str())
        })
        .count();
    Ok(SeedResult {
        seed,
        decisions: log.decisions.len(),
        logged_sends: sends(&log.decisions),
        candidate_sends: sends(&truth.decisions),
        agree,
        rows,
    })
}

/// The Markdown summary: per objective, coverage of each estimator and mean interval widths,
/// then every seed.
pub fn table(rows: &[Row], level: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| objective | seeds | true value (mean) | IPS covers | SNIPS covers | DR covers | DR mean width | IPS mean width |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for objective in OBJECTIVES {
        let r: Vec<&Row> = rows.iter().filter(|r| r.objective == objective).collect();
        if r.is_empty() {
            continue;
        }
        let n = r.len() as f64;
        let count = |f: &dyn Fn(&Row) -> bool| r.iter().filter(|x| f(x)).count();
        let _ = writeln!(
            out,
            "| {objective} | {} | {:.4} | {}/{} | {}/{} | {}/{} | {:.4} | {:.4} |",
            r.len(),
            r.iter().map(|x| x.truth).sum::<f64>() / n,
            count(&|x| covers(&x.ips, x.truth)),
            r.len(),
            count(&|x| covers(&x.snips, x.truth)),
            r.len(),
            count(&|x| covers(&x.dr, x.truth)),
            r.len(),
            r.iter().map(|x| x.dr[2] - x.dr[1]).sum::<f64>() / n,
            r.iter().map(|x| x.ips[2] - x.ips[1]).sum::<f64>() / n,
        );
    }
    let _ = writeln!(
        out,
        "\n{:.0}% intervals. Per seed and objective: truth, then IPS, SNIPS and DR as value [low, high], the effective sample size.\n",
        100.0 * level
    );
    let _ = writeln!(
        out,
        "| seed | objective | truth | IPS | SNIPS | DR | ESS / rows |"
    );
    let _ = writeln!(out, "| ---: | --- | ---: | --- | --- | --- | ---: |");
    let f = |e: &[f64; 3], truth: f64| {
        format!(
            "{:.4} [{:.4}, {:.4}]{}",
            e[0],
            e[1],
            e[2],
            if covers(e, truth) { "" } else { " ✗" }
        )
    };
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.4} | {} | {} | {} | {:.0} / {} |",
            r.seed,
            r.objective,
            r.truth,
            f(&r.ips, r.truth),
            f(&r.snips, r.truth),
            f(&r.dr, r.truth),
            r.ess,
            r.rows
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One small seed estimates every objective, retention included: every send's retention
    /// label is observed (the worlds run on for its week), and the estimates and the truth
    /// are rates of the same thing.
    #[test]
    fn one_seed_estimates_every_objective_retention_included() {
        let (logging, candidate) = policies().unwrap();
        let study = Study {
            users: 300,
            days: 1,
            exploration: 0.3,
            level: 0.95,
        };
        let r = run_seed(&study, &logging, &candidate, 3).unwrap();
        let objectives: Vec<&str> = r.rows.iter().map(|x| x.objective).collect();
        assert_eq!(objectives, OBJECTIVES.to_vec(), "{r:?}");
        let retention = r.rows.iter().find(|x| x.objective == "retention").unwrap();
        assert_eq!(
            retention.rows, r.decisions,
            "every label observed: {retention:?}"
        );
        assert!(
            retention.truth > 0.0 && retention.truth < 1.0,
            "{retention:?}"
        );
        for e in [&retention.ips, &retention.snips, &retention.dr] {
            assert!(e[1] <= e[0] && e[0] <= e[2], "{retention:?}");
        }
    }
}
