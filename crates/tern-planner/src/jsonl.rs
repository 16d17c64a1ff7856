//! JSON Lines for `tern plan`: one [`UserInput`] per input line; one choice or suppression per
//! output line. The format is documented, with a worked example, in `docs/planner.md`.

use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::plan::Planner;
use crate::types::*;

/// A line of input that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one user per line; blank lines and lines starting with `#` are skipped.
pub fn read_users<R: BufRead>(reader: R) -> Result<Vec<UserInput>, JsonlError> {
    let mut users = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let user = serde_json::from_str(trimmed).map_err(|e| JsonlError::Parse {
            line: i + 1,
            message: e.to_string(),
        })?;
        users.push(user);
    }
    Ok(users)
}

#[derive(Serialize)]
struct ChoiceLine<'a> {
    kind: &'static str,
    user: &'a str,
    arm: &'a str,
    opportunity: i64,
    channel: &'a str,
    send_after: DateTime<Utc>,
    send_before: DateTime<Utc>,
    value: f64,
    margin: f64,
    propensity: f64,
    explored: bool,
    exempt: bool,
    scores: Scores,
}

#[derive(Serialize)]
struct SuppressionLine<'a> {
    kind: &'static str,
    user: &'a str,
    arm: &'a str,
    opportunity: i64,
    channel: Option<&'a str>,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f64>,
    /// For `paced`: the value a slot of the binding cap is worth to this user.
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen_channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    would_send: Option<ChoiceLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn choice_line<'a>(plan: &'a Plan, u: &'a UserPlan, c: &Choice) -> ChoiceLine<'a> {
    ChoiceLine {
        kind: "choice",
        user: &u.user_id,
        arm: &u.arm,
        opportunity: c.opportunity,
        channel: plan.channel_name(c.channel),
        send_after: c.send_after,
        send_before: c.send_before,
        value: c.value,
        margin: c.margin,
        propensity: c.propensity,
        explored: c.explored,
        exempt: c.exempt,
        scores: c.scores,
    }
}

/// Writes every user's choices, then their suppressions, one JSON object per line, users in id
/// order. Rule indices are written as the rule's name from the user's arm.
pub fn write_plan<W: Write>(planner: &Planner, plan: &Plan, mut w: W) -> std::io::Result<()> {
    for u in &plan.users {
        for c in &u.choices {
            serde_json::to_writer(&mut w, &choice_line(plan, u, c))?;
            w.write_all(b"\n")?;
        }
        let rules = planner.arm(&u.arm).map(|a| &a.rules[..]).unwrap_or(&[]);
        for s in &u.suppressions {
            let mut line = SuppressionLine {
                kind: "suppression",
                user: &u.user_id,
                arm: &u.arm,
                opportunity: s.opportunity,
                channel: s.channel.map(|c| plan.channel_name(c)),
                reason: s.reason.as_str(),
                rule: None,
                count: None,
                max: None,
                price: None,
                threshold: None,
                chosen_channel: None,
                value: s.value,
                would_send: s.counterfactual.as_deref().map(|c| choice_line(plan, u, c)),
                error: if s.reason == Reason::BadInput {
                    u.error.as_deref()
                } else {
                    None
                },
            };
            match s.reason {
                Reason::Cap { rule, count, max } => {
                    line.rule = rules.get(rule as usize).map(|r| r.label.as_str());
                    line.count = Some(count);
                    line.max = Some(max);
                }
                Reason::MinGap { rule } => {
                    line.rule = rules.get(rule as usize).map(|r| r.label.as_str());
                }
                Reason::Budget { price } => line.price = Some(price),
                Reason::Paced { threshold } => line.threshold = Some(threshold),
                Reason::Duplicate { chosen_channel } => {
                    line.chosen_channel = Some(plan.channel_name(chosen_channel))
                }
                _ => {}
            }
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
    }
    Ok(())
}
