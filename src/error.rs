//! The crate's typed error.
//!
//! Every fallible public function returns [`Result`], whose error names the problem: the column, the
//! value, the row, the limit. Nothing a user controls makes the library panic.

use std::path::PathBuf;

/// The crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in fenestra.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A duration such as `500ms` or `1s` could not be parsed.
    #[error("invalid duration '{input}': {reason}")]
    InvalidDuration {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A window specification such as `tumble:1s` could not be parsed or is invalid.
    #[error("invalid window spec '{spec}': {reason}")]
    InvalidWindow {
        /// The text (or a rendering of the spec) that was given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An aggregate list such as `count,sum,std` names an unknown aggregate.
    #[error("invalid aggregate '{name}': expected one of count, sum, min, max, mean, var, std")]
    InvalidAggregate {
        /// The unknown name.
        name: String,
    },
    /// A pipeline option is inconsistent or out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A column the job needs is not in the input.
    #[error("column '{column}' not found in {source_name}; available columns: {available}")]
    MissingColumn {
        /// The column that was asked for.
        column: String,
        /// Where it was looked for (a file name, "input batch").
        source_name: String,
        /// The columns that exist, comma-separated.
        available: String,
    },
    /// A column has a type the job cannot use.
    #[error("column '{column}' has type {found}, expected {expected}")]
    ColumnType {
        /// The column.
        column: String,
        /// Its type.
        found: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A timestamp is null, NaN, infinite or outside the supported range.
    #[error("invalid timestamp in column '{column}' at row {row}: {reason}")]
    InvalidTimestamp {
        /// The time column.
        column: String,
        /// The 0-based row in the input.
        row: u64,
        /// What is wrong (null, NaN, out of range with the value).
        reason: String,
    },
    /// The columns of one batch do not have the same length.
    #[error("batch columns have different lengths: {0}")]
    RaggedBatch(String),
    /// The input holds no events.
    #[error("empty input: {0} contains no events")]
    EmptyInput(String),
    /// A file could not be read or written.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was being done ("cannot read", "cannot write").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be parsed (unreadable, truncated, not the format its extension says).
    #[error("cannot read '{path}' as {format}: {reason}")]
    FileFormat {
        /// The file.
        path: PathBuf,
        /// The format looked for (Parquet, CSV).
        format: &'static str,
        /// What the reader said.
        reason: String,
    },
    /// A file extension that names no supported format.
    #[error("unsupported file type '{path}': use a .parquet or .csv file")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// An error from polars that is not about a specific file.
    #[error("polars: {0}")]
    Polars(String),
    /// No GPU adapter was found, or it could not be opened.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The GPU adapter cannot run this job (a device limit is too small).
    #[error("GPU device limit: {0}")]
    DeviceLimit(String),
    /// The GPU reported an error while running a kernel.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The operation is not supported by the chosen backend.
    #[error("unsupported by the {backend} backend: {what}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The operation.
        what: String,
    },
    /// The machine-learning stage failed.
    #[error("model: {0}")]
    Model(String),
    /// A pipeline was used after it finished or after an earlier error stopped it.
    #[error("pipeline closed: {0}")]
    Closed(String),
}

impl Error {
    /// Shorthand for [`Error::Config`].
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}

impl From<polars::error::PolarsError> for Error {
    fn from(e: polars::error::PolarsError) -> Self {
        Error::Polars(e.to_string())
    }
}
