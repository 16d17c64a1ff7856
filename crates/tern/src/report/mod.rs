//! The HTML page of `tern demo --report`: the evidence, in one file that opens offline, that on a
//! simulated population whose true behaviour tern never sees, tern's decisions keep more users
//! active over the weeks than sending first come, first served or greedily by click probability,
//! while sending less.
//!
//! Each arm (policy) is one run over the same population. The page puts the arms side by side:
//! a summary table, then why the numbers differ (when each arm sends, who stays active, what the
//! planner held back and whether the model's probabilities can be trusted), then the days behind
//! the totals. [`summary_rows`] is public so that the demo's terminal output and the docs quote
//! exactly the numbers the page shows.
//!
//! The page is plain HTML with inline CSS and inline SVG: no script, no fonts, no links out, so it
//! can be mailed, attached to an issue or archived and still read the same. The output depends
//! only on the [`Report`], which keeps it diffable between runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write};

use chrono::{Days, NaiveDate};
use serde::Serialize;

/// Writing into a `String` cannot fail, so the `fmt::Result` is dropped here once rather than
/// unwrapped at every call.
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

mod page;
mod svg;

pub use page::html;
use page::*;
use svg::*;

/// Everything the report shows: one run of the simulated population per arm (policy).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub title: String,
    /// One line saying what was run, e.g. "10,000 users, 21 days from 2026-03-02, seed 7".
    pub subtitle: String,
    pub arms: Vec<ArmReport>,
}

/// One policy's run over the population.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArmReport {
    /// "tern", "greedy-click" or "fcfs" (first come, first served); any name must work.
    pub name: String,
    /// One sentence on what the arm does.
    pub description: String,
    pub users: u64,
    pub days: Vec<DayRow>,
    /// Messages sent per channel per UTC hour of day (index 0..24), summed over the run.
    pub volume_by_hour: BTreeMap<String, [u64; 24]>,
    /// Candidates the planner did not choose, by reason (e.g. "cap", "quiet_hours",
    /// "below_min_value", "opted_out"), summed over the run's plans. Empty for arms that do not
    /// use tern's planner.
    pub suppressed: BTreeMap<String, u64>,
    /// The model's calibration on the engagement outcome: bins of predicted probability with the
    /// observed rate. Empty when the arm trained no model.
    pub calibration: Vec<CalibrationBin>,
    /// What became of the arm's transactional messages, when counted.
    pub transactional: Option<Transactional>,
}

/// The transactional messages of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Transactional {
    /// Stored by tern (submitted, or created by a generator from a submitted event); for fcfs,
    /// received.
    pub submitted: u64,
    /// Sent: acked as sent and delivered to the simulated user.
    pub sent: u64,
    /// For a user who could not be reached on any of the message's channels (no verified
    /// email, say) when it was submitted: no sender could deliver it.
    pub unreachable: u64,
    /// Expired unsent although the user could be reached. The loop check fails on any.
    pub expired_unsent: u64,
    /// Still open when the run ended.
    pub open: u64,
    /// Seconds from submission to tern (or fcfs's arrival) to the send, median and 99th
    /// percentile. The simulated clock moves an hour at a time, so a message sent as soon as it
    /// is submitted shows 0.
    pub latency_p50_secs: Option<i64>,
    pub latency_p99_secs: Option<i64>,
    /// Seconds from the upstream request (the opportunity's `created_at`, some time in the hour
    /// before its submission) to the send.
    pub request_latency_p50_secs: Option<i64>,
    pub request_latency_p99_secs: Option<i64>,
}

/// One simulated UTC day of one arm.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayRow {
    pub day: NaiveDate,
    /// Per channel.
    pub messages: BTreeMap<String, u64>,
    pub opens: u64,
    pub conversions: u64,
    /// Email unsubscribes plus push disables: both take a channel away for good.
    pub unsubscribes: u64,
    pub active_users: u64,
}

/// Predictions whose probability fell in one bin: their mean prediction, the rate at which the
/// outcome happened, and how many there were (a bin of ten says little).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CalibrationBin {
    pub predicted: f64,
    pub observed: f64,
    pub count: u64,
}

/// The numbers of one arm's row in the summary table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArmSummary {
    pub messages: u64,
    pub per_channel: BTreeMap<String, u64>,
    pub opens: u64,
    /// Opens per message sent; 0 when nothing was sent.
    pub open_rate: f64,
    pub conversions: u64,
    pub unsubscribes: u64,
    /// Active share (active users / users) on the first day: where the arms start, which should
    /// be the same for all of them since they share a population.
    pub first_day_active: f64,
    /// Mean active share over the last 7 days (fewer when the run is shorter): where the arms
    /// end up, averaged over a week so that weekday effects do not decide the comparison.
    pub last7_active: f64,
}

/// Totals and active shares of one arm. Days are taken in date order whatever order they come
/// in, so "first" and "last 7" mean calendar days.
pub fn summary_rows(arm: &ArmReport) -> ArmSummary {
    let days = chronological(&arm.days);
    let mut s = ArmSummary::default();
    for d in &days {
        for (channel, n) in &d.messages {
            *s.per_channel.entry(channel.clone()).or_default() += n;
            s.messages += n;
        }
        s.opens += d.opens;
        s.conversions += d.conversions;
        s.unsubscribes += d.unsubscribes;
    }
    s.open_rate = ratio(s.opens, s.messages);
    s.first_day_active = days
        .first()
        .map_or(0.0, |d| ratio(d.active_users, arm.users));
    let last = &days[days.len().saturating_sub(7)..];
    if !last.is_empty() {
        let sum: f64 = last.iter().map(|d| ratio(d.active_users, arm.users)).sum();
        s.last7_active = sum / last.len() as f64;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn day(d: &str, push: u64, email: u64, opens: u64, active: u64) -> DayRow {
        DayRow {
            day: date(d),
            messages: BTreeMap::from([("push".to_string(), push), ("email".to_string(), email)]),
            opens,
            conversions: opens / 4,
            unsubscribes: 1,
            active_users: active,
        }
    }

    fn arm(name: &str, planner: bool) -> ArmReport {
        let days = (0..10)
            .map(|i| {
                let d = date("2026-03-02") + Days::new(i);
                day(&d.to_string(), 300 - 10 * i, 100, 40 + i, 900 - 20 * i)
            })
            .collect();
        let mut hours = [0u64; 24];
        for (h, n) in hours.iter_mut().enumerate() {
            *n = (h as u64 * 37) % 200;
        }
        ArmReport {
            transactional: None,
            name: name.to_string(),
            description: format!("The {name} arm."),
            users: 1000,
            days,
            volume_by_hour: BTreeMap::from([
                ("push".to_string(), hours),
                ("email".to_string(), [5; 24]),
            ]),
            suppressed: if planner {
                BTreeMap::from([
                    ("cap".to_string(), 1200),
                    ("quiet_hours".to_string(), 340),
                    ("below_min_value".to_string(), 0),
                ])
            } else {
                BTreeMap::new()
            },
            calibration: if planner {
                vec![
                    CalibrationBin {
                        predicted: 0.02,
                        observed: 0.025,
                        count: 5000,
                    },
                    CalibrationBin {
                        predicted: 0.12,
                        observed: 0.1,
                        count: 800,
                    },
                    CalibrationBin {
                        predicted: 0.37,
                        observed: 0.31,
                        count: 40,
                    },
                ]
            } else {
                Vec::new()
            },
        }
    }

    fn two_arms() -> Report {
        Report {
            title: "tern demo".to_string(),
            subtitle: "1,000 users, 10 days from 2026-03-02, seed 7".to_string(),
            arms: vec![arm("tern", true), arm("fcfs", false)],
        }
    }

    fn assert_clean(page: &str) {
        assert!(!page.contains("NaN"), "NaN in page");
        assert!(!page.contains("inf"), "inf in page");
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert!(!page.contains("<script"));
        // Nothing loaded from elsewhere: the SVG namespace is the only address on the page.
        assert_eq!(
            page.matches("http").count(),
            page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
    }

    #[test]
    fn two_arms_render_every_section_and_plot() {
        let page = html(&two_arms());
        assert_clean(&page);
        for name in ["tern", "fcfs"] {
            assert!(page.contains(&format!("</span>{name}")), "{name} missing");
        }
        for heading in [
            "Summary",
            "Volume by hour of day",
            "Retention",
            "Suppressions by reason",
            "Model calibration",
            "Per-day results",
        ] {
            assert!(
                page.contains(&format!(">{heading}</h2>")),
                "{heading} missing"
            );
        }
        // Volume: one per arm; retention: one; suppressions and calibration: tern only.
        assert_eq!(page.matches("<svg").count(), 2 + 1 + 1 + 1);
        assert!(page.contains("No planner suppressions for: fcfs."));
        assert!(page.contains("No model was trained for: fcfs."));
        // One series title per channel per arm, per arm in retention, and tern's suppressions,
        // calibration bins and diagonal.
        assert!(page.contains("<title>push: "));
        assert!(page.contains("<title>tern: 5,840 predictions in 3 bins</title>"));
        assert!(page.contains("<title>predicted = observed</title>"));
        // A reason with no suppressions in any arm gets no bar.
        assert!(!page.contains(">below_min_value<"));
    }

    #[test]
    fn text_is_escaped() {
        let mut report = two_arms();
        report.title = "A \"quoted\" 'title'".to_string();
        report.arms[0].name = "<b>&".to_string();
        for a in &mut report.arms {
            a.volume_by_hour.insert("<i>".to_string(), [1; 24]);
        }
        let page = html(&report);
        assert_clean(&page);
        assert!(page.contains("&lt;b&gt;&amp;"));
        assert!(!page.contains("<b>"));
        assert!(!page.contains("<i>"));
        assert!(page.contains("A &quot;quoted&quot; &#39;title&#39;"));
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn empty_inputs_render_without_panic() {
        let empty = html(&Report::default());
        assert_clean(&empty);
        assert!(empty.contains("No arms were run."));
        assert!(!empty.contains("<svg"));

        let bare = Report {
            arms: vec![ArmReport {
                name: "idle".to_string(),
                ..ArmReport::default()
            }],
            ..Report::default()
        };
        let page = html(&bare);
        assert_clean(&page);
        assert!(page.contains("No days were simulated."));
        assert!(page.contains("No planner suppressions."));
        assert!(page.contains("No model was trained."));

        // Zero users, all-zero volumes, one day, and bins the model could not fill.
        let mut zeros = arm("zeros", true);
        zeros.users = 0;
        zeros.days.truncate(1);
        zeros.days[0].messages.values_mut().for_each(|n| *n = 0);
        zeros.volume_by_hour.values_mut().for_each(|h| *h = [0; 24]);
        zeros.suppressed.values_mut().for_each(|n| *n = 0);
        zeros.calibration.push(CalibrationBin {
            predicted: f64::NAN,
            observed: f64::INFINITY,
            count: 3,
        });
        zeros.calibration.push(CalibrationBin {
            predicted: 0.5,
            observed: 0.5,
            count: 0,
        });
        let page = html(&Report {
            arms: vec![zeros],
            ..Report::default()
        });
        assert_clean(&page);
        assert_eq!(summary_rows(&ArmReport::default()), ArmSummary::default());
    }

    #[test]
    fn summary_rows_by_hand() {
        // 10 users over 9 days with 10, 9, ..., 2 active; 2 push and 1 email a day, 1 open a day.
        let mut days: Vec<DayRow> = (0..9)
            .map(|i| {
                let d = date("2026-03-02") + Days::new(i);
                let mut row = day(&d.to_string(), 2, 1, 1, 10 - i);
                row.conversions = i % 2;
                row
            })
            .collect();
        // Order of arrival must not matter.
        days.reverse();
        let arm = ArmReport {
            users: 10,
            days,
            ..ArmReport::default()
        };
        let s = summary_rows(&arm);
        assert_eq!(s.messages, 27);
        assert_eq!(
            s.per_channel,
            BTreeMap::from([("email".to_string(), 9), ("push".to_string(), 18)])
        );
        assert_eq!(s.opens, 9);
        assert!((s.open_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.conversions, 4);
        assert_eq!(s.unsubscribes, 9);
        assert!((s.first_day_active - 1.0).abs() < 1e-12);
        // Last 7 days: 8, 7, ..., 2 active of 10: 35 / 70.
        assert!((s.last7_active - 0.5).abs() < 1e-12);

        // Fewer than 7 days: the mean of those there are.
        let short = ArmReport {
            users: 4,
            days: vec![day("2026-03-02", 1, 0, 0, 4), day("2026-03-03", 1, 0, 0, 2)],
            ..ArmReport::default()
        };
        assert!((summary_rows(&short).last7_active - 0.75).abs() < 1e-12);
        assert_eq!(summary_rows(&short).open_rate, 0.0);
    }

    #[test]
    fn nice_ticks() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;

        let t = Ticks::new(0.0, 0.37, 5);
        assert!(
            close(t.step, 0.1) && close(t.lo, 0.0) && close(t.hi, 0.4),
            "{t:?}"
        );
        assert_eq!(t.values().len(), 5);
        assert_eq!(t.label(t.values()[3]), "0.3");
        assert_eq!(t.percent(0.3), "30%");

        let t = Ticks::new(0.0, 1200.0, 5);
        assert!(close(t.step, 200.0) && close(t.hi, 1200.0), "{t:?}");
        assert_eq!(t.values().len(), 7);
        assert_eq!(t.label(1200.0), "1,200");

        let t = Ticks::new(0.0, 0.0, 5);
        assert!(
            close(t.lo, 0.0) && close(t.hi, 1.0) && close(t.step, 0.2),
            "{t:?}"
        );
        assert!(t.values().iter().all(|v| v.is_finite()));

        let t = Ticks::new(f64::NAN, f64::INFINITY, 5);
        assert!(t.lo.is_finite() && t.hi > t.lo && t.step > 0.0, "{t:?}");

        let t = Ticks::new(0.0, 20.0, 6).whole();
        assert!(close(t.step, 5.0) && close(t.hi, 20.0), "{t:?}");
        let t = Ticks::new(0.0, 0.0, 6).whole();
        assert!(close(t.step, 1.0) && close(t.hi, 1.0), "{t:?}");

        let t = Ticks::new(0.0, 2_400_000.0, 5);
        assert_eq!(t.label(1_000_000.0), "1.0M");
        let t = Ticks::new(0.0, 15_000.0, 5);
        assert_eq!(t.label(5_000.0), "5k");

        for step in [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0] {
            let s = nice_step(step * 1.2);
            let k = (s / 10f64.powi(s.log10().floor() as i32)).round();
            assert!([1.0, 2.0, 5.0, 10.0].contains(&k), "{step}: {s}");
        }
    }

    #[test]
    fn svg_numbers_are_finite() {
        assert_eq!(Px(f64::NAN).to_string(), "0.0");
        assert_eq!(Px(f64::NEG_INFINITY).to_string(), "0.0");
        assert_eq!(Px(-0.0).to_string(), "0.0");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(pct(f64::NAN), "0.0%");
    }

    #[test]
    fn report_serialises_to_json() {
        let json = serde_json::to_value(two_arms()).unwrap();
        assert_eq!(json["arms"][0]["name"], "tern");
        assert_eq!(json["arms"][0]["days"][0]["day"], "2026-03-02");
        assert_eq!(json["arms"][0]["volume_by_hour"]["email"][23], 5);
    }
}
