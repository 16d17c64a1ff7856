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

/// The whole page, as one self-contained document; the same report always gives the same bytes.
pub fn html(report: &Report) -> String {
    let page = Page::new(report);
    let mut out = String::with_capacity(64 * 1024);
    w!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(&report.title)
    );
    w!(out, "<h1>{}</h1>\n", escape(&report.title));
    if !report.subtitle.is_empty() {
        w!(out, "<p class=\"sub\">{}</p>\n", escape(&report.subtitle));
    }
    out.push_str(
        "<p>Each arm is one policy run over the same simulated population; no arm sees how the \
         simulated users actually behave, only what happens after it sends.</p>\n<nav>\
         <a href=\"#summary\">Summary</a> · <a href=\"#volume\">Volume</a> · \
         <a href=\"#retention\">Retention</a> · <a href=\"#suppressions\">Suppressions</a> · \
         <a href=\"#calibration\">Calibration</a> · <a href=\"#days\">Per day</a></nav>\n",
    );
    page.summary(&mut out);
    page.volume(&mut out);
    page.retention(&mut out);
    page.suppressions(&mut out);
    page.calibration(&mut out);
    page.per_day(&mut out);
    out.push_str("</body>\n</html>\n");
    out
}

/// Escapes text for HTML element content and quoted attribute values alike.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font:14px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:#1f2328;\
max-width:960px;margin:2rem auto;padding:0 1rem}\
h1{font-size:1.6rem;margin:0 0 .2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d0d7de}\
h3{font-size:1rem;margin:1.2rem 0 .3rem}\
.sub{color:#57606a;margin-top:0}.note{color:#57606a;font-style:italic}\
nav{margin:.8rem 0}nav a{color:#0969da;text-decoration:none}\
.wide{overflow-x:auto}\
table{border-collapse:collapse;margin:.5rem 0 1rem;font-variant-numeric:tabular-nums}\
th,td{padding:.25rem .6rem;border-bottom:1px solid #d0d7de;text-align:right;white-space:nowrap}\
th:first-child,td:first-child{text-align:left}\
thead th{border-bottom:2px solid #8c959f;vertical-align:bottom}\
.desc{display:block;color:#57606a;font-size:.85em;font-weight:normal;white-space:normal;\
max-width:22rem}\
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.4em;\
vertical-align:-.05em}\
figure{margin:0 0 1.2rem}figcaption{font-weight:600;margin-bottom:.2rem}\
.row{display:flex;flex-wrap:wrap;gap:1rem 1.5rem}\
svg{max-width:100%;height:auto;display:block}";

/// Okabe–Ito colours (without yellow, which vanishes on white): distinguishable with the common
/// colour-vision deficiencies. An arm keeps its colour across every plot by its position.
const ARM_COLOURS: [&str; 6] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
];

/// A second set, from Paul Tol's muted scheme, so that a channel is never mistaken for an arm.
const CHANNEL_COLOURS: [&str; 6] = [
    "#332288", "#44AA99", "#DDCC77", "#CC6677", "#88CCEE", "#AA4499",
];

fn arm_colour(index: usize) -> &'static str {
    ARM_COLOURS[index % ARM_COLOURS.len()]
}

/// What the sections share: the summaries, and one channel list for the whole report so that a
/// channel has the same colour and column in every arm.
struct Page<'a> {
    report: &'a Report,
    summaries: Vec<ArmSummary>,
    channels: Vec<String>,
}

impl<'a> Page<'a> {
    fn new(report: &'a Report) -> Self {
        let summaries = report.arms.iter().map(summary_rows).collect();
        let mut channels = BTreeSet::new();
        for arm in &report.arms {
            channels.extend(arm.volume_by_hour.keys().cloned());
            for d in &arm.days {
                channels.extend(d.messages.keys().cloned());
            }
        }
        Page {
            report,
            summaries,
            channels: channels.into_iter().collect(),
        }
    }

    fn channel_colour(&self, channel: &str) -> &'static str {
        let i = self.channels.iter().position(|c| c == channel).unwrap_or(0);
        CHANNEL_COLOURS[i % CHANNEL_COLOURS.len()]
    }

    fn arm_label(&self, index: usize) -> String {
        format!(
            "<span class=\"swatch\" style=\"background:{}\"></span>{}",
            arm_colour(index),
            escape(&self.report.arms[index].name)
        )
    }

    fn summary(&self, out: &mut String) {
        out.push_str("<h2 id=\"summary\">Summary</h2>\n");
        if self.report.arms.is_empty() {
            out.push_str("<p class=\"note\">No arms were run.</p>\n");
            return;
        }
        out.push_str(
            "<p>Open rate is opens per message sent. Active share is active users over the \
             arm's users: on the first day, and the mean of the last 7 days.</p>\n",
        );
        let channels: BTreeSet<&String> = self
            .summaries
            .iter()
            .flat_map(|s| s.per_channel.keys())
            .collect();
        out.push_str("<div class=\"wide\"><table>\n<thead><tr><th>Arm</th><th>Messages</th>");
        for c in &channels {
            w!(out, "<th>{}</th>", escape(c));
        }
        out.push_str(
            "<th>Opens</th><th>Open rate</th><th>Conversions</th><th>Unsubscribes</th>\
             <th>Active, day 1</th><th>Active, last 7 days</th></tr></thead>\n<tbody>\n",
        );
        for (i, (arm, s)) in self.report.arms.iter().zip(&self.summaries).enumerate() {
            w!(out, "<tr><td>{}", self.arm_label(i));
            if !arm.description.is_empty() {
                w!(
                    out,
                    "<span class=\"desc\">{}</span>",
                    escape(&arm.description)
                );
            }
            w!(out, "</td><td>{}</td>", thousands(s.messages));
            for c in &channels {
                let n = s.per_channel.get(*c).copied().unwrap_or(0);
                w!(out, "<td>{}</td>", thousands(n));
            }
            w!(
                out,
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                thousands(s.opens),
                pct(s.open_rate),
                thousands(s.conversions),
                thousands(s.unsubscribes),
                pct(s.first_day_active),
                pct(s.last7_active)
            );
        }
        out.push_str("</tbody></table></div>\n");
        let counted: Vec<(usize, &Transactional)> = self
            .report
            .arms
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.transactional.as_ref().map(|t| (i, t)))
            .collect();
        if !counted.is_empty() {
            out.push_str(
                "<p>Transactional messages (password resets): each must go out while it is \
                 valid. Latency is from submission to send; the simulated clock moves an hour \
                 at a time.</p>\n<div class=\"wide\"><table>\n<thead><tr><th>Arm</th>\
                 <th>Submitted</th><th>Sent</th><th>Unreachable</th><th>Expired unsent</th>\
                 <th>Latency p50</th><th>Latency p99</th></tr></thead>\n<tbody>\n",
            );
            let secs = |s: Option<i64>| s.map_or("–".to_string(), |s| format!("{s} s"));
            for (i, t) in counted {
                w!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    self.arm_label(i),
                    thousands(t.submitted),
                    thousands(t.sent),
                    thousands(t.unreachable),
                    thousands(t.expired_unsent),
                    secs(t.latency_p50_secs),
                    secs(t.latency_p99_secs)
                );
            }
            out.push_str("</tbody></table></div>\n");
        }
    }

    /// One small multiple per arm on a shared y scale, so that a lower volume looks lower.
    fn volume(&self, out: &mut String) {
        out.push_str(
            "<h2 id=\"volume\">Volume by hour of day</h2>\n<p>Messages sent per channel in each \
             UTC hour of the day, summed over the run. The scale is the same for every arm.</p>\n",
        );
        let channels: Vec<&String> = self
            .channels
            .iter()
            .filter(|c| {
                self.report
                    .arms
                    .iter()
                    .any(|a| a.volume_by_hour.contains_key(*c))
            })
            .collect();
        if channels.is_empty() {
            out.push_str("<p class=\"note\">No hourly volume was recorded.</p>\n");
            return;
        }
        let max = self
            .report
            .arms
            .iter()
            .flat_map(|a| a.volume_by_hour.values().flatten())
            .copied()
            .max()
            .unwrap_or(0);
        let y = Ticks::new(0.0, max as f64, 5);
        let x_ticks: Vec<(f64, String)> = (0..24)
            .step_by(3)
            .map(|h| (h as f64 + 0.5, format!("{h:02}")))
            .collect();
        let slot = 0.8 / channels.len() as f64;
        for (i, arm) in self.report.arms.iter().enumerate() {
            let total: u64 = arm.volume_by_hour.values().flatten().sum();
            let mut chart = Chart::new(
                900.0,
                180.0,
                Margin {
                    top: 10.0,
                    right: 16.0,
                    bottom: 36.0,
                    left: 60.0,
                },
                (0.0, 24.0),
                (y.lo, y.hi),
            );
            chart.y_axis(&y.labelled(|v| y.label(v)), "messages", true);
            chart.x_axis(&x_ticks, "hour of day (UTC)", false);
            for (k, channel) in channels.iter().enumerate() {
                let colour = self.channel_colour(channel);
                chart.legend_entry(colour, Mark::Box, channel);
                let Some(hours) = arm.volume_by_hour.get(*channel) else {
                    continue;
                };
                let sum: u64 = hours.iter().sum();
                let title = format!("{channel}: {} messages", thousands(sum));
                chart.series(&title, |chart| {
                    for (h, &n) in hours.iter().enumerate() {
                        let x0 = h as f64 + 0.1 + k as f64 * slot;
                        let tip = format!(
                            "{channel}, {h:02}:00–{:02}:00 UTC: {} messages",
                            h + 1,
                            thousands(n)
                        );
                        chart.rect((x0, 0.0), (x0 + slot, n as f64), colour, &tip);
                    }
                });
            }
            w!(
                out,
                "<figure><figcaption>{} — {} messages</figcaption>{}</figure>\n",
                self.arm_label(i),
                thousands(total),
                chart.finish(&format!("Messages per hour of day, {}", arm.name))
            );
        }
    }

    /// All arms on one plot: the comparison the page exists for.
    fn retention(&self, out: &mut String) {
        out.push_str(
            "<h2 id=\"retention\">Retention</h2>\n<p>Daily active share (active users over \
             users) for each arm.</p>\n",
        );
        let arms: Vec<(usize, &ArmReport)> = self
            .report
            .arms
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.days.is_empty())
            .collect();
        let Some(start) = arms
            .iter()
            .flat_map(|(_, a)| a.days.iter().map(|d| d.day))
            .min()
        else {
            out.push_str("<p class=\"note\">No days were simulated.</p>\n");
            return;
        };
        let offset = |day: NaiveDate| day.signed_duration_since(start).num_days() as f64;
        let span = arms
            .iter()
            .flat_map(|(_, a)| a.days.iter().map(|d| offset(d.day)))
            .fold(0.0, f64::max);
        let top = arms
            .iter()
            .flat_map(|(_, a)| a.days.iter().map(|d| ratio(d.active_users, a.users)))
            .fold(0.0, f64::max);
        let x = Ticks::new(0.0, span, 6).whole();
        let y = Ticks::new(0.0, top, 5);
        let mut chart = Chart::new(
            900.0,
            260.0,
            Margin {
                top: 12.0,
                right: 28.0,
                bottom: 36.0,
                left: 60.0,
            },
            (x.lo, x.hi),
            (y.lo, y.hi),
        );
        chart.y_axis(&y.labelled(|v| y.percent(v)), "active share", true);
        let date_ticks = x.labelled(|v| {
            start
                .checked_add_days(Days::new(v.max(0.0) as u64))
                .map_or_else(String::new, |d| d.format("%b %-d").to_string())
        });
        chart.x_axis(&date_ticks, "day", true);
        for (i, arm) in arms {
            let colour = arm_colour(i);
            chart.legend_entry(colour, Mark::Line, &arm.name);
            let days = chronological(&arm.days);
            let points: Vec<(f64, f64)> = days
                .iter()
                .map(|d| (offset(d.day), ratio(d.active_users, arm.users)))
                .collect();
            let s = &self.summaries[i];
            let title = format!(
                "{}: {} active on day 1, {} over the last 7 days",
                arm.name,
                pct(s.first_day_active),
                pct(s.last7_active)
            );
            chart.series(&title, |chart| {
                chart.polyline(&points, colour);
                // Markers make single days visible (a one-point line draws nothing) and carry a
                // tooltip each; past two months they would only add clutter.
                if points.len() <= 62 {
                    for (d, &(px, py)) in days.iter().zip(&points) {
                        let tip = format!(
                            "{}, {}: {} active ({} of {})",
                            arm.name,
                            d.day,
                            pct(py),
                            thousands(d.active_users),
                            thousands(arm.users)
                        );
                        chart.circle((px, py), 2.5, colour, &tip);
                    }
                }
            });
        }
        w!(
            out,
            "<figure>{}</figure>\n",
            chart.finish("Daily active share per arm")
        );
    }

    /// One small multiple per arm that used the planner, with the same reasons in the same
    /// order and the same scale, so that the arms can be read across.
    fn suppressions(&self, out: &mut String) {
        out.push_str(
            "<h2 id=\"suppressions\">Suppressions by reason</h2>\n<p>Candidates the planner did \
             not choose, by reason, summed over the run's plans.</p>\n",
        );
        let arms: Vec<(usize, &ArmReport)> = self
            .report
            .arms
            .iter()
            .enumerate()
            .filter(|(_, a)| a.suppressed.values().any(|&n| n > 0))
            .collect();
        if arms.is_empty() {
            out.push_str("<p class=\"note\">No planner suppressions.</p>\n");
            return;
        }
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, arm) in &arms {
            for (reason, &n) in &arm.suppressed {
                if n > 0 {
                    *totals.entry(reason).or_default() += n;
                }
            }
        }
        let mut reasons: Vec<(&str, u64)> = totals.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let max = arms
            .iter()
            .flat_map(|(_, a)| a.suppressed.values())
            .copied()
            .max()
            .unwrap_or(0);
        let x = Ticks::new(0.0, max as f64, 5);
        let longest = reasons
            .iter()
            .map(|(r, _)| r.chars().count())
            .max()
            .unwrap_or(0);
        let left = (text_width(longest) + 16.0).clamp(60.0, 240.0);
        let n = reasons.len() as f64;
        for (i, arm) in &arms {
            let (i, arm) = (*i, *arm);
            let colour = arm_colour(i);
            let total: u64 = arm.suppressed.values().sum();
            let mut chart = Chart::new(
                900.0,
                26.0 * n,
                Margin {
                    top: 10.0,
                    right: 120.0,
                    bottom: 36.0,
                    left,
                },
                (x.lo, x.hi),
                (0.0, n),
            );
            let rows: Vec<(f64, String)> = reasons
                .iter()
                .enumerate()
                .map(|(k, (r, _))| (n - k as f64 - 0.5, r.to_string()))
                .collect();
            chart.y_axis(&rows, "", false);
            chart.x_axis(&x.labelled(|v| x.label(v)), "candidates not chosen", true);
            chart.legend_entry(colour, Mark::Box, &arm.name);
            let title = format!("{}: {} candidates not chosen", arm.name, thousands(total));
            chart.series(&title, |chart| {
                for (k, (reason, _)) in reasons.iter().enumerate() {
                    let count = arm.suppressed.get(*reason).copied().unwrap_or(0);
                    let share = pct(ratio(count, total));
                    let top = n - k as f64 - 0.2;
                    let tip = format!(
                        "{reason}: {} candidates ({share} of {}'s suppressions)",
                        thousands(count),
                        arm.name
                    );
                    chart.rect((0.0, top - 0.6), (count as f64, top), colour, &tip);
                    let (px, py) = (chart.sx(count as f64) + 4.0, chart.sy(top - 0.3) + 4.0);
                    chart.text(
                        (px, py),
                        "start",
                        &format!("{} ({share})", thousands(count)),
                    );
                }
            });
            w!(
                out,
                "<figure><figcaption>{} — {} candidates not chosen</figcaption>{}</figure>\n",
                self.arm_label(i),
                thousands(total),
                chart.finish(&format!("Suppressions by reason, {}", arm.name))
            );
        }
        let without: Vec<String> = self
            .report
            .arms
            .iter()
            .filter(|a| !a.suppressed.values().any(|&n| n > 0))
            .map(|a| escape(&a.name))
            .collect();
        if !without.is_empty() {
            w!(
                out,
                "<p class=\"note\">No planner suppressions for: {}.</p>\n",
                without.join(", ")
            );
        }
    }

    /// Square plots with equal axes, so that the diagonal is the 45° line and distance from it
    /// reads the same in both directions. The range follows the largest probability rather than
    /// 0..1: engagement rates are small, and a 0..1 square would pile every bin into a corner.
    fn calibration(&self, out: &mut String) {
        out.push_str(
            "<h2 id=\"calibration\">Model calibration</h2>\n<p>Predicted probability of \
             engagement against the observed rate, per bin; a point's area follows the number of \
             predictions in its bin. Points on the dashed diagonal are perfectly calibrated.</p>\n",
        );
        let usable =
            |b: &&CalibrationBin| b.count > 0 && b.predicted.is_finite() && b.observed.is_finite();
        let arms: Vec<(usize, &ArmReport)> = self
            .report
            .arms
            .iter()
            .enumerate()
            .filter(|(_, a)| a.calibration.iter().any(|b| usable(&b)))
            .collect();
        if arms.is_empty() {
            out.push_str("<p class=\"note\">No model was trained.</p>\n");
            return;
        }
        out.push_str("<div class=\"row\">\n");
        for (i, arm) in arms {
            let colour = arm_colour(i);
            let bins: Vec<&CalibrationBin> = arm.calibration.iter().filter(usable).collect();
            let top = bins
                .iter()
                .map(|b| b.predicted.max(b.observed))
                .fold(0.0, f64::max)
                .min(1.0);
            let t = Ticks::new(0.0, top, 5);
            let most = bins.iter().map(|b| b.count).max().unwrap_or(1).max(1);
            let count: u64 = bins.iter().map(|b| b.count).sum();
            let gap = bins
                .iter()
                .map(|b| b.count as f64 * (b.predicted - b.observed).abs())
                .sum::<f64>()
                / count.max(1) as f64;
            let mut chart = Chart::new(
                280.0,
                280.0,
                Margin {
                    top: 12.0,
                    right: 16.0,
                    bottom: 36.0,
                    left: 52.0,
                },
                (t.lo, t.hi),
                (t.lo, t.hi),
            );
            let ticks = t.labelled(|v| t.label(v));
            chart.y_axis(&ticks, "observed rate", true);
            chart.x_axis(&ticks, "predicted probability", true);
            chart.series("predicted = observed", |chart| {
                chart.line((t.lo, t.lo), (t.hi, t.hi), "#8c959f", true);
            });
            let title = format!(
                "{}: {} predictions in {} bins",
                arm.name,
                thousands(count),
                bins.len()
            );
            chart.series(&title, |chart| {
                for b in &bins {
                    // Area, not radius, proportional to the count; a floor keeps small bins
                    // visible.
                    let r = (12.0 * (b.count as f64 / most as f64).sqrt()).max(1.5);
                    let tip = format!(
                        "predicted {:.3}, observed {:.3}, {} predictions",
                        finite(b.predicted),
                        finite(b.observed),
                        thousands(b.count)
                    );
                    chart.circle((b.predicted, b.observed), r, colour, &tip);
                }
            });
            chart.legend_entry(colour, Mark::Dot, "bins (area ∝ count)");
            chart.legend_entry("#8c959f", Mark::Dash, "predicted = observed");
            w!(
                out,
                "<figure><figcaption>{} — mean |predicted − observed| {:.3}</figcaption>{}\
                 </figure>\n",
                self.arm_label(i),
                finite(gap),
                chart.finish(&format!("Calibration, {}", arm.name))
            );
        }
        out.push_str("</div>\n");
        let without: Vec<String> = self
            .report
            .arms
            .iter()
            .filter(|a| !a.calibration.iter().any(|b| usable(&b)))
            .map(|a| escape(&a.name))
            .collect();
        if !without.is_empty() {
            w!(
                out,
                "<p class=\"note\">No model was trained for: {}.</p>\n",
                without.join(", ")
            );
        }
    }

    fn per_day(&self, out: &mut String) {
        out.push_str("<h2 id=\"days\">Per-day results</h2>\n");
        if self.report.arms.is_empty() {
            out.push_str("<p class=\"note\">No arms were run.</p>\n");
            return;
        }
        let channels: BTreeSet<&String> = self
            .report
            .arms
            .iter()
            .flat_map(|a| a.days.iter().flat_map(|d| d.messages.keys()))
            .collect();
        for (i, arm) in self.report.arms.iter().enumerate() {
            w!(out, "<h3>{}</h3>\n", self.arm_label(i));
            if arm.days.is_empty() {
                out.push_str("<p class=\"note\">No days.</p>\n");
                continue;
            }
            out.push_str("<div class=\"wide\"><table>\n<thead><tr><th>Day</th>");
            for c in &channels {
                w!(out, "<th>{}</th>", escape(c));
            }
            out.push_str(
                "<th>Messages</th><th>Opens</th><th>Open rate</th><th>Conversions</th>\
                 <th>Unsubscribes</th><th>Active share</th></tr></thead>\n<tbody>\n",
            );
            for d in chronological(&arm.days) {
                w!(out, "<tr><td>{}</td>", d.day);
                let mut total = 0;
                for c in &channels {
                    let n = d.messages.get(*c).copied().unwrap_or(0);
                    total += n;
                    w!(out, "<td>{}</td>", thousands(n));
                }
                w!(
                    out,
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    thousands(total),
                    thousands(d.opens),
                    pct(ratio(d.opens, total)),
                    thousands(d.conversions),
                    thousands(d.unsubscribes),
                    pct(ratio(d.active_users, arm.users))
                );
            }
            out.push_str("</tbody></table></div>\n");
        }
    }
}

fn chronological(days: &[DayRow]) -> Vec<&DayRow> {
    let mut days: Vec<&DayRow> = days.iter().collect();
    days.sort_by_key(|d| d.day);
    days
}

/// A share that is 0 rather than NaN when there is nothing to divide by.
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Guards every float the page writes: a NaN or infinity in SVG makes browsers drop the element.
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", finite(v) * 100.0)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Roughly how wide `chars` characters are at the plots' 11px font: layout without a browser to
/// measure text.
fn text_width(chars: usize) -> f64 {
    chars as f64 * 6.4
}

/// A coordinate as written into SVG: one decimal, never NaN, never "-0.0".
struct Px(f64);

impl fmt::Display for Px {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}", finite(self.0) + 0.0)
    }
}

/// An axis range widened to whole multiples of a 1, 2 or 5 × 10^k step: ticks a reader can
/// interpolate between.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ticks {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Ticks {
    /// About `target` intervals over `lo..hi`. A degenerate range (empty, reversed or not
    /// finite) still gets a usable axis, since an arm that sent nothing is a legitimate result.
    fn new(lo: f64, hi: f64, target: usize) -> Ticks {
        let (lo, hi) = match (lo.is_finite(), hi.is_finite()) {
            (true, true) if hi > lo => (lo, hi),
            (true, true) if lo > hi => (hi, lo),
            (true, _) => (lo, lo + lo.abs().max(1.0)),
            (false, true) => (hi - hi.abs().max(1.0), hi),
            (false, false) => (0.0, 1.0),
        };
        let step = nice_step((hi - lo) / target.max(1) as f64);
        // The epsilon keeps rounding noise (0.30000000000000004 / 0.1) from adding a tick.
        Ticks {
            lo: ((lo / step) + 1e-9).floor() * step,
            hi: ((hi / step) - 1e-9).ceil() * step,
            step,
        }
    }

    /// The same axis with a step of at least 1, for counts of whole things such as days.
    fn whole(self) -> Ticks {
        if self.step >= 1.0 {
            return self;
        }
        let lo = self.lo.floor();
        Ticks {
            lo,
            hi: self.hi.ceil().max(lo + 1.0),
            step: 1.0,
        }
    }

    fn values(&self) -> Vec<f64> {
        let n = finite(((self.hi - self.lo) / self.step).round()).clamp(0.0, 1000.0) as usize;
        (0..=n).map(|i| self.lo + i as f64 * self.step).collect()
    }

    fn labelled(&self, label: impl Fn(f64) -> String) -> Vec<(f64, String)> {
        self.values().into_iter().map(|v| (v, label(v))).collect()
    }

    /// A tick label with as many decimals as the step needs, and k or M past ten thousand so
    /// that labels fit the margin.
    fn label(&self, v: f64) -> String {
        let top = self.lo.abs().max(self.hi.abs());
        let (scale, suffix) = if top >= 1e6 {
            (1e6, "M")
        } else if top >= 1e4 {
            (1e3, "k")
        } else {
            (1.0, "")
        };
        if v == 0.0 {
            return "0".to_string();
        }
        let decimals = decimals(self.step / scale);
        if scale == 1.0 && decimals == 0 && v >= 0.0 {
            return thousands(v.round() as u64);
        }
        format!("{:.*}{suffix}", decimals, finite(v / scale))
    }

    fn percent(&self, v: f64) -> String {
        format!("{:.*}%", decimals(self.step * 100.0), finite(v * 100.0))
    }
}

fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powi(raw.log10().floor() as i32);
    let norm = raw / magnitude;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Decimals needed to tell ticks `step` apart: 0 for 1 and up, 1 for 0.1..1, 2 for 0.01..0.1.
fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) || step >= 1.0 {
        return 0;
    }
    (-step.log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize
}

struct Margin {
    top: f64,
    right: f64,
    bottom: f64,
    left: f64,
}

#[derive(Clone, Copy)]
enum Mark {
    Box,
    Line,
    Dash,
    Dot,
}

/// One SVG plot: a plot area inside margins, data ranges mapped onto it, and the legend, which
/// goes below the x axis because only there can it wrap onto more lines without moving the plot.
struct Chart {
    width: f64,
    height: f64,
    margin: Margin,
    x: (f64, f64),
    y: (f64, f64),
    body: String,
    legend: Vec<(&'static str, Mark, String)>,
}

impl Chart {
    /// `plot_height` is the height of the plot area alone; margins and legend add to it.
    fn new(width: f64, plot_height: f64, margin: Margin, x: (f64, f64), y: (f64, f64)) -> Chart {
        Chart {
            width,
            height: margin.top + plot_height + margin.bottom,
            margin,
            x,
            y,
            body: String::new(),
            legend: Vec::new(),
        }
    }

    fn left(&self) -> f64 {
        self.margin.left
    }

    fn right(&self) -> f64 {
        (self.width - self.margin.right).max(self.margin.left + 1.0)
    }

    fn top(&self) -> f64 {
        self.margin.top
    }

    fn bottom(&self) -> f64 {
        (self.height - self.margin.bottom).max(self.margin.top + 1.0)
    }

    /// Data to pixels. Values outside the range are pinned to its edge so nothing is drawn
    /// outside the plot area.
    fn sx(&self, x: f64) -> f64 {
        scale(x, self.x, self.left(), self.right())
    }

    fn sy(&self, y: f64) -> f64 {
        scale(y, self.y, self.bottom(), self.top())
    }

    fn y_axis(&mut self, ticks: &[(f64, String)], title: &str, grid: bool) {
        let (l, r) = (self.left(), self.right());
        self.body.push_str("<g fill=\"#444\">");
        for (v, label) in ticks {
            let y = self.sy(*v);
            if grid {
                w!(
                    self.body,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#eaeef2\"/>",
                    Px(l),
                    Px(r),
                    Px(y),
                    Px(y)
                );
            }
            w!(
                self.body,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                Px(l - 6.0),
                Px(y + 4.0),
                escape(label)
            );
        }
        w!(
            self.body,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#8c959f\"/>",
            Px(l),
            Px(l),
            Px(self.top()),
            Px(self.bottom())
        );
        if !title.is_empty() {
            let mid = (self.top() + self.bottom()) / 2.0;
            w!(
                self.body,
                "<text transform=\"translate(12 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
                Px(mid),
                escape(title)
            );
        }
        self.body.push_str("</g>");
    }

    fn x_axis(&mut self, ticks: &[(f64, String)], title: &str, grid: bool) {
        let (t, b) = (self.top(), self.bottom());
        self.body.push_str("<g fill=\"#444\">");
        for (v, label) in ticks {
            let x = self.sx(*v);
            if grid {
                w!(
                    self.body,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#eaeef2\"/>",
                    Px(x),
                    Px(x),
                    Px(t),
                    Px(b)
                );
            }
            w!(
                self.body,
                "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#8c959f\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                Px(x),
                Px(x),
                Px(b),
                Px(b + 4.0),
                Px(x),
                Px(b + 16.0),
                escape(label)
            );
        }
        w!(
            self.body,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#8c959f\"/>",
            Px(self.left()),
            Px(self.right()),
            Px(b),
            Px(b)
        );
        if !title.is_empty() {
            w!(
                self.body,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                Px((self.left() + self.right()) / 2.0),
                Px(b + 31.0),
                escape(title)
            );
        }
        self.body.push_str("</g>");
    }

    /// Groups what `draw` adds under one `<title>`, which browsers show on hover over any of it.
    fn series(&mut self, title: &str, draw: impl FnOnce(&mut Chart)) {
        w!(self.body, "<g><title>{}</title>", escape(title));
        draw(self);
        self.body.push_str("</g>");
    }

    fn polyline(&mut self, points: &[(f64, f64)], colour: &str) {
        let mut coords = String::new();
        for &(x, y) in points {
            w!(coords, "{},{} ", Px(self.sx(x)), Px(self.sy(y)));
        }
        w!(
            self.body,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
             stroke-linejoin=\"round\"/>",
            coords.trim_end()
        );
    }

    /// A rectangle between two data corners; one with no visible extent is left out rather than
    /// drawn as a hairline.
    fn rect(&mut self, a: (f64, f64), b: (f64, f64), colour: &str, title: &str) {
        let (x0, x1) = (self.sx(a.0), self.sx(b.0));
        let (y0, y1) = (self.sy(a.1), self.sy(b.1));
        let (w, h) = ((x1 - x0).abs(), (y1 - y0).abs());
        if w < 0.05 || h < 0.05 {
            return;
        }
        w!(
            self.body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{colour}\">\
             <title>{}</title></rect>",
            Px(x0.min(x1)),
            Px(y0.min(y1)),
            Px(w),
            Px(h),
            escape(title)
        );
    }

    fn circle(&mut self, at: (f64, f64), radius: f64, colour: &str, title: &str) {
        w!(
            self.body,
            "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{colour}\" fill-opacity=\"0.7\" \
             stroke=\"{colour}\"><title>{}</title></circle>",
            Px(self.sx(at.0)),
            Px(self.sy(at.1)),
            Px(radius),
            escape(title)
        );
    }

    fn line(&mut self, a: (f64, f64), b: (f64, f64), colour: &str, dashed: bool) {
        w!(
            self.body,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" \
             stroke-width=\"1.5\"{}/>",
            Px(self.sx(a.0)),
            Px(self.sy(a.1)),
            Px(self.sx(b.0)),
            Px(self.sy(b.1)),
            if dashed {
                " stroke-dasharray=\"5 4\""
            } else {
                ""
            }
        );
    }

    /// Text at pixel coordinates, for labels placed relative to what was drawn.
    fn text(&mut self, at: (f64, f64), anchor: &str, text: &str) {
        w!(
            self.body,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"#444\">{}</text>",
            Px(at.0),
            Px(at.1),
            escape(text)
        );
    }

    fn legend_entry(&mut self, colour: &'static str, mark: Mark, label: &str) {
        self.legend.push((colour, mark, label.to_string()));
    }

    fn finish(self, title: &str) -> String {
        let mut legend = String::new();
        let (mut x, mut y) = (self.left(), self.height + 4.0);
        let mut rows = 0;
        for (colour, mark, label) in &self.legend {
            let w = 22.0 + text_width(label.chars().count()) + 16.0;
            if rows == 0 || (x + w > self.width && x > self.left()) {
                if rows > 0 {
                    y += 18.0;
                }
                x = self.left();
                rows += 1;
            }
            let mid = y + 7.0;
            match mark {
                Mark::Box => w!(
                    legend,
                    "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"10\" rx=\"2\" fill=\"{colour}\"/>",
                    Px(x),
                    Px(mid - 5.0)
                ),
                Mark::Line | Mark::Dash => w!(
                    legend,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{colour}\" \
                     stroke-width=\"2\"{}/>",
                    Px(x),
                    Px(x + 16.0),
                    Px(mid),
                    Px(mid),
                    if matches!(mark, Mark::Dash) {
                        " stroke-dasharray=\"4 3\""
                    } else {
                        ""
                    }
                ),
                Mark::Dot => w!(
                    legend,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"5\" fill=\"{colour}\" fill-opacity=\"0.7\"/>",
                    Px(x + 7.0),
                    Px(mid)
                ),
            }
            w!(
                legend,
                "<text x=\"{}\" y=\"{}\" fill=\"#444\">{}</text>",
                Px(x + 22.0),
                Px(mid + 4.0),
                escape(label)
            );
            x += w;
        }
        let height = if rows == 0 { self.height } else { y + 20.0 };
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" \
             height=\"{h}\" font-family=\"system-ui, sans-serif\" font-size=\"11\">\
             <title>{}</title>{}<g class=\"legend\">{legend}</g></svg>",
            escape(title),
            self.body,
            w = Px(self.width),
            h = Px(height),
        )
    }
}

fn scale(v: f64, (d0, d1): (f64, f64), r0: f64, r1: f64) -> f64 {
    let span = d1 - d0;
    if !(v.is_finite() && span.is_finite() && span > 0.0) {
        return r0;
    }
    r0 + ((v - d0) / span).clamp(0.0, 1.0) * (r1 - r0)
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
