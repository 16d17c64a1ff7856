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
        /// Every field it sets (`metadata` and `spec` leaves), so that a review sees what
        /// arrives, not only its name.
        fields: Vec<Change>,
    },
    /// Only in the old bundle.
    Removed {
        /// The document's kind.
        kind: String,
        /// Its name.
        name: String,
        /// Every field it had.
        fields: Vec<Change>,
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
    /// Per experiment whose assignment changed: how many users would change arm.
    pub moves: Vec<ArmMoves>,
}

/// Users an experiment would assign differently under the new bundle, estimated on
/// [`MOVE_SAMPLE`] synthetic user ids (the assignment is a hash of the id, so any ids are a fair
/// sample of real ones).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmMoves {
    /// The experiment.
    pub experiment: String,
    /// Ids tried.
    pub sampled: u64,
    /// In the experiment under both bundles, in another arm.
    pub moved: u64,
    /// In it only under the new bundle.
    pub entered: u64,
    /// In it only under the old bundle.
    pub left: u64,
}

/// Synthetic ids per experiment for [`ArmMoves`]: ±0.3 percentage points at 95%.
pub const MOVE_SAMPLE: u64 = 100_000;

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
            (Some(x), None) => changes.push(DocChange::Removed {
                kind,
                name,
                fields: leaves(x, false),
            }),
            (None, Some(y)) => changes.push(DocChange::Added {
                kind,
                name,
                fields: leaves(y, true),
            }),
            (Some(x), Some(y)) if x != y => {
                let mut fields = Vec::new();
                compare("", x, y, &mut fields);
                changes.push(DocChange::Changed { kind, name, fields });
            }
            _ => {}
        }
    }
    // An experiment's change can move users of another in the same layer, so once any
    // experiment changed, every experiment is counted.
    let experiments_changed = changes.iter().any(|c| match c {
        DocChange::Added { kind, .. }
        | DocChange::Removed { kind, .. }
        | DocChange::Changed { kind, .. } => kind == "Experiment",
    });
    let mut names: Vec<&str> = old
        .experiments
        .iter()
        .chain(&new.experiments)
        .map(|e| e.metadata.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let moves = if experiments_changed {
        names
            .into_iter()
            .filter_map(|name| arm_moves(old, new, name))
            .collect()
    } else {
        Vec::new()
    };
    DocDiff {
        old_version: old.version.clone(),
        new_version: new.version.clone(),
        changes,
        moves,
    }
}

/// Counts, over [`MOVE_SAMPLE`] ids, the users `experiment` assigns differently; `None` when
/// nobody moves.
fn arm_moves(old: &Bundle, new: &Bundle, experiment: &str) -> Option<ArmMoves> {
    let arm = |b: &Bundle, user: &str| -> Option<String> {
        b.assignments(user)
            .into_iter()
            .find(|(e, _)| e.metadata.name == experiment)
            .map(|(_, a)| a.name.clone())
    };
    let mut m = ArmMoves {
        experiment: experiment.to_string(),
        sampled: MOVE_SAMPLE,
        moved: 0,
        entered: 0,
        left: 0,
    };
    for i in 0..MOVE_SAMPLE {
        let user = format!("sample-user-{i}");
        match (arm(old, &user), arm(new, &user)) {
            (Some(a), Some(b)) if a != b => m.moved += 1,
            (None, Some(_)) => m.entered += 1,
            (Some(_), None) => m.left += 1,
            _ => {}
        }
    }
    (m.moved + m.entered + m.left > 0).then_some(m)
}

/// The leaves of a document's `metadata` and `spec` as added (or removed) fields. Lists are
/// leaves: a rule or an arm reads as one value.
fn leaves(doc: &Json, added: bool) -> Vec<Change> {
    fn walk(path: &str, v: &Json, added: bool, out: &mut Vec<Change>) {
        match v {
            Json::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    walk(&join(path, k), x, added, out);
                }
            }
            _ => out.push(if added {
                Change::Added {
                    path: path.to_string(),
                    value: v.clone(),
                }
            } else {
                Change::Removed {
                    path: path.to_string(),
                    value: v.clone(),
                }
            }),
        }
    }
    let mut out = Vec::new();
    for part in ["metadata", "spec"] {
        if let Some(v) = doc.get(part) {
            walk(part, v, added, &mut out);
        }
    }
    out
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
                DocChange::Added { kind, name, fields } => {
                    writeln!(f, "+ {kind}/{name}")?;
                    for field in fields {
                        if let Change::Added { path, value } = field {
                            writeln!(f, "    + {path}: {value}")?;
                        }
                    }
                }
                DocChange::Removed { kind, name, fields } => {
                    writeln!(f, "- {kind}/{name}")?;
                    for field in fields {
                        if let Change::Removed { path, value } = field {
                            writeln!(f, "    - {path}: {value}")?;
                        }
                    }
                }
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
        for m in &self.moves {
            let pct = |n: u64| 100.0 * n as f64 / m.sampled as f64;
            writeln!(
                f,
                "! Experiment/{}: {:.1}% of users change arm, {:.1}% enter it, {:.1}% leave it (estimated on {} sample ids); users who change arm see both arms and are left out of its report",
                m.experiment,
                pct(m.moved),
                pct(m.entered),
                pct(m.left),
                m.sampled
            )?;
        }
        Ok(())
    }
}
