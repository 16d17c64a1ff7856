//! tern's domain vocabulary.
//!
//! Every other crate speaks in these types: the store persists them, the planner reasons over them,
//! the server translates them to and from protobuf. They are plain data (no IO, no SQL, no gRPC) so
//! that any crate can depend on this one without pulling in a database driver or a network stack.
//!
//! # Layout
//! - [`Opportunity`] and [`NewOpportunity`]: a message that *could* be sent to one user, and the
//!   validation ([`NewOpportunity::validate`]) every entry point applies before anything is stored.
//! - [`OutcomeKind`], [`AckStatus`], [`ItemState`], [`OpportunityState`]: the closed sets of states
//!   and outcomes, each with a stable lowercase wire/database name (`as_str` / `FromStr`).
//! - [`SplitMix64`]: the seeded generator behind every random draw (exploration, training).
//! - [`validate_name`]: the rule for channel, category and priority-class names, which policies
//!   declare freely (`push`, `email`, `in_app`, `sms`, ...).

mod random;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use random::SplitMix64;

/// Users are identified by the upstream system's id, as an opaque string. Every per-user table is
/// keyed by it first, which is what lets the data be distributed by user.
pub type UserId = String;

/// Opportunity ids are assigned by the store, unique per database.
pub type OpportunityId = i64;

/// The priority class that exempts a message from marketing caps.
pub const TRANSACTIONAL: &str = "transactional";

/// The longest accepted name (channel, category, priority class, template, source).
pub const MAX_NAME_LEN: usize = 128;

/// The longest accepted user id or dedupe key.
pub const MAX_KEY_LEN: usize = 512;

/// A name that policies declare (channel, category, priority class): lowercase ASCII letters,
/// digits, `_` and `-`, starting with a letter. The restriction keeps names safe in metric labels,
/// file names and comma-separated lists.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), InvalidInput> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(format!(
            "{what} {name:?} is not a valid name: use 1 to {MAX_NAME_LEN} lowercase letters, digits, '_' or '-', starting with a letter"
        )))
    }
}

/// Why an input was refused, in one sentence meant for the caller that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

impl InvalidInput {
    pub fn new(message: impl Into<String>) -> Self {
        InvalidInput(message.into())
    }
}

/// An opportunity as submitted by an upstream system or created by a generator, before the store
/// has assigned it an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOpportunity {
    pub user_id: UserId,
    /// Unique per user: resubmitting the same key is a no-op, which makes upstream retries safe.
    pub dedupe_key: String,
    /// The upstream system or generator that created it.
    pub source: String,
    pub template: String,
    pub category: String,
    /// The priority class, e.g. `transactional` or `marketing`.
    pub priority: String,
    /// Channels this opportunity may be sent on, in no particular order.
    pub channels: Vec<String>,
    /// Domain value signals (e.g. `relevance`, `order_value`) that the model reads as features.
    pub signals: BTreeMap<String, f64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl NewOpportunity {
    /// Checks everything that can be checked without the database. The store refuses rows that
    /// fail this, so that one malformed row in a batch is reported rather than failing the batch.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.user_id.is_empty() || self.user_id.len() > MAX_KEY_LEN {
            return Err(InvalidInput::new(format!(
                "user_id must be 1 to {MAX_KEY_LEN} bytes"
            )));
        }
        if self.dedupe_key.is_empty() || self.dedupe_key.len() > MAX_KEY_LEN {
            return Err(InvalidInput::new(format!(
                "dedupe_key must be 1 to {MAX_KEY_LEN} bytes"
            )));
        }
        if self.source.is_empty() || self.source.len() > MAX_NAME_LEN {
            return Err(InvalidInput::new(format!(
                "source must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        if self.template.is_empty() || self.template.len() > MAX_NAME_LEN {
            return Err(InvalidInput::new(format!(
                "template must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        validate_name("category", &self.category)?;
        validate_name("priority", &self.priority)?;
        if self.channels.is_empty() {
            return Err(InvalidInput::new("channels must name at least one channel"));
        }
        for (i, channel) in self.channels.iter().enumerate() {
            validate_name("channel", channel)?;
            if self.channels[..i].contains(channel) {
                return Err(InvalidInput::new(format!(
                    "channel {channel:?} is listed twice"
                )));
            }
        }
        for (name, value) in &self.signals {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(InvalidInput::new(format!(
                    "signal names must be 1 to {MAX_NAME_LEN} bytes"
                )));
            }
            if !value.is_finite() {
                return Err(InvalidInput::new(format!(
                    "signal {name:?} must be a finite number"
                )));
            }
        }
        if self.expires_at <= self.created_at {
            return Err(InvalidInput::new(format!(
                "expires_at ({}) must be after created_at ({})",
                self.expires_at, self.created_at
            )));
        }
        Ok(())
    }
}

/// A stored opportunity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opportunity {
    pub id: OpportunityId,
    #[serde(flatten)]
    pub new: NewOpportunity,
    pub state: OpportunityState,
}

/// Declares a closed set of states with stable lowercase names used on the wire and in the
/// database (where a CHECK constraint lists the same names).
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable name used on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, InvalidInput> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(InvalidInput::new(format!(
                        concat!("unknown ", stringify!($name), " {:?}; expected one of: {}"),
                        other,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

named_enum! {
    /// Where an opportunity is in its life.
    OpportunityState {
        /// Waiting for a plan to choose it (or not).
        Open => "open",
        /// A delivery service acknowledged sending it.
        Sent => "sent",
        /// Its expiry passed before it was sent.
        Expired => "expired",
        /// Withdrawn (by upstream, or because the user opted out of all its channels).
        Cancelled => "cancelled",
        /// A holdout user's: the policy would have sent it by now, and nothing was sent.
        Withheld => "withheld",
    }
}

named_enum! {
    /// Where a schedule item is in its life: pending → leased → sent/failed/skipped, or expired,
    /// cancelled or superseded by a newer plan. A holdout user's items are counterfactual (never
    /// leased) → withheld once their window opens.
    ItemState {
        Pending => "pending",
        Leased => "leased",
        Sent => "sent",
        Failed => "failed",
        Skipped => "skipped",
        Expired => "expired",
        Cancelled => "cancelled",
        Superseded => "superseded",
        Counterfactual => "counterfactual",
        Withheld => "withheld",
    }
}

named_enum! {
    /// What a delivery service reports when it acknowledges a leased item.
    AckStatus {
        /// Handed to the provider; becomes a message in the history.
        Sent => "sent",
        /// The provider refused it; the opportunity stays open for a later plan.
        Failed => "failed",
        /// The delivery service decided not to send it (e.g. stale content).
        Skipped => "skipped",
    }
}

impl AckStatus {
    pub fn item_state(self) -> ItemState {
        match self {
            AckStatus::Sent => ItemState::Sent,
            AckStatus::Failed => ItemState::Failed,
            AckStatus::Skipped => ItemState::Skipped,
        }
    }
}

named_enum! {
    /// What happened after a message was sent. Each kind is stored at most once per message.
    OutcomeKind {
        Delivered => "delivered",
        Opened => "opened",
        Clicked => "clicked",
        Converted => "converted",
        Unsubscribed => "unsubscribed",
        PushDisabled => "push_disabled",
        Bounced => "bounced",
        Complained => "complained",
    }
}

impl OutcomeKind {
    /// Outcomes that mean the channel is lost for this user: the model's reachability head learns
    /// them, and the server turns them into opt-outs.
    pub fn loses_reachability(self) -> bool {
        matches!(
            self,
            OutcomeKind::Unsubscribed | OutcomeKind::PushDisabled | OutcomeKind::Complained
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn opportunity() -> NewOpportunity {
        NewOpportunity {
            user_id: "u1".into(),
            dedupe_key: "k1".into(),
            source: "upstream".into(),
            template: "welcome".into(),
            category: "onboarding".into(),
            priority: "marketing".into(),
            channels: vec!["push".into(), "email".into()],
            signals: BTreeMap::from([("relevance".into(), 0.5)]),
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            expires_at: Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn a_well_formed_opportunity_is_valid() {
        assert_eq!(opportunity().validate(), Ok(()));
    }

    #[test]
    fn malformed_opportunities_say_what_is_wrong() {
        type Mutation = fn(&mut NewOpportunity);
        let cases: Vec<(Mutation, &str)> = vec![
            (|o| o.user_id.clear(), "user_id must be"),
            (|o| o.channels.clear(), "at least one channel"),
            (|o| o.channels.push("push".into()), "listed twice"),
            (|o| o.channels[0] = "Push!".into(), "channel \"Push!\""),
            (|o| o.category = String::new(), "category \"\""),
            (
                |o| {
                    o.signals.insert("x".into(), f64::NAN);
                },
                "finite",
            ),
            (|o| o.expires_at = o.created_at, "must be after created_at"),
        ];
        for (mutate, expected) in cases {
            let mut o = opportunity();
            mutate(&mut o);
            let err = o.validate().unwrap_err();
            assert!(err.0.contains(expected), "{err} should contain {expected}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for kind in OutcomeKind::ALL {
            assert_eq!(kind.as_str().parse::<OutcomeKind>(), Ok(*kind));
        }
        let err = "read".parse::<OutcomeKind>().unwrap_err();
        assert!(err.0.contains("opened"), "{err}");
    }
}
