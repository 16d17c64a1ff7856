//! Local time: cutting the plan's horizon into pieces of constant local hour and quiet status.
//!
//! A user's horizon `[now, now + horizon)` is cut at every whole local hour, at every local time
//! where some channel's quiet hours start or end, and at every UTC-offset change (daylight saving).
//! Within one piece the local hour and the quiet status of every channel are constant, so the
//! selection loop never converts time again: it reads a piece's `hour` and `quiet` bits.
//!
//! Offsets come from chrono-tz. They are looked up at a few sample instants across the horizon
//! (every 6 hours) and transitions are located to the second by bisection between samples whose
//! offsets differ, so a user whose horizon contains no transition costs a handful of lookups.

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::config::Compiled;

/// A stretch of time `[start, end)` (unix seconds) with one local hour and one quiet status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub start: i64,
    pub end: i64,
    /// Local hour, 0–23.
    pub hour: u8,
    /// Bit `c` set: channel `c` is in its quiet hours.
    pub quiet: u32,
}

/// The UTC offset in seconds at instant `t`.
pub(crate) fn offset_at(tz: Tz, t: i64) -> i32 {
    match DateTime::from_timestamp(t, 0) {
        Some(dt) => tz
            .offset_from_utc_datetime(&dt.naive_utc())
            .fix()
            .local_minus_utc(),
        None => 0,
    }
}

const SAMPLE: i64 = 6 * 3600;

/// Pushes `(from, offset)` for each constant-offset segment of `[start, end)`.
fn offset_segments(tz: Tz, start: i64, end: i64, out: &mut Vec<(i64, i32)>) {
    let mut t = start;
    let mut off = offset_at(tz, t);
    out.push((t, off));
    while t < end {
        let next = (t + SAMPLE).min(end);
        let next_off = offset_at(tz, next);
        if next_off != off {
            // The offset changes somewhere in (t, next]: find the first second with the new one.
            let (mut lo, mut hi) = (t, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset_at(tz, mid) == off {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            out.push((hi, next_off));
            off = next_off;
        }
        t = next;
    }
}

/// Whether local second-of-day `s` is inside `[from, to)`, which may wrap midnight.
#[inline]
pub(crate) fn in_quiet(s: u32, (from, to): (u32, u32)) -> bool {
    if from < to {
        from <= s && s < to
    } else {
        s >= from || s < to
    }
}

/// Cuts `[start, end)` into pieces for the zone `tz`; `segs` is scratch space.
pub(crate) fn build_pieces(
    tz: Tz,
    start: i64,
    end: i64,
    c: &Compiled,
    segs: &mut Vec<(i64, i32)>,
    out: &mut Vec<Piece>,
) {
    segs.clear();
    out.clear();
    if start >= end {
        return;
    }
    offset_segments(tz, start, end, segs);
    for (k, &(seg_start, off)) in segs.iter().enumerate() {
        let seg_end = segs.get(k + 1).map_or(end, |s| s.0);
        let mut t = seg_start;
        while t < seg_end {
            let local = (t + off as i64).rem_euclid(86400) as u32;
            let mut next = (local / 3600 + 1) * 3600;
            for &b in &c.quiet_bounds {
                if b > local {
                    next = next.min(b);
                    break;
                }
            }
            let t2 = (t + (next - local) as i64).min(seg_end);
            let mut quiet = 0u32;
            for (ch, q) in c.quiet.iter().enumerate() {
                if let Some(q) = q {
                    if in_quiet(local, *q) {
                        quiet |= 1 << ch;
                    }
                }
            }
            out.push(Piece {
                start: t,
                end: t2,
                hour: (local / 3600) as u8,
                quiet,
            });
            t = t2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PlannerConfig;
    use chrono::Timelike;

    fn compiled(quiet: Option<(&str, &str)>) -> Compiled {
        let json = serde_json::json!({
            "channels": [{"name": "push", "quiet_hours": quiet.map(|(f, t)| serde_json::json!({"from": f, "to": t}))}],
            "objectives": {"default": {}},
            "horizon_secs": 86400,
        });
        serde_json::from_value::<PlannerConfig>(json)
            .unwrap()
            .compile()
            .unwrap()
    }

    /// Pieces tile the horizon, never exceed an hour, and carry the local hour and quiet status
    /// that chrono-tz gives at both their ends, across both daylight-saving changes.
    #[test]
    fn pieces_tile_the_horizon_with_the_right_local_hour() {
        let c = compiled(Some(("22:30", "07:45")));
        for (zone, start) in [
            ("Europe/Stockholm", 1_774_738_800i64 - 3 * 3600 + 17),
            ("Europe/Stockholm", 1_792_882_800 - 1234),
            ("America/New_York", 1_772_935_200),
            ("America/New_York", 1_793_487_600),
            ("Asia/Kolkata", 1_780_000_000),
            ("Australia/Lord_Howe", 1_775_318_400 - 86400),
        ] {
            let tz: Tz = zone.parse().unwrap();
            let (mut segs, mut pieces) = (Vec::new(), Vec::new());
            let end = start + 2 * 86400;
            build_pieces(tz, start, end, &c, &mut segs, &mut pieces);
            assert_eq!(pieces.first().unwrap().start, start);
            assert_eq!(pieces.last().unwrap().end, end);
            for w in pieces.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            for p in &pieces {
                assert!(p.start < p.end && p.end - p.start <= 3600, "{zone} {p:?}");
                for t in [p.start, p.end - 1] {
                    let local = DateTime::from_timestamp(t, 0).unwrap().with_timezone(&tz);
                    assert_eq!(local.hour() as u8, p.hour, "{zone} at {t}");
                    let sod = local.num_seconds_from_midnight();
                    let quiet = in_quiet(sod, (22 * 3600 + 1800, 7 * 3600 + 2700));
                    assert_eq!(quiet, p.quiet & 1 == 1, "{zone} at {t}");
                }
            }
        }
    }
}
