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
//!   declare freely (`push`, `email`, `in_app`, `sms`, ...), and the policy language shares.
//! - [`validate_text`], [`check_no_nul`], [`validate_time`], [`check_json`],
//!   [`validate_payload`]: what the database would refuse, refused first with the field named,
//!   so that no malformed request reaches SQL and comes back as an internal error.
//! - [`assign`]: the experiment hash and arm rule that the policy, the planner and analyses share.
//! - [`limits`]: what the planner can run (cap rules, channels, horizons), shared by the policy
//!   checker and the planner so that they cannot disagree.

pub mod assign;
pub mod limits;
mod random;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use random::{fnv1a64, SplitMix64};

/// Users are identified by the upstream system's id, as an opaque string. Every per-user table is
/// keyed by it first, which is what lets the data be distributed by user.
pub type UserId = String;

/// Opportunity ids are assigned by the store, unique per database.
pub type OpportunityId = i64;

/// The priority class that exempts a message from marketing caps.
pub const TRANSACTIONAL: &str = "transactional";

/// The longest accepted name (channel, category, priority class, event type): the policy
/// language's rule for every name it declares (a Kubernetes label value, 63 characters), so that
/// a name a policy can declare is exactly a name an upstream system can send.
pub const MAX_NAME_LEN: usize = 63;

/// The longest accepted template id or source: free text, not a name (`emails/welcome.v2`).
pub const MAX_LABEL_LEN: usize = 128;

/// The longest accepted user id, dedupe key, event id, lease holder or locale.
pub const MAX_KEY_LEN: usize = 512;

/// The most entries in an opportunity's payload.
pub const MAX_PAYLOAD_ENTRIES: usize = 64;

/// The most bytes of an opportunity's payload, keys and values together: a payload carries the
/// template's parameters (ids, titles, short strings), not the message body.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// The earliest instant tern stores: 0001-01-01T00:00:00Z. PostgreSQL's `timestamptz` reaches
/// further back, but no message opportunity is older than the common era, and a bound well inside
/// the database's range keeps every arithmetic on stored times (windows, horizons) in range.
pub const MIN_TIMESTAMP_SECS: i64 = -62_135_596_800;

/// The latest instant tern stores: 9999-12-31T23:59:59Z.
pub const MAX_TIMESTAMP_SECS: i64 = 253_402_300_799;

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

/// Refuses text that PostgreSQL cannot store: a NUL character is valid in a protobuf string and
/// in Rust, but no `text` or `jsonb` value may hold one. Every string that reaches the database
/// passes through here (or through [`validate_text`]) first.
pub fn check_no_nul(what: &str, s: &str) -> Result<(), InvalidInput> {
    if s.contains('\0') {
        Err(InvalidInput::new(format!(
            "{what} contains a NUL character (U+0000), which cannot be stored"
        )))
    } else {
        Ok(())
    }
}

/// Free text that must be present: 1 to `max` bytes, no NUL.
pub fn validate_text(what: &str, s: &str, max: usize) -> Result<(), InvalidInput> {
    if s.is_empty() || s.len() > max {
        return Err(InvalidInput::new(format!(
            "{what} must be 1 to {max} bytes"
        )));
    }
    check_no_nul(what, s)
}

/// Refuses an instant outside [`MIN_TIMESTAMP_SECS`, `MAX_TIMESTAMP_SECS`].
pub fn validate_time(what: &str, t: DateTime<Utc>) -> Result<(), InvalidInput> {
    let s = t.timestamp();
    if (MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&s) {
        Ok(())
    } else {
        Err(InvalidInput::new(format!(
            "{what} is out of range: tern stores instants from 0001-01-01 to 9999-12-31 (UTC)"
        )))
    }
}

/// Refuses a JSON value that PostgreSQL's `jsonb` cannot store: a NUL in any string or key
/// (written `\u0000` in the JSON text). `what` names the field in the message.
pub fn check_json(what: &str, v: &serde_json::Value) -> Result<(), InvalidInput> {
    match v {
        serde_json::Value::String(s) => check_no_nul(what, s),
        serde_json::Value::Array(items) => items.iter().try_for_each(|i| check_json(what, i)),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_no_nul(&format!("a key of {what}"), k)?;
            check_json(what, v)
        }),
        _ => Ok(()),
    }
}

/// Checks an opportunity's payload: at most [`MAX_PAYLOAD_ENTRIES`] entries and
/// [`MAX_PAYLOAD_BYTES`] bytes, keys 1 to [`MAX_NAME_LEN`] bytes, nothing with a NUL.
pub fn validate_payload(payload: &BTreeMap<String, String>) -> Result<(), InvalidInput> {
    if payload.len() > MAX_PAYLOAD_ENTRIES {
        return Err(InvalidInput::new(format!(
            "payload has {} entries; at most {MAX_PAYLOAD_ENTRIES} are allowed",
            payload.len()
        )));
    }
    let mut bytes = 0;
    for (k, v) in payload {
        validate_text("a payload key", k, MAX_NAME_LEN)?;
        check_no_nul(&format!("payload {k:?}"), v)?;
        bytes += k.len() + v.len();
    }
    if bytes > MAX_PAYLOAD_BYTES {
        return Err(InvalidInput::new(format!(
            "payload is {bytes} bytes; at most {MAX_PAYLOAD_BYTES} are allowed"
        )));
    }
    Ok(())
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
    /// The template's parameters (a release id, an order number), handed to the delivery service
    /// with the leased item. tern stores and returns them; it never reads them.
    #[serde(default)]
    pub payload: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl NewOpportunity {
    /// Checks everything that can be checked without the database. The store refuses rows that
    /// fail this, so that one malformed row in a batch is reported rather than failing the batch.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        validate_text("user_id", &self.user_id, MAX_KEY_LEN)?;
        validate_text("dedupe_key", &self.dedupe_key, MAX_KEY_LEN)?;
        validate_text("source", &self.source, MAX_LABEL_LEN)?;
        validate_text("template", &self.template, MAX_LABEL_LEN)?;
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
            validate_text("a signal name", name, MAX_NAME_LEN)?;
            if !value.is_finite() {
                return Err(InvalidInput::new(format!(
                    "signal {name:?} must be a finite number"
                )));
            }
        }
        validate_payload(&self.payload)?;
        validate_time("created_at", self.created_at)?;
        validate_time("expires_at", self.expires_at)?;
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
        /// Withdrawn: by upstream, because the user opted out of all its channels, or by the
        /// delivery service's `skipped` ack (it decided this message should not go out).
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
        /// The delivery service decided not to send it (e.g. stale content): the opportunity is
        /// closed (`cancelled`), and no later plan offers it again.
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
            payload: BTreeMap::from([("release_id".into(), "r-42".into())]),
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
            (|o| o.user_id = "u\0".into(), "NUL"),
            (|o| o.template = "t\0".into(), "NUL"),
            (|o| o.category = "a".repeat(64), "1 to 63"),
            (
                |o| {
                    o.payload.insert("id".into(), "x\0".into());
                },
                "payload \"id\" contains a NUL",
            ),
            (
                |o| {
                    o.payload
                        .insert("big".into(), "x".repeat(MAX_PAYLOAD_BYTES));
                },
                "payload is",
            ),
            (
                |o| o.created_at = DateTime::from_timestamp(-220_000_000_000, 0).unwrap(),
                "created_at is out of range",
            ),
        ];
        for (mutate, expected) in cases {
            let mut o = opportunity();
            mutate(&mut o);
            let err = o.validate().unwrap_err();
            assert!(err.0.contains(expected), "{err} should contain {expected}");
        }
    }

    #[test]
    fn json_with_a_nul_anywhere_is_refused() {
        let ok = serde_json::json!({"a": [1, "b", {"c": null}]});
        assert_eq!(check_json("attributes", &ok), Ok(()));
        let bad: serde_json::Value = serde_json::from_str(r#"{"a": ["x\u0000"]}"#).unwrap();
        assert!(check_json("attributes", &bad)
            .unwrap_err()
            .0
            .contains("NUL"));
        let bad_key: serde_json::Value = serde_json::from_str(r#"{"k\u0000": 1}"#).unwrap();
        assert!(check_json("attributes", &bad_key)
            .unwrap_err()
            .0
            .starts_with("a key of attributes"));
    }

    #[test]
    fn instants_outside_the_stored_range_are_refused() {
        let first = DateTime::from_timestamp(MIN_TIMESTAMP_SECS, 0).unwrap();
        let last = DateTime::from_timestamp(MAX_TIMESTAMP_SECS, 0).unwrap();
        assert_eq!(first.to_rfc3339(), "0001-01-01T00:00:00+00:00");
        assert_eq!(last.to_rfc3339(), "9999-12-31T23:59:59+00:00");
        assert!(validate_time("t", first).is_ok() && validate_time("t", last).is_ok());
        assert!(validate_time("t", first - chrono::TimeDelta::seconds(1)).is_err());
        assert!(validate_time("t", last + chrono::TimeDelta::seconds(1)).is_err());
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
