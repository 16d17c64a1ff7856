//! From what tern knows about a user to the model's [`CandidateContext`]: the one place where
//! history, activity and time become model inputs, shared by training (`tern train`, reading
//! history from the store) and scoring (the planner's predictor, reading planner input).
//!
//! Training rows and scored candidates must be built by the same code: a feature computed one way
//! when learning and another way when scoring is the classic silent bug of deployed models.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use tern_model::{CandidateContext, ChannelHistory, UserContext};
use tern_planner::Activity;

/// One earlier message of the user, as the fatigue features see it.
#[derive(Debug, Clone, Copy)]
pub struct Past<'a> {
    pub channel: &'a str,
    pub sent_at: DateTime<Utc>,
    /// When it was first opened or clicked.
    pub opened_at: Option<DateTime<Utc>>,
}

/// Per-channel fatigue as of `at`, one entry per declared channel: sends in the 1, 7 and 28 days
/// before `at`, how many of the 28 days' sends had been opened *before* `at` (an open that comes
/// later is the future, not a feature), and hours since the last send.
pub fn channel_history<'c>(
    channels: &'c [String],
    past: &[Past<'_>],
    at: DateTime<Utc>,
    out: &mut Vec<ChannelHistory<'c>>,
) {
    out.clear();
    for channel in channels {
        let mut h = ChannelHistory {
            channel,
            ..ChannelHistory::default()
        };
        let mut last: Option<DateTime<Utc>> = None;
        for p in past
            .iter()
            .filter(|p| p.channel == channel && p.sent_at < at)
        {
            let age = at - p.sent_at;
            if age <= TimeDelta::days(28) {
                h.sent_28d += 1;
                h.opened_28d += u32::from(p.opened_at.is_some_and(|o| o < at));
                if age <= TimeDelta::days(7) {
                    h.sent_7d += 1;
                }
                if age <= TimeDelta::days(1) {
                    h.sent_1d += 1;
                }
            }
            last = last.max(Some(p.sent_at));
        }
        h.hours_since_last = last.map(|l| hours(at - l));
        out.push(h);
    }
}

/// Over how many days a user's arrivals (the opportunities of the store's `ARRIVALS_WINDOW`
/// before `now`) are spread: the window, or the time since `known_from` (the user's first
/// appearance, or the start of what a replay can see) when shorter, and a day at least, so that
/// a new user's first days are not read as a slow week. The daemon and replays both divide by
/// it, so that a replay reads the rates the plan read.
pub fn arrival_days(now: DateTime<Utc>, known_from: Option<DateTime<Utc>>) -> f64 {
    let window = tern_store::ARRIVALS_WINDOW;
    let span = known_from
        .map_or(window, |t| now - t)
        .clamp(TimeDelta::days(1), window);
    span.num_seconds() as f64 / 86_400.0
}

/// The user's activity summary as of `at`, from the days they were active: what the planner's
/// input carries as [`Activity`], computed the same way for training rows. A day counts only
/// once it is over (before `at`'s UTC date), because a day still in progress is not yet known.
pub fn activity_as_of(
    first_seen_at: Option<DateTime<Utc>>,
    days: &[NaiveDate],
    at: DateTime<Utc>,
) -> Activity {
    let today = at.date_naive();
    let before: Vec<&NaiveDate> = days.iter().filter(|d| **d < today).collect();
    let window_start = today - TimeDelta::days(28);
    Activity {
        first_seen_at,
        last_active_at: before
            .iter()
            .max()
            .and_then(|d| d.succ_opt())
            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()),
        active_days_28d: before.iter().filter(|d| ***d >= window_start).count() as u32,
    }
}

/// The user part of the features as of `at`.
pub fn user_context(activity: &Activity, tz: Tz, at: DateTime<Utc>) -> UserContext {
    UserContext {
        tenure_days: activity
            .first_seen_at
            .map_or(0.0, |f| (hours(at - f) / 24.0).max(0.0)),
        utc_offset_minutes: {
            use chrono::Offset;
            at.with_timezone(&tz).offset().fix().local_minus_utc() / 60
        },
        active_days_28d: f64::from(activity.active_days_28d),
        hours_since_active: activity.last_active_at.map(|l| hours(at - l).max(0.0)),
    }
}

/// Local hour of day (with fractions) and weekday (0 = Monday) of `at` in `tz`.
pub fn local_time(tz: Tz, at: DateTime<Utc>) -> (f64, u32) {
    let local = at.with_timezone(&tz);
    (
        f64::from(local.hour()) + f64::from(local.minute()) / 60.0,
        local.weekday().num_days_from_monday(),
    )
}

/// Everything about one candidate that is not the user's: what it is and when it would go out.
pub struct Candidate<'a> {
    pub channel: &'a str,
    pub category: &'a str,
    pub template: &'a str,
    pub signals: &'a BTreeMap<String, f64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Assembles the model's view of `candidate` sent at `at` to a user with this `user` context and
/// per-channel `history`.
pub fn context<'a>(
    candidate: &Candidate<'a>,
    user: UserContext,
    history: &'a [ChannelHistory<'a>],
    tz: Tz,
    at: DateTime<Utc>,
) -> CandidateContext<'a> {
    let (local_hour, local_weekday) = local_time(tz, at);
    CandidateContext {
        channel: candidate.channel,
        category: candidate.category,
        template: candidate.template,
        signals: candidate.signals,
        age_hours: hours(at - candidate.created_at).max(0.0),
        hours_to_expiry: hours(candidate.expires_at - at).max(0.0),
        user,
        history,
        local_hour,
        local_weekday,
    }
}

/// A zone name as the model reads it: unknown names count as UTC (the planner reports them).
pub fn zone(name: Option<&str>) -> Tz {
    name.and_then(|n| n.parse().ok()).unwrap_or(Tz::UTC)
}

fn hours(d: TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 3_600_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn fatigue_counts_windows_and_only_opens_seen_before_the_send() {
        let channels = vec!["push".to_string(), "email".to_string()];
        let at = t("2026-06-10T12:00:00Z");
        let past = [
            Past {
                channel: "push",
                sent_at: t("2026-06-10T08:00:00Z"),
                opened_at: Some(t("2026-06-10T13:00:00Z")), // after `at`: not yet known
            },
            Past {
                channel: "push",
                sent_at: t("2026-06-05T08:00:00Z"),
                opened_at: Some(t("2026-06-05T09:00:00Z")),
            },
            Past {
                channel: "push",
                sent_at: t("2026-05-01T08:00:00Z"), // older than 28 days
                opened_at: None,
            },
            Past {
                channel: "push",
                sent_at: t("2026-06-11T08:00:00Z"), // after `at`: ignored
                opened_at: None,
            },
        ];
        let mut out = Vec::new();
        channel_history(&channels, &past, at, &mut out);
        assert_eq!(out.len(), 2);
        let push = out[0];
        assert_eq!((push.sent_1d, push.sent_7d, push.sent_28d), (1, 2, 2));
        assert_eq!(push.opened_28d, 1);
        assert_eq!(push.hours_since_last, Some(4.0));
        assert_eq!(out[1].sent_28d, 0);
        assert_eq!(out[1].hours_since_last, None);
    }

    #[test]
    fn activity_counts_finished_days_only() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let days = [
            d("2026-05-01"),
            d("2026-06-01"),
            d("2026-06-09"),
            d("2026-06-10"),
        ];
        let a = activity_as_of(None, &days, t("2026-06-10T12:00:00Z"));
        assert_eq!(a.active_days_28d, 2, "today is not over; May 1 is too old");
        assert_eq!(a.last_active_at, Some(t("2026-06-10T00:00:00Z")));
        let u = user_context(&a, Tz::Europe__Stockholm, t("2026-06-10T12:00:00Z"));
        assert_eq!(u.hours_since_active, Some(12.0));
        assert_eq!(u.utc_offset_minutes, 120);
    }
}
