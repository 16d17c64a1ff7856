//! Features: declared once, versioned, encoded into plain `f32` rows.
//!
//! A [`FeatureSpec`] is the single declaration of what the model reads. It expands into a list of
//! `Block`s; both the column list ([`FeatureSpec::columns`]) and the encoder
//! ([`FeatureSpec::encode`]) walk that same list, so the two cannot drift apart. The spec's
//! [`version`](FeatureSpec::version) hashes every column's name and encoding (plus
//! [`ENCODING_REVISION`], bumped whenever an encoding's code changes), and a model refuses rows
//! encoded under any other version.
//!
//! Every transform squashes its input into a small range (mostly `[-1, 1]` or `[0, ~4]`) with
//! fixed constants rather than statistics learned from the data: the encoding of a row never
//! depends on the training set, so a row encoded today means the same to every model of the same
//! version, and nothing but the spec has to be stored to reproduce it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use tern_core::fnv1a64;

use crate::error::ModelError;

/// Bumped whenever the code of an encoding changes meaning without its declared name changing,
/// so that models trained under the old code are refused rather than fed different numbers.
pub const ENCODING_REVISION: u32 = 1;

/// The channel of a candidate that is not sent: the action "no send", which the model scores
/// beside each channel so that the effect of a send is the difference. No channel can have this
/// name (channel names are never empty).
pub const NO_SEND: &str = "";

/// Hours past which "time since" features saturate (90 days). A user last messaged half a year
/// ago is, for fatigue, the same as one never messaged.
const HOURS_CAP: f64 = 24.0 * 90.0;

/// What the model knows about one user's recent messages on one channel: the fatigue signals.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChannelHistory<'a> {
    pub channel: &'a str,
    /// Messages sent on this channel in the last 24 hours, 7 days and 28 days.
    pub sent_1d: u32,
    pub sent_7d: u32,
    pub sent_28d: u32,
    /// How many of the messages sent in the last 28 days were opened.
    pub opened_28d: u32,
    /// Hours since the last message on this channel; `None` if never.
    pub hours_since_last: Option<f64>,
}

/// What the model knows about the user, independent of the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UserContext {
    /// Days since the user first appeared.
    pub tenure_days: f64,
    /// The user's current offset from UTC, in minutes (e.g. 60 for CET in winter).
    pub utc_offset_minutes: i32,
    /// Days with any activity in the last 28 days (0 to 28).
    pub active_days_28d: f64,
    /// Hours since the user was last active; `None` if never.
    pub hours_since_active: Option<f64>,
}

/// One candidate (an opportunity on one channel at one planned send time), as plain values.
///
/// The binary builds these from database rows and the planner's inputs; nothing here knows where
/// they came from. Borrowed strings keep encoding tens of millions of candidates allocation-free.
#[derive(Debug, Clone, Copy)]
pub struct CandidateContext<'a> {
    pub channel: &'a str,
    pub category: &'a str,
    pub template: &'a str,
    /// The opportunity's value signals; only the names the spec declares are read.
    pub signals: &'a BTreeMap<String, f64>,
    /// Hours since the opportunity was created, at the planned send time.
    pub age_hours: f64,
    /// Hours until the opportunity expires, at the planned send time.
    pub hours_to_expiry: f64,
    pub user: UserContext,
    /// Recent history per channel, in any order; channels missing here count as never messaged.
    pub history: &'a [ChannelHistory<'a>],
    /// Local time of the planned send: hour of day in `[0, 24)` (fractions allowed) and weekday
    /// (0 = Monday ... 6 = Sunday).
    pub local_hour: f64,
    pub local_weekday: u32,
}

/// One named column of the encoded row and how it is computed. Its text goes into the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub encoding: String,
}

/// The building blocks a spec expands into, in column order. Each writes a fixed number of
/// columns.
#[derive(Debug, Clone, PartialEq)]
enum Block {
    /// One column per declared channel plus one for any other channel.
    ChannelOneHot(Vec<String>),
    /// `n` columns; the category's FNV-1a hash modulo `n` is set.
    CategoryHash(usize),
    TemplateHash(usize),
    /// A declared value signal, signed-log transformed; 0 if absent.
    Signal(String),
    AgeHours,
    HoursToExpiry,
    TenureDays,
    UtcOffset,
    ActiveDays28,
    HoursSinceActive,
    /// Five columns of fatigue for one declared channel.
    History(String),
    /// Hours since the last message on any channel.
    HoursSinceLastAny,
    LocalHour,
    Weekday,
}

impl Block {
    fn columns(&self, out: &mut Vec<Column>) {
        let mut col = |name: String, encoding: &str| {
            out.push(Column {
                name,
                encoding: encoding.to_string(),
            })
        };
        match self {
            Block::ChannelOneHot(channels) => {
                for c in channels {
                    col(format!("channel={c}"), "one_hot");
                }
                col("channel=other".into(), "one_hot");
            }
            Block::CategoryHash(n) => {
                for i in 0..*n {
                    col(format!("category#{i}/{n}"), "fnv1a64_bucket");
                }
            }
            Block::TemplateHash(n) => {
                for i in 0..*n {
                    col(format!("template#{i}/{n}"), "fnv1a64_bucket");
                }
            }
            Block::Signal(name) => col(format!("signal.{name}"), "signed_log1p;missing=0"),
            Block::AgeHours => col("age_hours".into(), "log1p/ln(2161)"),
            Block::HoursToExpiry => col("hours_to_expiry".into(), "log1p/ln(2161)"),
            Block::TenureDays => col("user.tenure_days".into(), "log1p/ln(3651)"),
            Block::UtcOffset => col("user.utc_offset".into(), "minutes/720"),
            Block::ActiveDays28 => col("user.active_days_28d".into(), "x/28"),
            Block::HoursSinceActive => {
                col("user.hours_since_active".into(), "log1p/ln(2161);never=1")
            }
            Block::History(c) => {
                col(format!("history.{c}.sent_1d"), "log1p");
                col(format!("history.{c}.sent_7d"), "log1p");
                col(format!("history.{c}.sent_28d"), "log1p");
                col(
                    format!("history.{c}.hours_since_last"),
                    "log1p/ln(2161);never=1",
                );
                col(format!("history.{c}.open_rate_28d"), "(opened+1)/(sent+2)");
            }
            Block::HoursSinceLastAny => col(
                "history.any.hours_since_last".into(),
                "log1p/ln(2161);never=1",
            ),
            Block::LocalHour => {
                col("time.local_hour.sin".into(), "sin(2pi*h/24)");
                col("time.local_hour.cos".into(), "cos(2pi*h/24)");
            }
            Block::Weekday => {
                col("time.weekday.sin".into(), "sin(2pi*d/7)");
                col("time.weekday.cos".into(), "cos(2pi*d/7)");
            }
        }
    }

    fn width(&self) -> usize {
        match self {
            Block::ChannelOneHot(c) => c.len() + 1,
            Block::CategoryHash(n) | Block::TemplateHash(n) => *n,
            Block::History(_) => 5,
            Block::LocalHour | Block::Weekday => 2,
            _ => 1,
        }
    }

    /// Writes exactly `self.width()` values into `out`.
    fn encode(&self, ctx: &CandidateContext<'_>, out: &mut [f32]) {
        match self {
            Block::ChannelOneHot(channels) => {
                out.fill(0.0);
                // No send: no channel column is set. The same row with a channel's column set
                // is the send on that channel, which is what lets one network compare the two.
                if ctx.channel != NO_SEND {
                    let i = channels
                        .iter()
                        .position(|c| c == ctx.channel)
                        .unwrap_or(channels.len());
                    out[i] = 1.0;
                }
            }
            Block::CategoryHash(n) => {
                out.fill(0.0);
                out[bucket(ctx.category, *n)] = 1.0;
            }
            Block::TemplateHash(n) => {
                out.fill(0.0);
                out[bucket(ctx.template, *n)] = 1.0;
            }
            Block::Signal(name) => {
                let x = ctx.signals.get(name).copied().unwrap_or(0.0);
                out[0] = signed_log1p(x) as f32;
            }
            Block::AgeHours => out[0] = hours(Some(ctx.age_hours)),
            Block::HoursToExpiry => out[0] = hours(Some(ctx.hours_to_expiry)),
            Block::TenureDays => {
                out[0] = (finite_non_negative(ctx.user.tenure_days)
                    .min(3650.0)
                    .ln_1p()
                    / 3651f64.ln()) as f32
            }
            Block::UtcOffset => {
                out[0] = (f64::from(ctx.user.utc_offset_minutes.clamp(-1440, 1440)) / 720.0) as f32
            }
            Block::ActiveDays28 => {
                out[0] = (finite_non_negative(ctx.user.active_days_28d).min(28.0) / 28.0) as f32
            }
            Block::HoursSinceActive => out[0] = hours(ctx.user.hours_since_active),
            Block::History(channel) => {
                let h = ctx
                    .history
                    .iter()
                    .find(|h| h.channel == channel)
                    .copied()
                    .unwrap_or_default();
                out[0] = count(h.sent_1d);
                out[1] = count(h.sent_7d);
                out[2] = count(h.sent_28d);
                out[3] = hours(h.hours_since_last);
                let opened = f64::from(h.opened_28d.min(h.sent_28d));
                out[4] = ((opened + 1.0) / (f64::from(h.sent_28d) + 2.0)) as f32;
            }
            Block::HoursSinceLastAny => {
                let last = ctx
                    .history
                    .iter()
                    .filter_map(|h| h.hours_since_last.filter(|x| x.is_finite()))
                    .reduce(f64::min);
                out[0] = hours(last);
            }
            Block::LocalHour => {
                let h = if ctx.local_hour.is_finite() {
                    ctx.local_hour.rem_euclid(24.0)
                } else {
                    0.0
                };
                let a = std::f64::consts::TAU * h / 24.0;
                out[0] = a.sin() as f32;
                out[1] = a.cos() as f32;
            }
            Block::Weekday => {
                let a = std::f64::consts::TAU * f64::from(ctx.local_weekday % 7) / 7.0;
                out[0] = a.sin() as f32;
                out[1] = a.cos() as f32;
            }
        }
    }
}

/// The declared feature set. Construct with [`FeatureSpec::new`] (or [`FeatureSpec::default`]);
/// the version and width are derived, never set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SpecDecl", into = "SpecDecl")]
pub struct FeatureSpec {
    decl: SpecDecl,
    blocks: Vec<Block>,
    width: usize,
    version: String,
}

/// What a spec is declared from, and how it is stored inside a model artifact. `version` is the
/// version the spec had when it was written: on reading it back it must equal the version this
/// code derives, or the encoder has changed since the model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecDecl {
    /// Channels with their own one-hot column and their own history block, in column order.
    pub channels: Vec<String>,
    /// Hashed one-hot buckets for the category and the template (at least 1 each).
    pub category_buckets: usize,
    pub template_buckets: usize,
    /// Value signals read by name from the opportunity, in column order.
    pub signals: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Default for FeatureSpec {
    /// tern's default features: the three built-in channels, 8 category and 8 template buckets and
    /// two value signals, which makes 48 columns.
    fn default() -> Self {
        FeatureSpec::new(SpecDecl {
            channels: vec!["push".into(), "email".into(), "in_app".into()],
            category_buckets: 8,
            template_buckets: 8,
            signals: vec!["relevance".into(), "order_value".into()],
            version: None,
        })
        .expect("the default feature spec is valid")
    }
}

impl TryFrom<SpecDecl> for FeatureSpec {
    type Error = ModelError;
    fn try_from(decl: SpecDecl) -> Result<Self, ModelError> {
        FeatureSpec::new(decl)
    }
}

impl From<FeatureSpec> for SpecDecl {
    fn from(spec: FeatureSpec) -> SpecDecl {
        SpecDecl {
            version: Some(spec.version),
            ..spec.decl
        }
    }
}

impl FeatureSpec {
    /// Builds a spec from its declaration. A declaration that carries a version (one read back
    /// from an artifact) must derive to that same version.
    pub fn new(decl: SpecDecl) -> Result<Self, ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if decl.category_buckets == 0 || decl.template_buckets == 0 {
            return bad("category_buckets and template_buckets must be at least 1".into());
        }
        if decl.category_buckets > 4096 || decl.template_buckets > 4096 {
            return bad("category_buckets and template_buckets must be at most 4096".into());
        }
        for (what, names) in [("channel", &decl.channels), ("signal", &decl.signals)] {
            for (i, n) in names.iter().enumerate() {
                if n.is_empty() || names[..i].contains(n) {
                    return bad(format!(
                        "{what} names must be non-empty and distinct: {n:?}"
                    ));
                }
            }
        }
        let mut blocks = vec![
            Block::ChannelOneHot(decl.channels.clone()),
            Block::CategoryHash(decl.category_buckets),
            Block::TemplateHash(decl.template_buckets),
        ];
        blocks.extend(decl.signals.iter().cloned().map(Block::Signal));
        blocks.extend([
            Block::AgeHours,
            Block::HoursToExpiry,
            Block::TenureDays,
            Block::UtcOffset,
            Block::ActiveDays28,
            Block::HoursSinceActive,
        ]);
        blocks.extend(decl.channels.iter().cloned().map(Block::History));
        blocks.extend([Block::HoursSinceLastAny, Block::LocalHour, Block::Weekday]);
        let width = blocks.iter().map(Block::width).sum();

        let mut columns = Vec::with_capacity(width);
        for b in &blocks {
            b.columns(&mut columns);
        }
        let mut canonical = format!("tern-features/{ENCODING_REVISION}\n");
        for c in &columns {
            let _ = writeln!(canonical, "{}\t{}", c.name, c.encoding);
        }
        let version = format!("fs-{:016x}", fnv1a64(canonical.as_bytes()));
        if let Some(stored) = &decl.version {
            if *stored != version {
                return Err(ModelError::FeatureVersionMismatch {
                    model: stored.clone(),
                    features: version,
                });
            }
        }
        Ok(FeatureSpec {
            decl: SpecDecl {
                version: None,
                ..decl
            },
            blocks,
            width,
            version,
        })
    }

    /// The version string: a hash of every column's name and encoding. Two specs with the same
    /// version encode every candidate identically.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of `f32` values per encoded row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The declaration this spec was built from.
    pub fn declaration(&self) -> &SpecDecl {
        &self.decl
    }

    /// Every column in order, with its encoding: what the version hashes, and what `tern model`
    /// can print to explain a model's inputs.
    pub fn columns(&self) -> Vec<Column> {
        let mut out = Vec::with_capacity(self.width);
        for b in &self.blocks {
            b.columns(&mut out);
        }
        out
    }

    /// Encodes one candidate into `out`, which must be exactly [`width`](Self::width) long.
    /// Non-finite or negative inputs where a count or duration is expected are read as 0 (or as
    /// "never"), so every written value is finite.
    pub fn encode(&self, ctx: &CandidateContext<'_>, out: &mut [f32]) -> Result<(), ModelError> {
        if out.len() != self.width {
            return Err(ModelError::Shape {
                what: "encoded feature row",
                expected: self.width,
                got: out.len(),
            });
        }
        let mut at = 0;
        for b in &self.blocks {
            let w = b.width();
            b.encode(ctx, &mut out[at..at + w]);
            at += w;
        }
        Ok(())
    }

    /// An empty row-major matrix for this spec, to [`push`](FeatureMatrix::push) candidates into.
    pub fn matrix(&self, capacity_rows: usize) -> FeatureMatrix {
        FeatureMatrix {
            version: self.version.clone(),
            width: self.width,
            data: Vec::with_capacity(capacity_rows.saturating_mul(self.width)),
        }
    }
}

/// Encoded rows that remember which spec encoded them, so that a model can refuse them if they
/// are not its own.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    version: String,
    width: usize,
    data: Vec<f32>,
}

impl FeatureMatrix {
    /// Wraps rows encoded elsewhere (e.g. by a store that encodes while streaming) under a spec.
    pub fn from_raw(spec: &FeatureSpec, data: Vec<f32>) -> Result<Self, ModelError> {
        if !data.len().is_multiple_of(spec.width()) {
            return Err(ModelError::Shape {
                what: "feature matrix (a multiple of the spec's width)",
                expected: data.len() / spec.width() * spec.width(),
                got: data.len(),
            });
        }
        Ok(FeatureMatrix {
            version: spec.version.clone(),
            width: spec.width,
            data,
        })
    }

    /// Encodes one more candidate as the next row.
    pub fn push(
        &mut self,
        spec: &FeatureSpec,
        ctx: &CandidateContext<'_>,
    ) -> Result<(), ModelError> {
        if spec.version != self.version {
            return Err(ModelError::FeatureVersionMismatch {
                model: self.version.clone(),
                features: spec.version.clone(),
            });
        }
        let at = self.data.len();
        self.data.resize(at + self.width, 0.0);
        spec.encode(ctx, &mut self.data[at..])
    }

    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn rows(&self) -> usize {
        self.data.len() / self.width.max(1)
    }
    /// Row-major values, `rows() * width()` long.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
    pub fn clear(&mut self) {
        self.data.clear();
    }
}

fn bucket(name: &str, n: usize) -> usize {
    (fnv1a64(name.as_bytes()) % n as u64) as usize
}

fn finite_non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

fn signed_log1p(x: f64) -> f64 {
    if x.is_finite() {
        x.signum() * x.abs().ln_1p()
    } else {
        0.0
    }
}

fn count(n: u32) -> f32 {
    f64::from(n).ln_1p() as f32
}

/// A duration in hours squashed into `[0, 1]`; "never" (or nonsense) is 1, the saturated value.
fn hours(h: Option<f64>) -> f32 {
    match h {
        Some(h) if h.is_finite() => {
            (h.clamp(0.0, HOURS_CAP).ln_1p() / (HOURS_CAP + 1.0).ln()) as f32
        }
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(
        signals: &'a BTreeMap<String, f64>,
        history: &'a [ChannelHistory<'a>],
    ) -> CandidateContext<'a> {
        CandidateContext {
            channel: "email",
            category: "marketing",
            template: "weekly_digest",
            signals,
            age_hours: 2.0,
            hours_to_expiry: 46.0,
            user: UserContext {
                tenure_days: 400.0,
                utc_offset_minutes: 60,
                active_days_28d: 12.0,
                hours_since_active: Some(5.0),
            },
            history,
            local_hour: 18.5,
            local_weekday: 2,
        }
    }

    #[test]
    fn the_default_spec_has_48_named_columns_and_a_stable_version() {
        let spec = FeatureSpec::default();
        assert_eq!(spec.width(), 48);
        assert_eq!(spec.columns().len(), 48);
        assert_eq!(spec.version(), FeatureSpec::default().version());
        assert!(spec.version().starts_with("fs-"));
    }

    #[test]
    fn changing_the_declaration_changes_the_version() {
        let mut decl = FeatureSpec::default().declaration().clone();
        decl.signals.push("price".into());
        let other = FeatureSpec::new(decl).unwrap();
        assert_ne!(other.version(), FeatureSpec::default().version());
        assert_eq!(other.width(), 49);
    }

    #[test]
    fn encoding_writes_finite_values_in_declared_places() {
        let spec = FeatureSpec::default();
        let signals = BTreeMap::from([("relevance".to_string(), 0.7), ("junk".to_string(), 9.0)]);
        let history = [ChannelHistory {
            channel: "email",
            sent_1d: 1,
            sent_7d: 3,
            sent_28d: 8,
            opened_28d: 2,
            hours_since_last: Some(f64::NAN),
        }];
        let mut row = vec![f32::NAN; spec.width()];
        spec.encode(&ctx(&signals, &history), &mut row).unwrap();
        assert!(row.iter().all(|x| x.is_finite()));
        let cols = spec.columns();
        let at = |name: &str| row[cols.iter().position(|c| c.name == name).unwrap()];
        assert_eq!(at("channel=email"), 1.0);
        assert_eq!(at("channel=push"), 0.0);
        assert_eq!(
            at("history.email.hours_since_last"),
            1.0,
            "NaN reads as never"
        );
        assert!((at("history.email.open_rate_28d") - 0.3).abs() < 1e-6);
        assert!((at("signal.relevance") - 0.7f32.ln_1p()).abs() < 1e-6);
        assert_eq!(at("signal.order_value"), 0.0);
    }

    #[test]
    fn a_wrong_row_length_is_an_error() {
        let spec = FeatureSpec::default();
        let signals = BTreeMap::new();
        let err = spec.encode(&ctx(&signals, &[]), &mut [0.0; 3]).unwrap_err();
        assert!(matches!(
            err,
            ModelError::Shape {
                expected: 48,
                got: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_stored_spec_round_trips_and_a_tampered_version_is_refused() {
        let spec = FeatureSpec::default();
        let json = serde_json::to_string(&spec).unwrap();
        let back: FeatureSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        let tampered = json.replace(spec.version(), "fs-0000000000000000");
        assert!(serde_json::from_str::<FeatureSpec>(&tampered).is_err());
    }
}
