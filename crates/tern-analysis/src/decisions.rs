//! The logged decisions and a candidate bundle replayed on them: what `tern evaluate` and `tern
//! policy simulate` estimate off-policy.
//!
//! # The decision and its action
//! A logged decision is one opportunity that reached a final state: sent on a channel (from a
//! plan's schedule item, with the probability the plan chose it with), withheld (at random by
//! the Replan's `withhold` share, with that probability, or from a holdout user, certainly) or
//! expired unsent. Its
//! context is the user as the deciding plan saw them: time zone, activity, what they had been
//! sent in the 28 days before, and what else they were sent while the opportunity was open
//! (which the deciding plan had counted as pending items beside it). Its actions are the
//! opportunity's channels and "nothing".
//!
//! The candidate is replayed as the planner would run it, on each context at the moment of the
//! decision, with exploration off: a deterministic policy whose probability of the logged
//! action is 1 when it takes it and 0 otherwise. What it would have sent to holdout users is
//! what it sends: nothing.
//!
//! # Rewards
//! Per objective, the outcome the model's heads learn, attributed to a message: engaged (opened
//! or clicked within `--engagement-hours`), converted, lost reachability (unsubscribed, push
//! disabled or complained), retained (active in the last week of the retention horizon after
//! the send). Sending nothing earns 0 on each, by definition, which needs no logging: only the
//! candidate's sends need support. A decision counts for an objective once the objective's
//! window after the opportunity's expiry has closed by `--until`, whatever was done, so that
//! the recent end of the period does not keep more of one action than of another.
//!
//! # Support
//! A send the candidate makes where the logging policy sent something else is supported only
//! when the logged decision was randomised (propensity below 1: exploration gave the other
//! allowed channels a chance too); a send where the logging policy sent nothing is supported
//! only when the nothing was drawn at random (a send withheld by the `withhold` share), since
//! otherwise the planner only declines when no candidate is allowed. Unsupported mass is
//! reported, and the estimates come with a warning rather than a silent number.
//!
//! The estimators are in `tern-ope`; this module only turns logs and bundles into its rows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use tern_core::OutcomeKind;
use tern_daemon::features;
use tern_daemon::train::{retained, Labels};
use tern_daemon::translate::{assign_arms, planner_config, treatment, value_modes};
use tern_ope::{Bootstrap, Evaluation, Logged};
use tern_planner::{OpportunityInput, PastSend, Planner, Predictor, Scores, UserInput};
use tern_policy::Bundle;
use tern_store::{LoggedDecision, Store, TrainingUser};

use crate::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

/// The objectives, in the order of [`Decision::rewards`] and of every estimate.
pub const OBJECTIVES: [&str; 4] = ["conversion", "engagement", "retention", "reachability_loss"];

/// One logged decision, ready to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The user as the deciding plan saw them, with exactly one opportunity: the decided one.
    pub user: UserInput,
    /// When the decision was taken: the deciding plan's start, or the opportunity's creation
    /// when nothing was sent.
    pub decided_at: DateTime<Utc>,
    /// What the logging policy sent, if anything.
    pub logged: Option<Sent>,
    /// Where it sent nothing, the probability of that: 1 for an opportunity that expired
    /// unsent or a holdout user's, the `withhold` share for a send withheld at random.
    pub unsent_propensity: f64,
    /// Per objective (see [`OBJECTIVES`]), what the logged action earned; `None` while it cannot
    /// be observed yet.
    pub rewards: [Option<f64>; 4],
}

/// A logged send.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub channel: String,
    /// The probability with which the logging policy chose it, in (0, 1].
    pub propensity: f64,
}

/// What a policy does with one logged decision on replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The channel it sends on (an index into the opportunity's channels), if it sends.
    pub channel: Option<usize>,
    /// When the send's window opens.
    pub send_after: Option<DateTime<Utc>>,
    /// Why candidates were suppressed (one entry per suppression, as in a plan's stats).
    pub suppressed: Vec<&'static str>,
    /// The direct method's predictions, one per channel of the opportunity.
    pub predicted: Vec<Scores>,
}

/// How users whose experiment arm names an objective with another value mode than the default
/// objective's value their sends, by user id (see [`tern_daemon::translate::value_modes`]).
pub type Modes = std::collections::HashMap<String, tern_policy::ValueMode>;

/// Makes a predictor for decisions taken at one instant, valuing the sends of the users in
/// `Modes` in their arm's mode.
pub type PredictorAt<'a> = dyn Fn(DateTime<Utc>, &Modes) -> Box<dyn Predictor> + Sync + 'a;

/// Replays `bundle` on every decision: its default Replan's horizon, exploration off, each
/// decision planned at its own moment with the scores `scorer` gives (what the policy would
/// have acted on, each user's sends valued in their arm's mode, as the daemon does), and the
/// direct method's predictions from `dm`.
pub fn replay(
    bundle: &Bundle,
    decisions: &[Decision],
    scorer: &PredictorAt<'_>,
    dm: &PredictorAt<'_>,
) -> Result<Vec<Replayed>> {
    let mut config = planner_config(bundle, None)?;
    config.exploration = 0.0;
    let planner = Planner::new(config)
        .map_err(|e| Error::Policy(format!("the candidate policy cannot be planned with: {e}")))?;
    let mut by_moment: BTreeMap<DateTime<Utc>, Vec<usize>> = BTreeMap::new();
    for (i, d) in decisions.iter().enumerate() {
        if d.user.opportunities.len() != 1 {
            return Err(Error::Invalid(format!(
                "decision {i} has {} opportunities; a decision has one",
                d.user.opportunities.len()
            )));
        }
        by_moment.entry(d.decided_at).or_default().push(i);
    }
    let mut out: Vec<Option<Replayed>> = vec![None; decisions.len()];
    for (at, indices) in by_moment {
        // The same user can hold several decisions at one moment; each is its own context, so
        // each gets its own id (after the arm is assigned from the real one).
        let mut assigned = Vec::with_capacity(indices.len());
        let mut users: Vec<UserInput> = indices
            .iter()
            .map(|&i| {
                let mut u = decisions[i].user.clone();
                assigned.extend(assign_arms(bundle, std::slice::from_mut(&mut u)));
                u.user_id = format!("{i:010}");
                u
            })
            .collect();
        let (_, modes) = value_modes(bundle, &treatment(&assigned, &users));
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let plan = planner.plan(&users, at, 0, scorer(at, &modes).as_ref())?;
        let mut predicted = Vec::new();
        dm(at, &Modes::new()).predict_many(&users.iter().collect::<Vec<_>>(), &mut predicted);
        let mut predicted = predicted.into_iter();
        for (user, up) in users.iter().zip(&plan.users) {
            let i: usize = user.user_id.parse().expect("ids are indices");
            let opportunity = &user.opportunities[0];
            let choice = up.choices.first();
            out[i] = Some(Replayed {
                channel: choice.and_then(|c| {
                    let name = plan.channel_name(c.channel);
                    opportunity.channels.iter().position(|ch| ch == name)
                }),
                send_after: choice.map(|c| c.send_after),
                suppressed: up.suppressions.iter().map(|s| s.reason.as_str()).collect(),
                predicted: predicted
                    .by_ref()
                    .take(opportunity.channels.len())
                    .collect(),
            });
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every decision replayed"))
        .collect())
}

fn head(s: &Scores, objective: usize) -> f64 {
    match objective {
        0 => s.conversion,
        1 => s.engagement,
        2 => s.retention,
        _ => s.reachability_loss,
    }
}

/// The rows `tern-ope` estimates from, for one objective: the decisions whose reward is
/// observable, each with the candidate's probability of the logged action, the direct
/// method's prediction for the logged action and for the candidate's, and the support.
pub fn rows(decisions: &[Decision], replayed: &[Replayed], objective: usize) -> Vec<Logged> {
    decisions
        .iter()
        .zip(replayed)
        .filter_map(|(d, r)| {
            let reward = d.rewards[objective]?;
            let channels = &d.user.opportunities[0].channels;
            let q = |c: Option<usize>| c.map_or(0.0, |c| head(&r.predicted[c], objective));
            let logged = d
                .logged
                .as_ref()
                .and_then(|s| channels.iter().position(|c| *c == s.channel));
            let propensity = d
                .logged
                .as_ref()
                .map_or(d.unsent_propensity, |s| s.propensity);
            let same = r.channel == logged;
            // Another send than the logged action is backed only by a randomised decision.
            let unsupported = match r.channel {
                Some(_) if same || propensity < 1.0 => 0.0,
                Some(_) => 1.0,
                None => 0.0,
            };
            Some(Logged {
                propensity,
                target: if same { 1.0 } else { 0.0 },
                reward,
                predicted_logged: q(logged),
                predicted_target: q(r.channel),
                unsupported,
            })
        })
        .collect()
}

/// The unit of each row of [`rows`] for `objective`: its user, so that the bootstrap resamples
/// users, whose decisions are not independent of each other.
pub fn units(decisions: &[Decision], objective: usize) -> Vec<u64> {
    let mut ids: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    decisions
        .iter()
        .filter(|d| d.rewards[objective].is_some())
        .map(|d| {
            let next = ids.len() as u64;
            *ids.entry(d.user.user_id.as_str()).or_insert(next)
        })
        .collect()
}

/// The candidate's estimates, objective by objective.
pub fn estimates(
    decisions: &[Decision],
    replayed: &[Replayed],
    bootstrap: Bootstrap,
) -> Vec<(&'static str, Result<Evaluation, tern_ope::OpeError>)> {
    OBJECTIVES
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                *name,
                tern_ope::evaluate_by_unit(
                    &rows(decisions, replayed, k),
                    &units(decisions, k),
                    bootstrap,
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Logged decisions from the store.

/// Reads the decisions of `[from, until)` with what was known of their outcomes at `until`.
pub async fn load_decisions(
    store: &Store,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    labels: &Labels,
) -> Result<Vec<Decision>> {
    let logged = store.logged_decisions(from, until).await?;
    let wanted: BTreeSet<&str> = logged.iter().map(|d| d.user_id.as_str()).collect();
    // Each user's messages from 28 days before the period (their history feeds caps and
    // features) and their activity around it (features, retention).
    let history_from = from - TimeDelta::days(28);
    let mut histories: BTreeMap<String, TrainingUser> = BTreeMap::new();
    let mut stream = std::pin::pin!(store.training_history(
        history_from,
        until,
        history_from.date_naive() - TimeDelta::days(28),
        until.date_naive(),
    ));
    while let Some(user) = stream.try_next().await? {
        if wanted.contains(user.user_id.as_str()) {
            histories.insert(user.user_id.clone(), user);
        }
    }
    let timezones = store
        .user_zones(&wanted.iter().copied().collect::<Vec<_>>())
        .await?;
    // Each user's opportunities of the period, for the arrivals that pacing reads.
    let mut created: BTreeMap<String, Vec<Arrived>> = BTreeMap::new();
    for d in &logged {
        created.entry(d.user_id.clone()).or_default().push(Arrived {
            at: d.created_at,
            category: d.category.clone(),
            channels: d.channels.clone(),
        });
    }
    Ok(logged
        .into_iter()
        .map(|d| {
            let mut decision = decision(d, &histories, &timezones, labels, until);
            let user = &decision.user.user_id;
            let first_seen = timezones.get(user).and_then(|(_, t)| *t);
            decision.user.arrivals = arrivals(
                created.get(user).map_or(&[][..], Vec::as_slice),
                decision.decided_at,
                first_seen.map_or(from, |t| t.max(from)),
            );
            decision
        })
        .collect())
}

/// One opportunity's arrival, as pacing counts them.
struct Arrived {
    at: DateTime<Utc>,
    category: String,
    channels: Vec<String>,
}

/// What the daemon's plan at `at` read as the user's arrivals: the opportunities created in
/// the week before (the store's `ARRIVALS_WINDOW`), per kind and per day, over the part of
/// that week the log covers (from `known_from`, a day at least).
fn arrivals(
    created: &[Arrived],
    at: DateTime<Utc>,
    known_from: DateTime<Utc>,
) -> Vec<tern_planner::Arrival> {
    let window = tern_store::ARRIVALS_WINDOW;
    let days = features::arrival_days(at, Some(known_from));
    let mut counts: BTreeMap<(&str, &[String]), u32> = BTreeMap::new();
    for a in created.iter().filter(|a| a.at > at - window && a.at <= at) {
        *counts.entry((&a.category, &a.channels)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((category, channels), n)| tern_planner::Arrival {
            category: category.to_string(),
            channels: channels.to_vec(),
            per_day: f64::from(n) / days,
        })
        .collect()
}

fn decision(
    d: LoggedDecision,
    histories: &BTreeMap<String, TrainingUser>,
    timezones: &BTreeMap<String, (String, Option<DateTime<Utc>>)>,
    labels: &Labels,
    as_of: DateTime<Utc>,
) -> Decision {
    let decided_at = match (&d.sent, &d.withheld) {
        (Some(s), _) => s.planned_at,
        (None, Some(w)) => w.planned_at,
        (None, None) => d.created_at,
    };
    let history = histories.get(&d.user_id);
    let (timezone, first_seen_at) = timezones
        .get(&d.user_id)
        .cloned()
        .unwrap_or_else(|| ("UTC".to_string(), None));
    let active_days = history.map_or(&[][..], |h| h.active_days.as_slice());
    let messages = history.map_or(&[][..], |h| h.messages.as_slice());
    // The deciding plan counted the user's past sends and, as pending items, the other sends it
    // scheduled beside this one; the sends of the opportunity's lifetime stand for those. (The
    // model's features read only what was sent before the decision.)
    let own = d.sent.as_ref().map(|s| s.message_id);
    let past: Vec<PastSend> = messages
        .iter()
        .filter(|m| {
            m.sent_at >= decided_at - TimeDelta::days(28)
                && m.sent_at < d.expires_at
                && Some(m.message_id) != own
        })
        .map(|m| PastSend {
            channel: m.channel.clone(),
            category: m.category.clone(),
            priority: m.priority.clone(),
            sent_at: m.sent_at,
            opened_at: m
                .outcomes
                .iter()
                .filter(|(k, t)| {
                    matches!(k, OutcomeKind::Opened | OutcomeKind::Clicked) && *t < decided_at
                })
                .map(|(_, t)| *t)
                .min(),
        })
        .collect();
    let windows = [
        TimeDelta::days(i64::from(labels.conversion_days)),
        TimeDelta::hours(i64::from(labels.engagement_hours)),
        TimeDelta::days(i64::from(labels.retention_days)),
        TimeDelta::days(i64::from(labels.reachability_days)),
    ];
    // One rule of observability for every action: the window after the opportunity's expiry
    // has closed. (Measured from the send, sends would be observable sooner than the
    // decisions that sent nothing, and the recent end of the period would keep more of the
    // latter: a bias towards "nothing".)
    let ready: [bool; 4] = std::array::from_fn(|k| d.expires_at + windows[k] <= as_of);
    let rewards = match &d.sent {
        None => std::array::from_fn(|k| ready[k].then_some(0.0)),
        Some(s) => {
            let outcomes = messages
                .iter()
                .find(|m| m.message_id == s.message_id)
                .map_or(&[][..], |m| m.outcomes.as_slice());
            let t = s.sent_at;
            let within = |kind: fn(OutcomeKind) -> bool, window: TimeDelta| {
                let hit = outcomes
                    .iter()
                    .any(|(k, at)| kind(*k) && *at >= t && *at < t + window && *at < as_of);
                (t + window <= as_of).then_some(f64::from(u8::from(hit)))
            };
            let (kept, observable) = retained(active_days, t, windows[2], as_of);
            let rewards = [
                within(|k| k == OutcomeKind::Converted, windows[0]),
                within(
                    |k| matches!(k, OutcomeKind::Opened | OutcomeKind::Clicked),
                    windows[1],
                ),
                observable.then_some(f64::from(kept)),
                within(OutcomeKind::loses_reachability, windows[3]),
            ];
            std::array::from_fn(|k| rewards[k].filter(|_| ready[k]))
        }
    };
    Decision {
        user: UserInput {
            user_id: d.user_id.clone(),
            activity: features::activity_as_of(first_seen_at, active_days, decided_at),
            arrivals: Vec::new(),
            timezone,
            arm: None,
            send_time_profile: Vec::new(),
            opted_out_channels: Vec::new(),
            unreachable_channels: Vec::new(),
            opted_out_categories: Vec::new(),
            history: past,
            opportunities: vec![OpportunityInput {
                id: d.opportunity_id,
                category: d.category,
                priority: d.priority,
                channels: d.channels,
                created_at: d.created_at,
                expires_at: d.expires_at,
                template: d.template,
                scores: Vec::new(),
                signals: d.signals,
            }],
        },
        decided_at,
        logged: d.sent.map(|s| Sent {
            channel: s.channel,
            propensity: s.propensity,
        }),
        unsent_propensity: d.withheld.map_or(1.0, |w| w.propensity),
        rewards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_daemon::predict::Prior;

    /// A replayed plan reads the arrivals the daemon's plan read: the week before the decision,
    /// per kind and per day, over the part of the week the log covers.
    #[test]
    fn arrivals_are_the_week_before_the_decision_per_kind_and_day() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let a = |at: &str, category: &str| Arrived {
            at: t(at),
            category: category.into(),
            channels: vec!["push".into()],
        };
        let created = [
            a("2026-03-01T00:00:00Z", "social"),
            a("2026-03-05T00:00:00Z", "social"),
            a("2026-03-09T00:00:00Z", "social"),
            a("2026-03-09T01:00:00Z", "content"),
            a("2026-03-10T00:00:00Z", "social"),
        ];
        let got = arrivals(
            &created,
            t("2026-03-09T12:00:00Z"),
            t("2026-02-01T00:00:00Z"),
        );
        let per_day = |c: &str| got.iter().find(|x| x.category == c).map(|x| x.per_day);
        assert_eq!(per_day("social"), Some(2.0 / 7.0), "{got:?}");
        assert_eq!(per_day("content"), Some(1.0 / 7.0));
        // Two days of log: the same counts over two days.
        let short = arrivals(
            &created,
            t("2026-03-09T12:00:00Z"),
            t("2026-03-07T12:00:00Z"),
        );
        assert_eq!(
            short
                .iter()
                .find(|x| x.category == "social")
                .unwrap()
                .per_day,
            1.0
        );
    }

    fn decision(channels: &[&str], logged: Option<(&str, f64)>, reward: f64) -> Decision {
        let at = Utc::now();
        Decision {
            user: UserInput {
                user_id: "u".into(),
                timezone: "UTC".into(),
                arm: None,
                send_time_profile: vec![],
                opted_out_channels: vec![],
                unreachable_channels: vec![],
                opted_out_categories: vec![],
                history: vec![],
                opportunities: vec![OpportunityInput {
                    id: 1,
                    category: "content".into(),
                    priority: "normal".into(),
                    channels: channels.iter().map(|c| c.to_string()).collect(),
                    created_at: at,
                    expires_at: at + TimeDelta::hours(6),
                    template: "t".into(),
                    scores: vec![],
                    signals: BTreeMap::new(),
                }],
                activity: Default::default(),
                arrivals: Vec::new(),
            },
            decided_at: at,
            logged: logged.map(|(channel, propensity)| Sent {
                channel: channel.into(),
                propensity,
            }),
            unsent_propensity: 1.0,
            rewards: [Some(reward), Some(reward), None, Some(0.0)],
        }
    }

    fn replayed(channel: Option<usize>, engagement: &[f64]) -> Replayed {
        Replayed {
            channel,
            send_after: None,
            suppressed: vec![],
            predicted: engagement
                .iter()
                .map(|e| Scores {
                    engagement: *e,
                    ..Scores::default()
                })
                .collect(),
        }
    }

    /// Five decisions: the candidate repeats a randomised send, switches a randomised one to
    /// another channel, switches a deterministic one, sends where nothing was sent, and sends
    /// where a send was withheld at random.
    #[test]
    fn rows_carry_the_candidates_probability_the_direct_method_and_the_support() {
        let decisions = vec![
            decision(&["push", "email"], Some(("push", 0.8)), 1.0),
            decision(&["push", "email"], Some(("push", 0.1)), 0.0),
            decision(&["push", "email"], Some(("email", 1.0)), 1.0),
            decision(&["push"], None, 0.0),
            Decision {
                unsent_propensity: 0.05,
                ..decision(&["push"], None, 0.0)
            },
        ];
        let replays = vec![
            replayed(Some(0), &[0.6, 0.3]),
            replayed(Some(1), &[0.2, 0.4]),
            replayed(Some(0), &[0.5, 0.7]),
            replayed(Some(0), &[0.9]),
            replayed(Some(0), &[0.3]),
        ];
        let rows = rows(&decisions, &replays, 1);
        let got: Vec<(f64, f64, f64, f64, f64, f64)> = rows
            .iter()
            .map(|l| {
                (
                    l.propensity,
                    l.target,
                    l.reward,
                    l.predicted_logged,
                    l.predicted_target,
                    l.unsupported,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0.8, 1.0, 1.0, 0.6, 0.6, 0.0),
                // Another channel than a randomised decision's: supported, weight 0.
                (0.1, 0.0, 0.0, 0.2, 0.4, 0.0),
                // Another channel than a deterministic decision's: no support.
                (1.0, 0.0, 1.0, 0.7, 0.5, 1.0),
                // A send where nothing was sent: no support; the logged "nothing" predicts 0.
                (1.0, 0.0, 0.0, 0.0, 0.9, 1.0),
                // A send where one was withheld at random: supported, weight 0.
                (0.05, 0.0, 0.0, 0.0, 0.3, 0.0),
            ]
        );
        // IPS by hand: (1/0.8·1 + 0 + 0 + 0 + 0) / 5.
        let e = tern_ope::evaluate(&rows, Bootstrap::default()).unwrap();
        assert!((e.ips.value - 1.25 / 5.0).abs() < 1e-12);
        assert!((e.unsupported - 0.4).abs() < 1e-12);
        assert!(!e.warnings().is_empty());
        // Retention is unobserved on every decision here: no rows, no estimate.
        assert!(super::rows(&decisions, &replays, 2).is_empty());
    }

    /// The example bundle, with its `retention-heavy` objective (an experiment arm's) valuing
    /// sends incrementally while the default objective values outcomes.
    fn bundle_with_an_incremental_arm() -> Bundle {
        let files: Vec<tern_policy::SourceFile> = tern_policy::example::FILES
            .iter()
            .map(|(name, text)| {
                let text = if *name == "objectives.yaml" {
                    text.replace("  horizon: 56d", "  horizon: 56d\n  value: incremental")
                } else {
                    text.to_string()
                };
                tern_policy::SourceFile {
                    path: std::path::Path::new("example").join(name),
                    bytes: text.into_bytes(),
                }
            })
            .collect();
        Bundle::from_files(std::path::Path::new("example"), &files).unwrap()
    }

    #[test]
    fn each_users_sends_are_valued_in_their_arms_mode() {
        let bundle = bundle_with_an_incremental_arm();
        let decisions: Vec<Decision> = (0..400)
            .map(|i| {
                let mut d = decision(&["push", "email"], None, 0.0);
                d.user.user_id = format!("user-{i}");
                d
            })
            .collect();
        let seen = std::sync::Mutex::new(Modes::new());
        let scorer = |_, modes: &Modes| {
            seen.lock().unwrap().extend(modes.clone());
            Box::new(Prior) as Box<dyn Predictor>
        };
        let prior = |_, _: &Modes| Box::new(Prior) as Box<dyn Predictor>;
        replay(&bundle, &decisions, &scorer, &prior).unwrap();
        // The retention-heavy arm's users in incremental mode, the long-term arm's (the
        // example's own `value: longTerm`) in theirs; everyone else in the default's.
        let objective = |d: &Decision| {
            tern_daemon::translate::effective_arm(&bundle, &d.user.user_id)
                .and_then(|(_, arm)| arm.objective.clone())
        };
        let expected: BTreeMap<String, tern_policy::ValueMode> = decisions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let mode = match objective(d).as_deref() {
                    Some("retention-heavy") => tern_policy::ValueMode::Incremental,
                    Some("long-term") => tern_policy::ValueMode::LongTerm,
                    _ => return None,
                };
                Some((format!("{i:010}"), mode))
            })
            .collect();
        let seen = seen.into_inner().unwrap();
        let incremental = expected
            .values()
            .filter(|m| **m == tern_policy::ValueMode::Incremental)
            .count();
        assert!(incremental > 50, "{incremental} users in the arm");
        assert!(expected.len() > incremental, "some in the long-term arm");
        assert_eq!(seen.into_iter().collect::<BTreeMap<_, _>>(), expected);
    }

    #[test]
    fn the_example_bundle_replays_each_decision_once_and_never_sends_to_holdouts_by_mistake() {
        let bundle = tern_policy::example::without_experiments(None).unwrap();
        let decisions: Vec<Decision> = (0..50)
            .map(|i| {
                let mut d = decision(&["push", "email", "in_app"], None, 0.0);
                d.user.user_id = format!("user-{i}");
                d.user.opportunities[0]
                    .signals
                    .insert("relevance".into(), f64::from(i) / 50.0);
                d
            })
            .collect();
        let prior = |_, _: &Modes| Box::new(Prior) as Box<dyn Predictor>;
        let replays = replay(&bundle, &decisions, &prior, &prior).unwrap();
        assert_eq!(replays.len(), decisions.len());
        // The prior scores rise with relevance, so the candidate sends the relevant half.
        let sends: Vec<bool> = replays.iter().map(|r| r.channel.is_some()).collect();
        assert!(!sends[0] && sends[49], "{sends:?}");
        assert!(replays.iter().all(|r| r.predicted.len() == 3));
        assert!(replays
            .iter()
            .filter(|r| r.channel.is_none())
            .all(|r| r.suppressed.contains(&"below_min_value")));
    }
}
