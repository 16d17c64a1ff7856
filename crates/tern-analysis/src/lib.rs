//! tern's analyses, as a library: what the logs say about a policy before and after it ships.
//!
//! # Layout
//! - [`coverage`]: the estimators' intervals checked against the truth on the simulator (`tern
//!   bench ope`): a logging policy and a candidate run on identical simulated worlds.
//! - [`decisions`]: the logged decisions rebuilt as planner inputs with their rewards, a
//!   candidate bundle replayed on them, and the rows `tern-ope`'s estimators take (`tern evaluate`
//!   and `tern policy simulate`).
//! - [`experiment`]: an experiment report's numbers (arms, differences with raw and CUPED
//!   intervals, the sample-ratio check, verdicts) computed from plain rows, and its renderings.
//! - [`replay`]: the generators a change adds, removes or edits, replayed on the period's stored
//!   events and scheduled runs (`tern policy simulate`).
//!
//! Rendering (text, Markdown, JSON) stays with the commands in the binary. The estimators
//! themselves are `tern-ope`'s; the planner and the policy translation are `tern-daemon`'s.

pub mod coverage;
pub mod decisions;
mod error;
pub mod experiment;
pub mod replay;

pub use error::Error;
