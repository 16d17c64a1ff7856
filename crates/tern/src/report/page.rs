//! The page: the report's sections, tables and charts as one self-contained HTML file.

use super::*;

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
pub(super) fn escape(s: &str) -> String {
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

pub(super) const CSS: &str = "\
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
pub(super) const ARM_COLOURS: [&str; 6] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
];

/// A second set, from Paul Tol's muted scheme, so that a channel is never mistaken for an arm.
pub(super) const CHANNEL_COLOURS: [&str; 6] = [
    "#332288", "#44AA99", "#DDCC77", "#CC6677", "#88CCEE", "#AA4499",
];

pub(super) fn arm_colour(index: usize) -> &'static str {
    ARM_COLOURS[index % ARM_COLOURS.len()]
}

/// What the sections share: the summaries, and one channel list for the whole report so that a
/// channel has the same colour and column in every arm.
pub(super) struct Page<'a> {
    pub(super) report: &'a Report,
    pub(super) summaries: Vec<ArmSummary>,
    pub(super) channels: Vec<String>,
}

impl<'a> Page<'a> {
    pub(super) fn new(report: &'a Report) -> Self {
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

    pub(super) fn channel_colour(&self, channel: &str) -> &'static str {
        let i = self.channels.iter().position(|c| c == channel).unwrap_or(0);
        CHANNEL_COLOURS[i % CHANNEL_COLOURS.len()]
    }

    pub(super) fn arm_label(&self, index: usize) -> String {
        format!(
            "<span class=\"swatch\" style=\"background:{}\"></span>{}",
            arm_colour(index),
            escape(&self.report.arms[index].name)
        )
    }

    pub(super) fn summary(&self, out: &mut String) {
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
    pub(super) fn volume(&self, out: &mut String) {
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
    pub(super) fn retention(&self, out: &mut String) {
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
    pub(super) fn suppressions(&self, out: &mut String) {
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
    pub(super) fn calibration(&self, out: &mut String) {
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

    pub(super) fn per_day(&self, out: &mut String) {
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

pub(super) fn chronological(days: &[DayRow]) -> Vec<&DayRow> {
    let mut days: Vec<&DayRow> = days.iter().collect();
    days.sort_by_key(|d| d.day);
    days
}

/// A share that is 0 rather than NaN when there is nothing to divide by.
pub(super) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Guards every float the page writes: a NaN or infinity in SVG makes browsers drop the element.
pub(super) fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

pub(super) fn pct(v: f64) -> String {
    format!("{:.1}%", finite(v) * 100.0)
}

pub(super) fn thousands(n: u64) -> String {
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
