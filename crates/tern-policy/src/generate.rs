//! Running generators: from an event or a scheduled run, and a user, to the opportunity a
//! [`Generator`] proposes (or none).
//!
//! The bundle compiles every expression when it loads; this module only evaluates them. What an
//! expression sees is fixed here, in one place, because it is part of the policy language:
//!
//! - `user`: the user's upstream `attributes` at the top level, and beside them the fields tern
//!   knows itself, which win over attributes of the same name: `id`, `timezone`, `locale`
//!   (`""` when unknown), `active_days_28d` (days active in the 28 days before today),
//!   `opted_out_categories` (a list) and `channels` (a map from channel name to
//!   `{reachable, opted_out}`).
//! - `event` (event-triggered generators): the event's attributes by name, numbers as doubles
//!   and strings as strings, and `event_id`.
//! - `run` (scheduled generators): `run.date` (`YYYY-MM-DD`, in the generator's zone) and
//!   `run.time` (RFC 3339, UTC).
//!
//! An expression that fails for one user (a missing attribute, a wrong type) is an error for
//! that user only; callers skip the user and count the error, they do not stop the run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Value};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value as Json;

use crate::model::{Expr, Generator, Priority, Trigger};

/// An expression of a generator failed for one user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("generator {generator}: {field} ({source_text}): {message}")]
pub struct EvalError {
    pub generator: String,
    /// `when`, `segment`, `dedupeKey`, `signals.NAME` or `payload.NAME`.
    pub field: String,
    pub source_text: String,
    pub message: String,
}

/// What tern knows about a user, as the `user` variable shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserView {
    pub id: String,
    pub timezone: String,
    pub locale: Option<String>,
    /// Upstream attributes; a JSON object (anything else is ignored).
    pub attributes: Json,
    pub active_days_28d: u32,
    pub opted_out_categories: Vec<String>,
    /// Channel name → (reachable, opted out).
    pub channels: BTreeMap<String, (bool, bool)>,
}

/// An event as the `event` variable shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventView {
    pub event_id: String,
    pub numbers: BTreeMap<String, f64>,
    pub strings: BTreeMap<String, String>,
}

/// The opportunity a generator proposes for one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub user_id: String,
    pub dedupe_key: String,
    /// `generator:NAME`, so that every opportunity says where it came from.
    pub source: String,
    pub template: String,
    pub category: String,
    pub priority: Priority,
    pub channels: Vec<String>,
    pub signals: BTreeMap<String, f64>,
    /// The template's parameters, as strings.
    pub payload: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One firing of one generator: the event or the run is bound once, then [`Firing::propose`] is
/// called per user. Reusing the CEL context avoids rebuilding its function table per user.
pub struct Firing<'g> {
    generator: &'g Generator,
    context: Context<'static, 'static>,
    /// The key used when the generator declares no `dedupeKey`: the generator's name and the
    /// event id or the run time, so that a retried event or run is a duplicate, not a second
    /// message.
    default_key: String,
    created_at: DateTime<Utc>,
}

impl<'g> Firing<'g> {
    /// A firing for an event; `None` when the generator does not react to events of this type.
    pub fn for_event(
        generator: &'g Generator,
        event_type: &str,
        event: &EventView,
        at: DateTime<Utc>,
    ) -> Option<Self> {
        match &generator.trigger {
            Trigger::Event { event: on, .. } if on == event_type => {}
            _ => return None,
        }
        let mut context = Context::default();
        context.add_variable_from_value("event", event_value(event));
        Some(Firing {
            default_key: format!("{}:{}", generator.metadata.name, event.event_id),
            generator,
            context,
            created_at: at,
        })
    }

    /// A firing for a scheduled run at `run_at`; `None` for event-triggered generators.
    pub fn for_run(generator: &'g Generator, run_at: DateTime<Utc>) -> Option<Self> {
        let Trigger::Schedule { timezone, .. } = &generator.trigger else {
            return None;
        };
        let date = match timezone {
            Some(tz) => run_at.with_timezone(tz).date_naive(),
            None => run_at.date_naive(),
        };
        let time = run_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut context = Context::default();
        context.add_variable_from_value(
            "run",
            object([
                ("date", Value::from(date.format("%Y-%m-%d").to_string())),
                ("time", Value::from(time.clone())),
            ]),
        );
        Some(Firing {
            default_key: format!("{}:{time}", generator.metadata.name),
            generator,
            context,
            created_at: run_at,
        })
    }

    /// The opportunity for `user`, or `None` when the condition (`when` or `segment`) is false.
    pub fn propose(&mut self, user: &UserView) -> Result<Option<Proposal>, EvalError> {
        let g = self.generator;
        self.context
            .add_variable_from_value("user", user_value(user));
        let condition = match &g.trigger {
            Trigger::Event { when, .. } => when.as_ref().map(|e| ("when", e)),
            Trigger::Schedule { segment, .. } => Some(("segment", segment)),
        };
        if let Some((field, expr)) = condition {
            match self.eval(field, expr)? {
                Value::Bool(b) => {
                    if !b {
                        return Ok(None);
                    }
                }
                other => {
                    return Err(self.error(
                        field,
                        expr,
                        format!("gave {}, not a bool", kind(&other)),
                    ))
                }
            }
        }
        let dedupe_key = match &g.dedupe_key {
            None => self.default_key.clone(),
            Some(expr) => match self.eval("dedupeKey", expr)? {
                Value::String(s) if !s.is_empty() => s.as_ref().clone(),
                Value::Int(i) => i.to_string(),
                Value::UInt(u) => u.to_string(),
                other => {
                    return Err(self.error(
                        "dedupeKey",
                        expr,
                        format!("gave {}, not a non-empty string", kind(&other)),
                    ))
                }
            },
        };
        let mut signals = BTreeMap::new();
        for (name, expr) in &g.signals {
            let field = format!("signals.{name}");
            let x = match self.eval(&field, expr)? {
                Value::Float(f) => f,
                Value::Int(i) => i as f64,
                Value::UInt(u) => u as f64,
                other => {
                    return Err(self.error(
                        &field,
                        expr,
                        format!("gave {}, not a number", kind(&other)),
                    ))
                }
            };
            if !x.is_finite() {
                return Err(self.error(&field, expr, format!("gave {x}, not a finite number")));
            }
            signals.insert(name.clone(), x);
        }
        let mut payload = BTreeMap::new();
        for (name, expr) in &g.payload {
            let field = format!("payload.{name}");
            let text = match self.eval(&field, expr)? {
                Value::String(s) => s.as_ref().clone(),
                Value::Int(i) => i.to_string(),
                Value::UInt(u) => u.to_string(),
                Value::Float(f) if f.is_finite() => f.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(self.error(
                        &field,
                        expr,
                        format!("gave {}, not a string, number or bool", kind(&other)),
                    ))
                }
            };
            payload.insert(name.clone(), text);
        }
        Ok(Some(Proposal {
            user_id: user.id.clone(),
            dedupe_key,
            source: format!("generator:{}", g.metadata.name),
            template: g.message.template.clone(),
            category: g.message.category.clone(),
            priority: g.priority,
            channels: g.channels.clone(),
            signals,
            payload,
            created_at: self.created_at,
            expires_at: self.created_at + g.ttl.max(TimeDelta::seconds(1)),
        }))
    }

    fn eval(&self, field: &str, expr: &Expr) -> Result<Value, EvalError> {
        expr.program
            .execute(&self.context)
            .map_err(|e| self.error(field, expr, e.to_string()))
    }

    fn error(&self, field: &str, expr: &Expr, message: String) -> EvalError {
        EvalError {
            generator: self.generator.metadata.name.clone(),
            field: field.to_string(),
            source_text: expr.source.clone(),
            message,
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Function(..) => "a function",
        Value::Int(_) | Value::UInt(_) => "an int",
        Value::Float(_) => "a double",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "a bool",
        Value::Null => "null",
        _ => "a value of another type",
    }
}

fn object<'a>(fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let map: HashMap<Key, Value> = fields
        .into_iter()
        .map(|(k, v)| (Key::from(k.to_string()), v))
        .collect();
    Value::Map(Map { map: Arc::new(map) })
}

fn event_value(e: &EventView) -> Value {
    let mut map: HashMap<Key, Value> = HashMap::new();
    for (k, v) in &e.numbers {
        map.insert(Key::from(k.clone()), Value::Float(*v));
    }
    for (k, v) in &e.strings {
        map.insert(Key::from(k.clone()), Value::from(v.clone()));
    }
    map.insert(
        Key::from("event_id".to_string()),
        Value::from(e.event_id.clone()),
    );
    Value::Map(Map { map: Arc::new(map) })
}

fn user_value(u: &UserView) -> Value {
    let mut map: HashMap<Key, Value> = HashMap::new();
    if let Json::Object(attributes) = &u.attributes {
        for (k, v) in attributes {
            map.insert(Key::from(k.clone()), json_value(v));
        }
    }
    let channels = u
        .channels
        .iter()
        .map(|(name, (reachable, opted_out))| {
            (
                Key::from(name.clone()),
                object([
                    ("reachable", Value::Bool(*reachable)),
                    ("opted_out", Value::Bool(*opted_out)),
                ]),
            )
        })
        .collect::<HashMap<Key, Value>>();
    let builtins = [
        ("id", Value::from(u.id.clone())),
        ("timezone", Value::from(u.timezone.clone())),
        ("locale", Value::from(u.locale.clone().unwrap_or_default())),
        ("active_days_28d", Value::Int(i64::from(u.active_days_28d))),
        (
            "opted_out_categories",
            Value::List(Arc::new(
                u.opted_out_categories
                    .iter()
                    .map(|c| Value::from(c.clone()))
                    .collect(),
            )),
        ),
        (
            "channels",
            Value::Map(Map {
                map: Arc::new(channels),
            }),
        ),
    ];
    for (k, v) in builtins {
        map.insert(Key::from(k.to_string()), v);
    }
    Value::Map(Map { map: Arc::new(map) })
}

/// JSON to CEL: whole numbers become ints (so `user.visits >= 3` compares ints), other numbers
/// doubles.
fn json_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::from(s.clone()),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(json_value).collect())),
        Json::Object(fields) => Value::Map(Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::from(k.clone()), json_value(v)))
                    .collect(),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bundle;
    use serde_json::json;

    fn bundle() -> Bundle {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
        Bundle::load(dir).expect("the example policies load")
    }

    fn user(id: &str, attributes: Json, active_days: u32) -> UserView {
        UserView {
            id: id.into(),
            timezone: "Europe/London".into(),
            locale: Some("en-GB".into()),
            attributes,
            active_days_28d: active_days,
            ..UserView::default()
        }
    }

    fn release(popularity: f64, artist: &str) -> EventView {
        EventView {
            event_id: "ev-1".into(),
            numbers: BTreeMap::from([("popularity".into(), popularity)]),
            strings: BTreeMap::from([
                ("artist_id".into(), artist.into()),
                ("release_id".into(), "r-9".into()),
            ]),
        }
    }

    fn fan() -> Json {
        json!({"country": "GB", "followed_artists": ["a1", "a2"], "artist_affinity": {"a1": 0.75}})
    }

    #[test]
    fn an_event_generator_proposes_with_its_key_and_signals() {
        let b = bundle();
        let g = b.generator("new-release").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .to_utc();
        let event = release(0.5, "a1");
        let mut firing = Firing::for_event(g, "artist_release", &event, at).unwrap();
        let p = firing.propose(&user("u1", fan(), 3)).unwrap().unwrap();
        assert_eq!(p.dedupe_key, "release:r-9");
        assert_eq!(p.source, "generator:new-release");
        assert_eq!(
            p.signals,
            BTreeMap::from([("affinity".into(), 0.75), ("popularity".into(), 0.5)])
        );
        assert_eq!(p.expires_at - p.created_at, TimeDelta::hours(48));
        assert_eq!(p.channels, ["email", "in_app", "push"]);
        // What the sender renders: the release, and numbers as text.
        assert_eq!(
            p.payload,
            BTreeMap::from([
                ("artist_id".into(), "a1".into()),
                ("release_id".into(), "r-9".into()),
            ])
        );

        // The condition: not a follower, wrong country, unpopular.
        assert_eq!(
            firing
                .propose(&user(
                    "u2",
                    json!({"country": "GB", "followed_artists": [], "artist_affinity": {}}),
                    3
                ))
                .unwrap(),
            None
        );
        assert_eq!(firing.propose(&user("u3", json!({"country": "US", "followed_artists": ["a1"], "artist_affinity": {"a1": 1}}), 3)).unwrap(), None);
        let quiet = release(0.1, "a1");
        let mut f = Firing::for_event(g, "artist_release", &quiet, at).unwrap();
        assert_eq!(f.propose(&user("u1", fan(), 3)).unwrap(), None);

        // Other event types do not fire it.
        assert!(Firing::for_event(g, "friend_joined", &event, at).is_none());
    }

    #[test]
    fn a_missing_attribute_is_an_error_for_that_user_only() {
        let b = bundle();
        let g = b.generator("new-release").unwrap();
        let at = Utc::now();
        let event = release(0.5, "a1");
        let mut firing = Firing::for_event(g, "artist_release", &event, at).unwrap();
        let e = firing
            .propose(&user("u1", json!({"country": "GB"}), 0))
            .unwrap_err();
        assert_eq!(e.generator, "new-release");
        assert_eq!(e.field, "when");
        // The same firing still works for the next user.
        assert!(firing.propose(&user("u2", fan(), 0)).unwrap().is_some());
    }

    #[test]
    fn a_scheduled_generator_reads_the_segment_and_the_run_date_in_its_zone() {
        let b = bundle();
        let g = b.generator("weekly-digest").unwrap();
        // 23:30 UTC on Sunday is already Monday in Stockholm.
        let at = DateTime::parse_from_rfc3339("2026-11-29T23:30:00Z")
            .unwrap()
            .to_utc();
        let mut firing = Firing::for_run(g, at).unwrap();
        let active = user("u1", json!({"digest_opt_out": false, "unseen_items": 4}), 5);
        let p = firing.propose(&active).unwrap().unwrap();
        assert_eq!(p.dedupe_key, "digest:2026-11-30");
        assert_eq!(p.signals["new_items"], 4.0);
        // Built-in fields win over attributes of the same name.
        let spoofed = user(
            "u2",
            json!({"digest_opt_out": false, "unseen_items": 1, "active_days_28d": 9}),
            0,
        );
        assert_eq!(firing.propose(&spoofed).unwrap(), None);
        let opted_out = user("u3", json!({"digest_opt_out": true, "unseen_items": 1}), 5);
        assert_eq!(firing.propose(&opted_out).unwrap(), None);
        assert!(Firing::for_event(g, "artist_release", &EventView::default(), at).is_none());
    }

    #[test]
    fn without_a_dedupe_key_the_generator_name_and_event_or_run_make_one() {
        let b = bundle();
        let reset = b.generator("password-reset").unwrap();
        let at = Utc::now();
        let event = EventView {
            event_id: "req-7".into(),
            ..EventView::default()
        };
        // password-reset declares `event.request_id` as its key; without that attribute it fails.
        let mut f = Firing::for_event(reset, "password_reset_requested", &event, at).unwrap();
        assert!(f.propose(&user("u1", json!({}), 0)).is_err());
        let offer = b.generator("premium-offer").unwrap();
        let run = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let mut f = Firing::for_run(offer, run).unwrap();
        let p = f
            .propose(&user("u1", json!({"premium": false}), 12))
            .unwrap()
            .unwrap();
        assert_eq!(p.dedupe_key, "premium-offer:2026-12-01T12:00:00Z");
        assert_eq!(p.priority, Priority::Low);
    }
}
