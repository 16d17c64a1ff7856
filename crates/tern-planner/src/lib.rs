//! The planner: for every user, which message, through which channel, at what moment — or nothing.
//!
//! Plain data in, plain data out: no SQL, no gRPC, no YAML, no IO beyond the JSON Lines helpers,
//! which read and write any `BufRead`/`Write`. The rules it keeps are written out in
//! `docs/planner.md`; this crate is their implementation.
//!
//! # Layout
//! - [`config`]: [`PlannerConfig`], what the policy bundle says (channels with quiet hours and
//!   budgets, cap rules, exempt priorities, what each priority class bypasses, objectives, the experiment, exploration, horizon), and
//!   its validation into an index-based form ([`ConfigError`] says what is wrong).
//! - [`types`]: the input ([`UserInput`] with history and opportunities, [`Scores`] and the
//!   [`Predictor`] trait that supplies them) and the output ([`Plan`] of [`UserPlan`]s, each with
//!   [`Choice`]s and [`Suppression`]s carrying a [`Reason`], and [`Stats`]).
//! - `time`: cuts each user's horizon into pieces of constant local hour and quiet status, in
//!   the user's IANA zone, across daylight-saving changes.
//! - `plan`: [`Planner::plan`]: per user (in parallel) value → candidates → greedy-with-
//!   exploration selection under caps and gaps → send window; around it, the budget price search
//!   and the exact fit.
//! - [`random`]: the per-user random stream, a fixed algorithm so results never depend on
//!   platform or thread count. Arms come from `tern_core::assign`, shared with the policy.
//! - [`explain()`]: a human-readable account of one user's plan.
//! - [`jsonl`]: the JSON Lines format of `tern plan`.
//! - [`synthetic()`]: the benchmark's deterministic synthetic data set.

pub mod config;
mod explain;
pub mod jsonl;
pub mod pacing;
mod plan;
pub mod random;
mod synthetic;
mod time;
pub mod types;

pub use config::{
    Arm, Budget, Bypass, CapRule, ChannelConfig, ConfigError, Experiment, LocalTime, Objective,
    PlannerConfig, QuietHours, ANY_CHANNEL,
};
pub use explain::explain;
pub use plan::{value_of, PlanError, Planner, BUDGET_ROUNDS};
pub use synthetic::{synthetic, SYNTHETIC_NOW};
pub use types::*;
