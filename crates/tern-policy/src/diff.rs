//! A semantic diff between two bundles: documents added, removed and changed, and for changed
//! ones the fields that differ, with old and new values.
//!
//! It compares canonical JSON (see `model.rs`), so reformatting, moving documents between files
//! or spelling `24h` as `1d` is no change at all, while every change that alters behaviour shows.
//! Lists of named items (experiment arms) are matched by name, so inserting an arm reads as one
//! arm added rather than every later arm changed.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::bundle::Bundle;

/// One field that differs inside a changed document. Paths look like `spec.arms[control].share`
/// or `spec.rules[2].max`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    /// A field present only in the new document.
    Added {
        /// Where.
        path: String,
        /// The new value.
        value: Json,
    },
    /// A field present only in the old document.
    Removed {
        /// Where.
        path: String,
        /// The old value.
        value: Json,
    },
    /// A field whose value differs.
    Changed {
        /// Where.
        path: String,
        /// The old value.
        old: Json,
        /// The new value.
        new: Json,
    },
}

/// What happened to one document, identified by kind and name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum DocChange {
    /// Only in the new bundle.
    Added {
        /// The document's kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// Only in the old bundle.
    Removed {
        /// The document's kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// In both, with different content.
    Changed {
        /// The document's kind.
        kind: String,
        /// Its name.
        name: String,
        /// The fields that differ.
        fields: Vec<Change>,
    },
}

/// The diff between two bundles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocDiff {
    /// The old bundle's version.
    pub old_version: String,
    /// The new bundle's version.
    pub new_version: String,
    /// Document changes, sorted by kind (in `KINDS` order) and name.
    pub changes: Vec<DocChange>,
}

impl DocDiff {
    /// Whether the bundles are semantically the same (then their versions are equal too).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The diff as JSON: `{old_version, new_version, changes: [...]}`.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or(Json::Null)
    }
}

fn key_of(doc: &Json) -> (usize, String, String) {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let order = crate::KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(usize::MAX);
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (order, kind, name)
}

/// Compares two bundles document by document.
pub fn diff(old: &Bundle, new: &Bundle) -> DocDiff {
    let index = |b: &Bundle| -> BTreeMap<(usize, String, String), Json> {
        b.documents().into_iter().map(|d| (key_of(&d), d)).collect()
    };
    let (a, b) = (index(old), index(new));
    let mut keys: Vec<&(usize, String, String)> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changes = Vec::new();
    for key in keys {
        let (_, kind, name) = key.clone();
        match (a.get(key), b.get(key)) {
            (Some(_), None) => changes.push(DocChange::Removed { kind, name }),
            (None, Some(_)) => changes.push(DocChange::Added { kind, name }),
            (Some(x), Some(y)) if x != y => {
                let mut fields = Vec::new();
                compare("", x, y, &mut fields);
                changes.push(DocChange::Changed { kind, name, fields });
            }
            _ => {}
        }
    }
    DocDiff {
        old_version: old.version.clone(),
        new_version: new.version.clone(),
        changes,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The identity of a list item, when items have one: an arm's `name`, or a cap rule's scope and
/// window (`push/marketing per 1d`, `push minGap`), so that changing a rule's `max` reads as
/// one changed field rather than a rule removed and another added.
fn identity(item: &Json) -> Option<String> {
    if let Some(name) = item.get("name").and_then(Json::as_str) {
        return Some(name.to_string());
    }
    let channel = item.get("channel").and_then(Json::as_str)?;
    let mut id = channel.to_string();
    if let Some(c) = item.get("category").and_then(Json::as_str) {
        id.push('/');
        id.push_str(c);
    }
    match item.get("per").and_then(Json::as_str) {
        Some(per) => id.push_str(&format!(" per {per}")),
        None => id.push_str(" minGap"),
    }
    Some(id)
}

fn named(items: &[Json]) -> Option<Vec<String>> {
    let names: Vec<String> = items.iter().map(identity).collect::<Option<_>>()?;
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    (unique.len() == names.len()).then_some(names)
}

fn compare(path: &str, old: &Json, new: &Json, out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Json::Object(a), Json::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = join(path, k);
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => compare(&p, x, y, out),
                    (Some(x), None) => out.push(Change::Removed {
                        path: p,
                        value: x.clone(),
                    }),
                    (None, Some(y)) => out.push(Change::Added {
                        path: p,
                        value: y.clone(),
                    }),
                    (None, None) => {}
                }
            }
        }
        (Json::Array(a), Json::Array(b)) => {
            if let (Some(na), Some(nb)) = (named(a), named(b)) {
                for (i, n) in na.iter().enumerate() {
                    let p = format!("{path}[{n}]");
                    match nb.iter().position(|m| m == n) {
                        Some(j) => compare(&p, &a[i], &b[j], out),
                        None => out.push(Change::Removed {
                            path: p,
                            value: a[i].clone(),
                        }),
                    }
                }
                for (j, n) in nb.iter().enumerate() {
                    if !na.contains(n) {
                        out.push(Change::Added {
                            path: format!("{path}[{n}]"),
                            value: b[j].clone(),
                        });
                    }
                }
                if na
                    .iter()
                    .filter(|n| nb.contains(n))
                    .ne(nb.iter().filter(|n| na.contains(n)))
                {
                    out.push(Change::Changed {
                        path: format!("{path}.order"),
                        old: json!(na),
                        new: json!(nb),
                    });
                }
                return;
            }
            // Unnamed lists (rules, channels, exemptions) are sets in canonical form, sorted:
            // report what left and what arrived rather than positional changes.
            for x in a {
                if !b.contains(x) {
                    out.push(Change::Removed {
                        path: format!("{path}[]"),
                        value: x.clone(),
                    });
                }
            }
            for y in b {
                if !a.contains(y) {
                    out.push(Change::Added {
                        path: format!("{path}[]"),
                        value: y.clone(),
                    });
                }
            }
        }
        _ => out.push(Change::Changed {
            path: path.to_string(),
            old: old.clone(),
            new: new.clone(),
        }),
    }
}

impl fmt::Display for DocDiff {
    /// `+ Kind/name`, `- Kind/name`, or `~ Kind/name` followed by indented field lines:
    /// `  path: old → new`, `  + path: value`, `  - path: value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            match c {
                DocChange::Added { kind, name } => writeln!(f, "+ {kind}/{name}")?,
                DocChange::Removed { kind, name } => writeln!(f, "- {kind}/{name}")?,
                DocChange::Changed { kind, name, fields } => {
                    writeln!(f, "~ {kind}/{name}")?;
                    for field in fields {
                        match field {
                            Change::Added { path, value } => writeln!(f, "    + {path}: {value}")?,
                            Change::Removed { path, value } => {
                                writeln!(f, "    - {path}: {value}")?
                            }
                            Change::Changed { path, old, new } => {
                                writeln!(f, "    {path}: {old} → {new}")?
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
