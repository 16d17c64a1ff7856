//! The receipt log: every delivery as the user's phone and inbox saw it. It lets a test check
//! tern's caps from the receiving side, independently of tern's own counting.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// One delivery handed to the simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub user_id: String,
    pub channel: String,
    pub category: String,
    pub at: DateTime<Utc>,
    /// False when the channel did not reach the user (no device, unverified, unsubscribed,
    /// push turned off). It was still sent, so it still counts against a cap.
    pub reached: bool,
}

/// The most messages any one user received within any window of length `window`
/// (`[t, t + window)`), counting only `channel` when given. Every delivery counts, reached or
/// not, because a cap limits what is sent.
pub fn max_in_window(receipts: &[Receipt], channel: Option<&str>, window: TimeDelta) -> usize {
    let mut by_user: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for r in receipts {
        if channel.is_none_or(|c| c == r.channel) {
            by_user.entry(&r.user_id).or_default().push(r.at);
        }
    }
    let mut best = 0;
    for times in by_user.values_mut() {
        times.sort();
        // A window that holds the most messages can be slid to start at one of them.
        let mut end = 0;
        for (i, &t) in times.iter().enumerate() {
            while end < times.len() && times[end] < t + window {
                end += 1;
            }
            best = best.max(end - i);
        }
    }
    best
}
