//! An experiment report's numbers: an experiment's arms side by side, the differences against
//! control with confidence intervals (raw and CUPED-adjusted), the sample-ratio check, the
//! guardrails, and a verdict per arm under a decision rule the report states.
//!
//! Three parts, kept apart so that the numbers can be tested on plain data:
//! - the store reads one row per assigned user ([`tern_store::ExperimentUser`]), and
//!   [`recorded_arms`] the arms of the policy version that assigned them;
//! - [`compute`] turns those rows and the experiment's arms into a [`Report`] (no IO);
//! - [`render_text`], [`render_markdown`] and [`render_json`] print it.
//!
//! docs/experiments.md defines every metric and JSON field.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use tern_core::OutcomeKind;
use tern_ope::experiment::{cuped, difference, sample_ratio, Difference};
use tern_store::ExperimentUser;

use crate::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

/// A per-user metric, measured over the user's window `[first_planned_at, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Messages sent, on every channel.
    Messages,
    /// `delivered` outcomes.
    Delivered,
    /// `opened` outcomes.
    Opened,
    /// `clicked` outcomes.
    Clicked,
    /// `converted` outcomes.
    Converted,
    /// `bounced` outcomes.
    Bounced,
    /// `complained` outcomes.
    Complained,
    /// 1 when the user lost a channel (unsubscribed, push disabled or complained), else 0.
    Unsubscribed,
    /// Active days over the days observed.
    ActiveDaysShare,
    /// 1 when the user was active on any of the last --retention-days days, else 0.
    Retained,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::Messages,
        Metric::Delivered,
        Metric::Opened,
        Metric::Clicked,
        Metric::Converted,
        Metric::Bounced,
        Metric::Complained,
        Metric::Unsubscribed,
        Metric::ActiveDaysShare,
        Metric::Retained,
    ];

    /// The guardrails when none is given: losing users' channels must not get worse.
    pub const DEFAULT_GUARDRAILS: [Metric; 2] = [Metric::Unsubscribed, Metric::Complained];

    /// Every metric's name, as the command line and the JSON write it.
    pub const NAMES: [&'static str; 10] = [
        "messages",
        "delivered",
        "opened",
        "clicked",
        "converted",
        "bounced",
        "complained",
        "unsubscribed",
        "active_days_share",
        "retained",
    ];

    /// The metric of a name in [`Metric::NAMES`].
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Messages => "messages",
            Metric::Delivered => "delivered",
            Metric::Opened => "opened",
            Metric::Clicked => "clicked",
            Metric::Converted => "converted",
            Metric::Bounced => "bounced",
            Metric::Complained => "complained",
            Metric::Unsubscribed => "unsubscribed",
            Metric::ActiveDaysShare => "active_days_share",
            Metric::Retained => "retained",
        }
    }

    /// How many days before `until` the metric looks back, when it looks back beyond the
    /// user's own window: `retained` asks about the last `--retention-days` days.
    fn window_days(self, options: &Options) -> Option<u32> {
        match self {
            Metric::Retained => Some(options.retention_days),
            _ => None,
        }
    }

    /// Which way is good. Messages are a cost (each one spends the user's attention), and the
    /// reachability losses are harms; everything else is wanted.
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Metric::Messages | Metric::Bounced | Metric::Complained | Metric::Unsubscribed
        )
    }

    /// The user's value, `days_observed` being the user's whole days in the window (at least 1).
    fn value(self, user: &ExperimentUser, days_observed: u32) -> f64 {
        let outcome = |kind: OutcomeKind| user.outcomes.get(kind.as_str()).copied().unwrap_or(0);
        match self {
            Metric::Messages => user.messages.values().sum::<u64>() as f64,
            Metric::Delivered => outcome(OutcomeKind::Delivered) as f64,
            Metric::Opened => outcome(OutcomeKind::Opened) as f64,
            Metric::Clicked => outcome(OutcomeKind::Clicked) as f64,
            Metric::Converted => outcome(OutcomeKind::Converted) as f64,
            Metric::Bounced => outcome(OutcomeKind::Bounced) as f64,
            Metric::Complained => outcome(OutcomeKind::Complained) as f64,
            Metric::Unsubscribed => f64::from(u8::from(user.lost_reach)),
            Metric::ActiveDaysShare => f64::from(user.active_days) / f64::from(days_observed),
            Metric::Retained => f64::from(u8::from(user.retained)),
        }
    }
}

/// One arm as the policy bundle declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSpec {
    pub name: String,
    pub share: f64,
    pub holdout: bool,
}

/// What a report is asked for, besides the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub until: DateTime<Utc>,
    pub level: f64,
    /// `None`: `control`, else the first non-holdout arm.
    pub control: Option<String>,
    pub primary: Metric,
    /// Empty: [`Metric::DEFAULT_GUARDRAILS`].
    pub guardrails: Vec<Metric>,
    pub retention_days: u32,
    pub pre_days: u32,
}

/// The whole report, as `--format json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub experiment: String,
    pub until: String,
    pub level: f64,
    pub control: String,
    pub primary: &'static str,
    pub guardrails: Vec<&'static str>,
    pub retention_days: u32,
    pub pre_days: u32,
    pub decision_rule: String,
    /// Assigned users over all arms (switchers included).
    pub users: u64,
    pub arms: Vec<ArmReport>,
    pub comparisons: Vec<Comparison>,
    pub sample_ratio: SampleRatioReport,
    pub verdicts: Vec<Verdict>,
    /// Loud problems (a sample-ratio mismatch).
    pub warnings: Vec<String>,
    /// What the reader should know about how the numbers were counted.
    pub notes: Vec<String>,
}

/// A total and its mean over an arm's analysed users (`null` for an arm without any).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Count {
    pub count: u64,
    pub per_user: Option<f64>,
}

impl Count {
    fn new(count: u64, users: u64) -> Count {
        Count {
            count,
            per_user: (users > 0).then(|| count as f64 / users as f64),
        }
    }
}

/// One arm's users and what they got, over its analysed users (switchers left out).
#[derive(Debug, Clone, Serialize)]
pub struct ArmReport {
    pub name: String,
    /// Its share in the bundle; `null` for an arm the bundle no longer has.
    pub share: Option<f64>,
    pub holdout: bool,
    /// Assigned users who never changed arms: the ones every number below is about.
    pub users: u64,
    /// Assigned users who changed arms (counted here under their current arm), left out of
    /// every metric and comparison because they saw two arms.
    pub switched_users: u64,
    pub messages: Count,
    pub messages_by_channel: BTreeMap<String, Count>,
    /// What holdout users would have been sent: counterfactual items whose send window opened.
    pub would_be_messages: Count,
    pub would_be_messages_by_channel: BTreeMap<String, Count>,
    /// Every outcome kind, of the messages sent in the window.
    pub outcomes: BTreeMap<&'static str, Count>,
    /// Each metric's mean over the analysed users.
    pub metrics: BTreeMap<&'static str, Option<f64>>,
    /// The CUPED covariate's mean: active days in the pre-period.
    pub pre_active_days: Option<f64>,
}

/// An interval; `null` bounds when an arm has fewer than two users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub delta: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

impl From<Difference> for Interval {
    fn from(d: Difference) -> Interval {
        Interval {
            delta: finite(d.delta),
            low: finite(d.low),
            high: finite(d.high),
        }
    }
}

impl Interval {
    fn width(&self) -> Option<f64> {
        Some(self.high? - self.low?)
    }

    /// Which side of zero the interval lies on entirely, if either.
    fn side(&self) -> Side {
        match (self.low, self.high) {
            (Some(low), _) if low > 0.0 => Side::Above,
            (_, Some(high)) if high < 0.0 => Side::Below,
            _ => Side::Straddles,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Above,
    Below,
    Straddles,
}

/// One metric of one arm against control.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub arm: String,
    pub metric: &'static str,
    /// `primary`, `guardrail` or `secondary`.
    pub role: &'static str,
    /// `higher` or `lower`: which way is good.
    pub better: &'static str,
    pub control_mean: Option<f64>,
    pub treatment_mean: Option<f64>,
    /// Treatment minus control, with the Welch interval.
    pub raw: Interval,
    /// The same after CUPED (pre-period active days as the covariate).
    pub cuped: Interval,
    /// `1 − CUPED width / raw width`: the share of the interval CUPED removed.
    pub narrowed: Option<f64>,
    /// From the CUPED interval: `better`, `worse` or `no difference`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleRatioReport {
    pub chi_square: f64,
    pub p_value: f64,
    /// p < 0.001: the assignment or its logging is broken; no difference can be trusted.
    pub mismatch: bool,
    /// Per arm of the bundle: assigned users (switchers included) and the expected share.
    pub arms: Vec<SampleRatioArm>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleRatioArm {
    pub arm: String,
    pub users: u64,
    pub expected_share: f64,
    pub observed_share: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VerdictKind {
    #[serde(rename = "ship")]
    Ship,
    #[serde(rename = "keep control")]
    KeepControl,
    #[serde(rename = "inconclusive")]
    Inconclusive,
    #[serde(rename = "do not trust (SRM)")]
    DoNotTrust,
    /// The primary metric's window is longer than the experiment has run.
    #[serde(rename = "too early")]
    TooEarly,
}

impl VerdictKind {
    fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Ship => "ship",
            VerdictKind::KeepControl => "keep control",
            VerdictKind::Inconclusive => "inconclusive",
            VerdictKind::DoNotTrust => "do not trust (SRM)",
            VerdictKind::TooEarly => "too early",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub arm: String,
    pub verdict: VerdictKind,
    pub reason: String,
}

/// The experiment's arms as the policy version that last assigned its users declared them, and a
/// note saying where they came from when that differs from `--policies`. Falls back to
/// `--policies` when no recorded version declares the experiment.
pub async fn recorded_arms(
    store: &tern_store::Store,
    experiment: &str,
    until: DateTime<Utc>,
    working: Vec<ArmSpec>,
    policies: &std::path::Path,
) -> Result<(Vec<ArmSpec>, Vec<String>)> {
    let versions = store.experiment_policy_versions(experiment, until).await?;
    let mut notes = Vec::new();
    let mut recorded: Vec<(String, Vec<ArmSpec>)> = Vec::new();
    for (version, _) in &versions {
        if let Some(v) = store.policy_version(version).await? {
            if let Some(arms) = arms_in(&v.bundle, experiment) {
                recorded.push((version.clone(), arms));
            }
        }
    }
    let Some((latest, arms)) = recorded.first().cloned() else {
        return Ok((working, notes));
    };
    let short = |v: &str| v.get(..12).unwrap_or(v).to_string();
    if recorded.iter().any(|(_, a)| *a != arms) {
        let list: Vec<String> = recorded
            .iter()
            .map(|(v, a)| {
                let shares: Vec<String> = a
                    .iter()
                    .map(|x| format!("{} {}", x.name, x.share))
                    .collect();
                format!("{} ({})", short(v), shares.join(", "))
            })
            .collect();
        notes.push(format!(
            "the arms changed while users were assigned: {}; the sample-ratio check uses the latest",
            list.join("; ")
        ));
    }
    if arms != working {
        notes.push(format!(
            "arm shares are those of policy version {}, which assigned the users; {} declares different arms",
            short(&latest),
            policies.display()
        ));
    }
    Ok((arms, notes))
}

/// An experiment's arms in a recorded bundle's canonical JSON.
fn arms_in(bundle: &serde_json::Value, experiment: &str) -> Option<Vec<ArmSpec>> {
    let doc = bundle["documents"].as_array()?.iter().find(|d| {
        d["kind"] == "Experiment" && d["metadata"]["name"].as_str() == Some(experiment)
    })?;
    doc["spec"]["arms"]
        .as_array()?
        .iter()
        .map(|a| {
            Some(ArmSpec {
                name: a["name"].as_str()?.to_string(),
                share: a["share"].as_f64()?,
                holdout: a["holdout"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

impl Options {
    /// Rejects options no report can be computed with.impl Options {
    /// Rejects options no report can be computed with.
    pub fn check(&self) -> Result<()> {
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(Error::Invalid(format!(
                "--level must be between 0 and 1 (e.g. 0.95), got {}",
                self.level
            )));
        }
        if self.retention_days == 0 {
            return Err(Error::Invalid("--retention-days must be at least 1".into()));
        }
        Ok(())
    }

    fn guardrails(&self) -> Vec<Metric> {
        let mut g = if self.guardrails.is_empty() {
            Metric::DEFAULT_GUARDRAILS.to_vec()
        } else {
            self.guardrails.clone()
        };
        g.sort();
        g.dedup();
        g
    }
}

/// `0.95` as `95%`, `0.975` as `97.5%`.
fn percent(level: f64) -> String {
    let p = level * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round())
    } else {
        format!("{}%", (p * 10.0).round() / 10.0)
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Whole days from the first planned day to `until`'s day, at least 1.
fn days_observed(user: &ExperimentUser, until: DateTime<Utc>) -> u32 {
    let days = (until.date_naive() - user.first_planned_at.date_naive()).num_days();
    u32::try_from(days.max(1)).unwrap_or(u32::MAX)
}

/// The decision rule, in words, as every format states it.
pub fn decision_rule(options: &Options) -> String {
    let level = percent(options.level);
    let primary = options.primary;
    let side = if primary.higher_is_better() {
        "above"
    } else {
        "below"
    };
    let guardrails: Vec<&str> = options.guardrails().iter().map(|m| m.name()).collect();
    format!(
        "ship an arm if the CUPED {level} interval of its difference from control in {} lies \
         entirely {side} 0, no guardrail's ({}) CUPED {level} interval lies entirely on its \
         harmful side, and the sample ratio matches (p >= 0.001); keep control if the primary \
         metric's interval lies entirely on its harmful side or a guardrail's does; otherwise \
         inconclusive. A sample-ratio mismatch makes every verdict \"do not trust (SRM)\"; \
         a primary metric that looks back further than the experiment has run (retained) gives \
         \"too early\".",
        primary.name(),
        guardrails.join(", ")
    )
}

/// The arm the others are compared with: `requested`, which must be one of the arms; else the
/// arm named `control`; else the first arm that is not a holdout (comparing with a holdout would
/// ask whether sending anything helps, which is a question to ask on purpose).
pub fn control_arm(experiment: &str, arms: &[ArmSpec], requested: Option<&str>) -> Result<String> {
    let Some(first) = arms.first() else {
        return Err(Error::Invalid(format!(
            "experiment {experiment:?} has no arms"
        )));
    };
    match requested {
        Some(name) => match arms.iter().find(|a| a.name == name) {
            Some(a) => Ok(a.name.clone()),
            None => Err(Error::Invalid(format!(
                "experiment {experiment:?} has no arm {name:?}; its arms: {}",
                arms.iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
        None => Ok(arms
            .iter()
            .find(|a| a.name == "control")
            .or_else(|| arms.iter().find(|a| !a.holdout))
            .unwrap_or(first)
            .name
            .clone()),
    }
}

/// The report, from the experiment's arms and its assigned users. No IO.
pub fn compute(
    experiment: &str,
    arms: &[ArmSpec],
    users: &[ExperimentUser],
    options: &Options,
) -> Result<Report> {
    options.check()?;
    let control = control_arm(experiment, arms, options.control.as_deref())?;
    let guardrails = options.guardrails();

    // The bundle's arms in their written order, then any arm users are in that the bundle no
    // longer declares (an arm was removed while users were still assigned to it).
    let mut names: Vec<(String, Option<&ArmSpec>)> =
        arms.iter().map(|a| (a.name.clone(), Some(a))).collect();
    for u in users {
        if !names.iter().any(|(n, _)| n == &u.arm) {
            names.push((u.arm.clone(), None));
        }
    }

    // Per arm: the analysed users, and how many switched.
    let mut analysed: BTreeMap<&str, Vec<&ExperimentUser>> = BTreeMap::new();
    let mut switched: BTreeMap<&str, u64> = BTreeMap::new();
    let mut assigned: BTreeMap<&str, u64> = BTreeMap::new();
    for u in users {
        *assigned.entry(u.arm.as_str()).or_default() += 1;
        if u.arm_changes > 0 {
            *switched.entry(u.arm.as_str()).or_default() += 1;
        } else {
            analysed.entry(u.arm.as_str()).or_default().push(u);
        }
    }
    let empty = Vec::new();
    let members = |arm: &str| analysed.get(arm).unwrap_or(&empty);
    let values = |arm: &str, metric: Metric| -> Vec<f64> {
        members(arm)
            .iter()
            .map(|u| metric.value(u, days_observed(u, options.until)))
            .collect()
    };
    let covariate = |arm: &str| -> Vec<f64> {
        members(arm)
            .iter()
            .map(|u| f64::from(u.pre_active_days))
            .collect()
    };
    let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);

    let arm_reports: Vec<ArmReport> = names
        .iter()
        .map(|(name, spec)| {
            let group = members(name);
            let n = group.len() as u64;
            let sum_maps = |pick: &dyn Fn(&ExperimentUser) -> &BTreeMap<String, u64>| {
                let mut total: BTreeMap<String, u64> = BTreeMap::new();
                for u in group {
                    for (k, v) in pick(u) {
                        *total.entry(k.clone()).or_default() += v;
                    }
                }
                total
            };
            let by_channel = sum_maps(&|u| &u.messages);
            let withheld = sum_maps(&|u| &u.withheld);
            let outcomes = sum_maps(&|u| &u.outcomes);
            ArmReport {
                name: name.clone(),
                share: spec.map(|s| s.share),
                holdout: spec.is_some_and(|s| s.holdout),
                users: n,
                switched_users: switched.get(name.as_str()).copied().unwrap_or(0),
                messages: Count::new(by_channel.values().sum(), n),
                messages_by_channel: by_channel
                    .iter()
                    .map(|(c, v)| (c.clone(), Count::new(*v, n)))
                    .collect(),
                would_be_messages: Count::new(withheld.values().sum(), n),
                would_be_messages_by_channel: withheld
                    .iter()
                    .map(|(c, v)| (c.clone(), Count::new(*v, n)))
                    .collect(),
                outcomes: OutcomeKind::ALL
                    .iter()
                    .map(|k| {
                        let count = outcomes.get(k.as_str()).copied().unwrap_or(0);
                        (k.as_str(), Count::new(count, n))
                    })
                    .collect(),
                metrics: Metric::ALL
                    .iter()
                    .map(|m| (m.name(), mean(&values(name, *m))))
                    .collect(),
                pre_active_days: mean(&covariate(name)),
            }
        })
        .collect();

    // Every declared arm but control, against control, on every metric.
    let mut comparisons = Vec::new();
    let treatments: Vec<&ArmSpec> = arms.iter().filter(|a| a.name != control).collect();
    for arm in &treatments {
        let (xc, xt) = (covariate(&control), covariate(&arm.name));
        let x: Vec<f64> = xc.iter().chain(&xt).copied().collect();
        for metric in Metric::ALL {
            let (yc, yt) = (values(&control, metric), values(&arm.name, metric));
            let raw = difference(&yc, &yt, options.level);
            // θ over both arms' units together, so that the adjustment is the same function of
            // the covariate in each arm and the difference of means is unchanged.
            let y: Vec<f64> = yc.iter().chain(&yt).copied().collect();
            let adjusted = cuped(&y, &x);
            let (ac, at) = adjusted.split_at(yc.len());
            let adj = Interval::from(difference(ac, at, options.level));
            let raw_interval = Interval::from(raw);
            let narrowed = match (raw_interval.width(), adj.width()) {
                (Some(r), Some(a)) if r > 0.0 => Some(1.0 - a / r),
                _ => None,
            };
            let result = match (adj.side(), metric.higher_is_better()) {
                (Side::Above, true) | (Side::Below, false) => "better",
                (Side::Above, false) | (Side::Below, true) => "worse",
                (Side::Straddles, _) => "no difference",
            };
            comparisons.push(Comparison {
                arm: arm.name.clone(),
                metric: metric.name(),
                role: if metric == options.primary {
                    "primary"
                } else if guardrails.contains(&metric) {
                    "guardrail"
                } else {
                    "secondary"
                },
                better: if metric.higher_is_better() {
                    "higher"
                } else {
                    "lower"
                },
                control_mean: mean(&yc),
                treatment_mean: mean(&yt),
                raw: raw_interval,
                cuped: adj,
                narrowed,
                result,
            });
        }
    }

    // The sample ratio, over every assigned user: whether a user switched says nothing about
    // whether the assignment itself is skewed, and the current arms follow the current shares.
    let observed: Vec<u64> = arms
        .iter()
        .map(|a| assigned.get(a.name.as_str()).copied().unwrap_or(0))
        .collect();
    let shares: Vec<f64> = arms.iter().map(|a| a.share).collect();
    let in_bundle: u64 = observed.iter().sum();
    let share_sum: f64 = shares.iter().sum();
    let srm = if in_bundle == 0 {
        tern_ope::experiment::SampleRatio {
            chi_square: 0.0,
            p_value: 1.0,
        }
    } else {
        sample_ratio(&observed, &shares)
    };
    let sample_ratio = SampleRatioReport {
        chi_square: srm.chi_square,
        p_value: srm.p_value,
        mismatch: srm.mismatch(),
        arms: arms
            .iter()
            .zip(&observed)
            .map(|(a, n)| SampleRatioArm {
                arm: a.name.clone(),
                users: *n,
                expected_share: a.share / share_sum,
                observed_share: (in_bundle > 0).then(|| *n as f64 / in_bundle as f64),
            })
            .collect(),
    };

    // A metric measured over a window longer than the experiment has run mixes in what users
    // did before it started: no verdict can rest on it yet.
    let started = users.iter().map(|u| u.first_planned_at).min();
    let too_early = match (options.primary.window_days(options), started) {
        (Some(window), Some(started)) if options.until - started < TimeDelta::days(i64::from(window)) => {
            Some(format!(
                "{} is measured over {window} days, but the experiment has run {:.1} days (since {}); a verdict is possible from {}",
                options.primary.name(),
                (options.until - started).num_seconds() as f64 / 86_400.0,
                started.to_rfc3339_opts(SecondsFormat::Secs, true),
                (started + TimeDelta::days(i64::from(window))).to_rfc3339_opts(SecondsFormat::Secs, true)
            ))
        }
        _ => None,
    };
    let verdicts = treatments
        .iter()
        .map(|arm| {
            verdict(
                &arm.name,
                &comparisons,
                options.primary,
                sample_ratio.mismatch,
                too_early.as_deref(),
            )
        })
        .collect();

    let total_switched: u64 = switched.values().sum();
    let mut notes = Vec::new();
    if total_switched > 0 {
        notes.push(format!(
            "{total_switched} user(s) changed arms (a share, salt or layer changed) and saw two \
             arms: counted under their current arm, left out of every metric and comparison"
        ));
    }
    let orphans: Vec<String> = names
        .iter()
        .filter(|(_, spec)| spec.is_none())
        .map(|(n, _)| format!("{n} ({})", assigned.get(n.as_str()).copied().unwrap_or(0)))
        .collect();
    if !orphans.is_empty() {
        notes.push(format!(
            "users are assigned to arms the bundle no longer declares: {}; they are shown but \
             neither compared nor counted in the sample-ratio check",
            orphans.join(", ")
        ));
    }
    if users.is_empty() {
        notes.push(format!(
            "no users were assigned to {experiment} before {}: nothing to compare yet",
            options.until.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    let mut report = Report {
        experiment: experiment.to_string(),
        until: options.until.to_rfc3339_opts(SecondsFormat::Secs, true),
        level: options.level,
        control,
        primary: options.primary.name(),
        guardrails: guardrails.iter().map(|m| m.name()).collect(),
        retention_days: options.retention_days,
        pre_days: options.pre_days,
        decision_rule: decision_rule(options),
        users: users.len() as u64,
        arms: arm_reports,
        comparisons,
        sample_ratio,
        verdicts,
        warnings: Vec::new(),
        notes,
    };
    if report.sample_ratio.mismatch {
        report.warnings.push(srm_warning(&report));
    }
    Ok(report)
}

/// One arm's verdict under [`decision_rule`].
fn verdict(
    arm: &str,
    comparisons: &[Comparison],
    primary: Metric,
    srm: bool,
    too_early: Option<&str>,
) -> Verdict {
    let of_arm = || comparisons.iter().filter(|c| c.arm == arm);
    let describe = |c: &Comparison| {
        format!(
            "{} {} {}",
            c.metric,
            signed(c.cuped.delta),
            interval(c.cuped.low, c.cuped.high)
        )
    };
    if srm {
        return Verdict {
            arm: arm.to_string(),
            verdict: VerdictKind::DoNotTrust,
            reason: "the arms' sizes do not match their shares; find out why before reading any \
                     difference"
                .into(),
        };
    }
    if let Some(why) = too_early {
        return Verdict {
            arm: arm.to_string(),
            verdict: VerdictKind::TooEarly,
            reason: why.to_string(),
        };
    }
    let harmed: Vec<String> = of_arm()
        .filter(|c| c.role == "guardrail" && c.result == "worse")
        .map(&describe)
        .collect();
    let Some(p) = of_arm().find(|c| c.metric == primary.name()) else {
        return Verdict {
            arm: arm.to_string(),
            verdict: VerdictKind::Inconclusive,
            reason: "no comparison on the primary metric".into(),
        };
    };
    let (kind, reason) = if !harmed.is_empty() {
        (
            VerdictKind::KeepControl,
            format!("guardrail worse than control: {}", harmed.join("; ")),
        )
    } else {
        match p.result {
            "better" => (
                VerdictKind::Ship,
                format!("{} better than control; guardrails hold", describe(p)),
            ),
            "worse" => (
                VerdictKind::KeepControl,
                format!("{} worse than control", describe(p)),
            ),
            _ => (
                VerdictKind::Inconclusive,
                format!("{}: the interval includes 0", describe(p)),
            ),
        }
    };
    Verdict {
        arm: arm.to_string(),
        verdict: kind,
        reason,
    }
}

pub fn srm_warning(report: &Report) -> String {
    let sizes: Vec<String> = report
        .sample_ratio
        .arms
        .iter()
        .map(|a| {
            format!(
                "{} {} (expected {:.1}%)",
                a.arm,
                a.users,
                a.expected_share * 100.0
            )
        })
        .collect();
    format!(
        "SAMPLE RATIO MISMATCH in experiment {}: {} (chi-square {:.2}, p = {:.2e}). The \
         assignment or its logging is broken; do not trust this report.",
        report.experiment,
        sizes.join(", "),
        report.sample_ratio.chi_square,
        report.sample_ratio.p_value
    )
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(x) => format!("{x:.3}"),
        None => "-".into(),
    }
}

fn signed(x: Option<f64>) -> String {
    match x {
        Some(x) => format!("{x:+.3}"),
        None => "-".into(),
    }
}

fn interval(low: Option<f64>, high: Option<f64>) -> String {
    match (low, high) {
        (Some(l), Some(h)) => format!("[{l:.3}, {h:.3}]"),
        _ => "[-inf, inf]".into(),
    }
}

fn count(c: &Count) -> String {
    format!("{} ({})", c.count, num(c.per_user))
}

/// A table, rendered aligned for a terminal or as Markdown.
struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// How many leading columns hold words (left-aligned); the rest hold numbers.
    left: usize,
}

impl Table {
    fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            left: 1,
        }
    }

    fn left(mut self, columns: usize) -> Table {
        self.left = columns;
        self
    }

    /// Words left-aligned, numbers right-aligned.
    fn text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i < self.left {
                        format!("{c:<w$}", w = widths[i])
                    } else {
                        format!("{c:>w$}", w = widths[i])
                    }
                })
                .collect();
            parts.join("  ").trim_end().to_string()
        };
        let mut out = format!("{}\n{}\n", self.title, line(&self.header));
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        let escape = |c: &String| c.replace('|', "\\|");
        let mut out = format!("### {}\n\n", self.title);
        let header: Vec<String> = self.header.iter().map(escape).collect();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let align: Vec<&str> = (0..self.header.len())
            .map(|i| if i < self.left { "---" } else { "---:" })
            .collect();
        let _ = writeln!(out, "| {} |", align.join(" | "));
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(escape).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// The report's tables, shared by the text and Markdown renderers.
fn tables(report: &Report) -> Vec<Table> {
    let mut tables = Vec::new();

    let mut arms = Table::new(
        "arms",
        &[
            "arm",
            "share",
            "holdout",
            "users",
            "switched (excluded)",
            "pre-period active days",
        ],
    );
    for a in &report.arms {
        arms.rows.push(vec![
            a.name.clone(),
            a.share
                .map_or("not in bundle".into(), |s| format!("{s:.3}")),
            if a.holdout { "yes" } else { "no" }.into(),
            a.users.to_string(),
            a.switched_users.to_string(),
            num(a.pre_active_days),
        ]);
    }
    tables.push(arms);

    let channels: Vec<&String> = {
        let mut c: Vec<&String> = report
            .arms
            .iter()
            .flat_map(|a| a.messages_by_channel.keys())
            .collect();
        c.sort();
        c.dedup();
        c
    };
    let mut header = vec!["arm", "all channels"];
    header.extend(channels.iter().map(|c| c.as_str()));
    let mut messages = Table::new("messages: count (per user)", &header);
    for a in &report.arms {
        let mut row = vec![a.name.clone(), count(&a.messages)];
        row.extend(channels.iter().map(|c| {
            a.messages_by_channel
                .get(*c)
                .map_or_else(|| count(&Count::new(0, a.users)), count)
        }));
        messages.rows.push(row);
    }
    tables.push(messages);

    if report
        .arms
        .iter()
        .any(|a| a.holdout || a.would_be_messages.count > 0)
    {
        let channels: Vec<&String> = {
            let mut c: Vec<&String> = report
                .arms
                .iter()
                .flat_map(|a| a.would_be_messages_by_channel.keys())
                .collect();
            c.sort();
            c.dedup();
            c
        };
        let mut header = vec!["arm", "all channels"];
        header.extend(channels.iter().map(|c| c.as_str()));
        let mut would_be = Table::new(
            "would-be messages of holdout users (withheld): count (per user)",
            &header,
        );
        for a in report
            .arms
            .iter()
            .filter(|a| a.holdout || a.would_be_messages.count > 0)
        {
            let mut row = vec![a.name.clone(), count(&a.would_be_messages)];
            row.extend(channels.iter().map(|c| {
                a.would_be_messages_by_channel
                    .get(*c)
                    .map_or_else(|| count(&Count::new(0, a.users)), count)
            }));
            would_be.rows.push(row);
        }
        tables.push(would_be);
    }

    let mut header = vec!["arm"];
    header.extend(OutcomeKind::ALL.iter().map(|k| k.as_str()));
    let mut outcomes = Table::new("outcomes: count (per user)", &header);
    for a in &report.arms {
        let mut row = vec![a.name.clone()];
        row.extend(
            OutcomeKind::ALL
                .iter()
                .map(|k| a.outcomes.get(k.as_str()).map_or("-".into(), count)),
        );
        outcomes.rows.push(row);
    }
    tables.push(outcomes);

    let mut header = vec!["arm"];
    header.extend(Metric::ALL.iter().map(|m| m.name()));
    let mut metrics = Table::new("metrics: mean per user", &header);
    for a in &report.arms {
        let mut row = vec![a.name.clone()];
        row.extend(
            Metric::ALL
                .iter()
                .map(|m| num(a.metrics.get(m.name()).copied().flatten())),
        );
        metrics.rows.push(row);
    }
    tables.push(metrics);

    let level = percent(report.level);
    let raw_header = format!("raw {level} interval");
    let cuped_header = format!("CUPED {level} interval");
    for arm in report.verdicts.iter().map(|v| &v.arm) {
        let mut table = Table::new(
            format!(
                "{arm} against {} (delta = {arm} − {})",
                report.control, report.control
            ),
            &[
                "metric",
                "role",
                "better",
                &report.control,
                arm,
                "delta",
                &raw_header,
                "CUPED delta",
                &cuped_header,
                "narrowed",
                "result",
            ],
        )
        .left(3);
        for c in report.comparisons.iter().filter(|c| &c.arm == arm) {
            table.rows.push(vec![
                c.metric.into(),
                c.role.into(),
                c.better.into(),
                num(c.control_mean),
                num(c.treatment_mean),
                signed(c.raw.delta),
                interval(c.raw.low, c.raw.high),
                signed(c.cuped.delta),
                interval(c.cuped.low, c.cuped.high),
                c.narrowed
                    .map_or("-".into(), |n| format!("{:.1}%", n * 100.0)),
                c.result.into(),
            ]);
        }
        tables.push(table);
    }

    let mut verdicts = Table::new("verdicts", &["arm", "verdict", "why"]).left(3);
    for v in &report.verdicts {
        verdicts.rows.push(vec![
            v.arm.clone(),
            v.verdict.as_str().into(),
            v.reason.clone(),
        ]);
    }
    tables.push(verdicts);
    tables
}

fn heading(report: &Report) -> String {
    format!(
        "experiment {}: users assigned before {}, control arm {}, {} intervals, primary metric \
         {}, guardrails {}",
        report.experiment,
        report.until,
        report.control,
        percent(report.level),
        report.primary,
        report.guardrails.join(", ")
    )
}

fn sample_ratio_line(report: &Report) -> String {
    let s = &report.sample_ratio;
    format!(
        "sample ratio: chi-square {:.3}, p = {:.4} — {}",
        s.chi_square,
        s.p_value,
        if s.mismatch {
            "MISMATCH (p < 0.001)"
        } else {
            "matches the shares"
        }
    )
}

/// Aligned tables for a terminal, the SRM banner first.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for w in &report.warnings {
        let bar = "!".repeat(78);
        let _ = writeln!(out, "{bar}\n!!! WARNING: {w}\n{bar}\n");
    }
    let _ = writeln!(out, "{}", heading(report));
    if report.users == 0 {
        let _ = writeln!(
            out,
            "no users were assigned to {} before {} yet: nothing to report",
            report.experiment, report.until
        );
        return out;
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for t in tables(report) {
        let _ = writeln!(out, "\n{}", t.text().trim_end());
    }
    let _ = writeln!(out, "\n{}", sample_ratio_line(report));
    let _ = writeln!(out, "decision rule: {}", report.decision_rule);
    out
}

/// Tables for a pull-request comment, the SRM banner first.
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    for w in &report.warnings {
        let _ = writeln!(out, "> [!CAUTION]\n> **WARNING: {w}**\n");
    }
    let _ = writeln!(out, "## Experiment `{}`\n", report.experiment);
    let _ = writeln!(out, "{}\n", heading(report));
    if report.users == 0 {
        let _ = writeln!(
            out,
            "No users were assigned to `{}` before {} yet: nothing to report.",
            report.experiment, report.until
        );
        return out;
    }
    for note in &report.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !report.notes.is_empty() {
        out.push('\n');
    }
    for t in tables(report) {
        let _ = writeln!(out, "{}", t.markdown());
    }
    let _ = writeln!(out, "{}\n", sample_ratio_line(report));
    let _ = writeln!(out, "**Decision rule:** {}", report.decision_rule);
    out
}

/// The report as one pretty-printed JSON object.
pub fn render_json(report: &Report) -> Result<String> {
    serde_json::to_string_pretty(report)
        .map(|json| json + "\n")
        .map_err(|e| Error::Invalid(format!("the report cannot be written as JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn until() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 29, 0, 0, 0).unwrap()
    }

    fn options() -> Options {
        Options {
            until: until(),
            level: 0.95,
            control: None,
            primary: Metric::Retained,
            guardrails: vec![],
            retention_days: 7,
            pre_days: 14,
        }
    }

    fn arms() -> Vec<ArmSpec> {
        vec![
            ArmSpec {
                name: "control".into(),
                share: 0.5,
                holdout: false,
            },
            ArmSpec {
                name: "treatment".into(),
                share: 0.4,
                holdout: false,
            },
            ArmSpec {
                name: "holdout".into(),
                share: 0.1,
                holdout: true,
            },
        ]
    }

    /// A user first planned 10 days before [`until`].
    fn user(id: &str, arm: &str) -> ExperimentUser {
        ExperimentUser {
            user_id: id.into(),
            arm: arm.into(),
            arm_changes: 0,
            first_planned_at: until() - chrono::TimeDelta::days(10),
            messages: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            lost_reach: false,
            withheld: BTreeMap::new(),
            active_days: 0,
            retained: false,
            pre_active_days: 0,
        }
    }

    fn comparison<'a>(report: &'a Report, arm: &str, metric: Metric) -> &'a Comparison {
        report
            .comparisons
            .iter()
            .find(|c| c.arm == arm && c.metric == metric.name())
            .unwrap()
    }

    #[test]
    fn arms_count_messages_outcomes_and_switchers_apart() {
        let mut a = user("a", "control");
        a.messages = BTreeMap::from([("push".into(), 3), ("email".into(), 1)]);
        a.outcomes = BTreeMap::from([("opened".into(), 2), ("unsubscribed".into(), 1)]);
        a.lost_reach = true;
        a.active_days = 5;
        a.retained = true;
        let mut b = user("b", "control");
        b.messages = BTreeMap::from([("push".into(), 1)]);
        let mut switcher = user("s", "control");
        switcher.arm_changes = 1;
        switcher.messages = BTreeMap::from([("push".into(), 100)]);
        let mut h = user("h", "holdout");
        h.withheld = BTreeMap::from([("push".into(), 2)]);
        let report = compute(
            "exp",
            &arms(),
            &[a, b, switcher, h, user("t", "treatment")],
            &options(),
        )
        .unwrap();
        assert_eq!(report.control, "control");
        assert_eq!(report.users, 5);
        let control = &report.arms[0];
        assert_eq!((control.users, control.switched_users), (2, 1));
        assert_eq!(control.messages, Count::new(5, 2));
        assert_eq!(control.messages_by_channel["push"], Count::new(4, 2));
        assert_eq!(control.messages_by_channel["email"].per_user, Some(0.5));
        assert_eq!(control.outcomes["opened"].count, 2);
        assert_eq!(control.outcomes["clicked"], Count::new(0, 2));
        assert_eq!(control.metrics["unsubscribed"], Some(0.5));
        assert_eq!(control.metrics["retained"], Some(0.5));
        // 5 active days over 10 observed, and 0 over 10: 0.25 on average.
        assert_eq!(control.metrics["active_days_share"], Some(0.25));
        let holdout = &report.arms[2];
        assert!(holdout.holdout);
        assert_eq!(
            holdout.would_be_messages_by_channel["push"],
            Count::new(2, 1)
        );
        assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
        assert!(report.notes[0].starts_with("1 user(s) changed arms"));
        // Treatment and holdout, each against control, on every metric.
        assert_eq!(report.comparisons.len(), 2 * Metric::ALL.len());
        let m = comparison(&report, "treatment", Metric::Messages);
        assert_eq!(m.control_mean, Some(2.5));
        assert_eq!(m.raw.delta, Some(-2.5));
        // One treatment user: no interval.
        assert_eq!((m.raw.low, m.raw.high), (None, None));
        assert_eq!(m.result, "no difference");
    }

    /// Builds `n` users of `arm` whose retention follows `retained(i)` and whose pre-period
    /// activity is `pre(i)`.
    fn population(
        arm: &str,
        n: usize,
        retained: impl Fn(usize) -> bool,
        pre: impl Fn(usize) -> u32,
    ) -> Vec<ExperimentUser> {
        (0..n)
            .map(|i| {
                let mut u = user(&format!("{arm}{i}"), arm);
                u.retained = retained(i);
                u.pre_active_days = pre(i);
                u.active_days = pre(i) / 2 + u32::from(u.retained);
                u
            })
            .collect()
    }

    #[test]
    fn a_clear_win_ships_and_cuped_narrows_the_interval() {
        // Retention follows the pre-period closely in both arms; treatment retains more.
        let mut users = population("control", 400, |i| i % 10 < 4, |i| (i % 10) as u32);
        users.extend(population(
            "treatment",
            320,
            |i| i % 10 < 7,
            |i| (i % 10) as u32,
        ));
        users.extend(population(
            "holdout",
            80,
            |i| i % 10 < 4,
            |i| (i % 10) as u32,
        ));
        let report = compute("exp", &arms(), &users, &options()).unwrap();
        assert!(!report.sample_ratio.mismatch, "{:?}", report.sample_ratio);
        let r = comparison(&report, "treatment", Metric::Retained);
        assert_eq!(r.role, "primary");
        assert!((r.raw.delta.unwrap() - 0.3).abs() < 1e-12);
        // CUPED leaves the difference of means alone (equal covariate means) and narrows.
        assert!((r.cuped.delta.unwrap() - 0.3).abs() < 1e-9);
        assert!(r.narrowed.unwrap() > 0.3, "{r:?}");
        assert_eq!(r.result, "better");
        let v = &report.verdicts[0];
        assert_eq!(
            (v.arm.as_str(), v.verdict),
            ("treatment", VerdictKind::Ship)
        );
        let h = &report.verdicts[1];
        assert_eq!(
            (h.arm.as_str(), h.verdict),
            ("holdout", VerdictKind::Inconclusive)
        );
        assert!(report
            .decision_rule
            .contains("retained lies entirely above 0"));
    }

    #[test]
    fn a_guardrail_that_gets_worse_keeps_control() {
        let mut users = population("control", 500, |i| i % 10 < 4, |_| 3);
        let mut treated = population("treatment", 400, |i| i % 10 < 7, |_| 3);
        for (i, u) in treated.iter_mut().enumerate() {
            u.lost_reach = i.is_multiple_of(2);
        }
        users.extend(treated);
        users.extend(population("holdout", 100, |_| false, |_| 3));
        let report = compute("exp", &arms(), &users, &options()).unwrap();
        let v = &report.verdicts[0];
        assert_eq!(v.verdict, VerdictKind::KeepControl, "{v:?}");
        assert!(v.reason.contains("unsubscribed"), "{}", v.reason);
        // The holdout retains nobody: worse on the primary metric.
        assert_eq!(report.verdicts[1].verdict, VerdictKind::KeepControl);
    }

    #[test]
    fn no_verdict_rests_on_a_metric_that_looks_back_further_than_the_experiment_ran() {
        // The same clear win as above, but retention over 28 days after 10 days of experiment.
        let mut users = population("control", 500, |i| i % 10 < 4, |_| 3);
        users.extend(population("treatment", 400, |i| i % 10 < 7, |_| 3));
        users.extend(population("holdout", 100, |_| false, |_| 3));
        let mut o = options();
        o.retention_days = 28;
        let report = compute("exp", &arms(), &users, &o).unwrap();
        for v in &report.verdicts {
            assert_eq!(v.verdict, VerdictKind::TooEarly, "{v:?}");
            assert!(v.reason.contains("measured over 28 days"), "{}", v.reason);
            assert!(v.reason.contains("has run 10.0 days"), "{}", v.reason);
        }
        // A metric of the users' own window is judged as before.
        o.primary = Metric::Opened;
        let report = compute("exp", &arms(), &users, &o).unwrap();
        assert!(report
            .verdicts
            .iter()
            .all(|v| v.verdict != VerdictKind::TooEarly));
    }

    #[test]
    fn a_sample_ratio_mismatch_overrides_every_verdict() {
        let mut users = population("control", 700, |i| i.is_multiple_of(2), |_| 1);
        users.extend(population("treatment", 300, |_| true, |_| 1));
        users.extend(population("holdout", 100, |_| false, |_| 1));
        let report = compute("exp", &arms(), &users, &options()).unwrap();
        assert!(report.sample_ratio.mismatch);
        assert!(report
            .verdicts
            .iter()
            .all(|v| v.verdict == VerdictKind::DoNotTrust));
        assert_eq!(report.warnings.len(), 1);
        assert!(render_text(&report).starts_with(&"!".repeat(78)));
        assert!(render_markdown(&report).starts_with("> [!CAUTION]"));
    }

    #[test]
    fn control_is_chosen_by_name_then_first_non_holdout_and_can_be_overridden() {
        let spec = |name: &str, holdout| ArmSpec {
            name: name.into(),
            share: 0.5,
            holdout,
        };
        let arms = [spec("off", true), spec("a", false), spec("b", false)];
        let r = compute("e", &arms, &[], &options()).unwrap();
        assert_eq!(r.control, "a");
        let mut o = options();
        o.control = Some("b".into());
        assert_eq!(compute("e", &arms, &[], &o).unwrap().control, "b");
        o.control = Some("zzz".into());
        let err = compute("e", &arms, &[], &o).unwrap_err().to_string();
        assert_eq!(
            err,
            "experiment \"e\" has no arm \"zzz\"; its arms: off, a, b"
        );
    }

    #[test]
    fn an_empty_experiment_says_so_plainly() {
        let report = compute("exp", &arms(), &[], &options()).unwrap();
        assert!(!report.sample_ratio.mismatch);
        assert_eq!(report.sample_ratio.p_value, 1.0);
        let text = render_text(&report);
        assert!(
            text.contains("no users were assigned to exp before 2026-06-29T00:00:00Z yet"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&render_json(&report).unwrap()).unwrap();
        assert_eq!(json["users"], 0);
        assert_eq!(
            json["arms"][0]["messages"]["per_user"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn arms_the_bundle_dropped_are_shown_but_not_compared() {
        let users = vec![user("a", "control"), user("z", "retired")];
        let report = compute("exp", &arms(), &users, &options()).unwrap();
        assert_eq!(report.arms.len(), 4);
        assert_eq!(report.arms[3].share, None);
        assert!(report.comparisons.iter().all(|c| c.arm != "retired"));
        assert!(report.notes.iter().any(|n| n.contains("retired (1)")));
    }

    #[test]
    fn text_and_markdown_tables_line_up() {
        let mut t = Table::new("t", &["arm", "n"]);
        t.rows.push(vec!["control".into(), "1".into()]);
        t.rows.push(vec!["b".into(), "100".into()]);
        assert_eq!(t.text(), "t\narm        n\ncontrol    1\nb        100\n");
        assert_eq!(
            t.markdown(),
            "### t\n\n| arm | n |\n| --- | ---: |\n| control | 1 |\n| b | 100 |\n"
        );
        assert_eq!(percent(0.95), "95%");
        assert_eq!(percent(0.975), "97.5%");
    }

    #[test]
    fn bad_options_are_refused() {
        let mut o = options();
        o.level = 1.0;
        assert!(compute("e", &arms(), &[], &o).is_err());
        let mut o = options();
        o.retention_days = 0;
        assert!(compute("e", &arms(), &[], &o).is_err());
    }
}
