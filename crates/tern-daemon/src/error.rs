//! The daemon library's errors: what a caller (the binary, a test) can tell apart.

/// Why a daemon operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy bundle cannot be planned with (no such Replan, no default objective, ...).
    #[error("{0}")]
    Policy(String),
    /// The period holds too few labelled rows to train and validate on: expected in a young
    /// installation, where scheduled training simply waits for the next night.
    #[error("{0}")]
    NotEnoughHistory(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] tern_store::StoreError),
    /// The model failed (a bad artifact, an encoding or training error).
    #[error(transparent)]
    Model(#[from] tern_model::ModelError),
    /// A file operation failed; the message says which.
    #[error("{0}")]
    Io(String),
    /// Something else went wrong in training, said in one sentence.
    #[error("{0}")]
    Training(String),
    /// The policy directory does not hold a valid bundle; the findings say why.
    #[error("{} is not a valid policy bundle; not starting without a valid policy", dir.display())]
    InvalidBundle {
        dir: std::path::PathBuf,
        findings: tern_policy::Findings,
    },
    /// The gRPC server failed.
    #[error("{0}")]
    Serve(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

/// `.context("...")` for results and options, producing [`Error::Io`] (for I/O failures) or
/// [`Error::Training`] with the cause appended.
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T, Error>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Result<T, Error> {
        self.map_err(|e| Error::Training(format!("{what}: {e}")))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::Io(format!("{}: {e}", what())))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T, Error> {
        self.ok_or_else(|| Error::Training(what.to_string()))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.ok_or_else(|| Error::Training(what()))
    }
}
