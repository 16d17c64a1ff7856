//! A YAML node tree in which every node knows where it was written.
//!
//! serde-based YAML crates stop at the first error and forget positions once a value is
//! decoded, but `tern policy check` must report every mistake with its line and column. So we
//! read the event stream of `saphyr-parser` (a YAML 1.2 parser that gives a span for every
//! event) into this small tree, and `decode.rs` walks it collecting findings.
//!
//! The builder keeps an explicit stack instead of recursing, so deeply nested input cannot
//! overflow the thread's stack; nesting beyond [`MAX_DEPTH`] is reported as an error.

use std::borrow::Cow;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::finding::Pos;

/// Policies are a handful of levels deep; anything deeper than this is not a policy, and
/// refusing it keeps later recursive walks (canonical JSON, diff) safe.
pub const MAX_DEPTH: usize = 64;

/// How a scalar was written. It matters for typing: a quoted `"5"` is a string, a plain `5` is
/// a number, and a plain `null` or an empty value is null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: its type follows YAML 1.2's core schema (null, booleans, numbers, strings).
    Plain,
    /// Single- or double-quoted: always a string.
    Quoted,
    /// A literal (`|`) or folded (`>`) block: always a string, starting on the next line.
    Block,
}

/// One node of a YAML document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts (for a quoted scalar: the opening quote).
    pub pos: Pos,
    /// What the node holds.
    pub value: Value,
}

/// The content of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A plain `null`, `~`, or nothing at all (`key:`).
    Null,
    /// Any other scalar, with the way it was written.
    Scalar(String, Style),
    /// A sequence (`- a` or `[a, b]`).
    Seq(Vec<Node>),
    /// A mapping, keys in the order written (duplicates kept, so that the decoder can report
    /// them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short description of what this node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing (null)".to_string(),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
            Value::Scalar(s, Style::Plain) => {
                if s == "true" || s == "false" {
                    format!("the boolean {s}")
                } else if s.parse::<f64>().is_ok() {
                    format!("the number {s}")
                } else {
                    format!("the string {}", quote_short(s))
                }
            }
            Value::Scalar(s, _) => format!("the string {}", quote_short(s)),
        }
    }

    /// The scalar's text, whatever its style, or `None` for null and collections.
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }
}

/// Quotes a string for a message, shortening long ones so one finding stays one line.
pub fn quote_short(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// A document of a YAML stream: where it starts, and its root (`None` for an empty document,
/// such as the one after a trailing `---`).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where the document starts.
    pub pos: Pos,
    /// The root node, if the document has content.
    pub root: Option<Node>,
}

/// A YAML syntax error: the parser cannot recover from one, so a file has at most one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// The parser's explanation.
    pub message: String,
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line().max(1), span.start.col() + 1)
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// Parses a whole YAML stream (`---`-separated documents) into node trees.
///
/// Aliases (`*name`) are refused: expanding them can multiply a small file into a huge one
/// ("billion laughs"), and policies reviewed in pull requests read better written out.
pub fn parse_stream(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut doc_pos = Pos::new(1, 1);
    let mut root: Option<Node> = None;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| SyntaxError {
            pos: Pos::new(e.marker().line().max(1), e.marker().col() + 1),
            message: e.info().to_string(),
        })?;
        let pos = pos_of(&span);
        let complete = match event {
            Event::StreamStart | Event::Nothing => None,
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                doc_pos = pos;
                root = None;
                None
            }
            Event::DocumentEnd => {
                docs.push(Document {
                    pos: doc_pos,
                    root: root.take(),
                });
                None
            }
            Event::Alias(_) => {
                return Err(SyntaxError {
                    pos,
                    message: "YAML aliases (*name) are not supported in policies".to_string(),
                })
            }
            Event::Scalar(text, style, _anchor, tag) => Some(scalar_node(pos, text, style, tag)),
            Event::SequenceStart(_, _) | Event::MappingStart(_, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Frame::Seq(pos, Vec::new()));
                } else {
                    stack.push(Frame::Map(pos, Vec::new(), None));
                }
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(p, items)) => Some(Node {
                    pos: p,
                    value: Value::Seq(items),
                }),
                Some(Frame::Map(p, entries, pending)) => {
                    let mut entries = entries;
                    if let Some(key) = pending {
                        // Cannot happen with a well-formed event stream; keep the key rather
                        // than lose it.
                        let null = Node {
                            pos: key.pos,
                            value: Value::Null,
                        };
                        entries.push((key, null));
                    }
                    Some(Node {
                        pos: p,
                        value: Value::Map(entries),
                    })
                }
                None => None,
            },
        };
        if let Some(node) = complete {
            match stack.last_mut() {
                Some(Frame::Seq(_, items)) => items.push(node),
                Some(Frame::Map(_, entries, pending)) => match pending.take() {
                    Some(key) => entries.push((key, node)),
                    None => *pending = Some(node),
                },
                None => root = Some(node),
            }
        }
    }
    Ok(docs)
}

fn scalar_node(
    pos: Pos,
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<Cow<'_, saphyr_parser::Tag>>,
) -> Node {
    let explicit_string = tag.is_some_and(|t| t.suffix == "str");
    let style = match style {
        ScalarStyle::Plain if explicit_string => Style::Quoted,
        ScalarStyle::Plain => Style::Plain,
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
        ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
    };
    let value = if style == Style::Plain && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
        Value::Null
    } else {
        Value::Scalar(text.into_owned(), style)
    };
    Node { pos, value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse_stream("a: 1\nb:\n  - x\n  - \"y\"\n---\nc: ~\n").unwrap();
        assert_eq!(docs.len(), 2);
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = &docs[0].root
        else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.pos, Pos::new(1, 1));
        assert_eq!(entries[0].1.pos, Pos::new(1, 4));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].pos, Pos::new(4, 5));
        assert_eq!(items[1].value, Value::Scalar("y".into(), Style::Quoted));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(100_000);
        assert!(parse_stream(&text).is_err());
    }

    #[test]
    fn aliases_are_refused() {
        assert!(parse_stream("a: &x 1\nb: *x\n").is_err());
    }
}
