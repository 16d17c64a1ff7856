//! An independent checker of a plan's promises, written from the rules in `docs/planner.md`
//! rather than from the planner's code: it reads the raw [`PlannerConfig`] (names, not indices),
//! treats every planned send as occupying its whole window `[send_after, send_before)`, and
//! recounts by brute force.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use tern_planner::*;

fn hhmm(s: &str) -> i64 {
    let (h, m) = s.split_once(':').unwrap();
    h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60
}

fn local_second_of_day(tz: Tz, t: i64) -> i64 {
    let dt = DateTime::from_timestamp(t, 0).unwrap();
    let off = tz
        .offset_from_utc_datetime(&dt.naive_utc())
        .fix()
        .local_minus_utc() as i64;
    (t + off).rem_euclid(86400)
}

fn quiet_at(q: &QuietHours, sod: i64) -> bool {
    let (f, t) = (hhmm(&q.from.to_string()), hhmm(&q.to.to_string()));
    if f < t {
        f <= sod && sod < t
    } else {
        sod >= f || sod < t
    }
}

/// The arm's rules: the arm the caller named, or else the one the documented hash gives,
/// computed here from scratch.
fn arm_for<'a>(
    config: &'a PlannerConfig,
    user: &UserInput,
) -> (String, &'a [CapRule], &'a [String], bool) {
    let exempt = |a: &'a Arm| {
        a.exempt_priorities
            .as_deref()
            .unwrap_or(&config.exempt_priorities)
    };
    if let (Some(e), Some(name)) = (&config.experiment, &user.arm) {
        if let Some(a) = e.arms.iter().find(|a| &a.name == name) {
            return (
                a.name.clone(),
                a.caps.as_deref().unwrap_or(&config.caps),
                exempt(a),
                a.holdout,
            );
        }
    }
    let user = user.user_id.as_str();
    match &config.experiment {
        None => (
            "default".into(),
            &config.caps,
            &config.exempt_priorities,
            false,
        ),
        Some(e) => {
            // Weighted rendezvous, written out independently of the planner: each arm draws
            // -ln(1 - u) / share with u from SHA-256(salt "/" arm, 0, user); the least wins.
            use sha2::{Digest, Sha256};
            let draw = |a: &Arm| {
                let mut bytes = format!("{}/{}", e.salt, a.name).into_bytes();
                bytes.push(0);
                bytes.extend_from_slice(user.as_bytes());
                let d = Sha256::digest(&bytes);
                let x = u64::from_be_bytes(d[..8].try_into().unwrap());
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                -(1.0 - u).ln() / a.share
            };
            let a = e
                .arms
                .iter()
                .filter(|a| a.share > 0.0)
                .min_by(|a, b| draw(a).total_cmp(&draw(b)))
                .expect("shares add up to 1");
            (
                a.name.clone(),
                a.caps.as_deref().unwrap_or(&config.caps),
                exempt(a),
                a.holdout,
            )
        }
    }
}

struct Send<'a> {
    lo: i64,
    /// Inclusive last second.
    hi: i64,
    channel: &'a str,
    category: &'a str,
}

/// What a class bypasses, by the configuration's `priorities`.
fn bypass_of(config: &PlannerConfig, priority: &str) -> Bypass {
    config.priorities.get(priority).copied().unwrap_or_default()
}

fn matches(rule: &CapRule, channel: &str, category: &str) -> bool {
    let ch_ok = match rule.channel.as_deref() {
        None | Some("any") => true,
        Some(c) => c == channel,
    };
    ch_ok && rule.category.as_deref().is_none_or(|c| c == category)
}

/// Checks every promise; returns a description of the first broken one.
pub fn check(
    config: &PlannerConfig,
    users: &[UserInput],
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let now = now.timestamp();
    let horizon_end = now + config.horizon_secs as i64;
    let mut per_channel: BTreeMap<&str, u64> = BTreeMap::new();
    let ids: Vec<&str> = plan.users.iter().map(|u| u.user_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    if ids != sorted || ids.len() != users.len() {
        return Err("users are not one per input, sorted by id".into());
    }
    let eps = config.exploration;
    for up in &plan.users {
        let user = users.iter().find(|u| u.user_id == up.user_id).unwrap();
        let (arm, rules, arm_exempt, holdout) = arm_for(config, user);
        if arm != up.arm {
            return Err(format!(
                "{}: arm {} but the hash says {arm}",
                up.user_id, up.arm
            ));
        }
        let tz: Option<Tz> = user.timezone.parse().ok();
        let opp = |id: i64| user.opportunities.iter().find(|o| o.id == id).unwrap();
        if holdout
            && up
                .choices
                .iter()
                .any(|c| !bypass_of(config, &opp(c.opportunity).priority).holdouts)
        {
            return Err(format!("{}: holdout user got choices", up.user_id));
        }

        // Every candidate is accounted for exactly once.
        let mut accounted: BTreeSet<(i64, Option<&str>)> = BTreeSet::new();
        // A holdout's counterfactuals are the whole plan the user would have had; a withheld
        // send's is one send that never happened and holds no cap slot.
        let planned: Vec<&Choice> = up
            .choices
            .iter()
            .chain(
                up.suppressions
                    .iter()
                    .filter(|s| s.reason == Reason::Holdout)
                    .filter_map(|s| s.counterfactual.as_deref()),
            )
            .collect();
        for s in up
            .suppressions
            .iter()
            .filter(|s| s.reason == Reason::Withheld)
        {
            let Some(c) = s.counterfactual.as_deref() else {
                return Err(format!(
                    "{}: a withheld send without its counterfactual",
                    up.user_id
                ));
            };
            if c.propensity != config.withhold {
                return Err(format!(
                    "{}: withheld opp {} logged with propensity {}, not {}",
                    up.user_id, s.opportunity, c.propensity, config.withhold
                ));
            }
            if up.choices.iter().any(|x| x.opportunity == s.opportunity) {
                return Err(format!(
                    "{}: opp {} withheld and sent",
                    up.user_id, s.opportunity
                ));
            }
            let times = up
                .suppressions
                .iter()
                .filter(|x| x.opportunity == s.opportunity && x.reason == Reason::Withheld)
                .count();
            if times > 1 {
                return Err(format!(
                    "{}: opp {} withheld on {times} channels",
                    up.user_id, s.opportunity
                ));
            }
        }
        for c in &up.choices {
            accounted.insert((c.opportunity, Some(plan.channel_name(c.channel))));
        }
        for s in &up.suppressions {
            accounted.insert((s.opportunity, s.channel.map(|c| plan.channel_name(c))));
        }
        for o in &user.opportunities {
            let whole = accounted.contains(&(o.id, None));
            for ch in &o.channels {
                if !whole && !accounted.contains(&(o.id, Some(ch.as_str()))) {
                    return Err(format!(
                        "{}: opportunity {} on {ch} unaccounted",
                        up.user_id, o.id
                    ));
                }
            }
        }

        let mut sends: Vec<Send> = user
            .history
            .iter()
            .map(|h| Send {
                lo: h.sent_at.timestamp(),
                hi: h.sent_at.timestamp(),
                channel: &h.channel,
                category: &h.category,
            })
            .collect();
        for c in &planned {
            sends.push(Send {
                lo: c.send_after.timestamp(),
                hi: c.send_before.timestamp() - 1,
                channel: plan.channel_name(c.channel),
                category: &opp(c.opportunity).category,
            });
        }

        let mut seen_opps = BTreeSet::new();
        for (ci, c) in planned.iter().enumerate() {
            let me = user.history.len() + ci;
            let o = opp(c.opportunity);
            let ch = plan.channel_name(c.channel);
            let (a, b) = (c.send_after.timestamp(), c.send_before.timestamp());
            let who = format!("{} opp {} on {ch}", up.user_id, o.id);
            if !(c.propensity > 0.0 && c.propensity <= 1.0) {
                return Err(format!("{who}: propensity {}", c.propensity));
            }
            let bypass = bypass_of(config, &o.priority);
            let exempt = bypass.caps || arm_exempt.contains(&o.priority);
            if c.exempt != exempt {
                return Err(format!("{who}: exempt flag is wrong"));
            }
            // Withholding scales what may be withheld (anything of a class that bypasses
            // nothing) by 1 − withhold.
            let withholdable = !bypass.any() && !exempt;
            let unexplored = if withholdable {
                1.0 - config.withhold
            } else {
                1.0
            };
            if eps == 0.0 && (c.propensity - unexplored).abs() > 1e-12 {
                return Err(format!(
                    "{who}: propensity {} without exploration",
                    c.propensity
                ));
            }
            if !(a < b && b - a <= config.send_window_secs as i64) {
                return Err(format!("{who}: bad window [{a}, {b})"));
            }
            if a < now
                || a < o.created_at.timestamp()
                || b > o.expires_at.timestamp()
                || b > horizon_end
            {
                return Err(format!(
                    "{who}: window [{a}, {b}) outside its life or the horizon"
                ));
            }
            if !o.channels.contains(&ch.to_string())
                || user.opted_out_channels.iter().any(|x| x == ch)
                || user.unreachable_channels.iter().any(|x| x == ch)
                || user.opted_out_categories.contains(&o.category)
            {
                return Err(format!("{who}: not allowed on this channel"));
            }
            if !config.multi_channel && !seen_opps.insert(o.id) {
                return Err(format!("{who}: opportunity sent twice"));
            }
            let objective = config.objectives.get(
                config
                    .experiment
                    .as_ref()
                    .and_then(|e| e.arms.iter().find(|x| x.name == arm))
                    .and_then(|x| x.objective.as_deref())
                    .unwrap_or("default"),
            );
            if let (Some(obj), false) = (objective, bypass.min_value) {
                if c.value < obj.min_value {
                    return Err(format!("{who}: value {} below min", c.value));
                }
            }
            // Quiet hours, sampled every minute of the window and at its last second.
            let chan = config.channels.iter().find(|x| x.name == ch).unwrap();
            if let (Some(q), Some(tz), false) = (&chan.quiet_hours, tz, bypass.quiet_hours) {
                let mut t = a;
                loop {
                    if quiet_at(q, local_second_of_day(tz, t)) {
                        return Err(format!("{who}: {t} is in quiet hours"));
                    }
                    if t == b - 1 {
                        break;
                    }
                    t = (t + 60).min(b - 1);
                }
            }
            // Caps and gaps, for sends not exempt.
            if exempt {
                continue;
            }
            let cat = &o.category;
            let (lo_c, hi_c) = (a, b - 1);
            for rule in rules {
                if !matches(rule, ch, cat) {
                    continue;
                }
                let relevant = sends
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| matches(rule, s.channel, s.category));
                if let (Some(max), Some(w)) = (rule.max, rule.window_secs) {
                    let w = w as i64;
                    // Windows (s - w, s] that touch this send end in [lo_c, hi_c + w); the count
                    // only rises where a send starts, so those ends suffice.
                    let mut ends = vec![lo_c];
                    ends.extend(
                        sends
                            .iter()
                            .map(|s| s.lo)
                            .filter(|&lo| lo >= lo_c && lo < hi_c + w),
                    );
                    for s_end in ends {
                        let n = relevant
                            .clone()
                            .filter(|(_, s)| s.lo <= s_end && s.hi > s_end - w)
                            .count();
                        if n > max as usize {
                            return Err(format!(
                                "{who}: rule {} has {n} sends in the window ending {s_end}",
                                rule.describe()
                            ));
                        }
                    }
                }
                if let Some(g) = rule.min_gap_secs {
                    for (i, s) in relevant {
                        if i == me {
                            continue;
                        }
                        let d = (s.lo - hi_c).max(lo_c - s.hi).max(0);
                        if d < g as i64 {
                            return Err(format!("{who}: rule {} gap {d}s", rule.describe()));
                        }
                    }
                }
            }
        }
        for c in &up.choices {
            *per_channel.entry(plan.channel_name(c.channel)).or_default() += 1;
        }
    }
    for ch in &config.channels {
        if let Some(b) = &ch.budget {
            let n = per_channel.get(ch.name.as_str()).copied().unwrap_or(0);
            if n > b.max {
                return Err(format!("budget {}: {n} > {}", ch.name, b.max));
            }
        }
    }
    Ok(())
}
