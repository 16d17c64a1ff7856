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
    /// The active policy cannot be planned with (no such Replan, no default objective): the
    /// operator must fix the policy; retrying changes nothing. FAILED_PRECONDITION.
    #[error("{0}")]
    Unplannable(String),
    /// Something inside the daemon failed that no request can cause (the planner's thread
    /// panicked, the planner refused what the daemon built). INTERNAL.
    #[error("{0}")]
    Internal(String),
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
        ControlError::Unplannable(m) => Status::failed_precondition(m),
        ControlError::Internal(m) => Status::internal(m),
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each failure of the daemon has its own status code: a policy the daemon cannot plan
    /// with is the operator's to fix (FAILED_PRECONDITION), not an INTERNAL error, and only
    /// what no request can cause is INTERNAL.
    #[test]
    fn every_control_error_has_its_own_code() {
        let code = |e| control(e).code();
        assert_eq!(
            code(ControlError::Unplannable("no Replan named x".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(ControlError::Internal("panicked".into())),
            Code::Internal
        );
        assert_eq!(
            code(ControlError::Invalid("bad".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(ControlError::Precondition("system clock".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(ControlError::Store(StoreError::Unavailable("gone".into()))),
            Code::Unavailable
        );
    }
}
