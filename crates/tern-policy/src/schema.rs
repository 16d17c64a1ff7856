//! The JSON Schema (draft-07, the draft editors' YAML language servers support best) of the
//! policy language, printed by `tern policy schema` and referenced from policy files with
//! `# yaml-language-server: $schema=...`.
//!
//! The schema helps while typing; it is not the checker. It cannot express cross-document rules
//! (references, duplicate names, shares summing to 1) or compile CEL and cron, so
//! `tern policy check` remains the authority. A test keeps its field lists equal to the
//! decoder's, so the two cannot drift apart.

use serde_json::{json, Map, Value as Json};

use crate::decode::*;
use crate::model::{Bypass, FieldType, Priority, API_VERSION};

const NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,62}$";
const DURATION_PATTERN: &str = "^([0-9]+[smhdw])+$";
const TIME_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";

fn name() -> Json {
    json!({ "type": "string", "pattern": NAME_PATTERN })
}

fn duration(description: &str) -> Json {
    json!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "description": format!("{description} A number and a unit (s, m, h, d, w), e.g. 30m, 4h, 1d, 7d, 1h30m."),
    })
}

fn cel(description: &str) -> Json {
    json!({ "type": "string", "minLength": 1, "description": format!("A CEL expression. {description}") })
}

fn timezone(description: &str) -> Json {
    json!({ "type": "string", "description": format!("{description} An IANA time zone, e.g. Europe/London.") })
}

/// An object schema whose properties are exactly `fields` (checked by a test).
fn object(fields: &[&str], props: Vec<(&str, Json)>, required: &[&str]) -> Json {
    let mut p = Map::new();
    for (k, v) in props {
        p.insert(k.to_string(), v);
    }
    debug_assert_eq!(p.len(), fields.len());
    let mut o = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": Json::Object(p),
    });
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

fn specs() -> Vec<(&'static str, &'static str, Json)> {
    let priority = json!({ "enum": Priority::ALL });
    let limit_max = json!({ "type": "integer", "minimum": 0 });
    vec![
        (
            "Channel",
            "A way to reach users: quiet hours, a budget across all users, reachability.",
            object(
                CHANNEL,
                vec![
                    (
                        "quietHours",
                        object(
                            QUIET_HOURS,
                            vec![
                                ("from", json!({ "type": "string", "pattern": TIME_PATTERN, "description": "Start, HH:MM in the user's local time." })),
                                ("to", json!({ "type": "string", "pattern": TIME_PATTERN, "description": "End, HH:MM; wraps midnight when earlier than from." })),
                            ],
                            &["from", "to"],
                        ),
                    ),
                    (
                        "budget",
                        object(
                            BUDGET,
                            vec![("max", limit_max.clone()), ("per", duration("The window."))],
                            &["max", "per"],
                        ),
                    ),
                    ("reachableWhen", cel("Whether a user can be reached on this channel; reads `user`.")),
                ],
                &[],
            ),
        ),
        (
            "Category",
            "A message category; once any is declared, every category used must be.",
            object(CATEGORY, vec![], &[]),
        ),
        (
            "Caps",
            "Per-user limits over rolling windows; the set named default applies outside experiments.",
            object(
                CAPS,
                vec![
                    (
                        "rules",
                        json!({ "type": "array", "items": object(
                            CAP_RULE,
                            vec![
                                ("channel", json!({ "type": "string", "pattern": NAME_PATTERN, "description": "A channel name, or any (default)." })),
                                ("category", name()),
                                ("max", limit_max.clone()),
                                ("per", duration("The rolling window of max.")),
                                ("minGap", duration("Minimum time between two messages.")),
                            ],
                            &[],
                        ) }),
                    ),
                    ("exempt", json!({ "type": "array", "items": priority.clone(), "uniqueItems": true })),
                ],
                &["rules"],
            ),
        ),
        (
            "Objective",
            "What a message is worth: weights over predicted outcomes.",
            object(
                OBJECTIVE,
                vec![
                    (
                        "weights",
                        object(
                            WEIGHTS,
                            vec![
                                ("conversion", json!({ "type": "number", "minimum": 0 })),
                                ("engagement", json!({ "type": "number", "minimum": 0 })),
                                ("retention", json!({ "type": "number", "minimum": 0 })),
                                ("reachability", json!({ "type": "number", "minimum": 0, "description": "Weight of the loss of reachability; subtracted." })),
                            ],
                            &[],
                        ),
                    ),
                    ("minValue", json!({ "type": "number", "minimum": 0 })),
                    ("horizon", duration("Horizon of the retention outcome (default 28d).")),
                    ("value", json!({ "enum": ["outcome", "incremental", "longTerm"], "description": "outcome (default): Σ w·p(outcome | send); incremental: Σ w·(p(outcome | send) − p(outcome | no send)), the effect of the send; longTerm: the effect of the send over time (retention as the change in the share of active days), with cap slots paced across their window and each send at the moment of the next day predicted to be worth most." })),
                ],
                &["weights"],
            ),
        ),
        (
            "Generator",
            "Creates opportunities from events (on + when) or on a schedule over a segment.",
            object(
                GENERATOR,
                vec![
                    ("on", object(ON, vec![("event", json!({ "type": "string", "minLength": 1 }))], &["event"])),
                    ("when", cel("Condition on `event` and `user`.")),
                    ("schedule", json!({ "type": "string", "description": "Cron in the cron crate's syntax: sec min hour day-of-month month day-of-week [year]." })),
                    ("timezone", timezone("Zone of the schedule (default UTC).")),
                    ("segment", cel("Which users a scheduled generator concerns; reads `user` and `run`.")),
                    (
                        "message",
                        object(
                            MESSAGE,
                            vec![("template", json!({ "type": "string", "minLength": 1 })), ("category", name())],
                            &["template", "category"],
                        ),
                    ),
                    ("channels", json!({ "type": "array", "items": name(), "minItems": 1, "uniqueItems": true })),
                    ("ttl", duration("How long the opportunity stays open.")),
                    ("priority", priority.clone()),
                    ("dedupeKey", cel("Opportunities with equal keys for one user are one.")),
                    ("signals", json!({ "type": "object", "propertyNames": { "pattern": NAME_PATTERN }, "additionalProperties": cel("A value signal.") })),
                    ("startingDeadline", duration("Scheduled generators: a firing missed while tern was down runs when it comes back if no more than this late; never when unset.")),
                    ("payload", json!({ "type": "object", "propertyNames": { "pattern": NAME_PATTERN }, "maxProperties": 64, "additionalProperties": cel("A template parameter, handed to the sender as a string.") })),
                ],
                &["message", "channels", "ttl"],
            ),
        ),
        (
            "Experiment",
            "Arms assigned by a salted hash of the user id; holdout arms get nothing.",
            object(
                EXPERIMENT,
                vec![
                    ("salt", json!({ "type": "string", "minLength": 1 })),
                    ("layer", name()),
                    ("traffic", json!({ "type": "number", "exclusiveMinimum": 0, "maximum": 1 })),
                    (
                        "arms",
                        json!({ "type": "array", "minItems": 2, "items": object(
                            ARM,
                            vec![
                                ("name", name()),
                                ("share", json!({ "type": "number", "exclusiveMinimum": 0, "maximum": 1 })),
                                ("objective", name()),
                                ("caps", name()),
                                ("holdout", json!({ "type": "boolean" })),
                            ],
                            &["name", "share"],
                        ) }),
                    ),
                ],
                &["salt", "arms"],
            ),
        ),
        (
            "Replan",
            "When the planner runs, how far ahead it plans, and how much it explores.",
            object(
                REPLAN,
                vec![
                    ("cron", json!({ "type": "string", "description": "When a full replan runs: sec min hour day-of-month month day-of-week [year]" })),
                    ("incremental", json!({ "type": "string", "description": "When an incremental replan runs between full ones (only the users whose inputs changed), in the same syntax; none when unset." })),
                    ("timezone", timezone("Zone of the schedules (default UTC).")),
                    ("horizon", duration("How far ahead the plan schedules.")),
                    ("exploration", json!({ "type": "number", "minimum": 0, "exclusiveMaximum": 1 })),
                    ("withhold", json!({ "type": "number", "minimum": 0, "maximum": 0.5, "description": "Share of would-be sends withheld at random (per opportunity), so that the model learns what happens without a send (default 0)." })),
                    ("startingDeadline", duration("A firing missed while tern was down runs when it comes back if no more than this late; never when unset.")),
                ],
                &["cron", "horizon"],
            ),
        ),
        (
            "Priority",
            "What the messages of one priority class (metadata.name: transactional, high, normal or low) bypass. A class that bypasses anything is sent as soon as its bypasses allow.",
            object(
                PRIORITY,
                vec![(
                    "bypass",
                    json!({
                        "type": "array",
                        "items": { "enum": Bypass::ALL },
                        "uniqueItems": true,
                        "description": "caps: every cap set's rules and gaps; budgets: channel budgets (not priced, dropped last); minValue: the objective's floor; quietHours: channels' quiet hours; holdouts: sent to holdout users too.",
                    }),
                )],
                &["bypass"],
            ),
        ),
        (
            "Schema",
            "The shape of the data expressions read: user attributes and each event type's fields. With it, tern policy check reports unknown fields and type mismatches in every expression. One per bundle.",
            object(
                SCHEMA,
                vec![
                    (
                        "user",
                        json!({
                            "type": "object",
                            "additionalProperties": { "enum": FieldType::ALL },
                            "description": "User attributes (as sent to UserService.Upsert) by name, each a type: string, number, bool, list or map. tern's own fields (id, timezone, locale, active_days_28d, opted_out_categories, channels) are known without being declared.",
                        }),
                    ),
                    (
                        "events",
                        json!({
                            "type": "object",
                            "propertyNames": { "pattern": NAME_PATTERN },
                            "additionalProperties": {
                                "type": ["object", "null"],
                                "additionalProperties": { "enum": ["number", "string"] },
                            },
                            "description": "Each event type's fields: numbers and strings by name. Every event a generator listens to must be declared.",
                        }),
                    ),
                ],
                &[],
            ),
        ),
    ]
}

/// The JSON Schema of one policy document.
pub fn schema() -> Json {
    let specs = specs();
    let branches: Vec<Json> = specs
        .iter()
        .map(|(kind, description, spec)| {
            let mut then = json!({ "properties": { "spec": spec }, "description": description });
            if *kind == "Priority" {
                then["properties"]["metadata"] =
                    json!({ "properties": { "name": { "enum": Priority::ALL } } });
            }
            if *kind != "Category" {
                then["required"] = json!(["spec"]);
            }
            json!({ "if": { "properties": { "kind": { "const": kind } } }, "then": then })
        })
        .collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://github.com/tern-rs/tern/docs/policy.schema.json",
        "title": "tern policy document",
        "description": "One document of a tern policy bundle. `tern policy check` is the authority: it also checks references, names, shares, CEL and cron.",
        "type": "object",
        "additionalProperties": false,
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": { "const": API_VERSION },
            "kind": { "enum": KINDS },
            "metadata": object(
                METADATA,
                vec![
                    ("name", name()),
                    ("description", json!({ "type": "string" })),
                    ("labels", json!({ "type": "object", "additionalProperties": { "type": "string" } })),
                ],
                &["name"],
            ),
            "spec": { "type": "object" },
        },
        "allOf": branches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(o: &Json) -> Vec<String> {
        let mut k: Vec<String> = o["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn schema_fields_match_the_decoder() {
        let s = schema();
        assert_eq!(keys(&s), sorted(TOP));
        assert_eq!(keys(&s["properties"]["metadata"]), sorted(METADATA));
        let expected: [(&str, &[&str]); 9] = [
            ("Channel", CHANNEL),
            ("Category", CATEGORY),
            ("Caps", CAPS),
            ("Objective", OBJECTIVE),
            ("Generator", GENERATOR),
            ("Experiment", EXPERIMENT),
            ("Replan", REPLAN),
            ("Priority", PRIORITY),
            ("Schema", SCHEMA),
        ];
        for (i, (kind, fields)) in expected.iter().enumerate() {
            let branch = &s["allOf"][i];
            assert_eq!(branch["if"]["properties"]["kind"]["const"], json!(kind));
            let spec = &branch["then"]["properties"]["spec"];
            assert_eq!(keys(spec), sorted(fields), "{kind}");
        }
        let generator = &s["allOf"][4]["then"]["properties"]["spec"]["properties"];
        assert_eq!(keys(&generator["on"]), sorted(ON));
        assert_eq!(keys(&generator["message"]), sorted(MESSAGE));
        let caps = &s["allOf"][2]["then"]["properties"]["spec"]["properties"];
        assert_eq!(keys(&caps["rules"]["items"]), sorted(CAP_RULE));
        let arms = &s["allOf"][5]["then"]["properties"]["spec"]["properties"]["arms"];
        assert_eq!(keys(&arms["items"]), sorted(ARM));
        let channel = &s["allOf"][0]["then"]["properties"]["spec"]["properties"];
        assert_eq!(keys(&channel["quietHours"]), sorted(QUIET_HOURS));
        assert_eq!(keys(&channel["budget"]), sorted(BUDGET));
        let objective = &s["allOf"][3]["then"]["properties"]["spec"]["properties"];
        assert_eq!(keys(&objective["weights"]), sorted(WEIGHTS));
    }
}
