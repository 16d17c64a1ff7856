//! The one error type at the crate boundary.

/// Everything that can go wrong in this crate. Callers (the binary, the server) turn these into
/// one-line messages; none of them is a panic, because every input here (feature rows, labels,
/// artifact bytes read back from the database) comes from outside.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The features were encoded under another [`FeatureSpec`](crate::FeatureSpec) than the one
    /// the model was trained with. Scoring them would silently read the wrong columns.
    #[error(
        "feature version mismatch: the model was trained on features {model}, but these were encoded as {features}; retrain the model or encode with the model's feature spec"
    )]
    FeatureVersionMismatch { model: String, features: String },

    /// A buffer has the wrong length for the declared rows and width.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// A value that must be a finite number (a feature, a label) is not, or a label is out of
    /// range.
    #[error("{0}")]
    InvalidData(String),

    /// A training or evaluation setting that cannot work (zero batch size, no hidden units, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Training saw no labelled row at all, so there is nothing to learn from.
    #[error("no training data: {0}")]
    NoData(String),

    /// The bytes are not a tern model artifact, or one this version cannot read.
    #[error("invalid model artifact: {0}")]
    Artifact(String),

    /// The caller's data source (e.g. a database cursor) failed while streaming batches.
    #[error("reading training data failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ModelError {
    /// Wraps a data source's error (a database cursor, a decoder) for [`Dataset`](crate::Dataset)
    /// implementations.
    pub fn from_source(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ModelError::Source(err.into())
    }
}
