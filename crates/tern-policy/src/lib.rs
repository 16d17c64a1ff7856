//! `tern-policy`: tern's policy language — YAML documents with spans, validation that reports
//! every mistake at once, CEL expressions compiled at load, a content-hash version, a semantic
//! diff, a JSON Schema, and a hot-reloading watcher that never activates a bad bundle.
//!
//! # Layout
//! - `yaml.rs`: the YAML event stream (saphyr-parser) read into a node tree where every node has
//!   a line and column. serde would stop at the first error and lose positions; we need both.
//! - `decode.rs`: walks node trees into the typed model, one finding per mistake (unknown
//!   fields with "did you mean", wrong types, bad durations, times, zones, cron and CEL), and
//!   the checks within one document (cap rules that can never bind, arm shares).
//! - `bundle.rs`: reads a directory, decodes every file, checks across documents (duplicate
//!   names, references, the `default` objective, experiment layers), and builds a [`Bundle`]
//!   whose version is the SHA-256 of its canonical JSON.
//! - `model.rs`: the typed model, which `tern-daemon` translates for the planner and the server
//!   reads, and each document's canonical JSON.
//! - `shape.rs`: every CEL expression checked against the bundle's `kind: Schema` (unknown
//!   fields, operand and result types).
//! - [`example`]: the repository's `policies/`, built in.
//! - `finding.rs`: [`Finding`] and [`Findings`], printed as text, GitHub annotations or JSON.
//! - `diff.rs`: a semantic diff between two bundles, document by document, field by field.
//! - `schema.rs`: the JSON Schema of the language, for editors.
//! - `generate.rs`: evaluates a generator's expressions for an event or a scheduled run and a
//!   user, giving the opportunity it proposes; what `user`, `event` and `run` hold is fixed here.
//! - `watch.rs`: the [`Watcher`], which polls a directory, waits for writes to settle, and swaps
//!   the active bundle atomically when (and only when) the new one is valid.
//! - `text.rs`: names, durations, times of day and edit distance.
//!
//! Tests: `tests/fixtures/broken/<case>/` are broken bundles with their exact findings in
//! `expected.txt` (`UPDATE_EXPECT=1 cargo test -p tern-policy` rewrites them);
//! `tests/examples.rs` checks the repository's `policies/` and `docs/policy.schema.json`;
//! `tests/bundle.rs` versions and diffs; `tests/watch.rs` hot reload; `tests/robustness.rs`
//! feeds arbitrary input to the loader. `fuzz/` is a separate cargo-fuzz crate for the loader.
//!
//! # Example
//!
//! ```no_run
//! use tern_policy::{Bundle, WatchEvent, WatchOptions, Watcher};
//!
//! // CI: validate once, report every finding.
//! match Bundle::load("policies") {
//!     Ok(bundle) => println!("valid, version {}", bundle.short_version()),
//!     Err(findings) => eprint!("{findings}"),
//! }
//!
//! // The daemon: refuse to start without a valid bundle, then hot-reload with last-known-good.
//! let watcher = Watcher::start("policies", WatchOptions::default()).expect("a valid bundle");
//! let changes = watcher.subscribe();
//! let bundle = watcher.active(); // hold this Arc for the whole of one plan
//! for (experiment, arm) in bundle.assignments("user-42") {
//!     println!("{} → {}", experiment.metadata.name, arm.name);
//! }
//! if let Ok(WatchEvent::Rejected(r)) = changes.recv() {
//!     eprintln!("kept {}; rejected {}:\n{}", watcher.status().active_version, r.version, r.findings);
//! }
//! ```
//!
//! # Invariants
//! - No input makes this crate panic: every byte sequence is either a bundle or findings.
//! - A [`Bundle`] exists only if it has no errors; the watcher's active bundle is always one.
//! - The crate reads files and nothing else: no network, no database, no async runtime.

mod bundle;
mod decode;
mod diff;
pub mod example;
mod finding;
mod generate;
mod model;
mod schema;
mod shape;
mod text;
mod watch;
mod yaml;

pub use bundle::{
    content_digest, read_files, version_of, Bundle, ReadError, SourceFile, DEFAULT, MAX_FILE_BYTES,
};
pub use decode::{EVENT_VARS, KINDS, SCHEDULE_VARS, USER_VARS};
pub use diff::{diff, ArmMoves, Change, DocChange, DocDiff, MOVE_SAMPLE};
pub use finding::{Finding, Findings, Pos, Severity};
pub use generate::{EvalError, EventView, Firing, Proposal, UserView};
pub use model::*;
pub use schema::schema;
pub use text::{parse_duration, MAX_DURATION_SECS};
pub use watch::{Rejected, WatchEvent, WatchOptions, WatchStatus, Watcher};
