//! tern's analyses, as a library: what the logs say about a policy before and after it ships.
//!
//! # Layout
//! - [`decisions`]: the logged decisions rebuilt as planner inputs with their rewards, a
//!   candidate bundle replayed on them, and the rows `tern-ope`'s estimators take (`tern evaluate`
//!   and `tern policy simulate`).
//! - [`replay`]: the generators a change adds, removes or edits, replayed on the period's stored
//!   events and scheduled runs (`tern policy simulate`).
//!
//! Rendering (text, Markdown, JSON) stays with the commands in the binary. The estimators
//! themselves are `tern-ope`'s; the planner and the policy translation are `tern-daemon`'s.

pub mod decisions;
mod error;
pub mod replay;

pub use error::Error;
