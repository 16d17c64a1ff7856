//! Wire types to domain types and back. Every conversion of a request refuses malformed input
//! with a sentence that names the field (and the row, for batches).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use tern_core::{AckStatus, NewOpportunity, OutcomeKind};

use crate::pb;

pub(crate) fn time(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A wire timestamp as an instant tern can store: valid nanos, and within
/// [`tern_core::validate_time`]'s range (the database's is narrower than protobuf's).
pub(crate) fn from_time(t: &prost_types::Timestamp, field: &str) -> Result<DateTime<Utc>, String> {
    let t = u32::try_from(t.nanos)
        .ok()
        .filter(|&n| n < 1_000_000_000)
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| format!("{field} is not a valid timestamp"))?;
    tern_core::validate_time(field, t).map_err(|e| e.0)?;
    Ok(t)
}

pub(crate) fn from_duration(d: &prost_types::Duration, field: &str) -> Result<TimeDelta, String> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(format!("{field} must not be negative"));
    }
    TimeDelta::new(d.seconds, d.nanos as u32).ok_or_else(|| format!("{field} is out of range"))
}

/// One submitted opportunity as the store takes it; `Err` is the row's rejection reason. With a
/// vocabulary (the active policy's names), its priority, channels and category must be declared.
pub(crate) fn opportunity(
    o: pb::Opportunity,
    source: &str,
    now: DateTime<Utc>,
    vocabulary: Option<&crate::Vocabulary>,
) -> Result<NewOpportunity, String> {
    let created_at = match &o.created_at {
        Some(t) => from_time(t, "created_at")?,
        None => now,
    };
    let expires_at = match (&o.expires_at, &o.ttl) {
        (Some(t), None) => from_time(t, "expires_at")?,
        (None, Some(d)) => created_at
            .checked_add_signed(from_duration(d, "ttl")?)
            .ok_or("ttl is out of range")?,
        (Some(_), Some(_)) => return Err("give expires_at or ttl, not both".into()),
        (None, None) => return Err("expires_at or ttl is required".into()),
    };
    if let Some((name, _)) = o.signals.iter().find(|(_, v)| !v.is_finite()) {
        return Err(format!("signal {name:?} is not a finite number"));
    }
    let opportunity = NewOpportunity {
        user_id: o.user_id,
        dedupe_key: o.dedupe_key,
        source: source.to_string(),
        template: o.template,
        category: o.category,
        priority: o.priority,
        channels: o.channels,
        signals: o.signals.into_iter().collect::<BTreeMap<_, _>>(),
        payload: o.payload.into_iter().collect::<BTreeMap<_, _>>(),
        created_at,
        expires_at,
    };
    // Everything else (lengths, names, NUL characters, the payload's size) in one place, the
    // same rules the store applies.
    opportunity.validate().map_err(|e| e.0)?;
    if let Some(v) = vocabulary {
        v.check(
            &opportunity.priority,
            &opportunity.channels,
            &opportunity.category,
        )?;
    }
    Ok(opportunity)
}

pub(crate) fn outcome_kind(k: i32) -> Result<OutcomeKind, String> {
    use pb::OutcomeKind as K;
    Ok(
        match K::try_from(k).map_err(|_| format!("unknown outcome kind {k}"))? {
            K::Unspecified => return Err("the outcome kind is required".into()),
            K::Delivered => OutcomeKind::Delivered,
            K::Opened => OutcomeKind::Opened,
            K::Clicked => OutcomeKind::Clicked,
            K::Converted => OutcomeKind::Converted,
            K::Unsubscribed => OutcomeKind::Unsubscribed,
            K::PushDisabled => OutcomeKind::PushDisabled,
            K::Bounced => OutcomeKind::Bounced,
            K::Complained => OutcomeKind::Complained,
        },
    )
}

pub(crate) fn ack_status(s: i32) -> Result<AckStatus, String> {
    use pb::AckStatus as S;
    Ok(
        match S::try_from(s).map_err(|_| format!("unknown ack status {s}"))? {
            S::Unspecified => return Err("the ack status is required".into()),
            S::Sent => AckStatus::Sent,
            S::Failed => AckStatus::Failed,
            S::Skipped => AckStatus::Skipped,
        },
    )
}

pub(crate) fn summary(s: &crate::ReplanSummary) -> pb::PlanSummary {
    pb::PlanSummary {
        plan_id: s.plan_id,
        trigger: s.trigger.clone(),
        policy_version: s.policy_version.clone(),
        model_version: s.model_version.clone().unwrap_or_default(),
        started_at: s.started_at.map(time),
        published_at: s.published_at.map(time),
        candidates: s.candidates,
        chosen_per_channel: s.chosen_per_channel.clone().into_iter().collect(),
        suppressed_per_reason: s.suppressed_per_reason.clone().into_iter().collect(),
        duration_seconds: s.duration_seconds,
    }
}

/// One event, checked whole: its type is a name, its id 1 to 512 bytes, it names at least one
/// user (each 1 to 512 bytes), its numbers are finite and no string holds a NUL.
pub(crate) fn event(e: pb::Event) -> Result<crate::Event, String> {
    use tern_core::{check_no_nul, validate_text, MAX_KEY_LEN};
    let text = |r: Result<(), tern_core::InvalidInput>| r.map_err(|e| e.0);
    text(tern_core::validate_name("type", &e.r#type))?;
    text(validate_text("event_id", &e.event_id, MAX_KEY_LEN))?;
    if e.user_ids.is_empty() {
        return Err("user_ids: at least one user is required".into());
    }
    for (i, u) in e.user_ids.iter().enumerate() {
        text(validate_text(&format!("user_ids[{i}]"), u, MAX_KEY_LEN))?;
    }
    if let Some((name, _)) = e.numbers.iter().find(|(_, v)| !v.is_finite()) {
        return Err(format!("number {name:?} is not finite"));
    }
    for name in e.numbers.keys() {
        text(check_no_nul("a number's name", name))?;
    }
    for (name, value) in &e.strings {
        text(check_no_nul("a string's name", name))?;
        text(check_no_nul(&format!("string {name:?}"), value))?;
    }
    let occurred_at = e
        .occurred_at
        .as_ref()
        .map(|t| from_time(t, "occurred_at"))
        .transpose()?;
    Ok(crate::Event {
        event_type: e.r#type,
        event_id: e.event_id,
        user_ids: e.user_ids,
        numbers: e.numbers.into_iter().collect(),
        strings: e.strings.into_iter().collect(),
        occurred_at,
    })
}
