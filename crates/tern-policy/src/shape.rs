//! Field and type checks of CEL expressions against the bundle's `kind: Schema` document.
//!
//! Without a schema, `user.contry` or `event.popularity > '0.3'` compile, and then fail (or are
//! always false) for every user at run time. With one, each expression is walked once: every
//! `user.x` and `event.x` must be a declared field (or one of tern's own), operators must get
//! operands of types they accept, and the expression must give what its field needs (a bool for
//! `when`). The walk infers only what it can know; anything else (a map's entries, a
//! comprehension's variable) is "any" and never reported, so the check has no false alarms on
//! expressions that can work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cel::common::ast::{operators as op, EntryExpr, Expr as E, IdedExpr, LiteralValue};

use crate::finding::{Finding, Pos};
use crate::model::{FieldType, Schema};
use crate::text::did_you_mean;

/// tern's own fields of `user`, which win over attributes of the same name.
pub const USER_BUILTINS: &[(&str, FieldType)] = &[
    ("id", FieldType::String),
    ("timezone", FieldType::String),
    ("locale", FieldType::String),
    ("active_days_28d", FieldType::Number),
    ("opted_out_categories", FieldType::List),
    ("channels", FieldType::Map),
];

/// The fields of `run` in a scheduled generator.
const RUN_FIELDS: &[(&str, FieldType)] =
    &[("date", FieldType::String), ("time", FieldType::String)];

/// One compiled expression and where it was written, recorded by the decoder.
#[derive(Debug, Clone)]
pub struct ExprUse {
    pub file: PathBuf,
    /// The scalar's position.
    pub pos: Pos,
    /// Written on one line (not a block scalar): offsets map to columns.
    pub single_line: bool,
    /// Written in quotes: the expression starts one column after `pos`.
    pub quoted: bool,
    /// The field, as findings name it (`when`, `signals.score`).
    pub field: String,
    /// The event type of its generator, when it reads `event`.
    pub event: Option<String>,
    pub program: Arc<cel::Program>,
}

impl ExprUse {
    /// Where byte `offset` of the expression is in the file, when it is on one line.
    fn at(&self, offset: usize) -> Pos {
        if self.single_line {
            Pos::new(
                self.pos.line,
                self.pos.column + usize::from(self.quoted) + offset,
            )
        } else {
            self.pos
        }
    }

    /// What the field's value must be.
    fn expected(&self) -> Option<(&'static [FieldType], &'static str)> {
        use FieldType as T;
        let f = self.field.as_str();
        if f == "when" || f == "segment" || f == "reachableWhen" {
            Some((&[T::Bool], "a bool"))
        } else if f == "dedupeKey" {
            Some((&[T::String, T::Number], "a string"))
        } else if f.starts_with("signals.") {
            Some((&[T::Number], "a number"))
        } else if f.starts_with("payload.") {
            Some((&[T::String, T::Number, T::Bool], "a string, number or bool"))
        } else {
            None
        }
    }
}

/// Whether `s` can follow a `.` in CEL: letters, digits and `_`, not starting with a digit.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks every expression, and every event listened to, against the schema.
pub fn check(
    schema: &Schema,
    exprs: &[ExprUse],
    events: &[(String, PathBuf, Pos)],
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(declared) = &schema.events {
        for (name, file, pos) in events {
            if declared.contains_key(name) {
                continue;
            }
            let message = format!(
                "event `{name}` is not declared in Schema `{}`",
                schema.metadata.name
            );
            let f = Finding::error(file, *pos, message);
            findings.push(
                match did_you_mean(name, declared.keys().map(String::as_str)) {
                    Some(m) => f.with_hint(format!("did you mean `{m}`?")),
                    None => f.with_hint(format!(
                        "declare its fields under `events:` in {}",
                        schema.source.file.display()
                    )),
                },
            );
        }
    }
    for e in exprs {
        let event = match (&schema.events, &e.event) {
            (Some(declared), Some(name)) => declared.get(name),
            _ => None,
        };
        let mut walk = Walk {
            schema,
            event,
            source: e.program.source_info(),
            bound: Vec::new(),
            problems: Vec::new(),
        };
        let ty = walk.infer(e.program.expression());
        let mut problems = std::mem::take(&mut walk.problems);
        if problems.is_empty() {
            if let (Some((allowed, what)), Some(t)) = (e.expected(), ty.known()) {
                if !allowed.contains(&t) {
                    problems.push(Problem {
                        offset: 0,
                        message: format!("gives {}, not {what}", article(t)),
                        hint: None,
                    });
                }
            }
        }
        for p in problems {
            let message = format!("{} (in `{}`)", p.message, e.field);
            let f = Finding::error(&e.file, e.at(p.offset), message);
            findings.push(match p.hint {
                Some(h) => f.with_hint(h),
                None => f,
            });
        }
    }
    findings
}

/// What the walk knows about a value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Known(FieldType),
    Null,
    /// `user`, `event` or `run` themselves.
    Record(Record),
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Record {
    User,
    Event,
    Run,
}

impl Ty {
    fn known(self) -> Option<FieldType> {
        match self {
            Ty::Known(t) => Some(t),
            Ty::Record(_) => Some(FieldType::Map),
            _ => None,
        }
    }
}

struct Problem {
    offset: usize,
    message: String,
    hint: Option<String>,
}

struct Walk<'a> {
    schema: &'a Schema,
    /// The fields of the generator's event, when the schema declares it.
    event: Option<&'a BTreeMap<String, FieldType>>,
    source: &'a cel::common::ast::SourceInfo,
    /// Variables bound by enclosing comprehensions.
    bound: Vec<String>,
    problems: Vec<Problem>,
}

fn article(t: FieldType) -> &'static str {
    match t {
        FieldType::String => "a string",
        FieldType::Number => "a number",
        FieldType::Bool => "a bool",
        FieldType::List => "a list",
        FieldType::Map => "a map",
    }
}

/// `user.country`, `event.popularity`, `"0.3"`, `3`: how a finding names an operand.
fn render(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        E::Ident(name) => Some(name.clone()),
        E::Select(s) if !s.test => render(&s.operand).map(|o| format!("{o}.{}", s.field)),
        E::Literal(LiteralValue::String(s)) => Some(format!("{:?}", s.inner())),
        E::Literal(LiteralValue::Int(i)) => Some(i.to_string()),
        E::Literal(LiteralValue::UInt(u)) => Some(u.to_string()),
        E::Literal(LiteralValue::Double(d)) => Some(d.to_string()),
        E::Literal(LiteralValue::Boolean(b)) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(e: &IdedExpr, t: FieldType) -> String {
    match render(e) {
        Some(r) => format!("{} (`{r}`)", article(t)),
        None => article(t).to_string(),
    }
}

impl Walk<'_> {
    fn offset(&self, id: u64) -> usize {
        self.source
            .offset_for(id)
            .map_or(0, |(start, _)| start as usize)
    }

    fn problem(&mut self, id: u64, message: String, hint: Option<String>) {
        let offset = self.offset(id);
        self.problems.push(Problem {
            offset,
            message,
            hint,
        });
    }

    /// Where an operand starts: a select's offset is its dot, a call's its operator, so walk
    /// to the leftmost part (`user` in `user.country`).
    fn start(&self, e: &IdedExpr) -> usize {
        match &e.expr {
            E::Select(s) if !s.test => self.start(&s.operand),
            E::Call(c) => match (&c.target, c.args.first()) {
                (Some(t), _) => self.start(t),
                (None, Some(a)) if c.func_name.starts_with('_') => self.start(a),
                _ => self.offset(e.id),
            },
            _ => self.offset(e.id),
        }
    }

    /// A problem with an operand, pointed at where the operand starts.
    fn operand_problem(&mut self, e: &IdedExpr, message: String) {
        let offset = self.start(e);
        self.problems.push(Problem {
            offset,
            message,
            hint: None,
        });
    }

    fn infer(&mut self, e: &IdedExpr) -> Ty {
        use FieldType as T;
        match &e.expr {
            E::Unspecified => Ty::Any,
            E::Literal(l) => match l {
                LiteralValue::Boolean(_) => Ty::Known(T::Bool),
                LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_) => {
                    Ty::Known(T::Number)
                }
                LiteralValue::String(_) => Ty::Known(T::String),
                LiteralValue::Null => Ty::Null,
                LiteralValue::Bytes(_) => Ty::Any,
            },
            E::Ident(name) => {
                if self.bound.iter().any(|b| b == name) {
                    return Ty::Any;
                }
                match name.as_str() {
                    "user" => Ty::Record(Record::User),
                    "event" => Ty::Record(Record::Event),
                    "run" => Ty::Record(Record::Run),
                    _ => Ty::Any,
                }
            }
            E::Select(s) => {
                let operand = self.infer(&s.operand);
                let ty = self.field(e.id, &s.operand, operand, &s.field);
                if s.test {
                    Ty::Known(T::Bool)
                } else {
                    ty
                }
            }
            E::Call(c) => self.call(e.id, c),
            E::List(l) => {
                for x in &l.elements {
                    self.infer(x);
                }
                Ty::Known(T::List)
            }
            E::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.infer(&me.key);
                        self.infer(&me.value);
                    }
                }
                Ty::Known(T::Map)
            }
            E::Struct(_) => Ty::Any,
            E::Comprehension(c) => {
                self.infer(&c.iter_range);
                self.infer(&c.accu_init);
                let depth = self.bound.len();
                self.bound.push(c.iter_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.bound.push(v.clone());
                }
                self.bound.push(c.accu_var.clone());
                self.infer(&c.loop_cond);
                self.infer(&c.loop_step);
                self.infer(&c.result);
                self.bound.truncate(depth);
                Ty::Any
            }
        }
    }

    /// `operand.name`, where the operand has type `ty`.
    fn field(&mut self, id: u64, operand: &IdedExpr, ty: Ty, name: &str) -> Ty {
        let declared: Vec<(&str, FieldType)> = match ty {
            Ty::Record(Record::User) => match &self.schema.user {
                None => return self.builtin(USER_BUILTINS, name),
                Some(attrs) => USER_BUILTINS
                    .iter()
                    .copied()
                    .chain(attrs.iter().map(|(k, t)| (k.as_str(), *t)))
                    .collect(),
            },
            Ty::Record(Record::Event) => match self.event {
                None => {
                    return if name == "event_id" {
                        Ty::Known(FieldType::String)
                    } else {
                        Ty::Any
                    }
                }
                Some(fields) => std::iter::once(("event_id", FieldType::String))
                    .chain(fields.iter().map(|(k, t)| (k.as_str(), *t)))
                    .collect(),
            },
            Ty::Record(Record::Run) => RUN_FIELDS.to_vec(),
            Ty::Known(
                t @ (FieldType::String | FieldType::Number | FieldType::Bool | FieldType::List),
            ) => {
                let what = render(operand).map_or(String::new(), |r| format!("`{r}` is "));
                // The select's offset is its dot; point at the field name.
                let offset = self.offset(id) + 1;
                self.problems.push(Problem {
                    offset,
                    message: format!("{what}{} and has no field `{name}`", article(t)),
                    hint: None,
                });
                return Ty::Any;
            }
            _ => return Ty::Any,
        };
        if let Some((_, t)) = declared.iter().find(|(k, _)| *k == name) {
            return Ty::Known(*t);
        }
        let whose = render(operand).unwrap_or_default();
        let hint = match did_you_mean(name, declared.iter().map(|(k, _)| *k)) {
            Some(m) => format!("did you mean `{m}`?"),
            None => {
                let names: Vec<&str> = declared.iter().map(|(k, _)| *k).take(12).collect();
                format!("declared: {}", names.join(", "))
            }
        };
        let offset = self.offset(id);
        // The select's offset is its dot; point at the field name itself.
        self.problems.push(Problem {
            offset: offset + 1,
            message: format!("`{whose}` has no field `{name}`"),
            hint: Some(hint),
        });
        Ty::Any
    }

    /// A field of `user` when no attributes are declared: tern's own are known, others any.
    fn builtin(&self, fields: &[(&str, FieldType)], name: &str) -> Ty {
        fields
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(Ty::Any, |(_, t)| Ty::Known(*t))
    }

    fn call(&mut self, id: u64, c: &cel::common::ast::CallExpr) -> Ty {
        use FieldType as T;
        let target = c.target.as_ref().map(|t| (t, self.infer(t)));
        let args: Vec<Ty> = c.args.iter().map(|a| self.infer(a)).collect();
        let f = c.func_name.as_str();
        match f {
            op::LOGICAL_AND | op::LOGICAL_OR | op::LOGICAL_NOT | op::NOT_STRICTLY_FALSE => {
                let symbol = match f {
                    op::LOGICAL_AND => "&&",
                    op::LOGICAL_OR => "||",
                    _ => "!",
                };
                for (a, t) in c.args.iter().zip(&args) {
                    if let Some(t) = t.known().filter(|t| *t != T::Bool) {
                        self.operand_problem(
                            a,
                            format!("`{symbol}` needs bools; this is {}", describe(a, t)),
                        );
                    }
                }
                Ty::Known(T::Bool)
            }
            op::EQUALS
            | op::NOT_EQUALS
            | op::LESS
            | op::LESS_EQUALS
            | op::GREATER
            | op::GREATER_EQUALS => {
                if let ([a, b], [ta, tb]) = (c.args.as_slice(), args.as_slice()) {
                    let ordered = !matches!(f, op::EQUALS | op::NOT_EQUALS);
                    let symbol = f.trim_matches('_');
                    match (ta.known(), tb.known()) {
                        (Some(x), Some(y)) if x != y => self.problem(
                            id,
                            format!(
                                "`{symbol}` compares {} with {}",
                                describe(a, x),
                                describe(b, y)
                            ),
                            Some(if x == T::Number || y == T::Number {
                                "a number compares with a number: write `0.3`, not `'0.3'`"
                                    .to_string()
                            } else {
                                "both sides must have the same type".to_string()
                            }),
                        ),
                        (Some(x), _) | (_, Some(x))
                            if ordered && !matches!(x, T::Number | T::String) =>
                        {
                            self.problem(
                                id,
                                format!("`{symbol}` orders numbers or strings, not {}", article(x)),
                                None,
                            )
                        }
                        _ => {}
                    }
                }
                Ty::Known(T::Bool)
            }
            op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO => {
                let symbol = f.trim_matches('_');
                let allowed: &[FieldType] = if f == op::ADD {
                    &[T::Number, T::String, T::List]
                } else {
                    &[T::Number]
                };
                let known: Vec<(usize, FieldType)> = args
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| t.known().map(|t| (i, t)))
                    .collect();
                for &(i, t) in &known {
                    if !allowed.contains(&t) {
                        self.operand_problem(
                            &c.args[i],
                            format!("`{symbol}` cannot take {}", describe(&c.args[i], t)),
                        );
                        return Ty::Any;
                    }
                }
                match known.as_slice() {
                    [(i, x), (j, y)] if x != y => {
                        self.problem(
                            id,
                            format!(
                                "`{symbol}` mixes {} and {}",
                                describe(&c.args[*i], *x),
                                describe(&c.args[*j], *y)
                            ),
                            None,
                        );
                        Ty::Any
                    }
                    [(_, x), (_, _)] => Ty::Known(*x),
                    _ if f != op::ADD => Ty::Known(T::Number),
                    _ => Ty::Any,
                }
            }
            op::NEGATE => {
                if let (Some(a), Some(t)) = (c.args.first(), args.first().and_then(|t| t.known())) {
                    if t != T::Number {
                        self.operand_problem(a, format!("`-` cannot take {}", describe(a, t)));
                    }
                }
                Ty::Known(T::Number)
            }
            op::IN => {
                if let (Some(b), Some(t)) = (c.args.get(1), args.get(1).and_then(|t| t.known())) {
                    if !matches!(t, T::List | T::Map) {
                        self.problem(
                            id,
                            format!("`in` looks in a list or a map, not in {}", describe(b, t)),
                            None,
                        );
                    }
                }
                Ty::Known(T::Bool)
            }
            op::CONDITIONAL => {
                if let (Some(a), Some(t)) = (c.args.first(), args.first().and_then(|t| t.known())) {
                    if t != T::Bool {
                        self.operand_problem(
                            a,
                            format!("`? :` needs a bool condition; this is {}", describe(a, t)),
                        );
                    }
                }
                match (args.get(1), args.get(2)) {
                    (Some(x), Some(y)) if x == y => *x,
                    _ => Ty::Any,
                }
            }
            "startsWith" | "endsWith" | "contains" | "matches" => {
                if let Some((t, ty)) = &target {
                    if let Some(k) = ty.known().filter(|k| *k != T::String) {
                        self.operand_problem(
                            t,
                            format!("`{f}` is a string function; this is {}", describe(t, k)),
                        );
                    }
                }
                Ty::Known(T::Bool)
            }
            "size" => Ty::Known(T::Number),
            "int" | "uint" | "double" => Ty::Known(T::Number),
            "string" => Ty::Known(T::String),
            "bool" => Ty::Known(T::Bool),
            _ => Ty::Any,
        }
    }
}
