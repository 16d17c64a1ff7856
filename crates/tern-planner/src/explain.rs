//! `tern plan --explain USER`: why one user got what they got, in sentences.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::Limit;
use crate::plan::Planner;
use crate::types::*;

/// A human-readable account of `user`'s plan: their arm, each choice with its send window in UTC
/// and local time and the cap counts at its send time, and each suppression with its reason.
/// Returns `None` when the plan has no such user.
pub fn explain(planner: &Planner, plan: &Plan, user: &UserInput) -> Option<String> {
    let up = plan.user(&user.user_id)?;
    let tz: Option<Tz> = user.timezone.parse().ok();
    let local = |t: DateTime<Utc>| match tz {
        Some(tz) => t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        None => "?".into(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "user {} (arm {}, time zone {}): {} chosen, {} suppressed",
        up.user_id,
        up.arm,
        user.timezone,
        up.choices.len(),
        up.suppressions.len()
    );
    if let Some(e) = &up.error {
        let _ = writeln!(
            s,
            "  input error: {e}; nothing can be planned for this user"
        );
    }
    let arm = planner.arm(&up.arm);
    let opp = |id: i64| user.opportunities.iter().find(|o| o.id == id);
    let is_holdout = arm.is_some_and(|a| a.holdout);
    if is_holdout {
        let _ = writeln!(
            s,
            "  the arm is a holdout: nothing is sent; counterfactuals below"
        );
    }
    // Sends the caps count at a moment: history plus this plan's choices (or counterfactuals).
    let mut sends: Vec<(i64, &str, &str)> = user
        .history
        .iter()
        .map(|h| {
            (
                h.sent_at.timestamp(),
                h.channel.as_str(),
                h.category.as_str(),
            )
        })
        .collect();
    // A holdout's counterfactuals are the plan it would have had; a withheld send never
    // happened and holds no cap slot, so its suppression line is all there is to say.
    let planned: Vec<&Choice> = up
        .choices
        .iter()
        .chain(
            up.suppressions
                .iter()
                .filter(|x| x.reason == Reason::Holdout)
                .filter_map(|x| x.counterfactual.as_deref()),
        )
        .collect();
    for c in &planned {
        if let Some(o) = opp(c.opportunity) {
            sends.push((
                c.send_after.timestamp(),
                plan.channel_name(c.channel),
                &o.category,
            ));
        }
    }
    for c in &planned {
        let o = opp(c.opportunity);
        let _ = writeln!(
            s,
            "  {} opportunity {} ({}, {}) on {}: {} to {} UTC (local {}), value {:.4}, margin {:.4}, propensity {:.4}{}{}",
            if is_holdout { "would send" } else { "send" },
            c.opportunity,
            o.map_or("?", |o| o.template.as_str()),
            o.map_or("?", |o| o.category.as_str()),
            plan.channel_name(c.channel),
            c.send_after.format("%Y-%m-%d %H:%M"),
            c.send_before.format("%H:%M"),
            local(c.send_after),
            c.value,
            c.margin,
            c.propensity,
            if c.explored { ", picked by exploration" } else { "" },
            if c.exempt { ", exempt from caps" } else { "" },
        );
        if let Some(arm) = arm {
            let t = c.send_after.timestamp();
            let channel = plan.channel_name(c.channel);
            let category = o.map_or("", |o| o.category.as_str());
            for r in &arm.rules {
                let matches = |ch: &str, cat: &str| {
                    r.channel.is_none_or(|rc| plan.channel_name(rc) == ch)
                        && r.category.as_deref().is_none_or(|rc| rc == cat)
                };
                if !matches(channel, category) {
                    continue;
                }
                match r.limit {
                    Limit::Max { max, window } => {
                        let n = sends
                            .iter()
                            .filter(|(st, ch, cat)| {
                                *st > t - window && *st <= t && matches(ch, cat)
                            })
                            .count();
                        let _ = writeln!(
                            s,
                            "      cap {}: {n} of {max} in the window ending at send time",
                            r.label
                        );
                    }
                    Limit::MinGap { gap } => {
                        let nearest = sends
                            .iter()
                            .filter(|(st, ch, cat)| *st != t && matches(ch, cat))
                            .map(|(st, _, _)| (st - t).abs())
                            .min();
                        match nearest {
                            Some(d) => {
                                let _ = writeln!(
                                    s,
                                    "      gap {}: nearest other send {}s away (needs {gap}s)",
                                    r.label, d
                                );
                            }
                            None => {
                                let _ = writeln!(s, "      gap {}: no other send", r.label);
                            }
                        }
                    }
                }
            }
        }
    }
    let label = |rule: u16| {
        arm.and_then(|a| a.rules.get(rule as usize))
            .map_or("?".to_string(), |r| r.label.clone())
    };
    for x in &up.suppressions {
        if x.reason == Reason::Holdout {
            continue;
        }
        let on = x
            .channel
            .map_or(String::new(), |c| format!(" on {}", plan.channel_name(c)));
        let why = match x.reason {
            Reason::Expired => "it expired before the plan ran".to_string(),
            Reason::Horizon => {
                "it cannot be placed within the plan's horizon; a later plan will look again".into()
            }
            Reason::QuietHours => {
                "every moment before it expires is in the channel's quiet hours".into()
            }
            Reason::OptedOut => "the user opted out of the channel".into(),
            Reason::OptedOutCategory => "the user opted out of its category".into(),
            Reason::Unreachable => "the user cannot be reached on the channel".into(),
            Reason::UnknownChannel => "the channel is not configured".into(),
            Reason::BadInput => "the user's input is malformed".into(),
            Reason::BelowMinValue => format!(
                "its value {} is below the objective's minimum {}",
                x.value
                    .map_or("(not a number)".into(), |v| format!("{v:.4}")),
                arm.map_or(0.0, |a| a.objective.min_value)
            ),
            Reason::Cap { rule, count, max } => format!(
                "cap {}: it would make {count} sends in one window, over the maximum {max}",
                label(rule)
            ),
            Reason::MinGap { rule } => format!(
                "minimum gap {}: every open time is too close to another send",
                label(rule)
            ),
            Reason::Budget { price } => {
                format!("the channel's budget price is {price:.4}; its margin is too low")
            }
            Reason::Paced { threshold } => format!(
                "its value {} is below {threshold:.4}, what a slot of its cap is worth to this user \
                 at the pace their opportunities arrive (pacing, value: longTerm)",
                x.value.map_or("(not a number)".into(), |v| format!("{v:.4}")),
            ),
            Reason::Duplicate { chosen_channel } => {
                let withheld = up.suppressions.iter().any(|w| {
                    w.opportunity == x.opportunity
                        && w.reason == Reason::Withheld
                        && w.channel == Some(chosen_channel)
                });
                format!(
                    "the same opportunity is already {} on {}",
                    if withheld { "withheld" } else { "chosen" },
                    plan.channel_name(chosen_channel)
                )
            }
            Reason::Holdout => unreachable_holdout(),
            Reason::Withheld => "withheld at random (the Replan's `withhold` share), so that the model learns what a send changes".into(),
        };
        let _ = writeln!(s, "  not sending opportunity {}{on}: {why}", x.opportunity);
    }
    Some(s)
}

fn unreachable_holdout() -> String {
    "the user is in a holdout arm".into()
}
