//! The typed policy model that the planner and the server read.
//!
//! Everything here is already validated: names are well-formed, references resolve, shares sum
//! to 1, expressions are compiled and cron schedules parsed. Durations are [`TimeDelta`] so that
//! they add to `DateTime`s directly. Each document keeps its [`Source`] so that a later
//! component can point an operator at the file that configured a behaviour.
//!
//! `canonical()` on every document gives the JSON from which the bundle version is hashed and
//! which `tern policy diff` compares: defaults filled in, durations and times normalised, sets
//! sorted, so that formatting and equivalent spellings do not change the version.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{NaiveTime, TimeDelta};
use chrono_tz::Tz;
use serde_json::{json, Map, Value as Json};

use crate::finding::Pos;

pub use tern_core::assign::unit_hash;

/// The only `apiVersion` this crate reads.
pub const API_VERSION: &str = "tern/v1";

/// Where a document was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file, as the bundle directory was named plus the path inside it.
    pub file: PathBuf,
    /// Where the document starts in that file.
    pub pos: Pos,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.file.display(),
            self.pos.line,
            self.pos.column
        )
    }
}

/// `metadata` of every document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Unique per kind, `[a-z][a-z0-9_-]*`, at most 63 characters (a Kubernetes label value).
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// Free key/value pairs, e.g. the owning team.
    pub labels: BTreeMap<String, String>,
}

impl Metadata {
    fn canonical(&self) -> Json {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        if !self.labels.is_empty() {
            m.insert("labels".into(), json!(self.labels));
        }
        Json::Object(m)
    }
}

/// A CEL expression compiled at load time, with its source text.
#[derive(Debug, Clone)]
pub struct Expr {
    /// The expression as written.
    pub source: String,
    /// The compiled program, shared because programs are immutable and cloning them is costly.
    pub program: Arc<cel::Program>,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A cron schedule in the `cron` crate's syntax: `sec min hour day-of-month month day-of-week
/// [year]`.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The expression as written.
    pub source: String,
    /// The parsed schedule; ask it for upcoming times with `schedule.upcoming(tz)`.
    pub schedule: cron::Schedule,
}

impl CronSchedule {
    /// Parses a schedule given outside a policy file (a command-line flag); the error is a
    /// sentence. The cron crate panics on some inputs, which is caught here as in the loader.
    pub fn parse(source: &str) -> Result<CronSchedule, String> {
        use std::str::FromStr;
        match std::panic::catch_unwind(|| cron::Schedule::from_str(source)) {
            Ok(Ok(schedule)) => Ok(CronSchedule {
                source: source.to_string(),
                schedule,
            }),
            Ok(Err(e)) => Err(format!(
                "{source:?} is not a valid cron expression ({e}); the syntax is `sec min hour day-of-month month day-of-week [year]`, e.g. \"0 0 2 * * *\""
            )),
            Err(_) => Err(format!("{source:?} is not a valid cron expression")),
        }
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A priority class. A `kind: Priority` document says what a class bypasses (caps, budgets,
/// minValue, quiet hours, holdouts); a cap set's `exempt` list frees classes from that set's
/// rules only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Messages the user asked for or must get (receipts, security). Usually exempt from caps.
    Transactional,
    /// Time-sensitive messages.
    High,
    /// The default.
    #[default]
    Normal,
    /// Bulk messages, first to go when caps or budgets bind.
    Low,
}

impl Priority {
    /// Every class, in order, as written in YAML.
    pub const ALL: [&'static str; 4] = ["transactional", "high", "normal", "low"];

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Transactional => "transactional",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses the YAML spelling.
    pub fn parse(s: &str) -> Option<Priority> {
        Some(match s {
            "transactional" => Priority::Transactional,
            "high" => Priority::High,
            "normal" => Priority::Normal,
            "low" => Priority::Low,
            _ => return None,
        })
    }
}

/// What a priority class can be declared to bypass, in a `kind: Priority` document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bypass {
    /// Every cap set's rules and minimum gaps (the class's sends still count for the others).
    Caps,
    /// Channel budgets: not priced, and dropped last when a budget must shed sends.
    Budgets,
    /// The objective's `minValue`: a low predicted value does not suppress the message.
    MinValue,
    /// Channels' quiet hours.
    QuietHours,
    /// Holdout arms: the message goes out to holdout users too.
    Holdouts,
}

impl Bypass {
    /// Every item, in order, as written in YAML.
    pub const ALL: [&'static str; 5] = ["caps", "budgets", "minValue", "quietHours", "holdouts"];

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Bypass::Caps => "caps",
            Bypass::Budgets => "budgets",
            Bypass::MinValue => "minValue",
            Bypass::QuietHours => "quietHours",
            Bypass::Holdouts => "holdouts",
        }
    }

    /// Parses the YAML spelling.
    pub fn parse(s: &str) -> Option<Bypass> {
        Some(match s {
            "caps" => Bypass::Caps,
            "budgets" => Bypass::Budgets,
            "minValue" => Bypass::MinValue,
            "quietHours" => Bypass::QuietHours,
            "holdouts" => Bypass::Holdouts,
            _ => return None,
        })
    }
}

/// `kind: Priority`: what the messages of one priority class (its `metadata.name`) bypass. A
/// class that bypasses anything must go out: the planner places it at the earliest moment its
/// bypasses allow rather than at the user's best hour, and keeps it due until it is sent or
/// expires.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityClass {
    /// The name is the class (`transactional`, `high`, `normal` or `low`).
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
    /// The class named.
    pub class: Priority,
    /// What it bypasses, sorted, without duplicates.
    pub bypass: Vec<Bypass>,
}

impl PriorityClass {
    /// Whether the class bypasses `what`.
    pub fn bypasses(&self, what: Bypass) -> bool {
        self.bypass.contains(&what)
    }

    /// The canonical JSON of this document (see the module docs).
    pub fn canonical(&self) -> Json {
        let bypass: Vec<&str> = self.bypass.iter().map(|b| b.as_str()).collect();
        let mut s = Map::new();
        s.insert("bypass".into(), json!(bypass));
        document("Priority", &self.metadata, s)
    }
}

/// The type of a declared user attribute or event field, as CEL sees it. `number` is an int or
/// a double: attributes arrive as JSON, where `3` is an int and `3.5` a double, and CEL compares
/// the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FieldType {
    String,
    Number,
    Bool,
    List,
    Map,
}

impl FieldType {
    /// Every type, as written in a Schema document.
    pub const ALL: &'static [&'static str] = &["string", "number", "bool", "list", "map"];

    /// The type as written in a Schema document.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Bool => "bool",
            FieldType::List => "list",
            FieldType::Map => "map",
        }
    }

    /// Parses the written form.
    pub fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "string" => FieldType::String,
            "number" => FieldType::Number,
            "bool" => FieldType::Bool,
            "list" => FieldType::List,
            "map" => FieldType::Map,
            _ => return None,
        })
    }
}

/// `kind: Schema`: the shape of the data that expressions read: the user attributes upstream
/// sends to `UserService.Upsert`, and the fields of each event type. With it, `tern policy check`
/// reports a misspelt field (`user.contry`) or a comparison of a number with a string at
/// `file:line:col`, instead of every user failing at run time. A bundle has at most one.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Name and labels.
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
    /// The user attributes; `None` leaves `user`'s attributes unchecked.
    pub user: Option<BTreeMap<String, FieldType>>,
    /// Each event type's fields; `None` leaves events unchecked. When given, every event a
    /// generator listens to must be declared.
    pub events: Option<BTreeMap<String, BTreeMap<String, FieldType>>>,
}

impl Schema {
    /// The canonical JSON of this document (see the module docs).
    pub fn canonical(&self) -> Json {
        let fields = |m: &BTreeMap<String, FieldType>| -> Json {
            Json::Object(
                m.iter()
                    .map(|(k, t)| (k.clone(), json!(t.as_str())))
                    .collect(),
            )
        };
        let mut s = Map::new();
        put(&mut s, "user", self.user.as_ref().map(fields));
        put(
            &mut s,
            "events",
            self.events
                .as_ref()
                .map(|e| Json::Object(e.iter().map(|(k, f)| (k.clone(), fields(f))).collect())),
        );
        document("Schema", &self.metadata, s)
    }
}

/// `kind: Channel`: a way to reach users, with its quiet hours, budget and reachability rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Name and labels; generators and caps refer to the channel by name.
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
    /// Hours in the user's local time during which items wait (they are not dropped).
    pub quiet_hours: Option<QuietHours>,
    /// A limit across all users (a provider quota).
    pub budget: Option<Budget>,
    /// Whether a user can be reached on this channel at all (variables: `user`).
    pub reachable_when: Option<Expr>,
}

/// Quiet hours: `from` until `to` in the user's local time, wrapping midnight when `from` is
/// later than `to` (22:00 → 08:00).
#[derive(Debug, Clone, PartialEq)]
pub struct QuietHours {
    /// Start (inclusive).
    pub from: NaiveTime,
    /// End (exclusive).
    pub to: NaiveTime,
}

/// A volume limit across all users over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// At most this many messages…
    pub max: u64,
    /// …per this window.
    pub per: TimeDelta,
}

/// `kind: Category`: a message category. Declaring any category makes the set closed: every
/// category that generators and caps name must then be declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    /// Name, description and labels.
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
}

/// `kind: Caps`: per-user limits. The set named `default` applies to every user whose
/// experiment arm does not name another.
#[derive(Debug, Clone, PartialEq)]
pub struct CapSet {
    /// Name and labels; experiment arms refer to the set by name.
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
    /// Every rule must hold.
    pub rules: Vec<CapRule>,
    /// Priority classes that this set's rules do not hold back (their sends still count for the
    /// others). A class whose `kind: Priority` document bypasses `caps` is free of every set.
    pub exempt: Vec<Priority>,
}

/// Which channels a cap rule counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChannelScope {
    /// Messages on every channel together.
    Any,
    /// Messages on one channel.
    Channel(String),
}

impl ChannelScope {
    fn as_str(&self) -> &str {
        match self {
            ChannelScope::Any => "any",
            ChannelScope::Channel(c) => c,
        }
    }
}

/// One per-user rule: at most `max` per rolling `per`, and/or at least `min_gap` between two
/// messages, counting messages on `channel` (and of `category`, when set).
#[derive(Debug, Clone, PartialEq)]
pub struct CapRule {
    /// The channel counted.
    pub channel: ChannelScope,
    /// The category counted; all categories when unset.
    pub category: Option<String>,
    /// The count limit over a rolling window.
    pub limit: Option<Limit>,
    /// The minimum time between two counted messages.
    pub min_gap: Option<TimeDelta>,
}

/// `max` messages per rolling `per`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// The most messages in any window.
    pub max: u64,
    /// The window's length.
    pub per: TimeDelta,
}

/// `kind: Objective`: what a message is worth, `value = Σ wₖ·p̂ₖ` with the loss of reachability
/// counted negatively. The objective named `default` applies unless an experiment arm names
/// another.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// Name and labels.
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
    /// The weights, each ≥ 0.
    pub weights: Weights,
    /// Below this value nothing is sent: sending nothing is a valid decision.
    pub min_value: f64,
    /// The horizon over which retention is measured.
    pub horizon: TimeDelta,
    /// What a send is worth: its predicted outcomes, or its effect against not sending.
    pub value: ValueMode,
}

/// How an objective values a send (`spec.value`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum ValueMode {
    /// `Σ w · p(outcome | send)`, with retention taken relative to the average send: what the
    /// message is associated with. Rewards sending to users who would have converted or stayed
    /// anyway.
    #[default]
    Outcome,
    /// `Σ w · (p(outcome | send) − p(outcome | no send))`: the effect of the send, learned from
    /// logged decisions that include withheld ones. Not sending is worth exactly zero.
    Incremental,
    /// The effect of the send as in `incremental`, valued over time: retention is the change
    /// in the share of days the user is active over the model's horizon; a count cap's slot
    /// goes only to a candidate worth what the slot is worth to the user (pacing across the
    /// window); and each send goes at the moment of the next day predicted to be worth most.
    LongTerm,
}

impl ValueMode {
    pub const ALL: [&'static str; 3] = ["outcome", "incremental", "longTerm"];

    pub fn as_str(self) -> &'static str {
        match self {
            ValueMode::Outcome => "outcome",
            ValueMode::Incremental => "incremental",
            ValueMode::LongTerm => "longTerm",
        }
    }

    pub fn parse(s: &str) -> Option<ValueMode> {
        match s {
            "outcome" => Some(ValueMode::Outcome),
            "incremental" => Some(ValueMode::Incremental),
            "longTerm" => Some(ValueMode::LongTerm),
            _ => None,
        }
    }

    /// Whether sends are valued by their effect against not sending (which needs a model that
    /// learned from withheld sends).
    pub fn is_causal(self) -> bool {
        matches!(self, ValueMode::Incremental | ValueMode::LongTerm)
    }
}

/// Weights over the predicted outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Weights {
    /// Weight of the probability that the message leads to a conversion.
    pub conversion: f64,
    /// Weight of the probability of an open or click.
    pub engagement: f64,
    /// Weight of the probability that the user is still active after the horizon.
    pub retention: f64,
    /// Weight of the probability that the message costs the channel (unsubscribe, push
    /// disabled); subtracted.
    pub reachability: f64,
}

/// `kind: Generator`: creates opportunities from events or on a schedule over a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Generator {
    /// Name and labels.
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
    /// What makes it fire.
    pub trigger: Trigger,
    /// The message it proposes.
    pub message: Message,
    /// Channels it may go through (sorted, no duplicates).
    pub channels: Vec<String>,
    /// How long the opportunity stays open.
    pub ttl: TimeDelta,
    /// Its priority class.
    pub priority: Priority,
    /// Opportunities with the same key for the same user are one (variables as in the trigger).
    /// When unset the server uses the generator name and the event id or run time.
    pub dedupe_key: Option<Expr>,
    /// Value signals the opportunity carries, by name, each computed by an expression.
    pub signals: BTreeMap<String, Expr>,
    /// The template's parameters, by name, each computed by an expression and handed to the
    /// delivery service as a string with the leased item (the release id of a new release).
    pub payload: BTreeMap<String, Expr>,
}

/// What makes a generator fire.
// A parsed cron schedule is much larger than an event name, but a bundle holds a handful of
// generators, so boxing it would only add an indirection for readers of the model.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// An event of this type, for the user it concerns, when `when` holds (variables: `event`,
    /// `user`).
    Event {
        /// The event type.
        event: String,
        /// The condition; always true when unset.
        when: Option<Expr>,
    },
    /// On a cron schedule, for every user of a segment (variables: `user`, `run`).
    Schedule {
        /// When it fires.
        cron: CronSchedule,
        /// The zone the schedule is read in; UTC when unset.
        timezone: Option<Tz>,
        /// Which users it concerns.
        segment: Expr,
        /// How late a firing missed while tern was down may still run; never when unset.
        starting_deadline: Option<TimeDelta>,
    },
}

/// The message an opportunity proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The template id that the delivery services render.
    pub template: String,
    /// The category, which caps can count.
    pub category: String,
}

/// `kind: Experiment`: users are split into arms by a salted hash of their id.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Name and labels.
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
    /// Mixed into the hash; change it to reshuffle users.
    pub salt: String,
    /// Experiments in the same layer never share a user.
    pub layer: Option<String>,
    /// The share of users (of the layer, when set) that enter the experiment.
    pub traffic: f64,
    /// The arms, in their written order (which does not affect who gets which arm).
    pub arms: Vec<Arm>,
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    /// Unique within the experiment.
    pub name: String,
    /// Share of the experiment's users, in (0, 1]; the shares sum to 1.
    pub share: f64,
    /// Objective used for this arm's users; `default` when unset.
    pub objective: Option<String>,
    /// Cap set used for this arm's users; `default` when unset.
    pub caps: Option<String>,
    /// A holdout arm's users get no messages from tern at all.
    pub holdout: bool,
}

/// `kind: Replan`: when the planner runs and how far it looks ahead.
#[derive(Debug, Clone, PartialEq)]
pub struct Replan {
    /// Name and labels.
    pub metadata: Metadata,
    /// Where it was written.
    pub source: Source,
    /// When it runs: a full replan (a sweep of every user with open opportunities).
    pub cron: CronSchedule,
    /// When it runs incrementally, between full replans: only the users whose inputs changed
    /// since they were last planned (or whose plan left something for later). None when unset.
    pub incremental: Option<CronSchedule>,
    /// The zone the schedules are read in; UTC when unset.
    pub timezone: Option<Tz>,
    /// How far ahead the plan schedules.
    pub horizon: TimeDelta,
    /// The share of decisions drawn at random from the allowed set, in [0, 1).
    pub exploration: f64,
    /// The share of would-be sends withheld at random (per opportunity, so the same one across
    /// replans), in [0, 0.5]: what happens without a send, for the model to learn the effect of
    /// sending from. 0 when unset.
    pub withhold: f64,
    /// How late a firing missed while tern was down may still run; never when unset.
    pub starting_deadline: Option<TimeDelta>,
}

impl QuietHours {
    /// Whether a local time of day falls in the quiet hours: `from` inclusive, `to` exclusive,
    /// wrapping midnight when `from` is later than `to`.
    pub fn contains(&self, local: NaiveTime) -> bool {
        if self.from <= self.to {
            self.from <= local && local < self.to
        } else {
            local >= self.from || local < self.to
        }
    }
}

impl Experiment {
    /// The arm of a user who is in this experiment: [`tern_core::assign::rendezvous`] over the
    /// arms' names and shares under the experiment's salt, which moves the fewest users when a
    /// share changes and nobody when arms are reordered. Whether the user is in the experiment
    /// at all is [`crate::Bundle::assignments`]'s question.
    pub fn arm_for(&self, user_id: &str) -> Option<&Arm> {
        let arms = self.arms.iter().map(|a| (a.name.as_str(), a.share));
        tern_core::assign::rendezvous(&self.salt, arms, user_id).map(|i| &self.arms[i])
    }
}

/// Formats a duration in the policy syntax with the largest units first (`1d12h`, `90s`), so
/// that `24h` and `1d` have one canonical spelling.
pub fn format_duration(d: TimeDelta) -> String {
    let mut secs = d.num_seconds();
    if secs <= 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

fn hhmm(t: NaiveTime) -> String {
    t.format("%H:%M").to_string()
}

fn put(m: &mut Map<String, Json>, key: &str, value: Option<Json>) {
    if let Some(v) = value {
        m.insert(key.to_string(), v);
    }
}

fn document(kind: &str, metadata: &Metadata, spec: Map<String, Json>) -> Json {
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata.canonical(),
        "spec": Json::Object(spec),
    })
}

impl Channel {
    /// The canonical JSON of this document (see the module docs).
    pub fn canonical(&self) -> Json {
        let mut s = Map::new();
        put(
            &mut s,
            "quietHours",
            self.quiet_hours.as_ref().map(|q| {
                let mut m = Map::new();
                m.insert("from".into(), json!(hhmm(q.from)));
                m.insert("to".into(), json!(hhmm(q.to)));
                Json::Object(m)
            }),
        );
        put(
            &mut s,
            "budget",
            self.budget
                .as_ref()
                .map(|b| json!({"max": b.max, "per": format_duration(b.per)})),
        );
        put(
            &mut s,
            "reachableWhen",
            self.reachable_when.as_ref().map(|e| json!(e.source)),
        );
        document("Channel", &self.metadata, s)
    }
}

impl Category {
    /// The canonical JSON of this document (see the module docs).
    pub fn canonical(&self) -> Json {
        document("Category", &self.metadata, Map::new())
    }
}

impl CapRule {
    fn canonical(&self) -> Json {
        let mut m = Map::new();
        m.insert("channel".into(), json!(self.channel.as_str()));
        put(&mut m, "category", self.category.as_ref().map(|c| json!(c)));
        if let Some(l) = &self.limit {
            m.insert("max".into(), json!(l.max));
            m.insert("per".into(), json!(format_duration(l.per)));
        }
        put(
            &mut m,
            "minGap",
            self.min_gap.map(|g| json!(format_duration(g))),
        );
        Json::Object(m)
    }
}

impl CapSet {
    /// The canonical JSON of this document (see the module docs). Rules are a set (every one
    /// must hold), so they are sorted.
    pub fn canonical(&self) -> Json {
        let mut rules: Vec<Json> = self.rules.iter().map(CapRule::canonical).collect();
        rules.sort_by_key(|r| r.to_string());
        rules.dedup();
        let mut exempt: Vec<&str> = self.exempt.iter().map(|p| p.as_str()).collect();
        exempt.sort_unstable();
        exempt.dedup();
        let mut s = Map::new();
        s.insert("rules".into(), json!(rules));
        s.insert("exempt".into(), json!(exempt));
        document("Caps", &self.metadata, s)
    }
}

impl Objective {
    /// The canonical JSON of this document (see the module docs).
    pub fn canonical(&self) -> Json {
        let w = &self.weights;
        let mut s = Map::new();
        s.insert(
            "weights".into(),
            json!({
                "conversion": w.conversion,
                "engagement": w.engagement,
                "retention": w.retention,
                "reachability": w.reachability,
            }),
        );
        s.insert("minValue".into(), json!(self.min_value));
        s.insert("horizon".into(), json!(format_duration(self.horizon)));
        // Written only when set, so that the versions of bundles written before the field
        // existed do not change.
        if self.value != ValueMode::default() {
            s.insert("value".into(), json!(self.value.as_str()));
        }
        document("Objective", &self.metadata, s)
    }
}

impl Generator {
    /// The canonical JSON of this document (see the module docs).
    pub fn canonical(&self) -> Json {
        let mut s = Map::new();
        match &self.trigger {
            Trigger::Event { event, when } => {
                s.insert("on".into(), json!({ "event": event }));
                put(&mut s, "when", when.as_ref().map(|e| json!(e.source)));
            }
            Trigger::Schedule {
                cron,
                timezone,
                segment,
                starting_deadline,
            } => {
                s.insert("schedule".into(), json!(cron.source));
                put(&mut s, "timezone", timezone.map(|tz| json!(tz.name())));
                s.insert("segment".into(), json!(segment.source));
                put(
                    &mut s,
                    "startingDeadline",
                    starting_deadline.map(|d| json!(format_duration(d))),
                );
            }
        }
        s.insert(
            "message".into(),
            json!({"template": self.message.template, "category": self.message.category}),
        );
        s.insert("channels".into(), json!(self.channels));
        s.insert("ttl".into(), json!(format_duration(self.ttl)));
        s.insert("priority".into(), json!(self.priority.as_str()));
        put(
            &mut s,
            "dedupeKey",
            self.dedupe_key.as_ref().map(|e| json!(e.source)),
        );
        let sources = |m: &BTreeMap<String, Expr>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(k, e)| (k.clone(), e.source.clone()))
                .collect()
        };
        for (field, map) in [("signals", &self.signals), ("payload", &self.payload)] {
            if !map.is_empty() {
                s.insert(field.into(), json!(sources(map)));
            }
        }
        document("Generator", &self.metadata, s)
    }
}

impl Experiment {
    /// The canonical JSON of this document (see the module docs). Arms keep their order, which
    /// decides the hash range each arm gets.
    pub fn canonical(&self) -> Json {
        let arms: Vec<Json> = self
            .arms
            .iter()
            .map(|a| {
                let mut m = Map::new();
                m.insert("name".into(), json!(a.name));
                m.insert("share".into(), json!(a.share));
                put(&mut m, "objective", a.objective.as_ref().map(|o| json!(o)));
                put(&mut m, "caps", a.caps.as_ref().map(|c| json!(c)));
                if a.holdout {
                    m.insert("holdout".into(), json!(true));
                }
                Json::Object(m)
            })
            .collect();
        let mut s = Map::new();
        s.insert("salt".into(), json!(self.salt));
        put(&mut s, "layer", self.layer.as_ref().map(|l| json!(l)));
        s.insert("traffic".into(), json!(self.traffic));
        s.insert("arms".into(), json!(arms));
        document("Experiment", &self.metadata, s)
    }
}

impl Replan {
    /// The canonical JSON of this document (see the module docs).
    pub fn canonical(&self) -> Json {
        let mut s = Map::new();
        s.insert("cron".into(), json!(self.cron.source));
        put(
            &mut s,
            "incremental",
            self.incremental.as_ref().map(|c| json!(c.source)),
        );
        put(&mut s, "timezone", self.timezone.map(|tz| json!(tz.name())));
        s.insert("horizon".into(), json!(format_duration(self.horizon)));
        s.insert("exploration".into(), json!(self.exploration));
        // Written only when set, so that the versions of bundles written before the field
        // existed do not change.
        if self.withhold != 0.0 {
            s.insert("withhold".into(), json!(self.withhold));
        }
        put(
            &mut s,
            "startingDeadline",
            self.starting_deadline.map(|d| json!(format_duration(d))),
        );
        document("Replan", &self.metadata, s)
    }
}
