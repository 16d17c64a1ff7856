//! From failures to gRPC status codes, in one place, so that every service answers the same
//! failure with the same code (the codes each service documents in its `.proto`).

use tern_store::StoreError;
use tonic::{Code, Status};

/// Why a replan or a status request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No valid policy bundle is active yet.
    #[error("{0}")]
    NoPolicy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request does not fit the daemon's state (e.g. advancing the system clock).
    #[error("{0}")]
    Precondition(String),
    /// The request is malformed in a way only the daemon can tell.
    #[error("{0}")]
    Invalid(String),
    /// The plan itself failed (e.g. the active policy cannot be planned with).
    #[error("{0}")]
    Failed(String),
}

pub(crate) fn store(err: StoreError) -> Status {
    let code = match &err {
        StoreError::Unavailable(_) => Code::Unavailable,
        StoreError::Invalid(_) => Code::InvalidArgument,
        StoreError::NotFound(_) => Code::NotFound,
        StoreError::SchemaTooNew { .. }
        | StoreError::SchemaBehind { .. }
        | StoreError::DirtyMigration(_)
        | StoreError::ModifiedMigration(_) => Code::FailedPrecondition,
        StoreError::BadUrl(_) | StoreError::Migrate(_) | StoreError::Database(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %err, "database error");
    }
    Status::new(code, err.to_string())
}

pub(crate) fn control(err: ControlError) -> Status {
    match err {
        ControlError::NoPolicy(m) => Status::failed_precondition(m),
        ControlError::Store(e) => store(e),
        ControlError::Precondition(m) => Status::failed_precondition(m),
        ControlError::Invalid(m) => Status::invalid_argument(m),
        ControlError::Failed(m) => Status::internal(m),
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}
