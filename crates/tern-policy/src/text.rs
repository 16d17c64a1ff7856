//! Small text helpers shared by the decoder and the checks: name syntax, durations, times of
//! day, and "did you mean" suggestions.

use chrono::{NaiveTime, TimeDelta};

/// The longest duration the language accepts (ten years). Longer ones are mistakes, and the
/// bound keeps arithmetic on `TimeDelta` far from overflow.
pub const MAX_DURATION_SECS: i64 = 10 * 366 * 86_400;

/// Whether `s` is a valid name: `[a-z][a-z0-9_-]*`, at most 63 characters (so that names fit
/// Kubernetes labels and metric label values). The same rule as `tern_core::validate_name`,
/// which the API applies to the names upstream systems send: a name a policy can declare is
/// exactly a name a request can use.
pub fn is_name(s: &str) -> bool {
    tern_core::validate_name("name", s).is_ok()
}

/// Parses a duration such as `30m`, `4h`, `1d`, `7d`, `2w` or `1h30m` (units s, m, h, d, w,
/// largest first is not required). Zero and negative durations are refused: every duration in
/// the language is a length of time that must pass.
pub fn parse_duration(s: &str) -> Result<TimeDelta, String> {
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("unknown unit {c:?} in duration {s:?}")),
        };
        if digits.is_empty() {
            return Err(format!("missing number before {c:?} in duration {s:?}"));
        }
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("duration {s:?} is too long"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!("duration {s:?} needs a unit after {digits}"));
    }
    if total == 0 {
        return Err("duration must be longer than 0".to_string());
    }
    if total > MAX_DURATION_SECS {
        return Err(format!("duration {s:?} is longer than ten years"));
    }
    TimeDelta::try_seconds(total).ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Parses a time of day written `HH:MM` (24-hour clock, two digits each).
pub fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    let h: u32 = s.get(0..2)?.parse().ok()?;
    let m: u32 = s.get(3..5)?.parse().ok()?;
    if !b[0].is_ascii_digit() || !b[3].is_ascii_digit() {
        return None;
    }
    NaiveTime::from_hms_opt(h, m, 0)
}

/// Levenshtein distance in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate, when it is close enough to be a likely typo: at most a third of the
/// word's length away (at least one edit), compared case-insensitively.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if word.chars().count() > 64 {
        return None;
    }
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(TimeDelta::minutes(30)));
        assert_eq!(parse_duration("1h30m"), Ok(TimeDelta::minutes(90)));
        assert_eq!(parse_duration("7d"), Ok(TimeDelta::days(7)));
        assert_eq!(parse_duration("2w"), Ok(TimeDelta::days(14)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("-1d").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_hhmm("22:00"), NaiveTime::from_hms_opt(22, 0, 0));
        assert!(parse_hhmm("24:00").is_none());
        assert!(parse_hhmm("7:00").is_none());
        assert!(parse_hhmm("+1:00").is_none());
        assert!(parse_hhmm("é:00").is_none());
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("quietHour", ["quietHours", "budget"]),
            Some("quietHours")
        );
        assert_eq!(did_you_mean("mingap", ["minGap", "max"]), Some("minGap"));
        assert_eq!(did_you_mean("zzz", ["minGap", "max"]), None);
    }
}
