//! Decoding YAML node trees into the typed model, collecting every finding on the way.
//!
//! Each `decode_*` function reads one level of a document. When a value is wrong it records a
//! finding and returns `None` for that value, and the caller carries on with the rest, so that a
//! single run reports every mistake in a file. A document with any error is still reported to
//! the bundle checks by kind and name (see [`Declared`]), so that one broken channel does not
//! also produce "unknown channel" errors everywhere it is used.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use chrono::TimeDelta;
use chrono_tz::Tz;
use tern_core::limits;

use crate::finding::{Finding, Pos};
use crate::model::*;
use crate::text::{did_you_mean, is_name, parse_duration, parse_hhmm};
use crate::yaml::{quote_short, Document, Node, Style, Value};

/// The kinds of document, in the order canonical JSON lists them.
pub const KINDS: [&str; 9] = [
    "Channel",
    "Category",
    "Caps",
    "Objective",
    "Generator",
    "Experiment",
    "Replan",
    "Priority",
    "Schema",
];

// The fields each mapping accepts. `schema.rs` is tested against these lists, so the JSON
// Schema cannot drift from what the checker accepts.
pub(crate) const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
pub(crate) const METADATA: &[&str] = &["name", "description", "labels"];
pub(crate) const CHANNEL: &[&str] = &["quietHours", "budget", "reachableWhen"];
pub(crate) const QUIET_HOURS: &[&str] = &["from", "to"];
pub(crate) const BUDGET: &[&str] = &["max", "per"];
pub(crate) const CATEGORY: &[&str] = &[];
pub(crate) const CAPS: &[&str] = &["rules", "exempt"];
pub(crate) const CAP_RULE: &[&str] = &["channel", "category", "max", "per", "minGap"];
pub(crate) const OBJECTIVE: &[&str] = &["weights", "minValue", "horizon", "value"];
pub(crate) const WEIGHTS: &[&str] = &["conversion", "engagement", "retention", "reachability"];
pub(crate) const GENERATOR: &[&str] = &[
    "on",
    "when",
    "schedule",
    "timezone",
    "segment",
    "message",
    "channels",
    "ttl",
    "priority",
    "dedupeKey",
    "signals",
    "payload",
    "startingDeadline",
];
pub(crate) const ON: &[&str] = &["event"];
pub(crate) const MESSAGE: &[&str] = &["template", "category"];
pub(crate) const EXPERIMENT: &[&str] = &["salt", "layer", "traffic", "arms"];
pub(crate) const ARM: &[&str] = &["name", "share", "objective", "caps", "holdout"];
pub(crate) const REPLAN: &[&str] = &[
    "cron",
    "incremental",
    "timezone",
    "horizon",
    "exploration",
    "withhold",
    "startingDeadline",
];
pub(crate) const PRIORITY: &[&str] = &["bypass"];
pub(crate) const SCHEMA: &[&str] = &["user", "events"];

/// Variables that event-triggered generators' expressions can read.
pub const EVENT_VARS: &[&str] = &["event", "user"];
/// Variables that scheduled generators' expressions can read.
pub const SCHEDULE_VARS: &[&str] = &["user", "run"];
/// Variables that a channel's `reachableWhen` can read.
pub const USER_VARS: &[&str] = &["user"];

/// CEL's own identifiers for types (`type(x) == int`), which are not variables.
const CEL_TYPE_NAMES: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "type",
    "null_type",
];

/// Longer expressions are refused before parsing: policies hold conditions, not programs, and
/// the bound keeps the parser's time and memory small.
const MAX_EXPR_CHARS: usize = 4096;

/// The default horizon of an objective's retention outcome.
pub const DEFAULT_HORIZON_DAYS: i64 = 28;

/// A decoded document.
#[derive(Debug, Clone)]
pub enum Doc {
    Channel(Channel),
    Category(Category),
    Caps(CapSet),
    Objective(Objective),
    Generator(Generator),
    Experiment(Experiment),
    Replan(Replan),
    Priority(PriorityClass),
    Schema(Schema),
}

/// A document with a known kind and a valid name, whether or not the rest of it decoded.
#[derive(Debug, Clone)]
pub struct Declared {
    pub kind: &'static str,
    pub name: String,
    pub file: PathBuf,
    pub pos: Pos,
}

/// What a reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Channel,
    Category,
    Objective,
    Caps,
}

impl RefKind {
    pub fn kind(self) -> &'static str {
        match self {
            RefKind::Channel => "Channel",
            RefKind::Category => "Category",
            RefKind::Objective => "Objective",
            RefKind::Caps => "Caps",
        }
    }
}

/// A name used in one document that must be declared by another.
#[derive(Debug, Clone)]
pub struct Reference {
    pub to: RefKind,
    pub name: String,
    pub file: PathBuf,
    pub pos: Pos,
}

/// An experiment's layer and traffic, for the check that a layer is not over-full.
#[derive(Debug, Clone)]
pub struct LayerUse {
    pub layer: String,
    pub experiment: String,
    pub traffic: f64,
    pub file: PathBuf,
    pub pos: Pos,
}

/// Everything decoded from the files of a bundle.
#[derive(Debug, Default)]
pub struct Decoded {
    pub docs: Vec<Doc>,
    pub declared: Vec<Declared>,
    pub references: Vec<Reference>,
    pub layers: Vec<LayerUse>,
    pub findings: Vec<Finding>,
    /// Files that could not be parsed: whatever they declare is unknown, so a reference that
    /// is not found may be to one of their documents.
    pub unreadable: Vec<PathBuf>,
    /// Every compiled expression with its context, checked against the bundle's Schema once
    /// every file is decoded (the Schema may be in any file).
    pub exprs: Vec<crate::shape::ExprUse>,
    /// Every event a generator listens to, with where it is named.
    pub events: Vec<(String, PathBuf, Pos)>,
}

/// The decoder for one file.
pub struct Decoder<'a> {
    file: &'a Path,
    out: &'a mut Decoded,
    /// The event type of the generator being decoded, for the expressions that read `event`.
    event: Option<String>,
}

/// The entries of one mapping, checked for unknown and duplicate keys.
struct Fields<'n> {
    pos: Pos,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, v)| *k == name && v.value != Value::Null)
            .map(|(_, v)| *v)
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl<'a> Decoder<'a> {
    pub fn new(file: &'a Path, out: &'a mut Decoded) -> Decoder<'a> {
        Decoder {
            file,
            out,
            event: None,
        }
    }

    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.out
            .findings
            .push(Finding::error(self.file, pos, message));
    }

    fn error_hint(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.out
            .findings
            .push(Finding::error(self.file, pos, message).with_hint(hint));
    }

    fn warning(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        let mut f = Finding::warning(self.file, pos, message);
        f.hint = hint;
        self.out.findings.push(f);
    }

    fn reference(&mut self, to: RefKind, name: &str, pos: Pos) {
        self.out.references.push(Reference {
            to,
            name: name.to_string(),
            file: self.file.to_path_buf(),
            pos,
        });
    }

    /// Reads a mapping, reporting unknown keys (with the closest known one as a hint),
    /// duplicate keys and keys that are not strings.
    fn fields<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                format!("`{what}` must be a mapping, found {}", node.describe()),
            );
            return None;
        };
        let mut seen: Vec<(&str, Pos)> = Vec::new();
        let mut out = Vec::new();
        for (key, value) in entries {
            let Some(name) = key.scalar() else {
                self.error(
                    key.pos,
                    format!("keys of `{what}` must be strings, found {}", key.describe()),
                );
                continue;
            };
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == name) {
                let first = *first;
                self.error_hint(
                    key.pos,
                    format!("duplicate key `{name}` in `{what}`"),
                    format!("first given at {}:{}", first.line, first.column),
                );
                continue;
            }
            seen.push((name, key.pos));
            if !allowed.contains(&name) {
                let message = format!("unknown field `{name}` in `{what}`");
                match did_you_mean(name, allowed.iter().copied()) {
                    Some(s) => self.error_hint(key.pos, message, format!("did you mean `{s}`?")),
                    None if allowed.is_empty() => {
                        self.error_hint(key.pos, message, format!("`{what}` takes no fields"))
                    }
                    None => self.error_hint(
                        key.pos,
                        message,
                        format!("expected one of: {}", allowed.join(", ")),
                    ),
                }
                continue;
            }
            out.push((name, value));
        }
        Some(Fields {
            pos: node.pos,
            entries: out,
        })
    }

    /// A required field: reports its absence at the mapping that lacks it.
    fn required<'n>(&mut self, f: &Fields<'n>, name: &str, what: &str) -> Option<&'n Node> {
        let v = f.get(name);
        if v.is_none() {
            self.error(
                f.pos,
                format!("missing required field `{name}` in `{what}`"),
            );
        }
        v
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s, _) if !s.is_empty() => Some(s.clone()),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "`{field}` must be a non-empty string, found {}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    fn name(&mut self, node: &Node, field: &str) -> Option<String> {
        let s = self.string(node, field)?;
        if is_name(&s) {
            Some(s)
        } else {
            self.error_hint(
                node.pos,
                format!("`{field}` {} is not a valid name", quote_short(&s)),
                "names are lowercase letters, digits, `-` and `_`, start with a letter, and have at most 63 characters",
            );
            None
        }
    }

    fn number(&mut self, node: &Node, field: &str) -> Option<f64> {
        if let Value::Scalar(s, Style::Plain) = &node.value {
            if let Ok(v) = s.parse::<f64>() {
                if v.is_finite()
                    && !s
                        .chars()
                        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
                {
                    return Some(v);
                }
            }
        }
        self.error(
            node.pos,
            format!("`{field}` must be a number, found {}", node.describe()),
        );
        None
    }

    fn whole(&mut self, node: &Node, field: &str) -> Option<u64> {
        if let Value::Scalar(s, Style::Plain) = &node.value {
            if let Ok(v) = s.parse::<u64>() {
                return Some(v);
            }
            if s.parse::<i64>().is_ok_and(|v| v < 0) {
                self.error(
                    node.pos,
                    format!("`{field}` must not be negative, found {s}"),
                );
                return None;
            }
        }
        self.error(
            node.pos,
            format!(
                "`{field}` must be a whole number, found {}",
                node.describe()
            ),
        );
        None
    }

    fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar(s, Style::Plain) if s == "true" => Some(true),
            Value::Scalar(s, Style::Plain) if s == "false" => Some(false),
            _ => {
                self.error(
                    node.pos,
                    format!("`{field}` must be true or false, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn share(&mut self, node: &Node, field: &str, zero_ok: bool) -> Option<f64> {
        let v = self.number(node, field)?;
        let ok = if zero_ok {
            (0.0..=1.0).contains(&v)
        } else {
            v > 0.0 && v <= 1.0
        };
        if ok {
            Some(v)
        } else {
            let range = if zero_ok { "[0, 1]" } else { "(0, 1]" };
            self.error(node.pos, format!("`{field}` must be in {range}, found {v}"));
            None
        }
    }

    fn duration(&mut self, node: &Node, field: &str) -> Option<TimeDelta> {
        let text = match &node.value {
            Value::Scalar(s, _) => s.clone(),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "`{field}` must be a duration such as 4h, found {}",
                        node.describe()
                    ),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error_hint(
                    node.pos,
                    format!("`{field}`: {e}"),
                    "write durations as a number and a unit (s, m, h, d, w), e.g. 30m, 4h, 1d, 7d or 1h30m",
                );
                None
            }
        }
    }

    fn time_of_day(&mut self, node: &Node, field: &str) -> Option<chrono::NaiveTime> {
        let s = self.string(node, field)?;
        let t = parse_hhmm(&s);
        if t.is_none() {
            self.error_hint(
                node.pos,
                format!("`{field}` {} is not a time of day", quote_short(&s)),
                "write times as HH:MM on a 24-hour clock, e.g. \"22:00\" (quoted)",
            );
        }
        t
    }

    fn timezone(&mut self, node: &Node, field: &str) -> Option<Tz> {
        let s = self.string(node, field)?;
        match s.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                let message = format!("`{field}` {} is not an IANA time zone", quote_short(&s));
                match did_you_mean(&s, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())) {
                    Some(m) => self.error_hint(node.pos, message, format!("did you mean `{m}`?")),
                    None => self.error_hint(
                        node.pos,
                        message,
                        "use a name from the tz database, such as Europe/London or UTC",
                    ),
                }
                None
            }
        }
    }

    fn cron(&mut self, node: &Node, field: &str) -> Option<CronSchedule> {
        let s = self.string(node, field)?;
        let parsed = catch_unwind(|| cron::Schedule::from_str(&s));
        match parsed {
            Ok(Ok(schedule)) => Some(CronSchedule {
                source: s,
                schedule,
            }),
            Ok(Err(e)) => {
                let fields = s.split_whitespace().count();
                let why = cron_reason(&e.to_string(), &s);
                let hint = if fields == 5 {
                    "the cron crate's syntax has a seconds field first: `sec min hour day-of-month month day-of-week [year]`, e.g. \"0 */15 * * * *\"".to_string()
                } else {
                    "syntax: `sec min hour day-of-month month day-of-week [year]`, e.g. \"0 0 9 * * Mon\"".to_string()
                };
                self.error_hint(
                    node.pos,
                    format!(
                        "`{field}` {} is not a valid cron expression{why}",
                        quote_short(&s)
                    ),
                    hint,
                );
                None
            }
            Err(_) => {
                self.error(
                    node.pos,
                    format!(
                        "`{field}` {} is not a valid cron expression",
                        quote_short(&s)
                    ),
                );
                None
            }
        }
    }

    /// Compiles a CEL expression and checks that it reads only the variables given to it.
    fn cel(&mut self, node: &Node, field: &str, vars: &[&str]) -> Option<Expr> {
        let (source, style) = match &node.value {
            Value::Scalar(s, style) if !s.trim().is_empty() => (s.clone(), *style),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "`{field}` must be a CEL expression (a string), found {}",
                        node.describe()
                    ),
                );
                return None;
            }
        };
        if source.chars().count() > MAX_EXPR_CHARS {
            self.error(
                node.pos,
                format!("`{field}` is longer than {MAX_EXPR_CHARS} characters"),
            );
            return None;
        }
        // Where offset `i` (0-based, in characters) of the expression is in the file, when the
        // expression is written on one line; otherwise the start of the scalar.
        let at = |line: usize, col: usize| -> Pos {
            let single = !source.contains('\n') && style != Style::Block;
            if single && line <= 1 {
                let quote = usize::from(style == Style::Quoted);
                Pos::new(node.pos.line, node.pos.column + quote + col.max(1) - 1)
            } else {
                node.pos
            }
        };
        if let Some(depth) = too_deep(&source) {
            self.error_hint(
                node.pos,
                format!("`{field}` nests brackets {depth} deep, more than {MAX_EXPR_NESTING}"),
                "policies hold conditions, not programs; split the logic or simplify it",
            );
            return None;
        }
        let compiled = compile_cel(&source);
        let (program, free) = match compiled {
            Ok(Ok(p)) => p,
            Ok(Err(errors)) => {
                let (pos, msg) = match errors.errors.first() {
                    Some(e) => {
                        let line = usize::try_from(e.pos.0).unwrap_or(0);
                        let col = usize::try_from(e.pos.1).unwrap_or(0);
                        (at(line, col), shorten_cel_message(&e.msg))
                    }
                    None => (node.pos, "syntax error".to_string()),
                };
                self.error(pos, format!("invalid CEL in `{field}`: {msg}"));
                return None;
            }
            Err(_) => {
                self.error(node.pos, format!("invalid CEL in `{field}`"));
                return None;
            }
        };
        let mut ok = true;
        let mut reported: Vec<&str> = Vec::new();
        for (name, id) in &free {
            if vars.contains(&name.as_str())
                || CEL_TYPE_NAMES.contains(&name.as_str())
                || reported.contains(&name.as_str())
            {
                continue;
            }
            reported.push(name);
            ok = false;
            let offset = program
                .source_info()
                .offset_for(*id)
                .map(|(start, _)| start as usize)
                .unwrap_or(0);
            let message = format!(
                "unknown variable `{name}` in `{field}`; it can read {}",
                vars.iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            match did_you_mean(name, vars.iter().copied()) {
                Some(m) => {
                    self.error_hint(at(1, offset + 1), message, format!("did you mean `{m}`?"))
                }
                None => self.error(at(1, offset + 1), message),
            }
        }
        if !ok {
            return None;
        }
        let program = Arc::new(program);
        let single = !source.contains('\n') && style != Style::Block;
        self.out.exprs.push(crate::shape::ExprUse {
            file: self.file.to_path_buf(),
            pos: node.pos,
            single_line: single,
            quoted: style == Style::Quoted,
            field: field.to_string(),
            event: self.event.clone().filter(|_| vars.contains(&"event")),
            program: program.clone(),
        });
        Some(Expr { source, program })
    }

    fn names(&mut self, node: &Node, field: &str) -> Option<Vec<(String, Pos)>> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node.pos,
                format!(
                    "`{field}` must be a list of names, found {}",
                    node.describe()
                ),
            );
            return None;
        };
        let mut out: Vec<(String, Pos)> = Vec::new();
        let mut ok = true;
        for item in items {
            match self.name(item, field) {
                Some(n) => {
                    if out.iter().any(|(m, _)| *m == n) {
                        self.error(item.pos, format!("`{n}` is listed twice in `{field}`"));
                        ok = false;
                    } else {
                        out.push((n, item.pos));
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Decodes every document of a parsed file.
    pub fn file(&mut self, docs: &[Document]) {
        for doc in docs {
            if let Some(root) = &doc.root {
                self.document(root);
            }
        }
    }

    fn document(&mut self, root: &Node) {
        let Some(f) = self.fields(root, "document", TOP) else {
            return;
        };
        if let Some(v) = self.required(&f, "apiVersion", "document") {
            if let Some(s) = self.string(v, "apiVersion") {
                if s != API_VERSION {
                    self.error_hint(
                        v.pos,
                        format!("unsupported apiVersion {}", quote_short(&s)),
                        format!("this version of tern reads `apiVersion: {API_VERSION}`"),
                    );
                }
            }
        }
        let kind = match self.required(&f, "kind", "document") {
            Some(k) => match self.string(k, "kind") {
                Some(s) => match KINDS.iter().find(|known| **known == s) {
                    Some(known) => Some(*known),
                    None => {
                        let message = format!("unknown kind {}", quote_short(&s));
                        match did_you_mean(&s, KINDS) {
                            Some(m) => {
                                self.error_hint(k.pos, message, format!("did you mean `{m}`?"))
                            }
                            None => self.error_hint(
                                k.pos,
                                message,
                                format!("expected one of: {}", KINDS.join(", ")),
                            ),
                        }
                        None
                    }
                },
                None => None,
            },
            None => None,
        };
        let metadata = self
            .required(&f, "metadata", "document")
            .and_then(|m| self.metadata(m));
        let spec = match kind {
            Some("Category") => f.get("spec"),
            Some(_) => self.required(&f, "spec", "document"),
            None => None,
        };
        let (Some(kind), Some((metadata, name_pos))) = (kind, metadata) else {
            return;
        };
        self.out.declared.push(Declared {
            kind,
            name: metadata.name.clone(),
            file: self.file.to_path_buf(),
            pos: name_pos,
        });
        let source = Source {
            file: self.file.to_path_buf(),
            pos: root.pos,
        };
        if kind == "Category" {
            if let Some(spec) = spec {
                self.fields(spec, "spec", CATEGORY);
            }
            self.out
                .docs
                .push(Doc::Category(Category { metadata, source }));
            return;
        }
        let Some(spec) = spec else {
            return;
        };
        let before = self.error_count();
        let doc = match kind {
            "Channel" => self.channel(spec, metadata, source).map(Doc::Channel),
            "Caps" => self.caps(spec, metadata, source).map(Doc::Caps),
            "Objective" => self.objective(spec, metadata, source).map(Doc::Objective),
            "Generator" => self.generator(spec, metadata, source).map(Doc::Generator),
            "Experiment" => self.experiment(spec, metadata, source).map(Doc::Experiment),
            "Replan" => self.replan(spec, metadata, source).map(Doc::Replan),
            "Priority" => self
                .priority(spec, metadata, name_pos, source)
                .map(Doc::Priority),
            "Schema" => self.schema(spec, metadata, source).map(Doc::Schema),
            _ => None,
        };
        if let (Some(doc), true) = (doc, self.error_count() == before) {
            self.out.docs.push(doc);
        }
    }

    fn error_count(&self) -> usize {
        self.out
            .findings
            .iter()
            .filter(|f| f.severity == crate::Severity::Error)
            .count()
    }

    fn metadata(&mut self, node: &Node) -> Option<(Metadata, Pos)> {
        let f = self.fields(node, "metadata", METADATA)?;
        let name_node = self.required(&f, "name", "metadata")?;
        let name = self.name(name_node, "name");
        let description = f
            .get("description")
            .and_then(|d| self.string(d, "description"));
        let mut labels = BTreeMap::new();
        if let Some(l) = f.get("labels") {
            if let Value::Map(entries) = &l.value {
                for (k, v) in entries {
                    match (k.scalar(), v.scalar()) {
                        (Some(k), Some(v)) => {
                            labels.insert(k.to_string(), v.to_string());
                        }
                        _ => self.error(k.pos, "labels must map strings to strings"),
                    }
                }
            } else {
                self.error(
                    l.pos,
                    format!("`labels` must be a mapping, found {}", l.describe()),
                );
            }
        }
        Some((
            Metadata {
                name: name?,
                description,
                labels,
            },
            name_node.pos,
        ))
    }

    fn channel(&mut self, spec: &Node, metadata: Metadata, source: Source) -> Option<Channel> {
        let f = self.fields(spec, "spec", CHANNEL)?;
        let quiet_hours = f.get("quietHours").and_then(|q| {
            let q = self.fields(q, "quietHours", QUIET_HOURS)?;
            let from = self.required(&q, "from", "quietHours");
            let to = self.required(&q, "to", "quietHours");
            let from = from.and_then(|n| self.time_of_day(n, "from"));
            let to_pos = to.map(|n| n.pos);
            let to = to.and_then(|n| self.time_of_day(n, "to"));
            let (from, to) = (from?, to?);
            if from == to {
                self.error_hint(
                    to_pos.unwrap_or(q.pos),
                    "quiet hours that start and end at the same time are empty",
                    "remove `quietHours` if the channel has none",
                );
                return None;
            }
            Some(QuietHours { from, to })
        });
        let budget = f.get("budget").and_then(|b| {
            let b = self.fields(b, "budget", BUDGET)?;
            let max = self
                .required(&b, "max", "budget")
                .and_then(|n| self.whole(n, "max"));
            let per = self
                .required(&b, "per", "budget")
                .and_then(|n| self.duration(n, "per"));
            if max == Some(0) {
                self.warning(
                    b.pos,
                    "a budget of 0 stops the channel for every user",
                    Some("remove the channel from generators to stop using it".to_string()),
                );
            }
            Some(Budget {
                max: max?,
                per: per?,
            })
        });
        let reachable_when = f
            .get("reachableWhen")
            .and_then(|n| self.cel(n, "reachableWhen", USER_VARS));
        Some(Channel {
            metadata,
            source,
            quiet_hours,
            budget,
            reachable_when,
        })
    }

    fn caps(&mut self, spec: &Node, metadata: Metadata, source: Source) -> Option<CapSet> {
        let f = self.fields(spec, "spec", CAPS)?;
        let mut rules: Vec<(CapRule, Pos)> = Vec::new();
        if let Some(list) = self.required(&f, "rules", "spec") {
            match &list.value {
                Value::Seq(items) => {
                    for item in items {
                        if let Some(rule) = self.cap_rule(item) {
                            rules.push((rule, item.pos));
                        }
                    }
                }
                _ => self.error(
                    list.pos,
                    format!("`rules` must be a list, found {}", list.describe()),
                ),
            }
        }
        let mut exempt = Vec::new();
        if let Some(n) = f.get("exempt") {
            if let Value::Seq(items) = &n.value {
                for item in items {
                    let Some(s) = self.string(item, "exempt") else {
                        continue;
                    };
                    match Priority::parse(&s) {
                        Some(p) if exempt.contains(&p) => {
                            self.error(item.pos, format!("`{s}` is listed twice in `exempt`"))
                        }
                        Some(p) => exempt.push(p),
                        None => {
                            let message = format!("unknown priority class {}", quote_short(&s));
                            let hint = match did_you_mean(&s, Priority::ALL) {
                                Some(m) => format!("did you mean `{m}`?"),
                                None => format!("expected one of: {}", Priority::ALL.join(", ")),
                            };
                            self.error_hint(item.pos, message, hint);
                        }
                    }
                }
            } else {
                self.error(
                    n.pos,
                    format!(
                        "`exempt` must be a list of priority classes, found {}",
                        n.describe()
                    ),
                );
            }
        }
        let slots: usize = rules
            .iter()
            .map(|(r, _)| usize::from(r.limit.is_some()) + usize::from(r.min_gap.is_some()))
            .sum();
        if slots > limits::MAX_CAP_LIMITS {
            if let Some(list) = f.get("rules") {
                self.error_hint(
                    list.pos,
                    format!(
                        "this cap set holds {slots} limits; the planner runs at most {}",
                        limits::MAX_CAP_LIMITS
                    ),
                    "a rule with both `max` and `minGap` holds two; merge or remove rules",
                );
            }
        }
        self.check_rules(&rules);
        Some(CapSet {
            metadata,
            source,
            rules: rules.into_iter().map(|(r, _)| r).collect(),
            exempt,
        })
    }

    fn cap_rule(&mut self, node: &Node) -> Option<CapRule> {
        let f = self.fields(node, "rules[]", CAP_RULE)?;
        let channel = match f.get("channel") {
            None => Some(ChannelScope::Any),
            Some(n) => match self.name(n, "channel") {
                Some(c) if c == "any" => Some(ChannelScope::Any),
                Some(c) => {
                    self.reference(RefKind::Channel, &c, n.pos);
                    Some(ChannelScope::Channel(c))
                }
                None => None,
            },
        };
        let category = match f.get("category") {
            None => Some(None),
            Some(n) => self.name(n, "category").map(|c| {
                self.reference(RefKind::Category, &c, n.pos);
                Some(c)
            }),
        };
        let max = f.get("max").and_then(|n| self.whole(n, "max"));
        let per = f.get("per").and_then(|n| self.duration(n, "per"));
        let min_gap = f.get("minGap").and_then(|n| self.duration(n, "minGap"));
        // A field that failed to parse has its own error already; an error about the rule's
        // shape would only follow from it.
        let unparsed = |k: &str, parsed: bool| f.has(k) && !parsed;
        if unparsed("max", max.is_some())
            || unparsed("per", per.is_some())
            || unparsed("minGap", min_gap.is_some())
        {
            return None;
        }
        let secs = |d: Option<TimeDelta>| d.map(|d| d.num_seconds().max(1) as u64);
        // The planner's own rule, so that whatever passes here, the planner runs.
        match limits::cap_limits(max, secs(per), secs(min_gap)) {
            Ok(_) => {}
            Err(e) => {
                use limits::CapRuleError as E;
                let (pos, hint) = match &e {
                    E::Nothing | E::MaxWithoutPer | E::PerWithoutMax => (
                        f.pos,
                        Some("e.g. `{ max: 2, per: 1d }`, `{ minGap: 4h }`, or both"),
                    ),
                    E::MaxTooLarge(_) => (f.get("max").map_or(f.pos, |n| n.pos), None),
                    E::Window { field, .. } => (
                        f.get(field).map_or(f.pos, |n| n.pos),
                        Some("cap windows and gaps are at most 366 days"),
                    ),
                };
                match hint {
                    Some(h) => self.error_hint(pos, e.to_string(), h),
                    None => self.error(pos, e.to_string()),
                }
                return None;
            }
        }
        let limit = match (max, per) {
            (Some(max), Some(per)) => Some(Limit { max, per }),
            _ => None,
        };
        if limit.as_ref().is_some_and(|l| l.max == 0) {
            self.warning(
                f.pos,
                "`max: 0` blocks every message in this rule's scope",
                Some(
                    "to stop a channel or category, remove it from the generators instead"
                        .to_string(),
                ),
            );
        }
        Some(CapRule {
            channel: channel?,
            category: category?,
            limit,
            min_gap,
        })
    }

    /// Checks that catch rules which cannot do what their author meant: two different limits on
    /// the same scope and window (only the smaller can bind), a count limit that a narrower or
    /// equal scope's longer or equal window already makes unreachable, and a count limit that a
    /// minimum gap makes unreachable. Dead rules are warnings: the bundle still works, but the
    /// rule is noise that misleads readers about what is enforced.
    fn check_rules(&mut self, rules: &[(CapRule, Pos)]) {
        let covers = |outer: &CapRule, inner: &CapRule| {
            (outer.channel == ChannelScope::Any || outer.channel == inner.channel)
                && (outer.category.is_none() || outer.category == inner.category)
        };
        for (i, (a, a_pos)) in rules.iter().enumerate() {
            let Some(la) = &a.limit else { continue };
            for (j, (b, _)) in rules.iter().enumerate() {
                if i == j {
                    continue;
                }
                if let Some(lb) = &b.limit {
                    let same_scope = a.channel == b.channel && a.category == b.category;
                    if same_scope && la.per == lb.per {
                        if j < i && la.max != lb.max {
                            self.error_hint(
                                *a_pos,
                                format!(
                                    "two rules limit the same scope over {}: max {} and max {}",
                                    format_duration(la.per),
                                    lb.max,
                                    la.max
                                ),
                                "keep one rule per channel, category and window",
                            );
                        } else if j < i && la.max == lb.max && a.min_gap == b.min_gap {
                            self.error(*a_pos, "duplicate cap rule");
                        }
                        continue;
                    }
                    // `b` counts everything `a` counts (and maybe more), over a window at
                    // least as long, with no more messages: `a` can never be the binding one.
                    if covers(b, a)
                        && lb.per >= la.per
                        && lb.max <= la.max
                        && !(same_scope && la.per == lb.per)
                    {
                        self.warning(
                            *a_pos,
                            format!(
                                "`max: {}` per {} can never bind: a rule allowing {} per {} on the same or a wider scope is stricter",
                                la.max,
                                format_duration(la.per),
                                lb.max,
                                format_duration(lb.per)
                            ),
                            Some("remove the rule, or lower its max".to_string()),
                        );
                        break;
                    }
                }
                if let Some(gap) = b.min_gap {
                    if covers(b, a) && gap > TimeDelta::zero() && la.max > 0 {
                        // Messages at least `gap` apart: a rolling window of length `per` holds
                        // at most ceil(per / gap) of them.
                        let per = la.per.num_seconds();
                        let g = gap.num_seconds().max(1);
                        let fit = (per + g - 1) / g;
                        if la.max as i64 >= fit && fit >= 1 {
                            self.warning(
                                *a_pos,
                                format!(
                                    "`max: {}` per {} can never bind: with `minGap: {}` at most {} fit in {}",
                                    la.max,
                                    format_duration(la.per),
                                    format_duration(gap),
                                    fit,
                                    format_duration(la.per)
                                ),
                                Some("lower max or the minimum gap".to_string()),
                            );
                            break;
                        }
                    }
                }
            }
        }
    }

    fn objective(&mut self, spec: &Node, metadata: Metadata, source: Source) -> Option<Objective> {
        let f = self.fields(spec, "spec", OBJECTIVE)?;
        let weights = self.required(&f, "weights", "spec").and_then(|w| {
            let w = self.fields(w, "weights", WEIGHTS)?;
            let mut get = |name: &str| -> Option<f64> {
                match w.get(name) {
                    None => Some(0.0),
                    Some(n) => {
                        let v = self.number(n, name)?;
                        if v < 0.0 {
                            self.error_hint(
                                n.pos,
                                format!("weight `{name}` must not be negative, found {v}"),
                                "weights say how much each outcome is worth; the loss of reachability is already subtracted",
                            );
                            return None;
                        }
                        Some(v)
                    }
                }
            };
            // Every weight is read before any failure returns, so that each bad one is reported.
            let (conversion, engagement, retention, reachability) = (
                get("conversion"),
                get("engagement"),
                get("retention"),
                get("reachability"),
            );
            let weights = Weights {
                conversion: conversion?,
                engagement: engagement?,
                retention: retention?,
                reachability: reachability?,
            };
            if weights.conversion + weights.engagement + weights.retention == 0.0 {
                self.error_hint(
                    w.pos,
                    "no outcome has a positive weight, so no message could ever be worth sending",
                    "give conversion, engagement or retention a weight above 0",
                );
                return None;
            }
            Some(weights)
        });
        let min_value = match f.get("minValue") {
            None => Some(0.0),
            Some(n) => self.number(n, "minValue").and_then(|v| {
                if v < 0.0 {
                    self.error_hint(
                        n.pos,
                        format!("`minValue` must not be negative, found {v}"),
                        "a negative minimum would send messages that are expected to do harm",
                    );
                    None
                } else {
                    Some(v)
                }
            }),
        };
        let horizon = match f.get("horizon") {
            None => Some(TimeDelta::days(DEFAULT_HORIZON_DAYS)),
            Some(n) => self.duration(n, "horizon"),
        };
        let value = match f.get("value") {
            None => Some(ValueMode::default()),
            Some(n) => self
                .string(n, "value")
                .and_then(|s| match ValueMode::parse(&s) {
                    Some(v) => Some(v),
                    None => {
                        let message = format!("unknown value mode {}", quote_short(&s));
                        let hint = match did_you_mean(&s, ValueMode::ALL) {
                            Some(m) => format!("did you mean `{m}`?"),
                            None => format!("expected one of: {}", ValueMode::ALL.join(", ")),
                        };
                        self.error_hint(n.pos, message, hint);
                        None
                    }
                }),
        };
        Some(Objective {
            metadata,
            source,
            weights: weights?,
            min_value: min_value?,
            horizon: horizon?,
            value: value?,
        })
    }

    fn generator(&mut self, spec: &Node, metadata: Metadata, source: Source) -> Option<Generator> {
        self.event = None;
        let f = self.fields(spec, "spec", GENERATOR)?;
        let trigger = match (f.get("on"), f.get("schedule")) {
            (Some(_), Some(s)) => {
                self.error_hint(
                    s.pos,
                    "a generator has either `on` (an event) or `schedule` (a cron), not both",
                    "split it into two generators",
                );
                None
            }
            (None, None) => {
                self.error_hint(
                    f.pos,
                    "a generator needs `on: {event: ...}` or `schedule`",
                    "event-triggered: `on: { event: signup }`; recurring: `schedule: \"0 0 9 * * Mon\"` with `segment`",
                );
                None
            }
            (Some(on), None) => {
                for wrong in ["segment", "timezone", "startingDeadline"] {
                    if let Some(n) = f.get(wrong) {
                        self.error_hint(
                            n.pos,
                            format!("`{wrong}` belongs to scheduled generators"),
                            "event-triggered generators filter with `when`",
                        );
                    }
                }
                let event = self.fields(on, "on", ON).and_then(|o| {
                    let e = self.required(&o, "event", "on")?;
                    let name = self.name(e, "event")?;
                    self.out
                        .events
                        .push((name.clone(), self.file.to_path_buf(), e.pos));
                    Some(name)
                });
                self.event = event.clone();
                let when = f.get("when").map(|n| self.cel(n, "when", EVENT_VARS));
                match (event, when) {
                    (Some(event), None) => Some(Trigger::Event { event, when: None }),
                    (Some(event), Some(Some(when))) => Some(Trigger::Event {
                        event,
                        when: Some(when),
                    }),
                    _ => None,
                }
            }
            (None, Some(s)) => {
                if let Some(n) = f.get("when") {
                    self.error_hint(
                        n.pos,
                        "`when` belongs to event-triggered generators",
                        "scheduled generators choose their users with `segment`",
                    );
                }
                let cron = self.cron(s, "schedule");
                let timezone = f.get("timezone").map(|n| self.timezone(n, "timezone"));
                let deadline = match f.get("startingDeadline") {
                    None => Some(None),
                    Some(n) => self.duration(n, "startingDeadline").map(Some),
                };
                let segment = self
                    .required(&f, "segment", "spec")
                    .and_then(|n| self.cel(n, "segment", SCHEDULE_VARS));
                match (cron, timezone, segment, deadline) {
                    (Some(cron), None, Some(segment), Some(starting_deadline)) => {
                        Some(Trigger::Schedule {
                            cron,
                            timezone: None,
                            segment,
                            starting_deadline,
                        })
                    }
                    (Some(cron), Some(Some(tz)), Some(segment), Some(starting_deadline)) => {
                        Some(Trigger::Schedule {
                            cron,
                            timezone: Some(tz),
                            segment,
                            starting_deadline,
                        })
                    }
                    _ => None,
                }
            }
        };
        let vars = if f.has("schedule") {
            SCHEDULE_VARS
        } else {
            EVENT_VARS
        };
        let message = self.required(&f, "message", "spec").and_then(|m| {
            let m = self.fields(m, "message", MESSAGE)?;
            let template = self
                .required(&m, "template", "message")
                .and_then(|n| self.string(n, "template"));
            let category = self.required(&m, "category", "message").and_then(|n| {
                let c = self.name(n, "category")?;
                self.reference(RefKind::Category, &c, n.pos);
                Some(c)
            });
            Some(Message {
                template: template?,
                category: category?,
            })
        });
        let channels = self.required(&f, "channels", "spec").and_then(|n| {
            let list = self.names(n, "channels")?;
            if list.is_empty() {
                self.error(n.pos, "`channels` must name at least one channel");
                return None;
            }
            for (c, pos) in &list {
                self.reference(RefKind::Channel, c, *pos);
            }
            let mut names: Vec<String> = list.into_iter().map(|(c, _)| c).collect();
            names.sort();
            Some(names)
        });
        let ttl = self
            .required(&f, "ttl", "spec")
            .and_then(|n| self.duration(n, "ttl"));
        let priority = match f.get("priority") {
            None => Some(Priority::Normal),
            Some(n) => self.string(n, "priority").and_then(|s| {
                let p = Priority::parse(&s);
                if p.is_none() {
                    let hint = match did_you_mean(&s, Priority::ALL) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("expected one of: {}", Priority::ALL.join(", ")),
                    };
                    self.error_hint(
                        n.pos,
                        format!("unknown priority class {}", quote_short(&s)),
                        hint,
                    );
                }
                p
            }),
        };
        let dedupe_key = f.get("dedupeKey").map(|n| self.cel(n, "dedupeKey", vars));
        let signals = match f.get("signals") {
            Some(n) => self.cel_map(n, "signals", "signal", vars),
            None => Some(BTreeMap::new()),
        };
        let payload = match f.get("payload") {
            Some(n) => self.cel_map(n, "payload", "payload field", vars),
            None => Some(BTreeMap::new()),
        };
        let dedupe_key = match dedupe_key {
            None => None,
            Some(Some(e)) => Some(e),
            Some(None) => return None,
        };
        let (signals, payload) = (signals?, payload?);
        Some(Generator {
            metadata,
            source,
            trigger: trigger?,
            message: message?,
            channels: channels?,
            ttl: ttl?,
            priority: priority?,
            dedupe_key,
            signals,
            payload,
        })
    }

    /// A map from names to CEL expressions (a generator's `signals` or `payload`); `None` after
    /// reporting every mistake in it.
    fn cel_map(
        &mut self,
        n: &Node,
        field: &str,
        what: &str,
        vars: &[&str],
    ) -> Option<BTreeMap<String, Expr>> {
        let Value::Map(entries) = &n.value else {
            self.error(
                n.pos,
                format!(
                    "`{field}` must map names to CEL expressions, found {}",
                    n.describe()
                ),
            );
            return None;
        };
        let mut map = BTreeMap::new();
        let mut ok = true;
        for (k, v) in entries {
            let Some(name) = self.name(k, field) else {
                ok = false;
                continue;
            };
            if map.contains_key(&name) {
                self.error(k.pos, format!("duplicate {what} `{name}`"));
                ok = false;
                continue;
            }
            match self.cel(v, &format!("{field}.{name}"), vars) {
                Some(e) => {
                    map.insert(name, e);
                }
                None => ok = false,
            }
        }
        ok.then_some(map)
    }

    fn experiment(
        &mut self,
        spec: &Node,
        metadata: Metadata,
        source: Source,
    ) -> Option<Experiment> {
        let f = self.fields(spec, "spec", EXPERIMENT)?;
        let salt = self
            .required(&f, "salt", "spec")
            .and_then(|n| self.string(n, "salt"));
        let layer = match f.get("layer") {
            None => Some(None),
            Some(n) => self.name(n, "layer").map(Some),
        };
        let traffic = match f.get("traffic") {
            None => Some(1.0),
            Some(n) => self.share(n, "traffic", false),
        };
        if let (Some(Some(layer)), Some(traffic)) = (&layer, traffic) {
            let pos = f.get("layer").map(|n| n.pos).unwrap_or(f.pos);
            self.out.layers.push(LayerUse {
                layer: layer.clone(),
                experiment: metadata.name.clone(),
                traffic,
                file: self.file.to_path_buf(),
                pos,
            });
        }
        let arms_node = self.required(&f, "arms", "spec");
        let mut arms: Vec<Arm> = Vec::new();
        let mut arms_ok = arms_node.is_some();
        if let Some(n) = arms_node {
            match &n.value {
                Value::Seq(items) => {
                    for item in items {
                        match self.arm(item) {
                            Some(arm) => {
                                if arms.iter().any(|a| a.name == arm.name) {
                                    self.error(item.pos, format!("duplicate arm `{}`", arm.name));
                                    arms_ok = false;
                                } else {
                                    arms.push(arm);
                                }
                            }
                            None => arms_ok = false,
                        }
                    }
                    if arms_ok {
                        if arms.len() < 2 {
                            self.error_hint(
                                n.pos,
                                "an experiment needs at least two arms",
                                "compare a variant with a control arm",
                            );
                            arms_ok = false;
                        } else if arms.iter().all(|a| a.holdout) {
                            self.error(n.pos, "every arm is a holdout; nobody would get a message");
                            arms_ok = false;
                        } else {
                            let sum: f64 = arms.iter().map(|a| a.share).sum();
                            if (sum - 1.0).abs() > 1e-9 {
                                self.error_hint(
                                    n.pos,
                                    format!("arm shares sum to {sum}, not 1"),
                                    "shares are fractions of the experiment's users; make them add up to exactly 1",
                                );
                                arms_ok = false;
                            }
                        }
                    }
                }
                _ => {
                    self.error(
                        n.pos,
                        format!("`arms` must be a list, found {}", n.describe()),
                    );
                    arms_ok = false;
                }
            }
        }
        if !arms_ok {
            return None;
        }
        Some(Experiment {
            metadata,
            source,
            salt: salt?,
            layer: layer?,
            traffic: traffic?,
            arms,
        })
    }

    fn arm(&mut self, node: &Node) -> Option<Arm> {
        let f = self.fields(node, "arms[]", ARM)?;
        let name = self
            .required(&f, "name", "arms[]")
            .and_then(|n| self.name(n, "name"));
        let share = self
            .required(&f, "share", "arms[]")
            .and_then(|n| self.share(n, "share", false));
        let holdout = match f.get("holdout") {
            None => Some(false),
            Some(n) => self.boolean(n, "holdout"),
        };
        let refs = |this: &mut Self, field: &str, kind: RefKind| -> Option<Option<String>> {
            match f.get(field) {
                None => Some(None),
                Some(n) => {
                    if holdout == Some(true) {
                        this.error_hint(
                            n.pos,
                            format!("a holdout arm has no `{field}`"),
                            "holdout users get no messages, so nothing would use it",
                        );
                        return None;
                    }
                    let v = this.name(n, field)?;
                    this.reference(kind, &v, n.pos);
                    Some(Some(v))
                }
            }
        };
        let objective = refs(self, "objective", RefKind::Objective);
        let caps = refs(self, "caps", RefKind::Caps);
        Some(Arm {
            name: name?,
            share: share?,
            objective: objective?,
            caps: caps?,
            holdout: holdout?,
        })
    }

    fn schema(&mut self, spec: &Node, metadata: Metadata, source: Source) -> Option<Schema> {
        let f = self.fields(spec, "spec", SCHEMA)?;
        let user = match f.get("user") {
            None => Some(None),
            Some(n) => self.shape_fields(n, "user", true).map(Some),
        };
        let events = match f.get("events") {
            None => Some(None),
            Some(n) => {
                let Value::Map(entries) = &n.value else {
                    self.error_hint(
                        n.pos,
                        format!(
                            "`events` must map event types to their fields, found {}",
                            n.describe()
                        ),
                        "e.g. `events: { playlist-updated: { popularity: number } }`",
                    );
                    return None;
                };
                let mut events = BTreeMap::new();
                let mut ok = true;
                for (k, v) in entries {
                    let Some(name) = self.name(k, "events") else {
                        ok = false;
                        continue;
                    };
                    if events.contains_key(&name) {
                        self.error(k.pos, format!("event `{name}` is declared twice"));
                        ok = false;
                        continue;
                    }
                    let fields = if v.value == Value::Null {
                        Some(BTreeMap::new())
                    } else {
                        self.shape_fields(v, &format!("events.{name}"), false)
                    };
                    match fields {
                        Some(fields) => {
                            events.insert(name, fields);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Some(events))
            }
        };
        Some(Schema {
            metadata,
            source,
            user: user?,
            events: events?,
        })
    }

    /// The fields of a user or of an event: names (CEL identifiers) to types. An event carries
    /// numbers and strings only.
    fn shape_fields(
        &mut self,
        n: &Node,
        field: &str,
        user: bool,
    ) -> Option<BTreeMap<String, FieldType>> {
        let Value::Map(entries) = &n.value else {
            self.error_hint(
                n.pos,
                format!(
                    "`{field}` must map field names to types, found {}",
                    n.describe()
                ),
                format!("types: {}", FieldType::ALL.join(", ")),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in entries {
            let Some(name) = self.string(k, field) else {
                ok = false;
                continue;
            };
            if !crate::shape::is_identifier(&name) {
                self.error_hint(
                    k.pos,
                    format!(
                        "{} is not a field name an expression can read",
                        quote_short(&name)
                    ),
                    "letters, digits and `_`, starting with a letter or `_`",
                );
                ok = false;
                continue;
            }
            if user && crate::shape::USER_BUILTINS.iter().any(|(b, _)| *b == name) {
                self.error_hint(
                    k.pos,
                    format!("`user.{name}` is tern's own field, not an attribute"),
                    "tern's fields win over attributes of the same name; rename the attribute",
                );
                ok = false;
                continue;
            }
            if !user && name == "event_id" {
                self.error(
                    k.pos,
                    "`event.event_id` is tern's own field, not an event field",
                );
                ok = false;
                continue;
            }
            if out.contains_key(&name) {
                self.error(
                    k.pos,
                    format!("field `{name}` is declared twice in `{field}`"),
                );
                ok = false;
                continue;
            }
            let Some(text) = self.string(v, &format!("{field}.{name}")) else {
                ok = false;
                continue;
            };
            let allowed: &[&str] = if user {
                FieldType::ALL
            } else {
                &["number", "string"]
            };
            match FieldType::parse(&text).filter(|t| allowed.contains(&t.as_str())) {
                Some(t) => {
                    out.insert(name, t);
                }
                None => {
                    let message = if user {
                        format!("unknown type {}", quote_short(&text))
                    } else {
                        format!(
                            "an event field is a number or a string, found {}",
                            quote_short(&text)
                        )
                    };
                    let hint = match did_you_mean(&text, allowed.iter().copied()) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("types: {}", allowed.join(", ")),
                    };
                    self.error_hint(v.pos, message, hint);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn priority(
        &mut self,
        spec: &Node,
        metadata: Metadata,
        name_pos: Pos,
        source: Source,
    ) -> Option<PriorityClass> {
        let class = Priority::parse(&metadata.name);
        if class.is_none() {
            let hint = match did_you_mean(&metadata.name, Priority::ALL) {
                Some(m) => format!("did you mean `{m}`?"),
                None => format!(
                    "a Priority document is named after a class: {}",
                    Priority::ALL.join(", ")
                ),
            };
            self.error_hint(
                name_pos,
                format!("unknown priority class `{}`", metadata.name),
                hint,
            );
        }
        let f = self.fields(spec, "spec", PRIORITY)?;
        let list = self.required(&f, "bypass", "spec")?;
        let Value::Seq(items) = &list.value else {
            self.error_hint(
                list.pos,
                format!("`bypass` must be a list, found {}", list.describe()),
                format!("e.g. `bypass: [{}]`", Bypass::ALL.join(", ")),
            );
            return None;
        };
        let mut bypass: Vec<Bypass> = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(s) = self.string(item, "bypass") else {
                ok = false;
                continue;
            };
            match Bypass::parse(&s) {
                Some(b) if bypass.contains(&b) => {
                    self.error(item.pos, format!("`{s}` is listed twice in `bypass`"));
                    ok = false;
                }
                Some(b) => bypass.push(b),
                None => {
                    let message = format!("unknown bypass {}", quote_short(&s));
                    let hint = match did_you_mean(&s, Bypass::ALL) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("expected one of: {}", Bypass::ALL.join(", ")),
                    };
                    self.error_hint(item.pos, message, hint);
                    ok = false;
                }
            }
        }
        if ok && bypass.is_empty() {
            self.warning(
                list.pos,
                format!("`{}` bypasses nothing", metadata.name),
                Some("remove the document, or list what the class bypasses".to_string()),
            );
        }
        bypass.sort_unstable();
        if !ok {
            return None;
        }
        Some(PriorityClass {
            metadata,
            source,
            class: class?,
            bypass,
        })
    }

    fn replan(&mut self, spec: &Node, metadata: Metadata, source: Source) -> Option<Replan> {
        let f = self.fields(spec, "spec", REPLAN)?;
        let cron = self
            .required(&f, "cron", "spec")
            .and_then(|n| self.cron(n, "cron"));
        let incremental = match f.get("incremental") {
            None => Some(None),
            Some(n) => self.cron(n, "incremental").map(Some),
        };
        let timezone = match f.get("timezone") {
            None => Some(None),
            Some(n) => self.timezone(n, "timezone").map(Some),
        };
        let horizon_node = self.required(&f, "horizon", "spec");
        let horizon = horizon_node.and_then(|n| self.duration(n, "horizon"));
        let horizon = match (horizon, horizon_node) {
            (Some(h), Some(n)) => match limits::check_horizon(h.num_seconds() as u64) {
                Ok(()) => Some(h),
                Err(e) => {
                    self.error(n.pos, e);
                    None
                }
            },
            _ => None,
        };
        let exploration = match f.get("exploration") {
            None => Some(0.0),
            Some(n) => self.share(n, "exploration", true).and_then(|v| {
                match limits::check_exploration(v) {
                    Ok(()) => Some(v),
                    Err(e) => {
                        self.error_hint(
                            n.pos,
                            e,
                            "at 1 every user would be planned at random; 0.05 is typical",
                        );
                        None
                    }
                }
            }),
        };
        let withhold = match f.get("withhold") {
            None => Some(0.0),
            Some(n) => {
                self.share(n, "withhold", true)
                    .and_then(|v| match limits::check_withhold(v) {
                        Ok(()) => Some(v),
                        Err(e) => {
                            self.error_hint(
                                n.pos,
                                e,
                                "a small share is enough to learn from; 0.05 is typical",
                            );
                            None
                        }
                    })
            }
        };
        if let (Some(cron), Some(horizon), Some(n)) = (&cron, horizon, horizon_node) {
            if let Some(gap) = longest_gap(&cron.schedule) {
                if gap > horizon {
                    self.warning(
                        n.pos,
                        format!(
                            "the plan covers {} but runs can be up to {} apart, so nothing is scheduled in between",
                            format_duration(horizon),
                            format_duration(gap)
                        ),
                        Some("make the horizon at least as long as the time between runs".to_string()),
                    );
                }
            }
        }
        let starting_deadline = match f.get("startingDeadline") {
            None => Some(None),
            Some(n) => self.duration(n, "startingDeadline").map(Some),
        };
        Some(Replan {
            metadata,
            source,
            cron: cron?,
            incremental: incremental?,
            timezone: timezone?,
            horizon: horizon?,
            exploration: exploration?,
            withhold: withhold?,
            starting_deadline: starting_deadline?,
        })
    }
}

/// The deepest bracket nesting the language accepts in an expression. The CEL parser (ANTLR)
/// recurses deeply for every bracket level, and running out of stack aborts the process rather
/// than panicking, so it must never be given deeper input.
const MAX_EXPR_NESTING: usize = 32;

/// The stack for compiling one expression: with [`MAX_EXPR_NESTING`] it leaves a wide margin
/// even in debug builds, whatever the caller's own stack size (test threads have 2 MiB).
const CEL_STACK_BYTES: usize = 64 * 1024 * 1024;

/// The bracket nesting depth of an expression, when it exceeds [`MAX_EXPR_NESTING`]. Brackets
/// inside string literals do not count.
fn too_deep(source: &str) -> Option<usize> {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (max > MAX_EXPR_NESTING).then_some(max)
}

type Compiled = Result<(cel::Program, Vec<(String, u64)>), cel::ParseErrors>;

/// Compiles an expression and lists its free variables on a thread with a large stack (see
/// [`CEL_STACK_BYTES`]), turning a panic inside the parser into `Err(())`.
fn compile_cel(source: &str) -> Result<Compiled, ()> {
    let work = |source: String| -> Result<Compiled, ()> {
        catch_unwind(AssertUnwindSafe(|| {
            cel::Program::compile(&source).map(|program| {
                let mut free = Vec::new();
                free_variables(program.expression(), &mut Vec::new(), &mut free);
                (program, free)
            })
        }))
        .map_err(|_| ())
    };
    let owned = source.to_string();
    match std::thread::Builder::new()
        .name("tern-policy-cel".to_string())
        .stack_size(CEL_STACK_BYTES)
        .spawn(move || work(owned))
    {
        Ok(handle) => handle.join().unwrap_or(Err(())),
        // No thread to be had (resource limits): compile here; the nesting bound still holds.
        Err(_) => work(source.to_string()),
    }
}

/// The cron crate's error text repeats the expression and draws a caret under it on separate
/// lines; a finding is one line, so keep only the explanation (prefixed for the message).
fn cron_reason(error: &str, expr: &str) -> String {
    let lines: Vec<&str> = error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != expr.trim() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(": {}", lines.join(" "))
    }
}

/// ANTLR's messages list every token it would have accepted; past a few, the list is noise.
fn shorten_cel_message(msg: &str) -> String {
    if msg.contains("Recursion limit") {
        return "the expression nests too deeply".to_string();
    }
    match msg.find(" expecting {") {
        Some(i) if msg.len() - i > 60 => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// The longest time between two consecutive runs of a schedule, over its first runs from a fixed
/// date (fixed so that the check, and its output, do not depend on when it runs).
fn longest_gap(schedule: &cron::Schedule) -> Option<TimeDelta> {
    let start = chrono::DateTime::from_timestamp(1_767_225_600, 0)?; // 2026-01-01T00:00:00Z
    let times: Vec<_> = catch_unwind(AssertUnwindSafe(|| {
        schedule.after(&start).take(64).collect::<Vec<_>>()
    }))
    .ok()?;
    times.windows(2).map(|w| w[1] - w[0]).max()
}

/// Collects the free variables of a CEL expression: identifiers that are not bound by an
/// enclosing comprehension (`list.exists(x, x > 1)` binds `x`). The cel crate's own
/// `references()` does not know about comprehension scopes, hence this walk.
fn free_variables(e: &cel::IdedExpr, bound: &mut Vec<String>, out: &mut Vec<(String, u64)>) {
    use cel::common::ast::{EntryExpr, Expr as E};
    match &e.expr {
        E::Unspecified | E::Literal(_) => {}
        E::Ident(name) => {
            if !name.starts_with('@') && !bound.iter().any(|b| b == name) {
                out.push((name.clone(), e.id));
            }
        }
        E::Select(s) => free_variables(&s.operand, bound, out),
        E::Call(c) => {
            if let Some(t) = &c.target {
                free_variables(t, bound, out);
            }
            for a in &c.args {
                free_variables(a, bound, out);
            }
        }
        E::List(l) => {
            for x in &l.elements {
                free_variables(x, bound, out);
            }
        }
        E::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => free_variables(&f.value, bound, out),
                    EntryExpr::MapEntry(me) => {
                        free_variables(&me.key, bound, out);
                        free_variables(&me.value, bound, out);
                    }
                }
            }
        }
        E::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => free_variables(&f.value, bound, out),
                    EntryExpr::MapEntry(me) => {
                        free_variables(&me.key, bound, out);
                        free_variables(&me.value, bound, out);
                    }
                }
            }
        }
        E::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            free_variables(&c.loop_cond, bound, out);
            free_variables(&c.loop_step, bound, out);
            free_variables(&c.result, bound, out);
            bound.truncate(depth);
        }
    }
}
