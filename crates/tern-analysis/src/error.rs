//! The analyses' errors.

/// Why an analysis could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy bundle cannot be replayed (it cannot be planned with).
    #[error("{0}")]
    Policy(String),
    /// The input cannot be analysed as given.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] tern_store::StoreError),
    /// The planner refused the input.
    #[error(transparent)]
    Plan(#[from] tern_planner::PlanError),
    /// The planner refused a configuration.
    #[error(transparent)]
    Config(#[from] tern_planner::ConfigError),
    /// The model failed (training the direct method).
    #[error(transparent)]
    Model(#[from] tern_model::ModelError),
    /// The simulated population refused a delivery.
    #[error("{0}")]
    Simulation(String),
}

impl From<tern_daemon::Error> for Error {
    fn from(e: tern_daemon::Error) -> Self {
        match e {
            tern_daemon::Error::Store(s) => Error::Store(s),
            other => Error::Policy(other.to_string()),
        }
    }
}
