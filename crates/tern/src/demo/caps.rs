//! The demo's own cap checker: every send the simulator received, held against the caps of
//! the arm the user was in. A planner bug that broke a cap would show here.

use super::*;

/// Every cap rule broken, judged from what each user actually received (the simulator's log),
/// under the cap set the policy gives that user. Classes the set does not hold back (its
/// `exempt`, or a class that bypasses caps) are not counted.
pub fn cap_violations(bundle: &Bundle, receipts: &[tern_sim::Receipt]) -> Vec<String> {
    let mut by_user: BTreeMap<&str, Vec<&tern_sim::Receipt>> = BTreeMap::new();
    for r in receipts {
        by_user.entry(&r.user_id).or_default().push(r);
    }
    let mut violations = Vec::new();
    for (user, mut received) in by_user {
        received.sort_by_key(|r| r.at);
        let Some(caps) = user_caps(bundle, user) else {
            continue;
        };
        let exempt = |r: &tern_sim::Receipt| {
            r.category
                .parse::<tern_sim::Category>()
                .ok()
                .and_then(|c| Priority::parse(c.priority()))
                .is_some_and(|p| !bundle.caps_hold(caps, p))
        };
        let counted: Vec<Sent> = received
            .into_iter()
            .filter(|r| !exempt(r))
            .map(|r| Sent {
                channel: r.channel.clone(),
                category: r.category.clone(),
                exempt: false,
                at: r.at,
            })
            .collect();
        for (i, r) in counted.iter().enumerate() {
            if !allows(caps, &counted[..i], &r.channel, &r.category, r.at) {
                violations.push(format!(
                    "{user}: {} {} at {} breaks cap set {}",
                    r.channel, r.category, r.at, caps.metadata.name
                ));
            }
        }
    }
    violations
}

/// The cap set the policy applies to a user: their effective experiment arm's, else the
/// default; none for a holdout (they get nothing to count).
pub(super) fn user_caps<'b>(bundle: &'b Bundle, user: &str) -> Option<&'b CapSet> {
    match tern_daemon::translate::effective_arm(bundle, user) {
        Some((_, arm)) if arm.holdout => None,
        Some((_, arm)) => match &arm.caps {
            Some(name) => bundle.cap_set(name),
            None => bundle.default_caps(),
        },
        None => bundle.default_caps(),
    }
}
