//! What the planner can run, in one place, so that `tern policy check` and the planner cannot
//! disagree: the policy checker reports a breach at `file:line:col`, and the planner refuses the
//! same breach with the same words when a configuration arrives by another road (a JSON config,
//! a test). Anything `check` accepts, the planner accepts.

/// The most channels a bundle may declare: the planner keeps one bit per channel.
pub const MAX_CHANNELS: usize = 32;

/// The most limits one cap set may hold: the planner keeps one bit per limit. A rule with both
/// `max`/`per` and `minGap` holds two limits.
pub const MAX_CAP_LIMITS: usize = 64;

/// The longest cap window, minimum gap and planning horizon: 366 days. The planner loads a
/// user's sends over the longest cap window, and a year is the longest any rule we have seen
/// counts over; a longer one would make every replan read years of history.
pub const MAX_WINDOW_SECS: u64 = 366 * 86_400;

/// The largest `max` of a cap rule.
pub const MAX_CAP_COUNT: u64 = u32::MAX as u64;

/// One validated cap rule: a count limit over a rolling window, a minimum gap, or both (both
/// hold). Durations are whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapLimits {
    /// `(max, window_secs)`.
    pub count: Option<(u32, u64)>,
    /// The minimum time between two counted messages.
    pub min_gap_secs: Option<u64>,
}

impl CapLimits {
    /// How many of a set's [`MAX_CAP_LIMITS`] this rule uses.
    pub fn slots(&self) -> usize {
        usize::from(self.count.is_some()) + usize::from(self.min_gap_secs.is_some())
    }
}

/// Why a cap rule cannot be run. The messages name the policy language's fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapRuleError {
    #[error("this rule limits nothing: give `max` and `per`, `minGap`, or both")]
    Nothing,
    #[error("`max` needs `per`")]
    MaxWithoutPer,
    #[error("`per` needs `max`")]
    PerWithoutMax,
    #[error("`max` must be at most {MAX_CAP_COUNT}, found {0}")]
    MaxTooLarge(u64),
    #[error("`{field}` must be between 1 second and 366 days, found {secs} seconds")]
    Window { field: &'static str, secs: u64 },
}

/// Validates one cap rule as the policy language writes it: `max` with `per`, `minGap`, or both.
pub fn cap_limits(
    max: Option<u64>,
    per_secs: Option<u64>,
    min_gap_secs: Option<u64>,
) -> Result<CapLimits, CapRuleError> {
    let window = |field: &'static str, secs: u64| {
        if secs == 0 || secs > MAX_WINDOW_SECS {
            Err(CapRuleError::Window { field, secs })
        } else {
            Ok(secs)
        }
    };
    let count = match (max, per_secs) {
        (None, None) => None,
        (Some(_), None) => return Err(CapRuleError::MaxWithoutPer),
        (None, Some(_)) => return Err(CapRuleError::PerWithoutMax),
        (Some(m), Some(_)) if m > MAX_CAP_COUNT => return Err(CapRuleError::MaxTooLarge(m)),
        (Some(m), Some(w)) => Some((m as u32, window("per", w)?)),
    };
    let min_gap_secs = min_gap_secs.map(|g| window("minGap", g)).transpose()?;
    if count.is_none() && min_gap_secs.is_none() {
        return Err(CapRuleError::Nothing);
    }
    Ok(CapLimits {
        count,
        min_gap_secs,
    })
}

/// Validates a planning horizon.
pub fn check_horizon(secs: u64) -> Result<(), String> {
    if secs == 0 || secs > MAX_WINDOW_SECS {
        Err(format!(
            "the horizon must be between 1 second and 366 days, found {secs} seconds"
        ))
    } else {
        Ok(())
    }
}

/// The largest share of would-be sends a policy may withhold at random: past it, the
/// exploration would cost more than the policy it is meant to improve.
pub const MAX_WITHHOLD: f64 = 0.5;

/// Validates a withhold share: the fraction of would-be sends withheld at random so that the
/// model sees what happens without a send, in `[0, MAX_WITHHOLD]`.
pub fn check_withhold(share: f64) -> Result<(), String> {
    if (0.0..=MAX_WITHHOLD).contains(&share) {
        Ok(())
    } else {
        Err(format!(
            "withhold must be between 0 and {MAX_WITHHOLD}, found {share}"
        ))
    }
}

/// Validates an exploration share: a fraction of users in `[0, 1)` is planned at random, and
/// at 1 no plan would follow the model at all.
pub fn check_exploration(share: f64) -> Result<(), String> {
    if (0.0..1.0).contains(&share) {
        Ok(())
    } else {
        Err(format!("exploration must be in [0, 1), found {share}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_may_hold_a_count_a_gap_or_both() {
        let both = cap_limits(Some(2), Some(86_400), Some(3 * 3600)).unwrap();
        assert_eq!(both.count, Some((2, 86_400)));
        assert_eq!(both.min_gap_secs, Some(3 * 3600));
        assert_eq!(both.slots(), 2);
        assert_eq!(cap_limits(None, None, Some(60)).unwrap().slots(), 1);
        assert_eq!(cap_limits(Some(1), Some(60), None).unwrap().slots(), 1);
    }

    #[test]
    fn what_cannot_run_is_refused_with_the_field_named() {
        assert_eq!(cap_limits(None, None, None), Err(CapRuleError::Nothing));
        assert_eq!(
            cap_limits(Some(1), None, None),
            Err(CapRuleError::MaxWithoutPer)
        );
        assert_eq!(
            cap_limits(None, Some(60), None),
            Err(CapRuleError::PerWithoutMax)
        );
        let long = 400 * 86_400;
        assert_eq!(
            cap_limits(Some(1), Some(long), None),
            Err(CapRuleError::Window {
                field: "per",
                secs: long
            })
        );
        assert!(cap_limits(None, None, Some(0)).is_err());
        assert!(cap_limits(Some(1), Some(MAX_WINDOW_SECS), Some(MAX_WINDOW_SECS)).is_ok());
        assert!(cap_limits(Some(1 << 40), Some(60), None).is_err());
        assert!(check_horizon(MAX_WINDOW_SECS + 1).is_err());
        assert!(check_exploration(1.0).is_err());
        assert!(check_exploration(0.0).is_ok());
    }
}
