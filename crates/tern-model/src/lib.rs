//! tern's outcome model: which outcomes a message on a channel at a time is likely to cause.
//!
//! The planner weighs predicted outcomes; this crate produces them. It learns from tern's own
//! history (streamed in by the binary from PostgreSQL; this crate has no SQL and no IO) with a
//! small multi-task network in burn, judges it against baselines on a later period, and serialises
//! it into the bytes the model registry stores.
//!
//! # Layout
//! - [`features`]: the single declaration of the inputs. [`FeatureSpec`] expands into named
//!   columns with their encodings, hashes them into a version, and [`FeatureSpec::encode`]s a
//!   plain [`CandidateContext`] (opportunity, user, per-channel fatigue history, local time) into
//!   an `f32` row. [`FeatureMatrix`] carries rows together with the version that encoded them.
//! - [`network`]: the burn module: a shared ReLU trunk and one sigmoid head per [`Head`].
//! - [`data`]: [`Batch`] (features, labels, masks for outcomes not yet observable), the
//!   [`Dataset`] trait the trainer streams from, and [`TrainingWindow`], the time split.
//! - [`train`](mod@train): the seeded, deterministic Adam loop with masked loss and early stopping;
//!   it also trains the logistic-regression baseline on the same minibatches.
//! - [`eval`]: streamed log loss, AUC and calibration error per head ([`Metrics`]), and the
//!   promotion rule ([`promotable`]).
//! - [`model`]: [`Model`], the trained network with its spec and metrics: parallel batched
//!   inference without autodiff ([`Model::predict`]), and the artifact bytes
//!   ([`Model::to_bytes`], [`Model::from_bytes`]).
//! - [`value`]: the long-term value of a user's state, fitted by least-squares temporal
//!   differences on logged user-day transitions, and the long-term [`Effect`] of a send on it.
//! - [`fused`]: the fused CPU forward pass ([`Engine::Fused`]) over the same weights as burn's
//!   module ([`Engine::Burn`], the default), for callers that score few rows at a time.
//!
//! # Invariants
//! - A model scores only rows encoded under its own feature version; anything else is
//!   [`ModelError::FeatureVersionMismatch`].
//! - A masked label never influences training: it is zeroed on entry and weighted 0.
//! - Training is a pure function of the seed, the configuration and the batches.

pub mod baseline;
pub mod data;
pub mod error;
pub mod eval;
pub mod features;
pub mod fused;
pub mod model;
pub mod network;
pub mod summary;
pub mod train;
pub mod value;

mod rng;

use serde::{Deserialize, Serialize};

pub use data::{Batch, Batches, Dataset, FromFn, InMemory, Part, TrainingWindow};
pub use error::ModelError;
pub use eval::{
    promotable, promotion_refusals, HeadMetrics, Metrics, Promotion, Scores,
    MIN_LABELS_FOR_PROMOTION,
};
pub use features::{
    CandidateContext, ChannelHistory, Column, FeatureMatrix, FeatureSpec, SpecDecl, UserContext,
    NO_SEND,
};
pub use model::{Engine, Model};
pub use network::Architecture;
pub use summary::{EpochStats, TrainConfig, TrainingSummary};
pub use train::{evaluate, train};
pub use value::{Effect, Marginal, Send, UserState, ValueConfig, ValueFit, ValueFunction};

/// Number of predicted outcomes (heads).
pub const HEADS: usize = 5;

/// The outcomes the model predicts, in the order of every `[f32; HEADS]` array in this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// The message leads to a conversion.
    Conversion,
    /// The message is opened or clicked.
    Engagement,
    /// The user is still active over the objective's horizon after the send.
    Retention,
    /// The user is lost on this channel: unsubscribes, disables push, or complains.
    ReachabilityLoss,
    /// The share of the days after the send, over the horizon, on which the user is active: a
    /// soft label in [0, 1]. Retention asks whether the user is still there at the end; this
    /// asks how much of the time they were, which a send moves far more often, and is what the
    /// long-term value mode weighs.
    Activity,
}

impl Head {
    pub const ALL: [Head; HEADS] = [
        Head::Conversion,
        Head::Engagement,
        Head::Retention,
        Head::ReachabilityLoss,
        Head::Activity,
    ];

    /// The stable name used in metrics and artifacts.
    pub fn as_str(self) -> &'static str {
        match self {
            Head::Conversion => "conversion",
            Head::Engagement => "engagement",
            Head::Retention => "retention",
            Head::ReachabilityLoss => "reachability_loss",
            Head::Activity => "activity",
        }
    }

    /// Index into a `[f32; HEADS]` array.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
