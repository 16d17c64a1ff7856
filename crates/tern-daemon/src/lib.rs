//! The tern daemon as a library: everything `tern serve` does besides parsing flags and opening
//! the database, so that tests and other front ends run it in process.
//!
//! # Layout
//! - [`Daemon`] ([`daemon`]): replans (load the active policy and model, build planner inputs,
//!   plan on a blocking thread, publish in one transaction), urgent plans after urgent
//!   submissions, scheduled training, and the [`tern_server::Control`] implementation the gRPC
//!   server calls. Configured by [`DaemonConfig`], plain data.
//! - [`cron`]: which firing of which job (Replan documents, scheduled generators, training) is
//!   due, by the Kubernetes CronJob model; [`run_cron`] is the loop that runs them.
//! - [`generators`]: events and scheduled runs into opportunities, through the policy's
//!   generators.
//! - [`activate`]: the loop that records every bundle the policy watcher activates.
//! - [`translate`]: a policy bundle as the planner's configuration, and each user's arm.
//! - [`features`] and [`predict`]: history, activity and time into model inputs (the one place,
//!   for training and scoring alike), and the model behind the planner's `Predictor`.
//! - [`train`]: history streamed from the store, spilled to a temporary file, trained,
//!   registered.
//! - [`service`]: all of it started at once with the gRPC API and the metrics endpoint, from a
//!   [`ServiceConfig`] ([`Service`]), as `tern serve`, the demo and the API tests run it.
//!
//! The daemon holds nothing that cannot be rebuilt from the database and the policy directory;
//! every error it returns is an [`Error`].

pub mod activate;
pub mod cron;
pub mod daemon;
mod error;
pub mod features;
pub mod generators;
pub mod predict;
pub mod replan;
pub mod service;
pub mod train;
pub mod translate;

pub use daemon::{run_cron, Daemon, DaemonConfig, Paging, Pass, Training, URGENT_TRIGGER};
pub use error::Error;
pub use service::{Service, ServiceConfig};
