//! Findings: what `tern policy check` reports, one per mistake, each with a place in a file.
//!
//! A finding is plain data so that the same list can be printed for a person (`text`), for
//! GitHub Actions (`github`) or for a machine (`json`), and compared exactly in snapshot tests.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a finding is. Only errors make a bundle invalid; warnings point at rules that are
/// legal but almost certainly not what the author meant (a cap that can never bind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The bundle cannot be activated.
    Error,
    /// The bundle is valid, but something in it has no effect or looks unintended.
    Warning,
}

impl Severity {
    /// The lowercase word used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One mistake (or suspicious rule) at one place.
///
/// `line` and `column` are 1-based, counted in characters as editors count them. A finding about
/// the bundle as a whole (an empty directory, a missing default objective) has line and column 0
/// and names the directory as its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file, as the directory was named plus the file's path inside it.
    pub file: PathBuf,
    /// 1-based line, or 0 when the finding is about a whole file or the whole bundle.
    pub line: usize,
    /// 1-based column, or 0 together with `line`.
    pub column: usize,
    /// Whether this finding makes the bundle invalid.
    pub severity: Severity,
    /// What is wrong, in one sentence without a trailing period.
    pub message: String,
    /// How to fix it, when the checker can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Finding {
    /// An error at a position.
    pub fn error(file: &Path, pos: Pos, message: impl Into<String>) -> Finding {
        Finding {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            severity: Severity::Error,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at a position.
    pub fn warning(file: &Path, pos: Pos, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(file, pos, message)
        }
    }

    /// The same finding with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Finding {
        self.hint = Some(hint.into());
        self
    }

    fn location(&self) -> String {
        if self.line == 0 {
            self.file.display().to_string()
        } else {
            format!("{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

impl fmt::Display for Finding {
    /// `path:line:col: error: message`, then `  hint: ...` on its own line when there is one:
    /// the format compilers use, so editors and terminals make the location clickable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.location(),
            self.severity.as_str(),
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// A position in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line; 0 means "the whole file".
    pub line: usize,
    /// 1-based column in characters.
    pub column: usize,
}

impl Pos {
    /// A position for findings about a whole file or bundle.
    pub const NONE: Pos = Pos { line: 0, column: 0 };

    /// A position from a 1-based line and column.
    pub fn new(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }
}

/// Every finding of one check, sorted by file, line and column so that output is stable.
///
/// It is the error type of [`crate::Bundle::load`]: a bundle that fails to load fails with all of
/// its mistakes at once, never only the first.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.to_text())]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    /// Sorts by file, position, then message, and drops exact duplicates.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.file, a.line, a.column, a.severity, &a.message)
                .cmp(&(&b.file, b.line, b.column, b.severity, &b.message))
        });
        self.0.dedup();
    }

    /// Whether any finding is an error (warnings alone leave a bundle valid).
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|f| f.severity == Severity::Error)
    }

    /// The number of errors.
    pub fn error_count(&self) -> usize {
        self.0
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// Whether there are no findings at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One finding per line (hints on their own indented line), for people and for snapshots.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in &self.0 {
            out.push_str(&f.to_string());
            out.push('\n');
        }
        out
    }

    /// GitHub Actions workflow commands, which the runner turns into annotations on the pull
    /// request's diff. The hint goes into the message because annotations have no hint field.
    pub fn to_github(&self) -> String {
        let mut out = String::new();
        for f in &self.0 {
            let mut message = f.message.clone();
            if let Some(hint) = &f.hint {
                message.push_str(" (hint: ");
                message.push_str(hint);
                message.push(')');
            }
            let file = escape_property(&f.file.display().to_string());
            let level = f.severity.as_str();
            if f.line == 0 {
                out.push_str(&format!(
                    "::{level} file={file}::{}\n",
                    escape_data(&message)
                ));
            } else {
                out.push_str(&format!(
                    "::{level} file={file},line={},col={}::{}\n",
                    f.line,
                    f.column,
                    escape_data(&message)
                ));
            }
        }
        out
    }

    /// A JSON array of `{file, line, column, severity, message, hint?}` objects.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// Escapes the message of a workflow command, as the Actions toolkit does.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value of a workflow command, as the Actions toolkit does.
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Findings {
        Findings(vec![
            Finding::error(Path::new("p/a,b.yaml"), Pos::new(3, 7), "bad: 100% wrong")
                .with_hint("fix it"),
            Finding::warning(Path::new("p"), Pos::NONE, "whole bundle"),
        ])
    }

    #[test]
    fn text_format() {
        assert_eq!(
            sample().to_text(),
            "p/a,b.yaml:3:7: error: bad: 100% wrong\n  hint: fix it\np: warning: whole bundle\n"
        );
    }

    #[test]
    fn github_format_escapes_properties_and_data() {
        assert_eq!(
            sample().to_github(),
            "::error file=p/a%2Cb.yaml,line=3,col=7::bad: 100%25 wrong (hint: fix it)\n::warning file=p::whole bundle\n"
        );
    }

    #[test]
    fn json_format() {
        let j = sample().to_json();
        assert_eq!(j[0]["file"], "p/a,b.yaml");
        assert_eq!(j[0]["line"], 3);
        assert_eq!(j[0]["column"], 7);
        assert_eq!(j[0]["severity"], "error");
        assert_eq!(j[0]["hint"], "fix it");
        assert!(j[1].get("hint").is_none());
    }

    #[test]
    fn only_errors_make_a_bundle_invalid() {
        let s = sample();
        assert!(s.has_errors());
        assert_eq!(s.error_count(), 1);
        assert!(!Findings(vec![s.0[1].clone()]).has_errors());
    }
}
