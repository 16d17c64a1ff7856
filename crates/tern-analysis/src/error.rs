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
}

impl From<tern_daemon::Error> for Error {
    fn from(e: tern_daemon::Error) -> Self {
        match e {
            tern_daemon::Error::Store(s) => Error::Store(s),
            other => Error::Policy(other.to_string()),
        }
    }
}
